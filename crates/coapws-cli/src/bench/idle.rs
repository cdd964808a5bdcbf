//! `coapws bench --idle N`: opens N connections (one client endpoint each, opened by one
//! request), holds them for `--duration` and reports how many stayed up, so that a server's
//! memory per idle connection can be read off its RSS. One source address has only its
//! ephemeral ports (about 28 000) towards one server port, so beyond that the connections to
//! a loopback server come from 127.0.0.2, 127.0.0.3, …

use super::BenchArgs;
use super::load::{self, Failure};
use anyhow::{Context, Result, bail};
use coapws::{Endpoint, EndpointConfig, Request};
use futures_util::StreamExt;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Connections being opened at once (a server's accept backlog is finite).
const OPENING_AT_ONCE: usize = 256;
/// Ports of the ephemeral range left unused per source address, for other programs.
const PORT_MARGIN: usize = 1000;

/// Opens `n` connections with `template`, holds them for `--duration`, reports how many
/// stayed up.
pub async fn run(args: &BenchArgs, template: Request, n: usize) -> Result<ExitCode> {
    check_open_files(n)?;
    let target = tokio::net::lookup_host(template.uri.authority())
        .await
        .with_context(|| format!("cannot resolve {}", template.uri.authority()))?
        .next()
        .with_context(|| format!("{} has no address", template.uri.authority()))?;
    let per_address = ephemeral_ports().saturating_sub(PORT_MARGIN).max(1);
    let spread = args.common.local_addr.is_none() && n > per_address;
    if spread && !(target.ip().is_loopback() && target.is_ipv4()) {
        bail!(
            "{n} connections need more than one source address ({per_address} ports each), \
             which works towards an IPv4 loopback server only"
        );
    }
    // The source of connection i: the system's choice for the first address's worth, then
    // 127.0.0.2, 127.0.0.3, …
    let source = |i: usize| -> Option<SocketAddr> {
        let block = i / per_address;
        (spread && block > 0).then(|| {
            let b = u8::try_from(block + 1).unwrap_or(u8::MAX);
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, b)), 0)
        })
    };
    if spread && n / per_address + 1 > 254 {
        bail!("--idle {n} needs more source addresses than 127.0.0.0/24 has");
    }
    let secure = template.uri.scheme.is_secure();
    let bar = progress();
    let started = Instant::now();
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    let mut first_error: Option<String> = None;
    let mut endpoints: Vec<Endpoint> = Vec::with_capacity(n);
    let mut opening = futures_util::stream::iter(0..n)
        .map(|i| {
            let template = template.clone();
            let made = match source(i) {
                Some(addr) => {
                    let mut common = args.common.clone();
                    common.local_addr = Some(addr);
                    common.endpoint(EndpointConfig::default(), secure)
                }
                None => args.common.endpoint(EndpointConfig::default(), secure),
            };
            async move {
                let ep = made?;
                match load::check(&ep, &template, i as u64).await {
                    Ok(()) => Ok(Ok(ep)),
                    Err(f) => Ok(Err(f)),
                }
            }
        })
        .buffer_unordered(OPENING_AT_ONCE);
    while let Some(opened) = opening.next().await {
        let opened: Result<Result<Endpoint, Failure>> = opened;
        match opened? {
            Ok(ep) => endpoints.push(ep),
            Err(f) => {
                *failures.entry(f.kind).or_default() += 1;
                first_error.get_or_insert(f.detail);
            }
        }
        if let Some(b) = &bar {
            b.set_message(format!("opening: {} of {n} up", endpoints.len()));
        }
    }
    drop(opening);
    let opened_in = started.elapsed();
    let up = endpoints.len();
    let failed: u64 = failures.values().sum();
    if !args.json {
        crate::say(&format!(
            "idle: {up} of {n} connections up ({failed} failed) in {:.1} s; holding them for {} s",
            opened_in.as_secs_f64(),
            args.duration
        ));
        if let Some(e) = &first_error {
            crate::say(&format!("first error: {e}"));
        }
    }
    let hold_until = Instant::now() + Duration::from_secs_f64(args.duration);
    let mut fewest = up;
    let count = |eps: &[Endpoint]| eps.iter().map(Endpoint::connection_count).sum::<usize>();
    while Instant::now() < hold_until {
        let left = hold_until.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
        let now_up = count(&endpoints);
        fewest = fewest.min(now_up);
        if let Some(b) = &bar {
            b.set_message(format!(
                "holding: {now_up} of {n} up, {:.0} s left",
                hold_until
                    .saturating_duration_since(Instant::now())
                    .as_secs_f64()
            ));
        }
    }
    let still_up = count(&endpoints);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if args.json {
        let v = json!({
            "uri": args.uri,
            "mode": "idle",
            "requested": n,
            "up": up,
            "failed": failed,
            "errors_by_kind": failures,
            "first_error": first_error,
            "open_s": (opened_in.as_secs_f64() * 100.0).round() / 100.0,
            "held_s": args.duration,
            "fewest_up": fewest,
            "still_up": still_up,
            "source_addresses": if spread { n.div_ceil(per_address) } else { 1 },
        });
        crate::say(&v.to_string());
    } else {
        crate::say(&format!(
            "idle: {still_up} of {n} connections still up after {} s (fewest {fewest})",
            args.duration
        ));
        for (kind, k) in &failures {
            crate::say(&format!("error {kind}: {k}"));
        }
    }
    Ok(if still_up == n {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A live line on stderr while stdout is a terminal, ticking by itself.
fn progress() -> Option<indicatif::ProgressBar> {
    let bar = super::progress_line()?;
    bar.enable_steady_tick(Duration::from_millis(250));
    Some(bar)
}

/// The size of the ephemeral port range (`/proc/sys/net/ipv4/ip_local_port_range`; Linux's
/// default 32768–60999 when unreadable).
fn ephemeral_ports() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|p| p.parse::<usize>().ok());
            let (lo, hi) = (it.next()??, it.next()??);
            Some(hi.saturating_sub(lo) + 1)
        })
        .unwrap_or(60999 - 32768 + 1)
}

/// Fails early when the limit of open files cannot hold `n` connections.
fn check_open_files(n: usize) -> Result<()> {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else {
        return Ok(());
    };
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|s| s.parse::<usize>().ok());
    if let Some(soft) = soft
        && n + 64 > soft
    {
        bail!(
            "--idle {n} needs at least {} open files, the limit is {soft}: raise it first \
             (ulimit -n {})",
            n + 64,
            n + 1024
        );
    }
    Ok(())
}
