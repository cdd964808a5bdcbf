//! The proxy (RFC 7252 §5.7) over real loopback sockets: WebSocket clients reach UDP and TCP
//! origins through it (GET, block-wise PUT and GET with other block sizes on each hop,
//! Observe), every refusal and failure gets its code in time, the cache answers without
//! asking upstream and revalidates with ETag, downstream observers share one upstream
//! observation, and reverse proxying by path and by host.

mod common;

use bytes::Bytes;
use coapws::proto::udp::UdpConfig;
use coapws::proto::{Code, Message, OptionNumber};
use coapws::proxy::{AllowList, Proxy, ProxyConfig};
use coapws::{
    Endpoint, EndpointConfig, IncomingRequest, Observable, ObserveEnd, Request, Resource, Site,
};
use common::WAIT;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the origin server counts and holds.
#[derive(Default)]
struct State {
    hello_hits: AtomicU32,
    etag_hits: AtomicU32,
    validations: AtomicU32,
    registrations: AtomicU32,
    value: AtomicU32,
    gone: AtomicBool,
    stored: Mutex<Bytes>,
    /// Block sizes the 64-byte device was asked for.
    pieces: Mutex<Vec<usize>>,
}

fn origin_site(state: &Arc<State>, obs: &Observable) -> Site {
    let s = state.clone();
    let hello = Resource::new().get(move |_r: IncomingRequest| {
        let s = s.clone();
        async move {
            s.hello_hits.fetch_add(1, Ordering::SeqCst);
            Message::response(Code::CONTENT, "hello from the origin")
                .with_uint_option(OptionNumber::MAX_AGE, 60)
        }
    });
    let s = state.clone();
    // A representation that goes stale at once, with an ETag that never changes.
    let etag = Resource::new().get(move |r: IncomingRequest| {
        let s = s.clone();
        async move {
            s.etag_hits.fetch_add(1, Ordering::SeqCst);
            let tag = Bytes::from_static(b"v1");
            let asked = r
                .message
                .options
                .get_all(OptionNumber::ETAG)
                .any(|e| *e == tag);
            let m = if asked {
                s.validations.fetch_add(1, Ordering::SeqCst);
                Message::new(Code::VALID)
            } else {
                Message::response(Code::CONTENT, "tagged body")
            };
            m.with_option(OptionNumber::ETAG, tag)
                .with_uint_option(OptionNumber::MAX_AGE, 1)
        }
    });
    let (put, get) = (state.clone(), state.clone());
    let store = Resource::new()
        .put(move |r: IncomingRequest| {
            let s = put.clone();
            async move {
                *s.stored.lock().unwrap() = r.message.payload.clone();
                Message::new(Code::CHANGED)
            }
        })
        .get(move |_r: IncomingRequest| {
            let s = get.clone();
            async move { Message::response(Code::CONTENT, s.stored.lock().unwrap().clone()) }
        });
    let s = state.clone();
    let observed = Resource::new()
        .get(move |r: IncomingRequest| {
            let s = s.clone();
            async move {
                if r.is_observe_registration() {
                    s.registrations.fetch_add(1, Ordering::SeqCst);
                }
                if s.gone.load(Ordering::SeqCst) {
                    return Message::response(Code::NOT_FOUND, "gone");
                }
                let v = s.value.load(Ordering::SeqCst);
                Message::response(Code::CONTENT, format!("value {v}"))
            }
        })
        .observable(obs);
    let never = Resource::new().get(|_r: IncomingRequest| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Message::response(Code::CONTENT, "never")
    });
    let s = state.clone();
    // Cut by the server itself, in the largest blocks its peer limits allow.
    let pieces = Resource::new().get(move |r: IncomingRequest| {
        let s = s.clone();
        async move {
            let body: Vec<u8> = (0..2048u32).map(|i| b'a' + (i % 26) as u8).collect();
            let head = Message::new(Code::CONTENT);
            match r.block2_window(body.len(), &head) {
                Ok(Some(w)) => {
                    s.pieces.lock().unwrap().push(w.len);
                    let mut m = head.with_payload(body[w.offset..w.offset + w.len].to_vec());
                    m.options.set(OptionNumber::BLOCK2, w.block.encode());
                    m
                }
                Ok(None) => head.with_payload(body),
                Err(e) => Message::response(Code::BAD_OPTION, e.to_string()),
            }
        }
    });
    Site::new()
        .resource("/hello", hello)
        .resource("/etag", etag)
        .resource("/store", store)
        .resource("/obs", observed)
        .resource("/never", never)
        .resource("/pieces", pieces)
}

struct Origin {
    server: Endpoint,
    state: Arc<State>,
    obs: Observable,
    udp: SocketAddr,
    tcp: SocketAddr,
}

impl Origin {
    async fn start(udp: UdpConfig) -> Origin {
        let state = Arc::new(State::default());
        let obs = Observable::new();
        let config = EndpointConfig {
            udp,
            ..EndpointConfig::default()
        };
        let server = Endpoint::builder()
            .config(config)
            .site(origin_site(&state, &obs))
            .build();
        let udp = server
            .listen_udp("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let tcp = server
            .listen_tcp("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        Origin {
            server,
            state,
            obs,
            udp,
            tcp,
        }
    }
    fn uri(&self, scheme: &str, path: &str) -> String {
        let a = if scheme == "coap" { self.udp } else { self.tcp };
        format!("{scheme}://{a}{path}")
    }
    fn change(&self) {
        self.state.value.fetch_add(1, Ordering::SeqCst);
        self.obs.notify();
    }
}

struct Front {
    _server: Endpoint,
    proxy: Proxy,
    ws: SocketAddr,
}

async fn front(config: ProxyConfig, build: impl FnOnce(&Proxy, Site) -> Site) -> Front {
    let proxy = Proxy::new(config);
    let site = build(&proxy, proxy.forward(Site::new()));
    let server = Endpoint::builder().site(site).build();
    let ws = server
        .listen_ws("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    Front {
        _server: server,
        proxy,
        ws,
    }
}

async fn default_front() -> Front {
    front(ProxyConfig::default(), |_, s| s).await
}

impl Front {
    /// A request to the proxy for `target` (Proxy-Uri).
    fn via(&self, method: Code, target: &str) -> Request {
        Request::new(method, &format!("coap+ws://{}", self.ws))
            .unwrap()
            .option(OptionNumber::PROXY_URI, target.to_owned())
            .timeout(WAIT)
    }
}

async fn answer(client: &Endpoint, r: Request) -> Message {
    tokio::time::timeout(WAIT * 2, client.send(r))
        .await
        .expect("no hang")
        .expect("the proxy answers")
        .message
}

#[tokio::test]
async fn a_websocket_client_gets_a_udp_and_a_tcp_resource_through_the_proxy() {
    let origin = Origin::start(UdpConfig::default()).await;
    let front = default_front().await;
    let client = Endpoint::client();
    for scheme in ["coap", "coap+tcp"] {
        let m = answer(&client, front.via(Code::GET, &origin.uri(scheme, "/hello"))).await;
        assert_eq!(m.code, Code::CONTENT, "{scheme}: {}", m.payload_text());
        assert_eq!(m.payload_text(), "hello from the origin", "{scheme}");
    }
    // Proxy-Scheme with Uri-Host and Uri-Port names the same target.
    let r = Request::get(&format!("coap+ws://{}/hello", front.ws))
        .unwrap()
        .option(OptionNumber::PROXY_SCHEME, "coap+tcp")
        .option(OptionNumber::URI_HOST, "127.0.0.1")
        .option(
            OptionNumber::URI_PORT,
            coapws::proto::option::encode_uint(u32::from(origin.tcp.port())),
        );
    let m = answer(&client, r).await;
    assert_eq!(m.payload_text(), "hello from the origin");
}

#[tokio::test]
async fn a_one_mib_put_and_get_go_block_wise_on_both_hops() {
    let origin = Origin::start(UdpConfig::default()).await;
    let front = default_front().await;
    let client = Endpoint::client();
    let body: Bytes = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect::<Vec<u8>>()
        .into();
    let target = origin.uri("coap", "/store");
    let put = front.via(Code::PUT, &target).payload(body.clone());
    let m = answer(&client, put).await;
    assert_eq!(m.code, Code::CHANGED, "{}", m.payload_text());
    assert_eq!(
        *origin.state.stored.lock().unwrap(),
        body,
        "the origin got the whole body"
    );
    let m = answer(&client, front.via(Code::GET, &target)).await;
    assert_eq!(m.code, Code::CONTENT);
    assert!(m.payload == body, "the client got the whole body back");
}

#[tokio::test]
async fn a_udp_device_with_64_byte_blocks_serves_a_websocket_client_in_one_piece() {
    // The device takes and sends 128-byte datagrams: its answers come in 64-byte blocks.
    let udp = UdpConfig {
        max_message_size: 128,
        ..UdpConfig::default()
    };
    let device = Origin::start(udp).await;
    let front = default_front().await;
    let client = Endpoint::client();
    let m = answer(
        &client,
        front.via(Code::GET, &device.uri("coap", "/pieces")),
    )
    .await;
    assert_eq!(m.code, Code::CONTENT);
    let expected: Vec<u8> = (0..2048u32).map(|i| b'a' + (i % 26) as u8).collect();
    assert_eq!(m.payload, expected, "reassembled by the proxy");
    let pieces = device.state.pieces.lock().unwrap().clone();
    assert_eq!(pieces.len(), 32, "{pieces:?}");
    assert!(pieces.iter().all(|&n| n == 64), "{pieces:?}");
}

#[tokio::test]
async fn a_websocket_client_observes_a_udp_resource_through_the_proxy() {
    let origin = Origin::start(UdpConfig::default()).await;
    let front = default_front().await;
    let client = Endpoint::client();
    let mut obs = client
        .observe(front.via(Code::GET, &origin.uri("coap", "/obs")))
        .await
        .unwrap();
    let first = obs.next().await.expect("registration answered");
    assert_eq!(first.message.payload_text(), "value 0");
    assert!(first.message.options.observe().is_some(), "registered");
    for v in 1..=3 {
        origin.change();
        let n = tokio::time::timeout(WAIT, obs.next())
            .await
            .expect("notification in time")
            .expect("notification");
        assert_eq!(n.message.payload_text(), format!("value {v}"));
    }
}

#[tokio::test]
async fn three_observers_share_one_upstream_observation_and_all_see_it_end() {
    let origin = Origin::start(UdpConfig::default()).await;
    let front = default_front().await;
    let target = origin.uri("coap+tcp", "/obs");
    let clients: Vec<Endpoint> = (0..3).map(|_| Endpoint::client()).collect();
    let mut observations = Vec::new();
    for c in &clients {
        let mut o = c.observe(front.via(Code::GET, &target)).await.unwrap();
        let first = o.next().await.expect("registered");
        assert_eq!(first.message.payload_text(), "value 0");
        observations.push(o);
    }
    assert_eq!(
        origin.state.registrations.load(Ordering::SeqCst),
        1,
        "one upstream registration"
    );
    assert_eq!(origin.server.observer_count(), 1);
    assert_eq!(front.proxy.stats().relays, 1);
    origin.change();
    for o in &mut observations {
        let n = tokio::time::timeout(WAIT, o.next()).await.unwrap().unwrap();
        assert_eq!(n.message.payload_text(), "value 1");
    }
    // Upstream ends the observation with 4.04: it ends for every downstream observer.
    origin.state.gone.store(true, Ordering::SeqCst);
    origin.obs.notify();
    for o in &mut observations {
        match tokio::time::timeout(WAIT, o.next()).await.unwrap() {
            Err(ObserveEnd::Ended(r)) => assert_eq!(r.code(), Code::NOT_FOUND),
            other => panic!("expected the end, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn upstream_is_deregistered_when_the_last_downstream_observer_leaves() {
    let origin = Origin::start(UdpConfig::default()).await;
    let front = default_front().await;
    let target = origin.uri("coap+tcp", "/obs");
    let a = Endpoint::client();
    let b = Endpoint::client();
    let mut oa = a.observe(front.via(Code::GET, &target)).await.unwrap();
    let mut ob = b.observe(front.via(Code::GET, &target)).await.unwrap();
    oa.next().await.unwrap();
    ob.next().await.unwrap();
    assert_eq!(origin.server.observer_count(), 1);
    drop(oa);
    origin.change();
    let n = tokio::time::timeout(WAIT, ob.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        n.message.payload_text(),
        "value 1",
        "the other observer goes on"
    );
    assert_eq!(origin.server.observer_count(), 1, "still observed upstream");
    ob.cancel().await.unwrap();
    common::wait_until("upstream deregistered", || {
        origin.server.observer_count() == 0
    })
    .await;
    common::wait_until("relay gone", || front.proxy.stats().relays == 0).await;
}

#[tokio::test]
async fn the_cache_answers_fresh_requests_without_asking_upstream() {
    let origin = Origin::start(UdpConfig::default()).await;
    let front = default_front().await;
    let client = Endpoint::client();
    let target = origin.uri("coap", "/hello");
    for _ in 0..3 {
        let m = answer(&client, front.via(Code::GET, &target)).await;
        assert_eq!(m.payload_text(), "hello from the origin");
        assert!(m.options.max_age() <= 60 && m.options.max_age() >= 58);
    }
    assert_eq!(
        origin.state.hello_hits.load(Ordering::SeqCst),
        1,
        "asked upstream once"
    );
    let stats = front.proxy.stats().cache;
    assert_eq!((stats.hits, stats.stored), (2, 1), "{stats:?}");
    // A PUT to it through the proxy makes the cached copy stale.
    let m = answer(&client, front.via(Code::PUT, &target).payload("x")).await;
    assert_eq!(m.code, Code::METHOD_NOT_ALLOWED);
    answer(&client, front.via(Code::GET, &target)).await;
    assert_eq!(
        origin.state.hello_hits.load(Ordering::SeqCst),
        1,
        "4.05 changed nothing"
    );
}

#[tokio::test]
async fn stale_cache_entries_are_revalidated_with_their_etag() {
    let origin = Origin::start(UdpConfig::default()).await;
    let front = default_front().await;
    let client = Endpoint::client();
    let target = origin.uri("coap", "/etag");
    let m = answer(&client, front.via(Code::GET, &target)).await;
    assert_eq!(m.payload_text(), "tagged body");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let m = answer(&client, front.via(Code::GET, &target)).await;
    assert_eq!(
        m.code,
        Code::CONTENT,
        "the client gets the body, not the proxy's 2.03"
    );
    assert_eq!(m.payload_text(), "tagged body");
    assert_eq!(
        origin.state.validations.load(Ordering::SeqCst),
        1,
        "revalidated upstream"
    );
    assert_eq!(front.proxy.stats().cache.revalidated, 1);
    // A client that has the body itself gets 2.03 from the fresh entry.
    let m = answer(
        &client,
        front
            .via(Code::GET, &target)
            .option(OptionNumber::ETAG, &b"v1"[..]),
    )
    .await;
    assert_eq!(m.code, Code::VALID);
    assert_eq!(origin.state.etag_hits.load(Ordering::SeqCst), 2);
}

/// `r`'s code, within `limit`.
async fn code_within(client: &Endpoint, r: Request, limit: Duration) -> (Code, String) {
    let start = Instant::now();
    let m = answer(client, r).await;
    let took = start.elapsed();
    assert!(took < limit, "{} took {took:?}", m.code);
    (m.code, m.payload_text().into_owned())
}

#[tokio::test]
async fn refusals_and_failures_get_their_codes_in_time() {
    let origin = Origin::start(UdpConfig::default()).await;
    let config = ProxyConfig {
        patience: Duration::from_secs(1),
        ..ProxyConfig::default()
    };
    let front = front(config, |_, s| s).await;
    let client = Endpoint::client();
    let fast = Duration::from_millis(900);
    // Without --allow only loopback targets: TEST-NET-1 is refused at once.
    let (c, _) = code_within(&client, front.via(Code::GET, "coap://192.0.2.1/x"), fast).await;
    assert_eq!(c, Code::PROXYING_NOT_SUPPORTED);
    let (c, _) = code_within(&client, front.via(Code::GET, "http://127.0.0.1/x"), fast).await;
    assert_eq!(c, Code::PROXYING_NOT_SUPPORTED);
    let (c, _) = code_within(&client, front.via(Code::GET, "coap://[::1/x"), fast).await;
    assert_eq!(c, Code::BAD_REQUEST);
    // Nobody listens: refused at once over TCP, and over UDP by the port-unreachable.
    let (_keep, dead) = common::dead_port();
    let (c, why) = code_within(
        &client,
        front.via(Code::GET, &format!("coap+tcp://{dead}/x")),
        fast,
    )
    .await;
    assert_eq!(c, Code::BAD_GATEWAY, "{why}");
    let dead_udp = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (c, why) = code_within(
        &client,
        front.via(Code::GET, &format!("coap://{dead_udp}/x")),
        fast,
    )
    .await;
    assert_eq!(c, Code::BAD_GATEWAY, "{why}");
    // An origin that never answers: 5.04 after the patience, not later.
    let (c, _) = code_within(
        &client,
        front.via(Code::GET, &origin.uri("coap", "/never")),
        Duration::from_millis(1800),
    )
    .await;
    assert_eq!(c, Code::GATEWAY_TIMEOUT);
    // An unsafe option the proxy does not know (65002: unsafe, elective): 4.02.
    let r = front
        .via(Code::GET, &origin.uri("coap", "/hello"))
        .option(coapws::proto::OptionNumber(65002), "x");
    let (c, _) = code_within(&client, r, fast).await;
    assert_eq!(c, Code::BAD_OPTION);
    // A safe one it does not know goes through (65000: safe, elective).
    let r = front
        .via(Code::GET, &origin.uri("coap", "/hello"))
        .option(coapws::proto::OptionNumber(65000), "x");
    let (c, _) = code_within(&client, r, fast).await;
    assert_eq!(c, Code::CONTENT);
    // Hop-Limit 1 ends here (RFC 8768).
    let r = front
        .via(Code::GET, &origin.uri("coap", "/hello"))
        .option(OptionNumber::HOP_LIMIT, vec![1u8]);
    let (c, _) = code_within(&client, r, fast).await;
    assert_eq!(c, Code::HOP_LIMIT_REACHED);
    assert!(front.proxy.stats().refused >= 5);
}

#[tokio::test]
async fn allow_patterns_open_exactly_what_they_name() {
    let origin = Origin::start(UdpConfig::default()).await;
    let config = ProxyConfig {
        allow: AllowList::parse(&[format!("coap+tcp://127.0.0.1:{}", origin.tcp.port())]).unwrap(),
        ..ProxyConfig::default()
    };
    let front = front(config, |_, s| s).await;
    let client = Endpoint::client();
    let m = answer(
        &client,
        front.via(Code::GET, &origin.uri("coap+tcp", "/hello")),
    )
    .await;
    assert_eq!(m.code, Code::CONTENT);
    // Loopback, but not in the list.
    let m = answer(&client, front.via(Code::GET, &origin.uri("coap", "/hello"))).await;
    assert_eq!(m.code, Code::PROXYING_NOT_SUPPORTED);
}

#[tokio::test]
async fn reverse_proxying_by_path_prefix_and_by_host() {
    let origin = Origin::start(UdpConfig::default()).await;
    let base: coapws::proto::uri::Uri = origin.uri("coap", "/").parse().unwrap();
    let tcp_base: coapws::proto::uri::Uri = origin.uri("coap+tcp", "/").parse().unwrap();
    let front = front(ProxyConfig::default(), |p, s| {
        let s = p.reverse(s, "/up", base);
        p.reverse_host(s, "origin.example", tcp_base)
    })
    .await;
    let client = Endpoint::client();
    let m = answer(
        &client,
        Request::get(&format!("coap+ws://{}/up/hello", front.ws)).unwrap(),
    )
    .await;
    assert_eq!(m.payload_text(), "hello from the origin");
    let r = Request::get(&format!("coap+ws://{}/hello", front.ws))
        .unwrap()
        .option(OptionNumber::URI_HOST, "origin.example");
    let m = answer(&client, r).await;
    assert_eq!(m.payload_text(), "hello from the origin");
    // Other paths and hosts are the proxy's own site's: nothing there.
    let m = answer(
        &client,
        Request::get(&format!("coap+ws://{}/hello", front.ws)).unwrap(),
    )
    .await;
    assert_eq!(m.code, Code::NOT_FOUND);
}

/// A device's own site: what the server reaches over the device's connection.
fn device_site(obs: &Observable, count: Arc<AtomicU32>) -> Site {
    let big: Vec<u8> = (0..5000u32).map(|i| b'A' + (i % 26) as u8).collect();
    Site::new()
        .resource(
            "/sensor",
            Resource::new()
                .get(|_r: IncomingRequest| async { Message::response(Code::CONTENT, "21.5") }),
        )
        .resource(
            "/big",
            Resource::new().get(move |_r: IncomingRequest| {
                let big = big.clone();
                async move { Message::response(Code::CONTENT, big) }
            }),
        )
        .resource(
            "/count",
            Resource::new()
                .get(move |_r: IncomingRequest| {
                    let n = count.load(Ordering::SeqCst);
                    async move { Message::response(Code::CONTENT, format!("count {n}")) }
                })
                .observable(obs),
        )
}

#[tokio::test]
async fn devices_registered_over_their_own_websocket_are_reached_by_name_in_both_forms() {
    use coapws::rd::{RdConfig, ResourceDirectory};
    let rd = ResourceDirectory::new(RdConfig {
        proxy_domain: Some("devices.example".into()),
        ..RdConfig::default()
    });
    let proxy = Proxy::new(ProxyConfig::default());
    let site = proxy.devices(
        proxy.forward(rd.mount(Site::new())),
        "devices.example",
        Arc::new(rd.clone()),
    );
    let server = Endpoint::builder().site(site).build();
    let ws = server
        .listen_ws("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();

    // The device connects out (it could be behind NAT) and registers.
    let obs = Observable::new();
    let count = Arc::new(AtomicU32::new(0));
    let device = Endpoint::builder()
        .site(device_site(&obs, count.clone()))
        .build();
    let register = Request::new(Code::POST, &format!("coap+ws://{ws}/rd?ep=dev1"))
        .unwrap()
        .payload("</sensor>;rt=temperature,</big>,</count>;obs")
        .content_format(40);
    let m = device.send(register).await.unwrap();
    assert_eq!(m.code(), Code::CREATED, "{}", m.message.payload_text());

    let client = Endpoint::client();
    // By Uri-Host.
    let by_host = Request::get(&format!("coap+ws://{ws}/sensor"))
        .unwrap()
        .option(OptionNumber::URI_HOST, "dev1.devices.example");
    assert_eq!(answer(&client, by_host).await.payload_text(), "21.5");
    // As a forward-proxy target.
    let front = Front {
        _server: server.clone(),
        proxy: proxy.clone(),
        ws,
    };
    let m = answer(
        &client,
        front.via(Code::GET, "coap://dev1.devices.example/sensor"),
    )
    .await;
    assert_eq!(m.payload_text(), "21.5");
    let m = answer(
        &client,
        front.via(Code::GET, "coap://dev1.devices.example/big"),
    )
    .await;
    assert_eq!(m.payload.len(), 5000, "block-wise from the device");
    // Observed through the server.
    let mut o = client
        .observe(front.via(Code::GET, "coap://dev1.devices.example/count"))
        .await
        .unwrap();
    assert_eq!(o.next().await.unwrap().message.payload_text(), "count 0");
    count.store(1, Ordering::SeqCst);
    obs.notify();
    let n = tokio::time::timeout(WAIT, o.next()).await.unwrap().unwrap();
    assert_eq!(n.message.payload_text(), "count 1");

    // The device goes away (dropped: it releases its connection, which closes once the
    // server's observation of it is let go): its registration ends, the observation with it,
    // and requests for it are answered at once.
    drop(device);
    common::wait_until("registration gone", || rd.endpoint_remote("dev1").is_none()).await;
    let gone = Instant::now();
    match tokio::time::timeout(WAIT, o.next()).await.unwrap() {
        Err(ObserveEnd::Ended(r)) => assert!(
            r.code().class() == 5 || r.code() == Code::NOT_FOUND,
            "{}",
            r.code()
        ),
        other => panic!("expected the observation to end, got {other:?}"),
    }
    let m = answer(
        &client,
        front.via(Code::GET, "coap://dev1.devices.example/sensor"),
    )
    .await;
    assert_eq!(m.code, Code::NOT_FOUND, "{}", m.payload_text());
    assert!(
        gone.elapsed() < Duration::from_secs(2),
        "{:?}",
        gone.elapsed()
    );
    let unknown = Request::get(&format!("coap+ws://{ws}/sensor"))
        .unwrap()
        .option(OptionNumber::URI_HOST, "nobody.devices.example");
    assert_eq!(answer(&client, unknown).await.code, Code::NOT_FOUND);
}

#[tokio::test]
async fn every_scheme_reaches_every_scheme_tls_included() {
    // The origin on coap+ws, coaps+tcp and coaps+ws (a test CA), the proxy on coap (UDP) and
    // coap+tcp: clients come by datagram and stream, targets are WebSocket and TLS.
    let pki = common::pki();
    let state = Arc::new(State::default());
    let origin = Endpoint::builder()
        .site(origin_site(&state, &Observable::new()))
        .build();
    let any = "127.0.0.1:0".parse().unwrap();
    let ws = origin.listen_ws(any).await.unwrap();
    let tls = origin.listen_tls(any, &pki.identity).await.unwrap();
    let wss = origin.listen_wss(any, &pki.identity).await.unwrap();
    let config = ProxyConfig::default();
    let upstream = Endpoint::builder()
        .config(EndpointConfig {
            request_timeout: config.patience,
            ..config.client.clone()
        })
        .tls_client(common::trusting(&pki))
        .build();
    let proxy = Proxy::with_client(config, upstream);
    let server = Endpoint::builder().site(proxy.forward(Site::new())).build();
    let udp = server.listen_udp(any).await.unwrap();
    let tcp = server.listen_tcp(any).await.unwrap();
    let client = Endpoint::client();
    for via in [format!("coap://{udp}"), format!("coap+tcp://{tcp}")] {
        for target in [
            format!("coap+ws://{ws}/hello"),
            format!("coaps+tcp://localhost:{}/hello", tls.port()),
            format!("coaps+ws://localhost:{}/hello", wss.port()),
        ] {
            let r = Request::get(&via)
                .unwrap()
                .option(OptionNumber::PROXY_URI, target.clone());
            let m = answer(&client, r).await;
            assert_eq!(
                m.payload_text(),
                "hello from the origin",
                "{via} → {target}"
            );
        }
    }
    // Not trusted: a TLS target whose certificate the proxy's client does not accept.
    let untrusting = Proxy::new(ProxyConfig::default());
    let server2 = Endpoint::builder()
        .site(untrusting.forward(Site::new()))
        .build();
    let tcp2 = server2.listen_tcp(any).await.unwrap();
    let r = Request::get(&format!("coap+tcp://{tcp2}")).unwrap().option(
        OptionNumber::PROXY_URI,
        format!("coaps+tcp://localhost:{}/hello", tls.port()),
    );
    let m = answer(&client, r).await;
    assert_eq!(m.code, Code::BAD_GATEWAY, "{}", m.payload_text());
}
