//! `alknet man`: man pages rendered from the clap definition.

use std::io::Write as _;

use clap::CommandFactory as _;

use crate::cli::{Cli, ManArgs};
use crate::error::CliError;

pub(crate) fn run(args: &ManArgs) -> Result<(), CliError> {
    let command = Cli::command();
    match &args.dir {
        Some(dir) => std::fs::create_dir_all(dir)
            .and_then(|()| clap_mangen::generate_to(command, dir))
            .map_err(CliError::Output),
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut page)
                .and_then(|()| std::io::stdout().lock().write_all(&page))
                .map_err(CliError::Output)
        }
    }
}
