//! Builds the gateway from its settings: migrations, the MySQL pool, the RabbitMQ publisher, the HTTP
//! server on a bound listener (port 0 in tests) and the outbox relay.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::middleware::Logger;
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use shared_model::db::{self, DbPool};

use crate::cache::CompletedReports;
use crate::error::{ApiError, json_error_bodies, unknown_route};
use crate::outbox::{OutboxRelay, RelaySettings};
use crate::publisher::JobPublisher;
use crate::routes;
use crate::settings::Settings;
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

    pub async fn build_with_listener(settings: Settings, listener: TcpListener) -> anyhow::Result<Application> {
        settings.gateway.validate()?;
        let url = settings.database.url.clone();
        let pool_size = settings.database.pool_size.max(1);
        // Migrations on a connection of their own (MySQL DDL commits implicitly), then the pool, whose
        // first connection is opened here: both block, so neither runs on the async thread.
        let pool = tokio::task::spawn_blocking(move || -> anyhow::Result<DbPool> {
            let mut conn = db::connect(&url)?;
            let applied = db::run_migrations(&mut conn)?;
            if !applied.is_empty() {
                log::info!("migrations applied: {}", applied.join(", "));
            }
            Ok(db::pool(&url, pool_size)?)
        })
        .await
        .context("the database start-up task stopped")??;
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
            },
        );
        let workers = match settings.gateway.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        // Each worker has its own blocking pool; together they hold at least one thread per pooled
        // connection, so no connection sits idle while a query waits for a thread.
        let blocking_threads_per_worker = (pool_size as usize).div_ceil(workers).max(1);
        let port = listener.local_addr().context("the listener has no local address")?.port();
        let state = web::Data::new(AppState {
            pool: pool.clone(),
            publisher: publisher.clone(),
            completed: CompletedReports::new(settings.gateway.completed_cache_entries),
            settings: settings.gateway.clone(),
        });
        let server =
            HttpServer::new(move || {
                App::new()
                    .wrap(json_error_bodies())
                    .wrap(Logger::new("%a \"%r\" %s %b %Dms"))
                    .app_data(state.clone())
                    .app_data(web::QueryConfig::default().error_handler(|error, _| {
                        ApiError::BadRequest(format!("the query string is not valid: {error}")).into()
                    }))
                    .app_data(web::PathConfig::default().error_handler(|error, _| {
                        ApiError::BadRequest(format!("the path is not valid: {error}")).into()
                    }))
                    .configure(routes::health::configure)
                    .configure(routes::reports::configure)
                    .configure(routes::metrics::configure)
                    .configure(routes::openapi::configure)
                    .default_service(web::to(unknown_route))
            })
            .workers(workers)
            .worker_max_blocking_threads(blocking_threads_per_worker)
            .shutdown_timeout(settings.gateway.shutdown_timeout_s)
            .listen(listener)
            .context("cannot serve on the listener")?
            .run();
        log::info!(
            "api-gateway on port {port}: {workers} workers, {pool_size} MySQL connections, database {}, RabbitMQ {}",
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

    /// Serves until the server stops (SIGTERM / SIGINT: stop accepting, finish requests in flight), with
    /// the outbox relay running beside it; then stops the relay and closes the broker connection.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let (stop_relay, relay_stopped) = tokio::sync::oneshot::channel::<()>();
        let relay = tokio::spawn(self.relay.run_until(async {
            let _ = relay_stopped.await;
        }));
        let served = self.server.await;
        let _ = stop_relay.send(());
        if let Err(error) = relay.await {
            log::warn!("the outbox relay ended badly: {error}");
        }
        self.publisher.close().await;
        served
    }
}
