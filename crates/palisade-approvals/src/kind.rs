//! What is being approved. The kind decides which choices a person is offered: a
//! credential use can be granted for an hour or always (a rule scoped to that exact
//! request's host, method and path); the other kinds are decided one at a time.

use crate::choice::Choice;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalKind {
    /// An HTTP request held at the vault (a `require_approval` rule matched).
    CredentialUse,
    /// A sensitive action the agent asks a person about (`request_approval`).
    ToolAction,
    /// A message an agent sends to another agent.
    #[serde(rename = "a2a_outbound")]
    AgentMessageOut,
    /// A message arriving for an agent from another agent.
    #[serde(rename = "a2a_inbound")]
    AgentMessageIn,
    /// Someone not linked to an agent asks to talk to it.
    AccessRequest,
}

const ALL: [ApprovalKind; 5] = [
    ApprovalKind::CredentialUse,
    ApprovalKind::ToolAction,
    ApprovalKind::AgentMessageOut,
    ApprovalKind::AgentMessageIn,
    ApprovalKind::AccessRequest,
];

impl ApprovalKind {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalKind::CredentialUse => "credential_use",
            ApprovalKind::ToolAction => "tool_action",
            ApprovalKind::AgentMessageOut => "a2a_outbound",
            ApprovalKind::AgentMessageIn => "a2a_inbound",
            ApprovalKind::AccessRequest => "access_request",
        }
    }

    /// How a card names it.
    pub fn label(self) -> &'static str {
        match self {
            ApprovalKind::CredentialUse => "Request held at the vault",
            ApprovalKind::ToolAction => "Action the agent asks about",
            ApprovalKind::AgentMessageOut => "Message to another agent",
            ApprovalKind::AgentMessageIn => "Message from another agent",
            ApprovalKind::AccessRequest => "Access request",
        }
    }

    /// Whether a person may make `choice` on this kind.
    pub fn offers(self, choice: Choice) -> bool {
        match choice {
            Choice::Once | Choice::Deny => true,
            Choice::ForHour | Choice::Always => self == ApprovalKind::CredentialUse,
        }
    }
}

impl std::fmt::Display for ApprovalKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ApprovalKind {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ALL.into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| {
                format!(
                    "approval kind {text:?} is unknown: use credential_use, tool_action, a2a_outbound, a2a_inbound or access_request"
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip_and_only_requests_can_be_granted_for_longer() {
        for kind in ALL {
            assert_eq!(kind.as_str().parse::<ApprovalKind>(), Ok(kind));
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::json!(kind.as_str())
            );
            assert!(kind.offers(Choice::Once) && kind.offers(Choice::Deny));
        }
        assert!(ApprovalKind::CredentialUse.offers(Choice::Always));
        assert!(!ApprovalKind::ToolAction.offers(Choice::ForHour));
        assert!("credential-use".parse::<ApprovalKind>().is_err());
    }
}
