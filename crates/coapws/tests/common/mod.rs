//! Helpers shared by the integration tests: servers on loopback port 0, and a raw WebSocket
//! client that speaks bytes, to send what a well-behaved endpoint never would.
#![allow(dead_code)]

use bytes::Bytes;
use coapws::proto::codec::ws;
use coapws::proto::{Code, Message, Token};
use coapws::{Endpoint, EndpointConfig, IncomingRequest, Resource, Site};
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A bound on every wait in the tests.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn test_site() -> Site {
    coapws::site::demo::site()
        .resource(
            "/slow",
            Resource::new().get(|_r: IncomingRequest| async {
                tokio::time::sleep(Duration::from_millis(800)).await;
                Message::response(Code::CONTENT, "slow")
            }),
        )
        .resource(
            "/never",
            Resource::new().get(|_r: IncomingRequest| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Message::response(Code::CONTENT, "never")
            }),
        )
        .resource(
            "/panic",
            Resource::new().get(|_r: IncomingRequest| async {
                panic!("handler panics on purpose");
            }),
        )
        .resource(
            "/big",
            Resource::new().get(|_r: IncomingRequest| async {
                Message::response(Code::CONTENT, vec![b'x'; 100 * 1024])
            }),
        )
}

/// Adds POST `/register` to `site`: each request's remote goes to the returned receiver, so a
/// test can reach that client later (role reversal, releasing its connection).
pub fn with_register(site: Site) -> (Site, tokio::sync::mpsc::UnboundedReceiver<coapws::Remote>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let site = site.resource(
        "/register",
        Resource::new().post(move |req: IncomingRequest| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(req.remote.clone());
                Message::new(Code::CHANGED)
            }
        }),
    );
    (site, rx)
}

/// Adds GET `/gate` to `site`: each request, once its handler runs, sends the test a
/// `oneshot::Sender` and is answered 2.05 "gate" (with its Uri-Query as payload suffix) only
/// when the test fires it. The test knows the request is being handled, and decides when
/// it is answered: no timing involved.
pub fn with_gate(
    site: Site,
) -> (
    Site,
    tokio::sync::mpsc::UnboundedReceiver<tokio::sync::oneshot::Sender<()>>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let site = site.resource(
        "/gate",
        Resource::new().get(move |req: IncomingRequest| {
            let tx = tx.clone();
            async move {
                let (open, opened) = tokio::sync::oneshot::channel();
                let _ = tx.send(open);
                let _ = opened.await;
                Message::response(Code::CONTENT, format!("gate{}", req.query().join("&")))
            }
        }),
    );
    (site, rx)
}

/// The next request to enter a `/gate` handler (see [`with_gate`]), within [`WAIT`].
pub async fn entered(
    gates: &mut tokio::sync::mpsc::UnboundedReceiver<tokio::sync::oneshot::Sender<()>>,
) -> tokio::sync::oneshot::Sender<()> {
    tokio::time::timeout(WAIT, gates.recv())
        .await
        .expect("a request reached /gate in time")
        .expect("gate site alive")
}

pub async fn server_with(config: EndpointConfig, site: Option<Site>) -> (Endpoint, SocketAddr) {
    let mut b = Endpoint::builder().config(config);
    if let Some(site) = site {
        b = b.site(site);
    }
    let ep = b.build();
    let addr = ep.listen_ws("127.0.0.1:0".parse().unwrap()).await.unwrap();
    (ep, addr)
}

pub async fn server() -> (Endpoint, SocketAddr) {
    server_with(EndpointConfig::default(), Some(test_site())).await
}

pub fn uri(addr: SocketAddr, path: &str) -> String {
    format!("coap+ws://{addr}{path}")
}

pub type RawWs = WebSocketStream<TcpStream>;

/// A raw WebSocket connection to `/.well-known/coap` with subprotocol `coap`.
pub async fn raw(addr: SocketAddr) -> RawWs {
    let mut req = format!("ws://{addr}/.well-known/coap")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "coap".parse().unwrap());
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (ws, resp) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    assert_eq!(resp.headers()["Sec-WebSocket-Protocol"], "coap");
    ws
}

/// Accepts one client on `listener` as a raw WebSocket server (selecting subprotocol `coap`)
/// and sends it an empty CSM: a peer under the test's full control.
pub async fn raw_server(listener: &tokio::net::TcpListener) -> RawWs {
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    let (s, _) = listener.accept().await.unwrap();
    #[allow(clippy::result_large_err)] // the callback type is tungstenite's
    let select_coap = |_req: &Request, mut resp: Response| {
        resp.headers_mut()
            .insert("Sec-WebSocket-Protocol", "coap".parse().unwrap());
        Ok(resp)
    };
    let mut ws = tokio_tungstenite::accept_hdr_async(s, select_coap)
        .await
        .unwrap();
    send_bytes(&mut ws, &[0x00, 0xe1]).await;
    ws
}

/// A TCP connection that has sent a valid CoAP WebSocket upgrade request (response unread),
/// for tests that speak raw WebSocket frames.
pub async fn raw_upgrade_request(addr: SocketAddr) -> TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"GET /.well-known/coap HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
          Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: coap\r\n\r\n",
    )
    .await
    .unwrap();
    s
}

/// The next CoAP message from a raw connection (skipping nothing), or `None` at close.
pub async fn next_coap(ws: &mut RawWs) -> Option<Message> {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no hang")
        {
            Some(Ok(WsMessage::Binary(b))) => {
                return Some(ws::decode(&b, &Default::default()).expect("server sends valid CoAP"));
            }
            Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

/// Reads until the close frame; returns its code.
pub async fn close_code(ws: &mut RawWs) -> Option<u16> {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no hang")
        {
            Some(Ok(WsMessage::Close(f))) => return f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            None | Some(Err(_)) => return None,
        }
    }
}

pub async fn send_coap(ws: &mut RawWs, m: &Message) {
    ws.send(WsMessage::Binary(ws::encode(m).unwrap()))
        .await
        .unwrap();
}

pub async fn send_bytes(ws: &mut RawWs, b: &[u8]) {
    ws.send(WsMessage::Binary(Bytes::copy_from_slice(b)))
        .await
        .unwrap();
}

/// Sends our CSM and reads the server's; returns the server's CSM.
pub async fn handshake_csm(ws: &mut RawWs) -> Message {
    send_bytes(ws, &[0x00, 0xe1]).await;
    let csm = next_coap(ws).await.expect("server CSM");
    assert_eq!(csm.code, Code::CSM, "CSM comes first");
    csm
}

pub fn get(path: &str, token: u8) -> Message {
    Message::request(Code::GET, path).with_token(Token::new(vec![token]))
}

/// A test CA and a server certificate it signed for `localhost`, `127.0.0.1` and `::1`.
pub struct Pki {
    pub ca_pem: String,
    pub ca_der: rustls::pki_types::CertificateDer<'static>,
    pub identity: coapws::tls::TlsIdentity,
}

pub fn pki() -> Pki {
    pki_for(&["localhost", "127.0.0.1", "::1"])
}

/// A test CA and a server certificate it signed for exactly `names` (DNS names or IP
/// literals), e.g. one that lacks the address a client connects to.
pub fn pki_for(names: &[&str]) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "coapws test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    leaf.distinguished_name.push(
        DnType::CommonName,
        names.first().copied().unwrap_or("nobody"),
    );
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    Pki {
        ca_pem: ca_cert.pem(),
        ca_der: ca_cert.der().clone(),
        identity: coapws::tls::TlsIdentity::from_der(vec![leaf_cert.der().clone()], key),
    }
}

pub fn trusting(pki: &Pki) -> coapws::tls::TlsClientConfig {
    let mut t = coapws::tls::TlsClientConfig::empty();
    t.add_ca_der(pki.ca_der.clone()).unwrap();
    t
}

/// Waits until `cond` holds, checking every 10 ms, for at most [`WAIT`]; panics with `what`
/// otherwise. For state that changes on its own (a connection leaving a pool), where no event
/// is exposed: the bound is generous, so only a real failure hits it.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {WAIT:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A TCP port on 127.0.0.1 that is bound (so nobody else gets it) but not listening:
/// connecting to it is refused. Keep the socket alive as long as the port must stay dead.
pub fn dead_port() -> (tokio::net::TcpSocket, SocketAddr) {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let a = s.local_addr().unwrap();
    (s, a)
}
