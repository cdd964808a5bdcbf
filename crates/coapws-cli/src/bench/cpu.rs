//! CPU time of this process (all its threads), for `coapws bench`'s "client CPU µs/req": the
//! load generator should cost less per request than the server it measures.

use std::time::Duration;

/// Clock ticks per second of `/proc/PID/stat`'s times: Linux's USER_HZ, 100 on every
/// architecture it exports to user space (what `getconf CLK_TCK` prints).
const USER_HZ: u64 = 100;

/// User plus system CPU time of this process so far, from `/proc/self/stat` (10 ms
/// resolution); `None` where that cannot be read (not Linux).
pub fn process_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    stat_times(&stat)
}

/// utime + stime of a `/proc/PID/stat` line. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last `)`: utime and stime are fields 14 and 15.
fn stat_times(stat: &str) -> Option<Duration> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 1000 / USER_HZ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_utime_and_stime_past_a_tricky_name() {
        let line = "4242 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 150 25 0 0 20 0 3 0 99 0 0";
        assert_eq!(stat_times(line), Some(Duration::from_millis(1750)));
        assert!(process_time().is_some());
    }
}
