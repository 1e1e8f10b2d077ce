//! Chat channels: the places people already are, as messaging channels to agents and
//! as approval surfaces.
//!
//! - [`channel`]: the [`Channel`] trait (receive messages and clicks, send messages,
//!   post an approval card, edit it everywhere once decided) and what flows through it.
//! - [`card`]: what a card says, platform-independent, and the opaque data its
//!   buttons carry.
//! - [`hub`]: what `palisade up` runs: every configured channel (retried with back-off
//!   when it cannot connect, never taking the host down), routing of messages from
//!   linked chats to agents and replies back, cards for pending approvals to each
//!   approver, decisions through the approval engine, cards edited when decided, and
//!   owner notices when a request is blocked or rate-limited.
//! - [`manage`]: adding, linking, approvers and allowed senders, for the CLI and the
//!   web UI alike.
//! - [`config`]: a stored channel (settings + sealed credentials) as a running one.
//! - One module per platform: [`slack`], [`telegram`], [`discord`].
//! - [`endpoints`]: the HTTP endpoints Slack and Discord call, signature-checked.
//! - [`http`] and [`ws`]: the small HTTP client and WebSocket connector the platform
//!   modules share; [`platform_text`]: a platform's error text without the channel's
//!   secrets, printable and bounded.

pub mod card;
pub mod channel;
pub mod config;
pub mod discord;
pub mod endpoints;
#[cfg(test)]
mod fake_api;
pub mod http;
pub mod hub;
pub mod manage;
pub mod platform_text;
pub mod replay;
pub mod slack;
pub mod telegram;
pub mod ws;

/// A mutex's guard, also after a panic elsewhere poisoned it (every map kept behind one
/// here stays consistent between statements).
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

pub use card::{CallbackData, Card};
pub use channel::{
    Channel, ChannelError, ClickAnswer, Inbound, Incoming, PlatformUser, WebhookReply,
};
pub use hub::{ChannelState, ChannelStatus, Hub};

/// Splits `text` into parts of at most `max_chars` characters, at line breaks where
/// possible (platforms cap a message's length).
pub fn split_text(text: &str, max_chars: usize) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut count = 0;
    for line in text.split_inclusive('\n') {
        let length = line.chars().count();
        if count + length > max_chars && !current.is_empty() {
            parts.push(std::mem::take(&mut current));
            count = 0;
        }
        if length > max_chars {
            let chars: Vec<char> = line.chars().collect();
            for chunk in chars.chunks(max_chars) {
                parts.push(chunk.iter().collect());
            }
            continue;
        }
        current.push_str(line);
        count += length;
    }
    if !current.trim().is_empty() || parts.is_empty() {
        parts.push(current);
    }
    parts
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_text_is_split_at_lines_and_bounded() {
        let text = format!("{}\n{}\n", "a".repeat(3000), "b".repeat(3000));
        let parts = super::split_text(&text, 4096);
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.chars().count() <= 4096));
        let long = "c".repeat(9000);
        assert!(super::split_text(&long, 4096)
            .iter()
            .all(|p| p.chars().count() <= 4096));
        assert_eq!(super::split_text("hi", 10), vec!["hi"]);
    }
}
