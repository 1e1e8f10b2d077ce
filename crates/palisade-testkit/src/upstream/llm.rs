//! Fake model APIs: Anthropic Messages (`/v1/messages`), OpenAI-compatible chat
//! completions (`/v1/chat/completions`) and the model list both offer (`/v1/models`).
//!
//! They speak the public wire formats closely enough for the official SDKs to parse
//! them, streaming included, so tests can run a real SDK through the vault and check
//! both sides. By default each answers `echo: ` plus the last user text; a test can
//! queue [`ScriptedTurn`]s (text, a tool call or an error response) to drive an agent loop, and the
//! echo comes back once the script runs out. Every response carries
//! `x-test-key-header` naming the credential header that arrived (`x-api-key`,
//! `authorization` or `none`), never its value. A model the test retired
//! ([`super::Upstream::retire_model`]) is answered 404 as the real APIs answer an
//! unknown or retired model, and the model list can be replaced.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Value};

use super::routes::{event_stream, json_response, Body, QueryParams};
use super::Shared;

/// Time between streamed events, so tests can tell a stream from a buffered body.
const EVENT_GAP: Duration = Duration::from_millis(20);

/// The model name used when a request names none.
const DEFAULT_MODEL: &str = "claude-test";

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// One scripted assistant turn.
#[derive(Clone, Debug, PartialEq)]
pub enum ScriptedTurn {
    /// The assistant answers with this text and ends its turn.
    Text(String),
    /// The assistant calls tool `name` with `input` and stops for the result.
    ToolUse { name: String, input: Value },
    /// The request is answered with this status, headers and JSON body instead,
    /// as a refusing vault (`{"error": "blocked_by_policy", ...}`) or an overloaded
    /// API (`529`, `overloaded_error`) would.
    Error {
        status: u16,
        headers: Vec<(String, String)>,
        body: Value,
    },
}

impl ScriptedTurn {
    /// A text answer.
    pub fn text(text: &str) -> ScriptedTurn {
        ScriptedTurn::Text(text.to_string())
    }

    /// A tool call.
    pub fn tool_use(name: &str, input: Value) -> ScriptedTurn {
        ScriptedTurn::ToolUse {
            name: name.to_string(),
            input,
        }
    }

    /// An error response with `status` and JSON `body`.
    pub fn error(status: u16, body: Value) -> ScriptedTurn {
        ScriptedTurn::Error {
            status,
            headers: Vec::new(),
            body,
        }
    }

    /// The same error response with header `name: value` added (e.g. `retry-after`).
    pub fn with_header(mut self, name: &str, value: &str) -> ScriptedTurn {
        if let ScriptedTurn::Error { headers, .. } = &mut self {
            headers.push((name.to_string(), value.to_string()));
        }
        self
    }
}

/// The response of a [`ScriptedTurn::Error`], or `None` for an answer turn.
fn scripted_error(turn: &ScriptedTurn) -> Option<Response<Body>> {
    let ScriptedTurn::Error {
        status,
        headers,
        body,
    } = turn
    else {
        return None;
    };
    let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = json_response(status, body);
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    Some(response)
}

/// The text an error turn stands for where an answer is built (never sent: error
/// turns are answered by [`scripted_error`] first).
fn error_text(body: &Value) -> String {
    body.to_string()
}

fn key_header(request: &Request<()>) -> &'static str {
    if request.headers().contains_key("x-api-key") {
        "x-api-key"
    } else if request.headers().contains_key(http::header::AUTHORIZATION) {
        "authorization"
    } else {
        "none"
    }
}

fn with_key_header(mut response: Response<Body>, request: &Request<()>) -> Response<Body> {
    response.headers_mut().insert(
        "x-test-key-header",
        HeaderValue::from_static(key_header(request)),
    );
    response
}

/// Text of a message `content`: a string, or the text parts of a block list
/// (including the text inside tool results, so a tool's output is echoed).
fn content_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .map(|block| match block.get("type").and_then(Value::as_str) {
                Some("text") => block
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                Some("tool_result") => block.get("content").map(content_text).unwrap_or_default(),
                _ => String::new(),
            })
            .filter(|text| !text.is_empty())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn last_user_text(body: &Value) -> String {
    body.get("messages")
        .and_then(Value::as_array)
        .and_then(|messages| {
            messages
                .iter()
                .rev()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        })
        .and_then(|message| message.get("content"))
        .map(content_text)
        .unwrap_or_default()
}

fn word_count(text: &str) -> u64 {
    text.split_whitespace().count().max(1) as u64
}

/// Splits `text` into a few pieces so a stream has several deltas.
fn pieces(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return vec![String::new()];
    }
    let size = chars.len().div_ceil(3).max(1);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

/// A body that sends `events` one by one, [`EVENT_GAP`] apart.
fn spaced(events: Vec<String>) -> Body {
    let stream = futures_util::stream::unfold(
        (events.into_iter(), true),
        |(mut events, first)| async move {
            let event = events.next()?;
            if !first {
                tokio::time::sleep(EVENT_GAP).await;
            }
            Some((
                Ok::<_, super::routes::BodyError>(Frame::data(Bytes::from(event))),
                (events, false),
            ))
        },
    );
    StreamBody::new(stream).boxed()
}

fn parse_body(body: &Bytes) -> Result<Value, String> {
    serde_json::from_slice::<Value>(body).map_err(|error| format!("body is not JSON: {error}"))
}

// ---- Anthropic Messages ----

pub(crate) fn anthropic(shared: &Shared, request: &Request<()>, body: &Bytes) -> Response<Body> {
    let parsed = match parse_body(body) {
        Ok(value) => value,
        Err(message) => {
            let error = json!({
                "type": "error",
                "error": {"type": "invalid_request_error", "message": message},
            });
            return with_key_header(json_response(StatusCode::BAD_REQUEST, &error), request);
        }
    };
    let model = parsed
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_MODEL)
        .to_string();
    if shared.is_retired(&model) {
        let error = json!({
            "type": "error",
            "error": {"type": "not_found_error", "message": format!("model: {model}")},
        });
        return with_key_header(json_response(StatusCode::NOT_FOUND, &error), request);
    }
    let input_tokens = word_count(&last_user_text(&parsed));
    let turn = shared
        .next_anthropic_turn()
        .unwrap_or_else(|| ScriptedTurn::Text(format!("echo: {}", last_user_text(&parsed))));
    if let Some(response) = scripted_error(&turn) {
        return with_key_header(response, request);
    }
    let id = next_id();
    let response = if parsed.get("stream").and_then(Value::as_bool) == Some(true) {
        let events = anthropic_stream(id, &model, input_tokens, &turn);
        event_stream(spaced(events))
    } else {
        json_response(
            StatusCode::OK,
            &anthropic_message(id, &model, input_tokens, &turn),
        )
    };
    with_key_header(response, request)
}

fn anthropic_block(id: u64, turn: &ScriptedTurn) -> (Value, &'static str, u64) {
    match turn {
        ScriptedTurn::Text(text) => (
            json!({"type": "text", "text": text}),
            "end_turn",
            word_count(text),
        ),
        ScriptedTurn::ToolUse { name, input } => (
            json!({
                "type": "tool_use",
                "id": format!("toolu_test_{id}"),
                "name": name,
                "input": input,
            }),
            "tool_use",
            word_count(&input.to_string()),
        ),
        ScriptedTurn::Error { body, .. } => {
            anthropic_block(id, &ScriptedTurn::Text(error_text(body)))
        }
    }
}

fn anthropic_message(id: u64, model: &str, input_tokens: u64, turn: &ScriptedTurn) -> Value {
    let (block, stop_reason, output_tokens) = anthropic_block(id, turn);
    json!({
        "id": format!("msg_test_{id}"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [block],
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    })
}

fn sse_event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

fn anthropic_stream(id: u64, model: &str, input_tokens: u64, turn: &ScriptedTurn) -> Vec<String> {
    let (block, stop_reason, output_tokens) = anthropic_block(id, turn);
    let mut events = vec![sse_event(
        "message_start",
        &json!({
            "type": "message_start",
            "message": {
                "id": format!("msg_test_{id}"),
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {"input_tokens": input_tokens, "output_tokens": 1},
            },
        }),
    )];
    // The start event carries the block with its content emptied; deltas fill it.
    let (start_block, deltas): (Value, Vec<Value>) = match turn {
        ScriptedTurn::Error { body, .. } => {
            let text = ScriptedTurn::Text(error_text(body));
            return anthropic_stream(id, model, input_tokens, &text);
        }
        ScriptedTurn::Text(text) => (
            json!({"type": "text", "text": ""}),
            pieces(text)
                .into_iter()
                .map(|piece| json!({"type": "text_delta", "text": piece}))
                .collect(),
        ),
        ScriptedTurn::ToolUse { input, .. } => {
            let mut start = block.clone();
            start["input"] = json!({});
            (
                start,
                pieces(&input.to_string())
                    .into_iter()
                    .map(|piece| json!({"type": "input_json_delta", "partial_json": piece}))
                    .collect(),
            )
        }
    };
    events.push(sse_event(
        "content_block_start",
        &json!({"type": "content_block_start", "index": 0, "content_block": start_block}),
    ));
    events.push(sse_event("ping", &json!({"type": "ping"})));
    for delta in deltas {
        events.push(sse_event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0, "delta": delta}),
        ));
    }
    events.push(sse_event(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push(sse_event(
        "message_delta",
        &json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": null},
            "usage": {"output_tokens": output_tokens},
        }),
    ));
    events.push(sse_event("message_stop", &json!({"type": "message_stop"})));
    events
}

// ---- OpenAI-compatible chat completions ----

pub(crate) fn openai(shared: &Shared, request: &Request<()>, body: &Bytes) -> Response<Body> {
    let parsed = match parse_body(body) {
        Ok(value) => value,
        Err(message) => {
            let error = json!({
                "error": {"message": message, "type": "invalid_request_error", "code": null},
            });
            return with_key_header(json_response(StatusCode::BAD_REQUEST, &error), request);
        }
    };
    let model = parsed
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("gpt-test")
        .to_string();
    if shared.is_retired(&model) {
        let error = json!({
            "error": {
                "message": format!("The model `{model}` does not exist or you do not have access to it."),
                "type": "invalid_request_error",
                "param": null,
                "code": "model_not_found",
            },
        });
        return with_key_header(json_response(StatusCode::NOT_FOUND, &error), request);
    }
    let prompt_tokens = word_count(&last_user_text(&parsed));
    let turn = shared
        .next_openai_turn()
        .unwrap_or_else(|| ScriptedTurn::Text(format!("echo: {}", last_user_text(&parsed))));
    if let Some(response) = scripted_error(&turn) {
        return with_key_header(response, request);
    }
    let id = next_id();
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let response = if parsed.get("stream").and_then(Value::as_bool) == Some(true) {
        event_stream(spaced(openai_stream(id, created, &model, &turn)))
    } else {
        json_response(
            StatusCode::OK,
            &openai_completion(id, created, &model, prompt_tokens, &turn),
        )
    };
    with_key_header(response, request)
}

fn openai_tool_call(id: u64, name: &str, input: &Value) -> Value {
    json!({
        "id": format!("call_test_{id}"),
        "type": "function",
        "function": {"name": name, "arguments": input.to_string()},
    })
}

fn openai_completion(
    id: u64,
    created: u64,
    model: &str,
    prompt_tokens: u64,
    turn: &ScriptedTurn,
) -> Value {
    let (message, finish_reason, completion_tokens) = match turn {
        ScriptedTurn::Error { body, .. } => {
            let text = ScriptedTurn::Text(error_text(body));
            return openai_completion(id, created, model, prompt_tokens, &text);
        }
        ScriptedTurn::Text(text) => (
            json!({"role": "assistant", "content": text}),
            "stop",
            word_count(text),
        ),
        ScriptedTurn::ToolUse { name, input } => (
            json!({
                "role": "assistant",
                "content": null,
                "tool_calls": [openai_tool_call(id, name, input)],
            }),
            "tool_calls",
            word_count(&input.to_string()),
        ),
    };
    json!({
        "id": format!("chatcmpl-test-{id}"),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    })
}

fn openai_stream(id: u64, created: u64, model: &str, turn: &ScriptedTurn) -> Vec<String> {
    let chunk = |delta: Value, finish_reason: Value| {
        let value = json!({
            "id": format!("chatcmpl-test-{id}"),
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        });
        format!("data: {value}\n\n")
    };
    let mut events = Vec::new();
    match turn {
        ScriptedTurn::Error { body, .. } => {
            return openai_stream(id, created, model, &ScriptedTurn::Text(error_text(body)));
        }
        ScriptedTurn::Text(text) => {
            events.push(chunk(
                json!({"role": "assistant", "content": ""}),
                Value::Null,
            ));
            for piece in pieces(text) {
                events.push(chunk(json!({"content": piece}), Value::Null));
            }
            events.push(chunk(json!({}), json!("stop")));
        }
        ScriptedTurn::ToolUse { name, input } => {
            let mut call = openai_tool_call(id, name, input);
            call["index"] = json!(0);
            call["function"]["arguments"] = json!("");
            events.push(chunk(
                json!({"role": "assistant", "content": null, "tool_calls": [call]}),
                Value::Null,
            ));
            for piece in pieces(&input.to_string()) {
                events.push(chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                    Value::Null,
                ));
            }
            events.push(chunk(json!({}), json!("tool_calls")));
        }
    }
    events.push("data: [DONE]\n\n".to_string());
    events
}

// ---- Model list ----

/// `GET /v1/models`: Anthropic's shape (newest first, `limit` and `after_id` paging,
/// `has_more`, `first_id`, `last_id`) when the request speaks Anthropic (an
/// `anthropic-version` or `x-api-key` header), else OpenAI's (`object: list`,
/// `created` in Unix seconds). Without any key header: 401, as the real APIs answer.
pub(crate) fn models(
    shared: &Shared,
    request: &Request<()>,
    params: &QueryParams,
) -> Response<Body> {
    let headers = request.headers();
    let anthropic = headers.contains_key("anthropic-version") || headers.contains_key("x-api-key");
    if key_header(request) == "none" || shared.wrong_key(request) {
        let error = if anthropic {
            json!({"type": "error", "error": {"type": "authentication_error", "message": "x-api-key header is required"}})
        } else {
            json!({"error": {"message": "missing API key", "type": "invalid_request_error", "code": "invalid_api_key"}})
        };
        return with_key_header(json_response(StatusCode::UNAUTHORIZED, &error), request);
    }
    let mut models = shared.models();
    // Newest first, as both APIs list them.
    models.sort_by(|a, b| b.1.cmp(&a.1));
    if !anthropic {
        let data: Vec<Value> = models
            .iter()
            .map(|(id, at)| {
                let created = humantime::parse_rfc3339_weak(at)
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_secs())
                    .unwrap_or_default();
                json!({"id": id, "object": "model", "created": created, "owned_by": "test"})
            })
            .collect();
        return with_key_header(
            json_response(StatusCode::OK, &json!({"object": "list", "data": data})),
            request,
        );
    }
    let limit = params.number("limit").unwrap_or(20).clamp(1, 1000) as usize;
    let start = match params.text("after_id") {
        Some(after) => models
            .iter()
            .position(|(id, _)| id == after)
            .map_or(models.len(), |i| i + 1),
        None => 0,
    };
    let page: Vec<&(String, String)> = models.iter().skip(start).take(limit).collect();
    let data: Vec<Value> = page
        .iter()
        .map(|(id, at)| json!({"type": "model", "id": id, "display_name": id, "created_at": at}))
        .collect();
    let body = json!({
        "data": data,
        "has_more": start + page.len() < models.len(),
        "first_id": page.first().map(|(id, _)| id),
        "last_id": page.last().map(|(id, _)| id),
    });
    with_key_header(json_response(StatusCode::OK, &body), request)
}
