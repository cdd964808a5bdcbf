//! Small socket helpers shared by the transports: resolving and connecting with a timeout,
//! and the error of a listener that cannot open.

use crate::error::Error;
use coapws_proto::uri::Host;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

/// The error of a listener that could not be opened at `addr`.
pub(crate) fn listen_error(addr: impl std::fmt::Display, e: std::io::Error) -> Error {
    Error::Listen {
        addr: addr.to_string(),
        source: std::sync::Arc::new(e),
    }
}

fn not_found() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::NotFound, "name resolved to no address")
}

/// Every address of `host:port` (IP literals without a lookup).
async fn resolve_all(host: &Host, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    Ok(match host {
        Host::Ipv4(a) => vec![SocketAddr::from((*a, port))],
        Host::Ipv6(a) => vec![SocketAddr::from((*a, port))],
        Host::Name(n) => tokio::net::lookup_host((n.as_str(), port)).await?.collect(),
    })
}

fn authority(host: &Host, port: u16) -> String {
    format!("{}:{port}", host.authority_form())
}

/// No address of the family the client is bound to (`EndpointConfig::client_bind`).
fn other_family(local: SocketAddr) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::AddrNotAvailable,
        format!("no address of the local address {local}'s family (IPv4/IPv6)"),
    )
}

/// Resolves `host:port` to its first address; with `local` (the client's own address), its
/// first of `local`'s family.
pub(crate) async fn resolve(
    host: &Host,
    port: u16,
    local: Option<SocketAddr>,
) -> Result<SocketAddr, Error> {
    let addrs = resolve_all(host, port)
        .await
        .map_err(|e| Error::connect(authority(host, port), e))?;
    let found = addrs.iter().len();
    addrs
        .into_iter()
        .find(|a| local.is_none_or(|l| l.is_ipv4() == a.is_ipv4()))
        .ok_or_else(|| {
            let why = match local {
                Some(l) if found > 0 => other_family(l),
                _ => not_found(),
            };
            Error::connect(authority(host, port), why)
        })
}

/// A TCP connection to `to` from `local` (any port if 0), the address reusable so that a
/// fixed local port serves connections to several servers and reconnections.
async fn connect_from(local: SocketAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if local.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(local)?;
    socket.connect(to).await
}

/// Resolves `host:port` and connects to the first address that answers, within `timeout`;
/// from `local` if given (then only to addresses of its family).
pub(crate) async fn connect_tcp(
    host: &Host,
    port: u16,
    timeout: Duration,
    local: Option<SocketAddr>,
) -> Result<TcpStream, Error> {
    let attempt = async {
        let mut last = not_found();
        for a in resolve_all(host, port).await? {
            let connected = match local {
                None => TcpStream::connect(a).await,
                Some(l) if l.is_ipv4() != a.is_ipv4() => {
                    last = other_family(l);
                    continue;
                }
                Some(l) => connect_from(l, a).await,
            };
            match connected {
                Ok(s) => {
                    s.set_nodelay(true)?;
                    return Ok(s);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(Error::connect(authority(host, port), e)),
        Err(_) => Err(Error::connect(
            authority(host, port),
            std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
        )),
    }
}

/// Local and peer address of a connected stream.
pub(crate) fn addrs(
    stream: &TcpStream,
    authority: &str,
) -> Result<(SocketAddr, SocketAddr), Error> {
    let local = stream
        .local_addr()
        .map_err(|e| Error::connect(authority, e))?;
    let peer = stream
        .peer_addr()
        .map_err(|e| Error::connect(authority, e))?;
    Ok((local, peer))
}
