//! The same pipeline against a real S3-compatible server (moto, on 127.0.0.1, started by
//! `scripts/dev test`): drops read from one bucket prefix, the lake written to another with
//! conditional (create-only) puts, including a crash and replay.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::support::*;

pub(crate) struct Bucket {
    endpoint: String,
    name: String,
    store: Arc<dyn ObjectStore>,
}

pub(crate) fn bucket(endpoint: String, name: &str) -> Bucket {
    // moto creates a bucket on a plain PUT.
    let status = std::process::Command::new("curl")
        .args(["-fsS", "-X", "PUT", &format!("{endpoint}/{name}")])
        .output()
        .expect("curl");
    assert!(
        status.status.success(),
        "create bucket: {}",
        stderr(&status)
    );
    let store = AmazonS3Builder::new()
        .with_endpoint(&endpoint)
        .with_bucket_name(name)
        .with_region("us-east-1")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .build()
        .expect("s3 store");
    Bucket {
        endpoint,
        name: name.to_string(),
        store: Arc::new(store),
    }
}

impl Bucket {
    pub(crate) fn env(&self, cmd: &mut std::process::Command) {
        cmd.env("AWS_ENDPOINT", &self.endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("BACKFLOW__LAKE__URL", format!("s3://{}/lake", self.name));
    }

    pub(crate) async fn keys(&self, prefix: &str) -> Vec<String> {
        let prefix = ObjectPath::from(prefix);
        let mut keys: Vec<String> = self
            .store
            .list(Some(&prefix))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .expect("list");
        keys.sort();
        keys
    }

    pub(crate) async fn get(&self, key: &str) -> Vec<u8> {
        self.store
            .get(&ObjectPath::from(key))
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes")
            .to_vec()
    }

    pub(crate) async fn dataset_rows(&self, prefix: &str) -> Vec<String> {
        let mut rows = Vec::new();
        for key in self
            .keys(prefix)
            .await
            .into_iter()
            .filter(|k| k.ends_with(".parquet"))
        {
            let bytes = self
                .store
                .get(&ObjectPath::from(key))
                .await
                .expect("get")
                .bytes()
                .await
                .expect("bytes");
            rows.extend(row_multiset(&read_parquet_bytes(bytes.to_vec())));
        }
        rows.sort();
        rows
    }
}

async fn upload_fixtures(b: &Bucket) {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/behavior");
    for entry in std::fs::read_dir(fixtures).expect("fixtures") {
        let entry = entry.expect("entry");
        let key = format!("drops/behavior/{}", entry.file_name().to_string_lossy());
        let bytes = std::fs::read(entry.path()).expect("read");
        b.store
            .put(&ObjectPath::from(key), PutPayload::from(bytes))
            .await
            .expect("put");
    }
}

fn s3_project(b: &Bucket) -> Project {
    let p = Project::new();
    p.edit_pipeline(
        "url: file://./data/drops/behavior",
        &format!("url: s3://{}/drops/behavior", b.name),
    );
    p.edit_pipeline(
        "  format: auto\n",
        "  format: auto\n  max_files_per_batch: 1\n",
    );
    p
}

fn run_s3(p: &Project, b: &Bucket, failpoint: Option<&str>) -> std::process::Output {
    let mut cmd = p.command(&["run", "behavior_events", "--json"]);
    b.env(&mut cmd);
    if let Some(point) = failpoint {
        cmd.env("BACKFLOW_FAILPOINT", point);
    }
    cmd.output().expect("spawn")
}

#[tokio::test]
async fn pipeline_on_s3_lands_the_same_rows_as_on_local_disk_and_survives_a_crash() {
    let Some(endpoint) = require_env("BACKFLOW_TEST_S3_ENDPOINT") else {
        return;
    };

    // Reference: the same fixtures on the local filesystem.
    let local = Project::new();
    local.drop_fixtures();
    local.edit_pipeline(
        "  format: auto\n",
        "  format: auto\n  max_files_per_batch: 1\n",
    );
    local.run_pipeline_ok();
    let want = row_multiset(&read_dataset(&local.lake().join("behavior_events")));

    // Clean run on S3.
    let b = bucket(endpoint.clone(), "backflow-clean");
    upload_fixtures(&b).await;
    let p = s3_project(&b);
    let out = run_s3(&p, &b, None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(b.dataset_rows("lake/behavior_events").await, want);
    let commits = b.keys("lake/behavior_events/_commits").await;
    assert_eq!(commits.len(), 3, "{commits:?}");

    // Crash after the first file of a batch was put, then replay: conditional puts find the
    // file already there, and no row is written twice.
    let b = bucket(endpoint, "backflow-crash");
    upload_fixtures(&b).await;
    let p = s3_project(&b);
    let crashed = run_s3(&p, &b, Some("after_first_put"));
    assert!(!crashed.status.success());
    let partial = b.keys("lake/").await;
    assert!(!partial.is_empty(), "the crash happened after a put");
    let out = run_s3(&p, &b, None);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("json");
    assert_eq!(summary["replayed_batches"], 1, "{summary}");
    assert_eq!(b.dataset_rows("lake/behavior_events").await, want);
}

/// `backflow run drops` with the S3 credentials of `b`; the lake stays local.
fn run_drops(p: &Project, b: &Bucket) -> serde_json::Value {
    let out = p
        .command(&["run", "drops", "--json"])
        .env("AWS_ENDPOINT", &b.endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("spawn");
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    serde_json::from_str(stdout(&out).lines().last().unwrap_or("")).expect("summary")
}

/// The `source` of the manifest of batch `seq` of the `drops` dataset.
fn manifest_source(p: &Project, seq: u32) -> serde_json::Value {
    let path = p.lake().join(format!("drops/_commits/{seq:012}.json"));
    let text = std::fs::read_to_string(&path).expect("manifest");
    let manifest: serde_json::Value = serde_json::from_str(&text).expect("json");
    manifest["source"].clone()
}

async fn put_drops(b: &Bucket, keys: Vec<(String, i64)>) {
    use futures::StreamExt;
    futures::stream::iter(keys)
        .map(|(key, n)| {
            let store = Arc::clone(&b.store);
            async move {
                let line = format!("{{\"n\":{n},\"ts\":\"2026-03-01T{:02}:00:00Z\"}}\n", n % 24);
                store
                    .put(&ObjectPath::from(key), PutPayload::from(line.into_bytes()))
                    .await
                    .expect("put");
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
}

#[tokio::test]
async fn listing_after_the_watermark_lists_only_new_keys_and_a_full_listing_catches_late_files() {
    let Some(endpoint) = require_env("BACKFLOW_TEST_S3_ENDPOINT") else {
        return;
    };
    // A fresh bucket each time: moto keeps objects between test runs.
    let name = format!("backflow-watermark-{}", uuid::Uuid::now_v7().simple());
    let b = bucket(endpoint, &name);
    let key = |day: u32, name: &str| format!("drops/events/dt=2026-03-{day:02}/{name}.ndjson");
    put_drops(
        &b,
        (0..300)
            .map(|n| (key(1, &format!("part-{n:04}")), n))
            .collect(),
    )
    .await;
    let p = Project::new();
    p.write(
        "pipelines/drops.yaml",
        &format!(
            "name: drops\nsource:\n  type: object_store_files\n  url: s3://{}/drops/events\n  \
             max_files_per_batch: 1000\n  listing: {{mode: after_watermark, full_every: 1d}}\n\
             transforms:\n  - cast: {{n: int64, ts: timestamp}}\n\
             sink:\n  type: parquet\n  dataset: drops\n  partition_by: {{column: ts, granularity: day}}\n",
            b.name
        ),
    );

    // First run: no full listing yet, so the whole prefix.
    run_drops(&p, &b);
    let first = manifest_source(&p, 1);
    assert_eq!(first["listing"]["kind"], "full", "{first}");
    assert_eq!(first["listing"]["listed"], 300);

    // New keys sort after the watermark: only they are listed.
    put_drops(
        &b,
        (0..5)
            .map(|n| (key(2, &format!("part-{n:04}")), 300 + n))
            .collect(),
    )
    .await;
    let second = run_drops(&p, &b);
    assert_eq!(second["rows_out"], 5, "{second}");
    let listing = &manifest_source(&p, 2)["listing"];
    assert_eq!(listing["kind"], "after_watermark", "{listing}");
    assert_eq!(
        listing["after"],
        "drops/events/dt=2026-03-01/part-0299.ndjson"
    );
    assert_eq!(listing["listed"], 5);

    // A late file under a smaller key is not seen by a watermark listing...
    put_drops(
        &b,
        vec![(key(1, "part-0150-late"), 305), (key(3, "part-0000"), 306)],
    )
    .await;
    run_drops(&p, &b);
    let third = manifest_source(&p, 3);
    assert_eq!(third["listing"]["listed"], 1, "{third}");
    assert_eq!(third["files"].as_array().map(Vec::len), Some(1));

    // ...until the next full listing (made due by a shorter interval).
    p.edit_file("pipelines/drops.yaml", "full_every: 1d", "full_every: 1s");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    run_drops(&p, &b);
    let fourth = manifest_source(&p, 4);
    assert_eq!(fourth["listing"]["kind"], "full", "{fourth}");
    assert_eq!(fourth["listing"]["listed"], 307);
    assert_eq!(
        fourth["files"][0]["path"],
        "drops/events/dt=2026-03-01/part-0150-late.ndjson"
    );

    let ns = sorted_i64(&read_dataset(&p.lake().join("drops")), "n");
    assert_eq!(ns, (0..307).collect::<Vec<_>>());
}
