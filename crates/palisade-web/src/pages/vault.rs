//! The vault's configuration: secrets (name, host and path patterns, injection, the
//! agents granted; never a value — the store does not even return one here), rules
//! with all their fields, and the local addresses agents may reach, with the ways to
//! change them (`secrets.rs`, `rules.rs`, [`forget_local`] here).

use super::layout::{self, Nav};
use super::secrets::{field, pairs};
use super::{blocking, PageError, PageResult};
use crate::WebState;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect};
use maud::html;
use palisade_policy::AgentName;
use serde::Deserialize;

#[derive(Deserialize)]
pub(crate) struct VaultQuery {
    saved: Option<String>,
}

pub(crate) async fn page(
    State(state): State<WebState>,
    Query(query): Query<VaultQuery>,
) -> PageResult {
    let store = state.store.clone();
    let (secrets, rules, local) = blocking(move || {
        Ok((
            store.list_secrets()?,
            store.list_rules()?,
            store.local_upstreams()?,
        ))
    })
    .await?;
    let now = palisade_store::now_ms();
    let body = html! {
        div.page-head {
            h1 { "Vault" }
            p.muted { "Credentials the gateway injects into agents' outbound requests, and the rules it applies. Values are sealed in the store and never shown. Every change here is audited and in force when the page answers." }
        }
        @if let Some(saved) = &query.saved {
            p.flash #saved { @match saved.as_str() { "rule" => { "Rule saved." } "deleted" => { "Deleted." } "forgotten" => { "Forgotten: agents no longer reach it, and what reached it was ended." } _ => { "Saved." } } }
        }
        section.card {
            div.row-between {
                h2 { "Secrets" }
                a.button.primary #new-secret href="/vault/secrets/new" { "Add secret" }
            }
            @if secrets.is_empty() {
                p.muted { "No secrets yet. Add one here or with " code { "palisade secrets create" } "." }
            } @else {
                table #secrets {
                    thead { tr { th { "Name" } th { "Host" } th { "Path" } th { "Injection" } th { "Granted to" } th { "Priority" } th { "Created" } } }
                    tbody {
                        @for secret in &secrets {
                            tr {
                                td { a href={ "/vault/secrets/" (secret.name) } { strong { (secret.name) } } }
                                td { code { (secret.host_pattern) } }
                                td { @if let Some(path) = &secret.path_pattern { code { (path) } } @else { span.muted { "any" } } }
                                td { code { (secret.injection) } }
                                td {
                                    @if secret.agents.is_empty() { span.muted { "nobody" } }
                                    @for (i, agent) in secret.agents.iter().enumerate() {
                                        @if i > 0 { ", " }
                                        a href={ "/agents/" (agent) } { (agent) }
                                    }
                                }
                                td { (secret.priority) }
                                td.muted { (super::relative(secret.created_at_ms)) }
                            }
                        }
                    }
                }
            }
        }
        // What an earlier setup allowed stays until forgotten (review: a mistyped port's
        // allowance stayed, and no page showed it).
        section.card #local-upstreams {
            h2 { "Local addresses agents may reach" }
            p.muted.small { "Addresses on this machine or the local network (a model server) that the vault lets agents reach; any other local address is refused. " code { "palisade vault local allow HOST:PORT" } " adds one." }
            @if local.unsigned {
                p.error-text { "The list in the database does not carry this home's signature (written outside palisade?), so none is allowed. " code { "palisade vault local allow" } " writes a new one." }
            } @else if local.patterns.is_empty() {
                p.muted { "None: agents reach no local address." }
            } @else {
                table #local-list {
                    thead { tr { th { "Address" } th { "Ports" } th {} } }
                    tbody {
                        @for pattern in &local.patterns {
                            @let one_port = pattern.rsplit_once(':').is_some_and(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()));
                            tr {
                                td { code { (pattern) } }
                                td { @if one_port { (layout::pill("that port only", "good")) } @else { (layout::pill("every port", "warn")) } }
                                td.actions {
                                    form.inline method="post" action="/vault/local/forget" {
                                        (layout::csrf_field())
                                        input type="hidden" name="pattern" value=(pattern);
                                        button.small.danger type="submit" disabled data-arm { "Forget" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section.card {
            div.row-between {
                h2 { "Rules" }
                a.button.primary #new-rule href="/vault/rules/new" { "Add rule" }
            }
            p.muted.small { "Evaluated highest priority first; the first match decides. Org-scoped rules are the outer boundary. A disabled rule is kept but not applied." }
            @if rules.is_empty() {
                p.muted { "No rules yet. Add one here or with " code { "palisade rules create" } "." }
            } @else {
                div.table-scroll {
                    table #rules {
                        thead { tr { th { "Name" } th { "Action" } th { "Method" } th { "Host" } th { "Path" } th { "Agent" } th { "Rate" } th { "Body contains" } th { "Scope" } th { "Priority" } th { "Expires" } th {} } }
                        tbody {
                            @for rule in &rules {
                                @let tone = match rule.action.as_str() {
                                    "allow" => "good",
                                    "block" => "bad",
                                    "require_approval" => "warn",
                                    _ => "neutral",
                                };
                                @let expired = rule.expires_at_ms.is_some_and(|at| at <= now);
                                tr.expired[expired || !rule.enabled] data-rule=(rule.name) {
                                    td { strong { (rule.name) } @if !rule.enabled { " " (layout::pill("disabled", "neutral")) } }
                                    td { (layout::pill(&rule.action, tone)) }
                                    td { code { (rule.method) } }
                                    td { code { (rule.host_pattern) } }
                                    td { @if let Some(path) = &rule.path_pattern { code { (path) } } @else { span.muted { "any" } } }
                                    td {
                                        @match &rule.agent {
                                            Some(agent) => { a href={ "/agents/" (agent) } { (AgentName::as_str(agent)) } }
                                            None => { span.muted { "every agent" } }
                                        }
                                    }
                                    td { @if let (Some(limit), Some(window)) = (rule.rate_limit, &rule.rate_window) { (limit) " / " (window) } }
                                    td { @if let Some(text) = &rule.body_contains { code { (text) } } }
                                    td { (rule.scope) }
                                    td { (rule.priority) }
                                    td {
                                        @match rule.expires_at_ms {
                                            Some(at) if expired => { span.muted { "expired " (super::relative(at)) } }
                                            Some(at) => { (super::relative(at)) }
                                            None => { span.muted { "never" } }
                                        }
                                    }
                                    td.actions.nowrap {
                                        a.button.small href={ "/vault/rules/" (rule.id) "/edit" } { "Edit" }
                                        " "
                                        form.inline method="post" action={ "/vault/rules/" (rule.id) "/enabled" } {
                                            (layout::csrf_field())
                                            input type="hidden" name="enabled" value=(if rule.enabled { "false" } else { "true" });
                                            button.small type="submit" disabled data-arm { @if rule.enabled { "Disable" } @else { "Enable" } }
                                        }
                                        " "
                                        a.button.small.danger href={ "/vault/rules/" (rule.id) "/delete" } { "Delete…" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::render(&state, Nav::Vault, "Vault", body).await)
}

/// Forgets a local address agents may reach, as `palisade vault local forget` does: in
/// force when this answers, and what reached it through the vault is ended.
pub(crate) async fn forget_local(State(state): State<WebState>, body: Bytes) -> PageResult {
    let pairs = pairs(&body);
    let pattern = field(&pairs, "pattern").trim().to_string();
    let store = state.store.clone();
    let forgotten = {
        let pattern = pattern.clone();
        blocking(move || Ok(store.forget_local_upstream(&pattern)?)).await?
    };
    if !forgotten {
        return Err(PageError::BadRequest(format!(
            "{:?} is not among the local addresses agents may reach",
            palisade_store::input::clean(&pattern)
        )));
    }
    Ok(Redirect::to("/vault?saved=forgotten").into_response())
}
