//! OpenSSH `authorized_keys` files: the Ed25519 keys that may log in, the
//! certificate authorities a `cert-authority` line trusts, and each line's
//! options ([`KeyOptions`]).
//!
//! A line sshd would use but alknet cannot (another key type, an option
//! alknet does not know) and a line that is malformed are both skipped with
//! the reason and line number ([`AuthorizedKeys::skipped`]), as sshd skips
//! them: one bad line never locks everyone else out.

use jiff::tz::TimeZone;
use ssh_key::{Algorithm, HashAlg, PublicKey};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use crate::key_options::{KeyOptions, parse_options};
use crate::keys::looks_like_key_type;
use crate::{AuthError, KeySource};

/// The set of Ed25519 keys allowed to log in, as read from an OpenSSH
/// `authorized_keys` file, plus the certificate authorities its
/// `cert-authority` lines name.
///
/// Lookups compare the raw 32-byte keys in constant time over the whole
/// set, so timing does not reveal which entry (if any) matched.
#[derive(Clone, Debug, Default)]
pub struct AuthorizedKeys {
    entries: Vec<AuthorizedKey>,
    authorities: Vec<AuthorizedKey>,
    skipped: Vec<SkippedLine>,
    source_name: String,
}

/// One usable line of an `authorized_keys` file.
#[derive(Clone, Debug)]
pub struct AuthorizedKey {
    public_key: PublicKey,
    raw: [u8; 32],
    line: usize,
    options: KeyOptions,
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

    /// The line's options (`from=`, `permitopen=`, `restrict`, …).
    pub fn options(&self) -> &KeyOptions {
        &self.options
    }

    /// The principals this line names in its comment (`principals=a,b`),
    /// which forwarding rules with `principals` match for a plain key.
    pub fn principals(&self) -> Vec<String> {
        comment_list(self.comment(), "principals=")
    }
}

/// Items of every `prefix`-word in a comment: `scopes=a,b scopes=c` gives
/// `a`, `b`, `c`. OpenSSH ignores comments, so the same file works there.
pub(crate) fn comment_list(comment: &str, prefix: &str) -> Vec<String> {
    comment
        .split_whitespace()
        .filter_map(|word| word.strip_prefix(prefix))
        .flat_map(|items| items.split(','))
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A line that was left out of the set, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedLine {
    /// The 1-based line number.
    pub line: usize,
    /// Why the line is not used, for a warning in the logs.
    pub reason: String,
}

impl AuthorizedKeys {
    /// Parses the text of an `authorized_keys` file held in memory.
    pub fn parse(text: &str) -> Result<Self, AuthError> {
        Ok(Self::parse_named(text, "<memory>", &TimeZone::system()))
    }

    /// Reads and parses an `authorized_keys` file (or bytes).
    pub fn load(source: impl Into<KeySource>) -> Result<Self, AuthError> {
        let source = source.into();
        let text = source.read_text()?;
        Ok(Self::parse_named(
            &text,
            &source.name(),
            &TimeZone::system(),
        ))
    }

    /// A set built from keys already in memory, without options.
    ///
    /// Non-Ed25519 keys are skipped (see [`skipped`](Self::skipped)).
    pub fn from_keys(keys: impl IntoIterator<Item = PublicKey>) -> Self {
        let mut set = Self {
            source_name: "<memory>".to_owned(),
            ..Self::default()
        };
        for key in keys {
            set.push(key, 0, KeyOptions::default());
        }
        set
    }

    /// Where the keys came from (a path, or `<memory>`), for messages.
    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    fn parse_named(text: &str, source_name: &str, local: &TimeZone) -> Self {
        let mut set = Self {
            source_name: source_name.to_owned(),
            ..Self::default()
        };
        for (index, raw_line) in text.lines().enumerate() {
            let line_number = index + 1;
            let line = raw_line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match parse_line(line, local) {
                Ok((key, options)) => set.push(key, line_number, options),
                Err(reason) => set.skip(line_number, reason),
            }
        }
        set
    }

    fn push(&mut self, public_key: PublicKey, line: usize, options: KeyOptions) {
        match public_key.key_data().ed25519() {
            Some(raw) => {
                let raw = raw.0;
                let entry = AuthorizedKey {
                    public_key,
                    raw,
                    line,
                    options,
                };
                if entry.options.cert_authority {
                    self.authorities.push(entry);
                } else {
                    self.entries.push(entry);
                }
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

    /// Finds the login entry for `key`, scanning every entry whatever the
    /// outcome. `cert-authority` lines are not login keys.
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

    /// Whether `key` may log in (as a plain key).
    pub fn contains(&self, key: &PublicKey) -> bool {
        self.find(key).is_some()
    }

    /// The `cert-authority` line trusting `ca` (a certificate's signing
    /// key), if any.
    pub fn authority(&self, ca: &PublicKey) -> Option<&AuthorizedKey> {
        let wanted = ca.fingerprint(HashAlg::Sha256);
        self.authorities
            .iter()
            .find(|entry| entry.public_key.fingerprint(HashAlg::Sha256) == wanted)
    }

    /// Whether any `cert-authority` line exists (certificates may then log in).
    pub fn has_authorities(&self) -> bool {
        !self.authorities.is_empty()
    }

    /// The usable login keys, in file order.
    pub fn iter(&self) -> impl Iterator<Item = &AuthorizedKey> {
        self.entries.iter()
    }

    /// How many usable login keys the set holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key and no authority can log anyone in.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.authorities.is_empty()
    }

    /// Lines that were left out, for warnings.
    pub fn skipped(&self) -> &[SkippedLine] {
        &self.skipped
    }
}

/// `[options] keytype base64 [comment]`: the options field runs to the
/// first whitespace outside double quotes.
fn parse_line(line: &str, local: &TimeZone) -> Result<(PublicKey, KeyOptions), String> {
    let first = line.split_whitespace().next().unwrap_or_default();
    let (options, key_text) = if looks_like_key_type(first) {
        (KeyOptions::default(), line)
    } else {
        let (field, rest) = split_options_field(line)
            .ok_or_else(|| "expected `[options] ssh-ed25519 <base64 key> [comment]`".to_owned())?;
        (parse_options(field, local)?, rest)
    };
    let kind = key_text.split_whitespace().next().unwrap_or_default();
    if !looks_like_key_type(kind) {
        return Err("expected `[options] ssh-ed25519 <base64 key> [comment]`".to_owned());
    }
    if kind != Algorithm::Ed25519.as_str() {
        // Parsed or not (this build knows few key types), it cannot log in.
        return Err(format!("{kind} keys are not supported (Ed25519 only)"));
    }
    let key = PublicKey::from_openssh(key_text).map_err(|error| {
        format!("expected `[options] ssh-ed25519 <base64 key> [comment]` ({error})")
    })?;
    Ok((key, options))
}

/// The options field and what follows it, or `None` when nothing follows.
fn split_options_field(line: &str) -> Option<(&str, &str)> {
    let mut quoted = false;
    let mut escaped = false;
    for (index, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                let rest = line[index..].trim_start();
                return (!rest.is_empty()).then_some((&line[..index], rest));
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate_ed25519;

    fn line_of(key: &ssh_key::PrivateKey) -> String {
        key.public_key().to_openssh().unwrap()
    }

    #[test]
    fn options_with_spaces_in_quotes_and_no_comment_parse() {
        let key = generate_ed25519("").unwrap();
        let text = format!(
            "command=\"echo hello world\",no-pty {}\nfrom=\"127.0.0.1\" {}\n",
            line_of(&key),
            line_of(&key)
        );
        let set = AuthorizedKeys::parse(&text).unwrap();
        assert!(set.skipped().is_empty(), "{:?}", set.skipped());
        assert!(set.contains(key.public_key()));
    }

    #[test]
    fn a_bad_line_is_skipped_with_its_number_and_the_rest_kept() {
        let key = generate_ed25519("").unwrap();
        let text = format!(
            "{}\nssh-ed25519 not-base64\njust words\nfrobnicate {}\nssh-rsa AAAAB3Nza x\n",
            line_of(&key),
            line_of(&key)
        );
        let set = AuthorizedKeys::parse(&text).unwrap();
        assert_eq!(set.len(), 1);
        let lines: Vec<usize> = set.skipped().iter().map(|s| s.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5]);
        assert!(set.skipped()[2].reason.contains("frobnicate"));
        assert!(set.skipped()[3].reason.contains("Ed25519 only"));
    }

    #[test]
    fn cert_authority_lines_are_authorities_not_login_keys() {
        let ca = generate_ed25519("ca").unwrap();
        let text = format!("cert-authority,principals=\"ops\" {}\n", line_of(&ca));
        let set = AuthorizedKeys::parse(&text).unwrap();
        assert!(!set.contains(ca.public_key()));
        assert!(set.has_authorities());
        assert!(!set.is_empty());
        let authority = set.authority(ca.public_key()).unwrap();
        assert_eq!(authority.options().principals, Some(vec!["ops".into()]));
    }

    #[test]
    fn plain_key_principals_come_from_the_comment() {
        let key = generate_ed25519("").unwrap();
        let text = format!(
            "{} alice@laptop principals=admin,ops scopes=x\n",
            line_of(&key)
        );
        let set = AuthorizedKeys::parse(&text).unwrap();
        assert_eq!(
            set.find(key.public_key()).unwrap().principals(),
            vec!["admin".to_owned(), "ops".to_owned()]
        );
    }
}
