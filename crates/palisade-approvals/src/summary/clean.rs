//! Making untrusted text safe to show a person.
//!
//! Everything a summary shows comes from the agent's request, so it may try to mislead
//! the approver: right-to-left overrides that reverse an address, zero-width characters
//! that hide a word, tag characters that carry invisible instructions, or sheer length
//! that pushes the important part off the card. These helpers remove the invisible,
//! replace the unprintable and cap every length.

/// Characters that render as nothing or reorder what follows: the sanitizer's list.
/// Removed outright, since showing a replacement for each would let an attacker flood
/// the card with marks.
pub use palisade_policy::sanitize::is_invisible;

const ELLIPSIS: char = '…';

/// One line: whitespace and line breaks collapse to single spaces, other control
/// characters become U+FFFD, invisible characters vanish, at most `max_chars` chars.
pub fn one_line(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars.saturating_mul(4)));
    let mut count = 0;
    let mut pending_space = false;
    for c in text.chars() {
        if is_invisible(c) {
            continue;
        }
        if c.is_whitespace() {
            pending_space = count > 0;
            continue;
        }
        if count + usize::from(pending_space) >= max_chars {
            out.push(ELLIPSIS);
            return out;
        }
        if pending_space {
            out.push(' ');
            count += 1;
            pending_space = false;
        }
        out.push(if c.is_control() { '\u{FFFD}' } else { c });
        count += 1;
    }
    out
}

/// Several lines for a card or detail view: [`wrapped_lines`] at `max_line_chars`, at
/// most `max_lines` of them and about `max_total_chars` characters, keeping both ends
/// ([`head_and_tail`]) when they do not fit.
pub(crate) fn text_lines(
    text: &str,
    max_lines: usize,
    max_line_chars: usize,
    max_total_chars: usize,
) -> Vec<String> {
    head_and_tail(
        wrapped_lines(text, max_line_chars),
        max_lines,
        max_total_chars,
    )
}

/// Every line of `text`, cleaned as [`one_line`] cleans and wrapped (never cut) at
/// `width` characters; runs of blank lines collapse to one.
pub(crate) fn wrapped_lines(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut previous_blank = true;
    for raw in text.split('\n') {
        let line = one_line(raw, usize::MAX);
        if line.is_empty() {
            if !previous_blank {
                lines.push(String::new());
            }
            previous_blank = true;
            continue;
        }
        previous_blank = false;
        let chars: Vec<char> = line.chars().collect();
        lines.extend(
            chars
                .chunks(width.max(1))
                .map(|c| c.iter().collect::<String>()),
        );
    }
    while lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    lines
}

/// At most `max_lines` of `lines` and about `max_chars` characters, keeping both ends:
/// when something must go it is the middle, and a line in its place says how much went.
/// So words an agent puts after padding are on the card as surely as its first ones.
pub(crate) fn head_and_tail(lines: Vec<String>, max_lines: usize, max_chars: usize) -> Vec<String> {
    let length = |line: &String| line.chars().count();
    let total: usize = lines.iter().map(length).sum();
    if lines.len() <= max_lines && total <= max_chars {
        return lines;
    }
    // One line goes to the note; the head gets the odd one of the rest.
    let room = max_lines.saturating_sub(1);
    let char_budget = max_chars / 2;
    // Whole lines from one end while they fit; the next one cut, its far part kept.
    let take = |from: &mut dyn Iterator<Item = &String>, from_end: bool, line_budget: usize| {
        let (mut taken, mut chars) = (Vec::new(), 0);
        for line in from {
            if taken.len() >= line_budget || chars >= char_budget {
                break;
            }
            let room = char_budget - chars;
            let count = length(line);
            let shown: String = match (count <= room, from_end) {
                (true, _) => line.clone(),
                (false, false) => line.chars().take(room).collect(),
                (false, true) => line.chars().skip(count - room).collect(),
            };
            chars += length(&shown);
            taken.push(shown);
        }
        (taken, chars)
    };
    let (head, head_chars) = take(&mut lines.iter(), false, room.div_ceil(2));
    let (mut tail, tail_chars) = take(&mut lines.iter().rev(), true, room / 2);
    tail.reverse();
    let mut out = head;
    out.push(format!(
        "[… {} characters not shown …]",
        total.saturating_sub(head_chars + tail_chars)
    ));
    out.extend(tail);
    out
}

/// Cuts `text` to at most `max_chars` characters on a character boundary.
pub(crate) fn truncate_chars(text: &mut String, max_chars: usize) {
    if let Some((index, _)) = text.char_indices().nth(max_chars) {
        text.truncate(index);
        text.push(ELLIPSIS);
    }
}

/// Whether `body` is clearly not text: a few odd bytes happen in text (or where a
/// character was cut in half); beyond that it is binary, and neither showing it nor
/// reading fields out of it makes sense.
pub(crate) fn is_binary(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    let unprintable = text
        .chars()
        .filter(|c| *c == '\u{FFFD}' || (c.is_control() && !c.is_whitespace()))
        .count();
    unprintable > 4 && unprintable * 10 > text.chars().count()
}

/// Body bytes as displayable text of about `max_chars` characters, or a note when they
/// are clearly not text. Runs of white space count as one, so padding cannot push what
/// matters out of view; a longer text shows its beginning and its end with the number
/// of characters left out between them, so the end of a body is never hidden behind
/// its beginning.
pub(crate) fn body_text(body: &[u8], max_chars: usize) -> String {
    if is_binary(body) {
        return format!("[{} bytes of binary data]", body.len());
    }
    let text = String::from_utf8_lossy(body);
    let squeezed = squeeze_white_space(&text);
    let count = squeezed.chars().count();
    if count <= max_chars {
        return squeezed;
    }
    let half = max_chars / 2;
    let head: String = squeezed.chars().take(half).collect();
    let tail: String = squeezed.chars().skip(count - half).collect();
    format!(
        "{head}\n[… {} characters not shown …]\n{tail}",
        count - 2 * half
    )
}

/// Runs of white space as one character: a newline if the run held one, else a space.
fn squeeze_white_space(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(1 << 16));
    let mut run: Option<char> = None;
    for c in text.chars() {
        if c.is_whitespace() {
            run = Some(if c == '\n' || run == Some('\n') {
                '\n'
            } else {
                ' '
            });
            continue;
        }
        if let Some(white) = run.take() {
            out.push(white);
        }
        out.push(c);
    }
    if let Some(white) = run {
        out.push(white);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_removes_bidi_and_invisible_and_collapses_space() {
        let hostile = "pay\u{202E}lapyap\u{202C} to\u{200B} \t\n mallory\u{E0041}\u{FEFF}\u{7}";
        assert_eq!(one_line(hostile, 100), "paylapyap to mallory\u{FFFD}");
    }

    #[test]
    fn one_line_caps_length() {
        assert_eq!(one_line("abcdef", 3), "abc…");
        assert_eq!(one_line("abc", 3), "abc");
        assert_eq!(one_line("  a   b  ", 10), "a b");
        assert_eq!(one_line("ééééé", 2), "éé…");
    }

    #[test]
    fn text_lines_caps_lines_and_total() {
        let text = "one\r\n\r\n\r\ntwo\nthree\nfour";
        assert_eq!(
            text_lines(text, 10, 50, 500),
            ["one", "", "two", "three", "four"]
        );
        assert_eq!(
            text_lines(text, 2, 50, 500),
            ["one", "[… 12 characters not shown …]"]
        );
        assert_eq!(
            text_lines(text, 4, 50, 500),
            ["one", "", "[… 8 characters not shown …]", "four"]
        );
        // A long line keeps its start and its end.
        let long = format!("{}{}", "x".repeat(1000), "END");
        let lines = text_lines(&long, 10, 2000, 500);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].starts_with("xxx") && lines[2].ends_with("END"));
        assert_eq!(lines[1], "[… 503 characters not shown …]");
        // Lines past the width are wrapped, not cut.
        assert_eq!(text_lines("abcdef", 10, 4, 500), ["abcd", "ef"]);
    }

    #[test]
    fn binary_bodies_are_described_not_shown() {
        let binary: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        assert_eq!(body_text(&binary, 4096), "[1000 bytes of binary data]");
        assert_eq!(body_text(b"hello", 4096), "hello");
    }

    #[test]
    fn padding_cannot_hide_the_end_of_a_body() {
        let padded = format!(
            "{{\"note\":\"{}\",\"to\":\"mallory@evil.example\"}}",
            " ".repeat(70_000)
        );
        let shown = body_text(padded.as_bytes(), 500);
        assert!(shown.contains("mallory@evil.example"), "{shown}");
        let long = format!("{}MIDDLE{}THE-END", "a".repeat(10_000), "b".repeat(10_000));
        let shown = body_text(long.as_bytes(), 500);
        assert!(
            shown.starts_with("aaa") && shown.ends_with("THE-END"),
            "{shown}"
        );
        assert!(shown.contains("characters not shown"), "{shown}");
        assert!(shown.chars().count() < 600);
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        let mut text = String::from("héllo");
        truncate_chars(&mut text, 2);
        assert_eq!(text, "hé…");
    }
}
