//! Extra mounts: `--mount SRC:DST[:rw]`, an allow-list of where SRC may come from, and
//! the paths no sandbox may ever see.
//!
//! Sources are resolved (symlinks followed) before any check, and a source is refused
//! if it *is*, *lies inside* or *contains* a refused path: mounting `~` would otherwise
//! expose `~/.ssh` and `$PALISADE_HOME`. Shared temporary directories (`/tmp`,
//! `/var/tmp`, `$TMPDIR`) hold other programs' sockets (ssh-agent, X11, …) and
//! palisade's own run files: a source may lie inside one, but may not be or contain
//! one, nor be one of palisade's own entries there (`palisade-sandbox-*`, `palisade-etc-*`). Destinations live under
//! `/mnt` or `/data`, so a mount can never shadow a system directory or
//! `/run/palisade`.

//!
//! A runtime that takes only paths (podman, docker) resolves a source again when it
//! mounts it, after these checks: an agent that can write a parent of the source could
//! swap it for a link in between. So every runtime's sources are opened at launch and
//! checked to be what was checked ([`open_as_checked`]): bubblewrap mounts the
//! descriptor (`--bind-fd`), and for every runtime the shim inside the sandbox refuses
//! to start the command unless what is mounted at each destination has the opened
//! source's device and inode (`--expect-mount`).

use crate::SandboxError;
use std::path::{Component, Path, PathBuf};

/// An extra mount's source, opened by the parent and checked to be the very folder
/// that was checked: its descriptor (for bubblewrap's `--bind-fd`) and its device and
/// inode (for the shim's `--expect-mount`).
pub struct OpenedSource {
    pub fd: std::os::fd::OwnedFd,
    pub identity: (u64, u64),
}

/// Opens `mount`'s source and checks that the kernel names what it opened by the very
/// path that was checked: a link swapped into its path since (by an agent that can
/// write a part of it) leads elsewhere, and is refused.
pub fn open_as_checked(mount: &Mount) -> Result<OpenedSource, SandboxError> {
    use std::os::fd::AsRawFd;
    let fd = nix::fcntl::open(
        &mount.source,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| {
        SandboxError::io(
            format!("cannot open {} to mount it", mount.source.display()),
            e.into(),
        )
    })?;
    // What was opened, named by the kernel now: it must be what was checked.
    let opened = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| SandboxError::io("cannot tell what was opened", e))?;
    if opened != mount.source {
        return Err(SandboxError::Start(format!(
            "{} changed while the sandbox was starting (it now leads to {}); not mounted",
            mount.source.display(),
            opened.display()
        )));
    }
    let stat = nix::sys::stat::fstat(&fd)
        .map_err(|e| SandboxError::io("cannot read what was opened", e.into()))?;
    Ok(OpenedSource {
        fd,
        identity: (stat.st_dev, stat.st_ino),
    })
}

/// One validated extra mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// Canonical host path.
    pub source: PathBuf,
    /// Absolute, normalised path inside the sandbox.
    pub destination: PathBuf,
    pub writable: bool,
}

/// Where extra mounts may come from and what they must never reach.
#[derive(Clone, Debug)]
pub struct MountPolicy {
    /// Roots under which a source may lie.
    pub allowed_roots: Vec<PathBuf>,
    /// Paths a source may neither be, lie inside, nor contain.
    pub refused: Vec<(PathBuf, String)>,
    /// Shared directories a source may lie inside but neither be nor contain; palisade's
    /// own entries in them are refused whole.
    pub shared_dirs: Vec<PathBuf>,
}

/// What a shared temporary directory holds that no sandbox may be given.
const SHARED_DIR_REASON: &str = "it is (or holds) a shared temporary directory, with other programs' sockets (ssh-agent, X11, …) and palisade's run files; mount a folder inside it instead";
/// Names of palisade's own entries in temporary directories (run directories, `/etc`
/// copies, and in-process vault folders of older versions).
const PALISADE_ENTRIES: [&str; 3] = ["palisade-sandbox-", "palisade-etc-", "palisade-vault-"];
const PALISADE_ENTRY_REASON: &str =
    "it is (or lies inside) palisade's own run files in a temporary directory";

/// Where a mount may go: folders on the sandbox's own root, which nothing of the agent's
/// exists in while bwrap builds the sandbox. Not the workspace: a link an agent left
/// there would lead bwrap's mount (made as root, for root's sandboxes) anywhere it
/// points, over the sandbox's libraries or on the host.
const DESTINATION_ROOTS: &[&str] = &["/mnt", "/data"];

impl MountPolicy {
    /// The default policy for a sandbox of `agent` under the home at `palisade_home`.
    ///
    /// Allowed roots: the invoking user's home directory, `/home`, `/srv`, `/opt`,
    /// `/mnt`, `/media`, `/data`, `/tmp`, `/var/tmp`, plus every entry of
    /// `PALISADE_MOUNT_ALLOW` (colon-separated). Refused, whatever the allow-list says:
    /// `$PALISADE_HOME` (the master key, the database, every agent's workspace),
    /// `~/.ssh`, `~/.aws`, `~/.gnupg`, `~/.config/gcloud`, `~/.kube`, `~/.docker`,
    /// `/root`, `/etc`, `/run` and `$XDG_RUNTIME_DIR` (where sockets live), the docker
    /// and podman sockets, and `/`. Shared temporary directories: `/tmp`, `/var/tmp`
    /// and the process's temporary directory.
    pub fn for_host(palisade_home: &Path) -> Self {
        let user_home = std::env::var_os("HOME").map(PathBuf::from);
        let mut allowed_roots: Vec<PathBuf> = [
            "/home", "/srv", "/opt", "/mnt", "/media", "/data", "/tmp", "/var/tmp",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        if let Some(home) = &user_home {
            allowed_roots.push(home.clone());
        }
        if let Some(extra) = std::env::var_os("PALISADE_MOUNT_ALLOW") {
            allowed_roots.extend(std::env::split_paths(&extra).filter(|p| p.is_absolute()));
        }
        let mut refused: Vec<(PathBuf, String)> = vec![(
            palisade_home.to_path_buf(),
            "it is (or holds) PALISADE_HOME: the master key, the database and every agent's workspace".into(),
        )];
        if let Some(home) = &user_home {
            for (dir, what) in [
                (".ssh", "SSH keys"),
                (".aws", "AWS credentials"),
                (".gnupg", "GnuPG keys"),
                (".config/gcloud", "Google Cloud credentials"),
                (".kube", "Kubernetes credentials"),
                (".docker", "Docker credentials"),
                (".palisade", "the default PALISADE_HOME"),
            ] {
                refused.push((home.join(dir), format!("it is (or holds) {what}")));
            }
        }
        refused.push((
            "/root".into(),
            "it is (or holds) root's home directory".into(),
        ));
        refused.push((
            "/etc".into(),
            "it is (or holds) /etc, with /etc/shadow and host configuration".into(),
        ));
        for socket in [
            "/var/run/docker.sock",
            "/run/docker.sock",
            "/run/docker",
            "/run/podman",
            "/var/run/podman",
            "/run/containerd",
        ] {
            refused.push((
                socket.into(),
                "it is a container engine socket, which would give host root".into(),
            ));
        }
        for run in ["/run", "/var/run"] {
            refused.push((
                run.into(),
                "it is (or holds) /run, where the host's sockets live".into(),
            ));
        }
        if let Some(runtime_dir) = std::env::var_os("XDG_RUNTIME_DIR") {
            let runtime_dir = PathBuf::from(runtime_dir);
            refused.push((
                runtime_dir.clone(),
                "it is (or holds) your runtime directory (XDG_RUNTIME_DIR), where your session's sockets live".into(),
            ));
            refused.push((
                runtime_dir.join("podman"),
                "it is a container engine socket, which would give host root".into(),
            ));
            refused.push((
                runtime_dir.join("docker.sock"),
                "it is a container engine socket, which would give host root".into(),
            ));
        }
        refused.push(("/".into(), "it is the whole host filesystem".into()));
        let mut shared_dirs: Vec<PathBuf> = vec!["/tmp".into(), "/var/tmp".into()];
        shared_dirs.push(std::env::temp_dir());
        MountPolicy {
            allowed_roots,
            refused,
            shared_dirs,
        }
    }

    /// Parses and checks one `SRC:DST[:rw]` (or `:ro`) spec.
    pub fn check(&self, spec: &str) -> Result<Mount, SandboxError> {
        let bad = |reason: &str| SandboxError::BadMount {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        let parts: Vec<&str> = spec.split(':').collect();
        let (source, destination, writable) = match parts.as_slice() {
            [s, d] => (*s, *d, false),
            [s, d, "rw"] => (*s, *d, true),
            [s, d, "ro"] => (*s, *d, false),
            [_, _, other] => {
                return Err(bad(&format!(
                    "unknown mode {other:?}; use SRC:DST, SRC:DST:ro or SRC:DST:rw"
                )))
            }
            _ => {
                return Err(bad(
                    "use SRC:DST[:rw] with absolute paths and no ':' inside them",
                ))
            }
        };
        if source.is_empty() || destination.is_empty() {
            return Err(bad("use SRC:DST[:rw] with both paths given"));
        }
        let source_path = Path::new(source);
        if !source_path.is_absolute() {
            return Err(bad("SRC must be an absolute path"));
        }
        let destination = normalise_destination(destination).ok_or_else(|| {
            bad("DST must be an absolute path without '..' under /mnt or /data (e.g. /mnt/data)")
        })?;
        if let Some(problem) = foreign_link(source_path) {
            return Err(bad(&problem));
        }
        let canonical = std::fs::canonicalize(source_path).map_err(|e| {
            bad(&format!(
                "SRC cannot be resolved ({e}); check that it exists"
            ))
        })?;
        self.check_source(&canonical)?;
        Ok(Mount {
            source: canonical,
            destination,
            writable,
        })
    }

    /// Resolves `source` (absolute, existing, a directory) to its canonical path and
    /// checks it against the policy: for folders named once and mounted at every launch.
    pub fn check_folder(&self, source: &Path) -> Result<PathBuf, SandboxError> {
        let bad = |reason: String| SandboxError::BadMount {
            spec: source.display().to_string(),
            reason,
        };
        if !source.is_absolute() {
            return Err(bad("the folder must be an absolute path".into()));
        }
        if let Some(problem) = foreign_link(source) {
            return Err(bad(problem));
        }
        let canonical = std::fs::canonicalize(source)
            .map_err(|e| bad(format!("it cannot be resolved ({e}); check that it exists")))?;
        if !canonical.is_dir() {
            return Err(bad("it is not a directory".into()));
        }
        self.check_source(&canonical)?;
        Ok(canonical)
    }

    fn check_source(&self, source: &Path) -> Result<(), SandboxError> {
        for (refused, reason) in &self.refused {
            let refused_canonical =
                std::fs::canonicalize(refused).unwrap_or_else(|_| refused.clone());
            for candidate in [refused, &refused_canonical] {
                // `/` is refused only as itself: everything lies inside it.
                let inside = candidate != Path::new("/") && source.starts_with(candidate);
                if inside || candidate.starts_with(source) {
                    return Err(SandboxError::RefusedMount {
                        path: source.to_path_buf(),
                        reason: reason.clone(),
                    });
                }
            }
        }
        for shared in &self.shared_dirs {
            let canonical = std::fs::canonicalize(shared).unwrap_or_else(|_| shared.clone());
            for candidate in [shared, &canonical] {
                if candidate.starts_with(source) {
                    return Err(SandboxError::RefusedMount {
                        path: source.to_path_buf(),
                        reason: SHARED_DIR_REASON.into(),
                    });
                }
                let entry = source
                    .strip_prefix(candidate)
                    .ok()
                    .and_then(|rest| rest.components().next());
                let ours = |name: &str| PALISADE_ENTRIES.iter().any(|p| name.starts_with(p));
                if entry.is_some_and(|e| ours(&e.as_os_str().to_string_lossy())) {
                    return Err(SandboxError::RefusedMount {
                        path: source.to_path_buf(),
                        reason: PALISADE_ENTRY_REASON.into(),
                    });
                }
            }
        }
        let allowed = self.allowed_roots.iter().any(|root| {
            let root_canonical = std::fs::canonicalize(root).unwrap_or_else(|_| root.clone());
            source.starts_with(&root_canonical)
        });
        if !allowed {
            return Err(SandboxError::RefusedMount {
                path: source.to_path_buf(),
                reason: "it is outside the mount allow-list (your home, /home, /srv, /opt, /mnt, /media, /data, /tmp, /var/tmp); add its parent to PALISADE_MOUNT_ALLOW to allow it".into(),
            });
        }
        Ok(())
    }
}

/// A symbolic link on the way to `path` (its own components and every link's target,
/// as the kernel resolves them) that belongs to neither root nor this user: an agent's
/// (root's agents are a uid of their own), left in a folder shared with it, would lead
/// a later mount of a path through it to any folder it names. Said as the refusal.
fn foreign_link(path: &Path) -> Option<String> {
    use std::collections::VecDeque;
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid().as_raw();
    let parts = |p: &Path| -> VecDeque<std::ffi::OsString> {
        p.components()
            .map(|c| match c {
                Component::RootDir => "/".into(),
                other => other.as_os_str().to_os_string(),
            })
            .collect()
    };
    let mut pending = parts(path);
    let mut current = PathBuf::from("/");
    // As the kernel does, give up after this many links.
    let mut links_left = 40;
    while let Some(part) = pending.pop_front() {
        match part.to_str() {
            Some("/") => current = PathBuf::from("/"),
            Some(".") => {}
            Some("..") => {
                current.pop();
            }
            _ => {
                let next = current.join(&part);
                let Ok(meta) = std::fs::symlink_metadata(&next) else {
                    return None;
                };
                if !meta.file_type().is_symlink() {
                    current = next;
                    continue;
                }
                if meta.uid() != 0 && meta.uid() != me {
                    return Some(format!(
                        "it passes through {}, a link owned by uid {} (an agent's, perhaps), which could lead it anywhere; give the path it leads to",
                        next.display(),
                        meta.uid()
                    ));
                }
                links_left -= 1;
                let target = std::fs::read_link(&next).ok()?;
                if links_left == 0 {
                    return None;
                }
                let mut resolved = parts(&target);
                resolved.extend(pending);
                pending = resolved;
            }
        }
    }
    None
}

fn normalise_destination(destination: &str) -> Option<PathBuf> {
    let path = Path::new(destination);
    if !path.is_absolute() {
        return None;
    }
    let mut normal = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::RootDir => {}
            Component::Normal(part) => normal.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    let under_allowed_root = DESTINATION_ROOTS
        .iter()
        .any(|root| normal.starts_with(root) && normal != Path::new(root));
    under_allowed_root.then_some(normal)
}

#[cfg(test)]
mod tests {

    /// A source is what was checked or nothing: one reached through a link swapped into
    /// its path, or named by a path the kernel spells otherwise, is refused; the
    /// folder itself gives its device and inode.
    #[test]
    fn a_source_is_opened_only_as_it_was_checked() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let real = root.join("real");
        std::fs::create_dir_all(real.join("inner")).unwrap();
        let mount = |source: PathBuf| Mount {
            source,
            destination: PathBuf::from("/mnt/x"),
            writable: false,
        };
        let meta = std::fs::metadata(real.join("inner")).unwrap();
        let opened = open_as_checked(&mount(real.join("inner"))).unwrap();
        assert_eq!(opened.identity, (meta.dev(), meta.ino()));
        std::os::unix::fs::symlink(&real, root.join("link")).unwrap();
        std::os::unix::fs::symlink(real.join("inner"), root.join("last")).unwrap();
        assert!(open_as_checked(&mount(root.join("link").join("inner"))).is_err());
        assert!(open_as_checked(&mount(root.join("last"))).is_err());
        assert!(open_as_checked(&mount(root.join("real/../real/inner"))).is_err());
    }
    use super::*;

    fn policy(home: &Path, allowed: &Path) -> MountPolicy {
        let mut policy = MountPolicy::for_host(home);
        policy.allowed_roots = vec![allowed.to_path_buf()];
        policy
    }

    #[test]
    fn parses_modes_and_normalises_destinations() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let policy = policy(&home, dir.path());
        let spec = format!("{}:/mnt/./data", data.display());
        let mount = policy.check(&spec).unwrap();
        assert_eq!(mount.destination, PathBuf::from("/mnt/data"));
        assert!(!mount.writable);
        assert!(policy.check(&format!("{spec}:rw")).unwrap().writable);
        assert!(!policy.check(&format!("{spec}:ro")).unwrap().writable);
    }

    /// An agent's link in a folder shared with it would lead a later mount of a path
    /// through it anywhere: a path passing through a link of another user is refused,
    /// wherever on the way the link is, while links of root or this user are followed.
    #[test]
    fn a_path_through_another_users_link_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPING: a link of another user is made only as root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let policy = policy(&dir.path().join("home"), dir.path());
        let share = dir.path().join("share");
        let victim = dir.path().join("victim");
        std::fs::create_dir_all(&share).unwrap();
        std::fs::create_dir_all(victim.join("inner")).unwrap();
        // A link at `at` to `target`, owned by an agent's uid.
        let agents_link = |target: &Path, at: &Path| {
            std::os::unix::fs::symlink(target, at).unwrap();
            nix::unistd::fchownat(
                nix::fcntl::AT_FDCWD,
                at,
                Some(nix::unistd::Uid::from_raw(1_879_049_192)),
                None,
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .unwrap();
        };
        let planted = share.join("project");
        agents_link(&victim, &planted);
        // Root's own link to the share, then the agent's link inside it.
        let via = dir.path().join("via");
        std::os::unix::fs::symlink(&share, &via).unwrap();
        // Other spellings of the same path, and a relative link of the agent's to its
        // own link.
        std::fs::create_dir(share.join("x")).unwrap();
        let relative = share.join("rel");
        agents_link(Path::new("project"), &relative);
        let spelled = |text: &str| PathBuf::from(format!("{}{text}", share.display()));
        for path in [
            planted.join("inner"),
            via.join("project/inner"),
            planted.clone(),
            spelled("//project/inner"),
            spelled("/./project/"),
            spelled("/x/../project"),
            relative.join("inner"),
        ] {
            let error = policy
                .check(&format!("{}:/mnt/p", path.display()))
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("a link owned by uid 1879049192"),
                "{}: {error}",
                path.display()
            );
            let error = policy.check_folder(&path).unwrap_err().to_string();
            assert!(error.contains("a link owned by uid 1879049192"), "{error}");
        }
        // Root's link alone is followed as before.
        let mount = policy.check(&format!("{}:/mnt/p", via.display())).unwrap();
        assert_eq!(mount.source, std::fs::canonicalize(&share).unwrap());
    }

    #[test]
    fn rejects_malformed_specs() {
        let dir = tempfile::tempdir().unwrap();
        let policy = policy(&dir.path().join("home"), dir.path());
        let src = dir.path().display().to_string();
        for spec in [
            "nocolon".to_string(),
            format!("{src}:/mnt/x:rx"),
            format!("{src}:relative"),
            "relative:/mnt/x".to_string(),
            format!("{src}:/mnt/../etc"),
            format!("{src}:/usr/lib"),
            format!("{src}:/mnt"),
            format!("{src}:/run/palisade/vault.sock"),
            format!("{src}/missing:/mnt/x"),
            // The workspace holds the agent's links, which bwrap would follow.
            format!("{src}:/workspace/x"),
            format!("{src}:/workspace/app/vendor/lib"),
        ] {
            let err = policy.check(&spec).unwrap_err();
            assert!(
                matches!(err, SandboxError::BadMount { .. }),
                "{spec}: {err}"
            );
        }
    }

    #[test]
    fn refuses_home_its_parents_and_secret_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("palisade-home");
        std::fs::create_dir_all(home.join("agents/other/workspace")).unwrap();
        let policy = policy(&home, dir.path());
        for src in [
            home.clone(),
            home.join("agents/other/workspace"),
            dir.path().to_path_buf(),
        ] {
            let err = policy
                .check(&format!("{}:/mnt/x", src.display()))
                .unwrap_err();
            assert!(
                matches!(err, SandboxError::RefusedMount { .. }),
                "{}: {err}",
                src.display()
            );
        }
        for src in ["/root", "/etc", "/etc/shadow", "/"] {
            if Path::new(src).exists() {
                let err = policy.check(&format!("{src}:/mnt/x")).unwrap_err();
                assert!(
                    matches!(err, SandboxError::RefusedMount { .. }),
                    "{src}: {err}"
                );
            }
        }
    }

    #[test]
    fn refuses_symlinks_into_refused_paths() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("palisade-home");
        std::fs::create_dir_all(&home).unwrap();
        let link = dir.path().join("innocent");
        std::os::unix::fs::symlink(&home, &link).unwrap();
        let policy = policy(&home, dir.path());
        let err = policy
            .check(&format!("{}:/mnt/x", link.display()))
            .unwrap_err();
        assert!(matches!(err, SandboxError::RefusedMount { .. }), "{err}");
    }

    #[test]
    fn shared_temporary_directories_are_refused_whole_but_not_what_lies_inside() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("tmp");
        let project = shared.join("project");
        let run_files = shared.join("palisade-sandbox-1-abc");
        for path in [&project, &run_files.join("inner")] {
            std::fs::create_dir_all(path).unwrap();
        }
        let mut policy = policy(&dir.path().join("home"), dir.path());
        policy.shared_dirs = vec![shared.clone()];
        assert!(policy
            .check(&format!("{}:/mnt/p", project.display()))
            .is_ok());
        for src in [
            &shared,
            &dir.path().to_path_buf(),
            &run_files,
            &run_files.join("inner"),
        ] {
            let err = policy
                .check(&format!("{}:/mnt/x", src.display()))
                .unwrap_err();
            assert!(
                matches!(err, SandboxError::RefusedMount { .. }),
                "{}: {err}",
                src.display()
            );
        }
        // The host's own: /tmp itself.
        let host = MountPolicy::for_host(Path::new("/nonexistent/palisade-home"));
        let err = host.check("/tmp:/mnt/tmp").unwrap_err();
        assert!(
            err.to_string().contains("shared temporary directory"),
            "{err}"
        );
    }

    #[test]
    fn refuses_sources_outside_the_allow_list() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let policy = policy(&dir.path().join("home"), &dir.path().join("allowed"));
        let err = policy
            .check(&format!("{}:/mnt/x", outside.path().display()))
            .unwrap_err();
        assert!(err.to_string().contains("allow-list"), "{err}");
    }
}
