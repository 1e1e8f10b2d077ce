//! The gateway's control socket: how a change made by a CLI command or the web UI is
//! in force in every running gateway of the home before that command returns.
//!
//! Each gateway listens on `run/gateways/<pid>-<n>.sock` (mode 0600 in a 0700
//! folder, never mounted into a sandbox). A process that committed a configuration
//! change connects, writes `sync VERSION`, and the gateway reloads its policy, agent
//! sockets and held approvals before it answers `ok VERSION`, or `error REASON` when
//! the configuration cannot be loaded and the previous one stays in force (see
//! `palisade_store::gateways` for the client side). The 200 ms poll of the database
//! stays as the fallback for writers that do not sync.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

/// How long a client may take to send its line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest line accepted (`sync` and a number).
const MAX_LINE: u64 = 64;

/// Binds the control socket; `None` (with a warning) when it cannot: the gateway still
/// runs, and changes then reach it through the poll.
pub(crate) fn bind(home: &palisade_store::Home) -> Option<(UnixListener, PathBuf)> {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let dir = home.gateway_control_dir();
    let prepared = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)));
    if let Err(e) = prepared {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot prepare the control socket folder; changes reach this gateway within 200 ms instead of at once");
        return None;
    }
    let path = dir.join(format!(
        "{}-{}.sock",
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&path);
    match UnixListener::bind(&path) {
        Ok(listener) => {
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
            Some((listener, path))
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot bind the control socket; changes reach this gateway within 200 ms instead of at once");
            None
        }
    }
}

/// Longest reason sent back for a configuration that cannot be loaded.
const MAX_REASON: usize = 300;

/// `reason` as one line of at most [`MAX_REASON`] characters, without control
/// characters: the client shows it to a person.
fn one_line(reason: &str) -> String {
    let line: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON)
        .collect();
    line.trim().to_string()
}

/// Answers `sync` requests until shutdown.
pub(crate) async fn serve(
    listener: UnixListener,
    refresher: Arc<crate::gateway::Refresher>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = crate::stopped(&mut shutdown) => return,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let refresher = refresher.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_LINE));
            let read = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await;
            if !matches!(read, Ok(Ok(n)) if n > 0) || !line.trim().starts_with("sync") {
                return;
            }
            let answer = match refresher.refresh().await {
                Ok(version) => format!("ok {version}\n"),
                Err(reason) => format!("error {}\n", one_line(&reason)),
            };
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, write.write_all(answer.as_bytes())).await;
        });
    }
}
