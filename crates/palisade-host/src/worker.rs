//! One agent's worker: its slots, their runners and the loop that claims messages
//! (the sockets are `runner_socket`, handing one message over is `delivery`, host
//! tools are `tools`).
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

use crate::delivery::{deliver, give_up, Outcome};
use crate::host::{HostInner, StreamEvent};
use crate::launcher::RunnerProcess;
use crate::protocol::{HostFrame, ProtocolError, RunnerFrame};
use crate::runner_socket::{accept_loop, bind_path, slot_socket_path, socket_path, Conn};
use crate::settings::AgentSettings;
use crate::HostError;
use palisade_policy::AgentName;
use palisade_store::InboundMessage;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};

/// The runner side as the worker holds it.
#[derive(Default)]
pub(crate) struct Runner {
    process: Option<Box<dyn RunnerProcess>>,
    pub(crate) conn: Option<Conn>,
    /// The mounts (see [`mounts_fingerprint`]) the process was started with.
    pub(crate) mounts: Option<String>,
}

impl Runner {
    async fn stop(&mut self, agent: &AgentName, polite: bool) {
        self.mounts = None;
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

/// What `agent`'s sandbox would mount if started now, as comparable text (an error
/// reading it compares unequal to any launch, so the runner is replaced).
pub(crate) async fn mounts_fingerprint(inner: &HostInner, agent: &AgentName) -> String {
    let store = inner.store.clone();
    let home = inner.config.home.clone();
    let agent = agent.clone();
    tokio::task::spawn_blocking(
        move || match crate::folders::mounts_for(&store, &home, &agent) {
            Ok((mounts, _)) => mounts
                .iter()
                .map(|m| {
                    format!(
                        "{}>{}:{}",
                        m.source.display(),
                        m.destination.display(),
                        if m.writable { "rw" } else { "ro" }
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"),
            Err(error) => format!("unreadable: {error}"),
        },
    )
    .await
    .unwrap_or_else(|e| format!("unreadable: {e}"))
}

/// Whether the running runner was started with other mounts than the store now gives.
pub(crate) async fn mounts_changed(
    inner: &HostInner,
    agent: &AgentName,
    launched: Option<String>,
) -> bool {
    match launched {
        Some(launched) => launched != mounts_fingerprint(inner, agent).await,
        None => false,
    }
}

/// Resolves when what sandboxes are given may have changed.
pub(crate) async fn sandbox_changed(changes: &mut watch::Receiver<u64>) {
    if changes.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Resolves when the process exits (never, if there is none).
async fn process_exited(process: &mut Option<Box<dyn RunnerProcess>>) {
    match process {
        Some(process) => process.exited().await,
        None => std::future::pending().await,
    }
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
    let connected = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let accept = tokio::spawn(accept_loop(
        listener,
        agent.clone(),
        conn_tx,
        Arc::clone(&connected),
        inner.shutdown.clone(),
    ));
    let mut shutdown = inner.shutdown.clone();
    let mut runner = Runner::default();
    let mut failures: u32 = 0;
    loop {
        connected.store(runner.conn.is_some(), Ordering::SeqCst);
        inner.set_warm(
            &agent,
            &slot.socket,
            runner.process.is_some() || runner.conn.is_some(),
        );
        inner.note_launched(&slot.socket, &agent, runner.mounts.as_deref());
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
                &inner,
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
            &connected,
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
    inner.note_launched(&slot.socket, &agent, None);
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
    connected: &std::sync::atomic::AtomicBool,
    failures: &mut u32,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    if (runner.conn.is_some() || runner.process.is_some())
        && mounts_changed(inner, agent, runner.mounts.clone()).await
    {
        tracing::info!(agent = %agent, "the agent's folders changed; starting a new sandbox");
        runner.stop(agent, false).await;
        inner.note_launched(socket, agent, None);
    }
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
    connected.store(runner.conn.is_some(), Ordering::SeqCst);
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
            inner.note_launched(socket, agent, None);
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
    inner: &HostInner,
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
    let mut changes = inner.sandbox_changes.subscribe();
    tokio::select! {
        _ = woken(wake) => {}
        _ = sandbox_changed(&mut changes), if warm => {
            if mounts_changed(inner, agent, runner.mounts.clone()).await {
                tracing::info!(agent = %agent, "the agent's folders changed; stopping its idle sandbox");
                runner.stop(agent, false).await;
            }
        }
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
    if runner.process.is_none() {
        // What waits is not this runner's: a new runner is about to start.
        while conn_rx.try_recv().is_ok() {}
    } else if let Ok(conn) = conn_rx.try_recv() {
        // The running runner's connection, made again.
        runner.conn = Some(conn);
        return Ok(());
    }
    if runner.process.is_none() {
        // Read before the launch, so a change made meanwhile shows as a difference.
        let mounts = mounts_fingerprint(inner, agent).await;
        let launcher = Arc::clone(&inner.launcher);
        runner.process = Some(launcher.launch(agent, socket)?);
        inner.note_launched(socket, agent, Some(&mounts));
        runner.mounts = Some(mounts);
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
        _ = process_exited(&mut runner.process) => Err(HostError::Runner(
            match runner.process.as_ref().and_then(|process| process.why_exited()) {
                Some(why) => format!("the runner exited before connecting: {why}"),
                None => "the runner exited before connecting".into(),
            },
        )),
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
