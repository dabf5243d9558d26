//! The one integration-test binary: everything here talks to real things on 127.0.0.1 (the
//! `backflow` binary, a moto S3 server, DuckDB), started by `scripts/dev test`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

mod api;
mod cli;
mod collect;
mod config;
mod crash;
mod datasets;
mod deploy;
mod downloads;
mod duckdb;
mod enrich;
mod forward;
mod forward_kafka;
mod hits;
mod http_source;
mod journal;
mod kafka;
mod kafka_auth;
mod kafka_journal;
mod kafka_scale;
mod kafka_sink;
mod kafka_tls;
mod lake_fixtures;
mod media_e2e;
mod pipeline;
mod quota;
mod registry;
mod reports;
mod rollups;
mod s3;
mod schedule;
mod serve;
mod tags;
