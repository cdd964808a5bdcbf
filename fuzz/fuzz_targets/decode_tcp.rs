//! RFC 8323 §3.2 TCP framing: `tcp::decode` on the input, and `tcp::StreamDecoder` fed the
//! input in chunks.
//!
//! The first byte picks the chunk size (0: the whole input at once; n: n bytes at a time);
//! the rest is the byte stream.
#![no_main]

mod common;

use coapws_proto::codec::tcp::{self, StreamDecoder};
use coapws_proto::{DecodeError, DecodeLimits, Message};
use common::{LIMITS, bytes, check_message, check_monotonic};
use libfuzzer_sys::fuzz_target;

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
                    assert!(enc.len() <= limits.max_message_size, "oversize frame streamed");
                    let end = consumed + enc.len();
                    assert!(end <= pushed, "message longer than the bytes pushed");
                    assert_eq!(&enc[..], &stream[consumed..end], "TCP stream re-encoding differs");
                    // One-shot decode of the same frame agrees.
                    let frame = bytes(&stream[consumed..end]);
                    assert_eq!(tcp::decode(&frame, limits).as_ref(), Ok(&m));
                    consumed = end;
                    assert_eq!(consumed + dec.buffered(), pushed, "stream lost or invented bytes");
                    check_message(&m, limits);
                    messages.push(m);
                }
                Ok(None) => {
                    assert_eq!(consumed + dec.buffered(), pushed, "stream lost or invented bytes");
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
                    assert!(dec.next_message().is_err(), "stream recovered after an error");
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

fuzz_target!(|data: &[u8]| {
    let Some((&sel, stream)) = data.split_first() else {
        return;
    };
    let chunk = if sel == 0 { stream.len() } else { usize::from(sel) };
    let buf = bytes(stream);

    let results: Vec<_> = LIMITS.iter().map(|l| tcp::decode(&buf, l)).collect();
    for (r, limits) in results.iter().zip(LIMITS.iter()) {
        if let Ok(m) = r {
            assert!(buf.len() <= limits.max_message_size, "oversize message accepted");
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
                assert!(!exactly_one, "stream decoded one whole message that tcp::decode rejected");
            }
        }
    }
    check_monotonic(&results);
});
