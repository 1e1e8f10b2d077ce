//! The host's open-file table (`fs.file-max`) against a sandbox that keeps files open
//! by mapping them and closing their descriptors, which `RLIMIT_NOFILE` does not count.
//! Root only: the test makes the table small and puts its size back. A test binary of
//! its own, so no other test of this crate runs while the table is small.

use palisade_sandbox::{Limits, Runtime, SandboxSpec, StdioMode};
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

const SHIM: &str = env!("CARGO_BIN_EXE_palisade-sandbox-shim");

/// Maps a page of one file 60,000 times in each of two processes (under the kernel's
/// 65,530 mappings per process), closing each descriptor, and says how many it holds;
/// then holds them until stdin closes.
const PIN_FILES: &str = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
with open('/tmp/page', 'wb') as page:
    page.write(b'x' * 4096)
child = os.fork()
held, error = 0, ''
for _ in range(60000):
    try:
        fd = os.open('/tmp/page', os.O_RDONLY)
    except OSError as e:
        error = e.strerror
        break
    address = libc.mmap(None, 4096, 1, 1, fd, 0)
    os.close(fd)
    if address is None or address == ctypes.c_void_p(-1).value:
        error = os.strerror(ctypes.get_errno())
        break
    held += 1
print('held', held, error, flush=True)
sys.stdin.read()
if child:
    os.waitpid(child, 0)
"#;

fn number(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// `fs.file-max` as it was, put back when dropped.
struct TableSize(u64);

impl Drop for TableSize {
    fn drop(&mut self) {
        std::fs::write("/proc/sys/fs/file-max", self.0.to_string())
            .expect("cannot put fs.file-max back");
    }
}

/// Whether a process of another user (not root, so bound by the table) can open a file.
fn another_user_opens_a_file() -> Result<(), String> {
    let output = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/bin/cat",
            "/etc/hostname",
        ])
        .output()
        .map_err(|e| format!("cannot run setpriv: {e}"))?;
    match output.status.success() {
        true => Ok(()),
        false => Err(String::from_utf8_lossy(&output.stderr).into_owned()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_a_sandbox_keeps_open_by_mapping_leave_the_host_room() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPING: only root can make the open-file table small for this test");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let workspace = dir.path().join("agents/a/workspace");
    std::fs::create_dir_all(&workspace).unwrap();
    let socket = dir.path().join("vault.sock");
    let _vault = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    // A table with room for 50,000 more files: the sandbox below keeps 120,000 open,
    // which its 128 MiB memory limit allows (~450 bytes each).
    let size = TableSize(number("/proc/sys/fs/file-max"));
    let small = number("/proc/sys/fs/file-nr") + 50_000;
    std::fs::write("/proc/sys/fs/file-max", small.to_string()).unwrap();
    let spec = SandboxSpec {
        agent: "a".into(),
        workspace,
        palisade_binary: PathBuf::from(SHIM),
        shim_subcommand: vec!["shim".into()],
        vault_socket: socket,
        host_socket: None,
        ca_bundle: palisade_sandbox::env::ca_bundle(
            "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n",
        ),
        mounts: Vec::new(),
        limits: Limits {
            memory: Some(128 << 20),
            pids: Some(64),
            ..Limits::default()
        },
        command: vec!["/usr/bin/python3".into(), "-c".into(), PIN_FILES.into()],
        stdio: StdioMode::Piped,
    };
    let mut sandbox = palisade_sandbox::Bubblewrap::new()
        .start(&spec)
        .expect("bubblewrap sandbox");
    let report = sandbox
        .limit_reports()
        .iter()
        .find(|report| report.limit == "file-table")
        .cloned()
        .expect("a report on the open-file table");
    let stdin = sandbox.child_mut().stdin.take().unwrap();
    let mut lines = BufReader::new(sandbox.child_mut().stdout.take().unwrap()).lines();
    let mut held = Vec::new();
    for _ in 0..2 {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the sandbox did not say what it holds within 60 s")
            .unwrap()
            .unwrap_or_default();
        held.push(line);
    }
    // While the sandbox holds every file it could map, the host has room left.
    let host = another_user_opens_a_file();
    drop(stdin);
    tokio::time::timeout(Duration::from_secs(30), sandbox.wait())
        .await
        .expect("the sandbox did not end within 30 s")
        .unwrap();
    let raised = number("/proc/sys/fs/file-max");
    drop(size);
    assert_eq!(held, ["held 60000 ", "held 60000 "], "{report:?}");
    assert!(host.is_ok(), "another user could not open a file: {host:?}");
    assert!(raised >= small + (128 << 20) / 256, "{raised} {report:?}");
    let note = report.note.unwrap_or_default();
    assert!(note.contains("raised"), "{note}");
}
