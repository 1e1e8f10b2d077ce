//! Cgroups for bubblewrap sandboxes: a fresh leaf per sandbox, limits written before
//! the sandbox starts, the sandbox placed in it from the child side of the fork (so no
//! process of it ever runs outside), everything killed and the leaf removed at the end.
//!
//! cgroup v2 is used where its controllers can be enabled for a `palisade` subtree of
//! the root; otherwise the v1 `memory`, `pids` and `cpu` hierarchies, each leaf nested
//! under this process's own cgroup so a host limit on palisade still covers its
//! sandboxes. A user who cannot write there (anyone but root, usually) uses a
//! directory root has delegated to them, `<hierarchy>/palisade-user-<uid>` (see
//! [`delegated_dir`]), when it exists. Leaves are named `palisade-<owner pid>-<n>`;
//! leaves whose owner is gone (a `kill -9`) are removed the next time any sandbox
//! starts.
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
    /// The v1 hierarchies holding a controller palisade uses.
    pub v1: Vec<V1Hierarchy>,
}

/// One cgroup v1 hierarchy with one controller palisade uses.
#[derive(Clone, Debug, serde::Serialize)]
pub struct V1Hierarchy {
    pub controller: String,
    /// Where the hierarchy is mounted.
    pub mount: PathBuf,
    /// This process's cgroup in it.
    pub own: PathBuf,
}

impl V1Hierarchy {
    /// Where sandbox leaves may go, in order of preference.
    fn parents(&self) -> [PathBuf; 2] {
        [self.own.clone(), delegated_dir(&self.mount)]
    }
}

/// The directory under a v1 hierarchy `mount` that root may delegate to the current
/// user (`mkdir` it and `chown` it to them), for sandbox leaves when the user cannot
/// write to their own cgroup.
pub fn delegated_dir(mount: &Path) -> PathBuf {
    mount.join(format!("palisade-user-{}", nix::unistd::geteuid()))
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
                        host.v1.push(V1Hierarchy {
                            controller: controller.to_string(),
                            mount: PathBuf::from(mount_point),
                            own: dir,
                        });
                    }
                }
            }
        }
        host
    }

    /// Every directory sandbox leaves may be created in.
    fn leaf_parents(&self) -> Vec<PathBuf> {
        let mut parents: Vec<PathBuf> = self.v1.iter().flat_map(|h| h.parents()).collect();
        if let Some((root, _)) = &self.v2 {
            parents.push(root.join(V2_PARENT));
        }
        parents
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
        let wanted = wanted_controllers(limits);
        let name = format!(
            "palisade-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        if wanted.is_empty() {
            return (None, Vec::new());
        }
        if let Some(root) = host.v2_with(&wanted) {
            match create_v2(&root, V2_PARENT, &name, limits) {
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
            let outcome = match host.v1.iter().find(|h| h.controller == *controller) {
                None => Err(format!(
                    "no cgroup v1 `{controller}` hierarchy and no cgroup v2 offering it"
                )),
                Some(hierarchy) => create_v1_leaf_in_any(hierarchy, &name, controller, limits),
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
                Err(reason) => {
                    let hint = delegation_hint(&host, controller);
                    reports.push(fallback_report(limits, controller, &reason, &hint))
                }
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
            std::thread::sleep(Duration::from_millis(1));
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

/// Starts, on a background thread, the wait that the first cgroup migration of a
/// process pays, so that placing the sandbox later does not.
///
/// Moving a process between cgroups takes a kernel-wide lock whose write side first
/// waits for an RCU grace period unless a migration ran moments before: about 10 ms on
/// a busy 2-core machine, once per `sandbox run`. Writing this process into the cgroup
/// it is already in is a migration that changes nothing; done first thing, it
/// overlaps that wait with the run's other preparations. Errors are ignored (an
/// unprivileged user cannot write there, and then has no cgroup to enter either).
pub fn prime_migration() {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let host = HostCgroups::detect();
    let target = host.v1.first().map(|h| h.own.clone()).or_else(|| {
        let (root, _) = host.v2.as_ref()?;
        let path = own.lines().find_map(|l| l.strip_prefix("0::"))?;
        Some(root.join(path.trim_start_matches('/')))
    });
    if let Some(dir) = target {
        let _ = std::thread::Builder::new()
            .name("cgroup-prime".into())
            .spawn(move || {
                let _ = std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string());
            });
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

/// The controllers `limits` need, in a fixed order.
fn wanted_controllers(limits: &Limits) -> Vec<&'static str> {
    [
        limits.memory.map(|_| "memory"),
        limits.pids.map(|_| "pids"),
        limits.cpus.map(|_| "cpu"),
    ]
    .into_iter()
    .flatten()
    .collect()
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

/// How a user gets a cgroup for `controller` here: root can always create one; else
/// the exact commands for root to delegate a directory.
fn delegation_hint(host: &HostCgroups, controller: &str) -> String {
    if nix::unistd::geteuid().is_root() {
        return "the host's cgroups are not writable even for root here".into();
    }
    match host.v1.iter().find(|h| h.controller == controller) {
        Some(hierarchy) => {
            let dir = delegated_dir(&hierarchy.mount);
            format!(
                "to enforce it, have root delegate a cgroup: `mkdir {dir} && chown {uid} {dir}`",
                dir = dir.display(),
                uid = nix::unistd::geteuid()
            )
        }
        None => {
            "to enforce it, run palisade as root (a delegated cgroup v2 subtree is not used yet)"
                .into()
        }
    }
}

/// What replaces a cgroup controller that could not be used: `reason` is why the
/// cgroup failed, `hint` how to get one.
fn fallback_report(limits: &Limits, controller: &str, reason: &str, hint: &str) -> LimitReport {
    let root = nix::unistd::geteuid().is_root();
    match controller {
        "memory" => LimitReport {
            limit: "memory",
            value: crate::limits::format_bytes(limits.memory.unwrap_or(0)),
            mechanism: LimitMechanism::Rlimit,
            note: Some(format!(
                "address-space rlimit per process instead of a cgroup, so allocations beyond it fail instead of being counted across the sandbox ({reason}); {hint}"
            )),
        },
        "pids" if !root => LimitReport {
            limit: "pids",
            value: limits.pids.unwrap_or(0).to_string(),
            mechanism: LimitMechanism::Rlimit,
            note: Some(format!(
                "RLIMIT_NPROC instead of a cgroup, which counts all of this user's processes ({reason}); {hint}"
            )),
        },
        "pids" => LimitReport {
            limit: "pids",
            value: limits.pids.unwrap_or(0).to_string(),
            mechanism: LimitMechanism::NotApplied,
            note: Some(format!(
                "no cgroup ({reason}) and RLIMIT_NPROC does not bind root; {hint}"
            )),
        },
        _ => LimitReport {
            limit: "cpus",
            value: limits.cpus.unwrap_or(0.0).to_string(),
            mechanism: LimitMechanism::NotApplied,
            note: Some(format!(
                "only a cgroup can limit CPU and none is writable ({reason}); {hint}"
            )),
        },
    }
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Creates the leaf `root/parent_name/name` with `limits`, enabling the controllers
/// they need on the way down.
fn create_v2(
    root: &Path,
    parent_name: &str,
    name: &str,
    limits: &Limits,
) -> Result<Cgroup, String> {
    let parent = root.join(parent_name);
    let enable: Vec<String> = wanted_controllers(limits)
        .iter()
        .map(|c| format!("+{c}"))
        .collect();
    let enable = enable.join(" ");
    if !enable.is_empty() {
        write(&root.join("cgroup.subtree_control"), &enable)?;
    }
    if !parent.exists() {
        std::fs::create_dir(&parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    if !enable.is_empty() {
        write(&parent.join("cgroup.subtree_control"), &enable)?;
    }
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

/// Creates the leaf for `controller` in the first parent of `hierarchy` this user may
/// write to; the error names why the preferred one failed and how to delegate.
fn create_v1_leaf_in_any(
    hierarchy: &V1Hierarchy,
    name: &str,
    controller: &str,
    limits: &Limits,
) -> Result<PathBuf, String> {
    let [own, delegated] = hierarchy.parents();
    let first = match create_v1_leaf(&own, name, controller, limits) {
        Ok(leaf) => return Ok(leaf),
        Err(reason) => reason,
    };
    if delegated.is_dir() {
        return create_v1_leaf(&delegated, name, controller, limits).map_err(|reason| {
            format!(
                "{first}; and in the delegated {}: {reason}",
                delegated.display()
            )
        });
    }
    Err(first)
}

/// Most TCP buffer memory a sandbox may hold on cgroup v1: an eighth of its memory
/// limit, at most 64 MiB (plenty for its loopback connections to the shim); eight
/// sandboxes at once then hold 512 MiB at most, under this host's TCP pressure
/// threshold (1.1 GB).
pub(crate) fn tcp_share(memory: Option<u64>) -> u64 {
    const MOST: u64 = 64 << 20;
    memory.map_or(MOST, |memory| (memory / 8).min(MOST))
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
                    write(&memsw, &memory)?;
                }
                // v1 counts TCP buffer memory apart, and only once it has a limit:
                // without one, a sandbox's unread loopback sockets held gigabytes of
                // kernel memory past its limit and pushed the host's TCP to its
                // pressure limit for everyone. Apart means on top of the memory
                // limit, and the host's TCP memory (`net.ipv4.tcp_mem`) is one pool:
                // at the memory limit, three default sandboxes could fill it. So the
                // share is small (v2 counts it in `memory.max`).
                let tcp = leaf.join("memory.kmem.tcp.limit_in_bytes");
                if tcp.exists() {
                    write(&tcp, &tcp_share(limits.memory).to_string())?;
                }
                Ok(())
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
    // v1: the page cache still charged to a removed memory cgroup keeps it alive in the
    // kernel (a "dying" cgroup, ten more after ten short runs); emptied first, it goes.
    let force_empty = leaf.join("memory.force_empty");
    if force_empty.exists() {
        let _ = std::fs::write(&force_empty, "0");
    }
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
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// Removes leaves left by palisade processes that no longer exist.
pub fn cleanup_stale() {
    for parent in HostCgroups::detect().leaf_parents() {
        cleanup_stale_in(&parent);
    }
}

/// The owner pid of a leaf named `palisade-<pid>-<n>`; `None` for any other name
/// (such as a delegated `palisade-user-<uid>` directory).
fn leaf_owner(name: &str) -> Option<i32> {
    let (pid, counter) = name.strip_prefix("palisade-")?.split_once('-')?;
    counter.parse::<u32>().ok()?;
    pid.parse().ok()
}

/// Removes leaves under `parent` whose owning palisade process no longer exists,
/// killing what still runs in them.
fn cleanup_stale_in(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(owner) = entry.file_name().to_str().and_then(leaf_owner) else {
            continue;
        };
        if !crate::workdir::process_alive(owner) {
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

/// Lists sandbox leaves that currently exist (for doctor and tests).
pub fn existing_leaves() -> Vec<PathBuf> {
    let mut leaves = Vec::new();
    for parent in HostCgroups::detect().leaf_parents() {
        if let Ok(entries) = std::fs::read_dir(&parent) {
            leaves.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_name().to_str().and_then(leaf_owner).is_some())
                    .map(|e| e.path()),
            );
        }
    }
    leaves
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// A cgroup2 root as the kernel presents it, in a plain directory: the files are
    /// what the v2 code writes to, so their contents show exactly what it wrote.
    fn fake_v2_root() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(
            root.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        std::fs::write(root.path().join("cgroup.subtree_control"), "").unwrap();
        root
    }

    #[test]
    fn v2_leaf_gets_every_limit_with_the_kernels_units() {
        let root = fake_v2_root();
        let limits = Limits {
            memory: Some(128 << 20),
            pids: Some(64),
            cpus: Some(0.5),
            wall_time: None,
            workspace: None,
        };
        let cgroup = create_v2(root.path(), "palisade", "palisade-1-0", &limits).unwrap();
        let parent = root.path().join("palisade");
        let leaf = parent.join("palisade-1-0");
        // Controllers are enabled at the root and at palisade's parent, so the leaf
        // has them.
        assert_eq!(
            read(&root.path().join("cgroup.subtree_control")),
            "+memory +pids +cpu"
        );
        assert_eq!(
            read(&parent.join("cgroup.subtree_control")),
            "+memory +pids +cpu"
        );
        assert_eq!(read(&leaf.join("memory.max")), (128u64 << 20).to_string());
        assert_eq!(read(&leaf.join("memory.swap.max")), "0");
        assert_eq!(read(&leaf.join("pids.max")), "64");
        assert_eq!(read(&leaf.join("cpu.max")), "50000 100000");
        assert_eq!(cgroup.leaves(), std::slice::from_ref(&leaf));
        assert_eq!(
            cgroup.procs_files(),
            [CString::new(leaf.join("cgroup.procs").to_str().unwrap()).unwrap()]
        );
        // The kernel removes a cgroup's interface files with it; a plain directory
        // needs them gone first for the leaf's own rmdir to be seen.
        for file in ["memory.max", "memory.swap.max", "pids.max", "cpu.max"] {
            std::fs::remove_file(leaf.join(file)).unwrap();
        }
        drop(cgroup);
        assert!(!leaf.exists(), "the leaf outlived its sandbox");
        assert!(parent.exists(), "the shared parent must stay");
    }

    #[test]
    fn v2_only_enables_what_the_limits_need() {
        let root = fake_v2_root();
        let limits = Limits {
            pids: Some(100),
            cpus: Some(2.0),
            ..Limits::default()
        };
        let cgroup = create_v2(root.path(), "palisade", "palisade-2-0", &limits).unwrap();
        let leaf = root.path().join("palisade/palisade-2-0");
        assert_eq!(
            read(&root.path().join("cgroup.subtree_control")),
            "+pids +cpu"
        );
        assert!(!leaf.join("memory.max").exists());
        assert_eq!(read(&leaf.join("cpu.max")), "200000 100000");
        // A tiny CPU share still gets the kernel's minimum quota (1 ms).
        let tiny = Limits {
            cpus: Some(0.001),
            ..Limits::default()
        };
        let small = create_v2(root.path(), "palisade", "palisade-2-1", &tiny).unwrap();
        assert_eq!(
            read(&root.path().join("palisade/palisade-2-1/cpu.max")),
            "1000 100000"
        );
        std::mem::forget((cgroup, small));
    }

    #[test]
    fn v2_failure_to_enable_controllers_creates_nothing() {
        let root = fake_v2_root();
        // What the kernel does when a controller is not available: the write fails.
        std::fs::remove_file(root.path().join("cgroup.subtree_control")).unwrap();
        std::fs::create_dir(root.path().join("cgroup.subtree_control")).unwrap();
        let error =
            create_v2(root.path(), "palisade", "palisade-3-0", &Limits::defaults()).unwrap_err();
        assert!(error.contains("cgroup.subtree_control"), "{error}");
        assert!(!root.path().join("palisade").exists());
    }

    #[test]
    fn leaf_names_are_told_apart_from_delegated_directories() {
        assert_eq!(leaf_owner("palisade-1234-0"), Some(1234));
        assert_eq!(leaf_owner("palisade-user-1001"), None);
        assert_eq!(leaf_owner("palisade-1234"), None);
        assert_eq!(leaf_owner("palisade"), None);
        assert_eq!(leaf_owner("other-1-2"), None);
    }

    /// A v1 memory leaf limits TCP buffer memory too (to the sandbox's memory limit), on
    /// a host with a writable v1 memory hierarchy (this one, as root).
    #[test]
    fn a_v1_memory_leaf_limits_tcp_buffers_too() {
        let Some(memory) = HostCgroups::detect()
            .v1
            .into_iter()
            .find(|h| h.controller == "memory")
        else {
            eprintln!("SKIPPING: no cgroup v1 memory hierarchy on this host");
            return;
        };
        let limits = Limits {
            memory: Some(64 << 20),
            ..Limits::default()
        };
        let name = format!("palisade-test-tcp-{}", std::process::id());
        let leaf = match create_v1_leaf(&memory.mount, &name, "memory", &limits) {
            Ok(leaf) => leaf,
            Err(reason) => {
                eprintln!("SKIPPING: cannot create a v1 memory cgroup here: {reason}");
                return;
            }
        };
        let read = |file: &str| std::fs::read_to_string(leaf.join(file)).unwrap_or_default();
        let tcp = read("memory.kmem.tcp.limit_in_bytes");
        let memory_limit = read("memory.limit_in_bytes");
        remove_leaf(&leaf);
        assert_eq!(memory_limit.trim(), (64u64 << 20).to_string());
        // An eighth of the limit, on top of it: not the limit again.
        assert_eq!(tcp.trim(), (8u64 << 20).to_string());
        assert_eq!(tcp_share(Some(1 << 30)), 64 << 20);
        assert_eq!(tcp_share(None), 64 << 20);
    }

    #[test]
    fn v1_hierarchy_prefers_its_own_cgroup_then_the_delegated_one() {
        let hierarchy = V1Hierarchy {
            controller: "cpu".into(),
            mount: PathBuf::from("/sys/fs/cgroup/cpu"),
            own: PathBuf::from("/sys/fs/cgroup/cpu/some/where"),
        };
        let [own, delegated] = hierarchy.parents();
        assert_eq!(own, Path::new("/sys/fs/cgroup/cpu/some/where"));
        assert_eq!(
            delegated,
            Path::new(&format!(
                "/sys/fs/cgroup/cpu/palisade-user-{}",
                nix::unistd::geteuid()
            ))
        );
    }

    /// A pid that no longer exists (a child that has been reaped).
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    /// The host's real cgroup2 hierarchy, when this process may create cgroups in it.
    /// On hosts whose memory, pids and cpu controllers are bound to v1 it offers none
    /// of them, but the lifecycle (create, enter between fork and exec, kill, remove,
    /// clean up after a dead owner) is the same kernel code.
    fn real_v2_parent() -> Option<(PathBuf, PathBuf)> {
        let (root, _) = HostCgroups::detect().v2?;
        let parent = root.join(format!("palisade-test-{}", std::process::id()));
        match std::fs::create_dir(&parent) {
            Ok(()) => Some((root, parent)),
            Err(e) => {
                eprintln!("SKIPPING real cgroup v2 test: {}: {e}", parent.display());
                None
            }
        }
    }

    struct RemoveDir(PathBuf);
    impl Drop for RemoveDir {
        fn drop(&mut self) {
            if let Ok(entries) = std::fs::read_dir(&self.0) {
                for entry in entries.flatten() {
                    if entry.path().is_dir() {
                        for pid in read_pids(&entry.path()) {
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(pid),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                        }
                        remove_leaf(&entry.path());
                    }
                }
            }
            remove_leaf(&self.0);
        }
    }

    fn spawn_in(cgroup: &Cgroup) -> std::process::Child {
        use std::os::unix::process::CommandExt;
        let procs = cgroup.procs_files();
        let mut command = std::process::Command::new("sleep");
        command.arg("300");
        // SAFETY: enter_from_child only uses open/write/close on prepared paths.
        unsafe {
            command.pre_exec(move || enter_from_child(&procs));
        }
        command.spawn().unwrap()
    }

    #[test]
    fn real_v2_leaf_holds_its_process_and_is_removed_with_it() {
        let Some((root, parent)) = real_v2_parent() else {
            return;
        };
        let _cleanup = RemoveDir(parent.clone());
        let parent_name = parent.file_name().unwrap().to_str().unwrap().to_string();
        let cgroup = create_v2(&root, &parent_name, "palisade-7-0", &Limits::default()).unwrap();
        let leaf = parent.join("palisade-7-0");
        let mut child = spawn_in(&cgroup);
        let membership = read(Path::new(&format!("/proc/{}/cgroup", child.id())));
        assert!(
            membership
                .lines()
                .any(|l| l == format!("0::/{parent_name}/palisade-7-0")),
            "{membership}"
        );
        assert_eq!(read_pids(&leaf), [child.id() as i32]);
        drop(cgroup);
        // Killed (cgroup.kill or SIGKILL) and the leaf gone.
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        assert!(!leaf.exists());
    }

    #[test]
    fn real_v2_leaves_of_a_dead_owner_are_cleaned_up() {
        let Some((root, parent)) = real_v2_parent() else {
            return;
        };
        let _cleanup = RemoveDir(parent.clone());
        let parent_name = parent.file_name().unwrap().to_str().unwrap().to_string();
        let dead = format!("palisade-{}-0", dead_pid());
        let alive = format!("palisade-{}-99", std::process::id());
        let stale = create_v2(&root, &parent_name, &dead, &Limits::default()).unwrap();
        let mut orphan = spawn_in(&stale);
        // As after `kill -9` of the owner: nobody runs the leaf's Drop.
        std::mem::forget(stale);
        let live = create_v2(&root, &parent_name, &alive, &Limits::default()).unwrap();
        cleanup_stale_in(&parent);
        let status = orphan.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        assert!(!parent.join(&dead).exists(), "the stale leaf was left");
        assert!(
            parent.join(&alive).exists(),
            "a live owner's leaf was removed"
        );
        drop(live);
        assert!(!parent.join(&alive).exists());
    }
}
