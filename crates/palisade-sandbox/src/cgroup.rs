//! Cgroups for bubblewrap sandboxes: a fresh leaf per sandbox, limits written before
//! the sandbox starts, the sandbox placed in it from the child side of the fork (so no
//! process of it ever runs outside), everything killed and the leaf removed at the end.
//!
//! cgroup v2 is used where its controllers can be enabled for a `palisade` subtree of
//! the root; otherwise the v1 `memory`, `pids` and `cpu` hierarchies, each leaf nested
//! under this process's own cgroup so a host limit on palisade still covers its
//! sandboxes. Leaves are named `palisade-<owner pid>-<n>`; leaves whose owner is gone
//! (a `kill -9`) are removed the next time any sandbox starts.
//!
//! Written by hand: the few files involved do not justify a dependency, and the
//! placement has to happen between fork and exec, where only raw syscalls are safe.

use crate::limits::{LimitMechanism, LimitReport, Limits};
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const V2_PARENT: &str = "palisade";
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// What the host offers.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct HostCgroups {
    /// Mount point of a cgroup2 hierarchy, and the controllers it offers.
    pub v2: Option<(PathBuf, Vec<String>)>,
    /// v1 controller → directory of this process's cgroup in that hierarchy.
    pub v1: Vec<(String, PathBuf)>,
}

impl HostCgroups {
    pub fn detect() -> Self {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mut host = HostCgroups::default();
        for line in mounts.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 4 {
                continue;
            }
            let (mount_point, fs_type, options) = (fields[1], fields[2], fields[3]);
            if fs_type == "cgroup2" && host.v2.is_none() {
                let controllers =
                    std::fs::read_to_string(Path::new(mount_point).join("cgroup.controllers"))
                        .unwrap_or_default()
                        .split_whitespace()
                        .map(str::to_string)
                        .collect();
                host.v2 = Some((PathBuf::from(mount_point), controllers));
            } else if fs_type == "cgroup" {
                for controller in ["memory", "pids", "cpu"] {
                    if options.split(',').any(|o| o == controller) {
                        let relative = own
                            .lines()
                            .filter_map(|l| {
                                let mut parts = l.splitn(3, ':');
                                let _id = parts.next()?;
                                let names = parts.next()?;
                                let path = parts.next()?;
                                names
                                    .split(',')
                                    .any(|n| n == controller)
                                    .then(|| path.to_string())
                            })
                            .next()
                            .unwrap_or_else(|| "/".into());
                        let dir = Path::new(mount_point).join(relative.trim_start_matches('/'));
                        host.v1.push((controller.to_string(), dir));
                    }
                }
            }
        }
        host
    }

    fn v2_with(&self, controllers: &[&str]) -> Option<PathBuf> {
        let (root, offered) = self.v2.as_ref()?;
        controllers
            .iter()
            .all(|c| offered.iter().any(|o| o == c))
            .then(|| root.clone())
    }
}

/// A sandbox's cgroup leaves (one for v2, one per controller for v1).
#[derive(Debug)]
pub struct Cgroup {
    leaves: Vec<PathBuf>,
    procs_files: Vec<CString>,
}

impl Cgroup {
    /// Creates a leaf with `limits` applied, returning what was applied and how. `None`
    /// when no controller could be used; the reports then say why.
    pub fn create(limits: &Limits) -> (Option<Cgroup>, Vec<LimitReport>) {
        cleanup_stale();
        let host = HostCgroups::detect();
        let wanted: Vec<&str> = [
            limits.memory.map(|_| "memory"),
            limits.pids.map(|_| "pids"),
            limits.cpus.map(|_| "cpu"),
        ]
        .into_iter()
        .flatten()
        .collect();
        let name = format!(
            "palisade-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        if wanted.is_empty() {
            return (None, Vec::new());
        }
        if let Some(root) = host.v2_with(&wanted) {
            match create_v2(&root, &name, limits, &wanted) {
                Ok(cgroup) => {
                    let reports = reports_for(limits, LimitMechanism::CgroupV2, None);
                    return (Some(cgroup), reports);
                }
                Err(reason) => tracing::debug!(%reason, "cgroup v2 unusable, trying v1"),
            }
        }
        let mut leaves = Vec::new();
        let mut reports = Vec::new();
        for controller in &wanted {
            let parent = host
                .v1
                .iter()
                .find(|(c, _)| c == controller)
                .map(|(_, dir)| dir.clone());
            let outcome = match parent {
                None => Err(format!(
                    "no cgroup v1 `{controller}` hierarchy and no cgroup v2 with it"
                )),
                Some(parent) => create_v1_leaf(&parent, &name, controller, limits),
            };
            match outcome {
                Ok(leaf) => {
                    reports.extend(
                        reports_for(limits, LimitMechanism::CgroupV1, None)
                            .into_iter()
                            .filter(|r| controller_of(r.limit) == *controller),
                    );
                    leaves.push(leaf);
                }
                Err(reason) => reports.push(fallback_report(limits, controller, &reason)),
            }
        }
        if leaves.is_empty() {
            return (None, reports);
        }
        let procs_files = leaves
            .iter()
            .filter_map(|l| {
                CString::new(l.join("cgroup.procs").into_os_string().into_encoded_bytes()).ok()
            })
            .collect();
        (
            Some(Cgroup {
                leaves,
                procs_files,
            }),
            reports,
        )
    }

    /// `cgroup.procs` of every leaf, prepared before fork for [`enter_from_child`].
    pub fn procs_files(&self) -> Vec<CString> {
        self.procs_files.clone()
    }

    /// Kills every process left in the leaves, waiting up to 2 s for them to go.
    pub fn kill_all(&self) {
        for leaf in &self.leaves {
            let kill_file = leaf.join("cgroup.kill");
            if kill_file.exists() {
                let _ = std::fs::write(&kill_file, "1");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let mut any = false;
            for leaf in &self.leaves {
                for pid in read_pids(leaf) {
                    any = true;
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            if !any || Instant::now() > deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn leaves(&self) -> &[PathBuf] {
        &self.leaves
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        self.kill_all();
        for leaf in &self.leaves {
            remove_leaf(leaf);
        }
    }
}

/// Moves the calling process into the leaves. Runs between fork and exec: only
/// `open`/`write`/`close` on paths prepared before the fork.
pub fn enter_from_child(procs_files: &[CString]) -> std::io::Result<()> {
    for file in procs_files {
        // SAFETY: plain syscalls on a NUL-terminated path and a static buffer.
        unsafe {
            let fd = nix::libc::open(file.as_ptr(), nix::libc::O_WRONLY | nix::libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let written = nix::libc::write(fd, b"0".as_ptr().cast(), 1);
            let error = std::io::Error::last_os_error();
            nix::libc::close(fd);
            if written != 1 {
                return Err(error);
            }
        }
    }
    Ok(())
}

fn controller_of(limit: &str) -> &'static str {
    match limit {
        "memory" => "memory",
        "pids" => "pids",
        _ => "cpu",
    }
}

fn reports_for(
    limits: &Limits,
    mechanism: LimitMechanism,
    note: Option<String>,
) -> Vec<LimitReport> {
    let mut reports = Vec::new();
    if let Some(memory) = limits.memory {
        reports.push(LimitReport {
            limit: "memory",
            value: crate::limits::format_bytes(memory),
            mechanism,
            note: note.clone(),
        });
    }
    if let Some(pids) = limits.pids {
        reports.push(LimitReport {
            limit: "pids",
            value: pids.to_string(),
            mechanism,
            note: note.clone(),
        });
    }
    if let Some(cpus) = limits.cpus {
        reports.push(LimitReport {
            limit: "cpus",
            value: cpus.to_string(),
            mechanism,
            note,
        });
    }
    reports
}

/// What replaces a cgroup controller that could not be used.
fn fallback_report(limits: &Limits, controller: &str, reason: &str) -> LimitReport {
    let root = nix::unistd::geteuid().is_root();
    match controller {
        "memory" => LimitReport {
            limit: "memory",
            value: crate::limits::format_bytes(limits.memory.unwrap_or(0)),
            mechanism: LimitMechanism::Rlimit,
            note: Some(format!(
                "address-space rlimit per process instead of a cgroup ({reason}); allocations beyond it fail instead of being counted across the sandbox"
            )),
        },
        "pids" if !root => LimitReport {
            limit: "pids",
            value: limits.pids.unwrap_or(0).to_string(),
            mechanism: LimitMechanism::Rlimit,
            note: Some(format!(
                "RLIMIT_NPROC instead of a cgroup ({reason}); it counts this user's processes in the sandbox"
            )),
        },
        "pids" => LimitReport {
            limit: "pids",
            value: limits.pids.unwrap_or(0).to_string(),
            mechanism: LimitMechanism::NotApplied,
            note: Some(format!(
                "{reason}; RLIMIT_NPROC does not bind root, so nothing limits processes"
            )),
        },
        _ => LimitReport {
            limit: "cpus",
            value: limits.cpus.unwrap_or(0.0).to_string(),
            mechanism: LimitMechanism::NotApplied,
            note: Some(format!(
                "{reason}; CPU can only be limited by a cgroup (run as root, or give palisade a delegated cgroup v2 subtree)"
            )),
        },
    }
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn create_v2(root: &Path, name: &str, limits: &Limits, wanted: &[&str]) -> Result<Cgroup, String> {
    let parent = root.join(V2_PARENT);
    let enable: String = wanted.iter().map(|c| format!("+{c} ")).collect();
    write(&root.join("cgroup.subtree_control"), enable.trim())?;
    if !parent.exists() {
        std::fs::create_dir(&parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    write(&parent.join("cgroup.subtree_control"), enable.trim())?;
    let leaf = parent.join(name);
    std::fs::create_dir(&leaf).map_err(|e| format!("cannot create {}: {e}", leaf.display()))?;
    let result = (|| {
        if let Some(memory) = limits.memory {
            write(&leaf.join("memory.max"), &memory.to_string())?;
            let _ = std::fs::write(leaf.join("memory.swap.max"), "0");
        }
        if let Some(pids) = limits.pids {
            write(&leaf.join("pids.max"), &pids.to_string())?;
        }
        if let Some(cpus) = limits.cpus {
            let quota = ((cpus * 100_000.0) as u64).max(1000);
            write(&leaf.join("cpu.max"), &format!("{quota} 100000"))?;
        }
        Ok(())
    })();
    if let Err(reason) = result {
        remove_leaf(&leaf);
        return Err(reason);
    }
    let procs = CString::new(
        leaf.join("cgroup.procs")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .map_err(|e| e.to_string())?;
    Ok(Cgroup {
        leaves: vec![leaf],
        procs_files: vec![procs],
    })
}

fn create_v1_leaf(
    parent: &Path,
    name: &str,
    controller: &str,
    limits: &Limits,
) -> Result<PathBuf, String> {
    let leaf = parent.join(name);
    std::fs::create_dir(&leaf)
        .map_err(|e| format!("cannot create cgroup {}: {e}", leaf.display()))?;
    let result = match controller {
        "memory" => {
            let memory = limits.memory.unwrap_or(u64::MAX).to_string();
            write(&leaf.join("memory.limit_in_bytes"), &memory).and_then(|_| {
                // Without swap accounting the limit could be dodged by swapping.
                let memsw = leaf.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    write(&memsw, &memory)
                } else {
                    Ok(())
                }
            })
        }
        "pids" => write(
            &leaf.join("pids.max"),
            &limits.pids.unwrap_or(0).to_string(),
        ),
        _ => {
            let quota = ((limits.cpus.unwrap_or(1.0) * 100_000.0) as u64).max(1000);
            write(&leaf.join("cpu.cfs_period_us"), "100000")
                .and_then(|_| write(&leaf.join("cpu.cfs_quota_us"), &quota.to_string()))
        }
    };
    match result {
        Ok(()) => Ok(leaf),
        Err(reason) => {
            remove_leaf(&leaf);
            Err(reason)
        }
    }
}

fn read_pids(leaf: &Path) -> Vec<i32> {
    std::fs::read_to_string(leaf.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Removes a leaf, retrying while its last processes finish exiting (up to 2 s).
fn remove_leaf(leaf: &Path) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match std::fs::remove_dir(leaf) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                if Instant::now() > deadline {
                    tracing::warn!(leaf = %leaf.display(), error = %e, "could not remove sandbox cgroup");
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// Removes leaves left by palisade processes that no longer exist.
pub fn cleanup_stale() {
    let host = HostCgroups::detect();
    let mut parents: Vec<PathBuf> = host.v1.iter().map(|(_, dir)| dir.clone()).collect();
    if let Some((root, _)) = &host.v2 {
        parents.push(root.join(V2_PARENT));
    }
    for parent in parents {
        let Ok(entries) = std::fs::read_dir(&parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(owner) = name
                .to_str()
                .and_then(|n| n.strip_prefix("palisade-"))
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<i32>().ok())
            else {
                continue;
            };
            if !Path::new(&format!("/proc/{owner}")).exists() {
                let leaf = entry.path();
                for pid in read_pids(&leaf) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                remove_leaf(&leaf);
            }
        }
    }
}

/// Lists sandbox leaves that currently exist (for doctor and tests).
pub fn existing_leaves() -> Vec<PathBuf> {
    let host = HostCgroups::detect();
    let mut parents: Vec<PathBuf> = host.v1.iter().map(|(_, dir)| dir.clone()).collect();
    if let Some((root, _)) = &host.v2 {
        parents.push(root.join(V2_PARENT));
    }
    let mut leaves = Vec::new();
    for parent in parents {
        if let Ok(entries) = std::fs::read_dir(&parent) {
            leaves.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("palisade-"))
                    .map(|e| e.path()),
            );
        }
    }
    leaves
}
