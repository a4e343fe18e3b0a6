//! `alknet keygen`.

use std::io::IsTerminal;

use alknet::auth::{fingerprint, generate_ed25519, public_key_path, write_key_pair_encrypted};

use crate::cli::KeygenArgs;
use crate::error::CliError;

pub(crate) fn run(args: KeygenArgs) -> Result<(), CliError> {
    let comment = args.comment.unwrap_or_else(default_comment);
    let passphrase = passphrase(args.passphrase_env.as_deref())?;
    let key = generate_ed25519(&comment)?;
    write_key_pair_encrypted(&key, &args.path, passphrase.as_deref())?;
    let public_line = key.public_key().to_openssh().unwrap_or_default();
    println!("Private key: {}", args.path.display());
    println!("Public key:  {}", public_key_path(&args.path).display());
    println!("Fingerprint: {}", fingerprint(key.public_key()));
    // The same command makes host keys and user keys.
    println!(
        "As a user key, add this line to the server's authorized_keys file:\n{public_line}\n\
         As a host key, pass it to `alknet serve --key`; clients pin it with --host-key {}",
        fingerprint(key.public_key())
    );
    Ok(())
}

/// From the variable `--passphrase-env` names; else, on a terminal, asked
/// twice as ssh-keygen does (empty: none); else none.
fn passphrase(variable: Option<&str>) -> Result<Option<String>, CliError> {
    if let Some(variable) = variable {
        return match std::env::var(variable) {
            Ok(value) if !value.is_empty() => Ok(Some(value)),
            _ => Err(CliError::Usage(format!(
                "--passphrase-env {variable}: that environment variable is not set (or empty)"
            ))),
        };
    }
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Ok(None);
    }
    let ask = |prompt: &str| {
        rpassword::prompt_password(prompt)
            .map_err(|error| CliError::Usage(format!("cannot read the passphrase: {error}")))
    };
    let first = ask("Enter passphrase (empty for no passphrase): ")?;
    if first.is_empty() {
        return Ok(None);
    }
    if ask("Enter same passphrase again: ")? != first {
        return Err(CliError::Usage(
            "the passphrases do not match; nothing was written".into(),
        ));
    }
    Ok(Some(first))
}

/// `user@host`, as ssh-keygen writes.
fn default_comment() -> String {
    let host = whoami::fallible::hostname().unwrap_or_else(|_| "localhost".to_owned());
    format!("{}@{host}", whoami::username())
}
