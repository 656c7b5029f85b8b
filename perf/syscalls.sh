#!/usr/bin/env bash
# What one message costs the broker in the kernel: syscalls and context
# switches per message, and CPU, for one QoS 1 publisher at RATE msg/s to one
# subscriber, publisher and subscriber on the same shard or on different
# ones. Syscalls are counted on the syscall tracepoints (`perf stat`,
# Debian's linux-perf), context switches from /proc per thread; the CPU
# figure (1/100 s) is taken under `perf stat`, so compare it only with rows
# of the same run.
#
#   perf/syscalls.sh                                  # target/release/ringmq, same and cross
#   BINS="/tmp/old/ringmq target/release/ringmq mosquitto" ROUNDS=2 perf/syscalls.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/lib.sh
ROUNDS=${ROUNDS:-1}
RATE=${RATE:-5000}
DURATION=${DURATION:-5}
BINS=${BINS:-target/release/ringmq}
MODES=${MODES:-"same cross"}
work=perf/work
mkdir -p "$work"
command -v perf >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null; }
cargo build --release --workspace >/dev/null 2>&1 || cargo build --release --workspace
bench=target/release/ringmq-bench
port=18850
events=raw_syscalls:sys_enter,syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_epoll_wait
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null || true' EXIT
switches() { cat /proc/"$1"/task/*/status | awk '/^(non)?voluntary_ctxt_switches/ {n += $2} END {print n}'; }
cpu_of() { awk '{print $14 + $15}' "/proc/$1/stat"; }

echo "| broker | pairing | syscalls/msg | io_uring_enter/msg | epoll_wait/msg | switches/msg | CPU | p50 µs | p99 µs |"
echo "|---|---|---|---|---|---|---|---|---|"
for round in $(seq "$ROUNDS"); do
  for b in $BINS; do
    for mode in $MODES; do
      rm -rf "$work/sc-data"
      if [ "$b" = mosquitto ]; then
        [ "$mode" = same ] || continue
        printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' $port >"$work/sc-mosquitto.conf"
        mosquitto -c "$work/sc-mosquitto.conf" >"$work/sc.log" 2>&1 &
      else
        "$b" --listen 127.0.0.1:$port --cores 2 --data-dir "$work/sc-data" --log-level warn >"$work/sc.log" 2>&1 &
      fi
      pid=$!
      wait_port "$port" 5 || { echo "syscalls.sh: $b did not start" >&2; exit 1; }
      prefix=$(python3 perf/owner.py "$mode" 2)
      perf stat -x, -e "$events" -p "$pid" -o "$work/sc-perf.out" -- sleep $((DURATION + 1)) &
      pp=$!
      s0=$(switches "$pid"); c0=$(cpu_of "$pid")
      json=$("$bench" latency --broker 127.0.0.1:$port --rate "$RATE" --qos 1 --duration "${DURATION}s" \
        --client-prefix "$prefix" --json --quiet || true)
      s1=$(switches "$pid"); c1=$(cpu_of "$pid")
      wait "$pp" || true
      kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
      n=$(grep -o '"received":[0-9]*' <<<"$json" | head -1 | cut -d: -f2)
      n=${n:-0}; [ "$n" -gt 0 ] || { echo "syscalls.sh: $b $mode received nothing" >&2; continue; }
      per() { awk -F, -v e="$1" -v n="$n" '$3 == e {printf "%.2f", $1 / n}' "$work/sc-perf.out"; }
      lat=$(grep -o '"latency_us":{[^}]*}' <<<"$json")
      p50=$(grep -o '"p50":[0-9]*' <<<"$lat" | cut -d: -f2); p99=$(grep -o '"p99":[0-9]*' <<<"$lat" | cut -d: -f2)
      pairing=$mode; [ "$b" = mosquitto ] && pairing="one thread"
      echo "| $b | $pairing | $(per raw_syscalls:sys_enter) | $(per syscalls:sys_enter_io_uring_enter) | $(per syscalls:sys_enter_epoll_wait) | $(awk -v a="$s0" -v b="$s1" -v n="$n" 'BEGIN {printf "%.2f", (b - a) / n}') | $((c1 - c0)) | $p50 | $p99 |"
    done
  done
done
