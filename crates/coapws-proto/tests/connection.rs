//! The RFC 8323 connection machine, driven as a pair on virtual time (no sockets, no sleeps).

use bytes::Bytes;
use coapws_proto::codec::ws;
use coapws_proto::connection::{
    AbortReason, Connection, ConnectionConfig, ConnectionError, Event, Framing, SendError, State,
};
use coapws_proto::signaling::{Csm, Signal};
use coapws_proto::{Code, Message, Token};
use std::time::{Duration, Instant};

fn hex(s: &str) -> Bytes {
    let d: String = s.split_whitespace().collect();
    Bytes::from(
        (0..d.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&d[i..i + 2], 16).unwrap())
            .collect::<Vec<_>>(),
    )
}

struct Pair {
    a: Connection,
    b: Connection,
    now: Instant,
    framing: Framing,
}

impl Pair {
    fn new(framing: Framing) -> Pair {
        let now = Instant::now();
        Pair {
            a: Connection::new(framing, ConnectionConfig::default(), now),
            b: Connection::new(framing, ConnectionConfig::default(), now),
            now,
            framing,
        }
    }
    /// Moves frames both ways until both are quiet.
    fn drive(&mut self) {
        loop {
            let mut moved = false;
            while let Some(f) = self.a.poll_transmit() {
                deliver(&mut self.b, self.framing, f, self.now);
                moved = true;
            }
            while let Some(f) = self.b.poll_transmit() {
                deliver(&mut self.a, self.framing, f, self.now);
                moved = true;
            }
            if !moved {
                break;
            }
        }
    }
}

fn deliver(c: &mut Connection, framing: Framing, f: Bytes, now: Instant) {
    match framing {
        Framing::WebSocket => c.handle_frame(f, now),
        // Byte at a time: the stream decoder must reassemble.
        Framing::Tcp => f.chunks(1).for_each(|b| c.handle_bytes(b, now)),
    }
}

fn events(c: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn established(framing: Framing) -> Pair {
    let mut p = Pair::new(framing);
    p.drive();
    assert!(matches!(events(&mut p.a)[..], [Event::Established(_)]));
    assert!(matches!(events(&mut p.b)[..], [Event::Established(_)]));
    assert_eq!(p.a.state(), State::Open);
    assert_eq!(p.a.peer_max_message_size(), 1 << 20);
    p
}

#[test]
fn csm_is_first_and_settings_are_learnt() {
    let now = Instant::now();
    let mut c = Connection::new(Framing::WebSocket, ConnectionConfig::default(), now);
    let first = c.poll_transmit().unwrap();
    assert_eq!(first, hex("00 e1 23 10 00 00 20"));
    // aiocoap's CSM
    c.handle_frame(hex("00 e1 23 10 00 00 20"), now);
    assert!(c.peer_settings().bert());
}

#[test]
fn request_response_both_ways() {
    for framing in [Framing::WebSocket, Framing::Tcp] {
        let mut p = established(framing);
        let req = Message::request(Code::GET, "/hello").with_token(Token::new(vec![7]));
        p.a.send_request(&req).unwrap();
        assert_eq!(
            p.a.send_request(&req),
            Err(SendError::TokenInUse(Token::new(vec![7])))
        );
        // role reversal: b asks a on the same connection, same token value
        let back = Message::request(Code::GET, "/who").with_token(Token::new(vec![7]));
        p.b.send_request(&back).unwrap();
        p.drive();
        assert_eq!(events(&mut p.b), [Event::Request(req.clone())]);
        assert_eq!(events(&mut p.a), [Event::Request(back.clone())]);
        let resp = Message::response(Code::CONTENT, "hi").with_token(Token::new(vec![7]));
        p.b.send_response(&resp).unwrap();
        p.a.send_response(&Message::response(Code::CONTENT, "a").with_token(Token::new(vec![7])))
            .unwrap();
        p.drive();
        assert_eq!(events(&mut p.a), [Event::Response(resp)]);
        assert_eq!(events(&mut p.b).len(), 1);
        assert_eq!(p.a.outstanding_requests(), 0);
        // a stray response is ignored
        p.b.send_response(
            &Message::response(Code::CONTENT, "late").with_token(Token::new(vec![9])),
        )
        .unwrap();
        p.drive();
        assert!(events(&mut p.a).is_empty());
    }
}

#[test]
fn missing_csm_aborts() {
    let now = Instant::now();
    let mut c = Connection::new(Framing::WebSocket, ConnectionConfig::default(), now);
    c.poll_transmit();
    // empty message first is fine
    c.handle_frame(hex("00 00"), now);
    assert_eq!(c.state(), State::AwaitingCsm);
    c.handle_frame(hex("01 01 01 b1 61"), now);
    let abort = c.poll_transmit().unwrap();
    let m = ws::decode(&abort, &Default::default()).unwrap();
    assert_eq!(m.code, Code::ABORT);
    assert!(m.payload_text().contains("CSM"));
    assert_eq!(
        events(&mut c),
        [Event::Closed(ConnectionError::Aborted(
            AbortReason::MissingCsm
        ))]
    );
    assert_eq!(c.poll_close().unwrap().websocket_close_code(), 1002);
}

#[test]
fn text_frame_and_format_error() {
    let now = Instant::now();
    let mut c = Connection::new(Framing::WebSocket, ConnectionConfig::default(), now);
    c.poll_transmit();
    c.handle_text_frame();
    let m = ws::decode(&c.poll_transmit().unwrap(), &Default::default()).unwrap();
    assert_eq!(m.code, Code::ABORT);
    assert_eq!(m.payload_text(), "Text frame received");
    assert_eq!(c.poll_close().unwrap().websocket_close_code(), 1003);

    let mut c = Connection::new(Framing::WebSocket, ConnectionConfig::default(), now);
    c.poll_transmit();
    c.handle_frame(hex("30 e1"), now);
    let m = ws::decode(&c.poll_transmit().unwrap(), &Default::default()).unwrap();
    assert_eq!(m.code, Code::ABORT);
    assert!(
        m.payload_text().starts_with("Format error"),
        "{}",
        m.payload_text()
    );
    assert_eq!(c.poll_close().unwrap().websocket_close_code(), 1007);
    assert!(c.poll_transmit().is_none());
    // nothing more is processed
    c.handle_frame(hex("00 e1"), now);
    assert!(c.poll_transmit().is_none());
    assert_eq!(events(&mut c).len(), 1);
}

#[test]
fn bad_csm_option_abort_vector() {
    let now = Instant::now();
    let mut c = Connection::new(Framing::WebSocket, ConnectionConfig::default(), now);
    c.poll_transmit();
    c.handle_frame(hex("00 e1 b0"), now);
    let abort = c.poll_transmit().unwrap();
    assert_eq!(&abort[..4], &hex("00 e5 21 0b")[..]);
}

#[test]
fn ping_pong_and_custody() {
    let mut p = established(Framing::WebSocket);
    p.a.ping(Token::new(vec![0x42]), false);
    p.drive();
    assert_eq!(events(&mut p.a), [Event::Pong(Token::new(vec![0x42]))]);

    // Custody: b holds the Pong until the request it had when the Ping came is answered.
    let req = Message::request(Code::GET, "/slow").with_token(Token::new(vec![1]));
    p.a.send_request(&req).unwrap();
    p.drive();
    events(&mut p.b);
    p.a.ping(Token::new(vec![0x43]), true);
    p.drive();
    assert!(events(&mut p.a).is_empty());
    p.b.send_response(&Message::response(Code::CONTENT, "x").with_token(Token::new(vec![1])))
        .unwrap();
    p.drive();
    let ev = events(&mut p.a);
    assert!(
        matches!(&ev[..], [Event::Response(_), Event::Pong(t)] if t.as_bytes() == [0x43]),
        "{ev:?}"
    );
}

#[test]
fn release_answers_outstanding_then_closes() {
    let mut p = established(Framing::Tcp);
    let req = Message::request(Code::GET, "/x").with_token(Token::new(vec![1]));
    p.a.send_request(&req).unwrap();
    p.drive();
    events(&mut p.b);
    p.a.release(p.now);
    assert_eq!(p.a.send_request(&req), Err(SendError::Closing));
    p.drive();
    let ev = events(&mut p.b);
    assert!(matches!(ev[..], [Event::PeerReleasing { .. }]));
    assert_eq!(p.b.state(), State::PeerReleasing);
    assert!(
        p.b.poll_close().is_none(),
        "must answer the outstanding request first"
    );
    p.b.send_response(&Message::response(Code::CONTENT, "x").with_token(Token::new(vec![1])))
        .unwrap();
    assert_eq!(p.b.poll_close(), Some(&ConnectionError::PeerReleased));
    p.drive();
    assert!(matches!(events(&mut p.a)[..], [Event::Response(_)]));
    // b closes the transport; a sees it as the end of its release
    p.a.handle_transport_closed();
    assert_eq!(events(&mut p.a), [Event::Closed(ConnectionError::Released)]);
}

#[test]
fn release_times_out() {
    let mut p = established(Framing::WebSocket);
    p.a.release(p.now);
    let t = p.a.poll_timeout().unwrap();
    p.a.handle_timeout(t - Duration::from_millis(1));
    assert!(p.a.poll_close().is_none());
    p.a.handle_timeout(t);
    assert_eq!(p.a.poll_close(), Some(&ConnectionError::Released));
}

#[test]
fn peer_abort_and_transport_loss_end_everything() {
    let mut p = established(Framing::WebSocket);
    p.a.send_request(&Message::request(Code::GET, "/x").with_token(Token::new(vec![1])))
        .unwrap();
    p.drive();
    p.b.abort(AbortReason::CsmTimeout);
    p.drive();
    assert_eq!(
        events(&mut p.a),
        [Event::Closed(ConnectionError::PeerAborted(
            "No CSM received in time".into()
        ))]
    );
    assert_eq!(p.a.outstanding_requests(), 0);
    assert!(matches!(
        p.a.send_request(&Message::request(Code::GET, "/y")),
        Err(SendError::Closing)
    ));

    let mut p = established(Framing::Tcp);
    p.a.handle_transport_closed();
    assert_eq!(
        events(&mut p.a),
        [Event::Closed(ConnectionError::TransportClosed)]
    );
    p.a.handle_transport_closed();
    assert!(events(&mut p.a).is_empty(), "exactly one Closed");
}

#[test]
fn csm_timeout() {
    let now = Instant::now();
    let mut c = Connection::new(Framing::Tcp, ConnectionConfig::default(), now);
    let t = c.poll_timeout().unwrap();
    c.handle_timeout(t);
    assert_eq!(
        c.poll_close(),
        Some(&ConnectionError::Aborted(AbortReason::CsmTimeout))
    );
}

#[test]
fn never_larger_than_peer_max_message_size() {
    let now = Instant::now();
    let small = ConnectionConfig {
        max_message_size: 1152,
        ..Default::default()
    };
    let mut a = Connection::new(Framing::WebSocket, ConnectionConfig::default(), now);
    let mut b = Connection::new(Framing::WebSocket, small, now);
    // a sends a 5000-byte request before b's CSM: held, not sent
    let big = Message::request(Code::POST, "/x")
        .with_token(Token::new(vec![1]))
        .with_payload(vec![0u8; 5000]);
    a.send_request(&big).unwrap();
    let a_out: Vec<Bytes> = std::iter::from_fn(|| a.poll_transmit()).collect();
    assert_eq!(a_out.len(), 1, "only the CSM goes out");
    let csm = b.poll_transmit().unwrap();
    a.handle_frame(csm, now);
    assert!(a.poll_transmit().is_none());
    let ev = events(&mut a);
    assert!(
        matches!(
            &ev[1],
            Event::SendFailed {
                error: SendError::TooLarge { limit: 1152, .. },
                ..
            }
        ),
        "{ev:?}"
    );
    assert_eq!(a.outstanding_requests(), 0);
    // and once known, it is refused synchronously
    let big2 = big.clone().with_token(Token::new(vec![2]));
    assert!(matches!(
        a.send_request(&big2),
        Err(SendError::TooLarge { .. })
    ));
    // while a peer that allows it gets it after its CSM
    let mut p = Pair::new(Framing::WebSocket);
    p.a.send_request(&big).unwrap();
    p.drive();
    let ev = events(&mut p.b);
    assert!(
        matches!(&ev[1], Event::Request(m) if m.payload.len() == 5000),
        "{ev:?}"
    );
}

#[test]
fn custody_waits_are_bounded() {
    use coapws_proto::connection::MAX_CUSTODY_WAITS;
    let mut p = established(Framing::WebSocket);
    p.a.send_request(&Message::request(Code::GET, "/slow").with_token(Token::new(vec![1])))
        .unwrap();
    p.drive();
    events(&mut p.b);
    for i in 0..20u8 {
        p.a.ping(Token::new(vec![0x80, i]), true);
    }
    p.drive();
    let pongs = events(&mut p.a).len();
    assert_eq!(
        pongs,
        20 - MAX_CUSTODY_WAITS,
        "the rest are answered at once"
    );
    p.b.send_response(&Message::response(Code::CONTENT, "x").with_token(Token::new(vec![1])))
        .unwrap();
    p.drive();
    assert_eq!(events(&mut p.a).len(), 1 + MAX_CUSTODY_WAITS);
}

mod garbage {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Arbitrary frames and stream bytes, after a valid CSM or not, never panic; whatever
        /// happens, at most one Closed comes out and a closed connection sends nothing more.
        #[test]
        fn arbitrary_input_never_panics(
            csm_first in any::<bool>(),
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..20),
            tcp in any::<bool>(),
        ) {
            let now = Instant::now();
            let framing = if tcp { Framing::Tcp } else { Framing::WebSocket };
            let mut c = Connection::new(framing, ConnectionConfig::default(), now);
            while c.poll_transmit().is_some() {}
            let feed = |c: &mut Connection, b: &[u8]| match framing {
                Framing::Tcp => c.handle_bytes(b, now),
                Framing::WebSocket => c.handle_frame(Bytes::copy_from_slice(b), now),
            };
            if csm_first {
                // an empty CSM reads the same in both framings
                feed(&mut c, &[0x00, 0xe1]);
            }
            let mut closed = 0;
            for f in &frames {
                feed(&mut c, f);
                // answer every request so that nothing stays outstanding
                while let Some(ev) = c.poll_event() {
                    match ev {
                        Event::Request(m) => {
                            let _ = c.send_response(&Message::response(Code::CONTENT, "").with_token(m.token));
                        }
                        Event::Closed(_) => closed += 1,
                        _ => {}
                    }
                }
                let was_closed = c.state() == State::Closed;
                while c.poll_transmit().is_some() {}
                if was_closed {
                    feed(&mut c, &[0x00, 0xe2]);
                    prop_assert!(c.poll_transmit().is_none());
                }
            }
            prop_assert!(closed <= 1);
            c.handle_timeout(now + Duration::from_secs(3600));
            while let Some(ev) = c.poll_event() {
                if matches!(ev, Event::Closed(_)) { closed += 1; }
            }
            prop_assert!(closed <= 1);
        }
    }
}

/// A pair where `a` pings after `every` of silence.
fn keepalive_pair(every: Duration) -> Pair {
    let now = Instant::now();
    let config = ConnectionConfig {
        keepalive: Some(every),
        ..ConnectionConfig::default()
    };
    let mut p = Pair {
        a: Connection::new(Framing::WebSocket, config, now),
        b: Connection::new(Framing::WebSocket, ConnectionConfig::default(), now),
        now,
        framing: Framing::WebSocket,
    };
    p.drive();
    events(&mut p.a);
    events(&mut p.b);
    p
}

#[test]
fn keepalive_pings_a_silent_peer_and_its_pong_keeps_the_connection() {
    let every = Duration::from_secs(30);
    let mut p = keepalive_pair(every);
    assert_eq!(p.a.poll_timeout(), Some(p.now + every));
    p.now += every;
    p.a.handle_timeout(p.now);
    let ping = p.a.poll_transmit().expect("a Ping after the silence");
    assert_eq!(
        ws::decode(&ping, &Default::default()).unwrap().code,
        Code::PING
    );
    // b answers with Pong: the connection stays, the next Ping comes after another silence.
    deliver(&mut p.b, Framing::WebSocket, ping, p.now);
    p.now += Duration::from_millis(5);
    p.drive();
    assert_eq!(p.a.state(), State::Open);
    assert_eq!(p.a.poll_timeout(), Some(p.now + every));
}

#[test]
fn keepalive_aborts_when_no_pong_comes() {
    let every = Duration::from_secs(30);
    let mut p = keepalive_pair(every);
    p.now += every;
    p.a.handle_timeout(p.now);
    assert!(p.a.poll_transmit().is_some(), "the Ping");
    // b is gone: nothing arrives.
    assert_eq!(p.a.poll_timeout(), Some(p.now + every));
    p.now += every;
    p.a.handle_timeout(p.now);
    assert_eq!(p.a.state(), State::Closed);
    let abort =
        p.a.poll_transmit()
            .expect("an Abort, in case the peer still listens");
    assert_eq!(
        ws::decode(&abort, &Default::default()).unwrap().code,
        Code::ABORT
    );
    assert!(matches!(
        &events(&mut p.a)[..],
        [Event::Closed(ConnectionError::Aborted(AbortReason::NoPong))]
    ));
}

#[test]
fn keepalive_does_not_ping_while_traffic_arrives() {
    let every = Duration::from_secs(30);
    let mut p = keepalive_pair(every);
    for _ in 0..5 {
        p.now += every / 2;
        p.a.handle_timeout(p.now);
        assert!(
            p.a.poll_transmit().is_none(),
            "no Ping: b spoke within the interval"
        );
        let req = Message::request(Code::GET, "/x").with_token(Token::new(vec![1]));
        p.b.send_request(&req).unwrap();
        p.drive();
        events(&mut p.a);
        let resp = Message::new(Code::CONTENT).with_token(Token::new(vec![1]));
        p.a.send_response(&resp).unwrap();
        p.drive();
        events(&mut p.b);
    }
    assert_eq!(p.a.state(), State::Open);
}

/// A peer announcing a Max-Message-Size no answer fits in used to get silence for every
/// request (each response, and the 5.00 instead, was too large to send): its CSM is now
/// refused with an Abort naming the option.
#[test]
fn a_max_message_size_too_small_for_any_answer_is_refused() {
    let now = Instant::now();
    let mut c = Connection::new(Framing::WebSocket, ConnectionConfig::default(), now);
    while c.poll_transmit().is_some() {}
    // CSM with Max-Message-Size 1 (option 2, one byte).
    c.handle_frame(hex("00 e1 21 01"), now);
    assert_eq!(c.state(), State::Closed);
    let abort = ws::decode(&c.poll_transmit().expect("an Abort"), &Default::default()).unwrap();
    assert_eq!(abort.code, Code::ABORT);
    // Bad-CSM-Option (2) names option 2.
    assert_eq!(
        abort.options.get_uint(coapws_proto::OptionNumber(2)),
        Some(2)
    );
}

/// Found by the `connection` fuzz target: a `release()` before the peer's CSM moved the
/// connection out of `AwaitingCsm`, and the CSM that came next was taken as a settings change
/// (no `Event::Established`) while anything else the peer sent first was accepted.
#[test]
fn release_before_peer_csm_still_reports_established() {
    let now = Instant::now();
    let mut c = Connection::new(Framing::WebSocket, ConnectionConfig::default(), now);
    c.poll_transmit();
    c.release(now);
    assert_eq!(c.state(), State::Releasing);
    c.handle_frame(hex("00 e1 23 10 00 00 20"), now);
    let ev = events(&mut c);
    assert!(
        matches!(ev[..], [Event::Established(s)] if s.bert()),
        "the first CSM establishes even while releasing: {ev:?}"
    );
    assert_eq!(c.state(), State::Releasing);
    // The release deadline still runs.
    assert!(c.poll_timeout().is_some());
}

#[test]
fn release_before_peer_csm_still_requires_csm_first() {
    let now = Instant::now();
    let mut c = Connection::new(Framing::WebSocket, ConnectionConfig::default(), now);
    c.poll_transmit();
    c.release(now);
    c.poll_transmit();
    // A GET before any CSM is a missing CSM, released or not.
    let get = ws::encode(&Message::request(Code::GET, "/x").with_token(Token::new(vec![1])));
    c.handle_frame(get.unwrap(), now);
    assert_eq!(
        events(&mut c),
        [Event::Closed(ConnectionError::Aborted(
            AbortReason::MissingCsm
        ))]
    );
}

/// Found by the `connection` fuzz target: our Abort carried its whole diagnostic even when
/// that made it larger than the Max-Message-Size the peer's CSM announced (here the smallest
/// one a CSM may announce, and a diagnostic longer than that).
#[test]
fn abort_diagnostic_fits_peer_max_message_size() {
    let limit = coapws_proto::signaling::MIN_MAX_MESSAGE_SIZE;
    let reason = || {
        AbortReason::Format(coapws_proto::DecodeError::TooLarge {
            size: 123_456_789_012,
            limit: 1_048_576,
        })
    };
    assert!(
        reason().to_string().len() > limit as usize,
        "a long diagnostic"
    );
    for framing in [Framing::WebSocket, Framing::Tcp] {
        let now = Instant::now();
        let mut c = Connection::new(framing, ConnectionConfig::default(), now);
        c.poll_transmit();
        let csm = Signal::Csm(Csm {
            max_message_size: Some(limit),
            ..Csm::default()
        })
        .to_message(Token::EMPTY);
        deliver(&mut c, framing, encode(framing, &csm), now);
        assert_eq!(c.state(), State::Open);
        c.abort(reason());
        let abort = c.poll_transmit().unwrap();
        assert!(
            abort.len() <= limit as usize,
            "{} bytes to a peer taking {limit}",
            abort.len()
        );
        let m = decode(framing, &abort);
        let Ok(Signal::Abort { diagnostic, .. }) = Signal::parse(&m) else {
            panic!("not an Abort: {m:?}");
        };
        assert!(!diagnostic.is_empty());
        assert!(reason().to_string().starts_with(&diagnostic));
        // A roomy peer gets all of it.
        let mut c = Connection::new(framing, ConnectionConfig::default(), now);
        c.poll_transmit();
        c.abort(reason());
        let m = decode(framing, &c.poll_transmit().unwrap());
        assert_eq!(m.payload_text(), reason().to_string());
    }
}

fn encode(framing: Framing, m: &Message) -> Bytes {
    match framing {
        Framing::WebSocket => ws::encode(m).unwrap(),
        Framing::Tcp => coapws_proto::codec::tcp::encode(m).unwrap(),
    }
}

fn decode(framing: Framing, b: &Bytes) -> Message {
    let limits = coapws_proto::DecodeLimits::default();
    match framing {
        Framing::WebSocket => ws::decode(b, &limits).unwrap(),
        Framing::Tcp => coapws_proto::codec::tcp::decode(b, &limits).unwrap(),
    }
}
