//! Runs the real `palisade` binary against a fresh temporary home.
//!
//! Each test gets its own `PALISADE_HOME`, so tests run in parallel without sharing
//! a database, a CA or a socket directory. Everything the binary prints, from short
//! commands and from long-running services alike, is also kept in files under the
//! temporary directory, so a test can assert that a secret value never appears in
//! any output ([`Palisade::all_output`]).

use std::ffi::OsStr;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::clients::{free_port, run_with_timeout, wait_for_tcp, wait_until};
use crate::process::ChildGuard;

/// How long a short command (`agents create`, `secrets list`, …) may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

impl Drop for Palisade {
    fn drop(&mut self) {
        crate::process::unmount_under(self.temp.path());
    }
}

/// The `palisade` binary bound to a temporary home.
#[derive(Debug)]
pub struct Palisade {
    binary: PathBuf,
    temp: tempfile::TempDir,
    home: PathBuf,
    logs: PathBuf,
    env: Vec<(String, String)>,
    sequence: AtomicUsize,
}

impl Palisade {
    /// Binds `binary` (from `env!("CARGO_BIN_EXE_palisade")`) to a new temporary home.
    pub fn new(binary: impl Into<PathBuf>) -> Palisade {
        let temp = tempfile::Builder::new()
            .prefix("palisade-test")
            .tempdir()
            .expect("create a temporary directory");
        let home = temp.path().join("home");
        let logs = temp.path().join("output");
        std::fs::create_dir_all(&home).expect("create the temporary home");
        std::fs::create_dir_all(&logs).expect("create the output directory");
        Palisade {
            binary: binary.into(),
            temp,
            home,
            logs,
            env: Vec::new(),
            sequence: AtomicUsize::new(0),
        }
    }

    /// Adds an environment variable to every command run from now on.
    pub fn env(mut self, name: &str, value: &str) -> Palisade {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// The `PALISADE_HOME` every command runs with.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The temporary directory holding the home, outputs and any test files.
    pub fn dir(&self) -> &Path {
        self.temp.path()
    }

    /// Writes `contents` to `name` in the temporary directory, returning its path
    /// (for `--value-file`, certificates and the like).
    pub fn write_file(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.temp.path().join(name);
        std::fs::write(&path, contents).expect("write a test file");
        path
    }

    /// A command for the binary with `PALISADE_HOME` set and no proxy variables.
    pub fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut command = Command::new(&self.binary);
        command.args(args).env("PALISADE_HOME", &self.home);
        for name in ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"] {
            command.env_remove(name);
        }
        for (name, value) in &self.env {
            command.env(name, value);
        }
        command
    }

    /// Runs `palisade ARGS…` to completion (killed after [`COMMAND_TIMEOUT`]).
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.run_inner(args, None)
    }

    /// Runs `palisade ARGS…` with `stdin` as its standard input.
    pub fn run_stdin<S: AsRef<OsStr>>(&self, args: &[S], stdin: &[u8]) -> Output {
        self.run_inner(args, Some(stdin))
    }

    fn run_inner<S: AsRef<OsStr>>(&self, args: &[S], stdin: Option<&[u8]>) -> Output {
        let output = run_with_timeout(&mut self.command(args), stdin, COMMAND_TIMEOUT);
        let (stdout, stderr) = self.next_log_paths("run");
        // Kept for leak checks; a failed write only weakens that check, so say so.
        if std::fs::write(&stdout, &output.stdout).is_err()
            || std::fs::write(&stderr, &output.stderr).is_err()
        {
            eprintln!("[palisade-testkit] could not keep the output of a command");
        }
        output
    }

    /// Starts `palisade ARGS…` in the background, output to files in the temp dir.
    pub fn spawn<S: AsRef<OsStr>>(&self, args: &[S]) -> ChildGuard {
        let (stdout_path, stderr_path) = self.next_log_paths("spawn");
        let stdout = File::create(&stdout_path).expect("create stdout file");
        let stderr = File::create(&stderr_path).expect("create stderr file");
        let mut command = self.command(args);
        command.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        ChildGuard::spawn(&mut command)
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", self.binary.display()))
            .with_log_files(stdout_path, stderr_path)
    }

    /// Starts `palisade vault serve --listen 127.0.0.1:PORT ARGS…` on a free port and
    /// waits (up to 20 s) until it accepts connections. Panics with its output if not.
    pub fn spawn_vault<S: AsRef<OsStr>>(&self, args: &[S]) -> (ChildGuard, SocketAddr) {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut full: Vec<&OsStr> = vec![
            OsStr::new("vault"),
            OsStr::new("serve"),
            OsStr::new("--listen"),
        ];
        let listen = addr.to_string();
        full.push(OsStr::new(&listen));
        full.extend(args.iter().map(|a| a.as_ref()));
        let mut guard = self.spawn(&full);
        let ready = wait_until(Duration::from_secs(20), || {
            matches!(guard.try_wait(), Ok(Some(_)))
                || wait_for_tcp(addr, Duration::from_millis(100))
        });
        if !ready || matches!(guard.try_wait(), Ok(Some(_))) {
            panic!(
                "palisade vault serve did not start on {addr}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                guard.stdout(),
                guard.stderr()
            );
        }
        (guard, addr)
    }

    /// Everything every command and service has printed so far, concatenated.
    pub fn all_output(&self) -> String {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.logs)
            .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        names.sort();
        let mut text = String::new();
        for path in names {
            if let Ok(bytes) = std::fs::read(&path) {
                text.push_str(&String::from_utf8_lossy(&bytes));
                text.push('\n');
            }
        }
        text
    }

    /// Waits until a TCP connection to `addr` succeeds.
    pub fn wait_for_tcp(&self, addr: SocketAddr, timeout: Duration) -> bool {
        wait_for_tcp(addr, timeout)
    }

    /// Polls `condition` until it holds or `timeout` passes.
    pub fn wait_until(&self, timeout: Duration, condition: impl FnMut() -> bool) -> bool {
        wait_until(timeout, condition)
    }

    fn next_log_paths(&self, kind: &str) -> (PathBuf, PathBuf) {
        let n = self.sequence.fetch_add(1, Ordering::SeqCst);
        (
            self.logs.join(format!("{n:04}-{kind}.stdout")),
            self.logs.join(format!("{n:04}-{kind}.stderr")),
        )
    }
}

/// The proxy URL a standalone agent uses: `http://x:TOKEN@ADDR`.
pub fn proxy_url(addr: SocketAddr, token: &str) -> String {
    format!("http://x:{token}@{addr}")
}
