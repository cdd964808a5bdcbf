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

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Bound on any single peer command (aiocoap-client, coap-client, `coapws get`).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on a server becoming ready.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// What `coapws serve` without ROOT answers on `/hello`.
const HELLO: &str = "Hello, CoAP over WebSockets!";

// ---------------------------------------------------------------------------------------------
// Helpers (the process and port discipline of interop_aiocoap.rs)
// ---------------------------------------------------------------------------------------------

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A program of the aiocoap venv; panics (never skips) if it is not installed.
fn aiocoap(name: &str) -> PathBuf {
    let p = workspace_root().join("target/peers/venv/bin").join(name);
    assert!(
        p.exists(),
        "aiocoap peer {} is missing: run scripts/install-peers.sh libcoap3-bin (it installs \
         aiocoap 0.4.17 into target/peers/venv) before these tests",
        p.display()
    );
    p
}

/// A libcoap 4.3.1 program from Debian's libcoap3-bin; panics (never skips) if it is missing.
fn libcoap(name: &str) -> PathBuf {
    let p = Path::new("/usr/bin").join(name);
    assert!(
        p.exists(),
        "libcoap peer {} is missing: run scripts/install-peers.sh libcoap3-bin (it installs \
         Debian's libcoap3-bin, libcoap 4.3.1) before these tests",
        p.display()
    );
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
            "coapws-interop-tt-{tag}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
    fn path(&self) -> &Path {
        &self.0
    }
    /// A fresh subdirectory (a file server's root).
    fn subdir(&self, name: &str) -> PathBuf {
        let d = self.0.join(name);
        std::fs::create_dir_all(&d).expect("create subdir");
        d
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
    let show = |b: &[u8]| {
        if b.len() > 3000 {
            format!("<{} bytes>", b.len())
        } else {
            String::from_utf8_lossy(b).into_owned()
        }
    };
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        o.status,
        show(&o.stdout),
        show(&o.stderr)
    )
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// stdout and stderr together (libcoap logs to stdout, its code lines go to stderr).
fn all_text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
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
        describe(o)
    );
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

/// The listeners of a running `coapws serve`, as announced on its stdout.
struct Listeners(Vec<String>);

impl Listeners {
    /// The announced URL of `scheme` with `127.0.0.1` replaced by `host` (TLS needs a name
    /// in the certificate; ours has both `localhost` and `127.0.0.1`).
    fn url(&self, scheme: &str, host: &str) -> String {
        self.0
            .iter()
            .find(|l| l.starts_with(&format!("{scheme}://")))
            .unwrap_or_else(|| panic!("no {scheme} listener among {:?}", self.0))
            .replace("127.0.0.1", host)
    }
}

/// `coapws serve ARGS`, ready once it announced `expect` listeners (all with real ports).
fn coapws_serve(dir: &Path, args: &[&str], expect: usize) -> (ChildGuard, Listeners) {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!("coapws-serve-{}", N.fetch_add(1, Ordering::Relaxed));
    let log = dir.join(format!("{name}.log"));
    let log_file = std::fs::File::create(&log).expect("create log file");
    let child = Command::new(coapws_bin())
        .arg("serve")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start coapws serve: {e}"));
    let mut guard = ChildGuard {
        child,
        name,
        log: Some(log),
    };
    let stdout = guard.child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    // Keeps draining stdout after the announcements so the child never blocks on a full pipe.
    thread::spawn(move || {
        let mut seen = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(l) = line.trim().strip_prefix("listening on ") {
                seen.push(l.to_owned());
                if seen.len() == expect {
                    let _ = tx.send(std::mem::take(&mut seen));
                }
            }
        }
    });
    match rx.recv_timeout(READY_TIMEOUT) {
        Ok(l) => (guard, Listeners(l)),
        Err(_) => {
            let status = guard.exited();
            panic!(
                "coapws serve {args:?} did not announce {expect} listeners within \
                 {READY_TIMEOUT:?} (exit: {status:?})\n{}",
                guard.log_text()
            )
        }
    }
}

/// `coapws METHOD ARGS...` with a 10 s response timeout.
fn coapws_client(method: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(coapws_bin());
    cmd.arg(method).args(args).args(["--timeout", "10"]);
    run(cmd, COMMAND_TIMEOUT)
}

/// aiocoap-client with `args` (the URI last).
fn aiocoap_client(args: &[&str]) -> Output {
    let mut cmd = Command::new(aiocoap("aiocoap-client"));
    cmd.args(args);
    run(cmd, COMMAND_TIMEOUT)
}

/// Whether TCP `port` (and UDP `port` too if `udp`) can be bound on 127.0.0.1 right now.
fn port_free(port: u16, udp: bool) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
        && (!udp || UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok())
}

/// A port P such that, for every `(offset, udp)`, TCP P+offset (and UDP if `udp`) is free.
fn free_port_set(offsets: &[(u16, bool)]) -> u16 {
    let max = offsets.iter().map(|&(o, _)| o).max().unwrap_or(0);
    for _ in 0..200 {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let p = l.local_addr().expect("local addr").port();
        drop(l);
        if p > 65535 - max {
            continue;
        }
        if offsets.iter().all(|&(o, udp)| port_free(p + o, udp)) {
            return p;
        }
    }
    panic!("found no free port set {offsets:?} on 127.0.0.1");
}

/// Starts a server on a port set picked by `free_port_set(offsets)`: `make(P)` builds the
/// command; ready when TCP P+`ready_offset` accepts connections. Retries when the server exits
/// at start (a port found free can be taken by someone else before the server binds it).
fn start_port_server(
    name: &str,
    dir: &Path,
    offsets: &[(u16, bool)],
    ready_offset: u16,
    make: impl Fn(u16) -> Command,
) -> (ChildGuard, u16) {
    let mut last_log = String::new();
    for attempt in 0..3 {
        let p = free_port_set(offsets);
        let log = dir.join(format!("{name}-{attempt}.log"));
        let log_file = std::fs::File::create(&log).expect("create log file");
        let log_err = log_file.try_clone().expect("clone log file");
        let mut cmd = make(p);
        let what = format!("{cmd:?}");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file))
            .stderr(Stdio::from(log_err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let mut guard = ChildGuard {
            child,
            name: name.to_owned(),
            log: Some(log),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, p + ready_offset));
        while Instant::now() < deadline && guard.exited().is_none() {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return (guard, p);
            }
            thread::sleep(Duration::from_millis(30));
        }
        last_log = guard.log_text();
        if guard.exited().is_none() {
            panic!("{what} not listening on {addr} after {READY_TIMEOUT:?}\n{last_log}");
        }
    }
    panic!("{name} exited at start three times\n{last_log}");
}

/// `aiocoap-fileserver --bind 127.0.0.1:P EXTRA... ROOT` with aiocoap's default server
/// transports (0.4.17: tcpserver, tlsserver, ws, udp6 among them): `coap+tcp` on P, with TLS
/// material also `coaps+tcp` on P+1, `coap+ws` on P+3000 and `coaps+ws` on P+3001.
/// Returns the guard and P once the last of those listeners accepts connections.
fn aiocoap_fileserver(dir: &Path, root: &Path, tls: bool, extra: &[&str]) -> (ChildGuard, u16) {
    let bin = aiocoap("aiocoap-fileserver");
    let (offsets, ready): (&[(u16, bool)], u16) = if tls {
        (&[(0, true), (1, false), (3000, false), (3001, false)], 3001)
    } else {
        (&[(0, true), (3000, false)], 3000)
    };
    start_port_server("aiocoap-fileserver", dir, offsets, ready, |p| {
        let mut cmd = Command::new(&bin);
        cmd.arg("--bind")
            .arg(format!("127.0.0.1:{p}"))
            .args(extra)
            .arg(root);
        cmd
    })
}

/// A libcoap example server (`coap-server-notls|-gnutls|-openssl`) on 127.0.0.1:P (UDP and
/// TCP; the TLS builds also DTLS and TLS on P+1). Returns the guard and P.
fn libcoap_server(dir: &Path, bin: &str, extra: &[&str]) -> (ChildGuard, u16) {
    let bin = libcoap(bin);
    let tls = !extra.is_empty();
    let offsets: &[(u16, bool)] = if tls {
        &[(0, true), (1, true)]
    } else {
        &[(0, true)]
    };
    start_port_server("coap-server", dir, offsets, u16::from(tls), |p| {
        let mut cmd = Command::new(&bin);
        cmd.args(["-A", "127.0.0.1", "-p", &p.to_string()])
            .args(extra);
        cmd
    })
}

/// What libcoap's coap-client did: the payload it received (written with `-o FILE`, exact:
/// on stdout it appends a newline) and its output (codes other than 2.xx go to stderr, and it
/// exits 0 either way).
struct LibcoapAnswer {
    payload: Vec<u8>,
    output: Output,
}

/// `BIN -B 5 -o FILE ARGS...` (the URI last).
fn libcoap_client(bin: &str, dir: &Path, args: &[&str]) -> LibcoapAnswer {
    static N: AtomicU32 = AtomicU32::new(0);
    let out = dir.join(format!(
        "coap-client-{}.out",
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let mut cmd = Command::new(libcoap(bin));
    cmd.args(["-B", "5", "-o"]).arg(&out).args(args);
    let output = run(cmd, COMMAND_TIMEOUT);
    let payload = std::fs::read(&out).unwrap_or_default();
    LibcoapAnswer { payload, output }
}

impl LibcoapAnswer {
    fn assert_payload(&self, expected: &[u8], what: &str) {
        assert!(
            self.payload == expected,
            "{what}: libcoap received {} bytes, expected {}: {:?}\n{}",
            self.payload.len(),
            expected.len(),
            String::from_utf8_lossy(&self.payload[..self.payload.len().min(200)]),
            describe(&self.output)
        );
        assert!(
            self.output.status.success(),
            "{what}: coap-client failed\n{}",
            describe(&self.output)
        );
    }
}

/// Writes a CA and a server certificate for localhost/127.0.0.1 as PEM files into `dir`
/// (CA, certificate, PKCS#8 key).
fn write_pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "coapws interop test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
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

/// A second, unrelated CA (PEM) that signed nothing we serve.
fn write_other_ca(dir: &Path) -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "unrelated CA");
    let key = KeyPair::generate().unwrap();
    let cert = ca.self_signed(&key).unwrap();
    let p = dir.join("other-ca.pem");
    std::fs::write(&p, cert.pem()).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

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
    let base = l.url("coap+tcp", "127.0.0.1");

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
        format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o)).contains("4.04"),
        "GET /missing: no 4.04\n{}",
        describe(&o)
    );

    let root = tmp.subdir("root");
    let big = printable(100 * 1024, 21);
    std::fs::write(root.join("big.txt"), &big).unwrap();
    let (_files, l) = coapws_serve(tmp.path(), &[s(&root), "--tcp", "127.0.0.1:0"], 1);
    let o = aiocoap_client(&[&format!("{}/big.txt", l.url("coap+tcp", "127.0.0.1"))]);
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
    assert!(
        o.status.success(),
        "GET /.well-known/core\n{}",
        describe(&o)
    );
    let links = String::from_utf8_lossy(&o.stdout);
    assert!(
        links.contains("</>") && links.contains("ct=40"),
        "GET /.well-known/core: expected aiocoap's </>;ct=40\n{}",
        describe(&o)
    );

    let o = coapws_client("get", &[&format!("{base}/no-such-file")]);
    assert_eq!(o.status.code(), Some(1), "GET missing\n{}", describe(&o));
    assert!(stderr(&o).contains("4.04"), "GET missing\n{}", describe(&o));

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
    let wss = l.url("coaps+ws", "localhost");
    let tls = l.url("coaps+tcp", "localhost");
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
    assert_eq!(o.status.code(), Some(1), "GET missing\n{}", describe(&o));
    assert!(stderr(&o).contains("4.04"), "GET missing\n{}", describe(&o));

    let o = coapws_client("get", &[&format!("{wss}/file.txt")]);
    assert_eq!(
        o.status.code(),
        Some(1),
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
    let base = l.url("coap+tcp", "127.0.0.1");
    let client = "coap-client-notls";

    let a = libcoap_client(client, tmp.path(), &["-m", "get", &format!("{base}/hello")]);
    a.assert_payload(HELLO.as_bytes(), "libcoap GET coap+tcp /hello");

    let a = libcoap_client(
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

    let a = libcoap_client(client, tmp.path(), &[&format!("{base}/missing")]);
    assert!(
        a.payload.is_empty() && all_text(&a.output).contains("4.04"),
        "libcoap GET /missing: expected 4.04 on stderr\n{}",
        describe(&a.output)
    );

    let a = libcoap_client(client, tmp.path(), &[&format!("{base}/.well-known/core")]);
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
    let base = l.url("coap+tcp", "127.0.0.1");
    let a = libcoap_client(client, tmp.path(), &[&format!("{base}/big.txt")]);
    a.assert_payload(&big, "libcoap GET coap+tcp 80000 bytes");

    let source = tmp.path().join("up-source.txt");
    let up = printable(80_000, 19);
    std::fs::write(&source, &up).unwrap();
    let a = libcoap_client(
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
    assert!(o.status.success(), "GET /\n{}", describe(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("This is a test server made with libcoap"),
        "GET /: libcoap's description\n{}",
        describe(&o)
    );

    let o = coapws_client("get", &[&format!("{base}/time")]);
    assert!(o.status.success(), "GET /time\n{}", describe(&o));
    let time = String::from_utf8_lossy(&o.stdout).into_owned();
    let b = time.as_bytes();
    assert!(
        b.len() == 15
            && b[..3].iter().all(u8::is_ascii_alphabetic)
            && b[3] == b' '
            && b[9] == b':'
            && b[12] == b':'
            && b[13..].iter().all(u8::is_ascii_digit),
        "GET /time: expected \"Mon DD HH:MM:SS\", got {time:?}\n{}",
        describe(&o)
    );

    let started = Instant::now();
    let o = coapws_client("get", &[&format!("{base}/async?1")]);
    let took = started.elapsed();
    assert_ok_payload(&o, b"done", "GET /async?1");
    assert!(
        took >= Duration::from_millis(900),
        "GET /async?1 answered after {took:?}: libcoap delays it by one second"
    );

    let o = coapws_client("get", &[&format!("{base}/.well-known/core")]);
    assert!(
        o.status.success(),
        "GET /.well-known/core\n{}",
        describe(&o)
    );
    let links = String::from_utf8_lossy(&o.stdout);
    assert!(
        links.contains("</time>")
            && links.contains("</async>")
            && links.contains(r#"title="General Info""#),
        "GET /.well-known/core from libcoap\n{}",
        describe(&o)
    );

    let o = coapws_client("get", &[&format!("{base}/no-such-resource")]);
    assert_eq!(o.status.code(), Some(1), "GET missing\n{}", describe(&o));
    assert!(stderr(&o).contains("4.04"), "GET missing\n{}", describe(&o));

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
    let base = l.url("coaps+tcp", "localhost");
    for client in ["coap-client-gnutls", "coap-client-openssl"] {
        let a = libcoap_client(
            client,
            tmp.path(),
            &["-R", s(&ca), &format!("{base}/hello")],
        );
        a.assert_payload(HELLO.as_bytes(), &format!("{client} GET coaps+tcp /hello"));

        let a = libcoap_client(
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

        let a = libcoap_client(
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
            err.contains("CA") || err.contains("certificate"),
            "{client} trusting an unrelated CA: expected a certificate complaint\n{}",
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
        assert!(o.status.success(), "{server}: GET {uri}\n{}", describe(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout)
                .starts_with("This is a test server made with libcoap"),
            "{server}: GET {uri}\n{}",
            describe(&o)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Found by these peers: coapws server-side gaps (these tests fail until they are fixed)
// ---------------------------------------------------------------------------------------------

/// libcoap `-b 1024` sends a PUT (and a POST) in Block1 pieces (RFC 7959 §2.5). coapws must
/// either reassemble them (2.31 Continue per block) or refuse the critical Block1 option with
/// 4.02; today it treats the first 1024-byte block as the whole body: the file server stores
/// 1024 of 80000 bytes and answers 2.01, and /echo echoes only the first block.
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

    let a = libcoap_client(
        "coap-client-notls",
        tmp.path(),
        &[
            "-b",
            "1024",
            "-m",
            "post",
            "-f",
            s(&source),
            &format!("{}/echo", d.url("coap+tcp", "127.0.0.1")),
        ],
    );
    let echo_len = a.payload.len();

    let a = libcoap_client(
        "coap-client-notls",
        tmp.path(),
        &[
            "-b",
            "1024",
            "-m",
            "put",
            "-f",
            s(&source),
            &format!("{}/up.txt", l.url("coap+tcp", "127.0.0.1")),
        ],
    );
    let on_disk = std::fs::read(root.join("up.txt")).unwrap_or_default();
    let refused = all_text(&a.output).contains("4.02") || all_text(&a.output).contains("4.13");
    assert!(
        refused || on_disk == data,
        "Block1 PUT of 80000 bytes in 1024-byte blocks over coap+tcp: coapws stored {} bytes \
         and libcoap saw no error (POST /echo the same way echoed {echo_len} bytes)\n{}",
        on_disk.len(),
        describe(&a.output)
    );
    assert!(
        refused || echo_len == data.len(),
        "Block1 POST /echo of 80000 bytes: {echo_len} bytes echoed\n{}",
        describe(&a.output)
    );
}

/// aiocoap-client PUTs 100 KiB over `coap+tcp` in BERT Block1 pieces (it starts sending
/// before it has our CSM; over `coap+ws` it sends the body whole). coapws takes the first
/// 1024-byte block for the whole body: it stores 1024 bytes and answers 2.01, and aiocoap only
/// logs "Block1 option completely ignored by server, assuming it knows what it is doing".
#[test]
fn aiocoap_block1_put_to_coapws_over_tcp_is_not_truncated() {
    let tmp = TempDir::new("aio-block1");
    let root = tmp.subdir("root");
    let (_files, l) = coapws_serve(
        tmp.path(),
        &[s(&root), "--write", "--tcp", "127.0.0.1:0"],
        1,
    );
    let uri = format!("{}/big.txt", l.url("coap+tcp", "127.0.0.1"));
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
    let on_disk = std::fs::read(root.join("big.txt")).unwrap_or_default();
    assert!(
        !o.status.success() || on_disk == big,
        "aiocoap PUT of 100 KiB over coap+tcp succeeded but coapws stored {} bytes\n{}",
        on_disk.len(),
        describe(&o)
    );
    assert!(
        o.status.success(),
        "aiocoap PUT of 100 KiB over coap+tcp\n{}",
        describe(&o)
    );
}

/// libcoap `-X 2000` announces a Max-Message-Size of 2000 in its CSM. coapws (which itself
/// announces Block-Wise-Transfer) may not send a larger message (RFC 8323 §5.3.1), so an
/// 80000-byte file must come block-wise (Block2, RFC 7959) as aiocoap and libcoap servers do;
/// today coapws answers 5.00 "response of 80009 bytes exceeds Max-Message-Size 2000".
#[test]
fn libcoap_client_with_small_max_message_size_gets_a_large_file_from_coapws() {
    let tmp = TempDir::new("lc-mms");
    let root = tmp.subdir("root");
    let big = printable(80_000, 31);
    std::fs::write(root.join("big.txt"), &big).unwrap();
    let (_files, l) = coapws_serve(tmp.path(), &[s(&root), "--tcp", "127.0.0.1:0"], 1);
    let a = libcoap_client(
        "coap-client-notls",
        tmp.path(),
        &[
            "-X",
            "2000",
            &format!("{}/big.txt", l.url("coap+tcp", "127.0.0.1")),
        ],
    );
    a.assert_payload(
        &big,
        "libcoap -X 2000 GET of an 80000-byte file over coap+tcp",
    );
}

/// A request carrying the critical OSCORE option (RFC 8613, number 9) to a server that does no
/// OSCORE must get 4.02 Bad Option (RFC 8613 §2, RFC 7252 §5.4.1); coapws knows the number (for
/// printing) and so serves the request as if it were unprotected: 2.05 with the payload.
#[test]
fn coapws_refuses_oscore_it_does_not_process() {
    let tmp = TempDir::new("lc-oscore");
    let (_server, l) = coapws_serve(tmp.path(), &["--tcp", "127.0.0.1:0"], 1);
    let a = libcoap_client(
        "coap-client-notls",
        tmp.path(),
        &[
            "-O",
            "9,0x09",
            &format!("{}/hello", l.url("coap+tcp", "127.0.0.1")),
        ],
    );
    assert!(
        a.payload.is_empty() && all_text(&a.output).contains("4.02"),
        "GET /hello with an OSCORE option: expected 4.02, got payload {:?}\n{}",
        String::from_utf8_lossy(&a.payload),
        describe(&a.output)
    );
    // The same request without the option is served.
    let a = libcoap_client(
        "coap-client-notls",
        tmp.path(),
        &[&format!("{}/hello", l.url("coap+tcp", "127.0.0.1"))],
    );
    a.assert_payload(HELLO.as_bytes(), "GET /hello without OSCORE");
}
