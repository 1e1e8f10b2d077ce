//! The vault's rules from the web UI: create one, edit one, switch one off and on,
//! delete one, and before saving, preview which recent requests it would have matched.
//!
//! A form is turned into the `RuleDraft` `palisade rules create|edit` builds, checked
//! by the same code (`palisade_store::input`) and written by the same store methods, so
//! errors read the same and every change is audited and in force when the page answers.
//! The preview reads the audit log's recent request rows; plain allowed traffic has no
//! row there, so the preview covers what was injected, held, refused or failed.

use super::forms::{self, given};
use super::layout::{self, Nav};
use super::secrets::{field, pairs};
use super::{blocking, PageError, PageResult};
use crate::WebState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect};
use maud::{html, Markup};
use palisade_store::input::{format_time, rule_would_match, RuleDraft};
use palisade_store::{AuditFilter, AuditRecord, NewRule, RuleRecord};

/// Request rows the preview looks at (newest first) and how far back.
const PREVIEW_ROWS: usize = 2000;
const PREVIEW_SPAN_MS: i64 = 7 * 24 * 60 * 60 * 1000;
/// Matching rows listed.
const PREVIEW_SHOWN: usize = 50;

const ACTIONS: [&str; 4] = ["allow", "block", "rate_limit", "require_approval"];

/// A rule form as typed.
#[derive(Clone, Default)]
struct RuleForm {
    name: String,
    host_pattern: String,
    path_pattern: String,
    method: String,
    action: String,
    rate_limit: String,
    rate_window: String,
    agent: String,
    priority: String,
    expires: String,
    body_contains: String,
    scope: String,
    approval_timeout: String,
}

impl RuleForm {
    fn from_pairs(pairs: &[(String, String)]) -> RuleForm {
        let text = |name: &str| field(pairs, name).trim().to_string();
        RuleForm {
            name: text("name"),
            host_pattern: text("host_pattern"),
            path_pattern: text("path_pattern"),
            method: text("method"),
            action: text("action"),
            rate_limit: text("rate_limit"),
            rate_window: text("rate_window"),
            agent: text("agent"),
            priority: text("priority"),
            expires: text("expires"),
            // Kept as typed: leading or trailing spaces may be the point.
            body_contains: field(pairs, "body_contains").to_string(),
            scope: text("scope"),
            approval_timeout: text("approval_timeout"),
        }
    }

    fn of(rule: &RuleRecord) -> RuleForm {
        RuleForm {
            name: rule.name.clone(),
            host_pattern: rule.host_pattern.clone(),
            path_pattern: rule.path_pattern.clone().unwrap_or_default(),
            method: rule.method.clone(),
            action: rule.action.clone(),
            rate_limit: rule.rate_limit.map(|n| n.to_string()).unwrap_or_default(),
            rate_window: rule.rate_window.clone().unwrap_or_default(),
            agent: rule
                .agent
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            priority: rule.priority.to_string(),
            expires: rule.expires_at_ms.map(format_time).unwrap_or_default(),
            body_contains: rule.body_contains.clone().unwrap_or_default(),
            scope: rule.scope.clone(),
            approval_timeout: RuleDraft::from_record(rule)
                .approval_timeout
                .unwrap_or_default(),
        }
    }

    /// The draft the CLI would build. Rate fields of an action other than `rate_limit`
    /// are dropped, as the form shows them only for that action.
    fn draft(&self, current_expiry: Option<i64>) -> Result<RuleDraft, String> {
        let rate = self.action == "rate_limit";
        Ok(RuleDraft {
            name: self.name.clone(),
            host_pattern: self.host_pattern.clone(),
            path_pattern: given(&self.path_pattern),
            method: given(&self.method).unwrap_or_else(|| "*".into()),
            action: self.action.clone(),
            rate_limit: if rate {
                forms::number(&self.rate_limit, "rate limit")?
            } else {
                None
            },
            rate_window: if rate { given(&self.rate_window) } else { None },
            agent: given(&self.agent),
            priority: forms::number(&self.priority, "priority")?.unwrap_or(0),
            expires: given(&self.expires),
            body_contains: (!self.body_contains.is_empty()).then(|| self.body_contains.clone()),
            scope: given(&self.scope).unwrap_or_else(|| "user".into()),
            approval_timeout: if self.action == "require_approval" {
                given(&self.approval_timeout)
            } else {
                None
            },
            current_expires_at_ms: current_expiry,
        })
    }
}

/// What a preview found.
struct Preview {
    looked_at: usize,
    matched: Vec<AuditRecord>,
    rule: NewRule,
}

fn preview_table(preview: &Preview) -> Markup {
    html! {
        section.card #preview {
            h2 { "Preview" }
            p {
                "This rule would have matched " strong #preview-count { (preview.matched.len()) }
                " of the last " (preview.looked_at) " audited requests (7 days"
                @if preview.rule.body_contains.is_some() { "; the body condition is not checked: bodies are not kept" }
                "). Plain allowed requests have no audit row and are not included."
            }
            @if !preview.matched.is_empty() {
                div.table-scroll {
                    table {
                        thead { tr { th { "When" } th { "Agent" } th { "Request" } th { "What happened" } } }
                        tbody {
                            @for row in preview.matched.iter().take(PREVIEW_SHOWN) {
                                tr {
                                    td.nowrap.muted { (super::when(row.at_ms)) }
                                    td { (row.entry.agent.as_deref().unwrap_or("")) }
                                    td.request { code { (row.entry.method.as_deref().unwrap_or("")) " " (row.entry.host.as_deref().unwrap_or("")) (row.entry.path.as_deref().unwrap_or("")) } }
                                    td { (row.entry.decision.as_deref().unwrap_or("")) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

struct Page<'a> {
    title: &'a str,
    action: String,
    button: &'a str,
    cancel: String,
}

fn form_body(
    page: &Page<'_>,
    form: &RuleForm,
    agents: &[String],
    error: Option<&str>,
    preview: Option<&Preview>,
) -> Markup {
    let mut agent_options = vec![(String::new(), "every agent".to_string())];
    agent_options.extend(agents.iter().map(|a| (a.clone(), a.clone())));
    let action_options = forms::options(ACTIONS);
    let scope_options = vec![
        (
            "user".to_string(),
            "user (grants within the org boundary)".to_string(),
        ),
        ("org".to_string(), "org (the outer boundary)".to_string()),
    ];
    html! {
        div.page-head {
            h1 { (page.title) }
            p.muted { "Rules are evaluated highest priority first; the first match decides. An org rule is the outer boundary: a user rule can never allow what an org rule blocks." }
        }
        section.card {
            (forms::error_box(error))
            form #rule-form method="post" action=(page.action) {
                (layout::csrf_field())
                div.form-grid {
                    (forms::text("Name", "name", &form.name, "e.g. ask-before-send (not all digits)"))
                    (forms::select("Action", "action", &action_options, if form.action.is_empty() { "block" } else { &form.action }, ""))
                    (forms::text("Host", "host_pattern", &form.host_pattern, "exact, *.example.com, or * for every host; add :PORT (127.0.0.1:8080) for that port only"))
                    (forms::text("Path", "path_pattern", &form.path_pattern, "empty: every path; /v1/messages, /v1/*, /users/*/send"))
                    (forms::text("Method", "method", &form.method, "GET, POST, … (empty: any)"))
                    (forms::select("Agent", "agent", &agent_options, &form.agent, ""))
                    (forms::text("Rate limit", "rate_limit", &form.rate_limit, "rate_limit only: requests per window"))
                    (forms::text("Rate window", "rate_window", &form.rate_window, "rate_limit only: 30s, 1m, 1h, 1d"))
                    (forms::text("Approval timeout", "approval_timeout", &form.approval_timeout, "require_approval only: how long a held request waits, e.g. 5m (empty: the gateway's, 10m)"))
                    (forms::text("Priority", "priority", &form.priority, "higher is evaluated first (empty: 0)"))
                    (forms::text("Expires", "expires", &form.expires, "empty: never; a duration (8h, 7d) or a UTC time"))
                    (forms::text("Body contains", "body_contains", &form.body_contains, "match only requests whose body contains this text"))
                    (forms::select("Scope", "scope", &scope_options, if form.scope.is_empty() { "user" } else { &form.scope }, ""))
                }
                div.form-actions {
                    a.button href=(page.cancel) { "Cancel" }
                    button #preview-rule type="submit" name="intent" value="preview" { "Preview matches" }
                    button.primary #save-rule type="submit" name="intent" value="save" { (page.button) }
                }
            }
        }
        @if let Some(preview) = preview { (preview_table(preview)) }
    }
}

async fn agent_names(state: &WebState) -> Result<Vec<String>, PageError> {
    let store = state.store.clone();
    blocking(move || {
        Ok(store
            .list_agents()?
            .into_iter()
            .map(|a| a.name.to_string())
            .collect())
    })
    .await
}

fn new_page() -> Page<'static> {
    Page {
        title: "New rule",
        action: "/vault/rules".into(),
        button: "Create rule",
        cancel: "/vault".into(),
    }
}

fn edit_page(rule: &RuleRecord) -> Page<'static> {
    Page {
        title: "Edit rule",
        action: format!("/vault/rules/{}/edit", rule.id),
        button: "Save rule",
        cancel: "/vault".into(),
    }
}

pub(crate) async fn new_form(State(state): State<WebState>) -> PageResult {
    let agents = agent_names(&state).await?;
    // Method and priority start empty, as their hints say (any method, priority 0): a
    // prefilled "*" became "*POST" when someone typed into the box.
    let form = RuleForm {
        action: "block".into(),
        scope: "user".into(),
        ..RuleForm::default()
    };
    let body = form_body(&new_page(), &form, &agents, None, None);
    Ok(layout::render(&state, Nav::Vault, "New rule", body).await)
}

pub(crate) async fn edit_form(State(state): State<WebState>, Path(id): Path<i64>) -> PageResult {
    let store = state.store.clone();
    let rule = blocking(move || Ok(store.get_rule(&id.to_string())?)).await?;
    let agents = agent_names(&state).await?;
    let body = form_body(&edit_page(&rule), &RuleForm::of(&rule), &agents, None, None);
    Ok(layout::render(&state, Nav::Vault, "Edit rule", body).await)
}

/// Checks the form; then previews it, or writes it with `save`.
async fn submit(
    state: &WebState,
    page: Page<'_>,
    body: Bytes,
    current: Option<RuleRecord>,
    save: impl FnOnce(palisade_store::Store, NewRule) -> Result<RuleRecord, PageError> + Send + 'static,
) -> PageResult {
    let pairs = pairs(&body);
    let form = RuleForm::from_pairs(&pairs);
    let preview_only = field(&pairs, "intent") == "preview";
    let store = state.store.clone();
    let draft = form.draft(current.as_ref().and_then(|r| r.expires_at_ms));
    let outcome = blocking(move || {
        let rule = draft
            .map_err(PageError::BadRequest)?
            .check(palisade_store::now_ms())?;
        if !preview_only {
            return Ok(Err(save(store, rule)?));
        }
        let rows = store.list_audit(&AuditFilter {
            event: Some("request".into()),
            since_ms: Some(palisade_store::now_ms() - PREVIEW_SPAN_MS),
            limit: Some(PREVIEW_ROWS),
            ..AuditFilter::default()
        })?;
        let looked_at = rows.len();
        let matched = rows
            .into_iter()
            .filter(|row| rule_would_match(&rule, row))
            .collect();
        Ok(Ok(Preview {
            looked_at,
            matched,
            rule,
        }))
    })
    .await;
    let agents = agent_names(state).await?;
    let title = page.title;
    match outcome {
        Ok(Err(_saved)) => Ok(Redirect::to("/vault?saved=rule").into_response()),
        Ok(Ok(preview)) => {
            let body = form_body(&page, &form, &agents, None, Some(&preview));
            Ok(layout::render(state, Nav::Vault, title, body).await)
        }
        Err(error) => {
            let message = error.for_form()?;
            let body = form_body(&page, &form, &agents, Some(&message), None);
            Ok(forms::refused(state, Nav::Vault, title, body).await)
        }
    }
}

pub(crate) async fn create(State(state): State<WebState>, body: Bytes) -> PageResult {
    submit(&state, new_page(), body, None, |store, rule| {
        Ok(store.create_rule(rule)?)
    })
    .await
}

pub(crate) async fn update(
    State(state): State<WebState>,
    Path(id): Path<i64>,
    body: Bytes,
) -> PageResult {
    let store = state.store.clone();
    let current = blocking(move || Ok(store.get_rule(&id.to_string())?)).await?;
    let page = edit_page(&current);
    submit(&state, page, body, Some(current), move |store, rule| {
        Ok(store.update_rule(&id.to_string(), rule)?)
    })
    .await
}

pub(crate) async fn set_enabled(
    State(state): State<WebState>,
    Path(id): Path<i64>,
    body: Bytes,
) -> PageResult {
    let enabled = match field(&pairs(&body), "enabled") {
        "true" => true,
        "false" => false,
        other => {
            return Err(PageError::BadRequest(format!(
                "enabled {:?} is neither true nor false",
                palisade_store::input::clean(other)
            )))
        }
    };
    let store = state.store.clone();
    blocking(move || Ok(store.set_rule_enabled(&id.to_string(), enabled)?)).await?;
    Ok(Redirect::to("/vault?saved=rule").into_response())
}

pub(crate) async fn confirm_delete(
    State(state): State<WebState>,
    Path(id): Path<i64>,
) -> PageResult {
    let store = state.store.clone();
    let rule = blocking(move || Ok(store.get_rule(&id.to_string())?)).await?;
    let explanation = html! {
        p {
            "Rule " strong { (rule.name) } " (" (rule.action) " " code { (rule.method) " " (rule.host_pattern) (rule.path_pattern.as_deref().unwrap_or("")) } ") "
            "will be deleted; the vault stops applying it on the next request. To keep it for later, disable it instead."
        }
    };
    Ok(forms::confirm(
        &state,
        Nav::Vault,
        &format!("Delete rule {}?", rule.name),
        explanation,
        &format!("/vault/rules/{id}/delete"),
        "Delete the rule",
        "/vault",
    )
    .await)
}

pub(crate) async fn delete(State(state): State<WebState>, Path(id): Path<i64>) -> PageResult {
    let store = state.store.clone();
    blocking(move || Ok(store.delete_rule(&id.to_string())?)).await?;
    Ok(Redirect::to("/vault?saved=deleted").into_response())
}
