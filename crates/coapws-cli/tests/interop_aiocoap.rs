//! Interop against aiocoap 0.4.17 over CoAP over WebSockets (RFC 8323), both directions and
//! with role reversal. aiocoap lives in `target/peers/venv`, installed by
//! `scripts/install-peers.sh`; when it is missing these tests fail (they never skip).
//!
//! Every process a test starts is killed when the test ends (a Drop guard), every wait is
//! bounded, ports are picked free on loopback, and each test has its own temporary directory,
//! so the tests run in parallel.

mod common;

use coapws::proto::{Code, Message};
use coapws::{Endpoint, IncomingRequest, Resource, Site};
use common::*;
use std::path::Path;
use std::time::Duration;

/// `coapws serve EXTRA... --ws 127.0.0.1:0`; returns the guard and the WebSocket port.
fn coapws_serve_ws(dir: &Path, extra: &[&str]) -> (ChildGuard, u16) {
    let (guard, url) = coapws_serve_one(dir, extra, "--ws", "coap+ws");
    let port = url
        .strip_prefix("coap+ws://127.0.0.1:")
        .and_then(|p| p.trim().parse::<u16>().ok())
        .unwrap_or_else(|| panic!("announced WebSocket listener {url:?}"));
    (guard, port)
}

// ---------------------------------------------------------------------------------------------
// 1. aiocoap-client → coapws serve ROOT
// ---------------------------------------------------------------------------------------------

/// aiocoap-client GETs a text file, `/.well-known/core`, a missing file, and a 100 KiB file
/// (one message: both sides announce a Max-Message-Size of 1 MiB) from `coapws serve ROOT`;
/// a PUT is refused with 4.05 because `--write` is not given.
#[test]
fn aiocoap_client_reads_from_coapws_file_server() {
    let tmp = TempDir::new("aio-read");
    let root = tmp.subdir("root");
    std::fs::write(root.join("hello.txt"), "Hello from a coapws file server\n").unwrap();
    let big = printable(100 * 1024, 7);
    std::fs::write(root.join("big.txt"), &big).unwrap();
    let (_server, port) = coapws_serve_ws(tmp.path(), &[s(&root)]);
    let base = format!("coap+ws://127.0.0.1:{port}");

    let o = aiocoap_client(&[&format!("{base}/hello.txt")]);
    assert_ok_payload(&o, b"Hello from a coapws file server\n", "GET /hello.txt");

    let o = aiocoap_client(&["-v", &format!("{base}/.well-known/core")]);
    assert_ok_containing(&o, &["</>", "ct=40"], "GET /.well-known/core");
    // -v makes aiocoap-client log the response's code and Content-Format on stderr.
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(
        log.contains("2.05") && log.contains("application/link-format"),
        "GET /.well-known/core: expected 2.05 with Content-Format application/link-format\n{}",
        describe(&o)
    );

    let o = aiocoap_client(&[&format!("{base}/no-such-file.txt")]);
    assert_eq!(o.status.code(), Some(1), "GET missing\n{}", describe(&o));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        all.contains("4.04 Not Found"),
        "GET missing: no 4.04 Not Found\n{}",
        describe(&o)
    );

    let o = aiocoap_client(&["-m", "PUT", "--payload", "nope", &format!("{base}/new.txt")]);
    assert_eq!(o.status.code(), Some(1), "PUT read-only\n{}", describe(&o));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        all.contains("4.05 Method Not Allowed"),
        "PUT read-only: no 4.05 Method Not Allowed\n{}",
        describe(&o)
    );
    assert!(
        !root.join("new.txt").exists(),
        "PUT without --write created the file"
    );

    let o = aiocoap_client(&[&format!("{base}/big.txt")]);
    assert_ok_payload(&o, &big, "GET /big.txt (100 KiB)");
}

/// aiocoap-client PUTs a short text and a 100 KiB file to `coapws serve ROOT --write`: each
/// file holds exactly the payload, and a GET returns it.
#[test]
fn aiocoap_client_writes_to_coapws_file_server() {
    let tmp = TempDir::new("aio-write");
    let root = tmp.subdir("root");
    let (_server, port) = coapws_serve_ws(tmp.path(), &[s(&root), "--write"]);
    let uri = format!("coap+ws://127.0.0.1:{port}/written.txt");
    let content = "written by aiocoap-client over coap+ws";

    let o = aiocoap_client(&["-m", "PUT", "--payload", content, &uri]);
    assert!(o.status.success(), "PUT\n{}", describe(&o));
    let on_disk = std::fs::read(root.join("written.txt")).expect("PUT created no file");
    assert_eq!(on_disk, content.as_bytes(), "file content after PUT");

    let o = aiocoap_client(&[&uri]);
    assert_ok_payload(&o, content.as_bytes(), "GET after PUT");

    // 100 KiB in one request (aiocoap sends it whole: our CSM allows 1 MiB).
    let big = printable(100 * 1024, 3);
    let source = tmp.path().join("big-source.txt");
    std::fs::write(&source, &big).unwrap();
    let big_uri = format!("coap+ws://127.0.0.1:{port}/big.txt");
    let o = aiocoap_client(&[
        "-m",
        "PUT",
        "--payload",
        &format!("@{}", source.display()),
        &big_uri,
    ]);
    assert!(o.status.success(), "PUT 100 KiB\n{}", describe(&o));
    let on_disk = std::fs::read(root.join("big.txt")).expect("PUT 100 KiB created no file");
    assert!(
        on_disk == big,
        "100 KiB file differs after PUT ({} bytes on disk)",
        on_disk.len()
    );
    let o = aiocoap_client(&[&big_uri]);
    assert_ok_payload(&o, &big, "GET 100 KiB after PUT");
}

/// aiocoap-client POSTs to the demo site's `/echo` and gets its payload back.
#[test]
fn aiocoap_client_posts_to_coapws_echo() {
    let tmp = TempDir::new("aio-echo");
    let (_server, port) = coapws_serve_ws(tmp.path(), &[]);
    let o = aiocoap_client(&[
        "-m",
        "POST",
        "--payload",
        "hi",
        &format!("coap+ws://127.0.0.1:{port}/echo"),
    ]);
    assert_ok_payload(&o, b"hi", "POST /echo");
}

// ---------------------------------------------------------------------------------------------
// 2. coapws client → aiocoap-fileserver
// ---------------------------------------------------------------------------------------------

/// `coapws get|put` against `aiocoap-fileserver --write`: a small file, one of 1000 bytes,
/// one of 50 KiB that aiocoap serves block-wise (Block2, 1024-byte blocks) and the coapws
/// client reassembles, `/.well-known/core`, a missing file (4.04, non-zero exit), and a PUT
/// that lands on disk.
#[test]
fn coapws_client_against_aiocoap_fileserver() {
    let tmp = TempDir::new("cw-fs");
    let root = tmp.subdir("root");
    std::fs::write(root.join("small.txt"), "small file from aiocoap\n").unwrap();
    let thousand = printable(1000, 11);
    std::fs::write(root.join("thousand.txt"), &thousand).unwrap();
    let large = printable(50 * 1024 + 7, 13);
    std::fs::write(root.join("large.txt"), &large).unwrap();
    let (_server, p) = aiocoap_fileserver(tmp.path(), &root, false, &["--write"]);
    let base = format!("coap+ws://127.0.0.1:{}", p + 3000);

    let o = coapws_client("get", &[&format!("{base}/small.txt")]);
    assert_ok_payload(&o, b"small file from aiocoap\n", "GET /small.txt");

    let o = coapws_client("get", &[&format!("{base}/thousand.txt")]);
    assert_ok_payload(&o, &thousand, "GET /thousand.txt (1000 bytes)");

    let o = coapws_client("get", &["-v", &format!("{base}/large.txt")]);
    assert_ok_payload(&o, &large, "GET /large.txt (50 KiB, block-wise)");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Block2"),
        "the transfer really was block-wise\n{}",
        describe(&o)
    );

    let o = coapws_client("get", &[&format!("{base}/.well-known/core")]);
    assert_ok_containing(&o, &["</>", "ct=40"], "GET /.well-known/core");

    let o = coapws_client("get", &[&format!("{base}/no-such-file.txt")]);
    assert_fails_with(&o, "4.04 Not Found", "GET missing from aiocoap-fileserver");

    let content = "put by coapws into aiocoap-fileserver";
    let o = coapws_client("put", &["--payload", content, &format!("{base}/put.txt")]);
    assert!(o.status.success(), "PUT\n{}", describe(&o));
    let on_disk = std::fs::read(root.join("put.txt")).expect("PUT created no file");
    assert_eq!(on_disk, content.as_bytes(), "file content after PUT");
    let o = coapws_client("get", &[&format!("{base}/put.txt")]);
    assert_ok_payload(&o, content.as_bytes(), "GET after PUT");
}

// ---------------------------------------------------------------------------------------------
// 3. Role reversal: aiocoap is the WebSocket client and serves /whoami
// ---------------------------------------------------------------------------------------------

/// An aiocoap context connects to `coapws serve` (demo site) and GETs `/ask-back`; the coapws
/// server GETs `/whoami` from that client over the same connection and answers with it.
#[test]
fn coapws_server_asks_back_an_aiocoap_client() {
    let tmp = TempDir::new("aio-ask-back");
    let (_server, port) = coapws_serve_ws(tmp.path(), &[]);
    let mut cmd = python("ws_client_serving.py");
    cmd.arg(format!("coap+ws://127.0.0.1:{port}/ask-back"))
        .arg("aiocoap-client-here");
    let o = run(cmd, COMMAND_TIMEOUT);
    assert!(o.status.success(), "script failed\n{}", describe(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["code=2.05", "payload=aiocoap-client-here"],
        "answer to /ask-back\n{}",
        describe(&o)
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Role reversal: aiocoap is the WebSocket server and asks the coapws client back
// ---------------------------------------------------------------------------------------------

/// A coapws endpoint with a site serving `/whoami` connects to an aiocoap server and GETs
/// `/ask-back`; aiocoap GETs `/whoami` from the remote of that request (our connection) and
/// answers with what we served.
#[test]
fn aiocoap_server_asks_back_a_coapws_client() {
    let tmp = TempDir::new("cw-ask-back");
    let (_server, port) = start_announcing(
        python("ws_server_asking_back.py"),
        "aiocoap-ask-back-server",
        tmp.path(),
        |line| {
            line.strip_prefix("port=")
                .and_then(|p| p.trim().parse::<u16>().ok())
        },
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let response = runtime.block_on(async {
        let site = Site::new().resource(
            "/whoami",
            Resource::new().get(|_req: IncomingRequest| async {
                Message::response(Code::CONTENT, "coapws-client-here")
            }),
        );
        let endpoint = Endpoint::builder().site(site).build();
        let uri = format!("coap+ws://127.0.0.1:{port}/ask-back");
        let r = tokio::time::timeout(Duration::from_secs(20), endpoint.get(&uri)).await;
        endpoint.shutdown().await;
        r
    });
    let response = response
        .expect("no answer to /ask-back within 20 s")
        .expect("request to /ask-back failed");
    assert_eq!(
        response.code(),
        Code::CONTENT,
        "answer to /ask-back: {}",
        response.message.payload_text()
    );
    assert_eq!(&response.payload()[..], b"coapws-client-here");
}
