//! Engine and CLI figures on a data folder (default: the bundled sample; for the real-shaped full set,
//! see README "Benchmarks"):
//!
//!     cargo bench -p uptime-core --bench engine -- /path/to/folder [--unknown-after MINUTES]
//!
//! Prints the time to read the files, to compute (best and median of several runs), and to write the CSV.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use uptime_core::engine::{self, Horizon, Inputs, NoProgress, Report};
use uptime_core::input::read_folder;

const RUNS: usize = 15;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut folder = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../data/sample"));
    let mut horizon = Horizon::NONE;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--unknown-after" => {
                let minutes = it.next().and_then(|m| m.parse().ok()).and_then(Horizon::minutes);
                horizon = minutes.ok_or("--unknown-after takes minutes from 1 to 1440")?;
            }
            // cargo bench passes --bench to every bench binary.
            flag if flag.starts_with("--") => {}
            path => folder = PathBuf::from(path),
        }
    }
    let loaded_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_micros() as i64;

    let started = Instant::now();
    let data = read_folder(&folder, loaded_at)?;
    let load = started.elapsed();
    let now = engine::latest_poll(&data.polls).ok_or_else(|| format!("no valid poll in {}", folder.display()))?;
    let inputs = Inputs { polls: &data.polls, hours: &data.hours, zones: &data.zones };

    let mut times: Vec<Duration> = Vec::with_capacity(RUNS);
    let mut rows = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        rows = engine::compute(inputs, now, horizon, &NoProgress);
        times.push(started.elapsed());
    }
    times.sort();

    let started = Instant::now();
    let mut csv = Vec::with_capacity(rows.len() * 64);
    let report = Report { now: Some(now), horizon, rows };
    report.write_csv(&mut csv, |k| data.stores.id(k))?;
    let rows = report.rows;
    let write = started.elapsed();

    println!("data:            {}", folder.display());
    println!(
        "unknown after:   {}",
        horizon.as_minutes().map_or_else(|| "no horizon".to_owned(), |m| format!("{m} min"))
    );
    println!("polls:           {} ({} stores in report)", data.polls.len(), rows.len());
    println!("read files:      {:>8.1} ms", load.as_secs_f64() * 1e3);
    println!("engine best:     {:>8.1} ms   median {:.1} ms over {RUNS} runs", ms(times[0]), ms(times[RUNS / 2]));
    println!("write csv:       {:>8.1} ms   ({} bytes)", ms(write), csv.len());
    println!("polls/s (engine): {:.1} M", data.polls.len() as f64 / times[RUNS / 2].as_secs_f64() / 1e6);
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
