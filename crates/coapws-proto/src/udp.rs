//! The RFC 7252 §4 message layer: CoAP over UDP (or DTLS) as a sans-IO machine.
//!
//! [`MessageLayer`] sits between datagrams and the request/response layer, for any number of
//! peers. It retransmits Confirmable messages with exponential back-off (§4.2), acknowledges and
//! resets (§4.2, §4.3), drops duplicates by (peer, Message ID) (§4.5), holds back Confirmable
//! requests beyond NSTART per peer (§4.7), piggybacks responses or sends them separately
//! (§5.2), and matches responses to requests by (peer, token) (§5.3.2). Time is an argument;
//! randomness (Message IDs, tokens, retransmission jitter) comes from the seed given to
//! [`MessageLayer::new`].
//!
//! Methods come in four groups, like [`crate::connection::Connection`]:
//! - getters: [`MessageLayer::config`], [`MessageLayer::outstanding_requests`],
//!   [`MessageLayer::is_idle`], …;
//! - inputs: [`MessageLayer::handle_datagram`], [`MessageLayer::handle_timeout`];
//! - actions of the layer above: [`MessageLayer::send_request`],
//!   [`MessageLayer::send_response`], [`MessageLayer::drop_response`],
//!   [`MessageLayer::cancel_request`], [`MessageLayer::ping`];
//! - outputs, polled in this order after every input or action:
//!   [`MessageLayer::poll_transmit`] until `None`, [`MessageLayer::poll_event`] until `None`,
//!   then [`MessageLayer::poll_timeout`] (call `handle_timeout` at that instant).
//!
//! Every request accepted by `send_request` ends exactly once, with a final
//! [`UdpEvent::Response`] or one [`UdpEvent::RequestFailed`], unless the layer above cancels
//! it. Every ping ends with one [`UdpEvent::Pong`] or [`UdpEvent::PingTimeout`]. All state is
//! bounded: what the caller sends, plus `max_peers` and `max_dedup_entries`.

use crate::code::{Code, CodeKind};
use crate::codec::udp::{self, MessageType, UdpHeader};
use crate::codec::{DecodeError, DecodeLimits, EncodeError};
use crate::message::{Message, Token};
use crate::option::OptionNumber;
use bytes::{Bytes, BytesMut};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Debug;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Settings of a [`MessageLayer`]. Every limit is a setting; [`Default`] gives the RFC 7252
/// §4.8 transmission parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct UdpConfig {
    /// ACK_TIMEOUT: the lower bound of the first retransmission timeout (2 s).
    pub ack_timeout: Duration,
    /// ACK_RANDOM_FACTOR: the first timeout is random in `[ack_timeout, ack_timeout × this]`
    /// (1.5; values below 1 count as 1).
    pub ack_random_factor: f64,
    /// MAX_RETRANSMIT: retransmissions of a Confirmable message before giving up (4).
    pub max_retransmit: u32,
    /// NSTART: unacknowledged Confirmable messages per peer before further Confirmable requests
    /// wait in a FIFO queue (1; 0 counts as 1).
    pub nstart: usize,
    /// MAX_LATENCY: the longest a datagram is assumed to travel (100 s); enters the lifetimes.
    pub max_latency: Duration,
    /// How long a Confirmable request may wait for its piggybacked response before it is
    /// acknowledged with an empty ACK and the response goes separately (100 ms).
    pub empty_ack_delay: Duration,
    /// Largest datagram sent (1152 bytes, RFC 7252 §4.6); larger messages go block-wise.
    pub max_message_size: usize,
    /// Largest datagram accepted (65 507 bytes, what IPv4 UDP can carry): peers may send up to
    /// their path MTU. A larger Confirmable request gets 4.13 with Size1.
    pub max_receive_size: usize,
    /// Bound on per-peer state; past it the least recently used idle peer is forgotten (1024).
    pub max_peers: usize,
    /// Bound on the duplicate-detection cache's entries (65 536; at least 1). Entries live for
    /// EXCHANGE_LIFETIME (247 s), so this carries about 265 Confirmable requests a second
    /// with every retransmission still recognised. Past it (or past `max_dedup_bytes`) the
    /// oldest entry goes early: a late retransmission of that request would be taken as new,
    /// so its handler could run twice; [`MessageLayer::dedup_evictions`] counts those.
    pub max_dedup_entries: usize,
    /// Bound on the memory the duplicate-detection cache holds: the answers kept for
    /// duplicates plus about [`DEDUP_ENTRY_OVERHEAD`] bytes an entry (16 MiB). Checked as each
    /// entry is added; the answer of the newest may take it past by one message.
    pub max_dedup_bytes: usize,
    /// How long a Non-confirmable request waits for its response (145 s, NON_LIFETIME).
    pub non_request_timeout: Duration,
    /// Length of the tokens this layer picks, in random bytes (4; clamped to 4–8).
    pub token_len: usize,
}

impl Default for UdpConfig {
    fn default() -> UdpConfig {
        UdpConfig {
            ack_timeout: Duration::from_secs(2),
            ack_random_factor: 1.5,
            max_retransmit: 4,
            nstart: 1,
            max_latency: Duration::from_secs(100),
            empty_ack_delay: Duration::from_millis(100),
            max_message_size: 1152,
            max_receive_size: 65_507,
            max_peers: 1024,
            max_dedup_entries: 65_536,
            max_dedup_bytes: 16 << 20,
            non_request_timeout: Duration::from_secs(145),
            token_len: 4,
        }
    }
}

impl UdpConfig {
    fn random_factor(&self) -> f64 {
        if self.ack_random_factor.is_finite() && self.ack_random_factor >= 1.0 {
            self.ack_random_factor
        } else {
            1.0
        }
    }
    /// `ack_timeout × units`, saturating.
    fn ack_timeouts(&self, units: f64) -> Duration {
        secs(self.ack_timeout.as_secs_f64() * units)
    }
    /// MAX_TRANSMIT_SPAN (§4.8.2): first transmission to last retransmission at most
    /// (45 s by default).
    pub fn max_transmit_span(&self) -> Duration {
        self.ack_timeouts((pow2(self.max_retransmit) - 1.0) * self.random_factor())
    }
    /// MAX_TRANSMIT_WAIT (§4.8.2): first transmission to giving up at most (93 s by default).
    pub fn max_transmit_wait(&self) -> Duration {
        self.ack_timeouts(
            (pow2(self.max_retransmit.saturating_add(1)) - 1.0) * self.random_factor(),
        )
    }
    /// PROCESSING_DELAY (§4.8.2): taken as ACK_TIMEOUT.
    pub fn processing_delay(&self) -> Duration {
        self.ack_timeout
    }
    /// MAX_RTT (§4.8.2): `2 × MAX_LATENCY + PROCESSING_DELAY` (202 s by default).
    pub fn max_rtt(&self) -> Duration {
        self.max_latency
            .saturating_mul(2)
            .saturating_add(self.processing_delay())
    }
    /// EXCHANGE_LIFETIME (§4.8.2): how long a Confirmable exchange may last
    /// (247 s by default). Duplicate detection of Confirmable messages spans it, and a request
    /// acknowledged with an empty ACK waits this long for its separate response.
    pub fn exchange_lifetime(&self) -> Duration {
        self.max_transmit_span().saturating_add(self.max_rtt())
    }
    /// NON_LIFETIME (§4.8.2): how long a Non-confirmable message may be duplicated
    /// (145 s by default). Duplicate detection of Non-confirmable messages spans it.
    pub fn non_lifetime(&self) -> Duration {
        self.max_transmit_span().saturating_add(self.max_latency)
    }
}

fn pow2(n: u32) -> f64 {
    2f64.powi(n.min(2000) as i32)
}

/// Seconds to a duration, saturating at both ends (NaN is zero).
fn secs(x: f64) -> Duration {
    Duration::try_from_secs_f64(x).unwrap_or(if x > 0.0 {
        Duration::MAX
    } else {
        Duration::ZERO
    })
}

/// `now + d`, saturating to something far away when the platform's `Instant` cannot hold it.
fn after(now: Instant, d: Duration) -> Instant {
    const FAR: [u64; 3] = [100 * 365 * 86400, 365 * 86400, 86400];
    now.checked_add(d)
        .or_else(|| {
            FAR.iter()
                .find_map(|s| now.checked_add(Duration::from_secs(*s)))
        })
        .unwrap_or(now)
}

/// Identifies a request a peer sent, for answering it with [`MessageLayer::send_response`] or
/// [`MessageLayer::drop_response`]: its Message ID, type and token.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequestKey {
    message_id: u16,
    mtype: MessageType,
    token: Token,
}

impl RequestKey {
    /// The request's Message ID.
    pub fn message_id(&self) -> u16 {
        self.message_id
    }
    /// The request's type: Confirmable or Non-confirmable.
    pub fn message_type(&self) -> MessageType {
        self.mtype
    }
    /// True if the request was Confirmable.
    pub fn is_confirmable(&self) -> bool {
        self.mtype == MessageType::Confirmable
    }
    /// The request's token; responses carry it.
    pub fn token(&self) -> &Token {
        &self.token
    }
}

/// What the layer above learns from the message layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UdpEvent<A> {
    /// A request from `from`, once per distinct request; answer it with
    /// [`MessageLayer::send_response`] or [`MessageLayer::drop_response`] using `key`.
    Request {
        /// The peer.
        from: A,
        /// How to answer it.
        key: RequestKey,
        /// The request.
        message: Message,
    },
    /// A response to one of our requests; its token is the one `send_request` returned.
    /// Final, except notifications (2.xx with Observe) to a request that had Observe 0.
    Response {
        /// The peer.
        from: A,
        /// The response.
        message: Message,
    },
    /// One of our requests ended without a response.
    RequestFailed {
        /// The peer.
        to: A,
        /// The token `send_request` returned.
        token: Token,
        /// Why.
        error: UdpRequestError,
    },
    /// A separate Confirmable response we sent was rejected or never acknowledged (for
    /// observations: the peer is gone or no longer interested, RFC 7641 §3.6, §4.5).
    ResponseFailed {
        /// The peer.
        to: A,
        /// The response's token (the request's).
        token: Token,
        /// Why.
        error: UdpRequestError,
    },
    /// The peer answered our ping (Reset, or leniently an empty ACK).
    Pong {
        /// The peer.
        from: A,
        /// The ping's Message ID, as [`MessageLayer::ping`] returned it.
        message_id: u16,
    },
    /// A datagram from `from` was not processed (too large, malformed, or not for us); the
    /// layer above logs it. What the peer was answered, if anything, is already queued.
    Dropped {
        /// The peer.
        from: A,
        /// Why.
        reason: DropReason,
    },
    /// Our ping went unanswered through all retransmissions.
    PingTimeout {
        /// The peer.
        to: A,
        /// The ping's Message ID.
        message_id: u16,
    },
}

/// Why a received datagram was dropped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    /// Larger than `max_receive_size` (a Confirmable or Non-confirmable request was answered
    /// 4.13 with Size1).
    #[error("datagram of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Bytes received (at least).
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// It could not be decoded (a Confirmable message was answered with Reset).
    #[error("malformed: {0}")]
    Malformed(DecodeError),
    /// A code that has no meaning over UDP (signaling, reserved classes).
    #[error("code {0} has no meaning over UDP")]
    BadCode(Code),
    /// A response that matches none of our requests (answered with Reset).
    #[error("response with token {0} matches no request")]
    Unmatched(Token),
}

/// Why a message was not sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UdpSendError {
    /// The datagram would be larger than `max_message_size`.
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The message cannot be encoded at all.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// `send_request` was given something other than a request code.
    #[error("{0} is not a request")]
    NotARequest(Code),
    /// `send_response` was given something other than a response code.
    #[error("{0} is not a response")]
    NotAResponse(Code),
    /// A request with this token to this peer is still outstanding.
    #[error("token {0} already in use towards this peer")]
    TokenInUse(Token),
}

/// Why a request (or a separate Confirmable response) failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UdpRequestError {
    /// Retransmissions exhausted, or the response did not come in time.
    #[error("no answer in time")]
    Timeout,
    /// The peer answered with Reset.
    #[error("the peer answered with Reset")]
    Reset,
}

/// SplitMix64: small, fast, deterministic.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A timer: deadline plus a unique sequence number, the key of [`MessageLayer::timers`].
type TimerKey = (Instant, u64);

#[derive(Debug)]
enum Timer<A> {
    /// Retransmit or give up on the Confirmable message (peer, MID) we sent.
    Retransmit(A, u16),
    /// The request (peer, token) waited long enough for its response.
    RequestDeadline(A, Token),
    /// The Confirmable request (peer, MID) we received gets an empty ACK now.
    EmptyAck(A, u16),
    /// The duplicate-detection entry (peer, MID) expires.
    DedupExpire(A, u16),
}

/// What we keep per peer.
#[derive(Debug)]
struct Peer {
    /// Unacknowledged Confirmable messages we sent (NSTART counts these).
    in_flight: usize,
    /// Our requests to this peer without an ending yet (queued ones included).
    requests: usize,
    /// Confirmable requests waiting for NSTART.
    queue: VecDeque<Token>,
    last_used: u64,
}

impl Peer {
    fn is_idle(&self) -> bool {
        self.in_flight == 0 && self.requests == 0
    }
}

/// What a Message ID we sent stands for.
#[derive(Clone, Debug)]
enum Purpose {
    Request(Token),
    Ping,
    Response(Token),
}

#[derive(Debug)]
struct Retransmit {
    datagram: Bytes,
    count: u32,
    timeout: Duration,
    timer: TimerKey,
}

/// A message we sent that an ACK or RST may answer: every unacknowledged CON, and NON requests
/// (a RST may answer those too).
#[derive(Debug)]
struct Sent {
    purpose: Purpose,
    retransmit: Option<Retransmit>,
}

#[derive(Debug)]
enum Phase {
    /// Encoded (Message ID to fill in), waiting for NSTART.
    Queued(Bytes),
    /// Sent with this Message ID.
    Sent(u16),
}

/// One of our requests.
#[derive(Debug)]
struct Outgoing {
    observe: bool,
    phase: Phase,
    deadline: Option<TimerKey>,
}

/// A request we received, as far as answering it needs.
#[derive(Debug)]
struct SeenRequest {
    token: Token,
    confirmable: bool,
    /// An ACK (empty or piggybacked) went.
    acked: bool,
}

/// A duplicate-detection entry for a CON or NON message we received.
#[derive(Debug)]
struct Seen {
    /// [`fingerprint`] of the message: a copy of it is a duplicate, another message with
    /// its MID is not.
    fingerprint: u64,
    request: Option<SeenRequest>,
    /// What a duplicate CON gets again (ACK, piggybacked response or RST).
    reply: Option<Bytes>,
    expire: TimerKey,
    ack_timer: Option<TimerKey>,
    order: u64,
}

/// What a duplicate-detection entry costs besides the answer it keeps, counted against
/// [`UdpConfig::max_dedup_bytes`] (maps, timers, the entry itself).
pub const DEDUP_ENTRY_OVERHEAD: usize = 160;

/// A 64-bit FNV-1a hash of a datagram but its Message ID: equal for every copy of one
/// message, different (but for chance) for another message under the same MID.
fn fingerprint(datagram: &[u8]) -> u64 {
    let (head, rest) = datagram.split_at(datagram.len().min(2));
    let tail = rest.get(2..).unwrap_or_default();
    head.iter()
        .chain(tail)
        .fold(0xcbf2_9ce4_8422_2325, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// An empty message of `mtype` with `mid`.
fn empty(mtype: MessageType, mid: u16) -> Bytes {
    let [hi, lo] = mid.to_be_bytes();
    Bytes::copy_from_slice(&[0x40 | ((mtype as u8) << 4), 0, hi, lo])
}

/// `datagram` with its type and Message ID replaced.
fn restamp(datagram: &Bytes, mtype: MessageType, mid: u16) -> Bytes {
    let mut b = BytesMut::from(&datagram[..]);
    b[0] = (b[0] & 0xcf) | ((mtype as u8) << 4);
    b[2..4].copy_from_slice(&mid.to_be_bytes());
    b.freeze()
}

/// The RFC 7252 message layer for one local endpoint and any number of peers addressed by `A`.
#[derive(Debug)]
pub struct MessageLayer<A> {
    config: UdpConfig,
    limits: DecodeLimits,
    rng: Rng,
    seq: u64,
    /// The latest `now` seen, for actions that take none.
    last_now: Option<Instant>,
    /// The next Message ID to try (random start, then sequential for every peer).
    next_mid: u16,
    transmit: VecDeque<(A, Bytes)>,
    events: VecDeque<UdpEvent<A>>,
    timers: BTreeMap<TimerKey, Timer<A>>,
    peers: HashMap<A, Peer>,
    requests: HashMap<(A, Token), Outgoing>,
    sent: HashMap<(A, u16), Sent>,
    seen: HashMap<(A, u16), Seen>,
    /// Bytes the duplicate-detection cache holds (answers and per-entry overhead).
    seen_bytes: usize,
    /// Entries dropped before their lifetime to stay within the bounds.
    dedup_evicted: u64,
    /// Messages that came under a Message ID still remembered for another message.
    mid_reused: u64,
    /// Insertion order of `seen`, for evicting the oldest.
    seen_order: BTreeMap<u64, (A, u16)>,
    /// The Message ID of the latest Non-confirmable notification per observation, kept in
    /// `sent` so that a Reset to it is recognised.
    non_notifications: HashMap<(A, Token), u16>,
}

impl<A: Copy + Eq + Hash + Debug> MessageLayer<A> {
    /// A message layer with `config`; `seed` drives Message IDs, tokens and jitter.
    pub fn new(config: UdpConfig, seed: u64) -> MessageLayer<A> {
        let mut rng = Rng(seed);
        let next_mid = rng.next_u64() as u16;
        MessageLayer {
            limits: DecodeLimits::with_max_message_size(
                config.max_receive_size.max(config.max_message_size),
            ),
            config,
            rng,
            seq: 0,
            last_now: None,
            next_mid,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            timers: BTreeMap::new(),
            peers: HashMap::new(),
            requests: HashMap::new(),
            sent: HashMap::new(),
            seen: HashMap::new(),
            seen_bytes: 0,
            dedup_evicted: 0,
            mid_reused: 0,
            seen_order: BTreeMap::new(),
            non_notifications: HashMap::new(),
        }
    }

    // ---- getters ----

    /// Our settings.
    pub fn config(&self) -> &UdpConfig {
        &self.config
    }
    /// Number of our requests (sent or queued) that have not ended yet.
    pub fn outstanding_requests(&self) -> usize {
        self.requests.len()
    }
    /// True if the request `token` to `to` has not ended yet.
    pub fn is_outstanding(&self, to: A, token: &Token) -> bool {
        self.requests.contains_key(&(to, token.clone()))
    }
    /// Number of unacknowledged Confirmable messages we sent to `to`.
    pub fn in_flight(&self, to: A) -> usize {
        self.peers.get(&to).map_or(0, |p| p.in_flight)
    }
    /// Number of Confirmable requests to `to` waiting for NSTART.
    pub fn queued_requests(&self, to: A) -> usize {
        self.peers.get(&to).map_or(0, |p| p.queue.len())
    }
    /// True when nothing of ours is pending: no request, ping or separate response awaits an
    /// answer. (Duplicate-detection entries may remain until they expire.)
    pub fn is_idle(&self) -> bool {
        self.requests.is_empty() && self.sent.is_empty()
    }
    /// Duplicate-detection entries dropped before their lifetime ran out, to stay within
    /// [`UdpConfig::max_dedup_entries`] and [`UdpConfig::max_dedup_bytes`]: a late
    /// retransmission of one of those requests would be taken as new.
    pub fn dedup_evictions(&self) -> u64 {
        self.dedup_evicted
    }
    /// Messages that came under a (peer, Message ID) remembered for another message of that
    /// peer (it reused the MID within its lifetime): each was taken as the new message it is.
    pub fn reused_message_ids(&self) -> u64 {
        self.mid_reused
    }

    /// Bytes the duplicate-detection cache holds, as counted against
    /// [`UdpConfig::max_dedup_bytes`].
    pub fn dedup_bytes(&self) -> usize {
        self.seen_bytes
    }

    /// Number of duplicate-detection entries.
    pub fn dedup_entries(&self) -> usize {
        self.seen.len()
    }
    /// Number of peers with per-peer state.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    // ---- inputs ----

    /// A datagram arrived from `from`.
    pub fn handle_datagram(&mut self, from: A, data: Bytes, now: Instant) {
        self.last_now = Some(now);
        let (header, message) = match udp::decode(&data, &self.limits) {
            Ok(decoded) => decoded,
            Err(DecodeError::TooLarge { size, limit }) => {
                self.too_large(from, &data, limit);
                let reason = DropReason::TooLarge { size, limit };
                return self.events.push_back(UdpEvent::Dropped { from, reason });
            }
            Err(e) => {
                // §4.2: a Confirmable message we cannot process is rejected with RST; anything
                // else is dropped (and reported to the layer above, which logs it).
                if data.len() >= 4 && data[0] >> 6 == 1 && (data[0] >> 4) & 3 == 0 {
                    let mid = u16::from_be_bytes([data[2], data[3]]);
                    self.transmit
                        .push_back((from, empty(MessageType::Reset, mid)));
                }
                let reason = DropReason::Malformed(e);
                return self.events.push_back(UdpEvent::Dropped { from, reason });
            }
        };
        let mid = header.message_id;
        match header.mtype {
            MessageType::Confirmable | MessageType::NonConfirmable => {
                let fingerprint = fingerprint(&data);
                self.handle_con_non(from, header.mtype, mid, fingerprint, message, now)
            }
            MessageType::Acknowledgement => self.handle_ack(from, mid, message, now),
            MessageType::Reset => self.handle_reset(from, mid, &message, now),
        }
    }

    /// Time passed; call when [`MessageLayer::poll_timeout`]'s deadline is reached.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = Some(now);
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            match entry.remove() {
                Timer::Retransmit(to, mid) => self.retransmit(to, mid, now),
                Timer::RequestDeadline(to, token) => {
                    if self.end_request(to, &token, now) {
                        self.events.push_back(UdpEvent::RequestFailed {
                            to,
                            token,
                            error: UdpRequestError::Timeout,
                        });
                    }
                }
                Timer::EmptyAck(from, mid) => {
                    if let Some(seen) = self.seen.get_mut(&(from, mid)) {
                        seen.ack_timer = None;
                        if let Some(r) = &mut seen.request {
                            if r.confirmable && !r.acked {
                                r.acked = true;
                                let ack = empty(MessageType::Acknowledgement, mid);
                                seen.reply = Some(ack.clone());
                                self.seen_bytes += ack.len();
                                self.transmit.push_back((from, ack));
                            }
                        }
                    }
                }
                Timer::DedupExpire(from, mid) => self.forget_seen((from, mid)),
            }
        }
    }

    fn handle_con_non(
        &mut self,
        from: A,
        mtype: MessageType,
        mid: u16,
        fingerprint: u64,
        message: Message,
        now: Instant,
    ) {
        let con = mtype == MessageType::Confirmable;
        let lifetime = if con {
            self.config.exchange_lifetime()
        } else {
            self.config.non_lifetime()
        };
        match message.code.kind() {
            // §4.3: an empty CON is a ping, answered with RST; an empty NON is a format error.
            CodeKind::Empty => {
                if con {
                    self.transmit
                        .push_back((from, empty(MessageType::Reset, mid)));
                }
            }
            CodeKind::Request => {
                if self.is_duplicate(from, mid, fingerprint, con) {
                    return self.duplicate(from, mid, con);
                }
                let key = RequestKey {
                    message_id: mid,
                    mtype,
                    token: message.token.clone(),
                };
                let seen = SeenRequest {
                    token: message.token.clone(),
                    confirmable: con,
                    acked: false,
                };
                self.remember(from, mid, fingerprint, Some(seen), None, lifetime, now);
                self.events
                    .push_back(UdpEvent::Request { from, key, message });
            }
            CodeKind::Response => {
                if self.is_duplicate(from, mid, fingerprint, con) {
                    return self.duplicate(from, mid, con);
                }
                let token = message.token.clone();
                let matched = self.deliver_response(from, message, now);
                // §4.2 and §5.3.2: ACK a CON response we can use, reject one we cannot. A NON
                // one we cannot use is rejected too (§4.3 allows it): that is how a server
                // learns that an observation we forgot is over (RFC 7641 §3.6).
                let reply = if matched {
                    con.then(|| empty(MessageType::Acknowledgement, mid))
                } else {
                    let reason = DropReason::Unmatched(token);
                    self.events.push_back(UdpEvent::Dropped { from, reason });
                    Some(empty(MessageType::Reset, mid))
                };
                if let Some(r) = &reply {
                    self.transmit.push_back((from, r.clone()));
                }
                self.remember(from, mid, fingerprint, None, reply, lifetime, now);
            }
            // 7.xx does not exist over UDP and classes 1, 3, 6 are reserved: format errors.
            CodeKind::Signaling | CodeKind::Reserved => {
                if con {
                    self.transmit
                        .push_back((from, empty(MessageType::Reset, mid)));
                }
                let reason = DropReason::BadCode(message.code);
                self.events.push_back(UdpEvent::Dropped { from, reason });
            }
        }
    }

    /// True if (peer, MID) was seen with this very message: a retransmission or a copy the
    /// network made (§4.5). The same MID on another message means the peer reused it within
    /// its lifetime, as a peer sending faster than 65 536 messages an EXCHANGE_LIFETIME must
    /// (§4.4): that message is new, and the old entry gives way to it. An old Confirmable
    /// request not yet acknowledged gets its empty ACK then, as an evicted one does, unless
    /// the new message is Confirmable too: its ACK carries that MID, and an empty one now
    /// would be taken for it.
    fn is_duplicate(&mut self, from: A, mid: u16, fingerprint: u64, con: bool) -> bool {
        match self.seen.get(&(from, mid)) {
            None => false,
            Some(seen) if seen.fingerprint == fingerprint => true,
            Some(_) => {
                self.mid_reused += 1;
                if con {
                    self.remove_seen((from, mid));
                } else {
                    self.forget_seen((from, mid));
                }
                false
            }
        }
    }

    /// A CON or NON (peer, MID) we have seen before (§4.5).
    fn duplicate(&mut self, from: A, mid: u16, con: bool) {
        if !con {
            return;
        }
        let Some(seen) = self.seen.get_mut(&(from, mid)) else {
            return;
        };
        if let Some(reply) = &seen.reply {
            self.transmit.push_back((from, reply.clone()));
            return;
        }
        // The response is not ready: acknowledge now so the peer stops retransmitting.
        if let Some(r) = &mut seen.request {
            if r.confirmable && !r.acked {
                r.acked = true;
                let ack = empty(MessageType::Acknowledgement, mid);
                seen.reply = Some(ack.clone());
                self.seen_bytes += ack.len();
                let timer = seen.ack_timer.take();
                self.clear_timer(timer);
                self.transmit.push_back((from, ack));
            }
        }
    }

    fn handle_ack(&mut self, from: A, mid: u16, message: Message, now: Instant) {
        let purpose = match self.sent.get(&(from, mid)) {
            Some(Sent {
                purpose,
                retransmit: Some(_),
            }) => purpose.clone(),
            // Not ours, already acknowledged, or an ACK to a NON: ignore.
            _ => return,
        };
        let kind = message.code.kind();
        // §4.2: an ACK carries a response or nothing; anything else is a format error.
        if !matches!(kind, CodeKind::Empty | CodeKind::Response) {
            return;
        }
        match purpose {
            Purpose::Ping | Purpose::Response(_) if kind != CodeKind::Empty => {}
            Purpose::Ping => {
                self.finish_sent(from, mid, now);
                self.events.push_back(UdpEvent::Pong {
                    from,
                    message_id: mid,
                });
            }
            Purpose::Response(_) => {
                self.finish_sent(from, mid, now);
            }
            Purpose::Request(token) => {
                self.finish_sent(from, mid, now);
                if kind == CodeKind::Response && message.token == token {
                    self.deliver_response(from, message, now);
                } else {
                    // Empty ACK (or a piggybacked response for another token, which cannot
                    // be ours, §5.3.2): the response comes separately.
                    self.await_separate(from, &token, now);
                }
            }
        }
    }

    fn handle_reset(&mut self, from: A, mid: u16, message: &Message, now: Instant) {
        // §4.2: a Reset is empty; anything else is a format error.
        if message.code != Code::EMPTY {
            let reason = DropReason::BadCode(message.code);
            return self.events.push_back(UdpEvent::Dropped { from, reason });
        }
        let Some(sent) = self.sent.get(&(from, mid)) else {
            return;
        };
        match sent.purpose.clone() {
            Purpose::Request(token) => {
                if self.end_request(from, &token, now) {
                    self.events.push_back(UdpEvent::RequestFailed {
                        to: from,
                        token,
                        error: UdpRequestError::Reset,
                    });
                } else {
                    self.finish_sent(from, mid, now);
                }
            }
            Purpose::Ping => {
                self.finish_sent(from, mid, now);
                self.events.push_back(UdpEvent::Pong {
                    from,
                    message_id: mid,
                });
            }
            Purpose::Response(token) => {
                self.finish_sent(from, mid, now);
                let key = (from, token.clone());
                if self.non_notifications.get(&key) == Some(&mid) {
                    self.non_notifications.remove(&key);
                }
                self.events.push_back(UdpEvent::ResponseFailed {
                    to: from,
                    token,
                    error: UdpRequestError::Reset,
                });
            }
        }
    }

    /// A response (piggybacked or separate) arrived: delivers it if it matches one of our
    /// sent requests by (peer, token). Returns whether it did.
    fn deliver_response(&mut self, from: A, message: Message, now: Instant) -> bool {
        let key = (from, message.token.clone());
        let mid = match self.requests.get(&key) {
            Some(Outgoing {
                phase: Phase::Sent(mid),
                ..
            }) => *mid,
            _ => return false,
        };
        // §5.2.2: a separate response before the empty ACK acknowledges the request too.
        if matches!(
            self.sent.get(&(from, mid)),
            Some(Sent { purpose: Purpose::Request(t), retransmit: Some(_) }) if *t == message.token
        ) {
            self.finish_sent(from, mid, now);
        }
        let notification =
            message.code.is_success() && message.options.contains(OptionNumber::OBSERVE);
        let observing = self.requests.get(&key).is_some_and(|r| r.observe);
        if notification && observing {
            // An observation stays open until a final response or cancel_request.
            let deadline = self.requests.get_mut(&key).and_then(|r| r.deadline.take());
            self.clear_timer(deadline);
        } else {
            self.end_request(from, &message.token, now);
        }
        self.events.push_back(UdpEvent::Response { from, message });
        true
    }

    /// Our CON request was acknowledged without its response: wait EXCHANGE_LIFETIME for it.
    fn await_separate(&mut self, to: A, token: &Token, now: Instant) {
        let key = (to, token.clone());
        if self.requests.get(&key).is_none_or(|r| r.deadline.is_some()) {
            return;
        }
        let at = after(now, self.config.exchange_lifetime());
        let timer = self.set_timer(at, Timer::RequestDeadline(to, token.clone()));
        if let Some(r) = self.requests.get_mut(&key) {
            r.deadline = Some(timer);
        }
    }

    fn retransmit(&mut self, to: A, mid: u16, now: Instant) {
        let max = self.config.max_retransmit;
        let Some(r) = self
            .sent
            .get_mut(&(to, mid))
            .and_then(|s| s.retransmit.as_mut())
        else {
            return;
        };
        if r.count < max {
            r.count += 1;
            r.timeout = r.timeout.saturating_mul(2);
            let (timeout, datagram) = (r.timeout, r.datagram.clone());
            let timer = self.set_timer(after(now, timeout), Timer::Retransmit(to, mid));
            if let Some(r) = self
                .sent
                .get_mut(&(to, mid))
                .and_then(|s| s.retransmit.as_mut())
            {
                r.timer = timer;
            }
            self.transmit.push_back((to, datagram));
            return;
        }
        let Some(purpose) = self.finish_sent(to, mid, now) else {
            return;
        };
        let error = UdpRequestError::Timeout;
        match purpose {
            Purpose::Request(token) => {
                if self.end_request(to, &token, now) {
                    self.events
                        .push_back(UdpEvent::RequestFailed { to, token, error });
                }
            }
            Purpose::Ping => self.events.push_back(UdpEvent::PingTimeout {
                to,
                message_id: mid,
            }),
            Purpose::Response(token) => {
                self.events
                    .push_back(UdpEvent::ResponseFailed { to, token, error })
            }
        }
    }

    // ---- actions ----

    /// Sends a request to `to`, Confirmable or not, and returns the token the layer chose
    /// (random, unique among our outstanding requests to `to`). A Confirmable request waits
    /// while `to` has `nstart` unacknowledged Confirmable messages. A request with Observe 0
    /// stays outstanding across its notifications.
    pub fn send_request(
        &mut self,
        to: A,
        mut message: Message,
        confirmable: bool,
        now: Instant,
    ) -> Result<Token, UdpSendError> {
        let token = self.new_token(to);
        message.token = token.clone();
        self.send_request_with_token(to, message, confirmable, now)?;
        Ok(token)
    }

    /// Sends a request with the token it carries, which must not be outstanding towards `to`
    /// (re-registering or deregistering an observation reuses its token, RFC 7641 §3.3.1,
    /// §3.6: cancel the observation's request first).
    pub fn send_request_with_token(
        &mut self,
        to: A,
        message: Message,
        confirmable: bool,
        now: Instant,
    ) -> Result<(), UdpSendError> {
        self.last_now = Some(now);
        if !message.code.is_request() {
            return Err(UdpSendError::NotARequest(message.code));
        }
        let token = message.token.clone();
        if self.requests.contains_key(&(to, token.clone())) {
            return Err(UdpSendError::TokenInUse(token));
        }
        let datagram = self.encode(&message)?;
        let nstart = self.config.nstart.max(1);
        let peer = self.touch_peer(to);
        peer.requests += 1;
        let queued = confirmable && peer.in_flight >= nstart;
        if queued {
            peer.queue.push_back(token.clone());
        }
        self.requests.insert(
            (to, token.clone()),
            Outgoing {
                observe: message.options.observe().is_some_and(|v| v <= 1),
                phase: Phase::Queued(datagram.clone()),
                deadline: None,
            },
        );
        if !queued {
            self.start_request(to, token, &datagram, confirmable, now);
        }
        Ok(())
    }

    /// Sends a notification of the observation `token` to `to` (RFC 7641 §4.2): a separate
    /// response, Confirmable or not. While an earlier Confirmable notification of the same
    /// observation still awaits its ACK, the new one takes its place (§4.5.2): it is sent with
    /// a new Message ID and inherits the retransmission count and deadline, and is
    /// Confirmable whatever `confirmable` says. Its ending (ACK, Reset, timeout) is reported
    /// like a separate response's: [`UdpEvent::ResponseFailed`] when it fails.
    pub fn send_notification(
        &mut self,
        to: A,
        token: &Token,
        mut notification: Message,
        confirmable: bool,
        now: Instant,
    ) -> Result<(), UdpSendError> {
        self.last_now = Some(now);
        if !notification.code.is_response() {
            return Err(UdpSendError::NotAResponse(notification.code));
        }
        notification.token = token.clone();
        let datagram = self.encode(&notification)?;
        let outstanding = self.sent.iter().find_map(|(&(a, mid), sent)| {
            let ours = a == to
                && sent.retransmit.is_some()
                && matches!(&sent.purpose, Purpose::Response(t) if t == token);
            ours.then_some(mid)
        });
        let mid = self.next_mid(to);
        if let Some(old) = outstanding {
            let Some(mut sent) = self.sent.remove(&(to, old)) else {
                return Ok(());
            };
            let d = restamp(&datagram, MessageType::Confirmable, mid);
            if let Some(r) = &mut sent.retransmit {
                self.timers.remove(&r.timer);
                r.timer = self.set_timer(r.timer.0, Timer::Retransmit(to, mid));
                r.datagram = d.clone();
            }
            self.sent.insert((to, mid), sent);
            self.transmit.push_back((to, d));
            return Ok(());
        }
        self.forget_non_notification(to, token);
        if confirmable {
            let d = restamp(&datagram, MessageType::Confirmable, mid);
            self.transmit.push_back((to, d.clone()));
            self.start_retransmit(to, mid, Purpose::Response(token.clone()), d, now);
        } else {
            // Remembered (the latest one per observation) so that a Reset to it ends the
            // observation.
            let d = restamp(&datagram, MessageType::NonConfirmable, mid);
            self.transmit.push_back((to, d));
            let purpose = Purpose::Response(token.clone());
            self.sent.insert(
                (to, mid),
                Sent {
                    purpose,
                    retransmit: None,
                },
            );
            self.non_notifications.insert((to, token.clone()), mid);
        }
        Ok(())
    }

    /// The observation `token` of `to` is over on our side: forget what a Reset to its last
    /// Non-confirmable notification would have matched.
    pub fn end_notifications(&mut self, to: A, token: &Token) {
        self.forget_non_notification(to, token);
    }

    fn forget_non_notification(&mut self, to: A, token: &Token) {
        if let Some(mid) = self.non_notifications.remove(&(to, token.clone())) {
            if matches!(
                self.sent.get(&(to, mid)),
                Some(Sent {
                    retransmit: None,
                    ..
                })
            ) {
                self.sent.remove(&(to, mid));
            }
        }
    }

    /// Answers a request that was too large to take (§5.9.2.9 4.13, with Size1 giving the
    /// limit), from what its first bytes say; other messages are dropped.
    fn too_large(&mut self, from: A, data: &[u8], limit: usize) {
        let Some((mtype, mid, token)) = udp::peek_header(data) else {
            return;
        };
        let is_request = Code(data[1]).is_request();
        if !is_request || mtype == MessageType::Acknowledgement || mtype == MessageType::Reset {
            if mtype == MessageType::Confirmable {
                self.transmit
                    .push_back((from, empty(MessageType::Reset, mid)));
            }
            return;
        }
        let size1 = u32::try_from(limit).unwrap_or(u32::MAX);
        let mut answer = Message::response(Code::REQUEST_ENTITY_TOO_LARGE, Bytes::new())
            .with_uint_option(OptionNumber::SIZE1, size1);
        answer.token = token;
        let t = if mtype == MessageType::Confirmable {
            MessageType::Acknowledgement
        } else {
            MessageType::NonConfirmable
        };
        let mid = if t == MessageType::Acknowledgement {
            mid
        } else {
            self.next_mid(from)
        };
        let header = UdpHeader {
            mtype: t,
            message_id: mid,
        };
        if let Ok(d) = udp::encode(&header, &answer) {
            self.transmit.push_back((from, d));
        }
    }

    /// Answers the request `request` from `to`. Piggybacked on the ACK if the request was
    /// Confirmable and not acknowledged yet; otherwise a separate response, Confirmable if the
    /// request was. The layer sets token, type and Message ID. Calling it again for the same
    /// request sends another separate response (observe notifications).
    pub fn send_response(
        &mut self,
        to: A,
        request: &RequestKey,
        mut response: Message,
        now: Instant,
    ) -> Result<(), UdpSendError> {
        self.last_now = Some(now);
        if !response.code.is_response() {
            return Err(UdpSendError::NotAResponse(response.code));
        }
        response.token = request.token.clone();
        let datagram = self.encode(&response)?;
        let mid = request.message_id;
        if let Some(seen) = self.seen.get_mut(&(to, mid)) {
            if let Some(r) = &mut seen.request {
                if r.confirmable && !r.acked && r.token == request.token {
                    r.acked = true;
                    let ack = restamp(&datagram, MessageType::Acknowledgement, mid);
                    seen.reply = Some(ack.clone());
                    self.seen_bytes += ack.len();
                    let timer = seen.ack_timer.take();
                    self.clear_timer(timer);
                    self.transmit.push_back((to, ack));
                    return Ok(());
                }
            }
        }
        let mid = self.next_mid(to);
        if request.is_confirmable() {
            let d = restamp(&datagram, MessageType::Confirmable, mid);
            self.transmit.push_back((to, d.clone()));
            let purpose = Purpose::Response(request.token.clone());
            self.start_retransmit(to, mid, purpose, d, now);
        } else {
            let d = restamp(&datagram, MessageType::NonConfirmable, mid);
            self.transmit.push_back((to, d));
        }
        Ok(())
    }

    /// Leaves the request `request` from `to` unanswered (No-Response, RFC 7967): nothing is
    /// sent, except the empty ACK a Confirmable request still needs.
    pub fn drop_response(&mut self, to: A, request: &RequestKey, now: Instant) {
        self.last_now = Some(now);
        let Some(seen) = self.seen.get_mut(&(to, request.message_id)) else {
            return;
        };
        if let Some(r) = &mut seen.request {
            if r.confirmable && !r.acked && r.token == request.token {
                r.acked = true;
                let ack = empty(MessageType::Acknowledgement, request.message_id);
                seen.reply = Some(ack.clone());
                self.seen_bytes += ack.len();
                let timer = seen.ack_timer.take();
                self.clear_timer(timer);
                self.transmit.push_back((to, ack));
            }
        }
    }

    /// Forgets the request `token` to `to` without an event; retransmissions stop, and a
    /// later Confirmable response to it is answered with RST.
    pub fn cancel_request(&mut self, to: A, token: &Token) {
        // Only a queued request may start here; its timers count from the latest input.
        if let Some(now) = self.last_now {
            self.end_request(to, token, now);
        }
    }

    /// Sends an empty Confirmable message (CoAP ping, §4.3) and returns its Message ID; the
    /// answer is [`UdpEvent::Pong`] or [`UdpEvent::PingTimeout`].
    pub fn ping(&mut self, to: A, now: Instant) -> u16 {
        self.last_now = Some(now);
        let mid = self.next_mid(to);
        let d = empty(MessageType::Confirmable, mid);
        self.transmit.push_back((to, d.clone()));
        self.start_retransmit(to, mid, Purpose::Ping, d, now);
        mid
    }

    // ---- outputs ----

    /// The next datagram to send, and to whom.
    pub fn poll_transmit(&mut self) -> Option<(A, Bytes)> {
        self.transmit.pop_front()
    }

    /// The next event for the layer above.
    pub fn poll_event(&mut self) -> Option<UdpEvent<A>> {
        self.events.pop_front()
    }

    /// When [`MessageLayer::handle_timeout`] next needs calling; `None` when nothing is timed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first_key_value().map(|(k, _)| k.0)
    }

    // ---- internals ----

    fn stamp(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn set_timer(&mut self, at: Instant, timer: Timer<A>) -> TimerKey {
        let key = (at, self.stamp());
        self.timers.insert(key, timer);
        key
    }

    fn clear_timer(&mut self, key: Option<TimerKey>) {
        if let Some(key) = key {
            self.timers.remove(&key);
        }
    }

    /// Encodes `m` as a CON with Message ID 0 (to be restamped), within `max_message_size`.
    fn encode(&self, m: &Message) -> Result<Bytes, UdpSendError> {
        let size = udp::encoded_len(m)?;
        if size > self.config.max_message_size {
            return Err(UdpSendError::TooLarge {
                size,
                limit: self.config.max_message_size,
            });
        }
        let header = UdpHeader {
            mtype: MessageType::Confirmable,
            message_id: 0,
        };
        Ok(udp::encode(&header, m)?)
    }

    /// The state of `to`, created (evicting the least recently used idle peer if needed) and
    /// marked as used.
    fn touch_peer(&mut self, to: A) -> &mut Peer {
        let stamp = self.stamp();
        if !self.peers.contains_key(&to) {
            let limit = self.config.max_peers.max(1);
            while self.peers.len() >= limit && self.evict_idle_peer() {}
        }
        let peer = self.peers.entry(to).or_insert_with(|| Peer {
            in_flight: 0,
            requests: 0,
            queue: VecDeque::new(),
            last_used: stamp,
        });
        peer.last_used = stamp;
        peer
    }

    /// Forgets the least recently used peer with nothing pending; false if there is none.
    /// Busy peers are never forgotten, so the table may exceed `max_peers` by them.
    fn evict_idle_peer(&mut self) -> bool {
        let victim = self
            .peers
            .iter()
            .filter(|(_, p)| p.is_idle())
            .min_by_key(|(_, p)| p.last_used)
            .map(|(a, _)| *a);
        victim.is_some_and(|a| self.peers.remove(&a).is_some())
    }

    /// The next Message ID for `to`, skipping any still awaiting an ACK or RST. One sequence
    /// for all peers: a peer forgotten (idle, evicted) and met again does not restart at a
    /// random point that may repeat a Message ID it saw within EXCHANGE_LIFETIME (§4.4).
    fn next_mid(&mut self, to: A) -> u16 {
        self.touch_peer(to);
        let mut mid = self.next_mid;
        for _ in 0..=u16::MAX {
            if !self.sent.contains_key(&(to, mid)) {
                break;
            }
            mid = mid.wrapping_add(1);
        }
        self.next_mid = mid.wrapping_add(1);
        mid
    }

    fn new_token(&mut self, to: A) -> Token {
        let len = self.config.token_len.clamp(4, 8);
        loop {
            let bytes = self.rng.next_u64().to_be_bytes();
            let token = Token::new(Bytes::copy_from_slice(&bytes[..len]));
            if !self.requests.contains_key(&(to, token.clone())) {
                return token;
            }
        }
    }

    /// Puts the request `token` on the wire with a fresh Message ID.
    fn start_request(
        &mut self,
        to: A,
        token: Token,
        datagram: &Bytes,
        confirmable: bool,
        now: Instant,
    ) {
        let mid = self.next_mid(to);
        let deadline = if confirmable {
            let d = restamp(datagram, MessageType::Confirmable, mid);
            self.transmit.push_back((to, d.clone()));
            self.start_retransmit(to, mid, Purpose::Request(token.clone()), d, now);
            None
        } else {
            let d = restamp(datagram, MessageType::NonConfirmable, mid);
            self.transmit.push_back((to, d));
            let purpose = Purpose::Request(token.clone());
            self.sent.insert(
                (to, mid),
                Sent {
                    purpose,
                    retransmit: None,
                },
            );
            let at = after(now, self.config.non_request_timeout);
            Some(self.set_timer(at, Timer::RequestDeadline(to, token.clone())))
        };
        if let Some(r) = self.requests.get_mut(&(to, token)) {
            r.phase = Phase::Sent(mid);
            r.deadline = deadline;
        }
    }

    /// Tracks a CON just queued for transmission: retransmissions and the NSTART count.
    fn start_retransmit(
        &mut self,
        to: A,
        mid: u16,
        purpose: Purpose,
        datagram: Bytes,
        now: Instant,
    ) {
        // §4.2: the first timeout is random in [ACK_TIMEOUT, ACK_TIMEOUT × ACK_RANDOM_FACTOR].
        let factor = 1.0 + self.rng.unit() * (self.config.random_factor() - 1.0);
        let timeout = self.config.ack_timeouts(factor);
        let timer = self.set_timer(after(now, timeout), Timer::Retransmit(to, mid));
        let retransmit = Some(Retransmit {
            datagram,
            count: 0,
            timeout,
            timer,
        });
        self.sent.insert(
            (to, mid),
            Sent {
                purpose,
                retransmit,
            },
        );
        self.touch_peer(to).in_flight += 1;
    }

    /// Stops tracking the message (peer, MID) we sent; frees its NSTART slot if it was a CON.
    fn finish_sent(&mut self, to: A, mid: u16, now: Instant) -> Option<Purpose> {
        let sent = self.sent.remove(&(to, mid))?;
        if let Some(r) = sent.retransmit {
            self.timers.remove(&r.timer);
            self.release_slot(to, now);
        }
        Some(sent.purpose)
    }

    /// A CON to `to` is no longer outstanding: start queued requests while NSTART allows.
    fn release_slot(&mut self, to: A, now: Instant) {
        let nstart = self.config.nstart.max(1);
        if let Some(p) = self.peers.get_mut(&to) {
            p.in_flight = p.in_flight.saturating_sub(1);
        }
        loop {
            let Some(p) = self.peers.get_mut(&to) else {
                return;
            };
            if p.in_flight >= nstart {
                return;
            }
            let Some(token) = p.queue.pop_front() else {
                return;
            };
            let datagram = match self.requests.get(&(to, token.clone())) {
                Some(Outgoing {
                    phase: Phase::Queued(d),
                    ..
                }) => d.clone(),
                _ => continue,
            };
            self.start_request(to, token, &datagram, true, now);
        }
    }

    /// Removes the request (to, token) with everything it holds. False if there was none.
    fn end_request(&mut self, to: A, token: &Token, now: Instant) -> bool {
        let Some(r) = self.requests.remove(&(to, token.clone())) else {
            return false;
        };
        self.clear_timer(r.deadline);
        if let Some(p) = self.peers.get_mut(&to) {
            p.requests = p.requests.saturating_sub(1);
            if matches!(r.phase, Phase::Queued(_)) {
                p.queue.retain(|t| t != token);
            }
        }
        if let Phase::Sent(mid) = r.phase {
            let ours = matches!(
                self.sent.get(&(to, mid)),
                Some(Sent { purpose: Purpose::Request(t), .. }) if t == token
            );
            if ours {
                self.finish_sent(to, mid, now);
            }
        }
        true
    }

    /// Adds a duplicate-detection entry for (from, MID), evicting the oldest if full. A
    /// Confirmable request gets its empty-ACK timer.
    #[allow(clippy::too_many_arguments)]
    fn remember(
        &mut self,
        from: A,
        mid: u16,
        fingerprint: u64,
        request: Option<SeenRequest>,
        reply: Option<Bytes>,
        lifetime: Duration,
        now: Instant,
    ) {
        let limit = self.config.max_dedup_entries.max(1);
        let cost = DEDUP_ENTRY_OVERHEAD + reply.as_ref().map_or(0, Bytes::len);
        while self.seen.len() >= limit || self.seen_bytes + cost > self.config.max_dedup_bytes {
            let Some((_, key)) = self.seen_order.pop_first() else {
                break;
            };
            self.dedup_evicted += 1;
            self.forget_seen(key);
        }
        self.seen_bytes += cost;
        let ack_timer = match &request {
            Some(r) if r.confirmable => {
                let at = after(now, self.config.empty_ack_delay);
                Some(self.set_timer(at, Timer::EmptyAck(from, mid)))
            }
            _ => None,
        };
        let expire = self.set_timer(after(now, lifetime), Timer::DedupExpire(from, mid));
        let order = self.stamp();
        self.seen_order.insert(order, (from, mid));
        self.seen.insert(
            (from, mid),
            Seen {
                fingerprint,
                request,
                reply,
                expire,
                ack_timer,
                order,
            },
        );
    }

    /// Removes a duplicate-detection entry with its timers and what it counted.
    fn remove_seen(&mut self, key: (A, u16)) -> Option<Seen> {
        let seen = self.seen.remove(&key)?;
        let cost = DEDUP_ENTRY_OVERHEAD + seen.reply.as_ref().map_or(0, Bytes::len);
        self.seen_bytes = self.seen_bytes.saturating_sub(cost);
        self.seen_order.remove(&seen.order);
        self.timers.remove(&seen.expire);
        self.clear_timer(seen.ack_timer);
        Some(seen)
    }

    /// Drops a duplicate-detection entry (expired or evicted). A Confirmable request still
    /// unacknowledged gets its empty ACK now, so a later response goes separately.
    fn forget_seen(&mut self, key: (A, u16)) {
        let Some(seen) = self.remove_seen(key) else {
            return;
        };
        if let Some(r) = seen.request {
            if r.confirmable && !r.acked {
                self.transmit
                    .push_back((key.0, empty(MessageType::Acknowledgement, key.1)));
            }
        }
    }
}
