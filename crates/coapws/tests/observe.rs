//! Observe (RFC 7641, RFC 8323 appendix A) over real loopback sockets, on coap+ws, coap+tcp
//! and coap: registration and notifications rendered per observer, every way an observation
//! ends on either side, re-registration, limits, block-wise notifications, and the UDP
//! specifics (Reset, vanished observers, reordering) with raw peers written for the test.

mod common;

use bytes::Bytes;
use coapws::proto::codec::udp::{self as wire, MessageType, UdpHeader};
use coapws::proto::udp::UdpConfig;
use coapws::proto::{Code, DecodeLimits, Message, OptionNumber, Token};
use coapws::{
    Endpoint, EndpointConfig, IncomingRequest, Observable, ObserveEnd, Request, Resource, Site,
};
use common::WAIT;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;
use tokio::net::UdpSocket;

/// The state behind the observable resources of the test site.
#[derive(Default)]
struct State {
    value: AtomicU32,
    gone: AtomicBool,
    /// GET requests that carried Observe 0.
    registrations: AtomicU32,
}

struct Fixture {
    server: Endpoint,
    state: Arc<State>,
    obs: Observable,
    ws: SocketAddr,
    tcp: SocketAddr,
    udp: SocketAddr,
}

impl Fixture {
    fn uri(&self, scheme: &str, path: &str) -> String {
        let addr = match scheme {
            "coap+ws" => self.ws,
            "coap+tcp" => self.tcp,
            _ => self.udp,
        };
        format!("{scheme}://{addr}{path}")
    }
    /// Changes the state and signals it.
    fn change(&self) {
        self.state.value.fetch_add(1, Ordering::SeqCst);
        self.obs.notify();
    }
    async fn observers_become(&self, n: usize) {
        wait_until(|| self.server.observer_count() == n, "observer count").await;
    }
    /// Waits until every observer is gone after the client dropped its observations. Over UDP
    /// the server learns it from the Reset to the next notification, so changes keep coming.
    async fn observers_dropped(&self, scheme: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.server.observer_count() != 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{scheme}: still observed"
            );
            if scheme == "coap" {
                self.change();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

const SCHEMES: [&str; 3] = ["coap+ws", "coap+tcp", "coap"];

async fn wait_until(mut f: impl FnMut() -> bool, what: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn site(state: Arc<State>, obs: &Observable) -> Site {
    let s = state.clone();
    let big = state.clone();
    Site::new()
        .resource(
            "/obs",
            Resource::new()
                .get(move |req: IncomingRequest| {
                    let s = s.clone();
                    async move {
                        if req.is_observe_registration() {
                            s.registrations.fetch_add(1, Ordering::SeqCst);
                        }
                        if s.gone.load(Ordering::SeqCst) {
                            return Message::response(Code::NOT_FOUND, "gone");
                        }
                        // Rendered for this observer's own request: its query and Accept.
                        if req.message.options.accept().is_some_and(|a| a != 0) {
                            return Message::new(Code::NOT_ACCEPTABLE);
                        }
                        let v = s.value.load(Ordering::SeqCst);
                        let q = req.query().join("&");
                        Message::response(Code::CONTENT, format!("v={v} q={q}"))
                    }
                })
                .observable(obs),
        )
        .resource(
            "/big",
            Resource::new()
                .get(move |_req: IncomingRequest| {
                    let s = big.clone();
                    async move {
                        let v = s.value.load(Ordering::SeqCst);
                        let body: Vec<u8> = format!("{v:04}").bytes().cycle().take(3000).collect();
                        Message::response(Code::CONTENT, body)
                    }
                })
                .observable(obs),
        )
}

async fn fixture_with(config: EndpointConfig) -> Fixture {
    let state = Arc::new(State::default());
    let obs = Observable::new();
    let server = Endpoint::builder()
        .config(config)
        .site(site(state.clone(), &obs))
        .build();
    let any = "127.0.0.1:0".parse().unwrap();
    let ws = server.listen_ws(any).await.unwrap();
    let tcp = server.listen_tcp(any).await.unwrap();
    let udp = server.listen_udp(any).await.unwrap();
    Fixture {
        server,
        state,
        obs,
        ws,
        tcp,
        udp,
    }
}

async fn fixture() -> Fixture {
    fixture_with(EndpointConfig::default()).await
}

async fn next(o: &mut coapws::Observation) -> Result<coapws::Response, ObserveEnd> {
    tokio::time::timeout(WAIT, o.next())
        .await
        .expect("notification in time")
}

fn observe(uri: &str) -> Request {
    Request::get(uri).unwrap()
}

#[tokio::test]
async fn register_three_notifications_then_deregister_with_observe_1() {
    let f = fixture().await;
    for scheme in SCHEMES {
        let client = Endpoint::client();
        let mut o = client
            .observe(observe(&f.uri(scheme, "/obs?who=a")))
            .await
            .unwrap();
        let first = next(&mut o).await.unwrap();
        let v0 = f.state.value.load(Ordering::SeqCst);
        assert_eq!(
            first.message.payload_text(),
            format!("v={v0} q=who=a"),
            "{scheme}"
        );
        assert!(
            first.message.options.observe().is_some(),
            "{scheme}: registered"
        );
        f.observers_become(1).await;
        let mut seen = Vec::new();
        for i in 1..=3 {
            f.change();
            let n = next(&mut o).await.unwrap();
            assert_eq!(n.code(), Code::CONTENT);
            assert_eq!(n.message.payload_text(), format!("v={} q=who=a", v0 + i));
            seen.push(
                n.message
                    .options
                    .observe()
                    .expect("notifications carry Observe"),
            );
        }
        // Sequence numbers increase (RFC 7641 §4.4).
        assert!(seen.windows(2).all(|w| w[1] > w[0]), "{scheme}: {seen:?}");
        let answer = tokio::time::timeout(WAIT, o.cancel())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(answer.code(), Code::CONTENT, "{scheme}");
        assert!(
            answer.message.options.observe().is_none(),
            "{scheme}: the answer to Observe 1 is no notification"
        );
        f.observers_become(0).await;
        client.shutdown().await;
    }
}

#[tokio::test]
async fn each_observer_gets_its_own_rendering() {
    let f = fixture().await;
    for scheme in SCHEMES {
        let client = Endpoint::client();
        let mut a = client
            .observe(observe(&f.uri(scheme, "/obs?who=a")))
            .await
            .unwrap();
        let mut b = client
            .observe(observe(&f.uri(scheme, "/obs?who=b")))
            .await
            .unwrap();
        next(&mut a).await.unwrap();
        next(&mut b).await.unwrap();
        f.observers_become(2).await;
        f.change();
        let v = f.state.value.load(Ordering::SeqCst);
        assert_eq!(
            next(&mut a).await.unwrap().message.payload_text(),
            format!("v={v} q=who=a")
        );
        assert_eq!(
            next(&mut b).await.unwrap().message.payload_text(),
            format!("v={v} q=who=b")
        );
        drop((a, b));
        f.observers_dropped(scheme).await;
        client.shutdown().await;
    }
}

#[tokio::test]
async fn dropping_the_observation_deregisters() {
    let f = fixture().await;
    for scheme in SCHEMES {
        let client = Endpoint::client();
        let mut o = client
            .observe(observe(&f.uri(scheme, "/obs")))
            .await
            .unwrap();
        next(&mut o).await.unwrap();
        f.observers_become(1).await;
        drop(o);
        // Reliable transports deregister with Observe 1 at once; over UDP the next
        // notification is answered with Reset.
        f.observers_dropped(scheme).await;
        // The client's connection stays usable.
        let r = client.get(&f.uri(scheme, "/obs")).await.unwrap();
        assert_eq!(r.code(), Code::CONTENT);
        client.shutdown().await;
    }
}

#[tokio::test]
async fn a_4_04_notification_ends_the_observation() {
    for scheme in SCHEMES {
        let f = fixture().await;
        let client = Endpoint::client();
        let mut o = client
            .observe(observe(&f.uri(scheme, "/obs")))
            .await
            .unwrap();
        next(&mut o).await.unwrap();
        f.observers_become(1).await;
        f.state.gone.store(true, Ordering::SeqCst);
        f.obs.notify();
        match next(&mut o).await {
            Err(ObserveEnd::Ended(r)) => {
                assert_eq!(r.code(), Code::NOT_FOUND, "{scheme}");
                assert_eq!(r.message.payload_text(), "gone");
            }
            other => panic!("{scheme}: {other:?}"),
        }
        // The ending is sticky, and the server forgot the observer.
        assert!(matches!(next(&mut o).await, Err(ObserveEnd::Ended(_))));
        f.observers_become(0).await;
        client.shutdown().await;
    }
}

#[tokio::test]
async fn losing_the_connection_ends_it_on_both_sides() {
    for scheme in ["coap+ws", "coap+tcp"] {
        // Client side goes away: the server drops the observer at once.
        let f = fixture().await;
        let client = Endpoint::client();
        let mut o = client
            .observe(observe(&f.uri(scheme, "/obs")))
            .await
            .unwrap();
        next(&mut o).await.unwrap();
        f.observers_become(1).await;
        client.shutdown().await;
        f.observers_become(0).await;
        assert!(
            matches!(next(&mut o).await, Err(ObserveEnd::ConnectionLost(_))),
            "{scheme}"
        );

        // Server side goes away: the client's observation ends with the connection.
        let client = Endpoint::client();
        let mut o = client
            .observe(observe(&f.uri(scheme, "/obs")))
            .await
            .unwrap();
        next(&mut o).await.unwrap();
        f.server.shutdown().await;
        match next(&mut o).await {
            Err(ObserveEnd::ConnectionLost(e)) => assert!(e.is_connection_closed(), "{e}"),
            other => panic!("{scheme}: {other:?}"),
        }
        client.shutdown().await;
    }
}

#[tokio::test]
async fn a_resource_that_is_not_observable_answers_once() {
    let f = fixture().await;
    let plain = Endpoint::builder()
        .site(
            Site::new().resource(
                "/plain",
                Resource::new()
                    .get(|_r: IncomingRequest| async { Message::response(Code::CONTENT, "once") }),
            ),
        )
        .build();
    let addr = plain
        .listen_ws("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = Endpoint::client();
    let mut o = client
        .observe(observe(&format!("coap+ws://{addr}/plain")))
        .await
        .unwrap();
    match next(&mut o).await {
        Err(ObserveEnd::Deregistered(r)) => assert_eq!(r.message.payload_text(), "once"),
        other => panic!("{other:?}"),
    }
    // Accept that the resource cannot satisfy: 4.06, and no observation either.
    let mut o = client
        .observe(observe(&f.uri("coap+ws", "/obs")).accept(50))
        .await
        .unwrap();
    assert!(
        matches!(next(&mut o).await, Err(ObserveEnd::Ended(r)) if r.code() == Code::NOT_ACCEPTABLE)
    );
    assert_eq!(f.server.observer_count(), 0);
    client.shutdown().await;
}

#[tokio::test]
async fn observers_beyond_the_limit_get_an_answer_without_observe() {
    let config = EndpointConfig {
        max_observers_per_connection: 1,
        ..EndpointConfig::default()
    };
    let f = fixture_with(config).await;
    for scheme in SCHEMES {
        let client = Endpoint::client();
        let mut a = client
            .observe(observe(&f.uri(scheme, "/obs?n=1")))
            .await
            .unwrap();
        next(&mut a).await.unwrap();
        let mut b = client
            .observe(observe(&f.uri(scheme, "/obs?n=2")))
            .await
            .unwrap();
        match next(&mut b).await {
            Err(ObserveEnd::Deregistered(r)) => {
                assert!(r.message.payload_text().ends_with("q=n=2"), "{scheme}");
                assert!(r.message.options.observe().is_none());
            }
            other => panic!("{scheme}: {other:?}"),
        }
        assert_eq!(f.server.observer_count(), 1);
        // The first one still works.
        f.change();
        assert!(next(&mut a).await.is_ok());
        drop(a);
        f.observers_dropped(scheme).await;
        client.shutdown().await;
    }
}

#[tokio::test]
async fn large_notifications_come_block_wise() {
    let f = fixture().await;
    // Over UDP a 3000-byte notification cannot be one datagram.
    let client = Endpoint::client();
    let mut o = client
        .observe(observe(&f.uri("coap", "/big")))
        .await
        .unwrap();
    let first = next(&mut o).await.unwrap();
    assert_eq!(first.message.payload.len(), 3000);
    assert!(first.message.options.block2().is_none(), "reassembled");
    for _ in 0..3 {
        f.change();
        let n = next(&mut o).await.unwrap();
        let v = f.state.value.load(Ordering::SeqCst);
        assert_eq!(n.message.payload.len(), 3000);
        assert!(n.message.payload.starts_with(format!("{v:04}").as_bytes()));
    }
    client.shutdown().await;
}

#[tokio::test]
async fn max_age_lapsing_re_registers_with_the_same_token() {
    // /time-like resource with Max-Age 1 that never notifies by itself.
    let registrations = Arc::new(AtomicU32::new(0));
    let r = registrations.clone();
    let obs = Observable::new();
    let server = Endpoint::builder()
        .site(
            Site::new().resource(
                "/stale",
                Resource::new()
                    .get(move |req: IncomingRequest| {
                        let n = if req.is_observe_registration() {
                            r.fetch_add(1, Ordering::SeqCst) + 1
                        } else {
                            0
                        };
                        async move {
                            Message::response(Code::CONTENT, format!("registration {n}"))
                                .with_uint_option(OptionNumber::MAX_AGE, 1)
                        }
                    })
                    .observable(&obs),
            ),
        )
        .build();
    let addr = server
        .listen_ws("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = Endpoint::builder()
        .config(EndpointConfig {
            observe_max_age_grace: Duration::from_millis(200),
            ..EndpointConfig::default()
        })
        .build();
    let mut o = client
        .observe(observe(&format!("coap+ws://{addr}/stale")))
        .await
        .unwrap();
    assert_eq!(
        next(&mut o).await.unwrap().message.payload_text(),
        "registration 1"
    );
    // Nothing comes within Max-Age: the client asks again, and the server replaces the entry.
    assert_eq!(
        next(&mut o).await.unwrap().message.payload_text(),
        "registration 2"
    );
    assert_eq!(server.observer_count(), 1, "replaced, not duplicated");
    obs.notify();
    assert_eq!(
        next(&mut o).await.unwrap().message.payload_text(),
        "registration 0"
    );
    client.shutdown().await;
}

// ---- raw peers: exact tokens and message types ----

#[tokio::test]
async fn re_registration_with_the_same_token_does_not_duplicate_notifications() {
    let f = fixture().await;
    // WebSocket: register token 7 twice.
    let mut ws = common::raw(f.ws).await;
    common::handshake_csm(&mut ws).await;
    let reg = || common::get("/obs", 7).with_uint_option(OptionNumber::OBSERVE, 0);
    for _ in 0..2 {
        common::send_coap(&mut ws, &reg()).await;
        let r = common::next_coap(&mut ws).await.unwrap();
        assert_eq!(r.code, Code::CONTENT);
        assert!(r.options.observe().is_some());
    }
    assert_eq!(f.server.observer_count(), 1);
    // One change, then a deregistration as a marker: exactly one notification lies between.
    f.change();
    let n = common::next_coap(&mut ws).await.unwrap();
    assert!(n.options.observe().is_some());
    common::send_coap(
        &mut ws,
        &common::get("/obs", 7).with_uint_option(OptionNumber::OBSERVE, 1),
    )
    .await;
    let answer = common::next_coap(&mut ws).await.unwrap();
    assert!(
        answer.options.observe().is_none(),
        "a second notification came: {answer:?}"
    );
    f.observers_become(0).await;

    // UDP: the same with a raw socket.
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for mid in [1, 2] {
        send_udp(&peer, f.udp, MessageType::Confirmable, mid, &reg()).await;
        let (h, r) = recv_udp(&peer).await;
        assert_eq!(
            (h.mtype, r.code),
            (MessageType::Acknowledgement, Code::CONTENT)
        );
    }
    assert_eq!(f.server.observer_count(), 1);
    f.change();
    let (_, n) = recv_udp(&peer).await;
    assert!(n.options.observe().is_some());
    let dereg = common::get("/obs", 7).with_uint_option(OptionNumber::OBSERVE, 1);
    send_udp(&peer, f.udp, MessageType::Confirmable, 3, &dereg).await;
    let (h, m) = recv_udp(&peer).await;
    assert!(
        h.mtype == MessageType::Acknowledgement && h.message_id == 3,
        "a second notification came: {m:?}"
    );
    assert!(m.options.observe().is_none());
    f.observers_become(0).await;
}

#[tokio::test]
async fn a_reset_to_a_notification_deregisters_over_udp() {
    let f = fixture().await;
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let reg = common::get("/obs", 9).with_uint_option(OptionNumber::OBSERVE, 0);
    send_udp(&peer, f.udp, MessageType::Confirmable, 1, &reg).await;
    recv_udp(&peer).await;
    f.observers_become(1).await;
    f.change();
    let (h, n) = recv_udp(&peer).await;
    assert!(n.options.observe().is_some());
    assert_eq!(n.token, Token::new(vec![9]));
    let rst = Bytes::copy_from_slice(&[0x70, 0, (h.message_id >> 8) as u8, h.message_id as u8]);
    peer.send_to(&rst, f.udp).await.unwrap();
    f.observers_become(0).await;
}

#[tokio::test]
async fn an_observer_that_vanishes_over_udp_is_dropped_when_its_con_notification_times_out() {
    let config = EndpointConfig {
        udp: UdpConfig {
            ack_timeout: Duration::from_millis(50),
            max_retransmit: 2,
            ..UdpConfig::default()
        },
        observe_con_every: 2,
        ..EndpointConfig::default()
    };
    let f = fixture_with(config).await;
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let reg = common::get("/obs", 5).with_uint_option(OptionNumber::OBSERVE, 0);
    send_udp(&peer, f.udp, MessageType::Confirmable, 1, &reg).await;
    recv_udp(&peer).await;
    f.observers_become(1).await;
    // The first notification is NON, the second CON (every 2nd): the peer never answers.
    f.change();
    let (h1, _) = recv_udp(&peer).await;
    assert_eq!(h1.mtype, MessageType::NonConfirmable);
    f.change();
    let (h2, _) = recv_udp(&peer).await;
    assert_eq!(h2.mtype, MessageType::Confirmable);
    drop(peer);
    // 50 ms × (1 + 2 + 4) × 1.5 at most, then the observer goes.
    f.observers_become(0).await;
}

#[tokio::test]
async fn udp_notifications_out_of_order_are_dropped() {
    // A raw UDP server sends the registration's answer and then notifications numbered
    // 10, 12, 11 (reordered), 13: the client yields 10, 12, 13.
    let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let client = Endpoint::client();
    let mut o = client
        .observe(observe(&format!("coap://{addr}/r")))
        .await
        .unwrap();
    let (h, reg, from) = recv_udp_from(&server).await;
    assert_eq!(reg.options.observe(), Some(0));
    let answer = |seq: u32| {
        Message::response(Code::CONTENT, format!("n{seq}"))
            .with_uint_option(OptionNumber::OBSERVE, seq)
            .with_token(reg.token.clone())
    };
    send_udp(
        &server,
        from,
        MessageType::Acknowledgement,
        h.message_id,
        &answer(10),
    )
    .await;
    for (i, seq) in [12u32, 11, 13].into_iter().enumerate() {
        send_udp(
            &server,
            from,
            MessageType::NonConfirmable,
            100 + i as u16,
            &answer(seq),
        )
        .await;
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(
            next(&mut o)
                .await
                .unwrap()
                .message
                .payload_text()
                .into_owned(),
        );
    }
    assert_eq!(got, ["n10", "n12", "n13"]);
    // Dropping it: the next notification is answered with Reset.
    drop(o);
    tokio::time::sleep(Duration::from_millis(50)).await;
    send_udp(&server, from, MessageType::NonConfirmable, 200, &answer(14)).await;
    let (h, m, _) = recv_udp_from(&server).await;
    assert_eq!(
        (h.mtype, h.message_id, m.code),
        (MessageType::Reset, 200, Code::EMPTY)
    );
}

async fn send_udp(s: &UdpSocket, to: SocketAddr, mtype: MessageType, mid: u16, m: &Message) {
    let header = UdpHeader {
        mtype,
        message_id: mid,
    };
    s.send_to(&wire::encode(&header, m).unwrap(), to)
        .await
        .unwrap();
}

async fn recv_udp(s: &UdpSocket) -> (UdpHeader, Message) {
    let (h, m, _) = recv_udp_from(s).await;
    (h, m)
}

async fn recv_udp_from(s: &UdpSocket) -> (UdpHeader, Message, SocketAddr) {
    let mut buf = vec![0u8; 65536];
    let (n, from) = tokio::time::timeout(WAIT, s.recv_from(&mut buf))
        .await
        .expect("datagram in time")
        .unwrap();
    let d = Bytes::copy_from_slice(&buf[..n]);
    let (h, m) = wire::decode(&d, &DecodeLimits::default()).unwrap();
    (h, m, from)
}

/// A raw CoAP-over-TCP peer (RFC 8323 §3 framing by hand through the codec).
struct RawTcp {
    stream: tokio::net::TcpStream,
    decoder: coapws::proto::codec::tcp::StreamDecoder,
}

impl RawTcp {
    async fn connect(addr: SocketAddr) -> RawTcp {
        let mut raw = RawTcp {
            stream: tokio::net::TcpStream::connect(addr).await.unwrap(),
            decoder: coapws::proto::codec::tcp::StreamDecoder::new(DecodeLimits::default()),
        };
        // Our CSM (empty: base values), then the server's.
        raw.send(&Message::new(Code::CSM)).await;
        assert_eq!(raw.next().await.code, Code::CSM);
        raw
    }
    async fn send(&mut self, m: &Message) {
        use tokio::io::AsyncWriteExt;
        let b = coapws::proto::codec::tcp::encode(m).unwrap();
        self.stream.write_all(&b).await.unwrap();
    }
    async fn next(&mut self) -> Message {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some(m) = self.decoder.next_message().unwrap() {
                return m;
            }
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, self.stream.read(&mut buf))
                .await
                .expect("message in time")
                .unwrap();
            assert!(n > 0, "the server closed");
            self.decoder.push(&buf[..n]);
        }
    }
}

#[tokio::test]
async fn re_registration_with_the_same_token_does_not_duplicate_over_tcp() {
    let f = fixture().await;
    let mut tcp = RawTcp::connect(f.tcp).await;
    let reg = || common::get("/obs", 7).with_uint_option(OptionNumber::OBSERVE, 0);
    for _ in 0..2 {
        tcp.send(&reg()).await;
        let r = tcp.next().await;
        assert_eq!(r.code, Code::CONTENT);
        assert!(r.options.observe().is_some());
    }
    assert_eq!(f.server.observer_count(), 1);
    f.change();
    assert!(tcp.next().await.options.observe().is_some());
    tcp.send(&common::get("/obs", 7).with_uint_option(OptionNumber::OBSERVE, 1))
        .await;
    let answer = tcp.next().await;
    assert!(
        answer.options.observe().is_none(),
        "a second notification came: {answer:?}"
    );
    f.observers_become(0).await;
}

/// The payload of the next notification, as text.
async fn next_text(o: &mut coapws::Observation) -> String {
    next(o).await.unwrap().message.payload_text().to_string()
}

/// An endpoint serving one observable resource `/r` with `get`, on every scheme.
async fn serve_one<F, Fut>(obs: &Observable, get: F) -> (Endpoint, [String; 3])
where
    F: Fn(IncomingRequest) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Message> + Send + 'static,
{
    let server = Endpoint::builder()
        .site(Site::new().resource("/r", Resource::new().get(get).observable(obs)))
        .build();
    let any = "127.0.0.1:0".parse().unwrap();
    let ws = server.listen_ws(any).await.unwrap();
    let tcp = server.listen_tcp(any).await.unwrap();
    let udp = server.listen_udp(any).await.unwrap();
    let uris = [
        format!("coap+ws://{ws}/r"),
        format!("coap+tcp://{tcp}/r"),
        format!("coap://{udp}/r"),
    ];
    (server, uris)
}

#[tokio::test]
async fn a_change_right_after_the_registration_is_rendered_is_notified() {
    // The state changes after the registration's response was rendered, before it is sent:
    // the observer has to hear of it (it was missed when the observer subscribed only after
    // the handler returned, or forgot what happened before the response went out).
    let obs = Observable::new();
    let value = Arc::new(AtomicU32::new(0));
    let (v, o) = (value.clone(), obs.clone());
    let (server, uris) = serve_one(&obs, move |req: IncomingRequest| {
        let now = v.load(Ordering::SeqCst);
        if req.is_observe_registration() {
            v.fetch_add(1, Ordering::SeqCst);
            o.notify();
        }
        async move { Message::response(Code::CONTENT, format!("v={now}")) }
    })
    .await;
    for uri in uris {
        let client = Endpoint::client();
        let mut o = client.observe(observe(&uri)).await.unwrap();
        let first = next_text(&mut o).await;
        let then = next_text(&mut o).await;
        assert_ne!(
            first, then,
            "{uri}: the change after the response was missed"
        );
        assert_eq!(then, format!("v={}", value.load(Ordering::SeqCst)), "{uri}");
        client.shutdown().await;
    }
    drop(server);
}

#[tokio::test]
async fn a_clock_notification_does_not_repeat_what_the_registration_answered() {
    // A periodic observable ticks a little after each period begins; a registration answered
    // in between already showed the new period, so that tick must not notify it again (the
    // browser console's /time showed the same second twice).
    const PERIOD: Duration = Duration::from_millis(100);
    let index = || {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        t.as_millis() / PERIOD.as_millis()
    };
    let obs = Observable::every(PERIOD);
    let (server, uris) = serve_one(&obs, move |_req: IncomingRequest| async move {
        Message::response(Code::CONTENT, index().to_string())
    })
    .await;
    for uri in uris {
        let client = Endpoint::client();
        // Warm the connection so the registration itself is fast.
        client.send(Request::get(&uri).unwrap()).await.unwrap();
        for _ in 0..3 {
            // Register just after a period begins, before its tick fires: sleep until a few
            // milliseconds before, then spin (timers are too coarse for this).
            let start = index();
            let into = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_micros()
                % PERIOD.as_micros();
            let left = (PERIOD.as_micros() - into) as u64;
            if left > 5_000 {
                tokio::time::sleep(Duration::from_micros(left - 5_000)).await;
            }
            while index() == start {
                std::hint::spin_loop();
            }
            let mut o = client.observe(observe(&uri)).await.unwrap();
            let first = next_text(&mut o).await;
            let then = next_text(&mut o).await;
            assert_ne!(first, then, "{uri}: one period notified twice");
            o.cancel().await.unwrap();
        }
        client.shutdown().await;
    }
    drop(server);
}
