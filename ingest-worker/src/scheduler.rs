//! The loop: a load at start, then one every `ingest_interval_seconds`, until the shutdown future
//! completes. A load in progress when the signal comes is finished first (it is one transaction per file,
//! so stopping mid-way would only throw the work away).

use std::future::Future;
use std::sync::Arc;

use log::{error, info, warn};
use tokio::time::MissedTickBehavior;

use crate::load::{RunReport, load_once};
use crate::settings::Settings;

/// Runs loads until `shutdown` completes. Returns how many runs were made.
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> u64 {
    let settings = Arc::new(settings);
    let mut ticker = tokio::time::interval(settings.interval());
    // A load longer than the interval delays the next one rather than causing a burst of catch-ups.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let mut runs = 0;
    info!("ingest worker: loading {} every {} s", settings.data_dir.display(), settings.interval().as_secs());
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = ticker.tick() => {}
        }
        let for_load = Arc::clone(&settings);
        let mut load = tokio::task::spawn_blocking(move || load_once(&for_load));
        runs += 1;
        tokio::select! {
            outcome = &mut load => log_outcome(outcome),
            () = &mut shutdown => {
                info!("shutdown requested: finishing the load in progress first");
                log_outcome(load.await);
                break;
            }
        }
    }
    info!("ingest worker stopped after {runs} run(s)");
    runs
}

fn log_outcome(outcome: Result<Result<RunReport, crate::IngestError>, tokio::task::JoinError>) {
    match outcome {
        Ok(Ok(report)) if report.succeeded() => info!("load run done"),
        Ok(Ok(report)) => {
            let failed: Vec<&str> =
                report.files.iter().filter(|f| f.error.is_some()).map(|f| f.kind.as_str()).collect();
            warn!("load run done with failures ({}); the next run tries again", failed.join(", "));
        }
        Ok(Err(e)) => error!("load run failed: {e}; the next run tries again"),
        Err(e) => error!("load run crashed: {e}; the next run tries again"),
    }
}
