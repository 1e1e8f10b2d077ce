//! The host's local JSON API on 127.0.0.1 (axum), used by `palisade send`; the web UI
//! (palisade-web) wraps this router and serves its pages beside it.
//!
//! Who may call it: the CLI with the token written to `run/host.json` (mode 0600, in
//! the 0700 home), or the admin's browser with a session cookie the web UI hands out
//! at `/login?token=…` (`HttpOnly`, `SameSite=Strict`; one session per login, see
//! [`crate::admin_sessions`]), which is good for reading only
//! here: every state-changing call needs the bearer token, so a page on another site
//! cannot make the browser post for the admin (the web UI's own writes pass its CSRF
//! check first). Sandboxes never reach it: they have no network and the vault refuses
//! local upstreams.

use crate::admin_sessions::AdminSessions;
use crate::host::{Host, StreamEvent, MAX_MESSAGE_BYTES};
use crate::HostError;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use palisade_policy::AgentName;
use serde::Deserialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};

/// Name of the admin session cookie (set by the web UI's login).
pub const COOKIE: &str = "palisade_admin";

/// Credentials of the API: all random, all held only in memory except `cli` (in
/// `run/host.json`, readable only by the home's owner).
#[derive(Clone)]
pub struct ApiTokens {
    /// The login token `palisade up` prints once; like every login token it works once.
    pub admin_login: String,
    /// What the CLI sends as a bearer token; good for the whole run, sessions aside.
    pub cli: String,
    /// The web admin's sessions, one per login; a cookie's value names one.
    pub sessions: Arc<AdminSessions>,
    /// Login tokens not used yet (the printed one and those `palisade login` asked for).
    pub logins: Arc<LoginTokens>,
}

impl ApiTokens {
    pub fn generate() -> Self {
        ApiTokens::with_admin_login(random_token())
    }

    /// As [`ApiTokens::generate`], with a given printed login token (a detached host
    /// gets the one its parent printed).
    pub fn with_admin_login(admin_login: String) -> Self {
        let logins = LoginTokens::default();
        logins.add(admin_login.clone(), Instant::now() + START_LINK_TTL, true);
        ApiTokens {
            admin_login,
            cli: random_token(),
            sessions: Arc::default(),
            logins: Arc::new(logins),
        }
    }
}

/// How long a login link asked for with `palisade login` stays valid.
pub const LOGIN_LINK_TTL: Duration = Duration::from_secs(600);
/// How long the login link `palisade up` prints at start stays valid: it lands in
/// logs (a service's journal), and `palisade login` gives a fresh one at any time.
pub const START_LINK_TTL: Duration = Duration::from_secs(3600);
/// At most this many unused login tokens are kept; asking for more drops the oldest.
const MAX_LOGIN_TOKENS: usize = 16;

/// One-time login tokens. A token is consumed by the login that uses it, so a link
/// left in a terminal's scrollback, a shell history or a browser's history is worth
/// nothing once the admin has logged in.
#[derive(Default)]
pub struct LoginTokens {
    /// (token, expiry, whether it is the link printed at start).
    pending: Mutex<Vec<(String, Instant, bool)>>,
}

impl LoginTokens {
    fn add(&self, token: String, expires: Instant, printed: bool) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() >= MAX_LOGIN_TOKENS {
            // Keep the printed token as long as possible: drop the oldest other first.
            let index = pending.iter().position(|entry| !entry.2).unwrap_or(0);
            pending.remove(index);
        }
        pending.push((token, expires, printed));
    }

    /// A new login token, valid once within [`LOGIN_LINK_TTL`].
    pub fn issue(&self) -> String {
        let token = random_token();
        self.add(token.clone(), Instant::now() + LOGIN_LINK_TTL, false);
        token
    }

    /// Whether `token` is a valid unused login token; if so it is used up.
    pub fn consume(&self, token: &str) -> bool {
        let now = Instant::now();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.retain(|(_, expires, _)| *expires > now);
        // Compare against every entry so the time taken does not say which one matched.
        let found = pending
            .iter()
            .enumerate()
            .fold(None, |found, (index, (candidate, _, _))| {
                if same(candidate, token) {
                    Some(index)
                } else {
                    found
                }
            });
        match found {
            Some(index) => {
                pending.remove(index);
                true
            }
            None => false,
        }
    }
}

pub fn random_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares two tokens in time independent of where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[derive(Clone)]
struct ApiState {
    host: Host,
    tokens: Arc<ApiTokens>,
    shutdown: watch::Receiver<bool>,
    started_at_ms: i64,
}

/// The API's routes. `shutdown` ends streaming responses when the host stops.
pub fn router(host: Host, tokens: ApiTokens, shutdown: watch::Receiver<bool>) -> Router {
    let state = ApiState {
        host,
        tokens: Arc::new(tokens),
        shutdown,
        started_at_ms: palisade_store::now_ms(),
    };
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/status", get(status))
        .route("/api/agents/{name}/messages", post(send_message))
        .route("/api/messages/{id}", get(get_message))
        .route("/api/messages/{id}/delivered", post(reply_delivered))
        .route("/api/login-links", post(login_link))
        .route("/api/sandboxes/changed", post(sandboxes_changed))
        .layer(DefaultBodyLimit::max(MAX_MESSAGE_BYTES * 2 + 64 * 1024))
        .with_state(state)
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": code, "message": message.into() })),
    )
        .into_response()
}

fn host_error(error: HostError) -> Response {
    match &error {
        HostError::UnknownAgent(_) => error_response(StatusCode::NOT_FOUND, "unknown_agent", error),
        HostError::EmptyMessage => error_response(StatusCode::BAD_REQUEST, "empty_message", error),
        HostError::TooLarge { .. } => {
            error_response(StatusCode::PAYLOAD_TOO_LARGE, "message_too_large", error)
        }
        HostError::Invalid(_) | HostError::Store(palisade_store::StoreError::Invalid(_)) => {
            error_response(StatusCode::BAD_REQUEST, "invalid", error)
        }
        HostError::ShuttingDown => {
            error_response(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", error)
        }
        _ => error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal", error),
    }
}

fn error_response(status: StatusCode, code: &str, cause: HostError) -> Response {
    error(status, code, cause.to_string())
}

/// The CLI's bearer token for anything; a live session's cookie for reads (the web UI
/// has refused it before here when it came from another user than the one who logged
/// in). Login tokens are not API credentials: they are good for one login only.
fn authorized(state: &ApiState, headers: &HeaderMap, read_only: bool) -> bool {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(token) = value.strip_prefix("Bearer ") {
            return same(token, &state.tokens.cli);
        }
    }
    read_only
        && headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().strip_prefix(&format!("{COOKIE}=")))
            .any(|value| state.tokens.sessions.check(value, |_| true))
}

/// A new one-time login link for the web UI (`palisade login`); CLI token only, so a
/// logged-in browser cannot mint more.
async fn login_link(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if !authorized(&state, &headers, false) {
        return unauthorized();
    }
    let token = state.tokens.logins.issue();
    Json(serde_json::json!({
        "path": format!("/login?token={token}"),
        "expires_in_seconds": LOGIN_LINK_TTL.as_secs(),
    }))
    .into_response()
}

/// The CLI changed what sandboxes are given (folders): runners whose mounts no longer
/// match are stopped before this answers. CLI token only.
async fn sandboxes_changed(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if !authorized(&state, &headers, false) {
        return unauthorized();
    }
    let waiting = state.host.sandboxes_changed().await;
    Json(serde_json::json!({ "ok": waiting.is_empty(), "still_running": waiting })).into_response()
}

fn unauthorized() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "log in with the URL `palisade up` printed, or use the palisade CLI",
    )
}

async fn status(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if !authorized(&state, &headers, true) {
        return unauthorized();
    }
    Json(serde_json::json!({
        "pid": std::process::id(),
        "started_at_ms": state.started_at_ms,
        "active_agents": state.host.active_agents(),
    }))
    .into_response()
}

#[derive(Deserialize)]
struct SendBody {
    text: String,
    #[serde(default)]
    conversation: Option<String>,
    #[serde(default)]
    channel: Option<String>,
}

/// Accepts a message and streams what happens to it as NDJSON, one [`StreamEvent`] a
/// line, ending with `reply`.
async fn send_message(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    if !authorized(&state, &headers, false) {
        return unauthorized();
    }
    let body = match body {
        Ok(body) => body,
        // Over the body limit: say so as the API's JSON error, not axum's plain text.
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let size = headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(MAX_MESSAGE_BYTES + 1);
            return host_error(HostError::TooLarge {
                size,
                limit: MAX_MESSAGE_BYTES,
            });
        }
        Err(rejection) => return error(rejection.status(), "invalid_body", rejection.body_text()),
    };
    let agent = match AgentName::new(&name) {
        Ok(agent) => agent,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_agent", e.to_string()),
    };
    let body: SendBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("expected JSON {{\"text\": …}}: {e}"),
            )
        }
    };
    let conversation = body.conversation.unwrap_or_else(|| "default".into());
    let channel = body.channel.unwrap_or_else(|| "api".into());
    let (accepted, receiver) = match state
        .host
        .submit(&agent, &conversation, &channel, &body.text)
        .await
    {
        Ok(accepted) => accepted,
        Err(e) => return host_error(e),
    };
    let first = StreamEvent::Accepted {
        message_id: accepted.message_id,
        session_id: accepted.session_id,
    };
    let stream = EventStream {
        host: state.host.clone(),
        message_id: accepted.message_id,
        receiver,
        shutdown: state.shutdown.clone(),
        pending: Some(first),
        checked_store: false,
        done: false,
    };
    let body = Body::from_stream(futures_util::stream::unfold(stream, |mut stream| async {
        let event = stream.next().await?;
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(line)), stream))
    }));
    (
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

struct EventStream {
    host: Host,
    message_id: i64,
    receiver: broadcast::Receiver<StreamEvent>,
    shutdown: watch::Receiver<bool>,
    pending: Option<StreamEvent>,
    checked_store: bool,
    done: bool,
}

impl EventStream {
    async fn stored_reply(&self) -> Option<StreamEvent> {
        let store = self.host.store().clone();
        let id = self.message_id;
        let reply = tokio::task::spawn_blocking(move || store.get_reply(id))
            .await
            .ok()?
            .ok()??;
        Some(StreamEvent::Reply {
            text: reply.text,
            is_error: reply.is_error,
        })
    }

    async fn next(&mut self) -> Option<StreamEvent> {
        if self.done {
            return None;
        }
        if let Some(event) = self.pending.take() {
            return Some(event);
        }
        if !self.checked_store {
            // The reply may have been stored before we subscribed (a warm runner is fast).
            self.checked_store = true;
            if let Some(reply) = self.stored_reply().await {
                self.done = true;
                return Some(reply);
            }
        }
        loop {
            let received = tokio::select! {
                received = self.receiver.recv() => received,
                _ = crate::host::stopped(&mut self.shutdown) => {
                    self.done = true;
                    return Some(StreamEvent::Status {
                        message: "the host is shutting down; the message stays queued and will be answered after the next start".into(),
                    });
                }
            };
            match received {
                Ok(event) => {
                    if matches!(event, StreamEvent::Reply { .. }) {
                        self.done = true;
                    }
                    return Some(event);
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => {
                    self.done = true;
                    return self.stored_reply().await;
                }
            }
        }
    }
}

/// A client acknowledges that the reply to message `id` reached the person, so it is
/// not offered again as unseen (`palisade chat` shows unseen replies).
async fn reply_delivered(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    if !authorized(&state, &headers, false) {
        return unauthorized();
    }
    let store = state.host.store().clone();
    let marked = tokio::task::spawn_blocking(move || {
        store.get_message(id)?;
        let Some(_) = store.get_reply(id)? else {
            return Ok(false);
        };
        store.mark_reply_delivered(id)?;
        Ok::<_, palisade_store::StoreError>(true)
    })
    .await;
    match marked {
        Ok(Ok(true)) => Json(serde_json::json!({ "delivered": true })).into_response(),
        Ok(Ok(false)) => error(
            StatusCode::CONFLICT,
            "not_answered",
            format!("message {id} has no reply yet; acknowledge it once the reply arrived"),
        ),
        Ok(Err(palisade_store::StoreError::NotFound { .. })) => error(
            StatusCode::NOT_FOUND,
            "unknown_message",
            format!("no message {id}"),
        ),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

async fn get_message(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    if !authorized(&state, &headers, true) {
        return unauthorized();
    }
    let store = state.host.store().clone();
    let found = tokio::task::spawn_blocking(move || {
        let message = store.get_message(id)?;
        let reply = store.get_reply(id)?;
        let sent = store.outbound_messages(id)?;
        Ok::<_, palisade_store::StoreError>((message, reply, sent))
    })
    .await;
    match found {
        Ok(Ok((message, reply, sent))) => {
            Json(serde_json::json!({ "message": message, "sent": sent, "reply": reply }))
                .into_response()
        }
        Ok(Err(palisade_store::StoreError::NotFound { .. })) => error(
            StatusCode::NOT_FOUND,
            "unknown_message",
            format!("no message {id}"),
        ),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_token_is_used_up_and_an_expired_one_never_works() {
        let tokens = ApiTokens::generate();
        let issued = tokens.logins.issue();
        tokens.logins.add(
            "stale".into(),
            Instant::now() - Duration::from_secs(1),
            false,
        );
        assert!(!tokens.logins.consume("stale"));
        assert!(!tokens.logins.consume(""));
        assert!(tokens.logins.consume(&issued));
        assert!(!tokens.logins.consume(&issued));
        assert!(tokens.logins.consume(&tokens.admin_login));
        assert!(!tokens.logins.consume(&tokens.admin_login));
    }

    #[test]
    fn asking_for_many_links_keeps_the_printed_one_and_drops_the_oldest() {
        let tokens = ApiTokens::generate();
        let issued: Vec<String> = (0..MAX_LOGIN_TOKENS + 4)
            .map(|_| tokens.logins.issue())
            .collect();
        let kept = tokens.logins.pending.lock().unwrap().len();
        assert_eq!(kept, MAX_LOGIN_TOKENS);
        assert!(!tokens.logins.consume(&issued[0]), "the oldest was dropped");
        assert!(tokens.logins.consume(issued.last().unwrap()));
        assert!(tokens.logins.consume(&tokens.admin_login));
    }
}
