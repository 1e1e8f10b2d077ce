//! Host tools: what the agent asks of the host rather than of its workspace.
//!
//! The runner cannot do these itself: sending a message reaches a chat channel,
//! memory outlives the sandbox, grants live in the vault's store, and a person's
//! approval is asked for and decided outside the sandbox (nothing in it can decide). The host implements
//! [`HostTools`] over its socket protocol; [`InMemoryHost`] stands in for tests and
//! for running the loop without a host.

use std::sync::{Mutex, MutexGuard};

use futures_util::future::BoxFuture;

/// A failure the host reports; shown to the model as the tool's error.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{0}")]
pub struct HostToolError(pub String);

/// A credential the vault will inject for this agent (names and scope, never a value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The secret's name.
    pub secret: String,
    /// The hosts it is injected for (`api.github.com`, `*.slack.com`).
    pub host_pattern: String,
    /// The paths, when limited.
    pub path_pattern: Option<String>,
}

/// The host side of the agent's tools. Implementations must be cheap to call
/// concurrently; the loop calls them one at a time per session.
pub trait HostTools: Send + Sync {
    /// Sends `text` to the conversation now, before the turn's final answer.
    fn send_message<'a>(&'a self, text: &'a str) -> BoxFuture<'a, Result<(), HostToolError>>;

    /// The agent's persistent notes (loaded into the system prompt each turn).
    fn memory_read(&self) -> BoxFuture<'_, Result<String, HostToolError>>;

    /// Appends `note` to the agent's persistent notes.
    fn memory_append<'a>(&'a self, note: &'a str) -> BoxFuture<'a, Result<(), HostToolError>>;

    /// The credentials granted to this agent.
    fn list_grants(&self) -> BoxFuture<'_, Result<Vec<Grant>, HostToolError>>;

    /// Asks the agent's approvers whether it may do `action` (with `details`), and
    /// waits for the decision; the answer says who decided what (and their comment).
    fn request_approval<'a>(
        &'a self,
        action: &'a str,
        details: &'a str,
    ) -> BoxFuture<'a, Result<String, HostToolError>> {
        let _ = (action, details);
        Box::pin(async {
            Err(HostToolError(
                "approvals cannot be asked for here: no host is connected".into(),
            ))
        })
    }

    /// Sends `text` to another agent (if this agent's allow-list lets it) and, when
    /// `wait` is true, waits for that agent's answer, which comes back quoted, labelled
    /// and sanitized.
    fn message_agent<'a>(
        &'a self,
        agent: &'a str,
        text: &'a str,
        wait: bool,
    ) -> BoxFuture<'a, Result<String, HostToolError>> {
        let _ = (agent, text, wait);
        Box::pin(async {
            Err(HostToolError(
                "other agents cannot be reached here: no host is connected".into(),
            ))
        })
    }
}

/// Host tools kept in memory: messages are collected, memory is a string.
#[derive(Debug, Default)]
pub struct InMemoryHost {
    sent: Mutex<Vec<String>>,
    memory: Mutex<String>,
    grants: Vec<Grant>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl InMemoryHost {
    pub fn new() -> InMemoryHost {
        InMemoryHost::default()
    }

    /// Starts with `notes` in memory.
    pub fn with_memory(self, notes: &str) -> InMemoryHost {
        *lock(&self.memory) = notes.to_string();
        self
    }

    /// Reports `grants` from `list_grants`.
    pub fn with_grants(mut self, grants: Vec<Grant>) -> InMemoryHost {
        self.grants = grants;
        self
    }

    /// Messages sent so far.
    pub fn sent_messages(&self) -> Vec<String> {
        lock(&self.sent).clone()
    }

    /// The memory as it is now.
    pub fn memory(&self) -> String {
        lock(&self.memory).clone()
    }
}

impl HostTools for InMemoryHost {
    fn send_message<'a>(&'a self, text: &'a str) -> BoxFuture<'a, Result<(), HostToolError>> {
        lock(&self.sent).push(text.to_string());
        Box::pin(async { Ok(()) })
    }

    fn memory_read(&self) -> BoxFuture<'_, Result<String, HostToolError>> {
        let memory = self.memory();
        Box::pin(async move { Ok(memory) })
    }

    fn memory_append<'a>(&'a self, note: &'a str) -> BoxFuture<'a, Result<(), HostToolError>> {
        let mut memory = lock(&self.memory);
        if !memory.is_empty() && !memory.ends_with('\n') {
            memory.push('\n');
        }
        memory.push_str(note.trim_end());
        memory.push('\n');
        Box::pin(async { Ok(()) })
    }

    fn list_grants(&self) -> BoxFuture<'_, Result<Vec<Grant>, HostToolError>> {
        let grants = self.grants.clone();
        Box::pin(async move { Ok(grants) })
    }
}
