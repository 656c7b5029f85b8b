#!/usr/bin/env bash
# What persistence costs, measured on this machine:
#  1. QoS 1 pairs to persistent subscribers (16 pairs, 64 B, 64 in flight):
#     ringmq in memory, --sync none, --sync interval=1s, --sync always, and
#     Mosquitto with `persistence true` (autosave defaults) and without;
#     RUNS interleaved runs each, median and every run printed.
#  2. A backlog of QUEUED QoS 1 messages of 100 B for one offline session:
#     the broker's RssAnon with it, then kill -9, and the restart: time to
#     listening, and what recovery says (records, MB/s, queued).
#  3. Acknowledged but lost: ringmq-bench kills each broker (SIGKILL) while
#     it takes a backlog, restarts it and counts what never came back.
# Usage: perf/durable.sh [RUNS=3] [DURATION=8s] [QUEUED=1000000] [KILLED=1000000]
#   LABELS="" skips section 1, KILL_LABELS="" section 3.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
DURATION=${DURATION:-8s}
QUEUED=${QUEUED:-1000000}
CORES=${CORES:-2}
command -v mosquitto >/dev/null || {
  echo "perf/durable.sh: installing mosquitto" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
}
cargo build --release --workspace >/dev/null 2>&1 || cargo build --release --workspace
bin=target/release/ringmq
bench=target/release/ringmq-bench
work=$(mktemp -d)
trap 'pkill -f "$work" 2>/dev/null || true; rm -rf "$work"' EXIT
port=18850

. perf/lib.sh
listening() { wait_port "$port" || { echo "broker did not listen" >&2; return 1; }; }

start() { # label
  rm -rf "$work/data" "$work/mosq"
  case $1 in
    memory) "$bin" --listen 127.0.0.1:$port --cores "$CORES" --in-memory --log-level warn --max-inflight 256 >"$work/$1.log" 2>&1 & ;;
    none|interval=1s|always)
      "$bin" --listen 127.0.0.1:$port --cores "$CORES" --data-dir "$work/data" --sync "$1" \
        --log-level warn --max-inflight 256 >"$work/$1.log" 2>&1 & ;;
    mosquitto|mosquitto-persist)
      mkdir -p "$work/mosq"
      {
        echo "listener $port 127.0.0.1"
        echo "allow_anonymous true"
        echo "max_inflight_messages 256"
        echo "max_queued_messages 1000000"
        if [ "$1" = mosquitto-persist ]; then
          echo "persistence true"
          echo "persistence_location $work/mosq/"
        else
          echo "persistence false"
        fi
      } >"$work/mosquitto.conf"
      mosquitto -c "$work/mosquitto.conf" >"$work/$1.log" 2>&1 & ;;
  esac
  echo $! >"$work/pid"
  listening
}

stop() { kill "$(cat "$work/pid")" 2>/dev/null || true; wait "$(cat "$work/pid")" 2>/dev/null || true; }

labels=${LABELS-"memory none interval=1s always mosquitto mosquitto-persist"}
declare -A results
for run in $(seq "$RUNS"); do
  for l in $labels; do
    start "$l"
    out=$("$bench" pairs --broker 127.0.0.1:$port --publishers 16 --qos 1 --payload 64 \
      --inflight 64 --duration "$DURATION" --persistent --quiet --json 2>/dev/null || echo '{}')
    stop
    r=$(python3 -c 'import json,sys
d=json.loads(sys.argv[1] or "{}")
print("%s/%s/%s" % (round(d.get("received_per_sec", 0)), d.get("lost", "?"), d.get("latency_us", {}).get("p99", "?")))' "$out")
    results[$l]="${results[$l]:-} $r"
  done
done

[ -n "$labels" ] && echo "## QoS 1 pairs to persistent subscribers ($(nproc) cores, ringmq --cores $CORES, $DURATION, $RUNS runs)"
[ -n "$labels" ] && printf '\n| broker | median msg/s | runs (msg/s / lost / p99 µs) |\n|---|---|---|\n'
for l in $labels; do
  med=$(for x in ${results[$l]}; do echo "${x%%/*}"; done | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  echo "| $l | $med | ${results[$l]} |"
done
echo

# 2. Backlog, memory and recovery.
rm -rf "$work/data"
"$bin" --listen 127.0.0.1:$port --cores "$CORES" --data-dir "$work/data" --sync none --log-level info \
  --max-queued-messages $((QUEUED * 2)) --max-queued-bytes 64000000000 >"$work/fill.log" 2>&1 &
echo $! >"$work/pid"
listening
before=$(awk '/RssAnon/ {print $2}' "/proc/$(cat "$work/pid")/status")
"$bench" backlog --broker 127.0.0.1:$port --count "$QUEUED" --qos 1 --inflight 256 \
  --payload 100 --leave-backlog --quiet --json >/dev/null 2>&1
after=$(awk '/RssAnon/ {print $2}' "/proc/$(cat "$work/pid")/status")
old=$(cat "$work/pid")
kill -9 "$old"; wait "$old" 2>/dev/null || true
# A killed broker with gigabytes mapped takes a while to go; the new one
# must not be timed against the old one's socket.
while [ -e "/proc/$old" ]; do sleep 0.05; done
logsize=$(du -sm "$work/data" | cut -f1)
t0=$(date +%s.%N)
"$bin" --listen 127.0.0.1:$port --cores "$CORES" --data-dir "$work/data" --sync none --log-level info \
  --max-queued-messages $((QUEUED * 2)) --max-queued-bytes 64000000000 >"$work/restart.log" 2>&1 &
echo $! >"$work/pid"
for _ in $(seq 1200); do grep -q "listening on" "$work/restart.log" && break; sleep 0.05; done
t1=$(date +%s.%N)
rec_rss=$(awk '/RssAnon/ {print $2}' "/proc/$(cat "$work/pid")/status")
stop
echo "## $QUEUED queued QoS 1 messages of 100 B, one offline session"
echo
echo "- RssAnon: $((before / 1024)) MiB idle, $((after / 1024)) MiB with the backlog ($(( (after - before) * 1024 / QUEUED )) B per message); $((rec_rss / 1024)) MiB after recovery"
echo "- data dir after kill -9: $logsize MB"
echo "- restart to listening: $(python3 -c "print(round($t1 - $t0, 2))") s"
grep "log recovered" "$work/restart.log" | sed 's/^.*log recovered/- recovered:/'

# 3. Acknowledged but lost across SIGKILL: ringmq-bench starts each broker,
# kills it 1 s into publishing KILLED QoS 1 messages to an offline
# persistent session, starts it again and counts what was acknowledged and
# never delivered.
KILLED=${KILLED:-1000000}
kill_labels=${KILL_LABELS-"none always mosquitto-persist"}
[ -z "$kill_labels" ] && exit 0
echo
echo "## Acknowledged but lost across kill -9 (backlog of up to $KILLED QoS 1, killed 1 s into publishing)"
echo
echo "| broker | acknowledged | lost | restart s |"
echo "|---|---|---|---|"
for label in $kill_labels; do
  rm -rf "$work/data" "$work/mosq"
  case $label in
    mosquitto-persist)
      mkdir -p "$work/mosq"
      printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages %s\npersistence true\npersistence_location %s/\n' \
        "$port" "$((KILLED * 2))" "$work/mosq" >"$work/mosquitto.conf"
      cmd="mosquitto -c $work/mosquitto.conf" ;;
    *) cmd="$bin --listen 127.0.0.1:$port --cores $CORES --data-dir $work/data --sync $label --max-queued-messages $((KILLED * 2))" ;;
  esac
  json=$("$bench" backlog --broker 127.0.0.1:$port --count "$KILLED" --qos 1 --kill-after 1s \
    --restart-cmd "$cmd" --drain 3s --quiet --json 2>/dev/null || true)
  acked=$(echo "$json" | sed -n 's/.*"acked":\([0-9]*\).*/\1/p')
  lost=$(echo "$json" | sed -n 's/.*"lost":\([0-9]*\).*/\1/p')
  rs=$(echo "$json" | sed -n 's/.*"restart_seconds":\([0-9.]*\).*/\1/p')
  echo "| $label | ${acked:-?} | ${lost:-?} | ${rs:-?} |"
done
