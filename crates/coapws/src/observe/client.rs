//! Observe, client side (RFC 7641 §3, RFC 8323 appendix A): [`Endpoint::observe`] registers
//! and returns an [`Observation`], whose [`Observation::next`] yields each notification and
//! finally a typed [`ObserveEnd`].
//!
//! Over UDP, notifications that arrive out of order are dropped (§3.4); over reliable
//! transports the Observe value is ignored (RFC 8323 appendix A.1). When a notification's
//! Max-Age lapses without a newer one, the observation re-registers with the same token
//! (§3.3.1). A notification too large for one message is fetched block by block (RFC 7959
//! §3.4). Dropping an `Observation` deregisters: with a GET carrying Observe 1 over reliable
//! transports, by answering the next notification with Reset over UDP.

use crate::endpoint::{Endpoint, Request, Response};
use crate::error::Error;
use crate::exchange::{Feed, FeedItem, Reply, feed};
use crate::remote::Remote;
use coapws_proto::blockwise::BlockError;
use coapws_proto::message::{Message, Token};
use coapws_proto::observe::Freshness;
use coapws_proto::option::OptionNumber;
use std::time::{Duration, Instant};
use tracing::debug;

/// How an observation ended.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ObserveEnd {
    /// The server answered without Observe: it does not (or no longer does) notify, e.g.
    /// after a deregistration, or because the resource is not observable. The response is
    /// a representation like any other.
    Deregistered(Response),
    /// The server ended the observation with a non-2.xx response (RFC 7641 §3.2).
    Ended(Response),
    /// The connection (or the UDP exchange) was lost: closed, aborted, reset, shut down.
    ConnectionLost(Error),
    /// No answer to the registration (or a re-registration) in time.
    Timeout,
    /// Fetching the rest of a block-wise notification failed.
    Failed(Error),
}

impl std::fmt::Display for ObserveEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ObserveEnd::Deregistered(r) => {
                write!(f, "observation ended by the server ({})", r.code())
            }
            ObserveEnd::Ended(r) => write!(f, "observation ended with {}", r.code()),
            ObserveEnd::ConnectionLost(e) => write!(f, "observation lost: {e}"),
            ObserveEnd::Timeout => write!(f, "observation timed out"),
            ObserveEnd::Failed(e) => write!(f, "observation failed: {e}"),
        }
    }
}

impl std::error::Error for ObserveEnd {}

/// A running observation. Dropping it deregisters.
pub struct Observation {
    endpoint: Endpoint,
    remote: Remote,
    /// The registration request (Observe 0), token chosen by the transport.
    registration: Message,
    id: u64,
    feed: Feed,
    reliable: bool,
    confirmable: bool,
    timeout: Duration,
    freshness: Freshness,
    /// When to act if nothing arrives: re-register (Max-Age lapsed), or give up (an answer to
    /// a registration is overdue).
    deadline: Instant,
    awaiting_answer: bool,
    end: Option<ObserveEnd>,
}

impl std::fmt::Debug for Observation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observation")
            .field("remote", &self.remote)
            .field("path", &self.registration.options.uri_path_string())
            .field("end", &self.end)
            .finish()
    }
}

impl Endpoint {
    /// Registers an observation of `request`'s resource (a GET or FETCH; Observe 0 is set
    /// here) and returns it; its first [`Observation::next`] is the registration's response.
    /// Fails only when the request cannot be sent at all (connection refused, bad URI).
    pub async fn observe(&self, request: Request) -> Result<Observation, Error> {
        let remote = self.remote_within(&request.uri, request.timeout).await?;
        let timeout = request.timeout.unwrap_or(self.config().request_timeout);
        self.observe_on(remote, request.to_message(), request.confirmable, timeout)
            .await
    }

    /// Registers an observation with `message` (a GET or FETCH; Observe 0 is set here) sent
    /// to `remote` over its link, as [`Endpoint::request_to`] sends requests: how a server
    /// observes a resource of a client that connected to it.
    pub async fn observe_to(
        &self,
        remote: &Remote,
        mut message: Message,
    ) -> Result<Observation, Error> {
        // The connection picks the token, whatever the message carries.
        message.token = Token::EMPTY;
        let timeout = self.config().request_timeout;
        self.observe_on(remote.clone(), message, true, timeout)
            .await
    }

    async fn observe_on(
        &self,
        remote: Remote,
        mut registration: Message,
        confirmable: bool,
        timeout: Duration,
    ) -> Result<Observation, Error> {
        registration.options.set_uint(OptionNumber::OBSERVE, 0);
        // Waiting for room on a busy link counts against the request's time.
        let (id, feed) =
            tokio::time::timeout(timeout, remote.observe(registration.clone(), confirmable))
                .await
                .map_err(|_| Error::Timeout)??;
        Ok(Observation {
            endpoint: self.clone(),
            reliable: remote.scheme().is_reliable(),
            remote,
            registration,
            id,
            feed,
            confirmable,
            timeout,
            freshness: Freshness::new(),
            deadline: Instant::now() + timeout,
            awaiting_answer: true,
            end: None,
        })
    }
}

impl Observation {
    /// The remote being observed.
    pub fn remote(&self) -> &Remote {
        &self.remote
    }

    /// Notifications dropped because this reader fell behind (the newest are kept).
    pub fn dropped(&self) -> u64 {
        self.feed.dropped()
    }

    /// The next notification (the first is the registration's response), or how the
    /// observation ended; once ended, the same ending again.
    pub async fn next(&mut self) -> Result<Response, ObserveEnd> {
        loop {
            if let Some(end) = &self.end {
                return Err(end.clone());
            }
            let item = tokio::select! {
                item = self.feed.next() => item,
                _ = tokio::time::sleep_until(self.deadline.into()) => {
                    self.lapsed();
                    continue;
                }
            };
            match item {
                FeedItem::Notification(m) => {
                    if let Some(r) = self.take_notification(m).await {
                        return r;
                    }
                }
                FeedItem::End(result) => {
                    let end = match result {
                        Ok(m) => {
                            let r = self.response(m);
                            if r.code().is_success() {
                                ObserveEnd::Deregistered(r)
                            } else {
                                ObserveEnd::Ended(r)
                            }
                        }
                        Err(Error::Timeout) => ObserveEnd::Timeout,
                        Err(e) => ObserveEnd::ConnectionLost(e),
                    };
                    self.end = Some(end);
                }
            }
        }
    }

    /// Deregisters explicitly (GET with Observe 1 and the observation's token, RFC 7641
    /// §3.6) and returns the server's answer to it.
    pub async fn cancel(mut self) -> Result<Response, Error> {
        if let Some(end) = &self.end {
            return match end {
                ObserveEnd::Deregistered(r) | ObserveEnd::Ended(r) => Ok(r.clone()),
                _ => Err(Error::ObservationEnded),
            };
        }
        self.end = Some(ObserveEnd::Timeout);
        let (tx, mut answers) = feed();
        let dereg = self.deregistration();
        self.remote
            .resend(self.id, dereg, self.confirmable, Some(Reply::Stream(tx)));
        let wait = async {
            loop {
                // Notifications still in flight are not the answer.
                if let FeedItem::End(result) = answers.next().await {
                    return result;
                }
            }
        };
        match tokio::time::timeout(self.timeout, wait).await {
            Ok(result) => result.map(|m| self.response(m)),
            Err(_) => {
                self.remote.cancel(self.id);
                Err(Error::Timeout)
            }
        }
    }

    fn deregistration(&self) -> Message {
        let mut m = self.registration.clone();
        m.options.set_uint(OptionNumber::OBSERVE, 1);
        m
    }

    fn response(&self, message: Message) -> Response {
        Response {
            message,
            remote: self.remote.clone(),
        }
    }

    /// Nothing arrived by the deadline.
    fn lapsed(&mut self) {
        if self.awaiting_answer {
            self.end = Some(ObserveEnd::Timeout);
            self.remote.cancel(self.id);
            return;
        }
        // RFC 7641 §3.3.1: the last notification is stale; re-register with the same token.
        debug!(remote = %self.remote, path = %self.registration.options.uri_path_string(), "Max-Age lapsed: re-registering");
        self.remote
            .resend(self.id, self.registration.clone(), self.confirmable, None);
        self.freshness.reset();
        self.awaiting_answer = true;
        self.deadline = Instant::now() + self.timeout;
    }

    /// A notification arrived: `None` if it is to be skipped (out of order, or superseded
    /// while its blocks were fetched).
    async fn take_notification(&mut self, m: Message) -> Option<Result<Response, ObserveEnd>> {
        let now = Instant::now();
        // RFC 8323 appendix A.1: over reliable transports the value means nothing.
        if !self.reliable {
            let value = m.options.observe().unwrap_or(0);
            if !self.freshness.accept(value, now) {
                debug!(remote = %self.remote, value, "stale notification dropped (RFC 7641 §3.4)");
                return None;
            }
        }
        self.awaiting_answer = false;
        let max_age = Duration::from_secs(u64::from(m.options.max_age()));
        self.deadline = now + max_age + self.endpoint.config().observe_max_age_grace;
        if !m.options.block2().is_some_and(|b| b.more) {
            return Some(Ok(self.response(m)));
        }
        // RFC 7959 §3.4: the rest of a large notification comes by ordinary requests.
        let mut rest = self.registration.clone();
        rest.options.remove(OptionNumber::OBSERVE);
        if rest.code != coapws_proto::code::Code::FETCH {
            rest.payload = bytes::Bytes::new();
        }
        let first = self.response(m);
        let t = crate::transfer::Wait {
            per_request: Some(self.timeout),
            deadline: None,
        };
        match self
            .endpoint
            .collect_blocks(&self.remote, rest, first, t, self.confirmable, None)
            .await
        {
            Ok(whole) => Some(Ok(whole)),
            // A newer state replaced it on the way: its own notification follows.
            Err(Error::Block(BlockError::EtagChanged)) => None,
            Err(e) => {
                let end = ObserveEnd::Failed(e);
                self.end = Some(end.clone());
                Some(Err(end))
            }
        }
    }
}

impl Drop for Observation {
    fn drop(&mut self) {
        if self.end.is_none() {
            let dereg = self.deregistration();
            self.remote.deregister(self.id, dereg);
        }
    }
}
