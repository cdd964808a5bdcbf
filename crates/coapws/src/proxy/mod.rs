//! A CoAP-to-CoAP proxy (RFC 7252 §5.7) between every scheme this crate speaks: forward
//! (Proxy-Uri, or Proxy-Scheme with Uri-Host and Uri-Port), reverse by path prefix or by
//! Uri-Host, and to devices that connected to this server themselves (reached over their own
//! connection, named `NAME.DOMAIN`).
//!
//! Tokens, block-wise transfers and Observe go hop by hop: the server side (the dispatcher)
//! reassembles uploads and cuts answers for the downstream client, the upstream side is an
//! ordinary client [`Endpoint`] ([`Endpoint::send`], [`Endpoint::request_to`]). In between:
//!
//! - `allow.rs`: what the forward proxy may reach (never an open proxy);
//! - `cache.rs`: the response cache (RFC 7252 §5.6);
//! - `relay.rs`: one upstream observation per resource for all downstream observers.
//!
//! Answers of its own: 5.05 for targets not allowed and schemes it cannot reach, 5.02 when
//! upstream fails (refused, reset, broken off, an unsafe option in the answer it does not
//! know), 5.04 when upstream does not answer within the downstream client's patience, 5.08
//! when the Hop-Limit runs out, 4.02 for an unsafe option in the request it does not know.

mod allow;
mod cache;
mod relay;

pub use allow::{AllowError, AllowList, AllowPattern};
pub use cache::{CacheKey, CacheStats};
pub use relay::{Next, Notifications};

use crate::endpoint::{Endpoint, EndpointConfig, Request};
use crate::error::Error;
use crate::remote::Remote;
use crate::site::{HostMatch, IncomingRequest, Site};
use bytes::Bytes;
use cache::{Cache, Lookup};
use coapws_proto::code::Code;
use coapws_proto::content_format::ContentFormat;
use coapws_proto::message::Message;
use coapws_proto::option::{OptionNumber, Options};
use coapws_proto::uri::{Host, Scheme, Uri, UriError};
use relay::Relays;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tracing::{debug, info};

/// Settings of a [`Proxy`].
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// What the forward proxy may reach (reverse targets and devices are the operator's own).
    pub allow: AllowList,
    /// How long a downstream client waits at most: an upstream answer (all of its blocks)
    /// not in by then is answered 5.04. Well under UDP's 93-second exchange lifetime, so the
    /// client still listens when the 5.04 comes.
    pub patience: Duration,
    /// Bytes the response cache holds (0: no cache).
    pub cache_bytes: usize,
    /// Hop-Limit given to requests that come without one (RFC 8768).
    pub hop_limit: u8,
    /// Settings of the upstream client (its request timeout is set to `patience`).
    pub client: EndpointConfig,
}

impl Default for ProxyConfig {
    fn default() -> ProxyConfig {
        ProxyConfig {
            allow: AllowList::default(),
            patience: Duration::from_secs(15),
            cache_bytes: 16 << 20,
            hop_limit: 16,
            client: EndpointConfig {
                udp_connected_clients: true,
                ..EndpointConfig::default()
            },
        }
    }
}

/// Devices that connected to this server and can be reached over their own connection (a
/// Resource Directory's endpoints behind NAT).
pub trait Devices: Send + Sync + 'static {
    /// The live remote of the device named `name`, if it is connected.
    fn remote(&self, name: &str) -> Option<Remote>;
}

/// Reaches devices connected to other instances of a cluster (see [`crate::cluster`]).
pub trait Router: Send + Sync + 'static {
    /// The answer of device `name` (not connected here) to `request`: its response, or the
    /// error answer to give (4.04 when nobody holds it, 5.04 when its instance does not
    /// answer, 5.03 when the cluster cannot be reached).
    fn request(&self, name: &str, request: Message) -> crate::site::BoxFuture<Message>;
    /// An observation of device `name` with `registration` (Observe 0).
    fn observe(
        &self,
        name: &str,
        registration: Message,
    ) -> crate::site::BoxFuture<Result<Box<dyn Notifications>, Message>>;
}

/// Counters of a proxy.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProxyStats {
    /// Requests sent upstream (each block-wise transfer and each observation counts once).
    pub forwarded: u64,
    /// Requests refused (target not allowed, bad or unknown option, hop limit).
    pub refused: u64,
    /// Upstream observations relayed now.
    pub relays: usize,
    /// The response cache.
    pub cache: CacheStats,
}

/// Where a request goes upstream.
enum Upstream {
    /// A server with a URI.
    Uri(Uri),
    /// A device over the connection it opened to us; `uri` names it (`scheme://NAME.DOMAIN`)
    /// for the cache and the logs.
    Device { remote: Remote, uri: Uri },
    /// A device connected to another instance of the cluster, through its [`Router`].
    Routed {
        router: Arc<dyn Router>,
        name: String,
        uri: Uri,
    },
}

impl Upstream {
    fn uri(&self) -> &Uri {
        match self {
            Upstream::Uri(u)
            | Upstream::Device { uri: u, .. }
            | Upstream::Routed { uri: u, .. } => u,
        }
    }
}

/// A proxy; cheap to clone. Mount it on a [`Site`] with [`Proxy::forward`],
/// [`Proxy::reverse`], [`Proxy::reverse_host`] or [`Proxy::devices`].
///
/// ```no_run
/// use coapws::proxy::{AllowList, Proxy, ProxyConfig};
/// use coapws::{Endpoint, Site};
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let config = ProxyConfig {
///     allow: AllowList::parse(&["coap://[fd00::*]:*"])?,
///     ..ProxyConfig::default()
/// };
/// let proxy = Proxy::new(config);
/// let site = proxy.forward(Site::new());
/// let server = Endpoint::builder().site(site).build();
/// server.listen_ws("[::]:8683".parse()?).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    config: ProxyConfig,
    client: Endpoint,
    cache: Cache,
    relays: Arc<Relays>,
    devices: std::sync::OnceLock<(String, Arc<dyn Devices>)>,
    router: std::sync::OnceLock<Arc<dyn Router>>,
    forwarded: AtomicU64,
    refused: AtomicU64,
    /// [`Proxy::forward`] was asked for: forward to every allowed target, not only devices.
    forward_all: std::sync::atomic::AtomicBool,
}

pub(crate) fn diagnostic(code: Code, text: impl Into<String>) -> Message {
    Message::response(code, text.into()).with_content_format(ContentFormat::TEXT_PLAIN.0)
}

/// The answer to a request whose upstream exchange failed with `e`.
pub(crate) fn error_answer(e: &Error) -> Message {
    match e {
        Error::Timeout => diagnostic(Code::GATEWAY_TIMEOUT, "upstream did not answer in time"),
        Error::UnsupportedScheme(s) => diagnostic(
            Code::PROXYING_NOT_SUPPORTED,
            format!("cannot reach {s} targets"),
        ),
        Error::HeldOff { secs, .. } => diagnostic(Code::SERVICE_UNAVAILABLE, e.to_string())
            .with_uint_option(
                OptionNumber::MAX_AGE,
                u32::try_from(*secs).unwrap_or(u32::MAX),
            ),
        other => diagnostic(Code::BAD_GATEWAY, other.to_string()),
    }
}

/// Options that do not go upstream as they came: the target (rebuilt from the URI), the
/// proxy options, and what goes hop by hop or is handled here. None of them is part of a
/// cache key either (the target is keyed whole, the rest is this proxy's own business).
pub(crate) fn not_forwarded(n: OptionNumber) -> bool {
    matches!(
        n,
        OptionNumber::URI_HOST
            | OptionNumber::URI_PORT
            | OptionNumber::URI_PATH
            | OptionNumber::URI_QUERY
            | OptionNumber::PROXY_URI
            | OptionNumber::PROXY_SCHEME
            | OptionNumber::BLOCK1
            | OptionNumber::BLOCK2
            | OptionNumber::SIZE1
            | OptionNumber::SIZE2
            | OptionNumber::REQUEST_TAG
            | OptionNumber::OBSERVE
            | OptionNumber::NO_RESPONSE
            | OptionNumber::HOP_LIMIT
            | OptionNumber::ETAG
    )
}

/// An unsafe option this proxy does not know (RFC 7252 §5.7.1: a request carrying one gets
/// 4.02, a response carrying one 5.02).
fn unknown_unsafe(options: &Options) -> Option<OptionNumber> {
    options
        .iter()
        .map(|(n, _)| n)
        .find(|n| n.is_unsafe() && n.info().is_none())
}

/// The target of a forward-proxy request: its Proxy-Uri, or Proxy-Scheme with the Uri-*
/// options (RFC 7252 §5.10.2; Uri-Host defaults to the name we were addressed by, Uri-Port
/// to the scheme's port).
fn forward_target(req: &IncomingRequest) -> Result<Uri, Message> {
    let o = &req.message.options;
    let bad = |e: UriError| match e {
        UriError::UnknownScheme(s) => diagnostic(
            Code::PROXYING_NOT_SUPPORTED,
            format!("cannot proxy to {s:?} URIs"),
        ),
        other => diagnostic(Code::BAD_REQUEST, format!("bad proxy target: {other}")),
    };
    if let Some(v) = o.get(OptionNumber::PROXY_URI) {
        let text = std::str::from_utf8(v)
            .map_err(|_| diagnostic(Code::BAD_REQUEST, "Proxy-Uri is not UTF-8"))?;
        return Uri::parse(text).map_err(bad);
    }
    let v = o
        .get(OptionNumber::PROXY_SCHEME)
        .cloned()
        .unwrap_or_default();
    let name = std::str::from_utf8(&v)
        .map_err(|_| diagnostic(Code::BAD_REQUEST, "Proxy-Scheme is not UTF-8"))?;
    let scheme = Scheme::parse(name).map_err(bad)?;
    Uri::from_options(scheme, &req.remote.host, scheme.default_port(), o).map_err(bad)
}

/// `base` with `rest` appended to its path and `query` as its query.
fn under(base: &Uri, rest: &[String], query: Vec<String>) -> Uri {
    let mut u = base.clone();
    u.path.extend(rest.iter().cloned());
    u.query = query;
    u
}

/// The ETags a downstream request carries (it asks whether its copy is still valid).
fn etags(m: &Message) -> Vec<Bytes> {
    m.options.get_all(OptionNumber::ETAG).cloned().collect()
}

/// 2.03 Valid for a client that already has `response` (RFC 7252 §5.10.6.2), else `response`.
fn validated(client_etags: &[Bytes], response: Message) -> Message {
    let etag = response.options.get(OptionNumber::ETAG).cloned();
    match etag {
        Some(e) if response.code == Code::CONTENT && client_etags.contains(&e) => {
            let mut valid = Message::new(Code::VALID).with_option(OptionNumber::ETAG, e);
            valid
                .options
                .set_uint(OptionNumber::MAX_AGE, response.options.max_age());
            valid
        }
        _ => response,
    }
}

impl Proxy {
    /// A proxy with its own upstream client.
    pub fn new(config: ProxyConfig) -> Proxy {
        let client_config = EndpointConfig {
            request_timeout: config.patience,
            connect_timeout: config.client.connect_timeout.min(config.patience),
            ..config.client.clone()
        };
        let client = Endpoint::builder().config(client_config).build();
        Proxy::with_client(config, client)
    }

    /// A proxy sending upstream with `client` (e.g. one with its own TLS trust).
    pub fn with_client(config: ProxyConfig, client: Endpoint) -> Proxy {
        Proxy {
            inner: Arc::new(Inner {
                cache: Cache::new(config.cache_bytes),
                config,
                client,
                relays: Arc::new(Relays::default()),
                devices: std::sync::OnceLock::new(),
                router: std::sync::OnceLock::new(),
                forwarded: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                forward_all: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &ProxyConfig {
        &self.inner.config
    }

    /// The counters.
    pub fn stats(&self) -> ProxyStats {
        ProxyStats {
            forwarded: self.inner.forwarded.load(Ordering::Relaxed),
            refused: self.inner.refused.load(Ordering::Relaxed),
            relays: self.inner.relays.len(),
            cache: self.inner.cache.stats(),
        }
    }

    /// `site` with this proxy answering its forward-proxy requests (Proxy-Uri, Proxy-Scheme)
    /// for the targets [`ProxyConfig::allow`] allows (and for devices, with
    /// [`Proxy::devices`]).
    pub fn forward(&self, site: Site) -> Site {
        self.inner.forward_all.store(true, Ordering::Relaxed);
        self.forward_handler(site)
    }

    fn forward_handler(&self, site: Site) -> Site {
        let p = self.clone();
        site.forward_proxy(move |req: IncomingRequest| {
            let p = p.clone();
            async move { p.forward_request(req).await }
        })
    }

    /// `site` with every request at or below `prefix` sent on to `base` (the rest of the path
    /// appended to its path, the query replaced by the request's).
    pub fn reverse(&self, site: Site, prefix: &str, base: Uri) -> Site {
        let p = self.clone();
        let depth = prefix.split('/').filter(|s| !s.is_empty()).count();
        site.subtree(
            prefix,
            move |req: IncomingRequest| {
                let p = p.clone();
                let target = under(&base, &req.path()[depth..], req.query());
                async move { p.relay(req, Upstream::Uri(target)).await }
            },
            Vec::new(),
        )
    }

    /// `site` with every request whose Uri-Host (or WebSocket Host) is `name` sent on to
    /// `base`, the request's path appended to its path.
    pub fn reverse_host(&self, site: Site, name: &str, base: Uri) -> Site {
        let p = self.clone();
        site.host(
            HostMatch::Exact(name.to_ascii_lowercase()),
            move |req: IncomingRequest| {
                let p = p.clone();
                let target = under(&base, &req.path(), req.query());
                async move { p.relay(req, Upstream::Uri(target)).await }
            },
        )
    }

    /// `site` with requests for `NAME.DOMAIN` (by Uri-Host, or as a forward-proxy target
    /// `coap://NAME.DOMAIN/…` of any scheme) sent to the device `NAME` of `devices` over its
    /// own connection; a name that is not connected gets 4.04 at once. Without
    /// [`Proxy::forward`], forward-proxy requests for other targets get 5.05. Call once per
    /// proxy.
    pub fn devices(&self, site: Site, domain: &str, devices: Arc<dyn Devices>) -> Site {
        let suffix = format!(".{}", domain.trim_start_matches('.').to_ascii_lowercase());
        let _ = self.inner.devices.set((suffix.clone(), devices));
        let site = self.forward_handler(site);
        let p = self.clone();
        site.host(HostMatch::Suffix(suffix), move |req: IncomingRequest| {
            let p = p.clone();
            async move {
                let uri = match req.target_uri() {
                    Ok(u) => u,
                    Err(e) => return diagnostic(Code::BAD_REQUEST, e.to_string()),
                };
                match p.device(&uri) {
                    Some(Ok(up)) => p.relay(req, up).await,
                    Some(Err(answer)) => answer,
                    None => diagnostic(Code::NOT_FOUND, "no such device"),
                }
            }
        })
    }

    /// Devices not connected here are asked for through `router` (another instance of a
    /// cluster may hold them). Set once, before requests come.
    pub fn set_router(&self, router: Arc<dyn Router>) {
        let _ = self.inner.router.set(router);
    }

    /// For a URI naming a device (`NAME.DOMAIN`): the device, or the 4.04 for one that is not
    /// connected. `None`: not a device name.
    fn device(&self, uri: &Uri) -> Option<Result<Upstream, Message>> {
        let (suffix, devices) = self.inner.devices.get()?;
        let Host::Name(host) = &uri.host else {
            return None;
        };
        let name = host
            .strip_suffix(suffix.as_str())
            .filter(|n| !n.is_empty())?;
        Some(match devices.remote(name) {
            Some(remote) if remote.is_connected() => {
                let mut uri = uri.clone();
                uri.scheme = remote.scheme();
                uri.port = None;
                Ok(Upstream::Device { remote, uri })
            }
            _ if self.inner.router.get().is_some() => {
                let router = self.inner.router.get().cloned()?;
                let mut uri = uri.clone();
                uri.port = None;
                Ok(Upstream::Routed {
                    router,
                    name: name.to_owned(),
                    uri,
                })
            }
            _ => {
                info!(
                    device = name,
                    "request for a device that is not connected: 4.04"
                );
                Err(diagnostic(
                    Code::NOT_FOUND,
                    format!("device {name:?} is not connected"),
                ))
            }
        })
    }

    fn refuse(&self, answer: Message) -> Message {
        self.inner.refused.fetch_add(1, Ordering::Relaxed);
        answer
    }

    async fn forward_request(&self, req: IncomingRequest) -> Message {
        let uri = match forward_target(&req) {
            Ok(u) => u,
            Err(answer) => {
                info!(remote = %req.remote, code = %answer.code, "forward-proxy request refused: bad target");
                return self.refuse(answer);
            }
        };
        if let Some(device) = self.device(&uri) {
            return match device {
                Ok(up) => self.relay(req, up).await,
                Err(answer) => self.refuse(answer),
            };
        }
        if !self.inner.forward_all.load(Ordering::Relaxed) {
            info!(remote = %req.remote, target = %uri, "forward-proxy request for a target that is no device: 5.05");
            return self.refuse(diagnostic(
                Code::PROXYING_NOT_SUPPORTED,
                "this endpoint forwards to its connected devices only",
            ));
        }
        if !self.inner.config.allow.allows(&uri) {
            info!(remote = %req.remote, target = %uri, "forward-proxy target not allowed: 5.05");
            return self.refuse(diagnostic(
                Code::PROXYING_NOT_SUPPORTED,
                format!(
                    "this proxy does not forward to {}://{}",
                    uri.scheme,
                    uri.authority()
                ),
            ));
        }
        self.relay(req, Upstream::Uri(uri)).await
    }

    /// The request to send upstream for `req`: its method, payload and end-to-end options
    /// (the Uri-* options come from the target), with the Hop-Limit counted down.
    fn upstream_message(&self, req: &IncomingRequest) -> Result<Message, Message> {
        let m = &req.message;
        if let Some(n) = unknown_unsafe(&m.options) {
            info!(remote = %req.remote, option = n.0, "proxy request with an unknown unsafe option: 4.02");
            return Err(diagnostic(
                Code::BAD_OPTION,
                format!(
                    "option {} is unsafe to forward and unknown to this proxy",
                    n.0
                ),
            ));
        }
        let hops = match m.options.get(OptionNumber::HOP_LIMIT) {
            Some(v) => coapws_proto::option::decode_uint(v).unwrap_or(0),
            None => u32::from(self.inner.config.hop_limit) + 1,
        };
        if hops <= 1 {
            info!(remote = %req.remote, "Hop-Limit reached: 5.08");
            return Err(diagnostic(Code::HOP_LIMIT_REACHED, "Hop-Limit reached"));
        }
        let mut up = Message::new(m.code).with_payload(m.payload.clone());
        for (n, v) in m.options.iter().filter(|(n, _)| !not_forwarded(*n)) {
            up.options.push(n, v.clone());
        }
        up.options.set_uint(OptionNumber::HOP_LIMIT, hops - 1);
        Ok(up)
    }

    /// Answers `req` from `upstream`: from the cache, through a relayed observation, or by
    /// asking upstream, within the patience.
    async fn relay(&self, req: IncomingRequest, upstream: Upstream) -> Message {
        let mut up = match self.upstream_message(&req) {
            Ok(m) => m,
            Err(answer) => return self.refuse(answer),
        };
        let uri = upstream.uri().clone();
        let safe = matches!(up.code, Code::GET | Code::FETCH);
        let key = CacheKey::of(&uri, &up);
        let patience = self.inner.config.patience;
        if safe && (req.is_observe_registration() || req.is_notification()) {
            return self.observe(&req, upstream, up, key).await;
        }
        let client_etags = etags(&req.message);
        let mut stale = None;
        // A device on another instance may be gone since: only its holder can tell, so its
        // answers are not kept here (the holder checks its connection on every request).
        let cacheable = safe && !matches!(upstream, Upstream::Routed { .. });
        if cacheable {
            match self.inner.cache.lookup(&key, Instant::now()) {
                Lookup::Fresh(m) => {
                    debug!(target = %uri, "answered from the cache");
                    return validated(&client_etags, m);
                }
                Lookup::Stale(etag) => stale = Some(etag),
                Lookup::Miss => {}
            }
        }
        for e in client_etags.iter().chain(&stale) {
            if !up.options.get_all(OptionNumber::ETAG).any(|have| have == e) {
                up.options.push(OptionNumber::ETAG, e.clone());
            }
        }
        self.inner.forwarded.fetch_add(1, Ordering::Relaxed);
        let sent = tokio::time::timeout(patience, self.send(&upstream, up)).await;
        let response = match sent {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                info!(target = %uri, error = %e, "upstream request failed");
                return error_answer(&e);
            }
            Err(_) => {
                info!(target = %uri, "upstream did not answer within the patience: 5.04");
                return error_answer(&Error::Timeout);
            }
        };
        if let Some(n) = unknown_unsafe(&response.options) {
            info!(target = %uri, option = n.0, "upstream answer with an unknown unsafe option: 5.02");
            return diagnostic(
                Code::BAD_GATEWAY,
                format!(
                    "the answer carried option {}, unsafe and unknown to this proxy",
                    n.0
                ),
            );
        }
        let now = Instant::now();
        match response.code {
            Code::CREATED | Code::DELETED | Code::CHANGED => self.inner.cache.invalidate(&uri),
            Code::VALID if stale.is_some() && cacheable => {
                // Our stale copy is valid again (or the client's own, which we pass on).
                if let Some(m) = self.inner.cache.revalidate(&key, &response, now) {
                    return validated(&client_etags, m);
                }
            }
            Code::CONTENT if cacheable => self.inner.cache.put(key, &response, now),
            _ => {}
        }
        validated(&client_etags, response)
    }

    /// Sends `m` upstream and returns the whole answer.
    async fn send(&self, upstream: &Upstream, m: Message) -> Result<Message, Error> {
        match upstream {
            Upstream::Uri(uri) => {
                let request = Request {
                    method: m.code,
                    uri: uri.clone(),
                    options: m.options,
                    payload: m.payload,
                    timeout: Some(self.inner.config.patience),
                    confirmable: true,
                    body_file: None,
                    progress: None,
                    block_szx: None,
                    token: None,
                    omit_uri_host: false,
                };
                self.inner.client.send(request).await.map(|r| r.message)
            }
            Upstream::Device { remote, uri } => {
                let mut m = m;
                with_target(&mut m, uri);
                self.inner
                    .client
                    .request_to(remote, m)
                    .await
                    .map(|r| r.message)
            }
            Upstream::Routed { router, name, uri } => {
                let mut m = m;
                with_target(&mut m, uri);
                Ok(router.request(name, m).await)
            }
        }
    }

    /// A registration (or a notification being rendered) through the relay of `key`.
    async fn observe(
        &self,
        req: &IncomingRequest,
        upstream: Upstream,
        up: Message,
        key: CacheKey,
    ) -> Message {
        let relays = &self.inner.relays;
        if req.is_notification() {
            return match relays.get(&key) {
                Some(r) => r.latest().await,
                None => diagnostic(Code::BAD_GATEWAY, "the upstream observation is over"),
            };
        }
        let client = self.inner.client.clone();
        let patience = self.inner.config.patience;
        let forwarded = &self.inner.forwarded;
        let relay = relays
            .join(&key, || async move {
                forwarded.fetch_add(1, Ordering::Relaxed);
                let started = match upstream {
                    Upstream::Uri(uri) => {
                        let request = Request {
                            method: up.code,
                            uri,
                            options: up.options,
                            payload: up.payload,
                            timeout: Some(patience),
                            confirmable: true,
                            body_file: None,
                            progress: None,
                            block_szx: None,
                            token: None,
                            omit_uri_host: false,
                        };
                        client.observe(request).await
                    }
                    Upstream::Device { remote, uri } => {
                        let mut m = up;
                        with_target(&mut m, &uri);
                        client.observe_to(&remote, m).await
                    }
                    Upstream::Routed { router, name, uri } => {
                        let mut m = up;
                        with_target(&mut m, &uri);
                        return router.observe(&name, m).await;
                    }
                };
                started
                    .map(|o| Box::new(o) as Box<dyn Notifications>)
                    .map_err(|e| error_answer(&e))
            })
            .await;
        if tokio::time::timeout(patience, relay.latest())
            .await
            .is_err()
        {
            return error_answer(&Error::Timeout);
        }
        // Watched before the latest notification is read, so one arriving meanwhile is not
        // missed; the registration is dropped if the answer is no 2.xx or the relay ended.
        req.observe_with(&relay.observable);
        relay.current()
    }
}

/// Puts `uri`'s path and query on `m` (a request to a device over its own connection: no
/// Uri-Host, the device is who it is).
pub(crate) fn with_target(m: &mut Message, uri: &Uri) {
    let mut o = uri.request_options_to(Some(&uri.host), uri.port_or_default());
    for (n, v) in m.options.iter() {
        o.push(n, v.clone());
    }
    m.options = o;
}
