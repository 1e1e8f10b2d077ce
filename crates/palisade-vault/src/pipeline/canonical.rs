//! Phase 2, canonical: the request's path is rewritten once into its canonical form
//! (`palisade_policy::canonical`), and ambiguous spellings are refused with 400. Every
//! later phase, and the upstream, sees only this form: the request forwarded is the
//! request judged.

use super::{Decision, Refusal, Target};
use palisade_policy::{CanonicalPath, ErrorBody, GatewayErrorKind};

pub(super) fn canonicalize(
    parts: &mut http::request::Parts,
    target: &Target,
) -> Result<CanonicalPath, Refusal> {
    let raw = parts.uri.path();
    // An absolute-form request for `http://host` has an empty path: that is `/`.
    let raw = if raw.is_empty() { "/" } else { raw };
    let path = CanonicalPath::parse(raw).map_err(|reason| {
        Refusal::new(
            Decision::AmbiguousPath,
            ErrorBody::new(GatewayErrorKind::AmbiguousPath, &target.host).with_message(format!(
                "The path of this request to {} was refused: {reason}. Servers read such a path in different ways, so the gateway cannot judge it; send the plain path instead.",
                target.host
            )),
        )
    })?;
    if path.as_str() != parts.uri.path() {
        let path_and_query = match parts.uri.query() {
            Some(query) => format!("{path}?{query}"),
            None => path.to_string(),
        };
        let mut uri = http::uri::Builder::new();
        if let Some(scheme) = parts.uri.scheme() {
            uri = uri.scheme(scheme.clone());
        }
        if let Some(authority) = parts.uri.authority() {
            uri = uri.authority(authority.clone());
        }
        parts.uri = uri.path_and_query(path_and_query).build().map_err(|_| {
            Refusal::of(
                Decision::BadRequest,
                GatewayErrorKind::BadRequest,
                &target.host,
            )
        })?;
    }
    Ok(path)
}
