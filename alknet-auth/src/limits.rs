//! Connection limits, decided at accept time before a byte is read: open
//! connections per address, and connections not yet authenticated — in
//! all (OpenSSH's `MaxStartups start:rate:full`, with random early drop
//! between start and full) and per source address (`PerSourceMaxStartups`),
//! so one flooding address cannot take every slot and lock others out.
//!
//! Counting only; the caller supplies the random roll, so decisions are
//! testable on plain values.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// What limits count by: the IP address, or over iroh (where there is
/// none) the peer's endpoint id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PeerKey {
    /// An IP address (IPv4-mapped IPv6 counts as the IPv4 address).
    Ip(IpAddr),
    /// An iroh endpoint id.
    Endpoint(String),
}

impl PeerKey {
    /// The key for a peer at `ip`.
    pub fn ip(ip: IpAddr) -> Self {
        PeerKey::Ip(crate::address::canonical(ip))
    }
}

/// `MaxStartups` and `PerSourceMaxStartups`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartupLimits {
    /// From this many unauthenticated connections on, new ones are dropped
    /// with probability `rate`%, rising linearly to 100% at `full`.
    pub start: usize,
    /// The drop probability at `start`, in percent.
    pub rate: u8,
    /// At this many, every new connection is dropped.
    pub full: usize,
    /// Unauthenticated connections one source may have (0: no limit).
    pub per_source: usize,
}

impl Default for StartupLimits {
    /// sshd's `MaxStartups 10:30:100`, and at most 5 from one source:
    /// fewer than `start`, so one address alone never makes anyone else's
    /// connection a candidate for random early drop.
    fn default() -> Self {
        Self {
            start: 10,
            rate: 30,
            full: 100,
            per_source: 5,
        }
    }
}

impl StartupLimits {
    /// Whether a new connection is dropped while `unauthenticated` are
    /// open, given a uniform `roll` in `0..100`.
    pub fn drops(&self, unauthenticated: usize, roll: u32) -> bool {
        if unauthenticated >= self.full {
            return true;
        }
        if unauthenticated < self.start {
            return false;
        }
        let rate = u64::from(self.rate.min(100));
        let span = (self.full - self.start).max(1) as u64;
        let into = (unauthenticated - self.start) as u64;
        let percent = rate + (100 - rate) * into / span;
        u64::from(roll) < percent
    }
}

/// Parses `start:rate:full`, or one number for `start` = `full`.
impl FromStr for StartupLimits {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not START:RATE:FULL (such as 10:30:100) or a number");
        let number = |part: &str| part.trim().parse::<usize>().map_err(|_| bad());
        let parts: Vec<&str> = text.split(':').collect();
        let (start, rate, full) = match parts.as_slice() {
            [all] => {
                let all = number(all)?;
                (all, 100, all)
            }
            [start, rate, full] => {
                let rate = number(rate)?;
                (number(start)?, rate, number(full)?)
            }
            _ => return Err(bad()),
        };
        if rate > 100 || start > full || full == 0 {
            return Err(format!(
                "{text:?}: need START <= FULL, FULL > 0 and RATE at most 100"
            ));
        }
        Ok(Self {
            start,
            rate: u8::try_from(rate).map_err(|_| bad())?,
            full,
            per_source: Self::default().per_source,
        })
    }
}

/// Why a connection was refused at accept time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitRefusal {
    /// The address has `max_connections_per_ip` open.
    PerAddress,
    /// The address has `per_source` connections still authenticating.
    PerSourceStartups,
    /// Too many connections are authenticating (`MaxStartups`).
    Startups,
}

impl fmt::Display for LimitRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitRefusal::PerAddress => "too many connections from this address",
            LimitRefusal::PerSourceStartups => {
                "too many unauthenticated connections from this address"
            }
            LimitRefusal::Startups => "too many unauthenticated connections",
        })
    }
}

#[derive(Debug, Default)]
struct Counts {
    open: HashMap<PeerKey, usize>,
    starting: HashMap<PeerKey, usize>,
    starting_total: usize,
}

/// Counts connections against the limits. Cheap to clone; clones share.
#[derive(Clone, Debug, Default)]
pub struct ConnectionLimiter {
    counts: Arc<Mutex<Counts>>,
}

impl ConnectionLimiter {
    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a new connection from `peer` (none: an unknown address,
    /// counted only in the total), or says why not. `roll` is uniform in
    /// `0..100`, for random early drop.
    pub fn admit(
        &self,
        peer: Option<PeerKey>,
        max_per_address: usize,
        startups: &StartupLimits,
        roll: u32,
    ) -> Result<ConnectionPermit, LimitRefusal> {
        let mut counts = self.lock();
        if let Some(peer) = &peer {
            let open = counts.open.get(peer).copied().unwrap_or(0);
            if max_per_address > 0 && open >= max_per_address {
                return Err(LimitRefusal::PerAddress);
            }
            let starting = counts.starting.get(peer).copied().unwrap_or(0);
            if startups.per_source > 0 && starting >= startups.per_source {
                return Err(LimitRefusal::PerSourceStartups);
            }
        }
        if startups.drops(counts.starting_total, roll) {
            return Err(LimitRefusal::Startups);
        }
        counts.starting_total += 1;
        if let Some(peer) = &peer {
            *counts.open.entry(peer.clone()).or_insert(0) += 1;
            *counts.starting.entry(peer.clone()).or_insert(0) += 1;
        }
        Ok(ConnectionPermit {
            limiter: self.clone(),
            peer,
            starting: true,
        })
    }

    /// Connections not yet authenticated, in all.
    pub fn unauthenticated(&self) -> usize {
        self.lock().starting_total
    }
}

fn decrement(map: &mut HashMap<PeerKey, usize>, peer: &PeerKey) {
    if let Some(count) = map.get_mut(peer) {
        *count -= 1;
        if *count == 0 {
            map.remove(peer);
        }
    }
}

/// One admitted connection. [`authenticated`](Self::authenticated) frees
/// its startup slot; dropping it frees everything it holds.
#[derive(Debug)]
pub struct ConnectionPermit {
    limiter: ConnectionLimiter,
    peer: Option<PeerKey>,
    starting: bool,
}

impl ConnectionPermit {
    /// The connection authenticated: it no longer counts as a startup.
    pub fn authenticated(&mut self) {
        if !self.starting {
            return;
        }
        self.starting = false;
        let mut counts = self.limiter.lock();
        counts.starting_total -= 1;
        if let Some(peer) = &self.peer {
            decrement(&mut counts.starting, peer);
        }
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.authenticated();
        if let Some(peer) = &self.peer {
            decrement(&mut self.limiter.lock().open, peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Option<PeerKey> {
        Some(PeerKey::ip(text.parse().unwrap()))
    }

    const NO_STARTUP_LIMIT: StartupLimits = StartupLimits {
        start: 1000,
        rate: 100,
        full: 1000,
        per_source: 0,
    };

    #[test]
    fn per_address_limits_count_open_connections_and_free_them_on_drop() {
        let limiter = ConnectionLimiter::default();
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        let admit = |peer: &Option<PeerKey>, limit| {
            limiter.admit(peer.clone(), limit, &NO_STARTUP_LIMIT, 0)
        };
        let first = admit(&a, 2).unwrap();
        let _second = admit(&a, 2).unwrap();
        assert_eq!(admit(&a, 2).unwrap_err(), LimitRefusal::PerAddress);
        assert!(admit(&b, 2).is_ok(), "another address is not affected");
        assert!(admit(&a, 3).is_ok(), "a raised limit applies at once");
        drop(first);
        assert!(admit(&a, 3).is_ok(), "a place was freed");
        assert!(admit(&a, 0).is_ok(), "0 means no limit");
        assert!(admit(&None, 1).is_ok(), "no address, no per-address limit");
        let endpoint = Some(PeerKey::Endpoint("5f3c".into()));
        let _iroh = admit(&endpoint, 1).unwrap();
        assert!(
            admit(&endpoint, 1).is_err(),
            "iroh peers count by endpoint id"
        );
        assert_eq!(ip("::ffff:192.0.2.1"), a, "mapped addresses count as IPv4");
    }

    #[test]
    fn one_source_cannot_take_every_startup_slot() {
        let limiter = ConnectionLimiter::default();
        let limits = StartupLimits {
            per_source: 10,
            ..StartupLimits::default()
        };
        let flood: Vec<_> = (0..10)
            .map(|_| limiter.admit(ip("127.0.0.2"), 0, &limits, 99).unwrap())
            .collect();
        assert_eq!(
            limiter.admit(ip("127.0.0.2"), 0, &limits, 99).unwrap_err(),
            LimitRefusal::PerSourceStartups
        );
        // Ten startups are open: others are dropped only with rate 30%.
        let other = limiter.admit(ip("127.0.0.1"), 0, &limits, 99).unwrap();
        let mut one = limiter.admit(ip("127.0.0.3"), 0, &limits, 99).unwrap();
        assert_eq!(limiter.unauthenticated(), 12);
        one.authenticated();
        assert_eq!(limiter.unauthenticated(), 11);
        drop(flood);
        assert_eq!(limiter.unauthenticated(), 1);
        drop(other);
        assert_eq!(limiter.unauthenticated(), 0);
    }

    #[test]
    fn random_early_drop_rises_from_rate_to_certainty() {
        let limits: StartupLimits = "10:30:100".parse().unwrap();
        assert!(!limits.drops(9, 0));
        assert!(limits.drops(10, 29));
        assert!(!limits.drops(10, 30));
        // Halfway: 30 + 70 * 45 / 90 = 65%.
        assert!(limits.drops(55, 64));
        assert!(!limits.drops(55, 65));
        assert!(limits.drops(100, 99));
        let single: StartupLimits = "5".parse().unwrap();
        assert!(!single.drops(4, 0));
        assert!(single.drops(5, 99));
        for bad in ["", "1:2", "10:200:100", "100:30:10", "a:b:c", "0"] {
            assert!(bad.parse::<StartupLimits>().is_err(), "{bad}");
        }
    }
}
