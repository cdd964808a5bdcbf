//! The command queue into a link's task (a connection's or a UDP socket's), in two parts.
//!
//! The bounded part takes requests, observations, notifications and pings: their producers
//! wait for room when the task is behind, and the task stops taking them while its peer is
//! slow to read or too many of its requests are pending, so no producer can make it buffer
//! without bound. Producers wait rather than fail, because each of them is a task that can (a
//! notification folds the changes that come meanwhile into the next one). The control part
//! takes what must go without waiting, sent from drops and synchronous code (cancellations,
//! answers of running handlers, deregistrations, re-registrations, Release); it is bounded by
//! what it answers: at most one entry per request, handler or observation.
//!
//! Both parts are plain deques behind one lock, allocated only when used: an idle connection
//! (most of them, on a server holding many browsers and devices) holds a few hundred bytes
//! here, not a preallocated block of slots per channel.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, Semaphore};

/// Commands taken from the bounded part before producers wait.
pub(crate) const COMMAND_QUEUE: usize = 64;

struct State<C> {
    control: VecDeque<C>,
    commands: VecDeque<C>,
}

struct Shared<C> {
    state: Mutex<State<C>>,
    closed: AtomicBool,
    /// Woken when something is queued (one waiter: the task).
    queued: Notify,
    /// Woken when the task stops taking commands (everyone waiting in `closed()`).
    ended: Notify,
    /// Room in the bounded part.
    room: Semaphore,
}

impl<C> Shared<C> {
    fn state(&self) -> std::sync::MutexGuard<'_, State<C>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The senders' end: cheap to clone.
pub(crate) struct Queues<C> {
    shared: Arc<Shared<C>>,
}

impl<C> Clone for Queues<C> {
    fn clone(&self) -> Queues<C> {
        Queues {
            shared: self.shared.clone(),
        }
    }
}

/// The task's end. Dropping it closes the queue.
pub(crate) struct QueueRx<C> {
    shared: Arc<Shared<C>>,
}

/// A queue into a new task.
pub(crate) fn queues<C>() -> (Queues<C>, QueueRx<C>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            control: VecDeque::new(),
            commands: VecDeque::new(),
        }),
        closed: AtomicBool::new(false),
        queued: Notify::new(),
        ended: Notify::new(),
        room: Semaphore::new(COMMAND_QUEUE),
    });
    (
        Queues {
            shared: shared.clone(),
        },
        QueueRx { shared },
    )
}

impl<C> Queues<C> {
    /// True once the task has stopped taking commands (it ended).
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }
    /// Resolves when the task has stopped taking commands.
    pub(crate) async fn closed(&self) {
        loop {
            let ended = self.shared.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.is_closed() {
                return;
            }
            ended.await;
        }
    }
    /// Queues `c` without waiting (for what is bounded by construction); `Err(c)` when the
    /// task is gone.
    pub(crate) fn control(&self, c: C) -> Result<(), C> {
        {
            let mut s = self.shared.state();
            if self.is_closed() {
                return Err(c);
            }
            s.control.push_back(c);
        }
        self.shared.queued.notify_one();
        Ok(())
    }
    /// Queues `c`, waiting for room; `Err(c)` when the task is gone. Cancel-safe: dropped
    /// while waiting, nothing was queued.
    pub(crate) async fn send(&self, c: C) -> Result<(), C> {
        match self.shared.room.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => return Err(c),
        }
        {
            let mut s = self.shared.state();
            if self.is_closed() {
                return Err(c);
            }
            s.commands.push_back(c);
        }
        self.shared.queued.notify_one();
        Ok(())
    }
}

impl<C> QueueRx<C> {
    /// The next command: from the control part at any time, from the bounded part only when
    /// `taking`. Cancel-safe (inside `select!`): a command is taken only when returned.
    pub(crate) async fn recv(&mut self, taking: bool) -> C {
        loop {
            if let Some(c) = self.try_recv(taking) {
                return c;
            }
            // A notification that came between the check and here is kept as a permit.
            self.shared.queued.notified().await;
        }
    }
    /// The next command if one is queued (as [`QueueRx::recv`] picks it), without waiting.
    pub(crate) fn try_recv(&mut self, taking: bool) -> Option<C> {
        let mut s = self.shared.state();
        if let Some(c) = s.control.pop_front() {
            return Some(c);
        }
        let c = if taking { s.commands.pop_front() } else { None };
        drop(s);
        if c.is_some() {
            self.shared.room.add_permits(1);
        }
        c
    }
    /// Stops taking commands (senders see the task as gone, waiting ones give up) and
    /// returns those still queued.
    pub(crate) fn close(&mut self) -> Vec<C> {
        let left = {
            let mut s = self.shared.state();
            self.shared.closed.store(true, Ordering::Release);
            let mut left: Vec<C> = s.control.drain(..).collect();
            left.extend(s.commands.drain(..));
            left
        };
        self.shared.room.close();
        self.shared.ended.notify_waiters();
        left
    }
}

impl<C> Drop for QueueRx<C> {
    fn drop(&mut self) {
        if !self.shared.closed.load(Ordering::Acquire) {
            self.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn control_comes_first_and_commands_only_when_taking() {
        let (tx, mut rx) = queues::<u32>();
        tx.send(1).await.unwrap();
        tx.control(2).unwrap();
        assert_eq!(rx.recv(true).await, 2);
        // Not taking: the bounded part waits.
        let waited = tokio::time::timeout(Duration::from_millis(50), rx.recv(false)).await;
        assert!(waited.is_err());
        assert_eq!(rx.recv(true).await, 1);
    }

    #[tokio::test]
    async fn producers_wait_for_room_and_close_ends_them() {
        let (tx, mut rx) = queues::<usize>();
        for i in 0..COMMAND_QUEUE {
            tx.send(i).await.unwrap();
        }
        let blocked = tokio::time::timeout(Duration::from_millis(50), tx.send(99)).await;
        assert!(blocked.is_err(), "a full queue makes the producer wait");
        assert_eq!(rx.recv(true).await, 0);
        tx.send(100).await.unwrap();
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(101).await }
        });
        let closed = tokio::spawn({
            let tx = tx.clone();
            async move { tx.closed().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let left = rx.close();
        assert_eq!(left.len(), COMMAND_QUEUE, "what was queued is handed back");
        assert_eq!(waiting.await.unwrap(), Err(101));
        closed.await.unwrap();
        assert!(tx.is_closed());
        assert_eq!(tx.control(5), Err(5));
    }

    #[tokio::test]
    async fn a_command_queued_while_the_task_waits_wakes_it() {
        let (tx, mut rx) = queues::<u8>();
        let task = tokio::spawn(async move { rx.recv(true).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.send(7).await.unwrap();
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .unwrap()
                .unwrap(),
            7
        );
    }

    #[tokio::test]
    async fn try_recv_takes_what_is_queued_without_waiting() {
        let (tx, mut rx) = queues::<u8>();
        assert_eq!(rx.try_recv(true), None);
        tx.send(1).await.unwrap();
        tx.control(2).unwrap();
        // Not taking: only the control part, and the command stays queued.
        assert_eq!(rx.try_recv(false), Some(2));
        assert_eq!(rx.try_recv(false), None);
        assert_eq!(rx.try_recv(true), Some(1));
        assert_eq!(rx.try_recv(true), None);
        // Its room came back: the bounded part takes as many as before.
        for i in 0..COMMAND_QUEUE as u8 {
            tokio::time::timeout(Duration::from_secs(1), tx.send(i))
                .await
                .expect("room for every slot")
                .unwrap();
        }
    }
}
