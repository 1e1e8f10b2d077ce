//! Sessions: one per (agent, conversation), listed per agent, with their messages and
//! replies, and a reset (the agent forgets the conversation; the messages stay on
//! record) behind a confirmation page.

use super::chat::message_markup;
use super::layout::{self, Nav};
use super::{blocking, PageResult};
use crate::WebState;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect};
use maud::html;
use palisade_policy::AgentName;
use palisade_store::AuditEntry;
use serde::Deserialize;

/// Rows on the list page.
const LIST_LIMIT: usize = 500;

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    agent: Option<String>,
}

pub(crate) async fn list(
    State(state): State<WebState>,
    Query(query): Query<ListQuery>,
) -> PageResult {
    let agent = query
        .agent
        .filter(|a| !a.is_empty())
        .map(|name| AgentName::new(&name))
        .transpose()?;
    let store = state.store.clone();
    let filter = agent.clone();
    let (agents, sessions) = blocking(move || {
        if let Some(agent) = &filter {
            store.get_agent(agent)?;
        }
        Ok((store.list_agents()?, store.list_sessions(filter.as_ref())?))
    })
    .await?;
    let total = sessions.len();
    let body = html! {
        div.page-head {
            h1 { "Sessions" }
            p.muted { "One session per agent and conversation; the agent remembers its history until it is reset." }
        }
        form.filters method="get" action="/sessions" {
            label {
                "Agent "
                select name="agent" {
                    option value="" { "all agents" }
                    @for a in &agents {
                        option value=(a.name) selected[agent.as_ref() == Some(&a.name)] { (a.name) }
                    }
                }
            }
            button type="submit" { "Show" }
        }
        section.card {
            @if sessions.is_empty() {
                p.muted { "No sessions yet. Start one from the " a href="/chat" { "chat" } "." }
            } @else {
                table {
                    thead { tr { th { "#" } th { "Agent" } th { "Conversation" } th { "Messages" } th { "History entries" } th { "Last active" } } }
                    tbody {
                        @for session in sessions.iter().take(LIST_LIMIT) {
                            tr {
                                td { a href={ "/sessions/" (session.id) } { "#" (session.id) } }
                                td { a href={ "/agents/" (session.agent) } { (session.agent) } }
                                td { code { (super::shown(&session.conversation)) } }
                                td { (session.messages) }
                                td { (session.history.as_array().map(Vec::len).unwrap_or(0)) }
                                td.muted { (super::relative(session.updated_at_ms)) }
                            }
                        }
                    }
                }
                @if total > LIST_LIMIT { p.muted.small { "Showing the " (LIST_LIMIT) " most recent of " (total) "." } }
            }
        }
    };
    Ok(layout::render(&state, Nav::Sessions, "Sessions", body).await)
}

#[derive(Deserialize)]
pub(crate) struct ShowQuery {
    reset: Option<String>,
}

pub(crate) async fn show(
    State(state): State<WebState>,
    Path(id): Path<i64>,
    Query(query): Query<ShowQuery>,
) -> PageResult {
    let store = state.store.clone();
    let (session, messages) =
        blocking(move || Ok((store.get_session(id)?, store.session_messages(id)?))).await?;
    let remembered = session.history.as_array().map(Vec::len).unwrap_or(0);
    let body = html! {
        div.page-head.row-between {
            div {
                h1 { "Session #" (session.id) }
                p.muted {
                    a href={ "/agents/" (session.agent) } { (session.agent) }
                    " · conversation " code { (super::shown(&session.conversation)) }
                    " · started " (super::when(session.created_at_ms))
                    " · active " (super::relative(session.updated_at_ms))
                }
            }
            div {
                @if query.reset.is_some() { span.pill.good { "reset" } " " }
                a.button.danger href={ "/sessions/" (session.id) "/reset" } { "Reset…" }
            }
        }
        p.muted.small {
            "The agent remembers " (remembered) " history entries (messages and tool calls) of this conversation."
        }
        section.card {
            div.messages.static {
                @if messages.is_empty() { p.muted.center { "No messages." } }
                @for (message, reply) in &messages {
                    (message_markup(message, reply.as_ref()))
                }
            }
        }
    };
    Ok(layout::render(&state, Nav::Sessions, &format!("Session {id}"), body).await)
}

pub(crate) async fn confirm_reset(
    State(state): State<WebState>,
    Path(id): Path<i64>,
) -> PageResult {
    let store = state.store.clone();
    let session = blocking(move || Ok(store.get_session(id)?)).await?;
    let body = html! {
        section.card.narrow {
            h1 { "Reset session #" (session.id) "?" }
            p {
                (session.agent) " will forget this conversation (" code { (super::shown(&session.conversation)) } ") and start it afresh. "
                "The messages and replies stay on record."
            }
            form method="post" action={ "/sessions/" (session.id) "/reset" } {
                (layout::csrf_field())
                div.form-actions {
                    a.button href={ "/sessions/" (session.id) } { "Cancel" }
                    " "
                    button.danger type="submit" { "Reset the session" }
                }
            }
        }
    };
    Ok(layout::render(&state, Nav::Sessions, "Reset session", body).await)
}

pub(crate) async fn reset(State(state): State<WebState>, Path(id): Path<i64>) -> PageResult {
    let store = state.store.clone();
    blocking(move || {
        let session = store.get_session(id)?;
        store.reset_session(id)?;
        store.append_audit(&AuditEntry {
            event: "session.reset".into(),
            agent: Some(session.agent.to_string()),
            decision: Some("reset".into()),
            actor: Some(store.actor().to_string()),
            detail: Some(serde_json::json!({ "session": id })),
            ..Default::default()
        })?;
        Ok(())
    })
    .await?;
    Ok(Redirect::to(&format!("/sessions/{id}?reset=1")).into_response())
}
