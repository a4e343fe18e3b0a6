//! `alknet completions SHELL`: the completion script, from the same clap
//! definition as the parser, so it never drifts from the flags.

use clap::CommandFactory as _;

use crate::cli::{Cli, CompletionsArgs};
use crate::error::CliError;

pub(crate) fn run(args: &CompletionsArgs) -> Result<(), CliError> {
    let mut command = Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut command, "alknet", &mut out);
    Ok(())
}
