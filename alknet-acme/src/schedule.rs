//! When to renew and which profile to order: plain values in, decisions
//! out, so they are tested without a clock or a server.

use std::time::{Duration, SystemTime};

use crate::AcmeIdentifier;

/// The longest wait between failed attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60 * 60);
/// The first wait after a failed attempt.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(5);

/// When a certificate valid from `not_before` to `not_after` is renewed:
/// at two thirds of its lifetime.
pub fn renewal_time(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    let lifetime = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO);
    not_before + lifetime * 2 / 3
}

/// How often the server's renewal window (ACME Renewal Information,
/// RFC 9773) is asked again at most and at least, whatever its
/// `Retry-After` says.
pub const ARI_RECHECK_MIN: Duration = Duration::from_secs(60);
/// See [`ARI_RECHECK_MIN`].
pub const ARI_RECHECK_MAX: Duration = Duration::from_secs(6 * 60 * 60);

/// When to renew inside the window the server suggested (RFC 9773 §4.2):
/// at `spread` (0.0 to 1.0, chosen at random by the caller so that many
/// clients do not all renew at the window's start) of the way through it.
/// A window that ends before it starts means its start.
pub fn ari_renewal_time(start: SystemTime, end: SystemTime, spread: f64) -> SystemTime {
    let width = end.duration_since(start).unwrap_or(Duration::ZERO);
    start + width.mul_f64(spread.clamp(0.0, 1.0))
}

/// When to ask for the renewal window again after the server said
/// `retry_after`: clamped to [`ARI_RECHECK_MIN`]..=[`ARI_RECHECK_MAX`].
pub fn ari_recheck(retry_after: Duration) -> Duration {
    retry_after.clamp(ARI_RECHECK_MIN, ARI_RECHECK_MAX)
}

/// How long to sleep before the next step when renewal is due at `due` and
/// the window should be asked again after `recheck` (none without ARI), and
/// whether that step is an order (`true`) or another look at the window.
pub fn next_step(now: SystemTime, due: SystemTime, recheck: Option<Duration>) -> (Duration, bool) {
    let until_due = due.duration_since(now).unwrap_or(Duration::ZERO);
    match recheck {
        Some(recheck) if recheck < until_due => (recheck, false),
        _ => (until_due, true),
    }
}

/// The wait after `failures` failed attempts in a row: doubling from
/// [`FIRST_BACKOFF`], capped at [`MAX_BACKOFF`].
pub fn backoff(failures: u32) -> Duration {
    let doubled = FIRST_BACKOFF.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    doubled.min(MAX_BACKOFF)
}

/// The profile to order: the one asked for, else `shortlived` for a
/// certificate with an IP address when the server offers it, else none.
pub fn choose_profile<'a>(
    asked: Option<&'a str>,
    offered: &[&'a str],
    identifiers: &[AcmeIdentifier],
) -> Option<&'a str> {
    if asked.is_some() {
        return asked;
    }
    let has_ip = identifiers
        .iter()
        .any(|id| matches!(id, AcmeIdentifier::Ip(_)));
    (has_ip && offered.contains(&"shortlived")).then_some("shortlived")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn renews_at_two_thirds_of_the_lifetime() {
        let start = SystemTime::UNIX_EPOCH + DAY * 1000;
        assert_eq!(renewal_time(start, start + DAY * 90), start + DAY * 60);
        assert_eq!(
            renewal_time(start, start + Duration::from_secs(60)),
            start + Duration::from_secs(40)
        );
        // A certificate that ends before it starts is renewed at once.
        assert_eq!(renewal_time(start, start - DAY), start);
    }

    #[test]
    fn ari_windows_are_spread_and_clamped() {
        let start = SystemTime::UNIX_EPOCH + DAY * 1000;
        let end = start + DAY;
        assert_eq!(ari_renewal_time(start, end, 0.0), start);
        assert_eq!(ari_renewal_time(start, end, 0.5), start + DAY / 2);
        assert_eq!(ari_renewal_time(start, end, 7.0), end);
        assert_eq!(ari_renewal_time(end, start, 0.5), end);
        assert_eq!(ari_recheck(Duration::ZERO), ARI_RECHECK_MIN);
        assert_eq!(ari_recheck(DAY), ARI_RECHECK_MAX);
        assert_eq!(
            ari_recheck(Duration::from_secs(3600)),
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn the_next_step_orders_when_due_and_looks_again_before() {
        let now = SystemTime::UNIX_EPOCH + DAY * 1000;
        let hour = Duration::from_secs(3600);
        // Without ARI: sleep until due, then order.
        assert_eq!(next_step(now, now + DAY, None), (DAY, true));
        // With ARI: ask again first when that comes sooner.
        assert_eq!(next_step(now, now + DAY, Some(hour)), (hour, false));
        assert_eq!(next_step(now, now + hour, Some(DAY)), (hour, true));
        // Overdue: order at once.
        assert_eq!(
            next_step(now, now - DAY, Some(hour)),
            (Duration::ZERO, true)
        );
    }

    #[test]
    fn backoff_doubles_to_an_hour() {
        assert_eq!(backoff(1), Duration::from_secs(5));
        assert_eq!(backoff(2), Duration::from_secs(10));
        assert_eq!(backoff(5), Duration::from_secs(80));
        assert_eq!(backoff(12), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn ip_certificates_take_shortlived_when_offered_and_asked_wins() {
        let ip = [AcmeIdentifier::ip("127.0.0.1").unwrap()];
        let name = [AcmeIdentifier::dns("example.com").unwrap()];
        let offered = ["classic", "shortlived", "tlsserver"];
        assert_eq!(choose_profile(None, &offered, &ip), Some("shortlived"));
        assert_eq!(choose_profile(None, &offered, &name), None);
        assert_eq!(choose_profile(None, &[], &ip), None);
        assert_eq!(
            choose_profile(Some("tlsserver"), &offered, &ip),
            Some("tlsserver")
        );
    }

    #[test]
    fn names_and_addresses_are_told_apart() {
        assert!(AcmeIdentifier::dns("127.0.0.1").is_err());
        assert!(AcmeIdentifier::dns("::1").is_err());
        assert!(AcmeIdentifier::dns("bad name").is_err());
        assert!(AcmeIdentifier::ip("example.com").is_err());
        assert_eq!(
            AcmeIdentifier::dns("Test.Example.").unwrap(),
            AcmeIdentifier::Dns("test.example".into())
        );
        assert_eq!(
            AcmeIdentifier::ip("127.0.0.1")
                .unwrap()
                .challenge_server_name(),
            "1.0.0.127.in-addr.arpa"
        );
        assert!(
            AcmeIdentifier::ip("::1")
                .unwrap()
                .challenge_server_name()
                .starts_with("1.0.0.0.0.0.0.0")
        );
    }
}
