//! Interop against aiocoap 0.4.17 over CoAP over WebSockets (RFC 8323), both directions and
//! with role reversal. aiocoap lives in `target/peers/venv`, installed by
//! `scripts/install-peers.sh`; when it is missing these tests fail (they never skip).
//!
//! Every process a test starts is killed when the test ends (a Drop guard), every wait is
//! bounded, ports are picked free on loopback, and each test has its own temporary directory,
//! so the tests run in parallel.

use coapws::proto::{Code, Message};
use coapws::{Endpoint, IncomingRequest, Resource, Site};
use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Bound on any single peer command (aiocoap-client, a Python script, `coapws get`).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on a server becoming ready.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A program of the aiocoap venv; panics (never skips) if it is not installed.
fn peer(name: &str) -> PathBuf {
    let p = workspace_root().join("target/peers/venv/bin").join(name);
    assert!(
        p.exists(),
        "aiocoap peer {} is missing: run scripts/install-peers.sh (it installs aiocoap 0.4.17 \
         into target/peers/venv) before these tests",
        p.display()
    );
    p
}

/// A Python script under tests/peers.
fn script(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(name);
    assert!(p.exists(), "test script {} is missing", p.display());
    p
}

fn coapws_bin() -> &'static str {
    env!("CARGO_BIN_EXE_coapws")
}

/// A temporary directory of its own, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "coapws-interop-{tag}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (and reaped) on drop.
struct ChildGuard {
    child: Child,
    name: String,
    log: Option<PathBuf>,
}

impl ChildGuard {
    /// What the process wrote to its log so far (for failure messages).
    fn log_text(&self) -> String {
        self.log
            .as_ref()
            .and_then(|l| std::fs::read_to_string(l).ok())
            .unwrap_or_default()
    }
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("--- log of {} ---\n{}", self.name, self.log_text());
        }
    }
}

/// Runs `cmd` to completion with piped output, killing it after `timeout` (and then failing).
fn run(mut cmd: Command, timeout: Duration) -> Output {
    let what = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let mut guard = ChildGuard {
        child,
        name: what.clone(),
        log: None,
    };
    let mut out = guard.child.stdout.take().expect("stdout");
    let mut err = guard.child.stderr.take().expect("stderr");
    let out_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = guard.exited() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = guard.child.kill();
            let _ = guard.child.wait();
            let stdout = out_reader.join().unwrap_or_default();
            let stderr = err_reader.join().unwrap_or_default();
            panic!(
                "{what} did not finish within {timeout:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&stdout),
                String::from_utf8_lossy(&stderr)
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

fn describe(o: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Starts a process whose stdout announces readiness; returns the guard and the first stdout
/// line for which `ready` gives `Some`. Stderr goes to a log file in `dir`.
fn start_announcing<T: Send + 'static>(
    mut cmd: Command,
    name: &str,
    dir: &Path,
    ready: impl Fn(&str) -> Option<T> + Send + 'static,
) -> (ChildGuard, T) {
    let log = dir.join(format!("{name}.log"));
    let log_file = std::fs::File::create(&log).expect("create log file");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file));
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    let mut guard = ChildGuard {
        child,
        name: name.to_owned(),
        log: Some(log),
    };
    let stdout = guard.child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    // Keeps draining stdout after the announcement so the child never blocks on a full pipe.
    thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !sent && let Some(v) = ready(&line) {
                let _ = tx.send(v);
                sent = true;
            }
        }
    });
    match rx.recv_timeout(READY_TIMEOUT) {
        Ok(v) => (guard, v),
        Err(_) => {
            let status = guard.exited();
            panic!(
                "{name} did not announce readiness within {READY_TIMEOUT:?} (exit: {status:?})\n{}",
                guard.log_text()
            )
        }
    }
}

/// `coapws serve --ws 127.0.0.1:0 EXTRA...`; returns the guard and the WebSocket port.
fn coapws_serve(dir: &Path, extra: &[&str]) -> (ChildGuard, u16) {
    let mut cmd = Command::new(coapws_bin());
    cmd.arg("serve").args(extra).args(["--ws", "127.0.0.1:0"]);
    start_announcing(cmd, "coapws-serve", dir, |line| {
        line.strip_prefix("listening on coap+ws://127.0.0.1:")
            .and_then(|p| p.trim().parse::<u16>().ok())
    })
}

/// A port P such that TCP and UDP P and TCP P+3000 are free on 127.0.0.1 right now.
fn free_aiocoap_port() -> u16 {
    for _ in 0..200 {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let p = l.local_addr().expect("local addr").port();
        if p > 65535 - 3000 {
            continue;
        }
        if UdpSocket::bind((Ipv4Addr::LOCALHOST, p)).is_ok()
            && TcpListener::bind((Ipv4Addr::LOCALHOST, p + 3000)).is_ok()
        {
            return p;
        }
    }
    panic!("found no free port pair P, P+3000 on 127.0.0.1");
}

/// `aiocoap-fileserver --bind 127.0.0.1:P ROOT EXTRA...`, ready when its WebSocket port
/// (P+3000) accepts TCP connections. Returns the guard and the WebSocket port.
fn aiocoap_fileserver(dir: &Path, root: &Path, extra: &[&str]) -> (ChildGuard, u16) {
    let bin = peer("aiocoap-fileserver");
    let mut last_log = String::new();
    // A port found free can be taken by someone else before the server binds it: retry.
    for attempt in 0..3 {
        let p = free_aiocoap_port();
        let ws_port = p + 3000;
        let log = dir.join(format!("aiocoap-fileserver-{attempt}.log"));
        let log_file = std::fs::File::create(&log).expect("create log file");
        let log_err = log_file.try_clone().expect("clone log file");
        let child = Command::new(&bin)
            .arg("--bind")
            .arg(format!("127.0.0.1:{p}"))
            .args(extra)
            .arg(root)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file))
            .stderr(Stdio::from(log_err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut guard = ChildGuard {
            child,
            name: "aiocoap-fileserver".to_owned(),
            log: Some(log),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, ws_port));
        while Instant::now() < deadline && guard.exited().is_none() {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return (guard, ws_port);
            }
            thread::sleep(Duration::from_millis(50));
        }
        last_log = guard.log_text();
        if guard.exited().is_none() {
            panic!(
                "aiocoap-fileserver not listening on {addr} after {READY_TIMEOUT:?}\n{last_log}"
            );
        }
    }
    panic!("aiocoap-fileserver exited at start three times\n{last_log}");
}

/// aiocoap-client with `args` (the URI last).
fn aiocoap_client(args: &[&str]) -> Output {
    let mut cmd = Command::new(peer("aiocoap-client"));
    cmd.args(args);
    run(cmd, COMMAND_TIMEOUT)
}

/// `coapws METHOD args...`
fn coapws_client(method: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(coapws_bin());
    cmd.arg(method).args(args).args(["--timeout", "10"]);
    run(cmd, COMMAND_TIMEOUT)
}

fn python(script_name: &str) -> Command {
    let mut cmd = Command::new(peer("python"));
    cmd.arg(script(script_name));
    cmd
}

/// `n` bytes of printable ASCII, deterministic but not repetitive.
fn printable(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            b'!' + (x % 94) as u8
        })
        .collect()
}

fn assert_ok_payload(o: &Output, expected: &[u8], what: &str) {
    assert!(
        o.status.success(),
        "{what}: expected success\n{}",
        describe(o)
    );
    assert!(
        o.stdout == expected,
        "{what}: payload differs (got {} bytes, expected {})\n{}",
        o.stdout.len(),
        expected.len(),
        if o.stdout.len() + expected.len() < 4000 {
            describe(o)
        } else {
            String::from_utf8_lossy(&o.stderr).into_owned()
        }
    );
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
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("hello.txt"), "Hello from a coapws file server\n").unwrap();
    let big = printable(100 * 1024, 7);
    std::fs::write(root.join("big.txt"), &big).unwrap();
    let (_server, port) = coapws_serve(tmp.path(), &[root.to_str().unwrap()]);
    let base = format!("coap+ws://127.0.0.1:{port}");

    let o = aiocoap_client(&[&format!("{base}/hello.txt")]);
    assert_ok_payload(&o, b"Hello from a coapws file server\n", "GET /hello.txt");

    let o = aiocoap_client(&["-v", &format!("{base}/.well-known/core")]);
    assert!(
        o.status.success(),
        "GET /.well-known/core\n{}",
        describe(&o)
    );
    let links = String::from_utf8_lossy(&o.stdout);
    assert!(
        links.contains("</>") && links.contains("ct=40"),
        "GET /.well-known/core: expected link-format with </>;ct=40\n{}",
        describe(&o)
    );
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
        all.contains("4.04"),
        "GET missing: no 4.04\n{}",
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
        all.contains("4.05"),
        "PUT read-only: no 4.05\n{}",
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
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let (_server, port) = coapws_serve(tmp.path(), &[root.to_str().unwrap(), "--write"]);
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
    let (_server, port) = coapws_serve(tmp.path(), &[]);
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
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("small.txt"), "small file from aiocoap\n").unwrap();
    let thousand = printable(1000, 11);
    std::fs::write(root.join("thousand.txt"), &thousand).unwrap();
    let large = printable(50 * 1024 + 7, 13);
    std::fs::write(root.join("large.txt"), &large).unwrap();
    let (_server, ws_port) = aiocoap_fileserver(tmp.path(), &root, &["--write"]);
    let base = format!("coap+ws://127.0.0.1:{ws_port}");

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
    assert!(
        o.status.success(),
        "GET /.well-known/core\n{}",
        describe(&o)
    );
    let links = String::from_utf8_lossy(&o.stdout);
    assert!(
        links.contains("</>") && links.contains("ct=40"),
        "GET /.well-known/core: expected aiocoap's link </>;ct=40\n{}",
        describe(&o)
    );

    let o = coapws_client("get", &[&format!("{base}/no-such-file.txt")]);
    assert!(
        !o.status.success(),
        "GET missing succeeded\n{}",
        describe(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("4.04"),
        "GET missing: no 4.04 on stderr\n{}",
        describe(&o)
    );

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
    let (_server, port) = coapws_serve(tmp.path(), &[]);
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
