//! The commands a new user meets first: --help, --version, keygen, demo.

use std::process::Command;
use std::time::Duration;

use xtask::BoundedOutput as _;
use xtask::{HttpTarget, Profile, Spawned, Workdir, alknet_binary, ssh_public_key_fingerprint};

use crate::fetch;

const LIMIT: Duration = Duration::from_secs(30);

fn alknet() -> Command {
    Command::new(alknet_binary(Profile::Dev).unwrap())
}

#[test]
fn every_command_has_help_and_the_binary_has_a_version() {
    let version = alknet().arg("--version").bounded_output().unwrap();
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("alknet "));
    for command in ["serve", "connect", "keygen", "demo"] {
        let help = alknet().args([command, "--help"]).bounded_output().unwrap();
        assert!(help.status.success(), "{command} --help failed");
        assert!(
            String::from_utf8_lossy(&help.stdout).contains("Usage: alknet"),
            "{command}"
        );
    }
}

#[test]
fn keygen_writes_a_pair_that_ssh_keygen_reads_and_never_overwrites() {
    let dir = Workdir::new().unwrap();
    let path = dir.join("id_alknet");
    let output = alknet().arg("keygen").arg(&path).bounded_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8_lossy(&output.stdout).to_string();

    let fingerprint = ssh_public_key_fingerprint(&dir.join("id_alknet.pub")).unwrap();
    assert!(
        printed.contains(&fingerprint),
        "keygen printed {printed}, ssh-keygen says {fingerprint}"
    );
    // ssh-keygen can derive the public key from the private one.
    let derived = Command::new("ssh-keygen")
        .arg("-y")
        .arg("-f")
        .arg(&path)
        .bounded_output()
        .unwrap();
    assert!(derived.status.success());
    let public = std::fs::read_to_string(dir.join("id_alknet.pub")).unwrap();
    let key_part = |s: &str| s.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    assert_eq!(
        key_part(&String::from_utf8_lossy(&derived.stdout)),
        key_part(&public)
    );

    let again = alknet().arg("keygen").arg(&path).bounded_output().unwrap();
    assert!(!again.status.success(), "overwrote an existing key");
    assert_eq!(
        std::fs::read_to_string(dir.join("id_alknet.pub")).unwrap(),
        public
    );
}

#[test]
fn demo_tunnels_curl_and_exits_cleanly_on_sigterm() {
    let dir = Workdir::new().unwrap();
    let mut command = alknet();
    command.args(["demo", "--socks5", "127.0.0.1:0"]);
    let mut demo = Spawned::start("alknet-demo", dir.path(), command).unwrap();
    let line = demo
        .wait_for_stdout("curl --socks5-hostname", LIMIT)
        .unwrap();
    let proxy = line
        .split_whitespace()
        .skip_while(|word| *word != "--socks5-hostname")
        .nth(1)
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no proxy address in {line:?}"));

    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let url = format!("http://localhost:{}/100000", target.addr().port());
    assert_eq!(
        fetch(proxy, &url, &dir.join("body")).unwrap(),
        HttpTarget::body(100_000)
    );
    assert!(
        demo.terminate(LIMIT).unwrap().success(),
        "demo did not exit 0:\n{}",
        demo.stderr()
    );
}

#[test]
fn the_echo_sink_example_answers_its_own_target_and_exits_zero() {
    let example = xtask::example_binary("echo_sink").unwrap();
    let output = Command::new(example).bounded_output().unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("echo_sink: ok"));
}
