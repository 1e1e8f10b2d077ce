//! Resource limits of a sandbox and how each one was (or was not) applied.
//!
//! A limit is only ever reported as applied by the mechanism that actually enforces
//! it: a cgroup (v2 or v1) the sandbox was placed in, the OCI runtime's own flags, an
//! rlimit set by the shim before it runs the command, or the parent's wall-time timer.
//! Where nothing can enforce a limit, the report says so and why.

use crate::SandboxError;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Requested limits; `None` = not limited.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Limits {
    /// Bytes of memory (without swap).
    pub memory: Option<u64>,
    /// Number of processes and threads.
    pub pids: Option<u64>,
    /// CPUs worth of time per period (1.5 = one and a half cores).
    pub cpus: Option<f64>,
    /// Wall time after which the whole sandbox is killed.
    pub wall_time: Option<Duration>,
    /// Bytes the workspace may use (see [`crate::quota`]).
    pub workspace: Option<u64>,
}

impl Limits {
    /// The defaults of `palisade sandbox run`: 1 GiB, 512 processes, 1 CPU, no timeout,
    /// a 4 GiB workspace.
    pub fn defaults() -> Self {
        Limits {
            memory: Some(1 << 30),
            pids: Some(512),
            cpus: Some(1.0),
            wall_time: None,
            workspace: Some(crate::quota::DEFAULT_WORKSPACE_QUOTA),
        }
    }
}

/// The most open files (`RLIMIT_NOFILE`) each process of a sandbox may hold: 1,024
/// (the usual soft limit), lowered so that a sandbox full of processes (`pids`) holds
/// at most a sixteenth of the host's open-file table (`fs.file-max`). The table is one
/// for the whole machine and no cgroup bounds it; without this, a sandbox inherited
/// the gateway's raised limit and one agent could fill the table, after which no
/// process of the host but root's could open a file. With an eighth, the eight
/// sandboxes `palisade up --concurrency 8` runs at once could fill it together; with a
/// sixteenth they hold half. Never below 64.
pub fn open_files_per_process(pids: Option<u64>) -> u64 {
    let file_max = std::fs::read_to_string("/proc/sys/fs/file-max")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok());
    open_files_within(file_max, pids)
}

fn open_files_within(file_max: Option<u64>, pids: Option<u64>) -> u64 {
    const USUAL: u64 = 1024;
    match (file_max, pids) {
        (Some(file_max), Some(pids)) if pids > 0 => (file_max / 16 / pids).clamp(64, USUAL),
        _ => USUAL,
    }
}

/// The least kernel memory one open file costs the sandbox holding it: a `struct file`
/// from an accounted slab (a mapping that keeps it open costs more). A sandbox whose
/// memory a cgroup counts can keep at most its memory limit over this many files open.
const LEAST_BYTES_PER_FILE: u64 = 256;

/// Entries of the host's open-file table left for the host's own programs beyond what
/// the sandboxes may hold.
const HOST_SHARE_OF_FILE_TABLE: u64 = 1 << 20;

/// Files the running sandboxes of this process may hold in all (see
/// [`claim_file_table`]).
static FILES_CLAIMED: AtomicU64 = AtomicU64::new(0);

/// A running sandbox's claim on the host's open-file table; given back when dropped.
#[derive(Debug)]
pub(crate) struct FileTableClaim(u64);

impl FileTableClaim {
    /// Gives the claim back (once; dropping it does too).
    pub(crate) fn release(&mut self) {
        FILES_CLAIMED.fetch_sub(std::mem::take(&mut self.0), Ordering::Relaxed);
    }
}

impl Drop for FileTableClaim {
    fn drop(&mut self) {
        self.release();
    }
}

/// Makes room in the host's open-file table (`fs.file-max`) for every file a sandbox
/// can keep open. `RLIMIT_NOFILE` counts descriptors only: a file mapped and then
/// closed stays open and counts against nothing but the sandbox's memory (one review
/// kept half the table of this host open from one default sandbox, and could have
/// kept all of it, after which no process of the host but root's could open a file).
/// Where a cgroup counts the sandbox's memory, the files it can keep open are bounded
/// by that limit ([`LEAST_BYTES_PER_FILE`]); the table must hold those of every
/// running sandbox of this process, the files open now and [`HOST_SHARE_OF_FILE_TABLE`]
/// more. If it does not, root raises `fs.file-max` to that (systemd raises it to its
/// maximum at boot on most hosts, leaving memory limits to bound the files); anyone
/// else gets a report saying what to run. `reports` are the sandbox's other limits,
/// to tell whether its memory is counted.
pub(crate) fn claim_file_table(
    limits: &Limits,
    reports: &[LimitReport],
) -> (FileTableClaim, LimitReport) {
    // What enforces the memory limit, and whether it counts kernel memory (a cgroup).
    let counted_by = reports
        .iter()
        .find(|report| report.limit == "memory")
        .map_or(LimitMechanism::NotApplied, |report| report.mechanism);
    let counted = matches!(
        counted_by,
        LimitMechanism::CgroupV1 | LimitMechanism::CgroupV2 | LimitMechanism::OciRuntime
    );
    let report = |mechanism, value: String, note: String| LimitReport {
        limit: "file-table",
        value,
        mechanism,
        note: Some(note),
    };
    let Some(memory) = limits.memory else {
        // No memory limit was asked for: nothing bounds the sandbox's memory, and so
        // nothing its files, as the person chose.
        return (
            FileTableClaim(0),
            report(
                LimitMechanism::Rlimit,
                "bounded by open descriptors only".into(),
                "no memory limit, so files kept open by a mapping are not bounded (fs.file-max is shared with the host)".into(),
            ),
        );
    };
    if !counted {
        return (
            FileTableClaim(0),
            report(
                LimitMechanism::NotApplied,
                "on files kept open by a mapping".into(),
                "no cgroup counts the sandbox's memory, so nothing bounds the files it keeps open by mapping them (fs.file-max is shared with the host)".into(),
            ),
        );
    }
    let own = memory / LEAST_BYTES_PER_FILE;
    let claimed = FILES_CLAIMED.fetch_add(own, Ordering::Relaxed) + own;
    let claim = FileTableClaim(own);
    let value = format!("at most {own} open files (memory limit / {LEAST_BYTES_PER_FILE})");
    let table = FileTable::read();
    let Some(table) = table else {
        return (
            claim,
            report(
                LimitMechanism::NotApplied,
                value,
                "cannot read fs.file-max and fs.file-nr to make room for them".into(),
            ),
        );
    };
    let needed = table.needed(claimed);
    if table.max >= needed {
        return (
            claim,
            report(
                counted_by,
                value,
                format!(
                    "counted in the memory limit; the host's open-file table ({}) holds them with room to spare",
                    table.max
                ),
            ),
        );
    }
    match std::fs::write("/proc/sys/fs/file-max", needed.to_string()) {
        Ok(()) => {
            tracing::warn!(
                from = table.max,
                to = needed,
                "raised fs.file-max so that sandboxes' memory limits, not the host's open-file table, bound the files they keep open"
            );
            (
                claim,
                report(
                    counted_by,
                    value,
                    format!(
                        "counted in the memory limit; raised the host's open-file table (fs.file-max) from {} to {needed} to hold them",
                        table.max
                    ),
                ),
            )
        }
        Err(e) => (
            claim,
            report(
                LimitMechanism::NotApplied,
                value,
                format!(
                    "the host's open-file table (fs.file-max {}) cannot hold them and raising it failed ({e}); as root run `sysctl -w fs.file-max={needed}`",
                    table.max
                ),
            ),
        ),
    }
}

/// The host's open-file table: its size and how many entries are in use.
#[derive(Clone, Copy, Debug, PartialEq)]
struct FileTable {
    max: u64,
    used: u64,
}

impl FileTable {
    fn read() -> Option<FileTable> {
        let number = |path: &str| -> Option<u64> {
            std::fs::read_to_string(path)
                .ok()?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        };
        Some(FileTable {
            max: number("/proc/sys/fs/file-max")?,
            used: number("/proc/sys/fs/file-nr")?,
        })
    }

    /// The size that holds what is open now, `claimed` more for sandboxes and the
    /// host's share.
    fn needed(&self, claimed: u64) -> u64 {
        self.used
            .saturating_add(claimed)
            .saturating_add(HOST_SHARE_OF_FILE_TABLE)
    }
}

/// Signals a sandbox may have queued at once (`RLIMIT_SIGPENDING`). Counted per user
/// and namespace, and charged to the namespace's owner too: without it one sandbox
/// queued every real-time signal root may queue, and root's `timer_create` and
/// `sigqueue` failed on the whole host.
pub const SIGNALS_QUEUED: u64 = 1024;

/// Bytes of POSIX message queues a sandbox may create (`RLIMIT_MSGQUEUE`): an eighth of
/// the usual 800 KiB per user, charged like [`SIGNALS_QUEUED`]; one queue of the
/// default size.
pub const MESSAGE_QUEUE_BYTES: u64 = 102_400;

/// The report of [`open_files_per_process`].
pub(crate) fn open_files_report(limits: &Limits) -> LimitReport {
    let each = open_files_per_process(limits.pids);
    LimitReport {
        limit: "open-files",
        value: format!("{each} per process"),
        mechanism: LimitMechanism::Rlimit,
        note: Some(match limits.pids {
            Some(pids) => format!(
                "at most {} in all with {pids} processes; the host's table holds what fs.file-max says",
                each * pids
            ),
            None => "no process limit, so the sandbox's total is not bounded".into(),
        }),
    }
}

/// How a limit is enforced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LimitMechanism {
    CgroupV2,
    CgroupV1,
    /// `podman`/`docker` flags, enforced by the container runtime's cgroup.
    OciRuntime,
    /// An rlimit on the command (address space for memory, RLIMIT_NPROC for pids).
    Rlimit,
    /// The parent's timer, which kills the whole sandbox.
    ParentTimer,
    /// The parent's watcher of the workspace, which stops the sandbox at the quota,
    /// with RLIMIT_FSIZE at the quota on the command.
    Watcher,
    NotApplied,
}

impl fmt::Display for LimitMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitMechanism::CgroupV2 => "cgroup v2",
            LimitMechanism::CgroupV1 => "cgroup v1",
            LimitMechanism::OciRuntime => "container runtime",
            LimitMechanism::Rlimit => "rlimit",
            LimitMechanism::ParentTimer => "parent timer",
            LimitMechanism::Watcher => "workspace watcher + RLIMIT_FSIZE",
            LimitMechanism::NotApplied => "not applied",
        })
    }
}

/// How one requested limit was handled.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LimitReport {
    pub limit: &'static str,
    pub value: String,
    pub mechanism: LimitMechanism,
    /// Why it is weaker than a cgroup, or why it was not applied.
    pub note: Option<String>,
}

/// Parses `512M`, `1G`, `1.5g`, `65536` (bytes), `256k`.
pub fn parse_memory(text: &str) -> Result<u64, SandboxError> {
    let bad = |reason: &str| SandboxError::BadLimit {
        what: "memory",
        value: text.to_string(),
        reason: reason.to_string(),
    };
    let bytes = parse_size(text).map_err(|reason| bad(&reason))?;
    if bytes < (8 << 20) {
        return Err(bad("at least 8M is needed to start a sandbox"));
    }
    Ok(bytes)
}

/// A size in bytes from `512M`, `1G`, `1.5g`, `65536`, `256k` (powers of 1024), or
/// why it is not one.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let lower = trimmed.to_ascii_lowercase();
    let lower = lower.trim_end_matches("ib").trim_end_matches('b');
    let (number, multiplier): (&str, u64) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 1 << 10),
        Some('m') => (&lower[..lower.len() - 1], 1 << 20),
        Some('g') => (&lower[..lower.len() - 1], 1 << 30),
        Some('t') => (&lower[..lower.len() - 1], 1 << 40),
        Some(c) if c.is_ascii_digit() => (lower, 1),
        _ => return Err("use a size like 512M or 2G".into()),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| "use a size like 512M or 2G".to_string())?;
    if !value.is_finite() || value <= 0.0 {
        return Err("the size must be positive".into());
    }
    Ok((value * multiplier as f64) as u64)
}

pub fn parse_pids(text: &str) -> Result<u64, SandboxError> {
    match text.trim().parse::<u64>() {
        Ok(n) if n >= 8 => Ok(n),
        _ => Err(SandboxError::BadLimit {
            what: "pids",
            value: text.to_string(),
            reason: "use a whole number of at least 8".into(),
        }),
    }
}

pub fn parse_cpus(text: &str) -> Result<f64, SandboxError> {
    match text.trim().parse::<f64>() {
        Ok(n) if (0.01..=1024.0).contains(&n) => Ok(n),
        _ => Err(SandboxError::BadLimit {
            what: "cpus",
            value: text.to_string(),
            reason: "use a number of CPUs such as 1 or 0.5".into(),
        }),
    }
}

pub fn parse_wall_time(text: &str) -> Result<Duration, SandboxError> {
    humantime::parse_duration(text.trim())
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| SandboxError::BadLimit {
            what: "timeout",
            value: text.to_string(),
            reason: "use a duration such as 30s, 10m or 1h".into(),
        })
}

/// `536870912` → `512M`.
pub fn format_bytes(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 30) {
        format!("{}G", bytes >> 30)
    } else if bytes.is_multiple_of(1 << 20) {
        format!("{}M", bytes >> 20)
    } else {
        format!("{bytes}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_memory("512M").unwrap(), 512 << 20);
        assert_eq!(parse_memory("1g").unwrap(), 1 << 30);
        assert_eq!(parse_memory("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_memory("67108864").unwrap(), 64 << 20);
        for bad in ["", "M", "-1G", "12x", "1k", "nanG"] {
            assert!(parse_memory(bad).is_err(), "{bad}");
        }
        assert_eq!(format_bytes(512 << 20), "512M");
    }

    #[test]
    fn counts_and_durations() {
        assert_eq!(parse_pids("256").unwrap(), 256);
        assert!(parse_pids("0").is_err());
    }

    #[test]
    fn a_full_sandbox_holds_at_most_a_sixteenth_of_the_file_table() {
        // This machine's table, the default 512 processes: 301 each, 154,112 in all,
        // so eight full sandboxes at once hold half the table.
        let each = open_files_within(Some(2_466_097), Some(512));
        assert_eq!(each, 301);
        assert!(8 * each * 512 <= 2_466_097 / 2);
        // A few processes keep the usual limit; many never go below 64.
        assert_eq!(open_files_within(Some(2_466_097), Some(48)), 1024);
        assert_eq!(open_files_within(Some(100_000), Some(100_000)), 64);
        assert_eq!(open_files_within(None, Some(512)), 1024);
        assert_eq!(open_files_within(Some(2_466_097), None), 1024);
        assert!(parse_pids("many").is_err());
        assert_eq!(parse_cpus("0.5").unwrap(), 0.5);
        assert!(parse_cpus("0").is_err());
        assert_eq!(parse_wall_time("10m").unwrap(), Duration::from_secs(600));
        assert!(parse_wall_time("0s").is_err());
        assert!(parse_wall_time("soon").is_err());
    }
}
