//! `report-worker [run]` — the queue consumer (settings: `config/`, `APP__…`, `DATABASE_URL`, `AMQP_URL`).
//! `report-worker compute --data <DIR> [--out <FILE>] [--unknown-after <MINUTES>]` — the offline report
//! (with `--unknown-after`, the three unknown columns of SPEC §2b).
//! `report-worker topology names <SUFFIX>` — the topology's settings with every name suffixed, as
//! `APP__AMQP__…=…` lines (a smoke run's own names); `report-worker topology declare|delete` — declare or
//! delete every exchange and queue of the configured topology; `report-worker topology describe` — the
//! broker's `host=`, `port=`, `vhost=` and `user=` (so no script parses `AMQP_URL`);
//! `report-worker topology permissions` — the RabbitMQ permission regexes of the services' user
//! (`app_configure=`, `app_write=`, `app_read=`) and of the operators' monitoring user (`monitoring_…=`),
//! derived from the configured names.

use std::path::PathBuf;
use std::process::ExitCode;

use report_worker::settings::Settings;
use report_worker::{cli, consumer};
use shared_model::queue;
use uptime_core::engine::Horizon;
use uptime_core::time::format_micros;

const USAGE: &str = "usage: report-worker [run]\n       report-worker compute --data <DIR> [--out <FILE>] [--unknown-after <MINUTES>]\n       \
                     report-worker topology names <SUFFIX> | declare | delete | describe | permissions";

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("run") if args.len() <= 1 => run(),
        Some("compute") => compute(&args[1..]),
        Some("topology") => topology(&args[1..]),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn compute(args: &[String]) -> ExitCode {
    let mut data = None;
    let mut out = None;
    let mut horizon = Horizon::NONE;
    let mut it = args.iter();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!(
            "{USAGE}\n\ncompute: the report of a data folder (SPEC §2) on stdout or into --out (written whole or not \
             at all); --unknown-after MINUTES (1 to 1440) adds unknown_last_hour, unknown_last_day and \
             unknown_last_week (SPEC §2b)"
        );
        return ExitCode::SUCCESS;
    }
    while let Some(arg) = it.next() {
        match (arg.as_str(), it.next()) {
            ("--data", Some(dir)) => data = Some(PathBuf::from(dir)),
            ("--out", Some(file)) => out = Some(PathBuf::from(file)),
            ("--unknown-after", Some(minutes)) => match minutes.parse().ok().and_then(Horizon::minutes) {
                Some(h) => horizon = h,
                None => {
                    eprintln!(
                        "report-worker compute: --unknown-after takes whole minutes from 1 to 1440, not {minutes:?}"
                    );
                    return ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("report-worker compute: unexpected argument {arg:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(data) = data else {
        eprintln!("report-worker compute: --data is required\n{USAGE}");
        return ExitCode::from(2);
    };
    let loaded_at = chrono::Utc::now().timestamp_micros();
    match cli::compute(&data, out.as_deref(), horizon, loaded_at) {
        Ok(outcome) => {
            for warning in &outcome.warnings {
                eprintln!("warning: {warning}");
            }
            for summary in &outcome.summaries {
                eprintln!("loaded {summary}");
                for sample in &summary.samples {
                    eprintln!("  line {}: {} ({:?})", sample.line, sample.reason, sample.value);
                }
            }
            match outcome.now {
                Some(now) => eprintln!("report: {} stores as of {}", outcome.stores, format_micros(now)),
                None => eprintln!("report: no valid poll, header only"),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> ExitCode {
    let Some(settings) = settings() else { return ExitCode::from(2) };
    block_on(consumer::run(settings, shared_model::shutdown::signalled()))
}

fn topology(args: &[String]) -> ExitCode {
    let Some(settings) = settings() else { return ExitCode::from(2) };
    let amqp = settings.amqp;
    match args {
        [names, suffix] if names == "names" => {
            let suffixed = amqp.with_suffix(suffix);
            println!("APP__AMQP__EXCHANGE={}", suffixed.exchange);
            println!("APP__AMQP__QUEUE={}", suffixed.queue);
            println!("APP__AMQP__DEAD_LETTER_EXCHANGE={}", suffixed.dead_letter_exchange);
            println!("APP__AMQP__DEAD_LETTER_QUEUE={}", suffixed.dead_letter_queue);
            println!("APP__AMQP__SHARD_QUEUE={}", suffixed.shard_queue);
            ExitCode::SUCCESS
        }
        [verb] if verb == "describe" => match amqp.url.parse::<lapin::uri::AMQPUri>() {
            Ok(uri) => {
                let authority = &uri.authority;
                println!("host={}\nport={}\nvhost={}", authority.host, authority.port, uri.vhost);
                println!("user={}", authority.userinfo.username);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("report-worker: AMQP_URL {} cannot be read: {e}", shared_model::db::redact_url(&amqp.url));
                ExitCode::from(2)
            }
        },
        [verb] if verb == "permissions" => {
            for (who, permissions) in
                [("app", queue::app_permissions(&amqp)), ("monitoring", queue::monitoring_permissions(&amqp))]
            {
                println!("{who}_configure={}", permissions.configure);
                println!("{who}_write={}", permissions.write);
                println!("{who}_read={}", permissions.read);
            }
            ExitCode::SUCCESS
        }
        [verb] if verb == "declare" || verb == "delete" => {
            let delete = verb == "delete";
            block_on(async move {
                let connection =
                    queue::connect_once(&amqp.url, "report-worker topology", queue::DEFAULT_CONNECT_TIMEOUT).await?;
                let channel = connection.create_channel().await?;
                if delete {
                    queue::delete_topology(&channel, &amqp).await?;
                } else {
                    queue::declare_topology(&channel, &amqp).await?;
                }
                let _ = connection.close(200, "done".into()).await;
                log::info!("{} the topology of {}", if delete { "deleted" } else { "declared" }, amqp.queue);
                Ok(())
            })
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn settings() -> Option<Settings> {
    shared_model::settings::load::<Settings>()
        .map_err(|e| eprintln!("report-worker: cannot read the settings: {e}"))
        .ok()
}

fn block_on(task: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("report-worker: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
