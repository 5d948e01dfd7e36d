//! `GET /get_report/{id}` throughput and latency, measured with `wrk` from a separate process against the
//! gateway binary built with the bench (release) profile:
//!
//! ```sh
//! cargo bench -p api-gateway --bench get_report      # or deploy/bench-gateway.sh
//! ```
//!
//! Makes a scratch database with one Complete report of 14,087 stores (the real data's size), starts the
//! gateway on a free port with its own RabbitMQ names, runs `wrk -t2 -c64 -d10s --latency` twice — with
//! the cache of completed reports (the default) and without it (every request reads MySQL) — prints the
//! figures against the target (≥ 5,000 requests/s, p99 ≤ 10 ms) and removes everything it made.
//! `DATABASE_URL` / `AMQP_URL` choose the servers; `BENCH_SECONDS` the length of each run.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shared_model::models::reports::{self, Chunking, FinishedReport};
use shared_model::settings::AmqpSettings;
use test_support::{TestDatabase, TestTokens, TestTopology, sample_csv};

const TARGET_REQUESTS_PER_SECOND: f64 = 5_000.0;
const TARGET_P99_MS: f64 = 10.0;
const STORES: usize = 14_087;

fn main() -> anyhow::Result<()> {
    let seconds: u32 = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let wrk = which("wrk").ok_or_else(|| anyhow::anyhow!("wrk is not installed (apt-get install wrk)"))?;
    // A migrated scratch database and RabbitMQ names of the bench's own, both removed at the end.
    let scratch = TestDatabase::with_prefix("rm_bench_");
    let topology = TestTopology::new();
    let amqp = topology.amqp.clone();
    // A reader's token, as a polling client would send.
    let tokens = TestTokens::new();

    let report_id = nanoid::nanoid!();
    {
        let mut conn = scratch.conn();
        reports::create(&mut conn, &report_id, chrono::Utc::now().naive_utc())?;
        let csv = sample_csv(STORES);
        reports::store_complete(
            &mut conn,
            &report_id,
            FinishedReport { as_of: Some(chrono::Utc::now().naive_utc()), store_count: STORES as u32, csv: &csv },
            Chunking::default(),
        )?;
    }

    println!("GET /get_report/{{id}} of a Complete report, wrk -t2 -c64 -d{seconds}s --latency");
    let mut results = Vec::new();
    for (label, cache_entries) in
        [("cache of completed reports on (default)", "100000"), ("cache off: MySQL per request", "0")]
    {
        let gateway = Gateway::start(scratch.url(), &amqp, cache_entries, &tokens)?;
        let url = format!("http://127.0.0.1:{}/get_report/{report_id}", gateway.port);
        // Warm the connections and the cache before measuring.
        run_wrk(&wrk, &url, 2, &tokens.reader)?;
        let output = run_wrk(&wrk, &url, seconds, &tokens.reader)?;
        drop(gateway);
        let figures = Figures::parse(&output).ok_or_else(|| anyhow::anyhow!("cannot read wrk's output:\n{output}"))?;
        println!("\n== {label}\n{output}");
        results.push((label, figures));
    }

    println!("\nsummary (target: >= {TARGET_REQUESTS_PER_SECOND} requests/s at p99 <= {TARGET_P99_MS} ms)");
    for (label, figures) in &results {
        let verdict = if figures.requests_per_second >= TARGET_REQUESTS_PER_SECOND && figures.p99_ms <= TARGET_P99_MS {
            "meets the target"
        } else {
            "misses the target"
        };
        println!(
            "  {label}: {:.0} requests/s, p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, {} errors/non-2xx: {verdict}",
            figures.requests_per_second, figures.p50_ms, figures.p90_ms, figures.p99_ms, figures.errors
        );
    }
    Ok(())
}

fn which(program: &str) -> Option<String> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| format!("{dir}/{program}"))
        .find(|path| std::path::Path::new(path).is_file())
}

fn run_wrk(wrk: &str, url: &str, seconds: u32, token: &str) -> anyhow::Result<String> {
    let output = Command::new(wrk)
        .args([
            "-t2",
            "-c64",
            &format!("-d{seconds}s"),
            "--latency",
            "-H",
            &format!("Authorization: Bearer {token}"),
            url,
        ])
        .stderr(Stdio::inherit())
        .output()?;
    anyhow::ensure!(output.status.success(), "wrk failed: {}", output.status);
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// What the summary needs from wrk's output.
struct Figures {
    requests_per_second: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    errors: u64,
}

impl Figures {
    fn parse(output: &str) -> Option<Figures> {
        let field = |prefix: &str| {
            output.lines().map(str::trim).find_map(|line| line.strip_prefix(prefix)).map(|rest| rest.trim().to_owned())
        };
        let requests_per_second = field("Requests/sec:")?.parse().ok()?;
        // "Socket errors: connect 0, read 0, write 0, timeout 0" appears only when there were some.
        let socket_errors: u64 = field("Socket errors:")
            .map_or(0, |line| line.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u64>().ok()).sum());
        let errors = field("Non-2xx or 3xx responses:").and_then(|n| n.parse().ok()).unwrap_or(0) + socket_errors;
        Some(Figures {
            requests_per_second,
            p50_ms: millis(&field("50%")?)?,
            p90_ms: millis(&field("90%")?)?,
            p99_ms: millis(&field("99%")?)?,
            errors,
        })
    }
}

/// wrk writes durations as `812.00us`, `1.23ms`, `2.01s`.
fn millis(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    match unit {
        "us" => Some(number / 1_000.0),
        "ms" => Some(number),
        "s" => Some(number * 1_000.0),
        "m" => Some(number * 60_000.0),
        _ => None,
    }
}

/// The gateway binary as a child process, stopped with SIGTERM when dropped.
struct Gateway {
    child: Child,
    port: u16,
}

impl Gateway {
    fn start(
        database_url: &str,
        amqp: &AmqpSettings,
        cache_entries: &str,
        tokens: &TestTokens,
    ) -> anyhow::Result<Gateway> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(env!("CARGO_BIN_EXE_api-gateway"))
            .env("BIND_ADDR", format!("127.0.0.1:{port}"))
            .env("DATABASE_URL", database_url)
            .env("AMQP_URL", &amqp.url)
            .env("APP__AMQP__EXCHANGE", &amqp.exchange)
            .env("APP__AMQP__QUEUE", &amqp.queue)
            .env("APP__AMQP__DEAD_LETTER_EXCHANGE", &amqp.dead_letter_exchange)
            .env("APP__AMQP__DEAD_LETTER_QUEUE", &amqp.dead_letter_queue)
            .env("APP__GATEWAY__COMPLETED_CACHE_ENTRIES", cache_entries)
            .env("APP__AUTH__TOKENS_FILE", &tokens.file)
            .env("APP_CONFIG_DIR", "/nonexistent")
            .env("RUST_LOG", "warn")
            .spawn()?;
        let gateway = Gateway { child, port };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if http_status(port, "/readyz") == Some(200) {
                return Ok(gateway);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        anyhow::bail!("the gateway did not become ready on port {port} within 30 s")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let terminated = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        if !terminated.is_ok_and(|status| status.success()) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}
