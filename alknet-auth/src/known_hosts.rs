//! Remembered server host keys, in OpenSSH's `known_hosts` format, so that
//! `ssh` and alknet share one file: plain and hashed (`|1|`) host names,
//! `[host]:port`, `*`/`?` wildcards and `!` negation, `@cert-authority`
//! and `@revoked` lines.
//!
//! Parsing and matching work on text and keys; reading and appending
//! files are separate, small functions at the edge.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit as _, Mac as _};
use ssh_key::certificate::CertType;
use ssh_key::known_hosts::{Entry, HostPatterns, Marker};
use ssh_key::{Certificate, HashAlg, PublicKey};

use crate::AuthError;
use crate::key_options::glob_with_question_mark;

/// The name a host is recorded under: `host` on port 22, `[host]:port`
/// elsewhere (as OpenSSH writes it). An IPv6 address is written bare
/// inside the brackets.
pub fn known_hosts_name(host: &str, port: u16) -> String {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if port == 22 {
        host.to_ascii_lowercase()
    } else {
        format!("[{}]:{port}", host.to_ascii_lowercase())
    }
}

/// What a server presented: a bare host key or a host certificate.
#[derive(Clone, Copy, Debug)]
pub enum PresentedHostKey<'a> {
    /// A plain public key.
    Key(&'a PublicKey),
    /// An OpenSSH host certificate (`ssh-keygen -h`).
    Certificate(&'a Certificate),
}

impl PresentedHostKey<'_> {
    /// The key the server proves it holds.
    pub fn public_key(&self) -> PublicKey {
        match self {
            Self::Key(key) => (*key).clone(),
            Self::Certificate(cert) => PublicKey::from(cert.public_key().clone()),
        }
    }
}

/// Where a known_hosts line came from, for messages that say what to fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownHostsLine {
    /// The file.
    pub file: PathBuf,
    /// Its 1-based line number.
    pub line: usize,
}

impl std::fmt::Display for KnownHostsLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// The verdict on a presented host key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostKeyStatus {
    /// A line names this host with this key.
    Known(KnownHostsLine),
    /// A host certificate signed by a `@cert-authority` of this host,
    /// valid now, naming the host among its principals.
    Certified(KnownHostsLine),
    /// No line names this host.
    Unknown,
    /// Lines name this host with other keys: the key changed, or someone
    /// is in the middle. The first such line is given.
    Changed {
        /// A line with the key this host had.
        line: KnownHostsLine,
        /// That key's fingerprint.
        known: String,
    },
    /// A `@revoked` line matches the key (or the certificate's key or CA).
    Revoked(KnownHostsLine),
}

struct Remembered {
    origin: KnownHostsLine,
    marker: Option<Marker>,
    patterns: HostPatterns,
    key: PublicKey,
}

/// The lines of one or more known_hosts files, in the order read.
#[derive(Default)]
pub struct KnownHosts {
    lines: Vec<Remembered>,
    skipped: Vec<KnownHostsLine>,
}

impl std::fmt::Debug for KnownHosts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KnownHosts")
            .field("lines", &self.lines.len())
            .field("skipped", &self.skipped)
            .finish()
    }
}

impl KnownHosts {
    /// Reads `files` in order; a file that does not exist adds nothing.
    pub fn load(files: &[PathBuf]) -> Result<Self, AuthError> {
        let mut known = Self::default();
        for file in files {
            match fs::read_to_string(file) {
                Ok(text) => known.add(&text, file),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(AuthError::Read {
                        source_name: file.display().to_string(),
                        error,
                    });
                }
            }
        }
        Ok(known)
    }

    /// Adds the lines of `text`, read from `file`. Lines that cannot be
    /// read (a key type alknet does not know, a typo) are skipped, as
    /// OpenSSH skips them; [`KnownHosts::skipped`] lists them.
    pub fn add(&mut self, text: &str, file: &Path) {
        for (index, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let origin = KnownHostsLine {
                file: file.to_owned(),
                line: index + 1,
            };
            match line.parse::<Entry>() {
                Ok(entry) => self.lines.push(Remembered {
                    origin,
                    marker: entry.marker().copied(),
                    patterns: entry.host_patterns().clone(),
                    key: entry.public_key().clone(),
                }),
                Err(_) => self.skipped.push(origin),
            }
        }
    }

    /// Lines that were not understood.
    pub fn skipped(&self) -> &[KnownHostsLine] {
        &self.skipped
    }

    /// Judges what the server `name` (see [`known_hosts_name`]; `host` is
    /// the bare host name for certificate principals) presented, at `now`
    /// (seconds since the Unix epoch).
    pub fn check(
        &self,
        name: &str,
        host: &str,
        presented: PresentedHostKey<'_>,
        now: u64,
    ) -> HostKeyStatus {
        let key = presented.public_key();
        let ca = match presented {
            PresentedHostKey::Certificate(cert) => {
                Some(PublicKey::from(cert.signature_key().clone()))
            }
            PresentedHostKey::Key(_) => None,
        };
        let for_host = || {
            self.lines
                .iter()
                .filter(|line| host_matches(&line.patterns, name))
        };

        // A revoked key is refused whatever else the files say.
        if let Some(revoked) = for_host().find(|line| {
            line.marker == Some(Marker::Revoked)
                && (same_key(&line.key, &key)
                    || ca.as_ref().is_some_and(|ca| same_key(&line.key, ca)))
        }) {
            return HostKeyStatus::Revoked(revoked.origin.clone());
        }
        if let PresentedHostKey::Certificate(cert) = presented
            && let Some(authority) = for_host().find(|line| {
                line.marker == Some(Marker::CertAuthority)
                    && ca.as_ref().is_some_and(|ca| same_key(&line.key, ca))
            })
            && host_certificate_valid(cert, &authority.key, host, now)
        {
            return HostKeyStatus::Certified(authority.origin.clone());
        }
        // Otherwise the (certified) key itself must be known, as OpenSSH
        // falls back to the plain key.
        let mut plain = for_host().filter(|line| line.marker.is_none()).peekable();
        let Some(first) = plain.peek().map(|line| line.origin.clone()) else {
            return HostKeyStatus::Unknown;
        };
        let mut first_other = None;
        for line in plain {
            if same_key(&line.key, &key) {
                return HostKeyStatus::Known(line.origin.clone());
            }
            first_other.get_or_insert(line);
        }
        let other = first_other.map_or_else(
            || (first, String::new()),
            |line| {
                (
                    line.origin.clone(),
                    line.key.fingerprint(HashAlg::Sha256).to_string(),
                )
            },
        );
        HostKeyStatus::Changed {
            line: other.0,
            known: other.1,
        }
    }
}

fn same_key(a: &PublicKey, b: &PublicKey) -> bool {
    a.key_data() == b.key_data()
}

fn host_certificate_valid(cert: &Certificate, ca: &PublicKey, host: &str, now: u64) -> bool {
    cert.cert_type() == CertType::Host
        && cert
            .validate_at(now, [&ca.fingerprint(HashAlg::Sha256)])
            .is_ok()
        && cert.valid_principals().iter().any(|principal| {
            glob_with_question_mark(&principal.to_ascii_lowercase(), &host.to_ascii_lowercase())
        })
}

/// Whether a line's host field names `name`: a hashed name by HMAC-SHA1,
/// patterns as OpenSSH matches them (any positive match and no negated
/// one; case-insensitive).
fn host_matches(patterns: &HostPatterns, name: &str) -> bool {
    match patterns {
        HostPatterns::HashedName { salt, hash } => {
            let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(salt) else {
                return false;
            };
            mac.update(name.as_bytes());
            mac.verify_slice(hash).is_ok()
        }
        HostPatterns::Patterns(patterns) => {
            let name = name.to_ascii_lowercase();
            let mut matched = false;
            for pattern in patterns {
                let (negated, pattern) = match pattern.strip_prefix('!') {
                    Some(rest) => (true, rest),
                    None => (false, pattern.as_str()),
                };
                if glob_with_question_mark(&pattern.to_ascii_lowercase(), &name) {
                    if negated {
                        return false;
                    }
                    matched = true;
                }
            }
            matched
        }
    }
}

/// Appends `name key` to `file`, creating it (mode 0600) and its directory
/// (0700) when missing.
pub fn remember_host_key(file: &Path, name: &str, key: &PublicKey) -> Result<(), AuthError> {
    let write_error = |error| AuthError::Write {
        source_name: file.display().to_string(),
        error,
    };
    if let Some(dir) = file.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(write_error)?;
    }
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut out = options.open(file).map_err(write_error)?;
    let mut key = key.clone();
    key.set_comment("");
    let encoded = key
        .to_openssh()
        .map_err(|error| write_error(std::io::Error::other(error.to_string())))?;
    writeln!(out, "{name} {}", encoded.trim_end()).map_err(write_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    const KEY_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti";

    fn key(text: &str) -> PublicKey {
        text.parse().unwrap()
    }

    fn known(text: &str) -> KnownHosts {
        let mut known = KnownHosts::default();
        known.add(text, Path::new("kh"));
        known
    }

    fn status(text: &str, name: &str, presented: &str) -> HostKeyStatus {
        let presented = key(presented);
        known(text).check(name, "host", PresentedHostKey::Key(&presented), 0)
    }

    fn at(line: usize) -> KnownHostsLine {
        KnownHostsLine {
            file: "kh".into(),
            line,
        }
    }

    #[test]
    fn names_carry_the_port_unless_it_is_22() {
        assert_eq!(known_hosts_name("Example.COM", 22), "example.com");
        assert_eq!(known_hosts_name("127.0.0.1", 2222), "[127.0.0.1]:2222");
        assert_eq!(known_hosts_name("[::1]", 2222), "[::1]:2222");
    }

    #[test]
    fn a_known_key_an_unknown_host_and_a_changed_key() {
        let file = format!("# comment\n\n[127.0.0.1]:2222 {KEY_A}\n");
        assert_eq!(
            status(&file, "[127.0.0.1]:2222", KEY_A),
            HostKeyStatus::Known(at(3))
        );
        assert_eq!(status(&file, "127.0.0.1", KEY_A), HostKeyStatus::Unknown);
        let HostKeyStatus::Changed { line, known } = status(&file, "[127.0.0.1]:2222", KEY_B)
        else {
            panic!("a different key must be a change");
        };
        assert_eq!(line, at(3));
        assert_eq!(known, key(KEY_A).fingerprint(HashAlg::Sha256).to_string());
    }

    #[test]
    fn patterns_wildcards_and_negation() {
        let file = format!("*.example.com,!bad.example.com,h?st {KEY_A}\n");
        assert!(matches!(
            status(&file, "a.example.com", KEY_A),
            HostKeyStatus::Known(_)
        ));
        assert!(matches!(
            status(&file, "HOST", KEY_A),
            HostKeyStatus::Known(_)
        ));
        assert_eq!(
            status(&file, "bad.example.com", KEY_A),
            HostKeyStatus::Unknown
        );
        assert_eq!(status(&file, "example.com", KEY_A), HostKeyStatus::Unknown);
    }

    #[test]
    fn hashed_names_match_by_hmac() {
        // Made by `ssh-keygen -H` for the name "[127.0.0.1]:2222".
        let salt = [7u8; 20];
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(&salt).unwrap();
        mac.update(b"[127.0.0.1]:2222");
        let hash = mac.finalize().into_bytes();
        let line = HostPatterns::HashedName {
            salt: salt.to_vec(),
            hash: hash.into(),
        }
        .to_string();
        let file = format!("{line} {KEY_A}\n");
        assert!(matches!(
            status(&file, "[127.0.0.1]:2222", KEY_A),
            HostKeyStatus::Known(_)
        ));
        assert_eq!(
            status(&file, "[127.0.0.1]:2223", KEY_A),
            HostKeyStatus::Unknown
        );
    }

    #[test]
    fn revoked_keys_are_refused_before_anything_else() {
        let file = format!("host {KEY_A}\n@revoked * {KEY_A}\n");
        assert_eq!(status(&file, "host", KEY_A), HostKeyStatus::Revoked(at(2)));
    }

    fn host_certificate(ca: &ssh_key::PrivateKey, principal: &str, kind: CertType) -> Certificate {
        let host = crate::generate_ed25519("host").unwrap();
        let mut builder = ssh_key::certificate::Builder::new_with_random_nonce(
            &mut ssh_key::rand_core::UnwrapErr(ssh_key::getrandom::SysRng),
            host.public_key().key_data().clone(),
            1_000,
            2_000,
        )
        .unwrap();
        builder.cert_type(kind).unwrap();
        builder.key_id("host").unwrap();
        builder.valid_principal(principal).unwrap();
        builder.sign(ca).unwrap()
    }

    #[test]
    fn host_certificates_are_accepted_through_a_matching_authority() {
        let ca = crate::generate_ed25519("ca").unwrap();
        let ca_line = ca.public_key().to_openssh().unwrap();
        let file = format!("@cert-authority *.example.com {ca_line}\n");
        let trusted = known(&file);
        let check = |cert: &Certificate, host: &str, now: u64| {
            trusted.check(host, host, PresentedHostKey::Certificate(cert), now)
        };
        let good = host_certificate(&ca, "a.example.com", CertType::Host);
        assert_eq!(
            check(&good, "a.example.com", 1_500),
            HostKeyStatus::Certified(at(1))
        );
        // Another host the authority covers, but not a principal: the
        // certified key itself is unknown there.
        assert_eq!(check(&good, "b.example.com", 1_500), HostKeyStatus::Unknown);
        // Expired, or a user certificate: not accepted as a host's.
        assert_eq!(check(&good, "a.example.com", 2_500), HostKeyStatus::Unknown);
        let user = host_certificate(&ca, "a.example.com", CertType::User);
        assert_eq!(check(&user, "a.example.com", 1_500), HostKeyStatus::Unknown);
        // Another authority's certificate.
        let other = crate::generate_ed25519("other").unwrap();
        let forged = host_certificate(&other, "a.example.com", CertType::Host);
        assert_eq!(
            check(&forged, "a.example.com", 1_500),
            HostKeyStatus::Unknown
        );
        // A revoked authority.
        let revoked = known(&format!("{file}@revoked * {ca_line}\n"));
        assert_eq!(
            revoked.check(
                "a.example.com",
                "a.example.com",
                PresentedHostKey::Certificate(&good),
                1_500
            ),
            HostKeyStatus::Revoked(at(2))
        );
    }

    #[test]
    fn unreadable_lines_are_skipped_and_listed() {
        let file = format!("host ssh-ed25519 AAAAnot-base64\nhost {KEY_A}\n");
        let known = known(&file);
        assert_eq!(known.skipped(), &[at(1)]);
        let presented = key(KEY_A);
        assert_eq!(
            known.check("host", "host", PresentedHostKey::Key(&presented), 0),
            HostKeyStatus::Known(at(2))
        );
    }

    #[test]
    fn remembered_keys_are_read_back_and_the_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("alknet/known_hosts");
        remember_host_key(&file, "[127.0.0.1]:2222", &key(KEY_A)).unwrap();
        remember_host_key(&file, "other", &key(KEY_B)).unwrap();
        let known = KnownHosts::load(&[dir.path().join("missing"), file.clone()]).unwrap();
        let presented = key(KEY_A);
        assert_eq!(
            known.check(
                "[127.0.0.1]:2222",
                "127.0.0.1",
                PresentedHostKey::Key(&presented),
                0
            ),
            HostKeyStatus::Known(KnownHostsLine {
                file: file.clone(),
                line: 1
            })
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(
                fs::metadata(&file).unwrap().permissions().mode() & 0o777,
                0o600
            );
            let parent = fs::metadata(file.parent().unwrap()).unwrap();
            assert_eq!(parent.permissions().mode() & 0o777, 0o700);
        }
    }
}
