//! `api-gateway`: reads its settings (see `settings.rs`), then serves until SIGTERM or Ctrl-C.

use anyhow::Context as _;
use api_gateway::settings::Settings;
use api_gateway::startup::Application;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let settings: Settings = shared_model::settings::load().context("cannot read the settings")?;
    let application = Application::build(settings).await?;
    application.run_until_stopped(shutdown_signal()).await.context("the HTTP server failed")?;
    log::info!("api-gateway stopped");
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM (what `docker stop` and `deploy/local.sh` send). A handler that cannot
/// be installed never completes, so the server is not stopped by the failure to listen for a signal.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            log::error!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                log::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => log::info!("Ctrl-C received"),
        () = terminate => log::info!("SIGTERM received"),
    }
}
