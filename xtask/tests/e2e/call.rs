//! The call protocol from outside: its frame format checked by plain Node
//! against the committed vectors, `alknet call` against `alknet serve`, and
//! a Node peer on the control channel through `alknet connect --forward`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use xtask::BoundedOutput as _;
use xtask::{
    AlknetClient, AlknetServer, Spawned, Workdir, call_command, require_tool, socks5_connect,
    ssh_public_key_fingerprint, wait_until,
};

use crate::certificates::{certified_key, server_trusting_ca};

#[test]
fn node_frames_the_call_vectors_byte_for_byte() {
    require_tool("node").unwrap();
    let root = crate::xtask_dir().join("..");
    let output = Command::new("node")
        .arg(root.join("xtask/tests/e2e/js/call_vectors.mjs"))
        .arg(root.join("alknet-call/tests/vectors.json"))
        .bounded_output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let vectors: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("alknet-call/tests/vectors.json")).unwrap(),
    )
    .unwrap();
    let count = vectors["vectors"].as_array().map_or(0, Vec::len);
    assert!(count >= 8, "{count} vectors");
    assert!(
        report.contains(&format!("{count}/{count} vectors ok")),
        "{report}"
    );
}

/// Runs `alknet call` against `server` as its test user (or `identity`).
fn alknet_call(
    server: &AlknetServer,
    identity: Option<&Path>,
    path: &str,
    input: Option<&str>,
) -> std::process::Output {
    let identity = identity.unwrap_or(&server.user_key);
    let mut command =
        call_command(server.port, identity, &server.fingerprint, path, input).unwrap();
    command.args(["--user", "tester"]);
    command.bounded_output().unwrap()
}

/// The JSON lines `alknet call` printed, failing the test if it failed.
fn json_lines(output: &std::process::Output) -> Vec<Value> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "alknet call failed: {}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Asserts `alknet call` failed with the call error `code`.
fn assert_call_error(output: &std::process::Output, code: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "expected {code}, but the call succeeded"
    );
    assert!(
        stderr.contains(&format!("call failed: {code}:")),
        "expected {code}: {stderr}"
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn alknet_call_lists_describes_and_reports_errors() {
    let dir = Workdir::new().unwrap();
    let server = AlknetServer::start(&dir, &[]).unwrap();

    let list = json_lines(&alknet_call(&server, None, "/services/list", None));
    let names: Vec<&str> = list[0]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|op| op["name"].as_str())
        .collect();
    for builtin in [
        "/services/list",
        "/services/schema",
        "/services/whoami",
        "/hub/services/register",
    ] {
        assert!(names.contains(&builtin), "{builtin} missing from {names:?}");
    }

    let schema = json_lines(&alknet_call(
        &server,
        None,
        "/services/schema",
        Some(r#"{"name": "/hub/services/register"}"#),
    ));
    assert_eq!(schema[0]["op_type"], "mutation");
    assert_eq!(
        schema[0]["input_schema"]["required"],
        json!(["spoke", "operations"])
    );

    // The session's identity is its key's fingerprint.
    let whoami = json_lines(&alknet_call(&server, None, "/services/whoami", None));
    let fingerprint = ssh_public_key_fingerprint(&dir.join("alknet_user.pub")).unwrap();
    assert_eq!(whoami[0]["id"], json!(fingerprint));

    assert_call_error(&alknet_call(&server, None, "/no/such", None), "not_found");
    assert_call_error(
        &alknet_call(&server, None, "/services/schema", Some("[1, 2]")),
        "invalid_input",
    );
    // `-` reads the input from standard input.
    let input = dir.join("input.json");
    std::fs::write(&input, r#"{"name": "/services/whoami"}"#).unwrap();
    let mut piped = call_command(
        server.port,
        &server.user_key,
        &server.fingerprint,
        "/services/schema",
        Some("-"),
    )
    .unwrap();
    let piped = piped
        .bounded_output_with_stdin(std::fs::File::open(&input).unwrap().into())
        .unwrap();
    assert_eq!(json_lines(&piped)[0]["name"], "/services/whoami");

    let bad_json = alknet_call(&server, None, "/services/list", Some("{nope"));
    assert!(!bad_json.status.success());
    assert!(String::from_utf8_lossy(&bad_json.stderr).contains("INPUT-JSON is not valid JSON"));
}

#[test]
fn certificate_extensions_grant_scopes() {
    let dir = Workdir::new().unwrap();
    let server = server_trusting_ca(&dir);
    let key = certified_key(
        &dir,
        "ca",
        "scoped",
        &[
            "-n",
            "tester",
            "-O",
            "extension:scopes@alknet=deploy,metrics",
            "-O",
            "extension:resources@alknet=service:read",
            "-O",
            "permit-port-forwarding",
        ],
    );
    let whoami = json_lines(&alknet_call(&server, Some(&key), "/services/whoami", None));
    assert_eq!(
        whoami[0],
        json!({"id": "scoped-id", "scopes": ["deploy", "metrics"], "resources": ["service:read"]})
    );
}

#[test]
fn a_node_peer_serves_and_calls_through_a_local_forward() {
    require_tool("node").unwrap();
    let dir = Workdir::new().unwrap();
    let server = AlknetServer::start(&dir, &[]).unwrap();
    // Registering the spoke "jsnode" needs its grant.
    let line = server.user_key_line().unwrap();
    server
        .reload_authorized_keys(&format!("{line} resources=spoke:jsnode:register\n"))
        .unwrap();
    let client = AlknetClient::start(
        &dir,
        server.port,
        &server.user_key,
        &["--forward", "127.0.0.1:0:alknet-control:0"],
    )
    .unwrap();
    let control = client.forward_addr(1).unwrap();
    let script = crate::xtask_dir().join("tests/e2e/js/control_peer.mjs");
    let mut command = Command::new("node");
    command.arg(&script).arg(control.port().to_string());
    let mut node = Spawned::start("node-spoke", dir.path(), command).unwrap();
    node.wait_for_stdout("registered", Duration::from_secs(60))
        .unwrap_or_else(|error| panic!("{error}: {}{}", node.stdout(), node.stderr()));
    assert!(node.stdout().contains("list ok") && node.stdout().contains("not_found ok"));

    // Rust → hub → the Node spoke, and back.
    let echoed = json_lines(&alknet_call(
        &server,
        None,
        "/jsnode/js/echo",
        Some(r#"{"x": 1}"#),
    ));
    assert_eq!(echoed, [json!({"by": "node", "echoed": {"x": 1}})]);
    let counted = json_lines(&alknet_call(
        &server,
        None,
        "/jsnode/js/count",
        Some(r#"{"to": 5}"#),
    ));
    assert_eq!(counted, (0..5).map(|n| json!(n)).collect::<Vec<_>>());
    // The hub checks the spoke's schema before the spoke sees the call.
    assert_call_error(
        &alknet_call(&server, None, "/jsnode/js/echo", Some(r#""text""#)),
        "invalid_input",
    );

    // A second Node peer subscribes to the spoke's endless stream through
    // the hub and aborts it: the abort crosses the hub and stops the spoke.
    let subscriber = Command::new("node")
        .arg(&script)
        .arg(control.port().to_string())
        .arg("subscriber")
        .bounded_output()
        .unwrap();
    let report = String::from_utf8_lossy(&subscriber.stdout);
    assert!(
        subscriber.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&subscriber.stderr)
    );
    assert!(report.contains("aborted after 5 items"), "{report}");
    node.wait_for_stdout("ticks aborted", Duration::from_secs(30))
        .unwrap_or_else(|error| panic!("{error}: the spoke kept ticking: {}", node.stdout()));

    // The spoke goes away: its operations become unavailable.
    node.kill().unwrap();
    let gone = wait_until(
        "the hub to forget the spoke",
        Duration::from_secs(30),
        || {
            let output = alknet_call(&server, None, "/jsnode/js/echo", Some("{}"));
            String::from_utf8_lossy(&output.stderr)
                .contains("call failed: unavailable:")
                .then_some(())
        },
    );
    assert!(gone.is_ok(), "the hub kept a dead spoke");
}

#[test]
fn the_control_channel_is_reachable_through_socks5_too() {
    use std::io::{Read, Write};
    let dir = Workdir::new().unwrap();
    let server = AlknetServer::start(&dir, &[]).unwrap();
    let client = AlknetClient::start(&dir, server.port, &server.user_key, &[]).unwrap();
    let (reply, mut stream) = socks5_connect(client.socks_addr, "alknet-control", 0).unwrap();
    assert_eq!(reply, 0, "SOCKS5 refused the control channel");
    // One frame by hand: length prefix, then the JSON envelope.
    let request = br#"{"type":"call.requested","id":"s1","payload":{"name":"/services/whoami","input":null}}"#;
    let length = u32::try_from(request.len()).unwrap();
    stream.write_all(&length.to_be_bytes()).unwrap();
    stream.write_all(request).unwrap();
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).unwrap();
    let mut frame = vec![0u8; u32::from_be_bytes(prefix) as usize];
    stream.read_exact(&mut frame).unwrap();
    let answer: Value = serde_json::from_slice(&frame).unwrap();
    let fingerprint = ssh_public_key_fingerprint(&dir.join("alknet_user.pub")).unwrap();
    assert_eq!(answer["type"], "call.responded");
    assert_eq!(answer["id"], "s1");
    assert_eq!(answer["payload"]["id"], json!(fingerprint));
}

#[test]
fn garbage_on_the_control_channel_closes_only_that_channel() {
    use std::io::{Read, Write};
    let dir = Workdir::new().unwrap();
    let server = AlknetServer::start(&dir, &[]).unwrap();
    let client = AlknetClient::start(&dir, server.port, &server.user_key, &[]).unwrap();
    for garbage in [
        // A length prefix of 4 GiB - 1: refused before anything is allocated.
        &b"\xff\xff\xff\xffwhatever"[..],
        // A well-sized frame that is not JSON.
        &b"\x00\x00\x00\x05hello"[..],
    ] {
        let (reply, mut stream) = socks5_connect(client.socks_addr, "alknet-control", 0).unwrap();
        assert_eq!(reply, 0);
        stream.write_all(garbage).unwrap();
        let mut rest = Vec::new();
        // The server closes the channel (EOF), it does not hang.
        stream.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "{rest:?}");
    }
    // The session and the server are fine.
    let list = json_lines(&alknet_call(&server, None, "/services/list", None));
    assert!(list[0].as_array().is_some_and(|ops| !ops.is_empty()));
    let (reply, _) = socks5_connect(client.socks_addr, "alknet-control", 0).unwrap();
    assert_eq!(reply, 0, "the client's session was harmed");
    assert!(!server.log().contains("panicked"));
}
