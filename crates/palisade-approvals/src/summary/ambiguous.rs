//! Bodies whose media type does not say how to read them.
//!
//! A server picks a body's reader by its media type: Rack (Stripe) reads a POST with no
//! `Content-Type` as a form, GitHub reads JSON whatever the label says, and a label such
//! as `text/plain` is read however each server likes. An agent can write a JSON object
//! whose strings carry form pairs (`{"amount":"100","a":"=1&amount=9999999&z="}`): a
//! card that showed only the JSON would show 1.00 while a form reader pays 99,999.99.
//!
//! So such a body that looks like JSON is read both ways (`params.rs`), and so is one
//! labelled a form that looks like JSON (`curl -d '{…}'` labels it so, and GitHub reads
//! it as JSON, a form reader as a form). When the form
//! reading gives any field the summary reads, every field where the two readings differ
//! is shown both ways, and the title starts with the form reading's values: neither
//! reading is presented as what the server will act on. When the form reading gives
//! none of those fields, a form reader would act on nothing (a Stripe transfer without
//! an amount fails), so the JSON reading is shown without a warning; a person is not
//! warned about every unlabelled JSON body.

use super::clean::one_line;
use super::repeated::TITLE_VALUE_CHARS;
use super::{Recognised, LINE_CHARS};

/// Fields named in the title; the lines list more.
const TITLE_FIELDS: usize = 4;
/// Fields listed, one per line.
const LISTED_FIELDS: usize = 10;

/// A field the summary read, as the JSON reading and as the form reading have it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Differing {
    pub name: String,
    pub as_json: Option<String>,
    pub as_form: Option<String>,
}

/// The title and lines with a warning in front when the form reading gives a field
/// the summary reads and differs from the JSON reading; `label` says how the body is
/// labelled (`no Content-Type`).
pub(crate) fn flag(
    title: String,
    lines: Vec<String>,
    label: &str,
    readings: &[Differing],
) -> Recognised {
    if !readings.iter().any(|field| field.as_form.is_some()) {
        return (title, lines);
    }
    let differing: Vec<&Differing> = readings
        .iter()
        .filter(|field| field.as_json != field.as_form)
        .collect();
    if differing.is_empty() {
        return (title, lines);
    }
    let mut in_title: Vec<String> = differing
        .iter()
        .take(TITLE_FIELDS)
        .map(|field| {
            format!(
                "{} {}",
                one_line(&field.name, 40),
                shown(&field.as_form, TITLE_VALUE_CHARS)
            )
        })
        .collect();
    if differing.len() > TITLE_FIELDS {
        in_title.push(String::from("…"));
    }
    let title = format!(
        "⚠ Body with {label} reads otherwise as a form: {}. {title}",
        in_title.join(", ")
    );
    let mut out = Vec::with_capacity(lines.len() + differing.len() + 2);
    out.push(format!(
        "⚠ The body has {label}, so the service may read it as JSON or as a form, and the two differ (the summary below is the JSON reading):"
    ));
    for field in differing.iter().take(LISTED_FIELDS) {
        out.push(one_line(
            &format!(
                "{}: as JSON {}, as a form {}",
                one_line(&field.name, 40),
                shown(&field.as_json, LINE_CHARS / 3),
                shown(&field.as_form, LINE_CHARS / 3)
            ),
            LINE_CHARS,
        ));
    }
    if differing.len() > LISTED_FIELDS {
        out.push(format!(
            "… and {} more fields that differ",
            differing.len() - LISTED_FIELDS
        ));
    }
    if !lines.is_empty() {
        out.push(String::new());
    }
    out.extend(lines);
    (title, out)
}

/// `"value"`, or `(not given)`.
fn shown(value: &Option<String>, max_chars: usize) -> String {
    match value {
        Some(value) => format!("\"{}\"", one_line(value, max_chars)),
        None => String::from("(not given)"),
    }
}
