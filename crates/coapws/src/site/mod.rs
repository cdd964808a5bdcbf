//! The server side of an endpoint: a [`Site`] maps paths to [`Resource`]s whose async handlers
//! answer requests, and generates `/.well-known/core` from what it holds.
//!
//! The site answers what no handler should have to: 4.02 Bad Option (with a diagnostic) for an
//! unknown or malformed critical option, 5.05 for proxy requests when it has no forward proxy,
//! 4.05 for methods a resource does not have or that do not exist, 4.04 for paths it does not
//! hold. Routing goes forward proxy (Proxy-Uri, Proxy-Scheme) → host routes (by Uri-Host) →
//! exact paths → subtrees, longest prefix first.

pub mod demo;
pub mod files;

use crate::observe::observable::{Observable, Watch};
use crate::remote::Remote;
use coapws_proto::blockwise::{Block2Window, BlockError, block_room, block2_window};
use coapws_proto::code::Code;
use coapws_proto::content_format::ContentFormat;
use coapws_proto::link_format::{self, Link};
use coapws_proto::message::Message;
use coapws_proto::option::{BlockValue, OptionNumber};
use coapws_proto::uri::{Uri, UriError};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

/// A request as a handler sees it.
#[derive(Clone, Debug)]
pub struct IncomingRequest {
    /// The request message (its token is handled by the endpoint). Block-wise transfers are
    /// already reassembled: handlers see whole bodies and no Block1/Block2 options.
    pub message: Message,
    /// Who sent it, and the connection to reach them on.
    pub remote: Remote,
    /// What the sender can take back, as its transport says.
    pub peer_limits: PeerLimits,
    /// Set when the request registers an observation: where a handler says what to observe.
    pub(crate) observe: Option<ObserveSlot>,
    /// The Block2 option the request carried (taken off the message by the dispatcher).
    pub(crate) block2: Option<BlockValue>,
    /// Set when the handler renders a notification of an observation already registered
    /// (not a request that came from the network).
    pub(crate) rendering: bool,
}

/// Where the handler of an observation registration leaves the [`Observable`] its response
/// follows, with a [`Watch`] on it taken then, before the response is rendered.
#[derive(Clone, Debug, Default)]
pub(crate) struct ObserveSlot(Arc<Mutex<Option<(Observable, Watch)>>>);

impl ObserveSlot {
    fn set(&self, o: &Observable) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((o.clone(), o.watch()));
    }
    pub(crate) fn take(&self) -> Option<(Observable, Watch)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// What the sender of a request can receive (from its CSM over reliable transports; the
/// RFC 7252 default over UDP). Responses larger than this are sent block-wise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerLimits {
    /// Largest message the peer accepts.
    pub max_message_size: usize,
    /// The peer accepts BERT (RFC 8323 §6).
    pub bert: bool,
}

/// Room that options added to a block after it is cut take: an ETag (option header and 8
/// bytes) and an Observe value (up to 4).
const ADDED_ROOM: usize = 14;

impl PeerLimits {
    /// Payload bytes a response with the options of `head` can carry in one message to this
    /// peer, leaving room for the block-wise options, an ETag and an Observe value.
    pub fn payload_room(&self, head: &Message) -> usize {
        block_room(head, self.max_message_size)
            .saturating_sub(ADDED_ROOM)
            .max(16)
    }
}

impl IncomingRequest {
    /// A request as it came from the network, before the dispatcher looked at it.
    pub(crate) fn new(message: Message, remote: Remote, peer_limits: PeerLimits) -> Self {
        IncomingRequest {
            message,
            remote,
            peer_limits,
            observe: None,
            block2: None,
            rendering: false,
        }
    }
    /// The method.
    pub fn method(&self) -> Code {
        self.message.code
    }
    /// Uri-Path segments.
    pub fn path(&self) -> Vec<String> {
        self.message.options.uri_path()
    }
    /// Uri-Query items.
    pub fn query(&self) -> Vec<String> {
        self.message.options.uri_query()
    }
    /// For handlers that produce large bodies piece by piece (a file server reading from
    /// disk): which piece of a `total`-byte representation to answer with, given the Block2
    /// option the request carried and what the peer can receive; `head` is the response
    /// without its payload. `None`: answer with the whole body (it fits, and no block was
    /// asked for). A response that carries a Block2 option is sent as it is; add Size2 on the
    /// first block and an ETag that changes with the representation (RFC 7959 §2.4).
    pub fn block2_window(
        &self,
        total: usize,
        head: &Message,
    ) -> Result<Option<Block2Window>, BlockError> {
        let room = self.peer_limits.payload_room(head);
        block2_window(total, self.block2, room, self.peer_limits.bert)
    }
    /// True when the request asks to observe (GET or FETCH with Observe 0).
    pub fn is_observe_registration(&self) -> bool {
        self.observe.is_some()
    }
    /// True when the handler is asked for a notification of an observation registered
    /// earlier (after an [`Observable::notify`]), not for a request off the network.
    pub fn is_notification(&self) -> bool {
        self.rendering
    }
    /// The host the request is for: its Uri-Host, or else the name the client addressed us
    /// by (the WebSocket Host header; our address over UDP and TCP), lowercased.
    pub fn target_host(&self) -> String {
        match self.message.options.uri_host() {
            Some(h) => h.to_ascii_lowercase(),
            None => self.remote.host.option_value().to_ascii_lowercase(),
        }
    }
    /// The URI the request is for, rebuilt from its options and what the transport implies
    /// (RFC 7252 §6.5, RFC 8323 §8): scheme of the connection, Uri-Host or the host we were
    /// addressed by, Uri-Port or our port, Uri-Path, Uri-Query. Proxy-Uri is not looked at.
    pub fn target_uri(&self) -> Result<Uri, UriError> {
        Uri::from_options(
            self.remote.scheme,
            &self.remote.host,
            self.remote.port,
            &self.message.options,
        )
    }
    /// Makes the response to this request an observation of `observable` (if the request
    /// asks to observe and the response is 2.xx): every [`Observable::notify`] renders a
    /// fresh response for it with the same handler. Resources built with
    /// [`Resource::observable`] need not call this; handlers of subtrees (file servers,
    /// proxies) can.
    pub fn observe_with(&self, observable: &Observable) {
        if let Some(slot) = &self.observe {
            slot.set(observable);
        }
    }
}

/// A boxed future, as handlers return them.
pub type BoxFuture<T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Something that answers requests. Implemented for every `Fn(IncomingRequest) -> Future`.
pub trait Handler: Send + Sync + 'static {
    /// Produces the response (code, options, payload; the token is filled in by the endpoint).
    fn call(&self, request: IncomingRequest) -> BoxFuture<Message>;
}

impl<F, Fut> Handler for F
where
    F: Fn(IncomingRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Message> + Send + 'static,
{
    fn call(&self, request: IncomingRequest) -> BoxFuture<Message> {
        Box::pin(self(request))
    }
}

/// A resource: a handler per method, and link attributes for `/.well-known/core`.
#[derive(Clone, Default)]
pub struct Resource {
    methods: Vec<(Code, Arc<dyn Handler>)>,
    attrs: Vec<(String, Option<String>)>,
    hidden: bool,
    observable: Option<Observable>,
}

impl Resource {
    /// A resource with no methods yet.
    pub fn new() -> Resource {
        Resource::default()
    }
    /// Answers `method` with `handler`.
    pub fn method(mut self, method: Code, handler: impl Handler) -> Resource {
        self.methods.retain(|(m, _)| *m != method);
        self.methods.push((method, Arc::new(handler)));
        self
    }
    /// Answers GET.
    pub fn get(self, handler: impl Handler) -> Resource {
        self.method(Code::GET, handler)
    }
    /// Answers POST.
    pub fn post(self, handler: impl Handler) -> Resource {
        self.method(Code::POST, handler)
    }
    /// Answers PUT.
    pub fn put(self, handler: impl Handler) -> Resource {
        self.method(Code::PUT, handler)
    }
    /// Answers DELETE.
    pub fn delete(self, handler: impl Handler) -> Resource {
        self.method(Code::DELETE, handler)
    }
    /// Adds a link attribute shown in `/.well-known/core` (e.g. `rt`, `ct`, `title`).
    pub fn attr(mut self, name: &str, value: impl Into<String>) -> Resource {
        self.attrs.push((name.to_owned(), Some(value.into())));
        self
    }
    /// Makes GET (and FETCH) of the resource observable (RFC 7641): observers get a
    /// notification, rendered by the same handler for their own request, on every
    /// [`Observable::notify`]. Shown as `obs` in `/.well-known/core`.
    pub fn observable(mut self, observable: &Observable) -> Resource {
        self.observable = Some(observable.clone());
        if !self.attrs.iter().any(|(k, _)| k == "obs") {
            self.attrs.push(("obs".to_owned(), None));
        }
        self
    }
    /// Leaves the resource out of `/.well-known/core`.
    pub fn hidden(mut self) -> Resource {
        self.hidden = true;
        self
    }
}

/// A path prefix handed to one handler, with the links it shows in `/.well-known/core`.
#[derive(Clone)]
struct Subtree {
    prefix: Vec<String>,
    handler: Arc<dyn Handler>,
    links: Vec<Link>,
    /// The handler takes Block1 uploads piece by piece itself.
    takes_blocks: bool,
}

/// Which requests a host route takes, by their target host ([`IncomingRequest::target_host`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostMatch {
    /// Exactly this name (compared without case).
    Exact(String),
    /// Every name ending in this suffix (e.g. `.devices.example`), not the suffix itself.
    Suffix(String),
}

impl HostMatch {
    fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(n) => host.eq_ignore_ascii_case(n),
            HostMatch::Suffix(s) => {
                host.len() > s.len()
                    && host
                        .get(host.len() - s.len()..)
                        .is_some_and(|tail| tail.eq_ignore_ascii_case(s))
            }
        }
    }
}

/// Paths to resources, plus subtrees handled by one handler (a file server, a reverse proxy),
/// hosts handled by one handler (virtual hosts, devices reached through us), and the forward
/// proxy.
#[derive(Clone, Default)]
pub struct Site {
    exact: HashMap<Vec<String>, Resource>,
    subtrees: Vec<Subtree>,
    hosts: Vec<(HostMatch, Arc<dyn Handler>)>,
    forward: Option<Arc<dyn Handler>>,
}

fn split_path(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn diagnostic(code: Code, text: impl Into<String>) -> Message {
    let text = text.into();
    Message::response(code, text).with_content_format(ContentFormat::TEXT_PLAIN.0)
}

impl Site {
    /// An empty site (it still answers `/.well-known/core`).
    pub fn new() -> Site {
        Site::default()
    }
    /// Serves `resource` at `path` (e.g. `/sensors/temp`).
    pub fn resource(mut self, path: &str, resource: Resource) -> Site {
        self.exact.insert(split_path(path), resource);
        self
    }
    /// Hands every request at or below `prefix` to `handler`; `links` are the links it
    /// contributes to `/.well-known/core`.
    pub fn subtree(self, prefix: &str, handler: impl Handler, links: Vec<Link>) -> Site {
        self.add_subtree(prefix, Arc::new(handler), links, false)
    }
    /// Like [`Site::subtree`], but Block1 uploads reach `handler` piece by piece, with their
    /// Block1 and Size1 options, instead of reassembled: the handler answers each (2.31 to go
    /// on), e.g. writing straight to disk ([`files::FileServer`] does).
    pub fn subtree_taking_blocks(
        self,
        prefix: &str,
        handler: impl Handler,
        links: Vec<Link>,
    ) -> Site {
        self.add_subtree(prefix, Arc::new(handler), links, true)
    }
    /// Serves `files` at and below `prefix`: GET straight from disk, block by block when
    /// large, and (when writable) block-wise PUTs written to disk piece by piece (see
    /// [`Site::subtree_taking_blocks`]). `links` go into `/.well-known/core`.
    pub fn files(self, prefix: &str, files: files::FileServer, links: Vec<Link>) -> Site {
        self.subtree_taking_blocks(
            prefix,
            move |req: IncomingRequest| {
                let files = files.clone();
                async move { files.handle(req).await }
            },
            links,
        )
    }
    fn add_subtree(
        mut self,
        prefix: &str,
        handler: Arc<dyn Handler>,
        links: Vec<Link>,
        takes_blocks: bool,
    ) -> Site {
        self.subtrees.push(Subtree {
            prefix: split_path(prefix),
            handler,
            links,
            takes_blocks,
        });
        // Longest prefix first.
        self.subtrees
            .sort_by_key(|s| std::cmp::Reverse(s.prefix.len()));
        self
    }

    /// Hands every request whose target host matches `host` to `handler`, whatever its path
    /// (a reverse proxy by name, or devices reached through this server). Routes are tried in
    /// the order they were added, before paths.
    pub fn host(mut self, host: HostMatch, handler: impl Handler) -> Site {
        self.hosts.push((host, Arc::new(handler)));
        self
    }
    /// Hands every forward-proxy request (one carrying Proxy-Uri or Proxy-Scheme, RFC 7252
    /// §5.7.2) to `handler`; without one they get 5.05 Proxying Not Supported. The handler
    /// sees the request before any option check: it decides on unknown options itself
    /// (RFC 7252 §5.7.1).
    pub fn forward_proxy(mut self, handler: impl Handler) -> Site {
        self.forward = Some(Arc::new(handler));
        self
    }

    /// True when `req` goes to a handler that takes Block1 uploads piece by piece (never a
    /// proxy's: it forwards whole bodies).
    pub(crate) fn takes_blocks(&self, req: &IncomingRequest) -> bool {
        let o = &req.message.options;
        if o.contains(OptionNumber::PROXY_URI) || o.contains(OptionNumber::PROXY_SCHEME) {
            return false;
        }
        if !self.hosts.is_empty() {
            let host = req.target_host();
            if self.hosts.iter().any(|(m, _)| m.matches(&host)) {
                return false;
            }
        }
        let path = &req.path()[..];
        if self.exact.contains_key(path) {
            return false;
        }
        self.subtrees
            .iter()
            .find(|s| path.starts_with(&s.prefix))
            .is_some_and(|s| s.takes_blocks)
    }
    /// The links of `/.well-known/core`.
    pub fn links(&self) -> Vec<Link> {
        let mut links: Vec<Link> = self
            .exact
            .iter()
            .filter(|(_, r)| !r.hidden)
            .map(|(p, r)| {
                let mut l = Link::new(format!("/{}", p.join("/")));
                for (k, v) in &r.attrs {
                    l.params.push((k.clone(), v.clone()));
                }
                l
            })
            .collect();
        for s in &self.subtrees {
            links.extend(s.links.iter().cloned());
        }
        links.sort_by(|a, b| a.target.cmp(&b.target));
        links
    }

    /// Answers one request: a forward-proxy request goes to the forward proxy (or gets 5.05),
    /// a request for a routed host to that host's handler, the rest by path.
    pub async fn handle(&self, request: IncomingRequest) -> Message {
        self.route(request).await_answer().await
    }

    /// Where one request goes ([`Site::handle`] without waiting): the answer, when the site
    /// gives it itself, or the handler's future. Nothing of the request is held besides.
    pub(crate) fn route(&self, request: IncomingRequest) -> Route {
        let m = &request.message;
        if m.options.contains(OptionNumber::PROXY_URI)
            || m.options.contains(OptionNumber::PROXY_SCHEME)
        {
            return match &self.forward {
                Some(f) => Route::Delegated(f.call(request)),
                None => Route::Answer(diagnostic(
                    Code::PROXYING_NOT_SUPPORTED,
                    "this endpoint is not a proxy",
                )),
            };
        }
        if !self.hosts.is_empty() {
            let host = request.target_host();
            if let Some((_, h)) = self.hosts.iter().find(|(m, _)| m.matches(&host)) {
                return Route::Delegated(h.call(request));
            }
        }
        self.route_by_path(request)
    }

    /// [`Site::route`] for a request that is neither proxied nor for a routed host.
    fn route_by_path(&self, request: IncomingRequest) -> Route {
        let m = &request.message;
        // RFC 7252 §5.4.1: unrecognised critical options make the request a 4.02.
        if let Err(problem) = m.options.check() {
            return Route::Answer(diagnostic(Code::BAD_OPTION, problem.to_string()));
        }
        // Known to the codec, but not processed here (RFC 8613 §2: no OSCORE, no service).
        if m.options.contains(OptionNumber::OSCORE) {
            return Route::Answer(diagnostic(
                Code::BAD_OPTION,
                "OSCORE is not supported by this endpoint",
            ));
        }
        let path = request.path();
        if path == [".well-known", "core"] {
            if m.code != Code::GET {
                return Route::Answer(Message::new(Code::METHOD_NOT_ALLOWED));
            }
            let query = request.query();
            let links: Vec<Link> = self
                .links()
                .into_iter()
                .filter(|l| query.iter().all(|q| l.matches_filter(q)))
                .collect();
            return Route::Answer(
                Message::response(Code::CONTENT, link_format::serialize(&links))
                    .with_content_format(ContentFormat::LINK_FORMAT.0),
            );
        }
        let accept = m.options.accept();
        let call = if let Some(resource) = self.exact.get(&path) {
            if let Some(o) = &resource.observable {
                request.observe_with(o);
            }
            match resource.methods.iter().find(|(c, _)| *c == m.code) {
                Some((_, h)) => h.call(request),
                None => return Route::Answer(Message::new(Code::METHOD_NOT_ALLOWED)),
            }
        } else if let Some(s) = self.subtrees.iter().find(|s| path.starts_with(&s.prefix)) {
            s.handler.call(request)
        } else {
            return Route::Answer(Message::new(Code::NOT_FOUND));
        };
        Route::Handler(call, accept)
    }
}

/// Where a request goes: see [`Site::route`].
pub(crate) enum Route {
    /// The site's own answer (4.04, 4.05, discovery, …).
    Answer(Message),
    /// The response of a forward proxy or a routed host's handler, taken as it comes.
    Delegated(BoxFuture<Message>),
    /// A resource handler's response to come, checked against the request's Accept.
    Handler(BoxFuture<Message>, Option<u16>),
}

impl Route {
    /// The response, once the handler (if any) gave it.
    pub(crate) async fn await_answer(self) -> Message {
        match self {
            Route::Answer(m) => m,
            Route::Delegated(f) => f.await,
            Route::Handler(f, accept) => not_acceptable(accept, f.await),
        }
    }
}

/// RFC 7252 §5.10.4: a 2.xx representation in another Content-Format than the request's
/// Accept becomes 4.06 Not Acceptable (handlers that can offer several formats pick the one
/// asked for; the rest need not check).
fn not_acceptable(accept: Option<u16>, response: Message) -> Message {
    match (accept, response.options.content_format()) {
        (Some(want), Some(have)) if want != have && response.code.is_success() => diagnostic(
            Code::NOT_ACCEPTABLE,
            format!(
                "available as {} only, not as the Accept asked for ({})",
                ContentFormat(have),
                ContentFormat(want)
            ),
        ),
        _ => response,
    }
}
