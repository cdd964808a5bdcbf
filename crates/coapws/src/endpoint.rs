//! [`Endpoint`]: client and server at once.
//!
//! As a client it turns a [`Request`] for a URI into a response over a pooled connection. As a
//! server it listens (WebSocket now; TCP, TLS and UDP as they come) and answers with its
//! [`Site`]. On every connection, whoever opened it, both roles work: a server reaches a client
//! that connected to it through the [`Remote`] of that client's request
//! ([`Endpoint::request_to`]), and a client's site answers the server's requests.

use crate::connection::{self, DriverConfig};
use crate::dispatch::Dispatch;
use crate::dispatch::{BlockwiseConfig, SiteDispatch};
use crate::error::Error;
use crate::link::{ConnectionHandle, SocketHandle};
use crate::net::listen_error;
use crate::observe::ObserveConfig;
use crate::pool::{Pool, PoolKey};
use crate::remote::{Link, Remote, Side};
use crate::site::Site;
use crate::tls::TlsClientConfig;
use crate::transport::tcp::StreamIo;
use crate::transport::ws;
use bytes::Bytes;
use coapws_proto::code::Code;
use coapws_proto::connection::{Connection, ConnectionConfig, Framing};
use coapws_proto::message::{Message, Token};
use coapws_proto::option::{OptionNumber, Options};
use coapws_proto::udp::UdpConfig;
use coapws_proto::uri::{Scheme, Uri};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tracing::warn;

/// Settings of an endpoint. Every limit is here.
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    /// Settings of each RFC 8323 connection (our Max-Message-Size, CSM and release timeouts,
    /// keepalive).
    pub connection: ConnectionConfig,
    /// Keepalive of the connections WebSocket clients open to this endpoint (instead of
    /// `connection.keepalive`): after this long without hearing from the client, a Ping; as
    /// long again without an answer, the connection is dead (its requests fail, its
    /// observations end, a directory registration made over it ends). A browser or a device
    /// behind NAT that vanished without closing is noticed. `None`: no pings.
    pub server_keepalive: Option<Duration>,
    /// Settings of the UDP message layer (RFC 7252 transmission parameters, limits).
    pub udp: UdpConfig,
    /// How long a request waits for its response by default.
    pub request_timeout: Duration,
    /// How long a request that carries No-Response waits before concluding none will come.
    pub no_response_wait: Duration,
    /// Time allowed for TCP connect plus handshake.
    pub connect_timeout: Duration,
    /// Server: time an accepted connection gets for its TLS handshake, and again for its
    /// HTTP request head (WebSocket); a slower one is closed. The peer's CSM then has
    /// `connection.csm_timeout`.
    pub handshake_timeout: Duration,
    /// Server: largest HTTP request head (request line and headers) of a WebSocket
    /// handshake; larger ones get HTTP 431 and the connection is closed.
    pub max_header_bytes: usize,
    /// Server: most header lines in an HTTP request head; more get HTTP 431.
    pub max_headers: usize,
    /// Close (with Release) a connection on which no request or response has passed for this
    /// long while nothing is pending on it either way and nobody observes over it. `None`
    /// (the default): idle connections stay; keepalive still finds dead ones. Off by default
    /// because a device that connected in order to be reached (a directory registration,
    /// requests back to it) is legitimately quiet.
    pub idle_timeout: Option<Duration>,
    /// Incoming requests handled at once per connection (per peer address over UDP); beyond
    /// it, 5.03.
    pub max_concurrent_requests: usize,
    /// Incoming requests handled at once on one UDP socket, all peers together.
    pub udp_max_concurrent_requests: usize,
    /// Our requests (observations included) pending at once on one connection, and on one
    /// UDP socket for all its peers; further ones wait (within their timeout) until earlier
    /// ones end.
    pub max_pending_requests: usize,
    /// How long one write to a connection may take before the peer counts as gone.
    pub write_timeout: Duration,
    /// Connections (both directions) up at once; listeners refuse more (HTTP 503 for
    /// WebSocket).
    pub max_connections: usize,
    /// Browser origins allowed on the WebSocket server besides the server's own host
    /// (`scheme://host[:port]`; `*` allows every origin, so any web page could reach the
    /// server). Clients that send no Origin (not browsers) are always allowed; others get
    /// HTTP 403.
    pub allowed_origins: Vec<String>,
    /// Largest body reassembled from blocks: responses (client) and requests (server).
    pub max_body_size: usize,
    /// Block1 uploads in progress at once (server); more get 5.03.
    pub max_uploads: usize,
    /// How long an unfinished Block1 upload (or a response being fetched in Block2 pieces) is
    /// kept.
    pub upload_timeout: Duration,
    /// Bytes held at once by all unfinished uploads together, and again by all responses kept
    /// for their later Block2 pieces; beyond it, 5.03.
    pub upload_memory: usize,
    /// Longest a whole block-wise transfer may take (client), besides each request's own
    /// timeout.
    pub transfer_timeout: Duration,
    /// Observers registered with this endpoint's site at once, in all; registrations beyond
    /// it are answered without Observe (RFC 7641 §4.1) and logged.
    pub max_observers: usize,
    /// Observers at once per connection (per peer address over UDP); beyond it, likewise.
    pub max_observers_per_connection: usize,
    /// Over UDP, every this many notifications to an observer one is Confirmable, so that a
    /// client that went away is noticed (RFC 7641 §4.5); 0 sends Confirmable ones only when a
    /// notification ends the observation.
    pub observe_con_every: u32,
    /// Client: when a notification's Max-Age has lapsed by this much without a newer one, the
    /// observation re-registers (RFC 7641 §3.3.1).
    pub observe_max_age_grace: Duration,
    /// Client over UDP: each server gets a socket of its own, connected to it, so that the
    /// operating system's "port unreachable" (nobody listens there) fails its requests at once
    /// with [`Error::Connect`] instead of after every retransmission. Off by default: one
    /// shared socket serves every peer (and answers requests back), but cannot tell which peer
    /// an ICMP error is about. The `coapws` command turns it on for its one-shot requests.
    pub udp_connected_clients: bool,
    /// Server over UDP: how many sockets serve each [`Endpoint::listen_udp`] address, each
    /// with a task of its own, so that UDP uses several cores. They share the address with
    /// SO_REUSEPORT (Linux and other Unix systems) and the system keeps each peer on one of
    /// them (by its address and port), so a peer's exchanges, duplicates and observations
    /// stay with one socket's message layer. Together they hold what one socket would: the
    /// tables of [`UdpConfig`] (peers, duplicates) are split among them, and
    /// [`EndpointConfig::udp_max_concurrent_requests`] counts the requests of all. 0 (the
    /// default): one per core this process may run on; elsewhere than Unix, always one.
    pub udp_server_sockets: usize,
    /// Client: the local address its UDP sockets and TCP connections are bound to (libcoap's
    /// `-a` and `-p`), port 0 for any; `None` lets the system choose. Only servers with an
    /// address of its family (IPv4 or IPv6) are reached, others fail with [`Error::Connect`].
    /// With a port other than 0, one UDP socket sends to every server
    /// ([`EndpointConfig::udp_connected_clients`] does not apply), and TCP connections share
    /// the port (it is bound with `SO_REUSEADDR`).
    pub client_bind: Option<SocketAddr>,
}

impl Default for EndpointConfig {
    fn default() -> EndpointConfig {
        EndpointConfig {
            connection: ConnectionConfig::default(),
            server_keepalive: Some(Duration::from_secs(30)),
            udp: UdpConfig::default(),
            request_timeout: Duration::from_secs(30),
            no_response_wait: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            max_header_bytes: 16 << 10,
            max_headers: 64,
            idle_timeout: None,
            max_concurrent_requests: 256,
            udp_max_concurrent_requests: 4096,
            max_pending_requests: 4096,
            write_timeout: Duration::from_secs(30),
            max_connections: 100_000,
            allowed_origins: Vec::new(),
            max_body_size: 16 << 20,
            max_uploads: 256,
            upload_timeout: Duration::from_secs(60),
            upload_memory: 64 << 20,
            transfer_timeout: Duration::from_secs(300),
            max_observers: 10_000,
            max_observers_per_connection: 64,
            observe_con_every: 10,
            observe_max_age_grace: Duration::from_secs(5),
            udp_connected_clients: false,
            udp_server_sockets: 0,
            client_bind: None,
        }
    }
}

/// With [`EndpointConfig::udp_connected_clients`], at most this many UDP sockets connected to
/// one server each; requests to further servers share one socket.
pub const MAX_CONNECTED_UDP: usize = 256;

impl From<&EndpointConfig> for BlockwiseConfig {
    fn from(c: &EndpointConfig) -> BlockwiseConfig {
        BlockwiseConfig {
            max_body_size: c.max_body_size,
            max_uploads: c.max_uploads,
            upload_timeout: c.upload_timeout,
            upload_memory: c.upload_memory,
        }
    }
}

/// Told how a block-wise transfer advances: bytes done so far and, when known, the total.
#[derive(Clone)]
pub struct Progress(Arc<dyn Fn(u64, Option<u64>) + Send + Sync>);

impl Progress {
    /// Calls `f(done, total)` after every block.
    pub fn new(f: impl Fn(u64, Option<u64>) + Send + Sync + 'static) -> Progress {
        Progress(Arc::new(f))
    }
    pub(crate) fn report(&self, done: usize, total: Option<usize>) {
        (self.0)(done as u64, total.map(|t| t as u64))
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}

/// A request to send to a URI.
#[derive(Clone, Debug)]
pub struct Request {
    /// The method.
    pub method: Code,
    /// Where to.
    pub uri: Uri,
    /// Options besides those the URI gives (Uri-Host, Uri-Port, Uri-Path, Uri-Query).
    pub options: Options,
    /// The payload.
    pub payload: Bytes,
    /// Overrides the endpoint's request timeout.
    pub timeout: Option<Duration>,
    /// Over UDP: Confirmable (the default) or Non-confirmable.
    pub confirmable: bool,
    /// Read the body from this file instead of `payload`, one block at a time when it is
    /// large (see [`Request::payload_file`]).
    pub body_file: Option<std::path::PathBuf>,
    /// Told how a block-wise transfer advances.
    pub progress: Option<Progress>,
    /// Largest block size to use both ways, as its size exponent (0: 16 bytes … 6: 1024
    /// bytes): the response is asked for in Block2 pieces of at most this size, and uploads go
    /// in Block1 pieces no larger (no BERT). `None`: as large as the peer takes.
    pub block_szx: Option<u8>,
    /// The token to send the request with (libcoap's `-T`), instead of one the connection (or
    /// the UDP socket) picks; an empty token counts as none. It must not be the token of
    /// another request outstanding on that connection (towards that peer over UDP): then the
    /// request fails at once with [`Error::Send`] ([`coapws_proto::connection::SendError::TokenInUse`])
    /// or [`Error::Datagram`] ([`coapws_proto::udp::UdpSendError::TokenInUse`]). Every request
    /// of a block-wise transfer carries it, one after the other.
    pub token: Option<Token>,
    /// Never send the Uri-Host and Uri-Port options the URI would give (libcoap's `-U`): the
    /// server then assumes its own name and port. Uri-Host or Uri-Port among
    /// [`Request::options`] still go.
    pub omit_uri_host: bool,
}

impl Request {
    /// A request of `method` to `uri`.
    pub fn new(method: Code, uri: &str) -> Result<Request, Error> {
        Ok(Request {
            method,
            uri: Uri::parse(uri)?,
            options: Options::new(),
            payload: Bytes::new(),
            timeout: None,
            confirmable: true,
            body_file: None,
            progress: None,
            block_szx: None,
            token: None,
            omit_uri_host: false,
        })
    }
    /// A GET of `uri`.
    pub fn get(uri: &str) -> Result<Request, Error> {
        Request::new(Code::GET, uri)
    }
    /// Sets the payload.
    pub fn payload(mut self, payload: impl Into<Bytes>) -> Request {
        self.payload = payload.into();
        self
    }
    /// Sends the contents of the file at `path` as the body, read block by block as the
    /// upload goes (a large file is never held in memory whole).
    pub fn payload_file(mut self, path: impl Into<std::path::PathBuf>) -> Request {
        self.body_file = Some(path.into());
        self
    }
    /// Uses blocks of at most `bytes` (16, 32, …, 1024; rounded down to one of them) both ways.
    pub fn block_size(mut self, bytes: usize) -> Request {
        self.block_szx = Some(coapws_proto::blockwise::fitting_szx(bytes));
        self
    }
    /// Reports the progress of block-wise uploads and downloads to `progress`.
    pub fn on_progress(mut self, progress: Progress) -> Request {
        self.progress = Some(progress);
        self
    }
    /// Sets Content-Format.
    pub fn content_format(mut self, format: u16) -> Request {
        self.options
            .set_uint(OptionNumber::CONTENT_FORMAT, u32::from(format));
        self
    }
    /// Sets Accept.
    pub fn accept(mut self, format: u16) -> Request {
        self.options
            .set_uint(OptionNumber::ACCEPT, u32::from(format));
        self
    }
    /// Adds an option.
    pub fn option(mut self, number: OptionNumber, value: impl Into<Bytes>) -> Request {
        self.options.push(number, value);
        self
    }
    /// Asks the server to suppress responses of the classes in `bits` (RFC 7967: 2 = 2.xx,
    /// 8 = 4.xx, 16 = 5.xx).
    pub fn no_response(mut self, bits: u8) -> Request {
        self.options
            .set_uint(OptionNumber::NO_RESPONSE, u32::from(bits));
        self
    }
    /// Over UDP, sends the request Non-confirmable (no retransmission).
    pub fn non(mut self) -> Request {
        self.confirmable = false;
        self
    }
    /// Sets the timeout of this request.
    pub fn timeout(mut self, t: Duration) -> Request {
        self.timeout = Some(t);
        self
    }
    /// Sends the request with `token` instead of one the connection picks (see
    /// [`Request::token`](Request#structfield.token)).
    pub fn with_token(mut self, token: Token) -> Request {
        self.token = Some(token);
        self
    }
    /// Sends no Uri-Host or Uri-Port from the URI (see
    /// [`Request::omit_uri_host`](Request#structfield.omit_uri_host)).
    pub fn without_uri_host(mut self) -> Request {
        self.omit_uri_host = true;
        self
    }
    /// The message this request is sent as: its token is [`Request::token`](Request#structfield.token)
    /// if set, else empty (chosen later, per connection). A Uri-Host,
    /// Uri-Port, Uri-Path or Uri-Query among [`Request::options`] replaces what the URI gives
    /// for it (to name a virtual host, or a target through a proxy, while the request goes to
    /// the URI's address).
    pub fn to_message(&self) -> Message {
        let mut m = Message::new(self.method).with_payload(self.payload.clone());
        if let Some(t) = &self.token {
            m.token = t.clone();
        }
        m.options = self.uri.request_options();
        if self.omit_uri_host {
            m.options.remove(OptionNumber::URI_HOST);
            m.options.remove(OptionNumber::URI_PORT);
        }
        for n in [
            OptionNumber::URI_HOST,
            OptionNumber::URI_PORT,
            OptionNumber::URI_PATH,
            OptionNumber::URI_QUERY,
        ] {
            if self.options.contains(n) {
                m.options.remove(n);
            }
        }
        for (n, v) in self.options.iter() {
            m.options.push(n, v.clone());
        }
        m
    }
}

/// A response and where it came from.
#[derive(Clone, Debug)]
pub struct Response {
    /// The response message.
    pub message: Message,
    /// The remote that answered (and the connection it lives on).
    pub remote: Remote,
}

impl Response {
    /// The response code.
    pub fn code(&self) -> Code {
        self.message.code
    }
    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.message.payload
    }
}

/// Client and server at once; cheap to clone.
///
/// A server, and role reversal from inside its handler (full programs in `examples/`):
///
/// ```no_run
/// use coapws::proto::{Code, Message};
/// use coapws::{Endpoint, IncomingRequest, Resource, Site};
/// use std::time::Duration;
///
/// # async fn run() -> Result<(), coapws::Error> {
/// let site = Site::new().resource(
///     "/ask-client",
///     Resource::new().get(|req: IncomingRequest| async move {
///         // Reach the client that sent this request, over its own connection.
///         let q = Message::request(Code::GET, "/name");
///         match req.remote.request(q, Duration::from_secs(5)).await {
///             Ok(a) => Message::response(Code::CONTENT, a.payload),
///             Err(e) => Message::response(Code::BAD_GATEWAY, e.to_string()),
///         }
///     }),
/// );
/// let server = Endpoint::builder().site(site).build();
/// let bound = server.listen_ws("[::]:8683".parse().unwrap()).await?;
/// println!("listening on coap+ws://{bound}");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Endpoint {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: EndpointConfig,
    udp_v4: tokio::sync::OnceCell<SocketHandle>,
    udp_v6: tokio::sync::OnceCell<SocketHandle>,
    /// With `udp_connected_clients`: a socket per UDP server, connected to it.
    udp_connected: tokio::sync::Mutex<HashMap<SocketAddr, SocketHandle>>,
    /// Names of UDP servers, resolved.
    pub(crate) udp_names: crate::net::UdpNames,
    pub(crate) tls_client: std::sync::OnceLock<TlsClientConfig>,
    pub(crate) dispatch: Option<Arc<dyn Dispatch>>,
    site: Option<Arc<SiteDispatch>>,
    pub(crate) web: Option<crate::web::WebContent>,
    pub(crate) pool: Pool,
    pub(crate) live: Mutex<HashMap<u64, ConnectionHandle>>,
    /// Accepted connections still in their TLS, HTTP or WebSocket handshake: they count
    /// against `max_connections` too.
    pub(crate) handshaking: Arc<std::sync::atomic::AtomicUsize>,
    pub(crate) listeners: Mutex<Vec<JoinHandle<()>>>,
    /// UDP socket tasks (listening and client sockets), drained at shutdown.
    udp_sockets: Mutex<Vec<(SocketHandle, JoinHandle<()>)>>,
}

impl Drop for Inner {
    /// An endpoint dropped without [`Endpoint::shutdown`] still stops listening, and ends
    /// every connection it had (with Release: the peers finish what is outstanding, then the
    /// connections close within the release timeout).
    fn drop(&mut self) {
        for l in lock(&self.listeners).drain(..) {
            l.abort();
        }
        for (_, t) in lock(&self.udp_sockets).drain(..) {
            t.abort();
        }
        for (_, c) in lock(&self.live).drain() {
            c.release();
        }
    }
}

/// Builds an [`Endpoint`].
#[derive(Default)]
pub struct EndpointBuilder {
    config: EndpointConfig,
    site: Option<Site>,
    tls_client: Option<TlsClientConfig>,
    web: Option<crate::web::WebContent>,
}

impl EndpointBuilder {
    /// Serves `site` on every connection (incoming or outgoing).
    pub fn site(mut self, site: Site) -> EndpointBuilder {
        self.site = Some(site);
        self
    }
    /// What TLS clients trust (default: the system's roots).
    pub fn tls_client(mut self, trust: TlsClientConfig) -> EndpointBuilder {
        self.tls_client = Some(trust);
        self
    }
    /// Serves `content` on every path of the WebSocket listeners but `/.well-known/coap`
    /// (a website on the same port; without it those paths get 404).
    pub fn web(mut self, content: crate::web::WebContent) -> EndpointBuilder {
        self.web = Some(content);
        self
    }
    /// Replaces the settings.
    pub fn config(mut self, config: EndpointConfig) -> EndpointBuilder {
        self.config = config;
        self
    }
    /// The endpoint.
    pub fn build(self) -> Endpoint {
        let observe = ObserveConfig {
            max_observers: self.config.max_observers,
            max_per_link: self.config.max_observers_per_connection,
            con_every: self.config.observe_con_every,
        };
        let site = self.site.map(|site| {
            Arc::new(SiteDispatch::new(
                site,
                BlockwiseConfig::from(&self.config),
                observe,
            ))
        });
        let dispatch = site.clone().map(|s| s as Arc<dyn Dispatch>);
        let tls_client = std::sync::OnceLock::new();
        if let Some(t) = self.tls_client {
            let _ = tls_client.set(t);
        }
        Endpoint {
            inner: Arc::new(Inner {
                udp_v4: tokio::sync::OnceCell::new(),
                udp_v6: tokio::sync::OnceCell::new(),
                udp_connected: tokio::sync::Mutex::new(HashMap::new()),
                udp_names: crate::net::UdpNames::default(),
                config: self.config,
                tls_client,
                dispatch,
                site,
                web: self.web,
                pool: Pool::default(),
                live: Mutex::new(HashMap::new()),
                handshaking: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
                listeners: Mutex::new(Vec::new()),
                udp_sockets: Mutex::new(Vec::new()),
            }),
        }
    }
}

/// What the sockets serving one UDP address share: each its part of the message layer's
/// tables (peers, duplicates), so that together they hold what one would, and the count of
/// requests being handled, held to [`EndpointConfig::udp_max_concurrent_requests`] in all.
pub(crate) struct UdpShare {
    pub(crate) config: UdpConfig,
    pub(crate) running: Arc<std::sync::atomic::AtomicUsize>,
}

impl UdpShare {
    /// A socket that serves its address alone.
    pub(crate) fn whole(c: &EndpointConfig) -> UdpShare {
        UdpShare::part(c, 1, Arc::default())
    }
    /// One of `n` sockets of an address, counting its running requests in `running`.
    pub(crate) fn part(
        c: &EndpointConfig,
        n: usize,
        running: Arc<std::sync::atomic::AtomicUsize>,
    ) -> UdpShare {
        let mut config = c.udp.clone();
        let n = n.max(1);
        config.max_peers = config.max_peers.div_ceil(n).max(1);
        config.max_dedup_entries = config.max_dedup_entries.div_ceil(n).max(1);
        config.max_dedup_bytes = config.max_dedup_bytes.div_ceil(n).max(1);
        UdpShare { config, running }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Endpoint {
    /// A builder.
    pub fn builder() -> EndpointBuilder {
        EndpointBuilder::default()
    }
    /// A client-only endpoint with default settings (requests to it get 5.01).
    pub fn client() -> Endpoint {
        Endpoint::builder().build()
    }
    /// The settings.
    pub fn config(&self) -> &EndpointConfig {
        &self.inner.config
    }

    /// The remote for `uri` (a pooled connection, or a UDP socket), within `limit`: a host
    /// that stalls the TCP, TLS or WebSocket handshake costs no more than the request's own
    /// timeout.
    pub(crate) async fn remote_within(
        &self,
        uri: &Uri,
        limit: Option<Duration>,
    ) -> Result<Remote, Error> {
        let limit = limit.unwrap_or(self.inner.config.request_timeout);
        match tokio::time::timeout(limit, self.remote_for(uri)).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout),
        }
    }

    /// The remote for `uri`: a pooled connection, or this endpoint's UDP socket.
    pub(crate) async fn remote_for(&self, uri: &Uri) -> Result<Remote, Error> {
        match uri.scheme {
            Scheme::Coap => self.udp_remote(uri).await,
            _ => {
                let key = PoolKey::of(uri);
                self.inner
                    .pool
                    .get(&key, || self.connect(uri, key.clone()))
                    .await
            }
        }
    }

    /// GETs `uri`.
    pub async fn get(&self, uri: &str) -> Result<Response, Error> {
        self.send(Request::get(uri)?).await
    }

    pub(crate) async fn request_on(
        &self,
        remote: &Remote,
        message: Message,
        wait: crate::transfer::Wait,
        confirmable: bool,
    ) -> Result<Response, Error> {
        let c = &self.inner.config;
        let no_response = message.options.no_response() != 0;
        let timeout = wait.per_request.unwrap_or(c.request_timeout);
        // A response may legitimately never come: do not wait the full timeout for it.
        let own = if no_response {
            timeout.min(c.no_response_wait)
        } else {
            timeout
        };
        // Never past the whole transfer's deadline.
        let limit = wait.deadline.map_or(own, |d| {
            own.min(d.saturating_duration_since(Instant::now()))
        });
        let cut = limit < own;
        match tokio::time::timeout(limit, remote.send(message, confirmable)).await {
            Ok(Ok(message)) => Ok(Response {
                message,
                remote: remote.clone(),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) if no_response && !cut => Err(Error::NoResponse),
            Err(_) => Err(Error::Timeout),
        }
    }

    async fn connect(&self, uri: &Uri, key: PoolKey) -> Result<Remote, Error> {
        let scheme = uri.scheme;
        if !scheme.is_reliable() {
            return Err(Error::UnsupportedScheme(scheme));
        }
        let c = &self.inner.config;
        let tcp = crate::net::connect_tcp(
            &uri.host,
            uri.port_or_default(),
            c.connect_timeout,
            c.client_bind,
        )
        .await?;
        let (local, peer) = crate::net::addrs(&tcp, &uri.authority())?;
        let (host, port) = (uri.host.clone(), uri.port_or_default());
        let remote = move |connection| Remote {
            scheme,
            peer_addr: peer,
            local_addr: local,
            host,
            port,
            side: Side::Client,
            link: Link::Stream(connection),
        };
        let framing = if scheme.is_websocket() {
            Framing::WebSocket
        } else {
            Framing::Tcp
        };
        let core = Connection::new(framing, c.connection.clone(), Instant::now());
        let max = c.connection.max_message_size as usize;
        let key = Some(key);
        let weak = Arc::downgrade(&self.inner);
        let inner = &self.inner;
        let started = match scheme {
            Scheme::CoapTcp => start_connection(inner, StreamIo::new(tcp), core, remote, key, weak),
            Scheme::CoapWs => {
                let io = ws::client_handshake(tcp, uri, max, c.connect_timeout).await?;
                start_connection(inner, io, core, remote, key, weak)
            }
            Scheme::CoapsTcp => {
                let tls = self.tls_connect(tcp, uri, crate::tls::ALPN_COAP).await?;
                start_connection(inner, StreamIo::new(tls), core, remote, key, weak)
            }
            _ => {
                let tls = self
                    .tls_connect(tcp, uri, crate::tls::ALPN_HTTP_1_1)
                    .await?;
                let io = ws::client_handshake(tls, uri, max, c.connect_timeout).await?;
                start_connection(inner, io, core, remote, key, weak)
            }
        };
        Ok(started.1)
    }

    /// A remote at `uri`'s address, through this endpoint's client UDP socket for its address
    /// family (opened on first use; it also serves the endpoint's site).
    async fn udp_remote(&self, uri: &Uri) -> Result<Remote, Error> {
        let port = uri.port_or_default();
        let bind = self.inner.config.client_bind;
        let addr = self.inner.udp_names.address(&uri.host, port, bind).await?;
        // A fixed local port can be bound once: then the shared socket serves every server.
        if self.inner.config.udp_connected_clients
            && bind.is_none_or(|b| b.port() == 0)
            && let Some(socket) = self.connected_udp(addr).await?
        {
            return Ok(Remote {
                scheme: Scheme::Coap,
                peer_addr: addr,
                local_addr: socket.local_addr(),
                host: uri.host.clone(),
                port,
                side: Side::Client,
                link: Link::Datagram(socket, addr),
            });
        }
        let slot = if addr.is_ipv4() {
            &self.inner.udp_v4
        } else {
            &self.inner.udp_v6
        };
        let socket = slot
            .get_or_try_init(|| async { self.open_udp(self.client_addr(addr)).await })
            .await?
            .clone();
        let local = socket.local_addr();
        Ok(Remote {
            scheme: Scheme::Coap,
            peer_addr: addr,
            local_addr: local,
            host: uri.host.clone(),
            port,
            side: Side::Client,
            link: Link::Datagram(socket, addr),
        })
    }

    /// The socket of this endpoint connected to `peer` (opened on first use); `None` when
    /// [`MAX_CONNECTED_UDP`] are open already (a proxy asked for many targets): the shared
    /// socket serves the rest, without failing fast.
    async fn connected_udp(&self, peer: SocketAddr) -> Result<Option<SocketHandle>, Error> {
        let mut sockets = self.inner.udp_connected.lock().await;
        if let Some(s) = sockets.get(&peer).filter(|s| s.is_alive()) {
            return Ok(Some(s.clone()));
        }
        sockets.retain(|_, s| s.is_alive());
        if sockets.len() >= MAX_CONNECTED_UDP {
            return Ok(None);
        }
        let any = self.client_addr(peer);
        let socket = tokio::net::UdpSocket::bind(any)
            .await
            .map_err(|e| listen_error(any, e))?;
        socket
            .connect(peer)
            .await
            .map_err(|e| Error::connect(peer.to_string(), e))?;
        let share = UdpShare::whole(&self.inner.config);
        let handle = self.start_udp_with(socket, any, Some(peer), share)?;
        sockets.insert(peer, handle.clone());
        Ok(Some(handle))
    }

    /// The address a client UDP socket for `peer` is bound to: [`EndpointConfig::client_bind`]
    /// (of `peer`'s family: resolving made sure), else any address of that family.
    fn client_addr(&self, peer: SocketAddr) -> SocketAddr {
        match self.inner.config.client_bind {
            Some(b) => b,
            None if peer.is_ipv4() => "0.0.0.0:0".parse().expect("address"),
            None => "[::]:0".parse().expect("address"),
        }
    }

    pub(crate) async fn open_udp(&self, addr: SocketAddr) -> Result<SocketHandle, Error> {
        let socket = tokio::net::UdpSocket::bind(addr)
            .await
            .map_err(|e| listen_error(addr, e))?;
        self.start_udp(socket, addr)
    }

    pub(crate) fn start_udp(
        &self,
        socket: tokio::net::UdpSocket,
        addr: SocketAddr,
    ) -> Result<SocketHandle, Error> {
        self.start_udp_with(socket, addr, None, UdpShare::whole(&self.inner.config))
    }

    /// Starts `socket` as one of several serving one address: its part of the address's
    /// tables, and the address's budget of running requests, shared.
    pub(crate) fn start_udp_share(
        &self,
        socket: tokio::net::UdpSocket,
        addr: SocketAddr,
        share: UdpShare,
    ) -> Result<SocketHandle, Error> {
        self.start_udp_with(socket, addr, None, share)
    }

    fn start_udp_with(
        &self,
        socket: tokio::net::UdpSocket,
        addr: SocketAddr,
        connected: Option<SocketAddr>,
        share: UdpShare,
    ) -> Result<SocketHandle, Error> {
        let c = &self.inner.config;
        let (handle, task) = crate::transport::udp::spawn(
            socket,
            share.config,
            self.inner.dispatch.clone(),
            crate::transport::udp::RequestLimits {
                per_peer: c.max_concurrent_requests,
                total: c.udp_max_concurrent_requests,
                running: share.running,
                max_pending: c.max_pending_requests,
            },
            connected,
        )
        .map_err(|e| listen_error(addr, e))?;
        let mut sockets = lock(&self.inner.udp_sockets);
        sockets.retain(|(_, t)| !t.is_finished());
        sockets.push((handle.clone(), task));
        Ok(handle)
    }

    async fn tls_connect(
        &self,
        tcp: tokio::net::TcpStream,
        uri: &Uri,
        alpn: &[u8],
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, Error> {
        let trust = self.inner.tls_client.get_or_init(TlsClientConfig::system);
        let connector = tokio_rustls::TlsConnector::from(trust.client_config(alpn)?);
        let name = crate::tls::server_name(&uri.host)?;
        let handshake = connector.connect(name, tcp);
        match tokio::time::timeout(self.inner.config.connect_timeout, handshake).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(Error::Handshake {
                addr: uri.authority(),
                reason: crate::tls::describe_handshake_error(&e),
            }),
            Err(_) => Err(Error::Handshake {
                addr: uri.authority(),
                reason: "TLS handshake timed out".into(),
            }),
        }
    }

    /// Number of observers registered with this endpoint's site.
    pub fn observer_count(&self) -> usize {
        self.inner.site.as_ref().map_or(0, |s| s.observer_count())
    }

    /// Number of connections up (both directions).
    pub fn connection_count(&self) -> usize {
        lock(&self.inner.live).len()
    }

    /// Number of origins the client pool holds a connection (or an attempt) for.
    pub fn pooled_origins(&self) -> usize {
        self.inner.pool.len()
    }

    /// Graceful shutdown: stops listening, sends Release on every connection, lets every UDP
    /// socket finish the requests its handlers are answering (new ones get 5.03, our own
    /// pending ones fail with [`Error::Shutdown`]), and waits until all that is done (at most
    /// the release timeout plus a second).
    pub async fn shutdown(&self) {
        for l in lock(&self.inner.listeners).drain(..) {
            l.abort();
        }
        let handles: Vec<ConnectionHandle> = lock(&self.inner.live).values().cloned().collect();
        for h in &handles {
            h.release();
        }
        let sockets: Vec<SocketHandle> = lock(&self.inner.udp_sockets)
            .iter()
            .map(|(h, _)| h.clone())
            .collect();
        let wait = self.inner.config.connection.release_timeout + Duration::from_secs(1);
        let connections = futures_util::future::join_all(handles.iter().map(|h| h.closed()));
        let udp = futures_util::future::join_all(sockets.iter().map(|s| s.drain()));
        if tokio::time::timeout(wait, futures_util::future::join(connections, udp))
            .await
            .is_err()
        {
            warn!("some connections or UDP exchanges did not finish in time");
        }
        for (_, t) in lock(&self.inner.udp_sockets).drain(..) {
            t.abort();
        }
    }
}

pub(crate) fn start_connection<T: connection::FrameIo>(
    inner: &Arc<Inner>,
    io: T,
    core: Connection,
    make_remote: impl FnOnce(ConnectionHandle) -> Remote,
    pool_key: Option<PoolKey>,
    weak: Weak<Inner>,
) -> (ConnectionHandle, Remote) {
    let on_close = Box::new(move |id: u64, hold_off: Option<Instant>| {
        if let Some(inner) = weak.upgrade() {
            lock(&inner.live).remove(&id);
            if let Some(key) = &pool_key {
                inner.pool.remove(key, id);
                if let Some(until) = hold_off {
                    inner.pool.hold_off(key, until);
                }
            }
        }
    });
    let (handle, remote) = connection::spawn(
        io,
        core,
        make_remote,
        inner.dispatch.clone(),
        DriverConfig {
            max_concurrent_requests: inner.config.max_concurrent_requests,
            max_pending_requests: inner.config.max_pending_requests,
            write_timeout: inner.config.write_timeout,
            idle_timeout: inner.config.idle_timeout,
        },
        Some(on_close),
    );
    lock(&inner.live).insert(handle.id(), handle.clone());
    (handle, remote)
}
