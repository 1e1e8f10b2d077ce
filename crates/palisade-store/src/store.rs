//! The `Store` handle: one SQLite connection (WAL, busy timeout 5 s, foreign keys on).
//! Cheap to clone (shared connection behind a mutex); open a second `Store` for a
//! dedicated writer such as the gateway's audit task. All methods are blocking: async
//! callers use `tokio::task::spawn_blocking`.

use crate::approvals::{Approval, ApprovalDecision, ApprovalStatus, NewApproval};
use crate::audit::{AuditEntry, AuditFilter, AuditRecord, VerifyReport};
use crate::crypto::MasterKey;
use crate::records::{AgentRecord, NewRule, NewSecret, RuleRecord, SecretRecord};
use crate::{Home, Result};
use palisade_policy::{AgentName, PolicySet, Profile, SecretValue};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Mutex<rusqlite::Connection>,
    key: MasterKey,
    home: Home,
}

/// Result of a rate-limit check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateOutcome {
    Admitted { remaining: u32 },
    /// Not admitted; the oldest counted event leaves the window after `retry_after`.
    Limited { retry_after: Duration },
}

impl Store {
    /// Ensures the home, loads/creates the master key, opens the database and runs migrations.
    pub fn open(home: &Home) -> Result<Self> {
        todo!("{home:?}")
    }
    pub fn home(&self) -> &Home {
        &self.inner.home
    }
    /// SQLite `PRAGMA data_version` of this connection: changes when another connection commits.
    pub fn data_version(&self) -> Result<i64> {
        todo!()
    }

    // --- agents ---
    pub fn create_agent(&self, name: &AgentName, profile: Profile) -> Result<AgentRecord> {
        todo!("{name} {profile}")
    }
    pub fn get_agent(&self, name: &AgentName) -> Result<AgentRecord> {
        todo!("{name}")
    }
    pub fn list_agents(&self) -> Result<Vec<AgentRecord>> {
        todo!()
    }
    /// Also removes the agent's grants, its agent-bound rules and its token.
    pub fn delete_agent(&self, name: &AgentName) -> Result<()> {
        todo!("{name}")
    }
    pub fn update_agent_settings(&self, name: &AgentName, settings: &serde_json::Value) -> Result<()> {
        todo!("{name} {settings}")
    }
    pub fn set_agent_profile(&self, name: &AgentName, profile: Profile) -> Result<()> {
        todo!("{name} {profile}")
    }
    /// Returns the existing token if one was issued and `rotate` is false (tokens are
    /// kept sealed so they can be shown again), else issues a new one (old one stops working).
    pub fn agent_token(&self, name: &AgentName, rotate: bool) -> Result<SecretValue> {
        todo!("{name} {rotate}")
    }
    /// Map of token hash -> agent, for the gateway's snapshot.
    pub fn agent_token_hashes(&self) -> Result<Vec<(String, AgentName)>> {
        todo!()
    }

    // --- secrets ---
    pub fn create_secret(&self, secret: NewSecret) -> Result<SecretRecord> {
        let _ = secret;
        todo!()
    }
    pub fn list_secrets(&self) -> Result<Vec<SecretRecord>> {
        todo!()
    }
    pub fn get_secret(&self, name: &str) -> Result<SecretRecord> {
        todo!("{name}")
    }
    pub fn delete_secret(&self, name: &str) -> Result<()> {
        todo!("{name}")
    }
    pub fn grant_secret(&self, name: &str, agent: &AgentName) -> Result<()> {
        todo!("{name} {agent}")
    }
    pub fn revoke_secret(&self, name: &str, agent: &AgentName) -> Result<()> {
        todo!("{name} {agent}")
    }

    // --- rules ---
    pub fn create_rule(&self, rule: NewRule) -> Result<RuleRecord> {
        let _ = rule;
        todo!()
    }
    pub fn list_rules(&self) -> Result<Vec<RuleRecord>> {
        todo!()
    }
    /// By name or numeric id.
    pub fn delete_rule(&self, name_or_id: &str) -> Result<()> {
        todo!("{name_or_id}")
    }

    /// Everything the gateway evaluates, secrets decrypted.
    pub fn load_policy(&self) -> Result<PolicySet> {
        todo!()
    }

    // --- approvals ---
    pub fn create_approval(&self, approval: NewApproval) -> Result<Approval> {
        let _ = approval;
        todo!()
    }
    pub fn get_approval(&self, id: &str) -> Result<Approval> {
        todo!("{id}")
    }
    /// Newest first; `None` = all statuses. At most `limit` rows.
    pub fn list_approvals(&self, status: Option<ApprovalStatus>, limit: usize) -> Result<Vec<Approval>> {
        todo!("{status:?} {limit}")
    }
    /// Decides a pending approval; `AlreadyDecided` otherwise. Appends an audit row
    /// (`approval.decide`, actor = approver) in the same transaction.
    pub fn decide_approval(&self, id: &str, decision: &ApprovalDecision) -> Result<Approval> {
        todo!("{id} {decision:?}")
    }
    /// Marks a pending approval timed out or cancelled (no-op if already decided); returns the row.
    pub fn close_approval(&self, id: &str, status: ApprovalStatus) -> Result<Approval> {
        todo!("{id} {status:?}")
    }
    /// Approvals decided (not pending) among `ids` — the gateway polls this for held requests.
    pub fn decided_among(&self, ids: &[String]) -> Result<Vec<Approval>> {
        todo!("{ids:?}")
    }

    // --- rate limits ---
    /// Sliding window: counts events for `key` in the last `window` at `now_ms`; if fewer
    /// than `limit`, records one and admits. Exact across threads and processes.
    pub fn rate_acquire(&self, key: &str, limit: u32, window: Duration, now_ms: i64) -> Result<RateOutcome> {
        todo!("{key} {limit} {window:?} {now_ms}")
    }

    // --- audit ---
    pub fn append_audit(&self, entry: &AuditEntry) -> Result<i64> {
        let _ = entry;
        todo!()
    }
    /// One transaction for many rows (the gateway's writer batches).
    pub fn append_audit_batch(&self, entries: &[(i64, AuditEntry)]) -> Result<()> {
        let _ = entries;
        todo!()
    }
    pub fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        todo!("{filter:?}")
    }
    pub fn verify_audit(&self) -> Result<VerifyReport> {
        todo!()
    }

    // --- settings ---
    /// The admin API key for the gateway's OneCLI-compatible API (created on first call, sealed).
    pub fn admin_key(&self, rotate: bool) -> Result<SecretValue> {
        todo!("{rotate}")
    }
}
