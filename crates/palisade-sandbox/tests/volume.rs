//! The workspace on a filesystem of its own (as root, with loop devices): made and
//! mounted on the workspace folder, files already in the folder moved in, a hard limit
//! at its size, grown with the quota, mounted again after a reboot, and never
//! overwriting the image's files with the folder's. As any other user, a folder.

use palisade_sandbox::volume::{self, WorkspaceStorage};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// An agent's directory in a temporary home; whatever gets mounted in it is unmounted
/// when the test ends, however it ends.
struct AgentDir(tempfile::TempDir);

impl AgentDir {
    fn new() -> AgentDir {
        AgentDir(tempfile::tempdir().unwrap())
    }

    fn workspace(&self) -> PathBuf {
        self.0.path().join("workspace")
    }
}

impl Drop for AgentDir {
    fn drop(&mut self) {
        for point in volume::mounts_under(self.0.path()) {
            let _ = nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn device(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().dev()
}

fn size_of_filesystem(path: &Path) -> u64 {
    let stat = nix::sys::statvfs::statvfs(path).unwrap();
    stat.blocks() as u64 * stat.fragment_size() as u64
}

/// Unmounts `path` as a reboot would, within a bounded wait: another test of this
/// process forking to run mkfs or mount holds copies of this test's descriptors until
/// its child execs, and the unmount meanwhile is EBUSY (seen once in CI).
fn unmount(path: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match nix::mount::umount2(path, nix::mount::MntFlags::empty()) {
            Err(nix::errno::Errno::EBUSY) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other.unwrap(),
        }
    }
}

/// Writes 1 MiB chunks to `path` until `limit` bytes or an error; returns what was
/// written and the error's number.
fn fill(path: &Path, limit: u64) -> (u64, Option<i32>) {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![7u8; 1 << 20];
    let mut written = 0;
    while written < limit {
        if let Err(e) = file.write_all(&chunk).and_then(|()| file.sync_data()) {
            return (written, e.raw_os_error());
        }
        written += chunk.len() as u64;
    }
    (written, None)
}

#[test]
fn a_workspace_becomes_an_image_of_its_own_with_its_files_moved_in() {
    let agent = AgentDir::new();
    let workspace = agent.workspace();
    std::fs::create_dir_all(workspace.join("src")).unwrap();
    std::fs::write(workspace.join("notes.txt"), "written before the image").unwrap();
    std::fs::write(workspace.join("src/main.rs"), "fn main() {}").unwrap();
    std::os::unix::fs::symlink("notes.txt", workspace.join("link")).unwrap();
    std::fs::set_permissions(
        workspace.join("notes.txt"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();

    let storage = volume::prepare(&workspace, 64 << 20).unwrap().storage;
    if !root() {
        assert!(
            matches!(storage, WorkspaceStorage::Folder { .. }),
            "{storage}"
        );
        assert_eq!(device(&workspace), device(agent.0.path()));
        return;
    }
    let WorkspaceStorage::Image {
        image,
        device: loop_device,
    } = &storage
    else {
        panic!("root with loop devices got {storage}");
    };
    assert_eq!(image, &agent.0.path().join("workspace.img"));
    assert!(loop_device.starts_with("/dev/loop"), "{loop_device}");
    assert_ne!(device(&workspace), device(agent.0.path()));
    assert!(size_of_filesystem(&workspace) >= 64 << 20);

    // Every file, link and mode came along; the folder copied from is gone, and the
    // new filesystem shows nothing of its own.
    assert_eq!(
        std::fs::read_to_string(workspace.join("notes.txt")).unwrap(),
        "written before the image"
    );
    assert_eq!(
        std::fs::read_to_string(workspace.join("src/main.rs")).unwrap(),
        "fn main() {}"
    );
    assert_eq!(
        std::fs::read_link(workspace.join("link")).unwrap(),
        Path::new("notes.txt")
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&workspace.join("notes.txt")), 0o640);
    assert_eq!(mode(&workspace), 0o700);
    assert!(!workspace.join("lost+found").exists());
    let mut names: Vec<String> = std::fs::read_dir(agent.0.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ".workspace.in-use",
            ".workspace.lock",
            "workspace",
            "workspace.img"
        ]
    );
    // The image is sparse: it takes what is written, not the quota.
    let image_meta = std::fs::metadata(image).unwrap();
    assert!(image_meta.len() >= 64 << 20);
    assert!(image_meta.blocks() * 512 < 32 << 20, "{image_meta:?}");
    assert_eq!(image_meta.permissions().mode() & 0o777, 0o600);

    // Preparing again changes nothing.
    assert_eq!(
        volume::prepare(&workspace, 64 << 20).unwrap().storage,
        storage
    );
}

#[test]
fn the_image_is_a_hard_limit_and_grows_with_the_quota() {
    if !root() {
        return;
    }
    let agent = AgentDir::new();
    let workspace = agent.workspace();
    let running = volume::prepare(&workspace, 8 << 20).unwrap();
    let first = running.storage.clone();
    assert!(matches!(first, WorkspaceStorage::Image { .. }), "{first}");

    // Whatever is not watched, the disk ends at the image's size.
    let (written, error) = fill(&workspace.join("big"), 1 << 30);
    assert_eq!(error, Some(libc_enospc()), "after {written} bytes");
    assert!(written >= 8 << 20 && written <= volume::image_size(8 << 20));
    std::fs::remove_file(workspace.join("big")).unwrap();

    // A larger quota grows the image. Without CAP_SYS_RESOURCE (as on some hosts,
    // this one among them) ext4 grows only unmounted: while a sandbox holds its claim
    // (`running`), or anything has a file open in the workspace, the growth waits, and
    // the workspace stays mounted and usable.
    let before = size_of_filesystem(&workspace);
    let online = capable_of_sys_resource();
    let still_mounted = |storage: &WorkspaceStorage| {
        assert!(
            matches!(storage, WorkspaceStorage::Image { .. }),
            "{storage}"
        );
        assert_ne!(device(&workspace), device(agent.0.path()));
        if !online {
            assert_eq!(size_of_filesystem(&workspace), before);
        }
    };
    still_mounted(&volume::prepare(&workspace, 96 << 20).unwrap().storage);
    drop(running);
    let busy = std::fs::File::create(workspace.join("held-open")).unwrap();
    still_mounted(&volume::prepare(&workspace, 96 << 20).unwrap().storage);
    drop(busy);
    let third = volume::prepare(&workspace, 96 << 20).unwrap().storage;
    let (WorkspaceStorage::Image { image: a, .. }, WorkspaceStorage::Image { image: b, .. }) =
        (&first, &third)
    else {
        panic!("{first} then {third}");
    };
    assert_eq!(a, b, "the same image");
    assert!(workspace.join("held-open").exists());
    let after = size_of_filesystem(&workspace);
    assert!(after >= 96 << 20 && after > before, "{before} -> {after}");
    let (written, error) = fill(&workspace.join("big"), 80 << 20);
    assert_eq!((written, error), (80 << 20, None));
}

/// What a workspace frees goes back to the host's disk: the image does not keep the
/// most its workspace ever held (it kept 1 GiB written and deleted until trimmed).
#[test]
fn a_file_deleted_in_the_workspace_frees_the_hosts_disk() {
    if !root() {
        return;
    }
    let agent = AgentDir::new();
    let workspace = agent.workspace();
    let running = volume::prepare(&workspace, 96 << 20).unwrap();
    let WorkspaceStorage::Image { image, .. } = running.storage.clone() else {
        panic!("root with loop devices got {}", running.storage);
    };
    let on_disk = || std::fs::metadata(&image).unwrap().blocks() * 512;
    let empty = on_disk();
    let (written, error) = fill(&workspace.join("big"), 64 << 20);
    assert_eq!((written, error), (64 << 20, None));
    assert!(on_disk() >= empty + (60 << 20), "{empty} -> {}", on_disk());
    std::fs::remove_file(workspace.join("big")).unwrap();
    nix::unistd::sync();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while on_disk() > empty + (8 << 20) {
        assert!(
            std::time::Instant::now() < deadline,
            "the image still holds {} bytes on disk after its file was deleted ({empty} empty)",
            on_disk()
        );
        nix::unistd::sync();
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    drop(running);
}

/// `release` unmounts an image nothing uses, and only then: not while a sandbox holds its
/// claim, not while a file in it is open. Its files are there at the next mount.
#[test]
fn an_unused_image_is_released_and_comes_back_with_its_files() {
    if !root() {
        return;
    }
    let agent = AgentDir::new();
    let workspace = agent.workspace();
    let running = volume::prepare(&workspace, 8 << 20).unwrap();
    std::fs::write(workspace.join("kept"), b"still here").unwrap();
    assert!(
        !volume::release(&workspace).unwrap(),
        "released under a claim"
    );
    assert_ne!(device(&workspace), device(agent.0.path()));
    drop(running);
    let open = std::fs::File::open(workspace.join("kept")).unwrap();
    assert!(
        !volume::release(&workspace).unwrap(),
        "released with a file open"
    );
    drop(open);
    // Released once nothing uses it. Another test of this process that forks to run
    // mkfs or mount meanwhile holds copies of our descriptors until its child execs,
    // which counts as a use for that instant: so the release is given a bounded while.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !volume::release(&workspace).unwrap() {
        assert!(
            std::time::Instant::now() < deadline,
            "an image nothing uses was not released"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(device(&workspace), device(agent.0.path()), "still mounted");
    assert!(!workspace.join("kept").exists());
    assert!(
        !volume::release(&workspace).unwrap(),
        "nothing left to release"
    );
    let again = volume::prepare(&workspace, 8 << 20).unwrap();
    assert!(matches!(again.storage, WorkspaceStorage::Image { .. }));
    assert_eq!(
        std::fs::read(workspace.join("kept")).unwrap(),
        b"still here"
    );
}

#[test]
fn after_a_reboot_the_image_comes_back_and_a_clash_is_refused() {
    if !root() {
        return;
    }
    let agent = AgentDir::new();
    let workspace = agent.workspace();
    volume::prepare(&workspace, 16 << 20).unwrap();
    std::fs::write(workspace.join("kept.txt"), "in the image").unwrap();

    // A reboot: nothing is mounted, the folder is empty; preparing mounts it again.
    unmount(&workspace);
    assert!(std::fs::read_dir(&workspace).unwrap().next().is_none());
    volume::prepare(&workspace, 16 << 20).unwrap();
    assert_eq!(
        std::fs::read_to_string(workspace.join("kept.txt")).unwrap(),
        "in the image"
    );

    // Files put in the bare folder meanwhile: one with a name the image has is
    // refused (neither copy is touched, nothing is mounted)…
    unmount(&workspace);
    std::fs::write(workspace.join("kept.txt"), "in the folder").unwrap();
    let refused = volume::prepare(&workspace, 16 << 20)
        .unwrap_err()
        .to_string();
    assert!(refused.contains("kept.txt"), "{refused}");
    assert_eq!(device(&workspace), device(agent.0.path()));
    assert_eq!(
        std::fs::read_to_string(workspace.join("kept.txt")).unwrap(),
        "in the folder"
    );

    // …and without a clash they join the image's.
    std::fs::rename(workspace.join("kept.txt"), workspace.join("new.txt")).unwrap();
    volume::prepare(&workspace, 16 << 20).unwrap();
    assert_eq!(
        std::fs::read_to_string(workspace.join("kept.txt")).unwrap(),
        "in the image"
    );
    assert_eq!(
        std::fs::read_to_string(workspace.join("new.txt")).unwrap(),
        "in the folder"
    );
    assert!(!agent.0.path().join(".workspace.before-image").exists());
}

/// Whether this process holds CAP_SYS_RESOURCE (bit 24 of its effective set).
fn capable_of_sys_resource() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .map(|hex| u64::from_str_radix(hex.trim(), 16).unwrap())
        .unwrap();
    effective & (1 << 24) != 0
}

fn libc_enospc() -> i32 {
    nix::errno::Errno::ENOSPC as i32
}

#[test]
fn files_larger_than_the_quota_or_a_half_made_image_leave_the_folder_as_it_was() {
    if !root() {
        return;
    }
    let agent = AgentDir::new();
    let workspace = agent.workspace();
    std::fs::create_dir_all(&workspace).unwrap();
    let (written, error) = fill(&workspace.join("large"), 3 << 20);
    assert_eq!((written, error), (3 << 20, None));

    // 3 MiB of files and a 2 MiB quota: no image is made, the folder is kept whole.
    let storage = volume::prepare(&workspace, 2 << 20).unwrap().storage;
    let WorkspaceStorage::Folder { why } = &storage else {
        panic!("{storage}");
    };
    assert!(why.contains("more than its quota"), "{why}");
    assert_eq!(device(&workspace), device(agent.0.path()));
    assert_eq!(
        std::fs::metadata(workspace.join("large")).unwrap().len(),
        3 << 20
    );
    assert!(!agent.0.path().join("workspace.img").exists());

    // An image a killed run was making is not taken for the agent's: a whole new one
    // is made, and the folder's files are in it.
    std::fs::write(agent.0.path().join(".workspace.new.img"), "half made").unwrap();
    let storage = volume::prepare(&workspace, 16 << 20).unwrap().storage;
    assert!(
        matches!(storage, WorkspaceStorage::Image { .. }),
        "{storage}"
    );
    assert_eq!(
        std::fs::metadata(workspace.join("large")).unwrap().len(),
        3 << 20
    );
    assert!(!agent.0.path().join(".workspace.new.img").exists());
}
