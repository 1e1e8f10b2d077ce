//! Sends one message through the host's local API (`POST /api/agents/NAME/messages`,
//! the path `palisade send` and the web UI use) and timestamps each NDJSON event as
//! its line arrives: `accepted` (stored in the queue), `started` (the runner has it),
//! the first `text_delta`, `reply`.

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What the bench needs from `run/host.json`.
#[derive(serde::Deserialize)]
pub struct HostInfo {
    pub pid: u32,
    pub listen: SocketAddr,
    pub token: String,
}

/// When each event of one message arrived.
#[derive(Debug)]
pub struct Timeline {
    pub sent: Instant,
    pub accepted: Instant,
    pub started: Instant,
    pub first_delta: Option<Instant>,
    pub reply: Instant,
    pub reply_text: String,
}

impl Timeline {
    /// Request written → `accepted` line (HTTP + the durable accept).
    pub fn accept(&self) -> Duration {
        self.accepted - self.sent
    }
    /// `accepted` → `started`: the host wakes the agent's worker, reads the message,
    /// hands it to the runner, and the runner's first frame comes back.
    pub fn wake(&self) -> Duration {
        self.started - self.accepted
    }
    /// `started` → `reply`: the model call through shim and vault, and the reply stored.
    pub fn turn(&self) -> Duration {
        self.reply - self.started
    }
}

/// Posts `text` to `agent` in `conversation` and follows it to the reply.
pub async fn send(
    info: &HostInfo,
    agent: &str,
    conversation: &str,
    text: &str,
    timeout: Duration,
) -> anyhow::Result<Timeline> {
    tokio::time::timeout(timeout, send_inner(info, agent, conversation, text))
        .await
        .with_context(|| format!("no reply from agent {agent} within {timeout:?}"))?
}

async fn send_inner(
    info: &HostInfo,
    agent: &str,
    conversation: &str,
    text: &str,
) -> anyhow::Result<Timeline> {
    let stream = tokio::net::TcpStream::connect(info.listen)
        .await
        .with_context(|| format!("cannot reach the host API at {}", info.listen))?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake with the host")?;
    let driver = tokio::spawn(connection);
    let body = serde_json::json!({"text": text, "conversation": conversation, "channel": "bench"});
    let request = hyper::Request::builder()
        .method("POST")
        .uri(format!("/api/agents/{agent}/messages"))
        .header(hyper::header::HOST, info.listen.to_string())
        .header(
            hyper::header::AUTHORIZATION,
            format!("Bearer {}", info.token),
        )
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(&body)?)))?;
    let sent = Instant::now();
    let response = sender.send_request(request).await?;
    if !response.status().is_success() {
        bail!("the host answered {}", response.status());
    }
    let mut body = response.into_body();
    let mut buffer = Vec::new();
    let (mut accepted, mut started, mut first_delta) = (None, None, None);
    let outcome = loop {
        let Some(frame) = body.frame().await else {
            bail!("the host closed the stream before the reply");
        };
        let now = Instant::now();
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        buffer.extend_from_slice(&data);
        let mut reply = None;
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            let event: serde_json::Value =
                serde_json::from_slice(&line).context("the host sent a malformed event")?;
            match event["type"].as_str() {
                Some("accepted") => accepted = Some(now),
                Some("started") => started = started.or(Some(now)),
                Some("text_delta") => first_delta = first_delta.or(Some(now)),
                Some("reply") => {
                    if event["is_error"].as_bool() == Some(true) {
                        bail!("error reply: {}", event["text"]);
                    }
                    reply = Some(event["text"].as_str().unwrap_or_default().to_string());
                }
                _ => {}
            }
        }
        if let Some(text) = reply {
            break (now, text);
        }
    };
    driver.abort();
    let (Some(accepted), Some(started)) = (accepted, started) else {
        bail!("the stream had no `accepted` or no `started` event (is the runner older than this bench?)");
    };
    Ok(Timeline {
        sent,
        accepted,
        started,
        first_delta,
        reply: outcome.0,
        reply_text: outcome.1,
    })
}
