//! The agent page's policy sections: its dial (how often a person is asked, how strictly
//! other agents' messages are cleaned) with the plain-words explanation and two forms
//! (a preset, or each knob), and its agent-to-agent allow-list (whom it may message,
//! who may message it, allow another, disallow one behind a confirmation page).
//!
//! Every change goes through [`palisade_host::agents::dial`], [`allow`] and
//! [`disallow`], the code `palisade agents dial|allow|disallow` runs, so the checks and
//! the one-line errors are the CLI's; each change is audited as `web:admin` and in force
//! when the page answers (the store pushes it to every running gateway; the host reads
//! the dial and the allow-list for every message).
//!
//! [`allow`]: palisade_host::agents::allow
//! [`disallow`]: palisade_host::agents::disallow

use super::agents::{agent_page, Refusal};
use super::forms::{self, given};
use super::layout::{self, Nav};
use super::{blocking, PageError, PageResult};
use crate::WebState;
use axum::extract::{Form, Path, Query, State};
use axum::response::{IntoResponse, Redirect};
use maud::{html, Markup};
use palisade_host::agents::{approval_words, DialDraft};
use palisade_policy::dial::{ApprovalFrequency, Dial, Preset};
use palisade_policy::sanitize::Strictness;
use palisade_policy::AgentName;
use palisade_policy::Profile;
use palisade_store::{AgentLink, AgentRecord, StoreError};
use serde::Deserialize;

/// What the sections show, read with the rest of the agent page.
pub(crate) struct PolicyView {
    /// `palisade agents show`'s "In plain words" lines.
    pub(crate) plain_words: Vec<String>,
    /// Allow-list entries from or to the agent.
    pub(crate) links: Vec<AgentLink>,
    /// Every other agent (the allow form's choice).
    pub(crate) others: Vec<AgentName>,
}

impl PolicyView {
    pub(crate) fn load(
        store: &palisade_store::Store,
        agent: &AgentRecord,
    ) -> Result<PolicyView, PageError> {
        Ok(PolicyView {
            plain_words: palisade_host::agents::plain_words(store, agent)?,
            links: store.list_agent_links(Some(&agent.name))?,
            others: store
                .list_agents()?
                .into_iter()
                .map(|a| a.name)
                .filter(|name| *name != agent.name)
                .collect(),
        })
    }
}

fn preset_options() -> Vec<(String, String)> {
    [Preset::Strict, Preset::Balanced, Preset::Relaxed]
        .into_iter()
        .map(|preset| {
            let dial = preset.dial();
            (
                preset.as_str().to_string(),
                format!(
                    "{} (approvals {}, sanitizing {})",
                    preset.as_str(),
                    dial.approvals,
                    dial.sanitize.as_str()
                ),
            )
        })
        .collect()
}

fn approval_options() -> Vec<(String, String)> {
    [
        (ApprovalFrequency::Every, "every credentialed request"),
        (
            ApprovalFrequency::FirstUse,
            "the first to each host, then an hour free",
        ),
        (ApprovalFrequency::Writes, "credentialed writes"),
        (ApprovalFrequency::Never, "only where a rule says"),
    ]
    .into_iter()
    .map(|(frequency, words)| {
        (
            frequency.as_str().to_string(),
            format!("{frequency}: {words}"),
        )
    })
    .collect()
}

fn sanitize_options() -> Vec<(String, String)> {
    forms::options(
        [
            Strictness::Strict,
            Strictness::Balanced,
            Strictness::Relaxed,
        ]
        .map(Strictness::as_str),
    )
}

/// The dial: what it is, in words, and the two forms that change it.
pub(crate) fn dial_section(agent: &AgentRecord, error: Option<&str>) -> Markup {
    let dial = Dial::from_settings(&agent.settings);
    let action = format!("/agents/{}/dial", agent.name);
    html! {
        section.card #dial {
            div.row-between {
                h2 { "Dial" }
                span #dial-preset { (layout::pill(&dial.label(), "neutral")) }
            }
            p.muted.small { "How often a person is asked, and how strictly what other agents send is cleaned. The same as " code { "palisade agents dial " (agent.name) } "." }
            ul.plain #dial-explain {
                @for line in dial.explain() { li { (line) } }
            }
            (forms::error_box(error))
            form #dial-preset-form.inline-form method="post" action=(action) {
                (layout::csrf_field())
                label.field {
                    span.label { "Preset" }
                    // A custom dial is no preset: none is shown as chosen, and one must be
                    // picked before the form goes.
                    select name="preset" required {
                        @if dial.preset().is_none() {
                            option value="" disabled selected { (dial.label()) "; choose a preset" }
                        }
                        @for (value, text) in preset_options() {
                            option value=(value) selected[dial.preset().map(Preset::as_str) == Some(value.as_str())] { (text) }
                        }
                    }
                    span.hint { "sets both knobs" }
                }
                // One click could turn approvals off: armed like a decision (app.js).
                button #apply-preset type="submit" disabled data-arm { "Apply preset" }
            }
            form #dial-knobs-form method="post" action=(action) {
                (layout::csrf_field())
                div.form-grid {
                    (forms::select("Approvals", "approvals", &approval_options(), dial.approvals.as_str(), "when a person approves a request carrying one of its credentials"))
                    (forms::select("Sanitizing", "sanitize", &sanitize_options(), dial.sanitize.as_str(), "how strictly messages from other agents are cleaned"))
                }
                div.form-actions { button.primary #save-dial type="submit" disabled data-arm { "Save the knobs" } }
            }
        }
    }
}

fn link_item(agent: &AgentName, link: &AgentLink, other: &AgentName) -> Markup {
    let remove = format!(
        "/agents/{agent}/links/remove?from={}&to={}",
        link.from, link.to
    );
    html! {
        li.row-between data-from=(link.from) data-to=(link.to) {
            span {
                a href={ "/agents/" (other) } { strong { (other) } }
                @if let Some(words) = approval_words(link) { span.muted.small { " (" (words) ")" } }
            }
            a.button.small.danger href=(remove) { "Disallow…" }
        }
    }
}

/// Whom the agent may message and who may message it, and the form to allow another.
pub(crate) fn links_section(agent: &AgentRecord, view: &PolicyView, error: Option<&str>) -> Markup {
    let name = &agent.name;
    let (outgoing, incoming): (Vec<&AgentLink>, Vec<&AgentLink>) =
        view.links.iter().partition(|link| &link.from == name);
    let directions = vec![
        ("to".to_string(), format!("{name} may message")),
        ("from".to_string(), format!("may message {name}")),
    ];
    let others: Vec<(String, String)> = view
        .others
        .iter()
        .map(|other| (other.to_string(), other.to_string()))
        .collect();
    let approvals = vec![
        (String::new(), "nobody asked".to_string()),
        (
            "outbound".to_string(),
            "before each message leaves".to_string(),
        ),
        (
            "inbound".to_string(),
            "before each message is delivered".to_string(),
        ),
        ("both".to_string(), "both".to_string()),
    ];
    html! {
        section.card #links {
            h2 { "Other agents" }
            p.muted.small { "Nothing is allowed by default. Messages are sanitized at the receiver's strictness and labelled with their origin. The same as " code { "palisade agents allow|disallow|links" } "." }
            (forms::error_box(error))
            h3 { (name) " may message" }
            @if outgoing.is_empty() {
                p.muted #may-message { "No other agent." }
            } @else {
                ul.plain #may-message {
                    @for link in &outgoing { (link_item(name, link, &link.to)) }
                }
            }
            h3 { "May message " (name) }
            @if incoming.is_empty() {
                p.muted #messaged-by { "No other agent." }
            } @else {
                ul.plain #messaged-by {
                    @for link in &incoming { (link_item(name, link, &link.from)) }
                }
            }
            @if !others.is_empty() {
                form #allow-form method="post" action={ "/agents/" (name) "/links" } {
                    (layout::csrf_field())
                    div.form-grid {
                        (forms::select("Direction", "direction", &directions, "to", ""))
                        (forms::select("Agent", "agent", &others, "", ""))
                        (forms::select("A person approves", "approve", &approvals, "", "allowing an allowed pair again replaces this"))
                    }
                    div.form-actions { button.primary #allow type="submit" { "Allow" } }
                }
            }
        }
    }
}

/// The agent's policy in plain words, as `palisade agents show` prints it.
pub(crate) fn plain_words_section(view: &PolicyView) -> Markup {
    html! {
        section.card #plain-words {
            h2 { "In plain words" }
            ul {
                @for line in &view.plain_words { li { (line) } }
            }
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct DialForm {
    #[serde(default)]
    preset: String,
    #[serde(default)]
    approvals: String,
    #[serde(default)]
    sanitize: String,
}

/// Which section a form belongs to (where its error line is shown).
#[derive(Clone, Copy)]
enum Section {
    Dial,
    Links,
    Grants,
}

/// Answers a change: back to the agent page with its flash, or the page again with the
/// error line in the section the form belongs to (400).
async fn answer(
    state: &WebState,
    name: AgentName,
    saved: &str,
    result: Result<(), PageError>,
    section: Section,
) -> PageResult {
    match result {
        Ok(()) => Ok(Redirect::to(&format!("/agents/{name}?saved={saved}")).into_response()),
        Err(error) => {
            let message = error.for_form()?;
            let refusal = match section {
                Section::Dial => Refusal::of_dial(&message),
                Section::Links => Refusal::of_links(&message),
                Section::Grants => Refusal::of_grants(&message),
            };
            agent_page(state, name, None, refusal).await
        }
    }
}

/// The agent page's grant form: the secrets the agent has not been granted and may be
/// (a research agent is never offered a sensitive one; the store refuses it anyway).
/// Whether the store lets `secret` be granted to an agent of `profile`: a sensitive
/// secret, or one for hosts of many owners (`*`, `*.com`), is never a research agent's.
/// Forms offer only what it would take.
pub(crate) fn grantable(secret: &palisade_store::SecretRecord, profile: Profile) -> bool {
    profile != Profile::Research
        || !(secret.sensitive
            || palisade_policy::HostPattern::parse(&secret.host_pattern)
                .is_ok_and(|pattern| pattern.spans_owners()))
}

pub(crate) fn grant_form(agent: &AgentRecord, secrets: &[palisade_store::SecretRecord]) -> Markup {
    let offered: Vec<(String, String)> = secrets
        .iter()
        .filter(|s| !s.agents.contains(&agent.name))
        .filter(|s| grantable(s, agent.profile))
        .map(|s| {
            let target = format!(
                "{}{}",
                s.host_pattern,
                s.path_pattern.as_deref().unwrap_or("")
            );
            (s.name.clone(), format!("{} → {target}", s.name))
        })
        .collect();
    html! {
        @if offered.is_empty() {
            p.muted.small { "No other secret to grant. Add one on the " a href="/vault/secrets/new" { "vault" } " page." }
        } @else {
            form #agent-grant-form.inline method="post" action={ "/agents/" (agent.name) "/grant" } {
                (layout::csrf_field())
                (forms::select("Grant a secret", "secret", &offered, "", "the vault injects it for this agent from the next request"))
                button #agent-grant type="submit" { "Grant" }
            }
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct GrantForm {
    #[serde(default)]
    secret: String,
}

/// Grants a secret to the agent from its page (as the secret's page and `palisade
/// secrets grant` do, through the same store call and its compartment check).
pub(crate) async fn grant(
    State(state): State<WebState>,
    Path(name): Path<String>,
    Form(form): Form<GrantForm>,
) -> PageResult {
    let name = AgentName::new(&name)?;
    let secret = form.secret.trim().to_string();
    let agent = name.clone();
    state.model_lists.forget_agent(name.as_str());
    let store = state.store.clone();
    let result = blocking(move || {
        store.grant_secret(&secret, &agent)?;
        Ok(())
    })
    .await;
    answer(&state, name, "granted", result, Section::Grants).await
}

pub(crate) async fn save_dial(
    State(state): State<WebState>,
    Path(name): Path<String>,
    Form(form): Form<DialForm>,
) -> PageResult {
    let name = AgentName::new(&name)?;
    let draft = DialDraft {
        preset: given(&form.preset),
        approvals: given(&form.approvals),
        sanitize: given(&form.sanitize),
    };
    let store = state.store.clone();
    let agent = name.to_string();
    let result = blocking(move || {
        palisade_host::agents::dial(&store, &agent, &draft)
            .map(|_| ())
            .map_err(PageError::from)
    })
    .await;
    answer(&state, name, "dial", result, Section::Dial).await
}

#[derive(Deserialize)]
pub(crate) struct AllowForm {
    #[serde(default)]
    direction: String,
    #[serde(default)]
    agent: String,
    #[serde(default)]
    approve: String,
}

pub(crate) async fn allow(
    State(state): State<WebState>,
    Path(name): Path<String>,
    Form(form): Form<AllowForm>,
) -> PageResult {
    let name = AgentName::new(&name)?;
    let other = form.agent.trim().to_string();
    let this = name.to_string();
    let direction = form.direction.trim().to_string();
    let approve = given(&form.approve);
    let store = state.store.clone();
    let result = blocking(move || {
        let (from, to) = match direction.as_str() {
            "to" => (this, other),
            "from" => (other, this),
            unknown => {
                return Err(PageError::BadRequest(format!(
                    "direction {:?} is unknown: use to or from",
                    palisade_store::input::clean(unknown)
                )))
            }
        };
        palisade_host::agents::allow(&store, &from, &to, approve.as_deref())
            .map(|_| ())
            .map_err(PageError::from)
    })
    .await;
    answer(&state, name, "allowed", result, Section::Links).await
}

#[derive(Deserialize)]
pub(crate) struct LinkQuery {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
}

pub(crate) async fn confirm_disallow(
    State(state): State<WebState>,
    Path(name): Path<String>,
    Query(query): Query<LinkQuery>,
) -> PageResult {
    let name = AgentName::new(&name)?;
    let (from, to) = (AgentName::new(&query.from)?, AgentName::new(&query.to)?);
    let store = state.store.clone();
    let (lookup_from, lookup_to) = (from.clone(), to.clone());
    let link = blocking(move || {
        store.agent_link(&lookup_from, &lookup_to)?.ok_or_else(|| {
            PageError::from(StoreError::NotFound {
                what: "allow-list entry",
                name: format!("{lookup_from} -> {lookup_to}"),
            })
        })
    })
    .await?;
    let explanation = html! {
        p {
            "Agent " strong { (from) } " will no longer be able to message agent " strong { (to) }
            @if let Some(words) = approval_words(&link) { " (" (words) ")" }
            ", from its next message on. Allow it again at any time."
        }
    };
    Ok(forms::confirm(
        &state,
        Nav::Agents,
        &format!("Disallow {from} → {to}?"),
        explanation,
        &format!("/agents/{name}/links/remove?from={from}&to={to}"),
        "Disallow",
        &format!("/agents/{name}"),
    )
    .await)
}

pub(crate) async fn disallow(
    State(state): State<WebState>,
    Path(name): Path<String>,
    Query(query): Query<LinkQuery>,
) -> PageResult {
    let name = AgentName::new(&name)?;
    let store = state.store.clone();
    let result = blocking(move || {
        palisade_host::agents::disallow(&store, &query.from, &query.to).map_err(PageError::from)
    })
    .await;
    answer(&state, name, "disallowed", result, Section::Links).await
}
