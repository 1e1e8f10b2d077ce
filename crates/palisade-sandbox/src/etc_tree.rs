//! The `/etc` of bubblewrap sandboxes, prepared once and bound with a single mount.
//!
//! A sandbox sees an allow-list of the host's `/etc` (what dynamic linking, name
//! lookup of localhost, TLS, Python and git need; nothing that holds secrets) plus
//! synthetic `passwd`, `group` and `hosts`. Binding each entry separately cost
//! bubblewrap two dozen mount operations per start (each re-reading
//! `/proc/self/mountinfo`), about half of its start time. Instead the allowed entries
//! are copied into a private directory once (regular files by content, symlinks as
//! symlinks: they resolve inside the sandbox, where `/usr` is the host's) and that
//! directory is bound read-only as `/etc`.
//!
//! An allowed entry that is a symlink to somewhere outside `/usr` (so would dangle
//! inside) is copied by its target's content, as a bind of it would have shown it;
//! links inside allowed directories stay links, as inside a bind.
//!
//! The copy is named after a fingerprint of the entries' metadata (path, size, mtime,
//! inode, mode), so a change on the host (a package upgrade, new CA certificates)
//! yields a fresh copy on the next start. Symlinks inside allowed directories count
//! by name only (replacing one changes its directory's mtime); the target of such a
//! link that points outside `/usr` and is edited in place is picked up only once
//! something else in the fingerprint changes. Every sandbox holds a shared `flock` on the
//! copy it uses for as long as it runs; copies that are not current and that nobody
//! holds are removed when a sandbox starts.
//!
//! Written by hand: a small walk over a fixed list; no crate does "copy an allow-list
//! once and keep it fresh".

use crate::SandboxError;
use std::collections::hash_map::DefaultHasher;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// `/etc` entries a sandbox may see.
pub(crate) const ETC_ALLOWED: &[&str] = &[
    "alternatives",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "timezone",
    "nsswitch.conf",
    "host.conf",
    "mime.types",
    "os-release",
    "debian_version",
    "ssl/certs",
    "ssl/openssl.cnf",
    "python3",
    "python3.11",
    "bash.bashrc",
    "profile",
    "inputrc",
    "terminfo",
    "protocols",
    "services",
    "gitconfig",
    "magic",
];

/// Written last into a finished copy; a copy without it is incomplete or being removed.
const COMPLETE: &str = ".palisade-etc-complete";
/// Bounds on what one copy may hold, so a strange `/etc` cannot make every start slow.
const MAX_ENTRIES: usize = 20_000;
const MAX_BYTES: u64 = 64 << 20;
const MAX_DEPTH: usize = 6;
/// Bumped when the layout of a copy changes, so older copies are not reused.
const FORMAT: u32 = 1;

/// A prepared `/etc`, locked (shared) while this value lives.
pub(crate) struct EtcTree {
    dir: PathBuf,
    /// Holds the shared lock; a private copy is removed with it.
    _lock: File,
    private: Option<tempfile::TempDir>,
}

impl EtcTree {
    pub(crate) fn path(&self) -> &Path {
        match &self.private {
            Some(dir) => dir.path(),
            None => &self.dir,
        }
    }
}

/// The current copy of `allowed` entries of `source` (the host's `/etc`) plus the
/// `synthetic` files, in `base`, built when missing.
pub(crate) fn prepare(
    source: &Path,
    allowed: &[&str],
    synthetic: &[(&str, String)],
    base: &Path,
) -> Result<EtcTree, SandboxError> {
    let uid = nix::unistd::geteuid().as_raw();
    let prefix = format!("palisade-etc-{uid}-");
    let fingerprint = fingerprint(source, allowed, synthetic);
    let dir = base.join(format!("{prefix}{fingerprint:016x}"));
    remove_unused(base, &prefix, &dir);
    // Twice at most: a copy removed between finding and locking it is built again.
    for _ in 0..2 {
        if !dir.join(COMPLETE).exists() {
            match build(source, allowed, synthetic, base) {
                Ok(built) => {
                    // Losing the race to another start is fine: theirs is identical.
                    if std::fs::rename(built.path(), &dir).is_ok() {
                        let _ = built.keep();
                    }
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(lock) = lock_if_ours(&dir, uid) {
            if dir.join(COMPLETE).exists() {
                return Ok(EtcTree {
                    dir,
                    _lock: lock,
                    private: None,
                });
            }
        } else {
            break;
        }
    }
    // The shared name is taken by someone else (or keeps vanishing): a copy for this
    // sandbox alone.
    let private = build(source, allowed, synthetic, base)?;
    let lock = File::open(private.path())
        .map_err(|e| SandboxError::io("cannot open the sandbox's /etc copy", e))?;
    Ok(EtcTree {
        dir: private.path().to_path_buf(),
        _lock: lock,
        private: Some(private),
    })
}

/// Opens and share-locks `dir` if it is a real directory owned by `uid` that no other
/// user can write to.
fn lock_if_ours(dir: &Path, uid: u32) -> Option<File> {
    let meta = std::fs::symlink_metadata(dir).ok()?;
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o022 != 0 {
        return None;
    }
    let file = File::open(dir).ok()?;
    // SAFETY: flock on a descriptor we own.
    let locked = unsafe { nix::libc::flock(file.as_raw_fd(), nix::libc::LOCK_SH) } == 0;
    locked.then_some(file)
}

/// Removes this user's copies other than `current` that no running sandbox holds.
fn remove_unused(base: &Path, prefix: &str, current: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    let uid = nix::unistd::geteuid().as_raw();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() || meta.uid() != uid || path == current {
            continue;
        }
        if name.starts_with(&format!("palisade-etc-build-{uid}-")) {
            // Left by a start that was killed while building (a finished one renames
            // it): unlocked, so only removed once clearly abandoned.
            let abandoned = meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(3600));
            if abandoned {
                let _ = std::fs::remove_dir_all(&path);
            }
            continue;
        }
        if !name.starts_with(prefix) {
            continue;
        }
        let Ok(file) = File::open(&path) else {
            continue;
        };
        // SAFETY: flock on a descriptor we own.
        let exclusive =
            unsafe { nix::libc::flock(file.as_raw_fd(), nix::libc::LOCK_EX | nix::libc::LOCK_NB) }
                == 0;
        if exclusive {
            let _ = std::fs::remove_file(path.join(COMPLETE));
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

fn fingerprint(source: &Path, allowed: &[&str], synthetic: &[(&str, String)]) -> u64 {
    let mut hasher = DefaultHasher::new();
    FORMAT.hash(&mut hasher);
    let mut seen = 0;
    for entry in allowed {
        entry.hash(&mut hasher);
        let path = source.join(entry);
        hash_entry(&path, 0, &mut seen, &mut hasher);
        // An allowed entry copied by its link's target: the target counts.
        if let Some(target) = followed_target(&path) {
            hash_entry(&target, 0, &mut seen, &mut hasher);
        }
    }
    for (name, text) in synthetic {
        (name, text).hash(&mut hasher);
    }
    hasher.finish()
}

fn hash_entry(path: &Path, depth: usize, seen: &mut usize, hasher: &mut DefaultHasher) {
    *seen += 1;
    if *seen > MAX_ENTRIES || depth > MAX_DEPTH {
        return;
    }
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        0u8.hash(hasher);
        return;
    };
    (
        meta.ino(),
        meta.mode(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec(),
    )
        .hash(hasher);
    if meta.is_dir() {
        // A symlink cannot change in place, only be replaced, which changes the
        // directory's own mtime (hashed above): no need to stat each of the hundreds
        // in ssl/certs.
        let mut children: Vec<_> = std::fs::read_dir(path)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| (e.file_name(), e.file_type().is_ok_and(|t| t.is_symlink())))
                    .collect()
            })
            .unwrap_or_default();
        children.sort();
        for (child, symlink) in children {
            child.hash(hasher);
            if symlink {
                *seen += 1;
            } else {
                hash_entry(&path.join(child), depth + 1, seen, hasher);
            }
        }
    }
}

/// Builds a complete copy in a fresh private directory under `base`.
fn build(
    source: &Path,
    allowed: &[&str],
    synthetic: &[(&str, String)],
    base: &Path,
) -> Result<tempfile::TempDir, SandboxError> {
    let uid = nix::unistd::geteuid().as_raw();
    let dir = tempfile::Builder::new()
        .prefix(&format!("palisade-etc-build-{uid}-"))
        .tempdir_in(base)
        .map_err(|e| {
            SandboxError::io(
                format!("cannot create a directory in {}", base.display()),
                e,
            )
        })?;
    let mut budget = Budget {
        entries: MAX_ENTRIES,
        bytes: MAX_BYTES,
    };
    for entry in allowed {
        let from = source.join(entry);
        let to = dir.path().join(entry);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| SandboxError::io(format!("cannot create {}", parent.display()), e))?;
        }
        copy_entry(&from, &to, 0, &mut budget)?;
    }
    for (name, text) in synthetic {
        let path = dir.path().join(name);
        std::fs::write(&path, text)
            .map_err(|e| SandboxError::io(format!("cannot write {}", path.display()), e))?;
    }
    // Directories readable by the sandbox, writable by nobody else.
    set_mode(dir.path(), 0o755)?;
    std::fs::write(dir.path().join(COMPLETE), "")
        .map_err(|e| SandboxError::io("cannot finish the sandbox's /etc copy", e))?;
    Ok(dir)
}

struct Budget {
    entries: usize,
    bytes: u64,
}

fn set_mode(path: &Path, mode: u32) -> Result<(), SandboxError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| SandboxError::io(format!("cannot set the mode of {}", path.display()), e))
}

/// Where a symlink leads, when that is outside `/usr` (the only host tree a sandbox
/// sees besides this copy): such a link would dangle inside, so its target is copied
/// instead. `None` for links into `/usr` (kept as links) and dangling ones.
fn followed_target(link: &Path) -> Option<PathBuf> {
    let target = std::fs::canonicalize(link).ok()?;
    (!target.starts_with("/usr/")).then_some(target)
}

/// Copies one entry: directories recursively, regular files by content (0644),
/// symlinks as symlinks; anything else, or anything unreadable, is left out.
fn copy_entry(
    from: &Path,
    to: &Path,
    depth: usize,
    budget: &mut Budget,
) -> Result<(), SandboxError> {
    let Ok(meta) = std::fs::symlink_metadata(from) else {
        return Ok(());
    };
    if budget.entries == 0 || depth > MAX_DEPTH {
        return Err(SandboxError::Start(format!(
            "{} holds more than {MAX_ENTRIES} entries or is nested deeper than {MAX_DEPTH}; palisade will not copy it into sandboxes",
            from.display()
        )));
    }
    budget.entries -= 1;
    let file_type = meta.file_type();
    if file_type.is_symlink() {
        // An allowed entry (depth 0) that links outside what the sandbox sees (e.g.
        // `ssl/certs` -> `/etc/pki/…` on some distributions): its target's content, as
        // a bind of the entry showed it. Links further down stay links, as inside a
        // bind, so no link can pull in a file the allow-list does not name.
        match followed_target(from).filter(|_| depth == 0) {
            Some(target) => {
                budget.entries += 1;
                return copy_entry(&target, to, depth + 1, budget);
            }
            None => {
                if let Ok(target) = std::fs::read_link(from) {
                    std::os::unix::fs::symlink(&target, to).map_err(|e| {
                        SandboxError::io(format!("cannot create {}", to.display()), e)
                    })?;
                }
            }
        }
    } else if file_type.is_dir() {
        std::fs::create_dir_all(to)
            .map_err(|e| SandboxError::io(format!("cannot create {}", to.display()), e))?;
        if let Ok(entries) = std::fs::read_dir(from) {
            for entry in entries.flatten() {
                copy_entry(
                    &entry.path(),
                    &to.join(entry.file_name()),
                    depth + 1,
                    budget,
                )?;
            }
        }
        set_mode(to, 0o755)?;
    } else if file_type.is_file() {
        if meta.len() > budget.bytes {
            return Err(SandboxError::Start(format!(
                "the files allowed from /etc exceed {} MiB ({}); palisade will not copy them into sandboxes",
                MAX_BYTES >> 20,
                from.display()
            )));
        }
        match std::fs::copy(from, to) {
            Ok(bytes) => {
                budget.bytes = budget.bytes.saturating_sub(bytes);
                set_mode(to, 0o644)?;
            }
            // Unreadable for this user: the sandbox could not have read it either.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {}
            Err(e) => {
                return Err(SandboxError::io(
                    format!("cannot copy {}", from.display()),
                    e,
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_etc() -> tempfile::TempDir {
        let etc = tempfile::tempdir().unwrap();
        std::fs::write(etc.path().join("allowed.conf"), "a=1\n").unwrap();
        std::fs::write(etc.path().join("shadow"), "root:secret\n").unwrap();
        std::fs::create_dir_all(etc.path().join("ssl/certs")).unwrap();
        std::fs::create_dir_all(etc.path().join("ssl/private")).unwrap();
        std::fs::write(etc.path().join("ssl/private/key.pem"), "KEY").unwrap();
        std::fs::write(etc.path().join("ssl/certs/bundle.crt"), "CERTS").unwrap();
        std::os::unix::fs::symlink(
            "/usr/share/ca-certificates/x.crt",
            etc.path().join("ssl/certs/x.pem"),
        )
        .unwrap();
        etc
    }

    const ALLOWED: &[&str] = &["allowed.conf", "ssl/certs", "missing.conf"];

    #[test]
    fn copies_only_the_allow_list_and_the_synthetic_files() {
        let etc = host_etc();
        let base = tempfile::tempdir().unwrap();
        let synthetic = [(
            "passwd",
            "agent:x:1000:1000::/workspace:/bin/bash\n".to_string(),
        )];
        let tree = prepare(etc.path(), ALLOWED, &synthetic, base.path()).unwrap();
        let root = tree.path();
        assert_eq!(
            std::fs::read_to_string(root.join("allowed.conf")).unwrap(),
            "a=1\n"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("ssl/certs/bundle.crt")).unwrap(),
            "CERTS"
        );
        assert_eq!(
            std::fs::read_link(root.join("ssl/certs/x.pem")).unwrap(),
            Path::new("/usr/share/ca-certificates/x.crt")
        );
        assert!(std::fs::read_to_string(root.join("passwd"))
            .unwrap()
            .starts_with("agent:"));
        for absent in ["shadow", "ssl/private", "missing.conf"] {
            assert!(!root.join(absent).exists(), "{absent} was copied");
        }
        let mode = std::fs::metadata(root).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o755);
    }

    #[test]
    fn links_that_would_dangle_inside_are_copied_by_content() {
        let etc = host_etc();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(elsewhere.path().join("real.conf"), "real\n").unwrap();
        std::os::unix::fs::symlink(
            elsewhere.path().join("real.conf"),
            etc.path().join("linked.conf"),
        )
        .unwrap();
        let base = tempfile::tempdir().unwrap();
        let tree = prepare(etc.path(), &["linked.conf"], &[], base.path()).unwrap();
        let copied = tree.path().join("linked.conf");
        assert!(!std::fs::symlink_metadata(&copied)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_to_string(copied).unwrap(), "real\n");
    }

    #[test]
    fn links_inside_allowed_directories_stay_links() {
        let etc = host_etc();
        // A link to a file the allow-list does not name must not bring its content.
        std::os::unix::fs::symlink(etc.path().join("shadow"), etc.path().join("ssl/certs/evil"))
            .unwrap();
        let base = tempfile::tempdir().unwrap();
        let tree = prepare(etc.path(), ALLOWED, &[], base.path()).unwrap();
        let evil = tree.path().join("ssl/certs/evil");
        assert!(std::fs::symlink_metadata(&evil)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_link(evil).unwrap(), etc.path().join("shadow"));
    }

    #[test]
    fn the_copy_is_reused_until_the_host_changes_then_replaced() {
        let etc = host_etc();
        let base = tempfile::tempdir().unwrap();
        let first = prepare(etc.path(), ALLOWED, &[], base.path()).unwrap();
        let again = prepare(etc.path(), ALLOWED, &[], base.path()).unwrap();
        assert_eq!(
            first.path(),
            again.path(),
            "an unchanged /etc must reuse the copy"
        );
        let old = first.path().to_path_buf();
        drop((first, again));
        // New CA certificates on the host: a new copy, and the unused old one goes.
        std::fs::write(etc.path().join("ssl/certs/new.crt"), "NEW").unwrap();
        let changed = prepare(etc.path(), ALLOWED, &[], base.path()).unwrap();
        assert_ne!(changed.path(), old);
        assert_eq!(
            std::fs::read_to_string(changed.path().join("ssl/certs/new.crt")).unwrap(),
            "NEW"
        );
        // Another test of this process forking meanwhile holds a copy of the old copy's
        // lock until its child execs, which counts as a use for that instant: the next
        // preparation removes it then, within a bounded while.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while old.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the unused old copy was left"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
            drop(prepare(etc.path(), ALLOWED, &[], base.path()).unwrap());
        }
    }

    #[test]
    fn a_copy_in_use_is_kept_when_the_host_changes() {
        let etc = host_etc();
        let base = tempfile::tempdir().unwrap();
        let running = prepare(etc.path(), ALLOWED, &[], base.path()).unwrap();
        std::fs::write(etc.path().join("allowed.conf"), "a=2\n").unwrap();
        let next = prepare(etc.path(), ALLOWED, &[], base.path()).unwrap();
        assert_ne!(running.path(), next.path());
        assert_eq!(
            std::fs::read_to_string(running.path().join("allowed.conf")).unwrap(),
            "a=1\n",
            "a running sandbox's /etc changed under it"
        );
        assert_eq!(
            std::fs::read_to_string(next.path().join("allowed.conf")).unwrap(),
            "a=2\n"
        );
    }

    #[test]
    fn a_shared_name_held_by_someone_else_is_not_used() {
        let etc = host_etc();
        let base = tempfile::tempdir().unwrap();
        let uid = nix::unistd::geteuid().as_raw();
        let name = format!(
            "palisade-etc-{uid}-{:016x}",
            fingerprint(etc.path(), ALLOWED, &[])
        );
        // Someone prepared the name, writable by others: not trusted.
        let planted = base.path().join(name);
        std::fs::create_dir(&planted).unwrap();
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::write(planted.join(COMPLETE), "").unwrap();
        std::fs::write(planted.join("allowed.conf"), "planted\n").unwrap();
        let tree = prepare(etc.path(), ALLOWED, &[], base.path()).unwrap();
        assert_ne!(tree.path(), planted);
        assert_eq!(
            std::fs::read_to_string(tree.path().join("allowed.conf")).unwrap(),
            "a=1\n"
        );
        let private = tree.path().to_path_buf();
        drop(tree);
        assert!(!private.exists(), "a private copy outlived its sandbox");
    }
}
