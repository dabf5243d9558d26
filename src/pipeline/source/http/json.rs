//! Reading an API response without re-encoding its records: JSON pointers walked over raw
//! values, so a record lands with its numbers exactly as the API wrote them (an id of 20
//! digits stays exact; a cost of `12.30` stays `12.30`).

use std::collections::HashMap;

use serde_json::value::RawValue;

use crate::config::model::{HttpSource, Paging};

/// The value at an RFC 6901 pointer, `None` when the path does not exist.
pub fn at<'a>(root: &'a RawValue, pointer: &str) -> Result<Option<&'a RawValue>, String> {
    let mut current = root;
    if pointer.is_empty() {
        return Ok(Some(current));
    }
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        let text = current.get();
        current = match text.as_bytes().first() {
            Some(b'{') => {
                let members: HashMap<String, &RawValue> =
                    serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
                match members.get(&token) {
                    Some(value) => value,
                    None => return Ok(None),
                }
            }
            Some(b'[') => {
                let items: Vec<&RawValue> =
                    serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
                match token.parse::<usize>().ok().and_then(|i| items.get(i)) {
                    Some(value) => value,
                    None => return Ok(None),
                }
            }
            _ => return Ok(None),
        };
    }
    Ok(Some(current))
}

/// Why a response cannot be used; `kind` is the metric label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadResponse {
    pub kind: &'static str,
    pub message: String,
}

fn bad(kind: &'static str, message: impl Into<String>) -> BadResponse {
    BadResponse {
        kind,
        message: message.into(),
    }
}

/// A page as the API answered it.
#[derive(Debug)]
pub struct Page {
    pub records: Vec<Box<RawValue>>,
    /// The next cursor (cursor paging), as text.
    pub next_cursor: Option<String>,
    /// The API's "more pages follow" flag, when configured and present.
    pub has_more: Option<bool>,
}

/// Reads a response body: the success check, the records array, the paging fields.
pub fn parse_page(body: &[u8], cfg: &HttpSource) -> Result<Page, BadResponse> {
    let root: &RawValue = serde_json::from_slice(body)
        .map_err(|e| bad("not_json", format!("the body is not JSON ({e})")))?;
    if let Some((pointer, expected)) = &cfg.success {
        let found = at(root, pointer)
            .map_err(|e| bad("not_json", e))?
            .map(|raw| serde_json::from_str::<serde_json::Value>(raw.get()))
            .transpose()
            .map_err(|e| bad("not_json", format!("invalid JSON: {e}")))?;
        if found.as_ref() != Some(expected) {
            let found = found.map_or_else(|| "nothing".to_string(), |v| v.to_string());
            return Err(bad(
                "not_success",
                format!("the API reports a failure: {pointer} is {found}, expected {expected}"),
            ));
        }
    }
    let records = match at(root, &cfg.records).map_err(|e| bad("not_json", e))? {
        None => {
            return Err(bad(
                "no_records",
                format!("no records array at `{}`", cfg.records),
            ));
        }
        Some(raw) if raw.get() == "null" => Vec::new(),
        Some(raw) => serde_json::from_str::<Vec<Box<RawValue>>>(raw.get()).map_err(|_| {
            bad(
                "no_records",
                format!("`{}` is not an array of records", cfg.records),
            )
        })?,
    };
    let (next_cursor, has_more) = match &cfg.paging {
        Paging::Cursor { next, has_more, .. } => {
            let cursor = match at(root, next).map_err(|e| bad("not_json", e))? {
                None => None,
                Some(raw) => match serde_json::from_str::<serde_json::Value>(raw.get()) {
                    Ok(serde_json::Value::Null) => None,
                    Ok(serde_json::Value::String(s)) if s.is_empty() => None,
                    Ok(serde_json::Value::String(s)) => Some(s),
                    Ok(serde_json::Value::Number(n)) => Some(n.to_string()),
                    _ => {
                        return Err(bad(
                            "no_records",
                            format!("the cursor at `{next}` is not a string or number"),
                        ));
                    }
                },
            };
            let more = match has_more {
                None => None,
                Some(pointer) => match at(root, pointer).map_err(|e| bad("not_json", e))? {
                    None => None,
                    Some(raw) => match raw.get() {
                        "true" => Some(true),
                        "false" => Some(false),
                        "null" => None,
                        other => {
                            return Err(bad(
                                "no_records",
                                format!("`{pointer}` is `{other}`, expected true or false"),
                            ));
                        }
                    },
                },
            };
            (cursor, more)
        }
        _ => (None, None),
    };
    Ok(Page {
        records,
        next_cursor,
        has_more,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_string()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn pointers_walk_objects_and_arrays_and_keep_the_text() {
        let root =
            raw(r#"{"data":{"list":[{"id":12345678901234567890123,"cost":12.30}],"a/b":1}}"#);
        let list = at(&root, "/data/list").ok().flatten().map(RawValue::get);
        assert_eq!(
            list,
            Some(r#"[{"id":12345678901234567890123,"cost":12.30}]"#)
        );
        let cost = at(&root, "/data/list/0/cost")
            .ok()
            .flatten()
            .map(RawValue::get);
        assert_eq!(cost, Some("12.30"));
        let escaped = at(&root, "/data/a~1b").ok().flatten().map(RawValue::get);
        assert_eq!(escaped, Some("1"));
        assert!(matches!(at(&root, "/data/missing"), Ok(None)));
        assert!(matches!(at(&root, "/data/list/0/cost/x"), Ok(None)));
        assert_eq!(
            at(&root, "").ok().flatten().map(RawValue::get),
            Some(root.get())
        );
    }
}
