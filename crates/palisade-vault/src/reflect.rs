//! Credentials sent back. An upstream that echoes its request (a debugging endpoint,
//! an error page quoting the header it rejected) would show the agent the secret the
//! gateway injected, and one that keeps what a request carried (a request bin, a log
//! viewer) could show it to a later request that carried nothing. So every response
//! from a host the gateway sends secrets to is searched for every spelling under which
//! the gateway sends each of them ([`palisade_policy::injection::sent_forms`]) and
//! those an echo commonly gives back (see [`echo_forms`]: escaped as JSON, HTML or a
//! URL does it, in either case, in hex, in base64 at any alignment; what is sent also
//! as UTF-16 in either byte order), whichever agent
//! and path they are granted for, and each occurrence is overwritten with `*`, byte
//! for byte, so lengths and framing stay as the upstream sent them. The status line's
//! reason phrase, headers, body and trailers are searched, and the frames of a
//! WebSocket to such a host; the first occurrence in a response writes a
//! `secret.reflected` audit row naming the secret.
//!
//! Which responses are searched is decided by host alone, not by port, although a
//! secret whose host pattern names a port (`127.0.0.1:8080`) is injected on that port
//! only. The services on the other ports of a host are often the same application's
//! (its admin console, its log viewer, a debugging proxy in front of it) and may show
//! what the service on the secret's port received; searching their responses too
//! costs an `Accept-Encoding: identity` and a search, and masks nothing but the
//! secret's own spellings, while narrowing by port would pass such an echo on.
//!
//! The body is searched as it streams: a chunk that ends with the start of a spelling
//! keeps those bytes back until the next chunk shows whether the spelling completes
//! (or the body ends). The search itself is aho-corasick's; the streaming around it is
//! written here because no crate masks a streamed `http_body::Body` in place.
//!
//! Limits (docs/vault.md): secrets shorter than [`MIN_MASKED`] bytes are not searched
//! for (masking every occurrence of a short string would corrupt ordinary responses); a
//! response compressed although the request asked for `identity` is decoded first
//! ([`crate::decoded`]), or refused if it cannot be; an upstream that transforms what it
//! echoes otherwise (byte ranges, reversed, spaced out, HTML entities for every
//! character, `\u` escapes for some characters only, base64 broken into lines,
//! a compressed file served as one) or splits it between places (the
//! status line and a header) can still be made to return a secret in a form not
//! searched for: masking is for an echo, not for an upstream that means to hand the
//! credential on (it has it, and could send it anywhere);
//! and bytes kept back at the end of a chunk tell a client that controls an echo's
//! chunking, and times the bytes, that its text begins a spelling.

use crate::body::{BoxError, ProxyBody};
use crate::pipeline::Target;
use crate::state::Snapshot;
use aho_corasick::AhoCorasick;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use palisade_policy::AgentName;
use palisade_store::AuditEntry;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Shortest secret looked for in responses.
pub const MIN_MASKED: usize = 8;
const MASK: u8 = b'*';

/// The spellings of some secrets, ready to search for.
pub struct Reflection {
    finder: AhoCorasick,
    forms: Vec<Vec<u8>>,
    /// The id of the secret each form spells.
    owners: Vec<i64>,
    /// Whether a byte begins some form (to find held-back tails quickly).
    starts: [bool; 256],
    longest: usize,
    shortest: usize,
}

impl Reflection {
    /// One secret's spellings; `None` for a secret too short to search for.
    #[cfg(test)]
    pub fn of(value: &str) -> Option<Arc<Reflection>> {
        Reflection::of_secrets([(0, value)])
    }

    /// The spellings of `secrets` (id, value); `None` if every one is too short to
    /// search for.
    pub fn of_secrets<'a>(
        secrets: impl IntoIterator<Item = (i64, &'a str)>,
    ) -> Option<Arc<Reflection>> {
        let mut forms: Vec<Vec<u8>> = Vec::new();
        let mut owners: Vec<i64> = Vec::new();
        for (id, value) in secrets {
            if value.len() < MIN_MASKED {
                continue;
            }
            let mut add = |form: Vec<u8>| {
                if !form.is_empty() && !forms.contains(&form) {
                    forms.push(form);
                    owners.push(id);
                }
            };
            for form in palisade_policy::injection::sent_forms(value) {
                // As UTF-16 too, in either byte order (review: a JSON echo served as
                // UTF-16 showed the agent its bearer token).
                add(form.encode_utf16().flat_map(u16::to_le_bytes).collect());
                add(form.encode_utf16().flat_map(u16::to_be_bytes).collect());
                add(form.into_bytes());
            }
            for form in echo_forms(value) {
                add(form.into_bytes());
            }
        }
        if forms.is_empty() {
            return None;
        }
        let finder = AhoCorasick::new(&forms).ok()?;
        let mut starts = [false; 256];
        for form in &forms {
            starts[form[0] as usize] = true;
        }
        let longest = forms.iter().map(Vec::len).max().unwrap_or(0);
        let shortest = forms.iter().map(Vec::len).min().unwrap_or(0);
        Some(Arc::new(Reflection {
            finder,
            forms,
            owners,
            starts,
            longest,
            shortest,
        }))
    }

    /// Overwrites every occurrence in `buf`; the secret of the first, if any.
    fn mask(&self, buf: &mut [u8]) -> Option<i64> {
        let found: Vec<(std::ops::Range<usize>, i64)> = self
            .finder
            .find_overlapping_iter(&*buf)
            .map(|m| (m.range(), self.owners[m.pattern().as_usize()]))
            .collect();
        for (range, _) in &found {
            buf[range.clone()].fill(MASK);
        }
        found.first().map(|(_, owner)| *owner)
    }

    /// Length of the longest end of `buf` that is the start of some form (and not a
    /// whole one): what must wait for the next chunk.
    fn held(&self, buf: &[u8]) -> usize {
        let from = buf.len().saturating_sub(self.longest.saturating_sub(1));
        for i in from..buf.len() {
            if !self.starts[buf[i] as usize] {
                continue;
            }
            let tail = &buf[i..];
            if self
                .forms
                .iter()
                .any(|form| form.len() > tail.len() && form.starts_with(tail))
            {
                return buf.len() - i;
            }
        }
        0
    }

    /// Masks the reason phrase of an HTTP/1.1 status line (`200 OK <text>`: hyper keeps
    /// a non-standard one in the response's extensions and sends it on as it came); the
    /// secret it held, if any. One that no longer reads as a reason phrase is dropped,
    /// so the standard one is sent.
    pub fn mask_reason(&self, extensions: &mut http::Extensions) -> Option<i64> {
        let reason = extensions.get::<hyper::ext::ReasonPhrase>()?;
        if !self.finder.is_match(reason.as_bytes()) {
            return None;
        }
        let mut bytes = reason.as_bytes().to_vec();
        let owner = self.mask(&mut bytes);
        match hyper::ext::ReasonPhrase::try_from(bytes) {
            Ok(masked) => extensions.insert(masked),
            Err(_) => extensions.remove::<hyper::ext::ReasonPhrase>(),
        };
        owner
    }

    /// Masks every header value that holds a form; the secret of the first found.
    pub fn mask_headers(&self, headers: &mut HeaderMap) -> Option<i64> {
        let mut found = None;
        for value in headers.values_mut() {
            if value.len() < self.shortest || !self.finder.is_match(value.as_bytes()) {
                continue;
            }
            let mut bytes = value.as_bytes().to_vec();
            let owner = self.mask(&mut bytes);
            *value = HeaderValue::from_bytes(&bytes)
                .unwrap_or_else(|_| HeaderValue::from_static("[masked]"));
            found = found.or(owner);
        }
        // A name that spells a secret cannot be overwritten in place: the header goes.
        let named: Vec<http::HeaderName> = headers
            .keys()
            .filter(|name| self.finder.is_match(name.as_str().as_bytes()))
            .cloned()
            .collect();
        for name in named {
            let mut bytes = name.as_str().as_bytes().to_vec();
            found = found.or(self.mask(&mut bytes));
            headers.remove(&name);
        }
        found
    }
}

/// Spellings under which an upstream may echo `value` other than those the gateway
/// sends it in: as a JSON string (with `/` escaped by some encoders, `<`, `>` and `&` as
/// `\u00XX` by Go's, everything beyond ASCII as `\u` escapes by Python's, or every
/// character as one, in either case of hex digit), every byte percent-encoded, HTML-escaped,
/// form-encoded (`+` for a space, as Python's `urlencode` and browsers write it),
/// percent-encoded with lower-case hex digits, all in lower case (header names come
/// back lower-cased; masking more than the secret is harmless) or upper case, in hex,
/// and in base64 (see [`base64_cores`]).
fn echo_forms(value: &str) -> Vec<String> {
    let mut forms = Vec::new();
    if let Ok(json) = serde_json::to_string(value) {
        let json = json[1..json.len() - 1].to_string();
        forms.push(json.replace('/', "\\/"));
        forms.push(
            json.replace('<', "\\u003c")
                .replace('>', "\\u003e")
                .replace('&', "\\u0026"),
        );
        let mut ascii = String::new();
        for c in json.chars() {
            if c.is_ascii() {
                ascii.push(c);
            } else {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    ascii.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
        forms.push(ascii);
        forms.push(json);
        // Every character as a `\u` escape, as an encoder that escapes all may send
        // it, and which every JSON parser reads back as the secret.
        let mut every = String::new();
        let mut units = [0u16; 2];
        for c in value.chars() {
            for unit in c.encode_utf16(&mut units) {
                every.push_str(&format!("\\u{unit:04x}"));
            }
        }
        forms.push(lower_hex_to_upper_escapes(&every));
        forms.push(every);
    }
    // Every byte percent-encoded, as an encoder that escapes all may send it.
    let every_byte: String = value.bytes().map(|b| format!("%{b:02X}")).collect();
    forms.push(every_byte.to_ascii_lowercase());
    forms.push(every_byte);
    forms.push(
        value
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&#x27;"),
    );
    forms.push(value.replace('&', "&amp;").replace('\'', "&#39;"));
    let form_encoded: String = form_urlencoded::byte_serialize(value.as_bytes()).collect();
    for percent in [
        form_encoded.clone(),
        form_encoded.replace('+', "%20"),
        percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC)
            .to_string(),
    ] {
        forms.push(lower_case_escapes(&percent));
        forms.push(percent);
    }
    forms.push(value.to_ascii_lowercase());
    forms.push(value.to_ascii_uppercase());
    forms.push(hex::encode(value));
    forms.push(hex::encode_upper(value));
    forms.extend(base64_cores(value.as_bytes()));
    forms
}

/// What base64 (standard and URL-safe) of any text holding `value` must contain,
/// wherever `value` starts in it: for each of the three alignments, the characters
/// that only `value`'s bytes determine (the first and last may mix in a neighbour's
/// bits, so they are left out). So an upstream that echoes a header or a JSON body
/// base64-encoded is masked too (the characters around stay).
fn base64_cores(value: &[u8]) -> Vec<String> {
    use base64::Engine;
    let mut cores = Vec::new();
    for offset in 0..3usize {
        let mut aligned = vec![0u8; offset];
        aligned.extend_from_slice(value);
        let first = (8 * offset).div_ceil(6);
        let end = 8 * (offset + value.len()) / 6;
        for engine in [
            base64::engine::general_purpose::STANDARD_NO_PAD,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ] {
            let encoded = engine.encode(&aligned);
            if let Some(core) = encoded.get(first..end) {
                cores.push(core.to_string());
            }
        }
    }
    cores
}

/// `text`, a run of `\uxxxx` escapes, with their hex digits in upper case.
fn lower_hex_to_upper_escapes(text: &str) -> String {
    text.split("\\u")
        .map(str::to_ascii_uppercase)
        .collect::<Vec<_>>()
        .join("\\u")
}

/// `text` with the hex digits of its `%XX` escapes in lower case.
fn lower_case_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut left = 0;
    for c in text.chars() {
        if c == '%' {
            left = 2;
            out.push(c);
        } else if left > 0 {
            left -= 1;
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

impl Drop for Reflection {
    /// The spellings are copies of the secret: wiped like the secret itself (the
    /// search automaton's own tables are not reachable to wipe).
    fn drop(&mut self) {
        for form in &mut self.forms {
            zeroize::Zeroize::zeroize(form);
        }
    }
}

/// Who to tell when a secret came back: the request's audit facts, written as one
/// `secret.reflected` row the first time. Kept as shared handles (the secret's name is
/// looked up only then), since every response to a request with a credential carries
/// one.
pub struct Report {
    pub shared: Arc<crate::state::Shared>,
    /// Whether the request carried a credential. A row about one that did not is
    /// written within the agent's row budget: an agent with no credential could
    /// otherwise write a row per request by reading one an upstream kept.
    pub carried: bool,
    pub agent: AgentName,
    pub method: http::Method,
    pub target: Arc<Target>,
    pub path: String,
    /// The policy in force for the request, which names the secrets.
    pub snapshot: Arc<Snapshot>,
}

impl Report {
    /// Records that secret `secret_id` came back in `place`.
    pub fn send(self, place: &str, secret_id: i64) {
        let mut detail = serde_json::json!({ "in": place });
        if !self.carried {
            match self.shared.row_budgets.agent(self.agent.as_str()) {
                None => return,
                Some(0) => {}
                Some(suppressed) => detail["similar_rows_suppressed"] = suppressed.into(),
            }
        }
        let secret = self
            .snapshot
            .policy
            .secrets()
            .iter()
            .find(|s| s.id == secret_id)
            .map(|s| s.name.clone());
        // The audit row is the record; the log line at most once a second.
        palisade_policy::budgeted!(warn, agent = %self.agent,
                host = %self.target.host,
                secret = secret.as_deref().unwrap_or_default(),
                place,
                "the upstream sent back a credential the gateway sends it; it was masked");
        self.shared.audit.try_record(AuditEntry {
            event: "secret.reflected".into(),
            agent: Some(self.agent.to_string()),
            method: Some(self.method.to_string()),
            host: Some(self.target.host.clone()),
            path: Some(self.path),
            decision: Some("masked".into()),
            rule: None,
            secret,
            status: None,
            latency_ms: None,
            actor: None,
            approval_id: None,
            detail: Some(detail),
        });
    }
}

/// Masks a stream of bytes as it passes: a chunk that ends with the start of a form
/// keeps those bytes back until the next chunk shows whether the form completes.
pub struct Scanner {
    reflection: Arc<Reflection>,
    /// Bytes kept back: the start of a form at the end of the last chunk.
    carry: BytesMut,
    report: Option<Report>,
    /// Where the stream is, for the audit row (`body`, `websocket`).
    place: &'static str,
}

impl Scanner {
    pub fn new(reflection: Arc<Reflection>, report: Option<Report>, place: &'static str) -> Self {
        Scanner {
            reflection,
            carry: BytesMut::new(),
            report,
            place,
        }
    }

    /// Writes the audit row for secret `owner` found in `place`, the first time.
    fn found(&mut self, place: &str, owner: i64) {
        if let Some(report) = self.report.take() {
            report.send(place, owner);
        }
    }

    /// What of `data` (after what was kept back) can go now, masked.
    pub fn scan(&mut self, data: Bytes) -> Bytes {
        if self.carry.is_empty() && !self.reflection.finder.is_match(&data[..]) {
            let hold = self.reflection.held(&data);
            if hold == 0 {
                return data;
            }
            self.carry.extend_from_slice(&data[data.len() - hold..]);
            return data.slice(..data.len() - hold);
        }
        let mut buf = std::mem::take(&mut self.carry);
        buf.extend_from_slice(&data);
        if let Some(owner) = self.reflection.mask(&mut buf) {
            self.found(self.place, owner);
        }
        let hold = self.reflection.held(&buf);
        self.carry = buf.split_off(buf.len() - hold);
        buf.freeze()
    }

    /// `data`, a piece complete in itself (a WebSocket control frame's payload),
    /// masked on its own: what is kept back of the stream around it is left alone.
    pub fn mask_whole(&mut self, data: &[u8]) -> Bytes {
        let mut buf = BytesMut::from(data);
        if let Some(owner) = self.reflection.mask(&mut buf) {
            self.found(self.place, owner);
        }
        buf.freeze()
    }

    /// The bytes kept back, at the stream's end (the start of a form that never
    /// completed, so nothing to mask).
    pub fn flush(&mut self) -> Bytes {
        self.carry.split().freeze()
    }

    /// How many bytes are kept back.
    pub fn held(&self) -> usize {
        self.carry.len()
    }
}

/// A response body with every spelling of a secret masked.
pub struct Masked<B = ProxyBody> {
    inner: B,
    scanner: Scanner,
    /// Trailers waiting for the kept-back bytes to go first.
    trailers: Option<HeaderMap>,
    ended: bool,
}

impl<B> Masked<B> {
    pub fn new(inner: B, reflection: Arc<Reflection>, report: Option<Report>) -> Self {
        Masked {
            inner,
            scanner: Scanner::new(reflection, report, "body"),
            trailers: None,
            ended: false,
        }
    }
}

impl<B> Body for Masked<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        this.poll_masked(cx)
    }

    fn is_end_stream(&self) -> bool {
        if self.ended {
            self.scanner.held() == 0 && self.trailers.is_none()
        } else {
            self.scanner.held() == 0 && self.inner.is_end_stream()
        }
    }

    fn size_hint(&self) -> SizeHint {
        let carried = self.scanner.held() as u64;
        if self.ended {
            return SizeHint::with_exact(carried);
        }
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + carried);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + carried);
        }
        hint
    }
}

impl<B> Masked<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    fn poll_masked(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if self.ended {
                if self.scanner.held() > 0 {
                    return Poll::Ready(Some(Ok(Frame::data(self.scanner.flush()))));
                }
                return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => self.ended = true,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let out = self.scanner.scan(data);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(frame) => {
                        if let Ok(mut trailers) = frame.into_trailers() {
                            if let Some(owner) = self.scanner.reflection.mask_headers(&mut trailers)
                            {
                                self.scanner.found("trailers", owner);
                            }
                            self.trailers = Some(trailers);
                        }
                        self.ended = true;
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    const SECRET: &str = "sk-live/abc\"def123";

    fn masked_stream(chunks: &[&[u8]]) -> Vec<u8> {
        let reflection = Reflection::of(SECRET).unwrap();
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let inner = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        let body = Masked::new(inner, reflection, None);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime
            .block_on(body.collect())
            .unwrap()
            .to_bytes()
            .to_vec()
    }

    /// An echo served as UTF-16 (a JSON body in `charset=utf-16`), either byte order,
    /// is masked: its bytes are the secret's with a zero byte beside each.
    #[test]
    fn utf16_echoes_are_masked() {
        for little_endian in [true, false] {
            let text = format!("{{\"auth\":\"Bearer {SECRET}\"}}");
            let encode = |text: &str| -> Vec<u8> {
                text.encode_utf16()
                    .flat_map(|unit| match little_endian {
                        true => unit.to_le_bytes(),
                        false => unit.to_be_bytes(),
                    })
                    .collect()
            };
            let body = encode(&text);
            let masked = masked_stream(&[&body[..7], &body[7..33], &body[33..]]);
            assert_eq!(masked.len(), body.len());
            let decoded = String::from_utf16_lossy(
                &masked
                    .chunks(2)
                    .map(|pair| match little_endian {
                        true => u16::from_le_bytes([pair[0], pair[1]]),
                        false => u16::from_be_bytes([pair[0], pair[1]]),
                    })
                    .collect::<Vec<u16>>(),
            );
            assert!(!decoded.contains(SECRET), "{decoded}");
            assert!(decoded.starts_with("{\"auth\":\"Bearer"), "{decoded}");
        }
    }

    /// An echo in base64 (at any alignment in a longer text, either alphabet), hex or
    /// upper case is masked, and what is masked is only the secret's own share of it.
    #[test]
    fn base64_hex_and_upper_case_echoes_are_masked() {
        use base64::Engine;
        let reflection = Reflection::of(SECRET).unwrap();
        let mut echoes = vec![
            hex::encode(SECRET),
            hex::encode_upper(SECRET),
            SECRET.to_ascii_uppercase(),
        ];
        for prefix in ["", "a", "ab", "Authorization: Bearer "] {
            let text = format!("{prefix}{SECRET}\n(end)");
            for engine in [
                base64::engine::general_purpose::STANDARD,
                base64::engine::general_purpose::URL_SAFE,
            ] {
                echoes.push(engine.encode(text.as_bytes()));
            }
        }
        for echo in echoes {
            let mut bytes = echo.clone().into_bytes();
            assert_eq!(reflection.mask(&mut bytes), Some(0), "{echo}");
            let shown = String::from_utf8(bytes).unwrap();
            let masked = shown.bytes().filter(|b| *b == MASK).count();
            assert!(masked >= SECRET.len(), "{echo} -> {shown}");
            assert!(masked <= 2 * SECRET.len() + 2, "{echo} -> {shown}");
        }
        // Text around a secret that is not there is left alone.
        let mut other = base64::engine::general_purpose::STANDARD
            .encode("sk-live/abc\"deX123 and more")
            .into_bytes();
        assert_eq!(reflection.mask(&mut other), None);
    }

    #[test]
    fn several_secrets_are_searched_at_once_and_each_is_named() {
        let reflection = Reflection::of_secrets([
            (7, "first-secret-aaaa"),
            (9, "second-secret-bb"),
            (11, "short"),
        ])
        .unwrap();
        let mut text = b"x second-secret-bb y first-secret-aaaa z short".to_vec();
        assert_eq!(reflection.mask(&mut text), Some(9));
        assert_eq!(
            String::from_utf8(text).unwrap(),
            format!("x {} y {} z short", "*".repeat(16), "*".repeat(17))
        );
        assert!(Reflection::of_secrets([(1, "short")]).is_none());
    }

    #[test]
    fn every_spelling_is_masked_byte_for_byte() {
        let json = serde_json::to_string(SECRET).unwrap();
        let query = "sk-live%2Fabc%22def123";
        let escaped = r#"sk-live\/abc\"def123"#;
        let text = format!("a {SECRET} b {json} c {query} d {escaped} e");
        let out = masked_stream(&[text.as_bytes()]);
        assert_eq!(out.len(), text.len());
        let out = String::from_utf8(out).unwrap();
        assert!(!out.contains("abc"), "{out}");
        assert!(out.starts_with("a ***"), "{out}");
        assert!(out.ends_with("* e"), "{out}");
    }

    /// The spellings an echo in another language or format gives back, each written
    /// here by hand (not with the functions that make the search's forms).
    #[test]
    fn echoes_in_other_encodings_are_masked() {
        let value = "QUERYSECRET&x=1 z<é>'";
        let reflection = Reflection::of(value).unwrap();
        for echoed in [
            r"QUERYSECRET\u0026x=1 z\u003cé\u003e'",
            r"QUERYSECRET&x=1 z<\u00e9>'",
            "QUERYSECRET%26x%3D1+z%3C%C3%A9%3E%27",
            "QUERYSECRET%26x%3d1%20z%3c%c3%a9%3e%27",
            "QUERYSECRET&amp;x=1 z&lt;é&gt;&#x27;",
            "QUERYSECRET&amp;x=1 z<é>&#39;",
            "querysecret&x=1 z<é>'",
        ] {
            let mut text = format!("[{echoed}]").into_bytes();
            assert_eq!(reflection.mask(&mut text), Some(0), "{echoed}");
            let text = String::from_utf8_lossy(&text).into_owned();
            assert!(
                !text.contains("SECRET") && !text.contains("secret"),
                "{echoed}: {text}"
            );
        }
        // Every character escaped, as a JSON encoder may; either case of hex digit.
        let reflection = Reflection::of("QUERYSECRETZ").unwrap();
        for echoed in [
            r#""\u0051\u0055\u0045\u0052\u0059\u0053\u0045\u0043\u0052\u0045\u0054\u005a""#,
            r#""\u0051\u0055\u0045\u0052\u0059\u0053\u0045\u0043\u0052\u0045\u0054\u005A""#,
        ] {
            let mut text = echoed.as_bytes().to_vec();
            assert_eq!(reflection.mask(&mut text), Some(0), "{echoed}");
            assert!(!String::from_utf8_lossy(&text).contains("\\u0051"));
        }
        // Every byte percent-encoded, in either case.
        for echoed in [
            "q=%51%55%45%52%59%53%45%43%52%45%54%5A&x",
            "q=%51%55%45%52%59%53%45%43%52%45%54%5a&x",
        ] {
            let mut text = echoed.as_bytes().to_vec();
            assert_eq!(reflection.mask(&mut text), Some(0), "{echoed}");
            assert!(!String::from_utf8_lossy(&text).contains("%51"));
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            http::HeaderName::from_static("querysecret"),
            HeaderValue::from_static("1"),
        );
        headers.insert(http::header::SERVER, HeaderValue::from_static("echo"));
        assert_eq!(
            Reflection::of("QUERYSECRET")
                .unwrap()
                .mask_headers(&mut headers),
            Some(0)
        );
        assert_eq!(headers.len(), 1, "{headers:?}");
    }

    #[test]
    fn a_secret_split_across_chunks_is_masked() {
        let text = format!("xx{SECRET}yy");
        for cut in 0..=text.len() {
            for second in cut..=text.len() {
                let (a, rest) = text.as_bytes().split_at(cut);
                let (b, c) = rest.split_at(second - cut);
                let out = masked_stream(&[a, b, c]);
                assert_eq!(
                    String::from_utf8(out).unwrap(),
                    format!("xx{}yy", "*".repeat(SECRET.len())),
                    "cut at {cut} and {second}"
                );
            }
        }
    }

    #[test]
    fn a_start_that_does_not_complete_is_passed_on_unchanged() {
        let out = masked_stream(&[b"ends with sk-li", b"ve but not the rest", b" sk-"]);
        assert_eq!(out, b"ends with sk-live but not the rest sk-");
    }

    #[test]
    fn headers_are_masked_and_short_secrets_are_not_searched() {
        let reflection = Reflection::of(SECRET).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-echo",
            HeaderValue::from_str(&format!("Bearer {SECRET}")).unwrap(),
        );
        headers.insert("x-other", HeaderValue::from_static("plain"));
        assert_eq!(reflection.mask_headers(&mut headers), Some(0));
        assert_eq!(
            headers["x-echo"],
            format!("Bearer {}", "*".repeat(SECRET.len()))
        );
        assert_eq!(headers["x-other"], "plain");
        assert!(Reflection::of("short").is_none());
    }
}
