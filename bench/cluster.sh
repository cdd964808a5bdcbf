#!/usr/bin/env bash
# Cluster benchmark: a device (examples/device.rs) connected to instance A of a two-instance
# `coapws serve --cluster` pair with a nats-server, loaded with `coapws bench` by Uri-Host
# through A (the device is local) and through B (across the NATS hop), interleaved, ROUNDS
# times. Servers, NATS and the device on CPU 0, the load on CPU 1 (taskset). Prints one line
# per run: where, requests/s, p50, p99, and the CPU time the serving side (both instances,
# NATS and the device) spent per request, from /proc/PID/stat.
#
# Usage: bench/cluster.sh [SECONDS] [ROUNDS] [CONNECTIONS] [IN_FLIGHT]
# Needs: cargo build --release -p coapws-cli -p coapws --bins --example device; scripts/install-peers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
rounds=${2:-3}
conns=${3:-16}
depth=${4:-16}
bin=target/release/coapws
dev=target/release/examples/device
nats=target/peers/venv/bin/nats-server
for f in "$bin" "$dev" "$nats"; do
  [ -x "$f" ] || { echo "bench/cluster.sh: $f is missing (see the usage line)" >&2; exit 1; }
done
dir=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$dir"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
np=$(port); pa=$(port); pb=$(port)
taskset -c 0 "$nats" -js -sd "$dir/js" -a 127.0.0.1 -p "$np" > "$dir/nats.log" 2>&1 &
pids+=($!)
sleep 0.5
for i in a b; do
  p=$pa; [ "$i" = b ] && p=$pb
  taskset -c 0 "$bin" serve --rd-proxy-domain d.example --cluster "nats://127.0.0.1:$np" \
    --cluster-instance "$i" --ws "127.0.0.1:$p" > "$dir/$i.log" 2>&1 &
  pids+=($!)
done
for i in a b; do
  for _ in $(seq 100); do grep -q 'listening on' "$dir/$i.log" && break; sleep 0.1; done
done
taskset -c 0 "$dev" "coap+ws://127.0.0.1:$pa" lamp > "$dir/device.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q registered "$dir/device.log" && break; sleep 0.1; done
grep -q registered "$dir/device.log" || { echo "the device did not register" >&2; cat "$dir/device.log" >&2; exit 1; }

# CPU ticks (utime + stime) of every serving process.
ticks() {
  local t=0
  for p in "${pids[@]}"; do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$t"
}
hz=$(getconf CLK_TCK)
printf '%-12s %10s %10s %10s %14s\n' where 'req/s' p50 p99 'CPU µs/req'
for r in $(seq "$rounds"); do
  for where in local hop; do
    p=$pa; [ "$where" = hop ] && p=$pb
    before=$(ticks)
    out=$(taskset -c 1 "$bin" bench "coap+ws://127.0.0.1:$p/state" --option 3=lamp.d.example \
      -c "$conns" -n "$depth" -d "$secs") || true
    after=$(ticks)
    n=$(echo "$out" | sed -n 's/.*s: \([0-9]*\) requests.*/\1/p')
    rate=$(echo "$out" | sed -n 's/.* \([0-9]*\) req\/s.*/\1/p')
    errors=$(echo "$out" | sed -n 's/.*req\/s, \([0-9]*\) errors.*/\1/p')
    p50=$(echo "$out" | sed -n 's/.*p50 \([^ ]*\) .*/\1/p')
    p99=$(echo "$out" | sed -n 's/.*p99 \([^ ]*\) .*/\1/p')
    # The warm-up second is served too: count its requests at the measured rate.
    cpu=$(awk -v t=$((after - before)) -v hz="$hz" -v n="$n" -v s="$secs" \
      'BEGIN { printf "%.1f", t / hz * 1e6 / (n * (s + 1) / s) }')
    printf '%-12s %10s %10s %10s %14s   (round %d, %s errors)\n' "$where" "$rate" "$p50" "$p99" "$cpu" "$r" "$errors"
    echo "$out" | { grep "^error" || true; } | head -3 | sed "s/^/    /"
  done
done
