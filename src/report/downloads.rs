//! Click-detail downloads (下载数据明细, R68–R70): a background task turns the committed
//! `ad_events` clicks of a range (within the last month) into a `.tar.gz` of log files.
//!
//! Archive layout: one file per day with clicks, `clicks-YYYY-MM-DD.log`, one line per raw
//! click (`click` and Tencent `feedback` rows), ordered by receive time then event id. A line is
//! one JSON object (NDJSON): `event_id`, `received_at` (RFC 3339, µs, UTC), `endpoint`,
//! `activity_id`, `link_id`, `channel`, `user_ip`, `user_agent`, the device IDs (`idfa`,
//! `imei_md5`, `oaid`, `android_id_md5`, `mac_md5`, `caid`, `aaid`) and `raw_query` — the raw
//! monitoring log as received (R11), with the fields a reader needs most. Missing values are
//! `null`. NDJSON rather than TSV because a raw query or user agent may hold any character.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{Days, NaiveDate};
use polars::prelude::*;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::lake::{self, AD_EVENTS, Wanted};
use super::{DateRange, ReportError, Reports, polars};
use crate::catalog::Download;

/// Days back a download may reach (R68 "the last month": today and the 29 days before).
pub const DOWNLOAD_WINDOW_DAYS: u64 = 30;

/// Text columns of a log line, in order.
const LINE_COLUMNS: [&str; 14] = [
    "event_id",
    "endpoint",
    "link_id",
    "channel",
    "user_ip",
    "user_agent",
    "idfa",
    "imei_md5",
    "oaid",
    "android_id_md5",
    "mac_md5",
    "caid",
    "aaid",
    "raw_query",
];

/// Checks a requested range: both ends within the last month (today included), in order.
pub fn check_range(from: NaiveDate, to: NaiveDate, today: NaiveDate) -> Result<(), ReportError> {
    let earliest = today - Days::new(DOWNLOAD_WINDOW_DAYS - 1);
    if to < from {
        return Err(ReportError::Invalid(format!(
            "the range ends ({to}) before it starts ({from})"
        )));
    }
    if from < earliest || to > today {
        return Err(ReportError::Invalid(format!(
            "click details can only be downloaded for the last month: days {earliest} to {today}"
        )));
    }
    Ok(())
}

/// A new click-detail download task (the admin API's body, the CLI's flags).
#[derive(Debug, Clone, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DownloadInput {
    /// First day (YYYY-MM-DD, workspace time zone); within the last month.
    pub from: String,
    /// Last day, included; at most today.
    pub to: String,
    /// Task name (default: `clicks {from}..{to}`).
    #[serde(default)]
    pub name: Option<String>,
}

impl Reports {
    /// Checks a download request and queues it (`queued`, audited as `actor`).
    pub fn queue_download(
        &self,
        workspace: &str,
        input: DownloadInput,
        actor: &str,
    ) -> Result<Download, ReportError> {
        let from = super::range::parse_day("from", &input.from)?;
        let to = super::range::parse_day("to", &input.to)?;
        check_range(from, to, self.today())?;
        let name = input
            .name
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("clicks {from}..{to}"));
        if name.chars().count() > 100 {
            return Err(ReportError::Invalid("name: at most 100 characters".into()));
        }
        Ok(self.catalog.create_download(
            workspace,
            &name,
            &from.to_string(),
            &to.to_string(),
            actor,
        )?)
    }

    fn finished(&self, status: &'static str) {
        self.metrics
            .downloads
            .get_or_create(&crate::telemetry::StatusLabels { status })
            .inc();
    }

    /// Builds a claimed (`processing`) task's archive under `dir` and records the outcome:
    /// `succeeded` with an expiry `ttl_hours` from now, or `failed` with the reason.
    pub async fn process_download(
        &self,
        task: &Download,
        dir: &Path,
        ttl_hours: u32,
    ) -> Result<Download, ReportError> {
        let saved = match self.build_download(task, dir).await {
            Ok((clicks, bytes, file)) => {
                let expires = (chrono::Utc::now() + chrono::Duration::hours(i64::from(ttl_hours)))
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
                info!(
                    download = task.id,
                    clicks, bytes, "download archive written"
                );
                self.finished("succeeded");
                self.catalog
                    .finish_download(task.id, clicks, bytes, &file, &expires)
            }
            Err(e) => {
                warn!(download = task.id, error = %e, "download task failed");
                self.finished("failed");
                self.catalog.fail_download(task.id, &e.to_string())
            }
        };
        saved?;
        Ok(self.catalog.download(task.id)?)
    }
}

/// A minimal ustar writer: regular files only, names under 100 bytes.
fn tar_entry(out: &mut impl Write, name: &str, data: &[u8], mtime: u64) -> std::io::Result<()> {
    let mut h = [0u8; 512];
    let put = |h: &mut [u8; 512], at: usize, bytes: &[u8]| {
        h[at..at + bytes.len()].copy_from_slice(bytes);
    };
    put(&mut h, 0, name.as_bytes());
    put(&mut h, 100, b"0000644\0");
    put(&mut h, 108, b"0000000\0");
    put(&mut h, 116, b"0000000\0");
    put(&mut h, 124, format!("{:011o}\0", data.len()).as_bytes());
    put(&mut h, 136, format!("{mtime:011o}\0").as_bytes());
    put(&mut h, 148, b"        ");
    h[156] = b'0';
    put(&mut h, 257, b"ustar\0");
    put(&mut h, 263, b"00");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    put(&mut h, 148, format!("{sum:06o}\0 ").as_bytes());
    out.write_all(&h)?;
    out.write_all(data)?;
    let pad = (512 - data.len() % 512) % 512;
    out.write_all(&vec![0u8; pad])
}

/// Builds the log files of a task: (file name, bytes) per day, and the click count.
/// Log files of an archive: (file name, bytes).
type LogFiles = Vec<(String, Vec<u8>)>;

fn log_files(df: &DataFrame) -> Result<(LogFiles, u64), ReportError> {
    let p = polars("read clicks");
    let text: Vec<&StringChunked> = LINE_COLUMNS
        .iter()
        .map(|c| df.column(c).and_then(|c| c.str()))
        .collect::<PolarsResult<_>>()
        .map_err(&p)?;
    let day = df.column("__day").and_then(|c| c.str()).map_err(&p)?;
    let at = df.column("__at").and_then(|c| c.str()).map_err(&p)?;
    let activity = df.column("activity_id").and_then(|c| c.i64()).map_err(&p)?;
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for row in 0..df.height() {
        let mut line = serde_json::Map::new();
        line.insert("event_id".into(), text[0].get(row).into());
        line.insert("received_at".into(), at.get(row).into());
        line.insert("endpoint".into(), text[1].get(row).into());
        line.insert("activity_id".into(), activity.get(row).into());
        for (i, name) in LINE_COLUMNS.iter().enumerate().skip(2) {
            line.insert((*name).into(), text[i].get(row).into());
        }
        let name = format!("clicks-{}.log", day.get(row).unwrap_or("unknown"));
        if files.last().map(|(n, _)| n != &name).unwrap_or(true) {
            files.push((name, Vec::new()));
        }
        if let Some((_, buf)) = files.last_mut() {
            serde_json::to_writer(&mut *buf, &serde_json::Value::Object(line))
                .map_err(|e| ReportError::Task(e.to_string()))?;
            buf.push(b'\n');
        }
    }
    Ok((files, df.height() as u64))
}

impl Reports {
    /// The clicks of a task as a frame with the line columns, `__day` and `__at`, in order.
    async fn download_frame(&self, task: &Download) -> Result<DataFrame, ReportError> {
        let parse = |v: &str| {
            super::range::parse_day("range", v).map_err(|e| ReportError::Task(e.to_string()))
        };
        let range = DateRange {
            from: parse(&task.from)?,
            to: parse(&task.to)?,
        };
        let files = self.committed.list(&self.lake, AD_EVENTS, range).await?;
        let mut wanted: Vec<Wanted> = LINE_COLUMNS.iter().map(|c| Wanted::text(c)).collect();
        wanted.push(Wanted::text("workspace"));
        wanted.push(Wanted {
            name: "activity_id",
            dtype: || DataType::Int64,
        });
        wanted.push(Wanted {
            name: "received_at",
            dtype: || DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC)),
        });
        let Some(lf) = lake::frame(&self.lake, &files, &wanted).await? else {
            return Ok(DataFrame::empty());
        };
        let (workspace, tz) = (task.workspace.clone(), self.tz);
        tokio::task::spawn_blocking(move || {
            lf.filter(
                col("workspace").eq(lit(workspace)).and(
                    col("endpoint")
                        .eq(lit("click"))
                        .or(col("endpoint").eq(lit("feedback"))),
                ),
            )
            .with_columns([
                super::ad_monitoring::day_expr(tz).alias("__day"),
                col("received_at")
                    .dt()
                    .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
                    .alias("__at"),
            ])
            .filter(
                col("__day")
                    .gt_eq(lit(range.from.to_string()))
                    .and(col("__day").lt_eq(lit(range.to.to_string()))),
            )
            .sort_by_exprs(
                [col("received_at"), col("event_id")],
                SortMultipleOptions::default(),
            )
            .collect()
            .map_err(polars("clicks"))
        })
        .await
        .map_err(|e| ReportError::Task(e.to_string()))?
    }

    /// Produces a task's archive at `{dir}/{id}.tar.gz`; returns (clicks, bytes, file name).
    pub async fn build_download(
        &self,
        task: &Download,
        dir: &Path,
    ) -> Result<(u64, u64, String), ReportError> {
        let df = self.download_frame(task).await?;
        let (files, clicks) = if df.height() == 0 {
            (Vec::new(), 0)
        } else {
            log_files(&df)?
        };
        let name = format!("{}.tar.gz", task.id);
        let (dir, final_name) = (dir.to_path_buf(), name.clone());
        let bytes = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
            std::fs::create_dir_all(&dir)?;
            let tmp = dir.join(format!("{final_name}.tmp"));
            let mtime = chrono::Utc::now().timestamp().max(0) as u64;
            let file = std::fs::File::create(&tmp)?;
            let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
            for (n, data) in &files {
                tar_entry(&mut gz, n, data, mtime)?;
            }
            gz.write_all(&[0u8; 1024])?;
            let file = gz.finish()?;
            file.sync_all()?;
            let path = dir.join(&final_name);
            std::fs::rename(&tmp, &path)?;
            Ok(std::fs::metadata(&path)?.len())
        })
        .await
        .map_err(|e| ReportError::Task(e.to_string()))?
        .map_err(|e| ReportError::Task(format!("writing the archive: {e}")))?;
        Ok((clicks, bytes, name))
    }
}

/// The download worker of `serve`: re-queues tasks an earlier process left `processing`, then
/// processes queued tasks one at a time and deletes archives past their expiry.
pub async fn run_worker(
    reports: std::sync::Arc<Reports>,
    dir: PathBuf,
    ttl_hours: u32,
    stop: CancellationToken,
) {
    match reports.catalog.requeue_processing_downloads() {
        Ok(0) => {}
        Ok(n) => info!(
            tasks = n,
            "download tasks interrupted by a restart are queued again"
        ),
        Err(e) => warn!(error = %e, "cannot re-queue interrupted download tasks"),
    }
    loop {
        if let Err(e) = expire(&reports, &dir) {
            warn!(error = %e, "expiring downloads failed");
        }
        let claimed = match reports.catalog.claim_download() {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "claiming a download task failed");
                None
            }
        };
        if let Some(task) = claimed {
            let outcome = tokio::select! {
                r = reports.process_download(&task, &dir, ttl_hours) => r,
                () = stop.cancelled() => return,
            };
            if let Err(e) = outcome {
                warn!(download = task.id, error = %e, "cannot record the download outcome");
            }
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            () = stop.cancelled() => return,
        }
    }
}

fn expire(reports: &Reports, dir: &Path) -> Result<(), ReportError> {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    for task in reports.catalog.expired_downloads(&now)? {
        if let Some(file) = &task.file {
            match std::fs::remove_file(dir.join(file)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ReportError::Task(format!("deleting {file}: {e}"))),
            }
        }
        reports.catalog.clear_download_file(task.id)?;
        reports.finished("expired");
        info!(download = task.id, "download archive expired");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_default()
    }

    #[test]
    fn ranges_must_lie_within_the_last_month() {
        let today = day("2026-03-31");
        assert!(check_range(day("2026-03-02"), today, today).is_ok());
        let old = check_range(day("2026-03-01"), day("2026-03-05"), today);
        assert!(matches!(&old, Err(ReportError::Invalid(m)) if m.contains("last month")));
        assert!(check_range(day("2026-03-05"), day("2026-03-04"), today).is_err());
        assert!(check_range(today, day("2026-04-01"), today).is_err());
    }

    #[test]
    fn tar_headers_are_ustar_with_a_valid_checksum() -> std::io::Result<()> {
        let mut out = Vec::new();
        tar_entry(&mut out, "clicks-2026-03-01.log", b"{}\n", 0)?;
        assert_eq!(out.len(), 1024);
        assert_eq!(&out[257..263], b"ustar\0");
        let stored =
            u32::from_str_radix(std::str::from_utf8(&out[148..154]).unwrap_or("0"), 8).unwrap_or(0);
        let mut header = out[..512].to_vec();
        header[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, header.iter().map(|b| u32::from(*b)).sum::<u32>());
        Ok(())
    }
}
