//! Test support for Palisade. Used only as a dev-dependency.
//!
//! Palisade's tests are black-box: they run the real `palisade` binary, point real
//! clients (curl, `requests`, `httpx`, the `anthropic` SDK) at it, and check what
//! arrives at a real TLS upstream on loopback. This crate owns the pieces every such
//! test needs, so each test reads as the scenario it checks:
//!
//! - [`TestCa`]: a throwaway ECDSA P-256 CA whose PEM file is passed to
//!   `palisade vault serve --upstream-ca FILE` and to clients.
//! - [`Upstream`]: a recording HTTPS server (HTTP/1.1 + h2, SSE, WebSocket, a fake
//!   Anthropic Messages API and a fake OpenAI-compatible chat API) on 127.0.0.1:0.
//! - [`FakeTelegram`] (and the other chat platforms in `chat/`): fake platform APIs
//!   on 127.0.0.1 speaking the documented wire formats.
//! - [`ChildGuard`]: a child process in its own process group, killed with the whole
//!   group on drop, so a failing test never leaves a gateway running.
//! - [`Palisade`]: runs the binary against a fresh temporary `PALISADE_HOME`.
//! - [`python`], [`curl`], [`free_port`], [`wait_for_tcp`], [`wait_until`]: real
//!   clients with hard timeouts and the small waits between them.
//!
//! Everything here talks only to 127.0.0.1 and ::1, and every wait has a timeout.

mod ca;
mod chat;
mod clients;
mod palisade;
mod process;
mod upstream;

pub use ca::{ServerIdentity, TestCa, DEFAULT_SERVER_NAMES};
pub use chat::{
    discord_dm, slack_dm, slack_signature, CallbackAnswer, DiscordCallback, DiscordMessage,
    FakeDiscord, FakeSlack, FakeTelegram, SlackEphemeral, SlackMessage, SlackView, TelegramMessage,
    DISCORD_APPLICATION, DISCORD_BOT_USER, DISCORD_HEARTBEAT_MS, SLACK_BOT_USER,
};
pub use clients::{
    curl, free_port, output_text, python, run_with_timeout, wait_for_tcp, wait_until,
};
pub use palisade::{proxy_url, Palisade};
pub use process::{unmount_under, ChildGuard};
pub use upstream::{
    RecordedRequest, ScriptedTurn, Upstream, UpstreamBuilder, DEFAULT_MODELS, RECORDED_BODY_MAX,
};

use std::sync::Arc;

/// What can go wrong while setting up a test fixture.
#[derive(Debug, thiserror::Error)]
pub enum KitError {
    #[error("certificate generation failed: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("I/O failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The one crypto provider the kit uses, chosen explicitly so the result does not
/// depend on which rustls features other crates in the same test build enable.
pub(crate) fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
