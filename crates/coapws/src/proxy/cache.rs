//! The proxy's response cache (RFC 7252 §5.6): responses to GET and FETCH kept while their
//! Max-Age lasts, keyed by the target (scheme, host, port, path, query) and every option of
//! the request that is part of the cache key (not the NoCacheKey ones, RFC 7252 §5.4.6, nor
//! those this proxy handles itself). Bounded in bytes; the least recently used entries make
//! room. A stale entry with an ETag is revalidated upstream (2.03 Valid makes it fresh
//! again), one without is dropped. A 2.01, 2.02 or 2.04 for a target makes its entries stale.

use bytes::Bytes;
use coapws_proto::code::Code;
use coapws_proto::message::Message;
use coapws_proto::option::OptionNumber;
use coapws_proto::uri::{Host, Scheme, Uri};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The resource a request is for, without its representation-selecting options.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    scheme: Scheme,
    host: Host,
    port: u16,
    path: Vec<String>,
    query: Vec<String>,
}

impl Target {
    /// The target of `uri`.
    pub fn of(uri: &Uri) -> Target {
        Target {
            scheme: uri.scheme,
            host: uri.host.clone(),
            port: uri.port_or_default(),
            path: uri.path.clone(),
            query: uri.query.clone(),
        }
    }
}

/// What a cached response (and a relayed observation) is keyed by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    method: Code,
    target: Target,
    options: Vec<(u16, Bytes)>,
    /// A FETCH's body selects the representation too (RFC 8132 §2).
    body: Option<Bytes>,
}

impl CacheKey {
    /// The key of `request` (a GET or FETCH) for `uri`.
    pub fn of(uri: &Uri, request: &Message) -> CacheKey {
        let options = request
            .options
            .iter()
            .filter(|(n, _)| !super::not_forwarded(*n) && (n.is_unsafe() || !n.is_no_cache_key()))
            .map(|(n, v)| (n.0, v.clone()))
            .collect();
        CacheKey {
            method: request.code,
            target: Target::of(uri),
            options,
            body: (request.code == Code::FETCH).then(|| request.payload.clone()),
        }
    }
    fn size(&self) -> usize {
        let opts: usize = self.options.iter().map(|(_, v)| v.len() + 8).sum();
        let path: usize = self
            .target
            .path
            .iter()
            .chain(&self.target.query)
            .map(|s| s.len() + 24)
            .sum();
        64 + opts + path + self.body.as_ref().map_or(0, |b| b.len())
    }
}

struct Entry {
    response: Message,
    fresh_until: Instant,
    size: usize,
    used: u64,
}

#[derive(Default)]
struct Store {
    entries: HashMap<CacheKey, Entry>,
    /// Last use → key, oldest first.
    lru: BTreeMap<u64, CacheKey>,
    bytes: usize,
    clock: u64,
}

/// Counters of a cache, since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Requests answered from a fresh entry.
    pub hits: u64,
    /// Requests that found no fresh entry.
    pub misses: u64,
    /// Stale entries made fresh again by a 2.03 from upstream.
    pub revalidated: u64,
    /// Responses stored.
    pub stored: u64,
    /// Entries dropped to make room.
    pub evicted: u64,
    /// Entries held now.
    pub entries: u64,
    /// Bytes held now (approximately: payloads, options and keys).
    pub bytes: u64,
}

/// What the cache has for a request.
#[derive(Debug)]
pub enum Lookup {
    /// A fresh response, its Max-Age set to what is left of it.
    Fresh(Message),
    /// A stale response with this ETag: ask upstream whether it is still valid.
    Stale(Bytes),
    /// Nothing usable.
    Miss,
}

/// A response cache bounded in bytes.
pub struct Cache {
    capacity: usize,
    store: Mutex<Store>,
    hits: AtomicU64,
    misses: AtomicU64,
    revalidated: AtomicU64,
    stored: AtomicU64,
    evicted: AtomicU64,
}

/// RFC 7252 §5.10.5: 60 seconds when a response carries no Max-Age.
fn max_age(m: &Message) -> Duration {
    Duration::from_secs(u64::from(m.options.max_age()))
}

fn message_size(m: &Message) -> usize {
    m.payload.len() + m.options.iter().map(|(_, v)| v.len() + 8).sum::<usize>() + 32
}

impl Cache {
    /// A cache holding at most `capacity` bytes (0: caches nothing).
    pub fn new(capacity: usize) -> Cache {
        Cache {
            capacity,
            store: Mutex::new(Store::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            revalidated: AtomicU64::new(0),
            stored: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        }
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The counters.
    pub fn stats(&self) -> CacheStats {
        let s = self.store();
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            revalidated: self.revalidated.load(Ordering::Relaxed),
            stored: self.stored.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
            entries: s.entries.len() as u64,
            bytes: s.bytes as u64,
        }
    }

    /// Looks `key` up at `now`.
    pub fn lookup(&self, key: &CacheKey, now: Instant) -> Lookup {
        if self.capacity == 0 {
            return Lookup::Miss;
        }
        let mut s = self.store();
        let Some(e) = s.entries.get(key) else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return Lookup::Miss;
        };
        if now < e.fresh_until {
            let mut m = e.response.clone();
            let left = e.fresh_until.duration_since(now).as_secs();
            m.options.set_uint(
                OptionNumber::MAX_AGE,
                u32::try_from(left).unwrap_or(u32::MAX),
            );
            let used = e.used;
            s.touch(key, used);
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Lookup::Fresh(m);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        match e.response.options.get(OptionNumber::ETAG).cloned() {
            Some(etag) => Lookup::Stale(etag),
            None => {
                s.remove(key);
                Lookup::Miss
            }
        }
    }

    /// Keeps `response` (to the request of `key`) if it is cacheable: a 2.05 with a Max-Age
    /// above 0 that fits. Block-wise and Observe options are not kept.
    pub fn put(&self, key: CacheKey, response: &Message, now: Instant) {
        let age = max_age(response);
        if self.capacity == 0 || response.code != Code::CONTENT || age.is_zero() {
            return;
        }
        let mut m = response.clone();
        for n in [
            OptionNumber::OBSERVE,
            OptionNumber::BLOCK2,
            OptionNumber::SIZE2,
        ] {
            m.options.remove(n);
        }
        let size = message_size(&m) + key.size();
        // One entry may take at most an eighth of the cache, so a few large bodies cannot
        // flush everything else.
        if size > self.capacity / 8 {
            return;
        }
        let mut s = self.store();
        s.remove(&key);
        while s.bytes + size > self.capacity {
            if !s.evict_oldest() {
                break;
            }
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        s.clock += 1;
        let used = s.clock;
        s.lru.insert(used, key.clone());
        s.bytes += size;
        s.entries.insert(
            key,
            Entry {
                response: m,
                fresh_until: now + age,
                size,
                used,
            },
        );
        self.stored.fetch_add(1, Ordering::Relaxed);
    }

    /// Upstream said 2.03 Valid to the revalidation of `key`'s stale entry: it is fresh again
    /// for the Max-Age of `valid`. Returns the stored response (its Max-Age updated), or
    /// `None` if the entry is gone or its ETag is not the one validated.
    pub fn revalidate(&self, key: &CacheKey, valid: &Message, now: Instant) -> Option<Message> {
        let mut s = self.store();
        let e = s.entries.get_mut(key)?;
        let etag = valid.options.get(OptionNumber::ETAG);
        if etag.is_some() && etag != e.response.options.get(OptionNumber::ETAG) {
            return None;
        }
        let age = max_age(valid);
        e.fresh_until = now + age;
        e.response.options.set_uint(
            OptionNumber::MAX_AGE,
            u32::try_from(age.as_secs()).unwrap_or(u32::MAX),
        );
        let m = e.response.clone();
        let used = e.used;
        s.touch(key, used);
        self.revalidated.fetch_add(1, Ordering::Relaxed);
        Some(m)
    }

    /// A change to `uri`'s resource went through (2.01, 2.02, 2.04): its entries are stale
    /// (RFC 7252 §5.9.1).
    pub fn invalidate(&self, uri: &Uri) {
        let target = Target::of(uri);
        let mut s = self.store();
        let stale: Vec<CacheKey> = s
            .entries
            .keys()
            .filter(|k| k.target == target)
            .cloned()
            .collect();
        for k in stale {
            s.remove(&k);
        }
    }
}

impl Store {
    fn touch(&mut self, key: &CacheKey, used: u64) {
        self.clock += 1;
        let now = self.clock;
        if let Some(k) = self.lru.remove(&used) {
            self.lru.insert(now, k);
        }
        if let Some(e) = self.entries.get_mut(key) {
            e.used = now;
        }
    }
    fn remove(&mut self, key: &CacheKey) {
        if let Some(e) = self.entries.remove(key) {
            self.lru.remove(&e.used);
            self.bytes -= e.size;
        }
    }
    fn evict_oldest(&mut self) -> bool {
        let Some((_, key)) = self.lru.pop_first() else {
            return false;
        };
        if let Some(e) = self.entries.remove(&key) {
            self.bytes -= e.size;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(path: &str, accept: Option<u32>) -> (Uri, CacheKey) {
        let uri = Uri::parse(&format!("coap://127.0.0.1{path}")).unwrap();
        let mut m = Message::new(Code::GET);
        m.options = uri.request_options();
        if let Some(a) = accept {
            m.options.set_uint(OptionNumber::ACCEPT, a);
        }
        let k = CacheKey::of(&uri, &m);
        (uri, k)
    }

    fn content(body: &str, max_age: u32) -> Message {
        Message::response(Code::CONTENT, body.to_owned())
            .with_uint_option(OptionNumber::MAX_AGE, max_age)
    }

    #[test]
    fn nocachekey_options_are_left_out_of_the_key_and_the_others_are_in() {
        let uri = Uri::parse("coap://127.0.0.1/k").unwrap();
        let base = Message::new(Code::GET);
        let with = |n: u16| base.clone().with_option(OptionNumber(n), &b"v"[..]);
        let plain = CacheKey::of(&uri, &base);
        // 0x1c in the low bits is NoCacheKey (RFC 7252 §5.4.6): 28 + 32 = 60 (Size1), and an
        // unknown 65500 (0b...11111011100).
        assert_eq!(CacheKey::of(&uri, &with(60)), plain);
        assert_eq!(CacheKey::of(&uri, &with(65500)), plain);
        // Accept, an unknown safe cache-key option, an unknown unsafe one: part of the key.
        for n in [17, 65000, 65002] {
            assert_ne!(CacheKey::of(&uri, &with(n)), plain, "{n}");
        }
        // The proxy's own (hop by hop): never.
        for n in [
            OptionNumber::HOP_LIMIT,
            OptionNumber::BLOCK2,
            OptionNumber::OBSERVE,
        ] {
            assert_eq!(CacheKey::of(&uri, &with(n.0)), plain, "{n}");
        }
    }

    #[test]
    fn fresh_entries_are_served_with_what_is_left_of_their_max_age() {
        let cache = Cache::new(1 << 20);
        let (_, k) = key("/a", None);
        let t0 = Instant::now();
        cache.put(k.clone(), &content("A", 10), t0);
        match cache.lookup(&k, t0 + Duration::from_secs(4)) {
            Lookup::Fresh(m) => {
                assert_eq!(m.payload, "A");
                assert_eq!(m.options.max_age(), 6);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            cache.lookup(&k, t0 + Duration::from_secs(11)),
            Lookup::Miss
        ));
        let (_, other_accept) = key("/a", Some(50));
        assert!(matches!(cache.lookup(&other_accept, t0), Lookup::Miss));
    }

    #[test]
    fn stale_entries_with_an_etag_are_revalidated() {
        let cache = Cache::new(1 << 20);
        let (_, k) = key("/e", None);
        let t0 = Instant::now();
        let m = content("E", 1).with_option(OptionNumber::ETAG, &b"v1"[..]);
        cache.put(k.clone(), &m, t0);
        let later = t0 + Duration::from_secs(2);
        assert!(matches!(cache.lookup(&k, later), Lookup::Stale(e) if e == "v1"));
        let valid = Message::new(Code::VALID)
            .with_option(OptionNumber::ETAG, &b"v1"[..])
            .with_uint_option(OptionNumber::MAX_AGE, 30);
        let again = cache.revalidate(&k, &valid, later).unwrap();
        assert_eq!(again.payload, "E");
        assert!(matches!(cache.lookup(&k, later), Lookup::Fresh(_)));
        assert_eq!(cache.stats().revalidated, 1);
    }

    #[test]
    fn the_least_recently_used_entries_make_room() {
        let cache = Cache::new(8 * 1024);
        let t0 = Instant::now();
        let body = "x".repeat(400);
        let keys: Vec<CacheKey> = (0..40).map(|i| key(&format!("/k{i}"), None).1).collect();
        for k in &keys {
            cache.put(k.clone(), &content(&body, 60), t0);
            // The first stays in use.
            assert!(matches!(cache.lookup(&keys[0], t0), Lookup::Fresh(_)));
        }
        let s = cache.stats();
        assert!(s.bytes <= 8 * 1024, "{s:?}");
        assert!(s.evicted > 0, "{s:?}");
        assert!(matches!(cache.lookup(&keys[0], t0), Lookup::Fresh(_)));
        assert!(matches!(cache.lookup(&keys[1], t0), Lookup::Miss));
    }

    #[test]
    fn changes_make_the_target_stale_and_uncacheable_answers_are_not_kept() {
        let cache = Cache::new(1 << 20);
        let (uri, k) = key("/c", None);
        let t0 = Instant::now();
        cache.put(k.clone(), &content("C", 60), t0);
        cache.invalidate(&uri);
        assert!(matches!(cache.lookup(&k, t0), Lookup::Miss));
        cache.put(k.clone(), &content("C", 0), t0);
        cache.put(k.clone(), &Message::response(Code::CHANGED, "x"), t0);
        assert!(matches!(cache.lookup(&k, t0), Lookup::Miss));
    }
}
