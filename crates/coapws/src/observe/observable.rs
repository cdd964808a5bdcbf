//! [`Observable`]: a resource state's change signal. The application calls
//! [`Observable::notify`] (or [`Observable::end`]); the observers of `server.rs` wait on it.
//! Kept apart from the observer table so that sites can hold one without knowing how
//! observers are served.

use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::watch;

/// A resource state that clients can observe. Cheap to clone; every clone signals the same
/// observers.
///
/// ```no_run
/// use coapws::observe::Observable;
/// use coapws::proto::{Code, Message};
/// use coapws::{IncomingRequest, Resource, Site};
///
/// let temperature = Observable::new();
/// let site = Site::new().resource(
///     "/temp",
///     Resource::new()
///         .get(|_req: IncomingRequest| async { Message::response(Code::CONTENT, "21.5") })
///         .observable(&temperature),
/// );
/// // Later, whenever the value changes:
/// temperature.notify();
/// ```
#[derive(Clone, Debug)]
pub struct Observable {
    changes: Arc<watch::Sender<State>>,
}

/// What observers of an [`Observable`] are told: that it changed, and whether that change
/// ends the observations.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct State {
    pub(crate) version: u64,
    pub(crate) ended: bool,
}

impl Default for Observable {
    fn default() -> Observable {
        Observable::new()
    }
}

impl Observable {
    /// A new state with no observers.
    pub fn new() -> Observable {
        let (tx, _) = watch::channel(State::default());
        Observable {
            changes: Arc::new(tx),
        }
    }
    /// A state that changes every `period` (a clock, a sampled sensor): notifies on its own
    /// while it has observers, on the wall clock's multiples of `period`. The ticking task
    /// runs on the current tokio runtime and ends when every clone is dropped; outside a
    /// runtime nothing ticks.
    pub fn every(period: Duration) -> Observable {
        let o = Observable::new();
        let weak = Arc::downgrade(&o.changes);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(tick(weak, period));
        }
        o
    }
    /// The state changed: every observer gets a notification.
    pub fn notify(&self) {
        self.changes
            .send_modify(|s| s.version = s.version.wrapping_add(1));
    }
    /// The resource can no longer be observed (a proxy's upstream observation ended): every
    /// observer gets one last notification, rendered as usual but without Observe (RFC 7641
    /// §3.2: the client then knows it is no longer notified), and the observations end. Later
    /// registrations still work; they end at the next change.
    pub fn end(&self) {
        self.changes.send_modify(|s| {
            s.version = s.version.wrapping_add(1);
            s.ended = true;
        });
    }
    /// True once [`Observable::end`] was called.
    pub fn is_ended(&self) -> bool {
        self.changes.borrow().ended
    }
    /// Number of observers at the moment.
    pub fn observers(&self) -> usize {
        self.changes.receiver_count()
    }
    pub(crate) fn subscribe(&self) -> watch::Receiver<State> {
        self.changes.subscribe()
    }
}

/// Notifies every `period`, on the wall clock's multiples of it (a 1 s clock ticks on the
/// second, so what it renders changes with each notification).
async fn tick(changes: Weak<watch::Sender<State>>, period: Duration) {
    let period = period.max(Duration::from_millis(1));
    loop {
        tokio::time::sleep(until_next_multiple(period)).await;
        let Some(tx) = changes.upgrade() else { return };
        if tx.receiver_count() > 0 {
            tx.send_modify(|s| s.version = s.version.wrapping_add(1));
        }
    }
}

/// Time from now to the next multiple of `period` since the Unix epoch, plus a millisecond so
/// that the clock has passed it.
fn until_next_multiple(period: Duration) -> Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let p = period.as_nanos().max(1);
    let into = now.as_nanos() % p;
    Duration::from_nanos(u64::try_from(p - into).unwrap_or(u64::MAX)) + Duration::from_millis(1)
}

#[cfg(test)]
mod tests {
    use super::until_next_multiple;
    use std::time::Duration;

    #[test]
    fn ticks_wait_for_the_next_multiple_of_the_period() {
        for p in [
            Duration::from_millis(7),
            Duration::from_secs(1),
            Duration::from_secs(60),
        ] {
            let d = until_next_multiple(p);
            assert!(
                d > Duration::from_millis(1) && d <= p + Duration::from_millis(1),
                "{p:?}: {d:?}"
            );
        }
    }
}
