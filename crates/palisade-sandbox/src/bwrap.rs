//! The bubblewrap backend: no daemon, one `bwrap` process per sandbox.
//!
//! Every namespace is new (user, pid, ipc, uts, mount, cgroup, network with loopback
//! only), all capabilities are dropped, nested user namespaces are disabled, the
//! command runs in a new session (no terminal injection) and dies with its parent.
//! Started by root, nothing of the sandbox is the host's root: see [`Gate`].
//! Extra mounts go by descriptor, not by path: see [`MountSources`].
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
        gate: &Gate,
        sources: &MountSources,
    ) -> (Vec<String>, Vec<String>) {
        let mut args: Vec<String> = ISOLATION_FLAGS
            .iter()
            // As root, the parent writes the user namespace's maps (see Gate), which
            // bwrap allows only without its own second namespace (nested user namespaces
            // stay denied by the seccomp filter).
            .filter(|flag| !gate.root() || **flag != "--disable-userns")
            .map(|s| s.to_string())
            .collect();
        args.extend(gate.bwrap_options());
        args.extend(
            ["--hostname", "palisade", "--ro-bind", "/usr", "/usr"]
                .iter()
                .map(|s| s.to_string()),
        );
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
        push(&["--proc", "/proc", "--dev", "/dev"]);
        for file in crate::runtime::HIDDEN_PROC_FILES {
            if Path::new(file).exists() {
                push(&["--ro-bind", "/dev/null", file]);
            }
        }
        // Writable by whichever uid the agent is, and bounded: a RAM filesystem's pages
        // count against no rlimit, so without a size one sandbox could fill half the
        // host's memory in each.
        let tmp_size = spec.limits.memory.unwrap_or(TMP_SIZE_DEFAULT).to_string();
        for tmp in ["/tmp", "/var/tmp"] {
            push(&["--perms", "1777", "--size", &tmp_size, "--tmpfs", tmp]);
        }
        // bwrap's /dev is a RAM filesystem as large as half the host's memory, and
        // writable by the agent when no root starts the sandbox (where no cgroup may
        // count its pages either): /dev/shm gets a small one of its own, and /dev is
        // made read-only below (its devices still read and write).
        let shm_size = SHM_SIZE.to_string();
        push(&[
            "--perms", "1777", "--size", &shm_size, "--tmpfs", "/dev/shm",
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
        for (index, mount) in spec.mounts.iter().enumerate() {
            // bwrap would create the mount point's parents readable by their owner
            // only, which is not the agent when root starts the sandbox.
            let mut parents: Vec<&Path> = mount
                .destination
                .ancestors()
                .skip(1)
                .filter(|p| p.parent().is_some())
                .collect();
            parents.reverse();
            for parent in parents {
                push(&["--dir", &parent.to_string_lossy()]);
            }
            let destination = mount.destination.to_string_lossy();
            match sources.fds.get(index) {
                Some(fd) => {
                    let kind = if mount.writable {
                        "--bind-fd"
                    } else {
                        "--ro-bind-fd"
                    };
                    push(&[kind, &fd.as_raw_fd().to_string(), &destination]);
                }
                None => {
                    let kind = if mount.writable {
                        "--bind"
                    } else {
                        "--ro-bind"
                    };
                    push(&[kind, &mount.source.to_string_lossy(), &destination]);
                }
            }
        }
        for (name, value) in crate::env::sandbox_env() {
            push(&["--setenv", &name, &value]);
        }
        // As root, bwrap (the namespace's owner, or root without capabilities) may not
        // enter the agent's workspace; the shim changes into it once it is the agent.
        if !gate.root() {
            push(&["--chdir", paths::WORKSPACE]);
        }
        push(&["--remount-ro", "/", "--remount-ro", "/dev"]);
        (args, shim)
    }
}

/// The extra mounts' sources, opened once by the parent and checked to be the very
/// folders that were checked, for `--bind-fd`: bwrap then mounts what the descriptor
/// holds (and checks that it did), not whatever a path names by the time it gets to
/// it. A path is resolved again at each use, so an agent able to write to any part of
/// a source's path (a folder shared writable with it) could otherwise swap a directory
/// for a link between the check and the mount and have another sandbox mount any
/// folder of the host, the home with its master key among them.
///
/// Empty when this bubblewrap has no `--bind-fd` (before 0.10, unless its distribution
/// added it): the mounts then go by path, as before.
pub(crate) struct MountSources {
    /// For `--bind-fd`; empty when this bubblewrap has none.
    fds: Vec<OwnedFd>,
    /// Each mount's destination and what the shim must find there.
    expected: Vec<(std::path::PathBuf, (u64, u64))>,
}

impl MountSources {
    fn open(mounts: &[crate::Mount]) -> Result<Self, SandboxError> {
        let mut fds = Vec::with_capacity(mounts.len());
        let mut expected = Vec::with_capacity(mounts.len());
        for mount in mounts {
            let opened = crate::mounts::open_as_checked(mount)?;
            expected.push((mount.destination.clone(), opened.identity));
            fds.push(opened.fd);
        }
        if !mounts.is_empty() && !bind_fd_supported() {
            // Mounted by path: the shim's check alone stands between a swap and it.
            fds.clear();
        }
        Ok(MountSources { fds, expected })
    }
}

/// Whether this `bwrap` takes `--bind-fd` (asked once per process).
fn bind_fd_supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        // Found the way the sandbox's own `bwrap` is: with no environment.
        std::process::Command::new("bwrap")
            .env_clear()
            .arg("--help")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).contains("--bind-fd"))
            .unwrap_or(false)
    })
}

/// Size of each of `/tmp` and `/var/tmp` when no memory limit is set.
const TMP_SIZE_DEFAULT: u64 = 1 << 30;

/// Size of `/dev/shm` (POSIX shared memory, semaphores), as in docker's containers.
const SHM_SIZE: u64 = 64 << 20;

/// The agent's uid and gid inside a sandbox started by root (the same as in podman).
const AGENT_ID: u32 = crate::oci::AGENT_ID_IN_CONTAINER;

/// How long bwrap may take to create its user namespace and say so.
const USERNS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Where bwrap's child waits for the parent before the sandbox's command starts.
///
/// bwrap says which process is the sandbox's (`--info-fd`, `{"child-pid": N, …}`), and
/// that process waits for a byte (`--block-fd`) before it starts the shim. Meanwhile
/// the parent bounds the sandbox's share of the kernel's per-user pools from outside
/// (see [`crate::pools`]), which nothing inside the sandbox could do.
///
/// Started by root, the parent also writes the user namespace's maps, while the child
/// waits on a second descriptor (`--userns-block-fd`). bwrap maps exactly one id, the
/// sandbox's uid to the caller's; started by root that makes every process of the
/// sandbox the host's root, without capabilities but with everything the kernel
/// grants uid 0 itself (the `/proc/sys` files, the owner of files it writes to a
/// shared folder, setuid bits on them). So for root, uid and gid 0 stay the host's
/// root, which bwrap needs while it builds the sandbox from root's files, and
/// [`AGENT_ID`] is the agent's own subordinate host id
/// ([`crate::oci::agent_owner`]); when bwrap runs as the namespace's owner
/// ([`namespace_owner_for`]), that id is mapped too (see [`root_maps`]). bwrap keeps
/// only `CAP_SETUID` and `CAP_SETGID` for the shim, whose first act is to become
/// [`AGENT_ID`] for good (losing both), before the command or anything else of the
/// sandbox runs.
pub(crate) struct Gate {
    /// bwrap writes `{"child-pid": N, …}` here, then closes it.
    info_read: std::fs::File,
    info_write: OwnedFd,
    /// bwrap's child waits for a byte here before it starts the shim.
    block_read: OwnedFd,
    block_write: std::fs::File,
    /// Root only: bwrap's child waits here for its user namespace's maps.
    userns: Option<(OwnedFd, std::fs::File)>,
}

impl Gate {
    fn new(root: bool) -> Result<Self, SandboxError> {
        let pipe = || {
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| {
                SandboxError::io("cannot create a pipe for the sandbox's start", e.into())
            })
        };
        let (info_read, info_write) = pipe()?;
        let (block_read, block_write) = pipe()?;
        let userns = match root {
            true => {
                let (read, write) = pipe()?;
                Some((read, write.into()))
            }
            false => None,
        };
        Ok(Gate {
            info_read: info_read.into(),
            info_write,
            block_read,
            block_write: block_write.into(),
            userns,
        })
    }

    /// Whether the parent writes the user namespace's maps: root started the sandbox.
    fn root(&self) -> bool {
        self.userns.is_some()
    }

    fn bwrap_options(&self) -> Vec<String> {
        let mut options = vec![
            "--info-fd".into(),
            self.info_write.as_raw_fd().to_string(),
            "--block-fd".into(),
            self.block_read.as_raw_fd().to_string(),
        ];
        if let Some((read, _)) = &self.userns {
            options.extend([
                "--userns-block-fd".into(),
                read.as_raw_fd().to_string(),
                // bwrap may run as the namespace's owner (see namespace_owner_for),
                // whose id is not mapped: the shim starts as uid 0 all the same.
                "--uid".into(),
                "0".into(),
                "--gid".into(),
                "0".into(),
                "--cap-add".into(),
                "CAP_SETUID".into(),
                "--cap-add".into(),
                "CAP_SETGID".into(),
            ]);
        }
        options
    }

    fn child_fds(&self) -> Vec<RawFd> {
        let mut fds = vec![self.info_write.as_raw_fd(), self.block_read.as_raw_fd()];
        fds.extend(self.userns.as_ref().map(|(read, _)| read.as_raw_fd()));
        fds
    }

    /// Reads the child's pid; as root writes its maps (`agent` for [`AGENT_ID`]);
    /// bounds its kernel pools; then lets the shim start. `monitor` is bwrap's own
    /// process, this process's child, whose child the sandbox's must be: a pid is
    /// trusted only while that holds (a pid freed by a child that died could be another
    /// process's by the time it is used).
    fn open(
        self,
        monitor: u32,
        agent: crate::ownership::Owner,
        owner: Option<crate::ownership::Owner>,
    ) -> Result<(), SandboxError> {
        let Gate {
            info_read,
            info_write,
            block_read,
            mut block_write,
            userns,
        } = self;
        // bwrap has its copies; ours would keep the info pipe from ever ending.
        drop(info_write);
        drop(block_read);
        let userns = userns.map(|(read, write)| {
            drop(read);
            write
        });
        let info = read_to_end_within(info_read, USERNS_TIMEOUT)?;
        let pid = child_pid(&info).ok_or_else(|| {
            SandboxError::Start(format!(
                "bwrap did not say which process is the sandbox's ({:?})",
                String::from_utf8_lossy(&info[..info.len().min(200)])
            ))
        })?;
        if !crate::pools::child_of(pid, monitor) {
            return Err(ended_while_building());
        }
        if let Some(mut userns) = userns {
            let write = |file: &str, text: String| {
                let path = format!("/proc/{pid}/{file}");
                std::fs::write(&path, text).map_err(|e| {
                    SandboxError::io(format!("cannot write the sandbox's {file} ({path})"), e)
                })
            };
            let (uid_map, gid_map) = root_maps(agent, owner);
            write("uid_map", uid_map)?;
            write("gid_map", gid_map)?;
            userns
                .write_all(b"1")
                .map_err(|e| SandboxError::io("cannot let the sandbox start", e))?;
        }
        wait_until_built(pid, monitor, USERNS_TIMEOUT)?;
        crate::pools::bound(pid, monitor)?;
        block_write
            .write_all(b"1")
            .map_err(|e| SandboxError::io("cannot let the sandbox's command start", e))
    }
}

/// The id bwrap runs as inside the namespace while it builds the sandbox, when it runs
/// as the namespace's owner: that id must be mapped for it to create anything, and the
/// agent (1000, without capabilities) cannot become it.
const OWNER_IN_NAMESPACE: u32 = 65_533;

/// The user namespace's uid and gid maps of a sandbox root starts: 0 stays the host's
/// root (bwrap builds the sandbox from root's files), [`AGENT_ID`] is `agent`, and the
/// namespace's `owner`, if it is not root, is [`OWNER_IN_NAMESPACE`].
fn root_maps(
    agent: crate::ownership::Owner,
    owner: Option<crate::ownership::Owner>,
) -> (String, String) {
    let mut uid_map = format!("0 0 1\n{AGENT_ID} {} 1\n", agent.uid);
    let mut gid_map = format!("0 0 1\n{AGENT_ID} {} 1\n", agent.gid);
    if let Some(owner) = owner {
        uid_map.push_str(&format!("{OWNER_IN_NAMESPACE} {} 1\n", owner.uid));
        gid_map.push_str(&format!("{OWNER_IN_NAMESPACE} {} 1\n", owner.gid));
    }
    (uid_map, gid_map)
}

/// Who runs bwrap, and so owns the user namespace it creates, when root starts a
/// sandbox for `agent`: the agent's own id ([`crate::oci::namespace_owner`]), so what
/// the sandbox holds of the kernel's per-user pools is not root's. `None` (root owns
/// it, as before) where this host lets no one but root create a user namespace.
fn namespace_owner_for(agent: &str) -> Option<crate::ownership::Owner> {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .map(|text| text.trim().to_string())
    };
    let blocked = read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0")
        || read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1");
    let owner = crate::oci::namespace_owner(agent);
    // The owner holds every capability in the sandbox's namespace, where 0 is the
    // host's root: an id anyone else may hold (a user, or another user's subordinate
    // range) must not own one.
    let taken = ["/etc/passwd", "/etc/subuid", "/etc/subgid"]
        .iter()
        .any(|file| {
            id_held_by_another(
                &read(file).unwrap_or_default(),
                owner.uid,
                file.ends_with("passwd"),
            )
        });
    (!blocked && !taken).then_some(owner)
}

/// Whether `id` is a user's in `/etc/passwd` text (`users`), or falls in the range of
/// anyone but root in `/etc/subuid` or `/etc/subgid` text.
fn id_held_by_another(text: &str, id: u32, users: bool) -> bool {
    text.lines().any(|line| {
        let fields: Vec<&str> = line.trim().split(':').collect();
        let number = |index: usize| fields.get(index).and_then(|f| f.parse::<u64>().ok());
        if users {
            return number(2) == Some(u64::from(id));
        }
        let root = matches!(fields.first(), Some(&"root") | Some(&"0"));
        match (number(1), number(2)) {
            (Some(start), Some(count)) if !root => {
                (start..start.saturating_add(count)).contains(&u64::from(id))
            }
            _ => false,
        }
    })
}

/// In the forked child, before bwrap: becomes `owner` for good (root's capabilities go
/// with the change of ids). The parent, still root, writes the maps (see [`Gate`]).
fn become_owner(owner: crate::ownership::Owner) -> std::io::Result<()> {
    use nix::libc;
    // SAFETY: plain system calls with integer arguments.
    let failed = unsafe {
        libc::setgroups(0, std::ptr::null()) != 0
            || libc::setresgid(owner.gid, owner.gid, owner.gid) != 0
            || libc::setresuid(owner.uid, owner.uid, owner.uid) != 0
    };
    match failed {
        true => Err(std::io::Error::last_os_error()),
        false => Ok(()),
    }
}

/// Waits until bwrap's child `pid` has built the sandbox: its mounts, its root and (for
/// `--disable-userns`) its nested user namespace. bwrap says which process is the
/// sandbox's as soon as it exists, long before that; it drops its last capability to
/// mount (`CAP_SYS_ADMIN`, which no sandbox keeps) only after all of it, just before it
/// waits on `--block-fd`. Before then the sandbox's `/dev/pts` may not be where the
/// sandbox will see it, nor its user namespace the one the command will run in.
fn wait_until_built(
    pid: i32,
    monitor: u32,
    timeout: std::time::Duration,
) -> Result<(), SandboxError> {
    const CAP_SYS_ADMIN: u32 = 21;
    let deadline = std::time::Instant::now() + timeout;
    let path = format!("/proc/{pid}/status");
    loop {
        let status = std::fs::read_to_string(&path).map_err(|_| ended_while_building())?;
        if crate::pools::parent_in(&status) != Some(monitor) {
            return Err(ended_while_building());
        }
        let effective = status
            .lines()
            .find_map(|line| line.strip_prefix("CapEff:"))
            .and_then(|bits| u64::from_str_radix(bits.trim(), 16).ok())
            .ok_or_else(|| {
                SandboxError::Start(format!("cannot read the capabilities in {path}"))
            })?;
        if effective & (1 << CAP_SYS_ADMIN) == 0 {
            return Ok(());
        }
        if status.lines().any(|line| line.starts_with("State:\tZ")) {
            return Err(ended_while_building());
        }
        if std::time::Instant::now() >= deadline {
            return Err(SandboxError::Start(format!(
                "bwrap did not finish building the sandbox within {timeout:?}"
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn ended_while_building() -> SandboxError {
    SandboxError::Start("bwrap's child ended while it built the sandbox".into())
}

/// Everything `file` gives until its writers close it, within `timeout`.
fn read_to_end_within(
    file: std::fs::File,
    timeout: std::time::Duration,
) -> Result<Vec<u8>, SandboxError> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::io::Read;
    use std::os::fd::AsFd;
    let deadline = std::time::Instant::now() + timeout;
    let mut file = file;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(SandboxError::Start(format!(
                "bwrap did not create the sandbox's user namespace within {timeout:?}"
            )));
        }
        let millis = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(0) | Err(nix::Error::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(SandboxError::io("cannot wait for bwrap", e.into())),
        }
        match file.read(&mut chunk) {
            Ok(0) => return Ok(bytes),
            Ok(n) if bytes.len() + n <= 64 * 1024 => bytes.extend_from_slice(&chunk[..n]),
            Ok(_) => {
                return Err(SandboxError::Start(
                    "bwrap said too much on --info-fd".into(),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(SandboxError::io("cannot read from bwrap", e)),
        }
    }
}

/// The `"child-pid"` of bwrap's `--info-fd` JSON.
fn child_pid(info: &[u8]) -> Option<i32> {
    let value: serde_json::Value = serde_json::from_slice(info).ok()?;
    value["child-pid"]
        .as_i64()
        .and_then(|pid| i32::try_from(pid).ok())
        .filter(|pid| *pid > 1)
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
        let root = nix::unistd::geteuid().is_root();
        if root {
            // Root's agents run as a subordinate host uid of the agent's own; a
            // workspace an older version's sandbox left to root, or a podman sandbox
            // to the id its agents share, is handed over (see ownership.rs).
            let root = crate::ownership::Owner { uid: 0, gid: 0 };
            crate::ownership::hand_over(
                &spec.workspace,
                &[root, crate::oci::rootful_agent_owner()],
                crate::oci::agent_owner(&spec.agent),
            )?;
        }
        let gate = Gate::new(root)?;
        let owner = root.then(|| namespace_owner_for(&spec.agent)).flatten();
        let (uid, gid) = match root {
            true => (AGENT_ID, AGENT_ID),
            false => (
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            ),
        };
        let workdir = Workdir::create(&spec.ca_bundle)?;
        let etc = crate::etc_tree::prepare(
            Path::new("/etc"),
            crate::etc_tree::ETC_ALLOWED,
            &synthetic_etc(uid, gid),
            &std::env::temp_dir(),
        )?;
        let (control, sandbox_end) = crate::broker::channel()
            .map_err(|e| SandboxError::io("cannot create the sandbox's control channel", e))?;
        let (cgroup, mut reports) = Cgroup::create(&spec.limits);
        let (file_table, table_report) = crate::limits::claim_file_table(&spec.limits, &reports);
        reports.push(table_report);
        reports.extend(wall_time_report(&spec.limits));
        reports.push(crate::limits::open_files_report(&spec.limits));
        reports.extend(crate::runtime::workspace_report(
            &spec.limits,
            crate::volume::is_mount_point(&spec.workspace),
        ));
        let sources = MountSources::open(&spec.mounts)?;
        let shim = shim_argv(
            spec,
            &reports,
            crate::shim::Control::Inherited(sandbox_end.as_raw_fd()),
            root.then_some((AGENT_ID, AGENT_ID)),
            sources.expected.clone(),
        );
        let (options, shim) = self.args(spec, &workdir, etc.path(), shim, &gate, &sources);
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
        inherited.extend(gate.child_fds());
        inherited.extend(sources.fds.iter().map(|fd| fd.as_raw_fd()));
        // SAFETY: only async-signal-safe calls (fcntl, keyctl, enter_from_child's
        // open/write/close on prepared paths, setgroups, setresgid, setresuid) run
        // between fork and exec.
        unsafe {
            command.pre_exec(move || {
                inherit(&inherited)?;
                join_new_session_keyring();
                if let Some(procs) = &procs {
                    enter_from_child(procs)?;
                }
                match owner {
                    Some(owner) => become_owner(owner),
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
        drop(sources);
        // On failure the child is killed when dropped (kill_on_drop).
        let monitor = child
            .id()
            .ok_or_else(|| SandboxError::Start("bwrap ended at once".into()))?;
        gate.open(monitor, crate::oci::agent_owner(&spec.agent), owner)?;
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
            file_table,
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
    // A mount inside another would be made through the outer one's files, which the
    // agent may have written (a link there leads the inner mount anywhere).
    for (index, outer) in spec.mounts.iter().enumerate() {
        for inner in &spec.mounts[index + 1..] {
            if outer.destination.starts_with(&inner.destination)
                || inner.destination.starts_with(&outer.destination)
            {
                return Err(SandboxError::Start(format!(
                    "mounts may not lie inside one another ({} and {})",
                    outer.destination.display(),
                    inner.destination.display()
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod owner_tests {
    #[test]
    fn an_owner_id_another_user_may_hold_is_not_used() {
        let passwd = "root:x:0:0::/root:/bin/sh\nana:x:1879050000:1000::/home/ana:/bin/sh\n";
        assert!(super::id_held_by_another(passwd, 1879050000, true));
        assert!(!super::id_held_by_another(passwd, 1879050001, true));
        let subuid = "root:1879048192:65536\nana:1879050000:100\n";
        assert!(super::id_held_by_another(subuid, 1879050050, false));
        assert!(!super::id_held_by_another(subuid, 1879050100, false));
        // Root's own range is where the owners come from.
        assert!(!super::id_held_by_another(subuid, 1879049000, false));
    }
}
