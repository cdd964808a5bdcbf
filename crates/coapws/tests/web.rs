//! The web front of the WebSocket listener over real loopback sockets: a website on the same
//! port as CoAP over WebSockets (embedded or from a directory, GET, HEAD, 304, 404, 405,
//! confinement, also on coaps+ws), and the browser origin policy.

mod common;

use coapws::proto::Code;
use coapws::web::WebContent;
use coapws::{Endpoint, EndpointConfig};
use common::WAIT;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

static INDEX: &[u8] = b"<!doctype html><title>console</title>";
static SCRIPT: &[u8] = b"export const x = 1;\n";

async fn server(config: EndpointConfig, web: Option<WebContent>) -> (Endpoint, SocketAddr) {
    let mut b = Endpoint::builder().config(config).site(common::test_site());
    if let Some(w) = web {
        b = b.web(w);
    }
    let ep = b.build();
    let addr = ep.listen_ws("127.0.0.1:0".parse().unwrap()).await.unwrap();
    (ep, addr)
}

fn embedded() -> WebContent {
    WebContent::embedded(&[("index.html", INDEX), ("js/app.js", SCRIPT)])
}

/// One HTTP/1.1 request on a fresh connection; the whole answer (head and body) as text.
async fn http(addr: SocketAddr, head: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("the server answers and closes");
    String::from_utf8_lossy(&out).into_owned()
}

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}\r\n")
}

fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    answer.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn body(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

#[tokio::test]
async fn the_websocket_port_serves_a_website_beside_coap() {
    let (_s, addr) = server(EndpointConfig::default(), Some(embedded())).await;
    let r = http(addr, &get("/", "")).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(header(&r, "content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(header(&r, "cache-control"), Some("no-cache"));
    assert_eq!(body(&r).as_bytes(), INDEX);
    let etag = header(&r, "etag").expect("ETag").to_owned();
    let modified = header(&r, "last-modified")
        .expect("Last-Modified")
        .to_owned();

    let r = http(addr, &get("/js/app.js", "")).await;
    assert_eq!(
        header(&r, "content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(body(&r).as_bytes(), SCRIPT);

    // Revalidation: 304 by ETag, and by date; a stale ETag gets the body.
    let r = http(addr, &get("/", &format!("If-None-Match: {etag}\r\n"))).await;
    assert!(r.starts_with("HTTP/1.1 304"), "{r}");
    assert!(body(&r).is_empty());
    let r = http(
        addr,
        &get("/", &format!("If-Modified-Since: {modified}\r\n")),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 304"), "{r}");
    let r = http(addr, &get("/", "If-None-Match: \"other\"\r\n")).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");

    // HEAD: the headers, no body.
    let r = http(
        addr,
        "HEAD /index.html HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(
        header(&r, "content-length"),
        Some(&*INDEX.len().to_string())
    );
    assert!(body(&r).is_empty());

    // Missing, escaping, and other methods.
    for path in ["/nope.html", "/../etc/passwd", "/.hidden", "/%2e%2e/x"] {
        let r = http(addr, &get(path, "")).await;
        assert!(r.starts_with("HTTP/1.1 404"), "{path}: {r}");
    }
    let r = http(
        addr,
        "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 405"), "{r}");
    assert_eq!(header(&r, "allow"), Some("GET, HEAD"));

    // CoAP over WebSockets on the same port, unchanged.
    let mut ws = common::raw(addr).await;
    common::handshake_csm(&mut ws).await;
    common::send_coap(&mut ws, &common::get("/hello", 1)).await;
    let m = common::next_coap(&mut ws).await.unwrap();
    assert_eq!(m.code, Code::CONTENT);
}

#[tokio::test]
async fn without_a_website_other_paths_get_404() {
    let (_s, addr) = server(EndpointConfig::default(), None).await;
    let r = http(addr, &get("/", "")).await;
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
}

#[tokio::test]
async fn a_directory_website_is_confined_to_its_folder() {
    let dir = std::env::temp_dir().join(format!("coapws-web-{}", std::process::id()));
    let site = dir.join("site");
    std::fs::create_dir_all(site.join("sub")).unwrap();
    std::fs::write(site.join("index.html"), "root page").unwrap();
    std::fs::write(site.join("sub/index.html"), "sub page").unwrap();
    std::fs::write(dir.join("secret.txt"), "secret").unwrap();
    std::os::unix::fs::symlink(dir.join("secret.txt"), site.join("link.txt")).unwrap();
    let (_s, addr) = server(
        EndpointConfig::default(),
        Some(WebContent::dir(&site).unwrap()),
    )
    .await;
    assert_eq!(body(&http(addr, &get("/", "")).await), "root page");
    assert_eq!(body(&http(addr, &get("/sub/", "")).await), "sub page");
    let r = http(addr, &get("/link.txt", "")).await;
    assert!(
        r.starts_with("HTTP/1.1 404"),
        "a symlink out of the folder: {r}"
    );
    // A file changed on disk is served changed, with a new ETag.
    let e1 = header(&http(addr, &get("/", "")).await, "etag").map(str::to_owned);
    std::fs::write(site.join("index.html"), "root page, changed").unwrap();
    let r = http(addr, &get("/", "")).await;
    assert_eq!(body(&r), "root page, changed");
    assert_ne!(header(&r, "etag").map(str::to_owned), e1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn the_website_is_served_on_coaps_ws_too() {
    let pki = common::pki();
    let ep = Endpoint::builder()
        .site(common::test_site())
        .web(embedded())
        .build();
    let addr = ep
        .listen_wss("127.0.0.1:0".parse().unwrap(), &pki.identity)
        .await
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(get("/", "").as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut out)).await;
    let r = String::from_utf8_lossy(&out);
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(body(&r).as_bytes(), INDEX);
    // And CoAP over that listener still works.
    let client = Endpoint::builder()
        .tls_client(common::trusting(&pki))
        .build();
    let r = client
        .get(&format!("coaps+ws://localhost:{}/hello", addr.port()))
        .await
        .unwrap();
    assert_eq!(r.code(), Code::CONTENT);
}

/// Regression: a handshake with `Origin: https://evil.example` got 101, so any web page a user
/// visited could PUT and DELETE files on their `coapws serve ./www --write`.
#[tokio::test]
async fn a_foreign_origin_cannot_open_a_coap_websocket() {
    let upgrade = |origin: &str| {
        let origin = if origin.is_empty() {
            String::new()
        } else {
            format!("Origin: {origin}\r\n")
        };
        format!(
            "GET /.well-known/coap HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: coap\r\n{origin}\r\n"
        )
    };
    let status = |addr: SocketAddr, origin: &str| {
        let req = upgrade(origin).replace("PORT", &addr.port().to_string());
        async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(req.as_bytes()).await.unwrap();
            let mut buf = vec![0u8; 12];
            tokio::time::timeout(WAIT, s.read_exact(&mut buf))
                .await
                .unwrap()
                .unwrap();
            String::from_utf8_lossy(&buf[9..12]).into_owned()
        }
    };
    let (_s, addr) = server(EndpointConfig::default(), None).await;
    let own = format!("http://127.0.0.1:{}", addr.port());
    assert_eq!(status(addr, "").await, "101", "no Origin: not a browser");
    assert_eq!(status(addr, &own).await, "101", "same origin");
    assert_eq!(status(addr, "https://evil.example").await, "403");
    assert_eq!(
        status(addr, "http://127.0.0.1:1").await,
        "403",
        "another port"
    );

    let allowing = EndpointConfig {
        allowed_origins: vec!["https://app.example".into()],
        ..EndpointConfig::default()
    };
    let (_s2, addr2) = server(allowing, None).await;
    assert_eq!(status(addr2, "https://app.example").await, "101");
    assert_eq!(status(addr2, "https://evil.example").await, "403");

    let any = EndpointConfig {
        allowed_origins: vec!["*".into()],
        ..EndpointConfig::default()
    };
    let (_s3, addr3) = server(any, None).await;
    assert_eq!(status(addr3, "https://evil.example").await, "101");
}
