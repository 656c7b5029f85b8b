#!/usr/bin/env bash
# Latency beside a busy neighbour: one QoS 1 publisher at 5k msg/s to one
# subscriber while a shell loop spins on the machine (as any co-located
# process would). ringmq pinned (--pin) and not (the default), with publisher and
# subscriber on the same shard and on different ones, beside Mosquitto.
# Prints p50/p99 (µs) and the broker's CPU (1/100 s per run), medians of
# ROUNDS rounds, configurations alternated.
#
#   perf/neighbour.sh                  # 3 rounds of 5 s
#   ROUNDS=5 DURATION=10s NEIGHBOURS=0 perf/neighbour.sh   # quiet host
#   ALT_BIN=/tmp/old/ringmq CONFIGS="nopin-cross alt-cross mosquitto" perf/neighbour.sh
#                                      # another ringmq build as alt-*, same rounds
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/lib.sh
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
NEIGHBOURS=${NEIGHBOURS:-1}
CONFIGS=${CONFIGS:-"pin-same pin-cross nopin-same nopin-cross mosquitto"}
work=perf/work
mkdir -p "$work"
command -v mosquitto >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; }
cargo build --release --workspace >/dev/null 2>&1 || cargo build --release --workspace
bench=target/release/ringmq-bench
port=18840

start() {
  case $1 in
    pin-*) target/release/ringmq --listen 127.0.0.1:$port --cores 2 --pin --data-dir "$work/nb-data" --log-level warn >"$work/nb.log" 2>&1 & ;;
    nopin-*) target/release/ringmq --listen 127.0.0.1:$port --cores 2 --data-dir "$work/nb-data" --log-level warn >"$work/nb.log" 2>&1 & ;;
    alt-*) "${ALT_BIN:?ALT_BIN names the other ringmq build}" --listen 127.0.0.1:$port --cores 2 --data-dir "$work/nb-data" --log-level warn >"$work/nb.log" 2>&1 & ;;
    mosquitto)
      printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' $port >"$work/nb-mosquitto.conf"
      mosquitto -c "$work/nb-mosquitto.conf" >"$work/nb.log" 2>&1 & ;;
  esac
  pid=$!
  wait_port "$port" 5 && return 0
  echo "neighbour.sh: $1 did not start" >&2; return 1
}
cpu_of() { awk '{print $14 + $15}' "/proc/$1/stat"; }
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {if (NR==0) print "-"; else if (NR%2) print a[(NR+1)/2]; else printf "%.0f", (a[NR/2]+a[NR/2+1])/2}'; }

spin=()
cleanup() { for p in "${spin[@]}"; do kill "$p" 2>/dev/null || true; done; [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq "$NEIGHBOURS"); do bash -c 'while :; do :; done' & spin+=($!); done

declare -A p50 p99 cpu
for round in $(seq "$ROUNDS"); do
  order=$CONFIGS
  (( round % 2 == 0 )) && order=$(echo $CONFIGS | tr ' ' '\n' | tac | tr '\n' ' ')
  for c in $order; do
    case $c in *-same) prefix=$(python3 perf/owner.py same 2);; *-cross) prefix=$(python3 perf/owner.py cross 2);; *) prefix=lat0;; esac
    start "$c"
    before=$(cpu_of "$pid")
    json=$("$bench" latency --broker 127.0.0.1:$port --rate 5000 --qos 1 --duration "$DURATION" --client-prefix "$prefix" --json --quiet || true)
    used=$(( $(cpu_of "$pid") - before ))
    kill "$pid"; wait "$pid" 2>/dev/null || true
    lat=$(grep -o '"latency_us":{[^}]*}' <<<"$json")
    a=$(grep -o '"p50":[0-9]*' <<<"$lat" | cut -d: -f2); b=$(grep -o '"p99":[0-9]*' <<<"$lat" | cut -d: -f2)
    p50[$c]+="${a:-0} "; p99[$c]+="${b:-0} "; cpu[$c]+="$used "
    echo "round $round $c: p50 ${a:-?} p99 ${b:-?} cpu $used" >&2
  done
done
echo "| broker | p50 µs | p99 µs | CPU (1/100 s) | runs (p99) |"
echo "|---|---|---|---|---|"
for c in $CONFIGS; do
  echo "| $c | $(echo "${p50[$c]}" | median) | $(echo "${p99[$c]}" | median) | $(echo "${cpu[$c]}" | median) | ${p99[$c]}|"
done
