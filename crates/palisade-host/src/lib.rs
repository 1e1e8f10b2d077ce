//! The Palisade host: messages in, agents woken in their sandboxes, replies out.
//!
//! - [`protocol`]: frames on the host ↔ runner socket (length-prefixed JSON, versioned).
//! - [`host`]: [`Host`], the router in front of the durable queue (tables in
//!   palisade-store), streaming each message's events to whoever waits for it.
//! - `worker`: one task per agent owning its slots, each a host socket, a runner and a
//!   delivery loop (supervision, back-off, turn timeout, idle stop, redelivery).
//! - [`launcher`]: how a runner is started; [`launcher::SandboxLauncher`] runs
//!   `palisade runner` in the agent's sandbox.
//! - [`settings`]: an agent's model settings, instructions and memory files.
//! - [`agents`]: creating, changing and deleting agents, turning their dial, their
//!   agent-to-agent allow-list and their policy in plain words (the CLI and the web UI both).
//! - [`models`]: the models an agent's provider lists, asked through the vault.
//! - [`setup`]: the first run: the default agent and its model key.
//! - [`doctor`]: what `palisade doctor` and the web UI's Health page check.
//! - [`folders`]: host folders shared with agents, checked when named and at launch.
//! - [`api`]: the local JSON API `palisade up` serves on 127.0.0.1.
//! - [`admin_sessions`]: the web admin's sessions, one per login, with idle and
//!   absolute expiry.

mod a2a;
pub mod admin_sessions;
pub mod agents;
pub mod api;
mod approvals;
mod delivery;
pub mod doctor;
pub mod folders;
pub mod host;
pub mod launcher;
pub mod models;
pub mod protocol;
mod runner_socket;
pub mod settings;
pub mod setup;
mod tools;
mod worker;

pub use host::{Host, HostConfig, StreamEvent, MAX_MESSAGE_BYTES};
pub use launcher::{RunnerLauncher, RunnerProcess, SandboxLauncher, SANDBOX_HOST_SOCKET};
pub use runner_socket::socket_path;
pub use settings::AgentSettings;

use palisade_policy::AgentName;

/// Errors of the host. One line each, saying what to do next.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Store(#[from] palisade_store::StoreError),
    #[error("unknown agent \"{0}\"; create it with `palisade agents create {0}`")]
    UnknownAgent(AgentName),
    #[error("the message is empty; write something for the agent to answer")]
    EmptyMessage,
    #[error("the message is too large ({size} bytes; at most {limit}); send a shorter one or put the text in a file in the agent's workspace")]
    TooLarge { size: usize, limit: usize },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Io(String),
    #[error("runner: {0}")]
    Runner(String),
    #[error(transparent)]
    Protocol(#[from] protocol::ProtocolError),
    #[error("the host is shutting down")]
    ShuttingDown,
}
