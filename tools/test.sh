#!/usr/bin/env bash
# Runs ringmq's whole test suite. Installs first what the interop tests
# drive ringmq with: Debian's mosquitto clients, and Python's paho-mqtt and
# prometheus_client (its text-format parser reads /metrics) in a virtual
# environment under target/.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v mosquitto_pub >/dev/null || ! command -v mosquitto_sub >/dev/null; then
  echo "tools/test.sh: installing mosquitto-clients" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq mosquitto-clients >/dev/null
fi
if ! command -v openssl >/dev/null; then
  echo "tools/test.sh: installing openssl (the TLS tests make certificates with it)" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq openssl >/dev/null
fi
# paho-mqtt goes into a virtual environment of the project's own, never
# into the system's Python; its python3 comes first on PATH for the tests.
venv=target/py-venv
if ! "$venv/bin/python3" -c 'import paho.mqtt, prometheus_client' 2>/dev/null; then
  echo "tools/test.sh: installing paho-mqtt and prometheus_client into $venv" >&2
  if ! python3 -m venv "$venv" 2>/dev/null; then
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$venv"
  fi
  "$venv/bin/python3" -m pip install -q 'paho-mqtt>=2,<3' 'prometheus_client>=0.20,<1'
fi
export PATH="$PWD/$venv/bin:$PATH"

# Tests that cannot run here (no root, no Docker daemon) say why in this
# file; cargo hides a passing test's output, so it is printed at the end.
skipped=${CARGO_TARGET_DIR:-target}/tmp/skipped.txt
mkdir -p "$(dirname "$skipped")" && rm -f "$skipped"
cargo test --workspace "$@"
if [ -s "$skipped" ]; then
  echo "tools/test.sh: skipped here:" >&2
  sort -u "$skipped" | sed 's/^/  /' >&2
fi
