//! Who may use the web UI: the admin who holds a login token `palisade up` or
//! `palisade login` printed, through a session that login started.
//!
//! - `/login?token=…` exchanges a one-time login token (the one printed at start, or
//!   one from `palisade login`) for a session of its own: a new random token in the
//!   session cookie (`HttpOnly`, `SameSite=Strict`, `Path=/`), and a redirect to the
//!   dashboard, so the login token leaves the address bar (and, with
//!   `Referrer-Policy: no-referrer`, is never sent on). Two logins are two sessions
//!   with two cookies; a stolen cookie is worth only as long as its session lives.
//! - A session ends at "Log out" (`POST /logout`, which passes the CSRF check like
//!   every other write and ends only the session that sent it), after 12 hours without
//!   a request, 7 days after its login, when 16 newer sessions have started, or when
//!   the host stops ([`palisade_host::admin_sessions`]).
//! - Every page needs a live session's cookie; without it the answer is 401 with a
//!   hint. A session is good only on connections of the local user whose browser
//!   logged in (when the login came from this machine): browsers send the cookie to
//!   every port of 127.0.0.1, so another user's server there could otherwise take it
//!   and replay it ([`peer`]).
//! - Every state-changing request (anything but GET/HEAD) additionally needs the CSRF
//!   token of its session (header `X-CSRF-Token` from the script, or form field
//!   `csrf`) and an `Origin` (or, failing that, `Referer`) naming this server. The
//!   check runs in [`require_admin`] before any handler, so no handler can forget it,
//!   and a refused request changes nothing.
//! - The CLI's bearer token (`run/host.json`) is no session and is untouched by all
//!   this: it works for the JSON API for the whole run.
//!
//! The CSRF token is derived from the session token (SHA-256 with a purpose label), so
//! it is tied to the session, needs no storage, and cannot be computed by a page that
//! cannot read the `HttpOnly` cookie. [`require_admin`] runs each page's handler with
//! its session's CSRF token at hand ([`current_csrf`]), so every form on a page carries
//! the token of the session that asked for it.

use crate::guard::Guard;
use crate::pages::layout;
use crate::peer;
use crate::WebState;
use axum::body::Body;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use palisade_host::api::{same, COOKIE};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Form field and header carrying the CSRF token.
pub const CSRF_FIELD: &str = "csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The CSRF token of the session whose cookie value is `session`.
pub fn csrf_token(session: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"palisade web csrf v1\n");
    hasher.update(session.as_bytes());
    hex::encode(hasher.finalize())
}

tokio::task_local! {
    /// The CSRF token of the session whose request is being handled: set by
    /// [`require_admin`] around the handler, read by the layout for every form.
    static CURRENT_CSRF: Arc<str>;
}

/// The CSRF token of the session being served; empty outside a page handler, so a form
/// rendered there is refused rather than given another session's token.
pub(crate) fn current_csrf() -> Arc<str> {
    CURRENT_CSRF
        .try_with(Arc::clone)
        .unwrap_or_else(|_| Arc::from(""))
}

/// What ends a session in the browser: an empty cookie that expired long ago.
const CLEARED_COOKIE: &str = "=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0";

/// The values of cookie `name` the request carries.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then_some(value)
        })
        .collect()
}

/// The client's address, as the server was told it (see the crate's docs).
fn peer_address(extensions: &axum::http::Extensions) -> Option<std::net::SocketAddr> {
    extensions
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0)
}

/// The local user whose process is the client of this request's connection, if the
/// client is on this machine (see [`peer`]).
fn peer_uid(state: &WebState, extensions: &axum::http::Extensions) -> Option<u32> {
    let server = extensions
        .get::<crate::listener::ServerAddress>()
        .map_or(state.listen, |address| address.0);
    peer::uid_of(peer_address(extensions)?, server)
}

/// The token of the live session the request's cookie names, when the request comes
/// on a connection of the user who logged in to it; that session counts as used.
pub(crate) fn session_of(
    state: &WebState,
    headers: &HeaderMap,
    extensions: &axum::http::Extensions,
) -> Option<String> {
    let peer_uid = || peer_uid(state, extensions);
    cookie(headers, COOKIE)
        .into_iter()
        .find(|value| {
            state.tokens.sessions.check(value, |bound| match bound {
                None => true,
                Some(uid) => peer_uid() == Some(uid),
            })
        })
        .map(str::to_string)
}

#[derive(Deserialize)]
pub(crate) struct LoginQuery {
    token: Option<String>,
}

pub(crate) async fn login(
    State(state): State<WebState>,
    method: axum::http::Method,
    Query(query): Query<LoginQuery>,
    extensions: axum::http::Extensions,
) -> Response {
    // A HEAD (a link previewer's, a prefetcher's) uses nothing up and starts nothing:
    // only a visit spends the link and gets the session.
    let mut response = if method == axum::http::Method::HEAD {
        StatusCode::OK.into_response()
    } else {
        login_answer(&state, query, &extensions)
    };
    // The URL carries a token: no referrer from this page, not even to this server.
    response.headers_mut().insert(
        header::REFERRER_POLICY,
        axum::http::HeaderValue::from_static("no-referrer"),
    );
    response
}

fn login_answer(
    state: &WebState,
    query: LoginQuery,
    extensions: &axum::http::Extensions,
) -> Response {
    match query.token {
        Some(token) if state.tokens.logins.consume(&token) => {
            // The new session is good on this user's connections only (on anyone's
            // when the browser is on another machine).
            let uid = peer_uid(state, extensions);
            let session = state.tokens.sessions.start(uid);
            let cookie = format!("{COOKIE}={session}; HttpOnly; SameSite=Strict; Path=/");
            (
                StatusCode::SEE_OTHER,
                [(header::SET_COOKIE, cookie), (header::LOCATION, "/".into())],
            )
                .into_response()
        }
        Some(_) => layout::bare_page(
            StatusCode::UNAUTHORIZED,
            "This login link is not valid",
            "Each login link works once: the one `palisade up` printed within an hour, or \
             one from `palisade login` within 10 minutes, and only with the palisade that \
             printed it. \
             Run `palisade login` on this machine for a fresh link.",
        ),
        None => layout::bare_page(
            StatusCode::UNAUTHORIZED,
            "Log in with the link palisade printed",
            "Open the login URL that `palisade up` printed when it started \
             (http://…/login?token=…), or run `palisade login` for a fresh one.",
        ),
    }
}

/// Ends the session that sent it (only that one: the admin's other browsers stay
/// logged in) and clears its cookie. A write, so [`require_admin`] has checked its
/// session, CSRF token and origin before it runs.
pub(crate) async fn logout(State(state): State<WebState>, headers: HeaderMap) -> Response {
    let csrf = current_csrf();
    // The cookie whose session the CSRF check accepted: a request may carry others.
    for value in cookie(&headers, COOKIE) {
        if !csrf.is_empty() && same(&csrf_token(value), &csrf) {
            state.tokens.sessions.end(value);
        }
    }
    let mut response = layout::bare_page(
        StatusCode::OK,
        "Logged out",
        "This browser's session has ended. Run `palisade login` on this machine for a new \
         login link.",
    );
    if let Ok(value) = axum::http::HeaderValue::from_str(&format!("{COOKIE}{CLEARED_COOKIE}")) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// For the JSON API, which accepts a session cookie for reads: a request that carries
/// one that names no live session, or one on a connection of another user than the
/// one who logged in, gets 401, as a page would, whatever else it carries (the API
/// falls back to the cookie after an `Authorization` that is not its bearer token; the
/// CLI sends no cookie).
pub(crate) async fn bound_cookie(
    State(state): State<WebState>,
    request: Request,
    next: Next,
) -> Response {
    let with_cookie = !cookie(request.headers(), COOKIE).is_empty();
    if with_cookie && session_of(&state, request.headers(), request.extensions()).is_none() {
        return refuse(
            false,
            StatusCode::UNAUTHORIZED,
            "Log in first",
            "This session has ended or belongs to another user of this machine; run \
             `palisade login` for a new login link.",
        );
    }
    next.run(request).await
}

/// What [`require_admin`] needs.
#[derive(Clone)]
pub(crate) struct Gate {
    pub(crate) state: WebState,
    pub(crate) guard: Guard,
}

fn wants_html(request: &Request) -> bool {
    let accept = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    match *request.method() {
        Method::GET => {
            accept.is_none_or(|accept| accept.contains("text/html") || accept.contains("*/*"))
        }
        // A browser's own form submission (the page's script asks for JSON).
        Method::POST => {
            is_form(request) && accept.is_some_and(|accept| accept.contains("text/html"))
        }
        _ => false,
    }
}

fn is_form(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

/// The fields of the web UI's forms a person types into, by form name and label.
const TYPED_FIELDS: [(&str, &str); 3] = [
    ("text", "Message"),
    ("instructions", "Instructions"),
    ("comment", "Comment"),
];

/// What a person typed into a form that arrived without a session, to give back.
async fn typed_fields(request: Request) -> Vec<(&'static str, String)> {
    let Ok(bytes) = axum::body::to_bytes(request.into_body(), crate::MAX_FORM_BYTES).await else {
        return Vec::new();
    };
    url::form_urlencoded::parse(&bytes)
        .filter_map(|(name, value)| {
            let label = TYPED_FIELDS.iter().find(|(field, _)| *field == name)?.1;
            (!value.trim().is_empty()).then(|| (label, value.into_owned()))
        })
        .collect()
}

fn refuse(html: bool, status: StatusCode, title: &str, message: &str) -> Response {
    if html {
        return layout::bare_page(status, title, message);
    }
    (
        status,
        axum::Json(serde_json::json!({
            "error": if status == StatusCode::UNAUTHORIZED { "unauthorized" } else { "forbidden" },
            "message": message,
        })),
    )
        .into_response()
}

/// The origin a request says it comes from: `Origin`, else the origin of `Referer`.
fn request_origin(headers: &HeaderMap) -> Option<String> {
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        return Some(origin.to_string());
    }
    let referer = headers.get(header::REFERER)?.to_str().ok()?;
    let url = url::Url::parse(referer).ok()?;
    Some(url.origin().ascii_serialization())
}

/// Session cookie for everything; CSRF token and same origin for writes.
pub(crate) async fn require_admin(
    State(gate): State<Gate>,
    request: Request,
    next: Next,
) -> Response {
    let html = wants_html(&request);
    let Some(session) = session_of(&gate.state, request.headers(), request.extensions()) else {
        const LOGGED_OUT: &str = "You are not logged in. Run `palisade login` on this machine \
             and open the link it prints (each link works once; the one `palisade up` printed \
             at its start may be used already). A session ends when Palisade stops or \
             restarts, after 12 hours unused, 7 days after its login, or at Log out.";
        // What was typed is given back only to a page of this server (an old tab whose
        // session ended): another site could post text of its own and have this origin
        // show it to a person as theirs to paste (review).
        let ours = request_origin(request.headers())
            .is_some_and(|origin| gate.guard.origin_allowed(&origin));
        if html && request.method() == Method::POST && ours {
            return layout::logged_out_page(LOGGED_OUT, &typed_fields(request).await);
        }
        return refuse(html, StatusCode::UNAUTHORIZED, "Log in first", LOGGED_OUT);
    };
    let csrf: Arc<str> = Arc::from(csrf_token(&session));
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return CURRENT_CSRF.scope(csrf, next.run(request)).await;
    }
    let forbidden = |message: &str| refuse(true, StatusCode::FORBIDDEN, "Request refused", message);
    match request_origin(request.headers()) {
        Some(origin) if gate.guard.origin_allowed(&origin) => {}
        _ => {
            return forbidden(
                "This change did not come from a palisade page (its Origin is missing or \
                 another site's), so nothing was changed. Reload the page and try again.",
            )
        }
    }
    let header_token = request
        .headers()
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (request, form_token) = if header_token.is_none() && is_form(&request) {
        let (parts, body) = request.into_parts();
        let bytes = match axum::body::to_bytes(body, crate::MAX_FORM_BYTES).await {
            Ok(bytes) => bytes,
            Err(_) => {
                return refuse(
                    true,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Too large",
                    "The form is too large; shorten the text and try again.",
                )
            }
        };
        let token = url::form_urlencoded::parse(&bytes)
            .find(|(key, _)| key == CSRF_FIELD)
            .map(|(_, value)| value.into_owned());
        (Request::from_parts(parts, Body::from(bytes)), token)
    } else {
        (request, None)
    };
    match header_token.or(form_token) {
        Some(token) if same(&token, &csrf) => {
            CURRENT_CSRF.scope(csrf.clone(), next.run(request)).await
        }
        _ => forbidden(
            "This change carried no valid CSRF token for your session, so nothing was \
             changed. Reload the page and try again.",
        ),
    }
}
