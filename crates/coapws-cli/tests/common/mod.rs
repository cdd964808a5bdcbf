//! Helpers shared by the `coapws` CLI tests (cli.rs and the interop_*.rs files): the process
//! and port discipline, the peers and how to run them, and the checks on what they print.
//!
//! Every process started here is killed (and reaped) when its guard drops, printing its log
//! when a test panics; every wait is bounded; ports are picked free on loopback, and servers
//! that exit at start (a port found free can be taken before the server binds it) are retried;
//! each test has its own temporary directory, removed on drop, so the tests run in parallel.
//!
//! A missing peer makes a test fail with the command to run; nothing is skipped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// Bound on any single command (aiocoap-client, coap-client, a Python script, `coapws get`).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on a server becoming ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// What `coapws serve` without ROOT answers on `/hello`.
pub const HELLO: &str = "Hello, CoAP over WebSockets!";
/// How much of a process's log a failing test prints (its end).
const LOG_TAIL: usize = 20_000;
/// How much of a command's stdout and stderr `describe` shows (their ends).
const OUTPUT_TAIL: usize = 6000;

// ---------------------------------------------------------------------------------------------
// Where things are
// ---------------------------------------------------------------------------------------------

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn coapws_bin() -> &'static str {
    env!("CARGO_BIN_EXE_coapws")
}

/// A program of the aiocoap venv; panics (never skips) if it is not installed.
pub fn aiocoap(name: &str) -> PathBuf {
    let p = workspace_root().join("target/peers/venv/bin").join(name);
    assert!(
        p.exists(),
        "aiocoap peer {} is missing: run scripts/install-peers.sh libcoap3-bin (it installs \
         aiocoap 0.4.17 into target/peers/venv) before these tests",
        p.display()
    );
    p
}

/// The libcoap version whose output (the `-v 7` PDU log, its TLS complaints) the tests read.
pub const LIBCOAP_VERSION: &str = "4.3.1";

/// A libcoap 4.3.1 program from Debian's libcoap3-bin; panics (never skips) if it is missing,
/// or if the installed libcoap is another version (its log format is what the tests parse).
pub fn libcoap(name: &str) -> PathBuf {
    let p = Path::new("/usr/bin").join(name);
    assert!(
        p.exists(),
        "libcoap peer {} is missing: run scripts/install-peers.sh libcoap3-bin (it installs \
         Debian's libcoap3-bin, libcoap {LIBCOAP_VERSION}) before these tests",
        p.display()
    );
    static CHECKED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let checked = CHECKED.get_or_init(|| {
        // Without arguments coap-client prints its usage, starting "coap-client-notls v4.3.1 -- …".
        let out = Command::new("/usr/bin/coap-client-notls")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run coap-client-notls: {e}"))?;
        let text = all_text(&out);
        let banner = text.lines().next().unwrap_or_default();
        if banner.starts_with(&format!("coap-client-notls v{LIBCOAP_VERSION} ")) {
            Ok(())
        } else {
            Err(format!(
                "these tests parse libcoap {LIBCOAP_VERSION}'s output, but coap-client-notls \
                 says {banner:?}: install Debian's libcoap3-bin {LIBCOAP_VERSION}, or update the \
                 tests' expectations"
            ))
        }
    });
    if let Err(e) = checked {
        panic!("{e}");
    }
    p
}

/// A Python script under tests/peers.
pub fn script(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(name);
    assert!(p.exists(), "test script {} is missing", p.display());
    p
}

/// The aiocoap venv's Python running a script under tests/peers.
pub fn python(script_name: &str) -> Command {
    let mut cmd = Command::new(aiocoap("python"));
    cmd.arg(script(script_name));
    cmd
}

/// A path as `&str` (for command lines).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// A temporary directory of its own, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "coapws-{}-{tag}-{}-{}-{nanos}",
            env!("CARGO_CRATE_NAME"),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    /// A fresh subdirectory (a file server's root).
    pub fn subdir(&self, name: &str) -> PathBuf {
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

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// A child process killed (and reaped) on drop; when the test is panicking, the end of its log
/// is printed.
pub struct ChildGuard {
    pub child: Child,
    pub name: String,
    pub log: Option<PathBuf>,
}

impl ChildGuard {
    /// Starts `cmd` (its stdio already set up) as `name`, with its output logged to `log`.
    pub fn spawn(cmd: &mut Command, name: &str, log: Option<PathBuf>) -> ChildGuard {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        ChildGuard {
            child,
            name: name.to_owned(),
            log,
        }
    }
    /// What the process wrote to its log so far (for failure messages).
    pub fn log_text(&self) -> String {
        self.log
            .as_ref()
            .and_then(|l| std::fs::read_to_string(l).ok())
            .unwrap_or_default()
    }
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            let log = self.log_text();
            let mut start = log.len().saturating_sub(LOG_TAIL);
            while !log.is_char_boundary(start) {
                start += 1;
            }
            let part = if start > 0 { " (tail)" } else { "" };
            eprintln!("--- log of {}{part} ---\n{}", self.name, &log[start..]);
        }
    }
}

/// Runs `cmd` to completion with piped output, killing it after `timeout` (and then failing).
pub fn run(mut cmd: Command, timeout: Duration) -> Output {
    let what = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut guard = ChildGuard::spawn(&mut cmd, &what, None);
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

/// Starts `cmd` (stdout piped, stderr to a log file in `dir`) and waits up to `within` for the
/// first stdout line for which `ready` gives `Some`; stdout is drained after that, so the child
/// never blocks on a full pipe. `Err` with the log if the process exited before (e.g. a port
/// taken), so callers can retry; a panic if it is still running but silent.
pub fn try_start_announcing<T: Send + 'static>(
    mut cmd: Command,
    name: &str,
    dir: &Path,
    within: Duration,
    mut ready: impl FnMut(&str) -> Option<T> + Send + 'static,
) -> Result<(ChildGuard, T), String> {
    static N: AtomicU32 = AtomicU32::new(0);
    let log = dir.join(format!("{name}-{}.log", N.fetch_add(1, Ordering::Relaxed)));
    let log_file = std::fs::File::create(&log).expect("create log file");
    let what = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file));
    let mut guard = ChildGuard::spawn(&mut cmd, name, Some(log));
    let stdout = guard.child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
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
    let deadline = Instant::now() + within;
    match rx.recv_timeout(within) {
        Ok(v) => Ok((guard, v)),
        Err(e) => {
            let mut status = guard.exited();
            // Stdout closed without the announcement: the process is on its way out.
            while e == RecvTimeoutError::Disconnected
                && status.is_none()
                && Instant::now() < deadline
            {
                thread::sleep(Duration::from_millis(10));
                status = guard.exited();
            }
            let log = guard.log_text();
            if status.is_none() {
                panic!("{what} did not announce readiness within {within:?}\n{log}");
            }
            Err(format!(
                "{what} exited ({status:?}) before announcing readiness\n{log}"
            ))
        }
    }
}

/// [`try_start_announcing`] within [`READY_TIMEOUT`], failing if the process exits before.
pub fn start_announcing<T: Send + 'static>(
    cmd: Command,
    name: &str,
    dir: &Path,
    ready: impl FnMut(&str) -> Option<T> + Send + 'static,
) -> (ChildGuard, T) {
    try_start_announcing(cmd, name, dir, READY_TIMEOUT, ready).unwrap_or_else(|e| panic!("{e}"))
}

// ---------------------------------------------------------------------------------------------
// Outputs
// ---------------------------------------------------------------------------------------------

/// Status, stdout and stderr of a command, for failure messages (long outputs: their end).
pub fn describe(o: &Output) -> String {
    let show = |b: &[u8]| {
        if b.len() > OUTPUT_TAIL {
            format!(
                "<{} bytes, last {OUTPUT_TAIL}:>\n{}",
                b.len(),
                String::from_utf8_lossy(&b[b.len() - OUTPUT_TAIL..])
            )
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

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// stdout and stderr together (libcoap logs to stdout, its code lines go to stderr).
pub fn all_text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A successful request whose stdout is exactly `expected`.
pub fn assert_ok_payload(o: &Output, expected: &[u8], what: &str) {
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

/// A request of `coapws` answered with `code` (e.g. "4.04"): its exit status for that class
/// (3 for 4.xx, 4 for 5.xx) and the code in the output.
pub fn assert_fails_with(o: &Output, code: &str, what: &str) {
    let status = if code.starts_with('4') { 3 } else { 4 };
    assert_eq!(
        o.status.code(),
        Some(status),
        "{what}: expected exit status {status}\n{}",
        describe(o)
    );
    assert!(
        all_text(o).contains(code),
        "{what}: expected {code} in the output\n{}",
        describe(o)
    );
}

/// A request of aiocoap-client answered with `code`: exit status 1 and the code in the output.
pub fn assert_peer_fails_with(o: &Output, code: &str, what: &str) {
    assert_eq!(
        o.status.code(),
        Some(1),
        "{what}: expected exit status 1\n{}",
        describe(o)
    );
    assert!(
        all_text(o).contains(code),
        "{what}: expected {code} in the output\n{}",
        describe(o)
    );
}

/// A successful request whose stdout contains every one of `parts` (e.g. the links of a
/// `/.well-known/core`).
pub fn assert_ok_containing(o: &Output, parts: &[&str], what: &str) {
    assert!(
        o.status.success(),
        "{what}: expected success\n{}",
        describe(o)
    );
    let text = String::from_utf8_lossy(&o.stdout);
    let missing: Vec<&&str> = parts.iter().filter(|p| !text.contains(**p)).collect();
    assert!(
        missing.is_empty(),
        "{what}: expected {missing:?} in the output\n{}",
        describe(o)
    );
}

/// A successful request whose stdout starts with `prefix`.
pub fn assert_ok_starting(o: &Output, prefix: &str, what: &str) {
    assert!(
        o.status.success(),
        "{what}: expected success\n{}",
        describe(o)
    );
    assert!(
        o.stdout.starts_with(prefix.as_bytes()),
        "{what}: expected output starting with {prefix:?}\n{}",
        describe(o)
    );
}

/// `n` bytes of printable ASCII, deterministic but not repetitive.
pub fn printable(n: usize, seed: u32) -> Vec<u8> {
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

// ---------------------------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------------------------

/// Whether TCP `port` (and UDP `port` too if `udp`) can be bound on 127.0.0.1 right now.
pub fn port_free(port: u16, udp: bool) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
        && (!udp || UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok())
}

/// A port P such that, for every `(offset, udp)`, TCP P+offset (and UDP if `udp`) is free.
pub fn free_port_set(offsets: &[(u16, bool)]) -> u16 {
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

/// Whether a CoAP endpoint answers on UDP `addr`: sends a CoAP ping (an empty Confirmable
/// message, RFC 7252 §4.3) and waits up to 200 ms for the Reset with the same Message ID.
pub fn udp_pong(addr: SocketAddr) -> bool {
    static MID: AtomicU32 = AtomicU32::new(0x4242);
    let Ok(sock) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else {
        return false;
    };
    let mid = (MID.fetch_add(1, Ordering::Relaxed) as u16).to_be_bytes();
    let ping = [0x40, 0x00, mid[0], mid[1]];
    if sock.send_to(&ping, addr).is_err() {
        return false;
    }
    let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 1500];
    let deadline = Instant::now() + Duration::from_millis(200);
    while Instant::now() < deadline {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) if from == addr && n >= 4 => {
                // Version 1, type RST (3), same Message ID.
                if buf[0] & 0xf0 == 0x70 && buf[2..4] == mid {
                    return true;
                }
            }
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

/// What shows that a server started by [`start_port_server`] on port set P is ready.
#[derive(Debug, Clone, Copy)]
pub enum Ready {
    /// TCP P+offset accepts connections.
    Tcp(u16),
    /// UDP P+offset answers a CoAP ping.
    CoapPing(u16),
}

impl Ready {
    fn holds(self, p: u16) -> bool {
        match self {
            Ready::Tcp(o) => {
                let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, p + o));
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            }
            Ready::CoapPing(o) => udp_pong(SocketAddr::from((Ipv4Addr::LOCALHOST, p + o))),
        }
    }
}

/// Starts a server on a port set picked by `free_port_set(offsets)`: `make(P)` builds the
/// command (stdout and stderr go to a log in `dir`); ready when every one of `ready` holds.
/// Retries when the server exits at start (a port found free can be taken by someone else
/// before the server binds it).
pub fn start_port_server(
    name: &str,
    dir: &Path,
    offsets: &[(u16, bool)],
    ready: &[Ready],
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
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log_file))
            .stderr(Stdio::from(log_err));
        let mut guard = ChildGuard::spawn(&mut cmd, name, Some(log));
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline && guard.exited().is_none() {
            if ready.iter().all(|r| r.holds(p)) {
                return (guard, p);
            }
            thread::sleep(Duration::from_millis(30));
        }
        last_log = guard.log_text();
        if guard.exited().is_none() {
            panic!("{what} not ready ({ready:?} with P = {p}) after {READY_TIMEOUT:?}\n{last_log}");
        }
    }
    panic!("{name} exited at start three times\n{last_log}");
}

// ---------------------------------------------------------------------------------------------
// coapws
// ---------------------------------------------------------------------------------------------

/// `coapws ARGS...` as a user would run it.
pub fn coapws(args: &[&str]) -> Output {
    let mut cmd = Command::new(coapws_bin());
    cmd.args(args);
    run(cmd, COMMAND_TIMEOUT)
}

/// `coapws METHOD ARGS...` with a 10 s response timeout.
pub fn coapws_client(method: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(coapws_bin());
    cmd.arg(method).args(args).args(["--timeout", "10"]);
    run(cmd, COMMAND_TIMEOUT)
}

/// The listeners of a running `coapws serve`, as announced on its stdout, in their order.
pub struct Listeners(pub Vec<String>);

impl Listeners {
    /// The announced URL of `scheme` (e.g. `coap://127.0.0.1:40711`).
    pub fn url(&self, scheme: &str) -> String {
        self.0
            .iter()
            .find(|l| l.starts_with(&format!("{scheme}://")))
            .unwrap_or_else(|| panic!("no {scheme} listener among {:?}", self.0))
            .clone()
    }
    /// The announced URL of `scheme` with `127.0.0.1` replaced by `host` (TLS needs a name
    /// in the certificate; ours has both `localhost` and `127.0.0.1`).
    pub fn url_at(&self, scheme: &str, host: &str) -> String {
        self.url(scheme).replace("127.0.0.1", host)
    }
}

/// `coapws serve ARGS`, ready once it announced `expect` listeners (all with real ports)
/// within `within`. `Err` with the log if it exited before (e.g. a port taken), so callers
/// can retry.
pub fn try_coapws_serve(
    dir: &Path,
    args: &[&str],
    expect: usize,
    within: Duration,
) -> Result<(ChildGuard, Listeners), String> {
    try_coapws_listening("serve", dir, args, expect, within)
}

/// `coapws proxy ARGS` (ports chosen by the system: it must start) within [`READY_TIMEOUT`].
pub fn coapws_proxy(dir: &Path, args: &[&str], expect: usize) -> (ChildGuard, Listeners) {
    try_coapws_listening("proxy", dir, args, expect, READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `coapws COMMAND ARGS` for a command that listens (`serve`, `proxy`), ready once it
/// announced `expect` listeners.
fn try_coapws_listening(
    command: &str,
    dir: &Path,
    args: &[&str],
    expect: usize,
    within: Duration,
) -> Result<(ChildGuard, Listeners), String> {
    let mut cmd = Command::new(coapws_bin());
    cmd.arg(command).args(args);
    let mut seen = Vec::new();
    try_start_announcing(cmd, "coapws-serve", dir, within, move |line| {
        let l = line.trim().strip_prefix("listening on ")?;
        seen.push(l.to_owned());
        (seen.len() == expect).then(|| Listeners(std::mem::take(&mut seen)))
    })
}

/// `coapws serve ARGS` (ports chosen by the system: it must start) within `within`.
pub fn coapws_serve_within(
    dir: &Path,
    args: &[&str],
    expect: usize,
    within: Duration,
) -> (ChildGuard, Listeners) {
    try_coapws_serve(dir, args, expect, within).unwrap_or_else(|e| panic!("{e}"))
}

/// `coapws serve ARGS` (ports chosen by the system: it must start) within [`READY_TIMEOUT`].
pub fn coapws_serve(dir: &Path, args: &[&str], expect: usize) -> (ChildGuard, Listeners) {
    coapws_serve_within(dir, args, expect, READY_TIMEOUT)
}

/// `coapws serve ARGS FLAG 127.0.0.1:0` (FLAG e.g. `--udp`, `--ws`): the guard and the one
/// announced URL, which must be of `scheme` on 127.0.0.1.
pub fn coapws_serve_one(
    dir: &Path,
    args: &[&str],
    flag: &str,
    scheme: &str,
) -> (ChildGuard, String) {
    let mut all = args.to_vec();
    all.extend([flag, "127.0.0.1:0"]);
    let (guard, l) = coapws_serve(dir, &all, 1);
    let url = l.url(scheme);
    assert!(
        url.starts_with(&format!("{scheme}://127.0.0.1:")),
        "announced {flag} listener {url:?}"
    );
    (guard, url)
}

/// `coapws serve ARGS --bind 127.0.0.1:P` on a port P free for `offsets`, ready once it
/// announced `expect` listeners within `within`; retried on another P when it exits at start.
pub fn coapws_serve_bind(
    dir: &Path,
    args: &[&str],
    offsets: &[(u16, bool)],
    expect: usize,
    within: Duration,
) -> (ChildGuard, Listeners, u16) {
    let mut last = String::new();
    for _ in 0..3 {
        let p = free_port_set(offsets);
        let bind = format!("127.0.0.1:{p}");
        let mut all = args.to_vec();
        all.extend(["--bind", bind.as_str()]);
        match try_coapws_serve(dir, &all, expect, within) {
            Ok((guard, l)) => return (guard, l, p),
            Err(e) => last = e,
        }
    }
    panic!("coapws serve --bind failed three times\n{last}");
}

// ---------------------------------------------------------------------------------------------
// aiocoap
// ---------------------------------------------------------------------------------------------

/// aiocoap-client with `args` (the URI last).
pub fn aiocoap_client(args: &[&str]) -> Output {
    let mut cmd = Command::new(aiocoap("aiocoap-client"));
    cmd.args(args);
    run(cmd, COMMAND_TIMEOUT)
}

/// `aiocoap-fileserver --bind 127.0.0.1:P EXTRA... ROOT` with aiocoap's default server
/// transports (0.4.17: udp6, tcpserver, tlsserver, ws among them): `coap` and `coap+tcp` on P,
/// `coap+ws` on P+3000, and with TLS material (`tls`) also `coaps+tcp` on P+1 and `coaps+ws`
/// on P+3001. Returns the guard and P once UDP P answers a CoAP ping and the last WebSocket
/// listener accepts connections.
pub fn aiocoap_fileserver(dir: &Path, root: &Path, tls: bool, extra: &[&str]) -> (ChildGuard, u16) {
    let bin = aiocoap("aiocoap-fileserver");
    let (offsets, ws): (&[(u16, bool)], u16) = if tls {
        (&[(0, true), (1, false), (3000, false), (3001, false)], 3001)
    } else {
        (&[(0, true), (3000, false)], 3000)
    };
    let ready = [Ready::Tcp(ws), Ready::CoapPing(0)];
    start_port_server("aiocoap-fileserver", dir, offsets, &ready, |p| {
        let mut cmd = Command::new(&bin);
        cmd.arg("--bind")
            .arg(format!("127.0.0.1:{p}"))
            .args(extra)
            .arg(root);
        cmd
    })
}

// ---------------------------------------------------------------------------------------------
// libcoap
// ---------------------------------------------------------------------------------------------

/// A libcoap example server `BIN -A 127.0.0.1 -p P EXTRA...` (`coap-server-notls`, or the
/// `-gnutls` / `-openssl` builds, which also serve DTLS and TLS on P+1). Returns the guard and
/// P once UDP P answers a CoAP ping and TCP P (TLS builds: P+1) accepts connections.
pub fn libcoap_server(dir: &Path, bin: &str, extra: &[&str]) -> (ChildGuard, u16) {
    let tls = !bin.ends_with("-notls");
    let bin = libcoap(bin);
    let offsets: &[(u16, bool)] = if tls {
        &[(0, true), (1, true)]
    } else {
        &[(0, true)]
    };
    let ready = [Ready::Tcp(u16::from(tls)), Ready::CoapPing(0)];
    start_port_server("coap-server", dir, offsets, &ready, |p| {
        let mut cmd = Command::new(&bin);
        cmd.args(["-A", "127.0.0.1", "-p", &p.to_string()])
            .args(extra);
        cmd
    })
}

/// What libcoap's coap-client did: the payload it received (written with `-o FILE`, exact:
/// on stdout it appends a newline) and its output (codes other than 2.xx go to stderr, and it
/// exits 0 either way).
pub struct LibcoapAnswer {
    pub payload: Vec<u8>,
    pub output: Output,
}

/// `BIN -B 5 -o FILE ARGS...` (the URI last), BIN one of libcoap's coap-client builds.
pub fn libcoap_client_bin(bin: &str, dir: &Path, args: &[&str]) -> LibcoapAnswer {
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

/// `coap-client-notls -B 5 -o FILE ARGS...` (the URI last).
pub fn libcoap_client(dir: &Path, args: &[&str]) -> LibcoapAnswer {
    libcoap_client_bin("coap-client-notls", dir, args)
}

impl LibcoapAnswer {
    pub fn assert_payload(&self, expected: &[u8], what: &str) {
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
    /// libcoap's `-v 7` PDU log (`v:1 t:CON c:GET i:… {token} [ options ] :: payload`).
    pub fn pdus(&self) -> String {
        all_text(&self.output)
    }
}

/// Whether libcoap's coap-client reported a response `code` (e.g. "4.04"): without `-v` it
/// prints a non-2.xx code on a line of its own on stderr, alone or followed by the diagnostic
/// payload. A whole line, not a substring: its log timestamps (`…:14.04…`) could match.
pub fn libcoap_got_code(a: &LibcoapAnswer, code: &str) -> bool {
    stderr(&a.output)
        .lines()
        .any(|l| l == code || l.starts_with(&format!("{code} ")))
}

/// The PDUs in a libcoap `-v 7` log, each with whether libcoap sent it (`true`) or received it:
/// a PDU line (`v:1 t:…`) follows a line that says "sent N bytes" or "received N bytes".
pub fn libcoap_pdus(log: &str) -> Vec<(bool, String)> {
    let mut sent = None;
    let mut pdus = Vec::new();
    for line in log.lines() {
        if line.contains(" sent ") && line.contains(" bytes") {
            sent = Some(true);
        } else if line.contains(" received ") && line.contains(" bytes") {
            sent = Some(false);
        } else if line.starts_with("v:1 ") {
            if let Some(s) = sent.take() {
                pdus.push((s, line.to_owned()));
            }
        }
    }
    pdus
}

/// How libcoap's example server's description (its `/`) starts.
pub const LIBCOAP_DESCRIPTION: &str = "This is a test server made with libcoap";

/// What libcoap's example server answers on `/time`: a clock "Mon DD HH:MM:SS".
pub fn assert_libcoap_time(o: &Output) {
    assert!(o.status.success(), "GET /time\n{}", describe(o));
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
        describe(o)
    );
}

// ---------------------------------------------------------------------------------------------
// TLS material
// ---------------------------------------------------------------------------------------------

/// A self-signed CA named `name`: its parameters (to sign with), key and certificate.
fn new_ca(name: &str) -> (rcgen::CertificateParams, rcgen::KeyPair, rcgen::Certificate) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = ca.self_signed(&key).unwrap();
    (ca, key, cert)
}

/// Writes a CA and a server certificate for localhost/127.0.0.1 as PEM files into `dir`
/// (CA, certificate, PKCS#8 key).
pub fn write_pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{CertificateParams, DnType, Issuer, KeyPair};
    let (ca, ca_key, ca_cert) = new_ca("coapws test CA");
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
pub fn write_other_ca(dir: &Path) -> PathBuf {
    let (_, _, cert) = new_ca("unrelated CA");
    let p = dir.join("other-ca.pem");
    std::fs::write(&p, cert.pem()).unwrap();
    p
}

// ---------------------------------------------------------------------------------------------
// Observing with the coapws binary
// ---------------------------------------------------------------------------------------------

/// Runs `coapws get --observe URI`, reads `lines` lines from it, then sends SIGINT and
/// returns the lines and its log; it must exit 0 (it deregisters on Ctrl-C).
pub fn coapws_observe(uri: &str, lines: usize) -> (Vec<String>, String) {
    let mut cmd = Command::new(coapws_bin());
    cmd.args(["-v", "get", "--observe", uri])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut guard = ChildGuard::spawn(&mut cmd, "coapws get --observe", None);
    let out = guard.child.stdout.take().unwrap();
    let mut err = guard.child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(out)) {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut got = Vec::new();
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    while got.len() < lines {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => got.push(l),
            Err(_) => panic!("{uri}: only {got:?} within {COMMAND_TIMEOUT:?}"),
        }
    }
    let pid = guard.child.id().to_string();
    let kill = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(s) = guard.exited() {
            break s;
        }
        assert!(Instant::now() < deadline, "{uri}: no exit after Ctrl-C");
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = err_reader.join().unwrap();
    assert_eq!(status.code(), Some(0), "{uri}: exit after Ctrl-C\n{log}");
    (got, log)
}
