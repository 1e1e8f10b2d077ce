//! The router: accepts messages into the durable queue, wakes the agent's worker, and
//! fans what the runner reports out to whoever is waiting for the reply.
//!
//! Each agent gets one worker task (see [`crate::worker`]) the first time it has work;
//! the worker owns the agent's host sockets, runners and delivery loops (one per slot
//! of its concurrency). Waking is a `tokio::sync::watch` counter (every slot sees every
//! change, so a wake is never lost): nothing polls.

use crate::launcher::RunnerLauncher;
use crate::HostError;
use palisade_policy::AgentName;
use palisade_store::{Accepted, Home, Store, StoreError};
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio_util::task::TaskTracker;

/// Longest message text accepted from a channel. A delivery frame carries the text and
/// the session's history within 1 MiB, so the text gets a quarter of it.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// How the host behaves.
#[derive(Clone, Debug)]
pub struct HostConfig {
    pub home: Home,
    /// Directory of per-agent host sockets (default `home/run/hosts`).
    pub socket_dir: PathBuf,
    /// Directory of the vault's per-agent sockets (default `home/run/agents`), through
    /// which the host asks an agent's provider for its models.
    pub vault_socket_dir: PathBuf,
    /// A runner with nothing to do is stopped after this long.
    pub idle_timeout: Duration,
    /// How long a started runner has to connect and say hello.
    pub start_timeout: Duration,
    /// How long one message may take before the runner is considered stuck.
    pub turn_timeout: Duration,
    /// Deliveries of one message before the host gives up with an error reply.
    pub max_attempts: i64,
    /// First back-off after a runner crash; doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Where approvals are announced in this process (shared with the in-process vault
    /// and the chat channels by `palisade up`).
    pub approval_events: palisade_approvals::Events,
}

impl HostConfig {
    pub fn new(home: Home) -> Self {
        let socket_dir = home.run_dir().join("hosts");
        let vault_socket_dir = home.agent_socket_dir();
        HostConfig {
            home,
            socket_dir,
            vault_socket_dir,
            idle_timeout: Duration::from_secs(600),
            start_timeout: Duration::from_secs(30),
            turn_timeout: Duration::from_secs(30 * 60),
            max_attempts: 3,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            approval_events: palisade_approvals::Events::new(),
        }
    }
}

/// What a waiting channel sees about one message, in order. Ends with `Reply`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    Accepted {
        message_id: i64,
        session_id: i64,
    },
    /// The runner has the message and is working on it.
    Started,
    TextDelta {
        text: String,
    },
    ToolCall {
        name: String,
    },
    ToolResult {
        name: String,
        is_error: bool,
    },
    Status {
        message: String,
    },
    /// The agent sent a message to the conversation before its final answer.
    Message {
        text: String,
    },
    Reply {
        text: String,
        is_error: bool,
    },
}

pub(crate) struct AgentHandle {
    /// Bumped to wake the agent's slots; a watch keeps every change, so no wake is lost.
    pub(crate) wake: watch::Sender<u64>,
}

pub(crate) struct HostInner {
    pub(crate) store: Store,
    pub(crate) engine: palisade_approvals::Engine,
    /// The agents' `request_approval` calls waiting for a decision.
    pub(crate) holds: Arc<palisade_approvals::Holds>,
    pub(crate) config: HostConfig,
    pub(crate) launcher: Arc<dyn RunnerLauncher>,
    agents: Mutex<HashMap<AgentName, AgentHandle>>,
    /// Slots (by socket) whose runner is started or connected: the web UI's "warm".
    warm: Mutex<std::collections::BTreeSet<(AgentName, PathBuf)>>,
    streams: Mutex<HashMap<i64, broadcast::Sender<StreamEvent>>>,
    pub(crate) shutdown: watch::Receiver<bool>,
    shutdown_tx: watch::Sender<bool>,
    pub(crate) tasks: TaskTracker,
    /// Bumped when what a sandbox is given may have changed (folders): every slot
    /// compares its runner's mounts with the store's and restarts one that differs.
    pub(crate) sandbox_changes: watch::Sender<u64>,
    /// Started runners by slot socket: the agent and the mounts it was launched with.
    launched: Mutex<HashMap<PathBuf, (AgentName, String)>>,
    /// Each agent's budget for audit rows of its refused messages to other agents.
    pub(crate) message_refusals: palisade_policy::budget::AgentBuckets,
    /// Which agents wait for which others' answers (`ask_agent`), to refuse a ring.
    pub(crate) waits: crate::a2a::Waits,
}

/// The running host. Cheap to clone.
#[derive(Clone)]
pub struct Host {
    inner: Arc<HostInner>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Host {
    /// Starts the host and wakes every agent with unanswered messages (redelivery
    /// after a crash or restart). Must be called inside a tokio runtime.
    pub async fn start(
        store: Store,
        config: HostConfig,
        launcher: Arc<dyn RunnerLauncher>,
    ) -> Result<Host, HostError> {
        crate::settings::create_private_dir(&config.socket_dir)?;
        let (shutdown_tx, shutdown) = watch::channel(false);
        let host = Host {
            inner: Arc::new(HostInner {
                engine: palisade_approvals::Engine::new(
                    store.clone(),
                    config.approval_events.clone(),
                ),
                holds: crate::approvals::holds(),
                store,
                config,
                launcher,
                agents: Mutex::new(HashMap::new()),
                message_refusals: crate::a2a::refusal_budget(),
                waits: Default::default(),
                warm: Mutex::new(Default::default()),
                streams: Mutex::new(HashMap::new()),
                sandbox_changes: watch::channel(0).0,
                launched: Mutex::new(HashMap::new()),
                shutdown,
                shutdown_tx,
                tasks: TaskTracker::new(),
            }),
        };
        host.inner
            .tasks
            .spawn(crate::approvals::follow(Arc::clone(&host.inner)));
        let store = host.inner.store.clone();
        let waiting = tokio::task::spawn_blocking(move || store.agents_with_unanswered())
            .await
            .map_err(|e| HostError::Io(format!("startup task failed: {e}")))??;
        for agent in waiting {
            tracing::info!(agent = %agent, "redelivering unanswered messages");
            host.wake(&agent)?;
        }
        Ok(host)
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The vault socket that is `agent`'s identity.
    pub fn vault_socket(&self, agent: &AgentName) -> PathBuf {
        self.inner
            .config
            .vault_socket_dir
            .join(format!("{agent}.sock"))
    }

    pub fn config(&self) -> &HostConfig {
        &self.inner.config
    }

    /// The approval engine every surface of this host decides through.
    pub fn engine(&self) -> &palisade_approvals::Engine {
        &self.inner.engine
    }

    /// Accepts a message (stored before this returns) and wakes the agent. The
    /// receiver sees what happens to it, ending with [`StreamEvent::Reply`]; a caller
    /// that goes away loses nothing (the reply is stored).
    pub async fn submit(
        &self,
        agent: &AgentName,
        conversation: &str,
        channel: &str,
        text: &str,
    ) -> Result<(Accepted, broadcast::Receiver<StreamEvent>), HostError> {
        if text.trim().is_empty() {
            return Err(HostError::EmptyMessage);
        }
        if text.len() > MAX_MESSAGE_BYTES {
            return Err(HostError::TooLarge {
                size: text.len(),
                limit: MAX_MESSAGE_BYTES,
            });
        }
        let store = self.inner.store.clone();
        let (name, conversation, channel, text) = (
            agent.clone(),
            conversation.to_string(),
            channel.to_string(),
            text.to_string(),
        );
        let accepted = tokio::task::spawn_blocking(move || {
            store.accept_message(&name, &conversation, &channel, &text)
        })
        .await
        .map_err(|e| HostError::Io(format!("accept task failed: {e}")))?
        .map_err(|error| match error {
            StoreError::NotFound { what: "agent", .. } => HostError::UnknownAgent(agent.clone()),
            other => HostError::Store(other),
        })?;
        let receiver = self.subscribe(accepted.message_id);
        self.wake(agent)?;
        Ok((accepted, receiver))
    }

    /// Follows a message's events from now on (callers check the stored reply too).
    pub fn subscribe(&self, message_id: i64) -> broadcast::Receiver<StreamEvent> {
        self.inner.subscribe(message_id)
    }

    /// Says that what sandboxes are given (folders) may have changed: a runner whose
    /// mounts differ from the store's is stopped now, even mid-turn (its message is
    /// delivered again to a fresh sandbox), so a folder taken away is gone when the
    /// command that took it returns.
    ///
    /// Returns once no runner's mounts differ from the store's, or after `SETTLE` with
    /// the agents still waiting to be stopped (each is checked again before its next
    /// message in any case).
    pub async fn sandboxes_changed(&self) -> Vec<AgentName> {
        const SETTLE: Duration = Duration::from_secs(8);
        self.inner
            .sandbox_changes
            .send_modify(|n| *n = n.wrapping_add(1));
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            let launched: Vec<(AgentName, String)> =
                lock(&self.inner.launched).values().cloned().collect();
            let mut stale = Vec::new();
            for (agent, mounts) in launched {
                if crate::worker::mounts_fingerprint(&self.inner, &agent).await != mounts {
                    stale.push(agent);
                }
            }
            if stale.is_empty() || tokio::time::Instant::now() >= deadline {
                return stale;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wakes `agent`'s worker, starting it if needed.
    pub fn wake(&self, agent: &AgentName) -> Result<(), HostError> {
        self.inner.wake(agent)
    }

    /// Stops every worker: runners get `shutdown`, then are killed; sockets removed.
    /// Messages in flight stay unanswered and are delivered again on the next start.
    pub async fn shutdown(&self) {
        let _ = self.inner.shutdown_tx.send(true);
        self.inner.tasks.close();
        if tokio::time::timeout(Duration::from_secs(20), self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some agent workers did not stop within 20 s");
        }
    }

    /// Names of agents whose worker has started.
    pub fn active_agents(&self) -> Vec<AgentName> {
        let mut names: Vec<_> = lock(&self.inner.agents).keys().cloned().collect();
        names.sort();
        names
    }

    /// Names of agents with at least one runner running now (warm), sorted.
    pub fn warm_agents(&self) -> Vec<AgentName> {
        let mut names: Vec<AgentName> = lock(&self.inner.warm)
            .iter()
            .map(|(agent, _)| agent.clone())
            .collect();
        names.dedup();
        names
    }
}

impl HostInner {
    /// Wakes `agent`'s worker, starting it if needed.
    /// Records the mounts the runner of `socket` was started with (`None`: none runs).
    pub(crate) fn note_launched(
        &self,
        socket: &std::path::Path,
        agent: &AgentName,
        mounts: Option<&str>,
    ) {
        let mut launched = lock(&self.launched);
        match mounts {
            Some(mounts) => {
                launched.insert(socket.to_path_buf(), (agent.clone(), mounts.to_string()));
            }
            None => {
                launched.remove(socket);
            }
        }
    }

    pub(crate) fn wake(self: &Arc<Self>, agent: &AgentName) -> Result<(), HostError> {
        if *self.shutdown.borrow() {
            return Err(HostError::ShuttingDown);
        }
        let mut agents = lock(&self.agents);
        if let Some(handle) = agents.get(agent) {
            handle.wake.send_modify(|n| *n = n.wrapping_add(1));
            return Ok(());
        }
        // New slots look at the queue first, so the wake needs no initial bump.
        let (wake_tx, wake) = watch::channel(0u64);
        let listener = crate::runner_socket::bind_socket(&self.config.socket_dir, agent)?;
        agents.insert(agent.clone(), AgentHandle { wake: wake_tx });
        let inner = Arc::clone(self);
        let name = agent.clone();
        self.tasks
            .spawn(crate::worker::run(inner, name, wake, listener));
        Ok(())
    }

    /// Follows a message's events from now on (callers check the stored reply too).
    pub(crate) fn subscribe(&self, message_id: i64) -> broadcast::Receiver<StreamEvent> {
        let mut streams = lock(&self.streams);
        streams
            .entry(message_id)
            .or_insert_with(|| broadcast::channel(256).0)
            .subscribe()
    }

    pub(crate) fn set_warm(&self, agent: &AgentName, slot: &std::path::Path, warm: bool) {
        let mut set = lock(&self.warm);
        let key = (agent.clone(), slot.to_path_buf());
        if warm {
            set.insert(key);
        } else {
            set.remove(&key);
        }
    }

    pub(crate) fn publish(&self, message_id: i64, event: StreamEvent) {
        let finished = matches!(event, StreamEvent::Reply { .. });
        let mut streams = lock(&self.streams);
        if let Some(sender) = streams.get(&message_id) {
            let _ = sender.send(event);
        }
        if finished {
            streams.remove(&message_id);
        }
    }
}

/// Resolves once shutdown is signalled (or its sender is gone). A helper so no
/// `watch::Ref` (not `Send`) lives across an await in a spawned task.
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
