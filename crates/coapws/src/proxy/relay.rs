//! Relayed observations: one upstream observation per (target, cache key), whatever the
//! number of downstream observers. Each relay holds the latest notification and an
//! [`Observable`] its downstream observers follow: every upstream notification becomes the
//! latest and notifies them (each gets it rendered for its own block size and token). When
//! upstream ends, every downstream observation ends with it (a non-2.xx as it came, a 2.xx
//! without Observe as the last notification); when the last downstream observer has gone,
//! the upstream observation is deregistered.

use super::cache::CacheKey;
use crate::observe::{Observable, Observation, ObserveEnd};
use coapws_proto::code::Code;
use coapws_proto::message::Message;
use coapws_proto::option::OptionNumber;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{debug, info};

/// How long a relay waits for a first downstream observer after it started, or for a new one
/// after the last left, before it deregisters upstream.
const LINGER: Duration = Duration::from_secs(2);

/// The result of waiting for an upstream notification: the next one, or the last word of the
/// observation (with `true` when it ended with a 2.xx, sent downstream without Observe).
pub type Next<'a> = Pin<Box<dyn Future<Output = Result<Message, (Message, bool)>> + Send + 'a>>;

/// Notifications from upstream, whatever carries them (a CoAP observation, or one routed
/// through another instance of a cluster). Dropping it deregisters upstream.
pub trait Notifications: Send {
    /// The next notification (the first is the registration's answer), or the end.
    fn next(&mut self) -> Next<'_>;
}

impl Notifications for Observation {
    fn next(&mut self) -> Next<'_> {
        Box::pin(async move {
            Observation::next(self)
                .await
                .map(|n| n.message)
                .map_err(|end| match end {
                    ObserveEnd::Deregistered(r) => (r.message, true),
                    ObserveEnd::Ended(r) => (r.message, false),
                    ObserveEnd::Timeout => (
                        Message::response(Code::GATEWAY_TIMEOUT, "upstream observation timed out"),
                        false,
                    ),
                    other => (
                        Message::response(Code::BAD_GATEWAY, other.to_string()),
                        false,
                    ),
                })
        })
    }
}

/// One upstream observation and its downstream observers.
pub(crate) struct Relay {
    /// What downstream observers follow.
    pub(crate) observable: Observable,
    /// The latest notification (or the upstream's last word); `None` until the first.
    latest: watch::Sender<Option<Message>>,
    /// The last time a downstream request used this relay.
    touched: Mutex<Instant>,
    ended: std::sync::atomic::AtomicBool,
}

impl Relay {
    /// The latest notification, waiting for the first one (bounded by the caller).
    pub(crate) async fn latest(&self) -> Message {
        self.touch();
        let mut rx = self.latest.subscribe();
        loop {
            if let Some(m) = rx.borrow_and_update().clone() {
                return m;
            }
            if rx.changed().await.is_err() {
                return Message::response(Code::BAD_GATEWAY, "upstream observation ended");
            }
        }
    }
    /// The latest notification now (after [`Relay::latest`] returned, there is one).
    pub(crate) fn current(&self) -> Message {
        self.latest.borrow().clone().unwrap_or_else(|| {
            Message::response(Code::BAD_GATEWAY, "no notification from upstream")
        })
    }
    /// True once upstream ended the observation.
    pub(crate) fn is_ended(&self) -> bool {
        self.ended.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn touch(&self) {
        *self.touched.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }
    fn idle_for(&self) -> Duration {
        self.touched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }
}

/// The relays of a proxy.
#[derive(Default)]
pub(crate) struct Relays {
    map: Mutex<HashMap<CacheKey, Arc<Relay>>>,
}

impl Relays {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, Arc<Relay>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of upstream observations relayed now.
    pub(crate) fn len(&self) -> usize {
        self.map().len()
    }

    /// The relay for `key`, if there is one (ended or not).
    pub(crate) fn get(&self, key: &CacheKey) -> Option<Arc<Relay>> {
        self.map().get(key).cloned()
    }

    /// The live relay for `key`, or a new one started with what `start` opens upstream.
    /// `start` runs without the lock held; when two registrations race, one relay wins and
    /// the other's upstream observation is dropped (deregistered).
    pub(crate) async fn join<F, Fut>(self: &Arc<Self>, key: &CacheKey, start: F) -> Arc<Relay>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Box<dyn Notifications>, Message>>,
    {
        if let Some(r) = self.get(key).filter(|r| !r.is_ended()) {
            r.touch();
            return r;
        }
        let upstream = start().await;
        let relay = Arc::new(Relay {
            observable: Observable::new(),
            latest: watch::channel(None).0,
            touched: Mutex::new(Instant::now()),
            ended: std::sync::atomic::AtomicBool::new(false),
        });
        let observation = match upstream {
            Ok(o) => o,
            Err(answer) => {
                // Not even registered upstream: the answer is all there is.
                relay.latest.send_replace(Some(answer));
                relay
                    .ended
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                return relay;
            }
        };
        {
            let mut map = self.map();
            if let Some(r) = map.get(key).filter(|r| !r.is_ended()) {
                return r.clone();
            }
            map.insert(key.clone(), relay.clone());
        }
        info!("relaying an observation");
        tokio::spawn(run(
            Arc::downgrade(self),
            key.clone(),
            relay.clone(),
            observation,
        ));
        relay
    }

    fn forget(&self, key: &CacheKey, relay: &Arc<Relay>) {
        let mut map = self.map();
        if map.get(key).is_some_and(|r| Arc::ptr_eq(r, relay)) {
            map.remove(key);
        }
    }
}

/// A notification as downstream observers get it: its own Observe value and blocks come per
/// hop.
fn strip(mut m: Message) -> Message {
    for n in [
        OptionNumber::OBSERVE,
        OptionNumber::BLOCK2,
        OptionNumber::SIZE2,
    ] {
        m.options.remove(n);
    }
    m
}

/// Follows the upstream observation until it ends or nobody downstream listens any more.
async fn run(
    relays: Weak<Relays>,
    key: CacheKey,
    relay: Arc<Relay>,
    mut upstream: Box<dyn Notifications>,
) {
    let why = loop {
        tokio::select! {
            item = upstream.next() => match item {
                Ok(m) => {
                    relay.latest.send_replace(Some(strip(m)));
                    relay.observable.notify();
                }
                Err((last, was_2xx)) => {
                    relay.ended.store(true, std::sync::atomic::Ordering::Relaxed);
                    relay.latest.send_replace(Some(strip(last)));
                    if was_2xx { relay.observable.end() } else { relay.observable.notify() }
                    break "upstream ended";
                }
            },
            _ = unobserved(&relay) => break "no downstream observer left",
        }
    };
    debug!(why, "relayed observation over");
    if why != "upstream ended" {
        // Dropping the observation deregisters upstream.
        drop(upstream);
    } else {
        // The ended relay stays findable until its observers rendered their last
        // notification from it.
        unobserved(&relay).await;
    }
    if let Some(r) = relays.upgrade() {
        r.forget(&key, &relay);
    }
}

/// Resolves once the relay has had no downstream observer for [`LINGER`].
async fn unobserved(relay: &Relay) {
    loop {
        tokio::time::sleep(LINGER / 4).await;
        if relay.observable.observers() == 0 && relay.idle_for() >= LINGER {
            return;
        }
    }
}
