#!/usr/bin/env python3
"""The whole system on a data folder, as a user runs it: first load, then reports through the gateway.

    deploy/bench-system.py DATA_DIR [--workers N[,N...]] [--warm R] [--label TEXT]
                           [--loaded-database URL] [--check-cli]

Runs the release binaries (`cargo build --release --bins` first) against the servers of DATABASE_URL and
AMQP_URL (default: the local MariaDB and RabbitMQ), in a scratch database and with queue names of its own,
both removed at the end. It measures:

- the first load (`ingest-worker --once` on an empty database): wall time and peak RSS;
- then, for each worker count of --workers (e.g. `1,2,4`), with fresh processes (cold caches) on that one
  load: trigger -> Complete of the first report and of R more reports on the same data (warm: every report
  expires at once, so each trigger is a new computation, not a shared one), and each report worker's peak
  RSS (VmHWM) at the end;
- with --check-cli, that the first report's CSV of each run equals `report-worker compute` on DATA_DIR.

--loaded-database URL skips the load and uses that database as it is (kept at the end): the 19 M-poll set
takes minutes to load, and one load serves any number of runs.

Prints one line of figures per measure, and a last `result:` line of JSON for scripts.
"""

import argparse
import hashlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"


def run(args, env, capture=True):
    done = subprocess.run(args, env=env, capture_output=capture, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(map(str, args))} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(method, url, token):
    req = urllib.request.Request(url, method=method, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as answer:
        return json.load(answer)


def wait_ready(base, token, gateway):
    for _ in range(600):
        if gateway.poll() is not None:
            sys.exit("the gateway stopped; see its log")
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=2):
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    sys.exit("the gateway did not become ready")


def download(base, token, report_id):
    req = urllib.request.Request(f"{base}/download/{report_id}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=120) as answer:
        return answer.read()


def wait_registered(env):
    """Long enough for every new worker to be in report_workers and to have taken its shard queues: each
    looks every registry interval, so three intervals after they started the ranks have settled."""
    interval = int(env.get("APP__WORKER__REGISTRY_INTERVAL_MS", "2000")) / 1000
    time.sleep(interval * 3)


def trigger_until_complete(base, token, timeout_s=600):
    started = time.monotonic()
    report_id = request("POST", f"{base}/trigger_report", token)["report_id"]
    while time.monotonic() - started < timeout_s:
        answer = request("GET", f"{base}/get_report/{report_id}", token)
        if answer["status"] == "Complete":
            return time.monotonic() - started, answer
        if answer["status"] == "Failed":
            sys.exit(f"report {report_id} failed: {answer.get('error')}")
        time.sleep(0.02)
    sys.exit(f"report {report_id} not complete after {timeout_s} s")


def run_workers(a, env, token, count, logs, expected_sha):
    """Fresh workers and gateway on the loaded database: the first report, R warm ones, peak RSS."""
    processes = []
    try:
        port = free_port()
        gateway_env = dict(env, BIND_ADDR=f"127.0.0.1:{port}")
        for i in range(count):
            log = open(logs / f"workers{count}-{i}.log", "w")
            processes.append(subprocess.Popen([BIN / "report-worker"], env=env, stdout=log, stderr=log))
        log = open(logs / f"gateway{count}.log", "w")
        gateway = subprocess.Popen([BIN / "api-gateway"], env=gateway_env, stdout=log, stderr=log)
        processes.append(gateway)
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, token, gateway)
        wait_registered(env)

        first_s, answer = trigger_until_complete(base, token)
        csv_ok = None
        if expected_sha is not None:
            csv_ok = hashlib.sha256(download(base, token, answer["report_id"])).hexdigest() == expected_sha
        warm = []
        for _ in range(a.warm):
            time.sleep(1.2)  # past the 1 s retention: the next trigger is a computation of its own
            warm.append(trigger_until_complete(base, token)[0])
        workers_rss = [peak_rss_mb(p.pid) for p in processes[:count]]
    finally:
        for p in processes:
            p.send_signal(signal.SIGTERM)
        for p in processes:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    return {
        "workers": count,
        "stores": answer["stores"],
        "first_report_s": first_s,
        "warm_report_s": warm,
        "worker_rss_mb": workers_rss,
        "csv_equals_cli": csv_ok,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--workers", default="1", help="worker counts, one run each: 1 or 1,2,4")
    parser.add_argument("--warm", type=int, default=5)
    parser.add_argument("--label", default="")
    parser.add_argument("--loaded-database", help="a database already loaded with DATA_DIR (kept)")
    parser.add_argument("--check-cli", action="store_true", help="compare each first report with the CLI's")
    a = parser.parse_args()
    counts = [int(n) for n in a.workers.split(",")]
    for binary in ("api-gateway", "ingest-worker", "report-worker"):
        if not (BIN / binary).exists():
            sys.exit(f"{BIN / binary} is missing: cargo build --release --bins")

    suffix = f"bench{os.getpid()}"
    env = dict(os.environ)
    env.setdefault("DATABASE_URL", "mysql://root@127.0.0.1:3306/restaurant_monitor")
    env.setdefault("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
    if a.loaded_database:
        env["DATABASE_URL"] = a.loaded_database
    else:
        env["DATABASE_URL"] = run([BIN / "ingest-worker", "database", "with-suffix", suffix], env).strip()
    for line in run([BIN / "report-worker", "topology", "names", suffix], env).splitlines():
        key, _, value = line.partition("=")
        env[key] = value
    env["DATA_DIR"] = str(a.data_dir.resolve())
    env["RUST_LOG"] = env.get("RUST_LOG", "warn")
    env["APP__REPORTS__RETENTION_SECONDS"] = "1"  # every report expires at once: each trigger computes
    token, line = run([BIN / "api-gateway", "token", "new", "--role", "reporter", "--name", "bench"], env).splitlines()[:2]
    tokens_file = Path(f"/tmp/{suffix}-tokens")
    tokens_file.write_text(line + "\n")
    env["APP__AUTH__TOKENS_FILE"] = str(tokens_file)

    expected_sha = None
    if a.check_cli:
        cli = subprocess.run([BIN / "report-worker", "compute", "--data", str(a.data_dir)], capture_output=True, env=env)
        if cli.returncode != 0:
            sys.exit(f"the CLI failed: {cli.stderr.decode()}")
        expected_sha = hashlib.sha256(cli.stdout).hexdigest()

    load_s = load_rss = None
    runs = []
    logs = Path(f"/tmp/{suffix}")
    logs.mkdir()
    try:
        if not a.loaded_database:
            run([BIN / "ingest-worker", "database", "create"], env)
            run([BIN / "ingest-worker", "migrate"], env)
            started = time.monotonic()
            load = subprocess.Popen([BIN / "ingest-worker", "--once"], env=env, stdout=subprocess.DEVNULL)
            _, status, usage = os.wait4(load.pid, 0)
            load_s = time.monotonic() - started
            if status != 0:
                sys.exit("the first load failed")
            load_rss = usage.ru_maxrss / 1024
        for count in counts:
            runs.append(run_workers(a, env, token, count, logs, expected_sha))
    finally:
        if not a.loaded_database:
            subprocess.run([BIN / "ingest-worker", "database", "drop"], env=env, capture_output=True)
        subprocess.run([BIN / "report-worker", "topology", "delete"], env=env, capture_output=True)
        tokens_file.unlink(missing_ok=True)

    label = a.label or a.data_dir.name
    if load_s is not None:
        print(f"[{label}] first load:                  {load_s:.2f} s, peak RSS {load_rss:.0f} MB")
    for r in runs:
        tag = f"[{label}, {r['workers']} worker{'s' if r['workers'] > 1 else ''}]"
        print(f"{tag} stores {r['stores']}")
        print(f"{tag} trigger -> Complete, first:   {r['first_report_s']:.2f} s")
        warm = r["warm_report_s"]
        if warm:
            print(
                f"{tag} trigger -> Complete, warm:    median {statistics.median(warm):.3f} s "
                f"({min(warm):.3f}-{max(warm):.3f} s, {len(warm)} runs)"
            )
        print(f"{tag} report workers' peak RSS:     {', '.join(f'{x:.0f} MB' for x in r['worker_rss_mb'])}")
        if r["csv_equals_cli"] is not None:
            print(f"{tag} first report's CSV == CLI's:  {r['csv_equals_cli']}")
    result = {"label": label, "first_load_s": load_s, "first_load_rss_mb": load_rss, "runs": runs}
    print("result:", json.dumps(result))
    if any(r["csv_equals_cli"] is False for r in runs):
        sys.exit("a report differs from the CLI's")


if __name__ == "__main__":
    main()
