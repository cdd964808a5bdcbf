//! [`Endpoint`]: client and server at once.
//!
//! As a client it turns a [`Request`] for a URI into a response over a pooled connection. As a
//! server it listens (WebSocket now; TCP, TLS and UDP as they come) and answers with its
//! [`Site`]. On every connection, whoever opened it, both roles work: a server reaches a client
//! that connected to it through the [`Remote`] of that client's request
//! ([`Endpoint::request_to`]), and a client's site answers the server's requests.

use crate::connection::{self, BoxFuture, ConnectionHandle, Dispatch, DriverConfig};
use crate::error::Error;
use crate::pool::{Pool, PoolKey};
use crate::remote::{Remote, Side};
use crate::site::{IncomingRequest, Site};
use crate::transport::tcp::StreamIo;
use crate::transport::ws::{self, WsServerPolicy};
use bytes::Bytes;
use coapws_proto::blockwise::{Block2Collector, Collected};
use coapws_proto::code::Code;
use coapws_proto::connection::{Connection, ConnectionConfig, Framing};
use coapws_proto::message::Message;
use coapws_proto::option::{OptionNumber, Options};
use coapws_proto::uri::{Host, Scheme, Uri};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// Settings of an endpoint. Every limit is here.
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    /// Settings of each RFC 8323 connection (our Max-Message-Size, CSM and release timeouts).
    pub connection: ConnectionConfig,
    /// How long a request waits for its response by default.
    pub request_timeout: Duration,
    /// How long a request that carries No-Response waits before concluding none will come.
    pub no_response_wait: Duration,
    /// Time allowed for TCP connect plus handshake.
    pub connect_timeout: Duration,
    /// Incoming requests handled at once per connection; beyond it, 5.03.
    pub max_concurrent_requests: usize,
    /// Origins allowed on the WebSocket server; `None` allows all.
    pub allowed_origins: Option<Vec<String>>,
    /// Largest response body a client reassembles from blocks.
    pub max_body_size: usize,
}

impl Default for EndpointConfig {
    fn default() -> EndpointConfig {
        EndpointConfig {
            connection: ConnectionConfig::default(),
            request_timeout: Duration::from_secs(30),
            no_response_wait: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(10),
            max_concurrent_requests: 256,
            allowed_origins: None,
            max_body_size: 16 << 20,
        }
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
    /// Sets the timeout of this request.
    pub fn timeout(mut self, t: Duration) -> Request {
        self.timeout = Some(t);
        self
    }
    /// The message this request is sent as (token chosen later, per connection).
    pub fn to_message(&self) -> Message {
        let mut m = Message::new(self.method).with_payload(self.payload.clone());
        m.options = self.uri.request_options();
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
    inner: Arc<Inner>,
}

struct Inner {
    config: EndpointConfig,
    dispatch: Option<Arc<dyn Dispatch>>,
    pool: Pool,
    live: Mutex<HashMap<u64, ConnectionHandle>>,
    listeners: Mutex<Vec<JoinHandle<()>>>,
}

/// Builds an [`Endpoint`].
#[derive(Default)]
pub struct EndpointBuilder {
    config: EndpointConfig,
    site: Option<Site>,
}

impl EndpointBuilder {
    /// Serves `site` on every connection (incoming or outgoing).
    pub fn site(mut self, site: Site) -> EndpointBuilder {
        self.site = Some(site);
        self
    }
    /// Replaces the settings.
    pub fn config(mut self, config: EndpointConfig) -> EndpointBuilder {
        self.config = config;
        self
    }
    /// The endpoint.
    pub fn build(self) -> Endpoint {
        let dispatch = self.site.map(|site| {
            Arc::new(SiteDispatch {
                site: Arc::new(site),
            }) as Arc<dyn Dispatch>
        });
        Endpoint {
            inner: Arc::new(Inner {
                config: self.config,
                dispatch,
                pool: Pool::default(),
                live: Mutex::new(HashMap::new()),
                listeners: Mutex::new(Vec::new()),
            }),
        }
    }
}

struct SiteDispatch {
    site: Arc<Site>,
}

/// RFC 7967 §2: is a response of `code` suppressed by No-Response `bits`?
fn suppressed(bits: u8, code: Code) -> bool {
    match code.class() {
        2 => bits & 2 != 0,
        4 => bits & 8 != 0,
        5 => bits & 16 != 0,
        _ => false,
    }
}

impl Dispatch for SiteDispatch {
    fn dispatch(&self, request: IncomingRequest) -> BoxFuture<Option<Message>> {
        let site = self.site.clone();
        Box::pin(async move {
            let bits = request.message.options.no_response();
            let response = site.handle(request).await;
            (!suppressed(bits, response.code)).then_some(response)
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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

    /// Sends `request` and waits for its response.
    pub async fn send(&self, request: Request) -> Result<Response, Error> {
        let key = PoolKey::of(&request.uri);
        let remote = self
            .inner
            .pool
            .get(&key, || self.connect(&request.uri, key.clone()))
            .await?;
        let mut message = request.to_message();
        let mut blocks = Block2Collector::new(self.inner.config.max_body_size);
        loop {
            let response = self
                .request_on(&remote, message.clone(), request.timeout)
                .await?;
            if !response.code().is_success() {
                return Ok(response);
            }
            // Follow Block2 until the representation is whole (RFC 7959 §2.4).
            match blocks.feed(response.message)? {
                Collected::Complete(m) => {
                    return Ok(Response {
                        message: m,
                        remote: response.remote,
                    });
                }
                Collected::Next(block) => message.options.set(OptionNumber::BLOCK2, block.encode()),
            }
        }
    }

    /// GETs `uri`.
    pub async fn get(&self, uri: &str) -> Result<Response, Error> {
        self.send(Request::get(uri)?).await
    }

    /// Sends `message` (a request; its token is chosen here) to `remote` over the connection
    /// the remote lives on. This is how a server reaches a WebSocket client that connected to
    /// it: use the [`IncomingRequest::remote`] of one of its requests.
    pub async fn request_to(&self, remote: &Remote, message: Message) -> Result<Response, Error> {
        self.request_on(remote, message, None).await
    }

    async fn request_on(
        &self,
        remote: &Remote,
        message: Message,
        timeout: Option<Duration>,
    ) -> Result<Response, Error> {
        let c = &self.inner.config;
        let no_response = message.options.no_response() != 0;
        let timeout = timeout.unwrap_or(c.request_timeout);
        // A response may legitimately never come: do not wait the full timeout for it.
        let wait = if no_response {
            timeout.min(c.no_response_wait)
        } else {
            timeout
        };
        match tokio::time::timeout(wait, remote.connection.request(message)).await {
            Ok(Ok(message)) => Ok(Response {
                message,
                remote: remote.clone(),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) if no_response => Err(Error::NoResponse),
            Err(_) => Err(Error::Timeout),
        }
    }

    async fn connect(&self, uri: &Uri, key: PoolKey) -> Result<Remote, Error> {
        let c = &self.inner.config;
        let weak = Arc::downgrade(&self.inner);
        let (host, port, scheme) = (uri.host.clone(), uri.port_or_default(), uri.scheme);
        let remote = move |peer_addr, local_addr| {
            move |connection| Remote {
                scheme,
                peer_addr,
                local_addr,
                host,
                port,
                side: Side::Client,
                connection,
            }
        };
        let now = Instant::now();
        match scheme {
            Scheme::CoapWs => {
                let max = c.connection.max_message_size as usize;
                let (io, local, peer) = ws::connect(uri, max, c.connect_timeout).await?;
                let core = Connection::new(Framing::WebSocket, c.connection.clone(), now);
                Ok(start_connection(&self.inner, io, core, remote(peer, local), Some(key), weak).1)
            }
            Scheme::CoapTcp => {
                let stream = crate::net::connect_tcp(&uri.host, port, c.connect_timeout).await?;
                let (local, peer) = crate::net::addrs(&stream, &uri.authority())?;
                let core = Connection::new(Framing::Tcp, c.connection.clone(), now);
                let io = StreamIo::new(stream);
                Ok(start_connection(&self.inner, io, core, remote(peer, local), Some(key), weak).1)
            }
            other => Err(Error::UnsupportedScheme(other)),
        }
    }

    /// Listens for CoAP over WebSockets on `addr` (port 0 picks one); returns the bound address.
    pub async fn listen_ws(&self, addr: SocketAddr) -> Result<SocketAddr, Error> {
        let listener = bind(addr).await?;
        let bound = listener.local_addr().map_err(|e| listen_error(addr, e))?;
        let c = &self.inner.config;
        let policy = Arc::new(WsServerPolicy {
            allowed_origins: c.allowed_origins.clone(),
            max_message_size: c.connection.max_message_size as usize,
            header_timeout: Duration::from_secs(10),
        });
        let weak = Arc::downgrade(&self.inner);
        let task = tokio::spawn(accept_ws(listener, policy, weak));
        lock(&self.inner.listeners).push(task);
        info!(%bound, "listening on coap+ws");
        Ok(bound)
    }

    /// Listens for CoAP over TCP on `addr` (port 0 picks one); returns the bound address.
    pub async fn listen_tcp(&self, addr: SocketAddr) -> Result<SocketAddr, Error> {
        let listener = bind(addr).await?;
        let bound = listener.local_addr().map_err(|e| listen_error(addr, e))?;
        let task = tokio::spawn(accept_tcp(listener, Arc::downgrade(&self.inner)));
        lock(&self.inner.listeners).push(task);
        info!(%bound, "listening on coap+tcp");
        Ok(bound)
    }

    /// Number of connections up (both directions).
    pub fn connection_count(&self) -> usize {
        lock(&self.inner.live).len()
    }

    /// Number of origins the client pool holds a connection (or an attempt) for.
    pub fn pooled_origins(&self) -> usize {
        self.inner.pool.len()
    }

    /// Graceful shutdown: stops listening, sends Release on every connection, and waits until
    /// they are closed (at most the release timeout plus a second).
    pub async fn shutdown(&self) {
        for l in lock(&self.inner.listeners).drain(..) {
            l.abort();
        }
        let handles: Vec<ConnectionHandle> = lock(&self.inner.live).values().cloned().collect();
        for h in &handles {
            h.release();
        }
        let wait = self.inner.config.connection.release_timeout + Duration::from_secs(1);
        let all = futures_util::future::join_all(handles.iter().map(|h| h.closed()));
        if tokio::time::timeout(wait, all).await.is_err() {
            warn!("some connections did not close in time");
        }
    }
}

fn start_connection<T: connection::FrameIo>(
    inner: &Arc<Inner>,
    io: T,
    core: Connection,
    make_remote: impl FnOnce(ConnectionHandle) -> Remote,
    pool_key: Option<PoolKey>,
    weak: Weak<Inner>,
) -> (ConnectionHandle, Remote) {
    let on_close = Box::new(move |id: u64| {
        if let Some(inner) = weak.upgrade() {
            lock(&inner.live).remove(&id);
            if let Some(key) = &pool_key {
                inner.pool.remove(key, id);
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
        },
        Some(on_close),
    );
    lock(&inner.live).insert(handle.id(), handle.clone());
    (handle, remote)
}

fn listen_error(addr: SocketAddr, e: std::io::Error) -> Error {
    Error::Listen {
        addr: addr.to_string(),
        source: Arc::new(e),
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| listen_error(addr, e))
}

/// Accepts one TCP connection, backing off on errors such as running out of descriptors.
async fn accept(listener: &TcpListener) -> (tokio::net::TcpStream, SocketAddr, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                match stream.local_addr() {
                    Ok(local) => return (stream, peer, local),
                    Err(e) => warn!(error = %e, "accepted socket has no local address"),
                }
            }
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn server_remote(
    scheme: Scheme,
    peer_addr: SocketAddr,
    local_addr: SocketAddr,
    host: Host,
    port: u16,
) -> impl FnOnce(ConnectionHandle) -> Remote {
    move |connection| Remote {
        scheme,
        peer_addr,
        local_addr,
        host,
        port,
        side: Side::Server,
        connection,
    }
}

async fn accept_tcp(listener: TcpListener, weak: Weak<Inner>) {
    loop {
        let (stream, peer, local) = accept(&listener).await;
        let Some(inner) = weak.upgrade() else { return };
        let core = Connection::new(
            Framing::Tcp,
            inner.config.connection.clone(),
            Instant::now(),
        );
        // RFC 8323 §8.1: the default Uri-Host is the destination IP literal.
        let remote = server_remote(
            Scheme::CoapTcp,
            peer,
            local,
            Host::from(local.ip()),
            local.port(),
        );
        start_connection(
            &inner,
            StreamIo::new(stream),
            core,
            remote,
            None,
            weak.clone(),
        );
    }
}

async fn accept_ws(listener: TcpListener, policy: Arc<WsServerPolicy>, weak: Weak<Inner>) {
    loop {
        let (stream, peer, local) = accept(&listener).await;
        let weak2 = weak.clone();
        let on_upgrade: ws::OnUpgrade<ws::Upgraded> = Arc::new(move |io, host, port| {
            let Some(inner) = weak2.upgrade() else { return };
            let core = Connection::new(
                Framing::WebSocket,
                inner.config.connection.clone(),
                Instant::now(),
            );
            let remote = server_remote(Scheme::CoapWs, peer, local, host, port);
            start_connection(&inner, io, core, remote, None, weak2.clone());
        });
        tokio::spawn(ws::serve_http(
            stream,
            policy.clone(),
            Scheme::CoapWs,
            peer,
            on_upgrade,
        ));
    }
}
