//! One test per row of the malformed-input table in `coapws_proto::codec`.

use bytes::Bytes;
use coapws_proto::codec::{DecodeError, DecodeLimits, tcp, udp, ws};
use coapws_proto::{Code, Message};

fn b(v: &[u8]) -> Bytes {
    Bytes::copy_from_slice(v)
}

const L: DecodeLimits = DecodeLimits::with_max_message_size(1 << 20);

#[test]
fn truncated() {
    assert_eq!(
        ws::decode(&b(&[]), &L),
        Err(DecodeError::Truncated("header"))
    );
    assert_eq!(
        ws::decode(&b(&[0x00]), &L),
        Err(DecodeError::Truncated("header"))
    );
    assert_eq!(
        ws::decode(&b(&[0x02, 0x01, 0xaa]), &L),
        Err(DecodeError::Truncated("token"))
    );
    // option claims 3 bytes, has 1
    assert_eq!(
        ws::decode(&b(&[0x00, 0x01, 0xb3, b'a']), &L),
        Err(DecodeError::Truncated("option value"))
    );
    // option delta 13 with no extension byte
    assert_eq!(
        ws::decode(&b(&[0x00, 0x01, 0xd0]), &L),
        Err(DecodeError::Truncated("option delta"))
    );
    assert_eq!(
        udp::decode(&b(&[0x40, 0x01, 0x00]), &L),
        Err(DecodeError::Truncated("header"))
    );
    assert_eq!(
        tcp::decode(&b(&[0x30, 0x01, 0xb1]), &L),
        Err(DecodeError::Truncated("message"))
    );
    assert_eq!(
        tcp::decode(&b(&[0xd0]), &L),
        Err(DecodeError::Truncated("header"))
    );
}

#[test]
fn bad_version() {
    assert_eq!(
        udp::decode(&b(&[0x80, 0x01, 0, 1]), &L),
        Err(DecodeError::BadVersion(2))
    );
}

#[test]
fn non_zero_len_on_websocket() {
    assert_eq!(
        ws::decode(&b(&[0x30, 0xe1, 0x22, 0x04, 0x80]), &L),
        Err(DecodeError::NonZeroLen(3))
    );
}

#[test]
fn reserved_token_length() {
    for tkl in 9..=15u8 {
        let mut v = vec![tkl, 0x01];
        v.extend(std::iter::repeat_n(0u8, 20));
        assert_eq!(
            ws::decode(&b(&v), &L),
            Err(DecodeError::ReservedTokenLength(tkl))
        );
        let mut u = vec![0x40 | tkl, 0x01, 0, 1];
        u.extend(std::iter::repeat_n(0u8, 20));
        assert_eq!(
            udp::decode(&b(&u), &L),
            Err(DecodeError::ReservedTokenLength(tkl))
        );
    }
    // With extended tokens TKL 13 is fine but 15 is still reserved (RFC 8974).
    let ext = DecodeLimits {
        max_message_size: 1 << 20,
        max_token_len: 64,
    };
    let mut v = vec![0x0d, 0x01, 0x00];
    v.extend([7u8; 13]);
    assert_eq!(ws::decode(&b(&v), &ext).unwrap().token.len(), 13);
    assert_eq!(
        ws::decode(&b(&[0x0f, 0x01, 0, 0]), &ext),
        Err(DecodeError::ReservedTokenLength(15))
    );
}

#[test]
fn token_too_long() {
    let ext = DecodeLimits {
        max_message_size: 1 << 20,
        max_token_len: 16,
    };
    // TKL 13 with extension 10 → 23 bytes, over 16.
    let mut v = vec![0x0d, 0x01, 10];
    v.extend([0u8; 23]);
    assert_eq!(
        ws::decode(&b(&v), &ext),
        Err(DecodeError::TokenTooLong { len: 23, limit: 16 })
    );
}

#[test]
fn option_nibble_15() {
    assert_eq!(
        ws::decode(&b(&[0x00, 0x01, 0xf1, 0x00]), &L),
        Err(DecodeError::OptionNibble15("delta"))
    );
    assert_eq!(
        ws::decode(&b(&[0x00, 0x01, 0x1f, 0x00]), &L),
        Err(DecodeError::OptionNibble15("length"))
    );
}

#[test]
fn option_number_overflow() {
    // 65001 then another delta of 65000 + 269 ...
    let v = [0x00, 0x01, 0xe0, 0xfc, 0xdc, 0xe0, 0xfc, 0xdc];
    assert_eq!(
        ws::decode(&b(&v), &L),
        Err(DecodeError::OptionNumberOverflow)
    );
}

#[test]
fn empty_payload() {
    assert_eq!(
        ws::decode(&b(&[0x00, 0x45, 0xff]), &L),
        Err(DecodeError::EmptyPayload)
    );
    assert_eq!(
        tcp::decode(&b(&[0x10, 0x45, 0xff]), &L),
        Err(DecodeError::EmptyPayload)
    );
    assert_eq!(
        udp::decode(&b(&[0x60, 0x45, 0, 1, 0xff]), &L),
        Err(DecodeError::EmptyPayload)
    );
}

#[test]
fn too_large() {
    let small = DecodeLimits::with_max_message_size(16);
    let m = b(&[0u8; 17]);
    assert_eq!(
        ws::decode(&m, &small),
        Err(DecodeError::TooLarge {
            size: 17,
            limit: 16
        })
    );
    assert_eq!(
        udp::decode(&m, &small),
        Err(DecodeError::TooLarge {
            size: 17,
            limit: 16
        })
    );
    // TCP: known from the header alone: Len 14 → 269 + 0xffff body bytes.
    assert_eq!(
        tcp::frame_size(&[0xe0, 0xff, 0xff], &small),
        Err(DecodeError::TooLarge {
            size: 65804 + 3 + 1,
            limit: 16
        })
    );
    // Len 15 announces up to 4 GiB; rejected before any of it is buffered.
    let mut d = tcp::StreamDecoder::new(small);
    d.push(&[0xf0, 0xff, 0xff, 0xff, 0xff, 0x01]);
    assert!(matches!(
        d.next_message(),
        Err(DecodeError::TooLarge { .. })
    ));
    assert_eq!(d.buffered(), 0);
}

#[test]
fn empty_not_empty() {
    assert_eq!(
        udp::decode(&b(&[0x40, 0x00, 0x12, 0x34]), &L),
        Ok((
            udp::UdpHeader {
                mtype: udp::MessageType::Confirmable,
                message_id: 0x1234
            },
            Message::new(Code::EMPTY)
        )),
        "a CoAP ping: an empty Confirmable message"
    );
    assert_eq!(
        udp::decode(&b(&[0x41, 0x00, 0x12, 0x34, 0x01]), &L),
        Err(DecodeError::EmptyNotEmpty)
    );
    assert_eq!(
        udp::decode(&b(&[0x40, 0x00, 0x12, 0x34, 0xc0]), &L),
        Err(DecodeError::EmptyNotEmpty)
    );
}

#[test]
fn trailing_bytes() {
    assert_eq!(
        tcp::decode(&b(&[0x00, 0xe2, 0x00]), &L),
        Err(DecodeError::TrailingBytes(1))
    );
}

#[test]
fn stream_decoder_reassembles_any_split() {
    let msgs: Vec<_> = (0..5u8)
        .map(|i| {
            coapws_proto::Message::response(coapws_proto::Code::CONTENT, vec![i; 300 * i as usize])
                .with_token(coapws_proto::Token::new(vec![i]))
        })
        .collect();
    let mut stream = Vec::new();
    for m in &msgs {
        stream.extend_from_slice(&tcp::encode(m).unwrap());
    }
    for chunk in [1usize, 2, 3, 7, 100, 4096] {
        let mut d = tcp::StreamDecoder::new(L);
        let mut got = Vec::new();
        for c in stream.chunks(chunk) {
            d.push(c);
            while let Some(m) = d.next_message().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, msgs, "chunk size {chunk}");
        assert_eq!(d.buffered(), 0);
    }
}
