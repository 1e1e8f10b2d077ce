//! The frame every page shares: head (stylesheet, script, CSRF meta), the navigation
//! with the pending-approvals badge and Log out, and the bare page used for errors and
//! login.

use crate::WebState;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};
use palisade_store::ApprovalStatus;

/// Which navigation entry is current.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Dashboard,
    Chat,
    Agents,
    Sessions,
    Approvals,
    Channels,
    Audit,
    Vault,
    Health,
}

const ENTRIES: [(Nav, &str, &str); 9] = [
    (Nav::Dashboard, "/", "Dashboard"),
    (Nav::Chat, "/chat", "Chat"),
    (Nav::Agents, "/agents", "Agents"),
    (Nav::Sessions, "/sessions", "Sessions"),
    (Nav::Approvals, "/approvals", "Approvals"),
    (Nav::Channels, "/channels", "Channels"),
    (Nav::Audit, "/audit", "Audit log"),
    (Nav::Vault, "/vault", "Vault"),
    (Nav::Health, "/health", "Health"),
];

fn head(title: &str, csrf: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        title { (title) " · Palisade" }
        link rel="stylesheet" href="/assets/style.css";
        @if let Some(csrf) = csrf {
            meta name="csrf-token" content=(csrf);
        }
        script src="/assets/app.js" defer {}
    }
}

fn html_response(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

/// A full page with navigation. Counts pending approvals for the badge.
pub(crate) async fn render(state: &WebState, nav: Nav, title: &str, body: Markup) -> Response {
    render_status(state, StatusCode::OK, nav, title, body).await
}

/// [`render`] with another status (a form answered 400 with its error).
pub(crate) async fn render_status(
    state: &WebState,
    status: StatusCode,
    nav: Nav,
    title: &str,
    body: Markup,
) -> Response {
    let store = state.store.clone();
    let pending = tokio::task::spawn_blocking(move || {
        store
            .list_approvals(Some(ApprovalStatus::Pending), 100)
            .map(|list| list.len())
    })
    .await
    .ok()
    .and_then(Result::ok)
    .unwrap_or(0);
    // A change just made here (a form of this UI) that a running gateway could not
    // load: the page after the form says so instead of letting its flash claim it.
    let not_in_force = palisade_store::gateways::take_refused(state.store.home());
    let markup = html! {
        (head(title, Some(&crate::auth::current_csrf())))
        body {
            header.topbar {
                a.brand href="/" { span.mark { "◆" } " Palisade" }
                nav {
                    @for (entry, href, label) in ENTRIES {
                        a href=(href) class=[(entry == nav).then_some("current")] {
                            (label)
                            @if entry == Nav::Approvals {
                                span #approvals-badge.badge hidden[pending == 0] { (pending) }
                            }
                        }
                    }
                }
                // Ends this browser's session only; a write like any other (CSRF).
                form.logout method="post" action="/logout" {
                    (csrf_field())
                    button.secondary type="submit" { "Log out" }
                }
            }
            main {
                @if let Some(gateway) = not_in_force.first() {
                    p #not-in-force.error-box role="alert" {
                        "Saved, but " (super::shown(&gateway.describe()))
                        ". Fix or delete what it names; "
                        a href="/health" { "Health" }
                        " shows whether it loads."
                    }
                }
                (body)
            }
            footer {
                "Palisade host, pid " (std::process::id()) ", up since " (super::when(state.started_at_ms))
            }
        }
    };
    html_response(status, markup)
}

/// A page without navigation (login problems, refusals, errors).
pub(crate) fn bare_page(status: StatusCode, title: &str, message: &str) -> Response {
    let markup = html! {
        (head(title, None))
        body.bare {
            main.narrow {
                div.card {
                    h1 { (title) }
                    p { (message) }
                    p.muted { a href="/" { "Back to the dashboard" } }
                }
            }
        }
    };
    html_response(status, markup)
}

/// The page a browser gets for a form it sent without a live session (Palisade was
/// restarted, the session timed out): how to log in again, and what was typed in the
/// form (`kept`: label and text), which was not sent, to copy. No link back: every
/// page would answer the same until the person logs in.
pub(crate) fn logged_out_page(message: &str, kept: &[(&str, String)]) -> Response {
    let markup = html! {
        (head("Log in first", None))
        body.bare {
            main.narrow {
                div.card #logged-out {
                    h1 { "Log in first" }
                    p { (message) }
                    @if !kept.is_empty() {
                        p { "What you typed was not sent. Here it is, to copy before you log in again:" }
                        @for (label, text) in kept {
                            label { (label)
                                textarea.kept readonly rows="6" { (text) }
                            }
                        }
                    }
                }
            }
        }
    };
    html_response(StatusCode::UNAUTHORIZED, markup)
}

/// A hidden CSRF field for a form: the token of the session the page is served to.
pub(crate) fn csrf_field() -> Markup {
    html! { input type="hidden" name=(crate::auth::CSRF_FIELD) value=(&*crate::auth::current_csrf()); }
}

/// A small status pill.
pub(crate) fn pill(text: &str, tone: &str) -> Markup {
    html! { span class={ "pill " (tone) } { (text) } }
}
