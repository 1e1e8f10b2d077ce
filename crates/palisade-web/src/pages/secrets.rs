//! The vault's secrets from the web UI: add one (its value write-only), look at one,
//! rotate its value, grant it to an agent, revoke a grant, delete it.
//!
//! Input is checked by `palisade_store::input` and written by the store's methods, the
//! code `palisade secrets` runs, so errors read the same and every change is audited
//! (actor `web:admin`) and in force in every running gateway when the page answers.
//! A value goes from the form straight to the store, which seals it; no page, form or
//! error ever shows it again (its fields are always rendered empty).

use super::forms::{self, given};
use super::layout::{self, Nav};
use super::{blocking, PageError, PageResult};
use crate::WebState;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect};
use maud::{html, Markup};
use palisade_policy::AgentName;
use palisade_store::input::{secret_value, SecretDraft};
use serde::Deserialize;

/// The pairs of a posted form, repeated names kept (a secret's agents are checkboxes).
pub(crate) fn pairs(body: &Bytes) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

pub(crate) fn field<'a>(pairs: &'a [(String, String)], name: &str) -> &'a str {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

fn all<'a>(pairs: &'a [(String, String)], name: &'a str) -> impl Iterator<Item = &'a str> {
    pairs
        .iter()
        .filter(move |(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Injection shapes offered as suggestions (any other spec may be typed).
const INJECTIONS: [&str; 5] = [
    "bearer",
    "anthropic",
    "header:Authorization:token {value}",
    "query:key",
    "path-template:/bot{value}/",
];

#[derive(Default)]
struct SecretForm {
    name: String,
    host_pattern: String,
    path_pattern: String,
    inject: String,
    agents: Vec<String>,
    priority: String,
    sensitive: bool,
}

impl SecretForm {
    fn from_pairs(pairs: &[(String, String)]) -> SecretForm {
        SecretForm {
            name: field(pairs, "name").trim().into(),
            host_pattern: field(pairs, "host_pattern").trim().into(),
            path_pattern: field(pairs, "path_pattern").trim().into(),
            inject: field(pairs, "inject").trim().into(),
            agents: all(pairs, "agent").map(str::to_string).collect(),
            priority: field(pairs, "priority").trim().into(),
            sensitive: field(pairs, "sensitive") == "true",
        }
    }

    fn draft(&self) -> Result<SecretDraft, String> {
        Ok(SecretDraft {
            name: self.name.clone(),
            host_pattern: self.host_pattern.clone(),
            path_pattern: given(&self.path_pattern),
            inject: self.inject.clone(),
            agents: self.agents.clone(),
            priority: forms::number(&self.priority, "priority")?.unwrap_or(0),
            sensitive: self.sensitive,
        })
    }
}

fn agent_boxes(agents: &[AgentName], checked: &[String]) -> Markup {
    html! {
        fieldset.field {
            legend.label { "Granted to" }
            @if agents.is_empty() { span.muted.small { "No agents yet." } }
            @for agent in agents {
                label.check {
                    input type="checkbox" name="agent" value=(agent) checked[checked.iter().any(|a| a == agent.as_str())];
                    " " (agent)
                }
            }
            span.hint { "Only these agents get it injected; none until you grant it." }
        }
    }
}

fn new_body(form: &SecretForm, agents: &[AgentName], error: Option<&str>) -> Markup {
    html! {
        div.page-head {
            h1 { "New secret" }
            p.muted { "The same as " code { "palisade secrets create" } ". The value is sealed in the store and never shown again; agents never see it, the vault injects it into their requests." }
        }
        section.card {
            (forms::error_box(error))
            form #secret-form method="post" action="/vault/secrets" autocomplete="off" {
                (layout::csrf_field())
                div.form-grid {
                    (forms::text("Name", "name", &form.name, "e.g. github-token (letters, digits, '-', '_', '.')"))
                    (forms::text("Host", "host_pattern", &form.host_pattern, "exact (api.example.com) or *.example.com; add :PORT (127.0.0.1:8080) to send it on that port only"))
                    (forms::text("Path", "path_pattern", &form.path_pattern, "empty: every path; exact (/v1/messages) or a prefix (/v1/*)"))
                    label.field {
                        span.label { "Injection" }
                        input type="text" name="inject" value=(form.inject) list="injections" autocomplete="off" spellcheck="false";
                        datalist #injections { @for spec in INJECTIONS { option value=(spec) {} } }
                        span.hint { "bearer | anthropic | header:NAME[:FORMAT with {value}] | query:NAME | path-template:/prefix{value}/" }
                    }
                    (forms::text("Priority", "priority", &form.priority, "higher wins among equally specific paths (empty: 0)"))
                    (forms::password("Value", "value", "the credential itself; write-only"))
                }
                (agent_boxes(agents, &form.agents))
                label.check {
                    input type="checkbox" name="sensitive" value="true" checked[form.sensitive];
                    " Sensitive: a credential to data or actions that matter (mail, payments, code); never granted to, nor injected for, a research agent"
                }
                div.form-actions {
                    a.button href="/vault" { "Cancel" }
                    button.primary #create-secret type="submit" { "Add secret" }
                }
            }
        }
    }
}

async fn agent_names(state: &WebState) -> Result<Vec<AgentName>, PageError> {
    let store = state.store.clone();
    blocking(move || Ok(store.list_agents()?.into_iter().map(|a| a.name).collect())).await
}

pub(crate) async fn new_form(State(state): State<WebState>) -> PageResult {
    let agents = agent_names(&state).await?;
    let form = SecretForm {
        inject: "bearer".into(),
        ..SecretForm::default()
    };
    let body = new_body(&form, &agents, None);
    Ok(layout::render(&state, Nav::Vault, "New secret", body).await)
}

pub(crate) async fn create(State(state): State<WebState>, body: Bytes) -> PageResult {
    let pairs = pairs(&body);
    let form = SecretForm::from_pairs(&pairs);
    let value = field(&pairs, "value").to_string();
    let store = state.store.clone();
    let draft = form.draft();
    let created = blocking(move || {
        let draft = draft.map_err(PageError::BadRequest)?;
        let checked = draft.check()?;
        store.check_new_secret(&checked)?;
        let value = secret_value(value)?;
        Ok(store.create_secret(checked.with_value(value))?)
    })
    .await;
    match created {
        Ok(secret) => {
            for agent in &secret.agents {
                state.model_lists.forget_agent(agent.as_str());
            }
            Ok(
                Redirect::to(&format!("/vault/secrets/{}?saved=created", secret.name))
                    .into_response(),
            )
        }
        Err(error) => {
            let message = error.for_form()?;
            let agents = agent_names(&state).await?;
            let body = new_body(&form, &agents, Some(&message));
            Ok(forms::refused(&state, Nav::Vault, "New secret", body).await)
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct ShowQuery {
    saved: Option<String>,
}

async fn secret_page(
    state: &WebState,
    name: String,
    saved: Option<&str>,
    error: Option<&str>,
) -> PageResult {
    let store = state.store.clone();
    let (secret, agents) =
        blocking(move || Ok((store.get_secret(&name)?, store.list_agents()?))).await?;
    let ungranted: Vec<(String, String)> = agents
        .iter()
        .filter(|a| !secret.agents.contains(&a.name))
        .filter(|a| super::agent_policy::grantable(&secret, a.profile))
        .map(|a| (a.name.to_string(), a.name.to_string()))
        .collect();
    let body = html! {
        div.page-head {
            h1 { "Secret " (secret.name) }
            p.muted { "Created " (super::when(secret.created_at_ms)) ". Its value is sealed in the store and never shown." }
        }
        @if let Some(saved) = saved {
            p.flash #saved { @match saved { "created" => { "Secret added." } "rotated" => { "Value replaced; the vault injects the new one from the next request." } "granted" => { "Granted." } "revoked" => { "Grant revoked." } _ => { "Saved." } } }
        }
        (forms::error_box(error))
        div.columns {
            section.card {
                h2 { "Where it is injected" }
                dl.fields {
                    dt { "Host" } dd { code { (secret.host_pattern) } }
                    dt { "Path" } dd { @if let Some(path) = &secret.path_pattern { code { (path) } } @else { span.muted { "any" } } }
                    dt { "Injection" } dd { code { (secret.injection) } }
                    dt { "Priority" } dd { (secret.priority) }
                    dt { "Sensitive" } dd { @if secret.sensitive { "yes: never for research agents" } @else { "no" } }
                }
                h3 { "Rotate the value" }
                form #rotate-form method="post" action={ "/vault/secrets/" (secret.name) "/rotate" } autocomplete="off" {
                    (layout::csrf_field())
                    (forms::password("New value", "value", "replaces the stored value; hosts, injection and grants stay"))
                    label.check {
                        input type="checkbox" name="confirm" value="yes" required;
                        " The old value stops working for agents at once; it cannot be shown or restored."
                    }
                    div.form-actions { button.primary #rotate type="submit" { "Replace the value" } }
                }
            }
            section.card {
                h2 { "Granted to" }
                @if secret.agents.is_empty() {
                    p.muted #grants { "Nobody: no agent gets it injected." }
                } @else {
                    ul.plain #grants {
                        @for agent in &secret.agents {
                            li.row-between {
                                a href={ "/agents/" (agent) } { strong { (agent) } }
                                a.button.small.danger href={ "/vault/secrets/" (secret.name) "/revoke?agent=" (agent) } { "Revoke…" }
                            }
                        }
                    }
                }
                @if !ungranted.is_empty() {
                    form #grant-form.inline method="post" action={ "/vault/secrets/" (secret.name) "/grant" } {
                        (layout::csrf_field())
                        (forms::select("Grant to", "agent", &ungranted, "", ""))
                        button #grant type="submit" { "Grant" }
                    }
                }
            }
        }
        section.card.danger-zone {
            h2 { "Delete" }
            p.muted.small { "The vault stops injecting it on the next request; agents relying on it get refusals from the API." }
            a.button.danger #delete-secret href={ "/vault/secrets/" (secret.name) "/delete" } { "Delete secret…" }
        }
    };
    let status = if error.is_some() {
        axum::http::StatusCode::BAD_REQUEST
    } else {
        axum::http::StatusCode::OK
    };
    Ok(layout::render_status(
        state,
        status,
        Nav::Vault,
        &format!("Secret {}", secret.name),
        body,
    )
    .await)
}

pub(crate) async fn show(
    State(state): State<WebState>,
    Path(name): Path<String>,
    Query(query): Query<ShowQuery>,
) -> PageResult {
    secret_page(&state, name, query.saved.as_deref(), None).await
}

/// Runs a change and answers with the secret's page: its flash on success, the error
/// line (400) when the input was refused.
async fn change(
    state: &WebState,
    name: String,
    saved: &str,
    work: impl FnOnce(palisade_store::Store) -> Result<(), PageError> + Send + 'static,
) -> PageResult {
    let store = state.store.clone();
    match blocking(move || work(store)).await {
        Ok(()) => Ok(Redirect::to(&format!(
            "/vault/secrets/{}?saved={saved}",
            super::query_value(&name)
        ))
        .into_response()),
        Err(error) => {
            let message = error.for_form()?;
            secret_page(state, name, None, Some(&message)).await
        }
    }
}

pub(crate) async fn rotate(
    State(state): State<WebState>,
    Path(name): Path<String>,
    body: Bytes,
) -> PageResult {
    let pairs = pairs(&body);
    let value = field(&pairs, "value").to_string();
    let confirmed = field(&pairs, "confirm") == "yes";
    let secret = name.clone();
    let changed = change(&state, name, "rotated", move |store| {
        store.get_secret(&secret)?;
        // Replacing a value is not undone: the form's box must say so was understood.
        if !confirmed {
            return Err(PageError::BadRequest(
                "the old value would be lost: tick the box to confirm, then replace it".into(),
            ));
        }
        let value = secret_value(value)?;
        store.rotate_secret(&secret, &value)?;
        Ok(())
    })
    .await;
    // A list read (or refused) with the old value is not what the new one gets.
    state.model_lists.forget_all();
    changed
}

pub(crate) async fn grant(
    State(state): State<WebState>,
    Path(name): Path<String>,
    body: Bytes,
) -> PageResult {
    let agent = field(&pairs(&body), "agent").trim().to_string();
    let secret = name.clone();
    state.model_lists.forget_agent(&agent);
    change(&state, name, "granted", move |store| {
        let agent = AgentName::new(&agent)?;
        store.grant_secret(&secret, &agent)?;
        Ok(())
    })
    .await
}

#[derive(Deserialize)]
pub(crate) struct AgentQuery {
    #[serde(default)]
    agent: String,
}

pub(crate) async fn confirm_revoke(
    State(state): State<WebState>,
    Path(name): Path<String>,
    Query(query): Query<AgentQuery>,
) -> PageResult {
    let agent = AgentName::new(&query.agent)?;
    let store = state.store.clone();
    let lookup = name.clone();
    let secret = blocking(move || Ok(store.get_secret(&lookup)?)).await?;
    if !secret.agents.contains(&agent) {
        return Err(PageError::NotFound(format!(
            "agent {agent} has no grant of secret {name}"
        )));
    }
    let explanation = html! {
        p { "Agent " strong { (agent) } " will no longer get secret " strong { (secret.name) } " injected, from its next request on." }
    };
    Ok(forms::confirm(
        &state,
        Nav::Vault,
        &format!("Revoke {name} from {agent}?"),
        explanation,
        &format!(
            "/vault/secrets/{}/revoke?agent={agent}",
            super::query_value(&name)
        ),
        "Revoke the grant",
        &format!("/vault/secrets/{}", super::query_value(&name)),
    )
    .await)
}

pub(crate) async fn revoke(
    State(state): State<WebState>,
    Path(name): Path<String>,
    Query(query): Query<AgentQuery>,
) -> PageResult {
    let agent = AgentName::new(&query.agent)?;
    state.model_lists.forget_agent(agent.as_str());
    let secret = name.clone();
    change(&state, name, "revoked", move |store| {
        store.revoke_secret(&secret, &agent)?;
        Ok(())
    })
    .await
}

pub(crate) async fn confirm_delete(
    State(state): State<WebState>,
    Path(name): Path<String>,
) -> PageResult {
    let store = state.store.clone();
    let lookup = name.clone();
    let secret = blocking(move || Ok(store.get_secret(&lookup)?)).await?;
    let granted: Vec<String> = secret.agents.iter().map(ToString::to_string).collect();
    let explanation = html! {
        p {
            "Secret " strong { (secret.name) } " (" code { (secret.host_pattern) } ") will be deleted with its value. "
            @if granted.is_empty() { "No agent has it." } @else { "Granted to: " (granted.join(", ")) "." }
        }
    };
    Ok(forms::confirm(
        &state,
        Nav::Vault,
        &format!("Delete secret {name}?"),
        explanation,
        &format!("/vault/secrets/{}/delete", super::query_value(&name)),
        "Delete the secret",
        &format!("/vault/secrets/{}", super::query_value(&name)),
    )
    .await)
}

pub(crate) async fn delete(State(state): State<WebState>, Path(name): Path<String>) -> PageResult {
    let store = state.store.clone();
    let secret = name.clone();
    let agents = blocking(move || {
        let agents = store.get_secret(&secret)?.agents;
        store.delete_secret(&secret)?;
        Ok(agents)
    })
    .await?;
    for agent in agents {
        state.model_lists.forget_agent(agent.as_str());
    }
    Ok(Redirect::to("/vault").into_response())
}
