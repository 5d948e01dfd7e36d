//! `ingest-worker [run]` loads at start and every interval; `--once` loads once; `migrate [--users]` is the
//! migrate step (the only one that changes the schema, and with `--users` sets up the services' users);
//! `database …` creates, drops or describes the database of `DATABASE_URL` (for `deploy/local.sh`, so no
//! script parses the URL).

use std::process::ExitCode;

use anyhow::Context as _;
use ingest_worker::{Settings, load_once, scheduler};
use log::error;
use shared_model::db;
use shared_model::grants::{self, Role};

const USAGE: &str = "\
usage: ingest-worker [run]   load DATA_DIR now and every ingest_interval_seconds (the schema must be migrated)
       ingest-worker --once  load once; exit 0 if every file loaded, 1 otherwise
       ingest-worker migrate [--users]
                             apply migrations and exit (with the administrator's DATABASE_URL); --users
                             then creates the gateway, ingest and worker users (APP__DATABASE_USERS__*)
                             and sets their passwords and grants
       ingest-worker database create | drop | describe | with-suffix <SUFFIX> | drop-users
                             create DATABASE_URL's database if missing (prints created or exists), drop it,
                             print host=, port=, database= lines, print the URL of <database>_<SUFFIX>, or
                             drop the three service users
settings: DATABASE_URL, DATABASE_PASSWORD_FILE, DATA_DIR, APP__INGEST_INTERVAL_SECONDS,
          APP__INGEST_LOCK_WAIT_SECONDS, APP__INGEST__MAX_FILE_BYTES, APP__INGEST__RETENTION_DAYS,
          APP__DATABASE_USERS__{GATEWAY,INGEST,WORKER}_{USER,PASSWORD_FILE} (or config/*.yaml)";

#[derive(Debug, PartialEq, Eq)]
enum Command {
    Run,
    Once,
    Migrate { users: bool },
    Database(DatabaseCommand),
    Help,
}

#[derive(Debug, PartialEq, Eq)]
enum DatabaseCommand {
    Create,
    Drop,
    Describe,
    WithSuffix(String),
    DropUsers,
}

/// Three words do not need an argument parser.
fn parse_args(args: &[String]) -> Result<Command, String> {
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] | ["run"] => Ok(Command::Run),
        ["--once"] | ["run", "--once"] => Ok(Command::Once),
        ["migrate"] => Ok(Command::Migrate { users: false }),
        ["migrate", "--users"] => Ok(Command::Migrate { users: true }),
        ["database", "create"] => Ok(Command::Database(DatabaseCommand::Create)),
        ["database", "drop"] => Ok(Command::Database(DatabaseCommand::Drop)),
        ["database", "describe"] => Ok(Command::Database(DatabaseCommand::Describe)),
        ["database", "drop-users"] => Ok(Command::Database(DatabaseCommand::DropUsers)),
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
        database(&settings, what)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Migrate { users } = command {
        db::migrate(&settings.database.url)?;
        if users {
            service_users(&settings)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Only the migrate step changes the schema: this user may not, and a schema behind is refused here.
    db::check_schema(&mut db::connect(&settings.database.url)?)?;
    match command {
        Command::Migrate { .. } | Command::Help | Command::Database(_) => Ok(ExitCode::SUCCESS),
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

/// Creates (or updates) each service's user with its password and exactly its grants.
fn service_users(settings: &Settings) -> anyhow::Result<()> {
    let url = db::DatabaseUrl::parse(&settings.database.url)?;
    let mut conn = db::connect(&settings.database.url)?;
    for role in Role::ALL {
        let (user, file) = settings.database_users.of(role);
        let file = file.with_context(|| {
            format!("migrate --users: APP__DATABASE_USERS__{}_PASSWORD_FILE is not set", role.name().to_uppercase())
        })?;
        let password = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
        let password = password.lines().next().unwrap_or("").trim();
        grants::apply(&mut conn, role, url.database(), user, password)?;
        log::info!("user {user} ({} role) has its grants on {}", role.name(), url.database());
    }
    Ok(())
}

fn database(settings: &Settings, command: DatabaseCommand) -> anyhow::Result<()> {
    let url = db::DatabaseUrl::parse(&settings.database.url)?;
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
        DatabaseCommand::DropUsers => {
            let mut conn = db::connect(&url.admin().to_string())?;
            for role in Role::ALL {
                grants::drop_user(&mut conn, settings.database_users.of(role).0)?;
            }
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
        assert_eq!(parse(&["migrate"]), Ok(Command::Migrate { users: false }));
        assert_eq!(parse(&["migrate", "--users"]), Ok(Command::Migrate { users: true }));
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
