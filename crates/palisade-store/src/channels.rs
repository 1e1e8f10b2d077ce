//! Chat channels as stored: a channel (a Slack app, a Telegram bot, a Discord bot) with
//! its credentials sealed under the master key, the chats linked to agents, each
//! agent's approvers on a channel, and the approval cards posted there.
//!
//! Credentials are one sealed JSON object per channel (bot token, app token, signing
//! secret…), bound to the channel's name as associated data, so a sealed value copied
//! to another row does not open. Nothing here knows a platform's wire format; that is
//! `palisade-channels`.

use palisade_policy::{AgentName, SecretValue};
use serde::Serialize;

/// A configured channel, without its credentials.
#[derive(Clone, Debug, Serialize)]
pub struct ChannelRecord {
    pub id: i64,
    pub name: String,
    /// `slack`, `telegram`, `discord`.
    pub platform: String,
    /// Non-secret settings (API base URL, gateway URL, public key, what to do with
    /// unknown senders…), owned by `palisade-channels`.
    pub settings: serde_json::Value,
    pub created_at_ms: i64,
}

pub struct NewChannel {
    pub name: String,
    pub platform: String,
    pub settings: serde_json::Value,
    /// A JSON object of the channel's secrets, sealed before it is written.
    pub credentials: SecretValue,
}

/// A chat (a DM, group, channel or thread's parent) whose messages go to an agent.
#[derive(Clone, Debug, Serialize)]
pub struct ChannelLink {
    pub channel: String,
    pub chat: String,
    pub agent: AgentName,
    pub created_at_ms: i64,
}

/// A person whose decisions count for an agent's approvals, on one channel.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ApproverRecord {
    pub id: i64,
    pub agent: AgentName,
    pub channel: String,
    pub platform: String,
    /// The platform's user id (`U0123ABC`, `123456789`).
    pub user_id: String,
    pub display_name: String,
    pub created_at_ms: i64,
}

/// An approval card posted in a chat.
#[derive(Clone, Debug, Serialize)]
pub struct ApprovalCard {
    pub id: i64,
    pub approval_id: String,
    pub channel: String,
    pub chat: String,
    /// The platform's message reference once posted (`ts`, message id), for edits.
    pub message: Option<String>,
    /// The opaque token its buttons carry (never the approval id alone, so a click
    /// names a card this host posted).
    pub token: String,
    pub posted_at_ms: i64,
    /// The final state shown on the card (`approved`, `denied`, …) once edited.
    pub finished: Option<String>,
}
