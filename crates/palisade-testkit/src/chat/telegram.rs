//! A fake Telegram Bot API. Updates (messages, button presses) are queued by the test
//! and handed out by `getUpdates` in order, honouring `offset` (earlier ones are
//! confirmed and dropped) and long-polling up to 1 s; every `sendMessage`,
//! `editMessageText` and `answerCallbackQuery` is recorded. A request with another
//! token gets 401 like the real API.

use super::server::{json, Handler, Server};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// A message the bot sent, as it is now (edits applied).
#[derive(Clone, Debug, PartialEq)]
pub struct TelegramMessage {
    pub chat_id: i64,
    pub message_id: i64,
    pub text: String,
    /// `reply_markup` as last sent (`inline_keyboard`, `force_reply`…).
    pub reply_markup: Option<Value>,
    pub edits: usize,
}

impl TelegramMessage {
    /// The `callback_data` of the button labelled `label`.
    pub fn button(&self, label: &str) -> Option<String> {
        let rows = self
            .reply_markup
            .as_ref()?
            .get("inline_keyboard")?
            .as_array()?;
        rows.iter()
            .filter_map(Value::as_array)
            .flatten()
            .find(|b| b["text"] == label)
            .and_then(|b| b["callback_data"].as_str())
            .map(str::to_string)
    }

    pub fn has_buttons(&self) -> bool {
        self.reply_markup
            .as_ref()
            .and_then(|m| m.get("inline_keyboard"))
            .and_then(Value::as_array)
            .is_some_and(|rows| !rows.is_empty())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct CallbackAnswer {
    pub callback_query_id: String,
    pub text: String,
    pub show_alert: bool,
}

#[derive(Default)]
struct State {
    updates: VecDeque<Value>,
    next_update: i64,
    next_message: i64,
    next_query: i64,
    messages: Vec<TelegramMessage>,
    answers: Vec<CallbackAnswer>,
    /// Calls by method name, in order.
    calls: Vec<String>,
    /// Chats whose `sendMessage` answers only after this long (a slow platform).
    slow_chats: std::collections::HashMap<i64, Duration>,
}

pub struct FakeTelegram {
    server: Server,
    token: String,
    state: Arc<Mutex<State>>,
    added: Arc<Notify>,
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl FakeTelegram {
    pub fn start(token: &str) -> std::io::Result<FakeTelegram> {
        let state = Arc::new(Mutex::new(State {
            next_update: 1000,
            next_message: 1,
            next_query: 1,
            ..State::default()
        }));
        let added = Arc::new(Notify::new());
        let expected = format!("/bot{token}/");
        let handler: Handler = {
            let state = Arc::clone(&state);
            let added = Arc::clone(&added);
            Arc::new(move |parts, body| {
                let state = Arc::clone(&state);
                let added = Arc::clone(&added);
                let expected = expected.clone();
                Box::pin(async move {
                    let path = parts.uri.path().to_string();
                    let Some(method) = path.strip_prefix(&expected) else {
                        return json(
                            401,
                            &json!({"ok": false, "error_code": 401, "description": "Unauthorized"}),
                        );
                    };
                    let body: Value = serde_json::from_slice(&body).unwrap_or(json!({}));
                    let (status, answer) = handle(&state, &added, method, &body).await;
                    json(status, &answer)
                })
            })
        };
        Ok(FakeTelegram {
            server: Server::start("telegram", handler)?,
            token: token.to_string(),
            state,
            added,
        })
    }

    /// The `--api-base` to give `palisade channels add telegram`.
    pub fn api_base(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    fn push(&self, update: Value) {
        let mut state = lock(&self.state);
        let id = state.next_update;
        state.next_update += 1;
        let mut update = update;
        update["update_id"] = json!(id);
        state.updates.push_back(update);
        drop(state);
        self.added.notify_waiters();
    }

    /// `user` writes `text` in a private chat with the bot (chat id = user id).
    pub fn user_writes(&self, user: i64, name: &str, text: &str) {
        self.push(json!({"message": {
            "message_id": 1_000_000 + user,
            "date": 1_700_000_000,
            "from": {"id": user, "is_bot": false, "first_name": name},
            "chat": {"id": user, "type": "private", "first_name": name},
            "text": text,
        }}));
    }

    /// `user` writes `text` in the group `chat` (a negative id).
    pub fn user_writes_in(&self, chat: i64, user: i64, name: &str, text: &str) {
        self.push(json!({"message": {
            "message_id": 3_000_000 + user,
            "date": 1_700_000_000,
            "from": {"id": user, "is_bot": false, "first_name": name},
            "chat": {"id": chat, "type": "supergroup", "title": "Team"},
            "text": text,
        }}));
    }

    /// `user` replies in their private chat to the bot's message `to`.
    pub fn user_replies(&self, user: i64, name: &str, to: i64, text: &str) {
        self.push(json!({"message": {
            "message_id": 2_000_000 + user,
            "date": 1_700_000_000,
            "from": {"id": user, "is_bot": false, "first_name": name},
            "chat": {"id": user, "type": "private"},
            "reply_to_message": {"message_id": to, "chat": {"id": user, "type": "private"}},
            "text": text,
        }}));
    }

    /// `user` presses a button with `data` on the bot's message `message` in `chat`;
    /// returns the callback query id.
    pub fn user_presses(
        &self,
        user: i64,
        name: &str,
        chat: i64,
        message: i64,
        data: &str,
    ) -> String {
        let id = {
            let mut state = lock(&self.state);
            state.next_query += 1;
            format!("q{}", state.next_query)
        };
        self.push(json!({"callback_query": {
            "id": id,
            "from": {"id": user, "is_bot": false, "first_name": name},
            "message": {"message_id": message, "chat": {"id": chat, "type": "private"}, "date": 1_700_000_000},
            "chat_instance": "1",
            "data": data,
        }}));
        id
    }

    /// Messages the bot sent to `chat`, oldest first.
    pub fn messages_to(&self, chat: i64) -> Vec<TelegramMessage> {
        lock(&self.state)
            .messages
            .iter()
            .filter(|m| m.chat_id == chat)
            .cloned()
            .collect()
    }

    pub fn answers(&self) -> Vec<CallbackAnswer> {
        lock(&self.state).answers.clone()
    }

    /// The answer to callback query `id`, once there is one (within `timeout`).
    pub fn wait_for_answer(&self, id: &str, timeout: Duration) -> Option<CallbackAnswer> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(answer) = self
                .answers()
                .into_iter()
                .find(|a| a.callback_query_id == id)
            {
                return Some(answer);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The first message to `chat` matching `check`, within `timeout`.
    pub fn wait_for_message(
        &self,
        chat: i64,
        timeout: Duration,
        check: impl Fn(&TelegramMessage) -> bool,
    ) -> Option<TelegramMessage> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = self.messages_to(chat).into_iter().find(|m| check(m)) {
                return Some(found);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn calls(&self) -> Vec<String> {
        lock(&self.state).calls.clone()
    }

    /// Makes `sendMessage` to `chat` answer only after `delay`, as a platform that is
    /// slow (or slowed on purpose) would.
    pub fn slow_chat(&self, chat: i64, delay: Duration) {
        lock(&self.state).slow_chats.insert(chat, delay);
    }
}

async fn handle(state: &Mutex<State>, added: &Notify, method: &str, body: &Value) -> (u16, Value) {
    lock(state).calls.push(method.to_string());
    let bad = |what: &str| {
        (
            400,
            json!({"ok": false, "error_code": 400, "description": format!("Bad Request: {what}")}),
        )
    };
    match method {
        "getMe" => (
            200,
            json!({"ok": true, "result": {"id": 4242, "is_bot": true, "first_name": "Palisade", "username": "palisade_test_bot"}}),
        ),
        "getUpdates" => {
            let wait = body["timeout"].as_u64().unwrap_or(0).min(1);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
            loop {
                let notified = added.notified();
                {
                    let mut state = lock(state);
                    if let Some(offset) = body["offset"].as_i64() {
                        while state
                            .updates
                            .front()
                            .is_some_and(|u| u["update_id"].as_i64() < Some(offset))
                        {
                            state.updates.pop_front();
                        }
                    }
                    if !state.updates.is_empty() || tokio::time::Instant::now() >= deadline {
                        let updates: Vec<Value> = state.updates.iter().take(100).cloned().collect();
                        return (200, json!({"ok": true, "result": updates}));
                    }
                }
                let _ = tokio::time::timeout_at(deadline, notified).await;
            }
        }
        "sendMessage" => {
            let Some(chat_id) = chat_id(&body["chat_id"]) else {
                return bad("chat not found");
            };
            let slow = lock(state).slow_chats.get(&chat_id).copied();
            if let Some(delay) = slow {
                tokio::time::sleep(delay).await;
            }
            let Some(text) = body["text"].as_str().filter(|t| !t.is_empty()) else {
                return bad("message text is empty");
            };
            if text.chars().count() > 4096 {
                return bad("message is too long");
            }
            let mut state = lock(state);
            let message_id = state.next_message;
            state.next_message += 1;
            state.messages.push(TelegramMessage {
                chat_id,
                message_id,
                text: text.to_string(),
                reply_markup: body.get("reply_markup").cloned(),
                edits: 0,
            });
            (
                200,
                json!({"ok": true, "result": {"message_id": message_id, "date": 1_700_000_000, "chat": {"id": chat_id, "type": "private"}, "text": text}}),
            )
        }
        "editMessageText" => {
            let (Some(chat_id), Some(message_id)) =
                (chat_id(&body["chat_id"]), body["message_id"].as_i64())
            else {
                return bad("message to edit not found");
            };
            let Some(text) = body["text"].as_str() else {
                return bad("text is empty");
            };
            let mut state = lock(state);
            let Some(message) = state
                .messages
                .iter_mut()
                .find(|m| m.chat_id == chat_id && m.message_id == message_id)
            else {
                return bad("message to edit not found");
            };
            if message.text == text && body.get("reply_markup").cloned() == message.reply_markup {
                return bad("message is not modified: specified new message content and reply markup are exactly the same");
            }
            message.text = text.to_string();
            message.reply_markup = body.get("reply_markup").cloned();
            message.edits += 1;
            (
                200,
                json!({"ok": true, "result": {"message_id": message_id, "chat": {"id": chat_id}, "text": text}}),
            )
        }
        "answerCallbackQuery" => {
            let Some(id) = body["callback_query_id"].as_str() else {
                return bad("query id is empty");
            };
            lock(state).answers.push(CallbackAnswer {
                callback_query_id: id.to_string(),
                text: body["text"].as_str().unwrap_or("").to_string(),
                show_alert: body["show_alert"].as_bool().unwrap_or(false),
            });
            (200, json!({"ok": true, "result": true}))
        }
        _ => (
            404,
            json!({"ok": false, "error_code": 404, "description": "Not Found"}),
        ),
    }
}

/// Telegram accepts a chat id as a number or a numeric string.
fn chat_id(value: &Value) -> Option<i64> {
    value.as_i64().or_else(|| value.as_str()?.parse().ok())
}
