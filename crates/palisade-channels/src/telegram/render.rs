//! A card as a Telegram message: plain text (no parse mode, so nothing an agent wrote
//! can be read as markup) and an inline keyboard, two buttons a row.

use crate::card::{CallbackData, Card};
use serde_json::{json, Value};

pub(super) fn card(card: &Card) -> (String, Option<Value>) {
    let text = card.text_within(super::MAX_TEXT_CHARS, &|text| text.chars().count());
    let text: String = text.chars().take(super::MAX_TEXT_CHARS).collect();
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
