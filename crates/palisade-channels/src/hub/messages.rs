//! Messages to agents: which agent a chat's message goes to, who may talk to it, and
//! what happens to a stranger (dropped, or an access request to the agent's approvers).

use super::decisions::text_command;
use super::replies::Watching;
use super::{blocking, Hub, ACCESS_TIMEOUT};

/// Strangers' access requests to one agent on one channel that may wait for a person
/// at once; later strangers are dropped without a card until some are decided.
const MAX_WAITING_ACCESS_REQUESTS: usize = 20;
use crate::channel::{Channel, Inbound};
use palisade_approvals::{ApprovalKind, ApprovalStatus, NewRequest};
use palisade_host::StreamEvent;
use palisade_policy::AgentName;
use std::sync::Arc;

impl Hub {
    pub(super) async fn on_message(
        &self,
        channel: Arc<dyn Channel>,
        message: Inbound,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        let text = message.text.trim();
        // Text commands are for approvers; anyone else's `/approve …` is a message like
        // any other (so a stranger cannot make the engine audit their attempts at will).
        let command = match text_command(text) {
            Some(command)
                if message.may_command
                    && self.is_approver_here(&channel, &message.user.id).await =>
            {
                Some(command)
            }
            _ => None,
        };
        if let Some(command) = command {
            let answer = match command {
                Ok(decision) => self
                    .decide_typed(&channel, &message.user, decision)
                    .await
                    .text()
                    .to_string(),
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
        let agent = match self.route(&channel, &message).await {
            Some(agent) => agent,
            None => return,
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
        drop(permit);
        // Wait for the reply here while there is room; otherwise the recovery loop
        // delivers it to this chat when it is stored.
        let Ok(_waiting) = Arc::clone(&self.inner.waiting_replies).try_acquire_owned() else {
            tracing::debug!(
                channel = channel.name(),
                message = accepted.message_id,
                "many replies awaited; this one is delivered by the recovery loop"
            );
            return;
        };
        let _watch = Watching::new(&self.inner.watching, accepted.message_id);
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

    /// Whether `user_id` decides approvals of some agent on this channel.
    async fn is_approver_here(&self, channel: &Arc<dyn Channel>, user_id: &str) -> bool {
        let store = self.inner.store.clone();
        let (name, user) = (channel.name().to_string(), user_id.to_string());
        blocking(move || store.list_approvers(None))
            .await
            .map(|approvers| {
                approvers
                    .iter()
                    .any(|a| a.channel == name && a.user_id == user)
            })
            .unwrap_or(false)
    }

    /// The agent a message goes to, or `None` when it is dropped (a chat linked to no
    /// agent, someone not allowed to talk to it). A stranger's message starts an access
    /// request to the agent's approvers when the channel says so
    /// (`--unknown-senders ask`); it is never delivered itself.
    pub(super) async fn route(
        &self,
        channel: &Arc<dyn Channel>,
        message: &Inbound,
    ) -> Option<AgentName> {
        let store = self.inner.store.clone();
        let (name, chat, user, direct) = (
            channel.name().to_string(),
            message.chat.clone(),
            message.user.id.clone(),
            message.direct,
        );
        let routed = blocking(move || {
            let settings = store.get_channel(&name)?.settings;
            let access = AccessSetting::of(&settings);
            let agent = match store.linked_agent(&name, &chat)? {
                Some(agent) => agent,
                // A direct message in an unlinked chat goes to the channel's access
                // agent, if it has one.
                None => match access.agent.filter(|_| direct) {
                    Some(agent) => agent,
                    None => return Ok(Route::Unlinked),
                },
            };
            if store.may_talk(&agent, &name, &user)? {
                return Ok(Route::Deliver(agent));
            }
            Ok(if access.ask {
                Route::Stranger(agent)
            } else {
                Route::Refused(agent)
            })
        })
        .await;
        match routed {
            Ok(Route::Deliver(agent)) => Some(agent),
            Ok(Route::Stranger(agent)) => self.ask_access(channel, message, agent).await,
            Ok(Route::Refused(agent)) => {
                tracing::info!(channel = channel.name(), chat = %message.chat, user = %message.user.id, %agent, "a message from someone not allowed to talk to this agent; dropped");
                None
            }
            Ok(Route::Unlinked) => {
                tracing::info!(channel = channel.name(), chat = %message.chat, user = %message.user.id, "a message in a chat linked to no agent; dropped");
                None
            }
            Err(error) => {
                tracing::warn!(channel = channel.name(), %error, "cannot route a message");
                None
            }
        }
    }

    /// Asks the agent's approvers whether this stranger may talk to it (one request per
    /// person, agent and channel: asking again finds the same one). The message is
    /// delivered only if that request was already approved.
    pub(super) async fn ask_access(
        &self,
        channel: &Arc<dyn Channel>,
        message: &Inbound,
        agent: AgentName,
    ) -> Option<AgentName> {
        let key =
            palisade_store::approvals::access_request_key(channel.name(), &message.user.id, &agent);
        // The count of waiting requests and the new one are one step: handlers run at
        // once, and each would otherwise pass the count before any of them made its
        // request. Held over two store calls, no platform's.
        let asking = self.inner.access_asks.lock().await;
        let store = self.inner.store.clone();
        let (checked_key, checked_agent, checked_channel) =
            (key.clone(), agent.clone(), channel.name().to_string());
        let allowed = blocking(move || {
            store.access_request_allowed(
                &checked_key,
                &checked_agent,
                &checked_channel,
                MAX_WAITING_ACCESS_REQUESTS,
            )
        })
        .await
        .unwrap_or(false);
        if !allowed {
            palisade_policy::budgeted!(warn, channel = channel.name(), user = %message.user.id, %agent, "too many strangers wait for access to this agent; this one is dropped unasked");
            return None;
        }
        let summary = palisade_approvals::summary::access_request(
            agent.as_str(),
            channel.name(),
            channel.platform().title(),
            &message.user.id,
            &message.user.name,
            &message.text,
        );
        let request = NewRequest {
            kind: ApprovalKind::AccessRequest,
            agent: agent.clone(),
            summary,
            context: serde_json::json!({
                "channel": channel.name(),
                "platform": channel.platform().as_str(),
                "user_id": message.user.id,
                "display_name": palisade_approvals::summary::one_line(&message.user.name, 64),
                "chat": message.chat,
            }),
            timeout: ACCESS_TIMEOUT,
            holder: None,
            request_key: Some(key),
        };
        let engine = self.inner.engine.clone();
        let requested = tokio::task::spawn_blocking(move || engine.request(request)).await;
        drop(asking);
        let approval = match requested {
            Ok(Ok(approval)) => approval,
            Ok(Err(error)) => {
                tracing::warn!(channel = channel.name(), %error, "cannot ask for a stranger's access");
                return None;
            }
            Err(_) => return None,
        };
        match approval.status {
            ApprovalStatus::Approved => {
                // Admitted (if the engine could not record it when it was decided).
                let store = self.inner.store.clone();
                let (name, user, shown) = (
                    channel.name().to_string(),
                    message.user.id.clone(),
                    palisade_approvals::summary::one_line(&message.user.name, 64),
                );
                let admitted = agent.clone();
                let _ = blocking(move || store.add_sender(&admitted, &name, &user, &shown)).await;
                Some(agent)
            }
            ApprovalStatus::Pending => {
                tracing::info!(channel = channel.name(), user = %message.user.id, %agent, approval = %approval.id, "a stranger asks to talk to an agent; its approvers are asked");
                self.inner.wake.notify_one();
                let key = format!("access|{}|{}|{agent}", channel.name(), message.user.id);
                if self.first_notice(key) {
                    let text = format!(
                        "Your message was not delivered: you may not talk to agent {agent} yet. Its owner has been asked (request {}).",
                        approval.id
                    );
                    let _ = channel
                        .send_message(&message.chat, message.thread.as_deref(), &text)
                        .await;
                }
                None
            }
            _ => {
                tracing::info!(channel = channel.name(), user = %message.user.id, %agent, "a stranger whose access request was refused or expired wrote again; dropped");
                None
            }
        }
    }
}

/// Where a message goes.
enum Route {
    Deliver(AgentName),
    /// From someone not allowed to talk to this agent, on a channel that asks.
    Stranger(AgentName),
    /// From someone not allowed to talk to this agent.
    Refused(AgentName),
    Unlinked,
}

/// What a channel does with strangers (settings `unknown_senders` and `access_agent`).
pub struct AccessSetting {
    /// `unknown_senders` is `ask` (else strangers are dropped).
    pub ask: bool,
    /// Where strangers' direct messages in unlinked chats ask to go.
    pub agent: Option<AgentName>,
}

impl AccessSetting {
    pub fn of(settings: &serde_json::Value) -> AccessSetting {
        AccessSetting {
            ask: settings.get("unknown_senders").and_then(|v| v.as_str()) == Some("ask"),
            agent: settings
                .get("access_agent")
                .and_then(|v| v.as_str())
                .and_then(|name| AgentName::new(name).ok()),
        }
    }
}
