//! The `udp_layer` target: the input is a program of operations on one RFC 7252
//! [`MessageLayer<u8>`] talking to four peers (addresses 0–3) on virtual time, with a model
//! of what the layer must do alongside.
//!
//! Layout: bytes 0–3 pick the [`UdpConfig`] (timers, MAX_RETRANSMIT, NSTART, size limits,
//! table bounds, token length), bytes 4–11 the layer's seed; then operations, one opcode
//! byte each followed by its arguments (see [`Harness::step`]), at most [`MAX_STEPS`]. At the
//! end the harness runs every timer out. Checks:
//! - every datagram the layer sends decodes with `codec::udp::decode` under our own
//!   `max_message_size`, with a 0–8-byte token; CON/NON carry a request, a response or (CON)
//!   nothing (a ping), ACK nothing or a response, RST nothing; our requests carry tokens of
//!   the configured length;
//! - retransmission stops: no (peer, Message ID) is sent as CON more than MAX_RETRANSMIT + 1
//!   times;
//! - every request `send_request` accepted ends exactly once: a final `Response` or one
//!   `RequestFailed`, or `cancel_request` (after which nothing is delivered for it); only an
//!   observation that got a notification may stay open when every timer has run out; every
//!   ping ends with exactly one `Pong` or `PingTimeout`; `ResponseFailed` only names a
//!   response we sent; `is_outstanding` and `outstanding_requests` agree with the model;
//! - `send_request`/`send_request_with_token`/`send_response` return exactly the documented
//!   errors; actions of the layer above raise no events;
//! - deduplication: a CON/NON request (or response) from a (peer, Message ID) not seen within
//!   its lifetime, or seen with another message (the peer reused the MID), is processed
//!   exactly once (one `Request` event with that Message ID, type and message); a copy within
//!   EXCHANGE_LIFETIME (CON) or NON_LIFETIME (NON) is not delivered again (checked when the
//!   dedup table is large enough never to evict);
//! - every CON the layer can parse the header of is answered with an ACK or RST of its Message
//!   ID by the end (a duplicate of an earlier exchange aside);
//! - timers: after `handle_timeout(now)`, `poll_timeout()` is past `now` (no busy loop); calling
//!   it early does nothing; when everything has ended and every timer has run, the layer is
//!   idle and its dedup table empty; the dedup table never exceeds `max_dedup_entries`.

use crate::input::{Input, trace};
use bytes::Bytes;
use coapws_proto::codec::udp::{self, MessageType, UdpHeader};
use coapws_proto::udp::{MessageLayer, RequestKey, UdpConfig, UdpEvent, UdpSendError};
use coapws_proto::{Code, DecodeError, DecodeLimits, Message, OptionNumber, Token};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Operations per program (bounds time and memory per input).
pub const MAX_STEPS: usize = 256;
const PEERS: u8 = 4;
/// Remembered datagrams (ours and the peers') that later operations can answer or replay.
const LOG: usize = 32;

/// A datagram sent or received: peer, header, message.
type Datagram = (u8, UdpHeader, Message);

struct Req {
    observe: bool,
    notified: bool,
}

struct Harness {
    layer: MessageLayer<u8>,
    config: UdpConfig,
    limits: DecodeLimits,
    /// Dedup entries are never evicted: repeats must be caught.
    strict_dedup: bool,
    now: Instant,
    start: Instant,
    /// Our requests that have not ended: (peer, token).
    pending: HashMap<(u8, Token), Req>,
    issued: Vec<(u8, Token)>,
    pings: HashSet<(u8, u16)>,
    /// (peer, token) of every response or notification we sent.
    responded: HashSet<(u8, Token)>,
    /// Requests the peers made, for answering.
    requests_in: Vec<(u8, RequestKey)>,
    /// Our recent datagrams, for the peers to answer.
    ours: Vec<Datagram>,
    /// The peers' recent datagrams, for replaying.
    theirs: Vec<(u8, Bytes)>,
    con_sends: HashMap<(u8, u16), u32>,
    /// Dedup model: what was processed from each (peer, MID).
    seen: HashMap<(u8, u16), Seen>,
    /// `handle_timeout` calls so far, and the time of the latest.
    timeout_calls: u64,
    last_timeout: Option<Instant>,
    /// CONs from peers still owed an ACK or RST.
    owed: HashSet<(u8, u16)>,
}

pub fn run(data: &[u8]) {
    let mut inp = Input::new(data);
    let (b0, b1, b2, b3) = (inp.u8(), inp.u8(), inp.u8(), inp.u8());
    let ms = Duration::from_millis;
    let s = Duration::from_secs;
    let config = UdpConfig {
        ack_timeout: [ms(1), ms(100), s(2), Duration::ZERO][usize::from(b0 & 3)],
        ack_random_factor: [1.5, 1.0, 2.0, f64::NAN][usize::from((b0 >> 2) & 3)],
        max_retransmit: [4, 0, 1, 2][usize::from((b0 >> 4) & 3)],
        nstart: [1, 0, 2, 4][usize::from((b0 >> 6) & 3)],
        max_latency: [s(100), Duration::ZERO, s(1), ms(10)][usize::from(b1 & 3)],
        empty_ack_delay: [ms(100), Duration::ZERO, s(2), ms(1)][usize::from((b1 >> 2) & 3)],
        max_message_size: [1152, 64, 300, 1152][usize::from((b1 >> 4) & 3)],
        max_receive_size: [65_507, 64, 1152, 200][usize::from((b1 >> 6) & 3)],
        max_peers: [1024, 1, 2, 3][usize::from(b2 & 3)],
        max_dedup_entries: [8192, 1, 4, 0][usize::from((b2 >> 2) & 3)],
        max_dedup_bytes: [usize::MAX, 4096, 1 << 20, 300][usize::from(b3 & 3)],
        non_request_timeout: [s(145), s(1), ms(50), s(10)][usize::from((b2 >> 4) & 3)],
        token_len: [4, 8, 2, 12][usize::from((b2 >> 6) & 3)],
    };
    let seed = inp.u64();
    let limits =
        DecodeLimits::with_max_message_size(config.max_receive_size.max(config.max_message_size));
    let start = Instant::now();
    let mut h = Harness {
        layer: MessageLayer::new(config.clone(), seed),
        strict_dedup: config.max_dedup_entries >= 8192 && config.max_dedup_bytes == usize::MAX,
        config,
        limits,
        now: start,
        start,
        pending: HashMap::new(),
        issued: Vec::new(),
        pings: HashSet::new(),
        responded: HashSet::new(),
        requests_in: Vec::new(),
        ours: Vec::new(),
        theirs: Vec::new(),
        con_sends: HashMap::new(),
        seen: HashMap::new(),
        timeout_calls: 0,
        last_timeout: None,
        owed: HashSet::new(),
    };
    for _ in 0..MAX_STEPS {
        if inp.is_empty() {
            break;
        }
        h.step(&mut inp);
    }
    h.finish();
}

fn push_log<T>(log: &mut Vec<T>, item: T) {
    if log.len() >= LOG {
        log.remove(0);
    }
    log.push(item);
}

/// What the step that just ran may have raised.
#[derive(Clone, Copy, PartialEq)]
enum Expect {
    /// A datagram from this peer, with its decoding (if it decoded) and whether a repeat of a
    /// processed (peer, MID) is known to be deduplicated.
    Datagram,
    Timeout,
    /// An action of the layer above: no events.
    Action,
}

impl Harness {
    fn step(&mut self, inp: &mut Input) {
        let peer = inp.u8() % PEERS;
        let op = inp.u8() % 16;
        if trace() {
            eprintln!("op {op} peer {peer} at +{:?}", self.now - self.start);
        }
        match op {
            0 => {
                let n = usize::from(inp.u8());
                let raw = inp.bytes(n);
                self.deliver(peer, raw);
            }
            1..=3 => {
                let d = self.peer_datagram(peer, inp);
                self.deliver(peer, d);
            }
            4 | 5 => {
                // A peer answers one of our recent datagrams.
                if self.ours.is_empty() {
                    return;
                }
                let (to, h, m) = self.ours[inp.below(self.ours.len())].clone();
                let d = answer(inp, h, &m);
                self.deliver(to, d);
            }
            6 => {
                // A peer's datagram again (a duplicate), from it or from another peer.
                if self.theirs.is_empty() {
                    return;
                }
                let (from, d) = self.theirs[inp.below(self.theirs.len())].clone();
                let from = if inp.u8() % 4 == 0 { peer } else { from };
                self.deliver(from, d);
            }
            7 | 8 => self.advance(inp),
            9 | 10 => self.send_request(peer, inp),
            11 => self.respond(inp),
            12 => self.notify(inp),
            13 => {
                if !self.requests_in.is_empty() {
                    let (from, key) = self.requests_in[inp.below(self.requests_in.len())].clone();
                    self.layer.drop_response(from, &key, self.now);
                    self.drain(Expect::Action);
                }
            }
            14 => {
                if !self.issued.is_empty() {
                    let (to, token) = self.issued[inp.below(self.issued.len())].clone();
                    self.cancel(to, &token);
                }
            }
            _ => {
                if inp.u8() % 4 == 0 {
                    if !self.requests_in.is_empty() {
                        let (from, key) = &self.requests_in[inp.below(self.requests_in.len())];
                        self.layer.end_notifications(*from, key.token());
                        self.drain(Expect::Action);
                    }
                } else {
                    let mid = self.layer.ping(peer, self.now);
                    assert!(self.pings.insert((peer, mid)), "ping MID {mid} in use");
                    let sent = self.drain(Expect::Action);
                    let ping = (peer, MessageType::Confirmable, mid, Code::EMPTY);
                    assert!(
                        sent.iter()
                            .any(|(p, h, m)| (*p, h.mtype, h.message_id, m.code) == ping),
                        "ping not sent"
                    );
                }
            }
        }
    }

    fn cancel(&mut self, to: u8, token: &Token) {
        self.layer.cancel_request(to, token);
        self.pending.remove(&(to, token.clone()));
        self.drain(Expect::Action);
        assert!(
            !self.layer.is_outstanding(to, token),
            "cancelled, outstanding"
        );
    }

    /// A well-formed datagram from `peer`.
    fn peer_datagram(&mut self, peer: u8, inp: &mut Input) -> Bytes {
        let mtype = [
            MessageType::Confirmable,
            MessageType::NonConfirmable,
            MessageType::Acknowledgement,
            MessageType::Reset,
        ][inp.below(4)];
        let message_id = match inp.u8() % 4 {
            0 if !self.ours.is_empty() => self.ours[inp.below(self.ours.len())].1.message_id,
            1 if !self.theirs.is_empty() => {
                let d = &self.theirs[inp.below(self.theirs.len())].1;
                if d.len() >= 4 {
                    u16::from_be_bytes([d[2], d[3]])
                } else {
                    0
                }
            }
            _ => inp.u16(),
        };
        let token = |inp: &mut Input| Token::new(inp.short(9));
        let m = match inp.u8() % 8 {
            0 => Message::new(Code::EMPTY),
            1..=3 => {
                let code = inp.pick(&[Code::GET, Code::POST, Code::PUT, Code::FETCH]);
                let mut m = Message::request(code, "x").with_token(token(inp));
                if inp.bool() {
                    m = m.with_uint_option(OptionNumber::OBSERVE, u32::from(inp.u8() % 2));
                }
                m.with_payload(inp.payload())
            }
            4..=6 => {
                let token = match inp.u8() % 4 {
                    0 => token(inp),
                    _ => {
                        let mine: Vec<&Token> = self
                            .issued
                            .iter()
                            .filter(|(p, _)| *p == peer)
                            .map(|(_, t)| t)
                            .collect();
                        if mine.is_empty() {
                            token(inp)
                        } else {
                            mine[inp.below(mine.len())].clone()
                        }
                    }
                };
                let code = inp.pick(&[Code::CONTENT, Code::NOT_FOUND, Code::CHANGED]);
                let mut m = Message::response(code, inp.short(8)).with_token(token);
                if inp.bool() {
                    m = m.with_uint_option(OptionNumber::OBSERVE, inp.u32() & 0xff_ffff);
                }
                m
            }
            _ => Message::new(inp.pick(&[Code::CSM, Code::new(1, 1), Code::new(6, 0)]))
                .with_token(token(inp)),
        };
        let header = UdpHeader { mtype, message_id };
        udp::encode(&header, &m).expect("peer datagram encodes")
    }

    /// Delivers a datagram from `from` and checks what it raised.
    fn deliver(&mut self, from: u8, data: Bytes) {
        if data.len() >= 4 && data[0] >> 6 == 1 {
            push_log(&mut self.theirs, (from, data.clone()));
        }
        let decoded = udp::decode(&data, &self.limits);
        // Is an ACK or RST owed for it?
        let owes = match &decoded {
            Err(DecodeError::TooLarge { .. }) => {
                udp::peek_header(&data).is_some_and(|(t, _, _)| t == MessageType::Confirmable)
            }
            Err(_) => data.len() >= 4 && data[0] >> 6 == 1 && (data[0] >> 4) & 3 == 0,
            Ok((h, m)) => {
                h.mtype == MessageType::Confirmable
                    && (!is_exchange(m) || self.fresh(from, h.message_id, &data))
            }
        };
        if owes {
            self.owed
                .insert((from, u16::from_be_bytes([data[2], data[3]])));
        }
        // A request or response from a (peer, MID) not processed within its lifetime is
        // processed now; a repeat is not (when no dedup entry can have been evicted).
        let exchange = match &decoded {
            Ok((h, m))
                if matches!(
                    h.mtype,
                    MessageType::Confirmable | MessageType::NonConfirmable
                ) && is_exchange(m) =>
            {
                Some((*h, m.clone(), self.fresh(from, h.message_id, &data)))
            }
            _ => None,
        };
        let body = without_mid(&data);
        self.layer.handle_datagram(from, data, self.now);
        let (_, events) = self.drain_events(Expect::Datagram);
        let requests: Vec<&UdpEvent<u8>> = events
            .iter()
            .filter(|e| matches!(e, UdpEvent::Request { .. }))
            .collect();
        let processed = events.iter().any(|e| match e {
            UdpEvent::Request { .. } => true,
            UdpEvent::Response { from: f, .. } => *f == from,
            UdpEvent::Dropped {
                reason: coapws_proto::udp::DropReason::Unmatched(_),
                ..
            } => true,
            _ => false,
        });
        match exchange {
            Some((h, m, fresh)) => {
                if m.code.is_request() {
                    if fresh {
                        assert_eq!(requests.len(), 1, "a new request is delivered once");
                    }
                    if let Some(UdpEvent::Request {
                        from: f,
                        key,
                        message,
                    }) = requests.first()
                    {
                        assert_eq!(*f, from);
                        assert_eq!(key.message_id(), h.message_id);
                        assert_eq!(key.message_type(), h.mtype);
                        assert_eq!(key.token(), &m.token);
                        assert_eq!(message, &m);
                        push_log(&mut self.requests_in, (from, key.clone()));
                    }
                } else {
                    assert!(requests.is_empty(), "a response raised a Request");
                    if fresh {
                        assert!(processed, "a new response was not processed");
                    }
                }
                if !fresh && self.strict_dedup {
                    assert!(!processed, "duplicate delivered again within its lifetime");
                }
                if processed {
                    let con = h.mtype == MessageType::Confirmable;
                    let entry = Seen {
                        at: self.now,
                        con,
                        calls: self.timeout_calls,
                        body,
                    };
                    self.seen.insert((from, h.message_id), entry);
                }
            }
            None => assert!(requests.is_empty(), "Request from a datagram that is none"),
        }
    }

    /// Would the layer take this CON/NON request or response from (peer, MID) as new?
    fn fresh(&self, from: u8, mid: u16, datagram: &[u8]) -> bool {
        match self.seen.get(&(from, mid)) {
            None => true,
            Some(seen) if seen.body != without_mid(datagram) => true,
            Some(&Seen { at, con, calls, .. }) => {
                let lifetime = if con {
                    self.config.exchange_lifetime()
                } else {
                    self.config.non_lifetime()
                };
                // An entry is gone once a handle_timeout at or past its end ran after it was
                // made. (`checked_add`: a saturated lifetime never expires.)
                let end = at.checked_add(lifetime);
                let ran = self.last_timeout.filter(|_| self.timeout_calls > calls);
                matches!((end, ran), (Some(end), Some(t)) if t >= end)
            }
        }
    }

    fn advance(&mut self, inp: &mut Input) {
        let mode = inp.u8();
        let n = u64::from(inp.u16());
        self.now = match mode % 4 {
            0 => self.now + Duration::from_micros(n * 100),
            1 => self.now + Duration::from_millis(n * 10),
            2 => self.now + Duration::from_secs(n % 1024),
            _ => self.layer.poll_timeout().unwrap_or(self.now).max(self.now),
        };
        self.timeout();
    }

    fn timeout(&mut self) {
        let before = self.layer.poll_timeout();
        let early = before.is_none_or(|t| t > self.now);
        self.layer.handle_timeout(self.now);
        self.timeout_calls += 1;
        self.last_timeout = Some(self.now);
        let (sent, events) = self.drain_events(Expect::Timeout);
        if early {
            assert!(
                sent.is_empty() && events.is_empty(),
                "early handle_timeout acted"
            );
            assert_eq!(self.layer.poll_timeout(), before);
        }
        if let Some(t) = self.layer.poll_timeout() {
            assert!(
                t > self.now,
                "busy loop: a timer is still due after handle_timeout"
            );
        }
    }

    fn send_request(&mut self, to: u8, inp: &mut Input) {
        let confirmable = inp.bool();
        let code = inp.pick(&[Code::GET, Code::GET, Code::POST, Code::PUT, Code::CONTENT]);
        let mut m = Message::request(code, "r");
        let observe = inp.u8() % 4 == 0;
        if observe {
            m = m.with_uint_option(OptionNumber::OBSERVE, 0);
        }
        m.payload = inp.payload();
        let reuse = inp.u8() % 8 == 0 && !self.issued.is_empty();
        let (token, got) = if reuse {
            // send_request_with_token with an earlier token: refused while it is outstanding.
            let (p, token) = self.issued[inp.below(self.issued.len())].clone();
            let m = m.clone().with_token(token.clone());
            let want = if !m.code.is_request() {
                Err(UdpSendError::NotARequest(m.code))
            } else if self.pending.contains_key(&(to, token.clone())) {
                Err(UdpSendError::TokenInUse(token.clone()))
            } else {
                self.expect_fits(&m)
            };
            let got = self
                .layer
                .send_request_with_token(to, m, confirmable, self.now);
            assert_eq!(got, want, "send_request_with_token (token of peer {p})");
            (token, got)
        } else {
            let token_len = self.config.token_len.clamp(4, 8);
            let sized = m.clone().with_token(Token::new(vec![0; token_len]));
            let want = if !m.code.is_request() {
                Err(UdpSendError::NotARequest(m.code))
            } else {
                self.expect_fits(&sized)
            };
            match self.layer.send_request(to, m, confirmable, self.now) {
                Ok(token) => {
                    assert_eq!(want, Ok(()), "send_request accepted");
                    assert_eq!(token.len(), token_len, "token length");
                    (token, Ok(()))
                }
                Err(e) => {
                    assert_eq!(want, Err(e.clone()), "send_request refused");
                    (Token::EMPTY, Err(e))
                }
            }
        };
        if got.is_ok() {
            assert!(
                !self.pending.contains_key(&(to, token.clone())),
                "token handed out twice"
            );
            self.pending.insert(
                (to, token.clone()),
                Req {
                    observe,
                    notified: false,
                },
            );
            if !self.issued.contains(&(to, token.clone())) && self.issued.len() < 128 {
                self.issued.push((to, token));
            }
        }
        self.drain(Expect::Action);
    }

    fn expect_fits(&self, m: &Message) -> Result<(), UdpSendError> {
        let size = udp::encoded_len(m).expect("encodable");
        if size > self.config.max_message_size {
            return Err(UdpSendError::TooLarge {
                size,
                limit: self.config.max_message_size,
            });
        }
        Ok(())
    }

    fn respond(&mut self, inp: &mut Input) {
        if self.requests_in.is_empty() {
            return;
        }
        let (to, key) = self.requests_in[inp.below(self.requests_in.len())].clone();
        let code = inp.pick(&[Code::CONTENT, Code::NOT_FOUND, Code::CHANGED, Code::GET]);
        let mut m = Message::response(code, inp.payload());
        if inp.bool() {
            m = m.with_uint_option(OptionNumber::OBSERVE, inp.u32() & 0xff_ffff);
        }
        let want = if !m.code.is_response() {
            Err(UdpSendError::NotAResponse(m.code))
        } else {
            self.expect_fits(&m.clone().with_token(key.token().clone()))
        };
        let got = self.layer.send_response(to, &key, m, self.now);
        assert_eq!(got, want, "send_response");
        if got.is_ok() {
            self.responded.insert((to, key.token().clone()));
        }
        let sent = self.drain(Expect::Action);
        if got.is_ok() {
            assert!(
                sent.iter()
                    .any(|(p, _, r)| *p == to && r.code == code && &r.token == key.token()),
                "the response was not sent"
            );
        }
    }

    fn notify(&mut self, inp: &mut Input) {
        if self.requests_in.is_empty() {
            return;
        }
        let (to, key) = self.requests_in[inp.below(self.requests_in.len())].clone();
        let m = Message::response(Code::CONTENT, inp.short(8))
            .with_uint_option(OptionNumber::OBSERVE, inp.u32() & 0xff_ffff);
        let got = self
            .layer
            .send_notification(to, key.token(), m, inp.bool(), self.now);
        assert_eq!(got, Ok(()), "send_notification");
        self.responded.insert((to, key.token().clone()));
        self.drain(Expect::Action);
    }

    fn drain(&mut self, expect: Expect) -> Vec<Datagram> {
        self.drain_events(expect).0
    }

    /// Drains datagrams and events, checks them and the model.
    fn drain_events(&mut self, expect: Expect) -> (Vec<Datagram>, Vec<UdpEvent<u8>>) {
        let limits = DecodeLimits::with_max_message_size(self.config.max_message_size);
        let mut sent = Vec::new();
        while let Some((to, d)) = self.layer.poll_transmit() {
            assert!(to < PEERS, "datagram to an address nobody used");
            let (h, m) = udp::decode(&d, &limits).unwrap_or_else(|e| {
                panic!(
                    "sent a datagram of {} bytes that does not decode: {e}",
                    d.len()
                )
            });
            match h.mtype {
                MessageType::Confirmable | MessageType::NonConfirmable => {
                    let ping = h.mtype == MessageType::Confirmable && m.code == Code::EMPTY;
                    assert!(
                        ping || m.code.is_request() || m.code.is_response(),
                        "sent {} as {:?}",
                        m.code,
                        h.mtype
                    );
                    if m.code.is_request() {
                        assert_eq!(m.token.len(), self.config.token_len.clamp(4, 8));
                    }
                }
                MessageType::Acknowledgement => {
                    assert!(
                        m.code == Code::EMPTY || m.code.is_response(),
                        "ACK {}",
                        m.code
                    );
                }
                MessageType::Reset => assert_eq!(m.code, Code::EMPTY, "RST with content"),
            }
            if h.mtype == MessageType::Confirmable {
                let n = self.con_sends.entry((to, h.message_id)).or_insert(0);
                *n += 1;
                assert!(
                    *n <= self.config.max_retransmit + 1,
                    "CON {} to {to} sent {n} times, MAX_RETRANSMIT {}",
                    h.message_id,
                    self.config.max_retransmit
                );
            } else {
                self.owed.remove(&(to, h.message_id));
            }
            push_log(&mut self.ours, (to, h, m.clone()));
            if trace() {
                eprintln!("  sent to {to}: {h:?} {m:?}");
            }
            sent.push((to, h, m));
        }
        let mut events = Vec::new();
        while let Some(e) = self.layer.poll_event() {
            assert!(expect != Expect::Action, "an action raised {e:?}");
            match &e {
                UdpEvent::Response { from, message } => {
                    assert!(expect == Expect::Datagram);
                    let key = (*from, message.token.clone());
                    let r = self.pending.get_mut(&key).unwrap_or_else(|| {
                        panic!("response for {key:?}: not an outstanding request")
                    });
                    let notification = message.code.is_success()
                        && message.options.contains(OptionNumber::OBSERVE);
                    if r.observe && notification {
                        r.notified = true;
                    } else {
                        self.pending.remove(&key);
                    }
                }
                UdpEvent::RequestFailed { to, token, .. } => {
                    assert!(
                        self.pending.remove(&(*to, token.clone())).is_some(),
                        "RequestFailed for ({to}, {token:?}): not an outstanding request"
                    );
                }
                UdpEvent::Pong { from, message_id } => {
                    assert!(self.pings.remove(&(*from, *message_id)), "Pong to no ping");
                }
                UdpEvent::PingTimeout { to, message_id } => {
                    assert!(self.pings.remove(&(*to, *message_id)), "timeout of no ping");
                }
                UdpEvent::ResponseFailed { to, token, .. } => {
                    assert!(
                        self.responded.contains(&(*to, token.clone())),
                        "ResponseFailed for a response never sent"
                    );
                }
                UdpEvent::Request { .. } | UdpEvent::Dropped { .. } => {
                    assert!(expect == Expect::Datagram, "{e:?} without a datagram");
                }
            }
            if trace() {
                eprintln!("  event {e:?}");
            }
            events.push(e);
        }
        for ((to, token), _) in self.pending.iter() {
            assert!(
                self.layer.is_outstanding(*to, token),
                "request ({to}, {token:?}) ended without an event"
            );
        }
        assert_eq!(self.layer.outstanding_requests(), self.pending.len());
        assert!(self.layer.dedup_entries() <= self.config.max_dedup_entries.max(1));
        (sent, events)
    }

    /// Runs every timer out, then checks that everything ended.
    fn finish(&mut self) {
        self.run_timers_out();
        for ((to, token), r) in &self.pending {
            assert!(
                r.observe && r.notified,
                "request ({to}, {token:?}) never ended"
            );
        }
        let open: Vec<(u8, Token)> = self.pending.keys().cloned().collect();
        for (to, token) in open {
            self.cancel(to, &token);
        }
        let notified: Vec<(u8, Token)> = self.responded.iter().cloned().collect();
        for (to, token) in notified {
            self.layer.end_notifications(to, &token);
        }
        self.drain(Expect::Action);
        self.run_timers_out();
        assert!(self.pings.is_empty(), "pings never ended: {:?}", self.pings);
        assert!(self.layer.is_idle(), "not idle with nothing pending");
        assert_eq!(self.layer.outstanding_requests(), 0);
        assert_eq!(
            self.layer.dedup_entries(),
            0,
            "dedup entries outlived their timers"
        );
        assert!(self.owed.is_empty(), "CONs never answered: {:?}", self.owed);
    }

    fn run_timers_out(&mut self) {
        for _ in 0..100_000 {
            let Some(t) = self.layer.poll_timeout() else {
                return;
            };
            self.now = self.now.max(t);
            self.timeout();
        }
        panic!("timers never run out");
    }
}

/// A CON/NON that duplicate detection tracks: a request or a response.
/// A CON/NON request or response the model saw processed from a (peer, MID).
struct Seen {
    /// When.
    at: Instant,
    /// It was Confirmable.
    con: bool,
    /// `timeout_calls` then.
    calls: u64,
    /// The datagram but its MID: a copy is a duplicate, another message is not.
    body: Vec<u8>,
}

/// A datagram but its Message ID: equal for every copy of one message.
fn without_mid(datagram: &[u8]) -> Vec<u8> {
    let mut v = datagram.to_vec();
    if v.len() >= 4 {
        v.drain(2..4);
    }
    v
}

fn is_exchange(m: &Message) -> bool {
    m.code.is_request() || m.code.is_response()
}

/// A peer's answer to our datagram `h`/`m`: empty ACK, piggybacked response, RST, or a
/// separate CON/NON response.
fn answer(inp: &mut Input, h: UdpHeader, m: &Message) -> Bytes {
    let code = inp.pick(&[Code::CONTENT, Code::CONTENT, Code::NOT_FOUND]);
    let mut response = Message::response(code, inp.short(8)).with_token(m.token.clone());
    if inp.bool() {
        response = response.with_uint_option(OptionNumber::OBSERVE, inp.u32() & 0xff_ffff);
    }
    let (mtype, message_id, msg) = match inp.u8() % 5 {
        0 => (
            MessageType::Acknowledgement,
            h.message_id,
            Message::new(Code::EMPTY),
        ),
        1 => (MessageType::Acknowledgement, h.message_id, response),
        2 => (MessageType::Reset, h.message_id, Message::new(Code::EMPTY)),
        3 => (MessageType::Confirmable, inp.u16(), response),
        _ => (MessageType::NonConfirmable, inp.u16(), response),
    };
    let header = UdpHeader { mtype, message_id };
    udp::encode(&header, &msg).expect("answer encodes")
}
