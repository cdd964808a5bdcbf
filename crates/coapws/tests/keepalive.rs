//! Keepalive (RFC 8323 §5.4) over real sockets: a WebSocket client that vanishes without
//! closing (it stops answering) is pinged, dropped, and everything it held ends with it; a
//! client that answers stays; `Remote::ping` measures a round trip over WebSocket and UDP.

mod common;

use coapws::proto::{Code, Message, OptionNumber, Token};
use coapws::rd::{RdConfig, ResourceDirectory};
use coapws::{Endpoint, EndpointConfig, Site};
use common::*;
use std::time::{Duration, Instant};

fn keepalive(ms: u64) -> EndpointConfig {
    EndpointConfig {
        server_keepalive: Some(Duration::from_millis(ms)),
        ..EndpointConfig::default()
    }
}

#[tokio::test]
async fn a_websocket_client_that_stops_answering_is_pinged_then_dropped() {
    let (server, addr) = server_with(keepalive(300), Some(test_site())).await;
    let mut ws = raw(addr).await;
    handshake_csm(&mut ws).await;
    wait_until("the connection is up", || server.connection_count() == 1).await;
    let started = Instant::now();
    // The client says nothing and answers nothing: a Ping, then (no Pong) an Abort.
    let ping = next_coap(&mut ws).await.expect("a Ping");
    assert_eq!(ping.code, Code::PING);
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    let abort = next_coap(&mut ws).await.expect("an Abort");
    assert_eq!(abort.code, Code::ABORT);
    assert!(
        abort.payload_text().contains("No Pong"),
        "{}",
        abort.payload_text()
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(close_code(&mut ws).await, Some(1001));
    // (It waits a little for the close handshake this client never completes.)
    wait_until("the server let it go", || server.connection_count() == 0).await;
}

#[tokio::test]
async fn a_client_that_answers_pings_stays_connected() {
    let (server, addr) = server_with(keepalive(100), Some(test_site())).await;
    let client = Endpoint::client();
    let r = client.get(&uri(addr, "/hello")).await.unwrap();
    assert_eq!(r.code(), Code::CONTENT);
    // Several keepalive rounds of silence: the client's core answers every Ping.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(server.connection_count(), 1, "still connected");
    let again = client.get(&uri(addr, "/hello")).await.unwrap();
    assert_eq!(again.code(), Code::CONTENT);
    assert_eq!(client.pooled_origins(), 1, "the same connection");
}

#[tokio::test]
async fn a_vanished_device_loses_its_registration_to_keepalive() {
    let rd = ResourceDirectory::new(RdConfig::default());
    let (_server, addr) = server_with(keepalive(300), Some(rd.mount(Site::new()))).await;
    let mut ws = raw(addr).await;
    handshake_csm(&mut ws).await;
    let register = Message::request(Code::POST, "/rd")
        .with_option(OptionNumber::URI_QUERY, "ep=ghost")
        .with_option(OptionNumber::URI_QUERY, "base=coap://[::1]")
        .with_payload(&b"</x>"[..])
        .with_uint_option(OptionNumber::CONTENT_FORMAT, 40)
        .with_token(Token::new(vec![7]));
    send_coap(&mut ws, &register).await;
    let created = next_coap(&mut ws).await.expect("an answer");
    assert_eq!(created.code, Code::CREATED);
    assert_eq!(rd.registrations().await.len(), 1);
    // The device's network goes away: it answers nothing from now on (the socket stays open).
    let gone = Instant::now();
    loop {
        if rd.registrations().await.is_empty() {
            break;
        }
        assert!(gone.elapsed() < Duration::from_secs(3), "still registered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(ws);
}

#[tokio::test]
async fn remote_ping_measures_a_round_trip_over_websocket_and_udp() {
    let (server, addr) = server_with(EndpointConfig::default(), Some(test_site())).await;
    let udp = server
        .listen_udp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = Endpoint::client();
    for target in [uri(addr, "/hello"), format!("coap://{udp}/hello")] {
        let r = client.get(&target).await.unwrap();
        let rtt = r.remote.ping(Duration::from_secs(2)).await.unwrap();
        assert!(rtt < Duration::from_secs(1), "{target}: {rtt:?}");
    }
    // Nobody at a UDP port: no answer within the wait.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let quiet = format!("coap://{}/x", dead.local_addr().unwrap());
    let r = coapws::Request::get(&quiet)
        .unwrap()
        .timeout(Duration::from_millis(300));
    let e = client.send(r).await.unwrap_err();
    assert!(matches!(e, coapws::Error::Timeout), "{e}");
}
