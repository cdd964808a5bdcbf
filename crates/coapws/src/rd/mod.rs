//! A CoRE Resource Directory (RFC 9176): endpoints register the links to their resources,
//! lookup clients find them.
//!
//! [`ResourceDirectory::mount`] adds to a [`Site`] the registration interface (`POST /rd`),
//! the registration resources (`/rd/<id>`: update, read, remove), and the lookup interface
//! (`/rd-lookup/ep`, `/rd-lookup/res`), all advertised in `/.well-known/core`. Registrations
//! live in an [`RdStore`] ([`MemoryStore`] by default) and expire after their lifetime.
//!
//! An endpoint that registers over a connection it opened to us (WebSocket, TCP, TLS), for
//! example from behind a NAT, is reachable only over that connection: the directory keeps
//! its [`Remote`] ([`ResourceDirectory::endpoint_remote`]), ends the registration when the
//! connection closes, and, with [`RdConfig::proxy_domain`], gives it a base URI under that
//! domain for a proxy to serve.

mod error;
mod lookup;
mod params;
mod remotes;
mod resolve;
mod store;

pub use error::RdError;
pub use params::{MAX_ATTRS, MAX_BASE_LEN, MAX_NAME_LEN};
pub use store::{MemoryStore, Owner, RdStore, Registration};

use crate::remote::Remote;
use crate::site::{IncomingRequest, Resource, Site};
use coapws_proto::code::Code;
use coapws_proto::content_format::ContentFormat;
use coapws_proto::link_format::{self, Link};
use coapws_proto::message::Message;
use coapws_proto::option::OptionNumber;
use coapws_proto::uri::Scheme;
use lookup::LookupQuery;
use params::RegistrationQuery;
use remotes::{Remotes, tied_connection};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};
use tracing::{debug, info};

/// Settings of a [`ResourceDirectory`].
#[derive(Clone, Debug)]
pub struct RdConfig {
    /// When set, an endpoint that registers over a connection it opened to us, without a
    /// `base`, gets the base `SCHEME://EP.DOMAIN` (`SCHEME://EP.D.DOMAIN` in sector `D`),
    /// SCHEME being that connection's (e.g. `coap+ws`): a name for a proxy to serve it under.
    /// `ep` and `d` must then be host name labels (lowercase letters, digits, `-`).
    pub proxy_domain: Option<String>,
    /// Most registrations held at once; a new one beyond that gets 5.03.
    pub max_registrations: usize,
    /// Most links in one registration (4.13 beyond).
    pub max_links: usize,
    /// Largest registration payload in bytes (4.13 beyond).
    pub max_payload: usize,
    /// Lifetime of a registration that gives no `lt`, in seconds (RFC 9176: 90000).
    pub default_lifetime: u32,
    /// Largest `lt` accepted, in seconds (4.00 beyond).
    pub max_lifetime: u32,
    /// Max-Age of the 5.03 answered when the directory is full: when to try again.
    pub full_retry_after: u32,
}

impl Default for RdConfig {
    fn default() -> RdConfig {
        RdConfig {
            proxy_domain: None,
            max_registrations: 10_000,
            max_links: 1_000,
            max_payload: 64 * 1024,
            default_lifetime: 90_000,
            max_lifetime: u32::MAX,
            full_retry_after: 60,
        }
    }
}

/// A resource directory; cheap to clone (clones share the registrations).
#[derive(Clone)]
pub struct ResourceDirectory {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn RdStore>,
    config: RdConfig,
    remotes: Remotes,
    /// Serializes changes (find, then put) so that two registrations of one endpoint cannot
    /// both create one.
    write: tokio::sync::Mutex<()>,
    ids: Ids,
}

/// What a mounted handler does.
#[derive(Clone, Copy)]
enum Interface {
    Register,
    Registration,
    LookupEndpoints,
    LookupResources,
}

impl ResourceDirectory {
    /// A directory keeping its registrations in memory.
    pub fn new(config: RdConfig) -> ResourceDirectory {
        ResourceDirectory::with_store(Arc::new(MemoryStore::new()), config)
    }

    /// A directory keeping its registrations in `store`.
    pub fn with_store(store: Arc<dyn RdStore>, config: RdConfig) -> ResourceDirectory {
        ResourceDirectory {
            inner: Arc::new(Inner {
                store,
                config,
                remotes: Remotes::default(),
                write: tokio::sync::Mutex::new(()),
                ids: Ids::default(),
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &RdConfig {
        &self.inner.config
    }

    /// `site` with the directory's interfaces added: `/rd` (`rt="core.rd"`), `/rd/<id>`,
    /// `/rd-lookup/ep` (`rt="core.rd-lookup-ep"`) and `/rd-lookup/res`
    /// (`rt="core.rd-lookup-res"`), the three shown in `/.well-known/core` with `ct=40`.
    pub fn mount(&self, site: Site) -> Site {
        let advertised = |rt: &str| Resource::new().attr("rt", rt).attr("ct", "40");
        site.resource(
            "/rd",
            advertised("core.rd").post(self.handler(Interface::Register)),
        )
        .subtree("/rd", self.handler(Interface::Registration), Vec::new())
        .resource(
            "/rd-lookup/ep",
            advertised("core.rd-lookup-ep").get(self.handler(Interface::LookupEndpoints)),
        )
        .resource(
            "/rd-lookup/res",
            advertised("core.rd-lookup-res").get(self.handler(Interface::LookupResources)),
        )
    }

    /// The live connection of endpoint `ep` (default sector), when it registered (or last
    /// updated) over a connection it opened to us and that connection is still up: the way to
    /// send it requests ([`Remote::request`]) although it has no reachable address.
    pub fn endpoint_remote(&self, ep: &str) -> Option<Remote> {
        self.inner.remotes.of_endpoint(ep, Instant::now())
    }

    /// Lets go of registration `id`'s connection, if this directory holds it: the endpoint
    /// registered again elsewhere (another instance of a cluster), so requests for it must not
    /// go over this connection any more. The registration itself stays as stored.
    pub fn untie(&self, id: &str) {
        if self.inner.remotes.holds(id) {
            self.inner.remotes.forget(id);
            info!(
                id,
                "rd: registration taken over elsewhere: its connection here is let go"
            );
        }
    }

    /// Every registration that has not expired, in registration order.
    pub async fn registrations(&self) -> Vec<Registration> {
        let _write = self.inner.write.lock().await;
        self.sweep().await
    }

    fn handler(&self, interface: Interface) -> impl crate::site::Handler {
        let rd = self.clone();
        move |req: IncomingRequest| {
            let rd = rd.clone();
            async move {
                let answer = match interface {
                    Interface::Register => rd.register(&req).await,
                    Interface::Registration => rd.registration(&req).await,
                    Interface::LookupEndpoints => rd.lookup(&req, lookup::lookup_endpoints).await,
                    Interface::LookupResources => rd.lookup(&req, lookup::lookup_resources).await,
                };
                answer.unwrap_or_else(|e| e.to_message())
            }
        }
    }

    /// POST `/rd` (RFC 9176 §5.3). A registration of an endpoint name and sector already
    /// registered replaces that registration, at the same location.
    async fn register(&self, req: &IncomingRequest) -> Result<Message, RdError> {
        let config = &self.inner.config;
        let q = params::parse_query(&req.query(), config, true)?;
        let links = params::parse_links(&req.message, config)?;
        let RegistrationQuery {
            ep: Some(ep),
            d,
            lt,
            base,
            attrs,
        } = q
        else {
            return Err(RdError::bad("ep (the endpoint name) is required"));
        };
        let (base, base_explicit) = match base {
            Some(b) => (b, true),
            None => (self.derived_base(&req.remote, &ep, d.as_deref())?, false),
        };
        let lt = lt.unwrap_or(config.default_lifetime.min(config.max_lifetime));
        let _write = self.inner.write.lock().await;
        self.sweep().await;
        let existing = self.inner.store.find(&ep, d.as_deref()).await;
        let id = match &existing {
            Some(old) => old.id.clone(),
            None => self.fresh_id().await?,
        };
        let reg = Registration {
            id,
            ep,
            d,
            lt,
            base,
            base_explicit,
            attrs,
            links,
            expires: expiry(lt),
            updated: SystemTime::now(),
            owner: owner(&req.remote),
        };
        self.inner.store.put(reg.clone()).await;
        self.track(&reg, &req.remote);
        let verb = if existing.is_some() {
            "replaced"
        } else {
            "new"
        };
        info!(id = %reg.id, ep = %reg.ep, d = ?reg.d, base = %reg.base, lt = reg.lt,
              links = reg.links.len(), from = %reg.owner.peer, "rd: {verb} registration");
        Ok(Message::new(Code::CREATED)
            .with_option(OptionNumber::LOCATION_PATH, "rd")
            .with_option(OptionNumber::LOCATION_PATH, reg.id))
    }

    /// An id no registration has.
    async fn fresh_id(&self) -> Result<String, RdError> {
        let config = &self.inner.config;
        if self.inner.store.count().await >= config.max_registrations {
            return Err(RdError::Full {
                retry: config.full_retry_after,
            });
        }
        loop {
            let id = self.inner.ids.next();
            if self.inner.store.get(&id).await.is_none() {
                return Ok(id);
            }
        }
    }

    /// The base of a registration that gives none (RFC 9176 §5.3: the requester's address),
    /// or a name under the proxy domain for an endpoint on a connection it opened to us.
    fn derived_base(&self, remote: &Remote, ep: &str, d: Option<&str>) -> Result<String, RdError> {
        if let (Some(domain), Some(_)) = (&self.inner.config.proxy_domain, tied_connection(remote))
        {
            return proxy_base(remote.scheme(), ep, d, domain);
        }
        match remote.uri() {
            Ok(u) => Ok(format!("{}://{}", u.scheme, u.authority())),
            Err(_) => Err(RdError::bad(
                "no base: set base= or run with a proxy domain (this endpoint has no address \
                 of its own: it is a client of this connection)",
            )),
        }
    }

    /// Requests to `/rd/<id>`: POST updates, GET reads, DELETE removes.
    async fn registration(&self, req: &IncomingRequest) -> Result<Message, RdError> {
        let path = req.path();
        let [_, id] = path.as_slice() else {
            return Err(RdError::NotFound);
        };
        match req.method() {
            Code::POST => self.update(req, id).await,
            Code::GET => self.read(id).await,
            Code::DELETE => self.remove(id).await,
            _ => Ok(Message::new(Code::METHOD_NOT_ALLOWED)),
        }
    }

    /// POST `/rd/<id>` (RFC 9176 §5.3.1): a new lifetime from now, and `lt`, `base` and
    /// attributes given replace theirs (each attribute named replaces all of that name). The
    /// request has no payload: links change by registering again.
    async fn update(&self, req: &IncomingRequest, id: &str) -> Result<Message, RdError> {
        let q = params::parse_query(&req.query(), &self.inner.config, false)?;
        let m = &req.message;
        if !m.payload.is_empty() || m.options.content_format().is_some() {
            return Err(RdError::bad(
                "a registration update has no payload (RFC 9176 5.3.1): register again to \
                 change the links",
            ));
        }
        let _write = self.inner.write.lock().await;
        let mut reg = self.live(id).await?;
        reg.lt = q.lt.unwrap_or(reg.lt);
        match q.base {
            Some(b) => (reg.base, reg.base_explicit) = (b, true),
            None if !reg.base_explicit => {
                reg.base = self.derived_base(&req.remote, &reg.ep, reg.d.as_deref())?;
            }
            None => {}
        }
        reg.attrs
            .retain(|(n, _)| !q.attrs.iter().any(|(given, _)| given == n));
        reg.attrs.extend(q.attrs);
        reg.expires = expiry(reg.lt);
        reg.updated = SystemTime::now();
        reg.owner = owner(&req.remote);
        self.inner.store.put(reg.clone()).await;
        self.track(&reg, &req.remote);
        debug!(id = %reg.id, ep = %reg.ep, lt = reg.lt, "rd: registration updated");
        Ok(Message::new(Code::CHANGED))
    }

    /// GET `/rd/<id>`: the links as registered.
    async fn read(&self, id: &str) -> Result<Message, RdError> {
        let reg = {
            let _write = self.inner.write.lock().await;
            self.live(id).await?
        };
        Ok(link_format_response(&reg.links))
    }

    /// DELETE `/rd/<id>`.
    async fn remove(&self, id: &str) -> Result<Message, RdError> {
        let _write = self.inner.write.lock().await;
        let reg = self.live(id).await?;
        self.inner.store.remove(id).await;
        self.inner.remotes.forget(id);
        info!(id = %reg.id, ep = %reg.ep, "rd: registration removed by its endpoint");
        Ok(Message::new(Code::DELETED))
    }

    /// GET `/rd-lookup/ep` or `/rd-lookup/res`.
    async fn lookup(
        &self,
        req: &IncomingRequest,
        select: fn(&[Registration], &LookupQuery) -> Vec<Link>,
    ) -> Result<Message, RdError> {
        let query = LookupQuery::parse(&req.query())?;
        let regs = self.registrations().await;
        Ok(link_format_response(&select(&regs, &query)))
    }

    /// Registration `id` if it is live; an expired one is removed. Call with `write` held.
    async fn live(&self, id: &str) -> Result<Registration, RdError> {
        let reg = self.inner.store.get(id).await.ok_or(RdError::NotFound)?;
        if reg.is_expired(Instant::now()) {
            self.expire(&reg).await;
            return Err(RdError::NotFound);
        }
        Ok(reg)
    }

    /// Removes every expired registration; returns the others. Call with `write` held.
    async fn sweep(&self) -> Vec<Registration> {
        let now = Instant::now();
        let (expired, live): (Vec<_>, Vec<_>) = self
            .inner
            .store
            .list()
            .await
            .into_iter()
            .partition(|r| r.is_expired(now));
        for reg in &expired {
            self.expire(reg).await;
        }
        live
    }

    async fn expire(&self, reg: &Registration) {
        self.inner.store.remove(&reg.id).await;
        self.inner.remotes.forget(&reg.id);
        info!(id = %reg.id, ep = %reg.ep, lt = reg.lt, "rd: registration expired");
    }

    /// Ties `reg` to the connection `remote` lives on (if it is one it opened to us), and
    /// watches that connection: when it closes, the registration ends.
    fn track(&self, reg: &Registration, remote: &Remote) {
        let remotes = &self.inner.remotes;
        if !remotes.track(&reg.id, &reg.ep, reg.d.as_deref(), reg.expires, remote) {
            return;
        }
        let Some(conn) = tied_connection(remote) else {
            return;
        };
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let (id, remote, tied) = (reg.id.clone(), remote.clone(), reg.owner.clone());
        tokio::spawn(async move {
            remote.closed().await;
            if let Some(inner) = weak.upgrade() {
                ResourceDirectory { inner }
                    .connection_closed(&id, conn, &tied)
                    .await;
            }
        });
    }

    /// Connection `conn` closed: registration `id` ends, if that is still its connection and
    /// the stored registration still the one made over it (`tied`): with a shared store, the
    /// endpoint may have registered again elsewhere since, and that registration stays.
    async fn connection_closed(&self, id: &str, conn: u64, tied: &Owner) {
        let _write = self.inner.write.lock().await;
        if !self.inner.remotes.forget_if(id, conn) {
            return;
        }
        let current = self.inner.store.get(id).await;
        if current.as_ref().is_some_and(|r| r.owner != *tied) {
            info!(
                id,
                "rd: connection closed; its registration was made again elsewhere and stays"
            );
            return;
        }
        if let Some(reg) = self.inner.store.remove(id).await {
            info!(id = %reg.id, ep = %reg.ep, from = %reg.owner.peer,
                  "rd: registration removed: its connection closed");
        }
    }
}

/// `SCHEME://EP[.D].DOMAIN`.
fn proxy_base(scheme: Scheme, ep: &str, d: Option<&str>, domain: &str) -> Result<String, RdError> {
    if !params::is_host_label(ep) || d.is_some_and(|d| !params::is_host_label(d)) {
        return Err(RdError::bad(
            "to be reached through the proxy, ep (and d) must be host name labels \
             (a-z, 0-9, -); or set base=",
        ));
    }
    Ok(match d {
        Some(d) => format!("{scheme}://{ep}.{d}.{domain}"),
        None => format!("{scheme}://{ep}.{domain}"),
    })
}

fn owner(remote: &Remote) -> Owner {
    Owner {
        peer: remote.to_string(),
        connection: tied_connection(remote),
    }
}

/// When a registration of lifetime `lt` made now expires.
fn expiry(lt: u32) -> Instant {
    let now = Instant::now();
    now.checked_add(Duration::from_secs(u64::from(lt)))
        .unwrap_or(now + Duration::from_secs(365 * 86_400))
}

fn link_format_response(links: &[Link]) -> Message {
    Message::response(Code::CONTENT, link_format::serialize(links))
        .with_content_format(ContentFormat::LINK_FORMAT.0)
}

/// Short opaque registration ids: a counter through a randomly keyed hash, as 8 base32
/// characters (40 bits), so ids neither repeat soon nor tell how many came before.
#[derive(Default)]
struct Ids {
    keys: std::collections::hash_map::RandomState,
    next: AtomicU64,
}

impl Ids {
    fn next(&self) -> String {
        const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
        let mut h = self.keys.build_hasher();
        h.write_u64(self.next.fetch_add(1, Ordering::Relaxed));
        let bits = h.finish();
        (0..8)
            .map(|i| char::from(ALPHABET[((bits >> (5 * i)) & 31) as usize]))
            .collect()
    }
}

/// The directory's endpoints that registered over their own connection, for a proxy to reach
/// ([`crate::proxy::Proxy::devices`]): `NAME` is the endpoint name (default sector).
impl crate::proxy::Devices for ResourceDirectory {
    fn remote(&self, name: &str) -> Option<Remote> {
        self.endpoint_remote(name)
    }
}
