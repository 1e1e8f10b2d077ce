//! The baseline for the warm wake: the same two frames the host and a runner exchange
//! when a message arrives (`deliver` one way, the runner's `started` event back),
//! over a bare Unix socket with the host protocol's codec, between this process and a
//! child process that only echoes. No store, no worker, no sandbox, no HTTP: what is
//! left is the socket, the framing, JSON and two process wake-ups.

use anyhow::{bail, Context};
use palisade_host::protocol::{
    AgentFrame, Delivery, HostConnection, HostFrame, RunnerConnection, RunnerFrame,
};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::net::{UnixListener, UnixStream};

/// A delivery shaped like the host's (agent settings, instructions, no history).
pub fn sample_delivery(message_id: i64, instructions: &str) -> Delivery {
    Delivery {
        message_id,
        session_id: message_id,
        text: format!("bench message {message_id}"),
        history: serde_json::json!([]),
        agent: AgentFrame {
            name: "bench-000".into(),
            provider: "anthropic".into(),
            model: "claude-test".into(),
            base_url: "https://localhost:1".into(),
            instructions: instructions.into(),
            memory: String::new(),
            tools: None,
            max_tool_iterations: None,
            max_output_tokens: None,
            sanitize_web: None,
        },
    }
}

/// The echoing side (`host-bench echo-peer`): answers every `deliver` with `started`.
pub async fn peer(socket: &Path) -> anyhow::Result<()> {
    let stream = UnixStream::connect(socket)
        .await
        .with_context(|| format!("cannot connect to {}", socket.display()))?;
    let mut conn = RunnerConnection::new(stream);
    while let Some(frame) = conn.recv().await? {
        if let HostFrame::Deliver(delivery) = frame {
            conn.send(&RunnerFrame::Event {
                message_id: delivery.message_id,
                event: serde_json::json!({"kind": "started"}),
            })
            .await?;
        }
    }
    Ok(())
}

/// Round trips of `deliver` → `started` with a child echo process, in microseconds.
pub async fn round_trips(
    dir: &Path,
    samples: usize,
    instructions: &str,
) -> anyhow::Result<Vec<u32>> {
    let socket = dir.join("echo.sock");
    let listener = UnixListener::bind(&socket).context("cannot bind the echo socket")?;
    let exe = std::env::current_exe().context("cannot find this program")?;
    let mut child = tokio::process::Command::new(exe)
        .arg("echo-peer")
        .arg("--socket")
        .arg(&socket)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the echo peer")?;
    let (stream, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .context("the echo peer did not connect")??;
    let mut conn = HostConnection::new(stream);
    let mut micros = Vec::with_capacity(samples);
    for i in 0..samples as i64 {
        let frame = HostFrame::Deliver(Box::new(sample_delivery(i + 1, instructions)));
        let started = Instant::now();
        conn.send(&frame).await?;
        match tokio::time::timeout(Duration::from_secs(5), conn.recv()).await {
            Ok(Ok(Some(RunnerFrame::Event { message_id, .. }))) if message_id == i + 1 => {}
            other => bail!("the echo peer answered {other:?}"),
        }
        micros.push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
    }
    drop(conn);
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    let _ = child.kill().await;
    let _ = std::fs::remove_file(&socket);
    Ok(micros)
}
