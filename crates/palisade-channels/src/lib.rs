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
    split_text_measured(text, max_chars, |_| 1)
}

/// A character's length in UTF-16 code units, as Telegram counts a message's length
/// (an emoji outside the Basic Multilingual Plane is two).
pub fn utf16_units(c: char) -> usize {
    c.len_utf16()
}

/// Splits `text` into parts of at most `max` units as `units` counts each character
/// (one for Slack and Discord, which count code points; [`utf16_units`] for
/// Telegram), at line breaks where possible.
pub fn split_text_measured(text: &str, max: usize, units: fn(char) -> usize) -> Vec<String> {
    let max = max.max(2);
    let measure = |text: &str| text.chars().map(units).sum::<usize>();
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut count = 0;
    for line in text.split_inclusive('\n') {
        let length = measure(line);
        if count + length > max && !current.is_empty() {
            parts.push(std::mem::take(&mut current));
            count = 0;
        }
        if length > max {
            let mut chunk = String::new();
            let mut used = 0;
            for c in line.chars() {
                if used + units(c) > max {
                    parts.push(std::mem::take(&mut chunk));
                    used = 0;
                }
                chunk.push(c);
                used += units(c);
            }
            if !chunk.is_empty() {
                parts.push(chunk);
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

/// `text` cut to at most `max` units as `units` counts each character (no `…`).
pub fn cut_measured(text: &str, max: usize, units: fn(char) -> usize) -> String {
    let mut used = 0;
    text.chars()
        .take_while(|c| {
            used += units(*c);
            used <= max
        })
        .collect()
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

    /// Telegram counts UTF-16 code units: 3,000 emoji are 6,000 of them, too many for
    /// one message of 4,096, though only 3,000 characters.
    #[test]
    fn emoji_count_double_where_the_platform_counts_utf16() {
        use super::{cut_measured, split_text_measured, utf16_units};
        let emoji = "\u{1F600}".repeat(3000);
        let parts = split_text_measured(&emoji, 4096, utf16_units);
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.encode_utf16().count() <= 4096));
        assert_eq!(parts.concat(), emoji);
        let mixed = format!("{}\n{}\n", "a".repeat(4000), "\u{1F600}".repeat(100));
        let parts = split_text_measured(&mixed, 4096, utf16_units);
        assert!(parts.iter().all(|p| p.encode_utf16().count() <= 4096));
        assert_eq!(parts.concat(), mixed);
        let cut = cut_measured(&emoji, 4095, utf16_units);
        assert_eq!(cut.encode_utf16().count(), 4094);
        assert_eq!(cut_measured("abc", 10, utf16_units), "abc");
    }
}
