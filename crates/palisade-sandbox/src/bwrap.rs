//! The bubblewrap backend: no daemon, one `bwrap` process per sandbox.
//!
//! Every namespace is new (user, pid, ipc, uts, mount, cgroup, network with loopback
//! only), all capabilities are dropped, nested user namespaces are disabled, the
//! command runs in a new session (no terminal injection) and dies with its parent.
//! The filesystem is built from nothing: `/usr` and the merged-usr links read-only, a
//! prepared copy of an allow-list of `/etc` files (no shadow, no keys; see
//! [`crate::etc_tree`]) as one read-only mount, fresh `/proc`, `/dev` and
//! `/tmp`, the workspace, and `/run/palisade` (shim, CA bundle); then `/` is remounted
//! read-only. No socket is mounted: the shim reaches the vault through its parent
//! ([`crate::broker`]).
//!
//! bwrap's argument list and the sandbox's seccomp filters ([`crate::syscall_filter`])
//! are handed over as inherited file descriptors (`--args FD`, `--add-seccomp-fd FD`),
//! so the command line of bwrap, which is also the command line of the sandbox's first
//! process (`/proc/1/cmdline` inside), is `bwrap --args N` and names nothing of the
//! host. Before bwrap starts, the child joins a new, empty session keyring; the filter
//! denies the keyring calls anyway, this only makes sure nothing of the caller's
//! session is even attached to the sandbox.

use crate::cgroup::{enter_from_child, Cgroup};
use crate::runtime::{
    shim_argv, wall_time_report, which, Runtime, RuntimeKind, Sandbox, SandboxSpec, StdioMode,
};
use crate::workdir::{synthetic_etc, Workdir};
use crate::{paths, SandboxError};
use std::io::{Seek, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::Stdio;

pub struct Bubblewrap {
    program: String,
}

impl Default for Bubblewrap {
    fn default() -> Self {
        Self::new()
    }
}

/// The namespace and privilege flags every sandbox gets; `sandbox doctor` probes with
/// exactly these, so what it reports is what a sandbox runs with.
pub(crate) const ISOLATION_FLAGS: [&str; 12] = [
    "--unshare-user",
    "--unshare-ipc",
    "--unshare-pid",
    "--unshare-net",
    "--unshare-uts",
    "--unshare-cgroup-try",
    "--disable-userns",
    "--die-with-parent",
    "--new-session",
    "--cap-drop",
    "ALL",
    "--clearenv",
];

impl Bubblewrap {
    pub fn new() -> Self {
        Bubblewrap {
            program: "bwrap".into(),
        }
    }

    /// The `bwrap` options for `spec`, and the command (the shim's argv), which bwrap
    /// takes only from its real argv, after `--`: it holds only paths inside the sandbox.
    pub(crate) fn args(
        &self,
        spec: &SandboxSpec,
        workdir: &Workdir,
        etc: &Path,
        shim: Vec<String>,
    ) -> (Vec<String>, Vec<String>) {
        let mut args: Vec<String> = ISOLATION_FLAGS
            .iter()
            .chain(["--hostname", "palisade", "--ro-bind", "/usr", "/usr"].iter())
            .map(|s| s.to_string())
            .collect();
        let mut push = |items: &[&str]| args.extend(items.iter().map(|s| s.to_string()));
        for top in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
            let host = Path::new("/").join(top);
            match std::fs::read_link(&host) {
                Ok(target) => push(&[
                    "--symlink",
                    &target.to_string_lossy(),
                    &host.to_string_lossy(),
                ]),
                Err(_) if host.is_dir() => push(&[
                    "--ro-bind",
                    &host.to_string_lossy(),
                    &host.to_string_lossy(),
                ]),
                Err(_) => {}
            }
        }
        // The allow-listed /etc with synthetic passwd, group and hosts: one mount.
        push(&["--ro-bind", &etc.to_string_lossy(), "/etc"]);
        push(&[
            "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/var/tmp",
        ]);
        push(&["--dir", "/run/palisade"]);
        push(&[
            "--ro-bind",
            &spec.palisade_binary.to_string_lossy(),
            paths::PALISADE_BINARY,
        ]);
        push(&[
            "--ro-bind",
            &workdir.path("ca-bundle.pem").to_string_lossy(),
            paths::CA_BUNDLE,
        ]);
        push(&[
            "--bind",
            &spec.workspace.to_string_lossy(),
            paths::WORKSPACE,
        ]);
        for mount in &spec.mounts {
            let kind = if mount.writable {
                "--bind"
            } else {
                "--ro-bind"
            };
            push(&[
                kind,
                &mount.source.to_string_lossy(),
                &mount.destination.to_string_lossy(),
            ]);
        }
        for (name, value) in crate::env::sandbox_env() {
            push(&["--setenv", &name, &value]);
        }
        push(&["--chdir", paths::WORKSPACE, "--remount-ro", "/"]);
        (args, shim)
    }
}

/// Whether user namespaces can be created by this user, from sysctls (no probe).
fn user_namespaces_blocked() -> Option<String> {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        return Some("user.max_user_namespaces is 0".into());
    }
    if !nix::unistd::geteuid().is_root()
        && read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0")
    {
        return Some("kernel.unprivileged_userns_clone is 0".into());
    }
    if !nix::unistd::geteuid().is_root()
        && read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1")
    {
        return Some("AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns=1)".into());
    }
    None
}

impl Runtime for Bubblewrap {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Bwrap
    }

    fn check(&self) -> Result<(), SandboxError> {
        if which(&self.program).is_none() {
            return Err(SandboxError::MissingTool {
                tool: "bubblewrap (bwrap)".into(),
                hint: "install it (Debian/Ubuntu: `apt-get install bubblewrap`) or use --runtime podman".into(),
            });
        }
        if let Some(detail) = user_namespaces_blocked() {
            return Err(SandboxError::NoUserNamespaces { detail });
        }
        compiled_filters()?;
        Ok(())
    }

    fn start(&self, spec: &SandboxSpec) -> Result<Sandbox, SandboxError> {
        self.check()?;
        check_spec(spec)?;
        if nix::unistd::geteuid().is_root() {
            // Root's agents run as uid 0 of their user namespace here; a workspace a
            // rootful podman sandbox used last is handed back (see ownership.rs).
            let root = crate::ownership::Owner { uid: 0, gid: 0 };
            crate::ownership::hand_over(&spec.workspace, crate::oci::rootful_agent_owner(), root)?;
        }
        let workdir = Workdir::create(&spec.ca_bundle)?;
        let etc = crate::etc_tree::prepare(
            Path::new("/etc"),
            crate::etc_tree::ETC_ALLOWED,
            &synthetic_etc(),
            &std::env::temp_dir(),
        )?;
        let (control, sandbox_end) = crate::broker::channel()
            .map_err(|e| SandboxError::io("cannot create the sandbox's control channel", e))?;
        let (cgroup, mut reports) = Cgroup::create(&spec.limits);
        reports.extend(wall_time_report(&spec.limits));
        reports.extend(crate::runtime::workspace_report(
            &spec.limits,
            crate::volume::is_mount_point(&spec.workspace),
        ));
        let shim = shim_argv(
            spec,
            &reports,
            crate::shim::Control::Inherited(sandbox_end.as_raw_fd()),
        );
        let (options, shim) = self.args(spec, &workdir, etc.path(), shim);
        let mut handoff = Handoff::default();
        let options_fd = handoff.with_filters_and_options(options)?;
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(["--args", &options_fd.to_string(), "--"])
            .args(&shim)
            .env_clear()
            .kill_on_drop(true);
        if spec.stdio == StdioMode::Piped {
            command
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
        }
        let procs = cgroup.as_ref().map(|c| c.procs_files());
        let mut inherited = handoff.raw_fds();
        inherited.push(sandbox_end.as_raw_fd());
        // SAFETY: only async-signal-safe calls (fcntl, keyctl, and enter_from_child's
        // open/write/close on prepared paths) run between fork and exec.
        unsafe {
            command.pre_exec(move || {
                inherit(&inherited)?;
                join_new_session_keyring();
                match &procs {
                    Some(procs) => enter_from_child(procs),
                    None => Ok(()),
                }
            });
        }
        let child = command
            .spawn()
            .map_err(|e| SandboxError::Start(format!("cannot run bwrap: {e}")))?;
        // The child has its copies; bwrap reads them before the command starts.
        drop(handoff);
        drop(sandbox_end);
        let broker = crate::broker::serve(control, crate::runtime::broker_targets(spec))
            .map_err(|e| SandboxError::io("cannot serve the sandbox's control channel", e))?;
        Ok(Sandbox {
            child,
            wall_time: spec.limits.wall_time,
            workspace_quota: crate::runtime::workspace_quota(spec),
            cgroup,
            container: None,
            broker,
            workdir: Some(workdir),
            etc: Some(etc),
            reports,
            finished: false,
        })
    }
}

/// Files handed to bwrap by descriptor: its arguments and the seccomp filters. Each is
/// a memfd, close-on-exec in this process and inherited by the bwrap child only (bwrap
/// reads and closes them before the sandbox's command starts).
#[derive(Default)]
pub(crate) struct Handoff {
    fds: Vec<OwnedFd>,
}

impl Handoff {
    /// Adds the seccomp filters and then `options` (bwrap options, no command); returns
    /// the descriptor to pass as `bwrap --args FD`.
    pub(crate) fn with_filters_and_options(
        &mut self,
        options: Vec<String>,
    ) -> Result<RawFd, SandboxError> {
        let mut all = Vec::new();
        for filter in compiled_filters()? {
            let fd = self.add("palisade-seccomp", filter)?;
            all.extend(["--add-seccomp-fd".to_string(), fd.to_string()]);
        }
        all.extend(options);
        let mut text = Vec::new();
        for arg in all {
            text.extend_from_slice(arg.as_bytes());
            text.push(0);
        }
        self.add("palisade-bwrap-args", &text)
    }

    fn add(&mut self, name: &str, bytes: &[u8]) -> Result<RawFd, SandboxError> {
        use nix::sys::memfd::{memfd_create, MFdFlags};
        let failed = |e: std::io::Error| SandboxError::io("cannot prepare bwrap's arguments", e);
        let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC).map_err(|e| failed(e.into()))?;
        let mut file = std::fs::File::from(fd);
        file.write_all(bytes).map_err(failed)?;
        // bwrap reads from the current offset, which the child shares.
        file.rewind().map_err(failed)?;
        let fd = OwnedFd::from(file);
        let raw = fd.as_raw_fd();
        self.fds.push(fd);
        Ok(raw)
    }

    pub(crate) fn raw_fds(&self) -> Vec<RawFd> {
        self.fds.iter().map(AsRawFd::as_raw_fd).collect()
    }
}

/// The filters, compiled once per process.
pub(crate) fn compiled_filters() -> Result<&'static [Vec<u8>], SandboxError> {
    static FILTERS: std::sync::OnceLock<Result<Vec<Vec<u8>>, String>> = std::sync::OnceLock::new();
    FILTERS
        .get_or_init(|| crate::syscall_filter::bwrap_filters().map_err(|e| e.to_string()))
        .as_deref()
        .map_err(|e| SandboxError::Start(e.clone()))
}

/// Clears close-on-exec on `fds` (in the child, between fork and exec).
pub(crate) fn inherit(fds: &[RawFd]) -> std::io::Result<()> {
    for &fd in fds {
        // SAFETY: fcntl on a descriptor this process owns.
        if unsafe { nix::libc::fcntl(fd, nix::libc::F_SETFD, 0) } == -1 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Replaces the caller's session keyring with a new, empty one (in the child, between
/// fork and exec). Failure (a user at their key quota) is ignored: the seccomp filter
/// is what keeps the sandbox from the keyrings.
pub(crate) fn join_new_session_keyring() {
    const KEYCTL_JOIN_SESSION_KEYRING: nix::libc::c_long = 1;
    // SAFETY: keyctl with a null name creates and joins an anonymous keyring.
    unsafe {
        nix::libc::syscall(
            nix::libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<nix::libc::c_char>(),
        );
    }
}

/// Checks shared by every backend before anything is created.
pub(crate) fn check_spec(spec: &SandboxSpec) -> Result<(), SandboxError> {
    if spec.command.is_empty() {
        return Err(SandboxError::Start(
            "no command given; put it after `--`".into(),
        ));
    }
    if !spec.workspace.is_dir() {
        return Err(SandboxError::Start(format!(
            "the workspace {} does not exist",
            spec.workspace.display()
        )));
    }
    if !spec.palisade_binary.is_file() {
        return Err(SandboxError::Start(format!(
            "the palisade binary {} cannot be found to run the shim",
            spec.palisade_binary.display()
        )));
    }
    if !spec.vault_socket.exists() {
        return Err(SandboxError::Start(format!(
            "the agent's vault socket {} does not exist; is the gateway running?",
            spec.vault_socket.display()
        )));
    }
    Ok(())
}
