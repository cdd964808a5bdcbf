//! Regression tests for defects an audit found in the sans-IO core, one per defect.

use bytes::Bytes;
use coapws_proto::codec::ws;
use coapws_proto::connection::{Connection, ConnectionConfig, Framing, State};
use coapws_proto::signaling::{Csm, Signal};
use coapws_proto::{Code, Message, Token};
use std::time::{Duration, Instant};

fn frame(s: &Signal) -> Bytes {
    ws::encode(&s.to_message(Token::EMPTY)).unwrap()
}

fn release() -> Bytes {
    frame(&Signal::Release {
        alternative_addresses: Vec::new(),
        hold_off: None,
    })
}

/// An open WebSocket-framed connection with the default config (release_timeout 5 s).
fn open(now: Instant) -> Connection {
    let mut c = Connection::new(Framing::WebSocket, ConnectionConfig::default(), now);
    c.handle_frame(frame(&Signal::Csm(Csm::default())), now);
    while c.poll_transmit().is_some() {}
    while c.poll_event().is_some() {}
    assert_eq!(c.state(), State::Open);
    c
}

/// Drives `c` from `start` to `start + total` in `step`s; a peer Release arrives each step.
fn peer_keeps_releasing(c: &mut Connection, start: Instant, step: Duration, total: Duration) {
    let mut now = start;
    while now < start + total {
        now += step;
        if let Some(d) = c.poll_timeout()
            && d <= now
        {
            c.handle_timeout(now);
        }
        c.handle_frame(release(), now);
        while c.poll_transmit().is_some() {}
        while c.poll_event().is_some() {}
    }
}

/// connection.rs `Signal::Release` arm: every Release from the peer sets
/// `deadline = now + release_timeout`, so a peer that repeats Release more often than the
/// release timeout keeps a connection we are releasing (`Endpoint::shutdown`) open forever.
#[test]
fn peer_release_cannot_postpone_our_release_forever() {
    let t0 = Instant::now();
    let mut c = open(t0);
    c.release(t0);
    while c.poll_transmit().is_some() {}
    assert_eq!(c.state(), State::Releasing);
    // A Release every 4 s (below the 5 s release_timeout), for one minute.
    peer_keeps_releasing(&mut c, t0, Duration::from_secs(4), Duration::from_secs(60));
    assert_eq!(
        c.state(),
        State::Closed,
        "60 s after our Release (release_timeout 5 s) the connection is still {:?}",
        c.state()
    );
}

/// Same arm, after the peer's own Release: with one of its requests still unanswered (a slow
/// handler), each repeated Release moves the deadline again and the connection never ends.
#[test]
fn repeated_peer_release_cannot_postpone_the_release_deadline() {
    let t0 = Instant::now();
    let mut c = open(t0);
    let req = Message::request(Code::GET, "/slow").with_token(Token::new(vec![1]));
    c.handle_frame(ws::encode(&req).unwrap(), t0);
    while c.poll_event().is_some() {}
    peer_keeps_releasing(&mut c, t0, Duration::from_secs(4), Duration::from_secs(60));
    assert_eq!(
        c.state(),
        State::Closed,
        "60 s after the peer's first Release (release_timeout 5 s) the connection is still {:?}",
        c.state()
    );
}

#[test]
fn abort_instead_of_csm_is_the_peers_ending() {
    use coapws_proto::connection::{ConnectionError, Event};
    let now = std::time::Instant::now();
    let mut c = Connection::new(Framing::WebSocket, ConnectionConfig::default(), now);
    while c.poll_transmit().is_some() {}
    c.handle_frame(Bytes::from_static(&[0x00, 0xe5, 0xff, b'n', b'o']), now);
    assert_eq!(c.poll_transmit(), None, "no Abort answered to an Abort");
    assert_eq!(
        c.poll_event(),
        Some(Event::Closed(ConnectionError::PeerAborted("no".into())))
    );
}
