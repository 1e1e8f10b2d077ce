//! Approval rows. The decision is a single conditional UPDATE (`WHERE status =
//! 'pending'`), so when several approvers click at once, in one process or many, exactly
//! one of them changes the row and every other gets `AlreadyDecided`.

use super::agents::parse_agent_name;
use super::{corrupt, Store};
use crate::approvals::{Approval, ApprovalDecision, ApprovalStatus, NewApproval};
use crate::{Result, StoreError};
use rand::Rng;
use rusqlite::{OptionalExtension, Transaction};

const APPROVAL_COLUMNS: &str = "id, kind, agent, status, title, lines, detail, context, \
     created_at_ms, expires_at_ms, decided_at_ms, approver, comment, choice, approver_channel, \
     approver_user, approver_name, granted_rule, holder, request_key";

/// Bounded so a large `decided_among` stays under SQLite's bound-parameter limit.
const IDS_PER_QUERY: usize = 500;

struct RawApproval {
    id: String,
    kind: String,
    agent: String,
    status: String,
    title: String,
    lines: String,
    detail: String,
    context: String,
    created_at_ms: i64,
    expires_at_ms: i64,
    decided_at_ms: Option<i64>,
    approver: Option<String>,
    comment: Option<String>,
    choice: Option<String>,
    approver_channel: Option<String>,
    approver_user: Option<String>,
    approver_name: Option<String>,
    granted_rule: Option<String>,
    holder: Option<String>,
    request_key: Option<String>,
}

fn raw_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawApproval> {
    Ok(RawApproval {
        id: row.get(0)?,
        kind: row.get(1)?,
        agent: row.get(2)?,
        status: row.get(3)?,
        title: row.get(4)?,
        lines: row.get(5)?,
        detail: row.get(6)?,
        context: row.get(7)?,
        created_at_ms: row.get(8)?,
        expires_at_ms: row.get(9)?,
        decided_at_ms: row.get(10)?,
        approver: row.get(11)?,
        comment: row.get(12)?,
        choice: row.get(13)?,
        approver_channel: row.get(14)?,
        approver_user: row.get(15)?,
        approver_name: row.get(16)?,
        granted_rule: row.get(17)?,
        holder: row.get(18)?,
        request_key: row.get(19)?,
    })
}

impl RawApproval {
    fn decode(self) -> Result<Approval> {
        Ok(Approval {
            agent: parse_agent_name(&self.agent)?,
            status: parse_status(&self.status)?,
            lines: serde_json::from_str(&self.lines)
                .map_err(|e| corrupt("approval summary lines", e))?,
            context: serde_json::from_str(&self.context)
                .map_err(|e| corrupt("approval context", e))?,
            id: self.id,
            kind: self.kind,
            title: self.title,
            detail: self.detail,
            created_at_ms: self.created_at_ms,
            expires_at_ms: self.expires_at_ms,
            decided_at_ms: self.decided_at_ms,
            approver: self.approver,
            comment: self.comment,
            choice: self.choice,
            approver_channel: self.approver_channel,
            approver_user: self.approver_user,
            approver_name: self.approver_name,
            granted_rule: self.granted_rule,
            holder: self.holder,
            request_key: self.request_key,
        })
    }
}

fn parse_status(text: &str) -> Result<ApprovalStatus> {
    text.parse::<ApprovalStatus>()
        .map_err(|_| corrupt("approval status", format!("{text:?}")))
}

/// `apr_` + 12 characters of lowercase RFC 4648 base32 (60 random bits): short enough to
/// type from a chat message, too many to guess.
pub fn new_approval_id() -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut rng = rand::rngs::OsRng;
    let mut id = String::with_capacity(16);
    id.push_str("apr_");
    for _ in 0..12 {
        id.push(char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]));
    }
    id
}

fn get_in(tx: &Transaction<'_>, id: &str) -> Result<Approval> {
    tx.query_row(
        &format!("SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = ?1"),
        [id],
        raw_from_row,
    )
    .optional()?
    .ok_or_else(|| StoreError::NotFound {
        what: "approval",
        name: id.to_string(),
    })?
    .decode()
}

impl Store {
    pub fn create_approval(&self, approval: NewApproval) -> Result<Approval> {
        let lines = serde_json::to_string(&approval.lines)
            .map_err(|e| StoreError::Invalid(format!("approval lines cannot be encoded: {e}")))?;
        let context = serde_json::to_string(&approval.context)
            .map_err(|e| StoreError::Invalid(format!("approval context cannot be encoded: {e}")))?;
        self.write(|tx| {
            if let Some(key) = &approval.request_key {
                let existing: Option<String> = tx
                    .query_row(
                        "SELECT id FROM approvals WHERE request_key = ?1",
                        [key],
                        |row| row.get(0),
                    )
                    .optional()?;
                if let Some(id) = existing {
                    return get_in(tx, &id);
                }
            }
            let id = new_approval_id();
            tx.execute(
                "INSERT INTO approvals (id, kind, agent, status, title, lines, detail, context,
                     created_at_ms, expires_at_ms, holder, request_key)
                 VALUES (?1, ?2, ?3, 'pending', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                rusqlite::params![
                    &id,
                    &approval.kind,
                    approval.agent.as_str(),
                    &approval.title,
                    &lines,
                    &approval.detail,
                    &context,
                    crate::now_ms(),
                    approval.expires_at_ms,
                    &approval.holder,
                    &approval.request_key,
                ],
            )?;
            let mut entry = self.audit_entry("approval.create");
            entry.agent = Some(approval.agent.to_string());
            entry.approval_id = Some(id.clone());
            entry.decision = Some("held".into());
            entry.detail = Some(serde_json::json!({
                "kind": approval.kind,
                "title": approval.title,
                "expires_at_ms": approval.expires_at_ms,
            }));
            self.append_in(tx, &entry)?;
            get_in(tx, &id)
        })
    }

    pub fn get_approval(&self, id: &str) -> Result<Approval> {
        self.read(|tx| get_in(tx, id))
    }

    /// Whether a new stranger's access request to `agent` on `channel` may be made:
    /// either this person already has one (`key`: asking again finds it), or fewer than
    /// `cap` wait for a person there, so a raid of new accounts cannot bury the
    /// approvers in cards.
    pub fn access_request_allowed(
        &self,
        key: &str,
        agent: &palisade_policy::AgentName,
        channel: &str,
        cap: usize,
    ) -> Result<bool> {
        self.read(|tx| {
            let existing: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM approvals WHERE request_key = ?1",
                    [key],
                    |row| row.get(0),
                )
                .optional()?;
            if existing.is_some() {
                return Ok(true);
            }
            let prefix = format!("access:{channel}:");
            let waiting: i64 = tx.query_row(
                "SELECT COUNT(*) FROM approvals
                 WHERE status = 'pending' AND kind = 'access_request' AND agent = ?1
                   AND substr(request_key, 1, length(?2)) = ?2",
                (agent.as_str(), &prefix),
                |row| row.get(0),
            )?;
            Ok(usize::try_from(waiting).unwrap_or(usize::MAX) < cap)
        })
    }

    /// Newest first; `None` = all statuses. At most `limit` rows.
    pub fn list_approvals(
        &self,
        status: Option<ApprovalStatus>,
        limit: usize,
    ) -> Result<Vec<Approval>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|tx| {
            let raw = match status {
                Some(status) => {
                    let mut stmt = tx.prepare(&format!(
                        "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE status = ?1
                         ORDER BY created_at_ms DESC, rowid DESC LIMIT ?2"
                    ))?;
                    let rows = stmt
                        .query_map((status.as_str(), limit), raw_from_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    rows
                }
                None => {
                    let mut stmt = tx.prepare(&format!(
                        "SELECT {APPROVAL_COLUMNS} FROM approvals
                         ORDER BY created_at_ms DESC, rowid DESC LIMIT ?1"
                    ))?;
                    let rows = stmt
                        .query_map([limit], raw_from_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    rows
                }
            };
            raw.into_iter().map(RawApproval::decode).collect()
        })
    }

    /// Decides a pending approval; `AlreadyDecided` otherwise (`Expired` when its
    /// expiry passed before anyone closed it: it is closed as timed out then). A grant
    /// rule, if the decision carries one, is created in the same transaction, and the
    /// audit row (`approval.decide`, actor = approver) names the approver's channel,
    /// user id and name, the choice, the comment and the rule.
    pub fn decide_approval(&self, id: &str, decision: &ApprovalDecision) -> Result<Approval> {
        if decision.approver.trim().is_empty() || decision.approver_channel.trim().is_empty() {
            return Err(StoreError::Invalid(
                "a decision needs the approver's identity".into(),
            ));
        }
        if decision.grant.is_some() && !decision.approve {
            return Err(StoreError::Invalid("a denial cannot grant access".into()));
        }
        let status = if decision.approve {
            ApprovalStatus::Approved
        } else {
            ApprovalStatus::Denied
        };
        let now = crate::now_ms();
        let outcome = self.write(|tx| {
            let changed = tx.execute(
                "UPDATE approvals SET status = ?1, decided_at_ms = ?2, approver = ?3, comment = ?4,
                     choice = ?5, approver_channel = ?6, approver_user = ?7, approver_name = ?8,
                     holder = NULL
                 WHERE id = ?9 AND status = 'pending' AND expires_at_ms > ?2",
                rusqlite::params![
                    status.as_str(),
                    now,
                    &decision.approver,
                    &decision.comment,
                    &decision.choice,
                    &decision.approver_channel,
                    &decision.approver_user,
                    &decision.approver_name,
                    id
                ],
            )?;
            if changed == 0 {
                // Distinguish a bad id, a lost race and an expiry nobody closed yet.
                let approval = get_in(tx, id)?;
                if approval.status == ApprovalStatus::Pending {
                    return Ok(Err(StoreError::Expired(id.to_string())));
                }
                return Err(StoreError::AlreadyDecided(id.to_string()));
            }
            let granted = match &decision.grant {
                Some(rule) => {
                    let record = self.insert_rule_in(tx, rule, Some(&decision.approver))?;
                    tx.execute(
                        "UPDATE approvals SET granted_rule = ?1 WHERE id = ?2",
                        (&record.name, id),
                    )?;
                    Some(record.name)
                }
                None => None,
            };
            let approval = get_in(tx, id)?;
            let mut entry = self.audit_entry("approval.decide");
            entry.actor = Some(decision.approver.clone());
            entry.agent = Some(approval.agent.to_string());
            entry.approval_id = Some(id.to_string());
            entry.decision = Some(status.as_str().to_string());
            entry.rule = granted.clone();
            entry.detail = Some(serde_json::json!({
                "kind": approval.kind,
                "title": approval.title,
                "choice": decision.choice,
                "channel": decision.approver_channel,
                "user": decision.approver_user,
                "name": decision.approver_name,
                "comment": decision.comment,
                "granted_rule": granted,
            }));
            self.append_in(tx, &entry)?;
            Ok(Ok(approval))
        })?;
        if outcome.is_err() {
            // Expired while pending: close it, so it never looks decidable again.
            self.close_approval(id, ApprovalStatus::TimedOut)?;
        }
        outcome
    }

    /// Records a refused attempt to decide (someone not listed as an approver, a
    /// forged or stale callback): who tried, where, and why. Nothing else changes.
    pub fn audit_refused_decision(
        &self,
        id: &str,
        channel: &str,
        user: &str,
        reason: &str,
    ) -> Result<()> {
        self.write(|tx| {
            let agent: Option<String> = tx
                .query_row("SELECT agent FROM approvals WHERE id = ?1", [id], |row| {
                    row.get(0)
                })
                .optional()?;
            let mut entry = self.audit_entry("approval.refused");
            entry.actor = Some(format!("{channel}:{user}"));
            entry.agent = agent;
            entry.approval_id = Some(id.to_string());
            entry.decision = Some("refused".into());
            entry.detail = Some(serde_json::json!({
                "channel": channel,
                "user": user,
                "reason": reason,
            }));
            self.append_in(tx, &entry)?;
            Ok(())
        })
    }

    /// Pending approvals held by a gateway (`holder` set), oldest first: the engine
    /// closes those whose gateway is gone.
    pub fn held_approvals(&self) -> Result<Vec<Approval>> {
        self.read(|tx| {
            let mut stmt = tx.prepare(&format!(
                "SELECT {APPROVAL_COLUMNS} FROM approvals
                 WHERE status = 'pending' AND holder IS NOT NULL ORDER BY created_at_ms LIMIT 2000"
            ))?;
            let rows = stmt
                .query_map([], raw_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter().map(RawApproval::decode).collect()
        })
    }

    /// Closes (as timed out) every pending approval whose expiry has passed, whoever
    /// held it; returns them. A held request normally closes its own approval at its
    /// expiry; this catches the rest (a gateway that was killed while holding one).
    pub fn expire_overdue_approvals(&self, now_ms: i64) -> Result<Vec<Approval>> {
        let overdue: Vec<String> = self.read(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT id FROM approvals WHERE status = 'pending' AND expires_at_ms <= ?1 LIMIT 500",
            )?;
            let ids = stmt
                .query_map([now_ms], |row| row.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            Ok(ids)
        })?;
        overdue
            .iter()
            .map(|id| self.close_approval(id, ApprovalStatus::TimedOut))
            .collect()
    }

    /// Marks a pending approval timed out or cancelled (no-op if already decided); returns the row.
    pub fn close_approval(&self, id: &str, status: ApprovalStatus) -> Result<Approval> {
        if !matches!(status, ApprovalStatus::TimedOut | ApprovalStatus::Cancelled) {
            return Err(StoreError::Invalid(format!(
                "an approval can be closed only as timed_out or cancelled, not {}; use decide for approve/deny",
                status.as_str()
            )));
        }
        self.write(|tx| {
            let changed = tx.execute(
                "UPDATE approvals SET status = ?1, decided_at_ms = ?2, holder = NULL
                 WHERE id = ?3 AND status = 'pending'",
                (status.as_str(), crate::now_ms(), id),
            )?;
            let approval = get_in(tx, id)?;
            if changed > 0 {
                let mut entry = self.audit_entry("approval.close");
                entry.agent = Some(approval.agent.to_string());
                entry.approval_id = Some(id.to_string());
                entry.decision = Some(status.as_str().to_string());
                self.append_in(tx, &entry)?;
            }
            Ok(approval)
        })
    }

    /// Approvals decided (not pending) among `ids` — the gateway polls this for held requests.
    pub fn decided_among(&self, ids: &[String]) -> Result<Vec<Approval>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.read(|tx| {
            let mut decided = Vec::new();
            for chunk in ids.chunks(IDS_PER_QUERY) {
                let placeholders = vec!["?"; chunk.len()].join(", ");
                let mut stmt = tx.prepare(&format!(
                    "SELECT {APPROVAL_COLUMNS} FROM approvals
                     WHERE status != 'pending' AND id IN ({placeholders})"
                ))?;
                let rows = stmt
                    .query_map(rusqlite::params_from_iter(chunk), raw_from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                for raw in rows {
                    decided.push(raw.decode()?);
                }
            }
            Ok(decided)
        })
    }
}

impl Store {
    /// Whether a person approved a request of `agent` to `host` held by `rule` (its
    /// recorded context) at or after `since_ms`.
    /// The id of the latest such approval, if there is one.
    pub fn approved_since(
        &self,
        approved: &ApprovedUse<'_>,
        since_ms: i64,
    ) -> Result<Option<String>> {
        self.read(|tx| {
            Ok(tx
                .prepare_cached(
                    "SELECT id FROM approvals
                     WHERE agent = ?1 AND status = 'approved' AND decided_at_ms >= ?2
                       AND json_extract(context, '$.host') = ?3
                       AND json_extract(context, '$.port') = ?4
                       AND json_extract(context, '$.secret') IS ?5
                       AND json_extract(context, '$.secret_id') IS ?7
                       AND json_extract(context, '$.rule') = ?6
                     ORDER BY decided_at_ms DESC LIMIT 1",
                )?
                .query_row(
                    (
                        approved.agent.as_str(),
                        since_ms,
                        approved.host,
                        approved.port,
                        approved.secret,
                        approved.rule,
                        approved.secret_id,
                    ),
                    |row| row.get(0),
                )
                .optional()?)
        })
    }
}

/// What a person approved, for [`Store::approved_since`]: a request of `agent` to
/// `host` and `port` with the secret `secret` (its name, and its id: a secret deleted
/// and made again under that name holds another value), held by `rule`. Another port
/// is another service, and another secret another credential the person never saw.
pub struct ApprovedUse<'a> {
    pub agent: &'a palisade_policy::AgentName,
    pub host: &'a str,
    pub port: u16,
    pub secret: Option<&'a str>,
    pub secret_id: Option<i64>,
    pub rule: &'a str,
}
