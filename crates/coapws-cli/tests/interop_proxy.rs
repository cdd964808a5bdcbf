//! Interop of the proxy (RFC 7252 §5.7) with aiocoap 0.4.17 and libcoap 4.3.1:
//! - aiocoap-client `--proxy coap+ws://…` through `coapws proxy` to libcoap's `coap-server`
//!   over UDP and over TCP (GET, and a block-wise PUT read back);
//! - aiocoap (a few lines of Python, `peers/observe_client.py`) observes libcoap's `/time`
//!   through `coapws proxy`;
//! - `coapws get --proxy` through aiocoap-proxy to `coapws serve`;
//! - `coapws serve --proxy` says at start that it reaches loopback targets only, and refuses
//!   others with 5.05.
//!
//! The peers are installed by the test command; when one is missing these tests fail.

mod common;

use common::*;
use std::process::Command;

#[test]
fn aiocoap_client_reaches_libcoap_over_udp_and_tcp_through_coapws_proxy() {
    let tmp = TempDir::new("proxy-aio-lc");
    let (_device, p) = libcoap_server(tmp.path(), "coap-server-notls", &[]);
    let (_proxy, l) = coapws_proxy(tmp.path(), &["--ws", "127.0.0.1:0"], 1);
    let proxy = l.url("coap+ws");
    for scheme in ["coap", "coap+tcp"] {
        let target = format!("{scheme}://127.0.0.1:{p}");
        let o = aiocoap_client(&["--proxy", &proxy, &format!("{target}/")]);
        assert_ok_starting(
            &o,
            LIBCOAP_DESCRIPTION,
            &format!("{scheme}: GET / via the proxy"),
        );
        // Larger than a UDP block: the proxy uploads it to libcoap block-wise.
        let data = printable(20_000, 7);
        let file = tmp.path().join(format!("put-{}.txt", scheme.len()));
        std::fs::write(&file, &data).unwrap();
        let payload = format!("@{}", file.display());
        let o = aiocoap_client(&[
            "-m",
            "PUT",
            "--payload",
            &payload,
            "--proxy",
            &proxy,
            &format!("{target}/example_data"),
        ]);
        assert!(
            o.status.success(),
            "{scheme}: PUT via the proxy\n{}",
            describe(&o)
        );
        let o = aiocoap_client(&["--proxy", &proxy, &format!("{target}/example_data")]);
        assert!(o.status.success(), "{scheme}: GET back\n{}", describe(&o));
        assert!(
            o.stdout.starts_with(&data),
            "{scheme}: the 20000 bytes came back through the proxy\n{}",
            describe(&o)
        );
    }
}

#[test]
fn aiocoap_observes_libcoap_time_through_coapws_proxy() {
    let tmp = TempDir::new("proxy-aio-obs");
    let (_device, p) = libcoap_server(tmp.path(), "coap-server-notls", &[]);
    let (_proxy, l) = coapws_proxy(tmp.path(), &["--ws", "127.0.0.1:0"], 1);
    for scheme in ["coap", "coap+tcp"] {
        let mut cmd = python("observe_client.py");
        cmd.args([
            &format!("{scheme}://127.0.0.1:{p}/time"),
            "3",
            &l.url("coap+ws"),
        ]);
        let o = run(cmd, COMMAND_TIMEOUT);
        assert_eq!(o.status.code(), Some(0), "{scheme}\n{}", describe(&o));
        let lines: Vec<String> = stdout(&o).lines().map(str::to_owned).collect();
        assert_eq!(lines.len(), 3, "{scheme}\n{}", describe(&o));
        // libcoap's clock: "n=Mon DD HH:MM:SS", a new second each time.
        assert!(
            lines.iter().all(|l| l.starts_with("n=") && l.len() == 17),
            "{lines:?}"
        );
        let mut unique = lines.clone();
        unique.dedup();
        assert_eq!(unique.len(), 3, "{scheme}: {lines:?}");
    }
}

#[test]
fn coapws_get_through_aiocoap_proxy() {
    let tmp = TempDir::new("proxy-cw-aio");
    let (_server, l) = coapws_serve(
        tmp.path(),
        &["--udp", "127.0.0.1:0", "--tcp", "127.0.0.1:0"],
        2,
    );
    let bin = aiocoap("aiocoap-proxy");
    let (_proxy, p) = start_port_server(
        "aiocoap-proxy",
        tmp.path(),
        &[(0, true), (3000, false)],
        &[Ready::Tcp(3000), Ready::CoapPing(0)],
        |p| {
            let mut cmd = Command::new(&bin);
            cmd.args(["--forward", "--bind", &format!("127.0.0.1:{p}")]);
            cmd
        },
    );
    for proxy in [
        format!("coap+ws://127.0.0.1:{}", p + 3000),
        format!("coap+tcp://127.0.0.1:{p}"),
    ] {
        for scheme in ["coap", "coap+tcp"] {
            let target = format!("{}/hello", l.url(scheme));
            let o = coapws_client("get", &["--proxy", &proxy, &target]);
            assert_ok_payload(&o, HELLO.as_bytes(), &format!("{target} via {proxy}"));
        }
    }
}

#[test]
fn serve_proxy_reaches_loopback_only_without_allow_and_says_so() {
    let tmp = TempDir::new("proxy-allow");
    let (server, l) = coapws_serve(
        tmp.path(),
        &["--proxy", "--ws", "127.0.0.1:0", "--udp", "127.0.0.1:0"],
        2,
    );
    let proxy = l.url("coap+ws");
    // Its own demo site, through itself.
    let o = coapws_client(
        "get",
        &["--proxy", &proxy, &format!("{}/hello", l.url("coap"))],
    );
    assert_ok_payload(&o, HELLO.as_bytes(), "loopback target");
    let o = coapws_client("get", &["--proxy", &proxy, "coap://192.0.2.1/hello"]);
    assert_eq!(
        o.status.code(),
        Some(4),
        "5.xx exit status\n{}",
        describe(&o)
    );
    assert!(stderr(&o).contains("5.05"), "{}", describe(&o));
    let log = server.log_text();
    assert!(log.contains("loopback targets only"), "{log}");
    assert!(log.contains("not allowed"), "the refusal is logged\n{log}");
}

#[test]
fn coapws_proxy_reaches_tls_targets_it_trusts_and_reverse_proxies_by_path_and_host() {
    let tmp = TempDir::new("proxy-tls");
    let (ca, crt, key) = write_pki(tmp.path());
    let (_origin, o) = coapws_serve(
        tmp.path(),
        &[
            "--tls-server-certificate",
            s(&crt),
            "--tls-server-key",
            s(&key),
            "--tls",
            "127.0.0.1:0",
            "--udp",
            "127.0.0.1:0",
        ],
        2,
    );
    let tls = o.url_at("coaps+tcp", "localhost");
    let udp = o.url("coap");
    let (_proxy, l) = coapws_proxy(
        tmp.path(),
        &[
            "--proxy-ca-cert",
            s(&ca),
            "--reverse",
            &format!("/origin={udp}/"),
            "--reverse-host",
            &format!("origin.example={tls}"),
            "--ws",
            "127.0.0.1:0",
        ],
        1,
    );
    let proxy = l.url("coap+ws");
    let got = coapws_client("get", &["--proxy", &proxy, &format!("{tls}/hello")]);
    assert_ok_payload(
        &got,
        HELLO.as_bytes(),
        "coaps+tcp target with --proxy-ca-cert",
    );
    let got = coapws_client("get", &[&format!("{proxy}/origin/hello")]);
    assert_ok_payload(&got, HELLO.as_bytes(), "--reverse by path");
    let got = coapws_client(
        "get",
        &[&format!("{proxy}/hello"), "--option", "3=origin.example"],
    );
    assert_ok_payload(&got, HELLO.as_bytes(), "--reverse-host by Uri-Host");
    // The proxy has no site of its own.
    let got = coapws_client("get", &[&format!("{proxy}/hello")]);
    assert_eq!(got.status.code(), Some(3), "{}", describe(&got));
}
