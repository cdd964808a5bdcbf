//! The README's usage section, run exactly as written: every `serve` line starts (and is
//! stopped again), and every client line succeeds against the server of the last `serve` line,
//! in a folder holding the files the lines name. So the README cannot drift from the binary.
//! The lines use the default ports (8683, 8684, 5683, 5684), as a reader would.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The command lines of the README's "Using it" block, comments cut off.
fn usage_lines() -> Vec<String> {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let start = readme.find("## Using it").expect("a usage section");
    let mut lines = Vec::new();
    let mut in_block = false;
    for line in readme[start..].lines().skip(1) {
        if let Some(cmd) = line.strip_prefix("    ") {
            in_block = true;
            let cmd = match cmd.find(" # ").or_else(|| cmd.find("  #")) {
                Some(i) => &cmd[..i],
                None => cmd,
            };
            lines.push(cmd.trim().to_owned());
        } else if in_block && !line.trim().is_empty() {
            break;
        }
    }
    assert!(lines.len() >= 10, "the usage block: {lines:?}");
    lines
}

/// PATH with the coapws under test first.
fn path_env() -> String {
    let bin_dir = Path::new(coapws_bin()).parent().unwrap().to_owned();
    format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// `sh -c LINE` in `dir`, with the coapws under test first on PATH.
fn shell(dir: &Path, line: &str) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(line)
        .current_dir(dir)
        .env("PATH", path_env());
    cmd
}

/// Starts a `serve` line and waits until it announced `expect` listeners.
fn start_serve(dir: &Path, line: &str, expect: usize, n: usize) -> ChildGuard {
    let log = dir.join(format!("serve-{n}.log"));
    let f = std::fs::File::create(&log).unwrap();
    let mut cmd = shell(dir, &format!("exec {line}"));
    cmd.stdout(f.try_clone().unwrap()).stderr(f);
    let mut guard = ChildGuard::spawn(&mut cmd, line, Some(log));
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let text = guard.log_text();
        if text.matches("listening on ").count() >= expect {
            return guard;
        }
        assert!(guard.exited().is_none(), "`{line}` exited:\n{text}");
        assert!(Instant::now() < deadline, "`{line}` not listening:\n{text}");
        std::thread::sleep(Duration::from_millis(30));
    }
}

#[test]
fn every_usage_line_of_the_readme_runs_as_written() {
    let tmp = TempDir::new("readme");
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::write(dir.join("notes.txt"), "buy milk\n").unwrap();
    std::fs::write(dir.join("photo.jpg"), printable(20_000, 9)).unwrap();
    let (ca, crt, key) = write_pki(dir);
    std::fs::rename(ca, dir.join("my-ca.pem")).unwrap();
    std::fs::rename(crt, dir.join("crt.pem")).unwrap();
    std::fs::rename(key, dir.join("key.pem")).unwrap();

    let lines = usage_lines();
    let (serves, clients): (Vec<&String>, Vec<&String>) = lines
        .iter()
        .partition(|l| l.starts_with("coapws serve") || l.starts_with("coapws proxy"));
    assert!(serves.len() >= 2 && clients.len() >= 8, "{lines:?}");

    // Each serve line comes up; all but the last are stopped again.
    let mut server = None;
    for (n, line) in serves.iter().enumerate() {
        let last = n + 1 == serves.len();
        // The last (TLS) one opens all five default listeners; the others at least one.
        let guard = start_serve(dir, line, if last { 5 } else { 1 }, n);
        if last {
            server = Some(guard);
        }
    }
    let server = server.unwrap();

    for line in clients {
        let o = if line.contains("--observe") {
            // Until Ctrl-C: three seconds of it, then SIGINT, and it must exit 0.
            let mut cmd = Command::new("timeout");
            cmd.args(["--preserve-status", "-s", "INT", "3.5", "sh", "-c"])
                .arg(format!("exec {line}"))
                .current_dir(dir)
                .env("PATH", path_env());
            run(cmd, COMMAND_TIMEOUT)
        } else {
            run(shell(dir, line), COMMAND_TIMEOUT)
        };
        assert!(
            o.status.success(),
            "README line `{line}`\n{}\n--- server ---\n{}",
            describe(&o),
            server.log_text()
        );
        if line.contains("--observe") {
            assert!(
                stdout(&o).lines().count() >= 2,
                "`{line}`: {}",
                describe(&o)
            );
        }
        if line.ends_with("/hello") {
            assert_eq!(stdout(&o), HELLO, "`{line}`");
        }
        if line.ends_with("| coapws shell") {
            // Both lines' answers, one after the other.
            assert_eq!(stdout(&o), format!("{HELLO}hi"), "`{line}`");
        }
        if line.ends_with("/rd-lookup/ep") {
            // Nobody registered: an empty list, as link-format.
            assert_eq!(stdout(&o).trim(), "", "`{line}`");
        }
    }
    // What the lines leave behind is what they promise.
    assert_eq!(
        std::fs::read_to_string(dir.join("hello.txt")).unwrap(),
        HELLO
    );
    assert!(
        std::fs::read_to_string(dir.join("coapws.bash"))
            .unwrap()
            .contains("coapws")
    );
    assert!(
        std::fs::read_to_string(dir.join("coapws.1"))
            .unwrap()
            .contains(".TH coapws 1")
    );
    let o = coapws_client("get", &["coap+ws://localhost:8683/notes"]);
    assert!(
        o.stdout == printable(20_000, 9),
        "the last PUT to /notes is what /notes holds"
    );
}
