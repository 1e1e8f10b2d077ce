//! Owner notices: a request the vault blocked, refused or rate-limited, and a stopped
//! chain of agent messages, told to the agent's approvers once per agent and rule (or
//! host, or path) every 10 minutes.

use super::{blocking, lock, Hub, MAX_NOTICE_KEYS, NOTICE_DEBOUNCE, NOTICE_INTERVAL};
use palisade_store::AuditFilter;
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
                let key = format!(
                    "{agent}|{}",
                    entry
                        .rule
                        .clone()
                        .or_else(|| entry.host.clone())
                        .unwrap_or_default()
                );
                if !self.first_notice(key) {
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
    /// (a loop, or too many hops), once per agent and path every 10 minutes.
    pub(super) async fn notice_stopped_loop(&self, entry: &palisade_store::AuditEntry) {
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
        if !self.first_notice(key) {
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
        let mut notices = lock(&self.inner.notices);
        notices.retain(|_, at| at.elapsed() < NOTICE_DEBOUNCE);
        if notices.contains_key(&key) {
            return false;
        }
        if notices.len() < MAX_NOTICE_KEYS {
            notices.insert(key, Instant::now());
        }
        true
    }
}
