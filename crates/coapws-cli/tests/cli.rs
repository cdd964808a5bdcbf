//! The `coapws` binary, run as a user would: `serve` with its binding rules, and the request
//! commands with their output and exit codes. Each test has its own temporary directory.

mod common;

use common::*;
use std::time::Duration;

/// Bound on `coapws serve` announcing its listeners.
const SERVE_READY: Duration = Duration::from_secs(10);

/// `coapws serve ARGS`, ready once it announced `expect` listeners (its log in `tmp`).
fn serve(tmp: &TempDir, args: &[&str], expect: usize) -> (ChildGuard, Listeners) {
    coapws_serve_within(tmp.path(), args, expect, SERVE_READY)
}

#[test]
fn version_and_help() {
    let o = coapws(&["--version"]);
    assert!(o.status.success());
    assert_eq!(
        stdout(&o).trim(),
        format!("coapws {}", env!("CARGO_PKG_VERSION"))
    );
    let o = coapws(&["--help"]);
    assert!(stdout(&o).contains("serve"));
    assert!(stdout(&o).contains("get"));
}

#[test]
fn demo_site_requests_and_exit_codes() {
    let tmp = TempDir::new("demo");
    let (_server, s) = serve(&tmp, &["--ws", "127.0.0.1:0"], 1);
    let base = s.url("coap+ws");
    let o = coapws(&["get", &format!("{base}/hello")]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "Hello, CoAP over WebSockets!");

    let o = coapws(&["post", &format!("{base}/echo"), "--payload", "héllo"]);
    assert_eq!(stdout(&o), "héllo");

    let f = tmp.path().join("p.bin");
    std::fs::write(&f, b"from a file").unwrap();
    let o = coapws(&[
        "post",
        &format!("{base}/echo"),
        "--payload",
        &format!("@{}", f.display()),
        "--content-format",
        "json",
    ]);
    assert_eq!(stdout(&o), "from a file");

    // Exit status 3: the server answered 4.xx.
    let o = coapws(&["get", &format!("{base}/missing")]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stdout(&o).is_empty());
    assert!(stderr(&o).contains("4.04 Not Found"), "{}", stderr(&o));

    let o = coapws(&["delete", &format!("{base}/hello")]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).contains("4.05 Method Not Allowed"),
        "{}",
        stderr(&o)
    );

    // -v shows the exchange on stderr, payload still alone on stdout
    let o = coapws(&["-v", "get", &format!("{base}/hello")]);
    assert_eq!(stdout(&o), "Hello, CoAP over WebSockets!");
    assert!(
        stderr(&o).contains("send request") && stderr(&o).contains("2.05 Content"),
        "{}",
        stderr(&o)
    );

    // No-Response: nothing to print, success
    let o = coapws(&[
        "post",
        &format!("{base}/echo"),
        "--payload",
        "x",
        "--no-response",
        "2",
    ]);
    assert!(o.status.success());
    assert!(stdout(&o).is_empty());
}

#[test]
fn client_failures_are_clear() {
    let o = coapws(&["get", "http://example.invalid/"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unsupported scheme"), "{}", stderr(&o));
    // A port held by a socket that is bound but not listening: connecting is refused, and
    // nobody else can take the port meanwhile.
    let held = bound_not_listening();
    let dead = held.local_addr().unwrap();
    // Exit status 5: no connection.
    let o = coapws(&["get", &format!("coap+ws://{dead}/x"), "--timeout", "5"]);
    assert_eq!(o.status.code(), Some(5));
    assert!(
        stderr(&o).contains(&format!("cannot connect to {dead}")) && stderr(&o).contains("refused"),
        "{}",
        stderr(&o)
    );
    let tmp = TempDir::new("failures");
    let (_server, s) = serve(&tmp, &["--tcp", "127.0.0.1:0"], 1);
    // the WebSocket handshake against a plain CoAP-over-TCP port fails with a clear message
    let tcp = s.url("coap+tcp").replace("coap+tcp", "coap+ws");
    let o = coapws(&["get", &format!("{tcp}/hello"), "--timeout", "3"]);
    assert_eq!(o.status.code(), Some(5));
    let authority = tcp.trim_start_matches("coap+ws://");
    assert!(
        stderr(&o).contains(&format!("error: handshake with {authority} failed"))
            && stderr(&o).contains("HTTP"),
        "the WebSocket handshake failed on the HTTP answer: {}",
        stderr(&o)
    );
}

/// A TCP socket bound to a free loopback port without listening: connections are refused.
fn bound_not_listening() -> tokio::net::TcpSocket {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    s
}

#[test]
fn binding_flags() {
    // exact flags: only what is asked, port 0 included
    let tmp = TempDir::new("binding");
    let (_server, s) = serve(
        &tmp,
        &[
            "--ws",
            "127.0.0.1:0",
            "--ws",
            "[::1]:0",
            "--tcp",
            "127.0.0.1:0",
        ],
        3,
    );
    assert!(s.0[0].starts_with("coap+ws://127.0.0.1:"));
    assert!(s.0[1].starts_with("coap+ws://[::1]:"));
    assert!(s.0[2].starts_with("coap+tcp://127.0.0.1:"));
    assert!(
        !s.0.iter().any(|l| l.ends_with(":0")),
        "real ports: {:?}",
        s.0
    );
    let o = coapws(&["get", &format!("{}/hello", s.0[1])]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = coapws(&["get", &format!("{}/hello", s.0[2])]);
    assert!(o.status.success(), "{}", stderr(&o));

    // --bind as aiocoap: TCP on PORT, WebSocket on PORT+3000
    let (_bound, s, port) =
        coapws_serve_bind(tmp.path(), &[], &[(0, true), (3000, false)], 2, SERVE_READY);
    assert_eq!(
        s.url("coap+ws"),
        format!("coap+ws://127.0.0.1:{}", port + 3000)
    );
    assert_eq!(s.url("coap+tcp"), format!("coap+tcp://127.0.0.1:{port}"));
    let o = coapws(&["get", &format!("coap+ws://127.0.0.1:{}/time", port + 3000)]);
    assert!(o.status.success());
    assert!(stdout(&o).ends_with('Z'), "{}", stdout(&o));
}

#[test]
fn file_server() {
    let tmp = TempDir::new("files");
    let root = tmp.subdir("root");
    std::fs::write(root.join("a.txt"), "alpha").unwrap();
    std::fs::create_dir(root.join("sub")).unwrap();
    std::fs::write(root.join("sub/b.json"), "{}").unwrap();
    std::fs::write(root.join(".hidden"), "secret").unwrap();
    let r = root.display().to_string();
    let (server, s) = serve(&tmp, &[&r, "--ws", "127.0.0.1:0"], 1);
    let base = s.url("coap+ws");
    let o = coapws(&["get", &format!("{base}/a.txt")]);
    assert_eq!(stdout(&o), "alpha");
    let o = coapws(&["-v", "get", &format!("{base}/sub/b.json")]);
    assert_eq!(stdout(&o), "{}");
    assert!(stderr(&o).contains("Content-Format:50"), "{}", stderr(&o));
    let o = coapws(&["get", &format!("{base}/")]);
    assert_eq!(stdout(&o), "</a.txt>;ct=0,</sub/>");
    let o = coapws(&["get", &format!("{base}/sub/")]);
    assert_eq!(stdout(&o), "</sub/b.json>;ct=50");
    let o = coapws(&["get", &format!("{base}/.hidden")]);
    assert_fails_with(&o, "4.04", "GET /.hidden");
    assert!(
        !all_text(&o).contains("secret"),
        "the hidden file's content leaked\n{}",
        describe(&o)
    );
    let o = coapws(&["get", &format!("{base}/.well-known/core")]);
    assert!(o.status.success());
    // read-only: PUT refused
    let o = coapws(&["put", &format!("{base}/new.txt"), "--payload", "x"]);
    assert!(
        stderr(&o).contains("4.05 Method Not Allowed"),
        "{}",
        stderr(&o)
    );
    assert!(!root.join("new.txt").exists());
    drop(server);

    let (_server, s) = serve(&tmp, &[&r, "--write", "--ws", "127.0.0.1:0"], 1);
    let base = s.url("coap+ws");
    let o = coapws(&["put", &format!("{base}/new.txt"), "--payload", "fresh"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(root.join("new.txt")).unwrap(),
        "fresh"
    );
    let o = coapws(&[
        "put",
        &format!("{base}/new.txt"),
        "--payload",
        "again",
        "-v",
    ]);
    assert!(stderr(&o).contains("2.04 Changed"), "{}", stderr(&o));
    let o = coapws(&["delete", &format!("{base}/new.txt")]);
    assert!(o.status.success());
    assert!(!root.join("new.txt").exists());
    let o = coapws(&["delete", &format!("{base}/new.txt")]);
    assert!(stderr(&o).contains("4.04 Not Found"), "{}", stderr(&o));
    let o = coapws(&["put", &format!("{base}/nodir/x.txt"), "--payload", "x"]);
    assert!(stderr(&o).contains("4.04 Not Found"), "{}", stderr(&o));
}

#[test]
fn tls_listeners_and_client_trust() {
    let tmp = TempDir::new("tls");
    let (ca, crt, key) = write_pki(tmp.path());
    let (crt, key, ca) = (
        crt.display().to_string(),
        key.display().to_string(),
        ca.display().to_string(),
    );
    let (_server, s) = serve(
        &tmp,
        &[
            "--tls-server-certificate",
            &crt,
            "--tls-server-key",
            &key,
            "--wss",
            "127.0.0.1:0",
            "--tls",
            "127.0.0.1:0",
        ],
        2,
    );
    for scheme in ["coaps+ws", "coaps+tcp"] {
        let url = s.url_at(scheme, "localhost");
        let o = coapws(&["get", "--ca-cert", &ca, &format!("{url}/hello")]);
        assert!(o.status.success(), "{scheme}: {}", stderr(&o));
        assert_eq!(stdout(&o), "Hello, CoAP over WebSockets!");
        // without the CA: a clear certificate error, never a plain-text fallback
        let o = coapws(&["get", &format!("{url}/hello")]);
        assert_eq!(
            o.status.code(),
            Some(5),
            "a failed TLS handshake: no connection"
        );
        assert!(
            stderr(&o).contains("certificate"),
            "{scheme}: {}",
            stderr(&o)
        );
    }
    // --bind with TLS material: TCP P, TLS P+1, WS P+3000, WSS P+3001
    let (_bound, s, port) = coapws_serve_bind(
        tmp.path(),
        &["--tls-server-certificate", &crt, "--tls-server-key", &key],
        &[(0, true), (1, false), (3000, false), (3001, false)],
        5,
        SERVE_READY,
    );
    assert_eq!(
        s.url("coaps+tcp"),
        format!("coaps+tcp://127.0.0.1:{}", port + 1)
    );
    assert_eq!(
        s.url("coaps+ws"),
        format!("coaps+ws://127.0.0.1:{}", port + 3001)
    );
    // a missing key file is a clear error at start
    let o = coapws(&[
        "serve",
        "--tls-server-certificate",
        &crt,
        "--tls-server-key",
        "/nonexistent.key",
        "--tls",
        "127.0.0.1:0",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("private key"), "{}", stderr(&o));
}

#[test]
fn bench_reports_rates_and_counts_errors() {
    let tmp = TempDir::new("bench");
    let (_server, s) = serve(&tmp, &["--ws", "127.0.0.1:0", "--udp", "127.0.0.1:0"], 2);
    for scheme in ["coap+ws", "coap"] {
        let url = format!("{}/hello", s.url(scheme));
        let o = coapws(&["bench", &url, "-c", "2", "-n", "2", "-d", "0.5"]);
        assert!(o.status.success(), "{scheme}: {}", describe(&o));
        let out = stdout(&o);
        let requests: u64 = out
            .split(": ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no request count in {out}"));
        assert!(requests > 0, "{out}");
        assert!(
            out.contains("req/s, 0 errors") && out.contains("p99"),
            "{out}"
        );
    }
    // a resource that fails: errors are counted and the exit status says so
    let url = format!("{}/missing", s.url("coap+ws"));
    let o = coapws(&["bench", &url, "-d", "0.2"]);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let out = stdout(&o);
    // "1 connections x 1 in flight, 0.2 s: 0 requests, 0 req/s, 651 errors"
    let first_line = out.lines().next().unwrap_or_default();
    let count = |what: &str| -> u64 {
        first_line
            .split([':', ','])
            .find_map(|part| part.trim().strip_suffix(what))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no{what} count in {out:?}"))
    };
    let (requests, errors) = (count(" requests"), count(" errors"));
    assert!(
        requests == 0 && errors > 0,
        "every request to /missing is an error, none a success: {out}"
    );
}

/// `serve` whose stdout reader is gone before it announces its listeners (so writing the
/// "listening on" lines fails with EPIPE) keeps serving. Its log on stderr says where it
/// listens; the second listener's line comes after the first announcement was attempted.
/// A GET there is answered, and on SIGTERM it shuts down cleanly (exit status 0; a panic on
/// the broken pipe would be 101, even if the dying process still answered).
#[test]
fn a_closed_stdout_is_not_a_crash() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    use std::sync::mpsc;
    let mut cmd = Command::new(coapws_bin());
    cmd.args(["serve", "--ws", "127.0.0.1:0", "--ws", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut guard = ChildGuard::spawn(&mut cmd, "coapws serve (stdout closed)", None);
    drop(guard.child.stdout.take());
    let stderr = guard.child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    // listener.rs logs `listening bound=ADDR scheme=coap+ws` at info, for each listener.
    let deadline = std::time::Instant::now() + SERVE_READY;
    let mut seen = Vec::new();
    let mut bound = Vec::new();
    while bound.len() < 2 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("no second listening line on stderr ({e}): {seen:?}"));
        if line.contains("listening") && line.contains("scheme=coap+ws") {
            bound.push(
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix("bound="))
                    .unwrap_or_else(|| panic!("no bound= in {line:?}"))
                    .to_owned(),
            );
        }
        seen.push(line);
    }
    let o = coapws(&["get", &format!("coap+ws://{}/hello", bound[1])]);
    assert_ok_payload(
        &o,
        HELLO.as_bytes(),
        "GET /hello from serve with stdout closed",
    );
    let pid = guard.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success(), "kill -TERM {pid}");
    let deadline = std::time::Instant::now() + SERVE_READY;
    let status = loop {
        if let Some(s) = guard.exited() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "serve did not stop on SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let rest: Vec<String> = rx.try_iter().collect();
    assert_eq!(
        status.code(),
        Some(0),
        "serve with stdout closed ended {status:?}\n{}\n{}",
        seen.join("\n"),
        rest.join("\n")
    );
}

/// FETCH, PATCH and iPATCH with payload, Content-Format and `--accept`, as libcoap's example
/// server receives them (its `-v 7` PDU log). It allows none of them on `/example_data`
/// (4.05), which the CLI reports with exit status 1.
#[test]
fn fetch_patch_ipatch_and_accept_reach_the_peer() {
    let tmp = TempDir::new("methods");
    let (server, p) = libcoap_server(tmp.path(), "coap-server-notls", &["-v", "7"]);
    let uri = format!("coap://127.0.0.1:{p}/example_data");
    let cases: [(&str, &[&str], &str); 3] = [
        (
            "fetch",
            &["--payload", "q-fetch", "--accept", "text/plain"],
            "t:CON c:FETCH",
        ),
        (
            "patch",
            &["--payload", "q-patch", "--content-format", "json"],
            "t:CON c:PATCH",
        ),
        (
            "ipatch",
            &[
                "--payload",
                "q-ipatch",
                "--content-format",
                "json",
                "--accept",
                "json",
            ],
            "t:CON c:iPATCH",
        ),
    ];
    for (method, args, _) in &cases {
        let mut all = vec![uri.as_str()];
        all.extend(args.iter());
        let o = coapws_client(method, &all);
        assert_fails_with(&o, "4.05", &format!("coapws {method}"));
    }
    let expected = [
        "[ Uri-Path:example_data, Accept:text/plain ] :: 'q-fetch'",
        "[ Uri-Path:example_data, Content-Format:application/json ] :: 'q-patch'",
        "[ Uri-Path:example_data, Content-Format:application/json, Accept:application/json ] :: 'q-ipatch'",
    ];
    // libcoap logs a PDU as it handles it: all three were answered, so all are logged.
    let pdus = libcoap_pdus(&server.log_text());
    for ((method, _, head), tail) in cases.iter().zip(expected) {
        assert!(
            pdus.iter().any(|(sent, p)| !*sent
                && p.starts_with(&format!("v:1 {head} "))
                && p.ends_with(tail)),
            "libcoap did not receive the {method} as sent (expected {head} … {tail}):\n{}",
            pdus.iter()
                .map(|(s, p)| format!("{} {p}", if *s { "sent" } else { "recv" }))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
