/*! `sml check`. */

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn execute(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`sml check` is not implemented yet")
}
