//! Cards: one per approver of each pending approval's agent, posted privately on the
//! approver's channel; edited everywhere once the approval is closed. A reconciliation
//! with the store, woken by the engine's events and otherwise every second.

use super::{blocking, lock, ChannelState, Hub, MAX_PENDING, RECONCILE_INTERVAL, REPOST_AFTER};
use crate::card::{new_token, Card};
use crate::channel::{Channel, ChannelError};
use futures_util::StreamExt;
use palisade_approvals::{ApprovalStatus, Event};
use palisade_store::ApprovalCard;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Cards posted at once by one reconciliation.
const MAX_POSTS_AT_ONCE: usize = 16;

/// How long after a failed post the card is tried again: [`REPOST_AFTER`], or as long
/// as the platform's rate limit asked (its `Retry-After`, already bounded to
/// [`crate::http::MAX_RETRY_AFTER`]) when that is longer, so a rate-limited channel is
/// not asked again while it still refuses.
fn repost_after(error: &ChannelError) -> Duration {
    error
        .retry_after()
        .map_or(REPOST_AFTER, |asked| asked.max(REPOST_AFTER))
}

impl Hub {
    /// Posts cards for pending approvals and edits cards of closed ones, when woken
    /// and every second.
    pub(super) async fn reconcile_loop(self) {
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

    pub(super) async fn reconcile(&self) {
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
        // Requests that hold an agent first, the soonest to expire first; strangers'
        // access requests after them.
        let mut pending = pending;
        pending.sort_by_key(|a| (a.kind == "access_request", a.expires_at_ms));
        for approval in &pending {
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
                            .is_none_or(|not_before| Instant::now() >= *not_before);
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
        let posting: Vec<_> = posts
            .into_iter()
            .map(|(channel, approval, card)| {
                let hub = self.clone();
                Box::pin(async move { hub.post(channel, approval, card).await })
            })
            .collect();
        // A few at a time, in that order: platforms rate-limit bursts of posts.
        futures_util::stream::iter(posting)
            .buffered(MAX_POSTS_AT_ONCE)
            .collect::<Vec<()>>()
            .await;

        let edits = finish.into_iter().filter_map(|card| {
            let wait = lock(&self.inner.failed_posts)
                .get(&card.id)
                .is_some_and(|not_before| Instant::now() < *not_before);
            if wait {
                return None;
            }
            let channel = channels.get(&card.channel).cloned()?;
            let hub = self.clone();
            Some(async move { hub.finish(channel, card).await })
        });
        futures_util::future::join_all(edits).await;
    }

    pub(super) async fn post(
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
                let wait = repost_after(&error);
                lock(&self.inner.failed_posts).insert(card.id, Instant::now() + wait);
                tracing::warn!(channel = channel.name(), approval = %approval.id, %error, retry_in = ?wait, "could not post an approval card; retrying later");
            }
        }
    }

    pub(super) async fn finish(&self, channel: Arc<dyn Channel>, card: ApprovalCard) {
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
                    // Like a post: not again before the platform's rate limit ends.
                    let wait = repost_after(&error);
                    lock(&self.inner.failed_posts).insert(card.id, Instant::now() + wait);
                    tracing::warn!(channel = channel.name(), approval = %approval.id, %error, retry_in = ?wait, "could not edit a card; retrying later");
                    return;
                }
                tracing::warn!(channel = channel.name(), approval = %approval.id, %error, "could not edit a card; giving up on it");
            }
        }
        lock(&self.inner.failed_posts).remove(&card.id);
        let store = self.inner.store.clone();
        let _ = blocking(move || store.finish_card(card.id, &state)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{HttpError, MAX_RETRY_AFTER};

    fn rate_limited(retry_after: Option<Duration>) -> ChannelError {
        ChannelError::Http(HttpError::Status {
            what: "Slack chat.postMessage".into(),
            status: http::StatusCode::TOO_MANY_REQUESTS,
            body: "ratelimited".into(),
            retry_after,
        })
    }

    /// A card refused with a 30 s rate limit is not posted again after the usual 10 s.
    #[test]
    fn a_rate_limited_card_waits_as_long_as_the_platform_asks() {
        let thirty = Duration::from_secs(30);
        assert_eq!(repost_after(&rate_limited(Some(thirty))), thirty);
        assert_eq!(
            repost_after(&rate_limited(Some(MAX_RETRY_AFTER))),
            MAX_RETRY_AFTER
        );
        assert_eq!(
            repost_after(&rate_limited(Some(Duration::from_secs(1)))),
            REPOST_AFTER
        );
        assert_eq!(repost_after(&rate_limited(None)), REPOST_AFTER);
        assert_eq!(
            repost_after(&ChannelError::Platform("channel_not_found".into())),
            REPOST_AFTER
        );
    }
}
