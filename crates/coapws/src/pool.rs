//! The connection pool of a client: one connection per (scheme, host, port), reused by every
//! request to that origin.
//!
//! The host is normalised by URI parsing (lowercase names, IP literals as addresses) and the
//! port defaulted by scheme, so `coap+ws://h/` and `coap+ws://H:80/` share a connection.
//! Concurrent requests to a new origin share one connection attempt — and its failure. A
//! connection leaves the pool as soon as it ends.

use crate::error::Error;
use crate::remote::Remote;
use coapws_proto::uri::{Host, Scheme, Uri};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What a pooled connection is keyed by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// The scheme.
    pub scheme: Scheme,
    /// The host, normalised.
    pub host: Host,
    /// The port, defaulted by scheme.
    pub port: u16,
}

impl PoolKey {
    /// The key of the origin `uri` points to.
    pub fn of(uri: &Uri) -> PoolKey {
        PoolKey {
            scheme: uri.scheme,
            host: uri.host.clone(),
            port: uri.port_or_default(),
        }
    }
}

#[derive(Default)]
struct Slot {
    /// Attempts finished so far (incremented under the state lock).
    finished: AtomicU64,
    state: tokio::sync::Mutex<SlotState>,
}

#[derive(Default)]
enum SlotState {
    #[default]
    Empty,
    Ready(Remote),
    Failed {
        attempt: u64,
        error: Error,
    },
}

/// An origin's entry: its live connection, for the common case (one lock, no waiting), and
/// the slot that serialises connection attempts.
#[derive(Default)]
struct Entry {
    ready: Option<Remote>,
    slot: Arc<Slot>,
}

/// Connections by origin.
#[derive(Default)]
pub(crate) struct Pool {
    slots: Mutex<HashMap<PoolKey, Entry>>,
    /// Origins whose server asked us to wait before reconnecting (Release with Hold-Off,
    /// RFC 8323 §5.5), until when.
    held_off: Mutex<HashMap<PoolKey, std::time::Instant>>,
}

impl Pool {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<PoolKey, Entry>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live connection to `key`, or a new one from `connect`. Callers that arrive while an
    /// attempt runs wait for it and share its result.
    pub(crate) async fn get<F, Fut>(&self, key: &PoolKey, connect: F) -> Result<Remote, Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Remote, Error>>,
    {
        let slot = {
            let mut slots = self.slots();
            // The common case: a live connection, taken under the one lock (and without
            // copying the key).
            if let Some(e) = slots.get(key) {
                if let Some(r) = e.ready.as_ref().filter(|r| r.accepts_requests()) {
                    return Ok(r.clone());
                }
                e.slot.clone()
            } else {
                slots.entry(key.clone()).or_default().slot.clone()
            }
        };
        let seen = slot.finished.load(Ordering::SeqCst);
        let mut state = slot.state.lock().await;
        match &*state {
            // A connection being released takes no new requests: open a new one (unless
            // the server asked to wait).
            SlotState::Ready(r) if r.accepts_requests() => return Ok(r.clone()),
            SlotState::Ready(r) => {
                if let Some(until) = r.connection().and_then(|c| c.hold_off()) {
                    self.hold_off(key, until);
                }
            }
            SlotState::Failed { attempt, error } if *attempt > seen => return Err(error.clone()),
            _ => {}
        }
        if let Some(left) = self.held_off_for(key) {
            return Err(Error::HeldOff {
                origin: format!(
                    "{}://{}:{}",
                    key.scheme,
                    key.host.authority_form(),
                    key.port
                ),
                secs: left.as_secs_f64().ceil() as u64,
            });
        }
        let result = connect().await;
        let attempt = slot.finished.fetch_add(1, Ordering::SeqCst) + 1;
        match &result {
            Ok(r) => {
                *state = SlotState::Ready(r.clone());
                let mut slots = self.slots();
                if let Some(e) = slots.get_mut(key).filter(|e| Arc::ptr_eq(&e.slot, &slot)) {
                    e.ready = Some(r.clone());
                }
            }
            Err(e) => {
                *state = SlotState::Failed {
                    attempt,
                    error: e.clone(),
                };
                // Newcomers start afresh; waiters already holding this slot share the error.
                let mut slots = self.slots();
                if slots.get(key).is_some_and(|e| Arc::ptr_eq(&e.slot, &slot)) {
                    slots.remove(key);
                }
            }
        }
        result
    }

    /// Drops the pool entry of connection `id` (called when it ends).
    /// The server of `key` asked not to be reconnected to before `until`.
    pub(crate) fn hold_off(&self, key: &PoolKey, until: std::time::Instant) {
        let mut h = self.held_off.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        h.retain(|_, t| *t > now);
        h.insert(key.clone(), until);
    }

    /// How long the server of `key` still asked us to wait, if it did.
    fn held_off_for(&self, key: &PoolKey) -> Option<std::time::Duration> {
        let h = self.held_off.lock().unwrap_or_else(|p| p.into_inner());
        let until = *h.get(key)?;
        let now = std::time::Instant::now();
        (until > now).then(|| until - now)
    }

    pub(crate) fn remove(&self, key: &PoolKey, id: u64) {
        let mut slots = self.slots();
        let Some(entry) = slots.get_mut(key) else {
            return;
        };
        if entry.ready.as_ref().is_some_and(|r| r.link_id().0 == id) {
            entry.ready = None;
        }
        let holds_it = match entry.slot.state.try_lock() {
            Ok(state) => matches!(&*state, SlotState::Ready(r) if r.link_id().0 == id),
            // An attempt is running: it will replace the entry itself.
            Err(_) => false,
        };
        if holds_it {
            slots.remove(key);
        }
    }

    /// Number of origins with an entry.
    pub(crate) fn len(&self) -> usize {
        self.slots().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(u: &str) -> PoolKey {
        PoolKey::of(&Uri::parse(u).unwrap())
    }

    #[test]
    fn default_port_and_case_are_normalised() {
        assert_eq!(
            key("coap+ws://Example.COM/a"),
            key("coap+ws://example.com:80/b")
        );
        assert_eq!(key("coaps+ws://h/"), key("coaps+ws://h:443"));
        assert_eq!(key("coap+tcp://[::1]/"), key("coap+tcp://[0:0::1]:5683/"));
        assert_ne!(key("coap+ws://h/"), key("coap+ws://h:8080/"));
        assert_ne!(key("coap+ws://h/"), key("coaps+ws://h/"));
        assert_ne!(key("coap+ws://h/"), key("coap+tcp://h:80/"));
    }
}
