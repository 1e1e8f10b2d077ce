//! A card as a Discord message: plain content (mentions disabled, so nothing an agent
//! wrote can ping anyone; link previews suppressed, so no URL it wrote is fetched by
//! Discord or shown as an embed of the page's choosing) and action rows of buttons
//! whose `custom_id` is the card's [`CallbackData`]; a closed card has no components.
//! The "deny with comment" modal is here too.

use crate::card::{CallbackData, Card};
use palisade_approvals::Button;
use serde_json::{json, Value};

/// Discord's limit on a message's content.
pub(super) const MAX_CONTENT_CHARS: usize = 2000;
/// `custom_id` prefix of the comment modal (the card's token follows).
pub(super) const COMMENT_MODAL: &str = "palisade_comment:";
pub(super) const COMMENT_INPUT: &str = "comment";
/// Message flag: no embeds (link previews) for URLs in the content.
pub(super) const SUPPRESS_EMBEDS: u64 = 1 << 2;

pub(super) use crate::card::cut;

/// Card text with Discord's markdown made literal: what an agent, a web page or a
/// stranger wrote must read on the card exactly as written, never as spoilers hiding
/// a recipient (`||…||`), a masked link (`[shown](elsewhere)`), a heading or small
/// print. Escapes backslash, `*`, `_`, `~`, `|`, backtick, `[`, `]`, `<` and `>`
/// everywhere, `#`, `-`, `+` at the start of a line (headings, subtext, lists) and the
/// `.` or `)` after a number that starts a line (an ordered list, which Discord numbers
/// again: `1. ten` then `9999. to acct_X` showed as `1.` and `2.`); Discord shows an
/// escaped character as itself and the backslash as nothing.
pub(super) fn escape_markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for line in text.split_inclusive('\n') {
        let mut at_start = true;
        // Whether everything since the line's leading blanks is digits (and some).
        let mut number = false;
        for c in line.chars() {
            let special = matches!(
                c,
                '\\' | '*' | '_' | '~' | '|' | '`' | '[' | ']' | '<' | '>'
            ) || (at_start && matches!(c, '#' | '-' | '+'))
                || (number && matches!(c, '.' | ')'));
            if special {
                out.push('\\');
            }
            out.push(c);
            number = (at_start || number) && c.is_ascii_digit();
            if !c.is_whitespace() {
                at_start = false;
            }
        }
    }
    out
}

/// `text` (an agent's reply, kept as markdown: its code blocks and emphasis are
/// meant) with every masked link outside code spelled out: `[shown](https://x)`
/// becomes `shown (https://x)`, so a link never reads as one address and leads to
/// another (an agent may repeat what a web page wrote). A link whose text is its
/// address is left as it is. Code is only what Discord shows as code: a run of
/// backticks closed by as many on the same line, or a fence (```) closed by another;
/// an unclosed one is plain text, and links after it are spelled out.
pub(super) fn unmask_links(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c == '`' {
            if let Some(code) = closed_code(rest) {
                out.push_str(&rest[..code]);
                rest = &rest[code..];
                continue;
            }
            // Unclosed: plain text, each backtick on its own.
            out.push('`');
            rest = &rest[1..];
            continue;
        }
        if c == '[' {
            if let Some((shown, target, len)) = masked_link(rest) {
                if shown.trim() == target {
                    out.push_str(&rest[..len]);
                } else {
                    out.push_str(&format!("{shown} ({target})"));
                }
                rest = &rest[len..];
                continue;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// The length in bytes of the code span or block starting `text` (a run of backticks),
/// when it is closed: a fence (three or more) by a run as long anywhere after it, a
/// shorter run by one exactly as long on the same line.
fn closed_code(text: &str) -> Option<usize> {
    let run = text.bytes().take_while(|b| *b == b'`').count();
    let after = &text[run..];
    let fence = &text[..run];
    let within = if run >= 3 {
        after
    } else {
        after.split('\n').next().unwrap_or("")
    };
    let mut from = 0;
    while let Some(at) = within[from..].find(fence) {
        let at = from + at;
        let longer = within[at + run..].starts_with('`');
        if !longer {
            return Some(run + at + run);
        }
        from = at + within[at..].bytes().take_while(|b| *b == b'`').count();
    }
    None
}

/// `[shown](target)` at the start of `text`: `shown` on one line, then the target, an
/// http(s) address (bare or in `<…>`, after any blanks, a title after it allowed): its
/// text, its address and its length in bytes.
fn masked_link(text: &str) -> Option<(&str, &str, usize)> {
    let close = text.find("](")?;
    let shown = &text[1..close];
    if shown.contains(['[', '\n']) {
        return None;
    }
    let after = &text[close + 2..];
    let end = after.find(')')?;
    let inside = after[..end].trim_start();
    let target = match inside.strip_prefix('<') {
        Some(bracketed) => &bracketed[..bracketed.find('>')?],
        None => inside.split_whitespace().next()?,
    };
    let lower = target.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return None;
    }
    Some((shown, target, close + 2 + end + 1))
}

/// A text message's body (an agent's reply: masked links spelled out).
pub(super) fn text(content: &str) -> Value {
    let content = unmask_links(content);
    json!({
        "content": cut(&content, MAX_CONTENT_CHARS),
        "allowed_mentions": {"parse": []},
        "flags": SUPPRESS_EMBEDS,
    })
}

/// The message body of a card (for create, edit and an interaction's update).
pub(super) fn card(card: &Card) -> Value {
    let buttons: Vec<Value> = card
        .buttons
        .iter()
        .map(|button| {
            let style = match button {
                Button::Once => 3,
                Button::ForHour => 1,
                Button::Always => 2,
                Button::Deny | Button::DenyWithComment => 4,
            };
            json!({
                "type": 2,
                "style": style,
                "label": button.label(),
                "custom_id": CallbackData::encode(&card.token, *button),
            })
        })
        .collect();
    let rows: Vec<Value> = buttons
        .chunks(5)
        .map(|row| json!({"type": 1, "components": row}))
        .collect();
    let text = card.text_within(MAX_CONTENT_CHARS, &|text| {
        escape_markdown(text).chars().count()
    });
    json!({
        "content": cut(&escape_markdown(&text), MAX_CONTENT_CHARS),
        "components": rows,
        "allowed_mentions": {"parse": []},
        "flags": SUPPRESS_EMBEDS,
    })
}

/// The modal asking for a denial's comment (interaction response type 9).
pub(super) fn comment_modal(token: &str) -> Value {
    json!({
        "type": 9,
        "data": {
            "custom_id": format!("{COMMENT_MODAL}{token}"),
            "title": "Deny with comment",
            "components": [{
                "type": 1,
                "components": [{
                    "type": 4,
                    "custom_id": COMMENT_INPUT,
                    "style": 2,
                    "label": "Why deny? The agent reads this.",
                    "min_length": 1,
                    "max_length": palisade_approvals::choice::MAX_COMMENT_CHARS,
                    "required": true,
                }],
            }],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An agent's reply keeps its markdown, but a masked link shows where it leads.
    #[test]
    fn masked_links_in_a_reply_show_their_address() {
        assert_eq!(
            unmask_links("see [the docs](https://evil.example/x) and **this**"),
            "see the docs (https://evil.example/x) and **this**"
        );
        assert_eq!(
            unmask_links("[good](<HTTPS://evil.example>) <@&1>"),
            "good (HTTPS://evil.example) <@&1>"
        );
        for kept in [
            "`[a](https://x.example)` stays in code",
            "``[a](https://x.example)`` too",
            "```\n[a](https://x.example)\n```",
            "[https://x.example](https://x.example)",
            "a list [1](2) and [x](mailto:y)",
            "[unclosed](https://x.example",
        ] {
            assert_eq!(unmask_links(kept), kept);
        }
        // Code is what Discord shows as code: an unclosed backtick or fence is text.
        assert_eq!(
            unmask_links(
                "`Save 5` off: [docs](https://evil.example) and ` alone [a](https://e.example)"
            ),
            "`Save 5` off: docs (https://evil.example) and ` alone a (https://e.example)"
        );
        assert_eq!(
            unmask_links("```\n[bank](https://evil.example)"),
            "```\nbank (https://evil.example)"
        );
        assert_eq!(
            unmask_links("`a\n[x](https://e.example)`"),
            "`a\nx (https://e.example)`"
        );
        // A title after the address, and blanks before it.
        assert_eq!(
            unmask_links("[x](<https://evil.example> \"hover\")"),
            "x (https://evil.example)"
        );
        assert_eq!(
            unmask_links("[x](\n https://evil.example \"t\")"),
            "x (https://evil.example)"
        );
        assert_eq!(
            text("[é](https://x.example)")["content"],
            "é (https://x.example)"
        );
    }

    #[test]
    fn buttons_carry_callback_data_and_a_closed_card_has_none() {
        let mut sample = Card {
            approval_id: "apr_abcdefghijkl".into(),
            token: "abcdefghijklmnop".into(),
            heading: "Request held at the vault · agent a".into(),
            title: "POST example.com/x @everyone".into(),
            warning: None,
            lines: vec![],
            scope: None,
            detail: String::new(),
            buttons: Button::ALL.to_vec(),
            outcome: None,
            expires_at_ms: 0,
        };
        let body = card(&sample);
        assert_eq!(body["allowed_mentions"]["parse"], json!([]));
        assert_eq!(body["flags"], json!(SUPPRESS_EMBEDS));
        assert_eq!(
            text("see https://evil.example/x")["flags"],
            json!(SUPPRESS_EMBEDS)
        );
        let ids: Vec<&str> = body["components"][0]["components"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["custom_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), 5);
        assert!(ids.iter().all(|id| id.len() <= 100));
        sample.buttons.clear();
        sample.outcome = Some("Denied".into());
        assert_eq!(card(&sample)["components"], json!([]));
        assert!(cut(&"x".repeat(3000), MAX_CONTENT_CHARS).chars().count() == MAX_CONTENT_CHARS);
    }

    /// Escaping lengthens what an agent wrote (`[Ops]_Team` doubles its specials); a
    /// card still fits, and keeps the scope of a lasting choice and its id.
    #[test]
    fn a_long_card_keeps_its_scope_and_id_after_escaping() {
        let sample = Card {
            approval_id: "apr_abcdefghijkl".into(),
            token: "abcdefghijklmnop".into(),
            heading: "Request held at the vault · agent a".into(),
            title: "Send e-mail".into(),
            warning: None,
            lines: (0..40)
                .map(|n| format!("To: [Ops]_Team_Member_{n} <ops_team_member_{n}@corp.example>"))
                .collect(),
            scope: Some("\"Always allow\" lets POST gmail.googleapis.com/send through".into()),
            detail: String::new(),
            buttons: vec![Button::Once, Button::Always],
            outcome: None,
            expires_at_ms: 0,
        };
        let content = card(&sample)["content"].as_str().unwrap().to_string();
        assert!(content.chars().count() <= MAX_CONTENT_CHARS);
        assert!(
            content.contains("lets POST gmail.googleapis.com/send through"),
            "{content}"
        );
        assert!(content.contains("ID apr\\_abcdefghijkl"), "{content}");
        assert!(content.contains("more line(s) not shown here"), "{content}");
        assert!(!content.ends_with('…'), "cut short: {content}");
    }

    #[test]
    fn what_others_wrote_on_a_card_is_literal_markdown() {
        let sample = Card {
            approval_id: "apr_abcdefghijkl".into(),
            token: "abcdefghijklmnop".into(),
            heading: "Request held at the vault · agent a".into(),
            title: "Send e-mail to \"||\" <exfil@evil.example>, \"||\" <bob@corp.example>".into(),
            warning: None,
            lines: vec![
                "[https://github.com/acme](https://evil.example)".into(),
                "# Looks official".into(),
                "-# small print".into(),
                "> quoted **bold** _it_ ~~gone~~ `code` \\".into(),
                "   ## indented heading".into(),
                "\u{a0}-# small print after a no-break space".into(),
                "1. ten USD".into(),
                "9999) to acct_X".into(),
                "  12. indented, and 3.50 in the middle".into(),
            ],
            scope: None,
            detail: String::new(),
            buttons: vec![],
            outcome: None,
            expires_at_ms: 0,
        };
        let content = card(&sample)["content"].as_str().unwrap().to_string();
        // Every special character is preceded by a backslash (so shown as written).
        let chars: Vec<char> = content.chars().collect();
        for (i, c) in chars.iter().enumerate() {
            if matches!(c, '*' | '_' | '~' | '|' | '`' | '[' | ']' | '<' | '>') {
                assert_eq!(
                    chars.get(i.wrapping_sub(1)),
                    Some(&'\\'),
                    "{c} unescaped in {content}"
                );
            }
        }
        assert!(
            !content.contains("\n#") && !content.contains("\n-#"),
            "{content}"
        );
        assert!(content.contains("\\# Looks official") && content.contains("\\-# small print"));
        // Another spelling of the start of a line: spaces, a no-break space.
        assert!(content.contains("   \\## indented heading"), "{content}");
        // No ordered list, which Discord numbers again: the number's mark is escaped,
        // and only there.
        assert!(content.contains("\n1\\. ten USD"), "{content}");
        assert!(content.contains("\n9999\\) to acct\\_X"), "{content}");
        assert!(
            content.contains("\n  12\\. indented, and 3.50 in the middle"),
            "{content}"
        );
        // Shown without the backslashes, it is the text written.
        let shown: String = {
            let mut out = String::new();
            let mut escaped = false;
            for c in content.chars() {
                if c == '\\' && !escaped {
                    escaped = true;
                    continue;
                }
                escaped = false;
                out.push(c);
            }
            out
        };
        assert!(shown.contains("\"||\" <exfil@evil.example>"), "{shown}");
        assert!(
            shown.contains("> quoted **bold** _it_ ~~gone~~ `code` \\"),
            "{shown}"
        );
    }

    /// Discord's markdown escaping leaves the marker and the warning readable as
    /// written (neither has a character it escapes), around the escaped address.
    #[test]
    fn the_hidden_character_marker_survives_discord_escaping() {
        use palisade_approvals::summary::HIDDEN_CHARACTERS_NOTICE;
        let mut summary = crate::card::hidden_character_summary();
        let body = card(&Card::new(
            &crate::card::pending_approval(summary.clone()),
            "abcdefghijklmnop",
        ));
        let content = body["content"].as_str().unwrap();
        assert!(
            content.contains("al⟨U+202E⟩ice\\_ops@example.com"),
            "{content}"
        );
        assert!(
            content.contains("\\<b⟨U+200B⟩ob@example.com\\>"),
            "{content}"
        );
        assert_eq!(
            content.matches(HIDDEN_CHARACTERS_NOTICE).count(),
            1,
            "{content}"
        );
        // Lines that escaping doubles fill the card; the warning stays.
        summary.lines.extend((0..40).map(|_| "_*".repeat(150)));
        let body = card(&Card::new(
            &crate::card::pending_approval(summary),
            "abcdefghijklmnop",
        ));
        let content = body["content"].as_str().unwrap();
        assert!(content.chars().count() <= MAX_CONTENT_CHARS);
        assert!(content.contains(HIDDEN_CHARACTERS_NOTICE), "{content}");
    }
}
