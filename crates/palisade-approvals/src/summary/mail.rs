//! Just enough RFC 822 / MIME reading to tell a person what an e-mail says.
//!
//! Written by hand because the summary needs a best-effort, never-failing reader of a
//! possibly truncated message, bounded in work, not a conforming parser; mail crates
//! either reject malformed input or pull in far more than the five headers, the text
//! parts and attachment names a card shows.
//!
//! A `multipart/alternative` message carries the same text twice, as plain text and as
//! HTML, and most mail clients show the HTML. Nothing makes the two agree: a message
//! can say "Lunch is at noon" in plain text and ask for a wire transfer in HTML. So
//! when both are there and their words differ, the HTML's text is given too. Which
//! version a client shows, and which parts of a multipart it shows at all, is in
//! [`View`].

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};

use super::clean::one_line;

/// Header lines read from one message or part.
const MAX_HEADERS: usize = 200;
/// Bytes of one header's value read, folded lines included.
const HEADER_VALUE_BYTES: usize = 16 * 1024;
/// Parts looked at across the whole message, however nested.
const MAX_PARTS: usize = 64;
/// Nesting of multiparts followed (mixed → alternative → related is 3).
const MAX_DEPTH: usize = 4;

const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

/// Base64 in either alphabet, padded or not, with line breaks, possibly cut short
/// (the vault reads a prefix): decodes what can be decoded.
pub(crate) fn decode_base64_lenient(text: &[u8]) -> Option<Vec<u8>> {
    let mut cleaned: Vec<u8> = text
        .iter()
        .filter(|b| !b.is_ascii_whitespace() && **b != b'=')
        .map(|b| match b {
            b'+' => b'-',
            b'/' => b'_',
            other => *other,
        })
        .collect();
    // A trailing lone character cannot carry a byte; drop it instead of failing.
    if cleaned.len() % 4 == 1 {
        cleaned.pop();
    }
    URL_SAFE_LENIENT.decode(&cleaned).ok()
}

/// A parsed message or MIME part: lower-case header names with unfolded values.
pub(crate) struct Part<'a> {
    pub headers: Vec<(String, String)>,
    /// Header lines past [`MAX_HEADERS`], or folded beyond [`HEADER_VALUE_BYTES`], were
    /// not read: a recipient may be among them.
    pub headers_cut: bool,
    pub body: &'a [u8],
}

impl<'a> Part<'a> {
    pub(crate) fn parse(bytes: &'a [u8]) -> Part<'a> {
        let (head, body) = split_head(bytes);
        let (headers, headers_cut) = parse_headers(head);
        Part {
            headers,
            headers_cut,
            body,
        }
    }

    /// The first header of that name, with encoded words decoded.
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| decode_encoded_words(value))
    }

    /// Every header of that name, in order, with encoded words decoded.
    pub(crate) fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, value)| decode_encoded_words(value))
            .collect()
    }

    /// Every header of that name, in order, as written (encoded words left encoded).
    /// An address list is split on these, and only then are display names decoded: a
    /// name can encode `, <bob@corp.example>` and must not read as a second address.
    pub(crate) fn raw_header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, value)| value.clone())
            .collect()
    }

    /// The MIME type (lower case, `text/plain` when none is given) and the whole
    /// `Content-Type` value with its parameters.
    pub(crate) fn content_type(&self) -> (String, String) {
        let raw = self.header("content-type").unwrap_or_default();
        let mime = raw
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let mime = if mime.is_empty() {
            String::from("text/plain")
        } else {
            mime
        };
        (mime, raw)
    }
}

impl Part<'_> {
    /// The body with its `Content-Transfer-Encoding` (base64, quoted-printable) undone.
    pub(crate) fn decoded_body(&self) -> Vec<u8> {
        let encoding = self
            .header("content-transfer-encoding")
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match encoding.as_str() {
            "base64" => decode_base64_lenient(self.body).unwrap_or_default(),
            "quoted-printable" => decode_quoted_printable(self.body),
            _ => self.body.to_vec(),
        }
    }
}

/// The parts of a multipart body (an HTTP upload's, or a message's) whose
/// `Content-Type` value, parameters included, is `content_type`; none without a boundary.
pub(crate) fn multipart_parts<'a>(content_type: &str, body: &'a [u8]) -> Vec<Part<'a>> {
    match parameter(content_type, "boundary") {
        Some(boundary) if !boundary.is_empty() => split_multipart(body, boundary.as_bytes())
            .into_iter()
            .map(Part::parse)
            .collect(),
        _ => Vec::new(),
    }
}

/// What a person needs from a message body.
#[derive(Default)]
pub(crate) struct MailContent {
    /// What a text-only client shows (or, for a message with only HTML, the HTML's text).
    pub text: Option<String>,
    /// What a client that displays HTML shows, when its words differ from `text`: it is
    /// what most recipients see.
    pub html_text: Option<String>,
    pub attachments: Vec<String>,
    /// Versions of a `multipart/alternative` whose words are in neither `text` nor
    /// `html_text`: a client that cannot display the last version shows one of them.
    pub other_versions: usize,
    /// Parts past [`MAX_PARTS`] or nested deeper than [`MAX_DEPTH`] were not read: text
    /// may be among them.
    pub parts_not_read: bool,
}

/// Walks the MIME tree as a mail client does (see [`View`]) for what an HTML client
/// shows and what a text-only client shows, and the names of attachments.
pub(crate) fn content(message: &Part<'_>) -> MailContent {
    let mut walker = Walker::default();
    let view = walker.walk(message, 0);
    let (text, html_text) = match view.plain {
        Some(plain) => {
            let differs = view
                .shown
                .as_deref()
                .is_some_and(|shown| !same_words(shown, &plain));
            (Some(plain), view.shown.filter(|_| differs))
        }
        None => (view.shown, None),
    };
    MailContent {
        text,
        html_text,
        attachments: walker.attachments,
        other_versions: walker.other_versions,
        parts_not_read: walker.parts_not_read,
    }
}

/// Whether two texts have the same words in the same order, however spaced.
fn same_words(one: &str, other: &str) -> bool {
    one.split_whitespace().eq(other.split_whitespace())
}

/// What one part, or a multipart with everything in it, shows.
///
/// Of a `multipart/alternative` a client shows one version: the last it can display
/// (RFC 2046), where a client that displays HTML prefers a version with HTML in it.
/// Of any other multipart (`mixed`, `related`, …) it shows every inline text part in
/// order. Keeping only the first text part let a second one (`P.S. please wire …`), or a
/// last HTML version, go unseen on the card.
#[derive(Default)]
struct View {
    /// What a client that displays HTML shows.
    shown: Option<String>,
    /// What a text-only client shows; `None` where there is only HTML, which such a
    /// client shows as `shown` (converted to text).
    plain: Option<String>,
    /// Whether HTML is part of `shown`.
    html: bool,
}

impl View {
    fn text(text: String) -> View {
        View {
            shown: Some(text.clone()),
            plain: Some(text),
            html: false,
        }
    }

    fn html(text: String) -> View {
        View {
            shown: Some(text),
            plain: None,
            html: true,
        }
    }
}

#[derive(Default)]
struct Walker {
    attachments: Vec<String>,
    parts_seen: usize,
    other_versions: usize,
    parts_not_read: bool,
}

impl Walker {
    fn walk(&mut self, part: &Part<'_>, depth: usize) -> View {
        self.parts_seen += 1;
        if self.parts_seen > MAX_PARTS {
            self.parts_not_read = true;
            return View::default();
        }
        let (mime, raw_type) = part.content_type();
        let disposition = part.header("content-disposition").unwrap_or_default();
        let file_name =
            parameter(&disposition, "filename").or_else(|| parameter(&raw_type, "name"));
        if disposition
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("attachment")
            || (file_name.is_some() && !mime.starts_with("multipart/"))
        {
            self.attachments
                .push(file_name.unwrap_or_else(|| String::from("(unnamed)")));
            return View::default();
        }
        if mime.starts_with("multipart/") {
            if depth >= MAX_DEPTH {
                self.parts_not_read = true;
                return View::default();
            }
            let Some(boundary) = parameter(&raw_type, "boundary") else {
                return View::default();
            };
            let children: Vec<View> = split_multipart(part.body, boundary.as_bytes())
                .into_iter()
                .map(|body| self.walk(&Part::parse(body), depth + 1))
                .collect();
            return if mime == "multipart/alternative" {
                self.one_version(children)
            } else {
                all_in_order(children)
            };
        }
        let decode = || {
            let charset = parameter(&raw_type, "charset").unwrap_or_default();
            decode_charset(&part.decoded_body(), &charset)
        };
        match mime.as_str() {
            "text/plain" => View::text(decode()),
            "text/html" => View::html(strip_tags(&decode())),
            _ => View::default(),
        }
    }

    /// The version of an alternative a client shows, counting the versions that say
    /// something else than what either kind of client shows.
    fn one_version(&mut self, versions: Vec<View>) -> View {
        let readable: Vec<View> = versions
            .into_iter()
            .filter(|version| version.shown.is_some())
            .collect();
        let Some(chosen) = readable
            .iter()
            .rposition(|version| version.html)
            .or(readable.len().checked_sub(1))
        else {
            return View::default();
        };
        let plain = readable
            .iter()
            .rev()
            .find_map(|version| version.plain.clone());
        let shown = readable[chosen].shown.clone();
        let on_card = |text: &str| {
            [shown.as_deref(), plain.as_deref()]
                .into_iter()
                .flatten()
                .any(|card| same_words(card, text))
        };
        self.other_versions += readable
            .iter()
            .filter_map(|version| version.shown.as_deref())
            .filter(|text| !on_card(text))
            .count();
        View {
            shown,
            plain,
            html: readable[chosen].html,
        }
    }
}

/// Every part of a `mixed` (or `related`, or unknown) multipart, one after the other.
fn all_in_order(parts: Vec<View>) -> View {
    let join = |texts: Vec<&str>| {
        let texts: Vec<&str> = texts.into_iter().map(str::trim_end).collect();
        texts.join("\n\n")
    };
    let shown: Vec<&str> = parts.iter().filter_map(|p| p.shown.as_deref()).collect();
    if shown.is_empty() {
        return View::default();
    }
    let plain = parts.iter().any(|p| p.plain.is_some()).then(|| {
        join(
            parts
                .iter()
                .filter_map(|p| p.plain.as_deref().or(p.shown.as_deref()))
                .collect(),
        )
    });
    View {
        shown: Some(join(shown)),
        plain,
        html: parts.iter().any(|p| p.html),
    }
}

/// Head and body split at the first empty line (CRLF or bare LF); no empty line means
/// the whole input is head (a message cut off inside its headers).
fn split_head(bytes: &[u8]) -> (&[u8], &[u8]) {
    if bytes.starts_with(b"\r\n") {
        return (&[], &bytes[2..]);
    }
    if bytes.starts_with(b"\n") {
        return (&[], &bytes[1..]);
    }
    let mut index = 0;
    while let Some(offset) = bytes[index..].iter().position(|b| *b == b'\n') {
        let newline = index + offset;
        let rest = &bytes[newline + 1..];
        if rest.starts_with(b"\r\n") {
            return (&bytes[..newline], &rest[2..]);
        }
        if rest.starts_with(b"\n") {
            return (&bytes[..newline], &rest[1..]);
        }
        index = newline + 1;
    }
    (bytes, &[])
}

/// The headers, and whether any were left unread for being too many or too long.
fn parse_headers(head: &[u8]) -> (Vec<(String, String)>, bool) {
    let text = String::from_utf8_lossy(head);
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut cut = false;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with([' ', '\t']) {
            // A folded continuation of the previous header.
            if let Some((_, value)) = headers.last_mut() {
                if value.len() < HEADER_VALUE_BYTES {
                    value.push(' ');
                    value.push_str(line.trim());
                } else {
                    cut |= !line.trim().is_empty();
                }
            }
            continue;
        }
        if headers.len() >= MAX_HEADERS {
            cut |= line.contains(':');
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    (headers, cut)
}

/// A `name=value` parameter of a structured header (`charset`, `boundary`, `filename`),
/// quoted or not; case-insensitive name.
fn parameter(header: &str, name: &str) -> Option<String> {
    for piece in header.split(';').skip(1) {
        let Some((key, value)) = piece.split_once('=') else {
            continue;
        };
        let key = key.trim();
        // RFC 2231 `filename*=utf-8''name.pdf`
        let extended = key.strip_suffix('*');
        if !key.eq_ignore_ascii_case(name)
            && !extended.is_some_and(|k| k.eq_ignore_ascii_case(name))
        {
            continue;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .map(|v| v.strip_suffix('"').unwrap_or(v))
            .unwrap_or(value);
        if extended.is_some() {
            let encoded = value.rsplit('\'').next().unwrap_or(value);
            return Some(
                percent_encoding::percent_decode_str(encoded)
                    .decode_utf8_lossy()
                    .into_owned(),
            );
        }
        return Some(decode_encoded_words(value));
    }
    None
}

/// The bodies between `--boundary` lines, stopping at `--boundary--` or the end.
fn split_multipart<'a>(body: &'a [u8], boundary: &[u8]) -> Vec<&'a [u8]> {
    let mut delimiter = Vec::with_capacity(boundary.len() + 2);
    delimiter.extend_from_slice(b"--");
    delimiter.extend_from_slice(boundary);
    let mut parts = Vec::new();
    let Some(first) = find(body, &delimiter, 0) else {
        return parts;
    };
    let mut cursor = first;
    while parts.len() < MAX_PARTS {
        let after = cursor + delimiter.len();
        if body[after..].starts_with(b"--") {
            break;
        }
        // The rest of the delimiter line (transport padding) is not content.
        let start = match body[after..].iter().position(|b| *b == b'\n') {
            Some(offset) => after + offset + 1,
            None => break,
        };
        match find(body, &delimiter, start) {
            Some(next) => {
                let mut end = next;
                // The line break before a delimiter belongs to the delimiter.
                if end > start && body[end - 1] == b'\n' {
                    end -= 1;
                    if end > start && body[end - 1] == b'\r' {
                        end -= 1;
                    }
                }
                parts.push(&body[start..end]);
                cursor = next;
            }
            None => {
                parts.push(&body[start..]);
                break;
            }
        }
    }
    parts
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > haystack.len() {
        return None;
    }
    haystack[from..]
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|offset| from + offset)
}

fn decode_quoted_printable(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte != b'=' {
            out.push(byte);
            index += 1;
            continue;
        }
        let rest = &bytes[index + 1..];
        if rest.starts_with(b"\r\n") {
            index += 3;
        } else if rest.starts_with(b"\n") {
            index += 2;
        } else if let Some(value) = rest.get(..2).and_then(hex_byte) {
            out.push(value);
            index += 3;
        } else {
            out.push(byte);
            index += 1;
        }
    }
    out
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    if !pair.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let text = std::str::from_utf8(pair).ok()?;
    u8::from_str_radix(text, 16).ok()
}

/// UTF-8 and ASCII as they are; the Latin-1 family byte for byte (close enough for
/// a summary); anything else as lossy UTF-8.
fn decode_charset(bytes: &[u8], charset: &str) -> String {
    let charset = charset.trim().to_ascii_lowercase();
    let latin = matches!(
        charset.as_str(),
        "iso-8859-1"
            | "iso8859-1"
            | "latin1"
            | "latin-1"
            | "windows-1252"
            | "cp1252"
            | "iso-8859-15"
    );
    if latin {
        bytes.iter().map(|b| char::from(*b)).collect()
    } else {
        String::from_utf8_lossy(bytes).into_owned()
    }
}

/// RFC 2047 `=?charset?B|Q?text?=` words, as used in Subject and names in To.
/// Whitespace between two adjacent encoded words is dropped, as the RFC says.
pub(crate) fn decode_encoded_words(value: &str) -> String {
    if !value.contains("=?") {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    let mut previous_was_word = false;
    while let Some(start) = rest.find("=?") {
        let (before, candidate) = rest.split_at(start);
        match decode_one_word(candidate) {
            Some((decoded, consumed)) => {
                if !(previous_was_word && before.trim().is_empty()) {
                    out.push_str(before);
                }
                out.push_str(&decoded);
                rest = candidate.get(consumed..).unwrap_or("");
                previous_was_word = true;
            }
            None => {
                out.push_str(before);
                out.push_str("=?");
                rest = candidate.get(2..).unwrap_or("");
                previous_was_word = false;
            }
        }
    }
    out.push_str(rest);
    out
}

/// One encoded word at the start of `text`; returns the text and the bytes consumed.
fn decode_one_word(text: &str) -> Option<(String, usize)> {
    let inner = text.strip_prefix("=?")?;
    let (charset, after_charset) = inner.split_once('?')?;
    let (encoding, after_encoding) = after_charset.split_once('?')?;
    let end = after_encoding.find("?=")?;
    let encoded = &after_encoding[..end];
    if charset.is_empty()
        || charset.len() > 40
        || encoded.contains(char::is_whitespace)
        || charset.contains(char::is_whitespace)
    {
        return None;
    }
    let bytes = match encoding {
        "B" | "b" => decode_base64_lenient(encoded.as_bytes())?,
        "Q" | "q" => decode_quoted_printable(encoded.replace('_', " ").as_bytes()),
        _ => return None,
    };
    // Language tags (`utf-8*en`) do not change the decoding.
    let charset = charset.split('*').next().unwrap_or(charset);
    let consumed = 2 + charset_len(inner) + 1 + encoding.len() + 1 + end + 2;
    Some((decode_charset(&bytes, charset), consumed))
}

fn charset_len(inner: &str) -> usize {
    inner.find('?').unwrap_or(inner.len())
}

/// Elements whose content a browser does not render: skipped.
const HIDDEN_ELEMENTS: [&str; 2] = ["script", "style"];
/// Elements whose content a browser reads as text up to their end tag, not as markup
/// (`<textarea><style></textarea>` shows `<style>`, and hides nothing after it): given
/// as written.
const RAW_TEXT_ELEMENTS: [&str; 6] = ["textarea", "title", "xmp", "iframe", "noembed", "noframes"];

/// Characters of a link's target or an image's address shown.
const URL_CHARS: usize = 200;

/// Text of an HTML part: tags removed, common entities decoded, scripts and styles
/// skipped; good enough to show what a message says. A link whose target is not its
/// text reads `text (target)`, and an image `[image: address]`: a link reading
/// `https://bank.example/login` may lead elsewhere, and an image can carry the words
/// (wire instructions) a recipient reads.
///
/// It reads tags as a browser does where getting it wrong would hide text a recipient
/// sees: a `<` starts a tag only before a letter, `/`, `!` or `?` (`a < b` is text); an
/// element is known by its whole name (`<styles>` is an ordinary element, not a style
/// sheet); and a style or script never closed is shown, marked, rather than dropping the
/// rest of the message.
fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len().min(64 * 1024));
    let mut rest = html;
    // Elements whose end tag is known not to come: looking again would make a message
    // of many `<style>`s quadratic.
    let mut never_closed: Vec<&str> = Vec::new();
    // The link being read: its target, and where its text starts in `out`.
    let mut link: Option<(&str, usize)> = None;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let tag_and_after = &rest[open + 1..];
        if !tag_and_after.starts_with(|c: char| c.is_ascii_alphabetic() || "/!?".contains(c)) {
            out.push('<');
            rest = tag_and_after;
            continue;
        }
        let (tag, after) = match tag_and_after.find('>') {
            Some(close) => (&tag_and_after[..close], &tag_and_after[close + 1..]),
            None => (tag_and_after, ""),
        };
        rest = after;
        let (closing, name) = tag_name(tag);
        if name == "a" {
            // A link ends at its end tag or at the next link, as a browser nests none.
            if let Some((target, start)) = link.take() {
                out.push_str(&link_target(&out[start..], target));
            }
            if !closing {
                link = attribute(tag, "href").map(|target| (target, out.len()));
            }
        }
        if !closing && (name == "img" || name == "image") {
            out.push_str(&image(tag));
        }
        if !closing {
            let hidden = HIDDEN_ELEMENTS.iter().find(|hidden| **hidden == name);
            let raw = RAW_TEXT_ELEMENTS.iter().find(|raw| **raw == name);
            let element = hidden
                .or(raw)
                .filter(|element| !never_closed.contains(element));
            if let Some(element) = element {
                match find_end_tag(rest, element) {
                    Some(end) if hidden.is_some() => rest = &rest[end..],
                    Some(end) => {
                        out.push_str(&rest[..end]);
                        rest = &rest[end..];
                    }
                    None => {
                        never_closed.push(element);
                        if hidden.is_some() {
                            out.push_str(&format!(
                                "[<{element}> never closed; a mail client may not show what follows:] "
                            ));
                        }
                    }
                }
            } else if name == "plaintext" {
                // Everything after it is text, tags included.
                out.push_str(rest);
                rest = "";
            }
        }
        if (!closing && name == "br") || (closing && ["p", "div", "li"].contains(&name.as_str())) {
            out.push('\n');
        }
    }
    out.push_str(rest);
    if let Some((target, start)) = link {
        out.push_str(&link_target(&out[start..], target));
    }
    decode_entities(&out)
}

/// ` (target)` after a link's text, or nothing when the text is the target.
fn link_target(text: &str, target: &str) -> String {
    let text = decode_entities(text);
    let text: Vec<&str> = text.split_whitespace().collect();
    let decoded = decode_entities(target.trim());
    let address = decoded.strip_prefix("mailto:");
    if text.join(" ") == decoded || address.is_some_and(|address| text.join(" ") == address) {
        return String::new();
    }
    // Entities are decoded with the rest of the text.
    format!(" ({})", one_line(target, URL_CHARS))
}

/// `[image: address]` for an `<img>` tag, with the `srcset` a browser may load instead.
fn image(tag: &str) -> String {
    let source = attribute(tag, "src").unwrap_or("");
    let mut shown = format!("[image: {}", one_line(source, URL_CHARS));
    if let Some(set) = attribute(tag, "srcset") {
        shown.push_str(&format!(", or {}", one_line(set, URL_CHARS)));
    }
    shown.push(']');
    shown
}

/// The value of attribute `name` in a tag (what is between `<` and `>`), quoted or not;
/// the first when it is given twice, as a browser reads it.
fn attribute<'t>(tag: &'t str, name: &str) -> Option<&'t str> {
    let is_space = |c: char| c.is_ascii_whitespace();
    let tag = tag.trim_start_matches('/');
    let mut rest = &tag[tag
        .find(|c: char| is_space(c) || c == '/')
        .unwrap_or(tag.len())..];
    loop {
        rest = rest.trim_start_matches(|c: char| is_space(c) || c == '/');
        if rest.is_empty() {
            return None;
        }
        // A name may start with `=`; it ends at a space, `/` or a later `=`.
        let name_end = rest
            .char_indices()
            .find(|(index, c)| is_space(*c) || *c == '/' || (*c == '=' && *index > 0))
            .map_or(rest.len(), |(index, _)| index);
        let attribute_name = &rest[..name_end];
        rest = rest[name_end..].trim_start_matches(is_space);
        let mut value = "";
        if let Some(after) = rest.strip_prefix('=') {
            let after = after.trim_start_matches(is_space);
            (value, rest) = match after.chars().next() {
                Some(quote @ ('"' | '\'')) => {
                    let inner = &after[1..];
                    match inner.find(quote) {
                        Some(end) => (&inner[..end], &inner[end + 1..]),
                        None => (inner, ""),
                    }
                }
                _ => after.split_at(after.find(is_space).unwrap_or(after.len())),
            };
        }
        if attribute_name.eq_ignore_ascii_case(name) {
            return Some(value);
        }
    }
}

/// Whether a tag (what is between `<` and `>`) closes an element, and the element's
/// name in lower case.
fn tag_name(tag: &str) -> (bool, String) {
    let (closing, tag) = match tag.strip_prefix('/') {
        Some(rest) => (true, rest),
        None => (false, tag),
    };
    let end = tag
        .find(|c: char| c.is_ascii_whitespace() || c == '/')
        .unwrap_or(tag.len());
    (closing, tag[..end].to_ascii_lowercase())
}

/// Where the first end tag of `name` is in `html`: `</name` in any case, followed by
/// whitespace, `/`, `>` or the end of the text, as a browser ends a style or script.
fn find_end_tag(html: &str, name: &str) -> Option<usize> {
    let bytes = html.as_bytes();
    let mut from = 0;
    while let Some(offset) = html[from..].find("</") {
        let at = from + offset;
        let name_at = at + 2;
        let name_end = name_at + name.len();
        let same_name = bytes
            .get(name_at..name_end)
            .is_some_and(|candidate| candidate.eq_ignore_ascii_case(name.as_bytes()));
        let name_ends = match bytes.get(name_end) {
            None => true,
            Some(byte) => byte.is_ascii_whitespace() || *byte == b'/' || *byte == b'>',
        };
        if same_name && name_ends {
            return Some(at);
        }
        from = name_at;
    }
    None
}

/// Longest entity read, `&#x10FFFF;` or a name such as `&hellip;`.
const ENTITY_CHARS: usize = 10;

/// The common named entities and every numeric one (`&#36;`, `&#x24;`) decoded, in one
/// pass so `&amp;lt;` reads `&lt;` as a browser shows it; others left as written.
fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let entity = after
            .char_indices()
            .take(ENTITY_CHARS + 1)
            .find(|(_, c)| *c == ';')
            .map(|(end, _)| &after[..end]);
        match entity.and_then(entity_char) {
            Some(decoded) => {
                out.push(decoded);
                rest = &after[entity.map_or(0, str::len) + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The character an entity's name (between `&` and `;`) stands for.
fn entity_char(name: &str) -> Option<char> {
    if let Some(number) = name.strip_prefix('#') {
        let value = match number.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => number.parse().ok()?,
        };
        return Some(char::from_u32(value).unwrap_or('\u{FFFD}'));
    }
    Some(match name {
        "nbsp" => ' ',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "amp" => '&',
        "euro" => '€',
        "pound" => '£',
        "yen" => '¥',
        "cent" => '¢',
        "copy" => '©',
        "reg" => '®',
        "hellip" => '…',
        "ndash" => '–',
        "mdash" => '—',
        "lsquo" => '‘',
        "rsquo" => '’',
        "ldquo" => '“',
        "rdquo" => '”',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_both_alphabets_padded_or_not_and_truncated() {
        assert_eq!(decode_base64_lenient(b"aGk/Pz8=").unwrap(), b"hi???");
        assert_eq!(decode_base64_lenient(b"aGk_Pz8").unwrap(), b"hi???");
        assert_eq!(decode_base64_lenient(b"aGk/\r\nPz8=").unwrap(), b"hi???");
        assert_eq!(decode_base64_lenient(b"aGk_Pz8x").unwrap(), b"hi???1");
        assert_eq!(decode_base64_lenient(b"aGk_P").unwrap(), b"hi?");
        assert!(decode_base64_lenient(b"a*b!").is_none());
    }

    #[test]
    fn encoded_words() {
        assert_eq!(
            decode_encoded_words("=?UTF-8?B?SGVsbG8gd8O2cmxk?="),
            "Hello wörld"
        );
        assert_eq!(
            decode_encoded_words("=?iso-8859-1?Q?Caf=E9_au_lait?="),
            "Café au lait"
        );
        assert_eq!(
            decode_encoded_words("Re: =?utf-8?q?a?= =?utf-8?q?b?= end"),
            "Re: ab end"
        );
        assert_eq!(decode_encoded_words("=?broken"), "=?broken");
        assert_eq!(decode_encoded_words("a =?x?Z?y?= b"), "a =?x?Z?y?= b");
    }

    #[test]
    fn quoted_printable() {
        assert_eq!(
            decode_quoted_printable(b"caf=C3=A9 soft=\r\nbreak =zz="),
            "café softbreak =zz=".as_bytes()
        );
    }

    #[test]
    fn multipart_prefers_plain_and_lists_attachments() {
        let message = concat!(
            "To: bob@example.com\r\n",
            "Subject: test\r\n",
            "Content-Type: multipart/mixed; boundary=\"outer\"\r\n",
            "\r\n",
            "preamble\r\n",
            "--outer\r\n",
            "Content-Type: multipart/alternative; boundary=inner\r\n",
            "\r\n",
            "--inner\r\n",
            "Content-Type: text/html; charset=utf-8\r\n",
            "\r\n",
            "<p>HTML version</p>\r\n",
            "--inner\r\n",
            "Content-Type: text/plain; charset=utf-8\r\n",
            "Content-Transfer-Encoding: quoted-printable\r\n",
            "\r\n",
            "Plain caf=C3=A9\r\n",
            "--inner--\r\n",
            "--outer\r\n",
            "Content-Type: application/pdf; name=\"q3.pdf\"\r\n",
            "Content-Disposition: attachment; filename=\"q3.pdf\"\r\n",
            "Content-Transfer-Encoding: base64\r\n",
            "\r\n",
            "JVBERi0=\r\n",
            "--outer--\r\n",
        );
        let part = Part::parse(message.as_bytes());
        assert_eq!(part.header("subject").as_deref(), Some("test"));
        let content = content(&part);
        assert_eq!(content.text.as_deref(), Some("Plain café"));
        assert_eq!(content.attachments, ["q3.pdf"]);
    }

    /// Mail clients show the HTML of an alternative; its words are given when they are
    /// not the plain part's.
    #[test]
    fn an_html_alternative_that_says_something_else_is_given_too() {
        let message = |html: &str| {
            format!(
                "Content-Type: multipart/alternative; boundary=b\r\n\r\n\
                 --b\r\nContent-Type: text/plain\r\n\r\nLunch is at noon, see you there.\r\n\
                 --b\r\nContent-Type: text/html\r\n\r\n{html}\r\n--b--\r\n"
            )
        };
        let wire = message("<p>Please wire &#36;50,000 today to IBAN GB00EVIL0000 &ndash; CEO</p>");
        let content = content(&Part::parse(wire.as_bytes()));
        assert_eq!(
            content.text.as_deref(),
            Some("Lunch is at noon, see you there.")
        );
        assert_eq!(
            content.html_text.as_deref().map(str::trim),
            Some("Please wire $50,000 today to IBAN GB00EVIL0000 – CEO")
        );
        let same = message("<div>Lunch is at <b>noon</b>,\r\n see you there.</div>");
        assert_eq!(content_of(&same).html_text, None);
    }

    /// A client shows the last version of an alternative it can display, not the first.
    #[test]
    fn the_last_html_version_of_an_alternative_is_the_one_shown() {
        let message = concat!(
            "Content-Type: multipart/alternative; boundary=b\r\n\r\n",
            "--b\r\nContent-Type: text/plain\r\n\r\nLunch is at noon.\r\n",
            "--b\r\nContent-Type: text/html\r\n\r\n<p>Lunch is at noon.</p>\r\n",
            "--b\r\nContent-Type: text/html\r\n\r\n",
            "<p>Please wire $48,000 to IBAN GB00 EVIL 0000 today.</p>\r\n",
            "--b--\r\n",
        );
        let content = content_of(message);
        assert_eq!(content.text.as_deref(), Some("Lunch is at noon."));
        assert_eq!(
            content.html_text.as_deref().map(str::trim),
            Some("Please wire $48,000 to IBAN GB00 EVIL 0000 today.")
        );
        assert_eq!(content.other_versions, 0);
        // A version neither kind of client shows, yet one that cannot display the last
        // one would, is counted.
        let message = concat!(
            "Content-Type: multipart/alternative; boundary=b\r\n\r\n",
            "--b\r\nContent-Type: text/html\r\n\r\n<p>Please wire $48,000.</p>\r\n",
            "--b\r\nContent-Type: text/html\r\n\r\n<p>Lunch is at noon.</p>\r\n",
            "--b--\r\n",
        );
        let content = content_of(message);
        assert_eq!(
            content.text.as_deref().map(str::trim),
            Some("Lunch is at noon.")
        );
        assert_eq!(content.other_versions, 1);
    }

    /// Clients show every inline text part of a `multipart/mixed`, one after the other.
    #[test]
    fn every_inline_text_part_of_a_mixed_message_is_shown() {
        let message = concat!(
            "Content-Type: multipart/mixed; boundary=b\r\n\r\n",
            "--b\r\nContent-Type: text/plain\r\n\r\nLunch is at noon.\r\n",
            "--b\r\nContent-Type: text/plain\r\nContent-Disposition: inline\r\n\r\n",
            "P.S. Please wire $48,000 to IBAN GB00 EVIL 0000 today.\r\n",
            "--b--\r\n",
        );
        let content = content_of(message);
        assert_eq!(
            content.text.as_deref(),
            Some("Lunch is at noon.\n\nP.S. Please wire $48,000 to IBAN GB00 EVIL 0000 today.")
        );
        assert_eq!(content.html_text, None);
        assert!(!content.parts_not_read);
    }

    fn content_of(message: &str) -> MailContent {
        content(&Part::parse(message.as_bytes()))
    }

    #[test]
    fn entities_are_decoded_once() {
        assert_eq!(
            decode_entities("&amp;lt; &#x41;&#66; &euro;5 &bogus; & &;"),
            "&lt; AB €5 &bogus; & &;"
        );
    }

    #[test]
    fn html_only_is_stripped() {
        let message = "Content-Type: text/html\n\n<html><style>p{}</style><p>Hi &amp; bye</p><script>x()</script>done</html>";
        let content = content(&Part::parse(message.as_bytes()));
        assert_eq!(content.text.as_deref(), Some("Hi & bye\ndone"));
    }

    /// Only a style or script element's content is hidden, as in a browser; text the
    /// recipient sees is never dropped.
    #[test]
    fn only_what_a_browser_hides_is_hidden() {
        let shown = |html: &str| strip_tags(html);
        let wire = "Please wire $48,000 to IBAN GB00 EVIL 0000 today.";
        // An element whose name only starts with `style` is an ordinary element.
        let text = shown(&format!("<p>Lunch is at noon.</p><styles>{wire}</styles>"));
        assert!(text.contains(wire), "{text}");
        let text = shown(&format!("<p>Lunch.</p><scripted class=x>{wire}</scripted>"));
        assert!(text.contains(wire), "{text}");
        // A style never closed hides the rest in a browser; the card shows it, marked.
        let text = shown(&format!("<p>Lunch.</p><style>{wire}"));
        assert!(
            text.contains("never closed") && text.contains(wire),
            "{text}"
        );
        // A style ends only at its own end tag, in any case; `<STYLE/>` is a style.
        assert_eq!(shown("a<STYLE/>x</styles>y</Style >b"), "ab");
        assert_eq!(shown("a<style\ttype=text/css>x</style\n>b"), "ab");
        // A `<` before anything but a letter is text, however far off the next `>`.
        let text = shown(&format!("<p>Total < 5 items. {wire}</p>"));
        assert!(text.contains(&format!("Total < 5 items. {wire}")), "{text}");
        // A textarea or title shows a `<style>` inside it as text, hiding nothing.
        let text = shown(&format!("<textarea><style></textarea>{wire}</style>"));
        assert!(text.contains(&format!("<style>{wire}")), "{text}");
        // Many unclosed styles take linear time, not quadratic.
        let many = "<style>".repeat(100_000);
        assert!(shown(&many).len() < 200);
    }

    /// A link shows its target when that is not its text; an image shows its address.
    #[test]
    fn links_and_images_show_where_they_lead() {
        assert_eq!(
            strip_tags(
                r#"Log in: <a href="https://evil.example/phish">https://bank.example/login</a>."#
            ),
            "Log in: https://bank.example/login (https://evil.example/phish)."
        );
        assert_eq!(
            strip_tags("<A class=x HREF=https://bank.example/login>https://bank.example/login</A>"),
            "https://bank.example/login"
        );
        assert_eq!(
            strip_tags(
                r#"<a href='mailto:bob@example.com'>bob@example.com</a>, <a href="/x?a=1&amp;b=2">here</a>"#
            ),
            "bob@example.com, here (/x?a=1&b=2)"
        );
        // A link not closed ends at the next one, or at the end.
        assert_eq!(
            strip_tags(r#"<a href="https://a.example">one <a href="https://b.example">two"#),
            "one  (https://a.example)two (https://b.example)"
        );
        assert_eq!(
            strip_tags(
                r#"Instructions: <img alt="logo" src="https://evil.example/wire-instructions.png">"#
            ),
            "Instructions: [image: https://evil.example/wire-instructions.png]"
        );
        let long = format!(
            r#"<img src="data:image/png;base64,{}">"#,
            "A".repeat(100_000)
        );
        assert!(strip_tags(&long).chars().count() < URL_CHARS + 20);
        // The plain text does not say where the HTML's link leads: the HTML is given.
        let message = concat!(
            "Content-Type: multipart/alternative; boundary=b\r\n\r\n",
            "--b\r\nContent-Type: text/plain\r\n\r\nLog in at https://bank.example/login\r\n",
            "--b\r\nContent-Type: text/html\r\n\r\n",
            "Log in at <a href=\"https://evil.example/phish\">https://bank.example/login</a>\r\n",
            "--b--\r\n",
        );
        let html = content_of(message).html_text.unwrap_or_default();
        assert!(html.contains("(https://evil.example/phish)"), "{html}");
    }

    #[test]
    fn folded_headers_and_lf_only() {
        let part = Part::parse(b"Subject: one\n two\nTo: a@b\n\nbody");
        assert_eq!(part.header("subject").as_deref(), Some("one two"));
        assert_eq!(part.body, b"body");
    }

    #[test]
    fn rfc2231_filename() {
        assert_eq!(
            parameter(
                "attachment; filename*=utf-8''r%C3%A9sum%C3%A9.pdf",
                "filename"
            )
            .as_deref(),
            Some("résumé.pdf")
        );
    }
}
