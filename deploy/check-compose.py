#!/usr/bin/env python3
"""Checks docker-compose.yml and deploy/Dockerfile against the code, since no Docker engine runs where the
tests run: the YAML parses; the expected services, healthchecks and start order are there; every binary and
subcommand a service runs exists; every environment variable a service sets is read by the code.

Needs PyYAML (Debian: python3-yaml). Exit 0 when every check passes."""

import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
BINARIES = {"api-gateway", "ingest-worker", "report-worker"}
problems = []


def check(condition, message):
    if not condition:
        problems.append(message)


compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
dockerfile = (ROOT / "deploy/Dockerfile").read_text()
rust = "\n".join(p.read_text() for p in ROOT.glob("*/src/**/*.rs"))
services = compose.get("services", {})

for name in ["mysql", "rabbitmq", "migrate", "api-gateway", "ingest-worker", "report-worker"]:
    check(name in services, f"service {name} is missing")
for name in ["mysql", "rabbitmq"]:
    check("healthcheck" in services.get(name, {}), f"{name} has no healthcheck")
check("mysql:8" in services.get("mysql", {}).get("image", ""), "the database is not MySQL 8")
check("management" in services.get("rabbitmq", {}).get("image", ""), "RabbitMQ image without the management UI")
check(any("15672" in str(p) for p in services.get("rabbitmq", {}).get("ports", [])), "management UI port 15672 not published")
worker = services.get("report-worker", {})
check("container_name" not in worker and "ports" not in worker, "report-worker cannot scale with a container_name or ports")

for binary in BINARIES:
    check(re.search(rf"target/release/{binary}\b", dockerfile), f"the Dockerfile does not ship {binary}")
check(re.search(r"^USER\s+(?!root)", dockerfile, re.M), "the image runs as root")
check(re.search(r'^ENTRYPOINT \[', dockerfile, re.M), "ENTRYPOINT is not in exec form")
check("libmariadb3" in dockerfile and "cargo chef cook" in dockerfile, "runtime library or cached dependency layer missing")

for name, service in services.items():
    entrypoint = service.get("entrypoint")
    if not entrypoint:
        continue
    binary = pathlib.PurePath(entrypoint[0]).name
    check(binary in BINARIES, f"{name}: runs {binary}, which the workspace does not build")
    main = (ROOT / binary / "src/main.rs").read_text() if binary in BINARIES else ""
    for arg in service.get("command", []) or []:
        check(f'"{arg}"' in main, f"{name}: {binary} has no subcommand or flag {arg!r}")
    if name not in ("migrate",):
        deps = service.get("depends_on", {})
        for dep in ["mysql", "rabbitmq"]:
            check(deps.get(dep, {}).get("condition") == "service_healthy", f"{name} does not wait for a healthy {dep}")
        check(deps.get("migrate", {}).get("condition") == "service_completed_successfully", f"{name} does not wait for migrate")
    for var in (service.get("environment") or {}):
        if var.startswith("APP__"):
            key = var[len("APP__"):].split("__")[-1].lower()
            check(re.search(rf"\b{key}\b", rust), f"{name}: {var} sets {key}, which no settings struct has")
        elif var == "RUST_LOG":
            check("env_logger" in rust, "RUST_LOG set but env_logger not used")
        else:
            check(f'"{var}"' in rust, f"{name}: {var} is not read by the code")
    for volume in service.get("volumes", []) or []:
        host = volume.split(":")[0]
        if host.startswith("./"):
            check((ROOT / host).exists(), f"{name}: mounts {host}, which does not exist")

if problems:
    print("compose check failed:")
    for p in problems:
        print(f"- {p}")
    sys.exit(1)
print(f"compose check passed: {len(services)} services, Dockerfile ships {', '.join(sorted(BINARIES))}")
