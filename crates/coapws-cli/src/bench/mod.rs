//! `coapws bench URI`: a load generator for any CoAP server, over every scheme coapws speaks.
//!
//! Three modes: closed loop (the default: each of `--connections` client endpoints keeps
//! `--in-flight` requests outstanding), open loop (`--rate R`: requests are sent on a fixed
//! schedule whatever the server does, and latency counts from the intended send time, so a
//! stalled server cannot hide behind coordinated omission), and idle (`--idle N`: N
//! connections opened and held, for memory measurements of the server). Bounded in time and
//! count: it stops by itself. The parts: [`load`] drives the requests, [`report`] tallies and
//! prints them, [`idle`] holds connections, [`cpu`] reads this process's CPU time.

mod cpu;
mod idle;
mod load;
mod report;
mod wire;

use anyhow::{Context, Result, bail};
use clap::Args;
use coapws::proto::Code;
use coapws::proto::uri::Scheme;
use coapws::{EndpointConfig, Request};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Arguments of `bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The resource to request, e.g. coap+ws://127.0.0.1:8683/hello
    uri: String,
    /// Client connections (each a separate endpoint: one connection, or one UDP socket).
    #[arg(long, short = 'c', default_value_t = 1)]
    connections: usize,
    /// Requests in flight per connection (closed loop; 1 without). With --rate: the most
    /// outstanding per connection (256 without); a send that would exceed it waits, and
    /// counts as behind. Over UDP this is also the load generator's NSTART (RFC 7252 §4.7).
    #[arg(
        long = "in-flight",
        short = 'n',
        visible_alias = "concurrency",
        value_name = "D"
    )]
    in_flight: Option<usize>,
    /// Seconds to measure (after the warm-up); with --idle, how long to hold the connections.
    #[arg(long, short = 'd', default_value_t = 5.0)]
    duration: f64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    warmup: f64,
    /// The request method: get, post, put, delete, fetch, patch, ipatch (default: get, or
    /// post with --payload).
    #[arg(long, short = 'm', value_parser = method_arg)]
    method: Option<Code>,
    /// The request payload (text, or @FILE for a file's bytes).
    #[arg(long)]
    payload: Option<String>,
    /// Print the results as one JSON object on stdout instead of lines of text.
    #[arg(long)]
    json: bool,
    /// Open loop: send R requests a second over all connections together, on schedule.
    #[arg(long, value_name = "R", conflicts_with = "idle")]
    rate: Option<f64>,
    /// Open N connections (WebSocket or TCP schemes), hold them for --duration and report how
    /// many stayed up: for measuring a server's memory per connection. Beyond one source
    /// address's ephemeral ports they come from 127.0.0.2, 127.0.0.3, … (loopback servers).
    #[arg(long, value_name = "N")]
    idle: Option<usize>,
    /// How the load is sent: `wire` drives coapws-proto's machines on each socket directly
    /// (coap, coap+tcp, coap+ws; payloads up to 1024 bytes), `library` sends through the
    /// library's Endpoint like any client (every scheme, block-wise), `auto` picks wire when
    /// it can.
    #[arg(long, value_enum, default_value_t = Engine::Auto)]
    engine: Engine,
    #[command(flatten)]
    common: crate::client::CommonArgs,
}

/// `--engine`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Engine {
    /// The wire engine when it speaks the scheme and the payload fits one message.
    Auto,
    /// coapws-proto's machines on the sockets, no endpoint in between.
    Wire,
    /// The library's Endpoint (pool, token layer, connection tasks, block-wise).
    Library,
}

/// The largest payload the wire engine sends (it does not go block-wise).
const WIRE_MAX_PAYLOAD: usize = 1024;

impl Engine {
    /// The engine that sends `template`: wire or library.
    fn pick(self, template: &Request) -> Result<Engine> {
        let wire_can = wire::speaks(template.uri.scheme)
            && template.payload.len() <= WIRE_MAX_PAYLOAD
            && template.body_file.is_none();
        Ok(match self {
            Engine::Auto if wire_can => Engine::Wire,
            Engine::Auto => Engine::Library,
            Engine::Wire if !wire_can => bail!(
                "--engine wire speaks coap, coap+tcp and coap+ws with payloads up to \
                 {WIRE_MAX_PAYLOAD} bytes; use --engine library"
            ),
            e => e,
        })
    }
}

/// One connection of the load, in either engine.
enum Conn {
    Library(coapws::Endpoint),
    Wire(wire::Link),
}

/// `--method NAME`.
fn method_arg(s: &str) -> Result<Code, String> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "get" => Code::GET,
        "post" => Code::POST,
        "put" => Code::PUT,
        "delete" => Code::DELETE,
        "fetch" => Code::FETCH,
        "patch" => Code::PATCH,
        "ipatch" => Code::IPATCH,
        _ => return Err("expected get, post, put, delete, fetch, patch or ipatch".into()),
    })
}

/// The most connections (or idle connections) and in-flight requests taken.
const MAX_CONNECTIONS: usize = 10_000;
const MAX_IDLE: usize = 200_000;
const MAX_IN_FLIGHT: usize = 10_000;
/// Outstanding requests per connection in open loop without --in-flight.
const OPEN_LOOP_IN_FLIGHT: usize = 256;

/// Runs `coapws bench`: exit status 0 when every measured exchange succeeded (idle mode: every
/// connection stayed up), 1 otherwise.
/// Raises the descriptor limit for `n` connections; warns when even the hard limit is short.
fn descriptors_for(n: usize, flag: &str) {
    let limit = crate::limits::raise_descriptor_limit();
    if crate::limits::too_few(limit, n) {
        tracing::warn!(
            limit,
            "{flag} {n} needs more descriptors than RLIMIT_NOFILE allows: connections past it fail"
        );
    }
}

pub async fn run(args: BenchArgs) -> Result<ExitCode> {
    if !(args.duration > 0.0 && args.duration <= 600.0) {
        bail!("--duration must be more than 0 and at most 600 seconds");
    }
    if !(args.warmup >= 0.0 && args.warmup <= 60.0) {
        bail!("--warmup must be between 0 and 60 seconds");
    }
    let template = request(&args)?;
    if let Some(n) = args.idle {
        if n == 0 || n > MAX_IDLE {
            bail!("--idle must be between 1 and {MAX_IDLE}");
        }
        descriptors_for(n, "--idle");
        return idle::run(&args, template, n).await;
    }
    if args.connections == 0 || args.connections > MAX_CONNECTIONS {
        bail!("--connections must be between 1 and {MAX_CONNECTIONS}");
    }
    descriptors_for(args.connections, "--connections");
    let in_flight = args.in_flight.unwrap_or(if args.rate.is_some() {
        OPEN_LOOP_IN_FLIGHT
    } else {
        1
    });
    if in_flight == 0 || in_flight > MAX_IN_FLIGHT {
        bail!("--in-flight must be between 1 and {MAX_IN_FLIGHT}");
    }
    if let Some(r) = args.rate
        && !(r > 0.0 && r.is_finite() && r <= 10_000_000.0)
    {
        bail!("--rate must be more than 0 and at most 10000000 requests a second");
    }
    let mut config = EndpointConfig::default();
    // The load generator's own NSTART (RFC 7252 §4.7 lets it be configured): without it the
    // UDP client keeps one request outstanding towards a server whatever --in-flight says.
    config.udp.nstart = in_flight;
    let engine = args.engine.pick(&template)?;
    let timeout = Duration::from_secs_f64(args.common.timeout);
    let secure = template.uri.scheme.is_secure();
    let mut conns = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        // Open the connection (and check the resource answers as expected) before the clock
        // starts.
        let first = match engine {
            Engine::Wire => {
                let keepalive = args.common.keepalive.map(Duration::from_secs);
                let opened = wire::Link::open(
                    &template.uri,
                    args.common.local_addr,
                    keepalive,
                    in_flight,
                    template.confirmable,
                    timeout,
                )
                .await;
                match opened {
                    Ok(mut link) => {
                        let m = template.to_message();
                        wire::check(&mut link, &m, i as u64, timeout)
                            .await
                            .map(|()| Conn::Wire(link))
                    }
                    Err(detail) => Err(load::Failure {
                        kind: "connect".into(),
                        detail,
                        answered: false,
                    }),
                }
            }
            _ => {
                let ep = args.common.endpoint(config.clone(), secure)?;
                load::check(&ep, &template, i as u64)
                    .await
                    .map(|()| Conn::Library(ep))
            }
        };
        match first {
            Ok(c) => conns.push(c),
            Err(e) => bail!(
                "the first request on connection {} failed: {}",
                i + 1,
                e.detail
            ),
        }
    }
    let start = Instant::now();
    let warmup = Duration::from_secs_f64(args.warmup);
    let measure = Duration::from_secs_f64(args.duration);
    let plan = Arc::new(load::Plan {
        template,
        in_flight,
        start,
        measure_from: start + warmup,
        until: start + warmup + measure,
        rate_per_connection: args.rate.map(|r| r / args.connections as f64),
    });
    let live = Arc::new(load::Live::default());
    let progress = show_progress(&plan, &live, args.connections);
    let cpu_probe = tokio::spawn({
        let at = plan.measure_from;
        async move {
            tokio::time::sleep_until(at.into()).await;
            cpu::process_time()
        }
    });
    let mut tasks = Vec::with_capacity(conns.len());
    let mut endpoints = Vec::new();
    for (i, c) in conns.into_iter().enumerate() {
        let (plan, live) = (plan.clone(), live.clone());
        tasks.push(match c {
            Conn::Library(ep) => {
                endpoints.push(ep.clone());
                tokio::spawn(async move { load::drive(&ep, i as u64, &plan, &live).await })
            }
            Conn::Wire(link) => {
                tokio::spawn(
                    async move { wire::drive(link, i as u64, &plan, &live, timeout).await },
                )
            }
        });
    }
    let mut tally = report::Tally::new();
    for t in tasks {
        tally.merge(t.await.context("a load task failed")?);
    }
    let cpu_end = cpu::process_time();
    let cpu_start = cpu_probe.await.ok().flatten();
    live.finish();
    if let Some(p) = progress {
        let _ = p.await;
    }
    for ep in &endpoints {
        ep.shutdown().await;
    }
    let summary = report::Summary {
        uri: args.uri.clone(),
        connections: args.connections,
        in_flight,
        duration: measure,
        warmup,
        rate: args.rate,
        client_cpu: cpu_start.zip(cpu_end).map(|(a, b)| b.saturating_sub(a)),
        exchanges_total: live.done(),
        engine: match engine {
            Engine::Wire => "wire",
            _ => "library",
        },
    };
    let failed = tally.error_count() > 0;
    if args.json {
        crate::say(&report::json(&summary, &tally).to_string());
    } else {
        for line in report::text(&summary, &tally) {
            crate::say(&line);
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The request every exchange sends (its token set per exchange).
fn request(args: &BenchArgs) -> Result<Request> {
    let method = args.method.unwrap_or(if args.payload.is_some() {
        Code::POST
    } else {
        Code::GET
    });
    let mut r = args.common.request(method, &args.uri)?;
    if let Some(p) = &args.payload {
        let body = match p.strip_prefix('@') {
            Some(path) => std::fs::read(path).with_context(|| format!("cannot read {path}"))?,
            None => p.clone().into_bytes(),
        };
        r = r.payload(body);
    }
    if args.idle.is_some() && r.uri.scheme == Scheme::Coap {
        bail!("--idle holds connections: use a coap+ws, coaps+ws, coap+tcp or coaps+tcp URI");
    }
    Ok(r)
}

/// A live progress line on stderr while stdout is a terminal (nothing in pipes and files).
/// A live line on stderr while stdout is a terminal (`None` otherwise): spinner, elapsed time,
/// message.
pub(super) fn progress_line() -> Option<indicatif::ProgressBar> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        None,
        indicatif::ProgressDrawTarget::stderr_with_hz(4),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    Some(bar)
}

fn show_progress(
    plan: &Arc<load::Plan>,
    live: &Arc<load::Live>,
    connections: usize,
) -> Option<tokio::task::JoinHandle<()>> {
    let bar = progress_line()?;
    let (plan, live) = (plan.clone(), live.clone());
    Some(tokio::spawn(async move {
        let mut last = (Instant::now(), 0u64);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            let now = Instant::now();
            let done = live.done();
            let rate = (done - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
            last = (now, done);
            let phase = if now < plan.measure_from {
                "warming up"
            } else if now < plan.until {
                "measuring"
            } else {
                "finishing"
            };
            bar.set_message(format!(
                "{phase}: {connections} connections, {done} answers, {rate:.0} req/s, {} errors",
                live.errors()
            ));
            bar.tick();
            // Finishing waits for answers still outstanding; the line goes then.
            if live.finished() {
                bar.finish_and_clear();
                return;
            }
        }
    }))
}
