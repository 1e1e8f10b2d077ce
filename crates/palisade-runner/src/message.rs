//! The conversation: what the session stores and what providers translate.
//!
//! The shape follows the Anthropic Messages API (content blocks; tool results are
//! user-side blocks naming the call they answer) because it is the richer of the two
//! wire formats; the OpenAI-compatible provider converts to and from it. The types
//! are serde-serializable so the host can persist a session's history.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Who said it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

/// One piece of a message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlock {
    Text {
        text: String,
    },
    /// The model asks for tool `name` to run with `input`.
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    /// The answer to the tool call `tool_use_id`.
    ToolResult {
        tool_use_id: String,
        content: String,
        #[serde(default)]
        is_error: bool,
    },
}

/// One message in the history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: Vec<ContentBlock>,
}

impl Message {
    /// A user message with plain text.
    pub fn user(text: impl Into<String>) -> Message {
        Message {
            role: Role::User,
            content: vec![ContentBlock::Text { text: text.into() }],
        }
    }

    /// An assistant message with plain text.
    pub fn assistant(text: impl Into<String>) -> Message {
        Message {
            role: Role::Assistant,
            content: vec![ContentBlock::Text { text: text.into() }],
        }
    }

    /// The text blocks joined, without tool calls or results.
    pub fn text(&self) -> String {
        let mut text = String::new();
        for block in &self.content {
            if let ContentBlock::Text { text: part } = block {
                text.push_str(part);
            }
        }
        text
    }

    /// Whether this message starts a turn: a user message that is not only tool
    /// results. Compaction cuts history only here, so a tool call is never separated
    /// from its result.
    pub fn starts_turn(&self) -> bool {
        self.role == Role::User
            && !self
                .content
                .iter()
                .any(|block| matches!(block, ContentBlock::ToolResult { .. }))
    }
}

/// Tokens counted by the provider.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl Usage {
    /// Adds `other` to this total.
    pub fn add(&mut self, other: Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
    }
}
