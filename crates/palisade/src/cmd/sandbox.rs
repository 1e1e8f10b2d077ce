//! `palisade sandbox …` and `palisade shim` (owned by the sandbox work; placeholder until it lands).

use crate::context::Context;

#[derive(Debug, clap::Subcommand)]
pub enum SandboxCommand {
    /// Run one command in an agent's sandbox.
    Run,
}

pub fn run(command: SandboxCommand, ctx: &Context) -> anyhow::Result<()> {
    let _ = (command, ctx);
    anyhow::bail!("not implemented yet")
}

/// Arguments of `palisade shim` (runs inside a sandbox).
#[derive(Debug, clap::Args)]
pub struct ShimArgs {}

pub fn run_shim(args: ShimArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("not implemented yet")
}
