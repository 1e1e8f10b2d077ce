//! `palisade runner`: the agent loop inside a sandbox, driven by the host.
//!
//! Connects to the host socket (`/run/palisade/host.sock`), says hello, and for each
//! `deliver` runs one turn of the palisade-runner agent loop with the agent settings
//! in the frame, streaming `event` frames and ending with `reply`. Host tools
//! (send_message, memory, list_grants, request_approval) become `tool_call` frames the
//! host answers.
//! The runner holds no credential: the model is reached through the shim and the
//! vault with a placeholder key, and the socket only ever speaks for this agent.

use anyhow::Context as _;
use futures_util::future::BoxFuture;
use palisade_host::protocol::{
    Delivery, HostCall, HostFrame, RunnerConnection, RunnerFrame, PROTOCOL_VERSION,
};
use palisade_runner::{
    AgentConfig, Event, Grant, HostToolError, HostTools, HttpClient, HttpConfig, Message,
    ProviderConfig, Session, Tools, Workspace,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

/// How long a host tool call may take.
const HOST_TOOL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `request_approval` may wait: a person decides within the approval timeout
/// (10 min by default, per agent up to 1 h), and the host answers at the expiry.
const APPROVAL_TOOL_TIMEOUT: Duration = Duration::from_secs(3600 + 60);

#[derive(Debug, clap::Args)]
pub struct RunnerArgs {
    /// The host socket (`@NAME`: an abstract socket, as a sandbox offers it).
    #[arg(long, env = "PALISADE_HOST_SOCKET", default_value = palisade_host::SANDBOX_HOST_SOCKET, value_name = "PATH")]
    socket: PathBuf,
    /// The workspace the tools act on [default: the current directory].
    #[arg(long, value_name = "DIR")]
    workspace: Option<PathBuf>,
}

/// Connects to `path`, or to the abstract socket NAME for `@NAME`.
async fn connect(path: &std::path::Path) -> std::io::Result<UnixStream> {
    let abstract_name = path.to_str().and_then(|p| p.strip_prefix('@'));
    let Some(name) = abstract_name else {
        return UnixStream::connect(path).await;
    };
    use std::os::linux::net::SocketAddrExt;
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    let stream = std::os::unix::net::UnixStream::connect_addr(&address)?;
    stream.set_nonblocking(true)?;
    UnixStream::from_std(stream)
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<(bool, String)>>>>;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn run(args: RunnerArgs) -> anyhow::Result<()> {
    // The model's tool commands run as the same user in the same sandbox: without this
    // they could read and write the runner's memory through /proc/PID/mem (ptrace is
    // denied, that file is not) and change the conversation it holds. A command's own
    // exec makes it dumpable again, for its own processes.
    // SAFETY: prctl with integer arguments.
    unsafe {
        nix::libc::prctl(nix::libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: RunnerArgs) -> anyhow::Result<()> {
    let workspace = match args.workspace {
        Some(dir) => dir,
        None => std::env::current_dir().context("cannot find the workspace directory")?,
    };
    let stream = tokio::time::timeout(Duration::from_secs(10), connect(&args.socket))
        .await
        .map_err(|_| anyhow::anyhow!("timed out connecting to the host socket"))?
        .with_context(|| {
            format!(
                "cannot connect to the host socket {}",
                args.socket.display()
            )
        })?;
    let mut conn: RunnerConnection<UnixStream> = RunnerConnection::new(stream);
    conn.send(&RunnerFrame::Hello {
        version: PROTOCOL_VERSION,
    })
    .await?;
    match tokio::time::timeout(Duration::from_secs(10), conn.expect()).await {
        Ok(Ok(HostFrame::Hello { version, .. })) if version == PROTOCOL_VERSION => {}
        Ok(Ok(HostFrame::Error { message })) => anyhow::bail!("the host refused: {message}"),
        Ok(Ok(other)) => anyhow::bail!("the host sent {} instead of hello", other.kind()),
        Ok(Err(error)) => return Err(error.into()),
        Err(_) => anyhow::bail!("the host did not answer hello within 10 s"),
    }

    let http = HttpClient::new(HttpConfig::from_env()).context("cannot set up the HTTP client")?;
    let (out_tx, mut out_rx) = mpsc::channel::<RunnerFrame>(256);
    let (deliver_tx, deliver_rx) = mpsc::channel::<Delivery>(4);
    let pending: Pending = Arc::default();
    let host = Arc::new(SocketHost {
        out: out_tx.clone(),
        pending: Arc::clone(&pending),
        message_id: AtomicI64::new(0),
        next_call: AtomicU64::new(1),
    });
    let turns = tokio::spawn(run_turns(deliver_rx, out_tx, host, http, workspace));

    let result = loop {
        tokio::select! {
            frame = conn.recv() => match frame {
                Ok(Some(HostFrame::Deliver(delivery))) => {
                    // Says at once that the message arrived, before any model call: the
                    // channel can show the agent is on it (and bench/host.sh times it).
                    conn.send(&RunnerFrame::Event {
                        message_id: delivery.message_id,
                        event: serde_json::json!({"kind": "started"}),
                    })
                    .await?;
                    if deliver_tx.send(*delivery).await.is_err() {
                        break Ok(());
                    }
                }
                Ok(Some(HostFrame::ToolResult { call_id, ok, content })) => {
                    if let Some(waiter) = lock(&pending).remove(&call_id) {
                        let _ = waiter.send((ok, content));
                    }
                }
                Ok(Some(HostFrame::Shutdown)) | Ok(None) => break Ok(()),
                Ok(Some(HostFrame::Error { message })) => break Err(anyhow::anyhow!("the host reported: {message}")),
                Ok(Some(HostFrame::Hello { .. })) => {}
                Err(error) => break Err(error.into()),
            },
            frame = out_rx.recv() => match frame {
                // A reply too large for a frame is cut to fit, on that failure only:
                // encoding every reply twice to check first would cost each turn.
                Some(frame) => match conn.send(&frame).await {
                    Err(palisade_host::protocol::ProtocolError::TooLarge(_)) => {
                        conn.send(&fitted_reply(frame)).await?
                    }
                    sent => sent?,
                },
                None => break Ok(()),
            },
        }
    };
    turns.abort();
    result
}

/// Runs deliveries one at a time.
async fn run_turns(
    mut deliveries: mpsc::Receiver<Delivery>,
    out: mpsc::Sender<RunnerFrame>,
    host: Arc<SocketHost>,
    http: HttpClient,
    workspace: PathBuf,
) {
    while let Some(delivery) = deliveries.recv().await {
        let message_id = delivery.message_id;
        host.message_id.store(message_id, Ordering::SeqCst);
        let frame = match turn(&delivery, &out, &host, &http, &workspace).await {
            Ok((text, history, is_error)) => RunnerFrame::Reply {
                message_id,
                session_id: delivery.session_id,
                text,
                history,
                is_error,
            },
            Err(error) => RunnerFrame::Error {
                message_id: Some(message_id),
                message: format!("{error:#}"),
            },
        };
        if out.send(frame).await.is_err() {
            return;
        }
    }
}

/// Most of one answer kept when a reply would not fit in a frame.
const REPLY_TEXT_KEPT: usize = 256 * 1024;
/// Most of any one text of the history kept then.
const HISTORY_TEXT_KEPT: usize = 64 * 1024;

/// A reply that fits in one frame of the host protocol: one that would not (an answer
/// of 700 KB, with the history that holds it again) failed to send, the host took the
/// runner for dead and delivered the message again, three times, each a paid model
/// call, and the answer was lost. Then the answer is cut to [`REPLY_TEXT_KEPT`] and
/// every text of the history to [`HISTORY_TEXT_KEPT`], each saying so; and if that
/// is still too much, the history is left out (the conversation goes on without it).
fn fitted_reply(frame: RunnerFrame) -> RunnerFrame {
    let fits = |frame: &RunnerFrame| palisade_host::protocol::encode_body(frame).is_ok();
    if fits(&frame) {
        return frame;
    }
    let RunnerFrame::Reply {
        message_id,
        session_id,
        mut text,
        mut history,
        is_error,
    } = frame
    else {
        return frame;
    };
    cut_text(&mut text, REPLY_TEXT_KEPT);
    cut_strings(&mut history, HISTORY_TEXT_KEPT);
    let mut frame = RunnerFrame::Reply {
        message_id,
        session_id,
        text,
        history,
        is_error,
    };
    if !fits(&frame) {
        if let RunnerFrame::Reply { history, .. } = &mut frame {
            *history = serde_json::Value::Array(Vec::new());
        }
    }
    frame
}

/// `text` cut to at most `limit` bytes (at a character's start), saying how much went.
fn cut_text(text: &mut String, limit: usize) {
    if text.len() <= limit {
        return;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = text.len() - end;
    text.truncate(end);
    text.push_str(&format!(
        "\n\n[Palisade cut this answer here: {cut} more bytes than one reply may hold]"
    ));
}

/// Every string in `value` cut as [`cut_text`] cuts it.
fn cut_strings(value: &mut serde_json::Value, limit: usize) {
    match value {
        serde_json::Value::String(text) => cut_text(text, limit),
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| cut_strings(v, limit)),
        serde_json::Value::Object(map) => map.values_mut().for_each(|v| cut_strings(v, limit)),
        _ => {}
    }
}

async fn turn(
    delivery: &Delivery,
    out: &mpsc::Sender<RunnerFrame>,
    host: &Arc<SocketHost>,
    http: &HttpClient,
    workspace: &std::path::Path,
) -> anyhow::Result<(String, serde_json::Value, bool)> {
    let agent = &delivery.agent;
    let provider_config = match agent.provider.as_str() {
        "anthropic" => ProviderConfig::anthropic(&agent.base_url).with_model(&agent.model),
        "openai" => ProviderConfig::openai(&agent.base_url, &agent.model),
        other => anyhow::bail!("provider {other:?} is not supported"),
    };
    let provider = provider_config.clone().build(http.clone());
    let mut config = AgentConfig::default();
    if !agent.instructions.trim().is_empty() {
        config.instructions = agent.instructions.clone();
    }
    if let Some(n) = agent.max_tool_iterations {
        config.max_tool_iterations = n;
    }
    if let Some(n) = agent.max_output_tokens {
        config.max_output_tokens = n;
    }
    let (history, summary) = decode_history(&delivery.history);
    let mut session = Session::restore(config, provider, history, summary);
    let workspace = Workspace::new(workspace).context("cannot open the workspace")?;
    let host_tools: Arc<dyn HostTools> = host.clone();
    let mut tools = Tools::new(workspace, host_tools).with_http(http.clone());
    if let Some(allowed) = &agent.tools {
        tools = tools.allow_only(allowed.iter().cloned());
    }
    if let Some(strictness) = agent.sanitize_web.as_deref().and_then(|s| s.parse().ok()) {
        tools = tools.sanitize_web(strictness);
    }
    let message_id = delivery.message_id;
    let mut on_event = |event: Event| {
        let event = match event {
            Event::TextDelta(text) => serde_json::json!({"kind": "text_delta", "text": text}),
            Event::ToolCall { name, .. } => serde_json::json!({"kind": "tool_call", "name": name}),
            Event::ToolResult { name, is_error, .. } => {
                serde_json::json!({"kind": "tool_result", "name": name, "is_error": is_error})
            }
            Event::Retrying { reason, .. } => {
                serde_json::json!({"kind": "status", "message": format!("retrying: {reason}")})
            }
            _ => return,
        };
        // Streaming is best effort: the reply carries the whole answer.
        let _ = out.try_send(RunnerFrame::Event { message_id, event });
    };
    let outcome = palisade_runner::run_turn(&mut session, &delivery.text, &tools, &mut on_event)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // A model the API does not serve is one line for the person, not a reply the
    // agent remembers (the message can be sent again once the model is changed).
    // Another model error ends the turn with what the agent did before it (its history
    // keeps the tools it ran) and a reply marked as an error.
    let failed = match &outcome.stop {
        palisade_runner::TurnStop::ModelError(error) if error.is_model_unavailable() => {
            // With the models the server does serve, to choose from.
            let listed = palisade_runner::provider::listed_models(&provider_config, http).await;
            let mut line =
                palisade_policy::models::model_unavailable_message(&agent.model, &agent.name);
            if !listed.is_empty() {
                line.push_str(&format!(" (the server lists {})", listed.join(", ")));
            }
            anyhow::bail!(line);
        }
        palisade_runner::TurnStop::ModelError(_) => true,
        _ => false,
    };
    Ok((outcome.text, encode_history(&session), failed))
}

/// History as stored by the host: the messages, preceded by `{"summary": …}` when
/// older turns were compacted.
fn encode_history(session: &Session) -> serde_json::Value {
    let mut items = Vec::new();
    if let Some(summary) = session.summary() {
        items.push(serde_json::json!({ "summary": summary }));
    }
    items.extend(
        session
            .history()
            .iter()
            .filter_map(|m| serde_json::to_value(m).ok()),
    );
    serde_json::Value::Array(items)
}

fn decode_history(value: &serde_json::Value) -> (Vec<Message>, Option<String>) {
    let mut summary = None;
    let mut messages = Vec::new();
    for item in value.as_array().into_iter().flatten() {
        if let Some(text) = item.get("summary").and_then(|s| s.as_str()) {
            summary = Some(text.to_string());
            continue;
        }
        match serde_json::from_value::<Message>(item.clone()) {
            Ok(message) => messages.push(message),
            Err(error) => {
                tracing::warn!(%error, "stored history is unreadable; starting the conversation afresh");
                return (Vec::new(), None);
            }
        }
    }
    (messages, summary)
}

/// Host tools over the socket.
struct SocketHost {
    out: mpsc::Sender<RunnerFrame>,
    pending: Pending,
    message_id: AtomicI64,
    next_call: AtomicU64,
}

impl SocketHost {
    async fn call(&self, call: HostCall) -> Result<String, HostToolError> {
        self.call_within(call, HOST_TOOL_TIMEOUT).await
    }

    async fn call_within(
        &self,
        call: HostCall,
        timeout: Duration,
    ) -> Result<String, HostToolError> {
        let call_id = format!("h{}", self.next_call.fetch_add(1, Ordering::SeqCst));
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(call_id.clone(), tx);
        let (name, input) = call.into_wire();
        let frame = RunnerFrame::ToolCall {
            call_id: call_id.clone(),
            message_id: self.message_id.load(Ordering::SeqCst),
            name,
            input,
        };
        if self.out.send(frame).await.is_err() {
            lock(&self.pending).remove(&call_id);
            return Err(HostToolError("the host connection is gone".into()));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok((true, content))) => Ok(content),
            Ok(Ok((false, content))) => Err(HostToolError(content)),
            Ok(Err(_)) => Err(HostToolError("the host connection is gone".into())),
            Err(_) => {
                lock(&self.pending).remove(&call_id);
                Err(HostToolError("the host did not answer in time".into()))
            }
        }
    }
}

impl HostTools for SocketHost {
    fn send_message<'a>(&'a self, text: &'a str) -> BoxFuture<'a, Result<(), HostToolError>> {
        Box::pin(async move {
            self.call(HostCall::SendMessage {
                text: text.to_string(),
            })
            .await
            .map(|_| ())
        })
    }

    fn memory_read(&self) -> BoxFuture<'_, Result<String, HostToolError>> {
        Box::pin(self.call(HostCall::MemoryRead {}))
    }

    fn memory_append<'a>(&'a self, note: &'a str) -> BoxFuture<'a, Result<(), HostToolError>> {
        Box::pin(async move {
            self.call(HostCall::MemoryAppend {
                note: note.to_string(),
            })
            .await
            .map(|_| ())
        })
    }

    fn request_approval<'a>(
        &'a self,
        action: &'a str,
        details: &'a str,
    ) -> BoxFuture<'a, Result<String, HostToolError>> {
        Box::pin(self.call_within(
            HostCall::RequestApproval {
                action: action.to_string(),
                details: details.to_string(),
            },
            APPROVAL_TOOL_TIMEOUT,
        ))
    }

    fn message_agent<'a>(
        &'a self,
        agent: &'a str,
        text: &'a str,
        wait: bool,
    ) -> BoxFuture<'a, Result<String, HostToolError>> {
        let (agent, text) = (agent.to_string(), text.to_string());
        let call = if wait {
            HostCall::AskAgent { agent, text }
        } else {
            HostCall::TellAgent { agent, text }
        };
        // Waiting for the other agent (5 min), and for people where its allow-list
        // entry asks for approval.
        Box::pin(self.call_within(call, APPROVAL_TOOL_TIMEOUT))
    }

    fn list_grants(&self) -> BoxFuture<'_, Result<Vec<Grant>, HostToolError>> {
        Box::pin(async move {
            let text = self.call(HostCall::ListGrants {}).await?;
            let items: Vec<serde_json::Value> = serde_json::from_str(&text)
                .map_err(|e| HostToolError(format!("the host's grant list is malformed: {e}")))?;
            Ok(items
                .into_iter()
                .map(|item| Grant {
                    secret: item["secret"].as_str().unwrap_or_default().to_string(),
                    host_pattern: item["host_pattern"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    path_pattern: item["path_pattern"].as_str().map(str::to_string),
                })
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(text: &str, history: serde_json::Value) -> RunnerFrame {
        RunnerFrame::Reply {
            message_id: 7,
            session_id: 3,
            text: text.to_string(),
            history,
            is_error: false,
        }
    }

    /// A 700 KB answer, held again by the history, is cut to fit one frame, saying so;
    /// a reply that fits is sent as it is.
    #[test]
    fn a_reply_too_large_for_a_frame_is_cut_to_fit() {
        let answer = "é".repeat(350_000);
        let history = serde_json::json!([
            {"role": "user", "content": [{"type": "text", "text": "write a lot"}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ]);
        let big = reply(&answer, history.clone());
        assert!(palisade_host::protocol::encode_body(&big).is_err());
        let fitted = fitted_reply(big);
        assert!(palisade_host::protocol::encode_body(&fitted).is_ok());
        let RunnerFrame::Reply { text, history, .. } = fitted else {
            panic!("not a reply");
        };
        assert!(text.starts_with(&answer[..1000]));
        assert!(
            text.ends_with("more bytes than one reply may hold]"),
            "{}",
            &text[text.len() - 200..]
        );
        assert!(text.len() < REPLY_TEXT_KEPT + 200);
        assert_eq!(history[0]["content"][0]["text"], "write a lot");
        let kept = history[1]["content"][0]["text"].as_str().unwrap();
        assert!(kept.len() < HISTORY_TEXT_KEPT + 200 && kept.ends_with("reply may hold]"));

        let small = reply("short", history.clone());
        assert_eq!(fitted_reply(small.clone()), small);
    }
}
