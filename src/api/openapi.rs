//! The admin API's OpenAPI 3.1 document, served at `GET /openapi.json` without a token (it holds
//! no data, and tools and the web console fetch it before they have one).
//!
//! Paths are written here by hand; request and response schemas are generated from the very
//! Rust types the handlers parse and answer (`schemars`, JSON Schema 2020-12 as OpenAPI 3.1
//! uses), so they cannot drift. A test checks that every route of the admin router is
//! documented and every documented route exists. (`utoipa` would generate the paths too, at the
//! price of a proc-macro crate and an attribute per handler; on a 2-core build machine the
//! `schemars` we already compile is enough.)

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use super::jobs::BackfillInput;
use crate::catalog::Download;
use crate::catalog::RunRecord;
use crate::collect::service::{
    ActivityInput, ActivityView, BatchInput, EditInput, FeedbackInput, FeedbackView, RenameInput,
    SwitchInput,
};
use crate::report::downloads::DownloadInput;

fn path_param(name: &str, description: &str, integer: bool) -> Value {
    json!({
        "name": name, "in": "path", "required": true, "description": description,
        "schema": { "type": if integer { "integer" } else { "string" } }
    })
}

fn ws() -> Value {
    path_param("ws", "Workspace name.", false)
}

fn id(what: &str) -> Value {
    path_param("id", &format!("{what} id."), true)
}

fn json_content(schema: Value) -> Value {
    json!({ "application/json": { "schema": schema } })
}

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn error(description: &str) -> Value {
    json!({ "description": description, "content": json_content(reference("Error")) })
}

/// An operation: summary, tag, parameters, optional JSON request schema, success status and
/// schema, and the error statuses it can answer.
fn op(
    summary: &str,
    tag: &str,
    params: Vec<Value>,
    request: Option<Value>,
    ok: (&str, Value),
    errors: &[&str],
) -> Value {
    let mut responses = Map::new();
    responses.insert(
        ok.0.to_string(),
        json!({ "description": "Success.", "content": json_content(ok.1) }),
    );
    for status in ["401", "403"].iter().chain(errors) {
        let text = match *status {
            "400" => "Malformed JSON body, unknown key or bad query parameter (`field` names it).",
            "401" => "No valid bearer token.",
            "403" => "The token's role or workspace does not allow this.",
            "404" => "No such resource (or not in the token's workspace).",
            "409" => "The name is taken in the workspace.",
            "413" => "Body larger than 64 KiB (256 KiB for a batch create).",
            "422" => "An invalid value (`field` names it).",
            "503" => "Monitoring links are off on this daemon (no media registry).",
            _ => "Error.",
        };
        responses.insert(status.to_string(), error(text));
    }
    let mut o = json!({
        "summary": summary,
        "tags": [tag],
        "parameters": params,
        "responses": responses,
    });
    if let Some(schema) = request {
        o["requestBody"] = json!({ "required": true, "content": json_content(schema) });
    }
    o
}

fn list_of(key: &str, item: Value) -> Value {
    json!({
        "type": "object",
        "required": [key],
        "properties": { key: { "type": "array", "items": item } }
    })
}

/// The whole document.
pub fn document() -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "/components/schemas".into())
        .into_generator();
    let activity_input = generator.subschema_for::<ActivityInput>().to_value();
    let batch_input = generator.subschema_for::<BatchInput>().to_value();
    let edit_input = generator.subschema_for::<EditInput>().to_value();
    let switch_input = generator.subschema_for::<SwitchInput>().to_value();
    let activity = generator.subschema_for::<ActivityView>().to_value();
    let feedback_input = generator.subschema_for::<FeedbackInput>().to_value();
    let rename_input = generator.subschema_for::<RenameInput>().to_value();
    let feedback = generator.subschema_for::<FeedbackView>().to_value();
    let download_input = generator.subschema_for::<DownloadInput>().to_value();
    let download = generator.subschema_for::<Download>().to_value();
    let run = generator.subschema_for::<RunRecord>().to_value();
    let backfill_input = generator.subschema_for::<BackfillInput>().to_value();
    let mut components = generator.take_definitions(true);
    components.insert(
        "Error".into(),
        json!({
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": { "type": "string", "description": "What is wrong, for a person." },
                "field": { "type": "string", "description": "The input field (JSON path or query parameter) the error is about." }
            }
        }),
    );
    let object = json!({ "type": "object" });
    let text = |media: &str| json!({ media: { "schema": { "type": "string" } } });
    let public = json!([]);
    let read = ["400", "404", "503"];
    let write = ["400", "404", "409", "413", "422", "503"];

    let mut paths = Map::new();
    let mut add = |path: &str, method: &str, operation: Value| {
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[method] = operation;
    };
    add(
        "/openapi.json",
        "get",
        json!({"summary": "This document.", "tags": ["meta"], "security": public,
               "responses": {"200": {"description": "OpenAPI 3.1.", "content": json_content(object.clone())}}}),
    );
    for (path, what) in [
        ("/healthz", "Liveness."),
        (
            "/readyz",
            "Readiness (catalog reachable); with `journal.kind: kafka` the body also names the producer state.",
        ),
    ] {
        add(
            path,
            "get",
            json!({"summary": what, "tags": ["meta"], "security": public,
                   "responses": {"200": {"description": "Up.", "content": text("text/plain")},
                                 "503": {"description": "Not ready.", "content": text("text/plain")}}}),
        );
    }
    add(
        "/metrics",
        "get",
        json!({"summary": "Prometheus metrics (OpenMetrics text).", "tags": ["meta"],
               "responses": {"200": {"description": "Metrics.", "content": text("application/openmetrics-text")},
                             "401": error("No valid bearer token.")}}),
    );
    add(
        "/api/v1/whoami",
        "get",
        op(
            "The token's id, role, workspace and label.",
            "meta",
            vec![],
            None,
            (
                "200",
                json!({"type": "object", "properties": {
               "id": {"type": "integer"}, "role": {"type": "string", "enum": ["org_admin", "workspace_admin", "analyst", "read_only"]},
               "workspace": {"type": ["string", "null"]}, "label": {"type": "string"}}}),
            ),
            &[],
        ),
    );
    add(
        "/api/v1/pipelines",
        "get",
        op(
            "Pipelines with schedule, running state and last run.",
            "pipelines",
            vec![],
            None,
            ("200", list_of("pipelines", object.clone())),
            &[],
        ),
    );
    add(
        "/api/v1/pipelines/{name}/runs",
        "post",
        op(
            "Start a run now (workspace_admin).",
            "pipelines",
            vec![path_param("name", "Pipeline name.", false)],
            None,
            (
                "202",
                json!({"type": "object", "properties": {"pipeline": {"type": "string"}, "outcome": {"type": "string"}}}),
            ),
            &["404", "409"],
        ),
    );
    add(
        "/api/v1/jobs",
        "get",
        op(
            "Dataset jobs: schedule with policies and the next 3 fire times, refresh period, current published version, last run.",
            "pipelines",
            vec![],
            None,
            ("200", list_of("jobs", object.clone())),
            &[],
        ),
    );
    add(
        "/api/v1/jobs/{name}/runs",
        "post",
        op(
            "Start a dataset refresh now (workspace_admin); the same as the pipeline route.",
            "pipelines",
            vec![path_param("name", "Dataset job name.", false)],
            None,
            (
                "202",
                json!({"type": "object", "properties": {"pipeline": {"type": "string"}, "outcome": {"type": "string"}}}),
            ),
            &["404", "409"],
        ),
    );
    add(
        "/api/v1/jobs/{name}/backfill",
        "post",
        op(
            "Backfill a dataset job (workspace_admin): one queued run per day or hour from `from` to `to`, in order; periods that already succeeded are skipped unless `force`.",
            "pipelines",
            vec![path_param("name", "Dataset job name.", false)],
            Some(backfill_input),
            (
                "202",
                json!({"type": "object", "properties": {
                    "job": {"type": "string"},
                    "runs": {"type": "array", "items": {"type": "object", "properties": {
                        "run_id": {"type": "integer"}, "period": {"type": ["string", "null"]}}}},
                    "skipped": {"type": "array", "items": {"type": "string"}}}}),
            ),
            &["400", "404", "409", "422"],
        ),
    );
    add(
        "/api/v1/runs",
        "get",
        op(
            "Recent runs, newest first: status (queued, waiting, running, succeeded, failed, cancelled, timed_out), period, reason.",
            "pipelines",
            vec![
                json!({"name": "pipeline", "in": "query", "schema": {"type": "string"}}),
                json!({"name": "status", "in": "query", "schema": {"type": "string",
                    "enum": ["queued", "waiting", "running", "succeeded", "failed", "cancelled", "timed_out"]}}),
                json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}),
            ],
            None,
            ("200", list_of("runs", run.clone())),
            &["400"],
        ),
    );
    add(
        "/api/v1/runs/{id}",
        "get",
        op(
            "One run.",
            "pipelines",
            vec![id("Run")],
            None,
            ("200", run.clone()),
            &["404"],
        ),
    );
    add(
        "/api/v1/runs/{id}/rerun",
        "post",
        op(
            "Rerun a failed, timed-out or cancelled run for its period (workspace_admin).",
            "pipelines",
            vec![id("Run")],
            None,
            (
                "202",
                json!({"type": "object", "properties": {"run_id": {"type": "integer"}, "period": {"type": ["string", "null"]}}}),
            ),
            &["404", "409", "422"],
        ),
    );
    add(
        "/api/v1/media",
        "get",
        op(
            "The media registry: channel ids for activities, with their link templates.",
            "activities",
            vec![],
            None,
            ("200", list_of("media", object.clone())),
            &["503"],
        ),
    );
    add(
        "/api/v1/workspaces/{ws}/activities",
        "get",
        op(
            "Activities of a workspace with links, status and counters (R53).",
            "activities",
            vec![ws()],
            None,
            ("200", list_of("activities", activity.clone())),
            &read,
        ),
    );
    add(
        "/api/v1/workspaces/{ws}/activities",
        "post",
        op(
            "Create an activity, enabled (R46–R48); the group is created if new.",
            "activities",
            vec![ws()],
            Some(activity_input),
            ("201", activity.clone()),
            &write,
        ),
    );
    add(
        "/api/v1/workspaces/{ws}/activities/batch",
        "post",
        op(
            "Create one activity per name with shared fields, all or nothing (R50–R51).",
            "activities",
            vec![ws()],
            Some(batch_input),
            ("201", list_of("activities", activity.clone())),
            &write,
        ),
    );
    let mut csv = op(
        "Export links as CSV (批量导出链接, R58).",
        "activities",
        vec![
            ws(),
            json!({"name": "ids", "in": "query", "description": "Comma-separated activity ids (default: all of the workspace).", "schema": {"type": "string"}}),
            json!({"name": "format", "in": "query", "description": "`excel` (default): UTF-8 BOM, formula-like cells prefixed with `'`; `plain`: RFC 4180 as stored.", "schema": {"type": "string", "enum": ["excel", "plain"]}}),
        ],
        None,
        ("200", json!({"type": "string"})),
        &["400", "422", "503"],
    );
    csv["responses"]["200"]["content"] = text("text/csv");
    add("/api/v1/workspaces/{ws}/activities/links.csv", "get", csv);
    add(
        "/api/v1/activities/{id}",
        "get",
        op(
            "One activity with links and counters.",
            "activities",
            vec![id("Activity")],
            None,
            ("200", activity.clone()),
            &read,
        ),
    );
    add(
        "/api/v1/activities/{id}",
        "patch",
        op(
            "Edit name, ad format, landing URL, third-party URLs; channel, group and template are fixed (R56).",
            "activities",
            vec![id("Activity")],
            Some(edit_input),
            ("200", activity.clone()),
            &write,
        ),
    );
    add(
        "/api/v1/activities/{id}/switch",
        "post",
        op(
            "Switch on or off by hand (R54); switching on is the only way back from `paused_quota` (R55).",
            "activities",
            vec![id("Activity")],
            Some(switch_input.clone()),
            ("200", activity.clone()),
            &write,
        ),
    );
    add(
        "/api/v1/activities/{id}/links",
        "get",
        op(
            "Extract the impression and click links (提取链接, R57).",
            "activities",
            vec![id("Activity")],
            None,
            (
                "200",
                json!({"type": "object", "required": ["id", "impression_url", "click_url"], "properties": {
               "id": {"type": "integer"}, "name": {"type": "string"}, "status": {"type": "string"},
               "impression_url": {"type": "string"}, "click_url": {"type": "string"}}}),
            ),
            &read,
        ),
    );
    add(
        "/api/v1/workspaces/{ws}/feedback-tasks",
        "get",
        op(
            "Tencent feedback tasks of a workspace with their Feedback URLs (R61).",
            "feedback",
            vec![ws()],
            None,
            ("200", list_of("feedback_tasks", feedback.clone())),
            &read,
        ),
    );
    add(
        "/api/v1/workspaces/{ws}/feedback-tasks",
        "post",
        op(
            "Create a feedback task; it is not enabled (`off`) until switched on (R60).",
            "feedback",
            vec![ws()],
            Some(feedback_input),
            ("201", feedback.clone()),
            &write,
        ),
    );
    add(
        "/api/v1/feedback-tasks/{id}",
        "get",
        op(
            "One feedback task.",
            "feedback",
            vec![id("Feedback task")],
            None,
            ("200", feedback.clone()),
            &read,
        ),
    );
    add(
        "/api/v1/feedback-tasks/{id}",
        "patch",
        op(
            "Rename a feedback task (R61).",
            "feedback",
            vec![id("Feedback task")],
            Some(rename_input),
            ("200", feedback.clone()),
            &write,
        ),
    );
    add(
        "/api/v1/feedback-tasks/{id}/switch",
        "post",
        op(
            "Switch a feedback task on or off.",
            "feedback",
            vec![id("Feedback task")],
            Some(switch_input),
            ("200", feedback),
            &write,
        ),
    );

    reports(&mut add, download_input, download);

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "backflow admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Monitoring activities, Tencent feedback tasks, reports, click-detail downloads, pipelines and runs. \
                            Bearer tokens carry a role (org_admin, workspace_admin, analyst, read_only) \
                            and optionally a workspace; writes need workspace_admin or higher."
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "security": [{ "bearer": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": components,
        }
    })
}

fn query(name: &str, description: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "query", "description": description, "schema": schema })
}

fn string_enum(values: &[&str]) -> Value {
    json!({ "type": "string", "enum": values })
}

/// The report and download routes (`src/api/reports.rs`).
fn reports(add: &mut impl FnMut(&str, &str, Value), download_input: Value, download: Value) {
    let day = |name: &str, what: &str| {
        query(
            name,
            &format!("{what} (YYYY-MM-DD, workspace time zone)."),
            json!({"type": "string", "format": "date"}),
        )
    };
    let range = || {
        vec![
            ws(),
            day("from", "First day; default 7 days before today"),
            day("to", "Last day, included; default yesterday"),
        ]
    };
    let list = |name: &str, what: &str| {
        query(
            name,
            &format!("{what}; repeat or comma-separate (default: all)."),
            json!({"type": "string"}),
        )
    };
    let format = query(
        "format",
        "`json` (default) or `csv` (the detail table, UTF-8).",
        string_enum(&["json", "csv"]),
    );
    let form = query(
        "form",
        "`date` (per day), `hour` (hour of day over the range) or `audience` (region and OS).",
        string_enum(&["date", "hour", "audience"]),
    );
    let region = query(
        "region",
        "Audience form: `province` (default) or `city`.",
        string_enum(&["province", "city"]),
    );
    let report = json!({"type": "object", "description": "The report: rows per dimension with per-bucket cells, the dimension–date and date–dimension pivots, totals."});
    let errors = ["400", "404"];
    let with_csv = |mut o: Value| {
        o["responses"]["200"]["content"]["text/csv"] = json!({"schema": {"type": "string"}});
        o
    };

    let mut params = range();
    params.extend([
        form.clone(),
        query(
            "by",
            "Dimension: `group` (default), `channel` or `activity`.",
            string_enum(&["group", "channel", "activity"]),
        ),
        list("group", "Activity groups"),
        list("channel", "Channels (media ids)"),
        list("activity", "Activity ids"),
        region.clone(),
        list(
            "metrics",
            "impressions, clicks, unique_impressions, unique_clicks, ctr",
        ),
        format.clone(),
    ]);
    add(
        "/api/v1/workspaces/{ws}/reports/ad-monitoring",
        "get",
        with_csv(op(
            "Ad monitoring report (广告监测数据, R24–R32): impressions, clicks, uniques, CTR; at most 60 days.",
            "reports",
            params,
            None,
            ("200", report.clone()),
            &errors,
        )),
    );
    let mut params = range();
    params.extend([
        form,
        query(
            "by",
            "Dimension: `task` (feedback task, default) or `adgroup` (Tencent ad id).",
            string_enum(&["task", "adgroup"]),
        ),
        list("task", "Feedback task ids"),
        list("adgroup", "Tencent ad ids"),
        region,
        list("metrics", "clicks, unique_clicks"),
        format,
    ]);
    add(
        "/api/v1/workspaces/{ws}/reports/tencent",
        "get",
        with_csv(op(
            "Tencent Ads report (腾讯广告数据): clicks and unique clicks of the feedback tasks.",
            "reports",
            params,
            None,
            ("200", report),
            &errors,
        )),
    );
    let mut params = range();
    params.push(query(
        "type",
        "Monitoring type of the growth trend.",
        string_enum(&["all", "impression", "click"]),
    ));
    add(
        "/api/v1/workspaces/{ws}/reports/dashboard",
        "get",
        op(
            "Dashboard (仪表盘): quota, volume with change, distinct IDs per type, growth trend.",
            "reports",
            params,
            None,
            ("200", json!({"type": "object"})),
            &errors,
        ),
    );
    add(
        "/api/v1/workspaces/{ws}/reports/overview",
        "get",
        op(
            "Data overview (数据概览): new total and billable data, today / 7 days / month / cumulative.",
            "reports",
            range(),
            None,
            ("200", json!({"type": "object"})),
            &errors,
        ),
    );
    add(
        "/api/v1/workspaces/{ws}/reports/resources",
        "get",
        op(
            "Resource records (数据资源): purchases and daily usage; default 7 days, at most 90.",
            "reports",
            range(),
            None,
            ("200", json!({"type": "object"})),
            &errors,
        ),
    );
    add(
        "/api/v1/workspaces/{ws}/downloads",
        "get",
        op(
            "Click-detail download tasks of a workspace, newest first.",
            "downloads",
            vec![ws()],
            None,
            ("200", json!({"type": "array", "items": download.clone()})),
            &[],
        ),
    );
    add(
        "/api/v1/workspaces/{ws}/downloads",
        "post",
        op(
            "Queue a click-detail download (R68–R70, analyst): raw clicks of days within the last month, built in the background into a .tar.gz.",
            "downloads",
            vec![ws()],
            Some(download_input),
            ("202", download.clone()),
            &["400"],
        ),
    );
    add(
        "/api/v1/downloads/{id}",
        "get",
        op(
            "One download task: `queued`, `processing`, `succeeded` (with clicks, bytes, expiry) or `failed` (with the reason).",
            "downloads",
            vec![id("Download task")],
            None,
            ("200", download),
            &["404"],
        ),
    );
    let mut file = op(
        "The archive of a succeeded task (downloadable many times until it expires).",
        "downloads",
        vec![id("Download task")],
        None,
        (
            "200",
            json!({"type": "string", "contentMediaType": "application/gzip"}),
        ),
        &["404"],
    );
    file["responses"]["200"]["content"] = json!({"application/gzip": {"schema": {"type": "string", "contentMediaType": "application/gzip"}}});
    file["responses"]["409"] = error("The task has not succeeded (yet).");
    file["responses"]["410"] = error("The archive expired.");
    add("/api/v1/downloads/{id}/file", "get", file);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// `(method, path)` of every `.route(…)` in `source` (methods from `get(`, `.post(` …).
    fn routes_in(source: &str) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for chunk in source.split(".route(").skip(1) {
            let Some(path) = chunk.split('"').nth(1) else {
                continue;
            };
            // The call ends at the first `)` that closes it: good enough for `get(h).post(h))`.
            let mut depth = 1usize;
            let mut end = chunk.len();
            for (i, c) in chunk.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            end = i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let call = &chunk[..end];
            for method in ["get", "post", "patch", "put", "delete"] {
                let found = call.match_indices(&format!("{method}(")).any(|(i, _)| {
                    i == 0 || !call[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_')
                });
                if found {
                    out.insert((method.to_string(), path.to_string()));
                }
            }
        }
        out
    }

    #[test]
    fn every_admin_route_is_documented_and_every_documented_route_exists() {
        let module = include_str!("mod.rs");
        let admin = module
            .split("pub fn admin_app")
            .nth(1)
            .and_then(|rest| rest.split("\n}\n").next())
            .unwrap_or_default();
        let mut routes = routes_in(admin);
        routes.extend(routes_in(include_str!("activities.rs")));
        routes.extend(routes_in(include_str!("reports.rs")));
        routes.extend(routes_in(include_str!("jobs.rs")));
        assert!(routes.len() > 15, "{routes:?}");
        let doc = document();
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for method in item.as_object().into_iter().flatten().map(|(m, _)| m) {
                documented.insert((method.clone(), path.clone()));
            }
        }
        let undocumented: Vec<_> = routes.difference(&documented).collect();
        let missing: Vec<_> = documented.difference(&routes).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from the document: {undocumented:?}"
        );
        assert!(missing.is_empty(), "documented but not routed: {missing:?}");
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = piece.split('"').next().unwrap_or_default();
            assert!(schemas.contains_key(name), "unresolved $ref {name}");
        }
        assert!(schemas.contains_key("ActivityView") && schemas.contains_key("Error"));
        assert!(
            !text.contains("\"$defs\""),
            "every definition is hoisted to components"
        );
    }
}
