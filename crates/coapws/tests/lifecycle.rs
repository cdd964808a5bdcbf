//! How an endpoint's connections end, over real loopback sockets: regressions from the
//! hardening issue.

mod common;

use coapws::proto::Code;
use coapws::{Endpoint, Error, Request};
use common::WAIT;
use std::time::{Duration, Instant};

async fn wait_until(mut f: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Regression: a server endpoint dropped without `shutdown()` kept serving on the connections
/// it had accepted (each connection task held a sender of its own command channel).
#[tokio::test]
async fn dropping_a_server_endpoint_ends_its_connections() {
    let (server, addr) = common::server().await;
    let client = Endpoint::client();
    let r = client.get(&common::uri(addr, "/hello")).await.unwrap();
    assert_eq!(r.code(), Code::CONTENT);
    assert_eq!(client.connection_count(), 1);
    drop(server);
    // The server released the connection; the client saw it close.
    wait_until(
        || client.connection_count() == 0,
        "the client's connection closed",
    )
    .await;
    assert!(
        client.get(&common::uri(addr, "/hello")).await.is_err(),
        "nobody serves now"
    );
}

/// Regression: a client endpoint dropped without `shutdown()` left its connections, their
/// tasks and sockets running for ever.
#[tokio::test]
async fn dropping_a_client_endpoint_ends_its_connections() {
    let (server, addr) = common::server().await;
    let client = Endpoint::client();
    client.get(&common::uri(addr, "/hello")).await.unwrap();
    wait_until(|| server.connection_count() == 1, "the server's connection").await;
    drop(client);
    wait_until(|| server.connection_count() == 0, "the server saw it close").await;
}

/// Regression: the request timeout did not cover connecting, so a host that stalls the
/// WebSocket handshake held a request for the whole connect timeout (10 s).
#[tokio::test]
async fn the_request_timeout_covers_connecting() {
    // Accepts TCP connections and never answers the HTTP upgrade.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let client = Endpoint::client();
    let started = Instant::now();
    let r = client
        .send(
            Request::get(&format!("coap+ws://{addr}/x"))
                .unwrap()
                .timeout(Duration::from_millis(300)),
        )
        .await;
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    held.abort();
}

/// Regression: the connection limit did not count handshakes in progress, so any number of
/// peers that connect and then stall (no HTTP request, no TLS hello) got past it.
#[tokio::test]
async fn handshakes_in_progress_count_against_the_connection_limit() {
    use tokio::io::AsyncReadExt;
    let config = coapws::EndpointConfig {
        max_connections: 2,
        ..coapws::EndpointConfig::default()
    };
    let (_server, addr) = common::server_with(config, Some(common::test_site())).await;
    // Two peers that connect and say nothing.
    let _a = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _b = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The third is turned away with 503 at once.
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(WAIT, third.read_to_string(&mut answer))
        .await
        .expect("answered at once")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    // When the stalled ones go, there is room again.
    drop((_a, _b));
    let client = Endpoint::client();
    let deadline = Instant::now() + WAIT;
    loop {
        match client.get(&common::uri(addr, "/hello")).await {
            Ok(r) => break assert_eq!(r.code(), Code::CONTENT),
            Err(e) => assert!(Instant::now() < deadline, "no room again: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Regression: a Release's Hold-Off (RFC 8323 §5.5) was logged and ignored, and the pool
/// reconnected at once. Now requests to that origin fail with `HeldOff` until it has passed,
/// without a connection attempt, and then reconnect.
#[tokio::test]
async fn a_release_hold_off_is_honoured() {
    use coapws::proto::signaling::Signal;
    use coapws::proto::{Message, Token};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = accepts.clone();
    tokio::spawn(async move {
        loop {
            let mut ws = common::raw_server(&listener).await;
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _csm = common::next_coap(&mut ws).await;
            let Some(req) = common::next_coap(&mut ws).await else {
                continue;
            };
            let answer = Message::response(Code::CONTENT, "ok").with_token(req.token);
            common::send_coap(&mut ws, &answer).await;
            // Release, asking for two seconds of peace; then the connection goes.
            let release = Signal::Release {
                alternative_addresses: Vec::new(),
                hold_off: Some(2),
            };
            common::send_coap(&mut ws, &release.to_message(Token::EMPTY)).await;
            while common::next_coap(&mut ws).await.is_some() {}
        }
    });
    let client = Endpoint::client();
    let uri = format!("coap+ws://{addr}/x");
    assert_eq!(client.get(&uri).await.unwrap().code(), Code::CONTENT);
    wait_until(
        || client.connection_count() == 0,
        "the released connection closed",
    )
    .await;
    let started = Instant::now();
    match client.get(&uri).await {
        Err(Error::HeldOff { secs, .. }) => assert!((1..=2).contains(&secs), "{secs}"),
        other => panic!("expected HeldOff: {other:?}"),
    }
    assert_eq!(
        accepts.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "no new attempt"
    );
    // After the Hold-Off: a new connection.
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(started.elapsed())).await;
    let deadline = Instant::now() + WAIT;
    let r = loop {
        match client.get(&uri).await {
            Err(Error::HeldOff { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => break other,
        }
    };
    assert_eq!(r.unwrap().code(), Code::CONTENT);
    assert_eq!(accepts.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// The idle timeout: a connection without requests or responses is released (and leaves
/// the client's pool; the next request opens a new one), but not while a request is
/// pending on it or somebody observes over it.
#[tokio::test]
async fn idle_connections_are_released_but_busy_and_observed_ones_are_not() {
    let idle = coapws::EndpointConfig {
        idle_timeout: Some(Duration::from_millis(300)),
        ..coapws::EndpointConfig::default()
    };
    let (site, mut gates) = common::with_gate(common::test_site());
    let (server, addr) = common::server_with(idle, Some(site)).await;
    let client = Endpoint::client();
    client.get(&common::uri(addr, "/hello")).await.unwrap();
    let released = Instant::now();
    wait_until(
        || server.connection_count() == 0,
        "the idle connection released",
    )
    .await;
    let took = released.elapsed();
    assert!(
        took >= Duration::from_millis(250),
        "released after {took:?}"
    );
    wait_until(
        || client.connection_count() == 0,
        "it left the client's pool",
    )
    .await;
    let r = client.get(&common::uri(addr, "/hello")).await.unwrap();
    assert_eq!(r.code(), Code::CONTENT, "a new connection after it");

    // A request held for a second (three idle timeouts) keeps its connection.
    let pending = tokio::spawn({
        let client = client.clone();
        async move { client.get(&common::uri(addr, "/gate")).await }
    });
    let gate = common::entered(&mut gates).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        server.connection_count(),
        1,
        "kept while a request is pending"
    );
    gate.send(()).unwrap();
    assert_eq!(pending.await.unwrap().unwrap().code(), Code::CONTENT);
    wait_until(|| server.connection_count() == 0, "released once idle").await;

    // An observation keeps it: /time notifies every second, idle time runs out in between.
    let mut time = client
        .observe(Request::get(&common::uri(addr, "/time")).unwrap())
        .await
        .unwrap();
    for _ in 0..3 {
        tokio::time::timeout(WAIT, time.next())
            .await
            .expect("a notification in time")
            .expect("the observation goes on");
    }
    assert_eq!(server.connection_count(), 1, "kept while observed");
}

/// Regression: between the WebSocket upgrade's 101 and the start of its connection, the
/// connection was counted nowhere, so a handshake in that moment got past a full
/// `max_connections`. And regression: two handshakes counted at once both saw the other and
/// were both refused (503 and 503) with no connection up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limit_counts_upgrades_being_started() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (server, addr) = common::server_with(
        coapws::EndpointConfig {
            max_connections: 1,
            ..coapws::EndpointConfig::default()
        },
        Some(common::test_site()),
    )
    .await;
    let head = "GET /.well-known/coap HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
                Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: coap\r\n\r\n";
    let status = |mut s: tokio::net::TcpStream| async move {
        let mut buf = [0u8; 12];
        tokio::time::timeout(WAIT, s.read_exact(&mut buf))
            .await
            .expect("an answer in time")
            .expect("12 bytes of status line");
        (String::from_utf8_lossy(&buf[9..12]).into_owned(), s)
    };
    for round in 0..100 {
        let mut first = tokio::net::TcpStream::connect(addr).await.unwrap();
        first.write_all(head.as_bytes()).await.unwrap();
        // At once, while the first one is in its handshake or its connection is starting.
        let mut second = tokio::net::TcpStream::connect(addr).await.unwrap();
        second.write_all(head.as_bytes()).await.unwrap();
        let ((a, first), (b, second)) = tokio::join!(status(first), status(second));
        let mut codes = [a.clone(), b.clone()];
        codes.sort();
        assert_eq!(
            codes,
            ["101".to_owned(), "503".to_owned()],
            "round {round}: one connection, one refusal (got {a} and {b})"
        );
        // The upgraded one starts its connection (until then it still counts), then ends.
        wait_until(|| server.connection_count() == 1, "the connection up").await;
        drop((first, second));
        wait_until(|| server.connection_count() == 0, "the connection closed").await;
    }
}

/// Regression: `shutdown()` aborted the UDP socket tasks at once, so a request whose handler
/// was still running never got its answer. Now the socket drains: the running request is
/// answered, a new one meanwhile gets 5.03, and shutdown returns once that is done.
#[tokio::test]
async fn shutdown_lets_running_udp_requests_finish() {
    let (site, mut gates) = common::with_gate(common::test_site());
    let server = Endpoint::builder().site(site).build();
    let addr = server
        .listen_udp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = Endpoint::client();
    let running = tokio::spawn({
        let client = client.clone();
        async move { client.get(&format!("coap://{addr}/gate")).await }
    });
    let gate = common::entered(&mut gates).await;
    let shutting = tokio::spawn({
        let server = server.clone();
        async move {
            let started = Instant::now();
            server.shutdown().await;
            started.elapsed()
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !shutting.is_finished(),
        "shutdown waits for the running request"
    );
    let late = client
        .get(&format!("coap://{addr}/hello"))
        .await
        .expect("an answer while draining");
    assert_eq!(
        late.code(),
        Code::SERVICE_UNAVAILABLE,
        "new requests are refused"
    );
    gate.send(()).unwrap();
    let answered = tokio::time::timeout(WAIT, running).await.unwrap().unwrap();
    assert_eq!(
        answered.unwrap().code(),
        Code::CONTENT,
        "the running one is answered"
    );
    let took = tokio::time::timeout(WAIT, shutting).await.unwrap().unwrap();
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
}
