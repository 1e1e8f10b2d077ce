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

/// A POST whose body carries a `_method` field: Rails (Rack::MethodOverride), Symfony
/// and Laravel take one from a URL-encoded form or a multipart form for the method, as
/// they take the query parameter the canonical phase refuses, and Laravel from a JSON
/// object too. Such a body is read whole (as for a body rule, or for the approval of a
/// held request: `held` says which, and so which refusal a body too large to read gets)
/// and a `_method` field in it naming another method is refused.
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
    // Only a POST carries an override the servers read (and no other request pays
    // for reading its headers here).
    if parts.method != http::Method::POST {
        return Ok(());
    }
    let types = content_types(&parts.headers);
    let kinds = form_kinds(&parts.method, &types);
    if kinds.is_empty() || !policy.rules_name_a_method(host, target.port) {
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
    let decoded = decoded_view(&parts.headers, data, limit, host)?;
    let method = parts.method.as_str();
    // As decoded, and as sent: PHP, Rack and Tomcat parse the bytes as they come, and
    // a gzip body's header (its comment field) holds text its decoding never shows.
    let views: &[&[u8]] = match &decoded {
        std::borrow::Cow::Borrowed(_) => &[data],
        std::borrow::Cow::Owned(decoded) => &[decoded.as_slice(), data],
    };
    let overridden = !charsets_read_alike(&types)
        || views.iter().any(|view| {
            kinds.iter().any(|kind| match kind {
                FormKind::UrlEncoded => form_names_another_method(view, method),
                FormKind::Json => json_names_another_method(view, method),
                FormKind::Multipart => multipart_names_a_method(view, &types),
            })
        });
    match overridden {
        false => Ok(()),
        true => Err(Refusal::new(
            Decision::AmbiguousMethod,
            ErrorBody::new(GatewayErrorKind::AmbiguousMethod, host).with_message(format!(
                "The method of this request to {host} was refused: it is sent as {method} with a form field _method naming another method, which some servers run instead. The gateway judges a request by its method, so send the method itself."
            )),
        )),
    }
}

/// How a server may read a POST's body for its fields.
#[derive(Clone, Copy, Debug, PartialEq)]
enum FormKind {
    UrlEncoded,
    Json,
    Multipart,
}

/// Each way a server may read a POST's body for a `_method` field: as a URL-encoded
/// form when a `Content-Type` says so (the media type cut at `;`, `,` or white space,
/// as PHP cuts it) or when there is none or an empty one (Rack takes such a POST for a
/// form); as JSON when a type has `/json` or `+json` in it, as Laravel decides; as a
/// multipart form when a type starts `multipart/` (Rack parses `form-data`, `mixed`
/// and `related`), and then as a URL-encoded form too (Rack falls back to that when
/// the body has no part of the boundary it names). Nothing for other methods: the
/// servers take the field from a POST only.
/// `types` are the request's [`content_types`].
fn form_kinds(method: &http::Method, types: &[String]) -> Vec<FormKind> {
    if method != http::Method::POST {
        return Vec::new();
    }
    let types: Vec<&String> = types
        .iter()
        .filter(|text| !text.trim().is_empty())
        .collect();
    if types.is_empty() {
        return vec![FormKind::UrlEncoded];
    }
    let mut kinds = Vec::new();
    let mut add = |kind| {
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    };
    for text in &types {
        let media = text
            .split([';', ',', ' ', '\t'])
            .find(|part| !part.is_empty())
            .unwrap_or_default();
        if media == "application/x-www-form-urlencoded" {
            add(FormKind::UrlEncoded);
        }
        if text.contains("/json") || text.contains("+json") {
            add(FormKind::Json);
        }
        if media.starts_with("multipart/") {
            add(FormKind::Multipart);
            add(FormKind::UrlEncoded);
        }
    }
    kinds
}

/// Whether a URL-encoded form has a `_method` field (as PHP reads names: `.method`,
/// `+method`) naming another method than the one sent: a rule judged the request as a
/// POST, and the server would run it as that method (a DELETE a rule blocks).
fn form_names_another_method(body: &[u8], method: &str) -> bool {
    form_urlencoded::parse(body).any(|(name, value)| {
        super::canonical::is_method_parameter(&name) && !value.trim().eq_ignore_ascii_case(method)
    })
}

/// Whether a JSON object has a `_method` member naming another method (anything but a
/// string naming the one sent). Of members named alike the last counts, as in PHP's
/// and JavaScript's parsers. A body that is no JSON object to serde_json may still be
/// one to another parser (PHP and JavaScript nest deeper, PHP reads `1e999`), so one
/// that names `method` anywhere, or has an escape that could spell it, counts too.
fn json_names_another_method(body: &[u8], method: &str) -> bool {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(object)) => object.iter().any(|(name, value)| {
            super::canonical::is_method_parameter(name)
                && !value
                    .as_str()
                    .is_some_and(|claimed| claimed.trim().eq_ignore_ascii_case(method))
        }),
        Ok(_) => false,
        // Read as text, its `\u` escapes decoded, quotes and white space gone: an
        // override name where a key starts counts (`"http.request.method"` does not).
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let plain: String = unescape_json(&text)
                .chars()
                .filter(|c| !c.is_whitespace() && *c != '"')
                .collect();
            names_an_override(&plain.to_ascii_lowercase())
        }
    }
}

/// `text` with its `\uXXXX` escapes decoded (others kept), for a body serde_json
/// cannot read.
fn unescape_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("\\u") {
        out.push_str(&rest[..at]);
        let hex = rest.get(at + 2..at + 6).unwrap_or_default();
        match u32::from_str_radix(hex, 16).ok().and_then(char::from_u32) {
            Some(c) if hex.len() == 4 => {
                out.push(c);
                rest = &rest[at + 6..];
            }
            _ => {
                out.push_str("\\u");
                rest = &rest[at + 2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The request's `Content-Type` values, lower case.
fn content_types(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .get_all(http::header::CONTENT_TYPE)
        .iter()
        .map(|value| String::from_utf8_lossy(value.as_bytes()).to_ascii_lowercase())
        .collect()
}

/// Whether every charset the body is said to be in reads the field names as UTF-8
/// does: a form in UTF-16 or EBCDIC (`charset=IBM037`), which Tomcat and ASP.NET
/// decode as declared, spells `_method` in bytes no check here reads as that name.
fn charsets_read_alike(types: &[String]) -> bool {
    // Every `charset=` in the header, as a parameter of its own or not (Tomcat finds
    // the first such text anywhere, `xcharset=` included).
    types.iter().all(|text| {
        text.match_indices("charset=").all(|(at, found)| {
            let value = text[at + found.len()..]
                .split([';', ','])
                .next()
                .unwrap_or_default()
                .trim()
                .trim_matches('"');
            ascii_compatible(value)
        })
    })
}

/// Whether a charset reads ASCII's bytes as ASCII (so `_method` is spelled the same):
/// UTF-8 and the single- and multi-byte charsets built on ASCII; not UTF-16 or -32,
/// UTF-7, EBCDIC, or one not known here.
fn ascii_compatible(charset: &str) -> bool {
    matches!(
        charset,
        "utf-8"
            | "utf8"
            | "us-ascii"
            | "ascii"
            | "latin1"
            | "shift_jis"
            | "sjis"
            | "gbk"
            | "gb2312"
            | "gb18030"
            | "big5"
            | "euc-jp"
            | "euc-kr"
            | "euc-cn"
            | "koi8-r"
            | "koi8-u"
    ) || ["iso-8859-", "windows-125", "cp125"].iter().any(|prefix| {
        charset
            .strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// Whether a multipart body may carry a `_method` part, as a server could read it.
/// Hand-written as a scan, not a parse, and strict: the boundary must be named once;
/// every part's head (between a line with the boundary and the first empty line) must
/// be plain `Name: value` lines, none folded, none without a colon (PHP joins a line
/// without one to the one before, Rack folds); and no head line may name `method`
/// override anywhere once white space, quotes, backslashes and escapes are gone (PHP reads
/// `name=` in any place and in single quotes, Rack takes a name from `Content-ID`,
/// and its pattern for `Content-Disposition` matches inside any head line). Anywhere
/// in the body, a line naming `Content-Disposition` or `Content-ID` and `method` is
/// refused too, whichever boundary a server takes. A file holding such a line is
/// refused as well; the message says why.
fn multipart_names_a_method(body: &[u8], types: &[String]) -> bool {
    let Some(boundary) = boundary_of(types) else {
        return true;
    };
    let delimiter = format!("--{boundary}");
    let text = String::from_utf8_lossy(body);
    let normalized = |line: &str| -> String {
        let plain: String = line
            .chars()
            .filter(|c| !c.is_whitespace() && !matches!(c, '"' | '\\'))
            .collect();
        let plain = percent_encoding::percent_decode_str(&plain)
            .decode_utf8_lossy()
            .to_ascii_lowercase();
        // A file's name is no field's (`-F f=@_method.rb`).
        plain
            .split(';')
            .filter(|parameter| !parameter.starts_with("filename"))
            .collect::<Vec<_>>()
            .join(";")
    };
    let mut in_head = false;
    for line in text.split('\n') {
        let (line, crlf) = match line.strip_suffix('\r') {
            Some(line) => (line, true),
            None => (line, false),
        };
        let plain = normalized(line);
        let names_one = names_an_override(&plain);
        if names_one && (plain.contains("content-disposition") || plain.contains("content-id")) {
            return true;
        }
        let lower = line.to_ascii_lowercase();
        if lower.contains(&delimiter) {
            // The closing delimiter (`--b--`) starts no part.
            in_head = !lower.contains(&format!("{delimiter}--"));
            continue;
        }
        if !in_head {
            continue;
        }
        // A head ends at CRLF CRLF for Rack, whose pattern for the name then runs on
        // across lines a bare LF ends: only CRLF heads are read alike.
        if !crlf {
            return true;
        }
        if line.is_empty() {
            in_head = false;
            continue;
        }
        // RFC 2231 continuations (`name*0=`), which Werkzeug joins.
        let continued = plain
            .match_indices("name*")
            .any(|(at, found)| plain[at + found.len()..].starts_with(|c: char| c.is_ascii_digit()));
        if line.starts_with([' ', '\t']) || !line.contains(':') || names_one || continued {
            return true;
        }
    }
    false
}

/// The boundary of a multipart body, when the headers name it plainly and once: one
/// `boundary=` in all of them, as a parameter of its own, a token or a quoted string
/// that ends the parameter, no comma in the type. Otherwise servers cut it differently
/// (PHP at a comma or the closing quote, and at the first `boundary=` anywhere; Rack at
/// `"`, `;` or `,`), and a body whose parts the check here cannot find is refused.
fn boundary_of(types: &[String]) -> Option<String> {
    let mentions: usize = types.iter().map(|t| t.matches("boundary=").count()).sum();
    if mentions != 1 {
        return None;
    }
    let text = types.iter().find(|t| t.contains("boundary="))?;
    if text.contains(',') {
        return None;
    }
    let parameter = text
        .split(';')
        .skip(1)
        .map(str::trim)
        .find(|parameter| parameter.starts_with("boundary="))?;
    let value = &parameter["boundary=".len()..];
    let boundary = match value.strip_prefix('"') {
        Some(quoted) => quoted
            .strip_suffix('"')
            .filter(|inner| !inner.contains('"'))?,
        None => value,
    };
    let plain = !boundary.is_empty()
        && boundary.len() <= 70
        && !boundary.contains(['"', '\\'])
        && (value.starts_with('"') || !boundary.contains(char::is_whitespace));
    plain.then(|| boundary.to_string())
}

/// Whether a part's head line (lower case, without white space, double quotes,
/// backslashes and escapes) names an override field where a value starts (after `=`,
/// `:`, `;`, `,`, a single quote (PHP's quoting, RFC 2231's `utf-8''`) or at the
/// start): `method` with any of the marks servers drop or turn into `_`
/// before it (`=_method`, `=.method`, `:[_method]`), or an override header's name; a
/// field such as `payment_method` or plainly `method` is none.
fn names_an_override(plain: &str) -> bool {
    let starts_a_value =
        |before: &str| before.is_empty() || before.ends_with(['=', ':', ';', ',', '\'', '{']);
    let decorated = plain.match_indices("method").any(|(at, _)| {
        let before = &plain[..at];
        let bare = before.trim_end_matches(['_', '.', '[', ']']);
        bare.len() < before.len() && starts_a_value(bare)
    });
    let dashed = plain.replace('_', "-");
    decorated
        || super::canonical::METHOD_OVERRIDES.iter().any(|name| {
            dashed
                .match_indices(name)
                .any(|(at, _)| starts_a_value(&dashed[..at]))
        })
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

    #[test]
    fn bodies_are_read_for_fields_as_each_server_would() {
        let typed = |types: &[&str]| {
            let mut headers = http::HeaderMap::new();
            for kind in types {
                headers.append(http::header::CONTENT_TYPE, kind.parse().unwrap());
            }
            form_kinds(&http::Method::POST, &content_types(&headers))
        };
        assert_eq!(typed(&[]), [FormKind::UrlEncoded]);
        assert_eq!(
            typed(&["Application/JSON; charset=utf-8"]),
            [FormKind::Json]
        );
        assert_eq!(typed(&["text/plain+json"]), [FormKind::Json]);
        assert_eq!(
            typed(&["multipart/mixed; boundary=x"]),
            [FormKind::Multipart, FormKind::UrlEncoded]
        );
        assert_eq!(
            typed(&["application/x-www-form-urlencoded", "application/json"]),
            [FormKind::UrlEncoded, FormKind::Json]
        );
        assert!(typed(&["application/octet-stream"]).is_empty());
        assert_eq!(typed(&[" "]), [FormKind::UrlEncoded]);
        assert_eq!(
            typed(&["multipart/related"]),
            [FormKind::Multipart, FormKind::UrlEncoded]
        );
        let headers = http::HeaderMap::new();
        assert!(form_kinds(&http::Method::PUT, &content_types(&headers)).is_empty());
        // JSON: the last member of a name counts; only a string naming the method passes.
        assert!(json_names_another_method(
            br#"{"_method":"POST","_method":"PUT"}"#,
            "POST"
        ));
        assert!(!json_names_another_method(
            br#"{"_method":"PUT","_method":" post"}"#,
            "POST"
        ));
        assert!(json_names_another_method(br#"{"_method":null}"#, "POST"));
        assert!(!json_names_another_method(
            br#"[{"_method":"PUT"}]"#,
            "POST"
        ));
        assert!(!json_names_another_method(b"not json", "POST"));
        // Multipart: any part head naming the field, however the lines end, the name
        // is quoted or placed, or the head is folded; a boundary named twice.
        let types = |boundary: &str| vec![format!("multipart/form-data; boundary={boundary}")];
        for body in [
            "--x\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nPUT\r\n--x--",
            "--x\ncontent-disposition:form-data;name=_method\n\nPUT\n--x--",
            "--x\r\nContent-Disposition: form-data; filename=a; name=\".method\"\r\n",
            "--x\r\nContent-Disposition: form-data; name=\"_\\method\"\r\n",
            "--x\r\nContent-Disposition: form-data; name*=UTF-8''%5Fmethod\r\n",
            "--x\r\nContent-Disposition: form-data;\r\n name=\"_method\"\r\n\r\nPUT",
            "--x\r\nContent-Disposition: form-data; name=\" _method\"\r\n",
            "--x\r\nContent-Disposition: name=\"_method\"\r\n\r\nDELETE",
            "--x\r\nContent-Disposition: form-data; name='_method'\r\n\r\nDELETE",
            "--x\r\nContent-Disposition: form-data; x=1;\r\nname=_method\r\n\r\nDELETE",
            "--x\r\nContent-Disposition: form-data; name=\"_me\r\nthod\"\r\n\r\nDELETE",
            "--x\r\nContent-ID: _method\r\n\r\nDELETE",
            "--x\r\nX-A: Content-Disposition: x; name=_method\r\n\r\nDELETE",
        ] {
            assert!(
                multipart_names_a_method(body.as_bytes(), &types("x")),
                "{body:?}"
            );
        }
        for body in [
            "--x\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nthe method we use\r\n--x--",
            "--x\r\nContent-Disposition: form-data; name=\"method\"\r\n\r\nDELETE\r\n--x--",
            "--x\r\nContent-Disposition: form-data; name=\"payment_method\"\r\n\r\ncard\r\n--x--",
            "--x\r\nContent-Disposition: form-data; filename=\"a.txt\"\r\n\r\nfn method() {}\r\n--x--",
        ] {
            assert!(!multipart_names_a_method(body.as_bytes(), &types("x")), "{body:?}");
        }
        let twice = vec!["multipart/form-data; boundary=x; boundary=y".to_string()];
        assert!(multipart_names_a_method(b"--x\r\n\r\n--x--", &twice));
        assert!(multipart_names_a_method(
            b"--x--",
            &["multipart/form-data".to_string()]
        ));
        // Round four: a head ended by a bare LF (Rack reads on to CRLF CRLF), RFC 2231
        // continuations (Werkzeug joins them); a file's name is no field's.
        for body in [
            "--x\r\nContent-Disposition: form-data\n\n; name=_method\r\n\r\nDELETE\r\n--x--",
            "--x\r\nContent-Disposition: form-data; name*0=\"_me\"; name*1=\"thod\"\r\n\r\nDELETE",
        ] {
            assert!(
                multipart_names_a_method(body.as_bytes(), &types("x")),
                "{body:?}"
            );
        }
        let file = "--x\r\nContent-Disposition: form-data; name=\"f\"; filename=\"_method.rb\"\r\n\r\nputs 1\r\n--x--\r\n";
        assert!(!multipart_names_a_method(file.as_bytes(), &types("x")));
        // A boundary servers would cut otherwise than here.
        for header in [
            "multipart/form-data; boundary=aaa,x",
            "multipart/form-data; boundary=\"aaa\"x",
            "multipart/form-data; x=boundary=aaa; boundary=bbb",
            "multipart/form-data; x=boundary=aaa",
        ] {
            assert_eq!(boundary_of(&[header.to_string()]), None, "{header}");
        }
        assert_eq!(
            boundary_of(&["multipart/form-data; boundary=\"a b\"".to_string()]).as_deref(),
            Some("a b")
        );
        // JSON serde_json cannot read: an override name where a key starts counts, the
        // word elsewhere does not.
        assert!(!json_names_another_method(
            b"{\"http.request.method\":\"GET\"}\n{\"x\":1}\n",
            "POST"
        ));
        assert!(json_names_another_method(
            b"{\"a\":1}\n{\"\\u005fmethod\":\"DELETE\"}\n",
            "POST"
        ));
        // Charsets: UTF-8 and its subsets only.
        let typed = |text: &str| vec![text.to_string()];
        assert!(charsets_read_alike(&typed(
            "application/x-www-form-urlencoded; charset=utf-8"
        )));
        assert!(charsets_read_alike(&typed("application/json")));
        assert!(!charsets_read_alike(&typed(
            "application/x-www-form-urlencoded; charset=utf-16be"
        )));
        assert!(!charsets_read_alike(&typed(
            "application/json; charset=\"ibm037\""
        )));
    }

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
