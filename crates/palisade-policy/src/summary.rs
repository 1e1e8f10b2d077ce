//! Human summaries of held requests, so a person can decide without opening the detail.
//!
//! Recognised shapes: Gmail send (`POST gmail.googleapis.com/gmail/v1/users/*/messages/send`,
//! JSON `raw` base64url RFC 822 → To, Subject, body excerpt), Slack `chat.postMessage`
//! (channel + text, JSON or form), GitHub issue/PR creation (repo + title), Stripe charges,
//! payment intents, transfers and payouts (amount + currency + payee/destination). Anything
//! else: method, URL without query values for secret-looking keys, redacted headers
//! (authorization, cookie, x-api-key and anything named like a key/token/secret show as
//! `[redacted]`) and a body excerpt (at most 500 chars, non-printable replaced).

use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// One line, e.g. "Send e-mail to bob@example.com: \"Quarterly numbers\"".
    pub title: String,
    /// Further lines a card shows under the title.
    pub lines: Vec<String>,
    /// Full detail (method, URL, redacted headers, body excerpt) for "show more".
    pub detail: String,
}

/// Builds a summary. `path_and_query` as sent; `body` is the prefix the vault read.
pub fn summarize(
    method: &http::Method,
    host: &str,
    path_and_query: &str,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Summary {
    todo!("{method} {host} {path_and_query} {headers:?} {body:?}")
}
