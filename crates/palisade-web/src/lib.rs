//! Palisade's local web UI, served by `palisade up` on the same address as the host's
//! JSON API: chat with agents (replies streamed), agents and their settings,
//! instructions, memory, dial and agent-to-agent allow-list, sessions, pending approvals
//! with Approve/Deny and rules suggested from repeated approvals, chat channels (state,
//! links, approvers, add and remove), the audit log with filters, and the vault's
//! secrets (never values) and rules.
//!
//! Why a crate of its own: the UI is a client of the host and the store, like the CLI,
//! and changes for different reasons than the router and supervisor in palisade-host;
//! keeping it apart also keeps the template macro's compile time and the embedded
//! assets out of the host crate. [`app`] wraps the host's JSON API router
//! ([`palisade_host::api::router`]) so one listener serves both.
//!
//! How it is built:
//! - Pages are rendered on the server with `maud`, which escapes every interpolated
//!   value, so nothing from the store, a sandbox or a model reaches a page unescaped.
//! - One small hand-written script (`assets/app.js`, embedded with `include_str!`)
//!   streams chat replies and decides approvals without a reload; pages work without
//!   it except for live streaming. No CDN: the stylesheet and script are in the binary.
//! - [`guard`]: every response carries a strict Content-Security-Policy and the other
//!   security headers, and a request whose `Host` is not the listen address or a
//!   loopback name is refused (DNS rebinding).
//! - [`auth`]: the login exchange (one session per login, each with its own cookie,
//!   idle and absolute expiry, Log out), the session's binding to the local user who
//!   logged in ([`peer`]), and the CSRF check (session cookie + per-session token +
//!   same-origin `Origin`/`Referer`) that every state-changing browser request passes
//!   before any handler runs.
//!
//! [`serve`] runs the app with the peer's address as connect info, which [`peer`]
//! needs, on a bounded number of connections that must not idle ([`listener`]):
//! every server of it starts there.

pub mod auth;
pub mod guard;
mod listener;
mod model_lists;
mod pages;
pub mod peer;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
pub use listener::{
    serve, BODY_READ_TIMEOUT, HEADER_READ_TIMEOUT, MAX_CONNECTIONS, OTHERS_MAX_CONNECTIONS,
};
use palisade_host::api::ApiTokens;
use palisade_host::Host;
use palisade_store::Store;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

/// Who the audit log names for what the web UI's admin does.
pub const WEB_ACTOR: &str = "web:admin";

/// Largest body a browser form may post (instructions are at most 64 KiB; a chat
/// message at most [`palisade_host::MAX_MESSAGE_BYTES`], JSON-escaped).
const MAX_FORM_BYTES: usize = 2 * palisade_host::MAX_MESSAGE_BYTES + 64 * 1024;

#[derive(Clone)]
pub(crate) struct WebState {
    pub(crate) host: Host,
    /// The store as the web admin: its mutations are audited as [`WEB_ACTOR`].
    pub(crate) store: Store,
    /// The host's approval engine (decisions made here reach cards and held requests
    /// in this process at once).
    pub(crate) engine: palisade_approvals::Engine,
    pub(crate) tokens: Arc<ApiTokens>,
    /// The JSON API, to which the chat page's sends are handed after the CSRF check,
    /// so the browser gets exactly the stream the CLI gets.
    pub(crate) api: Router,
    pub(crate) started_at_ms: i64,
    /// The providers' model lists the agent pages offer, remembered for a while.
    pub(crate) model_lists: Arc<model_lists::ModelLists>,
    /// What the last key stored on the first-run form found, per agent: what its ready
    /// card says (never rebuilt from the link, which anyone can write and which goes
    /// stale once another key or provider is stored).
    pub(crate) key_checks:
        Arc<std::sync::Mutex<std::collections::HashMap<String, pages::setup::Listing>>>,
    /// The address this server listens on.
    pub(crate) listen: SocketAddr,
}

/// The web UI and the JSON API on one router, behind the Host check and security
/// headers. `listen` is the address the server is bound to.
pub fn app(
    host: Host,
    tokens: ApiTokens,
    shutdown: watch::Receiver<bool>,
    listen: SocketAddr,
) -> Router {
    let api = palisade_host::api::router(host.clone(), tokens.clone(), shutdown);
    let state = WebState {
        store: host.store().with_actor(WEB_ACTOR),
        engine: host.engine().clone(),
        host,
        tokens: Arc::new(tokens),
        api: api.clone(),
        started_at_ms: palisade_store::now_ms(),
        model_lists: Arc::default(),
        key_checks: Arc::default(),
        listen,
    };
    let guard = guard::Guard::new(listen);

    // Everything here needs the admin's session; writes also the CSRF check.
    let pages = Router::new()
        .route("/", get(pages::dashboard::page))
        .route("/chat", get(pages::chat::page))
        .route("/chat/{agent}/send", post(pages::chat::send))
        .route(
            "/chat/messages/{id}/delivered",
            post(pages::chat::acknowledge),
        )
        .route("/setup/model-key", post(pages::setup::store_key))
        .route("/setup/allow-local", post(pages::setup::allow_local))
        .route(
            "/agents",
            get(pages::agents::list).post(pages::agents::create),
        )
        .route("/agents/new", get(pages::agents::new_form))
        .route("/agents/{name}", get(pages::agents::show))
        .route(
            "/agents/{name}/settings",
            post(pages::agents::save_settings),
        )
        .route(
            "/agents/{name}/instructions",
            post(pages::agents::save_instructions),
        )
        .route("/agents/{name}/dial", post(pages::agent_policy::save_dial))
        .route("/agents/{name}/links", post(pages::agent_policy::allow))
        .route("/agents/{name}/grant", post(pages::agent_policy::grant))
        .route(
            "/agents/{name}/links/remove",
            get(pages::agent_policy::confirm_disallow).post(pages::agent_policy::disallow),
        )
        .route(
            "/agents/{name}/delete",
            get(pages::agents::confirm_delete).post(pages::agents::delete),
        )
        .route("/sessions", get(pages::sessions::list))
        .route("/sessions/{id}", get(pages::sessions::show))
        .route(
            "/sessions/{id}/reset",
            get(pages::sessions::confirm_reset).post(pages::sessions::reset),
        )
        .route("/approvals", get(pages::approvals::page))
        .route(
            "/approvals/pending",
            get(pages::approvals::pending_fragment),
        )
        .route("/approvals/{id}/decide", post(pages::approvals::decide))
        .route("/approvals/suggest", get(pages::suggestions::page))
        .route(
            "/approvals/suggest/accept",
            post(pages::suggestions::accept),
        )
        .route(
            "/channels",
            get(pages::channels::page).post(pages::channels::add),
        )
        .route("/channels/{name}/link", post(pages::channels::link))
        .route("/channels/{name}/unlink", post(pages::channels::unlink))
        .route(
            "/channels/{name}/approvers",
            post(pages::channels::add_approver),
        )
        .route(
            "/channels/{name}/approvers/remove",
            post(pages::channels::remove_approver),
        )
        .route(
            "/channels/{name}/senders/remove",
            post(pages::channels::remove_sender),
        )
        .route("/channels/{name}/access", post(pages::channels::set_access))
        .route(
            "/channels/{name}/remove",
            get(pages::channels::confirm_remove).post(pages::channels::remove),
        )
        .route("/audit", get(pages::audit::page))
        .route("/audit/retention", post(pages::audit::set_retention))
        .route("/vault", get(pages::vault::page))
        .route("/vault/local/forget", post(pages::vault::forget_local))
        .route("/vault/secrets", post(pages::secrets::create))
        .route("/vault/secrets/new", get(pages::secrets::new_form))
        .route("/vault/secrets/{name}", get(pages::secrets::show))
        .route("/vault/secrets/{name}/rotate", post(pages::secrets::rotate))
        .route("/vault/secrets/{name}/grant", post(pages::secrets::grant))
        .route(
            "/vault/secrets/{name}/revoke",
            get(pages::secrets::confirm_revoke).post(pages::secrets::revoke),
        )
        .route(
            "/vault/secrets/{name}/delete",
            get(pages::secrets::confirm_delete).post(pages::secrets::delete),
        )
        .route("/vault/rules", post(pages::rules::create))
        .route("/vault/rules/new", get(pages::rules::new_form))
        .route(
            "/vault/rules/{id}/edit",
            get(pages::rules::edit_form).post(pages::rules::update),
        )
        .route("/vault/rules/{id}/enabled", post(pages::rules::set_enabled))
        .route(
            "/vault/rules/{id}/delete",
            get(pages::rules::confirm_delete).post(pages::rules::delete),
        )
        .route("/health", get(pages::health::page))
        .route("/health/online", post(pages::health::online))
        .route("/logout", post(auth::logout))
        .route_layer(axum::middleware::from_fn_with_state(
            auth::Gate {
                state: state.clone(),
                guard: guard.clone(),
            },
            auth::require_admin,
        ))
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES));

    let public = Router::new()
        .route("/login", get(auth::login))
        .route("/assets/style.css", get(pages::assets::style))
        .route("/assets/app.js", get(pages::assets::script));

    // The JSON API takes the cookie for reads: only on the connections it is bound to.
    let api = api.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::bound_cookie,
    ));
    pages
        .merge(public)
        .with_state(state)
        .merge(api)
        .fallback(pages::not_found)
        .layer(axum::middleware::from_fn_with_state(guard, guard::protect))
}
