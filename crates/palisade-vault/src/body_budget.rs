//! How many bytes of request bodies the gateway keeps in memory at once: bodies read
//! whole to judge them (body rules) or to show them to a person (approvals). Each body
//! draws on its agent's share and on the gateway's total as its bytes arrive, and
//! gives them back when the request is done, so one agent opening many streams with
//! large bodies meets its own limit (503) instead of the gateway running out of memory
//! for every agent.
//!
//! Hand-written rather than a semaphore per agent: a body grows frame by frame, and a
//! reservation that can grow (and fail without waiting) is a counter under a lock.

use palisade_policy::AgentName;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The per-agent and gateway-wide byte limits and what is in use.
pub struct BodyBudget {
    per_agent: usize,
    total: usize,
    used: Mutex<Used>,
}

#[derive(Default)]
struct Used {
    total: usize,
    agents: HashMap<AgentName, usize>,
}

/// Which limit a body would pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exhausted {
    /// The agent's share (`--max-buffered-bodies-per-agent`).
    Agent(usize),
    /// The gateway's total (`--max-buffered-bodies`).
    Gateway(usize),
}

impl BodyBudget {
    pub fn new(per_agent: usize, total: usize) -> Arc<Self> {
        Arc::new(BodyBudget {
            per_agent,
            total,
            used: Mutex::new(Used::default()),
        })
    }

    /// An empty reservation for one body of `agent`.
    pub fn reserve(self: &Arc<Self>, agent: &AgentName) -> Reservation {
        Reservation {
            budget: Arc::clone(self),
            agent: agent.clone(),
            bytes: 0,
        }
    }

    /// Bytes in use now: (the agent's, the gateway's).
    pub fn in_use(&self, agent: &AgentName) -> (usize, usize) {
        let used = self.lock();
        (used.agents.get(agent).copied().unwrap_or(0), used.total)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Used> {
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Bytes one body holds; given back when dropped.
pub struct Reservation {
    budget: Arc<BodyBudget>,
    agent: AgentName,
    bytes: usize,
}

impl Reservation {
    /// Takes `more` bytes, or takes nothing and says which limit they would pass.
    pub fn grow(&mut self, more: usize) -> Result<(), Exhausted> {
        let budget = &self.budget;
        let mut used = budget.lock();
        let agent_now = used.agents.get(&self.agent).copied().unwrap_or(0);
        if agent_now.saturating_add(more) > budget.per_agent {
            return Err(Exhausted::Agent(budget.per_agent));
        }
        if used.total.saturating_add(more) > budget.total {
            return Err(Exhausted::Gateway(budget.total));
        }
        used.total += more;
        *used.agents.entry(self.agent.clone()).or_default() += more;
        self.bytes += more;
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        let mut used = self.budget.lock();
        used.total = used.total.saturating_sub(self.bytes);
        if let Some(agent) = used.agents.get_mut(&self.agent) {
            *agent = agent.saturating_sub(self.bytes);
            if *agent == 0 {
                used.agents.remove(&self.agent);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(name: &str) -> AgentName {
        AgentName::new(name).unwrap()
    }

    #[test]
    fn an_agent_meets_its_share_and_the_gateway_its_total() {
        let budget = BodyBudget::new(100, 150);
        let (a, b) = (agent("a"), agent("b"));
        let mut first = budget.reserve(&a);
        first.grow(60).unwrap();
        let mut second = budget.reserve(&a);
        assert_eq!(second.grow(41), Err(Exhausted::Agent(100)));
        second.grow(40).unwrap();
        let mut other = budget.reserve(&b);
        assert_eq!(other.grow(51), Err(Exhausted::Gateway(150)));
        other.grow(50).unwrap();
        assert_eq!(budget.in_use(&a), (100, 150));
        drop(first);
        assert_eq!(budget.in_use(&a), (40, 90));
        drop(second);
        drop(other);
        assert_eq!(budget.in_use(&a), (0, 0));
        assert!(
            budget.lock().agents.is_empty(),
            "no entry left for idle agents"
        );
    }
}
