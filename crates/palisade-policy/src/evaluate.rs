//! Evaluation of one request against the policy set.
//!
//! Per layer (org, user), the first matching rule wins, in order: priority (higher
//! first), then path specificity, then host specificity, then id (older first). A rule
//! matches when host, path (if any), method, agent binding (if any) match, it has not
//! expired at `now_ms`, and its `body_contains` (if any) is found in the body prefix
//! (a rule with `body_contains` never matches when `body` is `None`).
//! The two layers combine by strictness: block > require_approval > rate_limit > allow,
//! and every matched rate limit is reported so the gateway counts each of them.
//! With no blocking rule, an `Action`-profile agent is refused (`DefaultDeny`) when no
//! applicable, unexpired, non-block rule in either layer and no secret granted to it
//! names the host (host match only; path and method are not considered for naming).
//! The secret to inject is the one granted to the agent whose host and path match,
//! choosing the most specific path (a secret without path pattern is least specific),
//! then higher priority, then more specific host, then lower id.

use crate::names::{AgentName, Profile};
use crate::rule::RulePolicy;
use crate::secret::SecretPolicy;

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
    /// Lower-case host without port; IPv6 without brackets.
    pub host: &'a str,
    /// Path without query.
    pub path: &'a str,
    /// The body prefix read for rules with `body_contains`, if it was read.
    pub body: Option<&'a [u8]>,
    pub now_ms: i64,
}

#[derive(Clone, Debug)]
pub enum Verdict<'a> {
    /// Forward (after counting `Evaluation::rate_limits`).
    Allow,
    /// Forward after a person approves (after counting rate limits).
    RequireApproval { rule: &'a RulePolicy },
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
}

impl PolicySet {
    /// Sorts once so evaluation is a linear scan.
    pub fn new(secrets: Vec<SecretPolicy>, rules: Vec<RulePolicy>) -> Self {
        todo!("{secrets:?} {rules:?}")
    }
    pub fn secrets(&self) -> &[SecretPolicy] {
        &self.secrets
    }
    pub fn rules(&self) -> &[RulePolicy] {
        &self.rules
    }
    /// Whether some applicable, unexpired rule for this agent/host/path/method has a
    /// `body_contains` condition, so the gateway must read a body prefix before `evaluate`.
    pub fn needs_body(&self, facts: &RequestFacts<'_>) -> bool {
        todo!("{facts:?}")
    }
    pub fn evaluate<'a>(&'a self, facts: &RequestFacts<'_>) -> Evaluation<'a> {
        todo!("{facts:?}")
    }
    /// Secrets granted to `agent` (for `vault env`, listings and the runner's grant tool).
    pub fn granted_to<'a>(&'a self, agent: &AgentName) -> impl Iterator<Item = &'a SecretPolicy> + 'a {
        let agent = agent.clone();
        self.secrets.iter().filter(move |s| s.agents.contains(&agent))
    }
}
