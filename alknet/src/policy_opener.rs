//! What a client dials for the server: the targets of reverse SOCKS5
//! forwards (`-R [bind:]port` alone), judged by the client's own
//! forwarding policy before anything is dialled — names and the addresses
//! they resolve to, as the server judges its own.

use std::sync::Arc;
use std::time::Duration;

use alknet_auth::{ForwardRule, ForwardingPolicy, TargetMatch, Verdict};
use alknet_proxy::{BoxStream, Dialer, OpenError, OpenErrorKind, StreamOpener, TargetAddr};
use async_trait::async_trait;

/// Dials directly, for the server's side, what `policy` allows.
pub(crate) struct PolicyOpener {
    dialer: Dialer,
    policy: Arc<ForwardingPolicy>,
}

impl PolicyOpener {
    pub(crate) fn new(policy: Arc<ForwardingPolicy>, timeout: Duration) -> Self {
        Self {
            dialer: Dialer::direct(timeout),
            policy,
        }
    }
}

/// The policy without `--forward-policy`: everything but this machine's
/// loopback (a name that resolves there included), so that lending the
/// network does not lend the machine's own local services.
pub fn default_client_policy() -> ForwardingPolicy {
    let deny = |net: &str| {
        ForwardRule::new(
            Verdict::Deny,
            TargetMatch::Cidr(net.parse().expect("a valid range")),
        )
    };
    ForwardingPolicy {
        rules: vec![
            deny("127.0.0.0/8"),
            deny("::1/128"),
            deny("0.0.0.0/8"),
            deny("::/128"),
        ],
        default: Verdict::Allow,
    }
}

#[async_trait]
impl StreamOpener for PolicyOpener {
    async fn open(&self, target: &TargetAddr) -> Result<BoxStream, OpenError> {
        let (host, port) = match target {
            TargetAddr::Ip(addr) => (addr.ip().to_string(), addr.port()),
            TargetAddr::Domain(name, port) => (name.clone(), *port),
        };
        if self.policy.connect_verdict(&host, port, &[]) == Verdict::Deny {
            return Err(OpenError::with_detail(
                OpenErrorKind::NotAllowed,
                "the client's forwarding policy refuses this target",
            ));
        }
        self.dialer
            .dial(target, |addr| {
                self.policy.address_verdict(addr.ip(), port, &[]) != Some(Verdict::Deny)
            })
            .await
    }

    fn describe(&self) -> String {
        "the client's network".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn loopback_is_refused_by_default_names_included() {
        let opener = PolicyOpener::new(Arc::new(default_client_policy()), Duration::from_secs(5));
        for target in [
            TargetAddr::from_host_port("127.0.0.1", 22),
            TargetAddr::from_host_port("::1", 22),
            TargetAddr::from_host_port("localhost", 22),
        ] {
            let Err(error) = opener.open(&target).await else {
                panic!("{target:?} was dialled");
            };
            assert_eq!(error.kind(), OpenErrorKind::NotAllowed, "{target:?}");
        }
    }
}
