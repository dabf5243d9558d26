//! Stage two of dataset jobs (`kind: dataset`): [`RawDatasetJob`] to the validated
//! [`DatasetJob`], every error collected with its position.

use std::path::Path;

use super::{Converter, LoadOptions, SchemaCache, check_ident};
use crate::config::error::{Collector, ConfigError, parse_yaml};
use crate::config::model::{
    AdEventsMapping, AdObject, BEHAVIOR_COLUMNS, BEHAVIOR_REQUIRED, BehaviorBuild, DatasetBuild,
    DatasetJob, PublishPolicy, TimeGrain,
};
use crate::config::model_tags::USER_TAGS_REQUIRED;
use crate::config::raw::Located;
use crate::config::raw_dataset::{
    RawAdEventsMapping, RawAdObject, RawBehaviorBuild, RawDatasetBuild, RawDatasetJob, RawPublish,
    RawTimeGrain,
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
        if !ok {
            return None;
        }
        Some(PublishPolicy {
            keep_versions: keep?,
            allow_empty: raw.allow_empty,
            max_null_ratio: ratios,
        })
    }
}
