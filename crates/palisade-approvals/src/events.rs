//! Approvals created and decided in this process, announced at once to whoever listens
//! (the vault's held requests, the chat channels posting and editing cards). A
//! listener that falls behind misses events, never blocks the sender: every listener
//! also reconciles with the store (which is how changes made by other processes reach
//! it), so an event is a wake-up, not the only record.

use palisade_store::Approval;
use tokio::sync::broadcast;

/// Events kept for a slow listener before it starts missing them.
const CAPACITY: usize = 1024;

#[derive(Clone, Debug)]
pub enum Event {
    Created(Approval),
    /// Decided, expired or cancelled: no longer pending.
    Closed(Approval),
}

#[derive(Clone)]
pub struct Events {
    sender: broadcast::Sender<Event>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("listeners", &self.sender.receiver_count())
            .finish()
    }
}

impl Default for Events {
    fn default() -> Self {
        Events::new()
    }
}

impl Events {
    pub fn new() -> Events {
        Events {
            sender: broadcast::channel(CAPACITY).0,
        }
    }

    pub fn publish(&self, event: Event) {
        let _ = self.sender.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }
}
