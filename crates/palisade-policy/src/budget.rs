//! Token buckets for what anyone who can make a request can make the store write: an
//! audit row per refusal, an entry per credentialed request below the disk share line.
//! Each place keeps a burst and a rate; what goes past is counted, and the count goes
//! on the next row allowed, so nothing is silently lost from the record.
//!
//! Used by the vault (rows of refusals, the disk share per agent) and the host (rows of
//! agent-to-agent refusals). Hand-written: a float and a timestamp per agent under a
//! lock, with the map bounded; rate-limiting crates count requests, not rows left out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Agents whose budget is remembered; beyond it, full buckets are forgotten.
pub const MAX_BUDGETED_AGENTS: usize = 4096;

/// A token bucket.
pub struct Bucket {
    tokens: f64,
    refilled: Instant,
    suppressed: u64,
}

impl Bucket {
    pub fn full(burst: f64) -> Bucket {
        Bucket {
            tokens: burst,
            refilled: Instant::now(),
            suppressed: 0,
        }
    }

    /// `Some(rows suppressed since the last one written)` when a row may be written.
    pub fn take(&mut self, burst: f64, per_second: f64) -> Option<u64> {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

/// One token bucket per agent, each a burst of `burst` then `per_second`; at most
/// [`MAX_BUDGETED_AGENTS`] remembered, beyond which full buckets are forgotten (a full
/// bucket is the same as a new one).
pub struct AgentBuckets {
    burst: f64,
    per_second: f64,
    agents: Mutex<HashMap<String, Bucket>>,
}

impl AgentBuckets {
    pub fn new(burst: f64, per_second: f64) -> AgentBuckets {
        AgentBuckets {
            burst,
            per_second,
            agents: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(takes refused since the last one allowed)` when `agent` may take one.
    pub fn take(&self, agent: &str) -> Option<u64> {
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        if agents.len() >= MAX_BUDGETED_AGENTS && !agents.contains_key(agent) {
            agents.retain(|_, bucket| {
                let refill = bucket.refilled.elapsed().as_secs_f64() * self.per_second;
                bucket.suppressed > 0 || bucket.tokens + refill < self.burst
            });
        }
        agents
            .entry(agent.to_string())
            .or_insert_with(|| Bucket::full(self.burst))
            .take(self.burst, self.per_second)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_with_the_count_of_those_left_out() {
        // A rate so slow that no token comes back during the test.
        let buckets = AgentBuckets::new(3.0, 0.000_001);
        for _ in 0..3 {
            assert_eq!(buckets.take("a"), Some(0));
        }
        assert_eq!(buckets.take("a"), None);
        assert_eq!(buckets.take("a"), None);
        // Another agent has its own bucket.
        assert_eq!(buckets.take("b"), Some(0));
        // Once a token is back, the next one allowed carries the count.
        buckets.agents.lock().unwrap().get_mut("a").unwrap().tokens = 1.0;
        assert_eq!(buckets.take("a"), Some(2));
        assert_eq!(buckets.take("a"), None);
    }
}
