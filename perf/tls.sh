#!/usr/bin/env bash
# What TLS and WebSocket cost: ringmq and Mosquitto, each over plain TCP,
# TLS, WebSocket and WebSocket over TLS on the same machine, the same
# ringmq-bench runs (--tls, --ws for those rows),
# brokers and transports alternated, medians of ROUNDS rounds.
# Certificates are made with the README's openssl commands (P-256).
#
#   perf/tls.sh                     # 3 rounds of 5 s
#   ROUNDS=5 DURATION=10s SCENARIOS="fan-in" perf/tls.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/lib.sh
ulimit -n 65536 2>/dev/null || true
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
SCENARIOS=${SCENARIOS:-"fan-in pairs-qos1 connections"}
CONFIGS=${CONFIGS:-"ringmq ringmq-tls ringmq-ws ringmq-wss mosquitto mosquitto-tls mosquitto-ws"}
work=perf/work/tls
mkdir -p "$work"
command -v mosquitto >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; }
cargo build --release --workspace >/dev/null 2>&1 || cargo build --release --workspace
bench=target/release/ringmq-bench
if [ ! -f "$work/server.pem" ]; then
  (cd "$work" &&
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 -subj /CN=ringmq-ca -keyout ca.key -out ca.pem 2>/dev/null &&
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost -keyout server.key -out server.csr 2>/dev/null &&
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
      -extfile <(printf 'subjectAltName=DNS:localhost,IP:127.0.0.1') -out server.pem 2>/dev/null)
  # Mosquitto run as root reads its key as user mosquitto.
  chmod 644 "$work/server.key"
fi

start() {
  case $1 in
    ringmq*)
      target/release/ringmq --listen 127.0.0.1:18850 --listen-tls 127.0.0.1:18851 \
        --listen-ws 127.0.0.1:18852 --listen-wss 127.0.0.1:18853 \
        --cert "$work/server.pem" --key "$work/server.key" --cores 2 --in-memory \
        --log-level warn --max-inflight 256 >"$work/broker.log" 2>&1 & ;;
    mosquitto*)
      cat >"$work/mosquitto.conf" <<CONF
per_listener_settings false
allow_anonymous true
max_inflight_messages 256
max_queued_messages 1000000
persistence false
listener 18850 127.0.0.1
listener 18851 127.0.0.1
certfile $PWD/$work/server.pem
keyfile $PWD/$work/server.key
listener 18852 127.0.0.1
protocol websockets
CONF
      mosquitto -c "$work/mosquitto.conf" >"$work/broker.log" 2>&1 & ;;
  esac
  pid=$!
  wait_port 18850 && wait_port 18851 && return 0
  echo "tls.sh: $1 did not start" >&2; cat "$work/broker.log" >&2; return 1
}
args_of() {
  case $1 in
    fan-in) echo "fan-in --publishers 8 --qos 0 --payload 64 --duration $DURATION";;
    pairs-qos1) echo "pairs --publishers 16 --qos 1 --payload 64 --inflight 64 --duration $DURATION";;
    connections) echo "connections --subscribers 2000 --ramp 0 --duration 3s";;
  esac
}
num() { grep -o "\"$2\":[0-9.]*" <<<"$1" | head -1 | cut -d: -f2 || true; }
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {if (NR==0) print "-"; else if (NR%2) print a[(NR+1)/2]; else printf "%.0f", (a[NR/2]+a[NR/2+1])/2}'; }
cpu_of() { awk '{print $14 + $15}' "/proc/$1/stat"; }
trap '[ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true' EXIT

declare -A res cpu
for round in $(seq "$ROUNDS"); do
  for s in $SCENARIOS; do
    order=$CONFIGS
    (( round % 2 == 0 )) && order=$(echo $CONFIGS | tr ' ' '\n' | tac | tr '\n' ' ')
    for c in $order; do
      start "$c"
      case $c in
        *-tls) t=(--broker 127.0.0.1:18851 --tls --cafile "$work/ca.pem");;
        *-ws) t=(--broker 127.0.0.1:18852 --ws);;
        *-wss) t=(--broker 127.0.0.1:18853 --ws --tls --cafile "$work/ca.pem");;
        *) t=(--broker 127.0.0.1:18850);;
      esac
      before=$(cpu_of "$pid")
      json=$("$bench" $(args_of "$s") "${t[@]}" --json --quiet --client-prefix "tls$round" || true)
      used=$(( $(cpu_of "$pid") - before ))
      kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
      if [ "$s" = connections ]; then
        n=$(num "$json" connected); sec=$(num "$json" publish_seconds)
        v=$(awk -v c="${n:-0}" -v t="${sec:-0}" 'BEGIN{ if (t>0) printf "%.0f", c/t; else print 0 }')
      else
        v=$(num "$json" received_per_sec); v=${v%.*}
      fi
      res[$s,$c]+="${v:-0} "; cpu[$s,$c]+="$used "
      echo "round $round $s $c: ${v:-failed} (lost $(num "$json" lost), cpu $used)" >&2
    done
  done
done
echo "| scenario | $(echo $CONFIGS | sed 's/ / | /g') | ringmq-tls/ringmq | ringmq-tls/mosquitto |"
echo "|---|$(for _ in $CONFIGS; do printf -- '---|'; done)---|---|"
for s in $SCENARIOS; do
  declare -A m=()
  row="| $s |"
  for c in $CONFIGS; do m[$c]=$(echo "${res[$s,$c]}" | median); row+=" ${m[$c]} |"; done
  r1=$(awk -v a="${m[ringmq-tls]:-0}" -v b="${m[ringmq]:-0}" 'BEGIN{ if (b>0) printf "%.2f", a/b; else print "-" }')
  r2=$(awk -v a="${m[ringmq-tls]:-0}" -v b="${m[mosquitto]:-0}" 'BEGIN{ if (b>0) printf "%.2f", a/b; else print "-" }')
  echo "$row $r1 | $r2 |"
done
echo
echo "Runs (msg/s or conn/s):"
for s in $SCENARIOS; do for c in $CONFIGS; do echo "- $s $c: ${res[$s,$c]}(broker CPU ticks: ${cpu[$s,$c]})"; done; done
