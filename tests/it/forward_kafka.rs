//! Third-party forwarding with `journal.kind: kafka`: the forwarder reads the journal topic of a
//! real broker (tansu, `BACKFLOW_TEST_KAFKA`) in its own consumer group and forwards each hit to
//! a real HTTP server standing in for the third party — hits from before its first start not at
//! all, every later one once, across a `kill -9`, and a click replayed twice from a collector's
//! fallback file once.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::forward::{ThirdParty, create, env_for, filled, hit, metric, now_ms, project, wait_for};
use crate::kafka_journal::{consume_raw, create_topic, kafka_env, restart, wait_for_state};
use crate::serve::{free_port, start_with};
use crate::support::*;

/// Produces `payload` to `topic` as a collector replaying its fallback file does.
fn produce_replayed(brokers: &str, topic: &str, key: &[u8], payload: &[u8]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .create()
        .expect("producer");
    let headers = OwnedHeaders::new().insert(Header {
        key: "backflow-replay",
        value: Some("1"),
    });
    producer
        .send(
            BaseRecord::to(topic)
                .key(key)
                .payload(payload)
                .headers(headers),
        )
        .map_err(|(e, _)| e)
        .expect("send");
    producer.flush(Duration::from_secs(30)).expect("flush");
}

/// How often each forwarded target was accepted.
fn accepted_targets(server: &ThirdParty) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for s in server.accepted() {
        *counts.entry(s.target).or_default() += 1;
    }
    counts
}

#[test]
fn in_kafka_mode_hits_are_forwarded_once_across_kill_9_and_a_replayed_click_once() {
    let Some(brokers) = require_env("BACKFLOW_TEST_KAFKA") else {
        return;
    };
    let topic = format!("fwd-{}", uuid::Uuid::now_v7().simple());
    create_topic(&brokers, &topic, 2);
    let p = project();
    // The wired ad_events pipeline reads the topic in a group of its own; not needed here.
    p.edit_file(
        "pipelines/ad_events.yaml",
        "cron: \"*/10 * * * * *\"",
        "cron: \"0 0 0 1 1 *\"",
    );
    let (public, admin, third) = (free_port(), free_port(), free_port());
    let server = ThirdParty::start(third, 200);
    let mut env = env_for(public, &[]);
    env.extend(
        kafka_env(public, &brokers, &topic)
            .into_iter()
            .filter(|(k, _)| *k != "BACKFLOW__PUBLIC__BASE_URL"),
    );
    let mz = format!("http://127.0.0.1:{third}/mz/r/k=1&m5=__IDFA__&ts=__TS__&o=");
    let a = create(
        &p,
        &env,
        &[
            "--name",
            "bili-k",
            "--channel",
            "bilibili",
            "--third-party-click",
            &mz,
        ],
    );
    let click = a["click_url"].as_str().expect("url").to_string();
    let target = |ts: i64| {
        format!(
            "/mz/r/k=1&m5={}&ts={ts}&o=",
            "6D92078A-8246-4BA4-AE5B-76104861E7DC"
        )
    };
    let ts0 = now_ms();

    // A daemon with forwarding off takes a click: it is in the topic, from before the
    // forwarder's first start, and is never forwarded.
    let mut off_env = env.clone();
    off_env.push(("BACKFLOW__FORWARD__ENABLED", "false".to_string()));
    let d0 = start_with(&p, (public, admin), &off_env);
    wait_for_state(&d0, "ready");
    assert_eq!(hit(&filled(&click, ts0 - 1)).0, 204);
    let token = d0.token.clone();
    drop(d0);

    // Forwarding on: six clicks, each forwarded once.
    let mut d = restart(&p, (public, admin), &env, &token);
    wait_for_state(&d, "ready");
    for n in 0..6 {
        assert_eq!(hit(&filled(&click, ts0 + n)).0, 204);
    }
    wait_for("six clicks forwarded", || server.accepted().len() >= 6);
    wait_for("an empty queue", || {
        metric(&d.admin, &d.token, "backflow_forward_sent_total") >= 6.0
            && metric(&d.admin, &d.token, "backflow_forward_queue_depth") == 0.0
    });
    d.child.kill().expect("kill -9");
    d.child.wait().expect("reap");

    // Restarted: the reader goes on at the catalog's offsets, whatever the group committed.
    let d2 = restart(&p, (public, admin), &env, &token);
    wait_for_state(&d2, "ready");
    for n in 6..9 {
        assert_eq!(hit(&filled(&click, ts0 + n)).0, 204);
    }
    wait_for("nine clicks forwarded", || server.accepted().len() >= 9);

    // A click that reached the topic only from a collector's fallback file, sent twice (the
    // collector died before shortening the file): forwarded once.
    let (key, payload) = consume_raw(&brokers, &topic, 2, 10).swap_remove(0);
    let mut record: serde_json::Value = serde_json::from_slice(&payload).expect("hit record");
    record["event_id"] = serde_json::json!(format!("replayed-{}", uuid::Uuid::now_v7()));
    let replayed = serde_json::to_vec(&record).expect("json");
    produce_replayed(&brokers, &topic, &key, &replayed);
    produce_replayed(&brokers, &topic, &key, &replayed);
    wait_for("the replayed duplicate dropped", || {
        metric(&d2.admin, &d2.token, "backflow_forward_kafka_dropped_total") >= 1.0
    });
    wait_for("the replayed click forwarded", || {
        server.accepted().len() >= 10
            && metric(&d2.admin, &d2.token, "backflow_forward_queue_depth") == 0.0
    });
    let counts = accepted_targets(&server);
    let mut want: BTreeMap<String, usize> = (0..9).map(|n| (target(ts0 + n), 1)).collect();
    // The replayed copy is of a message of partition 0 or 1: one of the nine, or the click
    // from before the first start.
    let replayed_target = counts
        .iter()
        .find(|(t, c)| **c == 2 || **t == target(ts0 - 1))
        .map(|(t, _)| t.clone())
        .expect("the replayed click was forwarded");
    *want.entry(replayed_target).or_default() += 1;
    assert_eq!(counts, want, "each click forwarded once, the replay once");
    assert_eq!(
        metric(&d2.admin, &d2.token, "backflow_forward_enqueued_total"),
        4.0,
        "the restarted forwarder queued the three new clicks and the replay, nothing again"
    );
    assert_eq!(
        metric(
            &d2.admin,
            &d2.token,
            r#"backflow_forward_kafka_dropped_total{status="replay_duplicate"}"#
        ),
        1.0
    );
}
