//! `shared_model::models::reports` under the concurrency of several workers.

use std::sync::{Arc, Barrier};

use shared_model::models::reports::{self, Chunking, FinishedReport, Stored};

use crate::helpers::{new_report_id, sample_csv, spawn_app};

#[tokio::test]
async fn workers_storing_different_reports_at_the_same_moment_all_complete() {
    let app = spawn_app().await;
    let csv = sample_csv(300);
    let threads = 6;
    let rounds = 15;
    let ids: Vec<Vec<String>> = (0..threads).map(|_| (0..rounds).map(|_| new_report_id()).collect()).collect();
    for id in ids.iter().flatten() {
        app.insert_running(id);
    }
    let barrier = Arc::new(Barrier::new(threads));
    let workers: Vec<_> = ids
        .iter()
        .cloned()
        .map(|mine| {
            let (url, barrier, csv) = (app.settings.database.url.clone(), barrier.clone(), csv.clone());
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
        assert_eq!(reports::read_csv(&mut app.conn(), id).expect("read"), csv);
    }
}
