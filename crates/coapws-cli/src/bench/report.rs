//! What `coapws bench` measured and how it is printed: a [`Tally`] per connection (latency
//! histograms, errors by kind, the first error, open-loop lag), merged into one, and printed
//! as lines of text or one JSON object.

use super::load::{BEHIND, Failure};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The exchanges of the measured window, as one loop (or all, merged) saw them.
pub struct Tally {
    /// Nanoseconds from when each successful exchange was due (its send, in closed loop) to
    /// its answer.
    latency: Histogram<u64>,
    /// Open loop: nanoseconds from the actual send to the answer.
    service: Histogram<u64>,
    /// Failed exchanges by kind.
    errors: BTreeMap<String, u64>,
    /// The earliest failure, in full.
    first_error: Option<(Instant, String)>,
    /// Open loop: sends later than [`BEHIND`] after their due time, and the latest one.
    behind: u64,
    max_lag: Duration,
}

/// A histogram of nanoseconds, 3 significant digits, growing as larger values come.
fn histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant digits is a valid precision")
}

impl Tally {
    /// Nothing seen yet.
    pub fn new() -> Tally {
        Tally {
            latency: histogram(),
            service: histogram(),
            errors: BTreeMap::new(),
            first_error: None,
            behind: 0,
            max_lag: Duration::ZERO,
        }
    }
    /// A successful exchange: `latency` from its due time, `service` from its send.
    pub fn note_ok(&mut self, latency: Duration, service: Duration) {
        // The histograms grow to fit (auto-resizing), so recording cannot fail on range.
        let _ = self.latency.record(latency.as_nanos() as u64);
        let _ = self.service.record(service.as_nanos() as u64);
    }
    /// A failed exchange, answered (or given up) at `at`.
    pub fn note_error(&mut self, f: Failure, at: Instant) {
        *self.errors.entry(f.kind).or_default() += 1;
        if self.first_error.as_ref().is_none_or(|(t, _)| at < *t) {
            self.first_error = Some((at, f.detail));
        }
    }
    /// Open loop: a send `lag` after its due time, `behind` when later than allowed.
    pub fn note_lag(&mut self, lag: Duration, behind: bool) {
        self.behind += u64::from(behind);
        self.max_lag = self.max_lag.max(lag);
    }
    /// Adds another loop's tally to this one.
    pub fn merge(&mut self, other: Tally) {
        // Both histograms resize automatically, so adding cannot run out of range.
        let _ = self.latency.add(&other.latency);
        let _ = self.service.add(&other.service);
        for (k, n) in other.errors {
            *self.errors.entry(k).or_default() += n;
        }
        if let Some((t, d)) = other.first_error
            && self.first_error.as_ref().is_none_or(|(mine, _)| t < *mine)
        {
            self.first_error = Some((t, d));
        }
        self.behind += other.behind;
        self.max_lag = self.max_lag.max(other.max_lag);
    }
    /// Successful exchanges.
    pub fn ok(&self) -> u64 {
        self.latency.len()
    }
    /// Failed exchanges.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// The settings of the run, for the report.
pub struct Summary {
    /// The URI loaded.
    pub uri: String,
    /// Client endpoints (connections, or UDP sockets).
    pub connections: usize,
    /// Requests in flight per connection (open loop: the most allowed).
    pub in_flight: usize,
    /// The measured window.
    pub duration: Duration,
    /// The load before it.
    pub warmup: Duration,
    /// Open loop's requests a second (all connections), if so.
    pub rate: Option<f64>,
    /// CPU time this process spent while measuring (None where /proc is not readable).
    pub client_cpu: Option<Duration>,
    /// Every exchange answered or failed, warm-up included (what the server served in all).
    pub exchanges_total: u64,
    /// Which engine sent the load: "wire" or "library".
    pub engine: &'static str,
}

impl Summary {
    fn client_cpu_per_request(&self, t: &Tally) -> Option<f64> {
        let n = t.ok() + t.error_count();
        self.client_cpu
            .filter(|_| n > 0)
            .map(|c| c.as_secs_f64() * 1e6 / n as f64)
    }
}

/// The percentiles reported, as (name, quantile).
const PERCENTILES: [(&str, f64); 4] = [
    ("p50", 0.50),
    ("p90", 0.90),
    ("p99", 0.99),
    ("p99.9", 0.999),
];

fn micros(ns: u64) -> f64 {
    (ns as f64 / 1e3 * 10.0).round() / 10.0
}

fn percentiles_json(h: &Histogram<u64>) -> Value {
    let mut m = serde_json::Map::new();
    for (name, q) in PERCENTILES {
        m.insert(
            name.replace('.', "_"),
            json!(micros(h.value_at_quantile(q))),
        );
    }
    m.insert("max".into(), json!(micros(h.max())));
    m.insert("mean".into(), json!((h.mean() / 100.0).round() / 10.0));
    Value::Object(m)
}

fn percentiles_text(h: &Histogram<u64>) -> String {
    let mut parts: Vec<String> = PERCENTILES
        .iter()
        .map(|(name, q)| format!("{name} {:?}", Duration::from_nanos(h.value_at_quantile(*q))))
        .collect();
    parts.push(format!("max {:?}", Duration::from_nanos(h.max())));
    parts.join("  ")
}

/// The results as one JSON object (latencies in microseconds).
pub fn json(s: &Summary, t: &Tally) -> Value {
    let secs = s.duration.as_secs_f64();
    let mut v = json!({
        "uri": s.uri,
        "mode": if s.rate.is_some() { "open" } else { "closed" },
        "engine": s.engine,
        "connections": s.connections,
        "in_flight": s.in_flight,
        "duration_s": secs,
        "warmup_s": s.warmup.as_secs_f64(),
        "requests": t.ok(),
        "rate": (t.ok() as f64 / secs).round(),
        "errors": t.error_count(),
        "exchanges_total": s.exchanges_total,
        "errors_by_kind": t.errors,
        "first_error": t.first_error.as_ref().map(|(_, d)| d.as_str()),
        "latency_us": percentiles_json(&t.latency),
        "client_cpu_s": s.client_cpu.map(|c| c.as_secs_f64()),
        "client_cpu_us_per_req": s.client_cpu_per_request(t).map(|c| (c * 100.0).round() / 100.0),
    });
    if let Some(rate) = s.rate {
        v["target_rate"] = json!(rate);
        v["behind"] = json!(t.behind);
        v["behind_threshold_us"] = json!(BEHIND.as_micros() as u64);
        v["max_lag_us"] = json!(micros(t.max_lag.as_nanos() as u64));
        v["service_latency_us"] = percentiles_json(&t.service);
    }
    v
}

/// The results as lines of text: counts and rate first (the line scripts read), then
/// latencies, CPU, open-loop lag, and the errors by kind with the first one in full.
pub fn text(s: &Summary, t: &Tally) -> Vec<String> {
    let secs = s.duration.as_secs_f64();
    let mut lines = vec![
        format!(
            "{} connections x {} in flight, {:.1} s: {} requests, {:.0} req/s, {} errors",
            s.connections,
            s.in_flight,
            secs,
            t.ok(),
            t.ok() as f64 / secs,
            t.error_count()
        ),
        format!(
            "latency{} {}",
            if s.rate.is_some() {
                " (from the due time)"
            } else {
                ""
            },
            percentiles_text(&t.latency)
        ),
    ];
    if let Some(rate) = s.rate {
        lines.push(format!(
            "open loop at {rate:.0} req/s: {} sends more than {:?} behind (latest {:?}); from the actual send {}",
            t.behind,
            BEHIND,
            t.max_lag,
            percentiles_text(&t.service)
        ));
    }
    match s.client_cpu_per_request(t) {
        Some(c) => lines.push(format!(
            "client CPU {c:.2} µs/req ({:.2} s, {} engine)",
            s.client_cpu.unwrap_or_default().as_secs_f64(),
            s.engine
        )),
        None => lines.push("client CPU not measured".into()),
    }
    let mut kinds: Vec<_> = t.errors.iter().collect();
    kinds.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    for (kind, n) in kinds {
        lines.push(format!("error {kind}: {n}"));
    }
    if let Some((_, d)) = &t.first_error {
        lines.push(format!("first error: {d}"));
    }
    lines
}
