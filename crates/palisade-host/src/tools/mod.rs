//! Host tools: what a runner asks of the host (`protocol::HostCall`), one file per
//! tool, dispatched here. Each answers `(ok, content)`; `content` is what the agent's
//! model reads.

mod grants;
mod memory;
mod send_message;

use crate::host::HostInner;
use crate::protocol::HostCall;
use palisade_store::InboundMessage;
use std::sync::Arc;

/// Runs `call` for the agent of `message` (the message its runner is handling).
pub(crate) async fn run(
    inner: &Arc<HostInner>,
    message: &InboundMessage,
    call: HostCall,
) -> (bool, String) {
    match call {
        HostCall::SendMessage { text } => send_message::run(inner, message, text).await,
        HostCall::MemoryRead {} => memory::read(inner, message).await,
        HostCall::MemoryAppend { note } => memory::append(inner, message, note).await,
        HostCall::ListGrants {} => grants::run(inner, message).await,
        HostCall::RequestApproval { action, details } => {
            crate::approvals::request(inner, message, &action, &details).await
        }
        HostCall::AskAgent { agent, text } => {
            crate::a2a::send(inner, message, &agent, &text, crate::a2a::Wait::ForReply).await
        }
        HostCall::TellAgent { agent, text } => {
            crate::a2a::send(inner, message, &agent, &text, crate::a2a::Wait::No).await
        }
    }
}
