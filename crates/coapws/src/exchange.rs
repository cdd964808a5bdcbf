//! What the connection task and the UDP socket task share about exchanges in flight: callers'
//! requests waiting for their responses ([`Waiting`]), the caller's side of handing a request
//! to a task ([`call`]), and a message sent on drop ([`SendOnDrop`]) so that a dropped request
//! is cancelled and a handler that fails still gets its request answered.

use crate::error::Error;
use coapws_proto::message::Message;
use std::collections::HashMap;
use std::hash::Hash;
use tokio::sync::{mpsc, oneshot};

/// Where a request's response (or failure) goes.
pub(crate) type Reply = oneshot::Sender<Result<Message, Error>>;

/// Requests waiting for their response, by the transport's key (the token, or peer and token)
/// and by the caller's id (for cancellation).
pub(crate) struct Waiting<K> {
    by_key: HashMap<K, (u64, Reply)>,
    by_id: HashMap<u64, K>,
}

impl<K: Eq + Hash + Clone> Waiting<K> {
    pub(crate) fn new() -> Waiting<K> {
        Waiting {
            by_key: HashMap::new(),
            by_id: HashMap::new(),
        }
    }
    /// A request the transport accepted under `key`, for the caller's `id`.
    pub(crate) fn insert(&mut self, key: K, id: u64, reply: Reply) {
        self.by_id.insert(id, key.clone());
        self.by_key.insert(key, (id, reply));
    }
    /// Hands `result` to whoever waits on `key`; false if nobody does.
    pub(crate) fn finish(&mut self, key: &K, result: Result<Message, Error>) -> bool {
        match self.by_key.remove(key) {
            Some((id, reply)) => {
                self.by_id.remove(&id);
                let _ = reply.send(result);
                true
            }
            None => false,
        }
    }
    /// Forgets the request of caller `id`; returns its key for the transport to cancel.
    pub(crate) fn cancel(&mut self, id: u64) -> Option<K> {
        let key = self.by_id.remove(&id)?;
        self.by_key.remove(&key);
        Some(key)
    }
    /// Fails every waiting request with `error`.
    pub(crate) fn fail_all(&mut self, error: &Error) {
        self.by_id.clear();
        for (_, (_, reply)) in self.by_key.drain() {
            let _ = reply.send(Err(error.clone()));
        }
    }
}

/// Sends a message to a task when dropped, unless told otherwise first.
pub(crate) struct SendOnDrop<C> {
    tx: mpsc::UnboundedSender<C>,
    message: Option<C>,
}

impl<C> SendOnDrop<C> {
    /// On drop, `message` goes to `tx`.
    pub(crate) fn new(tx: mpsc::UnboundedSender<C>, message: C) -> SendOnDrop<C> {
        SendOnDrop {
            tx,
            message: Some(message),
        }
    }
    /// Sends `instead` now, and nothing on drop.
    pub(crate) fn send_instead(mut self, instead: C) {
        self.message = None;
        let _ = self.tx.send(instead);
    }
    /// Sends nothing.
    pub(crate) fn disarm(mut self) {
        self.message = None;
    }
}

impl<C> Drop for SendOnDrop<C> {
    fn drop(&mut self) {
        if let Some(m) = self.message.take() {
            let _ = self.tx.send(m);
        }
    }
}

/// Hands a request to a task (`make` builds the command around the reply channel) and waits
/// for the answer. Dropping the future sends `cancel`; a task that is gone gives `gone()`.
pub(crate) async fn call<C>(
    tx: &mpsc::UnboundedSender<C>,
    make: impl FnOnce(Reply) -> C,
    cancel: C,
    gone: impl Fn() -> Error,
) -> Result<Message, Error> {
    let (reply, rx) = oneshot::channel();
    tx.send(make(reply)).map_err(|_| gone())?;
    let guard = SendOnDrop::new(tx.clone(), cancel);
    let result = rx.await.unwrap_or_else(|_| Err(gone()));
    guard.disarm();
    result
}
