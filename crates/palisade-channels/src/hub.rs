//! What `palisade up` runs for chat channels.
//!
//! - Every configured channel runs in its own task. One that cannot connect (its
//!   `check` or its receive loop fails) is shown as failing and tried again after a
//!   back-off (1 s doubling to 1 min); it never takes the host down. The list of
//!   channels is read again every few seconds, so `channels add|remove` take effect
//!   without a restart.
//! - Messages: a message in a chat linked to an agent, from one of that agent's
//!   approvers on this channel, goes to the agent (conversation = channel + chat +
//!   thread); its reply (and what the agent sends with `send_message`) goes back to the
//!   same place. Anyone else's message is dropped and logged. `/approve ID once|1h|always`
//!   and `/deny ID [comment]` decide approvals by text on every platform.
//! - Cards: every pending approval gets one card per approver of its agent, posted
//!   privately on the approver's channel (recorded with an opaque token before it is
//!   posted); once the approval is closed, by anyone, anywhere, every card is edited to
//!   say how. This is a reconciliation with the store, woken at once by the engine's
//!   events and otherwise every second, so it also catches decisions made by other
//!   processes and approvals left from before a restart.
//! - Clicks: the token names the card, the engine checks the clicker is a listed
//!   approver and that the approval is still pending; a refusal is answered privately
//!   and audited.
//! - Notices: a request blocked or rate-limited at the vault is told to the agent's
//!   approvers, once per agent and rule (or host) every 10 minutes.

use crate::card::{new_token, outcome_line, CallbackData, Card};
use crate::channel::{Channel, ClickAnswer, Inbound, Incoming, PlatformUser};
use palisade_approvals::{
    ApprovalError, ApprovalStatus, ApproverIdentity, Button, Choice, Engine, Event,
};
use palisade_host::{Host, StreamEvent};
use palisade_store::{ApprovalCard, AuditFilter, Store};
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
/// One notice per agent and rule (or host) in this window.
const NOTICE_DEBOUNCE: Duration = Duration::from_secs(600);
/// Incoming events handled at once.
const MAX_HANDLERS: usize = 64;
/// Pending approvals looked at per reconciliation.
const MAX_PENDING: usize = 500;
/// A card that could not be posted is tried again after this long.
const REPOST_AFTER: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelState {
    Connecting,
    Connected,
    Failing,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChannelStatus {
    pub name: String,
    pub platform: String,
    pub state: ChannelState,
    pub detail: Option<String>,
    pub since_ms: i64,
}

struct Running {
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
    /// Cards whose post failed, and when (so they are retried, but not in a loop).
    failed_posts: Mutex<HashMap<i64, Instant>>,
    notices: Mutex<HashMap<String, Instant>>,
}

/// The running channels of a host. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
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
                failed_posts: Mutex::default(),
                notices: Mutex::default(),
            }),
        };
        tokio::spawn(hub.clone().supervise());
        tokio::spawn(hub.clone().reconcile_loop());
        tokio::spawn(hub.clone().notice_loop());
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
        let wanted: HashSet<String> = records.iter().map(|r| r.name.clone()).collect();
        {
            let mut channels = lock(&self.inner.channels);
            let gone: Vec<String> = channels
                .keys()
                .filter(|name| !wanted.contains(*name))
                .cloned()
                .collect();
            for name in gone {
                if let Some(running) = channels.remove(&name) {
                    let _ = running.stop.send(true);
                }
                lock(&self.inner.status).remove(&name);
                tracing::info!(channel = %name, "channel removed");
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
                    let Ok(permit) = Arc::clone(&hub.inner.handlers).acquire_owned().await else {
                        return;
                    };
                    let hub = hub.clone();
                    let channel = Arc::clone(&channel);
                    tokio::spawn(async move {
                        let _permit = permit;
                        hub.handle(channel, event).await;
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

    async fn handle(&self, channel: Arc<dyn Channel>, event: Incoming) {
        match event {
            Incoming::Message(message) => self.on_message(channel, message).await,
            Incoming::Click {
                data,
                user,
                respond,
            } => {
                let answer = self.on_click(&channel, &data, &user).await;
                respond(answer).await;
            }
            Incoming::Comment {
                token,
                user,
                text,
                respond,
            } => {
                let answer = self.on_comment(&channel, &token, &user, &text).await;
                respond(answer).await;
            }
        }
    }

    fn identity(channel: &Arc<dyn Channel>, user: &PlatformUser) -> ApproverIdentity {
        ApproverIdentity::chat(channel.name(), channel.platform(), &user.id, &user.name)
    }

    /// The card a token names, if it was posted on this channel.
    async fn card(
        &self,
        channel: &Arc<dyn Channel>,
        token: &str,
    ) -> Result<(ApprovalCard, palisade_store::Approval), ClickAnswer> {
        let store = self.inner.store.clone();
        let owned = token.to_string();
        match blocking(move || store.card_by_token(&owned)).await {
            Ok(Some((card, approval))) if card.channel == channel.name() => Ok((card, approval)),
            Ok(Some((card, _))) => {
                tracing::warn!(channel = channel.name(), card_channel = %card.channel, "a card's button came back on another channel; refused");
                Err(ClickAnswer::Refused(
                    "This button does not belong here; nothing was decided.".into(),
                ))
            }
            Ok(None) => {
                tracing::warn!(
                    channel = channel.name(),
                    "a button press named no card this host posted; refused"
                );
                Err(ClickAnswer::Refused(
                    "This card is not known here; nothing was decided.".into(),
                ))
            }
            Err(error) => Err(ClickAnswer::Refused(format!(
                "Palisade could not look the card up: {error}"
            ))),
        }
    }

    async fn on_click(
        &self,
        channel: &Arc<dyn Channel>,
        data: &str,
        user: &PlatformUser,
    ) -> ClickAnswer {
        let Some(data) = CallbackData::decode(data) else {
            tracing::warn!(channel = channel.name(), user = %user.id, "a button press with unknown data; refused");
            return ClickAnswer::Refused(
                "This button is not one of Palisade's; nothing was decided.".into(),
            );
        };
        let (_, approval) = match self.card(channel, &data.token).await {
            Ok(found) => found,
            Err(answer) => return answer,
        };
        let identity = Self::identity(channel, user);
        if data.button == Button::DenyWithComment {
            if approval.status != ApprovalStatus::Pending {
                return ClickAnswer::Refused(format!(
                    "Already decided: {}",
                    outcome_line(&approval)
                ));
            }
            let store = self.inner.store.clone();
            let (agent, channel_name, user_id) = (
                approval.agent.clone(),
                channel.name().to_string(),
                user.id.clone(),
            );
            let listed =
                blocking(move || store.find_approver(&agent, &channel_name, &user_id)).await;
            return match listed {
                Ok(Some(_)) => ClickAnswer::AskComment {
                    token: data.token,
                    title: approval.title,
                },
                Ok(None) => {
                    let engine = self.inner.engine.clone();
                    let id = approval.id.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        engine.refused(&id, &identity, "not an approver of this agent")
                    })
                    .await;
                    ClickAnswer::Refused(format!(
                        "You are not an approver of agent {}; nothing was decided.",
                        approval.agent
                    ))
                }
                Err(error) => ClickAnswer::Refused(error.to_string()),
            };
        }
        self.decide(approval.id, identity, data.button.choice(), None)
            .await
    }

    async fn on_comment(
        &self,
        channel: &Arc<dyn Channel>,
        token: &str,
        user: &PlatformUser,
        text: &str,
    ) -> ClickAnswer {
        let (_, approval) = match self.card(channel, token).await {
            Ok(found) => found,
            Err(answer) => return answer,
        };
        self.decide(
            approval.id,
            Self::identity(channel, user),
            Choice::Deny,
            Some(text.to_string()),
        )
        .await
    }

    async fn decide(
        &self,
        id: String,
        identity: ApproverIdentity,
        choice: Choice,
        comment: Option<String>,
    ) -> ClickAnswer {
        let engine = self.inner.engine.clone();
        let decided = tokio::task::spawn_blocking(move || {
            engine.decide(&id, &identity, choice, comment.as_deref())
        })
        .await;
        match decided {
            Ok(Ok(approval)) => {
                self.inner.wake.notify_one();
                ClickAnswer::Done(outcome_line(&approval))
            }
            Ok(Err(ApprovalError::NotAnApprover { agent, .. })) => ClickAnswer::Refused(format!(
                "You are not an approver of agent {agent}; nothing was decided."
            )),
            Ok(Err(error)) => ClickAnswer::Refused(error.to_string()),
            Err(error) => ClickAnswer::Refused(format!("the decision failed: {error}")),
        }
    }

    async fn on_message(&self, channel: Arc<dyn Channel>, message: Inbound) {
        let text = message.text.trim();
        if let Some(command) = text_command(text) {
            let answer = match command {
                Ok((id, choice, comment)) => {
                    let answer = self
                        .decide(id, Self::identity(&channel, &message.user), choice, comment)
                        .await;
                    match answer {
                        ClickAnswer::Done(text) | ClickAnswer::Refused(text) => text,
                        ClickAnswer::AskComment { .. } => String::new(),
                    }
                }
                Err(usage) => usage,
            };
            if let Err(error) = channel
                .send_message(&message.chat, message.thread.as_deref(), &answer)
                .await
            {
                tracing::warn!(channel = channel.name(), %error, "could not answer a command");
            }
            return;
        }
        let store = self.inner.store.clone();
        let (name, chat, user) = (
            channel.name().to_string(),
            message.chat.clone(),
            message.user.id.clone(),
        );
        let routed = blocking(move || {
            let Some(agent) = store.linked_agent(&name, &chat)? else {
                return Ok(None);
            };
            let allowed = store.find_approver(&agent, &name, &user)?.is_some();
            Ok(Some((agent, allowed)))
        })
        .await;
        let agent = match routed {
            Ok(Some((agent, true))) => agent,
            Ok(Some((agent, false))) => {
                tracing::info!(channel = channel.name(), chat = %message.chat, user = %message.user.id, %agent, "a message from someone not allowed to talk to this agent; dropped");
                return;
            }
            Ok(None) => {
                tracing::info!(channel = channel.name(), chat = %message.chat, user = %message.user.id, "a message in a chat linked to no agent; dropped");
                return;
            }
            Err(error) => {
                tracing::warn!(channel = channel.name(), %error, "cannot route a message");
                return;
            }
        };
        let conversation = match &message.thread {
            Some(thread) => format!("{}:{}:{}", channel.name(), message.chat, thread),
            None => format!("{}:{}", channel.name(), message.chat),
        };
        let label = format!("{}:{}", channel.platform().as_str(), channel.name());
        let (accepted, mut events) = match self
            .inner
            .host
            .submit(&agent, &conversation, &label, text)
            .await
        {
            Ok(submitted) => submitted,
            Err(error) => {
                let _ = channel
                    .send_message(
                        &message.chat,
                        message.thread.as_deref(),
                        &format!("palisade: {error}"),
                    )
                    .await;
                return;
            }
        };
        // The reply, and what the agent sends meanwhile, go back where the message came from.
        loop {
            let event = match events.recv().await {
                Ok(event) => event,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    // The stream ended without a reply event: the reply is stored; send it.
                    self.send_stored_reply(&channel, &message, accepted.message_id)
                        .await;
                    return;
                }
            };
            match event {
                StreamEvent::Message { text } => {
                    let _ = channel
                        .send_message(&message.chat, message.thread.as_deref(), &text)
                        .await;
                }
                StreamEvent::Reply { text, .. } => {
                    match channel
                        .send_message(&message.chat, message.thread.as_deref(), &text)
                        .await
                    {
                        Ok(()) => {
                            let store = self.inner.store.clone();
                            let id = accepted.message_id;
                            let _ = blocking(move || store.mark_reply_delivered(id)).await;
                        }
                        Err(error) => {
                            tracing::warn!(channel = channel.name(), %error, "could not send a reply; it stays stored")
                        }
                    }
                    return;
                }
                _ => {}
            }
        }
    }

    async fn send_stored_reply(&self, channel: &Arc<dyn Channel>, message: &Inbound, id: i64) {
        let store = self.inner.store.clone();
        if let Ok(Some(reply)) = blocking(move || store.get_reply(id)).await {
            if channel
                .send_message(&message.chat, message.thread.as_deref(), &reply.text)
                .await
                .is_ok()
            {
                let store = self.inner.store.clone();
                let _ = blocking(move || store.mark_reply_delivered(id)).await;
            }
        }
    }

    /// Posts cards for pending approvals and edits cards of closed ones, when woken
    /// and every second.
    async fn reconcile_loop(self) {
        let mut shutdown = self.inner.shutdown.clone();
        let mut events = self.inner.engine.events().subscribe();
        loop {
            self.reconcile().await;
            tokio::select! {
                _ = tokio::time::sleep(RECONCILE_INTERVAL) => {}
                _ = self.inner.wake.notified() => {}
                event = events.recv() => match event {
                    Ok(Event::Created(_) | Event::Closed(_)) => {}
                    // Missed some: this pass looks at the store anyway.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = crate::channel::stopped(&mut shutdown) => return,
            }
        }
    }

    async fn reconcile(&self) {
        let channels: HashMap<String, Arc<dyn Channel>> = {
            let status = lock(&self.inner.status);
            lock(&self.inner.channels)
                .iter()
                .filter(|(name, _)| {
                    status
                        .get(*name)
                        .is_some_and(|s| s.state == ChannelState::Connected)
                })
                .map(|(name, running)| (name.clone(), Arc::clone(&running.channel)))
                .collect()
        };
        if channels.is_empty() {
            return;
        }
        let store = self.inner.store.clone();
        let snapshot = blocking(move || {
            let pending = store.list_approvals(Some(ApprovalStatus::Pending), MAX_PENDING)?;
            let approvers = store.list_approvers(None)?;
            let mut cards = HashMap::new();
            for approval in &pending {
                cards.insert(approval.id.clone(), store.cards_of(&approval.id)?);
            }
            let finish = store.cards_to_finish(200)?;
            Ok((pending, approvers, cards, finish))
        })
        .await;
        let Ok((pending, approvers, cards, finish)) = snapshot else {
            return;
        };
        let mut posts = Vec::new();
        for approval in pending.iter().rev() {
            let existing = cards.get(&approval.id).cloned().unwrap_or_default();
            for approver in approvers.iter().filter(|a| a.agent == approval.agent) {
                let Some(channel) = channels.get(&approver.channel) else {
                    continue;
                };
                let card = existing
                    .iter()
                    .find(|c| c.channel == approver.channel && c.chat == approver.user_id)
                    .cloned();
                match card {
                    Some(card) if card.message.is_some() => {}
                    Some(card) => {
                        let retry = lock(&self.inner.failed_posts)
                            .get(&card.id)
                            .is_none_or(|at| at.elapsed() >= REPOST_AFTER);
                        if retry {
                            posts.push((Arc::clone(channel), approval.clone(), card));
                        }
                    }
                    None => {
                        let store = self.inner.store.clone();
                        let (id, channel_name, user) = (
                            approval.id.clone(),
                            approver.channel.clone(),
                            approver.user_id.clone(),
                        );
                        if let Ok(card) = blocking(move || {
                            store.add_card(&id, &channel_name, &user, &new_token())
                        })
                        .await
                        {
                            posts.push((Arc::clone(channel), approval.clone(), card));
                        }
                    }
                }
            }
        }
        let posting = posts.into_iter().map(|(channel, approval, card)| {
            let hub = self.clone();
            async move { hub.post(channel, approval, card).await }
        });
        futures_util::future::join_all(posting).await;

        let edits = finish.into_iter().filter_map(|card| {
            let channel = channels.get(&card.channel).cloned()?;
            let hub = self.clone();
            Some(async move { hub.finish(channel, card).await })
        });
        futures_util::future::join_all(edits).await;
    }

    async fn post(
        &self,
        channel: Arc<dyn Channel>,
        approval: palisade_store::Approval,
        card: ApprovalCard,
    ) {
        let content = Card::new(&approval, &card.token);
        match channel.post_card(&card.chat, &content).await {
            Ok(at) => {
                lock(&self.inner.failed_posts).remove(&card.id);
                let store = self.inner.store.clone();
                let reference = serde_json::to_string(&at).unwrap_or_default();
                let _ = blocking(move || store.set_card_message(card.id, &reference)).await;
                tracing::info!(channel = channel.name(), approval = %approval.id, "approval card posted");
            }
            Err(error) => {
                lock(&self.inner.failed_posts).insert(card.id, Instant::now());
                tracing::warn!(channel = channel.name(), approval = %approval.id, %error, "could not post an approval card; retrying later");
            }
        }
    }

    async fn finish(&self, channel: Arc<dyn Channel>, card: ApprovalCard) {
        let store = self.inner.store.clone();
        let id = card.approval_id.clone();
        let Ok(approval) = blocking(move || store.get_approval(&id)).await else {
            return;
        };
        let state = approval.status.as_str().to_string();
        if let Some(reference) = card
            .message
            .as_deref()
            .and_then(|m| serde_json::from_str(m).ok())
        {
            let content = Card::new(&approval, &card.token);
            if let Err(error) = channel.update_card(&reference, &content).await {
                if error.is_transient() {
                    tracing::warn!(channel = channel.name(), approval = %approval.id, %error, "could not edit a card; retrying");
                    return;
                }
                tracing::warn!(channel = channel.name(), approval = %approval.id, %error, "could not edit a card; giving up on it");
            }
        }
        let store = self.inner.store.clone();
        let _ = blocking(move || store.finish_card(card.id, &state)).await;
    }

    /// Tells approvers about requests the vault blocked or rate-limited.
    async fn notice_loop(self) {
        let mut shutdown = self.inner.shutdown.clone();
        let store = self.inner.store.clone();
        // Start at the end of the log: notices are about what happens from now on.
        let mut cursor = blocking(move || {
            Ok(store
                .list_audit(&AuditFilter {
                    limit: Some(1),
                    ..AuditFilter::default()
                })?
                .first()
                .map(|r| r.id)
                .unwrap_or(0))
        })
        .await
        .unwrap_or(0);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(NOTICE_INTERVAL) => {}
                _ = crate::channel::stopped(&mut shutdown) => return,
            }
            let store = self.inner.store.clone();
            let after = cursor;
            let rows = blocking(move || {
                store.list_audit(&AuditFilter {
                    after_id: Some(after),
                    limit: Some(1000),
                    ..AuditFilter::default()
                })
            })
            .await;
            let Ok(rows) = rows else { continue };
            if let Some(newest) = rows.first() {
                cursor = cursor.max(newest.id);
            }
            for row in rows.iter().rev() {
                let entry = &row.entry;
                if entry.event == "agent.message" {
                    self.notice_stopped_loop(entry).await;
                    continue;
                }
                if entry.event != "request" {
                    continue;
                }
                let what = match entry.decision.as_deref() {
                    Some("blocked") => "was blocked by a rule",
                    Some("default_denied") => {
                        "was refused: the host is not on the agent's allow-list"
                    }
                    Some("rate_limited") => "hit a rate limit",
                    _ => continue,
                };
                let Some(agent) = entry.agent.clone() else {
                    continue;
                };
                let key = format!(
                    "{agent}|{}",
                    entry
                        .rule
                        .clone()
                        .or_else(|| entry.host.clone())
                        .unwrap_or_default()
                );
                {
                    let mut notices = lock(&self.inner.notices);
                    notices.retain(|_, at| at.elapsed() < NOTICE_DEBOUNCE);
                    if notices.contains_key(&key) {
                        continue;
                    }
                    notices.insert(key, Instant::now());
                }
                let request = format!(
                    "{} {}{}",
                    entry.method.as_deref().unwrap_or(""),
                    entry.host.as_deref().unwrap_or(""),
                    entry.path.as_deref().unwrap_or("")
                );
                let rule = entry
                    .rule
                    .as_deref()
                    .map(|r| format!(" (rule {r})"))
                    .unwrap_or_default();
                let text = format!(
                    "⚠ Agent {agent}: a request to {} {what}{rule}. Palisade tells you about this once every 10 minutes per rule; see `palisade audit list --agent {agent}`.",
                    palisade_approvals::summary::one_line(request.trim(), 300)
                );
                self.notify_owners(&agent, &text).await;
            }
        }
    }

    /// Tells an agent's owners that a chain of agent-to-agent messages was stopped
    /// (a loop, or too many hops), once per agent and path every 10 minutes.
    async fn notice_stopped_loop(&self, entry: &palisade_store::AuditEntry) {
        let why = match entry.decision.as_deref() {
            Some("cycle") => "would have looped back, so it was stopped",
            Some("hop_limit") => "passed through too many agents, so it was stopped",
            _ => return,
        };
        let Some(agent) = entry.agent.clone() else {
            return;
        };
        let path = entry
            .detail
            .as_ref()
            .and_then(|d| d.get("path"))
            .and_then(|p| p.as_str())
            .unwrap_or_default()
            .to_string();
        let key = format!("{agent}|loop|{path}");
        {
            let mut notices = lock(&self.inner.notices);
            notices.retain(|_, at| at.elapsed() < NOTICE_DEBOUNCE);
            if notices.contains_key(&key) {
                return;
            }
            notices.insert(key, Instant::now());
        }
        let text = format!(
            "⚠ Agent {agent}: a chain of messages between agents ({}) {why}. See `palisade audit list --event agent.message`.",
            palisade_approvals::summary::one_line(&path, 300)
        );
        self.notify_owners(&agent, &text).await;
    }

    async fn notify_owners(&self, agent: &str, text: &str) {
        let Ok(agent) = palisade_policy::AgentName::new(agent) else {
            return;
        };
        let store = self.inner.store.clone();
        let Ok(approvers) = blocking(move || store.list_approvers(Some(&agent))).await else {
            return;
        };
        for approver in approvers {
            let channel = self.channel(&approver.channel);
            if let Some(channel) = channel {
                if let Err(error) = channel.notify_user(&approver.user_id, text).await {
                    tracing::warn!(channel = channel.name(), %error, "could not send a notice");
                }
            }
        }
    }
}

/// A decision typed as text: approval id, choice, comment.
type TextDecision = (String, Choice, Option<String>);

/// `/approve ID [once|1h|always]` or `/deny ID [comment]`: `None` for anything else,
/// the usage line for a malformed command.
fn text_command(text: &str) -> Option<Result<TextDecision, String>> {
    let (command, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    let command = command.split('@').next().unwrap_or(command);
    let usage = || "Use /approve ID once|1h|always or /deny ID [comment]".to_string();
    match command {
        "/approve" => {
            let mut words = rest.split_whitespace();
            let Some(id) = words.next() else {
                return Some(Err(usage()));
            };
            let choice = match words.next() {
                None => Choice::Once,
                Some(word) => match word.parse::<Choice>() {
                    Ok(choice) if choice.approves() => choice,
                    _ => return Some(Err(usage())),
                },
            };
            Some(Ok((id.to_string(), choice, None)))
        }
        "/deny" => {
            let rest = rest.trim();
            let (id, comment) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            if id.is_empty() {
                return Some(Err(usage()));
            }
            let comment = comment.trim();
            Some(Ok((
                id.to_string(),
                Choice::Deny,
                (!comment.is_empty()).then(|| comment.to_string()),
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_commands_parse() {
        assert_eq!(
            text_command("/approve apr_abc 1h"),
            Some(Ok(("apr_abc".into(), Choice::ForHour, None)))
        );
        assert_eq!(
            text_command("/approve@palisade_bot apr_abc"),
            Some(Ok(("apr_abc".into(), Choice::Once, None)))
        );
        assert_eq!(
            text_command("/deny apr_abc use the team list"),
            Some(Ok((
                "apr_abc".into(),
                Choice::Deny,
                Some("use the team list".into())
            )))
        );
        assert!(matches!(text_command("/approve"), Some(Err(_))));
        assert!(matches!(text_command("/approve apr_x deny"), Some(Err(_))));
        assert_eq!(text_command("hello /approve"), None);
    }
}
