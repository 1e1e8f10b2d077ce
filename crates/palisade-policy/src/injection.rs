//! How a secret is written into a request.
//!
//! Spellings (as given on the CLI and stored in the database):
//! - `bearer` — `Authorization: Bearer {value}`, replacing any `Authorization` the client sent.
//! - `anthropic` — `x-api-key: {value}`; removes `Authorization` and any client `x-api-key`,
//!   because current SDKs send the placeholder key as a bearer token and older ones as
//!   `x-api-key`; a placeholder must never reach the API.
//! - `header:NAME` or `header:NAME:FORMAT` — sets header NAME (replacing), FORMAT contains
//!   `{value}` (e.g. `header:Authorization:token {value}`); only the first two `:` split.
//! - `query:NAME` — sets query parameter NAME (replacing any the client sent), percent-encoded.
//! - `path-template:TEMPLATE` — TEMPLATE contains `{value}` once, e.g. `/bot{value}/`.
//!   The literal text before `{value}` must start the request path; the characters from
//!   there up to the literal text after `{value}` (or the end) are replaced by the value,
//!   so both `/bot/sendMessage` and `/botPLACEHOLDER/sendMessage` become `/bot{value}/sendMessage`.

use crate::secret::SecretValue;
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Injection {
    Bearer,
    Anthropic,
    Header {
        name: http::HeaderName,
        /// Contains `{value}`; `None` means the bare value.
        format: Option<String>,
    },
    Query {
        name: String,
    },
    PathTemplate {
        template: String,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InjectionError {
    #[error("injection {0:?} is invalid: {1}. Use bearer, anthropic, header:NAME[:FORMAT with {{value}}], query:NAME or path-template:/prefix{{value}}/")]
    Invalid(String, &'static str),
    /// The request does not fit the template (path-template whose prefix is absent).
    #[error("the request path does not match the secret's path template {0:?}")]
    PathMismatch(String),
    /// The secret value cannot be written as a header (control characters).
    #[error("the secret value cannot be sent in a header")]
    BadHeaderValue,
}

impl Injection {
    /// Writes the secret into the request head. Never logs or returns the value.
    pub fn apply(
        &self,
        value: &SecretValue,
        parts: &mut http::request::Parts,
    ) -> Result<(), InjectionError> {
        todo!("{value:?} {parts:?}")
    }
    /// Header names a client may have used for a placeholder key that this injection
    /// replaces (used to strip placeholders even when no secret is injected is NOT done;
    /// this is informational for summaries/redaction).
    pub fn header_names(&self) -> Vec<http::HeaderName> {
        todo!()
    }
}

impl FromStr for Injection {
    type Err = InjectionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        todo!("{s}")
    }
}

/// Round-trips with `FromStr` (this is the stored spelling).
impl fmt::Display for Injection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let _ = f;
        todo!()
    }
}
