//! The RFC 8323 connection machine, shared by CoAP over TCP, TLS and WebSockets.
//!
//! Sans-IO: bytes and messages go in through `handle_*`, frames to write come out of
//! [`Connection::poll_transmit`], things for the layer above out of [`Connection::poll_event`],
//! and the next timer deadline out of [`Connection::poll_timeout`]. Time is an argument.
//!
//! Methods come in four groups:
//! - getters: [`Connection::peer_settings`], [`Connection::state`], …;
//! - inputs: [`Connection::handle_frame`] (one WebSocket message), [`Connection::handle_bytes`]
//!   (a TCP chunk), [`Connection::handle_text_frame`], [`Connection::handle_transport_closed`],
//!   [`Connection::handle_timeout`];
//! - actions of the layer above: [`Connection::send_request`], [`Connection::send_response`],
//!   [`Connection::drop_response`], [`Connection::cancel_request`], [`Connection::release`],
//!   [`Connection::ping`];
//! - outputs, polled in this order after every input or action: [`Connection::poll_transmit`]
//!   until `None`, [`Connection::poll_event`] until `None`, then [`Connection::poll_close`]
//!   (close the transport once everything transmitted is written), then
//!   [`Connection::poll_timeout`].
//!
//! What it does: sends our CSM first; requires the peer's CSM first (empty messages aside) and
//! aborts otherwise; accumulates the peer's settings; answers Ping with Pong (Custody honoured);
//! on Release answers what the peer asked and then closes; on Abort closes at once; aborts on
//! format errors, unknown critical signaling options and unassigned 7.xx codes; never sends a
//! message larger than the peer's Max-Message-Size or a token longer than it accepts. Every way
//! the connection ends yields exactly one [`Event::Closed`], so the layer above can fail every
//! request still pending.

use crate::code::{Code, CodeKind};
use crate::codec::{DecodeError, DecodeLimits, EncodeError, tcp, ws};
use crate::message::{Message, Token};
use crate::option::OptionNumber;
use crate::signaling::{BASE_MAX_MESSAGE_SIZE, Csm, PeerSettings, Signal, SignalError};
use crate::token_set::TokenSet;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Pings with Custody waiting at once; more are answered immediately (bounds memory).
pub const MAX_CUSTODY_WAITS: usize = 8;

/// Which RFC 8323 framing the connection uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// §3.2: length-prefixed messages in a byte stream (TCP, TLS).
    Tcp,
    /// §4.2: one message per binary WebSocket message.
    WebSocket,
}

impl Framing {
    /// Encoded size of `m` in this framing.
    pub fn encoded_len(self, m: &Message) -> Result<usize, EncodeError> {
        match self {
            Framing::Tcp => tcp::encoded_len(m),
            Framing::WebSocket => ws::encoded_len(m),
        }
    }
    fn encode_into(self, m: &Message, out: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            Framing::Tcp => tcp::encode_into(m, out),
            Framing::WebSocket => ws::encode_into(m, out),
        }
    }
}

/// Settings of our side of a connection. Every limit is a setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// Largest message we accept; announced in our CSM.
    pub max_message_size: u32,
    /// Announce Block-Wise-Transfer in our CSM.
    pub block_wise_transfer: bool,
    /// How long to wait for the peer's CSM before aborting.
    pub csm_timeout: Duration,
    /// After a Release (sent or received), how long to wait for outstanding exchanges and the
    /// peer's close before closing anyway.
    pub release_timeout: Duration,
    /// Keepalive (RFC 8323 §5.4): when nothing has arrived for this long on an open
    /// connection, send a Ping; when nothing arrives for as long again (the Pong, or anything
    /// else), the peer is gone: abort ([`AbortReason::NoPong`]). `None`: never ping.
    pub keepalive: Option<Duration>,
}

impl Default for ConnectionConfig {
    fn default() -> ConnectionConfig {
        ConnectionConfig {
            max_message_size: 1 << 20,
            block_wise_transfer: true,
            csm_timeout: Duration::from_secs(10),
            release_timeout: Duration::from_secs(5),
            keepalive: None,
        }
    }
}

/// Why we abort a connection. The diagnostic payload of our Abort is its `Display`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AbortReason {
    /// A WebSocket text frame arrived (RFC 8323 §4.2: binary only).
    #[error("Text frame received")]
    TextFrame,
    /// A message could not be decoded.
    #[error("Format error: {0}")]
    Format(#[from] DecodeError),
    /// The peer's first message was not a CSM.
    #[error("No CSM received first")]
    MissingCsm,
    /// The peer's CSM did not arrive in time.
    #[error("No CSM received in time")]
    CsmTimeout,
    /// A signaling message we cannot accept.
    #[error("Bad signaling message: {0}")]
    Signal(#[from] SignalError),
    /// Our keepalive Ping got no Pong (nor anything else) in time: the peer is gone.
    #[error("No Pong to keepalive Ping")]
    NoPong,
}

/// How a connection ended; given to every request still pending on it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError {
    /// We aborted it because of what the peer sent.
    #[error("connection aborted: {0}")]
    Aborted(AbortReason),
    /// The peer aborted it.
    #[error("peer aborted the connection: {0}")]
    PeerAborted(String),
    /// The peer released it (and we closed it after finishing outstanding exchanges).
    #[error("peer released the connection")]
    PeerReleased,
    /// We released it.
    #[error("connection released")]
    Released,
    /// The transport closed or failed underneath.
    #[error("connection closed by the peer or the network")]
    TransportClosed,
}

impl ConnectionError {
    /// The WebSocket close code (RFC 6455 §7.4.1) that fits this ending.
    pub fn websocket_close_code(&self) -> u16 {
        match self {
            ConnectionError::Aborted(AbortReason::TextFrame) => 1003,
            ConnectionError::Aborted(AbortReason::Format(DecodeError::TooLarge { .. })) => 1009,
            ConnectionError::Aborted(AbortReason::Format(_)) => 1007,
            ConnectionError::Aborted(AbortReason::NoPong) => 1001,
            ConnectionError::Aborted(_) => 1002,
            _ => 1000,
        }
    }
}

/// Why a message was not sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The message is larger than the peer accepts.
    #[error("message of {size} bytes exceeds the peer's Max-Message-Size {limit}")]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// The peer's limit.
        limit: u32,
    },
    /// The token is longer than the peer accepts.
    #[error("token of {len} bytes exceeds the peer's limit of {limit}")]
    TokenTooLong {
        /// Token length.
        len: usize,
        /// The peer's limit.
        limit: u32,
    },
    /// A request with this token is already outstanding on the connection.
    #[error("token {0} already in use on this connection")]
    TokenInUse(Token),
    /// The connection is being released or is closed: no new requests.
    #[error("connection is closing")]
    Closing,
    /// The message cannot be encoded at all.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The message is not of the kind this method sends.
    #[error("{0} is not a {1}")]
    WrongKind(Code, &'static str),
}

/// What the layer above learns from the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The peer's first CSM arrived: its settings are known.
    Established(PeerSettings),
    /// A later CSM changed the peer's settings.
    SettingsChanged(PeerSettings),
    /// A request from the peer; answer with [`Connection::send_response`] or
    /// [`Connection::drop_response`].
    Request(Message),
    /// A response to one of our outstanding requests.
    Response(Message),
    /// A request held until the peer's CSM could not be sent after all.
    SendFailed {
        /// The request's token.
        token: Token,
        /// Why.
        error: SendError,
    },
    /// A Pong to one of our Pings.
    Pong(Token),
    /// The peer sent Release.
    PeerReleasing {
        /// Alternative addresses the peer offered.
        alternative_addresses: Vec<String>,
        /// Hold-Off seconds.
        hold_off: Option<u32>,
    },
    /// The connection is over; every request still pending on it must fail with this.
    Closed(ConnectionError),
}

/// Where the connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Our CSM is sent, the peer's has not arrived.
    AwaitingCsm,
    /// Both CSMs exchanged.
    Open,
    /// We sent Release; waiting for the peer to close.
    Releasing,
    /// The peer sent Release; finishing outstanding exchanges before closing.
    PeerReleasing,
    /// Over; [`Connection::poll_close`] says so.
    Closed,
}

/// Room reserved at a time for encoding outgoing messages.
const OUT_CHUNK: usize = 2048;

/// One RFC 8323 connection, either side.
#[derive(Debug)]
pub struct Connection {
    framing: Framing,
    config: ConnectionConfig,
    limits: DecodeLimits,
    state: State,
    peer: PeerSettings,
    stream: tcp::StreamDecoder,
    /// WebSocket: encoded messages, one frame each (slices of `out`'s chunks).
    transmit: Fifo<Bytes>,
    /// Where messages are encoded: for TCP the stream bytes not yet taken, handed out as
    /// one piece (a batch of responses becomes one write without a copy); for WebSocket
    /// empty but for the rest of its chunk.
    out: BytesMut,
    events: Fifo<Event>,
    /// Requests we sent whose final response has not arrived.
    outbound: TokenSet,
    /// Tokens of outbound requests that are observations (responses keep them open).
    observing: TokenSet,
    /// Requests the peer sent that we have not answered.
    inbound: TokenSet,
    /// Requests larger than the base Max-Message-Size, held until the peer's CSM.
    held: VecDeque<Message>,
    /// Pongs with Custody waiting for the requests outstanding when their Ping came.
    custody: Vec<(Token, TokenSet)>,
    /// Deadline of the current wait (CSM or release).
    deadline: Option<Instant>,
    /// When something last arrived (for keepalive).
    heard: Instant,
    /// Our keepalive Ping is out, unanswered.
    pinging: bool,
    /// The peer's first CSM has arrived (a `release` before it leaves `AwaitingCsm`).
    csm_received: bool,
    close: Option<ConnectionError>,
    closed_reported: bool,
}

impl Connection {
    /// A new connection whose transport just came up at `now`. Our CSM is queued at once.
    pub fn new(framing: Framing, config: ConnectionConfig, now: Instant) -> Connection {
        let limits = DecodeLimits::with_max_message_size(config.max_message_size as usize);
        let mut c = Connection {
            framing,
            limits,
            state: State::AwaitingCsm,
            peer: PeerSettings::default(),
            stream: tcp::StreamDecoder::new(limits),
            transmit: Fifo::default(),
            out: BytesMut::new(),
            events: Fifo::default(),
            outbound: TokenSet::default(),
            observing: TokenSet::default(),
            inbound: TokenSet::default(),
            held: VecDeque::new(),
            custody: Vec::new(),
            deadline: Some(now + config.csm_timeout),
            heard: now,
            pinging: false,
            csm_received: false,
            close: None,
            closed_reported: false,
            config,
        };
        let csm = Signal::Csm(Csm {
            max_message_size: Some(c.config.max_message_size),
            block_wise_transfer: c.config.block_wise_transfer,
            extended_token_length: None,
        });
        c.queue(&csm.to_message(Token::EMPTY));
        c
    }

    // ---- getters ----

    /// Where the connection is in its life.
    pub fn state(&self) -> State {
        self.state
    }
    /// What the peer's CSMs said so far (base values before the first).
    pub fn peer_settings(&self) -> PeerSettings {
        self.peer
    }
    /// Our settings.
    pub fn config(&self) -> &ConnectionConfig {
        &self.config
    }
    /// The framing in use.
    pub fn framing(&self) -> Framing {
        self.framing
    }
    /// True while new requests may be sent.
    pub fn accepts_requests(&self) -> bool {
        matches!(self.state, State::AwaitingCsm | State::Open)
    }
    /// Number of our requests still waiting for a response.
    pub fn outstanding_requests(&self) -> usize {
        self.outbound.len()
    }
    /// True if `token` is one of our outstanding requests.
    pub fn is_outstanding(&self, token: &Token) -> bool {
        self.outbound.contains(token)
    }
    /// Largest message the peer accepts right now.
    pub fn peer_max_message_size(&self) -> u32 {
        self.peer.max_message_size
    }

    // ---- inputs ----

    /// One binary WebSocket message arrived.
    pub fn handle_frame(&mut self, frame: Bytes, now: Instant) {
        if self.state == State::Closed {
            return;
        }
        match ws::decode(&frame, &self.limits) {
            Ok(m) => self.handle_message(m, now),
            Err(e) => self.abort(AbortReason::Format(e)),
        }
    }

    /// A chunk of a TCP or TLS byte stream arrived.
    pub fn handle_bytes(&mut self, data: &[u8], now: Instant) {
        if self.state == State::Closed {
            return;
        }
        self.stream.push(data);
        loop {
            match self.stream.next_message() {
                Ok(Some(m)) => {
                    self.handle_message(m, now);
                    if self.state == State::Closed {
                        self.stream.clear();
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => return self.abort(AbortReason::Format(e)),
            }
        }
    }

    /// A WebSocket text frame arrived: CoAP travels in binary messages only.
    pub fn handle_text_frame(&mut self) {
        if self.state != State::Closed {
            self.abort(AbortReason::TextFrame);
        }
    }

    /// The transport closed or failed (read end of stream, reset, WebSocket close).
    pub fn handle_transport_closed(&mut self) {
        if self.state == State::Closed {
            return;
        }
        let why = match self.state {
            State::Releasing => ConnectionError::Released,
            State::PeerReleasing => ConnectionError::PeerReleased,
            _ => ConnectionError::TransportClosed,
        };
        self.clear_output();
        self.finish(why);
    }

    /// Time passed; call when [`Connection::poll_timeout`]'s deadline is reached.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(at) = self.keepalive_at()
            && now >= at
        {
            if self.pinging {
                return self.abort(AbortReason::NoPong);
            }
            self.pinging = true;
            self.heard = now;
            self.queue(&Signal::Ping { custody: false }.to_message(Token::EMPTY));
        }
        let Some(deadline) = self.deadline else {
            return;
        };
        if now < deadline {
            return;
        }
        self.deadline = None;
        match self.state {
            State::AwaitingCsm => self.abort(AbortReason::CsmTimeout),
            State::Releasing => self.finish(ConnectionError::Released),
            State::PeerReleasing => self.finish(ConnectionError::PeerReleased),
            State::Open | State::Closed => {}
        }
    }

    fn handle_message(&mut self, m: Message, now: Instant) {
        // Anything at all shows the peer is there.
        self.heard = now;
        self.pinging = false;
        let kind = m.code.kind();
        // An Abort may come instead of a CSM: it is the peer's ending, not a missing CSM. The
        // CSM is required first even when we released before it came.
        if !self.csm_received
            && kind != CodeKind::Empty
            && m.code != Code::CSM
            && m.code != Code::ABORT
        {
            return self.abort(AbortReason::MissingCsm);
        }
        match kind {
            // §3.4/§4.4: empty messages may always be sent and are ignored.
            CodeKind::Empty => {}
            CodeKind::Signaling => self.handle_signal(m, now),
            CodeKind::Request => {
                // A repeated token while its request is outstanding: keep one entry; the
                // layer above answers each.
                self.inbound.insert(&m.token);
                self.events.push(Event::Request(m));
            }
            CodeKind::Response => {
                let token = m.token.clone();
                if !self.outbound.contains(&token) {
                    // A response nobody waits for (late, or cancelled): nothing to do.
                    return;
                }
                let keeps_observing = self.observing.contains(&token)
                    && m.code.is_success()
                    && m.options.contains(OptionNumber::OBSERVE);
                if !keeps_observing {
                    self.outbound.remove(&token);
                    self.observing.remove(&token);
                }
                self.events.push(Event::Response(m));
                self.check_release_done();
            }
            // Classes 1, 3, 6 are reserved: nothing defines a reaction; ignore.
            CodeKind::Reserved => {}
        }
    }

    fn handle_signal(&mut self, m: Message, now: Instant) {
        let signal = match Signal::parse(&m) {
            Ok(s) => s,
            Err(e) => return self.abort(AbortReason::Signal(e)),
        };
        match signal {
            Signal::Csm(csm) => {
                self.peer.apply(&csm);
                if !self.csm_received {
                    self.csm_received = true;
                    // Released before the CSM came: the release deadline keeps running.
                    if self.state == State::AwaitingCsm {
                        self.state = State::Open;
                        self.deadline = None;
                    }
                    self.events.push(Event::Established(self.peer));
                    self.stream.set_limits(self.limits);
                    for held in std::mem::take(&mut self.held) {
                        let token = held.token.clone();
                        if let Err(error) = self.check_and_queue(&held) {
                            self.outbound.remove(&token);
                            self.events.push(Event::SendFailed { token, error });
                        }
                    }
                } else {
                    self.events.push(Event::SettingsChanged(self.peer));
                }
            }
            Signal::Ping { custody } => {
                let pong = Signal::Pong { custody: false }.to_message(m.token.clone());
                // Custody waits are bounded: past a few, a Ping is answered at once.
                if custody && !self.inbound.is_empty() && self.custody.len() < MAX_CUSTODY_WAITS {
                    self.custody.push((m.token, self.inbound.clone()));
                } else {
                    self.queue(&pong);
                }
            }
            Signal::Pong { .. } => self.events.push(Event::Pong(m.token)),
            Signal::Release {
                alternative_addresses,
                hold_off,
            } => {
                self.events.push(Event::PeerReleasing {
                    alternative_addresses,
                    hold_off,
                });
                if self.state != State::Releasing {
                    self.state = State::PeerReleasing;
                }
                // A deadline already running stays: repeated Releases cannot postpone it.
                self.deadline
                    .get_or_insert(now + self.config.release_timeout);
                self.fail_held(SendError::Closing);
                self.check_release_done();
            }
            Signal::Abort { diagnostic, .. } => {
                self.clear_output();
                self.finish(ConnectionError::PeerAborted(diagnostic));
            }
        }
    }

    // ---- actions ----

    /// Sends a request. Tokens must be unique among this connection's outstanding requests.
    /// A request with Observe 0 (or 1) stays outstanding across its notifications until a
    /// final response or [`Connection::cancel_request`].
    pub fn send_request(&mut self, m: &Message) -> Result<(), SendError> {
        if !m.code.is_request() {
            return Err(SendError::WrongKind(m.code, "request"));
        }
        if !self.accepts_requests() {
            return Err(SendError::Closing);
        }
        if self.outbound.contains(&m.token) {
            return Err(SendError::TokenInUse(m.token.clone()));
        }
        let size = self.framing.encoded_len(m)?;
        if self.state == State::AwaitingCsm && size > BASE_MAX_MESSAGE_SIZE as usize {
            // The peer's CSM may allow it: wait for it (§5.3.1).
            if size > self.config.max_message_size.max(BASE_MAX_MESSAGE_SIZE) as usize * 64 {
                return Err(SendError::TooLarge {
                    size,
                    limit: self.peer.max_message_size,
                });
            }
            self.held.push_back(m.clone());
        } else {
            self.check_and_queue(m)?;
        }
        self.outbound.insert(&m.token);
        // Registrations (0) and deregistrations (1) alike: notifications that arrive before
        // the final response keep the token open (RFC 7641 §3.6).
        if m.options.observe().is_some_and(|v| v <= 1) {
            self.observing.insert(&m.token);
        }
        Ok(())
    }

    /// Sends a response (or notification) to a request the peer made.
    pub fn send_response(&mut self, m: &Message) -> Result<(), SendError> {
        if !m.code.is_response() {
            return Err(SendError::WrongKind(m.code, "response"));
        }
        if self.state == State::Closed {
            return Err(SendError::Closing);
        }
        self.check_and_queue(m)?;
        self.answered(&m.token);
        Ok(())
    }

    /// Marks a request as answered without sending anything (No-Response, RFC 7967).
    pub fn drop_response(&mut self, token: &Token) {
        self.answered(token);
    }

    /// Forgets an outstanding request: a later response to it is ignored.
    pub fn cancel_request(&mut self, token: &Token) {
        self.outbound.remove(token);
        self.observing.remove(token);
        self.held.retain(|m| &m.token != token);
        self.check_release_done();
    }

    /// Sends a Ping; its Pong comes back as [`Event::Pong`] with the same token.
    pub fn ping(&mut self, token: Token, custody: bool) {
        if self.state != State::Closed {
            self.queue(&Signal::Ping { custody }.to_message(token));
        }
    }

    /// Starts a graceful shutdown: sends Release, refuses new requests, and closes when the
    /// peer does or `release_timeout` after `now`.
    pub fn release(&mut self, now: Instant) {
        if matches!(self.state, State::Closed | State::Releasing) {
            return;
        }
        let release = Signal::Release {
            alternative_addresses: Vec::new(),
            hold_off: None,
        };
        self.queue(&release.to_message(Token::EMPTY));
        self.state = State::Releasing;
        self.deadline
            .get_or_insert(now + self.config.release_timeout);
        self.fail_held(SendError::Closing);
    }

    /// Aborts the connection with `reason` (sent as the Abort's diagnostic).
    pub fn abort(&mut self, reason: AbortReason) {
        if self.state == State::Closed {
            return;
        }
        let bad_csm_option = match &reason {
            AbortReason::Signal(e) => e.bad_csm_option(),
            _ => None,
        };
        self.clear_output();
        // The diagnostic is optional (§5.6): shortened to fit the peer's Max-Message-Size.
        let limit = self.peer.max_message_size as usize;
        let mut diagnostic = reason.to_string();
        let abort = loop {
            let m = Signal::Abort {
                bad_csm_option,
                diagnostic: diagnostic.clone(),
            }
            .to_message(Token::EMPTY);
            if diagnostic.is_empty() || self.framing.encoded_len(&m).is_ok_and(|n| n <= limit) {
                break m;
            }
            let mut cut = diagnostic.len() - 1;
            while !diagnostic.is_char_boundary(cut) {
                cut -= 1;
            }
            diagnostic.truncate(cut);
        };
        self.queue(&abort);
        self.finish(ConnectionError::Aborted(reason));
    }

    // ---- outputs ----

    /// The next encoded frame to write: for WebSocket one binary message, for TCP bytes to
    /// append to the stream.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        if let Some(frame) = self.transmit.pop() {
            return Some(frame);
        }
        if !self.out.is_empty() {
            return Some(self.out.split().freeze());
        }
        // All taken: the chunk goes with the frames cut from it (an idle connection holds
        // no output buffer).
        self.out = BytesMut::new();
        None
    }

    /// The next event for the layer above.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop()
    }

    /// Once the connection is over: why. The driver writes what `poll_transmit` gave, then
    /// closes the transport (for WebSocket with [`ConnectionError::websocket_close_code`]).
    pub fn poll_close(&self) -> Option<&ConnectionError> {
        self.close.as_ref()
    }

    /// When [`Connection::handle_timeout`] next needs calling.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.deadline, self.keepalive_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When keepalive acts next: a Ping is due, or the Pong is overdue.
    fn keepalive_at(&self) -> Option<Instant> {
        let every = self.config.keepalive?;
        matches!(self.state, State::Open).then(|| self.heard + every)
    }

    // ---- internals ----

    fn check_and_queue(&mut self, m: &Message) -> Result<(), SendError> {
        let size = self.framing.encoded_len(m)?;
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
        self.queue(m);
        Ok(())
    }

    fn queue(&mut self, m: &Message) {
        // One chunk for the messages of a burst rather than an allocation each.
        if self.out.capacity() - self.out.len() < OUT_CHUNK / 8 {
            self.out.reserve(OUT_CHUNK);
        }
        // Signaling messages we build are always encodable; others were checked by the
        // caller. Encoding checks everything before it writes, so a failure leaves nothing.
        if self.framing.encode_into(m, &mut self.out).is_ok() && self.framing == Framing::WebSocket
        {
            self.transmit.push(self.out.split().freeze());
        }
    }

    /// Drops everything queued and not yet taken.
    fn clear_output(&mut self) {
        self.transmit.clear();
        self.out.clear();
    }

    fn answered(&mut self, token: &Token) {
        self.inbound.remove(token);
        let mut ready = Vec::new();
        self.custody.retain_mut(|(ping, waiting)| {
            waiting.remove(token);
            if waiting.is_empty() {
                ready.push(ping.clone());
                false
            } else {
                true
            }
        });
        for ping in ready {
            self.queue(&Signal::Pong { custody: false }.to_message(ping));
        }
        self.check_release_done();
    }

    fn fail_held(&mut self, error: SendError) {
        for m in std::mem::take(&mut self.held) {
            self.outbound.remove(&m.token);
            self.observing.remove(&m.token);
            self.events.push(Event::SendFailed {
                token: m.token,
                error: error.clone(),
            });
        }
    }

    /// After the peer's Release: close once our answers and its answers are all in.
    fn check_release_done(&mut self) {
        if self.state == State::PeerReleasing && self.inbound.is_empty() && self.outbound.is_empty()
        {
            self.finish(ConnectionError::PeerReleased);
        }
    }

    fn finish(&mut self, why: ConnectionError) {
        if self.state == State::Closed {
            return;
        }
        self.state = State::Closed;
        self.deadline = None;
        self.held.clear();
        self.outbound.clear();
        self.observing.clear();
        self.inbound.clear();
        self.custody.clear();
        if !self.closed_reported {
            self.closed_reported = true;
            self.events.push(Event::Closed(why.clone()));
        }
        self.close = Some(why);
    }
}

/// A first-in first-out queue that keeps one item in place and allocates only for more at
/// once: a connection's outputs are mostly taken one by one as they come, and an idle
/// connection then holds no queue memory. After a burst the overflow is freed again.
#[derive(Debug)]
struct Fifo<T> {
    /// The oldest item, unless it is in `rest`.
    first: Option<T>,
    /// Items after `first` (or all of them, while `first` is empty and this is not).
    rest: VecDeque<T>,
}

impl<T> Default for Fifo<T> {
    fn default() -> Fifo<T> {
        Fifo {
            first: None,
            rest: VecDeque::new(),
        }
    }
}

impl<T> Fifo<T> {
    fn push(&mut self, item: T) {
        if self.first.is_none() && self.rest.is_empty() {
            self.first = Some(item);
        } else {
            self.rest.push_back(item);
        }
    }

    fn pop(&mut self) -> Option<T> {
        if let Some(item) = self.first.take() {
            return Some(item);
        }
        let item = self.rest.pop_front();
        if item.is_some() && self.rest.is_empty() {
            self.rest = VecDeque::new();
        }
        item
    }

    fn clear(&mut self) {
        self.first = None;
        self.rest = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::Fifo;

    #[test]
    fn fifo_keeps_order_across_its_two_parts_and_frees_the_overflow() {
        let mut q = Fifo::default();
        q.push(1);
        assert!(q.rest.capacity() == 0, "one item needs no allocation");
        q.push(2);
        q.push(3);
        assert_eq!(q.pop(), Some(1));
        // `first` is empty while `rest` is not: a new item goes behind the others.
        q.push(4);
        assert_eq!((q.pop(), q.pop(), q.pop()), (Some(2), Some(3), Some(4)));
        assert_eq!(q.rest.capacity(), 0, "the overflow is freed once drained");
        assert_eq!(q.pop(), None);
        q.push(5);
        q.clear();
        assert_eq!(q.pop(), None);
    }
}
