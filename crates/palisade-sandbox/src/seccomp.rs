//! The seccomp profile of podman sandboxes: podman's own default rules, hardened with
//! the denials every palisade sandbox gets ([`crate::syscall_filter::DENIED`]).
//!
//! podman's default profile allows `unshare`, `clone` and `clone3` whatever their
//! flags, so a process that holds no capability can still create a user namespace
//! and, inside it, become "root" over fresh mount and network namespaces: no way out
//! of the sandbox by itself, but kernel attack surface a sandbox has no use for
//! (bubblewrap sandboxes get the same filter, and `--disable-userns` unless root starts
//! them). It also allows
//! `keyctl` (the kernel keyrings are not namespaced) and `ptrace`. This module reads
//! the profile podman would use anyway and rewrites only the denied calls:
//!
//! - each call denied outright is removed from every rule and answered with its errno
//!   (`EPERM`, or `ENOSYS` for `clone3` and `io_uring_*` so callers fall back);
//! - `clone` and `unshare`: allowed only when `CLONE_NEWUSER` is not among the flags,
//!   `EPERM` when it is (the flags are `clone`'s second argument on s390);
//! - `clone3`: `ENOSYS`, because its flags sit in memory seccomp cannot read; the C
//!   library then falls back to `clone`, which the rule above checks.
//!
//! - the calls that can set the setuid or setgid bit (`chmod`, `fchmod`, `fchmodat`,
//!   and the create mode of `open`, `openat`, `creat`, `mknod`, `mknodat`): allowed
//!   when both bits are clear, `EPERM` when either is set.
//!
//! Every other rule is kept as podman ships it; `socket(AF_VSOCK)` cannot be added to
//! podman's own `socket` rules (they already hold argument conditions, and one rule
//! may compare an argument only once), so the shim loads it as a filter of its own
//! (`syscall_filter::argument_denials`). Written here with serde_json over the
//! profile's JSON: no crate models the containers seccomp format.

use crate::syscall_filter::{always_denied, When, CLONE_NEWUSER, DENIED, EPERM};
use crate::SandboxError;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Where podman's default profile lives (containers-common).
const DEFAULT_PROFILES: [&str; 2] = [
    "/usr/share/containers/seccomp.json",
    "/etc/containers/seccomp.json",
];

/// The host's podman default profile, if installed.
pub fn default_profile_path() -> Option<PathBuf> {
    DEFAULT_PROFILES
        .iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
}

/// The profile text for a podman sandbox: the host's default with nested user
/// namespaces denied.
pub fn podman_profile() -> Result<String, SandboxError> {
    let path = default_profile_path().ok_or_else(|| SandboxError::RuntimeUnusable {
        runtime: "podman".into(),
        reason: format!(
            "its default seccomp profile ({}) is missing, so palisade cannot add its rules to it; install containers-common (Debian: `apt-get install golang-github-containers-common`)",
            DEFAULT_PROFILES[0]
        ),
    })?;
    profile_from_file(&path)
}

fn profile_from_file(path: &Path) -> Result<String, SandboxError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| SandboxError::io(format!("cannot read {}", path.display()), e))?;
    let unusable = |reason: String| SandboxError::RuntimeUnusable {
        runtime: "podman".into(),
        reason: format!(
            "its seccomp profile {} {reason}; reinstall containers-common",
            path.display()
        ),
    };
    let base: Value =
        serde_json::from_str(&text).map_err(|e| unusable(format!("is not valid JSON ({e})")))?;
    let profile = hardened(base).map_err(unusable)?;
    serde_json::to_string(&profile).map_err(|e| unusable(e.to_string()))
}

/// Rewrites `profile` as the module doc says.
pub fn hardened(mut profile: Value) -> Result<Value, String> {
    let syscalls = profile
        .get_mut("syscalls")
        .and_then(Value::as_array_mut)
        .ok_or("has no `syscalls` list")?;
    // A denial by argument value (`socket(AF_VSOCK)`) is not applied here: the
    // profile's own conditional `socket` rules cannot be merged with it safely.
    let rewritten = |name: &str| {
        DENIED.iter().any(|d| {
            d.syscall == name && !matches!(d.when, When::Equals { .. } | When::Datagram { .. })
        })
    };
    syscalls.retain_mut(|rule| {
        let Some(rule) = rule.as_object_mut() else {
            return false;
        };
        if let Some(names) = rule.get_mut("names").and_then(Value::as_array_mut) {
            names.retain(|name| !name.as_str().is_some_and(rewritten));
            return !names.is_empty();
        }
        // The older single-name form.
        !rule
            .get("name")
            .and_then(Value::as_str)
            .is_some_and(rewritten)
    });
    for denial in always_denied() {
        syscalls.push(json!({ "names": [denial.syscall], "action": "SCMP_ACT_ERRNO", "errnoRet": denial.answer.errno() }));
    }
    let without_newuser = |index: u32| json!([{ "index": index, "value": CLONE_NEWUSER, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ" }]);
    let with_newuser = |index: u32| json!([{ "index": index, "value": CLONE_NEWUSER, "valueTwo": CLONE_NEWUSER, "op": "SCMP_CMP_MASKED_EQ" }]);
    let s390 = json!({ "arches": ["s390", "s390x"] });
    // The set-id bits: allowed when both are clear, refused when either is set (the
    // rules do not overlap, as for clone below).
    for denial in DENIED {
        let When::SetIdMode { arg } = denial.when else {
            continue;
        };
        let name = denial.syscall;
        syscalls.push(json!({ "names": [name], "action": "SCMP_ACT_ALLOW", "args": [{ "index": arg, "value": 0o6000, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ" }] }));
        for bit in [0o4000, 0o2000] {
            syscalls.push(json!({ "names": [name], "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM, "args": [{ "index": arg, "value": bit, "valueTwo": bit, "op": "SCMP_CMP_MASKED_EQ" }] }));
        }
    }
    for denial in DENIED {
        let When::FlagSet { flag, .. } = denial.when else {
            continue;
        };
        debug_assert_eq!(flag, CLONE_NEWUSER);
        let name = denial.syscall;
        if name == "clone" {
            syscalls.extend([
                json!({ "names": [name], "action": "SCMP_ACT_ALLOW", "args": without_newuser(0), "excludes": s390 }),
                json!({ "names": [name], "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM, "args": with_newuser(0), "excludes": s390 }),
                json!({ "names": [name], "action": "SCMP_ACT_ALLOW", "args": without_newuser(1), "includes": s390 }),
                json!({ "names": [name], "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM, "args": with_newuser(1), "includes": s390 }),
            ]);
        } else {
            syscalls.extend([
                json!({ "names": [name], "action": "SCMP_ACT_ALLOW", "args": without_newuser(0) }),
                json!({ "names": [name], "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM, "args": with_newuser(0) }),
            ]);
        }
    }
    Ok(profile)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscall_filter::ENOSYS;

    fn rules_for<'a>(profile: &'a Value, name: &str) -> Vec<&'a Value> {
        profile["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|rule| {
                rule["names"]
                    .as_array()
                    .is_some_and(|names| names.iter().any(|n| n == name))
                    || rule["name"] == name
            })
            .collect()
    }

    #[test]
    fn only_the_denied_syscalls_change() {
        let base = json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                { "names": ["read", "clone", "clone3", "unshare", "keyctl", "ptrace", "write", "fchmod"], "action": "SCMP_ACT_ALLOW" },
                { "names": ["clone", "unshare"], "action": "SCMP_ACT_ALLOW", "includes": { "caps": ["CAP_SYS_ADMIN"] } },
                { "name": "clone3", "action": "SCMP_ACT_ALLOW" },
                { "names": ["setns"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1 },
            ]
        });
        let profile = hardened(base).unwrap();
        assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
        // Untouched neighbours keep their rules.
        assert_eq!(
            rules_for(&profile, "read")[0]["names"],
            json!(["read", "write"])
        );
        assert_eq!(rules_for(&profile, "setns").len(), 1);
        // Calls denied outright are answered with their errno by one rule each.
        for (name, errno) in [
            ("keyctl", EPERM),
            ("ptrace", EPERM),
            ("io_uring_setup", ENOSYS),
            ("io_setup", ENOSYS),
        ] {
            let rules = rules_for(&profile, name);
            assert_eq!(rules.len(), 1, "{name}");
            assert_eq!(rules[0]["action"], "SCMP_ACT_ERRNO", "{name}");
            assert_eq!(rules[0]["errnoRet"], errno, "{name}");
        }
        // fchmod is allowed only with both set-id bits clear, refused with either.
        let fchmod = rules_for(&profile, "fchmod");
        assert_eq!(fchmod.len(), 3, "{fchmod:?}");
        for rule in fchmod {
            let arg = &rule["args"][0];
            assert_eq!(arg["index"], 1);
            assert_eq!(arg["op"], "SCMP_CMP_MASKED_EQ");
            match rule["action"].as_str() {
                Some("SCMP_ACT_ALLOW") => {
                    assert_eq!(
                        (arg["value"].clone(), arg["valueTwo"].clone()),
                        (json!(0o6000), json!(0))
                    )
                }
                Some("SCMP_ACT_ERRNO") => assert_eq!(arg["value"], arg["valueTwo"]),
                other => panic!("fchmod: unexpected action {other:?}"),
            }
        }
        // No rule allows clone3; it answers ENOSYS.
        let clone3 = rules_for(&profile, "clone3");
        assert_eq!(clone3.len(), 1);
        assert_eq!(clone3[0]["action"], "SCMP_ACT_ERRNO");
        assert_eq!(clone3[0]["errnoRet"], ENOSYS);
        // Every remaining allow of clone/unshare requires CLONE_NEWUSER to be clear,
        // and a set CLONE_NEWUSER meets EPERM.
        for name in ["clone", "unshare"] {
            let rules = rules_for(&profile, name);
            assert!(rules.len() >= 2, "{name}");
            for rule in rules {
                let arg = &rule["args"][0];
                assert_eq!(arg["op"], "SCMP_CMP_MASKED_EQ", "{name}");
                assert_eq!(arg["value"], CLONE_NEWUSER, "{name}");
                match rule["action"].as_str() {
                    Some("SCMP_ACT_ALLOW") => assert_eq!(arg["valueTwo"], 0, "{name}"),
                    Some("SCMP_ACT_ERRNO") => {
                        assert_eq!(arg["valueTwo"], CLONE_NEWUSER, "{name}");
                        assert_eq!(rule["errnoRet"], EPERM, "{name}");
                    }
                    other => panic!("{name}: unexpected action {other:?}"),
                }
            }
        }
    }

    #[test]
    fn a_profile_without_syscalls_is_refused() {
        assert!(hardened(json!({ "defaultAction": "x" })).is_err());
    }

    #[test]
    fn the_host_profile_if_installed_is_rewritten() {
        let Some(path) = default_profile_path() else {
            eprintln!("no podman default seccomp profile on this host");
            return;
        };
        let text = profile_from_file(&path).unwrap();
        let profile: Value = serde_json::from_str(&text).unwrap();
        for rule in rules_for(&profile, "unshare") {
            assert!(rule["args"][0]["op"] == "SCMP_CMP_MASKED_EQ", "{rule}");
        }
    }
}
