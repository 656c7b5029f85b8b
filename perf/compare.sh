#!/usr/bin/env bash
# Runs ringmq-bench scenarios against ringmq, Mosquitto and rumqttd on
# loopback, alternating brokers, several rounds, and writes a table of
# medians and ratios to perf/results/<date>-<host>.md with latency plots.
#
#   perf/compare.sh                 # every scenario, 3 rounds, 10 s each
#   ROUNDS=5 DURATION=20s perf/compare.sh
#   SCENARIOS="fan-in pairs" BROKERS="ringmq mosquitto" perf/compare.sh
#   TAG=after perf/compare.sh    # perf/results/<date>-<host>-after.md
#   BASE_BIN=/path/to/old/ringmq BROKERS="ringmq ringmq-base" perf/compare.sh
#                                 # before/after of two ringmq builds, same run
#   SCENARIOS="fan-out-8 slow-consumer" perf/compare.sh
#                                 # what one subscriber that never reads costs
#
# Installs what is missing: Debian's mosquitto, rumqttd (cargo install).
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/lib.sh

ulimit -n 65536 2>/dev/null || true
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CORES=${CORES:-2}
SCENARIOS=${SCENARIOS:-"fan-in pairs pairs-qos1 latency fan-out connections backlog"}
BROKERS=${BROKERS:-"ringmq mosquitto rumqttd"}
work=perf/work
mkdir -p "$work" perf/results
date=$(date +%Y-%m-%d)
host=$(hostname -s 2>/dev/null || echo host)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
# TAG=x keeps a second run of the same day from replacing the first.
name=${date}-${host}${TAG:+-$TAG}
out=perf/results/$name.md

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if [[ $BROKERS == *mosquitto* ]] && ! command -v mosquitto >/dev/null; then
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq mosquitto >/dev/null
fi
if [[ $BROKERS == *rumqttd* ]] && ! command -v rumqttd >/dev/null; then
  cargo install rumqttd --locked || cargo install rumqttd
fi
cargo build --release --workspace >/dev/null 2>&1 || cargo build --release --workspace
bench=target/release/ringmq-bench

port_of() { case $1 in ringmq) echo 18830;; mosquitto) echo 18831;; rumqttd) echo 18832;; ringmq-base) echo 18833;; esac; }

start_broker() {
  local b=$1 port; port=$(port_of "$b")
  case $b in
    ringmq|ringmq-base)
      local bin=target/release/ringmq
      [ "$b" = ringmq-base ] && bin=${BASE_BIN:?BASE_BIN names the ringmq binary to compare with}
      rm -rf "$work/$b-data"
      "$bin" --listen 127.0.0.1:$port --cores "$CORES" \
        --data-dir "$work/$b-data" --log-level warn --max-inflight 256 >"$work/$b.log" 2>&1 &
      ;;
    mosquitto)
      cat >"$work/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
max_inflight_messages 256
max_queued_messages 1000000
persistence false
CONF
      mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
      ;;
    rumqttd)
      cat >"$work/rumqttd.toml" <<CONF
id = 0
[router]
id = 0
max_connections = 100010
max_outgoing_packet_count = 256
max_segment_size = 104857600
max_segment_count = 10
[v4.1]
name = "v4-1"
listen = "127.0.0.1:$port"
next_connection_delay_ms = 0
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = 1048576
max_inflight_count = 256
dynamic_filters = true
CONF
      rumqttd --config "$work/rumqttd.toml" >"$work/rumqttd.log" 2>&1 &
      ;;
  esac
  echo $! >"$work/$b.pid"
  wait_port "$port" && return 0
  echo "compare.sh: $b did not start" >&2
  return 1
}

stop_broker() {
  local pid; pid=$(cat "$work/$1.pid" 2>/dev/null || true)
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
}
trap 'for b in $BROKERS; do stop_broker $b; done' EXIT

args_of() {
  case $1 in
    fan-in) echo "fan-in --publishers 8 --qos 0 --payload 64 --duration $DURATION";;
    pairs) echo "pairs --publishers 16 --qos 0 --payload 64 --duration $DURATION";;
    pairs-qos1) echo "pairs --publishers 16 --qos 1 --payload 64 --inflight 64 --duration $DURATION";;
    latency) echo "latency --rate 5000 --qos 1 --payload 64 --duration $DURATION";;
    fan-out) echo "fan-out --subscribers 16 --qos 0 --payload 64 --duration $DURATION";;
    # The same load with and without one subscriber that never reads.
    fan-out-8) echo "fan-out --subscribers 8 --qos 0 --payload 64 --rate 20000 --duration $DURATION";;
    slow-consumer) echo "slow-consumer --subscribers 8 --qos 0 --payload 64 --rate 20000 --duration $DURATION";;
    connections) echo "connections --subscribers 5000 --ramp 0 --duration 3s";;
    backlog) echo "backlog --count 100000 --qos 1 --payload 64";;
  esac
}

metric_of() {
  case $1 in
    latency) echo p99;;
    connections) echo conn_per_sec;;
    backlog) echo drain_per_sec;;
    *) echo received_per_sec;;
  esac
}

# CPU time the host took from this VM so far (steal, 1/100 s, all vCPUs):
# runs with much of it measured the host's other tenants, not the broker.
steal() { awk '/^cpu /{print $9}' /proc/stat; }

# Pulls a number out of the one-line JSON.
num() { grep -o "\"$2\":[0-9.]*" <<<"$1" | head -1 | cut -d: -f2; }

declare -A results
for round in $(seq "$ROUNDS"); do
  for s in $SCENARIOS; do
    order=$BROKERS
    # Alternate the order every round so no broker always runs first.
    (( round % 2 == 0 )) && order=$(echo $BROKERS | tr ' ' '\n' | tac | tr '\n' ' ')
    for b in $order; do
      start_broker "$b"
      plot=()
      [ "$s" = latency ] && [ "$round" = 1 ] && plot=(--plot "perf/results/$name-latency-$b.svg" --hdr-out "$work/latency-$b.hgrm")
      stolen=$(steal)
      json=$("$bench" $(args_of "$s") --broker 127.0.0.1:$(port_of "$b") --json --quiet "${plot[@]}" --client-prefix "cmp$round" || true)
      stolen=$(( $(steal) - stolen ))
      stop_broker "$b"
      case $(metric_of "$s") in
        p99) v=$(grep -o '"latency_us":{[^}]*}' <<<"$json" | grep -o '"p99":[0-9]*' | cut -d: -f2);;
        conn_per_sec) c=$(num "$json" connected); t=$(num "$json" publish_seconds); v=$(awk -v c="${c:-0}" -v t="${t:-0}" 'BEGIN{ if (t>0) printf "%.0f", c/t; else print 0 }');;
        drain_per_sec) c=$(num "$json" expected); t=$(num "$json" drain_seconds); v=$(awk -v c="${c:-0}" -v t="${t:-0}" 'BEGIN{ if (t>0) printf "%.0f", c/t; else print 0 }');;
        *) v=$(num "$json" received_per_sec);;
      esac
      lost=$(num "$json" lost); dups=$(num "$json" duplicates)
      results[$s,$b]+="${v:-0} "
      p99=$(grep -o '"latency_us":{[^}]*}' <<<"$json" | grep -o '"p99":[0-9]*' | cut -d: -f2)
      results[$s,$b,p99]+="${p99:-0} "
      results[$s,$b,loss]+="${lost:-?}/${dups:-?} "
      results[$s,$b,runs]+="${v:-0} (${stolen}) "
      echo "round $round $s $b: ${v:-failed} (lost/dups ${lost:-?}/${dups:-?}, steal $stolen)" >&2
    done
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {if (NR==0) print 0; else if (NR%2) print a[(NR+1)/2]; else printf "%.1f", (a[NR/2]+a[NR/2+1])/2}'; }

{
  echo "# ringmq vs peers, $date on $host (commit $commit)"
  echo
  echo "Machine: $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB; broker and load share the cores."
  echo "ringmq --cores $CORES; Mosquitto $(mosquitto -h 2>/dev/null | head -1 | grep -o '[0-9.]*' | head -1 || true); rumqttd $(rumqttd --version 2>/dev/null || true)."
  echo "$ROUNDS rounds, brokers alternated; each cell is the median. Runs of $DURATION."
  echo "Throughput cells: messages received per second (higher is better); latency: p99 µs"
  echo "(lower is better); connections: connections per second; backlog: drain msg/s."
  echo
  printf "| scenario | metric |"; for b in $BROKERS; do printf " %s |" "$b"; done
  for b in $BROKERS; do [ "$b" = ringmq ] || printf " ringmq/%s |" "$b"; done; echo
  printf "|---|---|"; for b in $BROKERS; do printf -- "---|"; done
  for b in $BROKERS; do [ "$b" = ringmq ] || printf -- "---|"; done; echo
  for s in $SCENARIOS; do
    printf "| %s | %s |" "$s" "$(metric_of "$s")"
    declare -A med=()
    for b in $BROKERS; do med[$b]=$(echo "${results[$s,$b]}" | median); printf " %s |" "${med[$b]}"; done
    for b in $BROKERS; do
      [ "$b" = ringmq ] && continue
      printf " %s |" "$(awk -v a="${med[ringmq]:-0}" -v b="${med[$b]:-0}" 'BEGIN{ if (b>0) printf "%.2f", a/b; else print "-" }')"
    done
    echo
  done
  echo
  echo "Latency p99 (µs) of the same runs, medians:"
  echo
  printf "| scenario |"; for b in $BROKERS; do printf " %s |" "$b"; done; echo
  printf "|---|"; for b in $BROKERS; do printf -- "---|"; done; echo
  for s in $SCENARIOS; do
    printf "| %s |" "$s"
    for b in $BROKERS; do printf " %s |" "$(echo "${results[$s,$b,p99]}" | median)"; done
    echo
  done
  echo
  echo "Every run in order, with the CPU time the host stole from this VM during it"
  echo "(1/100 s over all vCPUs; tens or more mean a busy host and a noisy run):"
  echo
  for s in $SCENARIOS; do for b in $BROKERS; do echo "- $s $b: ${results[$s,$b,runs]}"; done; done
  echo
  echo "Loss/duplicates per run (lost/dups):"
  echo
  for s in $SCENARIOS; do for b in $BROKERS; do echo "- $s $b: ${results[$s,$b,loss]}"; done; done
  echo
  echo "Scenario flags:"
  echo
  for s in $SCENARIOS; do echo "- $s: \`ringmq-bench $(args_of "$s")\`"; done
} >"$out"
echo "wrote $out" >&2
