//! Evaluation of one request against the policy set.
//!
//! Per layer (org, user), the first matching rule wins, in order: priority (higher
//! first), then path specificity, then host specificity, then id (older first). A rule
//! matches when host, path (if any), method, agent binding (if any) match, it has not
//! expired at `now_ms`, and its `body_contains` (if any) is found in the body prefix
//! (a rule with `body_contains` never matches when `body` is `None`).
//! The two layers combine by strictness: block > require_approval > rate_limit > allow,
//! and every matched rate limit is reported so the gateway counts each of them.
//! A person's grant (`RulePolicy::is_grant`: the narrow allow rule an approval's
//! "always" or "1 h" makes) takes no part in that: it only turns a `require_approval`
//! into an allow when it names the request, sits above the holding rule and is in the
//! layer of every rule holding it.
//! With no blocking rule, an `Action`-profile agent is refused (`DefaultDeny`) when no
//! applicable, unexpired, non-block rule in either layer and no secret granted to it
//! names the host (host and port match only; path and method are not considered for
//! naming). A host pattern with a port (`127.0.0.1:8080`) matches only requests to that
//! port (`RequestFacts::port`), for rules and secrets alike; one without matches every
//! port. The secret to inject is the one granted to the agent whose host and path match,
//! choosing the most specific path (a secret without path pattern is least specific),
//! then higher priority, then more specific host, then lower id.

use crate::canonical::CanonicalPath;
use crate::dial::ApprovalFrequency;
use crate::names::{AgentName, Profile};
use crate::pattern::{MethodPattern, PathPattern};
use crate::rule::{RuleAction, RulePolicy, Scope};
use crate::secret::SecretPolicy;
use std::cmp::Reverse;

/// All secrets and rules in force, as loaded from the store.
#[derive(Clone, Debug, Default)]
pub struct PolicySet {
    secrets: Vec<SecretPolicy>,
    rules: Vec<RulePolicy>,
}

/// What the gateway knows about a request when it asks for a verdict.
#[derive(Clone, Copy, Debug)]
pub struct RequestFacts<'a> {
    pub agent: &'a AgentName,
    pub profile: Profile,
    pub method: &'a http::Method,
    /// Whether the request asks to become a WebSocket (whose frames are never judged).
    pub opens_stream: bool,
    /// Lower-case host without port; IPv6 without brackets.
    pub host: &'a str,
    /// The port the request goes to: the one it names, or its scheme's default (443
    /// for https and CONNECT tunnels, 80 for http). A host pattern with a port matches
    /// only this port.
    pub port: u16,
    /// Path without query, canonical (every pattern compares with this one form).
    pub path: &'a CanonicalPath,
    /// The body read for rules with `body_contains`, if it was read.
    pub body: Option<&'a [u8]>,
    pub now_ms: i64,
    /// The agent's dial: when a person approves a request that carries a credential.
    pub approvals: ApprovalFrequency,
    /// Whether the request is one of the agent's calls to its own model
    /// ([`crate::models::ModelApi`]), which the dial never holds.
    pub model_call: bool,
}

#[derive(Clone, Debug)]
pub enum Verdict<'a> {
    /// Forward (after counting `Evaluation::rate_limits`).
    Allow,
    /// Forward after a person approves (after counting rate limits).
    RequireApproval { rule: &'a RulePolicy },
    /// Forward after a person approves because the agent's dial asks for it: the
    /// request carries a credential and `frequency` covers it (after counting rate
    /// limits). No rule asked; `FirstUse` may be skipped by the gateway when a person
    /// approved this agent's request to the host within the hour.
    DialApproval { frequency: ApprovalFrequency },
    /// A block rule matched.
    Block { rule: &'a RulePolicy },
    /// Action profile and nothing names the host.
    DefaultDeny,
}

#[derive(Clone, Debug)]
pub struct Evaluation<'a> {
    pub verdict: Verdict<'a>,
    /// Rate-limit rules matched (at most one per layer); each must admit the request.
    pub rate_limits: Vec<&'a RulePolicy>,
    /// The secret to inject, if any (only when the verdict is not a refusal).
    pub secret: Option<&'a SecretPolicy>,
    /// The allow rule that decided an `Allow` (an approval's grant among them), for the
    /// audit row to name.
    pub allowed_by: Option<&'a RulePolicy>,
}

impl PolicySet {
    /// Sorts once so evaluation is a linear scan.
    pub fn new(mut secrets: Vec<SecretPolicy>, mut rules: Vec<RulePolicy>) -> Self {
        rules.sort_by_key(|rule| {
            (
                Reverse(rule.priority),
                Reverse(path_specificity(rule.path.as_ref())),
                Reverse(rule.host.specificity()),
                rule.id,
            )
        });
        secrets.sort_by_key(|secret| {
            (
                Reverse(path_specificity(secret.path.as_ref())),
                Reverse(secret.priority),
                Reverse(secret.host.specificity()),
                secret.id,
            )
        });
        PolicySet { secrets, rules }
    }
    pub fn secrets(&self) -> &[SecretPolicy] {
        &self.secrets
    }
    /// In evaluation order.
    pub fn rules(&self) -> &[RulePolicy] {
        &self.rules
    }
    /// Whether some applicable, unexpired rule for this agent/host/path/method has a
    /// `body_contains` condition, so the gateway must read a body prefix before `evaluate`.
    ///
    /// A body rule that sits behind a rule which matches regardless of the body, in the
    /// same layer, can never decide the outcome, so it does not cost a body read.
    pub fn needs_body(&self, facts: &RequestFacts<'_>) -> bool {
        let mut settled = [false, false];
        for rule in &self.rules {
            let layer = layer_index(rule.scope);
            // A grant decides nothing in a layer (see `evaluate`), so it settles none:
            // counted, it hid a body block below it, judged then without the body.
            if rule.is_grant()
                || settled[layer]
                || !rule_applies(rule, facts)
                || !rule_matches_head(rule, facts)
            {
                continue;
            }
            if rule.body_contains.is_some() {
                return true;
            }
            settled[layer] = true;
            if settled == [true, true] {
                break;
            }
        }
        false
    }
    pub fn evaluate<'a>(&'a self, facts: &RequestFacts<'_>) -> Evaluation<'a> {
        let mut first_match: [Option<&'a RulePolicy>; 2] = [None, None];
        let mut host_named = false;
        for rule in &self.rules {
            let layer = layer_index(rule.scope);
            // A person's grant only answers a hold (below); it never decides in a layer.
            if rule.is_grant()
                || (first_match[layer].is_some() && host_named)
                || !rule_applies(rule, facts)
                || !rule.host.matches(facts.host, facts.port)
            {
                continue;
            }
            if rule.action != RuleAction::Block {
                host_named = true;
            }
            if first_match[layer].is_none()
                && rule_matches_head(rule, facts)
                && body_condition_holds(rule, facts.body)
            {
                first_match[layer] = Some(rule);
                // Both layers decided: a non-block match names the host, and a block
                // makes naming irrelevant.
                if first_match[0].is_some() && first_match[1].is_some() {
                    break;
                }
            }
        }
        let matched = || first_match.iter().flatten().copied();

        if let Some(rule) = matched().find(|rule| rule.action == RuleAction::Block) {
            return Evaluation::refused(Verdict::Block { rule });
        }

        let mut secret = None;
        let mut secret_names_host = false;
        for candidate in &self.secrets {
            if !candidate.host.matches(facts.host, facts.port)
                || !candidate.agents.contains(facts.agent)
            {
                continue;
            }
            // Compartments, checked again at run time: a research agent reads the
            // internet and never gets a sensitive credential, granted or not, nor one
            // for hosts of many owners (`*`, `*.com`: every site it visits would
            // receive it).
            if (candidate.sensitive || candidate.host.spans_owners())
                && facts.profile == Profile::Research
            {
                continue;
            }
            secret_names_host = true;
            if candidate
                .path
                .as_ref()
                .is_none_or(|p| p.matches_strictly(facts.path))
            {
                secret = Some(candidate);
                break;
            }
        }

        if facts.profile == Profile::Action && !host_named && !secret_names_host {
            return Evaluation::refused(Verdict::DefaultDeny);
        }

        // A hold a person already answered for good: a grant of theirs (for this agent,
        // host, port, method and path, in force) in the layer of every rule that holds
        // the request. Anything a layer would otherwise decide (a block, a rate limit,
        // another rule for other bodies) it decides as before the grant.
        let holding: Vec<&RulePolicy> = matched()
            .filter(|rule| rule.action == RuleAction::RequireApproval)
            .collect();
        // Above the holding rule, as it was made (one above the rule it answered), and
        // made after it (a later rule has a larger id): a hold added later, above or
        // below it, is not answered by it.
        let granted = |holding: &RulePolicy| {
            self.rules.iter().find(|grant| {
                grant.is_grant()
                    && grant.scope == holding.scope
                    && grant.priority > holding.priority
                    && grant.id > holding.id
                    && rule_applies(grant, facts)
                    && rule_matches_head(grant, facts)
            })
        };
        let grant = match holding.as_slice() {
            [] => None,
            all => all
                .iter()
                .map(|rule| granted(rule))
                .collect::<Option<Vec<_>>>()
                .and_then(|grants| grants.first().copied()),
        };
        // The dial holds a credentialed request whatever a grant answered: a grant is a
        // person's answer to a rule's hold, made on a card that may have shown no
        // credential (the secret can be newer than the grant).
        let dial_holds = secret.is_some()
            && !facts.model_call
            && facts.approvals.holds(facts.method, facts.opens_stream);
        let verdict = match holding.first() {
            Some(rule) if grant.is_none() => Verdict::RequireApproval { rule },
            _ if dial_holds => Verdict::DialApproval {
                frequency: facts.approvals,
            },
            _ => Verdict::Allow,
        };
        let rate_limits = matched()
            .filter(|rule| matches!(rule.action, RuleAction::RateLimit { .. }))
            .collect();
        let allowed_by = match verdict {
            Verdict::Allow => {
                grant.or_else(|| matched().find(|rule| rule.action == RuleAction::Allow))
            }
            _ => None,
        };
        Evaluation {
            verdict,
            rate_limits,
            secret,
            allowed_by,
        }
    }
    /// Whether a rule for `host` at `port` names a method (not `*`): only then can a
    /// method override carried in a body change what the rules decide, so only then is
    /// a form body read to look for one.
    pub fn rules_name_a_method(&self, host: &str, port: u16) -> bool {
        self.rules
            .iter()
            .any(|rule| rule.method != MethodPattern::Any && rule.host.matches(host, port))
    }

    /// Secrets granted to `agent` (for `vault env`, listings and the runner's grant tool).
    pub fn granted_to<'a>(
        &'a self,
        agent: &AgentName,
    ) -> impl Iterator<Item = &'a SecretPolicy> + 'a {
        let agent = agent.clone();
        self.secrets
            .iter()
            .filter(move |s| s.agents.contains(&agent))
    }
}

impl<'a> Evaluation<'a> {
    /// A refusal counts no rate limit and injects nothing.
    fn refused(verdict: Verdict<'a>) -> Self {
        Evaluation {
            verdict,
            rate_limits: Vec::new(),
            secret: None,
            allowed_by: None,
        }
    }
    /// Whether the request must not be forwarded at all.
    pub fn is_refused(&self) -> bool {
        matches!(self.verdict, Verdict::Block { .. } | Verdict::DefaultDeny)
    }
}

/// A rule or secret without a path pattern is the least specific.
fn path_specificity(path: Option<&PathPattern>) -> usize {
    path.map_or(0, |p| p.specificity() + 1)
}

fn layer_index(scope: Scope) -> usize {
    match scope {
        Scope::Org => 0,
        Scope::User => 1,
    }
}

/// Agent binding and expiry: whether the rule is in force for this agent now.
fn rule_applies(rule: &RulePolicy, facts: &RequestFacts<'_>) -> bool {
    rule.agent.as_ref().is_none_or(|agent| agent == facts.agent)
        && rule
            .expires_at_ms
            .is_none_or(|expiry| facts.now_ms < expiry)
}

/// Host, path and method; everything but the body. A rule that lets a request through
/// (an allow, a grant) compares the path strictly, `;parameters` kept; the others in
/// match form (see `crate::canonical`).
fn rule_matches_head(rule: &RulePolicy, facts: &RequestFacts<'_>) -> bool {
    rule.host.matches(facts.host, facts.port)
        && rule.method.matches(facts.method)
        && rule.path.as_ref().is_none_or(|p| {
            if rule.action == RuleAction::Allow {
                p.matches_strictly(facts.path)
            } else {
                p.matches(facts.path)
            }
        })
}

fn body_condition_holds(rule: &RulePolicy, body: Option<&[u8]>) -> bool {
    match (&rule.body_contains, body) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(needle), Some(body)) => contains(body, needle.as_bytes()),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::injection::Injection;
    use crate::pattern::HostPattern;
    use crate::rule::RateWindow;
    use crate::secret::SecretValue;

    const NOW: i64 = 1_800_000_000_000;

    fn agent(name: &str) -> AgentName {
        AgentName::new(name).unwrap()
    }

    fn rule(id: i64, host: &str, action: RuleAction) -> RulePolicy {
        RulePolicy {
            id,
            name: format!("rule-{id}"),
            host: HostPattern::parse(host).unwrap(),
            path: None,
            method: MethodPattern::Any,
            action,
            agent: None,
            priority: 0,
            expires_at_ms: None,
            body_contains: None,
            scope: Scope::User,
            approval_timeout_ms: None,
        }
    }

    fn with_path(mut rule: RulePolicy, path: &str) -> RulePolicy {
        rule.path = Some(PathPattern::parse(path).unwrap());
        rule
    }

    fn org(mut rule: RulePolicy) -> RulePolicy {
        rule.scope = Scope::Org;
        rule
    }

    fn limit(n: u32) -> RuleAction {
        RuleAction::RateLimit {
            limit: n,
            window: "1h".parse::<RateWindow>().unwrap(),
        }
    }

    fn secret(id: i64, host: &str, path: Option<&str>, agents: &[&str]) -> SecretPolicy {
        SecretPolicy {
            id,
            name: format!("secret-{id}"),
            host: HostPattern::parse(host).unwrap(),
            path: path.map(|p| PathPattern::parse(p).unwrap()),
            injection: Injection::Bearer,
            value: SecretValue::new(format!("value-{id}")),
            agents: agents.iter().map(|a| agent(a)).collect(),
            priority: 0,
            sensitive: false,
        }
    }

    struct Request {
        agent: AgentName,
        profile: Profile,
        method: http::Method,
        host: &'static str,
        port: u16,
        path: CanonicalPath,
        body: Option<&'static [u8]>,
        approvals: ApprovalFrequency,
        model_call: bool,
        opens_stream: bool,
    }

    impl Request {
        fn to(host: &'static str, path: &'static str) -> Self {
            Request {
                agent: agent("bot"),
                profile: Profile::Research,
                method: http::Method::GET,
                host,
                port: 443,
                path: CanonicalPath::parse(path).unwrap(),
                body: None,
                approvals: ApprovalFrequency::Never,
                model_call: false,
                opens_stream: false,
            }
        }
        fn action(mut self) -> Self {
            self.profile = Profile::Action;
            self
        }
        fn post(mut self, body: Option<&'static [u8]>) -> Self {
            self.method = http::Method::POST;
            self.body = body;
            self
        }
        fn by(mut self, name: &str) -> Self {
            self.agent = agent(name);
            self
        }
        fn port(mut self, port: u16) -> Self {
            self.port = port;
            self
        }
        fn facts(&self) -> RequestFacts<'_> {
            RequestFacts {
                agent: &self.agent,
                profile: self.profile,
                method: &self.method,
                opens_stream: self.opens_stream,
                host: self.host,
                port: self.port,
                path: &self.path,
                body: self.body,
                now_ms: NOW,
                approvals: self.approvals,
                model_call: self.model_call,
            }
        }
    }

    fn verdict_of(set: &PolicySet, request: &Request) -> (String, Option<i64>) {
        match set.evaluate(&request.facts()).verdict {
            Verdict::Allow => ("allow".into(), None),
            Verdict::RequireApproval { rule } => ("approval".into(), Some(rule.id)),
            Verdict::Block { rule } => ("block".into(), Some(rule.id)),
            Verdict::DefaultDeny => ("default_deny".into(), None),
            Verdict::DialApproval { .. } => ("dial".into(), None),
        }
    }

    fn rules(rules: Vec<RulePolicy>) -> PolicySet {
        PolicySet::new(Vec::new(), rules)
    }

    /// On one address, different ports are different services: a secret for one port
    /// goes to that port only; one without a port goes to every port.
    #[test]
    fn a_secret_with_a_port_is_injected_on_that_port_only() {
        let set = PolicySet::new(
            vec![
                secret(1, "127.0.0.1:8080", None, &["bot"]),
                secret(2, "127.0.0.1", Some("/v1/*"), &["bot"]),
            ],
            Vec::new(),
        );
        let injected = |port: u16, path: &'static str| {
            set.evaluate(&Request::to("127.0.0.1", path).port(port).facts())
                .secret
                .map(|s| s.id)
        };
        assert_eq!(injected(8080, "/x"), Some(1));
        assert_eq!(injected(9090, "/x"), None);
        assert_eq!(injected(80, "/x"), None);
        assert_eq!(injected(9090, "/v1/x"), Some(2));
        // The port makes secret 1 more specific than secret 2 on their shared host,
        // but path specificity comes first.
        assert_eq!(injected(8080, "/v1/x"), Some(2));
    }

    #[test]
    fn a_rule_with_a_port_matches_that_port_only_and_names_the_host_only_there() {
        let set = rules(vec![
            rule(1, "db.internal:5984", RuleAction::Block),
            rule(2, "api.example.com:8443", RuleAction::Allow),
        ]);
        assert_eq!(
            verdict_of(&set, &Request::to("db.internal", "/").port(5984)).0,
            "block"
        );
        assert_eq!(
            verdict_of(&set, &Request::to("db.internal", "/").port(443)).0,
            "allow"
        );
        let action = |port| Request::to("api.example.com", "/").action().port(port);
        assert_eq!(verdict_of(&set, &action(8443)).0, "allow");
        assert_eq!(verdict_of(&set, &action(443)).0, "default_deny");
        // A secret with a port names its host for an action agent on that port only.
        let set = PolicySet::new(
            vec![secret(1, "api.example.com:443", None, &["bot"])],
            Vec::new(),
        );
        assert_eq!(verdict_of(&set, &action(443)).0, "allow");
        assert_eq!(verdict_of(&set, &action(8443)).0, "default_deny");
    }

    #[test]
    fn research_agent_with_no_rules_is_allowed() {
        let set = PolicySet::default();
        let eval = set.evaluate(&Request::to("example.com", "/").facts());
        assert!(matches!(eval.verdict, Verdict::Allow));
        assert!(eval.rate_limits.is_empty() && eval.secret.is_none());
    }

    #[test]
    fn action_agent_is_default_denied_for_unnamed_hosts() {
        let set = rules(vec![rule(1, "api.example.com", RuleAction::Allow)]);
        let request = Request::to("other.example.com", "/").action();
        assert_eq!(verdict_of(&set, &request).0, "default_deny");
        let named = Request::to("api.example.com", "/").action();
        assert_eq!(verdict_of(&set, &named).0, "allow");
    }

    #[test]
    fn host_named_by_a_rule_whose_path_or_method_does_not_match_is_not_default_denied() {
        let mut post_only = with_path(
            rule(1, "api.example.com", RuleAction::RequireApproval),
            "/send",
        );
        post_only.method = MethodPattern::One(http::Method::POST);
        let set = rules(vec![post_only]);
        let request = Request::to("api.example.com", "/list").action();
        assert_eq!(verdict_of(&set, &request).0, "allow");
    }

    #[test]
    fn a_block_rule_does_not_name_a_host() {
        let set = rules(vec![with_path(
            rule(1, "api.example.com", RuleAction::Block),
            "/admin/*",
        )]);
        let request = Request::to("api.example.com", "/public").action();
        assert_eq!(verdict_of(&set, &request).0, "default_deny");
    }

    #[test]
    fn granted_secret_names_its_host_for_action_agents() {
        let set = PolicySet::new(
            vec![secret(1, "api.example.com", Some("/v1/*"), &["bot"])],
            Vec::new(),
        );
        let request = Request::to("api.example.com", "/v1/x").action();
        let eval = set.evaluate(&request.facts());
        assert!(matches!(eval.verdict, Verdict::Allow));
        assert_eq!(eval.secret.map(|s| s.id), Some(1));
        // Naming is by host only: another path is still allowed, without a secret.
        let other_path = Request::to("api.example.com", "/v2/x").action();
        let eval = set.evaluate(&other_path.facts());
        assert!(matches!(eval.verdict, Verdict::Allow));
        assert!(eval.secret.is_none());
        // A secret granted to someone else names nothing for this agent.
        let stranger = Request::to("api.example.com", "/v1/x").action().by("other");
        assert_eq!(verdict_of(&set, &stranger).0, "default_deny");
    }

    #[test]
    fn expired_rule_is_ignored() {
        let mut expired = rule(1, "api.example.com", RuleAction::Block);
        expired.expires_at_ms = Some(NOW - 1);
        let mut live = rule(2, "api.example.com", RuleAction::RequireApproval);
        live.expires_at_ms = Some(NOW + 1);
        let set = rules(vec![expired, live]);
        assert_eq!(
            verdict_of(&set, &Request::to("api.example.com", "/")),
            ("approval".into(), Some(2))
        );

        let mut expired_allow = rule(3, "api.example.com", RuleAction::Allow);
        expired_allow.expires_at_ms = Some(NOW);
        let set = rules(vec![expired_allow]);
        let request = Request::to("api.example.com", "/").action();
        assert_eq!(
            verdict_of(&set, &request).0,
            "default_deny",
            "expired grants name nothing"
        );
    }

    #[test]
    fn rule_bound_to_another_agent_does_not_apply() {
        let mut bound = rule(1, "api.example.com", RuleAction::Block);
        bound.agent = Some(agent("other"));
        let set = rules(vec![bound]);
        assert_eq!(
            verdict_of(&set, &Request::to("api.example.com", "/")).0,
            "allow"
        );
        let other = Request::to("api.example.com", "/").by("other");
        assert_eq!(verdict_of(&set, &other), ("block".into(), Some(1)));

        let mut bound_allow = rule(2, "api.example.com", RuleAction::Allow);
        bound_allow.agent = Some(agent("other"));
        let set = rules(vec![bound_allow]);
        let request = Request::to("api.example.com", "/").action();
        assert_eq!(verdict_of(&set, &request).0, "default_deny");
    }

    #[test]
    fn first_match_by_priority_then_path_then_host_then_id() {
        let mut high = rule(9, "*", RuleAction::Block);
        high.priority = 10;
        let set = rules(vec![rule(1, "api.example.com", RuleAction::Allow), high]);
        assert_eq!(
            verdict_of(&set, &Request::to("api.example.com", "/")),
            ("block".into(), Some(9))
        );

        let set = rules(vec![
            with_path(rule(1, "api.example.com", RuleAction::Allow), "/v1/*"),
            with_path(
                rule(2, "api.example.com", RuleAction::RequireApproval),
                "/v1/send",
            ),
        ]);
        assert_eq!(
            verdict_of(&set, &Request::to("api.example.com", "/v1/send")),
            ("approval".into(), Some(2))
        );
        assert_eq!(
            verdict_of(&set, &Request::to("api.example.com", "/v1/list")).0,
            "allow"
        );

        let set = rules(vec![
            rule(1, "*.example.com", RuleAction::RequireApproval),
            rule(2, "api.example.com", RuleAction::Allow),
        ]);
        assert_eq!(
            verdict_of(&set, &Request::to("api.example.com", "/")).0,
            "allow"
        );
        assert_eq!(
            verdict_of(&set, &Request::to("www.example.com", "/")),
            ("approval".into(), Some(1))
        );

        let set = rules(vec![
            rule(7, "api.example.com", RuleAction::Allow),
            rule(3, "api.example.com", RuleAction::RequireApproval),
        ]);
        assert_eq!(
            verdict_of(&set, &Request::to("api.example.com", "/")),
            ("approval".into(), Some(3))
        );
        assert_eq!(set.rules()[0].id, 3);
    }

    #[test]
    fn org_block_beats_user_allow() {
        let mut user_allow = rule(1, "api.example.com", RuleAction::Allow);
        user_allow.priority = 1000;
        let set = rules(vec![
            user_allow,
            org(rule(2, "api.example.com", RuleAction::Block)),
        ]);
        assert_eq!(
            verdict_of(&set, &Request::to("api.example.com", "/")),
            ("block".into(), Some(2))
        );
    }

    #[test]
    fn user_allow_cannot_lift_an_org_default_block() {
        let mut specific = rule(1, "api.example.com", RuleAction::Allow);
        specific.priority = 50;
        let set = rules(vec![specific, org(rule(2, "*", RuleAction::Block))]);
        let request = Request::to("api.example.com", "/").action();
        assert_eq!(verdict_of(&set, &request), ("block".into(), Some(2)));
    }

    #[test]
    fn user_block_beats_org_allow_and_stricter_wins() {
        let set = rules(vec![
            org(rule(1, "api.example.com", RuleAction::Allow)),
            rule(2, "api.example.com", RuleAction::Block),
        ]);
        assert_eq!(
            verdict_of(&set, &Request::to("api.example.com", "/")),
            ("block".into(), Some(2))
        );

        let set = rules(vec![
            org(rule(1, "api.example.com", RuleAction::RequireApproval)),
            rule(2, "api.example.com", RuleAction::Allow),
        ]);
        assert_eq!(
            verdict_of(&set, &Request::to("api.example.com", "/")),
            ("approval".into(), Some(1))
        );
    }

    #[test]
    fn rate_limits_from_both_layers_are_reported() {
        let set = rules(vec![
            org(rule(1, "api.example.com", limit(100))),
            rule(2, "api.example.com", limit(10)),
            rule(3, "api.example.com", limit(1)),
        ]);
        let request = Request::to("api.example.com", "/");
        let eval = set.evaluate(&request.facts());
        assert!(matches!(eval.verdict, Verdict::Allow));
        let mut ids: Vec<i64> = eval.rate_limits.iter().map(|r| r.id).collect();
        ids.sort();
        assert_eq!(ids, [1, 2], "at most one per layer: the first match");

        let set = rules(vec![
            org(rule(1, "api.example.com", limit(5))),
            rule(2, "api.example.com", RuleAction::RequireApproval),
        ]);
        let eval = set.evaluate(&request.facts());
        assert!(matches!(eval.verdict, Verdict::RequireApproval { rule } if rule.id == 2));
        assert_eq!(eval.rate_limits.len(), 1);

        let set = rules(vec![
            org(rule(1, "api.example.com", limit(5))),
            rule(2, "api.example.com", RuleAction::Block),
        ]);
        let eval = set.evaluate(&request.facts());
        assert!(eval.is_refused());
        assert!(
            eval.rate_limits.is_empty(),
            "a refused request is not counted"
        );
    }

    #[test]
    fn body_contains_needs_the_body() {
        let mut guarded = rule(1, "api.example.com", RuleAction::RequireApproval);
        guarded.body_contains = Some("\"to\":\"ceo@".into());
        let set = rules(vec![guarded]);

        let without_body = Request::to("api.example.com", "/send").post(None);
        assert!(set.needs_body(&without_body.facts()));
        assert_eq!(verdict_of(&set, &without_body).0, "allow");

        let matching =
            Request::to("api.example.com", "/send").post(Some(b"{\"to\":\"ceo@example.com\"}"));
        assert_eq!(verdict_of(&set, &matching), ("approval".into(), Some(1)));

        let other =
            Request::to("api.example.com", "/send").post(Some(b"{\"to\":\"bob@example.com\"}"));
        assert_eq!(verdict_of(&set, &other).0, "allow");

        let elsewhere = Request::to("x.example.com", "/send").post(None);
        assert!(!set.needs_body(&elsewhere.facts()));
    }

    #[test]
    fn needs_body_skips_shadowed_and_inapplicable_body_rules() {
        let mut body_rule = rule(1, "api.example.com", RuleAction::Block);
        body_rule.body_contains = Some("x".into());
        let mut shadow = rule(2, "api.example.com", RuleAction::Allow);
        shadow.priority = 5;
        let set = rules(vec![body_rule.clone(), shadow]);
        assert!(!set.needs_body(&Request::to("api.example.com", "/").facts()));

        let mut expired = body_rule.clone();
        expired.expires_at_ms = Some(NOW - 1);
        assert!(!rules(vec![expired]).needs_body(&Request::to("api.example.com", "/").facts()));

        let mut bound = body_rule.clone();
        bound.agent = Some(agent("other"));
        assert!(!rules(vec![bound]).needs_body(&Request::to("api.example.com", "/").facts()));

        let mut post_only = body_rule;
        post_only.method = MethodPattern::One(http::Method::POST);
        let set = rules(vec![post_only]);
        assert!(!set.needs_body(&Request::to("api.example.com", "/").facts()));
        assert!(set.needs_body(&Request::to("api.example.com", "/").post(None).facts()));
    }

    #[test]
    fn secret_not_granted_or_on_another_host_is_not_injected() {
        let set = PolicySet::new(
            vec![
                secret(1, "api.example.com", None, &[]),
                secret(2, "api.example.com", None, &["other"]),
                secret(3, "other.example.com", None, &["bot"]),
            ],
            Vec::new(),
        );
        let eval = set.evaluate(&Request::to("api.example.com", "/").facts());
        assert!(eval.secret.is_none());
        assert_eq!(
            set.granted_to(&agent("bot"))
                .map(|s| s.id)
                .collect::<Vec<_>>(),
            [3]
        );
    }

    /// `/send;x` is `/send` to Tomcat and another path to nginx, and `/send;x` is what
    /// goes upstream: what holds, limits or blocks `/send` catches it, but an allow,
    /// a person's grant or a secret scoped to `/send` does not let it through.
    #[test]
    fn path_parameters_pass_no_allow_grant_or_secret_scope_but_meet_every_hold() {
        let mut allow = with_path(rule(1, "api.example.com", RuleAction::Allow), "/send");
        allow.priority = 20;
        let mut hold = rule(2, "api.example.com", RuleAction::RequireApproval);
        hold.priority = 10;
        let set = rules(vec![allow, hold]);
        let verdict = |set: &PolicySet, path: &'static str| {
            verdict_of(set, &Request::to("api.example.com", path).post(None)).0
        };
        assert_eq!(verdict(&set, "/send"), "allow");
        assert_eq!(verdict(&set, "/send/"), "allow");
        assert_eq!(verdict(&set, "/send;x"), "approval");
        assert_eq!(verdict(&set, "/%73end;jsessionid=1"), "approval");

        // A grant a person made for `/send` answers `/send` only.
        let mut hold = with_path(
            rule(3, "api.example.com", RuleAction::RequireApproval),
            "/send",
        );
        hold.priority = 10;
        let mut grant = with_path(rule(4, "api.example.com:443", RuleAction::Allow), "/send");
        grant.name = "always-allowed-apr_4".into();
        grant.priority = 11;
        grant.agent = Some(agent("bot"));
        grant.method = MethodPattern::parse("POST").unwrap();
        let set = rules(vec![hold, grant]);
        assert_eq!(verdict(&set, "/send"), "allow");
        assert_eq!(verdict(&set, "/send;x"), "approval");

        // Blocks and rate limits still see `/admin;x` as `/admin`.
        let block = with_path(rule(5, "api.example.com", RuleAction::Block), "/admin/*");
        let mut limited = with_path(rule(6, "api.example.com", limit(1)), "/rl/*");
        limited.priority = 5;
        let set = rules(vec![block, limited]);
        assert_eq!(verdict(&set, "/admin;x/users"), "block");
        let request = Request::to("api.example.com", "/rl;x/a");
        assert_eq!(set.evaluate(&request.facts()).rate_limits.len(), 1);

        // A secret scoped to `/v1/*` goes to `/v1/x` only; the host's own goes elsewhere.
        let set = PolicySet::new(
            vec![
                secret(7, "api.example.com", Some("/v1/*"), &["bot"]),
                secret(8, "api.example.com", None, &["bot"]),
            ],
            Vec::new(),
        );
        let pick = |path: &'static str| {
            set.evaluate(&Request::to("api.example.com", path).facts())
                .secret
                .map(|s| s.id)
        };
        assert_eq!(pick("/v1/x"), Some(7));
        assert_eq!(pick("/v1;a/x"), Some(8));
    }

    #[test]
    fn most_specific_secret_wins() {
        let mut high_priority_broad = secret(1, "*.example.com", None, &["bot"]);
        high_priority_broad.priority = 100;
        let set = PolicySet::new(
            vec![
                high_priority_broad,
                secret(2, "api.example.com", Some("/v1/*"), &["bot"]),
                secret(3, "api.example.com", Some("/v1/messages"), &["bot"]),
                secret(4, "api.example.com", None, &["bot"]),
            ],
            Vec::new(),
        );
        let pick = |path: &'static str| {
            set.evaluate(&Request::to("api.example.com", path).facts())
                .secret
                .map(|s| s.id)
        };
        assert_eq!(pick("/v1/messages"), Some(3));
        assert_eq!(pick("/v1/models"), Some(2));
        assert_eq!(
            pick("/v2"),
            Some(1),
            "no path: priority decides before host"
        );
        let www = set.evaluate(&Request::to("www.example.com", "/v1/messages").facts());
        assert_eq!(www.secret.map(|s| s.id), Some(1));
    }

    #[test]
    fn secret_ties_break_on_host_then_id() {
        let set = PolicySet::new(
            vec![
                secret(5, "*.example.com", None, &["bot"]),
                secret(4, "api.example.com", None, &["bot"]),
                secret(2, "api.example.com", None, &["bot"]),
            ],
            Vec::new(),
        );
        let eval = set.evaluate(&Request::to("api.example.com", "/").facts());
        assert_eq!(eval.secret.map(|s| s.id), Some(2));
    }

    #[test]
    fn secrets_go_with_approval_but_not_with_refusals() {
        let secrets = vec![secret(1, "api.example.com", None, &["bot"])];
        let held = PolicySet::new(
            secrets.clone(),
            vec![rule(1, "api.example.com", RuleAction::RequireApproval)],
        );
        let eval = held.evaluate(&Request::to("api.example.com", "/").facts());
        assert!(matches!(eval.verdict, Verdict::RequireApproval { .. }));
        assert_eq!(eval.secret.map(|s| s.id), Some(1));

        let blocked = PolicySet::new(secrets, vec![rule(1, "api.example.com", RuleAction::Block)]);
        let eval = blocked.evaluate(&Request::to("api.example.com", "/").facts());
        assert!(eval.is_refused() && eval.secret.is_none());
    }

    #[test]
    fn method_pattern_is_respected() {
        let mut post_only = rule(1, "api.example.com", RuleAction::Block);
        post_only.method = MethodPattern::One(http::Method::POST);
        let set = rules(vec![post_only]);
        assert_eq!(
            verdict_of(&set, &Request::to("api.example.com", "/")).0,
            "allow"
        );
        assert_eq!(
            verdict_of(&set, &Request::to("api.example.com", "/").post(None)).0,
            "block"
        );
    }

    /// A person's grant (`always-allowed-…`) answers the hold of the request it names
    /// and decides nothing else: once the holding rule no longer holds (expired here),
    /// a block below it decides again; for bodies a body-conditional hold does not
    /// hold, the rate limit below it still counts. (As an ordinary allow rule above the
    /// holding rule, it passed both.)
    #[test]
    fn a_grant_only_answers_a_hold() {
        // As the engine makes one: this agent, host and port, method, exact path.
        let grant = |id: i64| {
            let mut grant = with_path(rule(id, "api.example.com:443", RuleAction::Allow), "/x");
            grant.name = format!("always-allowed-apr_{id}");
            grant.priority = 11;
            grant.agent = Some(agent("bot"));
            grant.method = MethodPattern::parse("POST").unwrap();
            grant
        };
        let mut block = rule(1, "api.example.com", RuleAction::Block);
        block.priority = 0;
        let mut hold = rule(2, "api.example.com", RuleAction::RequireApproval);
        hold.priority = 10;
        hold.expires_at_ms = Some(NOW + 1);
        let set = rules(vec![block.clone(), hold.clone(), grant(3)]);
        let request = Request::to("api.example.com", "/x").post(Some(b"hi"));
        assert_eq!(verdict_of(&set, &request).0, "allow");
        assert_eq!(
            set.evaluate(&request.facts()).allowed_by.map(|r| r.id),
            Some(3)
        );
        hold.expires_at_ms = Some(NOW - 1);
        let expired = rules(vec![block, hold, grant(3)]);
        assert_eq!(verdict_of(&expired, &request).0, "block");

        let mut only_exfil = rule(4, "api.example.com", RuleAction::RequireApproval);
        only_exfil.priority = 10;
        only_exfil.body_contains = Some("EXFIL".into());
        let mut limit = rule(
            5,
            "api.example.com",
            RuleAction::RateLimit {
                limit: 1,
                window: "1h".parse().unwrap(),
            },
        );
        limit.priority = 5;
        let set = rules(vec![only_exfil.clone(), limit, grant(6)]);
        let normal = Request::to("api.example.com", "/x").post(Some(b"normal"));
        assert_eq!(set.evaluate(&normal.facts()).rate_limits.len(), 1);
        let exfil = Request::to("api.example.com", "/x").post(Some(b"EXFIL one"));
        let answered = set.evaluate(&exfil.facts());
        assert!(matches!(answered.verdict, Verdict::Allow));
        assert_eq!(answered.allowed_by.map(|r| r.id), Some(6));

        // A body block beside the hold (same priority, sorted before it), below the
        // grant, still gets the body read (a grant that settled its layer hid it, and
        // the block was judged without the body).
        let mut body_block = rule(7, "api.example.com", RuleAction::Block);
        body_block.priority = 10;
        body_block.body_contains = Some("attacker".into());
        let mut plain_hold = rule(8, "api.example.com", RuleAction::RequireApproval);
        plain_hold.priority = 10;
        let set = rules(vec![body_block, plain_hold, grant(9)]);
        let request = Request::to("api.example.com", "/x").post(Some(b"to attacker"));
        assert!(set.needs_body(&request.facts()));
        assert_eq!(verdict_of(&set, &request).0, "block");

        // A hold added later above the grant is not answered by it.
        let mut hold = rule(10, "api.example.com", RuleAction::RequireApproval);
        hold.priority = 10;
        let mut strict = rule(11, "*", RuleAction::RequireApproval);
        strict.priority = 500;
        let set = rules(vec![hold, strict, grant(12)]);
        let request = Request::to("api.example.com", "/x").post(Some(b"hi"));
        assert_eq!(verdict_of(&set, &request).0, "approval");

        // A wide rule of a grant's name is an ordinary allow rule, as it was: below a
        // hold it answers nothing.
        let mut wide = rule(13, "*", RuleAction::Allow);
        wide.name = "suggested-legacy".into();
        wide.priority = 1000;
        assert!(!wide.is_grant() && grant(14).is_grant());
        let mut hold = rule(15, "api.example.com", RuleAction::RequireApproval);
        hold.priority = 10;
        let mut low_wide = wide.clone();
        low_wide.priority = -100;
        let set = rules(vec![hold, low_wide]);
        assert_eq!(verdict_of(&set, &request).0, "approval");

        // Nor is a hold added later below it, at the answered rule's priority but more
        // specific, so matched first (a later rule has a larger id): the person
        // answered the rules that held the request then, not one written since.
        let mut old_hold = rule(16, "api.example.com", RuleAction::RequireApproval);
        old_hold.priority = 10;
        let mut later_hold = with_path(
            rule(18, "api.example.com", RuleAction::RequireApproval),
            "/x",
        );
        later_hold.priority = 10;
        later_hold.body_contains = Some("wire".into());
        let set = rules(vec![old_hold.clone(), grant(17)]);
        let wire = Request::to("api.example.com", "/x").post(Some(b"wire it"));
        assert_eq!(verdict_of(&set, &wire).0, "allow");
        let set = rules(vec![old_hold.clone(), later_hold, grant(17)]);
        assert_eq!(verdict_of(&set, &wire), ("approval".into(), Some(18)));

        // A grant answers the rule's hold, not the dial: a credential (perhaps added
        // since the card, which showed none) is held as the dial says.
        let set = PolicySet::new(
            vec![secret(19, "api.example.com", None, &["bot"])],
            vec![old_hold, grant(17)],
        );
        let mut dialed = Request::to("api.example.com", "/x").post(Some(b"hi"));
        assert_eq!(verdict_of(&set, &dialed).0, "allow");
        dialed.approvals = ApprovalFrequency::Every;
        assert_eq!(verdict_of(&set, &dialed).0, "dial");
    }

    /// An allow that a rule decided names that rule (an approval's grant among them),
    /// so the audit row can say what let the request through; nothing else does.
    #[test]
    fn an_allow_names_the_rule_that_decided_it() {
        let set = rules(vec![rule(7, "api.example.com", RuleAction::Allow)]);
        let request = Request::to("api.example.com", "/x");
        assert_eq!(
            set.evaluate(&request.facts()).allowed_by.map(|r| r.id),
            Some(7)
        );
        let elsewhere = Request::to("other.example.com", "/x");
        assert!(set.evaluate(&elsewhere.facts()).allowed_by.is_none());
        let asked = rules(vec![rule(
            8,
            "api.example.com",
            RuleAction::RequireApproval,
        )]);
        assert!(asked.evaluate(&request.facts()).allowed_by.is_none());
    }

    #[test]
    fn a_sensitive_secret_is_never_injected_for_a_research_agent() {
        let mut mail = secret(1, "gmail.googleapis.com", None, &["bot"]);
        mail.sensitive = true;
        let set = PolicySet::new(vec![mail], Vec::new());
        let research = Request::to("gmail.googleapis.com", "/send");
        assert!(set.evaluate(&research.facts()).secret.is_none());
        let action = Request::to("gmail.googleapis.com", "/send").action();
        assert_eq!(set.evaluate(&action.facts()).secret.map(|s| s.id), Some(1));
    }

    #[test]
    fn a_secret_for_every_host_is_never_injected_for_a_research_agent() {
        for wide in ["*", "*.example"] {
            let everywhere = secret(1, wide, None, &["bot"]);
            let set = PolicySet::new(vec![everywhere], Vec::new());
            let research = Request::to("any.page.example", "/");
            assert!(set.evaluate(&research.facts()).secret.is_none(), "{wide}");
            let action = Request::to("any.page.example", "/").action();
            assert_eq!(set.evaluate(&action.facts()).secret.map(|s| s.id), Some(1));
        }
    }

    #[test]
    fn the_dial_holds_credentialed_requests_it_covers() {
        let set = PolicySet::new(
            vec![secret(1, "api.example.com", None, &["bot"])],
            Vec::new(),
        );
        let mut request = Request::to("api.example.com", "/x");
        request.approvals = ApprovalFrequency::Writes;
        assert_eq!(verdict_of(&set, &request).0, "allow", "a read is not held");
        let mut write = Request::to("api.example.com", "/x").post(None);
        write.approvals = ApprovalFrequency::Writes;
        assert_eq!(verdict_of(&set, &write).0, "dial");
        // No credential, nothing to approve.
        let mut elsewhere = Request::to("other.example.com", "/x").post(None);
        elsewhere.approvals = ApprovalFrequency::Every;
        assert_eq!(verdict_of(&set, &elsewhere).0, "allow");
        // A block still wins over the dial.
        let blocked = PolicySet::new(
            vec![secret(1, "api.example.com", None, &["bot"])],
            vec![rule(1, "api.example.com", RuleAction::Block)],
        );
        let mut request = Request::to("api.example.com", "/x");
        request.approvals = ApprovalFrequency::Every;
        assert_eq!(verdict_of(&blocked, &request).0, "block");
        // The agent's calls to its own model are never held by the dial, but a rule
        // still holds them.
        let mut thought = Request::to("api.example.com", "/x").post(None);
        thought.approvals = ApprovalFrequency::Every;
        thought.model_call = true;
        assert_eq!(verdict_of(&set, &thought).0, "allow");
        let asked = PolicySet::new(
            vec![secret(1, "api.example.com", None, &["bot"])],
            vec![rule(1, "api.example.com", RuleAction::RequireApproval)],
        );
        assert_eq!(verdict_of(&asked, &thought).0, "approval");
    }
}
