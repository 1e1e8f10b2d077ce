//! `palisade up | down | status`: the host as a foreground process or a service.
//!
//! `up` starts the vault in-process (or uses the one `palisade vault serve` runs for
//! this home), the host with its runner supervisor, and the local JSON API; writes
//! `run/host.json` (0600: pid, address and the CLI's API token) so `send`, `status`
//! and `down` find it; prints the login URL once; and stops everything on
//! SIGINT/SIGTERM. Unanswered messages stay queued across stops and crashes.

use crate::context::Context;
use anyhow::{bail, Context as _};
use palisade_host::api::ApiTokens;
use palisade_host::{Host, HostConfig, SandboxLauncher};
use palisade_policy::{AgentName, SecretValue};
use palisade_sandbox::{Limits, RuntimeKind};
use palisade_store::Home;
use serde::{Deserialize, Serialize};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:10254";
use palisade_host::setup::{self, DEFAULT_AGENT};
const ANTHROPIC_SECRET: &str = "anthropic";
/// Set by `up --detach` for the service it starts, so the login token reaches the
/// parent's terminal and never the log file.
const LOGIN_TOKEN_ENV: &str = "PALISADE_ADMIN_LOGIN_TOKEN";
/// Set by `up --detach` for the service it starts when it stored a model key, so the
/// service picks the agent's model from the provider's list once the vault runs.
const NEW_KEY_ENV: &str = "PALISADE_NEW_MODEL_KEY";

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Address of the web UI and the local JSON API; loopback only is sensible.
    #[arg(long, default_value = DEFAULT_LISTEN, value_name = "ADDR", value_parser = crate::input::parse_listen)]
    listen: SocketAddr,
    /// Run in the background; logs go to $PALISADE_HOME/logs/host.log.
    #[arg(long)]
    detach: bool,
    /// Extra CA (PEM) the vault trusts for upstream TLS.
    #[arg(long, value_name = "FILE")]
    upstream_ca: Vec<PathBuf>,
    /// Host pattern the vault may reach at a local address (tests, local model servers);
    /// an address may name a port, allowed alone (127.0.0.1:8080). Remembered in the
    /// home, as `palisade vault local allow` does: later starts allow it too, until
    /// `palisade vault local forget PATTERN`.
    #[arg(long, value_name = "PATTERN")]
    allow_local_upstream: Vec<String>,
    /// Resolve NAME to IP instead of asking DNS (tests, development); a local IP also
    /// needs --allow-local-upstream.
    #[arg(long, value_name = "NAME=IP", value_parser = super::vault::parse_resolve)]
    upstream_resolve: Vec<(String, std::net::IpAddr)>,
    /// Also serve the vault's token-authenticated TCP listener here (agents outside a
    /// sandbox, the OneCLI admin API), as `palisade vault serve --listen` does.
    #[arg(long, value_name = "ADDR", value_parser = crate::input::parse_listen)]
    vault_listen: Option<SocketAddr>,
    /// Read the Anthropic API key from this file on first start (else ANTHROPIC_API_KEY,
    /// else a hidden prompt on a terminal, else the web UI's first-run form).
    #[arg(long, value_name = "FILE")]
    anthropic_key_file: Option<PathBuf>,
    /// A runner with nothing to do is stopped after this long.
    #[arg(long, default_value = "10m", value_name = "DURATION")]
    idle_timeout: String,
    /// How long one message may take before its runner is stopped and the message
    /// answered with an error (per agent: `agents edit NAME --turn-timeout`).
    #[arg(long, default_value = "30m", value_name = "DURATION")]
    turn_timeout: String,
    /// Sandbox runtime for runners: bwrap (default), podman or docker.
    #[arg(long, default_value = "bwrap", value_name = "RUNTIME")]
    runtime: String,
    /// Memory limit of each runner's sandbox, or `none`.
    #[arg(long, default_value = "2G", value_name = "SIZE")]
    memory: String,
}

/// What `run/host.json` says about a running host.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HostInfo {
    pub pid: u32,
    pub listen: SocketAddr,
    pub started_at_ms: i64,
    /// Bearer token of the local API for the CLI.
    pub token: String,
}

fn info_path(home: &Home) -> PathBuf {
    home.run_dir().join("host.json")
}

fn pid_path(home: &Home) -> PathBuf {
    home.run_dir().join("host.pid")
}

/// The home's lock: the home folder itself, held (`flock`, exclusive) by a running host
/// for its whole life; the kernel lets it go when the host ends, however it ends. A
/// folder that must be there for the host to run cannot be removed from under it, as a
/// lock file or `run/` could (either let a second host start on the same database).
/// Its pid is written beside it, in `host.lock`, for `status` and `down`.
struct HomeLock {
    _held: nix::fcntl::Flock<std::fs::File>,
}

fn lock_path(home: &Home) -> PathBuf {
    home.root().join("host.lock")
}

fn open_home(home: &Home) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY)
        .open(home.root())
        .with_context(|| format!("cannot open the home {}", home.root().display()))
}

/// Takes the home's lock for this process, or says which host holds it. A lock held a
/// moment by `status` asking whether a host runs is waited out (briefly).
fn lock_home(home: &Home) -> anyhow::Result<HomeLock> {
    use nix::fcntl::{Flock, FlockArg};
    use std::os::unix::fs::OpenOptionsExt;
    let mut folder = open_home(home)?;
    for attempt in 0..10 {
        match Flock::lock(folder, FlockArg::LockExclusiveNonblock) {
            Ok(held) => {
                // The pid, for status and down; written without following a link.
                let path = lock_path(home);
                let _ = std::fs::remove_file(&path);
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(nix::libc::O_NOFOLLOW)
                    .open(&path)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                std::io::Write::write_all(
                    &mut file,
                    format!("{}\n", std::process::id()).as_bytes(),
                )?;
                return Ok(HomeLock { _held: held });
            }
            Err((back, nix::errno::Errno::EWOULDBLOCK)) if attempt < 9 => {
                folder = back;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => bail!(
                "palisade is already running for this home (pid {}); stop it with `palisade down`",
                lock_pid(home).map_or_else(|| "unknown".to_string(), |pid| pid.to_string())
            ),
            Err((_, error)) => bail!("cannot lock the home {}: {error}", home.root().display()),
        }
    }
    unreachable!("the last attempt returns")
}

/// The pid `host.lock` names, if it names a live process.
fn lock_pid(home: &Home) -> Option<u32> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut text = String::new();
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(lock_path(home))
        .ok()?
        .take(32)
        .read_to_string(&mut text)
        .ok()?;
    text.trim().parse().ok().filter(|pid| alive(*pid))
}

/// Whether a host holds the home's lock now.
fn home_locked(home: &Home) -> bool {
    use nix::fcntl::{Flock, FlockArg};
    let Ok(folder) = open_home(home) else {
        return false;
    };
    // Free: nobody holds it (dropping the shared lock lets it go again).
    Flock::lock(folder, FlockArg::LockSharedNonblock).is_err()
}

/// The pid of the host holding the home's lock, if one does and its pid is known
/// (whether or not its `run/host.json` is still there).
fn lock_holder(home: &Home) -> Option<u32> {
    home_locked(home).then(|| lock_pid(home)).flatten()
}

fn alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
        return false;
    }
    // A process that exited but was not yet reaped by its parent (a zombie) is gone.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    state != Some("Z")
}

/// The running host of `home`: what its `run/host.json` says, when a host holds the
/// home's lock and it is that host (a host killed with -9 leaves the file behind, and
/// its pid may be another process's by now).
pub fn running_host(home: &Home) -> Option<HostInfo> {
    let text = std::fs::read_to_string(info_path(home)).ok()?;
    let info: HostInfo = serde_json::from_str(&text).ok()?;
    let holder = home_locked(home).then(|| lock_pid(home));
    match holder {
        Some(Some(pid)) => (pid == info.pid).then_some(info),
        // Locked, its pid file gone: the file names the host that wrote it last.
        Some(None) => alive(info.pid).then_some(info),
        None => None,
    }
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    file.write_all(contents.as_bytes())?;
    std::fs::rename(&temporary, path).with_context(|| format!("cannot write {}", path.display()))
}

pub fn up(args: UpArgs, ctx: &Context) -> anyhow::Result<()> {
    let idle_timeout = humantime::parse_duration(&args.idle_timeout).with_context(|| {
        format!(
            "--idle-timeout {:?} is not a duration such as 10m",
            args.idle_timeout
        )
    })?;
    let turn_timeout = humantime::parse_duration(&args.turn_timeout).with_context(|| {
        format!(
            "--turn-timeout {:?} is not a duration such as 30m",
            args.turn_timeout
        )
    })?;
    if turn_timeout < Duration::from_secs(1) {
        bail!("--turn-timeout must be at least 1s; a turn needs time to call the model");
    }
    let kind: RuntimeKind = args.runtime.parse()?;
    let memory = if args.memory.eq_ignore_ascii_case("none") {
        None
    } else {
        Some(palisade_sandbox::limits::parse_memory(&args.memory)?)
    };
    if let Some(info) = running_host(&ctx.home) {
        bail!(
            "palisade is already running for this home (pid {}, http://{}); stop it with `palisade down`",
            info.pid,
            info.listen
        );
    }
    // One host per home, for its whole life (a detached start's host takes it itself).
    let _home_lock = match args.detach {
        true => {
            if home_locked(&ctx.home) {
                bail!(
                    "palisade is already running for this home (pid {}); stop it with `palisade down`",
                    lock_pid(&ctx.home).map_or_else(|| "unknown".to_string(), |pid| pid.to_string())
                );
            }
            None
        }
        false => Some(lock_home(&ctx.home)?),
    };
    let store = ctx.open_store()?.with_actor("host");
    for pattern in &args.allow_local_upstream {
        if store.allow_local_upstream(pattern)? {
            eprintln!(
                "palisade: agents may reach {} through the vault, from now on (remembered; `palisade vault local forget {}` stops it)",
                pattern.trim(),
                pattern.trim()
            );
        }
    }
    let new_key = first_start(&store, &args)? || std::env::var_os(NEW_KEY_ENV).is_some();
    // (A gateway already running may allow more by its own start flags.)
    if palisade_vault::running_gateway(&ctx.home).is_none() {
        warn_local_model_servers(&store);
    }
    if args.detach {
        return detach(&ctx.home, args.listen, new_key, ctx.json);
    }
    let login_token = std::env::var(LOGIN_TOKEN_ENV)
        .ok()
        .filter(|t| !t.is_empty());
    let announce = login_token.is_none();
    let tokens = match login_token {
        Some(token) => ApiTokens::with_admin_login(token),
        None => ApiTokens::generate(),
    };
    let runtime = palisade_sandbox::runtime_for(kind);
    runtime.check()?;
    let palisade_binary =
        std::env::current_exe().context("cannot find the palisade binary for runners")?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // One announcement channel for approvals in this process: the vault's held
    // requests, the host's request_approval calls, the web UI and the chat channels.
    let approval_events = palisade_approvals::Events::new();
    tokio.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}; is something else using it? pick another with --listen", args.listen))?;
        let listen = listener.local_addr()?;
        let (gateway, vault_socket_dir) = match palisade_vault::running_gateway(&ctx.home) {
            Some(info) => {
                if let Some(addr) = args.vault_listen {
                    bail!(
                        "--vault-listen {addr}: the vault of this home is already served by `palisade vault serve` (pid {}{}); drop --vault-listen or stop that gateway",
                        info.pid,
                        info.listen.map(|a| format!(", listening on {a}")).unwrap_or_default()
                    );
                }
                tracing::info!(pid = info.pid, "using the running vault gateway");
                (None, info.socket_dir)
            }
            None => {
                let mut config = palisade_vault::VaultConfig::new(ctx.home.clone());
                config.upstream_ca = args.upstream_ca.clone();
                // Local addresses are remembered in the home (above), where forgetting
                // one is in force at once; a start flag would hold until the next start.
                config.upstream_resolve = args.upstream_resolve.clone();
                // Agents never reach the web UI, even with --allow-local-upstream localhost.
                config.protected = vec![listen];
                config.listen = args.vault_listen;
                config.advertise = true;
                config.approval_events = Some(approval_events.clone());
                let gateway = palisade_vault::Gateway::start(config).await?;
                if let Some(addr) = gateway.tcp_addr() {
                    eprintln!("palisade: vault listening on {addr} (agent tokens: `palisade agents token NAME`; admin API key: `palisade vault admin-key`)");
                }
                (Some(gateway), ctx.home.agent_socket_dir())
            }
        };
        let vault_ca = palisade_vault::ca_certificate_pem(&ctx.home)?;
        let launcher = SandboxLauncher {
            runtime: Arc::from(runtime),
            home: ctx.home.clone(),
            palisade_binary,
            vault_socket_dir,
            ca_bundle: palisade_sandbox::env::ca_bundle(&vault_ca),
            limits: Limits {
                memory,
                pids: Some(512),
                cpus: None,
                wall_time: None,
                workspace: None,
            },
            store: store.clone(),
        };
        let launcher = Arc::new(launcher);
        let preparing = Arc::clone(&launcher);
        tokio::task::spawn_blocking(move || preparing.prepare_workspaces())
            .await
            .context("cannot prepare the agents' workspaces")?;
        let mut config = HostConfig::new(ctx.home.clone());
        config.idle_timeout = idle_timeout;
        config.turn_timeout = turn_timeout;
        config.vault_socket_dir = launcher.vault_socket_dir.clone();
        config.approval_events = approval_events.clone();
        let host = Host::start(store, config, launcher).await?;
        if new_key {
            tokio::spawn(adopt_newest_model(host.clone()));
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        // Chat channels: each retried on its own when it cannot connect.
        let hub = palisade_channels::Hub::start(host.clone(), stop_rx.clone());
        let app = palisade_web::app(host.clone(), tokens.clone(), stop_rx.clone(), listen);
        let app = app.merge(palisade_channels::endpoints::router(hub.clone()));
        let info = HostInfo {
            pid: std::process::id(),
            listen,
            started_at_ms: palisade_store::now_ms(),
            token: tokens.cli.clone(),
        };
        write_private(&info_path(&ctx.home), &serde_json::to_string_pretty(&info)?)?;
        if announce {
            println!("palisade is up: http://{listen}/login?token={}", tokens.admin_login);
            println!("(the login link works once; `palisade login` prints a fresh one, and `palisade send --agent {DEFAULT_AGENT} \"hello\"` works from this machine)");
        }
        eprintln!("palisade: host listening on http://{listen}; stop with Ctrl-C or `palisade down`");
        let server = tokio::spawn(palisade_web::serve(listener, app, stop_rx.clone()));
        wait_for_signal().await;
        eprintln!("palisade: stopping");
        let _ = stop_tx.send(true);
        host.shutdown().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        if let Some(gateway) = gateway {
            let _ = tokio::time::timeout(Duration::from_secs(35), gateway.shutdown()).await;
        }
        let _ = std::fs::remove_file(info_path(&ctx.home));
        let _ = std::fs::remove_file(pid_path(&ctx.home));
        anyhow::Ok(())
    })?;
    drop(tokio);
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
}

/// Warns about each agent whose model server is at a local address no allowance
/// remembered in the home names: every message of theirs would be refused
/// (`local_upstream_refused`), and the person would learn it only from the first one.
fn warn_local_model_servers(store: &palisade_store::Store) {
    let remembered = store.local_upstreams().unwrap_or_default();
    let patterns: Vec<palisade_policy::HostPattern> = remembered
        .patterns
        .iter()
        .filter_map(|pattern| palisade_policy::HostPattern::parse(pattern).ok())
        .collect();
    let Ok(agents) = store.list_agents() else {
        return;
    };
    for agent in agents {
        let Ok(settings) = palisade_host::settings::AgentSettings::from_json(&agent.settings)
        else {
            continue;
        };
        let (Some(host), Some(port)) = (setup::model_host(&settings), setup::model_port(&settings))
        else {
            continue;
        };
        let address = host.parse::<std::net::IpAddr>().ok();
        let local = match address {
            Some(ip) => palisade_vault::net_guard::is_local(ip),
            None => host == "localhost" || host.ends_with(".localhost"),
        };
        if !local || patterns.iter().any(|pattern| pattern.matches(&host, port)) {
            continue;
        }
        let allowance = setup::model_server_allowance(&settings).unwrap_or_default();
        eprintln!(
            "palisade: warning: agent {}'s model server {host} (port {port}) is a local address agents may not reach, so its messages will be refused; allow it with `palisade vault local allow {allowance}` (in force at once, and remembered)",
            agent.name
        );
    }
}

fn first_start(store: &palisade_store::Store, args: &UpArgs) -> anyhow::Result<bool> {
    if setup::ensure_default_agent(store)? {
        eprintln!("palisade: created the default agent `{DEFAULT_AGENT}` (research profile)");
    }
    if !setup::needs_model_key(store)? || store.get_agent(&AgentName::new(DEFAULT_AGENT)?).is_err()
    {
        let given = ENVIRONMENT_KEY
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .is_some();
        if given {
            eprintln!(
                "palisade: ANTHROPIC_API_KEY was not used: a model key is stored already. To replace it: \
                 palisade secrets rotate NAME < KEYFILE (see palisade secrets list)"
            );
        }
        return Ok(false);
    }
    let Some(key) = anthropic_key(args)? else {
        eprintln!(
            "palisade: no model key is stored, so agents cannot think yet. Add one on the web UI's \
             dashboard (`palisade login` prints a link to it), or with:\n  \
             palisade secrets create --name anthropic --host-pattern api.anthropic.com --inject anthropic --agent {DEFAULT_AGENT} < KEYFILE"
        );
        return Ok(false);
    };
    setup::store_model_key(
        store,
        setup::ModelKey {
            agent: DEFAULT_AGENT.into(),
            provider: "anthropic".into(),
            base_url: None,
            key: Some(key),
            model: None,
        },
    )?;
    eprintln!("palisade: stored the Anthropic API key in the vault as secret `anthropic`, granted to `{DEFAULT_AGENT}`");
    Ok(true)
}

/// Once the vault runs: the default agent gets the newest model of the default family
/// its provider lists (asked through the vault, where the new key is injected).
async fn adopt_newest_model(host: Host) {
    let Ok(agent) = AgentName::new(DEFAULT_AGENT) else {
        return;
    };
    let socket = host.vault_socket(&agent);
    match palisade_host::models::choose_for(host.store(), &socket, &agent, Duration::from_secs(20))
        .await
    {
        Ok(choice) if choice.changed => eprintln!(
            "palisade: `{DEFAULT_AGENT}` now uses {}, the newest of its family the provider lists",
            choice.model
        ),
        Ok(choice) => tracing::info!(model = %choice.model, "the default agent's model is current"),
        Err(error) => eprintln!(
            "palisade: could not list the provider's models ({error}); `{DEFAULT_AGENT}` keeps {}",
            palisade_policy::models::DEFAULT_MODEL
        ),
    }
}

/// `ANTHROPIC_API_KEY` as the process was started with it, taken out of the
/// environment by [`take_environment_key`]: the host runs for days and starts programs
/// (mkfs, mount, podman and the like) that would inherit it, and its own
/// `/proc/PID/environ` would keep it, while it is needed once, to be stored sealed.
static ENVIRONMENT_KEY: std::sync::Mutex<Option<SecretValue>> = std::sync::Mutex::new(None);

/// Takes `ANTHROPIC_API_KEY` out of the process's environment. Called first thing in
/// `main`, while no other thread exists (the only time the environment may change).
///
/// Removing the variable is not enough: `/proc/PID/environ` shows the block the kernel
/// wrote at `exec`, which `unsetenv` leaves as it was, so the value is overwritten
/// there first, through the C library's `environ` (which points into that block until
/// the environment is first changed).
pub fn take_environment_key() {
    const NAME: &[u8] = b"ANTHROPIC_API_KEY=";
    let Some(key) = std::env::var_os("ANTHROPIC_API_KEY") else {
        return;
    };
    extern "C" {
        static mut environ: *mut *mut nix::libc::c_char;
    }
    // SAFETY: no other thread exists yet; `environ` is the C library's NULL-ended array
    // of NUL-ended strings, and only the bytes of a value, before its NUL, are written.
    unsafe {
        let mut entry = environ;
        while !entry.is_null() && !(*entry).is_null() {
            let text = std::ffi::CStr::from_ptr(*entry).to_bytes();
            if text.starts_with(NAME) {
                std::ptr::write_bytes((*entry).add(NAME.len()), b'x', text.len() - NAME.len());
            }
            entry = entry.add(1);
        }
    }
    std::env::remove_var("ANTHROPIC_API_KEY");
    let key = key.to_string_lossy().trim().to_string();
    if !key.is_empty() {
        *ENVIRONMENT_KEY.lock().unwrap_or_else(|p| p.into_inner()) = Some(SecretValue::new(key));
    }
}

fn anthropic_key(args: &UpArgs) -> anyhow::Result<Option<SecretValue>> {
    if let Some(file) = &args.anthropic_key_file {
        return Ok(Some(crate::input::read_secret_value_from(
            Some(file),
            "--anthropic-key-file",
            ANTHROPIC_SECRET,
        )?));
    }
    if let Some(key) = ENVIRONMENT_KEY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    {
        return Ok(Some(key));
    }
    if !args.detach && std::io::stdin().is_terminal() {
        let typed = rpassword::prompt_password("Anthropic API key (input hidden; empty to skip): ")
            .context("cannot read the key from the terminal")?;
        let typed = typed.trim().to_string();
        if !typed.is_empty() {
            return Ok(Some(SecretValue::new(typed)));
        }
    }
    Ok(None)
}

/// Starts `palisade up` again in its own session with output to the log, waits until
/// it is serving, and prints the login URL.
fn detach(home: &Home, listen: SocketAddr, new_key: bool, json: bool) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let log_path = home.logs_dir().join("host.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open the log {}", log_path.display()))?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let token = palisade_host::api::random_token();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| arg != "--detach")
        .collect();
    let exe = std::env::current_exe().context("cannot find the palisade binary")?;
    let mut command = std::process::Command::new(exe);
    command
        .args(&args)
        .env("PALISADE_HOME", home.root())
        .env(LOGIN_TOKEN_ENV, &token)
        .env_remove(NEW_KEY_ENV)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    if new_key {
        command.env(NEW_KEY_ENV, "1");
    }
    let mut child = command
        .spawn()
        .context("cannot start the host in the background")?;
    write_private(&pid_path(home), &format!("{}\n", child.id()))?;
    eprintln!(
        "palisade: started the host in the background (pid {}); waiting until it serves http://{listen} …",
        child.id()
    );
    let started = std::time::Instant::now();
    let deadline = started + Duration::from_secs(60);
    let mut next_note = started + DETACH_NOTE_EVERY;
    loop {
        if let Some(info) = running_host(home) {
            if info.pid == child.id() {
                // The host is up whatever happens to this output: a closed pipe
                // (`| head -0`) is no failure of the start.
                let url = format!("http://{}/login?token={token}", info.listen);
                let _ = match json {
                    true => crate::output::print_json(&serde_json::json!({
                        "running": true,
                        "pid": info.pid,
                        "login_url": url,
                        "log": log_path,
                    })),
                    false => crate::output::print(&format!(
                        "palisade is up (pid {}): {url}\nlogs: {}\n",
                        info.pid,
                        log_path.display()
                    )),
                };
                return Ok(());
            }
        }
        if let Some(status) = child.try_wait()? {
            // Its last line is usually the one-line cause (`error: …`): say it here.
            match last_log_line(&log_path, log_start) {
                Some(line) => bail!(
                    "the host exited during startup ({status}): {}; see {}",
                    line.strip_prefix("error: ").unwrap_or(&line),
                    log_path.display()
                ),
                None => bail!(
                    "the host exited during startup ({status}); see {}",
                    log_path.display()
                ),
            }
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "the host did not start listening on {listen} within 60 s; see {}",
                log_path.display()
            );
        }
        if std::time::Instant::now() >= next_note {
            next_note += DETACH_NOTE_EVERY;
            eprintln!(
                "palisade: still waiting for the host to serve http://{listen} ({} s){}",
                started.elapsed().as_secs(),
                last_log_line(&log_path, log_start)
                    .map(|line| format!("; it last logged: {line}"))
                    .unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How often `up --detach` says what it is still waiting for.
const DETACH_NOTE_EVERY: Duration = Duration::from_secs(3);

/// The last non-empty line of the host's log (what a detached start is busy with),
/// cut to one short line.
/// Only what was written after byte `from` (this start's part of the log) counts.
fn last_log_line(path: &Path, from: u64) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    let length = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(length.saturating_sub(4096).max(from)))
        .ok()?;
    let mut tail = Vec::new();
    file.take(4096).read_to_end(&mut tail).ok()?;
    let text = String::from_utf8_lossy(&tail);
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    // Whole up to a long line's worth: the cause's end is often the fix (cut at 160,
    // "name the address with its port (…)" lost what to name).
    const KEPT: usize = 600;
    let mut kept: String = line.chars().take(KEPT).collect();
    if line.chars().count() > KEPT {
        kept.push('…');
    }
    Some(crate::output::clean(&kept))
}

/// Unmounts the agents' workspace images that nothing uses any more, so a stopped
/// Palisade leaves no loop mount behind (the next start mounts them again). A workspace
/// a standalone sandbox still uses stays mounted.
fn release_workspaces(ctx: &Context) {
    let Ok(entries) = std::fs::read_dir(ctx.home.root().join("agents")) else {
        return;
    };
    for entry in entries.flatten() {
        let workspace = entry.path().join("workspace");
        if let Err(error) = palisade_sandbox::volume::release(&workspace) {
            tracing::warn!(workspace = %workspace.display(), %error, "cannot unmount the workspace");
        }
    }
}

/// `palisade login`: a fresh one-time login link for the running host's web UI.
pub fn login(ctx: &Context) -> anyhow::Result<()> {
    let Some(info) = running_host(&ctx.home) else {
        bail!("the host is not running: start it with `palisade up`, which prints a login link");
    };
    let answer = super::send::post_json(&info, "/api/login-links")?;
    let path = answer["path"]
        .as_str()
        .filter(|p| p.starts_with("/login?token="))
        .context("the host answered without a login link")?;
    let url = format!("http://{}{path}", info.listen);
    let expires = answer["expires_in_seconds"].as_u64().unwrap_or_default();
    if ctx.json {
        crate::output::print_json(&serde_json::json!({ "url": url, "expires_in_seconds": expires }))
    } else {
        println!("{url}");
        eprintln!(
            "(works once, within {} minutes; it sets this browser's session cookie)",
            expires / 60
        );
        Ok(())
    }
}

pub fn down(ctx: &Context) -> anyhow::Result<()> {
    let pid = match running_host(&ctx.home) {
        Some(info) => info.pid,
        None => {
            // A host whose run folder is gone still holds the home's lock; a pid in a
            // file no host holds the lock for is nobody's to signal.
            let from_file = lock_holder(&ctx.home);
            match from_file {
                Some(pid) => pid,
                None => {
                    // Standalone `sandbox run`s mount workspaces too: a stopped
                    // Palisade leaves none behind either way.
                    release_workspaces(ctx);
                    return match ctx.json {
                        true => crate::output::print_json(&serde_json::json!({ "running": false })),
                        false => crate::output::print("palisade is not running\n"),
                    };
                }
            }
        }
    };
    let target = nix::unistd::Pid::from_raw(i32::try_from(pid)?);
    nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGTERM)
        .with_context(|| format!("cannot signal the host (pid {pid})"))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while alive(pid) {
        if std::time::Instant::now() > deadline {
            let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL);
            bail!("the host (pid {pid}) did not stop within 60 s and was killed");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_file(info_path(&ctx.home));
    let _ = std::fs::remove_file(pid_path(&ctx.home));
    release_workspaces(ctx);
    match ctx.json {
        true => crate::output::print_json(&serde_json::json!({ "stopped": true, "pid": pid }))?,
        false => crate::output::print(&format!("palisade stopped (pid {pid})\n"))?,
    }
    Ok(())
}

pub fn status(ctx: &Context) -> anyhow::Result<()> {
    let Some(info) = running_host(&ctx.home) else {
        if let Some(pid) = lock_holder(&ctx.home) {
            // Running, but its run/host.json (address, token) is gone.
            if ctx.json {
                crate::output::print_json(&serde_json::json!({
                    "running": true, "pid": pid, "responding": false
                }))?;
            } else {
                crate::output::print(&format!(
                    "palisade is running (pid {pid}), but its run/host.json is gone, so nothing can talk to it; restart it with `palisade down` and `palisade up`\n"
                ))?;
            }
            return Ok(());
        }
        if ctx.json {
            crate::output::print_json(&serde_json::json!({ "running": false }))?;
        } else {
            crate::output::print("palisade is not running; start it with `palisade up`\n")?;
        }
        std::process::exit(3);
    };
    let detail = super::send::get_json(&info, "/api/status").ok();
    let active: Vec<String> = detail
        .as_ref()
        .and_then(|d| d.get("active_agents"))
        .and_then(|a| serde_json::from_value(a.clone()).ok())
        .unwrap_or_default();
    if ctx.json {
        return crate::output::print_json(&serde_json::json!({
            "running": true,
            "pid": info.pid,
            "listen": info.listen,
            "started_at_ms": info.started_at_ms,
            "responding": detail.is_some(),
            "active_agents": active,
            "channels": super::channels::running_states(ctx),
        }));
    }
    let channels: Vec<String> = super::channels::running_states(ctx)
        .iter()
        .map(|c| {
            let state = c["state"].as_str().unwrap_or("?");
            let detail = match (state, c["detail"].as_str()) {
                ("failing", Some(detail)) => format!(" ({})", crate::output::clean(detail)),
                _ => String::new(),
            };
            format!("{} {state}{detail}", c["name"].as_str().unwrap_or("?"))
        })
        .collect();
    crate::output::print(&format!(
        "palisade is running (pid {}) on http://{}, started {}{}\nactive agents: {}\nchannels: {}\n",
        info.pid,
        info.listen,
        crate::output::relative(info.started_at_ms),
        if detail.is_some() {
            ""
        } else {
            " (not responding)"
        },
        if active.is_empty() {
            "none".into()
        } else {
            active.join(", ")
        },
        if channels.is_empty() {
            "none".into()
        } else {
            channels.join(", ")
        }
    ))
}
