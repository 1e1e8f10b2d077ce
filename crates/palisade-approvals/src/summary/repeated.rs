//! Fields a request gives more than once, with different values.
//!
//! Servers disagree on which copy counts: PHP, Rack and `serde_json` keep the last, Go,
//! Java servlets and Flask the first, some use all. A card that showed one value could
//! show a person the copy the server ignores (`channel=friends&channel=attacker`). So
//! every field a summary shows is checked for repeats, and when it has several distinct
//! values the title starts with a warning naming them all and the lines list each one.
//! Identical repeats are harmless and not flagged.

use super::clean::one_line;
use super::{Recognised, LINE_CHARS};

/// Characters of one value in a title's warning (here and in `ambiguous.rs`).
pub(super) const TITLE_VALUE_CHARS: usize = 40;
/// Values named in the title per field; the lines list more.
const TITLE_VALUES: usize = 4;
/// Values listed, one per line, per field.
const LISTED_VALUES: usize = 10;

/// A field and its distinct values, in the order the request gives them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Repeated {
    pub name: String,
    pub values: Vec<String>,
}

/// The title with a warning in front and the lines with every value first, when any
/// field shown was given more than one value; otherwise both as they are.
pub(crate) fn flag(title: String, lines: Vec<String>, repeated: &[Repeated]) -> Recognised {
    if repeated.is_empty() {
        return (title, lines);
    }
    (
        warning_title(&title, repeated),
        warning_lines(lines, repeated),
    )
}

/// `⚠ 2 values for channel: "C1", "C2". Post to Slack in C2: …`
fn warning_title(title: &str, repeated: &[Repeated]) -> String {
    let warnings: Vec<String> = repeated
        .iter()
        .map(|field| {
            let mut shown: Vec<String> = field
                .values
                .iter()
                .take(TITLE_VALUES)
                .map(|value| format!("\"{}\"", one_line(value, TITLE_VALUE_CHARS)))
                .collect();
            if field.values.len() > TITLE_VALUES {
                shown.push(String::from("…"));
            }
            format!(
                "{} values for {}: {}",
                field.values.len(),
                one_line(&field.name, 40),
                shown.join(", ")
            )
        })
        .collect();
    format!("⚠ {}. {title}", warnings.join("; "))
}

/// A warning line per field, then each value on a line of its own, then `lines`.
fn warning_lines(lines: Vec<String>, repeated: &[Repeated]) -> Vec<String> {
    let mut out = Vec::with_capacity(lines.len() + repeated.len() * 3);
    for field in repeated {
        let name = one_line(&field.name, 40);
        out.push(format!(
            "⚠ The request gives {name} {} different values; servers differ on which they use:",
            field.values.len()
        ));
        for (index, value) in field.values.iter().take(LISTED_VALUES).enumerate() {
            out.push(format!(
                "{name} {}: {}",
                index + 1,
                one_line(value, LINE_CHARS)
            ));
        }
        if field.values.len() > LISTED_VALUES {
            out.push(format!(
                "… and {} more values for {name}",
                field.values.len() - LISTED_VALUES
            ));
        }
    }
    if !lines.is_empty() {
        out.push(String::new());
    }
    out.extend(lines);
    out
}
