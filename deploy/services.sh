#!/usr/bin/env bash
# Makes sure what the system and its tests need is on this Debian machine and running:
# build packages (pkg-config, the MariaDB client library), MariaDB and RabbitMQ.
# Installs with apt only what is missing and starts only what is not running; safe to run again.
#   deploy/services.sh              packages, then MariaDB and RabbitMQ running
#   deploy/services.sh --packages   only the packages (to build, or to run against servers elsewhere)
set -euo pipefail
packages_only=false
[ "${1:-}" = --packages ] && packages_only=true

log() { printf '[services] %s\n' "$*" >&2; }

missing=()
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
[ -e /usr/include/mysql/mysql.h ] || [ -e /usr/include/mariadb/mysql.h ] || missing+=(default-libmysqlclient-dev)
[ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
[ -x /usr/sbin/rabbitmq-server ] || missing+=(rabbitmq-server)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

$packages_only && exit 0

if ! mysqladmin --protocol=tcp -h127.0.0.1 -uroot ping >/dev/null 2>&1; then
  log "starting MariaDB"
  install -d -o mysql -g root /run/mysqld
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
  for _ in $(seq 1 60); do
    mysqladmin --protocol=tcp -h127.0.0.1 -uroot ping >/dev/null 2>&1 && break
    sleep 0.5
  done
  mysqladmin --protocol=tcp -h127.0.0.1 -uroot ping >/dev/null || { log "MariaDB did not start"; exit 1; }
fi

if ! rabbitmq-diagnostics -q check_running >/dev/null 2>&1; then
  log "starting RabbitMQ"
  rabbitmq-plugins enable --offline rabbitmq_management >/dev/null 2>&1 || true
  rabbitmq-server -detached >/dev/null 2>&1 || true
  for _ in $(seq 1 60); do
    rabbitmq-diagnostics -q check_running >/dev/null 2>&1 && break
    sleep 1
  done
  rabbitmq-diagnostics -q check_running >/dev/null || { log "RabbitMQ did not start"; exit 1; }
fi
log "MariaDB on 127.0.0.1:3306 and RabbitMQ on 127.0.0.1:5672 are up"
