//! Matching on a folded form of the text, replacing in the text itself.
//!
//! The injection and role-marker patterns are easy to step around if they read the text
//! as it is: a combining mark (`ignore\u{301}`, which NFKC composes into `ignoré`),
//! markdown emphasis (`**Human**:`, `ignore **previous** instructions`) or a backtick
//! changes nothing a model reads but breaks a literal match. So the patterns read a
//! folded copy — letters decomposed and their marks dropped, emphasis and code marks
//! dropped — and each match is mapped back to the span of the original it came from,
//! which is what gets replaced. The folded copy is never shown: removing marks from
//! what people read would damage every script that writes with them.

use regex::Regex;
use unicode_normalization::char::{decompose_canonical, is_combining_mark};

/// Characters the folded copy leaves out besides marks: markdown emphasis,
/// strikethrough and code spans, which a renderer hides and a model reads past.
fn is_emphasis(c: char) -> bool {
    matches!(c, '*' | '_' | '~' | '`')
}

/// The folded copy and, for each of its bytes, where the original character it came
/// from starts (one entry more: the original's length).
struct Folded {
    text: String,
    origin: Vec<usize>,
}

fn fold(text: &str) -> Folded {
    let mut folded = Folded {
        text: String::with_capacity(text.len()),
        origin: Vec::with_capacity(text.len() + 1),
    };
    for (offset, c) in text.char_indices() {
        if is_emphasis(c) {
            continue;
        }
        decompose_canonical(c, |part| {
            if !is_combining_mark(part) {
                folded.text.push(part);
                folded
                    .origin
                    .extend(std::iter::repeat_n(offset, part.len_utf8()));
            }
        });
    }
    folded.origin.push(text.len());
    folded
}

/// Replaces every match of `pattern` in the folded copy of `text`, by `with` of the
/// original span. A span runs from the first matched character to the next character
/// kept in the folded copy, so the marks and emphasis that follow a match's last letter
/// go with it, and those before its first letter stay with what precedes. Returns the
/// new text and how many matches there were.
pub(super) fn replace_folded(
    text: &str,
    pattern: &Regex,
    with: &dyn Fn(&str) -> String,
) -> (String, usize) {
    if text
        .bytes()
        .all(|b| b.is_ascii() && !is_emphasis(b as char))
    {
        // Nothing to fold: the common case, matched as it is.
        let mut found = 0;
        let replaced = pattern.replace_all(text, |caps: &regex::Captures| {
            found += 1;
            with(&caps[0])
        });
        return (replaced.into_owned(), found);
    }
    let folded = fold(text);
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut found = 0;
    for matched in pattern.find_iter(&folded.text) {
        let start = folded.origin[matched.start()];
        // Several folded characters can come from one original (a decomposed letter):
        // a span never ends inside it.
        let end = folded.origin[matched.end()].max(start);
        if start < copied {
            continue;
        }
        let end = if end == start {
            next_char_end(text, start)
        } else {
            end
        };
        out.push_str(&text[copied..start]);
        out.push_str(&with(&text[start..end]));
        copied = end;
        found += 1;
    }
    out.push_str(&text[copied..]);
    (out, found)
}

fn next_char_end(text: &str, start: usize) -> usize {
    text[start..]
        .chars()
        .next()
        .map_or(text.len(), |c| start + c.len_utf8())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_map_back_to_the_original() {
        let pattern = Regex::new("(?i)ignore previous").unwrap();
        let replace = |text: &str| replace_folded(text, &pattern, &|_| "X".into());
        assert_eq!(replace("a ignoré previous b"), ("a X b".into(), 1));
        assert_eq!(replace("a **ignore** previous** b"), ("a **X b".into(), 1));
        assert_eq!(replace("ignore\u{301} previous\u{301}"), ("X".into(), 1));
        assert_eq!(replace("nothing here"), ("nothing here".into(), 0));
    }
}
