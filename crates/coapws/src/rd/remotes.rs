//! The live connections of endpoints that registered over a reliable connection they opened
//! to us (WebSocket, TCP, TLS): kept in memory next to their registrations, never stored, so
//! that a proxy can reach an endpoint behind NAT over its own connection, and so that a
//! registration ends with its connection.

use crate::remote::{Remote, Side};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// The connection of one registration.
#[derive(Clone, Debug)]
struct Tracked {
    ep: String,
    d: Option<String>,
    expires: Instant,
    remote: Remote,
}

/// Registration id → the connection it was made (or last updated) over.
#[derive(Default)]
pub(crate) struct Remotes {
    by_id: Mutex<HashMap<String, Tracked>>,
}

/// The id of the connection `remote` lives on, when it is a reliable connection the remote
/// opened to us: the kind a registration is tied to.
pub(crate) fn tied_connection(remote: &Remote) -> Option<u64> {
    if remote.side() != Side::Server {
        return None;
    }
    remote.connection().map(|c| c.id())
}

impl Remotes {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Tracked>) -> T) -> T {
        f(&mut self.by_id.lock().unwrap_or_else(|p| p.into_inner()))
    }
    /// Ties registration `id` to `remote`'s connection, or unties it when that is no
    /// connection a registration ties to. True when the tie is new (a watcher is needed),
    /// false when it was already there or there is none.
    pub(crate) fn track(
        &self,
        id: &str,
        ep: &str,
        d: Option<&str>,
        expires: Instant,
        remote: &Remote,
    ) -> bool {
        let Some(conn) = tied_connection(remote) else {
            self.forget(id);
            return false;
        };
        let tracked = Tracked {
            ep: ep.to_owned(),
            d: d.map(str::to_owned),
            expires,
            remote: remote.clone(),
        };
        let old = self.with(|m| m.insert(id.to_owned(), tracked));
        old.and_then(|t| tied_connection(&t.remote)) != Some(conn)
    }
    /// True when registration `id` is tied to a connection here.
    pub(crate) fn holds(&self, id: &str) -> bool {
        self.with(|m| m.contains_key(id))
    }
    /// Forgets the connection of registration `id`.
    pub(crate) fn forget(&self, id: &str) {
        self.with(|m| m.remove(id));
    }
    /// Forgets registration `id`'s connection if it is still connection `conn`; true if so.
    pub(crate) fn forget_if(&self, id: &str, conn: u64) -> bool {
        self.with(|m| {
            let current = m.get(id).and_then(|t| tied_connection(&t.remote));
            current == Some(conn) && m.remove(id).is_some()
        })
    }
    /// The live remote of endpoint `ep` in the default sector, at `now`.
    pub(crate) fn of_endpoint(&self, ep: &str, now: Instant) -> Option<Remote> {
        self.with(|m| {
            m.values()
                .find(|t| t.ep == ep && t.d.is_none() && now < t.expires && t.remote.is_connected())
                .map(|t| t.remote.clone())
        })
    }
}
