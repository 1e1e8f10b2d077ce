//! The host ↔ runner protocol: frames on the agent's host socket.
//!
//! A frame is a 4-byte big-endian length (at most [`MAX_FRAME_BYTES`]) followed by a
//! JSON object whose `"type"` names it. The first frame each way is `hello` with
//! [`PROTOCOL_VERSION`]. Framing is `tokio_util`'s `LengthDelimitedCodec` (big-endian
//! u32 length by default); this module adds the size cap, the typed frames and errors
//! that never panic on what a runner sends, because a runner is code the agent controls.

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Decoder, Framed, LengthDelimitedCodec};

/// The protocol version both sides announce in `hello`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest frame body either side accepts.
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;

/// Problems on a host socket. None of them is fatal to the host.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("frame too large to send ({0} bytes, at most {MAX_FRAME_BYTES})")]
    TooLarge(usize),
    #[error("the other side speaks protocol version {0}, this one speaks {PROTOCOL_VERSION}")]
    Version(u32),
    #[error("expected {expected}, got {got}")]
    Unexpected { expected: &'static str, got: String },
    #[error("the connection closed")]
    Closed,
    #[error("the other side reported an error: {0}")]
    Remote(String),
}

/// What a runner is told to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentFrame {
    pub name: String,
    /// `anthropic` or `openai`.
    pub provider: String,
    pub model: String,
    pub base_url: String,
    pub instructions: String,
    pub memory: String,
    /// Tool names allowed; `None` = all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tool_iterations: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    /// When the agent's dial sets a sanitizing strictness, what `web_fetch` hands the
    /// model is sanitized at it (`strict`, `balanced`, `relaxed`); absent: as fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sanitize_web: Option<String>,
}

/// One message handed to a runner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub message_id: i64,
    pub session_id: i64,
    pub text: String,
    /// The session's history as the runner last returned it (a JSON array).
    pub history: Value,
    pub agent: AgentFrame,
}

/// Frames the host sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HostFrame {
    Hello {
        version: u32,
        agent: String,
    },
    Deliver(Box<Delivery>),
    ToolResult {
        call_id: String,
        ok: bool,
        content: String,
    },
    Shutdown,
    Error {
        message: String,
    },
}

/// What a runner asks of the host (its host tools), one type on both sides: the runner
/// builds these, the host matches on them. On the wire a `tool_call` frame carries the
/// call's `name` and `input`, so an unknown or malformed call is answered as a failed
/// tool call rather than taken for a broken connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", content = "input", rename_all = "snake_case")]
pub enum HostCall {
    /// A message to the conversation before the turn's final answer.
    SendMessage { text: String },
    /// The agent's persistent notes.
    MemoryRead {},
    /// Adds a note to the agent's persistent notes.
    MemoryAppend { note: String },
    /// The credentials granted to the agent (names and scopes, never values).
    ListGrants {},
    /// Asks a person whether the agent may do `action`, and waits.
    RequestApproval {
        action: String,
        #[serde(default)]
        details: String,
    },
    /// Sends `text` to agent `agent` and waits for its answer.
    AskAgent { agent: String, text: String },
    /// Sends `text` to agent `agent` without waiting.
    TellAgent { agent: String, text: String },
}

impl HostCall {
    /// The call a `tool_call` frame names, or why it is not one.
    pub fn parse(name: &str, input: &Value) -> Result<HostCall, String> {
        let input = if input.is_null() {
            Value::Object(Default::default())
        } else {
            input.clone()
        };
        serde_json::from_value(serde_json::json!({ "name": name, "input": input }))
            .map_err(|error| format!("host tool {name:?}: {error}"))
    }

    /// The `name` and `input` of the frame that carries this call.
    pub fn into_wire(self) -> (String, Value) {
        let value = serde_json::to_value(&self).unwrap_or(Value::Null);
        let name = value
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let input = value.get("input").cloned().unwrap_or(Value::Null);
        (name, input)
    }
}

/// Frames a runner sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RunnerFrame {
    Hello {
        version: u32,
    },
    Event {
        message_id: i64,
        event: Value,
    },
    Reply {
        message_id: i64,
        session_id: i64,
        text: String,
        history: Value,
        /// The turn ended on an error (the model could not be asked): the text says
        /// why, and the reply is stored and shown as an error.
        #[serde(default)]
        is_error: bool,
    },
    ToolCall {
        call_id: String,
        message_id: i64,
        name: String,
        #[serde(default)]
        input: Value,
    },
    Error {
        #[serde(default)]
        message_id: Option<i64>,
        message: String,
    },
}

impl RunnerFrame {
    pub fn kind(&self) -> &'static str {
        match self {
            RunnerFrame::Hello { .. } => "hello",
            RunnerFrame::Event { .. } => "event",
            RunnerFrame::Reply { .. } => "reply",
            RunnerFrame::ToolCall { .. } => "tool_call",
            RunnerFrame::Error { .. } => "error",
        }
    }
}

impl HostFrame {
    pub fn kind(&self) -> &'static str {
        match self {
            HostFrame::Hello { .. } => "hello",
            HostFrame::Deliver(_) => "deliver",
            HostFrame::ToolResult { .. } => "tool_result",
            HostFrame::Shutdown => "shutdown",
            HostFrame::Error { .. } => "error",
        }
    }
}

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .big_endian()
        .length_field_length(4)
        .max_frame_length(MAX_FRAME_BYTES)
        .new_codec()
}

/// Parses one frame body.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ProtocolError> {
    serde_json::from_slice(body).map_err(|e| ProtocolError::Malformed(e.to_string()))
}

/// Encodes one frame body, refusing what the other side would refuse.
pub fn encode_body<T: Serialize>(frame: &T) -> Result<Bytes, ProtocolError> {
    let body = serde_json::to_vec(frame).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    if body.len() > MAX_FRAME_BYTES {
        return Err(ProtocolError::TooLarge(body.len()));
    }
    Ok(Bytes::from(body))
}

/// Decodes every complete frame in `buffer` (for tests and fuzzing the decoder
/// without a socket). Stops at the first error.
pub fn decode_buffer<T: DeserializeOwned>(buffer: &mut BytesMut) -> Result<Vec<T>, ProtocolError> {
    let mut codec = codec();
    let mut frames = Vec::new();
    while let Some(body) = codec.decode(buffer).map_err(framing_error)? {
        frames.push(decode_body(&body)?);
    }
    Ok(frames)
}

fn framing_error(error: std::io::Error) -> ProtocolError {
    if error.kind() == std::io::ErrorKind::InvalidData {
        ProtocolError::Malformed(error.to_string())
    } else {
        ProtocolError::Io(error)
    }
}

/// A framed, typed connection: sends `Out`, receives `In`.
pub struct Connection<S, In, Out> {
    framed: Framed<S, LengthDelimitedCodec>,
    _types: std::marker::PhantomData<fn(Out) -> In>,
}

/// The host's end of a runner connection.
pub type HostConnection<S> = Connection<S, RunnerFrame, HostFrame>;
/// The runner's end.
pub type RunnerConnection<S> = Connection<S, HostFrame, RunnerFrame>;

impl<S, In, Out> Connection<S, In, Out>
where
    S: AsyncRead + AsyncWrite + Unpin,
    In: DeserializeOwned,
    Out: Serialize,
{
    pub fn new(stream: S) -> Self {
        Connection {
            framed: Framed::new(stream, codec()),
            _types: std::marker::PhantomData,
        }
    }

    pub async fn send(&mut self, frame: &Out) -> Result<(), ProtocolError> {
        let body = encode_body(frame)?;
        self.framed.send(body).await.map_err(framing_error)
    }

    /// The next frame; `Ok(None)` when the other side closed cleanly. Cancel-safe.
    pub async fn recv(&mut self) -> Result<Option<In>, ProtocolError> {
        match self.framed.next().await {
            None => Ok(None),
            Some(Err(error)) => Err(framing_error(error)),
            Some(Ok(body)) => decode_body(&body).map(Some),
        }
    }

    /// Like [`Connection::recv`], but a clean close is [`ProtocolError::Closed`].
    pub async fn expect(&mut self) -> Result<In, ProtocolError> {
        self.recv().await?.ok_or(ProtocolError::Closed)
    }

    pub fn into_inner(self) -> S {
        self.framed.into_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;
    use rand::{Rng, SeedableRng};

    fn framed(body: &[u8]) -> BytesMut {
        let mut buffer = BytesMut::new();
        buffer.put_u32(body.len() as u32);
        buffer.put_slice(body);
        buffer
    }

    #[test]
    fn frames_round_trip_with_their_type_tag() {
        let frame = HostFrame::Deliver(Box::new(Delivery {
            message_id: 7,
            session_id: 3,
            text: "hi".into(),
            history: serde_json::json!([]),
            agent: AgentFrame {
                name: "assistant".into(),
                provider: "anthropic".into(),
                model: "m".into(),
                base_url: "https://api.anthropic.com".into(),
                instructions: String::new(),
                memory: String::new(),
                tools: None,
                max_tool_iterations: None,
                max_output_tokens: None,
                sanitize_web: None,
            },
        }));
        let body = encode_body(&frame).unwrap();
        let value: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["type"], "deliver");
        assert_eq!(value["message_id"], 7);
        let mut buffer = framed(&body);
        let frames: Vec<HostFrame> = decode_buffer(&mut buffer).unwrap();
        assert_eq!(frames, vec![frame]);
        let hello: RunnerFrame =
            decode_body(br#"{"type":"hello","version":1,"extra":true}"#).unwrap();
        assert_eq!(hello, RunnerFrame::Hello { version: 1 });
    }

    #[test]
    fn bad_frames_are_clean_errors() {
        for body in [
            &b"not json"[..],
            br#"{"type":"launch_missiles"}"#,
            br#"{"version":1}"#,
            br#"{"type":"reply","message_id":"x"}"#,
            b"",
        ] {
            let mut buffer = framed(body);
            assert!(matches!(
                decode_buffer::<RunnerFrame>(&mut buffer),
                Err(ProtocolError::Malformed(_))
            ));
        }
        // A declared length over the cap is refused before the body is read.
        let mut buffer = BytesMut::new();
        buffer.put_u32(MAX_FRAME_BYTES as u32 + 1);
        assert!(matches!(
            decode_buffer::<RunnerFrame>(&mut buffer),
            Err(ProtocolError::Malformed(_))
        ));
        // Too large to send.
        let huge = RunnerFrame::Error {
            message_id: None,
            message: "x".repeat(MAX_FRAME_BYTES),
        };
        assert!(matches!(
            encode_body(&huge),
            Err(ProtocolError::TooLarge(_))
        ));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x9a11_5ade);
        for round in 0..5000 {
            let len = rng.gen_range(0..300);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            if round % 3 == 0 && bytes.len() >= 4 {
                // Plausible lengths reach the JSON parser more often.
                let body_len = (bytes.len() - 4) as u32;
                bytes[..4].copy_from_slice(&body_len.to_be_bytes());
            }
            let mut buffer = BytesMut::from(&bytes[..]);
            let _ = decode_buffer::<RunnerFrame>(&mut buffer);
            let mut buffer = BytesMut::from(&bytes[..]);
            let _ = decode_buffer::<HostFrame>(&mut buffer);
        }
    }

    #[tokio::test]
    async fn connection_sends_and_receives() {
        let (a, b) = tokio::io::duplex(4096);
        let mut host: HostConnection<_> = Connection::new(a);
        let mut runner: RunnerConnection<_> = Connection::new(b);
        runner
            .send(&RunnerFrame::Hello {
                version: PROTOCOL_VERSION,
            })
            .await
            .unwrap();
        assert_eq!(
            host.expect().await.unwrap(),
            RunnerFrame::Hello {
                version: PROTOCOL_VERSION
            }
        );
        host.send(&HostFrame::Shutdown).await.unwrap();
        assert_eq!(runner.expect().await.unwrap(), HostFrame::Shutdown);
        drop(runner);
        assert!(host.recv().await.unwrap().is_none());
    }

    #[test]
    fn host_calls_round_trip_through_the_wire_shape() {
        let calls = [
            HostCall::SendMessage { text: "hi".into() },
            HostCall::MemoryRead {},
            HostCall::MemoryAppend { note: "n".into() },
            HostCall::ListGrants {},
            HostCall::RequestApproval {
                action: "a".into(),
                details: "d".into(),
            },
            HostCall::AskAgent {
                agent: "b".into(),
                text: "t".into(),
            },
            HostCall::TellAgent {
                agent: "b".into(),
                text: "t".into(),
            },
        ];
        for call in calls {
            let (name, input) = call.clone().into_wire();
            assert_eq!(HostCall::parse(&name, &input), Ok(call));
        }
        assert_eq!(
            HostCall::parse("memory_read", &Value::Null),
            Ok(HostCall::MemoryRead {})
        );
        assert!(HostCall::parse("format_disk", &Value::Null).is_err());
        assert!(HostCall::parse("send_message", &serde_json::json!({})).is_err());
    }
}
