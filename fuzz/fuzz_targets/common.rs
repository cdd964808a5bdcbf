//! Invariants shared by the decoder fuzz targets.
//!
//! Every target decodes its input under the three limit settings in [`LIMITS`] and, for each
//! message a decoder accepts, checks:
//! - the framing is canonical: re-encoding gives back exactly the bytes decoded, and
//!   `encoded_len` agrees;
//! - the message respects the limits it was decoded under (size, token length);
//! - options come out in ascending number order;
//! - the message survives the other reliable framings (WS and TCP) and, unless it is an Empty
//!   message with content, UDP: encode then decode gives the same message;
//! - a 7.xx message goes through `Signal::parse` without panicking, and a parsed signal
//!   survives `to_message` → `parse` unchanged;
//! - limits are monotonic: a message accepted under stricter limits is accepted, identically,
//!   under looser ones.
#![allow(dead_code)]

use bytes::Bytes;
use coapws_proto::codec::udp::{MessageType, UdpHeader};
use coapws_proto::codec::{tcp, udp, ws};
use coapws_proto::signaling::Signal;
use coapws_proto::{Code, DecodeLimits, Message};

/// From strictest to loosest: tiny messages, the defaults (1 MiB, 8-byte tokens), and the
/// defaults with RFC 8974 extended tokens up to 300 bytes.
pub const LIMITS: [DecodeLimits; 3] = [
    DecodeLimits {
        max_message_size: 64,
        max_token_len: 8,
    },
    DecodeLimits {
        max_message_size: 1 << 20,
        max_token_len: 8,
    },
    DecodeLimits {
        max_message_size: 1 << 20,
        max_token_len: 300,
    },
];

/// `results[i]` decoded under `LIMITS[i]`: whatever a stricter setting accepts, the next
/// looser one must accept with the same result.
pub fn check_monotonic<T: PartialEq + std::fmt::Debug, E>(results: &[Result<T, E>]) {
    for w in results.windows(2) {
        if let Ok(strict) = &w[0] {
            match &w[1] {
                Ok(loose) => assert_eq!(strict, loose, "looser limits decoded differently"),
                Err(_) => panic!("accepted under stricter limits, rejected under looser ones"),
            }
        }
    }
}

/// Checks a message some decoder accepted under `limits`.
pub fn check_message(m: &Message, limits: &DecodeLimits) {
    assert!(
        m.token.len() <= limits.max_token_len.max(8),
        "token of {} bytes accepted with max_token_len {}",
        m.token.len(),
        limits.max_token_len
    );
    let mut prev = 0u16;
    for (n, _) in m.options.iter() {
        assert!(n.0 >= prev, "options out of order");
        prev = n.0;
    }

    // Cross-framing round trips, with room for any size the input could have had.
    let roomy = DecodeLimits {
        max_message_size: 1 << 20,
        max_token_len: limits.max_token_len,
    };
    let w = ws::encode(m).expect("ws::encode of a decoded message");
    assert_eq!(ws::encoded_len(m).unwrap(), w.len());
    assert_eq!(&ws::decode(&w, &roomy).expect("ws round trip"), m);
    let t = tcp::encode(m).expect("tcp::encode of a decoded message");
    assert_eq!(tcp::encoded_len(m).unwrap(), t.len());
    assert_eq!(&tcp::decode(&t, &roomy).expect("tcp round trip"), m);
    let empty_with_content = m.code == Code::EMPTY && *m != Message::new(Code::EMPTY);
    if !empty_with_content {
        let h = UdpHeader {
            mtype: MessageType::NonConfirmable,
            message_id: 0x1234,
        };
        let u = udp::encode(&h, m).expect("udp::encode of a decoded message");
        assert_eq!(udp::encoded_len(m).unwrap(), u.len());
        let (h2, m2) = udp::decode(&u, &roomy).expect("udp round trip");
        assert_eq!(h2, h);
        assert_eq!(&m2, m);
    }

    check_signal(m);
}

/// Any 7.xx message must parse or be rejected cleanly; a parsed one must round-trip.
pub fn check_signal(m: &Message) {
    if m.code.class() != 7 {
        return;
    }
    match Signal::parse(m) {
        Ok(s) => {
            assert_eq!(s.code(), m.code);
            let again = s.to_message(m.token.clone());
            assert_eq!(again.token, m.token);
            assert_eq!(
                Signal::parse(&again),
                Ok(s),
                "signal changed across to_message/parse"
            );
        }
        Err(e) => {
            let _ = e.bad_csm_option();
            let _ = e.to_string();
        }
    }
}

pub fn bytes(data: &[u8]) -> Bytes {
    Bytes::copy_from_slice(data)
}
