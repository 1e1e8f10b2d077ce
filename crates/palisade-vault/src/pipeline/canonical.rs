//! Phase 2, canonical: the request is brought into the one form every later phase and
//! the upstream see, so the request forwarded is the request judged.
//!
//! - The path is rewritten once into its canonical form (`palisade_policy::canonical`);
//!   ambiguous spellings are refused with 400.
//! - The method must be spelt as the standard spells it: a lower-case `post` is refused,
//!   because servers that ignore case (Flask, Django) would run the POST a `POST` rule
//!   exists to hold. A method-override header naming another method is refused for the
//!   same reason, and so is a `_method` query parameter (Symfony and Laravel read it
//!   from the query of a POST). A path-override header (`X-Original-URL`,
//!   `X-Rewrite-URL`) is refused: some servers route by it instead of the path judged.
//!   So is a header naming another host than the one judged (`X-Forwarded-Host`,
//!   `X-Host`, `Forwarded: host=`): frameworks behind a proxy they trust route by it or
//!   build links from it.
//! - Hop-by-hop headers, and every header the agent names in `Connection`, are removed
//!   here, before judging: removed later, they could take away the injected credential
//!   or a header the approver saw.

use super::{Decision, Refusal, Target};
use crate::respond::{is_websocket_upgrade, strip_hop_by_hop};
use palisade_policy::{CanonicalPath, ErrorBody, GatewayErrorKind};

/// Headers through which some frameworks let a request claim another method than the
/// one it was sent with (Google APIs, Rails, Laravel, ASP.NET).
pub(crate) const METHOD_OVERRIDES: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Headers through which some servers let a request claim another path than the one
/// it was sent to (IIS's URL Rewrite, Symfony behind a proxy it trusts).
const PATH_OVERRIDES: [&str; 3] = ["x-original-url", "x-rewrite-url", "x-original-uri"];

/// Headers through which some servers let a request claim another host than the one it
/// was sent to (Django, Rails, Express and Traefik behind a proxy they trust; `Forwarded`
/// is read for its `host=` parameter).
const HOST_OVERRIDES: [&str; 9] = [
    "x-forwarded-host",
    "x-host",
    "x-forwarded-server",
    "x-http-host-override",
    "x-original-host",
    "x-original-forwarded-host",
    "x-forwarded-hostname",
    "x-backend-host",
    "x-proxy-host",
];

pub(super) fn canonicalize(
    parts: &mut http::request::Parts,
    target: &Target,
) -> Result<CanonicalPath, Refusal> {
    check_method(parts, target)?;
    check_path_overrides(parts, target)?;
    check_host_overrides(parts, target)?;
    let websocket = parts.version == http::Version::HTTP_11 && is_websocket_upgrade(&parts.headers);
    if websocket && declares_a_body(&parts.headers) {
        // The body goes upstream as the handshake's, and a server that upgrades anyway
        // reads it as frames the agent-side check never saw.
        return Err(Refusal::new(
            Decision::BadRequest,
            ErrorBody::new(GatewayErrorKind::BadRequest, &target.host).with_message(format!(
                "This WebSocket handshake to {} carries a body, which a handshake has none of; send it without one.",
                target.host
            )),
        ));
    }
    strip_hop_by_hop(&mut parts.headers, websocket);
    join_cookies(&mut parts.headers);
    canonical_path(parts, target)
}

/// Several `cookie` fields (HTTP/2 clients send one per cookie) become one, joined with
/// `; ` as RFC 9113 (8.2.3) asks before an HTTP/1.1 hop: passed on as several `Cookie`
/// lines, servers that read only the first saw other cookies than the client sent.
fn join_cookies(headers: &mut http::HeaderMap) {
    let mut cookies = headers.get_all(http::header::COOKIE).iter();
    if cookies.next().is_none() || cookies.next().is_none() {
        return;
    }
    let mut joined = Vec::new();
    for value in headers.get_all(http::header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(value.as_bytes());
    }
    if let Ok(value) = http::HeaderValue::from_bytes(&joined) {
        headers.insert(http::header::COOKIE, value);
    }
}

/// Whether the head announces a body: a length other than 0, or a transfer coding.
fn declares_a_body(headers: &http::HeaderMap) -> bool {
    headers.contains_key(http::header::TRANSFER_ENCODING)
        || headers
            .get_all(http::header::CONTENT_LENGTH)
            .iter()
            .any(|length| length.to_str().map_or(true, |n| n.trim() != "0"))
}

fn check_method(parts: &http::request::Parts, target: &Target) -> Result<(), Refusal> {
    let method = parts.method.as_str();
    if method.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(ambiguous_method(
            target,
            format!(
                "its method {method:?} has lower-case letters, and servers that ignore case would run {:?}",
                method.to_ascii_uppercase()
            ),
        ));
    }
    for name in METHOD_OVERRIDES {
        for value in spelled_as(&parts.headers, name) {
            let same = value
                .to_str()
                .is_ok_and(|claimed| claimed.trim().eq_ignore_ascii_case(method));
            if !same {
                return Err(ambiguous_method(
                    target,
                    format!("it is sent as {method} with a {name} header naming another method"),
                ));
            }
        }
    }
    let query = parts.uri.query().unwrap_or_default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if is_method_parameter(&key) && !value.trim().eq_ignore_ascii_case(method) {
            return Err(ambiguous_method(
                target,
                format!("it is sent as {method} with a _method parameter naming another method"),
            ));
        }
    }
    Ok(())
}

/// The values of every header named `name` (lower case, with `-`) as a CGI-style server
/// reads names: `X_HTTP_Method_Override` is `HTTP_X_HTTP_METHOD_OVERRIDE` to PHP as
/// `X-HTTP-Method-Override` is, so `_` counts as `-`.
fn spelled_as<'h>(
    headers: &'h http::HeaderMap,
    name: &'h str,
) -> impl Iterator<Item = &'h http::HeaderValue> + 'h {
    headers.iter().filter_map(move |(header, value)| {
        let header = header.as_str();
        let same = header.len() == name.len()
            && header
                .bytes()
                .zip(name.bytes())
                .all(|(a, b)| a == b || (a == b'_' && b == b'-'));
        same.then_some(value)
    })
}

/// Refuses a request with a path-override header: the rules judge the path it was
/// sent to, and such a server would act on the path the header names (a block rule on
/// `/admin/*` passed `GET /public` with `X-Original-URL: /admin/users`).
fn check_path_overrides(parts: &http::request::Parts, target: &Target) -> Result<(), Refusal> {
    let Some(name) = PATH_OVERRIDES
        .into_iter()
        .find(|name| spelled_as(&parts.headers, name).next().is_some())
    else {
        return Ok(());
    };
    Err(Refusal::new(
        Decision::AmbiguousPath,
        ErrorBody::new(GatewayErrorKind::AmbiguousPath, &target.host).with_message(format!(
            "The path of this request to {} was refused: it carries a {name} header, through which some servers act on another path than the one judged. Send the request to the path itself, without that header.",
            target.host
        )),
    ))
}

/// Refuses a request with a header that names another host than the one it is sent to:
/// the rules and secrets judge that host, and a server that trusts the header would act
/// for the host it names (route to it, or put it in the links it sends out). A header
/// naming the judged host itself, as `Host` does, is left alone.
fn check_host_overrides(parts: &http::request::Parts, target: &Target) -> Result<(), Refusal> {
    let named = HOST_OVERRIDES
        .into_iter()
        .flat_map(|name| {
            spelled_as(&parts.headers, name).flat_map(move |value| {
                value
                    .as_bytes()
                    .split(|&b| b == b',')
                    .map(move |item| (name, item.to_vec()))
            })
        })
        .chain(
            spelled_as(&parts.headers, "forwarded")
                .flat_map(|value| forwarded_hosts(value.as_bytes()))
                .map(|host| ("forwarded", host)),
        )
        .find(|(_, claimed)| !names_target(claimed, target));
    let Some((name, _)) = named else {
        return Ok(());
    };
    Err(Refusal::new(
        Decision::AmbiguousHost,
        ErrorBody::new(GatewayErrorKind::AmbiguousHost, &target.host).with_message(format!(
            "This request to {} was refused: its {name} header names another host, and servers that trust that header act for the host it names instead of the one judged. Send the request to that host itself, without the header.",
            target.host
        )),
    ))
}

/// The `host=` parameters of a `Forwarded` header (RFC 7239), unquoted: every element,
/// every pair, the name in any case.
fn forwarded_hosts(value: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    value.split(|&b| b == b',' || b == b';').filter_map(|pair| {
        let at = pair.iter().position(|&b| b == b'=')?;
        let (name, value) = (pair[..at].trim_ascii(), pair[at + 1..].trim_ascii());
        name.eq_ignore_ascii_case(b"host").then(|| {
            let unquoted = value
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(value);
            unquoted.to_vec()
        })
    })
}

/// Whether `claimed` (a header's host, with or without a port) names the judged host:
/// the host alone in any case, or with the judged port.
fn names_target(claimed: &[u8], target: &Target) -> bool {
    let Ok(claimed) = std::str::from_utf8(claimed.trim_ascii()) else {
        return false;
    };
    let claimed = claimed.to_ascii_lowercase();
    let bracketed = if target.host.contains(':') {
        format!("[{}]", target.host)
    } else {
        target.host.clone()
    };
    claimed == bracketed || claimed == format!("{bracketed}:{}", target.port)
}

/// Whether a (decoded) query or form field name is `_method` as some server reads it:
/// `method` with any of the marks servers drop or turn into `_` around it. PHP
/// (Symfony, Laravel) drops leading spaces, turns a space, a dot or an unclosed `[`
/// into `_` and ends a name at a NUL (` _method`, `.method`, `[method`,
/// `_method%00x`); Rack drops leading brackets and a trailing one (`]_method`,
/// `_method]`); Slim reads `_METHOD`; Express's extended parser reads `[_method]`. So
/// the name counts when, cut at a NUL and without every `_`, `.`, `[`, `]` and white
/// space, it is `method` in any case, and it had at least one such mark (a field named
/// plainly `method` is no framework's override).
/// The names of the override headers count as field names too (ASP.NET MVC reads
/// `X-HTTP-Method-Override` from the form and the query as well). A name ends at a NUL,
/// as PHP reads it. (A form in UTF-16, whose names are full of NULs, is refused for its
/// declared charset; an upload `curl --data-binary` calls a form has NULs of its own.)
pub(super) fn is_method_parameter(key: &str) -> bool {
    let key = key.split('\0').next().unwrap_or_default();
    let marks = |c: char| matches!(c, '_' | '.' | '[' | ']') || c.is_whitespace();
    let core: String = key.chars().filter(|&c| !marks(c)).collect();
    let header = key.trim().to_ascii_lowercase().replace('_', "-");
    (core.eq_ignore_ascii_case("method") && key.chars().any(marks))
        || METHOD_OVERRIDES.contains(&header.as_str())
}

fn ambiguous_method(target: &Target, reason: String) -> Refusal {
    Refusal::new(
        Decision::AmbiguousMethod,
        ErrorBody::new(GatewayErrorKind::AmbiguousMethod, &target.host).with_message(format!(
            "The method of this request to {} was refused: {reason}. The gateway judges a request by its method, so send the method itself, in capitals, and no override header.",
            target.host
        )),
    )
}

fn canonical_path(
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

#[cfg(test)]
mod tests {
    #[test]
    fn cookie_fields_become_one() {
        let mut headers = http::HeaderMap::new();
        headers.append(http::header::COOKIE, "a=1".parse().unwrap());
        headers.append(http::header::COOKIE, "b=2".parse().unwrap());
        super::join_cookies(&mut headers);
        let cookies: Vec<_> = headers.get_all(http::header::COOKIE).iter().collect();
        assert_eq!(cookies, ["a=1; b=2"]);
        let mut one = http::HeaderMap::new();
        one.append(http::header::COOKIE, "a=1".parse().unwrap());
        super::join_cookies(&mut one);
        assert_eq!(one.get_all(http::header::COOKIE).iter().count(), 1);
    }

    use super::{forwarded_hosts, is_method_parameter};

    #[test]
    fn forwarded_hosts_are_read_from_every_element_and_pair() {
        let hosts: Vec<Vec<u8>> =
            forwarded_hosts(b"for=192.0.2.60;proto=http, by=x;Host=\"admin.example\" ,host=b")
                .collect();
        assert_eq!(hosts, [b"admin.example".to_vec(), b"b".to_vec()]);
        assert_eq!(forwarded_hosts(b"for=1.2.3.4;hostname=x").count(), 0);
    }

    #[test]
    fn method_parameters_are_named_as_servers_name_them() {
        // PHP: a space or a dot becomes `_`, leading spaces go, a NUL ends the name, an
        // unclosed `[` becomes `_`; Slim: capitals; Express: `[_method]`; Rack: leading
        // brackets and a trailing one go.
        for name in [
            "_method",
            " method",
            ".method",
            " _method",
            " .method",
            "[method",
            "_METHOD",
            "_method\0x",
            "[_method]",
            "]_method",
            "[_method",
            "_method]",
            "\t_method",
            "__method",
            "[method]",
            // ASP.NET MVC reads the override header's name as a field too.
            "X-HTTP-Method-Override",
            "x_http_method",
            "X-Method-Override",
        ] {
            assert!(is_method_parameter(name), "{name:?}");
        }
        for name in [
            "method",
            "METHOD",
            "x_method",
            "",
            "methods",
            "payment_method",
            "_meth",
            "\0_method",
        ] {
            assert!(!is_method_parameter(name), "{name:?}");
        }
    }
}
