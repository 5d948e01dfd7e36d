#!/usr/bin/env bash
# The page in a real headless browser: Debian's chromium driven by playwright-core (one npm package, no
# browser download of its own). Starts the system with `deploy/local.sh --isolated` (its own database,
# queues and users, removed when it stops), then deploy/browser-test.mjs loads the page, enters the token,
# triggers a report, watches it reach Complete, downloads it through the page and compares it with the
# offline CLI's report, draws a store's week and checks its segments add up to the figures shown, and
# writes target/page-1280.png and target/page-360.png. Exit 0 when all of it worked.
#
# Settings (environment): PORT (18081), DATA_DIR (data/sample), and local.sh's others.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
say() { printf '[browser-test] %s\n' "$*"; }
die() { printf '[browser-test] error: %s\n' "$*" >&2; exit 1; }

PLAYWRIGHT_VERSION=1.65.1
export PORT=${PORT:-18081}
DATA_DIR=${DATA_DIR:-$root/data/sample}
export DATA_DIR
work=$root/target/browser-test
mkdir -p "$work"

apt_install() {
  say "installing $* with apt"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
command -v chromium >/dev/null || apt_install chromium
command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm
if [ "$(node -p "try { require('$work/node_modules/playwright-core/package.json').version } catch { '' }")" != "$PLAYWRIGHT_VERSION" ]; then
  say "installing playwright-core $PLAYWRIGHT_VERSION (npm) into $work"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --silent --no-audit --no-fund --no-save --prefix "$work" \
    "playwright-core@$PLAYWRIGHT_VERSION" >/dev/null
fi

# The system, kept up until this script ends; local.sh stops what it started on SIGTERM.
local_pid=""
stop_system() {
  if [ -n "$local_pid" ] && kill -0 "$local_pid" 2>/dev/null; then
    say "stopping the system"
    kill -TERM "$local_pid" 2>/dev/null || true
    wait "$local_pid" 2>/dev/null || true
  fi
}
trap stop_system EXIT
trap 'exit 130' INT TERM

say "starting the system: deploy/local.sh --isolated on port $PORT (log: $work/local.log)"
rm -f "$work/local.log" # before the start, so the wait below never reads an earlier run's token
deploy/local.sh --isolated >"$work/local.log" 2>&1 &
local_pid=$!
token=""
while [ -z "$token" ]; do
  if ! kill -0 "$local_pid" 2>/dev/null; then
    tail -20 "$work/local.log" >&2
    die "deploy/local.sh stopped before the system was up"
  fi
  token=$(sed -n 's/^  API token: *\([^ ]*\) .*/\1/p' "$work/local.log" 2>/dev/null)
  [ -n "$token" ] || sleep 1
done
say "the system is up"

bin=${CARGO_TARGET_DIR:-$root/target}/release
"$bin/report-worker" compute --data "$DATA_DIR" --out "$work/cli-report.csv" 2>"$work/cli-report.log" ||
  die "the offline CLI failed (log: $work/cli-report.log)"

API=http://127.0.0.1:$PORT TOKEN=$token MODULES=$work/node_modules CLI_CSV=$work/cli-report.csv \
  SHOTS=$root/target OUT=$work node deploy/browser-test.mjs
