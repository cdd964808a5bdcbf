//! Interop of the Resource Directory (`coapws serve --rd-proxy-domain`, RFC 9176) with aiocoap
//! 0.4.17's own registration client over CoAP over WebSockets: aiocoap discovers `/rd`,
//! registers a site of its own and stays connected; `coapws get` finds it in both lookups,
//! with a base under the proxy domain; a second client (`coapws get`, and aiocoap-client)
//! reaches aiocoap's `/sensor` through our server over aiocoap's own WebSocket, by Uri-Host and
//! as a forward-proxy target; killing aiocoap ends the registration, and the next request for
//! it is answered with an error at once. aiocoap lives in
//! `target/peers/venv`, installed by `scripts/install-peers.sh`; when it is missing these tests
//! fail (they never skip).

mod common;

use coapws::proto::link_format::{self, Link};
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// `coapws serve --rd-proxy-domain proxy.example --ws 127.0.0.1:0`: the guard and its
/// `coap+ws://127.0.0.1:PORT`.
fn rd_server(dir: &Path) -> (ChildGuard, String) {
    coapws_serve_one(
        dir,
        &["--rd-proxy-domain", "proxy.example"],
        "--ws",
        "coap+ws",
    )
}

/// aiocoap registering as `ep` with the RD at `rd`, once it says it is registered.
fn aiocoap_endpoint(dir: &Path, rd: &str, ep: &str) -> ChildGuard {
    let mut cmd = python("rd_register.py");
    cmd.arg(rd).arg(ep);
    let (guard, ()) = start_announcing(cmd, "aiocoap-rd-endpoint", dir, |line| {
        (line.trim() == "registered").then_some(())
    });
    guard
}

/// `coapws get URI`, which must succeed; the links of its link-format answer (one per line on
/// a terminal, comma-separated otherwise: both parse once lines are joined with commas).
fn lookup(uri: &str) -> Vec<Link> {
    let o = coapws_client("get", &[uri]);
    assert!(o.status.success(), "coapws get {uri}\n{}", describe(&o));
    let text: Vec<String> = stdout(&o)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    link_format::parse(&text.join(","))
        .unwrap_or_else(|e| panic!("link-format from {uri}: {e}\n{}", describe(&o)))
}

#[test]
fn aiocoap_registers_over_websocket_and_is_looked_up() {
    let tmp = TempDir::new("rd-aiocoap");
    let (_server, base) = rd_server(tmp.path());
    let _endpoint = aiocoap_endpoint(tmp.path(), &base, "aiosensor");

    let eps = lookup(&format!("{base}/rd-lookup/ep"));
    assert_eq!(eps.len(), 1, "{eps:?}");
    assert_eq!(eps[0].param("ep"), Some("aiosensor"));
    assert_eq!(
        eps[0].param("base"),
        Some("coap+ws://aiosensor.proxy.example")
    );
    assert_eq!(eps[0].param("rt"), Some("core.rd-ep"));
    assert!(eps[0].target.starts_with("/rd/"), "{}", eps[0].target);

    let res = lookup(&format!("{base}/rd-lookup/res?rt=temperature"));
    let targets: Vec<_> = res.iter().map(|l| l.target.as_str()).collect();
    assert_eq!(
        targets,
        ["coap+ws://aiosensor.proxy.example/sensor"],
        "{res:?}"
    );
    let by_ep = lookup(&format!("{base}/rd-lookup/res?ep=aiosensor"));
    assert!(
        by_ep
            .iter()
            .any(|l| l.target == "coap+ws://aiosensor.proxy.example/sensor"),
        "{by_ep:?}"
    );
    // The registration resource holds the links aiocoap sent, relative as it sent them.
    let own = lookup(&format!("{base}{}", eps[0].target));
    assert!(own.iter().any(|l| l.target == "/sensor"), "{own:?}");
}

#[test]
fn a_second_client_reaches_the_aiocoap_endpoint_through_the_server_by_both_forms() {
    let tmp = TempDir::new("rd-aiocoap-reach");
    let (_server, base) = rd_server(tmp.path());
    let _endpoint = aiocoap_endpoint(tmp.path(), &base, "aiosensor");
    // By Uri-Host: the request goes to our server, naming the device.
    let o = coapws_client(
        "get",
        &[
            &format!("{base}/sensor"),
            "--option",
            "3=aiosensor.proxy.example",
        ],
    );
    assert_ok_payload(&o, b"21.5", "by Uri-Host");
    // As a forward-proxy target, with coapws and with aiocoap-client.
    let target = "coap://aiosensor.proxy.example/sensor";
    let o = coapws_client("get", &["--proxy", &base, target]);
    assert_ok_payload(&o, b"21.5", "coapws get --proxy");
    let o = coapws_client("get", &["--proxy", &base, "--proxy-uri", target]);
    assert_ok_payload(&o, b"21.5", "coapws get --proxy --proxy-uri");
    let o = aiocoap_client(&["--proxy", &base, target]);
    assert_ok_payload(&o, b"21.5", "aiocoap-client --proxy");
    // Without --proxy the server forwards to its devices only.
    let o = coapws_client("get", &["--proxy", &base, &format!("{base}/rd-lookup/ep")]);
    assert_eq!(o.status.code(), Some(4), "{}", describe(&o));
    assert!(stderr(&o).contains("5.05"), "{}", describe(&o));
    // A name nobody registered: 4.04 at once.
    let o = coapws_client(
        "get",
        &["--proxy", &base, "coap://nobody.proxy.example/sensor"],
    );
    assert_eq!(o.status.code(), Some(3), "{}", describe(&o));
    assert!(stderr(&o).contains("4.04"), "{}", describe(&o));
}

#[test]
fn killing_the_aiocoap_endpoint_ends_its_registration() {
    let tmp = TempDir::new("rd-aiocoap-kill");
    let (_server, base) = rd_server(tmp.path());
    let mut endpoint = aiocoap_endpoint(tmp.path(), &base, "shortlived");
    let _other = aiocoap_endpoint(tmp.path(), &base, "survivor");
    assert_eq!(lookup(&format!("{base}/rd-lookup/ep")).len(), 2);

    endpoint.child.kill().expect("SIGKILL the aiocoap endpoint");
    endpoint.child.wait().expect("reap it");
    let killed = Instant::now();
    loop {
        let eps = lookup(&format!("{base}/rd-lookup/ep"));
        let names: Vec<_> = eps.iter().filter_map(|l| l.param("ep")).collect();
        if names == ["survivor"] {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(2),
            "still listed 2 s after the kill: {names:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Requests for it fail at once (4.04), by both forms; the survivor is still reached.
    let o = coapws_client(
        "get",
        &["--proxy", &base, "coap://shortlived.proxy.example/sensor"],
    );
    assert_eq!(o.status.code(), Some(3), "{}", describe(&o));
    let o = coapws_client(
        "get",
        &[
            &format!("{base}/sensor"),
            "--option",
            "3=shortlived.proxy.example",
        ],
    );
    assert_eq!(o.status.code(), Some(3), "{}", describe(&o));
    assert!(
        killed.elapsed() < Duration::from_secs(2),
        "answered {:?} after the kill",
        killed.elapsed()
    );
    let o = coapws_client(
        "get",
        &["--proxy", &base, "coap://survivor.proxy.example/sensor"],
    );
    assert_ok_payload(&o, b"21.5", "the other endpoint");
}
