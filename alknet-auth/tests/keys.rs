//! Loading keys the way users hand them over: files made by ssh-keygen and
//! openssl, bytes in memory, and the mistakes people make with both.

use std::path::{Path, PathBuf};

use alknet_auth::{
    AuthError, AuthorizedKeys, fingerprint, generate_ed25519, load_private_key, load_public_key,
    public_key_path, write_key_pair,
};

fn fixture(name: &str) -> PathBuf {
    // At run time, not `env!`: a cached test binary may come from another clone.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("tests/fixtures")
        .join(name)
}

fn fixture_text(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap()
}

/// A private key fixture as ssh-keygen leaves it: readable by its owner
/// only (git does not keep that mode). The directory lives as long as the
/// returned guard.
fn private_fixture(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::copy(fixture(name), &path).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    (dir, path)
}

#[cfg(unix)]
#[test]
fn private_keys_readable_by_others_are_refused_with_sshs_advice() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, path) = private_fixture("ed25519");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = load_private_key(path.as_path(), None).unwrap_err();
    assert!(
        matches!(err, AuthError::PermissionsTooOpen { mode: 0o644, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("chmod 600"), "{err}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    assert!(load_private_key(path.as_path(), None).is_ok());
}

#[test]
fn loads_ssh_keygen_ed25519_key_from_path_and_bytes() {
    let (_dir, path) = private_fixture("ed25519");
    let from_path = load_private_key(path.as_path(), None).unwrap();
    let from_bytes = load_private_key(fixture_text("ed25519").into_bytes(), None).unwrap();
    assert_eq!(from_path.public_key(), from_bytes.public_key());

    let public = load_public_key(fixture("ed25519.pub").as_path()).unwrap();
    assert_eq!(public.key_data(), from_path.public_key().key_data());
}

#[test]
fn fingerprint_matches_ssh_keygen() {
    let public = load_public_key(fixture("ed25519.pub").as_path()).unwrap();
    let out = std::process::Command::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(fixture("ed25519.pub"))
        .output()
        .expect("ssh-keygen is installed (see .ci/run)");
    let listing = String::from_utf8(out.stdout).unwrap();
    // "256 SHA256:… comment (ED25519)"
    let expected = listing.split_whitespace().nth(1).unwrap();
    assert_eq!(fingerprint(&public), expected);
}

#[test]
fn pem_and_pkcs8_keys_are_refused_with_advice() {
    for (file, format) in [("ed25519_pkcs8.pem", "PKCS#8"), ("rsa_pkcs1.pem", "PKCS#1")] {
        let err = load_private_key(fixture(file).as_path(), None).unwrap_err();
        assert!(
            matches!(err, AuthError::NotOpenSsh { .. }),
            "{file}: {err:?}"
        );
        let message = err.to_string();
        assert!(message.contains(format), "{message}");
        assert!(message.contains(file), "message names the file: {message}");
        assert!(
            message.contains("ssh-keygen -p"),
            "message says how to convert: {message}"
        );
    }
}

#[test]
fn non_ed25519_keys_are_refused_by_name() {
    for (file, algorithm) in [("rsa", "ssh-rsa"), ("ecdsa", "ecdsa-sha2-nistp256")] {
        let (_dir, path) = private_fixture(file);
        let err = load_private_key(path.as_path(), None).unwrap_err();
        assert!(
            matches!(err, AuthError::NotEd25519 { .. }),
            "{file}: {err:?}"
        );
        assert!(err.to_string().contains(algorithm), "{err}");
        let err = load_public_key(fixture(&format!("{file}.pub")).as_path()).unwrap_err();
        assert!(
            matches!(err, AuthError::NotEd25519 { .. }),
            "{file}.pub: {err:?}"
        );
    }
}

#[test]
fn encrypted_key_needs_the_right_passphrase() {
    let (_dir, path) = private_fixture("ed25519_encrypted");
    let err = load_private_key(path.as_path(), None).unwrap_err();
    assert!(
        matches!(err, AuthError::PassphraseRequired { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("passphrase"));

    let err = load_private_key(path.as_path(), Some("wrong")).unwrap_err();
    assert!(matches!(err, AuthError::WrongPassphrase { .. }), "{err:?}");

    let key = load_private_key(path.as_path(), Some("correct horse")).unwrap();
    assert!(!key.is_encrypted());
    let public = load_public_key(fixture("ed25519_encrypted.pub").as_path()).unwrap();
    assert_eq!(key.public_key().key_data(), public.key_data());
}

#[test]
fn unreadable_file_names_the_path() {
    let err = load_private_key(Path::new("/nonexistent/alknet/id"), None).unwrap_err();
    assert!(matches!(err, AuthError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/alknet/id"), "{err}");
}

#[test]
fn swapped_public_and_private_keys_are_explained() {
    let err = load_private_key(fixture("ed25519.pub").as_path(), None).unwrap_err();
    assert!(matches!(err, AuthError::PublicKeyGiven { .. }), "{err:?}");
    let err = load_public_key(fixture("ed25519").as_path()).unwrap_err();
    assert!(matches!(err, AuthError::PrivateKeyGiven { .. }), "{err:?}");
}

#[test]
fn garbage_is_malformed_not_a_panic() {
    let inputs: [&[u8]; 5] = [
        b"",
        b"\xff\xfe\x00binary",
        b"-----BEGIN OPENSSH PRIVATE KEY-----\nnot base64 at all!!\n-----END OPENSSH PRIVATE KEY-----\n",
        b"-----BEGIN OPENSSH PRIVATE KEY-----\n",
        b"ssh-ed25519 AAAA",
    ];
    for input in inputs {
        assert!(load_private_key(input, None).is_err());
        assert!(load_public_key(input).is_err());
        let _ = AuthorizedKeys::parse(&String::from_utf8_lossy(input));
    }
}

#[test]
fn authorized_keys_membership() {
    let alice = load_public_key(fixture("ed25519.pub").as_path()).unwrap();
    let other = load_public_key(fixture("ed25519_encrypted.pub").as_path()).unwrap();
    let text = format!(
        "# comment line\n\n{}\nno-pty {}\n{}\n",
        fixture_text("rsa.pub").trim(),
        fixture_text("ed25519.pub").trim(),
        fixture_text("ecdsa.pub").trim(),
    );
    let set = AuthorizedKeys::parse(&text).unwrap();
    assert_eq!(set.len(), 1);
    assert!(set.contains(&alice));
    assert!(!set.contains(&other));
    assert_eq!(set.find(&alice).unwrap().line(), 4);
    assert_eq!(set.find(&alice).unwrap().comment(), "alice@test");
    // The RSA and ECDSA lines are reported, not silently dropped.
    let skipped: Vec<usize> = set.skipped().iter().map(|s| s.line).collect();
    assert_eq!(skipped, vec![3, 5]);
}

#[test]
fn authorized_keys_restrictions_are_kept_and_unknown_options_refuse_the_line() {
    let alice = load_public_key(fixture("ed25519.pub").as_path()).unwrap();
    let line = fixture_text("ed25519.pub");
    let set = AuthorizedKeys::parse(&format!("from=\"10.0.0.1\" {line}")).unwrap();
    let entry = set.find(&alice).expect("a from= line is usable");
    assert!(entry.options().from.is_some());
    assert!(
        !entry
            .options()
            .from
            .as_ref()
            .unwrap()
            .allows(Some("127.0.0.1".parse().unwrap()))
    );

    let set = AuthorizedKeys::parse(&format!("no-frobnication {line}")).unwrap();
    assert!(set.is_empty());
    assert!(
        set.skipped()[0].reason.contains("no-frobnication"),
        "{:?}",
        set.skipped()
    );
}

#[test]
fn a_malformed_authorized_keys_line_is_skipped_with_its_number_as_sshd_does() {
    let alice = load_public_key(fixture("ed25519.pub").as_path()).unwrap();
    let good = fixture_text("ed25519.pub");
    let text = format!("{good}\n# fine\nssh-ed25519 this-is-not-base64\n");
    let set = AuthorizedKeys::parse(&text).unwrap();
    assert!(set.contains(&alice), "the good line still logs in");
    assert_eq!(set.skipped().len(), 1);
    assert_eq!(set.skipped()[0].line, 4);

    let set = AuthorizedKeys::parse("just some words\n").unwrap();
    assert!(set.is_empty());
    assert_eq!(set.skipped()[0].line, 1);
}

#[test]
fn generated_key_pair_round_trips_through_ssh_keygen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("id_alknet");
    let key = generate_ed25519("bob@test").unwrap();
    write_key_pair(&key, &path).unwrap();

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // ssh-keygen derives the public key from our private key file.
    let out = std::process::Command::new("ssh-keygen")
        .arg("-y")
        .arg("-f")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let derived = String::from_utf8(out.stdout).unwrap();
    let written = std::fs::read_to_string(public_key_path(&path)).unwrap();
    let key_part = |s: &str| s.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    assert_eq!(key_part(&derived), key_part(&written));

    // Never overwrite.
    let err = write_key_pair(&key, &path).unwrap_err();
    assert!(matches!(err, AuthError::Write { .. }), "{err:?}");
}
