//! Chat with an agent: the web conversation's history, and a composer whose sends
//! stream the reply in as it comes.
//!
//! A send from the script is checked by [`crate::auth::require_admin`] (cookie, CSRF
//! token, origin) and then handed to the JSON API's `POST /api/agents/NAME/messages`
//! in-process with the CLI's bearer token, so the browser reads exactly the NDJSON
//! stream `palisade send` reads (accepted, text deltas, tool calls, status, reply) and
//! errors (empty, too long, unknown agent, host stopping) in the API's JSON shape.
//! A plain form post (no script) is accepted and answered with a redirect back here.

use super::layout::{self, Nav};
use super::{blocking, PageError, PageResult};
use crate::WebState;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use bytes::Bytes;
use maud::{html, Markup};
use palisade_host::AgentSettings;
use palisade_policy::AgentName;
use palisade_store::{InboundMessage, ReplyRecord};
use serde::Deserialize;

/// The conversation key (and channel) of web chats: one session per agent.
pub(crate) const CONVERSATION: &str = "web";
/// Messages of the history shown on the page (the newest).
const HISTORY_SHOWN: usize = 100;

#[derive(Deserialize)]
pub(crate) struct ChatQuery {
    agent: Option<String>,
}

/// An error reply as the page shows it: Palisade's own words (the `palisade: ` that
/// tells them apart from the agent's in a chat app is the bubble's colour here), with
/// `backticked` commands as code. The script renders streamed ones the same way.
fn error_markup(text: &str) -> Markup {
    let text = text.strip_prefix("palisade: ").unwrap_or(text);
    let text = super::shown(text);
    html! {
        @for (index, part) in text.split('`').enumerate() {
            @if index % 2 == 1 { code { (part) } } @else { (part) }
        }
    }
}

pub(crate) fn message_markup(message: &InboundMessage, reply: Option<&ReplyRecord>) -> Markup {
    html! {
        div.msg.user {
            div.bubble { (super::shown(&message.text)) }
            div.meta { "you · " (super::when(message.created_at_ms)) }
        }
        @match reply {
            Some(reply) => {
                div.msg.agent.error[reply.is_error] data-ack=[(!reply.delivered).then_some(message.id)] {
                    @if reply.is_error {
                        div.bubble { (error_markup(&reply.text)) }
                    } @else {
                        div.bubble { (super::shown(&reply.text)) }
                    }
                    div.meta { (message.agent) " · " (super::when(reply.created_at_ms)) }
                }
            }
            None => {
                div.msg.agent.waiting {
                    div.bubble { "(no reply yet: " (message.status.as_str()) ")" }
                }
            }
        }
    }
}

pub(crate) async fn page(
    State(state): State<WebState>,
    Query(query): Query<ChatQuery>,
) -> PageResult {
    let store = state.store.clone();
    let wanted = query.agent.clone();
    let (agents, chosen, history) = blocking(move || {
        let agents = store.list_agents()?;
        let chosen = match wanted {
            Some(name) => {
                let name = AgentName::new(&name)?;
                Some(store.get_agent(&name)?)
            }
            None => agents.first().cloned(),
        };
        let history = match &chosen {
            Some(agent) => {
                let session = store
                    .list_sessions(Some(&agent.name))?
                    .into_iter()
                    .find(|s| s.conversation == CONVERSATION);
                match session {
                    Some(session) => {
                        let mut messages = store.session_messages(session.id)?;
                        let skip = messages.len().saturating_sub(HISTORY_SHOWN);
                        messages.drain(..skip);
                        Some((session, messages))
                    }
                    None => None,
                }
            }
            None => None,
        };
        Ok((agents, chosen, history))
    })
    .await?;
    let warm = state.host.warm_agents();
    let body = html! {
        div.chat-layout {
            aside.card.agent-list {
                h2 { "Agents" }
                @if agents.is_empty() {
                    p.muted { "No agents yet." }
                }
                ul.plain {
                    @for agent in &agents {
                        li {
                            a.agent-link.current[chosen.as_ref().is_some_and(|c| c.name == agent.name)]
                                href={ "/chat?agent=" (agent.name) } {
                                span.name { (agent.name) }
                                @if warm.contains(&agent.name) { (layout::pill("warm", "good")) } @else { (layout::pill("idle", "neutral")) }
                            }
                        }
                    }
                }
            }
            @match &chosen {
                None => {
                    section.card.chat-panel {
                        h1 { "Chat" }
                        p.muted { "Create an agent first: " code { "palisade agents create NAME" } }
                    }
                }
                Some(agent) => {
                    @let settings = AgentSettings::from_json(&agent.settings).unwrap_or_default();
                    section.card.chat-panel {
                        div.chat-head {
                            div {
                                h1 { (agent.name) }
                                div.muted.small { (settings.provider) " · " (settings.model) " · " (agent.profile.as_str()) " profile" }
                            }
                            div.chat-links {
                                @if let Some((session, _)) = &history {
                                    a href={ "/sessions/" (session.id) } { "Session #" (session.id) }
                                    " · "
                                }
                                a href={ "/agents/" (agent.name) } { "Settings" }
                            }
                        }
                        div #messages.messages aria-live="polite" {
                            @match &history {
                                Some((_, messages)) if !messages.is_empty() => {
                                    @for (message, reply) in messages {
                                        (message_markup(message, reply.as_ref()))
                                    }
                                }
                                _ => {
                                    p #empty-chat.muted.center { "No messages yet. Say hello to " (agent.name) "." }
                                }
                            }
                        }
                        p #chat-error.error-box hidden {}
                        form #composer.composer method="post" action={ "/chat/" (agent.name) "/send" } data-agent=(agent.name) {
                            (layout::csrf_field())
                            textarea #message name="text" rows="3" placeholder={ "Message " (agent.name) "…  (Enter to send, Shift+Enter for a new line)" } {}
                            div.composer-actions {
                                span #chat-status.muted.small {}
                                button #send.primary type="submit" { "Send" }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::render(&state, Nav::Chat, "Chat", body).await)
}

#[derive(Deserialize)]
struct SendJson {
    text: String,
}

#[derive(Deserialize)]
struct SendForm {
    text: String,
}

fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": code, "message": message })),
    )
        .into_response()
}

/// `POST /chat/NAME/send`: JSON `{"text": …}` → the API's NDJSON stream; a form → redirect.
pub(crate) async fn send(
    State(state): State<WebState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let agent = match AgentName::new(&name) {
        Ok(agent) => agent,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, "invalid_agent", &e.to_string()),
    };
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if is_form {
        return send_form(state, agent, &body).await;
    }
    let text = match serde_json::from_slice::<SendJson>(&body) {
        Ok(body) => body.text,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                &format!("expected JSON {{\"text\": …}}: {e}"),
            )
        }
    };
    let payload = serde_json::json!({
        "text": text,
        "conversation": CONVERSATION,
        "channel": CONVERSATION,
    });
    forward_to_api(
        &state,
        &format!("/api/agents/{agent}/messages"),
        Body::from(payload.to_string()),
    )
    .await
}

/// `POST /chat/messages/ID/delivered`: the page showed the reply to message ID, so it
/// is not offered again as unseen (the API's acknowledgement, as `palisade chat` does).
pub(crate) async fn acknowledge(State(state): State<WebState>, Path(id): Path<i64>) -> Response {
    forward_to_api(
        &state,
        &format!("/api/messages/{id}/delivered"),
        Body::empty(),
    )
    .await
}

/// Hands a checked browser write to the JSON API with the CLI's bearer token.
async fn forward_to_api(state: &WebState, uri: &str, body: Body) -> Response {
    let request = Request::builder()
        .method("POST")
        .uri(uri)
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", state.tokens.cli),
        )
        .header(header::CONTENT_TYPE, "application/json")
        .body(body);
    let request = match request {
        Ok(request) => request,
        Err(e) => {
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                &e.to_string(),
            )
        }
    };
    let mut api = state.api.clone();
    use tower_service::Service;
    if let Err(never) = std::future::poll_fn(|cx| {
        <axum::Router as Service<Request<Body>>>::poll_ready(&mut api, cx)
    })
    .await
    {
        match never {}
    }
    match api.call(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

async fn send_form(state: WebState, agent: AgentName, body: &[u8]) -> Response {
    let form: SendForm = match serde_urlencoded_text(body) {
        Some(form) => form,
        None => {
            return PageError::BadRequest("the form had no message text".into()).into_response()
        }
    };
    match state
        .host
        .submit(&agent, CONVERSATION, CONVERSATION, &form.text)
        .await
    {
        // The reply is stored when it comes; the page shows it on the next load.
        Ok(_) => Redirect::to(&format!("/chat?agent={agent}")).into_response(),
        Err(error) => PageError::from(error).into_response(),
    }
}

fn serde_urlencoded_text(body: &[u8]) -> Option<SendForm> {
    url::form_urlencoded::parse(body)
        .find(|(key, _)| key == "text")
        .map(|(_, value)| SendForm {
            text: value.into_owned(),
        })
}
