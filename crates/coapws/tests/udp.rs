//! CoAP over UDP over real loopback sockets: requests both ways, NON, Reset, timeouts, and a
//! lossy relay written for the test that drops and duplicates datagrams on a fixed seed.

mod common;

use coapws::proto::udp::UdpConfig;
use coapws::proto::{Code, Message};
use coapws::{Endpoint, EndpointConfig, Error, IncomingRequest, Request, Resource, Site};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;

/// Short RFC 7252 timers so that loss is recovered from in test time.
fn fast() -> EndpointConfig {
    EndpointConfig {
        udp: UdpConfig {
            ack_timeout: Duration::from_millis(100),
            non_request_timeout: Duration::from_millis(800),
            ..UdpConfig::default()
        },
        ..EndpointConfig::default()
    }
}

async fn udp_server(site: Site, config: EndpointConfig) -> (Endpoint, SocketAddr) {
    let ep = Endpoint::builder().config(config).site(site).build();
    let addr = ep.listen_udp("127.0.0.1:0".parse().unwrap()).await.unwrap();
    (ep, addr)
}

#[tokio::test]
async fn con_and_non_requests() {
    let (_s, addr) = udp_server(common::test_site(), fast()).await;
    let client = Endpoint::client();
    let r = client.get(&format!("coap://{addr}/hello")).await.unwrap();
    assert_eq!(r.message.payload_text(), "Hello, CoAP over WebSockets!");
    let r = client
        .send(Request::get(&format!("coap://{addr}/hello")).unwrap().non())
        .await
        .unwrap();
    assert_eq!(r.code(), Code::CONTENT);
    // slower than the empty-ACK delay: separate response
    let r = client.get(&format!("coap://{addr}/slow")).await.unwrap();
    assert_eq!(r.message.payload_text(), "slow");
    // larger than a datagram: the server answers block-wise, the client reassembles
    let r = client.get(&format!("coap://{addr}/big")).await.unwrap();
    assert_eq!(r.payload().len(), 100 * 1024);
    assert_eq!(
        client
            .get(&format!("coap://{addr}/nope"))
            .await
            .unwrap()
            .code(),
        Code::NOT_FOUND
    );
    // a body too large for one datagram goes up in Block1 pieces, and the echo comes back
    // in Block2 pieces (RFC 7959 §3.2: one POST, both directions block-wise)
    let body: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let r = client
        .send(
            Request::new(Code::POST, &format!("coap://{addr}/echo"))
                .unwrap()
                .payload(body.clone()),
        )
        .await
        .unwrap();
    assert_eq!(r.code(), Code::CHANGED);
    assert_eq!(&r.payload()[..], &body[..]);
}

#[tokio::test]
async fn role_reversal_over_udp() {
    let (_s, addr) = udp_server(common::test_site(), fast()).await;
    let client = Endpoint::builder()
        .site(Site::new().resource(
            "/whoami",
            Resource::new().get(|r: IncomingRequest| async move {
                Message::response(
                    Code::CONTENT,
                    format!("udp client, uri {}", r.remote.uri().unwrap()),
                )
            }),
        ))
        .build();
    let r = client
        .get(&format!("coap://{addr}/ask-back"))
        .await
        .unwrap();
    assert_eq!(r.code(), Code::CONTENT, "{}", r.message.payload_text());
    assert_eq!(
        r.message.payload_text(),
        format!("udp client, uri coap://{addr}/")
    );
}

#[tokio::test]
async fn reset_and_timeout_are_typed_errors() {
    // A peer that answers every CON with RST.
    let raw = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let raddr = raw.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = raw.recv_from(&mut buf).await {
            if n >= 4 {
                let _ = raw.send_to(&[0x70, 0x00, buf[2], buf[3]], from).await;
            }
        }
    });
    let client = Endpoint::builder().config(fast()).build();
    let err = client.get(&format!("coap://{raddr}/x")).await.unwrap_err();
    assert!(matches!(err, Error::Reset), "{err:?}");

    // Nobody there: CON retransmitted with doubling timeouts, then a timeout from the message
    // layer (after 100 ms × 31 × [1, 1.5]), long before the request's own hour.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let saddr = silent.local_addr().unwrap();
    let mut seen: Vec<(std::time::Instant, Vec<u8>)> = Vec::new();
    let started = std::time::Instant::now();
    let request = client.send(
        Request::get(&format!("coap://{saddr}/x"))
            .unwrap()
            .timeout(Duration::from_secs(3600)),
    );
    tokio::pin!(request);
    let mut buf = [0u8; 1500];
    let err = loop {
        tokio::select! {
            r = &mut request => break r.unwrap_err(),
            r = silent.recv_from(&mut buf) => {
                let (n, _) = r.unwrap();
                seen.push((std::time::Instant::now(), buf[..n].to_vec()));
            }
        }
    };
    assert!(matches!(err, Error::Timeout), "{err:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(3100),
        "gave up after {took:?}, before 100 ms × 31"
    );
    // Datagrams already sent are in the socket's buffer (loopback): drain them, no waiting.
    while let Ok((n, _)) = silent.try_recv_from(&mut buf) {
        seen.push((std::time::Instant::now(), buf[..n].to_vec()));
    }
    assert_eq!(seen.len(), 5, "1 transmission + 4 retransmissions");
    assert!(
        seen.windows(2).all(|w| w[0].1 == w[1].1),
        "retransmissions are identical"
    );
    // Each timeout at least doubles the previous (the first at least 100 ms); 90 % for the
    // jitter of receiving.
    for (i, w) in seen.windows(2).enumerate() {
        let gap = w[1].0 - w[0].0;
        let least = Duration::from_millis(100 << i) * 9 / 10;
        assert!(
            gap >= least,
            "retransmission {}: after {gap:?}, expected at least {least:?}",
            i + 1
        );
    }
}

/// Dropping a request future cancels it on the UDP socket task (exchange.rs `SendOnDrop`,
/// transport/udp.rs `UdpCommand::Cancel`), seen from a silent raw peer: no retransmission of
/// the dropped Confirmable request comes, and a late Confirmable response to it is answered
/// with Reset (RFC 7252 §4.2: nobody waits for it) instead of being acknowledged. After the
/// drop, a second (Non-confirmable) request goes to the same peer through the same task's
/// queue: when it arrives, the cancel has been handled.
#[tokio::test]
async fn a_dropped_request_is_cancelled_on_the_udp_socket() {
    use coapws::proto::codec::udp::{self as udp_codec, MessageType, UdpHeader};
    const ACK_TIMEOUT: Duration = Duration::from_millis(300);
    let decode = |b: &[u8]| {
        udp_codec::decode(&bytes::Bytes::copy_from_slice(b), &Default::default())
            .expect("valid CoAP")
    };
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let saddr = silent.local_addr().unwrap();
    let config = EndpointConfig {
        udp: UdpConfig {
            ack_timeout: ACK_TIMEOUT,
            ..UdpConfig::default()
        },
        ..EndpointConfig::default()
    };
    let client = Endpoint::builder().config(config).build();
    let mut buf = [0u8; 1500];
    let first_uri = format!("coap://{saddr}/first");
    let mut first = Box::pin(client.get(&first_uri));
    let (h1, m1, from) = tokio::select! {
        r = &mut first => panic!("the first request ended: {:?}", r.map(|r| r.code())),
        r = silent.recv_from(&mut buf) => {
            let (n, from) = r.unwrap();
            let (h, m) = decode(&buf[..n]);
            (h, m, from)
        }
    };
    assert_eq!(h1.mtype, MessageType::Confirmable);
    assert_eq!(m1.options.uri_path(), ["first"]);
    drop(first);

    let second = tokio::spawn({
        let client = client.clone();
        let u = format!("coap://{saddr}/second");
        async move { client.send(Request::get(&u).unwrap().non()).await }
    });
    let mut retransmissions = 0;
    let mut note = |h: &UdpHeader| {
        if h.message_id == h1.message_id {
            retransmissions += 1;
        }
    };
    let (h2, m2) = loop {
        let (n, _) = tokio::time::timeout(common::WAIT, silent.recv_from(&mut buf))
            .await
            .expect("the second request")
            .unwrap();
        let (h, m) = decode(&buf[..n]);
        note(&h);
        if m.options.uri_path() == ["second"] {
            break (h, m);
        }
    };
    // Over several retransmission timeouts (0.3–0.45 s, then 0.9–1.35 s after the first
    // transmission) nothing more of the first request comes. A slow machine only makes
    // this window more lenient.
    let window = ACK_TIMEOUT * 5;
    while let Ok(r) = tokio::time::timeout(window, silent.recv_from(&mut buf)).await {
        let (n, _) = r.unwrap();
        note(&decode(&buf[..n]).0);
    }
    assert_eq!(
        retransmissions, 0,
        "the dropped Confirmable request was retransmitted"
    );
    // A late Confirmable 2.05 to the dropped request: Reset.
    let late = UdpHeader {
        mtype: MessageType::Confirmable,
        message_id: 0x7777,
    };
    let m = Message::response(Code::CONTENT, "late").with_token(m1.token.clone());
    silent
        .send_to(&udp_codec::encode(&late, &m).unwrap(), from)
        .await
        .unwrap();
    let (n, _) = tokio::time::timeout(common::WAIT, silent.recv_from(&mut buf))
        .await
        .expect("an answer to the late response")
        .unwrap();
    let (h, m) = decode(&buf[..n]);
    assert_eq!(
        (h.mtype, h.message_id, m.code),
        (MessageType::Reset, 0x7777, Code::EMPTY),
        "the late response to the dropped request is refused with Reset"
    );
    // Answer the second request; it completes.
    let answer = UdpHeader {
        mtype: MessageType::NonConfirmable,
        message_id: h2.message_id.wrapping_add(1),
    };
    let m = Message::response(Code::CONTENT, "second").with_token(m2.token.clone());
    silent
        .send_to(&udp_codec::encode(&answer, &m).unwrap(), from)
        .await
        .unwrap();
    let r = tokio::time::timeout(common::WAIT, second)
        .await
        .expect("no hang")
        .unwrap()
        .unwrap();
    assert_eq!(r.message.payload_text(), "second");
}

/// Forwards datagrams between one client and a server, dropping and duplicating them on a
/// fixed seed. Returns the address clients should use.
async fn lossy_relay(server: SocketAddr, loss: u32, dup: u32, seed: u64) -> SocketAddr {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = front.local_addr().unwrap();
    let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    let rng = Arc::new(Mutex::new(seed | 1));
    // xorshift64: percent draws on a fixed seed
    let draw = move |rng: &Mutex<u64>| {
        let mut s = rng.lock().unwrap();
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        (*s % 100) as u32
    };
    let (f, b, c, r) = (front.clone(), back.clone(), client.clone(), rng.clone());
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = f.recv_from(&mut buf).await {
            *c.lock().unwrap() = Some(from);
            if draw(&r) < loss {
                continue;
            }
            let copies = if draw(&r) < dup { 2 } else { 1 };
            for _ in 0..copies {
                let _ = b.send_to(&buf[..n], server).await;
            }
        }
    });
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, _)) = back.recv_from(&mut buf).await {
            let Some(to) = *client.lock().unwrap() else {
                continue;
            };
            if draw(&rng) < loss {
                continue;
            }
            let copies = if draw(&rng) < dup { 2 } else { 1 };
            for _ in 0..copies {
                let _ = front.send_to(&buf[..n], to).await;
            }
        }
    });
    addr
}

#[tokio::test]
async fn lossy_link_every_request_once() {
    let runs: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let counted = runs.clone();
    let site = Site::new().resource(
        "/count",
        Resource::new().post(move |r: IncomingRequest| {
            let runs = counted.clone();
            async move {
                let id = r.message.payload_text().into_owned();
                *runs.lock().unwrap().entry(id.clone()).or_default() += 1;
                Message::response(Code::CHANGED, id)
            }
        }),
    );
    let (_server, addr) = udp_server(site, fast()).await;
    for (seed, loss, dup) in [(7u64, 20u32, 20u32), (1234, 35, 10), (99, 10, 40)] {
        let relay = lossy_relay(addr, loss, dup, seed).await;
        // NSTART above 1 keeps the run short; exactly-once does not depend on it.
        let mut config = fast();
        config.udp.nstart = 8;
        let client = Endpoint::builder().config(config).build();
        let uri = format!("coap://{relay}/count");
        let n = 40;
        let all = futures_util::future::join_all((0..n).map(|i| {
            let client = client.clone();
            let uri = uri.clone();
            async move {
                let id = format!("{seed}-{i}");
                let r = client
                    .send(Request::new(Code::POST, &uri).unwrap().payload(id.clone()))
                    .await;
                (id, r)
            }
        }));
        let results = tokio::time::timeout(Duration::from_secs(20), all)
            .await
            .expect("no request hangs");
        let mut ok = 0;
        for (id, r) in &results {
            match r {
                Ok(resp) => {
                    assert_eq!(
                        resp.message.payload_text(),
                        *id,
                        "the response belongs to its request"
                    );
                    ok += 1;
                }
                Err(Error::Timeout) => {}
                Err(other) => panic!("{id}: unexpected {other:?}"),
            }
        }
        let runs = runs.lock().unwrap();
        for (id, _) in &results {
            assert!(
                runs.get(id).copied().unwrap_or(0) <= 1,
                "{id}: handler ran more than once"
            );
        }
        for (id, r) in &results {
            if r.is_ok() {
                assert_eq!(
                    runs.get(id),
                    Some(&1),
                    "{id} answered without its handler running"
                );
            }
        }
        // With up to 35 % loss each way and 5 transmissions, nearly all get through.
        assert!(ok >= n * 8 / 10, "seed {seed}: only {ok}/{n} completed");
    }
}

#[tokio::test]
async fn dropping_an_endpoint_stops_its_listeners() {
    let ep = Endpoint::builder().site(common::test_site()).build();
    let udp = ep.listen_udp("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let ws = ep.listen_ws("127.0.0.1:0".parse().unwrap()).await.unwrap();
    drop(ep);
    // both ports are free again, once the tasks noticed (bounded; they are ours to rebind)
    let deadline = tokio::time::Instant::now() + common::WAIT;
    let (u, t) = loop {
        let (u, t) = (
            UdpSocket::bind(udp).await,
            tokio::net::TcpListener::bind(ws).await,
        );
        if (u.is_ok() && t.is_ok()) || tokio::time::Instant::now() > deadline {
            break (u, t);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    u.expect("UDP port released");
    t.expect("TCP port released");
}

#[tokio::test]
async fn upload_memory_is_bounded() {
    let mut config = fast();
    config.upload_memory = 3000;
    let (_s, addr) = udp_server(common::test_site(), config).await;
    let client = Endpoint::builder().config(fast()).build();
    let r = client
        .send(
            Request::new(Code::POST, &format!("coap://{addr}/echo"))
                .unwrap()
                .payload(vec![7u8; 5000]),
        )
        .await
        .unwrap();
    assert_eq!(
        r.code(),
        Code::SERVICE_UNAVAILABLE,
        "{}",
        r.message.payload_text()
    );
    // within the budget it works
    let r = client
        .send(
            Request::new(Code::POST, &format!("coap://{addr}/echo"))
                .unwrap()
                .payload(vec![7u8; 2500]),
        )
        .await
        .unwrap();
    assert_eq!(r.payload().len(), 2500);
}

/// A handler that panics is answered 5.00 over UDP too (the socket task's `SendOnDrop`), and
/// the socket keeps serving.
#[tokio::test]
async fn panicking_handler_gets_5_00_over_udp() {
    let (_s, addr) = udp_server(common::test_site(), fast()).await;
    let client = Endpoint::builder().config(fast()).build();
    for _ in 0..2 {
        let r = tokio::time::timeout(common::WAIT, client.get(&format!("coap://{addr}/panic")))
            .await
            .expect("answered, not left to time out")
            .unwrap();
        assert_eq!(r.code(), Code::INTERNAL_SERVER_ERROR);
        assert_eq!(r.message.payload_text(), "handler failed");
    }
    let r = client.get(&format!("coap://{addr}/hello")).await.unwrap();
    assert_eq!(r.code(), Code::CONTENT);
}
