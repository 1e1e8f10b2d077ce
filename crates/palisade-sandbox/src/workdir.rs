//! The per-run directory on the host: the CA bundle, podman's seccomp profile and the small
//! synthetic `/etc` files a sandbox gets, in a private (0700) temporary directory named after
//! the owning process, so a run that was `kill -9`ed is cleaned up by the next one.

use crate::SandboxError;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const PREFIX: &str = "palisade-sandbox-";

pub(crate) struct Workdir {
    dir: tempfile::TempDir,
}

impl Workdir {
    pub(crate) fn create(ca_bundle: &str) -> Result<Self, SandboxError> {
        let base = std::env::temp_dir();
        cleanup_stale(&base);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{}-", std::process::id()))
            .tempdir_in(&base)
            .map_err(|e| {
                SandboxError::io(
                    format!("cannot create a run directory in {}", base.display()),
                    e,
                )
            })?;
        let workdir = Workdir { dir };
        workdir.write("ca-bundle.pem", ca_bundle)?;
        let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
        for (name, text) in synthetic_etc(uid.as_raw(), gid.as_raw()) {
            workdir.write(name, &text)?;
        }
        Ok(workdir)
    }

    pub(crate) fn write(&self, name: &str, text: &str) -> Result<(), SandboxError> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text)
            .map_err(|e| SandboxError::io(format!("cannot write {}", path.display()), e))?;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644));
        Ok(())
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The `/etc` files every sandbox gets instead of the host's: users root, the caller
/// (as `agent`) and nobody; loopback names only.
/// `uid`/`gid`: the agent's ids inside the sandbox.
pub(crate) fn synthetic_etc(uid: u32, gid: u32) -> Vec<(&'static str, String)> {
    let mut passwd = String::from("root:x:0:0:root:/workspace:/bin/bash\n");
    let mut group = String::from("root:x:0:\n");
    if uid != 0 {
        passwd.push_str(&format!("agent:x:{uid}:{gid}:agent:/workspace:/bin/bash\n"));
        group.push_str(&format!("agent:x:{gid}:\n"));
    }
    passwd.push_str("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
    group.push_str("nogroup:x:65534:\n");
    vec![
        ("passwd", passwd),
        ("group", group),
        (
            "hosts",
            "127.0.0.1\tlocalhost palisade\n::1\tlocalhost ip6-localhost ip6-loopback\n".into(),
        ),
    ]
}

fn cleanup_stale(base: &Path) {
    remove_stale_run_dirs(base, PREFIX);
}

/// Whether `pid` names a process that still runs: a zombie (killed, not yet reaped by
/// whoever inherited it) counts as gone.
pub(crate) fn process_alive(pid: impl std::fmt::Display) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next()),
            Some("Z" | "X")
        ),
        Err(_) => false,
    }
}

/// Removes this user's directories in `base` named `<prefix><pid>-…` whose process is
/// gone (it was `kill -9`ed before it could remove them).
pub fn remove_stale_run_dirs(base: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let mine = std::fs::symlink_metadata(entry.path())
            .map(|m| {
                m.is_dir()
                    && std::os::unix::fs::MetadataExt::uid(&m) == nix::unistd::getuid().as_raw()
            })
            .unwrap_or(false);
        if mine && !process_alive(owner) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zombies_and_missing_processes_are_not_alive() {
        assert!(process_alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Exited but not reaped: a zombie.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while process_alive(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "never became a zombie"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        child.wait().unwrap();
        assert!(!process_alive(pid));
    }

    #[test]
    fn stale_run_dirs_of_dead_owners_are_removed_and_live_ones_kept() {
        let base = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = base.path().join(format!("palisade-x-{dead}-abc"));
        let live = base
            .path()
            .join(format!("palisade-x-{}-abc", std::process::id()));
        let other = base.path().join("palisade-x-notapid");
        for dir in [&stale, &live, &other] {
            std::fs::create_dir(dir).unwrap();
        }
        remove_stale_run_dirs(base.path(), "palisade-x-");
        assert!(!stale.exists());
        assert!(live.exists() && other.exists());
    }
}
