//! Block-wise transfer (RFC 7959, RFC 8323 §6, RFC 9175) over real loopback sockets: the
//! regressions of the block-wise issue, each named after what it broke, and the client's
//! ETag check and whole-transfer timeout against raw peers written for the test.

mod common;

use bytes::Bytes;
use coapws::proto::blockwise::BlockError;
use coapws::proto::codec::udp::{self as wire, MessageType, UdpHeader};
use coapws::proto::{BlockValue, Code, DecodeLimits, Message, OptionNumber, Token};
use coapws::site::files::FileServer;
use coapws::{Endpoint, EndpointConfig, Error, IncomingRequest, Request, Resource, Site};
use common::WAIT;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;

/// A site whose PUT /sink keeps every body it is handed, whose FETCH /big answers the
/// request body repeated to 5000 bytes, and whose GET /big answers 5000 bytes chosen by
/// Accept (0: 'a', 50: '{').
fn site(bodies: Arc<Mutex<Vec<Bytes>>>) -> Site {
    Site::new()
        .resource(
            "/sink",
            Resource::new().put(move |req: IncomingRequest| {
                let bodies = bodies.clone();
                async move {
                    bodies.lock().unwrap().push(req.message.payload.clone());
                    Message::new(Code::CHANGED)
                }
            }),
        )
        .resource(
            "/big",
            Resource::new()
                .method(Code::FETCH, |req: IncomingRequest| async move {
                    let body: Vec<u8> = req
                        .message
                        .payload
                        .iter()
                        .copied()
                        .cycle()
                        .take(5000)
                        .collect();
                    Message::response(Code::CONTENT, body)
                })
                .get(|req: IncomingRequest| async move {
                    let c = if req.message.options.accept() == Some(50) {
                        b'{'
                    } else {
                        b'a'
                    };
                    Message::response(Code::CONTENT, vec![c; 5000])
                }),
        )
}

struct Server {
    _ep: Endpoint,
    bodies: Arc<Mutex<Vec<Bytes>>>,
    ws: SocketAddr,
    tcp: SocketAddr,
    udp: SocketAddr,
}

/// The server announces 1152-byte messages over TCP and WebSocket too: bodies go in many
/// blocks on every transport.
async fn server() -> Server {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let config = EndpointConfig {
        connection: coapws::proto::connection::ConnectionConfig {
            max_message_size: 1152,
            ..Default::default()
        },
        ..EndpointConfig::default()
    };
    let ep = Endpoint::builder()
        .config(config)
        .site(site(bodies.clone()))
        .build();
    let any = "127.0.0.1:0".parse().unwrap();
    Server {
        ws: ep.listen_ws(any).await.unwrap(),
        tcp: ep.listen_tcp(any).await.unwrap(),
        udp: ep.listen_udp(any).await.unwrap(),
        _ep: ep,
        bodies,
    }
}

fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| seed.wrapping_add((i % 251) as u8))
        .collect()
}

/// Regression: two Block1 uploads to one resource from one client at once were mixed into one
/// body, and the server answered 2.04 for a body it never received.
#[tokio::test]
async fn concurrent_uploads_to_one_path_from_one_client_are_never_mixed() {
    let s = server().await;
    for base in [
        format!("coap+ws://{}", s.ws),
        format!("coap+tcp://{}", s.tcp),
        format!("coap://{}", s.udp),
    ] {
        s.bodies.lock().unwrap().clear();
        let client = Endpoint::client();
        let (a, b) = (pattern(20_000, 1), pattern(20_000, 7));
        let put = |body: &Bytes| {
            Request::new(Code::PUT, &format!("{base}/sink"))
                .unwrap()
                .payload(body.clone())
        };
        let (ra, rb) = tokio::join!(client.send(put(&a)), client.send(put(&b)));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        // Our client tags each upload (Request-Tag): both land, each intact.
        assert_eq!(
            (ra.code(), rb.code()),
            (Code::CHANGED, Code::CHANGED),
            "{base}"
        );
        let mut got = s.bodies.lock().unwrap().clone();
        got.sort();
        let mut want = vec![a.clone(), b.clone()];
        want.sort();
        assert!(
            got == want,
            "{base}: stored {:?} bytes",
            got.iter().map(|b| b.len()).collect::<Vec<_>>()
        );
        client.shutdown().await;
    }

    // An untagged client interleaving two uploads: the second is refused with 4.08, the
    // first completes intact.
    s.bodies.lock().unwrap().clear();
    let mut ws = common::raw(s.ws).await;
    common::handshake_csm(&mut ws).await;
    let block = |token: u8, num: u32, more: bool, body: &Bytes| {
        let start = num as usize * 1024;
        let end = (start + 1024).min(body.len());
        Message::request(Code::PUT, "/sink")
            .with_token(Token::new(vec![token]))
            .with_option(
                OptionNumber::BLOCK1,
                BlockValue { num, more, szx: 6 }.encode(),
            )
            .with_payload(body.slice(start..end))
    };
    let (a, b) = (pattern(2048, 3), pattern(2048, 9));
    common::send_coap(&mut ws, &block(1, 0, true, &a)).await;
    assert_eq!(
        common::next_coap(&mut ws).await.unwrap().code,
        Code::CONTINUE
    );
    common::send_coap(&mut ws, &block(2, 0, true, &b)).await;
    let refused = common::next_coap(&mut ws).await.unwrap();
    assert_eq!(refused.code, Code::REQUEST_ENTITY_INCOMPLETE);
    common::send_coap(&mut ws, &block(3, 1, false, &a)).await;
    assert_eq!(
        common::next_coap(&mut ws).await.unwrap().code,
        Code::CHANGED
    );
    assert_eq!(*s.bodies.lock().unwrap(), vec![a]);
}

/// Regression: block-wise responses carried no ETag, and the kept-response key ignored the
/// request body and Accept, so two FETCHes with different bodies could get each other's
/// later blocks.
#[tokio::test]
async fn later_blocks_belong_to_the_representation_asked_for() {
    let s = server().await;
    let mut ws = common::raw(s.ws).await;
    common::handshake_csm(&mut ws).await; // our CSM is empty: 1152-byte messages
    let fetch = |token: u8, body: &'static str, num: u32| {
        Message::request(Code::FETCH, "/big")
            .with_token(Token::new(vec![token]))
            .with_option(
                OptionNumber::BLOCK2,
                BlockValue {
                    num,
                    more: false,
                    szx: 6,
                }
                .encode(),
            )
            .with_payload(body)
    };
    common::send_coap(&mut ws, &fetch(1, "a", 0)).await;
    let a0 = common::next_coap(&mut ws).await.unwrap();
    common::send_coap(&mut ws, &fetch(2, "b", 0)).await;
    let b0 = common::next_coap(&mut ws).await.unwrap();
    common::send_coap(&mut ws, &fetch(3, "a", 1)).await;
    let a1 = common::next_coap(&mut ws).await.unwrap();
    let etag = |m: &Message| m.options.get(OptionNumber::ETAG).cloned();
    assert!(
        etag(&a0).is_some(),
        "every block-wise response carries an ETag"
    );
    assert_ne!(etag(&a0), etag(&b0));
    assert_eq!(etag(&a1), etag(&a0));
    assert!(
        a1.payload.iter().all(|&c| c == b'a'),
        "block 1 of FETCH \"a\""
    );

    // Accept selects the representation too.
    let get = |token: u8, accept: u32, num: u32| {
        Message::request(Code::GET, "/big")
            .with_token(Token::new(vec![token]))
            .with_uint_option(OptionNumber::ACCEPT, accept)
            .with_option(
                OptionNumber::BLOCK2,
                BlockValue {
                    num,
                    more: false,
                    szx: 6,
                }
                .encode(),
            )
    };
    common::send_coap(&mut ws, &get(4, 50, 0)).await;
    common::next_coap(&mut ws).await.unwrap();
    common::send_coap(&mut ws, &get(5, 0, 0)).await;
    common::next_coap(&mut ws).await.unwrap();
    common::send_coap(&mut ws, &get(6, 50, 1)).await;
    let j1 = common::next_coap(&mut ws).await.unwrap();
    assert!(
        j1.payload.iter().all(|&c| c == b'{'),
        "block 1 for Accept 50"
    );

    // And the client puts it together with the body it sent.
    let client = Endpoint::client();
    let r = client
        .send(
            Request::new(Code::FETCH, &format!("coap://{}/big", s.udp))
                .unwrap()
                .payload("xy"),
        )
        .await
        .unwrap();
    assert_eq!(r.message.payload.len(), 5000);
    assert!(r.message.payload.chunks(2).all(|c| c == b"xy"));
}

/// Regression: the file server read the whole file (and refused files above 16 MiB) for
/// every block request; now it reads only the block, straight from disk.
#[tokio::test]
async fn a_block_of_a_large_file_is_read_from_disk() {
    let dir = std::env::temp_dir().join(format!("coapws-blocks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // 64 MiB, sparse: far beyond any in-memory limit.
    let f = std::fs::File::create(dir.join("huge.bin")).unwrap();
    f.set_len(64 << 20).unwrap();
    let mut small = pattern(40_000, 5).to_vec();
    std::fs::write(dir.join("small.bin"), &small).unwrap();
    let files = FileServer::new(&dir).unwrap();
    let site = Site::new().files("/", files, vec![]);
    let ep = Endpoint::builder().site(site).build();
    let udp = ep.listen_udp("127.0.0.1:0".parse().unwrap()).await.unwrap();

    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let block = |num: u32| {
        Message::request(Code::GET, "/huge.bin")
            .with_token(Token::new(vec![num as u8]))
            .with_option(
                OptionNumber::BLOCK2,
                BlockValue {
                    num,
                    more: false,
                    szx: 6,
                }
                .encode(),
            )
    };
    send_udp(&peer, udp, 1, &block(5)).await;
    let r = recv_udp(&peer).await;
    assert_eq!(r.code, Code::CONTENT);
    assert_eq!(
        r.options.block2(),
        Some(BlockValue {
            num: 5,
            more: true,
            szx: 6
        })
    );
    assert_eq!(r.payload.len(), 1024);
    let etag = r
        .options
        .get(OptionNumber::ETAG)
        .cloned()
        .expect("ETag from the file");
    // The last block, and one past the end.
    let last = (64 << 20) / 1024 - 1;
    send_udp(&peer, udp, 2, &block(last)).await;
    let r = recv_udp(&peer).await;
    assert_eq!(r.options.block2().map(|b| b.more), Some(false));
    assert_eq!(r.options.get(OptionNumber::ETAG), Some(&etag));
    send_udp(&peer, udp, 3, &block(last + 1)).await;
    assert_eq!(recv_udp(&peer).await.code, Code::BAD_OPTION);

    // A whole file comes together; rewritten mid-transfer, its ETag changes.
    let client = Endpoint::client();
    let r = client
        .get(&format!("coap://{udp}/small.bin"))
        .await
        .unwrap();
    assert!(r.message.payload == small, "whole file");
    let first = |num| {
        Message::request(Code::GET, "/small.bin")
            .with_token(Token::new(vec![9]))
            .with_option(
                OptionNumber::BLOCK2,
                BlockValue {
                    num,
                    more: false,
                    szx: 6,
                }
                .encode(),
            )
    };
    send_udp(&peer, udp, 5, &first(0)).await;
    let e0 = recv_udp(&peer)
        .await
        .options
        .get(OptionNumber::ETAG)
        .cloned();
    small[0] ^= 1;
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(dir.join("small.bin"), &small).unwrap();
    send_udp(&peer, udp, 6, &first(1)).await;
    let e1 = recv_udp(&peer)
        .await
        .options
        .get(OptionNumber::ETAG)
        .cloned();
    assert_ne!(e0, e1, "a changed file has a new ETag");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The client refuses a representation whose ETag changes between blocks (RFC 7959 §2.4).
#[tokio::test]
async fn the_client_detects_an_etag_change_mid_transfer() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = tokio::spawn(async move {
        let mut ws = common::raw_server(&listener).await;
        assert_eq!(common::next_coap(&mut ws).await.unwrap().code, Code::CSM);
        for (num, etag) in [(0u32, "A"), (1, "B")] {
            let req = common::next_coap(&mut ws).await.unwrap();
            let r = Message::response(Code::CONTENT, vec![b'x'; 1024])
                .with_token(req.token)
                .with_option(OptionNumber::ETAG, etag)
                .with_option(
                    OptionNumber::BLOCK2,
                    BlockValue {
                        num,
                        more: true,
                        szx: 6,
                    }
                    .encode(),
                );
            common::send_coap(&mut ws, &r).await;
        }
        ws
    });
    let client = Endpoint::client();
    let r = client.get(&format!("coap+ws://{addr}/changing")).await;
    assert!(
        matches!(r, Err(Error::Block(BlockError::EtagChanged))),
        "{r:?}"
    );
    drop(peer.await.unwrap());
}

/// One timeout bounds a whole block-wise transfer, besides each block's own.
#[tokio::test]
async fn a_whole_transfer_is_bounded_by_the_transfer_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut ws = common::raw_server(&listener).await;
        let _csm = common::next_coap(&mut ws).await;
        // Each block after 150 ms, for ever: no single request times out.
        for num in 0u32.. {
            let Some(req) = common::next_coap(&mut ws).await else {
                return;
            };
            tokio::time::sleep(Duration::from_millis(150)).await;
            let r = Message::response(Code::CONTENT, vec![b'x'; 1024])
                .with_token(req.token)
                .with_option(
                    OptionNumber::BLOCK2,
                    BlockValue {
                        num,
                        more: true,
                        szx: 6,
                    }
                    .encode(),
                );
            common::send_coap(&mut ws, &r).await;
        }
    });
    let client = Endpoint::builder()
        .config(EndpointConfig {
            transfer_timeout: Duration::from_millis(800),
            request_timeout: Duration::from_millis(500),
            ..EndpointConfig::default()
        })
        .build();
    let started = std::time::Instant::now();
    let r = tokio::time::timeout(WAIT, client.get(&format!("coap+ws://{addr}/endless")))
        .await
        .expect("bounded");
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    assert!(started.elapsed() >= Duration::from_millis(800));
}

/// Regression: UDP datagrams above 1152 bytes were dropped without a word, requests and
/// responses alike.
#[tokio::test]
async fn udp_datagrams_above_1152_bytes_are_taken_both_ways() {
    let s = server().await;
    // A 3000-byte PUT in one datagram reaches the server.
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let body = pattern(3000, 4);
    let put = Message::request(Code::PUT, "/sink")
        .with_token(Token::new(vec![1]))
        .with_payload(body.clone());
    send_udp(&peer, s.udp, 1, &put).await;
    assert_eq!(recv_udp(&peer).await.code, Code::CHANGED);
    assert_eq!(*s.bodies.lock().unwrap(), vec![body]);

    // A server answering our client with a 1400-byte datagram is understood.
    let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        let (n, from) = server.recv_from(&mut buf).await.unwrap();
        let d = Bytes::copy_from_slice(&buf[..n]);
        let (h, req) = wire::decode(&d, &DecodeLimits::default()).unwrap();
        let r = Message::response(Code::CONTENT, vec![b'm'; 1400]).with_token(req.token);
        let header = UdpHeader {
            mtype: MessageType::Acknowledgement,
            message_id: h.message_id,
        };
        server
            .send_to(&wire::encode(&header, &r).unwrap(), from)
            .await
            .unwrap();
    });
    let client = Endpoint::client();
    let r = client.get(&format!("coap://{addr}/mtu")).await.unwrap();
    assert_eq!(r.message.payload.len(), 1400);
}

async fn send_udp(s: &UdpSocket, to: SocketAddr, mid: u16, m: &Message) {
    let header = UdpHeader {
        mtype: MessageType::Confirmable,
        message_id: mid,
    };
    s.send_to(&wire::encode(&header, m).unwrap(), to)
        .await
        .unwrap();
}

async fn recv_udp(s: &UdpSocket) -> Message {
    let mut buf = vec![0u8; 65536];
    let (n, _) = tokio::time::timeout(WAIT, s.recv_from(&mut buf))
        .await
        .expect("datagram in time")
        .unwrap();
    let d = Bytes::copy_from_slice(&buf[..n]);
    wire::decode(&d, &DecodeLimits::default()).unwrap().1
}

/// An upload whose Size1 announces more than the server takes is refused with 4.13 (Size1
/// giving the limit) on its first block, not after the limit's worth of data.
#[tokio::test]
async fn an_upload_announced_above_the_limit_is_refused_on_its_first_block() {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let ep = Endpoint::builder()
        .config(EndpointConfig {
            max_body_size: 10_000,
            ..EndpointConfig::default()
        })
        .site(site(bodies.clone()))
        .build();
    let udp = ep.listen_udp("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let blocks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let b = blocks.clone();
    let progress = coapws::transfer::Progress::new(move |_, _| {
        b.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    });
    let client = Endpoint::client();
    let r = client
        .send(
            Request::new(Code::PUT, &format!("coap://{udp}/sink"))
                .unwrap()
                .payload(pattern(20_000, 2))
                .on_progress(progress),
        )
        .await
        .unwrap();
    assert_eq!(r.code(), Code::REQUEST_ENTITY_TOO_LARGE);
    assert_eq!(
        r.message.options.get_uint(OptionNumber::SIZE1),
        Some(10_000)
    );
    assert_eq!(
        blocks.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one block sent"
    );
    assert!(bodies.lock().unwrap().is_empty());
}

/// `Request::payload_file` uploads a file block by block; BERT over WebSocket and TCP.
#[tokio::test]
async fn a_file_body_goes_up_block_by_block() {
    let s = server().await;
    let path = std::env::temp_dir().join(format!("coapws-upload-{}", std::process::id()));
    let body = pattern(50_000, 6);
    std::fs::write(&path, &body).unwrap();
    for base in [
        format!("coap+ws://{}", s.ws),
        format!("coap+tcp://{}", s.tcp),
        format!("coap://{}", s.udp),
    ] {
        s.bodies.lock().unwrap().clear();
        let reports = Arc::new(Mutex::new(Vec::new()));
        let r2 = reports.clone();
        let client = Endpoint::client();
        let r = client
            .send(
                Request::new(Code::PUT, &format!("{base}/sink"))
                    .unwrap()
                    .payload_file(&path)
                    .on_progress(coapws::transfer::Progress::new(move |done, total| {
                        r2.lock().unwrap().push((done, total));
                    })),
            )
            .await
            .unwrap();
        assert_eq!(r.code(), Code::CHANGED, "{base}");
        assert!(*s.bodies.lock().unwrap() == vec![body.clone()], "{base}");
        let reports = reports.lock().unwrap().clone();
        assert_eq!(reports.last(), Some(&(50_000, Some(50_000))), "{base}");
        assert!(reports.len() > 1, "{base}: sent in blocks");
        client.shutdown().await;
    }
    std::fs::remove_file(&path).unwrap();
}

/// A block-wise PUT to the file server (mounted to take blocks) is written to disk block by
/// block: bodies beyond what the endpoint would reassemble in memory land whole, through a
/// temporary file renamed at the end.
#[tokio::test]
async fn a_file_server_upload_streams_to_disk() {
    let dir = std::env::temp_dir().join(format!("coapws-stream-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let files = FileServer::new(&dir)
        .unwrap()
        .writable(true)
        .max_file_size(1 << 20);
    let site = Site::new().files("/", files, vec![]);
    // Far less memory for reassembly than the upload needs.
    let ep = Endpoint::builder()
        .config(EndpointConfig {
            max_body_size: 10_000,
            upload_memory: 10_000,
            ..EndpointConfig::default()
        })
        .site(site)
        .build();
    let udp = ep.listen_udp("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let ws = ep.listen_ws("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let body = pattern(300_000, 8);
    let client = Endpoint::client();
    for (name, base) in [
        ("u.bin", format!("coap://{udp}")),
        ("w.bin", format!("coap+ws://{ws}")),
    ] {
        let put = Request::new(Code::PUT, &format!("{base}/{name}"))
            .unwrap()
            .payload(body.clone());
        let r = client.send(put).await.unwrap();
        assert_eq!(r.code(), Code::CREATED, "{base}");
        assert!(std::fs::read(dir.join(name)).unwrap() == body, "{base}");
    }
    // No temporary file is left behind, and one above the file limit is refused at once.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let put = Request::new(Code::PUT, &format!("coap://{udp}/big.bin"))
        .unwrap()
        .payload(pattern(2 << 20, 1));
    let r = client.send(put).await.unwrap();
    assert_eq!(r.code(), Code::REQUEST_ENTITY_TOO_LARGE);
    assert_eq!(
        r.message.options.get_uint(OptionNumber::SIZE1),
        Some(1 << 20)
    );
    assert!(!dir.join("big.bin").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Regression: a request a server sent back to its client (role reversal, `Remote::request`)
/// kept only the first block of a large answer.
#[tokio::test]
async fn role_reversal_answers_come_whole() {
    let config = EndpointConfig {
        connection: coapws::proto::connection::ConnectionConfig {
            max_message_size: 1152,
            ..Default::default()
        },
        ..EndpointConfig::default()
    };
    let site = Site::new().resource(
        "/ask",
        Resource::new().get(|req: IncomingRequest| async move {
            let q = Message::request(Code::GET, "/big-answer");
            match req.remote.request(q, Duration::from_secs(5)).await {
                Ok(a) => Message::response(Code::CONTENT, format!("{} bytes", a.payload.len())),
                Err(e) => Message::response(Code::BAD_GATEWAY, e.to_string()),
            }
        }),
    );
    let server = Endpoint::builder().config(config).site(site).build();
    let any = "127.0.0.1:0".parse().unwrap();
    let ws = server.listen_ws(any).await.unwrap();
    let udp = server.listen_udp(any).await.unwrap();
    let answer = pattern(5000, 3);
    let a = answer.clone();
    let client = Endpoint::builder()
        .site(Site::new().resource(
            "/big-answer",
            Resource::new().get(move |_r: IncomingRequest| {
                let a = a.clone();
                async move { Message::response(Code::CONTENT, a) }
            }),
        ))
        .build();
    for base in [format!("coap+ws://{ws}"), format!("coap://{udp}")] {
        let r = client.get(&format!("{base}/ask")).await.unwrap();
        assert_eq!(r.message.payload_text(), "5000 bytes", "{base}");
    }
}
