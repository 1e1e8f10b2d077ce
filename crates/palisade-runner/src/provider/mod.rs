//! Model providers behind one trait.
//!
//! [`ModelProvider::complete`] sends the conversation and streams the answer back as
//! [`ModelDelta`]s while it arrives, returning the whole [`ModelResponse`] at the end.
//! Two wire formats implement it over the same [`HttpClient`]: the Anthropic Messages
//! API ([`anthropic`]) and OpenAI-compatible chat completions ([`openai`]), so local
//! model servers work too. The retry loop lives here, once, for both: rate limits,
//! overload and server errors are tried again (at most [`RetryPolicy::max_attempts`]
//! times, honouring `Retry-After` and `x-should-retry`), but only while nothing of the
//! answer has been streamed yet, so a reader never sees text twice.
//!
//! The runner sends a placeholder API key: the vault replaces it with the real one on
//! the way out, and its refusals (`{"error": "blocked_by_policy", "message": ...}`)
//! come back as [`ModelError::Refused`] with a message a person can act on.

mod anthropic;
mod openai;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::Request;
use http_body_util::Full;
use serde_json::Value;

use crate::http::{HttpClient, HttpError, HttpResponse};
use crate::message::{ContentBlock, Message, Usage};
use crate::sse::{SseDecoder, SseEvent};
use crate::tools::ToolDefinition;

/// The model used when an agent names none.
pub use palisade_policy::models::DEFAULT_MODEL;

/// What the runner sends as its API key; the vault swaps in the real one.
pub const PLACEHOLDER_API_KEY: &str = "palisade-placeholder-key";

/// Largest single streamed event.
const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;
/// Largest whole streamed answer.
const MAX_STREAM_BYTES: usize = 32 * 1024 * 1024;
/// Largest error body read from a refusal.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// One request to the model.
#[derive(Clone, Copy, Debug)]
pub struct ModelRequest<'a> {
    pub system: &'a str,
    pub messages: &'a [Message],
    pub tools: &'a [ToolDefinition],
    pub max_output_tokens: u32,
}

/// Something the model said while it is still answering.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelDelta {
    /// A piece of answer text.
    Text(String),
    /// The attempt failed before anything streamed; another follows after `delay`.
    Retrying {
        attempt: u32,
        delay: Duration,
        reason: String,
    },
}

/// Why the model stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    EndTurn,
    ToolUse,
    MaxTokens,
    Other(String),
}

/// A complete answer.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelResponse {
    /// Text and tool calls in the order the model produced them; no empty text.
    pub content: Vec<ContentBlock>,
    pub stop_reason: StopReason,
    pub usage: Usage,
}

/// A language model the loop can talk to.
pub trait ModelProvider: Send + Sync {
    /// The model name sent with each request.
    fn model(&self) -> &str;

    /// Sends `request`, streams deltas to `on_delta`, returns the whole answer.
    fn complete<'a>(
        &'a self,
        request: ModelRequest<'a>,
        on_delta: &'a mut (dyn FnMut(ModelDelta) + Send),
    ) -> BoxFuture<'a, Result<ModelResponse, ModelError>>;
}

/// Why a model call failed (after any retries).
#[derive(Clone, Debug, thiserror::Error)]
pub enum ModelError {
    #[error("the model API could not be reached, or stopped answering: {0}")]
    Unreachable(String),
    #[error("the model request was refused ({status} {kind}): {message}{}", wait_note(*.retry_after))]
    Refused {
        status: u16,
        /// The machine-readable error: `blocked_by_policy`, `overloaded_error`, …
        kind: String,
        message: String,
        retry_after: Option<Duration>,
        /// The API's own `x-should-retry` verdict, when it gave one.
        should_retry: Option<bool>,
    },
    #[error("the model stopped with an error ({kind}): {message}")]
    Stream { kind: String, message: String },
    #[error("the model API sent something unexpected: {0}")]
    Protocol(String),
}

/// What a refusal that asked for a wait says of it: a wait longer than a retry sleeps
/// through is the person's to know.
fn wait_note(retry_after: Option<Duration>) -> String {
    match retry_after {
        Some(wait) if wait >= Duration::from_secs(60) => format!(
            " (the API asks to wait {} min before trying again)",
            wait.as_secs().div_ceil(60)
        ),
        _ => String::new(),
    }
}

/// Refusals that waiting will not change: a person or a rule decided.
const FINAL_KINDS: &[&str] = &[
    "blocked_by_policy",
    "approval_denied",
    "approval_timed_out",
    "authentication_error",
    "permission_error",
    "invalid_request_error",
    "not_found_error",
];

impl ModelError {
    /// The machine-readable kind, when the API or the vault named one.
    pub fn kind(&self) -> Option<&str> {
        match self {
            ModelError::Refused { kind, .. } | ModelError::Stream { kind, .. } => Some(kind),
            _ => None,
        }
    }

    /// Whether the API said the model does not exist or was retired (a retry will not
    /// help; the person has to choose another model).
    pub fn is_model_unavailable(&self) -> bool {
        match self {
            ModelError::Refused {
                status,
                kind,
                message,
                ..
            } => palisade_policy::models::is_model_unavailable(*status, kind, message),
            ModelError::Stream { kind, message } => {
                palisade_policy::models::is_model_unavailable(0, kind, message)
            }
            _ => false,
        }
    }

    /// A sentence to show the person waiting for an answer.
    pub fn user_message(&self) -> String {
        // The error's own text starts in lower case, to follow a colon.
        let mut text = format!("I could not get an answer from the model: {self}");
        if self.is_key_refused() {
            // The key lives in the vault, out of the agent's reach: the person fixes it.
            text.push_str(palisade_policy::models::KEY_REFUSED_ADVICE);
        }
        if matches!(self, ModelError::Refused { status: 404, .. }) && !self.is_model_unavailable() {
            text.push_str(palisade_policy::models::NO_SUCH_ENDPOINT_ADVICE);
        }
        text
    }

    /// Whether the API refused the credential itself (401, or an authentication error
    /// by name), not the request.
    pub fn is_key_refused(&self) -> bool {
        matches!(self, ModelError::Refused { status: 401, .. })
            || matches!(self, ModelError::Refused { kind, .. } | ModelError::Stream { kind, .. } if kind == "authentication_error")
    }

    fn retryable(&self) -> bool {
        match self {
            ModelError::Unreachable(_) => true,
            ModelError::Protocol(_) => false,
            ModelError::Stream { kind, .. } => matches!(
                kind.as_str(),
                "overloaded_error" | "api_error" | "rate_limit_error" | "server_error"
            ),
            ModelError::Refused {
                status,
                kind,
                should_retry,
                ..
            } => {
                if let Some(verdict) = should_retry {
                    return *verdict;
                }
                if FINAL_KINDS.contains(&kind.as_str()) {
                    return false;
                }
                matches!(status, 408 | 409 | 429) || *status >= 500 || kind == "overloaded_error"
            }
        }
    }

    /// How long to wait before attempt `attempt + 1`, or `None` not to retry.
    fn retry_delay(&self, policy: &RetryPolicy, attempt: u32) -> Option<Duration> {
        if !self.retryable() {
            return None;
        }
        if let ModelError::Refused {
            retry_after: Some(wait),
            ..
        } = self
        {
            // A long wait is better reported than silently slept through.
            return (*wait <= policy.max_delay).then_some(*wait);
        }
        let exponent = attempt.saturating_sub(1).min(16);
        let backoff = policy.base_delay.saturating_mul(1u32 << exponent);
        Some(backoff.min(policy.max_delay))
    }
}

impl From<HttpError> for ModelError {
    fn from(error: HttpError) -> ModelError {
        match error {
            HttpError::InvalidRequest(message) => ModelError::Protocol(message),
            other => ModelError::Unreachable(other.to_string()),
        }
    }
}

/// How often and how patiently to retry.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub max_attempts: u32,
    /// Wait after the first failure; doubled after each further one.
    pub base_delay: Duration,
    /// Longest wait; a `Retry-After` beyond it is reported instead of waited for.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// Which wire format a provider speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderKind {
    /// `POST {base_url}/v1/messages`.
    Anthropic,
    /// `POST {base_url}/v1/chat/completions`.
    OpenAi,
}

/// The ids of the models the API at `config` lists (`GET /v1/models`, Anthropic's and
/// OpenAI's shape alike), at most 20, for the line that says a model is not available;
/// empty when the list cannot be read within 5 s.
pub async fn listed_models(config: &ProviderConfig, http: &HttpClient) -> Vec<String> {
    let url = format!("{}/v1/models?limit=100", config.base_url);
    let builder = config.authorized(Request::get(&url).header(ACCEPT, "application/json"));
    let Ok(request) = builder.body(Full::new(Bytes::new())) else {
        return Vec::new();
    };
    let read = async {
        let response = http.send(request).await.ok()?;
        if !response.status.is_success() {
            return None;
        }
        let (body, _) = response.read_limited(256 * 1024).await.ok()?;
        let list: Value = serde_json::from_slice(&body).ok()?;
        Some(
            list["data"]
                .as_array()?
                .iter()
                .filter_map(|model| model["id"].as_str().map(str::to_string))
                .take(20)
                .collect::<Vec<_>>(),
        )
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Everything a provider needs apart from the HTTP client.
#[derive(Clone, Debug)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// `https://api.anthropic.com`, without a trailing `/v1` (the endpoints add it).
    pub base_url: String,
    pub model: String,
    /// Sent as `x-api-key` or `Authorization: Bearer`; a placeholder in a sandbox.
    pub api_key: String,
    pub retry: RetryPolicy,
}

impl ProviderConfig {
    /// The Anthropic Messages API at `base_url` with the default model. A base URL
    /// ending in `/v1` (as the model list and `doctor` take it, and as OpenAI-style
    /// URLs are written) is the same server: the endpoint adds the `/v1` (it was added
    /// twice, `…/v1/v1/messages`, and every message failed).
    pub fn anthropic(base_url: &str) -> ProviderConfig {
        let base_url = base_url.trim_end_matches('/');
        let base_url = base_url.strip_suffix("/v1").unwrap_or(base_url);
        ProviderConfig {
            kind: ProviderKind::Anthropic,
            base_url: base_url.to_string(),
            model: DEFAULT_MODEL.to_string(),
            api_key: PLACEHOLDER_API_KEY.to_string(),
            retry: RetryPolicy::default(),
        }
    }

    /// An OpenAI-compatible chat API at `base_url`, serving `model`. OpenAI-style
    /// base URLs usually end in `/v1` (`https://api.openai.com/v1`,
    /// `http://127.0.0.1:8080/v1`); both that and the bare server URL work.
    pub fn openai(base_url: &str, model: &str) -> ProviderConfig {
        ProviderConfig {
            kind: ProviderKind::OpenAi,
            model: model.to_string(),
            ..ProviderConfig::anthropic(base_url)
        }
    }

    /// `builder` with the API's key (a placeholder the vault replaces) and, for
    /// Anthropic's API, its version.
    fn authorized(&self, builder: http::request::Builder) -> http::request::Builder {
        match self.kind {
            ProviderKind::Anthropic => builder
                .header("x-api-key", &self.api_key)
                .header("anthropic-version", anthropic::API_VERSION),
            ProviderKind::OpenAi => {
                builder.header("authorization", format!("Bearer {}", self.api_key))
            }
        }
    }

    /// The same with another model.
    pub fn with_model(mut self, model: &str) -> ProviderConfig {
        self.model = model.to_string();
        self
    }

    /// Builds the provider over `http`.
    pub fn build(self, http: HttpClient) -> Arc<dyn ModelProvider> {
        Arc::new(HttpProvider { config: self, http })
    }
}

/// Accumulates one streamed answer.
trait StreamParser: Send {
    /// Handles one event; `Ok(true)` once the answer is complete.
    fn event(
        &mut self,
        event: &SseEvent,
        on_delta: &mut (dyn FnMut(ModelDelta) + Send),
    ) -> Result<bool, ModelError>;

    /// The answer, once the stream is over (`complete` says whether it ended properly).
    fn finish(&mut self, complete: bool) -> Result<ModelResponse, ModelError>;
}

struct HttpProvider {
    config: ProviderConfig,
    http: HttpClient,
}

impl ModelProvider for HttpProvider {
    fn model(&self) -> &str {
        &self.config.model
    }

    fn complete<'a>(
        &'a self,
        request: ModelRequest<'a>,
        on_delta: &'a mut (dyn FnMut(ModelDelta) + Send),
    ) -> BoxFuture<'a, Result<ModelResponse, ModelError>> {
        Box::pin(self.complete_with_retries(request, on_delta))
    }
}

impl HttpProvider {
    async fn complete_with_retries(
        &self,
        request: ModelRequest<'_>,
        on_delta: &mut (dyn FnMut(ModelDelta) + Send),
    ) -> Result<ModelResponse, ModelError> {
        let body = match self.config.kind {
            ProviderKind::Anthropic => anthropic::request_body(&self.config.model, &request),
            ProviderKind::OpenAi => openai::request_body(&self.config.model, &request),
        };
        let body = Bytes::from(body.to_string());
        let policy = &self.config.retry;
        let mut attempt = 1;
        loop {
            let mut streamed = false;
            let result = {
                let mut forward = |delta: ModelDelta| {
                    streamed = true;
                    on_delta(delta);
                };
                self.attempt(body.clone(), &mut forward).await
            };
            let error = match result {
                Ok(response) => return Ok(response),
                Err(error) => error,
            };
            let delay = match error.retry_delay(policy, attempt) {
                Some(delay) if attempt < policy.max_attempts && !streamed => delay,
                _ => return Err(error),
            };
            tracing::warn!(attempt, ?delay, %error, "model call failed; retrying");
            on_delta(ModelDelta::Retrying {
                attempt,
                delay,
                reason: error.to_string(),
            });
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    async fn attempt(
        &self,
        body: Bytes,
        on_delta: &mut (dyn FnMut(ModelDelta) + Send),
    ) -> Result<ModelResponse, ModelError> {
        let (path, mut parser): (&str, Box<dyn StreamParser>) = match self.config.kind {
            ProviderKind::Anthropic => ("/v1/messages", Box::<anthropic::Stream>::default()),
            ProviderKind::OpenAi => ("/v1/chat/completions", Box::<openai::Stream>::default()),
        };
        let url = format!("{}{path}", self.config.base_url);
        let builder = self.config.authorized(
            Request::post(&url)
                .header(CONTENT_TYPE, "application/json")
                .header(ACCEPT, "text/event-stream"),
        );
        let request = builder
            .body(Full::new(body))
            .map_err(|error| ModelError::Protocol(format!("cannot build request: {error}")))?;
        let mut response = self.http.send(request).await?;
        if !response.status.is_success() {
            return Err(refusal(response).await);
        }
        let mut decoder = SseDecoder::new(MAX_EVENT_BYTES);
        let mut received = 0usize;
        while let Some(chunk) = response.next_chunk().await? {
            received += chunk.len();
            if received > MAX_STREAM_BYTES {
                return Err(ModelError::Protocol(format!(
                    "answer larger than {MAX_STREAM_BYTES} bytes"
                )));
            }
            let events = decoder
                .push(&chunk)
                .map_err(|error| ModelError::Protocol(error.to_string()))?;
            for event in &events {
                if parser.event(event, on_delta)? {
                    return parser.finish(true);
                }
            }
        }
        parser.finish(false)
    }
}

/// Turns a non-2xx answer into a [`ModelError::Refused`], whichever shape its body
/// has: the vault's `{error, message}`, Anthropic's `{type: "error", error: {type,
/// message}}`, OpenAI's `{error: {message, type, code}}`, or anything else.
async fn refusal(response: HttpResponse) -> ModelError {
    let status = response.status.as_u16();
    let retry_after = response
        .header("retry-after-ms")
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
        .or_else(|| {
            response
                .header("retry-after")
                .and_then(|value| value.trim().parse::<u64>().ok())
                .map(Duration::from_secs)
        });
    let should_retry = match response.header("x-should-retry") {
        Some("true") => Some(true),
        Some("false") => Some(false),
        _ => None,
    };
    let reason = response.status.canonical_reason().unwrap_or("error");
    let body = match response.read_limited(MAX_ERROR_BODY).await {
        Ok((body, _)) => body,
        Err(error) => Bytes::from(error.to_string()),
    };
    let (kind, message) = error_fields(&body).unwrap_or_else(|| {
        let text = String::from_utf8_lossy(&body);
        (reason.to_string(), truncate(text.trim(), 500))
    });
    ModelError::Refused {
        status,
        kind,
        message,
        retry_after,
        should_retry,
    }
}

/// `(kind, message)` from a JSON error body of any of the known shapes. The vault's
/// refusals may name the person who denied a request and their comment, which is meant
/// for the agent: both are added to the message.
pub(crate) fn error_fields(body: &[u8]) -> Option<(String, String)> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let text = |value: Option<&Value>| value.and_then(Value::as_str).map(str::to_string);
    match value.get("error") {
        Some(Value::String(kind)) => {
            let mut message = text(value.get("message")).unwrap_or_default();
            if let Some(approver) = text(value.get("approver")) {
                message.push_str(&format!(" Decided by: {}.", truncate(&approver, 200)));
            }
            if let Some(comment) = text(value.get("comment")) {
                message.push_str(&format!(" Their comment: {:?}", truncate(&comment, 1000)));
            }
            Some((kind.clone(), message))
        }
        Some(Value::Object(inner)) => {
            let kind = text(inner.get("type"))
                .or_else(|| text(inner.get("code")))
                .unwrap_or_else(|| "error".to_string());
            Some((kind, text(inner.get("message")).unwrap_or_default()))
        }
        _ => None,
    }
}

pub(crate) fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// Parses a tool call's accumulated JSON; an empty string is `{}`. Malformed input
/// is kept as text so the tool reports it instead of the loop failing.
fn tool_input(raw: &str) -> Value {
    if raw.trim().is_empty() {
        return Value::Object(Default::default());
    }
    serde_json::from_str(raw).unwrap_or_else(|_| {
        let mut object = serde_json::Map::new();
        object.insert(
            "_unparsed_input".to_string(),
            Value::String(raw.to_string()),
        );
        Value::Object(object)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(
        status: u16,
        kind: &str,
        retry_after: Option<u64>,
        should: Option<bool>,
    ) -> ModelError {
        ModelError::Refused {
            status,
            kind: kind.into(),
            message: String::new(),
            retry_after: retry_after.map(Duration::from_secs),
            should_retry: should,
        }
    }

    /// A 404 that names no model is an endpoint the server does not have (a provider or
    /// base URL that is wrong): the message says what to check, not to pick a model.
    #[test]
    fn a_missing_endpoint_points_at_the_provider_and_base_url() {
        let missing = ModelError::Refused {
            status: 404,
            kind: "error".into(),
            message: "not found /v1/messages".into(),
            retry_after: None,
            should_retry: None,
        };
        assert!(!missing.is_model_unavailable());
        assert!(
            missing.user_message().contains("no such endpoint"),
            "{}",
            missing.user_message()
        );
        let retired = ModelError::Refused {
            status: 404,
            kind: "not_found_error".into(),
            message: "model: claude-x".into(),
            retry_after: None,
            should_retry: None,
        };
        assert!(retired.is_model_unavailable());
        assert!(!retired.user_message().contains("no such endpoint"));
    }

    /// A key the API refused is the person's to replace: the message says where.
    #[test]
    fn a_refused_key_says_how_to_replace_it() {
        for error in [
            refused(401, "invalid_request_error", None, None),
            refused(403, "authentication_error", None, None),
        ] {
            let text = error.user_message();
            assert!(text.contains("palisade secrets rotate NAME"), "{text}");
        }
        for error in [
            refused(403, "permission_error", None, None),
            refused(429, "rate_limit_error", None, None),
        ] {
            assert!(!error.user_message().contains("rotate"), "{error}");
        }
    }

    #[test]
    fn base_urls_with_or_without_v1_reach_the_same_endpoint() {
        for url in [
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8080/",
            "http://127.0.0.1:8080/v1",
            "http://127.0.0.1:8080/v1/",
        ] {
            assert_eq!(
                ProviderConfig::openai(url, "m").base_url,
                "http://127.0.0.1:8080"
            );
            assert_eq!(
                ProviderConfig::anthropic(url).base_url,
                "http://127.0.0.1:8080"
            );
        }
    }

    /// A refusal that asks for a long wait, which is not slept through, says how long.
    #[test]
    fn a_long_wait_asked_for_is_told() {
        let long = refused(429, "rate_limit_error", Some(600), None).to_string();
        assert!(
            long.ends_with("(the API asks to wait 10 min before trying again)"),
            "{long}"
        );
        let short = refused(429, "rate_limit_error", Some(5), None).to_string();
        assert!(!short.contains("asks to wait"), "{short}");
    }

    #[test]
    fn which_failures_are_retried() {
        let policy = RetryPolicy::default();
        assert_eq!(
            refused(529, "overloaded_error", None, None).retry_delay(&policy, 1),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            refused(500, "api_error", None, None).retry_delay(&policy, 2),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            refused(429, "rate_limited", Some(2), None).retry_delay(&policy, 1),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            refused(429, "rate_limited", Some(3600), None).retry_delay(&policy, 1),
            None
        );
        assert_eq!(
            refused(403, "blocked_by_policy", None, None).retry_delay(&policy, 1),
            None
        );
        assert_eq!(
            refused(500, "api_error", None, Some(false)).retry_delay(&policy, 1),
            None
        );
        assert!(refused(400, "x", None, Some(true))
            .retry_delay(&policy, 1)
            .is_some());
        let stream = ModelError::Stream {
            kind: "overloaded_error".into(),
            message: String::new(),
        };
        assert!(stream.retry_delay(&policy, 1).is_some());
    }

    #[test]
    fn error_bodies_of_every_shape() {
        assert_eq!(
            error_fields(br#"{"error":"blocked_by_policy","message":"no"}"#),
            Some(("blocked_by_policy".into(), "no".into()))
        );
        assert_eq!(
            error_fields(
                br#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#
            ),
            Some(("overloaded_error".into(), "busy".into()))
        );
        assert_eq!(
            error_fields(br#"{"error":{"message":"m","type":null,"code":"rate"}}"#),
            Some(("rate".into(), "m".into()))
        );
        assert_eq!(
            error_fields(
                br#"{"error":"approval_denied","message":"Denied.","approver":"Ana","comment":"not now"}"#
            ),
            Some((
                "approval_denied".into(),
                "Denied. Decided by: Ana. Their comment: \"not now\"".into()
            ))
        );
        assert_eq!(error_fields(b"<html>"), None);
    }
}
