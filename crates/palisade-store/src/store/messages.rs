//! Sessions, the durable inbound queue and replies.
//!
//! These rows are traffic, not configuration: writing them neither raises
//! `config_version` nor appends to the audit chain, so a busy agent never makes the
//! gateway reload its policy.

use super::agents::{agent_id, parse_agent_name};
use super::{corrupt, Store};
use crate::messages::{
    Accepted, InboundMessage, MessageOrigin, OutboundMessage, ReplyOutcome, ReplyRecord,
    SessionRecord,
};
use crate::{Result, StoreError};
use palisade_policy::AgentName;
use rusqlite::{OptionalExtension, Transaction};

const MESSAGE_COLUMNS: &str = "m.id, m.session_id, a.name, s.conversation, m.channel, m.text, \
     m.status, m.attempts, m.created_at_ms, m.origin";
const MESSAGE_FROM: &str = "inbound_messages m JOIN sessions s ON s.id = m.session_id \
     JOIN agents a ON a.id = s.agent_id";

const SESSION_COLUMNS: &str = "s.id, a.name, s.conversation, s.created_at_ms, s.updated_at_ms, \
     s.history, (SELECT COUNT(*) FROM inbound_messages m WHERE m.session_id = s.id)";

const REPLY_COLUMNS: &str = "id, inbound_id, text, is_error, created_at_ms, delivered";

const OUTBOUND_COLUMNS: &str = "o.id, o.inbound_id, o.text, o.created_at_ms, o.delivered";

/// Most messages an agent may send to the conversation while handling one message: a
/// runaway loop is stopped here, not by whoever reads the chat.
pub const MAX_OUTBOUND_PER_MESSAGE: i64 = 100;

/// Most bytes of text those messages may hold together: each may be as large as a
/// message, but 100 of those would put 25 MiB in the database per message handled.
pub const MAX_OUTBOUND_BYTES_PER_MESSAGE: i64 = 1 << 20;

fn outbound_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<OutboundMessage> {
    Ok(OutboundMessage {
        id: row.get(0)?,
        inbound_id: row.get(1)?,
        text: row.get(2)?,
        created_at_ms: row.get(3)?,
        delivered: row.get(4)?,
    })
}

type RawMessage = (
    i64,
    i64,
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    Option<String>,
);

fn message_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawMessage> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
        row.get(8)?,
        row.get(9)?,
    ))
}

fn decode_message(raw: RawMessage) -> Result<InboundMessage> {
    let (
        id,
        session_id,
        agent,
        conversation,
        channel,
        text,
        status,
        attempts,
        created_at_ms,
        origin,
    ) = raw;
    let origin = origin
        .map(|text| serde_json::from_str::<MessageOrigin>(&text))
        .transpose()
        .map_err(|e| corrupt("message origin", e))?;
    Ok(InboundMessage {
        id,
        session_id,
        agent: parse_agent_name(&agent)?,
        conversation,
        channel,
        text,
        status: status
            .parse()
            .map_err(|e: String| corrupt("message status", e))?,
        attempts,
        created_at_ms,
        origin,
    })
}

type RawSession = (i64, String, String, i64, i64, String, i64);

fn session_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawSession> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
    ))
}

fn decode_session(raw: RawSession) -> Result<SessionRecord> {
    let (id, agent, conversation, created_at_ms, updated_at_ms, history, messages) = raw;
    Ok(SessionRecord {
        id,
        agent: parse_agent_name(&agent)?,
        conversation,
        created_at_ms,
        updated_at_ms,
        history: serde_json::from_str(&history).map_err(|e| corrupt("session history", e))?,
        messages,
    })
}

fn reply_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ReplyRecord> {
    Ok(ReplyRecord {
        id: row.get(0)?,
        inbound_id: row.get(1)?,
        text: row.get(2)?,
        is_error: row.get(3)?,
        created_at_ms: row.get(4)?,
        delivered: row.get(5)?,
    })
}

fn reply_in(tx: &Transaction<'_>, message_id: i64) -> Result<Option<ReplyRecord>> {
    Ok(tx
        .query_row(
            &format!("SELECT {REPLY_COLUMNS} FROM outbound_replies WHERE inbound_id = ?1"),
            [message_id],
            reply_from_row,
        )
        .optional()?)
}

fn message_in(tx: &Transaction<'_>, message_id: i64) -> Result<InboundMessage> {
    let raw = tx
        .query_row(
            &format!("SELECT {MESSAGE_COLUMNS} FROM {MESSAGE_FROM} WHERE m.id = ?1"),
            [message_id],
            message_from_row,
        )
        .optional()?
        .ok_or_else(|| StoreError::NotFound {
            what: "message",
            name: message_id.to_string(),
        })?;
    decode_message(raw)
}

/// Conversation keys name a chat, a thread or a CLI conversation: one printable line.
fn validate_conversation(conversation: &str) -> Result<()> {
    if conversation.is_empty()
        || conversation.len() > 200
        || conversation.chars().any(char::is_control)
    {
        return Err(StoreError::Invalid(format!(
            "conversation key {conversation:?} is invalid: use 1-200 printable characters"
        )));
    }
    Ok(())
}

impl Store {
    /// Stores a message for `agent` in the session of `conversation` (created on first
    /// use), in one transaction: once this returns, the message survives any crash.
    pub fn accept_message(
        &self,
        agent: &AgentName,
        conversation: &str,
        channel: &str,
        text: &str,
    ) -> Result<Accepted> {
        validate_conversation(conversation)?;
        if text.trim().is_empty() {
            return Err(StoreError::Invalid(
                "the message is empty; write something for the agent to answer".into(),
            ));
        }
        self.write(|tx| {
            let agent_id = agent_id(tx, agent)?;
            let now = crate::now_ms();
            tx.execute(
                "INSERT INTO sessions (agent_id, conversation, created_at_ms, updated_at_ms)
                 VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT(agent_id, conversation) DO UPDATE SET updated_at_ms = excluded.updated_at_ms",
                (agent_id, conversation, now),
            )?;
            let session_id: i64 = tx.query_row(
                "SELECT id FROM sessions WHERE agent_id = ?1 AND conversation = ?2",
                (agent_id, conversation),
                |row| row.get(0),
            )?;
            tx.execute(
                "INSERT INTO inbound_messages (session_id, channel, text, status, attempts, created_at_ms)
                 VALUES (?1, ?2, ?3, 'pending', 0, ?4)",
                (session_id, channel, text, now),
            )?;
            Ok(Accepted {
                message_id: tx.last_insert_rowid(),
                session_id,
            })
        })
    }

    /// Stores a message one agent sends another (`origin.from` → `to`), in the session
    /// `to` keeps with that sender. `key` makes it idempotent: a retried turn sending the
    /// same message gets the first one back (`false`: nothing new was stored).
    pub fn accept_agent_message(
        &self,
        to: &AgentName,
        origin: &MessageOrigin,
        key: &str,
        text: &str,
    ) -> Result<(Accepted, bool)> {
        if text.trim().is_empty() {
            return Err(StoreError::Invalid("the message is empty".into()));
        }
        let conversation = format!("agent:{}", origin.from);
        let origin_json = serde_json::to_string(origin)
            .map_err(|e| StoreError::Invalid(format!("message origin cannot be encoded: {e}")))?;
        self.write(|tx| {
            let existing: Option<(i64, i64)> = tx
                .query_row(
                    "SELECT id, session_id FROM inbound_messages WHERE origin_key = ?1",
                    [key],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?;
            if let Some((message_id, session_id)) = existing {
                return Ok((
                    Accepted {
                        message_id,
                        session_id,
                    },
                    false,
                ));
            }
            let agent_id = agent_id(tx, to)?;
            let now = crate::now_ms();
            tx.execute(
                "INSERT INTO sessions (agent_id, conversation, created_at_ms, updated_at_ms)
                 VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT(agent_id, conversation) DO UPDATE SET updated_at_ms = excluded.updated_at_ms",
                (agent_id, &conversation, now),
            )?;
            let session_id: i64 = tx.query_row(
                "SELECT id FROM sessions WHERE agent_id = ?1 AND conversation = ?2",
                (agent_id, &conversation),
                |row| row.get(0),
            )?;
            tx.execute(
                "INSERT INTO inbound_messages (session_id, channel, text, status, attempts, created_at_ms, origin, origin_key)
                 VALUES (?1, 'agent', ?2, 'pending', 0, ?3, ?4, ?5)",
                (session_id, text, now, &origin_json, key),
            )?;
            Ok((
                Accepted {
                    message_id: tx.last_insert_rowid(),
                    session_id,
                },
                true,
            ))
        })
    }

    pub fn get_message(&self, message_id: i64) -> Result<InboundMessage> {
        self.read(|tx| message_in(tx, message_id))
    }

    /// The oldest message of `agent` that has no reply yet (pending or delivered).
    pub fn next_unanswered(&self, agent: &AgentName) -> Result<Option<InboundMessage>> {
        self.read(|tx| {
            let raw = tx
                .query_row(
                    &format!(
                        "SELECT {MESSAGE_COLUMNS} FROM {MESSAGE_FROM}
                         WHERE a.name = ?1 AND m.status IN ('pending', 'delivered') ORDER BY m.id LIMIT 1"
                    ),
                    [agent.as_str()],
                    message_from_row,
                )
                .optional()?;
            raw.map(decode_message).transpose()
        })
    }

    /// The oldest message of `agent` that is the first unanswered one of its session,
    /// skipping the sessions in `busy` (handled elsewhere right now). A session's
    /// messages are thus handed out one at a time and in order, while different
    /// sessions of one agent may be handled side by side. People's messages go before
    /// other agents' (a session holds only one kind), so another agent's burst of
    /// messages cannot keep the agent's own people waiting behind it. The status is
    /// matched with `IN` so the status index finds the few unanswered rows and answered
    /// history costs nothing.
    pub fn next_unanswered_excluding(
        &self,
        agent: &AgentName,
        busy: &[i64],
    ) -> Result<Option<InboundMessage>> {
        let busy = serde_json::to_string(busy)
            .map_err(|e| StoreError::Invalid(format!("session list cannot be encoded: {e}")))?;
        self.read(|tx| {
            let raw = tx
                .query_row(
                    &format!(
                        "SELECT {MESSAGE_COLUMNS} FROM {MESSAGE_FROM}
                         WHERE a.name = ?1 AND m.status IN ('pending', 'delivered')
                           AND m.session_id NOT IN (SELECT value FROM json_each(?2))
                           AND m.id = (SELECT MIN(first.id) FROM inbound_messages first
                                       WHERE first.session_id = m.session_id
                                         AND first.status IN ('pending', 'delivered'))
                         ORDER BY (m.origin IS NOT NULL), m.id LIMIT 1"
                    ),
                    (agent.as_str(), busy),
                    message_from_row,
                )
                .optional()?;
            raw.map(decode_message).transpose()
        })
    }

    /// Agents with at least one unanswered message (to wake after a restart).
    pub fn agents_with_unanswered(&self) -> Result<Vec<AgentName>> {
        self.read(|tx| {
            let mut stmt = tx.prepare(&format!(
                "SELECT DISTINCT a.name FROM {MESSAGE_FROM} WHERE m.status IN ('pending', 'delivered') ORDER BY a.name"
            ))?;
            let names = stmt
                .query_map([], |row| row.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            names.iter().map(|name| parse_agent_name(name)).collect()
        })
    }

    /// Records a hand-over to a runner and returns the message with its new attempt
    /// count. An answered message is returned unchanged.
    pub fn mark_delivered(&self, message_id: i64) -> Result<InboundMessage> {
        self.write(|tx| {
            tx.execute(
                "UPDATE inbound_messages SET status = 'delivered', attempts = attempts + 1
                 WHERE id = ?1 AND status != 'answered'",
                [message_id],
            )?;
            message_in(tx, message_id)
        })
    }

    /// Stores the reply to `message_id`, marks it answered and (for a real reply)
    /// replaces the session's history, all in one transaction. A second reply to the
    /// same message changes nothing and returns the first one.
    pub fn store_reply(
        &self,
        message_id: i64,
        text: &str,
        history: Option<&serde_json::Value>,
        is_error: bool,
    ) -> Result<ReplyOutcome> {
        let history = history
            .map(|value| {
                if !value.is_array() {
                    return Err(StoreError::Invalid(
                        "session history must be a JSON array".into(),
                    ));
                }
                serde_json::to_string(value)
                    .map_err(|e| StoreError::Invalid(format!("history cannot be encoded: {e}")))
            })
            .transpose()?;
        self.write(|tx| {
            let message = message_in(tx, message_id)?;
            if let Some(existing) = reply_in(tx, message_id)? {
                return Ok(ReplyOutcome::AlreadyAnswered(existing));
            }
            let now = crate::now_ms();
            tx.execute(
                "INSERT INTO outbound_replies (inbound_id, text, is_error, created_at_ms, delivered)
                 VALUES (?1, ?2, ?3, ?4, 0)",
                (message_id, text, is_error, now),
            )?;
            tx.execute(
                "UPDATE inbound_messages SET status = 'answered' WHERE id = ?1",
                [message_id],
            )?;
            match &history {
                // Not over a reset made after the message came in: that turn began with
                // the history the person had just thrown away (a poisoned conversation
                // came back whole once the running turn answered).
                Some(history) => tx.execute(
                    "UPDATE sessions SET history = CASE
                         WHEN reset_after_message >= ?4 THEN history
                         ELSE ?1 END,
                         updated_at_ms = ?2
                     WHERE id = ?3",
                    (history, now, message.session_id, message.id),
                )?,
                None => tx.execute(
                    "UPDATE sessions SET updated_at_ms = ?1 WHERE id = ?2",
                    (now, message.session_id),
                )?,
            };
            let reply = reply_in(tx, message_id)?.ok_or_else(|| {
                StoreError::Invalid("the reply just stored cannot be read back".into())
            })?;
            Ok(ReplyOutcome::Stored(reply))
        })
    }

    /// Stores a message the agent sends to the conversation while handling
    /// `message_id`. Returns it and whether it is new: a delivery retried after a crash
    /// that sends the same text again gets the stored one back (`false`), so a channel
    /// shows it once. Refused once the message is answered or the per-message limit
    /// ([`MAX_OUTBOUND_PER_MESSAGE`]) is reached.
    pub fn store_outbound_message(
        &self,
        message_id: i64,
        text: &str,
    ) -> Result<(OutboundMessage, bool)> {
        if text.trim().is_empty() {
            return Err(StoreError::Invalid("the message is empty".into()));
        }
        self.write(|tx| {
            let message = message_in(tx, message_id)?;
            if message.status == crate::messages::MessageStatus::Answered {
                return Err(StoreError::Invalid(format!(
                    "message {message_id} is answered already; nothing more can be sent for it"
                )));
            }
            let existing = tx
                .query_row(
                    &format!(
                        "SELECT {OUTBOUND_COLUMNS} FROM outbound_messages o
                         WHERE o.inbound_id = ?1 AND o.text = ?2 ORDER BY o.id LIMIT 1"
                    ),
                    (message_id, text),
                    outbound_from_row,
                )
                .optional()?;
            if let Some(existing) = existing {
                return Ok((existing, false));
            }
            let (count, bytes): (i64, i64) = tx.query_row(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(CAST(text AS BLOB))), 0)
                 FROM outbound_messages WHERE inbound_id = ?1",
                [message_id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )?;
            if count >= MAX_OUTBOUND_PER_MESSAGE {
                return Err(StoreError::Invalid(format!(
                    "at most {MAX_OUTBOUND_PER_MESSAGE} messages may be sent while handling one message"
                )));
            }
            let adding = i64::try_from(text.len()).unwrap_or(i64::MAX);
            if bytes.saturating_add(adding) > MAX_OUTBOUND_BYTES_PER_MESSAGE {
                return Err(StoreError::Invalid(format!(
                    "the messages sent while handling one message may hold at most {} KiB of text together; {} KiB are sent already",
                    MAX_OUTBOUND_BYTES_PER_MESSAGE / 1024,
                    bytes / 1024
                )));
            }
            tx.execute(
                "INSERT INTO outbound_messages (inbound_id, text, created_at_ms, delivered)
                 VALUES (?1, ?2, ?3, 0)",
                (message_id, text, crate::now_ms()),
            )?;
            let id = tx.last_insert_rowid();
            let stored = tx.query_row(
                &format!("SELECT {OUTBOUND_COLUMNS} FROM outbound_messages o WHERE o.id = ?1"),
                [id],
                outbound_from_row,
            )?;
            Ok((stored, true))
        })
    }

    /// Messages the agent sent while handling `message_id`, in order.
    pub fn outbound_messages(&self, message_id: i64) -> Result<Vec<OutboundMessage>> {
        self.read(|tx| {
            let mut stmt = tx.prepare(&format!(
                "SELECT {OUTBOUND_COLUMNS} FROM outbound_messages o WHERE o.inbound_id = ?1 ORDER BY o.id"
            ))?;
            let rows = stmt
                .query_map([message_id], outbound_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// Messages the agent sent in session `session_id`, in order.
    pub fn session_outbound_messages(&self, session_id: i64) -> Result<Vec<OutboundMessage>> {
        self.read(|tx| {
            let mut stmt = tx.prepare(&format!(
                "SELECT {OUTBOUND_COLUMNS} FROM outbound_messages o
                 JOIN inbound_messages m ON m.id = o.inbound_id
                 WHERE m.session_id = ?1 ORDER BY o.id"
            ))?;
            let rows = stmt
                .query_map([session_id], outbound_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    pub fn get_reply(&self, message_id: i64) -> Result<Option<ReplyRecord>> {
        self.read(|tx| reply_in(tx, message_id))
    }

    /// Marks the reply to `message_id` as handed to its channel.
    /// Replies stored but not yet delivered to messages that came in on `channel` (a
    /// chat channel's label), oldest first, with the conversation they belong to: what
    /// a channel still owes its chats, e.g. after a restart. At most `limit`.
    pub fn undelivered_replies(
        &self,
        channel: &str,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<(String, ReplyRecord)>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|tx| {
            let mut stmt = tx.prepare(
                "SELECT s.conversation, r.id, r.inbound_id, r.text, r.is_error, r.created_at_ms, r.delivered
                 FROM outbound_replies r JOIN inbound_messages m ON m.id = r.inbound_id
                 JOIN sessions s ON s.id = m.session_id
                 WHERE m.channel = ?1 AND r.delivered = 0 AND r.id > ?2 ORDER BY r.id LIMIT ?3",
            )?;
            let rows = stmt
                .query_map((channel, after_id, limit), |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        ReplyRecord {
                            id: row.get(1)?,
                            inbound_id: row.get(2)?,
                            text: row.get(3)?,
                            is_error: row.get(4)?,
                            created_at_ms: row.get(5)?,
                            delivered: row.get(6)?,
                        },
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    pub fn mark_reply_delivered(&self, message_id: i64) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE outbound_replies SET delivered = 1 WHERE inbound_id = ?1",
                [message_id],
            )?;
            Ok(())
        })
    }

    pub fn get_session(&self, session_id: i64) -> Result<SessionRecord> {
        self.read(|tx| {
            let raw = tx
                .query_row(
                    &format!(
                        "SELECT {SESSION_COLUMNS} FROM sessions s JOIN agents a ON a.id = s.agent_id
                         WHERE s.id = ?1"
                    ),
                    [session_id],
                    session_from_row,
                )
                .optional()?
                .ok_or_else(|| StoreError::NotFound {
                    what: "session",
                    name: session_id.to_string(),
                })?;
            decode_session(raw)
        })
    }

    /// Whether session `session_id` exists and belongs to `agent`.
    pub fn session_belongs_to(&self, session_id: i64, agent: &AgentName) -> Result<bool> {
        self.read(|tx| {
            Ok(tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM sessions s JOIN agents a ON a.id = s.agent_id
                 WHERE s.id = ?1 AND a.name = ?2)",
                (session_id, agent.as_str()),
                |row| row.get(0),
            )?)
        })
    }

    /// Sessions, most recently active first; only `agent`'s when given.
    pub fn list_sessions(&self, agent: Option<&AgentName>) -> Result<Vec<SessionRecord>> {
        self.read(|tx| {
            let mut stmt = tx.prepare(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessions s JOIN agents a ON a.id = s.agent_id
                 WHERE ?1 IS NULL OR a.name = ?1 ORDER BY s.updated_at_ms DESC, s.id DESC"
            ))?;
            let raw = stmt
                .query_map([agent.map(AgentName::as_str)], session_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            raw.into_iter().map(decode_session).collect()
        })
    }

    /// Messages of a session in order, each with its reply if it has one.
    pub fn session_messages(
        &self,
        session_id: i64,
    ) -> Result<Vec<(InboundMessage, Option<ReplyRecord>)>> {
        self.read(|tx| {
            let mut stmt = tx.prepare(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM {MESSAGE_FROM} WHERE m.session_id = ?1 ORDER BY m.id"
            ))?;
            let raw = stmt
                .query_map([session_id], message_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            raw.into_iter()
                .map(|raw| {
                    let message = decode_message(raw)?;
                    let reply = reply_in(tx, message.id)?;
                    Ok((message, reply))
                })
                .collect()
        })
    }

    /// Forgets a session's history (its messages and replies stay for the record).
    pub fn reset_session(&self, session_id: i64) -> Result<()> {
        self.write(|tx| {
            let changed = tx.execute(
                "UPDATE sessions SET history = '[]', updated_at_ms = ?1,
                     reset_after_message = (SELECT COALESCE(MAX(id), 0) FROM inbound_messages)
                 WHERE id = ?2",
                (crate::now_ms(), session_id),
            )?;
            if changed == 0 {
                return Err(StoreError::NotFound {
                    what: "session",
                    name: session_id.to_string(),
                });
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::messages::{MessageStatus, ReplyOutcome};
    use crate::{Home, Store, StoreError};
    use palisade_policy::{AgentName, Profile};

    fn store_with_agent(name: &str) -> (tempfile::TempDir, Store, AgentName) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Home::at(dir.path().join("home"))).unwrap();
        let agent = AgentName::new(name).unwrap();
        store.create_agent(&agent, Profile::Research).unwrap();
        (dir, store, agent)
    }

    #[test]
    fn accepting_creates_one_session_per_conversation() {
        let (_dir, store, agent) = store_with_agent("helper");
        let first = store.accept_message(&agent, "cli", "cli", "hello").unwrap();
        let second = store.accept_message(&agent, "cli", "cli", "again").unwrap();
        let other = store.accept_message(&agent, "web", "web", "hi").unwrap();
        assert_eq!(first.session_id, second.session_id);
        assert_ne!(first.session_id, other.session_id);
        assert!(second.message_id > first.message_id);
        let message = store.get_message(first.message_id).unwrap();
        assert_eq!(message.status, MessageStatus::Pending);
        assert_eq!(message.attempts, 0);
        assert_eq!(store.list_sessions(Some(&agent)).unwrap().len(), 2);
        assert!(store.session_belongs_to(first.session_id, &agent).unwrap());
        let stranger = AgentName::new("stranger").unwrap();
        store.create_agent(&stranger, Profile::Research).unwrap();
        assert!(!store
            .session_belongs_to(first.session_id, &stranger)
            .unwrap());
    }

    /// A reset while a turn runs stands: the turn's answer is kept, but the history it
    /// carries (begun before the reset) does not replace the empty one. A message that
    /// came in after the reset writes its history as usual.
    #[test]
    fn a_reset_during_a_turn_is_not_undone_by_its_answer() {
        let (_dir, store, agent) = store_with_agent("helper");
        let running = store.accept_message(&agent, "cli", "cli", "hello").unwrap();
        let poisoned = serde_json::json!([{"role": "user", "content": "POISON"}]);
        store.reset_session(running.session_id).unwrap();
        store
            .store_reply(running.message_id, "hi", Some(&poisoned), false)
            .unwrap();
        let session = store.get_session(running.session_id).unwrap();
        assert_eq!(
            session.history,
            serde_json::json!([]),
            "the reset was undone"
        );
        assert_eq!(
            store.get_reply(running.message_id).unwrap().unwrap().text,
            "hi"
        );

        // At once (the same millisecond, as `palisade chat`'s `/reset` and its next line).
        let next = store.accept_message(&agent, "cli", "cli", "again").unwrap();
        let fresh = serde_json::json!([{"role": "user", "content": "again"}]);
        store
            .store_reply(next.message_id, "hello again", Some(&fresh), false)
            .unwrap();
        assert_eq!(store.get_session(next.session_id).unwrap().history, fresh);
    }

    #[test]
    fn bad_input_is_refused_and_stores_nothing() {
        let (_dir, store, agent) = store_with_agent("helper");
        assert!(matches!(
            store.accept_message(&agent, "cli", "cli", "  \n"),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            store.accept_message(&agent, "", "cli", "x"),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            store.accept_message(&agent, "a\nb", "cli", "x"),
            Err(StoreError::Invalid(_))
        ));
        let unknown = AgentName::new("nobody").unwrap();
        assert!(matches!(
            store.accept_message(&unknown, "cli", "cli", "x"),
            Err(StoreError::NotFound { .. })
        ));
        assert!(store.list_sessions(None).unwrap().is_empty());
    }

    #[test]
    fn queue_order_attempts_and_one_reply_per_message() {
        let (_dir, store, agent) = store_with_agent("helper");
        let first = store.accept_message(&agent, "c", "cli", "one").unwrap();
        let second = store.accept_message(&agent, "c", "cli", "two").unwrap();
        assert_eq!(store.agents_with_unanswered().unwrap(), vec![agent.clone()]);
        let next = store.next_unanswered(&agent).unwrap().unwrap();
        assert_eq!(next.id, first.message_id);
        assert_eq!(store.mark_delivered(next.id).unwrap().attempts, 1);
        // A crash before the reply: the same message comes back, attempts go on counting.
        let again = store.next_unanswered(&agent).unwrap().unwrap();
        assert_eq!(again.id, first.message_id);
        assert_eq!(again.status, MessageStatus::Delivered);
        assert_eq!(store.mark_delivered(again.id).unwrap().attempts, 2);

        let history = serde_json::json!([{"role": "user", "content": "one"}]);
        let stored = store
            .store_reply(first.message_id, "answer", Some(&history), false)
            .unwrap();
        assert!(matches!(stored, ReplyOutcome::Stored(_)));
        let retried = store
            .store_reply(
                first.message_id,
                "second answer",
                Some(&serde_json::json!([])),
                false,
            )
            .unwrap();
        match retried {
            ReplyOutcome::AlreadyAnswered(reply) => assert_eq!(reply.text, "answer"),
            other => panic!("expected AlreadyAnswered, got {other:?}"),
        }
        let session = store.get_session(first.session_id).unwrap();
        assert_eq!(session.history, history);
        assert_eq!(session.messages, 2);
        // Answered messages are not delivered again and keep their attempt count.
        assert_eq!(
            store.mark_delivered(first.message_id).unwrap().status,
            MessageStatus::Answered
        );
        let next = store.next_unanswered(&agent).unwrap().unwrap();
        assert_eq!(next.id, second.message_id);
        store
            .store_reply(second.message_id, "gave up", None, true)
            .unwrap();
        assert!(store.next_unanswered(&agent).unwrap().is_none());
        assert!(store.agents_with_unanswered().unwrap().is_empty());
        let transcript = store.session_messages(first.session_id).unwrap();
        assert_eq!(transcript.len(), 2);
        assert!(transcript[1].1.as_ref().unwrap().is_error);
        // An error reply leaves the history as it was.
        assert_eq!(
            store.get_session(first.session_id).unwrap().history,
            history
        );
    }

    #[test]
    fn busy_sessions_are_skipped_and_each_session_stays_in_order() {
        let (_dir, store, agent) = store_with_agent("helper");
        let a1 = store.accept_message(&agent, "a", "cli", "a1").unwrap();
        let b1 = store.accept_message(&agent, "b", "cli", "b1").unwrap();
        let a2 = store.accept_message(&agent, "a", "cli", "a2").unwrap();
        let next = |busy: &[i64]| {
            store
                .next_unanswered_excluding(&agent, busy)
                .unwrap()
                .map(|m| m.id)
        };
        assert_eq!(next(&[]), Some(a1.message_id));
        // Session a is busy with a1: b1 is next, never a2 (a's order holds).
        assert_eq!(next(&[a1.session_id]), Some(b1.message_id));
        assert_eq!(next(&[a1.session_id, b1.session_id]), None);
        store.store_reply(a1.message_id, "ok", None, false).unwrap();
        assert_eq!(next(&[b1.session_id]), Some(a2.message_id));
        let other = AgentName::new("other").unwrap();
        store
            .create_agent(&other, palisade_policy::Profile::Research)
            .unwrap();
        assert_eq!(
            store
                .next_unanswered_excluding(&other, &[])
                .unwrap()
                .map(|m| m.id),
            None
        );
    }

    /// Another agent's burst of messages does not keep a person waiting behind it.
    #[test]
    fn a_persons_message_goes_before_other_agents_messages() {
        let (_dir, store, agent) = store_with_agent("helper");
        let origin = crate::messages::MessageOrigin {
            from: AgentName::new("chatty").unwrap(),
            chain: vec![AgentName::new("chatty").unwrap()],
        };
        let (from_agent, _) = store
            .accept_agent_message(&agent, &origin, "k1", "from chatty")
            .unwrap();
        let person = store
            .accept_message(&agent, "owner", "cli", "from a person")
            .unwrap();
        let next = |busy: &[i64]| {
            store
                .next_unanswered_excluding(&agent, busy)
                .unwrap()
                .map(|m| m.id)
        };
        assert_eq!(next(&[]), Some(person.message_id));
        assert_eq!(next(&[person.session_id]), Some(from_agent.message_id));
    }

    #[test]
    fn outbound_messages_are_stored_once_and_bounded() {
        let (_dir, store, agent) = store_with_agent("helper");
        let accepted = store.accept_message(&agent, "c", "cli", "one").unwrap();
        let (first, new) = store
            .store_outbound_message(accepted.message_id, "working on it")
            .unwrap();
        assert!(new);
        assert_eq!(first.inbound_id, accepted.message_id);
        // The same text again for the same message (a retried turn) is not stored twice.
        let (again, new) = store
            .store_outbound_message(accepted.message_id, "working on it")
            .unwrap();
        assert!(!new);
        assert_eq!(again.id, first.id);
        store
            .store_outbound_message(accepted.message_id, "half way")
            .unwrap();
        let texts: Vec<String> = store
            .outbound_messages(accepted.message_id)
            .unwrap()
            .into_iter()
            .map(|m| m.text)
            .collect();
        assert_eq!(texts, vec!["working on it", "half way"]);
        assert_eq!(
            store
                .session_outbound_messages(accepted.session_id)
                .unwrap()
                .len(),
            2
        );
        assert!(store
            .store_outbound_message(accepted.message_id, "  ")
            .is_err());
        for n in 2..super::MAX_OUTBOUND_PER_MESSAGE {
            store
                .store_outbound_message(accepted.message_id, &format!("note {n}"))
                .unwrap();
        }
        assert!(matches!(
            store.store_outbound_message(accepted.message_id, "one too many"),
            Err(StoreError::Invalid(_))
        ));
        store
            .store_reply(accepted.message_id, "done", None, false)
            .unwrap();
        assert!(matches!(
            store.store_outbound_message(accepted.message_id, "late"),
            Err(StoreError::Invalid(_))
        ));
    }

    #[test]
    fn messages_sent_while_handling_one_are_bounded_in_bytes() {
        let (_dir, store, agent) = store_with_agent("helper");
        let accepted = store.accept_message(&agent, "c", "cli", "go").unwrap();
        let big = "x".repeat(200 * 1024);
        for n in 0..5 {
            store
                .store_outbound_message(accepted.message_id, &format!("{n}{big}"))
                .unwrap();
        }
        let refused = store.store_outbound_message(accepted.message_id, &format!("5{big}"));
        assert!(
            matches!(refused, Err(StoreError::Invalid(_))),
            "{refused:?}"
        );
        store
            .store_outbound_message(accepted.message_id, "a short one still fits")
            .unwrap();
    }

    #[test]
    fn reset_and_agent_deletion() {
        let (_dir, store, agent) = store_with_agent("helper");
        let accepted = store.accept_message(&agent, "c", "cli", "one").unwrap();
        store
            .store_reply(
                accepted.message_id,
                "ok",
                Some(&serde_json::json!([1, 2])),
                false,
            )
            .unwrap();
        store.mark_reply_delivered(accepted.message_id).unwrap();
        assert!(
            store
                .get_reply(accepted.message_id)
                .unwrap()
                .unwrap()
                .delivered
        );
        store.reset_session(accepted.session_id).unwrap();
        assert_eq!(
            store.get_session(accepted.session_id).unwrap().history,
            serde_json::json!([])
        );
        assert!(store.reset_session(9999).is_err());
        assert!(store
            .store_reply(
                accepted.message_id,
                "x",
                Some(&serde_json::json!({})),
                false
            )
            .is_err());
        store.delete_agent(&agent).unwrap();
        assert!(store.list_sessions(None).unwrap().is_empty());
        assert!(matches!(
            store.get_message(accepted.message_id),
            Err(StoreError::NotFound { .. })
        ));
    }
}
