//! A report cut into shards (issue 12): its progress counts stored shards, and once its last shard is
//! stored its download is the whole report, the parts merged in store-id order.

use shared_model::models::reports::Chunking;
use shared_model::models::shards::{self, KeyRange, Plan, Planned, ShardPart, ShardStored, StartShard};
use uptime_core::engine::{HEADER, merge_parts};

use crate::helpers::{TestApp, new_report_id, sample_csv, spawn_app};

/// Small chunks, so every part is stored in several of them.
const CHUNKING: Chunking = Chunking { chunk_bytes: 16, max_statement_bytes: 64 };
const SHARDS: u32 = 3;
const STORES_PER_SHARD: u32 = 3;
const WORKER: &str = "test-worker";

/// A report's CSV and its shards' parts: shards are ranges of store keys, which need not follow the ids,
/// so each part holds every third row (in store-id order, without the header).
struct ShardedCsv {
    whole: Vec<u8>,
    parts: Vec<Vec<u8>>,
}

fn sharded_csv() -> ShardedCsv {
    let whole = sample_csv((SHARDS * STORES_PER_SHARD) as usize);
    let lines: Vec<&[u8]> = whole.split_inclusive(|&b| b == b'\n').collect();
    let rows = &lines[1..];
    let parts = (0..SHARDS as usize)
        .map(|shard| rows.iter().skip(shard).step_by(SHARDS as usize).copied().collect::<Vec<_>>().concat())
        .collect();
    ShardedCsv { whole, parts }
}

/// A Running report planned in three shards, as the worker that takes its job plans it.
fn plan_report(app: &TestApp, report_id: &str) {
    app.insert_running(report_id);
    let as_of = chrono::NaiveDate::from_ymd_opt(2023, 1, 25).and_then(|d| d.and_hms_opt(18, 13, 18)).expect("date");
    let shards = KeyRange::cut_at(&[100, 200]);
    let plan = Plan { as_of: Some(as_of), hours_snapshot: None, zones_snapshot: None, shards };
    let planned = shards::plan(&mut app.conn(), report_id, &plan).expect("plan");
    assert_eq!(planned, Planned::Shards { shards_total: SHARDS, pending: (0..SHARDS).collect() });
}

fn start_shard(app: &TestApp, report_id: &str, shard_no: u32) {
    let started = shards::start_shard(&mut app.conn(), report_id, shard_no, WORKER).expect("start shard");
    assert!(matches!(started, StartShard::Started(_)), "{started:?}");
}

/// Stores a started shard's part of the CSV, as the worker that computed it does.
fn store_shard(app: &TestApp, report_id: &str, shard_no: u32, csv: &ShardedCsv) -> ShardStored {
    let part = ShardPart { store_count: STORES_PER_SHARD, csv: &csv.parts[shard_no as usize], worker: WORKER };
    let merge = |parts: &[&[u8]]| merge_parts(HEADER, parts).map_err(|e| e.to_string());
    let stored =
        shards::store_shard(&mut app.conn(), report_id, shard_no, part, CHUNKING, &merge).expect("store shard");
    assert!(matches!(stored, ShardStored::Stored { chunks, .. } if chunks > 1), "several chunks: {stored:?}");
    stored
}

#[tokio::test]
async fn a_sharded_report_shows_its_shards_while_running_and_downloads_as_the_whole_report() {
    let app = spawn_app().await;
    let report_id = new_report_id();
    let csv = sharded_csv();
    plan_report(&app, &report_id);
    start_shard(&app, &report_id, 0);
    let first = store_shard(&app, &report_id, 0, &csv);
    assert!(matches!(first, ShardStored::Stored { shards_done: 1, report_complete: false, .. }), "{first:?}");
    start_shard(&app, &report_id, 1);
    assert!(shards::set_shard_progress(&mut app.conn(), &report_id, 1, 1, 3).expect("progress"));

    let running: serde_json::Value = app.get(&format!("/get_report/{report_id}")).await.json().await.expect("json");
    assert_eq!(
        running,
        app.with_times(
            &report_id,
            serde_json::json!({
                "report_id": report_id, "status": "Running",
                // Shard 0's 3 stores stored, 1 of shard 1's 3 computed; shard 2 not started.
                "progress": { "stores_done": 4, "stores_total": 6, "shards_done": 1, "shards_total": 3 }
            })
        )
    );
    let listed: serde_json::Value = app.get("/reports").await.json().await.expect("json");
    assert_eq!(listed["reports"][0], running, "the list shows the same progress");

    store_shard(&app, &report_id, 1, &csv);
    start_shard(&app, &report_id, 2);
    let last = store_shard(&app, &report_id, 2, &csv);
    assert!(matches!(last, ShardStored::Stored { shards_done: 3, report_complete: true, .. }), "{last:?}");

    let complete: serde_json::Value = app.get(&format!("/get_report/{report_id}")).await.json().await.expect("json");
    assert_eq!(complete["status"], "Complete", "{complete}");
    assert_eq!(complete["stores"], 9, "{complete}");
    assert!(complete.get("progress").is_none(), "{complete}");
    let response = app.get(&format!("/download/{report_id}")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-length"], csv.whole.len().to_string());
    assert_eq!(response.bytes().await.expect("body").as_ref(), csv.whole.as_slice(), "the parts merged by store id");
}
