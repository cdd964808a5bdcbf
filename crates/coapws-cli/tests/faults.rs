//! Faults with real processes (the hardening issue): a `coapws serve` process, or a `coapws`
//! client process, killed with SIGKILL (or stopped, then killed) while the other side, the
//! coapws library in this test process, has a request pending or an observation running; and
//! a server restarted while clients hold pooled connections to it. Each test asserts the
//! outcome and its time bound: over WebSocket and TCP the kernel closes a killed process's
//! sockets, so everything pending fails at once; over UDP nothing says a peer died, and the
//! bound is the one RFC 7252 gives (retransmissions, EXCHANGE_LIFETIME), or the ICMP "port
//! unreachable" a connected client socket is told of.
//!
//! Not here (already covered in `crates/coapws/tests`): a peer that never answers Ping
//! (`keepalive.rs`: `a_websocket_client_that_stops_answering_is_pinged_then_dropped`) and a
//! peer that stops reading (`hardening.rs`:
//! `a_peer_that_stops_reading_is_dropped_and_others_are_served`).

mod common;

use coapws::proto::udp::UdpConfig;
use coapws::proto::{Code, Message};
use coapws::{
    Endpoint, EndpointConfig, Error, IncomingRequest, Observable, ObserveEnd, Request, Resource,
    Site,
};
use common::*;
use std::future::Future;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a request or observation of these tests may wait by itself: far beyond every
/// bound asserted, so that what ends it is the fault, never its own timeout.
const HOUR: Duration = Duration::from_secs(3600);
/// How soon a fault on a WebSocket or TCP connection must end what was pending on it.
const PROMPT: Duration = Duration::from_secs(2);
/// What a UDP bound may be exceeded by: scheduling on a loaded machine (the bounds themselves
/// come from the transmission parameters).
const SLACK: Duration = Duration::from_millis(1500);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Sends `sig` (e.g. "STOP", "TERM") to the process.
fn signal(guard: &ChildGuard, sig: &str) {
    let pid = guard.child.id().to_string();
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid])
        .status()
        .expect("run kill");
    assert!(ok.success(), "kill -{sig} {pid} failed");
}

/// SIGSTOP, and waits until every thread of the process is stopped: `kill` returns when the
/// signal is queued, and a thread still running could yet answer.
fn sigstop(guard: &ChildGuard) {
    signal(guard, "STOP");
    let tasks = format!("/proc/{}/task", guard.child.id());
    wait_until(Duration::from_secs(5), "the process stopping", || {
        std::fs::read_dir(&tasks).unwrap().all(|t| {
            let stat = std::fs::read_to_string(t.unwrap().path().join("stat")).unwrap_or_default();
            // The state follows the command name, which is in parentheses.
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
        })
    });
}

/// SIGKILL, reaped: the kernel has closed the process's sockets when this returns.
fn sigkill(guard: &mut ChildGuard) {
    guard.child.kill().expect("SIGKILL");
    guard.child.wait().expect("reap");
}

/// Waits up to `within` for `f` to hold; the time it took, or a panic naming `what`.
fn wait_until(within: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if f() {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Blocks on `f` for at most `within`: its output and how long it took.
fn finish_within<T>(
    rt: &tokio::runtime::Runtime,
    within: Duration,
    what: &str,
    f: impl Future<Output = T>,
) -> (T, Duration) {
    let start = Instant::now();
    let out = rt
        .block_on(async { tokio::time::timeout(within, f).await })
        .unwrap_or_else(|_| panic!("{what}: still pending after {within:?} (a hang)"));
    (out, start.elapsed())
}

/// Panics with its outcome if the task `h` has finished already: it must still be pending.
fn assert_pending<T: std::fmt::Debug>(
    rt: &tokio::runtime::Runtime,
    h: tokio::task::JoinHandle<T>,
    what: &str,
) -> tokio::task::JoinHandle<T> {
    if h.is_finished() {
        panic!("{what}: finished before the kill: {:?}", rt.block_on(h));
    }
    h
}

/// `coapws serve` (the demo site) on WebSocket, TCP and UDP, each on a port of its own.
fn serve_demo(dir: &Path) -> (ChildGuard, Listeners) {
    coapws_serve(
        dir,
        &[
            "--ws",
            "127.0.0.1:0",
            "--tcp",
            "127.0.0.1:0",
            "--udp",
            "127.0.0.1:0",
        ],
        3,
    )
}

/// A client endpoint whose site has `/slow`: a handler that never answers, and says on
/// `called` that it was asked (then the server's request is pending on us).
fn client_with_slow_resource(
    config: EndpointConfig,
) -> (Endpoint, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let slow = Resource::new().get(move |_req: IncomingRequest| {
        let _ = tx.send(());
        std::future::pending::<Message>()
    });
    let site = Site::new().resource("/slow", slow);
    (Endpoint::builder().site(site).config(config).build(), rx)
}

/// UDP transmission parameters small enough for a test to wait out their bounds.
fn quick_udp(ack_ms: u64, max_retransmit: u32) -> UdpConfig {
    UdpConfig {
        ack_timeout: Duration::from_millis(ack_ms),
        ack_random_factor: 1.5,
        max_retransmit,
        max_latency: Duration::from_secs(1),
        ..UdpConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// a. A peer killed while a request is pending
// ---------------------------------------------------------------------------------------------

/// The server process is SIGKILLed while our request is in its handler (`/ask-back` waits for
/// our `/slow`, which never answers): the request fails with a connection error within
/// [`PROMPT`], though it may wait an hour, over WebSocket and TCP.
#[test]
fn a_killed_server_fails_the_pending_request_at_once_over_ws_and_tcp() {
    let rt = runtime();
    for scheme in ["coap+ws", "coap+tcp"] {
        let tmp = TempDir::new("kill-server");
        let (mut server, l) = serve_demo(tmp.path());
        let _enter = rt.enter();
        let (client, mut asked) = client_with_slow_resource(EndpointConfig::default());
        let uri = format!("{}/ask-back?path=/slow", l.url(scheme));
        let pending = {
            let client = client.clone();
            let req = Request::get(&uri).unwrap().timeout(HOUR);
            rt.spawn(async move { client.send(req).await })
        };
        // The server's handler asked us back: our request is pending in it.
        finish_within(
            &rt,
            Duration::from_secs(10),
            "the server asking back",
            asked.recv(),
        );
        let pending = assert_pending(&rt, pending, scheme);
        sigkill(&mut server);
        let (result, took) = finish_within(&rt, PROMPT, scheme, pending);
        let err = result.unwrap().expect_err("a killed server cannot answer");
        assert!(
            err.is_connection_closed(),
            "{scheme}: expected a connection error, got {err:?}"
        );
        println!("{scheme}: failed {took:?} after the kill: {err}");
        wait_until(PROMPT, "the connection leaving the pool", || {
            client.connection_count() == 0
        });
    }
}

/// Over UDP, a server that acknowledged our Confirmable request (an empty ACK, the response
/// to come separately) and was then killed leaves nothing to notice: the request fails with
/// [`Error::Timeout`] when EXCHANGE_LIFETIME (RFC 7252 §4.8.2) after the ACK has passed, not
/// before, and not at its own (hour-long) timeout.
#[test]
fn a_killed_udp_server_that_acknowledged_fails_the_request_at_exchange_lifetime() {
    let rt = runtime();
    let tmp = TempDir::new("kill-udp-acked");
    let (mut server, l) = serve_demo(tmp.path());
    let _enter = rt.enter();
    let config = EndpointConfig {
        udp: quick_udp(200, 2),
        ..EndpointConfig::default()
    };
    let lifetime = config.udp.exchange_lifetime();
    let (client, mut asked) = client_with_slow_resource(config);
    let uri = format!("{}/ask-back?path=/slow", l.url("coap"));
    let sent = Instant::now();
    let pending = {
        let client = client.clone();
        let req = Request::get(&uri).unwrap().timeout(HOUR);
        rt.spawn(async move { client.send(req).await })
    };
    finish_within(
        &rt,
        Duration::from_secs(10),
        "the server asking back",
        asked.recv(),
    );
    // The server acknowledges our request 100 ms after it came (its empty_ack_delay), and we
    // its request: both are done before the kill.
    std::thread::sleep(Duration::from_millis(400));
    let pending = assert_pending(&rt, pending, "udp");
    sigkill(&mut server);
    let (result, _) = finish_within(&rt, lifetime + Duration::from_secs(5), "udp", pending);
    let took = sent.elapsed();
    let err = result.unwrap().expect_err("a killed server cannot answer");
    assert!(
        matches!(err, Error::Timeout),
        "expected Timeout, got {err:?}"
    );
    assert!(
        took >= lifetime && took < lifetime + SLACK,
        "failed {took:?} after sending; EXCHANGE_LIFETIME is {lifetime:?}"
    );
    println!("udp (acknowledged): failed {took:?} after sending (EXCHANGE_LIFETIME {lifetime:?})");
}

/// Over UDP, a server stopped before our request came (SIGSTOP: no ACK), then killed: with a
/// client socket connected to the server (`udp_connected_clients`), the next retransmission
/// draws an ICMP port unreachable and the request fails with [`Error::Connect`] within one
/// retransmission interval of the kill; with the shared socket (which is told nothing) it
/// fails with [`Error::Timeout`] at MAX_TRANSMIT_WAIT.
#[test]
fn a_killed_udp_server_that_did_not_acknowledge_fails_by_icmp_or_retransmission_bound() {
    let rt = runtime();
    let tmp = TempDir::new("kill-udp-unacked");
    let (mut server, l) = serve_demo(tmp.path());
    let _enter = rt.enter();
    let uri = format!("{}/hello", l.url("coap"));
    let connected = Endpoint::builder()
        .config(EndpointConfig {
            udp: quick_udp(500, 4),
            udp_connected_clients: true,
            ..EndpointConfig::default()
        })
        .build();
    let shared_config = EndpointConfig {
        udp: quick_udp(200, 2),
        ..EndpointConfig::default()
    };
    let transmit_wait = shared_config.udp.max_transmit_wait();
    let shared = Endpoint::builder().config(shared_config).build();
    // Both sockets work before the fault.
    for ep in [&connected, &shared] {
        let (r, _) = finish_within(&rt, Duration::from_secs(5), "GET /hello", ep.get(&uri));
        assert_eq!(r.unwrap().code(), Code::CONTENT);
    }
    sigstop(&server);
    let sent = Instant::now();
    let spawn = |ep: &Endpoint| {
        let ep = ep.clone();
        let req = Request::get(&uri).unwrap().timeout(HOUR);
        rt.spawn(async move { (ep.send(req).await, Instant::now()) })
    };
    let (via_connected, via_shared) = (spawn(&connected), spawn(&shared));
    std::thread::sleep(Duration::from_millis(300));
    let via_connected = assert_pending(&rt, via_connected, "connected socket");
    let via_shared = assert_pending(&rt, via_shared, "shared socket");
    sigkill(&mut server);
    let killed = Instant::now();
    let within = transmit_wait + Duration::from_secs(3);
    let ((r, at), _) = {
        let (joined, took) = finish_within(&rt, within, "connected", via_connected);
        (joined.expect("the task"), took)
    };
    let err = r.expect_err("a killed server cannot answer");
    assert!(
        matches!(err, Error::Connect { .. }),
        "connected socket: expected Connect (ICMP port unreachable), got {err:?}"
    );
    let after_kill = at.duration_since(killed);
    // The first retransmission is due 500–750 ms after sending, 200–450 ms after the kill.
    assert!(
        after_kill < Duration::from_millis(1500),
        "connected socket: failed {after_kill:?} after the kill"
    );
    println!("udp connected: {err} {after_kill:?} after the kill");
    let ((r, at), _) = {
        let (joined, took) = finish_within(&rt, within, "shared", via_shared);
        (joined.expect("the task"), took)
    };
    let err = r.expect_err("a killed server cannot answer");
    assert!(
        matches!(err, Error::Timeout),
        "shared socket: expected Timeout, got {err:?}"
    );
    let took = at.duration_since(sent);
    // MAX_TRANSMIT_WAIT with the random factor drawn at 1 is 2/3 of the bound.
    assert!(
        took >= transmit_wait.mul_f64(2.0 / 3.0) && took < transmit_wait + SLACK,
        "shared socket: failed {took:?} after sending; MAX_TRANSMIT_WAIT is {transmit_wait:?}"
    );
    println!("udp shared: timed out {took:?} after sending (MAX_TRANSMIT_WAIT {transmit_wait:?})");
}

/// A server in this process whose `/hold` hands the [`coapws::Remote`] of each request to
/// `remotes`, observable through `/tick` (notifying every `period`).
fn holding_server(
    config: EndpointConfig,
    period: Duration,
) -> (
    Endpoint,
    tokio::sync::mpsc::UnboundedReceiver<coapws::Remote>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let hold = Resource::new().get(move |req: IncomingRequest| {
        let _ = tx.send(req.remote.clone());
        async { Message::response(Code::CONTENT, "held") }
    });
    let tick = Resource::new()
        .get(|_req: IncomingRequest| async { Message::response(Code::CONTENT, "tick") })
        .observable(&Observable::every(period));
    let site = Site::new().resource("/hold", hold).resource("/tick", tick);
    (Endpoint::builder().site(site).config(config).build(), rx)
}

/// The reverse: a `coapws shell` process connected to a server in this process is stopped
/// (so it cannot answer), the server sends it a request over its connection, and the process
/// is SIGKILLed: the server's request fails with a connection error within [`PROMPT`] (it
/// may wait an hour), and the connection leaves the server's count.
#[test]
fn a_killed_client_process_fails_the_servers_request_and_leaves_the_connection_count() {
    let rt = runtime();
    let tmp = TempDir::new("kill-client");
    let _enter = rt.enter();
    let (server, mut remotes) = holding_server(EndpointConfig::default(), Duration::from_secs(1));
    let (ws, tcp) = rt.block_on(async {
        let any = "127.0.0.1:0".parse().unwrap();
        (
            server.listen_ws(any).await.unwrap(),
            server.listen_tcp(any).await.unwrap(),
        )
    });
    for uri in [
        format!("coap+ws://{ws}/hold"),
        format!("coap+tcp://{tcp}/hold"),
    ] {
        let log = tmp
            .path()
            .join(format!("shell-{}.log", uri.split(':').next().unwrap()));
        let mut cmd = Command::new(coapws_bin());
        cmd.args(["-v", "shell"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
        let mut shell = ChildGuard::spawn(&mut cmd, "coapws shell", Some(log));
        {
            use std::io::Write;
            let stdin = shell.child.stdin.as_mut().unwrap();
            writeln!(stdin, "get {uri}").unwrap();
            stdin.flush().unwrap();
        }
        let (remote, _) = finish_within(
            &rt,
            Duration::from_secs(10),
            "the shell's GET",
            remotes.recv(),
        );
        let remote = remote.expect("a remote");
        assert_eq!(
            server.connection_count(),
            1,
            "{uri}: the shell's connection"
        );
        sigstop(&shell);
        let pending = {
            let remote = remote.clone();
            rt.spawn(async move {
                remote
                    .request(Message::request(Code::GET, "/whoami"), HOUR)
                    .await
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        let pending = assert_pending(&rt, pending, &uri);
        sigkill(&mut shell);
        let (result, took) = finish_within(&rt, PROMPT, &uri, pending);
        let err = result.unwrap().expect_err("a killed client cannot answer");
        assert!(
            err.is_connection_closed(),
            "{uri}: expected a connection error, got {err:?}"
        );
        println!("{uri}: the server's request failed {took:?} after the kill: {err}");
        wait_until(PROMPT, "the connection leaving the server's count", || {
            server.connection_count() == 0
        });
    }
}

// ---------------------------------------------------------------------------------------------
// b. A peer killed mid-observation
// ---------------------------------------------------------------------------------------------

/// We observe the demo's `/time` (a notification a second); the server is SIGKILLed: the
/// observation ends with [`ObserveEnd::ConnectionLost`] within [`PROMPT`], over WebSocket and
/// TCP.
#[test]
fn an_observation_ends_when_the_server_is_killed_over_ws_and_tcp() {
    let rt = runtime();
    for scheme in ["coap+ws", "coap+tcp"] {
        let tmp = TempDir::new("observe-kill");
        let (mut server, l) = serve_demo(tmp.path());
        let client = Endpoint::client();
        let uri = format!("{}/time", l.url(scheme));
        let mut obs = rt
            .block_on(client.observe(Request::get(&uri).unwrap().timeout(HOUR)))
            .expect("observe /time");
        for _ in 0..2 {
            let (n, _) = finish_within(&rt, Duration::from_secs(5), "a notification", obs.next());
            assert_eq!(n.expect("a notification").code(), Code::CONTENT);
        }
        sigkill(&mut server);
        let (end, took) = finish_within(&rt, PROMPT, &uri, obs.next());
        let end = end.expect_err("the observation must end");
        assert!(
            matches!(&end, ObserveEnd::ConnectionLost(e) if e.is_connection_closed()),
            "{scheme}: expected ConnectionLost, got {end:?}"
        );
        println!("{scheme}: observation ended {took:?} after the kill: {end}");
    }
}

/// Over UDP nothing says the server died: the observation notices when the last
/// notification's Max-Age (1 s for `/time`) plus `observe_max_age_grace` (1 s here) has
/// lapsed and the re-registration fails. With a connected client socket it fails at once
/// (ICMP port unreachable: [`ObserveEnd::ConnectionLost`] with [`Error::Connect`]), so the
/// observation ends within Max-Age + grace of the kill; with the shared socket it ends with
/// [`ObserveEnd::Timeout`] after the re-registration's retransmissions (MAX_TRANSMIT_WAIT).
#[test]
fn a_udp_observation_of_a_killed_server_ends_after_max_age_and_the_reregistration() {
    let rt = runtime();
    let tmp = TempDir::new("observe-kill-udp");
    let (mut server, l) = serve_demo(tmp.path());
    let _enter = rt.enter();
    let grace = Duration::from_secs(1);
    let max_age = Duration::from_secs(1);
    let connected = Endpoint::builder()
        .config(EndpointConfig {
            udp_connected_clients: true,
            observe_max_age_grace: grace,
            ..EndpointConfig::default()
        })
        .build();
    let shared_config = EndpointConfig {
        udp: quick_udp(200, 2),
        observe_max_age_grace: grace,
        ..EndpointConfig::default()
    };
    let transmit_wait = shared_config.udp.max_transmit_wait();
    let shared = Endpoint::builder().config(shared_config).build();
    let uri = format!("{}/time", l.url("coap"));
    let mut observations = Vec::new();
    for ep in [&connected, &shared] {
        let mut obs = rt
            .block_on(ep.observe(Request::get(&uri).unwrap().timeout(HOUR)))
            .expect("observe /time");
        let (n, _) = finish_within(&rt, Duration::from_secs(5), "a notification", obs.next());
        assert_eq!(n.expect("a notification").code(), Code::CONTENT);
        observations.push(obs);
    }
    sigkill(&mut server);
    let killed = Instant::now();
    let ends: Vec<_> = observations
        .into_iter()
        .map(|mut obs| {
            rt.spawn(async move {
                // Notifications already on their way may still come.
                loop {
                    if let Err(end) = obs.next().await {
                        return (end, Instant::now());
                    }
                }
            })
        })
        .collect();
    let within = max_age + grace + transmit_wait + Duration::from_secs(3);
    let mut ends = ends.into_iter();
    let ((end, at), _) = {
        let (joined, took) = finish_within(&rt, within, "connected", ends.next().unwrap());
        (joined.expect("the task"), took)
    };
    let took = at.duration_since(killed);
    assert!(
        matches!(&end, ObserveEnd::ConnectionLost(Error::Connect { .. })),
        "connected socket: expected ConnectionLost(Connect), got {end:?}"
    );
    // The last notification came at most a second (plus scheduling) before the kill.
    assert!(
        took < max_age + grace + SLACK,
        "connected socket: ended {took:?} after the kill"
    );
    println!("udp connected: observation ended {took:?} after the kill: {end}");
    let ((end, at), _) = {
        let (joined, took) = finish_within(&rt, within, "shared", ends.next().unwrap());
        (joined.expect("the task"), took)
    };
    let took = at.duration_since(killed);
    assert!(
        matches!(end, ObserveEnd::Timeout),
        "shared socket: expected Timeout, got {end:?}"
    );
    assert!(
        took >= grace && took < max_age + grace + transmit_wait + SLACK,
        "shared socket: ended {took:?} after the kill (Max-Age {max_age:?} + grace {grace:?} + \
         MAX_TRANSMIT_WAIT {transmit_wait:?})"
    );
    println!("udp shared: observation ended {took:?} after the kill: {end}");
}

/// The reverse: `coapws get --observe` processes observe a resource of a server in this
/// process (a notification every 200 ms) and are SIGKILLed. Over WebSocket and TCP the
/// server's observer count drops (and the connection leaves its count) within [`PROMPT`];
/// over UDP, within the next Confirmable notification (every 2nd here) plus its
/// retransmissions (MAX_TRANSMIT_WAIT).
#[test]
fn a_killed_observer_process_leaves_the_observer_count_over_ws_tcp_and_udp() {
    let rt = runtime();
    let tmp = TempDir::new("observer-kill");
    let _enter = rt.enter();
    let period = Duration::from_millis(200);
    let config = EndpointConfig {
        udp: quick_udp(100, 2),
        observe_con_every: 2,
        ..EndpointConfig::default()
    };
    let transmit_wait = config.udp.max_transmit_wait();
    let (server, _remotes) = holding_server(config, period);
    let (ws, tcp, udp) = rt.block_on(async {
        let any = "127.0.0.1:0".parse().unwrap();
        (
            server.listen_ws(any).await.unwrap(),
            server.listen_tcp(any).await.unwrap(),
            server.listen_udp(any).await.unwrap(),
        )
    });
    let observe = |uri: String| {
        let log = tmp
            .path()
            .join(format!("observe-{}.log", uri.split(':').next().unwrap()));
        let mut cmd = Command::new(coapws_bin());
        cmd.args(["-v", "get", "--observe", &uri])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
        ChildGuard::spawn(&mut cmd, &format!("coapws get --observe {uri}"), Some(log))
    };
    for uri in [
        format!("coap+ws://{ws}/tick"),
        format!("coap+tcp://{tcp}/tick"),
    ] {
        let mut observer = observe(uri.clone());
        wait_until(Duration::from_secs(10), "the observer registering", || {
            server.observer_count() == 1 && server.connection_count() == 1
        });
        sigkill(&mut observer);
        let took = wait_until(PROMPT, &format!("{uri}: observer count 0"), || {
            server.observer_count() == 0
        });
        wait_until(PROMPT, &format!("{uri}: connection count 0"), || {
            server.connection_count() == 0
        });
        println!("{uri}: observer gone {took:?} after the kill");
    }
    let uri = format!("coap://{udp}/tick");
    let mut observer = observe(uri.clone());
    wait_until(
        Duration::from_secs(10),
        "the UDP observer registering",
        || server.observer_count() == 1,
    );
    sigkill(&mut observer);
    let bound = period * 2 + transmit_wait + SLACK;
    let took = wait_until(bound, &format!("{uri}: observer count 0"), || {
        server.observer_count() == 0
    });
    println!("{uri}: observer gone {took:?} after the kill (bound {bound:?})");
}

// ---------------------------------------------------------------------------------------------
// c. A server restarted while clients hold connections
// ---------------------------------------------------------------------------------------------

/// `coapws serve` (the demo site) on exactly these listeners; retried for a few seconds when
/// it cannot bind yet (the ports of the process before it).
fn serve_again(dir: &Path, ws: &str, tcp: &str, udp: &str) -> ChildGuard {
    let args = ["--ws", ws, "--tcp", tcp, "--udp", udp];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match try_coapws_serve(dir, &args, 3, READY_TIMEOUT) {
            Ok((guard, _)) => return guard,
            Err(e) if Instant::now() < deadline => {
                eprintln!("restart failed, retrying: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("cannot restart on the same ports: {e}"),
        }
    }
}

/// A client holds pooled connections (WebSocket, TCP) and a UDP socket to `coapws serve`; the
/// server is restarted on the same ports, first gracefully (SIGTERM: Release, RFC 8323 §5.5),
/// then by SIGKILL. After each restart the first request either succeeds (the pool saw the
/// connection end) or fails with a connection error, within 5 s either way; the next one
/// succeeds over a new connection. Over UDP requests just work.
#[test]
fn a_restarted_server_is_reached_again_over_new_connections() {
    let rt = runtime();
    let tmp = TempDir::new("restart");
    let (mut server, l) = serve_demo(tmp.path());
    let authority = |scheme: &str| {
        l.url(scheme)
            .split_once("://")
            .map(|(_, a)| a.to_owned())
            .unwrap()
    };
    let (ws, tcp, udp) = (
        authority("coap+ws"),
        authority("coap+tcp"),
        authority("coap"),
    );
    let client = Endpoint::client();
    let uris: Vec<String> = ["coap+ws", "coap+tcp", "coap"]
        .iter()
        .map(|s| format!("{}/hello", l.url(s)))
        .collect();
    let get = |uri: &str| {
        let req = Request::get(uri).unwrap().timeout(Duration::from_secs(5));
        finish_within(&rt, Duration::from_secs(6), uri, client.send(req))
    };
    let mut locals: Vec<_> = uris
        .iter()
        .map(|u| {
            let r = get(u).0.unwrap_or_else(|e| panic!("{u}: {e}"));
            assert_eq!(r.code(), Code::CONTENT);
            r.remote.local_addr()
        })
        .collect();
    for how in ["TERM", "KILL"] {
        if how == "TERM" {
            signal(&server, "TERM");
            wait_until(Duration::from_secs(5), "exit after SIGTERM", || {
                server.exited().is_some()
            });
            let status = server.exited().unwrap();
            assert!(status.success(), "exit status after SIGTERM: {status}");
        } else {
            sigkill(&mut server);
        }
        server = serve_again(tmp.path(), &ws, &tcp, &udp);
        for (uri, local) in uris.iter().zip(locals.iter_mut()) {
            let (first, took) = get(uri);
            match &first {
                Ok(r) => assert_eq!(r.code(), Code::CONTENT, "{uri}"),
                Err(e) => assert!(
                    e.is_connection_closed() && !uri.starts_with("coap:"),
                    "SIG{how}, {uri}: the first request after the restart failed with {e:?}"
                ),
            }
            println!(
                "SIG{how}, {uri}: first request after the restart: {} in {took:?}",
                first
                    .as_ref()
                    .map_or_else(|e| e.to_string(), |r| r.code().to_string())
            );
            let (second, _) = get(uri);
            let second = second.unwrap_or_else(|e| panic!("SIG{how}, {uri}: {e}"));
            assert_eq!(second.code(), Code::CONTENT);
            let now = second.remote.local_addr();
            if uri.starts_with("coap:") {
                assert_eq!(now, *local, "UDP: the same client socket");
            } else {
                assert_ne!(now, *local, "SIG{how}, {uri}: not a new connection");
            }
            *local = now;
        }
        assert_eq!(
            client.connection_count(),
            2,
            "SIG{how}: one connection each for ws and tcp"
        );
    }
}
