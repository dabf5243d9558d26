//! Loading pipeline files: stage one ([`super::raw`], plain serde) then stage two (this module),
//! which checks every value, collects *all* errors of a file with their positions, and builds
//! the validated [`Pipeline`].
//!
//! `backflow validate` calls [`load_pipelines`] over the whole `pipelines/` folder, which adds the
//! checks that span files (duplicate pipeline names, two writers of one dataset).

mod job;
mod tags;

use std::collections::HashMap;
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_saphyr::Location;

use super::error::{Collector, ConfigError, is_blank, parse_yaml};
use super::model::{
    ColumnType, CompiledExpr, Compression, CsvOptions, DatasetJob, DatasetSchema, FileFormat,
    Granularity, JournalSource, Keep, Misfire, ObjectStoreFilesSource, Overlap, ParquetSink,
    Pipeline, PipelineTest, RetryPolicy, Schedule, SinkConfig, SourceConfig, TransformStep,
};
use super::raw::{
    Located, OrderedMap, RawCompression, RawCsvOptions, RawDedup, RawFileFormat, RawGranularity,
    RawKeep, RawMisfire, RawObjectStoreFiles, RawOverlap, RawParquetSink, RawPipeline, RawRetries,
    RawSchedule, RawSink, RawSource, RawTest, RawTransform, Row, TYPE_NAMES, TypeName,
};
use super::raw_dataset::{KindProbe, RawPipelineFile};
use super::schema_file::load_schema_file;

mod http;
mod kafka;
use crate::storage::StorageUrl;
pub use http::{DEFAULT_MAX_REQUESTS_PER_RUN, parse_duration, parse_local_time};

/// Default of `source.max_files_per_batch`.
pub const DEFAULT_MAX_FILES_PER_BATCH: u64 = 100;
/// Default of `source.max_bytes_per_batch` (256 MiB).
pub const DEFAULT_MAX_BYTES_PER_BATCH: u64 = 256 * 1024 * 1024;
/// Default of `sink.row_group_rows`.
pub const DEFAULT_ROW_GROUP_ROWS: u64 = 1_000_000;
/// Default of `source.suffixes`.
pub const DEFAULT_SUFFIXES: &[&str] = &[
    ".ndjson",
    ".jsonl",
    ".json",
    ".csv",
    ".ndjson.gz",
    ".jsonl.gz",
    ".json.gz",
    ".csv.gz",
];

/// How pipeline files are loaded.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Where `validate: {schema: x}` finds `x.yaml`; `None` means `<pipeline file's dir>/../schemas`.
    pub schemas_dir: Option<PathBuf>,
    /// Time zone of schedules that name none (the daemon's `time_zone`).
    pub default_time_zone: chrono_tz::Tz,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            schemas_dir: None,
            default_time_zone: chrono_tz::Asia::Shanghai,
        }
    }
}

impl LoadOptions {
    fn schemas_dir_for(&self, file: &Path) -> PathBuf {
        match &self.schemas_dir {
            Some(dir) => dir.clone(),
            None => file
                .parent()
                .unwrap_or(Path::new(""))
                .join("..")
                .join("schemas"),
        }
    }
}

/// The result of loading a set of pipeline files: the valid pipelines and every error.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Pipelines without errors (a pipeline that clashes with an earlier one is left out).
    pub pipelines: Vec<Pipeline>,
    /// Dataset jobs without errors (`kind: dataset` files).
    pub jobs: Vec<DatasetJob>,
    /// Every error of every file, in file order.
    pub errors: Vec<ConfigError>,
    /// How many pipeline files were read.
    pub files: usize,
}

/// Loads pipeline files; a path may be a directory, meaning every `*.yaml` / `*.yml` in it
/// (not recursive), sorted by name. Also checks that pipeline names and sink datasets are unique.
pub fn load_pipelines(paths: &[PathBuf], opts: &LoadOptions) -> LoadReport {
    let mut report = LoadReport::default();
    let mut schemas = SchemaCache::default();
    let mut loaded = Vec::new();
    let mut jobs = Vec::new();
    for file in expand_paths(paths, &mut report.errors) {
        report.files += 1;
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(err) => {
                report.errors.push(ConfigError::file(
                    &file,
                    format!("cannot read pipeline file: {err}"),
                ));
                continue;
            }
        };
        if is_dataset_job(&file, &text, &mut report.errors) {
            match job::load_job(&file, &text, opts) {
                Ok(job) => jobs.push(job),
                Err(errors) => report.errors.extend(errors),
            }
            continue;
        }
        match load_located(&file, &text, opts, &mut schemas) {
            Ok(pipeline) => loaded.push(pipeline),
            Err(errors) => report.errors.extend(errors),
        }
    }
    report.pipelines = check_unique(loaded, &mut report.errors);
    report.jobs = check_unique_jobs(jobs, &report.pipelines, &mut report.errors);
    report
}

/// Whether a file says `kind: dataset`. An unknown kind is an error here and the file is then
/// read as a pipeline (whose own errors follow). YAML that does not parse is a dataset job when
/// a top-level line says `kind: dataset`, so its syntax error is reported as the job's.
fn is_dataset_job(file: &Path, text: &str, errors: &mut Vec<ConfigError>) -> bool {
    let kind = match serde_saphyr::from_str::<KindProbe>(text) {
        Ok(KindProbe { kind: Some(kind) }) => kind,
        Ok(KindProbe { kind: None }) => return false,
        Err(_) => {
            return text.lines().any(|line| {
                let value = line
                    .strip_prefix("kind:")
                    .map(|v| v.split('#').next().unwrap_or("").trim());
                matches!(value, Some("dataset" | "\"dataset\"" | "'dataset'"))
            });
        }
    };
    match kind.value().as_str() {
        "dataset" => true,
        "stream" => false,
        other => {
            errors.push(ConfigError::at(
                file,
                kind.location(),
                "kind",
                format!("unknown kind `{other}`, expected `stream` (the default) or `dataset`"),
            ));
            false
        }
    }
}

/// Keeps the first job of each name and output; names are shared with pipelines.
fn check_unique_jobs(
    loaded: Vec<job::LoadedJob>,
    pipelines: &[Pipeline],
    errors: &mut Vec<ConfigError>,
) -> Vec<DatasetJob> {
    let mut names: HashMap<String, (PathBuf, Location)> = HashMap::new();
    let mut outputs: HashMap<String, String> = HashMap::new();
    let mut jobs = Vec::new();
    for job::LoadedJob {
        job,
        name_at,
        output_at,
    } in loaded
    {
        if let Some(p) = pipelines.iter().find(|p| p.name == job.name) {
            let message = format!(
                "name `{}` is already used by the pipeline in {}",
                job.name,
                p.file.display()
            );
            errors.push(ConfigError::at(&job.file, name_at, "name", message));
            continue;
        }
        if let Some((first_file, first_at)) = names.get(&job.name) {
            let message = format!(
                "duplicate job name `{}`, already defined at {}",
                job.name,
                position(first_file, *first_at)
            );
            errors.push(ConfigError::at(&job.file, name_at, "name", message));
            continue;
        }
        if let Some(writer) = outputs.get(job.output()) {
            let message = format!(
                "dataset `{}` is already built by job `{writer}`; a dataset has one writer",
                job.output()
            );
            errors.push(ConfigError::at(
                &job.file,
                output_at,
                "dataset.output",
                message,
            ));
            continue;
        }
        names.insert(job.name.clone(), (job.file.clone(), name_at));
        outputs.insert(job.output().to_string(), job.name.clone());
        jobs.push(job);
    }
    jobs
}

/// Loads one pipeline from its text; `file` names it in errors and in [`Pipeline::file`].
pub fn load_pipeline_str(
    file: &Path,
    text: &str,
    opts: &LoadOptions,
) -> Result<Pipeline, Vec<ConfigError>> {
    load_located(file, text, opts, &mut SchemaCache::default()).map(|loaded| loaded.pipeline)
}

/// The JSON Schema of the pipeline format (checked in as `schemas/pipeline.schema.json`).
pub fn pipeline_json_schema() -> serde_json::Value {
    schemars::schema_for!(RawPipelineFile).to_value()
}

/// Checks a name against `[a-z][a-z0-9_]*`.
pub(crate) fn check_ident(name: &str) -> Result<String, String> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(name.to_string())
    } else {
        Err(format!(
            "invalid name `{name}`, expected lower-case letters, digits and `_`, starting with a letter"
        ))
    }
}

/// Parses a column type name.
pub(crate) fn parse_column_type(name: &str) -> Result<ColumnType, String> {
    Ok(match name {
        "string" => ColumnType::String,
        "int64" => ColumnType::Int64,
        "float64" => ColumnType::Float64,
        "boolean" => ColumnType::Boolean,
        "timestamp" => ColumnType::Timestamp,
        "date" => ColumnType::Date,
        other => {
            return Err(format!(
                "unknown column type `{other}`, expected one of {}",
                TYPE_NAMES.join(", ")
            ));
        }
    })
}

/// The workspace of jobs that name none.
pub const DEFAULT_WORKSPACE: &str = "default";
/// Upper bound of `schedule.retries.max`.
pub const MAX_RETRIES: u32 = 20;

/// Parses a schedule duration ([`parse_duration`]: `500ms`, `30s`, `5m`, `6h`, `1d`) that must
/// be greater than zero and at most 7 days.
pub(crate) fn parse_schedule_duration(text: &str) -> Result<std::time::Duration, String> {
    let d = parse_duration(text)?;
    if d.is_zero() {
        Err(format!(
            "invalid duration `{}`: it must be greater than 0",
            text.trim()
        ))
    } else if d > std::time::Duration::from_secs(7 * 24 * 3600) {
        Err(format!(
            "invalid duration `{}`: longer than 7 days",
            text.trim()
        ))
    } else {
        Ok(d)
    }
}

/// Parses an IANA time zone name.
pub(crate) fn parse_time_zone(name: &str) -> Result<chrono_tz::Tz, String> {
    chrono_tz::Tz::from_str(name).map_err(|_| {
        format!("unknown time zone `{name}`, expected an IANA name such as Asia/Shanghai or UTC")
    })
}

/// Parses a cron expression: five crontab fields (second 0 is prepended, day-of-week numbers
/// keep their crontab meaning), or six/seven fields in the `cron` crate's syntax.
pub(crate) fn parse_cron(text: &str) -> Result<cron::Schedule, String> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    let expression = match fields.as_slice() {
        [minute, hour, day, month, weekday] => {
            format!(
                "0 {minute} {hour} {day} {month} {}",
                crontab_weekdays(weekday)?
            )
        }
        [_, _, _, _, _, _] | [_, _, _, _, _, _, _] => fields.join(" "),
        _ => {
            return Err(format!(
                "invalid cron expression `{text}`: expected 5 fields (minute hour day-of-month month \
                 day-of-week) or 6-7 fields (second first, optional year last), found {}",
                fields.len()
            ));
        }
    };
    cron::Schedule::from_str(&expression).map_err(|err| {
        // The crate's message repeats the expression with a caret line; keep only the reason.
        let err = err.to_string();
        let reason = err
            .lines()
            .rev()
            .find(|line| !line.trim().is_empty())
            .unwrap_or_default();
        format!("invalid cron expression `{text}`: {}", reason.trim())
    })
}

/// Rewrites a crontab day-of-week field (0 or 7 = Sunday) with day names, which the `cron`
/// crate reads the same way (its numbers start at 1 = Sunday).
fn crontab_weekdays(field: &str) -> Result<String, String> {
    const NAMES: [&str; 8] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"];
    let day = |part: &str| -> Result<String, String> {
        match part.parse::<usize>() {
            Ok(n) => NAMES
                .get(n)
                .map(|name| (*name).to_string())
                .ok_or_else(|| format!("day-of-week `{n}` is out of range 0-7")),
            Err(_) => Ok(part.to_string()),
        }
    };
    let item = |item: &str| -> Result<String, String> {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, Some(step)),
            None => (item, None),
        };
        let range = match range.split_once('-') {
            // `5-7` (Friday to Sunday) wraps in the `cron` crate's numbering: split it.
            Some((from, "7")) if step.is_none() && from != "0" && from != "7" => {
                format!("{}-SAT,SUN", day(from)?)
            }
            Some((from, to)) => format!("{}-{}", day(from)?, day(to)?),
            None => day(range)?,
        };
        Ok(match step {
            Some(step) => format!("{range}/{step}"),
            None => range,
        })
    };
    let items: Result<Vec<String>, String> = field.split(',').map(item).collect();
    Ok(items?.join(","))
}

/// Dataset schemas already loaded in this run, by file; `None` for a file with errors
/// (reported once, by the first pipeline that names it).
#[derive(Debug, Default)]
struct SchemaCache {
    schemas: HashMap<PathBuf, Option<DatasetSchema>>,
}

/// A pipeline with the positions the cross-file checks point at.
struct LoadedPipeline {
    pipeline: Pipeline,
    name_at: Location,
    dataset_at: Location,
}

fn expand_paths(paths: &[PathBuf], errors: &mut Vec<ConfigError>) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = Vec::new();
    for path in paths {
        if !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        match std::fs::read_dir(path) {
            Ok(entries) => {
                let mut found: Vec<PathBuf> = entries
                    .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                    .filter(|file| file.is_file() && is_yaml(file))
                    .collect();
                found.sort();
                files.extend(found);
            }
            Err(err) => errors.push(ConfigError::file(
                path,
                format!("cannot list directory: {err}"),
            )),
        }
    }
    let mut seen = std::collections::HashSet::new();
    files.retain(|file| seen.insert(file.clone()));
    files
}

fn is_yaml(file: &Path) -> bool {
    file.extension()
        .is_some_and(|ext| ext == "yaml" || ext == "yml")
}

/// Keeps the first pipeline of each name and dataset; each later one is an error at its value.
fn check_unique(loaded: Vec<LoadedPipeline>, errors: &mut Vec<ConfigError>) -> Vec<Pipeline> {
    let mut names: HashMap<String, (PathBuf, Location)> = HashMap::new();
    let mut datasets: HashMap<String, (String, PathBuf, Location)> = HashMap::new();
    let mut pipelines = Vec::new();
    for LoadedPipeline {
        pipeline,
        name_at,
        dataset_at,
    } in loaded
    {
        let file = pipeline.file.clone();
        if let Some((first_file, first_at)) = names.get(&pipeline.name) {
            let message = format!(
                "duplicate pipeline name `{}`, already defined at {}",
                pipeline.name,
                position(first_file, *first_at)
            );
            errors.push(ConfigError::at(&file, name_at, "name", message));
            continue;
        }
        if let Some(dataset) = pipeline.sink.dataset() {
            if let Some((writer, first_file, first_at)) = datasets.get(dataset) {
                let message = format!(
                    "dataset `{dataset}` is already written by pipeline `{writer}` ({}); a dataset has one writer",
                    position(first_file, *first_at)
                );
                errors.push(ConfigError::at(&file, dataset_at, "sink.dataset", message));
                continue;
            }
            datasets.insert(
                dataset.to_string(),
                (pipeline.name.clone(), file.clone(), dataset_at),
            );
        }
        names.insert(pipeline.name.clone(), (file, name_at));
        pipelines.push(pipeline);
    }
    pipelines
}

fn position(file: &Path, at: Location) -> String {
    format!("{}:{}:{}", file.display(), at.line(), at.column())
}

fn load_located(
    file: &Path,
    text: &str,
    opts: &LoadOptions,
    schemas: &mut SchemaCache,
) -> Result<LoadedPipeline, Vec<ConfigError>> {
    if is_blank(text) {
        let message = "the file is empty; expected a pipeline (name, source, sink, ...)";
        return Err(vec![ConfigError::file(file, message)]);
    }
    let raw: RawPipeline = parse_yaml(file, text).map_err(|err| vec![err])?;
    let name_at = raw.name.location();
    let dataset_at = match &raw.sink {
        RawSink::Parquet(sink) => sink.dataset.location(),
        RawSink::Kafka(sink) => sink.topic.location(),
    };
    let mut converter = Converter {
        errors: Collector::new(file),
        schemas_dir: opts.schemas_dir_for(file),
        default_time_zone: opts.default_time_zone,
        schemas,
    };
    let pipeline = converter.pipeline(file, raw);
    let pipeline = converter.errors.finish(pipeline)?;
    Ok(LoadedPipeline {
        pipeline,
        name_at,
        dataset_at,
    })
}

/// Stage two of one file: raw types to the model, every error collected.
struct Converter<'a> {
    errors: Collector<'a>,
    schemas_dir: PathBuf,
    default_time_zone: chrono_tz::Tz,
    schemas: &'a mut SchemaCache,
}

impl Converter<'_> {
    fn pipeline(&mut self, file: &Path, raw: RawPipeline) -> Option<Pipeline> {
        let name = self
            .errors
            .check(raw.name.location(), "name", check_ident(raw.name.value()));
        if let (RawSource::Journal(_), RawSink::Kafka(sink)) = (&raw.source, &raw.sink) {
            self.errors.push(
                sink.topic.location(),
                "sink",
                "a `journal` pipeline is metered for billing and lands in the lake (`type: parquet`); \
                 to publish hits downstream, read the Kafka journal's topic (`source: {type: kafka, \
                 format: hit_record}`) in a pipeline with a Kafka sink",
            );
        }
        let source = self.source(raw.source);
        let transforms: Vec<_> = raw
            .transforms
            .into_iter()
            .enumerate()
            .map(|(i, t)| self.transform(i, t))
            .collect();
        let sink = self.sink(raw.sink);
        let schedule = raw.schedule.map(|schedule| self.schedule(schedule));
        let tests = self.tests(raw.tests);
        Some(Pipeline {
            name: name?,
            file: file.to_path_buf(),
            description: raw.description,
            source: source?,
            transforms: transforms.into_iter().collect::<Option<_>>()?,
            sink: sink?,
            schedule: match schedule {
                None => None,
                Some(schedule) => Some(schedule?),
            },
            tests: tests?,
        })
    }

    // ---- source ----

    fn source(&mut self, raw: RawSource) -> Option<SourceConfig> {
        match raw {
            RawSource::ObjectStoreFiles(files) => {
                self.files_source(files).map(SourceConfig::ObjectStoreFiles)
            }
            RawSource::Kafka(raw) => self.kafka_source(raw).map(SourceConfig::Kafka),
            RawSource::Http(raw) => self
                .http_source(raw)
                .map(|s| SourceConfig::Http(Box::new(s))),
            RawSource::Journal(raw) => {
                let records = self.limit(
                    raw.max_records_per_batch,
                    "source.max_records_per_batch",
                    200_000,
                );
                let records =
                    records.and_then(|n| self.usize_limit(n, "source.max_records_per_batch"));
                let bytes = self.limit(
                    raw.max_bytes_per_batch,
                    "source.max_bytes_per_batch",
                    128 * 1024 * 1024,
                );
                let bytes = bytes.and_then(|n| self.usize_limit(n, "source.max_bytes_per_batch"));
                Some(SourceConfig::Journal(JournalSource {
                    max_records_per_batch: records?,
                    max_bytes_per_batch: bytes?,
                }))
            }
        }
    }

    fn files_source(&mut self, raw: RawObjectStoreFiles) -> Option<ObjectStoreFilesSource> {
        let url = self.storage_url(&raw.url, "source.url");
        let suffixes = self.suffixes(raw.suffixes);
        let csv = self.csv(raw.csv);
        let max_files = self.limit(
            raw.max_files_per_batch,
            "source.max_files_per_batch",
            DEFAULT_MAX_FILES_PER_BATCH,
        );
        let max_files = max_files.and_then(|n| self.usize_limit(n, "source.max_files_per_batch"));
        let max_bytes = self.limit(
            raw.max_bytes_per_batch,
            "source.max_bytes_per_batch",
            DEFAULT_MAX_BYTES_PER_BATCH,
        );
        let listing = self.listing(raw.listing);
        Some(ObjectStoreFilesSource {
            url: url?,
            format: file_format(raw.format),
            compression: compression(raw.compression),
            suffixes: suffixes?,
            csv: csv?,
            max_files_per_batch: max_files?,
            max_bytes_per_batch: max_bytes?.0,
            listing: listing?,
        })
    }

    fn storage_url(&mut self, raw: &Located<String>, path: &str) -> Option<StorageUrl> {
        let parsed = raw
            .value()
            .parse::<StorageUrl>()
            .map_err(|err| err.to_string());
        self.errors.check(raw.location(), path, parsed)
    }

    fn suffixes(&mut self, raw: Option<Located<Vec<Located<String>>>>) -> Option<Vec<String>> {
        let Some(raw) = raw else {
            return Some(DEFAULT_SUFFIXES.iter().map(|s| (*s).to_string()).collect());
        };
        if raw.value().is_empty() {
            self.errors.push(
                raw.location(),
                "source.suffixes",
                "expected at least one suffix",
            );
            return None;
        }
        let suffixes: Vec<Option<String>> = raw
            .into_value()
            .into_iter()
            .enumerate()
            .map(|(i, suffix)| self.non_empty(&suffix, &format!("source.suffixes[{i}]"), "suffix"))
            .collect();
        suffixes.into_iter().collect()
    }

    fn csv(&mut self, raw: Option<RawCsvOptions>) -> Option<CsvOptions> {
        let defaults = CsvOptions::default();
        let Some(raw) = raw else {
            return Some(defaults);
        };
        let delimiter = match raw.delimiter {
            None => Some(defaults.delimiter),
            Some(delimiter) => {
                let parsed = match delimiter.value().as_bytes() {
                    [byte] if byte.is_ascii() => Ok(*byte),
                    _ => Err(format!(
                        "expected one ASCII character, found `{}`",
                        delimiter.value()
                    )),
                };
                self.errors
                    .check(delimiter.location(), "source.csv.delimiter", parsed)
            }
        };
        Some(CsvOptions {
            delimiter: delimiter?,
            has_header: raw.has_header.unwrap_or(defaults.has_header),
        })
    }

    /// A positive limit, or its default; `.1` is where it was written.
    fn limit(
        &mut self,
        raw: Option<Located<u64>>,
        path: &str,
        default: u64,
    ) -> Option<(NonZeroU64, Location)> {
        let (value, at) = match raw {
            Some(raw) => (*raw.value(), raw.location()),
            None => (default, Location::UNKNOWN),
        };
        let checked = NonZeroU64::new(value)
            .ok_or_else(|| "expected a number greater than 0, found 0".to_string());
        self.errors.check(at, path, checked).map(|n| (n, at))
    }

    fn usize_limit(
        &mut self,
        (value, at): (NonZeroU64, Location),
        path: &str,
    ) -> Option<NonZeroUsize> {
        let converted = NonZeroUsize::try_from(value).map_err(|_| format!("{value} is too large"));
        self.errors.check(at, path, converted)
    }

    // ---- transforms ----

    fn transform(&mut self, i: usize, raw: RawTransform) -> Option<TransformStep> {
        let path = format!("transforms[{i}]");
        match raw {
            RawTransform::Rename(map) => self
                .rename(&format!("{path}.rename"), map)
                .map(TransformStep::Rename),
            RawTransform::Cast(map) => self
                .cast(&format!("{path}.cast"), map)
                .map(TransformStep::Cast),
            RawTransform::Filter(expr) => self
                .expr(&expr, &format!("{path}.filter"))
                .map(TransformStep::Filter),
            RawTransform::Derive(map) => self
                .derive(&format!("{path}.derive"), map)
                .map(TransformStep::Derive),
            RawTransform::Drop(columns) => self
                .columns(&format!("{path}.drop"), columns)
                .map(TransformStep::Drop),
            RawTransform::Dedup(dedup) => self.dedup(&format!("{path}.dedup"), dedup),
            RawTransform::Validate(validate) => self
                .schema(&validate.schema, &format!("{path}.validate.schema"))
                .map(TransformStep::Validate),
        }
    }

    fn rename(
        &mut self,
        path: &str,
        map: OrderedMap<Located<String>>,
    ) -> Option<Vec<(String, String)>> {
        let mut targets: HashMap<String, Location> = HashMap::new();
        let pairs: Vec<Option<(String, String)>> = map
            .0
            .into_iter()
            .map(|(from, to)| {
                let from = self.non_empty(&from, path, "column name");
                let to_path = format!("{path}.{}", from.as_deref().unwrap_or_default());
                let to = self.non_empty(&to, &to_path, "column name").and_then(|name| {
                    match targets.insert(name.clone(), to.location()) {
                        Some(first) => {
                            let message = format!(
                                "`{name}` is already the target of the rename at line {}, column {}",
                                first.line(),
                                first.column()
                            );
                            self.errors.push(to.location(), &to_path, message);
                            None
                        }
                        None => Some(name),
                    }
                });
                Some((from?, to?))
            })
            .collect();
        pairs.into_iter().collect()
    }

    fn cast(
        &mut self,
        path: &str,
        map: OrderedMap<Located<TypeName>>,
    ) -> Option<Vec<(String, ColumnType)>> {
        let pairs: Vec<Option<(String, ColumnType)>> = map
            .0
            .into_iter()
            .map(|(column, ty)| {
                let column = self.non_empty(&column, path, "column name");
                let ty_path = format!("{path}.{}", column.as_deref().unwrap_or_default());
                let ty =
                    self.errors
                        .check(ty.location(), &ty_path, parse_column_type(&ty.value().0));
                Some((column?, ty?))
            })
            .collect();
        pairs.into_iter().collect()
    }

    fn derive(
        &mut self,
        path: &str,
        map: OrderedMap<Located<String>>,
    ) -> Option<Vec<(String, CompiledExpr)>> {
        let pairs: Vec<Option<(String, CompiledExpr)>> = map
            .0
            .into_iter()
            .map(|(column, expr)| {
                let column = self.non_empty(&column, path, "column name");
                let expr = self.expr(
                    &expr,
                    &format!("{path}.{}", column.as_deref().unwrap_or_default()),
                );
                Some((column?, expr?))
            })
            .collect();
        pairs.into_iter().collect()
    }

    fn dedup(&mut self, path: &str, raw: RawDedup) -> Option<TransformStep> {
        let keys = self.columns(&format!("{path}.keys"), raw.keys)?;
        let keep = match raw.keep {
            RawKeep::First => Keep::First,
            RawKeep::Last => Keep::Last,
        };
        Some(TransformStep::Dedup { keys, keep })
    }

    /// A non-empty list of non-empty column names.
    fn columns(&mut self, path: &str, raw: Located<Vec<Located<String>>>) -> Option<Vec<String>> {
        if raw.value().is_empty() {
            self.errors
                .push(raw.location(), path, "expected at least one column");
            return None;
        }
        let columns: Vec<Option<String>> = raw
            .into_value()
            .iter()
            .enumerate()
            .map(|(i, column)| self.non_empty(column, &format!("{path}[{i}]"), "column name"))
            .collect();
        columns.into_iter().collect()
    }

    fn non_empty(&mut self, raw: &Located<String>, path: &str, what: &str) -> Option<String> {
        let checked = if raw.value().trim().is_empty() {
            Err(format!("{what} must not be empty"))
        } else {
            Ok(raw.value().clone())
        };
        self.errors.check(raw.location(), path, checked)
    }

    fn expr(&mut self, raw: &Located<String>, path: &str) -> Option<CompiledExpr> {
        let source = raw.value();
        let compiled = polars::sql::sql_expr(source)
            .map(|expr| CompiledExpr {
                source: source.clone(),
                expr,
            })
            .map_err(|err| {
                format!(
                    "invalid SQL expression `{source}`: {}",
                    one_line(&err.to_string())
                )
            });
        self.errors.check(raw.location(), path, compiled)
    }

    fn schema(&mut self, raw: &Located<String>, path: &str) -> Option<DatasetSchema> {
        let name = self
            .errors
            .check(raw.location(), path, check_ident(raw.value()))?;
        let file = self.schemas_dir.join(format!("{name}.yaml"));
        if !file.is_file() {
            let message = format!("unknown schema `{name}`: {} does not exist", file.display());
            self.errors.push(raw.location(), path, message);
            return None;
        }
        let schema = match self.schemas.schemas.get(&file) {
            Some(cached) => cached.clone(),
            None => {
                let loaded = load_schema_file(&file)
                    .map_err(|errors| self.errors.extend(errors))
                    .ok();
                self.schemas.schemas.insert(file.clone(), loaded.clone());
                loaded
            }
        };
        let checked = match schema {
            None => Err(format!(
                "schema `{name}` has errors (see {})",
                file.display()
            )),
            Some(schema) if schema.name != name => Err(format!(
                "{} declares schema name `{}`, expected `{name}`",
                file.display(),
                schema.name
            )),
            Some(schema) => Ok(schema),
        };
        self.errors.check(raw.location(), path, checked)
    }

    // ---- sink, schedule, tests ----

    fn sink(&mut self, raw: RawSink) -> Option<SinkConfig> {
        match raw {
            RawSink::Parquet(parquet) => self.parquet_sink(parquet).map(SinkConfig::Parquet),
            RawSink::Kafka(kafka) => self.kafka_sink(kafka).map(SinkConfig::Kafka),
        }
    }

    fn parquet_sink(&mut self, raw: RawParquetSink) -> Option<ParquetSink> {
        let dataset = self.errors.check(
            raw.dataset.location(),
            "sink.dataset",
            check_ident(raw.dataset.value()),
        );
        let column = self.non_empty(
            &raw.partition_by.column,
            "sink.partition_by.column",
            "column name",
        );
        let rows = self.limit(
            raw.row_group_rows,
            "sink.row_group_rows",
            DEFAULT_ROW_GROUP_ROWS,
        );
        let rows = rows.and_then(|n| self.usize_limit(n, "sink.row_group_rows"));
        Some(ParquetSink {
            dataset: dataset?,
            partition_column: column?,
            granularity: match raw.partition_by.granularity {
                RawGranularity::Day => Granularity::Day,
                RawGranularity::Hour => Granularity::Hour,
            },
            row_group_rows: rows?,
        })
    }

    fn schedule(&mut self, raw: RawSchedule) -> Option<Schedule> {
        let parsed = self.errors.check(
            raw.cron.location(),
            "schedule.cron",
            parse_cron(raw.cron.value()),
        );
        let time_zone = match &raw.time_zone {
            None => Some(self.default_time_zone),
            Some(tz) => self.errors.check(
                tz.location(),
                "schedule.time_zone",
                parse_time_zone(tz.value()),
            ),
        };
        // A cron that matches no date (`0 0 30 2 *`) would never run the job: refuse it here
        // rather than leave a job that silently never refreshes.
        let parsed = parsed.and_then(|parsed| {
            let fires = parsed.upcoming(chrono::Utc).next().is_some();
            let never = format!(
                "cron expression `{}` never fires: no date matches it (e.g. February 30)",
                raw.cron.value()
            );
            self.errors.check(
                raw.cron.location(),
                "schedule.cron",
                fires.then_some(parsed).ok_or(never),
            )
        });
        let workspace = match &raw.workspace {
            None => Some(DEFAULT_WORKSPACE.to_string()),
            Some(w) => self.non_empty(w, "schedule.workspace", "the workspace"),
        };
        let retries = match raw.retries {
            None => Some(RetryPolicy::default()),
            Some(r) => self.retries(r),
        };
        Some(Schedule {
            cron: raw.cron.into_value(),
            parsed: parsed?,
            time_zone: time_zone?,
            overlap: match raw.overlap {
                RawOverlap::Skip => Overlap::Skip,
                RawOverlap::Queue => Overlap::Queue,
            },
            misfire: match raw.misfire {
                RawMisfire::RunOnce => Misfire::RunOnce,
                RawMisfire::Skip => Misfire::Skip,
            },
            retries: retries?,
            workspace: workspace?,
        })
    }

    fn retries(&mut self, raw: RawRetries) -> Option<RetryPolicy> {
        let defaults = RetryPolicy::default();
        let max = self.errors.check(
            raw.max.location(),
            "schedule.retries.max",
            u32::try_from(*raw.max.value())
                .ok()
                .filter(|n| *n <= MAX_RETRIES)
                .ok_or_else(|| {
                    format!(
                        "expected a number from 0 to {MAX_RETRIES}, found {}",
                        raw.max.value()
                    )
                }),
        );
        let initial = self.duration(
            raw.backoff_initial.as_ref(),
            "schedule.retries.backoff_initial",
            defaults.backoff_initial,
        );
        let most = self.duration(
            raw.backoff_max.as_ref(),
            "schedule.retries.backoff_max",
            defaults.backoff_max,
        );
        let (initial, most) = (initial?, most?);
        if most < initial {
            let at = raw
                .backoff_max
                .as_ref()
                .map_or(raw.max.location(), Located::location);
            self.errors.push(
                at,
                "schedule.retries.backoff_max",
                format!("backoff_max ({most:?}) is shorter than backoff_initial ({initial:?})"),
            );
            return None;
        }
        Some(RetryPolicy {
            max: max?,
            backoff_initial: initial,
            backoff_max: most,
        })
    }

    /// A duration value, or `default` when absent.
    pub(super) fn duration(
        &mut self,
        raw: Option<&Located<String>>,
        path: &str,
        default: std::time::Duration,
    ) -> Option<std::time::Duration> {
        match raw {
            None => Some(default),
            Some(raw) => {
                self.errors
                    .check(raw.location(), path, parse_schedule_duration(raw.value()))
            }
        }
    }

    fn tests(&mut self, raw: Vec<RawTest>) -> Option<Vec<PipelineTest>> {
        let mut names: HashMap<String, Location> = HashMap::new();
        let tests: Vec<Option<PipelineTest>> = raw
            .into_iter()
            .enumerate()
            .map(|(i, test)| {
                let path = format!("tests[{i}]");
                let name = self.non_empty(&test.name, &format!("{path}.name"), "test name");
                if let Some(first) = name
                    .as_ref()
                    .and_then(|n| names.insert(n.clone(), test.name.location()))
                {
                    let message = format!(
                        "duplicate test name, first used at line {}, column {}",
                        first.line(),
                        first.column()
                    );
                    self.errors
                        .push(test.name.location(), &format!("{path}.name"), message);
                }
                let input = self.rows(&format!("{path}.input"), test.input);
                let expect = self.rows(&format!("{path}.expect"), test.expect);
                Some(PipelineTest {
                    name: name?,
                    input: input?,
                    expect: expect?,
                    expect_quarantine: test.expect_quarantine,
                })
            })
            .collect();
        tests.into_iter().collect()
    }

    /// Test rows, whose values must be scalars or null.
    fn rows(&mut self, path: &str, rows: Vec<Located<Row>>) -> Option<Vec<Row>> {
        let mut valid = true;
        for (i, row) in rows.iter().enumerate() {
            for (column, value) in row.value() {
                let kind = match value {
                    serde_json::Value::Array(_) => "a sequence",
                    serde_json::Value::Object(_) => "a mapping",
                    _ => continue,
                };
                let message = format!("expected a scalar or null, found {kind}");
                self.errors
                    .push(row.location(), &format!("{path}[{i}].{column}"), message);
                valid = false;
            }
        }
        valid.then(|| rows.into_iter().map(Located::into_value).collect())
    }
}

fn file_format(raw: RawFileFormat) -> FileFormat {
    match raw {
        RawFileFormat::Auto => FileFormat::Auto,
        RawFileFormat::Ndjson => FileFormat::Ndjson,
        RawFileFormat::Csv => FileFormat::Csv,
    }
}

fn compression(raw: RawCompression) -> Compression {
    match raw {
        RawCompression::Auto => Compression::Auto,
        RawCompression::None => Compression::None,
        RawCompression::Gzip => Compression::Gzip,
    }
}

/// Joins a possibly multi-line message into one line.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests;
