//! Client settings a caller chooses per request or per endpoint: the request's token
//! ([`Request::token`]), over WebSocket and UDP, and the typed error when it is in use; a
//! request without the Uri-Host its URI gives ([`Request::omit_uri_host`]); the local address
//! of the client's sockets ([`coapws::EndpointConfig::client_bind`]).

mod common;

use coapws::proto::connection::SendError;
use coapws::proto::udp::UdpSendError;
use coapws::proto::{Code, Message, Token};
use coapws::{Endpoint, Error, IncomingRequest, Request, Resource, Site};
use std::net::SocketAddr;

/// `/token` answers with the token the request came with, `/gate` as in [`common::with_gate`].
fn site() -> (
    Site,
    tokio::sync::mpsc::UnboundedReceiver<tokio::sync::oneshot::Sender<()>>,
) {
    common::with_gate(Site::new().resource(
        "/token",
        Resource::new().get(|r: IncomingRequest| async move {
            Message::response(Code::CONTENT, r.message.token.as_bytes().to_vec())
        }),
    ))
}

async fn servers() -> (
    Endpoint,
    SocketAddr,
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<tokio::sync::oneshot::Sender<()>>,
) {
    let (site, gates) = site();
    let ep = Endpoint::builder().site(site).build();
    let ws = ep.listen_ws("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let udp = ep.listen_udp("127.0.0.1:0".parse().unwrap()).await.unwrap();
    (ep, ws, udp, gates)
}

#[tokio::test]
async fn a_caller_chosen_token_is_what_the_server_sees() {
    let (_server, ws, udp, _gates) = servers().await;
    let client = Endpoint::client();
    for uri in [
        format!("coap+ws://{ws}/token"),
        format!("coap://{udp}/token"),
    ] {
        let token = Token::new(vec![0xca, 0xfe, 0x00, 0x42]);
        // Twice in a row: the token is free again once its answer came.
        for _ in 0..2 {
            let r = client
                .send(Request::get(&uri).unwrap().with_token(token.clone()))
                .await
                .unwrap();
            assert_eq!(&r.payload()[..], token.as_bytes(), "{uri}");
        }
        // Without one, the connection picks a token (not ours).
        let r = client.get(&uri).await.unwrap();
        assert_ne!(&r.payload()[..], token.as_bytes(), "{uri}");
    }
}

#[tokio::test]
async fn a_token_in_use_fails_the_second_request_with_a_typed_error() {
    let (_server, ws, udp, mut gates) = servers().await;
    let client = Endpoint::client();
    let token = Token::new(vec![7, 7, 7]);
    for (uri, reliable) in [
        (format!("coap+ws://{ws}"), true),
        (format!("coap://{udp}"), false),
    ] {
        let first = {
            let (client, uri, token) = (client.clone(), uri.clone(), token.clone());
            tokio::spawn(async move {
                client
                    .send(
                        Request::get(&format!("{uri}/gate"))
                            .unwrap()
                            .with_token(token),
                    )
                    .await
            })
        };
        // The first is being handled (its token outstanding) when the second goes.
        let open = common::entered(&mut gates).await;
        let second = client
            .send(
                Request::get(&format!("{uri}/token"))
                    .unwrap()
                    .with_token(token.clone()),
            )
            .await;
        match (reliable, &second) {
            (true, Err(Error::Send(SendError::TokenInUse(t)))) => assert_eq!(t, &token),
            (false, Err(Error::Datagram(UdpSendError::TokenInUse(t)))) => assert_eq!(t, &token),
            _ => panic!("{uri}: expected TokenInUse, got {second:?}"),
        }
        open.send(()).unwrap();
        let first = first.await.unwrap().unwrap();
        assert_eq!(first.message.payload_text(), "gate", "{uri}");
    }
}

#[test]
fn without_uri_host_the_message_names_no_host_or_port() {
    use coapws::proto::OptionNumber;
    let r = Request::get("coap://device.example:5999/a/b").unwrap();
    let m = r.to_message();
    assert_eq!(
        m.options.get(OptionNumber::URI_HOST).map(|v| &v[..]),
        Some(&b"device.example"[..])
    );
    let m = r.clone().without_uri_host().to_message();
    assert!(!m.options.contains(OptionNumber::URI_HOST), "{m:?}");
    assert!(!m.options.contains(OptionNumber::URI_PORT), "{m:?}");
    assert_eq!(m.options.uri_path_string(), "/a/b");
    // One the caller adds still goes.
    let m = r
        .without_uri_host()
        .option(OptionNumber::URI_HOST, "other.example")
        .to_message();
    assert_eq!(
        m.options.get(OptionNumber::URI_HOST).map(|v| &v[..]),
        Some(&b"other.example"[..])
    );
}

/// A port free on 127.0.0.1 for TCP and UDP right now.
fn free_port() -> u16 {
    for _ in 0..100 {
        let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = t.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
    panic!("no port free for TCP and UDP");
}

#[tokio::test]
async fn client_bind_is_the_source_address_the_server_sees() {
    use coapws::EndpointConfig;
    let peer = Resource::new().get(|r: IncomingRequest| async move {
        Message::response(Code::CONTENT, r.remote.peer_addr().to_string())
    });
    let server = Endpoint::builder()
        .site(Site::new().resource("/peer", peer))
        .build();
    let ws = server
        .listen_ws("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let tcp = server
        .listen_tcp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let udp = server
        .listen_udp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    for connected in [false, true] {
        let local: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let client = Endpoint::builder()
            .config(EndpointConfig {
                client_bind: Some(local),
                udp_connected_clients: connected,
                ..EndpointConfig::default()
            })
            .build();
        for uri in [
            format!("coap+ws://{ws}/peer"),
            format!("coap+tcp://{tcp}/peer"),
            format!("coap://{udp}/peer"),
        ] {
            let r = client.get(&uri).await.unwrap();
            assert_eq!(r.message.payload_text(), local.to_string(), "{uri}");
            assert_eq!(r.remote.local_addr(), local, "{uri}");
        }
        client.shutdown().await;
    }
    // An address without a port: that address, any port; a server of the other family is
    // not reached.
    let client = Endpoint::builder()
        .config(EndpointConfig {
            client_bind: Some("127.0.0.1:0".parse().unwrap()),
            ..EndpointConfig::default()
        })
        .build();
    let r = client.get(&format!("coap://{udp}/peer")).await.unwrap();
    assert!(r.message.payload_text().starts_with("127.0.0.1:"));
    for uri in ["coap://[::1]:5683/peer", "coap+tcp://[::1]:5683/peer"] {
        match client.get(uri).await {
            Err(Error::Connect { .. }) => {}
            other => panic!("{uri}: expected Error::Connect, got {other:?}"),
        }
    }
}
