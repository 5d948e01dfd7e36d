#!/usr/bin/env bash
# GET /get_report/{id} with wrk (-t2 -c64 -d10s --latency) against the release-built gateway, with and
# without its cache of completed reports. Makes a scratch database and RabbitMQ names, removes them after.
# BENCH_SECONDS changes the length of each run; DATABASE_URL / AMQP_URL the servers.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/services.sh
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install wrk" >&2; exit 1; }
exec cargo bench -p api-gateway --bench get_report
