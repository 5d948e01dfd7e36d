#!/usr/bin/env bash
# The test command of the README: every test of the workspace, against a real MariaDB and RabbitMQ
# (installed and started first when missing), plus the format and lint gates.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/services.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
