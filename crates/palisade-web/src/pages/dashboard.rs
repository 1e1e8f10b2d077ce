//! The dashboard: what is running, what waits for the admin, what happened lately.

use super::layout::{self, Nav};
use super::{audit, blocking, PageResult};
use crate::WebState;
use axum::extract::State;
use maud::html;
use palisade_store::{ApprovalStatus, AuditFilter};

pub(crate) async fn page(State(state): State<WebState>) -> PageResult {
    let store = state.store.clone();
    let (agents, pending, sessions, recent) = blocking(move || {
        let agents = store.list_agents()?;
        let pending = store.list_approvals(Some(ApprovalStatus::Pending), 100)?;
        let sessions = store.list_sessions(None)?;
        let recent = store.list_audit(&AuditFilter {
            limit: Some(8),
            ..Default::default()
        })?;
        Ok((agents, pending, sessions, recent))
    })
    .await?;
    let warm = state.host.warm_agents();
    let body = html! {
        div.page-head {
            h1 { "Dashboard" }
            p.muted { "Your agents, what waits for you, and what happened lately." }
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
                    p.muted { "No agents yet. Create one with " code { "palisade agents create NAME" } "." }
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
        section.card {
            div.row-between {
                h2 { "Recent activity" }
                a href="/audit" { "Full audit log →" }
            }
            (audit::table(&recent))
        }
    };
    Ok(layout::render(&state, Nav::Dashboard, "Dashboard", body).await)
}
