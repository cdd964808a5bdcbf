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
