//! Approval records: a held action waiting for a person.
//!
//! Ids are short random strings (`apr_` + 12 base32 chars). A decision is written once:
//! `decide` on a non-pending approval returns `AlreadyDecided`, so the first valid
//! decision wins even when several processes race.

use palisade_policy::AgentName;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Denied,
    TimedOut,
    /// The gateway shut down while holding it.
    Cancelled,
}

impl ApprovalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::TimedOut => "timed_out",
            ApprovalStatus::Cancelled => "cancelled",
        }
    }
}

/// Parses the `as_str` spelling (`pending`, `approved`, `denied`, `timed_out`, `cancelled`).
impl std::str::FromStr for ApprovalStatus {
    type Err = crate::StoreError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        [
            ApprovalStatus::Pending,
            ApprovalStatus::Approved,
            ApprovalStatus::Denied,
            ApprovalStatus::TimedOut,
            ApprovalStatus::Cancelled,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
        .ok_or_else(|| {
            crate::StoreError::Invalid(format!(
                "approval status {text:?} is unknown: use pending, approved, denied, timed_out or cancelled"
            ))
        })
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Approval {
    pub id: String,
    /// `credential_use`, `a2a_outbound`, `a2a_inbound`, `tool_action`, `access_request`.
    pub kind: String,
    pub agent: AgentName,
    pub status: ApprovalStatus,
    pub title: String,
    pub lines: Vec<String>,
    pub detail: String,
    /// Request facts for machine use (method, host, path, rule, ...).
    pub context: serde_json::Value,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub decided_at_ms: Option<i64>,
    pub approver: Option<String>,
    pub comment: Option<String>,
}

pub struct NewApproval {
    pub kind: String,
    pub agent: AgentName,
    pub title: String,
    pub lines: Vec<String>,
    pub detail: String,
    pub context: serde_json::Value,
    pub expires_at_ms: i64,
}

#[derive(Clone, Debug)]
pub struct ApprovalDecision {
    pub approve: bool,
    /// Who decided (e.g. `cli:alice`, `web:admin`, `slack:U123`).
    pub approver: String,
    pub comment: Option<String>,
}
