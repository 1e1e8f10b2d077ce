//! The summary of a request no recogniser knows: method, URL (credential-like query
//! values hidden), and a body excerpt whose credential-like fields are masked, so a
//! password or token in a JSON or form body never reaches a card. A JSON or form field
//! given several different values is named in a warning, since the excerpt may not reach
//! the second copy.

use super::clean::{body_text, is_binary, one_line, text_lines};
use super::params::MediaType;
use super::repeated::{self, Repeated};
use super::{
    cap_lines, is_secret_name, Request, Summary, EXCERPT_CHARS, LINE_CHARS, MAX_LINES, TITLE_CHARS,
};
use std::borrow::Cow;

/// Characters of the query a card shows (its start and its end when longer).
const QUERY_CHARS: usize = 600;

impl Request<'_> {
    pub(super) fn generic(&self, scheme: &str, detail: String) -> Summary {
        let title = one_line(
            &format!("{} {}", self.method, self.url(scheme)),
            TITLE_CHARS,
        );
        let mut lines = Vec::new();
        // The query whole, or its start and its end: the title is cut, and a card that
        // showed only the start let parameters after a long harmless one go unseen
        // (review: `?a=AAA…&to=attacker@evil.com`).
        if !self.query.is_empty() {
            let shown = super::redacted_query(self.query);
            lines.push(format!("Query ({} characters):", shown.chars().count()));
            lines.extend(text_lines(
                &body_text(shown.as_bytes(), QUERY_CHARS),
                4,
                LINE_CHARS,
                QUERY_CHARS + 60,
            ));
        }
        if self.body.is_empty() {
            lines.push(String::from("No request body."));
        } else {
            let content_type = self.content_type();
            let kind = if content_type.is_empty() {
                String::new()
            } else {
                format!(", {}", one_line(&content_type, 100))
            };
            lines.push(format!("Body ({} bytes{kind}):", self.body.len()));
            lines.extend(text_lines(
                &body_text(&masked(self.body), EXCERPT_CHARS - 60),
                MAX_LINES - 1,
                LINE_CHARS,
                EXCERPT_CHARS,
            ));
        }
        let repeats = self.repeated_body_fields();
        let (title, lines) = repeated::flag(title, lines, &repeats);
        Summary {
            title: one_line(&title, TITLE_CHARS),
            lines: cap_lines(lines),
            detail,
        }
    }

    /// Fields of the query and of a JSON or form body given different values (within
    /// either, or between them: PHP, Rack and Flask's `request.values` merge the two),
    /// credential-like ones with every value shown as `[redacted]`. Other bodies are not
    /// read as fields: a stray `&` in text or binary data is not a form, even labelled
    /// as one (curl labels any `--data-binary` upload so).
    fn repeated_body_fields(&self) -> Vec<Repeated> {
        let params = self.params();
        let body_unread = params.is_form()
            && (is_binary(self.body) || MediaType::of(&self.content_type()) != MediaType::Form);
        let params = match body_unread {
            true => super::params::Params::from_request(&[], &[]),
            false => params,
        }
        .with_query(self.query);
        params
            .all_repeated()
            .into_iter()
            .map(|mut field| {
                if is_secret_name(&field.name) {
                    for value in &mut field.values {
                        *value = super::redacted(value.chars().count());
                    }
                }
                field
            })
            .collect()
    }
}

/// The body with the values of credential-like fields replaced by `[redacted]`: JSON
/// members (`"password": "…"`, also in a body cut short or malformed) and form fields
/// (`token=…`). Other bytes are kept as they are.
pub fn masked(body: &[u8]) -> Cow<'_, [u8]> {
    let masked = mask_form(&mask_json(body));
    if masked == body {
        Cow::Borrowed(body)
    } else {
        Cow::Owned(masked)
    }
}

/// Masks the value after every JSON string key that names a credential. Scans tokens
/// rather than parsing, so it works on any prefix or suffix of a document.
fn mask_json(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut index = 0;
    while index < body.len() {
        if body[index] != b'"' {
            out.push(body[index]);
            index += 1;
            continue;
        }
        let end = string_end(body, index);
        let key = &body[index..end];
        out.extend_from_slice(key);
        index = end;
        // A key is a string followed (after white space) by a colon.
        let mut after = index;
        while after < body.len() && body[after].is_ascii_whitespace() {
            after += 1;
        }
        if after >= body.len() || body[after] != b':' {
            continue;
        }
        let name = String::from_utf8_lossy(&key[1..key.len().saturating_sub(1).max(1)]);
        if !is_secret_name(&name) {
            continue;
        }
        let mut value = after + 1;
        while value < body.len() && body[value].is_ascii_whitespace() {
            value += 1;
        }
        out.extend_from_slice(&body[index..value]);
        index = value;
        if index >= body.len() {
            break;
        }
        let value_end = if body[index] == b'"' {
            string_end(body, index)
        } else if matches!(body[index], b'{' | b'[') {
            // Objects and arrays under a secret name are shown as their members are:
            // masked one by one if named so, else kept.
            continue;
        } else {
            let mut end = index;
            while end < body.len()
                && !matches!(body[end], b',' | b'}' | b']')
                && !body[end].is_ascii_whitespace()
            {
                end += 1;
            }
            end
        };
        let value = String::from_utf8_lossy(&body[index..value_end]);
        let chars = value.trim_matches('"').chars().count();
        out.extend_from_slice(format!("\"{}\"", super::redacted(chars)).as_bytes());
        index = value_end;
    }
    out
}

/// Index just past the JSON string starting at `start` (or the end of the input).
fn string_end(body: &[u8], start: usize) -> usize {
    let mut index = start + 1;
    while index < body.len() {
        match body[index] {
            b'\\' => index += 2,
            b'"' => return index + 1,
            _ => index += 1,
        }
    }
    body.len()
}

/// Masks `name=value` pairs of a form body (`&`-separated, no white space) whose name
/// is credential-like. Anything that does not look like a form is returned as it is.
fn mask_form(body: &[u8]) -> Vec<u8> {
    let looks_like_form = !body.is_empty()
        && body.contains(&b'=')
        && body
            .iter()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'{' | b'}' | b'<' | b'>'));
    if !looks_like_form {
        return body.to_vec();
    }
    let pairs: Vec<Vec<u8>> = body
        .split(|b| *b == b'&')
        .map(|pair| match pair.iter().position(|b| *b == b'=') {
            Some(at) if is_secret_name(&String::from_utf8_lossy(&pair[..at])) => {
                let mut masked = pair[..=at].to_vec();
                let chars = String::from_utf8_lossy(&pair[at + 1..]).chars().count();
                masked.extend_from_slice(super::redacted(chars).as_bytes());
                masked
            }
            _ => pair.to_vec(),
        })
        .collect();
    pairs.join(&b'&')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(body: &str) -> String {
        String::from_utf8(masked(body.as_bytes()).into_owned()).unwrap()
    }

    #[test]
    fn json_credentials_are_masked_wherever_they_are() {
        assert_eq!(
            shown(r#"{"user":"ana","password":"hunter2","nested":{"api_key":12345,"n":1}}"#),
            r#"{"user":"ana","password":"[redacted]","nested":{"api_key":"[redacted]","n":1}}"#
        );
        // A body cut short still masks what is there.
        assert_eq!(shown(r#"{"token" : "abc"#), r#"{"token" : "[redacted]""#);
        // An escaped quote inside the secret does not end it early.
        assert_eq!(
            shown(r#"{"secret":"a\"b","x":"y"}"#),
            r#"{"secret":"[redacted]","x":"y"}"#
        );
        // Values that merely contain the word are not keys.
        assert_eq!(
            shown(r#"{"note":"my password"}"#),
            r#"{"note":"my password"}"#
        );
    }

    /// A field named like a credential can carry anything: a long value is still
    /// hidden, but how long it is is told.
    #[test]
    fn a_long_hidden_value_says_how_long_it_is() {
        let dump = "row;".repeat(1500);
        assert_eq!(
            shown(&format!(r#"{{"token":"{dump}","to":"x"}}"#)),
            r#"{"token":"[redacted: 6000 characters]","to":"x"}"#
        );
        assert_eq!(
            shown(&format!("password={dump}&x=1")),
            "password=[redacted: 6000 characters]&x=1"
        );
        assert_eq!(
            crate::summary::redacted_query(&format!("a=1&api_key={dump}")),
            "a=1&api_key=[redacted: 6000 characters]"
        );
        assert_eq!(
            shown(r#"{"token":"sk-live-0123456789"}"#),
            r#"{"token":"[redacted]"}"#
        );
    }

    #[test]
    fn form_credentials_are_masked() {
        assert_eq!(
            shown("user=ana&client_secret=s3cr3t&x=1"),
            "user=ana&client_secret=[redacted]&x=1"
        );
        assert_eq!(shown("plain text = not a form"), "plain text = not a form");
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        for body in [
            &b"\""[..],
            b"\"key\":",
            b"\"key\"",
            b"{\"a\\",
            b"=&=&",
            b"\xff\"pwd\":\xfe",
        ] {
            let _ = masked(body);
        }
    }
}
