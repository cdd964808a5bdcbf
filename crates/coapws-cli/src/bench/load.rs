//! The request loops of `coapws bench`: one task per client endpoint keeps its requests in
//! flight (closed loop) or sends them on schedule (open loop), checks every answer's code and
//! token, and tallies what it saw into a [`Tally`] of its own (merged at the end, so nothing
//! is shared on the request path but two relaxed counters for the progress line).

use super::report::Tally;
use coapws::proto::Token;
use coapws::{Endpoint, Request, Response};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What every connection's loop does, and when.
pub struct Plan {
    /// The request sent (each exchange with a token of its own).
    pub template: Request,
    /// Closed loop: requests kept outstanding per connection. Open loop: the most allowed.
    pub in_flight: usize,
    /// When the load starts (the warm-up begins).
    pub start: Instant,
    /// Exchanges sent from here on are measured.
    pub measure_from: Instant,
    /// No exchange is sent from here on.
    pub until: Instant,
    /// Open loop: requests a second each connection sends; `None`: closed loop.
    pub rate_per_connection: Option<f64>,
}

/// A send later than this after its intended time (open loop) counts as behind. The tokio
/// timer has a resolution of 1 ms, so every send may be up to about that late.
pub const BEHIND: Duration = Duration::from_millis(2);

/// Counters the progress line reads while the loops run.
#[derive(Default)]
pub struct Live {
    done: AtomicU64,
    errors: AtomicU64,
    finished: AtomicBool,
}

impl Live {
    /// Answers so far (successful or not).
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }
    /// Failed exchanges so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
    /// Every loop has ended.
    pub fn finished(&self) -> bool {
        self.finished.load(Ordering::Relaxed)
    }
    /// Marks the loops as ended.
    pub fn finish(&self) {
        self.finished.store(true, Ordering::Relaxed);
    }
}

/// Why one exchange failed: its kind (the key errors are counted under) and the whole story.
pub struct Failure {
    /// A short name: the response code, "token mismatch", or the library error's kind.
    pub kind: String,
    /// Everything known about it.
    pub detail: String,
    /// Whether an answer came (a code or a token that was not the one expected).
    pub answered: bool,
}

/// The token of exchange `seq` on connection `conn`: 4 bytes, unique among the connection's
/// outstanding requests (its sequence number), with the connection in the high byte for
/// reading captures.
pub(super) fn token(conn: u64, seq: u64) -> Token {
    let v = ((conn as u32 & 0xff) << 24) | (seq as u32 & 0x00ff_ffff);
    Token::new(bytes::Bytes::copy_from_slice(&v.to_be_bytes()))
}

/// Checks one answer: a 2.xx code, and the token the request went with.
fn verdict(result: Result<Response, coapws::Error>, sent: &Token) -> Result<(), Failure> {
    match result {
        Ok(r) if !r.code().is_success() => Err(Failure {
            kind: r.code().to_string(),
            detail: format!(
                "{} answered {}{}",
                r.remote,
                r.code(),
                if r.payload().is_empty() {
                    String::new()
                } else {
                    format!(": {}", r.message.payload_text())
                }
            ),
            answered: true,
        }),
        Ok(r) if r.message.token != *sent => Err(Failure {
            kind: "token mismatch".into(),
            detail: format!(
                "sent token {:02x?}, the answer carried {:02x?}",
                sent.as_bytes(),
                r.message.token.as_bytes()
            ),
            answered: true,
        }),
        Ok(_) => Ok(()),
        Err(e) => Err(Failure {
            kind: error_kind(&e).into(),
            detail: e.to_string(),
            answered: false,
        }),
    }
}

/// The kind of a library error, as errors are counted.
fn error_kind(e: &coapws::Error) -> &'static str {
    use coapws::Error as E;
    match e {
        E::Timeout => "timeout",
        E::Connect { .. } => "connect",
        E::Handshake { .. } => "handshake",
        E::Connection(_) => "connection ended",
        E::Send(_) | E::Datagram(_) => "send refused",
        E::Reset => "reset",
        E::Block(_) => "block-wise",
        E::Shutdown => "shutdown",
        E::HeldOff { .. } => "held off",
        _ => "other",
    }
}

/// One exchange on `ep` with `token`: when it was sent and how it ended.
async fn exchange(ep: &Endpoint, request: Request, token: Token) -> (Result<(), Failure>, Instant) {
    // The library's send future is large (the block-wise transfer's state): boxed, the loops
    // move a pointer instead of copying it whole (a quarter of the bench's CPU went to memmove).
    let result = Box::pin(ep.send(request.with_token(token.clone()))).await;
    (verdict(result, &token), Instant::now())
}

/// One exchange before the load starts: opens the connection. It fails when no answer came;
/// a wrong answer is for the load to count.
pub async fn check(ep: &Endpoint, template: &Request, conn: u64) -> Result<(), Failure> {
    let t = token(conn, 0x00ff_ffff);
    match exchange(ep, template.clone(), t).await.0 {
        Err(f) if !f.answered => Err(f),
        _ => Ok(()),
    }
}

/// Runs connection `conn`'s loop on `ep` until the plan's end and the last answer.
pub async fn drive(ep: &Endpoint, conn: u64, plan: &Plan, live: &Live) -> Tally {
    match plan.rate_per_connection {
        None => closed(ep, conn, plan, live).await,
        Some(rate) => open(ep, conn, plan, live, rate).await,
    }
}

/// Closed loop: `in_flight` exchanges outstanding; each answer sends the next one.
async fn closed(ep: &Endpoint, conn: u64, plan: &Plan, live: &Live) -> Tally {
    let mut tally = Tally::new();
    let mut pending = FuturesUnordered::new();
    let mut seq = 0u64;
    let send = |seq: u64| {
        let sent = Instant::now();
        let f = exchange(ep, plan.template.clone(), token(conn, seq));
        async move { (sent, f.await) }
    };
    for _ in 0..plan.in_flight {
        pending.push(send(seq));
        seq += 1;
    }
    while let Some((sent, (verdict, done))) = pending.next().await {
        note(&mut tally, live, plan, sent, sent, done, verdict);
        if Instant::now() < plan.until {
            pending.push(send(seq));
            seq += 1;
        }
    }
    tally
}

/// Open loop: exchange k is due at `start + k / rate`, sent then (or as soon as the loop can,
/// counted as behind when later than [`BEHIND`]) whatever is outstanding, up to `in_flight`;
/// its latency counts from when it was due.
async fn open(ep: &Endpoint, conn: u64, plan: &Plan, live: &Live, rate: f64) -> Tally {
    let mut tally = Tally::new();
    let mut pending = FuturesUnordered::new();
    let due_at = |k: u64| plan.start + Duration::from_secs_f64(k as f64 / rate);
    let mut k = 0u64;
    let send = |k: u64, due: Instant| {
        let sent = Instant::now();
        let f = exchange(ep, plan.template.clone(), token(conn, k));
        async move { (due, sent, f.await) }
    };
    loop {
        let next = due_at(k);
        let may_send = next < plan.until && pending.len() < plan.in_flight;
        tokio::select! {
            biased;
            Some((due, sent, (verdict, done))) = pending.next(), if !pending.is_empty() => {
                note(&mut tally, live, plan, due, sent, done, verdict);
            }
            () = tokio::time::sleep_until(next.into()), if may_send => {
                let now = Instant::now();
                while due_at(k) <= now && due_at(k) < plan.until && pending.len() < plan.in_flight {
                    let d = due_at(k);
                    if d >= plan.measure_from {
                        tally.note_lag(now - d, now - d > BEHIND);
                    }
                    pending.push(send(k, d));
                    k += 1;
                }
            }
            else => break,
        }
    }
    tally
}

/// Tallies one exchange: due (open loop; the send time in closed loop), sent, answered.
pub(super) fn note(
    tally: &mut Tally,
    live: &Live,
    plan: &Plan,
    due: Instant,
    sent: Instant,
    done: Instant,
    verdict: Result<(), Failure>,
) {
    live.done.fetch_add(1, Ordering::Relaxed);
    if verdict.is_err() {
        live.errors.fetch_add(1, Ordering::Relaxed);
    }
    if due < plan.measure_from {
        return;
    }
    match verdict {
        Ok(()) => tally.note_ok(done - due, done - sent),
        Err(f) => tally.note_error(f, done),
    }
}
