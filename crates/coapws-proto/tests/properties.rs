//! Property tests: encode→decode is the identity in all three framings, and the decoders
//! never panic on arbitrary bytes.

use bytes::Bytes;
use coapws_proto::codec::udp::{MessageType, UdpHeader};
use coapws_proto::codec::{DecodeLimits, tcp, udp, ws};
use coapws_proto::{Code, Message, OptionNumber, Options, Token};
use proptest::prelude::*;

fn limits() -> DecodeLimits {
    DecodeLimits {
        max_message_size: 1 << 20,
        max_token_len: 300,
    }
}

fn option_number() -> impl Strategy<Value = u16> {
    prop_oneof![0u16..20, 0u16..300, 0u16..=u16::MAX]
}

fn option_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..13),
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::collection::vec(any::<u8>(), 260..1000),
    ]
}

prop_compose! {
    fn message(max_token: usize)(
        code in 1u8..=255,
        token in proptest::collection::vec(any::<u8>(), 0..=max_token),
        opts in proptest::collection::vec((option_number(), option_value()), 0..8),
        payload in prop_oneof![
            Just(Vec::new()),
            proptest::collection::vec(any::<u8>(), 1..40),
            proptest::collection::vec(any::<u8>(), 1..70000),
        ],
    ) -> Message {
        let options: Options = opts.into_iter().map(|(n, v)| (OptionNumber(n), Bytes::from(v))).collect();
        Message { code: Code(code), token: Token::new(token), options, payload: Bytes::from(payload) }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn ws_round_trip(m in message(300)) {
        let enc = ws::encode(&m).unwrap();
        prop_assert_eq!(enc.len(), ws::encoded_len(&m).unwrap());
        prop_assert_eq!(ws::decode(&enc, &limits()).unwrap(), m);
    }

    #[test]
    fn tcp_round_trip(m in message(300), split in 1usize..5000) {
        let enc = tcp::encode(&m).unwrap();
        prop_assert_eq!(enc.len(), tcp::encoded_len(&m).unwrap());
        prop_assert_eq!(&tcp::decode(&enc, &limits()).unwrap(), &m);
        let mut d = tcp::StreamDecoder::new(limits());
        let mut got = None;
        for c in enc.chunks(split) {
            d.push(c);
            if let Some(x) = d.next_message().unwrap() { got = Some(x); }
        }
        prop_assert_eq!(got, Some(m));
    }

    #[test]
    fn udp_round_trip(m in message(300), t in 0u8..4, mid in any::<u16>()) {
        let mtype = [MessageType::Confirmable, MessageType::NonConfirmable,
                     MessageType::Acknowledgement, MessageType::Reset][t as usize];
        let h = UdpHeader { mtype, message_id: mid };
        let enc = udp::encode(&h, &m).unwrap();
        prop_assert_eq!(enc.len(), udp::encoded_len(&m).unwrap());
        prop_assert_eq!(udp::decode(&enc, &limits()).unwrap(), (h, m));
    }

    #[test]
    fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        let b = Bytes::from(data.clone());
        for l in [limits(), DecodeLimits::with_max_message_size(64)] {
            let _ = ws::decode(&b, &l);
            let _ = tcp::decode(&b, &l);
            let _ = udp::decode(&b, &l);
            let mut d = tcp::StreamDecoder::new(l);
            d.push(&data);
            for _ in 0..data.len() + 1 {
                match d.next_message() { Ok(Some(_)) => {}, _ => break }
            }
        }
    }
}

/// Whatever the WebSocket decoder accepts, it accepts in canonical form. Inputs are encoded
/// messages (small ones, so that a change matters), half of them with one byte changed, and
/// the test counts how many decoded: a property checked on no accepted input proves nothing.
#[test]
fn decoded_reencodes_identically() {
    use proptest::test_runner::{Config, TestRunner};
    use std::sync::atomic::{AtomicU32, Ordering};
    const CASES: u32 = 1000;
    let small = (
        1u8..=255,
        proptest::collection::vec(any::<u8>(), 0..=8),
        proptest::collection::vec(
            (0u16..300, proptest::collection::vec(any::<u8>(), 0..20)),
            0..4,
        ),
        proptest::collection::vec(any::<u8>(), 0..8),
    )
        .prop_map(|(code, token, opts, payload)| Message {
            code: Code(code),
            token: Token::new(token),
            options: opts
                .into_iter()
                .map(|(n, v)| (OptionNumber(n), Bytes::from(v)))
                .collect(),
            payload: Bytes::from(payload),
        });
    let input = (
        small,
        any::<bool>(),
        any::<prop::sample::Index>(),
        any::<u8>(),
    )
        .prop_map(|(m, mutate, at, x)| {
            let mut b = ws::encode(&m).unwrap().to_vec();
            // A changed byte in the head (token, options, marker), where framing is decided.
            let head = b.len() - m.payload.len();
            if mutate {
                b[at.index(head)] ^= x.max(1);
            }
            (b, mutate)
        });
    let (decoded, changed_decoded, refused) =
        (AtomicU32::new(0), AtomicU32::new(0), AtomicU32::new(0));
    let config = Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new(config)
        .run(&input, |(data, changed)| {
            let b = Bytes::from(data);
            match ws::decode(&b, &limits()) {
                Ok(m) => {
                    decoded.fetch_add(1, Ordering::Relaxed);
                    if changed {
                        changed_decoded.fetch_add(1, Ordering::Relaxed);
                    }
                    prop_assert_eq!(ws::encode(&m).unwrap(), b);
                }
                Err(_) => {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(())
        })
        .unwrap();
    let (decoded, changed_decoded, refused) = (
        decoded.into_inner(),
        changed_decoded.into_inner(),
        refused.into_inner(),
    );
    assert!(
        decoded >= CASES / 2 && changed_decoded >= CASES / 10 && refused >= CASES / 20,
        "of {CASES} inputs {decoded} decoded ({changed_decoded} of them changed) and {refused} \
         were refused: the property needs all three"
    );
}
