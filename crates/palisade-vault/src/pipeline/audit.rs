//! Phase 9, audit: the one place a request's audit row is written, whatever ended it.
//!
//! [`Pending`] is created before the first phase and finished with the decision; if
//! the request's future is dropped first (the client went away while it was held or in
//! flight), its `Drop` records `client_gone` for any request that had reached a hold or
//! a credential. Refusals at the front door (407 without a valid token, a malformed
//! CONNECT target, a head the HTTP server could not parse) come through
//! [`refused_at_front`]; rows from clients that never
//! authenticated are rate-limited so nobody can fill the log without a token, and so
//! are an agent's refusals that involve neither a credential nor a person (each agent
//! its own budget): the count of rows left out goes on the next row written, and the
//! traffic charts count every request.

use super::{Decision, Target};
use crate::state::Shared;
use palisade_policy::budget::{AgentBuckets, Bucket};
use palisade_policy::AgentName;
use palisade_store::AuditEntry;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Most bytes of a path an audit row keeps: a request's head may be 64 KiB, and an
/// agent's refusals, each with a path that long, filled the home's disk at 2 GB an
/// hour within their row budget.
const MAX_PATH: usize = 2048;

/// What a request's audit row records, filled in as the phases learn it.
pub(crate) struct Record {
    pub agent: Option<String>,
    pub method: String,
    pub host: String,
    /// Canonical once the canonical phase has run; as sent before that.
    pub path: String,
    pub rule: Option<String>,
    pub secret: Option<String>,
    pub approval_id: Option<String>,
    pub actor: Option<String>,
    pub detail: Option<serde_json::Value>,
    started: Instant,
}

impl Record {
    pub fn new(
        agent: Option<&AgentName>,
        method: &http::Method,
        target: &Target,
        path: &str,
    ) -> Record {
        Record::about(agent, method.as_str(), &target.host, path)
    }

    /// A record for a request that has no parsed target (front-door refusals).
    pub fn about(agent: Option<&AgentName>, method: &str, host: &str, path: &str) -> Record {
        Record {
            agent: agent.map(AgentName::to_string),
            method: at_most(method, 32).to_string(),
            host: at_most(host, 255).to_string(),
            path: at_most(path, MAX_PATH).to_string(),
            rule: None,
            secret: None,
            approval_id: None,
            actor: None,
            detail: None,
            started: Instant::now(),
        }
    }

    /// Records the canonical path, cut to [`MAX_PATH`] bytes as the path sent was.
    pub fn set_path(&mut self, path: &str) {
        self.path = at_most(path, MAX_PATH).to_string();
    }

    /// Counts the request for the traffic charts: held if a person was asked,
    /// whatever came of it, else by its decision.
    fn count(&self, shared: &Shared, decision: Decision) {
        let Some(agent) = &self.agent else {
            return;
        };
        let outcome = if self.approval_id.is_some() {
            palisade_store::Outcome::Held
        } else {
            decision.outcome()
        };
        shared.audit.count(agent, outcome);
    }

    fn entry(self, decision: Decision, status: Option<u16>) -> AuditEntry {
        AuditEntry {
            event: "request".into(),
            agent: self.agent,
            method: Some(self.method),
            host: Some(self.host),
            path: Some(self.path),
            decision: Some(decision.as_str().to_string()),
            rule: self.rule,
            secret: self.secret,
            status,
            latency_ms: Some(self.started.elapsed().as_secs_f64() * 1000.0),
            actor: self.actor,
            approval_id: self.approval_id,
            detail: self.detail,
        }
    }
}

/// The first `max` bytes of `text`, cut back to a character boundary (one copy per
/// field instead of a string rebuilt character by character on every request).
fn at_most(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A request's row, written exactly once: by [`Pending::finish`], or on drop.
pub(crate) struct Pending {
    shared: Arc<Shared>,
    record: Option<Record>,
}

impl Pending {
    pub fn new(shared: &Arc<Shared>, record: Record) -> Pending {
        Pending {
            shared: Arc::clone(shared),
            record: Some(record),
        }
    }

    pub fn record(&mut self) -> &mut Record {
        self.record
            .as_mut()
            .expect("the record is only taken by finish or drop")
    }

    pub async fn finish(mut self, decision: Decision, status: u16) {
        let Some(mut record) = self.record.take() else {
            return;
        };
        record.count(&self.shared, decision);
        if !decision.is_audited() {
            return;
        }
        // A row about a credential or a person is always written; an agent's other
        // refusals are written within its budget, the rest counted on the next one.
        if record.secret.is_none() && record.approval_id.is_none() {
            let budget = record
                .agent
                .as_deref()
                .map(|agent| self.shared.row_budgets.agent(agent));
            match budget {
                Some(None) => return,
                Some(Some(suppressed)) => note_suppressed(&mut record, suppressed),
                None => {}
            }
        }
        self.shared
            .audit
            .record(record.entry(decision, Some(status)))
            .await;
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let Some(record) = self.record.take() else {
            return;
        };
        record.count(&self.shared, Decision::ClientGone);
        // Plain traffic whose client left is not worth a row; a held or credentialed
        // request is.
        if record.approval_id.is_some() || record.secret.is_some() {
            self.shared
                .audit
                .try_record(record.entry(Decision::ClientGone, None));
        }
    }
}

/// Rows about front-door refusals: at most a burst of this many, then this many per
/// second; the rest are counted and the count goes on the next row.
const UNAUTHENTICATED_BURST: f64 = 20.0;
const UNAUTHENTICATED_PER_SECOND: f64 = 5.0;
/// The same for an agent's refusals that involve neither a credential nor a person
/// (blocked, denied by default, rate-limited, malformed): they cost the agent nothing,
/// so one agent's loop could otherwise write thousands of rows a second.
const AGENT_REFUSAL_BURST: f64 = 100.0;
const AGENT_REFUSALS_PER_SECOND: f64 = 10.0;
/// The gateway's budgets for audit rows nobody paid for: one for clients that never
/// authenticated, one per agent for refusals without a credential or a person.
pub(crate) struct RowBudgets {
    front_door: Mutex<Bucket>,
    agents: AgentBuckets,
}

impl Default for RowBudgets {
    fn default() -> Self {
        RowBudgets {
            front_door: Mutex::new(Bucket::full(UNAUTHENTICATED_BURST)),
            agents: AgentBuckets::new(AGENT_REFUSAL_BURST, AGENT_REFUSALS_PER_SECOND),
        }
    }
}

impl RowBudgets {
    fn front_door(&self) -> Option<u64> {
        self.front_door
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(UNAUTHENTICATED_BURST, UNAUTHENTICATED_PER_SECOND)
    }

    pub(crate) fn agent(&self, agent: &str) -> Option<u64> {
        self.agents.take(agent)
    }
}

/// Puts the count of rows left out before this one into its `detail`.
fn note_suppressed(record: &mut Record, suppressed: u64) {
    if suppressed == 0 {
        return;
    }
    let count = serde_json::Value::from(suppressed);
    record.detail = Some(match record.detail.take() {
        Some(serde_json::Value::Object(mut detail)) => {
            detail.insert("similar_rows_suppressed".into(), count);
            serde_json::Value::Object(detail)
        }
        Some(other) => serde_json::json!({ "detail": other, "similar_rows_suppressed": count }),
        None => serde_json::json!({ "similar_rows_suppressed": count }),
    });
}

/// Records a refusal made before any phase ran (no token, a bad target, a connection
/// beyond the caps). These cost the client nothing but a connection, so their rows are
/// rate-limited by the gateway's [`RowBudgets`]: a flood cannot fill the log.
pub(crate) async fn refused_at_front(
    shared: &Shared,
    mut record: Record,
    decision: Decision,
    status: u16,
) {
    record.count(shared, decision);
    // A known agent's refusals spend its own budget, not the one shared by every
    // client that never authenticated.
    let budget = match &record.agent {
        Some(agent) => shared.row_budgets.agent(agent),
        None => shared.row_budgets.front_door(),
    };
    let Some(suppressed) = budget else {
        return;
    };
    note_suppressed(&mut record, suppressed);
    shared
        .audit
        .record(record.entry(decision, Some(status)))
        .await;
}

/// Records a request head the HTTP server refused before any phase saw it (hyper
/// answered `400` to an unparsable head or target, `431` to one over the size limit),
/// told by the error that ended the connection; other errors (a client that went away,
/// a timeout) are no refusal and leave no row. `host` is the tunnel's, if any.
pub(crate) async fn refused_head(
    shared: &Shared,
    agent: Option<&AgentName>,
    host: &str,
    error: &(dyn std::error::Error + Send + Sync + 'static),
) {
    let Some(error) = error.downcast_ref::<hyper::Error>() else {
        return;
    };
    let status = if error.is_parse_too_large() {
        431
    } else if error.is_parse() {
        400
    } else {
        return;
    };
    let mut record = Record::about(agent, "", host, "");
    record.detail = Some(serde_json::json!({ "reason": error.to_string() }));
    refused_at_front(shared, record, Decision::BadRequest, status).await;
}

#[cfg(test)]
mod tests {
    use super::at_most;

    #[test]
    fn fields_are_cut_at_a_character_boundary() {
        assert_eq!(at_most("GET", 32), "GET");
        assert_eq!(at_most("abcdef", 4), "abcd");
        // "é" is two bytes: a cut in its middle goes back before it.
        assert_eq!(at_most("abé", 3), "ab");
        assert_eq!(at_most("abé", 4), "abé");
        assert_eq!(at_most("", 0), "");
    }
}
