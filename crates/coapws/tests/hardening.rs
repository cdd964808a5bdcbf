//! Regression tests for defects an audit found in the runtime, one per defect; the limits on
//! what a peer can make the server hold (memory, concurrent requests, connections, uploads);
//! slow and silent peers on the stream transports; and the file server's confinement, over
//! the wire. Loopback only, every wait bounded.

mod common;

use coapws::proto::codec::udp::{self as udp_codec, MessageType, UdpHeader};
use coapws::proto::{BlockValue, Code, Message, OptionNumber, Token};
use coapws::site::files::FileServer;
use coapws::{Endpoint, EndpointConfig, Request, Site};
use common::WAIT;
use std::path::PathBuf;
use std::time::Duration;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p =
            std::env::temp_dir().join(format!("coapws-audit-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// site/files.rs `FileServer::delete`: GET and PUT check, after following symlinks, that the
/// path stays inside the root (`inside_root`); DELETE does not. `symlink_metadata` only leaves
/// the *last* component unfollowed, so `DELETE /link/victim` with `link` a symlink to a
/// directory outside the root deletes a file outside the root.
#[cfg(unix)]
#[tokio::test]
async fn file_server_delete_does_not_escape_root_through_symlinked_directory() {
    let tmp = TempDir::new("files");
    let root = tmp.0.join("root");
    let outside = tmp.0.join("outside");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let victim = outside.join("victim.txt");
    std::fs::write(&victim, "do not delete").unwrap();
    std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();

    let files = FileServer::new(&root).unwrap().writable(true);
    let site = Site::new().files("/", files, Vec::new());
    let (_server, addr) = common::server_with(EndpointConfig::default(), Some(site)).await;
    let client = Endpoint::client();
    let target = common::uri(addr, "/link/victim.txt");

    // The policy the file server states: what a symlink leads outside to is not there.
    let get = tokio::time::timeout(WAIT, client.get(&target))
        .await
        .expect("no hang")
        .unwrap();
    assert_eq!(get.code(), Code::NOT_FOUND, "GET refuses the escape");

    let del = tokio::time::timeout(
        WAIT,
        client.send(Request::new(Code::DELETE, &target).unwrap()),
    )
    .await
    .expect("no hang")
    .unwrap();
    assert!(
        victim.exists(),
        "DELETE {target} answered {} and deleted {} outside the served root",
        del.code(),
        victim.display()
    );
    assert_ne!(del.code(), Code::DELETED);
}

/// dispatch.rs `SiteDispatch::remember`: responses kept for their later Block2 pieces are
/// bounded by bytes (`upload_memory`), not only by count (`max_uploads`). A peer with the base
/// Max-Message-Size (1152) POSTs 10 KiB bodies to an echoing resource under distinct targets:
/// every response is cut into Block2 pieces and kept whole, the oldest making room for the
/// newest. With 32 KiB, exactly the 3 newest fit: their block 1 is served from what was kept;
/// every other exchange's block 1 gets 4.08 (its response is gone and a POST is not run twice).
#[tokio::test]
async fn block2_response_cache_respects_upload_memory() {
    const BODY: usize = 10 * 1024;
    const EXCHANGES: usize = 16;
    let config = EndpointConfig {
        upload_memory: 32 * 1024,
        ..EndpointConfig::default()
    };
    let fit = config.upload_memory / BODY;
    assert_eq!(fit, 3);
    let (_server, addr) = common::server_with(config.clone(), Some(common::test_site())).await;
    let mut ws = common::raw(addr).await;
    // Our CSM without Max-Message-Size: the server assumes 1152 and goes block-wise.
    common::handshake_csm(&mut ws).await;

    let post = |i: usize, token: u8| {
        Message::request(Code::POST, "/echo")
            .with_option(OptionNumber::URI_QUERY, format!("n={i}").into_bytes())
            .with_token(Token::new(vec![token]))
    };
    for i in 0..EXCHANGES {
        let m = post(i, i as u8).with_payload(vec![b'a' + (i % 26) as u8; BODY]);
        common::send_coap(&mut ws, &m).await;
        let r = common::next_coap(&mut ws).await.expect("a response");
        assert_eq!(r.token, m.token);
        assert_eq!(r.code, Code::CHANGED, "exchange {i}: {}", r.payload_text());
        let b = r.options.block2().expect("cut block-wise");
        assert!(
            b.num == 0 && b.more,
            "exchange {i}: first of several blocks"
        );
        assert_eq!(r.payload[0], b'a' + (i % 26) as u8);
    }
    // Now fetch block 1 of every exchange: the server can only serve it from what it kept.
    let mut held = Vec::new();
    for i in 0..EXCHANGES {
        let m = post(i, 100 + i as u8).with_option(
            OptionNumber::BLOCK2,
            BlockValue {
                num: 1,
                more: false,
                szx: 6,
            }
            .encode(),
        );
        common::send_coap(&mut ws, &m).await;
        let r = common::next_coap(&mut ws).await.expect("a response");
        assert_eq!(r.token, m.token);
        match r.code {
            Code::CHANGED => {
                assert_eq!(r.options.block2().map(|b| b.num), Some(1));
                assert!(
                    r.payload.iter().all(|&c| c == b'a' + (i % 26) as u8),
                    "exchange {i}: block 1 of its own response"
                );
                held.push(i);
            }
            Code::REQUEST_ENTITY_INCOMPLETE => {}
            other => panic!(
                "exchange {i}: block 1 answered {other}: {}",
                r.payload_text()
            ),
        }
    }
    assert!(
        held.len() * BODY <= config.upload_memory,
        "the server held {} responses of {BODY} bytes at once (upload_memory {})",
        held.len(),
        config.upload_memory
    );
    assert_eq!(
        held,
        (EXCHANGES - fit..EXCHANGES).collect::<Vec<_>>(),
        "the newest responses that fit in upload_memory are kept, the others were made room for"
    );
}

/// transport/udp.rs `SocketDriver::incoming`: `max_concurrent_requests` is counted per peer
/// address over UDP, and `udp_max_concurrent_requests` for the whole socket. One peer with slow
/// requests gets 5.03 past its own budget while another peer is served; once the socket's
/// budget is used up by several peers, a peer with nothing running gets 5.03 too.
///
/// No waiting on time: datagrams on one socket are handled in the order they arrive, so a
/// response to a later datagram shows the earlier ones were counted.
#[tokio::test]
async fn one_udp_peer_cannot_starve_the_others() {
    let config = EndpointConfig {
        max_concurrent_requests: 2,
        udp_max_concurrent_requests: 4,
        ..EndpointConfig::default()
    };
    let server = Endpoint::builder()
        .config(config)
        .site(common::test_site())
        .build();
    let addr = server
        .listen_udp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let peer = || async { tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap() };
    let (a, b, c, d) = (peer().await, peer().await, peer().await, peer().await);

    // Peer A: two slow requests (its whole budget), then a third: 5.03 with Max-Age 1.
    for i in 0..2u16 {
        send_con(&a, addr, "/never", 0x1000 + i, &[0xa0, i as u8]).await;
    }
    send_con(&a, addr, "/hello", 0x1002, &[0xa0, 2]).await;
    let r = response_to(&a, &[0xa0, 2]).await;
    assert_eq!(
        r.code,
        Code::SERVICE_UNAVAILABLE,
        "A's third request, past its per-peer budget of 2: {}",
        r.payload_text()
    );
    assert_eq!(r.options.get_uint(OptionNumber::MAX_AGE), Some(1));

    // Peer B, a different address, is served: A holds 2 of the socket's 4.
    send_con(&b, addr, "/hello", 0x2000, &[0xb0]).await;
    let r = response_to(&b, &[0xb0]).await;
    assert_eq!(
        r.code,
        Code::CONTENT,
        "peer B got {} because peer A holds the socket's whole request budget",
        r.code
    );

    // Peer C takes the socket's last 2; peer D, with nothing running, hits the socket's cap.
    for i in 0..2u16 {
        send_con(&c, addr, "/never", 0x3000 + i, &[0xc0, i as u8]).await;
    }
    send_con(&d, addr, "/hello", 0x4000, &[0xd0]).await;
    let r = response_to(&d, &[0xd0]).await;
    assert_eq!(
        r.code,
        Code::SERVICE_UNAVAILABLE,
        "peer D with 4 of 4 requests running on the socket: {}",
        r.payload_text()
    );
}

/// Sends a Confirmable GET `path` with `token` from `from` to `to`.
async fn send_con(
    from: &tokio::net::UdpSocket,
    to: std::net::SocketAddr,
    path: &str,
    mid: u16,
    token: &[u8],
) {
    let m = Message::request(Code::GET, path).with_token(Token::new(token.to_vec()));
    let header = UdpHeader {
        mtype: MessageType::Confirmable,
        message_id: mid,
    };
    from.send_to(&udp_codec::encode(&header, &m).unwrap(), to)
        .await
        .unwrap();
}

/// The next response with `token` on `sock` (skipping empty ACKs and anything else).
async fn response_to(sock: &tokio::net::UdpSocket, token: &[u8]) -> Message {
    let mut buf = [0u8; 1500];
    loop {
        let (n, _) = tokio::time::timeout(WAIT, sock.recv_from(&mut buf))
            .await
            .expect("a response in time")
            .unwrap();
        let (_, m) = udp_codec::decode(
            &bytes::Bytes::copy_from_slice(&buf[..n]),
            &Default::default(),
        )
        .expect("the server sends valid CoAP");
        if m.code != Code::EMPTY && m.token.as_bytes() == token {
            return m;
        }
    }
}

/// After the server releases a connection, the client's pool sends new requests on a new
/// connection, while the released one finishes what it had. Two requests are held in the
/// server's handlers; the first one's answer comes after the Release on the same connection,
/// so once the client has it, it has seen the Release too, and the connection is still up
/// for the second.
#[tokio::test]
async fn a_released_connection_takes_no_new_requests_from_the_pool() {
    let (site, mut rx) = common::with_register(common::test_site());
    let (site, mut gates) = common::with_gate(site);
    let server = Endpoint::builder().site(site).build();
    let addr = server
        .listen_ws("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = Endpoint::client();
    let u = |p: &str| format!("coap+ws://{addr}{p}");
    client
        .send(coapws::Request::new(Code::POST, &u("/register")).unwrap())
        .await
        .unwrap();
    let remote = rx.recv().await.unwrap();
    let held = |q: &str| {
        let client = client.clone();
        let u = u(&format!("/gate?{q}"));
        tokio::spawn(async move { client.get(&u).await })
    };
    let (first, second) = (held("1"), held("2"));
    let (open1, open2) = (
        common::entered(&mut gates).await,
        common::entered(&mut gates).await,
    );
    remote.connection().expect("a stream remote").release();
    open1.send(()).unwrap();
    let r = tokio::time::timeout(WAIT, first)
        .await
        .expect("no hang")
        .unwrap()
        .unwrap();
    assert_eq!(r.code(), Code::CONTENT);
    assert_eq!(client.connection_count(), 1, "the released one, still busy");
    // a new request opens a new connection instead of failing on the released one
    let r = client.get(&u("/hello")).await.unwrap();
    assert_eq!(r.code(), Code::CONTENT);
    assert_eq!(
        client.connection_count(),
        2,
        "/hello went on a new connection"
    );
    open2.send(()).unwrap();
    let r = tokio::time::timeout(WAIT, second)
        .await
        .expect("no hang")
        .unwrap()
        .unwrap();
    assert_eq!(
        r.code(),
        Code::CONTENT,
        "the released connection finished its request"
    );
    assert_eq!(r.message.payload_text(), "gate2");
}

#[tokio::test]
async fn no_response_does_not_stall_a_block1_upload() {
    use coapws::proto::udp::UdpConfig;
    use coapws::{IncomingRequest, Resource, Site};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let site = Site::new().resource(
        "/sink",
        Resource::new().post(move |req: IncomingRequest| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(req.message.payload.len());
                Message::new(Code::CHANGED)
            }
        }),
    );
    let config = EndpointConfig {
        udp: UdpConfig {
            ack_timeout: Duration::from_millis(100),
            ..UdpConfig::default()
        },
        ..EndpointConfig::default()
    };
    let server = Endpoint::builder()
        .config(config.clone())
        .site(site)
        .build();
    let addr = server
        .listen_udp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = Endpoint::builder().config(config).build();
    let r = client
        .send(
            coapws::Request::new(Code::POST, &format!("coap://{addr}/sink"))
                .unwrap()
                .payload(vec![1u8; 5000])
                .no_response(2),
        )
        .await;
    assert!(matches!(r, Err(coapws::Error::NoResponse)), "{r:?}");
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap();
    assert_eq!(got, Some(5000), "the whole body arrived");
}

#[tokio::test]
async fn bert_only_where_the_peer_allows_it() {
    use coapws::proto::OptionNumber;
    use coapws::proto::option::BlockValue;
    let bert = BlockValue {
        num: 0,
        more: false,
        szx: 7,
    }
    .encode();
    // UDP: no CSM, no BERT: 4.00 (RFC 8323 §6)
    let server = Endpoint::builder().site(common::test_site()).build();
    let udp = server
        .listen_udp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let ws = server
        .listen_ws("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = Endpoint::client();
    let r = client
        .send(
            coapws::Request::get(&format!("coap://{udp}/big"))
                .unwrap()
                .option(OptionNumber::BLOCK2, bert.clone()),
        )
        .await
        .unwrap();
    assert_eq!(r.code(), Code::BAD_REQUEST);
    // WebSocket with our CSM (Block-Wise-Transfer, 1 MiB): BERT blocks of several KiB
    let r = client
        .send(
            coapws::Request::get(&format!("coap+ws://{ws}/big"))
                .unwrap()
                .option(OptionNumber::BLOCK2, bert),
        )
        .await
        .unwrap();
    assert_eq!(r.code(), Code::CONTENT);
    assert_eq!(
        r.payload().len(),
        100 * 1024,
        "reassembled from BERT blocks"
    );
}

#[tokio::test]
async fn file_server_does_not_read_fifos() {
    use coapws::Site;
    use coapws::site::files::FileServer;
    let root = std::env::temp_dir().join(format!("coapws-fifo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(root.join("pipe"))
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo");
    let files = FileServer::new(&root).unwrap();
    let site = Site::new().files("/", files, vec![]);
    let server = Endpoint::builder().site(site).build();
    let addr = server
        .listen_ws("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        Endpoint::client().get(&format!("coap+ws://{addr}/pipe")),
    )
    .await
    .expect("no hang")
    .unwrap();
    assert_eq!(r.code(), Code::NOT_FOUND);
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn listeners_refuse_connections_beyond_the_limit() {
    let config = EndpointConfig {
        max_connections: 2,
        ..EndpointConfig::default()
    };
    let (server, addr) = common::server_with(config, Some(common::test_site())).await;
    let (a, b) = (Endpoint::client(), Endpoint::client());
    a.get(&format!("coap+ws://{addr}/hello")).await.unwrap();
    b.get(&format!("coap+ws://{addr}/hello")).await.unwrap();
    assert_eq!(server.connection_count(), 2);
    let err = Endpoint::client()
        .get(&format!("coap+ws://{addr}/hello"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, coapws::Error::Handshake { reason, .. } if reason.contains("503")),
        "{err:?}"
    );
    // when one leaves, there is room again
    a.shutdown().await;
    common::wait_until("the server saw a leave", || server.connection_count() < 2).await;
    let r = Endpoint::client()
        .get(&format!("coap+ws://{addr}/hello"))
        .await
        .unwrap();
    assert_eq!(r.code(), Code::CONTENT);
}

// ---------------------------------------------------------------------------------------------
// Slow and silent peers on the stream transports, and the limits on what a peer can hold
// ---------------------------------------------------------------------------------------------

/// A short handshake allowance (`handshake_timeout`: HTTP request head, TLS handshake) and CSM
/// timeout, for the silent-peer tests.
fn impatient() -> EndpointConfig {
    EndpointConfig {
        handshake_timeout: Duration::from_millis(300),
        connection: coapws::proto::connection::ConnectionConfig {
            csm_timeout: Duration::from_millis(300),
            ..Default::default()
        },
        ..EndpointConfig::default()
    }
}

/// Reads everything `s` gets until the server closes it (EOF or reset), within [`WAIT`];
/// returns the bytes and how long after `since` (when it connected) the close came.
async fn until_closed(
    s: &mut tokio::net::TcpStream,
    since: std::time::Instant,
) -> (Vec<u8>, Duration) {
    use tokio::io::AsyncReadExt;
    let started = since;
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .expect("the server closes a silent peer in time")
        {
            Ok(0) | Err(_) => return (all, started.elapsed()),
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
    }
}

/// HTTP header timeout (transport/ws.rs: hyper's `header_read_timeout`, from
/// `handshake_timeout`): a peer that connects to the WebSocket listener and sends nothing, or
/// half a request head, is disconnected once the allowance is over, not before, and
/// without an upgrade. Others are served meanwhile.
#[tokio::test]
async fn a_silent_http_peer_is_dropped_after_the_header_timeout() {
    use tokio::io::AsyncWriteExt;
    let (_server, addr) = common::server_with(impatient(), Some(common::test_site())).await;
    let since = std::time::Instant::now();
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut half = tokio::net::TcpStream::connect(addr).await.unwrap();
    half.write_all(b"GET /.well-known/coap HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let r = Endpoint::client()
        .get(&common::uri(addr, "/hello"))
        .await
        .unwrap();
    assert_eq!(r.code(), Code::CONTENT, "served while two peers stall");
    for (what, s) in [("silent", &mut silent), ("half a head", &mut half)] {
        let (got, took) = until_closed(s, since).await;
        assert!(
            !String::from_utf8_lossy(&got).contains(" 101 "),
            "{what}: no upgrade: {got:?}"
        );
        assert!(
            took >= Duration::from_millis(200),
            "{what}: closed after {took:?}, before the allowance"
        );
    }
}

/// TLS handshake timeout (listener.rs, `handshake_timeout`): a peer that opens TCP to the TLS
/// and the secure WebSocket listeners and never starts the handshake is disconnected once
/// the allowance is over.
#[tokio::test]
async fn a_silent_tls_peer_is_dropped_after_the_handshake_timeout() {
    let pki = common::pki();
    let server = Endpoint::builder()
        .config(impatient())
        .site(common::test_site())
        .build();
    let tls = server
        .listen_tls("127.0.0.1:0".parse().unwrap(), &pki.identity)
        .await
        .unwrap();
    let wss = server
        .listen_wss("127.0.0.1:0".parse().unwrap(), &pki.identity)
        .await
        .unwrap();
    for addr in [tls, wss] {
        let since = std::time::Instant::now();
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (got, took) = until_closed(&mut s, since).await;
        assert!(
            got.is_empty(),
            "{addr}: nothing before a ClientHello: {got:?}"
        );
        assert!(
            took >= Duration::from_millis(200),
            "{addr}: closed after {took:?}, before the allowance"
        );
    }
    // A real client still gets through.
    let client = Endpoint::builder()
        .tls_client(common::trusting(&pki))
        .build();
    let r = client
        .get(&format!("coaps+tcp://localhost:{}/hello", tls.port()))
        .await
        .unwrap();
    assert_eq!(r.code(), Code::CONTENT);
}

/// CSM timeout on a real socket (RFC 8323 §5.3: the CSM must come first): a CoAP-over-TCP
/// peer that sends nothing gets the server's CSM, then after `csm_timeout` an Abort saying
/// why, then the close. Over WebSocket the same, and the close frame says 1002.
#[tokio::test]
async fn a_peer_without_csm_is_aborted_after_the_csm_timeout() {
    use coapws::proto::codec::tcp::StreamDecoder;
    use coapws::proto::signaling::Signal;
    let server = Endpoint::builder()
        .config(impatient())
        .site(common::test_site())
        .build();
    let tcp = server
        .listen_tcp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let since = std::time::Instant::now();
    let mut s = tokio::net::TcpStream::connect(tcp).await.unwrap();
    let (got, took) = until_closed(&mut s, since).await;
    let mut d = StreamDecoder::new(Default::default());
    d.push(&got);
    let csm = d.next_message().unwrap().expect("the server's CSM");
    assert_eq!(csm.code, Code::CSM);
    let abort = d.next_message().unwrap().expect("an Abort");
    assert!(
        matches!(Signal::parse(&abort), Ok(Signal::Abort { ref diagnostic, .. }) if diagnostic == "No CSM received in time"),
        "{abort:?}"
    );
    assert_eq!(d.next_message().unwrap(), None, "nothing after the Abort");
    assert!(took >= Duration::from_millis(200), "aborted after {took:?}");

    let ws_addr = server
        .listen_ws("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut ws = common::raw(ws_addr).await;
    assert_eq!(common::next_coap(&mut ws).await.unwrap().code, Code::CSM);
    let abort = common::next_coap(&mut ws).await.expect("an Abort");
    assert_eq!(abort.code, Code::ABORT);
    assert_eq!(abort.payload_text(), "No CSM received in time");
    assert_eq!(common::close_code(&mut ws).await, Some(1002));
    assert!(started.elapsed() >= Duration::from_millis(200));
}

/// `max_concurrent_requests` on a WebSocket connection: with 2 requests held in handlers, a
/// third on the same connection gets 5.03 with Max-Age 1, another connection is served, and
/// once the held ones are answered the connection takes requests again.
#[tokio::test]
async fn per_connection_concurrency_limit_answers_5_03() {
    let config = EndpointConfig {
        max_concurrent_requests: 2,
        ..EndpointConfig::default()
    };
    let (site, mut gates) = common::with_gate(common::test_site());
    let (_server, addr) = common::server_with(config, Some(site)).await;
    let mut ws = common::raw(addr).await;
    common::handshake_csm(&mut ws).await;
    common::send_coap(&mut ws, &common::get("/gate", 1)).await;
    common::send_coap(&mut ws, &common::get("/gate", 2)).await;
    let (open1, open2) = (
        common::entered(&mut gates).await,
        common::entered(&mut gates).await,
    );
    common::send_coap(&mut ws, &common::get("/hello", 3)).await;
    let r = common::next_coap(&mut ws).await.unwrap();
    assert_eq!(
        (r.code, r.token.clone()),
        (Code::SERVICE_UNAVAILABLE, Token::new(vec![3])),
        "{}",
        r.payload_text()
    );
    assert_eq!(r.options.get_uint(OptionNumber::MAX_AGE), Some(1));
    let other = Endpoint::client()
        .get(&common::uri(addr, "/hello"))
        .await
        .unwrap();
    assert_eq!(
        other.code(),
        Code::CONTENT,
        "another connection has its own budget"
    );
    open1.send(()).unwrap();
    open2.send(()).unwrap();
    let mut answered: Vec<Vec<u8>> = Vec::new();
    for _ in 0..2 {
        let r = common::next_coap(&mut ws).await.unwrap();
        assert_eq!(r.code, Code::CONTENT);
        answered.push(r.token.as_bytes().to_vec());
    }
    answered.sort();
    assert_eq!(answered, [vec![1], vec![2]]);
    common::send_coap(&mut ws, &common::get("/hello", 4)).await;
    let r = common::next_coap(&mut ws).await.unwrap();
    assert_eq!((r.code, r.token), (Code::CONTENT, Token::new(vec![4])));
}

/// `max_connections` on the TCP and TLS listeners: beyond it a new connection is closed
/// before anything is said (no CSM over TCP; no handshake over TLS); when one leaves there is
/// room again.
#[tokio::test]
async fn tcp_and_tls_listeners_refuse_connections_beyond_the_limit() {
    use coapws::proto::codec::tcp::StreamDecoder;
    use tokio::io::AsyncReadExt;
    let config = EndpointConfig {
        max_connections: 2,
        ..EndpointConfig::default()
    };
    let pki = common::pki();
    for secure in [false, true] {
        let server = Endpoint::builder()
            .config(config.clone())
            .site(common::test_site())
            .build();
        let (addr, scheme) = if secure {
            let a = server
                .listen_tls("127.0.0.1:0".parse().unwrap(), &pki.identity)
                .await
                .unwrap();
            (a, "coaps+tcp")
        } else {
            let a = server
                .listen_tcp("127.0.0.1:0".parse().unwrap())
                .await
                .unwrap();
            (a, "coap+tcp")
        };
        let url = format!("{scheme}://localhost:{}/hello", addr.port());
        let client = || {
            Endpoint::builder()
                .tls_client(common::trusting(&pki))
                .build()
        };
        let (a, b) = (client(), client());
        assert_eq!(a.get(&url).await.unwrap().code(), Code::CONTENT);
        assert_eq!(b.get(&url).await.unwrap().code(), Code::CONTENT);
        assert_eq!(server.connection_count(), 2, "{scheme}");
        let err = client().get(&url).await.unwrap_err();
        if secure {
            assert!(
                matches!(&err, coapws::Error::Handshake { .. }),
                "{scheme}: the third gets no TLS handshake: {err:?}"
            );
        } else {
            assert!(
                matches!(&err, coapws::Error::Connection(_)),
                "{scheme}: the third is closed: {err:?}"
            );
            // On the wire: closed without a CSM.
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut got = Vec::new();
            let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut got))
                .await
                .expect("closed at once");
            assert!(got.is_empty(), "{scheme}: nothing said: {got:?}");
        }
        assert_eq!(server.connection_count(), 2, "{scheme}: still two");
        a.shutdown().await;
        common::wait_until("a connection left", || server.connection_count() < 2).await;
        let r = client().get(&url).await.unwrap();
        assert_eq!(r.code(), Code::CONTENT, "{scheme}: room again");
        // The CSM arrives on a raw connection too once there is room (TCP only: no TLS here).
        if !secure {
            b.shutdown().await;
            common::wait_until("room for a raw peer", || server.connection_count() < 2).await;
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut buf = [0u8; 64];
            let n = tokio::time::timeout(WAIT, s.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            let mut d = StreamDecoder::new(Default::default());
            d.push(&buf[..n]);
            assert_eq!(d.next_message().unwrap().map(|m| m.code), Some(Code::CSM));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// File-server confinement, over the wire (site/files.rs)
// ---------------------------------------------------------------------------------------------

/// A file server on `root` (writable, files up to `max` bytes) behind a WebSocket listener.
async fn file_server(root: &std::path::Path, max: u64) -> (Endpoint, std::net::SocketAddr) {
    let files = FileServer::new(root)
        .unwrap()
        .writable(true)
        .max_file_size(max);
    let site = Site::new().files("/", files, Vec::new());
    common::server_with(EndpointConfig::default(), Some(site)).await
}

/// Uri-Path segments that could leave the root or name another path than they say: `..`,
/// `.`-names, and `/`, `\` or NUL inside one segment are refused with 4.04, even where a
/// file of the name the segment would make exists. Sent raw: a client library would split
/// or escape them. Each option is one segment as it arrives on the wire.
#[tokio::test]
async fn file_server_refuses_segments_that_could_leave_the_root() {
    let tmp = TempDir::new("segments");
    let root = tmp.0.join("root");
    std::fs::create_dir_all(root.join("a")).unwrap();
    std::fs::write(root.join("a").join("b"), "a/b").unwrap();
    std::fs::write(root.join("a\\b"), "backslash").unwrap();
    std::fs::write(tmp.0.join("secret.txt"), "outside").unwrap();
    std::fs::write(root.join(".hidden"), "hidden").unwrap();
    let (_server, addr) = file_server(&root, 1 << 20).await;
    let mut ws = common::raw(addr).await;
    common::handshake_csm(&mut ws).await;
    let mut token = 0u8;
    let mut get = async |ws: &mut common::RawWs, segments: &[&[u8]]| {
        token += 1;
        let mut m = Message::new(Code::GET).with_token(Token::new(vec![token]));
        for s in segments {
            m.options
                .push(OptionNumber::URI_PATH, bytes::Bytes::copy_from_slice(s));
        }
        common::send_coap(ws, &m).await;
        let r = common::next_coap(ws).await.expect("an answer");
        assert_eq!(r.token, m.token);
        r
    };
    // What is there, asked properly, is served.
    let r = get(&mut ws, &[b"a", b"b"]).await;
    assert_eq!((r.code, &r.payload[..]), (Code::CONTENT, &b"a/b"[..]));
    for bad in [
        &[&b".."[..], b"secret.txt"][..],
        &[b"a", b"..", b"..", b"secret.txt"],
        &[b"a/b"],
        &[b"/a", b"b"],
        &[b"a\\b"],
        &[b"a\0b"],
        &[b"a", b"b\0"],
        &[b".hidden"],
        &[b"a", b"", b"b"],
    ] {
        let r = get(&mut ws, bad).await;
        let shown: Vec<String> = bad
            .iter()
            .map(|s| String::from_utf8_lossy(s).into())
            .collect();
        assert_eq!(
            r.code,
            Code::NOT_FOUND,
            "GET {shown:?}: {}",
            r.payload_text()
        );
        for leaked in ["outside", "a/b", "backslash", "hidden"] {
            assert!(
                !r.payload_text().contains(leaked),
                "GET {shown:?} leaked {leaked:?}"
            );
        }
    }
}

/// Symlinks that lead out of the root: GET through a symlinked directory or of a symlinked
/// file is 4.04; PUT through a symlinked directory is 4.04 and writes nothing outside; PUT
/// over a symlink to a file outside is 4.00 and leaves the target alone; DELETE of the link
/// removes the link, not its target. Symlinks that stay inside work. And the size limit:
/// a PUT at `max_file_size` is stored, one byte over gets 4.13 and changes nothing.
#[cfg(unix)]
#[tokio::test]
async fn file_server_symlinks_and_size_limit() {
    let tmp = TempDir::new("symlinks");
    let (root, outside) = (tmp.0.join("root"), tmp.0.join("outside"));
    std::fs::create_dir_all(root.join("in")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), "outside").unwrap();
    std::fs::write(root.join("in").join("ok.txt"), "inside").unwrap();
    std::os::unix::fs::symlink(&outside, root.join("dir")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), root.join("file.txt")).unwrap();
    std::os::unix::fs::symlink(root.join("in"), root.join("alias")).unwrap();
    let (_server, addr) = file_server(&root, 10).await;
    let client = Endpoint::client();
    let u = |p: &str| common::uri(addr, p);
    let send = |code: Code, p: &str, body: &'static [u8]| {
        let client = client.clone();
        let req = Request::new(code, &u(p)).unwrap().payload(body);
        async move {
            tokio::time::timeout(WAIT, client.send(req))
                .await
                .expect("no hang")
                .unwrap()
        }
    };
    for p in ["/dir/secret.txt", "/file.txt", "/dir/", "/dir"] {
        let r = send(Code::GET, p, b"").await;
        assert_eq!(r.code(), Code::NOT_FOUND, "GET {p}");
        assert!(
            !r.message.payload_text().contains("outside"),
            "GET {p} leaked"
        );
    }
    let r = send(Code::GET, "/alias/ok.txt", b"").await;
    assert_eq!(
        (r.code(), &r.payload()[..]),
        (Code::CONTENT, &b"inside"[..])
    );

    let r = send(Code::PUT, "/dir/new.txt", b"planted").await;
    assert_eq!(
        r.code(),
        Code::NOT_FOUND,
        "PUT through a symlinked directory"
    );
    assert!(
        !outside.join("new.txt").exists(),
        "PUT wrote outside the root"
    );
    let r = send(Code::PUT, "/file.txt", b"overwrite").await;
    assert_eq!(
        r.code(),
        Code::BAD_REQUEST,
        "PUT over a symlink that leads out"
    );
    assert_eq!(
        std::fs::read(outside.join("secret.txt")).unwrap(),
        b"outside"
    );
    let r = send(Code::PUT, "/alias/up.txt", b"fine").await;
    assert_eq!(
        r.code(),
        Code::CREATED,
        "PUT through a symlink that stays inside"
    );
    assert_eq!(
        std::fs::read(root.join("in").join("up.txt")).unwrap(),
        b"fine"
    );
    // Nothing half-written was left behind anywhere.
    for d in [&root, &outside, &root.join("in")] {
        let leftovers: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".coapws-upload")
            })
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?} in {}", d.display());
    }

    let r = send(Code::DELETE, "/file.txt", b"").await;
    assert_eq!(r.code(), Code::DELETED, "DELETE of the link");
    assert!(std::fs::symlink_metadata(root.join("file.txt")).is_err());
    assert_eq!(
        std::fs::read(outside.join("secret.txt")).unwrap(),
        b"outside"
    );

    // The size limit (10 bytes here).
    let r = send(Code::PUT, "/ten.txt", b"0123456789").await;
    assert_eq!(r.code(), Code::CREATED, "a PUT at the limit");
    let r = send(Code::PUT, "/ten.txt", b"0123456789A").await;
    assert_eq!(r.code(), Code::REQUEST_ENTITY_TOO_LARGE, "one byte over");
    assert_eq!(std::fs::read(root.join("ten.txt")).unwrap(), b"0123456789");
    let r = send(Code::PUT, "/eleven.txt", b"0123456789A").await;
    assert_eq!(r.code(), Code::REQUEST_ENTITY_TOO_LARGE);
    assert!(!root.join("eleven.txt").exists());
}

/// A site whose PUT `/sink` takes any body and answers 2.04 with its length.
fn sink_site() -> Site {
    Site::new().resource(
        "/sink",
        coapws::Resource::new().put(|r: coapws::IncomingRequest| async move {
            Message::response(Code::CHANGED, r.message.payload.len().to_string())
        }),
    )
}

/// The connection task used not to read while it wrote: with both roles on one connection
/// and large messages both ways, each peer's write waited for the other to read, and both
/// hung until the write timeout. Reading now goes on while a write waits.
#[tokio::test]
async fn both_roles_writing_megabytes_to_each_other_at_once_do_not_block() {
    for scheme in ["coap+tcp", "coap+ws"] {
        both_roles_at_once(scheme).await;
    }
}

async fn both_roles_at_once(scheme: &str) {
    let config = EndpointConfig {
        write_timeout: Duration::from_secs(120),
        ..EndpointConfig::default()
    };
    let (site, mut registered) = common::with_register(sink_site());
    let server = Endpoint::builder()
        .config(config.clone())
        .site(site)
        .build();
    let any = "127.0.0.1:0".parse().unwrap();
    let addr = if scheme == "coap+ws" {
        server.listen_ws(any).await.unwrap()
    } else {
        server.listen_tcp(any).await.unwrap()
    };
    let client = Endpoint::builder().config(config).site(sink_site()).build();
    let base = format!("{scheme}://{addr}");
    let r = client
        .send(Request::new(Code::POST, &format!("{base}/register")).unwrap())
        .await
        .unwrap();
    assert_eq!(r.code(), Code::CHANGED);
    let back = registered.recv().await.unwrap();
    let body = bytes::Bytes::from(vec![0x5a; 1 << 20]);
    let n = 12;
    let up = (0..n).map(|_| {
        let r = Request::new(Code::PUT, &format!("{base}/sink"))
            .unwrap()
            .payload(body.clone());
        client.send(r)
    });
    let down = (0..n).map(|_| {
        let mut m = Message::request(Code::PUT, "/sink");
        m.payload = body.clone();
        server.request_to(&back, m)
    });
    let both = futures_util::future::join(
        futures_util::future::join_all(up),
        futures_util::future::join_all(down),
    );
    let (up, down) = tokio::time::timeout(Duration::from_secs(20), both)
        .await
        .unwrap_or_else(|_| panic!("{scheme}: neither peer may wait for the other to read"));
    for r in up.into_iter().chain(down) {
        let r = r.unwrap();
        assert_eq!(r.code(), Code::CHANGED);
        assert_eq!(r.message.payload_text(), (1 << 20).to_string());
    }
}

/// A peer that asks for megabytes and never reads them: the server stops reading it once its
/// backlog is full, gives it up when a write takes longer than the write timeout, and serves
/// everyone else meanwhile.
#[tokio::test]
async fn a_peer_that_stops_reading_is_dropped_and_others_are_served() {
    use tokio::io::AsyncWriteExt;
    let config = EndpointConfig {
        write_timeout: Duration::from_millis(800),
        ..EndpointConfig::default()
    };
    let server = Endpoint::builder()
        .config(config)
        .site(common::test_site())
        .build();
    let addr = server
        .listen_tcp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    // A small receive buffer, so the kernel does not read for it (autotuning would take MBs).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    let mut greedy = socket.connect(addr).await.unwrap();
    // CSM (Max-Message-Size 1 MiB, Block-Wise-Transfer: /big comes whole), then 300 GETs of
    // /big (100 KiB each): 30 MB of answers, none read.
    let mut bytes = vec![0x50, 0xe1, 0x23, 0x10, 0x00, 0x00, 0x20];
    for i in 0..300u16 {
        let m =
            Message::request(Code::GET, "/big").with_token(Token::new(i.to_be_bytes().to_vec()));
        bytes.extend_from_slice(&coapws::proto::codec::tcp::encode(&m).unwrap());
    }
    greedy.write_all(&bytes).await.unwrap();
    let healthy = Endpoint::client();
    let started = std::time::Instant::now();
    loop {
        let r = healthy
            .get(&format!("coap+tcp://{addr}/hello"))
            .await
            .unwrap();
        assert_eq!(r.code(), Code::CONTENT);
        if server.connection_count() == 1 {
            break; // only the healthy client's connection is left
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the greedy peer is still connected ({} connections)",
            server.connection_count()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(greedy);
}

/// Regression: the command queue into a connection's task was unbounded, so an observable
/// that changes faster than its observer reads made the server render and queue
/// notifications without end (memory grew until the write timeout, 30 s by default). Now the
/// observer's task waits for room: once the peer's buffers and the connection's backlog are
/// full, no more notifications are rendered.
#[tokio::test]
async fn notifications_to_a_peer_that_stops_reading_are_held_back() {
    use coapws::Observable;
    use coapws::site::{IncomingRequest, Resource};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::AsyncWriteExt;
    let renders = Arc::new(AtomicU64::new(0));
    let obs = Observable::new();
    let counted = renders.clone();
    let site = Site::new().resource(
        "/fast",
        Resource::new()
            .get(move |_req: IncomingRequest| {
                let n = counted.fetch_add(1, Ordering::Relaxed);
                async move { Message::response(Code::CONTENT, format!("{n:01000}")) }
            })
            .observable(&obs),
    );
    let server = Endpoint::builder().site(site).build();
    let addr = server
        .listen_tcp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    // Changes as fast as the runtime runs them, for the whole test.
    let changer = {
        let obs = obs.clone();
        tokio::spawn(async move {
            loop {
                obs.notify();
                tokio::task::yield_now().await;
            }
        })
    };
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    let mut silent = socket.connect(addr).await.unwrap();
    // CSM, then GET /fast with Observe 0, then nothing is ever read.
    let mut bytes = vec![0x00, 0xe1];
    let m = Message::request(Code::GET, "/fast")
        .with_token(Token::new(vec![7]))
        .with_uint_option(OptionNumber::OBSERVE, 0);
    bytes.extend_from_slice(&coapws::proto::codec::tcp::encode(&m).unwrap());
    silent.write_all(&bytes).await.unwrap();
    // Let the buffers fill, then the count must stand still.
    let started = std::time::Instant::now();
    let mut last = 0;
    let mut still_for = 0;
    while still_for < 10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = renders.load(Ordering::Relaxed);
        still_for = if now == last && now > 1 {
            still_for + 1
        } else {
            0
        };
        last = now;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "notifications are still being produced for a peer that reads nothing: {now} so far"
        );
    }
    // About 1 KB each: what the socket buffers, the 4 MiB backlog and the queues hold.
    assert!(last < 20_000, "{last} notifications rendered");
    assert_eq!(
        server.observer_count(),
        1,
        "the observation is still registered"
    );
    changer.abort();
    drop(silent);
}

/// The pending-request limit of a client: requests beyond it wait for earlier ones to end
/// (over a connection and over UDP), and all of them are answered.
#[tokio::test]
async fn requests_beyond_the_pending_limit_wait_their_turn() {
    use coapws::site::{IncomingRequest, Resource};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let now = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (n, m) = (now.clone(), most.clone());
    let site = Site::new().resource(
        "/slow",
        Resource::new().get(move |_req: IncomingRequest| {
            let (n, m) = (n.clone(), m.clone());
            async move {
                let here = n.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(here, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                n.fetch_sub(1, Ordering::SeqCst);
                Message::response(Code::CONTENT, "done")
            }
        }),
    );
    let server = Endpoint::builder().site(site).build();
    let tcp = server
        .listen_tcp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let udp = server
        .listen_udp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    for uri in [
        format!("coap+tcp://{tcp}/slow"),
        format!("coap://{udp}/slow"),
    ] {
        most.store(0, Ordering::SeqCst);
        let client = Endpoint::builder()
            .config(EndpointConfig {
                max_pending_requests: 3,
                // NSTART above the limit, so that the limit is what holds UDP requests back.
                udp: coapws::proto::udp::UdpConfig {
                    nstart: 8,
                    ..Default::default()
                },
                ..EndpointConfig::default()
            })
            .build();
        let all = tokio::time::timeout(
            WAIT,
            futures_util::future::join_all((0..12).map(|_| client.get(&uri))),
        )
        .await
        .expect("every request ends");
        for r in all {
            assert_eq!(r.unwrap().code(), Code::CONTENT, "{uri}");
        }
        assert_eq!(
            most.load(Ordering::SeqCst),
            3,
            "{uri}: at most 3 at once, and 3 did run"
        );
    }
}
