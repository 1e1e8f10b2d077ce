//! Slack `chat.postMessage` and its siblings (JSON, form or query arguments): channel
//! and what Slack will show.
//!
//! A message with `blocks` shows the blocks; its `text` is then only the notification
//! fallback, and `attachments` show under either. A card that read `text` first let an
//! agent post "Lunch at noon?" in the notification and a credential in the message. So
//! the card shows the blocks' and attachments' text, with every link's real target next
//! to its label (`<https://evil.example/x|here>` reads `here (https://evil.example/x)`),
//! and the fallback text as well when it says something else.

use super::clean::{one_line, text_lines};
use super::{Recognised, Request, EXCERPT_CHARS, LINE_CHARS, MAX_LINES};
use serde_json::Value;

/// Lines of the notification text when blocks are what the message shows.
const NOTIFICATION_LINES: usize = 3;
/// JSON values looked at in blocks or attachments; a hostile body costs no more.
const MAX_NODES: usize = 500;

pub(super) fn post(request: &Request<'_>, api_method: &str) -> Option<Recognised> {
    let verb = match api_method {
        "chat.postMessage" => "Post to Slack",
        "chat.postEphemeral" => "Post a private Slack message",
        "chat.scheduleMessage" => "Schedule a Slack message",
        "chat.update" => "Edit a Slack message",
        _ => return None,
    };
    let params = request.params().with_query(request.query);
    let channel = params
        .get("channel")
        .map(|c| one_line(&c, 80))
        .unwrap_or_else(|| String::from("(no channel)"));
    let text = params
        .get("text")
        .filter(|t| !t.trim().is_empty())
        .map(|t| with_link_targets(&t));
    let mut budget = Budget {
        left: MAX_NODES,
        cut: false,
    };
    let blocks_given = params.get_json("blocks");
    // Blocks Slack will show, whether or not the card can read text from them.
    let has_blocks = blocks_given.as_ref().is_some_and(|blocks| {
        !matches!(blocks, Value::Null) && blocks != &Value::Array(Vec::new())
    });
    let blocks = blocks_given
        .map(|blocks| rendered(&blocks, &mut budget))
        .filter(|shown| !shown.trim().is_empty());
    let attachments = params
        .get_json("attachments")
        .map(|attachments| rendered_attachments(&attachments, &mut budget))
        .filter(|shown| !shown.trim().is_empty());
    // With blocks, Slack shows them and not `text`, even blocks the card could read
    // nothing from; attachments go under either.
    let body = match has_blocks {
        true => blocks.as_ref(),
        false => text.as_ref(),
    };
    let shown: Vec<&str> = body
        .into_iter()
        .chain(attachments.as_ref())
        .map(String::as_str)
        .collect();
    let shown = (!shown.is_empty()).then(|| shown.join("\n"));
    // With blocks, `text` is only what a notification says.
    let notification = text
        .as_ref()
        .filter(|text| has_blocks && blocks.as_ref() != Some(*text));
    let preview = shown
        .as_deref()
        .map(|t| one_line(t, 80))
        .unwrap_or_default();
    let title = if preview.is_empty() {
        format!("{verb} in {channel}")
    } else {
        format!("{verb} in {channel}: \"{preview}\"")
    };
    let mut lines = Vec::new();
    if budget.cut {
        lines.push(format!(
            "⚠ The blocks or attachments have more parts than a card reads ({MAX_NODES}); those beyond are not shown here, and Slack shows them all"
        ));
    } else if has_blocks && blocks.is_none() {
        lines.push(String::from(
            "⚠ The message has blocks the card reads no text from; Slack shows them, not the text below",
        ));
    }
    if let Some(user) = params.get("user") {
        lines.push(format!("Visible only to: {}", one_line(&user, 80)));
    }
    if let Some(thread) = params.get("thread_ts") {
        lines.push(format!("In thread: {}", one_line(&thread, 40)));
    }
    if let Some(post_at) = params.get("post_at") {
        lines.push(format!("At (Unix time): {}", one_line(&post_at, 40)));
    }
    if let Some(name) = params.get("username") {
        lines.push(format!("Posting as: {}", one_line(&name, 80)));
    }
    if let Some(notification) = notification {
        lines.push(String::from(
            "Notification text (Slack shows it in notifications, not in the message):",
        ));
        lines.extend(text_lines(
            notification,
            NOTIFICATION_LINES,
            LINE_CHARS,
            LINE_CHARS,
        ));
    }
    if let Some(shown) = shown {
        lines.push(String::new());
        lines.extend(text_lines(
            &shown,
            MAX_LINES.saturating_sub(lines.len()),
            LINE_CHARS,
            EXCERPT_CHARS,
        ));
    }
    Some(params.flag(title, lines))
}

/// The JSON values left to look at, and whether some were not looked at for want of
/// them (the card then says so).
struct Budget {
    left: usize,
    cut: bool,
}

/// Keys under which Block Kit and attachments carry text a person sees.
const TEXT_KEYS: &[&str] = &["text", "pretext", "title", "value", "author_name", "footer"];
/// Keys under which they carry a link or an image address.
const LINK_KEYS: &[&str] = &["url", "title_link", "author_link", "image_url", "thumb_url"];

/// The text of Block Kit blocks (or of anything shaped like them): every string under a
/// text key, with link targets, one piece a line; a rich-text section's pieces on one
/// line, as Slack shows them; every link or image address.
fn rendered(value: &Value, budget: &mut Budget) -> String {
    let mut out = Vec::new();
    collect(value, &mut out, budget);
    out.join("\n")
}

fn collect(value: &Value, out: &mut Vec<String>, budget: &mut Budget) {
    if budget.left == 0 {
        budget.cut = true;
        return;
    }
    budget.left -= 1;
    match value {
        Value::Array(items) => items.iter().for_each(|item| collect(item, out, budget)),
        Value::Object(fields) => {
            let kind = fields.get("type").and_then(Value::as_str).unwrap_or("");
            if kind.starts_with("rich_text_") && kind != "rich_text_list" {
                if let Some(Value::Array(elements)) = fields.get("elements") {
                    let line: String = elements
                        .iter()
                        .take(budget.left)
                        .map(inline_element)
                        .collect();
                    budget.cut |= elements.len() > budget.left;
                    budget.left = budget.left.saturating_sub(elements.len());
                    out.push(line);
                    return;
                }
            }
            for (key, field) in fields {
                match field {
                    Value::String(text) if TEXT_KEYS.contains(&key.as_str()) => {
                        out.push(with_link_targets(text))
                    }
                    Value::String(url) if LINK_KEYS.contains(&key.as_str()) => {
                        out.push(format!("Link: {url}"))
                    }
                    other => collect(other, out, budget),
                }
            }
        }
        _ => {}
    }
}

/// One element of a rich-text section as Slack shows it inline.
fn inline_element(element: &Value) -> String {
    let field = |name: &str| element.get(name).and_then(Value::as_str).unwrap_or("");
    match field("type") {
        "link" if field("text").is_empty() => field("url").to_string(),
        "link" => format!("{} ({})", field("text"), field("url")),
        "user" => format!("@{}", field("user_id")),
        "channel" => format!("#{}", field("channel_id")),
        "usergroup" => format!("@{}", field("usergroup_id")),
        "emoji" => format!(":{}:", field("name")),
        "broadcast" => format!("@{}", field("range")),
        _ => field("text").to_string(),
    }
}

/// Legacy attachments in the order Slack shows their parts, each after a line naming
/// it; their `fallback` too, since some clients show only that.
fn rendered_attachments(attachments: &Value, budget: &mut Budget) -> String {
    let Value::Array(items) = attachments else {
        return rendered(attachments, budget);
    };
    let mut out = Vec::new();
    for (index, item) in items.iter().enumerate() {
        if budget.left == 0 {
            budget.cut = true;
            break;
        }
        out.push(format!("Attachment {}:", index + 1));
        let Value::Object(fields) = item else {
            out.push(rendered(item, budget));
            continue;
        };
        for key in [
            "pretext",
            "author_name",
            "author_link",
            "title",
            "title_link",
            "text",
            "fields",
            "image_url",
            "thumb_url",
            "blocks",
            "actions",
            "footer",
        ] {
            if let Some(value) = fields.get(key) {
                let mut single = serde_json::Map::new();
                single.insert(key.to_string(), value.clone());
                let shown = rendered(&Value::Object(single), budget);
                if !shown.is_empty() {
                    out.push(shown);
                }
            }
        }
        if let Some(fallback) = fields.get("fallback").and_then(Value::as_str) {
            out.push(format!("Fallback: {}", with_link_targets(fallback)));
        }
    }
    out.join("\n")
}

/// Slack's `<https://target|label>` as `label (https://target)` and `<https://target>` as
/// the target, so a person sees where a link goes; mentions (`<@U1>`) are left as they are.
fn with_link_targets(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('>') else {
            out.push_str(&rest[open..]);
            return out;
        };
        let inside = &after[..close];
        let (target, label) = inside.split_once('|').unwrap_or((inside, ""));
        let is_link = target.contains("://") || target.starts_with("mailto:");
        if !is_link {
            out.push('<');
            out.push_str(inside);
            out.push('>');
        } else if label.is_empty() {
            out.push_str(target);
        } else {
            out.push_str(&format!("{label} ({target})"));
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}
