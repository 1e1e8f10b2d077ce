//! The vault's configuration, read-only: secrets (name, host and path patterns,
//! injection, the agents granted; never a value — the store does not even return one
//! here) and rules with all their fields. Changes go through `palisade secrets|rules`.

use super::layout::{self, Nav};
use super::{blocking, PageResult};
use crate::WebState;
use axum::extract::State;
use maud::html;
use palisade_policy::AgentName;

pub(crate) async fn page(State(state): State<WebState>) -> PageResult {
    let store = state.store.clone();
    let (secrets, rules) =
        blocking(move || Ok((store.list_secrets()?, store.list_rules()?))).await?;
    let now = palisade_store::now_ms();
    let body = html! {
        div.page-head {
            h1 { "Vault" }
            p.muted { "Credentials the gateway injects into agents' outbound requests, and the rules it applies. Values are sealed in the store and never shown." }
        }
        section.card {
            h2 { "Secrets" }
            @if secrets.is_empty() {
                p.muted { "No secrets yet. Add one with " code { "palisade secrets create" } " (the value is read from a file or stdin)." }
            } @else {
                table {
                    thead { tr { th { "Name" } th { "Host" } th { "Path" } th { "Injection" } th { "Granted to" } th { "Priority" } th { "Created" } } }
                    tbody {
                        @for secret in &secrets {
                            tr {
                                td { strong { (secret.name) } }
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
        section.card {
            h2 { "Rules" }
            p.muted.small { "Evaluated highest priority first; the first match decides. Org-scoped rules are the outer boundary." }
            @if rules.is_empty() {
                p.muted { "No rules yet. Add one with " code { "palisade rules create" } "." }
            } @else {
                div.table-scroll {
                    table {
                        thead { tr { th { "Name" } th { "Action" } th { "Method" } th { "Host" } th { "Path" } th { "Agent" } th { "Rate" } th { "Body contains" } th { "Scope" } th { "Priority" } th { "Expires" } } }
                        tbody {
                            @for rule in &rules {
                                @let tone = match rule.action.as_str() {
                                    "allow" => "good",
                                    "block" => "bad",
                                    "require_approval" => "warn",
                                    _ => "neutral",
                                };
                                @let expired = rule.expires_at_ms.is_some_and(|at| at <= now);
                                tr.expired[expired] {
                                    td { strong { (rule.name) } }
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
