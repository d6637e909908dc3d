//! When a failed job runs again: exponential backoff with jitter, capped.
//!
//! `delay(n) = min(cap, base * factor^(n-1)) * (1 - jitter * r)`, with `n` the number of the attempt
//! that just failed (1 for the first) and `r` uniform in `[0, 1)`. Jitter only shortens a delay, so the
//! cap holds, and spreads retries of jobs that failed together.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// The delay after the first failure, before jitter.
    pub base: Duration,
    /// Growth per further failure.
    pub factor: f64,
    /// No delay is longer than this.
    pub cap: Duration,
    /// The fraction of a delay that jitter may take away, in `[0, 1]`.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    /// 1 s, 2 s, 4 s, ... up to 10 minutes, with up to 20 % taken off: the seed's `FAIL_TIMES=2` job
    /// is done about 3 seconds after it was created.
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_secs(1),
            factor: 2.0,
            cap: Duration::from_secs(600),
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// The wait before the next attempt, after attempt number `failed_attempt` failed. `random` is a
    /// sample in `[0, 1)`; pass [`RetryPolicy::sample`] in production and fixed values in tests.
    pub fn delay(&self, failed_attempt: i32, random: f64) -> Duration {
        let exponent = failed_attempt.saturating_sub(1).clamp(0, 1000);
        let cap = self.cap.as_secs_f64();
        let raw = self.base.as_secs_f64() * self.factor.powi(exponent);
        let capped = if raw.is_finite() { raw.min(cap) } else { cap };
        let jitter = self.jitter.clamp(0.0, 1.0) * random.clamp(0.0, 1.0);
        Duration::from_secs_f64((capped * (1.0 - jitter)).max(0.0))
    }

    /// A random sample for [`RetryPolicy::delay`].
    pub fn sample() -> f64 {
        rand::random::<f64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_secs(1),
            factor: 2.0,
            cap: Duration::from_secs(10),
            jitter: 0.5,
        }
    }

    #[test]
    fn delays_double_until_the_cap() {
        let p = policy();
        let delays: Vec<u64> = (1..=6).map(|n| p.delay(n, 0.0).as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn jitter_only_shortens_and_stays_within_its_fraction() {
        let p = policy();
        assert_eq!(p.delay(3, 0.999_999).as_millis(), 2000);
        assert_eq!(p.delay(3, 0.5).as_millis(), 3000);
        assert!(p.delay(40, 0.999).as_secs_f64() <= 10.0);
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let p = policy();
        assert_eq!(p.delay(i32::MAX, 0.0), Duration::from_secs(10));
        assert_eq!(p.delay(0, 0.0), Duration::from_secs(1));
        assert_eq!(p.delay(-4, 0.0), Duration::from_secs(1));
    }

    #[test]
    fn the_default_finishes_fail_times_2_within_ten_seconds() {
        let p = RetryPolicy::default();
        let worst = p.delay(1, 0.0) + p.delay(2, 0.0);
        assert!(worst <= Duration::from_secs(4), "{worst:?}");
    }
}
