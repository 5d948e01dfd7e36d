//! `api-gateway`: reads its settings (see `settings.rs`), then serves until SIGTERM or Ctrl-C.
//! `api-gateway token new --role ROLE [--name NAME]` prints a new token (line 1) and the tokens-file line
//! that grants it ROLE (line 2), and exits.

use anyhow::Context as _;
use api_gateway::auth::{self, Role};
use api_gateway::settings::Settings;
use api_gateway::startup::Application;

const USAGE: &str = "usage: api-gateway                                     serve the API\n       \
                     api-gateway token new --role reader|reporter|admin [--name NAME]";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None => serve(),
        Some("token") => token(&args[1..]),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => anyhow::bail!("unknown command {other:?}\n{USAGE}"),
    }
}

#[actix_web::main]
async fn serve() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let settings: Settings = shared_model::settings::load().context("cannot read the settings")?;
    let application = Application::build(settings).await?;
    application.run_until_stopped(shared_model::shutdown::signalled()).await.context("the HTTP server failed")?;
    log::info!("api-gateway stopped");
    Ok(())
}

/// `token new --role ROLE [--name NAME]`: the token on stdout's first line, its tokens-file line on the
/// second (scripts read them so; keep the two lines).
fn token(args: &[String]) -> anyhow::Result<()> {
    let Some((command, mut rest)) = args.split_first() else { anyhow::bail!("{USAGE}") };
    anyhow::ensure!(command == "new", "unknown token command {command:?}\n{USAGE}");
    let (mut role, mut name) = (None, None);
    while let Some((flag, tail)) = rest.split_first() {
        let (value, tail) = tail.split_first().with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--role" => {
                role = Some(
                    Role::parse(value)
                        .with_context(|| format!("unknown role {value:?}: the roles are reader, reporter and admin"))?,
                )
            }
            "--name" => name = Some(value.clone()),
            other => anyhow::bail!("unknown option {other:?}\n{USAGE}"),
        }
        rest = tail;
    }
    let role = role.with_context(|| format!("--role is required\n{USAGE}"))?;
    let (token, line) = auth::new_token(role, name.as_deref())?;
    println!("{token}\n{line}");
    Ok(())
}
