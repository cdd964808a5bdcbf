//! ws-echo: pick coapws's WebSocket crate by measurement.
//!
//!   ws-echo bench [--crates a,b] [--conns 1,50] [--sizes 16,1024] [--duration 2.5]
//!                 [--warmup 0.5] [--repeat 3] [--server-threads 1] [--client-threads 1]
//!   ws-echo check [--crates a,b]          handshake / close-code / fragmentation matrix
//!   ws-echo idle  [--crates a,b] [--n 2000]   server RSS per idle connection
//!
//! Crates: tungstenite (tokio-tungstenite accept_hdr_async), tungstenite-hyper
//! (hyper 1 upgrade + tokio-tungstenite from_raw_socket), fastwebsockets (hyper 1
//! upgrade), yawc (hyper 1 upgrade), soketto.

mod client;
mod servers;

use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

struct Args {
    map: HashMap<String, String>,
    pos: Vec<String>,
}

impl Args {
    fn parse() -> Args {
        let mut map = HashMap::new();
        let mut pos = Vec::new();
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            if let Some(k) = a.strip_prefix("--") {
                map.insert(k.to_string(), it.next().expect("flag needs a value"));
            } else {
                pos.push(a);
            }
        }
        Args { map, pos }
    }
    fn get(&self, k: &str, d: &str) -> String {
        self.map.get(k).cloned().unwrap_or_else(|| d.to_string())
    }
    fn list<T: std::str::FromStr>(&self, k: &str, d: &str) -> Vec<T>
    where
        T::Err: std::fmt::Debug,
    {
        self.get(k, d).split(',').map(|x| x.trim().parse().unwrap()).collect()
    }
}

fn rt(threads: usize, name: &str) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .unwrap()
}

fn main() {
    let args = Args::parse();
    let cmd = args.pos.first().map(String::as_str).unwrap_or("bench");
    let crates: Vec<String> = args.list("crates", &servers::ALL.join(","));
    match cmd {
        "bench" => bench(&args, &crates),
        "check" => check(&crates),
        "idle" => idle(&args, &crates),
        "idle-one" => idle_one(&args.pos[1], args.pos[2].parse().unwrap()),
        "idle-client" => idle_client(args.pos[1].parse().unwrap(), args.pos[2].parse().unwrap()),
        other => {
            eprintln!("unknown subcommand {other}; use bench | check | idle");
            std::process::exit(2);
        }
    }
}

// ---------------------------------------------------------------- bench

struct Run {
    msgs_per_s: f64,
    p50_us: f64,
    p99_us: f64,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

async fn load(addr: SocketAddr, conns: usize, size: usize, warmup: Duration, dur: Duration) -> Run {
    let mut socks = Vec::with_capacity(conns);
    for _ in 0..conns {
        socks.push(client::connect(addr).await.expect("connect"));
    }
    let start = Instant::now();
    let measure_from = start + warmup;
    let until = measure_from + dur;
    let tasks: Vec<_> = socks
        .into_iter()
        .map(|s| tokio::spawn(client::pingpong(s, size, measure_from, until)))
        .collect();
    let mut all: Vec<u32> = Vec::new();
    for t in tasks {
        let r = t.await.unwrap().expect("pingpong");
        all.extend_from_slice(&r.rtts_ns);
    }
    all.sort_unstable();
    let pct = |p: f64| {
        if all.is_empty() {
            return f64::NAN;
        }
        let i = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1;
        all[i] as f64 / 1000.0
    };
    Run { msgs_per_s: all.len() as f64 / dur.as_secs_f64(), p50_us: pct(0.50), p99_us: pct(0.99) }
}

fn bench(args: &Args, crates: &[String]) {
    let conns: Vec<usize> = args.list("conns", "1,50");
    let sizes: Vec<usize> = args.list("sizes", "16,1024");
    let dur = Duration::from_secs_f64(args.get("duration", "2.5").parse().unwrap());
    let warmup = Duration::from_secs_f64(args.get("warmup", "0.5").parse().unwrap());
    let repeat: usize = args.get("repeat", "3").parse().unwrap();
    let st: usize = args.get("server-threads", "1").parse().unwrap();
    let ct: usize = args.get("client-threads", "1").parse().unwrap();
    assert!(warmup + dur <= Duration::from_secs(5), "each run must be <= 5 s");

    // split: server and client on separate runtimes (1 worker each by default);
    // single: both on ONE current_thread runtime, so RTT = pure CPU cost of
    // client + server + loopback syscalls, with no cross-thread wake-ups.
    let mode = args.get("mode", "split");
    let (srv, cli) = match mode.as_str() {
        "split" => (rt(st, "srv"), rt(ct, "cli")),
        "single" => {
            let one = || tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            (one(), one()) // only the first is used in single mode
        }
        m => panic!("unknown mode {m}"),
    };
    let single = mode == "single";
    let mut results: HashMap<(String, usize, usize), Vec<Run>> = HashMap::new();
    let nproc = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    eprintln!(
        "# nproc={nproc} server-threads={st} client-threads={ct} warmup={:?} duration={:?} repeat={repeat}",
        warmup, dur
    );
    for rep in 0..repeat {
        for &c in &conns {
            for &s in &sizes {
                // rotate the crate order every repetition to spread drift/noise
                for i in 0..crates.len() {
                    let k = &crates[(i + rep) % crates.len()];
                    let r = if single {
                        srv.block_on(async {
                            let (addr, accept) = servers::start(k).await;
                            let r = load(addr, c, s, warmup, dur).await;
                            accept.abort();
                            r
                        })
                    } else {
                        let (addr, accept) = srv.block_on(servers::start(k));
                        let r = cli.block_on(load(addr, c, s, warmup, dur));
                        accept.abort();
                        r
                    };
                    eprintln!(
                        "rep {rep} {k:<18} conns={c:<3} size={s:<5} {:>9.0} msg/s  p50 {:>7.1} us  p99 {:>7.1} us",
                        r.msgs_per_s, r.p50_us, r.p99_us
                    );
                    results.entry((k.clone(), c, s)).or_default().push(r);
                    std::thread::sleep(Duration::from_millis(150));
                }
            }
        }
    }
    println!(
        "\nmode={mode}; median of {repeat} runs; {:.1} s measured per run after {:.1} s warm-up; nproc={nproc}; {}\n",
        dur.as_secs_f64(),
        warmup.as_secs_f64(),
        if single {
            "client+server on one current_thread runtime".to_string()
        } else {
            format!("server runtime {st} worker(s), client runtime {ct} worker(s)")
        }
    );
    println!("| crate | conns | size B | msg/s (median) | p50 RTT us | p99 RTT us | msg/s of each run |");
    println!("|---|---:|---:|---:|---:|---:|---|");
    for &c in &conns {
        for &s in &sizes {
            for k in crates {
                let v = &results[&(k.clone(), c, s)];
                let mut m: Vec<f64> = v.iter().map(|r| r.msgs_per_s).collect();
                let each = m.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(", ");
                let mut p50: Vec<f64> = v.iter().map(|r| r.p50_us).collect();
                let mut p99: Vec<f64> = v.iter().map(|r| r.p99_us).collect();
                println!(
                    "| {k} | {c} | {s} | {:.0} | {:.1} | {:.1} | {each} |",
                    median(&mut m),
                    median(&mut p50),
                    median(&mut p99)
                );
            }
        }
    }
}

// ---------------------------------------------------------------- check

async fn status_of(addr: SocketAddr, path: &str, extra: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    match tokio::time::timeout(
        Duration::from_secs(2),
        client::handshake(&mut s, &client::request(addr, path, extra)),
    )
    .await
    {
        Ok(Ok((st, _, _))) => st.to_string(),
        Ok(Err(_)) => "no response (closed)".into(),
        Err(_) => "timeout".into(),
    }
}

/// Sends `frames` on a fresh good connection and describes the first reply frame.
async fn reply_to(addr: SocketAddr, frames: Vec<Vec<u8>>) -> String {
    use tokio::io::AsyncWriteExt;
    let mut s = client::connect(addr).await.unwrap();
    for f in &frames {
        if s.write_all(f).await.is_err() {
            break;
        }
    }
    match tokio::time::timeout(Duration::from_secs(2), client::read_frame(&mut s)).await {
        Err(_) => "timeout".into(),
        Ok(Err(_)) => "EOF, no close frame".into(),
        Ok(Ok((_, 0x8, p))) if p.len() >= 2 => format!("close {}", u16::from_be_bytes([p[0], p[1]])),
        Ok(Ok((_, 0x8, _))) => "close (no code)".into(),
        Ok(Ok((fin, 0x2, p))) => format!("binary {} B{}", p.len(), if fin { "" } else { " (FIN=0!)" }),
        Ok(Ok((_, 0xA, p))) => format!("pong {} B", p.len()),
        Ok(Ok((_, op, p))) => format!("opcode {op} {} B", p.len()),
    }
}

fn check(crates: &[String]) {
    let srv = rt(1, "srv");
    let cli = rt(1, "cli");
    let v13 = "Sec-WebSocket-Version: 13\r\n";
    let rows: Vec<(&str, Box<dyn Fn(SocketAddr) -> std::pin::Pin<Box<dyn Future<Output = String>>>>)> = vec![
        ("good upgrade (expect 101)", Box::new(|a| Box::pin(status_of(a, servers::PATH, client::GOOD_EXTRA)))),
        ("wrong path (expect 404)", Box::new(|a| Box::pin(status_of(a, "/nope", client::GOOD_EXTRA)))),
        (
            "no Sec-WebSocket-Protocol (expect 400)",
            Box::new(move |a| Box::pin(status_of(a, servers::PATH, v13))),
        ),
        (
            "Sec-WebSocket-Version: 8 (expect 426)",
            Box::new(|a| {
                Box::pin(status_of(a, servers::PATH, "Sec-WebSocket-Version: 8\r\nSec-WebSocket-Protocol: coap\r\n"))
            }),
        ),
        (
            "text frame (expect close 1003)",
            Box::new(|a| Box::pin(reply_to(a, vec![client::masked_frame(0x1, true, b"hi")]))),
        ),
        (
            "invalid UTF-8 text (expect close 1007)",
            Box::new(|a| Box::pin(reply_to(a, vec![client::masked_frame(0x1, true, &[0xff, 0xfe, 0x41])]))),
        ),
        (
            "binary in 3 fragments (expect binary 9 B)",
            Box::new(|a| {
                Box::pin(reply_to(
                    a,
                    vec![
                        client::masked_frame(0x2, false, b"abc"),
                        client::masked_frame(0x0, false, b"def"),
                        client::masked_frame(0x0, true, b"ghi"),
                    ],
                ))
            }),
        ),
        (
            "70000 B message > 64 KiB limit (expect close 1009)",
            Box::new(|a| Box::pin(reply_to(a, vec![client::masked_frame(0x2, true, &vec![1u8; 70000])]))),
        ),
        (
            "2x 40000 B fragments > limit (expect close 1009)",
            Box::new(|a| {
                Box::pin(reply_to(
                    a,
                    vec![client::masked_frame(0x2, false, &vec![1u8; 40000]), client::masked_frame(0x0, true, &vec![1u8; 40000])],
                ))
            }),
        ),
        ("ping (expect pong)", Box::new(|a| Box::pin(reply_to(a, vec![client::masked_frame(0x9, true, b"p")])))),
    ];
    let mut table: Vec<Vec<String>> = Vec::new();
    for k in crates {
        let (addr, accept) = srv.block_on(servers::start(k));
        let mut col = Vec::new();
        for (_, f) in &rows {
            col.push(cli.block_on(f(addr)));
        }
        accept.abort();
        table.push(col);
    }
    print!("| check |");
    for k in crates {
        print!(" {k} |");
    }
    println!();
    println!("|---|{}", "---|".repeat(crates.len()));
    for (i, (name, _)) in rows.iter().enumerate() {
        print!("| {name} |");
        for col in &table {
            print!(" {} |", col[i]);
        }
        println!();
    }
}

// ---------------------------------------------------------------- idle memory

fn rss_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn idle(args: &Args, crates: &[String]) {
    let n: usize = args.get("n", "2000").parse().unwrap();
    let exe = std::env::current_exe().unwrap();
    println!("| crate | idle conns | server RSS delta KiB | KiB per conn |");
    println!("|---|---:|---:|---:|");
    for k in crates {
        let out = std::process::Command::new(&exe).args(["idle-one", k, &n.to_string()]).output().unwrap();
        print!("{}", String::from_utf8_lossy(&out.stdout));
        std::io::stderr().write_all(&out.stderr).unwrap();
    }
}

/// Runs in its own process so earlier runs do not pollute the heap.
fn idle_one(kind: &str, n: usize) {
    let srv = rt(1, "srv");
    let (addr, _accept) = srv.block_on(servers::start(kind));
    // one warm connection so lazily initialised runtime/hyper state is not counted
    {
        let exe = std::env::current_exe().unwrap();
        let mut c = std::process::Command::new(&exe)
            .args(["idle-client", &addr.to_string(), "1"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(c.stdout.take().unwrap()).read_line(&mut line).unwrap();
        drop(c.stdin.take());
        c.wait().unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_kb();
    let exe = std::env::current_exe().unwrap();
    let mut c = std::process::Command::new(&exe)
        .args(["idle-client", &addr.to_string(), &n.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(c.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "idle client failed");
    std::thread::sleep(Duration::from_millis(700));
    let after = rss_kb();
    drop(c.stdin.take());
    c.wait().unwrap();
    let d = after.saturating_sub(before);
    println!("| {kind} | {n} | {d} | {:.1} |", d as f64 / n as f64);
}

fn idle_client(addr: SocketAddr, n: usize) {
    let r = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let socks = r.block_on(async {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(client::connect(addr).await.expect("idle connect"));
        }
        v
    });
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(socks);
}
