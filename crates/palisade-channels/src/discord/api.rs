//! The REST calls Palisade makes: `GET /users/@me`, `GET /gateway/bot`, `POST
//! /users/@me/channels` (a direct conversation), `POST /channels/{id}/messages`,
//! `PATCH /channels/{id}/messages/{id}`, and `POST /interactions/{id}/{token}/callback`
//! (which needs no bot token, so none is sent). Ids and interaction tokens that go
//! into a path are checked first: they come from the platform.

use crate::channel::ChannelError;
use crate::http::{ApiClient, HttpError};
use http::Method;
use palisade_policy::SecretValue;
use serde_json::{json, Value};

#[derive(Clone)]
pub(super) struct Client {
    pub(super) api: ApiClient,
    pub(super) token: SecretValue,
}

/// A snowflake: digits only.
pub(super) fn is_id(text: &str) -> bool {
    !text.is_empty() && text.len() <= 24 && text.bytes().all(|b| b.is_ascii_digit())
}

fn is_interaction_token(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 512
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Client {
    async fn call(
        &self,
        what: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        authorized: bool,
    ) -> Result<Value, ChannelError> {
        let authorization = format!("Bot {}", self.token.expose());
        let mut headers = vec![("user-agent", "DiscordBot (https://palisade.invalid, 0.1)")];
        if authorized {
            headers.push(("authorization", authorization.as_str()));
        }
        let body = body
            .map(|b| serde_json::to_vec(b).map(|bytes| ("application/json", bytes)))
            .transpose()
            .map_err(|e| ChannelError::Config(e.to_string()))?;
        match self
            .api
            .call(what, method, path, &headers, body, None)
            .await
        {
            Ok((_, _, answer)) => Ok(answer),
            Err(HttpError::Status { status, .. }) if status.as_u16() == 401 => {
                Err(ChannelError::Config(format!(
                    "{what}: Discord refused the bot token; check it in the developer portal"
                )))
            }
            Err(HttpError::Status { status, body, .. }) if status.as_u16() == 403 => Err(
                ChannelError::Platform(format!("{what}: the bot may not do this here ({body})")),
            ),
            Err(error) => Err(error.into()),
        }
    }

    pub(super) async fn me(&self) -> Result<Value, ChannelError> {
        self.call("Discord users/@me", Method::GET, "users/@me", None, true)
            .await
    }

    pub(super) async fn gateway_url(&self) -> Result<String, ChannelError> {
        let answer = self
            .call(
                "Discord gateway/bot",
                Method::GET,
                "gateway/bot",
                None,
                true,
            )
            .await?;
        answer
            .get("url")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| ChannelError::Platform("Discord named no gateway URL".into()))
    }

    /// The direct conversation with `user`.
    pub(super) async fn dm_channel(&self, user: &str) -> Result<String, ChannelError> {
        if !is_id(user) {
            return Err(ChannelError::Config(format!(
                "{user:?} is not a Discord user id (digits)"
            )));
        }
        let answer = self
            .call(
                "Discord users/@me/channels",
                Method::POST,
                "users/@me/channels",
                Some(&json!({"recipient_id": user})),
                true,
            )
            .await?;
        answer
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| is_id(id))
            .map(str::to_string)
            .ok_or_else(|| ChannelError::Platform("Discord opened a DM without an id".into()))
    }

    /// Posts a message; returns its id.
    pub(super) async fn create_message(
        &self,
        channel: &str,
        body: &Value,
    ) -> Result<String, ChannelError> {
        if !is_id(channel) {
            return Err(ChannelError::Config(format!(
                "{channel:?} is not a Discord channel id (digits)"
            )));
        }
        let answer = self
            .call(
                "Discord create message",
                Method::POST,
                &format!("channels/{channel}/messages"),
                Some(body),
                true,
            )
            .await?;
        answer
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| {
                ChannelError::Platform("Discord answered a message without an id".into())
            })
    }

    pub(super) async fn edit_message(
        &self,
        channel: &str,
        message: &str,
        body: &Value,
    ) -> Result<(), ChannelError> {
        if !is_id(channel) || !is_id(message) {
            return Err(ChannelError::Config(
                "a stored Discord card reference is malformed".into(),
            ));
        }
        self.call(
            "Discord edit message",
            Method::PATCH,
            &format!("channels/{channel}/messages/{message}"),
            Some(body),
            true,
        )
        .await
        .map(drop)
    }

    /// Answers an interaction received through the gateway.
    pub(super) async fn respond(
        &self,
        interaction: &str,
        token: &str,
        response: &Value,
    ) -> Result<(), ChannelError> {
        if !is_id(interaction) || !is_interaction_token(token) {
            return Err(ChannelError::Platform(
                "an interaction's id or token is malformed".into(),
            ));
        }
        self.call(
            "Discord interaction callback",
            Method::POST,
            &format!("interactions/{interaction}/{token}/callback"),
            Some(response),
            false,
        )
        .await
        .map(drop)
    }
}
