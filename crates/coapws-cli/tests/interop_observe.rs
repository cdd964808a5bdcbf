//! Interop for Observe (RFC 7641) and large block-wise bodies (RFC 7959, BERT) against
//! aiocoap 0.4.17 and libcoap 4.3.1, both directions:
//! - aiocoap (a few lines of Python, `peers/observe_client.py`) observes `coapws serve`'s
//!   `/time` over coap+ws, coap+tcp and coap, and gets three notifications;
//! - `coapws get --observe` follows an aiocoap server's observable resource
//!   (`peers/observable_server.py`) over the same three, and deregisters on Ctrl-C;
//! - libcoap's `coap-client -s` observes `/time` over coap and coap+tcp;
//! - 1 MiB GET and PUT between aiocoap and coapws, each way, over coap+ws and coap, with the
//!   bytes compared.
//!
//! The peers are installed by the test command; when one is missing these tests fail.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

/// `coapws serve ARGS --ws --tcp --udp` on free ports: the guard and the three base URLs.
fn serve_all(dir: &std::path::Path, args: &[&str]) -> (ChildGuard, Listeners) {
    let mut all = args.to_vec();
    all.extend([
        "--ws",
        "127.0.0.1:0",
        "--tcp",
        "127.0.0.1:0",
        "--udp",
        "127.0.0.1:0",
    ]);
    coapws_serve(dir, &all, 3)
}

fn timestamps(text: &str) -> usize {
    // /time answers YYYY-MM-DDTHH:MM:SSZ
    text.as_bytes()
        .windows(20)
        .filter(|w| w[4] == b'-' && w[7] == b'-' && w[10] == b'T' && w[13] == b':' && w[19] == b'Z')
        .count()
}

#[test]
fn aiocoap_observes_coapws_time_over_ws_tcp_and_udp() {
    let tmp = TempDir::new("obs-aio-client");
    let (_server, l) = serve_all(tmp.path(), &[]);
    for scheme in ["coap+ws", "coap+tcp", "coap"] {
        let uri = format!("{}/time", l.url(scheme));
        let mut cmd = python("observe_client.py");
        cmd.args([uri.as_str(), "3"]);
        let o = run(cmd, COMMAND_TIMEOUT);
        assert_eq!(o.status.code(), Some(0), "{scheme}\n{}", describe(&o));
        let lines: Vec<String> = stdout(&o).lines().map(str::to_owned).collect();
        assert_eq!(lines.len(), 3, "{scheme}: three lines\n{}", describe(&o));
        assert!(
            lines
                .iter()
                .all(|l| l.starts_with("n=") && timestamps(l) == 1),
            "{scheme}: {lines:?}"
        );
        // Notifications every second: the three are distinct times.
        let mut unique = lines.clone();
        unique.dedup();
        assert_eq!(unique.len(), 3, "{scheme}: {lines:?}");
    }
}

#[test]
fn libcoap_observes_coapws_time_over_udp_and_tcp() {
    let tmp = TempDir::new("obs-libcoap");
    let (_server, l) = serve_all(tmp.path(), &[]);
    for scheme in ["coap", "coap+tcp"] {
        let uri = format!("{}/time", l.url(scheme));
        let mut cmd = Command::new(libcoap("coap-client-notls"));
        cmd.args(["-s", "4", "-B", "8", uri.as_str()]);
        let o = run(cmd, COMMAND_TIMEOUT);
        assert_eq!(o.status.code(), Some(0), "{scheme}\n{}", describe(&o));
        let n = timestamps(&stdout(&o));
        assert!(n >= 3, "{scheme}: {n} notifications\n{}", describe(&o));
    }
}

#[test]
fn coapws_observes_an_aiocoap_resource_over_ws_tcp_and_udp() {
    let tmp = TempDir::new("obs-aio-server");
    let script = script("observable_server.py");
    let (_server, p) = start_port_server(
        "aiocoap-observable",
        tmp.path(),
        &[(0, true), (3000, false)],
        &[Ready::Tcp(3000), Ready::CoapPing(0)],
        |p| {
            let mut cmd = Command::new(aiocoap("python"));
            cmd.arg(&script).arg(p.to_string());
            cmd
        },
    );
    for uri in [
        format!("coap+ws://127.0.0.1:{}/counter", p + 3000),
        format!("coap+tcp://127.0.0.1:{p}/counter"),
        format!("coap://127.0.0.1:{p}/counter"),
    ] {
        let (lines, log) = coapws_observe(&uri, 3);
        let counts: Vec<u32> = lines
            .iter()
            .map(|l| {
                l.strip_prefix("count=")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("{uri}: line {l:?}"))
            })
            .collect();
        assert!(counts.windows(2).all(|w| w[1] > w[0]), "{uri}: {counts:?}");
        // Ctrl-C sent a deregistration: a GET under the observation's own token.
        assert_eq!(
            log.matches("send request (same token)").count(),
            1,
            "{uri}: one deregistration\n{log}"
        );
    }
}

#[test]
fn coapws_get_observe_follows_its_own_time_and_deregisters_on_ctrl_c() {
    let tmp = TempDir::new("obs-self");
    let (_server, l) = serve_all(tmp.path(), &[]);
    for scheme in ["coap+ws", "coap+tcp", "coap"] {
        let uri = format!("{}/time", l.url(scheme));
        let (lines, _) = coapws_observe(&uri, 3);
        assert!(
            lines.iter().all(|l| timestamps(l) == 1),
            "{scheme}: {lines:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 1 MiB both ways, both directions
// ---------------------------------------------------------------------------------------------

const MIB: usize = 1 << 20;

#[test]
fn aiocoap_client_gets_and_puts_1_mib_with_coapws_over_ws_and_udp() {
    let tmp = TempDir::new("mib-aio-client");
    let root = tmp.subdir("root");
    let body = printable(MIB, 11);
    std::fs::write(root.join("big.txt"), &body).unwrap();
    let upload = tmp.path().join("upload.txt");
    std::fs::write(&upload, &body).unwrap();
    let (_server, l) = serve_all(tmp.path(), &[s(&root), "--write"]);
    for scheme in ["coap+ws", "coap"] {
        let base = l.url(scheme);
        let mut cmd = Command::new(aiocoap("aiocoap-client"));
        cmd.arg(format!("{base}/big.txt"));
        let o = run(cmd, Duration::from_secs(120));
        assert_ok_payload(&o, &body, &format!("{scheme}: aiocoap GET 1 MiB"));

        let name = format!("up-{}.txt", scheme.replace('+', "-"));
        let mut cmd = Command::new(aiocoap("aiocoap-client"));
        cmd.args(["-m", "PUT", "--payload"])
            .arg(format!("@{}", s(&upload)))
            .arg(format!("{base}/{name}"));
        let o = run(cmd, Duration::from_secs(120));
        assert_eq!(
            o.status.code(),
            Some(0),
            "{scheme}: aiocoap PUT\n{}",
            describe(&o)
        );
        let stored = std::fs::read(root.join(&name)).unwrap();
        assert!(
            stored == body,
            "{scheme}: stored {} bytes, differing",
            stored.len()
        );
    }
}

#[test]
fn coapws_gets_and_puts_1_mib_with_aiocoap_over_ws_and_udp() {
    let tmp = TempDir::new("mib-aio-server");
    let root = tmp.subdir("root");
    let body = printable(MIB, 13);
    std::fs::write(root.join("big.txt"), &body).unwrap();
    let upload = tmp.path().join("upload.txt");
    std::fs::write(&upload, &body).unwrap();
    let (_server, p) = aiocoap_fileserver(tmp.path(), &root, false, &["--write"]);
    for base in [
        format!("coap+ws://127.0.0.1:{}", p + 3000),
        format!("coap://127.0.0.1:{p}"),
    ] {
        let o = coapws(&["get", &format!("{base}/big.txt"), "--timeout", "60"]);
        assert!(
            o.status.success() && o.stdout == body,
            "{base}: coapws GET 1 MiB\n{}",
            describe(&o)
        );
        let name = if base.starts_with("coap+ws") {
            "up-ws.txt"
        } else {
            "up-udp.txt"
        };
        let o = coapws(&[
            "put",
            &format!("{base}/{name}"),
            "--payload",
            &format!("@{}", s(&upload)),
            "--timeout",
            "60",
        ]);
        assert!(
            o.status.success(),
            "{base}: coapws PUT 1 MiB\n{}",
            describe(&o)
        );
        let stored = std::fs::read(root.join(name)).unwrap();
        assert!(
            stored == body,
            "{base}: stored {} bytes, differing",
            stored.len()
        );
    }
}
