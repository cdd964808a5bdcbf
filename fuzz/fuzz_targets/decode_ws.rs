//! RFC 8323 §4.2 WebSocket framing: `ws::decode` on the whole input.
#![no_main]

mod common;
mod targets;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| targets::decode_ws(data));
