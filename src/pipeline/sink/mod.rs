//! Sinks: where committed rows land.

pub mod kafka;
pub mod parquet;
