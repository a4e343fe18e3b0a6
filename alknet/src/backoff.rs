//! The reconnection schedule: 1 s, 2 s, 4 s … capped at 30 s, each delay
//! spread by ±20 % so that many clients cut off together do not return
//! together. Pure arithmetic; the caller supplies the randomness.

use std::time::Duration;

/// Exponential backoff with a cap.
#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    first: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    pub(crate) fn new(first: Duration, cap: Duration) -> Self {
        Self {
            first,
            cap,
            failures: 0,
        }
    }

    /// The delay before the next attempt, given `unit` uniform in [0, 1).
    pub(crate) fn next_delay(&mut self, unit: f64) -> Duration {
        let doubling = 2u32.saturating_pow(self.failures.min(16));
        let nominal = self.first.saturating_mul(doubling).min(self.cap);
        self.failures = self.failures.saturating_add(1);
        let spread = 0.8 + 0.4 * unit.clamp(0.0, 1.0);
        nominal.mul_f64(spread).min(self.cap)
    }

    /// Back to the first delay, after a connection that worked.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(unit: f64) -> Vec<u64> {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        (0..8)
            .map(|_| backoff.next_delay(unit).as_millis() as u64)
            .collect()
    }

    #[test]
    fn doubles_from_one_second_up_to_the_cap() {
        assert_eq!(
            schedule(0.5),
            [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
    }

    #[test]
    fn jitter_stays_within_twenty_percent_and_under_the_cap() {
        assert_eq!(schedule(0.0)[..3], [800, 1600, 3200]);
        assert_eq!(schedule(0.999_999)[..2], [1199, 2399]);
        assert!(schedule(1.0).iter().all(|&ms| ms <= 30_000));
    }

    #[test]
    fn reset_starts_over_and_many_failures_do_not_overflow() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        for _ in 0..1000 {
            backoff.next_delay(0.5);
        }
        assert_eq!(backoff.next_delay(0.5), Duration::from_secs(30));
        backoff.reset();
        assert_eq!(backoff.next_delay(0.5), Duration::from_secs(1));
    }
}
