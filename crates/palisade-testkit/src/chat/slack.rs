//! A fake Slack: the Web API under `/api/METHOD` (`auth.test`, `apps.connections.open`,
//! `chat.postMessage`, `chat.update`, `chat.postEphemeral`, `views.open`) and Socket
//! Mode on a WebSocket whose URL `apps.connections.open` hands out with a one-use
//! ticket. On connect it sends `hello`; the test's people act through `events_api` and
//! `interactive` envelopes, each with an `envelope_id` whose acknowledgement is
//! recorded. A wrong token gets `{"ok": false, "error": "invalid_auth"}` as Slack
//! answers. For the Events API over HTTPS, the same payloads can be built without
//! sending them, and [`slack_signature`] signs a body as Slack does.

use super::server::{json, Handler, Server};
use super::ws::{WsHandler, WsServer};
use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// The bot's user id (`auth.test`).
pub const SLACK_BOT_USER: &str = "UPALISADE";

/// A message the bot posted, as it is now (edits applied).
#[derive(Clone, Debug, PartialEq)]
pub struct SlackMessage {
    pub channel: String,
    pub ts: String,
    pub text: String,
    pub blocks: Option<Value>,
    pub thread_ts: Option<String>,
    pub edits: usize,
    /// When it was posted (benchmarks).
    pub posted_at: Instant,
}

impl SlackMessage {
    /// The `value` of the button labelled `label`.
    pub fn button(&self, label: &str) -> Option<String> {
        self.buttons()
            .into_iter()
            .find(|b| b["text"]["text"] == label)
            .and_then(|b| b["value"].as_str().map(str::to_string))
    }

    fn buttons(&self) -> Vec<Value> {
        self.blocks
            .as_ref()
            .and_then(Value::as_array)
            .map(|blocks| {
                blocks
                    .iter()
                    .filter(|b| b["type"] == "actions")
                    .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn has_buttons(&self) -> bool {
        !self.buttons().is_empty()
    }

    /// Every text in the blocks, one per line.
    pub fn block_text(&self) -> String {
        fn walk(value: &Value, out: &mut Vec<String>) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::String(text)) = map.get("text") {
                        out.push(text.clone());
                    }
                    for (key, inner) in map {
                        if key != "text" || inner.is_object() {
                            walk(inner, out);
                        }
                    }
                }
                Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
                _ => {}
            }
        }
        let mut out = Vec::new();
        if let Some(blocks) = &self.blocks {
            walk(blocks, &mut out);
        }
        out.join("\n")
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct SlackEphemeral {
    pub channel: String,
    pub user: String,
    pub text: String,
}

/// A modal opened with `views.open`.
#[derive(Clone, Debug, PartialEq)]
pub struct SlackView {
    pub id: String,
    /// The user whose click issued the trigger.
    pub user: String,
    pub view: Value,
}

#[derive(Default)]
struct State {
    next: u64,
    messages: Vec<SlackMessage>,
    ephemerals: Vec<SlackEphemeral>,
    views: Vec<SlackView>,
    /// trigger id → the user who clicked.
    triggers: HashMap<String, String>,
    tickets: HashSet<String>,
    acks: Vec<String>,
    calls: Vec<String>,
    sockets: Vec<mpsc::UnboundedSender<String>>,
    connections: usize,
}

impl State {
    fn next(&mut self) -> u64 {
        self.next += 1;
        self.next
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct FakeSlack {
    api: Server,
    // Kept for its drop, which stops the Socket Mode listener.
    _socket: WsServer,
    state: Arc<Mutex<State>>,
    bot_token: String,
    app_token: String,
}

/// `v0=HEX(HMAC-SHA256(secret, "v0:TIMESTAMP:BODY"))`, as Slack signs a request.
pub fn slack_signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// The direct conversation of the bot with `user`.
pub fn slack_dm(user: &str) -> String {
    format!("D{user}")
}

impl FakeSlack {
    pub fn start(bot_token: &str, app_token: &str) -> std::io::Result<FakeSlack> {
        let state = Arc::new(Mutex::new(State::default()));
        let socket = {
            let state = Arc::clone(&state);
            let handler: WsHandler = Arc::new(move |target, socket, stop| {
                let state = Arc::clone(&state);
                Box::pin(serve_socket(state, target, socket, stop))
            });
            WsServer::start("slack", handler)?
        };
        let ws_addr = socket.addr;
        let handler: Handler = {
            let state = Arc::clone(&state);
            let (bot, app) = (bot_token.to_string(), app_token.to_string());
            Arc::new(move |parts, body| {
                let state = Arc::clone(&state);
                let (bot, app) = (bot.clone(), app.clone());
                Box::pin(async move {
                    let path = parts.uri.path().to_string();
                    let Some(method) = path.strip_prefix("/api/") else {
                        return json(404, &json!({"ok": false, "error": "unknown_method"}));
                    };
                    let token = parts
                        .headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Bearer "))
                        .unwrap_or("")
                        .to_string();
                    let expected = if method == "apps.connections.open" {
                        &app
                    } else {
                        &bot
                    };
                    lock(&state).calls.push(method.to_string());
                    if token.is_empty() {
                        return json(200, &json!({"ok": false, "error": "not_authed"}));
                    }
                    if &token != expected {
                        return json(200, &json!({"ok": false, "error": "invalid_auth"}));
                    }
                    let body: Value = serde_json::from_slice(&body).unwrap_or(json!({}));
                    json(200, &handle(&state, method, &body, ws_addr))
                })
            })
        };
        Ok(FakeSlack {
            api: Server::start("slack", handler)?,
            _socket: socket,
            state,
            bot_token: bot_token.to_string(),
            app_token: app_token.to_string(),
        })
    }

    /// The `--api-base` for `palisade channels add slack`.
    pub fn api_base(&self) -> String {
        format!("http://{}/api", self.api.addr)
    }

    pub fn bot_token(&self) -> &str {
        &self.bot_token
    }

    pub fn app_token(&self) -> &str {
        &self.app_token
    }

    /// Socket Mode connections opened so far.
    pub fn connections(&self) -> usize {
        lock(&self.state).connections
    }

    /// Sends an envelope to every open Socket Mode connection; `false` if none is open.
    fn push(&self, envelope: &Value) -> bool {
        let mut state = lock(&self.state);
        state.sockets.retain(|s| !s.is_closed());
        let text = envelope.to_string();
        state.sockets.iter().any(|s| s.send(text.clone()).is_ok())
    }

    fn envelope(&self, kind: &str, payload: Value) -> (String, Value) {
        let id = format!("env-{}", lock(&self.state).next());
        let envelope = json!({
            "envelope_id": id,
            "type": kind,
            "accepts_response_payload": false,
            "retry_attempt": 0,
            "retry_reason": "",
            "payload": payload,
        });
        (id, envelope)
    }

    /// The `event_callback` of `user` writing `text` in `channel` (a `D…` channel is a
    /// direct conversation with the bot).
    pub fn message_event(&self, user: &str, channel: &str, text: &str) -> Value {
        let n = lock(&self.state).next();
        let ts = format!("1700000000.{n:06}");
        json!({
            "token": "legacy-verification-token",
            "team_id": "T0FAKE",
            "api_app_id": "A0FAKE",
            "type": "event_callback",
            "event_id": format!("Ev{n:08}"),
            "event_time": 1_700_000_000,
            "event": {
                "type": "message",
                "channel": channel,
                "channel_type": if channel.starts_with('D') { "im" } else { "channel" },
                "user": user,
                "text": text,
                "ts": ts,
                "event_ts": ts,
            },
        })
    }

    /// `user` writes `text` in `channel` through Socket Mode; returns the envelope id.
    pub fn user_writes(&self, user: &str, channel: &str, text: &str) -> String {
        let payload = self.message_event(user, channel, text);
        self.send_envelope("events_api", payload)
    }

    /// Sends `payload` in an envelope of `kind` (`events_api`, `interactive`); returns
    /// its id.
    pub fn send_envelope(&self, kind: &str, payload: Value) -> String {
        let (id, envelope) = self.envelope(kind, payload);
        assert!(self.push(&envelope), "no Socket Mode connection is open");
        id
    }

    /// The `block_actions` payload of `user` pressing the button with `value` on the
    /// bot's message `ts` in `channel`.
    pub fn click_payload(
        &self,
        user: &str,
        name: &str,
        channel: &str,
        ts: &str,
        value: &str,
    ) -> Value {
        let trigger = {
            let mut state = lock(&self.state);
            let trigger = format!("{}.{}.trigger", state.next(), state.next());
            state.triggers.insert(trigger.clone(), user.to_string());
            trigger
        };
        json!({
            "type": "block_actions",
            "user": {"id": user, "username": name.to_lowercase(), "name": name.to_lowercase(), "team_id": "T0FAKE"},
            "api_app_id": "A0FAKE",
            "token": "legacy-verification-token",
            "container": {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": false},
            "trigger_id": trigger,
            "team": {"id": "T0FAKE", "domain": "fake"},
            "channel": {"id": channel, "name": "directmessage"},
            "message": {"type": "message", "ts": ts, "user": SLACK_BOT_USER},
            "response_url": format!("http://{}/response-url/{ts}", self.api.addr),
            "actions": [{
                "action_id": "palisade_button",
                "block_id": "palisade_card",
                "type": "button",
                "value": value,
                "action_ts": "1700000001.000001",
            }],
        })
    }

    /// `user` presses the button with `value` on `message` through Socket Mode;
    /// returns the envelope id.
    pub fn user_clicks(
        &self,
        user: &str,
        name: &str,
        message: &SlackMessage,
        value: &str,
    ) -> String {
        let payload = self.click_payload(user, name, &message.channel, &message.ts, value);
        self.send_envelope("interactive", payload)
    }

    /// The `view_submission` payload of `user` submitting `comment` in modal `view`.
    pub fn submission_payload(
        &self,
        user: &str,
        name: &str,
        view: &SlackView,
        comment: &str,
    ) -> Value {
        json!({
            "type": "view_submission",
            "team": {"id": "T0FAKE"},
            "user": {"id": user, "username": name.to_lowercase(), "name": name.to_lowercase(), "team_id": "T0FAKE"},
            "api_app_id": "A0FAKE",
            "view": {
                "id": view.id,
                "type": "modal",
                "callback_id": view.view["callback_id"],
                "private_metadata": view.view["private_metadata"],
                "state": {"values": {"comment_block": {"comment": {"type": "plain_text_input", "value": comment}}}},
            },
        })
    }

    /// `user` submits `comment` in modal `view` through Socket Mode.
    pub fn user_submits(&self, user: &str, name: &str, view: &SlackView, comment: &str) -> String {
        let payload = self.submission_payload(user, name, view, comment);
        self.send_envelope("interactive", payload)
    }

    /// Asks every connection to reconnect (`disconnect`, as Slack does before it
    /// closes one).
    pub fn ask_to_reconnect(&self) {
        self.push(&json!({"type": "disconnect", "reason": "refresh_requested", "debug_info": {"host": "fake"}}));
    }

    pub fn acks(&self) -> Vec<String> {
        lock(&self.state).acks.clone()
    }

    pub fn wait_for_ack(&self, envelope: &str, timeout: Duration) -> bool {
        wait(timeout, || self.acks().iter().any(|a| a == envelope))
    }

    pub fn messages(&self) -> Vec<SlackMessage> {
        lock(&self.state).messages.clone()
    }

    pub fn messages_in(&self, channel: &str) -> Vec<SlackMessage> {
        self.messages()
            .into_iter()
            .filter(|m| m.channel == channel)
            .collect()
    }

    pub fn wait_for_message(
        &self,
        channel: &str,
        timeout: Duration,
        check: impl Fn(&SlackMessage) -> bool,
    ) -> Option<SlackMessage> {
        let mut found = None;
        wait(timeout, || {
            found = self.messages_in(channel).into_iter().find(|m| check(m));
            found.is_some()
        });
        found
    }

    pub fn ephemerals(&self) -> Vec<SlackEphemeral> {
        lock(&self.state).ephemerals.clone()
    }

    pub fn wait_for_ephemeral(
        &self,
        user: &str,
        timeout: Duration,
        check: impl Fn(&SlackEphemeral) -> bool,
    ) -> Option<SlackEphemeral> {
        let mut found = None;
        wait(timeout, || {
            found = self
                .ephemerals()
                .into_iter()
                .find(|e| e.user == user && check(e));
            found.is_some()
        });
        found
    }

    pub fn views(&self) -> Vec<SlackView> {
        lock(&self.state).views.clone()
    }

    pub fn wait_for_view(&self, user: &str, timeout: Duration) -> Option<SlackView> {
        let mut found = None;
        wait(timeout, || {
            found = self.views().into_iter().find(|v| v.user == user);
            found.is_some()
        });
        found
    }

    /// Web API methods called, in order.
    pub fn calls(&self) -> Vec<String> {
        lock(&self.state).calls.clone()
    }
}

fn wait(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn handle(state: &Mutex<State>, method: &str, body: &Value, ws: std::net::SocketAddr) -> Value {
    let mut state = lock(state);
    let text = |name: &str| body[name].as_str().map(str::to_string);
    match method {
        "auth.test" => json!({
            "ok": true, "url": "https://fake.slack.test/", "team": "Fake Team", "user": "palisade",
            "team_id": "T0FAKE", "user_id": SLACK_BOT_USER, "bot_id": "B0FAKE",
        }),
        "apps.connections.open" => {
            let ticket = format!("ticket-{}", state.next());
            state.tickets.insert(ticket.clone());
            json!({"ok": true, "url": format!("ws://{ws}/link/?ticket={ticket}&app_id=A0FAKE")})
        }
        "chat.postMessage" => {
            let Some(channel) = text("channel") else {
                return json!({"ok": false, "error": "channel_not_found"});
            };
            let Some(message_text) = text("text")
                .filter(|t| !t.is_empty())
                .or_else(|| body.get("blocks").map(|_| String::new()))
            else {
                return json!({"ok": false, "error": "no_text"});
            };
            if message_text.chars().count() > 40_000 {
                return json!({"ok": false, "error": "msg_too_long"});
            }
            // A user id as the channel posts in the bot's direct conversation with them.
            let channel = if channel.starts_with('U') {
                slack_dm(&channel)
            } else {
                channel
            };
            let n = state.next();
            let ts = format!("1700000100.{n:06}");
            state.messages.push(SlackMessage {
                channel: channel.clone(),
                ts: ts.clone(),
                text: message_text.clone(),
                blocks: body.get("blocks").cloned(),
                thread_ts: text("thread_ts"),
                edits: 0,
                posted_at: Instant::now(),
            });
            json!({"ok": true, "channel": channel, "ts": ts, "message": {"type": "message", "text": message_text, "user": SLACK_BOT_USER, "ts": ts}})
        }
        "chat.update" => {
            let (Some(channel), Some(ts)) = (text("channel"), text("ts")) else {
                return json!({"ok": false, "error": "message_not_found"});
            };
            let Some(message) = state
                .messages
                .iter_mut()
                .find(|m| m.channel == channel && m.ts == ts)
            else {
                return json!({"ok": false, "error": "message_not_found"});
            };
            message.text = text("text").unwrap_or_default();
            message.blocks = body.get("blocks").cloned();
            message.edits += 1;
            json!({"ok": true, "channel": channel, "ts": ts, "text": message.text})
        }
        "chat.postEphemeral" => {
            let (Some(channel), Some(user), Some(message_text)) =
                (text("channel"), text("user"), text("text"))
            else {
                return json!({"ok": false, "error": "invalid_arguments"});
            };
            state.ephemerals.push(SlackEphemeral {
                channel,
                user,
                text: message_text,
            });
            json!({"ok": true, "message_ts": "1700000200.000001"})
        }
        "views.open" => {
            // A trigger works once, as Slack's do (which also expire after 3 s).
            let Some(user) = text("trigger_id").and_then(|t| state.triggers.remove(&t)) else {
                return json!({"ok": false, "error": "invalid_trigger_id"});
            };
            let id = format!("V{:08}", state.next());
            let view = body.get("view").cloned().unwrap_or(Value::Null);
            state.views.push(SlackView {
                id: id.clone(),
                user,
                view: view.clone(),
            });
            let mut answered = view;
            answered["id"] = json!(id);
            json!({"ok": true, "view": answered})
        }
        _ => json!({"ok": false, "error": "unknown_method"}),
    }
}

async fn serve_socket(
    state: Arc<Mutex<State>>,
    target: String,
    mut socket: super::ws::Socket,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let ticket = target
        .split_once("ticket=")
        .map(|(_, rest)| rest.split('&').next().unwrap_or("").to_string())
        .unwrap_or_default();
    let (sender, mut outbound) = mpsc::unbounded_channel::<String>();
    let admitted = {
        let mut state = lock(&state);
        // A ticket works once.
        let valid = state.tickets.remove(&ticket);
        if valid {
            state.connections += 1;
            state.sockets.push(sender);
        }
        valid
    };
    if !admitted {
        let _ = socket.close(None).await;
        return;
    }
    let hello = json!({"type": "hello", "num_connections": 1, "debug_info": {"host": "fake", "approximate_connection_time": 18060}, "connection_info": {"app_id": "A0FAKE"}});
    if socket
        .send(Message::Text(hello.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    loop {
        tokio::select! {
            _ = stop.changed() => { let _ = socket.close(None).await; return; }
            frame = outbound.recv() => match frame {
                Some(text) => {
                    let disconnect = text.contains("\"type\":\"disconnect\"");
                    if socket.send(Message::Text(text.into())).await.is_err() { return; }
                    if disconnect {
                        // Slack closes a connection some seconds after asking.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        let _ = socket.close(None).await;
                        return;
                    }
                }
                None => return,
            },
            frame = socket.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    if let Ok(value) = serde_json::from_str::<Value>(text.as_str()) {
                        if let Some(id) = value["envelope_id"].as_str() {
                            lock(&state).acks.push(id.to_string());
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
