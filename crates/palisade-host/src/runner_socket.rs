//! An agent's host sockets: where its runners connect (one per slot), the handshake,
//! and the rule that a socket speaks only for its agent. Runners reach them through
//! their sandbox's control channel; nothing mounts them into a sandbox.

use crate::protocol::{HostConnection, HostFrame, ProtocolError, RunnerFrame, PROTOCOL_VERSION};
use crate::HostError;
use palisade_policy::AgentName;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, Semaphore};

pub(crate) type Conn = HostConnection<UnixStream>;

/// Handshakes in progress at once on one agent's socket.
const MAX_HANDSHAKES: usize = 4;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds `socket_dir/NAME.sock`, mode 0600, replacing a stale socket.
pub(crate) fn bind_socket(socket_dir: &Path, agent: &AgentName) -> Result<UnixListener, HostError> {
    bind_path(&socket_path(socket_dir, agent))
}

pub(crate) fn bind_path(path: &Path) -> Result<UnixListener, HostError> {
    use std::os::unix::fs::PermissionsExt;
    let path = path.to_path_buf();
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(HostError::Io(format!(
                "cannot remove the stale socket {}: {error}",
                path.display()
            )))
        }
    }
    let listener = UnixListener::bind(&path)
        .map_err(|e| HostError::Io(format!("cannot listen on {}: {e}", path.display())))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| HostError::Io(format!("cannot restrict {}: {e}", path.display())))?;
    Ok(listener)
}

pub fn socket_path(socket_dir: &Path, agent: &AgentName) -> PathBuf {
    socket_dir.join(format!("{agent}.sock"))
}

/// The socket of an agent's slot: `NAME.sock` for the first, `NAME.2.sock` and so on
/// for the others (agent names have no dots, so these never name another agent).
pub(crate) fn slot_socket_path(socket_dir: &Path, agent: &AgentName, slot: usize) -> PathBuf {
    if slot == 0 {
        socket_path(socket_dir, agent)
    } else {
        socket_dir.join(format!("{agent}.{}.sock", slot + 1))
    }
}

/// Accepts connections, handshakes them, and passes good ones to the worker.
/// `connected`: whether the slot has a runner connected now; another connection is
/// then refused (a tool command in the sandbox may connect too, and must not wait in
/// line to become the next runner).
pub(crate) async fn accept_loop(
    listener: UnixListener,
    agent: AgentName,
    connections: mpsc::Sender<Conn>,
    connected: Arc<std::sync::atomic::AtomicBool>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    // What goes wrong on this socket is the sandbox's doing, as often as it likes: one
    // line a second at most, counting those left out (see `log_budget`).
    let log = Arc::new(palisade_policy::log_budget::LogBudget::new());
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    if let Some(similar_lines_suppressed) = log.take() {
                        tracing::warn!(agent = %agent, %error, similar_lines_suppressed, "host socket accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = crate::host::stopped(&mut shutdown) => return,
        };
        let Ok(permit) = Arc::clone(&handshakes).try_acquire_owned() else {
            if let Some(similar_lines_suppressed) = log.take() {
                tracing::warn!(agent = %agent, similar_lines_suppressed, "too many connections handshaking; dropping one");
            }
            continue;
        };
        let agent = agent.clone();
        let log = Arc::clone(&log);
        let connections = connections.clone();
        let connected = Arc::clone(&connected);
        tokio::spawn(async move {
            let _permit = permit;
            let mut conn = Conn::new(stream);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut conn, &agent)).await {
                Ok(Ok(())) => {
                    let refused = match connected.load(std::sync::atomic::Ordering::SeqCst) {
                        true => Some(conn),
                        false => match connections.try_send(conn) {
                            Err(mpsc::error::TrySendError::Full(conn)) => Some(conn),
                            _ => None,
                        },
                    };
                    if let Some(mut conn) = refused {
                        let _ = conn
                            .send(&HostFrame::Error {
                                message: "a runner is already connected for this agent".into(),
                            })
                            .await;
                    }
                }
                Ok(Err(error)) => {
                    if let Some(similar_lines_suppressed) = log.take() {
                        tracing::warn!(agent = %agent, %error, similar_lines_suppressed, "refused a connection on the host socket");
                    }
                    let _ = conn
                        .send(&HostFrame::Error {
                            message: error.to_string(),
                        })
                        .await;
                }
                Err(_) => {
                    if let Some(similar_lines_suppressed) = log.take() {
                        tracing::warn!(agent = %agent, similar_lines_suppressed, "a connection on the host socket sent no hello in time");
                    }
                }
            }
        });
    }
}

async fn handshake(conn: &mut Conn, agent: &AgentName) -> Result<(), ProtocolError> {
    match conn.expect().await? {
        RunnerFrame::Hello { version } if version == PROTOCOL_VERSION => {}
        RunnerFrame::Hello { version } => return Err(ProtocolError::Version(version)),
        other => {
            return Err(ProtocolError::Unexpected {
                expected: "hello",
                got: other.kind().into(),
            })
        }
    }
    conn.send(&HostFrame::Hello {
        version: PROTOCOL_VERSION,
        agent: agent.to_string(),
    })
    .await
}
