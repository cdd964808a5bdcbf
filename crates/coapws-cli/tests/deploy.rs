//! The deployment pieces of `deploy/`, used as a user would: the systemd units pass
//! `systemd-analyze verify`, `coapws serve` runs on sockets it inherits (socket activation
//! with `systemd-socket-activate`, the names the units use), nginx with `deploy/`'s site config
//! fronts two `coapws serve` instances for aiocoap-client and `coapws get` (observe included),
//! and `--allow-origin` widens the browser origin policy.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn deploy(name: &str) -> String {
    let p = workspace_root().join("deploy").join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A Debian program the test needs; panics (never skips) when it is missing.
fn program(path: &str, package: &str) -> &'static str {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: the test command installs Debian's {package} (scripts/install-peers.sh)"
    );
    Box::leak(path.to_owned().into_boxed_str())
}

/// One HTTP/1.1 GET; the status line and the body.
fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut s = loop {
        match TcpStream::connect(addr) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(30));
            }
            Err(e) => panic!("connect {addr}: {e}"),
        }
    };
    s.set_read_timeout(Some(COMMAND_TIMEOUT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.lines().next().unwrap_or_default().to_owned();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn the_systemd_units_verify() {
    let tmp = TempDir::new("units");
    let analyze = program("/usr/bin/systemd-analyze", "systemd");
    for name in ["coapws.service", "coapws.socket", "coapws-coap.socket"] {
        let text = deploy(name).replace("/usr/local/bin/coapws", coapws_bin());
        std::fs::write(tmp.path().join(name), text).unwrap();
    }
    let mut cmd = Command::new(analyze);
    cmd.current_dir(tmp.path()).args([
        "verify",
        "./coapws.service",
        "./coapws.socket",
        "./coapws-coap.socket",
    ]);
    let o = run(cmd, COMMAND_TIMEOUT);
    assert!(o.status.success(), "{}", describe(&o));
    // Unknown keys are only warned about: there must be no complaint at all.
    assert!(all_text(&o).trim().is_empty(), "{}", describe(&o));
    // What the units promise: hardened, and socket names coapws understands.
    let service = deploy("coapws.service");
    for key in [
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "Sockets=coapws.socket coapws-coap.socket",
    ] {
        assert!(service.contains(key), "coapws.service lacks {key}");
    }
    assert!(deploy("coapws.socket").contains("FileDescriptorName=ws"));
    assert!(deploy("coapws-coap.socket").contains("FileDescriptorName=tcp"));
}

/// The recipe for several instances: the instance template and the NATS unit verify, and
/// the HAProxy config is valid (the cluster tests run that config in front of three
/// instances).
#[test]
fn the_cluster_units_and_haproxy_config_verify() {
    let tmp = TempDir::new("cluster-units");
    let analyze = program("/usr/bin/systemd-analyze", "systemd");
    let nats = workspace_root().join("target/peers/venv/bin/nats-server");
    assert!(
        nats.exists(),
        "{} (scripts/install-peers.sh)",
        nats.display()
    );
    let template = deploy("coapws-cluster@.service").replace("/usr/local/bin/coapws", coapws_bin());
    std::fs::write(tmp.path().join("coapws-cluster@.service"), template).unwrap();
    let unit = deploy("nats-server.service").replace("/usr/local/bin/nats-server", s(&nats));
    std::fs::write(tmp.path().join("nats-server.service"), unit).unwrap();
    let mut cmd = Command::new(analyze);
    cmd.current_dir(tmp.path()).args([
        "verify",
        "./coapws-cluster@01.service",
        "./nats-server.service",
    ]);
    let o = run(cmd, COMMAND_TIMEOUT);
    assert!(o.status.success(), "{}", describe(&o));
    assert!(all_text(&o).trim().is_empty(), "{}", describe(&o));
    let service = deploy("coapws-cluster@.service");
    for key in [
        "--cluster ${COAPWS_NATS}",
        "--cluster-instance node%i",
        "--ws 127.0.0.1:87%i",
        "DynamicUser=yes",
    ] {
        assert!(service.contains(key), "coapws-cluster@.service lacks {key}");
    }
    assert!(deploy("nats-server.service").contains("-js -sd /var/lib/nats"));
    let mut cmd = Command::new(program("/usr/sbin/haproxy", "haproxy"));
    cmd.arg("-c")
        .arg("-f")
        .arg(workspace_root().join("deploy/haproxy-coapws.cfg"));
    let o = run(cmd, COMMAND_TIMEOUT);
    assert!(o.status.success(), "{}", describe(&o));
    assert!(
        stdout(&o).contains("Configuration file is valid"),
        "{}",
        describe(&o)
    );
}

/// `systemd-socket-activate ARGS coapws serve` on a free port for each `(flag, name)`; the
/// guard and the ports.
fn activated(dir: &Path, sockets: &[(bool, &str)]) -> (ChildGuard, Vec<u16>) {
    let activate = program("/usr/bin/systemd-socket-activate", "systemd");
    for _ in 0..3 {
        let ports: Vec<u16> = sockets
            .iter()
            .map(|(udp, _)| free_port_set(&[(0, *udp)]))
            .collect();
        let mut cmd = Command::new(activate);
        for ((udp, _), p) in sockets.iter().zip(&ports) {
            if *udp {
                cmd.arg("--datagram");
            }
            cmd.arg(format!("--listen=127.0.0.1:{p}"));
        }
        let names: Vec<&str> = sockets.iter().map(|(_, n)| *n).collect();
        cmd.arg(format!("--fdname={}", names.join(":")));
        cmd.arg(coapws_bin()).arg("serve");
        let log = dir.join(format!("activate-{}.log", ports[0]));
        let f = std::fs::File::create(&log).unwrap();
        cmd.stdout(f.try_clone().unwrap()).stderr(f);
        let mut guard = ChildGuard::spawn(&mut cmd, "systemd-socket-activate", Some(log));
        std::thread::sleep(Duration::from_millis(200));
        if guard.exited().is_none() {
            return (guard, ports);
        }
    }
    panic!("systemd-socket-activate did not start three times");
}

#[test]
fn coapws_serves_http_and_coap_on_inherited_sockets() {
    let tmp = TempDir::new("activate");
    // An unnamed-kind stream socket ("ws") serves the console and CoAP over WebSockets; "tcp"
    // serves CoAP over TCP. Nothing else is opened: no default listener on 8683 or 5683.
    let (guard, ports) = activated(tmp.path(), &[(false, "ws"), (false, "tcp")]);
    let ws: SocketAddr = format!("127.0.0.1:{}", ports[0]).parse().unwrap();
    let (status, body) = http_get(ws, "/");
    assert!(
        status.starts_with("HTTP/1.1 200"),
        "{status}\n{}",
        guard.log_text()
    );
    assert!(
        body.to_ascii_lowercase().contains("<html"),
        "the console: {body}"
    );
    let o = coapws_client("get", &[&format!("coap+ws://127.0.0.1:{}/hello", ports[0])]);
    assert_ok_payload(
        &o,
        HELLO.as_bytes(),
        "GET over the inherited WebSocket port",
    );
    let o = coapws_client(
        "get",
        &[&format!("coap+tcp://127.0.0.1:{}/hello", ports[1])],
    );
    assert_ok_payload(&o, HELLO.as_bytes(), "GET over the inherited TCP port");
    let log = guard.log_text();
    assert_eq!(
        log.matches("listening on ").count(),
        2,
        "only the inherited ones\n{log}"
    );
    assert!(
        log.contains(&format!("listening on coap+ws://127.0.0.1:{}", ports[0])),
        "{log}"
    );
    assert!(
        log.contains(&format!("listening on coap+tcp://127.0.0.1:{}", ports[1])),
        "{log}"
    );
    drop(guard);

    // A datagram socket serves CoAP over UDP.
    let (guard, ports) = activated(tmp.path(), &[(true, "udp")]);
    let o = coapws_client("get", &[&format!("coap://127.0.0.1:{}/hello", ports[0])]);
    assert_ok_payload(&o, HELLO.as_bytes(), "GET over the inherited UDP socket");
    drop(guard);
}

/// nginx.conf around `deploy/nginx-coapws.conf`, its upstream pointed at `backends` and its
/// listener at `port`; nginx runs in `dir` as an ordinary process.
fn nginx(dir: &Path, backends: &[u16]) -> (ChildGuard, u16) {
    let bin = program("/usr/sbin/nginx", "nginx");
    let site = deploy("nginx-coapws.conf");
    let servers: String = backends
        .iter()
        .map(|p| format!("server 127.0.0.1:{p};\n    "))
        .collect();
    assert!(
        site.contains("server 127.0.0.1:8683;"),
        "the upstream line of the config"
    );
    assert!(site.contains("listen 80;"), "the listen line of the config");
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("tmp")).unwrap();
    start_port_server("nginx", dir, &[(0, false)], &[Ready::Tcp(0)], |p| {
        let site = site
            .replace("server 127.0.0.1:8683;", servers.trim_end())
            .replace("listen 80;", &format!("listen 127.0.0.1:{p};"));
        let d = prefix.display();
        let conf = format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/tmp/body;\n  \
             proxy_temp_path {d}/tmp/proxy;\n  fastcgi_temp_path {d}/tmp/fastcgi;\n  \
             uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n{site}\n}}\n"
        );
        let path = prefix.join(format!("nginx-{p}.conf"));
        std::fs::write(&path, conf).unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("-p").arg(&prefix).arg("-c").arg(&path);
        cmd
    })
}

#[test]
fn nginx_fronts_two_coapws_instances() {
    let tmp = TempDir::new("nginx");
    let a = tmp.subdir("a");
    let b = tmp.subdir("b");
    let (ga, la) = coapws_serve(&a, &["--ws", "127.0.0.1:0"], 1);
    let (gb, lb) = coapws_serve(&b, &["--ws", "127.0.0.1:0"], 1);
    let port = |l: &Listeners| -> u16 {
        l.url("coap+ws")
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (_nginx, n) = nginx(tmp.path(), &[port(&la), port(&lb)]);
    let front = format!("coap+ws://127.0.0.1:{n}");

    // Each connection goes to one instance in turn: four of them reach both.
    for i in 0..2 {
        let o = aiocoap_client(&[&format!("{front}/hello")]);
        assert_ok_payload(
            &o,
            HELLO.as_bytes(),
            &format!("aiocoap-client through nginx, {i}"),
        );
        let o = coapws_client("get", &[&format!("{front}/hello")]);
        assert_ok_payload(
            &o,
            HELLO.as_bytes(),
            &format!("coapws get through nginx, {i}"),
        );
    }
    for (g, name) in [(&ga, "a"), (&gb, "b")] {
        let log = g.log_text();
        assert!(
            log.contains("connection up"),
            "instance {name} was never reached\n{log}"
        );
    }

    // Observations stay open through the proxy.
    let mut cmd = python("observe_client.py");
    cmd.args([format!("{front}/time"), "3".to_owned()]);
    let o = run(cmd, COMMAND_TIMEOUT);
    assert_eq!(
        o.status.code(),
        Some(0),
        "aiocoap observes through nginx\n{}",
        describe(&o)
    );
    assert_eq!(stdout(&o).lines().count(), 3, "{}", describe(&o));
    let (lines, _) = coapws_observe(&format!("{front}/time"), 3);
    assert_eq!(lines.len(), 3);

    // The console comes through too, and the Host header reaches coapws with its port: a page
    // of that origin may connect.
    let front_addr: SocketAddr = format!("127.0.0.1:{n}").parse().unwrap();
    let (status, _) = http_get(front_addr, "/");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(
        upgrade_status(front_addr, Some(&format!("http://127.0.0.1:{n}"))),
        "101"
    );
    assert_eq!(
        upgrade_status(front_addr, Some("https://evil.example")),
        "403"
    );
}

/// The status code a CoAP WebSocket handshake with `origin` gets from `addr`.
fn upgrade_status(addr: SocketAddr, origin: Option<&str>) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(COMMAND_TIMEOUT)).unwrap();
    let origin = origin
        .map(|o| format!("Origin: {o}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET /.well-known/coap HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: coap\r\n{origin}\r\n"
    )
    .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    String::from_utf8_lossy(&head[9..12]).into_owned()
}

#[test]
fn allow_origin_widens_the_browser_origin_policy() {
    let tmp = TempDir::new("origin");
    let (_g, l) = coapws_serve(
        tmp.path(),
        &[
            "--ws",
            "127.0.0.1:0",
            "--allow-origin",
            "https://app.example",
        ],
        1,
    );
    let addr: SocketAddr = l
        .url("coap+ws")
        .strip_prefix("coap+ws://")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        upgrade_status(addr, None),
        "101",
        "no Origin: not a browser"
    );
    assert_eq!(
        upgrade_status(addr, Some(&format!("http://{addr}"))),
        "101",
        "same origin"
    );
    assert_eq!(
        upgrade_status(addr, Some("https://app.example")),
        "101",
        "allowed"
    );
    assert_eq!(
        upgrade_status(addr, Some("https://evil.example")),
        "403",
        "foreign"
    );
}

#[test]
fn site_serves_a_folder_instead_of_the_console() {
    let tmp = TempDir::new("site");
    let dir = tmp.subdir("www");
    std::fs::write(dir.join("index.html"), "<html>my device</html>").unwrap();
    std::fs::write(dir.join("app.js"), "export {}").unwrap();
    let (_g, l) = coapws_serve(tmp.path(), &["--ws", "127.0.0.1:0", "--site", s(&dir)], 1);
    let addr: SocketAddr = l
        .url("coap+ws")
        .strip_prefix("coap+ws://")
        .unwrap()
        .parse()
        .unwrap();
    let (status, body) = http_get(addr, "/");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(body, "<html>my device</html>");
    let (status, body) = http_get(addr, "/app.js");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(body, "export {}");
    // The console is not there any more; CoAP is.
    let (status, _) = http_get(addr, "/console.js");
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    let o = coapws_client("get", &[&format!("{}/hello", l.url("coap+ws"))]);
    assert_ok_payload(&o, HELLO.as_bytes(), "CoAP beside the site");
}
