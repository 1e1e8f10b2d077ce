//! `palisade sandbox image build`: the default OCI image, made on this machine.
//!
//! No registry is needed: `debootstrap --variant=minbase` creates a Debian root
//! filesystem with bash, coreutils, curl, git, python3 (with pip and requests) and CA
//! certificates, which is packed and `podman import`ed (or `docker import`ed) as
//! [`crate::oci::DEFAULT_IMAGE`]. Building is idempotent: an existing image is kept
//! unless `force` is set. A user who cannot run debootstrap (it needs root) can import
//! a root filesystem tarball that root saved with `save_rootfs`.
//!
//! The suite defaults to the host's Debian release, because the `palisade` binary is
//! bind-mounted into the container and needs a C library at least as new as the
//! host's.

use crate::oci::OciTool;
use crate::SandboxError;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const PACKAGES: &[&str] = &[
    "bash",
    "coreutils",
    "curl",
    "git",
    "python3",
    "python3-pip",
    "python3-requests",
    "ca-certificates",
];

#[derive(Clone, Debug)]
pub struct ImageBuild {
    pub tool: OciTool,
    pub tag: String,
    pub suite: String,
    pub mirror: String,
    /// Import this root filesystem tarball instead of running debootstrap.
    pub rootfs_tar: Option<PathBuf>,
    /// Also keep the tarball here (for other users to import).
    pub save_rootfs: Option<PathBuf>,
    pub force: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageOutcome {
    AlreadyPresent,
    Built,
}

impl ImageBuild {
    pub fn new(tool: OciTool) -> Self {
        ImageBuild {
            tool,
            tag: crate::oci::DEFAULT_IMAGE.into(),
            suite: host_suite().unwrap_or_else(|| "bookworm".into()),
            mirror: "http://deb.debian.org/debian".into(),
            rootfs_tar: None,
            save_rootfs: None,
            force: false,
        }
    }

    /// Builds (or keeps) the image, reporting progress line by line.
    pub fn run(&self, progress: &mut dyn FnMut(&str)) -> Result<ImageOutcome, SandboxError> {
        let program = self.tool.program();
        if crate::runtime::which(program).is_none() {
            return Err(SandboxError::MissingTool {
                tool: program.into(),
                hint: format!("install it first (Debian/Ubuntu: `apt-get install {program}`)"),
            });
        }
        if !self.force && self.image_exists() {
            progress(&format!(
                "image {} is already present (use --force to rebuild)",
                self.tag
            ));
            return Ok(ImageOutcome::AlreadyPresent);
        }
        if let Some(tar) = &self.rootfs_tar {
            if !tar.is_file() {
                return Err(SandboxError::Image(format!(
                    "root filesystem tarball {} not found",
                    tar.display()
                )));
            }
            self.import(tar, "[1/1]", progress)?;
            return Ok(ImageOutcome::Built);
        }
        if !nix::unistd::geteuid().is_root() {
            return Err(SandboxError::Image(
                "debootstrap needs root: run `sudo palisade sandbox image build --save-rootfs FILE` once, then `palisade sandbox image build --rootfs-tar FILE` as yourself".into(),
            ));
        }
        for (tool, package) in [("debootstrap", "debootstrap"), ("tar", "tar")] {
            if crate::runtime::which(tool).is_none() && !Path::new("/usr/sbin").join(tool).exists()
            {
                return Err(SandboxError::MissingTool {
                    tool: tool.into(),
                    hint: format!("install it (`apt-get install {package}`)"),
                });
            }
        }
        let scratch = tempfile::Builder::new()
            .prefix("palisade-image-")
            .tempdir_in("/var/tmp")
            .map_err(|e| SandboxError::io("cannot create a build directory in /var/tmp", e))?;
        let rootfs = scratch.path().join("rootfs");
        let started = Instant::now();
        progress(&format!(
            "[1/3] debootstrap --variant=minbase {} from {} (a few minutes)…",
            self.suite, self.mirror
        ));
        let mut debootstrap = Command::new("debootstrap");
        debootstrap
            .arg("--variant=minbase")
            .arg(format!("--include={}", PACKAGES.join(",")))
            .arg(&self.suite)
            .arg(&rootfs)
            .arg(&self.mirror);
        run_with_progress(
            debootstrap,
            "debootstrap",
            Duration::from_secs(30 * 60),
            QUIET,
            progress,
        )
        .map_err(|e| {
            SandboxError::Image(format!(
                "debootstrap failed: {e}; check that the mirror {} is reachable",
                self.mirror
            ))
        })?;
        // Package caches make the image bigger and are useless without a network.
        for dir in ["var/cache/apt/archives", "var/lib/apt/lists"] {
            if let Ok(entries) = std::fs::read_dir(rootfs.join(dir)) {
                for entry in entries.flatten() {
                    if entry.path().is_file() {
                        let _ = std::fs::remove_file(entry.path());
                    }
                }
            }
        }
        // No program in the image may change who runs it (`su`, `mount`, `passwd`…):
        // no-new-privileges already makes the bits void, and without them nothing
        // depends on that.
        let cleared = drop_set_id_bits(&rootfs)
            .map_err(|e| SandboxError::io("cannot clear set-id bits in the root filesystem", e))?;
        progress(&format!(
            "cleared the set-user-id and set-group-id bits of {cleared} programs"
        ));
        let tar = match &self.save_rootfs {
            Some(path) => path.clone(),
            None => scratch.path().join("rootfs.tar"),
        };
        progress(&format!("[1/3] done after {}", elapsed(started)));
        let packing = Instant::now();
        progress("[2/3] packing the root filesystem…");
        let mut pack = Command::new("tar");
        pack.arg("--numeric-owner")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".");
        run_with_progress(pack, "tar", Duration::from_secs(10 * 60), QUIET, progress)
            .map_err(|e| SandboxError::Image(format!("packing the root filesystem failed: {e}")))?;
        progress(&format!("[2/3] done after {}", elapsed(packing)));
        if self.save_rootfs.is_some() {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&tar, std::fs::Permissions::from_mode(0o644));
            progress(&format!("saved the root filesystem as {}", tar.display()));
        }
        self.import(&tar, "[3/3]", progress)?;
        progress(&format!("built in {}", elapsed(started)));
        Ok(ImageOutcome::Built)
    }

    fn image_exists(&self) -> bool {
        self.tool
            .command()
            .args(["image", "inspect", "--format", "{{.Id}}", &self.tag])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    fn import(
        &self,
        tar: &Path,
        step: &str,
        progress: &mut dyn FnMut(&str),
    ) -> Result<(), SandboxError> {
        let started = Instant::now();
        progress(&format!("{step} importing as {}…", self.tag));
        let mut import = self.tool.command();
        import
            .args(["import", "--change", "CMD [\"/bin/bash\"]"])
            .arg(tar)
            .arg(&self.tag);
        let what = format!("{} import", self.tool.program());
        run_with_progress(import, &what, Duration::from_secs(10 * 60), QUIET, progress).map_err(
            |e| SandboxError::Image(format!("{} import failed: {e}", self.tool.program())),
        )?;
        progress(&format!(
            "{step} done after {}: image {} is ready",
            elapsed(started),
            self.tag
        ));
        Ok(())
    }
}

/// The host's Debian codename, from /etc/os-release.
/// Clears the set-user-id and set-group-id bits of every regular file under `root`
/// (links are not followed); returns how many files had one.
pub fn drop_set_id_bits(root: &Path) -> std::io::Result<usize> {
    use std::os::unix::fs::PermissionsExt;
    const SET_ID: u32 = 0o6000;
    let mut cleared = 0;
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = std::fs::symlink_metadata(entry.path())?;
            if meta.is_dir() {
                pending.push(entry.path());
            } else if meta.is_file() && meta.permissions().mode() & SET_ID != 0 {
                let mode = meta.permissions().mode() & !SET_ID;
                std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(mode))?;
                cleared += 1;
            }
        }
    }
    Ok(cleared)
}

pub fn host_suite() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    let is_debian = text.lines().any(|l| l == "ID=debian");
    let codename = text
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_string())?;
    is_debian.then_some(codename)
}

/// How long a step prints nothing before a line says it is still running.
const QUIET: Duration = Duration::from_secs(15);

/// `2m 31s`, whole seconds.
fn elapsed(since: Instant) -> String {
    humantime::format_duration(Duration::from_secs(since.elapsed().as_secs())).to_string()
}

/// Runs `command` (`what`, in progress lines), passing each output line to `progress`
/// and, after [`QUIET`] without any, a line saying it still runs; killed at `limit`.
fn run_with_progress(
    mut command: Command,
    what: &str,
    limit: Duration,
    quiet: Duration,
    progress: &mut dyn FnMut(&str),
) -> Result<(), String> {
    let started = Instant::now();
    let mut heard = Instant::now();
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|e| e.to_string())?;
    let (sender, receiver) = std::sync::mpsc::sync_channel::<String>(256);
    let mut readers = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        let sender = sender.clone();
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        }));
    }
    if let Some(stderr) = child.stderr.take() {
        let sender = sender.clone();
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        }));
    }
    drop(sender);
    let deadline = Instant::now() + limit;
    let mut last = Vec::new();
    loop {
        match receiver.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                heard = Instant::now();
                progress(&format!("  {line}"));
                last.push(line);
                if last.len() > 5 {
                    last.remove(0);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if heard.elapsed() >= quiet {
                    heard = Instant::now();
                    progress(&format!(
                        "  … {what} is still running ({})",
                        elapsed(started)
                    ));
                }
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "timed out after {}",
                humantime::format_duration(limit)
            ));
        }
    }
    for reader in readers {
        let _ = reader.join();
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{status}; last output: {}", last.join(" | ")))
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn set_id_bits_are_cleared_and_links_left_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        let su = root.join("usr/bin/su");
        std::fs::write(&su, b"").unwrap();
        std::fs::set_permissions(&su, std::fs::Permissions::from_mode(0o4755)).unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, b"").unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o2755)).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("usr/bin/link")).unwrap();
        assert_eq!(drop_set_id_bits(&root).unwrap(), 1);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&su), 0o755);
        assert_eq!(mode(&outside), 0o2755, "a link was followed");
    }
    use super::*;

    #[test]
    fn steps_report_their_output_and_say_when_they_are_quiet() {
        let mut lines = Vec::new();
        let mut command = Command::new("sh");
        command.args(["-c", "echo one; echo two >&2; sleep 0.5; echo three"]);
        run_with_progress(
            command,
            "the step",
            Duration::from_secs(10),
            Duration::from_millis(200),
            &mut |line| lines.push(line.to_string()),
        )
        .unwrap();
        for expected in ["  one", "  two", "  three"] {
            assert!(lines.iter().any(|l| l == expected), "{expected}: {lines:?}");
        }
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("  … the step is still running")),
            "{lines:?}"
        );
        let mut failing = Command::new("sh");
        failing.args(["-c", "echo why; exit 3"]);
        let error = run_with_progress(failing, "x", Duration::from_secs(10), QUIET, &mut |_| {})
            .unwrap_err();
        assert!(error.contains("why"), "{error}");
    }
}
