//! `palisade doctor`: what this machine gives Palisade and how to fix what is missing,
//! one line each. The checks live in `palisade_host::doctor` (the web UI's Health page
//! shows the same report); this file finds the running host and vault and prints.

use crate::context::Context;
use palisade_host::doctor::{self, HostState, Status};
use std::time::Duration;

/// How long each model may take to answer with `--online`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Also send each agent that has a model key one tiny request (a one-token answer
    /// to "ping") through the vault, to see that the key and the model work.
    #[arg(long)]
    online: bool,
}

pub fn run(args: DoctorArgs, ctx: &Context) -> anyhow::Result<()> {
    let host = match super::up::running_host(&ctx.home) {
        Some(info) => HostState::Running {
            pid: info.pid,
            listen: info.listen.to_string(),
        },
        None => HostState::NotRunning,
    };
    let mut report = doctor::offline(&ctx.home, host);
    // Without a home there is nothing to probe (and opening the store would create one).
    if args.online && ctx.home.root().exists() {
        let store = ctx.open_store()?;
        // The running gateway's sockets (`palisade up` serves them under the home).
        let socket_dir = palisade_vault::running_gateway(&ctx.home)
            .map(|info| info.socket_dir)
            .unwrap_or_else(|| ctx.home.agent_socket_dir());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(doctor::online(
            &mut report,
            &store,
            |agent| socket_dir.join(format!("{agent}.sock")),
            PROBE_TIMEOUT,
        ));
    }
    if ctx.json {
        crate::output::print_json(&report)?;
    } else {
        crate::output::print(&report.render())?;
    }
    // Something to fix is an exit status scripts can see; the report says what.
    if report.worst() == Status::Fail {
        std::process::exit(1);
    }
    Ok(())
}
