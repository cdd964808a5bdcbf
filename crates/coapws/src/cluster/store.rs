//! The Resource Directory's registrations in NATS JetStream key-value, shared by every
//! instance of a cluster: bucket `coapws_<cluster>_rd`, one key per registration id, each
//! entry stamped with the instance that wrote it. Every instance writes its heartbeat (a
//! wall-clock time) to bucket `coapws_<cluster>_hb` under its own id; an entry whose
//! instance's heartbeat has lapsed counts as gone: it is left out of every answer and deleted
//! by whoever sees it first, so a dead instance's registrations vanish within the lapse.
//!
//! Lifetimes cross machines as wall-clock times (the instances' clocks are assumed to agree
//! to within a second or so).

use crate::rd::{Owner, RdStore, Registration};
use crate::site::BoxFuture;
use async_nats::jetstream::kv::Store;
use coapws_proto::link_format;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{info, warn};

/// A registration as stored: plain, portable fields.
#[derive(Serialize, Deserialize)]
struct Stored {
    id: String,
    ep: String,
    d: Option<String>,
    lt: u32,
    base: String,
    base_explicit: bool,
    attrs: Vec<(String, Option<String>)>,
    /// The links in link-format.
    links: String,
    /// Wall-clock expiry, milliseconds since the Unix epoch.
    expires_ms: u64,
    updated_ms: u64,
    peer: String,
    connection: Option<u64>,
    /// The instance that wrote it (and holds its connection, if any).
    instance: String,
    /// Registration order (wall-clock milliseconds of the first registration).
    order: u64,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

impl Stored {
    fn of(r: &Registration, instance: &str, order: u64) -> Stored {
        let left = r.expires.saturating_duration_since(Instant::now());
        Stored {
            id: r.id.clone(),
            ep: r.ep.clone(),
            d: r.d.clone(),
            lt: r.lt,
            base: r.base.clone(),
            base_explicit: r.base_explicit,
            attrs: r.attrs.clone(),
            links: link_format::serialize(&r.links),
            expires_ms: unix_ms(SystemTime::now() + left),
            updated_ms: unix_ms(r.updated),
            peer: r.owner.peer.clone(),
            connection: r.owner.connection,
            instance: instance.to_owned(),
            order,
        }
    }
    fn registration(&self) -> Option<Registration> {
        let left = from_unix_ms(self.expires_ms)
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        Some(Registration {
            id: self.id.clone(),
            ep: self.ep.clone(),
            d: self.d.clone(),
            lt: self.lt,
            base: self.base.clone(),
            base_explicit: self.base_explicit,
            attrs: self.attrs.clone(),
            links: link_format::parse(&self.links).ok()?,
            expires: Instant::now() + left,
            updated: from_unix_ms(self.updated_ms),
            owner: Owner {
                peer: self.peer.clone(),
                connection: self.connection,
            },
        })
    }
}

/// Registrations in JetStream key-value, shared by the instances of a cluster.
#[derive(Clone)]
pub struct KvStore {
    inner: Arc<Inner>,
}

struct Inner {
    rd: Store,
    heartbeats: Store,
    instance: String,
    lapse: Duration,
    /// When the NATS connection last came up: for a lapse after it, no instance counts as
    /// gone (their heartbeats could not be written while the server was away).
    connected_since: Arc<std::sync::Mutex<Instant>>,
}

impl KvStore {
    pub(crate) fn new(
        rd: Store,
        heartbeats: Store,
        instance: String,
        lapse: Duration,
        connected_since: Arc<std::sync::Mutex<Instant>>,
    ) -> KvStore {
        KvStore {
            inner: Arc::new(Inner {
                rd,
                heartbeats,
                instance,
                lapse,
                connected_since,
            }),
        }
    }
}

impl Inner {
    async fn read(&self, id: &str) -> Option<Stored> {
        match self.rd.get(id).await {
            Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
                Ok(s) => Some(s),
                Err(e) => {
                    warn!(id, error = %e, "cluster: unreadable registration entry ignored");
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                warn!(id, error = %e, "cluster: directory read failed");
                None
            }
        }
    }

    /// The instances whose heartbeat is recent, among `of`.
    async fn alive(&self, of: impl Iterator<Item = String>) -> HashMap<String, bool> {
        let mut out = HashMap::new();
        for instance in of {
            if out.contains_key(&instance) {
                continue;
            }
            let alive = instance == self.instance || self.heartbeat_recent(&instance).await;
            out.insert(instance, alive);
        }
        out
    }

    async fn heartbeat_recent(&self, instance: &str) -> bool {
        let since = *self
            .connected_since
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if since.elapsed() < self.lapse {
            return true;
        }
        let Ok(Some(v)) = self.heartbeats.get(instance).await else {
            return false;
        };
        let Some(ms) = std::str::from_utf8(&v)
            .ok()
            .and_then(|t| t.parse::<u64>().ok())
        else {
            return false;
        };
        SystemTime::now()
            .duration_since(from_unix_ms(ms))
            .map_or(true, |age| age < self.lapse)
    }

    /// `s` if its instance is alive; otherwise it is deleted and `None`.
    async fn if_alive(&self, s: Stored) -> Option<Stored> {
        if s.instance == self.instance || self.heartbeat_recent(&s.instance).await {
            return Some(s);
        }
        self.drop_dead(&s).await;
        None
    }

    async fn drop_dead(&self, s: &Stored) {
        info!(id = %s.id, ep = %s.ep, instance = %s.instance,
              "cluster: registration removed: its instance's heartbeat lapsed");
        if let Err(e) = self.rd.delete(&s.id).await {
            warn!(id = %s.id, error = %e, "cluster: delete failed");
        }
    }

    async fn all(&self) -> Vec<Stored> {
        let mut keys = match self.rd.keys().await {
            Ok(k) => k,
            Err(e) => {
                warn!(error = %e, "cluster: directory listing failed");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        while let Some(k) = keys.next().await {
            if let Ok(k) = k
                && let Some(s) = self.read(&k).await
            {
                out.push(s);
            }
        }
        let alive = self.alive(out.iter().map(|s| s.instance.clone())).await;
        let (live, dead): (Vec<_>, Vec<_>) = out
            .into_iter()
            .partition(|s| alive.get(&s.instance).copied().unwrap_or(false));
        for s in &dead {
            self.drop_dead(s).await;
        }
        let mut live = live;
        live.sort_by_key(|s| (s.order, s.id.clone()));
        live
    }
}

impl RdStore for KvStore {
    fn put(&self, registration: Registration) -> BoxFuture<()> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let order = match inner.read(&registration.id).await {
                Some(old) => old.order,
                None => unix_ms(SystemTime::now()),
            };
            let stored = Stored::of(&registration, &inner.instance, order);
            match serde_json::to_vec(&stored) {
                Ok(v) => {
                    if let Err(e) = inner.rd.put(&registration.id, v.into()).await {
                        warn!(id = %registration.id, error = %e, "cluster: directory write failed");
                    }
                }
                Err(e) => warn!(error = %e, "cluster: registration not serializable"),
            }
        })
    }
    fn get(&self, id: &str) -> BoxFuture<Option<Registration>> {
        let (inner, id) = (self.inner.clone(), id.to_owned());
        Box::pin(async move {
            let s = inner.read(&id).await?;
            inner.if_alive(s).await?.registration()
        })
    }
    fn find(&self, ep: &str, d: Option<&str>) -> BoxFuture<Option<Registration>> {
        let (inner, ep, d) = (self.inner.clone(), ep.to_owned(), d.map(str::to_owned));
        Box::pin(async move {
            inner
                .all()
                .await
                .into_iter()
                .find(|s| s.ep == ep && s.d == d)
                .and_then(|s| s.registration())
        })
    }
    fn remove(&self, id: &str) -> BoxFuture<Option<Registration>> {
        let (inner, id) = (self.inner.clone(), id.to_owned());
        Box::pin(async move {
            let s = inner.read(&id).await?;
            if let Err(e) = inner.rd.delete(&id).await {
                warn!(id, error = %e, "cluster: delete failed");
            }
            s.registration()
        })
    }
    fn list(&self) -> BoxFuture<Vec<Registration>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            inner
                .all()
                .await
                .iter()
                .filter_map(Stored::registration)
                .collect()
        })
    }
    fn count(&self) -> BoxFuture<usize> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.all().await.len() })
    }
}

impl KvStore {
    /// Calls `on_foreign(id)` for every registration another instance writes from now on
    /// (a takeover of one held here, or any other), until the watch ends.
    pub(crate) fn watch_foreign(&self, on_foreign: impl Fn(&str) + Send + 'static) {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let mut watch = match inner.rd.watch_all().await {
                Ok(w) => w,
                Err(e) => return warn!(error = %e, "cluster: cannot watch the directory"),
            };
            while let Some(entry) = watch.next().await {
                let Ok(entry) = entry else { continue };
                if entry.operation != async_nats::jetstream::kv::Operation::Put {
                    continue;
                }
                match serde_json::from_slice::<Stored>(&entry.value) {
                    Ok(s) if s.instance != inner.instance => on_foreign(&s.id),
                    _ => {}
                }
            }
        });
    }

    /// The instance holding endpoint `ep`'s registration (default sector), if it is alive.
    pub(crate) async fn owner_of(&self, ep: &str) -> Option<String> {
        self.inner
            .all()
            .await
            .into_iter()
            .find(|s| s.ep == ep && s.d.is_none())
            .map(|s| s.instance)
    }
}
