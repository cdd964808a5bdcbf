//! What the connection task and the UDP socket task share about exchanges in flight: callers'
//! requests waiting for their responses ([`Waiting`]), where the answers go ([`Reply`]: one
//! final answer, or a [`Feed`] of notifications for an observation), the caller's side of
//! handing a request to a task ([`call`]), and a message sent on drop ([`SendOnDrop`]) so that
//! a dropped request is cancelled and a handler that fails still gets its request answered.

use crate::error::Error;
use coapws_proto::message::Message;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, oneshot};

/// Where a request's answers go.
pub(crate) enum Reply {
    /// One final answer (or failure).
    Once(oneshot::Sender<Result<Message, Error>>),
    /// An observation: notifications, then one final answer (or failure).
    Stream(FeedSender),
}

impl Reply {
    /// True when nobody listens any more.
    pub(crate) fn is_closed(&self) -> bool {
        match self {
            Reply::Once(tx) => tx.is_closed(),
            Reply::Stream(feed) => feed.is_closed(),
        }
    }
    /// Hands over the final answer.
    pub(crate) fn finish(self, result: Result<Message, Error>) {
        match self {
            Reply::Once(tx) => {
                let _ = tx.send(result);
            }
            Reply::Stream(feed) => feed.end(result),
        }
    }
}

/// What [`Waiting::deliver`] did with a response that keeps its token open.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Handed to an observation, which goes on.
    Kept,
    /// Handed to a one-shot request, which is over: the transport should forget the token.
    Finished,
    /// Nobody waits under that key.
    Nobody,
}

/// Requests waiting for their response, by the transport's key (the token, or peer and token)
/// and by the caller's id (for cancellation).
pub(crate) struct Waiting<K> {
    /// How many of these the pending-requests metric counts now.
    counted: i64,
    by_key: HashMap<K, (u64, Reply)>,
    by_id: HashMap<u64, K>,
}

impl<K: Eq + Hash + Clone> Waiting<K> {
    pub(crate) fn new() -> Waiting<K> {
        Waiting {
            counted: 0,
            by_key: HashMap::new(),
            by_id: HashMap::new(),
        }
    }
    /// Brings the pending-requests metric up to date with what waits here.
    fn count(&mut self) {
        let now = self.by_key.len() as i64;
        crate::metrics::get().pending.inc_by(now - self.counted);
        self.counted = now;
    }
    /// How many requests wait.
    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }
    /// A request the transport accepted under `key`, for the caller's `id`.
    pub(crate) fn insert(&mut self, key: K, id: u64, reply: Reply) {
        self.by_id.insert(id, key.clone());
        self.by_key.insert(key, (id, reply));
        self.count();
    }
    /// Hands the final `result` to whoever waits on `key`; false if nobody does.
    pub(crate) fn finish(&mut self, key: &K, result: Result<Message, Error>) -> bool {
        match self.by_key.remove(key) {
            Some((id, reply)) => {
                self.by_id.remove(&id);
                reply.finish(result);
                self.count();
                true
            }
            None => false,
        }
    }
    /// Hands a notification (a response after which the transport keeps the token open) to
    /// whoever waits on `key`.
    pub(crate) fn deliver(&mut self, key: &K, message: Message) -> Delivery {
        match self.by_key.get(key) {
            None => Delivery::Nobody,
            Some((_, Reply::Stream(feed))) => {
                feed.push(message);
                Delivery::Kept
            }
            Some((_, Reply::Once(_))) => {
                self.finish(key, Ok(message));
                Delivery::Finished
            }
        }
    }
    /// The key of caller `id`'s request.
    pub(crate) fn key_of(&self, id: u64) -> Option<&K> {
        self.by_id.get(&id)
    }
    /// Replaces where caller `id`'s answers go; false if it waits no more.
    pub(crate) fn replace(&mut self, id: u64, reply: Reply) -> bool {
        let Some(key) = self.by_id.get(&id) else {
            return false;
        };
        match self.by_key.get_mut(key) {
            Some(entry) => {
                entry.1 = reply;
                true
            }
            None => false,
        }
    }
    /// Forgets the request of caller `id`; returns its key for the transport to cancel.
    pub(crate) fn cancel(&mut self, id: u64) -> Option<K> {
        let key = self.by_id.remove(&id)?;
        self.by_key.remove(&key);
        self.count();
        Some(key)
    }
    /// Fails every waiting request with `error`; returns their keys, for the transport to
    /// forget.
    pub(crate) fn fail_all_keys(&mut self, error: &Error) -> Vec<K> {
        self.by_id.clear();
        let keys = self
            .by_key
            .drain()
            .map(|(key, (_, reply))| {
                reply.finish(Err(error.clone()));
                key
            })
            .collect();
        self.count();
        keys
    }
    /// Fails the waiting requests whose key matches with `error`; returns their keys.
    pub(crate) fn fail_matching(&mut self, matches: impl Fn(&K) -> bool, error: &Error) -> Vec<K> {
        let keys: Vec<K> = self.by_key.keys().filter(|k| matches(k)).cloned().collect();
        for key in &keys {
            self.finish(key, Err(error.clone()));
        }
        keys
    }
    /// Fails every waiting request with `error`.
    pub(crate) fn fail_all(&mut self, error: &Error) {
        self.by_id.clear();
        for (_, (_, reply)) in self.by_key.drain() {
            reply.finish(Err(error.clone()));
        }
        self.count();
    }
}

impl<K> Drop for Waiting<K> {
    fn drop(&mut self) {
        crate::metrics::get().pending.dec_by(self.counted);
    }
}

/// Notifications queued for one observation before its reader takes them. A reader that
/// falls behind loses the oldest ones, never the newest: an observer wants the current state
/// (RFC 7641 §3.3: eventual consistency), and the queue stays bounded.
pub(crate) const FEED_CAPACITY: usize = 32;

struct FeedState {
    queue: VecDeque<Message>,
    end: Option<Result<Message, Error>>,
    reader_gone: bool,
    /// Notifications dropped because the reader fell behind.
    dropped: u64,
}

struct FeedShared {
    state: Mutex<FeedState>,
    wake: Notify,
}

fn lock(s: &FeedShared) -> std::sync::MutexGuard<'_, FeedState> {
    s.state.lock().unwrap_or_else(|p| p.into_inner())
}

/// The transport's end of an observation's feed.
pub(crate) struct FeedSender {
    shared: Arc<FeedShared>,
}

/// The observer's end of a feed.
pub(crate) struct Feed {
    shared: Arc<FeedShared>,
}

/// What a feed yields.
pub(crate) enum FeedItem {
    /// A notification; the observation goes on.
    Notification(Message),
    /// The final answer (or failure); nothing follows.
    End(Result<Message, Error>),
}

/// A new feed.
pub(crate) fn feed() -> (FeedSender, Feed) {
    let shared = Arc::new(FeedShared {
        state: Mutex::new(FeedState {
            queue: VecDeque::new(),
            end: None,
            reader_gone: false,
            dropped: 0,
        }),
        wake: Notify::new(),
    });
    (
        FeedSender {
            shared: shared.clone(),
        },
        Feed { shared },
    )
}

impl FeedSender {
    fn is_closed(&self) -> bool {
        lock(&self.shared).reader_gone
    }
    fn push(&self, m: Message) {
        let mut s = lock(&self.shared);
        if s.end.is_some() {
            return;
        }
        if s.queue.len() >= FEED_CAPACITY {
            s.queue.pop_front();
            s.dropped += 1;
        }
        s.queue.push_back(m);
        drop(s);
        self.shared.wake.notify_one();
    }
    fn end(&self, result: Result<Message, Error>) {
        let mut s = lock(&self.shared);
        if s.end.is_none() {
            s.end = Some(result);
        }
        drop(s);
        self.shared.wake.notify_one();
    }
}

impl Drop for FeedSender {
    /// A transport task that goes away without a final answer ends the feed all the same.
    fn drop(&mut self) {
        let mut s = lock(&self.shared);
        if s.end.is_none() {
            s.end = Some(Err(Error::Connection(
                coapws_proto::connection::ConnectionError::TransportClosed,
            )));
        }
        drop(s);
        self.shared.wake.notify_one();
    }
}

impl Feed {
    /// The next notification, or the end once every notification before it was taken.
    pub(crate) async fn next(&mut self) -> FeedItem {
        loop {
            {
                let mut s = lock(&self.shared);
                if let Some(m) = s.queue.pop_front() {
                    return FeedItem::Notification(m);
                }
                if let Some(end) = s.end.take() {
                    // Later calls see the end again as a closed feed.
                    s.end = Some(Err(Error::ObservationEnded));
                    return FeedItem::End(end);
                }
            }
            self.shared.wake.notified().await;
        }
    }
    /// Notifications dropped so far because the reader fell behind.
    pub(crate) fn dropped(&self) -> u64 {
        lock(&self.shared).dropped
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        lock(&self.shared).reader_gone = true;
    }
}

/// Sends a message to a task when dropped, unless told otherwise first.
pub(crate) struct SendOnDrop<C> {
    tx: crate::queue::Queues<C>,
    message: Option<C>,
}

impl<C> SendOnDrop<C> {
    /// On drop, `message` goes to `tx` (its control part).
    pub(crate) fn new(tx: crate::queue::Queues<C>, message: C) -> SendOnDrop<C> {
        SendOnDrop {
            tx,
            message: Some(message),
        }
    }
    /// Sends `instead` now, and nothing on drop.
    pub(crate) fn send_instead(mut self, instead: C) {
        self.message = None;
        let _ = self.tx.control(instead);
    }
    /// Sends nothing.
    pub(crate) fn disarm(mut self) {
        self.message = None;
    }
}

impl<C> Drop for SendOnDrop<C> {
    fn drop(&mut self) {
        if let Some(m) = self.message.take() {
            let _ = self.tx.control(m);
        }
    }
}

/// Hands a request to a task (`make` builds the command around the reply channel) and waits
/// for the answer. Dropping the future sends `cancel`; a task that is gone gives `gone()`.
pub(crate) async fn call<C>(
    tx: &crate::queue::Queues<C>,
    make: impl FnOnce(Reply) -> C,
    cancel: C,
    gone: impl Fn() -> Error,
) -> Result<Message, Error> {
    let (reply, rx) = oneshot::channel();
    tx.send(make(Reply::Once(reply)))
        .await
        .map_err(|_| gone())?;
    let guard = SendOnDrop::new(tx.clone(), cancel);
    let result = rx.await.unwrap_or_else(|_| Err(gone()));
    guard.disarm();
    result
}

/// Polls `f` once, in the caller's task: its output if it completed at once. Otherwise it is
/// left to be polled again (moved into a task of its own: being boxed, it may move), which
/// registers that task's waker; the waker of this first poll is never woken.
/// `Err` when it panicked (the panic is caught: the caller's task goes on).
pub(crate) fn poll_once<T>(f: &mut crate::site::BoxFuture<T>) -> Result<Option<T>, ()> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let polled =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f.as_mut().poll(&mut cx)));
    match polled {
        Ok(std::task::Poll::Ready(v)) => Ok(Some(v)),
        Ok(std::task::Poll::Pending) => Ok(None),
        Err(_) => Err(()),
    }
}

/// Sleeps until `deadline`, or for ever without one (a `select!` arm for a driver's next
/// timer).
pub(crate) async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
