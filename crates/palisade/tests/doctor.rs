//! `palisade doctor` with the real binary: on a machine where a sandbox runtime is
//! missing (bubblewrap not on the PATH) it fails with the cause and the fix in one line
//! each, and as the unprivileged test user, whose sandboxes cannot get a CPU cgroup,
//! it names the limit that cannot be applied and how to get it. A home with agents
//! reports which have a model key, and `--online` with no vault running says so.

use palisade_testkit::{run_with_timeout, Palisade};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const BINARY: &str = env!("CARGO_BIN_EXE_palisade");
const TEST_USER: &str = "palisade-test";
const LIMIT: Duration = Duration::from_secs(120);

fn text(output: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The line of `stdout` that contains `needle`, and the line after it (the fix).
fn finding<'a>(stdout: &'a str, needle: &str) -> (&'a str, &'a str) {
    let lines: Vec<&str> = stdout.lines().collect();
    let index = lines
        .iter()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?}:\n{stdout}"));
    (lines[index], lines.get(index + 1).copied().unwrap_or(""))
}

#[test]
fn a_missing_runtime_fails_with_its_cause_and_fix() {
    let palisade = Palisade::new(BINARY);
    // A PATH without bubblewrap, podman or docker.
    let empty = palisade.dir().join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let mut command = palisade.command(&["doctor"]);
    command.env("PATH", &empty);
    let output = run_with_timeout(&mut command, None, LIMIT);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let (line, fix) = finding(&stdout, "bwrap: not usable");
    assert!(line.starts_with("FAIL sandbox"), "{line}");
    assert!(
        line.contains("bubblewrap (bwrap) is not installed"),
        "{line}"
    );
    assert!(
        fix.trim_start().starts_with("fix: install bubblewrap")
            && fix.contains("apt-get install bubblewrap"),
        "{fix}"
    );
    // Optional runtimes are named, not failed.
    let (podman, _) = finding(&stdout, "podman (optional, not used)");
    assert!(podman.starts_with("ok"), "{podman}");
    // The rest of the machine is still checked.
    for needle in [
        "audit chain intact",
        "master key",
        "free under",
        "not running",
    ] {
        finding(&stdout, needle);
    }

    let mut json = palisade.command(&["--json", "doctor"]);
    json.env("PATH", &empty);
    let output = run_with_timeout(&mut json, None, LIMIT);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let failed: Vec<&serde_json::Value> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["status"] == "fail")
        .collect();
    assert_eq!(failed.len(), 1, "{report}");
    assert!(failed[0]["fix"].as_str().unwrap().contains("bubblewrap"));
    assert_eq!(report["sandbox"]["runtimes"][0]["runtime"], "bwrap");
}

/// A doctor does not create the home it examines (a mistyped --home would become a
/// new home that looks healthy): it says there is none, and how one is made.
#[test]
fn a_missing_home_is_named_not_created() {
    let palisade = Palisade::new(BINARY);
    let nowhere = palisade.dir().join("no-such-home");
    for online in [false, true] {
        let mut args = vec!["--home", nowhere.to_str().unwrap(), "doctor"];
        if online {
            args.push("--online");
        }
        let mut command = Command::new(BINARY);
        command.args(&args);
        let output = run_with_timeout(&mut command, None, LIMIT);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let (line, fix) = finding(&stdout, "no Palisade home at");
        assert!(line.starts_with("warn store"), "{}", text(&output));
        assert!(fix.contains("`palisade up` creates it"), "{fix}");
        finding(&stdout, "free under");
        finding(&stdout, "not running");
        assert!(!stdout.contains("master key"), "{stdout}");
        assert!(!nowhere.exists(), "doctor created {}", nowhere.display());
    }
}

#[test]
fn agents_without_a_model_key_are_named_and_online_needs_the_vault() {
    let palisade = Palisade::new(BINARY);
    let created = palisade.run(&["agents", "create", "helper"]);
    assert!(created.status.success(), "{}", text(&created));
    let output = palisade.run(&["doctor", "--online"]);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let (line, fix) = finding(&stdout, "agent helper: no model key");
    assert!(line.starts_with("warn model"), "{line}");
    assert!(
        fix.contains("palisade secrets create --name anthropic --host-pattern api.anthropic.com"),
        "{fix}"
    );

    let key = palisade.write_file("key.txt", "sk-ant-doctor-test");
    let stored = palisade.run(&[
        "secrets",
        "create",
        "--name",
        "anthropic",
        "--host-pattern",
        "api.anthropic.com",
        "--inject",
        "anthropic",
        "--agent",
        "helper",
        "--value-file",
        key.to_str().unwrap(),
    ]);
    assert!(stored.status.success(), "{}", text(&stored));
    // With a key but no vault running, the online check fails with the way out; it
    // sends nothing anywhere.
    let output = palisade.run(&["doctor", "--online"]);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    finding(&stdout, "agent helper: anthropic model");
    let (line, fix) = finding(&stdout, "agent helper: cannot reach the vault socket");
    assert!(line.starts_with("FAIL model"), "{line}");
    assert!(fix.contains("palisade up"), "{fix}");
    assert_eq!(output.status.code(), Some(1));
    assert!(!palisade.all_output().contains("sk-ant-doctor-test"));
}

/// As the unprivileged test user (scripts/test-user.sh creates it), whose sandboxes
/// get no CPU cgroup on this machine unless root delegates one.
#[test]
fn a_limit_that_cannot_be_applied_is_named_with_its_fix() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPING: the unprivileged case runs only when the tests run as root");
        return;
    }
    if Command::new("id")
        .arg(TEST_USER)
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/test-user.sh");
        let mut prepare = Command::new("bash");
        prepare.arg(script).current_dir("/");
        let output = run_with_timeout(&mut prepare, None, Duration::from_secs(600));
        assert!(output.status.success(), "{}", text(&output));
    }
    // The binary and a home the user can reach.
    let dir = tempfile::Builder::new()
        .prefix("palisade-doctor-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let bin = dir.path().join("palisade");
    std::fs::copy(BINARY, &bin).unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    for (path, mode) in [(dir.path(), 0o755), (bin.as_path(), 0o755)] {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    }
    let user = nix::unistd::User::from_name(TEST_USER).unwrap().unwrap();
    nix::unistd::chown(&home, Some(user.uid), Some(user.gid)).unwrap();
    let cpu_delegated = Path::new("/sys/fs/cgroup/cpu")
        .join(format!("palisade-user-{}", user.uid))
        .exists();
    let mut command = Command::new("runuser");
    command
        .args([
            "-u",
            TEST_USER,
            "--",
            "env",
            "-i",
            "PATH=/usr/local/bin:/usr/bin:/bin",
        ])
        .arg(format!("HOME={}", user.dir.display()))
        .arg(&bin)
        .arg("--home")
        .arg(&home)
        .arg("doctor")
        .current_dir("/");
    let output = run_with_timeout(&mut command, None, LIMIT);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let weaker: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("cannot be applied") || l.contains("is only an rlimit"))
        .collect();
    if cpu_delegated || weaker.is_empty() {
        eprintln!("SKIPPING: this machine gives {TEST_USER} every limit:\n{stdout}");
        return;
    }
    let (line, fix) = finding(&stdout, weaker[0]);
    assert!(line.starts_with("warn sandbox  bwrap: the "), "{line}");
    assert!(line.contains("limit ("), "{line}");
    assert!(
        fix.trim_start().starts_with("fix: to enforce it"),
        "{fix}\n{stdout}"
    );
    // Weaker limits are warnings: sandboxes still run.
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
}
