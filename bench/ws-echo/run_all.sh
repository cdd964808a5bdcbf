#!/usr/bin/env bash
# Reproduce RESULTS.md: build, then run every measurement; outputs land in results/.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release
B=./target/release/ws-echo
mkdir -p results
{ echo "nproc=$(nproc)"; uname -srm; rustc --version; grep -m1 'model name' /proc/cpuinfo; uptime; } > results/machine.txt
$B check                                   > results/check.md
$B bench --mode split  --repeat 3 --conns 1,50 --sizes 16,1024 --warmup 0.5 --duration 2.5 > results/bench-split.md  2> results/bench-split.log
$B bench --mode single --repeat 3 --conns 1,50 --sizes 16,1024 --warmup 0.5 --duration 2.5 > results/bench-single.md 2> results/bench-single.log
for i in 1 2 3; do $B idle --n 2000; done > results/idle.md
echo "load after: $(uptime)" >> results/machine.txt
# extra repeats for the four close contenders (the machine is shared; more samples -> steadier medians)
C=tungstenite-4k,tungstenite-hyper,fastwebsockets,yawc
$B bench --mode single --repeat 5 --crates $C --conns 50 --sizes 16,1024 > results/bench-single-50-r5.md 2> results/bench-single-50-r5.log
$B bench --mode split  --repeat 5 --crates $C --conns 1,50 --sizes 16    > results/bench-split-r5.md     2> results/bench-split-r5.log
