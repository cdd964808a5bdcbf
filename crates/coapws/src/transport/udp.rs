//! CoAP over UDP (RFC 7252): one task per socket around the sans-IO
//! [`coapws_proto::udp::MessageLayer`], for any number of peers.
//!
//! The task reads datagrams, feeds the layer, writes what it wants sent, runs handlers for
//! incoming requests and hands responses (and failures: timeout, Reset) to waiting callers.
//! A socket serves both roles: the server's socket sends requests back to clients (role
//! reversal), and a client's socket answers requests with the endpoint's site.

use crate::dispatch::{Answer, Dispatch};
use crate::error::Error;
use crate::exchange::{Delivery, SendOnDrop, Waiting};
pub use crate::link::SocketHandle;
pub(crate) use crate::link::UdpCommand;
use crate::remote::{Link, Remote, Side};
use crate::site::{IncomingRequest, PeerLimits};
use coapws_proto::code::Code;
use coapws_proto::message::{Message, Token};
use coapws_proto::udp::{MessageLayer, RequestKey, UdpConfig, UdpEvent, UdpRequestError};
use coapws_proto::uri::{Host, Scheme};
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::net::UdpSocket;
use tracing::{debug, info, warn};

/// With `-v` (debug on `coapws::wire`): each datagram with its message type and Message ID.
fn log_datagram(direction: &str, peer: SocketAddr, datagram: &bytes::Bytes) {
    if !tracing::enabled!(target: "coapws::wire", tracing::Level::DEBUG) {
        return;
    }
    let peer = crate::remote::display_addr(peer);
    let limits = coapws_proto::DecodeLimits::with_max_message_size(datagram.len());
    match coapws_proto::codec::udp::decode(datagram, &limits) {
        Ok((h, m)) => debug!(
            target: "coapws::wire",
            %peer,
            "datagram {direction}: {:?} mid {:#06x} {}",
            h.mtype,
            h.message_id,
            m.summary()
        ),
        Err(e) => {
            debug!(target: "coapws::wire", %peer, error = %e, "datagram {direction}: malformed, {} bytes", datagram.len())
        }
    }
}

static SOCKET_IDS: AtomicU64 = AtomicU64::new(1 << 40);

/// Receive buffer asked for each UDP socket (the kernel caps it at `net.core.rmem_max`).
/// The default (about 200 KB, some 270 small datagrams' worth of kernel buffers) overflows
/// on loopback with a few hundred requests in flight; a dropped request then waits a whole
/// retransmission timeout.
pub(crate) const UDP_RECEIVE_BUFFER: usize = 2 << 20;

/// Asks for [`UDP_RECEIVE_BUFFER`] on `socket` unless it has that much already.
pub(crate) fn grow_receive_buffer(socket: &UdpSocket) {
    let s = socket2::SockRef::from(socket);
    if s.recv_buffer_size().is_ok_and(|n| n < UDP_RECEIVE_BUFFER) {
        if let Err(e) = s.set_recv_buffer_size(UDP_RECEIVE_BUFFER) {
            tracing::debug!(error = %e, "UDP receive buffer not enlarged");
        }
    }
}

/// Starts the task of `socket`; returns its handle and the task.
pub(crate) fn spawn(
    socket: UdpSocket,
    config: UdpConfig,
    dispatch: Option<Arc<dyn Dispatch>>,
    limits: RequestLimits,
    connected: Option<SocketAddr>,
) -> std::io::Result<(SocketHandle, tokio::task::JoinHandle<()>)> {
    let local = socket.local_addr()?;
    grow_receive_buffer(&socket);
    let (tx, rx) = crate::queue::queues();
    let handle = SocketHandle {
        tx,
        ids: Arc::new(AtomicU64::new(1)),
        id: SOCKET_IDS.fetch_add(1, Ordering::Relaxed),
        local,
    };
    // The layer's randomness (Message IDs, tokens, jitter) is seeded from the OS here, in the
    // runtime; the sans-IO core only takes the seed.
    let seed = RandomState::new().hash_one((local, handle.id));
    // Peers may send datagrams up to their path MTU: receive what the layer accepts, and one
    // byte more to tell a datagram that was too large.
    let max_datagram = config.max_receive_size.max(config.max_message_size);
    let driver = SocketDriver {
        socket,
        layer: MessageLayer::new(config, seed),
        rx,
        handle: handle.clone(),
        dispatch,
        waiting: Waiting::new(),
        running: HashMap::new(),
        running_total: 0,
        limits,
        buf: vec![0u8; max_datagram + 1],
        connected,
        pings: Vec::new(),
        evictions_logged: 0,
        draining: None,
        metrics: crate::metrics::get().link(Scheme::Coap),
    };
    info!(%local, "coap (UDP) socket up");
    Ok((handle.clone(), tokio::spawn(driver.run())))
}

struct SocketDriver {
    socket: UdpSocket,
    layer: MessageLayer<SocketAddr>,
    rx: crate::queue::QueueRx<UdpCommand>,
    handle: SocketHandle,
    dispatch: Option<Arc<dyn Dispatch>>,
    waiting: Waiting<(SocketAddr, Token)>,
    /// Requests being handled, per peer and in all.
    running: HashMap<SocketAddr, usize>,
    running_total: usize,
    limits: RequestLimits,
    buf: Vec<u8>,
    /// The one peer of a connected client socket: the system reports its ICMP errors here.
    connected: Option<SocketAddr>,
    /// Our pings waiting for their answer, by peer and Message ID.
    pings: Vec<((SocketAddr, u16), tokio::sync::oneshot::Sender<()>)>,
    /// Duplicate-cache evictions already logged.
    evictions_logged: u64,
    /// Shutting down: told when the last answer is out and acknowledged.
    draining: Option<tokio::sync::oneshot::Sender<()>>,
    /// UDP's counters in the process metrics.
    metrics: crate::metrics::LinkMetrics,
}

/// How many incoming requests a UDP socket handles at once.
#[derive(Clone, Debug)]
pub(crate) struct RequestLimits {
    /// Per peer address, like the per-connection limit of reliable transports.
    pub per_peer: usize,
    /// All peers of the socket together (of all the sockets serving its address).
    pub total: usize,
    /// Requests being handled, counted with the other sockets of the address.
    pub running: Arc<std::sync::atomic::AtomicUsize>,
    /// Our requests (observations included) pending on the socket, all peers together;
    /// further ones wait.
    pub max_pending: usize,
}

impl SocketDriver {
    /// Says when the duplicate cache drops entries early (the first time, then every 10 000):
    /// from then on a late retransmission may run its handler twice.
    fn report_dedup_evictions(&mut self) {
        let n = self.layer.dedup_evictions();
        if n > self.evictions_logged
            && (self.evictions_logged == 0 || n - self.evictions_logged >= 10_000)
        {
            warn!(local = %self.handle.local, evicted = n,
                  "UDP duplicate cache full: oldest entries dropped early (raise UdpConfig::max_dedup_entries / max_dedup_bytes)");
            self.evictions_logged = n;
        }
    }

    async fn run(mut self) {
        loop {
            while let Some((to, datagram)) = self.layer.poll_transmit() {
                log_datagram("out", to, &datagram);
                self.metrics.sent(datagram.len());
                if let Err(e) = self.socket.send_to(&datagram, to).await {
                    debug!(%to, error = %e, "send_to failed");
                    self.send_failed(to, &e);
                }
            }
            // Handlers that answered at once queued datagrams: send those before waiting.
            let mut handled = false;
            while let Some(ev) = self.layer.poll_event() {
                self.event(ev);
                handled = true;
            }
            if handled {
                continue;
            }
            if self.draining.is_some() && self.running_total == 0 && self.layer.is_idle() {
                info!(local = %self.handle.local, "coap (UDP) socket drained: closing");
                if let Some(done) = self.draining.take() {
                    let _ = done.send(());
                }
                return;
            }
            // Handlers may have answered synchronously (5.01, 5.03): send that first.
            if self
                .layer
                .poll_timeout()
                .is_some_and(|t| t <= Instant::now())
            {
                self.layer.handle_timeout(Instant::now());
                continue;
            }
            let deadline = self.layer.poll_timeout();
            // New requests and notifications wait in their bounded queue while too many of
            // our requests are pending on this socket.
            let taking = self.waiting.len() < self.limits.max_pending;
            tokio::select! {
                cmd = self.rx.recv(taking) => self.command(cmd),
                r = self.socket.recv_from(&mut self.buf) => match r {
                    Ok((n, from)) => {
                        let data = bytes::Bytes::copy_from_slice(&self.buf[..n]);
                        log_datagram("in", from, &data);
                        self.metrics.received(data.len());
                        self.layer.handle_datagram(from, data, Instant::now());
                        self.report_dedup_evictions();
                    }
                    // ICMP errors surface here for a connected socket: not fatal for a shared one.
                    Err(e) => {
                        debug!(error = %e, "recv_from failed");
                        self.unreachable(&e);
                    }
                },
                _ = crate::exchange::sleep_until(deadline), if deadline.is_some() => {
                    self.layer.handle_timeout(Instant::now());
                }
            }
        }
    }

    /// The system refused to send to `to`. When it says `to` cannot be reached from here (no
    /// route to its network or host, an address of no interface), every request to it fails
    /// now with [`Error::Connect`] instead of after its retransmissions (so a name's next
    /// address is tried); other errors (a full buffer) are left to the retransmission timer.
    fn send_failed(&mut self, to: SocketAddr, e: &std::io::Error) {
        use std::io::ErrorKind;
        if self.connected.is_some() {
            return self.unreachable(e);
        }
        if !matches!(
            e.kind(),
            ErrorKind::NetworkUnreachable
                | ErrorKind::HostUnreachable
                | ErrorKind::AddrNotAvailable
                | ErrorKind::InvalidInput
        ) {
            return;
        }
        let error = Error::connect(to.to_string(), std::io::Error::new(e.kind(), e.to_string()));
        for (peer, token) in self.waiting.fail_matching(|(peer, _)| *peer == to, &error) {
            self.layer.cancel_request(peer, &token);
        }
    }

    /// A connected socket's peer is unreachable (nobody listens: the system got an ICMP port
    /// unreachable): every request to it fails now, instead of after its retransmissions.
    fn unreachable(&mut self, e: &std::io::Error) {
        let Some(peer) = self.connected else { return };
        if e.kind() != std::io::ErrorKind::ConnectionRefused {
            return;
        }
        let error = Error::connect(
            peer.to_string(),
            std::io::Error::new(e.kind(), e.to_string()),
        );
        for (to, token) in self.waiting.fail_all_keys(&error) {
            self.layer.cancel_request(to, &token);
        }
    }

    fn command(&mut self, cmd: UdpCommand) {
        let now = Instant::now();
        match cmd {
            UdpCommand::Request {
                to,
                message,
                confirmable,
                id,
                reply,
            } => {
                if reply.is_closed() {
                    return;
                }
                debug!(target: "coapws::wire", %to, message = %message.summary(), confirmable, "send request");
                // A token of the caller's own (`Request::token`) is kept; the layer refuses
                // it while another request to `to` has it (`UdpSendError::TokenInUse`).
                let sent = if message.token.is_empty() {
                    self.layer.send_request(to, message, confirmable, now)
                } else {
                    let token = message.token.clone();
                    self.layer
                        .send_request_with_token(to, message, confirmable, now)
                        .map(|()| token)
                };
                match sent {
                    Ok(token) => {
                        self.metrics.requests_out.inc();
                        self.waiting.insert((to, token), id, reply)
                    }
                    Err(e) => reply.finish(Err(Error::Datagram(e))),
                }
            }
            UdpCommand::Cancel { id } | UdpCommand::Deregister { id } => {
                if let Some((to, token)) = self.waiting.cancel(id) {
                    self.layer.cancel_request(to, &token);
                }
            }
            UdpCommand::Resend {
                id,
                mut message,
                confirmable,
                reply,
            } => {
                let Some((to, token)) = self.waiting.key_of(id).cloned() else {
                    if let Some(r) = reply {
                        r.finish(Err(Error::ObservationEnded));
                    }
                    return;
                };
                if let Some(r) = reply {
                    self.waiting.replace(id, r);
                }
                self.layer.cancel_request(to, &token);
                message.token = token.clone();
                debug!(target: "coapws::wire", %to, message = %message.summary(), confirmable, "send request (same token)");
                if let Err(e) = self
                    .layer
                    .send_request_with_token(to, message, confirmable, now)
                {
                    self.waiting.finish(&(to, token), Err(Error::Datagram(e)));
                }
            }
            UdpCommand::Notify {
                to,
                token,
                message,
                confirmable,
            } => {
                debug!(target: "coapws::wire", %to, message = %message.summary(), confirmable, "send notification");
                if let Err(e) = self
                    .layer
                    .send_notification(to, &token, message, confirmable, now)
                {
                    warn!(%to, error = %e, "notification not sendable");
                }
            }
            UdpCommand::EndNotifications { to, token } => {
                self.layer.end_notifications(to, &token);
            }
            UdpCommand::Ping { to, reply } => {
                self.pings.retain(|(_, r)| !r.is_closed());
                if self.pings.len() < 64 {
                    let mid = self.layer.ping(to, now);
                    self.pings.push(((to, mid), reply));
                }
            }
            UdpCommand::Drain(done) => {
                info!(local = %self.handle.local, running = self.running_total, "coap (UDP) socket shutting down");
                self.draining = Some(done);
                for (to, token) in self.waiting.fail_all_keys(&Error::Shutdown) {
                    self.layer.cancel_request(to, &token);
                }
            }
            UdpCommand::Respond { to, key, message } => {
                self.finished(to);
                self.respond(to, &key, message, now);
            }
        }
    }

    fn respond(
        &mut self,
        to: SocketAddr,
        key: &RequestKey,
        message: Option<Message>,
        now: Instant,
    ) {
        match message {
            Some(m) => {
                debug!(target: "coapws::wire", %to, message = %m.summary(), "send response");
                if let Err(e) = self.layer.send_response(to, key, m, now) {
                    warn!(%to, error = %e, "response not sendable");
                    let r = Message::response(Code::INTERNAL_SERVER_ERROR, e.to_string());
                    if self.layer.send_response(to, key, r, now).is_err() {
                        self.layer.drop_response(to, key, now);
                    }
                }
            }
            None => self.layer.drop_response(to, key, now),
        }
    }

    fn event(&mut self, ev: UdpEvent<SocketAddr>) {
        match ev {
            UdpEvent::Request { from, key, message } => self.incoming(from, key, message),
            UdpEvent::Response { from, message } => {
                debug!(target: "coapws::wire", %from, message = %message.summary(), "received response");
                let key = (from, message.token.clone());
                if self.layer.is_outstanding(from, &message.token) {
                    // A notification. A one-shot request (or nobody) takes no more: forget
                    // the token, so later notifications get Reset (RFC 7641 §3.6).
                    if self.waiting.deliver(&key, message) != Delivery::Kept {
                        self.layer.cancel_request(from, &key.1);
                    }
                } else {
                    self.waiting.finish(&key, Ok(message));
                }
            }
            UdpEvent::Dropped { from, reason } => {
                debug!(%from, %reason, "datagram dropped")
            }
            UdpEvent::RequestFailed { to, token, error } => {
                let error = match error {
                    UdpRequestError::Timeout => Error::Timeout,
                    UdpRequestError::Reset => Error::Reset,
                };
                self.waiting.finish(&(to, token), Err(error));
            }
            UdpEvent::ResponseFailed { to, token, error } => {
                debug!(%to, %token, %error, "separate response not acknowledged");
                if let Some(d) = &self.dispatch {
                    d.observer_gone((self.handle.id, Some(to)), &token);
                }
            }
            UdpEvent::Pong { from, message_id } => {
                debug!(%from, "pong");
                if let Some(i) = self
                    .pings
                    .iter()
                    .position(|(k, _)| *k == (from, message_id))
                {
                    let (_, reply) = self.pings.swap_remove(i);
                    let _ = reply.send(());
                }
            }
            UdpEvent::PingTimeout { to, message_id } => {
                debug!(%to, "ping unanswered");
                self.pings.retain(|(k, _)| *k != (to, message_id));
            }
        }
    }

    fn incoming(&mut self, from: SocketAddr, key: RequestKey, message: Message) {
        self.metrics.requests_in.inc();
        debug!(target: "coapws::wire", %from, message = %message.summary(), "received request");
        let now = Instant::now();
        let Some(dispatch) = self.dispatch.clone() else {
            let r = Message::response(Code::NOT_IMPLEMENTED, "no resources served here");
            return self.respond(from, &key, Some(r), now);
        };
        if self.draining.is_some() {
            let r = Message::response(Code::SERVICE_UNAVAILABLE, "shutting down")
                .with_uint_option(coapws_proto::OptionNumber::MAX_AGE, 5);
            return self.respond(from, &key, Some(r), now);
        }
        let of_peer = self.running.get(&from).copied().unwrap_or(0);
        // Counted before the check, so that sockets checking at once cannot both pass.
        let total = self.limits.running.fetch_add(1, Ordering::SeqCst);
        if of_peer >= self.limits.per_peer || total >= self.limits.total {
            self.limits.running.fetch_sub(1, Ordering::SeqCst);
            debug!(%from, of_peer, total, "request limit reached: 5.03");
            let r = Message::response(Code::SERVICE_UNAVAILABLE, "too many concurrent requests")
                .with_uint_option(coapws_proto::OptionNumber::MAX_AGE, 1);
            return self.respond(from, &key, Some(r), now);
        }
        *self.running.entry(from).or_default() += 1;
        self.running_total += 1;
        let local = self.handle.local;
        let remote = Remote {
            scheme: Scheme::Coap,
            peer_addr: from,
            local_addr: local,
            host: Host::from(local.ip()),
            port: local.port(),
            side: Side::Server,
            link: Link::Datagram(self.handle.clone(), from),
        };
        let limits = PeerLimits {
            max_message_size: self.layer.config().max_message_size,
            bert: false,
        };
        let request = IncomingRequest::new(message, remote, limits);
        let failed = Message::response(Code::INTERNAL_SERVER_ERROR, "handler failed");
        // A handler that completes at once is answered here; one that waits in a task.
        let mut answering = dispatch.dispatch(request);
        let done = crate::exchange::poll_once(&mut answering);
        if !matches!(done, Ok(None)) {
            self.finished(from);
        }
        match done {
            Err(()) => {
                warn!(%from, "handler panicked");
                self.respond(from, &key, Some(failed), now);
            }
            Ok(Some(answer)) => {
                self.respond(from, &key, answer.message, now);
                Answer::start_observer(answer.started);
            }
            Ok(None) => {
                // A handler that panics or is cancelled still gets its request answered.
                let respond = move |message| UdpCommand::Respond {
                    to: from,
                    key: key.clone(),
                    message,
                };
                let guard = SendOnDrop::new(self.handle.tx.clone(), respond(Some(failed)));
                tokio::spawn(async move {
                    let answer = answering.await;
                    guard.send_instead(respond(answer.message));
                    Answer::start_observer(answer.started);
                });
            }
        }
    }

    /// A request of `from` has been answered: it no longer counts as running.
    fn finished(&mut self, from: SocketAddr) {
        self.running_total = self.running_total.saturating_sub(1);
        self.limits.running.fetch_sub(1, Ordering::SeqCst);
        if let Some(n) = self.running.get_mut(&from) {
            *n -= 1;
            if *n == 0 {
                self.running.remove(&from);
            }
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::{UDP_RECEIVE_BUFFER, grow_receive_buffer};

    #[tokio::test]
    async fn udp_sockets_get_a_receive_buffer_for_hundreds_in_flight() {
        // With the default buffer, 64 x 8 requests over loopback lost ~800 datagrams in 4 s
        // (UdpRcvbufErrors), each waiting out a retransmission: a 3 s maximum latency.
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        grow_receive_buffer(&socket);
        let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Linux doubles what it grants (bookkeeping), capped at net.core.rmem_max.
        let granted = socket2::SockRef::from(&socket).recv_buffer_size().unwrap();
        assert_eq!(granted, 2 * UDP_RECEIVE_BUFFER.min(rmem_max));
    }
}
