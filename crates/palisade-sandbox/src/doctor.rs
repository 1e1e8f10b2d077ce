//! `palisade sandbox doctor`: which protections this host actually gives a sandbox.
//!
//! Bubblewrap lines come from a probe: a real tiny sandbox reports its own
//! capabilities, network interfaces and whether `/` is writable, and a real cgroup
//! leaf is created with the default limits (and removed). For podman and docker the
//! engine is asked whether it runs and has the image; their isolation lines name the
//! flags every sandbox gets (marked as such; the escape tests verify their effect),
//! and their limit lines say whether this engine can enforce them for this user.

use crate::cgroup::Cgroup;
use crate::limits::{LimitReport, Limits};
use crate::oci::{Oci, OciTool};
use crate::runtime::{which, Runtime};
use crate::Bubblewrap;
use std::process::{Command, Stdio};
use std::time::Duration;

#[derive(Clone, Debug, serde::Serialize)]
pub struct Check {
    pub name: String,
    pub active: bool,
    pub detail: String,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct RuntimeReport {
    pub runtime: String,
    pub usable: bool,
    pub problem: Option<String>,
    pub checks: Vec<Check>,
    pub limits: Vec<LimitReport>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct DoctorReport {
    pub user: String,
    pub runtimes: Vec<RuntimeReport>,
}

pub fn diagnose() -> DoctorReport {
    let uid = nix::unistd::geteuid();
    DoctorReport {
        user: if uid.is_root() {
            "root".into()
        } else {
            format!("uid {uid}")
        },
        runtimes: vec![bubblewrap(), oci(OciTool::Podman), oci(OciTool::Docker)],
    }
}

fn check(name: &str, active: bool, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        active,
        detail: detail.into(),
    }
}

fn output_with_timeout(mut command: Command, limit: Duration) -> Option<std::process::Output> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().ok()?;
    let deadline = std::time::Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return child.wait_with_output().ok(),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

fn bubblewrap() -> RuntimeReport {
    let runtime = Bubblewrap::new();
    let mut report = RuntimeReport {
        runtime: "bwrap".into(),
        usable: false,
        problem: None,
        checks: Vec::new(),
        limits: Vec::new(),
    };
    if let Err(e) = runtime.check() {
        report.problem = Some(e.to_string());
        return report;
    }
    // The probe gets what every sandbox gets: the isolation flags and, through
    // inherited descriptors, its options and the seccomp filters.
    let mut options: Vec<String> = crate::bwrap::ISOLATION_FLAGS
        .iter()
        .map(|s| s.to_string())
        .collect();
    options.extend(["--ro-bind", "/usr", "/usr"].map(String::from));
    for top in ["bin", "lib", "lib64", "sbin"] {
        let host = std::path::Path::new("/").join(top);
        if let Ok(target) = std::fs::read_link(&host) {
            options.extend([
                "--symlink".into(),
                target.to_string_lossy().into_owned(),
                host.to_string_lossy().into_owned(),
            ]);
        } else if host.is_dir() {
            options.extend([
                "--ro-bind".into(),
                host.to_string_lossy().into_owned(),
                host.to_string_lossy().into_owned(),
            ]);
        }
    }
    options.extend(["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/"].map(String::from));
    let mut handoff = crate::bwrap::Handoff::default();
    let options_fd = match handoff.with_filters_and_options(options) {
        Ok(fd) => fd,
        Err(e) => {
            report.problem = Some(e.to_string());
            return report;
        }
    };
    let mut probe = Command::new("bwrap");
    probe.args([
        "--args".to_string(),
        options_fd.to_string(),
        "--".into(),
        "/bin/sh".into(),
        "-c".into(),
        "grep CapEff /proc/self/status; grep '^Seccomp' /proc/self/status; tail -n +3 /proc/net/dev | cut -d: -f1; touch /probe 2>/dev/null && echo ROOT-WRITABLE; unshare -U true 2>/dev/null && echo NESTED-USERNS; echo DONE".into(),
    ]);
    let inherited = handoff.raw_fds();
    // SAFETY: only fcntl and keyctl run between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        probe.pre_exec(move || {
            crate::bwrap::inherit(&inherited)?;
            crate::bwrap::join_new_session_keyring();
            Ok(())
        });
    }
    let Some(output) = output_with_timeout(probe, Duration::from_secs(10)) else {
        report.problem = Some("a probe sandbox did not finish within 10 s".into());
        return report;
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || !stdout.contains("DONE") {
        let stderr = String::from_utf8_lossy(&output.stderr);
        report.problem = Some(format!(
            "a probe sandbox failed: {}",
            stderr.lines().next().unwrap_or("no output")
        ));
        return report;
    }
    report.usable = true;
    let cap_eff = stdout
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default();
    let seccomp_mode = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default();
    let seccomp_filters = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp_filters:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default();
    let interfaces: Vec<String> = stdout
        .lines()
        .filter(|l| {
            !l.starts_with("CapEff")
                && !l.starts_with("Seccomp")
                && !["DONE", "ROOT-WRITABLE", "NESTED-USERNS"].contains(l)
        })
        .map(|l| l.trim().to_string())
        .collect();
    report.checks.push(check(
        "namespaces",
        true,
        "new user, pid, ipc, uts, mount, network and (where supported) cgroup namespaces",
    ));
    report.checks.push(check(
        "network",
        interfaces == ["lo"],
        format!("interfaces seen inside: {}", interfaces.join(", ")),
    ));
    report.checks.push(check(
        "capabilities",
        cap_eff.chars().all(|c| c == '0') && !cap_eff.is_empty(),
        format!("CapEff inside: {cap_eff}"),
    ));
    report.checks.push(check(
        "read-only root",
        !stdout.contains("ROOT-WRITABLE"),
        "writing to / inside the probe",
    ));
    report.checks.push(check(
        "nested user namespaces",
        !stdout.contains("NESTED-USERNS"),
        "the seccomp filter (and bwrap --disable-userns, except for root's sandboxes); `unshare -U` inside the probe",
    ));
    report.checks.push(check(
        "seccomp filter",
        seccomp_mode == "2",
        format!(
            "{} (filters loaded inside the probe: {})",
            crate::syscall_filter::summary(),
            if seccomp_filters.is_empty() {
                "none".to_string()
            } else {
                seccomp_filters
            }
        ),
    ));
    report.checks.push(check(
        "kernel keyrings",
        seccomp_mode == "2",
        "keyctl, add_key and request_key denied by the filter; bwrap starts in a new, empty session keyring",
    ));
    let images = crate::volume::images_unavailable();
    // Active either way: a folder's path showing is information, not an opening.
    report.checks.push(check(
        "host paths",
        true,
        format!(
            "bwrap's options are passed by descriptor (--args), so the sandbox's pid 1 shows `bwrap --args N`; no socket is mounted (the vault is reached through the parent's control channel); {}",
            match &images {
                None => "each workspace is an ext4 image of its own, so /proc/self/mountinfo shows it as `/` of a loop device, not its host path".to_string(),
                Some(why) => format!("workspaces are folders ({why}), so a workspace's host path shows in /proc/self/mountinfo as its bind mount's source"),
            }
        ),
    ));
    report.checks.push(check(
        "dies with parent",
        true,
        "bwrap --die-with-parent, plus the shim's control channel (its lifeline)",
    ));
    let (cgroup, limits) = Cgroup::create(&Limits::defaults());
    drop(cgroup);
    report.limits = limits;
    report.limits.extend(crate::runtime::workspace_report(
        &Limits::defaults(),
        crate::volume::images_unavailable().is_none(),
    ));
    report
        .limits
        .extend(crate::runtime::wall_time_report(&Limits {
            wall_time: Some(Duration::from_secs(600)),
            ..Limits::default()
        }));
    report
}

fn oci(tool: OciTool) -> RuntimeReport {
    let program = tool.program();
    let runtime = Oci::new(tool);
    let mut report = RuntimeReport {
        runtime: program.into(),
        usable: false,
        problem: None,
        checks: Vec::new(),
        limits: Vec::new(),
    };
    if which(program).is_none() {
        report.problem = Some(format!("{program} is not installed"));
        return report;
    }
    match runtime.check() {
        Ok(()) => {
            report.usable = true;
            for (name, detail) in [
                ("network", "--network none: loopback only"),
                (
                    "capabilities",
                    "--cap-drop ALL, --security-opt no-new-privileges",
                ),
                ("read-only root", "--read-only with a private /tmp"),
                (
                    "cleanup",
                    "--rm, owner label, removed on next start if the owner died",
                ),
            ] {
                report
                    .checks
                    .push(check(name, true, format!("{detail} (flags, not probed)")));
            }
            if let Some(path) = crate::seccomp::default_profile_path() {
                report.checks.push(check(
                    "seccomp filter",
                    tool == OciTool::Podman,
                    match tool {
                        OciTool::Podman => format!("podman's profile ({}) with palisade's denials: {}", path.display(), crate::syscall_filter::summary()),
                        OciTool::Docker => "docker's default profile, which refuses nested user namespaces and the keyrings without CAP_SYS_ADMIN (not probed)".into(),
                    },
                ));
            }
            if tool == OciTool::Podman {
                let detail = if nix::unistd::geteuid().is_root() {
                    let (base, source) = crate::oci::rootful_id_base();
                    format!(
                        "the agent is uid {} in a user namespace mapping ids 0-65535 to host ids {base}-{} ({source}), so it is host uid {}; not root in the container (flags, not probed)",
                        crate::oci::AGENT_ID_IN_CONTAINER,
                        base as u64 + 65535,
                        crate::oci::rootful_agent_owner().uid
                    )
                } else {
                    "--userns=keep-id: the agent is your own uid, not root in the container (flags, not probed)".to_string()
                };
                report.checks.push(check("user", true, detail));
                // runc makes the user namespace as root: what a sandbox holds is counted
                // against root on the host too (docs/sandbox.md).
                let shared_with_root = match nix::unistd::geteuid().is_root() {
                    true => format!(
                        "; as root, each sandbox's inotify instances also count against root's own (fs.inotify.max_user_instances = {}): raise it where several podman sandboxes run, or use bubblewrap",
                        std::fs::read_to_string("/proc/sys/fs/inotify/max_user_instances")
                            .map(|text| text.trim().to_string())
                            .unwrap_or_else(|_| "unknown".into())
                    ),
                    false => String::new(),
                };
                report.checks.push(check(
                    "kernel pools",
                    true,
                    format!(
                        "a createRuntime hook gives /dev/pts a maximum of {} terminals and the user namespace palisade's inotify and fanotify maxima; a failure stops the sandbox (not probed){shared_with_root}",
                        crate::pools::PTYS_PER_SANDBOX
                    ),
                ));
            }
            report.checks.push(check(
                "sockets",
                true,
                "none mounted: the vault is reached through the parent's control channel (--preserve-fds 1)",
            ));
            let spec_limits = Limits::defaults();
            report.limits = runtime.limit_reports_for(&spec_limits);
            report.limits.extend(crate::runtime::workspace_report(
                &spec_limits,
                crate::volume::images_unavailable().is_none(),
            ));
        }
        Err(e) => report.problem = Some(e.to_string()),
    }
    report
}

impl DoctorReport {
    /// The human form, one line per fact.
    pub fn render(&self) -> String {
        let mut out = format!("sandbox doctor (running as {})\n", self.user);
        for runtime in &self.runtimes {
            match &runtime.problem {
                None => out.push_str(&format!("{}: usable\n", runtime.runtime)),
                Some(problem) => {
                    out.push_str(&format!("{}: NOT usable: {problem}\n", runtime.runtime))
                }
            }
            for c in &runtime.checks {
                let mark = if c.active { "active  " } else { "MISSING " };
                out.push_str(&format!("  {mark}{}: {}\n", c.name, c.detail));
            }
            for l in &runtime.limits {
                let mark = if l.mechanism == crate::LimitMechanism::NotApplied {
                    "MISSING "
                } else {
                    "active  "
                };
                out.push_str(&format!(
                    "  {mark}{} limit ({}): {}",
                    l.limit, l.value, l.mechanism
                ));
                if let Some(note) = &l.note {
                    out.push_str(&format!(" — {note}"));
                }
                out.push('\n');
            }
        }
        out
    }
}
