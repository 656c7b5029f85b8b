#!/usr/bin/env bash
# What the ACL costs on the delivery path: ringmq without an ACL file and
# with one whose rules allow everything (every PUBLISH is checked; a
# subscription the rules grant whole skips the check per delivery), pairs
# QoS 0 and fan-out, alternated, medians of ROUNDS rounds.
#
#   perf/acl.sh                    # 3 rounds of 5 s
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/lib.sh
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
work=perf/work/acl
mkdir -p "$work"
cargo build --release --workspace >/dev/null 2>&1 || cargo build --release --workspace
printf 'topic readwrite #\npattern read users/%%u/#\ntopic deny never/#\n' >"$work/acl"
bench=target/release/ringmq-bench
start() {
  local extra=()
  [ "$1" = acl ] && extra=(--acl-file "$work/acl")
  target/release/ringmq --listen 127.0.0.1:18880 --cores 2 --in-memory --log-level warn "${extra[@]}" >"$work/b.log" 2>&1 &
  pid=$!; wait_port 18880
}
trap '[ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true' EXIT
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.0f", (a[NR/2]+a[NR/2+1])/2}'; }
declare -A r
for round in $(seq "$ROUNDS"); do
  for s in pairs fan-out; do
    for c in none acl; do
      start "$c"
      case $s in pairs) a=(pairs --publishers 16 --qos 0);; fan-out) a=(fan-out --subscribers 16 --qos 0);; esac
      v=$("$bench" "${a[@]}" --broker 127.0.0.1:18880 --duration "$DURATION" --json --quiet --client-prefix "acl$round" | grep -o '"received_per_sec":[0-9]*' | cut -d: -f2 || true)
      kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
      r[$s,$c]+="${v:-0} "
      echo "round $round $s $c: $v" >&2
    done
  done
done
echo "| scenario | no ACL | ACL that allows everything | ratio |"
echo "|---|---|---|---|"
for s in pairs fan-out; do
  a=$(echo "${r[$s,none]}" | median); b=$(echo "${r[$s,acl]}" | median)
  echo "| $s | $a | $b | $(awk -v a="$a" -v b="$b" 'BEGIN{printf "%.2f", b/a}') |"
done
