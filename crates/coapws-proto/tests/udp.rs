//! The RFC 7252 message layer, driven on virtual time (no sockets, no sleeps): vectors,
//! retransmission timing, deduplication, NSTART, and a lossy-network property test.

use bytes::Bytes;
use coapws_proto::codec::udp::{self as wire, MessageType, UdpHeader};
use coapws_proto::udp::{
    DropReason, MessageLayer, RequestKey, UdpConfig, UdpEvent, UdpRequestError, UdpSendError,
};
use coapws_proto::{Code, DecodeLimits, Message, OptionNumber, Token};
use proptest::prelude::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

type Addr = u32;
const CLIENT: Addr = 1;
const SERVER: Addr = 2;

fn hex(s: &str) -> Bytes {
    let d: String = s.split_whitespace().collect();
    Bytes::from(
        (0..d.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&d[i..i + 2], 16).unwrap())
            .collect::<Vec<_>>(),
    )
}

fn decode(d: &Bytes) -> (UdpHeader, Message) {
    wire::decode(d, &DecodeLimits::default()).unwrap()
}

fn mid_of(d: &Bytes) -> u16 {
    decode(d).0.message_id
}

fn empty(mtype: MessageType, mid: u16) -> Bytes {
    wire::encode(
        &UdpHeader {
            mtype,
            message_id: mid,
        },
        &Message::new(Code::EMPTY),
    )
    .unwrap()
}

fn events(l: &mut MessageLayer<Addr>) -> Vec<UdpEvent<Addr>> {
    std::iter::from_fn(|| l.poll_event()).collect()
}

fn transmits(l: &mut MessageLayer<Addr>) -> Vec<(Addr, Bytes)> {
    std::iter::from_fn(|| l.poll_transmit()).collect()
}

/// SplitMix64 for the network's faults and the scenario's choices.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

#[derive(Clone, Copy, Default)]
struct Faults {
    loss: f64,
    dup: f64,
    /// Probability a datagram is held back until after the next time jump.
    delay: f64,
}

/// A client and a server joined by a virtual network with optional loss, duplication and
/// reordering; time jumps to the earliest deadline.
struct Net {
    client: MessageLayer<Addr>,
    server: MessageLayer<Addr>,
    start: Instant,
    now: Instant,
    rng: Rng,
    faults: Faults,
    late: Vec<(Addr, Addr, Bytes)>,
    /// Every datagram sent (before faults): time since start, sender, bytes.
    wire: Vec<(Duration, Addr, Bytes)>,
    client_events: Vec<UdpEvent<Addr>>,
    server_events: Vec<UdpEvent<Addr>>,
}

impl Net {
    fn new(config: UdpConfig) -> Net {
        Net::with(config.clone(), config, 1, Faults::default())
    }
    fn with(client: UdpConfig, server: UdpConfig, seed: u64, faults: Faults) -> Net {
        let now = Instant::now();
        Net {
            client: MessageLayer::new(client, seed),
            server: MessageLayer::new(server, seed ^ 0x5555),
            start: now,
            now,
            rng: Rng(seed.wrapping_mul(31)),
            faults,
            late: Vec::new(),
            wire: Vec::new(),
            client_events: Vec::new(),
            server_events: Vec::new(),
        }
    }
    fn layer(&mut self, who: Addr) -> &mut MessageLayer<Addr> {
        if who == CLIENT {
            &mut self.client
        } else {
            &mut self.server
        }
    }
    fn collect_events(&mut self) {
        self.client_events.extend(events(&mut self.client));
        self.server_events.extend(events(&mut self.server));
    }
    /// Moves datagrams both ways until both layers are quiet.
    fn pump(&mut self) {
        loop {
            let mut batch = Vec::new();
            for from in [CLIENT, SERVER] {
                while let Some((to, d)) = self.layer(from).poll_transmit() {
                    self.wire.push((self.now - self.start, from, d.clone()));
                    batch.push((to, from, d));
                }
            }
            self.collect_events();
            if batch.is_empty() {
                return;
            }
            let mut out = Vec::new();
            for (to, from, d) in batch {
                if self.rng.unit() < self.faults.loss {
                    continue;
                }
                let copies = if self.rng.unit() < self.faults.dup {
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    if self.rng.unit() < self.faults.delay {
                        self.late.push((to, from, d.clone()));
                    } else {
                        out.push((to, from, d.clone()));
                    }
                }
            }
            if self.faults.delay > 0.0 {
                for i in (1..out.len()).rev() {
                    let j = self.rng.below(i + 1);
                    out.swap(i, j);
                }
            }
            for (to, from, d) in out {
                let now = self.now;
                self.layer(to).handle_datagram(from, d, now);
            }
        }
    }
    /// Jumps to the earliest deadline of either layer or `extra`, fires timers, then delivers
    /// held-back datagrams. False when nothing is left to happen.
    fn advance(&mut self, extra: Option<Instant>) -> bool {
        let next = [
            self.client.poll_timeout(),
            self.server.poll_timeout(),
            extra,
        ]
        .into_iter()
        .flatten()
        .min();
        // Held-back datagrams arrive within 500 ms: within MAX_LATENCY, as the RFC assumes.
        let next = if self.late.is_empty() {
            next
        } else {
            let soon = self.now + Duration::from_millis(500);
            Some(next.map_or(soon, |t| t.min(soon)))
        };
        let Some(t) = next else {
            return false;
        };
        self.now = self.now.max(t);
        let now = self.now;
        self.client.handle_timeout(now);
        self.server.handle_timeout(now);
        for (to, from, d) in std::mem::take(&mut self.late) {
            self.layer(to).handle_datagram(from, d, now);
        }
        true
    }
    /// Runs until nothing is timed any more.
    fn settle(&mut self) {
        self.pump();
        while self.advance(None) {
            self.pump();
        }
    }
    fn take_request(&mut self) -> (RequestKey, Message) {
        let ev = std::mem::take(&mut self.server_events);
        match &ev[..] {
            [UdpEvent::Request { from, key, message }] => {
                assert_eq!(*from, CLIENT);
                (key.clone(), message.clone())
            }
            _ => panic!("expected one request, got {ev:?}"),
        }
    }
    fn since_start(&self) -> Duration {
        self.now - self.start
    }
}

// ---- configuration ----

#[test]
fn derived_parameters_match_rfc_7252_4_8_2() {
    let c = UdpConfig::default();
    assert_eq!(c.max_transmit_span(), Duration::from_secs(45));
    assert_eq!(c.max_transmit_wait(), Duration::from_secs(93));
    assert_eq!(c.max_rtt(), Duration::from_secs(202));
    assert_eq!(c.exchange_lifetime(), Duration::from_secs(247));
    assert_eq!(c.non_lifetime(), Duration::from_secs(145));
    assert_eq!(c.non_request_timeout, c.non_lifetime());
    assert_eq!(c.max_message_size, 1152);
    // absurd settings saturate instead of panicking
    let wild = UdpConfig {
        ack_timeout: Duration::MAX,
        ack_random_factor: f64::NAN,
        max_retransmit: u32::MAX,
        ..UdpConfig::default()
    };
    assert_eq!(wild.exchange_lifetime(), Duration::MAX);
}

// ---- vectors ----

#[test]
fn con_get_gets_piggybacked_response() {
    let mut net = Net::new(UdpConfig::default());
    let token = net
        .client
        .send_request(SERVER, Message::request(Code::GET, "/hello"), true, net.now)
        .unwrap();
    assert_eq!(token.len(), 4);
    net.pump();
    let (key, req) = net.take_request();
    assert!(key.is_confirmable());
    assert_eq!(key.token(), &token);
    assert_eq!(req.options.uri_path(), ["hello"]);
    net.server
        .send_response(
            CLIENT,
            &key,
            Message::response(Code::CONTENT, "hi"),
            net.now,
        )
        .unwrap();
    net.pump();
    assert_eq!(
        net.client_events,
        [UdpEvent::Response {
            from: SERVER,
            message: Message::response(Code::CONTENT, "hi").with_token(token.clone()),
        }]
    );
    let [(_, CLIENT, con), (_, SERVER, ack)] = &net.wire[..] else {
        panic!("{:?}", net.wire)
    };
    let mid = mid_of(con);
    assert_eq!(con[0], 0x44, "CON, TKL 4");
    let [hi, lo] = mid.to_be_bytes();
    let mut expected = vec![0x64, 0x45, hi, lo];
    expected.extend_from_slice(token.as_bytes());
    expected.extend_from_slice(&[0xff, b'h', b'i']);
    assert_eq!(&ack[..], &expected[..], "ACK 2.05, same MID and token");
    assert!(net.client.is_idle() && net.server.is_idle());
    // nothing more happens: no retransmission, no second event; dedup entries expire
    net.settle();
    assert_eq!(net.wire.len(), 2);
    assert_eq!(net.client_events.len(), 1);
    assert_eq!(net.server.dedup_entries(), 0);
    assert_eq!(net.server.poll_timeout(), None);
}

#[test]
fn slow_handler_gets_separate_response() {
    let mut net = Net::new(UdpConfig::default());
    let token = net
        .client
        .send_request(SERVER, Message::request(Code::GET, "/slow"), true, net.now)
        .unwrap();
    net.pump();
    let (key, _) = net.take_request();
    let req_mid = key.message_id();
    assert_eq!(
        net.server.poll_timeout(),
        Some(net.now + Duration::from_millis(100))
    );
    assert!(net.advance(None));
    net.pump();
    assert_eq!(net.since_start(), Duration::from_millis(100));
    assert_eq!(net.wire[1].2, empty(MessageType::Acknowledgement, req_mid));
    assert_eq!(net.client.in_flight(SERVER), 0);
    assert!(net.client.is_outstanding(SERVER, &token));
    // the client now waits EXCHANGE_LIFETIME for the separate response
    assert_eq!(
        net.client.poll_timeout(),
        Some(net.now + Duration::from_secs(247))
    );
    net.now += Duration::from_secs(1);
    net.server
        .send_response(
            CLIENT,
            &key,
            Message::response(Code::CONTENT, "late"),
            net.now,
        )
        .unwrap();
    net.pump();
    let (h, m) = decode(&net.wire[2].2);
    assert_eq!(h.mtype, MessageType::Confirmable);
    assert_eq!(m.token, token);
    assert_eq!(m.code, Code::CONTENT);
    assert_eq!(
        net.wire[3],
        (
            Duration::from_millis(1100),
            CLIENT,
            empty(MessageType::Acknowledgement, h.message_id)
        )
    );
    assert_eq!(net.wire.len(), 4);
    assert!(
        matches!(&net.client_events[..], [UdpEvent::Response { message, .. }] if message.payload_text() == "late")
    );
    assert!(net.client.is_idle() && net.server.is_idle());
    net.settle();
    assert_eq!(net.wire.len(), 4, "no retransmissions");
    assert_eq!(net.client_events.len(), 1);
}

#[test]
fn non_request_gets_non_response() {
    let mut net = Net::new(UdpConfig::default());
    let token = net
        .client
        .send_request(SERVER, Message::request(Code::GET, "/n"), false, net.now)
        .unwrap();
    net.pump();
    let (key, _) = net.take_request();
    assert!(!key.is_confirmable());
    assert_eq!(key.message_type(), MessageType::NonConfirmable);
    // no empty ACK for a NON, however long the handler takes
    net.now += Duration::from_secs(1);
    net.server
        .send_response(CLIENT, &key, Message::response(Code::CONTENT, "n"), net.now)
        .unwrap();
    net.pump();
    let types: Vec<_> = net.wire.iter().map(|(_, _, d)| decode(d).0.mtype).collect();
    assert_eq!(
        types,
        [MessageType::NonConfirmable, MessageType::NonConfirmable]
    );
    assert_eq!(decode(&net.wire[1].2).1.token, token);
    assert!(matches!(
        &net.client_events[..],
        [UdpEvent::Response { .. }]
    ));
    assert!(net.client.is_idle());
    net.settle();
    assert_eq!(net.wire.len(), 2);
    assert_eq!(net.client_events.len(), 1);
}

#[test]
fn ping_gets_reset_which_is_pong() {
    let mut net = Net::new(UdpConfig::default());
    let mid = net.client.ping(SERVER, net.now);
    net.pump();
    let sent: Vec<_> = net.wire.iter().map(|(_, f, d)| (*f, d.clone())).collect();
    assert_eq!(
        sent,
        [
            (CLIENT, empty(MessageType::Confirmable, mid)),
            (SERVER, empty(MessageType::Reset, mid)),
        ]
    );
    assert_eq!(
        net.client_events,
        [UdpEvent::Pong {
            from: SERVER,
            message_id: mid
        }]
    );
    assert!(net.server_events.is_empty());
    assert!(net.client.is_idle());
    assert_eq!(net.client.poll_timeout(), None);
}

#[test]
fn unanswered_ping_times_out_once() {
    let mut c = MessageLayer::new(UdpConfig::default(), 3);
    let mut now = Instant::now();
    let mid = c.ping(SERVER, now);
    let mut sent = transmits(&mut c).len();
    let mut ev = Vec::new();
    while let Some(t) = c.poll_timeout() {
        now = t;
        c.handle_timeout(now);
        sent += transmits(&mut c).len();
        ev.extend(events(&mut c));
    }
    assert_eq!(sent, 5);
    assert_eq!(
        ev,
        [UdpEvent::PingTimeout {
            to: SERVER,
            message_id: mid
        }]
    );
}

#[test]
fn reset_fails_con_request() {
    let now = Instant::now();
    let mut c = MessageLayer::new(UdpConfig::default(), 7);
    let token = c
        .send_request(SERVER, Message::request(Code::GET, "/x"), true, now)
        .unwrap();
    let [(SERVER, d)] = &transmits(&mut c)[..] else {
        panic!()
    };
    let mid = mid_of(d);
    // a RST from another address, or for another MID, is not for us
    c.handle_datagram(3, empty(MessageType::Reset, mid), now);
    c.handle_datagram(SERVER, empty(MessageType::Reset, mid.wrapping_add(1)), now);
    assert!(events(&mut c).is_empty());
    c.handle_datagram(SERVER, empty(MessageType::Reset, mid), now);
    assert_eq!(
        events(&mut c),
        [UdpEvent::RequestFailed {
            to: SERVER,
            token,
            error: UdpRequestError::Reset
        }]
    );
    assert!(c.is_idle());
    assert_eq!(c.poll_timeout(), None);
    // a second RST changes nothing
    c.handle_datagram(SERVER, empty(MessageType::Reset, mid), now);
    assert!(events(&mut c).is_empty() && transmits(&mut c).is_empty());
}

#[test]
fn reset_fails_non_request() {
    let now = Instant::now();
    let mut c = MessageLayer::new(UdpConfig::default(), 8);
    let token = c
        .send_request(SERVER, Message::request(Code::GET, "/x"), false, now)
        .unwrap();
    let mid = mid_of(&transmits(&mut c)[0].1);
    // an ACK to a NON is unexpected: ignored
    c.handle_datagram(SERVER, empty(MessageType::Acknowledgement, mid), now);
    assert!(events(&mut c).is_empty());
    c.handle_datagram(SERVER, empty(MessageType::Reset, mid), now);
    assert_eq!(
        events(&mut c),
        [UdpEvent::RequestFailed {
            to: SERVER,
            token,
            error: UdpRequestError::Reset
        }]
    );
    assert!(c.is_idle());
}

#[test]
fn unknown_token_response_is_reset() {
    let now = Instant::now();
    let mut c = MessageLayer::<Addr>::new(UdpConfig::default(), 9);
    let con = hex("44 45 12 34 de ad be ef ff 68 69");
    c.handle_datagram(SERVER, con.clone(), now);
    assert_eq!(transmits(&mut c), [(SERVER, hex("70 00 12 34"))]);
    // its duplicate gets the same answer
    c.handle_datagram(SERVER, con, now);
    assert_eq!(transmits(&mut c), [(SERVER, hex("70 00 12 34"))]);
    // NON: rejected too (RFC 7252 §4.3 allows it; RFC 7641 §3.6 relies on it)
    c.handle_datagram(SERVER, hex("54 45 12 35 de ad be ef ff 68 69"), now);
    assert_eq!(transmits(&mut c), [(SERVER, hex("70 00 12 35"))]);
    // unexpected ACK and RST: ignored
    c.handle_datagram(SERVER, hex("60 00 55 55"), now);
    c.handle_datagram(SERVER, hex("70 00 55 55"), now);
    c.handle_datagram(SERVER, hex("64 45 55 55 de ad be ef"), now);
    assert!(transmits(&mut c).is_empty());
    // the two rejected responses are reported for the log, nothing else
    let dead = Token::new(hex("de ad be ef"));
    let unmatched = UdpEvent::Dropped {
        from: SERVER,
        reason: DropReason::Unmatched(dead),
    };
    assert_eq!(events(&mut c), [unmatched.clone(), unmatched]);
}

#[test]
fn format_errors_reject_con_and_drop_the_rest() {
    let now = Instant::now();
    let mut s = MessageLayer::<Addr>::new(UdpConfig::default(), 10);
    let cases = [
        // truncated token in a CON
        ("44 01 12 34 de ad", Some("70 00 12 34")),
        // Empty CON with content
        ("40 00 12 35 ff", Some("70 00 12 35")),
        // option nibble 15
        ("40 01 12 36 f0", Some("70 00 12 36")),
        // 7.01 (CSM) has no meaning over UDP; class 1 is reserved
        ("40 e1 12 37", Some("70 00 12 37")),
        ("40 21 12 38", Some("70 00 12 38")),
        // CON ping
        ("40 00 12 39", Some("70 00 12 39")),
        // NON format errors and empty NON: silence
        ("54 01 12 3a de ad", None),
        ("50 00 12 3b", None),
        ("50 e1 12 3c", None),
        // version 2, too short, non-empty RST
        ("84 01 12 3d", None),
        ("40 01", None),
        ("", None),
        ("70 01 12 3e", None),
    ];
    for (input, answer) in cases {
        s.handle_datagram(CLIENT, hex(input), now);
        let expected: Vec<_> = answer.into_iter().map(|a| (CLIENT, hex(a))).collect();
        assert_eq!(transmits(&mut s), expected, "{input}");
        // every malformed datagram is reported for the log; a ping and an empty NON are not
        // malformed
        let ev = events(&mut s);
        let malformed = !matches!(input, "40 00 12 39" | "50 00 12 3b");
        if malformed {
            assert!(
                matches!(
                    &ev[..],
                    [UdpEvent::Dropped {
                        from: CLIENT,
                        reason: DropReason::Malformed(_) | DropReason::BadCode(_)
                    }]
                ),
                "{input}: {ev:?}"
            );
        } else {
            assert!(ev.is_empty(), "{input}: {ev:?}");
        }
    }
    // a request with an unregistered method is delivered (the site answers 4.05)
    s.handle_datagram(CLIENT, hex("40 1f 12 40"), now);
    assert!(
        matches!(&events(&mut s)[..], [UdpEvent::Request { message, .. }] if message.code == Code(0x1f))
    );
}

/// Regression: datagrams above 1152 bytes were dropped without a word, requests and responses
/// alike, so a peer sending up to its path MTU timed out.
#[test]
fn datagrams_above_1152_bytes_are_taken_and_oversize_requests_get_4_13() {
    let now = Instant::now();
    let config = UdpConfig {
        max_receive_size: 4000,
        ..UdpConfig::default()
    };
    let mut s = MessageLayer::<Addr>::new(config, 10);
    // 1153..=4000 bytes: delivered
    let mut big = hex("40 02 12 41 ff").to_vec();
    big.resize(3000, b'x');
    s.handle_datagram(CLIENT, Bytes::from(big), now);
    assert!(
        matches!(&events(&mut s)[..], [UdpEvent::Request { message, .. }] if message.payload.len() == 2995)
    );
    // above the limit: a CON request gets 4.13 piggybacked with Size1, token kept
    let mut huge = hex("42 02 12 42 ab cd ff").to_vec();
    huge.resize(4001, b'x');
    s.handle_datagram(CLIENT, Bytes::from(huge), now);
    let out = transmits(&mut s);
    assert_eq!(out.len(), 1);
    let (h, m) = decode(&out[0].1);
    assert_eq!(
        (h.mtype, h.message_id),
        (MessageType::Acknowledgement, 0x1242)
    );
    assert_eq!(m.code, Code::REQUEST_ENTITY_TOO_LARGE);
    assert_eq!(m.token, Token::new(hex("ab cd")));
    assert_eq!(m.options.get_uint(OptionNumber::SIZE1), Some(4000));
    assert_eq!(
        events(&mut s),
        [UdpEvent::Dropped {
            from: CLIENT,
            reason: DropReason::TooLarge {
                size: 4001,
                limit: 4000
            }
        }]
    );
    // an oversize CON response is rejected with Reset, and reported
    let mut resp = hex("42 45 12 43 ab cd ff").to_vec();
    resp.resize(4001, b'x');
    s.handle_datagram(CLIENT, Bytes::from(resp), now);
    assert_eq!(transmits(&mut s), [(CLIENT, hex("70 00 12 43"))]);
    assert_eq!(events(&mut s).len(), 1);
}

#[test]
fn send_errors() {
    let now = Instant::now();
    let mut c = MessageLayer::<Addr>::new(UdpConfig::default(), 11);
    let big = Message::request(Code::POST, "/x").with_payload(vec![0u8; 1200]);
    assert!(matches!(
        c.send_request(SERVER, big, true, now),
        Err(UdpSendError::TooLarge { limit: 1152, .. })
    ));
    assert_eq!(
        c.send_request(SERVER, Message::new(Code::CONTENT), true, now),
        Err(UdpSendError::NotARequest(Code::CONTENT))
    );
    assert_eq!(c.outstanding_requests(), 0);
    assert!(transmits(&mut c).is_empty());
    c.handle_datagram(CLIENT, hex("44 01 12 34 01 02 03 04"), now);
    let [UdpEvent::Request { key, .. }] = &events(&mut c)[..] else {
        panic!()
    };
    assert_eq!(
        c.send_response(CLIENT, key, Message::new(Code::GET), now),
        Err(UdpSendError::NotAResponse(Code::GET))
    );
    let big = Message::response(Code::CONTENT, vec![0u8; 1200]);
    assert!(matches!(
        c.send_response(CLIENT, key, big, now),
        Err(UdpSendError::TooLarge { .. })
    ));
    // after the errors the request can still be answered piggybacked
    c.send_response(CLIENT, key, Message::response(Code::CONTENT, ""), now)
        .unwrap();
    assert_eq!(
        transmits(&mut c),
        [(CLIENT, hex("64 45 12 34 01 02 03 04"))]
    );
}

// ---- retransmission ----

#[test]
fn retransmission_timing_within_rfc_bounds() {
    let config = UdpConfig::default();
    let mut first_gaps = Vec::new();
    for seed in 0..32 {
        let start = Instant::now();
        let mut now = start;
        let mut c = MessageLayer::new(config.clone(), seed);
        let token = c
            .send_request(SERVER, Message::request(Code::GET, "/x"), true, now)
            .unwrap();
        let first = transmits(&mut c);
        assert_eq!(first.len(), 1);
        let mut sends = vec![now];
        let mut ended = Vec::new();
        while let Some(t) = c.poll_timeout() {
            assert!(t >= now);
            now = t;
            c.handle_timeout(now);
            for (to, d) in transmits(&mut c) {
                assert_eq!((to, &d), (SERVER, &first[0].1), "same datagram, same MID");
                sends.push(now);
            }
            for ev in events(&mut c) {
                ended.push((now, ev));
            }
        }
        assert_eq!(sends.len(), 1 + config.max_retransmit as usize);
        let gaps: Vec<Duration> = sends.windows(2).map(|w| w[1] - w[0]).collect();
        for (i, gap) in gaps.iter().enumerate() {
            let lo = config.ack_timeout * (1 << i);
            let hi = config.ack_timeout.mul_f64(config.ack_random_factor) * (1 << i);
            assert!(lo <= *gap && *gap <= hi, "gap {i}: {gap:?}");
            assert_eq!(*gap, gaps[0] * (1 << i), "doubling");
        }
        first_gaps.push(gaps[0]);
        // one failure, after the last wait (again doubled)
        assert_eq!(
            ended,
            [(
                sends[4] + gaps[3] * 2,
                UdpEvent::RequestFailed {
                    to: SERVER,
                    token,
                    error: UdpRequestError::Timeout
                }
            )]
        );
        let total = ended[0].0 - start;
        assert!(total >= config.ack_timeout * 31 && total <= config.max_transmit_wait());
        assert!(c.is_idle());
        assert_eq!(c.outstanding_requests(), 0);
    }
    first_gaps.sort();
    first_gaps.dedup();
    assert!(first_gaps.len() > 20, "the first timeout is randomised");
}

#[test]
fn acknowledged_request_waits_exchange_lifetime_then_fails() {
    let start = Instant::now();
    let mut c = MessageLayer::new(UdpConfig::default(), 12);
    let token = c
        .send_request(SERVER, Message::request(Code::GET, "/x"), true, start)
        .unwrap();
    let mid = mid_of(&transmits(&mut c)[0].1);
    let ack_at = start + Duration::from_secs(1);
    c.handle_datagram(SERVER, empty(MessageType::Acknowledgement, mid), ack_at);
    assert_eq!(c.poll_timeout(), Some(ack_at + Duration::from_secs(247)));
    c.handle_timeout(ack_at + Duration::from_secs(246));
    assert!(events(&mut c).is_empty());
    c.handle_timeout(ack_at + Duration::from_secs(247));
    assert_eq!(
        events(&mut c),
        [UdpEvent::RequestFailed {
            to: SERVER,
            token,
            error: UdpRequestError::Timeout
        }]
    );
    assert!(
        transmits(&mut c).is_empty(),
        "no retransmission after the ACK"
    );
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn non_request_times_out() {
    let start = Instant::now();
    let mut c = MessageLayer::new(UdpConfig::default(), 13);
    let token = c
        .send_request(SERVER, Message::request(Code::GET, "/x"), false, start)
        .unwrap();
    assert_eq!(transmits(&mut c).len(), 1);
    assert_eq!(c.poll_timeout(), Some(start + Duration::from_secs(145)));
    c.handle_timeout(start + Duration::from_secs(145));
    assert!(transmits(&mut c).is_empty(), "NON is not retransmitted");
    assert_eq!(
        events(&mut c),
        [UdpEvent::RequestFailed {
            to: SERVER,
            token,
            error: UdpRequestError::Timeout
        }]
    );
    assert!(c.is_idle());
}

// ---- deduplication ----

/// CON GET, MID 0xabcd, token 01020304, Uri-Path "hello".
const CON_GET: &str = "44 01 ab cd 01 02 03 04 b5 68 65 6c 6c 6f";

#[test]
fn duplicate_con_request_is_delivered_once_and_answered_from_cache() {
    let mut now = Instant::now();
    let mut s = MessageLayer::<Addr>::new(UdpConfig::default(), 14);
    s.handle_datagram(CLIENT, hex(CON_GET), now);
    let [UdpEvent::Request { key, .. }] = &events(&mut s)[..] else {
        panic!()
    };
    s.send_response(CLIENT, key, Message::response(Code::CONTENT, "hi"), now)
        .unwrap();
    let ack = transmits(&mut s);
    assert_eq!(ack, [(CLIENT, hex("64 45 ab cd 01 02 03 04 ff 68 69"))]);
    for _ in 0..3 {
        now += Duration::from_secs(3);
        s.handle_datagram(CLIENT, hex(CON_GET), now);
        assert_eq!(transmits(&mut s), ack, "cached response re-sent");
        assert!(events(&mut s).is_empty(), "not delivered again");
    }
    // the same (peer, MID) from another peer is another request
    s.handle_datagram(3, hex(CON_GET), now);
    assert_eq!(events(&mut s).len(), 1);
    // after EXCHANGE_LIFETIME the entry expires and the MID may be reused
    while let Some(t) = s.poll_timeout() {
        now = t;
        s.handle_timeout(now);
    }
    transmits(&mut s);
    assert_eq!(s.dedup_entries(), 0);
    s.handle_datagram(CLIENT, hex(CON_GET), now);
    assert_eq!(events(&mut s).len(), 1);
}

#[test]
fn duplicate_before_response_gets_empty_ack_then_separate_response() {
    let now = Instant::now();
    let mut s = MessageLayer::<Addr>::new(UdpConfig::default(), 15);
    s.handle_datagram(CLIENT, hex(CON_GET), now);
    let [UdpEvent::Request { key, .. }] = &events(&mut s)[..] else {
        panic!()
    };
    s.handle_datagram(CLIENT, hex(CON_GET), now);
    assert_eq!(transmits(&mut s), [(CLIENT, hex("60 00 ab cd"))]);
    assert!(events(&mut s).is_empty());
    s.send_response(CLIENT, key, Message::response(Code::CONTENT, "hi"), now)
        .unwrap();
    let out = transmits(&mut s);
    let (h, m) = decode(&out[0].1);
    assert_eq!(h.mtype, MessageType::Confirmable);
    assert_eq!(m.token.as_bytes(), [1, 2, 3, 4]);
    // further duplicates get the empty ACK again
    s.handle_datagram(CLIENT, hex(CON_GET), now);
    assert_eq!(transmits(&mut s), [(CLIENT, hex("60 00 ab cd"))]);
    // the client's ACK ends the separate response
    s.handle_datagram(
        CLIENT,
        empty(MessageType::Acknowledgement, h.message_id),
        now,
    );
    assert!(s.is_idle());
    assert!(events(&mut s).is_empty());
}

#[test]
fn duplicate_non_request_is_ignored_and_drop_response() {
    let now = Instant::now();
    let mut s = MessageLayer::<Addr>::new(UdpConfig::default(), 16);
    let non = hex("54 01 ab ce 01 02 03 04");
    s.handle_datagram(CLIENT, non.clone(), now);
    s.handle_datagram(CLIENT, non, now);
    let ev = events(&mut s);
    assert_eq!(ev.len(), 1);
    let UdpEvent::Request { key, .. } = &ev[0] else {
        panic!()
    };
    s.drop_response(CLIENT, key, now);
    assert!(transmits(&mut s).is_empty(), "NON: nothing to send");
    // CON dropped: the empty ACK goes at once
    s.handle_datagram(CLIENT, hex(CON_GET), now);
    let [UdpEvent::Request { key, .. }] = &events(&mut s)[..] else {
        panic!()
    };
    s.drop_response(CLIENT, key, now);
    assert_eq!(transmits(&mut s), [(CLIENT, hex("60 00 ab cd"))]);
    s.handle_timeout(now + Duration::from_secs(1));
    assert!(transmits(&mut s).is_empty(), "no second empty ACK");
}

#[test]
fn duplicate_con_response_is_acked_not_redelivered() {
    let now = Instant::now();
    let mut c = MessageLayer::new(UdpConfig::default(), 17);
    let token = c
        .send_request(SERVER, Message::request(Code::GET, "/x"), true, now)
        .unwrap();
    let mid = mid_of(&transmits(&mut c)[0].1);
    c.handle_datagram(SERVER, empty(MessageType::Acknowledgement, mid), now);
    let resp = wire::encode(
        &UdpHeader {
            mtype: MessageType::Confirmable,
            message_id: 0x7777,
        },
        &Message::response(Code::CONTENT, "x").with_token(token),
    )
    .unwrap();
    for _ in 0..3 {
        c.handle_datagram(SERVER, resp.clone(), now);
        assert_eq!(transmits(&mut c), [(SERVER, hex("60 00 77 77"))]);
    }
    assert_eq!(events(&mut c).len(), 1);
    assert!(c.is_idle());
}

#[test]
fn a_request_under_a_reused_message_id_is_a_new_request() {
    // A client sending faster than 65 536 requests an EXCHANGE_LIFETIME wraps its MIDs (the
    // bench's 65 537th request at 1 x 1 got the first one's cached answer and timed out).
    let now = Instant::now();
    let mut s = MessageLayer::<Addr>::new(UdpConfig::default(), 21);
    s.handle_datagram(CLIENT, hex(CON_GET), now);
    let [UdpEvent::Request { key, .. }] = &events(&mut s)[..] else {
        panic!()
    };
    s.send_response(CLIENT, key, Message::response(Code::CONTENT, "hi"), now)
        .unwrap();
    transmits(&mut s);
    // Same MID, another token: not a duplicate.
    let again = "44 01 ab cd 05 06 07 08 b5 68 65 6c 6c 6f";
    s.handle_datagram(CLIENT, hex(again), now);
    let [UdpEvent::Request { key, message, .. }] = &events(&mut s)[..] else {
        panic!("the new request was taken for a duplicate")
    };
    assert_eq!(message.token.as_bytes(), [5, 6, 7, 8]);
    assert_eq!(s.reused_message_ids(), 1);
    s.send_response(CLIENT, key, Message::response(Code::CONTENT, "yo"), now)
        .unwrap();
    let ack = transmits(&mut s);
    assert_eq!(ack, [(CLIENT, hex("64 45 ab cd 05 06 07 08 ff 79 6f"))]);
    // Its own retransmission is still a duplicate, answered from the cache.
    s.handle_datagram(CLIENT, hex(again), now);
    assert_eq!(transmits(&mut s), ack);
    assert!(events(&mut s).is_empty());
    assert_eq!(s.dedup_entries(), 1);
}

#[test]
fn a_reused_message_id_while_the_old_request_is_unanswered_gets_no_stray_ack() {
    let now = Instant::now();
    let mut s = MessageLayer::<Addr>::new(UdpConfig::default(), 22);
    s.handle_datagram(CLIENT, hex(CON_GET), now);
    let [UdpEvent::Request { key: old, .. }] = &events(&mut s)[..] else {
        panic!()
    };
    s.handle_datagram(
        CLIENT,
        hex("44 01 ab cd 05 06 07 08 b5 68 65 6c 6c 6f"),
        now,
    );
    // An empty ACK for the old one would carry the new one's MID: the client would take it
    // as the new request's.
    assert!(transmits(&mut s).is_empty(), "nothing sent yet");
    let [UdpEvent::Request { key: new, .. }] = &events(&mut s)[..] else {
        panic!()
    };
    s.send_response(CLIENT, new, Message::response(Code::CONTENT, "new"), now)
        .unwrap();
    let out = transmits(&mut s);
    let (h, m) = decode(&out[0].1);
    assert_eq!(
        (h.mtype, h.message_id),
        (MessageType::Acknowledgement, 0xabcd)
    );
    assert_eq!(m.token.as_bytes(), [5, 6, 7, 8]);
    // The old request's answer goes as a separate response under a MID of our own.
    s.send_response(CLIENT, old, Message::response(Code::CONTENT, "old"), now)
        .unwrap();
    let out = transmits(&mut s);
    let (h, m) = decode(&out[0].1);
    assert_eq!(h.mtype, MessageType::Confirmable);
    assert_ne!(h.message_id, 0xabcd);
    assert_eq!(m.token.as_bytes(), [1, 2, 3, 4]);

    // A NON under the MID of an unanswered CON: the CON still gets its empty ACK.
    let mut s = MessageLayer::<Addr>::new(UdpConfig::default(), 24);
    s.handle_datagram(CLIENT, hex(CON_GET), now);
    s.handle_datagram(CLIENT, hex("54 01 ab cd 05 06 07 08"), now);
    assert_eq!(events(&mut s).len(), 2, "both requests delivered");
    assert_eq!(transmits(&mut s), [(CLIENT, hex("60 00 ab cd"))]);
}

#[test]
fn a_notification_under_a_reused_message_id_is_delivered() {
    // A server notifying faster than 65 536 times a NON_LIFETIME reuses MIDs; each new
    // notification (same token, new content) must reach the observer.
    let now = Instant::now();
    let mut c = MessageLayer::new(UdpConfig::default(), 23);
    let observe = Message::request(Code::GET, "/x").with_uint_option(OptionNumber::OBSERVE, 0);
    let token = c.send_request(SERVER, observe, false, now).unwrap();
    transmits(&mut c);
    let notification = |seq: u32, text: &str| {
        wire::encode(
            &UdpHeader {
                mtype: MessageType::NonConfirmable,
                message_id: 0x7777,
            },
            &Message::response(Code::CONTENT, text.to_owned())
                .with_token(token.clone())
                .with_uint_option(OptionNumber::OBSERVE, seq),
        )
        .unwrap()
    };
    c.handle_datagram(SERVER, notification(1, "one"), now);
    c.handle_datagram(SERVER, notification(1, "one"), now);
    c.handle_datagram(SERVER, notification(2, "two"), now);
    let texts: Vec<String> = events(&mut c)
        .into_iter()
        .filter_map(|e| match e {
            UdpEvent::Response { message, .. } => Some(message.payload_text().to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(
        texts,
        ["one", "two"],
        "the copy dropped, the new one delivered"
    );
}

#[test]
fn state_is_bounded() {
    let now = Instant::now();
    let config = UdpConfig {
        max_dedup_entries: 3,
        max_peers: 2,
        ..UdpConfig::default()
    };
    let mut s = MessageLayer::<Addr>::new(config, 18);
    for peer in 10..30 {
        s.handle_datagram(peer, hex("54 01 ab cd 01 02 03 04"), now);
        let [UdpEvent::Request { key, .. }] = &events(&mut s)[..] else {
            panic!()
        };
        s.send_response(peer, key, Message::response(Code::CONTENT, ""), now)
            .unwrap();
        assert!(s.dedup_entries() <= 3);
        assert!(s.peer_count() <= 2);
    }
    assert_eq!(transmits(&mut s).len(), 20);
    // an evicted CON request still unacknowledged is acknowledged on eviction
    for mid in 0..4u16 {
        let [hi, lo] = mid.to_be_bytes();
        s.handle_datagram(
            CLIENT,
            Bytes::from(vec![0x41, 0x01, hi, lo, mid as u8]),
            now,
        );
    }
    assert_eq!(events(&mut s).len(), 4);
    assert_eq!(s.dedup_entries(), 3);
    assert_eq!(transmits(&mut s), [(CLIENT, hex("60 00 00 00"))]);
}

// ---- NSTART ----

#[test]
fn nstart_queues_second_con_request() {
    let mut net = Net::new(UdpConfig::default());
    let now = net.now;
    let get = || Message::request(Code::GET, "/q");
    let t1 = net.client.send_request(SERVER, get(), true, now).unwrap();
    let t2 = net.client.send_request(SERVER, get(), true, now).unwrap();
    let t3 = net.client.send_request(SERVER, get(), false, now).unwrap();
    assert_ne!(t1, t2);
    assert_eq!(net.client.queued_requests(SERVER), 1);
    assert_eq!(net.client.in_flight(SERVER), 1);
    assert_eq!(net.client.outstanding_requests(), 3);
    net.pump();
    // t1 and the NON t3 went; t2 waits
    let got: Vec<_> = net
        .server_events
        .drain(..)
        .map(|e| match e {
            UdpEvent::Request { key, .. } => key,
            e => panic!("{e:?}"),
        })
        .collect();
    assert_eq!(
        got.iter().map(|k| k.token().clone()).collect::<Vec<_>>(),
        [t1.clone(), t3.clone()]
    );
    for key in &got {
        net.server
            .send_response(CLIENT, key, Message::response(Code::CONTENT, ""), now)
            .unwrap();
    }
    net.pump();
    // t1 answered: t2 goes now
    let (key2, _) = net.take_request();
    assert_eq!(key2.token(), &t2);
    assert_eq!(net.client.queued_requests(SERVER), 0);
    net.server
        .send_response(CLIENT, &key2, Message::response(Code::CONTENT, ""), now)
        .unwrap();
    net.pump();
    let done: Vec<_> = net
        .client_events
        .iter()
        .map(|e| match e {
            UdpEvent::Response { message, .. } => message.token.clone(),
            e => panic!("{e:?}"),
        })
        .collect();
    assert_eq!(done, [t1, t3, t2]);
    assert!(net.client.is_idle());
}

#[test]
fn nstart_slot_frees_on_timeout_and_cancel() {
    let start = Instant::now();
    let mut c = MessageLayer::new(UdpConfig::default(), 19);
    let get = || Message::request(Code::GET, "/q");
    let t1 = c.send_request(SERVER, get(), true, start).unwrap();
    let t2 = c.send_request(SERVER, get(), true, start).unwrap();
    let t3 = c.send_request(SERVER, get(), true, start).unwrap();
    assert_eq!(transmits(&mut c).len(), 1);
    // t1 times out: t2 goes at that moment
    let now = loop {
        let now = c.poll_timeout().unwrap();
        c.handle_timeout(now);
        let ev = events(&mut c);
        if !ev.is_empty() {
            assert!(matches!(&ev[..], [UdpEvent::RequestFailed { token, .. }] if *token == t1));
            break now;
        }
        transmits(&mut c);
    };
    assert!(now - start >= Duration::from_secs(62));
    let out = transmits(&mut c);
    assert_eq!(out.len(), 1);
    assert_eq!(decode(&out[0].1).1.token, t2);
    // cancelling t2 lets t3 go; a late CON response to t2 is then reset
    c.cancel_request(SERVER, &t2);
    let out = transmits(&mut c);
    assert_eq!(decode(&out[0].1).1.token, t3);
    assert!(!c.is_outstanding(SERVER, &t2));
    let late = wire::encode(
        &UdpHeader {
            mtype: MessageType::Confirmable,
            message_id: 0x4242,
        },
        &Message::response(Code::CONTENT, "").with_token(t2.clone()),
    )
    .unwrap();
    c.handle_datagram(SERVER, late, now);
    assert_eq!(transmits(&mut c), [(SERVER, hex("70 00 42 42"))]);
    assert_eq!(
        events(&mut c),
        [UdpEvent::Dropped {
            from: SERVER,
            reason: DropReason::Unmatched(t2)
        }]
    );
    c.cancel_request(SERVER, &t3);
    assert!(c.is_idle());
    assert!(events(&mut c).is_empty(), "cancel has no event");
}

#[test]
fn separate_response_before_empty_ack_is_fine() {
    let now = Instant::now();
    let mut c = MessageLayer::new(UdpConfig::default(), 20);
    let get = || Message::request(Code::GET, "/q");
    let t1 = c.send_request(SERVER, get(), true, now).unwrap();
    let t2 = c.send_request(SERVER, get(), true, now).unwrap();
    let mid = mid_of(&transmits(&mut c)[0].1);
    let resp = wire::encode(
        &UdpHeader {
            mtype: MessageType::NonConfirmable,
            message_id: 0x0101,
        },
        &Message::response(Code::CONTENT, "").with_token(t1),
    )
    .unwrap();
    c.handle_datagram(SERVER, resp, now);
    assert_eq!(events(&mut c).len(), 1);
    // the response acknowledged t1 implicitly: retransmission stops and t2 goes
    let out = transmits(&mut c);
    assert_eq!(out.len(), 1);
    assert_eq!(decode(&out[0].1).1.token, t2);
    // the empty ACK arriving late is ignored
    c.handle_datagram(SERVER, empty(MessageType::Acknowledgement, mid), now);
    assert!(events(&mut c).is_empty());
    assert_eq!(c.outstanding_requests(), 1);
}

// ---- observe ----

#[test]
fn observation_stays_open_until_cancelled() {
    let mut net = Net::new(UdpConfig::default());
    let now = net.now;
    let req = Message::request(Code::GET, "/obs").with_option(OptionNumber::OBSERVE, Bytes::new());
    let token = net.client.send_request(SERVER, req, true, now).unwrap();
    net.pump();
    let (key, _) = net.take_request();
    for seq in 1..=2u32 {
        let n = Message::response(Code::CONTENT, "v").with_uint_option(OptionNumber::OBSERVE, seq);
        net.server.send_response(CLIENT, &key, n, now).unwrap();
        net.pump();
    }
    assert_eq!(net.client_events.len(), 2);
    assert!(net.client.is_outstanding(SERVER, &token));
    // no deadline while observing
    let later = now + Duration::from_secs(1000);
    net.client.handle_timeout(later);
    assert!(net.client.is_outstanding(SERVER, &token));
    assert!(events(&mut net.client).is_empty());
    net.client.cancel_request(SERVER, &token);
    let n = Message::response(Code::CONTENT, "v").with_uint_option(OptionNumber::OBSERVE, 3);
    net.server.send_response(CLIENT, &key, n, now).unwrap();
    net.pump();
    let responses = net
        .client_events
        .iter()
        .filter(|e| matches!(e, UdpEvent::Response { .. }))
        .count();
    assert_eq!(responses, 2);
    assert!(matches!(
        &net.server_events[..],
        [UdpEvent::ResponseFailed { to: CLIENT, error: UdpRequestError::Reset, token: t }] if *t == token
    ));
    assert!(net.server.is_idle() && net.client.is_idle());
}

// ---- lossy network ----

/// Runs `n` requests from client to server over a faulty network and checks the endings.
fn lossy_run(seed: u64, faults: Faults, n: usize, nstart: usize) -> Result<(), TestCaseError> {
    let config = UdpConfig {
        nstart,
        ..UdpConfig::default()
    };
    let mut net = Net::with(config.clone(), config.clone(), seed, faults);
    let mut choose = Rng(seed ^ 0xabcdef);
    let mut tokens: HashMap<Token, usize> = HashMap::new();
    let mut confirmable = Vec::new();
    for i in 0..n {
        let con = choose.unit() < 0.7;
        confirmable.push(con);
        let req = Message::request(Code::POST, "/p").with_payload(format!("{i}"));
        let token = net.client.send_request(SERVER, req, con, net.now).unwrap();
        prop_assert!(tokens.insert(token, i).is_none(), "tokens are unique");
    }
    let mut delivered = vec![0usize; n];
    let mut endings = vec![0usize; n];
    let mut pending: Vec<(Instant, RequestKey, Message)> = Vec::new();
    let mut steps = 0;
    loop {
        steps += 1;
        prop_assert!(steps < 100_000, "does not terminate");
        net.pump();
        for ev in std::mem::take(&mut net.server_events) {
            match ev {
                UdpEvent::Request { from, key, message } => {
                    prop_assert_eq!(from, CLIENT);
                    let i: usize = message.payload_text().parse().unwrap();
                    delivered[i] += 1;
                    prop_assert!(delivered[i] <= 1, "request {} delivered twice", i);
                    let resp = Message::response(Code::CHANGED, format!("r{i}"));
                    match choose.below(20) {
                        0 => net.server.drop_response(CLIENT, &key, net.now),
                        1..=5 => {
                            let delay = Duration::from_millis(50 + choose.below(3000) as u64);
                            pending.push((net.now + delay, key, resp));
                        }
                        _ => net
                            .server
                            .send_response(CLIENT, &key, resp, net.now)
                            .unwrap(),
                    }
                }
                UdpEvent::ResponseFailed { .. } => {}
                UdpEvent::Dropped {
                    reason: DropReason::Unmatched(_),
                    ..
                } => {}
                e => prop_assert!(false, "server event {:?}", e),
            }
        }
        for ev in std::mem::take(&mut net.client_events) {
            match ev {
                UdpEvent::Response { from, message } => {
                    prop_assert_eq!(from, SERVER);
                    let i = tokens[&message.token];
                    prop_assert_eq!(message.payload_text(), format!("r{i}"));
                    endings[i] += 1;
                }
                UdpEvent::RequestFailed { to, token, .. } => {
                    prop_assert_eq!(to, SERVER);
                    endings[tokens[&token]] += 1;
                }
                // a duplicated response after the request ended
                UdpEvent::Dropped {
                    reason: DropReason::Unmatched(t),
                    ..
                } => {
                    prop_assert!(tokens.contains_key(&t));
                }
                e => prop_assert!(false, "client event {:?}", e),
            }
        }
        let mut sent_any = false;
        pending.retain(|(at, key, resp)| {
            if *at <= net.now {
                net.server
                    .send_response(CLIENT, key, resp.clone(), net.now)
                    .unwrap();
                sent_any = true;
                false
            } else {
                true
            }
        });
        if sent_any {
            continue;
        }
        let next_response = pending.iter().map(|(t, _, _)| *t).min();
        if !net.advance(next_response) {
            break;
        }
    }
    for (i, ended) in endings.iter().enumerate() {
        prop_assert_eq!(*ended, 1, "request {} ends exactly once", i);
    }
    // a CON request is never sent more than 1 + MAX_RETRANSMIT times
    let mut sends: HashMap<&Bytes, u32> = HashMap::new();
    for (_, from, d) in &net.wire {
        if *from == CLIENT && d[0] >> 4 == 4 && d[1] != 0 {
            *sends.entry(d).or_default() += 1;
        }
    }
    prop_assert!(sends.values().all(|c| *c <= 1 + config.max_retransmit));
    // everything is over: nothing outstanding, nothing timed, caches expired
    prop_assert_eq!(net.client.outstanding_requests(), 0);
    prop_assert!(net.client.is_idle() && net.server.is_idle());
    prop_assert_eq!(net.client.dedup_entries() + net.server.dedup_entries(), 0);
    prop_assert_eq!(net.client.poll_timeout(), None);
    prop_assert_eq!(net.server.poll_timeout(), None);
    // without faults every request succeeds but the dropped ones
    if faults.loss == 0.0 && faults.dup == 0.0 && faults.delay == 0.0 {
        prop_assert!(delivered.iter().all(|d| *d == 1));
    }
    Ok(())
}

#[test]
fn lossless_run_delivers_everything() {
    lossy_run(42, Faults::default(), 20, 1).unwrap();
    lossy_run(43, Faults::default(), 20, 3).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_request_ends_exactly_once_on_a_lossy_network(
        seed in any::<u64>(),
        loss in 0.0..0.5f64,
        dup in 0.0..0.3f64,
        delay in prop_oneof![Just(0.0), 0.0..0.3f64],
        n in 1usize..25,
        nstart in 1usize..4,
    ) {
        lossy_run(seed, Faults { loss, dup, delay }, n, nstart)?;
    }

    #[test]
    fn garbage_never_panics(
        data in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64),
            // mostly-valid version-1 headers
            (0u8..4, proptest::collection::vec(any::<u8>(), 3..64)).prop_map(|(t, mut v)| {
                v.insert(0, 0x40 | (t << 4) | (v[0] & 0x0f));
                v
            }),
        ],
    ) {
        let now = Instant::now();
        let mut l = MessageLayer::<Addr>::new(UdpConfig::default(), 5);
        let _ = l.send_request(SERVER, Message::request(Code::GET, "/x"), true, now);
        l.ping(SERVER, now);
        transmits(&mut l);
        for from in [CLIENT, SERVER] {
            l.handle_datagram(from, Bytes::from(data.clone()), now);
            l.handle_datagram(from, Bytes::from(data.clone()), now);
        }
        for (_, d) in transmits(&mut l) {
            prop_assert_eq!(d.len(), 4, "only empty ACK or RST in answer");
        }
        while let Some(next) = l.poll_timeout() {
            l.handle_timeout(next);
        }
        events(&mut l);
        prop_assert!(l.is_idle());
    }
}

/// The duplicate cache held 8192 entries for EXCHANGE_LIFETIME (247 s): above ~33
/// Confirmable requests a second the oldest were forgotten early, and a late retransmission
/// of one ran its handler a second time. At 100 requests a second for 100 s every
/// retransmission is still recognised (and answered with the kept response).
#[test]
fn a_retransmission_is_recognised_at_100_confirmable_requests_a_second() {
    let start = Instant::now();
    let mut s = MessageLayer::<Addr>::new(UdpConfig::default(), 21);
    let request = |mid: u16| {
        let [hi, lo] = mid.to_be_bytes();
        Bytes::from(vec![0x41, 0x01, hi, lo, 0x7f])
    };
    let n: u32 = 10_000;
    for i in 0..n {
        let now = start + Duration::from_millis(u64::from(i) * 10);
        let (peer, mid) = (100 + i % 50, (i / 50) as u16);
        s.handle_datagram(peer, request(mid), now);
        let [UdpEvent::Request { key, .. }] = &events(&mut s)[..] else {
            panic!("request {i}")
        };
        s.send_response(peer, key, Message::response(Code::CONTENT, "ok"), now)
            .unwrap();
        transmits(&mut s);
    }
    assert_eq!(s.dedup_evictions(), 0);
    // The very first request, retransmitted 100 s later (within its 247 s lifetime).
    let later = start + Duration::from_secs(100);
    s.handle_datagram(100, request(0), later);
    assert!(events(&mut s).is_empty(), "a duplicate, not a new request");
    let again = transmits(&mut s);
    assert_eq!(again.len(), 1, "the kept answer again");
    assert_eq!(decode(&again[0].1).1.payload, "ok");
    assert!(s.dedup_bytes() <= UdpConfig::default().max_dedup_bytes);
}

/// The duplicate cache is bounded by memory too: past `max_dedup_bytes` the oldest entries
/// go (and are counted), whatever the entry limit.
#[test]
fn the_duplicate_cache_is_bounded_by_bytes() {
    let now = Instant::now();
    let config = UdpConfig {
        max_dedup_bytes: 20_000,
        ..UdpConfig::default()
    };
    let mut s = MessageLayer::<Addr>::new(config, 22);
    let body = vec![b'x'; 900];
    for mid in 0..200u16 {
        let [hi, lo] = mid.to_be_bytes();
        s.handle_datagram(CLIENT, Bytes::from(vec![0x41, 0x01, hi, lo, 0x01]), now);
        let [UdpEvent::Request { key, .. }] = &events(&mut s)[..] else {
            panic!()
        };
        s.send_response(
            CLIENT,
            key,
            Message::response(Code::CONTENT, body.clone()),
            now,
        )
        .unwrap();
        transmits(&mut s);
        // The newest entry's answer may take it past by one message.
        let bound = 20_000 + UdpConfig::default().max_message_size;
        assert!(s.dedup_bytes() <= bound, "{} bytes", s.dedup_bytes());
    }
    assert!(s.dedup_evictions() > 150, "{}", s.dedup_evictions());
    assert!(s.dedup_entries() < 25, "{}", s.dedup_entries());
}

/// Pings `to` and answers with RST at once: the ping's Message ID.
fn ping_and_reset(l: &mut MessageLayer<Addr>, to: Addr, now: Instant) -> u16 {
    let mid = l.ping(to, now);
    l.handle_datagram(to, empty(MessageType::Reset, mid), now);
    transmits(l);
    assert_eq!(
        events(l),
        [UdpEvent::Pong {
            from: to,
            message_id: mid
        }]
    );
    mid
}

/// Found by the `udp_layer` fuzz target: a peer forgotten while idle (`max_peers`) restarted
/// at a random Message ID when met again, which could repeat one it had been sent within
/// EXCHANGE_LIFETIME (RFC 7252 §4.4), a CON the peer would then take for a duplicate.
#[test]
fn forgotten_peer_gets_no_recent_message_id_again() {
    let config = UdpConfig {
        max_peers: 1,
        ..UdpConfig::default()
    };
    for seed in 0..4 {
        let mut l: MessageLayer<Addr> = MessageLayer::new(config.clone(), seed);
        let now = Instant::now();
        let mut used = std::collections::HashSet::new();
        for _ in 0..4096 {
            assert!(used.insert(ping_and_reset(&mut l, CLIENT, now)));
        }
        for _ in 0..64 {
            // CLIENT is idle: SERVER takes its place in the peer table.
            ping_and_reset(&mut l, SERVER, now);
            assert_eq!(l.peer_count(), 1);
            let mid = ping_and_reset(&mut l, CLIENT, now);
            assert!(used.insert(mid), "seed {seed}: Message ID {mid} again");
        }
    }
}
