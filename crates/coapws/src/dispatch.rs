//! The server side of a request between a connection and the [`Site`]: block-wise transfers
//! (reassembling Block1 uploads, cutting large responses into Block2 pieces that fit the
//! peer, each with an ETag), observation registrations (RFC 7641, handed to
//! [`crate::observe`]) and No-Response (RFC 7967). Handlers see whole requests and return
//! whole responses.

use crate::observe::{ObserveConfig, Observers, Render, log_refused};
use crate::site::BoxFuture;
use crate::site::{IncomingRequest, ObserveSlot, PeerLimits, Route, Site};
use bytes::Bytes;
use coapws_proto::blockwise::{Block1Collector, Block1Step, BlockError, slice_block2};
use coapws_proto::code::Code;
use coapws_proto::codec::tcp;
use coapws_proto::message::{Message, Token};
use coapws_proto::observe::Registration;
use coapws_proto::option::{BlockValue, OptionNumber};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::debug;

/// What the dispatcher answers an incoming request with.
pub(crate) struct Answer {
    /// The response to send, or `None` when No-Response suppresses it.
    pub message: Option<Message>,
    /// For a registered observation: fired once the response is handed to the transport, so
    /// that no notification overtakes it.
    pub started: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Answer {
    /// The answer sending `response` (counted in the metrics) unless the request's
    /// No-Response `bits` suppress it.
    fn of(response: Message, bits: u8, started: Option<Started>) -> Answer {
        crate::metrics::get().response_sent(response.code);
        Answer {
            message: (!response.code.is_suppressed_by(bits)).then_some(response),
            started,
        }
    }
    /// Sends `started` now that the response is on its way.
    pub(crate) fn start_observer(started: Option<tokio::sync::oneshot::Sender<()>>) {
        if let Some(s) = started {
            let _ = s.send(());
        }
    }
}

/// What the connection hands incoming requests to: the endpoint's site and policies.
pub(crate) trait Dispatch: Send + Sync + 'static {
    /// The answer to one request.
    fn dispatch(self: Arc<Self>, request: IncomingRequest) -> BoxFuture<Answer>;
    /// A notification of the observation `token` on `link` could not be delivered (UDP: the
    /// client answered with Reset, or never acknowledged it): the observer is gone.
    fn observer_gone(&self, link: (u64, Option<std::net::SocketAddr>), token: &Token);
    /// How many observe the site over `link`.
    fn observers_on(&self, link: (u64, Option<std::net::SocketAddr>)) -> usize;
}

/// Limits of the block-wise server.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BlockwiseConfig {
    pub(crate) max_body_size: usize,
    pub(crate) max_uploads: usize,
    pub(crate) upload_timeout: Duration,
    pub(crate) upload_memory: usize,
}

/// Which exchange a block belongs to: same peer (connection or address), method, and every
/// option that selects the resource or its representation (target, Accept, …; for a FETCH
/// sent whole, its body too). Block-wise bookkeeping options are left out, and so is
/// Request-Tag except for uploads (RFC 9175 §3: it tells concurrent Block1 uploads apart; the
/// Block2 requests after them do not repeat it).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct UploadKey {
    link: (u64, Option<SocketAddr>),
    code: Code,
    options: Vec<(u16, Bytes)>,
    body: Option<u64>,
}

impl UploadKey {
    fn of(req: &IncomingRequest, upload: bool) -> UploadKey {
        let m = &req.message;
        let options = m
            .options
            .iter()
            .filter(|(n, _)| {
                !matches!(
                    *n,
                    OptionNumber::BLOCK1
                        | OptionNumber::BLOCK2
                        | OptionNumber::SIZE1
                        | OptionNumber::SIZE2
                        | OptionNumber::OBSERVE
                        | OptionNumber::NO_RESPONSE
                ) && (upload || *n != OptionNumber::REQUEST_TAG)
            })
            .map(|(n, v)| (n.0, v.clone()))
            .collect();
        let body = (m.code == Code::FETCH && m.options.block1().is_none()).then(|| {
            let mut h = std::hash::DefaultHasher::new();
            m.payload.hash(&mut h);
            h.finish()
        });
        UploadKey {
            link: req.remote.link_id(),
            code: m.code,
            options,
            body,
        }
    }
}

/// An ETag for a representation cut into blocks that has none (RFC 7959 §2.4: the client
/// checks it on every block): a hash of its payload and Content-Format.
fn representation_etag(m: &Message) -> Bytes {
    let mut h = std::hash::DefaultHasher::new();
    m.payload.hash(&mut h);
    m.options.content_format().hash(&mut h);
    Bytes::copy_from_slice(&h.finish().to_be_bytes())
}

struct Upload {
    collector: Block1Collector,
    last: Instant,
}

/// Serves a [`Site`] with block-wise transfers, observations and No-Response.
pub(crate) struct SiteDispatch {
    site: Arc<Site>,
    config: BlockwiseConfig,
    uploads: Mutex<HashMap<UploadKey, Upload>>,
    /// Whole responses whose later Block2 pieces are still to be fetched.
    responses: Mutex<HashMap<UploadKey, (Message, Instant)>>,
    observers: Arc<Observers>,
}

/// 4.13 with the largest body taken in Size1 (RFC 7959 §2.9.3).
fn too_large(limit: usize) -> Message {
    text(Code::REQUEST_ENTITY_TOO_LARGE, "body too large").with_uint_option(
        OptionNumber::SIZE1,
        u32::try_from(limit).unwrap_or(u32::MAX),
    )
}

fn text(code: Code, t: &str) -> Message {
    Message::response(code, Bytes::copy_from_slice(t.as_bytes()))
}

impl SiteDispatch {
    pub(crate) fn new(site: Site, config: BlockwiseConfig, observe: ObserveConfig) -> SiteDispatch {
        SiteDispatch {
            site: Arc::new(site),
            config,
            uploads: Mutex::new(HashMap::new()),
            responses: Mutex::new(HashMap::new()),
            observers: Arc::new(Observers::new(observe)),
        }
    }

    /// Number of observers registered.
    pub(crate) fn observer_count(&self) -> usize {
        self.observers.len()
    }

    /// Handles one request, taking observation registrations and deregistrations (GET and
    /// FETCH with Observe 0 or 1) on the way.
    async fn answer(self: &Arc<Self>, mut req: IncomingRequest) -> (Message, Option<Started>) {
        let registration = match (req.message.code, req.message.options.observe()) {
            (Code::GET | Code::FETCH, Some(v)) => Registration::of(v),
            _ => return (self.handle(req).await, None),
        };
        let link = req.remote.link_id();
        let token = req.message.token.clone();
        match registration {
            Registration::Deregister => {
                self.observers.remove(link, &token, None);
                req.message.options.remove(OptionNumber::OBSERVE);
                (self.handle(req).await, None)
            }
            Registration::Other(_) => {
                req.message.options.remove(OptionNumber::OBSERVE);
                (self.handle(req).await, None)
            }
            Registration::Register => self.register(req, link, token).await,
        }
    }

    async fn register(
        self: &Arc<Self>,
        mut req: IncomingRequest,
        link: (u64, Option<SocketAddr>),
        token: Token,
    ) -> (Message, Option<Started>) {
        let mut stored = req.clone();
        stored.rendering = true;
        let slot = ObserveSlot::default();
        req.observe = Some(slot.clone());
        let mut response = self.handle(req).await;
        let observable = slot.take();
        let observable = observable.filter(|(o, _)| response.code.is_success() && !o.is_ended());
        let Some((_, watch)) = observable else {
            // Not observable, or not 2.xx: no observation, and one with this token ends.
            self.observers.remove(link, &token, None);
            response.options.remove(OptionNumber::OBSERVE);
            return (response, None);
        };
        match self.observers.register(link, &token) {
            Ok(registered) => {
                response
                    .options
                    .set_uint(OptionNumber::OBSERVE, registered.first_value());
                let (started, start) = tokio::sync::oneshot::channel();
                let render: Arc<dyn Render> = self.clone();
                self.observers
                    .spawn(registered, watch, stored, render, start);
                (response, Some(started))
            }
            Err(why) => {
                log_refused(&stored.remote, &why);
                response.options.remove(OptionNumber::OBSERVE);
                (response, None)
            }
        }
    }

    /// Feeds one Block1 request; `Err` is the response to send now (2.31 or an error).
    fn upload(
        &self,
        req: &IncomingRequest,
        block1: BlockValue,
    ) -> Result<(Bytes, BlockValue), Message> {
        let key = UploadKey::of(req, true);
        let now = Instant::now();
        let mut uploads = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
        let timeout = self.config.upload_timeout;
        uploads.retain(|_, u| now.duration_since(u.last) < timeout);
        if block1.num == 0 {
            // Another upload of this client to this resource under the same Request-Tag (or
            // none) is in progress: its blocks and these could not be told apart. The newcomer
            // is refused, so no body is ever mixed from two uploads (RFC 9175 §3.4).
            if uploads.contains_key(&key) {
                debug!(remote = %req.remote, "second concurrent upload without its own Request-Tag refused");
                return Err(text(
                    Code::REQUEST_ENTITY_INCOMPLETE,
                    "another upload to this resource is in progress; tag concurrent uploads with Request-Tag (RFC 9175)",
                ));
            }
            // RFC 7959 §4: an announced size above the limit is refused before any data.
            let announced = req.message.options.get_uint(OptionNumber::SIZE1);
            if announced.is_some_and(|n| n as usize > self.config.max_body_size) {
                return Err(too_large(self.config.max_body_size));
            }
            if uploads.len() >= self.config.max_uploads {
                return Err(
                    text(Code::SERVICE_UNAVAILABLE, "too many uploads in progress")
                        .with_uint_option(OptionNumber::MAX_AGE, 5),
                );
            }
            uploads.insert(
                key.clone(),
                Upload {
                    collector: Block1Collector::new(self.config.max_body_size),
                    last: now,
                },
            );
        }
        // All uploads together are bounded too, not only each one.
        let buffered: usize = uploads.values().map(|u| u.collector.received()).sum();
        if buffered + req.message.payload.len() > self.config.upload_memory {
            uploads.remove(&key);
            return Err(text(
                Code::SERVICE_UNAVAILABLE,
                "too much upload data in progress",
            )
            .with_uint_option(OptionNumber::MAX_AGE, 5));
        }
        let Some(upload) = uploads.get_mut(&key) else {
            return Err(text(
                Code::REQUEST_ENTITY_INCOMPLETE,
                "no upload in progress for this block",
            ));
        };
        upload.last = now;
        let step = upload.collector.feed(block1, &req.message.payload);
        match step {
            Ok(Block1Step::Continue(b)) => {
                Err(Message::new(Code::CONTINUE).with_option(OptionNumber::BLOCK1, b.encode()))
            }
            Ok(Block1Step::Complete { body, block1 }) => {
                uploads.remove(&key);
                crate::metrics::get().block_transfer("upload");
                Ok((body, block1))
            }
            Err(e) => {
                uploads.remove(&key);
                debug!(remote = %req.remote, error = %e, "Block1 upload refused");
                Err(match e {
                    BlockError::TooLarge { limit } => too_large(limit),
                    BlockError::OutOfOrder { .. } => {
                        text(Code::REQUEST_ENTITY_INCOMPLETE, "block out of order")
                    }
                    other => text(Code::BAD_REQUEST, &other.to_string()),
                })
            }
        }
    }

    /// The whole response of an exchange whose Block2 pieces are still being fetched.
    fn cached(&self, key: &UploadKey) -> Option<Message> {
        let mut responses = self.responses.lock().unwrap_or_else(|p| p.into_inner());
        let timeout = self.config.upload_timeout;
        let now = Instant::now();
        responses.retain(|_, (_, at)| now.duration_since(*at) < timeout);
        responses.get(key).map(|(m, _)| m.clone())
    }

    /// Keeps (or, with `None`, forgets) the whole response of an exchange whose later Block2
    /// pieces will be asked for. Bounded by `max_uploads` entries and `upload_memory` bytes:
    /// the oldest entries make room; their later blocks then get 4.08 (or are recomputed for
    /// GET and FETCH).
    fn remember(&self, key: UploadKey, response: Option<Message>) {
        let mut responses = self.responses.lock().unwrap_or_else(|p| p.into_inner());
        responses.remove(&key);
        let Some(m) = response else { return };
        if m.payload.len() > self.config.upload_memory {
            debug!("response too large to keep for its later blocks");
            return;
        }
        let mut held: usize = responses.values().map(|(r, _)| r.payload.len()).sum();
        while !responses.is_empty()
            && (responses.len() >= self.config.max_uploads
                || held + m.payload.len() > self.config.upload_memory)
        {
            let oldest = responses
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone());
            if let Some((r, _)) = oldest.and_then(|k| responses.remove(&k)) {
                held -= r.payload.len();
                debug!("response cache full: dropped the oldest kept response");
            }
        }
        responses.insert(key, (m, Instant::now()));
    }

    async fn handle(&self, mut req: IncomingRequest) -> Message {
        // RFC 8323 §6: SZX 7 (BERT) only with a peer whose CSM allows it; otherwise 4.00.
        let bert_asked = [req.message.options.block1(), req.message.options.block2()]
            .into_iter()
            .flatten()
            .any(|b| b.is_bert());
        if bert_asked && !req.peer_limits.bert {
            return text(
                Code::BAD_REQUEST,
                "BERT (SZX 7) is not allowed on this transport",
            );
        }
        let block1 = req.message.options.block1();
        let block2 = req.message.options.block2();
        let key = UploadKey::of(&req, false);
        if block1.is_none() && block2.is_none() {
            // No block-wise state to look up, nothing to keep if it fits.
            let peer = req.peer_limits;
            let response = self.site.handle(req).await;
            return self.fit(response, peer, key);
        }
        let mut echo_block1 = None;
        if block1.is_some() && self.site.takes_blocks(&req) {
            // The handler takes the upload piece by piece (a file server writing to disk).
            let peer = req.peer_limits;
            req.block2 = block2;
            req.message.options.remove(OptionNumber::BLOCK2);
            let response = self.site.handle(req).await;
            if response.code == Code::CONTINUE {
                return response;
            }
            return self.cut(response, block2, peer, None, key);
        }
        if let Some(block1) = block1 {
            match self.upload(&req, block1) {
                Ok((body, last)) => {
                    req.message.payload = body;
                    req.message.options.remove(OptionNumber::BLOCK1);
                    echo_block1 = Some(last);
                }
                Err(answer) => return answer,
            }
        }
        req.message.options.remove(OptionNumber::BLOCK2);
        req.block2 = block2;
        let peer = req.peer_limits;
        let later_block = block2.is_some_and(|b| b.num > 0);
        // Later blocks come from the response already produced: the representation must not
        // change between blocks (RFC 7959 §2.4), and a POST's handler must not run twice.
        let response = match later_block.then(|| self.cached(&key)).flatten() {
            Some(r) => r,
            None if later_block && !matches!(req.message.code, Code::GET | Code::FETCH) => {
                return text(Code::REQUEST_ENTITY_INCOMPLETE, "no response to continue");
            }
            None => self.site.handle(req).await,
        };
        self.cut(response, block2, peer, echo_block1, key)
    }

    /// `response` to a request without Block options: as it is if it fits the peer, else its
    /// first Block2 piece (the whole kept under `key` for the later ones).
    fn fit(&self, response: Message, peer: PeerLimits, key: UploadKey) -> Message {
        // 8 token bytes, and 2 more for the UDP header being longer than TCP's for small bodies.
        let fits = tcp::encoded_len(&response).is_ok_and(|n| n + 10 <= peer.max_message_size);
        if fits {
            return response;
        }
        self.cut(response, None, peer, None, key)
    }

    /// Cuts `response` into the Block2 piece asked for (or the first, if it does not fit the
    /// peer), keeping the whole for the later pieces under `key`.
    fn cut(
        &self,
        response: Message,
        block2: Option<BlockValue>,
        peer: PeerLimits,
        echo_block1: Option<BlockValue>,
        key: UploadKey,
    ) -> Message {
        let mut response = response;
        // A handler that cut its response itself (reading a file piecewise) is taken at its word.
        if response.options.contains(OptionNumber::BLOCK2) {
            let mut m = response;
            if let Some(b) = echo_block1 {
                m.options.set(OptionNumber::BLOCK1, b.encode());
            }
            return m;
        }
        let room = peer.payload_room(&response);
        match slice_block2(response.clone(), block2, room, peer.bert) {
            Ok(mut m) => {
                if m.options.contains(OptionNumber::BLOCK2)
                    && !response.options.contains(OptionNumber::ETAG)
                {
                    let etag = representation_etag(&response);
                    m.options.set(OptionNumber::ETAG, etag.clone());
                    response.options.set(OptionNumber::ETAG, etag);
                }
                let more = m.options.block2().is_some_and(|b| b.more);
                if more && m.options.block2().is_some_and(|b| b.num == 0) {
                    crate::metrics::get().block_transfer("download");
                }
                self.remember(key, more.then_some(response));
                if let Some(b) = echo_block1 {
                    m.options.set(OptionNumber::BLOCK1, b.encode());
                }
                m
            }
            Err(BlockError::OutOfRange { .. }) => text(Code::BAD_OPTION, "Block2 past the end"),
            Err(e) => text(Code::INTERNAL_SERVER_ERROR, &e.to_string()),
        }
    }
}

/// Fired once a registration's response is handed to the transport.
type Started = tokio::sync::oneshot::Sender<()>;

impl Dispatch for SiteDispatch {
    fn dispatch(self: Arc<Self>, request: IncomingRequest) -> BoxFuture<Answer> {
        let o = &request.message.options;
        let observe =
            matches!(request.message.code, Code::GET | Code::FETCH) && o.observe().is_some();
        if !observe && o.block1().is_none() && o.block2().is_none() {
            // The common case, no block-wise or observe state: the site routes it at once
            // and only the handler's future is waited for (the whole path's future is
            // kilobytes to move for every request).
            let bits = o.no_response();
            let peer = request.peer_limits;
            let key = UploadKey::of(&request, false);
            let finish = move |this: &SiteDispatch, response: Message| {
                Answer::of(this.fit(response, peer, key), bits, None)
            };
            return match self.site.route(request) {
                Route::Answer(m) => Box::pin(std::future::ready(finish(&self, m))),
                route => Box::pin(async move {
                    let response = route.await_answer().await;
                    finish(&self, response)
                }),
            };
        }
        Box::pin(async move {
            let bits = request.message.options.no_response();
            let (response, started) = self.answer(request).await;
            Answer::of(response, bits, started)
        })
    }
    fn observer_gone(&self, link: (u64, Option<SocketAddr>), token: &Token) {
        if self.observers.remove(link, token, None) {
            debug!(%token, "observer gone (Reset or unacknowledged notification)");
        }
    }
    fn observers_on(&self, link: (u64, Option<SocketAddr>)) -> usize {
        self.observers.on_link(link)
    }
}

impl Render for SiteDispatch {
    fn render(self: Arc<Self>, request: IncomingRequest) -> BoxFuture<Message> {
        Box::pin(async move { self.handle(request).await })
    }
}
