//! Host, path and method patterns used by secrets and rules.
//!
//! Host: exact (`api.example.com`, case-insensitive, IPv6 literal allowed with or
//! without brackets) or with one `*` label prefix: `*.example.com` matches
//! `a.example.com` and `a.b.example.com` but not `example.com`. A bare `*` matches any
//! host. Either may name a port (`127.0.0.1:8080`, `[::1]:8080`, `*.example.com:8443`,
//! `api.example.com:443`): then it matches only requests to that port, the port a
//! request names or its scheme's default (443 for https and CONNECT, 80 for http). On
//! one address different ports are different services (a model server, a database's
//! web console), so a credential for one must not go to the others. A pattern without
//! a port matches every port, as it always has. An IPv6 address takes a port only in
//! brackets, and the bare `*` takes none (it is every host on every port).
//! Path: exact (`/v1/messages`) or ending in `/*`: `/v1/*` matches `/v1`, `/v1/` and
//! everything below, but not `/v1beta`. A `*` inside a segment (`/users/*/messages/send`)
//! matches exactly one non-empty segment. The query string is never part of the match.
//! Paths are compared in their match form (`crate::canonical`): percent-escapes decoded,
//! `;parameters`, doubled slashes and a trailing `/` ignored, the same for the pattern
//! as for the request, so no other spelling of a path escapes a pattern that names it.
//!
//! Patterns are parsed once into a form that matches without allocating, because the
//! vault matches every rule and secret against every request.

use crate::canonical::{CanonicalPath, PathRefusal};
use std::fmt;
use std::net::Ipv6Addr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatternError {
    #[error("host pattern {0:?} is invalid: {1}")]
    Host(String, &'static str),
    #[error("path pattern {0:?} is invalid: {1}")]
    Path(String, &'static str),
    #[error("method {0:?} is invalid: use an HTTP method such as GET or POST")]
    Method(String),
}

/// Longest DNS name; anything longer cannot be a host a request names.
const MAX_HOST_LEN: usize = 253;
/// Generous, but keeps a stored pattern from being a megabyte of text.
const MAX_PATH_PATTERN_LEN: usize = 2048;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPattern {
    /// Canonical spelling, as stored and shown: lower-case, IPv6 without brackets
    /// unless a port follows (`[::1]:8080`).
    raw: String,
    /// The host part of `raw`: lower-case, IPv6 without brackets, no port.
    host: String,
    kind: HostKind,
    /// The one port matched; `None` matches every port.
    port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum HostKind {
    Any,
    /// Lower-case name or IPv4 literal.
    Exact,
    /// Compared as an address so `::1` and `0:0::1` are the same host.
    Ipv6(Ipv6Addr),
    /// `*.example.com`: the suffix starting at the dot (`.example.com`), lower-case.
    Suffix {
        labels: usize,
    },
}

impl HostPattern {
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        let fail = |why: &'static str| Err(PatternError::Host(pattern.to_string(), why));
        if pattern.is_empty() {
            return fail("it is empty; use a host such as api.example.com, *.example.com or *");
        }
        if pattern.chars().any(char::is_whitespace) {
            return fail("it contains whitespace");
        }
        if pattern.contains("://") {
            return fail("remove the scheme (http:// or https://); give only the host");
        }
        if pattern.contains('/') {
            return fail("a host pattern has no path; give the path as a separate path pattern");
        }
        if pattern.contains(['?', '#', '@']) {
            return fail("give only the host, without query, fragment or user name");
        }
        if pattern == "*" {
            return Ok(HostPattern {
                raw: String::from("*"),
                host: String::from("*"),
                kind: HostKind::Any,
                port: None,
            });
        }
        if pattern.starts_with("*:") {
            return fail("the bare * matches every host on every port and takes no port; name a host before the port (*.example.com:8443)");
        }
        if let Some(inner) = pattern.strip_prefix('[') {
            let Some((address, after)) = inner.split_once(']') else {
                return fail(
                    "the '[' has no closing ']'; write an IPv6 address as [::1] or [::1]:8080",
                );
            };
            let port = match after {
                "" => None,
                _ => match after.strip_prefix(':') {
                    Some(digits) => Some(parse_port(pattern, digits)?),
                    None => return fail("only a ':' and a port may follow the ']' ([::1]:8080)"),
                },
            };
            return match address.parse::<Ipv6Addr>() {
                Ok(ip) => Ok(Self::ipv6(ip).with_port(port)),
                Err(_) => fail("the bracketed part is not an IPv6 address"),
            };
        }
        if pattern.contains(':') {
            if let Ok(ip) = pattern.parse::<Ipv6Addr>() {
                return Ok(Self::ipv6(ip));
            }
            return match pattern.split_once(':') {
                Some((name, digits)) if !digits.contains(':') => {
                    let port = parse_port(pattern, digits)?;
                    Self::parse_name(pattern, name).map(|host| host.with_port(Some(port)))
                }
                _ => fail("it is neither a host name nor an IPv6 address (an IPv6 address takes a port only in brackets: [::1]:8080)"),
            };
        }
        Self::parse_name(pattern, pattern)
    }

    /// A name, IPv4 literal or `*.suffix` without port; `pattern` is the whole input,
    /// named in errors.
    fn parse_name(pattern: &str, name: &str) -> Result<Self, PatternError> {
        let fail = |why: &'static str| Err(PatternError::Host(pattern.to_string(), why));
        if name.is_empty() {
            return fail("there is no host before the port; write it as api.example.com:8443");
        }
        let (wildcard, name) = match name.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, name),
        };
        if name.contains('*') || (!wildcard && name.starts_with('*')) {
            return fail(
                "'*' is allowed only alone (*) or as the whole first label (*.example.com)",
            );
        }
        if !name.is_ascii() {
            return fail("write international names in their xn-- (punycode) form");
        }
        if name.len() > MAX_HOST_LEN {
            return fail("it is longer than 253 characters");
        }
        if name.split('.').any(str::is_empty) {
            return fail("it has an empty label (a leading, trailing or doubled '.')");
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return fail("it contains characters not allowed in a host name");
        }
        let name = name.to_ascii_lowercase();
        if wildcard {
            let labels = name.split('.').count();
            let host = format!("*.{name}");
            Ok(HostPattern {
                raw: host.clone(),
                host,
                kind: HostKind::Suffix { labels },
                port: None,
            })
        } else {
            Ok(HostPattern {
                raw: name.clone(),
                host: name,
                kind: HostKind::Exact,
                port: None,
            })
        }
    }

    fn ipv6(ip: Ipv6Addr) -> Self {
        HostPattern {
            raw: ip.to_string(),
            host: ip.to_string(),
            kind: HostKind::Ipv6(ip),
            port: None,
        }
    }

    fn with_port(mut self, port: Option<u16>) -> Self {
        self.port = port;
        self.raw = match (port, &self.kind) {
            (None, _) => self.host.clone(),
            (Some(port), HostKind::Ipv6(_)) => format!("[{}]:{port}", self.host),
            (Some(port), _) => format!("{}:{port}", self.host),
        };
        self
    }

    /// Whether a request to `host` (as the request names it, no port; compared
    /// case-insensitively) on `port` (the one it names, or its scheme's default: 443
    /// for https and CONNECT, 80 for http) is covered.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        self.port.is_none_or(|own| own == port) && self.matches_host_on_any_port(host)
    }

    /// Whether `host` is covered on some port: the host part alone, the pattern's port
    /// ignored. Only for questions about the host as a whole (which responses are
    /// searched for credentials sent back, which names may resolve to local
    /// addresses), never to decide what a request to one port gets.
    pub fn matches_host_on_any_port(&self, host: &str) -> bool {
        let host = bare_host(host);
        match &self.kind {
            HostKind::Any => !host.is_empty(),
            HostKind::Exact => host.eq_ignore_ascii_case(&self.host),
            HostKind::Ipv6(ip) => host.parse::<Ipv6Addr>().is_ok_and(|h| h == *ip),
            HostKind::Suffix { .. } => {
                // host is "*.suffix"; compare against ".suffix" so "example.com" itself
                // and "badexample.com" stay outside.
                let dotted = &self.host.as_bytes()[1..];
                let host = host.as_bytes();
                host.len() > dotted.len()
                    && host[host.len() - dotted.len()..].eq_ignore_ascii_case(dotted)
            }
        }
    }

    /// Larger is more specific: exact beats wildcard, longer suffix beats shorter, and
    /// among patterns for the same host, one with a port beats one without.
    pub fn specificity(&self) -> usize {
        let host = match self.kind {
            HostKind::Any => 0,
            // A label count dominates, then the character count breaks ties.
            HostKind::Suffix { labels } => 1 + labels * 256 + self.host.len(),
            HostKind::Exact | HostKind::Ipv6(_) => 1 << 20,
        };
        host * 2 + usize::from(self.port.is_some())
    }

    /// Whether this is the bare `*`.
    pub fn is_any(&self) -> bool {
        self.kind == HostKind::Any
    }

    /// Whether the pattern names one host (no wildcard) on one port.
    pub fn is_one_host_and_port(&self) -> bool {
        matches!(self.kind, HostKind::Exact | HostKind::Ipv6(_)) && self.port.is_some()
    }

    /// Whether the pattern takes in hosts of many owners: the bare `*`, or a wildcard
    /// over a public suffix (`*.com`, `*.co.uk`, `*.github.io`), over a name no list
    /// knows (`*.localhost`) or over numbers (`*.0.0.1`). A credential for such a
    /// pattern goes to sites anyone can run.
    pub fn spans_owners(&self) -> bool {
        match self.kind {
            HostKind::Any => true,
            HostKind::Suffix { .. } => {
                let suffix = self.host.trim_start_matches("*.");
                suffix.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                    || psl::domain(suffix.as_bytes()).is_none()
            }
            HostKind::Exact | HostKind::Ipv6(_) => false,
        }
    }

    /// The one port this pattern matches, if it names one.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The host part without the port: lower-case, IPv6 without brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }
}
impl HostPattern {
    /// A pattern of hosts agents may reach at local addresses (`--allow-local-upstream`,
    /// `palisade vault local allow`): a name or an address, with a port (that port
    /// only: the addresses a name resolves to are checked with the port the request
    /// goes to) or without (every port). The error says why it is not one.
    pub fn parse_local_allowance(text: &str) -> Result<HostPattern, String> {
        HostPattern::parse(text).map_err(|e| match e {
            PatternError::Host(_, why) => why.to_string(),
            other => other.to_string(),
        })
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// A pattern's port: digits only, 1 to 65535 (`pattern` is the whole input, named in
/// the error).
fn parse_port(pattern: &str, digits: &str) -> Result<u16, PatternError> {
    let fail = |why: &'static str| Err(PatternError::Host(pattern.to_string(), why));
    if digits.is_empty() {
        return fail(
            "the port after ':' is empty; give a port from 1 to 65535 or leave out the ':'",
        );
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return fail("the port must be digits only, from 1 to 65535");
    }
    match digits.parse::<u32>() {
        Ok(0) => fail("port 0 is no port a request can go to; give a port from 1 to 65535"),
        Ok(port) => match u16::try_from(port) {
            Ok(port) => Ok(port),
            Err(_) => fail("the port is above 65535; give a port from 1 to 65535"),
        },
        Err(_) => fail("the port is above 65535; give a port from 1 to 65535"),
    }
}

/// Strips brackets, a port and a trailing root dot, so callers that pass an authority
/// still match; the documented contract is a bare host, this is only tolerance.
pub fn bare_host(host: &str) -> &str {
    if let Some(inner) = host.strip_prefix('[') {
        return inner.split(']').next().unwrap_or(inner);
    }
    let host = match host.split_once(':') {
        // A single colon is a port; more colons mean an IPv6 literal without brackets.
        Some((name, port)) if !port.contains(':') => name,
        _ => host,
    };
    host.strip_suffix('.').unwrap_or(host)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathPattern {
    /// As written (shown back to people, stored).
    raw: String,
    kind: PathKind,
    /// The same in loose form (see `crate::canonical`), for what holds, limits or
    /// refuses a request.
    loose: PathKind,
    /// A stored pattern of an older version that names `;parameters` as `%3B` (new
    /// ones are refused): it matches in match form as it always did, and never in
    /// strict form, so as an allow, a grant or a secret's path it lets nothing through.
    names_parameters: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum PathKind {
    /// No `*` at all: the pattern's match form, compared whole.
    Exact(String),
    /// Segments of the match form split on `/` (the first is the empty text before the
    /// leading `/`); `None` is a one-segment wildcard. `prefix` means the pattern ended
    /// in `/*`.
    Segments {
        segments: Vec<Option<String>>,
        prefix: bool,
    },
}

impl PathKind {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathKind::Exact(exact) => path == exact,
            PathKind::Segments { segments, prefix } => {
                let mut parts = path.split('/');
                for expected in segments {
                    match (expected, parts.next()) {
                        (None, Some(part)) if !part.is_empty() => {}
                        (Some(literal), Some(part)) if literal == part => {}
                        _ => return false,
                    }
                }
                *prefix || parts.next().is_none()
            }
        }
    }
}

impl PathPattern {
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        Self::parse_with(pattern, false)
    }

    /// A pattern read back from the store: as [`Self::parse`], but one naming
    /// `;parameters` as `%3B`, which older versions accepted, still loads (see
    /// `names_parameters`): refusing it would fail the whole policy's load and freeze
    /// the gateway on its last one.
    pub fn parse_stored(pattern: &str) -> Result<Self, PatternError> {
        Self::parse_with(pattern, true)
    }

    fn parse_with(pattern: &str, stored: bool) -> Result<Self, PatternError> {
        let fail = |why: &'static str| Err(PatternError::Path(pattern.to_string(), why));
        if !pattern.starts_with('/') {
            return fail("it must start with '/'");
        }
        if pattern.len() > MAX_PATH_PATTERN_LEN {
            return fail("it is longer than 2048 characters");
        }
        if pattern.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return fail("it contains whitespace or control characters");
        }
        if pattern.contains(['?', '#']) {
            return fail("the query string is never matched; remove '?' and what follows");
        }
        if pattern.contains(';') {
            return fail("it contains ';': path parameters are ignored when paths are matched, so a pattern cannot name them");
        }
        // Escaped, `%3B`: decoded in the match form, where a pattern `/x%3By` became
        // `/x` and, as an allow or a grant, let `/x` through.
        let names_parameters = pattern
            .split('/')
            .any(|segment| crate::canonical::decode_all(segment).contains(';'));
        if names_parameters && !stored {
            return fail("it contains ';' (as %3B): path parameters are ignored when paths are matched, so a pattern cannot name them");
        }
        let inner = pattern[1..].strip_suffix('/').unwrap_or(&pattern[1..]);
        if !inner.is_empty() && inner.split('/').any(|segment| segment.is_empty()) {
            return fail(
                "it has an empty segment ('//'); requests are matched with doubled slashes merged",
            );
        }
        if pattern
            .split('/')
            .any(|segment| matches!(crate::canonical::decode_all(segment).as_str(), "." | ".."))
        {
            return fail("it has a '.' or '..' segment; requests are matched after those are resolved, so write the path they lead to");
        }
        // The same canonical form and match form requests get, so `%61` and `a`, or a
        // trailing '/' and none, mean the same in a pattern as in a request.
        let match_form = match CanonicalPath::parse(pattern) {
            Ok(path) => path.match_form().to_string(),
            Err(PathRefusal::EncodedSlash) => {
                return fail("it contains an encoded '/' (%2F), which requests may not contain")
            }
            Err(PathRefusal::Backslash) => {
                return fail("it contains a backslash, which requests may not contain")
            }
            Err(PathRefusal::MalformedEscape) => {
                return fail("it contains a '%' not followed by two hex digits")
            }
            Err(_) => return fail("it is not a path a request can have"),
        };
        if !pattern.contains('*') {
            return Ok(PathPattern {
                raw: pattern.to_string(),
                loose: PathKind::Exact(crate::canonical::loose_form(&match_form)),
                kind: PathKind::Exact(match_form),
                names_parameters,
            });
        }
        let mut segments: Vec<Option<String>> = match_form
            .split('/')
            .map(|segment| match segment {
                "*" => None,
                literal => Some(literal.to_string()),
            })
            .collect();
        if segments
            .iter()
            .flatten()
            .any(|literal| literal.contains('*'))
        {
            return fail("'*' must be a whole segment, as in /v1/* or /users/*/messages");
        }
        let prefix = pattern.ends_with("/*");
        if prefix {
            segments.pop();
        }
        let loose = PathKind::Segments {
            segments: segments
                .iter()
                .map(|literal| literal.as_deref().map(crate::canonical::loose_segment))
                .collect(),
            prefix,
        };
        Ok(PathPattern {
            raw: pattern.to_string(),
            kind: PathKind::Segments { segments, prefix },
            loose,
            names_parameters,
        })
    }

    /// Whether the pattern names one path (no `*`).
    pub fn is_exact(&self) -> bool {
        matches!(self.kind, PathKind::Exact(_))
    }

    /// Whether a request's canonical path matches (compared in loose form: decoded,
    /// parameters and a trailing '/' ignored, letters of either case, trailing dots and
    /// spaces of segments and the last segment's extension ignored; see
    /// `crate::canonical`). For what holds, limits or refuses a request.
    pub fn matches(&self, path: &CanonicalPath) -> bool {
        path.loose_forms().any(|form| self.loose.matches(form))
    }

    /// Whether a request's canonical path matches in strict form (as [`Self::matches`]
    /// but `;parameters` kept, so `/send;x` is not `/send`). For what lets a request
    /// through: an allow, a grant, a secret's path.
    pub fn matches_strictly(&self, path: &CanonicalPath) -> bool {
        !self.names_parameters && self.kind.matches(path.strict_form())
    }

    /// Larger is more specific (exact beats prefix; longer literal beats shorter).
    pub fn specificity(&self) -> usize {
        match &self.kind {
            PathKind::Exact(exact) => exact.len() * 4 + 3,
            PathKind::Segments { segments, prefix } => {
                let literal: usize = segments.iter().flatten().map(String::len).sum();
                let slashes = segments.len().saturating_sub(1);
                let tier = if *prefix { 0 } else { 1 };
                (literal + slashes) * 4 + tier
            }
        }
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }
}
impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// One HTTP method, or any (`*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MethodPattern {
    Any,
    One(http::Method),
}

impl MethodPattern {
    /// Exactly the method a request used, for a rule that must be no wider than that
    /// request (an approval's grant, a suggestion): one of the standard methods spelt as
    /// sent. Never [`MethodPattern::Any`]: a request whose method reads `*` or `ANY` to
    /// [`MethodPattern::parse`] would otherwise become a rule for every method.
    pub fn exact(method: &str) -> Result<Self, PatternError> {
        const STANDARD: [http::Method; 7] = [
            http::Method::GET,
            http::Method::HEAD,
            http::Method::POST,
            http::Method::PUT,
            http::Method::PATCH,
            http::Method::DELETE,
            http::Method::OPTIONS,
        ];
        STANDARD
            .into_iter()
            .find(|standard| standard.as_str() == method)
            .map(MethodPattern::One)
            .ok_or_else(|| PatternError::Method(method.to_string()))
    }

    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        if pattern == "*" || pattern.eq_ignore_ascii_case("any") {
            return Ok(MethodPattern::Any);
        }
        let well_formed = (1..=32).contains(&pattern.len())
            && pattern
                .bytes()
                .all(|b| b.is_ascii_alphabetic() || b == b'-');
        if !well_formed {
            return Err(PatternError::Method(pattern.to_string()));
        }
        http::Method::from_bytes(pattern.to_ascii_uppercase().as_bytes())
            .map(MethodPattern::One)
            .map_err(|_| PatternError::Method(pattern.to_string()))
    }
    /// Whether a request with `method` is covered. A `GET` pattern covers `HEAD` too:
    /// servers (Flask, Go, Rails) run the GET handler for a HEAD request, side effects
    /// included, so a rule about GET that HEAD escaped would be a rule with a hole.
    pub fn matches(&self, method: &http::Method) -> bool {
        match self {
            MethodPattern::Any => true,
            MethodPattern::One(m) => {
                m == method || (*m == http::Method::GET && *method == http::Method::HEAD)
            }
        }
    }
}
impl fmt::Display for MethodPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MethodPattern::Any => f.write_str("*"),
            MethodPattern::One(m) => f.write_str(m.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(p: &str) -> HostPattern {
        HostPattern::parse(p).unwrap()
    }
    fn path(p: &str) -> PathPattern {
        PathPattern::parse(p).unwrap()
    }

    #[test]
    fn a_get_pattern_covers_head_and_nothing_else_widens() {
        let get = MethodPattern::parse("get").unwrap();
        assert!(get.matches(&http::Method::GET));
        assert!(get.matches(&http::Method::HEAD));
        assert!(!get.matches(&http::Method::POST));
        let head = MethodPattern::parse("HEAD").unwrap();
        assert!(head.matches(&http::Method::HEAD));
        assert!(!head.matches(&http::Method::GET));
        let post = MethodPattern::parse("POST").unwrap();
        assert!(!post.matches(&http::Method::from_bytes(b"post").unwrap()));
    }

    #[test]
    fn exact_host_is_case_insensitive() {
        let p = host("API.Example.com");
        assert_eq!(p.as_str(), "api.example.com");
        assert!(p.matches("api.example.com", 443));
        assert!(p.matches("API.EXAMPLE.COM", 443));
        assert!(!p.matches("example.com", 443));
        assert!(!p.matches("xapi.example.com", 443));
        assert!(!p.matches("api.example.com.evil", 443));
    }

    #[test]
    fn host_matching_tolerates_port_and_root_dot() {
        let p = host("api.example.com");
        assert!(p.matches("api.example.com:443", 443));
        assert!(p.matches("api.example.com.", 443));
    }

    #[test]
    fn wildcard_host_needs_a_label_before_the_suffix() {
        let p = host("*.example.com");
        assert!(p.matches("a.example.com", 443));
        assert!(p.matches("a.b.EXAMPLE.com", 443));
        assert!(!p.matches("example.com", 443));
        assert!(!p.matches("badexample.com", 443));
        assert!(!p.matches(".example.com", 443));
        assert!(!p.matches("example.com.evil.org", 443));
    }

    #[test]
    fn bare_star_matches_every_host() {
        let p = host("*");
        assert!(p.is_any());
        for wide in [
            "*",
            "*.com",
            "*.COM",
            "*.com:443",
            "*.co.uk",
            "*.github.io",
            "*.0.0.1",
            "*.1",
            "*.localhost",
        ] {
            assert!(host(wide).spans_owners(), "{wide}");
        }
        for narrow in [
            "*.example.com",
            "*.api.example.co.uk",
            "api.example.com",
            "127.0.0.1",
            "[::1]",
            "localhost",
        ] {
            assert!(!host(narrow).spans_owners(), "{narrow}");
        }
        assert!(p.matches("anything.example", 443));
        assert!(p.matches("::1", 8080));
        assert!(p.matches("10.0.0.1", 80));
    }

    #[test]
    fn ipv6_with_and_without_brackets() {
        for spelling in ["::1", "[::1]", "0:0:0:0:0:0:0:1", "[0::1]"] {
            let p = host(spelling);
            assert_eq!(p.as_str(), "::1");
            assert!(p.matches("::1", 443), "{spelling}");
            assert!(p.matches("[::1]", 443), "{spelling}");
            assert!(p.matches("0::0:1", 443), "{spelling}");
            assert!(!p.matches("::2", 443), "{spelling}");
            assert!(!p.matches("localhost", 443), "{spelling}");
        }
        let p = host("[2001:DB8::A]");
        assert_eq!(p.as_str(), "2001:db8::a");
        assert!(p.matches("2001:db8::a", 443));
        assert!(p.matches("[2001:db8::a]:8443", 8443));
    }

    #[test]
    fn ipv4_is_exact() {
        let p = host("127.0.0.1");
        assert!(p.matches("127.0.0.1", 80));
        assert!(p.matches("127.0.0.1:8080", 8080));
        assert!(!p.matches("127.0.0.10", 80));
    }

    /// The port a request goes to: the one it names, or its scheme's default.
    const HTTPS_DEFAULT: u16 = 443;
    const HTTP_DEFAULT: u16 = 80;

    /// (pattern, canonical spelling, host, port, matches) — one table for every shape
    /// a pattern with a port takes, and the patterns without one for comparison.
    #[test]
    fn host_patterns_with_a_port_match_that_port_only() {
        let cases: &[(&str, &str, &str, u16, bool)] = &[
            ("127.0.0.1:8080", "127.0.0.1:8080", "127.0.0.1", 8080, true),
            ("127.0.0.1:8080", "127.0.0.1:8080", "127.0.0.1", 8081, false),
            (
                "127.0.0.1:8080",
                "127.0.0.1:8080",
                "127.0.0.1",
                HTTP_DEFAULT,
                false,
            ),
            ("127.0.0.1:8080", "127.0.0.1:8080", "127.0.0.2", 8080, false),
            ("[::1]:8080", "[::1]:8080", "::1", 8080, true),
            ("[::1]:8080", "[::1]:8080", "[::1]", 8080, true),
            ("[0:0::1]:8080", "[::1]:8080", "0::1", 8080, true),
            ("[::1]:8080", "[::1]:8080", "::1", 8443, false),
            ("[::1]:8080", "[::1]:8080", "::2", 8080, false),
            (
                "*.Example.com:8443",
                "*.example.com:8443",
                "a.example.com",
                8443,
                true,
            ),
            (
                "*.example.com:8443",
                "*.example.com:8443",
                "a.b.example.com",
                8443,
                true,
            ),
            (
                "*.example.com:8443",
                "*.example.com:8443",
                "a.example.com",
                HTTPS_DEFAULT,
                false,
            ),
            (
                "*.example.com:8443",
                "*.example.com:8443",
                "example.com",
                8443,
                false,
            ),
            // An https request that names no port goes to 443, an http one to 80.
            (
                "api.example.com:443",
                "api.example.com:443",
                "api.example.com",
                HTTPS_DEFAULT,
                true,
            ),
            (
                "api.example.com:443",
                "api.example.com:443",
                "api.example.com",
                HTTP_DEFAULT,
                false,
            ),
            (
                "api.example.com:80",
                "api.example.com:80",
                "api.example.com",
                HTTP_DEFAULT,
                true,
            ),
            (
                "api.example.com:80",
                "api.example.com:80",
                "api.example.com",
                HTTPS_DEFAULT,
                false,
            ),
            (
                "api.example.com:443",
                "api.example.com:443",
                "api.example.com",
                8443,
                false,
            ),
            // Leading zeros are the same number.
            ("localhost:08080", "localhost:8080", "localhost", 8080, true),
            (
                "localhost:65535",
                "localhost:65535",
                "localhost",
                65535,
                true,
            ),
            ("localhost:1", "localhost:1", "localhost", 1, true),
            // Without a port: every port, as before.
            ("127.0.0.1", "127.0.0.1", "127.0.0.1", 8080, true),
            ("127.0.0.1", "127.0.0.1", "127.0.0.1", 9, true),
            ("[::1]", "::1", "::1", 8080, true),
            (
                "*.example.com",
                "*.example.com",
                "a.example.com",
                8443,
                true,
            ),
            ("*", "*", "anything.example", 1, true),
        ];
        for &(pattern, canonical, request_host, port, expected) in cases {
            let p = host(pattern);
            assert_eq!(p.as_str(), canonical, "{pattern}");
            assert_eq!(
                p.matches(request_host, port),
                expected,
                "{pattern} against {request_host} port {port}"
            );
            if expected {
                assert!(p.matches_host_on_any_port(request_host), "{pattern}");
            }
        }
        assert_eq!(host("[::1]:8080").port(), Some(8080));
        assert_eq!(host("[::1]:8080").host(), "::1");
        assert_eq!(host("::1").port(), None);
        // An IPv6 address without brackets has no port: the last group is the address.
        assert_eq!(host("::1:8080").port(), None);
        assert!(host("::1:8080").matches("::1:8080", 443));
    }

    proptest::proptest! {
        /// Every host shape with every port: the pattern reads back as written, matches
        /// its own port on its host and no other port, and without the port matches all.
        #[test]
        fn a_port_matches_itself_only(
            port in 1u16..=65535,
            other in 1u16..=65535,
            shape in 0usize..4,
        ) {
            let (pattern, request_host) = match shape {
                0 => (format!("127.0.0.1:{port}"), "127.0.0.1"),
                1 => (format!("[::1]:{port}"), "::1"),
                2 => (format!("*.example.com:{port}"), "a.example.com"),
                _ => (format!("api.example.com:{port}"), "api.example.com"),
            };
            let p = HostPattern::parse(&pattern).unwrap();
            proptest::prop_assert_eq!(p.as_str(), pattern.as_str());
            proptest::prop_assert_eq!(&HostPattern::parse(&p.to_string()).unwrap(), &p);
            proptest::prop_assert!(p.matches(request_host, port));
            proptest::prop_assert_eq!(p.matches(request_host, other), other == port);
            let any_port = HostPattern::parse(p.host()).unwrap();
            proptest::prop_assert!(any_port.matches(request_host, other));
        }
    }

    #[test]
    fn a_pattern_with_a_port_is_more_specific_than_without() {
        for (with, without) in [
            ("127.0.0.1:8080", "127.0.0.1"),
            ("[::1]:8080", "::1"),
            ("*.example.com:8443", "*.example.com"),
        ] {
            assert!(
                host(with).specificity() > host(without).specificity(),
                "{with}"
            );
        }
        // The port breaks ties only: a longer suffix still beats a shorter one with a port.
        assert!(host("*.eu.example.com").specificity() > host("*.example.com:8443").specificity());
        assert!(host("api.example.com").specificity() > host("*.example.com:443").specificity());
    }

    #[test]
    fn bad_ports_are_refused_naming_the_input() {
        let cases = [
            ("127.0.0.1:0", "port 0"),
            ("[::1]:0", "port 0"),
            ("127.0.0.1:65536", "above 65535"),
            ("127.0.0.1:99999999999999999999", "above 65535"),
            ("127.0.0.1:80a", "digits only"),
            ("127.0.0.1:+80", "digits only"),
            ("127.0.0.1:-1", "digits only"),
            ("127.0.0.1:", "empty"),
            ("[::1]:", "empty"),
            ("[::1]:http", "digits only"),
            ("[::1]x", "only a ':' and a port"),
            ("[::1", "no closing ']'"),
            ("*:8080", "takes no port"),
            ("*:", "takes no port"),
            (":8080", "no host before the port"),
            ("a.example.com:80:90", "brackets"),
            ("[::1]:80:90", "digits only"),
            ("*.example.com:0", "port 0"),
            ("a.*.com:80", "'*'"),
            ("bücher.de:80", "punycode"),
        ];
        for (input, hint) in cases {
            match HostPattern::parse(input) {
                Err(err @ PatternError::Host(..)) => {
                    let text = err.to_string();
                    assert!(text.contains(hint), "{input:?}: {text}");
                    assert!(text.contains(&format!("{input:?}")), "{input:?}: {text}");
                    assert!(!text.contains('\n'), "{input:?}: one line: {text}");
                }
                other => panic!("{input:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn bad_host_patterns_say_why() {
        let cases = [
            ("", "empty"),
            (" api.example.com", "whitespace"),
            ("api .example.com", "whitespace"),
            ("https://api.example.com", "scheme"),
            ("api.example.com/v1", "path"),
            ("api.*.com", "'*'"),
            ("*example.com", "'*'"),
            ("*.*.example.com", "'*'"),
            ("**", "'*'"),
            ("example.*", "'*'"),
            ("a..b", "empty label"),
            (".example.com", "empty label"),
            ("example.com.", "empty label"),
            ("ex!ample.com", "characters"),
            ("bücher.de", "punycode"),
            ("[zz]", "IPv6"),
            ("user@example.com", "user name"),
        ];
        for (input, hint) in cases {
            match HostPattern::parse(input) {
                Err(err @ PatternError::Host(..)) => {
                    let text = err.to_string();
                    assert!(text.contains(hint), "{input:?}: {text}");
                }
                other => panic!("{input:?} gave {other:?}"),
            }
        }
        assert!(HostPattern::parse(&"a".repeat(254)).is_err());
    }

    #[test]
    fn host_specificity_orders_exact_over_longer_over_shorter_over_any() {
        let exact = host("api.example.com").specificity();
        let long = host("*.eu.example.com").specificity();
        let short = host("*.example.com").specificity();
        let any = host("*").specificity();
        assert!(exact > long && long > short && short > any);
    }

    #[test]
    fn host_round_trips_through_display() {
        for p in [
            "*",
            "*.example.com",
            "api.example.com",
            "::1",
            "10.1.2.3",
            "127.0.0.1:8080",
            "[::1]:8080",
            "*.example.com:8443",
            "api.example.com:443",
        ] {
            assert_eq!(host(&host(p).to_string()), host(p));
        }
    }

    /// Whether `pattern` matches the request path `raw` (canonicalised as the vault does).
    fn hits(pattern: &PathPattern, raw: &str) -> bool {
        pattern.matches(&CanonicalPath::parse(raw).unwrap())
    }

    #[test]
    fn prefix_path_stops_at_segment_boundary() {
        let p = path("/v1/*");
        for yes in ["/v1", "/v1/", "/v1/messages", "/v1/x/y"] {
            assert!(hits(&p, yes), "{yes}");
        }
        for no in ["/v1beta", "/v1beta/x", "/v2/x", "/"] {
            assert!(!hits(&p, no), "{no}");
        }
    }

    #[test]
    fn root_prefix_matches_everything() {
        let p = path("/*");
        assert!(hits(&p, "/"));
        assert!(hits(&p, "/a/b"));
    }

    #[test]
    fn exact_path() {
        let p = path("/v1/messages");
        assert!(hits(&p, "/v1/messages"));
        // A trailing '/' is the same resource to many servers, so it matches too.
        assert!(hits(&p, "/v1/messages/"));
        assert!(!hits(&p, "/v1/messages/x"));
        // Another case is the same path to servers that route without regard to it:
        // it is held or refused as this one, and let through only as written.
        assert!(hits(&p, "/V1/messages"));
        assert!(!p.matches_strictly(&CanonicalPath::parse("/V1/messages").unwrap()));
    }

    /// Spellings servers that route loosely read as the ruled path (review: each
    /// passed a block, an approval and a rate limit with the credential injected):
    /// case (Express, ASP.NET, IIS; .NET upper-cases, so `ſ` is `s` and `ı` is `i`),
    /// trailing dots and spaces (IIS), a format extension (Rails, Spring).
    #[test]
    fn loosely_routed_spellings_meet_what_holds_or_refuses() {
        let send = path("/api/send");
        let admin = path("/api/admin/*");
        let any_user = path("/users/*/delete");
        for (pattern, spelling) in [
            (&send, "/api/Send"),
            (&send, "/API/SEND/"),
            (&send, "/api/send."),
            (&send, "/api/send%20"),
            (&send, "/api/send.%20."),
            (&send, "/api/send.json"),
            (&send, "/api/SEND.JSON"),
            (&send, "/api/%C5%BFend"),
            (&admin, "/api/ADMIN/x"),
            (&admin, "/API/Admin./x"),
            (&admin, "/api/adm%C4%B1n/x"),
            (&any_user, "/users/Bob/DELETE"),
            (&any_user, "/users/bob/delete.xml"),
            // Routers that map one character at a time read `İ` as `i`, `ẞ` as `ß`.
            (&admin, "/api/adm%C4%B0n/x"),
            (&admin, "/API/ADM%C4%B0N/x"),
            (&path("/v1/inbox"), "/v1/%C4%B0nbox"),
            (&path("/v1/straße"), "/v1/stra%E1%BA%9Ee"),
            (&path("/v1/straße"), "/v1/STRASSE"),
            (&path("/v1/strasse"), "/v1/stra%C3%9Fe"),
            // Rails: the last extension is the format, a dynamic segment stops at a dot.
            (&path("/x/a.b"), "/x/a.b.c"),
            (&path("/models/gpt-4"), "/models/gpt-4.1"),
        ] {
            assert!(hits(pattern, spelling), "{} {spelling}", pattern.as_str());
            assert!(
                !pattern.matches_strictly(&CanonicalPath::parse(spelling).unwrap()),
                "{spelling} is let through by {}",
                pattern.as_str()
            );
        }
        // Other paths stay other paths.
        for (pattern, other) in [
            (&send, "/api/sender"),
            (&send, "/api/send/x"),
            (&send, "/api/.send"),
            (&send, "/api/sen"),
            (&admin, "/api/administrator/x"),
            (&admin, "/api/x.admin/y"),
            (&any_user, "/users/bob/deleted"),
        ] {
            assert!(!hits(pattern, other), "{} {other}", pattern.as_str());
        }
        // A pattern with an extension holds only that extension; one in capitals
        // holds every case.
        let export = path("/api/export.csv");
        assert!(hits(&export, "/api/EXPORT.CSV"));
        assert!(!hits(&export, "/api/export"));
        assert!(!hits(&export, "/api/export.json"));
        assert!(hits(&path("/API/Send"), "/api/send"));
    }

    #[test]
    fn other_spellings_of_a_path_match_its_pattern() {
        let admin = path("/admin/*");
        for spelling in [
            "/v1/../admin/x",
            "//admin/x",
            "/./admin/x",
            "/%61dmin/x",
            "/admin;jsessionid=1/x",
            "/admin/x/",
        ] {
            assert!(hits(&admin, spelling), "{spelling}");
        }
        let send = path("/v1/send");
        for spelling in ["/v1/%73end", "/v1/send/", "/v1//send", "/v1/send;x"] {
            assert!(hits(&send, spelling), "{spelling}");
        }
        let escaped = path("/users/bob%40example.com/send");
        assert!(hits(&escaped, "/users/bob@example.com/send"));
        assert!(hits(
            &path("/users/bob@example.com/send"),
            "/users/bob%40example.com/send"
        ));
        assert!(hits(&path("/%61dmin"), "/admin"));
    }

    #[test]
    fn middle_wildcard_is_one_nonempty_segment() {
        let p = path("/gmail/v1/users/*/messages/send");
        assert!(hits(&p, "/gmail/v1/users/me/messages/send"));
        assert!(hits(&p, "/gmail/v1/users/bob%40example.com/messages/send"));
        assert!(!hits(&p, "/gmail/v1/users//messages/send"));
        assert!(!hits(&p, "/gmail/v1/users/a/b/messages/send"));
        assert!(!hits(&p, "/gmail/v1/users/me/messages/send/x"));
        assert!(!hits(&p, "/gmail/v1/users/me/messages"));
    }

    #[test]
    fn middle_and_trailing_wildcards_together() {
        let p = path("/repos/*/*/issues/*");
        assert!(hits(&p, "/repos/o/r/issues"));
        assert!(hits(&p, "/repos/o/r/issues/1/comments"));
        assert!(!hits(&p, "/repos/o/issues/1"));
    }

    #[test]
    fn bad_path_patterns_say_why() {
        let cases = [
            ("", "start with '/'"),
            ("v1/*", "start with '/'"),
            ("/v1/x?y=1", "query"),
            ("/v1/ x", "whitespace"),
            ("/v1*", "whole segment"),
            ("/v1/*beta", "whole segment"),
            ("/**", "whole segment"),
            ("/a;b", "';'"),
            ("/a%3Bb", "';' (as %3B)"),
            ("/v1/transfer%3bdryrun=true", "';' (as %3B)"),
            ("/a//b", "empty segment"),
            ("/a/../b", "'..'"),
            ("/a/%2e/b", "'..'"),
            ("/a%2Fb", "encoded '/'"),
            ("/a\\b", "backslash"),
            ("/a%zz", "'%'"),
        ];
        for (input, hint) in cases {
            let err = PathPattern::parse(input).unwrap_err();
            assert!(err.to_string().contains(hint), "{input:?}: {err}");
        }
    }

    /// A `%3B` pattern an older version stored still loads (a rule that cannot be read
    /// fails the policy's load): it holds, limits or blocks what it did, and lets
    /// nothing through as an allow, a grant or a secret's path.
    #[test]
    fn a_stored_pattern_naming_parameters_loads_and_allows_nothing() {
        let stored = PathPattern::parse_stored("/v1/transfer%3Bdryrun=true").unwrap();
        let request = |raw: &str| CanonicalPath::parse(raw).unwrap();
        assert!(stored.matches(&request("/v1/transfer")));
        assert!(stored.matches(&request("/v1/transfer;dryrun=true")));
        assert!(!stored.matches_strictly(&request("/v1/transfer")));
        assert!(!stored.matches_strictly(&request("/v1/transfer;dryrun=true")));
        let plain = PathPattern::parse_stored("/v1/transfer").unwrap();
        assert!(plain.matches_strictly(&request("/v1/transfer")));
        assert!(PathPattern::parse_stored("/a;b").is_err());
    }

    #[test]
    fn path_specificity() {
        let exact = path("/v1/messages").specificity();
        let deeper_prefix = path("/v1/messages/*").specificity();
        let prefix = path("/v1/*").specificity();
        let root = path("/*").specificity();
        assert!(
            exact > deeper_prefix,
            "exact beats a prefix of the same literal"
        );
        assert!(deeper_prefix > prefix && prefix > root);
        let literal_middle = path("/users/me/send").specificity();
        let wild_middle = path("/users/*/send").specificity();
        assert!(literal_middle > wild_middle);
    }

    #[test]
    fn methods() {
        assert_eq!(MethodPattern::parse("*"), Ok(MethodPattern::Any));
        assert_eq!(
            MethodPattern::parse("post"),
            Ok(MethodPattern::One(http::Method::POST))
        );
        assert_eq!(MethodPattern::parse("GET").unwrap().to_string(), "GET");
        assert!(MethodPattern::parse("").is_err());
        assert!(MethodPattern::parse("GE T").is_err());
        assert!(MethodPattern::parse("GET\r\n").is_err());
        assert!(MethodPattern::Any.matches(&http::Method::DELETE));
        assert!(!MethodPattern::One(http::Method::GET).matches(&http::Method::POST));
    }
}
