//! `send_message`: a message to the conversation before the turn's final answer, stored
//! before anyone is shown it so a crash can neither lose nor repeat it.

use crate::host::{HostInner, StreamEvent};
use palisade_store::InboundMessage;

pub(super) async fn run(
    inner: &HostInner,
    message: &InboundMessage,
    text: String,
) -> (bool, String) {
    if text.trim().is_empty() || text.len() > crate::host::MAX_MESSAGE_BYTES {
        return (false, "the message is empty or too long".into());
    }
    // Stored before anyone is shown it, so a crash cannot lose or repeat it.
    let store = inner.store.clone();
    let (id, owned) = (message.id, text.clone());
    let stored =
        tokio::task::spawn_blocking(move || store.store_outbound_message(id, &owned)).await;
    match stored {
        Ok(Ok((_, true))) => {
            inner.publish(message.id, StreamEvent::Message { text });
            (true, "sent".into())
        }
        // A retried turn sending the same text again: it was shown already.
        Ok(Ok((_, false))) => (true, "sent (already sent earlier)".into()),
        Ok(Err(error)) => (false, error.to_string()),
        Err(error) => (false, error.to_string()),
    }
}
