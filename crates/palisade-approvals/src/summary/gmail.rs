//! Gmail `messages.send` (JSON with a base64url RFC 822 `raw`, or a media upload of the
//! message itself): recipients, subject, attachment names and a text excerpt.

use super::clean::{one_line, text_lines};
use super::{mail, Recognised, Request, EXCERPT_CHARS, LINE_CHARS, MAX_LINES, RAW_MAIL_BYTES};

/// The To line with every address (cards allow 2 000 characters or more in all).
const ALL_RECIPIENTS_CHARS: usize = 1000;

pub(super) fn send(request: &Request<'_>, upload: bool) -> Option<Recognised> {
    let content_type = request.content_type().to_ascii_lowercase();
    let message_bytes = if upload && content_type.starts_with("message/rfc822") {
        request.body.to_vec()
    } else {
        let raw = request.params().get("raw")?;
        let raw = raw.as_bytes();
        mail::decode_base64_lenient(&raw[..raw.len().min(RAW_MAIL_BYTES)])?
    };
    let message = mail::Part::parse(&message_bytes);
    let to = message.header("to");
    let subject = message.header("subject");
    let to_text = to
        .as_deref()
        .map(|to| one_line(to, 120))
        .unwrap_or_else(|| String::from("(no recipient in To)"));
    // A long To list must not hide a recipient past the title's cut: every address is
    // on a line of its own below, and how many there are is in the title.
    let to_full = to.as_deref().map(|to| one_line(to, ALL_RECIPIENTS_CHARS));
    let addresses = to.as_deref().map_or(0, |to| to.matches('@').count());
    let to_text = match &to_full {
        Some(full) if full.chars().count() > to_text.chars().count() || addresses > 1 => {
            format!("{to_text} ({addresses} addresses)")
        }
        _ => to_text,
    };
    let subject_text = subject
        .as_deref()
        .map(|s| one_line(s, 100))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| String::from("(no subject)"));
    let title = format!("Send e-mail to {to_text}: \"{subject_text}\"");
    let mut lines = Vec::new();
    if let Some(full) = to_full.filter(|_| addresses > 1) {
        // Lines are capped at LINE_CHARS: the list goes on over as many as it needs.
        let mut line = format!("To (all {addresses}):");
        for address in full.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            if line.chars().count() + address.chars().count() + 2 > LINE_CHARS {
                lines.push(line);
                line = String::from("To (continued):");
            }
            line.push(' ');
            line.push_str(address);
            line.push(',');
        }
        line.pop();
        lines.push(line);
    }
    for (name, label) in [
        ("from", "From"),
        ("cc", "Cc"),
        ("bcc", "Bcc"),
        ("reply-to", "Reply-To"),
    ] {
        if let Some(value) = message.header(name) {
            lines.push(format!("{label}: {}", one_line(&value, LINE_CHARS)));
        }
    }
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
    match content.text {
        Some(text) => {
            lines.push(String::new());
            lines.extend(text_lines(
                &text,
                MAX_LINES.saturating_sub(lines.len()),
                LINE_CHARS,
                EXCERPT_CHARS,
            ));
        }
        None => lines.push(String::from("(no readable text body)")),
    }
    Some((title, lines))
}
