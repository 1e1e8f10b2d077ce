//! Named fields of a request: its query arguments and its body's fields, whether JSON,
//! form-encoded, or JSON that does not parse.
//!
//! A field may be given more than once: twice in a form, as a repeated member of a JSON
//! object, or in both the query and the body. Every copy is kept in the order sent.
//! [`Params::get`] returns the last, as PHP, Rack and `serde_json` do, and each field read
//! that has more than one distinct value is remembered, so the summary can show them all
//! and warn (see `repeated.rs`) instead of pretending there is one value.
//!
//! JSON that does not parse (cut short or malformed) would lose the summary, so string
//! fields are then scanned for loosely; the result is only ever shown to a person, never
//! acted on.
//!
//! How the body is read follows its media type exactly, as servers do: `application/json`
//! or a `+json` type is JSON, `application/x-www-form-urlencoded` a form, whatever the
//! parameters after `;` say. Any other label, or none, leaves the reading to the server
//! (Rack reads an unlabelled POST as a form, GitHub reads JSON), and a JSON object can
//! carry `&amount=…&` inside a string for a form reader to find. Such a body that looks
//! like JSON is read both ways: fields come from the JSON reading, and every field read
//! is compared with the form reading, so the summary can warn when they differ (see
//! `ambiguous.rs`) instead of showing one reading as what the server will act on.
//!
//! A `multipart/form-data` body is read part by part (`multipart.rs`). What is read only
//! by guess puts a warning first (see [`Params::flag_readings`]): a body of another
//! media type read as a URL-encoded form (when a field shown comes from it), JSON that
//! serde refuses but other parsers read (a number out of range, deep nesting; a body
//! merely cut short is not warned of, since no server reads it either), and two
//! Content-Type headers that disagree.

use super::ambiguous::{self, Differing};
use super::multipart;
use super::repeated::{self, Repeated};
use super::Recognised;
use percent_encoding::percent_decode_str;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

/// More pairs than any real API call has; keeps a hostile body from costing much.
const MAX_FORM_PAIRS: usize = 1000;
/// Characters read of one string value found by the loose scan.
const LOOSE_VALUE_CHARS: usize = 1 << 20;

pub(crate) struct Params {
    /// Query arguments, then the body's form pairs or JSON members, in the order sent,
    /// repeats included.
    fields: Vec<(String, Value)>,
    body: Body,
    /// Fields read so far that have more than one distinct value.
    repeated: RefCell<Vec<Repeated>>,
    /// The body read as a form too, when its media type leaves the reading open and it
    /// was read as JSON; query arguments first, as in `fields`.
    form_reading: Option<Vec<(String, Value)>>,
    /// How the body is labelled (`no Content-Type`, `Content-Type text/plain`), when the
    /// label leaves the reading open.
    unlabelled: Option<String>,
    /// Fields read so far, each as JSON and as a form, when the body is read both ways.
    readings: RefCell<Vec<Differing>>,
    /// Why the fields shown may not be what the service reads (JSON that does not
    /// parse, two Content-Types): warning lines.
    cautions: Vec<String>,
    /// The warning for a body read as a form only by guess (its media type is another
    /// one), given when a field the summary reads comes from it.
    guessed: Option<String>,
    guess_used: std::cell::Cell<bool>,
    /// Where the body's fields start in `fields` (query arguments come first).
    body_from: usize,
}

/// What a body's media type says about reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MediaType {
    Json,
    Form,
    /// Any other type, or none: the server decides.
    Other,
}

impl MediaType {
    /// By the media type alone (before any `;`, trimmed, any case): a parameter such as
    /// `; x=json` changes nothing, as it changes nothing for a server.
    pub(crate) fn of(content_type: &str) -> MediaType {
        let media = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let structured_json = media
            .split_once('/')
            .is_some_and(|(kind, subtype)| !kind.is_empty() && subtype.ends_with("+json"));
        if media == "application/json" || structured_json {
            MediaType::Json
        } else if media == "application/x-www-form-urlencoded" {
            MediaType::Form
        } else {
            MediaType::Other
        }
    }
}

enum Body {
    Json,
    Form,
    /// JSON that did not parse (usually truncated): fields are scanned for.
    Loose(String),
}

impl Params {
    /// Reads the body as its media type says; a body with another label or none, or
    /// labelled a form, is read as JSON when it starts with `{` (and then as a form as
    /// well), else as a form. (`curl -d '{…}'` labels JSON a form, and GitHub reads it
    /// as JSON; a form reader reads it as a form.)
    pub(crate) fn from_body(content_type: &str, body: &[u8]) -> Params {
        let media_type = MediaType::of(content_type);
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        let as_json = match media_type {
            MediaType::Json => true,
            MediaType::Form | MediaType::Other => first == Some(&b'{'),
        };
        let label = || {
            let written = content_type.trim();
            if written.is_empty() {
                String::from("no Content-Type")
            } else {
                format!("Content-Type {}", super::clean::one_line(written, 60))
            }
        };
        let mut cautions = Vec::new();
        let mut guessed = None;
        let form_fields = || text_pairs(&String::from_utf8_lossy(body));
        let (fields, parsed) = if as_json {
            match serde_json::from_slice::<Members>(body) {
                Ok(Members(members)) => (members, Body::Json),
                Err(error) => {
                    // Cut short is the usual case (a summary may see only the start of
                    // a large body), and no server reads a cut JSON body either; other
                    // errors (a number out of range, nesting past serde's limit) are
                    // ones some servers read past.
                    if error.classify() != serde_json::error::Category::Eof {
                        cautions.push(String::from(
                            "⚠ The body does not parse as JSON here (a number or a depth some parsers refuse and others read); the fields shown are picked out of its text and may not be what the service reads",
                        ));
                    }
                    (
                        Vec::new(),
                        Body::Loose(String::from_utf8_lossy(body).into_owned()),
                    )
                }
            }
        } else if let Some(parts) = multipart::form_fields(content_type, body, MAX_FORM_PAIRS) {
            (parts, Body::Form)
        } else if multipart::is_form_data(content_type) && !body.is_empty() {
            cautions.push(String::from(
                "⚠ The body is labelled multipart/form-data but does not read as one here (no boundary, a part with two names, or malformed); the card shows none of its fields",
            ));
            (Vec::new(), Body::Form)
        } else if media_type == MediaType::Other && !body.is_empty() {
            guessed = Some(format!(
                "⚠ The body has {}, which the card reads as a URL-encoded form; the service may read it otherwise",
                label()
            ));
            (form_fields(), Body::Form)
        } else {
            (form_fields(), Body::Form)
        };
        let open = media_type != MediaType::Json && as_json;
        Params {
            fields,
            body: parsed,
            repeated: RefCell::new(Vec::new()),
            form_reading: open.then(form_fields),
            unlabelled: open.then(label),
            readings: RefCell::new(Vec::new()),
            cautions,
            guessed,
            guess_used: std::cell::Cell::new(false),
            body_from: 0,
        }
    }

    /// As [`Params::from_body`], for a request that gives `content_types` (every
    /// Content-Type header, in order): the first is read, as most servers do, and the
    /// card warns when another says something else, since some servers use the last.
    pub(crate) fn from_request(content_types: &[String], body: &[u8]) -> Params {
        let first = content_types.first().map(String::as_str).unwrap_or("");
        let mut params = Params::from_body(first, body);
        let distinct: Vec<String> = content_types
            .iter()
            .map(|value| value.trim().to_ascii_lowercase())
            .fold(Vec::new(), |mut seen, value| {
                if !seen.contains(&value) {
                    seen.push(value);
                }
                seen
            });
        if distinct.len() > 1 {
            let shown: Vec<String> = content_types
                .iter()
                .take(4)
                .map(|value| super::clean::one_line(value, 60))
                .collect();
            params.cautions.insert(
                0,
                format!(
                    "⚠ The request gives {} Content-Types ({}); the card reads the body as the first says, and some servers use another",
                    content_types.len(),
                    shown.join("; ")
                ),
            );
        }
        params
    }

    /// The field as text: strings as they are, numbers and booleans spelled out. The
    /// last copy when the field is repeated.
    pub(crate) fn get(&self, key: &str) -> Option<String> {
        let found = self.occurrences(key);
        self.note_repeats(key, &found);
        self.note_readings(key, &found);
        match found.last()?.as_ref() {
            Value::String(text) => Some(text.clone()),
            Value::Number(number) => Some(number.to_string()),
            Value::Bool(flag) => Some(flag.to_string()),
            _ => None,
        }
    }

    /// The field as JSON (for Slack `blocks`, which forms carry as a JSON string).
    pub(crate) fn get_json(&self, key: &str) -> Option<Value> {
        let found = self.occurrences(key);
        self.note_repeats(key, &found);
        self.note_readings(key, &found);
        match found.into_iter().next_back()? {
            Cow::Borrowed(Value::String(text)) => serde_json::from_str(text).ok(),
            Cow::Owned(Value::String(text)) => serde_json::from_str(&text).ok(),
            other => Some(other.into_owned()),
        }
    }

    /// Repeated `key[]` form fields, or the string items of an array field (JSON).
    pub(crate) fn get_list(&self, key: &str) -> Vec<String> {
        let bracketed = format!("{key}[]");
        self.note_readings(&bracketed, &self.occurrences(&bracketed));
        let listed: Vec<String> = self
            .fields
            .iter()
            .filter(|(name, _)| *name == bracketed)
            .filter_map(|(_, value)| value.as_str().map(str::to_string))
            .collect();
        if !listed.is_empty() {
            return listed;
        }
        let found = self.occurrences(key);
        self.note_repeats(key, &found);
        self.note_readings(key, &found);
        found
            .last()
            .and_then(|value| value.as_array())
            .map(|items| {
                items
                    .iter()
                    .filter_map(|item| item.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every distinct value of the field as text, in the order sent; nothing is noted.
    /// Values that are not strings are shown as JSON.
    pub(crate) fn values(&self, key: &str) -> Vec<String> {
        distinct(self.occurrences(key).iter().map(|value| value.as_ref()))
    }

    /// The fields read so far (by `get`, `get_json`, `get_list`) that the request gives
    /// more than one distinct value, in the order first read.
    pub(crate) fn repeated(&self) -> Vec<Repeated> {
        self.repeated.borrow().clone()
    }

    /// The title and lines with a warning in front for every field read that was given
    /// several values (`repeated.rs`), and for fields that a form reader would read
    /// otherwise than the JSON reading shown (`ambiguous.rs`).
    pub(crate) fn flag(&self, title: String, lines: Vec<String>) -> Recognised {
        let (title, lines) = repeated::flag(title, lines, &self.repeated());
        self.flag_readings(title, lines)
    }

    /// The title and lines with a warning in front when fields read differ between the
    /// JSON and the form reading of a body whose media type leaves the reading open.
    pub(crate) fn flag_readings(&self, title: String, lines: Vec<String>) -> Recognised {
        let readings = self.readings.borrow();
        let (title, mut lines) = match &self.unlabelled {
            Some(label) => ambiguous::flag(title, lines, label, &readings),
            None => (title, lines),
        };
        let guess = self
            .guess_used
            .get()
            .then_some(self.guessed.as_ref())
            .flatten();
        let cautions: Vec<String> = self.cautions.iter().chain(guess).cloned().collect();
        if cautions.is_empty() {
            return (title, lines);
        }
        lines.splice(0..0, cautions);
        match title.starts_with('⚠') {
            true => (title, lines),
            false => (format!("⚠ Read with caution (see below). {title}"), lines),
        }
    }

    /// Every field of a JSON or form body with more than one distinct value, read or
    /// not, in the order first sent; for the generic summary, which shows no field
    /// by name. A body that did not parse is not looked at.
    pub(crate) fn all_repeated(&self) -> Vec<Repeated> {
        if matches!(self.body, Body::Loose(_)) {
            return Vec::new();
        }
        let mut order: Vec<&str> = Vec::new();
        let mut by_name: HashMap<&str, Vec<&Value>> = HashMap::new();
        for (name, value) in &self.fields {
            let values = by_name.entry(name).or_insert_with(|| {
                order.push(name);
                Vec::new()
            });
            values.push(value);
        }
        order
            .into_iter()
            .filter_map(|name| {
                let copies = by_name.remove(name)?;
                if copies.len() < 2 {
                    return None;
                }
                let values = distinct(copies.into_iter());
                (values.len() > 1).then(|| Repeated {
                    name: name.to_string(),
                    values,
                })
            })
            .collect()
    }

    /// Whether the body was read as form fields (not JSON, parsed or not).
    pub(crate) fn is_form(&self) -> bool {
        matches!(self.body, Body::Form)
    }

    /// Adds query parameters (Slack and Stripe accept arguments there too) before the
    /// body's fields, so a body field of the same name is the one `get` returns, as
    /// PHP and Rack merge them; a difference between the two is still noted.
    pub(crate) fn with_query(mut self, query: &str) -> Params {
        let mut fields = text_pairs(query);
        if !fields.is_empty() {
            if let Some(form) = &mut self.form_reading {
                let mut with_query = fields.clone();
                with_query.append(form);
                *form = with_query;
            }
            self.body_from = fields.len();
            fields.append(&mut self.fields);
            self.fields = fields;
        }
        self
    }

    /// Every copy of the field, in the order sent.
    fn occurrences(&self, key: &str) -> Vec<Cow<'_, Value>> {
        let mut found: Vec<Cow<'_, Value>> = Vec::new();
        for (index, (name, value)) in self.fields.iter().enumerate() {
            if name == key {
                if index >= self.body_from && self.guessed.is_some() {
                    self.guess_used.set(true);
                }
                found.push(Cow::Borrowed(value));
            }
        }
        if let Body::Loose(text) = &self.body {
            found.extend(
                loose_json_strings(text, key, LOOSE_VALUE_CHARS)
                    .into_iter()
                    .map(|text| Cow::Owned(Value::String(text))),
            );
        }
        found
    }

    /// Remembers the field as this reading has it (`found`) and as the form reading
    /// has it, when the body is read both ways.
    fn note_readings(&self, key: &str, found: &[Cow<'_, Value>]) {
        let Some(form) = &self.form_reading else {
            return;
        };
        let mut readings = self.readings.borrow_mut();
        if readings.iter().any(|field| field.name == key) {
            return;
        }
        let as_form = form
            .iter()
            .rfind(|(name, _)| name == key)
            .map(|(_, value)| text(value));
        readings.push(Differing {
            name: key.to_string(),
            as_json: found.last().map(|value| text(value)),
            as_form,
        });
    }

    fn note_repeats(&self, key: &str, found: &[Cow<'_, Value>]) {
        if found.len() < 2 {
            return;
        }
        let mut repeated = self.repeated.borrow_mut();
        if repeated.iter().any(|field| field.name == key) {
            return;
        }
        let values = distinct(found.iter().map(|value| value.as_ref()));
        if values.len() > 1 {
            repeated.push(Repeated {
                name: key.to_string(),
                values,
            });
        }
    }
}

/// The values as text (strings as they are, anything else as JSON), each once.
fn distinct<'a>(values: impl Iterator<Item = &'a Value>) -> Vec<String> {
    let mut seen = HashSet::new();
    values
        .map(text)
        .filter(|text| seen.insert(text.clone()))
        .collect()
}

/// A string as it is, anything else as JSON.
fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The members of a JSON object in the order written, repeated names included:
/// `serde_json::Value` keeps only the last of each, which would hide a repeat.
struct Members(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(MembersVisitor)
    }
}

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Members;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
        let mut members = Vec::new();
        while let Some(member) = map.next_entry::<String, Value>()? {
            members.push(member);
        }
        Ok(Members(members))
    }
}

fn text_pairs(text: &str) -> Vec<(String, Value)> {
    form_pairs(text)
        .into_iter()
        .map(|(name, value)| (name, Value::String(value)))
        .collect()
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

/// The string values of every `"key": "…"` in `text` (at any depth: the text is not
/// parsed), each read up to its closing quote or the end of the text, with JSON escapes
/// decoded; at most `max_chars` characters of each. The scan never goes back, so the
/// work is linear in the text.
pub(crate) fn loose_json_strings(text: &str, key: &str, max_chars: usize) -> Vec<String> {
    let quoted = format!("\"{key}\"");
    let mut found = Vec::new();
    let mut search_from = 0;
    while let Some(at) = text.get(search_from..).and_then(|rest| rest.find(&quoted)) {
        let after_key = search_from + at + quoted.len();
        search_from = after_key;
        let Some(rest) = text.get(after_key..) else {
            break;
        };
        let Some(after_colon) = rest.trim_start().strip_prefix(':') else {
            continue;
        };
        let Some(value) = after_colon.trim_start().strip_prefix('"') else {
            continue;
        };
        let (decoded, consumed) = read_json_string(value, max_chars);
        found.push(decoded);
        search_from = text.len() - value.len() + consumed;
    }
    found
}

/// A JSON string's text (after its opening quote) and the bytes read of `text`.
fn read_json_string(text: &str, max_chars: usize) -> (String, usize) {
    let mut out = String::new();
    let mut chars = text.char_indices();
    let mut count = 0;
    let mut consumed = 0;
    while let Some((at, c)) = chars.next() {
        if count >= max_chars {
            break;
        }
        consumed = at + c.len_utf8();
        let decoded = match c {
            '"' => break,
            '\\' => match chars.next() {
                Some((at, escaped)) => {
                    consumed = at + escaped.len_utf8();
                    match escaped {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        'b' => '\u{8}',
                        'f' => '\u{c}',
                        'u' => {
                            let hex: String = chars.by_ref().take(4).map(|(_, c)| c).collect();
                            consumed += hex.len();
                            let unit =
                                if hex.len() == 4 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
                                    u32::from_str_radix(&hex, 16).unwrap_or(0xFFFD)
                                } else {
                                    0xFFFD
                                };
                            // Surrogate halves cannot stand alone; a person loses nothing
                            // by seeing a replacement character for an emoji here.
                            char::from_u32(unit).unwrap_or('\u{FFFD}')
                        }
                        other => other,
                    }
                }
                None => break,
            },
            other => other,
        };
        out.push(decoded);
        count += 1;
    }
    (out, consumed)
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
        assert_eq!(loose_json_strings(text, "raw", 100), ["abc"]);
        assert!(loose_json_strings(r#"{"raw": 5}"#, "raw", 100).is_empty());
        assert_eq!(
            loose_json_strings(r#"{"raw": "\u12"#, "raw", 100),
            ["\u{FFFD}"]
        );
        assert_eq!(
            loose_json_strings(r#"{"raw": "abcdef"}"#, "raw", 3),
            ["abc"]
        );
    }

    #[test]
    fn loose_scanner_finds_every_copy_and_not_keys_inside_values() {
        let text = r#"{"to": "a\"to\": \"x", "to": "b", "to": "é\u00e9"#;
        assert_eq!(
            loose_json_strings(text, "to", 100),
            ["a\"to\": \"x", "b", "éé"]
        );
    }

    #[test]
    fn repeats_are_kept_and_the_last_copy_is_read() {
        let form = Params::from_body("", b"channel=C1&text=a&channel=C2&channel=C1&user=U&user=U");
        assert_eq!(form.get("channel").as_deref(), Some("C1"));
        assert_eq!(form.get("user").as_deref(), Some("U"));
        assert_eq!(form.get("text").as_deref(), Some("a"));
        assert_eq!(
            form.repeated(),
            [Repeated {
                name: "channel".into(),
                values: vec!["C1".into(), "C2".into()]
            }]
        );

        let json = Params::from_body(
            "application/json",
            br#"{"amount": 100, "amount": "100", "to": "a", "n": {"x":1}, "to": "b", "n": [2]}"#,
        );
        assert_eq!(json.get("to").as_deref(), Some("b"));
        assert_eq!(json.get("amount").as_deref(), Some("100"));
        assert_eq!(json.get_json("n"), Some(serde_json::json!([2])));
        assert_eq!(json.values("to"), ["a", "b"]);
        let names: Vec<String> = json.repeated().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["to", "n"]);
        assert_eq!(json.all_repeated()[1].values, [r#"{"x":1}"#, "[2]"]);

        // The body's field wins over the query's, and the difference is noted.
        let both =
            Params::from_body("application/json", br#"{"channel":"C1"}"#).with_query("channel=C9");
        assert_eq!(both.get("channel").as_deref(), Some("C1"));
        assert_eq!(both.repeated()[0].values, ["C9", "C1"]);
    }

    #[test]
    fn lists() {
        let json = Params::from_body("", br#"{"labels":["bug","p1",3]}"#);
        assert_eq!(json.get_list("labels"), ["bug", "p1"]);
        let form = Params::from_body("", b"labels[]=a&labels[]=b");
        assert_eq!(form.get_list("labels"), ["a", "b"]);
    }
}
