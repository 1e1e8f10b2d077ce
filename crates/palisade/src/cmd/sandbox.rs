//! `palisade sandbox run|doctor|image build` and `palisade shim` (inside a sandbox).
//!
//! `sandbox run` wires the pieces: it checks the agent, the runtime and the mounts
//! before anything starts, finds the running gateway's socket for the agent (or serves
//! the vault in-process for the command's lifetime), builds the CA bundle, starts the
//! sandbox, and exits with the command's exit code once everything is cleaned up.

use crate::context::Context;
use anyhow::Context as _;
use palisade_policy::AgentName;
use palisade_sandbox::limits::{parse_cpus, parse_memory, parse_pids, parse_wall_time};
use palisade_sandbox::{
    image::ImageBuild, mounts::MountPolicy, LimitMechanism, Limits, Oci, OciTool, Runtime,
    RuntimeKind, SandboxSpec, StdioMode,
};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

/// Where in-process vaults keep their socket: `run/vaults/<pid>-…/` in the home, a
/// private (0700) folder per run, and so per agent.
const VAULT_DIR: &str = "vaults";

#[derive(Debug, clap::Subcommand)]
pub enum SandboxCommand {
    /// Run one command in an agent's sandbox; the vault is its only way out.
    #[command(after_help = "Examples:
  palisade sandbox run --agent research -- curl -s https://example.com/
  palisade sandbox run --agent coder --mount ~/src/app:/mnt/app:rw --timeout 10m -- bash -c 'cd /mnt/app && make test'
  palisade sandbox run --agent coder --runtime podman --memory 2G --pids 1024 -- python3 job.py

Exit code: the command's; 124 when --timeout ended it; 122 when the workspace reached
the agent's quota (`palisade agents edit NAME --workspace-quota SIZE`) or its disk ran low.")]
    Run(RunArgs),
    /// Report which protections sandboxes get on this host (probed, not assumed).
    Doctor,
    /// The default OCI image for --runtime podman|docker.
    #[command(subcommand)]
    Image(ImageCommand),
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The agent whose sandbox, workspace and vault socket to use.
    #[arg(long, value_name = "NAME")]
    agent: String,
    /// bwrap (default, no daemon), podman or docker.
    #[arg(long, default_value = "bwrap", value_name = "RUNTIME")]
    runtime: String,
    /// Extra mount, read-only unless `:rw`; DST under /mnt or /data. Refused
    /// as SRC: the palisade home and what holds it, /tmp and /var/tmp themselves, /run,
    /// secret folders (~/.ssh, …) and /etc; for a research agent, what is, lies in or
    /// holds a sensitive folder (`palisade folders add --sensitive`).
    #[arg(long = "mount", value_name = "SRC:DST[:rw]")]
    mounts: Vec<String>,
    /// Memory limit (e.g. 512M, 2G), or `none`.
    #[arg(long, default_value = "1G", value_name = "SIZE")]
    memory: String,
    /// Process/thread limit, or `none`.
    #[arg(long, default_value = "512", value_name = "N")]
    pids: String,
    /// CPU limit in CPUs (e.g. 1, 0.5), or `none`.
    #[arg(long, default_value = "1", value_name = "CPUS")]
    cpus: String,
    /// Wall-time limit (e.g. 30s, 10m); the sandbox is killed and the exit code is 124.
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,
    /// OCI image for podman/docker [default: localhost/palisade-sandbox:latest].
    #[arg(long, value_name = "IMAGE")]
    image: Option<String>,
    /// In-process vault only: extra CA (PEM) trusted for upstream TLS.
    #[arg(long, value_name = "FILE")]
    upstream_ca: Vec<PathBuf>,
    /// In-process vault only: host pattern allowed to resolve to a local address.
    #[arg(long, value_name = "PATTERN")]
    allow_local_upstream: Vec<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// Build the default image locally (debootstrap + import); keeps an existing one.
    Build(ImageBuildArgs),
}

#[derive(Debug, clap::Args)]
pub struct ImageBuildArgs {
    /// podman (default) or docker.
    #[arg(long, default_value = "podman")]
    runtime: String,
    /// Image name.
    #[arg(long, default_value = palisade_sandbox::oci::DEFAULT_IMAGE)]
    tag: String,
    /// Debian suite [default: the host's release, else bookworm].
    #[arg(long)]
    suite: Option<String>,
    /// Debian mirror.
    #[arg(long, default_value = "http://deb.debian.org/debian")]
    mirror: String,
    /// Import this root filesystem tarball instead of running debootstrap (no root needed).
    #[arg(long, value_name = "FILE")]
    rootfs_tar: Option<PathBuf>,
    /// Also save the root filesystem tarball here, for other users to import.
    #[arg(long, value_name = "FILE")]
    save_rootfs: Option<PathBuf>,
    /// Rebuild even if the image exists.
    #[arg(long)]
    force: bool,
}

pub fn run(command: SandboxCommand, ctx: &Context) -> anyhow::Result<()> {
    match command {
        SandboxCommand::Run(args) => run_sandbox(args, ctx),
        SandboxCommand::Doctor => {
            let report = palisade_sandbox::doctor::diagnose();
            if ctx.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
            Ok(())
        }
        SandboxCommand::Image(ImageCommand::Build(args)) => build_image(args),
    }
}

fn optional<T>(
    text: &str,
    parse: impl Fn(&str) -> Result<T, palisade_sandbox::SandboxError>,
) -> anyhow::Result<Option<T>> {
    if text.eq_ignore_ascii_case("none") {
        Ok(None)
    } else {
        Ok(Some(parse(text)?))
    }
}

fn run_sandbox(args: RunArgs, ctx: &Context) -> anyhow::Result<()> {
    // Everything that can be checked is checked before anything starts.
    let kind: RuntimeKind = args.runtime.parse()?;
    if kind == RuntimeKind::Bwrap {
        palisade_sandbox::cgroup::prime_migration();
    }
    let limits = Limits {
        memory: optional(&args.memory, parse_memory)?,
        pids: optional(&args.pids, parse_pids)?,
        cpus: optional(&args.cpus, parse_cpus)?,
        wall_time: args.timeout.as_deref().map(parse_wall_time).transpose()?,
        workspace: None,
    };
    let policy = MountPolicy::for_host(ctx.home.root());
    let mounts = args
        .mounts
        .iter()
        .map(|spec| policy.check(spec))
        .collect::<Result<Vec<_>, _>>()?;
    let agent = AgentName::new(&args.agent)?;
    let store = ctx.open_store()?;
    let record = match store.get_agent(&agent) {
        Ok(record) => record,
        Err(palisade_store::StoreError::NotFound { .. }) => anyhow::bail!(
            "unknown agent \"{agent}\"; create it with `palisade agents create {agent}`"
        ),
        Err(error) => return Err(error.into()),
    };
    // A research agent holds nothing sensitive, whichever way a folder would reach it:
    // by its path, or by another path to the same directory (a bind mount of it).
    if record.profile == palisade_policy::Profile::Research {
        let sensitive: Vec<_> = store
            .list_folders()?
            .into_iter()
            .filter(|folder| folder.sensitive)
            .collect();
        for mount in &mounts {
            let by_path = store.sensitive_folder_around(&mount.source)?;
            let by_directory = || {
                sensitive
                    .iter()
                    .find(|folder| {
                        palisade_host::folders::same_directory_around(&mount.source, &folder.path)
                    })
                    .map(|folder| folder.name.clone())
            };
            if let Some(folder) = by_path.or_else(by_directory) {
                anyhow::bail!(
                    "{} is or overlaps the sensitive folder {folder}, and {agent} is a research agent, which never mounts one; use an action agent",
                    mount.source.display()
                );
            }
        }
    }
    drop(store);
    let mut limits = limits;
    // The agent's own quota (a malformed setting is reported by `agents show`; the
    // default applies meanwhile).
    let quota = palisade_host::AgentSettings::from_json(&record.settings)
        .unwrap_or_default()
        .effective_workspace_quota();
    limits.workspace = Some(quota);
    let runtime: Box<dyn Runtime> = match (kind, &args.image) {
        (RuntimeKind::Podman, Some(image)) => Box::new(Oci::with_image(OciTool::Podman, image)),
        (RuntimeKind::Docker, Some(image)) => Box::new(Oci::with_image(OciTool::Docker, image)),
        _ => palisade_sandbox::runtime_for(kind),
    };
    runtime.check()?;
    let palisade_binary = std::env::current_exe()
        .context("cannot find the palisade binary to mount into the sandbox")?;
    let workspace = ctx.home.agent_workspace(agent.as_str());
    // Held until the sandbox has ended: its image stays mounted meanwhile.
    let _workspace_claim = palisade_sandbox::volume::prepare(&workspace, quota)?;

    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Put back as they were when the sandbox ends, whatever the command did to them.
    let _terminal = TerminalGuard::save();
    let code = tokio.block_on(async {
        // The CA first: the in-process gateway loads the same one, and creating it
        // twice at once could leave two.
        let vault_ca = palisade_vault::ca_certificate_pem(&ctx.home)?;
        let mut starting = None;
        let socket_dir_guard;
        let vault_socket = match palisade_vault::running_gateway(&ctx.home) {
            Some(info) => {
                let socket = info.socket_dir.join(format!("{agent}.sock"));
                wait_for_socket(&socket, Duration::from_secs(3)).await.with_context(|| {
                    format!("the running gateway (pid {}) has no socket for agent {agent:?} yet; try again in a second", info.pid)
                })?;
                socket
            }
            None => {
                // The agent's socket is bound here and the gateway starts when the
                // sandbox first connects to it: a client waits in the socket's backlog
                // meanwhile, not in a retry loop, and a command that never reaches out
                // never pays for (or competes with) the gateway's start. Its options are
                // checked now, before the sandbox starts. The socket's folder, private
                // under the home's `run/`, is named after this process, so the next run
                // removes it if this one is `kill -9`ed. Only this process connects to
                // the socket (the sandbox's broker does, for the shim), and the vault
                // admits no other peer.
                palisade_vault::check_upstream_ca(&args.upstream_ca)?;
                let vaults = ctx.home.run_dir().join(VAULT_DIR);
                create_private_dir(&vaults)?;
                palisade_sandbox::remove_stale_run_dirs(&vaults, "");
                socket_dir_guard = tempfile::Builder::new()
                    .prefix(&format!("{}-", std::process::id()))
                    .tempdir_in(&vaults)
                    .context("cannot create a socket directory for the in-process vault")?;
                let socket = socket_dir_guard.path().join(format!("{agent}.sock"));
                // sun_path holds 108 bytes with its terminating NUL.
                let length = socket.as_os_str().len();
                if length > 107 {
                    anyhow::bail!(
                        "the agent's vault socket would be {} ({length} bytes), longer than the 107 a Unix socket path may have; use a shorter --home or agent name, or run `palisade vault serve`",
                        socket.display()
                    );
                }
                let listener = std::os::unix::net::UnixListener::bind(&socket)
                    .context("cannot create the agent's vault socket")?;
                std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
                    .context("cannot make the agent's vault socket private")?;
                let mut config = palisade_vault::VaultConfig::new(ctx.home.clone());
                config.socket_dir = Some(socket_dir_guard.path().to_path_buf());
                config.upstream_ca = args.upstream_ca.clone();
                config.allow_local_upstream = args.allow_local_upstream.clone();
                config.advertise = false;
                config.sockets_for_every_agent = false;
                config.agent_peers = palisade_vault::PeerRule::Process(std::process::id());
                let socket_agent = agent.clone();
                starting = Some(tokio::spawn(async move {
                    let listener = first_connection(listener)
                        .await
                        .context("cannot wait on the agent's vault socket")?;
                    anyhow::Ok(
                        palisade_vault::Gateway::start_with_sockets(
                            config,
                            vec![(socket_agent, listener)],
                        )
                        .await?,
                    )
                }));
                socket
            }
        };
        let spec = SandboxSpec {
            agent: agent.to_string(),
            workspace,
            palisade_binary,
            shim_subcommand: vec!["shim".into()],
            vault_socket,
            host_socket: None,
            ca_bundle: palisade_sandbox::env::ca_bundle(&vault_ca),
            mounts,
            limits,
            command: args.command.clone(),
            stdio: StdioMode::Inherit,
        };
        let mut in_process = None;
        let still_starting = starting.as_ref().map(|task| task.abort_handle());
        let gateway_ready = async {
            if let Some(starting) = starting {
                let gateway = starting
                    .await
                    .context("the in-process vault stopped while starting")?
                    .context("the in-process vault could not start")?;
                in_process = Some(gateway);
            }
            anyhow::Ok(())
        };
        let result = run_to_end(&*runtime, &spec, gateway_ready).await;
        match in_process {
            // Lets in-flight requests finish and flushes the audit log.
            Some(gateway) => {
                let _ = tokio::time::timeout(Duration::from_secs(5), gateway.shutdown()).await;
            }
            // The command ended before the gateway was up: nothing was served.
            None => {
                if let Some(task) = still_starting {
                    task.abort();
                }
            }
        }
        result
    });
    // What is left (a gateway start cut short) needs no waiting for: the process ends.
    tokio.shutdown_background();
    let code = code?;
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}

/// Returns `listener` once a connection waits on it (it stays queued for the gateway).
/// A blocking poll on its own thread: tokio's safe types offer readiness of a listener
/// only together with accepting. If the command ends first, the thread is left to the
/// process's exit.
async fn first_connection(
    listener: std::os::unix::net::UnixListener,
) -> std::io::Result<std::os::unix::net::UnixListener> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    tokio::task::spawn_blocking(move || {
        loop {
            let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(errno) => return Err(std::io::Error::from(errno)),
            }
        }
        Ok(listener)
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Starts the sandbox and waits for it, ending it on SIGINT/SIGTERM.
/// `gateway_ready` resolves once the vault serves the sandbox's socket (at once for a
/// running gateway); if it fails first, the sandbox is ended and the error returned.
async fn run_to_end(
    runtime: &dyn Runtime,
    spec: &SandboxSpec,
    gateway_ready: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<i32> {
    use tokio::signal::unix::{signal, SignalKind};
    let sandbox = runtime.start(spec)?;
    for report in sandbox.limit_reports() {
        if report.mechanism == LimitMechanism::NotApplied {
            eprintln!(
                "palisade: warning: {} limit {} not applied: {}",
                report.limit,
                report.value,
                report.note.as_deref().unwrap_or("unsupported here")
            );
        }
    }
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    // The sandbox may finish before the gateway is even up (a command that never
    // connects out). Dropping `wait` on any early return ends the sandbox.
    let wait = sandbox.wait();
    tokio::pin!(wait);
    let gateway_ready = gateway_ready;
    tokio::pin!(gateway_ready);
    let mut gateway_up = false;
    let waited = loop {
        tokio::select! {
            ready = &mut gateway_ready, if !gateway_up => {
                ready?;
                gateway_up = true;
            }
            outcome = &mut wait => break outcome?,
            _ = interrupt.recv() => return Ok(130),
            _ = terminate.recv() => return Ok(143),
        }
    };
    if let Some(full) = waited.workspace_full {
        eprintln!(
            "palisade: {full}, so the sandbox was stopped; delete files in the workspace ({}) or raise the quota with `palisade agents edit {} --workspace-quota SIZE`",
            spec.workspace.display(),
            spec.agent
        );
    }
    if waited.timed_out {
        eprintln!(
            "palisade: the sandbox reached its wall-time limit ({}) and was killed",
            spec.limits
                .wall_time
                .map(|d| humantime::format_duration(d).to_string())
                .unwrap_or_default()
        );
    }
    Ok(waited.code)
}

async fn wait_for_socket(path: &std::path::Path, limit: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    while !path.exists() {
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("no socket at {}", path.display());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn create_private_dir(path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("cannot create the folder {}", path.display()))
}

fn build_image(args: ImageBuildArgs) -> anyhow::Result<()> {
    let tool = match args.runtime.as_str() {
        "podman" => OciTool::Podman,
        "docker" => OciTool::Docker,
        other => anyhow::bail!("unknown image runtime {other:?}: use podman or docker"),
    };
    let mut build = ImageBuild::new(tool);
    build.tag = args.tag;
    if let Some(suite) = args.suite {
        build.suite = suite;
    }
    build.mirror = args.mirror;
    build.rootfs_tar = args.rootfs_tar;
    build.save_rootfs = args.save_rootfs;
    build.force = args.force;
    build.run(&mut |line| eprintln!("{line}"))?;
    Ok(())
}

/// Arguments of `palisade shim` (runs inside a sandbox; started by `sandbox run`).
#[derive(Debug, clap::Args)]
pub struct ShimArgs {
    /// `--control-fd N --listen ADDR [--rlimit-as N] [--rlimit-nproc N] -- CMD…`
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    args: Vec<String>,
}

pub fn run_shim(args: ShimArgs) -> anyhow::Result<()> {
    run_shim_args(args.args)
}

/// Runs the shim with its own arguments (what follows `shim`) and exits.
pub fn run_shim_args(args: Vec<String>) -> ! {
    std::process::exit(palisade_sandbox::shim::run_args(&args, "error: shim"))
}

/// The settings of the terminal a sandbox is given (its stdin, stdout or stderr), put
/// back when the sandbox ends. The command gets the terminal itself: it cannot push
/// keystrokes into it (`TIOCSTI` needs the controlling terminal, which `--new-session`
/// takes away), but it can turn echo and line editing off, stop the terminal's output
/// (`tcflow`) or make it exclusive (`TIOCEXCL`), and those outlived the sandbox in the
/// shell the person ran it from.
struct TerminalGuard {
    fd: std::os::fd::OwnedFd,
    saved: nix::sys::termios::Termios,
}

impl TerminalGuard {
    fn save() -> Option<TerminalGuard> {
        use std::os::fd::{AsFd, BorrowedFd};
        // SAFETY: the standard descriptors stay open for the life of the process.
        let standard = [0, 1, 2].map(|fd| unsafe { BorrowedFd::borrow_raw(fd) });
        let terminal = standard
            .into_iter()
            .find(|fd| nix::unistd::isatty(fd.as_fd()).unwrap_or(false))?;
        let fd = terminal.try_clone_to_owned().ok()?;
        let saved = nix::sys::termios::tcgetattr(&fd).ok()?;
        Some(TerminalGuard { fd, saved })
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        use nix::sys::termios::{tcflow, tcsetattr, FlowArg, SetArg};
        use std::os::fd::AsRawFd;
        let _ = tcsetattr(&self.fd, SetArg::TCSANOW, &self.saved);
        let _ = tcflow(&self.fd, FlowArg::TCOON);
        // SAFETY: TIOCNXCL takes no argument and only clears the terminal's exclusive
        // mode; the descriptor is a terminal this process holds open.
        unsafe {
            nix::libc::ioctl(self.fd.as_raw_fd(), nix::libc::TIOCNXCL);
        }
    }
}
