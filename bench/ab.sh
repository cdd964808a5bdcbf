#!/usr/bin/env bash
# bench/ab.sh BEFORE AFTER [ROUNDS]: two builds of coapws side by side, interleaved.
#
# Each round starts each build's `serve` pinned to core 0 (WebSocket and TCP on loopback), runs
# AFTER's `bench` pinned to core 1 against it (GET /hello, 16 connections x 16 in flight, 3 s,
# then 64 x 8), and reads the server's CPU time (utime+stime from /proc/PID/stat) over the run.
# Prints one line per run: build, transport, load, requests/s, p50, p99, server CPU us/request.
# Medians are for the reader (3 rounds: the middle one).
set -euo pipefail
before=$1 after=$2 rounds=${3:-3}
tick=$(getconf CLK_TCK)
port=$((20000 + RANDOM % 20000))
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run() { # label bin scheme load
  local label=$1 bin=$2 scheme=$3 c=$4 n=$5
  local ws=$port tcp=$((port + 1))
  taskset -c 0 "$bin" serve --ws 127.0.0.1:$ws --tcp 127.0.0.1:$tcp >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 50); do
    (exec 3<>/dev/tcp/127.0.0.1/$tcp) 2>/dev/null && break
    sleep 0.1
  done
  local uri
  case $scheme in ws) uri="coap+ws://127.0.0.1:$ws/hello" ;; tcp) uri="coap+tcp://127.0.0.1:$tcp/hello" ;; esac
  local t0 out t1
  t0=$(cpu_ticks $pid)
  out=$(taskset -c 1 "$after" bench "$uri" -c "$c" -n "$n" -d 3 2>&1 || true)
  t1=$(cpu_ticks $pid)
  kill $pid; wait $pid 2>/dev/null || true
  port=$((port + 2))
  # bench prints: "... N requests, R req/s, E errors" then "latency p50 X  p90 Y  p99 Z ..."
  local reqs rate p50 p99
  reqs=$(grep -Eo '[0-9]+ requests' <<<"$out" | head -1 | grep -Eo '[0-9]+')
  rate=$(grep -Eo '[0-9]+ req/s' <<<"$out" | head -1 | grep -Eo '[0-9]+')
  p50=$(grep -Eo 'p50 [^ ]+' <<<"$out" | head -1 | cut -d' ' -f2)
  p99=$(grep -Eo 'p99 [^ ]+' <<<"$out" | head -1 | cut -d' ' -f2)
  # Server CPU per request (the warm-up second's requests are not counted: an over-estimate).
  local us
  us=$(awk -v d=$((t1 - t0)) -v t="$tick" -v r="${reqs:-0}" 'BEGIN { if (r > 0) printf "%.2f", d / t * 1e6 / r; else print "-" }')
  printf '%-7s %-4s %2sx%-3s %8s req/s  p50 %-10s p99 %-10s server %s us/req\n' "$label" "$scheme" "$c" "$n" "${rate:--}" "${p50:--}" "${p99:--}" "$us"
}
for r in $(seq "$rounds"); do
  echo "round $r"
  for load in "16 16" "64 8"; do
    for scheme in ws tcp; do
      run before "$before" $scheme $load
      run after "$after" $scheme $load
    done
  done
done
