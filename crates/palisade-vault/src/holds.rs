//! Requests held for a person's decision.
//!
//! A held request waits on a oneshot channel keyed by approval id. Decisions arrive
//! two ways: through this gateway's admin API (resolved directly) or through the
//! database from another process such as `palisade approvals approve` (found by the
//! watcher, which polls `decided_among` for the held ids). Whichever way, the store's
//! atomic `decide` guarantees one decision per approval.

use palisade_store::{Approval, ApprovalStatus};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::{oneshot, Notify};

#[derive(Clone, Debug)]
pub enum HoldOutcome {
    Approved {
        approver: Option<String>,
    },
    Denied {
        approver: Option<String>,
        comment: Option<String>,
    },
    TimedOut,
    Cancelled,
}

impl HoldOutcome {
    pub fn from_approval(approval: &Approval) -> Option<HoldOutcome> {
        match approval.status {
            ApprovalStatus::Pending => None,
            ApprovalStatus::Approved => Some(HoldOutcome::Approved {
                approver: approval.approver.clone(),
            }),
            ApprovalStatus::Denied => Some(HoldOutcome::Denied {
                approver: approval.approver.clone(),
                comment: approval.comment.clone(),
            }),
            ApprovalStatus::TimedOut => Some(HoldOutcome::TimedOut),
            ApprovalStatus::Cancelled => Some(HoldOutcome::Cancelled),
        }
    }
}

/// Most held requests a gateway keeps at once; beyond it new holds are refused
/// (answered as timed out) rather than growing without bound.
pub const MAX_HOLDS: usize = 1024;

#[derive(Default)]
pub struct Holds {
    waiters: Mutex<HashMap<String, oneshot::Sender<HoldOutcome>>>,
    /// Woken when a new hold starts (for long-polls of pending approvals).
    pub added: Notify,
}

impl Holds {
    /// Registers a waiter; `None` if the table is full.
    pub fn register(&self, id: &str) -> Option<oneshot::Receiver<HoldOutcome>> {
        let (tx, rx) = oneshot::channel();
        let mut waiters = self.waiters.lock().ok()?;
        if waiters.len() >= MAX_HOLDS {
            return None;
        }
        waiters.insert(id.to_string(), tx);
        drop(waiters);
        self.added.notify_waiters();
        Some(rx)
    }

    pub fn forget(&self, id: &str) {
        if let Ok(mut waiters) = self.waiters.lock() {
            waiters.remove(id);
        }
    }

    pub fn held_ids(&self) -> Vec<String> {
        self.waiters
            .lock()
            .map(|w| w.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Wakes the request held under this approval, if it is held here and decided.
    pub fn resolve(&self, approval: &Approval) {
        let Some(outcome) = HoldOutcome::from_approval(approval) else {
            return;
        };
        let waiter = self
            .waiters
            .lock()
            .ok()
            .and_then(|mut w| w.remove(&approval.id));
        if let Some(tx) = waiter {
            let _ = tx.send(outcome);
        }
    }
}
