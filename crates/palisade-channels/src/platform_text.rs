//! What a platform says about itself (an error's text, a refused request's body), made
//! fit for an error, a log line or `channels list`.
//!
//! A platform's error text is not ours: a fake, a proxy or a platform bug can echo the
//! request back, token and all (`invalid_auth xoxb-…`), or send a megabyte of control
//! characters. Everything a platform module puts into an error passes through
//! [`Scrubber::clean`] first: the channel's own secrets (and the long parts of them) are
//! replaced, words shaped like a Slack or Telegram token are replaced whoever's they are,
//! control and invisible formatting characters become spaces, and the result is cut to
//! [`MAX_CHARS`]. Pure, so it is tested here without a network.

use palisade_policy::SecretValue;
use std::sync::Arc;

/// Characters of a platform's text kept in an error.
pub const MAX_CHARS: usize = 200;
/// What a secret is replaced with.
const REDACTED: &str = "[redacted]";
/// A part of a secret (between `-`, `:`, `.`…) this long is a secret on its own: a
/// platform may echo only the part after the `xoxb-` or the bot id.
const SECRET_PART_CHARS: usize = 8;
/// Slack's token prefixes (bot, user, app-level, refresh, legacy workspace tokens).
const SLACK_TOKEN_PREFIXES: &[&str] =
    &["xoxb-", "xoxp-", "xoxa-", "xoxe", "xoxr-", "xoxs-", "xapp-"];

/// The secrets one channel holds, to be kept out of what its platform says.
#[derive(Clone, Default)]
pub struct Scrubber {
    /// Longest first, so a secret is replaced whole before any of its parts.
    needles: Arc<Vec<SecretValue>>,
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrubber")
            .field("secrets", &self.needles.len())
            .finish()
    }
}

impl Scrubber {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a SecretValue>) -> Scrubber {
        let mut needles: Vec<SecretValue> = Vec::new();
        for secret in secrets {
            let whole = secret.expose();
            if whole.is_empty() {
                continue;
            }
            needles.push(secret.clone());
            for part in whole.split(|c: char| !c.is_ascii_alphanumeric()) {
                if part.chars().count() >= SECRET_PART_CHARS && part != whole {
                    needles.push(SecretValue::new(part.to_string()));
                }
            }
        }
        needles.sort_by_key(|needle| std::cmp::Reverse(needle.expose().len()));
        Scrubber {
            needles: Arc::new(needles),
        }
    }

    /// `text` without the secrets, token-shaped words and unprintable characters, at
    /// most [`MAX_CHARS`] characters (`…` when cut).
    pub fn clean(&self, text: &str) -> String {
        let mut text = text.to_string();
        for needle in self.needles.iter() {
            if text.contains(needle.expose()) {
                text = text.replace(needle.expose(), REDACTED);
            }
        }
        let text = redact_token_shapes(&text);
        let printable: String = text
            .chars()
            .map(|c| if is_unprintable(c) { ' ' } else { c })
            .collect();
        crate::card::cut(printable.trim(), MAX_CHARS)
    }
}

/// Control characters, and those that render as nothing or reorder text (the list the
/// approval cards use).
fn is_unprintable(c: char) -> bool {
    c.is_control() || palisade_approvals::summary::is_invisible(c)
}

/// Words that look like a Slack token (`xoxb-…`, `xapp-…`) or a Telegram bot token
/// (`123456:` and 30 or more characters), replaced.
fn redact_token_shapes(text: &str) -> String {
    let is_word = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.');
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if looks_like_token(word) {
            out.push_str(REDACTED);
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if is_word(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

fn looks_like_token(word: &str) -> bool {
    let lower = word.to_ascii_lowercase();
    if SLACK_TOKEN_PREFIXES
        .iter()
        .any(|prefix| lower.starts_with(prefix) && word.len() > prefix.len() + 4)
    {
        return true;
    }
    match word.split_once(':') {
        Some((bot, rest)) => {
            !bot.is_empty()
                && bot.bytes().all(|b| b.is_ascii_digit())
                && rest.len() >= 30
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> SecretValue {
        SecretValue::new(text.to_string())
    }

    #[test]
    fn the_channels_own_secrets_and_their_parts_are_replaced() {
        let bot = secret("xoxb-SLACKBOTSECRET-1111");
        let signing = secret("8f742231b10e8888abcd99yyyzzz85a5");
        let scrubber = Scrubber::new([&bot, &signing]);
        let said = scrubber.clean("invalid_auth xoxb-SLACKBOTSECRET-1111");
        assert_eq!(said, "invalid_auth [redacted]");
        // Only a part echoed, or the secret glued to other text.
        let said = scrubber.clean("token=SLACKBOTSECRET; sig:8f742231b10e8888abcd99yyyzzz85a5!");
        assert!(!said.contains("SLACKBOTSECRET"), "{said}");
        assert!(!said.contains("8f742231b10e8888"), "{said}");
        assert!(said.contains("token=[redacted]"), "{said}");
    }

    #[test]
    fn token_shaped_words_go_whoever_they_belong_to() {
        let scrubber = Scrubber::default();
        for token in [
            "xoxb-1234-5678-abcdefgh",
            "xapp-1-A01-2345-abcdef",
            "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw",
        ] {
            let said = scrubber.clean(&format!("bad token \"{token}\", try again"));
            assert!(!said.contains(token), "{said}");
            assert!(said.contains("[redacted]"), "{said}");
        }
        // Ordinary words and ids stay.
        assert_eq!(
            scrubber.clean("Bad Request: chat not found (chat 12345)"),
            "Bad Request: chat not found (chat 12345)"
        );
    }

    #[test]
    fn the_text_is_printable_and_bounded() {
        let scrubber = Scrubber::default();
        let said = scrubber.clean("line\nbreak\u{1b}[31mred\u{202E}gnp.exe\u{0}");
        assert!(said.chars().all(|c| !is_unprintable(c)), "{said:?}");
        assert!(said.contains("line break"), "{said:?}");
        let said = scrubber.clean(&"é".repeat(10_000));
        assert_eq!(said.chars().count(), MAX_CHARS);
        assert!(said.ends_with('…'));
    }

    #[test]
    fn a_secret_cut_at_the_limit_leaves_nothing_of_itself() {
        let token = secret("xoxb-SLACKBOTSECRET-1111");
        let scrubber = Scrubber::new([&token]);
        // The secret straddles where the text is cut: replaced before the cut.
        let text = format!("{}{}", "x".repeat(MAX_CHARS - 5), token.expose());
        let said = scrubber.clean(&text);
        assert!(!said.contains("xoxb-SLA"), "{said}");
    }
}
