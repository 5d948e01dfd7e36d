//! The report path on a loaded database: trigger → Complete through the real queue, cold (a worker's first
//! report: full read) and warm (a second report on unchanged data), and the same split by phase without
//! the broker.
//!
//!     DATABASE_URL=mysql://root@127.0.0.1/bench ingest-worker migrate
//!     DATA_DIR=/tmp/fullset DATABASE_URL=mysql://root@127.0.0.1/bench ingest-worker --once
//!     DATABASE_URL=mysql://root@127.0.0.1/bench cargo bench -p report-worker --bench report_path
//!
//! `AMQP_URL` (default: local guest) names the broker; the bench uses queue names of its own and deletes
//! them at the end. It adds report rows to the database it is given.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use diesel::prelude::*;
use lapin::{Connection, ConnectionProperties};
use report_worker::consumer;
use report_worker::job::{JobDelivery, JobHandler, JobTimings, Outcome};
use report_worker::settings::{Settings, WorkerSettings};
use shared_model::db::{self, DbPool};
use shared_model::messages::ReportJob;
use shared_model::models::reports;
use shared_model::queue;
use shared_model::settings::{AmqpSettings, DatabaseSettings};

const ROUNDS: usize = 5;

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let url = std::env::var("DATABASE_URL").context("set DATABASE_URL to a database with the data loaded")?;
    let mut amqp = AmqpSettings::default().with_suffix(&format!("bench-{}", std::process::id()));
    if let Ok(amqp_url) = std::env::var("AMQP_URL") {
        amqp.url = amqp_url;
    }
    let pool = db::pool(&url, 8)?;
    let polls: i64 = shared_model::schema::polls::table.count().get_result(&mut pool.get()?)?;
    if polls == 0 {
        bail!(
            "{} has no polls: migrate and load a data set first (ingest-worker migrate, then --once)",
            db::redact_url(&url)
        );
    }
    println!("database:        {} ({polls} polls)", db::redact_url(&url));

    let (cold, warm) = phases_without_broker(&pool, &amqp)?;
    print_phases("handler, cold", &cold);
    print_phases("handler, warm", &warm);

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let settings = Settings {
        database: DatabaseSettings { url, pool_size: 8, read_url: None },
        amqp,
        worker: WorkerSettings::default(),
    };
    let result = runtime.block_on(through_the_queue(&settings, &pool));
    runtime.block_on(async {
        if let Ok(conn) = Connection::connect(&settings.amqp.url, ConnectionProperties::default()).await
            && let Ok(channel) = conn.create_channel().await
        {
            let _ = queue::delete_topology(&channel, &settings.amqp).await;
        }
    });
    let (cold, warm) = result?;
    print_latencies("trigger → Complete, first report of a worker (cold)", &cold, 1.5);
    print_latencies("trigger → Complete, next report, unchanged data (warm)", &warm, 0.5);
    Ok(())
}

fn create_report(pool: &DbPool) -> anyhow::Result<String> {
    let id = nanoid::nanoid!();
    reports::create(&mut *pool.get()?, &id, chrono::Utc::now().naive_utc())?;
    Ok(id)
}

/// Each round: a fresh handler's first job (cold), then a second job (warm).
fn phases_without_broker(pool: &DbPool, amqp: &AmqpSettings) -> anyhow::Result<(Vec<JobTimings>, Vec<JobTimings>)> {
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let handler = JobHandler::new(pool.clone(), WorkerSettings::default(), amqp.delivery_limit);
        for times in [&mut cold, &mut warm] {
            let id = create_report(pool)?;
            let body = serde_json::to_vec(&ReportJob { report_id: id.clone(), requested_at: String::new() })?;
            match handler.handle(&JobDelivery { body: &body, message_id: Some(&id), delivery_count: 0 }) {
                Outcome::Completed { timings, .. } => times.push(timings),
                other => bail!("report {id} did not complete: {other:?}"),
            }
        }
    }
    Ok((cold, warm))
}

/// Each round: a fresh in-process worker consuming the real queue; a report is created and its job
/// published as the gateway does, and the clock stops when the row reads Complete.
async fn through_the_queue(settings: &Settings, pool: &DbPool) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let connection = Connection::connect(&settings.amqp.url, ConnectionProperties::default()).await?;
    let publishing = queue::open_publish_channel(&connection, &settings.amqp).await?;
    queue::declare_topology(&publishing, &settings.amqp).await?;
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let handler = Arc::new(JobHandler::new(pool.clone(), settings.worker.clone(), settings.amqp.delivery_limit));
        let stop = Arc::new(tokio::sync::Notify::new());
        let worker = {
            let (settings, pool, stop) = (settings.clone(), pool.clone(), Arc::clone(&stop));
            tokio::spawn(async move { consumer::consume(&settings, handler, pool, stop.notified()).await })
        };
        wait_for_consumer(&publishing, &settings.amqp).await?;
        for times in [&mut cold, &mut warm] {
            times.push(trigger_and_wait(settings, pool, &publishing).await?);
        }
        stop.notify_one();
        worker.await??;
    }
    let _ = connection.close(200, "bench done".into()).await;
    Ok((cold, warm))
}

async fn wait_for_consumer(channel: &lapin::Channel, amqp: &AmqpSettings) -> anyhow::Result<()> {
    let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let q = channel.queue_declare(amqp.queue.as_str().into(), passive, Default::default()).await?;
        if q.consumer_count() > 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("the worker did not start consuming within 30 s")
}

async fn trigger_and_wait(settings: &Settings, pool: &DbPool, channel: &lapin::Channel) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let id = create_report(pool)?;
    let job = ReportJob { report_id: id.clone(), requested_at: chrono::Utc::now().to_rfc3339() };
    queue::publish_job(channel, &settings.amqp, &job).await?;
    reports::mark_queued(&mut *pool.get()?, &id)?;
    let deadline = started + Duration::from_secs(60);
    let mut conn = pool.get()?;
    loop {
        let report = reports::find(&mut conn, &id)?.context("the report row vanished")?;
        match report.status {
            reports::ReportStatus::Complete => return Ok(started.elapsed()),
            reports::ReportStatus::Failed => bail!("report {id} failed: {:?}", report.error),
            reports::ReportStatus::Running if Instant::now() > deadline => bail!("report {id} still Running"),
            reports::ReportStatus::Running => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn print_phases(label: &str, runs: &[JobTimings]) {
    let pick = |f: fn(&JobTimings) -> Duration| median(runs.iter().map(f).collect());
    println!(
        "{label:<15} median of {}: read {:>7.1} ms, compute+csv {:>6.1} ms, store {:>6.1} ms, total {:>7.1} ms",
        runs.len(),
        ms(pick(|t| t.read)),
        ms(pick(|t| t.compute)),
        ms(pick(|t| t.store)),
        ms(pick(|t| t.total)),
    );
}

fn print_latencies(label: &str, runs: &[Duration], target_s: f64) {
    let mut sorted = runs.to_vec();
    sorted.sort();
    let best = sorted.first().copied().unwrap_or_default();
    let worst = sorted.last().copied().unwrap_or_default();
    let med = median(sorted);
    let verdict = if worst.as_secs_f64() <= target_s { "within" } else { "OVER" };
    println!(
        "{label}: median {:.0} ms, best {:.0} ms, worst {:.0} ms over {} runs ({verdict} the {target_s} s target)",
        ms(med),
        ms(best),
        ms(worst),
        runs.len()
    );
}
