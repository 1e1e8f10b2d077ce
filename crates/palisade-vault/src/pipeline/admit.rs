//! Phase 1, admit: the gateway is not shutting down, the agent still exists (its
//! connection may have opened before it was deleted), and the token a tunnel was
//! opened with is still the agent's (it may have been rotated since). Yields the
//! policy snapshot the rest of the request is judged by, so one request sees one
//! consistent policy.

use super::{Decision, Refusal};
use crate::state::{Shared, Snapshot};
use palisade_policy::{AgentName, ErrorBody, GatewayErrorKind, Profile};
use std::sync::Arc;

pub(super) fn admit(
    shared: &Shared,
    agent: &AgentName,
    host: &str,
    token: Option<&str>,
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
    if token.is_some_and(|digest| !snapshot.token_is_agents(digest, agent)) {
        return Err(Refusal::new(
            Decision::ProxyAuthRequired,
            ErrorBody::new(GatewayErrorKind::ProxyAuthRequired, host).with_message(format!(
                "the token this connection was opened with is no longer agent {agent}'s (rotated); open a new connection with the current one"
            )),
        ));
    }
    Ok((snapshot, profile))
}

/// The refusal for a request whose credential was revoked while it was under way (the
/// snapshot that revoked it is already in force).
pub(super) fn revoked(
    shared: &Shared,
    agent: &AgentName,
    host: &str,
    token: Option<&str>,
) -> Refusal {
    match admit(shared, agent, host, token) {
        Err(refusal) => refusal,
        // The agent was deleted and created again under its name: still not the agent
        // the request came from.
        Ok(_) => Refusal::new(
            Decision::AgentGone,
            ErrorBody::new(GatewayErrorKind::BlockedByPolicy, host).with_message(format!(
                "agent {agent} was deleted while this request was under way; nothing more is forwarded"
            )),
        ),
    }
}
