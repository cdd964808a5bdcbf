//! Handles to the tasks that own a link to peers: [`ConnectionHandle`] for an RFC 8323
//! connection (WebSocket, TCP, TLS; its task is in `connection.rs`) and [`SocketHandle`] for
//! a UDP socket (its task is in `transport/udp.rs`), with the commands they send those tasks.
//! A [`crate::Remote`] holds one of them; nothing here knows about sites or handlers.

use crate::error::Error;
use crate::exchange::{Feed, Reply, call, feed};
use crate::queue::Queues;
use coapws_proto::connection::ConnectionError;
use coapws_proto::message::{Message, Token};
use coapws_proto::signaling::PeerSettings;
use coapws_proto::udp::RequestKey;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// What other tasks ask of a connection's task.
pub(crate) enum Command {
    /// Send a request (token chosen here unless the message carries one); answers go to
    /// `reply`.
    Request {
        message: Message,
        id: u64,
        reply: Reply,
    },
    /// Forget caller `id`'s request.
    Cancel { id: u64 },
    /// Send `message` under the token of caller `id`'s observation, which the core forgets
    /// first (re-registration with Observe 0, deregistration with Observe 1); answers go to
    /// `reply` from now on if given.
    Resend {
        id: u64,
        message: Message,
        reply: Option<Reply>,
    },
    /// Caller `id` stopped listening to its observation: deregister with `message` (a GET
    /// with Observe 1) under its token, whose answer nobody awaits.
    Deregister { id: u64, message: Message },
    /// The response to an incoming request.
    Respond(Message),
    /// A notification to an observer on this connection (not an answer to a running handler).
    Notify(Message),
    /// No response to an incoming request (No-Response).
    Suppress(Token),
    /// Start a graceful shutdown.
    Release,
    /// Send a Ping; `reply` fires when its Pong comes.
    Ping(tokio::sync::oneshot::Sender<()>),
}

/// A cheap, cloneable reference to a running connection.
#[derive(Clone)]
pub struct ConnectionHandle {
    pub(crate) tx: Queues<Command>,
    pub(crate) state: Arc<LinkState>,
    pub(crate) id: u64,
}

/// What a connection's task shares with its handles, in one allocation.
#[derive(Default)]
pub(crate) struct LinkState {
    /// Caller ids of requests (for cancelling them).
    pub(crate) ids: AtomicU64,
    /// Cleared once either side sent Release: no new requests should start here.
    pub(crate) accepting: AtomicBool,
    /// The peer's settings once its first CSM arrived.
    peer: std::sync::Mutex<Option<PeerSettings>>,
    /// Woken when the peer's settings change.
    peer_known: tokio::sync::Notify,
    /// Until when the peer asked not to be reconnected to (Release with Hold-Off).
    hold_off: std::sync::Mutex<Option<Instant>>,
}

impl LinkState {
    /// A new connection's: accepting requests, caller ids from 1.
    pub(crate) fn new() -> LinkState {
        LinkState {
            ids: AtomicU64::new(1),
            accepting: AtomicBool::new(true),
            ..LinkState::default()
        }
    }
    /// The peer's CSM said `settings`.
    pub(crate) fn set_peer(&self, settings: PeerSettings) {
        *self.peer.lock().unwrap_or_else(|p| p.into_inner()) = Some(settings);
        self.peer_known.notify_waiters();
    }
    /// The peer asked not to be reconnected to before `until`.
    pub(crate) fn set_hold_off(&self, until: Instant) {
        *self.hold_off.lock().unwrap_or_else(|p| p.into_inner()) = Some(until);
    }
}

impl std::fmt::Debug for ConnectionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConnectionHandle({})", self.id)
    }
}

impl ConnectionHandle {
    /// True while the connection's task runs and takes commands.
    pub fn is_alive(&self) -> bool {
        !self.tx.is_closed()
    }
    /// True while new requests may start on the connection (up, and not being released).
    pub fn accepts_requests(&self) -> bool {
        self.is_alive() && self.state.accepting.load(Ordering::Relaxed)
    }
    /// Until when the peer asked us not to reconnect (its Release's Hold-Off, RFC 8323
    /// §5.5), if it did.
    pub fn hold_off(&self) -> Option<Instant> {
        *self
            .state
            .hold_off
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
    /// What the peer's CSMs said, once the first arrived.
    pub fn peer_settings(&self) -> Option<PeerSettings> {
        *self.state.peer.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// Waits (at most `limit`) for the peer's first CSM; its settings, or `None` if it did not
    /// come (the connection ended or the time ran out).
    pub async fn wait_peer_settings(&self, limit: std::time::Duration) -> Option<PeerSettings> {
        let known = async {
            loop {
                let changed = self.state.peer_known.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if let Some(p) = self.peer_settings() {
                    return Some(p);
                }
                tokio::select! {
                    _ = changed => {}
                    _ = self.tx.closed() => return self.peer_settings(),
                }
            }
        };
        tokio::time::timeout(limit, known).await.ok().flatten()
    }
    /// Process-unique number of the connection.
    pub fn id(&self) -> u64 {
        self.id
    }
    /// Sends a request on this connection and waits for its response. The token is chosen
    /// here; dropping the future cancels the request.
    pub(crate) async fn request(&self, message: Message) -> Result<Message, Error> {
        let id = self.state.ids.fetch_add(1, Ordering::Relaxed);
        call(
            &self.tx,
            |reply| Command::Request { message, id, reply },
            Command::Cancel { id },
            || Error::Connection(ConnectionError::TransportClosed),
        )
        .await
    }
    /// Sends an observation request (Observe 0) on this connection; returns the caller id and
    /// the feed its notifications arrive on.
    pub(crate) async fn observe(&self, message: Message) -> Result<(u64, Feed), Error> {
        let id = self.state.ids.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = feed();
        self.tx
            .send(Command::Request {
                message,
                id,
                reply: Reply::Stream(tx),
            })
            .await
            .map_err(|_| Error::Connection(ConnectionError::TransportClosed))?;
        Ok((id, rx))
    }
    /// Queues a command that must not wait (bounded by what it answers).
    pub(crate) fn command(&self, c: Command) {
        let _ = self.tx.control(c);
    }
    /// Queues a notification, waiting while the connection is behind.
    pub(crate) async fn notify(&self, message: Message) {
        let _ = self.tx.send(Command::Notify(message)).await;
    }
    /// Sends a CoAP Ping (RFC 8323 §5.4) and waits up to `timeout` for its Pong; the round
    /// trip time. [`Error::Timeout`] when none came, a connection error when it closed.
    pub async fn ping(&self, timeout: std::time::Duration) -> Result<std::time::Duration, Error> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let started = Instant::now();
        self.tx
            .send(Command::Ping(tx))
            .await
            .map_err(|_| Error::Connection(ConnectionError::TransportClosed))?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(())) => Ok(started.elapsed()),
            Ok(Err(_)) => Err(Error::Connection(ConnectionError::TransportClosed)),
            Err(_) => Err(Error::Timeout),
        }
    }
    /// Starts a graceful shutdown of the connection (Release).
    pub fn release(&self) {
        let _ = self.tx.control(Command::Release);
    }
    /// Resolves when the connection's task has ended.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

/// What other tasks ask of a UDP socket's task.
pub(crate) enum UdpCommand {
    Request {
        to: SocketAddr,
        message: Message,
        confirmable: bool,
        id: u64,
        reply: Reply,
    },
    Cancel {
        id: u64,
    },
    /// Send `message` under the token of caller `id`'s observation, forgotten first
    /// (re-registration, explicit deregistration); answers go to `reply` if given.
    Resend {
        id: u64,
        message: Message,
        confirmable: bool,
        reply: Option<Reply>,
    },
    /// Caller `id` stopped listening to its observation: forget it, so that the next
    /// notification is answered with Reset (RFC 7641 §3.6).
    Deregister {
        id: u64,
    },
    Respond {
        to: SocketAddr,
        key: RequestKey,
        message: Option<Message>,
    },
    /// A notification to the observer `to` of the observation `token`.
    Notify {
        to: SocketAddr,
        token: Token,
        message: Message,
        confirmable: bool,
    },
    /// The observation `token` of `to` ended on our side.
    EndNotifications {
        to: SocketAddr,
        token: Token,
    },
    /// Send a CoAP ping (an empty Confirmable) to `to`; `reply` fires when it is answered.
    Ping {
        to: SocketAddr,
        reply: tokio::sync::oneshot::Sender<()>,
    },
    /// Shut down gracefully: refuse new requests (5.03), fail our own pending ones, finish
    /// the running handlers' answers (and their acknowledgements), then end; `done` fires
    /// then.
    Drain(tokio::sync::oneshot::Sender<()>),
}

/// A cheap, cloneable reference to a running UDP socket task.
#[derive(Clone)]
pub struct SocketHandle {
    pub(crate) tx: Queues<UdpCommand>,
    pub(crate) ids: Arc<AtomicU64>,
    pub(crate) id: u64,
    pub(crate) local: SocketAddr,
}

impl std::fmt::Debug for SocketHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SocketHandle({}, {})", self.id, self.local)
    }
}

impl SocketHandle {
    /// True while the socket task runs.
    pub fn is_alive(&self) -> bool {
        !self.tx.is_closed()
    }
    /// Process-unique number of the socket task.
    pub fn id(&self) -> u64 {
        self.id
    }
    /// The socket's local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
    /// Sends an observation request to `to`; returns the caller id and the feed its
    /// notifications arrive on.
    pub(crate) async fn observe(
        &self,
        to: SocketAddr,
        message: Message,
        confirmable: bool,
    ) -> Result<(u64, Feed), Error> {
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = feed();
        self.tx
            .send(UdpCommand::Request {
                to,
                message,
                confirmable,
                id,
                reply: Reply::Stream(tx),
            })
            .await
            .map_err(|_| Error::Shutdown)?;
        Ok((id, rx))
    }
    /// Queues a command that must not wait (bounded by what it answers).
    pub(crate) fn command(&self, c: UdpCommand) {
        let _ = self.tx.control(c);
    }
    /// Queues a notification, waiting while the socket's task is behind.
    pub(crate) async fn notify(&self, c: UdpCommand) {
        let _ = self.tx.send(c).await;
    }
    /// Sends a CoAP ping (RFC 7252 §4.3: an empty Confirmable, answered with Reset) to `to`
    /// and waits up to `timeout`; the round trip time. [`Error::Timeout`] when it went
    /// unanswered.
    pub async fn ping(
        &self,
        to: SocketAddr,
        timeout: std::time::Duration,
    ) -> Result<std::time::Duration, Error> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let started = Instant::now();
        self.tx
            .send(UdpCommand::Ping { to, reply: tx })
            .await
            .map_err(|_| Error::Shutdown)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(())) => Ok(started.elapsed()),
            _ => Err(Error::Timeout),
        }
    }
    /// Shuts the socket down gracefully (see [`UdpCommand::Drain`]); resolves when it ended.
    pub(crate) async fn drain(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.control(UdpCommand::Drain(tx)).is_ok() {
            let _ = rx.await;
        }
    }
    /// Resolves when the socket task has ended.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
    /// Sends a request to `to` and waits for the response; dropping the future cancels it.
    pub(crate) async fn request(
        &self,
        to: SocketAddr,
        message: Message,
        confirmable: bool,
    ) -> Result<Message, Error> {
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        call(
            &self.tx,
            |reply| UdpCommand::Request {
                to,
                message,
                confirmable,
                id,
                reply,
            },
            UdpCommand::Cancel { id },
            || Error::Shutdown,
        )
        .await
    }
}
