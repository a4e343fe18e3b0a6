//! `alknet keygen`.

use alknet::auth::{fingerprint, generate_ed25519, public_key_path, write_key_pair};

use crate::cli::KeygenArgs;
use crate::error::CliError;

pub(crate) fn run(args: KeygenArgs) -> Result<(), CliError> {
    let comment = args.comment.unwrap_or_else(default_comment);
    let key = generate_ed25519(&comment)?;
    write_key_pair(&key, &args.path)?;
    let public_line = key.public_key().to_openssh().unwrap_or_default();
    println!("Private key: {}", args.path.display());
    println!("Public key:  {}", public_key_path(&args.path).display());
    println!("Fingerprint: {}", fingerprint(key.public_key()));
    println!("Add this line to the server's authorized_keys file:\n{public_line}");
    Ok(())
}

/// `user@host`, as ssh-keygen writes.
fn default_comment() -> String {
    let host = whoami::fallible::hostname().unwrap_or_else(|_| "localhost".to_owned());
    format!("{}@{host}", whoami::username())
}
