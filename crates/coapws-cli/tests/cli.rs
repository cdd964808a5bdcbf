//! The `coapws` binary, run as a user would: `serve` with its binding rules, and the request
//! commands with their output and exit codes. Each test has its own temporary directory.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_coapws");

/// A running `coapws serve`, killed on drop.
struct Server {
    child: Child,
    listeners: Vec<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `coapws serve ARGS` and reads `expect` listener lines.
    fn start(args: &[&str], expect: usize) -> Server {
        let mut child = Command::new(BIN)
            .arg("serve")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("coapws runs");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut listeners = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while listeners.len() < expect && Instant::now() < deadline {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            if let Some(l) = line.trim().strip_prefix("listening on ") {
                listeners.push(l.to_owned());
            }
        }
        assert_eq!(listeners.len(), expect, "listener lines: {listeners:?}");
        // Keep the pipe drained so the server never blocks on stdout.
        std::thread::spawn(move || for _ in out.lines() {});
        Server { child, listeners }
    }
    fn url(&self, scheme: &str) -> &str {
        self.listeners
            .iter()
            .find(|l| l.starts_with(&format!("{scheme}://")))
            .expect("listener of that scheme")
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("coapws runs")
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("coapws-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn version_and_help() {
    let o = run(&["--version"]);
    assert!(o.status.success());
    assert_eq!(
        stdout(&o).trim(),
        format!("coapws {}", env!("CARGO_PKG_VERSION"))
    );
    let o = run(&["--help"]);
    assert!(stdout(&o).contains("serve"));
    assert!(stdout(&o).contains("get"));
}

#[test]
fn demo_site_requests_and_exit_codes() {
    let s = Server::start(&["--ws", "127.0.0.1:0"], 1);
    let base = s.url("coap+ws");
    let o = run(&["get", &format!("{base}/hello")]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "Hello, CoAP over WebSockets!");

    let o = run(&["post", &format!("{base}/echo"), "--payload", "héllo"]);
    assert_eq!(stdout(&o), "héllo");

    let dir = tempdir("payload");
    let f = dir.join("p.bin");
    std::fs::write(&f, b"from a file").unwrap();
    let o = run(&[
        "post",
        &format!("{base}/echo"),
        "--payload",
        &format!("@{}", f.display()),
        "--content-format",
        "json",
    ]);
    assert_eq!(stdout(&o), "from a file");

    let o = run(&["get", &format!("{base}/missing")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).is_empty());
    assert!(stderr(&o).contains("4.04 Not Found"), "{}", stderr(&o));

    let o = run(&["delete", &format!("{base}/hello")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("4.05"), "{}", stderr(&o));

    // -v shows the exchange on stderr, payload still alone on stdout
    let o = run(&["-v", "get", &format!("{base}/hello")]);
    assert_eq!(stdout(&o), "Hello, CoAP over WebSockets!");
    assert!(
        stderr(&o).contains("send request") && stderr(&o).contains("2.05 Content"),
        "{}",
        stderr(&o)
    );

    // No-Response: nothing to print, success
    let o = run(&[
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
    let o = run(&["get", "http://example.invalid/"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unsupported scheme"), "{}", stderr(&o));
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let o = run(&["get", &format!("coap+ws://{free}/x"), "--timeout", "5"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("cannot connect"), "{}", stderr(&o));
    let s = Server::start(&["--tcp", "127.0.0.1:0"], 1);
    // the WebSocket handshake against a plain CoAP-over-TCP port fails with a clear message
    let tcp = s.url("coap+tcp").replace("coap+tcp", "coap+ws");
    let o = run(&["get", &format!("{tcp}/hello"), "--timeout", "3"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("error:"), "{}", stderr(&o));
}

#[test]
fn binding_flags() {
    // exact flags: only what is asked, port 0 included
    let s = Server::start(
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
    assert!(s.listeners[0].starts_with("coap+ws://127.0.0.1:"));
    assert!(s.listeners[1].starts_with("coap+ws://[::1]:"));
    assert!(s.listeners[2].starts_with("coap+tcp://127.0.0.1:"));
    assert!(
        !s.listeners.iter().any(|l| l.ends_with(":0")),
        "real ports: {:?}",
        s.listeners
    );
    let o = run(&["get", &format!("{}/hello", s.listeners[1])]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&["get", &format!("{}/hello", s.listeners[2])]);
    assert!(o.status.success(), "{}", stderr(&o));

    // --bind as aiocoap: TCP on PORT, WebSocket on PORT+3000
    let port = loop {
        let p = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if p < 62000 && std::net::TcpListener::bind(("127.0.0.1", p + 3000)).is_ok() {
            break p;
        }
    };
    let s = Server::start(&["--bind", &format!("127.0.0.1:{port}")], 2);
    assert_eq!(
        s.url("coap+ws"),
        format!("coap+ws://127.0.0.1:{}", port + 3000)
    );
    assert_eq!(s.url("coap+tcp"), format!("coap+tcp://127.0.0.1:{port}"));
    let o = run(&["get", &format!("coap+ws://127.0.0.1:{}/time", port + 3000)]);
    assert!(o.status.success());
    assert!(stdout(&o).ends_with('Z'), "{}", stdout(&o));
}

#[test]
fn file_server() {
    let root = tempdir("files");
    std::fs::write(root.join("a.txt"), "alpha").unwrap();
    std::fs::create_dir(root.join("sub")).unwrap();
    std::fs::write(root.join("sub/b.json"), "{}").unwrap();
    std::fs::write(root.join(".hidden"), "secret").unwrap();
    let r = root.display().to_string();
    let s = Server::start(&[&r, "--ws", "127.0.0.1:0"], 1);
    let base = s.url("coap+ws").to_owned();
    let o = run(&["get", &format!("{base}/a.txt")]);
    assert_eq!(stdout(&o), "alpha");
    let o = run(&["-v", "get", &format!("{base}/sub/b.json")]);
    assert_eq!(stdout(&o), "{}");
    assert!(
        stderr(&o).contains("Content-Format(12), Some(50)"),
        "{}",
        stderr(&o)
    );
    let o = run(&["get", &format!("{base}/")]);
    assert_eq!(stdout(&o), "</a.txt>;ct=0,</sub/>");
    let o = run(&["get", &format!("{base}/sub/")]);
    assert_eq!(stdout(&o), "</sub/b.json>;ct=50");
    let o = run(&["get", &format!("{base}/.hidden")]);
    assert_eq!(o.status.code(), Some(1));
    let o = run(&["get", &format!("{base}/.well-known/core")]);
    assert!(o.status.success());
    // read-only: PUT refused
    let o = run(&["put", &format!("{base}/new.txt"), "--payload", "x"]);
    assert!(stderr(&o).contains("4.05"), "{}", stderr(&o));
    assert!(!root.join("new.txt").exists());
    drop(s);

    let s = Server::start(&[&r, "--write", "--ws", "127.0.0.1:0"], 1);
    let base = s.url("coap+ws").to_owned();
    let o = run(&["put", &format!("{base}/new.txt"), "--payload", "fresh"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(root.join("new.txt")).unwrap(),
        "fresh"
    );
    let o = run(&[
        "put",
        &format!("{base}/new.txt"),
        "--payload",
        "again",
        "-v",
    ]);
    assert!(stderr(&o).contains("2.04 Changed"), "{}", stderr(&o));
    let o = run(&["delete", &format!("{base}/new.txt")]);
    assert!(o.status.success());
    assert!(!root.join("new.txt").exists());
    let o = run(&["delete", &format!("{base}/new.txt")]);
    assert!(stderr(&o).contains("4.04"));
    let o = run(&["put", &format!("{base}/nodir/x.txt"), "--payload", "x"]);
    assert!(stderr(&o).contains("4.04"), "{}", stderr(&o));
}

/// Writes a CA and a server certificate for localhost/127.0.0.1 as PEM files into `dir`.
fn write_pki(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "coapws cli test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    let (ca_p, crt_p, key_p) = (
        dir.join("ca.pem"),
        dir.join("server.crt"),
        dir.join("server.key"),
    );
    std::fs::write(&ca_p, ca_cert.pem()).unwrap();
    std::fs::write(&crt_p, leaf_cert.pem()).unwrap();
    std::fs::write(&key_p, leaf_key.serialize_pem()).unwrap();
    (ca_p, crt_p, key_p)
}

#[test]
fn tls_listeners_and_client_trust() {
    let dir = tempdir("tls");
    let (ca, crt, key) = write_pki(&dir);
    let (crt, key, ca) = (
        crt.display().to_string(),
        key.display().to_string(),
        ca.display().to_string(),
    );
    let s = Server::start(
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
        let url = s.url(scheme).replace("127.0.0.1", "localhost");
        let o = run(&["get", "--ca-cert", &ca, &format!("{url}/hello")]);
        assert!(o.status.success(), "{scheme}: {}", stderr(&o));
        assert_eq!(stdout(&o), "Hello, CoAP over WebSockets!");
        // without the CA: a clear certificate error, never a plain-text fallback
        let o = run(&["get", &format!("{url}/hello")]);
        assert_eq!(o.status.code(), Some(1));
        assert!(
            stderr(&o).contains("certificate"),
            "{scheme}: {}",
            stderr(&o)
        );
    }
    // --bind with TLS material: TCP P, TLS P+1, WS P+3000, WSS P+3001
    let port = loop {
        let p = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if p < 62000
            && [1, 3000, 3001]
                .iter()
                .all(|o| std::net::TcpListener::bind(("127.0.0.1", p + o)).is_ok())
        {
            break p;
        }
    };
    let s = Server::start(
        &[
            "--tls-server-certificate",
            &crt,
            "--tls-server-key",
            &key,
            "--bind",
            &format!("127.0.0.1:{port}"),
        ],
        5,
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
    let o = run(&[
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
