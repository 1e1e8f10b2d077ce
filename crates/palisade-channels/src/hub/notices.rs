//! Owner notices: a request the vault blocked, refused or rate-limited, and a stopped
//! chain of agent messages, told to the agent's approvers once per agent and rule (or
//! kind of refusal, or path) every 10 minutes, and at most five about one agent in
//! that time.

use super::{blocking, lock, Hub, MAX_NOTICE_KEYS, NOTICE_DEBOUNCE, NOTICE_INTERVAL};
use palisade_store::AuditFilter;
use std::collections::HashMap;
use std::time::Instant;

impl Hub {
    /// Tells approvers about requests the vault blocked or rate-limited.
    pub(super) async fn notice_loop(self) {
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
                // Per rule; a refusal without a rule (a host off an action agent's
                // allow-list) per agent, not per host, so an agent asking for a new
                // host each time cannot send a notice each time.
                let key = format!(
                    "owner|{agent}|{}",
                    entry
                        .rule
                        .clone()
                        .unwrap_or_else(|| entry.decision.clone().unwrap_or_default())
                );
                if !self.first_owner_notice(&agent, key) {
                    continue;
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
    /// (a loop, too many hops, or a ring of agents waiting for each other), once per
    /// agent and path every 10 minutes.
    pub(super) async fn notice_stopped_loop(&self, entry: &palisade_store::AuditEntry) {
        let why = match entry.decision.as_deref() {
            Some("cycle") => "would have looped back, so it was stopped",
            Some("hop_limit") => "passed through too many agents, so it was stopped",
            Some("deadlock") => {
                "would have left these agents each waiting for the next's answer, so it was stopped"
            }
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
        let key = format!("owner|{agent}|loop|{path}");
        if !self.first_owner_notice(&agent, key) {
            return;
        }
        let text = format!(
            "⚠ Agent {agent}: a chain of messages between agents ({}) {why}. See `palisade audit list --event agent.message`.",
            palisade_approvals::summary::one_line(&path, 300)
        );
        self.notify_owners(&agent, &text).await;
    }

    pub(super) async fn notify_owners(&self, agent: &str, text: &str) {
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

    /// Whether a notice with this key was not sent in the debounce window (and records
    /// it as sent now).
    pub(super) fn first_notice(&self, key: String) -> bool {
        remember(&mut lock(&self.inner.notices), key, None, Instant::now())
    }

    /// As [`Hub::first_notice`] for a notice to `agent`'s owners, who get at most
    /// [`MAX_NOTICES_PER_AGENT`] about it in a window, whatever the keys.
    pub(super) fn first_owner_notice(&self, agent: &str, key: String) -> bool {
        remember(
            &mut lock(&self.inner.notices),
            key,
            Some(agent),
            Instant::now(),
        )
    }
}

/// Owner notices about one agent at most in one debounce window.
const MAX_NOTICES_PER_AGENT: usize = 5;

/// Records `key` as sent at `now` unless it was sent in the window, the agent's owners
/// had their share of notices in it (keys `owner|AGENT|…`), or the book is full (then
/// nothing is sent: a full book must not turn into no debouncing at all).
fn remember(
    notices: &mut HashMap<String, Instant>,
    key: String,
    agent: Option<&str>,
    now: Instant,
) -> bool {
    notices.retain(|_, at| now.saturating_duration_since(*at) < NOTICE_DEBOUNCE);
    if notices.contains_key(&key) || notices.len() >= MAX_NOTICE_KEYS {
        return false;
    }
    if let Some(agent) = agent {
        let prefix = format!("owner|{agent}|");
        let sent = notices.keys().filter(|k| k.starts_with(&prefix)).count();
        if sent >= MAX_NOTICES_PER_AGENT {
            return false;
        }
    }
    notices.insert(key, now);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_are_debounced_per_key_and_per_agent_and_a_full_book_sends_nothing() {
        let mut book = HashMap::new();
        let now = Instant::now();
        assert!(remember(&mut book, "owner|a|rule".into(), Some("a"), now));
        assert!(!remember(&mut book, "owner|a|rule".into(), Some("a"), now));
        // An agent inventing a new key each time gets its share, no more.
        let sent = (0..20)
            .filter(|i| remember(&mut book, format!("owner|a|host{i}"), Some("a"), now))
            .count();
        assert_eq!(sent, MAX_NOTICES_PER_AGENT - 1);
        assert!(remember(&mut book, "owner|b|rule".into(), Some("b"), now));
        // After the window, again.
        let later = now + NOTICE_DEBOUNCE + std::time::Duration::from_secs(1);
        assert!(remember(&mut book, "owner|a|rule".into(), Some("a"), later));
        // A full book sends nothing rather than everything.
        let mut full: HashMap<String, Instant> = (0..MAX_NOTICE_KEYS)
            .map(|i| (format!("k{i}"), now))
            .collect();
        assert!(!remember(&mut full, "new".into(), None, now));
        assert!(!remember(&mut full, "new".into(), None, now));
    }
}
