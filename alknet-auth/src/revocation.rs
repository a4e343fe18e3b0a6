//! Revoked keys, as sshd's `RevokedKeys` reads them: a file of public keys
//! (one per line), or an OpenSSH key revocation list made by `ssh-keygen
//! -k` (binary; revokes plain keys, certificates by serial or key id, and
//! whole certificate authorities' issues).
//!
//! A revoked key logs in neither as a plain key nor as a certificate's
//! key; a revoked CA key signs no certificate that is accepted. Parsing is
//! pure, on bytes (format: OpenSSH's `PROTOCOL.krl`).

use ssh_key::sha2::{Digest, Sha256};
use ssh_key::{Certificate, PublicKey};

use crate::{AuthError, KeySource};

/// The KRL file magic, `SSHKRL\n\0`.
const KRL_MAGIC: &[u8; 8] = b"SSHKRL\n\0";
const KRL_FORMAT_VERSION: u32 = 1;

const SECTION_CERTIFICATES: u8 = 1;
const SECTION_EXPLICIT_KEY: u8 = 2;
const SECTION_FINGERPRINT_SHA1: u8 = 3;
const SECTION_SIGNATURE: u8 = 4;
const SECTION_FINGERPRINT_SHA256: u8 = 5;
const SECTION_EXTENSION: u8 = 255;

const CERT_SERIAL_LIST: u8 = 0x20;
const CERT_SERIAL_RANGE: u8 = 0x21;
const CERT_SERIAL_BITMAP: u8 = 0x22;
const CERT_KEY_ID: u8 = 0x23;
const CERT_EXTENSION: u8 = 0x39;

/// Serials a bitmap may expand to: 2^20 (a 128 KiB bitmap). Larger ones
/// are kept as a bitmap and tested directly.
const BITMAP_LIMIT_BITS: usize = 1 << 20;

/// Keys and certificates that must never log in.
#[derive(Clone, Debug, Default)]
pub struct RevokedKeys {
    /// SHA-256 of revoked plain key blobs.
    sha256: Vec<[u8; 32]>,
    /// SHA-1 of revoked plain key blobs (KRL fingerprint sections).
    sha1: Vec<[u8; 20]>,
    /// Revocations of certificates, per issuing CA.
    certificates: Vec<CertificateRevocations>,
}

#[derive(Clone, Debug, Default)]
struct CertificateRevocations {
    /// The CA's key blob; `None` applies to every CA.
    ca: Option<Vec<u8>>,
    serials: Vec<(u64, u64)>,
    bitmaps: Vec<(u64, Vec<u8>)>,
    key_ids: Vec<String>,
}

impl RevokedKeys {
    /// Reads a revocation file: a KRL when it starts with the KRL magic,
    /// otherwise one OpenSSH public key per line (`#` comments allowed).
    pub fn load(source: impl Into<KeySource>) -> Result<Self, AuthError> {
        let source = source.into();
        let bytes = source.read_bytes()?;
        Self::parse(&bytes, &source.name())
    }

    /// Parses revocation data held in memory; `source_name` names it in errors.
    pub fn parse(bytes: &[u8], source_name: &str) -> Result<Self, AuthError> {
        let malformed = |reason: String| AuthError::Malformed {
            source_name: source_name.to_owned(),
            reason,
        };
        if bytes.starts_with(KRL_MAGIC) {
            return parse_krl(bytes)
                .map_err(|reason| malformed(format!("not a valid KRL: {reason}")));
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|_| malformed("neither a KRL nor a text list of public keys".to_owned()))?;
        let mut revoked = Self::default();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key =
                PublicKey::from_openssh(line).map_err(|error| AuthError::AuthorizedKeysLine {
                    source_name: source_name.to_owned(),
                    line: index + 1,
                    reason: format!("not an OpenSSH public key: {error}"),
                })?;
            revoked.revoke_key(&key);
        }
        Ok(revoked)
    }

    /// Revokes a plain key.
    pub fn revoke_key(&mut self, key: &PublicKey) {
        if let Ok(blob) = key.to_bytes() {
            self.sha256.push(Sha256::digest(&blob).into());
        }
    }

    /// How many revocation entries this holds (keys, hashes, certificate
    /// sections), for logs.
    pub fn len(&self) -> usize {
        self.sha256.len() + self.sha1.len() + self.certificates.len()
    }

    /// Whether nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `key` is revoked as a plain key.
    pub fn is_key_revoked(&self, key: &PublicKey) -> bool {
        let Ok(blob) = key.to_bytes() else {
            return false;
        };
        let sha256: [u8; 32] = Sha256::digest(&blob).into();
        if self.sha256.contains(&sha256) {
            return true;
        }
        if self.sha1.is_empty() {
            return false;
        }
        let sha1: [u8; 20] = <sha1::Sha1 as sha1::Digest>::digest(&blob).into();
        self.sha1.contains(&sha1)
    }

    /// Whether `certificate` is revoked: by serial or key id for its CA (or
    /// for every CA), or because its key or its CA's key is revoked.
    pub fn is_certificate_revoked(&self, certificate: &Certificate) -> bool {
        let key = PublicKey::from(certificate.public_key().clone());
        let ca = PublicKey::from(certificate.signature_key().clone());
        if self.is_key_revoked(&key) || self.is_key_revoked(&ca) {
            return true;
        }
        let Ok(ca_blob) = ca.to_bytes() else {
            return false;
        };
        let serial = certificate.serial();
        self.certificates
            .iter()
            .filter(|section| section.ca.as_ref().is_none_or(|blob| *blob == ca_blob))
            .any(|section| {
                section.key_ids.iter().any(|id| id == certificate.key_id())
                    // Serial 0 means "no serial": only key ids can revoke it.
                    || (serial != 0
                        && (section
                            .serials
                            .iter()
                            .any(|(low, high)| (*low..=*high).contains(&serial))
                            || section
                                .bitmaps
                                .iter()
                                .any(|(offset, bitmap)| bitmap_has(*offset, bitmap, serial))))
            })
    }
}

/// Whether bit `serial - offset` (counting from the least significant bit
/// of the big-endian `bitmap`) is set.
fn bitmap_has(offset: u64, bitmap: &[u8], serial: u64) -> bool {
    let Some(index) = serial.checked_sub(offset) else {
        return false;
    };
    let Ok(index) = usize::try_from(index) else {
        return false;
    };
    let byte = index / 8;
    if byte >= bitmap.len() {
        return false;
    }
    bitmap[bitmap.len() - 1 - byte] & (1 << (index % 8)) != 0
}

/// SSH wire-format reading (RFC 4251 §5) over a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("truncated".to_owned());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let bytes = self.take(8)?;
        let mut array = [0u8; 8];
        array.copy_from_slice(bytes);
        Ok(u64::from_be_bytes(array))
    }

    fn string(&mut self) -> Result<&'a [u8], String> {
        let length = self.u32()? as usize;
        self.take(length)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn parse_krl(bytes: &[u8]) -> Result<RevokedKeys, String> {
    let mut reader = Reader(bytes);
    reader.take(KRL_MAGIC.len())?;
    let version = reader.u32()?;
    if version != KRL_FORMAT_VERSION {
        return Err(format!("format version {version} (only 1 is known)"));
    }
    let _krl_version = reader.u64()?;
    let _generated = reader.u64()?;
    let _flags = reader.u64()?;
    let _reserved = reader.string()?;
    let _comment = reader.string()?;
    let mut revoked = RevokedKeys::default();
    while !reader.is_empty() {
        let kind = reader.u8()?;
        if kind == SECTION_SIGNATURE {
            return Err(
                "it is signed; OpenSSH 9.4 and later refuse signed KRLs too (sign it with \
                 `ssh-keygen -Y sign` instead)"
                    .to_owned(),
            );
        }
        let mut section = Reader(reader.string()?);
        match kind {
            SECTION_CERTIFICATES => revoked.certificates.push(parse_certificates(&mut section)?),
            SECTION_EXPLICIT_KEY => {
                while !section.is_empty() {
                    revoked
                        .sha256
                        .push(Sha256::digest(section.string()?).into());
                }
            }
            SECTION_FINGERPRINT_SHA1 => {
                while !section.is_empty() {
                    let hash = section.string()?;
                    revoked.sha1.push(
                        hash.try_into()
                            .map_err(|_| "a SHA-1 hash is not 20 bytes")?,
                    );
                }
            }
            SECTION_FINGERPRINT_SHA256 => {
                while !section.is_empty() {
                    let hash = section.string()?;
                    revoked.sha256.push(
                        hash.try_into()
                            .map_err(|_| "a SHA-256 hash is not 32 bytes")?,
                    );
                }
            }
            SECTION_EXTENSION => check_extension(&mut section)?,
            other => return Err(format!("unknown section type {other}")),
        }
    }
    Ok(revoked)
}

fn parse_certificates(section: &mut Reader<'_>) -> Result<CertificateRevocations, String> {
    let ca = section.string()?;
    let _reserved = section.string()?;
    let mut revocations = CertificateRevocations {
        ca: (!ca.is_empty()).then(|| ca.to_vec()),
        ..CertificateRevocations::default()
    };
    while !section.is_empty() {
        let kind = section.u8()?;
        let mut data = Reader(section.string()?);
        match kind {
            CERT_SERIAL_LIST => {
                while !data.is_empty() {
                    let serial = data.u64()?;
                    revocations.serials.push((serial, serial));
                }
            }
            CERT_SERIAL_RANGE => {
                let (low, high) = (data.u64()?, data.u64()?);
                if low > high {
                    return Err("a serial range ends before it starts".to_owned());
                }
                revocations.serials.push((low, high));
            }
            CERT_SERIAL_BITMAP => {
                let offset = data.u64()?;
                let bitmap = data.string()?;
                if bitmap.len() * 8 > BITMAP_LIMIT_BITS * 64 {
                    return Err("a serial bitmap is implausibly large".to_owned());
                }
                revocations.bitmaps.push((offset, bitmap.to_vec()));
            }
            CERT_KEY_ID => {
                while !data.is_empty() {
                    let id =
                        std::str::from_utf8(data.string()?).map_err(|_| "a key id is not UTF-8")?;
                    revocations.key_ids.push(id.to_owned());
                }
            }
            CERT_EXTENSION => check_extension(&mut data)?,
            other => return Err(format!("unknown certificate subsection type {other:#x}")),
        }
    }
    Ok(revocations)
}

/// Extensions (Bloom filters, so far) are optional; a critical one we do
/// not know makes the KRL unusable, as the format asks.
fn check_extension(data: &mut Reader<'_>) -> Result<(), String> {
    let name = String::from_utf8_lossy(data.string()?).into_owned();
    let critical = data.u8()? != 0;
    if critical {
        return Err(format!("critical extension {name:?} is not supported"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(bytes: &[u8]) -> Vec<u8> {
        let mut out = (bytes.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(bytes);
        out
    }

    fn krl(sections: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut out = KRL_MAGIC.to_vec();
        out.extend(1u32.to_be_bytes());
        out.extend(7u64.to_be_bytes());
        out.extend(0u64.to_be_bytes());
        out.extend(0u64.to_be_bytes());
        out.extend(string(b""));
        out.extend(string(b"test"));
        for (kind, data) in sections {
            out.push(*kind);
            out.extend(string(data));
        }
        out
    }

    #[test]
    fn a_text_list_revokes_plain_keys() {
        let revoked_key = crate::generate_ed25519("gone").unwrap();
        let kept = crate::generate_ed25519("kept").unwrap();
        let text = format!(
            "# revoked\n{}\n",
            revoked_key.public_key().to_openssh().unwrap()
        );
        let revoked = RevokedKeys::parse(text.as_bytes(), "list").unwrap();
        assert!(revoked.is_key_revoked(revoked_key.public_key()));
        assert!(!revoked.is_key_revoked(kept.public_key()));
        assert!(RevokedKeys::parse(b"not a key\n", "list").is_err());
    }

    #[test]
    fn krl_key_sections_revoke_plain_keys() {
        let key = crate::generate_ed25519("k").unwrap();
        let blob = key.public_key().to_bytes().unwrap();
        let explicit = krl(&[(SECTION_EXPLICIT_KEY, string(&blob))]);
        assert!(
            RevokedKeys::parse(&explicit, "krl")
                .unwrap()
                .is_key_revoked(key.public_key())
        );
        let hash: [u8; 32] = Sha256::digest(&blob).into();
        let by_hash = krl(&[(SECTION_FINGERPRINT_SHA256, string(&hash))]);
        assert!(
            RevokedKeys::parse(&by_hash, "krl")
                .unwrap()
                .is_key_revoked(key.public_key())
        );
        let sha1: [u8; 20] = <sha1::Sha1 as sha1::Digest>::digest(&blob).into();
        let by_sha1 = krl(&[(SECTION_FINGERPRINT_SHA1, string(&sha1))]);
        assert!(
            RevokedKeys::parse(&by_sha1, "krl")
                .unwrap()
                .is_key_revoked(key.public_key())
        );
    }

    #[test]
    fn serial_bitmaps_count_bits_from_the_least_significant() {
        // 0b0000_0101 at offset 100: serials 100 and 102.
        assert!(bitmap_has(100, &[0x05], 100));
        assert!(!bitmap_has(100, &[0x05], 101));
        assert!(bitmap_has(100, &[0x05], 102));
        assert!(!bitmap_has(100, &[0x05], 99));
        assert!(!bitmap_has(100, &[0x05], 108));
        assert!(bitmap_has(0, &[0x01, 0x00], 8));
    }

    #[test]
    fn broken_or_signed_krls_are_refused_without_panicking() {
        let cases: [(&[u8], &str); 3] = [
            (&KRL_MAGIC[..], "truncated"),
            (&krl(&[(SECTION_SIGNATURE, Vec::new())]), "signed"),
            (&krl(&[(99, Vec::new())]), "unknown section"),
        ];
        for (bytes, why) in cases {
            let error = RevokedKeys::parse(bytes, "krl").unwrap_err().to_string();
            assert!(error.contains(why), "{error}");
        }
        let mut critical = string(b"future@example.org");
        critical.push(1);
        critical.extend(string(b""));
        assert!(RevokedKeys::parse(&krl(&[(SECTION_EXTENSION, critical)]), "krl").is_err());
        for length in 0..200 {
            let mut garbage = krl(&[]);
            garbage.extend((0..length).map(|i| (i * 37 % 251) as u8));
            let _ = RevokedKeys::parse(&garbage, "krl");
        }
    }
}
