//! Phase 4, policy: rules and secrets are matched (`palisade_policy`), per layer the
//! first matching rule by priority, the stricter layer winning. When a rule that looks
//! inside bodies (`--body-contains`) may decide, the whole body is read first (up to
//! `--max-judged-body`; larger is refused, never judged on a part), and a gzip or
//! deflate body is judged decoded and as sent, so compression cannot hide what a rule
//! looks for from an upstream that decodes, nor one that does not.

use super::{Decision, Refusal, RequestBody};
use crate::body::ReadError;
use crate::body_budget::Exhausted;
use crate::state::Shared;
use palisade_policy::{
    AgentName, ErrorBody, Evaluation, GatewayErrorKind, PolicySet, RequestFacts, RulePolicy,
};
use std::borrow::Cow;
use std::io::Read;

pub(super) async fn judge<'p>(
    shared: &Shared,
    policy: &'p PolicySet,
    facts: RequestFacts<'_>,
    headers: &http::HeaderMap,
    body: &mut RequestBody,
) -> Result<Evaluation<'p>, Refusal> {
    if !policy.needs_body(&facts) {
        return Ok(policy.evaluate(&facts));
    }
    let limit = shared.config.max_judged_body;
    let data = body.read(shared, facts.agent, limit).await.map_err(|e| {
        read_refusal(
            e,
            facts.host,
            Decision::TooLargeToInspect,
            GatewayErrorKind::RequestTooLargeToInspect,
        )
    })?;
    let view = judged_view(headers, data, limit, facts.host)?;
    let judged = RequestFacts {
        body: Some(&view),
        ..facts
    };
    Ok(policy.evaluate(&judged))
}

/// A POST of a URL-encoded form: Rails (Rack::MethodOverride), Symfony and Laravel take
/// a `_method` field in its body for the method, as they take the query parameter the
/// canonical phase refuses. Such a body is read whole (as for a body rule, or for the
/// approval of a held request: `held` says which, and so which refusal a body too large
/// to read gets) and a `_method` field in it naming another method is refused.
/// Only where a rule for the host names a method: elsewhere no rule decides by it, and
/// an upload (`curl --data-binary` says it is a form) streams as before.
pub(super) async fn check_form(
    shared: &Shared,
    policy: &PolicySet,
    agent: &AgentName,
    parts: &http::request::Parts,
    target: &super::Target,
    body: &mut RequestBody,
    held: bool,
) -> Result<(), Refusal> {
    let host = target.host.as_str();
    if !is_form_post(&parts.method, &parts.headers)
        || !policy.rules_name_a_method(host, target.port)
    {
        return Ok(());
    }
    let (decision, kind) = if held {
        (
            Decision::TooLargeForApproval,
            GatewayErrorKind::RequestTooLargeForApproval,
        )
    } else {
        (
            Decision::TooLargeToInspect,
            GatewayErrorKind::RequestTooLargeToInspect,
        )
    };
    let limit = shared.config.max_judged_body;
    let data = body
        .read(shared, agent, limit)
        .await
        .map_err(|e| read_refusal(e, host, decision, kind))?;
    check_form_method(&parts.headers, data, limit, &parts.method, host)
}

/// A POST Rack or PHP would parse as a URL-encoded form: one that says so (the media
/// type cut at `;`, `,` or white space, as PHP cuts it), or one that names no type at
/// all (Rack takes a POST without `Content-Type` for a form).
fn is_form_post(method: &http::Method, headers: &http::HeaderMap) -> bool {
    if method != http::Method::POST {
        return false;
    }
    let mut types = headers
        .get_all(http::header::CONTENT_TYPE)
        .iter()
        .peekable();
    if types.peek().is_none() {
        return true;
    }
    types.any(|value| {
        let text = String::from_utf8_lossy(value.as_bytes());
        text.split([';', ',', ' ', '\t'])
            .find(|part| !part.is_empty())
            .is_some_and(|kind| kind.eq_ignore_ascii_case("application/x-www-form-urlencoded"))
    })
}

/// Refuses a form body with a `_method` field (as PHP reads names: `.method`, `+method`)
/// naming another method than the one sent: a rule judged the request as a POST, and
/// the server would run it as that method (a DELETE a rule blocks).
fn check_form_method(
    headers: &http::HeaderMap,
    data: &[u8],
    limit: usize,
    method: &http::Method,
    host: &str,
) -> Result<(), Refusal> {
    let decoded = decoded_view(headers, data, limit, host)?;
    for (name, value) in form_urlencoded::parse(&decoded) {
        if super::canonical::is_method_parameter(&name)
            && !value.trim().eq_ignore_ascii_case(method.as_str())
        {
            return Err(Refusal::new(
                Decision::AmbiguousMethod,
                ErrorBody::new(GatewayErrorKind::AmbiguousMethod, host).with_message(format!(
                    "The method of this request to {host} was refused: it is sent as {method} with a form field _method naming another method, which some servers run instead. The gateway judges a request by its method, so send the method itself."
                )),
            ));
        }
    }
    Ok(())
}

pub(super) fn blocked(host: &str, rule: &RulePolicy) -> Refusal {
    Refusal::new(
        Decision::Blocked,
        ErrorBody::new(GatewayErrorKind::BlockedByPolicy, host).with_rule(&rule.name),
    )
}

pub(super) fn default_denied(host: &str, agent: &AgentName) -> Refusal {
    Refusal::new(
        Decision::DefaultDenied,
        ErrorBody::for_agent(
            GatewayErrorKind::BlockedByDefaultPolicy,
            host,
            Some(agent.as_str()),
        ),
    )
}

/// A body that could not be read whole: too large (`decision`/`kind` say for what) or broken.
pub(super) fn read_refusal(
    error: ReadError,
    host: &str,
    decision: Decision,
    kind: GatewayErrorKind,
) -> Refusal {
    match error {
        ReadError::TooLarge { .. } => Refusal::of(decision, kind, host),
        ReadError::Busy(exhausted) => {
            let reason = match exhausted {
                Exhausted::Agent(limit) => format!(
                    "this agent's other requests already hold {} of request bodies in the gateway, its share",
                    size(limit)
                ),
                Exhausted::Gateway(limit) => format!(
                    "the gateway already holds {} of request bodies, all it keeps at once",
                    size(limit)
                ),
            };
            Refusal::new(
                Decision::TooManyBufferedBodies,
                ErrorBody::new(GatewayErrorKind::TooManyBufferedBodies, host).with_message(
                    format!(
                        "The body of this request to {host} must be read to judge it, and {reason}. Retry when those requests are done."
                    ),
                ),
            )
        }
        other => Refusal::new(
            Decision::BodyUnreadable,
            ErrorBody::new(GatewayErrorKind::BadRequest, host)
                .with_message(format!("could not read the request body: {other}")),
        ),
    }
}

/// What a body rule looks in: the body, and for a compressed one its decoded bytes
/// followed by the bytes as sent (after a NUL). An upstream that does not decode
/// request bodies (most do not) reads the bytes as they are, and a gzip header carries
/// text that decoding drops (its file name and comment fields).
fn judged_view<'b>(
    headers: &http::HeaderMap,
    data: &'b [u8],
    limit: usize,
    host: &str,
) -> Result<Cow<'b, [u8]>, Refusal> {
    Ok(match decoded_view(headers, data, limit, host)? {
        Cow::Owned(mut decoded) => {
            decoded.push(0);
            decoded.extend_from_slice(data);
            Cow::Owned(decoded)
        }
        sent => sent,
    })
}

/// The body as the upstream will understand it: decoded when it is sent compressed
/// (`Content-Encoding: gzip` or `deflate`, at most `limit` bytes once decoded), refused
/// when compressed in any other way.
pub(super) fn decoded_view<'b>(
    headers: &http::HeaderMap,
    data: &'b [u8],
    limit: usize,
    host: &str,
) -> Result<Cow<'b, [u8]>, Refusal> {
    let mut codings = Vec::new();
    for value in headers.get_all(http::header::CONTENT_ENCODING) {
        let Ok(text) = value.to_str() else {
            return Err(unsupported(host));
        };
        codings.extend(
            text.split(',')
                .map(|c| c.trim().to_ascii_lowercase())
                .filter(|c| !c.is_empty() && c != "identity"),
        );
    }
    let decoded = match codings.as_slice() {
        [] => return Ok(Cow::Borrowed(data)),
        [one] if one == "gzip" || one == "x-gzip" => {
            read_limited(flate2::read::MultiGzDecoder::new(data), limit)
        }
        [one] if one == "deflate" => {
            // One zlib stream and nothing after it: decoders differ on what follows
            // (most stop at the first stream's end), so a second stream a rule never
            // saw could be read by the upstream. gzip's members are all read instead.
            let mut decoder = flate2::bufread::ZlibDecoder::new(data);
            match read_limited(&mut decoder, limit) {
                Some(Ok(_)) if !decoder.get_ref().is_empty() => Some(Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "data after the deflate stream",
                ))),
                read => read,
            }
        }
        _ => return Err(unsupported(host)),
    };
    match decoded {
        Some(Ok(bytes)) => Ok(Cow::Owned(bytes)),
        Some(Err(_)) => Err(Refusal::new(
            Decision::BodyUnreadable,
            ErrorBody::new(GatewayErrorKind::BadRequest, host).with_message(
                "The request body does not decode with its Content-Encoding; send it uncompressed or correctly compressed.",
            ),
        )),
        None => Err(Refusal::of(
            Decision::TooLargeToInspect,
            GatewayErrorKind::RequestTooLargeToInspect,
            host,
        )),
    }
}

/// Reads a decoder to its end; `None` when it yields more than `limit` bytes.
fn read_limited(reader: impl Read, limit: usize) -> Option<std::io::Result<Vec<u8>>> {
    let mut out = Vec::new();
    match reader.take(limit as u64 + 1).read_to_end(&mut out) {
        Ok(_) if out.len() > limit => None,
        Ok(_) => Some(Ok(out)),
        Err(e) => Some(Err(e)),
    }
}

fn unsupported(host: &str) -> Refusal {
    Refusal::of(
        Decision::UnsupportedEncoding,
        GatewayErrorKind::UnsupportedContentEncoding,
        host,
    )
}

/// `bytes` for a person: whole MiB or KiB where exact, bytes otherwise.
fn size(bytes: usize) -> String {
    const MIB: usize = 1024 * 1024;
    if bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn headers(encoding: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::CONTENT_ENCODING,
            http::HeaderValue::from_str(encoding).unwrap(),
        );
        h
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn compressed_bodies_are_judged_decoded() {
        let plain = br#"{"to":"attacker@evil.example"}"#;
        let compressed = gzip(plain);
        let view = decoded_view(&headers("gzip"), &compressed, 1024, "h").unwrap();
        assert_eq!(&view[..], plain);
        let view = decoded_view(&http::HeaderMap::new(), plain, 1024, "h").unwrap();
        assert_eq!(&view[..], plain);
        let view = decoded_view(&headers("identity"), plain, 1024, "h").unwrap();
        assert_eq!(&view[..], plain);
    }

    /// Text a gzip header carries (a comment here) is judged too: an upstream that
    /// does not decode request bodies reads it as it was sent.
    #[test]
    fn a_compressed_body_is_judged_as_sent_too() {
        let mut with_comment = vec![0x1f, 0x8b, 8, 0x10, 0, 0, 0, 0, 0, 0xff];
        with_comment.extend_from_slice(b"&action=EVILNEEDLE&x=\0");
        let plain = gzip(b"action=harmless");
        with_comment.extend_from_slice(&plain[10..]);
        let view = judged_view(&headers("gzip"), &with_comment, 1024, "h").unwrap();
        let contains = |needle: &[u8]| view.windows(needle.len()).any(|w| w == needle);
        assert!(contains(b"action=harmless"), "decoded");
        assert!(contains(b"EVILNEEDLE"), "as sent");
        let plain_view = judged_view(&http::HeaderMap::new(), b"x=1", 1024, "h").unwrap();
        assert_eq!(&plain_view[..], b"x=1");
    }

    #[test]
    fn unknown_stacked_broken_and_oversized_encodings_are_refused() {
        let plain = b"hello";
        for encoding in ["br", "zstd", "gzip, gzip", "compress"] {
            let refused = decoded_view(&headers(encoding), plain, 1024, "h").unwrap_err();
            assert_eq!(
                refused.decision,
                Decision::UnsupportedEncoding,
                "{encoding}"
            );
        }
        let broken = decoded_view(&headers("gzip"), b"not gzip", 1024, "h").unwrap_err();
        assert_eq!(broken.decision, Decision::BodyUnreadable);
        // A second zlib stream after the first, which a rule would not see.
        let zlib = |data: &[u8]| {
            let mut encoder =
                flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(data).unwrap();
            encoder.finish().unwrap()
        };
        let one = zlib(b"{\"q\":\"ok\"}");
        let view = decoded_view(&headers("deflate"), &one, 1024, "h").unwrap();
        assert_eq!(&view[..], b"{\"q\":\"ok\"}");
        let mut two = one.clone();
        two.extend(zlib(b"{\"q\":\"DROPTABLE\"}"));
        let refused = decoded_view(&headers("deflate"), &two, 1024, "h").unwrap_err();
        assert_eq!(refused.decision, Decision::BodyUnreadable);
        // A small body that decodes past the limit (a zip bomb) is refused, not read.
        let bomb = gzip(&vec![b'a'; 1 << 20]);
        assert!(bomb.len() < 4096);
        let refused = decoded_view(&headers("gzip"), &bomb, 64 * 1024, "h").unwrap_err();
        assert_eq!(refused.decision, Decision::TooLargeToInspect);
    }
}
