//! RFC 8323 §3.2 TCP framing: `tcp::decode` on the input, and `tcp::StreamDecoder` fed the
//! input in chunks.
//!
//! The first byte picks the chunk size (0: the whole input at once; n: n bytes at a time);
//! the rest is the byte stream.
#![no_main]

mod common;
mod targets;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| targets::decode_tcp(data));
