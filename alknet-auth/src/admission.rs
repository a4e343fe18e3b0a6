//! Admission: one function that answers "may this session do this?".
//!
//! Every channel a session asks for — a TCP target, a Unix socket, a
//! remote-forward listener, one of alknet's reserved services (the control
//! channel) — is judged here, from what the session's login established
//! ([`SessionGrant`]) and the server's current [`AuthConfig`]: the
//! certificate's `permit-port-forwarding`, the authorized_keys line's
//! `restrict` / `permitopen` / `permitlisten`, the reserved `alknet-*`
//! names, and the forwarding policy. Names are judged as the resolver will
//! read them, and once resolved, every address is judged again
//! ([`AuthConfig::admit_address`]) before anything is sent to it.
//!
//! No sockets, no clock: a function of plain values, tested as such.

use std::fmt;
use std::net::SocketAddr;

use alknet_identity::Identity;

use crate::address::{JudgedHost, canonical};
use crate::key_options::HostPort;
use crate::{AuthConfig, Verdict};

/// Host names with this prefix are reserved for alknet's own services
/// and are never dialled.
pub const RESERVED_PREFIX: &str = "alknet-";

/// Whether `host` is one of alknet's reserved names (`alknet-*`, any case).
pub fn is_reserved(host: &str) -> bool {
    matches!(JudgedHost::parse(host), JudgedHost::Name(name) if name.starts_with(RESERVED_PREFIX))
}

/// What a successful login established, for every later decision about
/// the session: who it is, which principals policy rules see, and what
/// its key or certificate lets it forward.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionGrant {
    identity: Identity,
    principals: Vec<String>,
    forwarding: bool,
    permit_open: Option<Vec<HostPort>>,
    permit_listen: Option<Vec<HostPort>>,
}

impl SessionGrant {
    /// A grant for `identity` with no principals and no restrictions of
    /// its own (the policy still applies): for embedders that authenticate
    /// by other means, and tests.
    pub fn new(identity: Identity) -> Self {
        Self {
            identity,
            principals: Vec::new(),
            forwarding: true,
            permit_open: None,
            permit_listen: None,
        }
    }

    /// With these principals, which `principals` policy rules match.
    pub fn with_principals(mut self, principals: Vec<String>) -> Self {
        self.principals = principals;
        self
    }

    /// With forwarding forbidden (a certificate without
    /// `permit-port-forwarding`, a `restrict`ed key): the session may log
    /// in and open nothing.
    pub fn without_forwarding(mut self) -> Self {
        self.forwarding = false;
        self
    }

    pub(crate) fn restricted_to(
        mut self,
        permit_open: Option<Vec<HostPort>>,
        permit_listen: Option<Vec<HostPort>>,
    ) -> Self {
        self.permit_open = permit_open;
        self.permit_listen = permit_listen;
        self
    }

    /// Who the session is.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The names the server authenticated it as.
    pub fn principals(&self) -> &[String] {
        &self.principals
    }

    /// Whether it may forward at all.
    pub fn may_forward(&self) -> bool {
        self.forwarding
    }
}

/// What a session asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelRequest<'a> {
    /// A `direct-tcpip` channel to `host:port`.
    Connect {
        /// As the client sent it.
        host: &'a str,
        /// The target port.
        port: u16,
    },
    /// A `direct-streamlocal` channel to a Unix socket.
    UnixSocket {
        /// The socket's path.
        path: &'a str,
    },
    /// A remote forward: the server listens on `host:port` (0: any port).
    Listen {
        /// The bind address as the client asked for it.
        host: &'a str,
        /// The port (0: the server picks).
        port: u16,
        /// How many remote forwards the session holds already.
        active: usize,
    },
    /// One of alknet's reserved services (such as the control channel,
    /// `alknet-control:0`), reached as a `direct-tcpip` channel.
    Service {
        /// Its reserved name.
        host: &'a str,
        /// Its port.
        port: u16,
    },
}

/// Why a request was refused. Messages never name the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The certificate lacks `permit-port-forwarding`, or the key is
    /// `restrict`ed / `no-port-forwarding`.
    ForwardingNotPermitted,
    /// Not among the authorized_keys line's `permitopen` / `permitlisten`.
    NotPermittedByKey,
    /// A forwarding-policy rule (or its default) denies it.
    Policy,
    /// An `alknet-*` name that is not a service: never dialled.
    Reserved,
    /// An unspecified address (`0.0.0.0`, `::`, `0`), which the kernel
    /// would take for this host: never dialled.
    UnspecifiedAddress,
    /// The session holds as many remote forwards as it may.
    TooManyRemoteForwards,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::ForwardingNotPermitted => "the certificate or key does not permit forwarding",
            Refusal::NotPermittedByKey => "not in the key's permitopen/permitlisten",
            Refusal::Policy => "denied by the forwarding policy",
            Refusal::Reserved => "a reserved alknet-* name",
            Refusal::UnspecifiedAddress => "an unspecified address",
            Refusal::TooManyRemoteForwards => "too many remote forwards on this session",
        })
    }
}

fn verdict(verdict: Verdict) -> Result<(), Refusal> {
    match verdict {
        Verdict::Allow => Ok(()),
        Verdict::Deny => Err(Refusal::Policy),
    }
}

impl AuthConfig {
    /// Whether the session `grant` describes may have `request`.
    pub fn admit(&self, grant: &SessionGrant, request: &ChannelRequest<'_>) -> Result<(), Refusal> {
        if !grant.forwarding {
            return Err(Refusal::ForwardingNotPermitted);
        }
        let principals = &grant.principals;
        match *request {
            ChannelRequest::Connect { host, port } => {
                let judged = JudgedHost::parse(host);
                if let JudgedHost::Name(name) = &judged
                    && name.starts_with(RESERVED_PREFIX)
                {
                    return Err(Refusal::Reserved);
                }
                if let JudgedHost::Ip(ip) = judged
                    && ip.is_unspecified()
                {
                    return Err(Refusal::UnspecifiedAddress);
                }
                permitted(grant.permit_open.as_deref(), |entry| {
                    entry.matches(host, port)
                })?;
                verdict(self.forwarding.connect_verdict(host, port, principals))
            }
            ChannelRequest::Service { host, port } => {
                permitted(grant.permit_open.as_deref(), |entry| {
                    entry.matches(host, port)
                })?;
                verdict(self.forwarding.connect_verdict(host, port, principals))
            }
            ChannelRequest::UnixSocket { path } => {
                verdict(self.forwarding.socket_verdict(path, principals))
            }
            ChannelRequest::Listen { host, port, active } => {
                if active >= self.max_remote_forwards {
                    return Err(Refusal::TooManyRemoteForwards);
                }
                permitted(grant.permit_listen.as_deref(), |entry| {
                    entry.matches_listen(host, port)
                })?;
                verdict(self.forwarding.listen_verdict(host, port, principals))
            }
        }
    }

    /// Whether an address a target resolved to (or a literal one) may be
    /// dialled for the session: never an unspecified one, and never one an
    /// address-range rule denies.
    pub fn admit_address(&self, grant: &SessionGrant, addr: SocketAddr) -> Result<(), Refusal> {
        let ip = canonical(addr.ip());
        if ip.is_unspecified() {
            return Err(Refusal::UnspecifiedAddress);
        }
        match self
            .forwarding
            .address_verdict(ip, addr.port(), &grant.principals)
        {
            Some(Verdict::Deny) => Err(Refusal::Policy),
            _ => Ok(()),
        }
    }
}

fn permitted(
    list: Option<&[HostPort]>,
    matches: impl Fn(&HostPort) -> bool,
) -> Result<(), Refusal> {
    match list {
        Some(entries) if !entries.iter().any(matches) => Err(Refusal::NotPermittedByKey),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_options::parse_options;
    use crate::{ForwardRule, ForwardingPolicy, TargetMatch};

    fn grant() -> SessionGrant {
        SessionGrant::new(Identity::default())
    }

    fn connect(host: &str, port: u16) -> ChannelRequest<'_> {
        ChannelRequest::Connect { host, port }
    }

    fn config(rules: Vec<ForwardRule>, default: Verdict) -> AuthConfig {
        AuthConfig::default().forwarding(ForwardingPolicy { rules, default })
    }

    #[test]
    fn reserved_names_and_unspecified_addresses_are_never_dialled() {
        let open = AuthConfig::default();
        for host in ["alknet-control", "ALKNET-other", "alknet-control."] {
            assert_eq!(
                open.admit(&grant(), &connect(host, 0)),
                Err(Refusal::Reserved)
            );
        }
        for host in ["0.0.0.0", "0", "::", "[::]", "0x0", "::ffff:0.0.0.0"] {
            assert_eq!(
                open.admit(&grant(), &connect(host, 80)),
                Err(Refusal::UnspecifiedAddress),
                "{host}"
            );
        }
        assert_eq!(
            open.admit_address(&grant(), "0.0.0.0:80".parse().unwrap()),
            Err(Refusal::UnspecifiedAddress)
        );
        assert_eq!(
            open.admit_address(&grant(), "[::]:80".parse().unwrap()),
            Err(Refusal::UnspecifiedAddress)
        );
        assert_eq!(open.admit(&grant(), &connect("example.com", 443)), Ok(()));
        let service = ChannelRequest::Service {
            host: "alknet-control",
            port: 0,
        };
        assert_eq!(open.admit(&grant(), &service), Ok(()));
    }

    #[test]
    fn principal_rules_see_only_what_the_server_authenticated() {
        let config = config(
            vec![
                ForwardRule::new(
                    Verdict::Allow,
                    TargetMatch::Cidr("127.0.0.0/8".parse().unwrap()),
                )
                .principals(["admin"]),
                ForwardRule::new(
                    Verdict::Deny,
                    TargetMatch::Cidr("127.0.0.0/8".parse().unwrap()),
                ),
            ],
            Verdict::Allow,
        );
        let plain = grant();
        assert_eq!(
            config.admit(&plain, &connect("127.0.0.1", 80)),
            Err(Refusal::Policy)
        );
        let admin = grant().with_principals(vec!["admin".into()]);
        assert_eq!(config.admit(&admin, &connect("127.0.0.1", 80)), Ok(()));
        assert_eq!(
            config.admit_address(&plain, "127.0.0.1:80".parse().unwrap()),
            Err(Refusal::Policy)
        );
        assert_eq!(
            config.admit_address(&admin, "127.0.0.1:80".parse().unwrap()),
            Ok(())
        );
    }

    #[test]
    fn a_session_without_forwarding_opens_nothing() {
        let open = AuthConfig::default();
        let none = grant().without_forwarding();
        for request in [
            connect("example.com", 80),
            ChannelRequest::Service {
                host: "alknet-control",
                port: 0,
            },
            ChannelRequest::UnixSocket { path: "/tmp/x" },
            ChannelRequest::Listen {
                host: "127.0.0.1",
                port: 8080,
                active: 0,
            },
        ] {
            assert_eq!(
                open.admit(&none, &request),
                Err(Refusal::ForwardingNotPermitted),
                "{request:?}"
            );
        }
    }

    #[test]
    fn permitopen_and_permitlisten_narrow_what_the_policy_allows() {
        let options = parse_options(
            r#"permitopen="db:5432",permitlisten="8080""#,
            &jiff::tz::TimeZone::UTC,
        )
        .unwrap();
        let limited = grant().restricted_to(options.permit_open, options.permit_listen);
        let open = AuthConfig::default();
        assert_eq!(open.admit(&limited, &connect("db", 5432)), Ok(()));
        assert_eq!(
            open.admit(&limited, &connect("db", 22)),
            Err(Refusal::NotPermittedByKey)
        );
        let listen = |port| ChannelRequest::Listen {
            host: "127.0.0.1",
            port,
            active: 0,
        };
        assert_eq!(open.admit(&limited, &listen(8080)), Ok(()));
        assert_eq!(
            open.admit(&limited, &listen(9090)),
            Err(Refusal::NotPermittedByKey)
        );
    }

    #[test]
    fn remote_forwards_follow_the_policy_and_the_per_session_cap() {
        let deny = config(Vec::new(), Verdict::Deny);
        let listen = |port, active| ChannelRequest::Listen {
            host: "127.0.0.1",
            port,
            active,
        };
        assert_eq!(deny.admit(&grant(), &listen(8080, 0)), Err(Refusal::Policy));
        let open = AuthConfig::default().max_remote_forwards(2);
        assert_eq!(open.admit(&grant(), &listen(8080, 1)), Ok(()));
        assert_eq!(open.admit(&grant(), &listen(80, 0)), Err(Refusal::Policy));
        assert_eq!(
            open.admit(&grant(), &listen(8080, 2)),
            Err(Refusal::TooManyRemoteForwards)
        );
    }

    #[test]
    fn unix_sockets_need_a_path_rule() {
        let open = AuthConfig::default();
        let socket = ChannelRequest::UnixSocket {
            path: "/run/secret.sock",
        };
        assert_eq!(open.admit(&grant(), &socket), Err(Refusal::Policy));
        let allowing = config(
            vec![ForwardRule::new(
                Verdict::Allow,
                TargetMatch::SocketPath("/run/*.sock".into()),
            )],
            Verdict::Allow,
        );
        assert_eq!(allowing.admit(&grant(), &socket), Ok(()));
    }
}
