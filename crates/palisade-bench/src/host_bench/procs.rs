//! What `/proc` says about the host and its runners: memory (`VmRSS`, and `Pss`
//! from `smaps_rollup`, which splits pages shared between the runner and the shim,
//! both the same `palisade` binary) and which processes descend from the host.
//!
//! Hand-written because it is a handful of text fields; a process-listing crate would
//! add far more than it saves.

use std::collections::HashMap;
use std::path::Path;

/// Memory of one process in KiB.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Memory {
    pub rss_kib: u64,
    /// The part of RSS that is heap, stacks and other private memory.
    pub anon_kib: u64,
    /// The part of RSS that is mapped files (mostly the binary's own code).
    pub file_kib: u64,
    pub pss_kib: u64,
}

impl std::ops::Add for Memory {
    type Output = Memory;
    fn add(self, other: Memory) -> Memory {
        Memory {
            rss_kib: self.rss_kib + other.rss_kib,
            anon_kib: self.anon_kib + other.anon_kib,
            file_kib: self.file_kib + other.file_kib,
            pss_kib: self.pss_kib + other.pss_kib,
        }
    }
}

fn field_kib(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// `VmRSS` and `Pss` of `pid`; `None` once it is gone.
pub fn memory(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = field_kib(&status, "VmRSS:")?;
    let pss_kib = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|text| field_kib(&text, "Pss:"))
        .unwrap_or(0);
    Some(Memory {
        rss_kib,
        anon_kib: field_kib(&status, "RssAnon:").unwrap_or(0),
        file_kib: field_kib(&status, "RssFile:").unwrap_or(0),
        pss_kib,
    })
}

/// A process as the bench classifies it.
#[derive(Clone, Debug)]
pub struct Process {
    pub pid: u32,
    pub argv: Vec<String>,
}

impl Process {
    /// `palisade SUBCOMMAND …` (argv[0] is any path ending in `palisade`).
    pub fn is_palisade(&self, subcommand: &str) -> bool {
        self.argv.len() >= 2
            && Path::new(&self.argv[0]).file_name() == Some(std::ffi::OsStr::new("palisade"))
            && self.argv[1] == subcommand
    }

    pub fn is_bwrap(&self) -> bool {
        self.argv
            .first()
            .is_some_and(|a| Path::new(a).file_name() == Some(std::ffi::OsStr::new("bwrap")))
    }
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; fields follow the last ')'.
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(1)?.parse().ok()
}

fn argv_of(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| {
            bytes
                .split(|b| *b == 0)
                .filter(|part| !part.is_empty())
                .map(|part| String::from_utf8_lossy(part).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Every live process descending from `root` (not `root` itself).
pub fn descendants(root: u32) -> Vec<Process> {
    let mut parents = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            if let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
                if let Some(parent) = parent_of(pid) {
                    parents.insert(pid, parent);
                }
            }
        }
    }
    let mut found: Vec<Process> = parents
        .keys()
        .copied()
        .filter(|pid| {
            let mut current = *pid;
            // Bounded walk: a pid table changing under us cannot loop forever.
            for _ in 0..64 {
                match parents.get(&current) {
                    Some(&parent) if parent == root => return true,
                    Some(&parent) if parent > 1 => current = parent,
                    _ => return false,
                }
            }
            false
        })
        .map(|pid| Process {
            pid,
            argv: argv_of(pid),
        })
        .collect();
    found.sort_by_key(|p| p.pid);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kib_fields() {
        let text = "Name:\tx\nVmRSS:\t   12345 kB\nPss:   77 kB\n";
        assert_eq!(field_kib(text, "VmRSS:"), Some(12345));
        assert_eq!(field_kib(text, "Pss:"), Some(77));
        assert_eq!(field_kib(text, "VmHWM:"), None);
    }

    #[test]
    fn own_memory_and_children_are_visible() {
        let me = memory(std::process::id()).expect("own memory");
        assert!(me.rss_kib > 0);
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep");
        // The child shows its own argv only once it has exec'd `sleep`: look again
        // for a bounded while rather than race the exec.
        let pid = child.id();
        let is_sleep =
            |p: &Process| p.pid == pid && p.argv.first().map(String::as_str) == Some("sleep");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut found = descendants(std::process::id());
        while !found.iter().any(is_sleep) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
            found = descendants(std::process::id());
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(found.iter().any(is_sleep), "{found:?}");
    }

    #[test]
    fn classifies_palisade_subcommands() {
        let runner = Process {
            pid: 1,
            argv: vec!["/run/palisade/palisade".into(), "runner".into()],
        };
        assert!(runner.is_palisade("runner"));
        assert!(!runner.is_palisade("shim"));
        assert!(!runner.is_bwrap());
    }
}
