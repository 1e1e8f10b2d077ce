//! The dashboard: what is running, what waits for the admin, what happened lately.
//! While no agent has a model key it starts with the first-run form (`setup.rs`), and
//! right after one was stored, with the way to a first message.

use super::layout::{self, Nav};
use super::setup::{self, KeyForm};
use super::{audit, blocking, charts, PageResult};
use crate::WebState;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use maud::html;
use palisade_host::AgentSettings;
use palisade_store::{ApprovalStatus, AuditFilter};
use serde::Deserialize;

#[derive(Default, Deserialize)]
pub(crate) struct DashboardQuery {
    /// An agent that just got its model key (what the key's check found is the web
    /// server's own record, [`crate::WebState::key_checks`]).
    ready: Option<String>,
}

pub(crate) async fn page(
    State(state): State<WebState>,
    Query(query): Query<DashboardQuery>,
) -> PageResult {
    render(&state, None, Some(query)).await
}

/// The dashboard, with the first-run form's refusal when there is one (then 400).
pub(crate) async fn render(
    state: &WebState,
    refused: Option<(&KeyForm, &str)>,
    query: Option<DashboardQuery>,
) -> PageResult {
    let query = query.unwrap_or_default();
    let store = state.store.clone();
    let (agents, pending, sessions, recent, needs_key, remembered) = blocking(move || {
        let agents = store.list_agents()?;
        let remembered = store.local_upstreams()?.patterns;
        let pending = store.list_approvals(Some(ApprovalStatus::Pending), 100)?;
        let sessions = store.list_sessions(None)?;
        let recent = store.list_audit(&AuditFilter {
            limit: Some(8),
            ..Default::default()
        })?;
        let needs_key = palisade_host::setup::needs_model_key(&store)?;
        Ok((agents, pending, sessions, recent, needs_key, remembered))
    })
    .await?;
    let warm = state.host.warm_agents();
    let names: Vec<_> = agents.iter().map(|a| a.name.clone()).collect();
    // The card asked for, else one that still waits for the person: a local model
    // server the vault was refused and nobody has allowed since (a reload, a new login
    // link, the nav's Dashboard: the card and its button stay until it is allowed).
    let waiting = || {
        let checks = state
            .key_checks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        agents
            .iter()
            .find_map(|agent| match checks.get(agent.name.as_str()) {
                Some(setup::Listing::LocalRefused { host }) if !remembered.contains(host) => {
                    Some(agent.name.to_string())
                }
                _ => None,
            })
    };
    let shown = query.ready.clone().or_else(waiting);
    let ready = shown.as_deref().and_then(|name| {
        let agent = agents.iter().find(|a| a.name.as_str() == name)?;
        let settings = AgentSettings::from_json(&agent.settings).ok()?;
        // What this server found when the key was stored; nothing for a link to an
        // agent no key was stored for here.
        let listing = state
            .key_checks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(name)
            .cloned()?;
        // An OpenAI-compatible provider with the default Claude model: no model yet.
        let model =
            (!settings.has_anthropics_default_at_openai()).then_some(settings.model.as_str());
        let anthropic = settings.provider == "anthropic";
        Some(setup::ready_card(name, model, anthropic, &listing))
    });
    // The form starts from the default agent as it is set up (the one it picks).
    let prefilled = agents
        .iter()
        .find(|a| a.name.as_str() == palisade_host::setup::DEFAULT_AGENT)
        .or(agents.first())
        .and_then(KeyForm::of_agent);
    let traffic = charts::all_agents(state).await?;
    let body = html! {
        div.page-head {
            h1 { "Dashboard" }
            p.muted { "Your agents, what waits for you, and what happened lately." }
        }
        @if let Some(ready) = ready { (ready) }
        @if needs_key || refused.is_some() {
            (setup::card(&names, refused.map(|(form, _)| form).or(prefilled.as_ref()), refused.map(|(_, error)| error)))
        }
        div.stats {
            a.stat href="/agents" {
                span.value { (agents.len()) }
                span.label { "agents" }
                span.note { (warm.len()) " warm" }
            }
            a.stat.attention[!pending.is_empty()] href="/approvals" {
                span.value { (pending.len()) }
                span.label { "pending approvals" }
                span.note { @if pending.is_empty() { "nothing waits for you" } @else { "waiting for you" } }
            }
            a.stat href="/sessions" {
                span.value { (sessions.len()) }
                span.label { "sessions" }
                span.note { (sessions.iter().map(|s| s.messages).sum::<i64>()) " messages" }
            }
            a.stat href="/audit" {
                span.value { (recent.first().map(|r| r.id).unwrap_or(0)) }
                span.label { "audit rows" }
                span.note { "hash-chained" }
            }
        }
        div.columns {
            section.card {
                h2 { "Agents" }
                @if agents.is_empty() {
                    p.muted { "No agents yet. " a href="/agents/new" { "Create one" } "." }
                } @else {
                    ul.plain {
                        @for agent in &agents {
                            li.row-between {
                                span {
                                    a href={ "/agents/" (agent.name) } { strong { (agent.name) } }
                                    " "
                                    (layout::pill(agent.profile.as_str(), "neutral"))
                                    " "
                                    @if warm.contains(&agent.name) { (layout::pill("warm", "good")) } @else { (layout::pill("idle", "neutral")) }
                                    @if lacks_a_model(agent) {
                                        " "
                                        a.pill.warn.no-model href={ "/agents/" (agent.name) } title="An OpenAI-compatible server does not serve Anthropic's default model: choose one of its models on the agent page" { "choose a model" }
                                    }
                                }
                                a.button.small href={ "/chat?agent=" (agent.name) } { "Chat" }
                            }
                        }
                    }
                }
            }
            section.card {
                h2 { "Waiting for you" }
                @if pending.is_empty() {
                    p.muted { "No held requests. When an agent's request needs approval it shows up here and on the Approvals page." }
                } @else {
                    ul.plain {
                        @for approval in pending.iter().take(5) {
                            li {
                                a href="/approvals" { (approval.title) }
                                div.muted.small { (approval.agent) " · " (super::relative(approval.created_at_ms)) }
                            }
                        }
                    }
                }
            }
        }
        section.card #traffic {
            h2 { "Requests in the last 24 hours" }
            (traffic)
        }
        section.card {
            div.row-between {
                h2 { "Recent activity" }
                a href="/audit" { "Full audit log →" }
            }
            (audit::table(&recent))
        }
    };
    let status = if refused.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok(layout::render_status(state, status, Nav::Dashboard, "Dashboard", body).await)
}

/// Whether `agent` asks its OpenAI-compatible server for Anthropic's default model
/// (see `AgentSettings::has_anthropics_default_at_openai`).
fn lacks_a_model(agent: &palisade_store::AgentRecord) -> bool {
    palisade_host::settings::AgentSettings::from_json(&agent.settings)
        .is_ok_and(|settings| settings.has_anthropics_default_at_openai())
}
