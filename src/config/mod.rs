//! Configuration: the daemon's `backflow.yaml` (+ `BACKFLOW__SECTION__KEY` overrides) and the
//! pipeline format, parsed in two stages (plain serde types, then the validated [`model`]).
//!
//! - [`raw`]: stage one, the pipeline format as written (its doc comments are the user reference
//!   and the source of `schemas/pipeline.schema.json`);
//! - [`load`]: stage two, checks that collect every error with `file:line:column` and field path;
//! - [`schema_file`]: dataset schema files (`schemas/*.yaml`);
//! - [`daemon`]: the daemon's own settings;
//! - [`error`]: the located [`ConfigError`].

pub mod daemon;
pub mod error;
pub mod load;
pub mod model;
pub mod model_tags;
pub mod raw;
pub mod raw_dataset;
pub mod raw_http;
pub mod raw_kafka_sink;
pub mod raw_tags;
pub mod schema_file;

pub use daemon::{DaemonConfig, LogFormat};
pub use error::ConfigError;
pub use load::{LoadOptions, LoadReport, load_pipeline_str, load_pipelines, pipeline_json_schema};
pub use schema_file::load_schema_file;
