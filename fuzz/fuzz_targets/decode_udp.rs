//! RFC 7252 §3 datagram framing: `udp::decode` on the whole input.
#![no_main]

mod common;

use coapws_proto::codec::udp;
use coapws_proto::{Code, Message};
use common::{LIMITS, bytes, check_message, check_monotonic};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let buf = bytes(data);
    let results: Vec<_> = LIMITS.iter().map(|l| udp::decode(&buf, l)).collect();
    for (r, limits) in results.iter().zip(LIMITS.iter()) {
        let Ok((h, m)) = r else { continue };
        assert!(buf.len() <= limits.max_message_size, "oversize datagram accepted");
        assert_eq!(buf[0] >> 6, 1, "version other than 1 accepted");
        if m.code == Code::EMPTY {
            // RFC 7252 §4.1: an Empty message is exactly the 4-byte header.
            assert_eq!(buf.len(), 4, "Empty message with content accepted");
            assert_eq!(*m, Message::new(Code::EMPTY));
        }
        let enc = udp::encode(h, m).expect("udp::encode of a decoded message");
        assert_eq!(enc, buf, "UDP re-encoding differs from the input");
        assert_eq!(udp::encoded_len(m).unwrap(), buf.len(), "udp::encoded_len");
        check_message(m, limits);
    }
    check_monotonic(&results);
});
