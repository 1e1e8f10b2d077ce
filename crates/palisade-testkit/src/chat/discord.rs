//! A fake Discord: REST under `/api/v10` (`users/@me`, `gateway/bot`, DMs, messages,
//! interaction callbacks) and the gateway on a WebSocket: `hello` with a short
//! heartbeat interval, `identify` answered by `READY` (with a `resume_gateway_url`),
//! heartbeats acknowledged, `resume` replaying the dispatches after the client's
//! sequence number and answered by `RESUMED`, close code 4004 for another token.
//! The test's people act through `MESSAGE_CREATE` and `INTERACTION_CREATE`
//! dispatches; every interaction callback is recorded (and type 7 updates the message,
//! as Discord does). For the HTTP interactions endpoint, [`FakeDiscord::sign`] signs a
//! body with the application's Ed25519 key.

use super::server::{json, Handler, Server};
use super::ws::{WsHandler, WsServer};
use futures_util::{SinkExt, StreamExt};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

pub const DISCORD_BOT_USER: &str = "900000000000000001";
pub const DISCORD_APPLICATION: &str = "900000000000000002";
/// The heartbeat interval the fake gateway names (short, so tests see heartbeats).
pub const DISCORD_HEARTBEAT_MS: u64 = 500;

/// A message the bot posted, as it is now.
#[derive(Clone, Debug, PartialEq)]
pub struct DiscordMessage {
    pub channel_id: String,
    pub id: String,
    pub content: String,
    pub components: Value,
    /// The message flags as last sent (`4`: no embeds, so no link previews).
    pub flags: u64,
    pub edits: usize,
}

impl DiscordMessage {
    /// The `custom_id` of the button labelled `label`.
    pub fn button(&self, label: &str) -> Option<String> {
        self.buttons()
            .into_iter()
            .find(|b| b["label"] == label)
            .and_then(|b| b["custom_id"].as_str().map(str::to_string))
    }

    fn buttons(&self) -> Vec<Value> {
        self.components
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|row| row["components"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    pub fn has_buttons(&self) -> bool {
        !self.buttons().is_empty()
    }
}

/// An interaction response the bot gave.
#[derive(Clone, Debug, PartialEq)]
pub struct DiscordCallback {
    pub interaction: String,
    pub response: Value,
}

impl DiscordCallback {
    pub fn kind(&self) -> u64 {
        self.response["type"].as_u64().unwrap_or(0)
    }

    pub fn is_ephemeral(&self) -> bool {
        self.response["data"]["flags"].as_u64().unwrap_or(0) & 64 != 0
    }

    pub fn content(&self) -> String {
        self.response["data"]["content"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

struct GatewaySession {
    /// Dispatches sent in this session, by sequence number, for resumes.
    log: Vec<(u64, Value)>,
    sequence: u64,
}

#[derive(Default)]
struct State {
    next: u64,
    messages: Vec<DiscordMessage>,
    callbacks: Vec<DiscordCallback>,
    /// interaction id → (token, message it was on).
    interactions: HashMap<String, (String, Option<(String, String)>)>,
    sessions: HashMap<String, GatewaySession>,
    /// The session of the open connection and its sender.
    live: Vec<(String, mpsc::UnboundedSender<GatewayCommand>)>,
    identifies: usize,
    resumes: usize,
    heartbeats: usize,
    intents: Option<u64>,
    dm_opened: HashSet<String>,
}

enum GatewayCommand {
    Dispatch,
    Drop,
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

pub struct FakeDiscord {
    api: Server,
    _gateway: WsServer,
    state: Arc<Mutex<State>>,
    token: String,
    key: Ed25519KeyPair,
}

/// The DM channel id of the bot with `user` (the fake's numbering).
pub fn discord_dm(user: &str) -> String {
    format!("7{}", &user[1..])
}

impl FakeDiscord {
    pub fn start(token: &str) -> std::io::Result<FakeDiscord> {
        let state = Arc::new(Mutex::new(State::default()));
        let gateway = {
            let state = Arc::clone(&state);
            let token = token.to_string();
            let handler: WsHandler = Arc::new(move |_target, socket, stop| {
                let state = Arc::clone(&state);
                let token = token.clone();
                Box::pin(async move {
                    let address = socket.get_ref().local_addr().ok();
                    serve_gateway(state, token, socket, stop, address).await
                })
            });
            WsServer::start("discord", handler)?
        };
        let gateway_addr = gateway.addr;
        let handler: Handler = {
            let state = Arc::clone(&state);
            let token = token.to_string();
            Arc::new(move |parts, body| {
                let state = Arc::clone(&state);
                let token = token.clone();
                Box::pin(async move {
                    let path = parts.uri.path().to_string();
                    let Some(route) = path.strip_prefix("/api/v10/") else {
                        return json(404, &json!({"message": "404: Not Found", "code": 0}));
                    };
                    let route: Vec<&str> = route.split('/').collect();
                    let authorized = parts
                        .headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        == Some(format!("Bot {token}").as_str());
                    let body: Value = serde_json::from_slice(&body).unwrap_or(json!({}));
                    let method = parts.method.as_str().to_string();
                    let (status, answer) =
                        handle(&state, &method, &route, &body, authorized, gateway_addr);
                    json(status, &answer)
                })
            })
        };
        let key = Ed25519KeyPair::from_seed_unchecked(&[42; 32])
            .map_err(|_| std::io::Error::other("Ed25519 key"))?;
        Ok(FakeDiscord {
            api: Server::start("discord", handler)?,
            _gateway: gateway,
            state,
            token: token.to_string(),
            key,
        })
    }

    /// The `--api-base` for `palisade channels add discord`.
    pub fn api_base(&self) -> String {
        format!("http://{}/api/v10", self.api.addr)
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// The application's public key, hex (`--public-key`).
    pub fn public_key(&self) -> String {
        hex::encode(self.key.public_key().as_ref())
    }

    /// `X-Signature-Ed25519` for `body` at `timestamp`.
    pub fn sign(&self, timestamp: &str, body: &[u8]) -> String {
        let mut message = timestamp.as_bytes().to_vec();
        message.extend_from_slice(body);
        hex::encode(self.key.sign(&message).as_ref())
    }

    pub fn identifies(&self) -> usize {
        lock(&self.state).identifies
    }

    pub fn resumes(&self) -> usize {
        lock(&self.state).resumes
    }

    pub fn heartbeats(&self) -> usize {
        lock(&self.state).heartbeats
    }

    pub fn intents(&self) -> Option<u64> {
        lock(&self.state).intents
    }

    /// Whether a gateway connection is identified (or resumed) and open.
    pub fn connected(&self) -> bool {
        !lock(&self.state).live.is_empty()
    }

    /// Records a dispatch in the current session and sends it if connected (else it
    /// waits in the session's log for a resume).
    fn dispatch(&self, event: &str, data: Value) {
        let mut state = lock(&self.state);
        let Some(session) = state.sessions.keys().next().cloned() else {
            panic!("no Discord gateway session yet");
        };
        let entry = state.sessions.get_mut(&session).unwrap();
        entry.sequence += 1;
        let sequence = entry.sequence;
        entry.log.push((
            sequence,
            json!({"op": 0, "s": sequence, "t": event, "d": data}),
        ));
        for (_, sender) in &state.live {
            let _ = sender.send(GatewayCommand::Dispatch);
        }
    }

    fn author(user: &str, name: &str) -> Value {
        json!({"id": user, "username": name.to_lowercase(), "global_name": name, "discriminator": "0"})
    }

    /// `user` writes `text` in `channel` (`guild` set for a server channel).
    pub fn user_writes(
        &self,
        user: &str,
        name: &str,
        channel: &str,
        guild: Option<&str>,
        text: &str,
    ) {
        let id = format!("{}", 800_000_000_000_000_000u64 + lock(&self.state).next());
        let mut data = json!({
            "id": id, "channel_id": channel, "author": Self::author(user, name),
            "content": text, "timestamp": "2026-12-01T00:00:00.000000+00:00", "type": 0,
            "mentions": [], "attachments": [], "embeds": [],
        });
        if let Some(guild) = guild {
            data["guild_id"] = json!(guild);
            data["member"] = json!({"roles": []});
        }
        self.dispatch("MESSAGE_CREATE", data);
    }

    fn interaction(
        &self,
        kind: u64,
        user: &str,
        name: &str,
        message: &DiscordMessage,
        data: Value,
    ) -> (String, Value) {
        let (id, token) = {
            let mut state = lock(&self.state);
            let n = state.next();
            let id = format!("{}", 600_000_000_000_000_000u64 + n);
            let token = format!("aW50ZXJhY3Rpb246{n}.fake-token");
            state.interactions.insert(
                id.clone(),
                (
                    token.clone(),
                    Some((message.channel_id.clone(), message.id.clone())),
                ),
            );
            (id, token)
        };
        let payload = json!({
            "id": id, "application_id": DISCORD_APPLICATION, "type": kind, "token": token, "version": 1,
            "channel_id": message.channel_id,
            "user": Self::author(user, name),
            "message": {"id": message.id, "channel_id": message.channel_id, "content": message.content},
            "data": data,
        });
        (id, payload)
    }

    /// The `INTERACTION_CREATE` of `user` pressing the button `custom_id` on `message`,
    /// without sending it; `(interaction id, payload)`.
    pub fn click_payload(
        &self,
        user: &str,
        name: &str,
        message: &DiscordMessage,
        custom_id: &str,
    ) -> (String, Value) {
        self.interaction(
            3,
            user,
            name,
            message,
            json!({"custom_id": custom_id, "component_type": 2}),
        )
    }

    /// `user` presses `custom_id` on `message` through the gateway; the interaction id.
    pub fn user_clicks(
        &self,
        user: &str,
        name: &str,
        message: &DiscordMessage,
        custom_id: &str,
    ) -> String {
        let (id, payload) = self.click_payload(user, name, message, custom_id);
        self.dispatch("INTERACTION_CREATE", payload);
        id
    }

    /// `user` submits the modal `custom_id` opened on `message` with `comment`.
    pub fn user_submits(
        &self,
        user: &str,
        name: &str,
        message: &DiscordMessage,
        custom_id: &str,
        comment: &str,
    ) -> String {
        let (id, payload) = self.interaction(5, user, name, message, json!({
            "custom_id": custom_id,
            "components": [{"type": 1, "components": [{"type": 4, "custom_id": "comment", "value": comment}]}],
        }));
        self.dispatch("INTERACTION_CREATE", payload);
        id
    }

    /// Drops the gateway connection without a close frame (a network fault); the
    /// client is expected to resume.
    pub fn drop_connection(&self) {
        for (_, sender) in &lock(&self.state).live {
            let _ = sender.send(GatewayCommand::Drop);
        }
    }

    pub fn messages(&self) -> Vec<DiscordMessage> {
        lock(&self.state).messages.clone()
    }

    pub fn wait_for_message(
        &self,
        channel: &str,
        timeout: Duration,
        check: impl Fn(&DiscordMessage) -> bool,
    ) -> Option<DiscordMessage> {
        let mut found = None;
        wait(timeout, || {
            found = self
                .messages()
                .into_iter()
                .find(|m| m.channel_id == channel && check(m));
            found.is_some()
        });
        found
    }

    pub fn callbacks(&self) -> Vec<DiscordCallback> {
        lock(&self.state).callbacks.clone()
    }

    pub fn wait_for_callback(
        &self,
        interaction: &str,
        timeout: Duration,
    ) -> Option<DiscordCallback> {
        let mut found = None;
        wait(timeout, || {
            found = self
                .callbacks()
                .into_iter()
                .find(|c| c.interaction == interaction);
            found.is_some()
        });
        found
    }

    /// Whether the bot opened a direct conversation with `user`.
    pub fn dm_opened(&self, user: &str) -> bool {
        lock(&self.state).dm_opened.contains(user)
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

fn handle(
    state: &Mutex<State>,
    method: &str,
    route: &[&str],
    body: &Value,
    authorized: bool,
    gateway: std::net::SocketAddr,
) -> (u16, Value) {
    let unauthorized = (401, json!({"message": "401: Unauthorized", "code": 0}));
    let unknown = |what: &str, code: u32| {
        (
            404,
            json!({"message": format!("Unknown {what}"), "code": code}),
        )
    };
    let mut state = lock(state);
    match (method, route) {
        ("POST", ["interactions", id, token, "callback"]) => {
            let Some((expected, on)) = state.interactions.get(*id).cloned() else {
                return unknown("interaction", 10062);
            };
            if expected != *token {
                return (
                    401,
                    json!({"message": "Invalid interaction token", "code": 50027}),
                );
            }
            if state.callbacks.iter().any(|c| c.interaction == *id) {
                return (
                    400,
                    json!({"message": "Interaction has already been acknowledged.", "code": 40060}),
                );
            }
            state.callbacks.push(DiscordCallback {
                interaction: id.to_string(),
                response: body.clone(),
            });
            if body["type"] == 7 {
                if let Some((channel, message)) = on {
                    if let Some(m) = state
                        .messages
                        .iter_mut()
                        .find(|m| m.channel_id == channel && m.id == message)
                    {
                        if let Some(content) = body["data"]["content"].as_str() {
                            m.content = content.to_string();
                        }
                        m.components = body["data"]["components"].clone();
                        m.flags = body["data"]["flags"].as_u64().unwrap_or(0);
                        m.edits += 1;
                    }
                }
            }
            (204, Value::Null)
        }
        _ if !authorized => unauthorized,
        ("GET", ["users", "@me"]) => (
            200,
            json!({"id": DISCORD_BOT_USER, "username": "palisade", "discriminator": "0", "bot": true}),
        ),
        ("GET", ["gateway", "bot"]) => (
            200,
            json!({
                "url": format!("ws://{gateway}"), "shards": 1,
                "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1},
            }),
        ),
        ("POST", ["users", "@me", "channels"]) => {
            let Some(user) = body["recipient_id"].as_str().filter(|u| u.len() > 1) else {
                return (400, json!({"message": "Invalid Form Body", "code": 50035}));
            };
            state.dm_opened.insert(user.to_string());
            (
                200,
                json!({"id": discord_dm(user), "type": 1, "recipients": [{"id": user}]}),
            )
        }
        ("POST", ["channels", channel, "messages"]) => {
            let content = body["content"].as_str().unwrap_or("").to_string();
            if content.chars().count() > 2000 {
                return (400, json!({"message": "Invalid Form Body", "code": 50035}));
            }
            let id = format!("{}", 700_000_000_000_000_000u64 + state.next());
            state.messages.push(DiscordMessage {
                channel_id: channel.to_string(),
                id: id.clone(),
                content: content.clone(),
                components: body.get("components").cloned().unwrap_or(json!([])),
                flags: body["flags"].as_u64().unwrap_or(0),
                edits: 0,
            });
            (
                200,
                json!({"id": id, "channel_id": channel, "content": content, "author": {"id": DISCORD_BOT_USER, "bot": true}}),
            )
        }
        ("PATCH", ["channels", channel, "messages", message]) => {
            let Some(m) = state
                .messages
                .iter_mut()
                .find(|m| m.channel_id == *channel && m.id == *message)
            else {
                return unknown("Message", 10008);
            };
            if let Some(content) = body["content"].as_str() {
                m.content = content.to_string();
            }
            if let Some(components) = body.get("components") {
                m.components = components.clone();
            }
            if let Some(flags) = body["flags"].as_u64() {
                m.flags = flags;
            }
            m.edits += 1;
            (
                200,
                json!({"id": message, "channel_id": channel, "content": m.content}),
            )
        }
        _ => unknown("route", 0),
    }
}

async fn serve_gateway(
    state: Arc<Mutex<State>>,
    token: String,
    mut socket: super::ws::Socket,
    mut stop: tokio::sync::watch::Receiver<bool>,
    address: Option<std::net::SocketAddr>,
) {
    let send = |value: Value| Message::Text(value.to_string().into());
    if socket
        .send(send(
            json!({"op": 10, "d": {"heartbeat_interval": DISCORD_HEARTBEAT_MS}}),
        ))
        .await
        .is_err()
    {
        return;
    }
    let (sender, mut commands) = mpsc::unbounded_channel();
    let mut session: Option<String> = None;
    let mut sent_up_to = 0u64;
    let close = |code: u16, reason: &str| {
        Message::Close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: reason.to_string().into(),
        }))
    };
    loop {
        tokio::select! {
            _ = stop.changed() => { let _ = socket.close(None).await; break; }
            command = commands.recv() => match command {
                Some(GatewayCommand::Dispatch) => {
                    let Some(id) = &session else { continue };
                    let pending: Vec<(u64, Value)> = lock(&state)
                        .sessions
                        .get(id)
                        .map(|s| s.log.iter().filter(|(n, _)| *n > sent_up_to).cloned().collect())
                        .unwrap_or_default();
                    for (sequence, payload) in pending {
                        if socket.send(send(payload)).await.is_err() { break; }
                        sent_up_to = sequence;
                    }
                }
                Some(GatewayCommand::Drop) | None => break,
            },
            frame = socket.next() => {
                let Some(Ok(Message::Text(text))) = frame else {
                    match frame {
                        Some(Ok(Message::Ping(_))) | Some(Ok(Message::Pong(_))) => continue,
                        _ => break,
                    }
                };
                let Ok(payload) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                match payload["op"].as_u64() {
                    Some(1) => {
                        lock(&state).heartbeats += 1;
                        if socket.send(send(json!({"op": 11}))).await.is_err() { break; }
                    }
                    Some(2) => {
                        if payload["d"]["token"] != token.as_str() {
                            let _ = socket.send(close(4004, "Authentication failed.")).await;
                            break;
                        }
                        let id = {
                            let mut state = lock(&state);
                            state.identifies += 1;
                            state.intents = payload["d"]["intents"].as_u64();
                            let id = format!("session-{}", state.next());
                            state.sessions.clear();
                            state.sessions.insert(id.clone(), GatewaySession { log: Vec::new(), sequence: 1 });
                            state.live.push((id.clone(), sender.clone()));
                            id
                        };
                        let resume = address.map(|a| format!("ws://{a}")).unwrap_or_default();
                        let ready = json!({"op": 0, "s": 1, "t": "READY", "d": {
                            "v": 10, "session_id": id, "resume_gateway_url": resume,
                            "user": {"id": DISCORD_BOT_USER, "username": "palisade", "bot": true},
                            "application": {"id": DISCORD_APPLICATION, "flags": 0}, "guilds": [],
                        }});
                        if socket.send(send(ready)).await.is_err() { break; }
                        sent_up_to = 1;
                        session = Some(id);
                    }
                    Some(6) => {
                        let id = payload["d"]["session_id"].as_str().unwrap_or("").to_string();
                        let known = payload["d"]["token"] == token.as_str()
                            && lock(&state).sessions.contains_key(&id);
                        if !known {
                            if socket.send(send(json!({"op": 9, "d": false}))).await.is_err() { break; }
                            continue;
                        }
                        let after = payload["d"]["seq"].as_u64().unwrap_or(0);
                        let replay: Vec<(u64, Value)> = {
                            let mut state = lock(&state);
                            state.resumes += 1;
                            state.live.push((id.clone(), sender.clone()));
                            state.sessions.get(&id).map(|s| s.log.iter().filter(|(n, _)| *n > after).cloned().collect()).unwrap_or_default()
                        };
                        sent_up_to = after;
                        for (sequence, event) in replay {
                            if socket.send(send(event)).await.is_err() { break; }
                            sent_up_to = sequence;
                        }
                        let resumed = {
                            let mut state = lock(&state);
                            let entry = state.sessions.get_mut(&id).unwrap();
                            entry.sequence += 1;
                            let n = entry.sequence;
                            let event = json!({"op": 0, "s": n, "t": "RESUMED", "d": {}});
                            entry.log.push((n, event.clone()));
                            event
                        };
                        if socket.send(send(resumed)).await.is_err() { break; }
                        sent_up_to += 1;
                        session = Some(id);
                    }
                    _ => {}
                }
            }
        }
    }
    // This connection is gone; its session stays for a resume.
    lock(&state).live.retain(|(_, s)| !s.same_channel(&sender));
}
