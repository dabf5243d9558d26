//! A batch's input as read from its source ([`Fetched`]), and its decoding into a frame of text
//! rows, transformed (on the blocking pool), shared by the Parquet and Kafka-sink batch paths.

use std::sync::Arc;

use chrono_tz::Tz;

use super::frame::{Quarantine, QuarantinedRow, TextFrameBuilder};
use super::source::http::{self as http_source, FetchedPage};
use super::source::kafka::{self as kafka_source, KafkaRecord};
use super::source::object_store_files::{self as files_source, Decoded, SourceFile};
use super::{PipelineError, transform};
use crate::collect::decode as hit_decode;
use crate::collect::registry::MediaRegistry;
use crate::config::model::ObjectStoreFilesSource;
use crate::enrich::Enricher;
use crate::journal::Position as JournalPosition;

/// A batch's input as read, before decoding (which runs on the blocking pool).
pub(super) enum Fetched {
    Files {
        cfg: ObjectStoreFilesSource,
        files: Vec<SourceFile>,
        contents: Vec<bytes::Bytes>,
    },
    Hits {
        records: Vec<(JournalPosition, bytes::Bytes)>,
        registry: Arc<MediaRegistry>,
        enricher: Arc<Enricher>,
    },
    Kafka {
        cfg: crate::config::model::KafkaSource,
        records: Vec<KafkaRecord>,
        /// For `format: hit_record`.
        hits: Option<(Arc<MediaRegistry>, Arc<Enricher>)>,
        /// Staged hit records a metered batch releases first (quota), by staged position.
        released: Vec<(JournalPosition, bytes::Bytes)>,
    },
    Http {
        pages: Vec<FetchedPage>,
        /// The pages' stored form, when just fetched (taken into the intent).
        input: Option<Vec<u8>>,
    },
}

impl Fetched {
    /// Decodes the batch's input and applies the pipeline's transforms: the frame, with the
    /// rows read (decoded and quarantined) and the inputs that failed to read. Rows either
    /// step rejects are in `quarantine`.
    pub(super) fn decode_transformed(
        self,
        transforms: &[crate::config::model::TransformStep],
        tz: Tz,
        quarantine: &mut Quarantine,
    ) -> Result<(polars::prelude::DataFrame, u64, u64), PipelineError> {
        let mut rows = TextFrameBuilder::new();
        let files_failed = self.decode(&mut rows, quarantine);
        let rows_in = (rows.rows() + quarantine.len()) as u64;
        let df = rows.finish().map_err(|source| PipelineError::Polars {
            stage: "decode",
            source,
        })?;
        let df = transform::apply(df, transforms, tz, quarantine)?;
        Ok((df, rows_in, files_failed))
    }

    /// Decodes into text rows; returns how many whole files could not be decoded.
    fn decode(self, rows: &mut TextFrameBuilder, quarantine: &mut Quarantine) -> u64 {
        match self {
            Fetched::Files {
                cfg,
                files,
                contents,
            } => {
                let mut failed = 0;
                for (file, bytes) in files.iter().zip(contents) {
                    if files_source::decode(&cfg, file, bytes, rows, quarantine) == Decoded::Failed
                    {
                        failed += 1;
                    }
                }
                failed
            }
            Fetched::Hits {
                records,
                registry,
                enricher,
            } => {
                for (position, bytes) in records {
                    match hit_decode::decode(&bytes, &registry, &enricher) {
                        Ok(row) => rows.push("journal", position.0 as i64, row),
                        Err(reason) => quarantine.push(QuarantinedRow {
                            reason: format!("journal:{}: {reason}", position.0),
                            source_file: Some("journal".to_string()),
                            source_line: Some(position.0 as i64),
                            raw: Some(String::from_utf8_lossy(&bytes).into_owned()),
                        }),
                    }
                }
                0
            }
            Fetched::Kafka {
                cfg,
                records,
                hits,
                released,
            } => {
                if let Some((registry, enricher)) = &hits {
                    for (position, bytes) in released {
                        match hit_decode::decode(&bytes, registry, enricher) {
                            Ok(row) => rows.push("quota_staged", position.0 as i64, row),
                            Err(reason) => quarantine.push(QuarantinedRow {
                                reason: format!("quota_staged:{}: {reason}", position.0),
                                source_file: Some("quota_staged".to_string()),
                                source_line: Some(position.0 as i64),
                                raw: Some(String::from_utf8_lossy(&bytes).into_owned()),
                            }),
                        }
                    }
                }
                kafka_source::decode(&cfg, records, hits.as_ref(), rows, quarantine);
                0
            }
            Fetched::Http { pages, .. } => {
                http_source::decode(pages, rows, quarantine);
                0
            }
        }
    }
}
