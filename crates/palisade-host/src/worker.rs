//! One agent's worker: its host socket, its runner and its delivery loop.
//!
//! An agent has one *slot* per message it may handle at once (its `concurrency`
//! setting, 1 by default); each slot has its own socket and runner. A slot's loop
//! claims the oldest unanswered message whose session no other slot is busy with (so a
//! session's messages go one at a time, in order), makes sure its runner is connected
//! (starting one in the sandbox if needed), hands the message over and relays the
//! runner's frames until the reply is stored. A runner that disconnects, crashes or
//! breaks the protocol is stopped and the message delivered again after an exponential
//! back-off; after `max_attempts` deliveries the host stores an error reply instead, so
//! one poisonous message cannot wedge the queue. A turn longer than the turn timeout
//! gets an error reply and its runner is stopped. With nothing to do a runner stays
//! warm for the idle timeout, then gets `shutdown`.
//!
//! The socket is the runner's identity: it can only ever speak for this agent, and
//! every message and session id it sends is checked against what was delivered.

use crate::host::{HostInner, StreamEvent};
use crate::launcher::RunnerProcess;
use crate::protocol::{
    AgentFrame, Delivery, HostCall, HostConnection, HostFrame, ProtocolError, RunnerFrame,
    PROTOCOL_VERSION,
};
use crate::settings::{self, AgentSettings};
use crate::HostError;
use palisade_policy::AgentName;
use palisade_store::{InboundMessage, ReplyOutcome};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch, Semaphore};

type Conn = HostConnection<UnixStream>;

/// Handshakes in progress at once on one agent's socket.
const MAX_HANDSHAKES: usize = 4;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds `socket_dir/NAME.sock`, mode 0600, replacing a stale socket.
pub(crate) fn bind_socket(socket_dir: &Path, agent: &AgentName) -> Result<UnixListener, HostError> {
    bind_path(&socket_path(socket_dir, agent))
}

fn bind_path(path: &Path) -> Result<UnixListener, HostError> {
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
fn slot_socket_path(socket_dir: &Path, agent: &AgentName, slot: usize) -> PathBuf {
    if slot == 0 {
        socket_path(socket_dir, agent)
    } else {
        socket_dir.join(format!("{agent}.{}.sock", slot + 1))
    }
}

/// Accepts connections, handshakes them, and passes good ones to the worker.
async fn accept_loop(
    listener: UnixListener,
    agent: AgentName,
    connections: mpsc::Sender<Conn>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(agent = %agent, %error, "host socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = crate::host::stopped(&mut shutdown) => return,
        };
        let Ok(permit) = Arc::clone(&handshakes).try_acquire_owned() else {
            tracing::warn!(agent = %agent, "too many connections handshaking; dropping one");
            continue;
        };
        let agent = agent.clone();
        let connections = connections.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut conn = Conn::new(stream);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut conn, &agent)).await {
                Ok(Ok(())) => {
                    if let Err(mpsc::error::TrySendError::Full(mut conn)) =
                        connections.try_send(conn)
                    {
                        let _ = conn
                            .send(&HostFrame::Error {
                                message: "a runner is already connected for this agent".into(),
                            })
                            .await;
                    }
                }
                Ok(Err(error)) => {
                    tracing::warn!(agent = %agent, %error, "refused a connection on the host socket");
                    let _ = conn
                        .send(&HostFrame::Error {
                            message: error.to_string(),
                        })
                        .await;
                }
                Err(_) => {
                    tracing::warn!(agent = %agent, "a connection on the host socket sent no hello in time")
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

/// The runner side as the worker holds it.
#[derive(Default)]
struct Runner {
    process: Option<Box<dyn RunnerProcess>>,
    conn: Option<Conn>,
}

impl Runner {
    async fn stop(&mut self, agent: &AgentName, polite: bool) {
        if let Some(mut conn) = self.conn.take() {
            if polite {
                let _ = conn.send(&HostFrame::Shutdown).await;
            }
        }
        if let Some(mut process) = self.process.take() {
            if polite {
                let waited = tokio::time::timeout(Duration::from_secs(5), process.exited()).await;
                if waited.is_ok() {
                    return;
                }
            }
            tracing::info!(agent = %agent, "stopping the runner");
            process.kill().await;
        }
    }
}

/// Resolves when the process exits (never, if there is none).
async fn process_exited(process: &mut Option<Box<dyn RunnerProcess>>) {
    match process {
        Some(process) => process.exited().await,
        None => std::future::pending().await,
    }
}

/// How handling one delivery ended.
enum Outcome {
    /// Reply stored (or the message was found answered).
    Answered,
    /// The runner failed; deliver again after a back-off.
    RunnerFailed(String),
    /// The turn took longer than the turn timeout: the message got an error reply and
    /// the runner must be stopped (it may still be busy with it).
    TimedOut,
    Shutdown,
}

/// Sessions a slot is handling right now, shared by an agent's slots.
type Busy = Arc<tokio::sync::Mutex<HashSet<i64>>>;

/// One slot: its socket, its runner and what it needs to claim work.
struct Slot {
    inner: Arc<HostInner>,
    agent: AgentName,
    index: usize,
    socket: PathBuf,
    busy: Busy,
    /// How many slots the agent should have now; a slot at or past it stops.
    wanted: Arc<AtomicUsize>,
    wake: watch::Receiver<u64>,
}

/// The agent's settings, if they can be read (a bad setting is reported on delivery).
async fn agent_settings(inner: &HostInner, agent: &AgentName) -> Option<AgentSettings> {
    let store = inner.store.clone();
    let name = agent.clone();
    let record = tokio::task::spawn_blocking(move || store.get_agent(&name))
        .await
        .ok()?
        .ok()?;
    AgentSettings::from_json(&record.settings).ok()
}

/// Runs an agent's slots until shutdown. `first` is the first slot's socket, bound by
/// the caller so a bind error reaches whoever woke the agent. On every wake the agent's
/// `concurrency` is read again: missing slots are opened at once; slots past it stop
/// when they next look for work.
pub(crate) async fn run(
    inner: Arc<HostInner>,
    agent: AgentName,
    mut wake: watch::Receiver<u64>,
    first: UnixListener,
) {
    let busy: Busy = Arc::default();
    let wanted = Arc::new(AtomicUsize::new(1));
    let slot_wake = wake.clone();
    let slot = |index: usize, socket: PathBuf| Slot {
        inner: Arc::clone(&inner),
        agent: agent.clone(),
        index,
        socket,
        busy: Arc::clone(&busy),
        wanted: Arc::clone(&wanted),
        wake: slot_wake.clone(),
    };
    // Each slot is its own task, so one slot's waits never hold up another's.
    let mut slots = tokio::task::JoinSet::new();
    // Slot index of each running slot task.
    let mut running: std::collections::HashMap<tokio::task::Id, usize> = Default::default();
    let task = slots.spawn(run_slot(
        slot(0, socket_path(&inner.config.socket_dir, &agent)),
        first,
    ));
    running.insert(task.id(), 0);
    let mut shutdown = inner.shutdown.clone();
    loop {
        wake.borrow_and_update();
        let concurrency = agent_settings(&inner, &agent)
            .await
            .map(|s| s.effective_concurrency())
            .unwrap_or(1);
        if concurrency != wanted.swap(concurrency, Ordering::SeqCst) {
            tracing::info!(agent = %agent, concurrency, "conversations handled at once");
        }
        for index in 0..concurrency {
            if running.values().any(|i| *i == index) || *shutdown.borrow() {
                continue;
            }
            let socket = slot_socket_path(&inner.config.socket_dir, &agent, index);
            match bind_path(&socket) {
                Ok(listener) => {
                    let task = slots.spawn(run_slot(slot(index, socket), listener));
                    running.insert(task.id(), index);
                }
                Err(error) => {
                    tracing::warn!(agent = %agent, %error, "cannot open another slot; handling fewer conversations at once");
                    break;
                }
            }
        }
        tokio::select! {
            ended = slots.join_next_with_id() => match ended {
                Some(Ok((task, _))) => {
                    running.remove(&task);
                }
                Some(Err(error)) => {
                    // A slot task failed (a bug): it is opened again, after a pause so a
                    // slot that fails at once cannot spin.
                    tracing::error!(agent = %agent, %error, "a slot of the agent failed");
                    running.remove(&error.id());
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                None => break,
            },
            _ = woken(&mut wake) => {}
            _ = crate::host::stopped(&mut shutdown) => {
                while slots.join_next().await.is_some() {}
                break;
            }
        }
    }
}

/// Claims the next message for a slot: the oldest first-unanswered message of a
/// session no other slot is busy with.
async fn claim(slot: &Slot) -> Result<Option<InboundMessage>, palisade_store::StoreError> {
    let mut busy = slot.busy.lock().await;
    let skip: Vec<i64> = busy.iter().copied().collect();
    let store = slot.inner.store.clone();
    let agent = slot.agent.clone();
    let next = tokio::task::spawn_blocking(move || store.next_unanswered_excluding(&agent, &skip))
        .await
        .map_err(|e| palisade_store::StoreError::Invalid(format!("queue task failed: {e}")))??;
    if let Some(message) = &next {
        busy.insert(message.session_id);
    }
    Ok(next)
}

/// The agent's idle timeout: its own setting, else the host's.
async fn idle_timeout(inner: &HostInner, agent: &AgentName) -> Duration {
    agent_settings(inner, agent)
        .await
        .and_then(|s| s.idle_timeout_secs)
        .map(Duration::from_secs)
        .unwrap_or(inner.config.idle_timeout)
}

/// One slot's loop; returns the slot's index when it ends.
async fn run_slot(mut slot: Slot, listener: UnixListener) -> usize {
    let inner = Arc::clone(&slot.inner);
    let agent = slot.agent.clone();
    let (conn_tx, mut conn_rx) = mpsc::channel::<Conn>(1);
    let accept = tokio::spawn(accept_loop(
        listener,
        agent.clone(),
        conn_tx,
        inner.shutdown.clone(),
    ));
    let mut shutdown = inner.shutdown.clone();
    let mut runner = Runner::default();
    let mut failures: u32 = 0;
    loop {
        inner.set_warm(
            &agent,
            &slot.socket,
            runner.process.is_some() || runner.conn.is_some(),
        );
        if *shutdown.borrow() || slot.index >= slot.wanted.load(Ordering::SeqCst) {
            break;
        }
        // Wakes from now on are noticed by `idle`, so none is lost while we look.
        slot.wake.borrow_and_update();
        let message = match claim(&slot).await {
            Ok(message) => message,
            Err(error) => {
                tracing::error!(agent = %agent, %error, "cannot read the queue; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let Some(message) = message else {
            let timeout = idle_timeout(&inner, &agent).await;
            idle(
                &agent,
                &mut slot.wake,
                timeout,
                &mut runner,
                &mut conn_rx,
                &mut shutdown,
            )
            .await;
            continue;
        };
        let go_on = handle(
            &inner,
            &agent,
            &slot.socket,
            &message,
            &mut runner,
            &mut conn_rx,
            &mut failures,
            &mut shutdown,
        )
        .await;
        slot.busy.lock().await.remove(&message.session_id);
        if !go_on {
            break;
        }
    }
    runner.stop(&agent, true).await;
    inner.set_warm(&agent, &slot.socket, false);
    accept.abort();
    let _ = std::fs::remove_file(&slot.socket);
    slot.index
}

/// Connects a runner if needed and delivers `message`, backing off after a failure.
/// False when the host is shutting down.
#[allow(clippy::too_many_arguments)]
async fn handle(
    inner: &Arc<HostInner>,
    agent: &AgentName,
    socket: &Path,
    message: &InboundMessage,
    runner: &mut Runner,
    conn_rx: &mut mpsc::Receiver<Conn>,
    failures: &mut u32,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    if runner.conn.is_none() {
        if let Err(error) = connect(inner, agent, socket, runner, conn_rx).await {
            *failures += 1;
            tracing::warn!(agent = %agent, %error, failures = *failures, "runner did not start");
            runner.stop(agent, false).await;
            if *failures >= inner.config.max_attempts as u32 + 2 {
                give_up(
                    inner,
                    message,
                    &format!("the agent's runner could not be started: {error}"),
                )
                .await;
                *failures = 0;
                return true;
            }
            return back_off(inner, *failures, shutdown).await;
        }
        inner.set_warm(agent, socket, true);
    }
    match deliver(inner, agent, message, runner).await {
        Outcome::Answered => {
            *failures = 0;
            true
        }
        Outcome::TimedOut => {
            *failures = 0;
            runner.stop(agent, false).await;
            true
        }
        Outcome::Shutdown => false,
        Outcome::RunnerFailed(reason) => {
            *failures += 1;
            tracing::warn!(agent = %agent, message_id = message.id, %reason, "runner failed; the message will be delivered again");
            inner.publish(
                message.id,
                StreamEvent::Status {
                    message: format!("the agent's runner failed ({reason}); retrying"),
                },
            );
            runner.stop(agent, false).await;
            back_off(inner, *failures, shutdown).await
        }
    }
}

/// Resolves when an agent's slots are woken (never, if the host dropped the sender).
async fn woken(wake: &mut watch::Receiver<u64>) {
    if wake.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Waits for work, keeping a connected runner warm until the idle timeout.
async fn idle(
    agent: &AgentName,
    wake: &mut watch::Receiver<u64>,
    idle_timeout: Duration,
    runner: &mut Runner,
    conn_rx: &mut mpsc::Receiver<Conn>,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) {
    let warm = runner.conn.is_some() || runner.process.is_some();
    let idle_deadline = tokio::time::sleep(idle_timeout);
    tokio::pin!(idle_deadline);
    tokio::select! {
        _ = woken(wake) => {}
        _ = crate::host::stopped(shutdown) => {}
        _ = &mut idle_deadline, if warm => {
            tracing::info!(agent = %agent, "runner idle; stopping it");
            runner.stop(agent, true).await;
        }
        _ = process_exited(&mut runner.process), if runner.process.is_some() => {
            runner.process = None;
            runner.conn = None;
        }
        frame = recv_if_connected(&mut runner.conn) => {
            // An idle runner has nothing to say; closing or talking out of turn ends it.
            match frame {
                Ok(None) | Err(_) => {
                    runner.stop(agent, false).await;
                }
                Ok(Some(frame)) => {
                    tracing::warn!(agent = %agent, kind = frame.kind(), "idle runner sent a frame out of turn; stopping it");
                    runner.stop(agent, false).await;
                }
            }
        }
        conn = conn_rx.recv() => {
            // A runner connected without being asked (e.g. it reconnected): keep it.
            if let Some(conn) = conn {
                if runner.conn.is_none() {
                    runner.conn = Some(conn);
                }
            }
        }
    }
}

async fn recv_if_connected(conn: &mut Option<Conn>) -> Result<Option<RunnerFrame>, ProtocolError> {
    match conn {
        Some(conn) => conn.recv().await,
        None => std::future::pending().await,
    }
}

/// Starts a runner if none is running and waits for its connection.
async fn connect(
    inner: &HostInner,
    agent: &AgentName,
    socket: &Path,
    runner: &mut Runner,
    conn_rx: &mut mpsc::Receiver<Conn>,
) -> Result<(), HostError> {
    // A connection may already be waiting (a runner that reconnected).
    if let Ok(conn) = conn_rx.try_recv() {
        runner.conn = Some(conn);
        return Ok(());
    }
    if runner.process.is_none() {
        let launcher = Arc::clone(&inner.launcher);
        runner.process = Some(launcher.launch(agent, socket)?);
        tracing::info!(agent = %agent, "runner started");
    }
    let deadline = tokio::time::sleep(inner.config.start_timeout);
    tokio::pin!(deadline);
    tokio::select! {
        conn = conn_rx.recv() => match conn {
            Some(conn) => {
                runner.conn = Some(conn);
                Ok(())
            }
            None => Err(HostError::ShuttingDown),
        },
        _ = process_exited(&mut runner.process) => Err(HostError::Runner("the runner exited before connecting".into())),
        _ = &mut deadline => Err(HostError::Runner(format!(
            "the runner did not connect within {} s",
            inner.config.start_timeout.as_secs()
        ))),
    }
}

/// Sleeps the back-off for `failures`; false if shutdown came first.
async fn back_off(
    inner: &HostInner,
    failures: u32,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    let delay = inner
        .config
        .initial_backoff
        .saturating_mul(factor)
        .min(inner.config.max_backoff);
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = crate::host::stopped(shutdown) => false,
    }
}

async fn give_up(inner: &HostInner, message: &InboundMessage, reason: &str) {
    let text = format!("palisade: this message was not answered: {reason}");
    store_reply(inner, message.id, &text, None, true).await;
}

async fn store_reply(
    inner: &HostInner,
    message_id: i64,
    text: &str,
    history: Option<serde_json::Value>,
    is_error: bool,
) -> bool {
    let store = inner.store.clone();
    let owned = text.to_string();
    let stored = tokio::task::spawn_blocking(move || {
        store.store_reply(message_id, &owned, history.as_ref(), is_error)
    })
    .await;
    match stored {
        Ok(Ok(outcome)) => {
            let reply = outcome.reply().clone();
            if matches!(outcome, ReplyOutcome::AlreadyAnswered(_)) {
                tracing::info!(
                    message_id,
                    "message was already answered; kept the first reply"
                );
            }
            inner.publish(
                message_id,
                StreamEvent::Reply {
                    text: reply.text,
                    is_error: reply.is_error,
                },
            );
            true
        }
        Ok(Err(error)) => {
            tracing::error!(message_id, %error, "cannot store the reply");
            false
        }
        Err(error) => {
            tracing::error!(message_id, %error, "reply task failed");
            false
        }
    }
}

/// What the runner is given for `message`, and how long it may take.
async fn prepare(
    inner: &HostInner,
    message: &InboundMessage,
) -> Result<(Delivery, Duration), HostError> {
    let store = inner.store.clone();
    let home = inner.config.home.clone();
    let default_turn_timeout = inner.config.turn_timeout;
    let message = message.clone();
    tokio::task::spawn_blocking(move || {
        let record = store.get_agent(&message.agent)?;
        let settings = AgentSettings::from_json(&record.settings)?;
        let session = store.get_session(message.session_id)?;
        let name = message.agent.as_str();
        let instructions = settings::read_agent_file(
            &settings::instructions_path(&home, name),
            settings::MAX_INSTRUCTIONS_BYTES,
        )?;
        let memory = settings::read_agent_file(
            &settings::memory_path(&home, name),
            settings::MAX_MEMORY_BYTES,
        )?;
        let turn_timeout = settings
            .turn_timeout_secs
            .map(Duration::from_secs)
            .unwrap_or(default_turn_timeout);
        let delivery = Delivery {
            message_id: message.id,
            session_id: message.session_id,
            text: message.text.clone(),
            history: session.history,
            agent: AgentFrame {
                name: name.to_string(),
                base_url: settings.effective_base_url(),
                provider: settings.provider,
                model: settings.model,
                instructions,
                memory,
                tools: settings.tools,
                max_tool_iterations: settings.max_tool_iterations,
                max_output_tokens: settings.max_output_tokens,
            },
        };
        Ok((delivery, turn_timeout))
    })
    .await
    .map_err(|e| HostError::Io(format!("prepare task failed: {e}")))?
}

async fn deliver(
    inner: &Arc<HostInner>,
    agent: &AgentName,
    message: &InboundMessage,
    runner: &mut Runner,
) -> Outcome {
    let marked = {
        let store = inner.store.clone();
        let id = message.id;
        tokio::task::spawn_blocking(move || store.mark_delivered(id)).await
    };
    let message = match marked {
        Ok(Ok(message)) => message,
        Ok(Err(error)) => return Outcome::RunnerFailed(format!("cannot mark delivery: {error}")),
        Err(error) => return Outcome::RunnerFailed(format!("delivery task failed: {error}")),
    };
    if message.status == palisade_store::MessageStatus::Answered {
        return Outcome::Answered;
    }
    if message.attempts > inner.config.max_attempts {
        give_up(
            inner,
            &message,
            &format!(
                "the agent's runner failed {} times while handling it",
                message.attempts - 1
            ),
        )
        .await;
        return Outcome::Answered;
    }
    let (delivery, turn_timeout) = match prepare(inner, &message).await {
        Ok(prepared) => prepared,
        Err(error) => {
            // Bad settings or files: the person must fix them; retrying will not help.
            give_up(inner, &message, &error.to_string()).await;
            return Outcome::Answered;
        }
    };
    let Some(conn) = runner.conn.as_mut() else {
        return Outcome::RunnerFailed("no runner connected".into());
    };
    match conn.send(&HostFrame::Deliver(Box::new(delivery))).await {
        Ok(()) => {}
        Err(ProtocolError::TooLarge(size)) => {
            give_up(
                inner,
                &message,
                &format!("the conversation is too large to hand to the agent ({size} bytes); reset the session with `palisade sessions reset`"),
            )
            .await;
            return Outcome::Answered;
        }
        Err(error) => return Outcome::RunnerFailed(error.to_string()),
    }
    tracing::info!(agent = %agent, message_id = message.id, attempt = message.attempts, "delivered");
    let mut shutdown = inner.shutdown.clone();
    let turn_deadline = tokio::time::sleep(turn_timeout);
    tokio::pin!(turn_deadline);
    loop {
        let Some(conn) = runner.conn.as_mut() else {
            return Outcome::RunnerFailed("no runner connected".into());
        };
        let frame = tokio::select! {
            frame = conn.recv() => frame,
            _ = &mut turn_deadline => {
                // A turn this slow would likely be as slow again: answer instead of retrying.
                let limit = humantime::format_duration(turn_timeout);
                tracing::warn!(agent = %agent, message_id = message.id, %limit, "turn timeout; stopping the runner");
                give_up(
                    inner,
                    &message,
                    &format!(
                        "the agent did not finish within the turn timeout ({limit}), so its runner was stopped; \
                         ask again, or raise the limit with `palisade agents edit {agent} --turn-timeout DURATION`"
                    ),
                )
                .await;
                return Outcome::TimedOut;
            }
            _ = crate::host::stopped(&mut shutdown) => return Outcome::Shutdown,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => return Outcome::RunnerFailed("the runner disconnected".into()),
            Err(error) => {
                let _ = conn
                    .send(&HostFrame::Error {
                        message: error.to_string(),
                    })
                    .await;
                return Outcome::RunnerFailed(error.to_string());
            }
        };
        match frame {
            RunnerFrame::Event { message_id, event } if message_id == message.id => {
                if let Some(event) = stream_event(&event) {
                    inner.publish(message.id, event);
                }
            }
            RunnerFrame::ToolCall {
                call_id,
                message_id,
                name,
                input,
            } if message_id == message.id => {
                let (ok, content) = match HostCall::parse(&name, &input) {
                    Ok(call) => host_tool(inner, &message, call).await,
                    Err(reason) => (false, reason),
                };
                let result = HostFrame::ToolResult {
                    call_id,
                    ok,
                    content,
                };
                if let Err(error) = conn.send(&result).await {
                    return Outcome::RunnerFailed(error.to_string());
                }
            }
            RunnerFrame::Reply {
                message_id,
                session_id,
                text,
                history,
            } if message_id == message.id && session_id == message.session_id => {
                if !history.is_array() {
                    return Outcome::RunnerFailed("the reply's history is not a JSON array".into());
                }
                if store_reply(inner, message.id, &text, Some(history), false).await {
                    return Outcome::Answered;
                }
                return Outcome::RunnerFailed("the reply could not be stored".into());
            }
            RunnerFrame::Error {
                message_id,
                message: reason,
            } if message_id == Some(message.id) => {
                // The runner could not handle this message (not a crash): answer with it.
                let reason: String = reason.chars().take(2000).collect();
                give_up(inner, &message, &reason).await;
                return Outcome::Answered;
            }
            other => {
                // Another message or session id, a second hello, or an unknown call:
                // the runner is confused or hostile. It gets nothing and is replaced.
                let _ = conn
                    .send(&HostFrame::Error {
                        message: format!(
                            "unexpected {} frame: only message {} of session {} is in flight",
                            other.kind(),
                            message.id,
                            message.session_id
                        ),
                    })
                    .await;
                return Outcome::RunnerFailed(format!(
                    "the runner sent an unexpected {} frame",
                    other.kind()
                ));
            }
        }
    }
}

/// Maps a runner's event to what channels see (unknown kinds are dropped).
fn stream_event(event: &serde_json::Value) -> Option<StreamEvent> {
    let text = |key: &str| {
        event
            .get(key)
            .and_then(|v| v.as_str())
            .map(|s| s.chars().take(64 * 1024).collect::<String>())
    };
    match event.get("kind").and_then(|k| k.as_str())? {
        "started" => Some(StreamEvent::Started),
        "text_delta" => Some(StreamEvent::TextDelta {
            text: text("text")?,
        }),
        "tool_call" => Some(StreamEvent::ToolCall {
            name: text("name")?,
        }),
        "tool_result" => Some(StreamEvent::ToolResult {
            name: text("name").unwrap_or_default(),
            is_error: event
                .get("is_error")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
        }),
        "status" => Some(StreamEvent::Status {
            message: text("message")?,
        }),
        _ => None,
    }
}

/// Runs a host tool for the agent of `message`; returns (ok, content).
async fn host_tool(
    inner: &Arc<HostInner>,
    message: &InboundMessage,
    call: HostCall,
) -> (bool, String) {
    let home = inner.config.home.clone();
    let agent = message.agent.clone();
    match call {
        HostCall::SendMessage { text } => {
            if text.trim().is_empty() || text.len() > crate::host::MAX_MESSAGE_BYTES {
                return (false, "the message is empty or too long".into());
            }
            // Stored before anyone is shown it, so a crash cannot lose or repeat it.
            let store = inner.store.clone();
            let (id, owned) = (message.id, text.clone());
            let stored =
                tokio::task::spawn_blocking(move || store.store_outbound_message(id, &owned)).await;
            match stored {
                Ok(Ok((_, true))) => {
                    inner.publish(message.id, StreamEvent::Message { text });
                    (true, "sent".into())
                }
                // A retried turn sending the same text again: it was shown already.
                Ok(Ok((_, false))) => (true, "sent (already sent earlier)".into()),
                Ok(Err(error)) => (false, error.to_string()),
                Err(error) => (false, error.to_string()),
            }
        }
        HostCall::MemoryRead {} => {
            let result = tokio::task::spawn_blocking(move || {
                settings::read_agent_file(
                    &settings::memory_path(&home, agent.as_str()),
                    settings::MAX_MEMORY_BYTES,
                )
            })
            .await;
            match result {
                Ok(Ok(text)) => (true, text),
                Ok(Err(error)) => (false, error.to_string()),
                Err(error) => (false, error.to_string()),
            }
        }
        HostCall::MemoryAppend { note } => {
            let result = tokio::task::spawn_blocking(move || {
                settings::append_memory(&home, agent.as_str(), &note)
            })
            .await;
            match result {
                Ok(Ok(())) => (true, "noted".into()),
                Ok(Err(error)) => (false, error.to_string()),
                Err(error) => (false, error.to_string()),
            }
        }
        HostCall::ListGrants {} => {
            let store = inner.store.clone();
            let result = tokio::task::spawn_blocking(move || store.list_secrets()).await;
            match result {
                Ok(Ok(secrets)) => {
                    let grants: Vec<_> = secrets
                        .into_iter()
                        .filter(|secret| secret.agents.contains(&message.agent))
                        .map(|secret| {
                            serde_json::json!({
                                "secret": secret.name,
                                "host_pattern": secret.host_pattern,
                                "path_pattern": secret.path_pattern,
                            })
                        })
                        .collect();
                    (true, serde_json::Value::Array(grants).to_string())
                }
                Ok(Err(error)) => (false, error.to_string()),
                Err(error) => (false, error.to_string()),
            }
        }
        HostCall::RequestApproval { action, details } => {
            crate::approvals::request(inner, message, &action, &details).await
        }
        HostCall::AskAgent { agent: to, text } => {
            crate::a2a::send(inner, message, &to, &text, crate::a2a::Wait::ForReply).await
        }
        HostCall::TellAgent { agent: to, text } => {
            crate::a2a::send(inner, message, &to, &text, crate::a2a::Wait::No).await
        }
    }
}
