//! Workspace policy, checked like any other behaviour (after
//! rust-analyzer's `tidy`): formatting, crate docs, lints and licences.

use std::path::{Path, PathBuf};
use std::process::Command;
use xtask::BoundedOutput as _;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// Every workspace member: (directory name, Cargo.toml text).
fn members() -> Vec<(String, String)> {
    let root = workspace_root();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let list = manifest
        .split("members = [")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .expect("a members list");
    list.split(',')
        .map(|entry| entry.trim().trim_matches('"').to_owned())
        .filter(|name| !name.is_empty())
        .map(|name| {
            let text = std::fs::read_to_string(root.join(&name).join("Cargo.toml")).unwrap();
            (name, text)
        })
        .collect()
}

#[test]
fn code_is_formatted() {
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["fmt", "--all", "--check"])
        .current_dir(workspace_root())
        .bounded_output()
        .expect("cargo fmt runs (rustup component add rustfmt)");
    assert!(
        output.status.success(),
        "run `cargo fmt --all`:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn every_crate_root_opens_with_crate_docs() {
    for (name, _) in members() {
        let src = workspace_root().join(&name).join("src");
        for root in ["lib.rs", "main.rs"] {
            let path = src.join(root);
            if let Ok(text) = std::fs::read_to_string(&path) {
                assert!(
                    text.starts_with("//!"),
                    "{} must open with //! docs",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn every_crate_inherits_the_workspace_lints_and_package_fields() {
    for (name, manifest) in members() {
        for needed in [
            "[lints]\nworkspace = true",
            "edition.workspace = true",
            "version.workspace = true",
        ] {
            assert!(
                manifest.contains(needed),
                "{name}/Cargo.toml lacks {needed:?}"
            );
        }
    }
}

#[test]
fn crates_linking_socks5_proto_are_gpl_and_the_rest_permissive() {
    // socks5-proto is GPL-3.0-or-later: so is whatever links it.
    let members = members();
    let gpl_roots = [
        "socks5-proto",
        "alknet-proxy",
        "alknet.workspace",
        "alknet =",
    ];
    for (name, manifest) in &members {
        let links_gpl = gpl_roots.iter().any(|dep| {
            manifest
                .lines()
                .any(|line| line.trim_start().starts_with(dep))
        });
        let is_gpl = manifest.contains("license = \"GPL-3.0-or-later\"");
        let is_permissive = manifest.contains("license.workspace = true");
        if links_gpl {
            assert!(
                is_gpl,
                "{name} links socks5-proto, so it must be GPL-3.0-or-later"
            );
        } else {
            assert!(
                is_permissive,
                "{name} links no GPL code; keep it MIT OR Apache-2.0"
            );
        }
    }
}
