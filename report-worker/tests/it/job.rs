//! The job handler against a real MariaDB, without a broker: one delivery in, one outcome out.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use report_worker::job::{Disposition, JobDelivery, JobHandler, Outcome};
use report_worker::settings::WorkerSettings;
use shared_model::models::reports::{self, ReportStatus as Status};
use shared_model::models::reports::{FinishedReport, Stored, store_complete};
use shared_model::schema::report_chunks;
use uptime_core::input::{HoursRow, Poll};

use crate::helpers::*;

const DELIVERY_LIMIT: u32 = 3;

fn handler(db: &TestDatabase, settings: WorkerSettings) -> JobHandler {
    JobHandler::new(db.pool().clone(), settings, DELIVERY_LIMIT)
}

fn deliver(handler: &JobHandler, report_id: &str) -> Outcome {
    let body = job_body(report_id);
    handler.handle(&JobDelivery { body: &body, message_id: Some(report_id), delivery_count: 0 })
}

fn stored_csv(db: &TestDatabase, report_id: &str) -> Vec<u8> {
    let csv = reports::read_csv(&mut db.conn(), report_id).expect("read chunks");
    assert!(!csv.is_empty(), "the report has chunks");
    csv
}

fn cli_report(folder: &std::path::Path) -> Vec<u8> {
    let out = Command::new(env!("CARGO_BIN_EXE_report-worker"))
        .args(["compute", "--data", folder.to_str().expect("utf-8 path")])
        .output()
        .expect("runs the CLI");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

#[test]
fn a_job_takes_the_report_from_running_to_complete_with_the_clis_csv() {
    let db = TestDatabase::new();
    let mut conn = db.conn();
    let data = seed_folder(&mut conn, &fixture("worker-mix"));
    let report_id = create_report(&mut conn);
    assert_eq!(report_row(&mut conn, &report_id).status, "Running");

    let outcome = deliver(&handler(&db, WorkerSettings::default()), &report_id);
    let Outcome::Completed { stores, csv_bytes, chunks, .. } = outcome.clone() else {
        panic!("expected Completed, got {outcome:?}")
    };
    assert_eq!(outcome.disposition(), Disposition::Ack);

    let csv = stored_csv(&db, &report_id);
    assert_eq!(String::from_utf8_lossy(&csv), String::from_utf8_lossy(&cli_report(&fixture("worker-mix"))));
    assert_eq!(csv, data.expected_csv());
    let row = report_row(&mut conn, &report_id);
    assert_eq!(row.status, "Complete");
    assert_eq!(row.attempts, 1);
    assert_eq!(row.store_count, Some(stores));
    assert_eq!(stores, 7, "the store with only old polls is not in the report");
    assert_eq!(row.csv_bytes, Some(csv_bytes as u64));
    assert_eq!((row.stores_done, row.stores_total), (Some(7), Some(7)));
    assert_eq!(chunks, 1);
    let now = data.polls.iter().map(|p| p.at).max().expect("polls");
    assert_eq!(row.as_of, Some(naive(now)), "as_of is the engine's now, the latest poll");
    assert_eq!(row.error, None);
}

#[test]
fn an_empty_database_gives_the_header_alone() {
    let db = TestDatabase::new();
    let mut conn = db.conn();
    let report_id = create_report(&mut conn);
    let outcome = deliver(&handler(&db, WorkerSettings::default()), &report_id);
    assert!(matches!(outcome, Outcome::Completed { stores: 0, .. }), "{outcome:?}");
    assert_eq!(stored_csv(&db, &report_id), format!("{}\n", uptime_core::engine::HEADER).into_bytes());
    assert_eq!(report_row(&mut conn, &report_id).as_of, None);
}

#[test]
fn a_redelivered_job_of_a_complete_report_is_acknowledged_without_work() {
    let db = TestDatabase::new();
    let mut conn = db.conn();
    seed_folder(&mut conn, &fixture("worker-mix"));
    let report_id = create_report(&mut conn);
    let handler = handler(&db, WorkerSettings::default());
    assert!(matches!(deliver(&handler, &report_id), Outcome::Completed { .. }));
    let before = report_row(&mut conn, &report_id);
    let csv = stored_csv(&db, &report_id);

    let again = deliver(&handler, &report_id);
    assert_eq!(again, Outcome::AlreadyFinished { report_id: report_id.clone(), status: Status::Complete });
    assert_eq!(again.disposition(), Disposition::Ack);
    assert_eq!(report_row(&mut conn, &report_id), before, "attempts and results untouched");
    assert_eq!(stored_csv(&db, &report_id), csv);

    // A Failed report is final for new deliveries too.
    let failed = create_report(&mut conn);
    assert!(reports::mark_failed(&mut conn, &failed, "for the test").expect("mark"));
    assert_eq!(
        deliver(&handler, &failed),
        Outcome::AlreadyFinished { report_id: failed.clone(), status: Status::Failed }
    );
    assert_eq!(report_row(&mut conn, &failed).attempts, 0);
}

#[test]
fn progress_is_written_while_the_report_is_computed() {
    let db = TestDatabase::new();
    let mut conn = db.conn();
    let now = 1_700_000_000_000_000;
    let data = generate(&mut conn, 120, 20, now);
    let report_id = create_report(&mut conn);
    let settings = WorkerSettings { progress_interval_ms: 20, ..WorkerSettings::default() };
    let handler = Arc::new(handler(&db, settings).observed_by(PacePerStore(Duration::from_millis(20))));

    let job = {
        let (handler, report_id) = (Arc::clone(&handler), report_id.clone());
        std::thread::spawn(move || deliver(&handler, &report_id))
    };
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !job.is_finished() && Instant::now() < deadline {
        let row = report_row(&mut conn, &report_id);
        if let (Some(done), Some(total)) = (row.stores_done, row.stores_total) {
            seen.push((done, total));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let outcome = job.join().expect("job thread");
    assert!(matches!(outcome, Outcome::Completed { stores: 120, .. }), "{outcome:?}");
    assert!(seen.iter().all(|&(_, total)| total == 120), "{seen:?}");
    assert!(seen.iter().any(|&(done, _)| done > 0 && done < 120), "no intermediate progress seen: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "progress never goes back: {seen:?}");
    let row = report_row(&mut conn, &report_id);
    assert_eq!((row.stores_done, row.stores_total), (Some(120), Some(120)));
    assert_eq!(stored_csv(&db, &report_id), data.expected_csv(), "the slow path computes the same report");
}

#[test]
fn a_tiny_chunk_size_splits_the_csv_into_rows_that_reassemble() {
    let db = TestDatabase::new();
    let mut conn = db.conn();
    let data = generate(&mut conn, 40, 10, 1_700_000_000_000_000);
    let report_id = create_report(&mut conn);
    let settings = WorkerSettings { chunk_bytes: 100, max_insert_bytes: 250, ..WorkerSettings::default() };
    let outcome = deliver(&handler(&db, settings), &report_id);
    let Outcome::Completed { csv_bytes, chunks, .. } = outcome else { panic!("{outcome:?}") };

    let sizes: Vec<usize> = report_chunks::table
        .filter(report_chunks::report_id.eq(&report_id))
        .order(report_chunks::seq)
        .select(report_chunks::data)
        .load::<Vec<u8>>(&mut conn)
        .expect("chunks")
        .iter()
        .map(Vec::len)
        .collect();
    assert_eq!(sizes.len(), csv_bytes.div_ceil(100));
    assert_eq!(chunks as usize, sizes.len());
    assert!(sizes.iter().all(|&n| n > 0 && n <= 100), "{sizes:?}");
    assert_eq!(stored_csv(&db, &report_id), data.expected_csv());
}

#[test]
fn stale_chunks_of_an_interrupted_attempt_are_replaced() {
    let db = TestDatabase::new();
    let mut conn = db.conn();
    let data = seed_folder(&mut conn, &fixture("worker-mix"));
    let report_id = create_report(&mut conn);
    for seq in 0..5u32 {
        diesel::insert_into(report_chunks::table)
            .values((
                report_chunks::report_id.eq(&report_id),
                report_chunks::seq.eq(seq),
                report_chunks::data.eq(b"garbage".as_slice()),
            ))
            .execute(&mut conn)
            .expect("stale chunk");
    }
    assert!(matches!(deliver(&handler(&db, WorkerSettings::default()), &report_id), Outcome::Completed { .. }));
    assert_eq!(stored_csv(&db, &report_id), data.expected_csv());
}

#[test]
fn changed_polls_are_merged_into_the_kept_dataset_and_match_a_fresh_read() {
    let db = TestDatabase::new();
    let mut conn = db.conn();
    let now = 1_700_000_000_000_000;
    let mut data = generate(&mut conn, 30, 15, now);
    let warm = handler(&db, WorkerSettings::default());
    let first = create_report(&mut conn);
    assert!(matches!(deliver(&warm, &first), Outcome::Completed { .. }));
    let version = warm.cached_version().expect("a dataset is kept");

    // A later load: status flips of existing polls, polls after the old now, and a store never seen.
    let keys = insert_stores(&mut conn, &["late-store"]);
    let late = keys["late-store"];
    data.ids.insert(late, "late-store".into());
    let mut newer: Vec<Poll> = data.polls.iter().step_by(7).map(|p| Poll { active: !p.active, ..*p }).collect();
    newer.push(Poll { store: late, at: now + 10 * 60_000_000, active: false });
    newer.push(Poll { store: data.polls[0].store, at: now + 20 * 60_000_000, active: true });
    let load = insert_load(&mut conn, "polls", "running");
    upsert_polls(&mut conn, load, &newer);
    finish_load(&mut conn, load);
    data.upsert(&newer);

    let second = create_report(&mut conn);
    assert!(matches!(deliver(&warm, &second), Outcome::Completed { .. }));
    assert!(warm.cached_version().expect("kept").settled_load_id > version.settled_load_id);
    let merged = stored_csv(&db, &second);
    assert_eq!(merged, data.expected_csv());
    assert_ne!(merged, stored_csv(&db, &first), "the new polls changed the report");
    let as_of = report_row(&mut conn, &second).as_of;
    assert_eq!(as_of, Some(naive(now + 20 * 60_000_000)));

    let third = create_report(&mut conn);
    assert!(matches!(deliver(&handler(&db, WorkerSettings::default()), &third), Outcome::Completed { .. }));
    assert_eq!(stored_csv(&db, &third), merged, "a cold worker computes the same report");
}

#[test]
fn new_hours_and_zones_snapshots_are_read_again() {
    let db = TestDatabase::new();
    let mut conn = db.conn();
    let mut data = generate(&mut conn, 20, 20, 1_700_000_000_000_000);
    let warm = handler(&db, WorkerSettings::default());
    let first = create_report(&mut conn);
    assert!(matches!(deliver(&warm, &first), Outcome::Completed { .. }));

    let store = data.polls[0].store;
    data.hours = (0..7).map(|weekday| HoursRow { store, weekday, start: 0, end: 3_600_000_000 }).collect();
    data.zones = vec![(store, "Pacific/Auckland".into()), (data.polls.last().expect("polls").store, "Bogus".into())];
    let load = insert_load(&mut conn, "hours", "running");
    replace_hours(&mut conn, load, &data.hours);
    finish_load(&mut conn, load);
    let load = insert_load(&mut conn, "zones", "running");
    let rows: Vec<(u32, &str)> = data.zones.iter().map(|(k, n)| (*k, n.as_str())).collect();
    replace_zones(&mut conn, load, &rows);
    finish_load(&mut conn, load);

    let second = create_report(&mut conn);
    assert!(matches!(deliver(&warm, &second), Outcome::Completed { .. }));
    assert_eq!(stored_csv(&db, &second), data.expected_csv());
    assert_ne!(stored_csv(&db, &second), stored_csv(&db, &first));
}

#[test]
fn polls_of_a_load_still_running_are_fetched_again_once_it_finishes() {
    let db = TestDatabase::new();
    let mut conn = db.conn();
    let now = 1_700_000_000_000_000;
    let mut data = generate(&mut conn, 10, 10, now);
    let warm = handler(&db, WorkerSettings::default());

    // The load has committed part of its rows when the first report reads.
    let load = insert_load(&mut conn, "polls", "running");
    let store = data.polls[0].store;
    let part_one = [Poll { store, at: now + 1_000_000, active: false }];
    upsert_polls(&mut conn, load, &part_one);
    data.upsert(&part_one);
    let first = create_report(&mut conn);
    assert!(matches!(deliver(&warm, &first), Outcome::Completed { .. }));
    assert_eq!(stored_csv(&db, &first), data.expected_csv(), "what was committed is in the report");
    assert!(warm.cached_version().expect("kept").settled_load_id < load, "a running load is not settled");

    let part_two =
        [Poll { store, at: now + 2_000_000, active: true }, Poll { store, at: now + 1_000_000, active: true }];
    upsert_polls(&mut conn, load, &part_two);
    finish_load(&mut conn, load);
    data.upsert(&part_two);
    let second = create_report(&mut conn);
    assert!(matches!(deliver(&warm, &second), Outcome::Completed { .. }));
    assert_eq!(stored_csv(&db, &second), data.expected_csv());
    assert_eq!(warm.cached_version().expect("kept").settled_load_id, load);
}

#[test]
fn an_unknown_report_id_is_dropped_and_a_message_that_is_not_a_job_is_dead_lettered() {
    let db = TestDatabase::new();
    let mut conn = db.conn();
    let handler = handler(&db, WorkerSettings::default());
    let unknown = deliver(&handler, "nosuchreportxxxxxxxxx");
    assert_eq!(unknown, Outcome::UnknownReport { report_id: "nosuchreportxxxxxxxxx".into() });
    assert_eq!(unknown.disposition(), Disposition::Ack);

    let report_id = create_report(&mut conn);
    let outcome = handler.handle(&JobDelivery { body: b"{not json", message_id: Some(&report_id), delivery_count: 0 });
    assert!(matches!(&outcome, Outcome::Malformed { report_id: Some(id), .. } if *id == report_id), "{outcome:?}");
    assert_eq!(outcome.disposition(), Disposition::DeadLetter);
    let row = report_row(&mut conn, &report_id);
    assert_eq!(row.status, "Failed");
    assert!(row.error.expect("a reason").contains("not a report job"));
}

#[test]
fn impossible_stored_hours_fail_the_report_with_a_reason() {
    let db = TestDatabase::new();
    let mut conn = db.conn();
    let data = generate(&mut conn, 5, 5, 1_700_000_000_000_000);
    let load = insert_load(&mut conn, "hours", "loaded");
    replace_hours(&mut conn, load, &[HoursRow { store: data.polls[0].store, weekday: 9, start: 0, end: 1 }]);
    let report_id = create_report(&mut conn);
    let outcome = deliver(&handler(&db, WorkerSettings::default()), &report_id);
    let Outcome::Failed { reason, .. } = &outcome else { panic!("{outcome:?}") };
    assert_eq!(outcome.disposition(), Disposition::Ack);
    assert!(reason.contains("weekday 9") && reason.contains("load the hours file again"), "{reason}");
    let row = report_row(&mut conn, &report_id);
    assert_eq!(row.status, "Failed");
    assert_eq!(row.error.as_deref(), Some(reason.as_str()));
}

#[test]
fn a_database_failure_is_retried_and_on_the_last_delivery_the_report_fails() {
    let db = TestDatabase::new();
    let mut conn = db.conn();
    generate(&mut conn, 5, 5, 1_700_000_000_000_000);
    let report_id = create_report(&mut conn);
    conn.batch_execute("RENAME TABLE report_chunks TO report_chunks_gone").expect("break the schema");
    let handler = handler(&db, WorkerSettings::default());
    let body = job_body(&report_id);

    for delivery_count in 0..DELIVERY_LIMIT {
        let outcome = handler.handle(&JobDelivery { body: &body, message_id: Some(&report_id), delivery_count });
        assert!(matches!(outcome, Outcome::Retry { .. }), "{outcome:?}");
        assert_eq!(outcome.disposition(), Disposition::Requeue);
        assert_eq!(report_row(&mut conn, &report_id).status, "Running");
    }
    let last =
        handler.handle(&JobDelivery { body: &body, message_id: Some(&report_id), delivery_count: DELIVERY_LIMIT });
    let Outcome::GaveUp { reason, marked: true, .. } = &last else { panic!("{last:?}") };
    assert_eq!(last.disposition(), Disposition::DeadLetter);
    assert!(reason.contains("gave up after 4 deliveries") && reason.contains("report_chunks"), "{reason}");
    let row = report_row(&mut conn, &report_id);
    assert_eq!((row.status.as_str(), row.attempts), ("Failed", 4));
    // The log has the cause; the row, which users read, has a sentence without SQL or driver text.
    let error = row.error.expect("a reason");
    assert!(error.contains("gave up after 4 deliveries") && error.contains("trigger a new report"), "{error}");
    for internal in ["report_chunks", "MySQL error", "Table", "doesn't exist"] {
        assert!(!error.contains(internal), "{internal:?} in {error}");
    }
}

#[test]
fn concurrent_duplicate_deliveries_complete_the_report_once() {
    let db = TestDatabase::new();
    let mut conn = db.conn();
    let data = generate(&mut conn, 60, 30, 1_700_000_000_000_000);
    let report_id = create_report(&mut conn);
    let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
        let jobs: Vec<_> = (0..3)
            .map(|_| {
                let handler = handler(&db, WorkerSettings::default());
                let report_id = &report_id;
                scope.spawn(move || deliver(&handler, report_id))
            })
            .collect();
        jobs.into_iter().map(|j| j.join().expect("thread")).collect()
    });
    let completed = outcomes.iter().filter(|o| matches!(o, Outcome::Completed { .. })).count();
    assert_eq!(completed, 1, "{outcomes:?}");
    assert!(outcomes.iter().all(|o| o.disposition() == Disposition::Ack), "{outcomes:?}");
    assert_eq!(stored_csv(&db, &report_id), data.expected_csv());
}

#[test]
fn a_report_of_a_million_stores_is_stored_in_pieces_under_the_packet_limit() {
    let db = TestDatabase::new();
    let mut conn = db.conn();
    let report_id = create_report(&mut conn);
    let mut csv = format!("{}\n", uptime_core::engine::HEADER).into_bytes();
    for i in 0..1_000_000 {
        csv.extend_from_slice(format!("{:036},60.00,24.00,168.00,0.00,0.00,0.00\n", i).as_bytes());
    }
    assert!(csv.len() > 60 << 20, "bigger than MEDIUMBLOB and than any default packet");
    let finished = FinishedReport { as_of: Some(naive(1_700_000_000_000_000)), store_count: 1_000_000, csv: &csv };
    let stored = store_complete(&mut conn, &report_id, finished, WorkerSettings::default().chunking()).expect("stored");
    assert_eq!(stored, Stored::Complete { chunks: csv.len().div_ceil(1 << 20) as u32 });
    let largest: Option<u32> = report_chunks::table
        .filter(report_chunks::report_id.eq(&report_id))
        .select(diesel::dsl::max(diesel::dsl::sql::<diesel::sql_types::Unsigned<diesel::sql_types::Integer>>(
            "OCTET_LENGTH(data)",
        )))
        .first(&mut conn)
        .expect("max");
    assert_eq!(largest, Some(1 << 20));
    assert!(stored_csv(&db, &report_id) == csv, "reassembles byte for byte");
    let row = report_row(&mut conn, &report_id);
    assert_eq!(
        (row.status.as_str(), row.store_count, row.csv_bytes),
        ("Complete", Some(1_000_000), Some(csv.len() as u64))
    );
}

#[test]
fn a_database_reset_behind_the_workers_back_is_read_whole() {
    let db = TestDatabase::new();
    let mut conn = db.conn();
    let old = generate(&mut conn, 10, 10, 1_700_000_000_000_000);
    let warm = handler(&db, WorkerSettings::default());
    let first = create_report(&mut conn);
    assert!(matches!(deliver(&warm, &first), Outcome::Completed { .. }));

    // An operator empties the data and loads a smaller set: load ids start again from 1.
    conn.batch_execute(
        "DELETE FROM polls; DELETE FROM business_hours; DELETE FROM store_timezones; DELETE FROM snapshots; \
         UPDATE current_snapshots SET snapshot_id = NULL, load_id = NULL; DELETE FROM loads; \
         ALTER TABLE loads AUTO_INCREMENT = 1",
    )
    .expect("reset");
    let store = old.polls[0].store;
    let polls = [Poll { store, at: 1_600_000_000_000_000, active: true }];
    let load = insert_load(&mut conn, "polls", "loaded");
    assert_eq!(load, 1);
    upsert_polls(&mut conn, load, &polls);
    let fresh = Data { ids: old.ids.clone(), polls: polls.to_vec(), ..Data::default() };

    let second = create_report(&mut conn);
    assert!(matches!(deliver(&warm, &second), Outcome::Completed { stores: 1, .. }));
    assert_eq!(stored_csv(&db, &second), fresh.expected_csv());
}

/// Polls of `stores` stores every `step` µs over the `days` days up to `now`, statuses varying.
fn polls_over(stores: &[u32], days: i64, step: i64, now: i64) -> Vec<Poll> {
    let mut polls = Vec::new();
    for (i, &store) in stores.iter().enumerate() {
        let mut at = now - days * uptime_core::time::DAY + (i as i64) * 997_000;
        let mut n = i;
        while at <= now {
            polls.push(Poll { store, at, active: n % 7 != 3 });
            at += step;
            n += 1;
        }
    }
    polls.sort_by_key(|p| (p.store, p.at));
    polls.dedup_by_key(|p| (p.store, p.at));
    polls
}

fn in_window(polls: &[Poll]) -> usize {
    let now = polls.iter().map(|p| p.at).max().expect("polls");
    polls.iter().filter(|p| p.at >= now - uptime_core::engine::LOOKBACK).count()
}

#[test]
fn thirty_days_of_polls_give_the_engines_report_over_all_of_them_but_only_the_window_is_kept() {
    let db = TestDatabase::new();
    let mut conn = db.conn();
    let now = 1_700_000_000_000_000;
    // Hours and zones for some stores, polls over the last 8 days of 30 stores.
    let mut data = generate(&mut conn, 30, 10, now);
    let mut stores: Vec<u32> = data.ids.keys().copied().collect();
    stores.sort_unstable();
    // Thirty days of hourly polls on top, and stores with nothing but polls older than the window.
    let old_ids = ["only-old-1", "only-old-2"];
    let keys = insert_stores(&mut conn, &old_ids);
    for id in old_ids {
        data.ids.insert(keys[id], id.to_owned());
    }
    let history = polls_over(&stores, 30, uptime_core::time::HOUR, now);
    let old_only: Vec<Poll> = polls_over(&[keys["only-old-1"], keys["only-old-2"]], 30, uptime_core::time::HOUR, now)
        .into_iter()
        .filter(|p| p.at < now - 9 * uptime_core::time::DAY)
        .collect();
    let load = insert_load(&mut conn, "polls", "running");
    upsert_polls(&mut conn, load, &history);
    upsert_polls(&mut conn, load, &old_only);
    finish_load(&mut conn, load);
    data.upsert(&history);
    data.upsert(&old_only);
    assert!(in_window(&data.polls) * 3 < data.polls.len(), "most polls are older than the window");

    let warm = handler(&db, WorkerSettings::default());
    let report_id = create_report(&mut conn);
    assert!(matches!(deliver(&warm, &report_id), Outcome::Completed { stores: 30, .. }));
    assert_eq!(stored_csv(&db, &report_id), data.expected_csv(), "the engine's report over every poll");
    assert_eq!(warm.cached_poll_count(), Some(in_window(&data.polls)), "only the window is kept");
    assert_eq!(report_row(&mut conn, &report_id).as_of, Some(naive(now)));
}

#[test]
fn kept_polls_that_fall_out_of_the_window_are_dropped_as_now_moves() {
    let db = TestDatabase::new();
    let mut conn = db.conn();
    let now = 1_700_000_000_000_000;
    let mut data = generate(&mut conn, 20, 5, now);
    let mut stores: Vec<u32> = data.ids.keys().copied().collect();
    stores.sort_unstable();
    let history = polls_over(&stores, 12, uptime_core::time::HOUR, now);
    let load = insert_load(&mut conn, "polls", "loaded");
    upsert_polls(&mut conn, load, &history);
    data.upsert(&history);

    let warm = handler(&db, WorkerSettings::default());
    let first = create_report(&mut conn);
    assert!(matches!(deliver(&warm, &first), Outcome::Completed { .. }));
    let kept_first = warm.cached_poll_count().expect("kept");
    assert_eq!(kept_first, in_window(&data.polls));

    // Three days later: a few new polls move now, and three days of kept polls leave the window.
    let later = now + 3 * uptime_core::time::DAY;
    let newer: Vec<Poll> = stores.iter().take(4).map(|&store| Poll { store, at: later, active: true }).collect();
    let load = insert_load(&mut conn, "polls", "running");
    upsert_polls(&mut conn, load, &newer);
    finish_load(&mut conn, load);
    data.upsert(&newer);

    let second = create_report(&mut conn);
    assert!(matches!(deliver(&warm, &second), Outcome::Completed { .. }));
    let kept_second = warm.cached_poll_count().expect("kept");
    assert_eq!(kept_second, in_window(&data.polls), "exactly the new window is kept");
    assert!(kept_second < kept_first, "old polls dropped: {kept_second} kept, {kept_first} before");
    let merged = stored_csv(&db, &second);
    assert_eq!(merged, data.expected_csv());
    assert_eq!(report_row(&mut conn, &second).as_of, Some(naive(later)));

    let cold = handler(&db, WorkerSettings::default());
    let third = create_report(&mut conn);
    assert!(matches!(deliver(&cold, &third), Outcome::Completed { .. }));
    assert_eq!(stored_csv(&db, &third), merged, "a cold worker computes the same report");
    assert_eq!(cold.cached_poll_count(), Some(kept_second));
}

#[test]
fn a_job_naming_an_impossible_report_id_is_acknowledged_without_any_sql() {
    let db = TestDatabase::new();
    let mut conn = db.conn();
    let report_id = create_report(&mut conn);
    // Any SQL on reports would now fail and ask for a retry: the outcome shows none was sent.
    conn.batch_execute("RENAME TABLE reports TO reports_gone").expect("break the schema");
    let handler = handler(&db, WorkerSettings::default());
    for hostile in ["x'; DROP TABLE reports; --", "", "short", "V1StGXR8_Z5jdHi6B-my\u{e9}", &"a".repeat(5000)] {
        let body = job_body(hostile);
        let outcome = handler.handle(&JobDelivery { body: &body, message_id: Some(hostile), delivery_count: 0 });
        assert_eq!(
            outcome,
            Outcome::InvalidReportId { report_id: hostile.to_owned(), message_id: Some(hostile.to_owned()) }
        );
        assert_eq!(outcome.disposition(), Disposition::Ack);
    }
    // Not a job, with a message id that is no report id either: dead-lettered for a person, nothing marked.
    let outcome = handler.handle(&JobDelivery { body: b"{}", message_id: Some("../../etc"), delivery_count: 0 });
    assert!(matches!(outcome, Outcome::Malformed { report_id: None, .. }), "{outcome:?}");
    conn.batch_execute("RENAME TABLE reports_gone TO reports").expect("repair the schema");
    assert_eq!(report_row(&mut conn, &report_id).status, "Running");
}

/// A report of the data version the primary sees now, as the gateway's trigger creates it.
fn trigger(conn: &mut MysqlConnection) -> String {
    let id = test_support::new_report_id();
    let now = chrono::Utc::now().naive_utc();
    let created = reports::create_or_share(conn, reports::NewReport::plain(&id, now, now)).expect("create");
    assert_eq!(created, reports::Created::NeedsJob);
    id
}

#[test]
fn with_a_read_replica_the_inputs_come_from_it_and_the_report_goes_to_the_primary() {
    let (primary, replica) = (TestDatabase::new(), TestDatabase::new());
    let (mut primary_conn, mut replica_conn) = (primary.conn(), replica.conn());
    // Both hold the same loads; the primary's polls are then gone, so a report read there would be empty.
    seed_folder(&mut primary_conn, &fixture("worker-mix"));
    let data = seed_folder(&mut replica_conn, &fixture("worker-mix"));
    primary_conn.batch_execute("DELETE FROM polls").expect("empty the primary's polls");
    let report_id = trigger(&mut primary_conn);

    let handler = handler(&primary, WorkerSettings::default()).reading_from(replica.pool().clone());
    let outcome = deliver(&handler, &report_id);
    assert!(matches!(outcome, Outcome::Completed { stores: 7, .. }), "{outcome:?}");
    assert_eq!(stored_csv(&primary, &report_id), data.expected_csv(), "computed from the replica's polls");
    assert_eq!(report_row(&mut primary_conn, &report_id).status, "Complete");
    assert!(reports::find(&mut replica_conn, &report_id).expect("query").is_none(), "nothing written to the replica");
}

#[test]
fn a_replica_behind_the_reports_data_is_waited_for_then_the_job_goes_back_to_the_queue() {
    let (primary, replica) = (TestDatabase::new(), TestDatabase::new());
    let (mut primary_conn, mut replica_conn) = (primary.conn(), replica.conn());
    seed_folder(&mut primary_conn, &fixture("worker-mix"));
    let data = seed_folder(&mut replica_conn, &fixture("worker-mix"));
    // The primary has finished one more load than the replica has replayed.
    let newer = insert_load(&mut primary_conn, "polls", "running");
    finish_load(&mut primary_conn, newer);
    let report_id = trigger(&mut primary_conn);

    let settings = WorkerSettings { replica_wait_ms: 300, ..WorkerSettings::default() };
    let handler = handler(&primary, settings).reading_from(replica.pool().clone());
    let started = Instant::now();
    let outcome = deliver(&handler, &report_id);
    let Outcome::Retry { reason, .. } = &outcome else { panic!("expected Retry, got {outcome:?}") };
    assert!(reason.contains("read replica has not caught up"), "{reason}");
    assert!(started.elapsed() >= Duration::from_millis(300), "it waited for the replica first");
    assert_eq!(report_row(&mut primary_conn, &report_id).status, "Running");

    // Once the replica has the load, the next delivery completes the report.
    let replayed = insert_load(&mut replica_conn, "polls", "running");
    assert_eq!(replayed, newer, "the replica replays the same load");
    finish_load(&mut replica_conn, replayed);
    let outcome = deliver(&handler, &report_id);
    assert!(matches!(outcome, Outcome::Completed { .. }), "{outcome:?}");
    assert_eq!(stored_csv(&primary, &report_id), data.expected_csv());
}
