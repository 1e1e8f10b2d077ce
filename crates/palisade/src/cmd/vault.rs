//! `palisade vault …` (owned by the vault work; placeholder until it lands).

use crate::context::Context;

#[derive(Debug, clap::Subcommand)]
pub enum VaultCommand {
    /// Run the gateway in the foreground.
    Serve,
}

pub fn run(command: VaultCommand, ctx: &Context) -> anyhow::Result<()> {
    let _ = (command, ctx);
    anyhow::bail!("not implemented yet")
}
