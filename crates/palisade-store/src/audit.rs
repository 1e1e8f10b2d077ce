//! The append-only, hash-chained audit log.
//!
//! Each row stores `hash = sha256_hex(prev_hash || "\n" || canonical_json(row fields))`,
//! `prev_hash` of the first row being 64 zeros. Rows are appended inside `BEGIN IMMEDIATE`
//! so the chain is linear across processes. `verify` recomputes the chain and reports
//! the first row (by id) whose content, link or sequence is wrong — an edited row, a
//! deleted row (gap in ids or broken link) or a truncated tail after the recorded head
//! (the head id/hash is also kept in a one-row table updated with each append).

use serde::Serialize;

/// What happened. Never contains a secret value.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AuditEntry {
    /// e.g. `request`, `secret.create`, `rule.delete`, `approval.decide`, `agent.create`.
    pub event: String,
    pub agent: Option<String>,
    pub method: Option<String>,
    pub host: Option<String>,
    /// Path without query.
    pub path: Option<String>,
    /// e.g. `injected`, `allowed`, `blocked`, `default_denied`, `rate_limited`, `held`,
    /// `approved`, `denied`, `timed_out`, `created`, `deleted`.
    pub decision: Option<String>,
    pub rule: Option<String>,
    pub secret: Option<String>,
    pub status: Option<u16>,
    pub latency_ms: Option<f64>,
    /// Who did it (`cli`, `web:admin`, approver identity, ...).
    pub actor: Option<String>,
    pub approval_id: Option<String>,
    /// Free-form extra facts (no secret values).
    pub detail: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Serialize)]
pub struct AuditRecord {
    pub id: i64,
    pub at_ms: i64,
    #[serde(flatten)]
    pub entry: AuditEntry,
    pub hash: String,
}

#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub agent: Option<String>,
    pub event: Option<String>,
    pub decision: Option<String>,
    pub host: Option<String>,
    pub since_ms: Option<i64>,
    /// Newest first; default 100, max 10 000.
    pub limit: Option<usize>,
    /// Only rows with id < before_id (paging).
    pub before_id: Option<i64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    pub rows: u64,
    pub ok: bool,
    /// First bad row id and what is wrong with it.
    pub first_bad_id: Option<i64>,
    pub problem: Option<String>,
}
