//! Matching on a folded form of the text, replacing in the text itself.
//!
//! The injection and role-marker patterns are easy to step around if they read the text
//! as it is: a combining mark (`ignore\u{301}`, which NFKC composes into `ignoré`),
//! markdown emphasis (`**Human**:`, `ignore **previous** instructions`) or a backtick
//! changes nothing a model reads but breaks a literal match, and so does a letter
//! from another script drawn like a Latin one (`іgnore` with a Cyrillic `і`, `Ηuman:`
//! with a Greek `Η`). So the patterns read a folded copy — letters decomposed and their
//! marks dropped, look-alike letters replaced by the ASCII letter they are drawn like,
//! emphasis and code marks dropped, HTML character references read as their
//! characters (`i&#103;nore`), the spaces of a word spelled out letter by letter left
//! out (`I g n o r e`) — and each match is mapped back to the span of the
//! original it came from, which is what gets replaced. The folded copy is never shown:
//! removing marks or changing letters in what people read would damage every script
//! that writes with them.
//!
//! Look-alikes are those of Unicode's confusables data (UTS #39), through the
//! `unicode-security` crate's skeleton, the same data and code rustc uses to warn of
//! confusable identifiers: a table written here would miss most of the few thousand
//! look-alikes and fall behind new Unicode versions. The one table here holds what
//! that data leaves out by design, the Latin small capitals (`ɪɢɴᴏʀᴇ`) and the
//! negative circled and squared capitals (see [`letter_like`]). Only letters outside ASCII are
//! folded so, and only to an ASCII letter; ASCII is read as written (`0` for `o` is
//! not a look-alike, it is a different character to a reader and a model). The cost
//! is one table look-up per letter outside ASCII, on text already cut to the working
//! length.

use regex::Regex;
use std::collections::HashMap;
use std::sync::OnceLock;
use unicode_normalization::char::{decompose_canonical, is_combining_mark};

/// Characters the folded copy leaves out besides marks: markdown emphasis,
/// strikethrough and code spans, which a renderer hides and a model reads past.
pub(super) fn is_emphasis(c: char) -> bool {
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
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut index = 0;
    while index < chars.len() {
        let (offset, c) = chars[index];
        index += 1;
        if is_emphasis(c) || (c == ' ' && between_lone_letters(&chars, index - 1)) {
            continue;
        }
        // A character reference reads as its character to a model as to a browser
        // (`i&#103;nore`); it is read so here, and replaced whole.
        let c = match (c == '&')
            .then(|| character_reference(&text[offset..]))
            .flatten()
        {
            Some((decoded, length)) => {
                while index < chars.len() && chars[index].0 < offset + length {
                    index += 1;
                }
                decoded
            }
            None => c,
        };
        decompose_canonical(c, |part| {
            if !is_combining_mark(part) {
                let part = letter_like(part)
                    .or_else(|| ascii_look_alike(part))
                    .unwrap_or(part);
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

/// Whether the space at `chars[at]` stands between two letters that are each a word of
/// their own (`I g n o r e`): a word spelled out letter by letter reads as the word to a
/// model, so the folded copy leaves such spaces out (`Ignore`). A space before or after
/// a longer word stays (`e previous`).
fn between_lone_letters(chars: &[(usize, char)], at: usize) -> bool {
    let letter = |i: Option<usize>| {
        i.and_then(|i| chars.get(i))
            .is_some_and(|(_, c)| c.is_alphabetic())
    };
    let word_char = |i: Option<usize>| {
        i.and_then(|i| chars.get(i))
            .is_some_and(|(_, c)| c.is_alphanumeric())
    };
    let before = at.checked_sub(1);
    let after = at + 1;
    letter(before)
        && !word_char(before.and_then(|b| b.checked_sub(1)))
        && letter(Some(after))
        && !word_char(Some(after + 1))
}

/// The character an HTML character reference at the start of `text` stands for, and the
/// reference's length: `&#103;`, `&#x67;` (the `;` optional, as browsers read them) and
/// the few names text uses for markup's own characters and spaces.
fn character_reference(text: &str) -> Option<(char, usize)> {
    let rest = text.strip_prefix('&')?;
    if let Some(number) = rest.strip_prefix('#') {
        let (digits, radix, skip) = match number.strip_prefix(['x', 'X']) {
            Some(hex) => (hex, 16, 2),
            None => (number, 10, 1),
        };
        let length = digits
            .bytes()
            .take(8)
            .take_while(|b| (*b as char).is_digit(radix))
            .count();
        if length == 0 {
            return None;
        }
        let code = u32::from_str_radix(&digits[..length], radix).ok()?;
        let decoded = char::from_u32(code)?;
        let end = 1 + skip + length + usize::from(digits[length..].starts_with(';'));
        return Some((decoded, end));
    }
    const NAMED: [(&str, char); 7] = [
        ("amp;", '&'),
        ("lt;", '<'),
        ("gt;", '>'),
        ("quot;", '"'),
        ("apos;", '\''),
        ("nbsp;", ' '),
        ("colon;", ':'),
    ];
    NAMED.iter().find_map(|(name, c)| {
        rest.get(..name.len())
            .filter(|head| head.eq_ignore_ascii_case(name))
            .map(|_| (*c, 1 + name.len()))
    })
}

/// Whether `text` holds anything [`fold`] reads differently from the text itself.
fn needs_folding(text: &str) -> bool {
    let bytes = text.as_bytes();
    let letter = |i: usize| bytes.get(i).is_some_and(u8::is_ascii_alphabetic);
    let word = |i: Option<usize>| {
        i.and_then(|i| bytes.get(i))
            .is_some_and(u8::is_ascii_alphanumeric)
    };
    bytes.iter().enumerate().any(|(i, &b)| {
        !b.is_ascii()
            || is_emphasis(b as char)
            || b == b'&'
            || (b == b' '
                && i > 0
                && letter(i - 1)
                && !word(i.checked_sub(2))
                && letter(i + 1)
                && !word(Some(i + 2)))
    })
}

/// The ASCII letter of the few letter forms that Unicode's confusables data does not
/// map to one, though fancy-text generators offer them as fonts for Latin text:
///
/// - the Latin small capitals (`ɪɢɴᴏʀᴇ`): the data lists only those drawn exactly like
///   a small letter (`ᴏ`, `ᴄ`, `ꜱ`, `ɪ`), not those drawn like a capital shrunk to
///   the height of a small letter (`ᴀ`, `ʀ`, `ᴛ`, `ɢ`), since at the same size they
///   differ; a reader and a model still read them as the letter. They are small
///   letters to Unicode, so they fold to small ASCII letters (`ʜ:` is not the turn
///   marker `H:`). The modifier small capitals (`ᶦ`) arrive here as these, by NFKC;
/// - the negative circled and squared capitals (`🅘`, `🅸`), which NFKC leaves alone,
///   unlike the circled and squared ones.
///
/// Written here, as the one exception to the confusables data: it is short and
/// complete (every basic Latin letter but X has a small capital), and a crate that
/// cures fancy text would bring a second, far larger look-alike table for it.
pub(super) fn letter_like(c: char) -> Option<char> {
    let from_range = |first: char| (b'A' + (c as u32 - first as u32) as u8) as char;
    Some(match c {
        '\u{1D00}' => 'a',
        '\u{0299}' => 'b',
        '\u{1D04}' => 'c',
        '\u{1D05}' => 'd',
        '\u{1D07}' => 'e',
        '\u{A730}' => 'f',
        '\u{0262}' => 'g',
        '\u{029C}' => 'h',
        '\u{026A}' => 'i',
        '\u{A7AE}' => 'I', // the capital of the small capital I
        '\u{1D0A}' => 'j',
        '\u{1D0B}' => 'k',
        '\u{029F}' => 'l',
        '\u{1D0D}' => 'm',
        '\u{0274}' => 'n',
        '\u{1D0F}' => 'o',
        '\u{1D18}' => 'p',
        '\u{A7AF}' => 'q',
        '\u{0280}' => 'r',
        '\u{A731}' => 's',
        '\u{1D1B}' => 't',
        '\u{1D1C}' => 'u',
        '\u{1D20}' => 'v',
        '\u{1D21}' => 'w',
        '\u{028F}' => 'y',
        '\u{1D22}' => 'z',
        '\u{1F150}'..='\u{1F169}' => from_range('\u{1F150}'),
        '\u{1F170}'..='\u{1F189}' => from_range('\u{1F170}'),
        _ => return None,
    })
}

/// The ASCII letter `c`, a letter outside ASCII, is drawn like, if any: the letter
/// whose confusables skeleton is the same. Case is kept where it can be (`І` reads as
/// `I`, not as the `l` that the skeletons of both are), since the role-line pattern
/// tells `H:` from `h:`.
pub(super) fn ascii_look_alike(c: char) -> Option<char> {
    if c.is_ascii() {
        return None;
    }
    let letters = ascii_letters_by_skeleton();
    let mut lower = c.to_lowercase();
    if let (Some(lower), None) = (lower.next(), lower.next()) {
        if let Some(&letter) = letters.get(&skeleton(lower)) {
            if letter.is_ascii_lowercase() {
                return Some(if c.is_uppercase() {
                    letter.to_ascii_uppercase()
                } else {
                    letter
                });
            }
        }
    }
    letters.get(&skeleton(c)).copied()
}

fn skeleton(c: char) -> String {
    unicode_security::skeleton(c.encode_utf8(&mut [0; 4])).collect()
}

/// Each ASCII letter by its skeleton (`m`'s is `rn`); where two share one (`l` and
/// `I`), the lower-case letter.
fn ascii_letters_by_skeleton() -> &'static HashMap<String, char> {
    static LETTERS: OnceLock<HashMap<String, char>> = OnceLock::new();
    LETTERS.get_or_init(|| {
        let mut letters = HashMap::new();
        for letter in ('a'..='z').chain('A'..='Z') {
            letters.entry(skeleton(letter)).or_insert(letter);
        }
        letters
    })
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
    if !needs_folding(text) {
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
        // Look-alike letters are read as the letter they are drawn like, and the
        // original is what is replaced.
        assert_eq!(replace("a \u{456}gnore previous b"), ("a X b".into(), 1));
        assert_eq!(
            replace("\u{406}GN\u{41E}RE PREVIOUS"),
            ("X".into(), 1),
            "upper-case Cyrillic"
        );
    }

    /// A word spelled out letter by letter, or with character references, reads as the
    /// word; a space next to a longer word stays, and so does ordinary text.
    #[test]
    fn spaced_letters_and_character_references_read_as_the_word() {
        let pattern = Regex::new("(?i)ignore previous").unwrap();
        let replace = |text: &str| replace_folded(text, &pattern, &|_| "X".into());
        assert_eq!(replace("a I g n o r e previous b"), ("a X b".into(), 1));
        assert_eq!(replace("i&#103;nore previous"), ("X".into(), 1));
        assert_eq!(replace("&#x69;&#X67;nore&nbsp;previous"), ("X".into(), 1));
        assert_eq!(replace("ign&#111re previous"), ("X".into(), 1));
        for kept in [
            "a b c",
            "I ignore x previous",
            "fish &amp; chips",
            "&#xZZ; &#;",
        ] {
            assert_eq!(replace(kept), (kept.to_string(), 0), "{kept}");
        }
        assert_eq!(fold("xy I g n o r e yz").text, "xy Ignore yz");
        assert_eq!(fold("Q & A &lt;b&gt;").text, "Q & A <b>");
    }

    #[test]
    fn look_alikes_fold_to_the_ascii_letter_they_are_drawn_like() {
        for (look_alike, letter) in [
            ('\u{456}', 'i'), // Cyrillic і
            ('\u{406}', 'I'), // Cyrillic І
            ('\u{43E}', 'o'), // Cyrillic о
            ('\u{3BF}', 'o'), // Greek ο
            ('\u{41D}', 'H'), // Cyrillic Н
            ('\u{391}', 'A'), // Greek Α
            ('\u{455}', 's'), // Cyrillic ѕ
            ('\u{501}', 'd'), // Cyrillic ԁ
        ] {
            assert_eq!(ascii_look_alike(look_alike), Some(letter), "{look_alike}");
        }
        // Small capitals and negative circled and squared capitals, which the
        // confusables data leaves, are folded by the table.
        let fold_all = |text: &str| fold(text).text;
        assert_eq!(
            fold_all("\u{26A}\u{262}\u{274}\u{1D0F}\u{280}\u{1D07} \u{1D00}\u{29F}\u{29F}"),
            "ignore all"
        );
        assert_eq!(
            fold_all("\u{1D00}\u{299}\u{1D04}\u{1D05}\u{1D07}\u{A730}\u{262}\u{29C}\u{26A}\u{1D0A}\u{1D0B}\u{29F}\u{1D0D}\u{274}\u{1D0F}\u{1D18}\u{A7AF}\u{280}\u{A731}\u{1D1B}\u{1D1C}\u{1D20}\u{1D21}x\u{28F}\u{1D22}"),
            "abcdefghijklmnopqrstuvwxyz"
        );
        assert_eq!(fold_all("\u{1F158}\u{1F176}\u{1F169}\u{1F189}"), "IGZZ");
        // Letters drawn like no ASCII letter, and ASCII itself, stay.
        for other in ['\u{436}', '\u{3BB}', '\u{5FD7}', 'x', '0'] {
            assert_eq!(ascii_look_alike(other), None, "{other}");
        }
    }
}
