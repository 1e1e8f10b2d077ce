//! Phase 1, admit: the gateway is not shutting down and the agent still exists (its
//! connection may have opened before it was deleted). Yields the policy snapshot the
//! rest of the request is judged by, so one request sees one consistent policy.

use super::{Decision, Refusal};
use crate::state::{Shared, Snapshot};
use palisade_policy::{AgentName, ErrorBody, GatewayErrorKind, Profile};
use std::sync::Arc;

pub(super) fn admit(
    shared: &Shared,
    agent: &AgentName,
    host: &str,
) -> Result<(Arc<Snapshot>, Profile), Refusal> {
    if shared.is_shutting_down() {
        return Err(Refusal::of(
            Decision::GatewayRestarting,
            GatewayErrorKind::GatewayRestarting,
            host,
        ));
    }
    let snapshot = shared.snapshot.load_full();
    let Some(profile) = snapshot.agents.get(agent).copied() else {
        return Err(Refusal::new(
            Decision::AgentGone,
            ErrorBody::new(GatewayErrorKind::BlockedByPolicy, host).with_message(format!(
                "agent {agent} no longer exists; nothing is forwarded"
            )),
        ));
    };
    Ok((snapshot, profile))
}
