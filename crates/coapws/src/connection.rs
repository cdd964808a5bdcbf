//! The connection driver: one tokio task per RFC 8323 connection (WebSocket, TCP or TLS), a
//! loop around the sans-IO [`coapws_proto::connection::Connection`].
//!
//! The task owns the transport and the token layer of that connection: it picks tokens for
//! outgoing requests (unique among the connection's outstanding ones), matches responses to
//! waiting callers by token, runs the handlers of incoming requests, and when the connection
//! ends — closed, aborted, released, or the transport failed — fails every request still
//! pending on it with a typed error. Other tasks talk to it through a [`ConnectionHandle`].

use crate::dispatch::{Answer, Dispatch};
use crate::error::Error;
use crate::exchange::{Delivery, SendOnDrop, Waiting};
pub(crate) use crate::link::Command;
pub use crate::link::ConnectionHandle;
use crate::remote::Remote;
pub use crate::site::BoxFuture;
use crate::site::IncomingRequest;
use bytes::Bytes;
use coapws_proto::code::Code;
use coapws_proto::connection::{Connection, ConnectionError, Event, SendError};
use coapws_proto::message::{Message, Token};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;
use tracing::{debug, info, warn};

/// What runs once when a connection ends: given its id and the Hold-Off its peer asked for.
pub(crate) type OnClose = Box<dyn FnOnce(u64, Option<Instant>) + Send>;

/// What the transport delivered.
pub(crate) enum Inbound {
    /// One binary WebSocket message.
    Frame(Bytes),
    /// A chunk of a TCP/TLS byte stream.
    Data(Bytes),
    /// A WebSocket text message.
    Text,
    /// A message above the configured size was refused by the transport.
    TooLarge,
    /// The transport ended; the string says why when it failed.
    Closed(Option<String>),
}

/// A transport under the connection machine: WebSocket, TCP or TLS, owned by the connection's
/// task, which reads and writes it from one loop: reading goes on while a write waits (two
/// peers writing large messages to each other at once never block each other), and an idle
/// connection costs one task and no writer of its own.
pub(crate) trait FrameIo: Send + 'static {
    /// Next input. Polled again after `Pending`, also between other work: it keeps its state.
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Inbound>;
    /// Writes `frames` (one WebSocket message each, or consecutive stream bytes), taking them
    /// from the front as they go, and flushes: `Ready(Ok)` once all are out.
    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        frames: &mut VecDeque<Bytes>,
    ) -> Poll<Result<(), String>>;
    /// Closes the transport after an ending of the connection.
    fn poll_close(&mut self, cx: &mut Context<'_>, why: &ConnectionError) -> Poll<()>;
    /// After our close went out: true when the peer's answer to it is worth waiting for
    /// (WebSocket's closing handshake, unless the peer closed first).
    fn awaits_close_reply(&self) -> bool {
        false
    }
}

/// Settings of the driver (on top of the core's [`coapws_proto::connection::ConnectionConfig`]).
#[derive(Clone, Debug)]
pub(crate) struct DriverConfig {
    /// Incoming requests handled at once on one connection; more get 5.03.
    pub max_concurrent_requests: usize,
    /// How long one write may take before the peer counts as gone (it stopped reading).
    pub write_timeout: std::time::Duration,
    /// Our requests (observations included) pending on one connection; further ones wait.
    pub max_pending_requests: usize,
    /// Release the connection after this long without requests or responses, when nothing
    /// is pending and nobody observes over it.
    pub idle_timeout: Option<std::time::Duration>,
}

static CONNECTION_IDS: AtomicU64 = AtomicU64::new(1);

/// Starts the task for a connection whose transport is up. `remote` is filled in with the
/// new handle; `on_close` runs once when the connection ends (e.g. leaving the pool).
pub(crate) fn spawn<T: FrameIo>(
    io: T,
    core: Connection,
    make_remote: impl FnOnce(ConnectionHandle) -> Remote,
    dispatch: Option<Arc<dyn Dispatch>>,
    config: DriverConfig,
    on_close: Option<OnClose>,
) -> (ConnectionHandle, Remote) {
    let (tx, rx) = crate::queue::queues();
    let handle = ConnectionHandle {
        tx,
        state: Arc::new(crate::link::LinkState::new()),
        id: CONNECTION_IDS.fetch_add(1, Ordering::Relaxed),
    };
    let remote = make_remote(handle.clone());
    info!(remote = %remote, conn = handle.id, "connection up");
    let driver = Driver {
        io,
        output: Output {
            out: Vec::new(),
            out_bytes: 0,
            sending: VecDeque::new(),
            handed: 0,
            batches: 0,
            reads_in_row: 0,
        },
        write_deadline: None,
        core,
        rx,
        handle: handle.clone(),
        remote: remote.clone(),
        dispatch,
        config,
        waiting: Waiting::new(),
        next_token: 1,
        pings: Vec::new(),
        next_ping: 1,
        inbound_running: 0,
        last_active: Instant::now(),
        active: false,
        broken: false,
        on_close,
        stats: Stats {
            started: Some(Instant::now()),
            ..Stats::default()
        },
        metrics: crate::metrics::get().link(remote.scheme),
    };
    // The task owns the driver and runs it in place: `run` borrows it, so the task does not
    // hold a moved copy of it besides (an async fn's argument takes room of its own).
    let mut driver = driver;
    let task = async move { driver.run().await };
    tokio::spawn(task);
    (handle, remote)
}

/// Bytes of frames not yet being written above which the driver stops reading: a peer that
/// does not read our answers cannot make us buffer without bound (and when a write takes
/// longer than the write timeout, the connection is given up).
const MAX_BACKLOG: usize = 4 << 20;
/// Commands taken from the queue in one wake-up when more are already there: the requests
/// of many callers then leave in one write instead of one each.
const COMMANDS_PER_WAKE: usize = 64;

/// What the transport did, when polled for both directions at once.
enum Io {
    /// The batch being written is out (or the write failed).
    Sent(Result<(), String>),
    /// Something arrived.
    Received(Inbound),
}

struct Driver<T> {
    io: T,
    output: Output,
    /// When the output waiting counts as stuck: the peer stopped reading.
    write_deadline: Option<Instant>,
    core: Connection,
    rx: crate::queue::QueueRx<Command>,
    handle: ConnectionHandle,
    remote: Remote,
    dispatch: Option<Arc<dyn Dispatch>>,
    config: DriverConfig,
    waiting: Waiting<Token>,
    next_token: u64,
    /// Our Pings waiting for their Pong, by token.
    pings: Vec<(Token, tokio::sync::oneshot::Sender<()>)>,
    next_ping: u64,
    inbound_running: usize,
    /// When the last request or response passed (for the idle timeout).
    last_active: Instant,
    /// A request or response passed since `last_active` was set (the clock is read once
    /// per wake-up, not per message).
    active: bool,
    /// The transport failed under a write: nothing more is written.
    broken: bool,
    on_close: Option<OnClose>,
    /// What the connection did, for its closing log line.
    stats: Stats,
    /// Its transport's counters in the process metrics.
    metrics: crate::metrics::LinkMetrics,
}

/// Counts for a connection's closing log line.
#[derive(Default)]
struct Stats {
    started: Option<Instant>,
    requests_in: u64,
    requests_out: u64,
    bytes_in: u64,
    bytes_out: u64,
}

/// Inputs read in a row while output waits, after which the output goes first once.
const READS_BEFORE_WRITE: u32 = 32;
/// Batches of frames handed to the transport before one is written; beyond them the driver
/// keeps frames in `out` (counted against [`MAX_BACKLOG`]).
const WRITE_BATCHES: usize = 5;

/// The driver's output on its way to the transport.
struct Output {
    /// Frames the core produced that are not being written yet.
    out: Vec<Bytes>,
    out_bytes: usize,
    /// The batch being written (empty, without allocation, while nothing is).
    sending: VecDeque<Bytes>,
    /// Bytes moved from `out` to `sending` and not yet counted.
    handed: usize,
    /// Batches moved into `sending` since it was last empty.
    batches: usize,
    /// Inputs read since the last completed write.
    reads_in_row: u32,
}

impl Output {
    fn waiting(&self) -> bool {
        !self.out.is_empty() || !self.sending.is_empty()
    }
}

/// Polls the reading side first (if `reading`): everything that has arrived is taken in
/// before its answers are written, so that they go out together (one write for many
/// responses). Then the output, which all that was produced so far joins; after
/// [`READS_BEFORE_WRITE`] inputs in a row it goes first once, so a peer that never pauses
/// still gets its answers.
fn poll_io<T: FrameIo>(
    io: &mut T,
    o: &mut Output,
    cx: &mut Context<'_>,
    reading: bool,
) -> Poll<Io> {
    let write_first = o.reads_in_row >= READS_BEFORE_WRITE;
    if reading
        && !write_first
        && let Poll::Ready(inbound) = io.poll_recv(cx)
    {
        return Poll::Ready(Io::Received(inbound));
    }
    if o.waiting() {
        if o.sending.is_empty() {
            o.sending = VecDeque::from(std::mem::take(&mut o.out));
            o.batches = 1;
        } else if !o.out.is_empty() && o.batches < WRITE_BATCHES {
            o.sending.extend(o.out.drain(..));
            o.batches += 1;
        }
        if o.out.is_empty() {
            o.handed += std::mem::take(&mut o.out_bytes);
        }
        if let Poll::Ready(sent) = io.poll_send(cx, &mut o.sending) {
            return Poll::Ready(Io::Sent(sent));
        }
    }
    if reading
        && write_first
        && let Poll::Ready(inbound) = io.poll_recv(cx)
    {
        return Poll::Ready(Io::Received(inbound));
    }
    Poll::Pending
}

impl<T: FrameIo> Driver<T> {
    async fn run(&mut self) {
        crate::metrics::get().connection_opened(self.remote.scheme);
        // One timer for the core's deadline, the idle timeout and the write timeout. It is
        // moved earlier at once but never later: when it fires early, whatever is due is
        // handled and it is set anew (so a request does not re-register a timer).
        let timer = tokio::time::sleep(std::time::Duration::ZERO);
        tokio::pin!(timer);
        let mut timer_at: Option<Instant> = None;
        loop {
            // Outputs first: events to act on, frames to write, then the close decision.
            self.process_events();
            self.take_output();
            if let Some(why) = self.core.poll_close().cloned() {
                // Boxed: the closing steps' state does not sit in every connection's task.
                Box::pin(self.shut(why)).await;
                return;
            }
            if std::mem::take(&mut self.active) {
                self.last_active = Instant::now();
            }
            let o = &mut self.output;
            if o.handed > 0 {
                self.stats.bytes_out += o.handed as u64;
                self.metrics.sent(o.handed);
                o.handed = 0;
            }
            if o.waiting() && self.write_deadline.is_none() {
                self.write_deadline = Some(Instant::now() + self.config.write_timeout);
            }
            let deadline = self.core.poll_timeout();
            // Reading goes on while writes wait, unless too much output is backed up.
            let reading = self.output.out_bytes < MAX_BACKLOG;
            // New requests, notifications and pings wait in their bounded queue while the
            // peer is slow to read or too many of our requests are pending.
            let taking = reading && self.waiting.len() < self.config.max_pending_requests;
            let idle_at = self
                .config
                .idle_timeout
                .filter(|_| self.handle.state.accepting.load(Ordering::Relaxed))
                .map(|t| self.last_active + t);
            let wake = [deadline, idle_at, self.write_deadline]
                .into_iter()
                .flatten()
                .min();
            if let Some(w) = wake
                && timer_at.is_none_or(|t| w < t)
            {
                timer.as_mut().reset(w.into());
                timer_at = Some(w);
            }
            let (io, output) = (&mut self.io, &mut self.output);
            tokio::select! {
                cmd = self.rx.recv(taking) => {
                    self.command(cmd);
                    self.commands_ready();
                }
                done = std::future::poll_fn(|cx| poll_io(io, output, cx, reading)) => match done {
                    Io::Received(inbound) => {
                        self.output.reads_in_row += 1;
                        self.inbound(inbound);
                    }
                    Io::Sent(Ok(())) => {
                        self.write_deadline = None;
                        self.output.reads_in_row = 0;
                        self.output.batches = 0;
                        // Nothing kept allocated between bursts.
                        self.output.sending = VecDeque::new();
                    }
                    Io::Sent(Err(e)) => {
                        debug!(remote = %self.remote, error = %e, "write failed");
                        self.write_broke();
                    }
                },
                _ = &mut timer, if timer_at.is_some() => {
                    timer_at = None;
                    let now = Instant::now();
                    if self.write_deadline.is_some_and(|t| t <= now) {
                        warn!(remote = %self.remote, "write timed out: the peer stopped reading");
                        self.write_broke();
                    } else {
                        if deadline.is_some_and(|t| t <= now) {
                            self.core.handle_timeout(now);
                        }
                        if idle_at.is_some_and(|t| t <= now) {
                            self.idle();
                        }
                    }
                }
            }
        }
    }

    /// A write failed or timed out: nothing more is written, the connection ends.
    fn write_broke(&mut self) {
        self.broken = true;
        self.write_deadline = None;
        self.output.sending = VecDeque::new();
        self.output.out.clear();
        self.output.out_bytes = 0;
        self.core.handle_transport_closed();
    }

    /// The idle timeout ran out: release the connection unless something is still going on.
    fn idle(&mut self) {
        let observed = self
            .dispatch
            .as_ref()
            .is_some_and(|d| d.observers_on((self.handle.id, None)) > 0);
        let busy = self.waiting.len() > 0
            || self.inbound_running > 0
            || self.core.outstanding_requests() > 0
            || observed
            || self.core.state() != coapws_proto::connection::State::Open;
        if busy {
            self.last_active = Instant::now();
            return;
        }
        info!(remote = %self.remote, "connection idle: releasing it");
        self.handle.state.accepting.store(false, Ordering::Relaxed);
        self.core.release(Instant::now());
    }

    /// Moves what the core has queued to the writer's backlog.
    fn take_output(&mut self) {
        while let Some(f) = self.core.poll_transmit() {
            self.output.out_bytes += f.len();
            self.output.out.push(f);
        }
    }

    /// Takes the commands already queued (up to [`COMMANDS_PER_WAKE`]) while it may, so that
    /// the requests of many callers leave in one write.
    fn commands_ready(&mut self) {
        for _ in 1..COMMANDS_PER_WAKE {
            let taking = self.output.out_bytes < MAX_BACKLOG
                && self.waiting.len() < self.config.max_pending_requests;
            match self.rx.try_recv(taking) {
                Some(cmd) => self.command(cmd),
                None => return,
            }
        }
    }

    fn inbound(&mut self, inbound: Inbound) {
        let now = Instant::now();
        match inbound {
            Inbound::Frame(f) => {
                self.stats.bytes_in += f.len() as u64;
                self.metrics.received(f.len());
                self.core.handle_frame(f, now)
            }
            Inbound::Data(d) => {
                self.stats.bytes_in += d.len() as u64;
                self.metrics.received(d.len());
                self.core.handle_bytes(&d, now)
            }
            Inbound::Text => {
                warn!(remote = %self.remote, "text frame received: aborting");
                self.core.handle_text_frame();
            }
            Inbound::TooLarge => {
                warn!(remote = %self.remote, "message above Max-Message-Size: aborting");
                let limit = self.core.config().max_message_size as usize;
                self.core.abort(
                    coapws_proto::DecodeError::TooLarge {
                        size: limit + 1,
                        limit,
                    }
                    .into(),
                );
            }
            Inbound::Closed(err) => {
                match err {
                    Some(e) => debug!(remote = %self.remote, error = %e, "transport failed"),
                    None => debug!(remote = %self.remote, "transport closed"),
                }
                self.core.handle_transport_closed();
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Request {
                mut message,
                id,
                reply,
            } => {
                if reply.is_closed() {
                    return;
                }
                // A token of the caller's own (`Request::token`) is kept; the core refuses it
                // while another request has it (`SendError::TokenInUse`).
                if message.token.is_empty() {
                    message.token = self.fresh_token();
                }
                self.stats.requests_out += 1;
                self.metrics.requests_out.inc();
                self.active = true;
                debug!(target: "coapws::wire", remote = %self.remote, message = %message.summary(), "send request");
                match self.core.send_request(&message) {
                    Ok(()) => self.waiting.insert(message.token, id, reply),
                    Err(e) => reply.finish(Err(e.into())),
                }
            }
            Command::Cancel { id } => {
                if let Some(token) = self.waiting.cancel(id) {
                    self.core.cancel_request(&token);
                }
            }
            Command::Resend {
                id,
                mut message,
                reply,
            } => {
                let Some(token) = self.waiting.key_of(id).cloned() else {
                    if let Some(r) = reply {
                        r.finish(Err(Error::ObservationEnded));
                    }
                    return;
                };
                if let Some(r) = reply {
                    self.waiting.replace(id, r);
                }
                self.core.cancel_request(&token);
                message.token = token.clone();
                debug!(target: "coapws::wire", remote = %self.remote, message = %message.summary(), "send request (same token)");
                if let Err(e) = self.core.send_request(&message) {
                    self.waiting.finish(&token, Err(e.into()));
                }
            }
            Command::Deregister { id, mut message } => {
                let Some(token) = self.waiting.cancel(id) else {
                    return;
                };
                self.core.cancel_request(&token);
                message.token = token;
                debug!(target: "coapws::wire", remote = %self.remote, message = %message.summary(), "deregister");
                // Nobody waits for the answer; the core forgets the token when it comes.
                let _ = self.core.send_request(&message);
            }
            Command::Notify(m) => self.send_response(m),
            Command::Respond(m) => {
                self.inbound_running = self.inbound_running.saturating_sub(1);
                self.send_response(m);
            }
            Command::Suppress(token) => {
                self.inbound_running = self.inbound_running.saturating_sub(1);
                debug!(target: "coapws::wire", remote = %self.remote, %token, "response suppressed (No-Response)");
                self.core.drop_response(&token);
            }
            Command::Release => {
                self.handle.state.accepting.store(false, Ordering::Relaxed);
                self.core.release(Instant::now());
            }
            Command::Ping(reply) => {
                // Few at once: a caller that pings in a loop without waiting cannot grow this.
                self.pings.retain(|(_, r)| !r.is_closed());
                if self.pings.len() >= 16 {
                    return;
                }
                let token = Token::from_u64(self.next_ping);
                self.next_ping += 1;
                self.core.ping(token.clone(), false);
                self.pings.push((token, reply));
            }
        }
    }

    fn send_response(&mut self, m: Message) {
        self.active = true;
        debug!(target: "coapws::wire", remote = %self.remote, message = %m.summary(), "send response");
        match self.core.send_response(&m) {
            Ok(()) => {}
            Err(SendError::TooLarge { size, limit }) => {
                warn!(remote = %self.remote, size, limit, "response exceeds the peer's Max-Message-Size");
                let r = Message::response(
                    Code::INTERNAL_SERVER_ERROR,
                    format!("response of {size} bytes exceeds Max-Message-Size {limit}"),
                )
                .with_token(m.token.clone());
                if self.core.send_response(&r).is_err() {
                    self.core.drop_response(&m.token);
                }
            }
            Err(e) => {
                debug!(remote = %self.remote, error = %e, "response not sent");
                self.core.drop_response(&m.token);
            }
        }
    }

    fn fresh_token(&mut self) -> Token {
        loop {
            let t = Token::from_u64(self.next_token);
            self.next_token = self.next_token.wrapping_add(1).max(1);
            if !self.core.is_outstanding(&t) {
                return t;
            }
        }
    }

    fn process_events(&mut self) {
        while let Some(ev) = self.core.poll_event() {
            match ev {
                Event::Established(s) => {
                    self.handle.state.set_peer(s);
                    debug!(remote = %self.remote, max_message_size = s.max_message_size, bwt = s.block_wise_transfer, "peer CSM")
                }
                Event::SettingsChanged(s) => {
                    self.handle.state.set_peer(s);
                    debug!(remote = %self.remote, max_message_size = s.max_message_size, "peer settings changed")
                }
                Event::Request(m) => self.incoming_request(m),
                Event::Response(m) => {
                    self.active = true;
                    debug!(target: "coapws::wire", remote = %self.remote, message = %m.summary(), "received response");
                    let token = m.token.clone();
                    if self.core.is_outstanding(&token) {
                        // A notification: the core keeps the token open. A one-shot request
                        // (or nobody) takes no more, so the token is forgotten.
                        if self.waiting.deliver(&token, m) != Delivery::Kept {
                            self.core.cancel_request(&token);
                        }
                    } else {
                        self.waiting.finish(&token, Ok(m));
                    }
                }
                Event::SendFailed { token, error } => {
                    self.waiting.finish(&token, Err(error.into()));
                }
                Event::Pong(token) => {
                    debug!(remote = %self.remote, %token, "pong");
                    if let Some(i) = self.pings.iter().position(|(t, _)| *t == token) {
                        let (_, reply) = self.pings.swap_remove(i);
                        let _ = reply.send(());
                    }
                }
                Event::PeerReleasing { hold_off, .. } => {
                    self.handle.state.accepting.store(false, Ordering::Relaxed);
                    // An hour at most: the value is the peer's to choose, not to abuse.
                    if let Some(secs) = hold_off {
                        let wait = std::time::Duration::from_secs(u64::from(secs).min(3600));
                        self.handle.state.set_hold_off(Instant::now() + wait);
                    }
                    info!(remote = %self.remote, ?hold_off, "peer sent Release")
                }
                Event::Closed(why) => {
                    match &why {
                        ConnectionError::Aborted(r) => {
                            warn!(remote = %self.remote, reason = %r, "aborting connection")
                        }
                        ConnectionError::PeerAborted(d) => {
                            warn!(remote = %self.remote, diagnostic = %d, "peer aborted")
                        }
                        other => info!(remote = %self.remote, why = %other, "connection ending"),
                    }
                    self.fail_all(&why);
                }
            }
        }
    }

    fn incoming_request(&mut self, m: Message) {
        self.active = true;
        self.stats.requests_in += 1;
        self.metrics.requests_in.inc();
        debug!(target: "coapws::wire", remote = %self.remote, message = %m.summary(), "received request");
        let token = m.token.clone();
        let Some(dispatch) = self.dispatch.clone() else {
            // RFC 8323 / RFC 7252: an endpoint without a server role.
            self.send_response(
                Message::response(Code::NOT_IMPLEMENTED, "no resources served here")
                    .with_token(token),
            );
            return;
        };
        if self.inbound_running >= self.config.max_concurrent_requests {
            let r = Message::response(Code::SERVICE_UNAVAILABLE, "too many concurrent requests")
                .with_uint_option(coapws_proto::OptionNumber::MAX_AGE, 1)
                .with_token(token);
            self.send_response(r);
            return;
        }
        self.inbound_running += 1;
        let peer = self.core.peer_settings();
        let request = IncomingRequest::new(
            m,
            self.remote.clone(),
            crate::site::PeerLimits {
                max_message_size: peer.max_message_size as usize,
                bert: peer.bert(),
            },
        );
        // A handler that completes at once (most do) is answered here, without a task or a
        // trip through the command queue; one that waits goes on in a task of its own.
        let mut answering = dispatch.dispatch(request);
        match crate::exchange::poll_once(&mut answering) {
            Err(()) => {
                self.inbound_running -= 1;
                warn!(remote = %self.remote, "handler panicked");
                let failed = Message::response(Code::INTERNAL_SERVER_ERROR, "handler failed");
                self.send_response(failed.with_token(token));
            }
            Ok(Some(answer)) => {
                self.inbound_running -= 1;
                match answer.message {
                    Some(m) => self.send_response(m.with_token(token)),
                    None => self.core.drop_response(&token),
                }
                Answer::start_observer(answer.started);
            }
            Ok(None) => {
                // A handler that panics or is cancelled still gets its request answered.
                let failed = Message::response(Code::INTERNAL_SERVER_ERROR, "handler failed");
                let guard = SendOnDrop::new(
                    self.handle.tx.clone(),
                    Command::Respond(failed.with_token(token.clone())),
                );
                tokio::spawn(async move {
                    let answer = answering.await;
                    let command = match answer.message {
                        Some(m) => Command::Respond(m.with_token(token)),
                        None => Command::Suppress(token),
                    };
                    guard.send_instead(command);
                    Answer::start_observer(answer.started);
                });
            }
        }
    }

    fn fail_all(&mut self, why: &ConnectionError) {
        let left = self.rx.close();
        self.waiting.fail_all(&Error::Connection(why.clone()));
        // Requests queued but not yet seen by the loop fail too.
        for cmd in left {
            match cmd {
                Command::Request { reply, .. }
                | Command::Resend {
                    reply: Some(reply), ..
                } => reply.finish(Err(Error::Connection(why.clone()))),
                _ => {}
            }
        }
    }

    async fn shut(&mut self, why: ConnectionError) {
        self.process_events();
        self.fail_all(&why);
        self.take_output();
        // A transport that failed or stopped taking writes gets no last words.
        if !self.broken {
            // After the batch being written (if any): what is left, then the close.
            let o = &mut self.output;
            o.sending.extend(o.out.drain(..));
            o.handed += std::mem::take(&mut o.out_bytes);
            self.stats.bytes_out += o.handed as u64;
            self.metrics.sent(o.handed);
            let grace = self.config.write_timeout;
            let (io, sending) = (&mut self.io, &mut self.output.sending);
            let sent = if sending.is_empty() {
                Ok(Ok(()))
            } else {
                tokio::time::timeout(grace, std::future::poll_fn(|cx| io.poll_send(cx, sending)))
                    .await
            };
            let closed = match sent {
                Ok(Ok(())) => {
                    let close = std::future::poll_fn(|cx| io.poll_close(cx, &why));
                    tokio::time::timeout(grace, close).await.is_ok()
                }
                Ok(Err(e)) => {
                    debug!(remote = %self.remote, error = %e, "write failed");
                    false
                }
                Err(_) => {
                    warn!(remote = %self.remote, "write timed out: the peer stopped reading");
                    false
                }
            };
            // WebSocket: wait briefly for the peer's Close, so the TCP close is orderly.
            if closed && io.awaits_close_reply() {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
                    while !matches!(
                        std::future::poll_fn(|cx| io.poll_recv(cx)).await,
                        Inbound::Closed(_)
                    ) {}
                })
                .await;
            }
        }
        if let Some(f) = self.on_close.take() {
            f(self.handle.id, self.handle.hold_off());
        }
        crate::metrics::get().connection_closed(self.remote.scheme, &why);
        let s = &self.stats;
        let secs = s.started.map_or(0.0, |t| t.elapsed().as_secs_f64());
        info!(
            remote = %self.remote,
            conn = self.handle.id,
            why = %why,
            duration = format_args!("{secs:.1}s"),
            requests_in = s.requests_in,
            requests_out = s.requests_out,
            bytes_in = s.bytes_in,
            bytes_out = s.bytes_out,
            "connection closed"
        );
    }
}
