//! Tokens, checked against an independent implementation on Node's crypto.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use alknet_auth::{PublicKey, TokenVerifier};
use xtask::BoundedOutput as _;
use xtask::{Profile, Workdir, alknet_binary, require_tool, ssh_keygen_ed25519};

fn script() -> std::path::PathBuf {
    crate::xtask_dir().join("tests/e2e/js/token.mjs")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn node_verifies_alknet_tokens_and_alknet_verifies_node_tokens() {
    require_tool("node").unwrap();
    let dir = Workdir::new().unwrap();
    let key = ssh_keygen_ed25519(&dir, "token_key").unwrap();
    let public_line = std::fs::read_to_string(dir.join("token_key.pub")).unwrap();

    // `alknet token` → Node.
    let minted = Command::new(alknet_binary(Profile::Dev).unwrap())
        .arg("token")
        .arg("--identity")
        .arg(&key)
        .bounded_output()
        .unwrap();
    assert!(
        minted.status.success(),
        "{}",
        String::from_utf8_lossy(&minted.stderr)
    );
    let token = String::from_utf8(minted.stdout).unwrap().trim().to_owned();
    let checked = Command::new("node")
        .arg(script())
        .args(["verify", &token, public_line.trim(), &now().to_string()])
        .bounded_output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&checked.stdout).trim(),
        "ok",
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );

    // Node → alknet-auth's verifier.
    let minted = Command::new("node")
        .arg(script())
        .args(["mint", &now().to_string()])
        .bounded_output()
        .unwrap();
    let text = String::from_utf8(minted.stdout).unwrap();
    let mut lines = text.lines();
    let node_key = PublicKey::from_openssh(lines.next().unwrap()).unwrap();
    let node_token = lines.next().unwrap();
    let verifier = TokenVerifier::new([node_key.clone()]);
    assert_eq!(verifier.verify(node_token, now()).unwrap(), &node_key);

    // And a token of one key does not pass for another.
    let other = TokenVerifier::new([PublicKey::from_openssh(public_line.trim()).unwrap()]);
    assert!(other.verify(node_token, now()).is_err());
}
