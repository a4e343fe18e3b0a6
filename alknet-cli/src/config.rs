//! `alknet serve --config file.toml`: the static settings in a file, with
//! command-line flags taking precedence.

use std::path::{Path, PathBuf};

use alknet::auth::{
    DEFAULT_MAX_AUTH_ATTEMPTS, DEFAULT_MAX_REMOTE_FORWARDS, ForwardingPolicy, PolicyTable,
    StartupLimits,
};
use alknet::proxy::UpstreamProxy;
use alknet::stealth::Backend;
use serde::Deserialize;

use crate::cli::ServeArgs;
use crate::error::CliError;
use alknet::ListenSpec;

use crate::listen::TransportName;

/// The file's keys: the long flags' names with `_` for `-`. Unknown keys
/// are errors, so a typo is never silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    key: Option<PathBuf>,
    host_certificate: Option<PathBuf>,
    authorized_keys: Option<PathBuf>,
    cert_authority: Option<OneOrMany<PathBuf>>,
    listen: Option<OneOrMany<String>>,
    transport: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    stealth: Option<bool>,
    stealth_timeout: Option<u64>,
    stealth_backend: Option<String>,
    stealth_require_token: Option<bool>,
    max_auth_attempts: Option<usize>,
    max_connections_per_ip: Option<usize>,
    max_startups: Option<String>,
    max_startups_per_source: Option<usize>,
    login_grace_time: Option<u64>,
    keepalive_interval: Option<u64>,
    max_remote_forwards: Option<usize>,
    max_channels_per_session: Option<u64>,
    revoked_keys: Option<PathBuf>,
    gateway_ports: Option<bool>,
    proxy: Option<String>,
    iroh_relay: Option<String>,
    forward_policy: Option<PathBuf>,
    forwarding: Option<PolicyTable>,
    acme: Option<crate::acme::AcmeTable>,
}

/// A list setting written as one value or as an array (`listen = "tls://…"`
/// or `listen = ["tls://…", "tcp://…"]`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> From<OneOrMany<T>> for Vec<T> {
    fn from(value: OneOrMany<T>) -> Self {
        match value {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

/// Everything `serve` needs, resolved from flags, file and defaults.
#[derive(Debug)]
pub(crate) struct ServeSettings {
    pub(crate) key: PathBuf,
    pub(crate) host_certificate: Option<PathBuf>,
    pub(crate) authorized_keys: Option<PathBuf>,
    pub(crate) cert_authorities: Vec<PathBuf>,
    pub(crate) listen: Vec<ListenSpec>,
    pub(crate) transport: TransportName,
    pub(crate) tls_cert: Option<PathBuf>,
    pub(crate) tls_key: Option<PathBuf>,
    pub(crate) stealth: bool,
    pub(crate) stealth_timeout: u64,
    pub(crate) stealth_backend: Option<Backend>,
    pub(crate) stealth_require_token: bool,
    /// The flags' values, which win over the file at every reload.
    max_auth_attempts_flag: Option<usize>,
    max_connections_per_ip_flag: Option<usize>,
    max_startups_flag: Option<StartupLimits>,
    max_startups_per_source_flag: Option<usize>,
    max_remote_forwards_flag: Option<usize>,
    /// Seconds from accept to authentication (fixed at start).
    pub(crate) login_grace_time: u64,
    /// Seconds between keepalives to clients (fixed at start).
    pub(crate) keepalive_interval: u64,
    /// Channels per session (fixed at start).
    pub(crate) max_channels_per_session: usize,
    /// The revocation file (re-read on SIGHUP).
    pub(crate) revoked_keys: Option<PathBuf>,
    pub(crate) gateway_ports: bool,
    pub(crate) proxy: Option<UpstreamProxy>,
    /// `default`, `none` or a relay URL, for iroh listeners.
    pub(crate) iroh_relay: String,
    /// Certificates from ACME for TLS listeners.
    pub(crate) acme: Option<alknet::acme::AcmeConfig>,
    /// A separate policy file (re-read on SIGHUP).
    pub(crate) forward_policy: Option<PathBuf>,
    /// The config file, whose `[forwarding]` table is re-read on SIGHUP.
    pub(crate) config: Option<PathBuf>,
    /// The file's settings that only a restart applies, as read at start.
    start_only: toml::Table,
}

/// The limits SIGHUP re-reads.
pub(crate) struct Limits {
    pub(crate) max_connections_per_ip: usize,
    pub(crate) max_auth_attempts: usize,
    pub(crate) startups: StartupLimits,
    pub(crate) max_remote_forwards: usize,
}

impl ServeSettings {
    /// Flags first, then the file named by `--config`, then defaults.
    pub(crate) fn resolve(args: ServeArgs) -> Result<Self, CliError> {
        let text = match &args.config {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|error| {
                CliError::Usage(format!("cannot read {}: {error}", path.display()))
            })?),
            None => None,
        };
        Self::resolve_text(args, text.as_deref())
    }

    /// [`resolve`](Self::resolve) with the config file's `text` already
    /// read (the fuzz target's way in).
    pub(crate) fn resolve_text(args: ServeArgs, text: Option<&str>) -> Result<Self, CliError> {
        let (file, base) = match (&args.config, text) {
            (Some(path), Some(text)) => {
                let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
                (parse(text, path)?, base)
            }
            _ => (ConfigFile::default(), PathBuf::new()),
        };
        let bad = |path: &Option<PathBuf>, what: &str, reason: String| {
            CliError::Usage(format!(
                "{}: {what}: {reason}",
                path.as_deref()
                    .map(Path::display)
                    .map(|d| d.to_string())
                    .unwrap_or_default()
            ))
        };
        let from_file = |value: Option<PathBuf>| value.map(|path| base.join(path));

        let listen = if !args.listen.is_empty() {
            args.listen
        } else if let Some(values) = file.listen.map(Vec::from) {
            values
                .iter()
                .map(|value| {
                    value
                        .parse::<ListenSpec>()
                        .map_err(|reason| bad(&args.config, "listen", reason))
                })
                .collect::<Result<_, _>>()?
        } else {
            vec!["0.0.0.0:22".parse().map_err(CliError::Usage)?]
        };
        let transport = match (args.transport, file.transport) {
            (Some(kind), _) => kind,
            (None, Some(name)) => clap::ValueEnum::from_str(&name, true).map_err(|_| {
                bad(
                    &args.config,
                    "transport",
                    format!("unknown transport {name:?}"),
                )
            })?,
            (None, None) => TransportName::Tcp,
        };
        let proxy = match (args.proxy, file.proxy) {
            (Some(proxy), _) => Some(proxy),
            (None, Some(url)) => Some(url.parse().map_err(|e: alknet::proxy::ProxyError| {
                bad(&args.config, "proxy", e.to_string())
            })?),
            (None, None) => None,
        };
        let stealth_backend = match (args.stealth_backend, file.stealth_backend) {
            (Some(backend), _) => Some(backend),
            (None, Some(url)) => Some(url.parse().map_err(
                |e: alknet::stealth::BackendParseError| {
                    bad(&args.config, "stealth_backend", e.to_string())
                },
            )?),
            (None, None) => None,
        };
        if file.forward_policy.is_some() && file.forwarding.is_some() {
            return Err(bad(
                &args.config,
                "forward_policy",
                "give forward_policy or a [forwarding] table, not both".into(),
            ));
        }
        let forward_policy = args
            .forward_policy
            .or_else(|| from_file(file.forward_policy.clone()));
        let authorized_keys = args
            .authorized_keys
            .or_else(|| from_file(file.authorized_keys.clone()));
        let revoked_keys = args
            .revoked_keys
            .or_else(|| from_file(file.revoked_keys.clone()));
        let cert_authorities: Vec<PathBuf> = if args.cert_authority.is_empty() {
            file.cert_authority
                .map(Vec::from)
                .unwrap_or_default()
                .into_iter()
                .map(|p| base.join(p))
                .collect()
        } else {
            args.cert_authority
        };
        if authorized_keys.is_none() && cert_authorities.is_empty() {
            return Err(CliError::Usage(
                "nobody could log in: pass --authorized-keys or --cert-authority (or set them in --config)".into(),
            ));
        }
        let key = args.key.or_else(|| from_file(file.key)).ok_or_else(|| {
            CliError::Usage("the host key is missing: pass --key or set key in --config".into())
        })?;
        let acme = args.acme.resolve(file.acme, &base, &key)?;
        if acme.is_some()
            && !listen
                .iter()
                .any(|spec| spec.kind_or(transport.into()) == alknet::TransportChoice::Tls)
        {
            return Err(CliError::Usage(
                "ACME certificates are for TLS listeners: add one with --listen tls://ADDR".into(),
            ));
        }
        if acme.is_some() && (args.tls_cert.is_some() || args.tls_key.is_some()) {
            return Err(CliError::Usage(
                "ACME certificates (--acme-domain, --acme-ip) and --tls-cert/--tls-key exclude each other: pick one".into(),
            ));
        }
        Ok(Self {
            key,
            host_certificate: args
                .host_certificate
                .or_else(|| from_file(file.host_certificate)),
            acme,
            authorized_keys,
            cert_authorities,
            listen,
            transport,
            tls_cert: args.tls_cert.or_else(|| from_file(file.tls_cert)),
            tls_key: args.tls_key.or_else(|| from_file(file.tls_key)),
            stealth: args.stealth || file.stealth.unwrap_or(false),
            stealth_timeout: args
                .stealth_timeout
                .or(file.stealth_timeout)
                .unwrap_or(60)
                .clamp(1, 3600),
            stealth_backend,
            stealth_require_token: args.stealth_require_token
                || file.stealth_require_token.unwrap_or(false),
            max_auth_attempts_flag: args.max_auth_attempts,
            max_connections_per_ip_flag: args.max_connections_per_ip,
            max_startups_flag: args.max_startups,
            max_startups_per_source_flag: args.max_startups_per_source,
            max_remote_forwards_flag: args.max_remote_forwards,
            login_grace_time: args
                .login_grace_time
                .or(file.login_grace_time)
                .unwrap_or(60)
                .clamp(1, 3600),
            keepalive_interval: args
                .keepalive_interval
                .or(file.keepalive_interval)
                .unwrap_or(30)
                .clamp(1, 3600),
            max_channels_per_session: args
                .max_channels_per_session
                .or(file.max_channels_per_session)
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(alknet::DEFAULT_MAX_CHANNELS_PER_SESSION)
                .max(1),
            revoked_keys,
            iroh_relay: args
                .iroh_relay
                .or(file.iroh_relay)
                .unwrap_or_else(|| "default".to_owned()),
            gateway_ports: args.gateway_ports || file.gateway_ports.unwrap_or(false),
            proxy,
            forward_policy,
            start_only: args.config.as_deref().map(start_only).unwrap_or_default(),
            config: args.config,
        })
    }

    /// The rate limits as configured now: each flag, else the config file
    /// read fresh, else the default. For SIGHUP.
    pub(crate) fn limits_now(&self) -> Result<Limits, CliError> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|error| {
                    CliError::Usage(format!("cannot read {}: {error}", path.display()))
                })?;
                parse(&text, path)?
            }
            None => ConfigFile::default(),
        };
        let mut startups = match (self.max_startups_flag, &file.max_startups) {
            (Some(limits), _) => limits,
            (None, Some(text)) => text.parse().map_err(|reason: String| {
                CliError::Usage(format!(
                    "{}: max_startups: {reason}",
                    self.config
                        .as_deref()
                        .map(Path::display)
                        .map(|d| d.to_string())
                        .unwrap_or_default()
                ))
            })?,
            (None, None) => StartupLimits::default(),
        };
        if let Some(per_source) = self
            .max_startups_per_source_flag
            .or(file.max_startups_per_source)
        {
            startups.per_source = per_source;
        }
        Ok(Limits {
            startups,
            max_remote_forwards: self
                .max_remote_forwards_flag
                .or(file.max_remote_forwards)
                .unwrap_or(DEFAULT_MAX_REMOTE_FORWARDS),
            max_connections_per_ip: self
                .max_connections_per_ip_flag
                .or(file.max_connections_per_ip)
                .unwrap_or(0),
            max_auth_attempts: self
                .max_auth_attempts_flag
                .or(file.max_auth_attempts)
                .unwrap_or(DEFAULT_MAX_AUTH_ATTEMPTS),
        })
    }

    /// The forwarding policy as configured now: the --forward-policy file,
    /// else the config file's `[forwarding]` table, else allow everything.
    /// Read fresh on every call, for SIGHUP.
    pub(crate) fn forwarding_policy(&self) -> Result<ForwardingPolicy, CliError> {
        if let Some(path) = &self.forward_policy {
            return Ok(ForwardingPolicy::load(path)?);
        }
        match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|error| {
                    CliError::Usage(format!("cannot read {}: {error}", path.display()))
                })?;
                let file = parse(&text, path)?;
                Ok(file
                    .forwarding
                    .unwrap_or_default()
                    .into_policy(&path.display().to_string())?)
            }
            None => Ok(ForwardingPolicy::default()),
        }
    }
}

/// Config-file keys read once at start (listeners, keys, per-session
/// settings); SIGHUP reloads the rest.
const START_ONLY: [&str; 17] = [
    "key",
    "host_certificate",
    "listen",
    "transport",
    "tls_cert",
    "tls_key",
    "stealth",
    "stealth_timeout",
    "stealth_backend",
    "stealth_require_token",
    "login_grace_time",
    "keepalive_interval",
    "max_channels_per_session",
    "gateway_ports",
    "proxy",
    "iroh_relay",
    "acme",
];

/// The start-only keys of the file at `path` (empty if it cannot be read:
/// the reload itself reports that).
fn start_only(path: &Path) -> toml::Table {
    let Ok(text) = std::fs::read_to_string(path) else {
        return toml::Table::new();
    };
    let Ok(table) = text.parse::<toml::Table>() else {
        return toml::Table::new();
    };
    table
        .into_iter()
        .filter(|(key, _)| START_ONLY.contains(&key.as_str()))
        .collect()
}

impl ServeSettings {
    /// The start-only settings the config file now changes, for SIGHUP to
    /// say that they wait for a restart.
    pub(crate) fn restart_needed(&self) -> Vec<String> {
        let Some(path) = &self.config else {
            return Vec::new();
        };
        let now = start_only(path);
        START_ONLY
            .iter()
            .filter(|key| now.get(**key) != self.start_only.get(**key))
            .map(|key| (*key).to_owned())
            .collect()
    }
}

fn parse(text: &str, path: &Path) -> Result<ConfigFile, CliError> {
    toml::from_str(text).map_err(|error| {
        // toml's message names the key and shows the line; keep it on one line.
        let message = error.message().to_owned();
        let line = error
            .span()
            // Lines before the span, plus its own (a span may start a line).
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
        match line {
            Some(line) => CliError::Usage(format!("{} line {line}: {message}", path.display())),
            None => CliError::Usage(format!("{}: {message}", path.display())),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn config_errors_name_the_line_of_the_key() {
        let path = Path::new("alknet.toml");
        let unknown = parse(
            "key = \"k\"\nauthorized_keys = \"a\"\nbogus_key = 1\n",
            path,
        )
        .unwrap_err()
        .to_string();
        assert!(
            unknown.starts_with("alknet.toml line 3: unknown field `bogus_key`"),
            "{unknown}"
        );
        let wrong_type = parse("key = \"k\"\nstealth = \"yes\"\n", path)
            .unwrap_err()
            .to_string();
        assert!(
            wrong_type.starts_with("alknet.toml line 2:"),
            "{wrong_type}"
        );
    }

    fn serve_args(args: &[&str]) -> ServeArgs {
        let cli =
            crate::cli::Cli::try_parse_from([&["alknet", "serve"][..], args].concat()).unwrap();
        match cli.command {
            crate::cli::Command::Serve(args) => *args,
            _ => unreachable!(),
        }
    }

    fn write(dir: &Path, text: &str) -> String {
        let path = dir.join("alknet.toml");
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    #[test]
    fn file_values_apply_and_flags_override_them() {
        let dir = tempfile::tempdir().unwrap();
        let config = write(
            dir.path(),
            "key = \"host_key\"\nauthorized_keys = \"/etc/ak\"\nlisten = [\"tls://127.0.0.1:443\", \"127.0.0.1:22\"]\n\
             tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\nstealth = true\nmax_auth_attempts = 3\n",
        );
        let settings = ServeSettings::resolve(serve_args(&["--config", &config])).unwrap();
        assert_eq!(
            settings.key,
            dir.path().join("host_key"),
            "relative to the file"
        );
        assert_eq!(settings.authorized_keys, Some(PathBuf::from("/etc/ak")));
        assert_eq!(settings.listen.len(), 2);
        assert!(settings.stealth);
        assert_eq!(settings.limits_now().unwrap().max_auth_attempts, 3);

        let settings = ServeSettings::resolve(serve_args(&[
            "--config",
            &config,
            "--key",
            "/other",
            "--listen",
            "tcp://127.0.0.1:2222",
            "--max-auth-attempts",
            "5",
        ]))
        .unwrap();
        assert_eq!(settings.key, PathBuf::from("/other"));
        assert_eq!(settings.listen.len(), 1);
        assert_eq!(settings.limits_now().unwrap().max_auth_attempts, 5);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        for (text, expected) in [
            ("key = \"k\"\nlisten_on = [\"x\"]\n", "listen_on"),
            ("key = \"k\"\nmax_auth_attempts = \"ten\"\n", "line 2"),
            ("listen = [\"tls://nowhere\"]\n", "listen"),
            ("transport = \"carrier-pigeon\"\n", "transport"),
            ("not toml at all", "alknet.toml"),
        ] {
            let config = write(dir.path(), text);
            let error = ServeSettings::resolve(serve_args(&["--config", &config]))
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
            assert!(!error.contains('\n'), "one line: {error}");
        }
    }

    #[test]
    fn single_values_stand_for_one_element_lists() {
        let dir = tempfile::tempdir().unwrap();
        let config = write(
            dir.path(),
            "key = \"k\"\ncert_authority = \"ca.pub\"\nlisten = \"tcp://127.0.0.1:2222\"\n",
        );
        let settings = ServeSettings::resolve(serve_args(&["--config", &config])).unwrap();
        assert_eq!(settings.cert_authorities, vec![dir.path().join("ca.pub")]);
        assert_eq!(settings.listen.len(), 1);
        assert_eq!(settings.listen[0].addr, "127.0.0.1:2222");
    }

    #[test]
    fn a_policy_file_and_a_forwarding_table_together_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = write(
            dir.path(),
            "key = \"k\"\nauthorized_keys = \"ak\"\nforward_policy = \"p.toml\"\n\
             [forwarding]\ndefault = \"deny\"\n",
        );
        let error = ServeSettings::resolve(serve_args(&["--config", &config]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("not both"), "{error}");
    }

    #[test]
    fn a_reload_names_the_settings_that_wait_for_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let config = write(
            dir.path(),
            "key = \"k\"\nauthorized_keys = \"ak\"\nlisten = \"tcp://127.0.0.1:2222\"\nmax_auth_attempts = 3\n",
        );
        let settings = ServeSettings::resolve(serve_args(&["--config", &config])).unwrap();
        assert!(settings.restart_needed().is_empty());
        write(
            dir.path(),
            "key = \"k\"\nauthorized_keys = \"ak\"\nlisten = \"tcp://127.0.0.1:2223\"\nmax_auth_attempts = 4\n\
             stealth = true\n",
        );
        assert_eq!(settings.restart_needed(), ["listen", "stealth"]);
    }

    #[test]
    fn without_a_file_the_key_flags_are_required() {
        let error = ServeSettings::resolve(serve_args(&["--authorized-keys", "ak"])).unwrap_err();
        assert!(error.to_string().contains("--key"), "{error}");
        let settings =
            ServeSettings::resolve(serve_args(&["--key", "k", "--authorized-keys", "ak"])).unwrap();
        assert_eq!(settings.listen[0].addr, "0.0.0.0:22");
        assert_eq!(settings.stealth_timeout, 60);
    }
}
