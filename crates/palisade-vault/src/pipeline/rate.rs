//! Phase 5, rate: every matched rate-limit rule (at most one per layer) must admit the
//! request. Counted in SQLite inside `BEGIN IMMEDIATE`, per (rule, agent), so the count
//! is exact across connections, processes and gateway instances.

use super::{audit, Decision, Refusal};
use crate::state::Shared;
use palisade_policy::{AgentName, ErrorBody, GatewayErrorKind, RuleAction, RulePolicy};
use palisade_store::RateOutcome;

pub(super) async fn count(
    shared: &Shared,
    agent: &AgentName,
    limits: &[&RulePolicy],
    host: &str,
    audit: &mut audit::Pending,
) -> Result<(), Refusal> {
    for rule in limits {
        let RuleAction::RateLimit { limit, window } = rule.action else {
            continue;
        };
        let key = format!("rule:{}:agent:{}", rule.id, agent);
        let store = shared.store.clone();
        let now = palisade_store::now_ms();
        let outcome = tokio::task::spawn_blocking(move || {
            store.rate_acquire(&key, limit, window.duration(), now)
        })
        .await;
        match outcome {
            Ok(Ok(RateOutcome::Admitted { .. })) => {}
            Ok(Ok(RateOutcome::Limited { retry_after })) => {
                audit.record().rule = Some(rule.name.clone());
                let seconds = retry_after.as_millis().div_ceil(1000).max(1) as u64;
                let mut body =
                    ErrorBody::new(GatewayErrorKind::RateLimited, host).with_rule(&rule.name);
                body.retry_after_seconds = Some(seconds);
                body.message = format!(
                    "Rate limit of rule {:?} reached: at most {limit} requests per {window} to {host}. Retry after {seconds} seconds, or do something else meanwhile.",
                    rule.name
                );
                return Err(Refusal::new(Decision::RateLimited, body));
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "rate limit check failed");
                return Err(Refusal::of(
                    Decision::GatewayRestarting,
                    GatewayErrorKind::GatewayRestarting,
                    host,
                ));
            }
            Err(_) => {
                return Err(Refusal::of(
                    Decision::GatewayRestarting,
                    GatewayErrorKind::GatewayRestarting,
                    host,
                ))
            }
        }
    }
    Ok(())
}
