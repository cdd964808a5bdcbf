//! Regression tests for defects an audit found in the runtime, one per defect. Loopback only,
//! every wait bounded.

mod common;

use coapws::proto::codec::udp::{self as udp_codec, MessageType, UdpHeader};
use coapws::proto::{BlockValue, Code, Message, OptionNumber, Token};
use coapws::site::files::FileServer;
use coapws::{Endpoint, EndpointConfig, IncomingRequest, Request, Site};
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
    let site = Site::new().subtree(
        "/",
        move |req: IncomingRequest| {
            let files = files.clone();
            async move { files.handle(req).await }
        },
        Vec::new(),
    );
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
/// bounded only by *count* (`max_uploads`, default 256), not by bytes, although
/// `EndpointConfig::upload_memory` says it bounds them ("and again by all responses kept for
/// their later Block2 pieces; beyond it, 5.03"). A peer with the base Max-Message-Size (1152)
/// POSTs bodies to an echoing resource under distinct targets: every response is cut into
/// Block2 pieces and kept whole. With the defaults that is 256 × `max_body_size` (16 MiB) =
/// 4 GiB per endpoint, held for `upload_timeout`.
#[tokio::test]
async fn block2_response_cache_respects_upload_memory() {
    const BODY: usize = 10 * 1024;
    const EXCHANGES: usize = 16;
    let config = EndpointConfig {
        upload_memory: 32 * 1024,
        ..EndpointConfig::default()
    };
    let (_server, addr) = common::server_with(config.clone(), Some(common::test_site())).await;
    let mut ws = common::raw(addr).await;
    // Our CSM without Max-Message-Size: the server assumes 1152 and goes block-wise.
    common::handshake_csm(&mut ws).await;

    let post = |i: usize, token: u8| {
        Message::request(Code::POST, "/echo")
            .with_option(OptionNumber::URI_QUERY, format!("n={i}").into_bytes())
            .with_token(Token::new(vec![token]))
    };
    let mut first_blocks_refused = 0;
    for i in 0..EXCHANGES {
        let m = post(i, i as u8).with_payload(vec![b'a' + (i % 26) as u8; BODY]);
        common::send_coap(&mut ws, &m).await;
        let r = common::next_coap(&mut ws).await.expect("a response");
        if r.code == Code::SERVICE_UNAVAILABLE {
            first_blocks_refused += 1;
            continue;
        }
        assert_eq!(r.code, Code::CHANGED);
        assert!(r.options.block2().is_some_and(|b| b.more), "cut block-wise");
    }
    // Now fetch block 1 of every exchange: the server can only serve it from what it kept.
    let mut held = 0;
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
        if r.code == Code::CHANGED {
            assert_eq!(r.payload[0], b'a' + (i % 26) as u8);
            held += BODY;
        }
    }
    assert!(
        held <= config.upload_memory,
        "the server held {held} bytes of responses at once (upload_memory {}), \
         {first_blocks_refused} first blocks refused",
        config.upload_memory
    );
}

/// transport/udp.rs `SocketDriver::incoming`: `max_concurrent_requests` ("per connection") is
/// counted per *socket* over UDP, shared by every peer. One peer with a few slow requests
/// (any handler that waits: file I/O, the demo's `/ask-back` waiting 10 s on a client that
/// never answers) makes the server answer 5.03 to everyone else.
#[tokio::test]
async fn one_udp_peer_cannot_starve_the_others() {
    let config = EndpointConfig {
        max_concurrent_requests: 2,
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

    // Peer A: two Confirmable GETs of a resource that takes its time.
    let a = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..2u16 {
        let m = Message::request(Code::GET, "/never").with_token(Token::new(vec![0xa0, i as u8]));
        let header = UdpHeader {
            mtype: MessageType::Confirmable,
            message_id: 0x1000 + i,
        };
        a.send_to(&udp_codec::encode(&header, &m).unwrap(), addr)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Peer B, a different address, asks for something instant.
    let b = Endpoint::client();
    let r = tokio::time::timeout(WAIT, b.get(&format!("coap://{addr}/hello")))
        .await
        .expect("no hang")
        .unwrap();
    assert_eq!(
        r.code(),
        Code::CONTENT,
        "peer B got {} because peer A holds the socket's whole request budget",
        r.code()
    );
}

#[tokio::test]
async fn a_released_connection_takes_no_new_requests_from_the_pool() {
    let (site, mut rx) = common::with_register(common::test_site());
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
    // keep the first connection busy, then release it from the server side
    let slow = tokio::spawn({
        let client = client.clone();
        let u = u("/slow");
        async move { client.get(&u).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    remote.connection().expect("a stream remote").release();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // a new request opens a new connection instead of failing on the released one
    let r = client.get(&u("/hello")).await.unwrap();
    assert_eq!(r.code(), Code::CONTENT);
    assert_eq!(slow.await.unwrap().unwrap().message.payload_text(), "slow");
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
    use coapws::site::files::FileServer;
    use coapws::{IncomingRequest, Site};
    let root = std::env::temp_dir().join(format!("coapws-fifo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(root.join("pipe"))
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo");
    let files = FileServer::new(&root).unwrap();
    let site = Site::new().subtree(
        "/",
        move |req: IncomingRequest| {
            let files = files.clone();
            async move { files.handle(req).await }
        },
        vec![],
    );
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
    for _ in 0..100 {
        if server.connection_count() < 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = Endpoint::client()
        .get(&format!("coap+ws://{addr}/hello"))
        .await
        .unwrap();
    assert_eq!(r.code(), Code::CONTENT);
}
