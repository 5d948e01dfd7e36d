#!/usr/bin/env bash
# Runs the whole system on this Debian machine without Docker, against the local MariaDB and RabbitMQ
# (installed with apt and started when missing): builds the release binaries, loads the sample data, starts
# the gateway, the ingest worker and report workers, and prints the URLs. Ctrl-C stops what it started.
#
#   deploy/local.sh            run until Ctrl-C
#   deploy/local.sh --smoke    start, trigger a report over HTTP, download it, stop; exit 0 when it worked
#
# Settings (environment): PORT (8080), DATA_DIR (data/sample), DATABASE_URL
# (mysql://root@127.0.0.1:3306/restaurant_monitor), AMQP_URL (amqp://guest:guest@127.0.0.1:5672/%2f),
# REPORT_WORKERS (2), RUST_LOG (info).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

smoke=false
case "${1:-}" in
  --smoke) smoke=true ;;
  "") ;;
  -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
  *) echo "unknown option $1 (try --help)" >&2; exit 2 ;;
esac

PORT=${PORT:-8080}
DATA_DIR=${DATA_DIR:-$root/data/sample}
DATABASE_URL=${DATABASE_URL:-mysql://root@127.0.0.1:3306/restaurant_monitor}
AMQP_URL=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
REPORT_WORKERS=${REPORT_WORKERS:-2}
export RUST_LOG=${RUST_LOG:-info} DATABASE_URL AMQP_URL DATA_DIR
run_dir=$root/target/local-run
mkdir -p "$run_dir"

say() { printf '[local] %s\n' "$*"; }

# What this script starts, to stop on exit (services only if they were not running before).
pids=()
stop_mariadb=false
stop_rabbitmq=false
mysqladmin --protocol=tcp -h127.0.0.1 -uroot ping >/dev/null 2>&1 || stop_mariadb=true
rabbitmq-diagnostics -q check_running >/dev/null 2>&1 || stop_rabbitmq=true
cleanup() {
  trap - INT TERM EXIT
  if [ ${#pids[@]} -gt 0 ]; then
    say "stopping the services (SIGTERM: workers finish the job in hand)"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  if $stop_rabbitmq; then say "stopping RabbitMQ"; rabbitmqctl stop >/dev/null 2>&1 || true; fi
  if $stop_mariadb; then say "stopping MariaDB"; mysqladmin --protocol=tcp -h127.0.0.1 -uroot shutdown >/dev/null 2>&1 || true; fi
}
trap cleanup INT TERM EXIT

"$root/deploy/services.sh"
# The management UI, for operators (best effort: the plugin may already be on, or unavailable).
timeout 60 rabbitmq-plugins enable rabbitmq_management >/dev/null 2>&1 || true

database=${DATABASE_URL##*/}
database=${database%%\?*}
server=${DATABASE_URL%/*}
say "database $database on ${server#*@}"
if [[ $server == mysql://root@127.0.0.1* || $server == mysql://root@localhost* ]]; then
  mysql --protocol=tcp -h127.0.0.1 -uroot -e "CREATE DATABASE IF NOT EXISTS \`$database\`"
fi

say "building the release binaries (the first build takes several minutes)"
cargo build --release --locked --bins
bin=$root/target/release

say "loading $DATA_DIR"
"$bin/ingest-worker" --once 2>&1 | tee "$run_dir/first-load.log" | grep -E "load|error|warn" || true

BIND_ADDR=127.0.0.1:$PORT "$bin/api-gateway" >"$run_dir/api-gateway.log" 2>&1 &
pids+=($!)
"$bin/ingest-worker" >"$run_dir/ingest-worker.log" 2>&1 &
pids+=($!)
for i in $(seq 1 "$REPORT_WORKERS"); do
  "$bin/report-worker" run >"$run_dir/report-worker-$i.log" 2>&1 &
  pids+=($!)
done

api=http://127.0.0.1:$PORT
for _ in $(seq 1 60); do
  curl -fsS "$api/readyz" >/dev/null 2>&1 && break
  sleep 0.5
done
curl -fsS "$api/readyz" >/dev/null || { say "the gateway is not ready; see $run_dir/api-gateway.log"; tail -5 "$run_dir/api-gateway.log"; exit 1; }

cat <<TXT

Restaurant Monitor is running (logs in $run_dir/).
  API:            $api   (OpenAPI: $api/openapi.json, metrics: $api/metrics)
  RabbitMQ UI:    http://127.0.0.1:15672   (guest / guest)
  Report workers: $REPORT_WORKERS

Try:
  curl -si -X POST $api/trigger_report
  curl -s $api/get_report/<report_id>
  curl -sOJ $api/download/<report_id>

TXT

if $smoke; then
  started=$(date +%s.%N)
  id=$(curl -fsS -X POST "$api/trigger_report" | python3 -c 'import json,sys; print(json.load(sys.stdin)["report_id"])')
  say "triggered report $id"
  status=Running
  for _ in $(seq 1 120); do
    status=$(curl -fsS "$api/get_report/$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
    [ "$status" = Running ] || break
    sleep 0.25
  done
  [ "$status" = Complete ] || { say "report $id ended $status"; curl -sS "$api/get_report/$id"; exit 1; }
  elapsed=$(python3 -c "import time; print(f'{time.time() - $started:.2f}')")
  curl -fsS "$api/download/$id" -o "$run_dir/report-$id.csv"
  say "report $id Complete in ${elapsed}s: $(($(wc -l <"$run_dir/report-$id.csv") - 1)) stores"
  head -4 "$run_dir/report-$id.csv"
  # The service's report equals the offline CLI's on the same files.
  "$bin/report-worker" compute --data "$DATA_DIR" --out "$run_dir/cli-report.csv" 2>/dev/null
  if cmp -s "$run_dir/report-$id.csv" "$run_dir/cli-report.csv"; then
    say "smoke test passed: the downloaded report equals the CLI's"
  else
    say "smoke test FAILED: the downloaded report differs from the CLI's"; exit 1
  fi
  exit 0
fi

say "Ctrl-C stops everything this script started"
wait "${pids[@]}"
