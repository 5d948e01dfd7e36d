#!/usr/bin/env bash
# Makes the secrets docker-compose.yml reads, in deploy/secrets/ (ignored by git and by the image build):
# the gateway's tokens file (one admin token), random passwords for MySQL's root, the three service users
# and the two RabbitMQ users, and the RabbitMQ
# definitions file with those users (passwords as salted SHA-256 hashes, as RabbitMQ wants them) and
# their permissions, which come from the code (`report-worker topology permissions`).
#
#   deploy/make-secrets.sh            make what is missing (an existing password is kept)
#   deploy/make-secrets.sh --rotate   new passwords for the service users (not MySQL's root, which the
#                                     database volume keeps); then `docker compose up -d`: the migrate
#                                     step sets the new MySQL passwords, RabbitMQ loads the new hashes
#                                     at its restart (docker compose restart rabbitmq)
#
# To choose a password yourself, write it into its file (one line; 16-128 of A-Z a-z 0-9 - _ . ~) and
# run this script again: it rewrites the definitions from the files. Needs python3, and report-worker
# (a built binary, cargo, or the image restaurant-monitor:latest from `docker compose build`).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=deploy/secrets
rotate=false
case "${1:-}" in
  --rotate) rotate=true ;;
  "") ;;
  -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
  *) echo "unknown option $1 (try --help)" >&2; exit 2 ;;
esac

mkdir -p "$dir"
chmod 700 "$dir" # the folder keeps other host users out; the files must be readable by the containers' users
new_password() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }
for name in mysql_root_password db_gateway_password db_ingest_password db_worker_password amqp_app_password amqp_ops_password; do
  file=$dir/$name
  if [ ! -s "$file" ] || { $rotate && [ "$name" != mysql_root_password ]; }; then
    (umask 022 && new_password >"$file" && echo >>"$file")
    echo "wrote $file"
  fi
done

# Runs one of the project's binaries: a built one, else through cargo, else from the compose image.
project_bin() { # binary, arguments...
  local name=$1 bin
  shift
  for bin in "${CARGO_TARGET_DIR:-target}/release/$name" "${CARGO_TARGET_DIR:-target}/debug/$name"; do
    if [ -x "$bin" ]; then "$bin" "$@"; return; fi
  done
  if command -v cargo >/dev/null; then cargo run -q --locked -p "$name" -- "$@"; return; fi
  if command -v docker >/dev/null; then
    docker image inspect restaurant-monitor:latest >/dev/null 2>&1 || docker compose build migrate >&2
    docker run --rm --entrypoint "/usr/local/bin/$name" restaurant-monitor:latest "$@"
    return
  fi
  echo "make-secrets: need $name (cargo or docker)" >&2
  exit 1
}
# The permission regexes, from the code's topology names.
permissions() { project_bin report-worker topology permissions; }

# The gateway's tokens file: one admin token to begin with (README "Tokens and limits" adds more). The
# file holds its digest only; the token itself is printed once and kept in admin-token for the operator.
if [ ! -s "$dir/api-tokens" ]; then
  made=$(project_bin api-gateway token new --role admin --name compose-admin)
  (umask 077 && sed -n 1p <<<"$made" >"$dir/admin-token")
  (umask 022 && sed -n 2p <<<"$made" >"$dir/api-tokens")
  echo "wrote $dir/api-tokens (an admin token; the token itself is in $dir/admin-token)"
fi
# docker compose checks that every secret's file exists, even to build: a placeholder until the real one.
[ -e "$dir/rabbitmq-definitions.json" ] || (umask 022 && echo '{}' >"$dir/rabbitmq-definitions.json")
lines=$(permissions)

(umask 022 && python3 - "$dir" "$lines" >"$dir/rabbitmq-definitions.json.tmp") <<'PY'
import base64, hashlib, json, os, sys

folder, lines = sys.argv[1], sys.argv[2]
perm = dict(line.split("=", 1) for line in lines.splitlines() if "=" in line)

def password_hash(password):
    # rabbit_password_hashing_sha256: base64(salt + sha256(salt + password)), a 4-byte random salt.
    salt = os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()

def password(name):
    with open(os.path.join(folder, name)) as f:
        return f.readline().strip()

users = [("restaurant-monitor", "amqp_app_password", [], "app"), ("restaurant-monitor-ops", "amqp_ops_password", ["monitoring"], "monitoring")]
print(json.dumps({
    "users": [
        {"name": name, "password_hash": password_hash(password(file)), "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": tags}
        for name, file, tags, _ in users
    ],
    "vhosts": [{"name": "/"}],
    "permissions": [
        {"user": name, "vhost": "/", "configure": perm[f"{who}_configure"], "write": perm[f"{who}_write"], "read": perm[f"{who}_read"]}
        for name, _, _, who in users
    ],
}, indent=2))
PY
mv "$dir/rabbitmq-definitions.json.tmp" "$dir/rabbitmq-definitions.json"
echo "wrote $dir/rabbitmq-definitions.json (users restaurant-monitor, restaurant-monitor-ops)"
