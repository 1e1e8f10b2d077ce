//! How a secret is written into a request.
//!
//! Spellings (as given on the CLI and stored in the database):
//! - `bearer` — `Authorization: Bearer {value}`, replacing any `Authorization` the client sent.
//! - `anthropic` — `x-api-key: {value}`; removes `Authorization` and any client `x-api-key`,
//!   because current SDKs send the placeholder key as a bearer token and older ones as
//!   `x-api-key`; a placeholder must never reach the API.
//! - `header:NAME` or `header:NAME:FORMAT` — sets header NAME (replacing), FORMAT contains
//!   `{value}` (e.g. `header:Authorization:token {value}`); only the first two `:` split.
//! - `query:NAME` — sets query parameter NAME (replacing any the client sent), percent-encoded.
//! - `path-template:TEMPLATE` — TEMPLATE contains `{value}` once, e.g. `/bot{value}/`.
//!   The literal text before `{value}` must start the request path; the characters from
//!   there up to the literal text after `{value}` (or the end) are replaced by the value,
//!   so both `/bot/sendMessage` and `/botPLACEHOLDER/sendMessage` become `/bot{value}/sendMessage`.

use crate::secret::SecretValue;
use percent_encoding::{
    percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS, NON_ALPHANUMERIC,
};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Injection {
    Bearer,
    Anthropic,
    Header {
        name: http::HeaderName,
        /// Contains `{value}`; `None` means the bare value.
        format: Option<String>,
    },
    Query {
        name: String,
    },
    PathTemplate {
        template: String,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InjectionError {
    #[error("injection {0:?} is invalid: {1}. Use bearer, anthropic, header:NAME[:FORMAT with {{value}}], query:NAME or path-template:/prefix{{value}}/")]
    Invalid(String, &'static str),
    /// The request does not fit the template (path-template whose prefix is absent).
    #[error("the request path does not match the secret's path template {0:?}")]
    PathMismatch(String),
    /// The secret value cannot be written as a header (control characters).
    #[error("the secret value cannot be sent in a header")]
    BadHeaderValue,
}

/// The placeholder a format or template holds for the secret.
const VALUE_MARK: &str = "{value}";

/// Query values: everything but RFC 3986 unreserved characters is escaped, so a value
/// can never add a parameter or end the query.
const QUERY_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Path values: escapes what would end the path or add a segment (`/`, `?`, `#`) and
/// what is not allowed in a URI, but keeps `:` so Telegram-style tokens read as sent.
const PATH_SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Headers that frame or route the message; a secret written there would break the
/// request or smuggle another one, so no injection may name them.
const FORBIDDEN_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
    "proxy-authorization",
];

impl Injection {
    /// Writes the secret into the request head. Never logs or returns the value.
    pub fn apply(
        &self,
        value: &SecretValue,
        parts: &mut http::request::Parts,
    ) -> Result<(), InjectionError> {
        match self {
            Injection::Bearer => {
                let header = sensitive_header(&format!("Bearer {}", value.expose()))?;
                parts.headers.insert(http::header::AUTHORIZATION, header);
            }
            Injection::Anthropic => {
                let header = sensitive_header(value.expose())?;
                parts.headers.remove(http::header::AUTHORIZATION);
                // insert() replaces every x-api-key the client sent, not just the first.
                parts.headers.insert(X_API_KEY, header);
            }
            Injection::Header { name, format } => {
                let header = match format {
                    Some(format) => sensitive_header(&format.replace(VALUE_MARK, value.expose()))?,
                    None => sensitive_header(value.expose())?,
                };
                parts.headers.insert(name.clone(), header);
            }
            Injection::Query { name } => {
                let path = parts.uri.path();
                let query = parts.uri.query().unwrap_or("");
                let rebuilt = with_query_param(path, query, name, value.expose());
                self.set_path_and_query(parts, rebuilt)?;
            }
            Injection::PathTemplate { template } => {
                let (before, after) = template
                    .split_once(VALUE_MARK)
                    .ok_or_else(|| InjectionError::Invalid(template.clone(), "no {value}"))?;
                let path = parts.uri.path();
                let Some(rest) = path.strip_prefix(before) else {
                    return Err(InjectionError::PathMismatch(template.clone()));
                };
                // What the client put where the value goes (nothing, or a placeholder)
                // ends where the template's literal text resumes.
                let replaced_len = match after {
                    "" => rest.len(),
                    after => rest.find(after).unwrap_or(rest.len()),
                };
                let encoded = utf8_percent_encode(value.expose(), PATH_SEGMENT);
                let mut rebuilt = String::with_capacity(path.len() + value.expose().len() + 16);
                rebuilt.push_str(before);
                rebuilt.extend(encoded);
                rebuilt.push_str(&rest[replaced_len..]);
                if let Some(query) = parts.uri.query() {
                    rebuilt.push('?');
                    rebuilt.push_str(query);
                }
                self.set_path_and_query(parts, rebuilt)?;
            }
        }
        Ok(())
    }

    /// Keeps scheme and authority (absolute-form requests) and swaps the path and query.
    fn set_path_and_query(
        &self,
        parts: &mut http::request::Parts,
        path_and_query: String,
    ) -> Result<(), InjectionError> {
        let rebuild_failed = || {
            InjectionError::Invalid(
                self.to_string(),
                "the request URI could not be rebuilt with the secret",
            )
        };
        let path_and_query =
            http::uri::PathAndQuery::try_from(path_and_query).map_err(|_| rebuild_failed())?;
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.path_and_query = Some(path_and_query);
        parts.uri = http::Uri::from_parts(uri).map_err(|_| rebuild_failed())?;
        Ok(())
    }

    /// Header names a client may have used for a placeholder key that this injection
    /// replaces (used to strip placeholders even when no secret is injected is NOT done;
    /// this is informational for summaries/redaction).
    pub fn header_names(&self) -> Vec<http::HeaderName> {
        match self {
            Injection::Bearer => vec![http::header::AUTHORIZATION],
            Injection::Anthropic => vec![http::header::AUTHORIZATION, X_API_KEY],
            Injection::Header { name, .. } => vec![name.clone()],
            Injection::Query { .. } | Injection::PathTemplate { .. } => Vec::new(),
        }
    }
}

/// Every spelling under which [`Injection::apply`] may write `value` into a request: as
/// is (a header, or inside a header's format), percent-encoded as a query value, and
/// percent-encoded as a path segment. An upstream that echoes its request sends one of
/// these back, which is what the gateway looks for in responses.
pub fn sent_forms(value: &str) -> Vec<String> {
    let mut forms = vec![value.to_string()];
    for set in [QUERY_COMPONENT, PATH_SEGMENT] {
        let form = utf8_percent_encode(value, set).to_string();
        if !forms.contains(&form) {
            forms.push(form);
        }
    }
    forms
}

const X_API_KEY: http::HeaderName = http::HeaderName::from_static("x-api-key");

/// A header value marked sensitive so HPACK never indexes it. The error carries no part
/// of the value.
fn sensitive_header(text: &str) -> Result<http::HeaderValue, InjectionError> {
    let mut header =
        http::HeaderValue::from_str(text).map_err(|_| InjectionError::BadHeaderValue)?;
    header.set_sensitive(true);
    Ok(header)
}

/// `path?query` with `name` set to `value`: the first parameter of that name is replaced
/// in place, later ones are dropped, every other parameter keeps its text and order.
fn with_query_param(path: &str, query: &str, name: &str, value: &str) -> String {
    let mut out = String::with_capacity(path.len() + query.len() + name.len() + value.len() + 8);
    out.push_str(path);
    let mut separator = '?';
    let mut written = false;
    let push_ours = |out: &mut String, separator: char| {
        out.push(separator);
        out.extend(utf8_percent_encode(name, QUERY_COMPONENT));
        out.push('=');
        out.extend(utf8_percent_encode(value, QUERY_COMPONENT));
    };
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let key = pair.split('=').next().unwrap_or(pair);
        if query_key_is(key, name) {
            if !written {
                push_ours(&mut out, separator);
                written = true;
                separator = '&';
            }
            continue;
        }
        out.push(separator);
        out.push_str(pair);
        separator = '&';
    }
    if !written {
        push_ours(&mut out, separator);
    }
    out
}

/// Compares a raw query key with a parameter name the way a server would decode it
/// (`+` as space, percent escapes), so `api%5Fkey` cannot sneak a placeholder past us.
fn query_key_is(raw_key: &str, name: &str) -> bool {
    if !raw_key.contains(['%', '+']) {
        return raw_key == name;
    }
    let spaced = raw_key.replace('+', " ");
    percent_decode_str(&spaced).eq(name.bytes())
}

impl FromStr for Injection {
    type Err = InjectionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |why: &'static str| Err(InjectionError::Invalid(s.to_string(), why));
        if s.eq_ignore_ascii_case("bearer") {
            return Ok(Injection::Bearer);
        }
        if s.eq_ignore_ascii_case("anthropic") {
            return Ok(Injection::Anthropic);
        }
        let (kind, rest) = s.split_once(':').unwrap_or((s, ""));
        match kind.to_ascii_lowercase().as_str() {
            "header" => {
                let (name, format) = match rest.split_once(':') {
                    Some((name, format)) => (name, Some(format)),
                    None => (rest, None),
                };
                if name.is_empty() {
                    return fail("the header name is missing");
                }
                let Ok(name) = http::HeaderName::from_bytes(name.as_bytes()) else {
                    return fail("the header name is not a valid HTTP header name");
                };
                if FORBIDDEN_HEADERS.contains(&name.as_str()) {
                    return fail(
                        "that header frames or routes the request and cannot carry a secret",
                    );
                }
                if let Some(format) = format {
                    if !format.contains(VALUE_MARK) {
                        return fail("the header format must contain {value}");
                    }
                    if format.chars().any(char::is_control) {
                        return fail("the header format contains control characters");
                    }
                }
                Ok(Injection::Header {
                    name,
                    format: format.map(str::to_string),
                })
            }
            "query" => {
                if rest.is_empty() {
                    return fail("the query parameter name is missing");
                }
                if rest
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || "&=#?%+".contains(c))
                {
                    return fail(
                        "the query parameter name contains whitespace or one of & = # ? % +",
                    );
                }
                Ok(Injection::Query {
                    name: rest.to_string(),
                })
            }
            "path-template" => {
                if !rest.starts_with('/') {
                    return fail("the path template must start with '/'");
                }
                if rest.matches(VALUE_MARK).count() != 1 {
                    return fail("the path template must contain {value} exactly once");
                }
                if rest
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#')
                {
                    return fail("the path template contains whitespace, '?' or '#'");
                }
                Ok(Injection::PathTemplate {
                    template: rest.to_string(),
                })
            }
            _ => fail("unknown kind"),
        }
    }
}

/// Round-trips with `FromStr` (this is the stored spelling).
impl fmt::Display for Injection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Injection::Bearer => f.write_str("bearer"),
            Injection::Anthropic => f.write_str("anthropic"),
            Injection::Header { name, format: None } => write!(f, "header:{name}"),
            Injection::Header {
                name,
                format: Some(format),
            } => write!(f, "header:{name}:{format}"),
            Injection::Query { name } => write!(f, "query:{name}"),
            Injection::PathTemplate { template } => write!(f, "path-template:{template}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "sk-real-123";

    fn parts(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut builder = http::Request::builder().method("POST").uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn apply(spelling: &str, parts: &mut http::request::Parts) -> Result<(), InjectionError> {
        let injection: Injection = spelling.parse().unwrap();
        injection.apply(&SecretValue::new(SECRET.to_string()), parts)
    }

    fn header<'a>(parts: &'a http::request::Parts, name: &str) -> Vec<&'a str> {
        parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn spellings_round_trip() {
        for spelling in [
            "bearer",
            "anthropic",
            "header:x-goog-api-key",
            "header:authorization:token {value}",
            "header:x-auth:a:b {value}",
            "query:key",
            "query:api_key",
            "path-template:/bot{value}/",
            "path-template:/v1/{value}",
        ] {
            let parsed: Injection = spelling.parse().unwrap();
            assert_eq!(parsed.to_string(), spelling);
            assert_eq!(parsed.to_string().parse::<Injection>().unwrap(), parsed);
        }
        // Header names are canonicalised to lower case; the canonical form round-trips.
        let upper: Injection = "header:X-Api-Key".parse().unwrap();
        assert_eq!(upper.to_string(), "header:x-api-key");
        assert_eq!("BEARER".parse::<Injection>().unwrap(), Injection::Bearer);
    }

    #[test]
    fn header_splits_on_the_first_two_colons_only() {
        let parsed: Injection = "header:Authorization:Basic {value}:x".parse().unwrap();
        assert_eq!(
            parsed,
            Injection::Header {
                name: http::header::AUTHORIZATION,
                format: Some("Basic {value}:x".into()),
            }
        );
    }

    #[test]
    fn bad_spellings_are_refused_with_a_reason() {
        for (spelling, hint) in [
            ("", "unknown kind"),
            ("basic", "unknown kind"),
            ("header:", "name is missing"),
            ("header::{value}", "name is missing"),
            ("header:bad name", "not a valid"),
            ("header:x-key:token", "{value}"),
            ("header:host", "frames or routes"),
            ("header:Content-Length:{value}", "frames or routes"),
            ("query:", "name is missing"),
            ("query:a&b", "contains"),
            ("path-template:bot{value}", "start with '/'"),
            ("path-template:/bot/", "exactly once"),
            ("path-template:/{value}/{value}", "exactly once"),
            ("path-template:/b{value}?x", "'?'"),
        ] {
            let err = spelling.parse::<Injection>().unwrap_err();
            let text = err.to_string();
            assert!(text.contains(hint), "{spelling:?}: {text}");
            assert!(text.contains("Use bearer"), "{text}");
        }
    }

    #[test]
    fn bearer_replaces_client_authorization() {
        let mut p = parts(
            "https://api.example.com/v1",
            &[("authorization", "Bearer placeholder")],
        );
        apply("bearer", &mut p).unwrap();
        assert_eq!(header(&p, "authorization"), ["Bearer sk-real-123"]);
        assert!(p.headers["authorization"].is_sensitive());
    }

    #[test]
    fn anthropic_strips_both_placeholder_headers() {
        let mut p = parts(
            "https://api.anthropic.com/v1/messages",
            &[
                ("authorization", "Bearer placeholder"),
                ("x-api-key", "placeholder"),
                ("x-api-key", "placeholder-2"),
                ("anthropic-version", "2023-06-01"),
            ],
        );
        apply("anthropic", &mut p).unwrap();
        assert!(p.headers.get("authorization").is_none());
        assert_eq!(header(&p, "x-api-key"), [SECRET]);
        assert_eq!(header(&p, "anthropic-version"), ["2023-06-01"]);
    }

    #[test]
    fn anthropic_works_when_client_sent_nothing() {
        let mut p = parts("/v1/messages", &[]);
        apply("anthropic", &mut p).unwrap();
        assert_eq!(header(&p, "x-api-key"), [SECRET]);
    }

    #[test]
    fn header_with_and_without_format() {
        let mut p = parts("/", &[("x-goog-api-key", "placeholder")]);
        apply("header:x-goog-api-key", &mut p).unwrap();
        assert_eq!(header(&p, "x-goog-api-key"), [SECRET]);

        let mut p = parts("/", &[("authorization", "token placeholder")]);
        apply("header:Authorization:token {value}", &mut p).unwrap();
        assert_eq!(header(&p, "authorization"), ["token sk-real-123"]);
    }

    #[test]
    fn unwritable_header_value_is_refused_without_echoing_it() {
        let injection = Injection::Bearer;
        let mut p = parts("/", &[]);
        let err = injection
            .apply(&SecretValue::new("abc\r\nx-evil: 1".into()), &mut p)
            .unwrap_err();
        assert_eq!(err, InjectionError::BadHeaderValue);
        assert!(!err.to_string().contains("abc"));
        assert!(p.headers.get("authorization").is_none());
    }

    #[test]
    fn query_replaces_in_place_and_keeps_the_rest() {
        let mut p = parts(
            "https://maps.example.com/api/geo?a=1&key=placeholder&b=two%20words&key=again&c",
            &[],
        );
        apply("query:key", &mut p).unwrap();
        assert_eq!(p.uri.scheme_str(), Some("https"));
        assert_eq!(p.uri.authority().unwrap().as_str(), "maps.example.com");
        assert_eq!(p.uri.path(), "/api/geo");
        assert_eq!(p.uri.query(), Some("a=1&key=sk-real-123&b=two%20words&c"));
    }

    #[test]
    fn query_appends_when_absent_and_encodes() {
        let mut p = parts("/search", &[]);
        let injection: Injection = "query:api key".parse().unwrap_or(Injection::Query {
            name: "api key".into(),
        });
        // Whitespace is refused at parse time, but apply still encodes defensively.
        injection
            .apply(&SecretValue::new("a&b=c d/é".into()), &mut p)
            .unwrap();
        assert_eq!(
            p.uri.to_string(),
            "/search?api%20key=a%26b%3Dc%20d%2F%C3%A9"
        );

        let mut p = parts("http://h.example/x?z=9", &[]);
        apply("query:key", &mut p).unwrap();
        assert_eq!(p.uri.to_string(), "http://h.example/x?z=9&key=sk-real-123");
    }

    #[test]
    fn query_on_a_uri_without_path() {
        let mut p = parts("https://h.example", &[]);
        apply("query:key", &mut p).unwrap();
        assert_eq!(p.uri.to_string(), "https://h.example/?key=sk-real-123");
    }

    #[test]
    fn query_matches_encoded_client_key() {
        let mut p = parts("/x?api%5Fkey=placeholder&q=1", &[]);
        apply("query:api_key", &mut p).unwrap();
        assert_eq!(p.uri.query(), Some("api_key=sk-real-123&q=1"));
    }

    #[test]
    fn path_template_fills_an_empty_slot() {
        let mut p = parts("https://api.telegram.org/bot/sendMessage?chat_id=1", &[]);
        apply("path-template:/bot{value}/", &mut p).unwrap();
        assert_eq!(
            p.uri.to_string(),
            "https://api.telegram.org/botsk-real-123/sendMessage?chat_id=1"
        );
    }

    #[test]
    fn path_template_replaces_a_placeholder() {
        let mut p = parts("https://api.telegram.org/botPLACEHOLDER/getMe", &[]);
        apply("path-template:/bot{value}/", &mut p).unwrap();
        assert_eq!(p.uri.path(), "/botsk-real-123/getMe");
    }

    #[test]
    fn path_template_without_trailing_literal_replaces_to_the_end() {
        let mut p = parts("/v1/key/PLACEHOLDER", &[]);
        apply("path-template:/v1/key/{value}", &mut p).unwrap();
        assert_eq!(p.uri.path(), "/v1/key/sk-real-123");
    }

    #[test]
    fn path_template_encodes_separators_in_the_value() {
        let mut p = parts("/bot/getMe", &[]);
        let injection: Injection = "path-template:/bot{value}/".parse().unwrap();
        injection
            .apply(&SecretValue::new("123:AB/C?d".into()), &mut p)
            .unwrap();
        assert_eq!(p.uri.path(), "/bot123:AB%2FC%3Fd/getMe");
    }

    #[test]
    fn path_template_mismatch() {
        let mut p = parts("/other/getMe", &[]);
        let err = apply("path-template:/bot{value}/", &mut p).unwrap_err();
        assert_eq!(err, InjectionError::PathMismatch("/bot{value}/".into()));
        assert_eq!(p.uri.path(), "/other/getMe");
    }

    #[test]
    fn header_names() {
        assert_eq!(Injection::Anthropic.header_names().len(), 2);
        assert_eq!(
            "header:x-key".parse::<Injection>().unwrap().header_names(),
            [http::HeaderName::from_static("x-key")]
        );
        assert!("query:k"
            .parse::<Injection>()
            .unwrap()
            .header_names()
            .is_empty());
    }
}
