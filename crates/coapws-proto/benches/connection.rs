//! Criterion micro-benchmarks of the RFC 8323 connection machine, established (CSMs
//! exchanged) over WebSocket and TCP framing: the server side taking a GET and sending its
//! 2.05, and the client side sending a GET and taking its 2.05 (no I/O: frames in, frames out).
//! `cargo bench -p coapws-proto --bench connection` (add `-- --quick` for a short run).

// criterion_group! defines an undocumented public function.
#![allow(missing_docs)]

use bytes::Bytes;
use coapws_proto::codec::{tcp, ws};
use coapws_proto::connection::{Connection, ConnectionConfig, Event, Framing};
use coapws_proto::{Code, Message, Token};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Instant;

fn deliver(c: &mut Connection, framing: Framing, frame: Bytes, now: Instant) {
    match framing {
        Framing::WebSocket => c.handle_frame(frame, now),
        Framing::Tcp => c.handle_bytes(&frame, now),
    }
}

/// A client and a server machine with their CSMs exchanged and the events drained.
fn established(framing: Framing, now: Instant) -> (Connection, Connection) {
    let mut client = Connection::new(framing, ConnectionConfig::default(), now);
    let mut server = Connection::new(framing, ConnectionConfig::default(), now);
    loop {
        let mut moved = false;
        while let Some(f) = client.poll_transmit() {
            deliver(&mut server, framing, f, now);
            moved = true;
        }
        while let Some(f) = server.poll_transmit() {
            deliver(&mut client, framing, f, now);
            moved = true;
        }
        if !moved {
            break;
        }
    }
    while client.poll_event().is_some() {}
    while server.poll_event().is_some() {}
    (client, server)
}

fn encode(framing: Framing, m: &Message) -> Bytes {
    match framing {
        Framing::WebSocket => ws::encode(m),
        Framing::Tcp => tcp::encode(m),
    }
    .expect("encodes")
}

fn machine(c: &mut Criterion) {
    let token = Token::from_u64(0xcafe_0042);
    let get = Message::request(Code::GET, "/sensors/temp").with_token(token.clone());
    let content = Message::response(Code::CONTENT, &b"Hello, CoAP over WebSockets!"[..])
        .with_token(token.clone())
        .with_content_format(0);
    for (name, framing) in [("ws", Framing::WebSocket), ("tcp", Framing::Tcp)] {
        let now = Instant::now();
        let mut g = c.benchmark_group(format!("connection/{name}"));
        let (_, mut server) = established(framing, now);
        let request_frame = encode(framing, &get);
        g.bench_function("server: request in, 2.05 out", |b| {
            b.iter(|| {
                deliver(&mut server, framing, black_box(request_frame.clone()), now);
                let Some(Event::Request(m)) = server.poll_event() else {
                    panic!("no request event");
                };
                let answer = content.clone().with_token(m.token);
                server.send_response(&answer).expect("response sent");
                black_box(server.poll_transmit().expect("a response frame"))
            })
        });
        let (mut client, _) = established(framing, now);
        let response_frame = encode(framing, &content);
        g.bench_function("client: request out, 2.05 in", |b| {
            b.iter(|| {
                client.send_request(black_box(&get)).expect("request sent");
                black_box(client.poll_transmit().expect("a request frame"));
                deliver(&mut client, framing, response_frame.clone(), now);
                let Some(Event::Response(m)) = client.poll_event() else {
                    panic!("no response event");
                };
                black_box(m)
            })
        });
        g.finish();
    }
}

criterion_group!(benches, machine);
criterion_main!(benches);
