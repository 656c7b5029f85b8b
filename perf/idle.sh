#!/usr/bin/env bash
# What an idle client costs: RSS of the broker before and while N clients
# stay connected (ringmq-bench connections), per client, and how fast they
# connected; ringmq (and ALT_BIN, another build, as ringmq-alt) beside
# Mosquitto, alternated, ROUNDS rounds.
#
#   perf/idle.sh                   # 10,000 clients, 3 rounds
#   N=20000 ALT_BIN=/tmp/old/ringmq perf/idle.sh
#   SETTLE=9 DURATION=11s perf/idle.sh   # RSS read 9 s after the clients start (quiet readers park after 2-4 s)
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/lib.sh
ulimit -n 65536 2>/dev/null || true
N=${N:-10000}
ROUNDS=${ROUNDS:-3}
CONFIGS=${CONFIGS:-"ringmq mosquitto"}
[ -n "${ALT_BIN:-}" ] && CONFIGS="ringmq ringmq-alt mosquitto"
work=perf/work/idle
mkdir -p "$work"
cargo build --release --workspace >/dev/null 2>&1 || cargo build --release --workspace
bench=target/release/ringmq-bench
port=18860
start() {
  case $1 in
    ringmq) target/release/ringmq --listen 127.0.0.1:$port --cores 2 --in-memory --log-level warn >"$work/b.log" 2>&1 & ;;
    ringmq-alt) "$ALT_BIN" --listen 127.0.0.1:$port --cores 2 --in-memory --log-level warn >"$work/b.log" 2>&1 & ;;
    mosquitto)
      printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_connections -1\n' $port >"$work/m.conf"
      mosquitto -c "$work/m.conf" >"$work/b.log" 2>&1 & ;;
  esac
  pid=$!; wait_port $port || { cat "$work/b.log"; exit 1; }
}
rss() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }
trap '[ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true' EXIT
echo "| broker | round | RSS before (KB) | RSS with $N (KB) | per client (KB) | conn/s |"
echo "|---|---|---|---|---|---|"
for round in $(seq "$ROUNDS"); do
  for c in $CONFIGS; do
    start "$c"; sleep 0.5
    before=$(rss "$pid")
    "$bench" connections --broker 127.0.0.1:$port --subscribers "$N" --ramp 0 --duration "${DURATION:-8s}" \
      --json --quiet --client-prefix "idle$round" >"$work/out.json" 2>/dev/null &
    bp=$!
    sleep "${SETTLE:-6}"
    during=$(rss "$pid")
    wait "$bp" || true
    n=$(grep -o '"connected":[0-9]*' "$work/out.json" | cut -d: -f2)
    t=$(grep -o '"publish_seconds":[0-9.]*' "$work/out.json" | cut -d: -f2)
    rate=$(awk -v c="${n:-0}" -v t="${t:-0}" 'BEGIN{ if (t>0) printf "%.0f", c/t; else print 0 }')
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
    echo "| $c | $round | $before | $during | $(awk -v a="$before" -v b="$during" -v n="${n:-1}" 'BEGIN{printf "%.2f", (b-a)/n}') | $rate (${n:-0} connected) |"
  done
done
