//! A child process that cannot outlive its test.
//!
//! The gateway and the clients a test starts may start children of their own, so
//! killing only the direct child is not enough. Every guarded child leads its own
//! process group (`process_group(0)`), and dropping the guard signals the whole
//! group: SIGTERM first so a gateway can shut down the way users see it, SIGKILL
//! after a grace period, then the direct child is reaped so no zombie stays behind.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// How long a group gets to exit after SIGTERM before it is killed.
pub const TERM_GRACE: Duration = Duration::from_secs(5);

/// Owns a child process (and its process group) until dropped.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    status: Option<ExitStatus>,
    stdout_path: Option<PathBuf>,
    stderr_path: Option<PathBuf>,
}

impl ChildGuard {
    /// Spawns `command` as the leader of a new process group.
    pub fn spawn(command: &mut Command) -> io::Result<ChildGuard> {
        command.process_group(0);
        Ok(ChildGuard::new(command.spawn()?))
    }

    /// Guards an already spawned child. It must lead its own process group (spawned
    /// with `process_group(0)`), or dropping the guard would signal the test's group.
    pub fn new(child: Child) -> ChildGuard {
        ChildGuard {
            child,
            status: None,
            stdout_path: None,
            stderr_path: None,
        }
    }

    /// Records where the child's stdout and stderr go, for [`ChildGuard::stdout`].
    pub fn with_log_files(mut self, stdout: PathBuf, stderr: PathBuf) -> ChildGuard {
        self.stdout_path = Some(stdout);
        self.stderr_path = Some(stderr);
        self
    }

    /// The child's pid, which is also its process group id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The underlying child, e.g. to take a piped stdin.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Path of the file receiving stdout, when spawned with log files.
    pub fn stdout_path(&self) -> Option<&Path> {
        self.stdout_path.as_deref()
    }

    /// Path of the file receiving stderr, when spawned with log files.
    pub fn stderr_path(&self) -> Option<&Path> {
        self.stderr_path.as_deref()
    }

    /// Everything the child wrote to stdout so far ("" without a log file).
    pub fn stdout(&self) -> String {
        read_lossy(self.stdout_path.as_deref())
    }

    /// Everything the child wrote to stderr so far ("" without a log file).
    pub fn stderr(&self) -> String {
        read_lossy(self.stderr_path.as_deref())
    }

    /// The exit status if the child has exited, without blocking.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status)
    }

    /// Waits up to `timeout` for the child to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` to the child's whole process group.
    pub fn signal_group(&self, signal: Signal) -> io::Result<()> {
        match killpg(self.pgid(), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(errno) => Err(io::Error::from(errno)),
        }
    }

    /// SIGTERM to the group, up to [`TERM_GRACE`] for the child to exit, then
    /// SIGKILL to whatever is left of the group; reaps the child.
    pub fn terminate(&mut self) -> io::Result<ExitStatus> {
        if self.status.is_none() {
            self.signal_group(Signal::SIGTERM)?;
            self.wait_timeout(TERM_GRACE)?;
        }
        // Grandchildren may ignore SIGTERM or outlive the leader; the group id stays
        // reserved while any member is alive, so this reaches only them.
        self.signal_group(Signal::SIGKILL)?;
        match self.status {
            Some(status) => Ok(status),
            None => {
                let status = self.child.wait()?;
                self.status = Some(status);
                Ok(status)
            }
        }
    }

    /// SIGKILL to the group at once; reaps the child.
    pub fn kill(&mut self) -> io::Result<ExitStatus> {
        self.signal_group(Signal::SIGKILL)?;
        match self.status {
            Some(status) => Ok(status),
            None => {
                let status = self.child.wait()?;
                self.status = Some(status);
                Ok(status)
            }
        }
    }

    fn pgid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.terminate().is_err() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn read_lossy(path: Option<&Path>) -> String {
    path.and_then(|p| std::fs::read(p).ok())
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// Unmounts (lazily, so a process still using one cannot keep it) everything mounted
/// inside `dir`, deepest first: the workspace images root's sandboxes mount in a test's
/// home, so removing the temporary directory afterwards removes them too.
pub fn unmount_under(dir: &std::path::Path) {
    for point in palisade_sandbox::volume::mounts_under(dir) {
        let _ = nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH);
    }
}
