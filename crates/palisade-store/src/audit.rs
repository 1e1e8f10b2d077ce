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
    /// Only rows older than this (exclusive).
    pub until_ms: Option<i64>,
    /// Only rows where this text appears (case-insensitively for ASCII) in the event,
    /// agent, method, host, path, decision, rule, secret, actor, approval id or detail.
    pub text: Option<String>,
    /// Newest first; default 100, max 10 000.
    pub limit: Option<usize>,
    /// Only rows with id < before_id (paging).
    pub before_id: Option<i64>,
    /// Only rows with id > after_id (following the log).
    pub after_id: Option<i64>,
    /// Only rows about this approval (its creation, decision and the action it allowed).
    pub approval_id: Option<String>,
    /// Only decisions on approvals and refused attempts to decide (`approval.decide`,
    /// `approval.close`, `approval.refused`).
    pub approval_decisions: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    pub rows: u64,
    pub ok: bool,
    /// First bad row id and what is wrong with it.
    pub first_bad_id: Option<i64>,
    pub problem: Option<String>,
    /// The first row the chain keeps, when older ones were pruned (`audit prune`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<i64>,
}

/// What `Store::prune_audit` removed.
#[derive(Clone, Debug, Serialize)]
pub struct PruneReport {
    /// Rows deleted.
    pub removed: u64,
    /// The first row kept (the chain starts here now).
    pub first_id: i64,
    /// The `audit.prune` row that records the pruning, when anything was removed.
    pub recorded_as: Option<i64>,
}

/// Hash of the row before the first one.
pub(crate) const GENESIS_HASH: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

/// The fields a row's hash covers, in a fixed order. `detail` is the stored JSON text,
/// not a parsed value, so the hash never depends on how a JSON library orders keys.
/// `status` is an `i64` so a stored value outside `u16` still hashes (and so fails
/// verification) instead of being unreadable.
#[derive(Serialize)]
pub(crate) struct CanonicalRow<'a> {
    pub id: i64,
    pub at_ms: i64,
    pub event: &'a str,
    pub agent: Option<&'a str>,
    pub method: Option<&'a str>,
    pub host: Option<&'a str>,
    pub path: Option<&'a str>,
    pub decision: Option<&'a str>,
    pub rule: Option<&'a str>,
    pub secret: Option<&'a str>,
    pub status: Option<i64>,
    pub latency_ms: Option<f64>,
    pub actor: Option<&'a str>,
    pub approval_id: Option<&'a str>,
    pub detail: Option<&'a str>,
}

impl CanonicalRow<'_> {
    /// `sha256_hex(prev_hash || "\n" || canonical_json(self))`.
    pub(crate) fn chain_hash(&self, prev_hash: &str) -> crate::Result<String> {
        let json = serde_json::to_string(self)
            .map_err(|e| crate::StoreError::Invalid(format!("cannot encode an audit row: {e}")))?;
        let mut input = String::with_capacity(prev_hash.len() + 1 + json.len());
        input.push_str(prev_hash);
        input.push('\n');
        input.push_str(&json);
        Ok(crate::crypto::sha256_hex(input.as_bytes()))
    }
}
