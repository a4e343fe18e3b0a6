//! The call protocol's frame format, checked by an independent
//! implementation (plain Node) against the committed vectors.

use std::path::Path;
use std::process::Command;

use xtask::BoundedOutput as _;
use xtask::require_tool;

#[test]
fn node_frames_the_call_vectors_byte_for_byte() {
    require_tool("node").unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
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
    assert!(report.contains("6/6 vectors ok"), "{report}");
}
