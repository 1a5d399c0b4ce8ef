//! `--upload-ratelimit`: borg's `SleepingBandwidthLimiter`, a token bucket refilled with a
//! tenth of the rate every tenth of a second and holding at most two refills, so a pause
//! never buys a burst longer than 0.2 s. Pure: the caller passes the time and sleeps.

use std::time::{Duration, Instant};

/// borg's `RATELIMIT_QUANTUM`.
const QUANTUM: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub struct Limiter {
    /// Bytes granted per quantum.
    per_quantum: usize,
    /// Bytes that may go out before the next refill.
    quota: usize,
    last: Instant,
}

/// What the writer may do now.
#[derive(Debug, PartialEq, Eq)]
pub enum Grant {
    /// Write up to this many bytes.
    Write(usize),
    /// Nothing may go out before this much time has passed.
    Wait(Duration),
}

impl Limiter {
    /// A limiter for `bytes_per_second` (> 0).
    pub fn new(bytes_per_second: u64, now: Instant) -> Limiter {
        let per_quantum = usize::try_from(bytes_per_second / 10)
            .unwrap_or(usize::MAX)
            .max(1);
        Limiter {
            per_quantum,
            quota: per_quantum,
            last: now,
        }
    }

    /// How much of `want` bytes may be written at `now`; call [`Limiter::sent`] after.
    pub fn grant(&mut self, want: usize, now: Instant) -> Grant {
        if now >= self.last + QUANTUM {
            self.quota = (self.quota + self.per_quantum).min(2 * self.per_quantum);
            self.last = now;
        }
        if self.quota == 0 {
            return Grant::Wait((self.last + QUANTUM).saturating_duration_since(now));
        }
        Grant::Write(want.min(self.quota))
    }

    /// Counts bytes written.
    pub fn sent(&mut self, n: usize) {
        self.quota = self.quota.saturating_sub(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `total` bytes through the limiter on a simulated clock; returns the time taken.
    fn simulate(rate: u64, total: usize, chunk: usize) -> Duration {
        let t0 = Instant::now();
        let mut now = t0;
        let mut l = Limiter::new(rate, now);
        let mut left = total;
        while left > 0 {
            match l.grant(left.min(chunk), now) {
                Grant::Write(n) => {
                    assert!(n > 0 && n <= left.min(chunk));
                    l.sent(n);
                    left -= n;
                    now += Duration::from_micros(10);
                }
                Grant::Wait(d) => now += d.max(Duration::from_micros(1)),
            }
        }
        now - t0
    }

    #[test]
    fn throughput_stays_at_the_rate() {
        // 10 MB at 1 MB/s: the first quantum is free, so a little under 10 s
        let t = simulate(1_000_000, 10_000_000, 1 << 20).as_secs_f64();
        assert!((9.8..10.2).contains(&t), "{t}");
        let t = simulate(50_000, 100_000, 4096).as_secs_f64();
        assert!((1.8..2.2).contains(&t), "{t}");
    }

    #[test]
    fn a_pause_buys_at_most_two_quanta() {
        let t0 = Instant::now();
        let mut l = Limiter::new(1000, t0);
        let later = t0 + Duration::from_secs(60);
        assert_eq!(l.grant(10_000, later), Grant::Write(200));
        l.sent(200);
        assert!(matches!(l.grant(1, later), Grant::Wait(d) if d == QUANTUM));
    }
}
