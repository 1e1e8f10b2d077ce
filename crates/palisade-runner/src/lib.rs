//! The agent loop that `palisade runner` runs inside a sandbox.
//!
//! A person's message becomes one [`run_turn`]: the model is asked (Anthropic
//! Messages or an OpenAI-compatible chat API, both streamed), the tools it calls run
//! inside the agent's workspace, their results go back to the model, and so on until
//! it answers or a limit is hit. Everything the loop does is reported as [`Event`]s
//! through a callback, so the host can stream replies to any channel.
//!
//! The crate knows nothing about how it is reached: no socket, no framing, no queue.
//! The host (and its protocol with the runner) wraps a [`Session`] and implements
//! [`HostTools`]; tests drive the same API directly.
//!
//! Security does not live here. The runner holds only a placeholder API key and
//! reaches the network only through the vault's proxy ([`HttpConfig::from_env`]); the
//! sandbox bounds what tools can touch. Workspace confinement in [`Workspace`] keeps a
//! confused model from wandering, it is not the boundary.
//!
//! Modules:
//! - [`message`]: the conversation as stored and sent (text, tool calls, tool results).
//! - [`http`]: the one HTTP client (proxy via CONNECT, extra trust roots, timeouts).
//! - [`provider`]: the [`ModelProvider`] trait, its two wire formats and retries.
//! - [`tools`]: tool definitions and execution, confined to a [`Workspace`].
//! - [`agent`]: [`Session`], [`run_turn`], [`Event`]; [`compaction`] of old turns.

pub mod agent;
pub mod compaction;
pub mod http;
pub mod message;
pub mod provider;
mod sse;
pub mod tools;

pub use agent::{
    run_turn, system_prompt, AgentConfig, Event, RunnerError, Session, TurnOutcome, TurnStop,
    DEFAULT_INSTRUCTIONS,
};
pub use compaction::CompactionConfig;
pub use http::{HttpClient, HttpConfig, HttpError};
pub use message::{ContentBlock, Message, Role, Usage};
pub use provider::{
    ModelDelta, ModelError, ModelProvider, ModelRequest, ModelResponse, ProviderConfig,
    ProviderKind, RetryPolicy, StopReason, DEFAULT_MODEL, PLACEHOLDER_API_KEY,
};
pub use tools::{
    Grant, HostToolError, HostTools, InMemoryHost, ToolDefinition, ToolLimits, ToolOutput, Tools,
    Workspace,
};
