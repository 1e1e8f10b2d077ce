//! The pages, one module each, plus what they share: the layout, errors as pages, the
//! bridge from async handlers to the (blocking) store, and time formatting.

pub(crate) mod agent_policy;
pub(crate) mod agents;
pub(crate) mod approvals;
pub(crate) mod assets;
pub(crate) mod audit;
pub(crate) mod channels;
pub(crate) mod charts;
pub(crate) mod chat;
pub(crate) mod dashboard;
pub(crate) mod forms;
pub(crate) mod health;
pub(crate) mod layout;
pub(crate) mod rules;
pub(crate) mod secrets;
pub(crate) mod sessions;
pub(crate) mod setup;
pub(crate) mod suggestions;
pub(crate) mod vault;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use palisade_store::StoreError;

/// What a page handler can fail with; shown as a page with the cause.
#[derive(Debug)]
pub(crate) enum PageError {
    NotFound(String),
    BadRequest(String),
    Internal(String),
}

impl std::fmt::Display for PageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PageError::NotFound(m) | PageError::BadRequest(m) | PageError::Internal(m) => {
                f.write_str(m)
            }
        }
    }
}

impl From<StoreError> for PageError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound { .. } => PageError::NotFound(error.to_string()),
            // Said on the form it refuses, as a sentence (not "invalid value: …").
            StoreError::Invalid(message) => PageError::BadRequest(message),
            StoreError::Input(_) | StoreError::AlreadyDecided(_) | StoreError::Duplicate { .. } => {
                PageError::BadRequest(error.to_string())
            }
            other => PageError::Internal(other.to_string()),
        }
    }
}

impl From<palisade_host::HostError> for PageError {
    fn from(error: palisade_host::HostError) -> Self {
        match error {
            palisade_host::HostError::Store(store) => store.into(),
            palisade_host::HostError::UnknownAgent(_) => PageError::NotFound(error.to_string()),
            palisade_host::HostError::Invalid(_)
            | palisade_host::HostError::EmptyMessage
            | palisade_host::HostError::TooLarge { .. } => PageError::BadRequest(error.to_string()),
            other => PageError::Internal(other.to_string()),
        }
    }
}

impl From<palisade_policy::NameError> for PageError {
    fn from(error: palisade_policy::NameError) -> Self {
        PageError::BadRequest(error.to_string())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            PageError::NotFound(message) => (StatusCode::NOT_FOUND, "Not found", message),
            PageError::BadRequest(message) => (StatusCode::BAD_REQUEST, "Not done", message),
            PageError::Internal(message) => {
                tracing::warn!(%message, "web UI request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    message,
                )
            }
        };
        layout::bare_page(status, title, &message)
    }
}

pub(crate) type PageResult = Result<Response, PageError>;

impl PageError {
    /// The line to show in a form whose input was refused, or the error itself when it
    /// is not about the input (a broken database is a 500, not a form error).
    pub(crate) fn for_form(self) -> Result<String, PageError> {
        match self {
            PageError::BadRequest(message) | PageError::NotFound(message) => Ok(message),
            other => Err(other),
        }
    }
}

/// Runs a store call off the async workers.
pub(crate) async fn blocking<T, F>(work: F) -> Result<T, PageError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, PageError> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| PageError::Internal(format!("a background task failed: {e}")))?
}

pub(crate) async fn not_found() -> Response {
    layout::bare_page(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no page at this address.",
    )
}

/// Text from an agent, a model or a chat (a reply, a conversation key, an upstream's
/// error) with each character that reorders what follows it on screen (the bidi
/// controls: `U+202E` shows `gpj.exe` as `exe.jpg`) shown as a marker, `⟨U+202E⟩`, as
/// the approval cards show them. `app.js` does the same for streamed text.
pub(crate) fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    fn reorders(c: char) -> bool {
        matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
    }
    if !text.chars().any(reorders) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if reorders(c) {
            out.push_str(&format!("⟨U+{:04X}⟩", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `2026-11-23 14:05:09 UTC`
pub(crate) fn when(ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => ms.to_string(),
    }
}

/// `5 min ago`, `in 9 min`
pub(crate) fn relative(ms: i64) -> String {
    let delta = palisade_store::now_ms() - ms;
    let (seconds, future) = if delta >= 0 {
        (delta / 1000, false)
    } else {
        (-delta / 1000, true)
    };
    let text = match seconds {
        0..=9 => {
            return if future {
                "now".into()
            } else {
                "just now".into()
            }
        }
        10..=59 => format!("{seconds} s"),
        60..=3599 => format!("{} min", seconds / 60),
        3600..=86_399 => format!("{} h", seconds / 3600),
        _ => format!("{} d", seconds / 86_400),
    };
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// Percent-encodes a query parameter value.
pub(crate) fn query_value(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}
