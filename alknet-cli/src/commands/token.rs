//! `alknet token`.

use std::time::{SystemTime, UNIX_EPOCH};

use alknet::auth::{load_private_key, mint_token};

use crate::cli::TokenArgs;
use crate::error::CliError;

pub(crate) fn run(args: TokenArgs) -> Result<(), CliError> {
    let key = load_private_key(args.identity.as_path(), super::passphrase().as_deref())?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| CliError::Usage("the system clock is before 1970".into()))?
        .as_secs();
    println!("{}", mint_token(&key, now)?);
    Ok(())
}
