//! The gateway's view: every secret (decrypted) and rule, parsed into policy types.
//!
//! Patterns and injections are stored in their canonical spellings and parsed back
//! here, so a row that no longer parses (edited by hand, or written by a newer
//! palisade) fails the load with its name instead of being silently skipped.

use super::rules::all_rules;
use super::secrets::{grants_by_secret, SealedSecret};
use super::{corrupt, Store};
use crate::records::RuleRecord;
use crate::Result;
use palisade_policy::{
    HostPattern, Injection, MethodPattern, PathPattern, PolicySet, RateWindow, RuleAction,
    RulePolicy, Scope, SecretPolicy,
};

impl Store {
    /// Everything the gateway evaluates, secrets decrypted.
    pub fn load_policy(&self) -> Result<PolicySet> {
        let (raw_secrets, mut grants, rules) = self.read(|tx| {
            Ok((
                SealedSecret::read(tx, i64::MAX)?,
                grants_by_secret(tx, self.key())?,
                all_rules(tx)?,
            ))
        })?;

        let mut secrets = Vec::with_capacity(raw_secrets.len());
        for raw in raw_secrets {
            // A secret that cannot be read (its sealed value edited in the database, or
            // sealed with another key) is left out, and so never injected; the rest of
            // the policy still loads. Failing the whole load froze the gateway on its
            // previous policy: no token rotation, no agent deletion, no new block rule
            // took effect. (A rule that cannot be read still fails the load: leaving
            // out a block rule would let through what it blocks.)
            let name = raw.name.clone();
            match secret_policy(self, raw, &mut grants) {
                Ok(secret) => secrets.push(secret),
                Err(error) => tracing::error!(
                    secret = %name,
                    %error,
                    "secret left out of the policy: it cannot be read; it is not injected until it is created again"
                ),
            }
        }
        let rules = rules
            .into_iter()
            .filter(|rule| rule.enabled)
            .map(rule_policy)
            .collect::<Result<Vec<_>>>()?;
        Ok(PolicySet::new(secrets, rules))
    }
}

fn secret_policy(
    store: &Store,
    raw: SealedSecret,
    grants: &mut std::collections::HashMap<i64, Vec<palisade_policy::AgentName>>,
) -> Result<SecretPolicy> {
    let what = |field: &str| format!("{field} of secret {:?}", raw.name);
    Ok(SecretPolicy {
        id: raw.id,
        host: HostPattern::parse(&raw.host).map_err(|e| corrupt(&what("host"), e))?,
        path: raw
            .path
            .as_deref()
            .map(PathPattern::parse_stored)
            .transpose()
            .map_err(|e| corrupt(&what("path"), e))?,
        injection: raw
            .injection
            .parse::<Injection>()
            .map_err(|e| corrupt(&what("injection"), e))?,
        value: store.key().open(&raw.destination(), &raw.sealed)?,
        agents: grants.remove(&raw.id).unwrap_or_default(),
        priority: raw.priority,
        sensitive: raw.sensitive,
        name: raw.name,
    })
}

fn rule_policy(record: RuleRecord) -> Result<RulePolicy> {
    let what = |field: &str| format!("{field} of rule {:?}", record.name);
    let action = match (
        record.action.as_str(),
        record.rate_limit,
        &record.rate_window,
    ) {
        ("allow", _, _) => RuleAction::Allow,
        ("block", _, _) => RuleAction::Block,
        ("require_approval", _, _) => RuleAction::RequireApproval,
        ("rate_limit", Some(limit), Some(window)) => RuleAction::RateLimit {
            limit,
            window: window
                .parse::<RateWindow>()
                .map_err(|e| corrupt(&what("rate window"), e))?,
        },
        (other, _, _) => {
            return Err(corrupt(
                &what("action"),
                format!("{other:?} without a complete rate limit or unknown"),
            ))
        }
    };
    Ok(RulePolicy {
        id: record.id,
        host: HostPattern::parse(&record.host_pattern).map_err(|e| corrupt(&what("host"), e))?,
        path: record
            .path_pattern
            .as_deref()
            .map(PathPattern::parse_stored)
            .transpose()
            .map_err(|e| corrupt(&what("path"), e))?,
        method: MethodPattern::parse(&record.method).map_err(|e| corrupt(&what("method"), e))?,
        action,
        agent: record.agent.clone(),
        priority: record.priority,
        expires_at_ms: record.expires_at_ms,
        body_contains: record.body_contains.clone(),
        scope: record
            .scope
            .parse::<Scope>()
            .map_err(|e| corrupt(&what("scope"), e))?,
        approval_timeout_ms: record.approval_timeout_ms,
        name: record.name,
    })
}
