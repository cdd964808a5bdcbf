//! Where registrations live: the [`RdStore`] trait and its in-memory implementation.
//!
//! A store holds plain [`Registration`] records and knows nothing of lifetimes or
//! connections: the [`super::ResourceDirectory`] decides what is expired and what to remove.
//! Every method returns a boxed future, so a store backed by a network service (a message
//! bus, a database) fits behind the same interface.

use crate::site::BoxFuture;
use coapws_proto::link_format::Link;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

/// One endpoint's registration (RFC 9176 §5.3), as plain data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// The opaque id: the registration resource is `/rd/<id>`.
    pub id: String,
    /// The endpoint name (`ep`).
    pub ep: String,
    /// The sector (`d`); `None` is the default sector.
    pub d: Option<String>,
    /// The lifetime in seconds (`lt`).
    pub lt: u32,
    /// The base URI the links are relative to (`base`, or derived from the registrant).
    pub base: String,
    /// True when the registrant gave `base` itself (an update without `base` then keeps it).
    pub base_explicit: bool,
    /// The other registration attributes (`et`, extra attributes), in request order.
    pub attrs: Vec<(String, Option<String>)>,
    /// The registered links, as the endpoint sent them (unresolved).
    pub links: Vec<Link>,
    /// When the registration expires unless updated.
    pub expires: Instant,
    /// Wall-clock time of the registration or of its last update.
    pub updated: SystemTime,
    /// Who registered it, and over what.
    pub owner: Owner,
}

/// Who made (or last updated) a registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The registrant as logged (e.g. `coap+ws client 127.0.0.1:40312`).
    pub peer: String,
    /// The id of the connection it registered over, when that was a reliable connection it
    /// opened to us (the registration ends with it).
    pub connection: Option<u64>,
}

impl Registration {
    /// The path of the registration resource, `/rd/<id>`.
    pub fn href(&self) -> String {
        format!("/rd/{}", self.id)
    }
    /// True once the lifetime has run out at `now`.
    pub fn is_expired(&self, now: Instant) -> bool {
        now >= self.expires
    }
}

/// Storage of registrations. Methods are asynchronous so that a store may sit elsewhere.
pub trait RdStore: Send + Sync {
    /// Inserts `registration`, replacing one with the same id.
    fn put(&self, registration: Registration) -> BoxFuture<()>;
    /// The registration with id `id`.
    fn get(&self, id: &str) -> BoxFuture<Option<Registration>>;
    /// The registration of endpoint `ep` in sector `d`.
    fn find(&self, ep: &str, d: Option<&str>) -> BoxFuture<Option<Registration>>;
    /// Removes the registration with id `id`, returning it.
    fn remove(&self, id: &str) -> BoxFuture<Option<Registration>>;
    /// Every registration held (expired ones included: the caller sorts them out), in the
    /// order they were first registered.
    fn list(&self) -> BoxFuture<Vec<Registration>>;
    /// How many registrations are held.
    fn count(&self) -> BoxFuture<usize>;
}

/// The default store: registrations in memory, lost when the process ends.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Entries>>,
}

#[derive(Default)]
struct Entries {
    by_id: HashMap<String, (u64, Registration)>,
    /// Insertion counter, for a stable listing order.
    next: u64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
    fn with<T>(&self, f: impl FnOnce(&mut Entries) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

fn ready<T: Send + 'static>(value: T) -> BoxFuture<T> {
    Box::pin(std::future::ready(value))
}

impl RdStore for MemoryStore {
    fn put(&self, registration: Registration) -> BoxFuture<()> {
        self.with(|e| {
            let order = match e.by_id.get(&registration.id) {
                Some((order, _)) => *order,
                None => {
                    e.next += 1;
                    e.next
                }
            };
            e.by_id
                .insert(registration.id.clone(), (order, registration));
        });
        ready(())
    }
    fn get(&self, id: &str) -> BoxFuture<Option<Registration>> {
        ready(self.with(|e| e.by_id.get(id).map(|(_, r)| r.clone())))
    }
    fn find(&self, ep: &str, d: Option<&str>) -> BoxFuture<Option<Registration>> {
        let found = self.with(|e| {
            e.by_id
                .values()
                .map(|(_, r)| r)
                .find(|r| r.ep == ep && r.d.as_deref() == d)
                .cloned()
        });
        ready(found)
    }
    fn remove(&self, id: &str) -> BoxFuture<Option<Registration>> {
        ready(self.with(|e| e.by_id.remove(id).map(|(_, r)| r)))
    }
    fn list(&self) -> BoxFuture<Vec<Registration>> {
        let mut all = self.with(|e| e.by_id.values().cloned().collect::<Vec<_>>());
        all.sort_by_key(|(order, _)| *order);
        ready(all.into_iter().map(|(_, r)| r).collect())
    }
    fn count(&self) -> BoxFuture<usize> {
        ready(self.with(|e| e.by_id.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(id: &str, ep: &str, d: Option<&str>) -> Registration {
        Registration {
            id: id.into(),
            ep: ep.into(),
            d: d.map(Into::into),
            lt: 60,
            base: "coap://[::1]".into(),
            base_explicit: false,
            attrs: Vec::new(),
            links: Vec::new(),
            expires: Instant::now(),
            updated: SystemTime::now(),
            owner: Owner {
                peer: "test".into(),
                connection: None,
            },
        }
    }

    #[tokio::test]
    async fn put_find_replace_remove_keep_order() {
        let s = MemoryStore::new();
        s.put(reg("b", "one", None)).await;
        s.put(reg("a", "two", Some("x"))).await;
        assert_eq!(s.find("two", Some("x")).await.unwrap().id, "a");
        assert!(s.find("two", None).await.is_none());
        let mut again = reg("b", "one", None);
        again.lt = 5;
        s.put(again).await;
        let ids: Vec<_> = s.list().await.into_iter().map(|r| (r.id, r.lt)).collect();
        assert_eq!(ids, [("b".to_owned(), 5), ("a".to_owned(), 60)]);
        assert_eq!(s.remove("b").await.unwrap().ep, "one");
        assert!(s.get("b").await.is_none());
        assert_eq!(s.count().await, 1);
    }
}
