//! CoAP over WebSockets over real loopback sockets: client and server behaviour, every error
//! path of the connection, the pool and role reversal.

mod common;

use coapws::proto::signaling::Signal;
use coapws::proto::{Code, Message, OptionNumber, Token};
use coapws::{Endpoint, EndpointConfig, Error, IncomingRequest, Request, Resource, Site};
use common::*;
use std::time::Duration;

#[tokio::test]
async fn get_post_and_site_answers() {
    let (_server, addr) = server().await;
    let client = Endpoint::client();
    let r = client.get(&uri(addr, "/hello")).await.unwrap();
    assert_eq!(r.code(), Code::CONTENT);
    assert_eq!(r.message.payload_text(), "Hello, CoAP over WebSockets!");
    assert_eq!(r.message.options.content_format(), Some(0));

    let r = client
        .send(
            Request::new(Code::POST, &uri(addr, "/echo"))
                .unwrap()
                .payload("ping")
                .content_format(50),
        )
        .await
        .unwrap();
    assert_eq!(r.code(), Code::CHANGED);
    assert_eq!(&r.payload()[..], b"ping");
    assert_eq!(r.message.options.content_format(), Some(50));

    let r = client.get(&uri(addr, "/nowhere")).await.unwrap();
    assert_eq!(r.code(), Code::NOT_FOUND);
    let r = client
        .send(Request::new(Code::DELETE, &uri(addr, "/hello")).unwrap())
        .await
        .unwrap();
    assert_eq!(r.code(), Code::METHOD_NOT_ALLOWED);
    // an unassigned method code
    let r = client
        .send(Request::new(Code::new(0, 20), &uri(addr, "/hello")).unwrap())
        .await
        .unwrap();
    assert_eq!(r.code(), Code::METHOD_NOT_ALLOWED);

    let r = client.get(&uri(addr, "/.well-known/core")).await.unwrap();
    assert_eq!(r.code(), Code::CONTENT);
    assert_eq!(r.message.options.content_format(), Some(40));
    let links = coapws::proto::link_format::parse(&r.message.payload_text()).unwrap();
    let targets: Vec<&str> = links.iter().map(|l| l.target.as_str()).collect();
    for t in ["/hello", "/echo", "/time", "/ask-back"] {
        assert!(targets.contains(&t), "{t} in {targets:?}");
    }
    let r = client
        .get(&uri(addr, "/.well-known/core?title=Greeting"))
        .await
        .unwrap();
    assert_eq!(r.message.payload_text(), "</hello>;title=\"Greeting\";ct=0");
    // all on one connection
    assert_eq!(client.connection_count(), 1);
}

#[tokio::test]
async fn unknown_critical_option_gets_4_02_with_diagnostic() {
    let (_server, addr) = server().await;
    let mut ws = raw(addr).await;
    handshake_csm(&mut ws).await;
    // CONFORMANCE §9: GET with unknown critical option 65001, token 01
    send_bytes(&mut ws, &[0x01, 0x01, 0x01, 0xe0, 0xfc, 0xdc]).await;
    let r = next_coap(&mut ws).await.unwrap();
    assert_eq!(r.code, Code::BAD_OPTION);
    assert_eq!(r.token, Token::new(vec![1]));
    assert!(r.payload_text().contains("65001"), "{}", r.payload_text());
    // elective unknown: ignored
    let m = get("/hello", 2).with_option(OptionNumber(65000), "x");
    send_coap(&mut ws, &m).await;
    assert_eq!(next_coap(&mut ws).await.unwrap().code, Code::CONTENT);
    // proxying: 5.05
    let m = get("/", 3).with_option(OptionNumber::PROXY_URI, "coap://example.invalid/");
    send_coap(&mut ws, &m).await;
    assert_eq!(
        next_coap(&mut ws).await.unwrap().code,
        Code::PROXYING_NOT_SUPPORTED
    );
}

#[tokio::test]
async fn no_site_answers_5_01() {
    let (_server, addr) = server_with(EndpointConfig::default(), None).await;
    let r = Endpoint::client().get(&uri(addr, "/hello")).await.unwrap();
    assert_eq!(r.code(), Code::NOT_IMPLEMENTED);
}

#[tokio::test]
async fn server_csm_and_ping() {
    let (_server, addr) = server().await;
    let mut ws = raw(addr).await;
    let csm = handshake_csm(&mut ws).await;
    match Signal::parse(&csm).unwrap() {
        Signal::Csm(c) => {
            assert_eq!(c.max_message_size, Some(1 << 20));
            assert!(c.block_wise_transfer);
        }
        other => panic!("{other:?}"),
    }
    send_bytes(&mut ws, &[0x01, 0xe2, 0x42]).await;
    let pong = next_coap(&mut ws).await.unwrap();
    assert_eq!(ws_bytes(&pong), [0x01, 0xe3, 0x42]);
    // empty message ignored, connection keeps working
    send_bytes(&mut ws, &[0x00, 0x00]).await;
    send_coap(&mut ws, &get("/hello", 5)).await;
    assert_eq!(next_coap(&mut ws).await.unwrap().code, Code::CONTENT);
}

fn ws_bytes(m: &Message) -> Vec<u8> {
    coapws::proto::codec::ws::encode(m).unwrap().to_vec()
}

#[tokio::test]
async fn text_frame_aborts_with_1003() {
    use futures_util::SinkExt;
    let (server, addr) = server().await;
    let mut ws = raw(addr).await;
    handshake_csm(&mut ws).await;
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        "Hello".into(),
    ))
    .await
    .unwrap();
    let abort = next_coap(&mut ws).await.unwrap();
    assert_eq!(abort.code, Code::ABORT);
    assert_eq!(abort.payload_text(), "Text frame received");
    assert_eq!(close_code(&mut ws).await, Some(1003));
    // the server keeps serving others
    let r = Endpoint::client().get(&uri(addr, "/hello")).await.unwrap();
    assert_eq!(r.code(), Code::CONTENT);
    drop(server);
}

/// transport/ws.rs `WsIo::recv`: tungstenite reports a text message that is not UTF-8 as
/// `Error::Utf8`, which fell through to "transport failed": no Abort, and close code 1000
/// (normal closure) for a peer that broke the rules. It is a text frame all the same.
#[tokio::test]
async fn text_frame_that_is_not_utf8_aborts_with_1003() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::protocol::frame::{Frame, coding::Data, coding::OpCode};
    let (_server, addr) = server().await;
    let mut ws = raw(addr).await;
    handshake_csm(&mut ws).await;
    let frame = Frame::message(vec![0xff, 0xfe, 0x41], OpCode::Data(Data::Text), true);
    ws.send(tokio_tungstenite::tungstenite::Message::Frame(frame))
        .await
        .unwrap();
    let abort = next_coap(&mut ws).await.expect("an Abort");
    assert_eq!(abort.code, Code::ABORT);
    assert_eq!(abort.payload_text(), "Text frame received");
    assert_eq!(close_code(&mut ws).await, Some(1003));
}

#[tokio::test]
async fn format_error_aborts_with_1007() {
    let (_server, addr) = server().await;
    let mut ws = raw(addr).await;
    handshake_csm(&mut ws).await;
    // Len nibble 3 on WebSocket
    send_bytes(&mut ws, &[0x30, 0x01]).await;
    let abort = next_coap(&mut ws).await.unwrap();
    assert_eq!(abort.code, Code::ABORT);
    assert!(
        abort.payload_text().contains("Len nibble"),
        "{}",
        abort.payload_text()
    );
    assert_eq!(close_code(&mut ws).await, Some(1007));
    // a single byte, and a payload marker with no payload, are format errors too
    for bad in [&[0x01][..], &[0x00, 0x45, 0xff][..]] {
        let mut ws = raw(addr).await;
        handshake_csm(&mut ws).await;
        send_bytes(&mut ws, bad).await;
        assert_eq!(next_coap(&mut ws).await.unwrap().code, Code::ABORT);
        assert_eq!(close_code(&mut ws).await, Some(1007));
    }
}

#[tokio::test]
async fn missing_csm_aborts() {
    let (_server, addr) = server().await;
    let mut ws = raw(addr).await;
    send_coap(&mut ws, &get("/hello", 1)).await;
    let csm = next_coap(&mut ws).await.unwrap();
    assert_eq!(csm.code, Code::CSM);
    let abort = next_coap(&mut ws).await.unwrap();
    assert_eq!(abort.code, Code::ABORT);
    assert!(abort.payload_text().contains("CSM"));
    assert_eq!(close_code(&mut ws).await, Some(1002));
}

#[tokio::test]
async fn bad_csm_option_aborts_naming_it() {
    let (_server, addr) = server().await;
    let mut ws = raw(addr).await;
    send_bytes(&mut ws, &[0x00, 0xe1, 0xb0]).await;
    assert_eq!(next_coap(&mut ws).await.unwrap().code, Code::CSM);
    let abort = next_coap(&mut ws).await.unwrap();
    assert_eq!(&ws_bytes(&abort)[..4], &[0x00, 0xe5, 0x21, 0x0b]);
}

#[tokio::test]
async fn http_refusals_are_real_http_answers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_server, addr) = server().await;
    async fn ask(addr: std::net::SocketAddr, req: String) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
    let upgrade = |path: &str, extra: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
        )
    };
    let r = ask(
        addr,
        upgrade(
            "/other",
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: coap\r\n",
        ),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    let r = ask(
        addr,
        upgrade("/.well-known/coap", "Sec-WebSocket-Version: 13\r\n"),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    let r = ask(
        addr,
        upgrade(
            "/.well-known/coap",
            "Sec-WebSocket-Version: 8\r\nSec-WebSocket-Protocol: coap\r\n",
        ),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 426"), "{r}");
    assert!(
        r.to_ascii_lowercase().contains("sec-websocket-version: 13"),
        "{r}"
    );
    let r = ask(
        addr,
        upgrade(
            "/.well-known/coap",
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt, coap\r\n",
        ),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 101"), "{r}");
    assert!(
        r.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "RFC 6455 accept key: {r}"
    );
    let r = ask(
        addr,
        "GET /.well-known/coap HTTP/1.1\r\nHost: x\r\n\r\n".into(),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 426"), "{r}");
    let bad_key = "GET /.well-known/coap HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
                   Connection: Upgrade\r\nSec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\
                   Sec-WebSocket-Protocol: coap\r\n\r\n";
    let r = ask(addr, bad_key.into()).await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");

    // Origin policy: 403 for an origin not on the list
    let config = EndpointConfig {
        allowed_origins: vec!["https://good.example".into()],
        ..Default::default()
    };
    let (_s2, addr2) = server_with(config, Some(Site::new())).await;
    let v13 = "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: coap\r\n";
    let r = ask(
        addr2,
        upgrade(
            "/.well-known/coap",
            &format!("{v13}Origin: https://evil.example\r\n"),
        ),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    let r = ask(
        addr2,
        upgrade(
            "/.well-known/coap",
            &format!("{v13}Origin: https://good.example\r\n"),
        ),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 101"), "{r}");
}

/// transport/ws.rs `check_upgrade`: an HTTP/1.0 request with the upgrade headers was
/// switched to WebSocket ("HTTP/1.0 101"), though HTTP/1.0 has no Upgrade (RFC 9110 §7.8: a
/// server ignores it) and RFC 6455 §4.1 requires HTTP/1.1. It gets what a GET without
/// upgrade gets: 426.
#[tokio::test]
async fn http_1_0_upgrade_request_is_not_upgraded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_server, addr) = server().await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"GET /.well-known/coap HTTP/1.0\r\nHost: localhost\r\nUpgrade: websocket\r\n\
          Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: coap\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let r = String::from_utf8_lossy(&buf[..n]);
    assert!(r.starts_with("HTTP/1.0 426 "), "{r}");
}

#[tokio::test]
async fn masked_frame_vectors() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_server, addr) = server().await;
    let mut s = raw_upgrade_request(addr).await;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        tokio::time::timeout(WAIT, s.read_exact(&mut b))
            .await
            .unwrap()
            .unwrap();
        head.push(b[0]);
    }
    // CONFORMANCE §9: CSM (Max-Message-Size 1152) as a masked client frame
    s.write_all(&[
        0x82, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x37, 0x1b, 0x03, 0x39, 0xb7,
    ])
    .await
    .unwrap();
    // masked text frame "Hello" → Abort, then close 1003
    s.write_all(&[
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ])
    .await
    .unwrap();
    let mut all = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut all))
        .await
        .unwrap();
    // server frames are unmasked: CSM, Abort, Close
    assert_eq!(&all[..2], &[0x82, 0x07], "CSM frame of 7 bytes: {all:02x?}");
    assert_eq!(&all[2..9], &[0x00, 0xe1, 0x23, 0x10, 0x00, 0x00, 0x20]);
    assert_eq!(all[9], 0x82);
    let abort_len = all[10] as usize;
    assert_eq!(&all[11..14], &[0x00, 0xe5, 0xff]);
    assert_eq!(&all[14..11 + abort_len], b"Text frame received");
    let close = &all[11 + abort_len..];
    assert_eq!(close[0], 0x88);
    assert_eq!(&close[2..4], &[0x03, 0xeb], "close code 1003");
}

#[tokio::test]
async fn unmasked_client_frame_closes_with_1002() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_server, addr) = server().await;
    let mut s = raw_upgrade_request(addr).await;
    s.write_all(&[0x82, 0x02, 0x00, 0xe1]).await.unwrap();
    let mut all = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut all))
        .await
        .unwrap();
    let pos = all
        .windows(2)
        .position(|w| w == [0x88, 0x02] || w[0] == 0x88)
        .expect("close frame");
    assert_eq!(
        &all[pos + 2..pos + 4],
        &[0x03, 0xea],
        "close code 1002: {all:02x?}"
    );
}

#[tokio::test]
async fn peer_killed_mid_request_fails_the_request() {
    // A raw server: handshake, CSM, read the request, then drop the socket.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut ws = raw_server(&listener).await;
        use futures_util::StreamExt;
        // client CSM, then the request
        let _ = ws.next().await;
        let _ = ws.next().await;
        drop(ws); // killed: no close frame, no response
    });
    let client = Endpoint::client();
    // A request timeout far beyond the test's bound: the failure is the connection's ending.
    let err = tokio::time::timeout(
        WAIT,
        client.send(
            Request::get(&uri(addr, "/x"))
                .unwrap()
                .timeout(Duration::from_secs(3600)),
        ),
    )
    .await
    .expect("failed promptly, not by timeout")
    .unwrap_err();
    assert!(matches!(err, Error::Connection(_)), "{err:?}");
    // and the dead connection left the pool
    wait_until("the dead connection left the pool", || {
        client.pooled_origins() == 0
    })
    .await;
}

#[tokio::test]
async fn concurrent_requests_share_one_connection_attempt() {
    let (server, addr) = server().await;
    let client = Endpoint::client();
    let u = uri(addr, "/hello");
    let all = futures_util::future::join_all((0..20).map(|_| client.get(&u))).await;
    assert!(
        all.iter()
            .all(|r| r.as_ref().is_ok_and(|r| r.code() == Code::CONTENT))
    );
    assert_eq!(client.connection_count(), 1);
    assert_eq!(server.connection_count(), 1);

    // and share one failure: nothing listens here (the port is held, bound but not listening)
    let (_held, dead) = dead_port();
    let u = uri(dead, "/hello");
    let all = futures_util::future::join_all((0..5).map(|_| client.get(&u))).await;
    assert!(
        all.iter().all(|r| matches!(r, Err(Error::Connect { .. }))),
        "{all:?}"
    );
    assert_eq!(
        client.pooled_origins(),
        1,
        "the failed origin left no entry"
    );
}

#[tokio::test]
async fn dead_connection_leaves_pool_and_reconnects() {
    let (server, addr) = server().await;
    let client = Endpoint::client();
    client.get(&uri(addr, "/hello")).await.unwrap();
    assert_eq!(client.pooled_origins(), 1);
    server.shutdown().await; // Release to the client; it closes
    wait_until("the released connection left the pool", || {
        client.pooled_origins() == 0
    })
    .await;
    // A new server on the same port gets a fresh connection. (The port is reused on
    // purpose: the pool is keyed by origin; it is ours, freed a moment ago by shutdown.)
    let ep2 = Endpoint::builder().site(test_site()).build();
    ep2.listen_ws(addr).await.unwrap();
    let r = client.get(&uri(addr, "/hello")).await.unwrap();
    assert_eq!(r.code(), Code::CONTENT);
}

/// A request being handled when the server shuts down (Release sent, seen by the server's own
/// connection task) is still answered, and only then does the shutdown finish.
#[tokio::test]
async fn release_answers_outstanding_requests_first() {
    let (site, mut registered) = with_register(test_site());
    let (site, mut gates) = with_gate(site);
    let (server, addr) = server_with(EndpointConfig::default(), Some(site)).await;
    let client = Endpoint::client();
    client
        .send(Request::new(Code::POST, &uri(addr, "/register")).unwrap())
        .await
        .unwrap();
    let remote = registered.recv().await.unwrap();
    let conn = remote.connection().unwrap();
    let held = tokio::spawn({
        let client = client.clone();
        async move { client.get(&uri(addr, "/gate")).await }
    });
    let open = entered(&mut gates).await;
    let shut = tokio::spawn(async move { server.shutdown().await });
    wait_until("the server's connection is releasing", || {
        !conn.accepts_requests()
    })
    .await;
    assert!(
        !shut.is_finished(),
        "shutdown waits for the request in flight"
    );
    open.send(()).unwrap();
    let r = tokio::time::timeout(WAIT, held)
        .await
        .expect("no hang")
        .unwrap()
        .unwrap();
    assert_eq!(r.message.payload_text(), "gate");
    tokio::time::timeout(WAIT, shut).await.unwrap().unwrap();
}

/// A request that times out fails with `Timeout`; its late response (sent on the same
/// connection before the next one's, so handled before it) is dropped and the connection
/// keeps working.
#[tokio::test]
async fn timeout_cancels_and_connection_survives() {
    let (site, mut gates) = with_gate(test_site());
    let (_server, addr) = server_with(EndpointConfig::default(), Some(site)).await;
    let client = Endpoint::client();
    let err = client
        .send(
            Request::get(&uri(addr, "/gate"))
                .unwrap()
                .timeout(Duration::from_millis(100)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout), "{err:?}");
    entered(&mut gates).await.send(()).unwrap();
    let r = client.get(&uri(addr, "/hello")).await.unwrap();
    assert_eq!(r.code(), Code::CONTENT);
    assert_eq!(
        r.message.payload_text(),
        "Hello, CoAP over WebSockets!",
        "not the late response"
    );
    assert_eq!(client.connection_count(), 1);
}

/// Dropping a request future cancels the request on its connection (exchange.rs
/// `SendOnDrop`, connection.rs `Command::Cancel`), seen from a raw server that never answers
/// it. After the drop the client sends a second request: the connection task takes it after
/// the cancel (one command queue), so when it arrives the cancel has taken effect. The server
/// then sends Release and answers the second; a client with nothing outstanding closes at
/// once (RFC 8323 §5.5). Had the dropped request stayed outstanding, the client would wait for
/// it until its release timeout (an hour here) and the server would see no close.
#[tokio::test]
async fn a_dropped_request_is_cancelled_on_its_connection() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (got_first, first_arrived) = tokio::sync::oneshot::channel();
    let peer = tokio::spawn(async move {
        let mut ws = raw_server(&listener).await;
        assert_eq!(next_coap(&mut ws).await.unwrap().code, Code::CSM);
        let first = next_coap(&mut ws).await.unwrap();
        assert_eq!(first.options.uri_path(), ["first"]);
        got_first.send(()).unwrap();
        let second = next_coap(&mut ws).await.expect("the second request");
        assert_eq!(second.options.uri_path(), ["second"]);
        let release = coapws::proto::signaling::Signal::Release {
            alternative_addresses: Vec::new(),
            hold_off: None,
        };
        send_coap(&mut ws, &release.to_message(Token::EMPTY)).await;
        send_coap(
            &mut ws,
            &Message::response(Code::CONTENT, "second").with_token(second.token.clone()),
        )
        .await;
        // The client closes (next_coap gives None at the close frame; it panics after WAIT).
        while let Some(m) = next_coap(&mut ws).await {
            assert_ne!(
                m.token, first.token,
                "nothing more about the dropped request"
            );
        }
    });
    let config = EndpointConfig {
        connection: coapws::proto::connection::ConnectionConfig {
            release_timeout: Duration::from_secs(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let client = Endpoint::builder().config(config).build();
    let first_uri = uri(addr, "/first");
    let mut first = Box::pin(client.get(&first_uri));
    tokio::select! {
        r = &mut first => panic!("the first request ended: {:?}", r.map(|r| r.code())),
        _ = first_arrived => {}
    }
    drop(first);
    let r = client.get(&uri(addr, "/second")).await.unwrap();
    assert_eq!(r.message.payload_text(), "second");
    tokio::time::timeout(WAIT + WAIT, peer)
        .await
        .expect("the raw server saw the client close")
        .unwrap();
    wait_until("the released connection is gone", || {
        client.connection_count() == 0
    })
    .await;
}

#[tokio::test]
async fn panicking_handler_gets_5_00() {
    let (_server, addr) = server().await;
    let r = Endpoint::client().get(&uri(addr, "/panic")).await.unwrap();
    assert_eq!(r.code(), Code::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn no_response_suppresses_on_the_wire() {
    let (_server, addr) = server().await;
    let client = Endpoint::client();
    // 2.xx suppressed
    let err = client
        .send(
            Request::new(Code::POST, &uri(addr, "/echo"))
                .unwrap()
                .payload("x")
                .no_response(2),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoResponse), "{err:?}");
    // 2.xx suppressed but the answer is a 4.04: it comes
    let r = client
        .send(Request::get(&uri(addr, "/nowhere")).unwrap().no_response(2))
        .await
        .unwrap();
    assert_eq!(r.code(), Code::NOT_FOUND);
    // On the wire: nothing is sent for a suppressed response (raw client, CONFORMANCE vector).
    let mut ws = raw(addr).await;
    handshake_csm(&mut ws).await;
    // POST /a with No-Response 26 (all suppressed), token 02 — /a does not exist: 4.04 suppressed
    send_bytes(&mut ws, &[0x01, 0x02, 0x02, 0xb1, 0x61, 0xd1, 0xea, 0x1a]).await;
    send_coap(&mut ws, &get("/hello", 3)).await;
    let next = next_coap(&mut ws).await.unwrap();
    assert_eq!(
        next.token,
        Token::new(vec![3]),
        "the suppressed response never came: {next:?}"
    );
}

/// A server that accepts messages of at most 1152 bytes (the RFC 8323 base value).
async fn small_server() -> (Endpoint, std::net::SocketAddr) {
    let small = EndpointConfig {
        connection: coapws::proto::connection::ConnectionConfig {
            max_message_size: 1152,
            ..Default::default()
        },
        ..Default::default()
    };
    server_with(small, Some(test_site())).await
}

#[tokio::test]
async fn too_large_for_peer_goes_block_wise() {
    let (_server, addr) = small_server().await;
    let client = Endpoint::client();
    client.get(&uri(addr, "/hello")).await.unwrap();
    // too large for the peer's 1152 bytes: sent in Block1 pieces (the server would abort on a
    // message above its limit), echoed back in Block2 pieces
    let body: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let r = client
        .send(
            Request::new(Code::POST, &uri(addr, "/echo"))
                .unwrap()
                .payload(body.clone()),
        )
        .await
        .unwrap();
    assert_eq!(&r.payload()[..], &body[..]);
    assert_eq!(
        client.connection_count(),
        1,
        "no abort: every message fitted"
    );
    // the server's 100 KiB response fits our 1 MiB
    let r = client.get(&uri(addr, "/big")).await.unwrap();
    assert_eq!(r.payload().len(), 100 * 1024);
}

#[tokio::test]
async fn oversize_websocket_message_aborts() {
    let (_server, addr) = small_server().await;
    let mut ws = raw(addr).await;
    handshake_csm(&mut ws).await;
    let big = Message::request(Code::POST, "/echo")
        .with_token(Token::new(vec![1]))
        .with_payload(vec![0u8; 4000]);
    send_coap(&mut ws, &big).await;
    let abort = next_coap(&mut ws).await.unwrap();
    assert_eq!(abort.code, Code::ABORT);
    assert_eq!(close_code(&mut ws).await, Some(1009));
}

#[tokio::test]
async fn role_reversal_both_ways() {
    // The client serves /whoami; the server's /ask-back asks it over the same connection.
    let client_site = Site::new().resource(
        "/whoami",
        Resource::new().get(|req: IncomingRequest| async move {
            Message::response(
                Code::CONTENT,
                format!("client, asked by {}", req.remote.scheme()),
            )
        }),
    );
    let (_server, addr) = server().await;
    let client = Endpoint::builder().site(client_site).build();
    let r = client.get(&uri(addr, "/ask-back")).await.unwrap();
    assert_eq!(r.code(), Code::CONTENT, "{}", r.message.payload_text());
    assert_eq!(r.message.payload_text(), "client, asked by coap+ws");
    assert_eq!(client.connection_count(), 1);

    // A client without a site answers the server's request with 5.01, which the demo
    // reports as the client's answer.
    let plain = Endpoint::client();
    let r = plain.get(&uri(addr, "/ask-back")).await.unwrap();
    assert_eq!(r.code(), Code::CONTENT);
    assert!(
        r.message
            .payload_text()
            .ends_with("it answered 5.01 Not Implemented"),
        "{}",
        r.message.payload_text()
    );
}

#[tokio::test]
async fn server_side_remote_has_no_uri_but_request_to_works() {
    let (site, mut rx) = with_register(Site::new());
    let server = Endpoint::builder().site(site).build();
    let addr = server
        .listen_ws("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = Endpoint::builder()
        .site(
            Site::new().resource(
                "/temp",
                Resource::new()
                    .get(|_r: IncomingRequest| async { Message::response(Code::CONTENT, "21.5") }),
            ),
        )
        .build();
    let r = client
        .send(Request::new(Code::POST, &uri(addr, "/register")).unwrap())
        .await
        .unwrap();
    assert_eq!(r.code(), Code::CHANGED);
    assert_eq!(
        r.remote.uri().unwrap().to_string(),
        format!("coap+ws://{addr}/"),
        "client-side remote has the URI it was reached by"
    );
    let remote = rx.recv().await.unwrap();
    assert!(matches!(remote.uri(), Err(Error::NoUri(_))));
    let (host, port) = remote.local_host_info().unwrap();
    assert_eq!(
        (host.to_string(), port),
        ("127.0.0.1".to_string(), addr.port()),
        "from the Host header"
    );
    let answer = server
        .request_to(&remote, Message::request(Code::GET, "/temp"))
        .await
        .unwrap();
    assert_eq!(answer.message.payload_text(), "21.5");
    // once the client is gone, requests to it fail with a typed error
    client.shutdown().await;
    let err = server
        .request_to(&remote, Message::request(Code::GET, "/temp"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connection(_)), "{err:?}");
}

#[tokio::test]
async fn tcp_transport_works_the_same() {
    let server = Endpoint::builder().site(test_site()).build();
    let addr = server
        .listen_tcp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = Endpoint::client();
    let r = client
        .get(&format!("coap+tcp://{addr}/hello"))
        .await
        .unwrap();
    assert_eq!(r.code(), Code::CONTENT);
    let r = client.get(&format!("coap+tcp://{addr}/big")).await.unwrap();
    assert_eq!(r.payload().len(), 100 * 1024);
}

#[tokio::test]
async fn shutdown_sends_release_on_the_wire() {
    let (site, mut gates) = with_gate(test_site());
    let (server, addr) = server_with(EndpointConfig::default(), Some(site)).await;
    let mut ws = raw(addr).await;
    handshake_csm(&mut ws).await;
    // a request in flight when the server shuts down still gets its answer, after the Release
    send_coap(&mut ws, &get("/gate", 9)).await;
    let open = entered(&mut gates).await;
    let shut = tokio::spawn(async move { server.shutdown().await });
    let release = next_coap(&mut ws).await.unwrap();
    assert_eq!(release.code, Code::RELEASE);
    assert!(matches!(
        Signal::parse(&release),
        Ok(Signal::Release { .. })
    ));
    open.send(()).unwrap();
    let answer = next_coap(&mut ws).await.unwrap();
    assert_eq!(
        (answer.code, answer.token),
        (Code::CONTENT, Token::new(vec![9]))
    );
    // we, the receiver of Release, close; the server's shutdown completes
    drop(ws);
    tokio::time::timeout(WAIT, shut).await.unwrap().unwrap();
}

#[tokio::test]
async fn our_own_abort_fails_pending_requests() {
    // A raw server that answers the client's request with a text frame: the client aborts,
    // and the request pending on that connection fails at once (aiocoap's would hang).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use futures_util::{SinkExt, StreamExt};
        let mut ws = raw_server(&listener).await;
        let _ = ws.next().await; // CSM
        let _ = ws.next().await; // the request
        ws.send(tokio_tungstenite::tungstenite::Message::Text("oops".into()))
            .await
            .unwrap();
        // keep the socket open: only the client's own Abort can end the request
        while let Some(Ok(_)) = ws.next().await {}
    });
    let client = Endpoint::client();
    let err = tokio::time::timeout(
        WAIT,
        client.send(
            Request::get(&uri(addr, "/x"))
                .unwrap()
                .timeout(Duration::from_secs(3600)),
        ),
    )
    .await
    .expect("failed at once, not by timeout")
    .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Connection(coapws::proto::connection::ConnectionError::Aborted(
                coapws::proto::connection::AbortReason::TextFrame
            ))
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_peer_that_stops_reading_is_dropped() {
    let config = EndpointConfig {
        write_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let (server, addr) = server_with(config, Some(test_site())).await;
    let mut ws = raw(addr).await;
    // CSM with Max-Message-Size 1 MiB, so that responses come whole.
    send_bytes(&mut ws, &[0x00, 0xe1, 0x23, 0x10, 0x00, 0x00]).await;
    // Ask for 100 KiB responses, never read them: the socket buffers fill, writes stall.
    for i in 0..250u8 {
        send_coap(&mut ws, &get("/big", i)).await;
    }
    wait_until("the stalled connection was dropped", || {
        server.connection_count() == 0
    })
    .await;
    // everyone else is still served
    let r = Endpoint::client().get(&uri(addr, "/hello")).await.unwrap();
    assert_eq!(r.code(), Code::CONTENT);
    drop(ws);
}

/// Block-wise upload state at the endpoint (dispatch.rs), driven by a raw peer: at most
/// `max_uploads` Block1 uploads at once (5.03 with Max-Age 5 beyond), a block out of order
/// or without its upload gets 4.08 Request Entity Incomplete (RFC 7959 §2.9.2) and ends the
/// upload, and an upload left alone for `upload_timeout` is forgotten: its next block gets
/// 4.08 and its place is free again.
#[tokio::test]
async fn block1_upload_state_is_bounded_ordered_and_expires() {
    use coapws::proto::BlockValue;
    const TIMEOUT: Duration = Duration::from_millis(300);
    let config = EndpointConfig {
        max_uploads: 2,
        upload_timeout: TIMEOUT,
        ..Default::default()
    };
    let (_server, addr) = server_with(config, Some(test_site())).await;
    let mut ws = raw(addr).await;
    handshake_csm(&mut ws).await;
    let mut token = 0u8;
    let mut block = async |ws: &mut RawWs, upload: u8, num: u32, more: bool| {
        token += 1;
        let m = Message::request(Code::POST, "/echo")
            .with_option(OptionNumber::URI_QUERY, format!("u={upload}").into_bytes())
            .with_option(
                OptionNumber::BLOCK1,
                BlockValue { num, more, szx: 6 }.encode(),
            )
            .with_token(Token::new(vec![token]))
            .with_payload(vec![b'a' + upload; if more { 1024 } else { 10 }]);
        send_coap(ws, &m).await;
        let r = next_coap(ws).await.expect("an answer");
        assert_eq!(r.token, m.token);
        r
    };
    let expect = |r: &Message, code: Code, what: &str| {
        assert_eq!(r.code, code, "{what}: {}", r.payload_text());
    };
    // Two uploads in progress; a third is refused.
    let r = block(&mut ws, 1, 0, true).await;
    expect(&r, Code::CONTINUE, "upload 1 block 0");
    assert_eq!(r.options.block1().map(|b| (b.num, b.more)), Some((0, true)));
    expect(
        &block(&mut ws, 2, 0, true).await,
        Code::CONTINUE,
        "upload 2 block 0",
    );
    let r = block(&mut ws, 3, 0, true).await;
    expect(
        &r,
        Code::SERVICE_UNAVAILABLE,
        "upload 3 beyond max_uploads 2",
    );
    assert_eq!(r.options.get_uint(OptionNumber::MAX_AGE), Some(5));
    // Out of order: block 2 after block 0 ends upload 1; its block 1 then has no upload.
    let r = block(&mut ws, 1, 2, true).await;
    expect(
        &r,
        Code::REQUEST_ENTITY_INCOMPLETE,
        "upload 1 block 2 after block 0",
    );
    assert_eq!(r.payload_text(), "block out of order");
    let r = block(&mut ws, 1, 1, true).await;
    expect(
        &r,
        Code::REQUEST_ENTITY_INCOMPLETE,
        "upload 1 block 1 after it ended",
    );
    assert_eq!(r.payload_text(), "no upload in progress for this block");
    // A block without its block 0.
    let r = block(&mut ws, 4, 1, false).await;
    expect(
        &r,
        Code::REQUEST_ENTITY_INCOMPLETE,
        "upload 4 block 1 without block 0",
    );
    // Upload 1 ended, so there is room for one more: upload 5 fills the cap again.
    expect(
        &block(&mut ws, 5, 0, true).await,
        Code::CONTINUE,
        "upload 5 block 0",
    );
    expect(
        &block(&mut ws, 6, 0, true).await,
        Code::SERVICE_UNAVAILABLE,
        "upload 6 with 2 and 5 in progress",
    );
    // Uploads 2 and 5 are left alone past upload_timeout. Expiry is judged against the
    // clock at the next block, so twice the timeout is past it however slow the machine.
    tokio::time::sleep(TIMEOUT * 2).await;
    let r = block(&mut ws, 5, 1, true).await;
    expect(
        &r,
        Code::REQUEST_ENTITY_INCOMPLETE,
        "upload 5 after upload_timeout",
    );
    expect(
        &block(&mut ws, 6, 0, true).await,
        Code::CONTINUE,
        "upload 6, room again",
    );
    let r = block(&mut ws, 6, 1, false).await;
    expect(&r, Code::CHANGED, "upload 6 complete");
    assert_eq!(r.payload.len(), 1024 + 10, "the echo of both blocks");
    assert!(r.payload[..1024].iter().all(|&c| c == b'a' + 6));
}

/// Regression: when a client closed, the server dropped the TCP connection without its own
/// Close frame (RFC 6455 §5.5.1), so clients saw 1006 instead of a clean 1000.
#[tokio::test]
async fn a_client_close_is_answered_with_a_close_frame() {
    use futures_util::SinkExt;
    let (_server, addr) = server().await;
    let mut ws = raw(addr).await;
    handshake_csm(&mut ws).await;
    use tokio_tungstenite::tungstenite::protocol::{CloseFrame, frame::coding::CloseCode};
    let bye = CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    };
    ws.send(tokio_tungstenite::tungstenite::Message::Close(Some(bye)))
        .await
        .unwrap();
    // The answer echoes the code; a dropped connection would give no frame at all.
    assert_eq!(
        close_code(&mut ws).await,
        Some(1000),
        "the server's Close frame"
    );
}

/// `Endpoint::request_to` used to collect Block2 pieces only: a body too large for one
/// message to the client failed. It goes block-wise both ways now, as `Endpoint::send` does.
#[tokio::test]
async fn request_to_a_connected_client_goes_block_wise_both_ways() {
    let (site, mut registered) = common::with_register(Site::new());
    let (server, addr) = common::server_with(EndpointConfig::default(), Some(site)).await;
    let (tx, mut got) = tokio::sync::mpsc::unbounded_channel();
    let client_site = Site::new().resource(
        "/inbox",
        Resource::new()
            .put(move |r: IncomingRequest| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(r.message.payload.clone());
                    Message::new(Code::CHANGED)
                }
            })
            .get(|_r: IncomingRequest| async {
                Message::response(Code::CONTENT, vec![b'z'; 300_000])
            }),
    );
    let client = Endpoint::builder().site(client_site).build();
    let r = client
        .send(coapws::Request::new(Code::POST, &common::uri(addr, "/register")).unwrap())
        .await
        .unwrap();
    assert_eq!(r.code(), Code::CHANGED);
    let remote = registered.recv().await.unwrap();
    let body = bytes::Bytes::from(vec![b'q'; 2_000_000]);
    let mut put = Message::request(Code::PUT, "/inbox");
    put.payload = body.clone();
    let answer = server.request_to(&remote, put).await.unwrap();
    assert_eq!(answer.code(), Code::CHANGED);
    assert_eq!(
        got.recv().await.unwrap(),
        body,
        "the client got the whole body"
    );
    let answer = server
        .request_to(&remote, Message::request(Code::GET, "/inbox"))
        .await
        .unwrap();
    assert_eq!(answer.message.payload.len(), 300_000);
}

/// Handlers could not tell which URI a request was for: `IncomingRequest::target_uri`
/// rebuilds it from the options and the transport (the WebSocket Host as the default host).
#[tokio::test]
async fn an_incoming_request_knows_its_target_uri() {
    let site = Site::new().resource(
        "/where",
        Resource::new().get(|r: IncomingRequest| async move {
            let text = match r.target_uri() {
                Ok(u) => format!("{u} {}", r.target_host()),
                Err(e) => e.to_string(),
            };
            Message::response(Code::CONTENT, text)
        }),
    );
    let (_server, addr) = common::server_with(EndpointConfig::default(), Some(site)).await;
    let client = Endpoint::client();
    let r = client
        .get(&format!("coap+ws://localhost:{}/where?a=1", addr.port()))
        .await
        .unwrap();
    assert_eq!(
        r.message.payload_text(),
        format!("coap+ws://localhost:{}/where?a=1 localhost", addr.port())
    );
    let named = coapws::Request::get(&common::uri(addr, "/where"))
        .unwrap()
        .option(OptionNumber::URI_HOST, "Lamp.Example");
    let r = client.send(named).await.unwrap();
    assert_eq!(
        r.message.payload_text(),
        format!("coap+ws://lamp.example:{}/where lamp.example", addr.port())
    );
}
