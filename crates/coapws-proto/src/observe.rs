//! Observe state (RFC 7641, and RFC 8323 appendix A for reliable transports), sans-IO.
//!
//! - [`SEQUENCE_MODULUS`]: notification sequence numbers are 24-bit.
//! - [`Freshness`]: the client's reordering check (§3.4): is a notification newer than the
//!   last one taken? Over reliable transports the Observe value is meaningless (RFC 8323
//!   appendix A.1) and every notification is taken in order of arrival.
//! - [`Registration`]: what an Observe option value in a request asks for.
//!
//! Time is an argument, as everywhere in this crate.

use std::time::{Duration, Instant};

/// Observe values are 24-bit (§4.4).
pub const SEQUENCE_MODULUS: u32 = 1 << 24;

/// §3.4: a notification arriving more than this after the last one is fresh whatever its
/// number says.
pub const REORDER_WINDOW: Duration = Duration::from_secs(128);

/// What the Observe option of a GET or FETCH asks for (§2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registration {
    /// Observe = 0: add (or replace) the observer.
    Register,
    /// Observe = 1: remove the observer.
    Deregister,
    /// Another value: treated as no Observe option at all.
    Other(u32),
}

impl Registration {
    /// Reads an Observe option value of a request.
    pub fn of(value: u32) -> Registration {
        match value {
            0 => Registration::Register,
            1 => Registration::Deregister,
            v => Registration::Other(v),
        }
    }
}

/// The client's view of one observation: the last notification taken, by number and time.
#[derive(Clone, Copy, Debug, Default)]
pub struct Freshness {
    last: Option<(u32, Instant)>,
}

impl Freshness {
    /// Nothing taken yet: the first notification is always fresh.
    pub fn new() -> Freshness {
        Freshness::default()
    }

    /// §3.4: is a notification numbered `value`, arriving at `now`, newer than the last one
    /// taken? If so it becomes the last one. `value` is reduced modulo 2^24.
    pub fn accept(&mut self, value: u32, now: Instant) -> bool {
        let v2 = value % SEQUENCE_MODULUS;
        let fresh = match self.last {
            None => true,
            Some((v1, t1)) => {
                let half = 1 << 23;
                (v1 < v2 && v2 - v1 < half)
                    || (v1 > v2 && v1 - v2 > half)
                    || now.saturating_duration_since(t1) > REORDER_WINDOW
            }
        };
        if fresh {
            self.last = Some((v2, now));
        }
        fresh
    }

    /// Forgets the last notification (after a re-registration, whose first answer starts
    /// afresh).
    pub fn reset(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_follows_section_3_4() {
        let t = Instant::now();
        let mut f = Freshness::new();
        assert!(f.accept(10, t));
        assert!(!f.accept(10, t), "same number is not newer");
        assert!(!f.accept(9, t), "older number");
        assert!(f.accept(11, t));
        // Wrap-around: a small number after a large one is newer.
        let mut f = Freshness::new();
        assert!(f.accept(SEQUENCE_MODULUS - 2, t));
        assert!(f.accept(1, t));
        // A jump of more than half the space backwards counts as older...
        let mut f = Freshness::new();
        assert!(f.accept(5, t));
        assert!(!f.accept(5 + (1 << 23) + 1, t));
        // ...unless 128 seconds have passed.
        assert!(f.accept(3, t + Duration::from_secs(129)));
        f.reset();
        assert!(f.accept(0, t), "after a reset anything is fresh");
    }

    #[test]
    fn registration_values() {
        assert_eq!(Registration::of(0), Registration::Register);
        assert_eq!(Registration::of(1), Registration::Deregister);
        assert_eq!(Registration::of(7), Registration::Other(7));
    }
}
