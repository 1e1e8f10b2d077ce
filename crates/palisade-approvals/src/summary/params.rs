//! Named fields of a request body, whether JSON, form-encoded, or JSON cut short.
//!
//! The vault reads only a prefix of a held body, so a large JSON document may arrive
//! truncated and fail to parse. Rather than lose the summary, string fields are then
//! scanned for loosely; the result is only ever shown to a person, never acted on.

use percent_encoding::percent_decode_str;

/// More pairs than any real API call has; keeps a hostile body from costing much.
const MAX_FORM_PAIRS: usize = 1000;

pub(crate) enum Params {
    Json(serde_json::Value),
    Form(Vec<(String, String)>),
    /// JSON that did not parse (usually truncated): fields are scanned for.
    Loose(String),
}

impl Params {
    /// Chooses by content type, falling back to the body's first byte.
    pub(crate) fn from_body(content_type: &str, body: &[u8]) -> Params {
        let content_type = content_type.to_ascii_lowercase();
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        let looks_json = content_type.contains("json")
            || (!content_type.contains("form-urlencoded") && first == Some(&b'{'));
        if looks_json {
            match serde_json::from_slice::<serde_json::Value>(body) {
                Ok(value @ serde_json::Value::Object(_)) => Params::Json(value),
                _ => Params::Loose(String::from_utf8_lossy(body).into_owned()),
            }
        } else {
            Params::Form(form_pairs(&String::from_utf8_lossy(body)))
        }
    }

    /// The field as text: strings as they are, numbers and booleans spelled out.
    pub(crate) fn get(&self, key: &str) -> Option<String> {
        match self {
            Params::Json(value) => match value.get(key)? {
                serde_json::Value::String(text) => Some(text.clone()),
                serde_json::Value::Number(number) => Some(number.to_string()),
                serde_json::Value::Bool(flag) => Some(flag.to_string()),
                _ => None,
            },
            Params::Form(pairs) => pairs
                .iter()
                .find(|(name, _)| name == key)
                .map(|(_, value)| value.clone()),
            Params::Loose(text) => loose_json_string(text, key, 1 << 20),
        }
    }

    /// The field as JSON (for Slack `blocks`, which forms carry as a JSON string).
    pub(crate) fn get_json(&self, key: &str) -> Option<serde_json::Value> {
        match self {
            Params::Json(value) => value.get(key).cloned(),
            Params::Form(_) | Params::Loose(_) => serde_json::from_str(&self.get(key)?).ok(),
        }
    }

    /// String items of an array field (JSON), or repeated `key[]` form fields.
    pub(crate) fn get_list(&self, key: &str) -> Vec<String> {
        match self {
            Params::Json(value) => value
                .get(key)
                .and_then(serde_json::Value::as_array)
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|item| item.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            Params::Form(pairs) => {
                let bracketed = format!("{key}[]");
                pairs
                    .iter()
                    .filter(|(name, _)| *name == bracketed)
                    .map(|(_, value)| value.clone())
                    .collect()
            }
            Params::Loose(_) => Vec::new(),
        }
    }

    /// Adds query parameters (Slack accepts arguments there too) without overriding body fields.
    pub(crate) fn with_query(self, query: &str) -> Params {
        match self {
            Params::Form(mut pairs) => {
                pairs.extend(form_pairs(query));
                Params::Form(pairs)
            }
            other => other,
        }
    }
}

/// `application/x-www-form-urlencoded` pairs: `+` is a space, escapes are decoded,
/// invalid UTF-8 is replaced rather than refused.
pub(crate) fn form_pairs(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .take(MAX_FORM_PAIRS)
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(name), form_decode(value))
        })
        .collect()
}

fn form_decode(text: &str) -> String {
    let spaced = text.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

/// The string value of the first `"key": "…"` in `text`, read up to its closing quote
/// or the end of the text, with JSON escapes decoded; at most `max_chars` characters.
pub(crate) fn loose_json_string(text: &str, key: &str, max_chars: usize) -> Option<String> {
    let quoted = format!("\"{key}\"");
    let mut search_from = 0;
    while let Some(found) = text.get(search_from..)?.find(&quoted) {
        let after_key = search_from + found + quoted.len();
        search_from = after_key;
        let rest = text.get(after_key..)?.trim_start();
        let Some(rest) = rest.strip_prefix(':') else {
            continue;
        };
        let Some(rest) = rest.trim_start().strip_prefix('"') else {
            continue;
        };
        return Some(read_json_string(rest, max_chars));
    }
    None
}

fn read_json_string(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    let mut count = 0;
    while let Some(c) = chars.next() {
        if count >= max_chars {
            break;
        }
        let decoded = match c {
            '"' => break,
            '\\' => match chars.next() {
                Some('n') => '\n',
                Some('t') => '\t',
                Some('r') => '\r',
                Some('b') => '\u{8}',
                Some('f') => '\u{c}',
                Some('u') => {
                    let hex: String = chars.by_ref().take(4).collect();
                    let unit = if hex.len() == 4 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
                        u32::from_str_radix(&hex, 16).unwrap_or(0xFFFD)
                    } else {
                        0xFFFD
                    };
                    // Surrogate halves cannot stand alone; a person loses nothing
                    // by seeing a replacement character for an emoji here.
                    char::from_u32(unit).unwrap_or('\u{FFFD}')
                }
                Some(other) => other,
                None => break,
            },
            other => other,
        };
        out.push(decoded);
        count += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_form_and_loose() {
        let json = Params::from_body("application/json", br#"{"channel":"C1","n":5,"ok":true}"#);
        assert_eq!(json.get("channel").as_deref(), Some("C1"));
        assert_eq!(json.get("n").as_deref(), Some("5"));
        assert_eq!(json.get("ok").as_deref(), Some("true"));
        assert_eq!(json.get("missing"), None);

        let form = Params::from_body(
            "application/x-www-form-urlencoded",
            b"channel=%23general&text=hello+there%21&bad=%ff",
        );
        assert_eq!(form.get("channel").as_deref(), Some("#general"));
        assert_eq!(form.get("text").as_deref(), Some("hello there!"));
        assert_eq!(form.get("bad").as_deref(), Some("\u{FFFD}"));

        let truncated = Params::from_body(
            "application/json",
            br#"{"title": "Fix \"bug\" \u00e9", "body": "long te"#,
        );
        assert_eq!(truncated.get("title").as_deref(), Some("Fix \"bug\" é"));
        assert_eq!(truncated.get("body").as_deref(), Some("long te"));
    }

    #[test]
    fn loose_scanner_skips_keys_that_are_values() {
        let text = r#"{"note": "raw", "raw" : "abc"}"#;
        assert_eq!(loose_json_string(text, "raw", 100).as_deref(), Some("abc"));
        assert_eq!(loose_json_string(r#"{"raw": 5}"#, "raw", 100), None);
        assert_eq!(
            loose_json_string(r#"{"raw": "\u12"#, "raw", 100).as_deref(),
            Some("\u{FFFD}")
        );
        assert_eq!(
            loose_json_string(r#"{"raw": "abcdef"}"#, "raw", 3).as_deref(),
            Some("abc")
        );
    }

    #[test]
    fn lists() {
        let json = Params::from_body("", br#"{"labels":["bug","p1",3]}"#);
        assert_eq!(json.get_list("labels"), ["bug", "p1"]);
        let form = Params::from_body("", b"labels[]=a&labels[]=b");
        assert_eq!(form.get_list("labels"), ["a", "b"]);
    }
}
