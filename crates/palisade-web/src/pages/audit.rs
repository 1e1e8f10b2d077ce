//! The audit log, newest first, with filters (agent, event, decision, text, time
//! range) and paging by row id; at most [`MAX_PAGE`] rows a page. Its retention is
//! shown and set here too (as `palisade audit retention` does).

use super::forms;
use super::layout::{self, Nav};
use super::secrets::{field, pairs};
use super::{blocking, query_value, PageError, PageResult};
use crate::WebState;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect};
use maud::{html, Markup};
use palisade_store::{AuditFilter, AuditRecord};
use serde::Deserialize;

const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 200;
/// Longest filter value accepted.
const MAX_FILTER: usize = 200;

#[derive(Deserialize, Default)]
pub(crate) struct AuditQuery {
    agent: Option<String>,
    event: Option<String>,
    decision: Option<String>,
    q: Option<String>,
    since: Option<String>,
    until: Option<String>,
    before: Option<i64>,
    limit: Option<usize>,
    /// Set after the retention was changed: `kept` (with how many rows went at once).
    retention: Option<String>,
    pruned: Option<u64>,
}

fn clean(value: &Option<String>) -> Result<Option<String>, PageError> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) if text.len() > MAX_FILTER => Err(PageError::BadRequest(format!(
            "a filter is longer than {MAX_FILTER} characters"
        ))),
        Some(text) => Ok(Some(text.to_string())),
    }
}

/// `1h`/`2d` (that long ago), or a UTC time `YYYY-MM-DD HH:MM[:SS]` (also with `T`).
fn parse_time(text: &str, field: &str) -> Result<i64, PageError> {
    if let Ok(duration) = humantime::parse_duration(text) {
        let ms = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        return Ok(palisade_store::now_ms().saturating_sub(ms));
    }
    let mut normalized = text.replace('T', " ").trim_end_matches('Z').to_string();
    if normalized.len() == 10 {
        normalized.push_str(" 00:00:00");
    } else if normalized.len() == 16 {
        normalized.push_str(":00");
    }
    humantime::parse_rfc3339_weak(&normalized)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .ok_or_else(|| {
            PageError::BadRequest(format!(
                "{field} {text:?} is not a time: use a duration such as 1h or 2d, or a UTC time such as 2026-11-23 14:05"
            ))
        })
}

/// The table of rows (also on the dashboard).
pub(crate) fn table(rows: &[AuditRecord]) -> Markup {
    html! {
        @if rows.is_empty() {
            p.muted { "No audit rows match." }
        } @else {
            div.table-scroll {
                table.audit {
                    thead { tr { th { "#" } th { "When" } th { "Event" } th { "Agent" } th { "Decision" } th { "Request" } th { "Status" } th { "Rule / secret" } th { "Actor" } } }
                    tbody {
                        @for row in rows {
                            @let entry = &row.entry;
                            tr {
                                td.muted { (row.id) }
                                td.nowrap title=(super::when(row.at_ms)) { (super::relative(row.at_ms)) }
                                td { code { (entry.event) } }
                                td { (entry.agent.as_deref().unwrap_or("")) }
                                td {
                                    @if let Some(decision) = &entry.decision {
                                        @let tone = match decision.as_str() {
                                            "blocked" | "denied" | "default_denied" | "rate_limited" | "timed_out" => "bad",
                                            "held" => "warn",
                                            "injected" | "allowed" | "approved" => "good",
                                            _ => "neutral",
                                        };
                                        (layout::pill(decision, tone))
                                    }
                                }
                                td.request {
                                    @if let Some(method) = &entry.method { strong { (method) } " " }
                                    (entry.host.as_deref().unwrap_or(""))
                                    (entry.path.as_deref().unwrap_or(""))
                                    @if let Some(detail) = &entry.detail {
                                        @if entry.host.is_none() {
                                            span.muted.small { (truncate(&detail_text(detail), 160)) }
                                        }
                                    }
                                }
                                td { @if let Some(status) = entry.status { (status) } @if let Some(ms) = entry.latency_ms { span.muted.small { " " (format!("{ms:.0}")) " ms" } } }
                                td { (entry.rule.as_deref().unwrap_or("")) @if let Some(secret) = &entry.secret { " " code { (secret) } } }
                                td { (entry.actor.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `key: value · key: value` for an object (strings unquoted, nulls left out), else JSON.
fn detail_text(detail: &serde_json::Value) -> String {
    match detail.as_object() {
        Some(object) => object
            .iter()
            .filter(|(_, value)| !value.is_null())
            .map(|(key, value)| match value.as_str() {
                Some(text) => format!("{key}: {text}"),
                None => format!("{key}: {value}"),
            })
            .collect::<Vec<_>>()
            .join(" · "),
        None => detail.to_string(),
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

pub(crate) async fn page(
    State(state): State<WebState>,
    Query(query): Query<AuditQuery>,
) -> PageResult {
    let agent = clean(&query.agent)?;
    let event = clean(&query.event)?;
    let decision = clean(&query.decision)?;
    let text = clean(&query.q)?;
    let since = clean(&query.since)?;
    let until = clean(&query.until)?;
    let since_ms = since
        .as_deref()
        .map(|t| parse_time(t, "since"))
        .transpose()?;
    let until_ms = until
        .as_deref()
        .map(|t| parse_time(t, "until"))
        .transpose()?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let filter = AuditFilter {
        agent: agent.clone(),
        event: event.clone(),
        decision: decision.clone(),
        host: None,
        since_ms,
        until_ms,
        text: text.clone(),
        limit: Some(limit),
        before_id: query.before,
        ..AuditFilter::default()
    };
    let store = state.store.clone();
    let (rows, retention) = blocking(move || {
        let retention = store.audit_retention().map_err(|e| e.to_string());
        Ok((store.list_audit(&filter)?, retention))
    })
    .await?;
    // The link to the next (older) page keeps every filter.
    let mut keep = Vec::new();
    for (name, value) in [
        ("agent", &agent),
        ("event", &event),
        ("decision", &decision),
        ("q", &text),
        ("since", &since),
        ("until", &until),
    ] {
        if let Some(value) = value {
            keep.push(format!("{name}={}", query_value(value)));
        }
    }
    if query.limit.is_some() {
        keep.push(format!("limit={limit}"));
    }
    let older = (rows.len() == limit)
        .then(|| rows.last().map(|r| r.id))
        .flatten()
        .map(|id| {
            let mut params = keep.clone();
            params.push(format!("before={id}"));
            format!("/audit?{}", params.join("&"))
        });
    let newest = format!("/audit?{}", keep.join("&"));
    let field = |value: &Option<String>| value.clone().unwrap_or_default();
    let body = html! {
        div.page-head {
            h1 { "Audit log" }
            p.muted { "Every request, decision and change, newest first. The log is hash-chained: " code { "palisade audit verify" } " detects edits." }
        }
        form.filters method="get" action="/audit" {
            label { "Agent " input type="text" name="agent" value=(field(&agent)) size="12"; }
            label { "Event " input type="text" name="event" value=(field(&event)) size="14" placeholder="request, approval.decide…"; }
            label { "Decision " input type="text" name="decision" value=(field(&decision)) size="12" placeholder="blocked, held…"; }
            label { "Text " input type="search" name="q" value=(field(&text)) size="16"; }
            label { "Since " input type="text" name="since" value=(field(&since)) size="14" placeholder="1h or UTC time"; }
            label { "Until " input type="text" name="until" value=(field(&until)) size="14" placeholder="UTC time"; }
            button.primary type="submit" { "Filter" }
            a.button href="/audit" { "Clear" }
        }
        @if query.retention.as_deref() == Some("kept") {
            p.flash #retention-saved {
                "Retention saved."
                @if let Some(pruned) = query.pruned { " " (pruned) " older rows were pruned now." }
            }
        }
        section.card {
            (table(&rows))
            div.pager {
                @if query.before.is_some() { a.button href=(newest) { "← Newest" } }
                @if let Some(older) = &older { a.button href=(older) { "Older →" } }
            }
        }
        (retention_card(&retention))
    };
    Ok(layout::render(&state, Nav::Audit, "Audit log", body).await)
}

/// How long rows are kept, and the form that changes it.
fn retention_card(retention: &Result<Option<std::time::Duration>, String>) -> Markup {
    html! {
        section.card #retention {
            h2 { "Retention" }
            @match retention {
                Ok(Some(keep)) => p #retention-now {
                    "Rows are kept for " strong { (palisade_store::input::duration_text(*keep)) }
                    "; the gateway prunes older ones hourly, after verifying the log."
                },
                Ok(None) => p #retention-now { "Every row is kept." },
                Err(error) => p.error-box #retention-now role="alert" { (error) },
            }
            form.inline-form method="post" action="/audit/retention" {
                (layout::csrf_field())
                label { "Keep rows for " input #retention-keep type="text" name="keep" size="8" placeholder="90d" required; }
                button.primary #save-retention type="submit" { "Save and prune" }
            }
            @if !matches!(retention, Ok(None)) {
                form.inline-form method="post" action="/audit/retention" {
                    (layout::csrf_field())
                    input type="hidden" name="off" value="true";
                    button #keep-every-row type="submit" { "Keep every row" }
                }
            }
            p.muted.small { "At least a day. Older rows go at once; each change and each pruning is itself a row of the log." }
        }
    }
}

/// Sets the retention (`keep`, a duration such as `90d`; or `off`) and prunes what is
/// older at once.
pub(crate) async fn set_retention(State(state): State<WebState>, body: Bytes) -> PageResult {
    let form = pairs(&body);
    let keep = if field(&form, "off") == "true" {
        None
    } else {
        let text = field(&form, "keep");
        match palisade_store::input::parse_duration(text, "keep rows for") {
            Ok(keep) => Some(keep),
            Err(error) => return Ok(retention_refused(&state, &error.to_string()).await),
        }
    };
    let store = state.store.clone();
    if let Err(error) = blocking(move || Ok(store.set_audit_retention(keep)?)).await {
        return Ok(retention_refused(&state, &error.for_form()?).await);
    }
    if keep.is_none() {
        return Ok(Redirect::to("/audit?retention=kept").into_response());
    }
    // On a connection of its own: the verification before a pruning reads the whole
    // log, and the web UI's connection serves every page (and, under `palisade up`,
    // the host) meanwhile.
    let store = state.store.clone();
    let pruned = blocking(move || {
        Ok(store
            .another_connection()?
            .prune_expired_audit(palisade_store::now_ms())?)
    });
    match pruned.await {
        Ok(pruned) => Ok(Redirect::to(&format!(
            "/audit?retention=kept&pruned={}",
            pruned.map_or(0, |p| p.removed)
        ))
        .into_response()),
        Err(error) => {
            let reason = format!(
                "The retention is saved, but nothing was pruned now: {}",
                error.for_form()?
            );
            Ok(retention_refused(&state, &reason).await)
        }
    }
}

async fn retention_refused(state: &WebState, reason: &str) -> axum::response::Response {
    let body = html! {
        section.card.narrow {
            h1 { "Retention" }
            (forms::error_box(Some(reason)))
            a.button #back-to-audit href="/audit" { "Back to the audit log" }
        }
    };
    forms::refused(state, Nav::Audit, "Retention", body).await
}
