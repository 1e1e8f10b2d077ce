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
    let allowed_local = shared.guard.host_allowed_local_at(host, target.port);
    // `localhost` is this machine whatever it resolves to (RFC 6761): not allowed, that
    // is the cause to name, not the missing HTTPS a local server does not have.
    let lower = host.to_ascii_lowercase();
    if !allowed_local && (lower == "localhost" || lower.ends_with(".localhost")) {
        return Err(super::local::refused(
            host,
            &format!("{host}:{}", target.port),
        ));
    }
    if target.scheme == Scheme::Http && !allowed_local {
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
