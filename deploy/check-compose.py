#!/usr/bin/env python3
"""Checks docker-compose.yml and deploy/Dockerfile against the code, since no Docker engine runs where the
tests run: the YAML parses; the expected services, healthchecks and start order are there; every binary and
subcommand a service runs exists and sits where the Dockerfile puts it; every environment variable a service
sets is read by the code; the Rust image is new enough for Cargo.lock; the build context leaves target/ out. Security: no
service but the migrate step connects as root or the migration user, each as the user the migrate step
grants; no guest and no password in any service's settings (passwords come from Docker secrets that
deploy/make-secrets.sh writes and git ignores); RabbitMQ publishes its ports on 127.0.0.1 only and loads
its users from a definitions secret.

Needs Python 3 and PyYAML (Debian: python3-yaml; elsewhere: pip install pyyaml). The Rust version check
also needs cargo (skipped with a note without it). Exit 0 when every check passes, 1 otherwise."""

import json
import pathlib
import re
import shutil
import subprocess
import sys

try:
    import yaml
except ImportError:
    sys.exit("deploy/check-compose.py needs PyYAML: apt-get install python3-yaml (or pip install pyyaml)")

ROOT = pathlib.Path(__file__).resolve().parent.parent
BINARIES = {"api-gateway", "ingest-worker", "report-worker"}
problems = []
notes = []


def check(condition, message):
    if not condition:
        problems.append(message)


def version(text):
    parts = [int(part) for part in re.findall(r"\d+", text)[:3]]
    return tuple(parts + [0] * (3 - len(parts)))


compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
dockerfile = (ROOT / "deploy/Dockerfile").read_text()
rust = "\n".join(p.read_text() for p in ROOT.glob("*/src/**/*.rs"))
services = compose.get("services", {})

# --- compose: the services and how they start ---
for name in ["mysql", "rabbitmq", "migrate", "api-gateway", "ingest-worker", "report-worker"]:
    check(name in services, f"service {name} is missing")
for name in ["mysql", "rabbitmq"]:
    check("healthcheck" in services.get(name, {}), f"{name} has no healthcheck")
check("mysql:8" in services.get("mysql", {}).get("image", ""), "the database is not MySQL 8")
check("management" in services.get("rabbitmq", {}).get("image", ""), "RabbitMQ image without the management UI")
check(any("15672" in str(p) for p in services.get("rabbitmq", {}).get("ports", [])), "management UI port 15672 not published")
worker = services.get("report-worker", {})
check("container_name" not in worker and "ports" not in worker, "report-worker cannot scale with a container_name or ports")
# `--scale report-worker=N` shares one report's shards among the copies: each keeps at most its memory
# budget of shard data, which must leave room under the container's limit for the shard being read.
def megabytes(text):
    match = re.fullmatch(r"(\d+)([MG])", str(text).strip())
    return int(match[1]) * (1024 if match[2] == "G" else 1) if match else None
worker_env = worker.get("environment", {})
budget = worker_env.get("APP__WORKER__MEMORY_BUDGET_MB")
limit = megabytes(worker.get("deploy", {}).get("resources", {}).get("limits", {}).get("memory", ""))
check(budget is not None and limit is not None, "report-worker sets no memory budget or no memory limit")
if budget is not None and limit is not None:
    check(int(budget) + 256 <= limit, f"report-worker's memory budget {budget} MB leaves under 256 MB of its {limit} MB limit")
check(re.search(r"APP__WORKER__SHARD_STORES", str(worker_env)), "report-worker does not say how reports are cut")
check("shard_queue" in rust and "x-priority" in rust, "the shard queues or their consumer priorities are gone from the code")

# --- Dockerfile: what it ships and how ---
for binary in BINARIES:
    check(re.search(rf"target/release/{binary}\b", dockerfile), f"the Dockerfile does not ship {binary}")
check(re.search(r"^USER\s+(?!root\b)\S", dockerfile, re.M), "the image runs as root")
check(re.search(r"^ENTRYPOINT \[", dockerfile, re.M), "ENTRYPOINT is not in exec form")
check("libmariadb3" in dockerfile and "cargo chef cook" in dockerfile, "runtime library or cached dependency layer missing")
copied_to = re.findall(r"^COPY --from=builder \S+ (\S+?)/?$", dockerfile, re.M)
dockerignore = ROOT / ".dockerignore"
ignored = dockerignore.read_text().split() if dockerignore.exists() else []
check(any(p.strip("/") == "target" for p in ignored), ".dockerignore does not leave target/ out of the build context")

# The image's compiler must build every locked dependency (cargo build --locked refuses otherwise).
image_rust = re.search(r"^ARG RUST_VERSION=(\S+)", dockerfile, re.M)
check(image_rust, "the Dockerfile has no ARG RUST_VERSION")
cargo = shutil.which("cargo")
if image_rust and cargo:
    meta = subprocess.run([cargo, "metadata", "--format-version", "1", "--locked"], cwd=ROOT, capture_output=True, text=True)
    if meta.returncode == 0:
        data = json.loads(meta.stdout)
        used = {node["id"] for node in data["resolve"]["nodes"]}
        needs = max(
            ((version(p["rust_version"]), p["name"]) for p in data["packages"] if p["id"] in used and p.get("rust_version")),
            default=((0, 0, 0), "nothing"),
        )
        check(
            version(image_rust.group(1)) >= needs[0],
            f"the Dockerfile builds with Rust {image_rust.group(1)}, but {needs[1]} needs {'.'.join(map(str, needs[0]))}",
        )
    else:
        notes.append(f"Rust version not checked: cargo metadata failed ({meta.stderr.strip().splitlines()[-1:]})")
elif image_rust:
    notes.append("Rust version not checked: no cargo on PATH")

# --- every service of our image: binary, subcommand, environment, mounts ---
for name, service in services.items():
    entrypoint = service.get("entrypoint")
    if not entrypoint:
        continue
    binary = pathlib.PurePosixPath(entrypoint[0])
    check(binary.name in BINARIES, f"{name}: runs {binary.name}, which the workspace does not build")
    check(str(binary.parent) in copied_to, f"{name}: runs {binary}, but the Dockerfile puts the binaries in {copied_to}")
    crate = "\n".join(p.read_text() for p in (ROOT / binary.name / "src").glob("**/*.rs")) if binary.name in BINARIES else ""
    for arg in service.get("command", []) or []:
        check(f'"{arg}"' in crate, f"{name}: {binary.name} has no subcommand or flag {arg!r}")
    if name != "migrate":
        deps = service.get("depends_on", {})
        for dep in ["mysql", "rabbitmq"]:
            check(deps.get(dep, {}).get("condition") == "service_healthy", f"{name} does not wait for a healthy {dep}")
        check(deps.get("migrate", {}).get("condition") == "service_completed_successfully", f"{name} does not wait for migrate")
    healthcheck = " ".join(map(str, (service.get("healthcheck") or {}).get("test", [])))
    if "curl" in healthcheck:
        check(re.search(r"apt-get install[^\n]*\bcurl\b", dockerfile), f"{name}: healthcheck uses curl, which the image lacks")
    for var in service.get("environment") or {}:
        if var.startswith("APP__"):
            # APP__SECTION__KEY sets section.key: both names must be fields of a settings struct.
            for part in var[len("APP__"):].lower().split("__"):
                check(re.search(rf"\bpub {part}\s*:", rust), f"{name}: {var} sets {part}, which no settings struct has")
        elif var == "RUST_LOG":
            check("env_logger" in rust, "RUST_LOG set but env_logger not used")
        else:
            check(f'"{var}"' in rust, f"{name}: {var} is not read by the code")
    for volume in service.get("volumes", []) or []:
        host = volume.split(":")[0]
        if host.startswith("./"):
            check((ROOT / host).exists(), f"{name}: mounts {host}, which does not exist")

# --- the gateway's tokens come from a Docker secret, and auth is not switched off ---
gateway = services.get("api-gateway", {})
gateway_env = gateway.get("environment") or {}
tokens_file = str(gateway_env.get("APP__AUTH__TOKENS_FILE", ""))
check(tokens_file.startswith("/run/secrets/"), "api-gateway: APP__AUTH__TOKENS_FILE is not a Docker secret (/run/secrets/…)")
secret_name = tokens_file.rsplit("/", 1)[-1]
gateway_secrets = [s if isinstance(s, str) else s.get("source") for s in gateway.get("secrets", []) or []]
check(secret_name in gateway_secrets, f"api-gateway: does not mount the secret {secret_name!r} its tokens file names")
check(secret_name in (compose.get("secrets") or {}), f"the secret {secret_name!r} is not defined at the top level")
check(str(gateway_env.get("APP__AUTH__DISABLED", "false")).lower() != "true", "api-gateway: auth is disabled")

# --- security: the users of the services (README, "Users and grants") ---
def url_user(url):
    """(user, has_password) of scheme://user[:password]@host/…, or (None, False) without a user."""
    match = re.match(r"^[a-z]+://([^@/]*)@", str(url))
    if not match:
        return None, False
    user, _, password = match.group(1).partition(":")
    return user, bool(password) or ":" in match.group(1)


rabbitmq = services.get("rabbitmq", {})
for port in rabbitmq.get("ports", []) or []:
    check(str(port).startswith("127.0.0.1:"), f"rabbitmq: port {port} is published beyond 127.0.0.1")
top_secrets = compose.get("secrets", {}) or {}
make_secrets = (ROOT / "deploy/make-secrets.sh").read_text() if (ROOT / "deploy/make-secrets.sh").exists() else ""
check(make_secrets, "deploy/make-secrets.sh (which makes the compose secrets) is missing")
secrets_ignore = ROOT / "deploy/secrets/.gitignore"
check(secrets_ignore.exists() and "*" in secrets_ignore.read_text().split(), "deploy/secrets/ is not ignored by git")
check(any(p.strip("/") == "deploy/secrets" for p in ignored), ".dockerignore does not leave deploy/secrets/ out of the image")
for name, secret in top_secrets.items():
    file = str((secret or {}).get("file", ""))
    check(file.startswith("deploy/secrets/"), f"secret {name}: its file {file!r} is not in deploy/secrets/")
    check(pathlib.PurePosixPath(file).name in make_secrets, f"secret {name}: deploy/make-secrets.sh does not write {file}")

# The definitions file RabbitMQ loads is a secret the broker gets.
conf_mounts = [v for v in rabbitmq.get("volumes", []) or [] if str(v).split(":")[1].startswith("/etc/rabbitmq/")]
confs = "\n".join((ROOT / str(v).split(":")[0]).read_text() for v in conf_mounts if (ROOT / str(v).split(":")[0]).exists())
loaded = re.search(r"^load_definitions\s*=\s*/run/secrets/(\S+)", confs, re.M)
check(loaded, "rabbitmq: no mounted config loads a definitions file from /run/secrets/")
if loaded:
    check(loaded.group(1) in (rabbitmq.get("secrets") or []), f"rabbitmq: the definitions secret {loaded.group(1)} is not given to it")

ROLES = {"api-gateway": "GATEWAY", "ingest-worker": "INGEST", "report-worker": "WORKER"}
DEFAULT_USERS = {"GATEWAY": "rm_gateway", "INGEST": "rm_ingest", "WORKER": "rm_worker"}
migrate_env = services.get("migrate", {}).get("environment") or {}
migration_user, _ = url_user(migrate_env.get("DATABASE_URL", ""))
check("--users" in (services.get("migrate", {}).get("command") or []), "migrate does not create the service users (--users)")


def secret_of(name, service, path):
    """The compose secret a /run/secrets/ path names, which the service must be given."""
    match = re.match(r"^/run/secrets/(\S+)$", str(path))
    check(match, f"{name}: {path} is not a Docker secret (/run/secrets/…)")
    if not match:
        return None
    check(match.group(1) in (service.get("secrets") or []), f"{name}: uses the secret {match.group(1)} but is not given it")
    check(match.group(1) in top_secrets, f"{name}: the secret {match.group(1)} is not defined")
    return match.group(1)


for name, service in services.items():
    if not service.get("entrypoint"):
        continue
    env = service.get("environment") or {}
    for var, value in env.items():
        check("guest" not in str(value), f"{name}: {var} uses guest")
        check(not ("PASSWORD" in var and not var.endswith("_FILE")), f"{name}: {var} holds a password in the compose file")
        if var.endswith("_URL"):
            _, has_password = url_user(value)
            check(not has_password, f"{name}: {var} has a password in it (use a *_PASSWORD_FILE secret)")
        if var.endswith("_PASSWORD_FILE"):
            secret_of(name, service, value)
    if name == "migrate":
        for role in ROLES.values():
            check(f"APP__DATABASE_USERS__{role}_PASSWORD_FILE" in env, f"migrate: no password file for the {role.lower()} user")
        continue
    db_user, _ = url_user(env.get("DATABASE_URL", ""))
    amqp_user, _ = url_user(env.get("AMQP_URL", ""))
    check(db_user and db_user != "root" and db_user != migration_user, f"{name}: connects to MySQL as {db_user!r} (root or the migration user)")
    if name in ("api-gateway", "report-worker") or "AMQP_URL" in env:
        check(amqp_user and amqp_user != "guest", f"{name}: connects to RabbitMQ as {amqp_user!r}")
        check("AMQP_PASSWORD_FILE" in env, f"{name}: its RabbitMQ password does not come from a secret")
    check("DATABASE_PASSWORD_FILE" in env, f"{name}: its MySQL password does not come from a secret")
    role = ROLES.get(name)
    if role:
        expected = migrate_env.get(f"APP__DATABASE_USERS__{role}_USER", DEFAULT_USERS[role])
        check(db_user == expected, f"{name}: connects as {db_user!r}, but the migrate step grants {expected!r} its rights")
        check(
            env.get("DATABASE_PASSWORD_FILE") == migrate_env.get(f"APP__DATABASE_USERS__{role}_PASSWORD_FILE"),
            f"{name}: its password file is not the one the migrate step sets its user's password from",
        )

for note in notes:
    print(f"note: {note}")
if problems:
    print("compose check failed:")
    for p in problems:
        print(f"- {p}")
    sys.exit(1)
print(f"compose check passed: {len(services)} services, Dockerfile ships {', '.join(sorted(BINARIES))}")
