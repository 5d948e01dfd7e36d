//! `shared_model::models::reports` under the concurrency of several workers.

use std::sync::{Arc, Barrier};

use shared_model::models::reports::{self, Chunking, FinishedReport, Stored};

use test_support::{TestDatabase, new_report_id, sample_csv};

#[tokio::test]
async fn workers_storing_different_reports_at_the_same_moment_all_complete() {
    let db = TestDatabase::new();
    let csv = sample_csv(300);
    let threads = 6;
    let rounds = 15;
    let ids: Vec<Vec<String>> = (0..threads).map(|_| (0..rounds).map(|_| new_report_id()).collect()).collect();
    for id in ids.iter().flatten() {
        reports::create(&mut db.conn(), id, chrono::Utc::now().naive_utc()).expect("create report");
    }
    let barrier = Arc::new(Barrier::new(threads));
    let workers: Vec<_> = ids
        .iter()
        .cloned()
        .map(|mine| {
            let (url, barrier, csv) = (db.url().to_owned(), barrier.clone(), csv.clone());
            std::thread::spawn(move || {
                // A connection of its own: every thread must reach the barrier, whatever the pool's size.
                let mut conn = shared_model::db::connect(&url).expect("connection");
                mine.iter()
                    .map(|id| {
                        barrier.wait();
                        let finished = FinishedReport { as_of: None, store_count: 300, csv: &csv };
                        let chunking = Chunking { chunk_bytes: 1024, max_statement_bytes: 4096 };
                        reports::store_complete(&mut conn, id, finished, chunking).map_err(|e| e.to_string())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();

    for worker in workers {
        for outcome in worker.join().expect("worker thread") {
            assert!(matches!(outcome, Ok(Stored::Complete { .. })), "{outcome:?}");
        }
    }
    for id in ids.iter().flatten() {
        assert_eq!(reports::read_csv(&mut db.conn(), id).expect("read"), csv);
    }
}
