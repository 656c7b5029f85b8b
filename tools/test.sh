#!/usr/bin/env bash
# Runs ringmq's whole test suite. Installs first what the interop tests
# drive ringmq with: Debian's mosquitto clients and Python's paho-mqtt.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v mosquitto_pub >/dev/null || ! command -v mosquitto_sub >/dev/null; then
  echo "tools/test.sh: installing mosquitto-clients" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq mosquitto-clients >/dev/null
fi
if ! python3 -c 'import paho.mqtt' 2>/dev/null; then
  echo "tools/test.sh: installing paho-mqtt" >&2
  python3 -m pip install -q 'paho-mqtt>=2,<3'
fi

cargo test --workspace "$@"
