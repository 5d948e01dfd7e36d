//! A report cut into shards (issue 12): its progress counts stored shards, and its download is its shards'
//! parts one after the other, read by the shard layout so a lost chunk cuts the download.

use diesel::prelude::*;
use shared_model::models::reports::Chunking;
use shared_model::models::shards::{self, Plan, Planned, ShardPart, ShardStored, StartShard, StoreRange};
use shared_model::schema::report_chunks;

use crate::helpers::{TestApp, new_report_id, sample_csv, spawn_app};

/// Small chunks, so every shard's part is stored in several of them.
const CHUNKING: Chunking = Chunking { chunk_bytes: 16, max_statement_bytes: 64 };
const SHARDS: u32 = 3;
const STORES_PER_SHARD: u32 = 3;
const WORKER: &str = "test-worker";

/// A report's CSV and its shards' parts: shard 0's part holds the header and the first stores, and the
/// parts cut the rows (sorted by store id) where the shards' store ranges do.
struct ShardedCsv {
    whole: Vec<u8>,
    parts: Vec<Vec<u8>>,
    ranges: Vec<StoreRange>,
}

fn sharded_csv() -> ShardedCsv {
    let whole = sample_csv((SHARDS * STORES_PER_SHARD) as usize);
    let lines: Vec<&[u8]> = whole.split_inclusive(|&b| b == b'\n').collect();
    let (header, rows) = lines.split_first().expect("a header line");
    let parts: Vec<Vec<u8>> = rows
        .chunks(STORES_PER_SHARD as usize)
        .enumerate()
        .map(|(shard_no, rows)| {
            let header = if shard_no == 0 { *header } else { &[][..] };
            [header, &rows.concat()].concat()
        })
        .collect();
    let cuts: Vec<String> = rows
        .chunks(STORES_PER_SHARD as usize)
        .skip(1)
        .map(|rows| {
            let first_row = String::from_utf8(rows[0].to_vec()).expect("utf-8");
            first_row.split(',').next().expect("a store id").to_owned()
        })
        .collect();
    ShardedCsv { whole, parts, ranges: StoreRange::cut_at(&cuts) }
}

/// A Running report planned in the shards of `csv`, as the worker that takes its job plans it.
fn plan_report(app: &TestApp, report_id: &str, csv: &ShardedCsv) {
    app.insert_running(report_id);
    let as_of = chrono::NaiveDate::from_ymd_opt(2023, 1, 25).and_then(|d| d.and_hms_opt(18, 13, 18)).expect("date");
    let plan = Plan { as_of: Some(as_of), hours_snapshot: None, zones_snapshot: None, shards: csv.ranges.clone() };
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
    let stored = shards::store_shard(&mut app.conn(), report_id, shard_no, part, CHUNKING).expect("store shard");
    assert!(matches!(stored, ShardStored::Stored { chunks, .. } if chunks > 1), "several chunks: {stored:?}");
    stored
}

/// A report whose shards are all stored: Complete.
fn insert_sharded_complete(app: &TestApp, report_id: &str, csv: &ShardedCsv) {
    plan_report(app, report_id, csv);
    for shard_no in 0..SHARDS {
        start_shard(app, report_id, shard_no);
        store_shard(app, report_id, shard_no, csv);
    }
}

#[tokio::test]
async fn a_sharded_report_shows_its_shards_while_running_and_downloads_as_its_parts_in_order() {
    let app = spawn_app().await;
    let report_id = new_report_id();
    let csv = sharded_csv();
    plan_report(&app, &report_id, &csv);
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
    assert_eq!(response.bytes().await.expect("body").as_ref(), csv.whole.as_slice(), "the parts in shard order");
}

#[tokio::test]
async fn a_sharded_download_whose_stored_chunk_is_missing_is_cut_short_rather_than_completed() {
    let app = spawn_app().await;
    let report_id = new_report_id();
    let csv = sharded_csv();
    insert_sharded_complete(&app, &report_id, &csv);
    assert_eq!(app.get(&format!("/download/{report_id}")).await.bytes().await.expect("body"), csv.whole);
    diesel::delete(
        report_chunks::table
            .filter(report_chunks::report_id.eq(&report_id))
            .filter(report_chunks::shard_no.eq(1))
            .filter(report_chunks::seq.eq(1)),
    )
    .execute(&mut app.conn())
    .expect("lose a chunk");

    let response = app.get(&format!("/download/{report_id}")).await;

    assert_eq!(response.status(), 200, "the first chunk was there");
    assert!(response.bytes().await.is_err(), "the client sees a cut download, not a shorter report");
}
