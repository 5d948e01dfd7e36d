//! `api-gateway`: reads its settings (see `settings.rs`), then serves until SIGTERM or Ctrl-C.

use anyhow::Context as _;
use api_gateway::settings::Settings;
use api_gateway::startup::Application;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let settings: Settings = shared_model::settings::load().context("cannot read the settings")?;
    let application = Application::build(settings).await?;
    application.run_until_stopped(shared_model::shutdown::signalled()).await.context("the HTTP server failed")?;
    log::info!("api-gateway stopped");
    Ok(())
}
