//! Observe, server side (RFC 7641 §4, RFC 8323 appendix A).
//!
//! An [`Observable`] is a resource state's change signal: the application calls
//! [`Observable::notify`], and every observer of it gets a notification rendered for its own
//! request (its Accept, its query, its block size). Observers are kept in [`Observers`],
//! bounded per connection (per peer address over UDP) and in total; each runs as a small task
//! that waits for the next change and renders with a [`Render`] (the dispatcher). Newest state
//! first: changes that come while a notification is rendered or sent are folded into one (a
//! `watch` channel), and over UDP a notification replaces an unacknowledged Confirmable one.
//!
//! An observation ends when the client deregisters (GET with Observe 1, handled by the
//! dispatcher), re-registers with the same token (the old entry is replaced), answers a
//! notification with Reset or never acknowledges a Confirmable one (UDP), when its connection
//! closes, or when a rendering is not 2.xx (sent as the last notification, RFC 7641 §4.2).

use crate::observe::observable::Watch;
use crate::remote::Remote;
use crate::site::BoxFuture;
use crate::site::IncomingRequest;
use coapws_proto::code::Code;
use coapws_proto::message::{Message, Token};
use coapws_proto::observe::SEQUENCE_MODULUS;
use coapws_proto::option::OptionNumber;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use tracing::{debug, info};

/// Renders a notification for a stored request: the dispatcher, with block-wise cutting.
pub(crate) trait Render: Send + Sync + 'static {
    /// The response a fresh GET (or FETCH) would get now.
    fn render(self: Arc<Self>, request: IncomingRequest) -> BoxFuture<Message>;
}

/// Limits and pacing of observers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ObserveConfig {
    /// Observers in all.
    pub max_observers: usize,
    /// Observers per connection (per peer address over UDP).
    pub max_per_link: usize,
    /// Over UDP, every this many notifications one is Confirmable (0: never by count).
    pub con_every: u32,
}

/// Which connection (or UDP socket and peer) an observer is on.
pub(crate) type LinkId = (u64, Option<SocketAddr>);

/// Why a registration was not taken.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    #[error("{0} observers already registered in all")]
    Total(usize),
    #[error("{0} observers already registered on this connection")]
    PerLink(usize),
}

struct Entry {
    generation: u64,
    stop: oneshot::Sender<()>,
    sequence: Arc<AtomicU32>,
}

#[derive(Default)]
struct Table {
    entries: HashMap<(LinkId, Token), Entry>,
    per_link: HashMap<LinkId, usize>,
    next_generation: u64,
}

/// The observers of an endpoint's site.
pub(crate) struct Observers {
    config: ObserveConfig,
    table: Mutex<Table>,
}

/// A registration taken: what the observer's task needs.
pub(crate) struct Registered {
    generation: u64,
    stop: oneshot::Receiver<()>,
    sequence: Arc<AtomicU32>,
}

impl Registered {
    /// The Observe value of the registration's own response.
    pub(crate) fn first_value(&self) -> u32 {
        self.sequence.fetch_add(1, Ordering::Relaxed) % SEQUENCE_MODULUS
    }
}

static FIRST_SEQUENCE: AtomicU32 = AtomicU32::new(2);

impl Observers {
    pub(crate) fn new(config: ObserveConfig) -> Observers {
        Observers {
            config,
            table: Mutex::new(Table::default()),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of observers in all.
    pub(crate) fn len(&self) -> usize {
        self.table().entries.len()
    }

    /// Number of observers on `link`.
    pub(crate) fn on_link(&self, link: LinkId) -> usize {
        self.table().per_link.get(&link).copied().unwrap_or(0)
    }

    /// Adds the observer `token` on `link`, replacing one with the same token (RFC 7641 §4.1;
    /// its sequence numbers go on).
    pub(crate) fn register(&self, link: LinkId, token: &Token) -> Result<Registered, Refused> {
        let mut t = self.table();
        let key = (link, token.clone());
        let sequence = match t.entries.remove(&key) {
            Some(old) => {
                let _ = old.stop.send(());
                old.sequence
            }
            None => {
                if t.entries.len() >= self.config.max_observers {
                    return Err(Refused::Total(t.entries.len()));
                }
                let on_link = t.per_link.get(&link).copied().unwrap_or(0);
                if on_link >= self.config.max_per_link {
                    return Err(Refused::PerLink(on_link));
                }
                *t.per_link.entry(link).or_default() += 1;
                crate::metrics::get().observations.inc();
                let first = FIRST_SEQUENCE.fetch_add(1 << 12, Ordering::Relaxed);
                Arc::new(AtomicU32::new(first % SEQUENCE_MODULUS))
            }
        };
        t.next_generation += 1;
        let generation = t.next_generation;
        let (stop_tx, stop) = oneshot::channel();
        t.entries.insert(
            key,
            Entry {
                generation,
                stop: stop_tx,
                sequence: sequence.clone(),
            },
        );
        Ok(Registered {
            generation,
            stop,
            sequence,
        })
    }

    /// Removes the observer `token` on `link` (deregistration, Reset, connection gone); with
    /// `generation`, only that registration of it. True if there was one.
    pub(crate) fn remove(&self, link: LinkId, token: &Token, generation: Option<u64>) -> bool {
        let mut t = self.table();
        let key = (link, token.clone());
        if generation.is_some_and(|g| t.entries.get(&key).is_some_and(|e| e.generation != g)) {
            return false;
        }
        let Some(entry) = t.entries.remove(&key) else {
            return false;
        };
        let _ = entry.stop.send(());
        crate::metrics::get().observations.dec();
        if let Some(n) = t.per_link.get_mut(&link) {
            *n -= 1;
            if *n == 0 {
                t.per_link.remove(&link);
            }
        }
        true
    }

    /// Starts the task of a registered observer watching through `changes` (taken before
    /// the registration's response was rendered): it waits until `started` fires (that
    /// response is on its way), then notifies on every change since the watch was taken.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        registered: Registered,
        changes: Watch,
        request: IncomingRequest,
        render: Arc<dyn Render>,
        started: oneshot::Receiver<()>,
    ) {
        let task = ObserverTask {
            observers: self.clone(),
            token: request.message.token.clone(),
            link: request.remote.link_id(),
            remote: request.remote.clone(),
            no_response: request.message.options.no_response(),
            request,
            generation: registered.generation,
            stop: registered.stop,
            sequence: registered.sequence,
            changes,
            render,
            con_every: self.config.con_every,
        };
        tokio::spawn(task.run(started));
    }
}

struct ObserverTask {
    observers: Arc<Observers>,
    request: IncomingRequest,
    token: Token,
    link: LinkId,
    remote: Remote,
    no_response: u8,
    generation: u64,
    stop: oneshot::Receiver<()>,
    sequence: Arc<AtomicU32>,
    changes: Watch,
    render: Arc<dyn Render>,
    con_every: u32,
}

impl ObserverTask {
    async fn run(mut self, started: oneshot::Receiver<()>) {
        // The registration's own response must go first; if it never goes (the handler
        // failed), the registration is void.
        let ended_by = if started.await.is_err() {
            "registration answer not sent"
        } else {
            self.notify_loop().await
        };
        debug!(remote = %self.remote, token = %self.token, why = ended_by, "observation ended");
        self.observers
            .remove(self.link, &self.token, Some(self.generation));
        self.remote.end_notifications(&self.token);
    }

    async fn notify_loop(&mut self) -> &'static str {
        let mut sent: u32 = 0;
        loop {
            let gone = tokio::select! {
                _ = &mut self.stop => return "deregistered or replaced",
                _ = self.remote.closed() => return "connection closed",
                changed = self.changes.changed() => changed.is_err(),
            };
            let mut m = if gone {
                Message::response(Code::NOT_FOUND, "the resource is gone")
            } else {
                self.render.clone().render(self.request.clone()).await
            };
            // Deregistered while rendering: nothing more goes out.
            if !matches!(
                self.stop.try_recv(),
                Err(oneshot::error::TryRecvError::Empty)
            ) {
                return "deregistered or replaced";
            }
            let ended = self.changes.ended();
            let last = !m.code.is_success() || ended;
            if last {
                // RFC 7641 §4.2: a non-2.xx notification ends the observation; it carries no
                // Observe option. So does the last one of an ended observable (§3.2).
                m.options.remove(OptionNumber::OBSERVE);
            } else {
                let value = self.sequence.fetch_add(1, Ordering::Relaxed) % SEQUENCE_MODULUS;
                m.options.set_uint(OptionNumber::OBSERVE, value);
            }
            sent = sent.wrapping_add(1);
            // Over UDP, a Confirmable one now and then tells whether the client is still
            // there (RFC 7641 §4.5); the last one is always Confirmable.
            let confirmable = last || (self.con_every > 0 && sent % self.con_every == 0);
            if !m.code.is_suppressed_by(self.no_response) {
                // Waits while the link is behind; changes meanwhile fold into the next one.
                let remote = self.remote.clone();
                tokio::select! {
                    _ = remote.notify(self.token.clone(), m, confirmable) => {}
                    _ = &mut self.stop => return "deregistered or replaced",
                    _ = self.remote.closed() => return "connection closed",
                }
            }
            if last {
                return if ended {
                    "the observable ended"
                } else {
                    "non-2.xx notification sent"
                };
            }
        }
    }
}

/// Logs a refused registration; the response then goes without Observe (RFC 7641 §4.1).
pub(crate) fn log_refused(remote: &Remote, why: &Refused) {
    info!(%remote, reason = %why, "observation refused: answering without Observe");
}
