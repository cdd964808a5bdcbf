//! Interop over the sibling transports of CoAP over WebSockets: CoAP over TCP (`coap+tcp`),
//! CoAP over TLS (`coaps+tcp`) and CoAP over secure WebSockets (`coaps+ws`), RFC 8323, both
//! directions, against two implementations nobody here wrote:
//!
//! - aiocoap 0.4.17 (`target/peers/venv`, installed by `scripts/install-peers.sh`);
//! - libcoap 4.3.1, Debian's `libcoap3-bin` (`coap-client-notls`, `coap-server-notls` and the
//!   `-gnutls` / `-openssl` builds for TLS), installed by `scripts/install-peers.sh libcoap3-bin`.
//!
//! A missing peer makes a test fail with the command to run; nothing is skipped.
//!
//! Every process a test starts is killed when the test ends (a Drop guard), every wait is
//! bounded, ports are picked free on loopback, and each test has its own temporary directory
//! (certificates are made in it with rcgen), so the tests run in parallel.

mod common;

use common::*;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// 1. aiocoap over coap+tcp, both directions
// ---------------------------------------------------------------------------------------------

/// aiocoap-client against `coapws serve --tcp`: GET /hello (the demo text), POST /echo (its
/// payload back), a missing path (4.04, exit 1); then against `coapws serve ROOT --tcp` a
/// 100 KiB GET in one message (framing with a 32-bit extended length). (A 100 KiB PUT is in
/// `aiocoap_block1_put_to_coapws_over_tcp_is_not_truncated` below.)
#[test]
fn aiocoap_client_to_coapws_over_tcp() {
    let tmp = TempDir::new("aio-tcp");
    let (_server, l) = coapws_serve(tmp.path(), &["--tcp", "127.0.0.1:0"], 1);
    let base = l.url("coap+tcp");

    let o = aiocoap_client(&[&format!("{base}/hello")]);
    assert_ok_payload(&o, HELLO.as_bytes(), "aiocoap GET coap+tcp /hello");

    let o = aiocoap_client(&[
        "-m",
        "POST",
        "--payload",
        "echo over coap+tcp",
        &format!("{base}/echo"),
    ]);
    assert_ok_payload(&o, b"echo over coap+tcp", "aiocoap POST coap+tcp /echo");

    let o = aiocoap_client(&[&format!("{base}/missing")]);
    assert_eq!(o.status.code(), Some(1), "GET /missing\n{}", describe(&o));
    assert!(
        format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o)).contains("4.04 Not Found"),
        "GET /missing: no 4.04\n{}",
        describe(&o)
    );

    let root = tmp.subdir("root");
    let big = printable(100 * 1024, 21);
    std::fs::write(root.join("big.txt"), &big).unwrap();
    let (_files, l) = coapws_serve(tmp.path(), &[s(&root), "--tcp", "127.0.0.1:0"], 1);
    let o = aiocoap_client(&[&format!("{}/big.txt", l.url("coap+tcp"))]);
    assert_ok_payload(&o, &big, "aiocoap GET coap+tcp 100 KiB");
}

/// `coapws get|put coap+tcp://` against aiocoap-fileserver (TCP on its --bind port): a small
/// file, a 50 KiB file that aiocoap serves block-wise, `/.well-known/core`, a missing file
/// (4.04, exit 1), and a PUT that lands on disk.
#[test]
fn coapws_client_to_aiocoap_fileserver_over_tcp() {
    let tmp = TempDir::new("cw-aio-tcp");
    let root = tmp.subdir("root");
    std::fs::write(root.join("file.txt"), "served by aiocoap over coap+tcp\n").unwrap();
    let large = printable(50 * 1024 + 3, 5);
    std::fs::write(root.join("large.txt"), &large).unwrap();
    let (_server, p) = aiocoap_fileserver(tmp.path(), &root, false, &["--write"]);
    let base = format!("coap+tcp://127.0.0.1:{p}");

    let o = coapws_client("get", &[&format!("{base}/file.txt")]);
    assert_ok_payload(
        &o,
        b"served by aiocoap over coap+tcp\n",
        "coapws GET coap+tcp /file.txt",
    );

    let o = coapws_client("get", &["-v", &format!("{base}/large.txt")]);
    assert_ok_payload(&o, &large, "coapws GET coap+tcp 50 KiB");
    assert!(
        stderr(&o).contains("Block2"),
        "aiocoap served the 50 KiB block-wise\n{}",
        describe(&o)
    );

    let o = coapws_client("get", &[&format!("{base}/.well-known/core")]);
    assert_ok_containing(&o, &["</>", "ct=40"], "GET /.well-known/core");

    let o = coapws_client("get", &[&format!("{base}/no-such-file")]);
    assert_eq!(o.status.code(), Some(3), "GET missing\n{}", describe(&o));
    assert!(
        stderr(&o).contains("4.04 Not Found"),
        "GET missing\n{}",
        describe(&o)
    );

    let o = coapws_client(
        "put",
        &["--payload", "put over coap+tcp", &format!("{base}/put.txt")],
    );
    assert!(o.status.success(), "PUT\n{}", describe(&o));
    assert_eq!(
        std::fs::read(root.join("put.txt")).expect("PUT created no file"),
        b"put over coap+tcp"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. aiocoap over coaps+ws and coaps+tcp, both directions
// ---------------------------------------------------------------------------------------------

/// aiocoap-client, trusting our CA through `--credentials`, against
/// `coapws serve --wss --tls`: GET /hello and POST /echo over `coaps+ws`, GET /hello over
/// `coaps+tcp` (ALPN "coap"); without the credentials aiocoap refuses the certificate.
#[test]
fn aiocoap_client_to_coapws_over_wss_and_tls() {
    let tmp = TempDir::new("aio-tls");
    let (ca, crt, key) = write_pki(tmp.path());
    let (_server, l) = coapws_serve(
        tmp.path(),
        &[
            "--tls-server-certificate",
            s(&crt),
            "--tls-server-key",
            s(&key),
            "--wss",
            "127.0.0.1:0",
            "--tls",
            "127.0.0.1:0",
        ],
        2,
    );
    let wss = l.url_at("coaps+ws", "localhost");
    let tls = l.url_at("coaps+tcp", "localhost");
    let creds = tmp.path().join("creds.json");
    std::fs::write(
        &creds,
        format!(
            r#"{{"{wss}/*": {{"tlscert": {{"certfile": "{ca}"}}}},
                "{tls}/*": {{"tlscert": {{"certfile": "{ca}"}}}}}}"#,
            ca = s(&ca)
        ),
    )
    .unwrap();

    let o = aiocoap_client(&["--credentials", s(&creds), &format!("{wss}/hello")]);
    assert_ok_payload(&o, HELLO.as_bytes(), "aiocoap GET coaps+ws /hello");

    let o = aiocoap_client(&[
        "--credentials",
        s(&creds),
        "-m",
        "POST",
        "--payload",
        "echo over coaps+ws",
        &format!("{wss}/echo"),
    ]);
    assert_ok_payload(&o, b"echo over coaps+ws", "aiocoap POST coaps+ws /echo");

    let o = aiocoap_client(&["--credentials", s(&creds), &format!("{tls}/hello")]);
    assert_ok_payload(&o, HELLO.as_bytes(), "aiocoap GET coaps+tcp /hello");

    // Without trusting our CA the handshake fails: TLS really is in use and verified.
    let o = aiocoap_client(&[&format!("{tls}/hello")]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "aiocoap without credentials\n{}",
        describe(&o)
    );
    assert!(
        o.stdout.is_empty(),
        "no payload without trust\n{}",
        describe(&o)
    );
}

/// `coapws get --ca-cert` against aiocoap-fileserver with TLS material: a file over
/// `coaps+ws` (WS port + 1 = P+3001) and over `coaps+tcp` (P+1), a 4.04 over `coaps+ws`, and
/// a certificate error without `--ca-cert`.
#[test]
fn coapws_client_to_aiocoap_fileserver_over_wss_and_tls() {
    let tmp = TempDir::new("cw-aio-tls");
    let (ca, crt, key) = write_pki(tmp.path());
    let root = tmp.subdir("root");
    std::fs::write(root.join("file.txt"), "served by aiocoap over TLS\n").unwrap();
    let (_server, p) = aiocoap_fileserver(
        tmp.path(),
        &root,
        true,
        &[
            "--tls-server-certificate",
            s(&crt),
            "--tls-server-key",
            s(&key),
        ],
    );
    let wss = format!("coaps+ws://localhost:{}", p + 3001);
    let tls = format!("coaps+tcp://localhost:{}", p + 1);

    for base in [&wss, &tls] {
        let o = coapws_client("get", &["--ca-cert", s(&ca), &format!("{base}/file.txt")]);
        assert_ok_payload(
            &o,
            b"served by aiocoap over TLS\n",
            &format!("coapws GET {base}/file.txt"),
        );
    }

    let o = coapws_client(
        "get",
        &["--ca-cert", s(&ca), &format!("{wss}/no-such-file")],
    );
    assert_eq!(o.status.code(), Some(3), "GET missing\n{}", describe(&o));
    assert!(
        stderr(&o).contains("4.04 Not Found"),
        "GET missing\n{}",
        describe(&o)
    );

    let o = coapws_client("get", &[&format!("{wss}/file.txt")]);
    assert_eq!(
        o.status.code(),
        Some(5),
        "without --ca-cert\n{}",
        describe(&o)
    );
    assert!(
        stderr(&o).contains("certificate"),
        "without --ca-cert: a certificate error\n{}",
        describe(&o)
    );
}

// ---------------------------------------------------------------------------------------------
// 3. libcoap over coap+tcp, both directions
// ---------------------------------------------------------------------------------------------

/// libcoap's coap-client against `coapws serve --tcp`: GET /hello, POST /echo, a 4.04 for a
/// missing path, `/.well-known/core`; then against `coapws serve ROOT --write --tcp` an
/// 80000-byte GET and PUT, whole (libcoap announces an 8 MiB Max-Message-Size, we 1 MiB).
#[test]
fn libcoap_client_to_coapws_over_tcp() {
    let tmp = TempDir::new("lc-tcp");
    let (_server, l) = coapws_serve(tmp.path(), &["--tcp", "127.0.0.1:0"], 1);
    let base = l.url("coap+tcp");
    let client = "coap-client-notls";

    let a = libcoap_client_bin(client, tmp.path(), &["-m", "get", &format!("{base}/hello")]);
    a.assert_payload(HELLO.as_bytes(), "libcoap GET coap+tcp /hello");

    let a = libcoap_client_bin(
        client,
        tmp.path(),
        &[
            "-m",
            "post",
            "-e",
            "libcoap-payload",
            &format!("{base}/echo"),
        ],
    );
    a.assert_payload(b"libcoap-payload", "libcoap POST coap+tcp /echo");

    let a = libcoap_client_bin(client, tmp.path(), &[&format!("{base}/missing")]);
    assert!(
        a.payload.is_empty() && libcoap_got_code(&a, "4.04"),
        "libcoap GET /missing: expected 4.04 on stderr\n{}",
        describe(&a.output)
    );

    let a = libcoap_client_bin(client, tmp.path(), &[&format!("{base}/.well-known/core")]);
    let links = String::from_utf8_lossy(&a.payload);
    assert!(
        links.contains("</hello>") && links.contains("</echo>"),
        "libcoap GET /.well-known/core: {links:?}\n{}",
        describe(&a.output)
    );

    let root = tmp.subdir("root");
    let big = printable(80_000, 17);
    std::fs::write(root.join("big.txt"), &big).unwrap();
    let (_files, l) = coapws_serve(
        tmp.path(),
        &[s(&root), "--write", "--tcp", "127.0.0.1:0"],
        1,
    );
    let base = l.url("coap+tcp");
    let a = libcoap_client_bin(client, tmp.path(), &[&format!("{base}/big.txt")]);
    a.assert_payload(&big, "libcoap GET coap+tcp 80000 bytes");

    let source = tmp.path().join("up-source.txt");
    let up = printable(80_000, 19);
    std::fs::write(&source, &up).unwrap();
    let a = libcoap_client_bin(
        client,
        tmp.path(),
        &["-m", "put", "-f", s(&source), &format!("{base}/up.txt")],
    );
    assert!(
        a.output.status.success(),
        "libcoap PUT 80000 bytes\n{}",
        describe(&a.output)
    );
    let on_disk = std::fs::read(root.join("up.txt")).expect("PUT created no file");
    assert!(
        on_disk == up,
        "libcoap PUT 80000 bytes over coap+tcp: {} bytes on disk",
        on_disk.len()
    );
}

/// `coapws get|put coap+tcp://` against libcoap's example server (`coap-server-notls`, UDP
/// and TCP on the same port): `/` (its description text), `/time` (a clock "Mon DD HH:MM:SS"),
/// `/async?1` (answered after one second), `/.well-known/core`, a 4.04, and an 80000-byte
/// PUT to `/example_data` read back whole.
#[test]
fn coapws_client_to_libcoap_server_over_tcp() {
    let tmp = TempDir::new("cw-lc-tcp");
    let (_server, p) = libcoap_server(tmp.path(), "coap-server-notls", &[]);
    let base = format!("coap+tcp://127.0.0.1:{p}");

    let o = coapws_client("get", &[&format!("{base}/")]);
    assert_ok_starting(&o, LIBCOAP_DESCRIPTION, "GET /: libcoap's description");

    let o = coapws_client("get", &[&format!("{base}/time")]);
    assert_libcoap_time(&o);

    let started = Instant::now();
    let o = coapws_client("get", &[&format!("{base}/async?1")]);
    let took = started.elapsed();
    assert_ok_payload(&o, b"done", "GET /async?1");
    assert!(
        took >= Duration::from_millis(900),
        "GET /async?1 answered after {took:?}: libcoap delays it by one second"
    );

    let o = coapws_client("get", &[&format!("{base}/.well-known/core")]);
    assert_ok_containing(
        &o,
        &["</time>", "</async>", r#"title="General Info""#],
        "GET /.well-known/core from libcoap",
    );

    let o = coapws_client("get", &[&format!("{base}/no-such-resource")]);
    assert_eq!(o.status.code(), Some(3), "GET missing\n{}", describe(&o));
    assert!(
        stderr(&o).contains("4.04 Not Found"),
        "GET missing\n{}",
        describe(&o)
    );

    let data = printable(80_000, 23);
    let source = tmp.path().join("example-data.txt");
    std::fs::write(&source, &data).unwrap();
    let o = coapws_client(
        "put",
        &[
            "--payload",
            &format!("@{}", source.display()),
            &format!("{base}/example_data"),
        ],
    );
    assert!(o.status.success(), "PUT /example_data\n{}", describe(&o));
    let o = coapws_client("get", &[&format!("{base}/example_data")]);
    assert_ok_payload(&o, &data, "GET /example_data after an 80000-byte PUT");
}

// ---------------------------------------------------------------------------------------------
// 4. libcoap over coaps+tcp (GnuTLS and OpenSSL builds), both directions
// ---------------------------------------------------------------------------------------------

/// coap-client-gnutls and coap-client-openssl with `-R ca.pem` against `coapws serve --tls`:
/// GET /hello and POST /echo; with `-R` of an unrelated CA they refuse our certificate and
/// receive nothing.
#[test]
fn libcoap_tls_clients_to_coapws_over_tls() {
    let tmp = TempDir::new("lc-tls");
    let (ca, crt, key) = write_pki(tmp.path());
    let other = write_other_ca(tmp.path());
    let (_server, l) = coapws_serve(
        tmp.path(),
        &[
            "--tls-server-certificate",
            s(&crt),
            "--tls-server-key",
            s(&key),
            "--tls",
            "127.0.0.1:0",
        ],
        1,
    );
    let base = l.url_at("coaps+tcp", "localhost");
    // What each TLS backend says when the server's CA is not the one trusted (libcoap 4.3.1's
    // GnuTLS and OpenSSL builds).
    for (client, complaint) in [
        ("coap-client-gnutls", "The peer certificate's CA is unknown"),
        (
            "coap-client-openssl",
            "unable to get local issuer certificate",
        ),
    ] {
        let a = libcoap_client_bin(
            client,
            tmp.path(),
            &["-R", s(&ca), &format!("{base}/hello")],
        );
        a.assert_payload(HELLO.as_bytes(), &format!("{client} GET coaps+tcp /hello"));

        let a = libcoap_client_bin(
            client,
            tmp.path(),
            &[
                "-R",
                s(&ca),
                "-m",
                "post",
                "-e",
                "over-tls",
                &format!("{base}/echo"),
            ],
        );
        a.assert_payload(b"over-tls", &format!("{client} POST coaps+tcp /echo"));

        let a = libcoap_client_bin(
            client,
            tmp.path(),
            &["-R", s(&other), &format!("{base}/hello")],
        );
        assert!(
            a.payload.is_empty(),
            "{client} trusting an unrelated CA got a payload\n{}",
            describe(&a.output)
        );
        let err = all_text(&a.output);
        assert!(
            err.contains(complaint),
            "{client} trusting an unrelated CA: expected {complaint:?}\n{}",
            describe(&a.output)
        );
    }
}

/// `coapws get --ca-cert coaps+tcp://` against coap-server-gnutls and coap-server-openssl
/// (`-c crt -j key`: TLS on P+1): `/` answers libcoap's description.
#[test]
fn coapws_client_to_libcoap_tls_servers() {
    let tmp = TempDir::new("cw-lc-tls");
    let (ca, crt, key) = write_pki(tmp.path());
    for server in ["coap-server-gnutls", "coap-server-openssl"] {
        let (_server, p) = libcoap_server(tmp.path(), server, &["-c", s(&crt), "-j", s(&key)]);
        let uri = format!("coaps+tcp://localhost:{}/", p + 1);
        let o = coapws_client("get", &["--ca-cert", s(&ca), &uri]);
        assert_ok_starting(&o, LIBCOAP_DESCRIPTION, &format!("{server}: GET {uri}"));
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Found by these peers, now fixed: block-wise uploads, small peers, OSCORE
// ---------------------------------------------------------------------------------------------

/// The PDUs of a libcoap `-v 7` log that libcoap sent with method `method` (e.g. "PUT"), and
/// the codes of the responses it received, in order.
fn libcoap_exchange(log: &str, method: &str) -> (Vec<String>, Vec<String>) {
    let pdus = libcoap_pdus(log);
    let sent = pdus
        .iter()
        .filter(|(s, p)| *s && p.contains(&format!(" c:{method} ")))
        .map(|(_, p)| p.clone())
        .collect();
    let codes = pdus
        .iter()
        .filter(|(s, p)| !*s && !p.contains(" c:CSM "))
        .filter_map(|(_, p)| p.split(" c:").nth(1)?.split(' ').next().map(str::to_owned))
        .collect();
    (sent, codes)
}

/// A PDU line without its payload (for failure messages).
fn head(pdu: &str) -> &str {
    pdu.split(" :: ").next().unwrap_or(pdu)
}

/// libcoap `-b 1024` sends a PUT and a POST of 80000 bytes in Block1 pieces over `coap+tcp`
/// (RFC 7959 §2.5, RFC 8323 §6): each request separately, its `-v 7` log shows the 79 blocks
/// it sent (0/M/1024 … 78/_/1024), a 2.31 Continue for each but the last, then the final code
/// (2.01 for the new file, 2.04 for /echo); the file holds the 80000 bytes and /echo returns
/// them.
#[test]
fn libcoap_block1_upload_to_coapws_is_not_truncated() {
    let tmp = TempDir::new("lc-block1");
    let root = tmp.subdir("root");
    let (_files, l) = coapws_serve(
        tmp.path(),
        &[s(&root), "--write", "--tcp", "127.0.0.1:0"],
        1,
    );
    let (_demo, d) = coapws_serve(tmp.path(), &["--tcp", "127.0.0.1:0"], 1);
    let data = printable(80_000, 29);
    let source = tmp.path().join("source.txt");
    std::fs::write(&source, &data).unwrap();
    let blocks = data.len().div_ceil(1024);
    let check = |a: &LibcoapAnswer, method: &str, final_code: &str, what: &str| {
        let (sent, codes) = libcoap_exchange(&all_text(&a.output), method);
        let shown = || sent.iter().map(|p| head(p)).collect::<Vec<_>>().join("\n");
        assert_eq!(
            sent.len(),
            blocks,
            "{what}: {blocks} {method} PDUs\n{}",
            shown()
        );
        for (n, pdu) in sent.iter().enumerate() {
            let more = if n + 1 < blocks { "M" } else { "_" };
            assert!(
                pdu.contains(&format!("Block1:{n}/{more}/1024")),
                "{what}: block {n} is {}",
                head(pdu)
            );
        }
        let mut expected = vec!["2.31".to_owned(); blocks - 1];
        expected.push(final_code.to_owned());
        assert_eq!(
            codes,
            expected,
            "{what}: responses\n{}",
            describe(&a.output)
        );
    };

    let a = libcoap_client(
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
            &format!("{}/echo", d.url("coap+tcp")),
        ],
    );
    check(&a, "POST", "2.04", "Block1 POST /echo");
    a.assert_payload(&data, "Block1 POST /echo of 80000 bytes: echoed whole");

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
            &format!("{}/up.txt", l.url("coap+tcp")),
        ],
    );
    check(&a, "PUT", "2.01", "Block1 PUT /up.txt");
    let on_disk = std::fs::read(root.join("up.txt")).unwrap_or_default();
    assert!(
        on_disk == data,
        "Block1 PUT of 80000 bytes in 1024-byte blocks over coap+tcp: {} bytes on disk",
        on_disk.len()
    );
}

/// aiocoap-client PUTs 100 KiB over `coap+tcp`. It sends the request before it has our CSM,
/// so it starts block-wise: a BERT Block1 block 0 of 1024 bytes (Block1 value 15: NUM 0, M,
/// SZX 7) with Size1 102400. coapws answers 2.31 Continue (the bug was to take that block
/// for the whole body and answer 2.01); by then aiocoap has our CSM (1 MiB, Block-Wise) and
/// sends the body whole in one PUT, answered 2.01. coapws's `-v` log shows exactly that, and
/// the file holds the 100 KiB.
#[test]
fn aiocoap_block1_put_to_coapws_over_tcp_is_not_truncated() {
    let tmp = TempDir::new("aio-block1");
    let root = tmp.subdir("root");
    let (files, l) = coapws_serve(
        tmp.path(),
        &["-v", s(&root), "--write", "--tcp", "127.0.0.1:0"],
        1,
    );
    let uri = format!("{}/big.txt", l.url("coap+tcp"));
    let big = printable(100 * 1024, 21);
    let source = tmp.path().join("big-source.txt");
    std::fs::write(&source, &big).unwrap();
    let o = aiocoap_client(&[
        "-m",
        "PUT",
        "--payload",
        &format!("@{}", source.display()),
        &uri,
    ]);
    assert!(
        o.status.success(),
        "aiocoap PUT of 100 KiB over coap+tcp\n{}",
        describe(&o)
    );
    let on_disk = std::fs::read(root.join("big.txt")).unwrap_or_default();
    assert!(
        on_disk == big,
        "aiocoap PUT of 100 KiB over coap+tcp: coapws stored {} bytes",
        on_disk.len()
    );
    let log = files.log_text();
    let wire: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("received request") || l.contains("send response"))
        .collect();
    let expected: [&[&str]; 4] = [
        &[
            "received request",
            "PUT",
            "Block1:0/1/1024",
            "Size1:102400",
            "payload 1024 bytes",
        ],
        &["send response", "2.31 Continue", "Block1:0/1/1024"],
        &["received request", "PUT", "payload 102400 bytes"],
        &["send response", "2.01 Created"],
    ];
    assert_eq!(
        wire.len(),
        expected.len(),
        "the exchange in coapws's log:\n{}",
        wire.join("\n")
    );
    for (line, parts) in wire.iter().zip(expected) {
        assert!(
            parts.iter().all(|p| line.contains(p)),
            "expected {parts:?} in {line}\nthe exchange in coapws's log:\n{}",
            wire.join("\n")
        );
    }
    assert!(
        !wire[2].contains("Block1"),
        "the second PUT carries the body whole: {}",
        wire[2]
    );
}

/// libcoap `-X 2000` announces a Max-Message-Size of 2000 in its CSM. coapws (which itself
/// announces Block-Wise-Transfer) may not send a larger message (RFC 8323 §5.3.1), so an
/// 80000-byte file must come block-wise (Block2, RFC 7959) as aiocoap and libcoap servers do
/// (coapws once answered 5.00 "response of 80009 bytes exceeds Max-Message-Size 2000"):
/// libcoap's `-v 7` log shows only 2.05 pieces with Block2, none above 2000 bytes.
#[test]
fn libcoap_client_with_small_max_message_size_gets_a_large_file_from_coapws() {
    let tmp = TempDir::new("lc-mms");
    let root = tmp.subdir("root");
    let big = printable(80_000, 31);
    std::fs::write(root.join("big.txt"), &big).unwrap();
    let (_files, l) = coapws_serve(tmp.path(), &[s(&root), "--tcp", "127.0.0.1:0"], 1);
    let a = libcoap_client(
        tmp.path(),
        &[
            "-X",
            "2000",
            "-v",
            "7",
            &format!("{}/big.txt", l.url("coap+tcp")),
        ],
    );
    a.assert_payload(
        &big,
        "libcoap -X 2000 GET of an 80000-byte file over coap+tcp",
    );
    let log = all_text(&a.output);
    let sizes: Vec<usize> = log
        .lines()
        .filter_map(|l| {
            l.split(" : received ")
                .nth(1)?
                .strip_suffix(" bytes")?
                .parse()
                .ok()
        })
        .collect();
    assert!(
        sizes.iter().all(|&n| n <= 2000),
        "libcoap received messages above its 2000 bytes: {sizes:?}"
    );
    let pieces: Vec<String> = libcoap_pdus(&log)
        .into_iter()
        .filter(|(sent, p)| !*sent && p.contains(" c:2.05 "))
        .map(|(_, p)| head(&p).to_owned())
        .collect();
    assert!(
        pieces.len() >= 40 && pieces.iter().all(|p| p.contains("Block2:")),
        "expected the 80000 bytes in Block2 pieces of at most 2000 bytes:\n{}",
        pieces.join("\n")
    );
}

/// A request carrying the critical OSCORE option (RFC 8613, number 9) to a server that does no
/// OSCORE must get 4.02 Bad Option (RFC 8613 §2, RFC 7252 §5.4.1), not be served as if it were
/// unprotected (coapws once did: it knows the number, for printing).
#[test]
fn coapws_refuses_oscore_it_does_not_process() {
    let tmp = TempDir::new("lc-oscore");
    let (_server, l) = coapws_serve(tmp.path(), &["--tcp", "127.0.0.1:0"], 1);
    let a = libcoap_client(
        tmp.path(),
        &["-O", "9,0x09", &format!("{}/hello", l.url("coap+tcp"))],
    );
    assert!(
        a.payload.is_empty() && libcoap_got_code(&a, "4.02"),
        "GET /hello with an OSCORE option: expected 4.02, got payload {:?}\n{}",
        String::from_utf8_lossy(&a.payload),
        describe(&a.output)
    );
    // The same request without the option is served.
    let a = libcoap_client(tmp.path(), &[&format!("{}/hello", l.url("coap+tcp"))]);
    a.assert_payload(HELLO.as_bytes(), "GET /hello without OSCORE");
}
