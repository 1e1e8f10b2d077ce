//! People allowed to talk to an agent on a channel without being its approvers: added
//! when an access request is approved, or by the owner. Changes are audited (they
//! decide who reaches an agent).

use super::agents::{agent_id, parse_agent_name};
use super::channels::{channel_row, check_id};
use super::Store;
use crate::channels::SenderRecord;
use crate::{Result, StoreError};
use palisade_policy::AgentName;
use rusqlite::OptionalExtension;

impl Store {
    /// Allows `user_id` of `channel` to talk to `agent` (again: a no-op).
    pub fn add_sender(
        &self,
        agent: &AgentName,
        channel: &str,
        user_id: &str,
        display_name: &str,
    ) -> Result<SenderRecord> {
        check_id("user id", user_id)?;
        check_id("display name", display_name)?;
        self.write(|tx| {
            let (channel_id, _) = channel_row(tx, channel)?;
            let agent_row = agent_id(tx, agent)?;
            let now = crate::now_ms();
            let inserted = tx.execute(
                "INSERT OR IGNORE INTO channel_senders (agent_id, channel_id, user_id, display_name, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                (agent_row, channel_id, user_id, display_name, now),
            )?;
            if inserted > 0 {
                let mut entry = self.audit_entry("sender.add");
                entry.agent = Some(agent.to_string());
                entry.decision = Some("added".into());
                entry.detail = Some(serde_json::json!({
                    "channel": channel, "user": user_id, "name": display_name,
                }));
                self.append_in(tx, &entry)?;
            }
            Ok(SenderRecord {
                agent: agent.clone(),
                channel: channel.to_string(),
                user_id: user_id.to_string(),
                display_name: display_name.to_string(),
                created_at_ms: now,
            })
        })
    }

    pub fn remove_sender(&self, agent: &AgentName, channel: &str, user_id: &str) -> Result<()> {
        self.write(|tx| {
            let (channel_id, _) = channel_row(tx, channel)?;
            let agent_row = agent_id(tx, agent)?;
            let removed = tx.execute(
                "DELETE FROM channel_senders WHERE agent_id = ?1 AND channel_id = ?2 AND user_id = ?3",
                (agent_row, channel_id, user_id),
            )?;
            if removed == 0 {
                return Err(StoreError::NotFound {
                    what: "allowed sender",
                    name: format!("{user_id} on {channel} for {agent}"),
                });
            }
            // Their approved access request must not admit them again.
            tx.execute(
                "UPDATE approvals SET request_key = NULL WHERE request_key = ?1 AND status != 'pending'",
                [crate::approvals::access_request_key(channel, user_id, agent)],
            )?;
            let mut entry = self.audit_entry("sender.remove");
            entry.agent = Some(agent.to_string());
            entry.decision = Some("removed".into());
            entry.detail = Some(serde_json::json!({ "channel": channel, "user": user_id }));
            self.append_in(tx, &entry)?;
            Ok(())
        })
    }

    /// Allowed senders of one channel, or of every channel.
    pub fn list_senders(&self, channel: Option<&str>) -> Result<Vec<SenderRecord>> {
        self.read(|tx| {
            let mut stmt = tx.prepare(
                "SELECT a.name, c.name, s.user_id, s.display_name, s.created_at_ms
                 FROM channel_senders s JOIN agents a ON a.id = s.agent_id
                 JOIN channels c ON c.id = s.channel_id
                 WHERE ?1 IS NULL OR c.name = ?1 ORDER BY c.name, a.name, s.id",
            )?;
            let rows = stmt
                .query_map([channel], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, i64>(4)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(agent, channel, user_id, display_name, created_at_ms)| {
                    Ok(SenderRecord {
                        agent: parse_agent_name(&agent)?,
                        channel,
                        user_id,
                        display_name,
                        created_at_ms,
                    })
                })
                .collect()
        })
    }

    /// Whether `user_id` of `channel` may talk to `agent`: an approver or an allowed
    /// sender.
    pub fn may_talk(&self, agent: &AgentName, channel: &str, user_id: &str) -> Result<bool> {
        self.read(|tx| {
            let found: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM agents a JOIN channels c ON c.name = ?2
                     WHERE a.name = ?1 AND (
                        EXISTS (SELECT 1 FROM approvers p WHERE p.agent_id = a.id AND p.channel_id = c.id AND p.user_id = ?3)
                        OR EXISTS (SELECT 1 FROM channel_senders s WHERE s.agent_id = a.id AND s.channel_id = c.id AND s.user_id = ?3))",
                    (agent.as_str(), channel, user_id),
                    |row| row.get(0),
                )
                .optional()?;
            Ok(found.is_some())
        })
    }
}
