//! Storage URLs and the object stores behind them.
//!
//! Every byte the pipelines read or write goes through an `Arc<dyn ObjectStore>` built from a URL:
//! `file://` (absolute, or `file://./relative` to the working directory), `memory://NAME`
//! (one in-memory store per name and process; for tests), and `s3://bucket/prefix`, configured
//! from the standard `AWS_*` environment variables (`AWS_ENDPOINT`, `AWS_REGION`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`,
//! `AWS_VIRTUAL_HOSTED_STYLE_REQUEST`) so secrets never sit in YAML.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;

/// A parsed storage URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageUrl {
    /// A local directory (resolved against the working directory when relative).
    File { root: PathBuf },
    /// A named in-memory store; `prefix` may be empty.
    Memory { name: String, prefix: String },
    /// An S3 bucket (or S3-compatible server) and key prefix; `prefix` may be empty.
    S3 { bucket: String, prefix: String },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StorageUrlError {
    #[error("storage URL `{0}` has no scheme; expected file://, memory:// or s3://")]
    NoScheme(String),
    #[error("storage URL `{url}` has unknown scheme `{scheme}`; expected one of file, memory, s3")]
    UnknownScheme { url: String, scheme: String },
    #[error("storage URL `{0}` names no bucket or store name")]
    MissingHost(String),
    #[error("storage URL `{0}` has an empty path")]
    EmptyPath(String),
}

impl FromStr for StorageUrl {
    type Err = StorageUrlError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(StorageUrlError::NoScheme(url.to_string()));
        };
        let split_host = |rest: &str| -> Result<(String, String), StorageUrlError> {
            let (host, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if host.is_empty() {
                return Err(StorageUrlError::MissingHost(url.to_string()));
            }
            Ok((host.to_string(), prefix.trim_matches('/').to_string()))
        };
        match scheme {
            "file" => {
                if rest.is_empty() {
                    return Err(StorageUrlError::EmptyPath(url.to_string()));
                }
                Ok(StorageUrl::File {
                    root: PathBuf::from(rest),
                })
            }
            "memory" => {
                let (name, prefix) = split_host(rest)?;
                Ok(StorageUrl::Memory { name, prefix })
            }
            "s3" => {
                let (bucket, prefix) = split_host(rest)?;
                Ok(StorageUrl::S3 { bucket, prefix })
            }
            other => Err(StorageUrlError::UnknownScheme {
                url: url.to_string(),
                scheme: other.to_string(),
            }),
        }
    }
}

impl fmt::Display for StorageUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageUrl::File { root } => write!(f, "file://{}", root.display()),
            StorageUrl::Memory { name, prefix } => write!(f, "memory://{name}/{prefix}"),
            StorageUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// A store and the prefix inside it that a URL points at.
#[derive(Debug, Clone)]
pub struct Location {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: ObjectPath,
    pub url: StorageUrl,
}

impl Location {
    /// The object path of `relative` (slash-separated) under this location's prefix.
    pub fn child(&self, relative: &str) -> ObjectPath {
        let mut path = self.prefix.clone();
        for part in relative.split('/').filter(|p| !p.is_empty()) {
            path = path.join(part);
        }
        path
    }

    /// `relative` of an object path under this location's prefix, or `None` if it is outside.
    pub fn relative(&self, path: &ObjectPath) -> Option<String> {
        let parts: Vec<_> = path
            .prefix_match(&self.prefix)?
            .map(|p| p.as_ref().to_string())
            .collect();
        Some(parts.join("/"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot create directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open {url}: {source}")]
    Open {
        url: String,
        source: object_store::Error,
    },
}

/// Builds stores from URLs; keeps one in-memory store per name so that a pipeline's source
/// and sink in the same process see the same `memory://` data.
#[derive(Debug, Default)]
pub struct StoreRegistry {
    memory: Mutex<HashMap<String, Arc<InMemory>>>,
}

impl StoreRegistry {
    pub fn open(&self, url: &StorageUrl) -> Result<Location, StorageError> {
        let (store, prefix): (Arc<dyn ObjectStore>, String) = match url {
            StorageUrl::File { root } => {
                std::fs::create_dir_all(root).map_err(|source| StorageError::CreateDir {
                    path: root.clone(),
                    source,
                })?;
                let root =
                    std::fs::canonicalize(root).map_err(|source| StorageError::CreateDir {
                        path: root.clone(),
                        source,
                    })?;
                let fs = LocalFileSystem::new_with_prefix(&root).map_err(|source| {
                    StorageError::Open {
                        url: url.to_string(),
                        source,
                    }
                })?;
                (Arc::new(fs), String::new())
            }
            StorageUrl::Memory { name, prefix } => {
                let mut map = self.memory.lock().unwrap_or_else(|e| e.into_inner());
                let store = map
                    .entry(name.clone())
                    .or_insert_with(|| Arc::new(InMemory::new()))
                    .clone();
                (store, prefix.clone())
            }
            StorageUrl::S3 { bucket, prefix } => {
                let s3 = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .build()
                    .map_err(|source| StorageError::Open {
                        url: url.to_string(),
                        source,
                    })?;
                (Arc::new(s3), prefix.clone())
            }
        };
        Ok(Location {
            store,
            prefix: ObjectPath::from(prefix.as_str()),
            url: url.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_schemes() {
        assert_eq!(
            "file://./data/lake".parse::<StorageUrl>(),
            Ok(StorageUrl::File {
                root: PathBuf::from("./data/lake")
            })
        );
        assert_eq!(
            "s3://bucket/a/b/".parse::<StorageUrl>(),
            Ok(StorageUrl::S3 {
                bucket: "bucket".into(),
                prefix: "a/b".into()
            })
        );
        assert_eq!(
            "memory://t".parse::<StorageUrl>(),
            Ok(StorageUrl::Memory {
                name: "t".into(),
                prefix: String::new()
            })
        );
    }

    #[test]
    fn rejects_unknown_scheme_and_missing_bucket() {
        assert!(matches!(
            "gs://b/x".parse::<StorageUrl>(),
            Err(StorageUrlError::UnknownScheme { scheme, .. }) if scheme == "gs"
        ));
        assert!(matches!(
            "s3:///x".parse::<StorageUrl>(),
            Err(StorageUrlError::MissingHost(_))
        ));
        assert!(matches!(
            "/tmp/x".parse::<StorageUrl>(),
            Err(StorageUrlError::NoScheme(_))
        ));
    }
}
