//! `report-worker [run]` — the queue consumer (settings: `config/`, `APP__…`, `DATABASE_URL`, `AMQP_URL`).
//! `report-worker compute --data <DIR> [--out <FILE>]` — the offline report.

use std::path::PathBuf;
use std::process::ExitCode;

use report_worker::settings::Settings;
use report_worker::{cli, consumer};
use uptime_core::time::format_micros;

const USAGE: &str = "usage: report-worker [run]\n       report-worker compute --data <DIR> [--out <FILE>]";

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("run") if args.len() <= 1 => run(),
        Some("compute") => compute(&args[1..]),
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
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match (arg.as_str(), it.next()) {
            ("--data", Some(dir)) => data = Some(PathBuf::from(dir)),
            ("--out", Some(file)) => out = Some(PathBuf::from(file)),
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
    match cli::compute(&data, out.as_deref(), loaded_at) {
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
    let settings = match shared_model::settings::load::<Settings>() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("report-worker: cannot read the settings: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("report-worker: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(consumer::run(settings, shared_model::shutdown::signalled())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
