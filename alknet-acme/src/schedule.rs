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
