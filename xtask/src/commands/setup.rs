//! What `cargo xtask test` needs on the machine, installed when missing:
//! the independent tools the tests drive (Debian packages, via apt-get as
//! root or through `sudo -n`) and rustfmt. Where it cannot install, it
//! stops and says exactly what to run.

use std::path::Path;
use std::process::Command;

use xtask::{Result, XtaskError, tool_installed};

/// Each tool the tests run, and the Debian package that has it.
const TOOLS: [(&str, &str); 16] = [
    ("curl", "curl"),
    ("ssh", "openssh-client"),
    ("ssh-keygen", "openssh-client"),
    ("sshd", "openssh-server"),
    ("microsocks", "microsocks"),
    ("tinyproxy", "tinyproxy"),
    ("openssl", "openssl"),
    ("nmap", "nmap"),
    ("pebble", "pebble"),
    ("pebble-challtestsrv", "pebble"),
    ("fail2ban-regex", "fail2ban"),
    ("systemd-analyze", "systemd"),
    ("man", "man-db"),
    ("node", "nodejs"),
    ("npm", "npm"),
    ("dnsmasq", "dnsmasq-base"),
];

/// The packages of the test tools that are missing, each once.
fn missing_packages() -> Vec<&'static str> {
    let mut packages: Vec<&'static str> = TOOLS
        .iter()
        .filter(|(tool, _)| !tool_installed(tool))
        .map(|(_, package)| *package)
        .collect();
    packages.dedup();
    packages
}

/// How to become root for apt-get: nothing, `sudo -n`, or not at all.
fn root_prefix() -> Option<Vec<&'static str>> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() == "0" {
        return Some(Vec::new());
    }
    let sudo = Command::new("sudo").args(["-n", "true"]).status().ok()?;
    sudo.success().then(|| vec!["sudo", "-n"])
}

fn run(command: &[&str]) -> Result<()> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| XtaskError::Failed("an empty command".into()))?;
    let status = Command::new(program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(XtaskError::io(format!("running {}", command.join(" "))))?;
    if status.success() {
        Ok(())
    } else {
        Err(XtaskError::Failed(format!(
            "{} failed ({status})",
            command.join(" ")
        )))
    }
}

/// Installs what the tests need and is missing, or says what to run.
pub(crate) fn ensure_test_tools() -> Result<()> {
    let packages = missing_packages();
    if !packages.is_empty() {
        let advice = format!(
            "sudo apt-get update && sudo apt-get install -y --no-install-recommends {}",
            packages.join(" ")
        );
        let apt = Path::new("/usr/bin/apt-get").is_file();
        let Some(prefix) = root_prefix().filter(|_| apt) else {
            return Err(XtaskError::Failed(format!(
                "the tests need tools this machine lacks ({}); install them with:\n  {advice}",
                packages.join(", ")
            )));
        };
        println!(
            "cargo xtask test: installing what the tests drive: {}",
            packages.join(" ")
        );
        let with_prefix = |rest: &[&'static str]| {
            let mut command = prefix.clone();
            command.extend_from_slice(rest);
            command
        };
        run(&with_prefix(&["apt-get", "update", "-qq"]))?;
        let mut install =
            with_prefix(&["apt-get", "install", "-y", "-qq", "--no-install-recommends"]);
        install.extend(packages.iter().copied());
        run(&install)?;
    }
    let rustfmt = Command::new("cargo")
        .args(["fmt", "--version"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !rustfmt {
        println!("cargo xtask test: installing rustfmt (the tidy tests check formatting)");
        run(&["rustup", "component", "add", "rustfmt"])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_package_is_listed_once_in_a_row() {
        // dedup() only merges neighbours: a package's tools sit together.
        let mut seen = Vec::new();
        for (_, package) in TOOLS {
            if seen.last() != Some(&package) {
                assert!(!seen.contains(&package), "{package} is split");
                seen.push(package);
            }
        }
    }
}
