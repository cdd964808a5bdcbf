//! The bodies of the fuzz targets, one function per target, so that the same checks run
//! under libFuzzer (`decode_ws.rs`, `decode_tcp.rs`, `decode_udp.rs`, via cargo-fuzz) and in
//! the workspace's test suite, which replays the seed corpora through them
//! (`crates/coapws-proto/tests/fuzz_seeds.rs`). See `common.rs` for the invariants.
#![allow(dead_code)]

use crate::common::{LIMITS, bytes, check_message, check_monotonic};
use coapws_proto::codec::tcp::{self, StreamDecoder};
use coapws_proto::codec::{udp, ws};
use coapws_proto::{Code, DecodeError, DecodeLimits, Message};

/// RFC 8323 §4.2 WebSocket framing: `ws::decode` on the whole input.
pub fn decode_ws(data: &[u8]) {
    let buf = bytes(data);
    let results: Vec<_> = LIMITS.iter().map(|l| ws::decode(&buf, l)).collect();
    for (r, limits) in results.iter().zip(LIMITS.iter()) {
        let Ok(m) = r else { continue };
        assert!(
            buf.len() <= limits.max_message_size,
            "oversize message accepted"
        );
        let enc = ws::encode(m).expect("ws::encode of a decoded message");
        assert_eq!(enc, buf, "WS re-encoding differs from the input");
        assert_eq!(ws::encoded_len(m).unwrap(), buf.len(), "ws::encoded_len");
        check_message(m, limits);
    }
    check_monotonic(&results);
}

/// What a StreamDecoder made of a stream.
#[derive(Debug, PartialEq)]
struct StreamOutcome {
    messages: Vec<Message>,
    error: Option<DecodeError>,
    /// Bytes buffered at the end (after the last whole message), when no error.
    buffered: usize,
}

fn run_stream(stream: &[u8], chunk: usize, limits: &DecodeLimits) -> StreamOutcome {
    let mut dec = StreamDecoder::new(*limits);
    let mut messages = Vec::new();
    let mut consumed = 0usize;
    let mut pushed = 0usize;
    for piece in stream.chunks(chunk.max(1)) {
        dec.push(piece);
        pushed += piece.len();
        loop {
            match dec.next_message() {
                Ok(Some(m)) => {
                    // The frame it came from is the next `encoded_len` bytes of the stream,
                    // and re-encoding gives exactly those bytes.
                    let enc = tcp::encode(&m).expect("tcp::encode of a streamed message");
                    assert_eq!(tcp::encoded_len(&m).unwrap(), enc.len());
                    assert!(
                        enc.len() <= limits.max_message_size,
                        "oversize frame streamed"
                    );
                    let end = consumed + enc.len();
                    assert!(end <= pushed, "message longer than the bytes pushed");
                    assert_eq!(
                        &enc[..],
                        &stream[consumed..end],
                        "TCP stream re-encoding differs"
                    );
                    // One-shot decode of the same frame agrees.
                    let frame = bytes(&stream[consumed..end]);
                    assert_eq!(tcp::decode(&frame, limits).as_ref(), Ok(&m));
                    consumed = end;
                    assert_eq!(
                        consumed + dec.buffered(),
                        pushed,
                        "stream lost or invented bytes"
                    );
                    check_message(&m, limits);
                    messages.push(m);
                }
                Ok(None) => {
                    assert_eq!(
                        consumed + dec.buffered(),
                        pushed,
                        "stream lost or invented bytes"
                    );
                    // Memory bound: at most one (incomplete) message, or an incomplete header.
                    assert!(
                        dec.buffered() <= limits.max_message_size.max(8),
                        "{} bytes buffered with max_message_size {}",
                        dec.buffered(),
                        limits.max_message_size
                    );
                    break;
                }
                Err(e) => {
                    // A failed stream stays failed.
                    assert!(
                        dec.next_message().is_err(),
                        "stream recovered after an error"
                    );
                    return StreamOutcome {
                        messages,
                        error: Some(e),
                        buffered: 0,
                    };
                }
            }
        }
    }
    StreamOutcome {
        messages,
        error: None,
        buffered: dec.buffered(),
    }
}

/// RFC 8323 §3.2 TCP framing: `tcp::decode` on the input, and `tcp::StreamDecoder` fed the
/// input in chunks. The first byte picks the chunk size (0: the whole input at once; n: n
/// bytes at a time); the rest is the byte stream.
pub fn decode_tcp(data: &[u8]) {
    let Some((&sel, stream)) = data.split_first() else {
        return;
    };
    let chunk = if sel == 0 {
        stream.len()
    } else {
        usize::from(sel)
    };
    let buf = bytes(stream);

    let results: Vec<_> = LIMITS.iter().map(|l| tcp::decode(&buf, l)).collect();
    for (r, limits) in results.iter().zip(LIMITS.iter()) {
        if let Ok(m) = r {
            assert!(
                buf.len() <= limits.max_message_size,
                "oversize message accepted"
            );
            let enc = tcp::encode(m).expect("tcp::encode of a decoded message");
            assert_eq!(enc, buf, "TCP re-encoding differs from the input");
            assert_eq!(tcp::encoded_len(m).unwrap(), buf.len(), "tcp::encoded_len");
            check_message(m, limits);
        }

        let chunked = run_stream(stream, chunk, limits);
        // Chunking must not change what the stream decodes to.
        let whole = run_stream(stream, stream.len(), limits);
        assert_eq!(chunked, whole, "chunk size {chunk} changed the outcome");

        // One-shot decode and the stream agree on a buffer holding exactly one message.
        match r {
            Ok(m) => {
                assert_eq!(whole.messages.as_slice(), std::slice::from_ref(m));
                assert_eq!(whole.error, None);
                assert_eq!(whole.buffered, 0);
            }
            Err(_) => {
                let exactly_one =
                    whole.messages.len() == 1 && whole.error.is_none() && whole.buffered == 0;
                assert!(
                    !exactly_one,
                    "stream decoded one whole message that tcp::decode rejected"
                );
            }
        }
    }
    check_monotonic(&results);
}

/// RFC 7252 §3 datagram framing: `udp::decode` on the whole input.
pub fn decode_udp(data: &[u8]) {
    let buf = bytes(data);
    let results: Vec<_> = LIMITS.iter().map(|l| udp::decode(&buf, l)).collect();
    for (r, limits) in results.iter().zip(LIMITS.iter()) {
        let Ok((h, m)) = r else { continue };
        assert!(
            buf.len() <= limits.max_message_size,
            "oversize datagram accepted"
        );
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
}
