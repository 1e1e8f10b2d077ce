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
use crate::platform_text::Scrubber;
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
/// Telegram's limit on a message's text, in UTF-16 code units (how it counts).
pub(crate) const MAX_TEXT_UNITS: usize = 4096;
/// Update ids are above zero and fit in 52 bits (Telegram's integers do); an update
/// with another id is not one to take, and its id is no offset to ask for next.
const MAX_UPDATE_ID: i64 = 1 << 52;
/// Wait before polling again when a whole batch was updates not taken (Telegram
/// hands an update it was not told to forget again at once).
const UNTAKEN_BATCH_PAUSE: Duration = Duration::from_secs(2);

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
    /// The last update skipped for its id, so one that comes back is logged once.
    skipped: Mutex<Option<String>>,
    /// The bot's username (`getMe`, asked when polling starts): a command naming
    /// another bot (`/approve@other_bot …`, typed in a group for that bot) is not one.
    username: Mutex<Option<String>>,
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
                .map_err(|e| ChannelError::Config(e.to_string()))?
                .scrubbing(Scrubber::new([&token])),
            token,
            prompts: Arc::default(),
            offset: Mutex::default(),
            skipped: Mutex::default(),
            username: Mutex::default(),
        })
    }

    fn client(&self) -> api::Client {
        api::Client {
            api: self.api.clone(),
            token: self.token.clone(),
        }
    }

    /// Moves the offset past `update` when its id is one Telegram could have given;
    /// `false` (logged once per id) when it is not, and the update is not to be taken.
    fn confirm(&self, update: &Value) -> bool {
        let id = update.get("update_id");
        match id.and_then(Value::as_i64) {
            Some(id) if (0..MAX_UPDATE_ID).contains(&id) => {
                let next = id + 1;
                let mut offset = lock(&self.offset);
                *offset = Some(offset.map_or(next, |o| o.max(next)));
                true
            }
            _ => {
                let shown: String = id
                    .map(Value::to_string)
                    .unwrap_or_else(|| "none".into())
                    .chars()
                    .take(40)
                    .collect();
                let mut skipped = lock(&self.skipped);
                if skipped.as_deref() != Some(shown.as_str()) {
                    tracing::warn!(channel = %self.name, update_id = %shown, "a Telegram update with an impossible id; skipped");
                    *skipped = Some(shown);
                }
                false
            }
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
        let may_command = self.may_command(message, &text);
        Some(Incoming::Message(Inbound {
            may_command,
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

    /// Whether a message's text may be read as a typed command: not forwarded (an
    /// approver who forwards someone's `/approve ID always` to the bot has not typed
    /// it), not sent through an inline bot, and a command that names a bot names this
    /// one (Telegram appends `@name` in groups with several bots).
    fn may_command(&self, message: &Value, text: &str) -> bool {
        const NOT_TYPED: [&str; 7] = [
            "forward_origin",
            "forward_from",
            "forward_from_chat",
            "forward_sender_name",
            "forward_date",
            "is_automatic_forward",
            "via_bot",
        ];
        if NOT_TYPED.iter().any(|key| message.get(key).is_some()) {
            return false;
        }
        let command = text
            .trim_start()
            .split(char::is_whitespace)
            .next()
            .unwrap_or("");
        match command.split_once('@') {
            None => true,
            Some((_, named)) => lock(&self.username)
                .as_deref()
                .is_some_and(|own| own.eq_ignore_ascii_case(named)),
        }
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
            // Without its name, a command naming a bot is taken for none.
            let me = tokio::select! {
                me = client.me() => me,
                _ = crate::channel::stopped(&mut shutdown) => return Ok(()),
            };
            match me.map(|me| {
                me.get("username")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            }) {
                Ok(Some(name)) => *lock(&self.username) = Some(name),
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(channel = %self.name, %error, "could not ask Telegram for the bot's name; commands naming a bot are not taken")
                }
            }
            loop {
                let offset = *lock(&self.offset);
                let updates = tokio::select! {
                    updates = client.updates(offset, POLL_SECONDS) => updates?,
                    _ = crate::channel::stopped(&mut shutdown) => return Ok(()),
                };
                let mut taken = 0;
                let batch = updates.len();
                for update in updates {
                    if !self.confirm(&update) {
                        continue;
                    }
                    taken += 1;
                    if let Some(incoming) = self.handle_update(&update) {
                        if inbox.send(incoming).await.is_err() {
                            return Ok(());
                        }
                    }
                }
                if batch > 0 && taken == 0 {
                    tokio::select! {
                        _ = tokio::time::sleep(UNTAKEN_BATCH_PAUSE) => {}
                        _ = crate::channel::stopped(&mut shutdown) => return Ok(()),
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
            for part in crate::split_text_measured(text, MAX_TEXT_UNITS, crate::utf16_units) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_api::FakeApi;

    const TOKEN: &str = "123456:TELEGRAMBOTSECRET0123456789abcdefghij";

    fn message(id: i64, text: &str) -> Value {
        json!({"update_id": id, "message": {
            "message_id": 1, "text": text,
            "from": {"id": 42, "is_bot": false, "first_name": "Ana"},
            "chat": {"id": 42, "type": "private"},
        }})
    }

    fn text_of(incoming: Incoming) -> String {
        match incoming {
            Incoming::Message(message) => message.text,
            other => panic!("not a message: {other:?}"),
        }
    }

    /// An update whose id cannot be one of Telegram's (`id + 1` used to overflow and
    /// end the channel's task for good) is skipped; the updates around it are taken,
    /// the offset moves past them, and polling goes on.
    #[tokio::test]
    async fn an_impossible_update_id_is_skipped_and_polling_goes_on() {
        // Calls before: getMe, then the polls.
        let fake = FakeApi::start(|_, _, before| {
            let result = match before {
                0 => json!({"id": 1, "is_bot": true, "username": "palisade_bot"}),
                1 => json!([message(i64::MAX, "boom"), message(5, "first")]),
                2 => json!([message(6, "second"), message(-3, "boom"), {"update_id": 1.5}]),
                _ => json!([message(i64::MAX, "boom")]),
            };
            (200, vec![], json!({"ok": true, "result": result}))
        })
        .await;
        let telegram = Telegram::new("tg", &fake.base, SecretValue::new(TOKEN.into())).unwrap();
        let (inbox, mut incoming) = mpsc::channel(8);
        let (stop, stopped) = watch::channel(false);
        let running = tokio::spawn(async move { telegram.run(inbox, stopped).await });
        for expected in ["first", "second"] {
            let got = tokio::time::timeout(Duration::from_secs(5), incoming.recv())
                .await
                .expect("the channel keeps polling")
                .expect("the channel is running");
            assert_eq!(text_of(got), expected);
        }
        // A batch of nothing to take is polled again, after a pause.
        let deadline = Instant::now() + Duration::from_secs(10);
        while fake.calls().len() < 5 {
            assert!(Instant::now() < deadline, "polling stopped");
            assert!(!running.is_finished(), "the channel ended: {running:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let offsets: Vec<Value> = fake
            .calls()
            .iter()
            .skip(1)
            .take(4)
            .map(|(_, body)| body["offset"].clone())
            .collect();
        assert_eq!(offsets, [Value::Null, json!(6), json!(7), json!(7)]);
        assert!(
            incoming.try_recv().is_err(),
            "an impossible update was taken"
        );
        stop.send(true).unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(5), running)
            .await
            .expect("stops when asked")
            .expect("never panics");
        assert!(ended.is_ok());
    }

    /// A typed command is one only when the approver typed it for this bot: a message
    /// forwarded from someone else (or sent through an inline bot) and a command naming
    /// another bot (`/approve@other_bot`, typed in a group for that bot) are messages
    /// like any other (review: each decided an approval as the forwarder's or the
    /// typist's decision, in any chat).
    #[test]
    fn only_commands_typed_for_this_bot_are_commands() {
        let telegram =
            Telegram::new("tg", "http://127.0.0.1:9", SecretValue::new(TOKEN.into())).unwrap();
        let may_command = |extra: Value, text: &str| {
            let mut update = message(7, text);
            for (key, value) in extra.as_object().unwrap() {
                update["message"][key] = value.clone();
            }
            match telegram.handle_update(&update) {
                Some(Incoming::Message(message)) => message.may_command,
                other => panic!("not a message: {other:?}"),
            }
        };
        let forwarded = [
            json!({"forward_origin": {"type": "user", "date": 1, "sender_user": {"id": 333, "is_bot": false, "first_name": "M"}}}),
            json!({"forward_date": 1, "forward_from": {"id": 333, "is_bot": false, "first_name": "M"}}),
            json!({"forward_sender_name": "M", "forward_date": 1}),
            json!({"is_automatic_forward": true}),
            json!({"via_bot": {"id": 9, "is_bot": true, "first_name": "B"}}),
        ];
        for extra in forwarded {
            assert!(
                !may_command(extra.clone(), "/approve apr_x once"),
                "{extra}"
            );
        }
        // Before the bot's name is known, no named command is taken.
        assert!(!may_command(json!({}), "/approve@palisade_bot apr_x"));
        *lock(&telegram.username) = Some("palisade_bot".into());
        assert!(may_command(json!({}), "/approve apr_x once"));
        assert!(may_command(json!({}), "/approve@palisade_bot apr_x once"));
        assert!(may_command(json!({}), "/deny@Palisade_Bot apr_x no"));
        for other in [
            "/approve@other_bot apr_x once",
            "/approve@ apr_x",
            "/approve@palisade_bot2 apr_x",
        ] {
            assert!(!may_command(json!({}), other), "{other}");
        }
    }

    /// What Telegram says goes into errors and the log without the bot token, and a
    /// rate limit's `retry_after` is kept for the hub.
    #[tokio::test]
    async fn errors_never_carry_the_token_and_keep_retry_after() {
        let fake = FakeApi::start(|path, _, _| {
            let echo = format!("Bad Request: bot{TOKEN} is\u{1b}[2J not welcome");
            match path.rsplit('/').next() {
                Some("sendMessage") => (200, vec![], json!({"ok": false, "description": echo})),
                Some("getMe") => (401, vec![], json!({"ok": false, "description": echo})),
                _ => (
                    429,
                    vec![],
                    json!({"ok": false, "description": "Too Many Requests: retry after 30",
                           "parameters": {"retry_after": 30}}),
                ),
            }
        })
        .await;
        let telegram = Telegram::new("tg", &fake.base, SecretValue::new(TOKEN.into())).unwrap();
        let secret_part = "TELEGRAMBOTSECRET";
        let sent = telegram.send_message("42", None, "hi").await.unwrap_err();
        let checked = telegram.check().await.unwrap_err();
        for error in [sent.to_string(), checked.to_string()] {
            assert!(!error.contains(secret_part), "{error}");
            assert!(!error.contains('\u{1b}'), "{error:?}");
            assert!(error.contains("not welcome"), "{error}");
        }
        let (inbox, _incoming) = mpsc::channel(8);
        let (_stop, stopped) = watch::channel(false);
        let limited = telegram.run(inbox, stopped).await.unwrap_err();
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(30)));
    }
}
