//! `palisade send`: a message to an agent through the running host, with the reply
//! streamed to stdout as it comes (NDJSON events from the host's local API).

use super::up::{running_host, HostInfo};
use crate::context::Context;
use anyhow::{bail, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use palisade_policy::AgentName;
use std::io::{Read, Write};
use std::time::Duration;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  palisade send --agent assistant \"what is in my workspace?\"
  palisade send --agent helper --conversation project-x \"summarise notes.md\"
  echo \"long text\" | palisade send --agent helper -")]
pub struct SendArgs {
    /// The agent to talk to (may be left out when there is only one).
    #[arg(long, value_name = "NAME")]
    agent: Option<String>,
    /// Conversation (session) key; the same key continues the same conversation.
    #[arg(long, default_value = "cli", value_name = "KEY")]
    conversation: String,
    /// The message (`-` reads it from stdin).
    #[arg(value_name = "TEXT")]
    text: String,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The agent named, or the home's only agent when none is: `--agent` is needed only
/// where there is a choice (and the error then lists the agents).
pub(crate) fn agent_or_only_one(named: Option<&str>, ctx: &Context) -> anyhow::Result<AgentName> {
    if let Some(name) = named {
        return Ok(AgentName::new(name)?);
    }
    // Not a home made by asking (opening the store would create one).
    if !ctx.home.database().exists() {
        bail!(
            "there is no Palisade home at {} yet; start with `palisade up`",
            ctx.home.root().display()
        );
    }
    let agents = ctx.open_store()?.list_agents()?;
    match agents.as_slice() {
        [only] => Ok(only.name.clone()),
        [] => bail!("this home has no agent yet; create one with `palisade agents create NAME`"),
        many => bail!(
            "give the agent with --agent NAME; this home has {}",
            many.iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

pub fn run(args: SendArgs, ctx: &Context) -> anyhow::Result<()> {
    let agent = agent_or_only_one(args.agent.as_deref(), ctx)?;
    let text = if args.text == "-" {
        let mut text = String::new();
        std::io::stdin()
            .take(palisade_host::MAX_MESSAGE_BYTES as u64 + 1)
            .read_to_string(&mut text)
            .context("cannot read the message from stdin")?;
        if text.len() > palisade_host::MAX_MESSAGE_BYTES {
            bail!(
                "the message on stdin is too large (more than {} bytes); send a shorter one or put the text in a file in the agent's workspace",
                palisade_host::MAX_MESSAGE_BYTES
            );
        }
        text
    } else {
        args.text
    };
    check_text(&text)?;
    let Some(info) = running_host(&ctx.home) else {
        bail!("palisade is not running for this home; start it with `palisade up` (or `palisade up --detach`)");
    };
    let body = serde_json::json!({
        "text": text,
        "conversation": args.conversation,
        "channel": "cli",
    });
    let path = format!("/api/agents/{agent}/messages");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let json = ctx.json;
    let outcome = runtime.block_on(async move { stream_reply(&info, &path, body, json).await })?;
    if let Ok(store) = ctx.open_store() {
        acknowledge(&store, &outcome);
    }
    if let Some(error) = outcome.error.or(outcome.lost) {
        bail!("{error}");
    }
    Ok(())
}

/// Refuses text the host would refuse, with the same one-line causes.
pub(crate) fn check_text(text: &str) -> anyhow::Result<()> {
    if text.trim().is_empty() {
        bail!("the message is empty; write something for the agent to answer");
    }
    if text.len() > palisade_host::MAX_MESSAGE_BYTES {
        bail!(
            "the message is too large ({} bytes; at most {}); send a shorter one or put the text in a file in the agent's workspace",
            text.len(),
            palisade_host::MAX_MESSAGE_BYTES
        );
    }
    Ok(())
}

pub(crate) async fn request(
    info: &HostInfo,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(info.listen))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the host at {} did not accept a connection within 5 s",
                info.listen
            )
        })?
        .with_context(|| {
            format!(
                "cannot reach the host at {}; is it still running?",
                info.listen
            )
        })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("cannot talk to the host")?;
    tokio::spawn(connection);
    let body = match body {
        Some(value) => Full::new(Bytes::from(serde_json::to_vec(&value)?)),
        None => Full::new(Bytes::new()),
    };
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, info.listen.to_string())
        .header(
            hyper::header::AUTHORIZATION,
            format!("Bearer {}", info.token),
        )
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(body)?;
    sender
        .send_request(request)
        .await
        .context("the host closed the connection")
}

/// GETs a JSON document from the host's API.
pub fn get_json(info: &HostInfo, path: &str) -> anyhow::Result<serde_json::Value> {
    call_json(info, "GET", path)
}

/// POSTs (with no body) to the host's API and returns its JSON answer.
pub fn post_json(info: &HostInfo, path: &str) -> anyhow::Result<serde_json::Value> {
    call_json(info, "POST", path)
}

fn call_json(info: &HostInfo, method: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let response = tokio::time::timeout(Duration::from_secs(10), async {
            let response = request(info, method, path, None).await?;
            let status = response.status();
            let bytes = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, bytes))
        })
        .await
        .map_err(|_| anyhow::anyhow!("the host did not answer within 10 s"))??;
        if !response.0.is_success() {
            bail!("the host answered {}", response.0);
        }
        Ok(serde_json::from_slice(&response.1)?)
    })
}

/// How one message went, as far as the stream told.
#[derive(Debug, Default)]
pub(crate) struct Streamed {
    /// The host refused the message or answered with an error reply: the cause.
    pub error: Option<String>,
    /// The session the message was accepted into.
    pub session_id: Option<i64>,
    /// The message's id, once accepted.
    pub message_id: Option<i64>,
    /// The reply (or error reply) was received and shown.
    pub answered: bool,
    /// The message was accepted (stored) but the host went away before the reply:
    /// what to tell the person.
    pub lost: Option<String>,
}

impl Streamed {
    /// After the host accepted the message, a broken stream is not a failure to send:
    /// the message stays queued. Before that, it is.
    fn lost(mut self, error: impl std::fmt::Display) -> anyhow::Result<Streamed> {
        if self.message_id.is_none() {
            bail!("{error}");
        }
        self.lost = Some(format!(
            "{error}; message {} stays queued and will be answered after the host starts again (see `palisade sessions show{}`)",
            self.message_id.unwrap_or_default(),
            self.session_id.map(|id| format!(" {id}")).unwrap_or_default()
        ));
        Ok(self)
    }
}

/// Records that the reply to `message_id` reached the person (it was printed), so it is
/// not shown again as one they have not seen. Best effort: a failure only means the
/// reply is shown once more later.
pub(crate) fn acknowledge(store: &palisade_store::Store, streamed: &Streamed) {
    if let (true, Some(id)) = (streamed.answered, streamed.message_id) {
        if let Err(error) = store.mark_reply_delivered(id) {
            tracing::debug!(%error, "could not mark the reply delivered");
        }
    }
}

/// Streams the reply to stdout as it comes; `Err` only when the host went away.
pub(crate) async fn stream_reply(
    info: &HostInfo,
    path: &str,
    body: serde_json::Value,
    json: bool,
) -> anyhow::Result<Streamed> {
    let response = request(info, "POST", path, Some(body)).await?;
    let status = response.status();
    let mut body = response.into_body();
    if !status.is_success() {
        let bytes = tokio::time::timeout(Duration::from_secs(10), body.collect())
            .await
            .map_err(|_| anyhow::anyhow!("the host answered {status} and then stalled"))??
            .to_bytes();
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| {
                v.get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| match status.as_u16() {
                413 => "the message is too large".to_string(),
                _ => format!("the host answered {status}"),
            });
        return Ok(Streamed {
            error: Some(message),
            ..Streamed::default()
        });
    }
    let mut streamed = Streamed::default();
    let mut stdout = std::io::stdout();
    let mut buffer: Vec<u8> = Vec::new();
    let mut streamed_text = false;
    // The answer streams to a terminal; to a file or a pipe it is written once, whole,
    // when it is done: a turn that starts again (its runner restarted) streams its
    // answer again from the start, which a terminal can be told about but a captured
    // output would hold twice.
    let live = std::io::IsTerminal::is_terminal(&stdout);
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(error) => {
                return streamed.lost(format!(
                    "lost the connection to the host while waiting for the reply ({error})"
                ))
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buffer.extend_from_slice(&data);
        if buffer.len() > 4 * 1024 * 1024 {
            bail!("the host sent an oversized event");
        }
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            let Ok(event) = serde_json::from_slice::<serde_json::Value>(&line) else {
                continue;
            };
            if event["type"] == "accepted" {
                streamed.session_id = event["session_id"].as_i64();
                streamed.message_id = event["message_id"].as_i64();
            }
            if json {
                writeln!(stdout, "{}", event)?;
                stdout.flush()?;
                if event["type"] == "reply" {
                    streamed.answered = true;
                    // An error reply is a failure for a script too (it exited 0).
                    if event["is_error"].as_bool() == Some(true) {
                        let text = event["text"].as_str().unwrap_or_default();
                        let text = text.strip_prefix("palisade: ").unwrap_or(text);
                        streamed.error = Some(text.to_string());
                    }
                    return Ok(streamed);
                }
                continue;
            }
            match event["type"].as_str() {
                Some("text_delta") if live => {
                    let text = event["text"].as_str().unwrap_or_default();
                    write!(stdout, "{}", clean_text(text))?;
                    stdout.flush()?;
                    streamed_text = true;
                }
                Some("started") if streamed_text => {
                    writeln!(stdout)?;
                    stdout.flush()?;
                    eprintln!(
                        "palisade: the turn started again; its answer follows from the start"
                    );
                    streamed_text = false;
                }
                Some("message") => {
                    let text = event["text"].as_str().unwrap_or_default();
                    writeln!(stdout, "{}", clean_text(text))?;
                }
                Some("tool_call") => {
                    let name = event["name"].as_str().unwrap_or_default();
                    eprintln!("[{}]", crate::output::clean(name));
                }
                Some("status") => {
                    let text = event["message"].as_str().unwrap_or_default();
                    eprintln!("palisade: {}", clean_text(text));
                }
                Some("reply") => {
                    let text = event["text"].as_str().unwrap_or_default();
                    streamed.answered = true;
                    if event["is_error"].as_bool() == Some(true) {
                        if streamed_text {
                            writeln!(stdout)?;
                        }
                        // Shown after `error: `; the host's own prefix would double it.
                        let text = text.strip_prefix("palisade: ").unwrap_or(text);
                        streamed.error = Some(text.to_string());
                        return Ok(streamed);
                    }
                    // Deltas are the reply as it streamed; print the whole reply only
                    // when nothing streamed (e.g. a runner that does not stream).
                    if streamed_text {
                        writeln!(stdout)?;
                    } else {
                        writeln!(stdout, "{}", clean_text(text))?;
                    }
                    stdout.flush()?;
                    return Ok(streamed);
                }
                _ => {}
            }
        }
    }
    streamed.lost("the host closed the stream before the reply")
}

/// Agent text keeps its lines (ended by `\n` or `\r\n`) and tabs; other control
/// characters (escape sequences, a lone `\r` that would return over a line's start)
/// are shown escaped so a reply cannot restyle the terminal or hide what it wrote.
pub(crate) fn clean_text(text: &str) -> String {
    text.split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .map(|line| {
            line.split('\t')
                .map(crate::output::clean)
                .collect::<Vec<_>>()
                .join("\t")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::clean_text;

    #[test]
    fn agent_text_keeps_its_lines_and_shows_other_controls_escaped() {
        // Windows line ends are line ends (they showed as `\u{d}` on every line).
        assert_eq!(clean_text("one\r\ntwo\r\n"), "one\ntwo\n");
        assert_eq!(clean_text("a\tb\nc"), "a\tb\nc");
        // A lone carriage return would write the rest over the line's start.
        assert_eq!(clean_text("paid\rnot paid"), "paid\\u{d}not paid");
        assert_eq!(clean_text("\u{1b}[2Jx"), "\\u{1b}[2Jx");
    }
}
