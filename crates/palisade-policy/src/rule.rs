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
    #[error(
        "rate window {0:?} is invalid: use e.g. 30s, 1m, 1h, 1d, minute, hour or day (1s to 31d)"
    )]
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
    /// Whole seconds only, so the canonical spelling describes the window exactly.
    pub fn from_duration(d: Duration) -> Result<Self, RuleError> {
        if d.subsec_nanos() == 0 && (1..=MAX_WINDOW_SECONDS).contains(&d.as_secs()) {
            Ok(RateWindow(d))
        } else {
            Err(RuleError::Window(humantime::format_duration(d).to_string()))
        }
    }
}

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;
const MAX_WINDOW_SECONDS: u64 = 31 * DAY;

impl FromStr for RateWindow {
    type Err = RuleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = || RuleError::Window(s.to_string());
        let text = s.trim().to_ascii_lowercase();
        let digits_end = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(digits_end);
        let count: u64 = match number {
            // OneCLI spells windows as a bare unit: "minute", "hour", "day".
            "" => 1,
            digits => digits.parse().map_err(|_| fail())?,
        };
        let unit_seconds = match unit.trim_start() {
            "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => MINUTE,
            "h" | "hr" | "hrs" | "hour" | "hours" => HOUR,
            "d" | "day" | "days" => DAY,
            _ => return Err(fail()),
        };
        // A bare number has no unit and was refused above; "minute" alone counts one.
        if number.is_empty() && unit.len() <= 1 {
            return Err(fail());
        }
        let seconds = count.checked_mul(unit_seconds).ok_or_else(fail)?;
        RateWindow::from_duration(Duration::from_secs(seconds)).map_err(|_| fail())
    }
}
/// Canonical short spelling (`1h`, `30s`, `1d`, `15m`).
impl fmt::Display for RateWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.0.as_secs();
        // The largest unit that divides the window exactly.
        let (count, unit) = match (seconds % DAY, seconds % HOUR, seconds % MINUTE) {
            (0, _, _) => (seconds / DAY, "d"),
            (_, 0, _) => (seconds / HOUR, "h"),
            (_, _, 0) => (seconds / MINUTE, "m"),
            _ => (seconds, "s"),
        };
        write!(f, "{count}{unit}")
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
    /// How long a request this rule holds waits for a person; `None`: the default.
    pub approval_timeout_ms: Option<i64>,
}

/// How the allow rules a person's approval makes are named: "approve for 1 h",
/// "always allow", and an accepted suggestion. Names with these beginnings are kept
/// for them (the store refuses them for other rules).
pub const GRANT_PREFIXES: [&str; 3] = ["approved-1h-", "always-allowed-", "suggested-"];

impl RulePolicy {
    /// Whether this is a person's grant: an allow rule that only answers a hold of the
    /// request it names, never a block, a rate limit or a default deny (evaluated above
    /// them, as an ordinary allow rule it let through what a block below the holding
    /// rule stopped, or what a body-conditional hold let reach other rules).
    ///
    /// Only a rule as narrow as a grant is made counts: one agent, one host and port,
    /// one method, one exact path. A wider rule of such a name (written before these
    /// names were kept, or by hand in the database) is an ordinary allow rule, as it was:
    /// a grant answers holds past the first match, and a wide one would answer them for
    /// everything it covers.
    pub fn is_grant(&self) -> bool {
        self.action == RuleAction::Allow
            && GRANT_PREFIXES
                .iter()
                .any(|prefix| self.name.starts_with(prefix))
            && self.agent.is_some()
            && self.host.is_one_host_and_port()
            && matches!(self.method, MethodPattern::One(_))
            && self.path.as_ref().is_some_and(|path| path.is_exact())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(s: &str) -> Result<RateWindow, RuleError> {
        s.parse()
    }

    #[test]
    fn window_spellings() {
        for (input, seconds, canonical) in [
            ("30s", 30, "30s"),
            ("1m", 60, "1m"),
            ("15m", 900, "15m"),
            ("1h", 3600, "1h"),
            ("1d", 86400, "1d"),
            ("2d", 172800, "2d"),
            ("minute", 60, "1m"),
            ("hour", 3600, "1h"),
            ("day", 86400, "1d"),
            ("1 hour", 3600, "1h"),
            ("90s", 90, "90s"),
            ("120m", 7200, "2h"),
            (" 1H ", 3600, "1h"),
            ("1s", 1, "1s"),
            ("31d", 31 * 86400, "31d"),
        ] {
            let parsed = window(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(parsed.duration(), Duration::from_secs(seconds), "{input}");
            assert_eq!(parsed.to_string(), canonical, "{input}");
            assert_eq!(window(canonical), Ok(parsed));
        }
    }

    #[test]
    fn bad_windows() {
        for input in [
            "",
            "0s",
            "32d",
            "1",
            "h",
            "s",
            "m",
            "1w",
            "-1m",
            "1.5h",
            "1x",
            "hourly",
            "99999999999999999999s",
            "18446744073709551615d",
        ] {
            assert_eq!(
                window(input),
                Err(RuleError::Window(input.to_string())),
                "{input}"
            );
        }
        assert!(RateWindow::from_duration(Duration::from_millis(1500)).is_err());
        assert!(RateWindow::from_duration(Duration::ZERO).is_err());
        assert!(RateWindow::from_duration(Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn scopes() {
        assert_eq!("org".parse(), Ok(Scope::Org));
        assert_eq!("user".parse(), Ok(Scope::User));
        assert!("team".parse::<Scope>().is_err());
    }
}
