//! Channel, link, approver and approval-card rows. Channel and approver changes are
//! audited (they decide who may approve what); cards are delivery bookkeeping and are
//! not (the decision they carry is).

use super::agents::{agent_id, parse_agent_name};
use super::{corrupt, validate_name, Store};
use crate::approvals::Approval;
use crate::channels::{ApprovalCard, ApproverRecord, ChannelLink, ChannelRecord, NewChannel};
use crate::{Result, StoreError};
use palisade_policy::{AgentName, SecretValue};
use rusqlite::{OptionalExtension, Transaction};

const PLATFORMS: &[&str] = &["slack", "telegram", "discord"];
/// Longest platform user id, chat id or display name stored.
const MAX_ID_CHARS: usize = 128;

fn associated(name: &str) -> String {
    format!("channel:{name}")
}

pub(super) fn channel_row(tx: &Transaction<'_>, name: &str) -> Result<(i64, String)> {
    tx.query_row(
        "SELECT id, platform FROM channels WHERE name = ?1",
        [name],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
    .optional()?
    .ok_or_else(|| StoreError::NotFound {
        what: "channel",
        name: name.to_string(),
    })
}

fn record_from_row(
    row: &rusqlite::Row<'_>,
) -> rusqlite::Result<(i64, String, String, String, i64)> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
    ))
}

fn decode_record(raw: (i64, String, String, String, i64)) -> Result<ChannelRecord> {
    let (id, name, platform, settings, created_at_ms) = raw;
    Ok(ChannelRecord {
        settings: serde_json::from_str(&settings).map_err(|e| corrupt("channel settings", e))?,
        id,
        name,
        platform,
        created_at_ms,
    })
}

pub(super) fn check_id(what: &str, value: &str) -> Result<()> {
    if value.trim().is_empty()
        || value.chars().count() > MAX_ID_CHARS
        || value.chars().any(char::is_control)
    {
        return Err(StoreError::Invalid(format!(
            "{what} {value:?} is empty, longer than {MAX_ID_CHARS} characters or has control characters"
        )));
    }
    Ok(())
}

const CARD_COLUMNS: &str = "k.id, k.approval_id, c.name, k.chat, k.message, k.token, \
     k.posted_at_ms, k.finished";

fn card_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ApprovalCard> {
    Ok(ApprovalCard {
        id: row.get(0)?,
        approval_id: row.get(1)?,
        channel: row.get(2)?,
        chat: row.get(3)?,
        message: row.get(4)?,
        token: row.get(5)?,
        posted_at_ms: row.get(6)?,
        finished: row.get(7)?,
    })
}

const APPROVER_COLUMNS: &str = "p.id, a.name, c.name, c.platform, p.user_id, p.display_name, \
     p.created_at_ms";

fn approver_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(ApproverRecordRaw, String)> {
    Ok((
        ApproverRecordRaw {
            id: row.get(0)?,
            channel: row.get(2)?,
            platform: row.get(3)?,
            user_id: row.get(4)?,
            display_name: row.get(5)?,
            created_at_ms: row.get(6)?,
        },
        row.get(1)?,
    ))
}

struct ApproverRecordRaw {
    id: i64,
    channel: String,
    platform: String,
    user_id: String,
    display_name: String,
    created_at_ms: i64,
}

fn decode_approver((raw, agent): (ApproverRecordRaw, String)) -> Result<ApproverRecord> {
    Ok(ApproverRecord {
        id: raw.id,
        agent: parse_agent_name(&agent)?,
        channel: raw.channel,
        platform: raw.platform,
        user_id: raw.user_id,
        display_name: raw.display_name,
        created_at_ms: raw.created_at_ms,
    })
}

impl Store {
    pub fn create_channel(&self, channel: NewChannel) -> Result<ChannelRecord> {
        validate_name("channel", &channel.name)?;
        if !PLATFORMS.contains(&channel.platform.as_str()) {
            return Err(StoreError::Invalid(format!(
                "platform {:?} is unknown: use slack, telegram or discord",
                channel.platform
            )));
        }
        if let Ok(serde_json::Value::Object(fields)) =
            serde_json::from_str::<serde_json::Value>(channel.credentials.expose())
        {
            for (field, value) in &fields {
                if let Some(text) = value.as_str() {
                    let what = format!("the channel's {}", field.replace('_', " "));
                    crate::input::check_one_line(&what, text)?;
                }
            }
        }
        let sealed = self
            .key()
            .seal(&associated(&channel.name), &channel.credentials)?;
        let settings = channel.settings.to_string();
        self.write(|tx| {
            let exists: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM channels WHERE name = ?1)",
                [&channel.name],
                |row| row.get(0),
            )?;
            if exists {
                return Err(StoreError::Duplicate {
                    what: "channel",
                    name: channel.name.clone(),
                });
            }
            tx.execute(
                "INSERT INTO channels (name, platform, settings, sealed, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                (
                    &channel.name,
                    &channel.platform,
                    &settings,
                    &sealed,
                    crate::now_ms(),
                ),
            )?;
            let mut entry = self.audit_entry("channel.create");
            entry.decision = Some("created".into());
            entry.detail = Some(serde_json::json!({
                "channel": channel.name,
                "platform": channel.platform,
                "settings": channel.settings,
            }));
            self.append_in(tx, &entry)?;
            self.get_channel_in(tx, &channel.name)
        })
    }

    fn get_channel_in(&self, tx: &Transaction<'_>, name: &str) -> Result<ChannelRecord> {
        let raw = tx
            .query_row(
                "SELECT id, name, platform, settings, created_at_ms FROM channels WHERE name = ?1",
                [name],
                record_from_row,
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound {
                what: "channel",
                name: name.to_string(),
            })?;
        decode_record(raw)
    }

    pub fn get_channel(&self, name: &str) -> Result<ChannelRecord> {
        self.read(|tx| self.get_channel_in(tx, name))
    }

    pub fn list_channels(&self) -> Result<Vec<ChannelRecord>> {
        self.read(|tx| {
            let mut stmt = tx.prepare(
                "SELECT id, name, platform, settings, created_at_ms FROM channels ORDER BY name",
            )?;
            let raw = stmt
                .query_map([], record_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            raw.into_iter().map(decode_record).collect()
        })
    }

    /// Replaces the non-secret settings of a channel (audited).
    pub fn update_channel_settings(
        &self,
        name: &str,
        settings: &serde_json::Value,
    ) -> Result<ChannelRecord> {
        let text = settings.to_string();
        self.write(|tx| {
            channel_row(tx, name)?;
            tx.execute(
                "UPDATE channels SET settings = ?1 WHERE name = ?2",
                (&text, name),
            )?;
            let mut entry = self.audit_entry("channel.update");
            entry.decision = Some("updated".into());
            entry.detail = Some(serde_json::json!({ "channel": name, "settings": settings }));
            self.append_in(tx, &entry)?;
            self.get_channel_in(tx, name)
        })
    }

    /// The channel's sealed credentials, opened (a JSON object).
    pub fn channel_credentials(&self, name: &str) -> Result<SecretValue> {
        let sealed: String = self.read(|tx| {
            tx.query_row(
                "SELECT sealed FROM channels WHERE name = ?1",
                [name],
                |row| row.get(0),
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound {
                what: "channel",
                name: name.to_string(),
            })
        })?;
        self.key().open(&associated(name), &sealed)
    }

    /// Deletes a channel with its links, approvers and cards.
    pub fn delete_channel(&self, name: &str) -> Result<()> {
        self.write(|tx| {
            let (id, platform) = channel_row(tx, name)?;
            tx.execute("DELETE FROM channels WHERE id = ?1", [id])?;
            // Strangers admitted on this channel are not admitted on a new channel of
            // the same name.
            let prefix = format!("access:{name}:");
            tx.execute(
                "UPDATE approvals SET request_key = NULL
                 WHERE substr(request_key, 1, length(?1)) = ?1 AND status != 'pending'",
                [&prefix],
            )?;
            let mut entry = self.audit_entry("channel.delete");
            entry.decision = Some("deleted".into());
            entry.detail = Some(serde_json::json!({ "channel": name, "platform": platform }));
            self.append_in(tx, &entry)?;
            Ok(())
        })
    }

    /// Links `chat` of `channel` to `agent` (replacing an earlier link of that chat).
    pub fn link_chat(&self, channel: &str, chat: &str, agent: &AgentName) -> Result<ChannelLink> {
        check_id("chat id", chat)?;
        self.write(|tx| {
            let (channel_id, _) = channel_row(tx, channel)?;
            let agent_row = agent_id(tx, agent)?;
            let now = crate::now_ms();
            tx.execute(
                "INSERT INTO channel_links (channel_id, chat, agent_id, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(channel_id, chat) DO UPDATE SET agent_id = excluded.agent_id",
                (channel_id, chat, agent_row, now),
            )?;
            let mut entry = self.audit_entry("channel.link");
            entry.agent = Some(agent.to_string());
            entry.decision = Some("linked".into());
            entry.detail = Some(serde_json::json!({ "channel": channel, "chat": chat }));
            self.append_in(tx, &entry)?;
            Ok(ChannelLink {
                channel: channel.to_string(),
                chat: chat.to_string(),
                agent: agent.clone(),
                created_at_ms: now,
            })
        })
    }

    pub fn unlink_chat(&self, channel: &str, chat: &str) -> Result<()> {
        self.write(|tx| {
            let (channel_id, _) = channel_row(tx, channel)?;
            let removed = tx.execute(
                "DELETE FROM channel_links WHERE channel_id = ?1 AND chat = ?2",
                (channel_id, chat),
            )?;
            if removed == 0 {
                return Err(StoreError::NotFound {
                    what: "linked chat",
                    name: chat.to_string(),
                });
            }
            let mut entry = self.audit_entry("channel.unlink");
            entry.decision = Some("unlinked".into());
            entry.detail = Some(serde_json::json!({ "channel": channel, "chat": chat }));
            self.append_in(tx, &entry)?;
            Ok(())
        })
    }

    /// Links of one channel, or of every channel.
    pub fn list_links(&self, channel: Option<&str>) -> Result<Vec<ChannelLink>> {
        self.read(|tx| {
            let mut stmt = tx.prepare(
                "SELECT c.name, l.chat, a.name, l.created_at_ms FROM channel_links l
                 JOIN channels c ON c.id = l.channel_id JOIN agents a ON a.id = l.agent_id
                 WHERE ?1 IS NULL OR c.name = ?1 ORDER BY c.name, l.chat",
            )?;
            let rows = stmt
                .query_map([channel], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, i64>(3)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(channel, chat, agent, created_at_ms)| {
                    Ok(ChannelLink {
                        channel,
                        chat,
                        agent: parse_agent_name(&agent)?,
                        created_at_ms,
                    })
                })
                .collect()
        })
    }

    /// The agent a chat of a channel is linked to.
    pub fn linked_agent(&self, channel: &str, chat: &str) -> Result<Option<AgentName>> {
        let name: Option<String> = self.read(|tx| {
            Ok(tx
                .query_row(
                    "SELECT a.name FROM channel_links l JOIN channels c ON c.id = l.channel_id
                     JOIN agents a ON a.id = l.agent_id WHERE c.name = ?1 AND l.chat = ?2",
                    (channel, chat),
                    |row| row.get(0),
                )
                .optional()?)
        })?;
        name.map(|n| parse_agent_name(&n)).transpose()
    }

    pub fn add_approver(
        &self,
        agent: &AgentName,
        channel: &str,
        user_id: &str,
        display_name: &str,
    ) -> Result<ApproverRecord> {
        check_id("user id", user_id)?;
        check_id("display name", display_name)?;
        self.write(|tx| {
            let (channel_id, _) = channel_row(tx, channel)?;
            let agent_row = agent_id(tx, agent)?;
            let inserted = tx.execute(
                "INSERT OR IGNORE INTO approvers (agent_id, channel_id, user_id, display_name, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                (agent_row, channel_id, user_id, display_name, crate::now_ms()),
            )?;
            if inserted == 0 {
                return Err(StoreError::Duplicate {
                    what: "approver",
                    name: format!("{user_id} on {channel} for {agent}"),
                });
            }
            let id = tx.last_insert_rowid();
            let mut entry = self.audit_entry("approver.add");
            entry.agent = Some(agent.to_string());
            entry.decision = Some("added".into());
            entry.detail = Some(serde_json::json!({
                "channel": channel, "user": user_id, "name": display_name,
            }));
            self.append_in(tx, &entry)?;
            let raw = tx.query_row(
                &format!(
                    "SELECT {APPROVER_COLUMNS} FROM approvers p JOIN agents a ON a.id = p.agent_id
                     JOIN channels c ON c.id = p.channel_id WHERE p.id = ?1"
                ),
                [id],
                approver_from_row,
            )?;
            decode_approver(raw)
        })
    }

    pub fn remove_approver(&self, agent: &AgentName, channel: &str, user_id: &str) -> Result<()> {
        self.write(|tx| {
            let (channel_id, _) = channel_row(tx, channel)?;
            let agent_row = agent_id(tx, agent)?;
            let removed = tx.execute(
                "DELETE FROM approvers WHERE agent_id = ?1 AND channel_id = ?2 AND user_id = ?3",
                (agent_row, channel_id, user_id),
            )?;
            if removed == 0 {
                return Err(StoreError::NotFound {
                    what: "approver",
                    name: format!("{user_id} on {channel} for {agent}"),
                });
            }
            let mut entry = self.audit_entry("approver.remove");
            entry.agent = Some(agent.to_string());
            entry.decision = Some("removed".into());
            entry.detail = Some(serde_json::json!({ "channel": channel, "user": user_id }));
            self.append_in(tx, &entry)?;
            Ok(())
        })
    }

    /// Approvers of one agent, or of every agent.
    pub fn list_approvers(&self, agent: Option<&AgentName>) -> Result<Vec<ApproverRecord>> {
        let agent = agent.map(|a| a.to_string());
        self.read(|tx| {
            let mut stmt = tx.prepare(&format!(
                "SELECT {APPROVER_COLUMNS} FROM approvers p JOIN agents a ON a.id = p.agent_id
                 JOIN channels c ON c.id = p.channel_id
                 WHERE ?1 IS NULL OR a.name = ?1 ORDER BY a.name, c.name, p.id"
            ))?;
            let rows = stmt
                .query_map([&agent], approver_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter().map(decode_approver).collect()
        })
    }

    /// The approver `user_id` of `channel` for `agent`, if listed.
    pub fn find_approver(
        &self,
        agent: &AgentName,
        channel: &str,
        user_id: &str,
    ) -> Result<Option<ApproverRecord>> {
        self.read(|tx| {
            let raw = tx
                .query_row(
                    &format!(
                        "SELECT {APPROVER_COLUMNS} FROM approvers p JOIN agents a ON a.id = p.agent_id
                         JOIN channels c ON c.id = p.channel_id
                         WHERE a.name = ?1 AND c.name = ?2 AND p.user_id = ?3"
                    ),
                    (agent.as_str(), channel, user_id),
                    approver_from_row,
                )
                .optional()?;
            raw.map(decode_approver).transpose()
        })
    }

    /// Records a card for `approval_id` in `chat` of `channel` (once: a second call
    /// returns the first card, whatever token it was given).
    pub fn add_card(
        &self,
        approval_id: &str,
        channel: &str,
        chat: &str,
        token: &str,
    ) -> Result<ApprovalCard> {
        self.write(|tx| {
            let (channel_id, _) = channel_row(tx, channel)?;
            tx.execute(
                "INSERT OR IGNORE INTO approval_cards (approval_id, channel_id, chat, token, posted_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                (approval_id, channel_id, chat, token, crate::now_ms()),
            )?;
            Ok(tx.query_row(
                &format!(
                    "SELECT {CARD_COLUMNS} FROM approval_cards k JOIN channels c ON c.id = k.channel_id
                     WHERE k.approval_id = ?1 AND k.channel_id = ?2 AND k.chat = ?3"
                ),
                (approval_id, channel_id, chat),
                card_from_row,
            )?)
        })
    }

    /// Records the platform's reference of a posted card (for later edits).
    pub fn set_card_message(&self, card_id: i64, message: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE approval_cards SET message = ?1 WHERE id = ?2",
                (message, card_id),
            )?;
            Ok(())
        })
    }

    /// Marks a card as edited to its final state.
    pub fn finish_card(&self, card_id: i64, state: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE approval_cards SET finished = ?1 WHERE id = ?2",
                (state, card_id),
            )?;
            Ok(())
        })
    }

    pub fn cards_of(&self, approval_id: &str) -> Result<Vec<ApprovalCard>> {
        self.read(|tx| {
            let mut stmt = tx.prepare(&format!(
                "SELECT {CARD_COLUMNS} FROM approval_cards k JOIN channels c ON c.id = k.channel_id
                 WHERE k.approval_id = ?1 ORDER BY k.id"
            ))?;
            let cards = stmt
                .query_map([approval_id], card_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(cards)
        })
    }

    /// The card whose buttons carry `token`, with its approval.
    pub fn card_by_token(&self, token: &str) -> Result<Option<(ApprovalCard, Approval)>> {
        let card = self.read(|tx| {
            Ok(tx
                .query_row(
                    &format!(
                        "SELECT {CARD_COLUMNS} FROM approval_cards k JOIN channels c ON c.id = k.channel_id
                         WHERE k.token = ?1"
                    ),
                    [token],
                    card_from_row,
                )
                .optional()?)
        })?;
        match card {
            Some(card) => {
                let approval = self.get_approval(&card.approval_id)?;
                Ok(Some((card, approval)))
            }
            None => Ok(None),
        }
    }

    /// Cards not yet edited whose approval is no longer pending (at most `limit`).
    pub fn cards_to_finish(&self, limit: usize) -> Result<Vec<ApprovalCard>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|tx| {
            let mut stmt = tx.prepare(&format!(
                "SELECT {CARD_COLUMNS} FROM approval_cards k JOIN channels c ON c.id = k.channel_id
                 JOIN approvals p ON p.id = k.approval_id
                 WHERE k.finished IS NULL AND p.status != 'pending' ORDER BY k.id LIMIT ?1"
            ))?;
            let cards = stmt
                .query_map([limit], card_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(cards)
        })
    }
}
