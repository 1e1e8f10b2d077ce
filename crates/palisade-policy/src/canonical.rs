//! The one canonical form of a request path.
//!
//! An upstream acts on the path as it reads it, not as the client spelled it: nginx
//! decodes `%61dmin` to `admin`, removes `/../` and merges `//`; Tomcat drops `;params`
//! from segments. If rules and secrets judged the raw spelling, `GET /v1/../admin/x`
//! would pass a block on `/admin/*`. So the vault canonicalises the path once, before
//! any rule, secret, rate limit or summary looks at it, and forwards exactly the
//! canonical form:
//!
//! - percent-escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded, every
//!   other escape is written with upper-case hex;
//! - runs of `/` become one `/`; `.` segments are removed and `..` removes the segment
//!   before it (RFC 3986, 5.2.4);
//! - forms that servers read differently are refused instead of guessed at: an encoded
//!   `/` or `\`, a raw `\`, a `..` that climbs above the root, a dot segment disguised by
//!   path parameters (`..;x`), control characters and NUL (raw or encoded), a malformed
//!   escape, an escape that is itself escaped (`%252e`, which a server that decodes
//!   twice reads as `.`), and a path that does not start with `/`.
//!
//! Patterns are compared with a second, derived view, the *match form*: each segment
//! fully percent-decoded (no escape left that could hide a letter from a pattern),
//! `;parameters` cut off, empty segments and a trailing `/` dropped. It only ever makes
//! more requests match a pattern, never fewer, so a block, approval or rate-limit rule
//! cannot be sidestepped by a spelling the upstream treats as the same path.
//!
//! What holds, limits or refuses a request is compared more loosely still, in the
//! *loose form*: the match form with each segment's letters folded to one case
//! (Express, ASP.NET and IIS route `/API/Send` as `/api/send`; a fold through upper
//! then lower case, since .NET compares upper-cased text and reads `ſ` as `s` and `ı`
//! as `i`), and trailing dots and spaces dropped from each segment (IIS reads
//! `/send.` and `/send%20` as `/send`). A rule also meets the loose form with the last
//! segment's extension cut off (`/send.json` is `/send` with the format `json` to
//! Rails, and to Spring's suffix matching), so `/send` holds `/send.json` too.
//!
//! What lets a request through (an allow rule, a person's grant, a secret's path) is
//! compared with the *strict form* instead: the match form with the `;parameters` kept.
//! Tomcat reads `/send;x` as `/send`, but nginx and most servers read it as another
//! path, and the path forwarded is `/send;x`: an allow for `/send` (or a card a person
//! approved for it) does not reach it, and it meets the rules below as any other path
//! would.
//!
//! Written by hand: URL crates normalise for building URLs (and the `url` crate keeps
//! `%2e%2e` as a segment); none refuses the ambiguous forms a gateway must refuse.

use std::fmt;

/// Why a path was refused: each is a spelling some upstream reads differently from
/// another, so no single judgement of it can be right.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathRefusal {
    #[error("the path does not start with '/'")]
    NotAbsolute,
    #[error("the path contains an encoded '/' (%2F), which servers read either as a separator or as a character")]
    EncodedSlash,
    #[error("the path contains a backslash (raw or %5C), which some servers read as '/'")]
    Backslash,
    #[error("the path contains a control character or NUL (raw or encoded)")]
    ControlCharacter,
    #[error("the path contains a malformed percent-escape (a '%' not followed by two hex digits)")]
    MalformedEscape,
    #[error("the path contains an escape that is itself escaped (such as %252e), which a server that decodes twice reads as another path")]
    DoubleEncoded,
    #[error("the path climbs above the root with '..'")]
    AboveRoot,
    #[error("the path contains a dot segment with parameters ('..;' or '.;'), which some servers read as '..' or '.'")]
    DisguisedDotSegment,
    #[error("the path contains a segment of parameters only ('/;x/'), which some servers drop and others keep")]
    ParametersOnlySegment,
    #[error("the path contains percent-escapes that do not decode to UTF-8 (such as the overlong %C0%AE for '.'), which some servers read as other characters")]
    NotUtf8,
}

/// A request path (no query) in canonical form, with its match form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanonicalPath {
    canonical: String,
    match_form: String,
    /// The strict form where it differs from the match form (a segment has
    /// `;parameters`), else `None`.
    strict_form: Option<String>,
    /// The loose form (see the module documentation).
    loose_form: String,
    /// The loose form with the last segment's extension cut off (see [`loose_stems`]).
    loose_stems: Vec<String>,
}

impl CanonicalPath {
    /// Canonicalises `raw` (a path without query or fragment, as the client sent it).
    pub fn parse(raw: &str) -> Result<CanonicalPath, PathRefusal> {
        if !raw.starts_with('/') {
            return Err(PathRefusal::NotAbsolute);
        }
        let mut segments: Vec<String> = Vec::new();
        // Whether the canonical path ends with '/' after the last segment.
        let mut trailing_slash = false;
        let last = raw.split('/').count() - 1;
        for (index, raw_segment) in raw.split('/').enumerate().skip(1) {
            let segment = decode_unreserved(raw_segment)?;
            if escapes_an_escape(&segment) {
                return Err(PathRefusal::DoubleEncoded);
            }
            if segment.contains('%')
                && std::str::from_utf8(
                    &percent_encoding::percent_decode_str(&segment).collect::<Vec<u8>>(),
                )
                .is_err()
            {
                return Err(PathRefusal::NotUtf8);
            }
            let is_last = index == last;
            match segment.as_str() {
                "" => {
                    // Doubled slashes collapse; an empty last segment is a trailing '/'.
                    if is_last {
                        trailing_slash = true;
                    }
                }
                "." => trailing_slash = is_last,
                ".." => {
                    if segments.pop().is_none() {
                        return Err(PathRefusal::AboveRoot);
                    }
                    trailing_slash = is_last;
                }
                _ => {
                    match decode_all(&segment).split(';').next() {
                        Some("." | "..") => return Err(PathRefusal::DisguisedDotSegment),
                        Some("") => return Err(PathRefusal::ParametersOnlySegment),
                        _ => {}
                    }
                    segments.push(segment);
                    trailing_slash = false;
                }
            }
        }
        let mut canonical = String::with_capacity(raw.len());
        for segment in &segments {
            canonical.push('/');
            canonical.push_str(segment);
        }
        if trailing_slash || segments.is_empty() {
            canonical.push('/');
        }
        // Canonical segments write an escaped `;` as `%3B` (escapes upper-cased), so no
        // decoding is needed to see one.
        let strict_form = segments
            .iter()
            .any(|segment| segment.contains(';') || segment.contains("%3B"))
            .then(|| match_form(&segments, true));
        let match_form = match_form(&segments, false);
        let loose_form = loose_form(&match_form);
        let loose_stems = loose_stems(&loose_form);
        Ok(CanonicalPath {
            canonical,
            match_form,
            strict_form,
            loose_form,
            loose_stems,
        })
    }

    /// The form forwarded upstream and shown to people.
    pub fn as_str(&self) -> &str {
        &self.canonical
    }

    /// The form patterns are compared with (see the module documentation).
    pub fn match_form(&self) -> &str {
        &self.match_form
    }

    /// The form patterns that let a request through are compared with: the match form
    /// with `;parameters` kept (see the module documentation).
    pub fn strict_form(&self) -> &str {
        self.strict_form.as_deref().unwrap_or(&self.match_form)
    }

    /// The forms patterns that hold, limit or refuse a request are compared with: the
    /// loose form, and it without the last segment's extension where it has one (see
    /// the module documentation).
    pub fn loose_forms(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.loose_form.as_str()).chain(self.loose_stems.iter().map(String::as_str))
    }
}

/// The loose form of a match form (or of a pattern's): each segment folded by
/// [`loose_segment`].
pub(crate) fn loose_form(match_form: &str) -> String {
    let mut out = String::with_capacity(match_form.len());
    for (index, segment) in match_form.split('/').enumerate() {
        if index > 0 {
            out.push('/');
        }
        out.push_str(&loose_segment(segment));
    }
    out
}

/// One segment as servers that route without regard to case, or that drop trailing
/// dots and spaces, read it: letters folded through upper then lower case, trailing
/// dots and spaces dropped (unless nothing would be left). The fold is made to agree
/// with routers that map one character at a time as well (Java's `equalsIgnoreCase`,
/// Python's and Java's case-insensitive regexes read `İ` as `i` and `ẞ` as `ß`, which
/// full mappings make `i̇` and leave apart from `ss`; review): the combining dot above
/// that lower-casing `İ` leaves is dropped, and `ß` is `ss`.
pub(crate) fn loose_segment(segment: &str) -> String {
    let mut folded: String = if segment.is_ascii() {
        segment.to_ascii_lowercase()
    } else {
        let mut folded = String::with_capacity(segment.len());
        for lower in segment
            .chars()
            .flat_map(char::to_uppercase)
            .flat_map(char::to_lowercase)
        {
            match lower {
                '\u{307}' => {}
                'ß' => folded.push_str("ss"),
                other => folded.push(other),
            }
        }
        folded
    };
    let kept = folded.trim_end_matches(['.', ' ']).len();
    if kept > 0 {
        folded.truncate(kept);
    }
    folded
}

/// A loose form without its last segment's extension, if it has one: from the
/// segment's first dot that does not start it (Spring's suffix matching read
/// `/send.a.b` as `/send`), and from its last (Rails reads `/a.b.c` as `/a.b` in the
/// format `c`, and a dynamic segment stops at a dot, so `/models/gpt-4.1` is
/// `/models/gpt-4`), where that is another.
fn loose_stems(loose: &str) -> Vec<String> {
    let Some(last) = loose.rfind('/').map(|at| at + 1) else {
        return Vec::new();
    };
    let segment = &loose[last..];
    let mut stems: Vec<String> = Vec::new();
    for dot in [segment.find('.'), segment.rfind('.')]
        .into_iter()
        .flatten()
    {
        let stem = &loose[..last + dot];
        if dot > 0 && !stems.iter().any(|kept| kept == stem) {
            stems.push(stem.to_string());
        }
    }
    stems
}

impl fmt::Display for CanonicalPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical)
    }
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Checks a byte that appears raw or escaped for the refused forms.
fn check_byte(byte: u8, escaped: bool) -> Result<(), PathRefusal> {
    match byte {
        b'/' if escaped => Err(PathRefusal::EncodedSlash),
        b'\\' => Err(PathRefusal::Backslash),
        0x00..=0x1f | 0x7f => Err(PathRefusal::ControlCharacter),
        _ => Ok(()),
    }
}

/// One raw segment → its canonical spelling (unreserved escapes decoded, the others
/// upper-cased), refusing what [`PathRefusal`] names.
fn decode_unreserved(segment: &str) -> Result<String, PathRefusal> {
    let bytes = segment.as_bytes();
    let mut out = String::with_capacity(segment.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte != b'%' {
            check_byte(byte, false)?;
            // Copy the whole UTF-8 character this byte starts (non-ASCII stays as sent).
            let width = utf8_width(byte);
            out.push_str(&segment[i..i + width]);
            i += width;
            continue;
        }
        let (Some(high), Some(low)) = (
            bytes.get(i + 1).copied().and_then(hex_value),
            bytes.get(i + 2).copied().and_then(hex_value),
        ) else {
            return Err(PathRefusal::MalformedEscape);
        };
        let decoded = high << 4 | low;
        check_byte(decoded, true)?;
        if is_unreserved(decoded) {
            out.push(char::from(decoded));
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(high)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(low)]));
        }
        i += 3;
    }
    Ok(out)
}

/// Whether a canonical segment holds an escaped `%` followed by two hex digits: once
/// decoded, that is an escape again, so a server that decodes twice (some frameworks
/// behind a decoding proxy do) reads a byte no rule saw, `%252F` as `/`, `%252e%252e`
/// as `..`. Canonical segments have their unreserved escapes decoded, so `%25%32%65`
/// is caught here as `%252e`.
fn escapes_an_escape(segment: &str) -> bool {
    segment
        .as_bytes()
        .windows(5)
        .any(|w| w[..3] == *b"%25" && hex_value(w[3]).is_some() && hex_value(w[4]).is_some())
}

/// Length of the UTF-8 sequence starting with `first` (the input is a `&str`).
fn utf8_width(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

/// The match form of canonical segments (see the module documentation), or with
/// `keep_parameters` the strict form.
fn match_form(segments: &[String], keep_parameters: bool) -> String {
    let mut out = String::new();
    for segment in segments {
        let decoded = decode_all(segment);
        let kept = if keep_parameters {
            decoded.as_str()
        } else {
            decoded.split(';').next().unwrap_or_default()
        };
        if kept.is_empty() {
            continue;
        }
        out.push('/');
        out.push_str(kept);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Decodes every escape of a canonical segment; bytes that are not UTF-8 once decoded
/// are written back as upper-case escapes (so they match only a pattern that has the
/// same bytes). Canonical segments hold no escaped '/' or control character, so
/// decoding cannot make a new segment.
pub(crate) fn decode_all(segment: &str) -> String {
    if !segment.contains('%') {
        return segment.to_string();
    }
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(segment).collect();
    render_bytes(&bytes)
}

/// Decoded bytes as text: UTF-8 as it is, any other byte as an upper-case escape.
fn render_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for byte in chunk.invalid() {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(byte >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(byte & 15)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(raw: &str) -> String {
        CanonicalPath::parse(raw)
            .unwrap_or_else(|e| panic!("{raw:?}: {e}"))
            .as_str()
            .to_string()
    }
    fn matched(raw: &str) -> String {
        CanonicalPath::parse(raw).unwrap().match_form().to_string()
    }

    #[test]
    fn spellings_of_the_same_path_become_one() {
        for (raw, expected) in [
            ("/", "/"),
            ("/admin/x", "/admin/x"),
            ("/v1/../admin/x", "/admin/x"),
            ("//admin/x", "/admin/x"),
            ("/./admin/x", "/admin/x"),
            ("/%61dmin/x", "/admin/x"),
            ("/%2e%2e/", "ERR"),
            ("/v1/%2e%2e/admin/x", "/admin/x"),
            ("/v1/%2E/send", "/v1/send"),
            ("/v1/%73end", "/v1/send"),
            ("/admin/x/", "/admin/x/"),
            ("/admin/x//", "/admin/x/"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a/./b/../../c", "/c"),
            ("/a%7eb", "/a~b"),
            ("/a%3ab", "/a%3Ab"),
            ("/100%25", "/100%25"),
            ("/100%25off", "/100%25off"),
            ("/100%25/x", "/100%25/x"),
            (
                "/users/bob%40example.com/send",
                "/users/bob%40example.com/send",
            ),
            ("/caf%C3%A9", "/caf%C3%A9"),
            ("/café", "/café"),
            ("/a;b/c", "/a;b/c"),
        ] {
            if expected == "ERR" {
                assert!(CanonicalPath::parse(raw).is_err(), "{raw:?}");
            } else {
                assert_eq!(canonical(raw), expected, "{raw:?}");
            }
        }
    }

    #[test]
    fn ambiguous_forms_are_refused_with_their_reason() {
        for (raw, reason) in [
            ("/a%2Fb", PathRefusal::EncodedSlash),
            ("/a%2fb", PathRefusal::EncodedSlash),
            ("/a%5Cb", PathRefusal::Backslash),
            ("/a\\b", PathRefusal::Backslash),
            ("/..", PathRefusal::AboveRoot),
            ("/a/../../b", PathRefusal::AboveRoot),
            ("/%2e%2e/etc", PathRefusal::AboveRoot),
            ("/a/..;x/b", PathRefusal::DisguisedDotSegment),
            ("/a/.;x/b", PathRefusal::DisguisedDotSegment),
            ("/a/%2e%2e;/b", PathRefusal::DisguisedDotSegment),
            ("/a/..%3B/b", PathRefusal::DisguisedDotSegment),
            ("/a/;/../b", PathRefusal::ParametersOnlySegment),
            ("/;jsessionid=1", PathRefusal::ParametersOnlySegment),
            ("/a%00b", PathRefusal::ControlCharacter),
            ("/a%0Ab", PathRefusal::ControlCharacter),
            ("/a%7fb", PathRefusal::ControlCharacter),
            ("/a\tb", PathRefusal::ControlCharacter),
            ("/a%", PathRefusal::MalformedEscape),
            ("/a%4", PathRefusal::MalformedEscape),
            ("/a%zz", PathRefusal::MalformedEscape),
            ("/v1/%252e%252e/admin", PathRefusal::DoubleEncoded),
            ("/a%252Fb", PathRefusal::DoubleEncoded),
            ("/a%25%32%66b", PathRefusal::DoubleEncoded),
            ("/a%25%32fb", PathRefusal::DoubleEncoded),
            ("/a%FFb", PathRefusal::NotUtf8),
            ("/%c0%ae%c0%ae/admin/x", PathRefusal::NotUtf8),
            ("/admin%C3/x", PathRefusal::NotUtf8),
            ("*", PathRefusal::NotAbsolute),
            ("", PathRefusal::NotAbsolute),
            ("admin", PathRefusal::NotAbsolute),
        ] {
            assert_eq!(CanonicalPath::parse(raw), Err(reason), "{raw:?}");
        }
    }

    #[test]
    fn match_form_decodes_parameters_and_trailing_slash_away() {
        assert_eq!(
            matched("/users/bob%40example.com/send"),
            "/users/bob@example.com/send"
        );
        assert_eq!(matched("/admin;jsessionid=1/x"), "/admin/x");
        assert_eq!(matched("/admin/x/"), "/admin/x");
        assert_eq!(matched("/"), "/");
        assert_eq!(matched("/a%20b"), "/a b");
        // The strict form keeps the parameters (and is the match form without any).
        let strict = |raw: &str| CanonicalPath::parse(raw).unwrap().strict_form().to_string();
        assert_eq!(strict("/admin;jsessionid=1/x/"), "/admin;jsessionid=1/x");
        assert_eq!(strict("/admin%3Bx/y"), "/admin;x/y");
        assert_eq!(strict("/admin%3bx/y"), "/admin;x/y");
        assert_eq!(strict("/%61dmin//x/"), "/admin/x");
    }

    #[test]
    fn canonical_form_is_a_fixed_point() {
        for raw in [
            "/v1/../admin/x",
            "//a//b/",
            "/%61%62%63/%3a",
            "/a;b/./c/..",
            "/users/bob%40example.com/send",
        ] {
            let once = canonical(raw);
            assert_eq!(canonical(&once), once, "{raw:?}");
            assert_eq!(
                CanonicalPath::parse(&once).unwrap().match_form(),
                matched(raw),
                "{raw:?}"
            );
        }
    }

    /// How a server that decodes everything reads a path (nginx, most frameworks):
    /// decode every escape, drop `;parameters`, merge slashes, resolve dot segments.
    /// `None` where it would climb above the root.
    fn server_view(raw: &str) -> Option<String> {
        let decoded = percent_encoding::percent_decode_str(raw).collect::<Vec<u8>>();
        let mut segments: Vec<Vec<u8>> = Vec::new();
        for segment in decoded.split(|b| *b == b'/').skip(1) {
            let segment = segment.split(|b| *b == b';').next().unwrap_or_default();
            match segment {
                b"" | b"." => {}
                b".." => {
                    segments.pop()?;
                }
                other => segments.push(other.to_vec()),
            }
        }
        let mut out = Vec::new();
        for segment in segments {
            out.push(b'/');
            out.extend(segment);
        }
        if out.is_empty() {
            out.push(b'/');
        }
        Some(render_bytes(&out))
    }

    fn path_strategy() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let piece = prop_oneof![
            Just("/".to_string()),
            Just("//".to_string()),
            Just(".".to_string()),
            Just("..".to_string()),
            Just("%2e".to_string()),
            Just("%2E".to_string()),
            Just("%2f".to_string()),
            Just("%5c".to_string()),
            Just("%00".to_string()),
            Just(";".to_string()),
            Just("%3b".to_string()),
            Just("%".to_string()),
            Just("%25".to_string()),
            Just("%41".to_string()),
            Just("%61".to_string()),
            Just("%7e".to_string()),
            Just("%40".to_string()),
            Just("%C3%A9".to_string()),
            Just("\\".to_string()),
            "[a-c]{1,3}",
        ];
        proptest::collection::vec(piece, 0..12).prop_map(|pieces| format!("/{}", pieces.concat()))
    }

    proptest::proptest! {
        #[test]
        fn canonical_form_is_stable_and_holds_no_ambiguity(raw in path_strategy()) {
            if let Ok(path) = CanonicalPath::parse(&raw) {
                let text = path.as_str();
                let again = CanonicalPath::parse(text).unwrap();
                proptest::prop_assert_eq!(again.as_str(), text);
                proptest::prop_assert_eq!(again.match_form(), path.match_form());
                for bad in ["//", "/./", "/../", "%2F", "%2f", "%5C", "\\\\", "%00"] {
                    proptest::prop_assert!(!text.contains(bad), "{:?} -> {:?}", raw, text);
                }
                proptest::prop_assert!(!text.ends_with("/.") && !text.ends_with("/.."));
            }
        }

        /// What a decoding server reads is what patterns are compared with, and a
        /// server that decodes twice reads nothing else.
        #[test]
        fn match_form_is_what_a_decoding_server_reads(raw in path_strategy()) {
            if let Ok(path) = CanonicalPath::parse(&raw) {
                if let Some(server) = server_view(&raw) {
                    proptest::prop_assert_eq!(path.match_form(), server.as_str(), "raw {:?}", raw);
                }
                let twice: Vec<u8> = percent_encoding::percent_decode_str(path.match_form()).collect();
                proptest::prop_assert_eq!(render_bytes(&twice), path.match_form(), "raw {:?}", raw);
            } else if let Err(reason) = CanonicalPath::parse(&raw) {
                // Refused only for what the reason names.
                let lower = raw.to_ascii_lowercase();
                let named = match reason {
                    PathRefusal::EncodedSlash => lower.contains("%2f"),
                    PathRefusal::Backslash => lower.contains("%5c") || raw.contains('\\'),
                    PathRefusal::ControlCharacter => lower.contains("%00"),
                    PathRefusal::MalformedEscape | PathRefusal::NotUtf8 => raw.contains('%'),
                    PathRefusal::DoubleEncoded => lower.contains("%25"),
                    PathRefusal::AboveRoot => raw.contains("..") || lower.contains("%2e"),
                    PathRefusal::DisguisedDotSegment | PathRefusal::ParametersOnlySegment => {
                        raw.contains(';') || lower.contains("%3b")
                    }
                    PathRefusal::NotAbsolute => false,
                };
                proptest::prop_assert!(named, "{:?} refused as {:?}", raw, reason);
            }
        }
    }
}
