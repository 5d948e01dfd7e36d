//! `ingest-worker [run]` loads at start and every interval; `--once` loads once; `migrate` only migrates;
//! `database …` creates, drops or describes the database of `DATABASE_URL` (for `deploy/local.sh`, so no
//! script parses the URL).

use std::process::ExitCode;

use anyhow::Context as _;
use ingest_worker::{Settings, load_once, scheduler};
use log::error;
use shared_model::db;

const USAGE: &str = "\
usage: ingest-worker [run]   apply migrations, load DATA_DIR now and every ingest_interval_seconds
       ingest-worker --once  apply migrations, load once; exit 0 if every file loaded, 1 otherwise
       ingest-worker migrate apply migrations and exit
       ingest-worker database create | drop | describe | with-suffix <SUFFIX>
                             create DATABASE_URL's database if missing (prints created or exists), drop it,
                             print host=, port=, database= lines, or print the URL of <database>_<SUFFIX>
settings: DATABASE_URL, DATA_DIR, APP__INGEST_INTERVAL_SECONDS, APP__INGEST_LOCK_WAIT_SECONDS,
          APP__INGEST__MAX_FILE_BYTES, APP__INGEST__RETENTION_DAYS (or config/*.yaml)";

#[derive(Debug, PartialEq, Eq)]
enum Command {
    Run,
    Once,
    Migrate,
    Database(DatabaseCommand),
    Help,
}

#[derive(Debug, PartialEq, Eq)]
enum DatabaseCommand {
    Create,
    Drop,
    Describe,
    WithSuffix(String),
}

/// Three words do not need an argument parser.
fn parse_args(args: &[String]) -> Result<Command, String> {
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] | ["run"] => Ok(Command::Run),
        ["--once"] | ["run", "--once"] => Ok(Command::Once),
        ["migrate"] => Ok(Command::Migrate),
        ["database", "create"] => Ok(Command::Database(DatabaseCommand::Create)),
        ["database", "drop"] => Ok(Command::Database(DatabaseCommand::Drop)),
        ["database", "describe"] => Ok(Command::Database(DatabaseCommand::Describe)),
        ["database", "with-suffix", suffix] if suffix.bytes().all(|b| b.is_ascii_alphanumeric()) => {
            Ok(Command::Database(DatabaseCommand::WithSuffix((*suffix).to_owned())))
        }
        ["-h"] | ["--help"] | ["help"] => Ok(Command::Help),
        other => Err(format!("unexpected arguments: {}", other.join(" "))),
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match parse_args(&args) {
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(command) => command,
        Err(message) => {
            eprintln!("{message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(command) {
        Ok(code) => code,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    let settings: Settings = shared_model::settings::load().context("cannot read the settings")?;
    settings.validate().map_err(|problem| anyhow::anyhow!("invalid settings: {problem}"))?;
    if let Command::Database(what) = command {
        database(&settings.database.url, what)?;
        return Ok(ExitCode::SUCCESS);
    }
    db::migrate(&settings.database.url)?;
    match command {
        Command::Migrate | Command::Help | Command::Database(_) => Ok(ExitCode::SUCCESS),
        Command::Once => {
            let report = load_once(&settings)?;
            Ok(if report.succeeded() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Run => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(scheduler::run(settings, shared_model::shutdown::signalled()));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn database(url: &str, command: DatabaseCommand) -> anyhow::Result<()> {
    let url = db::DatabaseUrl::parse(url)?;
    match command {
        DatabaseCommand::Create => {
            println!("{}", if db::create_database_if_missing(&url)? { "created" } else { "exists" })
        }
        DatabaseCommand::Drop => db::drop_database(&url)?,
        DatabaseCommand::Describe => {
            println!("host={}\nport={}\ndatabase={}", url.host(), url.port(), url.database());
        }
        DatabaseCommand::WithSuffix(suffix) => {
            println!("{}", url.with_database(&format!("{}_{suffix}", url.database())));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        parse_args(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn commands() {
        assert_eq!(parse(&[]), Ok(Command::Run));
        assert_eq!(parse(&["run"]), Ok(Command::Run));
        assert_eq!(parse(&["--once"]), Ok(Command::Once));
        assert_eq!(parse(&["migrate"]), Ok(Command::Migrate));
        assert_eq!(parse(&["--help"]), Ok(Command::Help));
        assert!(parse(&["--twice"]).is_err());
        assert!(parse(&["migrate", "--once"]).is_err());
        assert_eq!(parse(&["database", "create"]), Ok(Command::Database(DatabaseCommand::Create)));
        assert_eq!(
            parse(&["database", "with-suffix", "smoke1f"]),
            Ok(Command::Database(DatabaseCommand::WithSuffix("smoke1f".into())))
        );
        assert!(parse(&["database", "with-suffix", "a;b"]).is_err());
    }
}
