#!/usr/bin/env bash
# bench/idle-max.sh [N]: one `coapws serve --ws` holding N idle WebSocket connections (default:
# as many as the hard RLIMIT_NOFILE allows, less 500), its RSS before, while held and after, and
# a second client's latency (1 x 1, 5 s) alone and while the N are held.
#
# Server pinned to CPU 0, both clients to CPU 1. Needs a release build
# (cargo build --release -p coapws-cli) and jq. 100k connections need a hard limit above 100k.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/coapws
[ -x "$bin" ] || { echo "bench/idle-max.sh: $bin is missing (cargo build --release -p coapws-cli)" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)"
n=${1:-$(( $(ulimit -n) - 500 ))}
dir=$(mktemp -d)
p=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
taskset -c 0 "$bin" serve --ws "127.0.0.1:$p" > "$dir/server.log" 2>&1 & spid=$!
trap 'kill $spid 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break; sleep 0.1; done
rss() { awk '/^VmRSS/ {print $2}' "/proc/$spid/status"; }
lat() {
  taskset -c 1 "$bin" bench "coap+ws://127.0.0.1:$p/hello" -c 1 -n 1 -d 5 --json |
    jq -c '{rate, p50_us: .latency_us.p50, p99_us: .latency_us.p99, errors}'
}
base=$(rss)
echo "RLIMIT_NOFILE $(ulimit -n); server RSS before: $base KB"
echo "second client alone: $(lat)"
taskset -c 1 "$bin" bench "coap+ws://127.0.0.1:$p/hello" --idle "$n" -d 40 > "$dir/idle.out" 2>&1 & bpid=$!
for _ in $(seq 1200); do grep -q '^idle: .* up ' "$dir/idle.out" && break; sleep 0.1; done
sleep 2
held=$(rss)
grep '^idle:' "$dir/idle.out" | head -1
echo "server RSS holding $n: $held KB ($(( (held - base) * 1000 / n )) bytes per connection)"
echo "second client while they are held: $(lat)"
echo "and again: $(lat)"
wait "$bpid" || true
sleep 2
echo "server RSS after they closed: $(rss) KB"
