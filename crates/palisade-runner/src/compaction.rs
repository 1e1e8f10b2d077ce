//! Context compaction: when the history grows past a token threshold, the older turns
//! are summarized by one model call and replaced by that summary (carried in the
//! system prompt), keeping the most recent turns verbatim.
//!
//! Only whole turns are summarized: history is cut where a person's message starts,
//! never between a tool call and its result, so what remains is a valid conversation
//! for either wire format. Token counts are estimated (about four characters a token,
//! the usual rule of thumb for English and code) because the exact count needs a
//! model call of its own; the threshold leaves room for the error.

use crate::message::{ContentBlock, Message, Role};
use crate::provider::truncate;
use crate::tools::ToolDefinition;

/// The instructions for the summary call.
pub(crate) const SUMMARY_SYSTEM: &str = "You condense conversations between a person and \
an AI agent so the agent can continue without the full transcript. Keep: what the person \
asked for and still wants, decisions made, facts learned, files created or changed (with \
paths), commands that mattered and their outcome, open tasks and promises. Drop pleasantries \
and tool output that no longer matters. Write plain text, at most a few hundred words.";

/// Longest text of one block in the transcript given to the summary call.
const MAX_BLOCK_CHARS: usize = 2000;
/// Longest transcript given to the summary call (the end is kept).
const MAX_TRANSCRIPT_CHARS: usize = 200_000;

/// When and how much to compact.
#[derive(Clone, Debug)]
pub struct CompactionConfig {
    /// Compact when the estimated prompt (system, history, tools) exceeds this.
    pub threshold_tokens: usize,
    /// Turns kept verbatim, the current one included (at least 1).
    pub keep_recent_turns: usize,
    /// Output budget of the summary call.
    pub summary_max_tokens: u32,
}

impl Default for CompactionConfig {
    fn default() -> CompactionConfig {
        CompactionConfig {
            // Well below the 200k context of current Claude models, leaving room for
            // the estimate's error and the answer.
            threshold_tokens: 120_000,
            keep_recent_turns: 3,
            summary_max_tokens: 2048,
        }
    }
}

fn block_chars(block: &ContentBlock) -> usize {
    match block {
        ContentBlock::Text { text } => text.len(),
        ContentBlock::ToolUse { name, input, .. } => name.len() + input.to_string().len() + 20,
        ContentBlock::ToolResult { content, .. } => content.len() + 20,
    }
}

/// Estimated tokens of a request with this system prompt, history and tools.
pub fn estimate_tokens(system: &str, messages: &[Message], tools: &[ToolDefinition]) -> usize {
    let mut chars = system.len();
    for message in messages {
        chars += 10 + message.content.iter().map(block_chars).sum::<usize>();
    }
    for tool in tools {
        chars += tool.name.len() + tool.description.len() + tool.input_schema.to_string().len();
    }
    chars.div_ceil(4)
}

/// Where to cut: the start of the oldest turn kept, if anything before it (and
/// before `current_turn`) can be summarized.
pub(crate) fn split_point(
    messages: &[Message],
    keep_recent_turns: usize,
    current_turn: usize,
) -> Option<usize> {
    let starts: Vec<usize> = messages
        .iter()
        .enumerate()
        .filter(|(index, message)| *index <= current_turn && message.starts_turn())
        .map(|(index, _)| index)
        .collect();
    let keep = keep_recent_turns.max(1);
    if starts.len() <= keep {
        return None;
    }
    let split = starts[starts.len() - keep];
    (split > 0).then_some(split)
}

/// The text sent to the summary call: the previous summary, then the older turns.
pub(crate) fn summary_request(previous: Option<&str>, older: &[Message]) -> String {
    let mut transcript = String::new();
    for message in older {
        let speaker = match message.role {
            Role::User => "Person",
            Role::Assistant => "Agent",
        };
        for block in &message.content {
            let line = match block {
                ContentBlock::Text { text } => {
                    format!("{speaker}: {}", truncate(text, MAX_BLOCK_CHARS))
                }
                ContentBlock::ToolUse { name, input, .. } => format!(
                    "Agent called {name}: {}",
                    truncate(&input.to_string(), MAX_BLOCK_CHARS)
                ),
                ContentBlock::ToolResult {
                    content, is_error, ..
                } => format!(
                    "Tool {}: {}",
                    if *is_error { "error" } else { "result" },
                    truncate(content, MAX_BLOCK_CHARS)
                ),
            };
            transcript.push_str(&line);
            transcript.push('\n');
        }
    }
    if transcript.len() > MAX_TRANSCRIPT_CHARS {
        let mut cut = transcript.len() - MAX_TRANSCRIPT_CHARS;
        while !transcript.is_char_boundary(cut) {
            cut += 1;
        }
        transcript = format!("[earlier part omitted]\n{}", &transcript[cut..]);
    }
    let mut request = String::new();
    if let Some(previous) = previous {
        request.push_str("Summary of the conversation before this part:\n");
        request.push_str(previous);
        request.push_str("\n\n");
    }
    request.push_str("Conversation to summarize:\n");
    request.push_str(&transcript);
    request.push_str("\nWrite the new summary, covering the earlier summary too if there is one.");
    request
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tool_round() -> Vec<Message> {
        vec![
            Message {
                role: Role::Assistant,
                content: vec![ContentBlock::ToolUse {
                    id: "t".into(),
                    name: "bash".into(),
                    input: json!({"command": "ls"}),
                }],
            },
            Message {
                role: Role::User,
                content: vec![ContentBlock::ToolResult {
                    tool_use_id: "t".into(),
                    content: "a.txt".into(),
                    is_error: false,
                }],
            },
        ]
    }

    #[test]
    fn cuts_only_at_turn_starts() {
        let mut history = vec![Message::user("one")];
        history.extend(tool_round());
        history.push(Message::assistant("done one"));
        history.push(Message::user("two"));
        history.extend(tool_round());
        let current = history.len() - 2;
        history.push(Message::user("three"));
        let current_turn = history.len() - 1;
        assert_eq!(split_point(&history, 1, current_turn), Some(current_turn));
        assert_eq!(split_point(&history, 2, current_turn), Some(4));
        assert_eq!(split_point(&history, 3, current_turn), None);
        // A turn is never cut inside: the tool result at `current` is no start.
        assert!(!history[current].starts_turn());
    }

    #[test]
    fn transcript_names_tools_and_keeps_previous_summary() {
        let mut older = vec![Message::user("list files")];
        older.extend(tool_round());
        let text = summary_request(Some("They like tea."), &older);
        assert!(text.contains("They like tea."));
        assert!(text.contains("Person: list files"));
        assert!(text.contains("Agent called bash"));
        assert!(text.contains("Tool result: a.txt"));
    }

    #[test]
    fn estimate_grows_with_history() {
        let small = estimate_tokens("sys", &[Message::user("hi")], &[]);
        let big = estimate_tokens("sys", &[Message::user("hi ".repeat(400))], &[]);
        assert!(big > small + 250);
    }
}
