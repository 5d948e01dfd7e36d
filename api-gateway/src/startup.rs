//! Builds the gateway from its settings: the schema check, the MySQL pool, the RabbitMQ publisher, the HTTP
//! server on a bound listener (port 0 in tests) and the outbox relay.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::http::header;
use actix_web::middleware::{DefaultHeaders, Logger};
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use shared_model::db::{self, DbPool};
use shared_model::settings::DatabaseSettings;

use crate::admission::{DownloadSlots, TriggerLimiter};
use crate::auth::Authenticator;
use crate::cache::CompletedReports;
use crate::error::{ApiError, json_error_bodies, unknown_route};
use crate::outbox::{OutboxRelay, RelaySettings};
use crate::publisher::JobPublisher;
use crate::routes;
use crate::settings::{AuthSettings, GatewaySettings, Settings};
use crate::state::AppState;

pub struct Application {
    port: u16,
    server: Server,
    relay: OutboxRelay,
    publisher: Arc<JobPublisher>,
    pool: DbPool,
}

impl Application {
    /// Binds `settings.bind_addr` and builds everything. Call inside the runtime that will run it.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let listener = TcpListener::bind(&settings.bind_addr)
            .with_context(|| format!("cannot listen on {} (bind_addr / BIND_ADDR)", settings.bind_addr))?;
        Self::build_with_listener(settings, listener).await
    }

    /// As [`Application::build`], on a listener the caller bound (tests bind port 0 and read the port).
    pub async fn build_with_listener(settings: Settings, listener: TcpListener) -> anyhow::Result<Application> {
        settings.gateway.validate()?;
        settings.reports.validate()?;
        settings.auth.validate()?;
        let authenticator = authenticator(&settings.auth)?;
        let pool = open_database(&settings.database).await?;
        let completed = Arc::new(CompletedReports::new(settings.gateway.completed_cache_entries));
        let (publisher, relay) = publisher_and_relay(&settings, &pool);
        let relay = relay.forgetting_expired_in(completed.clone());
        let port = listener.local_addr().context("the listener has no local address")?.port();
        let state = AppState {
            pool: pool.clone(),
            publisher: publisher.clone(),
            completed,
            settings: settings.gateway.clone(),
            reports: settings.reports.clone(),
            auth: settings.auth.clone(),
            triggers: Arc::new(TriggerLimiter::new(settings.auth.triggers_per_minute)),
            downloads: DownloadSlots::new(settings.gateway.max_concurrent_downloads),
        };
        let workers = http_workers(&settings.gateway);
        let server = http_server(state, authenticator, listener, workers, &settings)?;
        log::info!(
            "api-gateway on port {port}: {workers} workers, {} MySQL connections, database {}, RabbitMQ {}",
            settings.database.pool_size.max(1),
            db::redact_url(&settings.database.url),
            db::redact_url(&settings.amqp.url)
        );
        Ok(Application { port, server, relay, publisher, pool })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pool(&self) -> &DbPool {
        &self.pool
    }

    /// Serves, with the outbox relay running beside it, until `shutdown` resolves (main passes SIGTERM /
    /// SIGINT; tests their own signal): then the server stops accepting and finishes the requests in
    /// flight (up to `gateway.shutdown_timeout_s`), the relay stops and the broker connection is closed.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let (stop_relay, relay_stopped) = tokio::sync::oneshot::channel::<()>();
        let relay = tokio::spawn(self.relay.run_until(async {
            let _ = relay_stopped.await;
        }));
        let served = serve_until(self.server, shutdown).await;
        let _ = stop_relay.send(());
        if let Err(error) = relay.await {
            log::warn!("the outbox relay ended badly: {error}");
        }
        self.publisher.close().await;
        served
    }
}

/// The tokens of `auth.tokens_file`; without one the gateway does not start, unless `auth.disabled`.
fn authenticator(settings: &AuthSettings) -> anyhow::Result<Authenticator> {
    if settings.disabled {
        log::warn!(
            "auth.disabled is set: every caller may trigger reports, read them and read /metrics without a token; \
             never run it so where others can reach it"
        );
        return Ok(Authenticator::disabled());
    }
    let Some(path) = &settings.tokens_file else {
        anyhow::bail!(
            "no tokens file: set auth.tokens_file (APP__AUTH__TOKENS_FILE) to a file of `<role> <sha256> [<name>]` lines \
             (make one with `api-gateway token new --role reporter`), or auth.disabled: true (APP__AUTH__DISABLED=true) \
             to serve without tokens"
        );
    };
    let authenticator = Authenticator::from_file(path)?;
    log::info!("{} API tokens from {}", authenticator.token_count(), path.display());
    Ok(authenticator)
}

/// The schema check, then the pool, whose first connection is opened here: both block, so neither runs on the
/// async thread.
async fn open_database(settings: &DatabaseSettings) -> anyhow::Result<DbPool> {
    let settings = settings.clone();
    let pool = tokio::task::spawn_blocking(move || db::check_schema_then_pool(&settings))
        .await
        .context("the database start-up task stopped")??;
    Ok(pool)
}

/// The publisher (it connects on first use, on this runtime) and the outbox relay that publishes through it
/// (not running yet: `run_until_stopped` runs it beside the server).
fn publisher_and_relay(settings: &Settings, pool: &DbPool) -> (Arc<JobPublisher>, OutboxRelay) {
    let publisher = Arc::new(JobPublisher::new(
        settings.amqp.clone(),
        settings.gateway.amqp_connect_timeout(),
        tokio::runtime::Handle::current(),
    ));
    let relay = OutboxRelay::new(
        pool.clone(),
        publisher.clone(),
        RelaySettings {
            interval: settings.gateway.relay_interval(),
            grace: settings.gateway.relay_grace(),
            batch: settings.gateway.relay_batch,
            publish_timeout: settings.gateway.publish_timeout(),
            retention: settings.reports.retention(),
            stale_after: settings.reports.stale_after(),
            delivery_limit: settings.amqp.delivery_limit,
            sweep_batch: settings.reports.sweep_batch,
        },
    );
    (publisher, relay)
}

fn http_workers(settings: &GatewaySettings) -> usize {
    match settings.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// The HTTP server on `listener`, not yet polled. Its signal handling is off: the caller's shutdown
/// future decides when it stops (see [`serve_until`]).
fn http_server(
    state: AppState,
    authenticator: Authenticator,
    listener: TcpListener,
    workers: usize,
    settings: &Settings,
) -> anyhow::Result<Server> {
    // Each worker has its own blocking pool; together they hold at least one thread per pooled
    // connection, so no connection sits idle while a query waits for a thread.
    let blocking_threads_per_worker = (settings.database.pool_size.max(1) as usize).div_ceil(workers).max(1);
    let state = web::Data::new(state);
    let authenticator = web::Data::new(authenticator);
    let server = HttpServer::new(move || {
        App::new()
            .wrap(json_error_bodies())
            // Outside the error rewriting, so every answer carries it; no CORS header is ever sent.
            .wrap(DefaultHeaders::new().add((header::X_CONTENT_TYPE_OPTIONS, "nosniff")))
            .wrap(Logger::new("%a \"%r\" %s %b %Dms"))
            .app_data(state.clone())
            .app_data(authenticator.clone())
            .app_data(web::QueryConfig::default().error_handler(|error, _| {
                ApiError::BadRequest(format!("the query string is not valid: {error}")).into()
            }))
            .app_data(
                web::PathConfig::default()
                    .error_handler(|error, _| ApiError::BadRequest(format!("the path is not valid: {error}")).into()),
            )
            .configure(routes::health::configure)
            .configure(routes::reports::configure)
            .configure(routes::stores::configure)
            .configure(routes::metrics::configure)
            .configure(routes::openapi::configure)
            .configure(routes::page::configure)
            .default_service(web::to(unknown_route))
    })
    .workers(workers)
    .worker_max_blocking_threads(blocking_threads_per_worker)
    .shutdown_timeout(settings.gateway.shutdown_timeout_s)
    .disable_signals()
    .listen(listener)
    .context("cannot serve on the listener")?
    .run();
    Ok(server)
}

/// Polls `server` until it ends by itself or `shutdown` resolves; then stops it gracefully (no new
/// connections, requests in flight finish within the shutdown timeout) and waits for it.
async fn serve_until(server: Server, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
    let handle = server.handle();
    let mut server = std::pin::pin!(server);
    tokio::select! {
        served = &mut server => return served,
        () = shutdown => log::info!("shutting down: no new connections; finishing the requests in flight"),
    }
    let ((), served) = tokio::join!(handle.stop(true), server);
    served
}
