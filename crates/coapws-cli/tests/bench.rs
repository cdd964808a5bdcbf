//! `coapws bench` against real servers: its JSON over WebSocket, TCP and UDP (counts,
//! ordered percentiles, no errors) with both engines and against libcoap and aiocoap, the open
//! loop reaching its rate, UDP keeping the requested number in flight (the load generator's
//! NSTART), the idle mode holding connections the server counts, errors counted by kind with a
//! failing exit status, and a server that stops answering giving timeouts, not a hang.

mod common;

use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

/// `coapws bench ARGS --json`: its exit status and the JSON object it printed.
fn bench_json(args: &[&str]) -> (std::process::Output, Value) {
    let mut all = vec!["bench"];
    all.extend(args);
    all.push("--json");
    let o = coapws(&all);
    let out = stdout(&o);
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| {
        panic!(
            "bench --json printed no JSON object ({e}): {}",
            describe(&o)
        )
    });
    (o, v)
}

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no number {key} in {v}"))
}

/// The latency percentiles are there, positive and in order.
fn assert_percentiles_ordered(v: &Value) {
    let l = &v["latency_us"];
    let values: Vec<f64> = ["p50", "p90", "p99", "p99_9", "max"]
        .iter()
        .map(|k| l[k].as_f64().unwrap_or_else(|| panic!("no {k} in {v}")))
        .collect();
    assert!(values[0] > 0.0, "p50 of zero: {v}");
    assert!(
        values.windows(2).all(|w| w[0] <= w[1]),
        "percentiles out of order: {v}"
    );
}

#[test]
fn bench_json_over_ws_tcp_and_udp() {
    let tmp = TempDir::new("bench-json");
    let (_server, s) = coapws_serve(
        tmp.path(),
        &[
            "--ws",
            "127.0.0.1:0",
            "--tcp",
            "127.0.0.1:0",
            "--udp",
            "127.0.0.1:0",
        ],
        3,
    );
    for engine in ["auto", "wire", "library"] {
        for scheme in ["coap+ws", "coap+tcp", "coap"] {
            let url = format!("{}/hello", s.url(scheme));
            let (o, v) = bench_json(&[
                &url,
                "-c",
                "2",
                "--in-flight",
                "4",
                "-d",
                "1",
                "--warmup",
                "0.2",
                "--engine",
                engine,
            ]);
            let what = format!("{scheme} with engine {engine}");
            assert!(o.status.success(), "{what}: {}", describe(&o));
            assert!(num(&v, "requests") > 0.0, "{what}: {v}");
            assert_eq!(num(&v, "errors"), 0.0, "{what}: {v}");
            assert_eq!(v["mode"], "closed", "{v}");
            // auto picks the wire engine for the plain schemes.
            let expected = if engine == "library" {
                "library"
            } else {
                "wire"
            };
            assert_eq!(v["engine"], expected, "{what}: {v}");
            assert_eq!(num(&v, "in_flight"), 4.0, "{v}");
            assert!(num(&v, "rate") > 0.0, "{what}: {v}");
            assert!(num(&v, "client_cpu_us_per_req") > 0.0, "{what}: {v}");
            assert_percentiles_ordered(&v);
        }
    }
    // Payloads beyond one block go through the library (block-wise); the wire engine refuses.
    let url = format!("{}/echo", s.url("coap+tcp"));
    let big = "x".repeat(3000);
    let (o, v) = bench_json(&[&url, "--payload", &big, "-d", "0.3", "--warmup", "0"]);
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(v["engine"], "library", "{v}");
    let o = coapws(&["bench", &url, "--payload", &big, "--engine", "wire"]);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(
        stderr(&o).contains("use --engine library"),
        "{}",
        describe(&o)
    );
    // -n and --concurrency still name --in-flight.
    let url = format!("{}/hello", s.url("coap+tcp"));
    let (o, v) = bench_json(&[&url, "-n", "3", "-d", "0.3", "--warmup", "0"]);
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(num(&v, "in_flight"), 3.0, "{v}");
    let (_, v) = bench_json(&[&url, "--concurrency", "2", "-d", "0.3", "--warmup", "0"]);
    assert_eq!(num(&v, "in_flight"), 2.0, "{v}");
}

/// A UDP server whose one resource answers after 50 ms: a closed loop with D in flight gets
/// about D / 50 ms answers a second only if the load generator's NSTART lets D be outstanding
/// (with RFC 7252's default NSTART of 1 it would be 20 a second).
#[test]
fn udp_keeps_the_requested_number_in_flight() {
    use coapws::proto::{Code, Message};
    use coapws::{Endpoint, IncomingRequest, Resource, Site};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let slow = Resource::new().get(|_r: IncomingRequest| async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Message::response(Code::CONTENT, "slow")
    });
    let server = Endpoint::builder()
        .site(Site::new().resource("/slow", slow))
        .build();
    let addr = rt
        .block_on(server.listen_udp("127.0.0.1:0".parse().unwrap()))
        .unwrap();
    let url = format!("coap://{addr}/slow");
    for engine in ["wire", "library"] {
        let (o, v) = bench_json(&[
            &url,
            "--in-flight",
            "8",
            "-d",
            "1.5",
            "--warmup",
            "0.2",
            "--engine",
            engine,
        ]);
        assert!(o.status.success(), "{engine}: {}", describe(&o));
        assert_eq!(num(&v, "errors"), 0.0, "{engine}: {v}");
        // 8 in flight: 160 a second at most; well above the 20 of NSTART = 1.
        let rate = num(&v, "rate");
        assert!(
            rate > 80.0 && rate <= 170.0,
            "{engine}: rate {rate} with 8 in flight: {v}"
        );
        let p50 = v["latency_us"]["p50"].as_f64().unwrap();
        assert!(p50 >= 50_000.0, "{engine}: answers come after 50 ms: {v}");
    }
    drop(rt);
}

#[test]
fn open_loop_reaches_its_rate() {
    let tmp = TempDir::new("bench-rate");
    let (_server, url) = coapws_serve_one(tmp.path(), &[], "--ws", "coap+ws");
    let url = format!("{url}/hello");
    let (o, v) = bench_json(&[
        &url, "-c", "2", "--rate", "2000", "-d", "1.5", "--warmup", "0.3",
    ]);
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(v["mode"], "open", "{v}");
    assert_eq!(num(&v, "target_rate"), 2000.0, "{v}");
    assert_eq!(num(&v, "errors"), 0.0, "{v}");
    let rate = num(&v, "rate");
    // The schedule sends exactly 2000 a second; the answers of the last ones may come late.
    assert!((1800.0..=2050.0).contains(&rate), "rate {rate}: {v}");
    assert!(v["behind"].as_u64().is_some(), "{v}");
    assert!(
        v["service_latency_us"]["p50"].as_f64().unwrap() > 0.0,
        "{v}"
    );
    assert_percentiles_ordered(&v);
}

/// The server's own count of its connections, from its metrics (`coapws_connections`).
fn server_connections(metrics: &str) -> u64 {
    let addr = metrics
        .trim_start_matches("http://")
        .trim_end_matches("/metrics");
    let mut s = std::net::TcpStream::connect(addr).expect("connect to metrics");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read metrics");
    text.lines()
        .filter(|l| l.starts_with("coapws_connections{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[test]
fn idle_mode_holds_connections_the_server_counts() {
    let tmp = TempDir::new("bench-idle");
    let mut cmd = Command::new(coapws_bin());
    cmd.args(["serve", "--ws", "127.0.0.1:0", "--metrics", "127.0.0.1:0"]);
    let mut ws = None;
    let (_server, (ws, metrics)) = start_announcing(cmd, "serve", tmp.path(), move |line| {
        if let Some(l) = line.strip_prefix("listening on ") {
            ws = Some(l.trim().to_owned());
        }
        let m = line.strip_prefix("metrics on ")?;
        Some((ws.take()?, m.trim().to_owned()))
    });
    assert_eq!(server_connections(&metrics), 0);
    let mut cmd = Command::new(coapws_bin());
    cmd.args(["bench", &format!("{ws}/hello"), "--idle", "50", "-d", "3"]);
    let (mut idle, up) = start_announcing(cmd, "bench-idle", tmp.path(), |line| {
        line.starts_with("idle: ").then(|| line.to_owned())
    });
    assert!(
        up.starts_with("idle: 50 of 50 connections up (0 failed)"),
        "{up}"
    );
    assert_eq!(server_connections(&metrics), 50, "the server holds them");
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = idle.exited() {
            break s;
        }
        assert!(Instant::now() < deadline, "bench --idle did not end");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "all 50 stayed up: {status:?}");
    // JSON, over TCP, with the count.
    let (_s2, tcp) = coapws_serve_one(tmp.path(), &[], "--tcp", "coap+tcp");
    let (o, v) = bench_json(&[&format!("{tcp}/hello"), "--idle", "20", "-d", "0.5"]);
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(v["mode"], "idle", "{v}");
    assert_eq!(num(&v, "up"), 20.0, "{v}");
    assert_eq!(num(&v, "still_up"), 20.0, "{v}");
    // UDP has no connections to hold.
    let o = coapws(&["bench", "coap://127.0.0.1:9/x", "--idle", "5"]);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(
        stderr(&o).contains("--idle holds connections"),
        "{}",
        describe(&o)
    );
}

#[test]
fn errors_are_counted_by_kind_and_fail_the_run() {
    let tmp = TempDir::new("bench-errors");
    let (_server, url) = coapws_serve_one(tmp.path(), &[], "--tcp", "coap+tcp");
    for engine in ["wire", "library"] {
        let (o, v) = bench_json(&[
            &format!("{url}/missing"),
            "-n",
            "2",
            "-d",
            "0.5",
            "--warmup",
            "0",
            "--engine",
            engine,
        ]);
        assert_eq!(o.status.code(), Some(1), "{engine}: {}", describe(&o));
        let errors = num(&v, "errors");
        assert!(errors > 0.0, "{engine}: {v}");
        assert_eq!(num(&v, "requests"), 0.0, "{engine}: {v}");
        assert_eq!(
            v["errors_by_kind"]["4.04 Not Found"].as_f64(),
            Some(errors),
            "{engine}: every error is a 4.04: {v}"
        );
        let first = v["first_error"].as_str().unwrap_or_default();
        assert!(first.contains("answered 4.04 Not Found"), "{engine}: {v}");
    }
    // In text: a line per kind and the first error in full.
    let o = coapws(&[
        "bench",
        &format!("{url}/missing"),
        "-d",
        "0.3",
        "--warmup",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let out = stdout(&o);
    assert!(out.contains("\nerror 4.04 Not Found: "), "{out}");
    assert!(out.contains("\nfirst error: "), "{out}");
    // Nothing listening: no run at all, and it says why.
    let o = coapws(&["bench", "coap+tcp://127.0.0.1:9/x", "-d", "0.3"]);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(
        stderr(&o).contains("the first request on connection 1 failed"),
        "{}",
        describe(&o)
    );
}

/// A server that answers the first request and then none: every exchange of the load times
/// out after --timeout (counted, exit status 1), and the run ends on time instead of waiting
/// for answers that never come. Over TCP and UDP, with both engines.
#[test]
fn a_server_that_stops_answering_gives_timeouts_not_a_hang() {
    use coapws::proto::{Code, Message};
    use coapws::{Endpoint, IncomingRequest, Resource, Site};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let answered_once = Arc::new(AtomicBool::new(false));
    let once = answered_once.clone();
    let resource = Resource::new().get(move |_r: IncomingRequest| {
        let first = !once.swap(true, Ordering::SeqCst);
        async move {
            if !first {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            Message::response(Code::CONTENT, "once")
        }
    });
    let server = Endpoint::builder()
        .site(Site::new().resource("/once", resource))
        .build();
    let tcp = rt
        .block_on(server.listen_tcp("127.0.0.1:0".parse().unwrap()))
        .unwrap();
    let udp = rt
        .block_on(server.listen_udp("127.0.0.1:0".parse().unwrap()))
        .unwrap();
    for engine in ["wire", "library"] {
        for url in [
            format!("coap+tcp://{tcp}/once"),
            format!("coap://{udp}/once"),
        ] {
            answered_once.store(false, Ordering::SeqCst);
            let started = Instant::now();
            let (o, v) = bench_json(&[
                &url,
                "-n",
                "3",
                "-d",
                "1",
                "--warmup",
                "0",
                "--timeout",
                "0.4",
                "--engine",
                engine,
            ]);
            let took = started.elapsed();
            let what = format!("{url} with engine {engine}");
            assert_eq!(o.status.code(), Some(1), "{what}: {}", describe(&o));
            assert_eq!(num(&v, "requests"), 0.0, "{what}: {v}");
            let timeouts = v["errors_by_kind"]["timeout"].as_f64().unwrap_or(0.0);
            // 3 in flight, each given up after 0.4 s and replaced, for 1 s: 6 to 9.
            assert!(
                (6.0..=12.0).contains(&timeouts),
                "{what}: {timeouts} timeouts: {v}"
            );
            assert_eq!(num(&v, "errors"), timeouts, "{what}: only timeouts: {v}");
            // The last ones sent just before the end time out 0.4 s after it; the library's
            // endpoint then releases its connection gracefully, which waits up to the release
            // timeout (5 s) for a server whose handlers never finish.
            assert!(took < Duration::from_secs(9), "{what}: took {took:?}");
        }
    }
    drop(rt);
}

/// The wire engine measures other servers too, every answer checked: libcoap over TCP and
/// UDP, aiocoap over WebSocket and TCP; and a resource they do not have counts as errors of
/// their code.
#[test]
fn the_wire_engine_loads_libcoap_and_aiocoap() {
    let tmp = TempDir::new("bench-peers");
    let (_libcoap, p) = libcoap_server(tmp.path(), "coap-server-notls", &[]);
    let root = tmp.subdir("files");
    std::fs::write(root.join("hello"), "Hello from the aiocoap file").unwrap();
    let (_aiocoap, a) = aiocoap_fileserver(tmp.path(), &root, false, &[]);
    let targets = [
        (format!("coap+tcp://127.0.0.1:{p}/"), "libcoap tcp"),
        (format!("coap://127.0.0.1:{p}/"), "libcoap udp"),
        (
            format!("coap+ws://127.0.0.1:{}/hello", a + 3000),
            "aiocoap ws",
        ),
        (format!("coap+tcp://127.0.0.1:{a}/hello"), "aiocoap tcp"),
    ];
    for (url, what) in &targets {
        let (o, v) = bench_json(&[url, "-c", "2", "-n", "4", "-d", "0.7", "--warmup", "0.1"]);
        assert!(o.status.success(), "{what}: {}", describe(&o));
        assert_eq!(v["engine"], "wire", "{what}: {v}");
        assert!(num(&v, "requests") > 20.0, "{what}: {v}");
        assert_eq!(num(&v, "errors"), 0.0, "{what}: {v}");
        assert_percentiles_ordered(&v);
    }
    let (o, v) = bench_json(&[
        &format!("coap+ws://127.0.0.1:{}/missing", a + 3000),
        "-d",
        "0.3",
        "--warmup",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(
        v["errors_by_kind"]["4.04 Not Found"]
            .as_f64()
            .unwrap_or(0.0)
            > 0.0,
        "{v}"
    );
}
