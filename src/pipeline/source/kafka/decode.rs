//! Messages → rows (JSON objects, the collector's hit records); poison to quarantine.

use super::*;

/// Decodes messages into rows; poison messages go to quarantine with topic, partition, offset.
pub fn decode(
    cfg: &KafkaSource,
    records: Vec<KafkaRecord>,
    hits: Option<&(Arc<MediaRegistry>, Arc<Enricher>)>,
    rows: &mut TextFrameBuilder,
    quarantine: &mut Quarantine,
) {
    rows.reserve(records.len());
    let mut decoder = ObjectDecoder::new();
    // `topic/partition`, rebuilt when the partition changes (records come sorted by it).
    let mut lineage = String::new();
    let mut lineage_of: Option<(Arc<str>, i32)> = None;
    for record in records {
        if lineage_of
            .as_ref()
            .is_none_or(|(t, p)| *p != record.partition || **t != *record.topic)
        {
            lineage = format!("{}/{}", record.topic, record.partition);
            lineage_of = Some((Arc::clone(&record.topic), record.partition));
        }
        let bad = |reason: String, raw: Option<&[u8]>| QuarantinedRow {
            reason: format!("kafka {lineage}@{}: {reason}", record.offset),
            source_file: Some(lineage.clone()),
            source_line: Some(record.offset),
            raw: raw.map(|r| String::from_utf8_lossy(r).into_owned()),
        };
        let Some(payload) = record.payload.as_deref() else {
            quarantine.push(bad("message without a payload".to_string(), None));
            continue;
        };
        let headers = cfg.headers_column.as_ref().map(|column| {
            let headers: serde_json::Map<String, serde_json::Value> = record
                .headers
                .iter()
                .map(|(k, v)| {
                    let v = v
                        .as_deref()
                        .map(|v| String::from_utf8_lossy(v).into_owned());
                    (
                        k.clone(),
                        v.map_or(serde_json::Value::Null, serde_json::Value::String),
                    )
                })
                .collect();
            (column, serde_json::Value::Object(headers).to_string())
        });
        let key = cfg
            .key_column
            .as_ref()
            .map(|column| (column, record.key.as_deref().map(String::from_utf8_lossy)));
        // The header and key columns come first, then the payload's fields.
        let mut leading: Vec<(&str, Option<&str>)> = Vec::new();
        if let Some((column, text)) = &headers {
            leading.push((column.as_str(), Some(text.as_str())));
        }
        if let Some((column, key)) = &key {
            leading.push((column.as_str(), key.as_deref()));
        }
        match (cfg.format, hits) {
            (KafkaFormat::Json, _) => {
                if let Err(reason) =
                    decoder.push_row(payload, &leading, rows, &lineage, record.offset)
                {
                    quarantine.push(bad(reason, Some(payload)));
                }
            }
            (KafkaFormat::HitRecord, Some((registry, enricher))) => {
                match hit_decode::decode(payload, registry, enricher) {
                    Ok(row) => rows.push(
                        &lineage,
                        record.offset,
                        leading
                            .iter()
                            .copied()
                            .chain(row.iter().map(|(k, v)| (*k, v.as_deref()))),
                    ),
                    Err(reason) => quarantine.push(bad(reason, Some(payload))),
                }
            }
            (KafkaFormat::HitRecord, None) => quarantine.push(bad(
                "hit records are decoded with the media registry: run this pipeline inside `backflow serve`".to_string(),
                Some(payload),
            )),
        }
    }
}
