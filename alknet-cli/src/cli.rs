//! The command line, as clap sees it.

use std::net::SocketAddr;
use std::path::PathBuf;

use alknet::auth::StartupLimits;
use alknet::proxy::{ForwardSpec, UpstreamProxy};
use clap::{Args, Parser, Subcommand};

use alknet::ListenSpec;

use crate::destination::SocksListen;
use crate::listen::TransportName;

/// SSH tunnels over any byte pipe.
///
/// `alknet serve` runs the server; `alknet connect` opens one SSH session to
/// it and offers SOCKS5 on a local port; `alknet call` calls one of the
/// server's operations. `alknet demo` runs a server and client on loopback.
#[derive(Debug, Parser)]
#[command(name = "alknet", version, about, long_about = None, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the SSH tunnel server.
    Serve(Box<ServeArgs>),
    /// Connect to a server and offer SOCKS5 through the tunnel.
    Connect(ConnectArgs),
    /// Call an operation on the server's control channel and print the
    /// result as JSON (a subscription prints one JSON line per item).
    Call(CallArgs),
    /// Create an OpenSSH Ed25519 key pair (<path> and <path>.pub).
    Keygen(KeygenArgs),
    /// Print a token proving you hold --identity, for transports that are
    /// not SSH (valid for about five minutes either side of now).
    Token(TokenArgs),
    /// Run a server and a client in this process on loopback, with fresh
    /// keys, to try alknet out.
    Demo(DemoArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Write the man pages: alknet(1) to standard output, or every page
    /// (alknet-serve(1), …) into --dir.
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Read settings from this TOML file (keys as the long flags, with `_`
    /// for `-`; relative paths are relative to the file). Flags override it.
    #[arg(long, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,

    /// The server's host key (OpenSSH Ed25519 private key; `alknet keygen`
    /// makes one). Required here or in --config. An encrypted key's
    /// passphrase is read from ALKNET_PASSPHRASE.
    #[arg(long, value_name = "PATH")]
    pub(crate) key: Option<PathBuf>,

    /// An OpenSSH host certificate for --key (made by `ssh-keygen -h -s
    /// CA -n NAME key.pub`), presented to clients that ask for one; they
    /// trust it through a `@cert-authority` line in known_hosts.
    #[arg(long, value_name = "PATH")]
    pub(crate) host_certificate: Option<PathBuf>,

    /// The public keys allowed to log in, one per line, as in OpenSSH's
    /// authorized_keys. Required (here or in --config) unless
    /// --cert-authority is given.
    #[arg(long, value_name = "PATH")]
    pub(crate) authorized_keys: Option<PathBuf>,

    /// Accept user certificates signed by the CA public keys in this file
    /// (as OpenSSH's TrustedUserCAKeys). The login name must be one of the
    /// certificate's principals; forwarding needs permit-port-forwarding.
    /// Repeatable.
    #[arg(long, value_name = "PATH")]
    pub(crate) cert_authority: Vec<PathBuf>,

    /// Where to listen: `tcp://addr`, `tls://addr`, `iroh://addr` (a UDP
    /// address), or a bare `addr` of the --transport kind. Repeatable; all listeners share keys, limits and
    /// shutdown. [default: 0.0.0.0:22]
    #[arg(long, value_name = "[SCHEME://]ADDR")]
    pub(crate) listen: Vec<ListenSpec>,

    /// The transport of bare --listen addresses. [default: tcp]
    #[arg(long, value_name = "KIND")]
    pub(crate) transport: Option<TransportName>,

    /// The TLS certificate chain (PEM), for tls:// listeners.
    #[arg(long, value_name = "PATH")]
    pub(crate) tls_cert: Option<PathBuf>,

    /// The TLS private key (PEM), for tls:// listeners.
    #[arg(long, value_name = "PATH")]
    pub(crate) tls_key: Option<PathBuf>,

    /// Make TLS listeners look like an ordinary nginx HTTPS site: clients
    /// that do not speak SSH get nginx's 404 (or 400), never a hint of SSH.
    #[arg(long)]
    pub(crate) stealth: bool,

    /// In stealth mode, seconds a web client gets to send a whole request
    /// head, and may idle between requests, before it is closed (nginx:
    /// client_header_timeout, keepalive_timeout). [default: 60]
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub(crate) stealth_timeout: Option<u64>,

    /// In stealth mode, the real web site behind the port: every visitor
    /// that is not a tunnel is passed on to it (http://HOST:PORT or
    /// unix:/PATH), so the port serves that site's pages. [default: none,
    /// nginx's 404]
    #[arg(long, value_name = "URL")]
    pub(crate) stealth_backend: Option<alknet::stealth::Backend>,

    /// In stealth mode, open a tunnel only for clients that knock with a
    /// token of an authorized key (`alknet connect --stealth`); a bare SSH
    /// handshake gets what any visitor gets, so an active probe finds a web
    /// site and nothing else.
    #[arg(long)]
    pub(crate) stealth_require_token: bool,

    /// Failed authentications allowed per connection before disconnecting.
    /// [default: 10]
    #[arg(long, value_name = "N")]
    pub(crate) max_auth_attempts: Option<usize>,

    /// Keys and certificates that may never log in: a file of OpenSSH
    /// public keys, or a KRL made by `ssh-keygen -k` (as sshd's
    /// RevokedKeys). Re-read on SIGHUP.
    #[arg(long, value_name = "PATH")]
    pub(crate) revoked_keys: Option<PathBuf>,

    /// The forwarding policy: a TOML file of ordered allow/deny rules (by
    /// host glob, CIDR, Unix-socket path, port range, alknet-* names,
    /// principals, and listen rules for -R). Re-read on SIGHUP, with the
    /// key and CA files. [default: allow TCP targets and -R above port 1023]
    #[arg(long, value_name = "PATH")]
    pub(crate) forward_policy: Option<PathBuf>,

    /// Connections one IP address may have open at once; more are closed
    /// at once. 0 means no limit. [default: 0]
    #[arg(long, value_name = "N")]
    pub(crate) max_connections_per_ip: Option<usize>,

    /// Connections not yet authenticated, as sshd's MaxStartups
    /// START:RATE:FULL: from START on, new ones are dropped with RATE%
    /// probability, rising to 100% at FULL. [default: 10:30:100]
    #[arg(long, value_name = "START:RATE:FULL")]
    pub(crate) max_startups: Option<StartupLimits>,

    /// Connections not yet authenticated from one address (sshd's
    /// PerSourceMaxStartups), so one flooding address cannot take every
    /// startup slot. 0 means no limit. [default: 5]
    #[arg(long, value_name = "N")]
    pub(crate) max_startups_per_source: Option<usize>,

    /// Seconds a client may take from connecting to being authenticated,
    /// TLS and stealth included (sshd's LoginGraceTime). [default: 60]
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub(crate) login_grace_time: Option<u64>,

    /// Seconds between keepalives to each client (sshd's
    /// ClientAliveInterval, with ClientAliveCountMax 3): a client whose
    /// network vanished without a word is dropped, with its channels and
    /// -R listeners, after about four of them. [default: 30]
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub(crate) keepalive_interval: Option<u64>,

    /// Remote forwards (-R) one session may hold at once. [default: 16]
    #[arg(long, value_name = "N")]
    pub(crate) max_remote_forwards: Option<usize>,

    /// Channels (tunnelled connections) one session may have open at once;
    /// more are refused with "resource shortage". Each may hold about
    /// 16 MiB its target has not read, so this bounds a session's memory.
    /// [default: 1024]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_channels_per_session: Option<u64>,

    /// Let remote forwards (`ssh -R`, `alknet connect -R`) listen on the
    /// address the client names, as OpenSSH's `GatewayPorts clientspecified`
    /// (`*` or an empty address: every interface, IPv4 and IPv6). Without
    /// it they listen on loopback only.
    #[arg(long)]
    pub(crate) gateway_ports: bool,

    /// Reach tunnel targets through this proxy instead of directly:
    /// socks5://host:port or http://host:port (HTTP CONNECT).
    #[arg(long, value_name = "URL")]
    pub(crate) proxy: Option<UpstreamProxy>,

    /// iroh listeners: `default` (n0's public relays and address lookup),
    /// `none` (no relay, no lookup: clients need --peer-addr), or the URL
    /// of a self-hosted relay [default: default].
    #[arg(long, value_name = "URL|none")]
    pub(crate) iroh_relay: Option<String>,

    #[command(flatten)]
    pub(crate) acme: crate::acme::AcmeArgs,
}

/// How to reach and log in to a server: shared by `connect` and `call`.
#[derive(Debug, Args)]
pub(crate) struct SessionArgs {
    /// The server as ssh takes it: [user@]host[:port] (IPv6 in brackets
    /// before a port; port 22 when none is given). With --transport iroh,
    /// [user@]ENDPOINT-ID. The same as --server (and --user).
    #[arg(value_name = "DESTINATION")]
    pub(crate) destination: Option<String>,

    /// The server, as host[:port] (port 22 when none is given), of the
    /// --transport kind or with a scheme: tcp://host:port, tls://host:port,
    /// iroh://ENDPOINT-ID. Repeat it to list more ways in to the same
    /// server: they are tried in order, each after a 0.5 s head start, and
    /// the first that connects is used (on every reconnection).
    #[arg(long, value_name = "[SCHEME://]HOST:PORT", env = "ALKNET_SERVER")]
    pub(crate) server: Vec<String>,

    /// The server's port, when DESTINATION or --server gives none (as ssh -p).
    #[arg(short = 'p', long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) port: Option<u16>,

    /// How to reach the server.
    #[arg(long, value_name = "KIND", default_value_t = TransportName::Tcp)]
    pub(crate) transport: TransportName,

    /// TLS: the name to send as SNI and to check the certificate against
    /// [default: the host part of --server].
    #[arg(long, value_name = "NAME")]
    pub(crate) tls_server_name: Option<String>,

    /// TLS: also trust the CA certificates in this PEM file. Repeatable.
    #[arg(long, value_name = "PATH")]
    pub(crate) tls_ca: Vec<PathBuf>,

    /// TLS: accept any server certificate. The SSH host key (--host-key) is
    /// then all that authenticates the server.
    #[arg(long)]
    pub(crate) insecure: bool,

    /// TLS: knock before SSH with a fresh token of --identity, as a server
    /// with --stealth-require-token demands (an ordinary-looking HTTPS
    /// request; without it, such a server shows only its web site).
    #[arg(long)]
    pub(crate) stealth: bool,

    /// iroh: the server's endpoint id (printed by `alknet serve` as
    /// `endpoint-id: …`).
    #[arg(long, value_name = "ENDPOINT-ID")]
    pub(crate) peer: Option<String>,

    /// iroh: an address where the server's endpoint listens (UDP), tried
    /// directly; needed with --iroh-relay none. Repeatable.
    #[arg(long, value_name = "IP:PORT")]
    pub(crate) peer_addr: Vec<SocketAddr>,

    /// iroh: `default` (n0's public relays and address lookup), `none`, or
    /// the URL of a self-hosted relay.
    #[arg(long, value_name = "URL|none", default_value = "default")]
    pub(crate) iroh_relay: String,

    /// Your private key (OpenSSH Ed25519). An encrypted key's passphrase is
    /// read from ALKNET_PASSPHRASE.
    #[arg(long, short = 'i', value_name = "PATH", env = "ALKNET_IDENTITY")]
    pub(crate) identity: PathBuf,

    /// An OpenSSH certificate for --identity [default: <identity>-cert.pub
    /// when that file exists, as ssh does].
    #[arg(long, value_name = "PATH")]
    pub(crate) certificate: Option<PathBuf>,

    /// User name to log in as (as ssh -l) [default: the user of
    /// DESTINATION, else your local user name].
    #[arg(long, short = 'l', value_name = "NAME")]
    pub(crate) user: Option<String>,

    /// The server's host key fingerprint (SHA256:…, as printed by the server
    /// or `ssh-keygen -lf`). Overrides known_hosts.
    #[arg(long, value_name = "SHA256:…")]
    pub(crate) host_key: Option<String>,

    /// Remember and check host keys in this file alone, instead of
    /// ~/.ssh/known_hosts, ~/.ssh/known_hosts2 (read) and
    /// ~/.config/alknet/known_hosts (read and written), as ssh's
    /// UserKnownHostsFile. A host met for the first time is remembered; a
    /// changed key is refused.
    #[arg(long, value_name = "PATH", env = "ALKNET_KNOWN_HOSTS")]
    pub(crate) known_hosts: Option<PathBuf>,

    /// Refuse a server whose host key is not in known_hosts instead of
    /// remembering it (as ssh's StrictHostKeyChecking=yes).
    #[arg(long)]
    pub(crate) strict_host_keys: bool,

    /// Reach the server through this proxy: socks5://host:port or
    /// http://host:port (HTTP CONNECT). With iroh, only http:// (for the
    /// relay connection; QUIC itself is UDP and never proxied).
    #[arg(long, value_name = "URL")]
    pub(crate) proxy: Option<UpstreamProxy>,

    /// Seconds between SSH keepalives. A server that answers none of three
    /// in a row is considered gone (and `connect` reconnects).
    #[arg(long, value_name = "SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub(crate) keepalive_interval: u64,
}

#[derive(Debug, Args)]
pub(crate) struct ConnectArgs {
    #[command(flatten)]
    pub(crate) session: SessionArgs,

    /// Where to offer SOCKS5 (domain names are resolved by the server):
    /// `[bind:]port` as ssh -D (bind defaults to 127.0.0.1), or `none` for
    /// a client that only forwards (-L, -R).
    #[arg(
        long,
        short = 'D',
        value_name = "[BIND:]PORT|none",
        default_value = "127.0.0.1:1080"
    )]
    pub(crate) socks5: SocksListen,

    /// Also offer an HTTP proxy here, `[bind:]port` (bind defaults to
    /// 127.0.0.1), for programs that read HTTPS_PROXY/HTTP_PROXY: CONNECT
    /// and absolute-form http:// requests go through the tunnel, names
    /// resolved by the server.
    #[arg(long, value_name = "[BIND:]PORT")]
    pub(crate) http_proxy: Option<SocksListen>,

    /// Forward a local port through the tunnel, as `ssh -L`:
    /// `[bind:]port:host:hostport` or `[bind:]port:/path/to/unix.sock`
    /// (IPv6 in brackets; bind defaults to 127.0.0.1). The target
    /// `alknet-control:0` is the server's call protocol. Repeatable.
    #[arg(long = "forward", short = 'L', value_name = "SPEC")]
    pub(crate) forwards: Vec<ForwardSpec>,

    /// Ask the server to listen and forward connections back here, as
    /// `ssh -R`: `[bind:]port:host:hostport` or `[bind:]port:/path/to/unix.sock`;
    /// `[bind:]port` alone makes it a SOCKS5 port whose targets this client
    /// dials (reverse dynamic forward, see --forward-policy). Port 0 lets
    /// the server choose (the client logs it). The server listens on
    /// loopback unless it runs with --gateway-ports. Requested again after
    /// every reconnection. Repeatable.
    #[arg(long = "remote-forward", short = 'R', value_name = "SPEC")]
    pub(crate) remote_forwards: Vec<ForwardSpec>,

    /// What reverse SOCKS5 forwards (`-R [bind:]port`) may dial from this
    /// machine: a policy file as the server's --forward-policy [default:
    /// everything but this machine's loopback].
    #[arg(long, value_name = "FILE")]
    pub(crate) forward_policy: Option<PathBuf>,

    /// Move to a fresh session after this many tunnels ended on the
    /// current one (0: never). Each finished tunnel keeps ~2.6 KiB until
    /// its session ends (a limit of the SSH library); open tunnels finish
    /// on the old session, -R forwards move along. [default: 10000]
    #[arg(long, value_name = "N")]
    pub(crate) renew_after_tunnels: Option<usize>,
}

#[derive(Debug, Args)]
pub(crate) struct CallArgs {
    #[command(flatten)]
    pub(crate) session: SessionArgs,

    /// The operation, such as /services/list (after DESTINATION, if given).
    #[arg(value_name = "OPERATION")]
    pub(crate) path: Option<String>,

    /// Its input, as JSON; `-` reads it from standard input [default: null].
    #[arg(value_name = "INPUT-JSON")]
    pub(crate) input: Option<String>,

    /// Seconds to wait for the answer of a query or mutation (a
    /// subscription runs until the server completes it).
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) timeout: u64,
}

#[derive(Debug, Args)]
pub(crate) struct KeygenArgs {
    /// Where to write the private key; the public key goes to <PATH>.pub.
    /// Existing files are never overwritten.
    #[arg(value_name = "PATH")]
    pub(crate) path: PathBuf,

    /// Comment stored in the key [default: user@host].
    #[arg(long, short = 'C', value_name = "TEXT")]
    pub(crate) comment: Option<String>,

    /// Encrypt the private key with the passphrase in this environment
    /// variable (OpenSSH's format; ALKNET_PASSPHRASE unlocks it later).
    /// Without it, on a terminal, keygen asks as ssh-keygen does (empty:
    /// no passphrase).
    #[arg(long, value_name = "VAR")]
    pub(crate) passphrase_env: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    /// Your private key (OpenSSH Ed25519). An encrypted key's passphrase is
    /// read from ALKNET_PASSPHRASE.
    #[arg(long, value_name = "PATH", env = "ALKNET_IDENTITY")]
    pub(crate) identity: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Where to offer SOCKS5.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:1080")]
    pub(crate) socks5: SocketAddr,
}

#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_name = "SHELL")]
    pub(crate) shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub(crate) struct ManArgs {
    /// Write alknet.1 and one page per subcommand (alknet-serve.1, …) into
    /// this directory instead.
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn connect_defaults_match_openssh_habits() {
        let cli = Cli::try_parse_from(["alknet", "connect", "--server", "h:22", "--identity", "k"])
            .unwrap();
        let Command::Connect(args) = cli.command else {
            panic!("not connect")
        };
        assert_eq!(args.socks5.0, Some("127.0.0.1:1080".parse().unwrap()));
        assert_eq!("none".parse::<SocksListen>(), Ok(SocksListen(None)));
        assert!("nowhere".parse::<SocksListen>().is_err());
        assert!(args.session.user.is_none());
    }

    #[test]
    fn bad_flags_are_errors_not_panics() {
        assert!(Cli::try_parse_from(["alknet", "connect", "--socks5", "not-an-address"]).is_err());
        assert!(Cli::try_parse_from(["alknet", "serve", "--bogus"]).is_err());
    }
}
