#!/usr/bin/env bash
# The project's one test command: installs the peers, checks formatting and lints, runs every test
# (unit, property, integration over loopback, interop with aiocoap and libcoap, doc tests, the
# fuzz targets over their seed corpora, the browser library under node, the console in headless
# Chromium), and ends with one line counting them all:
#
#     tests: N passed, M failed
#
# M counts failed tests, plus each test binary that crashed, was cut off by the time limit, did
# not run, or ran fewer tests than its expected minimum (scripts/test-minimums.txt). The names
# of all of them are printed above that line. Exit status: 0 only when M is 0 and every step
# passed.
#
# Bounds: building the tests gets BUILD_LIMIT seconds (default 1800), running them all
# COAPWS_TEST_TIME_LIMIT (default 1500), the fuzz build FUZZ_BUILD_LIMIT (default 900, it
# compiles libFuzzer once), each seed replay 60, each fuzzing run FUZZ_SECONDS (default 15).
set -uo pipefail
cd "$(dirname "$0")/.."

TIME_LIMIT=${COAPWS_TEST_TIME_LIMIT:-1500}
BUILD_LIMIT=${BUILD_LIMIT:-1800}
FUZZ_BUILD_LIMIT=${FUZZ_BUILD_LIMIT:-900}
FUZZ_SECONDS=${FUZZ_SECONDS:-15}
LIBCOAP_VERSION=4.3.1
MINIMUMS=scripts/test-minimums.txt

step() { echo "test.sh: $*" >&2; }
die() {
  echo "test.sh: $*" >&2
  echo "tests: 0 passed, 1 failed"
  exit 1
}

# libcoap: UDP and TCP peer; nginx: the front door of deploy/; haproxy: the balancer of the
# cluster tests; systemd: systemd-analyze and
# systemd-socket-activate for the deployment tests.
scripts/install-peers.sh libcoap3-bin nginx systemd haproxy || die "installing the peers failed"

# The interop tests read libcoap's own output (its -v 7 PDU log, its TLS complaints): that format
# is libcoap 4.3.1's.
banner=$(coap-client-notls 2>&1 | head -n 1)
case "$banner" in
  "coap-client-notls v$LIBCOAP_VERSION "*) ;;
  *) die "the interop tests parse libcoap $LIBCOAP_VERSION's output, but coap-client-notls says: \
${banner:-nothing} (install Debian's libcoap3-bin $LIBCOAP_VERSION, or update the tests' expectations)" ;;
esac

cargo fmt --all -- --check || die "cargo fmt --check failed (run cargo fmt --all)"
cargo fmt --manifest-path fuzz/Cargo.toml -- --check || die "cargo fmt --check failed in fuzz/"
cargo clippy --workspace --all-targets -- -D warnings || die "cargo clippy failed"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet || die "cargo doc failed"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Build every test binary first, recording which source file each executable is (the names
# cargo prints while running are not unique: two crates have a tests/hardening.rs).
step "building the tests"
timeout "$BUILD_LIMIT" cargo test --workspace --all-targets --no-run --message-format=json \
  >"$work/artifacts.json" || die "building the tests failed"

# The tests, every binary even after failures, under one time limit.
started=$(date +%s)
step "running the tests (time limit ${TIME_LIMIT}s)"
timeout --kill-after=30 "$TIME_LIMIT" cargo test --workspace --all-targets --no-fail-fast 2>&1 \
  | tee "$work/tests.log"
test_rc=${PIPESTATUS[0]}
left=$((TIME_LIMIT - ($(date +%s) - started)))
[ "$left" -gt 30 ] || left=30
timeout --kill-after=30 "$left" cargo test --workspace --doc --no-fail-fast 2>&1 | tee "$work/doc.log"
doc_rc=${PIPESTATUS[0]}

# The fuzz targets: build them with cargo-fuzz (libFuzzer, AddressSanitizer), replay each seed
# corpus once (-runs=0), then fuzz each for FUZZ_SECONDS. The seed checks also run in the
# workspace tests (fuzz_seeds.rs).
fuzz_problems=()
fuzz_passed=0
if ! cargo fuzz --version >/dev/null 2>&1; then
  step "installing cargo-fuzz"
  timeout 900 cargo install cargo-fuzz --locked --quiet || fuzz_problems+=("cargo install cargo-fuzz failed")
fi
if [ ${#fuzz_problems[@]} -eq 0 ]; then
  step "building the fuzz targets"
  if ! (cd fuzz && RUSTC_BOOTSTRAP=1 timeout "$FUZZ_BUILD_LIMIT" cargo fuzz build >"$work/fuzz-build.log" 2>&1); then
    tail -n 30 "$work/fuzz-build.log" >&2
    fuzz_problems+=("fuzz: cargo fuzz build failed or exceeded ${FUZZ_BUILD_LIMIT}s")
  else
    for t in decode_ws decode_tcp decode_udp connection udp_layer; do
      seeds=$(find "fuzz/seeds/$t" -type f | wc -l)
      corpus="$work/corpus-$t"
      mkdir -p "$corpus"
      # A fresh first directory: libFuzzer writes new inputs there, never into the seeds.
      if (cd fuzz && RUSTC_BOOTSTRAP=1 timeout 60 cargo fuzz run "$t" "$corpus" "seeds/$t" -- -runs=0 \
        >"$work/fuzz-$t.log" 2>&1); then
        runs=$(grep -Eo 'Done [0-9]+ runs' "$work/fuzz-$t.log" | grep -Eo '[0-9]+' || echo 0)
        if [ "$runs" -ge "$seeds" ] && [ "$seeds" -gt 0 ]; then
          echo "fuzz $t: $seeds seeds replayed under libFuzzer ($runs runs)"
          fuzz_passed=$((fuzz_passed + 1))
          # Then a short fuzzing run from the seeds: new inputs, every invariant checked; a
          # failure leaves its input in fuzz/artifacts/$t/.
          if (cd fuzz && RUSTC_BOOTSTRAP=1 timeout $((FUZZ_SECONDS + 60)) cargo fuzz run "$t" "$corpus" "seeds/$t" -- \
            -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 >"$work/fuzz-run-$t.log" 2>&1); then
            execs=$(grep -Eo 'number_of_executed_units: [0-9]+' "$work/fuzz-run-$t.log" | grep -Eo '[0-9]+' || echo 0)
            echo "fuzz $t: ${FUZZ_SECONDS}s run, $execs executions, no failure"
            fuzz_passed=$((fuzz_passed + 1))
          else
            tail -n 40 "$work/fuzz-run-$t.log" >&2
            fuzz_problems+=("fuzz $t: the ${FUZZ_SECONDS}s run failed (input in fuzz/artifacts/$t/)")
          fi
        else
          fuzz_problems+=("fuzz $t: $runs runs for $seeds seeds")
        fi
      else
        tail -n 30 "$work/fuzz-$t.log" >&2
        fuzz_problems+=("fuzz $t: the seed replay failed")
      fi
    done
  fi
fi

# The browser library under node (unit and end to end) and the console in headless Chromium:
# each script ends with "NAME: N passed, M failed"; a script that does not say so has failed.
suites=()
for suite in web browser; do
  step "running scripts/test-$suite.sh"
  COAPWS_BIN=target/debug/coapws timeout --kill-after=30 600 "scripts/test-$suite.sh" 2>&1 \
    | tee "$work/$suite.log"
  line=$(grep -E "^$suite: [0-9]+ passed, [0-9]+ failed$" "$work/$suite.log" | tail -n 1)
  if [ -n "$line" ]; then
    suites+=("$line")
  else
    suites+=("$suite: 0 passed, 1 failed")
    echo "test.sh: scripts/test-$suite.sh ended without its summary line" >&2
  fi
done
export COAPWS_SUITES="${suites[*]}"

# The summary: per test binary (by its source file), tests passed and failed, and the checks.
python3 - "$work/artifacts.json" "$work/tests.log" "$work/doc.log" "$MINIMUMS" "$test_rc" "$doc_rc" \
  "$fuzz_passed" "${fuzz_problems[@]}" >"$work/summary" <<'PY'
import json, os, re, sys

artifacts, tests_log, doc_log, minimums_file, test_rc, doc_rc, fuzz_passed, *fuzz_problems = sys.argv[1:]
root = os.getcwd()

# executable basename -> source path relative to the repository (e.g. crates/coapws/tests/tls.rs)
exe = {}
for line in open(artifacts):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m.get("profile", {}).get("test"):
        exe[os.path.basename(m["executable"])] = os.path.relpath(m["target"]["src_path"], root)

minimums = {}
for line in open(minimums_file):
    line = line.split("#", 1)[0].strip()
    if line:
        name, n = line.rsplit(None, 1)
        minimums[name] = int(n)

running = re.compile(r"^\s+Running (?:unittests )?\S+ \((?:.*/)?([^/)]+)\)\s*$")
doctests = re.compile(r"^\s+Doc-tests (\S+)\s*$")
result = re.compile(r"^test result: \w+\. (\d+) passed; (\d+) failed;")
failed_test = re.compile(r"^test (.+?) \.\.\. FAILED$")
# Criterion benches (harness = false) run each benchmark once under `cargo test`: a
# "Testing NAME" line, then "Success", or a panic.
criterion_case = re.compile(r"^Testing (.+)$")
panicked = re.compile(r"^thread '.*' panicked")

binaries = []  # [name, passed, failed, finished, failed names]
for log in (tests_log, doc_log):
    current = None
    for line in open(log, errors="replace"):
        line = line.rstrip("\n")
        m = running.match(line)
        d = doctests.match(line)
        if m or d:
            name = exe.get(m.group(1), "?" + m.group(1)) if m else "doc:" + d.group(1)
            current = [name, 0, 0, False, []]
            case = None
            binaries.append(current)
            continue
        if current is None:
            continue
        f = failed_test.match(line)
        if f:
            current[4].append(f.group(1))
        c = criterion_case.match(line)
        if c:
            case = c.group(1)
        elif line == "Success" and case:
            current[1] += 1
            current[3] = True
            case = None
        elif panicked.match(line) and case:
            current[2] += 1
            current[4].append(case)
            case = None
        r = result.match(line)
        if r and not current[3]:
            current[1], current[2], current[3] = int(r.group(1)), int(r.group(2)), True

passed = sum(b[1] for b in binaries)
failed = sum(b[2] for b in binaries)
problems = []
seen = {b[0] for b in binaries}
for name, n_passed, n_failed, finished, names in binaries:
    for t in names:
        print(f"FAILED {name}: {t}")
    if not finished:
        problems.append(f"{name}: did not finish (crashed, or cut off by the time limit)")
        continue
    want = minimums.get(name, 1)
    if n_passed + n_failed < want:
        problems.append(f"{name}: ran {n_passed + n_failed} tests, expects at least {want} ({minimums_file})")
    if n_failed and not names:
        problems.append(f"{name}: {n_failed} failed (names not in the log)")
for name in sorted(n for n in set(minimums) - seen if not n.startswith("suite:")):
    problems.append(f"{name}: expected test binary did not run")
if test_rc == "124" or doc_rc == "124":
    problems.append("the time limit was reached: a test hangs or the run is too slow")
elif test_rc != "0" and failed == 0 and not problems:
    problems.append(f"cargo test exited with status {test_rc} and no failed test (build error?)")
if doc_rc != "0" and failed == 0 and not problems:
    problems.append(f"cargo test --doc exited with status {doc_rc}")
problems += fuzz_problems
passed += int(fuzz_passed)
# The node and browser suites: "web: N passed, M failed browser: N passed, M failed".
for name, n_passed, n_failed in re.findall(r"(\w+): (\d+) passed, (\d+) failed", os.environ.get("COAPWS_SUITES", "")):
    passed += int(n_passed)
    if int(n_failed):
        problems.append(f"scripts/test-{name}.sh: {n_failed} failed (see its output above)")
    want = minimums.get(f"suite:{name}", 1)
    if int(n_passed) + int(n_failed) < want:
        problems.append(f"scripts/test-{name}.sh: ran {int(n_passed) + int(n_failed)} checks, expects at least {want}")
for p in problems:
    print(f"REFUSED {p}")
print(f"tests: {passed} passed, {failed + len(problems)} failed")
PY
py_rc=$?
echo
cat "$work/summary"
[ $py_rc -eq 0 ] || { echo "test.sh: the summary could not be made" >&2; exit 1; }
grep -q '^tests: [0-9]* passed, 0 failed$' "$work/summary"
