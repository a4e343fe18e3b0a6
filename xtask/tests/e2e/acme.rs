//! Certificates from ACME, against a real Pebble on loopback: TLS-ALPN-01
//! for a name and for an IP address, HTTP-01, the cache across restarts,
//! renewal under a live session, stealth, and refused flag combinations.

use std::process::Command;
use std::time::Duration;

use xtask::BoundedOutput as _;
use xtask::{
    AlknetClient, AlknetServer, HttpTarget, Pebble, PebblePorts, Workdir, alknet_binary, free_port,
    require_tool, wait_until,
};

use crate::fetch;

/// A name challtestsrv resolves to 127.0.0.1 (`.invalid` never resolves
/// anywhere else).
const NAME: &str = "test.alknet.invalid";
const ISSUANCE: Duration = Duration::from_secs(60);

struct Setup {
    dir: Workdir,
    pebble: Pebble,
    tls_port: u16,
    http_port: u16,
}

fn setup(validity_secs: u64) -> Setup {
    let dir = Workdir::new().unwrap();
    let (tls_port, http_port) = (free_port().unwrap(), free_port().unwrap());
    let pebble = Pebble::start(
        &dir,
        PebblePorts {
            tls: tls_port,
            http: http_port,
            validity_secs,
        },
    )
    .unwrap();
    Setup {
        dir,
        pebble,
        tls_port,
        http_port,
    }
}

impl Setup {
    fn acme_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "--acme-directory".into(),
            self.pebble.directory.clone(),
            "--acme-ca".into(),
            self.pebble.https_ca.display().to_string(),
            "--acme-cache".into(),
            self.dir.join("acme-cache").display().to_string(),
        ];
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        args
    }

    fn server(&self, extra: &[&str]) -> AlknetServer {
        let listen = format!("tls://127.0.0.1:{}", self.tls_port);
        let args = self.acme_args(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        AlknetServer::start_listening(&self.dir, &[&listen], &args).unwrap()
    }

    /// A client that verifies the server's certificate with Pebble's root.
    fn client(&self, server: &AlknetServer, server_name: Option<&str>) -> AlknetClient {
        let root = self.pebble.issuing_root().unwrap();
        let root = root.display().to_string();
        let mut args = vec![
            "--transport",
            "tls",
            "--tls-ca",
            &root,
            "--host-key",
            &server.fingerprint,
        ];
        if let Some(name) = server_name {
            args.extend(["--tls-server-name", name]);
        }
        AlknetClient::start(&self.dir, self.tls_port, &server.user_key, &args).unwrap()
    }
}

fn wait_for_log(server: &AlknetServer, needle: &str, count: usize, limit: Duration) {
    wait_until(needle, limit, || {
        (server.log().matches(needle).count() >= count).then_some(())
    })
    .unwrap_or_else(|error| panic!("{error}\n{}", server.log()));
}

fn assert_tunnels(client: &AlknetClient, dir: &Workdir) {
    let target = HttpTarget::start("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}/300000", target.addr().port());
    let body = fetch(client.socks_addr, &url, &dir.join("body")).unwrap();
    assert_eq!(body, HttpTarget::body(300_000));
}

/// The issuer and serial `openssl s_client` sees on the TLS port.
fn served_certificate(port: u16, server_name: &str) -> String {
    require_tool("openssl").unwrap();
    let connect = format!("127.0.0.1:{port}");
    let shown = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {connect} -servername {server_name} </dev/null 2>/dev/null \
             | openssl x509 -noout -issuer -serial"
        ))
        .bounded_output()
        .unwrap();
    String::from_utf8_lossy(&shown.stdout).into_owned()
}

#[test]
fn a_name_gets_a_certificate_by_tls_alpn_and_a_restart_reuses_the_cache() {
    let setup = setup(3600);
    let mut server = setup.server(&["--acme-domain", NAME]);
    wait_for_log(&server, "ACME certificate obtained", 1, ISSUANCE);
    assert_eq!(setup.pebble.issued(), 1);

    let client = setup.client(&server, Some(NAME));
    assert_tunnels(&client, &setup.dir);
    let shown = served_certificate(setup.tls_port, NAME);
    assert!(shown.contains("Pebble Intermediate CA"), "{shown}");
    drop(client);

    server.kill_and_restart().unwrap();
    wait_for_log(&server, "ACME certificate valid until", 1, ISSUANCE);
    let client = setup.client(&server, Some(NAME));
    assert_tunnels(&client, &setup.dir);
    assert!(
        !server.log().contains("ACME certificate obtained"),
        "a valid cached certificate must not be ordered again:\n{}",
        server.log()
    );
    assert_eq!(
        setup.pebble.issued(),
        1,
        "{}",
        setup.pebble.process.stdout()
    );

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let cache = setup.dir.join("acme-cache");
        let mode =
            |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&cache), 0o700);
        for entry in std::fs::read_dir(&cache).unwrap() {
            assert_eq!(mode(&entry.unwrap().path()), 0o600);
        }
    }
}

#[test]
fn a_bare_ip_address_gets_a_certificate_the_client_verifies_by_address() {
    let setup = setup(3600);
    let server = setup.server(&["--acme-ip", "127.0.0.1"]);
    wait_for_log(&server, "ACME certificate obtained", 1, ISSUANCE);
    assert!(server.log().contains("names=127.0.0.1"), "{}", server.log());
    // No --tls-server-name: the certificate is checked against 127.0.0.1.
    let client = setup.client(&server, None);
    assert_tunnels(&client, &setup.dir);
}

#[test]
fn http01_is_answered_on_its_own_port() {
    let setup = setup(3600);
    let http01 = format!("127.0.0.1:{}", setup.http_port);
    let server = setup.server(&["--acme-domain", NAME, "--acme-http01", &http01]);
    wait_for_log(&server, "ACME certificate obtained", 1, ISSUANCE);
    // The responder is up, and answers only open challenges.
    let probe = Command::new("curl")
        .args([
            "--silent",
            "--max-time",
            "10",
            "--output",
            "/dev/null",
            "--write-out",
            "%{http_code}",
        ])
        .arg(format!(
            "http://{http01}/.well-known/acme-challenge/not-a-token"
        ))
        .bounded_output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&probe.stdout), "404");
    let client = setup.client(&server, Some(NAME));
    assert_tunnels(&client, &setup.dir);
}

#[test]
fn renewal_swaps_the_certificate_under_a_live_session_and_stealth_stays_nginx() {
    // Renewed at two thirds of 24 s: about every 16 s.
    let setup = setup(24);
    let server = setup.server(&["--acme-domain", NAME, "--stealth"]);
    wait_for_log(&server, "ACME certificate obtained", 1, ISSUANCE);
    let first = served_certificate(setup.tls_port, NAME);
    let client = setup.client(&server, Some(NAME));
    assert_tunnels(&client, &setup.dir);

    wait_for_log(
        &server,
        "ACME certificate obtained",
        3,
        Duration::from_secs(90),
    );
    let last = served_certificate(setup.tls_port, NAME);
    assert!(last.contains("serial="), "{last}");
    assert_ne!(first, last, "the served certificate did not change");
    // The session from before both renewals still carries traffic.
    assert_tunnels(&client, &setup.dir);
    assert!(
        !client.log().contains("connection to the server lost"),
        "{}",
        client.log()
    );

    // A web client still meets nginx.
    require_tool("curl").unwrap();
    let page = Command::new("curl")
        .args(["--silent", "--insecure", "--max-time", "10", "--resolve"])
        .arg(format!("{NAME}:{}:127.0.0.1", setup.tls_port))
        .arg(format!("https://{NAME}:{}/", setup.tls_port))
        .bounded_output()
        .unwrap();
    let page = String::from_utf8_lossy(&page.stdout);
    assert!(
        page.contains("404 Not Found") && page.contains("nginx"),
        "{page}"
    );
}

#[test]
fn an_acme_outage_is_ridden_out_on_the_current_certificate() {
    // Renewal falls due about 13 s in, while Pebble is down.
    let mut setup = setup(20);
    let server = setup.server(&["--acme-domain", NAME]);
    wait_for_log(&server, "ACME certificate obtained", 1, ISSUANCE);
    let first = served_certificate(setup.tls_port, NAME);
    let client = setup.client(&server, Some(NAME));
    setup.pebble.stop().unwrap();

    wait_for_log(&server, "next try in", 1, Duration::from_secs(60));
    assert_eq!(served_certificate(setup.tls_port, NAME), first);
    assert_tunnels(&client, &setup.dir);

    // Back, with a new root and no memory of our account: a new account
    // is registered and a certificate follows.
    setup.pebble.restart().unwrap();
    wait_for_log(
        &server,
        "ACME certificate obtained",
        2,
        Duration::from_secs(90),
    );
    assert_ne!(served_certificate(setup.tls_port, NAME), first);
    assert_tunnels(&client, &setup.dir);
}

#[test]
fn acme_flag_mistakes_are_one_line_errors() {
    let dir = Workdir::new().unwrap();
    let key = xtask::ssh_keygen_ed25519(&dir, "host").unwrap();
    let binary = alknet_binary(xtask::Profile::Dev).unwrap();
    let key = key.display().to_string();
    let cases: [(&[&str], &str); 5] = [
        (
            &["--listen", "127.0.0.1:0", "--acme-domain", NAME],
            "ACME certificates are for TLS listeners",
        ),
        (
            &[
                "--listen",
                "tls://127.0.0.1:0",
                "--acme-domain",
                NAME,
                "--tls-cert",
                "c.pem",
                "--tls-key",
                "k.pem",
            ],
            "exclude each other",
        ),
        (
            &["--listen", "tls://127.0.0.1:0", "--acme-ip", "example.com"],
            "is not an IP address",
        ),
        (
            &[
                "--listen",
                "tls://127.0.0.1:0",
                "--acme-domain",
                "127.0.0.1",
            ],
            "is an IP address, not a domain name",
        ),
        (
            &["--listen", "tls://127.0.0.1:0", "--acme-staging"],
            "ACME settings without a name",
        ),
    ];
    for (args, expected) in cases {
        let output = Command::new(&binary)
            .args([
                "serve",
                "--key",
                &key,
                "--authorized-keys",
                &format!("{key}.pub"),
            ])
            .args(args)
            .bounded_output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
    }
}
