//! The summary of an action an agent asks a person about (`request_approval`): the
//! agent's own words, cleaned and bounded like every other summary, and labelled as
//! the agent's, so a card never presents them as the system's.

use super::clean::{one_line, text_lines, truncate_chars};
use super::{Summary, DETAIL_CHARS, EXCERPT_CHARS, LINE_CHARS, MAX_LINES, TITLE_CHARS};

/// `agent` asks to do `action`; `details` is what it says about it.
pub fn action(agent: &str, action: &str, details: &str) -> Summary {
    let title = one_line(&format!("{agent} asks: {action}"), TITLE_CHARS);
    let lines = if details.trim().is_empty() {
        vec![String::from("(no details given)")]
    } else {
        text_lines(details, MAX_LINES - 1, LINE_CHARS, EXCERPT_CHARS)
    };
    let mut detail = format!(
        "Agent {agent} asks for approval to:\n{}\n\nIn its words:\n",
        one_line(action, TITLE_CHARS)
    );
    detail.push_str(&text_lines(details, 200, LINE_CHARS, DETAIL_CHARS).join("\n"));
    truncate_chars(&mut detail, DETAIL_CHARS);
    Summary {
        title,
        lines,
        detail,
    }
}

/// A message between agents waiting for a person: who sends it to whom, and the text
/// as the receiving agent would get it (already sanitized by the host).
pub fn agent_message(from: &str, to: &str, sanitized: &str, inbound: bool) -> Summary {
    let title = if inbound {
        one_line(&format!("Message for {to} from agent {from}"), TITLE_CHARS)
    } else {
        one_line(&format!("Agent {from} wants to message {to}"), TITLE_CHARS)
    };
    let lines = text_lines(sanitized, MAX_LINES, LINE_CHARS, EXCERPT_CHARS);
    let mut detail = format!(
        "From agent {from} to agent {to}; the text as {to} would receive it (sanitized):\n\n"
    );
    detail.push_str(&text_lines(sanitized, 200, LINE_CHARS, DETAIL_CHARS).join("\n"));
    truncate_chars(&mut detail, DETAIL_CHARS);
    Summary {
        title,
        lines,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agents_words_are_cleaned_and_bounded() {
        let summary = action(
            "mailer",
            "delete\u{202e} the\nbackups",
            &"line\n".repeat(500),
        );
        assert_eq!(summary.title, "mailer asks: delete the backups");
        assert!(summary.lines.len() <= MAX_LINES);
        assert!(summary.detail.chars().count() <= DETAIL_CHARS + 1);
        assert_eq!(action("a", "x", " ").lines, vec!["(no details given)"]);
    }
}
