//! The client flags that match the rest of aiocoap-client's and libcoap coap-client's (README,
//! "Coming from aiocoap-client or libcoap's coap-client"), through the built binary against
//! servers the tests start: `--token`, `--hop-limit`, `--no-uri-host` and `--local-addr` as
//! libcoap's example server receives them (its `-v 7` log), `--hop-limit` running out at a
//! `coapws proxy`, `--repeat`, `--observe-exec`, and `coapws shell`.

mod common;

use common::*;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A port free on 127.0.0.1 for TCP and UDP right now (a client's source port).
fn free_port() -> u16 {
    free_port_set(&[(0, true)])
}

/// The GET requests libcoap's server logged whose token is `token` (hex, as it logs it:
/// `{cafe}`). The server sends no GET, so these are received ones; not [`libcoap_pdus`],
/// which needs a "received N bytes" line before each, and over TCP one read can bring the CSM
/// and the request together under one such line.
fn received_with_token(log: &str, token: &str) -> Vec<String> {
    log.lines()
        .filter(|p| p.starts_with("v:1 t:CON c:GET ") && p.contains(&format!(" {{{token}}} ")))
        .map(str::to_owned)
        .collect()
}

/// Waits (bounded) until libcoap's log shows a PDU with `token` received, and returns them.
fn wait_received(server: &ChildGuard, token: &str) -> Vec<String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let got = received_with_token(&server.log_text(), token);
        if !got.is_empty() {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "libcoap received no request with token {token}:\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `--token`, `--hop-limit`, `--no-uri-host` and `--local-addr` as libcoap's example server
/// receives them, over UDP and TCP: the token and Hop-Limit in its PDU log, Uri-Host there
/// only without `--no-uri-host`, and the source port in its session lines.
#[test]
fn token_hop_limit_uri_host_and_local_addr_reach_libcoap() {
    let tmp = TempDir::new("libcoap-flags");
    let (server, p) = libcoap_server(tmp.path(), "coap-server-notls", &["-v", "7"]);

    // UDP, named by a name: Uri-Host goes, with our token and Hop-Limit, from our port.
    let local = free_port();
    let o = coapws_client(
        "get",
        &[
            &format!("coap://localhost:{p}/time"),
            "--token",
            "cafe0042",
            "--hop-limit",
            "5",
            "--local-addr",
            &format!("127.0.0.1:{local}"),
        ],
    );
    assert_libcoap_time(&o);
    let pdus = wait_received(&server, "cafe0042");
    assert!(
        pdus.iter()
            .any(|p| p.contains("[ Uri-Host:localhost, Uri-Path:time, Hop-Limit:5 ]")),
        "{pdus:?}"
    );
    let log = server.log_text();
    assert!(
        log.contains(&format!("<-> 127.0.0.1:{local} (if1) UDP : received")),
        "libcoap saw no request from port {local}:\n{log}"
    );

    // The same without Uri-Host.
    let o = coapws_client(
        "get",
        &[
            &format!("coap://localhost:{p}/time"),
            "--token",
            "0b0b",
            "--no-uri-host",
        ],
    );
    assert_libcoap_time(&o);
    let pdus = wait_received(&server, "0b0b");
    assert!(
        pdus.iter().all(|p| p.contains("[ Uri-Path:time ]")
            && !p.contains("Uri-Host")
            && !p.contains("Uri-Port")),
        "{pdus:?}"
    );

    // TCP from a port of our choosing.
    let local = free_port();
    let o = coapws_client(
        "get",
        &[
            &format!("coap+tcp://127.0.0.1:{p}/time"),
            "--token",
            "beef",
            "--local-addr",
            &format!("127.0.0.1:{local}"),
        ],
    );
    assert_libcoap_time(&o);
    let pdus = wait_received(&server, "beef");
    assert!(pdus.iter().any(|p| p.contains("c:GET")), "{pdus:?}");
    let log = server.log_text();
    assert!(
        log.contains(&format!("<-> 127.0.0.1:{local} TCP : session connected")),
        "libcoap saw no TCP session from port {local}:\n{log}"
    );

    // Bad values are usage errors.
    for bad in [
        &["--token", "xyz"][..],
        &["--token", "112233445566778899"],
        &["--hop-limit", "0"],
        &["--local-addr", "nowhere"],
    ] {
        let mut args = vec!["get", "coap://127.0.0.1:9/x"];
        args.extend(bad);
        let o = coapws(&args);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", describe(&o));
    }
}

/// `--hop-limit 1` runs out at the first proxy (5.08, exit status 4); 2 gets through.
#[test]
fn hop_limit_runs_out_at_a_proxy() {
    let tmp = TempDir::new("hop-limit");
    let (_server, target) = coapws_serve_one(tmp.path(), &[], "--ws", "coap+ws");
    let (_proxy, l) = coapws_proxy(tmp.path(), &["--ws", "127.0.0.1:0"], 1);
    let proxy = l.url("coap+ws");
    let hello = format!("{target}/hello");
    let o = coapws_client("get", &[&hello, "--proxy", &proxy, "--hop-limit", "1"]);
    assert_fails_with(&o, "5.08", "--hop-limit 1 through one proxy");
    let o = coapws_client("get", &[&hello, "--proxy", &proxy, "--hop-limit", "2"]);
    assert_ok_payload(&o, HELLO.as_bytes(), "--hop-limit 2 through one proxy");
}

/// `--repeat 3`: three answers, a second apart, over one connection (the server logs one
/// closing), and a token of our own is free again for each.
#[test]
fn repeat_sends_the_request_again_on_one_connection() {
    let tmp = TempDir::new("repeat");
    let (server, base) = coapws_serve_one(tmp.path(), &[], "--ws", "coap+ws");
    let started = Instant::now();
    let o = coapws_client(
        "get",
        &[&format!("{base}/hello"), "--repeat", "3", "--token", "01"],
    );
    assert_ok_payload(&o, HELLO.repeat(3).as_bytes(), "--repeat 3");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "three requests a second apart took {:?}",
        started.elapsed()
    );
    assert_eq!(closings(&server, 1), 1, "{}", server.log_text());
    let o = coapws(&["get", &format!("{base}/hello"), "--repeat", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
}

/// How many connections `coapws serve` logged as closed, once at least `expect` are (and a
/// moment more, so that one too many would show).
fn closings(server: &ChildGuard, expect: usize) -> usize {
    let count = || server.log_text().matches("connection closed").count();
    let deadline = Instant::now() + READY_TIMEOUT;
    while count() < expect {
        assert!(Instant::now() < deadline, "{}", server.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    count()
}

/// `--observe-exec CMD` runs CMD for each notification with its payload on stdin, and goes on
/// observing when CMD fails; nothing is printed itself. Ctrl-C ends it with status 0.
#[test]
fn observe_exec_runs_the_command_for_each_notification() {
    let tmp = TempDir::new("observe-exec");
    let (_server, base) = coapws_serve_one(tmp.path(), &[], "--ws", "coap+ws");
    let out = tmp.path().join("notifications.txt");
    let cmd = format!("cat >> '{}'; echo >> '{}'; exit 3", s(&out), s(&out));
    let mut child = Command::new(coapws_bin());
    child
        .args([
            "get",
            &format!("{base}/time"),
            "--observe",
            "--observe-exec",
        ])
        .arg(&cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut guard = ChildGuard::spawn(&mut child, "coapws get --observe-exec", None);
    let lines = || {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    while lines().len() < 3 {
        assert!(guard.exited().is_none(), "it ended after {:?}", lines());
        assert!(Instant::now() < deadline, "only {:?}", lines());
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = lines();
    // /time notifies every second with the time: lines that differ, each a clock.
    assert!(got[0] != got[2], "{got:?}");
    assert!(
        got.iter().all(|l| l.len() >= 8 && l.contains(':')),
        "{got:?}"
    );
    let pid = guard.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(s) = guard.exited() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit after Ctrl-C");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    let mut printed = String::new();
    std::io::Read::read_to_string(guard.child.stdout.as_mut().unwrap(), &mut printed).unwrap();
    assert_eq!(
        printed, "",
        "the payloads went to the command, not to stdout"
    );
    let o = coapws(&["get", &format!("{base}/time"), "--observe-exec", "cat"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "without --observe: {}",
        describe(&o)
    );
}

/// Runs `coapws shell` with `input` on its stdin; its output.
fn shell(input: &str) -> std::process::Output {
    let mut cmd = Command::new(coapws_bin());
    cmd.arg("shell")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = ChildGuard::spawn(&mut cmd, "coapws shell", None);
    let mut stdin = child.child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    while child.exited().is_none() {
        assert!(Instant::now() < deadline, "coapws shell did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut out = Vec::new();
    let mut err = Vec::new();
    std::io::Read::read_to_end(child.child.stdout.as_mut().unwrap(), &mut out).unwrap();
    std::io::Read::read_to_end(child.child.stderr.as_mut().unwrap(), &mut err).unwrap();
    std::process::Output {
        status: child.exited().unwrap(),
        stdout: out,
        stderr: err,
    }
}

/// `coapws shell` runs request lines with the request commands' flags over one connection
/// (the server logs one closing), prints the answers as the commands do, reports a bad line
/// and goes on, and ends at `quit` (no prompt when piped).
#[test]
fn shell_runs_request_lines_over_one_connection() {
    let tmp = TempDir::new("shell");
    let (server, base) = coapws_serve_one(tmp.path(), &[], "--ws", "coap+ws");
    let input = format!(
        "get {base}/hello\n\
         \n\
         # a comment\n\
         post {base}/echo --payload 'two words' --content-format text/plain\n\
         get {base}/hello --frobnicate\n\
         get {base}/nowhere\n\
         put {base}/notes --payload @-\n\
         get {base}/hello -i --accept text/plain\n\
         quit\n\
         get {base}/hello\n"
    );
    let o = shell(&input);
    assert_eq!(
        stdout(&o),
        format!("{HELLO}two words2.05 Content\nContent-Format(12): 0\n{HELLO}"),
        "{}",
        describe(&o)
    );
    let err = stderr(&o);
    assert!(err.contains("--frobnicate"), "{err}");
    assert!(err.contains("4.04"), "{err}");
    assert!(err.contains("stdin holds the shell's commands"), "{err}");
    assert!(!err.contains("coapws>"), "no prompt when piped: {err}");
    // The last line that ran was fine.
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert_eq!(closings(&server, 1), 1, "{}", server.log_text());
    // The end of input ends it too; a failing last line is its exit status.
    let o = shell(&format!("get {base}/nowhere\n"));
    assert_fails_with(&o, "4.04", "shell ending on a 4.04");
}

/// The help texts name the new flags where they apply, and `coapws --help` the shell.
#[test]
fn help_names_the_flags() {
    let help = stdout(&coapws(&["--help"]));
    assert!(help.contains("shell"), "{help}");
    let get = stdout(&coapws(&["get", "--help"]));
    for flag in ["--token", "--repeat", "--observe-exec"] {
        assert!(get.contains(flag), "get --help lacks {flag}");
    }
    for cmd in ["get", "bench", "discover"] {
        let help = stdout(&coapws(&[cmd, "--help"]));
        for flag in ["--hop-limit", "--no-uri-host", "--local-addr"] {
            assert!(help.contains(flag), "{cmd} --help lacks {flag}");
        }
    }
    // The shell's `help` is clap's, for the same commands.
    let o = shell("help get\n");
    assert!(o.status.success(), "{}", describe(&o));
    assert!(stdout(&o).contains("--observe-exec"), "{}", describe(&o));
}

/// `serve --keepalive SECS` pings a silent WebSocket client, and `get --keepalive` is taken
/// (a request through it still answers); `--keepalive 0` on a client is refused.
#[test]
fn keepalive_flags() {
    let tmp = TempDir::new("keepalive-flags");
    let (server, l) = coapws_serve(tmp.path(), &["--keepalive", "1", "--ws", "127.0.0.1:0"], 1);
    let base = l.url("coap+ws");
    let o = coapws_client("get", &["--keepalive", "5", &format!("{base}/hello")]);
    assert_ok_payload(&o, HELLO.as_bytes(), "get --keepalive");
    let o = coapws_client("get", &["--keepalive", "0", &format!("{base}/hello")]);
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    // A client that completes the WebSocket handshake, sends its CSM and then says nothing
    // more is pinged after a second and dropped after another.
    use std::io::Read;
    let addr = base.trim_start_matches("coap+ws://");
    let mut s = silent_ws_peer(addr);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = std::time::Instant::now();
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    // Read until the server closes: the Ping, the Abort, the close frame.
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buf[..n]);
        if all.windows(7).any(|w| w == b"No Pong") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&all);
    assert!(text.contains("No Pong"), "{text:?}");
    let took = started.elapsed();
    assert!(
        took > Duration::from_millis(1500) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let log = server.log_text();
    assert!(log.contains("No Pong"), "the ending is logged\n{log}");
}

/// One HTTP/1.1 GET of `path` on 127.0.0.1:`port`: the whole answer.
fn http_get(port: u16, path: &str) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The value of the sample `name{labels}` in a metrics text, if it is there.
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
}

/// `serve --metrics ADDR` serves Prometheus text at /metrics that counts what happened.
#[test]
fn serve_metrics_counts_connections_requests_and_codes() {
    let tmp = TempDir::new("metrics");
    let port = free_port_set(&[(0, false)]);
    let (_server, l) = coapws_serve(
        tmp.path(),
        &[
            "--metrics",
            &format!("127.0.0.1:{port}"),
            "--ws",
            "127.0.0.1:0",
            "--udp",
            "127.0.0.1:0",
        ],
        2,
    );
    for base in [l.url("coap+ws"), l.url("coap")] {
        let o = coapws_client("get", &[&format!("{base}/hello")]);
        assert_ok_payload(&o, HELLO.as_bytes(), "hello");
        let o = coapws_client("get", &[&format!("{base}/nothing-here")]);
        assert_eq!(o.status.code(), Some(3), "{}", describe(&o));
    }
    let answer = http_get(port, "/metrics");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("application/openmetrics-text"), "{answer}");
    let at_least = |what: &str, n: f64| {
        let v = sample(&answer, what).unwrap_or_else(|| panic!("no {what} in\n{answer}"));
        assert!(v >= n, "{what} = {v}, want at least {n}\n{answer}");
    };
    at_least(
        r#"coapws_connections_opened_total{transport="coap_ws"}"#,
        2.0,
    );
    at_least(
        r#"coapws_requests_received_total{transport="coap_ws"}"#,
        2.0,
    );
    at_least(r#"coapws_requests_received_total{transport="coap"}"#, 2.0);
    at_least(r#"coapws_responses_sent_total{code="2.05"}"#, 2.0);
    at_least(r#"coapws_responses_sent_total{code="4.04"}"#, 2.0);
    at_least(r#"coapws_received_bytes_total{transport="coap"}"#, 10.0);
    at_least(r#"coapws_sent_bytes_total{transport="coap_ws"}"#, 10.0);
    at_least(
        r#"coapws_connection_endings_total{kind="peer_released"}"#,
        2.0,
    );
    assert!(answer.contains("coapws_pending_requests "), "{answer}");
    assert!(answer.contains("coapws_observations "), "{answer}");
    assert!(http_get(port, "/other").starts_with("HTTP/1.1 404"));
}

/// A WebSocket peer of `addr` that upgrades, sends its CSM (a masked binary frame holding
/// 0x00 0xe1) and then says nothing more; its answers are left unread.
fn silent_ws_peer(addr: &str) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(
        b"GET /.well-known/coap HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
          Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: coap\r\n\r\n",
    )
    .unwrap();
    s.write_all(&[0x82, 0x82, 1, 2, 3, 4, 1, 0xe3]).unwrap();
    s
}

/// Sends `signal` to `guard`'s process.
fn signal(guard: &ChildGuard, signal: &str) {
    let pid = guard.child.id().to_string();
    let ok = Command::new("kill").args([signal, &pid]).status().unwrap();
    assert!(ok.success(), "kill {signal} {pid}");
}

/// Waits until `guard` exits (at most `limit`): its exit code and how long it took.
fn exits_within(guard: &mut ChildGuard, limit: Duration) -> (Option<i32>, Duration) {
    let start = Instant::now();
    loop {
        if let Some(s) = guard.exited() {
            return (s.code(), start.elapsed());
        }
        assert!(start.elapsed() < limit, "still running after {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGTERM: `serve` releases every connection (RFC 8323 Release), waits for them, and exits
/// 0; an observer through it learns its observation is over and exits too.
#[test]
fn sigterm_releases_connections_and_observers_end() {
    let tmp = TempDir::new("sigterm");
    let (mut server, l) = coapws_serve(tmp.path(), &["--ws", "127.0.0.1:0"], 1);
    let uri = format!("{}/time", l.url("coap+ws"));
    let mut cmd = Command::new(coapws_bin());
    cmd.args(["get", "--observe", &uri])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut observer = ChildGuard::spawn(&mut cmd, "coapws get --observe", None);
    let mut out = std::io::BufReader::new(observer.child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut out, &mut first).unwrap();
    assert!(!first.trim().is_empty(), "a first notification");
    signal(&server, "-TERM");
    let (code, took) = exits_within(&mut server, Duration::from_secs(10));
    assert_eq!(code, Some(0), "serve after SIGTERM\n{}", server.log_text());
    assert!(took < Duration::from_secs(7), "{took:?}");
    let (code, _) = exits_within(&mut observer, Duration::from_secs(10));
    assert_ne!(
        code,
        Some(0),
        "the observation ended with the server, not by Ctrl-C"
    );
    assert!(
        server.log_text().contains("shutting down"),
        "{}",
        server.log_text()
    );
}

/// A second signal while connections are being released exits at once (130), instead of
/// waiting for a peer that does not answer the Release.
#[test]
fn a_second_signal_exits_at_once() {
    let tmp = TempDir::new("second-signal");
    let (mut server, l) = coapws_serve(tmp.path(), &["--ws", "127.0.0.1:0"], 1);
    let addr = l.url("coap+ws").trim_start_matches("coap+ws://").to_owned();
    // A WebSocket peer that sends its CSM and then answers nothing (not even the Release).
    let s = silent_ws_peer(&addr);
    std::thread::sleep(Duration::from_millis(300));
    signal(&server, "-INT");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        server.exited().is_none(),
        "still waiting for the silent peer"
    );
    signal(&server, "-INT");
    let (code, took) = exits_within(&mut server, Duration::from_secs(3));
    assert_eq!(code, Some(130), "{}", server.log_text());
    assert!(took < Duration::from_secs(1), "{took:?}");
    drop(s);
}

/// The code of the CoAP-over-TCP message at the start of `frame` (RFC 8323 §3.2: the
/// length nibble 13, 14, 15 adds 1, 2, 4 bytes before the code).
fn tcp_code(frame: &[u8]) -> Option<u8> {
    let extra = match frame.first()? >> 4 {
        13 => 1,
        14 => 2,
        15 => 4,
        _ => 0,
    };
    frame.get(1 + extra).copied()
}

/// Reads from `s` until `done(bytes so far)` or the peer closes, at most `limit`.
fn read_until(
    s: &mut std::net::TcpStream,
    limit: Duration,
    done: impl Fn(&[u8]) -> bool,
) -> (Vec<u8>, Duration) {
    use std::io::Read;
    let start = Instant::now();
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    while !done(&all) && start.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    (all, start.elapsed())
}

/// The limit flags of `serve`, each seen from the wire: our CSM announces
/// `--max-message-size`; a peer without a CSM is aborted after `--csm-timeout`; a quiet
/// connection is released after `--idle-timeout`; beyond `--max-connections` a WebSocket
/// handshake gets 503; a request head above `--max-header-bytes` or with more than
/// `--max-headers` lines gets 431.
#[test]
fn serve_limit_flags_are_enforced_on_the_wire() {
    let tmp = TempDir::new("limits");
    let (_server, l) = coapws_serve(
        tmp.path(),
        &[
            "--tcp",
            "127.0.0.1:0",
            "--max-message-size",
            "300",
            "--csm-timeout",
            "1",
            "--idle-timeout",
            "1",
        ],
        1,
    );
    let tcp = l
        .url("coap+tcp")
        .trim_start_matches("coap+tcp://")
        .to_owned();
    // Our CSM: 7.01 with Max-Message-Size (option 2) 300 = 0x012c and Block-Wise-Transfer.
    let mut silent = std::net::TcpStream::connect(&tcp).unwrap();
    let (got, _) = read_until(&mut silent, Duration::from_secs(3), |b| b.len() >= 6);
    assert_eq!(
        &got[..6],
        &[0x40, 0xe1, 0x22, 0x01, 0x2c, 0x20],
        "CSM {got:02x?}"
    );
    // No CSM from us: Abort (7.05) after about a second, then the close.
    let started = Instant::now();
    let (rest, _) = read_until(&mut silent, Duration::from_secs(5), |_| false);
    let took = started.elapsed();
    let all = [&got[6..], &rest[..]].concat();
    assert!(
        tcp_code(&all) == Some(0xe5),
        "an Abort right after the CSM: {all:02x?}"
    );
    assert!(
        took > Duration::from_millis(700) && took < Duration::from_secs(4),
        "aborted after {took:?}"
    );
    // A connection that sends its CSM and one request, then nothing: released (7.04) after
    // about a second of idleness.
    let mut quiet = std::net::TcpStream::connect(&tcp).unwrap();
    let get = [0x01, 0x01, 0x07, 0xb5, b'h', b'e', b'l', b'l', b'o'];
    quiet.write_all(&[0x00, 0xe1]).unwrap();
    quiet.write_all(&get).unwrap();
    let (seen, took) = read_until(&mut quiet, Duration::from_secs(5), |b| {
        b.windows(2).any(|w| w[1] == 0xe4)
    });
    assert!(
        seen.windows(2).any(|w| w[1] == 0xe4),
        "a Release: {seen:02x?}"
    );
    assert!(took > Duration::from_millis(700), "released after {took:?}");

    let (_ws, l) = coapws_serve(
        tmp.path(),
        &[
            "--ws",
            "127.0.0.1:0",
            "--max-connections",
            "1",
            "--max-header-bytes",
            "8192",
            "--max-headers",
            "20",
        ],
        1,
    );
    let ws = l.url("coap+ws").trim_start_matches("coap+ws://").to_owned();
    // Two at once: whichever the server takes first is upgraded, the other refused.
    let upgrade_only = || {
        let mut s = std::net::TcpStream::connect(&ws).unwrap();
        s.write_all(
            b"GET /.well-known/coap HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: coap\r\n\r\n",
        )
        .unwrap();
        s
    };
    let mut first = upgrade_only();
    let mut second = upgrade_only();
    let mut codes: Vec<String> = [&mut first, &mut second]
        .into_iter()
        .map(|s| {
            let (a, _) = read_until(s, Duration::from_secs(3), |b| b.len() >= 12);
            String::from_utf8_lossy(&a[..a.len().min(12)]).into_owned()
        })
        .collect();
    codes.sort();
    assert_eq!(
        codes,
        ["HTTP/1.1 101", "HTTP/1.1 503"],
        "one in, one refused"
    );
    drop((first, second));
    let head = |extra: &str| {
        format!(
            "GET /.well-known/coap HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: coap\r\n{extra}\r\n"
        )
    };
    let many: String = (0..30).map(|i| format!("X-{i}: {i}\r\n")).collect();
    let big = format!("X-Big: {}\r\n", "b".repeat(10_000));
    for (what, extra) in [("30 header lines", many), ("a 10 kB header", big)] {
        // The first connection's slot frees once its close is seen.
        let started = Instant::now();
        let answer = loop {
            let mut s = std::net::TcpStream::connect(&ws).unwrap();
            s.write_all(head(&extra).as_bytes()).unwrap();
            let (a, _) = read_until(&mut s, Duration::from_secs(3), |b| b.len() >= 12);
            if !a.starts_with(b"HTTP/1.1 503") || started.elapsed() > Duration::from_secs(5) {
                break a;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(
            answer.starts_with(b"HTTP/1.1 431"),
            "{what}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
}

/// `serve --udp-sockets 3`: one UDP address served by three sockets (its log says so), and
/// clients from many source ports, whichever socket the system gives them, are all answered.
#[test]
fn serve_udp_sockets_serves_one_address_from_several() {
    let tmp = TempDir::new("udp-sockets");
    let (server, l) = coapws_serve(
        tmp.path(),
        &["--udp", "127.0.0.1:0", "--udp-sockets", "3"],
        1,
    );
    let log = server.log_text();
    assert!(
        log.contains("listening on coap (UDP)") && log.contains("sockets=3"),
        "{log}"
    );
    for _ in 0..12 {
        let o = coapws_client("get", &[&format!("{}/hello", l.url("coap"))]);
        assert_ok_payload(&o, HELLO.as_bytes(), "hello from one of three sockets");
    }
    let o = coapws(&["serve", "--udp", "127.0.0.1:0", "--udp-sockets", "257"]);
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
}

/// The soft limit of open files of process `pid` (from /proc/PID/limits).
fn soft_open_files(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let v: Vec<&str> = line.split_whitespace().collect();
    (v[3].to_owned(), v[4].to_owned())
}

#[test]
fn serve_raises_its_descriptor_limit_and_holds_more_connections_than_the_soft_one() {
    // Started with a soft limit of 128 (the usual default is 1024, far below what a server
    // holds): serve raises it to the hard limit, so connection 201 is still accepted.
    let port = free_port();
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "ulimit -Sn 128 && exec \"$0\" \"$@\"",
        coapws_bin(),
        "serve",
        "--tcp",
        &format!("127.0.0.1:{port}"),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let server = ChildGuard::spawn(&mut cmd, "serve with a low soft limit", None);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut held = Vec::new();
    while held.is_empty() {
        assert!(Instant::now() < deadline, "serve did not listen");
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => held.push(s),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    let (soft, hard) = soft_open_files(server.child.id());
    assert_eq!(soft, hard, "the soft limit is raised to the hard one");
    while held.len() < 200 {
        held.push(std::net::TcpStream::connect(("127.0.0.1", port)).unwrap());
    }
    let o = coapws_client("get", &[&format!("coap+tcp://127.0.0.1:{port}/hello")]);
    assert_ok_payload(
        &o,
        HELLO.as_bytes(),
        "a request beside 200 held connections",
    );
}
