//! The OpenAI-compatible chat completions wire format (`POST /v1/chat/completions`,
//! streamed), spoken by OpenAI and by local model servers (llama.cpp, vLLM, Ollama).
//!
//! The stream is `data:` chunks whose `choices[0].delta` carries `content` pieces and
//! `tool_calls` pieces (by `index`; `id` and `function.name` in the first, the
//! `function.arguments` JSON spread over the rest), then a `finish_reason`, an
//! optional usage chunk, and `data: [DONE]`. The conversation is converted from the
//! block form of [`crate::message`]: tool results become `role: "tool"` messages.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{tool_input, ModelDelta, ModelError, ModelRequest, ModelResponse, StopReason};
use crate::message::{ContentBlock, Message, Role, Usage};
use crate::sse::SseEvent;

pub(crate) fn request_body(model: &str, request: &ModelRequest<'_>) -> Value {
    let mut messages = Vec::new();
    if !request.system.is_empty() {
        messages.push(json!({"role": "system", "content": request.system}));
    }
    for message in request.messages {
        convert(message, &mut messages);
    }
    let mut body = json!({
        "model": model,
        "max_tokens": request.max_output_tokens,
        "messages": messages,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|tool| {
                json!({
                    "type": "function",
                    "function": {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": tool.input_schema,
                    },
                })
            })
            .collect();
        body["tools"] = Value::Array(tools);
    }
    body
}

fn convert(message: &Message, out: &mut Vec<Value>) {
    match message.role {
        Role::User => {
            for block in &message.content {
                if let ContentBlock::ToolResult {
                    tool_use_id,
                    content,
                    is_error,
                } = block
                {
                    let content = if *is_error {
                        format!("Error: {content}")
                    } else {
                        content.clone()
                    };
                    out.push(
                        json!({"role": "tool", "tool_call_id": tool_use_id, "content": content}),
                    );
                }
            }
            let text = message.text();
            if !text.is_empty() {
                out.push(json!({"role": "user", "content": text}));
            }
        }
        Role::Assistant => {
            let calls: Vec<Value> = message
                .content
                .iter()
                .filter_map(|block| match block {
                    ContentBlock::ToolUse { id, name, input } => Some(json!({
                        "id": id,
                        "type": "function",
                        "function": {"name": name, "arguments": input.to_string()},
                    })),
                    _ => None,
                })
                .collect();
            let text = message.text();
            let mut converted = json!({
                "role": "assistant",
                "content": if text.is_empty() { Value::Null } else { Value::String(text) },
            });
            if !calls.is_empty() {
                converted["tool_calls"] = Value::Array(calls);
            }
            out.push(converted);
        }
    }
}

#[derive(Default)]
struct Call {
    id: String,
    name: String,
    arguments: String,
}

#[derive(Default)]
pub(crate) struct Stream {
    text: String,
    calls: BTreeMap<u64, Call>,
    finish_reason: Option<String>,
    usage: Usage,
}

impl super::StreamParser for Stream {
    fn event(
        &mut self,
        event: &SseEvent,
        on_delta: &mut (dyn FnMut(ModelDelta) + Send),
    ) -> Result<bool, ModelError> {
        if event.data.trim() == "[DONE]" {
            return Ok(true);
        }
        let data: Value = serde_json::from_str(&event.data).map_err(|error| {
            ModelError::Protocol(format!("streamed chunk is not JSON: {error}"))
        })?;
        if let Some(error) = data.get("error") {
            let kind = error
                .get("type")
                .and_then(Value::as_str)
                .or_else(|| error.get("code").and_then(Value::as_str))
                .unwrap_or("error");
            return Err(ModelError::Stream {
                kind: kind.to_string(),
                message: error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            });
        }
        if let Some(usage) = data.get("usage").filter(|usage| !usage.is_null()) {
            self.usage = Usage {
                input_tokens: usage
                    .get("prompt_tokens")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
                output_tokens: usage
                    .get("completion_tokens")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
            };
        }
        let Some(choice) = data.pointer("/choices/0") else {
            return Ok(false);
        };
        if let Some(piece) = choice.pointer("/delta/content").and_then(Value::as_str) {
            if !piece.is_empty() {
                self.text.push_str(piece);
                on_delta(ModelDelta::Text(piece.to_string()));
            }
        }
        if let Some(calls) = choice
            .pointer("/delta/tool_calls")
            .and_then(Value::as_array)
        {
            for piece in calls {
                let index = piece.get("index").and_then(Value::as_u64).unwrap_or(0);
                let call = self.calls.entry(index).or_default();
                if let Some(id) = piece.get("id").and_then(Value::as_str) {
                    call.id = id.to_string();
                }
                if let Some(name) = piece.pointer("/function/name").and_then(Value::as_str) {
                    call.name.push_str(name);
                }
                if let Some(arguments) =
                    piece.pointer("/function/arguments").and_then(Value::as_str)
                {
                    call.arguments.push_str(arguments);
                }
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_string());
        }
        Ok(false)
    }

    fn finish(&mut self, complete: bool) -> Result<ModelResponse, ModelError> {
        // Some servers close without `[DONE]`; a finish reason is enough.
        if !complete && self.finish_reason.is_none() {
            return Err(ModelError::Unreachable(
                "the answer stream ended before it finished".to_string(),
            ));
        }
        let mut content = Vec::new();
        if !self.text.is_empty() {
            content.push(ContentBlock::Text {
                text: std::mem::take(&mut self.text),
            });
        }
        for (index, call) in std::mem::take(&mut self.calls) {
            content.push(ContentBlock::ToolUse {
                id: if call.id.is_empty() {
                    format!("call_{index}")
                } else {
                    call.id
                },
                name: call.name,
                input: tool_input(&call.arguments),
            });
        }
        let stop_reason = match self.finish_reason.as_deref() {
            Some("tool_calls") | Some("function_call") => StopReason::ToolUse,
            Some("length") => StopReason::MaxTokens,
            Some("stop") | None => StopReason::EndTurn,
            Some(other) => StopReason::Other(other.to_string()),
        };
        Ok(ModelResponse {
            content,
            stop_reason,
            usage: self.usage,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_converts_tool_results_to_tool_messages() {
        let history = vec![
            Message::user("hi"),
            Message {
                role: Role::Assistant,
                content: vec![ContentBlock::ToolUse {
                    id: "c1".into(),
                    name: "bash".into(),
                    input: json!({"command": "ls"}),
                }],
            },
            Message {
                role: Role::User,
                content: vec![ContentBlock::ToolResult {
                    tool_use_id: "c1".into(),
                    content: "boom".into(),
                    is_error: true,
                }],
            },
        ];
        let request = ModelRequest {
            system: "be brief",
            messages: &history,
            tools: &[],
            max_output_tokens: 100,
        };
        let body = request_body("m", &request);
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 4);
        assert_eq!(messages[0]["role"], "system");
        assert_eq!(messages[2]["content"], Value::Null);
        assert_eq!(
            messages[2]["tool_calls"][0]["function"]["arguments"],
            "{\"command\":\"ls\"}"
        );
        assert_eq!(
            messages[3],
            json!({"role": "tool", "tool_call_id": "c1", "content": "Error: boom"})
        );
    }
}
