//! The `Runtime` trait and what every backend shares: the spec of a sandbox, the
//! running sandbox with its cleanup guarantees, and its outcome.

use crate::cgroup::Cgroup;
use crate::limits::{LimitMechanism, LimitReport, Limits};
use crate::mounts::Mount;
use crate::shim::ShimOptions;
use crate::workdir::Workdir;
use crate::{paths, Bubblewrap, Oci, OciTool, SandboxError};
use std::path::PathBuf;
use std::time::Duration;

/// Exit code of a sandbox killed at its wall-time limit (as `timeout(1)`).
pub const TIMED_OUT: i32 = 124;
/// Exit code of a sandbox stopped because its workspace was full (`EDQUOT`).
pub const WORKSPACE_FULL: i32 = 122;

/// Which backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    Bwrap,
    Podman,
    Docker,
}

impl std::str::FromStr for RuntimeKind {
    type Err = SandboxError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "bwrap" | "bubblewrap" => Ok(RuntimeKind::Bwrap),
            "podman" => Ok(RuntimeKind::Podman),
            "docker" => Ok(RuntimeKind::Docker),
            other => Err(SandboxError::UnknownRuntime(other.to_string())),
        }
    }
}

impl std::fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RuntimeKind::Bwrap => "bwrap",
            RuntimeKind::Podman => "podman",
            RuntimeKind::Docker => "docker",
        })
    }
}

/// How the sandboxed command's stdio connects to the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StdioMode {
    /// Shares the caller's stdin, stdout and stderr (the CLI).
    Inherit,
    /// Pipes, read through [`Sandbox::child_mut`] (the host's runners).
    Piped,
}

/// Everything a runtime needs to start one sandbox.
#[derive(Clone, Debug)]
pub struct SandboxSpec {
    /// The agent's (validated) name: labels and names only, never a path inside.
    pub agent: String,
    /// Host path of the agent's workspace, mounted read-write at `/workspace`.
    pub workspace: PathBuf,
    /// Host path of the binary that runs the shim, mounted read-only.
    pub palisade_binary: PathBuf,
    /// Arguments before the shim's options (`["shim"]` for `palisade`).
    pub shim_subcommand: Vec<String>,
    /// Host path of the agent's vault socket. It is never mounted into the sandbox:
    /// the parent connects to it for the shim (see [`crate::broker`]).
    pub vault_socket: PathBuf,
    /// Host path of the host's socket for this sandbox's runner, if it runs one; offered
    /// inside at [`paths::HOST_SOCKET`] the same way.
    pub host_socket: Option<PathBuf>,
    /// PEM text of the CA bundle (system roots + vault CA).
    pub ca_bundle: String,
    pub mounts: Vec<Mount>,
    pub limits: Limits,
    pub command: Vec<String>,
    pub stdio: StdioMode,
}

/// What became of a sandboxed command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The command's exit code (128 + signal if killed; 124 on timeout).
    pub code: i32,
    pub timed_out: bool,
    /// Set when the workspace watcher stopped the sandbox (code [`WORKSPACE_FULL`]).
    pub workspace_full: Option<crate::quota::WorkspaceFull>,
}

/// A way to run sandboxes.
pub trait Runtime: Send + Sync {
    fn kind(&self) -> RuntimeKind;
    /// Cheap checks that the runtime can work here (tool installed, image present,
    /// user namespaces allowed), each failing with a one-line cause and a fix.
    fn check(&self) -> Result<(), SandboxError>;
    /// Starts a sandbox. Must be called inside a tokio runtime.
    fn start(&self, spec: &SandboxSpec) -> Result<Sandbox, SandboxError>;
}

/// The default backend for `kind`.
pub fn runtime_for(kind: RuntimeKind) -> Box<dyn Runtime> {
    match kind {
        RuntimeKind::Bwrap => Box::new(Bubblewrap::new()),
        RuntimeKind::Podman => Box::new(Oci::new(OciTool::Podman)),
        RuntimeKind::Docker => Box::new(Oci::new(OciTool::Docker)),
    }
}

/// A running sandbox. Dropping it (or [`Sandbox::wait`] returning) kills whatever is
/// left inside and removes its cgroup, container and run directory.
pub struct Sandbox {
    pub(crate) child: tokio::process::Child,
    pub(crate) wall_time: Option<Duration>,
    /// The workspace and its quota, watched while the sandbox runs.
    pub(crate) workspace_quota: Option<(PathBuf, u64)>,
    pub(crate) cgroup: Option<Cgroup>,
    pub(crate) container: Option<(OciTool, String)>,
    /// Serves the shim's control channel (vault connections, lifeline).
    pub(crate) broker: tokio::task::JoinHandle<()>,
    pub(crate) workdir: Option<Workdir>,
    /// The bubblewrap sandbox's `/etc`, share-locked while the sandbox runs.
    pub(crate) etc: Option<crate::etc_tree::EtcTree>,
    pub(crate) reports: Vec<LimitReport>,
    /// This sandbox's share of the host's open-file table, given back at its end.
    pub(crate) file_table: crate::limits::FileTableClaim,
    pub(crate) finished: bool,
}

impl Sandbox {
    /// How each requested limit is enforced for this sandbox.
    pub fn limit_reports(&self) -> &[LimitReport] {
        &self.reports
    }

    /// The runtime's process (for piped stdio).
    pub fn child_mut(&mut self) -> &mut tokio::process::Child {
        &mut self.child
    }

    /// Waits for the command, killing the sandbox at its wall-time limit or when its
    /// workspace is full.
    pub async fn wait(mut self) -> Result<Outcome, SandboxError> {
        enum Ended {
            Exited(std::io::Result<std::process::ExitStatus>),
            TimedOut,
            Full(crate::quota::WorkspaceFull),
        }
        let wall_time = self.wall_time;
        let quota = self.workspace_quota.clone();
        let ended = tokio::select! {
            status = self.child.wait() => Ended::Exited(status),
            _ = async {
                match wall_time {
                    Some(limit) => tokio::time::sleep(limit).await,
                    None => std::future::pending().await,
                }
            } => Ended::TimedOut,
            full = async {
                match quota {
                    Some((workspace, limit)) => crate::quota::watch(workspace, limit).await,
                    None => std::future::pending().await,
                }
            } => Ended::Full(full),
        };
        let outcome = match ended {
            Ended::Exited(status) => {
                let status = status.map_err(|e| SandboxError::io("lost the sandbox process", e))?;
                self.finished = true;
                Outcome {
                    code: crate::shim::exit_code(status),
                    timed_out: false,
                    workspace_full: None,
                }
            }
            Ended::TimedOut => {
                self.kill().await;
                Outcome {
                    code: TIMED_OUT,
                    timed_out: true,
                    workspace_full: None,
                }
            }
            Ended::Full(full) => {
                self.kill().await;
                Outcome {
                    code: WORKSPACE_FULL,
                    timed_out: false,
                    workspace_full: Some(full),
                }
            }
        };
        Ok(outcome)
    }

    async fn kill(&mut self) {
        if let Some((tool, name)) = &self.container {
            // Killing the container first lets the engine's client finish its own
            // `--rm` cleanup; killing the client first leaves the engine to notice.
            let (tool, name) = (*tool, name.clone());
            let _ =
                tokio::task::spawn_blocking(move || crate::oci::kill_container(tool, &name)).await;
            if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
                .await
                .is_ok()
            {
                self.finished = true;
                return;
            }
        }
        let _ = self.child.start_kill();
        if let Some(cgroup) = &self.cgroup {
            cgroup.kill_all();
        }
        if let Some((tool, name)) = &self.container {
            crate::oci::remove_container(*tool, name);
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // The shim ends the sandbox once its control channel closes.
        self.broker.abort();
        match &self.container {
            // The engine's client is left to end by itself: killed while it creates the
            // container, it would leave conmon and a created container behind that the
            // engine no longer lists. Removing the container ends it; a container still
            // being created ends itself when its shim finds the channel closed.
            Some((tool, name)) => {
                if !self.finished {
                    crate::oci::remove_container(*tool, name);
                }
            }
            None => {
                let _ = self.child.start_kill();
            }
        }
        // The cgroup's own Drop kills what is left and removes the leaves.
        self.cgroup.take();
        self.file_table.release();
        self.workdir.take();
        self.etc.take();
    }
}

/// Shim options for `spec`, with rlimits standing in for limits no cgroup enforces;
/// `control` is how the shim reaches its parent from inside the sandbox.
pub(crate) fn shim_options(
    spec: &SandboxSpec,
    reports: &[LimitReport],
    control: crate::shim::Control,
) -> ShimOptions {
    let mut options = ShimOptions::new(control, spec.command.clone());
    if spec.host_socket.is_some() {
        options.host_listen = Some(paths::HOST_SOCKET.to_string());
    }
    options.rlimit_file_size = spec.limits.workspace;
    options.rlimit_open_files = Some(crate::limits::open_files_per_process(spec.limits.pids));
    for report in reports {
        if report.mechanism == LimitMechanism::Rlimit {
            match report.limit {
                "memory" => options.rlimit_address_space = spec.limits.memory,
                "pids" => options.rlimit_processes = spec.limits.pids,
                _ => {}
            }
        }
    }
    options
}

/// The shim's full argv inside the sandbox.
/// `user`: the ids (inside the sandbox) the shim becomes first, when it starts as uid 0.
/// `expect_mounts`: each extra mount's destination and the device and inode of its
/// source, opened as checked ([`crate::mounts::open_as_checked`]).
/// Files of `/proc` about the whole host that a sandbox sees empty (or cannot read):
/// every block device with its size and live read and write counts (each agent's
/// workspace image is one: another agent's disk activity and quota), and how many
/// kernel keys each host user holds.
pub(crate) const HIDDEN_PROC_FILES: [&str; 3] =
    ["/proc/partitions", "/proc/diskstats", "/proc/key-users"];

pub(crate) fn shim_argv(
    spec: &SandboxSpec,
    reports: &[LimitReport],
    control: crate::shim::Control,
    user: Option<(u32, u32)>,
    expect_mounts: Vec<(PathBuf, (u64, u64))>,
) -> Vec<String> {
    let mut argv = vec![paths::PALISADE_BINARY.to_string()];
    argv.extend(spec.shim_subcommand.iter().cloned());
    let mut options = shim_options(spec, reports, control);
    options.user = user;
    options.expect_mounts = expect_mounts;
    argv.extend(options.to_args());
    argv
}

/// The report of the workspace quota, if one is set.
/// `own_filesystem`: the workspace is an image of its own ([`crate::volume`]).
pub(crate) fn workspace_report(limits: &Limits, own_filesystem: bool) -> Option<LimitReport> {
    limits.workspace.map(|bytes| LimitReport {
        limit: "workspace",
        value: crate::limits::format_bytes(bytes),
        mechanism: LimitMechanism::Watcher,
        note: Some(match own_filesystem {
            true => "the workspace is an image of its own a little larger than the quota, so a burst of writes between two measurements (250 ms to 30 s apart) stops at the image's size; the watcher also stops the sandbox when the disk has less than 256M free or few free inodes".into(),
            false => "a burst of many files can pass the quota by what is written between two measurements (250 ms apart for a small workspace, up to 30 s for a very large one); the watcher also stops the sandbox when the disk has less than 256M free or few free inodes".into(),
        }),
    })
}

/// What the parent connects to for `spec`'s sandbox.
pub(crate) fn broker_targets(spec: &SandboxSpec) -> crate::broker::Targets {
    crate::broker::Targets {
        vault: spec.vault_socket.clone(),
        host: spec.host_socket.clone(),
    }
}

/// The quota to watch for `spec`.
pub(crate) fn workspace_quota(spec: &SandboxSpec) -> Option<(PathBuf, u64)> {
    spec.limits
        .workspace
        .map(|bytes| (spec.workspace.clone(), bytes))
}

pub(crate) fn wall_time_report(limits: &Limits) -> Option<LimitReport> {
    limits.wall_time.map(|wall| LimitReport {
        limit: "wall-time",
        value: humantime::format_duration(wall).to_string(),
        mechanism: LimitMechanism::ParentTimer,
        note: None,
    })
}

pub(crate) fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|candidate| {
            use std::os::unix::fs::PermissionsExt;
            candidate
                .metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}
