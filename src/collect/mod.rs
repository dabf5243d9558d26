//! Monitoring-link collection: the media registry, canonical fields and hit parsing.

pub mod appender;
pub mod decode;
pub mod endpoint;
pub mod fields;
pub mod hit;
pub mod landing;
pub mod limit;
pub mod link;
pub mod links;
pub mod normalize;
pub mod query;
pub mod registry;
pub mod service;
