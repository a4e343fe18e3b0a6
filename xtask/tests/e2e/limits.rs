//! Rate limits and fail2ban: per-IP connection limits, the authentication
//! attempt limit, and the shipped filter matched against a real log.

use std::io::Read;
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use xtask::BoundedOutput as _;
use xtask::{
    AlknetClient, AlknetServer, Profile, Workdir, connect_command, openssh_client, require_tool,
    ssh_keygen_ed25519, wait_until,
};

const LIMIT: Duration = Duration::from_secs(30);

/// Connects and returns the first bytes the server sends (empty when it
/// closes at once).
fn greeting(port: u16) -> (TcpStream, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    // Up to the 14 bytes of "SSH-2.0-alknet", however they arrive; EOF or
    // a reset (the server closing at once) ends it early.
    let mut first = Vec::with_capacity(14);
    let mut chunk = [0u8; 14];
    while first.len() < 14 {
        match stream.read(&mut chunk[..14 - first.len()]) {
            Ok(0) | Err(_) => break,
            Ok(n) => first.extend_from_slice(&chunk[..n]),
        }
    }
    (stream, first)
}

#[test]
fn connections_beyond_the_per_ip_limit_are_closed_at_once() {
    let dir = Workdir::new().unwrap();
    let server = AlknetServer::start(&dir, &["--max-connections-per-ip", "2"]).unwrap();
    let (first, banner) = greeting(server.port);
    assert_eq!(banner, b"SSH-2.0-alknet");
    let (_second, banner) = greeting(server.port);
    assert_eq!(banner, b"SSH-2.0-alknet");
    let (_third, banner) = greeting(server.port);
    assert!(banner.is_empty(), "the third connection was served");
    assert!(
        server
            .log()
            .contains("too many connections from this address")
    );

    // Closing one frees its place.
    drop(first);
    let served_again = wait_until("a freed place", LIMIT, || {
        let (_stream, banner) = greeting(server.port);
        (banner == b"SSH-2.0-alknet").then_some(())
    });
    assert!(served_again.is_ok(), "{}", server.log());
}

#[test]
fn too_many_failed_authentications_end_the_connection() {
    let dir = Workdir::new().unwrap();
    let server = AlknetServer::start(&dir, &["--max-auth-attempts", "2"]).unwrap();
    let strangers: Vec<_> = (0..4)
        .map(|i| ssh_keygen_ed25519(&dir, &format!("stranger{i}")).unwrap())
        .collect();
    let mut ssh = openssh_client(server.port, &strangers[0], None).unwrap();
    for key in &strangers[1..] {
        ssh.arg("-i").arg(key);
    }
    let output = ssh.arg("tester@127.0.0.1").bounded_output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Too many authentication"), "{stderr}");
    wait_until("the connection to close", LIMIT, || {
        server.log().contains("connection closed").then_some(())
    })
    .unwrap();
    let rejects = server.log().matches("result=reject").count();
    assert_eq!(
        rejects,
        2,
        "two keys tried, then the disconnect:\n{}",
        server.log()
    );
}

#[test]
fn the_fail2ban_filter_matches_exactly_the_failed_attempts() {
    require_tool("fail2ban-regex").unwrap();
    let dir = Workdir::new().unwrap();
    let mut server = AlknetServer::start(&dir, &[]).unwrap();
    // Two successful logins and three refused ones.
    for _ in 0..2 {
        let client = AlknetClient::start(&dir, server.port, &server.user_key, &[]).unwrap();
        drop(client);
    }
    let stranger = ssh_keygen_ed25519(&dir, "stranger").unwrap();
    for _ in 0..3 {
        let output = connect_command(Profile::Dev, server.port, &stranger, &[])
            .unwrap()
            .bounded_output()
            .unwrap();
        assert!(!output.status.success());
    }
    wait_until("three rejections in the log", LIMIT, || {
        (server.log().matches("result=reject").count() == 3).then_some(())
    })
    .unwrap();
    server.process.terminate(LIMIT).unwrap();
    let log_file = dir.join("server.log");
    std::fs::write(&log_file, server.log()).unwrap();
    assert_eq!(server.log().matches("result=accept").count(), 2);

    let filter = crate::xtask_dir().join("../contrib/fail2ban/filter.d/alknet.conf");
    let output = Command::new("fail2ban-regex")
        .arg(&log_file)
        .arg(&filter)
        .bounded_output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    let summary = report
        .lines()
        .find(|line| line.starts_with("Lines:"))
        .unwrap_or_else(|| panic!("no summary from fail2ban-regex:\n{report}"));
    assert!(summary.contains(" 3 matched"), "{summary}\n{report}");
    // Every matched line is a rejection from 127.0.0.1.
    assert!(
        !report.contains("Date template hits:\n|- [# of hits] date format\n`-"),
        "no timestamps recognised:\n{report}"
    );
}

#[test]
fn the_per_ip_limit_is_reloaded_on_sighup() {
    let dir = Workdir::new().unwrap();
    let config = dir.join("alknet.toml");
    std::fs::write(&config, "max_connections_per_ip = 1\n").unwrap();
    let config_arg = config.display().to_string();
    let server = AlknetServer::start(&dir, &["--config", &config_arg]).unwrap();
    let (_first, banner) = greeting(server.port);
    assert_eq!(banner, b"SSH-2.0-alknet");
    let (_second, banner) = greeting(server.port);
    assert!(
        banner.is_empty(),
        "a second connection was served with a limit of 1"
    );

    std::fs::write(&config, "max_connections_per_ip = 3\n").unwrap();
    server.process.hangup().unwrap();
    wait_until("the reload", LIMIT, || {
        server
            .log()
            .contains("configuration reloaded")
            .then_some(())
    })
    .unwrap();
    let (_third, banner) = greeting(server.port);
    assert_eq!(banner, b"SSH-2.0-alknet", "the raised limit did not apply");
}

#[test]
fn the_auth_attempt_limit_is_reloaded_on_sighup() {
    let dir = Workdir::new().unwrap();
    let config = dir.join("alknet.toml");
    std::fs::write(&config, "max_auth_attempts = 1\n").unwrap();
    let config_arg = config.display().to_string();
    let server = AlknetServer::start(&dir, &["--config", &config_arg]).unwrap();
    let strangers: Vec<_> = (0..4)
        .map(|i| ssh_keygen_ed25519(&dir, &format!("stranger{i}")).unwrap())
        .collect();
    // Offers every stranger key and returns how many rejections it caused.
    let try_all_keys = |before: usize| -> usize {
        let mut ssh = openssh_client(server.port, &strangers[0], None).unwrap();
        for key in &strangers[1..] {
            ssh.arg("-i").arg(key);
        }
        let output = ssh.arg("tester@127.0.0.1").bounded_output().unwrap();
        assert!(!output.status.success());
        let closed = before + 1;
        wait_until("the connection to close", LIMIT, || {
            (server.log().matches("connection closed").count() >= closed).then_some(())
        })
        .unwrap();
        server.log().matches("result=reject").count()
    };
    assert_eq!(try_all_keys(0), 1, "{}", server.log());

    std::fs::write(&config, "max_auth_attempts = 3\n").unwrap();
    server.process.hangup().unwrap();
    wait_until("the reload", LIMIT, || {
        server.log().contains("max_auth_attempts=3").then_some(())
    })
    .unwrap();
    assert_eq!(
        try_all_keys(1) - 1,
        3,
        "the raised limit did not apply:\n{}",
        server.log()
    );
}
