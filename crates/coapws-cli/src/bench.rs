//! `coapws bench URI`: a closed-loop load generator. C client endpoints (so C connections, or
//! C UDP sockets) each keep N requests in flight for a fixed time; prints requests per second
//! and latency percentiles. Bounded in time and count: it stops by itself.

use anyhow::{Result, bail};
use clap::Args;
use coapws::EndpointConfig;
use coapws::proto::Code;
use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Arguments of `bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The resource to request, e.g. coap+ws://127.0.0.1:8683/hello
    uri: String,
    /// Client connections (each a separate endpoint).
    #[arg(long, short = 'c', default_value_t = 1)]
    connections: usize,
    /// Requests in flight per connection.
    #[arg(long, short = 'n', default_value_t = 1)]
    concurrency: usize,
    /// Seconds to measure (after one second of warm-up).
    #[arg(long, short = 'd', default_value_t = 5.0)]
    duration: f64,
    /// POST this payload instead of GET.
    #[arg(long)]
    payload: Option<String>,
    #[command(flatten)]
    common: crate::client::CommonArgs,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub async fn run(args: BenchArgs) -> Result<ExitCode> {
    if !(args.duration > 0.0 && args.duration <= 600.0) {
        bail!("--duration must be more than 0 and at most 600 seconds");
    }
    if args.connections == 0
        || args.connections > 10_000
        || args.concurrency == 0
        || args.concurrency > 10_000
    {
        bail!("--connections and --concurrency must be between 1 and 10000");
    }
    let template = match &args.payload {
        Some(p) => args
            .common
            .request(Code::POST, &args.uri)?
            .payload(p.clone().into_bytes()),
        None => args.common.request(Code::GET, &args.uri)?,
    };
    let warmup = Duration::from_secs(1);
    let measure = Duration::from_secs_f64(args.duration);
    let mut endpoints = Vec::new();
    for _ in 0..args.connections {
        let ep = args
            .common
            .endpoint(EndpointConfig::default(), template.uri.scheme.is_secure())?;
        // Open the connection before the clock starts.
        ep.send(template.clone()).await?;
        endpoints.push(ep);
    }
    let start = Instant::now();
    let (measure_from, until) = (start + warmup, start + warmup + measure);
    let mut tasks = Vec::new();
    for ep in &endpoints {
        for _ in 0..args.concurrency {
            let (ep, req) = (ep.clone(), template.clone());
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors: HashMap<String, u64> = HashMap::new();
                while Instant::now() < until {
                    let t = Instant::now();
                    let failure = match ep.send(req.clone()).await {
                        Ok(r) if r.code().is_success() => None,
                        Ok(r) => Some(r.code().to_string()),
                        Err(e) => Some(e.to_string()),
                    };
                    if t >= measure_from {
                        match failure {
                            None => latencies.push(t.elapsed()),
                            Some(f) => *errors.entry(f).or_default() += 1,
                        }
                    }
                }
                (latencies, errors)
            }));
        }
    }
    let mut all = Vec::new();
    let mut kinds: HashMap<String, u64> = HashMap::new();
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        for (k, n) in e {
            *kinds.entry(k).or_default() += n;
        }
    }
    let errors: u64 = kinds.values().sum();
    for ep in &endpoints {
        ep.shutdown().await;
    }
    all.sort();
    let secs = measure.as_secs_f64();
    crate::say(&format!(
        "{} connections x {} in flight, {:.1} s: {} requests, {:.0} req/s, {} errors",
        args.connections,
        args.concurrency,
        secs,
        all.len(),
        all.len() as f64 / secs,
        errors
    ));
    crate::say(&format!(
        "latency p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
        percentile(&all, 0.5),
        percentile(&all, 0.9),
        percentile(&all, 0.99),
        all.last().copied().unwrap_or_default()
    ));
    // Which errors, most frequent first.
    let mut kinds: Vec<_> = kinds.into_iter().collect();
    kinds.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    for (kind, n) in kinds {
        crate::say(&format!("error {kind}: {n}"));
    }
    Ok(if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
