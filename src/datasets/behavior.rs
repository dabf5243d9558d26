//! The behavior dataset (行为数据集, spec/datasets-admin.md §1.7) as Polars plans: behavior
//! events and mapped monitoring-link hits in one table of the manual's columns, summed per
//! (user, IDs, ID type, behavior type, period, channel, object), plus its dimension tables.
//!
//! Everything here is pure: frames in, frames out, so the unit tests need no lake.

use chrono_tz::Tz;
use polars::prelude::*;

use crate::config::model::{AdEventsMapping, AdObject, BEHAVIOR_COLUMNS, TimeGrain};
use crate::report::lake::Wanted;

/// The object attribute (行为对象属性) of ad behaviors about an activity.
pub const ACTIVITY_ATTRIBUTE: &str = "监测活动";
/// The object attribute of ad behaviors about a creative.
pub const CREATIVE_ATTRIBUTE: &str = "创意";

/// The columns summed per key; every other column of [`BEHAVIOR_COLUMNS`] is the key.
const MEASURES: &[&str] = &["behavior_count", "behavior_amount"];

/// The key columns of the main table (rows are unique over them).
pub fn key_columns() -> Vec<&'static str> {
    BEHAVIOR_COLUMNS
        .iter()
        .copied()
        .filter(|c| !MEASURES.contains(c))
        .collect()
}

fn timestamp() -> DataType {
    DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
}

/// The type of each main-table column.
pub(crate) fn dtype_of(column: &str) -> DataType {
    match column {
        "behavior_time" => timestamp(),
        "behavior_count" => DataType::Int64,
        "behavior_amount" => DataType::Float64,
        _ => DataType::String,
    }
}

/// What is read from `behavior_events` (a column a file lacks is read as null).
pub const BEHAVIOR_EVENT_COLUMNS: &[Wanted] = &[
    Wanted::text("user_id"),
    Wanted::text("user_id_2"),
    Wanted::text("user_id_3"),
    Wanted::text("id_type"),
    Wanted::text("behavior_type"),
    Wanted {
        name: "behavior_time",
        dtype: timestamp,
    },
    Wanted {
        name: "behavior_count",
        dtype: || DataType::Int64,
    },
    Wanted {
        name: "behavior_amount",
        dtype: || DataType::Float64,
    },
    Wanted::text("channel"),
    Wanted::text("object_attribute"),
    Wanted::text("object_attribute_value"),
    Wanted::text("object_attribute_value_id"),
];

/// What is read from `ad_events`.
pub const AD_EVENT_COLUMNS: &[Wanted] = &[
    Wanted::text("endpoint"),
    Wanted {
        name: "event_time",
        dtype: timestamp,
    },
    Wanted::text("channel"),
    Wanted {
        name: "activity_id",
        dtype: || DataType::Int64,
    },
    Wanted::text("creative_id"),
    Wanted::text("idfa"),
    Wanted::text("imei_md5"),
    Wanted::text("oaid"),
    Wanted::text("mac_md5"),
    Wanted {
        name: "is_bot",
        dtype: || DataType::Boolean,
    },
    Wanted {
        name: "is_test",
        dtype: || DataType::Boolean,
    },
];

/// Device ID columns of a hit, in the order the user is chosen, with the ID type each gives
/// (DESIGN.md's device-key order, restricted to the manual's ID types).
pub const AD_USER_IDS: &[(&str, &str)] = &[
    ("idfa", "idfa"),
    ("imei_md5", "imei"),
    ("oaid", "oaid"),
    ("mac_md5", "mac"),
];

/// Every main-table column, cast to its type, in order.
fn conform(exprs: Vec<(&'static str, Expr)>) -> Vec<Expr> {
    BEHAVIOR_COLUMNS
        .iter()
        .map(|c| {
            let expr = exprs
                .iter()
                .find(|(name, _)| name == c)
                .map(|(_, e)| e.clone())
                .unwrap_or_else(|| lit(NULL));
            expr.cast(dtype_of(c)).alias(*c)
        })
        .collect()
}

/// Behavior events as main-table rows: a missing count means one behavior.
pub fn from_behavior_events(lf: LazyFrame) -> LazyFrame {
    let exprs = BEHAVIOR_COLUMNS
        .iter()
        .map(|c| {
            let e = if *c == "behavior_count" {
                col(*c).fill_null(lit(1i64))
            } else {
                col(*c)
            };
            (*c, e)
        })
        .collect();
    lf.select(conform(exprs))
}

/// Hits as main-table rows: only mapped endpoints, only hits with a device ID, flagged hits
/// only when asked for.
pub fn from_ad_events(lf: LazyFrame, mapping: &AdEventsMapping) -> PolarsResult<LazyFrame> {
    let (endpoints, types): (Vec<&str>, Vec<&str>) = mapping
        .behavior_types
        .iter()
        .map(|(e, t)| (e.as_str(), t.as_str()))
        .unzip();
    let map = DataFrame::new_infer_height(vec![
        Column::new("endpoint".into(), endpoints),
        Column::new("__behavior_type".into(), types),
    ])?;
    let mut lf = lf.join(
        map.lazy(),
        [col("endpoint")],
        [col("endpoint")],
        JoinArgs::new(JoinType::Inner),
    );
    if !mapping.include_flagged {
        lf = lf.filter(
            col("is_bot")
                .fill_null(lit(false))
                .not()
                .and(col("is_test").fill_null(lit(false)).not()),
        );
    }
    let user: Vec<Expr> = AD_USER_IDS.iter().map(|(c, _)| col(*c)).collect();
    let (first, rest) = AD_USER_IDS.split_at(1);
    let mut id_type = when(col(first[0].0).is_not_null())
        .then(lit(first[0].1))
        .when(col(rest[0].0).is_not_null())
        .then(lit(rest[0].1));
    for (column, ty) in &rest[1..] {
        id_type = id_type.when(col(*column).is_not_null()).then(lit(*ty));
    }
    let id_type = id_type.otherwise(lit(NULL).cast(DataType::String));
    let (attribute, value) = match mapping.object {
        AdObject::Activity => (
            ACTIVITY_ATTRIBUTE,
            col("activity_id").cast(DataType::String),
        ),
        AdObject::Creative => (CREATIVE_ATTRIBUTE, col("creative_id")),
    };
    let exprs = vec![
        ("user_id", coalesce(&user)),
        ("id_type", id_type),
        ("behavior_type", col("__behavior_type")),
        ("behavior_time", col("event_time")),
        ("behavior_count", lit(1i64)),
        ("channel", col("channel")),
        ("object_attribute", lit(attribute)),
        ("object_attribute_value", value.clone()),
        ("object_attribute_value_id", value),
    ];
    Ok(lf
        .select(conform(exprs))
        .filter(col("user_id").is_not_null()))
}

/// The main table: the inputs' rows with times rounded down to the grain (workspace zone),
/// summed per key; the amount stays null when no row of a key has one. Sorted by key.
pub fn aggregate(inputs: Vec<LazyFrame>, grain: TimeGrain, tz: Tz) -> PolarsResult<LazyFrame> {
    let every = match grain {
        TimeGrain::Day => "1d",
        TimeGrain::Hour => "1h",
    };
    let period = col("behavior_time")
        .dt()
        .convert_time_zone(TimeZone::from_chrono(&tz))
        .dt()
        .truncate(lit(every))
        .dt()
        .convert_time_zone(TimeZone::UTC)
        .alias("behavior_time");
    let keys: Vec<Expr> = key_columns().into_iter().map(col).collect();
    let sort_keys: Vec<PlSmallStr> = key_columns().into_iter().map(PlSmallStr::from).collect();
    let amount = when(col("behavior_amount").count().gt(lit(0)))
        .then(col("behavior_amount").sum())
        .otherwise(lit(NULL).cast(DataType::Float64))
        .alias("behavior_amount");
    let all = concat(inputs, UnionArgs::default())?;
    let select: Vec<Expr> = BEHAVIOR_COLUMNS.iter().map(|c| col(*c)).collect();
    Ok(all
        .with_column(period)
        .group_by(keys)
        .agg([col("behavior_count").sum(), amount])
        .select(select)
        .sort(
            sort_keys,
            SortMultipleOptions::default().with_nulls_last(true),
        ))
}

/// A `(id, value)` dimension of one column: its distinct non-null values in sorted order,
/// numbered from 1.
pub fn value_dimension(main: LazyFrame, column: &str) -> LazyFrame {
    main.select([col(column).alias("value")])
        .filter(col("value").is_not_null())
        .unique(None, UniqueKeepStrategy::Any)
        .sort(["value"], SortMultipleOptions::default())
        .with_row_index("id", Some(1))
        .select([col("id").cast(DataType::Int64), col("value")])
}

/// The all-in-one object dimension `(id, attribute, value)` (§1.7.7): distinct non-null
/// attributes with their values, sorted, numbered from 1.
pub fn object_dimension(main: LazyFrame) -> LazyFrame {
    main.select([
        col("object_attribute").alias("attribute"),
        col("object_attribute_value").alias("value"),
    ])
    .filter(col("attribute").is_not_null())
    .unique(None, UniqueKeepStrategy::Any)
    .sort(
        ["attribute", "value"],
        SortMultipleOptions::default().with_nulls_last(true),
    )
    .with_row_index("id", Some(1))
    .select([
        col("id").cast(DataType::Int64),
        col("attribute"),
        col("value"),
    ])
}
