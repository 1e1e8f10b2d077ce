//! Slack as a channel and an approval surface: Socket Mode (a WebSocket the app opens
//! itself with its app-level token, so no public URL is needed) or the Events API and
//! interactivity over HTTPS (`POST /channels/slack/NAME/events` on `palisade up`'s
//! listener, each request checked against the signing secret); both at once work too.
//! Cards are Block Kit messages with buttons (`render.rs`), edited with `chat.update`
//! once decided; a press is answered privately with `chat.postEphemeral`; "deny with
//! comment" opens a modal (`views.open`) whose submission is matched to the view this
//! host opened and the user it opened it for.
//!
//! Written on [`crate::http::ApiClient`] and [`crate::ws`] rather than slack-morphism:
//! Palisade needs six Web API calls and two envelope types, and must check what the
//! SDK leaves to its caller or does its own way: the Socket Mode URL Slack hands out is
//! accepted only as `wss` (or `ws` to loopback, for tests), every read and connect is
//! bounded in time and size, a refused token is told apart from a network fault, and
//! nothing installs signal handlers in the host (slack-morphism's hyper feature brings
//! signal-hook-tokio). The signature check is `signature.rs`.

mod api;
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
use futures_util::{SinkExt, StreamExt};
use palisade_approvals::Platform;
use palisade_policy::SecretValue;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

pub const DEFAULT_API_BASE: &str = "https://slack.com/api";
/// Characters per message (Slack takes up to 40 000 but advises under 4 000).
const MAX_TEXT_CHARS: usize = 3900;
/// How long a comment modal stays open.
const PROMPT_LIFETIME: Duration = Duration::from_secs(600);
const MAX_PROMPTS: usize = 256;
/// Event ids remembered so a redelivered event is taken once.
const MAX_SEEN_EVENTS: usize = 2048;
/// Socket Mode: a ping this often; no frame at all for three times as long means the
/// connection is dead.
const PING_EVERY: Duration = Duration::from_secs(20);
const SILENCE_LIMIT: Duration = Duration::from_secs(60);
/// A Socket Mode connection that ends sooner than this counts as a failure (backed off
/// by the hub) rather than an ordinary refresh.
const SHORTEST_CONNECTION: Duration = Duration::from_secs(5);
/// How long an HTTP request waits for room in the hub's inbox.
const INBOX_WAIT: Duration = Duration::from_secs(2);

/// A comment modal waiting for its submission.
struct Prompt {
    token: String,
    user: String,
    at: Instant,
}

pub struct Slack {
    name: String,
    client: api::Client,
    signing_secret: Option<SecretValue>,
    /// The bot's own user id (from `auth.test`): its own messages are not input.
    bot_user: Mutex<Option<String>>,
    /// The workspace the app is installed in (`auth.test`'s `team_id`): events and
    /// presses naming another workspace are not taken, so an approver is always a
    /// user of this workspace, whatever another workspace's user ids look like.
    team: Mutex<Option<String>>,
    /// Where the HTTP endpoint passes what it receives, while the channel runs.
    inbox: Mutex<Option<mpsc::Sender<Incoming>>>,
    /// View id → the card and user a comment modal asks.
    prompts: Arc<Mutex<HashMap<String, Prompt>>>,
    seen_events: Mutex<VecDeque<String>>,
    /// Shared with every channel of the same signing secret.
    seen_requests: Arc<crate::replay::SeenRequests>,
}

/// A Slack id or name as kept: bounded, no control characters.
fn short(value: Option<&Value>) -> Option<String> {
    // Refused, not cleaned: an id cleaned of a control character (`U0BOB\u{0}`) was
    // compared with the approvers' ids as the listed one.
    let text = value?.as_str()?;
    (!text.is_empty() && text.chars().count() <= 64 && !text.chars().any(char::is_control))
        .then(|| text.to_string())
}

fn user_of(user: &Value) -> Option<PlatformUser> {
    let id = short(user.get("id"))?;
    let name = short(user.get("username"))
        .or_else(|| short(user.get("name")))
        .unwrap_or_else(|| id.clone());
    Some(PlatformUser { id, name })
}

impl Slack {
    pub fn new(
        name: &str,
        api_base: &str,
        bot_token: SecretValue,
        app_token: Option<SecretValue>,
        signing_secret: Option<SecretValue>,
    ) -> Result<Slack, ChannelError> {
        let malformed = |token: &SecretValue| {
            token.expose().trim().is_empty()
                || token
                    .expose()
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control())
        };
        if malformed(&bot_token) || app_token.as_ref().is_some_and(malformed) {
            return Err(ChannelError::Config(
                "a Slack token is empty or malformed; copy it from the app's settings".into(),
            ));
        }
        if app_token.is_none() && signing_secret.is_none() {
            return Err(ChannelError::Config(
                "a Slack channel needs an app-level token (Socket Mode) or a signing secret (Events API)".into(),
            ));
        }
        let scrubber = Scrubber::new(
            [
                Some(&bot_token),
                app_token.as_ref(),
                signing_secret.as_ref(),
            ]
            .into_iter()
            .flatten(),
        );
        Ok(Slack {
            name: name.to_string(),
            client: api::Client {
                api: ApiClient::new(api_base, Duration::from_secs(20))
                    .map_err(|e| ChannelError::Config(e.to_string()))?
                    .scrubbing(scrubber),
                bot: bot_token,
                app: app_token,
            },
            bot_user: Mutex::default(),
            team: Mutex::default(),
            inbox: Mutex::default(),
            prompts: Arc::default(),
            seen_events: Mutex::default(),
            seen_requests: match &signing_secret {
                Some(secret) => crate::replay::SeenRequests::shared(
                    "slack",
                    secret.expose().as_bytes(),
                    signature::WINDOW_SECONDS,
                ),
                None => Arc::new(crate::replay::SeenRequests::new(signature::WINDOW_SECONDS)),
            },
            signing_secret,
        })
    }

    /// An `event_callback` as what the hub takes: a message someone wrote.
    fn on_event(&self, payload: &Value) -> Option<Incoming> {
        if payload.get("type").and_then(Value::as_str) != Some("event_callback")
            || !self.in_this_workspace(payload)
        {
            return None;
        }
        if let Some(id) = short(payload.get("event_id")) {
            let mut seen = lock(&self.seen_events);
            if seen.contains(&id) {
                tracing::debug!(channel = %self.name, event = %id, "a Slack event came again; skipped");
                return None;
            }
            if seen.len() >= MAX_SEEN_EVENTS {
                seen.pop_front();
            }
            seen.push_back(id);
        }
        let event = payload.get("event")?;
        // Edits, joins, bot posts and the like have a subtype; only people's messages count.
        if event.get("type").and_then(Value::as_str) != Some("message")
            || event.get("subtype").is_some()
            || event.get("bot_id").is_some()
        {
            return None;
        }
        let user = short(event.get("user"))?;
        if lock(&self.bot_user).as_deref() == Some(user.as_str()) {
            return None;
        }
        let text = event.get("text")?.as_str()?.to_string();
        let chat = short(event.get("channel"))?;
        let direct = event.get("channel_type").and_then(Value::as_str) == Some("im");
        Some(Incoming::Message(Inbound {
            chat,
            thread: short(event.get("thread_ts")),
            user: PlatformUser {
                id: user.clone(),
                name: user,
            },
            text,
            direct,
            // A shared message's text is in its attachments, never in `text`.
            may_command: true,
        }))
    }

    /// An interactivity payload: a button press or a comment modal's submission.
    /// Whether what the payload says of its workspace (any of the places Slack puts
    /// it) is this app's workspace. Nothing named: taken (Slack names it on every kind
    /// handled here; the signature or the Socket Mode connection already vouches for
    /// the app).
    fn in_this_workspace(&self, payload: &Value) -> bool {
        let Some(ours) = lock(&self.team).clone() else {
            return true;
        };
        let named = [
            payload.get("team_id"),
            payload.pointer("/team/id"),
            payload.pointer("/user/team_id"),
            payload.pointer("/event/team"),
        ];
        let foreign = named
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .find(|team| *team != ours);
        if let Some(team) = foreign {
            tracing::warn!(channel = %self.name, team = %team.chars().take(40).collect::<String>(), "an event or press from another Slack workspace; ignored");
            return false;
        }
        true
    }

    fn on_interaction(&self, payload: &Value) -> Option<Incoming> {
        if !self.in_this_workspace(payload) {
            return None;
        }
        let user = user_of(payload.get("user")?)?;
        match payload.get("type").and_then(Value::as_str)? {
            "block_actions" => {
                let action = payload.get("actions")?.as_array()?.first()?;
                let data = action.get("value")?.as_str()?.chars().take(200).collect();
                let channel = short(payload.pointer("/channel/id"))
                    .or_else(|| short(payload.pointer("/container/channel_id")))?;
                let trigger = payload
                    .get("trigger_id")
                    .and_then(Value::as_str)
                    .map(|t| t.chars().take(200).collect());
                let respond = self.responder(channel, user.id.clone(), trigger);
                Some(Incoming::Click {
                    data,
                    user,
                    respond,
                })
            }
            "view_submission" => {
                let view = payload.get("view")?;
                if view.get("callback_id").and_then(Value::as_str) != Some(render::COMMENT_VIEW) {
                    return None;
                }
                let view_id = short(view.get("id"))?;
                let prompt = {
                    let mut prompts = lock(&self.prompts);
                    let matches = prompts
                        .get(&view_id)
                        .is_some_and(|p| p.user == user.id && p.at.elapsed() < PROMPT_LIFETIME);
                    if !matches {
                        palisade_policy::budgeted!(warn, channel = %self.name, user = %user.id, "a comment from a modal this host did not open for that user; ignored");
                        return None;
                    }
                    prompts.remove(&view_id)?
                };
                let text = view
                    .pointer(&format!(
                        "/state/values/{}/{}/value",
                        render::COMMENT_BLOCK,
                        render::COMMENT_INPUT
                    ))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let client = self.client.clone();
                let to = user.id.clone();
                let respond: Responder = Box::new(move |answer| {
                    Box::pin(async move {
                        let text = render::escape(answer.text());
                        if text.is_empty() {
                            return;
                        }
                        if let Err(error) = client.post_message(&to, &text, None, None).await {
                            tracing::debug!(%error, "could not confirm a Slack comment");
                        }
                    })
                });
                Some(Incoming::Comment {
                    token: prompt.token,
                    user,
                    text,
                    respond,
                })
            }
            _ => None,
        }
    }

    /// Answers a press privately (`chat.postEphemeral`), or opens the comment modal.
    fn responder(&self, channel: String, user: String, trigger: Option<String>) -> Responder {
        let client = self.client.clone();
        let prompts = Arc::clone(&self.prompts);
        Box::new(move |answer| {
            Box::pin(async move {
                if let ClickAnswer::AskComment { token, title } = &answer {
                    let Some(trigger) = trigger else { return };
                    match client
                        .views_open(&trigger, render::comment_modal(token, title))
                        .await
                    {
                        Ok(view) => {
                            let mut prompts = lock(&prompts);
                            prompts.retain(|_, p| p.at.elapsed() < PROMPT_LIFETIME);
                            if prompts.len() >= MAX_PROMPTS {
                                if let Some(oldest) = prompts
                                    .iter()
                                    .min_by_key(|(_, p)| p.at)
                                    .map(|(k, _)| k.clone())
                                {
                                    prompts.remove(&oldest);
                                }
                            }
                            prompts.insert(
                                view,
                                Prompt {
                                    token: token.clone(),
                                    user,
                                    at: Instant::now(),
                                },
                            );
                        }
                        Err(error) => {
                            tracing::warn!(%error, "could not open the comment modal on Slack")
                        }
                    }
                    return;
                }
                let text = render::escape(answer.text());
                if let Err(error) = client.post_ephemeral(&channel, &user, &text).await {
                    tracing::debug!(%error, "could not answer a Slack button press");
                }
            })
        })
    }

    async fn deliver(&self, incoming: Incoming) -> bool {
        let inbox = lock(&self.inbox).clone();
        match inbox {
            Some(inbox) => inbox.send_timeout(incoming, INBOX_WAIT).await.is_ok(),
            None => false,
        }
    }

    /// Socket Mode until shutdown: a connection per `apps.connections.open`, opened
    /// again when Slack asks (`disconnect`) or closes it.
    async fn socket_mode(
        &self,
        inbox: &mpsc::Sender<Incoming>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), ChannelError> {
        loop {
            let address = self.client.connections_open().await?;
            let url = url::Url::parse(&address).map_err(|_| {
                ChannelError::Platform("Slack named a Socket Mode URL that is not a URL".into())
            })?;
            let mut socket = crate::ws::connect("Slack Socket Mode", &url).await?;
            let started = Instant::now();
            let ended = self.serve_socket(&mut socket, inbox, shutdown).await;
            let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
            match ended {
                Ok(SocketEnd::Shutdown) => return Ok(()),
                Ok(SocketEnd::Reconnect) if started.elapsed() >= SHORTEST_CONNECTION => {
                    tracing::info!(channel = %self.name, "Slack Socket Mode: connecting again");
                }
                Ok(SocketEnd::Reconnect) => {
                    return Err(ChannelError::Platform(
                        "Slack closed the Socket Mode connection at once".into(),
                    ))
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn serve_socket(
        &self,
        socket: &mut crate::ws::Socket,
        inbox: &mpsc::Sender<Incoming>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<SocketEnd, ChannelError> {
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_frame = Instant::now();
        loop {
            let frame = tokio::select! {
                _ = crate::channel::stopped(shutdown) => return Ok(SocketEnd::Shutdown),
                _ = ping.tick() => {
                    if last_frame.elapsed() > SILENCE_LIMIT {
                        return Err(ChannelError::Platform(format!(
                            "Slack Socket Mode: nothing received for {} s", SILENCE_LIMIT.as_secs()
                        )));
                    }
                    send(socket, Message::Ping(Vec::new().into())).await?;
                    continue;
                }
                frame = socket.next() => frame,
            };
            last_frame = Instant::now();
            let text = match frame {
                None | Some(Ok(Message::Close(_))) => return Ok(SocketEnd::Reconnect),
                Some(Err(error)) => {
                    return Err(ChannelError::Platform(format!(
                        "Slack Socket Mode: {}",
                        crate::ws::describe(&error)
                    )))
                }
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(_)) => continue,
            };
            let Ok(envelope) = serde_json::from_str::<Value>(text.as_str()) else {
                tracing::warn!(channel = %self.name, "Slack sent a Socket Mode frame that is not JSON; ignored");
                continue;
            };
            // Acknowledge first: Slack wants it within 3 s, whatever the handling takes.
            if let Some(id) = envelope.get("envelope_id").and_then(Value::as_str) {
                let ack = json!({"envelope_id": id}).to_string();
                send(socket, Message::Text(ack.into())).await?;
            }
            let payload = envelope.get("payload").unwrap_or(&Value::Null);
            let incoming = match envelope.get("type").and_then(Value::as_str) {
                Some("hello") => {
                    tracing::info!(channel = %self.name, "Slack Socket Mode connected");
                    None
                }
                Some("disconnect") => return Ok(SocketEnd::Reconnect),
                Some("events_api") => self.on_event(payload),
                Some("interactive") => self.on_interaction(payload),
                _ => None,
            };
            // Bounded as on the HTTP endpoint: reading the socket must go on (Slack
            // wants every envelope acknowledged, and pings answered), so an event
            // the host cannot take within INBOX_WAIT is dropped and logged.
            if let Some(incoming) = incoming {
                if !crate::channel::hand_over(inbox, incoming, INBOX_WAIT, &self.name).await {
                    return Ok(SocketEnd::Shutdown);
                }
            }
        }
    }

    async fn on_http(&self, headers: &http::HeaderMap, body: &[u8]) -> WebhookReply {
        let Some(secret) = &self.signing_secret else {
            return WebhookReply::text(
                404,
                "this Slack channel has no signing secret; add it again with --signing-secret-file",
            );
        };
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let (timestamp, signature) = (
            header("x-slack-request-timestamp"),
            header("x-slack-signature"),
        );
        let now = palisade_store::now_ms() / 1000;
        let checked =
            signature::verify(secret.expose().as_bytes(), timestamp, signature, body, now)
                .and_then(|()| {
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
            palisade_policy::budgeted!(warn, channel = %self.name, %error, "refused a request to the Slack endpoint");
            return WebhookReply::text(401, &format!("refused: {error}"));
        }
        let incoming = if body.first() == Some(&b'{') {
            let Ok(payload) = serde_json::from_slice::<Value>(body) else {
                return WebhookReply::text(400, "the body is not JSON");
            };
            if payload.get("type").and_then(Value::as_str) == Some("url_verification") {
                let challenge = short(payload.get("challenge")).unwrap_or_default();
                return WebhookReply::json(200, &json!({ "challenge": challenge }));
            }
            self.on_event(&payload)
        } else {
            let form = url::form_urlencoded::parse(body)
                .find(|(key, _)| key == "payload")
                .map(|(_, value)| value.into_owned());
            let Some(payload) = form.and_then(|p| serde_json::from_str::<Value>(&p).ok()) else {
                return WebhookReply::text(400, "expected a JSON event or a form with `payload`");
            };
            self.on_interaction(&payload)
        };
        if let Some(incoming) = incoming {
            if !self.deliver(incoming).await {
                // Slack sends it again after a 503: it must not then count as seen.
                if let Some(id) = serde_json::from_slice::<Value>(body)
                    .ok()
                    .and_then(|payload| short(payload.get("event_id")))
                {
                    lock(&self.seen_events).retain(|seen| *seen != id);
                }
                return WebhookReply::text(503, "the channel is not running; try again");
            }
        }
        WebhookReply::ok()
    }
}

enum SocketEnd {
    Shutdown,
    Reconnect,
}

async fn send(socket: &mut crate::ws::Socket, message: Message) -> Result<(), ChannelError> {
    tokio::time::timeout(Duration::from_secs(10), socket.send(message))
        .await
        .map_err(|_| ChannelError::Platform("Slack Socket Mode: a send timed out".into()))?
        .map_err(|e| {
            ChannelError::Platform(format!("Slack Socket Mode: {}", crate::ws::describe(&e)))
        })
}

impl Channel for Slack {
    fn name(&self) -> &str {
        &self.name
    }

    fn platform(&self) -> Platform {
        Platform::Slack
    }

    fn run(
        &self,
        inbox: mpsc::Sender<Incoming>,
        mut shutdown: watch::Receiver<bool>,
    ) -> BoxFuture<'_, Result<(), ChannelError>> {
        Box::pin(async move {
            *lock(&self.inbox) = Some(inbox.clone());
            let outcome = if self.client.app.is_some() {
                self.socket_mode(&inbox, &mut shutdown).await
            } else {
                // Events arrive over HTTP; nothing to hold open.
                crate::channel::stopped(&mut shutdown).await;
                Ok(())
            };
            *lock(&self.inbox) = None;
            outcome
        })
    }

    fn send_message<'a>(
        &'a self,
        chat: &'a str,
        thread: Option<&'a str>,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), ChannelError>> {
        Box::pin(async move {
            for part in crate::split_text(text, MAX_TEXT_CHARS) {
                self.client
                    .post_message(chat, &render::escape(&part), None, thread)
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
            let (text, blocks) = render::card(card);
            // A user id as the channel posts in the bot's direct conversation with them.
            let posted = self
                .client
                .post_message(user_id, &text, Some(blocks), None)
                .await?;
            Ok(CardRef {
                chat: posted.channel,
                message: posted.ts,
            })
        })
    }

    fn update_card<'a>(
        &'a self,
        at: &'a CardRef,
        card: &'a Card,
    ) -> BoxFuture<'a, Result<(), ChannelError>> {
        Box::pin(async move {
            let (text, blocks) = render::card(card);
            self.client
                .update(&at.chat, &at.message, &text, blocks)
                .await
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<String, ChannelError>> {
        Box::pin(async move {
            let me = self.client.auth_test().await?;
            let user = short(me.get("user_id"));
            *lock(&self.bot_user) = user.clone();
            *lock(&self.team) = short(me.get("team_id"));
            let mode = match (self.client.app.is_some(), self.signing_secret.is_some()) {
                (true, true) => "Socket Mode and Events API",
                (true, false) => "Socket Mode",
                _ => "Events API",
            };
            Ok(format!(
                "Slack bot {} ({}) in {}, {mode}",
                short(me.get("user")).unwrap_or_else(|| "?".into()),
                user.unwrap_or_else(|| "?".into()),
                short(me.get("team")).unwrap_or_else(|| "a workspace".into()),
            ))
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
    use crate::fake_api::FakeApi;

    const BOT: &str = "xoxb-SLACKBOTSECRET-1111";
    const SIGNING: &str = "8f742231b10e8888abcd99yyyzzz85a5";

    fn slack(base: &str) -> Slack {
        Slack::new(
            "team",
            base,
            SecretValue::new(BOT.into()),
            None,
            Some(SecretValue::new(SIGNING.into())),
        )
        .unwrap()
    }

    /// An id with a control character or too long is nobody's, never cleaned into a
    /// listed approver's id (`U0BOB\u{0}` read as `U0BOB`).
    #[test]
    fn an_id_is_taken_as_sent_or_not_at_all() {
        assert_eq!(short(Some(&json!("U0BOB"))), Some("U0BOB".to_string()));
        for bad in [
            json!("U0BOB\u{0}"),
            json!("U0\nBOB"),
            json!(""),
            json!("U".repeat(65)),
            json!(7),
        ] {
            assert_eq!(short(Some(&bad)), None, "{bad}");
        }
        assert_eq!(
            user_of(&json!({"id": "U0BOB\u{0}", "username": "bob"})).map(|u| u.id),
            None
        );
    }

    /// Slack's `error` (as a fake answered the outside review: the token echoed) goes
    /// into errors, and so the log and `channels list`, without the channel's secrets.
    #[tokio::test]
    async fn an_error_that_echoes_a_secret_is_cleaned() {
        let fake = FakeApi::start(|_, _, before| {
            let error = match before {
                0 => format!("invalid_auth {BOT}"),
                _ => format!("bad signing secret {SIGNING}\n\u{202E}"),
            };
            (200, vec![], json!({"ok": false, "error": error}))
        })
        .await;
        let slack = slack(&fake.base);
        for _ in 0..2 {
            let error = slack
                .send_message("U1", None, "hi")
                .await
                .unwrap_err()
                .to_string();
            assert!(error.contains("[redacted]"), "{error}");
            for secret in ["SLACKBOTSECRET", SIGNING, "\n", "\u{202E}"] {
                assert!(!error.contains(secret), "{error:?}");
            }
        }
    }

    /// A 429's `Retry-After` reaches the hub, bounded; one that is no number is none.
    #[tokio::test]
    async fn retry_after_is_kept_and_bounded() {
        let fake = FakeApi::start(|_, _, before| {
            let wait = ["30", "86400", "NaN", "soon"][before.min(3)];
            (
                429,
                vec![("retry-after", wait.to_string())],
                json!({"ok": false, "error": "ratelimited"}),
            )
        })
        .await;
        let slack = slack(&fake.base);
        let mut waits = Vec::new();
        for _ in 0..4 {
            let error = slack.send_message("U1", None, "hi").await.unwrap_err();
            assert!(error.is_transient(), "{error}");
            waits.push(error.retry_after());
        }
        assert_eq!(
            waits,
            [
                Some(Duration::from_secs(30)),
                Some(crate::http::MAX_RETRY_AFTER),
                None,
                None
            ]
        );
    }
}
