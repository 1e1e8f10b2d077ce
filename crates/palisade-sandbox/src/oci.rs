//! The OCI backend: drives the `podman` or `docker` CLI.
//!
//! Each sandbox is a `--rm` container with no network (`--network none`, loopback
//! only), a read-only root, every capability dropped, `no-new-privileges`, explicit
//! ulimits and, where the engine can enforce them, memory, pids and CPU limits. It is
//! labelled with the owning process (`palisade.owner=PID:START`); a container whose
//! owner is gone (the parent was `kill -9`ed) is removed the next time a sandbox
//! starts, and the shim inside already ends it when the parent's control channel
//! closes (see broker.rs; podman: the engine's descriptor 3, passed in with
//! `--preserve-fds 1`; docker: a socket in the run directory, mounted). The agent is
//! never root in a podman container (see [`rootful_id_base`]).

use crate::bwrap::check_spec;
use crate::cgroup::HostCgroups;
use crate::limits::{LimitMechanism, LimitReport};
use crate::runtime::{
    shim_argv, wall_time_report, which, Runtime, RuntimeKind, Sandbox, SandboxSpec, StdioMode,
};
use crate::workdir::Workdir;
use crate::{paths, SandboxError};
use std::os::fd::AsRawFd;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The image `palisade sandbox image build` creates and sandboxes use by default.
pub const DEFAULT_IMAGE: &str = "localhost/palisade-sandbox:latest";
/// Where sysfs describes virtual block devices (loop devices among them): hidden in
/// every container.
const BLOCK_DEVICES_IN_SYS: &str = "/sys/devices/virtual/block";
const OWNER_LABEL: &str = "palisade.owner";
const SANDBOX_LABEL: &str = "palisade.sandbox";
static COUNTER: AtomicU32 = AtomicU32::new(0);
/// The agent's uid and gid inside a podman container (rootful): not root.
pub const AGENT_ID_IN_CONTAINER: u32 = 1000;
/// How many ids a rootful podman sandbox's user namespace maps.
const MAPPED_IDS: u32 = 65536;
/// The first host id of that range when root has none in /etc/subuid and /etc/subgid.
pub const DEFAULT_ROOTFUL_BASE: u32 = 0x7000_0000;
/// Where the control channel is in the engine's process and the container's (podman).
const CONTROL_FD: std::os::fd::RawFd = 3;
/// The parent's control socket in the run directory, and where docker mounts it.
const CONTROL_SOCKET: &str = "control.sock";
const CONTROL_SOCKET_INSIDE: &str = "/run/palisade/control.sock";
/// The podman sandbox's seccomp profile, in the run directory.
const SECCOMP_FILE: &str = "seccomp.json";
/// The run directory's folder of OCI hooks (podman's `--hooks-dir`).
const HOOKS_DIR: &str = "hooks";
/// The shim's sole argument when podman runs it as the hook that bounds a container's
/// kernel pools (see [`pools_hook`]).
pub const POOLS_HOOK_FLAG: &str = "--oci-pools-hook";
/// The most bytes of runtime state a hook reads.
const MAX_HOOK_STATE: u64 = 1 << 16;

/// The hook podman runs for every sandbox before its first process starts (the
/// `createRuntime` stage: as the caller, in the engine's namespaces, with the
/// container's mounts made): it gives the container's `/dev/pts` a maximum and its
/// user namespace the same kernel-pool maxima as a bubblewrap sandbox (see pools.rs),
/// which podman's own options cannot. Reads the runtime's state from stdin; a failure
/// stops the container from starting. `name` starts the error line.
pub fn pools_hook(name: &str) -> i32 {
    use std::io::Read;
    let mut state = String::new();
    let bounded = std::io::stdin()
        .take(MAX_HOOK_STATE)
        .read_to_string(&mut state)
        .map_err(|e| SandboxError::io("cannot read the runtime's state", e))
        .and_then(|_| crate::pools::bound_oci_container(&state));
    match bounded {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("{name}: {error}");
            1
        }
    }
}

/// Writes the hook definition that makes podman run [`pools_hook`] for this sandbox.
fn write_pools_hook(workdir: &Workdir, spec: &SandboxSpec) -> Result<(), SandboxError> {
    let dir = workdir.path(HOOKS_DIR);
    std::fs::create_dir(&dir)
        .map_err(|e| SandboxError::io(format!("cannot create {}", dir.display()), e))?;
    let binary =
        std::path::absolute(&spec.palisade_binary).unwrap_or_else(|_| spec.palisade_binary.clone());
    let mut args = vec![binary.to_string_lossy().into_owned()];
    args.extend(spec.shim_subcommand.iter().cloned());
    args.push(POOLS_HOOK_FLAG.into());
    let hook = serde_json::json!({
        "version": "1.0.0",
        "hook": {"path": binary, "args": args, "timeout": 30},
        "when": {"always": true},
        "stages": ["createRuntime"],
    });
    workdir.write(
        &format!("{HOOKS_DIR}/palisade-pools.json"),
        &hook.to_string(),
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OciTool {
    Podman,
    Docker,
}

impl OciTool {
    pub fn program(self) -> &'static str {
        match self {
            OciTool::Podman => "podman",
            OciTool::Docker => "docker",
        }
    }

    /// The CLI with the global flags this host needs (podman: cgroupfs manager and
    /// runc, which work without systemd).
    pub fn command(self) -> std::process::Command {
        let mut command = std::process::Command::new(self.program());
        if self == OciTool::Podman {
            command.args(["--cgroup-manager", "cgroupfs", "--runtime", "runc"]);
        }
        command
    }
}

pub struct Oci {
    tool: OciTool,
    image: String,
}

impl Oci {
    pub fn new(tool: OciTool) -> Self {
        Oci {
            tool,
            image: std::env::var("PALISADE_SANDBOX_IMAGE").unwrap_or_else(|_| DEFAULT_IMAGE.into()),
        }
    }

    pub fn with_image(tool: OciTool, image: impl Into<String>) -> Self {
        Oci {
            tool,
            image: image.into(),
        }
    }

    /// Whether the engine can enforce cgroup limits for this user: rootful, or
    /// rootless on cgroup v2 (rootless podman on v1 ignores them).
    fn engine_limits_work(&self) -> bool {
        if nix::unistd::geteuid().is_root() || self.tool == OciTool::Docker {
            return true;
        }
        let host = HostCgroups::detect();
        matches!(&host.v2, Some((root, controllers)) if root == std::path::Path::new("/sys/fs/cgroup") && controllers.iter().any(|c| c == "memory"))
    }

    fn reports(&self, spec: &SandboxSpec) -> Vec<LimitReport> {
        let mut reports = self.limit_reports_for(&spec.limits);
        reports.extend(crate::runtime::workspace_report(
            &spec.limits,
            crate::volume::is_mount_point(&spec.workspace),
        ));
        reports
    }

    /// How each of `limits` would be enforced by this engine for this user.
    pub fn limit_reports_for(&self, limits: &crate::Limits) -> Vec<LimitReport> {
        let engine = self.engine_limits_work();
        let root = nix::unistd::geteuid().is_root();
        let mut reports = Vec::new();
        if let Some(memory) = limits.memory {
            reports.push(LimitReport {
                limit: "memory",
                value: crate::limits::format_bytes(memory),
                mechanism: if engine { LimitMechanism::OciRuntime } else { LimitMechanism::Rlimit },
                note: (!engine).then(|| "rootless engine on cgroup v1 cannot limit memory; address-space rlimit per process instead".to_string()),
            });
        }
        if let Some(pids) = limits.pids {
            reports.push(LimitReport {
                limit: "pids",
                value: pids.to_string(),
                mechanism: if engine {
                    LimitMechanism::OciRuntime
                } else {
                    LimitMechanism::Rlimit
                },
                note: (!engine && !root).then(|| {
                    "rootless engine on cgroup v1 cannot limit pids; RLIMIT_NPROC instead"
                        .to_string()
                }),
            });
        }
        if let Some(cpus) = limits.cpus {
            reports.push(LimitReport {
                limit: "cpus",
                value: cpus.to_string(),
                mechanism: if engine {
                    LimitMechanism::OciRuntime
                } else {
                    LimitMechanism::NotApplied
                },
                note: (!engine).then(|| {
                    "rootless podman on cgroup v1 ignores --cpus and no rlimit can stand in; to enforce it, run as root or on a cgroup v2 host that delegates `cpu` to this user (systemd: Delegate=yes)".to_string()
                }),
            });
        }
        reports.extend(wall_time_report(limits));
        reports.push(crate::limits::open_files_report(limits));
        reports
    }

    /// Whether the image is present; an engine failure other than "no such image" is
    /// reported as such rather than as a missing image.
    fn image_exists(&self) -> Result<bool, SandboxError> {
        let output = self
            .tool
            .command()
            .args(["image", "inspect", "--format", "{{.Id}}", &self.image])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| SandboxError::io(format!("cannot run {}", self.tool.program()), e))?;
        if output.status.success() {
            return Ok(true);
        }
        let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
        if stderr.is_empty()
            || stderr.contains("not known")
            || stderr.contains("no such image")
            || stderr.contains("not found")
        {
            return Ok(false);
        }
        Err(SandboxError::RuntimeUnusable {
            runtime: self.tool.program().into(),
            reason: format!(
                "`{} image inspect` failed: {}",
                self.tool.program(),
                stderr.lines().next().unwrap_or_default().trim()
            ),
        })
    }

    pub(crate) fn args(
        &self,
        spec: &SandboxSpec,
        workdir: &Workdir,
        name: &str,
        reports: &[LimitReport],
        expect_mounts: Vec<(std::path::PathBuf, (u64, u64))>,
    ) -> Vec<String> {
        let mut args: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| args.extend(items.iter().map(|s| s.to_string()));
        if self.tool == OciTool::Podman {
            push(&["--hooks-dir", &workdir.path(HOOKS_DIR).to_string_lossy()]);
        }
        push(&["run", "--rm", "-i", "--name", name]);
        push(&["--label", &format!("{SANDBOX_LABEL}={}", spec.agent)]);
        push(&[
            "--label",
            &format!(
                "{OWNER_LABEL}={}",
                owner_token(std::process::id()).unwrap_or_default()
            ),
        ]);
        push(&["--network", "none", "--read-only", "--cap-drop", "ALL"]);
        push(&[
            "--security-opt",
            "no-new-privileges",
            "--hostname",
            "palisade",
        ]);
        if self.tool == OciTool::Podman {
            // The agent is never root in the container, and the container's ids are
            // never the host's: rootless, the user's own uid (keep-id; the user
            // namespace maps everything else to the user's subordinate ids); rootful, a
            // fixed subordinate range, the agent at its id 1000.
            if nix::unistd::geteuid().is_root() {
                let base = rootful_id_base().0;
                let map = format!("0:{base}:{MAPPED_IDS}");
                let user = format!("{AGENT_ID_IN_CONTAINER}:{AGENT_ID_IN_CONTAINER}");
                push(&["--uidmap", &map, "--gidmap", &map, "--user", &user]);
            } else {
                push(&["--userns=keep-id"]);
            }
            // podman's --read-only otherwise also makes /run and /var/tmp writable.
            push(&["--read-only-tmpfs=false"]);
            // podman's default rules without nested user namespaces (see seccomp.rs);
            // docker's own default already refuses them to a process without
            // CAP_SYS_ADMIN.
            push(&[
                "--security-opt",
                &format!("seccomp={}", workdir.path(SECCOMP_FILE).display()),
            ]);
        }
        push(&["--tmpfs", "/tmp:rw,nosuid,nodev,mode=1777"]);
        // The container's read-only /sys would name every loop device's backing file
        // (/sys/block/loopN/loop/backing_file and the links to it): the host path of
        // each agent's workspace image, so of the home and of the other agents.
        match self.tool {
            OciTool::Podman => push(&[
                "--security-opt",
                &format!(
                    "mask={BLOCK_DEVICES_IN_SYS}:{}",
                    crate::runtime::HIDDEN_PROC_FILES.join(":")
                ),
            ]),
            OciTool::Docker => push(&[
                "--tmpfs",
                &format!("{BLOCK_DEVICES_IN_SYS}:ro,nosuid,nodev,noexec,size=4k"),
            ]),
        }
        push(&["--log-driver", "none"]);
        let engine = reports
            .iter()
            .any(|r| r.mechanism == LimitMechanism::OciRuntime);
        let limits = &spec.limits;
        if engine {
            if let Some(memory) = limits.memory {
                push(&[
                    "--memory",
                    &memory.to_string(),
                    "--memory-swap",
                    &memory.to_string(),
                ]);
            }
            if let Some(pids) = limits.pids {
                push(&["--pids-limit", &pids.to_string()]);
            }
            if let Some(cpus) = limits.cpus {
                push(&["--cpus", &cpus.to_string()]);
            }
        }
        let nproc = limits.pids.unwrap_or(4096);
        let nofile = crate::limits::open_files_per_process(limits.pids);
        push(&[
            "--ulimit",
            &format!("nofile={nofile}:{nofile}"),
            "--ulimit",
            &format!("nproc={nproc}:{nproc}"),
        ]);
        let volume = |source: &std::path::Path, destination: &str, mode: &str| {
            format!("{}:{destination}:{mode}", source.display())
        };
        // A relative source would be taken for a named volume (a relative --home).
        let workspace = std::path::absolute(&spec.workspace).unwrap_or(spec.workspace.clone());
        push(&["-v", &volume(&workspace, paths::WORKSPACE, "rw")]);
        push(&[
            "-v",
            &volume(&spec.palisade_binary, paths::PALISADE_BINARY, "ro"),
        ]);
        push(&[
            "-v",
            &volume(&workdir.path("ca-bundle.pem"), paths::CA_BUNDLE, "ro"),
        ]);
        push(&["-v", &volume(&workdir.path("hosts"), "/etc/hosts", "ro")]);
        for mount in &spec.mounts {
            let mode = if mount.writable { "rw" } else { "ro" };
            push(&[
                "-v",
                &volume(&mount.source, &mount.destination.to_string_lossy(), mode),
            ]);
        }
        // The control channel (see broker.rs): podman passes the engine's descriptor 3
        // in; docker cannot, so it gets the parent's control socket mounted.
        match self.tool {
            OciTool::Podman => push(&["--preserve-fds", "1"]),
            OciTool::Docker => push(&[
                "-v",
                &volume(&workdir.path(CONTROL_SOCKET), CONTROL_SOCKET_INSIDE, "ro"),
            ]),
        }
        push(&["--workdir", paths::WORKSPACE]);
        for (key, value) in crate::env::sandbox_env() {
            push(&["--env", &format!("{key}={value}")]);
        }
        push(&["--entrypoint", paths::PALISADE_BINARY, &self.image]);
        let control = match self.tool {
            OciTool::Podman => crate::shim::Control::Inherited(CONTROL_FD),
            OciTool::Docker => crate::shim::Control::Socket(CONTROL_SOCKET_INSIDE.into()),
        };
        args.extend(
            shim_argv(spec, reports, control, None, expect_mounts)
                .into_iter()
                .skip(1),
        );
        args
    }
}

impl Runtime for Oci {
    fn kind(&self) -> RuntimeKind {
        match self.tool {
            OciTool::Podman => RuntimeKind::Podman,
            OciTool::Docker => RuntimeKind::Docker,
        }
    }

    fn check(&self) -> Result<(), SandboxError> {
        let program = self.tool.program();
        if which(program).is_none() {
            return Err(SandboxError::MissingTool {
                tool: program.into(),
                hint: format!("install it (Debian/Ubuntu: `apt-get install {program}`) or use --runtime bwrap"),
            });
        }
        if self.tool == OciTool::Podman && which("runc").is_none() {
            return Err(SandboxError::MissingTool {
                tool: "runc".into(),
                hint:
                    "podman is run with `--runtime runc` here; install it (`apt-get install runc`)"
                        .into(),
            });
        }
        if self.tool == OciTool::Podman {
            crate::seccomp::podman_profile()?;
        }
        if self.tool == OciTool::Docker {
            let reachable = self
                .tool
                .command()
                .args(["version", "--format", "{{.Server.Version}}"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !reachable {
                return Err(SandboxError::RuntimeUnusable {
                    runtime: "docker".into(),
                    reason: "the docker CLI cannot reach a Docker engine (is dockerd running and is your user allowed to use it?); or use --runtime podman or bwrap".into(),
                });
            }
        }
        if !self.image_exists()? {
            return Err(SandboxError::MissingImage {
                image: self.image.clone(),
            });
        }
        Ok(())
    }

    fn start(&self, spec: &SandboxSpec) -> Result<Sandbox, SandboxError> {
        self.check()?;
        check_spec(spec)?;
        remove_stale_containers(self.tool);
        let workdir = Workdir::create(&spec.ca_bundle)?;
        if self.tool == OciTool::Podman {
            workdir.write(SECCOMP_FILE, &crate::seccomp::podman_profile()?)?;
            write_pools_hook(&workdir, spec)?;
            if nix::unistd::geteuid().is_root() {
                // A workspace root's bubblewrap sandboxes (or an older version) used is
                // handed over to the id podman's agents share.
                let root = crate::ownership::Owner { uid: 0, gid: 0 };
                crate::ownership::hand_over(
                    &spec.workspace,
                    &[root, agent_owner(&spec.agent)],
                    rootful_agent_owner(),
                )?;
            }
        }
        let mut reports = self.reports(spec);
        let (file_table, table_report) = crate::limits::claim_file_table(&spec.limits, &reports);
        reports.push(table_report);
        let name = format!(
            "palisade-{}-{}-{}",
            spec.agent,
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        // The engine resolves each source again: what it must find is what is there
        // now, opened as checked (the shim compares before the command starts).
        let identities = spec
            .mounts
            .iter()
            .map(|mount| {
                crate::mounts::open_as_checked(mount)
                    .map(|opened| (mount.destination.clone(), opened.identity))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let args = self.args(spec, &workdir, &name, &reports, identities);
        let mut command = tokio::process::Command::from(self.tool.command());
        // Its own process group: a Ctrl-C meant for palisade must not reach the engine's
        // client in the middle of creating the container (it dies half-way and leaves
        // conmon and a created container that `podman ps` no longer lists); palisade
        // ends the sandbox itself.
        command.args(&args).kill_on_drop(false).process_group(0);
        // The engine needs its own environment (XDG_RUNTIME_DIR, HOME for its storage);
        // none of it reaches the container, whose environment is only what --env sets.
        if spec.stdio == StdioMode::Piped {
            command
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
        }
        let no_channel = |e| SandboxError::io("cannot create the sandbox's control channel", e);
        let (child, broker) = match self.tool {
            OciTool::Podman => {
                let (control, sandbox_end) = crate::broker::channel().map_err(no_channel)?;
                let inherited = sandbox_end.as_raw_fd();
                // SAFETY: only dup2/fcntl run between fork and exec.
                unsafe {
                    command.pre_exec(move || place_at(inherited, CONTROL_FD));
                }
                let child = command.spawn().map_err(|e| {
                    SandboxError::Start(format!("cannot run {}: {e}", self.tool.program()))
                })?;
                drop(sandbox_end);
                let broker = crate::broker::serve(control, crate::runtime::broker_targets(spec))
                    .map_err(no_channel)?;
                (child, broker)
            }
            OciTool::Docker => {
                let listener = std::os::unix::net::UnixListener::bind(workdir.path(CONTROL_SOCKET))
                    .map_err(no_channel)?;
                let broker = crate::broker::serve_first_connection(
                    listener,
                    crate::runtime::broker_targets(spec),
                )
                .map_err(no_channel)?;
                let child = command.spawn().map_err(|e| {
                    SandboxError::Start(format!("cannot run {}: {e}", self.tool.program()))
                })?;
                (child, broker)
            }
        };
        Ok(Sandbox {
            child,
            wall_time: spec.limits.wall_time,
            workspace_quota: crate::runtime::workspace_quota(spec),
            cgroup: None,
            container: Some((self.tool, name)),
            broker,
            workdir: Some(workdir),
            etc: None,
            reports,
            file_table,
            finished: false,
        })
    }
}

/// The first host id of the range rootful podman sandboxes map, and where it came
/// from: root's entry in /etc/subuid and /etc/subgid when both have one of at least
/// 65536 ids starting at the same id, else [`DEFAULT_ROOTFUL_BASE`].
pub fn rootful_id_base() -> (u32, &'static str) {
    let range = |file: &str| root_range(&std::fs::read_to_string(file).unwrap_or_default());
    match (range("/etc/subuid"), range("/etc/subgid")) {
        (Some(uid), Some(gid)) if uid == gid => {
            (uid, "root's range in /etc/subuid and /etc/subgid")
        }
        _ => (
            DEFAULT_ROOTFUL_BASE,
            "palisade's default range (root has none in /etc/subuid and /etc/subgid)",
        ),
    }
}

/// The start of root's first range of at least [`MAPPED_IDS`] ids in the text of
/// /etc/subuid or /etc/subgid (`NAME:START:COUNT` lines).
fn root_range(text: &str) -> Option<u32> {
    text.lines().find_map(|line| {
        let mut fields = line.trim().split(':');
        let (name, start, count) = (fields.next()?, fields.next()?, fields.next()?);
        let (start, count): (u32, u32) = (start.parse().ok()?, count.parse().ok()?);
        let fits = start.checked_add(MAPPED_IDS).is_some();
        (matches!(name, "root" | "0") && count >= MAPPED_IDS && fits).then_some(start)
    })
}

/// The host user and group a rootful podman sandbox's agent runs as: one id for every
/// agent, since podman maps the container's ids as one range.
pub fn rootful_agent_owner() -> crate::ownership::Owner {
    let id = rootful_id_base().0 + AGENT_ID_IN_CONTAINER;
    crate::ownership::Owner { uid: id, gid: id }
}

/// Where, in the rootful range, the ids that own root's bubblewrap sandboxes' user
/// namespaces start ([`namespace_owner`]), where the ids its agents run as start
/// ([`agent_owner`]), and how many of each there are.
const OWNER_FIRST: u32 = 2000;
const AGENT_FIRST: u32 = OWNER_FIRST + ID_SLOTS;
const ID_SLOTS: u32 = 30_000;

/// One of [`ID_SLOTS`] for `agent`'s name, by FNV-1a: stable across versions and
/// platforms, unlike the standard hasher. Two names may share one (`agent8` and
/// `agent260`), and would then share what the ids below keep apart, so an agent whose
/// name shares another's slot is not created (`palisade_host::agents::create`).
pub fn agent_slot(agent: &str) -> u32 {
    let hash = agent.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    hash % ID_SLOTS
}

/// The host user that owns the user namespace of `agent`'s bubblewrap sandboxes when
/// root starts them: one id of the rootful range per agent name.
///
/// What a sandbox's processes hold of the kernel's per-namespace-owner pools (inotify
/// instances and watches, fanotify groups, queued signals, message queue bytes) is
/// counted against the owner of each user namespace above them. Owned by root, every
/// agent's sandboxes drew on root's own pools (128 inotify instances for systemd and
/// every other root program, then none). Owned by an id of its own, an agent draws on
/// its own pools only; nothing runs as that id but bwrap's own monitor process.
pub fn namespace_owner(agent: &str) -> crate::ownership::Owner {
    let id = rootful_id_base().0 + OWNER_FIRST + agent_slot(agent);
    crate::ownership::Owner { uid: id, gid: id }
}

/// The host user and group `agent`'s processes run as in the bubblewrap sandboxes root
/// starts: one id of the rootful range per agent name, not the one all podman agents
/// share. The kernel counts some pools by the user a process runs as, whatever its
/// namespaces (epoll watches, pipe buffer pages, open `mqueue` bytes): with one id for
/// every agent, one agent's 5 million epoll watches left no other agent's sandbox able
/// to start.
pub fn agent_owner(agent: &str) -> crate::ownership::Owner {
    let id = rootful_id_base().0 + AGENT_FIRST + agent_slot(agent);
    crate::ownership::Owner { uid: id, gid: id }
}

/// Makes `fd` available as descriptor `target` across exec (in the child).
fn place_at(fd: std::os::fd::RawFd, target: std::os::fd::RawFd) -> std::io::Result<()> {
    use nix::libc;
    // SAFETY: dup2 and fcntl on descriptors of this (forked) process.
    let result = unsafe {
        if fd == target {
            libc::fcntl(fd, libc::F_SETFD, 0)
        } else {
            // dup2 leaves the new descriptor without close-on-exec.
            libc::dup2(fd, target)
        }
    };
    if result == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `PID:START` where START is the process's start time in clock ticks, so a reused
/// pid is not mistaken for the owner.
fn owner_token(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = stat.rsplit_once(')')?.1;
    let start = after_name.split_whitespace().nth(19)?;
    Some(format!("{pid}:{start}"))
}

fn owner_alive(token: &str) -> bool {
    let Some((pid, _)) = token.split_once(':') else {
        return false;
    };
    pid.parse::<u32>()
        .ok()
        .filter(|pid| crate::workdir::process_alive(pid))
        .and_then(owner_token)
        .is_some_and(|current| current == token)
}

/// Sends SIGKILL to a container's processes, bounded to 20 s.
pub(crate) fn kill_container(tool: OciTool, name: &str) {
    bounded(tool, &["kill", "--signal", "KILL", name]);
}

/// Force-removes a container, bounded to 20 s.
pub(crate) fn remove_container(tool: OciTool, name: &str) {
    bounded(tool, &["rm", "-f", "-t", "0", name]);
}

fn bounded(tool: OciTool, args: &[&str]) {
    let child = tool
        .command()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if let Ok(mut child) = child {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if std::time::Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

/// Containers labelled as palisade sandboxes, with their owner token.
pub fn sandbox_containers(tool: OciTool) -> Vec<(String, String)> {
    let output = tool
        .command()
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("label={SANDBOX_LABEL}"),
            "--format",
            &format!("{{{{.Names}}}} {{{{index .Labels \"{OWNER_LABEL}\"}}}}"),
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    let Ok(output) = output else {
        return Vec::new();
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            Some((
                parts.next()?.to_string(),
                parts.next().unwrap_or("").to_string(),
            ))
        })
        .collect()
}

/// Removes sandbox containers whose owning palisade process is gone.
pub fn remove_stale_containers(tool: OciTool) {
    for (name, owner) in sandbox_containers(tool) {
        if !owner_alive(&owner) {
            remove_container(tool, &name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_subordinate_range_is_found_and_only_a_usable_one() {
        let text = "alice:100000:65536\nroot:200000:1000\nroot:300000:65536\n";
        assert_eq!(root_range(text), Some(300000));
        assert_eq!(root_range("0:400000:70000\n"), Some(400000));
        for unusable in [
            "alice:100000:65536",
            "root:x:65536",
            "root:4294967000:65536",
            "",
        ] {
            assert_eq!(root_range(unusable), None, "{unusable}");
        }
    }
}
