//! A card as a Telegram message: plain text (no parse mode, so nothing an agent wrote
//! can be read as markup) and an inline keyboard, two buttons a row. Lengths are
//! UTF-16 code units, as Telegram counts them.

use crate::card::{CallbackData, Card};
use serde_json::{json, Value};

pub(super) fn card(card: &Card) -> (String, Option<Value>) {
    // Telegram counts UTF-16 code units: an emoji in a summary is two.
    let text = card.text_within(super::MAX_TEXT_UNITS, &|text| text.encode_utf16().count());
    let text = crate::cut_measured(&text, super::MAX_TEXT_UNITS, crate::utf16_units);
    if card.buttons.is_empty() {
        // An empty keyboard removes the buttons of an edited card.
        return (text, Some(json!({"inline_keyboard": []})));
    }
    let buttons: Vec<Value> = card
        .buttons
        .iter()
        .map(|button| {
            json!({
                "text": button.label(),
                "callback_data": CallbackData::encode(&card.token, *button),
            })
        })
        .collect();
    let rows: Vec<Value> = buttons.chunks(2).map(|row| json!(row)).collect();
    (text, Some(json!({ "inline_keyboard": rows })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_approvals::Button;

    /// A summary of emoji fits Telegram's 4,096 UTF-16 code units (counted as
    /// characters it was 4,096 characters, nearly 8,192 units, and refused).
    #[test]
    fn a_card_of_emoji_fits_in_utf16_units() {
        let sample = Card {
            approval_id: "apr_abcdefghijkl".into(),
            token: "abcdefghijklmnop".into(),
            heading: "Request held at the vault · agent a".into(),
            title: "Post \u{1F680}".into(),
            warning: None,
            lines: (0..60).map(|_| "\u{1F600}".repeat(60)).collect(),
            scope: None,
            detail: String::new(),
            buttons: vec![Button::Once, Button::Deny],
            outcome: None,
            expires_at_ms: 0,
        };
        let (text, _) = card(&sample);
        assert!(text.encode_utf16().count() <= super::super::MAX_TEXT_UNITS);
        assert!(text.contains("ID apr_abcdefghijkl"), "cut short");
        assert!(text.contains("more line(s) not shown here"));
    }

    /// Telegram's plain text keeps the marker and the warning as written, and a card of
    /// long lines still fits its UTF-16 limit with both.
    #[test]
    fn the_hidden_character_marker_survives_telegram_text() {
        use palisade_approvals::summary::HIDDEN_CHARACTERS_NOTICE;
        let mut summary = crate::card::hidden_character_summary();
        let (text, _) = card(&Card::new(
            &crate::card::pending_approval(summary.clone()),
            "abcdefghijklmnop",
        ));
        assert!(text.contains("al⟨U+202E⟩ice_ops@example.com"), "{text}");
        assert!(text.contains("<b⟨U+200B⟩ob@example.com> *now*"), "{text}");
        assert_eq!(text.matches(HIDDEN_CHARACTERS_NOTICE).count(), 1, "{text}");
        summary
            .lines
            .extend((0..60).map(|_| "\u{1F600}".repeat(60)));
        let (text, _) = card(&Card::new(
            &crate::card::pending_approval(summary),
            "abcdefghijklmnop",
        ));
        assert!(text.encode_utf16().count() <= super::super::MAX_TEXT_UNITS);
        assert!(text.contains(HIDDEN_CHARACTERS_NOTICE), "{text}");
    }
}
