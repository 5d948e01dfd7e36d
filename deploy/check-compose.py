#!/usr/bin/env python3
"""Checks docker-compose.yml and deploy/Dockerfile against the code, since no Docker engine runs where the
tests run: the YAML parses; the expected services, healthchecks and start order are there; every binary and
subcommand a service runs exists and sits where the Dockerfile puts it; every environment variable a service
sets is read by the code; the Rust image is new enough for Cargo.lock; the build context leaves target/ out.

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

for note in notes:
    print(f"note: {note}")
if problems:
    print("compose check failed:")
    for p in problems:
        print(f"- {p}")
    sys.exit(1)
print(f"compose check passed: {len(services)} services, Dockerfile ships {', '.join(sorted(BINARIES))}")
