//! Phase 3, local: no loopback, private, link-local or own address is an upstream
//! unless `--allow-local-upstream` names the host, and the gateway's own listener and
//! the host's control plane never are, in any spelling of their address. IP literals
//! are checked here; names are checked again on their resolved addresses by the
//! connector's resolver (`crate::net_guard`).

use super::{Decision, Refusal, Target};
use crate::state::Shared;
use palisade_policy::{ErrorBody, GatewayErrorKind};
use std::net::IpAddr;

pub(super) fn refuse_local(shared: &Shared, target: &Target) -> Result<(), Refusal> {
    let host = target.host.as_str();
    if let Ok(ip) = host.parse::<IpAddr>() {
        if !shared.guard.permits(host, Some(target.port), ip) {
            return Err(Refusal::of(
                Decision::LocalRefused,
                GatewayErrorKind::LocalUpstreamRefused,
                host,
            ));
        }
    }
    if shared.is_own_listener(host, target.port) {
        return Err(Refusal::new(
            Decision::LocalRefused,
            ErrorBody::new(GatewayErrorKind::LocalUpstreamRefused, host).with_message(
                "This is the vault gateway's or the Palisade host's own address; agents can never reach it through the proxy.",
            ),
        ));
    }
    Ok(())
}
