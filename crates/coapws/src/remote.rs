//! [`Remote`]: the other end of an exchange, as seen from this endpoint.
//!
//! A remote knows its scheme, both ends' socket addresses and host info, and, for reliable
//! transports, the connection it lives on, so a server can send requests back to a client that
//! connected to it (role reversal) without that client having any URI.

use crate::error::Error;
use crate::link::{Command, ConnectionHandle};
use crate::link::{SocketHandle, UdpCommand};
use coapws_proto::message::{Message, Token};
use coapws_proto::uri::{Host, Scheme, Uri};
use std::fmt;
use std::net::SocketAddr;

/// Who opened the connection the remote lives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// We connected to the remote: it is a server with a URI.
    Client,
    /// The remote connected to us: it is a client, reachable only over this connection.
    Server,
}

/// How a remote is reached.
#[derive(Clone, Debug)]
pub(crate) enum Link {
    /// Over an RFC 8323 connection (WebSocket, TCP, TLS).
    Stream(ConnectionHandle),
    /// Through a UDP socket, at an address.
    Datagram(SocketHandle, SocketAddr),
}

/// The other end of an exchange.
#[derive(Clone)]
pub struct Remote {
    pub(crate) scheme: Scheme,
    pub(crate) peer_addr: SocketAddr,
    pub(crate) local_addr: SocketAddr,
    /// Client side: the URI authority we connected to. Server side: our own name as the client
    /// addressed us (WebSocket Host header), the default Uri-Host of its requests.
    pub(crate) host: Host,
    pub(crate) port: u16,
    pub(crate) side: Side,
    pub(crate) link: Link,
}

impl Remote {
    /// The scheme of the transport.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }
    /// The remote socket address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }
    /// Our socket address on this connection.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
    /// Who opened the connection.
    pub fn side(&self) -> Side {
        self.side
    }
    /// On the server side: the host and port the client addressed us by (Host header for
    /// WebSocket), which is the default Uri-Host/Uri-Port of its requests.
    pub fn local_host_info(&self) -> Option<(&Host, u16)> {
        (self.side == Side::Server).then_some((&self.host, self.port))
    }
    /// The base URI (`scheme://authority`) of a remote we connected to. A client that connected
    /// to us has none: that is [`Error::NoUri`], reach it with [`crate::Endpoint::request_to`].
    pub fn uri(&self) -> Result<Uri, Error> {
        match (&self.link, self.side) {
            // A UDP peer is reachable at its address whoever spoke first.
            (Link::Datagram(_, addr), _) => {
                let mut u = Uri::new(self.scheme, Host::from(addr.ip()));
                u.port = Some(addr.port());
                Ok(u)
            }
            (Link::Stream(_), Side::Client) => {
                let mut u = Uri::new(self.scheme, self.host.clone());
                u.port = Some(self.port);
                Ok(u)
            }
            (Link::Stream(_), Side::Server) => Err(Error::NoUri(self.to_string())),
        }
    }
    /// Sends a request over the link and waits for its response, without a timeout of its
    /// own (UDP ends it after its retransmissions). `confirmable` only matters for UDP.
    pub(crate) async fn send(&self, message: Message, confirmable: bool) -> Result<Message, Error> {
        match &self.link {
            Link::Stream(c) => c.request(message).await,
            Link::Datagram(s, addr) => s.request(*addr, message, confirmable).await,
        }
    }
    /// Checks that the other end is there: a CoAP Ping (RFC 8323 §5.4) over a connection, an
    /// empty Confirmable (RFC 7252 §4.3) over UDP, waiting up to `timeout` for the answer.
    /// Returns the round trip time; [`Error::Timeout`] when no answer came.
    pub async fn ping(&self, timeout: std::time::Duration) -> Result<std::time::Duration, Error> {
        match &self.link {
            Link::Stream(c) => c.ping(timeout).await,
            Link::Datagram(s, addr) => s.ping(*addr, timeout).await,
        }
    }
    /// Starts an observation (the request carries Observe 0) over the link.
    pub(crate) async fn observe(
        &self,
        message: Message,
        confirmable: bool,
    ) -> Result<(u64, crate::exchange::Feed), Error> {
        match &self.link {
            Link::Stream(c) => c.observe(message).await,
            Link::Datagram(s, addr) => s.observe(*addr, message, confirmable).await,
        }
    }
    /// Sends `message` under the token of observation `id` (re-registration or explicit
    /// deregistration); its answers go to `reply` if given.
    pub(crate) fn resend(
        &self,
        id: u64,
        message: Message,
        confirmable: bool,
        reply: Option<crate::exchange::Reply>,
    ) {
        match &self.link {
            Link::Stream(c) => c.command(Command::Resend { id, message, reply }),
            Link::Datagram(s, _) => s.command(UdpCommand::Resend {
                id,
                message,
                confirmable,
                reply,
            }),
        }
    }
    /// Observation `id` is no longer listened to: deregister with `message` (reliable
    /// transports), or forget it so the next notification gets Reset (UDP).
    pub(crate) fn deregister(&self, id: u64, message: Message) {
        match &self.link {
            Link::Stream(c) => c.command(Command::Deregister { id, message }),
            Link::Datagram(s, _) => s.command(UdpCommand::Deregister { id }),
        }
    }
    /// Forgets request (or observation) `id` without a word to the peer.
    pub(crate) fn cancel(&self, id: u64) {
        match &self.link {
            Link::Stream(c) => c.command(Command::Cancel { id }),
            Link::Datagram(s, _) => s.command(UdpCommand::Cancel { id }),
        }
    }
    /// Sends a notification of the observation `token` that this remote registered with us.
    /// Waits while the link is behind (its bounded queue is full).
    pub(crate) async fn notify(&self, token: Token, mut message: Message, confirmable: bool) {
        match &self.link {
            Link::Stream(c) => {
                message.token = token;
                c.notify(message).await
            }
            Link::Datagram(s, addr) => {
                s.notify(UdpCommand::Notify {
                    to: *addr,
                    token,
                    message,
                    confirmable,
                })
                .await
            }
        }
    }
    /// The observation `token` this remote registered with us is over.
    pub(crate) fn end_notifications(&self, token: &Token) {
        if let Link::Datagram(s, addr) = &self.link {
            s.command(UdpCommand::EndNotifications {
                to: *addr,
                token: token.clone(),
            });
        }
    }
    /// Resolves when the connection (or the UDP socket) is gone.
    pub(crate) async fn closed(&self) {
        match &self.link {
            Link::Stream(c) => c.closed().await,
            Link::Datagram(s, _) => s.closed().await,
        }
    }
    /// Identifies the link to this remote: the connection, plus the address for datagrams.
    pub(crate) fn link_id(&self) -> (u64, Option<SocketAddr>) {
        match &self.link {
            Link::Stream(c) => (c.id(), None),
            Link::Datagram(s, addr) => (s.id(), Some(*addr)),
        }
    }
    /// The connection this remote lives on, for reliable transports.
    pub fn connection(&self) -> Option<&ConnectionHandle> {
        match &self.link {
            Link::Stream(c) => Some(c),
            Link::Datagram(..) => None,
        }
    }
    /// True while new requests can start towards this remote: the connection is up and
    /// neither side has sent Release (for UDP: the socket is up).
    pub fn accepts_requests(&self) -> bool {
        match &self.link {
            Link::Stream(c) => c.accepts_requests(),
            Link::Datagram(s, _) => s.is_alive(),
        }
    }
    /// True while the connection (or the UDP socket) is up.
    pub fn is_connected(&self) -> bool {
        match &self.link {
            Link::Stream(c) => c.is_alive(),
            Link::Datagram(s, _) => s.is_alive(),
        }
    }
}

/// `a` as people read it: an IPv4 client reaching a `[::]` listener shows as IPv4, not as
/// `[::ffff:a.b.c.d]`.
pub(crate) fn display_addr(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => a,
        },
        v4 => v4,
    }
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let peer = display_addr(self.peer_addr);
        match self.side {
            Side::Client => write!(f, "{}://{peer}", self.scheme),
            Side::Server => write!(f, "{} client {peer}", self.scheme),
        }
    }
}

impl fmt::Debug for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remote")
            .field("scheme", &self.scheme)
            .field("peer", &self.peer_addr)
            .field("local", &self.local_addr)
            .field("host", &self.host.authority_form())
            .field("port", &self.port)
            .field("side", &self.side)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ipv4_mapped_addresses_show_as_ipv4() {
        let mapped = "[::ffff:127.0.0.1]:5683".parse().unwrap();
        assert_eq!(super::display_addr(mapped).to_string(), "127.0.0.1:5683");
        let v6 = "[::1]:5683".parse().unwrap();
        assert_eq!(super::display_addr(v6).to_string(), "[::1]:5683");
    }
}
