//! Echo servers, one per candidate crate. Every server:
//! * accepts only GET /.well-known/coap (RFC 8323 §4) -> else 404
//! * requires `Sec-WebSocket-Protocol: coap` -> else 400 (where the crate lets us)
//! * answers a bad `Sec-WebSocket-Version` with 426 (where the crate lets us)
//! * reads Host and Origin
//! * echoes every complete binary message back, flushing per message
//! * closes with 1003 on a text message, 1007 on invalid UTF-8, 1009 when a
//!   message exceeds MAX_MSG (where the crate lets us pick the close code)

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming, header};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

pub const PATH: &str = "/.well-known/coap";
pub const MAX_MSG: usize = 64 * 1024;

pub const ALL: &[&str] = &["tungstenite", "tungstenite-4k", "tungstenite-hyper", "fastwebsockets", "yawc", "soketto"];

/// Bind 127.0.0.1:0 and spawn the accept loop on the current runtime.
pub async fn start(kind: &str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().unwrap();
    let kind = kind.to_string();
    let h = tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else { continue };
            let _ = sock.set_nodelay(true);
            match kind.as_str() {
                "tungstenite" => {
                    tokio::spawn(tungstenite_plain::conn(sock, tungstenite_plain::config_default()));
                }
                "tungstenite-4k" => {
                    tokio::spawn(tungstenite_plain::conn(sock, tungstenite_plain::config()));
                }
                "soketto" => {
                    tokio::spawn(soketto_srv::conn(sock));
                }
                "tungstenite-hyper" | "fastwebsockets" | "yawc" => {
                    let k = kind.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            let k = k.clone();
                            async move { hyper_route(&k, req) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(sock), svc)
                            .with_upgrades()
                            .await;
                    });
                }
                other => panic!("unknown server kind {other}"),
            }
        }
    });
    (addr, h)
}

fn plain(status: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

fn has_coap_protocol(h: &http::HeaderMap) -> bool {
    h.get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == "coap")
}

/// Shared hyper front end: real HTTP routing/status codes, then hand the
/// upgraded stream to the chosen WebSocket crate.
fn hyper_route(kind: &str, mut req: Request<Incoming>) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    if req.uri().path() != PATH {
        return Ok(plain(StatusCode::NOT_FOUND));
    }
    let h = req.headers();
    let _host = h.get(header::HOST).cloned();
    let _origin = h.get(header::ORIGIN).cloned();
    let is_upgrade = h
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !is_upgrade {
        return Ok(plain(StatusCode::UPGRADE_REQUIRED));
    }
    if h.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        let mut r = plain(StatusCode::UPGRADE_REQUIRED);
        r.headers_mut().insert(header::SEC_WEBSOCKET_VERSION, "13".parse().unwrap());
        return Ok(r);
    }
    if !has_coap_protocol(h) {
        return Ok(plain(StatusCode::BAD_REQUEST));
    }
    let proto = |r: &mut http::HeaderMap| {
        r.insert(header::SEC_WEBSOCKET_PROTOCOL, "coap".parse().unwrap());
    };
    match kind {
        "tungstenite-hyper" => {
            let Some(key) = h.get(header::SEC_WEBSOCKET_KEY) else {
                return Ok(plain(StatusCode::BAD_REQUEST));
            };
            let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = on_upgrade.await {
                    let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                        TokioIo::new(up),
                        tokio_tungstenite::tungstenite::protocol::Role::Server,
                        Some(tungstenite_plain::config()),
                    )
                    .await;
                    tungstenite_plain::echo(ws).await;
                }
            });
            let mut r = plain(StatusCode::SWITCHING_PROTOCOLS);
            let hm = r.headers_mut();
            hm.insert(header::CONNECTION, "Upgrade".parse().unwrap());
            hm.insert(header::UPGRADE, "websocket".parse().unwrap());
            hm.insert(header::SEC_WEBSOCKET_ACCEPT, accept.parse().unwrap());
            proto(hm);
            Ok(r)
        }
        "fastwebsockets" => match fastwebsockets::upgrade::upgrade(&mut req) {
            Err(_) => Ok(plain(StatusCode::BAD_REQUEST)),
            Ok((resp, fut)) => {
                tokio::spawn(async move {
                    if let Ok(ws) = fut.await {
                        fastws::echo(ws).await;
                    }
                });
                let (mut parts, _) = resp.into_parts();
                proto(&mut parts.headers);
                Ok(Response::from_parts(parts, Full::new(Bytes::new())))
            }
        },
        "yawc" => {
            let opts = yawc::Options::default()
                .with_utf8()
                .with_max_payload_read(MAX_MSG)
                .with_max_read_buffer(MAX_MSG);
            match yawc::WebSocket::upgrade_with_options(&mut req, opts) {
                Err(_) => Ok(plain(StatusCode::BAD_REQUEST)),
                Ok((resp, fut)) => {
                    tokio::spawn(async move {
                        if let Ok(ws) = fut.await {
                            yawc_srv::echo(ws).await;
                        }
                    });
                    let (mut parts, _) = resp.into_parts();
                    proto(&mut parts.headers);
                    Ok(Response::from_parts(parts, Full::new(Bytes::new())))
                }
            }
        }
        _ => unreachable!(),
    }
}

pub mod tungstenite_plain {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncRead, AsyncWrite};
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::{
        Error, Message,
        handshake::server::{ErrorResponse, Request as TReq, Response as TResp},
        protocol::{CloseFrame, WebSocketConfig, frame::coding::CloseCode},
    };

    /// Library defaults (128 KiB read buffer, zero-filled on every read) + our size limits.
    pub fn config_default() -> WebSocketConfig {
        WebSocketConfig::default()
            .max_message_size(Some(MAX_MSG))
            .max_frame_size(Some(MAX_MSG))
    }

    /// Tuned for CoAP-sized messages: 4 KiB read buffer.
    pub fn config() -> WebSocketConfig {
        config_default().read_buffer_size(4096)
    }

    fn reject(code: StatusCode) -> ErrorResponse {
        let mut r = ErrorResponse::new(None);
        *r.status_mut() = code;
        r
    }

    /// tokio-tungstenite doing the HTTP part itself (accept_hdr_async).
    pub async fn conn(sock: TcpStream, conf: WebSocketConfig) {
        let cb = |req: &TReq, mut resp: TResp| -> Result<TResp, ErrorResponse> {
            if req.uri().path() != PATH {
                return Err(reject(StatusCode::NOT_FOUND));
            }
            let _host = req.headers().get(header::HOST);
            let _origin = req.headers().get(header::ORIGIN);
            if !has_coap_protocol(req.headers()) {
                return Err(reject(StatusCode::BAD_REQUEST));
            }
            resp.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, "coap".parse().unwrap());
            Ok(resp)
        };
        if let Ok(ws) = tokio_tungstenite::accept_hdr_async_with_config(sock, cb, Some(conf)).await {
            echo(ws).await;
        }
    }

    pub async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocketStream<S>) {
        while let Some(msg) = ws.next().await {
            let close = |code: CloseCode| Some(CloseFrame { code, reason: "".into() });
            match msg {
                Ok(Message::Binary(b)) => {
                    // send() = feed + flush
                    if ws.send(Message::Binary(b)).await.is_err() {
                        return;
                    }
                }
                Ok(Message::Text(_)) => {
                    let _ = ws.close(close(CloseCode::Unsupported)).await;
                }
                Ok(Message::Close(_)) => {}
                Ok(_) => {}
                Err(Error::Utf8(_)) => {
                    let _ = ws.close(close(CloseCode::Invalid)).await;
                    return;
                }
                Err(Error::Capacity(_)) => {
                    let _ = ws.close(close(CloseCode::Size)).await;
                    return;
                }
                Err(_) => return,
            }
        }
    }
}

pub mod fastws {
    use fastwebsockets::{FragmentCollector, Frame, OpCode, WebSocket, WebSocketError};
    use hyper::upgrade::Upgraded;

    use super::*;

    pub async fn echo(ws: WebSocket<TokioIo<Upgraded>>) {
        let mut ws = ws;
        ws.set_max_message_size(MAX_MSG);
        ws.set_auto_close(true);
        ws.set_auto_pong(true);
        let mut ws = FragmentCollector::new(ws);
        loop {
            let frame = match ws.read_frame().await {
                Ok(f) => f,
                Err(e) => {
                    let code = match e {
                        WebSocketError::InvalidUTF8 => 1007,
                        WebSocketError::FrameTooLarge => 1009,
                        _ => return,
                    };
                    let _ = ws.write_frame(Frame::close(code, b"")).await;
                    return;
                }
            };
            match frame.opcode {
                OpCode::Binary => {
                    if ws.write_frame(Frame::binary(frame.payload)).await.is_err() {
                        return;
                    }
                    // FragmentCollector has no flush(); WebSocket::flush would be
                    // the same no-op AsyncWrite::flush on TokioIo<Upgraded>.
                }
                OpCode::Text => {
                    let _ = ws.write_frame(Frame::close(1003, b"")).await;
                }
                OpCode::Close => return,
                _ => {}
            }
        }
    }
}

pub mod yawc_srv {
    use futures_util::SinkExt;
    use yawc::{
        WebSocketError,
        close::CloseCode,
        frame::{Frame, OpCode},
    };

    pub async fn echo(mut ws: yawc::HttpWebSocket) {
        loop {
            let frame = match ws.next_frame().await {
                Ok(f) => f,
                Err(e) => {
                    let code = match e {
                        WebSocketError::InvalidUTF8 => CloseCode::Invalid,
                        WebSocketError::FrameTooLarge => CloseCode::Size,
                        _ => return,
                    };
                    let _ = ws.send(Frame::close(code, b"")).await;
                    return;
                }
            };
            match frame.opcode() {
                OpCode::Binary => {
                    // SinkExt::send = start_send + flush
                    if ws.send(Frame::binary(frame.into_payload())).await.is_err() {
                        return;
                    }
                }
                OpCode::Text => {
                    let _ = ws.send(Frame::close(CloseCode::Unsupported, b"")).await;
                }
                OpCode::Close => return,
                _ => {}
            }
        }
    }
}

pub mod soketto_srv {
    use super::*;
    use soketto::handshake::{Server, server::Response as SResp};
    use tokio_util::compat::TokioAsyncReadCompatExt;

    pub async fn conn(sock: TcpStream) {
        let mut server = Server::new(sock.compat());
        server.add_protocol("coap");
        let (key, status) = {
            let Ok(req) = server.receive_request().await else { return };
            let _host = req.headers().host;
            let _origin = req.headers().origin;
            let status = if req.path() != PATH {
                404
            } else if !req.protocols().any(|p| p == "coap") {
                400
            } else {
                101
            };
            (req.key(), status)
        };
        if status != 101 {
            let _ = server.send_response(&SResp::Reject { status_code: status }).await;
            return;
        }
        if server.send_response(&SResp::Accept { key, protocol: Some("coap") }).await.is_err() {
            return;
        }
        let mut b = server.into_builder();
        b.set_max_message_size(MAX_MSG);
        b.set_max_frame_size(MAX_MSG);
        let (mut tx, mut rx) = b.finish();
        let mut buf = Vec::with_capacity(2048);
        loop {
            buf.clear();
            match rx.receive_data(&mut buf).await {
                Ok(soketto::Data::Binary(_)) => {
                    if tx.send_binary_mut(&mut buf).await.is_err() || tx.flush().await.is_err() {
                        return;
                    }
                }
                // soketto's Sender::close() always sends 1000; no way to pick 1003/1007/1009.
                Ok(soketto::Data::Text(_)) => {
                    let _ = tx.close().await;
                    return;
                }
                Err(_) => {
                    let _ = tx.close().await;
                    return;
                }
            }
        }
    }
}
