#!/usr/bin/env bash
# Runs the across-nodes benchmark between two network namespaces joined by a veth pair, as two
# hosts would: `bun bench/run.ts --serve` in one, `--connect` in the other; then removes them.
# Needs root (ip netns). Extra arguments go to the --connect side (e.g. --quick --json PATH).
#   bash scripts/netns-bench.sh --quick --json /tmp/across.json
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "netns-bench: needs root to create network namespaces (ip netns); run it as root" >&2
  exit 2
fi
command -v ip >/dev/null || { echo "netns-bench: needs iproute2 (apt-get install iproute2)" >&2; exit 2; }

tag=$$
srv_ns="hp-srv-$tag"
cli_ns="hp-cli-$tag"
srv_if="hps$tag"
cli_if="hpc$tag"
srv_ip=10.231.0.1
cli_ip=10.231.0.2
port=47100
server_pid=""
log=$(mktemp)

cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  [ -n "$server_pid" ] && wait "$server_pid" 2>/dev/null || true
  ip netns del "$srv_ns" 2>/dev/null || true
  ip netns del "$cli_ns" 2>/dev/null || true
  rm -f "$log"
}
trap cleanup EXIT

ip netns add "$srv_ns"
ip netns add "$cli_ns"
ip link add "$srv_if" type veth peer name "$cli_if"
ip link set "$srv_if" netns "$srv_ns"
ip link set "$cli_if" netns "$cli_ns"
ip -n "$srv_ns" addr add "$srv_ip/24" dev "$srv_if"
ip -n "$cli_ns" addr add "$cli_ip/24" dev "$cli_if"
for ns in "$srv_ns" "$cli_ns"; do ip -n "$ns" link set lo up; done
ip -n "$srv_ns" link set "$srv_if" up
ip -n "$cli_ns" link set "$cli_if" up

UCX_TLS=tcp,self ip netns exec "$srv_ns" bun bench/run.ts --serve "$srv_ip:$port" > "$log" 2>&1 &
server_pid=$!
for _ in $(seq 1 200); do
  grep -q '^ready' "$log" && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$log" >&2; echo "netns-bench: server exited" >&2; exit 1; }
  sleep 0.05
done
grep -q '^ready' "$log" || { cat "$log" >&2; echo "netns-bench: server not ready in 10 s" >&2; exit 1; }
cat "$log"

UCX_TLS=tcp,self ip netns exec "$cli_ns" bun bench/run.ts --connect "$srv_ip:$port" "$@"
