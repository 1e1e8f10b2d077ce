//! Slack `chat.postMessage` and its siblings (JSON, form or query arguments): channel
//! and text, or the visible text of Block Kit blocks.

use super::clean::{one_line, text_lines};
use super::{repeated, Recognised, Request, EXCERPT_CHARS, LINE_CHARS, MAX_LINES};

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
        .or_else(|| params.get_json("blocks").map(|blocks| block_text(&blocks)));
    let preview = text.as_deref().map(|t| one_line(t, 80)).unwrap_or_default();
    let title = if preview.is_empty() {
        format!("{verb} in {channel}")
    } else {
        format!("{verb} in {channel}: \"{preview}\"")
    };
    let mut lines = Vec::new();
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
    if let Some(text) = text {
        lines.push(String::new());
        lines.extend(text_lines(
            &text,
            MAX_LINES.saturating_sub(lines.len()),
            LINE_CHARS,
            EXCERPT_CHARS,
        ));
    }
    Some(repeated::flag(title, lines, &params.repeated()))
}

/// The visible text of Slack Block Kit blocks: every string under a `text` key.
fn block_text(blocks: &serde_json::Value) -> String {
    fn collect(value: &serde_json::Value, out: &mut Vec<String>, budget: &mut usize) {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        match value {
            serde_json::Value::Array(items) => {
                items.iter().for_each(|item| collect(item, out, budget))
            }
            serde_json::Value::Object(fields) => {
                for (key, field) in fields {
                    match field {
                        serde_json::Value::String(text) if key == "text" => out.push(text.clone()),
                        other => collect(other, out, budget),
                    }
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    let mut budget = 500;
    collect(blocks, &mut out, &mut budget);
    out.join("\n")
}
