//! What `palisade up` runs for chat channels.
//!
//! - Every configured channel runs in its own task. One that cannot connect (its
//!   `check` or its receive loop fails) is shown as failing and tried again after a
//!   back-off (1 s doubling to 1 min); it never takes the host down. The list of
//!   channels is read again every few seconds, so `channels add|remove` take effect
//!   without a restart.
//! - Messages: a message in a chat linked to an agent, from one of that agent's
//!   approvers or allowed senders on this channel, goes to the agent (conversation =
//!   channel + chat + thread); its reply (and what the agent sends with
//!   `send_message`) goes back to the same place, also after a restart. Anyone else's
//!   message is dropped and logged, or (per channel) turns into an access request to the
//!   agent's approvers. `/approve ID once|1h|always` and `/deny ID [comment]` decide
//!   approvals by text on every platform, from the channel's approvers (anyone
//!   else's is an ordinary message). A message holds a handler only until the host has
//!   accepted it; presses and comments have handlers of their own.
//! - Cards: every pending approval gets one card per approver of its agent, posted
//!   privately on the approver's channel (recorded with an opaque token before it is
//!   posted); once the approval is closed, by anyone, anywhere, every card is edited to
//!   say how. This is a reconciliation with the store, woken at once by the engine's
//!   events and otherwise every second, so it also catches decisions made by other
//!   processes and approvals left from before a restart.
//! - Clicks: the token names the card, the engine checks the clicker is a listed
//!   approver and that the approval is still pending; a refusal is answered privately
//!   and audited.
//! - Notices: a request blocked, refused or rate-limited at the vault is told to the
//!   agent's approvers, once per agent and rule every 10 minutes, at most five about
//!   one agent in that time.
//!
//! One concept per file: this one runs the channels; [`decisions`] takes presses,
//! comments and `/approve`/`/deny`; [`messages`] routes messages (and strangers'
//! access requests) to agents; [`replies`] delivers replies, also those owed from
//! before a restart; [`cards`] posts and edits cards; [`notices`] tells owners.

mod cards;
mod decisions;
mod messages;
mod notices;
mod replies;

pub use messages::AccessSetting;

use crate::channel::{Channel, Incoming};
use crate::lock;
use palisade_approvals::Engine;
use palisade_host::Host;
use palisade_store::Store;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Notify, Semaphore};

/// How often the card reconciliation runs without being woken.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(1);
/// How often the list of channels is read again.
const RELOAD_INTERVAL: Duration = Duration::from_secs(3);
/// How often the audit log is read for blocked and rate-limited requests.
const NOTICE_INTERVAL: Duration = Duration::from_secs(2);
/// One notice per agent and rule in this window.
const NOTICE_DEBOUNCE: Duration = Duration::from_secs(600);
/// Presses, comments (decisions) handled at once.
const MAX_HANDLERS: usize = 64;
/// Chat messages being routed and handed to the host at once. A message's permit ends
/// when the host has accepted it, so agents that are slow to answer (or held) never
/// keep decisions or other messages waiting.
const MAX_MESSAGE_HANDLERS: usize = 64;
/// Handed-over messages whose reply a live task waits for; beyond this the reply is
/// delivered by the recovery loop (a few seconds later) instead.
const MAX_WAITING_REPLIES: usize = 1024;
/// Pending approvals looked at per reconciliation.
const MAX_PENDING: usize = 500;
/// Notice keys remembered at most (older ones are dropped when their window ends).
const MAX_NOTICE_KEYS: usize = 10_000;
/// How long an access request from a stranger waits for a person.
const ACCESS_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// How often replies owed to chats are looked for.
const RECOVERY_INTERVAL: Duration = Duration::from_secs(2);
/// A card that could not be posted is tried again after this long.
const REPOST_AFTER: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelState {
    Connecting,
    Connected,
    Failing,
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct ChannelStatus {
    pub name: String,
    pub platform: String,
    pub state: ChannelState,
    pub detail: Option<String>,
    pub since_ms: i64,
}

struct Running {
    /// The store row it was opened from (id and creation time, since SQLite may give
    /// a new row the id of a deleted one): a channel removed and added again under the
    /// same name (the way to change its token or signing secret) is a new row, and the
    /// old one must stop, credentials and all.
    record: (i64, i64),
    channel: Arc<dyn Channel>,
    stop: watch::Sender<bool>,
}

struct HubInner {
    host: Host,
    store: Store,
    engine: Engine,
    channels: Mutex<HashMap<String, Running>>,
    status: Mutex<HashMap<String, ChannelStatus>>,
    wake: Notify,
    shutdown: watch::Receiver<bool>,
    handlers: Arc<Semaphore>,
    message_handlers: Arc<Semaphore>,
    waiting_replies: Arc<Semaphore>,
    /// Cards whose post failed, and when (so they are retried, but not in a loop).
    failed_posts: Mutex<HashMap<i64, Instant>>,
    notices: Mutex<HashMap<String, Instant>>,
    /// Messages whose reply a live handler is waiting for (the others' replies are
    /// delivered by the recovery loop, e.g. after a restart).
    watching: Mutex<HashSet<i64>>,
    /// Replies whose delivery failed, and when.
    failed_replies: Mutex<HashMap<i64, Instant>>,
}

/// The running channels of a host. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, palisade_store::StoreError> + Send + 'static,
) -> Result<T, palisade_store::StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(palisade_store::StoreError::Io(e.to_string())))
}
impl Hub {
    /// Starts every configured channel and the loops around them.
    pub fn start(host: Host, shutdown: watch::Receiver<bool>) -> Hub {
        let hub = Hub {
            inner: Arc::new(HubInner {
                store: host.store().with_actor("channels"),
                engine: host.engine().clone(),
                host,
                channels: Mutex::default(),
                status: Mutex::default(),
                wake: Notify::new(),
                shutdown,
                handlers: Arc::new(Semaphore::new(MAX_HANDLERS)),
                message_handlers: Arc::new(Semaphore::new(MAX_MESSAGE_HANDLERS)),
                waiting_replies: Arc::new(Semaphore::new(MAX_WAITING_REPLIES)),
                failed_posts: Mutex::default(),
                notices: Mutex::default(),
                watching: Mutex::default(),
                failed_replies: Mutex::default(),
            }),
        };
        tokio::spawn(hub.clone().supervise());
        tokio::spawn(hub.clone().reconcile_loop());
        tokio::spawn(hub.clone().notice_loop());
        tokio::spawn(hub.clone().recovery_loop());
        hub
    }

    /// Every channel with its state, by name.
    pub fn status(&self) -> Vec<ChannelStatus> {
        let mut all: Vec<ChannelStatus> = lock(&self.inner.status).values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// A running channel by name (for the HTTP endpoints of Slack and Discord).
    pub fn channel(&self, name: &str) -> Option<Arc<dyn Channel>> {
        lock(&self.inner.channels)
            .get(name)
            .map(|r| Arc::clone(&r.channel))
    }

    fn set_status(&self, name: &str, platform: &str, state: ChannelState, detail: Option<String>) {
        let mut status = lock(&self.inner.status);
        let changed = status
            .get(name)
            .is_none_or(|old| old.state != state || old.detail != detail);
        let since_ms = match status.get(name) {
            Some(old) if old.state == state => old.since_ms,
            _ => palisade_store::now_ms(),
        };
        status.insert(
            name.to_string(),
            ChannelStatus {
                name: name.to_string(),
                platform: platform.to_string(),
                state,
                detail,
                since_ms,
            },
        );
        if changed {
            let mut all: Vec<&ChannelStatus> = status.values().collect();
            all.sort_by(|a, b| a.name.cmp(&b.name));
            self.write_status_file(&all);
        }
    }

    /// `run/channels.json` (0600), so `palisade status` and `channels list` show it.
    fn write_status_file(&self, all: &[&ChannelStatus]) {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = self.inner.host.config().home.run_dir();
        let (path, temporary) = (dir.join("channels.json"), dir.join("channels.json.tmp"));
        let Ok(text) = serde_json::to_string_pretty(all) else {
            return;
        };
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .and_then(|mut file| file.write_all(text.as_bytes()))
            .and_then(|()| std::fs::rename(&temporary, &path));
        if let Err(error) = written {
            tracing::debug!(%error, "cannot write the channel status file");
        }
    }

    /// Starts channels that were added, stops those removed, until shutdown.
    async fn supervise(self) {
        let mut shutdown = self.inner.shutdown.clone();
        loop {
            self.reload().await;
            tokio::select! {
                _ = tokio::time::sleep(RELOAD_INTERVAL) => {}
                _ = crate::channel::stopped(&mut shutdown) => break,
            }
        }
        for (_, running) in lock(&self.inner.channels).drain() {
            let _ = running.stop.send(true);
        }
        let _ = std::fs::remove_file(
            self.inner
                .host
                .config()
                .home
                .run_dir()
                .join("channels.json"),
        );
    }

    async fn reload(&self) {
        let store = self.inner.store.clone();
        let Ok(records) = blocking(move || store.list_channels()).await else {
            return;
        };
        let wanted: HashMap<String, (i64, i64)> = records
            .iter()
            .map(|r| (r.name.clone(), (r.id, r.created_at_ms)))
            .collect();
        {
            let mut channels = lock(&self.inner.channels);
            let gone: Vec<String> = channels
                .iter()
                .filter(|(name, running)| wanted.get(*name) != Some(&running.record))
                .map(|(name, _)| name.clone())
                .collect();
            for name in gone {
                if let Some(running) = channels.remove(&name) {
                    let _ = running.stop.send(true);
                }
                lock(&self.inner.status).remove(&name);
                tracing::info!(channel = %name, "channel removed or replaced");
            }
        }
        for record in records {
            if lock(&self.inner.channels).contains_key(&record.name) {
                continue;
            }
            let store = self.inner.store.clone();
            let opened = {
                let record = record.clone();
                tokio::task::spawn_blocking(move || crate::config::open(&store, &record)).await
            };
            let channel = match opened {
                Ok(Ok(channel)) => channel,
                Ok(Err(error)) => {
                    self.set_status(
                        &record.name,
                        &record.platform,
                        ChannelState::Failing,
                        Some(error.to_string()),
                    );
                    continue;
                }
                Err(_) => continue,
            };
            let (stop, stopped) = watch::channel(false);
            lock(&self.inner.channels).insert(
                record.name.clone(),
                Running {
                    record: (record.id, record.created_at_ms),
                    channel: Arc::clone(&channel),
                    stop,
                },
            );
            self.set_status(
                &record.name,
                &record.platform,
                ChannelState::Connecting,
                None,
            );
            tokio::spawn(self.clone().run_channel(channel, stopped));
        }
    }

    /// One channel's life: check, receive until it fails, back off, again.
    async fn run_channel(self, channel: Arc<dyn Channel>, mut stop: watch::Receiver<bool>) {
        let name = channel.name().to_string();
        let platform = channel.platform().as_str();
        let mut failures: u32 = 0;
        let (inbox, mut incoming) = mpsc::channel::<Incoming>(256);
        // Everything received is handled in its own task, bounded.
        let dispatcher = {
            let hub = self.clone();
            let channel = Arc::clone(&channel);
            tokio::spawn(async move {
                while let Some(event) = incoming.recv().await {
                    let handlers = match &event {
                        Incoming::Message(_) => &hub.inner.message_handlers,
                        _ => &hub.inner.handlers,
                    };
                    let Ok(permit) = Arc::clone(handlers).acquire_owned().await else {
                        return;
                    };
                    let hub = hub.clone();
                    let channel = Arc::clone(&channel);
                    tokio::spawn(async move {
                        hub.handle(channel, event, permit).await;
                    });
                }
            })
        };
        loop {
            if *stop.borrow() || *self.inner.shutdown.borrow() {
                break;
            }
            let outcome = match channel.check().await {
                Ok(who) => {
                    failures = 0;
                    self.set_status(&name, platform, ChannelState::Connected, Some(who));
                    self.inner.wake.notify_one();
                    let mut shutdown = self.inner.shutdown.clone();
                    tokio::select! {
                        outcome = channel.run(inbox.clone(), stop.clone()) => outcome,
                        _ = crate::channel::stopped(&mut shutdown) => Ok(()),
                    }
                }
                Err(error) => Err(error),
            };
            match outcome {
                Ok(()) => break,
                Err(error) => {
                    failures += 1;
                    let delay = Duration::from_secs(1 << failures.min(6).saturating_sub(1))
                        .min(Duration::from_secs(60));
                    tracing::warn!(channel = %name, %error, retry_in = ?delay, "channel failing");
                    self.set_status(
                        &name,
                        platform,
                        ChannelState::Failing,
                        Some(error.to_string()),
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = crate::channel::stopped(&mut stop) => break,
                    }
                }
            }
        }
        drop(inbox);
        dispatcher.abort();
    }

    async fn handle(
        &self,
        channel: Arc<dyn Channel>,
        event: Incoming,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        match event {
            // The message's permit ends once the host has it (see `on_message`).
            Incoming::Message(message) => self.on_message(channel, message, permit).await,
            Incoming::Click {
                data,
                user,
                respond,
            } => {
                let answer = self.on_click(&channel, &data, &user).await;
                respond(answer).await;
                drop(permit);
            }
            Incoming::Comment {
                token,
                user,
                text,
                respond,
            } => {
                let answer = self.on_comment(&channel, &token, &user, &text).await;
                respond(answer).await;
                drop(permit);
            }
        }
    }
}
