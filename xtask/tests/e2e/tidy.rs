//! Workspace policy, checked like any other behaviour (after
//! rust-analyzer's `tidy`): formatting, module docs, lints, licences and
//! who may depend on whom.

use std::path::{Path, PathBuf};
use std::process::Command;
use xtask::BoundedOutput as _;

/// `cargo metadata` for the workspace's own packages.
fn metadata() -> serde_json::Value {
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(workspace_root())
        .bounded_output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON")
}

/// The crates with no alknet-* dependency but these (ARCHITECTURE.md):
/// alknet-proxy implements alknet-transport's connector trait, and the
/// crates that check or establish identities share alknet-identity.
const LEAVES: [&str; 6] = [
    "alknet-identity",
    "alknet-transport",
    "alknet-auth",
    "alknet-call",
    "alknet-proxy",
    "alknet-stealth",
];
const ALLOWED_BETWEEN_LEAVES: [(&str, &str); 3] = [
    ("alknet-proxy", "alknet-transport"),
    ("alknet-call", "alknet-identity"),
    ("alknet-auth", "alknet-identity"),
];

#[test]
fn leaf_crates_depend_on_no_other_alknet_crate_but_the_allowed_ones() {
    let metadata = metadata();
    let packages = metadata["packages"].as_array().unwrap();
    let mut checked = 0;
    for package in packages {
        let name = package["name"].as_str().unwrap();
        if !LEAVES.contains(&name) && !name.starts_with("alknet-acme") {
            continue;
        }
        checked += 1;
        for dependency in package["dependencies"].as_array().unwrap() {
            let on = dependency["name"].as_str().unwrap();
            // Tests may use anything.
            if dependency["kind"].as_str() == Some("dev") || !on.starts_with("alknet") {
                continue;
            }
            assert!(
                ALLOWED_BETWEEN_LEAVES.contains(&(name, on)),
                "{name} depends on {on}: leaf crates depend on no alknet-* crate \
                 (but {ALLOWED_BETWEEN_LEAVES:?}); move the shared part down or the user up"
            );
        }
    }
    assert!(checked >= LEAVES.len(), "not every leaf crate was found");
}

#[test]
fn every_module_opens_with_docs() {
    let metadata = metadata();
    let mut missing = Vec::new();
    for package in metadata["packages"].as_array().unwrap() {
        let manifest = Path::new(package["manifest_path"].as_str().unwrap());
        let root = manifest.parent().unwrap();
        for folder in ["src", "examples"] {
            for file in rust_files(&root.join(folder)) {
                let text = std::fs::read_to_string(&file).unwrap();
                if !text.starts_with("//!") {
                    missing.push(file.display().to_string());
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "these modules must open with //! docs saying what they hold: {missing:#?}"
    );
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files
}

fn workspace_root() -> PathBuf {
    crate::xtask_dir()
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// Every workspace member: (package name, Cargo.toml text).
fn members() -> Vec<(String, String)> {
    metadata()["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|package| {
            let name = package["name"].as_str().unwrap().to_owned();
            let manifest = package["manifest_path"].as_str().unwrap();
            (name, std::fs::read_to_string(manifest).unwrap())
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
fn every_crate_inherits_the_workspace_lints_and_package_fields() {
    for (name, manifest) in members() {
        let lints = if UNSAFE_CRATES.contains(&name.as_str()) {
            // These crates restate the workspace lints but for
            // `unsafe_code = "forbid"`.
            unsafe_crate_lints_match_the_workspace(&name, &manifest);
            "[lints.rust]"
        } else {
            "[lints]\nworkspace = true"
        };
        for needed in [
            lints,
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

/// Crates that need `unsafe` (and nothing else may): alknet-napi, whose
/// `#[napi]` expands to FFI glue, and alknet-sched, whose one system call
/// pair no libc, rustix or nix function wraps.
const UNSAFE_CRATES: [&str; 2] = ["alknet-napi", "alknet-sched"];

fn unsafe_crate_lints_match_the_workspace(name: &str, manifest: &str) {
    let root = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
    let workspace_lints = root
        .lines()
        .skip_while(|line| !line.starts_with("[workspace.lints.rust]"))
        .skip(1)
        .take_while(|line| !line.starts_with("[profile"))
        .filter(|line| line.contains('=') && !line.trim_start().starts_with('#'));
    for lint in workspace_lints {
        if lint.starts_with("unsafe_code") {
            continue;
        }
        assert!(
            manifest.lines().any(|line| line == lint),
            "{name}/Cargo.toml must restate the workspace lint {lint:?}"
        );
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
