#!/usr/bin/env bash
# Tests of the browser CoAP library web/coap.js under node --test:
#   1. unit tests (codec vectors shared with the Rust codec, option values, link-format);
#   2. end to end against a live `coapws serve` ($COAPWS_BIN, default target/debug/coapws),
#      aiocoap's WebSocket servers (target/peers/venv, installed by scripts/install-peers.sh),
#      and a deliberately misbehaving WebSocket peer (Python websockets from that venv).
# The tests start their servers themselves on free loopback ports and kill them when done.
# Needs node >= 20; node 20's WebSocket is enabled with --experimental-websocket (no npm).
# Ends with "web: N passed, M failed"; exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD

die() { echo "test-web: $*" >&2; echo "web: 0 passed, 1 failed"; exit 1; }

command -v node >/dev/null || die "node is not installed (node 20 or later is needed)"
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 20 ] || die "node $(node --version) is too old: node 20 or later is needed"
node_flags=()
if [ "$(node -p 'typeof WebSocket')" != function ]; then
  node_flags+=(--experimental-websocket)
  [ "$(node "${node_flags[@]}" -p 'typeof WebSocket')" = function ] || die "node $(node --version) has no WebSocket, even with --experimental-websocket"
fi

export COAPWS_BIN=${COAPWS_BIN:-$root/target/debug/coapws}
case $COAPWS_BIN in /*) ;; *) COAPWS_BIN=$root/$COAPWS_BIN ;; esac
[ -x "$COAPWS_BIN" ] || die "no coapws binary at $COAPWS_BIN (cargo build, or set COAPWS_BIN)"
for tool in python aiocoap-fileserver; do
  [ -x "target/peers/venv/bin/$tool" ] || die "target/peers/venv/bin/$tool is missing: run scripts/install-peers.sh"
done
target/peers/venv/bin/python -c 'import aiocoap, websockets' 2>/dev/null \
  || die "aiocoap[ws] is not importable from target/peers/venv: run scripts/install-peers.sh"

out=$root/target/web-test
mkdir -p "$out"
passed=0
failed=0
status=0
start=$(date +%s)

# run NAME TIME_LIMIT FILES...: node --test with a readable report on stdout and TAP for counting.
run() {
  local name=$1 limit=$2
  shift 2
  local tap=$out/$name.tap
  rm -f "$tap"
  echo "== web: $name tests"
  timeout --kill-after=10 "$limit" node "${node_flags[@]}" --test \
    --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=tap --test-reporter-destination="$tap" "$@"
  local rc=$?
  local p f
  p=$(grep -E '^# pass [0-9]+$' "$tap" 2>/dev/null | tail -1 | awk '{print $3}')
  f=$(grep -E '^# fail [0-9]+$' "$tap" 2>/dev/null | tail -1 | awk '{print $3}')
  if [ -z "$p" ] || [ -z "$f" ]; then
    echo "test-web: $name: no test summary (exit $rc; 124 means the ${limit}s limit was hit)" >&2
    p=${p:-0}
    f=$(( ${f:-0} + 1 ))
  elif [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    echo "test-web: $name: node exited $rc with no failed test" >&2
    f=1
  fi
  [ "$f" -eq 0 ] || status=1
  passed=$((passed + p))
  failed=$((failed + f))
}

run unit 60 web/test/codec.test.mjs
run e2e 300 web/test/coapws.test.mjs web/test/aiocoap.test.mjs web/test/hostile.test.mjs

echo "test-web: $(( $(date +%s) - start )) s; TAP reports in ${out#"$root"/}"
echo "web: $passed passed, $failed failed"
exit $status
