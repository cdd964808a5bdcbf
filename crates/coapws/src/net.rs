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

/// Resolves `host:port` to its first address.
pub(crate) async fn resolve(host: &Host, port: u16) -> Result<SocketAddr, Error> {
    let addrs = resolve_all(host, port)
        .await
        .map_err(|e| Error::connect(authority(host, port), e))?;
    addrs
        .into_iter()
        .next()
        .ok_or_else(|| Error::connect(authority(host, port), not_found()))
}

/// Resolves `host:port` and connects to the first address that answers, within `timeout`.
pub(crate) async fn connect_tcp(
    host: &Host,
    port: u16,
    timeout: Duration,
) -> Result<TcpStream, Error> {
    let attempt = async {
        let mut last = not_found();
        for a in resolve_all(host, port).await? {
            match TcpStream::connect(a).await {
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
