//! The kernel's per-user pools, bounded per sandbox.
//!
//! Some kernel resources are counted per user, not per cgroup: inotify instances and
//! watches, fanotify groups and marks. What a process in a user namespace holds is
//! counted in its namespace and in every namespace above it, where it counts against
//! the user who created that namespace: for a bubblewrap sandbox, the user running
//! palisade (or root). Unbounded, one agent could take all of that user's inotify
//! instances (128 by default) and leave every other sandbox, the host and the user's
//! other programs without any (file watchers, `tail -f`, systemd as root).
//!
//! Pseudo-terminals are one pool for the machine (`kernel.pty.max`, 4,096 by default,
//! of which all but `kernel.pty.reserve` are shared by every devpts instance but the
//! host's own). bwrap mounts the sandbox's `/dev/pts` as an instance of its own but
//! without a maximum, so one sandbox could take every terminal the next sandbox, a
//! container or `podman exec -t` needs. The same child joins the sandbox's mount
//! namespace and gives its `/dev/pts` a maximum ([`PTYS_PER_SANDBOX`]).
//!
//! Each user namespace has maxima of its own (`/proc/sys/user/*`, unlimited in a new
//! one) that only a process with `CAP_SYS_RESOURCE` in it may set. The parent owns
//! the sandbox's namespace, so it sets them from a short-lived child that joins the
//! namespace (`setns`), while bwrap's child waits to start the shim (see
//! `bwrap.rs`'s `Gate`). For podman, whose devpts options have no `ptmxmode`, a
//! `createRuntime` hook does the same before the container's first process starts
//! (see [`bound_oci_container`] and oci.rs). Nothing in the sandbox holds a capability
//! to raise them.
//!
//! Hand-written: no crate sets another namespace's sysctls or reconfigures another
//! namespace's mount, and this is two `setns`, an `open` and a `write` per file, and an
//! `fspick` and a few `fsconfig` calls, in a child forked for it (a threaded process
//! may not join a user namespace).

use crate::SandboxError;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The maxima each sandbox's user namespace gets, `/proc/sys/user/NAME`. A sandbox at
/// its maxima holds an eighth of a user's default inotify instances (128) and less of
/// the watches and fanotify marks (sized from memory); enough for a few file watchers.
pub(crate) const PER_SANDBOX: [(&str, u64); 4] = [
    ("max_inotify_instances", 16),
    ("max_inotify_watches", 16_384),
    ("max_fanotify_groups", 4),
    ("max_fanotify_marks", 8_192),
];

/// How many pseudo-terminals one sandbox may hold at once: a few shells, editors and
/// `script` sessions, a fiftieth of the machine's shared pool by default.
pub(crate) const PTYS_PER_SANDBOX: u32 = 64;

/// The group podman gives the terminals of a container's `/dev/pts` (`tty`).
const OCI_TERMINAL_GROUP: u32 = 5;

/// The options the sandbox's `/dev/pts` is reconfigured with. A reconfiguration sets
/// every option anew, so these repeat what the runtime mounts it with (`mode=620`,
/// `ptmxmode=0666`, and podman's `gid`) beside the maximum.
fn devpts_options(gid: Option<u32>) -> Vec<(CString, CString)> {
    let option = |key: &str, value: String| {
        (
            CString::new(key).expect("no NUL in a constant"),
            CString::new(value).expect("no NUL in a number"),
        )
    };
    let mut options = vec![
        option("mode", "620".into()),
        option("ptmxmode", "666".into()),
        option("max", PTYS_PER_SANDBOX.to_string()),
    ];
    options.extend(gid.map(|gid| option("gid", gid.to_string())));
    options
}

/// Sets [`PER_SANDBOX`] in the user namespace of process `pid` (skipping maxima this
/// kernel does not have) and [`PTYS_PER_SANDBOX`] on its `/dev/pts`.
///
/// Two children do it: the sandbox's process may be in a user namespace nested in the
/// one that owns its mounts (bwrap's `--disable-userns`), and a process that joined the
/// inner one holds no capability over the outer one's mounts.
///
/// `pid` must be a child of `parent` (bwrap's own process) once its namespaces are
/// open, so they are the sandbox's even if that process died and its pid was reused.
pub(crate) fn bound(pid: i32, parent: u32) -> Result<(), SandboxError> {
    let namespaces = Namespaces::of(pid)?;
    if !child_of(pid, parent) {
        return Err(SandboxError::Start(
            "the sandbox's process ended before its kernel pools were bounded".into(),
        ));
    }
    // Joining a mount namespace moves a process to its root: bwrap's is the sandbox's.
    namespaces.bound(c"/dev/pts", &devpts_options(None))
}

/// What an OCI runtime tells a hook about the container (its state, on stdin).
#[derive(serde::Deserialize)]
struct ContainerState {
    pid: i32,
    bundle: std::path::PathBuf,
}

/// As [`bound`], for a podman container, from a `createRuntime` hook: podman's devpts
/// takes no maximum and no `ptmxmode` (and the agent is not root in it), and the hook
/// runs as the caller, in the engine's namespaces, while the container's first process
/// waits with its mounts made and its root not yet switched (so its `/dev/pts` is
/// under the bundle's root path). `state` is the runtime's state JSON.
pub fn bound_oci_container(state: &str) -> Result<(), SandboxError> {
    let bad_state = |what: String| SandboxError::Start(format!("the runtime's state: {what}"));
    let state: ContainerState =
        serde_json::from_str(state).map_err(|e| bad_state(format!("unreadable ({e})")))?;
    // The runtime runs this hook from the process that started the container's first
    // process, so that process is a sibling: anything else named on stdin (by someone
    // running the hook by hand, as root perhaps) is not a container being started here.
    let namespaces = Namespaces::of(state.pid)?;
    if !child_of(state.pid, nix::unistd::getppid().as_raw() as u32) {
        return Err(bad_state(format!(
            "process {} was not started by the runtime that runs this hook",
            state.pid
        )));
    }
    let config = std::fs::read_to_string(state.bundle.join("config.json"))
        .map_err(|e| SandboxError::io("cannot read the container's config.json", e))?;
    let root = serde_json::from_str::<serde_json::Value>(&config)
        .ok()
        .and_then(|config| {
            config["root"]["path"]
                .as_str()
                .map(std::path::PathBuf::from)
        })
        .ok_or_else(|| bad_state("config.json names no root path".into()))?;
    let devpts = CString::new(
        state
            .bundle
            .join(root)
            .join("dev/pts")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .map_err(|_| bad_state("the root path holds a NUL".into()))?;
    namespaces.bound(&devpts, &devpts_options(Some(OCI_TERMINAL_GROUP)))
}

/// A sandbox's user and mount namespaces, opened.
struct Namespaces {
    user: std::fs::File,
    mounts: std::fs::File,
}

impl Namespaces {
    fn of(pid: i32) -> Result<Namespaces, SandboxError> {
        Ok(Namespaces {
            user: std::fs::File::open(format!("/proc/{pid}/ns/user"))
                .map_err(|e| SandboxError::io("cannot open the sandbox's user namespace", e))?,
            mounts: std::fs::File::open(format!("/proc/{pid}/ns/mnt"))
                .map_err(|e| SandboxError::io("cannot open the sandbox's mount namespace", e))?,
        })
    }

    /// Sets [`PER_SANDBOX`] in the user namespace, and `devpts` on the terminals'
    /// filesystem mounted at `pts` (a path in the mount namespace).
    fn bound(
        &self,
        pts: &std::ffi::CStr,
        devpts: &[(CString, CString)],
    ) -> Result<(), SandboxError> {
        let (namespace, mounts) = (&self.user, &self.mounts);
        let mounts_owner = owner_of(mounts)?;
        let settings: Vec<(&str, CString, String)> = PER_SANDBOX
            .iter()
            .map(|(name, value)| (*name, format!("/proc/sys/user/{name}"), value.to_string()))
            .filter(|(_, path, _)| std::path::Path::new(path).exists())
            .filter_map(|(name, path, value)| Some((name, CString::new(path).ok()?, value)))
            .collect();
        let fd = namespace.as_raw_fd();
        // SAFETY: the child makes only system calls (setns, open, write, close).
        match in_child(|| unsafe { set_maxima(fd, &settings) })? {
            0 => {}
            1 => return Err(SandboxError::Start(
                "cannot join the sandbox's user namespace to bound its inotify and fanotify pools"
                    .into(),
            )),
            code => {
                let name = settings
                    .get(usize::try_from(code % 100).unwrap_or(usize::MAX))
                    .map_or("?", |(name, _, _)| *name);
                return Err(SandboxError::Start(format!(
                    "cannot set user.{name} in the sandbox's user namespace"
                )));
            }
        }
        let (owner_fd, mounts_fd) = (mounts_owner.as_raw_fd(), mounts.as_raw_fd());
        // SAFETY: the child makes only system calls (setns, fspick, fsconfig, close).
        match in_child(|| unsafe { bound_terminals(owner_fd, mounts_fd, pts, devpts) })? {
            0 => Ok(()),
            1 | 2 => Err(SandboxError::Start(
                "cannot join the sandbox's mount namespace to bound its pseudo-terminals".into(),
            )),
            code => Err(SandboxError::Start(format!(
                "cannot give the sandbox's /dev/pts a maximum of {PTYS_PER_SANDBOX} terminals \
             (step {code})"
            ))),
        }
    }
}

/// Whether process `pid` is (still) a child of `parent`.
pub(crate) fn child_of(pid: i32, parent: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| parent_in(&status))
        == Some(parent)
}

/// The parent's pid in the text of a `/proc/PID/status`.
pub(crate) fn parent_in(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("PPid:"))
        .and_then(|pid| pid.trim().parse().ok())
}

/// The user namespace that owns the namespace `namespace` (`NS_GET_USERNS`).
fn owner_of(namespace: &std::fs::File) -> Result<OwnedFd, SandboxError> {
    const NS_GET_USERNS: nix::libc::c_ulong = 0xb701;
    // SAFETY: the ioctl takes no argument and returns a new descriptor or -1.
    let fd = unsafe { nix::libc::ioctl(namespace.as_raw_fd(), NS_GET_USERNS as _) };
    if fd < 0 {
        return Err(SandboxError::io(
            "cannot find the user namespace that owns the sandbox's mounts",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Runs `work` in a forked child and returns its result as the child's exit code.
/// `work` must make system calls only: the child of a threaded process may not
/// allocate or take a lock.
fn in_child(work: impl FnOnce() -> i32) -> Result<i32, SandboxError> {
    // SAFETY: the child runs `work` (system calls only, by contract) and `_exit`s.
    let child = match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            let code = work();
            unsafe { nix::libc::_exit(code) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => child,
        Err(e) => {
            return Err(SandboxError::io(
                "cannot fork to bound the sandbox",
                e.into(),
            ))
        }
    };
    let status = loop {
        match nix::sys::wait::waitpid(child, None) {
            Err(nix::Error::EINTR) => continue,
            other => break other,
        }
    };
    match status {
        Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => Ok(code),
        other => Err(SandboxError::Start(format!(
            "the process bounding the sandbox's kernel pools ended badly: {other:?}"
        ))),
    }
}

/// In a forked child: joins the user namespace `fd` and writes each setting. Exit
/// codes: 0 done, 1 `setns` failed, 100 + i or 200 + i the i-th file could not be
/// opened or written.
///
/// # Safety
/// Only in a child just forked; makes system calls only.
unsafe fn set_maxima(fd: i32, settings: &[(&str, CString, String)]) -> i32 {
    use nix::libc;
    if libc::setns(fd, libc::CLONE_NEWUSER) != 0 {
        return 1;
    }
    for (index, (_, path, value)) in settings.iter().enumerate() {
        let index = index as i32;
        let file = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if file < 0 {
            return 100 + index;
        }
        let written = libc::write(file, value.as_ptr().cast(), value.len());
        libc::close(file);
        if written != value.len() as isize {
            return 200 + index;
        }
    }
    0
}

/// `fsconfig` commands and `fspick` flags (linux/mount.h), not exported by `libc`.
const FSCONFIG_SET_STRING: nix::libc::c_uint = 1;
const FSCONFIG_CMD_RECONFIGURE: nix::libc::c_uint = 7;
const FSPICK_CLOEXEC: nix::libc::c_uint = 1;

/// In a forked child: joins the user namespace `owner` that owns the mount namespace
/// `mounts`, then `mounts`, and reconfigures the terminals' filesystem at `pts` with
/// `devpts`. Exit codes:
/// 0 done, 1 or 2 a `setns` failed, 3 `fspick` failed, 4 + i the i-th option was
/// refused, 8 the reconfiguration failed.
///
/// Only the superblock's options change (`fspick`, not `mount(MS_REMOUNT)`): the
/// mount's own flags (`nosuid`, `noexec`) stay as the runtime set them.
///
/// # Safety
/// Only in a child just forked; makes system calls only.
unsafe fn bound_terminals(
    owner: i32,
    mounts: i32,
    pts: &std::ffi::CStr,
    devpts: &[(CString, CString)],
) -> i32 {
    use nix::libc;
    if libc::setns(owner, libc::CLONE_NEWUSER) != 0 {
        return 1;
    }
    if libc::setns(mounts, libc::CLONE_NEWNS) != 0 {
        return 2;
    }
    let context = libc::syscall(
        libc::SYS_fspick,
        libc::AT_FDCWD,
        pts.as_ptr(),
        FSPICK_CLOEXEC,
    );
    if context < 0 {
        return 3;
    }
    let context = context as i32;
    for (index, (key, value)) in devpts.iter().enumerate() {
        let set = libc::syscall(
            libc::SYS_fsconfig,
            context,
            FSCONFIG_SET_STRING,
            key.as_ptr(),
            value.as_ptr(),
            0,
        );
        if set != 0 {
            return 4 + index as i32;
        }
    }
    let reconfigured = libc::syscall(
        libc::SYS_fsconfig,
        context,
        FSCONFIG_CMD_RECONFIGURE,
        std::ptr::null::<libc::c_char>(),
        std::ptr::null::<libc::c_void>(),
        0,
    );
    libc::close(context);
    if reconfigured != 0 {
        return 8;
    }
    0
}
