//! The options in front of an `authorized_keys` key, as sshd reads them:
//! `restrict,permitopen="db:5432",from="10.0.0.0/8,!10.0.0.9"`.
//!
//! alknet honours every option that matters for a tunnel — `from`,
//! `permitopen`, `permitlisten`, `restrict`, `no-port-forwarding` /
//! `port-forwarding`, `expiry-time`, `cert-authority` with `principals` —
//! and accepts those that only concern features alknet never offers
//! (terminals, X11, agents, rc files, commands, environment, tun devices,
//! FIDO touch). Any other option refuses the line: ignoring a restriction
//! it does not know would grant more than the file says. Pure parsing.

use std::net::IpAddr;

use jiff::tz::TimeZone;

use crate::address::canonical;
use crate::policy::glob_matches;

/// Options that concern only what alknet never offers, so accepting them
/// grants nothing extra. (`command=` restricts a shell, not forwarding —
/// in sshd too.)
const HARMLESS: &[&str] = &[
    "no-pty",
    "pty",
    "no-x11-forwarding",
    "x11-forwarding",
    "no-agent-forwarding",
    "agent-forwarding",
    "no-user-rc",
    "user-rc",
    "command",
    "environment",
    "tunnel",
    "no-touch-required",
    "verify-required",
];

/// What the options of one line say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyOptions {
    /// The key is a certificate authority for this file's users
    /// (`cert-authority`), not a login key.
    pub cert_authority: bool,
    /// `principals=`: on a cert-authority line, a certificate must list one
    /// of these.
    pub principals: Option<Vec<String>>,
    /// `from=`: the client addresses the key may log in from.
    pub from: Option<FromPatterns>,
    /// Whether any forwarding is allowed (`restrict` and
    /// `no-port-forwarding` turn it off, a later `port-forwarding` back on).
    pub port_forwarding: bool,
    /// `permitopen=`: the only `host:port`s channels may go to.
    pub permit_open: Option<Vec<HostPort>>,
    /// `permitlisten=`: the only `[host:]port`s remote forwards may use.
    pub permit_listen: Option<Vec<HostPort>>,
    /// `expiry-time=`: Unix seconds after which the key no longer logs in.
    pub expires_at: Option<u64>,
}

impl Default for KeyOptions {
    fn default() -> Self {
        Self {
            cert_authority: false,
            principals: None,
            from: None,
            port_forwarding: true,
            permit_open: None,
            permit_listen: None,
            expires_at: None,
        }
    }
}

/// A `permitopen` / `permitlisten` entry: a literal host (or `*`, or none
/// for `permitlisten="port"`) and a port (or `*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    host: Option<String>,
    port: Option<u16>,
}

impl HostPort {
    fn parse(text: &str, host_optional: bool) -> Result<Self, String> {
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port)) => (Some(host), port),
            None if host_optional => (None, text),
            None => return Err(format!("{text:?} is not host:port")),
        };
        let host = host.map(|host| {
            host.strip_prefix('[')
                .and_then(|inner| inner.strip_suffix(']'))
                .unwrap_or(host)
                .to_ascii_lowercase()
        });
        if host.as_deref() == Some("") {
            return Err(format!("{text:?} has an empty host"));
        }
        let port = match port {
            "*" => None,
            digits => Some(
                digits
                    .parse::<u16>()
                    .map_err(|_| format!("{digits:?} is not a port"))?,
            ),
        };
        Ok(Self {
            host: host.filter(|host| host != "*"),
            port,
        })
    }

    /// Whether `host:port` is this entry: hosts compare literally (no
    /// lookup, no patterns, as sshd), `*` matches any.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        let bare = host
            .strip_prefix('[')
            .and_then(|inner| inner.strip_suffix(']'))
            .unwrap_or(host);
        let host_ok = self
            .host
            .as_deref()
            .is_none_or(|wanted| wanted.eq_ignore_ascii_case(bare));
        host_ok && self.port.is_none_or(|wanted| wanted == port)
    }

    /// Whether a listen request for `port` on `host` is this entry. An
    /// entry without a host allows loopback binds only, as sshd.
    pub fn matches_listen(&self, host: &str, port: u16) -> bool {
        let host_ok = match self.host.as_deref() {
            None => matches!(host, "" | "localhost" | "127.0.0.1" | "::1"),
            Some(wanted) => wanted.eq_ignore_ascii_case(host),
        };
        host_ok && self.port.is_none_or(|wanted| wanted == port)
    }
}

/// A `from=` pattern list: addresses, CIDR ranges and `*`/`?` globs, any of
/// them negated with `!`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FromPatterns {
    patterns: Vec<(bool, String)>,
}

impl FromPatterns {
    fn parse(list: &str) -> Result<Self, String> {
        let patterns: Vec<(bool, String)> = list
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| match entry.strip_prefix('!') {
                Some(negated) => (true, negated.to_ascii_lowercase()),
                None => (false, entry.to_ascii_lowercase()),
            })
            .collect();
        if patterns.is_empty() {
            return Err("from= lists no address".to_owned());
        }
        for (_, pattern) in &patterns {
            if pattern.contains('/') && pattern.parse::<ipnet::IpNet>().is_err() {
                return Err(format!("{pattern:?} is not an address range"));
            }
        }
        Ok(Self { patterns })
    }

    /// Whether a client at `peer` may log in: no negated entry matches it,
    /// and some other entry does. Without an address (iroh) it never may.
    /// Host names are not looked up (sshd's `UseDNS no`), so only address
    /// patterns can match.
    pub fn allows(&self, peer: Option<IpAddr>) -> bool {
        let Some(peer) = peer.map(canonical) else {
            return false;
        };
        let text = peer.to_string();
        let matches = |pattern: &str| match pattern.parse::<ipnet::IpNet>() {
            Ok(net) => net.contains(&peer),
            Err(_) => glob_with_question_mark(pattern, &text),
        };
        let mut allowed = false;
        for (negated, pattern) in &self.patterns {
            if matches(pattern) {
                if *negated {
                    return false;
                }
                allowed = true;
            }
        }
        allowed
    }
}

/// `*` any run, `?` any one character. Linear backtracking (to the last
/// `*` only), so no pattern costs more than pattern × text steps.
pub(crate) fn glob_with_question_mark(pattern: &str, text: &str) -> bool {
    if !pattern.contains('?') {
        return glob_matches(pattern, text);
    }
    let (pattern, text): (Vec<char>, Vec<char>) =
        (pattern.chars().collect(), text.chars().collect());
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and the text position it has swallowed up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some('?') => {
                p += 1;
                t += 1;
            }
            Some(c) if *c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

/// Splits an options field at its commas (not those inside quotes) and
/// reads each option. An `expiry-time` without `Z` is in `local` time, as
/// sshd reads it.
pub(crate) fn parse_options(field: &str, local: &TimeZone) -> Result<KeyOptions, String> {
    let mut options = KeyOptions::default();
    for raw in split_unquoted(field, ',') {
        let (name, value) = match raw.split_once('=') {
            Some((name, value)) => (name.to_ascii_lowercase(), Some(unquote(value)?)),
            None => (raw.to_ascii_lowercase(), None),
        };
        let needs_value = |value: Option<String>| {
            value.ok_or_else(|| format!("option `{name}` needs a value (`{name}=\"…\"`)"))
        };
        match name.as_str() {
            "cert-authority" => options.cert_authority = true,
            "principals" => {
                let list = needs_value(value)?;
                options.principals = Some(
                    list.split(',')
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(str::to_owned)
                        .collect(),
                );
            }
            "from" => options.from = Some(FromPatterns::parse(&needs_value(value)?)?),
            "restrict" | "no-port-forwarding" => options.port_forwarding = false,
            "port-forwarding" => options.port_forwarding = true,
            "permitopen" => {
                let entry = HostPort::parse(&needs_value(value)?, false)?;
                options.permit_open.get_or_insert_with(Vec::new).push(entry);
            }
            "permitlisten" => {
                let entry = HostPort::parse(&needs_value(value)?, true)?;
                options
                    .permit_listen
                    .get_or_insert_with(Vec::new)
                    .push(entry);
            }
            "expiry-time" => {
                options.expires_at = Some(parse_expiry(&needs_value(value)?, local)?);
            }
            harmless if HARMLESS.contains(&harmless) => {}
            unknown => return Err(format!("option `{unknown}` is not known to alknet")),
        }
    }
    if options.principals.is_some() && !options.cert_authority {
        return Err("principals= applies only to cert-authority lines".to_owned());
    }
    Ok(options)
}

/// Pieces of `text` separated by `separator` outside double quotes.
pub(crate) fn split_unquoted(text: &str, separator: char) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut quoted = false;
    let mut escaped = false;
    let mut start = 0;
    for (index, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                pieces.push(&text[start..index]);
                start = index + c.len_utf8();
            }
            _ => {}
        }
    }
    pieces.push(&text[start..]);
    pieces
        .into_iter()
        .filter(|piece| !piece.is_empty())
        .collect()
}

/// `"value"` with `\"` escapes, as sshd writes option values.
fn unquote(value: &str) -> Result<String, String> {
    let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return Err(format!("option value {value:?} must be in double quotes"));
    };
    Ok(inner.replace("\\\"", "\""))
}

/// `YYYYMMDD[HHMM[SS]]`, UTC with a trailing `Z`, in `local` otherwise.
fn parse_expiry(text: &str, local: &TimeZone) -> Result<u64, String> {
    let bad = || format!("expiry-time {text:?} is not YYYYMMDD[HHMM[SS]][Z]");
    let (digits, utc) = match text.strip_suffix(['Z', 'z']) {
        Some(digits) => (digits, true),
        None => (text, false),
    };
    if !matches!(digits.len(), 8 | 12 | 14) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let field = |range: std::ops::Range<usize>| -> i8 {
        digits
            .get(range)
            .and_then(|part| part.parse().ok())
            .unwrap_or(0)
    };
    let year: i16 = digits[0..4].parse().map_err(|_| bad())?;
    let civil = jiff::civil::DateTime::new(
        year,
        field(4..6),
        field(6..8),
        field(8..10),
        field(10..12),
        field(12..14),
        0,
    )
    .map_err(|_| bad())?;
    let zone = if utc { TimeZone::UTC } else { local.clone() };
    let instant = civil.to_zoned(zone).map_err(|_| bad())?;
    u64::try_from(instant.timestamp().as_second()).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(field: &str) -> Result<KeyOptions, String> {
        parse_options(field, &TimeZone::UTC)
    }

    #[test]
    fn restrict_and_port_forwarding_combine_in_order() {
        assert!(!parse("restrict").unwrap().port_forwarding);
        assert!(!parse("no-port-forwarding").unwrap().port_forwarding);
        assert!(parse("restrict,port-forwarding").unwrap().port_forwarding);
        assert!(parse("no-pty,no-X11-forwarding").unwrap().port_forwarding);
    }

    #[test]
    fn permitopen_and_permitlisten_match_literally() {
        let options = parse(r#"permitopen="db.internal:5432",permitopen="[::1]:*",permitlisten="8080",permitlisten="0.0.0.0:*""#)
            .unwrap();
        let open = options.permit_open.unwrap();
        assert!(open.iter().any(|e| e.matches("DB.internal", 5432)));
        assert!(!open.iter().any(|e| e.matches("db.internal", 5433)));
        assert!(open.iter().any(|e| e.matches("[::1]", 22)));
        assert!(!open.iter().any(|e| e.matches("10.0.0.1", 5432)));
        let listen = options.permit_listen.unwrap();
        assert!(listen.iter().any(|e| e.matches_listen("localhost", 8080)));
        assert!(!listen.iter().any(|e| e.matches_listen("192.0.2.1", 8080)));
        assert!(listen.iter().any(|e| e.matches_listen("0.0.0.0", 9999)));
        let any = parse(r#"permitopen="*:443""#).unwrap().permit_open.unwrap();
        assert!(any[0].matches("anything", 443));
    }

    #[test]
    fn globs_with_question_marks_match_as_ssh_and_in_linear_time() {
        for (pattern, text, expected) in [
            ("h?st", "host", true),
            ("h?st", "hst", false),
            ("*.ex?mple.com", "a.b.example.com", true),
            ("?*", "", false),
            ("*?", "x", true),
            ("a*b?c", "aXXbYc", true),
            ("a*b?c", "aXXbc", false),
        ] {
            assert_eq!(
                glob_with_question_mark(pattern, text),
                expected,
                "{pattern} {text}"
            );
        }
        // Exponential for the recursive matcher this replaced (host
        // certificate principals come from the server); instant here.
        let pattern = "*?".repeat(40) + "x";
        let text = "a".repeat(200);
        assert!(!glob_with_question_mark(&pattern, &text));
    }

    #[test]
    fn from_patterns_with_negation_cidr_and_globs() {
        let from = parse(r#"from="10.0.0.0/8,!10.0.0.9,192.168.1.?,::1""#)
            .unwrap()
            .from
            .unwrap();
        let ip = |text: &str| Some(text.parse::<IpAddr>().unwrap());
        assert!(from.allows(ip("10.1.2.3")));
        assert!(!from.allows(ip("10.0.0.9")), "negation wins");
        assert!(from.allows(ip("192.168.1.7")));
        assert!(!from.allows(ip("192.168.1.17")));
        assert!(from.allows(ip("::1")));
        assert!(from.allows(ip("::ffff:10.1.2.3")));
        assert!(!from.allows(ip("172.16.0.1")));
        assert!(!from.allows(None), "no address (iroh) never matches");
    }

    #[test]
    fn expiry_times_in_utc_and_local_time() {
        let utc = parse(r#"expiry-time="20300102Z""#).unwrap().expires_at;
        assert_eq!(utc, Some(1_893_542_400));
        let with_time = parse(r#"expiry-time="203001020304Z""#).unwrap().expires_at;
        assert_eq!(with_time, Some(1_893_542_400 + 3 * 3600 + 4 * 60));
        // Two hours east of UTC: local midnight is 22:00 the day before.
        let two_hours_east = TimeZone::fixed(jiff::tz::offset(2));
        let local = parse_options(r#"expiry-time="20300102""#, &two_hours_east)
            .unwrap()
            .expires_at;
        assert_eq!(local, Some(1_893_542_400 - 7200));
        for bad in ["2030", "20301302", "2030010225", "yesterday"] {
            assert!(parse(&format!(r#"expiry-time="{bad}""#)).is_err(), "{bad}");
        }
    }

    #[test]
    fn cert_authority_with_principals_and_refusals() {
        let ca = parse(r#"cert-authority,principals="alice,deploy""#).unwrap();
        assert!(ca.cert_authority);
        assert_eq!(ca.principals, Some(vec!["alice".into(), "deploy".into()]));
        for (bad, why) in [
            ("principals=\"a\"", "cert-authority"),
            ("frobnicate", "not known"),
            ("from=10.0.0.1", "double quotes"),
            ("permitopen", "needs a value"),
            (r#"permitopen="nohost""#, "host:port"),
            (r#"permitopen="h:http""#, "port"),
            (r#"from="10.0.0.0/99""#, "range"),
        ] {
            let error = parse(bad).unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
        }
        assert!(parse(r#"command="echo a, b",environment="X=1""#).is_ok());
    }

    #[test]
    fn commas_inside_quotes_do_not_split() {
        assert_eq!(
            split_unquoted(r#"a,b="x,y",c="q\"uo,te""#, ','),
            vec!["a", r#"b="x,y""#, r#"c="q\"uo,te""#]
        );
    }
}
