//! The JSON errors the vault returns to agents.
//!
//! Every refusal is `{"error": KIND, "message": TEXT, ...}` where TEXT tells a language
//! model what happened and what to do next, plus an `x-should-retry` header
//! (`true`/`false`) and, for rate limits, `Retry-After` seconds.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GatewayErrorKind {
    /// 407 `proxy_authentication_required`
    ProxyAuthRequired,
    /// 403 `blocked_by_policy`
    BlockedByPolicy,
    /// 403 `blocked_by_default_policy`
    BlockedByDefaultPolicy,
    /// 429 `rate_limited`
    RateLimited,
    /// 403 `approval_denied`
    ApprovalDenied,
    /// 504 `approval_timed_out`
    ApprovalTimedOut,
    /// 502 `upstream_unreachable`
    UpstreamUnreachable,
    /// 504 `upstream_timeout`
    UpstreamTimeout,
    /// 503 `gateway_restarting`
    GatewayRestarting,
    /// 403 `local_upstream_refused`
    LocalUpstreamRefused,
    /// 400 `bad_request`
    BadRequest,
}

impl GatewayErrorKind {
    pub fn status(self) -> u16 {
        todo!()
    }
    pub fn code(self) -> &'static str {
        todo!()
    }
    pub fn should_retry(self) -> bool {
        todo!()
    }
}

/// A refusal ready to serialize. Optional fields are omitted from JSON when `None`.
#[derive(Clone, Debug, Serialize)]
pub struct ErrorBody {
    pub error: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(skip)]
    pub kind: Option<GatewayErrorKind>,
}

impl ErrorBody {
    /// A body with the default message for `kind`, mentioning `host` where it helps.
    pub fn new(kind: GatewayErrorKind, host: &str) -> Self {
        todo!("{kind:?} {host}")
    }
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }
    pub fn with_rule(mut self, rule: &str) -> Self {
        self.rule = Some(rule.to_string());
        self
    }
    pub fn status(&self) -> u16 {
        self.kind.map(GatewayErrorKind::status).unwrap_or(500)
    }
    pub fn should_retry(&self) -> bool {
        self.kind.map(GatewayErrorKind::should_retry).unwrap_or(false)
    }
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{\"error\":\"internal\"}"))
    }
}
