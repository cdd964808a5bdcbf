//! The `connection` target: the input is a program of operations on one RFC 8323
//! [`Connection`] (WebSocket or TCP framing, picked by the first byte) on virtual time, with a
//! model of what the connection must do alongside.
//!
//! Layout: byte 0 picks framing and our settings, byte 1 the timeouts; then operations, one
//! opcode byte each followed by its arguments (see [`Harness::step`]), at most
//! [`MAX_STEPS`] of them. After every operation the harness drains `poll_transmit` and
//! `poll_event` and checks:
//! - the first frame is our CSM, with our settings;
//! - every frame decodes with the framing's codec under the peer's limits as the connection
//!   knows them (Max-Message-Size and token length from the peer's CSMs delivered so far);
//! - a Pong goes only to a Ping that arrived; an Abort is the only frame of the step that
//!   aborted, carries the reason, and nothing at all is sent in the step where the transport
//!   closed or the peer aborted, nor after Closed;
//! - exactly one `Event::Closed`, the last event, when and only when `state()` is Closed and
//!   `poll_close()` is set (with the same reason); Request, Response, Pong, SettingsChanged and
//!   PeerReleasing only after Established, which comes at most once;
//! - every `Event::Response` and `Event::SendFailed` is for a request we sent that was still
//!   outstanding (not answered finally, not cancelled, not failed); `is_outstanding` and
//!   `outstanding_requests` agree with the model after every step;
//! - `send_request` / `send_response` return exactly the error the documented rules give;
//! - timers: `poll_timeout()` is exactly the model's (CSM or release deadline, or keepalive
//!   Ping due / Pong overdue); it is set in every state that waits for something; calling
//!   `handle_timeout` early does nothing; at the deadline it does what is due (CSM timeout
//!   abort, release close, keepalive Ping, NoPong abort) and a few calls at the same instant
//!   always move `poll_timeout()` past it (no busy loop).

use crate::input::{Input, trace};
use bytes::Bytes;
use coapws_proto::codec::{tcp, ws};
use coapws_proto::connection::{
    AbortReason, Connection, ConnectionConfig, ConnectionError, Event, Framing, SendError, State,
};
use coapws_proto::signaling::{BASE_MAX_MESSAGE_SIZE, Csm, PeerSettings, Signal};
use coapws_proto::{Code, DecodeLimits, Message, OptionNumber, Token};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Operations per program (bounds time and memory per input).
pub const MAX_STEPS: usize = 256;

const DURATIONS: [Duration; 8] = [
    Duration::ZERO,
    Duration::from_millis(1),
    Duration::from_millis(50),
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(30),
    Duration::from_secs(300),
];

struct Harness {
    conn: Connection,
    framing: Framing,
    config: ConnectionConfig,
    our_limits: DecodeLimits,
    now: Instant,
    start: Instant,
    /// Mirrors the connection's stream decoder (TCP): which messages each chunk completes.
    shadow: tcp::StreamDecoder,
    /// The peer's settings from the CSMs the connection processed.
    peer: PeerSettings,
    frames_sent: usize,
    established: bool,
    closed: Option<ConnectionError>,
    /// Every token we used in `send_request` (peer responses pick from these).
    issued: Vec<Token>,
    /// Our outstanding requests: token → whether it is an observation.
    live: HashMap<Token, bool>,
    next_token: u64,
    /// Tokens of requests the peer made (Event::Request).
    inbound: Vec<Token>,
    /// Tokens of Pings that arrived and have not been answered.
    pings_in: Vec<Token>,
    /// CSM or release deadline.
    deadline: Option<Instant>,
    heard: Instant,
    pinging: bool,
}

pub fn run(data: &[u8]) {
    let mut inp = Input::new(data);
    let b0 = inp.u8();
    let b1 = inp.u8();
    let framing = if b0 & 1 == 0 {
        Framing::WebSocket
    } else {
        Framing::Tcp
    };
    let max_message_size = [1 << 20, BASE_MAX_MESSAGE_SIZE, 64, 300][usize::from((b0 >> 1) & 3)];
    let keepalive = match (b0 >> 4) & 7 {
        0 | 1 => None,
        n => Some(DURATIONS[usize::from(n)]),
    };
    let config = ConnectionConfig {
        max_message_size,
        block_wise_transfer: b0 & 8 != 0,
        csm_timeout: DURATIONS[usize::from(b1 & 7)],
        release_timeout: DURATIONS[usize::from((b1 >> 3) & 7)],
        keepalive,
    };
    let start = Instant::now();
    let our_limits = DecodeLimits::with_max_message_size(max_message_size as usize);
    let mut h = Harness {
        conn: Connection::new(framing, config.clone(), start),
        framing,
        config,
        our_limits,
        now: start,
        start,
        shadow: tcp::StreamDecoder::new(our_limits),
        peer: PeerSettings::default(),
        frames_sent: 0,
        established: false,
        closed: None,
        issued: Vec::new(),
        live: HashMap::new(),
        next_token: 1,
        inbound: Vec::new(),
        pings_in: Vec::new(),
        deadline: Some(start + DURATIONS[usize::from(b1 & 7)]),
        heard: start,
        pinging: false,
    };
    // The CSM is queued at once: the first drain gives exactly it.
    let frames = h.drain();
    assert_eq!(frames.len(), 1, "a new connection queues exactly its CSM");
    let csm = Signal::parse(&frames[0]).expect("first frame is a signal");
    assert_eq!(
        csm,
        Signal::Csm(Csm {
            max_message_size: Some(h.config.max_message_size),
            block_wise_transfer: h.config.block_wise_transfer,
            extended_token_length: None,
        }),
        "first frame is our CSM with our settings"
    );

    for _ in 0..MAX_STEPS {
        if inp.is_empty() {
            break;
        }
        h.step(&mut inp);
    }
}

impl Harness {
    fn step(&mut self, inp: &mut Input) {
        let op = inp.u8() % 16;
        if trace() {
            eprintln!(
                "op {op} at +{:?}, {:?}",
                self.now - self.start,
                self.conn.state()
            );
        }
        match op {
            // Raw peer bytes: a WebSocket frame, or a TCP chunk.
            0 | 1 => {
                let n = usize::from(inp.u8());
                let raw = inp.bytes(n);
                self.deliver_raw(raw);
            }
            // A well-formed message (or a few), possibly split into chunks for TCP.
            2..=5 => {
                let m = self.peer_message(inp);
                let bytes = match self.framing {
                    Framing::WebSocket => ws::encode(&m),
                    Framing::Tcp => tcp::encode(&m),
                }
                .expect("peer message encodes");
                match self.framing {
                    Framing::WebSocket => self.deliver_raw(bytes),
                    Framing::Tcp => {
                        let chunk = usize::from(inp.u8() % 8);
                        if chunk == 0 {
                            self.deliver_raw(bytes);
                        } else {
                            for c in bytes.chunks(chunk) {
                                self.deliver_raw(Bytes::copy_from_slice(c));
                            }
                        }
                    }
                }
            }
            6 => {
                let was_closed = self.closed.is_some();
                self.conn.handle_text_frame();
                self.drain();
                if !was_closed {
                    self.expect_abort(AbortReason::TextFrame);
                }
            }
            7 => {
                let was_closed = self.closed.is_some();
                let state = self.conn.state();
                self.conn.handle_transport_closed();
                let frames = self.drain();
                assert!(frames.is_empty(), "frames sent after the transport closed");
                if !was_closed {
                    let want = match state {
                        State::Releasing => ConnectionError::Released,
                        State::PeerReleasing => ConnectionError::PeerReleased,
                        _ => ConnectionError::TransportClosed,
                    };
                    assert_eq!(self.closed.as_ref(), Some(&want), "transport closed");
                }
            }
            8 | 9 => self.advance(inp),
            10 => self.send_request(inp),
            11 => self.respond(inp),
            12 => {
                let t = self.inbound_token(inp);
                self.conn.drop_response(&t);
                self.drain();
            }
            13 => {
                if !self.issued.is_empty() {
                    let t = self.issued[inp.below(self.issued.len())].clone();
                    self.conn.cancel_request(&t);
                    self.live.remove(&t);
                    self.drain();
                    assert!(!self.conn.is_outstanding(&t), "cancelled but outstanding");
                }
            }
            14 => {
                let state = self.conn.state();
                self.conn.release(self.now);
                if !matches!(state, State::Closed | State::Releasing) {
                    self.deadline
                        .get_or_insert(self.now + self.config.release_timeout);
                }
                let frames = self.drain();
                if !matches!(state, State::Closed | State::Releasing) {
                    assert_eq!(self.conn.state(), State::Releasing);
                    assert!(
                        frames.iter().any(|f| f.code == Code::RELEASE),
                        "release() sent no Release"
                    );
                    assert!(!self.conn.accepts_requests());
                } else {
                    assert!(frames.is_empty(), "a second release() sent something");
                }
            }
            _ => {
                if inp.u8() % 8 == 0 {
                    let reason = if inp.bool() {
                        AbortReason::MissingCsm
                    } else {
                        AbortReason::NoPong
                    };
                    let was_closed = self.closed.is_some();
                    self.conn.abort(reason.clone());
                    self.drain();
                    if !was_closed {
                        self.expect_abort(reason);
                    }
                } else {
                    let token = Token::new(inp.short(9));
                    let custody = inp.bool();
                    let open = self.closed.is_none();
                    self.conn.ping(token.clone(), custody);
                    let frames = self.drain();
                    if open {
                        let want = Signal::Ping { custody }.to_message(token);
                        assert_eq!(frames, vec![want], "ping() sent something else");
                    }
                }
            }
        }
    }

    fn expect_abort(&mut self, reason: AbortReason) {
        assert_eq!(
            self.closed.as_ref(),
            Some(&ConnectionError::Aborted(reason)),
            "expected an abort"
        );
    }

    /// Delivers one WebSocket frame or TCP chunk, tracking what the connection decodes.
    fn deliver_raw(&mut self, raw: Bytes) {
        let was_closed = self.closed.is_some();
        let mut messages = Vec::new();
        if !was_closed {
            match self.framing {
                Framing::WebSocket => {
                    if let Ok(m) = ws::decode(&raw, &self.our_limits) {
                        messages.push(m);
                    }
                }
                Framing::Tcp => {
                    self.shadow.push(&raw);
                    while let Ok(Some(m)) = self.shadow.next_message() {
                        messages.push(m);
                    }
                }
            }
        }
        // The peer's limits may change in this step: the frames may use the largest of them.
        let mut allowed = (self.peer.max_message_size, self.peer.max_token_len);
        let mut peer = self.peer;
        for m in &messages {
            if let Ok(Signal::Csm(csm)) = Signal::parse(m) {
                peer.apply(&csm);
                allowed.0 = allowed.0.max(peer.max_message_size);
                allowed.1 = allowed.1.max(peer.max_token_len);
            }
            if let Ok(Signal::Ping { .. }) = Signal::parse(m) {
                self.pings_in.push(m.token.clone());
            }
        }
        if !messages.is_empty() {
            self.heard = self.now;
            self.pinging = false;
        }
        match self.framing {
            Framing::WebSocket => self.conn.handle_frame(raw, self.now),
            Framing::Tcp => self.conn.handle_bytes(&raw, self.now),
        }
        let before = self.peer;
        self.peer = self.conn.peer_settings();
        if self.conn.state() != State::Closed {
            // Every message was processed: all the CSMs in it applied.
            assert_eq!(
                self.peer, peer,
                "peer settings differ from the CSMs delivered"
            );
        }
        let save = self.peer;
        self.peer = PeerSettings {
            max_message_size: allowed.0.max(before.max_message_size),
            max_token_len: allowed.1.max(before.max_token_len),
            ..save
        };
        self.drain();
        self.peer = save;
    }

    /// A well-formed peer message built from the input.
    fn peer_message(&mut self, inp: &mut Input) -> Message {
        let token = |inp: &mut Input| Token::new(inp.short(9));
        match inp.u8() % 12 {
            0 | 1 => {
                let mms = match inp.u8() % 8 {
                    0 => None,
                    1 => Some(inp.pick(&[0, 1, 2, 5, 8, 12, 16, 40])),
                    2 => Some(inp.pick(&[64, 100, 200, 1152, 4096])),
                    3 => Some(inp.pick(&[1 << 20, 1 << 24, u32::MAX])),
                    _ => Some(inp.u32() >> (inp.u8() % 32)),
                };
                let ext = match inp.u8() % 4 {
                    0 => Some(inp.pick(&[8, 9, 16, 300, 65804])),
                    _ => None,
                };
                let csm = Csm {
                    max_message_size: mms,
                    block_wise_transfer: inp.bool(),
                    extended_token_length: ext,
                };
                Signal::Csm(csm).to_message(token(inp))
            }
            2 => Signal::Ping {
                custody: inp.bool(),
            }
            .to_message(token(inp)),
            3 => Signal::Pong {
                custody: inp.bool(),
            }
            .to_message(token(inp)),
            4 => {
                let n = usize::from(inp.u8() % 3);
                let alternative_addresses = (0..n)
                    .map(|_| String::from_utf8_lossy(&inp.short(16)).into())
                    .collect();
                let hold_off = inp.bool().then(|| inp.u32() & 0xff_ffff);
                Signal::Release {
                    alternative_addresses,
                    hold_off,
                }
                .to_message(token(inp))
            }
            5 => {
                let n = usize::from(inp.u8() % 40);
                Signal::Abort {
                    bad_csm_option: inp.bool().then(|| inp.u16()),
                    diagnostic: String::from_utf8_lossy(&inp.bytes(n)).into(),
                }
                .to_message(token(inp))
            }
            6 | 7 => {
                let code = inp.pick(&[
                    Code::GET,
                    Code::POST,
                    Code::PUT,
                    Code::DELETE,
                    Code::FETCH,
                    Code::IPATCH,
                    Code::new(0, 31),
                ]);
                let mut m = Message::request(code, "a/b").with_token(token(inp));
                if inp.bool() {
                    m = m.with_uint_option(OptionNumber::OBSERVE, u32::from(inp.u8() % 3));
                }
                m.with_payload(inp.short(16))
            }
            8 | 9 => {
                let token = if !self.issued.is_empty() && inp.u8() % 8 != 0 {
                    self.issued[inp.below(self.issued.len())].clone()
                } else {
                    token(inp)
                };
                let code = inp.pick(&[
                    Code::CONTENT,
                    Code::CHANGED,
                    Code::NOT_FOUND,
                    Code::new(5, 3),
                    Code::CONTINUE,
                ]);
                let mut m = Message::response(code, inp.short(16)).with_token(token);
                if inp.bool() {
                    m = m.with_uint_option(OptionNumber::OBSERVE, inp.u32() & 0xff_ffff);
                }
                m
            }
            10 => Message::new(Code::EMPTY),
            _ => {
                // Something to reject: an unassigned 7.xx, a CSM with a critical unknown
                // option or a bad value, a reserved class.
                match inp.u8() % 4 {
                    0 => Message::new(Code::new(7, inp.pick(&[0, 6, 9, 31]))),
                    1 => Message::new(Code::CSM).with_option(OptionNumber(11), Bytes::new()),
                    2 => Message::new(Code::CSM).with_option(OptionNumber(4), vec![1]),
                    _ => Message::new(Code::new(inp.pick(&[1, 3, 6]), inp.u8() % 32))
                        .with_token(token(inp)),
                }
            }
        }
    }

    fn advance(&mut self, inp: &mut Input) {
        let mode = inp.u8();
        let n = u64::from(inp.u16());
        let target = match mode % 4 {
            0 => self.now + Duration::from_micros(n * 100),
            1 => self.now + Duration::from_millis(n * 10),
            2 => self.now + Duration::from_secs(n % 1024),
            // Exactly the deadline (or now).
            _ => self.conn.poll_timeout().unwrap_or(self.now).max(self.now),
        };
        self.now = target;
        for _ in 0..4 {
            self.timeout_once();
            match self.conn.poll_timeout() {
                Some(t) if t <= self.now => {}
                _ => break,
            }
        }
        if let Some(t) = self.conn.poll_timeout() {
            assert!(
                t > self.now,
                "busy loop: poll_timeout() stays due after handle_timeout at it"
            );
        }
    }

    /// One `handle_timeout(now)` with the model's expectation.
    fn timeout_once(&mut self) {
        let now = self.now;
        let state = self.conn.state();
        let before = self.conn.poll_timeout();
        let keepalive_due = matches!(state, State::Open)
            && self.config.keepalive.is_some_and(|k| now >= self.heard + k);
        let deadline_due = self.deadline.is_some_and(|d| now >= d);
        self.conn.handle_timeout(now);
        if self.closed.is_some() {
            let frames = self.drain();
            assert!(frames.is_empty());
            return;
        }
        let mut want_close = None;
        let mut want_ping = false;
        if keepalive_due {
            if self.pinging {
                want_close = Some(ConnectionError::Aborted(AbortReason::NoPong));
            } else {
                want_ping = true;
                self.pinging = true;
                self.heard = now;
            }
        }
        if want_close.is_none() && deadline_due {
            self.deadline = None;
            want_close = match state {
                State::AwaitingCsm => Some(ConnectionError::Aborted(AbortReason::CsmTimeout)),
                State::Releasing => Some(ConnectionError::Released),
                State::PeerReleasing => Some(ConnectionError::PeerReleased),
                State::Open | State::Closed => None,
            };
        }
        let frames = self.drain();
        if !keepalive_due && !deadline_due {
            assert!(frames.is_empty(), "early handle_timeout sent something");
            assert_eq!(
                self.conn.state(),
                state,
                "early handle_timeout changed state"
            );
            assert_eq!(self.conn.poll_timeout(), before, "early handle_timeout");
        }
        match want_close {
            Some(why) => assert_eq!(self.closed.as_ref(), Some(&why), "timeout ending"),
            None => {
                assert!(
                    self.closed.is_none(),
                    "closed on timeout: {:?}",
                    self.closed
                );
                if want_ping {
                    let ping = Signal::Ping { custody: false }.to_message(Token::EMPTY);
                    assert_eq!(frames, vec![ping], "keepalive Ping");
                } else {
                    assert!(frames.is_empty(), "timeout sent {frames:?}");
                }
            }
        }
    }

    fn send_request(&mut self, inp: &mut Input) {
        let token = match inp.u8() % 8 {
            0 if !self.issued.is_empty() => self.issued[inp.below(self.issued.len())].clone(),
            1 => {
                // Longer than the base 8 bytes: needs the peer's Extended-Token-Length.
                let n = 9 + usize::from(inp.u8() % 8);
                let mut t = vec![0xee; n];
                t[..8].copy_from_slice(&self.next_token.to_be_bytes());
                self.next_token += 1;
                Token::new(t)
            }
            _ => {
                let t = Token::from_u64(self.next_token);
                self.next_token += 1;
                t
            }
        };
        let code = inp.pick(&[Code::GET, Code::GET, Code::POST, Code::FETCH, Code::CONTENT]);
        let mut m = Message::request(code, "r").with_token(token.clone());
        let observe = match inp.u8() % 4 {
            0 => Some(0),
            1 => Some(1),
            _ => None,
        };
        if let Some(o) = observe {
            m = m.with_uint_option(OptionNumber::OBSERVE, o);
        }
        m.payload = inp.payload();
        let want = self.expect_request(&m);
        let got = self.conn.send_request(&m);
        assert_eq!(got, want, "send_request result");
        if got.is_ok() {
            self.live.insert(token.clone(), observe.is_some());
            if !self.issued.contains(&token) {
                self.issued.push(token);
            }
        }
        self.drain();
    }

    fn expect_request(&self, m: &Message) -> Result<(), SendError> {
        if !m.code.is_request() {
            return Err(SendError::WrongKind(m.code, "request"));
        }
        let state = self.conn.state();
        if !matches!(state, State::AwaitingCsm | State::Open) {
            return Err(SendError::Closing);
        }
        if self.live.contains_key(&m.token) {
            return Err(SendError::TokenInUse(m.token.clone()));
        }
        let size = self.framing.encoded_len(m).expect("encodable");
        if state == State::AwaitingCsm && size > BASE_MAX_MESSAGE_SIZE as usize {
            let hold_limit = self.config.max_message_size.max(BASE_MAX_MESSAGE_SIZE) as usize * 64;
            if size > hold_limit {
                return Err(SendError::TooLarge {
                    size,
                    limit: self.peer.max_message_size,
                });
            }
            return Ok(());
        }
        self.expect_fits(m, size)
    }

    fn expect_fits(&self, m: &Message, size: usize) -> Result<(), SendError> {
        if size > self.peer.max_message_size as usize {
            return Err(SendError::TooLarge {
                size,
                limit: self.peer.max_message_size,
            });
        }
        if m.token.len() > self.peer.max_token_len as usize {
            return Err(SendError::TokenTooLong {
                len: m.token.len(),
                limit: self.peer.max_token_len,
            });
        }
        Ok(())
    }

    fn inbound_token(&mut self, inp: &mut Input) -> Token {
        if !self.inbound.is_empty() && inp.u8() % 8 != 0 {
            self.inbound[inp.below(self.inbound.len())].clone()
        } else {
            Token::new(inp.short(9))
        }
    }

    fn respond(&mut self, inp: &mut Input) {
        let token = self.inbound_token(inp);
        let code = inp.pick(&[Code::CONTENT, Code::NOT_FOUND, Code::CHANGED, Code::GET]);
        let mut m = Message::response(code, inp.payload()).with_token(token);
        if inp.bool() {
            m = m.with_uint_option(OptionNumber::OBSERVE, inp.u32() & 0xff_ffff);
        }
        let want = if !m.code.is_response() {
            Err(SendError::WrongKind(m.code, "response"))
        } else if self.conn.state() == State::Closed {
            Err(SendError::Closing)
        } else {
            self.expect_fits(&m, self.framing.encoded_len(&m).expect("encodable"))
        };
        let got = self.conn.send_response(&m);
        assert_eq!(got, want, "send_response result");
        let frames = self.drain();
        if got.is_ok() {
            assert_eq!(frames.first(), Some(&m), "the response is sent first");
        } else {
            assert!(frames.is_empty(), "a refused response sent something");
        }
    }

    /// Drains frames and events, checks them and the model; returns the frames decoded.
    fn drain(&mut self) -> Vec<Message> {
        let was_closed = self.closed.is_some();
        let limits = DecodeLimits {
            max_message_size: self.peer.max_message_size as usize,
            max_token_len: self.peer.max_token_len as usize,
        };
        let mut frames = Vec::new();
        while let Some(out) = self.conn.poll_transmit() {
            // TCP output is stream bytes: a batch may hold several whole messages.
            let pieces = match self.framing {
                Framing::WebSocket => vec![out],
                Framing::Tcp => whole_messages(&out, limits.max_token_len),
            };
            for f in pieces {
                assert!(!was_closed, "frame transmitted after Closed");
                // A signal with no payload (Ping, Pong, Release, an Abort without diagnostic) has
                // nothing to leave out: it goes even to a peer whose Max-Message-Size is smaller
                // than any message. Everything else must fit.
                let bare_signal = f.len() <= 2 + 1 + 8 + 4
                    && ws_or_tcp(self.framing, &f).is_ok_and(|m| {
                        m.code.is_signaling() && m.payload.is_empty() && m.code != Code::CSM
                    });
                let limits = if bare_signal {
                    DecodeLimits {
                        max_message_size: usize::MAX,
                        ..limits
                    }
                } else {
                    limits
                };
                let m = match self.framing {
                    Framing::WebSocket => ws::decode(&f, &limits),
                    Framing::Tcp => tcp::decode(&f, &limits),
                };
                let m = m.unwrap_or_else(|e| {
                    panic!(
                        "frame of {} bytes does not decode under the peer's limits {limits:?}: {e}",
                        f.len()
                    )
                });
                if m.code == Code::PONG {
                    let i = self.pings_in.iter().position(|t| *t == m.token);
                    let i = i.expect("Pong to no Ping that arrived");
                    self.pings_in.swap_remove(i);
                }
                self.frames_sent += 1;
                if trace() {
                    eprintln!("  sent {m:?}");
                }
                frames.push(m);
            }
        }
        while let Some(e) = self.conn.poll_event() {
            if trace() {
                eprintln!("  event {e:?}");
            }
            assert!(self.closed.is_none(), "event after Closed: {e:?}");
            match e {
                Event::Established(s) => {
                    assert!(!self.established, "Established twice");
                    self.established = true;
                    // Released before the CSM came: that deadline keeps running.
                    if self.conn.state() != State::Releasing {
                        self.deadline = None;
                    }
                    assert!(s.max_token_len >= 8);
                }
                Event::SettingsChanged(_) | Event::Pong(_) => {
                    assert!(self.established, "{e:?} before Established");
                }
                Event::Request(m) => {
                    assert!(self.established, "request before Established");
                    assert!(m.code.is_request());
                    if self.inbound.len() < 64 {
                        self.inbound.push(m.token);
                    }
                }
                Event::Response(m) => {
                    assert!(self.established, "response before Established");
                    assert!(m.code.is_response());
                    let observing = *self.live.get(&m.token).unwrap_or_else(|| {
                        panic!("response to {:?}: not an outstanding request", m.token)
                    });
                    let keeps = observing
                        && m.code.is_success()
                        && m.options.contains(OptionNumber::OBSERVE);
                    if !keeps {
                        self.live.remove(&m.token);
                    }
                }
                Event::SendFailed { token, .. } => {
                    assert!(
                        self.live.remove(&token).is_some(),
                        "SendFailed for {token:?}: not an outstanding request"
                    );
                }
                Event::PeerReleasing { .. } => {
                    assert!(self.established, "PeerReleasing before Established");
                    self.deadline
                        .get_or_insert(self.now + self.config.release_timeout);
                }
                Event::Closed(why) => {
                    assert_eq!(self.conn.poll_close(), Some(&why), "Closed vs poll_close");
                    self.closed = Some(why);
                    self.live.clear();
                    self.deadline = None;
                }
            }
        }

        // What ended the connection in this step decides what could be sent in it.
        if !was_closed {
            match &self.closed {
                Some(ConnectionError::Aborted(r)) => {
                    assert_eq!(frames.len(), 1, "abort step sent {frames:?}");
                    let Ok(Signal::Abort {
                        bad_csm_option,
                        diagnostic,
                    }) = Signal::parse(&frames[0])
                    else {
                        panic!("abort step sent {:?}, not an Abort", frames[0]);
                    };
                    // The whole reason, or as much as fits the peer's Max-Message-Size.
                    let full = r.to_string();
                    assert!(full.starts_with(&diagnostic), "diagnostic {diagnostic:?}");
                    let whole = Signal::Abort {
                        bad_csm_option,
                        diagnostic: full.clone(),
                    }
                    .to_message(Token::EMPTY);
                    let whole_len = self.framing.encoded_len(&whole).unwrap();
                    // (That a non-empty one fits was checked as it was decoded.)
                    if whole_len <= self.peer.max_message_size as usize {
                        assert_eq!(diagnostic, full, "diagnostic cut although it fits");
                    }
                    let want = match r {
                        AbortReason::Signal(e) => e.bad_csm_option(),
                        _ => None,
                    };
                    assert_eq!(bad_csm_option, want);
                }
                Some(ConnectionError::PeerAborted(_) | ConnectionError::TransportClosed) => {
                    assert!(frames.is_empty(), "sent {frames:?} as the peer went away");
                }
                _ => {
                    assert!(
                        frames.iter().all(|f| f.code != Code::ABORT),
                        "Abort sent without closing"
                    );
                }
            }
        }

        // The model and the machine agree.
        let state = self.conn.state();
        assert_eq!(
            state == State::Closed,
            self.closed.is_some(),
            "state {state:?}"
        );
        assert_eq!(self.conn.poll_close(), self.closed.as_ref());
        assert!(state != State::AwaitingCsm || !self.established);
        assert!(state != State::Open || self.established);
        for t in &self.issued {
            assert_eq!(
                self.conn.is_outstanding(t),
                self.live.contains_key(t),
                "is_outstanding({t:?})"
            );
        }
        assert_eq!(self.conn.outstanding_requests(), self.live.len());
        let keepalive = match (state, self.config.keepalive) {
            (State::Open, Some(k)) => Some(self.heard + k),
            _ => None,
        };
        let want = match (self.deadline, keepalive) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        assert_eq!(self.conn.poll_timeout(), want, "poll_timeout in {state:?}");
        if matches!(
            state,
            State::AwaitingCsm | State::Releasing | State::PeerReleasing
        ) {
            assert!(
                want.is_some(),
                "{state:?} without a deadline: it could hang"
            );
        }
        frames
    }
}

/// Cuts TCP output into its messages (tokens up to `max_token_len` bytes); each piece
/// transmitted must end on a message boundary.
fn whole_messages(out: &Bytes, max_token_len: usize) -> Vec<Bytes> {
    let any = DecodeLimits {
        max_message_size: usize::MAX,
        max_token_len,
    };
    let mut pieces = Vec::new();
    let mut at = 0;
    while at < out.len() {
        let n = tcp::frame_size(&out[at..], &any)
            .expect("the stream's framing is valid")
            .expect("transmitted output ends on a message boundary");
        pieces.push(out.slice(at..at + n));
        at += n;
    }
    pieces
}

fn ws_or_tcp(framing: Framing, f: &Bytes) -> Result<Message, coapws_proto::DecodeError> {
    let roomy = DecodeLimits {
        max_message_size: usize::MAX,
        max_token_len: 65804,
    };
    match framing {
        Framing::WebSocket => ws::decode(f, &roomy),
        Framing::Tcp => tcp::decode(f, &roomy),
    }
}
