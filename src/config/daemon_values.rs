//! Parsers of the daemon configuration's values (`daemon.rs`): each returns the message of a
//! located error.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use super::*;

pub(super) fn parse_base_url(value: &str) -> Result<String, String> {
    match url::Url::parse(value) {
        Ok(u)
            if (u.scheme() == "http" || u.scheme() == "https")
                && u.host().is_some()
                && u.query().is_none() =>
        {
            Ok(value.trim_end_matches('/').to_string())
        }
        Ok(_) => Err(format!(
            "expected an http(s) URL with a host and no query, found `{value}`"
        )),
        Err(e) => Err(format!("expected an http(s) URL, found `{value}` ({e})")),
    }
}

pub(super) fn parse_brokers(value: &str) -> Result<Vec<String>, String> {
    let brokers: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(str::to_string)
        .collect();
    match brokers.iter().find(|b| {
        b.rsplit_once(':')
            .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
    }) {
        _ if brokers.is_empty() => Err("expected comma-separated host:port, found nothing".into()),
        Some(bad) => Err(format!("expected comma-separated host:port, found `{bad}`")),
        None => Ok(brokers),
    }
}

/// A Kafka topic name (Kafka's own rule: 1–249 of `[a-zA-Z0-9._-]`).
pub(super) fn parse_topic(value: &str) -> Result<String, String> {
    if (1..=249).contains(&value.len())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        Ok(value.to_string())
    } else {
        Err(format!(
            "expected a Kafka topic name (1 to 249 of a-z A-Z 0-9 . _ -), found `{value}`"
        ))
    }
}

/// Text, or empty for none.
pub(super) fn parse_optional_text(value: &str) -> Result<Option<String>, String> {
    Ok((!value.is_empty()).then(|| value.to_string()))
}

pub(super) fn parse_rate(value: &str) -> Result<u32, String> {
    value
        .parse::<u32>()
        .map_err(|_| format!("expected hits per second (0 = no limit), found `{value}`"))
}

pub(super) fn parse_max_url(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if (1024..=1024 * 1024).contains(&n) => Ok(n),
        _ => Err(format!(
            "expected a byte count from 1024 to 1048576, found `{value}`"
        )),
    }
}

pub(super) fn parse_path(value: &str) -> Result<PathBuf, String> {
    if value.is_empty() {
        Err("expected a path, found an empty value".to_string())
    } else {
        Ok(PathBuf::from(value))
    }
}

/// A path, or empty for none.
pub(super) fn parse_optional_path(value: &str) -> Result<Option<PathBuf>, String> {
    Ok((!value.is_empty()).then(|| PathBuf::from(value)))
}

pub(super) fn parse_listen(value: &str) -> Result<SocketAddr, String> {
    value.parse().map_err(|_| {
        format!("invalid address `{value}`, expected an IP address and port such as 127.0.0.1:8080")
    })
}

pub(super) fn parse_log_format(value: &str) -> Result<LogFormat, String> {
    match value {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(format!(
            "unknown log format `{other}`, expected one of text, json"
        )),
    }
}

pub(super) fn parse_log_level(value: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(value)
        .map(|_| value.to_string())
        .map_err(|err| {
            format!(
                "invalid log level `{value}` ({err}), expected e.g. `info` or `info,backflow=debug`"
            )
        })
}

pub(super) fn parse_seconds(value: &str) -> Result<Duration, String> {
    value
        .parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| format!("expected a whole number of seconds, found `{value}`"))
}

pub(super) fn parse_bool(value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("expected true or false, found `{other}`")),
    }
}

pub(super) fn parse_count(value: &str, max: usize) -> Result<NonZeroUsize, String> {
    value
        .parse::<NonZeroUsize>()
        .ok()
        .filter(|n| n.get() <= max)
        .ok_or_else(|| format!("expected a number from 1 to {max}, found `{value}`"))
}

pub(super) fn parse_positive_seconds(value: &str, max: u64) -> Result<Duration, String> {
    match value.parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(format!(
            "expected a whole number of seconds from 1 to {max}, found `{value}`"
        )),
    }
}

pub(super) fn parse_runs(value: &str) -> Result<NonZeroUsize, String> {
    value
        .parse::<NonZeroUsize>()
        .ok()
        .filter(|n| n.get() <= MAX_CONCURRENT_RUNS)
        .ok_or_else(|| {
            format!("expected a number from 1 to {MAX_CONCURRENT_RUNS}, found `{value}`")
        })
}

pub(super) fn parse_ttl_hours(value: &str) -> Result<u32, String> {
    value
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=720).contains(n))
        .ok_or_else(|| format!("expected a number of hours from 1 to 720, found `{value}`"))
}

pub(super) fn parse_retention_days(value: &str) -> Result<u32, String> {
    value
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=365).contains(n))
        .ok_or_else(|| format!("expected a number of days from 1 to 365, found `{value}`"))
}

/// The name of an environment variable holding a secret (empty for none).
pub(super) fn parse_env_name(value: &str) -> Result<Option<String>, String> {
    if value.is_empty() {
        Ok(None)
    } else if !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Err(format!(
            "expected the name of an environment variable (letters, digits, `_`), found \
             `{value}`; the password itself never goes in the config"
        ))
    } else {
        Ok(Some(value.to_string()))
    }
}

/// A PEM file that exists (empty for none; a relative path is from the working directory).
pub(super) fn parse_tls_file(value: &str) -> Result<Option<PathBuf>, String> {
    let path = PathBuf::from(value);
    if value.is_empty() {
        Ok(None)
    } else if path.is_file() {
        Ok(Some(path))
    } else if path.exists() {
        Err(format!("`{value}` is not a file"))
    } else {
        Err(format!(
            "`{value}` does not exist (a relative path is from the working directory)"
        ))
    }
}
