//! Loading, writing and generating OpenSSH Ed25519 keys, with errors that
//! say what was found instead and what to do.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey};

use crate::{AuthError, KeySource};

/// The armour line of an OpenSSH private key.
const OPENSSH_PRIVATE_HEADER: &str = "-----BEGIN OPENSSH PRIVATE KEY-----";

/// What a blob of key text looks like, judged from its first line only.
#[derive(Debug, PartialEq, Eq)]
enum KeyFormat {
    OpenSshPrivate,
    /// Another PEM/PPK armour; the name is for messages.
    Foreign(&'static str),
    /// `<algorithm> <base64> [comment]`, possibly after authorized_keys options.
    PublicLine,
    Unknown,
}

fn sniff(text: &str) -> KeyFormat {
    let first = text.trim_start().lines().next().unwrap_or("").trim();
    match first {
        OPENSSH_PRIVATE_HEADER => KeyFormat::OpenSshPrivate,
        "-----BEGIN PRIVATE KEY-----" => KeyFormat::Foreign("PKCS#8 (PEM)"),
        "-----BEGIN ENCRYPTED PRIVATE KEY-----" => KeyFormat::Foreign("encrypted PKCS#8 (PEM)"),
        "-----BEGIN RSA PRIVATE KEY-----" => KeyFormat::Foreign("PKCS#1 RSA (PEM)"),
        "-----BEGIN EC PRIVATE KEY-----" => KeyFormat::Foreign("SEC1 EC (PEM)"),
        "-----BEGIN DSA PRIVATE KEY-----" => KeyFormat::Foreign("DSA (PEM)"),
        "---- BEGIN SSH2 PUBLIC KEY ----" => KeyFormat::Foreign("RFC 4716 public"),
        line if line.starts_with("PuTTY-User-Key-File") => KeyFormat::Foreign("PuTTY (PPK)"),
        line if line.starts_with("-----BEGIN ") => KeyFormat::Foreign("PEM"),
        line if line.split_whitespace().any(looks_like_key_type) => KeyFormat::PublicLine,
        _ => KeyFormat::Unknown,
    }
}

/// Whether a token names an SSH public key algorithm (`ssh-ed25519`, `ecdsa-sha2-…`, …).
pub(crate) fn looks_like_key_type(token: &str) -> bool {
    ["ssh-", "ecdsa-", "sk-", "rsa-sha2-"]
        .iter()
        .any(|prefix| token.starts_with(prefix))
}

/// Loads an OpenSSH Ed25519 private key.
///
/// `passphrase` is used only when the key is encrypted. PEM/PKCS#8/PPK
/// input, public keys, and non-Ed25519 keys are refused with an error that
/// says what was found and what to do instead.
pub fn load_private_key(
    source: impl Into<KeySource>,
    passphrase: Option<&str>,
) -> Result<PrivateKey, AuthError> {
    let source = source.into();
    let text = source.read_text()?;
    let source_name = source.name();
    match sniff(&text) {
        KeyFormat::OpenSshPrivate => {
            if let KeySource::Path(path) = &source {
                ensure_private(path)?;
            }
        }
        KeyFormat::Foreign(format) => {
            return Err(AuthError::NotOpenSsh {
                source_name,
                format,
            });
        }
        KeyFormat::PublicLine => return Err(AuthError::PublicKeyGiven { source_name }),
        KeyFormat::Unknown => {
            return Err(AuthError::Malformed {
                source_name,
                reason: format!("expected a file starting with {OPENSSH_PRIVATE_HEADER}"),
            });
        }
    }
    let key = PrivateKey::from_openssh(text.trim()).map_err(|e| AuthError::Malformed {
        source_name: source_name.clone(),
        reason: e.to_string(),
    })?;
    // The algorithm is readable without decrypting, so check it first: a
    // passphrase prompt for a key we would refuse anyway helps nobody.
    ensure_ed25519(&key.algorithm(), &source_name)?;
    if !key.is_encrypted() {
        return Ok(key);
    }
    let passphrase = passphrase.ok_or_else(|| AuthError::PassphraseRequired {
        source_name: source_name.clone(),
    })?;
    key.decrypt(passphrase)
        .map_err(|_| AuthError::WrongPassphrase { source_name })
}

/// Refuses a private key file others may read, as ssh does: a key the
/// whole machine can read is not private any more.
fn ensure_private(path: &Path) -> Result<(), AuthError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(metadata) = std::fs::metadata(path) {
            let mode = metadata.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(AuthError::PermissionsTooOpen {
                    source_name: path.display().to_string(),
                    mode,
                });
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Loads an OpenSSH public key (`ssh-ed25519 AAAA… [comment]`).
pub fn load_public_key(source: impl Into<KeySource>) -> Result<PublicKey, AuthError> {
    let source = source.into();
    let text = source.read_text()?;
    let source_name = source.name();
    match sniff(&text) {
        KeyFormat::PublicLine => {}
        KeyFormat::OpenSshPrivate => return Err(AuthError::PrivateKeyGiven { source_name }),
        KeyFormat::Foreign(format) => {
            return Err(AuthError::NotOpenSsh {
                source_name,
                format,
            });
        }
        KeyFormat::Unknown => {
            return Err(AuthError::Malformed {
                source_name,
                reason: "expected a line such as `ssh-ed25519 AAAA… comment`".to_owned(),
            });
        }
    }
    let key = PublicKey::from_openssh(text.trim()).map_err(|e| AuthError::Malformed {
        source_name: source_name.clone(),
        reason: e.to_string(),
    })?;
    ensure_ed25519(&key.algorithm(), &source_name)?;
    Ok(key)
}

fn ensure_ed25519(algorithm: &Algorithm, source_name: &str) -> Result<(), AuthError> {
    if *algorithm == Algorithm::Ed25519 {
        Ok(())
    } else {
        Err(AuthError::NotEd25519 {
            source_name: source_name.to_owned(),
            algorithm: algorithm.to_string(),
        })
    }
}

/// The key's SHA-256 fingerprint as OpenSSH prints it: `SHA256:<base64>`.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Generates a fresh Ed25519 key pair from the operating system's RNG.
pub fn generate_ed25519(comment: &str) -> Result<PrivateKey, AuthError> {
    use ssh_key::getrandom::SysRng;
    use ssh_key::rand_core::UnwrapErr;

    let mut key = PrivateKey::random(&mut UnwrapErr(SysRng), Algorithm::Ed25519)
        .map_err(|e| AuthError::Generate(e.to_string()))?;
    key.set_comment(comment);
    Ok(key)
}

/// The conventional public-key path for a private key: `<path>.pub`.
pub fn public_key_path(private_key_path: &Path) -> PathBuf {
    let mut name = private_key_path.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// Writes `key` to `path` (mode 0600) and its public half to `<path>.pub`,
/// the same pair of files `ssh-keygen` writes. Existing files are never
/// overwritten.
pub fn write_key_pair(key: &PrivateKey, path: &Path) -> Result<(), AuthError> {
    write_key_pair_encrypted(key, path, None)
}

/// [`write_key_pair`], with the private key encrypted by `passphrase`
/// when one is given (OpenSSH's format: bcrypt KDF, AES-256-CTR), so that
/// `ssh-keygen -p` and `ssh` read it too.
pub fn write_key_pair_encrypted(
    key: &PrivateKey,
    path: &Path,
    passphrase: Option<&str>,
) -> Result<(), AuthError> {
    let encrypted;
    let stored = match passphrase {
        None => key,
        Some("") => {
            return Err(AuthError::Generate(
                "an empty passphrase encrypts nothing; leave it out instead".to_owned(),
            ));
        }
        Some(passphrase) => {
            use ssh_key::getrandom::SysRng;
            encrypted = key
                .encrypt(&mut SysRng, passphrase)
                .map_err(|e| AuthError::Generate(format!("cannot encrypt the key: {e}")))?;
            &encrypted
        }
    };
    let private_text = stored
        .to_openssh(LineEnding::LF)
        .map_err(|e| AuthError::Generate(e.to_string()))?;
    let public_text = key
        .public_key()
        .to_openssh()
        .map_err(|e| AuthError::Generate(e.to_string()))?;
    let public_path = public_key_path(path);
    // Check both before writing either, so a refusal leaves nothing behind.
    for target in [path, public_path.as_path()] {
        if target.exists() {
            return Err(AuthError::Write {
                source_name: target.display().to_string(),
                error: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "file already exists",
                ),
            });
        }
    }
    write_new_file(path, private_text.as_bytes(), 0o600)?;
    write_new_file(&public_path, format!("{public_text}\n").as_bytes(), 0o644)
}

fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), AuthError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    options
        .open(path)
        .and_then(|mut file| file.write_all(contents))
        .map_err(|error| AuthError::Write {
            source_name: path.display().to_string(),
            error,
        })
}

/// Loads an OpenSSH certificate (`ssh-ed25519-cert-v01@openssh.com AAAA…`).
pub fn load_certificate(source: impl Into<KeySource>) -> Result<ssh_key::Certificate, AuthError> {
    let source = source.into();
    let text = source.read_text()?;
    ssh_key::Certificate::from_openssh(text.trim()).map_err(|error| AuthError::Malformed {
        source_name: source.name(),
        reason: format!("not an OpenSSH certificate ({error}); `ssh-keygen -s` makes them"),
    })
}

/// Where OpenSSH looks for a key's certificate: `<path>-cert.pub`.
pub fn certificate_path(private_key_path: &Path) -> PathBuf {
    let mut name = private_key_path.as_os_str().to_owned();
    name.push("-cert.pub");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniff_recognises_formats_by_their_armour() {
        assert_eq!(
            sniff("\n-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA"),
            KeyFormat::OpenSshPrivate
        );
        assert_eq!(
            sniff("-----BEGIN PRIVATE KEY-----\nMC4"),
            KeyFormat::Foreign("PKCS#8 (PEM)")
        );
        assert_eq!(
            sniff("-----BEGIN CERTIFICATE-----"),
            KeyFormat::Foreign("PEM")
        );
        assert_eq!(
            sniff("PuTTY-User-Key-File-3: ssh-ed25519"),
            KeyFormat::Foreign("PuTTY (PPK)")
        );
        assert_eq!(sniff("ssh-ed25519 AAAAC3 me@host"), KeyFormat::PublicLine);
        assert_eq!(sniff("hello world"), KeyFormat::Unknown);
        assert_eq!(sniff(""), KeyFormat::Unknown);
    }

    #[test]
    fn public_key_path_appends_pub() {
        assert_eq!(
            public_key_path(Path::new("/tmp/id")),
            PathBuf::from("/tmp/id.pub")
        );
    }
}
