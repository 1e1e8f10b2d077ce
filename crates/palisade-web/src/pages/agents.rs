//! Agents: the list, a new agent's form, one agent's page (settings and instructions
//! as forms, the models its provider offers as a choice, its memory, its grants, its
//! traffic of the last day) and deleting one behind a confirmation.
//!
//! Every change goes through [`palisade_host::agents`], the code `palisade agents
//! create|edit|delete` runs, so the checks and the one-line errors are the CLI's. The
//! page's policy sections (plain words, dial, allow-list) are in [`super::agent_policy`].

use super::agent_policy::{self, PolicyView};
use super::forms::{self, given};
use super::layout::{self, Nav};
use super::{blocking, charts, PageError, PageResult};
use crate::WebState;
use axum::extract::{Form, Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use palisade_host::agents::AgentDraft;
use palisade_host::settings::{self, MAX_INSTRUCTIONS_BYTES, MAX_MEMORY_BYTES};
use palisade_host::AgentSettings;
use palisade_policy::models::{ListedModel, DEFAULT_MODEL};
use palisade_policy::AgentName;
use palisade_store::AgentRecord;
use serde::Deserialize;
use std::time::{Duration, Instant};

/// How long a provider's model list is reused before it is asked again.
const MODELS_FRESH: Duration = Duration::from_secs(600);
/// How long a failure to list models is remembered (so a page view does not wait on a
/// dead API every time).
const MODELS_FAILED_FRESH: Duration = Duration::from_secs(60);
/// How long the agent page waits for the model list.
const MODELS_TIMEOUT: Duration = Duration::from_secs(8);

/// `/agents?deleted=NAME`, after an agent was deleted.
#[derive(serde::Deserialize, Default)]
pub(crate) struct ListQuery {
    deleted: Option<String>,
}

pub(crate) async fn list(
    State(state): State<WebState>,
    Query(query): Query<ListQuery>,
) -> PageResult {
    // Only a valid agent name is shown back (the query is anyone's to write).
    let deleted = query
        .deleted
        .and_then(|name| AgentName::new(&name).ok())
        .map(|name| {
            let workspace = state
                .store
                .home()
                .agent_dir(name.as_str())
                .join("workspace");
            (name, workspace)
        });
    let store = state.store.clone();
    let (agents, sessions) =
        blocking(move || Ok((store.list_agents()?, store.list_sessions(None)?))).await?;
    let warm = state.host.warm_agents();
    let body = html! {
        div.page-head.row-between {
            div {
                h1 { "Agents" }
                p.muted { "Each agent has its own sandbox, workspace, vault identity and grants." }
            }
            a.button.primary #new-agent href="/agents/new" { "New agent" }
        }
        @if let Some((name, workspace)) = &deleted {
            p.flash #deleted {
                "Agent " strong { (name) } " deleted, with its gateway token, grants and rules. "
                "Its sessions stay on record, and its workspace on disk: " code { (workspace.display()) } "."
            }
        }
        section.card {
            @if agents.is_empty() {
                p.muted { "No agents yet. " a href="/agents/new" { "Create one" } "." }
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

/// The fields of the agent forms, named as the CLI's options.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct AgentForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    profile: String,
    #[serde(default)]
    provider: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    base_url: String,
    #[serde(default)]
    instructions: Option<String>,
    #[serde(default)]
    turn_timeout: String,
    #[serde(default)]
    idle_timeout: String,
    #[serde(default)]
    concurrency: String,
    #[serde(default)]
    workspace_quota: String,
}

impl AgentForm {
    /// What was typed, as the CLI would pass it: every field given (an empty optional
    /// one clears it); a new agent's empty fields are left at their defaults.
    fn draft(&self, new: bool) -> AgentDraft {
        let field = |text: &str| -> Option<String> {
            if new {
                given(text)
            } else {
                Some(text.trim().to_string())
            }
        };
        AgentDraft {
            profile: field(&self.profile),
            provider: field(&self.provider),
            model: field(&self.model),
            base_url: field(&self.base_url),
            instructions: self.instructions.clone().filter(|t| !new || !t.is_empty()),
            turn_timeout: field(&self.turn_timeout),
            idle_timeout: field(&self.idle_timeout),
            concurrency: field(&self.concurrency),
            workspace_quota: field(&self.workspace_quota),
        }
    }

    /// The form showing an agent's current settings.
    fn of(agent: &AgentRecord, settings: &AgentSettings) -> AgentForm {
        let duration = |secs: Option<u64>| {
            secs.map(|s| humantime::format_duration(Duration::from_secs(s)).to_string())
                .unwrap_or_default()
        };
        AgentForm {
            name: agent.name.to_string(),
            profile: agent.profile.as_str().into(),
            provider: settings.provider.clone(),
            model: settings.model.clone(),
            base_url: settings.base_url.clone().unwrap_or_default(),
            instructions: None,
            turn_timeout: duration(settings.turn_timeout_secs),
            idle_timeout: duration(settings.idle_timeout_secs),
            concurrency: settings
                .concurrency
                .map(|n| n.to_string())
                .unwrap_or_default(),
            workspace_quota: settings
                .workspace_quota_bytes
                .map(format_quota)
                .unwrap_or_default(),
        }
    }
}

/// `4G`, `512M`: a quota as `parse_quota` reads it back exactly.
fn format_quota(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")];
    for (size, unit) in UNITS {
        if bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

/// The provider's models as choices, the agent's own first if the provider does not
/// list it (it stays selectable, marked).
fn model_choices(models: &[ListedModel], current: &str) -> Vec<(String, String)> {
    let mut choices: Vec<(String, String)> = models
        .iter()
        .map(|m| (m.id.clone(), m.id.clone()))
        .collect();
    if !current.is_empty() && !models.iter().any(|m| m.id == current) {
        choices.insert(
            0,
            (
                current.to_string(),
                format!("{current} (not listed by the provider)"),
            ),
        );
    }
    choices
}

/// The fields both agent forms have. `models`: the provider's list, offered as a choice.
fn settings_fields(form: &AgentForm, models: Option<&[ListedModel]>) -> Markup {
    let profiles = forms::options(["research", "action"]);
    let providers = vec![
        ("anthropic".to_string(), "Anthropic".to_string()),
        ("openai".to_string(), "OpenAI-compatible".to_string()),
    ];
    html! {
        div.form-grid {
            (forms::select("Profile", "profile", &profiles, if form.profile.is_empty() { "research" } else { &form.profile },
                "research: any host, no sensitive secrets; action: only hosts a rule or secret names"))
            (forms::select("Provider", "provider", &providers, if form.provider.is_empty() { "anthropic" } else { &form.provider }, ""))
            @match models {
                Some(models) if !models.is_empty() => {
                    (forms::select("Model", "model", &model_choices(models, &form.model), &form.model, "the models the provider lists for this agent's key"))
                }
                _ => {
                    (forms::text("Model", "model", &form.model, &format!("Anthropic: empty for {DEFAULT_MODEL}; OpenAI-compatible: the name your server lists, e.g. llama3")))
                }
            }
            (forms::text("Base URL", "base_url", &form.base_url, "empty: https://api.anthropic.com; an OpenAI-compatible server's URL, e.g. http://127.0.0.1:8080/v1"))
            (forms::text("Concurrency", "concurrency", &form.concurrency, "conversations handled at once, 1-8 (empty: 1)"))
            (forms::text("Idle timeout", "idle_timeout", &form.idle_timeout, "how long an idle runner stays warm, e.g. 1h (empty: the host's)"))
            (forms::text("Turn timeout", "turn_timeout", &form.turn_timeout, "how long one message may take, e.g. 30m (empty: the host's)"))
            (forms::text("Workspace quota", "workspace_quota", &form.workspace_quota, "disk the workspace may use, e.g. 10G (empty: 4G)"))
        }
    }
}

fn new_agent_body(form: &AgentForm, error: Option<&str>) -> Markup {
    html! {
        div.page-head {
            h1 { "New agent" }
            p.muted { "The same as " code { "palisade agents create" } ". It gets its own sandbox, workspace and vault identity, and no secrets until you grant some." }
        }
        section.card {
            (forms::error_box(error))
            form #agent-form method="post" action="/agents" {
                (layout::csrf_field())
                (forms::text("Name", "name", &form.name, "1-63 lowercase letters, digits, '-' or '_'"))
                (settings_fields(form, None))
                label.field {
                    span.label { "Instructions" }
                    textarea.code name="instructions" rows="6" maxlength=(MAX_INSTRUCTIONS_BYTES) placeholder="empty: a starting template" {
                        (form.instructions.as_deref().unwrap_or(""))
                    }
                }
                div.form-actions {
                    a.button href="/agents" { "Cancel" }
                    button.primary #create-agent type="submit" { "Create agent" }
                }
            }
        }
    }
}

pub(crate) async fn new_form(State(state): State<WebState>) -> PageResult {
    // No model filled in: Anthropic's default, shown for an OpenAI-compatible agent,
    // was stored for it unseen (review, a new user). Empty is Anthropic's default for
    // an Anthropic agent, and an OpenAI-compatible one is asked for its server's.
    let form = AgentForm::default();
    let body = new_agent_body(&form, None);
    Ok(layout::render(&state, Nav::Agents, "New agent", body).await)
}

pub(crate) async fn create(
    State(state): State<WebState>,
    Form(form): Form<AgentForm>,
) -> PageResult {
    let store = state.store.clone();
    let draft = form.draft(true);
    let name = form.name.trim().to_string();
    let created = blocking(move || {
        palisade_host::agents::create(&store, &name, &draft).map_err(PageError::from)
    })
    .await;
    match created {
        Ok(agent) => {
            Ok(Redirect::to(&format!("/agents/{}?saved=created", agent.name)).into_response())
        }
        Err(error) => {
            let message = error.for_form()?;
            let body = new_agent_body(&form, Some(&message));
            Ok(forms::refused(&state, Nav::Agents, "New agent", body).await)
        }
    }
}

/// Models the agent's provider lists (through the vault), remembered for a while;
/// `None` when the agent has no key for its model API (nothing to ask with).
async fn available_models(
    state: &WebState,
    agent: &AgentRecord,
    settings: &AgentSettings,
    has_key: bool,
) -> Option<Result<Vec<ListedModel>, String>> {
    if !has_key {
        return None;
    }
    let key = format!(
        "{}\n{}\n{}",
        agent.name,
        settings.provider,
        settings.effective_base_url()
    );
    if let Some(cached) = state.model_lists.get(&key) {
        return Some(cached);
    }
    let socket = state.host.vault_socket(&agent.name);
    let listed = palisade_host::models::list(&socket, settings, MODELS_TIMEOUT)
        .await
        .map_err(|e| e.to_string());
    let fresh = if listed.is_ok() {
        MODELS_FRESH
    } else {
        MODELS_FAILED_FRESH
    };
    state
        .model_lists
        .put(key, listed.clone(), Instant::now() + fresh);
    Some(listed)
}

#[derive(Deserialize)]
pub(crate) struct ShowQuery {
    saved: Option<String>,
}

/// What the agent page shows above its forms when one was refused.
#[derive(Default)]
pub(crate) struct Refusal<'a> {
    settings: Option<(&'a AgentForm, &'a str)>,
    instructions: Option<(&'a str, &'a str)>,
    /// The dial section's error line.
    dial: Option<&'a str>,
    /// The allow-list section's error line.
    links: Option<&'a str>,
    /// The grant form's error line.
    grants: Option<&'a str>,
}

impl<'a> Refusal<'a> {
    /// The dial form was refused with `message`.
    pub(crate) fn of_dial(message: &'a str) -> Refusal<'a> {
        Refusal {
            dial: Some(message),
            ..Refusal::default()
        }
    }

    /// An allow-list form was refused with `message`.
    pub(crate) fn of_links(message: &'a str) -> Refusal<'a> {
        Refusal {
            links: Some(message),
            ..Refusal::default()
        }
    }

    /// The grant form was refused with `message`.
    pub(crate) fn of_grants(message: &'a str) -> Refusal<'a> {
        Refusal {
            grants: Some(message),
            ..Refusal::default()
        }
    }

    fn any(&self) -> bool {
        self.settings.is_some()
            || self.instructions.is_some()
            || self.dial.is_some()
            || self.links.is_some()
            || self.grants.is_some()
    }
}

pub(crate) async fn agent_page(
    state: &WebState,
    name: AgentName,
    saved: Option<&str>,
    refusal: Refusal<'_>,
) -> Result<Response, PageError> {
    let store = state.store.clone();
    let lookup = name.clone();
    let (agent, secrets, rules, sessions, instructions, memory, all_secrets, policy) =
        blocking(move || {
            let agent = store.get_agent(&lookup)?;
            let policy = PolicyView::load(&store, &agent)?;
            let all_secrets = store.list_secrets()?;
            let secrets: Vec<_> = all_secrets
                .iter()
                .filter(|s| s.agents.contains(&lookup))
                .cloned()
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
            Ok((
                agent,
                secrets,
                rules,
                sessions,
                instructions,
                memory,
                all_secrets,
                policy,
            ))
        })
        .await?;
    let parsed = AgentSettings::from_json(&agent.settings);
    let key = palisade_host::setup::model_key_secret(&agent, &all_secrets).map(|s| s.name.clone());
    let models = match &parsed {
        Ok(settings) => available_models(state, &agent, settings, key.is_some()).await,
        Err(_) => None,
    };
    // The vault refused the model server as a local address: the person allows it here.
    let local_refused =
        matches!(&models, Some(Err(error)) if error.contains("local_upstream_refused"));
    let traffic = charts::agent_traffic(state, Some(&agent.name)).await?;
    let warm = state.host.warm_agents().contains(&name);
    let current_form = parsed.as_ref().ok().map(|s| AgentForm::of(&agent, s));
    let (settings_form, settings_error) = match (&refusal.settings, &current_form) {
        (Some((form, error)), _) => (Some(*form), Some(*error)),
        (None, Some(form)) => (Some(form), None),
        (None, None) => (None, None),
    };
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
        @if let Some(saved) = saved {
            p.flash #saved { @match saved { "created" => { "Agent created." } "settings" => { "Settings saved." } "dial" => { "Dial saved; in force from the next request." } "allowed" => { "Allowed." } "disallowed" => { "Disallowed." } "granted" => { "Granted: the vault injects it for this agent from the next request." } _ => { "Saved." } } }
        }
        section.card {
            h2 { "Last 24 hours" }
            (traffic)
        }
        div.columns {
            section.card {
                h2 { "Settings" }
                @if let Err(error) = &parsed { p.error-box { (error.to_string()) } }
                @if let Some(form) = settings_form {
                    (forms::error_box(settings_error))
                    form #settings-form method="post" action={ "/agents/" (agent.name) "/settings" } {
                        (layout::csrf_field())
                        @match &models {
                            Some(Ok(list)) => { (settings_fields(form, Some(list))) }
                            Some(Err(error)) if local_refused => {
                                (settings_fields(form, None))
                                p.muted.small #models-error { "The vault may not reach this model server: it is a local address (this machine or your network), which agents reach only once it is allowed. Allow it below if the server is yours." }
                            }
                            Some(Err(error)) => {
                                (settings_fields(form, None))
                                p.muted.small #models-error { "The provider's models could not be listed: " (super::shown(error)) }
                            }
                            None => {
                                (settings_fields(form, None))
                                p.muted.small { "Store a model key for this agent to choose from the provider's models." }
                            }
                        }
                        div.form-actions { button.primary #save-settings type="submit" { "Save settings" } }
                    }
                    // Its own form: forms do not nest. The same as the dashboard's.
                    @if local_refused {
                        form method="post" action="/setup/allow-local" {
                            (layout::csrf_field())
                            input type="hidden" name="agent" value=(agent.name);
                            button.primary #allow-local type="submit" { "Let agents reach its model server" }
                        }
                    }
                }
                dl.fields {
                    dt { "Model key" }
                    dd { @match &key { Some(name) => { "vault secret " a href={ "/vault/secrets/" (name) } { (name) } } None => { span.error-text { "none for " (parsed.as_ref().map(|s| s.effective_base_url()).unwrap_or_default()) } } } }
                    dt { "Gateway token" } dd { @if agent.has_token { "issued" } @else { "none" } }
                }
            }
            section.card {
                h2 { "Grants" }
                h3 { "Secrets injected for this agent" }
                (forms::error_box(refusal.grants))
                @if secrets.is_empty() {
                    p.muted #agent-grants { "None yet." }
                } @else {
                    ul.plain #agent-grants {
                        @for secret in &secrets {
                            li { a href={ "/vault/secrets/" (secret.name) } { strong { (secret.name) } } " → " code { (secret.host_pattern) (secret.path_pattern.as_deref().unwrap_or("")) } " as " code { (secret.injection) } }
                        }
                    }
                }
                (agent_policy::grant_form(&agent, &all_secrets))
                h3 { "Rules that apply to it" }
                @if rules.is_empty() {
                    p.muted { "None: the " (agent.profile.as_str()) " profile's default egress applies." }
                } @else {
                    ul.plain {
                        @for rule in &rules {
                            li {
                                a href={ "/vault/rules/" (rule.id) "/edit" } { strong { (rule.name) } } " " (layout::pill(&rule.action, "neutral")) " "
                                code { (rule.method) " " (rule.host_pattern) (rule.path_pattern.as_deref().unwrap_or("")) }
                                @if rule.agent.is_none() { span.muted.small { " (every agent)" } }
                                @if !rule.enabled { span.muted.small { " (disabled)" } }
                            }
                        }
                    }
                }
            }
        }
        (agent_policy::plain_words_section(&policy))
        div.columns {
            (agent_policy::dial_section(&agent, refusal.dial))
            (agent_policy::links_section(&agent, &policy, refusal.links))
        }
        section.card {
            div.row-between {
                h2 { "Instructions" }
                @if saved == Some("instructions") { span.pill.good { "saved" } }
            }
            p.muted.small { "The agent's system instructions (markdown), read for every message. At most 64 KiB." }
            @if let Some((_, error)) = &refusal.instructions { (forms::error_box(Some(error))) }
            @let shown: Result<&str, &PageError> = match (&refusal.instructions, &instructions) {
                (Some((text, _)), _) => Ok(*text),
                (None, Ok(text)) => Ok(text.as_str()),
                (None, Err(error)) => Err(error),
            };
            @match shown {
                Ok(text) => {
                    form method="post" action={ "/agents/" (agent.name) "/instructions" } {
                        (layout::csrf_field())
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
        section.card.danger-zone {
            h2 { "Delete" }
            p.muted.small { "Removes the agent, its gateway token, its secret grants and the rules bound to it. Its workspace folder stays on disk." }
            a.button.danger #delete-agent href={ "/agents/" (agent.name) "/delete" } { "Delete agent…" }
        }
    };
    let status = if refusal.any() {
        axum::http::StatusCode::BAD_REQUEST
    } else {
        axum::http::StatusCode::OK
    };
    Ok(layout::render_status(state, status, Nav::Agents, agent.name.as_str(), body).await)
}

pub(crate) async fn show(
    State(state): State<WebState>,
    Path(name): Path<String>,
    Query(query): Query<ShowQuery>,
) -> PageResult {
    let name = AgentName::new(&name)?;
    agent_page(&state, name, query.saved.as_deref(), Refusal::default()).await
}

pub(crate) async fn save_settings(
    State(state): State<WebState>,
    Path(name): Path<String>,
    Form(form): Form<AgentForm>,
) -> PageResult {
    let name = AgentName::new(&name)?;
    let store = state.store.clone();
    let draft = AgentForm {
        instructions: None,
        ..form.clone()
    }
    .draft(false);
    let agent = name.to_string();
    let saved = blocking(move || {
        palisade_host::agents::edit(&store, &agent, &draft).map_err(PageError::from)
    })
    .await;
    match saved {
        Ok(_) => Ok(Redirect::to(&format!("/agents/{name}?saved=settings")).into_response()),
        Err(error) => {
            let message = error.for_form()?;
            let refusal = Refusal {
                settings: Some((&form, &message)),
                ..Refusal::default()
            };
            agent_page(&state, name, None, refusal).await
        }
    }
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
    let draft = AgentDraft {
        instructions: Some(form.instructions.clone()),
        ..AgentDraft::default()
    };
    let agent = name.to_string();
    let saved = blocking(move || {
        palisade_host::agents::edit(&store, &agent, &draft).map_err(PageError::from)
    })
    .await;
    match saved {
        Ok(_) => Ok(Redirect::to(&format!("/agents/{name}?saved=instructions")).into_response()),
        Err(error) => {
            let message = error.for_form()?;
            let refusal = Refusal {
                instructions: Some((&form.instructions, &message)),
                ..Refusal::default()
            };
            agent_page(&state, name, None, refusal).await
        }
    }
}

pub(crate) async fn confirm_delete(
    State(state): State<WebState>,
    Path(name): Path<String>,
) -> PageResult {
    let name = AgentName::new(&name)?;
    let store = state.store.clone();
    let lookup = name.clone();
    let (rules, grants) = blocking(move || {
        store.get_agent(&lookup)?;
        let rules = store
            .list_rules()?
            .into_iter()
            .filter(|r| r.agent.as_ref() == Some(&lookup))
            .count();
        let grants = store
            .list_secrets()?
            .into_iter()
            .filter(|s| s.agents.contains(&lookup))
            .count();
        Ok((rules, grants))
    })
    .await?;
    let explanation = html! {
        p {
            "Agent " strong { (name) } " will be deleted with its gateway token, "
            (grants) " secret grant(s) and " (rules) " rule(s) bound to it. "
            "Its sessions' messages stay on record; its workspace folder stays on disk."
        }
    };
    Ok(forms::confirm(
        &state,
        Nav::Agents,
        &format!("Delete agent {name}?"),
        explanation,
        &format!("/agents/{name}/delete"),
        "Delete the agent",
        &format!("/agents/{name}"),
    )
    .await)
}

pub(crate) async fn delete(State(state): State<WebState>, Path(name): Path<String>) -> PageResult {
    let name = AgentName::new(&name)?;
    let store = state.store.clone();
    let agent = name.to_string();
    blocking(move || palisade_host::agents::delete(&store, &agent).map_err(PageError::from))
        .await?;
    state.model_lists.forget_agent(name.as_str());
    Ok(Redirect::to(&format!("/agents?deleted={name}")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_read_back_exactly() {
        for bytes in [4u64 << 30, 512 << 20, 1536 << 10, 2_000_001] {
            let text = format_quota(bytes);
            assert_eq!(palisade_sandbox_quota(&text), bytes, "{text}");
        }
    }

    fn palisade_sandbox_quota(text: &str) -> u64 {
        // The host's parser, through the draft: what the form sends back.
        let draft = AgentDraft {
            workspace_quota: Some(text.into()),
            ..AgentDraft::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let store =
            palisade_store::Store::open(&palisade_store::Home::at(dir.path().join("h"))).unwrap();
        let agent = palisade_host::agents::create(&store, "q", &draft).unwrap();
        agent.settings["workspace_quota_bytes"].as_u64().unwrap()
    }
}
