//! Sessions, inbound messages and replies as the host sees them.
//!
//! A message is accepted (stored `pending`) before anything else happens, becomes
//! `delivered` each time it is handed to a runner (counting attempts), and `answered`
//! only in the transaction that stores its one reply. Anything not `answered` is
//! delivered again after a crash.

use palisade_policy::AgentName;
use serde::Serialize;

/// Where an inbound message is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    Pending,
    Delivered,
    Answered,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Pending => "pending",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Answered => "answered",
        }
    }
}

impl std::str::FromStr for MessageStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(MessageStatus::Pending),
            "delivered" => Ok(MessageStatus::Delivered),
            "answered" => Ok(MessageStatus::Answered),
            other => Err(format!("unknown message status {other:?}")),
        }
    }
}

/// One conversation of one agent.
#[derive(Clone, Debug, Serialize)]
pub struct SessionRecord {
    pub id: i64,
    pub agent: AgentName,
    pub conversation: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// The runner's conversation history (opaque to the store): a JSON array.
    pub history: serde_json::Value,
    pub messages: i64,
}

/// A message to an agent.
#[derive(Clone, Debug, Serialize)]
pub struct InboundMessage {
    pub id: i64,
    pub session_id: i64,
    pub agent: AgentName,
    pub conversation: String,
    pub channel: String,
    pub text: String,
    pub status: MessageStatus,
    pub attempts: i64,
    pub created_at_ms: i64,
    /// Set when another agent sent it.
    pub origin: Option<MessageOrigin>,
}

/// Where a message from another agent came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct MessageOrigin {
    /// The agent that sent it.
    pub from: AgentName,
    /// Every agent the conversation passed through to get here, oldest first, ending
    /// with `from` (the hop count is its length; a name twice is a cycle).
    pub chain: Vec<AgentName>,
}

/// The one answer to an inbound message.
#[derive(Clone, Debug, Serialize)]
pub struct ReplyRecord {
    pub id: i64,
    pub inbound_id: i64,
    pub text: String,
    /// The host gave up on the message (e.g. the runner kept crashing) and `text` says why.
    pub is_error: bool,
    pub created_at_ms: i64,
    pub delivered: bool,
}

/// A message the agent sent to the conversation during its turn on `inbound_id`
/// (before or besides its reply).
#[derive(Clone, Debug, Serialize)]
pub struct OutboundMessage {
    pub id: i64,
    pub inbound_id: i64,
    pub text: String,
    pub created_at_ms: i64,
    pub delivered: bool,
}

/// What [`crate::Store::accept_message`] stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Accepted {
    pub message_id: i64,
    pub session_id: i64,
}

/// What [`crate::Store::store_reply`] did.
#[derive(Clone, Debug)]
pub enum ReplyOutcome {
    /// This call stored the reply and marked the message answered.
    Stored(ReplyRecord),
    /// A reply was already stored for the message (a retried delivery); nothing changed.
    AlreadyAnswered(ReplyRecord),
}

impl ReplyOutcome {
    pub fn reply(&self) -> &ReplyRecord {
        match self {
            ReplyOutcome::Stored(reply) | ReplyOutcome::AlreadyAnswered(reply) => reply,
        }
    }
}
