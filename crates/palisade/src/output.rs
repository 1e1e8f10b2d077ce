//! How commands print: aligned tables and short times for people, JSON for scripts.
//!
//! Everything a command prints goes through here so that text which did not come from
//! the person at the keyboard (approval titles and request paths are chosen by agents)
//! cannot smuggle terminal escape sequences or fake extra lines onto their screen.

use serde::Serialize;
use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

/// Writes `text` to stdout in one go.
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// Prints `value` as pretty JSON followed by a newline.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    print(&text)
}

/// Replaces control characters (escape sequences, newlines) and invisible ones (bidi
/// overrides, tag characters, fillers: the sanitizer's list) with visible escapes, so
/// one value stays on one line, cannot restyle the terminal and hides nothing.
pub fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || palisade_policy::sanitize::is_invisible(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// The widest a table cell is shown: longer values (a 2,000-character path an agent
/// sent) keep their start and end around `…`, so one row cannot push every other
/// row's columns off the screen. `show` commands and `--json` give values whole.
const MAX_CELL: usize = 80;

/// `cell` cut to [`MAX_CELL`] characters: its start, `…`, its last 15 characters.
fn shorten(cell: String) -> String {
    let count = cell.chars().count();
    if count <= MAX_CELL {
        return cell;
    }
    let tail = 15;
    let head: String = cell.chars().take(MAX_CELL - tail - 1).collect();
    let end: String = cell.chars().skip(count - tail).collect();
    format!("{head}…{end}")
}

/// Columns aligned with two spaces between them; empty cells show as `-`; cells
/// longer than [`MAX_CELL`] are shortened.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        let cells = cells
            .into_iter()
            .map(|cell| {
                if cell.is_empty() {
                    "-".to_string()
                } else {
                    shorten(clean(&cell))
                }
            })
            .collect();
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (index, (cell, width)) in row.iter().zip(&widths).enumerate() {
                if index > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                if index + 1 < row.len() {
                    line.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Key/value lines for `show` commands, keys aligned.
pub struct Details {
    lines: Vec<(&'static str, String)>,
}

impl Details {
    pub fn new() -> Self {
        Details { lines: Vec::new() }
    }
    pub fn field(&mut self, key: &'static str, value: impl AsRef<str>) {
        let value = value.as_ref();
        let value = if value.is_empty() {
            "-".to_string()
        } else {
            clean(value)
        };
        self.lines.push((key, value));
    }
    pub fn render(&self) -> String {
        let width = self.lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (key, value) in &self.lines {
            out.push_str(&format!(
                "{:width$}  {}\n",
                format!("{key}:"),
                value,
                width = width + 1
            ));
        }
        out
    }
}

pub fn now_ms() -> i64 {
    palisade_store::now_ms()
}

/// `2026-05-01T12:00:00Z` (UTC, whole seconds).
pub fn timestamp(ms: i64) -> String {
    let Ok(ms) = u64::try_from(ms) else {
        return ms.to_string();
    };
    let time = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// `3m ago` for past times, `in 2h` for future ones.
pub fn relative(ms: i64) -> String {
    relative_to(ms, now_ms())
}

pub fn relative_to(ms: i64, now: i64) -> String {
    let delta = now - ms;
    let span = short_span(delta.unsigned_abs() / 1000);
    if span == "now" {
        span
    } else if delta >= 0 {
        format!("{span} ago")
    } else {
        format!("in {span}")
    }
}

/// Largest unit, rounded to the nearest: `45s`, `3m`, `2h`, `5d`.
fn short_span(seconds: u64) -> String {
    let nearest = |unit: u64| (seconds + unit / 2) / unit;
    match seconds {
        0 => "now".to_string(),
        1..=59 => format!("{seconds}s"),
        60..=3569 => format!("{}m", nearest(60)),
        3570..=84_599 => format!("{}h", nearest(3600)),
        _ => format!("{}d", nearest(86_400)),
    }
}

/// Absolute and relative together, for `show` commands.
pub fn when(ms: i64) -> String {
    format!("{} ({})", timestamp(ms), relative(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_cells_keep_their_start_and_end() {
        let path = format!("GET example.com/admin/{}/end-of-it", "A".repeat(2000));
        let mut table = Table::new(&["REQUEST", "STATUS"]);
        table.row(vec![path, "403".into()]);
        table.row(vec!["GET example.com/".into(), "200".into()]);
        let text = table.render();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("GET example.com/admin/AAA"), "{text}");
        assert!(lines[1].contains("…"), "{text}");
        assert!(lines[1].contains("AAA/end-of-it  403"), "{text}");
        assert_eq!(lines[1].chars().count(), MAX_CELL + 2 + 3, "{text}");
        let column = |line: &str, text: &str| line[..line.find(text).unwrap()].chars().count();
        assert_eq!(column(lines[2], "200"), column(lines[1], "403"), "{text}");
    }

    #[test]
    fn table_aligns_columns_and_marks_empty_cells() {
        let mut table = Table::new(&["NAME", "HOST"]);
        table.row(vec!["a".into(), "example.com".into()]);
        table.row(vec!["longer".into(), String::new()]);
        assert_eq!(
            table.render(),
            "NAME    HOST\na       example.com\nlonger  -\n"
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(clean("a\nb\u{1b}[31m"), "a\\u{a}b\\u{1b}[31m");
        assert_eq!(clean("x\u{202e}y"), "x\\u{202e}y");
        // Tag characters (text no one sees), Hangul fillers and the blank braille
        // pattern are shown too, as the approval cards' marks show them.
        assert_eq!(clean("e\u{e0041}v"), "e\\u{e0041}v");
        assert_eq!(clean("x\u{3164}\u{2800}y"), "x\\u{3164}\\u{2800}y");
    }

    #[test]
    fn relative_times_read_naturally() {
        assert_eq!(relative_to(1_000, 1_000), "now");
        assert_eq!(relative_to(0, 180_000), "3m ago");
        assert_eq!(relative_to(7_200_000, 0), "in 2h");
        assert_eq!(relative_to(0, 3 * 86_400_000), "3d ago");
        assert_eq!(relative_to(7_199_000, 0), "in 2h");
        assert_eq!(relative_to(0, 3_599_000), "1h ago");
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
    }
}
