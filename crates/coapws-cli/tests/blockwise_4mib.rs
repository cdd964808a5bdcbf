//! 4 MiB GET and PUT with the `coapws` binary against `coapws serve ROOT --write`, over
//! coap+ws, coap+tcp and coap, as a user would run them: the bytes arrive equal to the source,
//! and over WebSocket and TCP BERT carries them in a handful of messages (counted from the
//! client's `-v` log of the requests it sent), far fewer than the 4096 1 KiB blocks UDP needs.

mod common;

use common::*;
use std::time::Duration;

const SIZE: usize = 4 << 20;

#[test]
fn four_mib_get_and_put_over_ws_tcp_and_udp() {
    let tmp = TempDir::new("4mib");
    let root = tmp.subdir("root");
    let body = printable(SIZE, 17);
    std::fs::write(root.join("big.bin"), &body).unwrap();
    let source = tmp.path().join("source.bin");
    std::fs::write(&source, &body).unwrap();
    let (_server, l) = coapws_serve(
        tmp.path(),
        &[
            s(&root),
            "--write",
            "--ws",
            "127.0.0.1:0",
            "--tcp",
            "127.0.0.1:0",
            "--udp",
            "127.0.0.1:0",
        ],
        3,
    );
    for (scheme, most) in [("coap+ws", 16), ("coap+tcp", 16), ("coap", 4097)] {
        let base = l.url(scheme);
        let mut cmd = std::process::Command::new(coapws_bin());
        cmd.args(["-v", "get", &format!("{base}/big.bin"), "--timeout", "60"]);
        let o = run(cmd, Duration::from_secs(120));
        assert!(o.status.success(), "{scheme} GET\n{}", describe(&o));
        assert!(
            o.stdout == body,
            "{scheme} GET: {} bytes, differing",
            o.stdout.len()
        );
        let sent = stderr(&o).matches("send request").count();
        assert!(sent >= 1 && sent <= most, "{scheme} GET: {sent} requests");

        let name = format!("up-{}.bin", scheme.replace('+', "-"));
        let mut cmd = std::process::Command::new(coapws_bin());
        cmd.args(["-v", "put", &format!("{base}/{name}"), "--payload"])
            .arg(format!("@{}", s(&source)))
            .args(["--timeout", "60"]);
        let o = run(cmd, Duration::from_secs(120));
        assert!(o.status.success(), "{scheme} PUT\n{}", describe(&o));
        let stored = std::fs::read(root.join(&name)).unwrap();
        assert!(
            stored == body,
            "{scheme} PUT: stored {} bytes, differing",
            stored.len()
        );
        let sent = stderr(&o).matches("send request").count();
        assert!(sent <= most, "{scheme} PUT: {sent} requests");
        if scheme == "coap" {
            assert!(sent >= 4096, "UDP has no BERT: {sent} requests");
        }
    }
}
