//! Replies back to chats: the live path waits for the agent's reply to a message it
//! handed over; the recovery loop delivers replies no live handler waits for (the
//! process that received the message was killed), to the chat they came from.

use super::{blocking, lock, ChannelState, Hub, RECOVERY_INTERVAL, REPOST_AFTER};
use crate::channel::{Channel, Inbound};
use std::collections::{HashMap, HashSet};

/// Owed replies looked at per channel and round.
const OWED_REPLIES_PER_PAGE: usize = 50;
use std::sync::{Arc, Mutex};
use std::time::Instant;

impl Hub {
    pub(super) async fn send_stored_reply(
        &self,
        channel: &Arc<dyn Channel>,
        message: &Inbound,
        id: i64,
    ) {
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

    /// Delivers replies owed to chats that no live handler waits for: messages accepted
    /// before a restart (or a crash) are answered after it, in the chat they came from.
    pub(super) async fn recovery_loop(self) {
        let mut shutdown = self.inner.shutdown.clone();
        let mut cursors: HashMap<String, i64> = HashMap::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(RECOVERY_INTERVAL) => {}
                _ = crate::channel::stopped(&mut shutdown) => return,
            }
            let channels: Vec<Arc<dyn Channel>> = {
                let status = lock(&self.inner.status);
                lock(&self.inner.channels)
                    .iter()
                    .filter(|(name, _)| {
                        status
                            .get(*name)
                            .is_some_and(|s| s.state == ChannelState::Connected)
                    })
                    .map(|(_, running)| Arc::clone(&running.channel))
                    .collect()
            };
            for channel in channels {
                let label = format!("{}:{}", channel.platform().as_str(), channel.name());
                let store = self.inner.store.clone();
                // A page at a time from where the last one ended, so replies that
                // cannot be sent (the bot left that chat) never hide newer ones.
                let after = cursors.get(channel.name()).copied().unwrap_or(0);
                let Ok(owed) = blocking(move || {
                    store.undelivered_replies(&label, after, OWED_REPLIES_PER_PAGE)
                })
                .await
                else {
                    continue;
                };
                let next = match owed.last() {
                    Some((_, last)) if owed.len() == OWED_REPLIES_PER_PAGE => last.id,
                    _ => 0,
                };
                cursors.insert(channel.name().to_string(), next);
                lock(&self.inner.failed_replies).retain(|_, at| at.elapsed() < REPOST_AFTER);
                for (conversation, reply) in owed {
                    if lock(&self.inner.watching).contains(&reply.inbound_id) {
                        continue;
                    }
                    let retry = lock(&self.inner.failed_replies)
                        .get(&reply.id)
                        .is_none_or(|at| at.elapsed() >= REPOST_AFTER);
                    if !retry {
                        continue;
                    }
                    // `CHANNEL:CHAT[:THREAD]`, as `on_message` made it.
                    let mut parts = conversation.splitn(3, ':');
                    let (Some(name), Some(chat)) = (parts.next(), parts.next()) else {
                        continue;
                    };
                    if name != channel.name() {
                        continue;
                    }
                    let thread = parts.next();
                    match channel.send_message(chat, thread, &reply.text).await {
                        Ok(()) => {
                            lock(&self.inner.failed_replies).remove(&reply.id);
                            let store = self.inner.store.clone();
                            let id = reply.inbound_id;
                            let _ = blocking(move || store.mark_reply_delivered(id)).await;
                            tracing::info!(
                                channel = channel.name(),
                                message = reply.inbound_id,
                                "a reply owed from before was delivered"
                            );
                        }
                        Err(error) => {
                            lock(&self.inner.failed_replies).insert(reply.id, Instant::now());
                            tracing::warn!(channel = channel.name(), %error, "could not deliver an owed reply; retrying later");
                        }
                    }
                }
            }
        }
    }
}

/// Marks a message as watched by a live handler while it lives.
pub(super) struct Watching<'a> {
    set: &'a Mutex<HashSet<i64>>,
    id: i64,
}

impl<'a> Watching<'a> {
    pub(super) fn new(set: &'a Mutex<HashSet<i64>>, id: i64) -> Watching<'a> {
        lock(set).insert(id);
        Watching { set, id }
    }
}

impl Drop for Watching<'_> {
    fn drop(&mut self) {
        lock(self.set).remove(&self.id);
    }
}
