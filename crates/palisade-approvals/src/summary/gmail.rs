//! Gmail `messages.send`: JSON with a base64url RFC 822 `raw`, or an upload of the
//! message itself (`uploadType=media` with a `message/rfc822` body, `multipart` with JSON
//! metadata and then the message, or the data of a resumable upload). The card shows
//! recipients (every address, or every domain when they do not all fit, see
//! `recipients.rs`), subject, attachment names and a text excerpt: the plain text, and
//! the HTML's text before it when the two say different things (see `mail.rs`, which
//! also says which versions and parts of a message a mail client shows).

use super::clean::{one_line, text_lines};
use super::params::Params;
use super::recipients::{self, AddressField};
use super::repeated::{self, Repeated};
use super::{mail, Recognised, Request, EXCERPT_CHARS, LINE_CHARS, MAX_LINES, RAW_MAIL_BYTES};

/// Characters of the To list in the title; the lines show every address.
const TITLE_TO_CHARS: usize = 120;
/// Different messages in a repeated `raw` member that are decoded to be described.
const MAX_RAW_MESSAGES: usize = 8;

pub(super) fn send(request: &Request<'_>, upload: bool) -> Option<Recognised> {
    let mut repeats = Vec::new();
    let params = request.params();
    let message_bytes = if upload {
        uploaded_message(request, &params, &mut repeats)?
    } else {
        raw_message(&params, &mut repeats)?
    };
    let message = mail::Part::parse(&message_bytes);
    let to_values = message.raw_header_values("to");
    let mut subjects = message.header_values("subject");
    let mut seen = std::collections::HashSet::new();
    subjects.retain(|subject| seen.insert(subject.clone()));
    if subjects.len() > 1 {
        repeats.push(Repeated {
            name: String::from("Subject"),
            values: subjects.clone(),
        });
    }
    let subject = subjects.into_iter().next();
    // A long To list must not hide a recipient past the title's cut: the lines below
    // show every address (or every domain), and the title says how many there are.
    let to = AddressField::new("To", &to_values);
    // As the lines show them: a display name that looks like an address is marked. A
    // long name is shortened there, so the header as written also counts as cut.
    let to_whole = one_line(&to.written(), usize::MAX);
    let to_text = one_line(&to_whole, TITLE_TO_CHARS);
    let shown_chars = to_text.chars().count();
    let title_cut = shown_chars < to_whole.chars().count()
        || shown_chars
            < one_line(&message.header_values("to").join(", "), usize::MAX)
                .chars()
                .count();
    let to_text = if to_values.is_empty() {
        String::from("(no recipient in To)")
    } else if title_cut && to.domain_count() > 1 {
        format!(
            "{to_text} ({} addresses at {} domains)",
            to.count(),
            to.domain_count()
        )
    } else if title_cut || to.count() > 1 {
        let count = to.count();
        format!(
            "{to_text} ({count} address{})",
            if count == 1 { "" } else { "es" }
        )
    } else {
        to_text
    };
    let subject_text = subject
        .as_deref()
        .map(|s| one_line(s, 100))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| String::from("(no subject)"));
    let title = format!("Send e-mail to {to_text}: \"{subject_text}\"");
    let mut fields = Vec::new();
    if title_cut || to.count() > 1 {
        fields.push(to);
    }
    for (name, label) in [
        ("from", "From"),
        ("cc", "Cc"),
        ("bcc", "Bcc"),
        ("reply-to", "Reply-To"),
    ] {
        fields.push(AddressField::new(label, &message.raw_header_values(name)));
    }
    let (mut lines, domains_left_out) = recipients::lines(&fields);
    let content = mail::content(&message);
    if !content.attachments.is_empty() {
        let names: Vec<String> = content
            .attachments
            .iter()
            .take(10)
            .map(|name| one_line(name, 80))
            .collect();
        lines.push(format!("Attachments: {}", names.join(", ")));
    }
    if content.other_versions > 0 {
        let count = content.other_versions;
        lines.push(format!(
            "⚠ {count} other version{} of the message (multipart/alternative) say{} something else; a client that cannot display the one shown here shows {}.",
            if count == 1 { "" } else { "s" },
            if count == 1 { "s" } else { "" },
            if count == 1 { "it" } else { "one of them" },
        ));
    }
    match (content.text, content.html_text) {
        (Some(plain), Some(html)) => {
            // The HTML first: it is what most recipients see, and padding in the plain
            // text must not push it past the lines a card keeps.
            lines.push(String::new());
            lines.push(String::from(
                "⚠ The message's HTML (what most mail clients show) and plain text say different things. HTML:",
            ));
            let room = MAX_LINES.saturating_sub(lines.len() + 1);
            let html_room = room.div_ceil(2).max(1);
            lines.extend(text_lines(
                html.trim(),
                html_room,
                LINE_CHARS,
                EXCERPT_CHARS / 2,
            ));
            lines.push(String::from("Plain text (what text-only clients show):"));
            lines.extend(text_lines(
                plain.trim(),
                room.saturating_sub(html_room).max(1),
                LINE_CHARS,
                EXCERPT_CHARS / 2,
            ));
        }
        (Some(text), _) => {
            lines.push(String::new());
            lines.extend(text_lines(
                &text,
                MAX_LINES.saturating_sub(lines.len()),
                LINE_CHARS,
                EXCERPT_CHARS,
            ));
        }
        (None, _) => lines.push(String::from("(no readable text body)")),
    }
    let (title, lines) = repeated::flag(title, lines, &repeats);
    let (mut title, mut lines) = params.flag_readings(title, lines);
    if domains_left_out {
        title = format!("⚠ Recipients at more domains than a card can list. {title}");
    }
    if content.parts_not_read {
        title = format!("⚠ Message parts not read (too many or nested too deep). {title}");
        lines.insert(
            0,
            String::from(
                "⚠ The message has more parts, or deeper nesting, than a card reads: text may be missing.",
            ),
        );
    }
    if message.headers_cut {
        title = format!("⚠ Header lines not read (too many or too long). {title}");
        lines.insert(
            0,
            String::from(
                "⚠ The message has more header lines than a card reads: recipients may be missing.",
            ),
        );
    }
    Some((title, lines))
}

/// The message in a JSON or form body's `raw` member. A repeated `raw` is two messages
/// in one request: the card summarises the last copy (the one a JSON parser keeps) and
/// describes every one in its warning.
fn raw_message(params: &Params, repeats: &mut Vec<Repeated>) -> Option<Vec<u8>> {
    let raws = params.values("raw");
    if raws.len() > 1 {
        repeats.push(Repeated {
            name: String::from("raw (the message)"),
            values: describe_messages(raws.iter().map(|raw| decode_raw(raw))),
        });
    }
    decode_raw(&params.get("raw")?)
}

/// The message of an upload to `/upload/gmail/…/send`. A `multipart/related` body is
/// JSON metadata followed by the message; `message/rfc822` (any `message/` type) is the
/// message itself; JSON or a form carries it in `raw` as the plain endpoint does; and
/// anything else is what Gmail will read as the message, so it is summarised as one.
fn uploaded_message(
    request: &Request<'_>,
    params: &Params,
    repeats: &mut Vec<Repeated>,
) -> Option<Vec<u8>> {
    let content_type = request.content_type();
    let lower = content_type.trim_start().to_ascii_lowercase();
    if lower.starts_with("multipart/") {
        return multipart_message(&content_type, request.body, repeats);
    }
    if lower.starts_with("message/") {
        return Some(request.body.to_vec());
    }
    raw_message(params, repeats).or_else(|| Some(request.body.to_vec()))
}

/// The message of a multipart upload: the last part that is not JSON metadata, else
/// the metadata's `raw`. When the upload carries more than one message (two media
/// parts, or a `raw` in the metadata besides the media) all are described in a warning,
/// since which one Gmail sends is not for the card to guess.
fn multipart_message(
    content_type: &str,
    body: &[u8],
    repeats: &mut Vec<Repeated>,
) -> Option<Vec<u8>> {
    let mut messages: Vec<Vec<u8>> = Vec::new();
    let mut from_metadata: Vec<Vec<u8>> = Vec::new();
    for part in mail::multipart_parts(content_type, body) {
        let (mime, _) = part.content_type();
        if mime.contains("json") {
            let metadata = Params::from_body("application/json", &part.decoded_body());
            from_metadata.extend(
                metadata
                    .values("raw")
                    .iter()
                    .filter_map(|raw| decode_raw(raw)),
            );
        } else {
            messages.push(part.decoded_body());
        }
    }
    let mut all = from_metadata;
    all.extend(messages);
    let mut distinct: Vec<Vec<u8>> = Vec::new();
    for message in all {
        if !distinct.contains(&message) {
            distinct.push(message);
        }
    }
    if distinct.len() > 1 {
        repeats.push(Repeated {
            name: String::from("message (upload parts)"),
            values: describe_messages(distinct.iter().map(|m| Some(m.clone()))),
        });
    }
    distinct.pop()
}

fn decode_raw(raw: &str) -> Option<Vec<u8>> {
    let raw = raw.as_bytes();
    mail::decode_base64_lenient(&raw[..raw.len().min(RAW_MAIL_BYTES)])
}

/// `To …, Subject …` of each message (the last [`MAX_RAW_MESSAGES`] of them); `None`
/// for one that could not be decoded.
fn describe_messages(messages: impl ExactSizeIterator<Item = Option<Vec<u8>>>) -> Vec<String> {
    let skipped = messages.len().saturating_sub(MAX_RAW_MESSAGES);
    let mut described = Vec::new();
    if skipped > 0 {
        described.push(format!("({skipped} earlier messages not described)"));
    }
    for message in messages.skip(skipped) {
        described.push(match message {
            Some(bytes) => {
                let message = mail::Part::parse(&bytes);
                let to = AddressField::new("To", &message.raw_header_values("to")).written();
                let subject = message.header_values("subject").join(" / ");
                format!("To {to}, Subject {subject}")
            }
            None => String::from("(not base64)"),
        });
    }
    described
}
