//! Unit tests of the quota catalog: purchases, metered commits, release and purge.

use super::*;
use crate::catalog::NewActivity;
use serde_json::json;

fn staged(ws: &str, position: u64, billable: bool, received_at: &str) -> NewStaged {
    NewStaged {
        workspace: ws.into(),
        position,
        billable,
        received_at: received_at.into(),
        record: format!("r{position}").into_bytes(),
    }
}

fn batch(c: &Catalog, effects: &MeterEffects) -> Result<MeterOutcome, CatalogError> {
    let intent = c.create_intent("p", &json!({}), "t")?;
    c.commit_metered_batch("p", intent.seq, &BatchStats::default(), effects)
}

fn activity(c: &Catalog, ws: &str, name: &str) -> Result<i64, CatalogError> {
    let mut n = 0u64;
    let created = c.create_activities(
        &[NewActivity {
            workspace: ws.into(),
            name: name.into(),
            group: "g".into(),
            channel: "huawei".into(),
            ad_format: "f".into(),
            landing_url: None,
            third_party_impression: vec![],
            third_party_click: vec![],
            template: None,
        }],
        move || {
            n += 1;
            n + name.len() as u64 * 1000
        },
    )?;
    Ok(created[0].id)
}

#[test]
fn purchases_are_audited_and_an_unknown_workspace_is_unmetered() -> Result<(), CatalogError> {
    let c = Catalog::open_in_memory()?;
    let none = c.quota("ws")?;
    assert!(!none.metered);
    assert_eq!(none.remaining, None);
    assert!(matches!(
        c.add_quota("ws", 0, "cli", None),
        Err(CatalogError::Invalid(_))
    ));
    c.add_quota("ws", 10, "cli", Some("PO-1"))?;
    let s = c.add_quota("ws", 5, "cli", None)?;
    assert_eq!((s.purchased, s.used, s.remaining), (15, 0, Some(15)));
    assert_eq!(c.quota_purchases("ws")?.len(), 2);
    assert_eq!(
        c.audit_entries(10)?
            .iter()
            .filter(|(_, _, action, _)| action == "quota.add")
            .count(),
        2
    );
    assert_eq!(c.quotas()?.len(), 1);
    Ok(())
}

#[test]
fn a_commit_charges_usage_counts_once_and_pauses_when_quota_runs_out() -> Result<(), CatalogError> {
    let c = Catalog::open_in_memory()?;
    let a = activity(&c, "ws", "a")?;
    c.add_quota("ws", 3, "cli", None)?;
    let mut effects = MeterEffects::default();
    effects.usage.insert(("ws".into(), "2026-01-01".into()), 2);
    effects.activity_days.insert(
        ("ws".into(), a, "2026-01-01".into()),
        ActivityDayDelta {
            impressions: 5,
            clicks: 2,
        },
    );
    effects.click_keys = vec![
        ("ws".into(), a, "2026-01-01".into(), 7),
        ("ws".into(), a, "2026-01-01".into(), 7),
    ];
    let outcome = batch(&c, &effects)?;
    assert!(outcome.paused.is_empty());
    assert_eq!(c.quota("ws")?.remaining, Some(1));
    // A replayed commit of the same batch is refused and changes nothing.
    assert!(matches!(
        c.commit_metered_batch("p", 1, &BatchStats::default(), &effects),
        Err(CatalogError::NoSuchIntent { .. })
    ));
    let totals = c.activity_totals("ws")?;
    assert_eq!(
        totals.get(&a),
        Some(&ActivityTotals {
            impressions: 5,
            clicks: 2,
            dedup_clicks: 1
        })
    );

    // The same device clicks again the same day (not a new dedup click), and once the next day.
    let mut next = MeterEffects::default();
    next.usage.insert(("ws".into(), "2026-01-02".into()), 1);
    next.activity_days.insert(
        ("ws".into(), a, "2026-01-01".into()),
        ActivityDayDelta {
            impressions: 0,
            clicks: 1,
        },
    );
    next.click_keys = vec![("ws".into(), a, "2026-01-01".into(), 7)];
    next.activity_days.insert(
        ("ws".into(), a, "2026-01-02".into()),
        ActivityDayDelta {
            impressions: 0,
            clicks: 1,
        },
    );
    next.click_keys
        .push(("ws".into(), a, "2026-01-02".into(), 7));
    let outcome = batch(&c, &next)?;
    assert_eq!(outcome.paused.get("ws"), Some(&vec![a]), "quota ran out");
    assert_eq!(c.activity(a)?.status, ActivityStatus::PausedQuota);
    assert_eq!(c.activity_totals("ws")?[&a].dedup_clicks, 2);
    let days = c.activity_days(
        "ws",
        NaiveDate::from_ymd_opt(2026, 1, 1).unwrap_or_default(),
        NaiveDate::from_ymd_opt(2026, 1, 31).unwrap_or_default(),
    )?;
    assert_eq!(days.len(), 2);
    assert_eq!((days[0].clicks, days[0].dedup_clicks), (3, 1));
    let usage = c.usage_by_day(
        "ws",
        NaiveDate::from_ymd_opt(2026, 1, 1).unwrap_or_default(),
        NaiveDate::from_ymd_opt(2026, 1, 1).unwrap_or_default(),
    )?;
    assert_eq!(usage.iter().map(|u| u.clicks).collect::<Vec<_>>(), [2]);
    assert_eq!(c.quota("ws")?.used, 3);
    Ok(())
}

#[test]
fn staged_records_are_released_in_order_up_to_the_remaining_clicks() -> Result<(), CatalogError> {
    let c = Catalog::open_in_memory()?;
    let a = activity(&c, "ws", "a")?;
    c.add_quota("ws", 1, "cli", None)?;
    let mut effects = MeterEffects::default();
    effects.usage.insert(("ws".into(), "d".into()), 1);
    let t = "2026-01-01T00:00:00.000000Z";
    effects.stage = vec![
        staged("ws", 10, true, t),
        staged("ws", 11, false, t),
        staged("ws", 12, true, t),
        staged("ws", 13, true, t),
    ];
    let outcome = batch(&c, &effects)?;
    assert_eq!(outcome.paused.get("ws"), Some(&vec![a]));
    let s = c.quota("ws")?;
    assert_eq!((s.remaining, s.staged, s.staged_clicks), (Some(0), 4, 3));
    assert_eq!(s.oldest_staged.as_deref(), Some(t));

    // No quota: nothing to release, the workspace keeps staging.
    let plans = c.plan_releases("p", &["other"], 100)?;
    assert_eq!(plans["ws"].release, None);
    assert_eq!(plans["ws"].staged_after, 4);
    assert_eq!(plans["other"].remaining, None);

    // Two more clicks: the first three records (two clicks and the impression between).
    c.add_quota("ws", 2, "cli", None)?;
    let plan = c.plan_releases("p", &[], 100)?["ws"];
    let release = plan
        .release
        .ok_or(CatalogError::NotFound("release".into()))?;
    assert_eq!((release.rows, release.clicks, plan.staged_after), (3, 2, 1));
    let records = c.staged_records("p", "ws", release.below)?;
    assert_eq!(
        records.iter().map(|r| r.position).collect::<Vec<_>>(),
        [10, 11, 12]
    );
    // A size budget cuts the release too.
    let small = c.plan_releases("p", &[], 1)?["ws"];
    assert_eq!(small.release.map(|r| r.rows), Some(1));

    let mut release_effects = MeterEffects::default();
    release_effects.release.insert("ws".into(), release);
    release_effects.usage.insert(("ws".into(), "d".into()), 2);
    batch(&c, &release_effects)?;
    let s = c.quota("ws")?;
    assert_eq!((s.remaining, s.staged, s.used), (Some(0), 1, 3));
    // Activities stay paused after a top-up.
    assert_eq!(c.activity(a)?.status, ActivityStatus::PausedQuota);
    Ok(())
}

#[test]
fn a_release_that_does_not_match_the_staging_store_rolls_back() -> Result<(), CatalogError> {
    let c = Catalog::open_in_memory()?;
    c.add_quota("ws", 1, "cli", None)?;
    let mut effects = MeterEffects::default();
    effects.release.insert(
        "ws".into(),
        Release {
            below: 100,
            rows: 2,
            clicks: 0,
        },
    );
    assert!(matches!(batch(&c, &effects), Err(CatalogError::Corrupt(_))));
    assert!(c.open_intent("p")?.is_some(), "the batch stays open");
    Ok(())
}

#[test]
fn old_staged_records_are_purged_and_audited() -> Result<(), CatalogError> {
    let c = Catalog::open_in_memory()?;
    c.add_quota("ws", 1, "cli", None)?;
    let effects = MeterEffects {
        stage: vec![
            staged("ws", 1, true, "2026-01-01T00:00:00.000000Z"),
            staged("ws", 2, false, "2026-01-02T00:00:00.000000Z"),
            staged("ws", 3, true, "2026-02-05T00:00:00.000000Z"),
        ],
        click_keys: vec![
            ("ws".into(), 1, "2026-01-01".into(), 1),
            ("ws".into(), 1, "2026-02-05".into(), 1),
        ],
        ..MeterEffects::default()
    };
    batch(&c, &effects)?;
    let day = NaiveDate::from_ymd_opt(2026, 1, 10).unwrap_or_default();
    let purged = c.purge_staged("p", "2026-01-05T00:00:00Z", day)?;
    assert_eq!(
        purged,
        [Purged {
            workspace: "ws".into(),
            records: 2,
            clicks: 1
        }]
    );
    assert_eq!(c.quota("ws")?.staged, 1);
    assert!(c.purge_staged("p", "2026-01-05T00:00:00Z", day)?.is_empty());
    assert!(
        c.audit_entries(20)?
            .iter()
            .any(|(_, _, action, detail)| action == "quota.purge" && detail.contains("records=2"))
    );
    Ok(())
}

#[test]
fn feedback_dedup_clicks_are_counted_per_workspace() -> Result<(), CatalogError> {
    // Tencent feedback rows carry activity 0 in every workspace: one device clicking in two
    // workspaces is a deduplicated click in each.
    let c = Catalog::open_in_memory()?;
    let mut effects = MeterEffects::default();
    for ws in ["ws1", "ws2"] {
        effects.activity_days.insert(
            (ws.into(), 0, "2026-01-01".into()),
            ActivityDayDelta {
                impressions: 0,
                clicks: 1,
            },
        );
        effects
            .click_keys
            .push((ws.into(), 0, "2026-01-01".into(), 42));
    }
    batch(&c, &effects)?;
    for ws in ["ws1", "ws2"] {
        assert_eq!(c.activity_totals(ws)?[&0].dedup_clicks, 1, "{ws}");
    }
    Ok(())
}
