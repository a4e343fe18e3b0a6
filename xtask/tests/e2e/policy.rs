//! Hot reload on SIGHUP and the forwarding policy, through the real binary.

use std::time::Duration;

use xtask::{
    AlknetClient, AlknetServer, HttpTarget, Profile, Spawned, Workdir, connect_command,
    socks5_connect_reply, ssh_keygen_ed25519, wait_until,
};

use crate::fetch;

const LIMIT: Duration = Duration::from_secs(30);

/// Runs `alknet connect` expecting it to give up; bounded in time (a
/// client that gets in would otherwise run forever).
fn connect_expecting_refusal(
    dir: &Workdir,
    server: &AlknetServer,
    key: &std::path::Path,
) -> String {
    let command = connect_command(Profile::Dev, server.port, key, &[]).unwrap();
    let mut client = Spawned::start("refused-client", dir.path(), command).unwrap();
    let status = client
        .wait_exit(LIMIT)
        .unwrap_or_else(|e| panic!("{e}: the client got in:\n{}", client.stderr()));
    assert!(!status.success());
    client.stderr()
}

/// Waits for the `n`-th line containing `needle` in the server log.
fn wait_for_nth(server: &AlknetServer, needle: &str, n: usize) {
    wait_until(&format!("{needle} #{n}"), LIMIT, || {
        (server.log().matches(needle).count() >= n).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
}

#[test]
fn sighup_reloads_keys_and_open_sessions_keep_working() {
    let dir = Workdir::new().unwrap();
    let server = AlknetServer::start(&dir, &[]).unwrap();
    let open = AlknetClient::start(&dir, server.port, &server.user_key, &[]).unwrap();
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}/10000", target.addr().port());

    // A broken file is not taken: the old configuration stays.
    std::fs::write(&server.authorized_keys, "ssh-ed25519 this-is-not-a-key\n").unwrap();
    server.process.hangup().unwrap();
    wait_for_nth(&server, "configuration not reloaded", 1);
    let kept = AlknetClient::start(&dir, server.port, &server.user_key, &[]);
    assert!(kept.is_ok(), "the old keys were dropped: {kept:?}");
    drop(kept);

    // The key removed for real: new logins are refused, the open session lives on.
    let other = ssh_keygen_ed25519(&dir, "other").unwrap();
    std::fs::copy(dir.join("other.pub"), &server.authorized_keys).unwrap();
    server.process.hangup().unwrap();
    wait_for_nth(&server, "configuration reloaded", 1);
    let refused = connect_expecting_refusal(&dir, &server, &server.user_key);
    assert!(refused.contains("refused key"), "{refused}");

    assert_eq!(
        fetch(open.socks_addr, &url, &dir.join("body")).unwrap(),
        HttpTarget::body(10_000)
    );
    // And the new key works.
    let _newcomer = AlknetClient::start(&dir, server.port, &other, &[]).unwrap();
}

#[test]
fn the_forwarding_policy_refuses_what_it_denies() {
    let dir = Workdir::new().unwrap();
    let allowed = HttpTarget::start("127.0.0.1:0").unwrap();
    let denied = HttpTarget::start("127.0.0.1:0").unwrap();
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "default = \"allow\"\n\n[[rule]]\naction = \"deny\"\ncidr = \"127.0.0.0/8\"\nports = {port}\n\n\
             [[rule]]\naction = \"deny\"\ncidr = \"::1/128\"\nports = {port}\n\n\
             [[rule]]\naction = \"deny\"\nhost = \"*.blocked.invalid\"\n\n\
             [[rule]]\naction = \"deny\"\nreserved = true\n",
            port = denied.addr().port()
        ),
    )
    .unwrap();
    let policy_arg = policy.display().to_string();
    let server = AlknetServer::start(&dir, &["--forward-policy", &policy_arg]).unwrap();
    let client = AlknetClient::start(&dir, server.port, &server.user_key, &[]).unwrap();

    let url = format!("http://127.0.0.1:{}/1000", allowed.addr().port());
    assert_eq!(
        fetch(client.socks_addr, &url, &dir.join("ok")).unwrap(),
        HttpTarget::body(1000)
    );
    // 2 = "connection not allowed by ruleset".
    assert_eq!(
        socks5_connect_reply(client.socks_addr, "127.0.0.1", denied.addr().port()).unwrap(),
        2
    );
    assert_eq!(
        socks5_connect_reply(client.socks_addr, "www.blocked.invalid", 80).unwrap(),
        2
    );
    // A name resolving into a denied range is refused too.
    assert_eq!(
        socks5_connect_reply(client.socks_addr, "localhost", denied.addr().port()).unwrap(),
        2
    );
    // `reserved = true` denies alknet's own services, the control channel too.
    assert_eq!(
        socks5_connect_reply(client.socks_addr, "alknet-control", 0).unwrap(),
        2
    );
    let log = server.log();
    assert!(
        !log.contains("blocked.invalid") && !log.contains(&denied.addr().port().to_string()),
        "{log}"
    );
}
