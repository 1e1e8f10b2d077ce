//! Discord as a channel and an approval surface: the gateway (a WebSocket: hello,
//! identify, heartbeats and their acknowledgements, resume after a drop) brings
//! messages (`MESSAGE_CREATE`) and button presses (`INTERACTION_CREATE`); cards are
//! messages with buttons in a direct conversation with each approver, edited over REST
//! once decided. A press is answered with an interaction response: the card updated
//! in place (type 7) when it decided, a refusal only the presser sees (type 4,
//! ephemeral), or the comment modal (type 9) whose submission is matched to the card
//! and the same user. When the application uses an HTTP interactions endpoint instead,
//! `POST /channels/discord/NAME/interactions` takes them, each checked against the
//! application's Ed25519 public key (`signature.rs`), and the response is the HTTP
//! answer.
//!
//! Written on [`crate::http::ApiClient`] and [`crate::ws`] rather than twilight or
//! serenity: Palisade needs six REST calls and five gateway events; twilight-gateway
//! brings a second WebSocket stack (tokio-websockets) with its own TLS roots
//! (rustls-platform-verifier by default) and twilight-http its own client, while what
//! Palisade must guarantee is the same as for the other platforms and lives in one
//! place: URLs the platform names (`GET /gateway/bot`, `resume_gateway_url`) accepted
//! only as `wss` (or `ws` to loopback), every wait bounded, message sizes bounded, a
//! refused token told apart from a network fault.

mod api;
mod gateway;
mod render;
pub mod signature;

use crate::card::Card;
use crate::channel::{
    CardRef, Channel, ChannelError, ClickAnswer, Inbound, Incoming, PlatformUser, Responder,
    WebhookReply,
};
use crate::http::ApiClient;
use crate::lock;
use crate::platform_text::Scrubber;
use futures_util::future::BoxFuture;
use palisade_approvals::Platform;
use palisade_policy::SecretValue;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

pub const DEFAULT_API_BASE: &str = "https://discord.com/api/v10";
/// How long a comment modal stays open.
const PROMPT_LIFETIME: Duration = Duration::from_secs(600);
const MAX_PROMPTS: usize = 256;
const MAX_DM_CHANNELS: usize = 1024;
/// Discord wants an interaction answered within 3 s.
const HTTP_ANSWER_WAIT: Duration = Duration::from_millis(2500);
pub(crate) const INBOX_WAIT: Duration = Duration::from_secs(2);
/// Interaction response types.
const PONG: u64 = 1;
const CHANNEL_MESSAGE: u64 = 4;
const DEFERRED_UPDATE: u64 = 6;
const UPDATE_MESSAGE: u64 = 7;
const EPHEMERAL: u64 = 1 << 6;

pub struct Discord {
    name: String,
    client: api::Client,
    public_key: Option<[u8; 32]>,
    /// The gateway URL set with `--gateway-url` (else the one the API names).
    gateway_url: Option<String>,
    bot_user: Arc<Mutex<Option<String>>>,
    session: Mutex<Option<gateway::Session>>,
    dm_channels: Mutex<HashMap<String, String>>,
    /// (card token, user id) → when the comment modal was opened for them.
    prompts: Arc<Mutex<HashMap<(String, String), Instant>>>,
    inbox: Mutex<Option<mpsc::Sender<Incoming>>>,
    /// Shared with every channel of the same public key.
    seen_requests: Arc<crate::replay::SeenRequests>,
}

fn short(value: Option<&Value>) -> Option<String> {
    // Refused, not cleaned: an id cleaned of a control character (`U0BOB\u{0}`) was
    // compared with the approvers' ids as the listed one.
    let text = value?.as_str()?;
    (!text.is_empty() && text.chars().count() <= 100 && !text.chars().any(char::is_control))
        .then(|| text.to_string())
}

/// Who pressed a button or sent a form: Discord names them in `member.user` in a
/// guild and in `user` in a direct message, never both. An interaction with both, or
/// with the wrong one for where it happened, names nobody.
fn presser(interaction: &Value) -> Option<&Value> {
    let field = |name: &str| interaction.get(name).filter(|v| !v.is_null());
    match (field("guild_id"), field("member"), field("user")) {
        (Some(_), Some(member), None) => member.get("user"),
        (None, None, Some(user)) => Some(user),
        _ => None,
    }
}

fn user_of(user: &Value) -> Option<PlatformUser> {
    let id = short(user.get("id")).filter(|id| api::is_id(id))?;
    if user.get("bot").and_then(Value::as_bool) == Some(true) {
        return None;
    }
    let name = short(user.get("global_name"))
        .or_else(|| short(user.get("username")))
        .unwrap_or_else(|| id.clone());
    Some(PlatformUser { id, name })
}

/// Where an interaction's response goes.
enum Reply {
    /// Over REST (an interaction received through the gateway).
    Rest {
        client: Box<api::Client>,
        id: String,
        token: String,
    },
    /// As the HTTP answer to Discord's request.
    Http(oneshot::Sender<Value>),
}

impl Reply {
    async fn send(self, response: Value) {
        match self {
            Reply::Rest { client, id, token } => {
                if let Err(error) = client.respond(&id, &token, &response).await {
                    tracing::debug!(%error, "could not answer a Discord interaction");
                }
            }
            Reply::Http(sender) => {
                let _ = sender.send(response);
            }
        }
    }
}

fn ephemeral(text: &str) -> Value {
    json!({
        "type": CHANNEL_MESSAGE,
        "data": {"content": render::cut(text, render::MAX_CONTENT_CHARS), "flags": EPHEMERAL | render::SUPPRESS_EMBEDS, "allowed_mentions": {"parse": []}},
    })
}

impl Discord {
    pub fn new(
        name: &str,
        api_base: &str,
        token: SecretValue,
        public_key: Option<&str>,
        gateway_url: Option<&str>,
    ) -> Result<Discord, ChannelError> {
        if token.expose().trim().is_empty()
            || token
                .expose()
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ChannelError::Config(
                "the Discord bot token is empty or malformed; copy it from the developer portal"
                    .into(),
            ));
        }
        let public_key = public_key
            .map(|key| {
                signature::parse_public_key(key).ok_or_else(|| {
                    ChannelError::Config(
                        "the Discord public key is not 32 bytes of hex; copy it from the developer portal".into(),
                    )
                })
            })
            .transpose()?;
        if let Some(url) = gateway_url {
            let parsed = url::Url::parse(url)
                .map_err(|_| ChannelError::Config(format!("gateway URL {url:?} is not a URL")))?;
            crate::http::check_base_url(&parsed).map_err(ChannelError::Config)?;
        }
        Ok(Discord {
            name: name.to_string(),
            client: api::Client {
                api: ApiClient::new(api_base, Duration::from_secs(20))
                    .map_err(|e| ChannelError::Config(e.to_string()))?
                    .scrubbing(Scrubber::new([&token])),
                token,
            },
            seen_requests: match &public_key {
                Some(key) => {
                    crate::replay::SeenRequests::shared("discord", key, signature::WINDOW_SECONDS)
                }
                None => Arc::new(crate::replay::SeenRequests::new(signature::WINDOW_SECONDS)),
            },
            public_key,
            gateway_url: gateway_url.map(str::to_string),
            bot_user: Arc::default(),
            session: Mutex::default(),
            dm_channels: Mutex::default(),
            prompts: Arc::default(),
            inbox: Mutex::default(),
        })
    }

    /// A `MESSAGE_CREATE` as a message someone wrote.
    fn on_message(&self, message: &Value) -> Option<Incoming> {
        let user = user_of(message.get("author")?)?;
        if lock(&self.bot_user).as_deref() == Some(user.id.as_str()) {
            return None;
        }
        let text = message.get("content")?.as_str()?.to_string();
        if text.trim().is_empty() {
            return None;
        }
        let chat = short(message.get("channel_id")).filter(|id| api::is_id(id))?;
        Some(Incoming::Message(Inbound {
            chat,
            // A Discord thread is a channel of its own.
            thread: None,
            user,
            text,
            direct: message.get("guild_id").is_none(),
            // A forwarded message's text is in its snapshots, never in `content`.
            may_command: true,
        }))
    }

    /// An `INTERACTION_CREATE` (button press or modal submission) as what the hub
    /// takes; `Err` with the response when it is answered here.
    fn on_interaction(
        &self,
        interaction: &Value,
        reply: Reply,
    ) -> Result<Incoming, (Value, Reply)> {
        let refuse = |reply: Reply, text: &str| Err((ephemeral(text), reply));
        let Some(user) = presser(interaction).and_then(user_of) else {
            return refuse(reply, "Palisade cannot tell who pressed this.");
        };
        let data = interaction.get("data").unwrap_or(&Value::Null);
        let custom_id: String = short(data.get("custom_id")).unwrap_or_default();
        let has_message = interaction.get("message").is_some();
        match interaction.get("type").and_then(Value::as_u64) {
            // MESSAGE_COMPONENT
            Some(3) => Ok(Incoming::Click {
                data: custom_id,
                respond: self.responder(reply, user.id.clone(), has_message),
                user,
            }),
            // MODAL_SUBMIT
            Some(5) => {
                let Some(token) = custom_id.strip_prefix(render::COMMENT_MODAL) else {
                    return refuse(reply, "This form is not one of Palisade's.");
                };
                let key = (token.to_string(), user.id.clone());
                let opened = {
                    let mut prompts = lock(&self.prompts);
                    prompts
                        .remove(&key)
                        .is_some_and(|at| at.elapsed() < PROMPT_LIFETIME)
                };
                if !opened {
                    palisade_policy::budgeted!(warn, channel = %self.name, user = %user.id, "a comment from a modal this host did not open for that user; refused");
                    return refuse(
                        reply,
                        "This form was not opened for you; nothing was decided.",
                    );
                }
                let text = data
                    .get("components")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .flat_map(|row| {
                        row.get("components")
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default()
                    })
                    .find(|c| {
                        c.get("custom_id").and_then(Value::as_str) == Some(render::COMMENT_INPUT)
                    })
                    .and_then(|c| c.get("value").and_then(Value::as_str).map(str::to_string))
                    .unwrap_or_default();
                Ok(Incoming::Comment {
                    token: token.to_string(),
                    respond: self.responder(reply, user.id.clone(), has_message),
                    user,
                    text,
                })
            }
            _ => refuse(reply, "Palisade does not handle this interaction."),
        }
    }

    fn responder(&self, reply: Reply, user: String, has_message: bool) -> Responder {
        let prompts = Arc::clone(&self.prompts);
        Box::new(move |answer| {
            Box::pin(async move {
                let response = match answer {
                    ClickAnswer::Decided { card, .. } if has_message => {
                        json!({"type": UPDATE_MESSAGE, "data": render::card(&card)})
                    }
                    ClickAnswer::AskComment { token, .. } => {
                        let mut prompts = lock(&prompts);
                        prompts.retain(|_, at| at.elapsed() < PROMPT_LIFETIME);
                        if prompts.len() >= MAX_PROMPTS {
                            if let Some(oldest) = prompts
                                .iter()
                                .min_by_key(|(_, at)| **at)
                                .map(|(k, _)| k.clone())
                            {
                                prompts.remove(&oldest);
                            }
                        }
                        prompts.insert((token.clone(), user), Instant::now());
                        render::comment_modal(&token)
                    }
                    other => ephemeral(other.text()),
                };
                reply.send(response).await;
            })
        })
    }

    async fn dm(&self, user: &str) -> Result<String, ChannelError> {
        if let Some(channel) = lock(&self.dm_channels).get(user) {
            return Ok(channel.clone());
        }
        let channel = self.client.dm_channel(user).await?;
        let mut channels = lock(&self.dm_channels);
        if channels.len() >= MAX_DM_CHANNELS {
            channels.clear();
        }
        channels.insert(user.to_string(), channel.clone());
        Ok(channel)
    }

    async fn on_http(&self, headers: &http::HeaderMap, body: &[u8]) -> WebhookReply {
        let Some(key) = &self.public_key else {
            return WebhookReply::text(
                404,
                "this Discord channel has no public key; add it again with --public-key",
            );
        };
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let (timestamp, signed) = (
            header("x-signature-timestamp"),
            header("x-signature-ed25519"),
        );
        let now = palisade_store::now_ms() / 1000;
        let checked = signature::verify(key, timestamp, signed, body, now).and_then(|()| {
            if self
                .seen_requests
                .first_time(timestamp.unwrap_or_default(), body, now)
            {
                Ok(())
            } else {
                Err(signature::SignatureError::Replayed)
            }
        });
        if let Err(error) = checked {
            palisade_policy::budgeted!(warn, channel = %self.name, %error, "refused a request to the Discord endpoint");
            return WebhookReply::text(401, &format!("refused: {error}"));
        }
        let Ok(interaction) = serde_json::from_slice::<Value>(body) else {
            return WebhookReply::text(400, "the body is not JSON");
        };
        if interaction.get("type").and_then(Value::as_u64) == Some(1) {
            return WebhookReply::json(200, &json!({ "type": PONG }));
        }
        let (sender, answer) = oneshot::channel();
        let incoming = match self.on_interaction(&interaction, Reply::Http(sender)) {
            Ok(incoming) => incoming,
            Err((response, _)) => return WebhookReply::json(200, &response),
        };
        let inbox = lock(&self.inbox).clone();
        let delivered = match inbox {
            Some(inbox) => inbox.send_timeout(incoming, INBOX_WAIT).await.is_ok(),
            None => false,
        };
        if !delivered {
            return WebhookReply::text(503, "the channel is not running; try again");
        }
        match tokio::time::timeout(HTTP_ANSWER_WAIT, answer).await {
            Ok(Ok(response)) => WebhookReply::json(200, &response),
            // Acknowledged; the card is edited over REST once decided.
            _ => WebhookReply::json(200, &json!({ "type": DEFERRED_UPDATE })),
        }
    }
}

impl Channel for Discord {
    fn name(&self) -> &str {
        &self.name
    }

    fn platform(&self) -> Platform {
        Platform::Discord
    }

    fn run(
        &self,
        inbox: mpsc::Sender<Incoming>,
        mut shutdown: watch::Receiver<bool>,
    ) -> BoxFuture<'_, Result<(), ChannelError>> {
        Box::pin(async move {
            *lock(&self.inbox) = Some(inbox.clone());
            let outcome = gateway::run(self, &inbox, &mut shutdown).await;
            *lock(&self.inbox) = None;
            outcome
        })
    }

    fn send_message<'a>(
        &'a self,
        chat: &'a str,
        _thread: Option<&'a str>,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), ChannelError>> {
        Box::pin(async move {
            for part in crate::split_text(text, render::MAX_CONTENT_CHARS) {
                self.client
                    .create_message(chat, &render::text(&part))
                    .await?;
            }
            Ok(())
        })
    }

    fn post_card<'a>(
        &'a self,
        user_id: &'a str,
        card: &'a Card,
    ) -> BoxFuture<'a, Result<CardRef, ChannelError>> {
        Box::pin(async move {
            let channel = self.dm(user_id).await?;
            let message = self
                .client
                .create_message(&channel, &render::card(card))
                .await?;
            Ok(CardRef {
                chat: channel,
                message,
            })
        })
    }

    fn update_card<'a>(
        &'a self,
        at: &'a CardRef,
        card: &'a Card,
    ) -> BoxFuture<'a, Result<(), ChannelError>> {
        Box::pin(async move {
            self.client
                .edit_message(&at.chat, &at.message, &render::card(card))
                .await
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<String, ChannelError>> {
        Box::pin(async move {
            let me = self.client.me().await?;
            let id = short(me.get("id")).unwrap_or_default();
            *lock(&self.bot_user) = Some(id.clone());
            Ok(format!(
                "Discord bot {} (id {id})",
                short(me.get("username")).unwrap_or_else(|| "?".into())
            ))
        })
    }

    fn notify_user<'a>(
        &'a self,
        user_id: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), ChannelError>> {
        Box::pin(async move {
            let channel = self.dm(user_id).await?;
            self.send_message(&channel, None, text).await
        })
    }

    fn webhook<'a>(
        &'a self,
        headers: &'a http::HeaderMap,
        body: &'a [u8],
    ) -> BoxFuture<'a, WebhookReply> {
        Box::pin(self.on_http(headers, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An id with a control character is nobody's, never cleaned into a listed
    /// approver's id.
    #[test]
    fn an_id_is_taken_as_sent_or_not_at_all() {
        assert_eq!(
            short(Some(&serde_json::json!("2000000000000000001"))).as_deref(),
            Some("2000000000000000001")
        );
        for bad in ["2000000000000000001\u{0}", "20000\u{7}00000000000001", ""] {
            assert_eq!(short(Some(&serde_json::json!(bad))), None, "{bad:?}");
        }
        assert_eq!(short(Some(&serde_json::json!("1".repeat(101)))), None);
    }

    #[test]
    fn the_presser_is_named_by_the_field_that_belongs_where_it_was_pressed() {
        let ana = serde_json::json!({"id": "1", "username": "ana"});
        let cy = serde_json::json!({"id": "2", "username": "cy"});
        let guild = serde_json::json!({"guild_id": "9", "member": {"user": ana}});
        let direct = serde_json::json!({"user": ana});
        assert_eq!(presser(&guild), Some(&ana));
        assert_eq!(presser(&direct), Some(&ana));
        for nobody in [
            serde_json::json!({"guild_id": "9", "member": {"user": ana}, "user": cy}),
            serde_json::json!({"member": {"user": ana}, "user": cy}),
            serde_json::json!({"member": {"user": ana}}),
            serde_json::json!({"guild_id": "9", "user": cy}),
            serde_json::json!({}),
        ] {
            assert_eq!(presser(&nobody), None, "{nobody}");
        }
    }
    use crate::fake_api::FakeApi;

    const TOKEN: &str = "MTIzNDU2Nzg5MDEyMzQ1Njc4.DISCORDSECRET.abcdefghijklmnopqrstuvwxyz0";

    #[tokio::test]
    async fn a_refusal_that_echoes_the_token_is_cleaned_and_retry_after_kept() {
        let fake = FakeApi::start(|_, _, before| match before {
            0 => (
                403,
                vec![],
                json!({"message": format!("Missing Access for Bot {TOKEN}"), "code": 50001}),
            ),
            _ => (
                429,
                vec![],
                json!({"message": "You are being rate limited.", "retry_after": 12.5, "global": false}),
            ),
        })
        .await;
        let discord =
            Discord::new("d", &fake.base, SecretValue::new(TOKEN.into()), None, None).unwrap();
        let refused = discord
            .send_message("123", None, "hi")
            .await
            .unwrap_err()
            .to_string();
        assert!(refused.contains("Missing Access"), "{refused}");
        assert!(!refused.contains("DISCORDSECRET"), "{refused}");
        assert!(!refused.contains("MTIzNDU2Nzg5MDEyMzQ1Njc4"), "{refused}");
        let limited = discord.send_message("123", None, "hi").await.unwrap_err();
        assert_eq!(limited.retry_after(), Some(Duration::from_millis(12_500)));
    }
}
