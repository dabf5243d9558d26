//! Stage two of `source: {type: http}` and of the `object_store_files` listing options.

use std::num::NonZeroU64;
use std::time::Duration;

use chrono::format::{Item, StrftimeItems};
use serde_saphyr::Location;

use super::{Converter, parse_time_zone};
use crate::config::model::{HttpAuth, HttpSource, Listing, Paging, Retries, TimeWindow};
use crate::config::raw::{Located, OrderedMap, RawListing, RawListingMode};
use crate::config::raw_http::{
    RawHttp, RawHttpAuth, RawPaging, RawRetries, RawSuccess, RawWindow, RawWindowEnd,
};

/// Default of `source.max_requests_per_run`.
pub const DEFAULT_MAX_REQUESTS_PER_RUN: u64 = 1000;

/// Parses a duration: a whole number and a unit (`ms`, `s`, `m`, `h`, `d`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let expected =
        || format!("expected a duration like `500ms`, `30s`, `5m`, `6h` or `1d`, found `{text}`");
    let n: u64 = number.parse().map_err(|_| expected())?;
    let millis = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => return Err(expected()),
    };
    millis
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration `{text}` is too long"))
}

/// Parses `YYYY-MM-DD` (midnight) or `YYYY-MM-DDTHH:MM:SS`.
pub fn parse_local_time(text: &str) -> Result<chrono::NaiveDateTime, String> {
    if let Ok(date) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date.and_time(chrono::NaiveTime::MIN));
    }
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S")
        .map_err(|_| format!("expected `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SS`, found `{text}`"))
}

pub(super) fn check_env_name(name: &str) -> Result<String, String> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_uppercase() || c == '_')
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(name.to_string())
    } else {
        Err(format!(
            "`{name}` is not an environment variable name (`[A-Z_][A-Z0-9_]*`); the secret itself never goes in YAML"
        ))
    }
}

fn check_pointer(pointer: &str) -> Result<String, String> {
    if pointer.is_empty() || pointer.starts_with('/') {
        Ok(pointer.to_string())
    } else {
        Err(format!(
            "`{pointer}` is not a JSON pointer: write `/{pointer}` (or `\"\"` for the whole body)"
        ))
    }
}

impl Converter<'_> {
    pub(super) fn http_source(&mut self, raw: RawHttp) -> Option<HttpSource> {
        let url = self.http_url(&raw.url);
        let query = self.string_pairs(raw.query, "source.query", false);
        let headers = self.string_pairs(raw.headers, "source.headers", true);
        let auth = match raw.auth {
            None => Some(None),
            Some(auth) => self.http_auth(auth).map(Some),
        };
        let paging = match raw.paging {
            None => Some(Paging::None),
            Some(paging) => self.paging(paging),
        };
        let window = match raw.window {
            None => Some(None),
            Some(window) => self.window(window).map(Some),
        };
        let records = self.pointer(&raw.records, "source.records");
        let success = match raw.success {
            None => Some(None),
            Some(RawSuccess { pointer, equals }) => self
                .pointer(&pointer, "source.success.pointer")
                .map(|p| Some((p, equals))),
        };
        let timeout = self.source_duration(raw.timeout.as_ref(), "source.timeout", "30s");
        let retries = self.source_retries(raw.retries);
        let requests = self.limit(
            raw.max_requests_per_run,
            "source.max_requests_per_run",
            DEFAULT_MAX_REQUESTS_PER_RUN,
        );
        let pages = self.limit(raw.max_pages_per_batch, "source.max_pages_per_batch", 100);
        let records_per_batch = self.limit(
            raw.max_records_per_batch,
            "source.max_records_per_batch",
            100_000,
        );
        let response_bytes = self
            .limit(
                raw.max_response_bytes,
                "source.max_response_bytes",
                32 * 1024 * 1024,
            )
            .and_then(|n| self.usize_limit(n, "source.max_response_bytes"));
        Some(HttpSource {
            url: url?,
            query: query?,
            headers: headers?,
            auth: auth?,
            paging: paging?,
            window: window?,
            records: records?,
            success: success?,
            timeout: timeout?,
            retries: retries?,
            max_requests_per_run: requests?.0,
            max_pages_per_batch: pages?.0,
            max_records_per_batch: records_per_batch?.0,
            max_response_bytes: response_bytes?,
        })
    }

    fn http_url(&mut self, raw: &Located<String>) -> Option<url::Url> {
        let checked = match url::Url::parse(raw.value()) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                if url.password().is_some() {
                    Err("the URL carries a password; use `auth` with a secret".to_string())
                } else {
                    Ok(url)
                }
            }
            Ok(url) => Err(format!(
                "expected an http:// or https:// URL with a host, found scheme `{}`",
                url.scheme()
            )),
            Err(e) => Err(format!("invalid URL `{}`: {e}", raw.value())),
        };
        self.errors.check(raw.location(), "source.url", checked)
    }

    fn string_pairs(
        &mut self,
        raw: Option<OrderedMap<Located<String>>>,
        path: &str,
        headers: bool,
    ) -> Option<Vec<(String, String)>> {
        let Some(map) = raw else {
            return Some(Vec::new());
        };
        let pairs: Vec<Option<(String, String)>> = map
            .0
            .into_iter()
            .map(|(name, value)| {
                let key = self.non_empty(&name, path, "name")?;
                let value_path = format!("{path}.{key}");
                if headers {
                    let name_ok = reqwest::header::HeaderName::from_bytes(key.as_bytes())
                        .map(|_| ())
                        .map_err(|_| format!("`{key}` is not a valid header name"));
                    self.errors.check(name.location(), path, name_ok)?;
                    let value_ok = reqwest::header::HeaderValue::from_str(value.value())
                        .map(|_| ())
                        .map_err(|_| "not a valid header value (visible ASCII only)".to_string());
                    self.errors.check(value.location(), &value_path, value_ok)?;
                }
                Some((key, value.into_value()))
            })
            .collect();
        pairs.into_iter().collect()
    }

    fn secret_name(&mut self, raw: &Located<String>, path: &str) -> Option<String> {
        self.errors
            .check(raw.location(), path, check_env_name(raw.value()))
    }

    fn http_auth(&mut self, raw: RawHttpAuth) -> Option<HttpAuth> {
        match raw {
            RawHttpAuth::Bearer(r) => {
                let secret = self.secret_name(&r.secret, "source.auth.bearer.secret")?;
                Some(HttpAuth::Bearer { secret })
            }
            RawHttpAuth::Header(r) => {
                let name = self.non_empty(&r.name, "source.auth.header.name", "header name");
                let name = name.and_then(|n| {
                    let ok = reqwest::header::HeaderName::from_bytes(n.as_bytes())
                        .map(|_| n.clone())
                        .map_err(|_| format!("`{n}` is not a valid header name"));
                    self.errors
                        .check(r.name.location(), "source.auth.header.name", ok)
                });
                let secret = self.secret_name(&r.secret, "source.auth.header.secret");
                Some(HttpAuth::Header {
                    name: name?,
                    secret: secret?,
                })
            }
            RawHttpAuth::Query(r) => {
                let name = self.non_empty(&r.name, "source.auth.query.name", "parameter name");
                let secret = self.secret_name(&r.secret, "source.auth.query.secret");
                Some(HttpAuth::Query {
                    name: name?,
                    secret: secret?,
                })
            }
        }
    }

    fn paging(&mut self, raw: RawPaging) -> Option<Paging> {
        match raw {
            RawPaging::PageNumber(p) => {
                let param = self.non_empty(&p.param, "source.paging.page_number.param", "name");
                let size_param = match &p.size_param {
                    None => Some(None),
                    Some(s) => self
                        .non_empty(s, "source.paging.page_number.size_param", "name")
                        .map(Some),
                };
                let size = match p.size {
                    None => Some(None),
                    Some(size) => {
                        let checked = NonZeroU64::new(*size.value())
                            .ok_or_else(|| "expected a number greater than 0, found 0".to_string());
                        self.errors
                            .check(size.location(), "source.paging.page_number.size", checked)
                            .map(Some)
                    }
                };
                if let (Some(Some(_)), Some(None)) = (&size_param, &size) {
                    self.errors.push(
                        p.param.location(),
                        "source.paging.page_number",
                        "`size_param` needs `size` (the page size to ask for)",
                    );
                    return None;
                }
                Some(Paging::PageNumber {
                    param: param?,
                    start: p.start.unwrap_or(1),
                    size_param: size_param?,
                    size: size?,
                })
            }
            RawPaging::Cursor(c) => {
                let param = self.non_empty(&c.param, "source.paging.cursor.param", "name");
                let next = self.pointer(&c.from, "source.paging.cursor.from");
                let has_more = match &c.has_more {
                    None => Some(None),
                    Some(h) => self.pointer(h, "source.paging.cursor.has_more").map(Some),
                };
                Some(Paging::Cursor {
                    param: param?,
                    next: next?,
                    has_more: has_more?,
                })
            }
        }
    }

    fn window(&mut self, raw: RawWindow) -> Option<TimeWindow> {
        let start_param = self.non_empty(&raw.start_param, "source.window.start_param", "name");
        let end_param = match &raw.end_param {
            None => Some(None),
            Some(e) => self
                .non_empty(e, "source.window.end_param", "name")
                .map(Some),
        };
        let format = match &raw.format {
            None => Some("%Y-%m-%d".to_string()),
            Some(f) => {
                let checked = if f.value().is_empty() {
                    Err("expected a strftime format such as `%Y-%m-%d`".to_string())
                } else if StrftimeItems::new(f.value()).any(|i| matches!(i, Item::Error)) {
                    Err(format!("invalid strftime format `{}`", f.value()))
                } else {
                    Ok(f.value().clone())
                };
                self.errors
                    .check(f.location(), "source.window.format", checked)
            }
        };
        let length = self
            .source_duration(raw.length.as_ref(), "source.window.length", "1d")
            .and_then(|d| {
                let at = raw
                    .length
                    .as_ref()
                    .map_or(Location::UNKNOWN, |l| l.location());
                let checked = if d < Duration::from_secs(1) {
                    Err("a window is at least `1s` long".to_string())
                } else {
                    Ok(d)
                };
                self.errors.check(at, "source.window.length", checked)
            });
        let from = self.errors.check(
            raw.from.location(),
            "source.window.from",
            parse_local_time(raw.from.value()),
        );
        let until = match &raw.until {
            None => Some(None),
            Some(u) => self
                .errors
                .check(
                    u.location(),
                    "source.window.until",
                    parse_local_time(u.value()),
                )
                .map(Some),
        };
        let lag = self.source_duration(raw.lag.as_ref(), "source.window.lag", "0s");
        let time_zone = match &raw.time_zone {
            None => Some(None),
            Some(tz) => self
                .errors
                .check(
                    tz.location(),
                    "source.window.time_zone",
                    parse_time_zone(tz.value()),
                )
                .map(Some),
        };
        if let (Some(from), Some(Some(until)), Some(u)) = (from, until, &raw.until)
            && until <= from
        {
            self.errors.push(
                u.location(),
                "source.window.until",
                "`until` must be after `from`",
            );
            return None;
        }
        Some(TimeWindow {
            start_param: start_param?,
            end_param: end_param?,
            format: format?,
            length: length?,
            from: from?,
            until: until?,
            lag: lag?,
            end_inclusive: matches!(raw.end, RawWindowEnd::Inclusive),
            time_zone: time_zone?,
        })
    }

    fn source_retries(&mut self, raw: Option<RawRetries>) -> Option<Retries> {
        let (max, initial, max_backoff) = match &raw {
            None => (None, None, None),
            Some(r) => (r.max, r.initial.as_ref(), r.max_backoff.as_ref()),
        };
        let initial = self.source_duration(initial, "source.retries.initial", "500ms");
        let max_backoff = self.source_duration(max_backoff, "source.retries.max_backoff", "60s");
        Some(Retries {
            max: max.unwrap_or(5),
            initial: initial?,
            max_backoff: max_backoff?,
        })
    }

    fn pointer(&mut self, raw: &Located<String>, path: &str) -> Option<String> {
        self.errors
            .check(raw.location(), path, check_pointer(raw.value()))
    }

    /// A duration, or its default (a valid literal).
    fn source_duration(
        &mut self,
        raw: Option<&Located<String>>,
        path: &str,
        default: &str,
    ) -> Option<Duration> {
        match raw {
            None => parse_duration(default).ok(),
            Some(raw) => self
                .errors
                .check(raw.location(), path, parse_duration(raw.value())),
        }
    }

    pub(super) fn listing(&mut self, raw: Option<RawListing>) -> Option<Listing> {
        let Some(raw) = raw else {
            return Some(Listing::Full);
        };
        match raw.mode {
            RawListingMode::Full => {
                if let Some(every) = &raw.full_every {
                    self.errors.push(
                        every.location(),
                        "source.listing.full_every",
                        "`full_every` applies to `mode: after_watermark` only",
                    );
                    return None;
                }
                Some(Listing::Full)
            }
            RawListingMode::AfterWatermark => {
                let full_every = self.source_duration(
                    raw.full_every.as_ref(),
                    "source.listing.full_every",
                    "1h",
                )?;
                Some(Listing::AfterWatermark { full_every })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_number_and_a_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("1.5h").is_err());
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("h").is_err());
    }
}
