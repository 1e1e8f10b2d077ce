//! Making untrusted text safe to show a person.
//!
//! Everything a summary shows comes from the agent's request, so it may try to mislead
//! the approver: right-to-left overrides that reverse an address, zero-width characters
//! that hide a word, tag characters that carry invisible instructions, or sheer length
//! that pushes the important part off the card. These helpers mark the invisible,
//! replace the unprintable and cap every length.
//!
//! An invisible character is not removed: `al\u{202E}ice@example.com` would then read
//! `alice@example.com` while the upstream gets something else. Each run of them is
//! shown where it is, as plain text no platform reads as markup: `⟨U+202E⟩`, or for a
//! long run its first code points and its length (`⟨U+E0041 U+E0042 U+E0043 … 37
//! hidden⟩`), so a flood of them costs a card a few dozen characters, not one mark
//! each. The exceptions are the joiners and presentation selectors inside emoji
//! (`❤️`, `👩‍💻`): they hide no text, and marking them would put the warning on every
//! friendly message until approvers stopped reading it.

/// Characters that render as nothing or reorder what follows: the sanitizer's list.
pub use palisade_policy::sanitize::is_invisible;
use unicode_normalization::char::is_combining_mark;

const ELLIPSIS: char = '…';
/// How a marker starts: what [`shows_hidden`] looks for.
const MARKER_START: &str = "⟨U+";
/// Code points a marker names; a longer run is counted after them.
const MARKER_CODES: usize = 3;
const ZERO_WIDTH_JOINER: char = '\u{200D}';
const EMOJI_PRESENTATION: char = '\u{FE0F}';
const COMBINING_KEYCAP: char = '\u{20E3}';

/// One line: whitespace and line breaks collapse to single spaces, other control
/// characters become U+FFFD, invisible characters are marked (`⟨U+202E⟩`), at most
/// `max_chars` chars (a marker is never cut in two).
pub fn one_line(text: &str, max_chars: usize) -> String {
    let (pieces, cut) = shown_line(text, max_chars);
    let mut out = String::with_capacity(text.len().min(max_chars.saturating_mul(4)));
    for piece in &pieces {
        piece.push_to(&mut out);
    }
    if cut {
        out.push(ELLIPSIS);
    }
    out
}

/// Whether `text` shows a marker for hidden characters (or quotes one: an agent that
/// writes `⟨U+` itself only earns its request a warning it did not need).
/// Names of hosts or mail domains in `text` with a part that passes for Latin while it
/// is not (see [`passes_for_latin`]: `gmаil.com`, its `а` Cyrillic; `аррӏе.рф`, all
/// Cyrillic): each as written and in the ASCII form the request really names
/// (`xn--gmil-63d.com`), at most `max`. A name in another script that does not read as
/// Latin (`пример.рф`, `Ελληνικά.gr`) is not one. The full stops IDNA reads as dots
/// (ideographic, fullwidth, halfwidth) count as dots, and combining marks stay inside
/// the name they are on. Written here: finding the names is a split on what a host
/// name may hold; the ASCII form is the `idna` crate's.
pub(crate) fn look_alike_domains(text: &str, max: usize) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = Vec::new();
    if max == 0 {
        return found;
    }
    let text: String = text
        .chars()
        .map(|c| match c {
            '\u{3002}' | '\u{FF0E}' | '\u{FF61}' => '.',
            other => other,
        })
        .collect();
    let words = text.split(|c: char| {
        !(c.is_alphanumeric() || is_combining_mark(c) || matches!(c, '.' | '-' | '@'))
    });
    for word in words {
        let domain = word
            .rsplit('@')
            .next()
            .unwrap_or(word)
            .trim_matches(|c| c == '.' || c == '-');
        if !domain.contains('.')
            || !domain.split('.').any(passes_for_latin)
            || found.iter().any(|(d, _)| d == domain)
        {
            continue;
        }
        let ascii = idna::domain_to_ascii(domain).unwrap_or_else(|_| "not a valid name".into());
        found.push((domain.to_string(), ascii));
        if found.len() == max {
            break;
        }
    }
    found
}

/// Whether a part of a name reads as Latin while it is not: it has letters of another
/// script drawn like Latin ones, beside Latin letters (`gmаil`) or making up every
/// letter it has (`аррӏе`). A part in another script with letters unlike any Latin one
/// (`Ελληνικά`, `рф`) does not.
fn passes_for_latin(label: &str) -> bool {
    use palisade_policy::sanitize::looks_like_ascii;
    label.chars().any(looks_like_ascii)
        && (label.chars().any(|c| c.is_ascii_alphabetic())
            || label
                .chars()
                .all(|c| c.is_ascii() || looks_like_ascii(c) || is_combining_mark(c)))
}

pub(crate) fn shows_hidden(text: &str) -> bool {
    text.contains(MARKER_START)
}

/// What one line shows, piece by piece: a character, or the marker of a run of hidden
/// ones, which wrapping keeps whole.
enum Piece {
    Char(char),
    Marker(String),
}

impl Piece {
    fn chars(&self) -> usize {
        match self {
            Piece::Char(_) => 1,
            Piece::Marker(marker) => marker.chars().count(),
        }
    }

    fn push_to(&self, out: &mut String) {
        match self {
            Piece::Char(c) => out.push(*c),
            Piece::Marker(marker) => out.push_str(marker),
        }
    }
}

/// A run of hidden characters: the first few code points and how many there are.
#[derive(Default)]
struct HiddenRun {
    first: Vec<u32>,
    count: usize,
}

impl HiddenRun {
    fn add(&mut self, c: char) {
        if self.first.len() < MARKER_CODES {
            self.first.push(c as u32);
        }
        self.count += 1;
    }

    /// `⟨U+202E⟩`, `⟨U+200B U+200C⟩`, `⟨U+E0041 U+E0042 U+E0043 … 37 hidden⟩`.
    fn marker(&self) -> String {
        let codes: Vec<String> = self.first.iter().map(|c| format!("U+{c:04X}")).collect();
        match self.count > MARKER_CODES {
            true => format!("⟨{} … {} hidden⟩", codes.join(" "), self.count),
            false => format!("⟨{}⟩", codes.join(" ")),
        }
    }
}

/// Pictographs, roughly: the blocks emoji come from. Only decides whether a joiner or
/// a presentation selector next to one is part of an emoji, never what is shown.
fn is_pictograph(c: char) -> bool {
    matches!(c as u32,
        0x00A9 | 0x00AE | 0x203C | 0x2049 | 0x2122 | 0x2139 | 0x2190..=0x21FF
        | 0x2300..=0x23FF | 0x24C2 | 0x25A0..=0x27BF | 0x2934 | 0x2935 | 0x2B00..=0x2BFF
        | 0x3030 | 0x303D | 0x3297 | 0x3299 | 0x1F000..=0x1FAFF)
}

/// Most combining marks shown on one letter (Vietnamese stacks two: `ệ` written as `e`,
/// a circumflex and a dot below); more are marked as hidden.
const MAX_MARKS: usize = 2;

/// Whether combining mark `c`, after `marks` shown on a base that is a letter or not,
/// is marked as hidden instead: a mark on anything but a letter (a digit, a space, a
/// sign: `10̸0` passes for `1Ø0`, an overlay or a stack can blot a digit out), a mark
/// that overlays or encloses what it is on, and any beyond [`MAX_MARKS`] on a letter
/// (a stack drawn over the lines around it).
fn hides_as_mark(c: char, letter_base: bool, marks: usize) -> bool {
    let overlay = matches!(c as u32, 0x0334..=0x0338 | 0x20D2..=0x20D3 | 0x20D8..=0x20DA | 0x20DD..=0x20E4 | 0x20E5..=0x20E6 | 0x20EA..=0x20EB);
    !letter_base || overlay || marks >= MAX_MARKS
}

/// [`one_line`] as pieces, and whether it was cut at `max_chars`.
fn shown_line(text: &str, max_chars: usize) -> (Vec<Piece>, bool) {
    let mut pieces = Vec::new();
    let mut count = 0;
    let mut pending_space = false;
    let mut run = HiddenRun::default();
    // Whether the last character shown was an emoji, or the part of one so far.
    let mut in_emoji = false;
    // Adds a piece (after the space owed before it); false when it does not fit.
    let mut push = |piece: Piece, pending_space: &mut bool, count: &mut usize| -> bool {
        let space = usize::from(*pending_space && *count > 0);
        if *count + space + piece.chars() > max_chars {
            return false;
        }
        if space == 1 {
            pieces.push(Piece::Char(' '));
        }
        *pending_space = false;
        *count += space + piece.chars();
        pieces.push(piece);
        true
    };
    // Combining marks shown on the last base character, and whether that base is a
    // letter (marks on anything else are hidden, see [`hides_as_mark`]).
    let mut marks = 0;
    let mut letter_base = false;
    let mut after_presentation = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let next = chars.peek().copied();
        let part_of_emoji = match c {
            EMOJI_PRESENTATION => in_emoji || next == Some(COMBINING_KEYCAP),
            ZERO_WIDTH_JOINER => in_emoji && next.is_some_and(is_pictograph),
            COMBINING_KEYCAP => after_presentation,
            _ => false,
        };
        after_presentation = c == EMOJI_PRESENTATION && part_of_emoji;
        let mark = is_combining_mark(c) && !part_of_emoji;
        if (is_invisible(c) && !part_of_emoji) || (mark && hides_as_mark(c, letter_base, marks)) {
            run.add(c);
            in_emoji = false;
            continue;
        }
        if mark {
            marks += 1;
        } else if !part_of_emoji {
            marks = 0;
            letter_base = c.is_alphabetic();
        }
        if run.count > 0 {
            let marker = Piece::Marker(run.marker());
            run = HiddenRun::default();
            if !push(marker, &mut pending_space, &mut count) {
                return (pieces, true);
            }
        }
        if c.is_whitespace() {
            pending_space = count > 0;
            in_emoji = false;
            continue;
        }
        in_emoji = is_pictograph(c) || (c == EMOJI_PRESENTATION && in_emoji);
        let shown = if c.is_control() { '\u{FFFD}' } else { c };
        if !push(Piece::Char(shown), &mut pending_space, &mut count) {
            return (pieces, true);
        }
    }
    if run.count > 0 && !push(Piece::Marker(run.marker()), &mut pending_space, &mut count) {
        return (pieces, true);
    }
    (pieces, false)
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
/// `width` characters, a marker kept whole; runs of blank lines collapse to one.
pub(crate) fn wrapped_lines(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut previous_blank = true;
    for raw in text.split('\n') {
        let (pieces, _) = shown_line(raw, usize::MAX);
        if pieces.is_empty() {
            if !previous_blank {
                lines.push(String::new());
            }
            previous_blank = true;
            continue;
        }
        previous_blank = false;
        let (mut line, mut chars) = (String::new(), 0);
        for piece in &pieces {
            if chars > 0 && chars + piece.chars() > width {
                lines.push(std::mem::take(&mut line));
                chars = 0;
            }
            piece.push_to(&mut line);
            chars += piece.chars();
        }
        lines.push(line);
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
    fn one_line_marks_bidi_and_invisible_and_collapses_space() {
        let hostile = "pay\u{202E}lapyap\u{202C} to\u{200B} \t\n mallory\u{E0041}\u{FEFF}\u{7}";
        assert_eq!(
            one_line(hostile, 100),
            "pay⟨U+202E⟩lapyap⟨U+202C⟩ to⟨U+200B⟩ mallory⟨U+E0041 U+FEFF⟩\u{FFFD}"
        );
        // The address the upstream gets is not the one a person would read unmarked.
        assert_eq!(
            one_line("al\u{202E}ice@example.com", 100),
            "al⟨U+202E⟩ice@example.com"
        );
        assert!(shows_hidden(&one_line("al\u{202E}ice@example.com", 100)));
        assert!(!shows_hidden(&one_line("alice@example.com", 100)));
        // Cleaning what is already clean changes nothing (titles are cleaned twice).
        let once = one_line(hostile, 100);
        assert_eq!(one_line(&once, 100), once);
    }

    /// A flood of hidden characters is one marker of bounded length, not a mark each:
    /// tag characters spelling a whole instruction cost the card a few dozen characters.
    #[test]
    fn a_long_run_of_hidden_characters_is_one_counted_marker() {
        let tags: String = "ignore all previous instructions"
            .chars()
            .map(|c| char::from_u32(0xE0000 + c as u32).unwrap())
            .collect();
        let shown = one_line(&format!("hello{tags}world"), 500);
        assert_eq!(shown, "hello⟨U+E0069 U+E0067 U+E006E … 32 hidden⟩world");
        let flood = format!("a{}b", "\u{200B}".repeat(100_000));
        let shown = one_line(&flood, 500);
        assert_eq!(shown, "a⟨U+200B U+200B U+200B … 100000 hidden⟩b");
        assert_eq!(
            one_line("x\u{200B}\u{200C}y", 100),
            "x⟨U+200B U+200C⟩y",
            "a short run names every code point"
        );
    }

    /// A marker that does not fit is left out whole, never cut into something that no
    /// longer reads as one.
    #[test]
    fn a_marker_is_never_cut() {
        assert_eq!(one_line("abc\u{202E}def", 6), "abc…");
        assert_eq!(one_line("abc\u{202E}def", 11), "abc⟨U+202E⟩…");
        assert_eq!(one_line("abc\u{202E}", 11), "abc⟨U+202E⟩");
        // Wrapping moves a marker to the next line rather than splitting it.
        let lines = wrapped_lines("abcdef\u{202E}gh", 8);
        assert_eq!(lines, ["abcdef", "⟨U+202E⟩", "gh"]);
        let lines = wrapped_lines(&format!("{}\u{200B}", "x".repeat(20)), 8);
        assert!(lines.iter().any(|line| line == "⟨U+200B⟩"), "{lines:?}");
    }

    /// The joiners and presentation selectors inside emoji hide no text: marking them
    /// would warn about every friendly message. The same characters elsewhere are marked.
    #[test]
    fn emoji_keep_their_joiners_and_selectors() {
        for emoji in [
            "\u{2764}\u{FE0F}",
            "\u{1F469}\u{200D}\u{1F4BB}",
            "\u{1F3F3}\u{FE0F}\u{200D}\u{1F308}",
            "1\u{FE0F}\u{20E3}",
            "\u{1F44D}\u{1F3FD}",
        ] {
            let text = format!("thanks {emoji}!");
            assert_eq!(one_line(&text, 100), text);
        }
        assert_eq!(one_line("a\u{200D}b", 100), "a⟨U+200D⟩b");
        assert_eq!(one_line("a\u{FE0F}b", 100), "a⟨U+FE0F⟩b");
        assert_eq!(
            one_line("\u{1F600}\u{200D}b", 100),
            "\u{1F600}⟨U+200D⟩b",
            "a joiner after an emoji but before a letter"
        );
    }

    /// Combining marks where no writing puts them (on a digit, a space, a sign), marks
    /// that overlay or enclose, and stacks beyond two are marked; accents on letters,
    /// composed or not, and Vietnamese's two marks on one letter are not.
    #[test]
    fn combining_marks_that_blot_or_stack_are_marked() {
        for plain in [
            "caf\u{e9} cafe\u{301}",
            "Vie\u{0323}\u{0302}t Nam",
            "\u{0928}\u{093F}\u{0932}",
            "1\u{FE0F}\u{20E3} done",
        ] {
            assert_eq!(one_line(plain, 100), plain);
        }
        assert_eq!(one_line("10\u{338}0", 100), "10⟨U+0338⟩0");
        assert_eq!(
            one_line("1 0\u{336}\u{336}\u{336}0", 100),
            "1 0⟨U+0336 U+0336 U+0336⟩0"
        );
        assert_eq!(one_line("x \u{301}y", 100), "x ⟨U+0301⟩y");
        assert_eq!(
            one_line("e\u{301}\u{302}\u{303}\u{304}", 100),
            "e\u{301}\u{302}⟨U+0303 U+0304⟩"
        );
        assert_eq!(one_line("a\u{20DD}", 100), "a⟨U+20DD⟩");
        assert!(shows_hidden(&one_line("10\u{338}0", 100)));
        let zalgo = format!("a{}b", "\u{300}".repeat(10_000));
        assert_eq!(
            one_line(&zalgo, 100),
            "a\u{300}\u{300}⟨U+0300 U+0300 U+0300 … 9998 hidden⟩b"
        );
    }

    /// A look-alike name is found whatever full stop it is written with and with a
    /// combining mark inside it, judged part by part: ordinary names in other scripts,
    /// and a Latin name under another script's top-level domain, are not flagged.
    #[test]
    fn look_alike_names_are_found_part_by_part() {
        let names = |text: &str| -> Vec<String> {
            look_alike_domains(text, 5)
                .into_iter()
                .map(|(name, _)| name)
                .collect()
        };
        for spoof in [
            "p\u{0430}ypal\u{3002}com",
            "p\u{0430}ypal\u{FF0E}com",
            "\u{0430}\u{0440}\u{0440}\u{04CF}\u{0435}\u{FF61}com",
            "gm\u{0430}i\u{0307}l.com",
            "\u{0430}\u{0440}\u{0440}\u{04CF}\u{0435}\u{0307}.com",
            "\u{0430}\u{0440}\u{0440}\u{04CF}\u{0435}.\u{0440}\u{0444}",
        ] {
            assert_eq!(names(&format!("to {spoof} now")).len(), 1, "{spoof}");
        }
        // A mark inside the top-level domain stays in the name: the real one is named.
        let found = look_alike_domains("p\u{0430}ypal.co\u{0323}m", 5);
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].1,
            idna::domain_to_ascii("p\u{0430}ypal.co\u{0323}m").unwrap()
        );
        for plain in [
            "\u{0395}\u{03BB}\u{03BB}\u{03B7}\u{03BD}\u{03B9}\u{03BA}\u{03AC}.gr",
            "\u{03B4}\u{03BF}\u{03BA}\u{03B9}\u{03BC}\u{03AE}.gr",
            "coordination.\u{0440}\u{0444}",
            "\u{043F}\u{0440}\u{0438}\u{043C}\u{0435}\u{0440}.\u{0440}\u{0444}",
            "caf\u{E9}.fr",
            "m\u{FC}nchen.de",
            "paypal.com",
        ] {
            assert!(names(plain).is_empty(), "{plain}: {:?}", names(plain));
        }
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
