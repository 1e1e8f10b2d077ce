//! Rows as the CLI and the gateway see them (no secret values).

use palisade_policy::{
    AgentName, HostPattern, Injection, MethodPattern, PathPattern, Profile, RuleAction, Scope,
    SecretValue,
};
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct AgentRecord {
    pub name: AgentName,
    pub profile: Profile,
    pub created_at_ms: i64,
    /// Whether a token for the standalone TCP listener has been issued.
    pub has_token: bool,
    /// Free-form JSON settings owned by the host (model, provider, instructions path…); `{}` by default.
    pub settings: serde_json::Value,
}

/// A secret without its value.
#[derive(Clone, Debug, Serialize)]
pub struct SecretRecord {
    pub id: i64,
    pub name: String,
    pub host_pattern: String,
    pub path_pattern: Option<String>,
    pub injection: String,
    pub agents: Vec<AgentName>,
    pub priority: i64,
    /// Never granted to, nor injected for, a research-profile agent.
    pub sensitive: bool,
    pub created_at_ms: i64,
}

pub struct NewSecret {
    pub name: String,
    pub host: HostPattern,
    pub path: Option<PathPattern>,
    pub injection: Injection,
    pub value: SecretValue,
    /// Each must exist, else `NotFound` and nothing is written.
    pub agents: Vec<AgentName>,
    pub priority: i64,
    /// A credential to data or actions that matter (mail, payments, code): never
    /// granted to a research-profile agent.
    pub sensitive: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct RuleRecord {
    pub id: i64,
    pub name: String,
    pub host_pattern: String,
    pub path_pattern: Option<String>,
    pub method: String,
    /// `allow` | `block` | `rate_limit` | `require_approval`
    pub action: String,
    pub rate_limit: Option<u32>,
    /// Canonical window spelling, e.g. `1h`.
    pub rate_window: Option<String>,
    pub agent: Option<AgentName>,
    pub priority: i64,
    pub expires_at_ms: Option<i64>,
    pub body_contains: Option<String>,
    /// `org` | `user`
    pub scope: String,
    pub created_at_ms: i64,
    /// How long a request this rule holds waits for a person (`require_approval` only;
    /// `None`: the gateway's default).
    pub approval_timeout_ms: Option<i64>,
    /// A disabled rule is kept but the gateway ignores it.
    pub enabled: bool,
}

#[derive(Clone, Debug)]
pub struct NewRule {
    pub name: String,
    pub host: HostPattern,
    pub path: Option<PathPattern>,
    pub method: MethodPattern,
    pub action: RuleAction,
    /// Must exist if given.
    pub agent: Option<AgentName>,
    pub priority: i64,
    pub expires_at_ms: Option<i64>,
    pub body_contains: Option<String>,
    pub scope: Scope,
    /// See [`RuleRecord::approval_timeout_ms`].
    pub approval_timeout_ms: Option<i64>,
}

/// A host folder agents may mount at `/mnt/NAME`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FolderRecord {
    pub name: String,
    /// Canonical host path.
    pub path: std::path::PathBuf,
    /// Holds data worth stealing: research agents may not mount it.
    pub sensitive: bool,
    /// The agents that mount it, by name.
    pub mounts: Vec<FolderMount>,
    pub created_at_ms: i64,
}

/// One agent's mount of a folder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FolderMount {
    pub agent: AgentName,
    pub writable: bool,
}

/// One entry of the agent-to-agent allow-list: `from` may message `to`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AgentLink {
    pub from: AgentName,
    pub to: AgentName,
    /// A person approves each message `from` sends to `to` before it leaves.
    pub approve_outbound: bool,
    /// A person approves each message from `from` before `to` receives it.
    pub approve_inbound: bool,
    pub created_at_ms: i64,
}
