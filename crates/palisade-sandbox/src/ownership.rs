//! Who owns an agent's workspace on the host, when palisade runs as root.
//!
//! Both kinds of sandbox run root's agents as an unprivileged subordinate host uid, so
//! their files belong to it: bubblewrap an id of each agent's own
//! ([`crate::oci::agent_owner`]), podman one id all its agents share
//! ([`crate::oci::rootful_agent_owner`]). Earlier versions ran a bubblewrap agent as the
//! host's uid 0, then as podman's shared id, so a workspace may belong to either: its
//! files are then handed over when a sandbox starts: every entry owned by the previous
//! owner is re-owned to the new one (user and group). Entries owned by anyone else are
//! left alone.
//!
//! The walk never follows a symbolic link and never leaves the workspace's filesystem
//! (descends with `openat(O_NOFOLLOW | O_DIRECTORY)`, changes with
//! `fchownat(AT_SYMLINK_NOFOLLOW)` relative to the directory it opened), so a link an
//! agent planted cannot make root change anything outside. A hard link cannot point
//! outside either: the workspace is its own mount in every sandbox, and the kernel
//! refuses links across mounts. Written by hand: it is a short walk whose safety rests
//! on exactly these flags, which a general-purpose crate does not promise.

use crate::SandboxError;
use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, Mode, SFlag};
use nix::unistd::{fchownat, Gid, Uid};
use std::os::fd::AsFd;
use std::path::Path;

/// A host user and group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// Makes `workspace` belong to `to` if its top directory belongs to one of `earlier`
/// (else nothing is done: the workspace is already `to`'s, or someone else's to sort
/// out); what that earlier owner owns in it is handed over.
pub(crate) fn hand_over(
    workspace: &Path,
    earlier: &[Owner],
    to: Owner,
) -> Result<(), SandboxError> {
    let failed = |e: nix::Error| {
        SandboxError::io(format!("cannot hand the workspace {} over to uid {} (it was used by another kind of sandbox)", workspace.display(), to.uid), e.into())
    };
    let top = Dir::open(
        workspace,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(failed)?;
    let stat = fstat(&top).map_err(failed)?;
    let Some(&from) = earlier
        .iter()
        .find(|owner| owner.uid == stat.st_uid && **owner != to)
    else {
        return Ok(());
    };
    walk(top, stat.st_dev, from, to, 1).map_err(failed)?;
    fchownat(
        nix::fcntl::AT_FDCWD,
        workspace,
        Some(Uid::from_raw(to.uid)),
        Some(Gid::from_raw(to.gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(failed)
}

/// Re-owns the entries of `dir` (not `dir` itself), depth first, down to the quota
/// walk's [`crate::quota::MAX_DEPTH`] (`depth`: `dir`'s level): each level holds two
/// descriptors and a stack frame of the process, and a tree nested deeper than that is
/// an agent's doing, not a workspace to hand over.
fn walk(mut dir: Dir, device: u64, from: Owner, to: Owner, depth: usize) -> nix::Result<()> {
    let mut subdirectories = Vec::new();
    let fd = dir
        .as_fd()
        .try_clone_to_owned()
        .map_err(|_| nix::Error::EBADF)?;
    for entry in dir.iter() {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        let stat = match fstatat(&fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            // Removed meanwhile (a sandbox of the agent may still run).
            Err(nix::Error::ENOENT) => continue,
            Err(e) => return Err(e),
        };
        if stat.st_dev != device {
            continue;
        }
        let kind = SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits());
        if kind == SFlag::S_IFDIR && depth < crate::quota::MAX_DEPTH {
            subdirectories.push(name.to_owned());
        }
        let uid = (stat.st_uid == from.uid).then(|| Uid::from_raw(to.uid));
        let gid = (stat.st_gid == from.gid).then(|| Gid::from_raw(to.gid));
        if uid.is_some() || gid.is_some() {
            match fchownat(&fd, name, uid, gid, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(()) | Err(nix::Error::ENOENT) => {}
                Err(e) => return Err(e),
            }
        }
    }
    for name in subdirectories {
        let child = match Dir::openat(
            &fd,
            name.as_c_str(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(child) => child,
            // Replaced by a link or removed meanwhile: nothing of ours to walk.
            Err(nix::Error::ENOENT | nix::Error::ELOOP | nix::Error::ENOTDIR) => continue,
            Err(e) => return Err(e),
        };
        walk(child, device, from, to, depth + 1)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn hands_over_only_the_previous_owners_entries_and_never_follows_links() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPING: changing owners needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let workspace = dir.path().join("workspace");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(workspace.join("a/b")).unwrap();
        std::fs::write(workspace.join("a/b/file"), "x").unwrap();
        std::fs::write(&outside, "host file").unwrap();
        std::os::unix::fs::symlink(&outside, workspace.join("a/link")).unwrap();
        std::os::unix::fs::symlink(dir.path(), workspace.join("dirlink")).unwrap();
        std::fs::write(workspace.join("someone-elses"), "y").unwrap();
        std::os::unix::fs::chown(workspace.join("someone-elses"), Some(4242), Some(4242)).unwrap();
        let root = Owner { uid: 0, gid: 0 };
        let agent = Owner {
            uid: 1_879_049_192,
            gid: 1_879_049_192,
        };
        hand_over(&workspace, &[root], agent).unwrap();
        for path in ["", "a", "a/b", "a/b/file"] {
            let meta = std::fs::symlink_metadata(workspace.join(path)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (agent.uid, agent.gid), "{path}");
        }
        // The links themselves changed hands; what they point at did not.
        assert_eq!(
            std::fs::symlink_metadata(workspace.join("a/link"))
                .unwrap()
                .uid(),
            agent.uid
        );
        assert_eq!(std::fs::metadata(&outside).unwrap().uid(), 0);
        assert_eq!(std::fs::metadata(dir.path()).unwrap().uid(), 0);
        assert_eq!(
            std::fs::metadata(workspace.join("someone-elses"))
                .unwrap()
                .uid(),
            4242
        );
        // To another agent's id, from whichever earlier owner holds it.
        let other = Owner {
            uid: agent.uid + 1,
            gid: agent.gid + 1,
        };
        hand_over(&workspace, &[root, agent], other).unwrap();
        let meta = std::fs::metadata(workspace.join("a/b/file")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (other.uid, other.gid));
        // And back.
        hand_over(&workspace, &[other], root).unwrap();
        assert_eq!(
            std::fs::metadata(workspace.join("a/b/file")).unwrap().uid(),
            0
        );
        // A workspace that is neither's is left alone.
        hand_over(&workspace, &[agent], root).unwrap();
        assert_eq!(
            std::fs::metadata(workspace.join("someone-elses"))
                .unwrap()
                .uid(),
            4242
        );
    }
}
