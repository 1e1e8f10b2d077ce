//! `memory_read` and `memory_append`: the agent's persistent notes, a file in its
//! folder (`agents/NAME/memory.md`) that outlives sandboxes and is never inside one.

use crate::host::HostInner;
use crate::settings;
use palisade_store::InboundMessage;

pub(super) async fn read(inner: &HostInner, message: &InboundMessage) -> (bool, String) {
    let home = inner.config.home.clone();
    let agent = message.agent.clone();
    let result = tokio::task::spawn_blocking(move || {
        settings::read_agent_file(
            &settings::memory_path(&home, agent.as_str()),
            settings::MAX_MEMORY_BYTES,
        )
    })
    .await;
    match result {
        Ok(Ok(text)) => (true, text),
        Ok(Err(error)) => (false, error.to_string()),
        Err(error) => (false, error.to_string()),
    }
}

pub(super) async fn append(
    inner: &HostInner,
    message: &InboundMessage,
    note: String,
) -> (bool, String) {
    let home = inner.config.home.clone();
    let agent = message.agent.clone();
    let result =
        tokio::task::spawn_blocking(move || settings::append_memory(&home, agent.as_str(), &note))
            .await;
    match result {
        Ok(Ok(())) => (true, "noted".into()),
        Ok(Err(error)) => (false, error.to_string()),
        Err(error) => (false, error.to_string()),
    }
}
