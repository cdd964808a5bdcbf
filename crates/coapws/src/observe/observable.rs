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
    /// The period of [`Observable::every`]'s ticks.
    period: Option<Duration>,
}

/// What observers of an [`Observable`] are told: how often the application signalled a
/// change, the latest tick of a periodic one, and whether the observations end.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct State {
    /// Bumped by every [`Observable::notify`] and [`Observable::end`].
    signalled: u64,
    /// The period index (multiples of the period since the Unix epoch) of the latest tick.
    tick: u64,
    pub(crate) ended: bool,
}

/// One observer's view of an [`Observable`], taken before the registration's response is
/// rendered: [`Watch::changed`] returns for every change that response cannot have shown.
#[derive(Debug)]
pub(crate) struct Watch {
    rx: watch::Receiver<State>,
    signalled: u64,
    tick: u64,
}

impl Watch {
    /// Waits for the next change since this watch was taken or last returned; `Err` when the
    /// observable is gone (every clone dropped).
    pub(crate) async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        loop {
            self.rx.changed().await?;
            let s = *self.rx.borrow_and_update();
            // A tick for a period that had begun when the watch was taken changes nothing
            // the response rendered then could not show: the clock already read that period.
            let new = s.ended || s.signalled != self.signalled || s.tick > self.tick;
            self.signalled = s.signalled;
            self.tick = self.tick.max(s.tick);
            if new {
                return Ok(());
            }
        }
    }
    /// True once the observable was ended.
    pub(crate) fn ended(&self) -> bool {
        self.rx.borrow().ended
    }
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
            period: None,
        }
    }
    /// A state that changes every `period` (a clock, a sampled sensor): notifies on its own
    /// while it has observers, on the wall clock's multiples of `period`. The ticking task
    /// runs on the current tokio runtime and ends when every clone is dropped; outside a
    /// runtime nothing ticks.
    pub fn every(period: Duration) -> Observable {
        let period = period.max(Duration::from_millis(1));
        let o = Observable {
            period: Some(period),
            ..Observable::new()
        };
        let weak = Arc::downgrade(&o.changes);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(tick(weak, period));
        }
        o
    }
    /// The state changed: every observer gets a notification.
    pub fn notify(&self) {
        self.changes
            .send_modify(|s| s.signalled = s.signalled.wrapping_add(1));
    }
    /// The resource can no longer be observed (a proxy's upstream observation ended): every
    /// observer gets one last notification, rendered as usual but without Observe (RFC 7641
    /// §3.2: the client then knows it is no longer notified), and the observations end. Later
    /// registrations still work; they end at the next change.
    pub fn end(&self) {
        self.changes.send_modify(|s| {
            s.signalled = s.signalled.wrapping_add(1);
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
    /// Starts watching for changes from now on (call it before rendering the response the
    /// watch follows, so that no change after that rendering is missed).
    pub(crate) fn watch(&self) -> Watch {
        let rx = self.changes.subscribe();
        let s = *rx.borrow();
        // For a periodic state, the period now under way counts as seen even if its tick has
        // not fired yet (ticks fire a little after the period starts).
        let tick = self.period.map_or(s.tick, |p| s.tick.max(period_index(p)));
        Watch {
            rx,
            signalled: s.signalled,
            tick,
        }
    }
}

/// Notifies every `period`, on the wall clock's multiples of it (a 1 s clock ticks on the
/// second, so what it renders changes with each notification).
async fn tick(changes: Weak<watch::Sender<State>>, period: Duration) {
    loop {
        tokio::time::sleep(until_next_multiple(period)).await;
        let Some(tx) = changes.upgrade() else { return };
        if tx.receiver_count() > 0 {
            let index = period_index(period);
            tx.send_modify(|s| s.tick = s.tick.max(index));
        }
    }
}

/// Time since the Unix epoch by the wall clock.
fn since_epoch() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// How many whole `period`s have passed since the Unix epoch.
fn period_index(period: Duration) -> u64 {
    u64::try_from(since_epoch().as_nanos() / period.as_nanos().max(1)).unwrap_or(u64::MAX)
}

/// Time from now to the next multiple of `period` since the Unix epoch, plus a millisecond so
/// that the clock has passed it.
fn until_next_multiple(period: Duration) -> Duration {
    let now = since_epoch();
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
