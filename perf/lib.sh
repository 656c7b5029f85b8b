# Shared by the perf scripts (sourced).

# wait_port PORT [SECONDS]: waits until 127.0.0.1:PORT accepts a TCP
# connection (default 10 s); false if it never does.
wait_port() {
  local tries=$(( ${2:-10} * 20 ))
  for _ in $(seq "$tries"); do
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}
