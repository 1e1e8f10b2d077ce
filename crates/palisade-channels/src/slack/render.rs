//! A card in Block Kit: a header, the title, the warning about hidden characters and
//! the summary lines as `plain_text` (so
//! nothing an agent wrote is read as mrkdwn: no links, no `@channel`), the expiry or
//! the outcome, and an actions block with one button per choice, each carrying the
//! card's [`CallbackData`] as its `value`. The "deny with comment" modal is here too.

use crate::card::{CallbackData, Card};
use palisade_approvals::Button;
use serde_json::{json, Value};

/// Block Kit's limits: a header's text, a section's text, a modal's title.
const HEADER_CHARS: usize = 150;
const SECTION_CHARS: usize = 3000;
const MODAL_TITLE_CHARS: usize = 24;
/// `callback_id` of the comment modal.
pub(super) const COMMENT_VIEW: &str = "palisade_deny_comment";
pub(super) const COMMENT_BLOCK: &str = "comment_block";
pub(super) const COMMENT_INPUT: &str = "comment";

use crate::card::cut;

fn plain(text: &str, chars: usize) -> Value {
    // Slack refuses an empty text object.
    let text = if text.trim().is_empty() { " " } else { text };
    json!({"type": "plain_text", "text": cut(text, chars), "emoji": true})
}

/// `(fallback text, blocks)`.
pub(super) fn card(card: &Card) -> (String, Value) {
    let mut blocks = vec![
        json!({"type": "header", "text": plain(&card.heading, HEADER_CHARS)}),
        json!({"type": "section", "text": plain(&card.title, SECTION_CHARS)}),
    ];
    if let Some(warning) = &card.warning {
        blocks.push(json!({"type": "section", "text": plain(warning, SECTION_CHARS)}));
    }
    if !card.lines.is_empty() {
        let lines = crate::card::fit_lines(&card.lines, SECTION_CHARS, &|t| t.chars().count());
        blocks.push(json!({"type": "section", "text": plain(&lines.join("\n"), SECTION_CHARS)}));
    }
    if let Some(scope) = &card.scope {
        blocks.push(json!({"type": "section", "text": plain(scope, SECTION_CHARS)}));
    }
    match &card.outcome {
        Some(outcome) => {
            blocks.push(json!({"type": "section", "text": plain(outcome, SECTION_CHARS)}))
        }
        None => {
            blocks.push(json!({"type": "context", "elements": [plain(
                &card.expiry_line(),
                SECTION_CHARS,
            )]}));
            let buttons: Vec<Value> = card
                .buttons
                .iter()
                .map(|button| {
                    let mut element = json!({
                        "type": "button",
                        "action_id": format!("palisade_{}", button.code()),
                        "text": plain(button.label(), 75),
                        "value": CallbackData::encode(&card.token, *button),
                    });
                    match button {
                        Button::Once => element["style"] = json!("primary"),
                        Button::Deny => element["style"] = json!("danger"),
                        _ => {}
                    }
                    element
                })
                .collect();
            if !buttons.is_empty() {
                blocks.push(
                    json!({"type": "actions", "block_id": "palisade_card", "elements": buttons}),
                );
            }
        }
    }
    (
        escape(&cut(
            &card.text_within(SECTION_CHARS, &|text| escape(text).chars().count()),
            SECTION_CHARS,
        )),
        Value::Array(blocks),
    )
}

/// The modal that asks for a denial's comment. `private_metadata` names the card; the
/// submission is also matched to the view this host opened and the user it opened for.
pub(super) fn comment_modal(token: &str, title: &str) -> Value {
    json!({
        "type": "modal",
        "callback_id": COMMENT_VIEW,
        "private_metadata": token,
        "title": plain("Deny with comment", MODAL_TITLE_CHARS),
        "submit": plain("Deny", MODAL_TITLE_CHARS),
        "close": plain("Cancel", MODAL_TITLE_CHARS),
        "blocks": [
            {"type": "section", "text": plain(&format!("Why deny \"{}\"? The agent reads your comment.", cut(title, 300)), SECTION_CHARS)},
            {
                "type": "input",
                "block_id": COMMENT_BLOCK,
                "label": plain("Comment", 2000),
                "element": {
                    "type": "plain_text_input",
                    "action_id": COMMENT_INPUT,
                    "multiline": true,
                    "max_length": palisade_approvals::choice::MAX_COMMENT_CHARS,
                },
            },
        ],
    })
}

/// Text for a message's `text` field: `&`, `<` and `>` escaped as Slack asks, so
/// what an agent writes cannot become a link, a mention or `@channel`.
pub(super) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(outcome: Option<&str>) -> Card {
        Card {
            approval_id: "apr_abcdefghijkl".into(),
            token: "abcdefghijklmnop".into(),
            heading: "Request held at the vault · agent mailer".into(),
            title: "Send an e-mail to <!channel>".into(),
            warning: None,
            lines: vec!["To: ana@example.com".into()],
            scope: None,
            detail: String::new(),
            buttons: if outcome.is_some() {
                vec![]
            } else {
                vec![Button::Once, Button::Deny, Button::DenyWithComment]
            },
            outcome: outcome.map(str::to_string),
            expires_at_ms: 0,
        }
    }

    #[test]
    fn a_pending_card_has_buttons_with_callback_data_and_plain_text_only() {
        let (text, blocks) = card(&sample(None));
        assert!(text.contains("&lt;!channel&gt;"), "{text}");
        let blocks = blocks.as_array().unwrap();
        let actions = blocks.iter().find(|b| b["type"] == "actions").unwrap();
        let values: Vec<&str> = actions["elements"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["value"].as_str().unwrap())
            .collect();
        assert_eq!(
            values,
            [
                "v1:abcdefghijklmnop:o",
                "v1:abcdefghijklmnop:d",
                "v1:abcdefghijklmnop:c"
            ]
        );
        for block in blocks {
            if let Some(kind) = block.pointer("/text/type") {
                assert_eq!(kind, "plain_text", "{block}");
            }
        }
    }

    #[test]
    fn a_closed_card_has_no_buttons_and_says_how_it_ended() {
        let (_, blocks) = card(&sample(Some("✅ Approved by Ana")));
        let blocks = blocks.as_array().unwrap();
        assert!(blocks.iter().all(|b| b["type"] != "actions"));
        assert!(blocks
            .iter()
            .any(|b| b.pointer("/text/text") == Some(&json!("✅ Approved by Ana"))));
    }

    /// A hidden character is marked in Block Kit's plain text and in the escaped
    /// fallback alike, and the card says the request carries one.
    #[test]
    fn the_hidden_character_marker_survives_slack_escaping() {
        use palisade_approvals::summary::HIDDEN_CHARACTERS_NOTICE;
        let approval = crate::card::pending_approval(crate::card::hidden_character_summary());
        let (text, blocks) = card(&Card::new(&approval, "abcdefghijklmnop"));
        assert!(text.contains("al⟨U+202E⟩ice_ops@example.com"), "{text}");
        assert!(text.contains("&lt;b⟨U+200B⟩ob@example.com&gt;"), "{text}");
        assert_eq!(text.matches(HIDDEN_CHARACTERS_NOTICE).count(), 1, "{text}");
        let shown: Vec<&str> = blocks
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|block| block.pointer("/text/text").and_then(Value::as_str))
            .collect();
        assert!(
            shown
                .iter()
                .any(|t| t.contains("al⟨U+202E⟩ice_ops@example.com")),
            "{shown:?}"
        );
        assert!(shown
            .iter()
            .any(|t| t.contains("<b⟨U+200B⟩ob@example.com>")));
        assert_eq!(
            shown
                .iter()
                .filter(|t| t.contains(HIDDEN_CHARACTERS_NOTICE))
                .count(),
            1,
            "{shown:?}"
        );
    }
}
