//! The Web API calls Palisade makes: `auth.test`, `apps.connections.open` (with the
//! app-level token), `chat.postMessage`, `chat.update`, `chat.postEphemeral`,
//! `views.open`. Every answer is `{"ok": bool, "error": …}`, mostly with HTTP 200; a
//! refused token is a configuration error (retrying will not help), `ratelimited` a
//! transient one. Tokens travel only in the `Authorization` header (marked sensitive);
//! an `error` that echoes one is cleaned before it goes anywhere
//! ([`crate::platform_text`]).

use crate::channel::ChannelError;
use crate::http::{ApiClient, HttpError};
use palisade_policy::SecretValue;
use serde_json::{json, Value};

/// Errors Slack answers for a token that will not work until the owner changes it.
const TOKEN_ERRORS: &[&str] = &[
    "invalid_auth",
    "not_authed",
    "account_inactive",
    "token_revoked",
    "token_expired",
    "not_allowed_token_type",
    "missing_scope",
];

#[derive(Clone)]
pub(super) struct Client {
    pub(super) api: ApiClient,
    pub(super) bot: SecretValue,
    pub(super) app: Option<SecretValue>,
}

/// Where a message went: the conversation id Slack answered and the message's `ts`.
pub(super) struct Posted {
    pub(super) channel: String,
    pub(super) ts: String,
}

impl Client {
    async fn call(
        &self,
        method: &str,
        token: &SecretValue,
        body: Value,
    ) -> Result<Value, ChannelError> {
        let what = format!("Slack {method}");
        let authorization = format!("Bearer {}", token.expose());
        let answer = match self
            .api
            .post_json(
                &what,
                method,
                &[("authorization", &authorization)],
                &body,
                None,
            )
            .await
        {
            Ok((_, _, answer)) => answer,
            Err(HttpError::Status { status, .. }) if status.as_u16() == 401 => {
                return Err(ChannelError::Config(format!(
                    "{what}: the token was refused; check it in the app's settings"
                )))
            }
            Err(error) => return Err(error.into()),
        };
        if answer.get("ok").and_then(Value::as_bool) == Some(true) {
            return Ok(answer);
        }
        let error = self.api.clean(
            answer
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("no error given"),
        );
        if TOKEN_ERRORS.contains(&error.as_str()) {
            return Err(ChannelError::Config(format!(
                "{what}: Slack refused the token ({error}); check the token and the app's scopes"
            )));
        }
        Err(ChannelError::Platform(format!("{what}: {error}")))
    }

    pub(super) async fn auth_test(&self) -> Result<Value, ChannelError> {
        self.call("auth.test", &self.bot, json!({})).await
    }

    /// A Socket Mode URL (with its one-use ticket).
    pub(super) async fn connections_open(&self) -> Result<String, ChannelError> {
        let Some(app) = &self.app else {
            return Err(ChannelError::Config(
                "Socket Mode needs the app-level token (xapp-…): add the channel again with --app-token-file".into(),
            ));
        };
        let answer = self.call("apps.connections.open", app, json!({})).await?;
        answer
            .get("url")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| {
                ChannelError::Platform("Slack apps.connections.open answered without a URL".into())
            })
    }

    pub(super) async fn post_message(
        &self,
        channel: &str,
        text: &str,
        blocks: Option<Value>,
        thread: Option<&str>,
    ) -> Result<Posted, ChannelError> {
        let mut body = json!({
            "channel": channel,
            "text": text,
            "unfurl_links": false,
            "unfurl_media": false,
        });
        if let Some(blocks) = blocks {
            body["blocks"] = blocks;
        }
        if let Some(thread) = thread {
            body["thread_ts"] = json!(thread);
        }
        let answer = self.call("chat.postMessage", &self.bot, body).await?;
        match (
            answer.get("channel").and_then(Value::as_str),
            answer.get("ts").and_then(Value::as_str),
        ) {
            (Some(channel), Some(ts)) => Ok(Posted {
                channel: channel.to_string(),
                ts: ts.to_string(),
            }),
            _ => Err(ChannelError::Platform(
                "Slack chat.postMessage answered without channel and ts".into(),
            )),
        }
    }

    pub(super) async fn update(
        &self,
        channel: &str,
        ts: &str,
        text: &str,
        blocks: Value,
    ) -> Result<(), ChannelError> {
        self.call(
            "chat.update",
            &self.bot,
            json!({"channel": channel, "ts": ts, "text": text, "blocks": blocks}),
        )
        .await
        .map(drop)
    }

    /// A message only `user` sees, in `channel`.
    pub(super) async fn post_ephemeral(
        &self,
        channel: &str,
        user: &str,
        text: &str,
    ) -> Result<(), ChannelError> {
        self.call(
            "chat.postEphemeral",
            &self.bot,
            json!({"channel": channel, "user": user, "text": text}),
        )
        .await
        .map(drop)
    }

    /// Opens a modal for the click with `trigger_id` (valid for 3 s); returns its view id.
    pub(super) async fn views_open(
        &self,
        trigger_id: &str,
        view: Value,
    ) -> Result<String, ChannelError> {
        let answer = self
            .call(
                "views.open",
                &self.bot,
                json!({"trigger_id": trigger_id, "view": view}),
            )
            .await?;
        answer
            .pointer("/view/id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| {
                ChannelError::Platform("Slack views.open answered without a view id".into())
            })
    }
}
