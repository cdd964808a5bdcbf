//! `coapws serve [ROOT]`: the demo site or a file server, on the listeners asked for.
//!
//! Without binding flags: WebSocket on `[::]:8683`, TCP and UDP on `[::]:5683`; with TLS material
//! also `coaps+ws` on the WebSocket port + 1 (8684) and `coaps+tcp` on 5684, as aiocoap does.
//! `--bind HOST[:PORT]` follows aiocoap: UDP and TCP on PORT (default 5683), WebSocket on PORT+3000,
//! and with TLS material `coaps+tcp` on PORT+1 and `coaps+ws` on PORT+3001. `--ws`, `--wss`,
//! `--tcp`, `--tls` and `--udp ADDR` bind exactly (port 0 picks one). Any binding flag replaces the
//! defaults: only the listeners asked for are opened.

use anyhow::{Context, Result, bail};
use clap::Args;
use coapws::proto::link_format::Link;
use coapws::proto::uri::Scheme;
use coapws::site::files::FileServer;
use coapws::tls::TlsIdentity;
use coapws::web::WebContent;
use coapws::{Endpoint, EndpointConfig, Site};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Serve the files below ROOT instead of the demo site.
    root: Option<PathBuf>,
    /// Allow PUT and DELETE on the files below ROOT.
    #[arg(long, requires = "root")]
    write: bool,
    /// Bind like aiocoap: UDP and TCP on PORT (default 5683), WebSocket on PORT+3000.
    #[arg(long, value_name = "HOST[:PORT]")]
    bind: Option<String>,
    /// Listen for CoAP over WebSockets exactly here (repeatable).
    #[arg(long, value_name = "ADDR")]
    ws: Vec<String>,
    /// Listen for CoAP over TCP exactly here (repeatable).
    #[arg(long, value_name = "ADDR")]
    tcp: Vec<String>,
    /// Listen for CoAP over UDP exactly here (repeatable).
    #[arg(long, value_name = "ADDR")]
    udp: Vec<String>,
    /// Listen for CoAP over secure WebSockets (coaps+ws) exactly here (repeatable; needs TLS material).
    #[arg(long, value_name = "ADDR", requires = "tls_server_certificate")]
    wss: Vec<String>,
    /// Listen for CoAP over TLS (coaps+tcp) exactly here (repeatable; needs TLS material).
    #[arg(long, value_name = "ADDR", requires = "tls_server_certificate")]
    tls: Vec<String>,
    /// PEM certificate chain of the server (leaf first).
    #[arg(long, value_name = "CRT", requires = "tls_server_key")]
    tls_server_certificate: Option<PathBuf>,
    /// PEM private key of the server (PKCS#8, RSA or EC).
    #[arg(long, value_name = "KEY", requires = "tls_server_certificate")]
    tls_server_key: Option<PathBuf>,
    /// Let web pages of ORIGIN (`scheme://host[:port]`) open CoAP WebSockets here, besides
    /// pages of this server's own host (repeatable; `*` lets every web page in).
    #[arg(long, value_name = "ORIGIN")]
    allow_origin: Vec<String>,
    /// Serve Prometheus metrics (connections, requests, responses by code, bytes, endings,
    /// pending requests, observations, block-wise transfers) at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Ping WebSocket clients after SECS without hearing from them, and drop those that do not
    /// answer within as long again (their requests fail, their observations and directory
    /// registrations end). 0: never.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    keepalive: u64,
    #[command(flatten)]
    limits: Limits,
    /// Serve the website in DIR on the WebSocket ports instead of the built-in console.
    #[arg(long, value_name = "DIR")]
    site: Option<PathBuf>,
    /// Also serve a Resource Directory (RFC 9176): /rd, /rd-lookup/ep, /rd-lookup/res.
    #[arg(long)]
    rd: bool,
    /// Give endpoints that register over a connection they opened, without base, the base
    /// SCHEME://EP.DOMAIN (implies --rd).
    #[arg(long, value_name = "DOMAIN")]
    rd_proxy_domain: Option<String>,
    #[command(flatten)]
    proxy: crate::proxy::ProxyArgs,
    #[command(flatten)]
    cluster: crate::cluster::ClusterArgs,
}

/// Limits of `serve`; each refused with the protocol's own answer.
#[derive(Args, Debug)]
struct Limits {
    /// Connections up at once, all transports; further WebSocket handshakes get HTTP 503,
    /// further TCP and TLS connections are closed.
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections: u32,
    /// Largest CoAP message accepted over TCP, TLS and WebSocket (announced in our CSM);
    /// a larger one ends its connection with Abort.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20, value_parser = clap::value_parser!(u32).range(64..=(16 << 20)))]
    max_message_size: u32,
    /// Time a new connection gets to send its CSM; without one it is aborted.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    csm_timeout: u64,
    /// Time a new connection gets for its TLS handshake, and again for its HTTP request head.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    handshake_timeout: u64,
    /// Release connections without requests or responses for SECS (when nothing is pending
    /// and nobody observes over them). 0: never (directory devices are legitimately quiet).
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    idle_timeout: u64,
    /// Largest HTTP request head of a WebSocket handshake; larger gets HTTP 431.
    #[arg(long, value_name = "BYTES", default_value_t = 16 << 10, value_parser = clap::value_parser!(u32).range(8192..=(1 << 20)))]
    max_header_bytes: u32,
    /// Most header lines in an HTTP request head; more get HTTP 431.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(8..=1000))]
    max_headers: u32,
    /// Incoming requests handled at once per connection (per address over UDP); more get 5.03.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    max_concurrent_requests: u32,
    /// Observers registered at once, in all; more are answered without Observe.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(0..=10_000_000))]
    max_observers: u32,
    /// Sockets serving each --udp address (SO_REUSEPORT; each peer stays on one), each on a
    /// task of its own so that UDP uses several cores. 0: one per core this process may run on.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=256))]
    udp_sockets: u32,
}

impl Limits {
    /// `base` with these limits.
    fn apply(&self, base: EndpointConfig) -> EndpointConfig {
        use std::time::Duration;
        let mut c = base;
        c.max_connections = self.max_connections as usize;
        c.connection.max_message_size = self.max_message_size;
        c.connection.csm_timeout = Duration::from_secs(self.csm_timeout);
        c.handshake_timeout = Duration::from_secs(self.handshake_timeout);
        c.idle_timeout = (self.idle_timeout > 0).then(|| Duration::from_secs(self.idle_timeout));
        c.max_header_bytes = self.max_header_bytes as usize;
        c.max_headers = self.max_headers as usize;
        c.max_concurrent_requests = self.max_concurrent_requests as usize;
        c.max_observers = self.max_observers as usize;
        c.udp_server_sockets = self.udp_sockets as usize;
        c
    }
}

/// The built-in browser console (the repository's `web/` folder).
mod console {
    include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));
}

/// Listening sockets handed over by a service manager (LISTEN_FDS, LISTEN_FDNAMES: systemd's
/// socket activation). A stream socket named `tcp`, `tls` or `wss` serves that; any other
/// stream socket (`ws`, or no name) serves HTTP and CoAP over WebSockets; a datagram socket
/// serves UDP.
fn inherited() -> Result<Vec<(String, Inherited)>> {
    let mut fds = listenfd::ListenFd::from_env();
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|n| n.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    for i in 0..fds.len() {
        let name = names.get(i).cloned().unwrap_or_default();
        if let Ok(Some(l)) = fds.take_tcp_listener(i) {
            out.push((name, Inherited::Stream(l)));
        } else if let Ok(Some(u)) = fds.take_udp_socket(i) {
            out.push((name, Inherited::Datagram(u)));
        } else {
            bail!(
                "inherited descriptor {} is neither a listening TCP socket nor a UDP socket",
                i + 3
            );
        }
    }
    Ok(out)
}

enum Inherited {
    Stream(std::net::TcpListener),
    Datagram(std::net::UdpSocket),
}

/// The listeners to open, by scheme.
#[derive(Default)]
struct Listeners {
    ws: Vec<SocketAddr>,
    tcp: Vec<SocketAddr>,
    wss: Vec<SocketAddr>,
    tls: Vec<SocketAddr>,
    udp: Vec<SocketAddr>,
}

impl Listeners {
    fn is_empty(&self) -> bool {
        self.ws.is_empty()
            && self.tcp.is_empty()
            && self.wss.is_empty()
            && self.tls.is_empty()
            && self.udp.is_empty()
    }
}

fn offset(a: SocketAddr, by: u16) -> Result<SocketAddr> {
    let Some(port) = a.port().checked_add(by) else {
        bail!("port {} + {by} is out of range", a.port());
    };
    Ok(SocketAddr::new(a.ip(), port))
}

/// Parses `HOST:PORT`, `[V6]:PORT`, or a bare host with `default_port`.
async fn resolve(text: &str, default_port: Option<u16>) -> Result<SocketAddr> {
    if let Ok(a) = text.parse::<SocketAddr>() {
        return Ok(a);
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => (
            h,
            p.parse::<u16>()
                .with_context(|| format!("bad port in {text:?}"))?,
        ),
        _ => (
            text,
            default_port.with_context(|| format!("{text:?} needs a port"))?,
        ),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("cannot resolve {host:?}"))?
        .next()
        .with_context(|| format!("{host:?} resolves to no address"))
}

fn display(scheme: &str, a: SocketAddr) -> String {
    format!("listening on {scheme}://{a}")
}

/// Runs `serve` (`proxy_only`: `coapws proxy`, a forward proxy with no site of its own).
pub async fn run(args: ServeArgs, proxy_only: bool) -> Result<ExitCode> {
    // Every connection is a descriptor.
    let limit = crate::limits::raise_descriptor_limit();
    if crate::limits::too_few(limit, args.limits.max_connections as usize) {
        tracing::info!(
            limit,
            max_connections = args.limits.max_connections,
            "the descriptor limit (RLIMIT_NOFILE) holds fewer connections than --max-connections"
        );
    }
    let site = match &args.root {
        None if proxy_only => Site::new(),
        None => coapws::site::demo::site(),
        Some(root) => {
            let files = FileServer::new(root)
                .with_context(|| format!("cannot serve {}", root.display()))?
                .writable(args.write);
            // Block-wise PUTs go to the file server block by block, straight to disk.
            Site::new().files("/", files, vec![Link::new("/").with_param("ct", "40")])
        }
    };
    let web = match &args.site {
        Some(dir) => {
            WebContent::dir(dir).with_context(|| format!("cannot serve {}", dir.display()))?
        }
        None => WebContent::embedded(console::FILES),
    };
    let cluster = crate::cluster::join(&args.cluster, args.proxy.patience()).await?;
    let (site, rd) = if args.rd || args.rd_proxy_domain.is_some() {
        let config = coapws::rd::RdConfig {
            proxy_domain: args.rd_proxy_domain.clone(),
            ..coapws::rd::RdConfig::default()
        };
        tracing::info!(proxy_domain = ?config.proxy_domain, "serving a resource directory");
        let rd = match &cluster {
            Some(c) => coapws::rd::ResourceDirectory::with_store(c.store(), config),
            None => coapws::rd::ResourceDirectory::new(config),
        };
        if let Some(c) = &cluster {
            c.follow_takeovers(rd.clone());
        }
        (rd.mount(site), Some(rd))
    } else {
        (site, None)
    };
    let devices = match (&args.rd_proxy_domain, rd) {
        (Some(domain), Some(rd)) => Some((
            domain.as_str(),
            std::sync::Arc::new(rd) as std::sync::Arc<dyn coapws::proxy::Devices>,
        )),
        _ => None,
    };
    let device_list = devices.as_ref().map(|(_, d)| d.clone());
    let (site, proxy) = crate::proxy::mount(&args.proxy, proxy_only, site, devices)?;
    if let (Some(c), Some(p), Some(d)) = (&cluster, &proxy, device_list) {
        p.set_router(c.router());
        let upstream = Endpoint::builder()
            .config(EndpointConfig {
                request_timeout: args.proxy.patience(),
                ..EndpointConfig::default()
            })
            .build();
        c.serve(d, upstream).await?;
    }
    if args.allow_origin.iter().any(|o| o == "*") {
        tracing::warn!("--allow-origin '*': every web page a browser opens can reach this server");
    }
    let config = args.limits.apply(EndpointConfig {
        allowed_origins: args.allow_origin.clone(),
        server_keepalive: (args.keepalive > 0)
            .then(|| std::time::Duration::from_secs(args.keepalive)),
        ..EndpointConfig::default()
    });
    let endpoint = Endpoint::builder()
        .config(config)
        .site(site)
        .web(web)
        .build();
    match &args.root {
        None if proxy_only => tracing::info!("proxying only"),
        None => tracing::info!("serving the demo site"),
        Some(r) => tracing::info!(root = %r.display(), writes = args.write, "serving files"),
    }

    let identity = match (&args.tls_server_certificate, &args.tls_server_key) {
        (Some(c), Some(k)) => Some(TlsIdentity::from_pem_files(c, k)?),
        _ => None,
    };
    let mut l = Listeners::default();
    for (list, out) in [
        (&args.ws, &mut l.ws),
        (&args.tcp, &mut l.tcp),
        (&args.wss, &mut l.wss),
        (&args.tls, &mut l.tls),
        (&args.udp, &mut l.udp),
    ] {
        for a in list {
            out.push(resolve(a, None).await?);
        }
    }
    if let Some(b) = &args.bind {
        let a = resolve(b, Some(5683)).await?;
        l.udp.push(a);
        l.tcp.push(a);
        l.ws.push(offset(a, 3000)?);
        if identity.is_some() {
            l.tls.push(offset(a, 1)?);
            l.wss.push(offset(a, 3001)?);
        }
    }
    let inherited = inherited()?;
    let had_inherited = !inherited.is_empty();
    for (name, socket) in inherited {
        match socket {
            Inherited::Datagram(u) => {
                crate::say(&display("coap", endpoint.listen_udp_on(u)?));
            }
            Inherited::Stream(t) => {
                let scheme = match name.as_str() {
                    "tcp" => Scheme::CoapTcp,
                    "tls" => Scheme::CoapsTcp,
                    "wss" => Scheme::CoapsWs,
                    _ => Scheme::CoapWs,
                };
                if scheme.is_secure() && identity.is_none() {
                    bail!(
                        "inherited socket {name:?} needs --tls-server-certificate and --tls-server-key"
                    );
                }
                let a = endpoint.listen_on(t, scheme, identity.as_ref())?;
                crate::say(&display(&scheme.to_string(), a));
            }
        }
    }
    if l.is_empty() && !had_inherited {
        let any = |p: u16| SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, p));
        l.ws.push(any(8683));
        l.tcp.push(any(5683));
        l.udp.push(any(5683));
        if identity.is_some() {
            l.wss.push(any(8684));
            l.tls.push(any(5684));
        }
    }
    for a in l.ws {
        crate::say(&display(
            "coap+ws",
            endpoint
                .listen_ws(a)
                .await
                .map_err(crate::hints::listen_error)?,
        ));
    }
    for a in l.tcp {
        crate::say(&display(
            "coap+tcp",
            endpoint
                .listen_tcp(a)
                .await
                .map_err(crate::hints::listen_error)?,
        ));
    }
    for a in l.udp {
        crate::say(&display(
            "coap",
            endpoint
                .listen_udp(a)
                .await
                .map_err(crate::hints::listen_error)?,
        ));
    }
    if let Some(id) = &identity {
        for a in l.wss {
            crate::say(&display(
                "coaps+ws",
                endpoint
                    .listen_wss(a, id)
                    .await
                    .map_err(crate::hints::listen_error)?,
            ));
        }
        for a in l.tls {
            crate::say(&display(
                "coaps+tcp",
                endpoint
                    .listen_tls(a, id)
                    .await
                    .map_err(crate::hints::listen_error)?,
            ));
        }
    }
    if let Some(a) = args.metrics {
        let bound = coapws::metrics::serve(a)
            .await
            .map_err(crate::hints::listen_error)?;
        crate::say(&format!("metrics on http://{bound}/metrics"));
    }
    wait_for_signal().await;
    tracing::info!("shutting down: releasing connections (a second signal exits at once)");
    tokio::select! {
        _ = endpoint.shutdown() => {}
        _ = wait_for_signal() => {
            tracing::warn!("second signal: exiting without waiting for connections to close");
            return Ok(ExitCode::from(130));
        }
    }
    if let Some(p) = proxy {
        let s = p.stats();
        tracing::info!(
            forwarded = s.forwarded,
            refused = s.refused,
            cache_hits = s.cache.hits,
            cache_misses = s.cache.misses,
            revalidated = s.cache.revalidated,
            evicted = s.cache.evicted,
            "proxy statistics"
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
