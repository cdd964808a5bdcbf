#!/usr/bin/env bash
# The console in a real browser (issue 9): headless Chromium loads the console from a live
# `coapws serve` and drives it (web/test/browser.mjs). Installs what it needs on a fresh machine:
# Debian's chromium (apt-get) and playwright-core from npm under target/browser-npm (never a
# node_modules in the repo). Fails loudly when Chromium cannot be had. Needs a built coapws:
# COAPWS_BIN, default target/debug/coapws. Ends with `browser: N passed, M failed`.
set -euo pipefail
cd "$(dirname "$0")/.."

PLAYWRIGHT_CORE_VERSION=1.65.1
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
NPM_DIR=target/browser-npm

die() {
    echo "browser: FAIL: $*" >&2
    echo "browser: 0 passed, 1 failed"
    exit 1
}

if [ ! -x "$CHROMIUM" ]; then
    echo "browser: $CHROMIUM is missing; installing Debian's chromium" >&2
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq || die "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || die "apt-get install chromium failed"
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo apt-get update -qq || die "apt-get update failed"
        sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || die "apt-get install chromium failed"
    else
        die "$CHROMIUM is missing and this user cannot install Debian's chromium (apt-get install chromium)"
    fi
    [ -x "$CHROMIUM" ] || die "chromium installed but $CHROMIUM is still missing"
fi
"$CHROMIUM" --version >&2 2>/dev/null || die "$CHROMIUM does not run"

command -v node >/dev/null || die "node is missing"
if [ ! -f "$NPM_DIR/node_modules/playwright-core/package.json" ] ||
    ! grep -q "\"version\": \"$PLAYWRIGHT_CORE_VERSION\"" "$NPM_DIR/node_modules/playwright-core/package.json"; then
    mkdir -p "$NPM_DIR"
    [ -f "$NPM_DIR/package.json" ] || echo '{ "private": true }' >"$NPM_DIR/package.json"
    echo "browser: installing playwright-core $PLAYWRIGHT_CORE_VERSION under $NPM_DIR" >&2
    (cd "$NPM_DIR" && npm install --no-audit --no-fund --loglevel=error "playwright-core@$PLAYWRIGHT_CORE_VERSION" >&2) ||
        die "npm install playwright-core failed"
fi

export COAPWS_BIN=${COAPWS_BIN:-target/debug/coapws}
[ -x "$COAPWS_BIN" ] || die "$COAPWS_BIN is missing: build coapws first (cargo build -p coapws-cli) or set COAPWS_BIN"
export CHROMIUM BROWSER_NPM_DIR=$NPM_DIR
# The test bounds every wait and the whole run itself; this is the backstop.
exec timeout --kill-after=10 300 node web/test/browser.mjs
