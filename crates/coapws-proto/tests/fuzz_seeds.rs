//! The fuzz targets' checks (`fuzz/fuzz_targets/targets.rs`, `connection_machine.rs`,
//! `udp_machine.rs`: the same functions libFuzzer runs under cargo-fuzz) replayed over their committed seed corpora (`fuzz/seeds/<target>/`),
//! so the test command exercises them in a second without a nightly toolchain or cargo-fuzz.
//! Each seed runs alone; a seed that panics is reported by name. A corpus that shrank below
//! what was committed fails too: a replay of nothing proves nothing.

#[path = "../../../fuzz/fuzz_targets/common.rs"]
mod common;
#[path = "../../../fuzz/fuzz_targets/connection_machine.rs"]
mod connection_machine;
#[path = "../../../fuzz/fuzz_targets/input.rs"]
mod input;
#[path = "../../../fuzz/fuzz_targets/targets.rs"]
mod targets;
#[path = "../../../fuzz/fuzz_targets/udp_machine.rs"]
mod udp_machine;

use std::path::{Path, PathBuf};

/// The seeds of `target`, sorted by name.
fn seeds(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/seeds")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("seed corpus {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs every seed of `target` through `check`; panics naming the seeds that failed.
fn replay(target: &str, at_least: usize, check: fn(&[u8])) {
    let files = seeds(target);
    assert!(
        files.len() >= at_least,
        "{target}: {} seeds, expected at least {at_least} (fuzz/seeds/{target})",
        files.len()
    );
    let failed: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let data = std::fs::read(f).unwrap();
            if input::trace() {
                eprintln!("== {}", f.display());
            }
            let outcome = std::panic::catch_unwind(|| check(&data));
            outcome.is_err().then(|| f.display().to_string())
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{target}: {} of {} seeds fail the target's checks: {failed:#?}",
        failed.len(),
        files.len()
    );
}

#[test]
fn decode_ws_seeds() {
    replay("decode_ws", 33, targets::decode_ws);
}

#[test]
fn decode_tcp_seeds() {
    replay("decode_tcp", 54, targets::decode_tcp);
}

#[test]
fn decode_udp_seeds() {
    replay("decode_udp", 42, targets::decode_udp);
}

#[test]
fn connection_seeds() {
    replay("connection", 20, connection_machine::run);
}

#[test]
fn udp_layer_seeds() {
    replay("udp_layer", 15, udp_machine::run);
}
