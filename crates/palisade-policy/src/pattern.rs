//! Host, path and method patterns used by secrets and rules.
//!
//! Host: exact (`api.example.com`, case-insensitive, port ignored, IPv6 literal allowed
//! with or without brackets) or with one `*` label prefix: `*.example.com` matches
//! `a.example.com` and `a.b.example.com` but not `example.com`. A bare `*` matches any host.
//! Path: exact (`/v1/messages`) or ending in `/*`: `/v1/*` matches `/v1`, `/v1/` and
//! everything below, but not `/v1beta`. A `*` inside a segment (`/users/*/messages/send`)
//! matches exactly one non-empty segment. The query string is never part of the match
//! (callers pass the path without it).

use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatternError {
    #[error("host pattern {0:?} is invalid: {1}")]
    Host(String, &'static str),
    #[error("path pattern {0:?} is invalid: {1}")]
    Path(String, &'static str),
    #[error("method {0:?} is invalid: use an HTTP method such as GET or POST")]
    Method(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPattern {
    // private representation chosen by the implementation
    raw: String,
}

impl HostPattern {
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        todo!("{pattern}")
    }
    /// `host` as the request names it (no port); compared case-insensitively.
    pub fn matches(&self, host: &str) -> bool {
        todo!("{host}")
    }
    /// Larger is more specific: exact beats wildcard, longer suffix beats shorter.
    pub fn specificity(&self) -> usize {
        todo!()
    }
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}
impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathPattern {
    raw: String,
}

impl PathPattern {
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        todo!("{pattern}")
    }
    /// `path` without query string, as sent by the client (percent-decoding is not applied).
    pub fn matches(&self, path: &str) -> bool {
        todo!("{path}")
    }
    /// Larger is more specific (exact beats prefix; longer literal beats shorter).
    pub fn specificity(&self) -> usize {
        todo!()
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
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        todo!("{pattern}")
    }
    pub fn matches(&self, method: &http::Method) -> bool {
        match self {
            MethodPattern::Any => true,
            MethodPattern::One(m) => m == method,
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
