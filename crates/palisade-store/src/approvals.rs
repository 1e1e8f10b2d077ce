//! Approval records: a held action waiting for a person, as stored. The typed view
//! (kinds, approver identities, choices) and every rule about who may decide what live
//! in the `palisade-approvals` engine; the store keeps the rows and makes a decision
//! atomic.
//!
//! Ids are short random strings (`apr_` + 12 base32 chars). A decision is written once:
//! `decide` on a non-pending approval returns `AlreadyDecided`, so the first valid
//! decision wins even when several processes race.

use palisade_policy::AgentName;
use serde::Serialize;

/// The key of a stranger's request to talk to `agent` on `channel`: asking again finds
/// the same request. Removing the sender, the agent or the channel forgets decided
/// ones, so an old approval never lets a removed person back in.
pub fn access_request_key(channel: &str, user_id: &str, agent: &AgentName) -> String {
    format!("access:{channel}:{user_id}:{agent}")
}

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
    /// Who decided, as shown to people (`Ana (slack:team)`, `cli:alice`, `web:admin`).
    pub approver: Option<String>,
    pub comment: Option<String>,
    /// The choice made (`once`, `1h`, `always`, `deny`), when decided by a person.
    pub choice: Option<String>,
    /// Where the decision was made: `cli`, `web`, `api`, or a chat channel's name.
    pub approver_channel: Option<String>,
    /// The approver's user id on that surface (a platform user id for chat channels).
    pub approver_user: Option<String>,
    pub approver_name: Option<String>,
    /// The rule a `1h` or `always` choice created.
    pub granted_rule: Option<String>,
    /// The gateway holding a held request (`PID@START_MS`), while one does.
    pub holder: Option<String>,
    /// Set for approvals an agent asks for: the same key finds the same approval.
    pub request_key: Option<String>,
}

pub struct NewApproval {
    pub kind: String,
    pub agent: AgentName,
    pub title: String,
    pub lines: Vec<String>,
    pub detail: String,
    pub context: serde_json::Value,
    pub expires_at_ms: i64,
    /// The gateway that holds the request (see [`Approval::holder`]).
    pub holder: Option<String>,
    /// An idempotency key: creating an approval with a key that exists returns the
    /// existing one, whatever its state.
    pub request_key: Option<String>,
}

#[derive(Clone, Debug)]
pub struct ApprovalDecision {
    pub approve: bool,
    /// Who decided, as shown to people (e.g. `cli:alice`, `web:admin`, `Ana (slack:team)`).
    pub approver: String,
    pub comment: Option<String>,
    /// `once`, `1h`, `always`, `deny`.
    pub choice: String,
    /// The surface or channel the decision came from, and the user there.
    pub approver_channel: String,
    pub approver_user: String,
    pub approver_name: String,
    /// A rule created in the same transaction as the decision (time-bound or standing
    /// access the approver granted); its name is recorded on the approval.
    pub grant: Option<crate::NewRule>,
}
