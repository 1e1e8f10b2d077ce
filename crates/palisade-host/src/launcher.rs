//! Starting a runner for an agent: behind a trait so the supervisor can be tested with
//! in-process fake runners, and implemented for real by [`SandboxLauncher`], which
//! runs `palisade runner` inside the agent's sandbox (palisade-sandbox); the runner
//! reaches the agent's host socket at [`SANDBOX_HOST_SOCKET`], an abstract socket the
//! sandbox's shim relays through its parent like the vault (no socket is mounted).

use crate::HostError;
use futures_util::future::BoxFuture;
use palisade_policy::AgentName;
use palisade_sandbox::{Limits, Runtime, SandboxSpec, StdioMode};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncBufReadExt;
use tokio::sync::{oneshot, watch};

/// Where the host socket is offered inside a sandbox (`@`: an abstract socket).
pub const SANDBOX_HOST_SOCKET: &str = palisade_sandbox::paths::HOST_SOCKET;

/// A running runner, however it was started.
pub trait RunnerProcess: Send {
    /// Resolves when the runner has exited.
    fn exited(&mut self) -> BoxFuture<'_, ()>;
    /// Ends the runner and waits (bounded) until it is gone.
    fn kill(&mut self) -> BoxFuture<'_, ()>;
    /// Why it ended, when that is known (its workspace's disk full, the last line it
    /// wrote to stderr): for the person waiting on it, not only for the log.
    fn why_exited(&self) -> Option<String> {
        None
    }
}

/// Starts runners.
pub trait RunnerLauncher: Send + Sync {
    /// Starts a runner for `agent` that will connect to `host_socket` (a host path).
    fn launch(
        &self,
        agent: &AgentName,
        host_socket: &Path,
    ) -> Result<Box<dyn RunnerProcess>, HostError>;
}

/// Runs `palisade runner` in the agent's sandbox.
pub struct SandboxLauncher {
    pub runtime: Arc<dyn Runtime>,
    pub home: palisade_store::Home,
    /// The `palisade` binary to mount into the sandbox.
    pub palisade_binary: PathBuf,
    /// Directory of the vault's per-agent sockets.
    pub vault_socket_dir: PathBuf,
    /// PEM of system roots + the vault CA.
    pub ca_bundle: String,
    /// Limits of every runner's sandbox; the workspace quota is the agent's own (its
    /// settings in `store`).
    pub limits: Limits,
    pub store: palisade_store::Store,
}

impl SandboxLauncher {
    /// The agent's workspace quota: its own setting, else the default.
    fn workspace_quota(&self, agent: &AgentName) -> u64 {
        self.store
            .get_agent(agent)
            .ok()
            .and_then(|record| crate::AgentSettings::from_json(&record.settings).ok())
            .unwrap_or_default()
            .effective_workspace_quota()
    }

    /// Makes every agent's workspace ready (mounting images again after a reboot), so
    /// the host's view of each workspace holds the agent's files from the start; a
    /// workspace that cannot be made ready is logged, and its agent's next sandbox
    /// start says why.
    pub fn prepare_workspaces(&self) {
        let Ok(agents) = self.store.list_agents() else {
            return;
        };
        for record in agents {
            let workspace = self.home.agent_workspace(record.name.as_str());
            let quota = self.workspace_quota(&record.name);
            match palisade_sandbox::volume::prepare(&workspace, quota) {
                Ok(prepared) => {
                    tracing::debug!(agent = %record.name, storage = %prepared.storage, "workspace ready")
                }
                Err(error) => {
                    tracing::warn!(agent = %record.name, %error, "workspace not ready")
                }
            }
        }
    }
}

impl RunnerLauncher for SandboxLauncher {
    fn launch(
        &self,
        agent: &AgentName,
        host_socket: &Path,
    ) -> Result<Box<dyn RunnerProcess>, HostError> {
        let vault_socket = self.vault_socket_dir.join(format!("{agent}.sock"));
        if !vault_socket.exists() {
            return Err(HostError::Runner(format!(
                "the vault has no socket for agent {agent} yet"
            )));
        }
        let mut limits = self.limits.clone();
        let quota = self.workspace_quota(agent);
        limits.workspace = Some(quota);
        let workspace = self.home.agent_workspace(agent.as_str());
        let claim = palisade_sandbox::volume::prepare(&workspace, quota)
            .map_err(|e| HostError::Runner(format!("cannot prepare the workspace: {e}")))?;
        let (mounts, refused) = crate::folders::mounts_for(&self.store, &self.home, agent)?;
        for reason in refused {
            tracing::warn!(agent = %agent, %reason, "folder not mounted");
        }
        let spec = SandboxSpec {
            agent: agent.to_string(),
            workspace,
            palisade_binary: self.palisade_binary.clone(),
            shim_subcommand: vec!["shim".into()],
            vault_socket,
            ca_bundle: self.ca_bundle.clone(),
            host_socket: Some(host_socket.to_path_buf()),
            mounts,
            limits,
            command: vec![
                palisade_sandbox::paths::PALISADE_BINARY.to_string(),
                "runner".to_string(),
            ],
            stdio: StdioMode::Piped,
        };
        let mut sandbox = self
            .runtime
            .start(&spec)
            .map_err(|e| HostError::Runner(format!("cannot start the sandbox: {e}")))?;
        let child = sandbox.child_mut();
        drop(child.stdin.take());
        // The runner's output is logged line by line (capped), never kept whole.
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(log_lines(agent.clone(), stdout, None));
        }
        let last_words = Arc::new(std::sync::Mutex::new(None::<String>));
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(log_lines(agent.clone(), stderr, Some(last_words.clone())));
        }
        let (kill_tx, kill_rx) = oneshot::channel::<()>();
        let (exited_tx, exited_rx) = watch::channel(false);
        let name = agent.clone();
        let why = last_words.clone();
        tokio::spawn(async move {
            tokio::select! {
                outcome = sandbox.wait() => match outcome {
                    Ok(outcome) if outcome.workspace_full.is_some() => {
                        let full = outcome.workspace_full.expect("checked");
                        let advice = match full {
                            palisade_sandbox::WorkspaceFull::Quota { .. } => format!(
                                "free space in it or raise the quota with `palisade agents edit {name} --workspace-quota SIZE`"
                            ),
                            palisade_sandbox::WorkspaceFull::Nesting => {
                                "remove the deeply nested folders from it".to_string()
                            }
                            palisade_sandbox::WorkspaceFull::Unreadable => format!(
                                "give its owner read access again (`chmod u+rx` on agents/{name}/workspace)"
                            ),
                            _ => "free space on that disk".to_string(),
                        };
                        let reason = format!("{full}; {advice}");
                        tracing::warn!(agent = %name, %reason, "runner stopped");
                        *lock(&why) = Some(reason);
                    }
                    Ok(outcome) => tracing::info!(agent = %name, code = outcome.code, "runner exited"),
                    Err(error) => tracing::warn!(agent = %name, %error, "lost the runner"),
                },
                // Dropping the wait future drops the sandbox, which kills it and cleans up.
                _ = kill_rx => tracing::info!(agent = %name, "runner stopped"),
            }
            // The workspace's image may be unmounted (to grow) once its sandbox is gone.
            drop(claim);
            let _ = exited_tx.send(true);
        });
        Ok(Box::new(SandboxRunner {
            kill: Some(kill_tx),
            exited: exited_rx,
            why: last_words,
        }))
    }
}

/// Bytes of a runner's output line logged; the rest of the line is skipped unread
/// into memory.
const MAX_LOGGED_LINE: usize = 2000;

/// Logs what a runner writes, line by line: each line cut at [`MAX_LOGGED_LINE`] bytes
/// (see [`read_line_capped`]), at most a burst of 200 lines then 20 a second (the count
/// of lines left out goes on the next one logged).
/// With `last`, the last non-empty line (its first 300 characters) is kept there,
/// unless a reason is there already.
async fn log_lines(
    agent: AgentName,
    stream: impl tokio::io::AsyncRead + Unpin,
    last: Option<Arc<std::sync::Mutex<Option<String>>>>,
) {
    let mut reader = tokio::io::BufReader::new(stream);
    let mut budget = palisade_policy::budget::Bucket::full(200.0);
    let mut line = Vec::with_capacity(256);
    while read_line_capped(&mut reader, &mut line, MAX_LOGGED_LINE).await {
        let text = String::from_utf8_lossy(&line);
        if let Some(last) = &last {
            if !text.trim().is_empty() {
                *lock(last) = Some(text.trim().chars().take(300).collect());
            }
        }
        if let Some(lines_left_out) = budget.take(200.0, 20.0) {
            tracing::info!(agent = %agent, lines_left_out, "runner: {text}");
        }
    }
}

/// Reads the next line of `reader` into `line` (cleared first, without its newline),
/// keeping at most `max` bytes of it: the rest of the line is read and dropped, so
/// output without newlines never grows memory. `false` at the end (a last line without
/// a newline is dropped with it).
async fn read_line_capped(
    reader: &mut (impl tokio::io::AsyncBufRead + Unpin),
    line: &mut Vec<u8>,
    max: usize,
) -> bool {
    line.clear();
    loop {
        let (used, ended) = match reader.fill_buf().await {
            Ok([]) | Err(_) => return false,
            Ok(buffer) => {
                let end = buffer.iter().position(|b| *b == b'\n');
                let text = &buffer[..end.unwrap_or(buffer.len())];
                let room = max.saturating_sub(line.len());
                line.extend_from_slice(&text[..text.len().min(room)]);
                (end.map_or(buffer.len(), |end| end + 1), end.is_some())
            }
        };
        reader.consume(used);
        if ended {
            return true;
        }
    }
}

struct SandboxRunner {
    kill: Option<oneshot::Sender<()>>,
    exited: watch::Receiver<bool>,
    /// Why it stopped (a full disk), else the last line it wrote to stderr.
    why: Arc<std::sync::Mutex<Option<String>>>,
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl RunnerProcess for SandboxRunner {
    fn why_exited(&self) -> Option<String> {
        lock(&self.why).clone()
    }

    fn exited(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = self.exited.wait_for(|done| *done).await;
        })
    }

    fn kill(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(kill) = self.kill.take() {
                let _ = kill.send(());
            }
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                self.exited.wait_for(|done| *done),
            )
            .await;
        })
    }
}

impl Drop for SandboxRunner {
    fn drop(&mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_runners_lines_are_cut_and_never_held_whole() {
        let mut output = "a".repeat(100_000).into_bytes();
        output.extend_from_slice(b"\nshort\nunfinished");
        let mut reader = tokio::io::BufReader::with_capacity(1024, output.as_slice());
        let mut line = Vec::new();
        assert!(read_line_capped(&mut reader, &mut line, 2000).await);
        assert_eq!(line, "a".repeat(2000).into_bytes());
        assert!(line.capacity() < 8192, "{}", line.capacity());
        assert!(read_line_capped(&mut reader, &mut line, 2000).await);
        assert_eq!(line, b"short");
        assert!(!read_line_capped(&mut reader, &mut line, 2000).await);
    }
}
