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

/// How long a resolved UDP name is used before it is resolved again.
const NAME_TTL: Duration = Duration::from_secs(60);
/// Names kept at once; when full, the oldest is dropped.
const MAX_NAMES: usize = 1024;

/// Resolved names of UDP servers. A UDP request has no connect step that could try one
/// address after another, so a name is resolved once (for [`NAME_TTL`]), its addresses are
/// used in order, and when the one in use turns out unreachable (an ICMP error or a send the
/// system refused), the next one is tried and kept.
#[derive(Default)]
pub(crate) struct UdpNames {
    names: std::sync::Mutex<std::collections::HashMap<(String, u16), Resolved>>,
}

struct Resolved {
    addrs: Vec<SocketAddr>,
    /// Index of the address in use.
    current: usize,
    at: std::time::Instant,
}

impl UdpNames {
    fn names(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<(String, u16), Resolved>> {
        self.names.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The address to send to for `host:port` (of `local`'s family when bound).
    pub(crate) async fn address(
        &self,
        host: &Host,
        port: u16,
        local: Option<SocketAddr>,
    ) -> Result<SocketAddr, Error> {
        let Host::Name(name) = host else {
            return resolve(host, port, local).await;
        };
        let key = (name.clone(), port);
        if let Some(r) = self.names().get(&key).filter(|r| r.at.elapsed() < NAME_TTL) {
            return Ok(r.addrs[r.current]);
        }
        let addrs: Vec<SocketAddr> = resolve_all(host, port)
            .await
            .map_err(|e| Error::connect(authority(host, port), e))?;
        let found = addrs.len();
        let addrs: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| local.is_none_or(|l| l.is_ipv4() == a.is_ipv4()))
            .collect();
        let Some(first) = addrs.first().copied() else {
            let why = match local {
                Some(l) if found > 0 => other_family(l),
                _ => not_found(),
            };
            return Err(Error::connect(authority(host, port), why));
        };
        self.insert(key, addrs);
        Ok(first)
    }

    fn insert(&self, key: (String, u16), addrs: Vec<SocketAddr>) {
        let mut names = self.names();
        if names.len() >= MAX_NAMES && !names.contains_key(&key) {
            let oldest = names
                .iter()
                .min_by_key(|(_, r)| r.at)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                names.remove(&k);
            }
        }
        names.insert(
            key,
            Resolved {
                addrs,
                current: 0,
                at: std::time::Instant::now(),
            },
        );
    }

    /// `addr`, in use for `host:port`, is unreachable: moves on to the name's next address.
    /// True when there is one not yet tried since the name was resolved (the caller tries
    /// again), false when every address has failed (the name is then resolved anew next
    /// time).
    pub(crate) fn failed(&self, host: &Host, port: u16, addr: SocketAddr) -> bool {
        let Host::Name(name) = host else {
            return false;
        };
        let key = (name.clone(), port);
        let mut names = self.names();
        let Some(r) = names.get_mut(&key) else {
            return false;
        };
        if r.addrs[r.current] != addr {
            // Someone else moved on already: try the one in use now.
            return true;
        }
        if r.current + 1 < r.addrs.len() {
            r.current += 1;
            return true;
        }
        names.remove(&key);
        false
    }

    /// For tests: `host:port` resolves to `addrs` (in this order) for the next minute.
    #[cfg(test)]
    pub(crate) fn set(&self, host: &str, port: u16, addrs: Vec<SocketAddr>) {
        self.insert((host.to_owned(), port), addrs);
    }
}

#[cfg(test)]
mod tests {
    use crate::{Endpoint, EndpointConfig, Request};
    use coapws_proto::code::Code;
    use std::net::SocketAddr;
    use std::time::Duration;

    /// A loopback UDP port nobody listens on (bound once, then freed).
    fn dead_udp_port() -> SocketAddr {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    }

    async fn udp_server() -> (Endpoint, SocketAddr) {
        let server = Endpoint::builder().site(crate::site::demo::site()).build();
        let addr = server
            .listen_udp("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        (server, addr)
    }

    /// Regression: a UDP name was resolved for every request and only its first address was
    /// ever used. Now an unreachable first address (ICMP port unreachable on a connected
    /// socket) moves on to the next, which is then kept for later requests.
    #[tokio::test]
    async fn a_udp_name_falls_back_to_its_next_address_and_keeps_it() {
        let (_server, live) = udp_server().await;
        let dead = dead_udp_port();
        let client = Endpoint::builder()
            .config(EndpointConfig {
                udp_connected_clients: true,
                ..EndpointConfig::default()
            })
            .build();
        client
            .inner
            .udp_names
            .set("twice.test", 5683, vec![dead, live]);
        let uri = "coap://twice.test/hello";
        let started = std::time::Instant::now();
        let r = client
            .send(Request::get(uri).unwrap().timeout(Duration::from_secs(20)))
            .await
            .unwrap();
        assert_eq!(r.code(), Code::CONTENT);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "fell back at once, not after retransmissions: {:?}",
            started.elapsed()
        );
        let again = client.remote_for(&uri.parse().unwrap()).await.unwrap();
        assert_eq!(again.peer_addr(), live, "the working address is kept");
    }

    /// The shared socket: a send the system refuses for an address (here: from a loopback
    /// socket to an address off this host) fails that request at once, so the name's next
    /// address is tried too.
    #[tokio::test]
    async fn a_refused_send_on_the_shared_socket_moves_on_at_once() {
        let (_server, live) = udp_server().await;
        let client = Endpoint::builder()
            .config(EndpointConfig {
                client_bind: Some("127.0.0.1:0".parse().unwrap()),
                ..EndpointConfig::default()
            })
            .build();
        let off_host: SocketAddr = "192.0.2.1:5683".parse().unwrap();
        client
            .inner
            .udp_names
            .set("elsewhere.test", 5683, vec![off_host, live]);
        let started = std::time::Instant::now();
        let r = client
            .send(
                Request::get("coap://elsewhere.test/hello")
                    .unwrap()
                    .timeout(Duration::from_secs(20)),
            )
            .await
            .unwrap();
        assert_eq!(r.code(), Code::CONTENT);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
}
