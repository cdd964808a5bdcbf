//! The server side of an [`Endpoint`]: listening sockets for every scheme, the accept loop,
//! TLS handshakes, the connection limit, and handing each accepted connection to a
//! connection task (WebSocket through the HTTP upgrade in [`crate::transport::ws`]).

use crate::endpoint::{Endpoint, Inner, UdpShare, lock, start_connection};
use crate::error::Error;
use crate::link::ConnectionHandle;
use crate::net::listen_error;
use crate::remote::{Link, Remote, Side};
use crate::tls::TlsIdentity;
use crate::transport::tcp::StreamIo;
use crate::transport::ws::{self, WsServerPolicy};
use coapws_proto::connection::{Connection, ConnectionConfig, Framing};
use coapws_proto::uri::{Host, Scheme};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tracing::{info, warn};

impl Endpoint {
    /// Listens for CoAP over UDP on `addr` (port 0 picks one); returns the bound address.
    /// Several sockets share it when [`crate::EndpointConfig::udp_server_sockets`] asks.
    pub async fn listen_udp(&self, addr: SocketAddr) -> Result<SocketAddr, Error> {
        let n = udp_server_sockets(self.config().udp_server_sockets);
        if n <= 1 {
            let handle = self.open_udp(addr).await?;
            let bound = handle.local_addr();
            info!(%bound, "listening on coap (UDP)");
            return Ok(bound);
        }
        // The first socket picks the port (when 0); the others join it.
        let first = reuse_port_socket(addr).map_err(|e| listen_error(addr, e))?;
        let bound = first.local_addr().map_err(|e| listen_error(addr, e))?;
        let mut sockets = vec![first];
        for _ in 1..n {
            sockets.push(reuse_port_socket(bound).map_err(|e| listen_error(bound, e))?);
        }
        let running = Arc::default();
        for socket in sockets {
            let share = UdpShare::part(self.config(), n, Arc::clone(&running));
            self.start_udp_share(socket, bound, share)?;
        }
        info!(%bound, sockets = n, "listening on coap (UDP)");
        Ok(bound)
    }

    /// Listens for CoAP over WebSockets on `addr` (port 0 picks one); returns the bound address.
    pub async fn listen_ws(&self, addr: SocketAddr) -> Result<SocketAddr, Error> {
        self.listen(addr, Scheme::CoapWs, None).await
    }

    /// Listens for CoAP over secure WebSockets (`coaps+ws`) on `addr` with `identity`.
    pub async fn listen_wss(
        &self,
        addr: SocketAddr,
        identity: &TlsIdentity,
    ) -> Result<SocketAddr, Error> {
        let tls = identity.server_config(crate::tls::ALPN_HTTP_1_1)?;
        self.listen(addr, Scheme::CoapsWs, Some(tls)).await
    }

    /// Listens for CoAP over TCP on `addr` (port 0 picks one); returns the bound address.
    pub async fn listen_tcp(&self, addr: SocketAddr) -> Result<SocketAddr, Error> {
        self.listen(addr, Scheme::CoapTcp, None).await
    }

    /// Listens for CoAP over TLS (`coaps+tcp`) on `addr` with `identity`. Clients must offer
    /// ALPN `coap`, except on the default port 5684 where its absence is tolerated (RFC 8323
    /// §8.2).
    pub async fn listen_tls(
        &self,
        addr: SocketAddr,
        identity: &TlsIdentity,
    ) -> Result<SocketAddr, Error> {
        let tls = identity.server_config(crate::tls::ALPN_COAP)?;
        self.listen(addr, Scheme::CoapsTcp, Some(tls)).await
    }

    /// Serves `scheme` on a listening socket bound elsewhere (inherited from a service
    /// manager: socket activation); `identity` for the secure schemes. Returns its address.
    pub fn listen_on(
        &self,
        listener: std::net::TcpListener,
        scheme: Scheme,
        identity: Option<&TlsIdentity>,
    ) -> Result<SocketAddr, Error> {
        let addr = listener
            .local_addr()
            .map_err(|e| listen_error("inherited socket", e))?;
        let tls = match (scheme, identity) {
            (Scheme::CoapsWs, Some(i)) => Some(i.server_config(crate::tls::ALPN_HTTP_1_1)?),
            (Scheme::CoapsTcp, Some(i)) => Some(i.server_config(crate::tls::ALPN_COAP)?),
            (Scheme::CoapWs | Scheme::CoapTcp, _) => None,
            _ => return Err(Error::UnsupportedScheme(scheme)),
        };
        listener
            .set_nonblocking(true)
            .map_err(|e| listen_error(addr, e))?;
        let listener = TcpListener::from_std(listener).map_err(|e| listen_error(addr, e))?;
        self.serve_listener(listener, scheme, tls)
    }

    /// Serves CoAP over UDP on a socket bound elsewhere (socket activation).
    pub fn listen_udp_on(&self, socket: std::net::UdpSocket) -> Result<SocketAddr, Error> {
        let addr = socket
            .local_addr()
            .map_err(|e| listen_error("inherited socket", e))?;
        socket
            .set_nonblocking(true)
            .map_err(|e| listen_error(addr, e))?;
        let socket = tokio::net::UdpSocket::from_std(socket).map_err(|e| listen_error(addr, e))?;
        let handle = self.start_udp(socket, addr)?;
        let bound = handle.local_addr();
        info!(%bound, "listening on coap (UDP), inherited");
        Ok(bound)
    }

    async fn listen(
        &self,
        addr: SocketAddr,
        scheme: Scheme,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Result<SocketAddr, Error> {
        let listener = bind(addr).await?;
        self.serve_listener(listener, scheme, tls)
    }

    fn serve_listener(
        &self,
        listener: TcpListener,
        scheme: Scheme,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Result<SocketAddr, Error> {
        let bound = listener
            .local_addr()
            .map_err(|e| listen_error("listener", e))?;
        let c = &self.inner.config;
        let policy = Arc::new(WsServerPolicy {
            origins: crate::web::OriginPolicy::allowing(&c.allowed_origins),
            web: self.inner.web.clone(),
            max_message_size: c.connection.max_message_size as usize,
            header_timeout: c.handshake_timeout,
            max_header_bytes: c.max_header_bytes,
            max_headers: c.max_headers,
        });
        let server = Arc::new(Listener {
            scheme,
            tls: tls.map(tokio_rustls::TlsAcceptor::from),
            policy,
            inner: Arc::downgrade(&self.inner),
        });
        let task = tokio::spawn(server.run(listener));
        lock(&self.inner.listeners).push(task);
        info!(%bound, %scheme, "listening");
        Ok(bound)
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
        link: Link::Stream(connection),
    }
}

/// Turns a connection away at the connection limit: plain WebSocket clients get an HTTP 503,
/// others a closed socket (nothing else can be said before a TLS handshake or a CSM).
async fn refuse_at_capacity(mut tcp: tokio::net::TcpStream, http: bool) {
    use tokio::io::AsyncWriteExt;
    if http {
        let answer = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        let _ = tokio::time::timeout(Duration::from_secs(1), tcp.write_all(answer)).await;
    }
    let _ = tcp.shutdown().await;
}

/// The number of sockets to serve a UDP address with: `asked`, or one per core this process
/// may run on for 0; one where SO_REUSEPORT is not available.
fn udp_server_sockets(asked: usize) -> usize {
    if !cfg!(unix) {
        return 1;
    }
    match asked {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n.min(256),
    }
}

/// A UDP socket bound to `addr` with SO_REUSEPORT, so that several can share it.
#[cfg(unix)]
fn reuse_port_socket(addr: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    tokio::net::UdpSocket::from_std(socket.into())
}

#[cfg(not(unix))]
fn reuse_port_socket(addr: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(socket)
}

/// One accepted connection in its handshake, counted in `Inner::handshaking` while it lives
/// (without keeping the endpoint alive).
struct Handshaking(Arc<std::sync::atomic::AtomicUsize>);

impl Handshaking {
    /// Counts a new handshake; also returns how many were counted before it (still going, or
    /// becoming connections), so that of two checking at once exactly the later one sees the
    /// other.
    fn new(inner: &Inner) -> (Handshaking, usize) {
        let before = inner.handshaking.fetch_add(1, Ordering::SeqCst);
        (Handshaking(inner.handshaking.clone()), before)
    }
}

impl Drop for Handshaking {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One listening socket of any reliable scheme.
struct Listener {
    scheme: Scheme,
    tls: Option<tokio_rustls::TlsAcceptor>,
    policy: Arc<WsServerPolicy>,
    inner: Weak<Inner>,
}

impl Listener {
    async fn run(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (stream, peer, local) = accept(&listener).await;
            if self.inner.strong_count() == 0 {
                return;
            }
            // Handshakes run in their own task: a slow client never holds up the accept loop.
            tokio::spawn(self.clone().serve(stream, peer, local));
        }
    }

    async fn serve(
        self: Arc<Self>,
        tcp: tokio::net::TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
    ) {
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        // Counted until the connection is up (or the handshake fails); counted before the
        // check, so that two handshakes checking at once cannot both pass.
        let (counted, before) = Handshaking::new(&inner);
        let live = lock(&inner.live).len();
        // This one, those that started before it, and those up.
        let handshaking = before + 1;
        if live + handshaking > inner.config.max_connections {
            warn!(%peer, live, handshaking, "connection limit reached: refusing");
            drop((counted, inner));
            refuse_at_capacity(tcp, self.scheme == Scheme::CoapWs).await;
            return;
        }
        drop(inner);
        let Some(acceptor) = self.tls.clone() else {
            return self.serve_stream(tcp, peer, local, None, counted);
        };
        let accepted = tokio::time::timeout(self.policy.header_timeout, acceptor.accept(tcp)).await;
        let tls = match accepted {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                info!(%peer, error = %crate::tls::describe_handshake_error(&e), "TLS handshake failed");
                return;
            }
            Err(_) => {
                info!(%peer, "TLS handshake timed out");
                return;
            }
        };
        let (_, session) = tls.get_ref();
        let sni = session.server_name().map(str::to_owned);
        // RFC 8323 §8.2: ALPN `coap` is required except on the default port 5684.
        if self.scheme == Scheme::CoapsTcp
            && session.alpn_protocol().is_none()
            && local.port() != self.scheme.default_port()
        {
            info!(%peer, "TLS client did not offer ALPN coap: closing");
            let mut tls = tls;
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
            return;
        }
        self.serve_stream(tls, peer, local, sni, counted);
    }

    fn serve_stream<S>(
        &self,
        stream: S,
        peer: SocketAddr,
        local: SocketAddr,
        sni: Option<String>,
        counted: Handshaking,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        let scheme = self.scheme;
        if !scheme.is_websocket() {
            let core = Connection::new(
                Framing::Tcp,
                inner.config.connection.clone(),
                Instant::now(),
            );
            // RFC 8323 §8.1/§8.2: the default Uri-Host is the SNI name under TLS, else the
            // destination IP literal.
            let host = sni
                .and_then(|n| Host::from_option_value(&n).ok())
                .unwrap_or_else(|| Host::from(local.ip()));
            let remote = server_remote(scheme, peer, local, host, local.port());
            start_connection(
                &inner,
                StreamIo::new(stream),
                core,
                remote,
                None,
                self.inner.clone(),
            );
            return;
        }
        let weak = self.inner.clone();
        // Counted while the HTTP side lives and until the upgraded connection is up: the
        // closure is held by both, and dropped by the upgrade's task only after it started
        // the connection (so no moment between the two goes uncounted).
        let on_upgrade: ws::OnUpgrade<ws::Upgraded> = Arc::new(move |io, host, port| {
            let _counted = &counted;
            let Some(inner) = weak.upgrade() else { return };
            let config = ConnectionConfig {
                keepalive: inner.config.server_keepalive,
                ..inner.config.connection.clone()
            };
            let core = Connection::new(Framing::WebSocket, config, Instant::now());
            let remote = server_remote(scheme, peer, local, host, port);
            start_connection(&inner, io, core, remote, None, weak.clone());
        });
        let policy = self.policy.clone();
        tokio::spawn(ws::serve_http(stream, policy, scheme, peer, on_upgrade));
    }
}

#[cfg(test)]
mod tests {
    use crate::site::{IncomingRequest, Resource, Site};
    use crate::{Endpoint, EndpointConfig};
    use bytes::Bytes;
    use coapws_proto::codec::udp::{self, MessageType, UdpHeader};
    use coapws_proto::{Code, DecodeLimits, Message, Token};
    use std::collections::{HashMap, HashSet};
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// One Confirmable GET /who from `socket` with `mid` and `token`; its piggybacked answer.
    async fn ask(socket: &tokio::net::UdpSocket, mid: u16, token: u8) -> Message {
        let mut get = Message::request(Code::GET, "/who");
        get.token = Token::new(vec![token]);
        let header = UdpHeader {
            mtype: MessageType::Confirmable,
            message_id: mid,
        };
        socket
            .send(&udp::encode(&header, &get).unwrap())
            .await
            .unwrap();
        let mut buf = vec![0u8; 2048];
        let n = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap();
        let datagram = Bytes::copy_from_slice(&buf[..n]);
        let (h, m) = udp::decode(&datagram, &DecodeLimits::default()).unwrap();
        assert_eq!(
            (h.mtype, h.message_id),
            (MessageType::Acknowledgement, mid),
            "a piggybacked answer"
        );
        assert_eq!(m.token, get.token);
        m
    }

    /// With two sockets on one UDP address, every peer is served, by one socket all along
    /// (its duplicate is answered from that socket's cache, its handler not run again), and
    /// the peers are spread over both.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_sockets_share_a_udp_address_and_keep_each_peer_on_one() {
        type Seen = Arc<Mutex<HashMap<SocketAddr, HashSet<u64>>>>;
        let seen: Seen = Arc::default();
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (s, c) = (seen.clone(), calls.clone());
        let who = Resource::new().get(move |req: IncomingRequest| {
            let socket = req.remote.link_id().0;
            s.lock()
                .unwrap()
                .entry(req.remote.peer_addr())
                .or_default()
                .insert(socket);
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move { Message::response(Code::CONTENT, socket.to_string()) }
        });
        let server = Endpoint::builder()
            .config(EndpointConfig {
                udp_server_sockets: 2,
                ..EndpointConfig::default()
            })
            .site(Site::new().resource("/who", who))
            .build();
        let addr = server
            .listen_udp("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        assert_ne!(addr.port(), 0);
        const PEERS: usize = 32;
        for i in 0..PEERS {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            socket.connect(addr).await.unwrap();
            let mid = 100 + i as u16;
            let first = ask(&socket, mid, 1).await;
            // The same datagram again: a duplicate, answered alike.
            let again = ask(&socket, mid, 1).await;
            assert_eq!(
                first.payload, again.payload,
                "peer {i}: the same socket answered"
            );
            let next = ask(&socket, mid + 1000, 2).await;
            assert_eq!(
                first.payload, next.payload,
                "peer {i}: still the same socket"
            );
        }
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            2 * PEERS,
            "two requests a peer, duplicates not handled again"
        );
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), PEERS);
        assert!(
            seen.values().all(|s| s.len() == 1),
            "each peer on one socket: {seen:?}"
        );
        let sockets: HashSet<u64> = seen.values().flatten().copied().collect();
        assert_eq!(
            sockets.len(),
            2,
            "the peers spread over both sockets: {seen:?}"
        );
    }

    /// Regression: with several sockets on one address, each counted its own running
    /// requests, so `udp_max_concurrent_requests` let through as many again per socket.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_request_budget_of_a_udp_address_counts_all_its_sockets() {
        let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let s = started.clone();
        let slow = Resource::new().get(move |_req: IncomingRequest| {
            s.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Message::response(Code::CONTENT, "late")
            }
        });
        let who = Resource::new()
            .get(|_req: IncomingRequest| async { Message::response(Code::CONTENT, "here") });
        let server = Endpoint::builder()
            .config(EndpointConfig {
                udp_server_sockets: 2,
                max_concurrent_requests: 1,
                udp_max_concurrent_requests: 6,
                ..EndpointConfig::default()
            })
            .site(Site::new().resource("/slow", slow).resource("/who", who))
            .build();
        let addr = server
            .listen_udp("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let mut peers = Vec::new();
        for _ in 0..12 {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            socket.connect(addr).await.unwrap();
            peers.push(socket);
        }
        // Six peers take the address's whole budget (one slow request each).
        for (i, p) in peers[..6].iter().enumerate() {
            let mut get = Message::request(Code::GET, "/slow");
            get.token = Token::new(vec![9]);
            let header = UdpHeader {
                mtype: MessageType::NonConfirmable,
                message_id: i as u16,
            };
            p.send(&udp::encode(&header, &get).unwrap()).await.unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while started.load(std::sync::atomic::Ordering::SeqCst) < 6 {
            assert!(
                std::time::Instant::now() < deadline,
                "the slow requests started"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The other six, with nothing running of their own and on either socket: 5.03.
        for (i, p) in peers[6..].iter().enumerate() {
            let answer = ask(p, 500 + i as u16, 1).await;
            assert_eq!(
                answer.code,
                Code::SERVICE_UNAVAILABLE,
                "peer {i} past the address's budget: {}",
                answer.payload_text()
            );
        }
    }
}
