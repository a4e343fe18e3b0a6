use ssh_key::authorized_keys::Entry;
use ssh_key::{Algorithm, PublicKey};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use crate::keys::looks_like_key_type;
use crate::{AuthError, KeySource};

/// Options that restrict features alknet never offers (terminals, X11,
/// agent forwarding, rc files), so ignoring them grants nothing extra.
const HARMLESS_OPTIONS: &[&str] = &[
    "no-pty",
    "no-x11-forwarding",
    "no-agent-forwarding",
    "no-user-rc",
];

/// The set of Ed25519 keys allowed to log in, as read from an OpenSSH
/// `authorized_keys` file.
///
/// Lookups compare the raw 32-byte keys in constant time over the whole
/// set, so timing does not reveal which entry (if any) matched.
#[derive(Clone, Debug, Default)]
pub struct AuthorizedKeys {
    entries: Vec<AuthorizedKey>,
    skipped: Vec<SkippedLine>,
}

/// One usable line of an `authorized_keys` file.
#[derive(Clone, Debug)]
pub struct AuthorizedKey {
    public_key: PublicKey,
    raw: [u8; 32],
    line: usize,
}

impl AuthorizedKey {
    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    /// The key's comment (often `user@host`); empty when there is none.
    pub fn comment(&self) -> &str {
        self.public_key.comment().as_str_lossy()
    }

    /// The 1-based line it came from (0 for keys added in code).
    pub fn line(&self) -> usize {
        self.line
    }
}

/// A well-formed line that was left out of the set, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedLine {
    /// The 1-based line number.
    pub line: usize,
    /// Why the key is not usable, for a warning in the logs.
    pub reason: String,
}

impl AuthorizedKeys {
    /// Parses the text of an `authorized_keys` file held in memory.
    pub fn parse(text: &str) -> Result<Self, AuthError> {
        Self::parse_named(text, "<memory>")
    }

    /// Reads and parses an `authorized_keys` file (or bytes).
    pub fn load(source: impl Into<KeySource>) -> Result<Self, AuthError> {
        let source = source.into();
        let text = source.read_text()?;
        Self::parse_named(&text, &source.name())
    }

    /// A set built from keys already in memory.
    ///
    /// Non-Ed25519 keys are skipped (see [`skipped`](Self::skipped)).
    pub fn from_keys(keys: impl IntoIterator<Item = PublicKey>) -> Self {
        let mut set = Self::default();
        for key in keys {
            set.push(key, 0);
        }
        set
    }

    fn parse_named(text: &str, source_name: &str) -> Result<Self, AuthError> {
        let mut set = Self::default();
        for (index, raw_line) in text.lines().enumerate() {
            let line_number = index + 1;
            let line = raw_line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let entry = match line.parse::<Entry>() {
                Ok(entry) => entry,
                Err(error) => {
                    // A key of a type this build cannot even parse (for
                    // example `ssh-dss`) is skipped like any other non-Ed25519
                    // key; anything else is a broken line.
                    if let Some(kind) = line.split_whitespace().find(|t| looks_like_key_type(t))
                        && kind != Algorithm::Ed25519.as_str()
                    {
                        set.skip(
                            line_number,
                            format!("{kind} keys are not supported (Ed25519 only)"),
                        );
                        continue;
                    }
                    return Err(AuthError::AuthorizedKeysLine {
                        source_name: source_name.to_owned(),
                        line: line_number,
                        reason: format!(
                            "expected `[options] ssh-ed25519 <base64 key> [comment]` ({error})"
                        ),
                    });
                }
            };
            if let Some(option) = entry
                .config_opts()
                .iter()
                .map(|opt| opt.split('=').next().unwrap_or(opt).to_ascii_lowercase())
                .find(|name| !HARMLESS_OPTIONS.contains(&name.as_str()))
            {
                // Ignoring a restriction such as `from=` or `no-port-forwarding`
                // would grant more than the file says, so drop the key instead.
                set.skip(
                    line_number,
                    format!("option `{option}` is not supported yet; the key is ignored"),
                );
                continue;
            }
            set.push(entry.public_key().clone(), line_number);
        }
        Ok(set)
    }

    fn push(&mut self, public_key: PublicKey, line: usize) {
        match public_key.key_data().ed25519() {
            Some(raw) => {
                let raw = raw.0;
                self.entries.push(AuthorizedKey {
                    public_key,
                    raw,
                    line,
                });
            }
            None => {
                let reason = format!(
                    "{} keys are not supported (Ed25519 only)",
                    public_key.algorithm()
                );
                self.skip(line, reason);
            }
        }
    }

    fn skip(&mut self, line: usize, reason: String) {
        self.skipped.push(SkippedLine { line, reason });
    }

    /// Finds the entry for `key`, scanning every entry whatever the outcome.
    pub fn find(&self, key: &PublicKey) -> Option<&AuthorizedKey> {
        let candidate = key.key_data().ed25519()?.0;
        let mut found = Choice::from(0);
        let mut index = 0u64;
        for (i, entry) in self.entries.iter().enumerate() {
            let equal = entry.raw.ct_eq(&candidate);
            index.conditional_assign(&(i as u64), equal & !found);
            found |= equal;
        }
        if bool::from(found) {
            self.entries.get(usize::try_from(index).ok()?)
        } else {
            None
        }
    }

    /// Whether `key` may log in.
    pub fn contains(&self, key: &PublicKey) -> bool {
        self.find(key).is_some()
    }

    /// The usable keys, in file order.
    pub fn iter(&self) -> impl Iterator<Item = &AuthorizedKey> {
        self.entries.iter()
    }

    /// How many usable keys the set holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key can log in.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Lines that were well-formed but left out, for warnings.
    pub fn skipped(&self) -> &[SkippedLine] {
        &self.skipped
    }
}
