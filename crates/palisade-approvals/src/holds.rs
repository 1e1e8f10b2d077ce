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
//!
//! A requester that goes away before the decision has still asked a person: its card
//! was posted to their chat and is then edited to say it was withdrawn. An agent that
//! holds a request and leaves, over and over, would so post cards as fast as it can
//! open connections, to the approver's phone and against the chat platform's rate
//! limits that every other agent's cards share. So holds abandoned this way are
//! counted per agent by the holder, which knows when its requester left
//! ([`Holds::note_abandoned`]; the vault's held requests): an agent may abandon as many
//! as its share at once, then one more every [`ABANDON_REFILL`]; beyond that, it gets
//! no new hold until then ([`HoldsFull::Abandoning`]). Holds that end with a decision,
//! or whose time runs out, cost nothing.

use crate::Outcome;
use palisade_policy::AgentName;
use palisade_store::Approval;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Notify};

/// Most requests a process holds at once, whatever the per-agent share.
pub const MAX_HOLDS: usize = 1024;

/// An agent that has abandoned its share of holds gets one more every this long.
pub const ABANDON_REFILL: Duration = Duration::from_secs(10);

/// Why a hold could not be reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldsFull {
    /// This agent holds its share already.
    Agent,
    /// The process holds its most.
    Gateway,
    /// This agent left more held requests before their decision than it may in a
    /// short time (see the module documentation); a new hold is possible after this
    /// many seconds.
    Abandoning { retry_after_secs: u64 },
}

impl HoldsFull {
    /// What to tell `agent` (whose share is `share`), without the request itself.
    pub fn reason(self, agent: &AgentName, share: usize) -> String {
        match self {
            HoldsFull::Agent => format!(
                "{agent} already has {share} requests waiting for a person's approval, the most it may have; wait for a decision on those first"
            ),
            HoldsFull::Gateway => {
                String::from("as many requests already wait for approval as can be held; retry later")
            }
            HoldsFull::Abandoning { retry_after_secs } => format!(
                "{agent} went away from many requests while they waited for approval, and each one asked a person; no new request of {agent} waits for approval for {retry_after_secs} s. Wait for decisions instead of leaving"
            ),
        }
    }
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
    /// Agents that abandoned holds lately, with what they may still abandon; an agent
    /// is forgotten once its allowance is whole again.
    abandoned: HashMap<AgentName, Allowance>,
}

/// How many more holds an agent may abandon: up to its share, one back every
/// [`ABANDON_REFILL`].
struct Allowance {
    left: f64,
    at: Instant,
}

impl Allowance {
    /// `left` as of now, refilled up to `share`.
    fn refill(&mut self, share: usize) {
        let now = Instant::now();
        let gained = now.duration_since(self.at).as_secs_f64() / ABANDON_REFILL.as_secs_f64();
        self.left = (self.left + gained).min(share as f64);
        self.at = now;
    }

    /// Seconds until one more hold may be abandoned (0 if one may now).
    fn wait_secs(&self) -> u64 {
        if self.left >= 1.0 {
            0
        } else {
            ((1.0 - self.left) * ABANDON_REFILL.as_secs_f64()).ceil() as u64
        }
    }
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
        let share = self.per_agent;
        if let Some(allowance) = table.abandoned.get_mut(agent) {
            allowance.refill(share);
            let retry_after_secs = allowance.wait_secs();
            if retry_after_secs > 0 {
                return Err(HoldsFull::Abandoning { retry_after_secs });
            }
            if allowance.left >= share as f64 {
                table.abandoned.remove(agent);
            }
        }
        let count = table.per_agent.entry(agent.clone()).or_default();
        if *count >= share {
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

    /// Counts a hold of `agent` whose requester went away before its decision (the
    /// holder knows: the vault's request dropped while held).
    pub fn note_abandoned(&self, agent: &AgentName) {
        let share = self.per_agent;
        let mut table = self.table();
        let allowance = table
            .abandoned
            .entry(agent.clone())
            .or_insert_with(|| Allowance {
                left: share as f64,
                at: Instant::now(),
            });
        allowance.refill(share);
        allowance.left = (allowance.left - 1.0).max(0.0);
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
    /// pending; whether it woke one.
    pub fn resolve(&self, approval: &Approval) -> bool {
        let Some(outcome) = Outcome::of(approval) else {
            return false;
        };
        let waiter = self.table().waiters.remove(&approval.id);
        match waiter {
            Some(tx) => {
                let _ = tx.send(outcome);
                true
            }
            None => false,
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

    #[test]
    fn an_agent_that_abandons_its_share_waits_and_others_do_not() {
        let holds = Holds::new(2);
        let (a, b) = (agent("a"), agent("b"));
        holds.note_abandoned(&a);
        assert!(
            holds.reserve(&a).is_ok(),
            "one abandoned hold of two allowed"
        );
        holds.note_abandoned(&a);
        match holds.reserve(&a) {
            Err(HoldsFull::Abandoning { retry_after_secs }) => {
                assert!((1..=ABANDON_REFILL.as_secs()).contains(&retry_after_secs))
            }
            other => panic!("expected Abandoning, got {:?}", other.map(|_| ())),
        }
        assert!(holds.reserve(&b).is_ok(), "another agent is not affected");
        // Refilled after ABANDON_REFILL: back as if new.
        holds.table().abandoned.get_mut(&a).unwrap().at -= ABANDON_REFILL * 2;
        assert!(holds.reserve(&a).is_ok());
        assert!(
            holds.table().abandoned.is_empty(),
            "a whole allowance is forgotten"
        );
    }
}
