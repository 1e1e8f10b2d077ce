//! WebSocket connections to a platform (Slack's Socket Mode, Discord's gateway), on the
//! tokio-tungstenite the vault already uses, over TLS from the same rustls/ring
//! configuration as [`crate::http`].
//!
//! The URL of such a connection comes from the platform (`apps.connections.open`,
//! `GET /gateway/bot`, a gateway's `resume_gateway_url`): it is checked like an API base
//! URL (TLS, or plain only to a loopback address), the handshake and every read are
//! bounded in time by the callers, and a message is bounded in size here.

use crate::channel::ChannelError;
use crate::http::HttpError;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

/// Largest message read from a platform's socket.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// How long the TCP connect, TLS and WebSocket handshakes may take together.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// A byte stream, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub type Socket = WebSocketStream<Box<dyn Io>>;

fn failed(what: &str, reason: impl std::fmt::Display) -> ChannelError {
    ChannelError::Http(HttpError::Transport {
        what: what.to_string(),
        reason: reason.to_string(),
    })
}

/// Opens a WebSocket to `url` (`wss://`, or `ws://` to a loopback address). `what`
/// names the connection in errors (never the URL: Slack's carries a ticket).
pub async fn connect(what: &str, url: &url::Url) -> Result<Socket, ChannelError> {
    crate::http::check_base_url(url)
        .map_err(|reason| ChannelError::Platform(format!("{what}: {reason}")))?;
    let tls = match url.scheme() {
        "wss" | "https" => true,
        "ws" | "http" => false,
        other => {
            return Err(ChannelError::Platform(format!(
                "{what}: the platform named a {other}: URL; only wss is accepted"
            )))
        }
    };
    let host = url
        .host_str()
        .ok_or_else(|| ChannelError::Platform(format!("{what}: the URL has no host")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url
        .port_or_known_default()
        .unwrap_or(if tls { 443 } else { 80 });
    let mut request_url = url.clone();
    // tungstenite wants ws/wss.
    let _ = request_url.set_scheme(if tls { "wss" } else { "ws" });
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| failed(what, format!("cannot connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Io> = if tls {
            let name = rustls_pki_types::ServerName::try_from(host.clone())
                .map_err(|_| ChannelError::Platform(format!("{what}: the host name is invalid")))?;
            let connector = tokio_rustls::TlsConnector::from(Arc::new(crate::http::tls_config()));
            Box::new(
                connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| failed(what, format!("TLS: {e}")))?,
            )
        } else {
            Box::new(tcp)
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE_BYTES))
            .max_frame_size(Some(MAX_MESSAGE_BYTES));
        let (socket, _) =
            tokio_tungstenite::client_async_with_config(request_url.as_str(), stream, Some(config))
                .await
                .map_err(|e| failed(what, format!("WebSocket handshake: {}", describe(&e))))?;
        Ok::<_, ChannelError>(socket)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, handshake)
        .await
        .map_err(|_| {
            ChannelError::Http(HttpError::Timeout {
                what: what.to_string(),
                seconds: CONNECT_TIMEOUT.as_secs(),
            })
        })?
}

/// A tungstenite error in one line, without a URL.
pub fn describe(error: &tokio_tungstenite::tungstenite::Error) -> String {
    use tokio_tungstenite::tungstenite::Error;
    match error {
        Error::Http(response) => format!("HTTP {}", response.status()),
        Error::Url(_) => "the URL is not usable".into(),
        other => other
            .to_string()
            .split("://")
            .next()
            .unwrap_or_default()
            .to_string(),
    }
}
