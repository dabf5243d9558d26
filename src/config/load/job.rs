//! Stage two of dataset jobs (`kind: dataset`): [`RawDatasetJob`] to the validated
//! [`DatasetJob`], every error collected with its position.

use std::path::Path;

use super::{Converter, LoadOptions, SchemaCache, check_ident};
use crate::config::error::{Collector, ConfigError, parse_yaml};
use crate::config::model::{
    AdEventsMapping, AdObject, BEHAVIOR_COLUMNS, BEHAVIOR_REQUIRED, BehaviorBuild, DatasetBuild,
    DatasetJob, PeriodUnit, PublishPolicy, RefreshPolicy, TimeGrain, WaitForSources,
};
use crate::config::model_tags::USER_TAGS_REQUIRED;
use crate::config::raw::Located;
use crate::config::raw_dataset::{
    RawAdEventsMapping, RawAdObject, RawBehaviorBuild, RawDatasetBuild, RawDatasetJob,
    RawPeriodUnit, RawPublish, RawRefresh, RawTimeGrain,
};

/// Default of `publish.keep_versions`.
pub const DEFAULT_KEEP_VERSIONS: u64 = 3;

/// Hit endpoints a behavior type can be given for.
const ENDPOINTS: &[&str] = &["impression", "click", "feedback"];

/// A loaded job with the position the cross-file checks point at.
pub(super) struct LoadedJob {
    pub job: DatasetJob,
    pub name_at: serde_saphyr::Location,
    pub output_at: serde_saphyr::Location,
}

pub(super) fn load_job(
    file: &Path,
    text: &str,
    opts: &LoadOptions,
) -> Result<LoadedJob, Vec<ConfigError>> {
    let raw: RawDatasetJob = parse_yaml(file, text).map_err(|err| vec![err])?;
    let name_at = raw.name.location();
    let output_at = match &raw.dataset {
        RawDatasetBuild::Behavior(b) => b.output.location(),
        RawDatasetBuild::UserTags(b) => b.output.location(),
    };
    let mut schemas = SchemaCache::default();
    let mut converter = Converter {
        errors: Collector::new(file),
        schemas_dir: opts.schemas_dir_for(file),
        default_time_zone: opts.default_time_zone,
        schemas: &mut schemas,
    };
    let job = converter.job(file, raw);
    let job = converter.errors.finish(job)?;
    Ok(LoadedJob {
        job,
        name_at,
        output_at,
    })
}

impl Converter<'_> {
    fn job(&mut self, file: &Path, raw: RawDatasetJob) -> Option<DatasetJob> {
        let name = self
            .errors
            .check(raw.name.location(), "name", check_ident(raw.name.value()));
        let build = match raw.dataset {
            RawDatasetBuild::Behavior(b) => self.behavior(b).map(DatasetBuild::Behavior),
            RawDatasetBuild::UserTags(b) => self.user_tags(file, b).map(DatasetBuild::UserTags),
        };
        // Null-ratio columns are checked only against a build without errors.
        let (columns, required): (Option<Vec<String>>, &[&str]) = match &build {
            Some(DatasetBuild::Behavior(_)) => (
                Some(BEHAVIOR_COLUMNS.iter().map(|c| (*c).to_string()).collect()),
                BEHAVIOR_REQUIRED,
            ),
            Some(DatasetBuild::UserTags(b)) => (Some(b.columns()), USER_TAGS_REQUIRED),
            None => (None, &[]),
        };
        let publish = self.publish(
            raw.publish.unwrap_or_default(),
            columns.as_deref(),
            required,
        );
        let schedule = raw.schedule.map(|schedule| self.schedule(schedule));
        // The grain of builds that have one (a period must not split a row).
        let grain = build.as_ref().map(|b| match b {
            DatasetBuild::Behavior(b) => Some(b.time_grain),
            // A snapshot as of the period's end: any period fits.
            DatasetBuild::UserTags(_) => None,
        });
        let refresh = self.refresh(raw.refresh.unwrap_or_default(), grain.flatten());
        Some(DatasetJob {
            name: name?,
            file: file.to_path_buf(),
            description: raw.description,
            build: build?,
            publish: publish?,
            schedule: match schedule {
                None => None,
                Some(schedule) => Some(schedule?),
            },
            refresh: refresh?,
        })
    }

    fn refresh(&mut self, raw: RawRefresh, grain: Option<TimeGrain>) -> Option<RefreshPolicy> {
        let at = raw
            .period
            .as_ref()
            .map_or(serde_saphyr::Location::UNKNOWN, Located::location);
        let period = match raw.period.map(Located::into_value).unwrap_or_default() {
            RawPeriodUnit::Day => PeriodUnit::Day,
            RawPeriodUnit::Hour => PeriodUnit::Hour,
        };
        let period_ok = !(period == PeriodUnit::Hour && grain == Some(TimeGrain::Day));
        if !period_ok {
            // An hour of a day-grain row cannot be replaced on its own: the row sums the day.
            self.errors.push(
                at,
                "refresh.period",
                "`hour` periods need `dataset.time_grain: hour` (a day row cannot be rebuilt one hour at a time)",
            );
        }
        let wait = match raw.wait_for_sources {
            None => Some(None),
            Some(w) => {
                let timeout = self.errors.check(
                    w.timeout.location(),
                    "refresh.wait_for_sources.timeout",
                    super::parse_schedule_duration(w.timeout.value()),
                );
                let poll = self.duration(
                    w.poll_interval.as_ref(),
                    "refresh.wait_for_sources.poll_interval",
                    std::time::Duration::from_secs(30),
                );
                match (timeout, poll) {
                    (Some(timeout), Some(poll_interval)) => Some(Some(WaitForSources {
                        timeout,
                        poll_interval,
                    })),
                    _ => None,
                }
            }
        };
        let wait = wait?;
        period_ok.then_some(RefreshPolicy {
            period,
            wait_for_sources: wait,
        })
    }

    pub(super) fn ident(&mut self, raw: &Located<String>, path: &str) -> Option<String> {
        self.errors
            .check(raw.location(), path, check_ident(raw.value()))
    }

    fn behavior(&mut self, raw: RawBehaviorBuild) -> Option<BehaviorBuild> {
        let output = self.ident(&raw.output, "dataset.output");
        let behavior_events = raw
            .behavior_events
            .as_ref()
            .map(|d| self.ident(d, "dataset.behavior_events"));
        let ad_events = raw.ad_events.map(|m| self.ad_events(m));
        let (behavior_events, ad_events) = match (behavior_events, ad_events) {
            (Some(None), _) | (_, Some(None)) => return None,
            (b, a) => (b.flatten(), a.flatten()),
        };
        if behavior_events.is_none() && ad_events.is_none() {
            self.errors.push(
                raw.output.location(),
                "dataset",
                "no source: `behavior_events` is null and `ad_events` is not given; name at least one",
            );
            return None;
        }
        Some(BehaviorBuild {
            output: output?,
            time_grain: match raw.time_grain {
                RawTimeGrain::Day => TimeGrain::Day,
                RawTimeGrain::Hour => TimeGrain::Hour,
            },
            behavior_events,
            ad_events,
        })
    }

    fn ad_events(&mut self, raw: RawAdEventsMapping) -> Option<AdEventsMapping> {
        let dataset = match &raw.dataset {
            Some(d) => self.ident(d, "dataset.ad_events.dataset"),
            None => Some("ad_events".to_string()),
        };
        let behavior_types = match raw.behavior_types {
            None => Some(vec![
                ("impression".to_string(), "曝光".to_string()),
                ("click".to_string(), "点击".to_string()),
            ]),
            Some(map) => {
                let mut out = Vec::new();
                let mut ok = true;
                for (endpoint, ty) in map.0 {
                    let path = format!("dataset.ad_events.behavior_types.{}", endpoint.value());
                    if !ENDPOINTS.contains(&endpoint.value().as_str()) {
                        self.errors.push(
                            endpoint.location(),
                            &path,
                            format!(
                                "unknown endpoint `{}`, expected one of {}",
                                endpoint.value(),
                                ENDPOINTS.join(", ")
                            ),
                        );
                        ok = false;
                    } else if ty.value().trim().is_empty() {
                        self.errors
                            .push(ty.location(), &path, "the behavior type is empty");
                        ok = false;
                    } else if out.iter().any(|(e, _)| e == endpoint.value()) {
                        self.errors
                            .push(endpoint.location(), &path, "endpoint given twice");
                        ok = false;
                    } else {
                        out.push((endpoint.into_value(), ty.into_value()));
                    }
                }
                ok.then_some(out)
            }
        };
        Some(AdEventsMapping {
            dataset: dataset?,
            behavior_types: behavior_types?,
            object: match raw.object {
                RawAdObject::Activity => AdObject::Activity,
                RawAdObject::Creative => AdObject::Creative,
            },
            include_flagged: raw.include_flagged,
        })
    }

    /// `columns`: the main table's columns; `required`: those always checked at 0 nulls.
    fn publish(
        &mut self,
        raw: RawPublish,
        columns: Option<&[String]>,
        required: &[&str],
    ) -> Option<PublishPolicy> {
        let keep = self.limit(
            raw.keep_versions,
            "publish.keep_versions",
            DEFAULT_KEEP_VERSIONS,
        );
        let keep = keep.and_then(|k| self.usize_limit(k, "publish.keep_versions"));
        let mut ratios: Vec<(String, f64)> =
            required.iter().map(|c| ((*c).to_string(), 0.0)).collect();
        let mut ok = true;
        for (column, ratio) in raw.max_null_ratio.map(|m| m.0).unwrap_or_default() {
            let path = format!("publish.max_null_ratio.{}", column.value());
            if let Some(columns) = columns.filter(|c| !c.contains(column.value())) {
                self.errors.push(
                    column.location(),
                    &path,
                    format!(
                        "unknown column `{}`, expected one of {}",
                        column.value(),
                        columns.join(", ")
                    ),
                );
                ok = false;
                continue;
            }
            if !(0.0..=1.0).contains(ratio.value()) {
                self.errors.push(
                    ratio.location(),
                    &path,
                    format!("expected a share from 0 to 1, found {}", ratio.value()),
                );
                ok = false;
                continue;
            }
            if required.contains(&column.value().as_str()) {
                self.errors.push(
                    column.location(),
                    &path,
                    format!(
                        "`{}` is required: it may never be null, so it takes no threshold",
                        column.value()
                    ),
                );
                ok = false;
                continue;
            }
            ratios.push((column.into_value(), *ratio.value()));
        }
        let notify = match raw.notify {
            None => Some(None),
            Some(notify) => self
                .kafka_producer(notify.kafka.into_sink(), "publish.notify.kafka")
                .map(Some),
        };
        if !ok {
            return None;
        }
        Some(PublishPolicy {
            keep_versions: keep?,
            allow_empty: raw.allow_empty,
            max_null_ratio: ratios,
            notify: notify?,
        })
    }
}
