//! Agents: the list with model and status, and one agent's settings, editable
//! instructions (written through the same function as `palisade agents edit`), its
//! memory (read-only) and its grants.

use super::layout::{self, Nav};
use super::{blocking, PageError, PageResult};
use crate::WebState;
use axum::extract::{Form, Path, Query, State};
use axum::response::{IntoResponse, Redirect};
use maud::html;
use palisade_host::settings::{self, MAX_INSTRUCTIONS_BYTES, MAX_MEMORY_BYTES};
use palisade_host::AgentSettings;
use palisade_policy::AgentName;
use palisade_store::AuditEntry;
use serde::Deserialize;

pub(crate) async fn list(State(state): State<WebState>) -> PageResult {
    let store = state.store.clone();
    let (agents, sessions) =
        blocking(move || Ok((store.list_agents()?, store.list_sessions(None)?))).await?;
    let warm = state.host.warm_agents();
    let body = html! {
        div.page-head {
            h1 { "Agents" }
            p.muted { "Each agent has its own sandbox, workspace, vault identity and grants. Create and delete agents with " code { "palisade agents" } "." }
        }
        section.card {
            @if agents.is_empty() {
                p.muted { "No agents yet. Create one with " code { "palisade agents create NAME" } "." }
            } @else {
                table {
                    thead { tr { th { "Name" } th { "Provider" } th { "Model" } th { "Profile" } th { "Status" } th { "Sessions" } th { "Created" } th {} } }
                    tbody {
                        @for agent in &agents {
                            @let settings = AgentSettings::from_json(&agent.settings);
                            tr {
                                td { a href={ "/agents/" (agent.name) } { strong { (agent.name) } } }
                                @match &settings {
                                    Ok(settings) => { td { (settings.provider) } td { code { (settings.model) } } }
                                    Err(_) => { td.error-text colspan="2" { "settings unreadable" } }
                                }
                                td { (layout::pill(agent.profile.as_str(), "neutral")) }
                                td {
                                    @if warm.contains(&agent.name) { (layout::pill("warm", "good")) } @else { (layout::pill("idle", "neutral")) }
                                }
                                td { (sessions.iter().filter(|s| s.agent == agent.name).count()) }
                                td.muted { (super::relative(agent.created_at_ms)) }
                                td.actions { a.button.small href={ "/chat?agent=" (agent.name) } { "Chat" } }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::render(&state, Nav::Agents, "Agents", body).await)
}

#[derive(Deserialize)]
pub(crate) struct ShowQuery {
    saved: Option<String>,
}

pub(crate) async fn show(
    State(state): State<WebState>,
    Path(name): Path<String>,
    Query(query): Query<ShowQuery>,
) -> PageResult {
    let name = AgentName::new(&name)?;
    let store = state.store.clone();
    let lookup = name.clone();
    let (agent, secrets, rules, sessions, instructions, memory) = blocking(move || {
        let agent = store.get_agent(&lookup)?;
        let secrets: Vec<_> = store
            .list_secrets()?
            .into_iter()
            .filter(|s| s.agents.contains(&lookup))
            .collect();
        let rules: Vec<_> = store
            .list_rules()?
            .into_iter()
            .filter(|r| r.agent.is_none() || r.agent.as_ref() == Some(&lookup))
            .collect();
        let sessions = store.list_sessions(Some(&lookup))?;
        let home = store.home().clone();
        let instructions = settings::read_agent_file(
            &settings::instructions_path(&home, lookup.as_str()),
            MAX_INSTRUCTIONS_BYTES,
        )
        .map_err(PageError::from);
        let memory = settings::read_agent_file(
            &settings::memory_path(&home, lookup.as_str()),
            MAX_MEMORY_BYTES,
        )
        .map_err(PageError::from);
        Ok((agent, secrets, rules, sessions, instructions, memory))
    })
    .await?;
    let parsed = AgentSettings::from_json(&agent.settings);
    let warm = state.host.warm_agents().contains(&name);
    let extra: Vec<(String, String)> = agent
        .settings
        .as_object()
        .map(|object| {
            object
                .iter()
                .filter(|(key, _)| !matches!(key.as_str(), "provider" | "model" | "base_url"))
                .map(|(key, value)| (key.clone(), value.to_string()))
                .collect()
        })
        .unwrap_or_default();
    let body = html! {
        div.page-head.row-between {
            div {
                h1 { (agent.name) " " @if warm { (layout::pill("warm", "good")) } @else { (layout::pill("idle", "neutral")) } }
                p.muted { "Created " (super::when(agent.created_at_ms)) }
            }
            div {
                a.button href={ "/sessions?agent=" (agent.name) } { "Sessions (" (sessions.len()) ")" }
                " "
                a.button.primary href={ "/chat?agent=" (agent.name) } { "Chat" }
            }
        }
        div.columns {
            section.card {
                h2 { "Settings" }
                dl.fields {
                    dt { "Profile" } dd { (agent.profile.as_str()) }
                    @match &parsed {
                        Ok(settings) => {
                            dt { "Provider" } dd { (settings.provider) }
                            dt { "Model" } dd { code { (settings.model) } }
                            dt { "Base URL" } dd { code { (settings.effective_base_url()) } }
                        }
                        Err(error) => { dt { "Settings" } dd.error-text { (error.to_string()) } }
                    }
                    @for (key, value) in &extra {
                        dt { (key) } dd { code { (value) } }
                    }
                    dt { "Gateway token" } dd { @if agent.has_token { "issued" } @else { "none" } }
                }
                p.muted.small { "Change these with " code { "palisade agents edit " (agent.name) } "." }
            }
            section.card {
                h2 { "Grants" }
                h3 { "Secrets injected for this agent" }
                @if secrets.is_empty() {
                    p.muted { "None. Grant one with " code { "palisade secrets grant NAME --agent " (agent.name) } "." }
                } @else {
                    ul.plain {
                        @for secret in &secrets {
                            li { a href="/vault" { strong { (secret.name) } } " → " code { (secret.host_pattern) (secret.path_pattern.as_deref().unwrap_or("")) } " as " code { (secret.injection) } }
                        }
                    }
                }
                h3 { "Rules that apply to it" }
                @if rules.is_empty() {
                    p.muted { "None: the " (agent.profile.as_str()) " profile's default egress applies." }
                } @else {
                    ul.plain {
                        @for rule in &rules {
                            li {
                                strong { (rule.name) } " " (layout::pill(&rule.action, "neutral")) " "
                                code { (rule.method) " " (rule.host_pattern) (rule.path_pattern.as_deref().unwrap_or("")) }
                                @if rule.agent.is_none() { span.muted.small { " (every agent)" } }
                            }
                        }
                    }
                }
            }
        }
        section.card {
            div.row-between {
                h2 { "Instructions" }
                @if query.saved.is_some() { span.pill.good { "saved" } }
            }
            p.muted.small { "The agent's system instructions (markdown), read for every message. At most 64 KiB." }
            @match &instructions {
                Ok(text) => {
                    form method="post" action={ "/agents/" (agent.name) "/instructions" } {
                        (layout::csrf_field(&state))
                        textarea.code name="instructions" rows="12" maxlength=(MAX_INSTRUCTIONS_BYTES) { (text) }
                        div.form-actions { button.primary type="submit" { "Save instructions" } }
                    }
                }
                Err(error) => { p.error-box { (error) } }
            }
        }
        section.card {
            h2 { "Memory" }
            p.muted.small { "Notes the agent keeps with its memory tool, loaded into its prompt. Read-only here." }
            @match &memory {
                Ok(text) if text.trim().is_empty() => { p.muted { "Empty." } }
                Ok(text) => { pre.memory { (text) } }
                Err(error) => { p.error-box { (error) } }
            }
        }
    };
    Ok(layout::render(&state, Nav::Agents, agent.name.as_str(), body).await)
}

#[derive(Deserialize)]
pub(crate) struct InstructionsForm {
    instructions: String,
}

pub(crate) async fn save_instructions(
    State(state): State<WebState>,
    Path(name): Path<String>,
    Form(form): Form<InstructionsForm>,
) -> PageResult {
    let name = AgentName::new(&name)?;
    let store = state.store.clone();
    let agent = name.clone();
    blocking(move || {
        store.get_agent(&agent)?;
        // Browsers send textarea line breaks as CRLF.
        let text = form.instructions.replace("\r\n", "\n");
        settings::write_instructions(store.home(), agent.as_str(), &text)?;
        store.append_audit(&AuditEntry {
            event: "agent.instructions".into(),
            agent: Some(agent.to_string()),
            decision: Some("updated".into()),
            actor: Some(store.actor().to_string()),
            detail: Some(serde_json::json!({ "bytes": text.len() })),
            ..Default::default()
        })?;
        Ok(())
    })
    .await?;
    Ok(Redirect::to(&format!("/agents/{name}?saved=1")).into_response())
}
