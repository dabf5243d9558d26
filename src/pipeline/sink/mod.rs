//! Sinks: where committed rows land.

pub mod parquet;
pub mod kafka;
