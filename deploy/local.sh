#!/usr/bin/env bash
# Runs the whole system on a Debian machine without Docker, against the local MariaDB and RabbitMQ
# (installed with apt and started when missing): builds the release binaries, loads the data folder, starts
# the gateway, the ingest worker and the report workers, and prints the URLs. Ctrl-C stops what it started.
#
#   deploy/local.sh            run until Ctrl-C
#   deploy/local.sh --smoke    start, trigger a report over HTTP, wait for it, download it, compare it with
#                              the offline CLI's report of the same files, stop; exit 0 when all of it worked.
#                              Uses a database and queue names of its own (dropped and deleted at the end).
#   deploy/local.sh --isolated as the plain run (until Ctrl-C or SIGTERM), with the smoke run's own database,
#                              queue names and users, dropped and deleted when it stops (the browser test).
#
# Settings (environment):
#   PORT            8080           the gateway listens on 127.0.0.1:PORT
#   DATA_DIR        data/sample    the folder with store_status.csv, menu_hours.csv, timezones.csv
#   DATABASE_URL    mysql://root@127.0.0.1:3306/restaurant_monitor   (created when missing)
#                   the administrator's URL: only the migrate step uses it; the services connect as
#                   rm_gateway, rm_ingest and rm_worker, which the migrate step creates
#   AMQP_URL        amqp://guest:guest@127.0.0.1:5672/%2f
#                   used only to create the users restaurant-monitor (the services) and
#                   restaurant-monitor-ops (monitoring, for the management UI) on a local RabbitMQ
#   REPORT_WORKERS  2              report-worker processes
#   RUST_LOG        info
# Logs: target/local-run/ (--smoke: target/local-run/smoke/, --isolated: target/local-run/isolated/). Generated passwords: credentials/ in there.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

say() { printf '[local] %s\n' "$*"; }
die() { printf '[local] error: %s\n' "$*" >&2; exit 1; }

smoke=false
isolated=false # a database, queue names and users of its own (--smoke, --isolated)
case "${1:-}" in
  --smoke) smoke=true isolated=true ;;
  --isolated) isolated=true ;;
  "") ;;
  -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
  *) echo "unknown option $1 (try --help)" >&2; exit 2 ;;
esac

PORT=${PORT:-8080}
DATA_DIR=${DATA_DIR:-$root/data/sample}
DATABASE_URL=${DATABASE_URL:-mysql://root@127.0.0.1:3306/restaurant_monitor}
AMQP_URL=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
REPORT_WORKERS=${REPORT_WORKERS:-2}
export RUST_LOG=${RUST_LOG:-info}

[[ $PORT =~ ^[0-9]+$ ]] || die "PORT must be a number (got '$PORT')"
[[ $REPORT_WORKERS =~ ^[0-9]+$ ]] || die "REPORT_WORKERS must be a number (got '$REPORT_WORKERS')"
if $smoke && [ "$REPORT_WORKERS" -lt 1 ]; then die "--smoke needs REPORT_WORKERS of at least 1"; fi
[ -d "$DATA_DIR" ] || die "DATA_DIR $DATA_DIR is not a folder"
DATA_DIR=$(cd "$DATA_DIR" && pwd)
export DATABASE_URL AMQP_URL DATA_DIR
command -v cargo >/dev/null || die "cargo is not installed: install Rust first (https://rustup.rs)"

is_local() { [[ $1 == 127.0.0.1 || $1 == localhost || $1 == ::1 ]]; }

run_dir=$root/target/local-run
bin=${CARGO_TARGET_DIR:-$root/target}/release
if $smoke; then run_dir=$run_dir/smoke; elif $isolated; then run_dir=$run_dir/isolated; fi # leaves a running stack's logs alone
mkdir -p "$run_dir"

# What this script starts, to stop on exit: its own processes, and MariaDB / RabbitMQ only when it was
# the one that started them.
pids=()
names=()
stop_mariadb=false
stop_rabbitmq=false
created_database=false
smoke_names=false
made_users=false

cleanup() {
  local alive pid
  trap - INT TERM EXIT
  if [ ${#pids[@]} -gt 0 ]; then
    say "stopping the services (SIGTERM: workers finish the job in hand)"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 1 60); do
      alive=false
      for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=true; done
      $alive || break
      sleep 0.5
    done
    if $alive; then say "still running after 30 s: SIGKILL"; kill -KILL "${pids[@]}" 2>/dev/null || true; fi
    wait "${pids[@]}" 2>/dev/null || true
  fi
  if $isolated; then
    if $created_database; then "$bin/ingest-worker" database drop >/dev/null 2>&1 || true; fi
    # Only once the smoke run's own names are in force (before that, the names are someone else's).
    if $smoke_names; then
      as_app "$bin/report-worker" topology delete >/dev/null 2>&1 || true
      if $made_users; then
        "$bin/ingest-worker" database drop-users >/dev/null 2>&1 || true
        rabbitmqctl -q delete_user "$amqp_app_user" >/dev/null 2>&1 || true
      fi
    fi
  fi
  if $stop_rabbitmq; then say "stopping RabbitMQ (this script started it)"; rabbitmqctl stop >/dev/null 2>&1 || true; fi
  if $stop_mariadb; then say "stopping MariaDB (this script started it)"; mysqladmin --protocol=tcp -h127.0.0.1 -uroot shutdown >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the binaries: they read DATABASE_URL and AMQP_URL for this script too, so no URL is parsed here ---
"$root/deploy/services.sh" --packages
say "building the release binaries (the first build takes several minutes)"
cargo build --release --locked --bins

# `key=value` lines of a binary's `describe` into shell variables of the given prefix.
describe() { # prefix, command...
  local prefix=$1 line
  shift
  local lines
  lines=$("$@") || die "$* failed"
  while IFS= read -r line; do printf -v "${prefix}_${line%%=*}" '%s' "${line#*=}"; done <<<"$lines"
}
describe db "$bin/ingest-worker" database describe
describe amqp "$bin/report-worker" topology describe

# A smoke run must not see (or be seen by) another stack on this machine: a database and queue names of
# its own, so the downloaded report can be compared with the CLI's and no other worker takes its job.
if $isolated; then
  smoke_suffix=$($smoke && echo smoke || echo isolated)$(od -An -N4 -tx4 /dev/urandom | tr -d ' \n')
  DATABASE_URL=$("$bin/ingest-worker" database with-suffix "$smoke_suffix") || die "cannot name the smoke database"
  describe db "$bin/ingest-worker" database describe
  smoke_settings=$("$bin/report-worker" topology names "$smoke_suffix") || die "cannot name the smoke run's queues"
  while IFS= read -r setting; do export "${setting?}"; done <<<"$smoke_settings"
  [[ ${APP__AMQP__QUEUE:-} == *"$smoke_suffix" && $db_database == *"$smoke_suffix" ]] ||
    die "the smoke run's database and queue names lack their suffix"
  smoke_names=true
fi

# --- the services' own users: MySQL users with only their grants (made by the migrate step), and a
# RabbitMQ user limited to the project's exchanges and queues. A smoke run makes users of its own. ---
user_suffix=""
$isolated && user_suffix=_$smoke_suffix
export APP__DATABASE_USERS__GATEWAY_USER=rm_gateway$user_suffix
export APP__DATABASE_USERS__INGEST_USER=rm_ingest$user_suffix
export APP__DATABASE_USERS__WORKER_USER=rm_worker$user_suffix
amqp_app_user=restaurant-monitor${user_suffix//_/-}
amqp_ops_user=restaurant-monitor-ops
credentials=$run_dir/credentials
(umask 077 && mkdir -p "$credentials")
for secret in db-gateway db-ingest db-worker amqp-app amqp-ops; do
  # Kept between runs (a running stack keeps working); delete the folder to rotate them.
  [ -s "$credentials/$secret" ] || (umask 077 && od -An -N18 -tx1 /dev/urandom | tr -d ' \n' >"$credentials/$secret")
done
export APP__DATABASE_USERS__GATEWAY_PASSWORD_FILE=$credentials/db-gateway
export APP__DATABASE_USERS__INGEST_PASSWORD_FILE=$credentials/db-ingest
export APP__DATABASE_USERS__WORKER_PASSWORD_FILE=$credentials/db-worker
service_db() { printf 'mysql://%s@%s:%s/%s' "$1" "$db_host" "$db_port" "$db_database"; }
amqp_vhost_path=${amqp_vhost//%/%25}
amqp_vhost_path=${amqp_vhost_path//\//%2f}
app_env=(AMQP_URL="amqp://$amqp_app_user@$amqp_host:$amqp_port/$amqp_vhost_path" AMQP_PASSWORD_FILE="$credentials/amqp-app")
# The environment of a service (in service_env): its database user, and the app user on the broker.
service_env() { # gateway|ingest|worker
  local user_var=APP__DATABASE_USERS__${1^^}_USER
  service_env=(DATABASE_URL="$(service_db "${!user_var}")" DATABASE_PASSWORD_FILE="$credentials/db-$1")
  # The ingest never talks to the broker: it gets no broker password.
  [ "$1" = ingest ] || service_env+=("${app_env[@]}")
}
as_service() { service_env "$1"; shift; env "${service_env[@]}" "$@"; }
as_app() { env "${app_env[@]}" "$@"; }

# --- MariaDB and RabbitMQ: installed and started only when missing (and only when they are local) ---
if is_local "$db_host" || is_local "$amqp_host"; then
  if is_local "$db_host" && ! mysqladmin --protocol=tcp -h127.0.0.1 -uroot ping >/dev/null 2>&1; then stop_mariadb=true; fi
  if is_local "$amqp_host" && ! rabbitmq-diagnostics -q check_running >/dev/null 2>&1; then stop_rabbitmq=true; fi
  "$root/deploy/services.sh"
fi
if is_local "$amqp_host"; then
  # The management UI, for operators (best effort: already on, or unavailable on this install).
  timeout 60 rabbitmq-plugins enable rabbitmq_management >/dev/null 2>&1 || true
  describe perm "$bin/report-worker" topology permissions
  rmq_user() { # name, password file, tag, configure, write, read
    rabbitmqctl -q add_user "$1" "$(cat "$2")" >/dev/null 2>&1 || rabbitmqctl -q change_password "$1" "$(cat "$2")" >/dev/null ||
      die "cannot create the RabbitMQ user $1"
    rabbitmqctl -q set_user_tags "$1" $3 >/dev/null
    rabbitmqctl -q set_permissions -p "$amqp_vhost" "$1" "$4" "$5" "$6" >/dev/null || die "cannot set the permissions of $1"
  }
  made_users=true
  rmq_user "$amqp_app_user" "$credentials/amqp-app" "" "$perm_app_configure" "$perm_app_write" "$perm_app_read"
  $isolated || rmq_user "$amqp_ops_user" "$credentials/amqp-ops" monitoring \
    "$perm_monitoring_configure" "$perm_monitoring_write" "$perm_monitoring_read"
  say "RabbitMQ user $amqp_app_user (the services)$($isolated || echo " and $amqp_ops_user (monitoring)") on vhost $amqp_vhost"
else
  say "RabbitMQ on $amqp_host is not local: the services use AMQP_URL as given (create its users as the README says)"
  app_env=()
fi

say "database $db_database on $db_host:$db_port"
case $("$bin/ingest-worker" database create) in
  created) created_database=true ;;
  exists) ;;
  *) die "cannot create database $db_database: create it, or give a DATABASE_URL whose user may" ;;
esac

say "migrate step: migrations, then the users $APP__DATABASE_USERS__GATEWAY_USER, $APP__DATABASE_USERS__INGEST_USER, $APP__DATABASE_USERS__WORKER_USER and their grants"
made_users=true
if ! "$bin/ingest-worker" migrate --users >"$run_dir/migrate.log" 2>&1; then
  tail -20 "$run_dir/migrate.log" >&2
  die "the migrate step failed (log: $run_dir/migrate.log)"
fi

say "loading $DATA_DIR"
if ! as_service ingest "$bin/ingest-worker" --once >"$run_dir/first-load.log" 2>&1; then
  tail -20 "$run_dir/first-load.log" >&2
  die "the first load failed (log: $run_dir/first-load.log)"
fi
sed -E 's/^\[[^]]*\] ?/  /' "$run_dir/first-load.log"

api=http://127.0.0.1:$PORT
if curl -s -o /dev/null --max-time 2 "$api/healthz"; then
  die "something already answers on port $PORT: stop it, or choose another port (PORT=8081 $0)"
fi

start() { # name, command...
  local name=$1
  shift
  # A session of its own: Ctrl-C reaches only this script, which then stops the services with SIGTERM in
  # order (a worker finishes the job in hand), instead of every service seeing SIGINT at once and the
  # script taking their exits for failures.
  setsid "$@" >"$run_dir/$name.log" 2>&1 &
  pids+=($!)
  names+=("$name")
}
start_failed() {
  local i
  for i in "${!pids[@]}"; do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      tail -5 "$run_dir/${names[$i]}.log" >&2
      die "${names[$i]} stopped (log: $run_dir/${names[$i]}.log)"
    fi
  done
}

# A token for this run: only its SHA-256 goes into the tokens file the gateway reads.
token_lines=$("$bin/api-gateway" token new --role admin --name local-run) || die "cannot make an API token"
api_token=$(sed -n 1p <<<"$token_lines")
(umask 077 && sed -n 2p <<<"$token_lines" >"$run_dir/tokens")
auth=(-H "Authorization: Bearer $api_token")

service_env gateway
APP__AUTH__TOKENS_FILE=$run_dir/tokens BIND_ADDR=127.0.0.1:$PORT start api-gateway env "${service_env[@]}" "$bin/api-gateway"
service_env ingest
start ingest-worker env "${service_env[@]}" "$bin/ingest-worker"
service_env worker
# The smoke run cuts its report into shards (the sample's 250 stores in three), so the workers compute one
# report together and the downloaded CSV is checked against the CLI's all the same.
if $smoke; then export APP__WORKER__SHARD_STORES=${APP__WORKER__SHARD_STORES:-100}; fi
for i in $(seq 1 "$REPORT_WORKERS"); do
  start "report-worker-$i" env "${service_env[@]}" "$bin/report-worker" run
done

deadline=$((SECONDS + 60))
until curl -fsS -o /dev/null --max-time 3 "$api/readyz" 2>/dev/null; do
  start_failed
  [ $SECONDS -lt $deadline ] || { curl -sS "$api/readyz" >&2 || true; echo >&2; die "the gateway is not ready after 60 s (log: $run_dir/api-gateway.log)"; }
  sleep 0.5
done
sleep 1 # a worker that cannot reach RabbitMQ or MySQL stops within a second
start_failed

cat <<TXT

Restaurant Monitor is running (logs in $run_dir/).
  API:            $api   (OpenAPI: $api/openapi.json, metrics: $api/metrics)
  API token:      $api_token   (admin, this run only; its digest is in $run_dir/tokens)
  RabbitMQ UI:    http://$amqp_host:15672   (user $amqp_ops_user, password in $credentials/amqp-ops)
  Report workers: $REPORT_WORKERS
  Data:           $DATA_DIR   (loaded now and every hour)

Try:
  token=$api_token
  id=\$(curl -s -X POST -H "Authorization: Bearer \$token" $api/trigger_report | python3 -c 'import json,sys; print(json.load(sys.stdin)["report_id"])')
  curl -s -H "Authorization: Bearer \$token" $api/get_report/\$id
  curl -sOJ -H "Authorization: Bearer \$token" $api/download/\$id        # saves report-\$id.csv once the report is Complete

TXT

json_field() { python3 -c 'import json, sys; print(json.load(sys.stdin).get(sys.argv[1], ""))' "$1"; }

if $smoke; then
  started=$EPOCHREALTIME
  id=$(curl -fsS "${auth[@]}" -X POST "$api/trigger_report" | json_field report_id)
  [ -n "$id" ] || die "POST /trigger_report gave no report_id"
  say "triggered report $id"
  deadline=$((SECONDS + 300))
  while :; do
    answer=$(curl -fsS "${auth[@]}" "$api/get_report/$id")
    status=$(json_field status <<<"$answer")
    [ "$status" = Running ] || break
    start_failed
    [ $SECONDS -lt $deadline ] || die "report $id still Running after 300 s: $answer"
    sleep 0.25
  done
  [ "$status" = Complete ] || die "report $id ended $status: $answer"
  say "report $id Complete in $(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }') s: $answer"
  download_url=$(json_field download_url <<<"$answer")
  curl -fsS "${auth[@]}" "$download_url" -o "$run_dir/report.csv"
  say "downloaded $download_url: $(($(wc -l <"$run_dir/report.csv") - 1)) stores; first lines:"
  head -4 "$run_dir/report.csv"
  # The service's report must equal the offline CLI's on the same files.
  "$bin/report-worker" compute --data "$DATA_DIR" --out "$run_dir/cli-report.csv" 2>"$run_dir/cli-report.log" ||
    die "the offline CLI failed (log: $run_dir/cli-report.log)"
  cmp -s "$run_dir/report.csv" "$run_dir/cli-report.csv" ||
    die "the downloaded report differs from the CLI's: diff $run_dir/report.csv $run_dir/cli-report.csv"
  shards=$(grep -ho "cut into [0-9]* shards" "$run_dir"/report-worker-*.log | head -1 || true)
  [ -n "$shards" ] || die "the smoke report was not cut into shards (APP__WORKER__SHARD_STORES=$APP__WORKER__SHARD_STORES; logs: $run_dir/report-worker-*.log)"
  say "the report was $shards, computed by: $(grep -l "shard [0-9]* stored" "$run_dir"/report-worker-*.log | xargs -n1 basename | tr '\n' ' ')"
  say "smoke test passed: the downloaded report equals the CLI's"
  exit 0
fi

say "Ctrl-C stops everything this script started"
while :; do
  wait -n || true
  start_failed
done
