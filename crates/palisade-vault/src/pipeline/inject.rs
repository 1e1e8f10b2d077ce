//! Phase 7, inject: the granted secret (most specific path, then priority) is written
//! into the request head. A credential never crosses a network in clear text: plain
//! HTTP gets one only to hosts explicitly allowed as local (loopback test servers).

use super::{Decision, Refusal, Scheme, Target};
use crate::state::Shared;
use palisade_policy::{ErrorBody, GatewayErrorKind, SecretPolicy};

pub(super) fn inject(
    shared: &Shared,
    target: &Target,
    secret: &SecretPolicy,
    parts: &mut http::request::Parts,
) -> Result<(), Refusal> {
    let host = target.host.as_str();
    if target.scheme == Scheme::Http && !shared.guard.host_allowed_local_at(host, target.port) {
        return Err(Refusal::new(
            Decision::PlaintextRefused,
            ErrorBody::new(GatewayErrorKind::BlockedByPolicy, host).with_message(format!(
                "A credential is configured for {host}, and credentials are only sent over HTTPS. Use https://{host}/... instead of http://."
            )),
        ));
    }
    secret.injection.apply(&secret.value, parts).map_err(|e| {
        Refusal::new(
            Decision::InjectionFailed,
            ErrorBody::new(GatewayErrorKind::BadRequest, host).with_message(format!(
                "The credential {:?} could not be applied to this request: {e}",
                secret.name
            )),
        )
    })
}
