//! The workspace quota: how much disk an agent's workspace may use, so no agent can fill
//! the filesystem that also holds the store.
//!
//! Two mechanisms, both usable by any user on any filesystem:
//!
//! - the command runs with `RLIMIT_FSIZE` at the quota, so no single file grows past it
//!   (the write fails with `EFBIG`; a process that does not ignore `SIGXFSZ` is
//!   stopped by it);
//! - a watcher in the parent measures the workspace (allocated blocks, each inode once,
//!   not following links, not leaving its filesystem) from the start and then at an
//!   interval that grows with the cost of a walk (250 ms to 30 s, at most ~5 % of a
//!   core), and stops the sandbox once the workspace reaches the quota, or once the
//!   filesystem holding it has less than [`DISK_RESERVE`] free, or fewer free inodes
//!   than [`inode_reserve`] keeps (empty files use no blocks, so a workspace of many
//!   of them passes the quota while the store can no longer create a file), whichever
//!   comes first.
//!
//! Many files written quickly can overshoot the quota by what is written between two
//! measurements; the disk reserve bounds what that can cost the store. Project quotas
//! and size-limited filesystems (a loop-mounted image per workspace) would refuse the
//! write itself, but need root and a filesystem prepared for them; see docs/sandbox.md.

use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, Mode, SFlag};
use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A workspace quota when an agent has none set: 4 GiB.
pub const DEFAULT_WORKSPACE_QUOTA: u64 = 4 << 30;
/// Free space the watcher keeps on the workspace's filesystem, for the store and the
/// rest of the host.
pub const DISK_RESERVE: u64 = 256 << 20;
/// Free inodes the watcher keeps on a filesystem of `total` inodes: 1 % of them, at
/// least 1024. (A filesystem that makes inodes as needed reports none: nothing kept.)
pub fn inode_reserve(total: u64) -> u64 {
    (total / 100).max(1024)
}
const FASTEST: Duration = Duration::from_millis(250);
const SLOWEST: Duration = Duration::from_secs(30);
/// The interval is this many times the last walk's duration.
const COST_FACTOR: u32 = 20;

/// Why the watcher stopped a sandbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkspaceFull {
    /// The workspace used `used` bytes of its `limit`.
    Quota { used: u64, limit: u64 },
    /// The filesystem holding the workspace had only `free` bytes left.
    Disk { free: u64 },
    /// The filesystem holding the workspace had only `free` of its `total` inodes left.
    Inodes { free: u64, total: u64 },
}

impl std::fmt::Display for WorkspaceFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::limits::format_bytes;
        let format_bytes = |bytes: u64| match bytes {
            b if b % (1 << 20) == 0 => format_bytes(b),
            b if b >= 1 << 30 => format!("{:.1}G", b as f64 / (1u64 << 30) as f64),
            b => format!("{:.1}M", b as f64 / (1u64 << 20) as f64),
        };
        match self {
            WorkspaceFull::Quota { used, limit } => write!(
                f,
                "the workspace reached its quota ({} used of {})",
                format_bytes(*used),
                format_bytes(*limit)
            ),
            WorkspaceFull::Disk { free } => write!(
                f,
                "the disk holding the workspace is nearly full ({} free; palisade keeps {} for the store)",
                format_bytes(*free),
                format_bytes(DISK_RESERVE)
            ),
            WorkspaceFull::Inodes { free, total } => write!(
                f,
                "the disk holding the workspace is nearly out of inodes (files): {free} of {total} free; palisade keeps {} for the store",
                inode_reserve(*total)
            ),
        }
    }
}

/// Resolves when `workspace` reaches `limit` bytes or its disk runs low; never if it
/// does neither.
pub(crate) async fn watch(workspace: PathBuf, limit: u64) -> WorkspaceFull {
    loop {
        let path = workspace.clone();
        let measured = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let used = usage(&path);
            // The disk that holds the workspace folder's parent: the store's, also
            // when the workspace is an image mounted there (whose own free space is
            // the image's, bounded by its size).
            let free = free_space(path.parent().unwrap_or(&path));
            (used, free, started.elapsed())
        })
        .await;
        let Ok((used, free, took)) = measured else {
            return std::future::pending().await;
        };
        if let Some(used) = used {
            if used >= limit {
                return WorkspaceFull::Quota { used, limit };
            }
        }
        if let Some(space) = free {
            if space.bytes < DISK_RESERVE {
                return WorkspaceFull::Disk { free: space.bytes };
            }
            if space.inodes_total > 0 && space.inodes < inode_reserve(space.inodes_total) {
                return WorkspaceFull::Inodes {
                    free: space.inodes,
                    total: space.inodes_total,
                };
            }
        }
        tokio::time::sleep((took * COST_FACTOR).clamp(FASTEST, SLOWEST)).await;
    }
}

/// Bytes allocated to everything under `root` (not following links, not leaving its
/// filesystem, each inode once); `None` if `root` cannot be read at all.
///
/// The walk descends with `openat(O_NOFOLLOW | O_DIRECTORY)` relative to the folder it
/// has open, so an agent swapping a folder for a link while it is measured cannot send
/// it (possibly running as root) anywhere outside the workspace.
pub fn usage(root: &Path) -> Option<u64> {
    let top = open_directory(None, root).ok()?;
    let stat = fstat(&top).ok()?;
    let mut walk = Walk {
        device: stat.st_dev,
        total: allocated(&stat),
        seen: HashSet::new(),
    };
    walk.directory(top);
    Some(walk.total)
}

struct Walk {
    device: u64,
    total: u64,
    /// Inodes with more than one link, counted once.
    seen: HashSet<u64>,
}

impl Walk {
    fn directory(&mut self, dir: Dir) {
        let mut pending = vec![dir];
        while let Some(mut dir) = pending.pop() {
            let Ok(fd) = dir.as_fd().try_clone_to_owned() else {
                continue;
            };
            let names: Vec<std::ffi::CString> = dir
                .iter()
                .flatten()
                .map(|entry| entry.file_name().to_owned())
                .filter(|name| name.as_bytes() != b"." && name.as_bytes() != b"..")
                .collect();
            for name in names {
                let Ok(stat) = fstatat(&fd, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) else {
                    continue;
                };
                if stat.st_dev != self.device {
                    continue;
                }
                let is_dir = stat.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits();
                if stat.st_nlink > 1 && !is_dir && !self.seen.insert(stat.st_ino) {
                    continue;
                }
                self.total += allocated(&stat);
                if is_dir {
                    match open_directory(Some(&fd), Path::new(OsStr::from_bytes(name.as_bytes()))) {
                        Ok(child) => pending.push(child),
                        Err(nix::Error::EACCES) => {
                            // A folder the agent made unreadable still counts: it is
                            // this user's, so open it up for its owner and retry.
                            if make_readable(&fd, &name).is_ok() {
                                if let Ok(child) = open_directory(
                                    Some(&fd),
                                    Path::new(OsStr::from_bytes(name.as_bytes())),
                                ) {
                                    pending.push(child);
                                }
                            }
                        }
                        Err(_) => {}
                    }
                }
            }
        }
    }
}

fn allocated(stat: &nix::sys::stat::FileStat) -> u64 {
    (stat.st_blocks as u64).saturating_mul(512)
}

/// Opens a directory without following a link, relative to `parent` if given.
fn open_directory(parent: Option<&OwnedFd>, path: &Path) -> nix::Result<Dir> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match parent {
        Some(parent) => Dir::openat(parent, path, flags, Mode::empty()),
        None => Dir::open(path, flags, Mode::empty()),
    }
}

/// Adds `u+rx` to the folder `name` in `parent`, if it is one (not a link) and this
/// process owns it; the change goes through a descriptor of exactly that folder.
fn make_readable(parent: &OwnedFd, name: &std::ffi::CStr) -> nix::Result<()> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = nix::fcntl::openat(parent, name, flags, Mode::empty())?;
    let stat = fstat(&fd)?;
    if stat.st_uid != nix::unistd::geteuid().as_raw() {
        return Err(nix::Error::EPERM);
    }
    // fchmod refuses O_PATH descriptors; the descriptor's /proc entry names exactly
    // the folder it holds.
    let mode = Mode::from_bits_truncate(stat.st_mode | 0o500);
    nix::sys::stat::fchmodat(
        nix::fcntl::AT_FDCWD,
        format!("/proc/self/fd/{}", fd.as_raw_fd()).as_str(),
        mode,
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
}

/// What is left on a filesystem for an unprivileged writer.
struct Free {
    bytes: u64,
    inodes: u64,
    inodes_total: u64,
}

fn free_space(path: &Path) -> Option<Free> {
    let stat = nix::sys::statvfs::statvfs(path).ok()?;
    Some(Free {
        bytes: stat.blocks_available() as u64 * stat.fragment_size() as u64,
        inodes: stat.files_available() as u64,
        inodes_total: stat.files() as u64,
    })
}

/// Parses a quota: `512M`, `4G`, `1.5G`, bytes; at least 1M.
pub fn parse_quota(text: &str) -> Result<u64, crate::SandboxError> {
    let bad = |reason: &str| crate::SandboxError::BadLimit {
        what: "workspace quota",
        value: text.to_string(),
        reason: reason.to_string(),
    };
    let bytes = crate::limits::parse_size(text).map_err(|reason| bad(&reason))?;
    if bytes < (1 << 20) {
        return Err(bad("use at least 1M"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_blocks_once_per_inode_and_not_through_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("workspace");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        let empty = usage(&root).unwrap();
        std::fs::write(root.join("sub/a"), vec![1u8; 1 << 20]).unwrap();
        std::fs::hard_link(root.join("sub/a"), root.join("b")).unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, vec![1u8; 4 << 20]).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("dirlink")).unwrap();
        let used = usage(&root).unwrap() - empty;
        assert!((1 << 20..(1 << 20) + (64 << 10)).contains(&used), "{used}");
    }

    #[test]
    fn a_folder_made_unreadable_is_still_counted() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let hidden = dir.path().join("hidden");
        std::fs::create_dir(&hidden).unwrap();
        std::fs::write(hidden.join("f"), vec![1u8; 2 << 20]).unwrap();
        std::fs::set_permissions(&hidden, std::fs::Permissions::from_mode(0o000)).unwrap();
        assert!(usage(dir.path()).unwrap() >= 2 << 20);
    }

    #[tokio::test]
    async fn the_watcher_fires_at_the_quota() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let watcher = tokio::spawn(watch(root.clone(), 3 << 20));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!watcher.is_finished());
        for i in 0..4 {
            std::fs::write(root.join(format!("f{i}")), vec![1u8; 1 << 20]).unwrap();
        }
        let full = tokio::time::timeout(Duration::from_secs(10), watcher)
            .await
            .expect("fired")
            .unwrap();
        assert!(
            matches!(full, WorkspaceFull::Quota { used, limit } if used >= limit),
            "{full:?}"
        );
    }

    /// Empty files use no blocks: a workspace of many stays under its quota while the
    /// filesystem runs out of inodes, and the store could no longer create a file.
    #[tokio::test]
    async fn the_watcher_fires_before_the_disk_runs_out_of_inodes() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPING: a filesystem with few inodes is mounted only as root");
            return;
        }
        struct Unmount(PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        let dir = tempfile::tempdir().unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            // Larger than the disk reserve, so only the inodes can run short.
            Some("size=1g,nr_inodes=2048"),
        )
        .unwrap();
        let _unmount = Unmount(dir.path().to_path_buf());
        let workspace = dir.path().join("agents/a/workspace");
        std::fs::create_dir_all(&workspace).unwrap();
        let watcher = tokio::spawn(watch(workspace.clone(), 1 << 30));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!watcher.is_finished());
        for i in 0..1100 {
            std::fs::write(workspace.join(format!("f{i}")), b"").unwrap();
        }
        let full = tokio::time::timeout(Duration::from_secs(10), watcher)
            .await
            .expect("fired")
            .unwrap();
        assert!(
            matches!(full, WorkspaceFull::Inodes { free, total: 2048 } if free < 1024),
            "{full:?}"
        );
        assert!(full.to_string().contains("out of inodes"), "{full}");
    }

    #[test]
    fn quotas_parse() {
        assert_eq!(parse_quota("64M").unwrap(), 64 << 20);
        assert_eq!(parse_quota("4G").unwrap(), 4 << 30);
        for bad in ["", "0", "512k", "x"] {
            assert!(parse_quota(bad).is_err(), "{bad}");
        }
    }
}
