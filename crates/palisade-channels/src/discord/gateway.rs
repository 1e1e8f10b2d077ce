//! The Discord gateway: one WebSocket per session. Discord opens with `hello` (op 10,
//! the heartbeat interval); Palisade identifies (op 2: token, intents for guild and
//! direct messages and their content) or, after a drop, resumes (op 6: session id and
//! the last sequence number) at the `resume_gateway_url` READY named. Heartbeats (op 1)
//! go every interval, the first after a random part of it; one not acknowledged (op
//! 11) by the next means the connection is dead, and it is resumed. `reconnect` (op 7)
//! resumes; `invalid session` (op 9) identifies again unless Discord says it may be
//! resumed. Close codes that no retry will fix (a refused token, intents not enabled
//! in the developer portal) end the channel with a configuration error.

use super::{lock, short, Discord};
use crate::channel::{ChannelError, Incoming};
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// GUILD_MESSAGES | DIRECT_MESSAGES | MESSAGE_CONTENT.
const INTENTS: u64 = (1 << 9) | (1 << 12) | (1 << 15);
const HELLO_WAIT: Duration = Duration::from_secs(15);
/// Bounds on the heartbeat interval Discord names (it says about 41 s).
const MIN_INTERVAL: Duration = Duration::from_millis(100);
const MAX_INTERVAL: Duration = Duration::from_secs(120);
/// A session that ends this soon, this many times in a row, is a failure for the hub
/// to back off from.
const SHORTEST_SESSION: Duration = Duration::from_secs(5);
const MAX_QUICK_ENDS: u32 = 3;

/// What a resume needs. Kept by the channel across connections and across the hub's
/// restarts of the channel, so a network fault resumes rather than starts over.
pub(super) struct Session {
    id: String,
    resume_url: url::Url,
    sequence: Option<u64>,
}

enum End {
    Shutdown,
    /// Connect again; resume if `resume` and a session is known.
    Again {
        resume: bool,
    },
}

pub(super) async fn run(
    discord: &Discord,
    inbox: &mpsc::Sender<Incoming>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), ChannelError> {
    let mut session: Option<Session> = lock(&discord.session).take();
    let outcome = connect_and_serve(discord, &mut session, inbox, shutdown).await;
    *lock(&discord.session) = session;
    outcome
}

async fn connect_and_serve(
    discord: &Discord,
    session: &mut Option<Session>,
    inbox: &mpsc::Sender<Incoming>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), ChannelError> {
    let mut quick_ends = 0;
    loop {
        let url = match session.as_ref() {
            Some(session) => session.resume_url.clone(),
            None => {
                let named = match &discord.gateway_url {
                    Some(url) => url.clone(),
                    None => discord.client.gateway_url().await?,
                };
                url::Url::parse(&named).map_err(|_| {
                    ChannelError::Platform("Discord named a gateway URL that is not a URL".into())
                })?
            }
        };
        let mut url = url;
        url.query_pairs_mut()
            .clear()
            .append_pair("v", "10")
            .append_pair("encoding", "json");
        let mut socket = match crate::ws::connect("Discord gateway", &url).await {
            Ok(socket) => socket,
            Err(error) => {
                // A resume URL that cannot be reached is given up: identify afresh next.
                *session = None;
                return Err(error);
            }
        };
        let started = Instant::now();
        let ended = serve(discord, &mut socket, session, inbox, shutdown).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
        match ended? {
            End::Shutdown => return Ok(()),
            End::Again { resume } => {
                if !resume {
                    *session = None;
                }
                if started.elapsed() < SHORTEST_SESSION {
                    quick_ends += 1;
                    if quick_ends >= MAX_QUICK_ENDS {
                        return Err(ChannelError::Platform(
                            "the Discord gateway keeps closing the connection at once".into(),
                        ));
                    }
                    // Discord asks for 1-5 s before identifying again.
                    let pause = Duration::from_millis(rand::thread_rng().gen_range(1000..3000));
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = crate::channel::stopped(shutdown) => return Ok(()),
                    }
                } else {
                    quick_ends = 0;
                }
                tracing::info!(channel = %discord.name, resume = session.is_some(), "Discord gateway: connecting again");
            }
        }
    }
}

async fn send(socket: &mut crate::ws::Socket, payload: Value) -> Result<(), ChannelError> {
    tokio::time::timeout(
        Duration::from_secs(10),
        socket.send(Message::Text(payload.to_string().into())),
    )
    .await
    .map_err(|_| ChannelError::Platform("Discord gateway: a send timed out".into()))?
    .map_err(|e| ChannelError::Platform(format!("Discord gateway: {}", crate::ws::describe(&e))))
}

async fn next_payload(
    socket: &mut crate::ws::Socket,
) -> Result<Result<Value, Option<u16>>, ChannelError> {
    loop {
        match socket.next().await {
            None => return Ok(Err(None)),
            Some(Ok(Message::Close(frame))) => return Ok(Err(frame.map(|f| u16::from(f.code)))),
            Some(Ok(Message::Text(text))) => match serde_json::from_str::<Value>(text.as_str()) {
                Ok(value) => return Ok(Ok(value)),
                Err(_) => continue,
            },
            Some(Ok(_)) => continue,
            // A network fault: connect again and resume.
            Some(Err(error)) => {
                tracing::info!(error = %crate::ws::describe(&error), "Discord gateway connection lost");
                return Ok(Err(None));
            }
        }
    }
}

/// What a close code means: a configuration error, or connect again (resuming or not).
fn closed(code: Option<u16>) -> Result<End, ChannelError> {
    let Some(code) = code else {
        return Ok(End::Again { resume: true });
    };
    match code {
        4004 => Err(ChannelError::Config(
            "the Discord gateway refused the bot token; check it in the developer portal".into(),
        )),
        4013 | 4014 => Err(ChannelError::Config(
            "the Discord gateway refused the intents: enable the Message Content intent for the bot in the developer portal".into(),
        )),
        4010..=4012 => Err(ChannelError::Config(format!(
            "the Discord gateway closed with code {code}; this build cannot continue"
        ))),
        4007 | 4009 => Ok(End::Again { resume: false }),
        code if code == u16::from(CloseCode::Normal) => Ok(End::Again { resume: false }),
        _ => Ok(End::Again { resume: true }),
    }
}

async fn serve(
    discord: &Discord,
    socket: &mut crate::ws::Socket,
    session: &mut Option<Session>,
    inbox: &mpsc::Sender<Incoming>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<End, ChannelError> {
    let hello = tokio::select! {
        hello = tokio::time::timeout(HELLO_WAIT, next_payload(socket)) => hello
            .map_err(|_| ChannelError::Platform("Discord gateway: no hello".into()))??,
        _ = crate::channel::stopped(shutdown) => return Ok(End::Shutdown),
    };
    let hello = match hello {
        Ok(hello) => hello,
        Err(code) => return closed(code),
    };
    if hello.get("op").and_then(Value::as_u64) != Some(10) {
        return Err(ChannelError::Platform(
            "Discord gateway: the first message was not hello".into(),
        ));
    }
    let interval = hello
        .pointer("/d/heartbeat_interval")
        .and_then(Value::as_u64)
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(41))
        .clamp(MIN_INTERVAL, MAX_INTERVAL);
    let token = discord.client.token.expose().to_string();
    match session {
        Some(session) => {
            send(
                socket,
                json!({"op": 6, "d": {"token": token, "session_id": session.id, "seq": session.sequence}}),
            )
            .await?
        }
        None => {
            send(
                socket,
                json!({"op": 2, "d": {
                    "token": token,
                    "intents": INTENTS,
                    "properties": {"os": std::env::consts::OS, "browser": "palisade", "device": "palisade"},
                }}),
            )
            .await?
        }
    }
    drop(token);
    let first = interval.mul_f64(rand::thread_rng().gen_range(0.0..1.0));
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + first, interval);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut acknowledged = true;
    loop {
        let payload = tokio::select! {
            _ = crate::channel::stopped(shutdown) => return Ok(End::Shutdown),
            _ = beat.tick() => {
                if !acknowledged {
                    tracing::info!(channel = %discord.name, "Discord gateway: a heartbeat was not acknowledged; resuming");
                    return Ok(End::Again { resume: true });
                }
                acknowledged = false;
                let sequence = session.as_ref().and_then(|s| s.sequence);
                send(socket, json!({"op": 1, "d": sequence})).await?;
                continue;
            }
            payload = next_payload(socket) => payload?,
        };
        let payload = match payload {
            Ok(payload) => payload,
            Err(code) => return closed(code),
        };
        if let (Some(sequence), Some(session)) =
            (payload.get("s").and_then(Value::as_u64), session.as_mut())
        {
            session.sequence = Some(sequence);
        }
        match payload.get("op").and_then(Value::as_u64) {
            Some(0) => {
                let data = payload.get("d").unwrap_or(&Value::Null);
                let incoming = match payload.get("t").and_then(Value::as_str) {
                    Some("READY") => {
                        let resume_url = data
                            .get("resume_gateway_url")
                            .and_then(Value::as_str)
                            .and_then(|u| url::Url::parse(u).ok())
                            .filter(|u| crate::http::check_base_url(u).is_ok());
                        let Some(resume_url) = resume_url else {
                            return Err(ChannelError::Platform(
                                "Discord gateway: READY without a usable resume URL".into(),
                            ));
                        };
                        *session = Some(Session {
                            id: short(data.get("session_id")).unwrap_or_default(),
                            resume_url,
                            sequence: payload.get("s").and_then(Value::as_u64),
                        });
                        if let Some(id) = short(data.pointer("/user/id")) {
                            *lock(&discord.bot_user) = Some(id);
                        }
                        tracing::info!(channel = %discord.name, "Discord gateway ready");
                        None
                    }
                    Some("RESUMED") => {
                        tracing::info!(channel = %discord.name, "Discord gateway resumed");
                        None
                    }
                    Some("MESSAGE_CREATE") => discord.on_message(data),
                    Some("INTERACTION_CREATE") => {
                        let reply = super::Reply::Rest {
                            client: Box::new(discord.client.clone()),
                            id: short(data.get("id")).unwrap_or_default(),
                            token: data
                                .get("token")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .chars()
                                .take(600)
                                .collect(),
                        };
                        match discord.on_interaction(data, reply) {
                            Ok(incoming) => Some(incoming),
                            Err((response, reply)) => {
                                tokio::spawn(reply.send(response));
                                None
                            }
                        }
                    }
                    _ => None,
                };
                // Bounded: reading the gateway must go on (Discord asks for heartbeats
                // on it), so an event the host cannot take in time is dropped, logged.
                if let Some(incoming) = incoming {
                    if !crate::channel::hand_over(inbox, incoming, super::INBOX_WAIT, &discord.name)
                        .await
                    {
                        return Ok(End::Shutdown);
                    }
                }
            }
            // Discord asks for a heartbeat now.
            Some(1) => {
                let sequence = session.as_ref().and_then(|s| s.sequence);
                send(socket, json!({"op": 1, "d": sequence})).await?;
            }
            Some(7) => return Ok(End::Again { resume: true }),
            Some(9) => {
                let resumable = payload.get("d").and_then(Value::as_bool) == Some(true);
                return Ok(End::Again { resume: resumable });
            }
            Some(11) => acknowledged = true,
            _ => {}
        }
    }
}
