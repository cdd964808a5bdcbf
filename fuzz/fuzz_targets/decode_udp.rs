//! RFC 7252 §3 datagram framing: `udp::decode` on the whole input.
#![no_main]

mod common;
mod targets;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| targets::decode_udp(data));
