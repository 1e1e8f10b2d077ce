//! Requests waiting in this process for a person's decision, bounded per agent and in
//! all (the vault's held HTTP requests; the host's `request_approval` calls).
//!
//! A waiter first reserves a [`Slot`] (refused when its agent already holds its share,
//! or the process holds its most), then waits on a oneshot channel keyed by approval
//! id. Decisions arrive three ways: from this process (an [`crate::Event`], or a
//! surface that resolves directly), or through the database from another process such
//! as `palisade approvals approve` (found by polling `decided_among` for the held ids,
//! and woken at once by that process through the gateway's control socket). Whichever
//! way, the store's atomic decide guarantees one decision per approval. A slot frees
//! itself when dropped, so a requester that goes away never leaks one.

use crate::Outcome;
use palisade_policy::AgentName;
use palisade_store::Approval;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{oneshot, Notify};

/// Most requests a process holds at once, whatever the per-agent share.
pub const MAX_HOLDS: usize = 1024;

/// Why a hold could not be reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldsFull {
    /// This agent holds its share already.
    Agent,
    /// The process holds its most.
    Gateway,
}

pub struct Holds {
    table: Mutex<Table>,
    per_agent: usize,
    /// Woken when a new hold starts (for long-polls of pending approvals).
    pub added: Notify,
}

#[derive(Default)]
struct Table {
    waiters: HashMap<String, oneshot::Sender<Outcome>>,
    per_agent: HashMap<AgentName, usize>,
    total: usize,
}

/// A reserved place in the hold table; released when dropped.
pub struct Slot {
    holds: Arc<Holds>,
    agent: AgentName,
    id: Option<String>,
}

impl Holds {
    pub fn new(per_agent: usize) -> Arc<Self> {
        Arc::new(Holds {
            table: Mutex::new(Table::default()),
            per_agent: per_agent.max(1),
            added: Notify::new(),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves a place for one more request of `agent`.
    pub fn reserve(self: &Arc<Self>, agent: &AgentName) -> Result<Slot, HoldsFull> {
        let mut table = self.table();
        if table.total >= MAX_HOLDS {
            return Err(HoldsFull::Gateway);
        }
        let count = table.per_agent.entry(agent.clone()).or_default();
        if *count >= self.per_agent {
            return Err(HoldsFull::Agent);
        }
        *count += 1;
        table.total += 1;
        Ok(Slot {
            holds: Arc::clone(self),
            agent: agent.clone(),
            id: None,
        })
    }

    pub fn held_ids(&self) -> Vec<String> {
        self.table().waiters.keys().cloned().collect()
    }

    /// Requests currently held (tests, diagnostics).
    pub fn len(&self) -> usize {
        self.table().total
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wakes the request held under this approval, if it is held here and no longer
    /// pending.
    pub fn resolve(&self, approval: &Approval) {
        let Some(outcome) = Outcome::of(approval) else {
            return;
        };
        let waiter = self.table().waiters.remove(&approval.id);
        if let Some(tx) = waiter {
            let _ = tx.send(outcome);
        }
    }
}

impl Slot {
    /// Starts waiting for the decision on approval `id`.
    pub fn wait_for(&mut self, id: &str) -> oneshot::Receiver<Outcome> {
        let (tx, rx) = oneshot::channel();
        self.holds.table().waiters.insert(id.to_string(), tx);
        self.id = Some(id.to_string());
        self.holds.added.notify_waiters();
        rx
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut table = self.holds.table();
        if let Some(id) = &self.id {
            table.waiters.remove(id);
        }
        table.total = table.total.saturating_sub(1);
        if let Some(count) = table.per_agent.get_mut(&self.agent) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                table.per_agent.remove(&self.agent);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(name: &str) -> AgentName {
        name.parse().unwrap()
    }

    #[test]
    fn one_agent_cannot_take_every_slot_and_dropped_slots_come_back() {
        let holds = Holds::new(2);
        let a = agent("a");
        let first = holds.reserve(&a).unwrap();
        let mut second = holds.reserve(&a).unwrap();
        assert_eq!(holds.reserve(&a).err(), Some(HoldsFull::Agent));
        // Another agent is not affected.
        let other = holds.reserve(&agent("b")).unwrap();
        let _rx = second.wait_for("apr_x");
        assert_eq!(holds.held_ids(), vec!["apr_x".to_string()]);
        drop(second);
        assert!(holds.held_ids().is_empty());
        assert!(holds.reserve(&a).is_ok());
        drop((first, other));
        assert!(holds.is_empty());
    }
}
