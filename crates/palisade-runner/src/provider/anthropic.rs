//! The Anthropic Messages API wire format (`POST /v1/messages`, streamed).
//!
//! The stream is a sequence of named events: `message_start` (input usage),
//! `content_block_start` / `content_block_delta` / `content_block_stop` per block
//! (`text_delta` for text, `input_json_delta` for a tool call's input, which is only
//! valid JSON once the block stops), `message_delta` (stop reason, output usage),
//! `message_stop`, plus `ping` and `error` at any time.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{tool_input, ModelDelta, ModelError, ModelRequest, ModelResponse, StopReason};
use crate::message::{ContentBlock, Usage};
use crate::sse::SseEvent;

/// The `anthropic-version` header every request carries.
pub(crate) const API_VERSION: &str = "2023-06-01";

pub(crate) fn request_body(model: &str, request: &ModelRequest<'_>) -> Value {
    let mut body = json!({
        "model": model,
        "max_tokens": request.max_output_tokens,
        "messages": request.messages,
        "stream": true,
    });
    if !request.system.is_empty() {
        body["system"] = json!(request.system);
    }
    if !request.tools.is_empty() {
        body["tools"] = json!(request.tools);
    }
    body
}

enum Block {
    Text(String),
    ToolUse {
        id: String,
        name: String,
        input_json: String,
    },
    /// Kinds the loop does not use (thinking, server tools): skipped.
    Other,
}

#[derive(Default)]
pub(crate) struct Stream {
    open: BTreeMap<u64, Block>,
    done: BTreeMap<u64, ContentBlock>,
    stop_reason: Option<String>,
    usage: Usage,
}

fn number(value: &Value, key: &str) -> u64 {
    value.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn text_of(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

impl Stream {
    fn close(&mut self, index: u64) {
        let block = match self.open.remove(&index) {
            Some(Block::Text(text)) if !text.is_empty() => ContentBlock::Text { text },
            Some(Block::ToolUse {
                id,
                name,
                input_json,
            }) => ContentBlock::ToolUse {
                id,
                name,
                input: tool_input(&input_json),
            },
            _ => return,
        };
        self.done.insert(index, block);
    }
}

impl super::StreamParser for Stream {
    fn event(
        &mut self,
        event: &SseEvent,
        on_delta: &mut (dyn FnMut(ModelDelta) + Send),
    ) -> Result<bool, ModelError> {
        let data: Value = serde_json::from_str(&event.data).map_err(|error| {
            ModelError::Protocol(format!("streamed event is not JSON: {error}"))
        })?;
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .or(event.event.as_deref())
            .unwrap_or_default();
        let index = number(&data, "index");
        match kind {
            "message_start" => {
                let usage = data.pointer("/message/usage").cloned().unwrap_or_default();
                self.usage.input_tokens = number(&usage, "input_tokens")
                    + number(&usage, "cache_creation_input_tokens")
                    + number(&usage, "cache_read_input_tokens");
                self.usage.output_tokens = number(&usage, "output_tokens");
            }
            "content_block_start" => {
                let block = data.get("content_block").cloned().unwrap_or_default();
                let opened = match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let text = text_of(&block, "text");
                        if !text.is_empty() {
                            on_delta(ModelDelta::Text(text.clone()));
                        }
                        Block::Text(text)
                    }
                    Some("tool_use") => Block::ToolUse {
                        id: text_of(&block, "id"),
                        name: text_of(&block, "name"),
                        input_json: String::new(),
                    },
                    _ => Block::Other,
                };
                self.open.insert(index, opened);
            }
            "content_block_delta" => {
                let delta = data.get("delta").cloned().unwrap_or_default();
                match (
                    self.open.get_mut(&index),
                    delta.get("type").and_then(Value::as_str),
                ) {
                    (Some(Block::Text(text)), Some("text_delta")) => {
                        let piece = text_of(&delta, "text");
                        text.push_str(&piece);
                        on_delta(ModelDelta::Text(piece));
                    }
                    (Some(Block::ToolUse { input_json, .. }), Some("input_json_delta")) => {
                        input_json.push_str(&text_of(&delta, "partial_json"));
                    }
                    _ => {}
                }
            }
            "content_block_stop" => self.close(index),
            "message_delta" => {
                if let Some(reason) = data.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.stop_reason = Some(reason.to_string());
                }
                if let Some(usage) = data.get("usage") {
                    if let Some(output) = usage.get("output_tokens").and_then(Value::as_u64) {
                        self.usage.output_tokens = output;
                    }
                    if let Some(input) = usage.get("input_tokens").and_then(Value::as_u64) {
                        self.usage.input_tokens = self.usage.input_tokens.max(input);
                    }
                }
            }
            "message_stop" => return Ok(true),
            "error" => {
                let error = data.get("error").cloned().unwrap_or_default();
                return Err(ModelError::Stream {
                    kind: text_of(&error, "type"),
                    message: text_of(&error, "message"),
                });
            }
            _ => {}
        }
        Ok(false)
    }

    fn finish(&mut self, complete: bool) -> Result<ModelResponse, ModelError> {
        if !complete {
            return Err(ModelError::Unreachable(
                "the answer stream ended before message_stop".to_string(),
            ));
        }
        let unclosed: Vec<u64> = self.open.keys().copied().collect();
        for index in unclosed {
            self.close(index);
        }
        let stop_reason = match self.stop_reason.as_deref() {
            Some("end_turn") | Some("stop_sequence") | None => StopReason::EndTurn,
            Some("tool_use") => StopReason::ToolUse,
            Some("max_tokens") => StopReason::MaxTokens,
            Some(other) => StopReason::Other(other.to_string()),
        };
        Ok(ModelResponse {
            content: std::mem::take(&mut self.done).into_values().collect(),
            stop_reason,
            usage: self.usage,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::StreamParser;
    use super::*;

    fn event(data: Value) -> SseEvent {
        SseEvent {
            event: None,
            data: data.to_string(),
        }
    }

    #[test]
    fn text_and_tool_use_blocks() {
        let mut stream = Stream::default();
        let mut deltas = Vec::new();
        let mut on_delta = |delta: ModelDelta| deltas.push(delta);
        let events = [
            json!({"type": "message_start", "message": {"usage": {"input_tokens": 7, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me "}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "look."}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "t1", "name": "read", "input": {}}}),
            json!({"type": "ping"}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"path\": "}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"a.txt\"}"}}),
            json!({"type": "content_block_stop", "index": 1}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 12}}),
        ];
        for data in events {
            assert!(!stream.event(&event(data), &mut on_delta).unwrap());
        }
        assert!(stream
            .event(&event(json!({"type": "message_stop"})), &mut on_delta)
            .unwrap());
        let response = stream.finish(true).unwrap();
        assert_eq!(response.stop_reason, StopReason::ToolUse);
        assert_eq!(
            response.usage,
            Usage {
                input_tokens: 7,
                output_tokens: 12
            }
        );
        assert_eq!(
            response.content,
            vec![
                ContentBlock::Text {
                    text: "Let me look.".into()
                },
                ContentBlock::ToolUse {
                    id: "t1".into(),
                    name: "read".into(),
                    input: json!({"path": "a.txt"})
                },
            ]
        );
        assert_eq!(
            deltas,
            vec![
                ModelDelta::Text("Let me ".into()),
                ModelDelta::Text("look.".into())
            ]
        );
    }

    #[test]
    fn error_event_and_early_end() {
        let mut stream = Stream::default();
        let mut on_delta = |_: ModelDelta| {};
        let error = stream
            .event(
                &event(json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})),
                &mut on_delta,
            )
            .unwrap_err();
        assert_eq!(error.kind(), Some("overloaded_error"));
        assert!(matches!(
            Stream::default().finish(false),
            Err(ModelError::Unreachable(_))
        ));
    }
}
