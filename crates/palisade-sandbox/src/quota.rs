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
use std::os::fd::AsRawFd;
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
    /// Folders in the workspace were nested deeper than [`MAX_DEPTH`] levels, below
    /// which the watcher does not measure.
    Nesting,
    /// The workspace itself could not be read [`UNMEASURED_LIMIT`] times in a row.
    Unreadable,
}

/// Measurements in a row that may fail before the sandbox is stopped.
pub const UNMEASURED_LIMIT: u32 = 3;

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
            WorkspaceFull::Unreadable => write!(
                f,
                "the workspace cannot be read, so its quota cannot be measured"
            ),
            WorkspaceFull::Nesting => write!(
                f,
                "the workspace has folders nested more than {MAX_DEPTH} levels deep, which its quota cannot measure"
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
    let mut unmeasured = 0;
    loop {
        let path = workspace.clone();
        let measured = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let used = measure(&path);
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
        // A workspace that cannot be measured at all, time after time, is stopped: its
        // agent could otherwise write past any quota.
        unmeasured = match used {
            Some(_) => 0,
            None => unmeasured + 1,
        };
        if unmeasured >= UNMEASURED_LIMIT {
            return WorkspaceFull::Unreadable;
        }
        if let Some(used) = used {
            if used.bytes >= limit {
                return WorkspaceFull::Quota {
                    used: used.bytes,
                    limit,
                };
            }
            if used.too_deep {
                return WorkspaceFull::Nesting;
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
    measure(root).map(|measured| measured.bytes)
}

/// What one walk of a workspace found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Measured {
    /// Bytes allocated to what the walk reached.
    bytes: u64,
    /// Folders were nested deeper than [`MAX_DEPTH`], and what is in them was not
    /// measured.
    too_deep: bool,
}

/// [`usage`], also saying whether the workspace was nested too deeply to measure whole.
pub(crate) fn measure(root: &Path) -> Option<Measured> {
    let top = match open_directory(None, root) {
        Ok(top) => top,
        // The agent owns its workspace where no root starts sandboxes, and may take
        // its own read permission away (mode 300): opened up for its owner, as a
        // folder inside it is.
        Err(nix::Error::EACCES) => {
            let parent = open_directory(None, root.parent()?).ok()?;
            let name = std::ffi::CString::new(root.file_name()?.as_bytes()).ok()?;
            make_readable(&parent, &name).ok()?;
            open_directory(None, root).ok()?
        }
        Err(_) => return None,
    };
    let stat = fstat(&top).ok()?;
    let mut walk = Walk {
        device: stat.st_dev,
        total: allocated(&stat),
        seen: HashSet::new(),
        too_deep: false,
    };
    walk.tree(top);
    Some(Measured {
        bytes: walk.total,
        too_deep: walk.too_deep,
    })
}

/// The deepest folder level the walk opens (the workspace itself is level 1). The walk
/// holds open the folders on the path to the one it reads, so this bounds the
/// descriptors one walk holds in the process that runs it (the host, for every agent);
/// a tree nested deeper is reported, and the watcher stops its sandbox.
pub const MAX_DEPTH: usize = 128;

struct Walk {
    device: u64,
    total: u64,
    /// Inodes with more than one link, counted once.
    seen: HashSet<u64>,
    too_deep: bool,
}

/// A folder being walked: open, with the names of the folders in it still to visit.
struct Frame {
    dir: Dir,
    folders: Vec<std::ffi::CString>,
}

impl Walk {
    /// Depth first: a folder is opened when it is visited and closed once everything
    /// under it has been, so a workspace of many folders side by side costs one
    /// descriptor per level, not one per folder (opening them all at once let an agent
    /// with 30 000 empty folders use up every descriptor of the host process).
    fn tree(&mut self, top: Dir) {
        let mut stack = vec![self.read(top)];
        loop {
            let depth = stack.len();
            let Some(frame) = stack.last_mut() else {
                break;
            };
            let Some(name) = frame.folders.pop() else {
                stack.pop();
                continue;
            };
            if depth >= MAX_DEPTH {
                self.too_deep = true;
                continue;
            }
            if let Some(child) = open_child(&frame.dir, &name) {
                let child = self.read(child);
                stack.push(child);
            }
        }
    }

    /// Counts what is in `dir` (each entry, not following links, not leaving the
    /// filesystem, inodes with several links once) and lists the folders in it.
    fn read(&mut self, mut dir: Dir) -> Frame {
        let names: Vec<std::ffi::CString> = dir
            .iter()
            .flatten()
            .map(|entry| entry.file_name().to_owned())
            .filter(|name| name.as_bytes() != b"." && name.as_bytes() != b"..")
            .collect();
        let mut folders = Vec::new();
        for name in names {
            let Ok(stat) = fstatat(&dir, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) else {
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
                folders.push(name);
            }
        }
        Frame { dir, folders }
    }
}

/// Opens the folder `name` in `parent`; one the agent made unreadable is opened up for
/// its owner first (it is this user's, and still counts).
fn open_child(parent: &Dir, name: &std::ffi::CStr) -> Option<Dir> {
    let path = Path::new(OsStr::from_bytes(name.to_bytes()));
    match open_directory(Some(parent), path) {
        Ok(child) => Some(child),
        Err(nix::Error::EACCES) if make_readable(parent, name).is_ok() => {
            open_directory(Some(parent), path).ok()
        }
        Err(_) => None,
    }
}

fn allocated(stat: &nix::sys::stat::FileStat) -> u64 {
    (stat.st_blocks as u64).saturating_mul(512)
}

/// Opens a directory without following a link, relative to `parent` if given.
fn open_directory(parent: Option<&Dir>, path: &Path) -> nix::Result<Dir> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match parent {
        Some(parent) => Dir::openat(parent, path, flags, Mode::empty()),
        None => Dir::open(path, flags, Mode::empty()),
    }
}

/// Adds `u+rx` to the folder `name` in `parent`, if it is one (not a link) and this
/// process owns it; the change goes through a descriptor of exactly that folder.
fn make_readable(parent: &Dir, name: &std::ffi::CStr) -> nix::Result<()> {
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

    /// Set in the child process [`many_folders_side_by_side_need_few_descriptors`]
    /// starts: the folder to measure.
    const WIDE_FOLDER: &str = "PALISADE_TEST_WIDE_FOLDER";

    /// 600 folders side by side, each with a file, measured whole by a process allowed
    /// 64 open files: the walk holds one folder open per level, not every folder it
    /// has yet to visit (it did, and an agent's 30 000 empty folders used up the
    /// descriptors of the host process that measures every agent).
    #[test]
    fn many_folders_side_by_side_need_few_descriptors() {
        if let Some(root) = std::env::var_os(WIDE_FOLDER) {
            let measured = measure(Path::new(&root)).unwrap();
            let whole: u64 = std::env::var("PALISADE_TEST_WIDE_BYTES")
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(measured.bytes, whole, "{measured:?}");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        for i in 0..600 {
            let folder = dir.path().join(format!("f{i}"));
            std::fs::create_dir(&folder).unwrap();
            std::fs::write(folder.join("data"), [1u8; 100]).unwrap();
        }
        // Measured here, with descriptors to spare, and compared in the child.
        let whole = measure(dir.path()).unwrap();
        assert!(whole.bytes >= 1200 * 4096 && !whole.too_deep, "{whole:?}");
        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        child
            .env(WIDE_FOLDER, dir.path())
            .env("PALISADE_TEST_WIDE_BYTES", whole.bytes.to_string());
        // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut child, || {
                nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 64, 64)
                    .map_err(std::io::Error::from)
            });
        }
        passes_in(child, "many_folders_side_by_side_need_few_descriptors");
    }

    /// Runs test `name` of this binary alone in `child` (a process set up as the test
    /// needs, which finds its inputs in its environment) and fails if it fails there.
    fn passes_in(mut child: std::process::Command, name: &str) {
        let output = child
            .args(["--exact", &format!("quota::tests::{name}")])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// A workspace whose owner took its read permission away is opened up and
    /// measured (it was not measured at all, and its agent wrote past the quota).
    /// Measured by a process that is not root (whom modes do not stop): as root, the
    /// test runs itself again as `nobody`, owner of the workspace.
    #[test]
    fn a_workspace_made_unreadable_is_still_measured() {
        use std::os::unix::fs::PermissionsExt;
        const ROOT: &str = "PALISADE_TEST_UNREADABLE_WORKSPACE";
        if let Some(root) = std::env::var_os(ROOT) {
            let measured = measure(Path::new(&root)).expect("measured");
            assert!(measured.bytes >= 1 << 20, "{measured:?}");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = dir.path().join("workspace");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("data"), vec![1u8; 1 << 20]).unwrap();
        let nobody = nix::unistd::Uid::from_raw(65534);
        let as_root = nix::unistd::geteuid().is_root();
        if as_root {
            for path in [&root, &root.join("data")] {
                nix::unistd::chown(path, Some(nobody), None).unwrap();
            }
        }
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o300)).unwrap();
        // A copy of this test binary `nobody` may run (the build folder may be private).
        let binary = dir.path().join("test-binary");
        std::fs::copy(std::env::current_exe().unwrap(), &binary).unwrap();
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut child = std::process::Command::new(&binary);
        child.current_dir(dir.path()).env(ROOT, &root);
        if as_root {
            // SAFETY: setgid and setuid are async-signal-safe; nothing else runs.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut child, move || {
                    nix::unistd::setgroups(&[]).map_err(std::io::Error::from)?;
                    nix::unistd::setgid(nix::unistd::Gid::from_raw(65534))
                        .map_err(std::io::Error::from)?;
                    nix::unistd::setuid(nobody).map_err(std::io::Error::from)
                });
            }
        }
        passes_in(child, "a_workspace_made_unreadable_is_still_measured");
    }

    /// A tree nested deeper than the walk opens is reported, not measured in part.
    #[test]
    fn folders_nested_too_deep_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut path = dir.path().to_path_buf();
        for _ in 0..MAX_DEPTH - 1 {
            path.push("d");
        }
        std::fs::create_dir_all(&path).unwrap();
        assert!(!measure(dir.path()).unwrap().too_deep);
        std::fs::create_dir(path.join("d")).unwrap();
        assert!(measure(dir.path()).unwrap().too_deep);
        assert!(WorkspaceFull::Nesting.to_string().contains("128 levels"));
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
