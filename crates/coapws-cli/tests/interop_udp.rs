//! Interop over CoAP over UDP (`coap://`, RFC 7252, with block-wise transfers of RFC 7959),
//! both directions and with role reversal, against two implementations nobody here wrote:
//!
//! - aiocoap 0.4.17 (`target/peers/venv`, installed by `scripts/install-peers.sh`);
//! - libcoap 4.3.1, Debian's `libcoap3-bin` (`coap-client-notls`, `coap-server-notls`),
//!   installed by `scripts/install-peers.sh libcoap3-bin`.
//!
//! A missing peer makes a test fail with the command to run; nothing is skipped.
//!
//! Every process a test starts is killed when the test ends (a Drop guard), every wait is
//! bounded, ports are picked free on loopback (with retries when a server cannot bind), and
//! each test has its own temporary directory, so the tests run in parallel.
//!
//! Over UDP a message may not exceed 1152 bytes, so everything larger travels block-wise:
//! Block2 for responses (coapws serving files, and reassembling what aiocoap and libcoap
//! serve), Block1 for request bodies (coapws reassembling uploads).

mod common;

use common::*;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

/// `coapws [-v] serve [ROOT --write] --udp 127.0.0.1:0`; returns the guard and `coap://...`.
fn coapws_serve_udp(dir: &Path, args: &[&str]) -> (ChildGuard, String) {
    coapws_serve_one(dir, args, "--udp", "coap")
}

// ---------------------------------------------------------------------------------------------
// 1. aiocoap-client → coapws serve --udp
// ---------------------------------------------------------------------------------------------

/// aiocoap-client against `coapws serve --udp` (demo site): GET /hello (the exact demo text),
/// POST /echo (its payload back), GET /missing (4.04, exit 1), `/.well-known/core` (the demo's
/// links, 2.05 application/link-format), and a Non-confirmable GET /hello.
#[test]
fn aiocoap_client_to_coapws_demo_over_udp() {
    let tmp = TempDir::new("aio-demo");
    let (_server, base) = coapws_serve_udp(tmp.path(), &[]);

    let o = aiocoap_client(&[&format!("{base}/hello")]);
    assert_ok_payload(&o, HELLO.as_bytes(), "aiocoap GET coap:// /hello");

    let o = aiocoap_client(&[
        "-m",
        "POST",
        "--payload",
        "echo over coap://",
        &format!("{base}/echo"),
    ]);
    assert_ok_payload(&o, b"echo over coap://", "aiocoap POST coap:// /echo");

    let o = aiocoap_client(&[&format!("{base}/missing")]);
    assert_peer_fails_with(&o, "4.04", "aiocoap GET coap:// /missing");

    let o = aiocoap_client(&["-v", &format!("{base}/.well-known/core")]);
    assert_ok_containing(
        &o,
        &["</hello>", "</echo>", "</ask-back>"],
        "GET /.well-known/core",
    );
    let log = stderr(&o);
    assert!(
        log.contains("2.05") && log.contains("application/link-format"),
        "GET /.well-known/core: expected 2.05 with Content-Format application/link-format\n{}",
        describe(&o)
    );

    let o = aiocoap_client(&["--non", &format!("{base}/hello")]);
    assert_ok_payload(&o, HELLO.as_bytes(), "aiocoap NON GET coap:// /hello");
}

/// aiocoap-client against `coapws -v serve ROOT --write --udp`: GET a small file; GET a
/// 20 KiB file, which coapws answers block-wise (Block2, 1024-byte blocks: 20 of them) and
/// aiocoap reassembles; PUT a small file; PUT a 5 KiB file, which aiocoap sends in Block1
/// pieces (coapws answers 2.31 Continue and reassembles): exact bytes on disk, and a GET
/// returns them.
#[test]
fn aiocoap_client_to_coapws_file_server_over_udp() {
    let tmp = TempDir::new("aio-files");
    let root = tmp.subdir("root");
    std::fs::write(root.join("small.txt"), "small file served over coap://\n").unwrap();
    let big = printable(20 * 1024, 41);
    std::fs::write(root.join("big.txt"), &big).unwrap();
    let (server, base) = coapws_serve_udp(tmp.path(), &["-v", s(&root), "--write"]);

    let o = aiocoap_client(&[&format!("{base}/small.txt")]);
    assert_ok_payload(&o, b"small file served over coap://\n", "aiocoap GET small");

    let o = aiocoap_client(&["-v", &format!("{base}/big.txt")]);
    assert_ok_payload(&o, &big, "aiocoap GET 20 KiB (Block2)");
    // -v makes aiocoap-client log the options of the (last) response it assembled.
    assert!(
        stderr(&o).contains("block_number=19, more=False, size_exponent=6"),
        "aiocoap GET 20 KiB: expected the last Block2 to be 19/0/1024\n{}",
        describe(&o)
    );

    let content = "put by aiocoap-client over coap://";
    let o = aiocoap_client(&[
        "-m",
        "PUT",
        "--payload",
        content,
        &format!("{base}/put.txt"),
    ]);
    assert!(o.status.success(), "aiocoap PUT small\n{}", describe(&o));
    let on_disk = std::fs::read(root.join("put.txt")).expect("PUT created no file");
    assert_eq!(
        on_disk,
        content.as_bytes(),
        "file content after a small PUT"
    );

    let up = printable(5 * 1024, 43);
    let source = tmp.path().join("up-source.txt");
    std::fs::write(&source, &up).unwrap();
    let o = aiocoap_client(&[
        "-m",
        "PUT",
        "--payload",
        &format!("@{}", source.display()),
        &format!("{base}/up.txt"),
    ]);
    assert!(o.status.success(), "aiocoap PUT 5 KiB\n{}", describe(&o));
    let on_disk = std::fs::read(root.join("up.txt")).expect("PUT 5 KiB created no file");
    assert!(
        on_disk == up,
        "aiocoap PUT 5 KiB over coap://: {} bytes on disk, expected {}",
        on_disk.len(),
        up.len()
    );
    let log = server.log_text();
    assert!(
        log.contains("2.31 Continue") && log.contains("Block1:"),
        "the 5 KiB PUT really was block-wise (Block1, 2.31 Continue) in coapws's log"
    );

    let o = aiocoap_client(&[&format!("{base}/up.txt")]);
    assert_ok_payload(&o, &up, "aiocoap GET of the 5 KiB PUT");
}

// ---------------------------------------------------------------------------------------------
// 2. coapws client → aiocoap-fileserver over UDP
// ---------------------------------------------------------------------------------------------

/// `coapws get|put coap://` against `aiocoap-fileserver --write` (UDP on its --bind port): a
/// small file, a 20 KiB file that aiocoap serves block-wise (Block2) and the coapws client
/// reassembles, `/.well-known/core`, a missing file (4.04, exit 1), a small PUT that lands on
/// disk, and a Non-confirmable GET (`--non`) of the small file.
#[test]
fn coapws_client_to_aiocoap_fileserver_over_udp() {
    let tmp = TempDir::new("cw-aio");
    let root = tmp.subdir("root");
    std::fs::write(root.join("small.txt"), "small file from aiocoap over UDP\n").unwrap();
    let big = printable(20 * 1024 + 5, 47);
    std::fs::write(root.join("big.txt"), &big).unwrap();
    let (_server, p) = aiocoap_fileserver(tmp.path(), &root, false, &["--write"]);
    let base = format!("coap://127.0.0.1:{p}");

    let o = coapws_client("get", &[&format!("{base}/small.txt")]);
    assert_ok_payload(&o, b"small file from aiocoap over UDP\n", "GET small");

    let o = coapws_client("get", &["-v", &format!("{base}/big.txt")]);
    assert_ok_payload(&o, &big, "GET 20 KiB (Block2 from aiocoap)");
    assert!(
        stderr(&o).matches("Block2").count() >= 20,
        "GET 20 KiB: expected at least 20 Block2 exchanges in the -v log\n{}",
        describe(&o)
    );

    let o = coapws_client("get", &[&format!("{base}/.well-known/core")]);
    assert_ok_containing(&o, &["</>", "ct=40"], "GET /.well-known/core");

    let o = coapws_client("get", &[&format!("{base}/no-such-file.txt")]);
    assert_fails_with(&o, "4.04", "GET missing from aiocoap-fileserver");

    let content = "put by coapws into aiocoap-fileserver over coap://";
    let o = coapws_client("put", &["--payload", content, &format!("{base}/put.txt")]);
    assert!(o.status.success(), "PUT small\n{}", describe(&o));
    let on_disk = std::fs::read(root.join("put.txt")).expect("PUT created no file");
    assert_eq!(on_disk, content.as_bytes(), "file content after PUT");

    let o = coapws_client("get", &["-v", "--non", &format!("{base}/small.txt")]);
    assert_ok_payload(&o, b"small file from aiocoap over UDP\n", "NON GET small");
    assert!(
        stderr(&o).contains("confirmable=false"),
        "--non: the request went out Non-confirmable\n{}",
        describe(&o)
    );
}

// ---------------------------------------------------------------------------------------------
// 3. libcoap coap-client → coapws serve --udp
// ---------------------------------------------------------------------------------------------

/// libcoap's coap-client against `coapws serve --udp` (demo site): GET /hello, POST /echo
/// (`-e`), a 4.04, `/.well-known/core`, and a Non-confirmable GET (`-N`) answered
/// Non-confirmable.
#[test]
fn libcoap_client_to_coapws_demo_over_udp() {
    let tmp = TempDir::new("lc-demo");
    let (_server, base) = coapws_serve_udp(tmp.path(), &[]);

    let a = libcoap_client(tmp.path(), &["-m", "get", &format!("{base}/hello")]);
    a.assert_payload(HELLO.as_bytes(), "libcoap GET coap:// /hello");

    let a = libcoap_client(
        tmp.path(),
        &[
            "-m",
            "post",
            "-e",
            "libcoap-payload",
            &format!("{base}/echo"),
        ],
    );
    a.assert_payload(b"libcoap-payload", "libcoap POST coap:// /echo");

    let a = libcoap_client(tmp.path(), &[&format!("{base}/missing")]);
    assert!(
        a.payload.is_empty() && libcoap_got_code(&a, "4.04"),
        "libcoap GET /missing: expected 4.04\n{}",
        describe(&a.output)
    );

    let a = libcoap_client(tmp.path(), &[&format!("{base}/.well-known/core")]);
    let links = String::from_utf8_lossy(&a.payload);
    assert!(
        links.contains("</hello>") && links.contains("</echo>"),
        "libcoap GET /.well-known/core: {links:?}\n{}",
        describe(&a.output)
    );

    let a = libcoap_client(tmp.path(), &["-N", "-v", "7", &format!("{base}/hello")]);
    a.assert_payload(HELLO.as_bytes(), "libcoap NON GET coap:// /hello");
    let pdus = a.pdus();
    assert!(
        pdus.contains("t:NON c:GET") && pdus.contains("t:NON c:2.05"),
        "libcoap -N: expected a NON request answered by a NON 2.05\n{}",
        describe(&a.output)
    );
}

/// libcoap's coap-client against `coapws serve ROOT --write --udp`: a 20 KiB file, which
/// coapws serves in Block2 pieces and libcoap follows on its own (no `-b`), then with `-b 1024`
/// and with `-b 64` (coapws must honour the smaller block size libcoap asks for: 320 blocks);
/// and a 5 KiB PUT with `-b 1024` (Block1: 2.31 Continue per block, 2.01 at the end), exact
/// bytes on disk.
#[test]
fn libcoap_client_to_coapws_file_server_over_udp() {
    let tmp = TempDir::new("lc-files");
    let root = tmp.subdir("root");
    let big = printable(20 * 1024, 53);
    std::fs::write(root.join("big.txt"), &big).unwrap();
    let (_server, base) = coapws_serve_udp(tmp.path(), &[s(&root), "--write"]);
    let uri = format!("{base}/big.txt");

    let a = libcoap_client(tmp.path(), &["-v", "7", &uri]);
    a.assert_payload(&big, "libcoap GET 20 KiB (Block2 followed automatically)");
    assert!(
        a.pdus().contains("Block2:19/_/1024"),
        "libcoap GET 20 KiB: expected the last block 19/_/1024 in its PDU log\n{}",
        describe(&a.output)
    );

    let a = libcoap_client(tmp.path(), &["-b", "1024", &uri]);
    a.assert_payload(&big, "libcoap -b 1024 GET 20 KiB");

    let a = libcoap_client(tmp.path(), &["-b", "64", "-v", "7", &uri]);
    a.assert_payload(&big, "libcoap -b 64 GET 20 KiB");
    assert!(
        a.pdus().contains("Block2:319/_/64"),
        "libcoap -b 64 GET 20 KiB: expected 320 blocks of 64 bytes (last 319/_/64)\n{}",
        describe(&a.output)
    );

    let up = printable(5 * 1024, 59);
    let source = tmp.path().join("up-source.txt");
    std::fs::write(&source, &up).unwrap();
    let a = libcoap_client(
        tmp.path(),
        &[
            "-b",
            "1024",
            "-v",
            "7",
            "-m",
            "put",
            "-f",
            s(&source),
            &format!("{base}/up.txt"),
        ],
    );
    assert!(
        a.output.status.success(),
        "libcoap PUT 5 KiB\n{}",
        describe(&a.output)
    );
    let pdus = a.pdus();
    assert!(
        pdus.contains("c:2.31") && pdus.contains("c:2.01") && pdus.contains("Block1:4/_/1024"),
        "libcoap -b 1024 PUT 5 KiB: expected 2.31 Continue per block and 2.01 after 4/_/1024\n{}",
        describe(&a.output)
    );
    let on_disk = std::fs::read(root.join("up.txt")).expect("PUT 5 KiB created no file");
    assert!(
        on_disk == up,
        "libcoap Block1 PUT of 5 KiB over coap://: {} bytes on disk, expected {}",
        on_disk.len(),
        up.len()
    );
}

// ---------------------------------------------------------------------------------------------
// 4. coapws client → libcoap coap-server over UDP
// ---------------------------------------------------------------------------------------------

/// `coapws get|put coap://` against libcoap's example server (`coap-server-notls`): `/` (its
/// description), `/time` ("Mon DD HH:MM:SS"), `/.well-known/core`, a 4.04, a small PUT to
/// `/example_data` read back; a 20 KiB `/example_data` (uploaded by libcoap's own client with
/// Block1) that libcoap serves in Block2 pieces; and `/async?1`, which libcoap answers
/// separately: an empty ACK at once, then after a second a Confirmable 2.05 "done" that coapws
/// must acknowledge (libcoap's PDU log shows our empty ACK with the response's Message ID).
#[test]
fn coapws_client_to_libcoap_server_over_udp() {
    let tmp = TempDir::new("cw-lc");
    let (server, p) = libcoap_server(tmp.path(), "coap-server-notls", &["-v", "7"]);
    let base = format!("coap://127.0.0.1:{p}");

    let o = coapws_client("get", &[&format!("{base}/")]);
    assert_ok_starting(&o, LIBCOAP_DESCRIPTION, "GET /: libcoap's description");

    let o = coapws_client("get", &[&format!("{base}/time")]);
    assert_libcoap_time(&o);

    let o = coapws_client("get", &[&format!("{base}/.well-known/core")]);
    assert_ok_containing(
        &o,
        &["</time>", "</async>", r#"title="General Info""#],
        "GET /.well-known/core from libcoap",
    );

    let o = coapws_client("get", &[&format!("{base}/no-such-resource")]);
    assert_fails_with(&o, "4.04", "GET missing from libcoap");

    let data = "example data put by coapws over coap://";
    let o = coapws_client("put", &["--payload", data, &format!("{base}/example_data")]);
    assert!(o.status.success(), "PUT /example_data\n{}", describe(&o));
    let o = coapws_client("get", &[&format!("{base}/example_data")]);
    assert_ok_payload(&o, data.as_bytes(), "GET /example_data after PUT");

    // A 20 KiB /example_data, put there by libcoap's client in Block1 pieces: libcoap's server
    // serves it in Block2 pieces and coapws reassembles them.
    let big = printable(20 * 1024, 61);
    let source = tmp.path().join("example-big.txt");
    std::fs::write(&source, &big).unwrap();
    let a = libcoap_client(
        tmp.path(),
        &[
            "-b",
            "1024",
            "-m",
            "put",
            "-f",
            s(&source),
            &format!("{base}/example_data"),
        ],
    );
    assert!(
        a.output.status.success()
            && !stderr(&a.output)
                .lines()
                .any(|l| l.starts_with("4.") || l.starts_with("5.")),
        "libcoap client PUT of 20 KiB to libcoap server\n{}",
        describe(&a.output)
    );
    let o = coapws_client("get", &["-v", &format!("{base}/example_data")]);
    assert_ok_payload(&o, &big, "GET 20 KiB /example_data (Block2 from libcoap)");
    assert!(
        stderr(&o).contains("Block2"),
        "GET 20 KiB from libcoap: the transfer really was block-wise\n{}",
        describe(&o)
    );

    let started = Instant::now();
    let o = coapws_client("get", &[&format!("{base}/async?1")]);
    let took = started.elapsed();
    assert_ok_payload(&o, b"done", "GET /async?1 (separate response)");
    assert!(
        took >= Duration::from_millis(900),
        "GET /async?1 answered after {took:?}: libcoap delays it by one second"
    );
    // libcoap's `-v 7` log, as (sent?, PDU) pairs: the request "t:CON c:GET i:M1 … Uri-Path:async"
    // received, "t:ACK c:0.00 i:M1" sent at once (the empty ACK), "t:CON c:2.05 i:M2 … 'done'"
    // sent a second later, and coapws's "t:ACK c:0.00 i:M2" received. The last may be logged
    // a moment after our client exits: wait for it, bounded generously (it is a file libcoap
    // writes; a slow machine only makes it later).
    let mid = |pdu: &str| {
        pdu.split(" i:")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .map(str::to_owned)
    };
    let deadline = Instant::now() + READY_TIMEOUT;
    let (pdus, request_mid, separate_mid, acked) = loop {
        let pdus = libcoap_pdus(&server.log_text());
        let find = |sent: bool, what: &[&str]| {
            pdus.iter()
                .find(|(s, p)| *s == sent && what.iter().all(|w| p.contains(w)))
                .and_then(|(_, p)| mid(p))
        };
        let request_mid = find(false, &["t:CON c:GET", "Uri-Path:async"]);
        let separate_mid = find(true, &["t:CON c:2.05", "'done'"]);
        let acked = separate_mid.as_ref().is_some_and(|m| {
            pdus.iter()
                .any(|(s, p)| !*s && p.contains(&format!("t:ACK c:0.00 i:{m} ")))
        });
        if acked || Instant::now() > deadline {
            break (pdus, request_mid, separate_mid, acked);
        }
        thread::sleep(Duration::from_millis(50));
    };
    // On failure, show the PDUs that matter here (not the 20 KiB of block transfers).
    let shown = pdus
        .iter()
        .filter(|(_, p)| p.contains("async") || p.contains("c:0.00") || p.contains("'done'"))
        .map(|(s, p)| format!("{} {p}", if *s { "sent" } else { "recv" }))
        .collect::<Vec<_>>()
        .join("\n");
    let request_mid =
        request_mid.unwrap_or_else(|| panic!("libcoap's log shows no GET /async request\n{shown}"));
    assert!(
        pdus.iter()
            .any(|(s, p)| *s && p.contains(&format!("t:ACK c:0.00 i:{request_mid} "))),
        "libcoap sent no empty ACK for GET /async?1 (i:{request_mid}): not a separate \
         response\n{shown}"
    );
    let separate_mid = separate_mid.unwrap_or_else(|| {
        panic!("libcoap's log shows no Confirmable separate 2.05 'done'\n{shown}")
    });
    assert!(
        acked,
        "coapws did not acknowledge libcoap's Confirmable separate response \
         (i:{separate_mid})\n{shown}"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Role reversal over UDP: aiocoap is the client and serves /whoami on its socket
// ---------------------------------------------------------------------------------------------

/// An aiocoap context GETs `/ask-back` from `coapws serve --udp` (demo site); the coapws server
/// GETs `/whoami` from the address that request came from and answers with what it got. Both
/// ways of making the aiocoap context work: a client context (`create_client_context` with
/// `serversite` set) and a server context bound to `127.0.0.1:0`.
#[test]
fn coapws_server_asks_back_an_aiocoap_client_over_udp() {
    let tmp = TempDir::new("aio-ask-back");
    let (_server, base) = coapws_serve_udp(tmp.path(), &[]);
    for mode in ["client", "server"] {
        let payload = format!("aiocoap-{mode}-context-here");
        let mut cmd = python("udp_client_serving.py");
        cmd.arg(mode).arg(format!("{base}/ask-back")).arg(&payload);
        let o = run(cmd, COMMAND_TIMEOUT);
        assert!(
            o.status.success(),
            "{mode} context: script failed\n{}",
            describe(&o)
        );
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(
            out.lines().collect::<Vec<_>>(),
            [
                "code=2.05".to_owned(),
                format!("payload={payload}"),
                "whoami-asked=1".to_owned()
            ],
            "{mode} context: answer to /ask-back\n{}",
            describe(&o)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 6. `coapws serve --bind HOST:PORT` serves UDP on PORT
// ---------------------------------------------------------------------------------------------

/// `coapws serve --bind 127.0.0.1:P` opens UDP and TCP on P (WebSocket on P+3000), as
/// aiocoap does: libcoap's coap-client and aiocoap-client reach /hello over UDP on P.
#[test]
fn peers_reach_coapws_serve_bind_over_udp() {
    let tmp = TempDir::new("bind");
    let (_server, l, p) = coapws_serve_bind(
        tmp.path(),
        &[],
        &[(0, true), (3000, false)],
        3,
        READY_TIMEOUT,
    );
    assert_eq!(
        l.url("coap"),
        format!("coap://127.0.0.1:{p}"),
        "announced: {:?}",
        l.0
    );
    let base = format!("coap://127.0.0.1:{p}");
    let a = libcoap_client(tmp.path(), &[&format!("{base}/hello")]);
    a.assert_payload(HELLO.as_bytes(), "libcoap GET /hello on the --bind port");
    let o = aiocoap_client(&[&format!("{base}/hello")]);
    assert_ok_payload(
        &o,
        HELLO.as_bytes(),
        "aiocoap GET /hello on the --bind port",
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Found by these peers, now fixed: block-wise both ways over UDP
// ---------------------------------------------------------------------------------------------

/// A POST whose body comes in Block1 pieces and whose response is too large for one datagram
/// (RFC 7959 §3.2, Figure 7): after the last Block1 block coapws answers 2.04 with Block2 0 of
/// the echoed 5 KiB, and the client asks for the next blocks with POSTs carrying only Block2
/// (no payload, no Block1). coapws must serve those blocks from the response it already made
/// (it once ran the handler again with the empty request body, so `/echo` returned nothing
/// and the slicer answered 4.02 "Block2 past the end"). Both libcoap (`-b 1024`) and aiocoap
/// (5 KiB `--payload`) tripped over it.
#[test]
fn block1_post_with_a_block2_response_over_udp() {
    let tmp = TempDir::new("post-b1-b2");
    let (_server, base) = coapws_serve_udp(tmp.path(), &[]);
    let body = printable(5 * 1024, 67);
    let source = tmp.path().join("body.txt");
    std::fs::write(&source, &body).unwrap();
    let uri = format!("{base}/echo");

    let lc = libcoap_client(
        tmp.path(),
        &[
            "-b",
            "1024",
            "-v",
            "7",
            "-m",
            "post",
            "-f",
            s(&source),
            &uri,
        ],
    );
    let aio = aiocoap_client(&[
        "-m",
        "POST",
        "--payload",
        &format!("@{}", source.display()),
        &uri,
    ]);
    // libcoap's PDU log: Block1 0..4 up (2.31 for each but the last), the last answered 2.04
    // with Block2 0 of the echo, then POSTs carrying only Block2 1..4, each answered 2.04.
    let pdus = libcoap_pdus(&all_text(&lc.output));
    let shown = || {
        pdus.iter()
            .map(|(s, p)| {
                format!(
                    "{} {}",
                    if *s { "sent" } else { "recv" },
                    p.split(" :: ").next().unwrap_or(p)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let posts: Vec<&String> = pdus
        .iter()
        .filter(|(s, p)| *s && p.contains(" c:POST "))
        .map(|(_, p)| p)
        .collect();
    let answers: Vec<&String> = pdus.iter().filter(|(s, _)| !*s).map(|(_, p)| p).collect();
    let mut expected_posts: Vec<String> = (0..5)
        .map(|n| format!("Block1:{n}/{}/1024", if n < 4 { "M" } else { "_" }))
        .collect();
    expected_posts.extend((1..5).map(|n| format!("Block2:{n}/_/1024")));
    assert!(
        posts.len() == 9
            && posts
                .iter()
                .zip(&expected_posts)
                .all(|(p, e)| p.contains(e.as_str()))
            && posts[5..].iter().all(|p| !p.contains("Block1:")),
        "libcoap's POSTs: expected {expected_posts:?}\n{}",
        shown()
    );
    let codes: Vec<&str> = answers
        .iter()
        .filter_map(|p| p.split(" c:").nth(1)?.split(' ').next())
        .collect();
    assert!(
        codes
            == [
                "2.31", "2.31", "2.31", "2.31", "2.04", "2.04", "2.04", "2.04", "2.04"
            ]
            && answers[4].contains("Block2:0/M/1024")
            && answers[4].contains("Block1:4/_/1024"),
        "coapws's answers: 2.31 ×4, then 2.04 with Block2 0/M and Block1 4, then 2.04 ×4\n{}",
        shown()
    );
    let lc_ok = lc.payload == body;
    let aio_ok = aio.status.success() && aio.stdout == body;
    assert!(
        lc_ok && aio_ok,
        "POST /echo of 5 KiB over coap:// (Block1 up, Block2 down): libcoap got {} bytes back \
         ({}), aiocoap got {} bytes back ({})\n--- libcoap ---\n{}\n--- aiocoap ---\n{}",
        lc.payload.len(),
        if lc_ok { "ok" } else { "wrong" },
        aio.stdout.len(),
        if aio_ok { "ok" } else { "wrong" },
        describe(&lc.output),
        describe(&aio)
    );
}

/// `coapws put coap://… --payload @5KiB`: a body larger than one datagram goes up in Block1
/// pieces (RFC 7959 §2.5; the client once failed before sending with "message of 5136 bytes
/// exceeds the limit of 1152"). Into aiocoap-fileserver: the exact bytes on disk, and the
/// client's `-v` log shows 5 Block1 requests and 4 × 2.31. Into libcoap's example server: its
/// `-v 7` log shows it received Block1 0/M … 4/_ and answered 2.31 ×4 and then 2.01 or 2.04,
/// and a GET returns the body.
#[test]
fn coapws_client_put_of_5_kib_over_udp() {
    let tmp = TempDir::new("cw-put-5k");
    let root = tmp.subdir("root");
    let (_server, p) = aiocoap_fileserver(tmp.path(), &root, false, &["--write"]);
    let body = printable(5 * 1024, 71);
    let source = tmp.path().join("body.txt");
    std::fs::write(&source, &body).unwrap();
    let o = coapws_client(
        "put",
        &[
            "-v",
            "--payload",
            &format!("@{}", source.display()),
            &format!("coap://127.0.0.1:{p}/up.txt"),
        ],
    );
    let log = stderr(&o);
    let block1_requests = log
        .lines()
        .filter(|l| l.contains("send request") && l.contains("Block1:"))
        .count();
    let continues = log
        .lines()
        .filter(|l| l.contains("received response") && l.contains("2.31 Continue"))
        .count();
    assert!(
        block1_requests == 5 && continues == 4,
        "coapws PUT of 5 KiB: {block1_requests} Block1 requests and {continues} × 2.31 in its \
         log, expected 5 and 4\n{}",
        describe(&o)
    );
    assert!(
        o.status.success(),
        "coapws PUT of 5 KiB to aiocoap-fileserver over coap://\n{}",
        describe(&o)
    );
    let on_disk = std::fs::read(root.join("up.txt")).unwrap_or_default();
    assert!(
        on_disk == body,
        "coapws PUT of 5 KiB over coap://: {} bytes on disk, expected {}",
        on_disk.len(),
        body.len()
    );

    // The same upload into libcoap's example server, as libcoap saw it.
    let (server, lp) = libcoap_server(tmp.path(), "coap-server-notls", &["-v", "7"]);
    let uri = format!("coap://127.0.0.1:{lp}/example_data");
    let o = coapws_client(
        "put",
        &["--payload", &format!("@{}", source.display()), &uri],
    );
    assert!(
        o.status.success(),
        "coapws PUT of 5 KiB to libcoap\n{}",
        describe(&o)
    );
    let o = coapws_client("get", &[&uri]);
    assert_ok_payload(&o, &body, "GET of the 5 KiB coapws put into libcoap");
    let pdus = libcoap_pdus(&server.log_text());
    let shown = pdus
        .iter()
        .map(|(s, p)| {
            format!(
                "{} {}",
                if *s { "sent" } else { "recv" },
                p.split(" :: ").next().unwrap_or(p)
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    let puts: Vec<&String> = pdus
        .iter()
        .filter(|(s, p)| !*s && p.contains(" c:PUT "))
        .map(|(_, p)| p)
        .collect();
    assert!(
        puts.len() == 5
            && puts.iter().enumerate().all(|(n, p)| {
                p.contains(&format!(
                    "Block1:{n}/{}/1024",
                    if n < 4 { "M" } else { "_" }
                ))
            }),
        "libcoap received the PUT in 5 Block1 pieces\n{shown}"
    );
    // Each PUT's answer: the ACK libcoap sent with its Message ID (piggybacked).
    let mid = |p: &str| p.split(" i:").nth(1)?.split(' ').next().map(str::to_owned);
    let answers: Vec<&str> = puts
        .iter()
        .filter_map(|put| {
            let m = mid(put)?;
            pdus.iter()
                .find(|(s, p)| *s && p.contains("t:ACK c:") && mid(p).as_deref() == Some(&m))
                .and_then(|(_, p)| p.split(" c:").nth(1)?.split(' ').next())
        })
        .collect();
    assert!(
        answers.len() == 5
            && answers[..4].iter().all(|c| *c == "2.31")
            && matches!(answers[4], "2.01" | "2.04"),
        "libcoap answered {answers:?}\n{shown}"
    );
}
