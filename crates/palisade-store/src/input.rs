//! What a person types to change the vault, checked once for every way in.
//!
//! The CLI's `secrets` and `rules` commands and the web UI's forms hand the same
//! drafts (plain strings, as typed) to the same functions here, so the same input gets
//! the same one-line error wherever it was typed, and nothing is written until all of
//! it is valid. Patterns, injections and windows are parsed by `palisade-policy`; this
//! module adds what only makes sense for input: name rules, value limits, times written
//! as durations or dates, combinations of fields that would silently mean something
//! else than what was typed, and the preview of a rule against recent requests.

use crate::audit::AuditRecord;
use crate::records::{NewRule, NewSecret};
use crate::{Result, StoreError};
use palisade_policy::rule::RuleError;
use palisade_policy::{
    AgentName, CanonicalPath, HostPattern, Injection, MethodPattern, PathPattern, RateWindow,
    RuleAction, Scope, SecretValue,
};
use std::time::{Duration, UNIX_EPOCH};

/// Larger than any credential we know of (service-account JSON keys are ~2 KiB), small
/// enough that a wrong file (a disk image, /dev/zero) is refused instead of stored.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// Longest `body contains` text of a rule.
pub const MAX_BODY_CONTAINS: usize = 1024;

fn refuse(message: impl Into<String>) -> StoreError {
    StoreError::Input(message.into())
}

/// Text as it may appear in an error line: control and invisible characters shown
/// escaped and long input cut, so nothing typed can forge a second line or flood a terminal.
pub fn clean(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(80)
        .flat_map(|c| {
            // Controls, bidirectional overrides and zero-width characters.
            if c.is_control()
                || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
            {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    if text.chars().count() > 80 {
        out.push('…');
    }
    out
}

/// Secret and rule names appear in tables, logs and audit rows: one short token of
/// letters, digits, `-`, `_` or `.`. Rule names may not be all digits, because rules are
/// also addressed by id.
pub fn check_name(name: &str, what: &str) -> Result<String> {
    let fine = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > 100 || !name.chars().all(fine) {
        return Err(refuse(format!(
            "{what} name {:?} is invalid: use 1-100 letters, digits, '-', '_' or '.'",
            clean(name)
        )));
    }
    if what == "rule" && name.chars().all(|c| c.is_ascii_digit()) {
        return Err(refuse(format!(
            "rule name {name:?} is invalid: it must not be all digits, which is read as a rule id"
        )));
    }
    Ok(name.to_string())
}

/// A secret value as typed or read: one trailing line break is removed (files and
/// pasted text end with one); empty or larger than [`MAX_SECRET_BYTES`] is refused.
pub fn secret_value(mut text: String) -> Result<SecretValue> {
    if text.ends_with("\r\n") {
        text.truncate(text.len() - 2);
    } else if text.ends_with('\n') {
        text.truncate(text.len() - 1);
    }
    let value = SecretValue::new(text);
    if value.expose().is_empty() {
        return Err(refuse(
            "the secret value is empty; give the credential itself",
        ));
    }
    if value.expose().len() > MAX_SECRET_BYTES {
        return Err(refuse(format!(
            "the secret value is larger than {} KiB; is this the right credential?",
            MAX_SECRET_BYTES / 1024
        )));
    }
    Ok(value)
}

/// Refuses a secret value no injection can send whole: each puts it in a header, a
/// query or a path, where a line break, tab or other control character either cannot
/// go or changes what the upstream reads. (A pasted value with a line break inside
/// was stored, and then failed on every use.) Says nothing of the value itself.
pub fn check_sendable(value: &SecretValue) -> Result<()> {
    check_one_line("the secret value", value.expose())
}

/// Refuses `what` (a secret value, a chat platform's token) if it holds a character a
/// credential never has and a paste often brings: a control character (line break,
/// tab, NUL), whitespace other than a plain space (Unicode line and paragraph
/// separators, a no-break space) or an invisible one (a zero-width space, a byte order
/// mark). Says nothing of the text itself.
pub fn check_one_line(what: &str, text: &str) -> Result<()> {
    let odd = |c: char| {
        c.is_control()
            || (c.is_whitespace() && c != ' ')
            || palisade_policy::sanitize::is_invisible(c)
    };
    if text.chars().any(odd) {
        return Err(refuse(format!(
            "{what} holds a line break, tab, invisible or other control character inside it; a credential is one line of visible text: check what was pasted"
        )));
    }
    Ok(())
}

/// A point in time written as a duration from now (`2h`, `7d`) or an RFC 3339 UTC time
/// (`2026-12-01T00:00:00Z`). `future` says which side of now a duration counts toward
/// (and refuses a date already past); `what` names the field in errors.
pub fn parse_time(text: &str, what: &str, future: bool, now_ms: i64) -> Result<i64> {
    let text = text.trim();
    if let Ok(span) = humantime::parse_duration(text) {
        if span.is_zero() {
            return Err(refuse(format!(
                "{what} {text:?} is zero; give a positive duration such as 30m or 2h"
            )));
        }
        let span = i64::try_from(span.as_millis()).unwrap_or(i64::MAX);
        return Ok(if future {
            now_ms.saturating_add(span)
        } else {
            now_ms.saturating_sub(span)
        });
    }
    if let Ok(time) = humantime::parse_rfc3339_weak(text) {
        let ms = time
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis();
        let ms = i64::try_from(ms).unwrap_or(i64::MAX);
        if future && ms <= now_ms {
            return Err(refuse(format!(
                "{what} {text:?} is in the past; give a future time or a duration such as 2h"
            )));
        }
        return Ok(ms);
    }
    Err(refuse(format!(
        "{what} {:?} is neither a duration (e.g. 30m, 2h, 7d) nor an RFC 3339 UTC time (e.g. 2026-12-01T00:00:00Z)",
        clean(text)
    )))
}

/// A duration such as `10m`, `1h`: `what` names the field in errors.
pub fn parse_duration(text: &str, what: &str) -> Result<Duration> {
    humantime::parse_duration(text.trim()).map_err(|_| {
        refuse(format!(
            "{what} {:?} is not a duration such as 10m or 1h",
            clean(text)
        ))
    })
}

/// A duration the way a person types it back: whole days as `90d`, whole hours as
/// `36h`, anything else as humantime writes it (whose months make 90 days read
/// `2months 29days 2h 52m 48s`).
pub fn duration_text(span: Duration) -> String {
    let secs = span.as_secs();
    let whole = span.subsec_nanos() == 0 && secs > 0;
    if whole && secs.is_multiple_of(86_400) {
        format!("{}d", secs / 86_400)
    } else if whole && secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else {
        humantime::format_duration(span).to_string()
    }
}

/// Agent names as typed, each checked.
fn agent_names(names: &[String]) -> Result<Vec<AgentName>> {
    let mut agents = Vec::with_capacity(names.len());
    for name in names {
        let agent = AgentName::new(name).map_err(|e| refuse(e.to_string()))?;
        if !agents.contains(&agent) {
            agents.push(agent);
        }
    }
    Ok(agents)
}

/// A new secret as typed, without its value (the CLI asks for the value only once
/// everything else is known to be valid).
#[derive(Clone, Debug, Default)]
pub struct SecretDraft {
    pub name: String,
    pub host_pattern: String,
    pub path_pattern: Option<String>,
    /// `bearer`, `anthropic`, `header:NAME[:FORMAT]`, `query:NAME`, `path-template:…`
    pub inject: String,
    pub agents: Vec<String>,
    pub priority: i64,
    /// Never granted to, nor injected for, a research-profile agent.
    pub sensitive: bool,
}

/// A [`SecretDraft`] whose every field parsed.
#[derive(Clone, Debug)]
pub struct CheckedSecret {
    pub name: String,
    pub host: HostPattern,
    pub path: Option<PathPattern>,
    pub injection: Injection,
    pub agents: Vec<AgentName>,
    pub priority: i64,
    pub sensitive: bool,
}

impl SecretDraft {
    /// Parses every field; the store checks names and agents against what exists
    /// ([`crate::Store::check_new_secret`]).
    pub fn check(&self) -> Result<CheckedSecret> {
        let name = check_name(&self.name, "secret")?;
        let host = HostPattern::parse(&self.host_pattern).map_err(|e| refuse(e.to_string()))?;
        let path = self
            .path_pattern
            .as_deref()
            .map(PathPattern::parse)
            .transpose()
            .map_err(|e| refuse(e.to_string()))?;
        let injection: Injection = self
            .inject
            .parse()
            .map_err(|e: palisade_policy::InjectionError| refuse(e.to_string()))?;
        Ok(CheckedSecret {
            name,
            host,
            path,
            injection,
            agents: agent_names(&self.agents)?,
            priority: self.priority,
            sensitive: self.sensitive,
        })
    }
}

impl CheckedSecret {
    pub fn with_value(self, value: SecretValue) -> NewSecret {
        NewSecret {
            name: self.name,
            host: self.host,
            path: self.path,
            injection: self.injection,
            value,
            agents: self.agents,
            priority: self.priority,
            sensitive: self.sensitive,
        }
    }
}

/// A rule as typed: every field a string (or a number the interface already parsed),
/// empty fields left `None`.
#[derive(Clone, Debug, Default)]
pub struct RuleDraft {
    pub name: String,
    pub host_pattern: String,
    pub path_pattern: Option<String>,
    /// `GET`, `POST`, … or `*` for any.
    pub method: String,
    /// `allow`, `block`, `rate_limit` or `require_approval`.
    pub action: String,
    pub rate_limit: Option<u32>,
    pub rate_window: Option<String>,
    pub agent: Option<String>,
    pub priority: i64,
    /// A duration from now or an RFC 3339 time.
    pub expires: Option<String>,
    pub body_contains: Option<String>,
    /// `org` or `user`.
    pub scope: String,
    /// `require_approval` only: how long a held request waits for a person (`5m`,
    /// `1h`; `None`: the gateway's default).
    pub approval_timeout: Option<String>,
    /// When editing: the rule's current expiry. `expires` naming exactly this time
    /// keeps it, even if it has passed (an edit need not revive an expired rule).
    pub current_expires_at_ms: Option<i64>,
}

/// The shortest and longest approval timeout a rule may set.
pub const MIN_APPROVAL_TIMEOUT: Duration = Duration::from_secs(1);
pub const MAX_APPROVAL_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// `2026-12-01T00:00:00.000Z`: how an expiry is shown for editing (milliseconds kept,
/// so an unchanged field names exactly the stored time).
pub fn format_time(ms: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(time).to_string()
}

impl RuleDraft {
    /// The draft that describes `rule` as it is (the starting point of an edit).
    pub fn from_record(rule: &crate::RuleRecord) -> RuleDraft {
        RuleDraft {
            name: rule.name.clone(),
            host_pattern: rule.host_pattern.clone(),
            path_pattern: rule.path_pattern.clone(),
            method: rule.method.clone(),
            action: rule.action.clone(),
            rate_limit: rule.rate_limit,
            rate_window: rule.rate_window.clone(),
            agent: rule.agent.as_ref().map(ToString::to_string),
            priority: rule.priority,
            expires: rule.expires_at_ms.map(format_time),
            body_contains: rule.body_contains.clone(),
            scope: rule.scope.clone(),
            approval_timeout: rule.approval_timeout_ms.map(|ms| {
                humantime::format_duration(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
                    .to_string()
            }),
            current_expires_at_ms: rule.expires_at_ms,
        }
    }

    /// Parses every field into a rule the store can write; `now_ms` is when a relative
    /// expiry counts from.
    pub fn check(&self, now_ms: i64) -> Result<NewRule> {
        let name = check_name(&self.name, "rule")?;
        if let Some(prefix) = palisade_policy::rule::GRANT_PREFIXES
            .iter()
            .find(|prefix| name.starts_with(*prefix))
        {
            return Err(refuse(format!(
                "rule names starting with {prefix} are kept for the rules a person's approval makes; pick another name"
            )));
        }
        let host = HostPattern::parse(&self.host_pattern).map_err(|e| refuse(e.to_string()))?;
        let path = self
            .path_pattern
            .as_deref()
            .map(PathPattern::parse)
            .transpose()
            .map_err(|e| refuse(e.to_string()))?;
        let method = MethodPattern::parse(&self.method).map_err(|e| refuse(e.to_string()))?;
        let action = parse_action(&self.action, self.rate_limit, self.rate_window.as_deref())?;
        let agent = self
            .agent
            .as_deref()
            .map(AgentName::new)
            .transpose()
            .map_err(|e| refuse(e.to_string()))?;
        let scope: Scope = self
            .scope
            .parse()
            .map_err(|e: RuleError| refuse(e.to_string()))?;
        let expires_at_ms = match self.expires.as_deref().map(str::trim) {
            None | Some("never") => None,
            Some(text) => match (
                self.current_expires_at_ms,
                parse_time(text, "expires", false, now_ms),
            ) {
                (Some(current), Ok(at))
                    if at == current && humantime::parse_duration(text).is_err() =>
                {
                    Some(current)
                }
                _ => Some(parse_time(text, "expires", true, now_ms)?),
            },
        };
        let approval_timeout_ms = match self.approval_timeout.as_deref() {
            None => None,
            Some(_) if action != RuleAction::RequireApproval => {
                return Err(refuse(
                    "an approval timeout applies only to the action require_approval",
                ))
            }
            Some(text) => {
                let duration = parse_duration(text, "approval timeout")?;
                if !(MIN_APPROVAL_TIMEOUT..=MAX_APPROVAL_TIMEOUT).contains(&duration) {
                    return Err(refuse("the approval timeout must be between 1s and 7d"));
                }
                Some(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX))
            }
        };
        match self.body_contains.as_deref() {
            Some("") => {
                return Err(refuse(
                    "body contains is empty; give the text a body must contain, or leave it out",
                ))
            }
            Some(text) if text.len() > MAX_BODY_CONTAINS => {
                return Err(refuse(format!(
                    "body contains is longer than {MAX_BODY_CONTAINS} bytes; give a shorter, distinctive text"
                )))
            }
            _ => {}
        }
        Ok(NewRule {
            name,
            host,
            path,
            method,
            action,
            agent,
            priority: self.priority,
            expires_at_ms,
            body_contains: self.body_contains.clone(),
            scope,
            approval_timeout_ms,
        })
    }
}

/// Turns the action and the rate fields into one action, refusing combinations that
/// would silently mean something else than what was typed.
pub fn parse_action(
    action: &str,
    rate_limit: Option<u32>,
    rate_window: Option<&str>,
) -> Result<RuleAction> {
    let action = match action {
        "allow" => RuleAction::Allow,
        "block" => RuleAction::Block,
        "require_approval" => RuleAction::RequireApproval,
        "rate_limit" => {
            let (Some(limit), Some(window)) = (rate_limit, rate_window) else {
                return Err(refuse(
                    "a rate_limit rule needs a rate limit N and a rate window (e.g. 3 per 1h)",
                ));
            };
            if limit == 0 {
                return Err(refuse(
                    "a rate limit of 0 would admit nothing; use the action block instead",
                ));
            }
            let window: RateWindow = window
                .parse()
                .map_err(|e: RuleError| refuse(e.to_string()))?;
            return Ok(RuleAction::RateLimit { limit, window });
        }
        other => return Err(refuse(RuleError::Action(clean(other)).to_string())),
    };
    if rate_limit.is_some() || rate_window.is_some() {
        return Err(refuse(format!(
            "a rate limit and rate window apply only to the action rate_limit, not {}",
            action.kind()
        )));
    }
    Ok(action)
}

/// Whether a request the audit log recorded (agent, method, host, path) would match
/// `rule` by its host, path, method and agent binding. Bodies are not kept, so a
/// `body_contains` condition is not checked; expiry is not either (the preview asks
/// what the rule would have matched). Nor are ports: a row names the host without
/// the port, so a rule for one port (`127.0.0.1:8080`) is previewed against the
/// requests to every port of its host, more than it will match.
pub fn rule_would_match(rule: &NewRule, row: &AuditRecord) -> bool {
    let entry = &row.entry;
    let (Some(host), Some(path), Some(method)) = (&entry.host, &entry.path, &entry.method) else {
        return false;
    };
    let Ok(method) = http::Method::from_bytes(method.as_bytes()) else {
        return false;
    };
    let Ok(path) = CanonicalPath::parse(path) else {
        return false;
    };
    let agent_fits = match &rule.agent {
        None => true,
        Some(agent) => entry.agent.as_deref() == Some(agent.as_str()),
    };
    agent_fits
        && rule.host.matches_host_on_any_port(host)
        && rule.method.matches(&method)
        && rule.path.as_ref().is_none_or(|pattern| {
            // As the gateway compares: an allow strictly (`;parameters` kept).
            if rule.action == RuleAction::Allow {
                pattern.matches_strictly(&path)
            } else {
                pattern.matches(&path)
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(action: &str) -> RuleDraft {
        RuleDraft {
            name: "r".into(),
            host_pattern: "api.example.com".into(),
            method: "*".into(),
            action: action.into(),
            scope: "user".into(),
            ..RuleDraft::default()
        }
    }

    #[test]
    fn durations_read_back_as_typed() {
        let parsed = |text: &str| duration_text(humantime::parse_duration(text).unwrap());
        assert_eq!(parsed("90d"), "90d");
        assert_eq!(parsed("52weeks"), "364d");
        assert_eq!(parsed("36h"), "36h");
        assert_eq!(parsed("90m"), "1h 30m");
        assert_eq!(parsed("1day 30m"), "1day 30m");
    }

    #[test]
    fn rate_fields_belong_to_rate_limit_only() {
        assert!(parse_action("rate_limit", None, Some("1h")).is_err());
        assert!(parse_action("rate_limit", Some(3), None).is_err());
        assert!(parse_action("rate_limit", Some(0), Some("1h")).is_err());
        assert!(parse_action("block", Some(3), None).is_err());
        assert!(parse_action("allow", None, Some("1h")).is_err());
        assert!(matches!(
            parse_action("block", None, None),
            Ok(RuleAction::Block)
        ));
        assert!(parse_action("deny", None, None).is_err());
    }

    #[test]
    fn names_values_and_times() {
        assert!(check_name("gmail-send.v2", "secret").is_ok());
        assert!(check_name("", "secret").is_err());
        assert!(check_name("has space", "rule").is_err());
        assert!(check_name("42", "rule").is_err());
        assert!(check_name("42", "secret").is_ok());
        assert_eq!(secret_value("k\n".into()).unwrap().expose(), "k");
        assert_eq!(secret_value("k\r\n".into()).unwrap().expose(), "k");
        assert!(secret_value("\n".into()).is_err());
        assert!(secret_value("x".repeat(MAX_SECRET_BYTES + 1)).is_err());
        assert_eq!(
            parse_time("2h", "expires", true, 1_000).ok(),
            Some(7_201_000)
        );
        assert_eq!(parse_time("1m", "since", false, 100_000).ok(), Some(40_000));
        assert_eq!(
            parse_time("1970-01-02T00:00:00Z", "since", false, 0).ok(),
            Some(86_400_000)
        );
        assert!(parse_time("1970-01-02T00:00:00Z", "expires", true, i64::MAX / 2).is_err());
        assert!(parse_time("soon", "expires", true, 0).is_err());
        assert!(parse_time("0s", "expires", true, 0).is_err());
    }

    #[test]
    fn an_unchanged_past_expiry_is_kept_and_never_removes_it() {
        let mut draft = rule("block");
        draft.current_expires_at_ms = Some(1_000_123);
        draft.expires = Some(format_time(1_000_123));
        assert_eq!(
            draft.check(5_000_000).unwrap().expires_at_ms,
            Some(1_000_123)
        );
        draft.expires = Some(format_time(2_000_000));
        assert!(
            draft.check(5_000_000).is_err(),
            "another past time is refused"
        );
        draft.expires = Some("never".into());
        assert_eq!(draft.check(5_000_000).unwrap().expires_at_ms, None);
        draft.expires = Some("1h".into());
        assert_eq!(
            draft.check(5_000_000).unwrap().expires_at_ms,
            Some(8_600_000)
        );
    }

    #[test]
    fn drafts_refuse_what_would_mean_something_else() {
        assert!(rule("block").check(0).is_ok());
        let mut empty_body = rule("block");
        empty_body.body_contains = Some(String::new());
        assert!(empty_body.check(0).is_err());
        let mut bad_scope = rule("block");
        bad_scope.scope = "team".into();
        assert!(bad_scope.check(0).is_err());
        let error = rule("deny\nforged line").check(0).unwrap_err().to_string();
        assert!(!error.contains('\n'), "{error}");
        let secret = SecretDraft {
            name: "s".into(),
            host_pattern: "a.example".into(),
            inject: "bearer".into(),
            agents: vec!["a".into(), "a".into()],
            ..SecretDraft::default()
        };
        assert_eq!(secret.check().unwrap().agents.len(), 1);
    }

    #[test]
    fn previews_match_host_path_method_and_agent() {
        let mut draft = rule("block");
        draft.path_pattern = Some("/admin/*".into());
        draft.agent = Some("mailer".into());
        let rule = draft.check(0).unwrap();
        let row = |agent: &str, path: &str| AuditRecord {
            id: 1,
            at_ms: 0,
            entry: crate::AuditEntry {
                event: "request".into(),
                agent: Some(agent.into()),
                method: Some("GET".into()),
                host: Some("api.example.com".into()),
                path: Some(path.into()),
                ..crate::AuditEntry::default()
            },
            hash: String::new(),
        };
        assert!(rule_would_match(&rule, &row("mailer", "/admin/users")));
        assert!(!rule_would_match(&rule, &row("other", "/admin/users")));
        assert!(!rule_would_match(&rule, &row("mailer", "/public")));
    }
}
