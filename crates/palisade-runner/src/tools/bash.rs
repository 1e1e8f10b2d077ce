//! The `bash` tool: `bash -c COMMAND` in the workspace, bounded in time and output.
//!
//! The command runs in its own process group. When it times out the whole group is
//! killed, not only `bash`, so a `sleep` or server it started cannot linger; the group
//! is killed after a normal exit too, because a background job still holding the
//! output pipes would otherwise keep the call waiting.

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::Workspace;

/// How long output readers may take after the command ended.
const DRAIN_GRACE: Duration = Duration::from_millis(500);

pub(crate) async fn run(
    workspace: &Workspace,
    command: &str,
    timeout: Duration,
    output_cap: usize,
) -> Result<String, String> {
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(command)
        .current_dir(workspace.root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| format!("cannot start bash: {error}"))?;
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    let stdout = child
        .stdout
        .take()
        .map(|out| tokio::spawn(read_capped(out, output_cap)));
    let stderr = child
        .stderr
        .take()
        .map(|err| tokio::spawn(read_capped(err, output_cap)));

    let waited = tokio::time::timeout(timeout, child.wait()).await;
    if let Some(group) = group {
        // ESRCH (already gone) is the usual case after a clean exit.
        let _ = killpg(group, Signal::SIGKILL);
    }
    let status = match waited {
        Ok(status) => Some(status.map_err(|error| format!("waiting for bash failed: {error}"))?),
        Err(_) => {
            let _ = child.wait().await;
            None
        }
    };
    let stdout = collect(stdout).await;
    let stderr = collect(stderr).await;

    let mut output = stdout;
    if !stderr.is_empty() {
        if !output.is_empty() && !output.ends_with('\n') {
            output.push('\n');
        }
        output.push_str("[stderr]\n");
        output.push_str(&stderr);
    }
    match status {
        None => Err(format!(
            "the command timed out after {} s and was killed (with everything it started)\n{output}",
            timeout.as_secs_f64()
        )),
        Some(status) if status.success() => {
            if output.is_empty() {
                output.push_str("(no output)");
            }
            Ok(output)
        }
        Some(status) => {
            let code = status
                .code()
                .map(|code| format!("exit code {code}"))
                .unwrap_or_else(|| "killed by a signal".to_string());
            Err(format!("{output}\n[{code}]"))
        }
    }
}

async fn collect(reader: Option<tokio::task::JoinHandle<String>>) -> String {
    let Some(mut reader) = reader else {
        return String::new();
    };
    match tokio::time::timeout(DRAIN_GRACE, &mut reader).await {
        Ok(Ok(text)) => text,
        _ => {
            reader.abort();
            String::new()
        }
    }
}

/// Reads everything, keeps the first `cap` bytes.
async fn read_capped(mut reader: impl AsyncRead + Unpin, cap: usize) -> String {
    let mut kept = Vec::new();
    let mut total = 0usize;
    let mut buffer = [0u8; 8192];
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => {
                total += read;
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buffer[..read.min(room)]);
            }
        }
    }
    let mut text = String::from_utf8_lossy(&kept).into_owned();
    if total > kept.len() {
        text.push_str(&format!(
            "\n[output truncated: {total} bytes in all, the first {} shown]",
            kept.len()
        ));
    }
    text
}
