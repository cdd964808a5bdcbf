//! RFC 8323 §4.2 WebSocket framing: `ws::decode` on the whole input.
#![no_main]

mod common;

use coapws_proto::codec::ws;
use common::{LIMITS, bytes, check_message, check_monotonic};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let buf = bytes(data);
    let results: Vec<_> = LIMITS.iter().map(|l| ws::decode(&buf, l)).collect();
    for (r, limits) in results.iter().zip(LIMITS.iter()) {
        let Ok(m) = r else { continue };
        assert!(buf.len() <= limits.max_message_size, "oversize message accepted");
        let enc = ws::encode(m).expect("ws::encode of a decoded message");
        assert_eq!(enc, buf, "WS re-encoding differs from the input");
        assert_eq!(ws::encoded_len(m).unwrap(), buf.len(), "ws::encoded_len");
        check_message(m, limits);
    }
    check_monotonic(&results);
});
