//! Phase 3, local: no loopback, private, link-local or own address is an upstream
//! unless `--allow-local-upstream` or an address remembered in the home (`palisade
//! vault local allow`) names the host, and the gateway's own listener and
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
            // The option that allows this address names its port too, so that one
            // service on the address is allowed, not all of them.
            let allowance = match ip {
                IpAddr::V6(_) => format!("[{host}]:{}", target.port),
                IpAddr::V4(_) => format!("{host}:{}", target.port),
            };
            return Err(refused(host, &allowance));
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

/// The refusal of `host`, a local address not allowed, naming what allows it.
pub(super) fn refused(host: &str, allowance: &str) -> Refusal {
    Refusal::new(
        Decision::LocalRefused,
        ErrorBody::new(GatewayErrorKind::LocalUpstreamRefused, host).with_message(format!(
            "{host} is a loopback, private or link-local address, which agents may not reach. Do not retry; use a public address, or, if this is intended, the person who runs Palisade can allow it with `palisade vault local allow {allowance}` (in force at once)."
        )),
    )
}
