//! Approval fatigue: from the approval history, the narrowest rules that would have
//! spared a person the same approval again and again.
//!
//! A suggestion is made for a request (agent, method, host and port, path, as the vault
//! recorded it) that people approved at least `min_approvals` times in the window and
//! never denied: an `allow` rule for exactly that agent, method, host and path, one
//! priority above the rule that held it, in that rule's layer — the same rule an
//! "always allow" choice creates. Requests held by the dial (no rule) or for other
//! kinds of approval are not suggested for; a rule exactly like the suggestion already
//! existing means it was accepted. [`suggest`] is pure: the caller passes the approvals
//! and rules, and nothing is applied until a person accepts a suggestion.
//!
//! Around it, the two store steps every surface shares (`palisade approvals suggest`
//! and the web UI's suggestions page), so both list the same suggestions under the same
//! numbers and refuse a stale one with the same line: [`load`] reads the history and
//! the rules, [`accept`] creates one suggestion's rule (audited, and in force in every
//! running gateway when it returns).

use palisade_policy::{AgentName, HostPattern, MethodPattern, PathPattern, RuleAction, Scope};
use palisade_store::{Approval, ApprovalStatus, NewRule, RuleRecord, Store, StoreError};
use std::collections::BTreeMap;
use std::time::Duration;

/// Most approvals read from the history (newest first).
const HISTORY_LIMIT: usize = 100_000;

/// Why a suggestion was not accepted. One line each, saying what to do next.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("there is no suggestion {number}: run `palisade approvals suggest` to see them ({count} now)")]
    NoSuchSuggestion { number: usize, count: usize },
    /// The list moved on since it was shown (another was accepted, an approval came in):
    /// number N now names another rule.
    #[error("suggestion {number} is no longer rule {shown} (it is now {now}): look at the suggestions again")]
    Changed {
        number: usize,
        shown: String,
        now: String,
    },
    #[error("{0}")]
    Rule(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The suggestions for approvals decided within `since` of now, given the rules in force.
pub fn load(
    store: &Store,
    since: Duration,
    min_approvals: usize,
) -> Result<Vec<Suggestion>, StoreError> {
    let since_ms = palisade_store::now_ms()
        .saturating_sub(i64::try_from(since.as_millis()).unwrap_or(i64::MAX));
    let approvals = store.list_approvals(None, HISTORY_LIMIT)?;
    let rules = store.list_rules()?;
    Ok(suggest(&approvals, &rules, since_ms, min_approvals))
}

/// Creates the rule of suggestion `number` of `suggestions` (as [`load`] gave them).
/// `shown`: the rule name the person saw under that number, when the list may have
/// changed since (a page); a different suggestion under it is refused.
pub fn accept(
    store: &Store,
    suggestions: &[Suggestion],
    number: usize,
    shown: Option<&str>,
) -> Result<RuleRecord, AcceptError> {
    let Some(suggestion) = suggestions.iter().find(|s| s.number == number) else {
        return Err(AcceptError::NoSuchSuggestion {
            number,
            count: suggestions.len(),
        });
    };
    if let Some(shown) = shown.filter(|shown| *shown != suggestion.rule_name) {
        return Err(AcceptError::Changed {
            number,
            shown: palisade_store::input::clean(shown),
            now: suggestion.rule_name.clone(),
        });
    }
    let rule = suggestion.rule().map_err(AcceptError::Rule)?;
    // The rule only answers the hold of the rule that held these requests.
    if !store
        .list_rules()?
        .iter()
        .any(|r| r.name == suggestion.held_by)
    {
        return Err(AcceptError::Rule(format!(
            "the rule that held these requests, {}, no longer exists: look at the suggestions again",
            suggestion.held_by
        )));
    }
    Ok(store.create_rule(rule)?)
}

/// One proposed rule and what it would have allowed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Suggestion {
    /// 1-based, in the order shown (most approvals first).
    pub number: usize,
    pub agent: AgentName,
    pub method: String,
    pub host: String,
    pub path: String,
    /// The rule that held these requests.
    pub held_by: String,
    /// How many approvals it would have spared.
    pub approvals: usize,
    /// Of how many different requests (query and body): the rule lets through any, so
    /// a person should know whether they approved one request again and again or many.
    pub different_requests: usize,
    /// Who approved them, with how many each.
    pub approvers: BTreeMap<String, usize>,
    pub first_at_ms: i64,
    pub last_at_ms: i64,
    /// The rule's name if accepted.
    pub rule_name: String,
    /// The rule's priority and layer (one above the holding rule, in its layer).
    pub priority: i64,
    pub scope: String,
}

impl Suggestion {
    /// The rule accepting this suggestion creates.
    pub fn rule(&self) -> Result<NewRule, String> {
        Ok(NewRule {
            name: self.rule_name.clone(),
            host: HostPattern::parse(&self.host).map_err(|e| e.to_string())?,
            path: Some(PathPattern::parse(&self.path).map_err(|e| e.to_string())?),
            method: MethodPattern::exact(&self.method).map_err(|e| e.to_string())?,
            action: RuleAction::Allow,
            agent: Some(self.agent.clone()),
            priority: self.priority,
            expires_at_ms: None,
            body_contains: None,
            scope: self.scope.parse::<Scope>().map_err(|e| e.to_string())?,
            approval_timeout_ms: None,
        })
    }

    /// What it would have allowed, in one line.
    pub fn explain(&self) -> String {
        let approvers = self
            .approvers
            .iter()
            .map(|(who, count)| format!("{who} ×{count}"))
            .collect::<Vec<_>>()
            .join(", ");
        let of = match self.different_requests {
            1 => "all of the same query and body".to_string(),
            n if n >= MAX_VARIANTS => format!("of {n} or more different queries or bodies"),
            n => format!("of {n} different queries or bodies"),
        };
        format!(
            "allow {} {} {}{} (with any query and any body) without asking: it would have spared {} approvals, {of} (by {approvers}); held by rule {}",
            self.agent, self.method, self.host, self.path, self.approvals, self.held_by
        )
    }
}

/// Most different requests told apart in one group.
const MAX_VARIANTS: usize = 1000;

#[derive(Default)]
struct Group {
    approved: usize,
    /// The approved requests' query and body digest, each once (at most
    /// [`MAX_VARIANTS`]).
    variants: std::collections::BTreeSet<(String, String)>,
    denied: usize,
    approvers: BTreeMap<String, usize>,
    first_at_ms: i64,
    last_at_ms: i64,
}

/// Suggestions from `approvals` decided at or after `since_ms`, given the `rules` in force.
pub fn suggest(
    approvals: &[Approval],
    rules: &[RuleRecord],
    since_ms: i64,
    min_approvals: usize,
) -> Vec<Suggestion> {
    let mut groups: BTreeMap<(AgentName, String, String, String, String), Group> = BTreeMap::new();
    for approval in approvals {
        if approval.kind != "credential_use" || approval.decided_at_ms.unwrap_or(0) < since_ms {
            continue;
        }
        let field = |name: &str| approval.context.get(name).and_then(|v| v.as_str());
        let (Some(method), Some(host), Some(path), Some(rule)) =
            (field("method"), field("host"), field("path"), field("rule"))
        else {
            continue;
        };
        // Approvals of the same path on another port were for another service.
        let Some(host) = crate::engine::host_with_port(host, &approval.context) else {
            continue;
        };
        let key = (
            approval.agent.clone(),
            method.to_string(),
            host,
            path.to_string(),
            rule.to_string(),
        );
        let group = groups.entry(key).or_default();
        let at = approval.decided_at_ms.unwrap_or(approval.created_at_ms);
        match approval.status {
            ApprovalStatus::Approved => {
                group.approved += 1;
                if group.variants.len() < MAX_VARIANTS {
                    let query = field("url")
                        .and_then(|url| url.split_once('?'))
                        .map(|(_, query)| query.to_string())
                        .unwrap_or_default();
                    let body = field("bodySha256").unwrap_or_default().to_string();
                    group.variants.insert((query, body));
                }
                let who = approval
                    .approver_name
                    .clone()
                    .or_else(|| approval.approver.clone())
                    .unwrap_or_else(|| "someone".into());
                *group.approvers.entry(who).or_default() += 1;
                group.first_at_ms = if group.first_at_ms == 0 {
                    at
                } else {
                    group.first_at_ms.min(at)
                };
                group.last_at_ms = group.last_at_ms.max(at);
            }
            ApprovalStatus::Denied => group.denied += 1,
            _ => {}
        }
    }
    let mut suggestions: Vec<Suggestion> = groups
        .into_iter()
        .filter(|(_, group)| group.approved >= min_approvals.max(1) && group.denied == 0)
        .filter_map(|((agent, method, host, path, held_by), group)| {
            // Only requests a rule still in force held, written exactly.
            let holding = rules.iter().find(|rule| rule.name == held_by)?;
            if host.contains('*') || path.contains('*') || MethodPattern::exact(&method).is_err() {
                return None;
            }
            let exists = rules.iter().any(|rule| {
                rule.action == "allow"
                    && rule.agent.as_ref() == Some(&agent)
                    && rule.host_pattern == host
                    && rule.path_pattern.as_deref() == Some(path.as_str())
                    && rule.method.eq_ignore_ascii_case(&method)
            });
            if exists {
                return None;
            }
            let digest = {
                use sha2::Digest;
                let hash = sha2::Sha256::new()
                    .chain_update(format!("{agent} {method} {host}{path}").as_bytes())
                    .finalize();
                hex::encode(&hash[..4])
            };
            let suggestion = Suggestion {
                number: 0,
                rule_name: format!("suggested-{agent}-{digest}"),
                priority: holding.priority.saturating_add(1),
                scope: holding.scope.clone(),
                agent,
                method,
                host,
                path,
                held_by,
                approvals: group.approved,
                different_requests: group.variants.len(),
                approvers: group.approvers,
                first_at_ms: group.first_at_ms,
                last_at_ms: group.last_at_ms,
            };
            Some(suggestion)
        })
        .collect();
    suggestions.sort_by(|a, b| {
        b.approvals
            .cmp(&a.approvals)
            .then_with(|| a.agent.cmp(&b.agent))
            .then_with(|| (&a.host, &a.path, &a.method).cmp(&(&b.host, &b.path, &b.method)))
    });
    for (index, suggestion) in suggestions.iter_mut().enumerate() {
        suggestion.number = index + 1;
    }
    suggestions
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 24 * 60 * 60 * 1000;
    const NOW: i64 = 1_900_000_000_000;

    fn approval(
        id: usize,
        agent: &str,
        method: &str,
        path: &str,
        status: ApprovalStatus,
        who: &str,
        days_ago: i64,
    ) -> Approval {
        Approval {
            id: format!("apr_{id}"),
            kind: "credential_use".into(),
            agent: agent.parse().unwrap(),
            status,
            title: String::new(),
            lines: Vec::new(),
            detail: String::new(),
            // As an approval recorded before the vault wrote the port: its URL has it.
            context: serde_json::json!({
                "method": method, "host": "gmail.googleapis.com", "path": path, "rule": "ask-mail",
                "url": format!("https://gmail.googleapis.com{path}"),
            }),
            created_at_ms: NOW - days_ago * DAY,
            expires_at_ms: NOW,
            decided_at_ms: Some(NOW - days_ago * DAY + 1000),
            approver: Some(who.into()),
            comment: None,
            choice: Some("once".into()),
            approver_channel: Some("cli".into()),
            approver_user: None,
            approver_name: Some(who.into()),
            granted_rule: None,
            holder: None,
            request_key: None,
        }
    }

    fn holding_rule() -> RuleRecord {
        RuleRecord {
            id: 1,
            name: "ask-mail".into(),
            host_pattern: "gmail.googleapis.com".into(),
            path_pattern: None,
            method: "*".into(),
            action: "require_approval".into(),
            rate_limit: None,
            rate_window: None,
            agent: None,
            priority: 5,
            expires_at_ms: None,
            body_contains: None,
            scope: "user".into(),
            created_at_ms: 0,
            approval_timeout_ms: None,
            enabled: true,
        }
    }

    /// A recorded week: the same label request approved daily by two people (the
    /// answer: one rule), a send approved three times but denied once (no rule), a
    /// draft approved twice (below the threshold), and old approvals outside the week.
    fn recorded_week() -> Vec<Approval> {
        use ApprovalStatus::{Approved, Denied};
        let mut week = Vec::new();
        let label = "/gmail/v1/users/me/labels";
        for day in 0..7 {
            let who = if day % 2 == 0 { "Ana" } else { "Bo" };
            week.push(approval(
                week.len(),
                "mailer",
                "POST",
                label,
                Approved,
                who,
                day,
            ));
        }
        let send = "/gmail/v1/users/me/messages/send";
        for day in 0..3 {
            week.push(approval(
                week.len(),
                "mailer",
                "POST",
                send,
                Approved,
                "Ana",
                day,
            ));
        }
        week.push(approval(
            week.len(),
            "mailer",
            "POST",
            send,
            Denied,
            "Ana",
            4,
        ));
        let draft = "/gmail/v1/users/me/drafts";
        for day in 0..2 {
            week.push(approval(
                week.len(),
                "mailer",
                "POST",
                draft,
                Approved,
                "Ana",
                day,
            ));
        }
        for day in 10..20 {
            week.push(approval(
                week.len(),
                "mailer",
                "GET",
                "/old",
                Approved,
                "Ana",
                day,
            ));
        }
        week
    }

    #[test]
    fn a_recorded_week_gives_exactly_the_known_answer() {
        let suggestions = suggest(&recorded_week(), &[holding_rule()], NOW - 7 * DAY, 3);
        assert_eq!(suggestions.len(), 1, "{suggestions:#?}");
        let only = &suggestions[0];
        assert_eq!(only.number, 1);
        assert_eq!(
            (only.method.as_str(), only.path.as_str()),
            ("POST", "/gmail/v1/users/me/labels")
        );
        assert_eq!(only.approvals, 7);
        assert_eq!(only.approvers.get("Ana"), Some(&4));
        assert_eq!(only.approvers.get("Bo"), Some(&3));
        let rule = only.rule().unwrap();
        assert_eq!(rule.action, RuleAction::Allow);
        assert_eq!(rule.agent.as_ref().map(AgentName::as_str), Some("mailer"));
        assert_eq!(rule.priority, 6, "one above the holding rule");
        // The port came from the URL (none named: https's).
        assert_eq!(rule.host.as_str(), "gmail.googleapis.com:443");
        assert_eq!(
            rule.path.as_ref().map(PathPattern::as_str),
            Some("/gmail/v1/users/me/labels")
        );
        assert!(only
            .explain()
            .contains("spared 7 approvals, all of the same query and body (by Ana ×4, Bo ×3)"));
    }

    /// The rule lets any query and body through: the suggestion says whether the
    /// approvals were of one request again and again or of different ones.
    #[test]
    fn a_suggestion_counts_the_different_requests_approved() {
        let mut week = Vec::new();
        for (day, (query, body)) in [("to=a", "1"), ("to=b", "1"), ("to=a", "2"), ("to=a", "1")]
            .into_iter()
            .enumerate()
        {
            let mut approved = approval(
                day,
                "mailer",
                "POST",
                "/send",
                ApprovalStatus::Approved,
                "Ana",
                day as i64,
            );
            approved.context["url"] = format!("https://gmail.googleapis.com/send?{query}").into();
            approved.context["bodySha256"] = body.into();
            week.push(approved);
        }
        let suggestions = suggest(&week, &[holding_rule()], NOW - 7 * DAY, 3);
        assert_eq!(suggestions.len(), 1, "{suggestions:#?}");
        assert_eq!(suggestions[0].approvals, 4);
        assert_eq!(suggestions[0].different_requests, 3);
        assert!(
            suggestions[0]
                .explain()
                .contains("spared 4 approvals, of 3 different queries or bodies"),
            "{}",
            suggestions[0].explain()
        );
    }

    #[test]
    fn a_method_that_reads_as_any_is_never_suggested() {
        let mut week = Vec::new();
        for method in ["ANY", "*", "any", "get"] {
            for day in 0..5 {
                week.push(approval(
                    week.len(),
                    "mailer",
                    method,
                    "/gmail/v1/users/me/labels",
                    ApprovalStatus::Approved,
                    "Ana",
                    day,
                ));
            }
        }
        let suggestions = suggest(&week, &[holding_rule()], NOW - 7 * DAY, 3);
        assert!(suggestions.is_empty(), "{suggestions:#?}");
    }

    #[test]
    fn approvals_on_another_port_are_another_service() {
        let mut week = Vec::new();
        for (port, times) in [(8080u16, 4), (9090, 3)] {
            for day in 0..times {
                let mut approved = approval(
                    week.len(),
                    "mailer",
                    "POST",
                    "/send",
                    ApprovalStatus::Approved,
                    "Ana",
                    day,
                );
                approved.context["host"] = "127.0.0.1".into();
                approved.context["port"] = port.into();
                week.push(approved);
            }
        }
        let suggestions = suggest(&week, &[holding_rule()], NOW - 7 * DAY, 3);
        let hosts: Vec<(&str, usize)> = suggestions
            .iter()
            .map(|s| (s.host.as_str(), s.approvals))
            .collect();
        assert_eq!(hosts, [("127.0.0.1:8080", 4), ("127.0.0.1:9090", 3)]);
        assert_ne!(suggestions[0].rule_name, suggestions[1].rule_name);
        let rule = suggestions[0].rule().unwrap();
        assert!(rule.host.matches("127.0.0.1", 8080));
        assert!(!rule.host.matches("127.0.0.1", 9090));
    }

    #[test]
    fn an_accepted_suggestion_is_not_made_again() {
        let week = recorded_week();
        let first = suggest(&week, &[holding_rule()], NOW - 7 * DAY, 3);
        let accepted = first[0].rule().unwrap();
        let existing = RuleRecord {
            id: 2,
            name: accepted.name,
            host_pattern: accepted.host.as_str().into(),
            path_pattern: accepted.path.map(|p| p.as_str().to_string()),
            method: accepted.method.to_string(),
            action: "allow".into(),
            agent: accepted.agent,
            priority: accepted.priority,
            scope: "user".into(),
            ..holding_rule()
        };
        assert!(suggest(&week, &[holding_rule(), existing], NOW - 7 * DAY, 3).is_empty());
        // The rule that held them is gone: nothing to suggest above.
        assert!(suggest(&week, &[], NOW - 7 * DAY, 3).is_empty());
    }

    #[test]
    fn accepting_checks_the_number_and_what_was_shown_under_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&palisade_store::Home::at(dir.path().join("home"))).unwrap();
        store
            .create_agent(&"mailer".parse().unwrap(), palisade_policy::Profile::Action)
            .unwrap();
        // The rule that held them, as the store has it.
        store
            .create_rule(NewRule {
                name: "ask-mail".into(),
                host: HostPattern::parse("gmail.googleapis.com").unwrap(),
                path: None,
                method: MethodPattern::Any,
                action: RuleAction::RequireApproval,
                agent: None,
                priority: 5,
                expires_at_ms: None,
                body_contains: None,
                scope: Scope::User,
                approval_timeout_ms: None,
            })
            .unwrap();
        let suggestions = suggest(&recorded_week(), &[holding_rule()], NOW - 7 * DAY, 3);
        let shown = suggestions[0].rule_name.clone();
        assert_eq!(
            accept(&store, &suggestions, 2, None)
                .unwrap_err()
                .to_string(),
            "there is no suggestion 2: run `palisade approvals suggest` to see them (1 now)"
        );
        let changed = accept(&store, &suggestions, 1, Some("suggested-mailer-0000"))
            .unwrap_err()
            .to_string();
        assert!(changed.starts_with("suggestion 1 is no longer rule suggested-mailer-0000"));
        assert_eq!(store.list_rules().unwrap().len(), 1, "nothing created");
        let rule = accept(&store, &suggestions, 1, Some(&shown)).unwrap();
        assert_eq!(rule.name, shown);
        assert_eq!(rule.action, "allow");
        assert_eq!(
            rule.path_pattern.as_deref(),
            Some("/gmail/v1/users/me/labels")
        );
    }
}
