//! What an allow rule made from a person's approval ("always", "for 1 h", an accepted
//! suggestion) may not do: pass a block rule.
//!
//! Such a rule sits one priority above the rule that held the request, in that rule's
//! layer, and within a layer the first matching rule wins. A block rule of the same
//! layer that also covers the request's host, path and method (a `body_contains` block
//! that stops some of its bodies, or one the holding rule happened to sort before)
//! would then never be reached for that agent: one click disabled it. So such a grant
//! is not made; the request can still be approved once.

use palisade_policy::{CanonicalPath, HostPattern, MethodPattern, PathPattern};
use palisade_store::{NewRule, RuleRecord};

/// The name of the block rule `grant` (made over `holding`, the rule that held the
/// request) would take decisions from, if any, among `rules` (enabled, in force at
/// `now_ms`): one that covers the request, sits at or below the grant's priority (so
/// the grant comes first), and could decide some of these requests now, being at or
/// above the holding rule (ties counted, their order being by specificity and age) or
/// behind a holding rule that holds only some bodies. A block below a holding rule that
/// holds every such request never decided them, and the grant takes nothing from it.
pub fn block_passed_by(
    grant: &NewRule,
    holding: &RuleRecord,
    rules: &[RuleRecord],
    now_ms: i64,
) -> Option<String> {
    let method: http::Method = grant.method.to_string().parse().ok()?;
    let path = grant
        .path
        .as_ref()
        .and_then(|path| CanonicalPath::parse(path.as_str()).ok());
    let covers = |rule: &RuleRecord| -> bool {
        let host = HostPattern::parse(&rule.host_pattern);
        let host_covered = match (host, grant.host.port()) {
            (Ok(host), Some(port)) => host.matches(grant.host.host(), port),
            (Ok(host), None) => host.matches_host_on_any_port(grant.host.host()),
            // A rule this version cannot read: assume the worst.
            (Err(_), _) => true,
        };
        let path_covered = match (&rule.path_pattern, &path) {
            (None, _) => true,
            (Some(pattern), Some(path)) => {
                PathPattern::parse(pattern).map_or(true, |pattern| pattern.matches(path))
            }
            (Some(_), None) => true,
        };
        let method_covered =
            MethodPattern::parse(&rule.method).map_or(true, |pattern| pattern.matches(&method));
        host_covered && path_covered && method_covered
    };
    rules
        .iter()
        .filter(|rule| {
            rule.enabled
                && rule.action == "block"
                && rule.scope == grant.scope.as_str()
                && rule.priority <= grant.priority
                && (rule.priority >= holding.priority || holding.body_contains.is_some())
                && rule.expires_at_ms.is_none_or(|at| now_ms < at)
                && rule
                    .agent
                    .as_ref()
                    .is_none_or(|agent| Some(agent) == grant.agent.as_ref())
        })
        .find(|rule| covers(rule))
        .map(|rule| rule.name.clone())
}
