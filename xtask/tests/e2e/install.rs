//! What installing alknet uses: shell completions, man pages, the systemd
//! unit and the example configuration in `contrib/`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use xtask::BoundedOutput as _;
use xtask::{Profile, Spawned, Workdir, alknet_binary, require_tool, ssh_keygen_ed25519};

const LIMIT: Duration = Duration::from_secs(30);

fn alknet() -> Command {
    Command::new(alknet_binary(Profile::Dev).unwrap())
}

fn contrib(path: &str) -> PathBuf {
    crate::xtask_dir().join("../contrib").join(path)
}

fn success(command: &mut Command) -> String {
    let output = command.bounded_output().unwrap();
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn bash_completions_load_and_the_man_pages_render() {
    let dir = Workdir::new().unwrap();
    let script = dir.join("alknet.bash");
    std::fs::write(&script, success(alknet().args(["completions", "bash"]))).unwrap();
    require_tool("bash").unwrap();
    success(Command::new("bash").arg("-n").arg(&script));
    let registered = success(
        Command::new("bash")
            .arg("-c")
            .arg("source \"$0\" && complete -p alknet")
            .arg(&script),
    );
    assert!(registered.contains("alknet"), "{registered}");
    let script = std::fs::read_to_string(&script).unwrap();
    for word in [
        "--known-hosts",
        "--strict-host-keys",
        "completions",
        "serve",
    ] {
        assert!(script.contains(word), "{word} missing from the completions");
    }
    for shell in ["zsh", "fish"] {
        assert!(!success(alknet().args(["completions", shell])).is_empty());
    }

    require_tool("man").unwrap();
    let pages = dir.join("man/man1");
    success(alknet().arg("man").arg("--dir").arg(&pages));
    let rendered = success(
        Command::new("man")
            .arg("-l")
            .arg(pages.join("alknet-connect.1"))
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100"),
    );
    assert!(rendered.contains("--strict-host-keys"), "{rendered}");
    assert!(rendered.contains("DESTINATION"), "{rendered}");
    let top = success(alknet().arg("man"));
    assert!(
        top.starts_with(".ie") || top.contains(".TH alknet 1"),
        "{top}"
    );
}

#[test]
fn the_systemd_unit_verifies() {
    require_tool("systemd-analyze").unwrap();
    let dir = Workdir::new().unwrap();
    // As installed: the binary at the unit's path, the man page it names
    // findable.
    let unit = std::fs::read_to_string(contrib("systemd/alknet.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/alknet serve --config /etc/alknet/alknet.toml")
    );
    for hardening in [
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.contains(hardening), "{hardening}");
    }
    let binary = alknet_binary(Profile::Dev).unwrap();
    let installed = dir.join("alknet.service");
    std::fs::write(
        &installed,
        unit.replace("/usr/local/bin/alknet", binary.to_str().unwrap()),
    )
    .unwrap();
    success(alknet().arg("man").arg("--dir").arg(dir.join("man/man1")));
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&installed)
        .env("MANPATH", dir.join("man"))
        .current_dir(dir.path())
        .bounded_output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("alknet.service:"), "{stderr}");
}

#[test]
fn the_example_configuration_starts_a_server() {
    let dir = Workdir::new().unwrap();
    let config = dir.join("alknet.toml");
    std::fs::copy(contrib("alknet.toml"), &config).unwrap();
    ssh_keygen_ed25519(&dir, "host_key").unwrap();
    ssh_keygen_ed25519(&dir, "user").unwrap();
    std::fs::copy(dir.join("user.pub"), dir.join("authorized_keys")).unwrap();
    let mut command = alknet();
    command
        .arg("serve")
        .arg("--config")
        .arg(&config)
        // The example listens on port 22 of every interface; tests may not.
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info");
    let mut server = Spawned::start("alknet-serve-example", dir.path(), command).unwrap();
    server.wait_for_log("alknet server ready", LIMIT).unwrap();
    // The ready-to-paste client line names the host key.
    let line = server.wait_for_log("alknet connect", LIMIT).unwrap();
    assert!(line.contains("--host-key SHA256:"), "{line}");
}
