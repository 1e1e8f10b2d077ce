//! Telegram through the Bot API: long polling (`getUpdates`) for messages and button
//! presses, `sendMessage` with an inline keyboard for cards, `editMessageText` once a
//! card is decided, `answerCallbackQuery` for every press (a refusal as an alert only
//! the presser sees), and "deny with comment" as a forced reply matched to the same
//! user. The client is [`crate::http::ApiClient`] (see its doc for why not an SDK);
//! `api.rs` has the calls, `render.rs` the card.
//!
//! Telegram sends nothing unsolicited to us, so there is no signature to check: every
//! update comes from the Bot API over TLS, authenticated by the token. What an update
//! says is still untrusted (any Telegram user can press a button on a card forwarded to
//! them): the hub decides who counts.

mod api;
mod render;

use crate::card::Card;
use crate::channel::{
    Channel, ChannelError, ClickAnswer, Inbound, Incoming, PlatformUser, Responder,
};
use crate::http::ApiClient;
use crate::lock;
use futures_util::future::BoxFuture;
use palisade_approvals::Platform;
use palisade_policy::SecretValue;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

pub const DEFAULT_API_BASE: &str = "https://api.telegram.org";
/// Seconds a `getUpdates` call waits for something to happen.
const POLL_SECONDS: u64 = 25;
/// How long a "reply with your comment" prompt stays open.
const PROMPT_LIFETIME: Duration = Duration::from_secs(600);
/// Prompts kept at once (oldest dropped first).
const MAX_PROMPTS: usize = 256;
/// Telegram's limit on a message's text.
pub(crate) const MAX_TEXT_CHARS: usize = 4096;

/// A "reply with your comment" prompt waiting for its answer.
struct Prompt {
    token: String,
    user: String,
    at: Instant,
}

pub struct Telegram {
    name: String,
    api: ApiClient,
    token: SecretValue,
    /// (chat id, prompt message id) → the card and user it asks.
    prompts: Arc<Mutex<HashMap<(String, String), Prompt>>>,
    /// The next update to ask for, kept across reconnections: a batch handed to the
    /// hub is not taken again when polling starts over after a failure.
    offset: Mutex<Option<i64>>,
}

impl Telegram {
    pub fn new(name: &str, api_base: &str, token: SecretValue) -> Result<Telegram, ChannelError> {
        if token.expose().trim().is_empty()
            || token
                .expose()
                .chars()
                .any(|c| c.is_whitespace() || c == '/' || c == '?' || c == '#')
        {
            return Err(ChannelError::Config(
                "the Telegram bot token is empty or malformed; copy it from @BotFather".into(),
            ));
        }
        Ok(Telegram {
            name: name.to_string(),
            api: ApiClient::new(api_base, Duration::from_secs(20))
                .map_err(|e| ChannelError::Config(e.to_string()))?,
            token,
            prompts: Arc::default(),
            offset: Mutex::default(),
        })
    }

    fn client(&self) -> api::Client {
        api::Client {
            api: self.api.clone(),
            token: self.token.clone(),
        }
    }

    fn handle_update(&self, update: &Value) -> Option<Incoming> {
        if let Some(query) = update.get("callback_query") {
            let user = user_of(query.get("from")?)?;
            let data = query.get("data")?.as_str()?.to_string();
            let id = query.get("id")?.as_str()?.to_string();
            let chat = query
                .pointer("/message/chat/id")
                .map(id_text)
                .unwrap_or_default();
            let respond = self.responder(id, chat, user.id.clone());
            return Some(Incoming::Click {
                data,
                user,
                respond,
            });
        }
        let message = update.get("message")?;
        let user = user_of(message.get("from")?)?;
        let text = message.get("text")?.as_str()?.to_string();
        let chat = id_text(message.pointer("/chat/id")?);
        let direct = message.pointer("/chat/type").and_then(Value::as_str) == Some("private");
        if let Some(replied) = message.pointer("/reply_to_message/message_id") {
            let key = (chat.clone(), id_text(replied));
            let mut prompts = lock(&self.prompts);
            let matches = prompts
                .get(&key)
                .is_some_and(|p| p.user == user.id && p.at.elapsed() < PROMPT_LIFETIME);
            if matches {
                let prompt = prompts.remove(&key)?;
                let client = self.client();
                let reply_chat = chat.clone();
                let respond: Responder = Box::new(move |answer| {
                    Box::pin(async move {
                        if let ClickAnswer::AskComment { .. } = answer {
                            return;
                        }
                        let text = answer.text().to_string();
                        let _ = client.send(&reply_chat, &text, None, None).await;
                    })
                });
                return Some(Incoming::Comment {
                    token: prompt.token,
                    user,
                    text,
                    respond,
                });
            }
        }
        Some(Incoming::Message(Inbound {
            thread: message
                .get("message_thread_id")
                .map(id_text)
                .filter(|_| message.get("is_topic_message").and_then(Value::as_bool) == Some(true)),
            chat,
            user,
            text,
            direct,
        }))
    }

    /// Answers a button press: always `answerCallbackQuery` (so the client stops
    /// spinning), a refusal as an alert, a comment request as a forced reply.
    fn responder(&self, query_id: String, chat: String, user: String) -> Responder {
        let client = self.client();
        let prompts = Arc::clone(&self.prompts);
        Box::new(move |answer| {
            Box::pin(async move {
                let (text, alert) = match &answer {
                    ClickAnswer::Done(text) | ClickAnswer::Decided { text, .. } => {
                        (text.clone(), false)
                    }
                    ClickAnswer::Refused(text) => (text.clone(), true),
                    ClickAnswer::AskComment { .. } => ("Reply with your comment".into(), false),
                };
                if let Err(error) = client.answer_callback(&query_id, &text, alert).await {
                    tracing::debug!(%error, "could not answer a Telegram button press");
                }
                if let ClickAnswer::AskComment { token, title } = answer {
                    let prompt = format!(
                        "Why deny \"{}\"? Reply to this message with your comment; the agent reads it.",
                        title.chars().take(200).collect::<String>()
                    );
                    let force = json!({"force_reply": true, "selective": true, "input_field_placeholder": "Your comment"});
                    match client.send(&chat, &prompt, Some(force), None).await {
                        Ok(message_id) => {
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
                                (chat, message_id),
                                Prompt {
                                    token,
                                    user,
                                    at: Instant::now(),
                                },
                            );
                        }
                        Err(error) => {
                            tracing::warn!(%error, "could not ask for a denial's comment on Telegram")
                        }
                    }
                }
            })
        })
    }
}

/// Telegram ids are integers (chat ids up to 52 bits, negative for groups); kept as text.
fn id_text(value: &Value) -> String {
    match value {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.chars().take(64).collect(),
        _ => String::new(),
    }
}

fn user_of(from: &Value) -> Option<PlatformUser> {
    let id = id_text(from.get("id")?);
    if id.is_empty() || from.get("is_bot").and_then(Value::as_bool) == Some(true) {
        return None;
    }
    let first = from.get("first_name").and_then(Value::as_str).unwrap_or("");
    let name = from
        .get("username")
        .and_then(Value::as_str)
        .map(|u| format!("@{u}"))
        .unwrap_or_else(|| first.to_string());
    Some(PlatformUser {
        id,
        name: name.chars().take(64).collect(),
    })
}

impl Channel for Telegram {
    fn name(&self) -> &str {
        &self.name
    }

    fn platform(&self) -> Platform {
        Platform::Telegram
    }

    fn run(
        &self,
        inbox: mpsc::Sender<Incoming>,
        mut shutdown: watch::Receiver<bool>,
    ) -> BoxFuture<'_, Result<(), ChannelError>> {
        Box::pin(async move {
            let client = self.client();
            loop {
                let offset = *lock(&self.offset);
                let updates = tokio::select! {
                    updates = client.updates(offset, POLL_SECONDS) => updates?,
                    _ = crate::channel::stopped(&mut shutdown) => return Ok(()),
                };
                for update in updates {
                    if let Some(id) = update.get("update_id").and_then(Value::as_i64) {
                        let mut offset = lock(&self.offset);
                        *offset = Some(offset.map_or(id + 1, |o| o.max(id + 1)));
                    }
                    if let Some(incoming) = self.handle_update(&update) {
                        if inbox.send(incoming).await.is_err() {
                            return Ok(());
                        }
                    }
                }
            }
        })
    }

    fn send_message<'a>(
        &'a self,
        chat: &'a str,
        _thread: Option<&'a str>,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), ChannelError>> {
        Box::pin(async move {
            let client = self.client();
            for part in crate::split_text(text, MAX_TEXT_CHARS) {
                client.send(chat, &part, None, None).await?;
            }
            Ok(())
        })
    }

    fn post_card<'a>(
        &'a self,
        user_id: &'a str,
        card: &'a Card,
    ) -> BoxFuture<'a, Result<crate::channel::CardRef, ChannelError>> {
        Box::pin(async move {
            let (text, markup) = render::card(card);
            // A private chat's id is the user's id.
            let message = self.client().send(user_id, &text, markup, None).await?;
            Ok(crate::channel::CardRef {
                chat: user_id.to_string(),
                message,
            })
        })
    }

    fn update_card<'a>(
        &'a self,
        at: &'a crate::channel::CardRef,
        card: &'a Card,
    ) -> BoxFuture<'a, Result<(), ChannelError>> {
        Box::pin(async move {
            let (text, markup) = render::card(card);
            self.client()
                .edit(&at.chat, &at.message, &text, markup)
                .await
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<String, ChannelError>> {
        Box::pin(async move {
            let me = self.client().me().await?;
            let name = me
                .get("username")
                .and_then(Value::as_str)
                .map(|u| format!("@{u}"))
                .unwrap_or_else(|| "the bot".into());
            Ok(format!("Telegram bot {name} (id {})", id_text(&me["id"])))
        })
    }
}
