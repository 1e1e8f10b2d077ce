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
//! Each user namespace has maxima of its own (`/proc/sys/user/*`, unlimited in a new
//! one) that only a process with `CAP_SYS_RESOURCE` in it may set. The parent owns
//! the sandbox's namespace, so it sets them from a short-lived child that joins the
//! namespace (`setns`), while bwrap's child waits to start the shim (see
//! `bwrap.rs`'s `Gate`). Nothing in the sandbox holds a capability to raise them.
//!
//! Hand-written: no crate sets another namespace's sysctls, and this is one `setns`,
//! then an `open` and a `write` per file, in a child forked for it (a threaded process
//! may not join a user namespace).

use crate::SandboxError;
use std::ffi::CString;
use std::os::fd::AsRawFd;

/// The maxima each sandbox's user namespace gets, `/proc/sys/user/NAME`. A sandbox at
/// its maxima holds an eighth of a user's default inotify instances (128) and less of
/// the watches and fanotify marks (sized from memory); enough for a few file watchers.
pub(crate) const PER_SANDBOX: [(&str, u64); 4] = [
    ("max_inotify_instances", 16),
    ("max_inotify_watches", 16_384),
    ("max_fanotify_groups", 4),
    ("max_fanotify_marks", 8_192),
];

/// Sets [`PER_SANDBOX`] in the user namespace of process `pid` (skipping maxima this
/// kernel does not have).
pub(crate) fn bound(pid: i32) -> Result<(), SandboxError> {
    let namespace = std::fs::File::open(format!("/proc/{pid}/ns/user"))
        .map_err(|e| SandboxError::io("cannot open the sandbox's user namespace", e))?;
    let settings: Vec<(&str, CString, String)> = PER_SANDBOX
        .iter()
        .map(|(name, value)| (*name, format!("/proc/sys/user/{name}"), value.to_string()))
        .filter(|(_, path, _)| std::path::Path::new(path).exists())
        .filter_map(|(name, path, value)| Some((name, CString::new(path).ok()?, value)))
        .collect();
    let fd = namespace.as_raw_fd();
    // SAFETY: the forked child is single-threaded and makes only system calls (setns,
    // open, write, close, _exit) on memory prepared before the fork.
    let child = match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            let code = unsafe { set_in_child(fd, &settings) };
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
        Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => Ok(()),
        Ok(nix::sys::wait::WaitStatus::Exited(_, 1)) => Err(SandboxError::Start(
            "cannot join the sandbox's user namespace to bound its inotify and fanotify pools"
                .into(),
        )),
        Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => {
            let name = settings
                .get(usize::try_from(code % 100).unwrap_or(usize::MAX))
                .map_or("?", |(name, _, _)| *name);
            Err(SandboxError::Start(format!(
                "cannot set user.{name} in the sandbox's user namespace"
            )))
        }
        other => Err(SandboxError::Start(format!(
            "the process bounding the sandbox's kernel pools ended badly: {other:?}"
        ))),
    }
}

/// In the forked child: joins the namespace `fd`, writes each setting. Exit codes: 0
/// done, 1 `setns` failed, 100 + i or 200 + i the i-th file could not be opened or
/// written.
///
/// # Safety
/// Only in a child just forked; makes system calls only.
unsafe fn set_in_child(fd: i32, settings: &[(&str, CString, String)]) -> i32 {
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
