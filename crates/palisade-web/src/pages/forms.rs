//! What the management forms share: labelled fields, the error line (the same text
//! the CLI prints after `error:`, because both come from the same checks), and the
//! confirmation page every destructive action goes through first.
//!
//! Nothing a form echoes back is trusted or unescaped: maud escapes every value, and
//! secret values are never echoed at all (their fields are always rendered empty).

use super::layout::{self, Nav};
use crate::WebState;
use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup};

/// A form field as typed: trimmed, and `None` when left empty.
pub(crate) fn given(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// A whole number typed in a form, with the field named in the error.
pub(crate) fn number<T: std::str::FromStr>(text: &str, what: &str) -> Result<Option<T>, String> {
    match given(text) {
        None => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| {
            format!(
                "{what} {:?} is not a whole number",
                palisade_store::input::clean(&text)
            )
        }),
    }
}

/// The error of the last attempt, shown above the form.
pub(crate) fn error_box(error: Option<&str>) -> Markup {
    html! {
        @if let Some(error) = error {
            p.error-box #form-error role="alert" { (error) }
        }
    }
}

/// A labelled one-line text field.
pub(crate) fn text(label: &str, name: &str, value: &str, hint: &str) -> Markup {
    html! {
        label.field {
            span.label { (label) }
            input type="text" name=(name) value=(value) autocomplete="off" spellcheck="false";
            @if !hint.is_empty() { span.hint { (hint) } }
        }
    }
}

/// A labelled password field: always empty, never filled from anything stored.
pub(crate) fn password(label: &str, name: &str, hint: &str) -> Markup {
    html! {
        label.field {
            span.label { (label) }
            input type="password" name=(name) value="" autocomplete="new-password" spellcheck="false";
            @if !hint.is_empty() { span.hint { (hint) } }
        }
    }
}

/// A labelled choice among `(value, text)` options.
pub(crate) fn select(
    label: &str,
    name: &str,
    options: &[(String, String)],
    selected: &str,
    hint: &str,
) -> Markup {
    html! {
        label.field {
            span.label { (label) }
            select name=(name) {
                @for (value, text) in options {
                    option value=(value) selected[value == selected] { (text) }
                }
            }
            @if !hint.is_empty() { span.hint { (hint) } }
        }
    }
}

/// `(value, value)` options from plain values.
pub(crate) fn options<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<(String, String)> {
    values
        .into_iter()
        .map(|v| (v.to_string(), v.to_string()))
        .collect()
}

/// The page that asks before a destructive action: what will happen, Cancel, and a
/// button that posts (with the CSRF token) to `action`.
pub(crate) async fn confirm(
    state: &WebState,
    nav: Nav,
    title: &str,
    explanation: Markup,
    action: &str,
    button: &str,
    cancel: &str,
) -> Response {
    let body = html! {
        section.card.narrow {
            h1 { (title) }
            (explanation)
            form method="post" action=(action) {
                (layout::csrf_field())
                div.form-actions {
                    a.button href=(cancel) { "Cancel" }
                    " "
                    // Armed by the script a second after it is shown (app.js).
                    button.danger #confirm type="submit" disabled data-arm { (button) }
                    noscript { p.muted.small { "Confirming needs JavaScript." } }
                }
            }
        }
    };
    layout::render(state, nav, title, body).await
}

/// A form page answered with `400` because its input was refused.
pub(crate) async fn refused(state: &WebState, nav: Nav, title: &str, body: Markup) -> Response {
    layout::render_status(state, StatusCode::BAD_REQUEST, nav, title, body).await
}
