//! CoAP over WebSockets (RFC 8323 §4): the client handshake to `/.well-known/coap` with
//! subprotocol `coap`, the server's HTTP/1.1 upgrade handling (a real HTTP answer for every
//! refusal: 404 wrong path, 400 missing `coap` subprotocol or key, 426 wrong version, 403
//! refused origin; other paths are the website of [`crate::web`] when there is one), and the
//! frame pump under the connection driver.
//!
//! WebSocket framing comes from `tokio-tungstenite` (chosen by a measured echo benchmark, see
//! BENCHMARKS.md): it reassembles fragmented messages, enforces the size limit, answers
//! WebSocket pings, and refuses unmasked client frames.

use crate::connection::{FrameIo, Inbound};
use crate::error::Error;
use bytes::Bytes;
use coapws_proto::connection::ConnectionError;
use coapws_proto::uri::{Host, Scheme, Uri};
use futures_util::{Sink, StreamExt};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tracing::{debug, info};

/// The path every CoAP-over-WebSockets server listens on (RFC 8323 §4.3).
pub const WELL_KNOWN_COAP: &str = "/.well-known/coap";
/// The WebSocket subprotocol of CoAP (RFC 8323 §4.3).
pub const SUBPROTOCOL: &str = "coap";

fn ws_config(max_message_size: usize) -> WebSocketConfig {
    // The default 128 KiB read buffer is zero-filled before reads: 2x slower and 130 KiB per
    // idle connection (bench/ws-echo). 2 KiB holds a 1024-byte block with its header and a
    // burst of small requests (a larger message grows it while it arrives): every idle
    // connection holds one, and 2 KiB instead of 4 changed neither the request rate nor
    // 4 MiB block-wise transfers (BENCHMARKS.md).
    WebSocketConfig::default()
        .read_buffer_size(2048)
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size))
}

/// A WebSocket carrying CoAP messages, one per binary message.
pub(crate) struct WsIo<S> {
    ws: WebSocketStream<S>,
    /// The WebSocket layer itself saw a protocol violation (close with 1002).
    protocol_error: bool,
    /// The peer sent its Close frame (and was answered): the closing handshake is done.
    peer_closed: bool,
    /// Our Close frame is queued.
    close_queued: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> WsIo<S> {
    pub(crate) fn new(ws: WebSocketStream<S>) -> WsIo<S> {
        WsIo {
            ws,
            protocol_error: false,
            peer_closed: false,
            close_queued: false,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> FrameIo for WsIo<S> {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Inbound> {
        loop {
            return Poll::Ready(match ready!(self.ws.poll_next_unpin(cx)) {
                Some(Ok(WsMessage::Binary(b))) => Inbound::Frame(b),
                Some(Ok(WsMessage::Text(_))) => Inbound::Text,
                // A text message that is not even UTF-8 is still a text message: the same
                // Abort and close 1003 (tungstenite reports it as an error, not a message).
                Some(Err(tungstenite::Error::Utf8(e))) => {
                    debug!(error = %e, "WebSocket text message that is not UTF-8");
                    Inbound::Text
                }
                Some(Ok(WsMessage::Close(frame))) => {
                    debug!(?frame, "WebSocket close received");
                    // RFC 6455 §5.5.1: tungstenite queued our Close in answer; it goes out
                    // with the last flush.
                    self.peer_closed = true;
                    Inbound::Closed(None)
                }
                // Pings are answered by tungstenite; pongs and raw frames mean nothing here.
                Some(Ok(_)) => continue,
                Some(Err(tungstenite::Error::Capacity(e))) => {
                    debug!(error = %e, "WebSocket message too large");
                    Inbound::TooLarge
                }
                Some(Err(tungstenite::Error::Protocol(e))) => {
                    self.protocol_error = true;
                    Inbound::Closed(Some(format!("WebSocket protocol error: {e}")))
                }
                Some(Err(e)) => Inbound::Closed(Some(e.to_string())),
                None => Inbound::Closed(None),
            });
        }
    }

    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        frames: &mut VecDeque<Bytes>,
    ) -> Poll<Result<(), String>> {
        let mut ws = Pin::new(&mut self.ws);
        while !frames.is_empty() {
            ready!(ws.as_mut().poll_ready(cx)).map_err(|e| e.to_string())?;
            if let Some(f) = frames.pop_front() {
                ws.as_mut()
                    .start_send(WsMessage::Binary(f))
                    .map_err(|e| e.to_string())?;
            }
        }
        ws.poll_flush(cx).map_err(|e| e.to_string())
    }

    fn poll_close(&mut self, cx: &mut Context<'_>, why: &ConnectionError) -> Poll<()> {
        let mut ws = Pin::new(&mut self.ws);
        // After the peer's Close our answering Close is queued already: let it out.
        if !self.peer_closed && !self.close_queued {
            if ready!(ws.as_mut().poll_ready(cx)).is_err() {
                return Poll::Ready(());
            }
            let code = if self.protocol_error {
                1002
            } else {
                why.websocket_close_code()
            };
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: close_reason(why).into(),
            };
            self.close_queued = true;
            if ws
                .as_mut()
                .start_send(WsMessage::Close(Some(frame)))
                .is_err()
            {
                return Poll::Ready(());
            }
        }
        ws.poll_flush(cx).map(|_| ())
    }

    fn awaits_close_reply(&self) -> bool {
        !self.peer_closed
    }
}

/// A close reason fits in 123 bytes (RFC 6455 §5.5).
fn close_reason(why: &ConnectionError) -> String {
    let mut s = why.to_string();
    if s.len() > 123 {
        let mut cut = 123;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// The client side of the WebSocket handshake over an open stream (TCP or TLS): asks for
/// `/.well-known/coap` of `uri`'s authority with subprotocol `coap`, and insists on getting it.
pub(crate) async fn client_handshake<S>(
    stream: S,
    uri: &Uri,
    max_message_size: usize,
    timeout: Duration,
) -> Result<WsIo<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if !uri.scheme.is_websocket() {
        return Err(Error::UnsupportedScheme(uri.scheme));
    }
    let authority = uri.authority();
    let url = uri.websocket_url().unwrap_or_default();
    let request = Request::builder()
        .uri(&url)
        .header(header::HOST, &authority)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_VERSION, "13")
        .header(
            header::SEC_WEBSOCKET_KEY,
            tungstenite::handshake::client::generate_key(),
        )
        .header(header::SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL)
        .body(())
        .map_err(|e| Error::Handshake {
            addr: authority.clone(),
            reason: e.to_string(),
        })?;
    let handshake = tokio_tungstenite::client_async_with_config(
        request,
        stream,
        Some(ws_config(max_message_size)),
    );
    let (ws, response) = tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| Error::Handshake {
            addr: authority.clone(),
            reason: "timed out".into(),
        })?
        .map_err(|e| Error::Handshake {
            addr: authority.clone(),
            reason: match e {
                tungstenite::Error::Http(r) => format!("HTTP {}", r.status()),
                other => other.to_string(),
            },
        })?;
    let selected = response
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok());
    if selected != Some(SUBPROTOCOL) {
        return Err(Error::Handshake {
            addr: authority,
            reason: "server did not select the coap subprotocol".into(),
        });
    }
    Ok(WsIo::new(ws))
}

/// Policy of the WebSocket server's HTTP side.
#[derive(Clone, Debug)]
pub struct WsServerPolicy {
    /// Browser origins allowed to connect; a refused one gets HTTP 403 (RFC 6455 §10.2).
    pub origins: crate::web::OriginPolicy,
    /// What other paths than `/.well-known/coap` serve; without it they get 404.
    pub web: Option<crate::web::WebContent>,
    /// Largest CoAP message accepted (also the WebSocket message limit).
    pub max_message_size: usize,
    /// Time allowed for the HTTP request head.
    pub header_timeout: Duration,
    /// Largest HTTP request head in bytes; larger gets 431.
    pub max_header_bytes: usize,
    /// Most header lines; more get 431.
    pub max_headers: usize,
}

/// What a completed server handshake yields: the WebSocket and the host info of the request.
pub(crate) type OnUpgrade<S> = Arc<dyn Fn(WsIo<S>, Host, u16) + Send + Sync>;

/// The upgraded stream type the server hands to [`OnUpgrade`].
pub(crate) type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

/// An HTTP refusal, boxed to keep `Result`s small.
type Refusal = Box<Response<Full<Bytes>>>;

fn refuse(status: StatusCode, text: &str) -> Refusal {
    let mut r = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Box::new(r)
}

fn header_has_token(req: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// RFC 6455 §4.2.1: the key is 16 bytes in base64, i.e. 22 base64 characters and `==`.
fn is_websocket_key(key: &[u8]) -> bool {
    let b64 = |c: &u8| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/';
    key.len() == 24 && key[..22].iter().all(b64) && &key[22..] == b"=="
}

/// Checks an HTTP request against RFC 6455 §4.2.1 and RFC 8323 §4.3; `Err` is the refusal.
fn check_upgrade(
    req: &Request<Incoming>,
    policy: &WsServerPolicy,
    scheme: Scheme,
) -> Result<(HeaderValue, Host, u16), Refusal> {
    if req.uri().path() != WELL_KNOWN_COAP {
        return Err(refuse(StatusCode::NOT_FOUND, "Not Found"));
    }
    if req.method() != http::Method::GET {
        let mut r = refuse(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return Err(r);
    }
    // RFC 9110 §7.8: Upgrade in an HTTP/1.0 request is ignored; RFC 6455 §4.1 needs 1.1.
    if req.version() < http::Version::HTTP_11
        || !header_has_token(req, header::UPGRADE, "websocket")
        || !header_has_token(req, header::CONNECTION, "upgrade")
    {
        let mut r = refuse(
            StatusCode::UPGRADE_REQUIRED,
            "CoAP over WebSockets: upgrade to websocket with subprotocol coap",
        );
        r.headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        return Err(r);
    }
    if req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        let mut r = refuse(
            StatusCode::UPGRADE_REQUIRED,
            "Unsupported WebSocket version",
        );
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return Err(r);
    }
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return Err(refuse(StatusCode::BAD_REQUEST, "Missing Sec-WebSocket-Key"));
    };
    if !is_websocket_key(key.as_bytes()) {
        return Err(refuse(StatusCode::BAD_REQUEST, "Bad Sec-WebSocket-Key"));
    }
    if !header_has_token(req, header::SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "The coap subprotocol is required (Sec-WebSocket-Protocol: coap)",
        ));
    }
    let origin = req.headers().get(header::ORIGIN);
    if !policy
        .origins
        .allows(origin, req.headers().get(header::HOST))
    {
        info!(origin = ?origin, "WebSocket handshake from a foreign origin refused (see --allow-origin)");
        return Err(refuse(StatusCode::FORBIDDEN, "Origin not allowed"));
    }
    let Some((host, port)) = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| Host::parse_with_port(h).ok())
    else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "Missing or invalid Host header",
        ));
    };
    let accept = HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
        .map_err(|_| refuse(StatusCode::BAD_REQUEST, "Bad Sec-WebSocket-Key"))?;
    Ok((accept, host, port.unwrap_or(scheme.default_port())))
}

/// Serves HTTP/1.1 on one accepted stream: refuses everything but a valid CoAP WebSocket
/// upgrade, and hands each upgraded WebSocket to `on_upgrade`.
pub(crate) async fn serve_http<S>(
    io: S,
    policy: Arc<WsServerPolicy>,
    scheme: Scheme,
    peer: std::net::SocketAddr,
    on_upgrade: OnUpgrade<Upgraded>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout = policy.header_timeout;
    let (max_header_bytes, max_headers) = (policy.max_header_bytes, policy.max_headers);
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let policy = policy.clone();
        let on_upgrade = on_upgrade.clone();
        async move {
            if req.uri().path() != WELL_KNOWN_COAP
                && let Some(web) = &policy.web
            {
                let r = web.serve(&req).await;
                debug!(%peer, method = %req.method(), path = %req.uri().path(), status = %r.status(), "HTTP");
                return Ok::<_, Infallible>(r);
            }
            let (accept, host, port) = match check_upgrade(&req, &policy, scheme) {
                Ok(ok) => ok,
                Err(refusal) => {
                    info!(%peer, path = %req.uri().path(), status = %refusal.status(), "HTTP request refused");
                    return Ok::<_, Infallible>(*refusal);
                }
            };
            let upgrade = hyper::upgrade::on(&mut req);
            let max = policy.max_message_size;
            tokio::spawn(async move {
                match upgrade.await {
                    Ok(up) => {
                        let ws = WebSocketStream::from_raw_socket(
                            TokioIo::new(up),
                            Role::Server,
                            Some(ws_config(max)),
                        )
                        .await;
                        on_upgrade(WsIo::new(ws), host, port);
                    }
                    Err(e) => debug!(%peer, error = %e, "upgrade failed"),
                }
            });
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let h = r.headers_mut();
            h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
            h.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(SUBPROTOCOL),
            );
            Ok(r)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_header_size(max_header_bytes)
        .max_headers(max_headers)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        debug!(%peer, error = %e, "HTTP connection ended with an error");
    }
}
