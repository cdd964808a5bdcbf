#!/usr/bin/env bash
# Block-wise transfer benchmark: time and request count of a 4 MiB GET and PUT over each
# transport (coap+ws, coap+tcp, coap), between `coapws serve ROOT --write` and the `coapws`
# client, on loopback. Usage: scripts/bench-blockwise.sh [BINARY] [SIZE_BYTES]
# Prints one line per transfer: transport, method, seconds, requests sent, checksum match.
set -euo pipefail
bin=${1:-target/release/coapws}
size=${2:-4194304}
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
mkdir -p "$dir/www"
head -c "$size" /dev/urandom > "$dir/www/big.bin"
want=$(sha256sum < "$dir/www/big.bin" | cut -d' ' -f1)
"$bin" serve "$dir/www" --write --ws 127.0.0.1:0 --tcp 127.0.0.1:0 --udp 127.0.0.1:0 > "$dir/serve.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
  n=$(grep -c 'listening on' "$dir/serve.log" 2>/dev/null) || true
  [ "${n:-0}" -ge 3 ] && break
  sleep 0.1
done
addr() { grep -o "listening on $1://[^ ]*" "$dir/serve.log" | head -1 | sed "s|listening on ||"; }
printf '%-9s %-4s %9s %9s %s\n' transport op seconds requests checksum
for scheme in coap+ws coap+tcp coap; do
  base=$(addr "$scheme")
  start=$(date +%s.%N)
  "$bin" -v get "$base/big.bin" --timeout 60 > "$dir/got.bin" 2> "$dir/get.log"
  end=$(date +%s.%N)
  n=$(grep -c 'send request' "$dir/get.log" || true)
  ok=$([ "$(sha256sum < "$dir/got.bin" | cut -d' ' -f1)" = "$want" ] && echo equal || echo DIFFERENT)
  printf '%-9s %-4s %9.2f %9d %s\n' "$scheme" GET "$(awk "BEGIN{print $end - $start}")" "$n" "$ok"
  start=$(date +%s.%N)
  "$bin" -v put "$base/up-$scheme.bin" --payload "@$dir/www/big.bin" --timeout 60 > /dev/null 2> "$dir/put.log"
  end=$(date +%s.%N)
  n=$(grep -c 'send request' "$dir/put.log" || true)
  ok=$([ "$(sha256sum < "$dir/www/up-$scheme.bin" | cut -d' ' -f1)" = "$want" ] && echo equal || echo DIFFERENT)
  printf '%-9s %-4s %9.2f %9d %s\n' "$scheme" PUT "$(awk "BEGIN{print $end - $start}")" "$n" "$ok"
done
