//! What `palisade up` runs for chat channels.
//!
//! - Every configured channel runs in its own task. One that cannot connect (its
//!   `check` or its receive loop fails, panics, or ends unasked) is shown as failing
//!   and tried again after a back-off (1 s doubling to 1 min, or what a rate limit
//!   asks); it never takes the host down. The list of
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

use crate::channel::{Channel, ChannelError, Incoming};
use crate::lock;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
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
/// Chat messages of one channel being routed and handed to the host at once. A
/// message's permit ends when the host has accepted it, so agents that are slow to
/// answer (or held) never keep decisions or other messages waiting.
const MAX_MESSAGE_HANDLERS: usize = 64;
/// Chat messages of one channel waiting for a message handler; beyond this, a message
/// is dropped (logged), so the presses received after it are never kept waiting.
const MAX_QUEUED_MESSAGES: usize = 1024;
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
/// A card that could not be posted is tried again after this long (or after the
/// platform's `Retry-After`, when longer).
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
    waiting_replies: Arc<Semaphore>,
    /// Cards whose post or final edit failed, and when they may be tried again (so
    /// they are retried, but not in a loop, nor before a rate limit ends).
    failed_posts: Mutex<HashMap<i64, Instant>>,
    notices: Mutex<HashMap<String, Instant>>,
    /// Messages whose reply a live handler is waiting for (the others' replies are
    /// delivered by the recovery loop, e.g. after a restart).
    watching: Mutex<HashSet<i64>>,
    /// Replies whose delivery failed, and when.
    failed_replies: Mutex<HashMap<i64, Instant>>,
    /// Taken while a stranger's access request is counted and made.
    access_asks: tokio::sync::Mutex<()>,
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
                waiting_replies: Arc::new(Semaphore::new(MAX_WAITING_REPLIES)),
                failed_posts: Mutex::default(),
                notices: Mutex::default(),
                watching: Mutex::default(),
                failed_replies: Mutex::default(),
                access_asks: tokio::sync::Mutex::new(()),
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

    /// One channel's life: its events dispatched to handlers while [`keep_running`]
    /// checks it, receives until it fails, backs off and starts it again.
    async fn run_channel(self, channel: Arc<dyn Channel>, stop: watch::Receiver<bool>) {
        let name = channel.name().to_string();
        let platform = channel.platform().as_str();
        let (inbox, mut incoming) = mpsc::channel::<Incoming>(256);
        let (message_queue, mut messages) = mpsc::channel::<Incoming>(MAX_QUEUED_MESSAGES);
        // Everything received is handled in its own task, bounded. Messages wait for one
        // of this channel's handlers in a queue of their own, so presses and comments
        // never wait behind them (messages whose answers a slow platform holds up, a
        // flood of strangers), nor do another channel's messages.
        let message_dispatcher = {
            let hub = self.clone();
            let channel = Arc::clone(&channel);
            let handlers = Arc::new(Semaphore::new(MAX_MESSAGE_HANDLERS));
            tokio::spawn(async move {
                while let Some(event) = messages.recv().await {
                    let Ok(permit) = Arc::clone(&handlers).acquire_owned().await else {
                        return;
                    };
                    hub.spawn_handler(&channel, event, permit);
                }
            })
        };
        let dispatcher = {
            let hub = self.clone();
            let channel = Arc::clone(&channel);
            tokio::spawn(async move {
                while let Some(event) = incoming.recv().await {
                    if matches!(event, Incoming::Message(_)) {
                        // Full: MAX_QUEUED_MESSAGES wait already, behind every handler
                        // busy. Waiting for room would keep the presses behind this
                        // message waiting too, so it is dropped (and said in the log).
                        match message_queue.try_send(event) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                palisade_policy::budgeted!(warn, channel = channel.name(), "{MAX_QUEUED_MESSAGES} chat messages already wait for a handler; one more was dropped");
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => return,
                        }
                        continue;
                    }
                    let Ok(permit) = Arc::clone(&hub.inner.handlers).acquire_owned().await else {
                        return;
                    };
                    hub.spawn_handler(&channel, event, permit);
                }
            })
        };
        let report = |state: ChannelState, detail: Option<String>| {
            self.set_status(&name, platform, state, detail);
            if state == ChannelState::Connected {
                self.inner.wake.notify_one();
            }
        };
        keep_running(channel, inbox, stop, self.inner.shutdown.clone(), report).await;
        dispatcher.abort();
        message_dispatcher.abort();
    }

    /// Handles `event` in a task of its own, which holds `permit` (see [`Hub::handle`]).
    fn spawn_handler(
        &self,
        channel: &Arc<dyn Channel>,
        event: Incoming,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        let hub = self.clone();
        let channel = Arc::clone(channel);
        tokio::spawn(async move {
            hub.handle(channel, event, permit).await;
        });
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

/// Back-off after the first failure in a row; it doubles up to [`MAX_BACK_OFF`].
const FIRST_BACK_OFF: Duration = Duration::from_secs(1);
const MAX_BACK_OFF: Duration = Duration::from_secs(60);
/// A run that lasted this long counts as the channel working: the failures before it
/// are forgotten, and the next one waits [`FIRST_BACK_OFF`] again. A token check that
/// passes does not count (review: a Discord gateway that ended every session at once
/// behind a working REST API was identified to every second, and Discord allows 1,000
/// identifications a day per bot).
const STEADY: Duration = Duration::from_secs(60);

/// Runs `channel` until `stop` or `shutdown`: checks it, receives until it fails,
/// backs off (1 s doubling to 1 min, or longer when the platform asked for it with a
/// rate limit's `Retry-After`) and starts it again. A channel whose code panics, or
/// whose receive loop ends without being asked to, counts as failing like one that
/// lost its connection: it is reported and started again, and never takes the host
/// (or this loop) down. `report` is told every change of state.
async fn keep_running(
    channel: Arc<dyn Channel>,
    inbox: mpsc::Sender<Incoming>,
    mut stop: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
    report: impl Fn(ChannelState, Option<String>),
) {
    let name = channel.name().to_string();
    let mut failures: u32 = 0;
    let asked_to_stop = |stop: &watch::Receiver<bool>| *stop.borrow() || *shutdown.borrow();
    loop {
        if asked_to_stop(&stop) {
            break;
        }
        let outcome = match unwinding(channel.check()).await {
            Ok(who) => {
                report(ChannelState::Connected, Some(who));
                let mut shutdown = shutdown.clone();
                let started = tokio::time::Instant::now();
                let outcome = tokio::select! {
                    outcome = unwinding(channel.run(inbox.clone(), stop.clone())) => outcome,
                    _ = crate::channel::stopped(&mut shutdown) => Ok(()),
                };
                if started.elapsed() >= STEADY {
                    failures = 0;
                }
                outcome
            }
            Err(error) => Err(error),
        };
        let error = match outcome {
            Ok(()) if asked_to_stop(&stop) => break,
            Ok(()) => ChannelError::Crashed("it stopped receiving without being asked to".into()),
            Err(error) => error,
        };
        failures = failures.saturating_add(1);
        let back_off = FIRST_BACK_OFF
            .saturating_mul(1 << failures.min(7).saturating_sub(1))
            .min(MAX_BACK_OFF);
        let delay = error
            .retry_after()
            .map_or(back_off, |asked| asked.max(back_off));
        tracing::warn!(channel = %name, %error, retry_in = ?delay, "channel failing");
        report(ChannelState::Failing, Some(error.to_string()));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = crate::channel::stopped(&mut stop) => break,
        }
    }
}

/// `future`'s outcome, with a panic in it as a [`ChannelError::Crashed`] (the panic
/// itself is printed by the panic hook where it happened).
async fn unwinding<T>(future: BoxFuture<'_, Result<T, ChannelError>>) -> Result<T, ChannelError> {
    match std::panic::AssertUnwindSafe(future).catch_unwind().await {
        Ok(outcome) => outcome,
        Err(panic) => {
            let said = panic
                .downcast_ref::<&str>()
                .map(|text| text.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            Err(ChannelError::Crashed(format!(
                "a panic: {}",
                crate::platform_text::Scrubber::default().clean(&said)
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::Card;
    use crate::channel::CardRef;
    use palisade_approvals::Platform;

    /// What a test channel's receive loop does on its run number `run` (from 1).
    enum RunEnd {
        Panic,
        EndUnasked,
        UntilStopped,
        FailAfter(Duration),
    }

    /// A channel whose token check always passes and whose receive loop does what
    /// `script` says for each run; the start of each run is kept.
    struct Scripted {
        script: fn(usize) -> RunEnd,
        starts: Mutex<Vec<tokio::time::Instant>>,
    }

    impl Scripted {
        fn new(script: fn(usize) -> RunEnd) -> Arc<Scripted> {
            Arc::new(Scripted {
                script,
                starts: Mutex::default(),
            })
        }

        fn runs(&self) -> usize {
            lock(&self.starts).len()
        }
    }

    impl Channel for Scripted {
        fn name(&self) -> &str {
            "scripted"
        }
        fn platform(&self) -> Platform {
            Platform::Telegram
        }
        fn run(
            &self,
            _inbox: mpsc::Sender<Incoming>,
            mut shutdown: watch::Receiver<bool>,
        ) -> BoxFuture<'_, Result<(), ChannelError>> {
            Box::pin(async move {
                let run = {
                    let mut starts = lock(&self.starts);
                    starts.push(tokio::time::Instant::now());
                    starts.len()
                };
                match (self.script)(run) {
                    RunEnd::Panic => {
                        let id = i64::MAX;
                        let next = id.checked_add(1);
                        panic!("attempt to add with overflow ({next:?})")
                    }
                    RunEnd::EndUnasked => Ok(()),
                    RunEnd::UntilStopped => {
                        crate::channel::stopped(&mut shutdown).await;
                        Ok(())
                    }
                    RunEnd::FailAfter(after) => {
                        tokio::time::sleep(after).await;
                        Err(ChannelError::Platform("the session ended at once".into()))
                    }
                }
            })
        }
        fn send_message<'a>(
            &'a self,
            _: &'a str,
            _: Option<&'a str>,
            _: &'a str,
        ) -> BoxFuture<'a, Result<(), ChannelError>> {
            Box::pin(async { Ok(()) })
        }
        fn post_card<'a>(
            &'a self,
            _: &'a str,
            _: &'a Card,
        ) -> BoxFuture<'a, Result<CardRef, ChannelError>> {
            Box::pin(async { Err(ChannelError::Stopped) })
        }
        fn update_card<'a>(
            &'a self,
            _: &'a CardRef,
            _: &'a Card,
        ) -> BoxFuture<'a, Result<(), ChannelError>> {
            Box::pin(async { Ok(()) })
        }
        fn check(&self) -> BoxFuture<'_, Result<String, ChannelError>> {
            Box::pin(async { Ok("the fake bot".into()) })
        }
    }

    /// The back-off grows while runs keep failing at once, though the token check
    /// before each passes, and starts again from a second after a run that lasted.
    #[tokio::test(start_paused = true)]
    async fn the_back_off_grows_until_a_run_lasts() {
        // Every run fails at once but the sixth, which lasts 61 s (paused time).
        let channel = Scripted::new(|run| match run {
            6 => RunEnd::FailAfter(Duration::from_secs(61)),
            _ => RunEnd::FailAfter(Duration::ZERO),
        });
        let (inbox, _incoming) = mpsc::channel(8);
        let (stop, stopped) = watch::channel(false);
        let (_shutdown, shutdown) = watch::channel(false);
        let running = {
            let channel: Arc<dyn Channel> = channel.clone();
            tokio::spawn(keep_running(channel, inbox, stopped, shutdown, |_, _| {}))
        };
        while channel.runs() < 8 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.send(true).unwrap();
        running.await.unwrap();
        let starts = lock(&channel.starts).clone();
        let gaps: Vec<u64> = starts
            .windows(2)
            .map(|pair| (pair[1] - pair[0]).as_secs())
            .collect();
        // 1, 2, 4, 8, 16 s; the sixth run lasts 61 s and ends with a failure after
        // which the wait is 1 s again.
        assert_eq!(gaps, [1, 2, 4, 8, 16, 62, 2], "{gaps:?}");
    }

    #[tokio::test]
    async fn a_channel_that_panics_or_ends_is_reported_failing_and_started_again() {
        // A panic, then an end nobody asked for, then a run that lasts.
        let channel = Scripted::new(|run| match run {
            1 => RunEnd::Panic,
            2 => RunEnd::EndUnasked,
            _ => RunEnd::UntilStopped,
        });
        type Reports = Vec<(ChannelState, Option<String>)>;
        let reports: Arc<Mutex<Reports>> = Arc::default();
        let (inbox, _incoming) = mpsc::channel(8);
        let (stop, stopped) = watch::channel(false);
        let (_shutdown, shutdown) = watch::channel(false);
        let running = {
            let reports = Arc::clone(&reports);
            let channel: Arc<dyn Channel> = channel.clone();
            tokio::spawn(keep_running(
                channel,
                inbox,
                stopped,
                shutdown,
                move |s, d| lock(&reports).push((s, d)),
            ))
        };
        // Back-offs of 1 s and 2 s, then the third run lasts.
        let deadline = Instant::now() + Duration::from_secs(10);
        while channel.runs() < 3 {
            assert!(
                Instant::now() < deadline,
                "not started again: {:?}",
                lock(&reports)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let seen = lock(&reports).clone();
        let states: Vec<ChannelState> = seen.iter().map(|(state, _)| *state).collect();
        assert_eq!(
            states,
            [
                ChannelState::Connected,
                ChannelState::Failing,
                ChannelState::Connected,
                ChannelState::Failing,
                ChannelState::Connected
            ],
            "{seen:?}"
        );
        let panicked = seen[1].1.clone().unwrap_or_default();
        assert!(
            panicked.contains("internal error") && panicked.contains("overflow"),
            "{panicked}"
        );
        let ended = seen[3].1.clone().unwrap_or_default();
        assert!(ended.contains("without being asked"), "{ended}");
        // Asked to stop, it stops (and is not started again).
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), running)
            .await
            .expect("stops when asked")
            .expect("never panics itself");
        assert_eq!(channel.runs(), 3);
    }
}
