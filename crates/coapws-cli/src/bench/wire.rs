//! The bench's wire engine, for `coap://`, `coap+tcp://` and `coap+ws://`: each connection is
//! one task that owns its socket and drives coapws-proto's machines on it directly (the RFC
//! 8323 connection machine over TCP and WebSocket, the RFC 7252 message layer over UDP),
//! writes everything a wake-up produced at once, and matches answers to its requests by
//! token. No pool, token layer or link tasks stand between the loop and the socket, so the
//! load generator costs less than the servers it measures; `--engine library` sends through
//! the library's `Endpoint` instead (to measure the client path).

use super::load::{self, BEHIND, Failure, Live, Plan, token};
use super::report::Tally;
use bytes::{Bytes, BytesMut};
use coapws::proto::code::Code;
use coapws::proto::connection::{Connection, ConnectionConfig, Event, Framing};
use coapws::proto::message::{Message, Token};
use coapws::proto::udp::{MessageLayer, UdpConfig, UdpEvent, UdpRequestError};
use coapws::proto::uri::{Scheme, Uri};
use futures_util::{SinkExt, StreamExt};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

/// Whether the wire engine speaks `scheme` (the secure schemes go through the library).
pub fn speaks(scheme: Scheme) -> bool {
    matches!(scheme, Scheme::Coap | Scheme::CoapTcp | Scheme::CoapWs)
}

/// How one exchange ended, as a link reports it.
enum Ended {
    /// An answer.
    Answer(Message),
    /// The request with this token failed.
    Failed(Token, Failure),
}

/// The bytes of a connection: a TCP stream (RFC 8323 framing) or a WebSocket.
enum StreamIo {
    Tcp {
        stream: TcpStream,
        read: BytesMut,
        write: Vec<u8>,
    },
    Ws(Box<WebSocketStream<TcpStream>>),
}

/// One connection and its machine.
pub struct StreamLink {
    io: StreamIo,
    conn: Connection,
    peer: SocketAddr,
}

/// One UDP socket, connected to the server, and its message layer.
pub struct UdpLink {
    socket: UdpSocket,
    peer: SocketAddr,
    layer: MessageLayer<SocketAddr>,
    read: Vec<u8>,
    confirmable: bool,
}

/// A link of either kind.
pub enum Link {
    /// TCP or WebSocket.
    Stream(Box<StreamLink>),
    /// UDP.
    Udp(Box<UdpLink>),
}

/// What a link must do for the loop.
trait Wire {
    /// Hands a request (its token set) to the machine.
    fn send(&mut self, m: &Message, now: Instant) -> Result<(), String>;
    /// Writes what the machine has to send.
    async fn flush(&mut self) -> Result<(), String>;
    /// Waits for input, or until `wake` (or the machine's own timer), and adds what ended to
    /// `out`. An error ends the link: every request still outstanding on it failed.
    async fn poll(&mut self, wake: Option<Instant>, out: &mut Vec<Ended>) -> Result<(), String>;
    /// Forgets a request (a late answer is ignored).
    fn cancel(&mut self, token: &Token);
    /// The server's address.
    fn peer(&self) -> SocketAddr;
}

/// Sleeps until the earlier of `a` and `b`; forever when neither is set.
async fn sleep_until_first(a: Option<Instant>, b: Option<Instant>) {
    match a.into_iter().chain(b).min() {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// The address `uri` names (the first its name resolves to).
async fn resolve(uri: &Uri) -> Result<SocketAddr, String> {
    tokio::net::lookup_host(uri.authority())
        .await
        .map_err(|e| format!("cannot resolve {}: {e}", uri.authority()))?
        .next()
        .ok_or_else(|| format!("{} has no address", uri.authority()))
}

impl Link {
    /// Opens a link to `uri` (from `local` if given) with the bench's settings.
    pub async fn open(
        uri: &Uri,
        local: Option<SocketAddr>,
        keepalive: Option<Duration>,
        in_flight: usize,
        confirmable: bool,
        timeout: Duration,
    ) -> Result<Link, String> {
        let to = resolve(uri).await?;
        let now = Instant::now();
        if uri.scheme == Scheme::Coap {
            let bind = local.unwrap_or_else(|| match to {
                SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
                SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
            });
            let socket = UdpSocket::bind(bind)
                .await
                .map_err(|e| format!("cannot bind {bind}: {e}"))?;
            socket
                .connect(to)
                .await
                .map_err(|e| format!("cannot connect to {to}: {e}"))?;
            let config = UdpConfig {
                // The load generator's own NSTART (RFC 7252 §4.7 lets it be configured).
                nstart: in_flight,
                ..UdpConfig::default()
            };
            // Message IDs and retransmission jitter of each socket from the OS's randomness.
            let local = socket.local_addr().ok();
            let seed = std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), local);
            return Ok(Link::Udp(Box::new(UdpLink {
                socket,
                peer: to,
                layer: MessageLayer::new(config, seed),
                read: vec![0; 65_536],
                confirmable,
            })));
        }
        let socket = match to {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(|e| format!("cannot make a socket: {e}"))?;
        if let Some(l) = local {
            socket
                .bind(l)
                .map_err(|e| format!("cannot bind {l}: {e}"))?;
        }
        let stream = tokio::time::timeout(timeout, socket.connect(to))
            .await
            .map_err(|_| format!("connecting to {to} timed out"))?
            .map_err(|e| format!("cannot connect to {to}: {e}"))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("cannot set TCP_NODELAY: {e}"))?;
        let config = ConnectionConfig {
            keepalive,
            ..ConnectionConfig::default()
        };
        let (io, framing) = if uri.scheme == Scheme::CoapWs {
            let ws = tokio::time::timeout(timeout, ws_handshake(stream, uri))
                .await
                .map_err(|_| format!("the WebSocket handshake with {to} timed out"))??;
            (StreamIo::Ws(Box::new(ws)), Framing::WebSocket)
        } else {
            let io = StreamIo::Tcp {
                stream,
                read: BytesMut::with_capacity(65_536),
                write: Vec::with_capacity(65_536),
            };
            (io, Framing::Tcp)
        };
        Ok(Link::Stream(Box::new(StreamLink {
            io,
            conn: Connection::new(framing, config, now),
            peer: to,
        })))
    }
}

/// The client side of the WebSocket handshake: `/.well-known/coap`, subprotocol `coap`, which
/// the server must select.
async fn ws_handshake(stream: TcpStream, uri: &Uri) -> Result<WebSocketStream<TcpStream>, String> {
    let url = uri.websocket_url().unwrap_or_default();
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("bad WebSocket URL {url}: {e}"))?;
    request.headers_mut().insert(
        tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL,
        tungstenite::http::HeaderValue::from_static("coap"),
    );
    let (ws, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .map_err(|e| format!("WebSocket handshake failed: {e}"))?;
    let selected = response
        .headers()
        .get(tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok());
    if selected != Some("coap") {
        return Err("the server did not select the coap subprotocol".into());
    }
    Ok(ws)
}

/// What the machine of a connection reported, as exchanges that ended.
fn stream_events(conn: &mut Connection, out: &mut Vec<Ended>) -> Result<(), String> {
    while let Some(e) = conn.poll_event() {
        match e {
            Event::Response(m) => out.push(Ended::Answer(m)),
            Event::SendFailed { token, error } => out.push(Ended::Failed(
                token,
                Failure {
                    kind: "send refused".into(),
                    detail: error.to_string(),
                    answered: false,
                },
            )),
            // The load generator serves nothing: a request from the server gets 4.04.
            Event::Request(m) => {
                let mut answer = Message::new(Code::NOT_FOUND);
                answer.token = m.token;
                let _ = conn.send_response(&answer);
            }
            Event::Closed(e) => return Err(e.to_string()),
            Event::Established(_)
            | Event::SettingsChanged(_)
            | Event::Pong(_)
            | Event::PeerReleasing { .. } => {}
        }
    }
    Ok(())
}

impl Wire for StreamLink {
    fn send(&mut self, m: &Message, _now: Instant) -> Result<(), String> {
        self.conn.send_request(m).map_err(|e| e.to_string())
    }

    async fn flush(&mut self) -> Result<(), String> {
        match &mut self.io {
            StreamIo::Tcp { stream, write, .. } => {
                write.clear();
                while let Some(b) = self.conn.poll_transmit() {
                    write.extend_from_slice(&b);
                }
                if !write.is_empty() {
                    stream.write_all(write).await.map_err(|e| e.to_string())?;
                }
            }
            StreamIo::Ws(ws) => {
                let mut any = false;
                while let Some(b) = self.conn.poll_transmit() {
                    ws.feed(tungstenite::Message::Binary(b))
                        .await
                        .map_err(|e| e.to_string())?;
                    any = true;
                }
                if any {
                    ws.flush().await.map_err(|e| e.to_string())?;
                }
            }
        }
        Ok(())
    }

    async fn poll(&mut self, wake: Option<Instant>, out: &mut Vec<Ended>) -> Result<(), String> {
        let sleep = sleep_until_first(wake, self.conn.poll_timeout());
        match &mut self.io {
            StreamIo::Tcp { stream, read, .. } => {
                read.reserve(16_384);
                tokio::select! {
                    biased;
                    r = stream.read_buf(read) => match r {
                        Ok(0) => self.conn.handle_transport_closed(),
                        Ok(_) => {
                            self.conn.handle_bytes(read, Instant::now());
                            read.clear();
                        }
                        Err(e) => return Err(e.to_string()),
                    },
                    () = sleep => {}
                }
            }
            StreamIo::Ws(ws) => {
                tokio::select! {
                    biased;
                    m = ws.next() => match m {
                        Some(Ok(tungstenite::Message::Binary(b))) => {
                            self.conn.handle_frame(b, Instant::now());
                        }
                        Some(Ok(tungstenite::Message::Text(_))) => self.conn.handle_text_frame(),
                        Some(Ok(tungstenite::Message::Close(_))) | None => {
                            self.conn.handle_transport_closed();
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Err(e.to_string()),
                    },
                    () = sleep => {}
                }
                // Whatever else has arrived is taken in the same wake-up.
                while let Some(Some(m)) = futures_util::FutureExt::now_or_never(ws.next()) {
                    match m {
                        Ok(tungstenite::Message::Binary(b)) => {
                            self.conn.handle_frame(b, Instant::now());
                        }
                        Ok(tungstenite::Message::Close(_)) => self.conn.handle_transport_closed(),
                        Ok(_) => {}
                        Err(e) => return Err(e.to_string()),
                    }
                }
            }
        }
        let now = Instant::now();
        if self.conn.poll_timeout().is_some_and(|t| t <= now) {
            self.conn.handle_timeout(now);
        }
        stream_events(&mut self.conn, out)
    }

    fn cancel(&mut self, token: &Token) {
        self.conn.cancel_request(token);
    }

    fn peer(&self) -> SocketAddr {
        self.peer
    }
}

impl UdpLink {
    fn events(&mut self, out: &mut Vec<Ended>, now: Instant) {
        while let Some(e) = self.layer.poll_event() {
            match e {
                UdpEvent::Response { message, .. } => out.push(Ended::Answer(message)),
                UdpEvent::RequestFailed { token, error, .. } => {
                    let kind = match error {
                        UdpRequestError::Timeout => "timeout",
                        UdpRequestError::Reset => "reset",
                    };
                    out.push(Ended::Failed(
                        token,
                        Failure {
                            kind: kind.into(),
                            detail: error.to_string(),
                            answered: false,
                        },
                    ));
                }
                UdpEvent::Request { key, .. } => {
                    let answer = Message::new(Code::NOT_FOUND);
                    let _ = self.layer.send_response(self.peer, &key, answer, now);
                }
                UdpEvent::Dropped { from, reason } => {
                    tracing::debug!(%from, %reason, "datagram dropped");
                }
                UdpEvent::ResponseFailed { .. }
                | UdpEvent::Pong { .. }
                | UdpEvent::PingTimeout { .. } => {}
            }
        }
    }
}

impl Wire for UdpLink {
    fn send(&mut self, m: &Message, now: Instant) -> Result<(), String> {
        self.layer
            .send_request_with_token(self.peer, m.clone(), self.confirmable, now)
            .map_err(|e| e.to_string())
    }

    async fn flush(&mut self) -> Result<(), String> {
        while let Some((_, d)) = self.layer.poll_transmit() {
            // A full socket buffer loses the datagram as the network would; the message
            // layer retransmits Confirmable ones.
            match self.socket.send(&d).await {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Err(format!("{}: {e}", self.peer));
                }
                Err(e) => tracing::debug!(error = %e, "send failed"),
            }
        }
        Ok(())
    }

    async fn poll(&mut self, wake: Option<Instant>, out: &mut Vec<Ended>) -> Result<(), String> {
        let sleep = sleep_until_first(wake, self.layer.poll_timeout());
        let first = tokio::select! {
            biased;
            r = self.socket.recv(&mut self.read) => Some(r),
            () = sleep => None,
        };
        let now = Instant::now();
        let mut got = first;
        while let Some(r) = got {
            match r {
                Ok(n) => {
                    let d = Bytes::copy_from_slice(&self.read[..n]);
                    self.layer.handle_datagram(self.peer, d, now);
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Err(format!("{}: {e}", self.peer));
                }
                Err(e) => tracing::debug!(error = %e, "receive failed"),
            }
            // Everything already queued on the socket, in the same wake-up.
            got = match self.socket.try_recv(&mut self.read) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
                r => Some(r),
            };
        }
        if self.layer.poll_timeout().is_some_and(|t| t <= now) {
            self.layer.handle_timeout(now);
        }
        self.events(out, now);
        Ok(())
    }

    fn cancel(&mut self, token: &Token) {
        self.layer.cancel_request(self.peer, token);
    }

    fn peer(&self) -> SocketAddr {
        self.peer
    }
}

/// The exchanges of one connection that have not ended, by token, and in the order sent (for
/// finding those that timed out without scanning them all).
struct Outstanding {
    by_token: HashMap<u32, (Instant, Instant)>,
    order: VecDeque<(u32, Instant)>,
}

impl Outstanding {
    fn new(capacity: usize) -> Outstanding {
        Outstanding {
            by_token: HashMap::with_capacity(capacity * 2),
            order: VecDeque::with_capacity(capacity * 2),
        }
    }
    fn len(&self) -> usize {
        self.by_token.len()
    }
    fn add(&mut self, key: u32, due: Instant, sent: Instant) {
        self.by_token.insert(key, (due, sent));
        self.order.push_back((key, sent));
    }
    fn take(&mut self, key: u32) -> Option<(Instant, Instant)> {
        let found = self.by_token.remove(&key);
        // Drop ended exchanges from the front of the order.
        while let Some((k, _)) = self.order.front() {
            if self.by_token.contains_key(k) {
                break;
            }
            self.order.pop_front();
        }
        found
    }
    /// When the oldest outstanding exchange times out.
    fn next_expiry(&self, timeout: Duration) -> Option<Instant> {
        self.order.front().map(|(_, sent)| *sent + timeout)
    }
    /// The oldest exchange if it was sent `timeout` or longer before `now`.
    fn expired(&mut self, now: Instant, timeout: Duration) -> Option<(u32, Instant)> {
        let &(k, sent) = self.order.front()?;
        if now.saturating_duration_since(sent) < timeout {
            return None;
        }
        let (due, _) = self.take(k)?;
        Some((k, due))
    }
    /// Every exchange still outstanding, oldest first; none is left.
    fn drain(&mut self) -> Vec<Instant> {
        let mut dues: Vec<(Instant, Instant)> = self.by_token.drain().map(|(_, v)| v).collect();
        self.order.clear();
        dues.sort_by_key(|(_, sent)| *sent);
        dues.into_iter().map(|(due, _)| due).collect()
    }
}

/// The number a 4-byte token carries.
fn key_of(t: &Token) -> Option<u32> {
    Some(u32::from_be_bytes(t.as_bytes().try_into().ok()?))
}

/// One exchange before the load starts, with `conn`'s check token: it fails when no answer
/// came (a wrong code is for the load to count).
pub async fn check(
    link: &mut Link,
    template: &Message,
    conn: u64,
    timeout: Duration,
) -> Result<(), Failure> {
    match link {
        Link::Stream(l) => check_on(&mut **l, template, conn, timeout).await,
        Link::Udp(l) => check_on(&mut **l, template, conn, timeout).await,
    }
}

async fn check_on<W: Wire>(
    w: &mut W,
    template: &Message,
    conn: u64,
    timeout: Duration,
) -> Result<(), Failure> {
    let fail = |detail: String| Failure {
        kind: "connection ended".into(),
        detail,
        answered: false,
    };
    let mut m = template.clone();
    m.token = token(conn, 0x00ff_ffff);
    let give_up = Instant::now() + timeout;
    w.send(&m, Instant::now()).map_err(fail)?;
    w.flush().await.map_err(fail)?;
    let mut out = Vec::new();
    loop {
        w.poll(Some(give_up), &mut out).await.map_err(fail)?;
        w.flush().await.map_err(fail)?;
        for e in out.drain(..) {
            match e {
                Ended::Answer(a) if a.token == m.token => return Ok(()),
                Ended::Failed(t, f) if t == m.token => return Err(f),
                _ => {}
            }
        }
        if Instant::now() >= give_up {
            return Err(Failure {
                kind: "timeout".into(),
                detail: "request timed out".into(),
                answered: false,
            });
        }
    }
}

/// Runs connection `conn`'s loop on `link` until the plan's end and the last answer (or
/// timeout) of what it sent.
pub async fn drive(link: Link, conn: u64, plan: &Plan, live: &Live, timeout: Duration) -> Tally {
    match link {
        Link::Stream(mut l) => run(&mut *l, conn, plan, live, timeout).await,
        Link::Udp(mut l) => run(&mut *l, conn, plan, live, timeout).await,
    }
}

/// The loop: send what is due (closed loop: up to `in_flight` outstanding; open loop: on
/// schedule), write it at once, wait for answers, tally them.
async fn run<W: Wire>(w: &mut W, conn: u64, plan: &Plan, live: &Live, timeout: Duration) -> Tally {
    let mut tally = Tally::new();
    let mut m = plan.template.to_message();
    let mut outstanding = Outstanding::new(plan.in_flight);
    let mut out = Vec::with_capacity(plan.in_flight);
    let due_at = |k: u64| match plan.rate_per_connection {
        Some(rate) => plan.start + Duration::from_secs_f64(k as f64 / rate),
        None => plan.start,
    };
    let mut k = 0u64;
    let mut broken: Option<String> = None;
    loop {
        let now = Instant::now();
        // Send what is due.
        while broken.is_none() && outstanding.len() < plan.in_flight && now < plan.until {
            let due = due_at(k);
            if due > now || due >= plan.until {
                break;
            }
            m.token = token(conn, k);
            let key = key_of(&m.token).unwrap_or_default();
            k += 1;
            if outstanding.by_token.contains_key(&key) {
                continue; // a wrapped sequence number still out: skip it
            }
            let (due, sent) = match plan.rate_per_connection {
                Some(_) => {
                    if due >= plan.measure_from {
                        tally.note_lag(now - due, now - due > BEHIND);
                    }
                    (due, now)
                }
                None => (now, now),
            };
            match w.send(&m, now) {
                Ok(()) => outstanding.add(key, due, sent),
                Err(e) => {
                    let f = Failure {
                        kind: "send refused".into(),
                        detail: e,
                        answered: false,
                    };
                    note(&mut tally, live, plan, due, now, Err(f));
                }
            }
        }
        if broken.is_none()
            && let Err(e) = w.flush().await
        {
            broken = Some(e);
        }
        if let Some(why) = &broken {
            // Everything still out failed with the link.
            let at = Instant::now();
            for due in outstanding.drain() {
                let f = Failure {
                    kind: "connection ended".into(),
                    detail: why.clone(),
                    answered: false,
                };
                note(&mut tally, live, plan, due, at, Err(f));
            }
            break;
        }
        let sending_more = now < plan.until && due_at(k) < plan.until;
        if outstanding.len() == 0 && !sending_more {
            break;
        }
        // Wake for the next due send (open loop, with room), or the oldest one's timeout.
        let next_send = (sending_more
            && plan.rate_per_connection.is_some()
            && outstanding.len() < plan.in_flight)
            .then(|| due_at(k));
        let wake = match (next_send, outstanding.next_expiry(timeout)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b).or((outstanding.len() == 0).then_some(plan.until)),
        };
        if let Err(e) = w.poll(wake, &mut out).await {
            broken = Some(e);
        }
        let now = Instant::now();
        for e in out.drain(..) {
            let (t, verdict) = match e {
                Ended::Answer(a) if a.code.is_success() => (a.token, Ok(())),
                Ended::Answer(a) => {
                    let f = Failure {
                        kind: a.code.to_string(),
                        detail: format!(
                            "{} answered {}{}",
                            w.peer(),
                            a.code,
                            if a.payload.is_empty() {
                                String::new()
                            } else {
                                format!(": {}", a.payload_text())
                            }
                        ),
                        answered: true,
                    };
                    (a.token, Err(f))
                }
                Ended::Failed(t, f) => (t, Err(f)),
            };
            let Some(key) = key_of(&t) else { continue };
            if let Some((due, sent)) = outstanding.take(key) {
                load::note(&mut tally, live, plan, due, sent, now, verdict);
            }
        }
        while let Some((key, due)) = outstanding.expired(now, timeout) {
            w.cancel(&Token::new(Bytes::copy_from_slice(&key.to_be_bytes())));
            let f = Failure {
                kind: "timeout".into(),
                detail: "request timed out".into(),
                answered: false,
            };
            note(&mut tally, live, plan, due, now, Err(f));
        }
    }
    tally
}

/// Tallies an exchange that failed at `at` (no latency to record).
fn note(
    tally: &mut Tally,
    live: &Live,
    plan: &Plan,
    due: Instant,
    at: Instant,
    v: Result<(), Failure>,
) {
    load::note(tally, live, plan, due, at, at, v);
}
