//! Gmail `messages.send` (JSON with a base64url RFC 822 `raw`, or a media upload of the
//! message itself): recipients, subject, attachment names and a text excerpt.

use super::clean::{one_line, text_lines};
use super::repeated::{self, Repeated};
use super::{mail, Recognised, Request, EXCERPT_CHARS, LINE_CHARS, MAX_LINES, RAW_MAIL_BYTES};

/// The To line with every address (cards allow 2 000 characters or more in all).
const ALL_RECIPIENTS_CHARS: usize = 1000;
/// Different messages in a repeated `raw` member that are decoded to be described.
const MAX_RAW_MESSAGES: usize = 8;

pub(super) fn send(request: &Request<'_>, upload: bool) -> Option<Recognised> {
    let content_type = request.content_type().to_ascii_lowercase();
    let mut repeats = Vec::new();
    let message_bytes = if upload && content_type.starts_with("message/rfc822") {
        request.body.to_vec()
    } else {
        // A repeated `raw` is two messages in one request: the card summarises the
        // last copy (the one a JSON parser keeps) and describes every one in its warning.
        let params = request.params();
        let raws = params.values("raw");
        if raws.len() > 1 {
            repeats.push(Repeated {
                name: String::from("raw (the message)"),
                values: describe_messages(&raws),
            });
        }
        decode_raw(&params.get("raw")?)?
    };
    let message = mail::Part::parse(&message_bytes);
    let to = addresses(&message, "to").map(|(to, _)| to);
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
    let to_text = to
        .as_deref()
        .map(|to| one_line(to, 120))
        .unwrap_or_else(|| String::from("(no recipient in To)"));
    // A long To list must not hide a recipient past the title's cut: every address is
    // on a line of its own below, and how many there are is in the title.
    let to_full = to.as_deref().map(|to| one_line(to, ALL_RECIPIENTS_CHARS));
    let addresses_in_to = to.as_deref().map_or(0, |to| to.matches('@').count());
    let to_text = match &to_full {
        Some(full) if full.chars().count() > to_text.chars().count() || addresses_in_to > 1 => {
            format!("{to_text} ({addresses_in_to} addresses)")
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
    if let Some(full) = to_full.filter(|_| addresses_in_to > 1) {
        // Lines are capped at LINE_CHARS: the list goes on over as many as it needs.
        let mut line = format!("To (all {addresses_in_to}):");
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
        match addresses(&message, name) {
            Some((value, 1)) => lines.push(format!("{label}: {}", one_line(&value, LINE_CHARS))),
            Some((value, header_lines)) => lines.push(format!(
                "{label} ({header_lines} header lines): {}",
                one_line(&value, LINE_CHARS)
            )),
            None => {}
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
    let (mut title, mut lines) = repeated::flag(title, lines, &repeats);
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

/// Every header of an address field (To, Cc, Bcc, From, Reply-To) as one list, and
/// how many header lines it came from: a second `Bcc:` line adds recipients, so all
/// are shown, not only the first line's.
fn addresses(message: &mail::Part<'_>, name: &str) -> Option<(String, usize)> {
    let values = message.header_values(name);
    if values.is_empty() {
        return None;
    }
    Some((values.join(", "), values.len()))
}

fn decode_raw(raw: &str) -> Option<Vec<u8>> {
    let raw = raw.as_bytes();
    mail::decode_base64_lenient(&raw[..raw.len().min(RAW_MAIL_BYTES)])
}

/// `To …, Subject …` of each message (the last [`MAX_RAW_MESSAGES`] of them).
fn describe_messages(raws: &[String]) -> Vec<String> {
    let skipped = raws.len().saturating_sub(MAX_RAW_MESSAGES);
    let mut described = Vec::new();
    if skipped > 0 {
        described.push(format!("({skipped} earlier messages not described)"));
    }
    for raw in &raws[skipped..] {
        described.push(match decode_raw(raw) {
            Some(bytes) => {
                let message = mail::Part::parse(&bytes);
                let to = message.header_values("to").join(", ");
                let subject = message.header_values("subject").join(" / ");
                format!("To {to}, Subject {subject}")
            }
            None => String::from("(not base64)"),
        });
    }
    described
}
