//! Monitoring-link collection: the media registry, canonical fields and hit parsing.

pub mod fields;
pub mod link;
pub mod normalize;
pub mod query;
pub mod registry;
