//! `multipart/form-data` bodies (RFC 7578), read field by field.
//!
//! Slack and Stripe take their arguments as multipart form parts as readily as in a
//! URL-encoded form. Read as a URL-encoded form instead, the raw parts gave whatever
//! `&channel=…&` a part's text carried, while the service reads the parts' names: a
//! card said one channel and the message went to another. So the parts are split at
//! the boundary the Content-Type names, and each part's `name` from its
//! `Content-Disposition` is a field with the part's text as value (a file part's value
//! is its file name, marked as a file). A body that does not read as multipart gives
//! no fields, and the caller warns.
//!
//! Written here: the crates that parse multipart (`multer`, `multipart`) are streaming
//! servers' readers; a card needs the few text fields of a body already in memory.

use serde_json::Value;

/// Longest boundary RFC 2046 allows.
const MAX_BOUNDARY: usize = 70;

/// Whether `content_type` is `multipart/form-data`, whatever its parameters.
pub(crate) fn is_form_data(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("multipart/form-data"))
}

/// The fields of `body`, if `content_type` is `multipart/form-data` with a boundary and
/// the body reads as such; at most `max_parts`.
pub(crate) fn form_fields(
    content_type: &str,
    body: &[u8],
    max_parts: usize,
) -> Option<Vec<(String, Value)>> {
    let boundary = boundary(content_type)?;
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let mut at = find(body, delimiter, 0)?;
    let mut fields = Vec::new();
    loop {
        let after = at + delimiter.len();
        let rest = body.get(after..)?;
        if rest.starts_with(b"--") {
            return Some(fields);
        }
        let headers_start = after + line_end(rest)?;
        let (headers, content_start) = part_headers(body, headers_start)?;
        let next = find_delimiter(body, delimiter, content_start)?;
        let content = &body[content_start..next.content_end];
        if fields.len() == max_parts {
            return Some(fields);
        }
        match disposition(&headers) {
            Disposition::Field(name, file) => {
                let value = match file {
                    Some(file) => format!("[file {file}]"),
                    None => String::from_utf8_lossy(content).into_owned(),
                };
                fields.push((name, Value::String(value)));
            }
            Disposition::None => {}
            // Readers differ on which name counts: the body is not read as one.
            Disposition::Ambiguous => return None,
        }
        at = next.at;
    }
}

/// The `boundary` parameter of a `multipart/form-data` Content-Type.
fn boundary(content_type: &str) -> Option<String> {
    if !is_form_data(content_type) {
        return None;
    }
    content_type.split(';').skip(1).find_map(|parameter| {
        let (name, value) = parameter.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let value = value.trim().trim_matches('"');
        (!value.is_empty() && value.len() <= MAX_BOUNDARY).then(|| value.to_string())
    })
}

/// Where `needle` first is in `haystack` at or after `from`.
fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|found| from + found)
}

/// Bytes up to and including the line break that ends the delimiter line (transport
/// padding before it allowed).
fn line_end(rest: &[u8]) -> Option<usize> {
    let newline = rest.iter().position(|&b| b == b'\n')?;
    rest[..newline]
        .iter()
        .all(|&b| b == b' ' || b == b'\t' || b == b'\r')
        .then_some(newline + 1)
}

/// A part's header lines (unfolded, as text) and where its content starts.
fn part_headers(body: &[u8], start: usize) -> Option<(Vec<String>, usize)> {
    let mut headers = Vec::new();
    let mut at = start;
    loop {
        let rest = body.get(at..)?;
        let newline = rest.iter().position(|&b| b == b'\n')?;
        let line = String::from_utf8_lossy(&rest[..newline]);
        let line = line.trim_end_matches('\r');
        at += newline + 1;
        if line.is_empty() {
            return Some((headers, at));
        }
        match headers.last_mut() {
            Some(last) if line.starts_with([' ', '\t']) => {
                last.push(' ');
                last.push_str(line.trim());
            }
            _ => headers.push(line.to_string()),
        }
        if headers.len() > 64 {
            return None;
        }
    }
}

/// The next delimiter after a part's content, and where the content ends (before the
/// line break that belongs to the delimiter).
struct Next {
    at: usize,
    content_end: usize,
}

fn find_delimiter(body: &[u8], delimiter: &[u8], from: usize) -> Option<Next> {
    let mut search = from;
    loop {
        let at = find(body, delimiter, search)?;
        // A delimiter starts a line: it follows a line break (or is at the content's start).
        if at == from || body.get(at - 1) == Some(&b'\n') {
            let mut content_end = at;
            if content_end > from && body[content_end - 1] == b'\n' {
                content_end -= 1;
                if content_end > from && body[content_end - 1] == b'\r' {
                    content_end -= 1;
                }
            }
            return Some(Next { at, content_end });
        }
        search = at + 1;
    }
}

/// What a part's `Content-Disposition` says it is.
enum Disposition {
    /// A form field: its name, and the file name when the part is a file.
    Field(String, Option<String>),
    /// Not a form field (no `form-data` disposition, or no name).
    None,
    /// Two dispositions, or two names (`name` twice, `name*`): readers differ on which
    /// counts.
    Ambiguous,
}

fn disposition(headers: &[String]) -> Disposition {
    let dispositions: Vec<&str> = headers
        .iter()
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-disposition")
                .then_some(value)
        })
        .collect();
    let header = match dispositions.as_slice() {
        [] => return Disposition::None,
        [one] => *one,
        _ => return Disposition::Ambiguous,
    };
    let mut parts = header.split(';');
    if !parts
        .next()
        .is_some_and(|kind| kind.trim().eq_ignore_ascii_case("form-data"))
    {
        return Disposition::None;
    }
    let mut names = Vec::new();
    let mut file = None;
    for parameter in parts {
        let Some((key, value)) = parameter.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"').to_string();
        match key.trim().to_ascii_lowercase().as_str() {
            "name" | "name*" => names.push(value),
            "filename" => file = Some(value),
            _ => {}
        }
    }
    match names.len() {
        0 => Disposition::None,
        1 => Disposition::Field(names.remove(0), file),
        _ => Disposition::Ambiguous,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_fields_by_their_names() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n&channel=C_GENERAL&\r\n--XyZ\r\nContent-Disposition: form-data; name=\"channel\"\r\n\r\nC_EVIL\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nline one\r\n--XyZ--\r\n";
        let fields = form_fields("multipart/form-data; boundary=XyZ", body, 100).unwrap();
        let names: Vec<&str> = fields.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["x", "channel", "file"]);
        assert_eq!(fields[1].1, "C_EVIL");
        assert_eq!(fields[2].1, "[file a.txt]");
        assert_eq!(
            form_fields("multipart/form-data; boundary=\"XyZ\"", body, 1).map(|f| f.len()),
            Some(1)
        );
        assert!(form_fields("multipart/form-data; boundary=Other", body, 100).is_none());
        // Two names for one part, or two dispositions: which one a reader takes differs.
        for twice in [
            &b"--XyZ\r\nContent-Disposition: form-data; name=\"x\"; name=\"channel\"\r\n\r\nC_EVIL\r\n--XyZ--\r\n"[..],
            b"--XyZ\r\nContent-Disposition: form-data; name=\"x\"; name*=utf-8''channel\r\n\r\nC_EVIL\r\n--XyZ--\r\n",
            b"--XyZ\r\nContent-Disposition: form-data; name=\"x\"\r\nContent-Disposition: form-data; name=\"channel\"\r\n\r\nC_EVIL\r\n--XyZ--\r\n",
        ] {
            assert!(
                form_fields("multipart/form-data; boundary=XyZ", twice, 100).is_none(),
                "{}",
                String::from_utf8_lossy(twice)
            );
        }
        assert!(form_fields("multipart/form-data", body, 100).is_none());
        assert!(form_fields("text/plain", body, 100).is_none());
    }
}
