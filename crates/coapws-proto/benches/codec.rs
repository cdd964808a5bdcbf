//! Criterion micro-benchmarks of the codecs: encode and decode of a typical GET and its 2.05
//! response in WebSocket (RFC 8323 §4), TCP (RFC 8323 §3) and UDP (RFC 7252 §3) framing.
//! `cargo bench -p coapws-proto --bench codec` (add `-- --quick` for a short run).

// criterion_group! defines an undocumented public function.
#![allow(missing_docs)]

use bytes::Bytes;
use coapws_proto::codec::udp::{MessageType, UdpHeader};
use coapws_proto::codec::{tcp, udp, ws};
use coapws_proto::{Code, DecodeLimits, Message, Token};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

/// GET /sensors/temp with a 4-byte token, as a client sends it.
fn get() -> Message {
    Message::request(Code::GET, "/sensors/temp").with_token(Token::from_u64(0xcafe_0042))
}

/// 2.05 Content, text/plain, 28 bytes (coapws's demo /hello), same token.
fn content() -> Message {
    Message::response(Code::CONTENT, &b"Hello, CoAP over WebSockets!"[..])
        .with_token(Token::from_u64(0xcafe_0042))
        .with_content_format(0)
}

fn codecs(c: &mut Criterion) {
    let limits = DecodeLimits::default();
    let header = UdpHeader {
        mtype: MessageType::Confirmable,
        message_id: 0x1234,
    };
    for (name, m) in [("get", get()), ("2.05", content())] {
        let mut g = c.benchmark_group(format!("codec/{name}"));
        g.bench_function("ws encode", |b| b.iter(|| ws::encode(black_box(&m))));
        g.bench_function("tcp encode", |b| b.iter(|| tcp::encode(black_box(&m))));
        g.bench_function("udp encode", |b| {
            b.iter(|| udp::encode(black_box(&header), black_box(&m)))
        });
        let wire: Bytes = ws::encode(&m).expect("encodes");
        g.bench_function("ws decode", |b| {
            b.iter(|| ws::decode(black_box(&wire), &limits))
        });
        let wire: Bytes = tcp::encode(&m).expect("encodes");
        g.bench_function("tcp decode", |b| {
            b.iter(|| tcp::decode(black_box(&wire), &limits))
        });
        let wire: Bytes = udp::encode(&header, &m).expect("encodes");
        g.bench_function("udp decode", |b| {
            b.iter(|| udp::decode(black_box(&wire), &limits))
        });
        g.finish();
    }
}

criterion_group!(benches, codecs);
criterion_main!(benches);
