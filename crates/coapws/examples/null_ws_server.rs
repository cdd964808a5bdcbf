//! The do-nothing CoAP-over-WebSocket server: the limit `coapws serve` is measured against
//! (`bench/compare`, issue "Performance"). Plain tokio-tungstenite, the WebSocket crate and
//! version coapws itself uses (an example of this workspace shares its Cargo.lock, so the
//! versions cannot drift apart), and no coapws code on the request path: it accepts
//! `/.well-known/coap` with subprotocol `coap`, sends an empty CSM, and answers every request
//! with 2.05 Content, the request's token and the payload of coapws's demo `/hello` (text/plain,
//! 28 bytes), whatever the method or path. Pings get Pongs; Release and Abort end the
//! connection; everything else is ignored. One write and flush per response, as a plain
//! server does.
//!
//! Usage: `cargo run --release -p coapws --example null_ws_server [ADDR]` (127.0.0.1:8683);
//! prints `listening on coap+ws://ADDR` when ready.

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// What coapws's demo answers on `/hello`.
const PAYLOAD: &[u8] = b"Hello, CoAP over WebSockets!";

/// RFC 8323 §5.3 signaling codes (class 7), and 2.05.
const CSM: u8 = 0xE1;
const PING: u8 = 0xE2;
const PONG: u8 = 0xE3;
const RELEASE: u8 = 0xE4;
const ABORT: u8 = 0xE5;
const CONTENT: u8 = 0x45;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8683".into());
    let listener = TcpListener::bind(&addr).await?;
    println!("listening on coap+ws://{}", listener.local_addr()?);
    loop {
        let (tcp, _) = listener.accept().await?;
        tokio::spawn(serve(tcp));
    }
}

/// The handshake's check: the CoAP path and subprotocol (RFC 8323 §4.1), else 404 or 400.
// The signature is tungstenite's `Callback`: its error type is an HTTP response.
#[allow(clippy::result_large_err)]
fn check(request: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    let refuse = |status: StatusCode| {
        let mut r = ErrorResponse::new(None);
        *r.status_mut() = status;
        r
    };
    if request.uri().path() != "/.well-known/coap" {
        return Err(refuse(StatusCode::NOT_FOUND));
    }
    let offers_coap = request
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|p| p.trim() == "coap"));
    if !offers_coap {
        return Err(refuse(StatusCode::BAD_REQUEST));
    }
    response
        .headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static("coap"));
    Ok(response)
}

/// One connection: CSM first, then an answer per request until it ends.
async fn serve(tcp: TcpStream) {
    let _ = tcp.set_nodelay(true);
    // As coapws: a 4 KiB read buffer (the default 128 KiB is zero-filled before each read).
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let Ok(mut ws) =
        tokio_tungstenite::accept_hdr_async_with_config(tcp, check, Some(config)).await
    else {
        return;
    };
    // An empty CSM: default Max-Message-Size (1152), no block-wise.
    if ws.send(Message::binary(vec![0x00, CSM])).await.is_err() {
        return;
    }
    while let Some(Ok(m)) = ws.next().await {
        let Message::Binary(frame) = m else {
            continue;
        };
        // RFC 8323 §4: Len (must be 0 over WebSocket) and TKL, then the code and the token.
        let Some((&first, rest)) = frame.split_first() else {
            continue;
        };
        let tkl = usize::from(first & 0x0f);
        if first >> 4 != 0 || tkl > 8 || rest.len() < 1 + tkl {
            break;
        }
        let (code, token) = (rest[0], &rest[1..=tkl]);
        let answer = match code {
            // Requests: 0.01 to 0.31.
            0x01..=0x1f => {
                let mut out = Vec::with_capacity(4 + tkl + PAYLOAD.len());
                out.push(tkl as u8);
                out.push(CONTENT);
                out.extend_from_slice(token);
                // Content-Format (12) text/plain (0): delta 12, length 0.
                out.push(0xC0);
                out.push(0xFF);
                out.extend_from_slice(PAYLOAD);
                out
            }
            PING => {
                let mut out = vec![tkl as u8, PONG];
                out.extend_from_slice(token);
                out
            }
            RELEASE | ABORT => break,
            _ => continue,
        };
        if ws.send(Message::binary(answer)).await.is_err() {
            break;
        }
    }
    let _ = ws.close(None).await;
}
