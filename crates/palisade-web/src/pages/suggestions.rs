//! Suggested rules against approval fatigue (`/approvals/suggest`): the narrowest allow
//! rules that would have spared people the same approval again and again, each with
//! what it would have allowed, and an Accept button per suggestion.
//!
//! The list and the accept step are [`palisade_approvals::suggest::load`] and
//! [`palisade_approvals::suggest::accept`], what `palisade approvals suggest [--accept
//! N]` runs, so the page shows the CLI's suggestions under the CLI's numbers and a stale
//! number is refused with the CLI's line. Nothing is applied until Accept is pressed;
//! the Accept form also carries the rule name shown, so a list that moved on since the
//! page was drawn cannot turn the click into another rule.

use super::forms;
use super::layout::{self, Nav};
use super::{blocking, PageError, PageResult};
use crate::WebState;
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use maud::{html, Markup};
use palisade_approvals::suggest::{self, AcceptError, Suggestion};
use serde::Deserialize;
use std::time::Duration;

/// The window and threshold of `palisade approvals suggest`'s defaults.
const DEFAULT_SINCE: &str = "7d";
const DEFAULT_MIN: usize = 3;
/// The CLI's range for `--min`.
const MAX_MIN: usize = 1000;

/// The window and threshold as typed (query of the page, hidden fields of Accept).
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct WindowForm {
    #[serde(default)]
    since: String,
    #[serde(default)]
    min: String,
}

struct Window {
    since_text: String,
    since: Duration,
    min_text: String,
    min: usize,
}

impl WindowForm {
    fn window(&self) -> Result<Window, PageError> {
        let since_text = forms::given(&self.since).unwrap_or_else(|| DEFAULT_SINCE.into());
        let since = palisade_store::input::parse_duration(&since_text, "since")?;
        let min = forms::number::<usize>(&self.min, "min")
            .map_err(PageError::BadRequest)?
            .unwrap_or(DEFAULT_MIN);
        if !(1..=MAX_MIN).contains(&min) {
            return Err(PageError::BadRequest(format!(
                "min {min} is out of range: use 1 to {MAX_MIN}"
            )));
        }
        Ok(Window {
            since_text,
            since,
            min_text: min.to_string(),
            min,
        })
    }
}

fn suggestion_markup(window: &Window, suggestion: &Suggestion) -> Markup {
    html! {
        article.card.suggestion data-number=(suggestion.number) data-rule=(suggestion.rule_name) {
            div.row-between {
                h3 { (suggestion.number) ". allow " (suggestion.agent) " " code { (suggestion.method) " " (suggestion.host) (suggestion.path) } }
                form.inline method="post" action="/approvals/suggest/accept" {
                    (layout::csrf_field())
                    input type="hidden" name="number" value=(suggestion.number);
                    input type="hidden" name="rule" value=(suggestion.rule_name);
                    input type="hidden" name="since" value=(window.since_text);
                    input type="hidden" name="min" value=(window.min_text);
                    // Creates an allow rule in one click: armed a second after it is
                    // shown, like a decision (app.js).
                    button.primary type="submit" disabled data-arm { "Accept" }
                }
            }
            p.explain { (suggestion.explain()) }
            dl.fields {
                dt { "Rule" } dd { code { (suggestion.rule_name) } ", allow, priority " (suggestion.priority) ", " (suggestion.scope) " layer, agent " (suggestion.agent) }
                dt { "Approved" } dd { (suggestion.approvals) " times, " (super::when(suggestion.first_at_ms)) " to " (super::when(suggestion.last_at_ms)) }
            }
        }
    }
}

async fn suggestions_page(
    state: &WebState,
    form: &WindowForm,
    accepted: Option<&str>,
    error: Option<&str>,
) -> PageResult {
    let (window, window_error) = match form.window() {
        Ok(window) => (window, None),
        Err(error) => (
            WindowForm::default().window()?,
            Some(error.for_form()?.to_string()),
        ),
    };
    let store = state.store.clone();
    let (since, min) = (window.since, window.min);
    let suggestions = blocking(move || Ok(suggest::load(&store, since, min)?)).await?;
    let error = error.map(str::to_string).or(window_error);
    let body = html! {
        div.page-head {
            h1 { "Suggested rules" }
            p.muted {
                "Requests people approved at least " (window.min) " times in the last " (window.since_text) " and never denied, each as the narrowest rule that would have spared them: "
                "an allow rule for exactly that agent, method, host and path, just above the rule that held it. "
                "Nothing is applied until you accept one; an accepted rule is an ordinary rule on the " a href="/vault" { "Vault" } " page. "
                "The same as " code { "palisade approvals suggest" } "."
            }
        }
        @if let Some(rule) = accepted {
            p.flash #saved { "Created rule " code { (rule) } "; requests it names go ahead without asking from now on. Delete it on the " a href="/vault" { "Vault" } " page to undo." }
        }
        (forms::error_box(error.as_deref()))
        form #suggest-window.inline-form method="get" action="/approvals/suggest" {
            (forms::text("Since", "since", &window.since_text, "how far back, e.g. 7d, 30d"))
            (forms::text("At least", "min", &window.min_text, "approvals of the same request"))
            button type="submit" { "Show" }
        }
        section #suggestions {
            @if suggestions.is_empty() {
                p.muted.empty-state { "Nothing to suggest: no request was approved often enough without a denial." }
            }
            @for suggestion in &suggestions { (suggestion_markup(&window, suggestion)) }
        }
        p { a href="/approvals" { "← Approvals" } }
    };
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok(layout::render_status(state, status, Nav::Approvals, "Suggested rules", body).await)
}

#[derive(Deserialize)]
pub(crate) struct PageQuery {
    #[serde(flatten)]
    window: WindowForm,
    accepted: Option<String>,
}

pub(crate) async fn page(
    State(state): State<WebState>,
    Query(query): Query<PageQuery>,
) -> PageResult {
    suggestions_page(&state, &query.window, query.accepted.as_deref(), None).await
}

#[derive(Deserialize)]
pub(crate) struct AcceptForm {
    #[serde(default)]
    number: String,
    #[serde(default)]
    rule: String,
    #[serde(flatten)]
    window: WindowForm,
}

pub(crate) async fn accept(
    State(state): State<WebState>,
    Form(form): Form<AcceptForm>,
) -> PageResult {
    let parsed = form.window.window().and_then(|window| {
        match forms::number::<usize>(&form.number, "suggestion").map_err(PageError::BadRequest)? {
            Some(number) => Ok((window, number)),
            None => Err(PageError::BadRequest(
                "no suggestion was named: press Accept beside one".into(),
            )),
        }
    });
    let result = match parsed {
        Err(error) => Err(error),
        Ok((window, number)) => {
            let store = state.store.clone();
            let shown = forms::given(&form.rule);
            blocking(move || {
                let suggestions = suggest::load(&store, window.since, window.min)?;
                suggest::accept(&store, &suggestions, number, shown.as_deref())
                    .map_err(accept_error)
            })
            .await
        }
    };
    match result {
        Ok(rule) => Ok(Redirect::to(&format!(
            "/approvals/suggest?since={}&min={}&accepted={}",
            super::query_value(form.window.since.trim()),
            super::query_value(form.window.min.trim()),
            super::query_value(&rule.name)
        ))
        .into_response()),
        Err(error) => {
            let message = error.for_form()?;
            suggestions_page(&state, &form.window, None, Some(&message)).await
        }
    }
}

fn accept_error(error: AcceptError) -> PageError {
    match error {
        AcceptError::Store(store) => store.into(),
        other => PageError::BadRequest(other.to_string()),
    }
}
