//! Sources: where a batch's rows come from and how far a batch reaches (its positions).

pub mod http;
pub mod json_object;
pub mod kafka;
pub mod object_store_files;
pub mod secret;
