//! Each agent's workspace on a filesystem of its own, where the host allows it.
//!
//! As root, with loop devices: a sparse ext4 image beside the workspace folder
//! (`agents/NAME/workspace.img`), a little larger than the quota, loop-mounted
//! (`nosuid,nodev`) on the workspace folder itself. This gives two things a folder
//! cannot:
//!
//! - a sandbox's mount table shows the workspace as the root of a filesystem of its
//!   own, not as the folder's path on the host: the kernel prints a bind mount's source
//!   as its path within its filesystem, whatever else is done to hide it;
//! - the quota is hard: a burst of writes between two measurements of the watcher
//!   ([`crate::quota`]) cannot pass the image's size.
//!
//! The host sees the same files at the same path (one filesystem, mounted once, on the
//! host), so what the user or Palisade puts into the workspace is what the agent sees,
//! at once. The mount is made when a sandbox of the agent starts or `palisade up`
//! starts, and stays; after a reboot the first of those makes it again. Files in a
//! workspace folder that has no image yet (made by an earlier version, or put there
//! while the image was not mounted) are copied into the image and the folder is swapped
//! for the mount, so nothing is lost; if they do not fit, or anything else fails while
//! the image is new, the workspace stays a folder. An image that exists but cannot be
//! mounted is an error: its files are the agent's, and an empty folder in their place
//! would look like a loss.
//!
//! Anywhere else (not root, no loop devices, no `mkfs.ext4`) the workspace is a plain
//! folder: the watcher enforces the quota and the folder's path shows in the sandbox's
//! mount table. A lower quota than the image was made for is enforced by the watcher
//! (ext4 shrinks only unmounted); a higher one grows the image: online where this
//! process may (`CAP_SYS_RESOURCE`), else at a start when nothing uses the workspace.
//!
//! The work is done by util-linux's `mount`, `umount` and `losetup` and by e2fsprogs'
//! `mkfs.ext4`, `e2fsck` and `resize2fs`: loop device allocation (with autoclear) and ext4's
//! layout are theirs to get right, not this crate's.

use crate::runtime::which;
use crate::SandboxError;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// How an agent's workspace is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkspaceStorage {
    /// A filesystem of its own: `image`, mounted through `device` (`/dev/loopN`).
    Image { image: PathBuf, device: String },
    /// A folder of the host's filesystem; `why` says why it has no image.
    Folder { why: String },
}

impl std::fmt::Display for WorkspaceStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkspaceStorage::Image { device, .. } => {
                write!(f, "a filesystem of its own (ext4 image on {device})")
            }
            WorkspaceStorage::Folder { why } => write!(f, "a folder ({why})"),
        }
    }
}

/// The image of the workspace folder `workspace`: beside it, named after it.
pub fn image_path(workspace: &Path) -> PathBuf {
    let mut name = workspace.file_name().unwrap_or_default().to_os_string();
    name.push(".img");
    workspace.with_file_name(name)
}

/// The size of an image for `quota`: the quota plus ext4's own overhead (inode tables,
/// journal), so the whole quota is usable and the watcher, not the filesystem, is what
/// an agent meets first.
pub fn image_size(quota: u64) -> u64 {
    quota + quota / 16 + (16 << 20)
}

/// Why this host cannot give workspaces images, or `None` if it can.
pub fn images_unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("loop-mounted images need root".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("this host has no loop devices (/dev/loop-control)".into());
    }
    for tool in [
        "mkfs.ext4",
        "e2fsck",
        "resize2fs",
        "mount",
        "umount",
        "losetup",
    ] {
        if which(tool).is_none() {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

/// A workspace made ready by [`prepare`]: how it is stored, and a shared claim on its
/// image that keeps it mounted (no start of another sandbox unmounts it to grow it)
/// while held. Keep it until the sandbox that uses the workspace has ended.
#[derive(Debug)]
pub struct PreparedWorkspace {
    pub storage: WorkspaceStorage,
    _in_use: Option<std::fs::File>,
}

/// Makes sure `workspace` exists (mode 0700) and, where the host allows, is its own
/// filesystem at least [`image_size`]`(quota)` large.
pub fn prepare(workspace: &Path, quota: u64) -> Result<PreparedWorkspace, SandboxError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(workspace)
        .map_err(|e| SandboxError::io(format!("cannot create {}", workspace.display()), e))?;
    if let Some(why) = images_unavailable() {
        return Ok(PreparedWorkspace {
            storage: WorkspaceStorage::Folder { why },
            _in_use: None,
        });
    }
    // One preparation per agent at a time: two sandboxes starting together must not
    // both make or mount the image.
    let _preparing = lock_file(&sibling(workspace, "lock"), Claim::Exclusive)?;
    let storage = prepare_image(workspace, quota)?;
    // Granted at once: the only exclusive holders are preparers, and this is the one.
    let in_use = match storage {
        WorkspaceStorage::Image { .. } => {
            Some(lock_file(&sibling(workspace, "in-use"), Claim::Shared)?)
        }
        WorkspaceStorage::Folder { .. } => None,
    };
    Ok(PreparedWorkspace {
        storage,
        _in_use: in_use,
    })
}

/// Unmounts `workspace`'s image when nothing uses it: no sandbox holds a claim on it and
/// no process has a file open in it. `Ok(true)` when it was mounted and no longer is.
/// Its files stay in the image; the next [`prepare`] mounts it again. (`palisade down`
/// does this, so a stopped Palisade leaves no loop mount behind.)
pub fn release(workspace: &Path) -> Result<bool, SandboxError> {
    let image = image_path(workspace);
    if mounted_image(workspace, &image).is_none() {
        return Ok(false);
    }
    let _preparing = lock_file(&sibling(workspace, "lock"), Claim::Exclusive)?;
    let Some(_alone) = lock_file_if(&sibling(workspace, "in-use"), Claim::ExclusiveNow)? else {
        return Ok(false);
    };
    // A plain umount fails while anything has a file open in the workspace.
    match run(Command::new("umount").arg(workspace)) {
        Ok(()) => Ok(true),
        Err(why) => {
            tracing::info!(workspace = %workspace.display(), %why, "the workspace is in use; it stays mounted");
            Ok(false)
        }
    }
}

enum Claim {
    Shared,
    Exclusive,
    /// Exclusive if nobody holds any claim now, else none (`Ok(None)`).
    ExclusiveNow,
}

fn lock_file(path: &Path, claim: Claim) -> Result<std::fs::File, SandboxError> {
    lock_file_if(path, claim)?
        .ok_or_else(|| SandboxError::Start(format!("{} is locked", path.display())))
}

fn lock_file_if(path: &Path, claim: Claim) -> Result<Option<std::fs::File>, SandboxError> {
    let file = std::fs::File::create(path)
        .map_err(|e| SandboxError::io(format!("cannot create {}", path.display()), e))?;
    let locked = match claim {
        Claim::Shared => file.lock_shared(),
        Claim::Exclusive => file.lock(),
        Claim::ExclusiveNow => match file.try_lock() {
            Ok(()) => Ok(()),
            Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        },
    };
    locked.map_err(|e| SandboxError::io(format!("cannot lock {}", path.display()), e))?;
    Ok(Some(file))
}

/// [`prepare`]'s work on an image, under the preparation lock.
fn prepare_image(workspace: &Path, quota: u64) -> Result<WorkspaceStorage, SandboxError> {
    let image = image_path(workspace);
    if let Some(device) = mounted_image(workspace, &image) {
        grow(workspace, &image, &device, quota)?;
        let device = mounted_image(workspace, &image).unwrap_or(device);
        return Ok(WorkspaceStorage::Image { image, device });
    }
    if is_mount_point(workspace) {
        return Ok(WorkspaceStorage::Folder {
            why: "the workspace folder is a mount point of something else".into(),
        });
    }
    let has_files = std::fs::read_dir(workspace)
        .map_err(|e| SandboxError::io(format!("cannot read {}", workspace.display()), e))?
        .next()
        .is_some();
    let fresh = !image.exists();
    if fresh {
        // A new image is made and filled under another name, and takes the image's
        // name only when whole: a run killed half-way leaves nothing to trip over.
        if let Err(why) = make_filled_image(workspace, &image, quota, has_files) {
            tracing::warn!(workspace = %workspace.display(), %why, "the workspace stays a folder");
            return Ok(WorkspaceStorage::Folder { why });
        }
    } else if has_files {
        // Files put in the bare folder while the image was not mounted join it.
        with_staging_mount(workspace, &image, |staging| {
            copy_in(workspace, staging, true)
        })
        .map_err(|why| {
            SandboxError::Start(format!(
                "cannot move the files in {} into its image {}: {why}",
                workspace.display(),
                image.display()
            ))
        })?;
    }
    if let Err(why) = mount_over(workspace, &image, has_files) {
        if fresh {
            // The folder is as it was; the new image holds only copies.
            let _ = std::fs::remove_file(&image);
            tracing::warn!(workspace = %workspace.display(), %why, "the workspace stays a folder");
            return Ok(WorkspaceStorage::Folder { why });
        }
        return Err(SandboxError::Start(format!(
            "cannot mount the workspace image {}: {why}",
            image.display()
        )));
    }
    let device = mounted_image(workspace, &image).ok_or_else(|| {
        SandboxError::Start(format!(
            "{} was mounted on {} but is not there now",
            image.display(),
            workspace.display()
        ))
    })?;
    grow(workspace, &image, &device, quota)?;
    let device = mounted_image(workspace, &image).unwrap_or(device);
    Ok(WorkspaceStorage::Image { image, device })
}

/// Makes `image` for `quota`, holding the workspace folder's files if it has any.
fn make_filled_image(
    workspace: &Path,
    image: &Path,
    quota: u64,
    has_files: bool,
) -> Result<(), String> {
    if has_files {
        let used = crate::quota::usage(workspace).unwrap_or(0);
        if used > quota {
            return Err(format!(
                "its files take {} MiB, more than its quota of {} MiB",
                used >> 20,
                quota >> 20
            ));
        }
        // Shown by default: copying a large workspace takes a while, once.
        tracing::warn!(
            workspace = %workspace.display(),
            "moving the workspace's {} MiB into a filesystem of its own (once)",
            used >> 20
        );
    }
    let new = sibling(workspace, "new.img");
    let _ = std::fs::remove_file(&new);
    let made = make_image(&new, image_size(quota)).and_then(|()| {
        with_staging_mount(workspace, &new, |staging| {
            // A workspace is private, and shows nothing of ext4's own.
            let _ = std::fs::remove_dir(staging.join("lost+found"));
            if has_files {
                copy_in(workspace, staging, false)?;
            }
            std::fs::set_permissions(staging, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| format!("cannot set the image's mode: {e}"))
        })
    });
    match made.and_then(|()| {
        std::fs::rename(&new, image).map_err(|e| format!("cannot name the image: {e}"))
    }) {
        Ok(()) => Ok(()),
        Err(why) => {
            let _ = std::fs::remove_file(&new);
            Err(why)
        }
    }
}

/// A new sparse image of `size` bytes with an empty ext4 filesystem, readable by root
/// only.
fn make_image(image: &Path, size: u64) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(image)
        .map_err(|e| format!("cannot create {}: {e}", image.display()))?;
    file.set_len(size)
        .map_err(|e| format!("cannot size {}: {e}", image.display()))?;
    drop(file);
    run(Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-m",
            "0",
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0",
        ])
        .arg(image))
}

/// Runs `work` on `image` mounted beside the workspace folder, and unmounts it again.
fn with_staging_mount(
    workspace: &Path,
    image: &Path,
    work: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<(), String> {
    let staging = sibling(workspace, "staging");
    if is_mount_point(&staging) {
        // Left by a run that was killed while it worked.
        let _ = nix::mount::umount2(&staging, nix::mount::MntFlags::MNT_DETACH);
    }
    let _ = std::fs::create_dir(&staging);
    mount(image, &staging)?;
    let worked = work(&staging);
    let unmounted = run(Command::new("umount").arg(&staging));
    let _ = std::fs::remove_dir(&staging);
    worked.and(unmounted)
}

/// Copies the workspace folder's files into the image mounted at `staging`; with
/// `refuse_clashes`, first refuses if a name is in both, so nothing in the image is
/// overwritten.
fn copy_in(workspace: &Path, staging: &Path, refuse_clashes: bool) -> Result<(), String> {
    if let Some(inner) = mounts_under(workspace).first() {
        // Copying it in and removing the folder would reach into that mount.
        return Err(format!(
            "{} is mounted inside the workspace",
            inner.display()
        ));
    }
    if refuse_clashes {
        let entries = std::fs::read_dir(workspace)
            .map_err(|e| format!("cannot read {}: {e}", workspace.display()))?;
        for entry in entries.flatten() {
            if std::fs::symlink_metadata(staging.join(entry.file_name())).is_ok() {
                return Err(format!(
                    "{} is both in the workspace folder and in its image; move one away",
                    entry.file_name().to_string_lossy()
                ));
            }
        }
    }
    let mut source = workspace.as_os_str().to_os_string();
    source.push("/.");
    let copied = run(Command::new("cp")
        .args(["-a", "--no-target-directory", "--"])
        .arg(source)
        .arg(staging))
    .map_err(|e| format!("cannot copy the workspace's files into its image: {e}"));
    // `cp -a` gave the image's root the folder's mode; a workspace is private.
    let _ = std::fs::set_permissions(staging, std::fs::Permissions::from_mode(0o700));
    copied
}

/// Mounts `image` on `workspace`. A folder with files (all of them copied into the
/// image already) is swapped for a new empty one to mount on, and removed once the
/// image is mounted; if the mount fails, the folder is put back as it was.
fn mount_over(workspace: &Path, image: &Path, has_files: bool) -> Result<(), String> {
    let aside = sibling(workspace, "before-image");
    if has_files {
        let _ = std::fs::remove_dir_all(&aside);
        std::fs::rename(workspace, &aside)
            .map_err(|e| format!("cannot move {} aside: {e}", workspace.display()))?;
        let made = std::fs::DirBuilder::new().mode(0o700).create(workspace);
        if let Err(e) = made
            .map_err(|e| e.to_string())
            .and_then(|()| mount(image, workspace))
        {
            let _ = std::fs::remove_dir(workspace);
            let _ = std::fs::rename(&aside, workspace);
            return Err(e);
        }
    } else {
        mount(image, workspace)?;
    }
    // Once the image is mounted, a folder left aside (now or by a run that was killed
    // after the swap) holds only copies.
    if let Err(e) = std::fs::remove_dir_all(&aside) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(folder = %aside.display(), error = %e, "cannot remove the workspace folder copied into the image");
        }
    }
    Ok(())
}

/// Mounts `image` on `at`. With `discard`, blocks a file frees are punched out of the
/// image (the loop device turns the discard into a hole in its file): without it the
/// image kept on the host's disk the most its workspace ever held (one review wrote
/// and deleted 1 GiB, and the host had 1 GB less until the image was trimmed).
fn mount(image: &Path, at: &Path) -> Result<(), String> {
    run(Command::new("mount")
        .args(["-t", "ext4", "-o", "loop,nosuid,nodev,discard", "--"])
        .arg(image)
        .arg(at))
}

/// Grows the image mounted through `device` on `workspace` until its filesystem holds
/// `quota`. Online when the kernel lets this process (`CAP_SYS_RESOURCE`), otherwise
/// while nothing uses the workspace: unmounted, checked, resized and mounted again. A
/// growth that cannot happen now only costs room (the agent meets a full disk before
/// its new quota) and is tried again at the next start, so it is logged; the error
/// returned is the one that matters: the image could not be mounted again.
fn grow(workspace: &Path, image: &Path, device: &str, quota: u64) -> Result<(), SandboxError> {
    if filesystem_size(workspace).is_none_or(|size| size >= quota) {
        return Ok(());
    }
    let want = image_size(quota);
    let lengthened = std::fs::OpenOptions::new()
        .write(true)
        .open(image)
        .and_then(|file| match file.metadata()?.len() < want {
            true => file.set_len(want),
            false => Ok(()),
        })
        .map_err(|e| e.to_string())
        .and_then(|()| run(Command::new("losetup").arg("--set-capacity").arg(device)));
    if let Err(error) = lengthened {
        tracing::warn!(image = %image.display(), %error, "cannot grow the workspace image to its new quota");
        return Ok(());
    }
    if run(Command::new("resize2fs").arg(device)).is_ok() {
        return Ok(());
    }
    // Offline, then: only when no sandbox holds a claim on the workspace (one that is
    // starting would otherwise bind the bare folder), and nothing else has it open.
    let Ok(Some(_alone)) = lock_file_if(&sibling(workspace, "in-use"), Claim::ExclusiveNow) else {
        tracing::warn!(workspace = %workspace.display(), "a sandbox uses the workspace; its image grows to the new quota at a start when none does");
        return Ok(());
    };
    if let Err(error) = run(Command::new("umount").arg(workspace)) {
        tracing::warn!(workspace = %workspace.display(), %error, "the workspace is in use; its image grows to the new quota at a start when it is not");
        return Ok(());
    }
    // e2fsck -p exits 1 when it fixed something, which is fine too.
    let checked = Command::new("e2fsck")
        .args(["-f", "-p"])
        .arg(image)
        .stdin(std::process::Stdio::null())
        .output()
        .map(|out| matches!(out.status.code(), Some(0 | 1)))
        .unwrap_or(false);
    if checked {
        if let Err(error) = run(Command::new("resize2fs").arg(image)) {
            tracing::warn!(image = %image.display(), %error, "cannot grow the workspace image to its new quota");
        }
    }
    mount(image, workspace).map_err(|why| {
        SandboxError::Start(format!(
            "cannot mount the workspace image {} again after growing it: {why}",
            image.display()
        ))
    })
}

/// The room the filesystem at `path` has for files, in bytes.
fn filesystem_size(path: &Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(path).ok()?;
    Some(stat.blocks() as u64 * stat.fragment_size() as u64)
}

/// The loop device through which `image` is mounted on `workspace`, if it is.
fn mounted_image(workspace: &Path, image: &Path) -> Option<String> {
    if !is_mount_point(workspace) {
        return None;
    }
    let dev = std::fs::metadata(workspace).ok()?.dev();
    let block = format!(
        "/sys/dev/block/{}:{}",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    );
    let backing = std::fs::read_to_string(format!("{block}/loop/backing_file")).ok()?;
    let image = std::fs::canonicalize(image).ok()?;
    if Path::new(backing.trim_end()) != image {
        return None;
    }
    let name = std::fs::read_link(&block).ok()?;
    Some(format!(
        "/dev/{}",
        name.file_name()?.to_string_lossy().into_owned()
    ))
}

/// The mount points strictly inside `dir`, deepest first (from this process's mount
/// table; `\040`-style escapes undone).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|escaped| PathBuf::from(std::ffi::OsString::from_vec(unescape(escaped))))
        .filter(|point| point != dir && point.starts_with(dir))
        .collect();
    found.sort_by_key(|point| std::cmp::Reverse(point.as_os_str().len()));
    found.dedup();
    found
}

/// Undoes the kernel's octal escapes (`\040` for a space) in a mount table field.
fn unescape(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|digits| {
            let text = std::str::from_utf8(digits).ok()?;
            u8::from_str_radix(text, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

/// `.NAME.what` beside the workspace folder `NAME`: Palisade's own, never an agent's.
fn sibling(workspace: &Path, what: &str) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(workspace.file_name().unwrap_or_default());
    name.push(".");
    name.push(what);
    workspace.with_file_name(name)
}

/// Whether `path` is the root of a mount: on another device than its parent.
pub(crate) fn is_mount_point(path: &Path) -> bool {
    let (Ok(this), Some(Ok(parent))) = (
        std::fs::metadata(path),
        path.parent().map(std::fs::metadata),
    ) else {
        return false;
    };
    this.dev() != parent.dev()
}

fn run(command: &mut Command) -> Result<(), String> {
    let program = command.get_program().to_string_lossy().into_owned();
    let output = command
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    Err(format!("{program} failed ({}): {line}", output.status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_holds_its_whole_quota_and_lies_beside_the_folder() {
        for quota in [1u64 << 20, 16 << 20, 4 << 30, 100 << 30] {
            let size = image_size(quota);
            // ext4's overhead stays under 1/16 of the quota plus 16 MiB (measured:
            // 16M gives 26M free, 4G gives 4203M, 100G gives 104G).
            assert!(size > quota + quota / 32, "{quota}");
        }
        assert_eq!(unescape(r"/a\040b\134c\x"), b"/a b\\c\\x");
        assert_eq!(
            image_path(Path::new("/h/agents/a/workspace")),
            Path::new("/h/agents/a/workspace.img")
        );
    }
}
