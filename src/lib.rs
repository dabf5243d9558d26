//! backflow: ad media backflow daemon.
//!
//! See `DESIGN.md` (shared) and the README for the architecture. Modules are rooms: each owns its
//! data and exposes a small typed API.

pub mod api;
pub mod catalog;
pub mod collect;
pub mod config;
pub mod daemon;
pub mod datasets;
pub mod enrich;
pub mod forward;
pub mod journal;
pub mod pipeline;
pub mod report;
pub mod schedule;
pub mod storage;
pub mod telemetry;
