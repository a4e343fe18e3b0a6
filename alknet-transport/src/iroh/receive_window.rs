//! A QUIC connection's receive window, raised once the path proves long.
//!
//! A sender has at most the receiver's window in flight, so one window
//! crosses per round trip: QUIC's usual 1.25 MB holds a session to about
//! 21 MiB/s over a 50 ms path. A larger window from the start is no answer:
//! on a short, fast path it only lets the sender run further ahead of a
//! busy reader (on loopback, 2.4 MB instead of 1.25 cost about a fifth of
//! the throughput). So each connection starts at [`START`] and moves to
//! [`LONG_PATH`] when what the reader takes per *shortest* round trip seen
//! reaches most of the window in two periods running: then the window,
//! not the reader or the link, is the limit. A reader that falls behind
//! lengthens the measured round trip but not the shortest one, so it does
//! not trigger the raise; nor does the first estimate after the handshake
//! (9–26 ms even on loopback), which the second period's corrects.
//!
//! [`LONG_PATH`] is as far as the window may safely go: the receiving QUIC
//! stack (noq) closes a connection whose stream holds more than 1024
//! separate runs of data waiting for the gaps between them, and a window
//! of W bytes in full-size packets can hold W / (2 × payload) runs at
//! worst (every other packet lost, as a slow start overshooting a
//! bottleneck does). With the smallest QUIC packets (1200 bytes, about
//! 1130 of them data) that allows 2.3 MB; a larger window closed every
//! connection through a lossy relay in tests ("too many gaps in stream
//! buffer").

use std::time::{Duration, Instant};

/// The window a connection starts with: QUIC's usual one.
pub(crate) const START: u64 = 1_250_000;

/// The window of a connection on a long path; see the module docs for
/// why it goes no further.
pub(crate) const LONG_PATH: u64 = 2_300_000;

/// The shortest measurement: long enough that a few packets more or less
/// do not decide.
const MIN_PERIOD: Duration = Duration::from_millis(10);

/// Watches what one stream's reader takes and says when its connection's
/// window should be raised. Pure: the caller passes the time and the
/// connection's round trip, so it is tested without sockets.
#[derive(Debug, Default)]
pub(crate) struct ReceiveWindowTuner {
    period_start: Option<Instant>,
    read_in_period: u64,
    shortest_rtt: Option<Duration>,
    window_bound_periods: u8,
    raised: bool,
}

impl ReceiveWindowTuner {
    /// Records `read` bytes taken at `now`. Once per period (the shortest
    /// round trip, at least [`MIN_PERIOD`]) it asks `rtt` for the
    /// connection's current round trip; returns the window to set, at most
    /// once per tuner.
    pub(crate) fn on_read(
        &mut self,
        read: usize,
        now: Instant,
        rtt: impl FnOnce() -> Option<Duration>,
    ) -> Option<u64> {
        if self.raised {
            return None;
        }
        let Some(start) = self.period_start else {
            // The period starts at the first read, so an idle spell before
            // it does not count against the rate.
            self.period_start = Some(now);
            self.read_in_period = read as u64;
            return None;
        };
        self.read_in_period += read as u64;
        let elapsed = now.saturating_duration_since(start);
        let period = self.shortest_rtt.unwrap_or_default().max(MIN_PERIOD);
        if elapsed < period {
            return None;
        }
        if let Some(rtt) = rtt() {
            self.shortest_rtt = Some(self.shortest_rtt.map_or(rtt, |shortest| shortest.min(rtt)));
        }
        let per_round_trip = self.shortest_rtt.map(|shortest| {
            self.read_in_period as f64 * shortest.as_secs_f64() / elapsed.as_secs_f64()
        });
        self.period_start = Some(now);
        self.read_in_period = 0;
        if per_round_trip? < START as f64 * 0.75 {
            self.window_bound_periods = 0;
            return None;
        }
        self.window_bound_periods += 1;
        if self.window_bound_periods < 2 {
            return None;
        }
        self.raised = true;
        Some(LONG_PATH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Feeds `rate` bytes per second in 1 ms reads for `for_how_long`,
    /// the connection reporting `rtt`; returns the window set, if any, and
    /// when.
    fn feed(rtt: Duration, rate: u64, for_how_long: Duration) -> Option<(u64, Duration)> {
        let mut tuner = ReceiveWindowTuner::default();
        let start = Instant::now();
        let per_read = (rate / 1000) as usize;
        let mut elapsed = Duration::ZERO;
        while elapsed < for_how_long {
            if let Some(window) = tuner.on_read(per_read, start + elapsed, || Some(rtt)) {
                return Some((window, elapsed));
            }
            elapsed += MS;
        }
        None
    }

    #[test]
    fn a_long_path_carrying_a_window_per_round_trip_is_raised_within_two_periods() {
        // 50 ms path, the sender held to 1.25 MB per round trip.
        let (window, after) = feed(50 * MS, START * 20, Duration::from_secs(1)).unwrap();
        assert_eq!(window, LONG_PATH);
        // The first period lasts 10 ms, the second one round trip.
        assert!(after <= 60 * MS, "raised only after {after:?}");
    }

    #[test]
    fn a_fast_short_path_keeps_its_window() {
        // Loopback: 400 MB/s with a 0.1 ms round trip is 40 kB per round
        // trip, far below the window.
        assert_eq!(feed(MS / 10, 400_000_000, Duration::from_secs(1)), None);
    }

    #[test]
    fn a_slow_long_path_keeps_its_window() {
        // 50 ms at 10 MB/s: 0.5 MB per round trip, the link is the limit.
        assert_eq!(feed(50 * MS, 10_000_000, Duration::from_secs(1)), None);
    }

    /// Asserts that a second of reads at 400 MB/s, the connection
    /// reporting `rtts` one after another, never raises the window.
    fn assert_never_raised(mut rtts: impl Iterator<Item = Duration>) {
        let mut tuner = ReceiveWindowTuner::default();
        let start = Instant::now();
        for step in 0..1000u32 {
            let now = start + step * MS;
            assert_eq!(tuner.on_read(400_000, now, || rtts.next()), None);
        }
    }

    #[test]
    fn the_handshakes_round_trip_alone_does_not_raise_it() {
        // Loopback: the first estimate (20 ms, from the handshake) would
        // make 8 MB per round trip; the next, 0.1 ms.
        assert_never_raised([20 * MS].into_iter().chain(std::iter::repeat(MS / 10)));
    }

    #[test]
    fn a_reader_falling_behind_does_not_raise_it() {
        // A short path whose round trip grows while the reader is busy:
        // the shortest round trip seen still decides.
        assert_never_raised([MS / 10, 30 * MS, 40 * MS, 50 * MS].into_iter().cycle());
    }

    #[test]
    fn it_is_raised_at_most_once_and_not_without_a_round_trip() {
        let mut tuner = ReceiveWindowTuner::default();
        let start = Instant::now();
        let mut raised = 0;
        for step in 0..1000u32 {
            if tuner
                .on_read(100_000, start + step * MS, || Some(50 * MS))
                .is_some()
            {
                raised += 1;
            }
        }
        assert_eq!(raised, 1);

        let mut unknown = ReceiveWindowTuner::default();
        for step in 0..1000u32 {
            assert_eq!(unknown.on_read(100_000, start + step * MS, || None), None);
        }
    }
}
