//! The hook podman runs to bound a container's kernel pools (`shim --oci-pools-hook`)
//! acts only on a process its own parent started, as the runtime's container is: one
//! named on stdin by anyone else (a script running the hook by hand, as root perhaps)
//! is refused before anything in its namespaces is changed.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

const SHIM: &str = env!("CARGO_BIN_EXE_palisade-sandbox-shim");

/// A process leading its own group; the group is killed and the process reaped when
/// this is dropped.
struct Group(std::process::Child);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.0.wait();
    }
}

/// `/proc/sys/user/max_inotify_instances` as process `pid`'s user namespace sees it.
fn inotify_maximum_of(pid: &str) -> String {
    let output = Command::new("nsenter")
        .args([
            "-t",
            pid,
            "-U",
            "cat",
            "/proc/sys/user/max_inotify_instances",
        ])
        .output()
        .expect("run nsenter");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[test]
fn the_pools_hook_refuses_a_process_its_parent_did_not_start() {
    // A process in a user namespace of its own, started by a shell: not a child of
    // this test, which runs the hook.
    let mut shell = Group(
        Command::new("sh")
            .args(["-c", "unshare -U -r sleep 60 & echo $!; wait"])
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("start a shell"),
    );
    let mut pid = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(shell.0.stdout.take().unwrap()),
        &mut pid,
    )
    .unwrap();
    let pid = pid.trim().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut before = String::new();
    while std::time::Instant::now() < deadline {
        before = inotify_maximum_of(&pid);
        if !before.is_empty() && before != "16" {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!before.is_empty(), "cannot read the target's namespace");

    let bundle = tempfile::tempdir().unwrap();
    let root = bundle.path().join("root");
    std::fs::create_dir_all(root.join("dev/pts")).unwrap();
    std::fs::write(
        bundle.path().join("config.json"),
        serde_json::json!({"root": {"path": root}}).to_string(),
    )
    .unwrap();
    let state = serde_json::json!({"pid": pid.parse::<i32>().unwrap(), "bundle": bundle.path()});
    let mut hook = Command::new(SHIM)
        .args(["shim", "--oci-pools-hook"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the hook");
    hook.stdin
        .take()
        .unwrap()
        .write_all(state.to_string().as_bytes())
        .unwrap();
    let output = hook.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("not started by the runtime"), "{stderr}");
    assert_eq!(
        inotify_maximum_of(&pid),
        before,
        "the hook changed its maxima"
    );
}
