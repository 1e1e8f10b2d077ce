//! The Bot API calls Palisade makes: `getMe`, `getUpdates`, `sendMessage`,
//! `editMessageText`, `answerCallbackQuery`. Every answer is `{"ok": bool, "result":
//! …, "description": …}`; the token is part of the path and never appears in an error
//! (a description or body that echoes it is cleaned: [`crate::platform_text`]).

use crate::channel::ChannelError;
use crate::http::{ApiClient, HttpError};
use palisade_policy::SecretValue;
use serde_json::{json, Value};
use std::time::Duration;

pub(super) struct Client {
    pub(super) api: ApiClient,
    pub(super) token: SecretValue,
}

impl Client {
    async fn call(
        &self,
        method: &str,
        body: Value,
        timeout: Option<Duration>,
    ) -> Result<Value, ChannelError> {
        let path = format!("bot{}/{method}", self.token.expose());
        let what = format!("Telegram {method}");
        let answer = match self.api.post_json(&what, &path, &[], &body, timeout).await {
            Ok((_, _, answer)) => answer,
            // `body` was cleaned by the client (no token, bounded).
            Err(HttpError::Status { status, body, .. }) if status.as_u16() == 401 => {
                return Err(ChannelError::Config(format!(
                    "{what}: the bot token was refused ({body}); check it with @BotFather"
                )))
            }
            Err(error) => return Err(error.into()),
        };
        if answer.get("ok").and_then(Value::as_bool) != Some(true) {
            let description = self.api.clean(
                answer
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or("no description"),
            );
            return Err(ChannelError::Platform(format!("{what}: {description}")));
        }
        Ok(answer.get("result").cloned().unwrap_or(Value::Null))
    }

    pub(super) async fn me(&self) -> Result<Value, ChannelError> {
        self.call("getMe", json!({}), None).await
    }

    pub(super) async fn updates(
        &self,
        offset: Option<i64>,
        poll_seconds: u64,
    ) -> Result<Vec<Value>, ChannelError> {
        let mut body = json!({
            "timeout": poll_seconds,
            "allowed_updates": ["message", "callback_query"],
            "limit": 100,
        });
        if let Some(offset) = offset {
            body["offset"] = json!(offset);
        }
        let result = self
            .call(
                "getUpdates",
                body,
                Some(Duration::from_secs(poll_seconds + 15)),
            )
            .await?;
        Ok(result.as_array().cloned().unwrap_or_default())
    }

    /// Sends a message; returns its id.
    pub(super) async fn send(
        &self,
        chat: &str,
        text: &str,
        reply_markup: Option<Value>,
        reply_to: Option<&str>,
    ) -> Result<String, ChannelError> {
        let mut body = json!({
            "chat_id": chat,
            "text": text,
            "link_preview_options": {"is_disabled": true},
        });
        if let Some(markup) = reply_markup {
            body["reply_markup"] = markup;
        }
        if let Some(reply_to) = reply_to {
            body["reply_parameters"] = json!({"message_id": reply_to});
        }
        let message = self.call("sendMessage", body, None).await?;
        match message.get("message_id") {
            Some(id) => Ok(super::id_text(id)),
            None => Err(ChannelError::Platform(
                "Telegram sendMessage answered without a message id".into(),
            )),
        }
    }

    pub(super) async fn edit(
        &self,
        chat: &str,
        message: &str,
        text: &str,
        reply_markup: Option<Value>,
    ) -> Result<(), ChannelError> {
        let mut body = json!({
            "chat_id": chat,
            "message_id": message.parse::<i64>().unwrap_or_default(),
            "text": text,
            "link_preview_options": {"is_disabled": true},
        });
        if let Some(markup) = reply_markup {
            body["reply_markup"] = markup;
        }
        match self.call("editMessageText", body, None).await {
            Ok(_) => Ok(()),
            // Editing to the same text is refused; the card already says it.
            Err(ChannelError::Platform(text)) if text.contains("message is not modified") => Ok(()),
            Err(error) => Err(error),
        }
    }

    pub(super) async fn answer_callback(
        &self,
        query: &str,
        text: &str,
        alert: bool,
    ) -> Result<(), ChannelError> {
        // 200 UTF-16 code units, as Telegram counts.
        let text = crate::cut_measured(text, 200, crate::utf16_units);
        self.call(
            "answerCallbackQuery",
            json!({"callback_query_id": query, "text": text, "show_alert": alert}),
            None,
        )
        .await
        .map(drop)
    }
}
