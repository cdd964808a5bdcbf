//! The Resource Directory (RFC 9176) over real loopback sockets: registration, update,
//! removal, lifetimes, replacement, lookups with filters and paging, discovery, limits, and
//! registrations tied to the WebSocket or TCP connection they came over (proxy-domain bases,
//! removal when the connection closes, reaching the endpoint through `endpoint_remote`).

mod common;

use coapws::proto::link_format::{self, Link};
use coapws::proto::{Code, Message, OptionNumber};
use coapws::rd::{RdConfig, ResourceDirectory};
use coapws::{Endpoint, IncomingRequest, Request, Resource, Response, Site};
use common::{WAIT, wait_until};
use std::net::SocketAddr;
use std::time::Duration;

/// A server with a resource directory on coap+ws, coap+tcp and coap.
struct Rd {
    _server: Endpoint,
    rd: ResourceDirectory,
    ws: SocketAddr,
    tcp: SocketAddr,
    udp: SocketAddr,
}

impl Rd {
    async fn start(config: RdConfig) -> Rd {
        let rd = ResourceDirectory::new(config);
        let server = Endpoint::builder().site(rd.mount(Site::new())).build();
        let any = "127.0.0.1:0".parse().unwrap();
        Rd {
            ws: server.listen_ws(any).await.unwrap(),
            tcp: server.listen_tcp(any).await.unwrap(),
            udp: server.listen_udp(any).await.unwrap(),
            _server: server,
            rd,
        }
    }
    fn ws(&self, path: &str) -> String {
        format!("coap+ws://{}{path}", self.ws)
    }
    fn udp(&self, path: &str) -> String {
        format!("coap://{}{path}", self.udp)
    }
}

async fn send(client: &Endpoint, method: Code, uri: &str, links: &str) -> Response {
    let mut r = Request::new(method, uri).unwrap().timeout(WAIT);
    if !links.is_empty() {
        r = r.payload(links.to_owned()).content_format(40);
    }
    client.send(r).await.expect("the RD answers")
}

/// Registers at `/rd` with `query`; asserts 2.01 and returns the registration's path.
async fn register(client: &Endpoint, rd: &Rd, query: &str, links: &str) -> String {
    let r = send(client, Code::POST, &rd.ws(&format!("/rd?{query}")), links).await;
    assert_eq!(r.code(), Code::CREATED, "{}", r.message.payload_text());
    location(&r)
}

fn location(r: &Response) -> String {
    let segments = r.message.options.get_strings(OptionNumber::LOCATION_PATH);
    assert_eq!(segments.len(), 2, "Location-Path rd/<id>: {segments:?}");
    assert_eq!(segments[0], "rd");
    assert!(!segments[1].is_empty());
    format!("/{}", segments.join("/"))
}

/// GETs `uri`; asserts 2.05 in link-format and returns the links.
async fn links(client: &Endpoint, uri: &str) -> Vec<Link> {
    let r = send(client, Code::GET, uri, "").await;
    assert_eq!(
        r.code(),
        Code::CONTENT,
        "{uri}: {}",
        r.message.payload_text()
    );
    assert_eq!(r.message.options.content_format(), Some(40), "{uri}");
    link_format::parse(&r.message.payload_text()).expect("valid link-format")
}

fn targets(links: &[Link]) -> Vec<&str> {
    links.iter().map(|l| l.target.as_str()).collect()
}

async fn code_of(client: &Endpoint, method: Code, uri: &str, links: &str) -> Code {
    send(client, method, uri, links).await.code()
}

const SENSORS: &str = "</temp>;rt=temperature;if=sensor,</light>;rt=light-lux;anchor=\"/x\"";

#[tokio::test]
async fn register_then_look_up_endpoints_and_resolved_resources() {
    let rd = Rd::start(RdConfig::default()).await;
    let client = Endpoint::client();
    // Over UDP without base: the base is the registrant's address (RFC 9176 §5.3).
    let r = send(
        &client,
        Code::POST,
        &rd.udp("/rd?ep=node1&et=oic.d.sensor"),
        SENSORS,
    )
    .await;
    assert_eq!(r.code(), Code::CREATED, "{}", r.message.payload_text());
    let at = location(&r);
    let base = format!("coap://127.0.0.1:{}", r.remote.local_addr().port());

    let eps = links(&client, &rd.ws("/rd-lookup/ep")).await;
    assert_eq!(targets(&eps), [at.as_str()]);
    let ep = &eps[0];
    assert_eq!(ep.param("ep"), Some("node1"));
    assert_eq!(ep.param("base"), Some(base.as_str()));
    assert_eq!(ep.param("rt"), Some("core.rd-ep"));
    assert_eq!(ep.param("lt"), Some("90000"));
    assert_eq!(ep.param("et"), Some("oic.d.sensor"));
    assert!(!ep.has_param("d"));

    let res = links(&client, &rd.ws("/rd-lookup/res")).await;
    assert_eq!(
        targets(&res),
        [format!("{base}/temp"), format!("{base}/light")]
    );
    assert_eq!(res[0].param("rt"), Some("temperature"));
    assert_eq!(res[0].param("if"), Some("sensor"));
    assert!(
        !res[0].has_param("anchor"),
        "the default context is left out"
    );
    assert_eq!(res[1].param("anchor"), Some(format!("{base}/x").as_str()));

    // The registration resource shows the links as registered.
    let own = links(&client, &rd.ws(&at)).await;
    assert_eq!(own, link_format::parse(SENSORS).unwrap());
    // An explicit base, and its older name con, set the base as given.
    let at2 = register(
        &client,
        &rd,
        "ep=node2&con=coap://%5B2001:db8::2%5D:61616",
        "</a>",
    )
    .await;
    assert_ne!(at2, at);
    let res = links(&client, &rd.ws("/rd-lookup/res?ep=node2")).await;
    assert_eq!(targets(&res), ["coap://[2001:db8::2]:61616/a"]);
}

#[tokio::test]
async fn update_refreshes_the_lifetime_and_changes_base_and_attributes() {
    let rd = Rd::start(RdConfig::default()).await;
    let client = Endpoint::client();
    let at = register(&client, &rd, "ep=up&lt=2&base=coap://h1&et=a&x=1", SENSORS).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = send(
        &client,
        Code::POST,
        &rd.ws(&format!("{at}?lt=3&base=coap://h2&x=2")),
        "",
    )
    .await;
    assert_eq!(r.code(), Code::CHANGED, "{}", r.message.payload_text());
    // Past the first lifetime, within the new one.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let eps = links(&client, &rd.ws("/rd-lookup/ep")).await;
    assert_eq!(
        targets(&eps),
        [at.as_str()],
        "the update renewed the lifetime"
    );
    assert_eq!(eps[0].param("lt"), Some("3"));
    assert_eq!(eps[0].param("base"), Some("coap://h2"));
    assert_eq!(eps[0].param("et"), Some("a"), "attributes not named stay");
    let xs: Vec<_> = eps[0].param_words("x").collect();
    assert_eq!(xs, ["2"], "a named attribute is replaced");
    let res = links(&client, &rd.ws("/rd-lookup/res")).await;
    assert_eq!(targets(&res), ["coap://h2/temp", "coap://h2/light"]);
    // An update carries no payload (RFC 9176 §5.3.1), and ep cannot change.
    let with_body = send(&client, Code::POST, &rd.ws(&at), "</b>").await;
    assert_eq!(with_body.code(), Code::BAD_REQUEST);
    let rename = code_of(&client, Code::POST, &rd.ws(&format!("{at}?ep=other")), "").await;
    assert_eq!(rename, Code::BAD_REQUEST);
    let bad_lt = code_of(&client, Code::POST, &rd.ws(&format!("{at}?lt=0")), "").await;
    assert_eq!(bad_lt, Code::BAD_REQUEST);
    // New links come with a new registration of the same endpoint, at the same location.
    let again = register(&client, &rd, "ep=up&base=coap://h2", "</new>;rt=fresh").await;
    assert_eq!(again, at);
    let res = links(&client, &rd.ws("/rd-lookup/res")).await;
    assert_eq!(targets(&res), ["coap://h2/new"]);
    let unknown = code_of(&client, Code::POST, &rd.ws("/rd/nosuchid"), "").await;
    assert_eq!(unknown, Code::NOT_FOUND);
}

#[tokio::test]
async fn delete_removes_the_registration() {
    let rd = Rd::start(RdConfig::default()).await;
    let client = Endpoint::client();
    let at = register(&client, &rd, "ep=gone&base=coap://h", SENSORS).await;
    let keep = register(&client, &rd, "ep=stays&base=coap://k", "</k>").await;
    assert_eq!(
        code_of(&client, Code::DELETE, &rd.ws(&at), "").await,
        Code::DELETED
    );
    let eps = links(&client, &rd.ws("/rd-lookup/ep")).await;
    assert_eq!(targets(&eps), [keep.as_str()]);
    let res = links(&client, &rd.ws("/rd-lookup/res")).await;
    assert_eq!(targets(&res), ["coap://k/k"]);
    for method in [Code::GET, Code::DELETE, Code::POST] {
        let code = code_of(&client, method, &rd.ws(&at), "").await;
        assert_eq!(code, Code::NOT_FOUND, "{method} after DELETE");
    }
    let deeper = code_of(&client, Code::GET, &rd.ws(&format!("{keep}/x")), "").await;
    assert_eq!(deeper, Code::NOT_FOUND);
}

#[tokio::test]
async fn registrations_expire_after_their_lifetime() {
    let rd = Rd::start(RdConfig::default()).await;
    let client = Endpoint::client();
    let short = register(&client, &rd, "ep=brief&lt=1&base=coap://b", "</b>").await;
    let long = register(&client, &rd, "ep=long&lt=60&base=coap://l", "</l>").await;
    let eps = links(&client, &rd.ws("/rd-lookup/ep")).await;
    assert_eq!(targets(&eps), [short.as_str(), long.as_str()]);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let eps = links(&client, &rd.ws("/rd-lookup/ep")).await;
    assert_eq!(targets(&eps), [long.as_str()]);
    let res = links(&client, &rd.ws("/rd-lookup/res")).await;
    assert_eq!(targets(&res), ["coap://l/l"]);
    let gone = code_of(&client, Code::GET, &rd.ws(&short), "").await;
    assert_eq!(gone, Code::NOT_FOUND);
    let update = code_of(&client, Code::POST, &rd.ws(&short), "").await;
    assert_eq!(
        update,
        Code::NOT_FOUND,
        "an expired registration cannot be revived"
    );
}

#[tokio::test]
async fn same_endpoint_and_sector_replaces_the_registration() {
    let rd = Rd::start(RdConfig::default()).await;
    let client = Endpoint::client();
    let first = register(&client, &rd, "ep=twin&d=lab&base=coap://a&et=old", "</1>").await;
    let other_sector = register(&client, &rd, "ep=twin&base=coap://b", "</2>").await;
    assert_ne!(
        first, other_sector,
        "another sector is another registration"
    );
    let second = register(&client, &rd, "ep=twin&d=lab&base=coap://c", "</3>").await;
    assert_eq!(second, first, "same ep and d: same registration resource");
    let eps = links(&client, &rd.ws("/rd-lookup/ep?d=lab")).await;
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].param("base"), Some("coap://c"));
    assert!(
        !eps[0].has_param("et"),
        "the new registration's attributes only"
    );
    let res = links(&client, &rd.ws("/rd-lookup/res")).await;
    assert_eq!(targets(&res), ["coap://c/3", "coap://b/2"]);
}

async fn three_endpoints(client: &Endpoint, rd: &Rd) {
    register(
        client,
        rd,
        "ep=node1&base=coap://h1&et=core.rd-group",
        "</temp>;rt=temperature;if=sensor,</light>;rt=light-lux;if=sensor",
    )
    .await;
    register(
        client,
        rd,
        "ep=node2&d=lab&base=coap://h2",
        "</t>;rt=\"temperature-c other\",</act>;if=actuator",
    )
    .await;
    register(
        client,
        rd,
        "ep=other&base=coap://x9",
        "</light>;rt=light-lux",
    )
    .await;
}

#[tokio::test]
async fn lookups_filter_by_attributes() {
    let rd = Rd::start(RdConfig::default()).await;
    let client = Endpoint::client();
    three_endpoints(&client, &rd).await;
    let ep_names = |links: Vec<Link>| -> Vec<String> {
        links
            .iter()
            .map(|l| l.param("ep").unwrap_or("?").to_owned())
            .collect()
    };
    let lookup_ep = |q: &str| rd.ws(&format!("/rd-lookup/ep?{q}"));
    let lookup_res = |q: &str| rd.ws(&format!("/rd-lookup/res?{q}"));

    assert_eq!(
        ep_names(links(&client, &lookup_ep("ep=node2")).await),
        ["node2"]
    );
    assert_eq!(
        ep_names(links(&client, &lookup_ep("ep=node*")).await),
        ["node1", "node2"]
    );
    assert_eq!(
        ep_names(links(&client, &lookup_ep("d=lab")).await),
        ["node2"]
    );
    assert_eq!(
        ep_names(links(&client, &lookup_ep("base=coap://x*")).await),
        ["other"]
    );
    // An endpoint matches through its links too.
    assert_eq!(
        ep_names(links(&client, &lookup_ep("if=actuator")).await),
        ["node2"]
    );
    assert_eq!(
        ep_names(links(&client, &lookup_ep("rt=light-lux")).await),
        ["node1", "other"]
    );
    assert!(links(&client, &lookup_ep("ep=nobody")).await.is_empty());

    let res = links(&client, &lookup_res("rt=temperature")).await;
    assert_eq!(targets(&res), ["coap://h1/temp"]);
    let res = links(&client, &lookup_res("rt=temp*")).await;
    assert_eq!(targets(&res), ["coap://h1/temp", "coap://h2/t"]);
    let res = links(&client, &lookup_res("rt=other")).await;
    assert_eq!(targets(&res), ["coap://h2/t"], "one word of rt");
    // An endpoint attribute selects that endpoint's links.
    let res = links(&client, &lookup_res("ep=node1")).await;
    assert_eq!(targets(&res), ["coap://h1/temp", "coap://h1/light"]);
    let res = links(&client, &lookup_res("et=core.rd-group&if=sensor")).await;
    assert_eq!(targets(&res), ["coap://h1/temp", "coap://h1/light"]);
    let res = links(&client, &lookup_res("rt=light-lux&ep=other")).await;
    assert_eq!(targets(&res), ["coap://x9/light"]);
    let res = links(&client, &lookup_res("href=coap://h2/*")).await;
    assert_eq!(targets(&res), ["coap://h2/t", "coap://h2/act"]);
    let res = links(&client, &lookup_res("href=/light")).await;
    assert!(res.is_empty(), "href compares with the resolved target");

    for bad in [
        "/rd-lookup/res?page=1",
        "/rd-lookup/ep?count=two",
        "/rd-lookup/res?=x",
    ] {
        let code = code_of(&client, Code::GET, &rd.ws(bad), "").await;
        assert_eq!(code, Code::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test]
async fn lookups_page_with_page_and_count() {
    let rd = Rd::start(RdConfig::default()).await;
    let client = Endpoint::client();
    for i in 0..5 {
        register(
            &client,
            &rd,
            &format!("ep=e{i}&base=coap://h{i}"),
            "</a>,</b>",
        )
        .await;
    }
    let mut seen = Vec::new();
    for (page, want) in [(0, 2), (1, 2), (2, 1), (3, 0)] {
        let uri = rd.ws(&format!("/rd-lookup/ep?count=2&page={page}"));
        let got = links(&client, &uri).await;
        assert_eq!(got.len(), want, "page {page}");
        seen.extend(got.iter().map(|l| l.param("ep").unwrap().to_owned()));
    }
    assert_eq!(seen, ["e0", "e1", "e2", "e3", "e4"]);
    let res = links(&client, &rd.ws("/rd-lookup/res?count=3&page=1")).await;
    assert_eq!(targets(&res), ["coap://h1/b", "coap://h2/a", "coap://h2/b"]);
    let first = links(&client, &rd.ws("/rd-lookup/res?count=1")).await;
    assert_eq!(targets(&first), ["coap://h0/a"]);
    // Paging applies after filtering.
    let res = links(
        &client,
        &rd.ws("/rd-lookup/res?href=coap://h*&count=4&page=2"),
    )
    .await;
    assert_eq!(targets(&res), ["coap://h4/a", "coap://h4/b"]);
}

#[tokio::test]
async fn well_known_core_advertises_the_directory() {
    let rd = Rd::start(RdConfig::default()).await;
    let client = Endpoint::client();
    let found = links(&client, &rd.ws("/.well-known/core?rt=core.rd*")).await;
    let mut pairs: Vec<_> = found
        .iter()
        .map(|l| {
            (
                l.target.as_str(),
                l.param("rt").unwrap(),
                l.param("ct").unwrap(),
            )
        })
        .collect();
    pairs.sort();
    assert_eq!(
        pairs,
        [
            ("/rd", "core.rd", "40"),
            ("/rd-lookup/ep", "core.rd-lookup-ep", "40"),
            ("/rd-lookup/res", "core.rd-lookup-res", "40"),
        ]
    );
    let one = links(&client, &rd.ws("/.well-known/core?rt=core.rd-lookup-res")).await;
    assert_eq!(targets(&one), ["/rd-lookup/res"]);
}

#[tokio::test]
async fn malformed_registrations_get_4_00_or_4_15() {
    let config = RdConfig {
        max_lifetime: 1000,
        ..RdConfig::default()
    };
    let rd = Rd::start(config).await;
    let client = Endpoint::client();
    let long_name = "n".repeat(64);
    for (query, payload) in [
        ("base=coap://h", "</a>"),
        ("ep=&base=coap://h", ""),
        (&format!("ep={long_name}&base=coap://h")[..], ""),
        ("ep=a&d=&base=coap://h", ""),
        ("ep=a&lt=0&base=coap://h", ""),
        ("ep=a&lt=abc&base=coap://h", ""),
        ("ep=a&lt=1001&base=coap://h", ""),
        ("ep=a&lt=99999999999&base=coap://h", ""),
        ("ep=a&base=not-absolute", ""),
        ("ep=a&base=coap://h&rt=x", ""),
        ("ep=a&ep=b&base=coap://h", ""),
        ("ep=a&base=coap://h", "not link format"),
        ("ep=a&base=coap://h", "<unterminated"),
    ] {
        let r = send(
            &client,
            Code::POST,
            &rd.ws(&format!("/rd?{query}")),
            payload,
        )
        .await;
        assert_eq!(r.code(), Code::BAD_REQUEST, "{query} {payload:?}");
    }
    // Over WebSocket without base and without a proxy domain there is no base to derive.
    let r = send(&client, Code::POST, &rd.ws("/rd?ep=a"), "</a>").await;
    assert_eq!(r.code(), Code::BAD_REQUEST);
    assert!(
        r.message.payload_text().contains("no base"),
        "{}",
        r.message.payload_text()
    );
    // Not link-format.
    let json = Request::new(Code::POST, &rd.ws("/rd?ep=a&base=coap://h"))
        .unwrap()
        .payload("{}")
        .content_format(50);
    assert_eq!(
        client.send(json).await.unwrap().code(),
        Code::UNSUPPORTED_CONTENT_FORMAT
    );
    assert!(links(&client, &rd.ws("/rd-lookup/ep")).await.is_empty());
    // lt at the maximum is fine.
    register(&client, &rd, "ep=a&lt=1000&base=coap://h", "").await;
}

#[tokio::test]
async fn oversize_registrations_get_4_13() {
    let config = RdConfig {
        max_payload: 200,
        max_links: 3,
        ..RdConfig::default()
    };
    let rd = Rd::start(config).await;
    let client = Endpoint::client();
    let big = format!("</{}>", "a".repeat(198));
    assert_eq!(big.len(), 201);
    let r = send(
        &client,
        Code::POST,
        &rd.ws("/rd?ep=big&base=coap://h"),
        &big,
    )
    .await;
    assert_eq!(r.code(), Code::REQUEST_ENTITY_TOO_LARGE);
    assert_eq!(r.message.options.get_uint(OptionNumber::SIZE1), Some(200));
    let many = "</a>,</b>,</c>,</d>";
    let r = send(
        &client,
        Code::POST,
        &rd.ws("/rd?ep=many&base=coap://h"),
        many,
    )
    .await;
    assert_eq!(r.code(), Code::REQUEST_ENTITY_TOO_LARGE);
    assert!(links(&client, &rd.ws("/rd-lookup/ep")).await.is_empty());
    register(&client, &rd, "ep=fits&base=coap://h", "</a>,</b>,</c>").await;
}

#[tokio::test]
async fn a_full_directory_answers_5_03_with_max_age() {
    let config = RdConfig {
        max_registrations: 2,
        full_retry_after: 30,
        ..RdConfig::default()
    };
    let rd = Rd::start(config).await;
    let client = Endpoint::client();
    let a = register(&client, &rd, "ep=a&base=coap://h", "").await;
    register(&client, &rd, "ep=b&base=coap://h", "").await;
    let r = send(&client, Code::POST, &rd.ws("/rd?ep=c&base=coap://h"), "").await;
    assert_eq!(r.code(), Code::SERVICE_UNAVAILABLE);
    assert_eq!(r.message.options.get_uint(OptionNumber::MAX_AGE), Some(30));
    // Replacing a registration takes no room; removing one makes room.
    assert_eq!(register(&client, &rd, "ep=a&base=coap://h2", "").await, a);
    assert_eq!(
        code_of(&client, Code::DELETE, &rd.ws(&a), "").await,
        Code::DELETED
    );
    register(&client, &rd, "ep=c&base=coap://h", "").await;
    assert_eq!(links(&client, &rd.ws("/rd-lookup/ep")).await.len(), 2);
}

/// An endpoint with a site of its own: GET `/whoami` answers `name`.
fn endpoint_named(name: &'static str) -> Endpoint {
    let site = Site::new().resource(
        "/whoami",
        Resource::new()
            .get(move |_r: IncomingRequest| async move { Message::response(Code::CONTENT, name) }),
    );
    Endpoint::builder().site(site).build()
}

async fn lookup_eps(rd: &Rd) -> Vec<Link> {
    links(&Endpoint::client(), &rd.udp("/rd-lookup/ep")).await
}

#[tokio::test]
async fn a_websocket_registration_gets_a_proxy_base_and_ends_with_its_connection() {
    let rd = Rd::start(RdConfig {
        proxy_domain: Some("proxy.example".into()),
        ..RdConfig::default()
    })
    .await;
    let node = endpoint_named("node7 itself");
    let at = register(&node, &rd, "ep=node7", "</whoami>;rt=name").await;
    let eps = lookup_eps(&rd).await;
    assert_eq!(targets(&eps), [at.as_str()]);
    assert_eq!(eps[0].param("base"), Some("coap+ws://node7.proxy.example"));
    let res = links(&Endpoint::client(), &rd.udp("/rd-lookup/res")).await;
    assert_eq!(targets(&res), ["coap+ws://node7.proxy.example/whoami"]);

    // The server reaches the endpoint over its own connection.
    let remote = rd
        .rd
        .endpoint_remote("node7")
        .expect("registered over a connection");
    assert!(rd.rd.endpoint_remote("node8").is_none());
    let answer = remote
        .request(Message::request(Code::GET, "/whoami"), WAIT)
        .await
        .expect("the endpoint answers");
    assert_eq!(answer.code, Code::CONTENT);
    assert_eq!(answer.payload_text(), "node7 itself");

    // A name that cannot be a host label needs an explicit base.
    let r = send(&node, Code::POST, &rd.ws("/rd?ep=Node_8"), "").await;
    assert_eq!(r.code(), Code::BAD_REQUEST);

    let closed_at = tokio::time::Instant::now();
    node.shutdown().await;
    wait_until("the registration is gone", || {
        rd.rd.endpoint_remote("node7").is_none()
    })
    .await;
    let deadline = closed_at + Duration::from_secs(2);
    loop {
        if lookup_eps(&rd).await.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still listed 2 s after closing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(rd.rd.registrations().await.is_empty());
}

#[tokio::test]
async fn a_tcp_registration_is_tied_to_its_connection_too() {
    let rd = Rd::start(RdConfig {
        proxy_domain: Some("p.example".into()),
        ..RdConfig::default()
    })
    .await;
    let node = endpoint_named("over tcp");
    let uri = format!("coap+tcp://{}/rd?ep=t1&d=lab", rd.tcp);
    let r = send(&node, Code::POST, &uri, "</whoami>").await;
    assert_eq!(r.code(), Code::CREATED, "{}", r.message.payload_text());
    let eps = lookup_eps(&rd).await;
    assert_eq!(eps[0].param("base"), Some("coap+tcp://t1.lab.p.example"));
    assert!(
        rd.rd.endpoint_remote("t1").is_none(),
        "endpoint_remote is for the default sector"
    );
    drop(node);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while !lookup_eps(&rd).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still listed 2 s after the drop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_replaced_registration_follows_the_new_connection() {
    let rd = Rd::start(RdConfig {
        proxy_domain: Some("proxy.example".into()),
        ..RdConfig::default()
    })
    .await;
    let old = endpoint_named("old");
    let new = endpoint_named("new");
    let first = register(&old, &rd, "ep=mover", "</whoami>").await;
    let second = register(&new, &rd, "ep=mover", "</whoami>").await;
    assert_eq!(first, second);
    old.shutdown().await;
    // The old connection's end does not remove the registration it no longer holds.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(targets(&lookup_eps(&rd).await), [first.as_str()]);
    let remote = rd.rd.endpoint_remote("mover").expect("the new connection");
    let answer = remote
        .request(Message::request(Code::GET, "/whoami"), WAIT)
        .await
        .unwrap();
    assert_eq!(answer.payload_text(), "new");
    // An update over the same connection keeps it tied.
    assert_eq!(
        code_of(&new, Code::POST, &rd.ws(&format!("{first}?lt=100")), "").await,
        Code::CHANGED
    );
    new.shutdown().await;
    wait_until("the registration ended with the new connection", || {
        rd.rd.endpoint_remote("mover").is_none()
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while !lookup_eps(&rd).await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "still listed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
