//! The client side of a whole transfer: [`Endpoint::send`] sends a request and, where a body
//! does not fit one message, goes block-wise (RFC 7959; BERT over RFC 8323 transports when the
//! peer allows it, RFC 8323 §6): uploads in Block1 pieces, each upload under a Request-Tag of
//! its own (RFC 9175), from memory or straight from a file; downloads collected from Block2
//! pieces with their ETag checked. One timeout bounds the whole transfer; [`Progress`] is told
//! how it advances.

use crate::endpoint::{Endpoint, Request, Response};
use crate::error::Error;
use crate::remote::Remote;
use bytes::Bytes;
use coapws_proto::blockwise::{Block2Collector, Collected, block_room, fitting_szx};
use coapws_proto::code::Code;
use coapws_proto::connection::SendError;
use coapws_proto::message::{Message, Token};
use coapws_proto::option::{BlockValue, OptionNumber};
use coapws_proto::signaling::BASE_MAX_MESSAGE_SIZE;
use coapws_proto::udp::UdpSendError;
use coapws_proto::uri::Scheme;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::endpoint::Progress;

/// How long each request of a transfer may wait for its answer: its own timeout (the
/// endpoint's request timeout when `None`), never past the whole transfer's deadline. One
/// timer per request then bounds both.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Wait {
    /// The request's own timeout.
    pub(crate) per_request: Option<Duration>,
    /// When the whole transfer must be over.
    pub(crate) deadline: Option<Instant>,
}

/// Given the first response to `next` (a request without Block1 options), asks for the later
/// Block2 pieces, if any, with `ask`, and returns the whole representation (RFC 7959 §2.4: in
/// order, its ETag unchanged, at most `max` bytes). A response that is not 2.xx ends it as it is.
pub(crate) async fn collect_block2<F, Fut>(
    first: Message,
    mut next: Message,
    max: usize,
    mut ask: F,
    progress: Option<&Progress>,
) -> Result<Message, Error>
where
    F: FnMut(Message) -> Fut,
    Fut: std::future::Future<Output = Result<Message, Error>>,
{
    let mut blocks = Block2Collector::new(max);
    let total = first
        .options
        .get_uint(OptionNumber::SIZE2)
        .map(|s| s as usize);
    let mut response = first;
    loop {
        if !response.code.is_success() {
            return Ok(response);
        }
        let piece = response.options.block2().is_some();
        match blocks.feed(response)? {
            Collected::Complete(m) => {
                if let Some(p) = progress.filter(|_| piece) {
                    p.report(m.payload.len(), total);
                }
                return Ok(m);
            }
            Collected::Next(block) => {
                if let Some(p) = progress {
                    p.report(blocks.received(), total);
                }
                next.options.set(OptionNumber::BLOCK2, block.encode());
                response = ask(next.clone()).await?;
            }
        }
    }
}

/// How one transfer goes: its per-request timeout, UDP message type, body file, progress and
/// block size.
struct Params<'a> {
    wait: Wait,
    confirmable: bool,
    body_file: Option<&'a Path>,
    progress: Option<&'a Progress>,
    szx: Option<u8>,
}

/// How large an upload's blocks may be: what fits the peer's messages, and at most the size
/// the request asked for.
struct Upload {
    limit: usize,
    szx: Option<u8>,
}

/// Where an upload's body comes from.
enum Body<'a> {
    Memory(&'a Bytes),
    /// A file, read ahead in chunks of [`READ_AHEAD`] bytes (the last one kept).
    File {
        path: &'a Path,
        len: usize,
        chunk: tokio::sync::Mutex<(usize, Bytes)>,
    },
}

/// How much of a file body one read takes.
const READ_AHEAD: usize = 256 << 10;

impl Body<'_> {
    fn len(&self) -> usize {
        match self {
            Body::Memory(b) => b.len(),
            Body::File { len, .. } => *len,
        }
    }
    async fn piece(&self, offset: usize, len: usize) -> Result<Bytes, Error> {
        match self {
            Body::Memory(b) => Ok(b.slice(offset..offset + len)),
            Body::File { path, chunk, .. } => {
                let mut chunk = chunk.lock().await;
                let (at, bytes) = &*chunk;
                if offset >= *at && offset + len <= at + bytes.len() {
                    return Ok(bytes.slice(offset - at..offset - at + len));
                }
                let p = path.to_path_buf();
                let want = len.max(READ_AHEAD);
                let read = tokio::task::spawn_blocking(move || {
                    crate::site::files::read_range(&p, offset as u64, want)
                })
                .await;
                match read {
                    Ok(Ok(v)) if v.len() >= len => {
                        let v = Bytes::from(v);
                        let piece = v.slice(..len);
                        *chunk = (offset, v);
                        Ok(piece)
                    }
                    Ok(Ok(v)) => Err(body_error(
                        path,
                        std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            format!("file shrank: {} of {len} bytes at {offset}", v.len()),
                        ),
                    )),
                    Ok(Err(e)) => Err(body_error(path, e)),
                    Err(e) => Err(body_error(path, std::io::Error::other(e.to_string()))),
                }
            }
        }
    }
}

/// The message size limit of the peer when `e` says a message was too large for it.
fn too_large_limit(e: &Error) -> Option<usize> {
    match e {
        Error::Datagram(UdpSendError::TooLarge { limit, .. }) => Some(*limit),
        Error::Send(SendError::TooLarge { limit, .. }) => Some(*limit as usize),
        _ => None,
    }
}

fn body_error(path: &Path, e: std::io::Error) -> Error {
    Error::Body {
        path: path.display().to_string(),
        source: Arc::new(e),
    }
}

impl Endpoint {
    /// Sends `request` and waits for its response. Bodies too large for one message go up in
    /// Block1 pieces (BERT where the peer allows it), responses too large come down in Block2
    /// pieces; the whole transfer is bounded by
    /// [`crate::EndpointConfig::transfer_timeout`].
    pub async fn send(&self, request: Request) -> Result<Response, Error> {
        let per_request = request.timeout.unwrap_or(self.config().request_timeout);
        let limit = self.config().transfer_timeout.max(per_request);
        self.transfer(request, Instant::now() + limit).await
    }

    async fn transfer(&self, request: Request, deadline: Instant) -> Result<Response, Error> {
        let uri = &request.uri;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let own = request.timeout.unwrap_or(self.config().request_timeout);
            let connect_limit = own.min(left);
            let remote = self.remote_within(uri, Some(connect_limit)).await?;
            let params = Params {
                wait: Wait {
                    per_request: request.timeout,
                    deadline: Some(deadline),
                },
                confirmable: request.confirmable,
                body_file: request.body_file.as_deref(),
                progress: request.progress.as_ref(),
                szx: request.block_szx,
            };
            let result = self
                .transfer_on(&remote, request.to_message(), params)
                .await;
            // UDP to a name: when the address in use is unreachable, its next one (TCP tries
            // them while connecting).
            if matches!(result, Err(Error::Connect { .. }))
                && uri.scheme == Scheme::Coap
                && self
                    .inner
                    .udp_names
                    .failed(&uri.host, uri.port_or_default(), remote.peer_addr())
            {
                tracing::info!(uri = %uri, addr = %remote.peer_addr(), "unreachable: trying the name's next address");
                continue;
            }
            return result;
        }
    }

    /// Sends `message` (a request; its token is chosen per connection, any it carries
    /// replaced) to `remote` over the link the remote lives on, block-wise both ways as
    /// [`Endpoint::send`] does, within [`crate::EndpointConfig::transfer_timeout`]. This is how a server reaches a client that
    /// connected to it (a browser, a device behind NAT): use the
    /// [`crate::IncomingRequest::remote`] of one of its requests.
    pub async fn request_to(
        &self,
        remote: &Remote,
        mut message: Message,
    ) -> Result<Response, Error> {
        // The connection picks the token (a forwarded message may still carry its own).
        message.token = Token::EMPTY;
        let params = Params {
            wait: Wait {
                per_request: None,
                deadline: Some(Instant::now() + self.config().transfer_timeout),
            },
            confirmable: true,
            body_file: None,
            progress: None,
            szx: None,
        };
        self.transfer_on(remote, message, params).await
    }

    async fn transfer_on(
        &self,
        remote: &Remote,
        mut message: Message,
        params: Params<'_>,
    ) -> Result<Response, Error> {
        let (t, con) = (params.wait, params.confirmable);
        let progress = params.progress;
        let szx = params.szx.map(|s| s.min(6));
        // A size asked for: the response in Block2 pieces of at most that (RFC 7959 §2.4).
        if let Some(szx) = szx
            && matches!(message.code, Code::GET | Code::FETCH)
            && !message.options.contains(OptionNumber::BLOCK2)
        {
            let first = BlockValue {
                num: 0,
                more: false,
                szx,
            };
            message.options.set(OptionNumber::BLOCK2, first.encode());
        }
        let mut uploaded = false;
        let first = match params.body_file {
            Some(path) => {
                // The rare paths are boxed: the common one's future stays small.
                let (first, blocks) =
                    Box::pin(self.send_file(remote, &mut message, path, szx, t, con, progress))
                        .await?;
                uploaded = blocks;
                first
            }
            None => {
                // A block size asked for and a body larger than one block: in blocks at once.
                let capped = szx.filter(|s| message.payload.len() > 16usize << s);
                let mut limit = usize::MAX;
                let whole = match capped {
                    Some(_) => None,
                    None => match self.request_on(remote, message.clone(), t, con).await {
                        Ok(r) => Some(r),
                        // Too large for one message to this peer: upload in Block1 pieces
                        // (RFC 7959 §2.5).
                        Err(e) => match too_large_limit(&e) {
                            Some(l) => {
                                limit = l;
                                None
                            }
                            None => return Err(e),
                        },
                    },
                };
                match whole {
                    Some(r) => r,
                    None => {
                        uploaded = true;
                        let body = message.payload.clone();
                        let body = Body::Memory(&body);
                        let up = Upload { limit, szx: capped };
                        Box::pin(self.upload(remote, &message, body, up, t, con, progress)).await?
                    }
                }
            }
        };
        // A whole representation in one answer (the common case): done.
        if first.message.options.block2().is_none() {
            return Ok(first);
        }
        // Follow Block2 until the representation is whole (RFC 7959 §2.4). A body uploaded in
        // blocks is not sent again, nor is a POST's or PUT's; a FETCH's selects the
        // representation and goes with every block request.
        let mut next = message;
        if uploaded || next.code != Code::FETCH {
            next.payload = Bytes::new();
        }
        next.options.remove(OptionNumber::BLOCK1);
        next.options.remove(OptionNumber::SIZE1);
        Box::pin(self.collect_blocks(remote, next, first, t, con, progress)).await
    }

    /// Sends `message` with the file at `path` as its body: whole when it fits one message to
    /// the peer (read into `message`), block by block from disk otherwise. Returns the final
    /// response and whether blocks were used.
    #[allow(clippy::too_many_arguments)]
    async fn send_file(
        &self,
        remote: &Remote,
        message: &mut Message,
        path: &Path,
        szx: Option<u8>,
        t: Wait,
        con: bool,
        progress: Option<&Progress>,
    ) -> Result<(Response, bool), Error> {
        let meta = tokio::fs::metadata(path)
            .await
            .map_err(|e| body_error(path, e))?;
        let len = usize::try_from(meta.len()).unwrap_or(usize::MAX);
        let limit = match remote.connection() {
            Some(c) => {
                c.wait_peer_settings(self.config().connect_timeout)
                    .await
                    .map_or(BASE_MAX_MESSAGE_SIZE, |p| p.max_message_size) as usize
            }
            None => self.config().udp.max_message_size,
        };
        let capped = szx.filter(|s| len > 16usize << s);
        if capped.is_none() && len <= block_room(message, limit) {
            let body = tokio::fs::read(path)
                .await
                .map_err(|e| body_error(path, e))?;
            message.payload = Bytes::from(body);
            let r = self.request_on(remote, message.clone(), t, con).await?;
            return Ok((r, false));
        }
        let body = Body::File {
            path,
            len,
            chunk: tokio::sync::Mutex::new((0, Bytes::new())),
        };
        let up = Upload { limit, szx: capped };
        let r = self
            .upload(remote, message, body, up, t, con, progress)
            .await?;
        Ok((r, true))
    }

    /// Given the first response to `next` (a request without Block1 options), fetches the
    /// later Block2 pieces, if any, and returns the whole representation.
    pub(crate) async fn collect_blocks(
        &self,
        remote: &Remote,
        next: Message,
        first: Response,
        t: Wait,
        con: bool,
        progress: Option<&Progress>,
    ) -> Result<Response, Error> {
        let ask =
            |m: Message| async move { self.request_on(remote, m, t, con).await.map(|r| r.message) };
        let max = self.config().max_body_size;
        let message = collect_block2(first.message, next, max, ask, progress).await?;
        Ok(Response {
            message,
            remote: first.remote,
        })
    }

    /// Sends `body` with `message`'s options in Block1 pieces that fit `limit`-byte messages;
    /// returns the final response (or the first refusal).
    #[allow(clippy::too_many_arguments)]
    async fn upload(
        &self,
        remote: &Remote,
        message: &Message,
        body: Body<'_>,
        up: Upload,
        timeout: Wait,
        confirmable: bool,
        progress: Option<&Progress>,
    ) -> Result<Response, Error> {
        // RFC 9175 §3: a Request-Tag of its own keeps this upload apart from any other one
        // to the same resource.
        let mut message = message.clone();
        message.payload = Bytes::new();
        message
            .options
            .set(OptionNumber::REQUEST_TAG, request_tag());
        let message = &message;
        let room = block_room(message, up.limit);
        // RFC 8323 §6: BERT (SZX 7, several 1024-byte units per message) where the peer's
        // CSM allows it and a message holds more than one unit, unless a size was asked for.
        let bert = up.szx.is_none()
            && remote
                .connection()
                .and_then(|c| c.peer_settings())
                .is_some_and(|p| p.bert())
            && room >= 2048;
        let mut szx = if bert { 7 } else { fitting_szx(room) };
        if let Some(cap) = up.szx {
            szx = szx.min(cap);
        }
        let total = body.len();
        let mut offset = 0;
        loop {
            let size = if szx == 7 {
                room / 1024 * 1024
            } else {
                16usize << szx
            };
            let unit = if szx == 7 { 1024 } else { size };
            let end = (offset + size).min(total);
            let more = end < total;
            let mut piece = message.clone();
            let num = (offset / unit) as u32;
            piece
                .options
                .set(OptionNumber::BLOCK1, BlockValue { num, more, szx }.encode());
            if offset == 0 {
                piece.options.set_uint(
                    OptionNumber::SIZE1,
                    u32::try_from(total).unwrap_or(u32::MAX),
                );
            }
            piece.payload = body.piece(offset, end - offset).await?;
            let response = self.request_on(remote, piece, timeout, confirmable).await?;
            if let Some(p) = progress {
                p.report(end, Some(total));
            }
            if !more || response.code() != Code::CONTINUE {
                return Ok(response);
            }
            // The server may ask for smaller blocks (RFC 7959 §2.3).
            if let Some(b) = response.message.options.block1()
                && b.szx < szx
            {
                szx = b.szx;
            }
            offset = end;
        }
    }
}

/// The largest body [`Remote::request`] collects from Block2 pieces (as
/// [`crate::EndpointConfig::max_body_size`]'s default).
pub const DEFAULT_MAX_BODY: usize = 16 << 20;

impl Remote {
    /// Sends a request to this remote over its connection and waits up to `timeout` for the
    /// response (for each block of it, when it comes in Block2 pieces: they are collected, up
    /// to [`DEFAULT_MAX_BODY`] bytes). Inside a handler this is how a server reaches the client
    /// that sent the request (role reversal); [`crate::Endpoint::request_to`] does the same
    /// with the endpoint's timeout and limits.
    pub async fn request(&self, mut message: Message, timeout: Duration) -> Result<Message, Error> {
        // The connection picks the token, whatever the message carries.
        message.token = Token::EMPTY;
        let ask = |m: Message| async move {
            match tokio::time::timeout(timeout, self.send(m, true)).await {
                Ok(r) => r,
                Err(_) => Err(Error::Timeout),
            }
        };
        let first = ask(message.clone()).await?;
        let mut next = message;
        if next.code != coapws_proto::code::Code::FETCH {
            next.payload = bytes::Bytes::new();
        }
        collect_block2(first, next, DEFAULT_MAX_BODY, ask, None).await
    }
}

/// A Request-Tag value not used by this process before (RFC 9175 §3.4 asks for fresh ones).
fn request_tag() -> Bytes {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let start = std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), 0u8);
    let v = start.wrapping_add(n) as u32;
    Bytes::copy_from_slice(&v.to_be_bytes())
}
