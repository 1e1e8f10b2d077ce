//! Rules: what the vault does with a request that matches a host/path/method.

use crate::names::AgentName;
use crate::pattern::{HostPattern, MethodPattern, PathPattern};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A sliding-window length. Accepts `30s`, `1m`, `15m`, `1h`, `1d`, and OneCLI's
/// `minute`, `hour`, `day`. Between 1 s and 31 days.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateWindow(Duration);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuleError {
    #[error("rate window {0:?} is invalid: use e.g. 30s, 1m, 1h, 1d, minute, hour or day (1s to 31d)")]
    Window(String),
    #[error("action {0:?} is unknown: use allow, block, rate_limit or require_approval")]
    Action(String),
    #[error("scope {0:?} is unknown: use org or user")]
    Scope(String),
}

impl RateWindow {
    pub fn duration(self) -> Duration {
        self.0
    }
    pub fn from_duration(d: Duration) -> Result<Self, RuleError> {
        todo!("{d:?}")
    }
}
impl FromStr for RateWindow {
    type Err = RuleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        todo!("{s}")
    }
}
/// Canonical short spelling (`1h`, `30s`, `1d`, `15m`).
impl fmt::Display for RateWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let _ = f;
        todo!()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleAction {
    Allow,
    Block,
    RateLimit { limit: u32, window: RateWindow },
    RequireApproval,
}

impl RuleAction {
    /// `allow`, `block`, `rate_limit`, `require_approval`.
    pub fn kind(&self) -> &'static str {
        match self {
            RuleAction::Allow => "allow",
            RuleAction::Block => "block",
            RuleAction::RateLimit { .. } => "rate_limit",
            RuleAction::RequireApproval => "require_approval",
        }
    }
}

/// Policy layers: `Org` is the outer boundary set by an admin, `User` grants within it.
/// The stricter of the two layers' verdicts wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    Org,
    User,
}
impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Org => "org",
            Scope::User => "user",
        }
    }
}
impl FromStr for Scope {
    type Err = RuleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "org" => Ok(Scope::Org),
            "user" => Ok(Scope::User),
            other => Err(RuleError::Scope(other.to_string())),
        }
    }
}

#[derive(Clone, Debug)]
pub struct RulePolicy {
    pub id: i64,
    pub name: String,
    pub host: HostPattern,
    pub path: Option<PathPattern>,
    pub method: MethodPattern,
    pub action: RuleAction,
    /// `None`: applies to every agent.
    pub agent: Option<AgentName>,
    /// Higher is evaluated first (default 0).
    pub priority: i64,
    /// Unix milliseconds after which the rule no longer matches.
    pub expires_at_ms: Option<i64>,
    /// The rule matches only if the request body (the prefix the vault read) contains this.
    pub body_contains: Option<String>,
    pub scope: Scope,
}
