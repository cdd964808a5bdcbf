//! The Resource Directory's registrations in NATS JetStream key-value, shared by every
//! instance of a cluster: bucket `coapws_<cluster>_rd`, one key per registration id, each
//! entry stamped with the instance that wrote it. Every instance writes its heartbeat (a
//! wall-clock time) to bucket `coapws_<cluster>_hb` under its own id; an entry whose
//! instance's heartbeat has lapsed counts as gone: it is left out of every answer and deleted
//! by whoever sees it first, so a dead instance's registrations vanish within the lapse.
//!
//! Each instance keeps a copy of both buckets in memory, fed by key-value watches: lookups
//! and routing read the copy (no NATS round trip per request), writes go to NATS and to the
//! copy at once. Lifetimes cross machines as wall-clock times (the instances' clocks are
//! assumed to agree to within a second or so).

use crate::rd::{Owner, RdStore, Registration};
use crate::site::BoxFuture;
use async_nats::jetstream::kv::Store;
use coapws_proto::link_format;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{debug, info, warn};

/// A registration as stored: plain, portable fields.
#[derive(Clone, Serialize, Deserialize)]
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

/// Called with the id of every registration another instance writes.
type OnForeign = Box<dyn Fn(&str) + Send + Sync>;

struct Inner {
    rd: Store,
    heartbeats: Store,
    instance: String,
    lapse: Duration,
    /// When the NATS connection last came up: for a lapse after it, no instance counts as
    /// gone (their heartbeats could not be written while the server was away).
    connected_since: Arc<Mutex<Instant>>,
    /// The registrations, by id, as the watch last saw them (and as written here).
    entries: Mutex<HashMap<String, Stored>>,
    /// The heartbeats, by instance: wall-clock milliseconds.
    beats: Mutex<HashMap<String, u64>>,
    on_foreign: Mutex<Option<OnForeign>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl KvStore {
    /// The store over buckets `rd` and `heartbeats`; its copies are filled before it returns
    /// and kept up to date by watches that run as long as the store.
    pub(crate) async fn open(
        rd: Store,
        heartbeats: Store,
        instance: String,
        lapse: Duration,
        connected_since: Arc<Mutex<Instant>>,
    ) -> KvStore {
        let store = KvStore {
            inner: Arc::new(Inner {
                rd,
                heartbeats,
                instance,
                lapse,
                connected_since,
                entries: Mutex::new(HashMap::new()),
                beats: Mutex::new(HashMap::new()),
                on_foreign: Mutex::new(None),
            }),
        };
        let weak = Arc::downgrade(&store.inner);
        tokio::spawn(watch(weak.clone(), true));
        tokio::spawn(watch(weak.clone(), false));
        store.inner.load().await;
        tokio::spawn(sweep(weak));
        store
    }

    /// Calls `on_foreign(id)` for every registration another instance writes from now on (a
    /// takeover of one held here, or any other).
    pub(crate) fn watch_foreign(&self, on_foreign: impl Fn(&str) + Send + Sync + 'static) {
        *lock(&self.inner.on_foreign) = Some(Box::new(on_foreign));
    }

    /// The instance holding endpoint `ep`'s registration (default sector), if it is alive.
    pub(crate) fn owner_of(&self, ep: &str) -> Option<String> {
        self.inner
            .live()
            .into_iter()
            .find(|s| s.ep == ep && s.d.is_none())
            .map(|s| s.instance)
    }
}

/// Follows one bucket (`rd`: the registrations, else the heartbeats) into its copy, again
/// after the watch breaks off, until the store is dropped.
async fn watch(inner: std::sync::Weak<Inner>, registrations: bool) {
    loop {
        let Some(i) = inner.upgrade() else { return };
        let bucket = if registrations { &i.rd } else { &i.heartbeats };
        let mut w = match bucket.watch_all().await {
            Ok(w) => w,
            Err(e) => {
                debug!(error = %e, "cluster: directory watch not started; retrying");
                drop(i);
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        drop(i);
        while let Some(entry) = w.next().await {
            let Ok(entry) = entry else { continue };
            let Some(i) = inner.upgrade() else { return };
            i.apply(registrations, entry);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Deletes, every lapse, the registrations of instances whose heartbeat has lapsed.
async fn sweep(inner: std::sync::Weak<Inner>) {
    loop {
        let Some(i) = inner.upgrade() else { return };
        let period = i.lapse;
        let dead: Vec<Stored> = lock(&i.entries)
            .values()
            .filter(|s| !i.is_alive(&s.instance))
            .cloned()
            .collect();
        for s in &dead {
            i.drop_dead(s).await;
        }
        drop(i);
        tokio::time::sleep(period).await;
    }
}

impl Inner {
    fn apply(&self, registrations: bool, entry: async_nats::jetstream::kv::Entry) {
        use async_nats::jetstream::kv::Operation;
        let gone = matches!(entry.operation, Operation::Delete | Operation::Purge);
        if !registrations {
            let mut beats = lock(&self.beats);
            match std::str::from_utf8(&entry.value)
                .ok()
                .and_then(|t| t.parse().ok())
            {
                Some(ms) if !gone => beats.insert(entry.key, ms),
                _ => beats.remove(&entry.key),
            };
            return;
        }
        if gone {
            lock(&self.entries).remove(&entry.key);
            return;
        }
        match serde_json::from_slice::<Stored>(&entry.value) {
            Ok(s) => {
                let foreign = s.instance != self.instance;
                let id = s.id.clone();
                lock(&self.entries).insert(id.clone(), s);
                if foreign && let Some(f) = lock(&self.on_foreign).as_ref() {
                    f(&id);
                }
            }
            Err(e) => {
                warn!(key = %entry.key, error = %e, "cluster: unreadable registration entry ignored")
            }
        }
    }

    /// Reads both buckets whole into the copies (at start; the watches keep them after).
    async fn load(&self) {
        if let Ok(mut keys) = self.heartbeats.keys().await {
            while let Some(Ok(k)) = keys.next().await {
                if let Ok(Some(v)) = self.heartbeats.get(&k).await
                    && let Some(ms) = std::str::from_utf8(&v).ok().and_then(|t| t.parse().ok())
                {
                    lock(&self.beats).insert(k, ms);
                }
            }
        }
        if let Ok(mut keys) = self.rd.keys().await {
            while let Some(Ok(k)) = keys.next().await {
                if let Ok(Some(v)) = self.rd.get(&k).await
                    && let Ok(s) = serde_json::from_slice::<Stored>(&v)
                {
                    lock(&self.entries).insert(k, s);
                }
            }
        }
    }

    /// True when `instance` is this one, or its heartbeat is recent.
    fn is_alive(&self, instance: &str) -> bool {
        if instance == self.instance {
            return true;
        }
        if lock(&self.connected_since).elapsed() < self.lapse {
            return true;
        }
        let Some(ms) = lock(&self.beats).get(instance).copied() else {
            return false;
        };
        SystemTime::now()
            .duration_since(from_unix_ms(ms))
            .map_or(true, |age| age < self.lapse)
    }

    /// Every registration whose instance is alive, in registration order.
    fn live(&self) -> Vec<Stored> {
        let mut live: Vec<Stored> = lock(&self.entries)
            .values()
            .filter(|s| self.is_alive(&s.instance))
            .cloned()
            .collect();
        live.sort_by_key(|s| (s.order, s.id.clone()));
        live
    }

    async fn drop_dead(&self, s: &Stored) {
        info!(id = %s.id, ep = %s.ep, instance = %s.instance,
              "cluster: registration removed: its instance's heartbeat lapsed");
        lock(&self.entries).remove(&s.id);
        if let Err(e) = self.rd.delete(&s.id).await {
            warn!(id = %s.id, error = %e, "cluster: delete failed");
        }
    }
}

impl RdStore for KvStore {
    fn put(&self, registration: Registration) -> BoxFuture<()> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let order = lock(&inner.entries)
                .get(&registration.id)
                .map_or_else(|| unix_ms(SystemTime::now()), |old| old.order);
            let stored = Stored::of(&registration, &inner.instance, order);
            lock(&inner.entries).insert(stored.id.clone(), stored.clone());
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
        let s = lock(&self.inner.entries).get(id).cloned();
        let found = s
            .filter(|s| self.inner.is_alive(&s.instance))
            .and_then(|s| s.registration());
        Box::pin(std::future::ready(found))
    }
    fn find(&self, ep: &str, d: Option<&str>) -> BoxFuture<Option<Registration>> {
        let found = self
            .inner
            .live()
            .into_iter()
            .find(|s| s.ep == ep && s.d.as_deref() == d)
            .and_then(|s| s.registration());
        Box::pin(std::future::ready(found))
    }
    fn remove(&self, id: &str) -> BoxFuture<Option<Registration>> {
        let (inner, id) = (self.inner.clone(), id.to_owned());
        Box::pin(async move {
            let s = lock(&inner.entries).remove(&id)?;
            if let Err(e) = inner.rd.delete(&id).await {
                warn!(id, error = %e, "cluster: delete failed");
            }
            s.registration()
        })
    }
    fn list(&self) -> BoxFuture<Vec<Registration>> {
        let all = self
            .inner
            .live()
            .iter()
            .filter_map(Stored::registration)
            .collect();
        Box::pin(std::future::ready(all))
    }
    fn count(&self) -> BoxFuture<usize> {
        Box::pin(std::future::ready(self.inner.live().len()))
    }
}
