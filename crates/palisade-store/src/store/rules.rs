//! Rules: host/path/method patterns with an action, optionally bound to one agent.

use super::agents::agent_id;
use super::{corrupt, validate_name, Store};
use crate::records::{NewRule, RuleRecord};
use crate::{Result, StoreError};
use palisade_policy::{AgentName, RuleAction};
use rusqlite::{OptionalExtension, Transaction};

const RULE_COLUMNS: &str = "r.id, r.name, r.host_pattern, r.path_pattern, r.method, r.action, \
     r.rate_limit, r.rate_window, a.name, r.priority, r.expires_at_ms, r.body_contains, \
     r.scope, r.created_at_ms, r.approval_timeout_ms";

/// Evaluation order of the policy crate (priority, then age) so listings read the same way.
const RULE_ORDER: &str = "ORDER BY r.priority DESC, r.id ASC";

struct RawRule {
    record: RuleRecord,
    agent: Option<String>,
    rate_limit: Option<i64>,
}

fn raw_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawRule> {
    Ok(RawRule {
        record: RuleRecord {
            id: row.get(0)?,
            name: row.get(1)?,
            host_pattern: row.get(2)?,
            path_pattern: row.get(3)?,
            method: row.get(4)?,
            action: row.get(5)?,
            rate_limit: None,
            rate_window: row.get(7)?,
            agent: None,
            priority: row.get(9)?,
            expires_at_ms: row.get(10)?,
            body_contains: row.get(11)?,
            scope: row.get(12)?,
            created_at_ms: row.get(13)?,
            approval_timeout_ms: row.get(14)?,
        },
        agent: row.get(8)?,
        rate_limit: row.get(6)?,
    })
}

impl RawRule {
    fn decode(self) -> Result<RuleRecord> {
        let mut record = self.record;
        record.agent = match self.agent {
            Some(name) => Some(AgentName::new(&name).map_err(|e| corrupt("rule agent", e))?),
            None => None,
        };
        record.rate_limit = match self.rate_limit {
            Some(limit) => Some(u32::try_from(limit).map_err(|e| corrupt("rate limit", e))?),
            None => None,
        };
        Ok(record)
    }
}

pub(super) fn all_rules(tx: &Transaction<'_>) -> Result<Vec<RuleRecord>> {
    let mut stmt = tx.prepare(&format!(
        "SELECT {RULE_COLUMNS} FROM rules r LEFT JOIN agents a ON a.id = r.agent_id {RULE_ORDER}"
    ))?;
    let raw = stmt
        .query_map([], raw_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    raw.into_iter().map(RawRule::decode).collect()
}

fn get_rule_by_id(tx: &Transaction<'_>, id: i64) -> Result<RuleRecord> {
    tx.query_row(
        &format!(
            "SELECT {RULE_COLUMNS} FROM rules r LEFT JOIN agents a ON a.id = r.agent_id WHERE r.id = ?1"
        ),
        [id],
        raw_from_row,
    )?
    .decode()
}

impl Store {
    pub fn create_rule(&self, rule: NewRule) -> Result<RuleRecord> {
        self.write(|tx| self.insert_rule_in(tx, &rule, None))
    }

    pub fn list_rules(&self) -> Result<Vec<RuleRecord>> {
        self.read(all_rules)
    }

    /// By name or numeric id. A name wins over an id when a rule is named like a number.
    pub fn delete_rule(&self, name_or_id: &str) -> Result<()> {
        self.write(|tx| {
            let mut found: Option<(i64, String)> = tx
                .query_row(
                    "SELECT id, name FROM rules WHERE name = ?1",
                    [name_or_id],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?;
            if found.is_none() {
                if let Ok(id) = name_or_id.trim().parse::<i64>() {
                    found = tx
                        .query_row("SELECT id, name FROM rules WHERE id = ?1", [id], |row| {
                            Ok((row.get(0)?, row.get(1)?))
                        })
                        .optional()?;
                }
            }
            let (id, name) = found.ok_or_else(|| StoreError::NotFound {
                what: "rule",
                name: name_or_id.to_string(),
            })?;
            tx.execute("DELETE FROM rules WHERE id = ?1", [id])?;
            let mut entry = self.audit_entry("rule.delete");
            entry.rule = Some(name);
            entry.decision = Some("deleted".into());
            entry.detail = Some(serde_json::json!({ "id": id }));
            self.append_in(tx, &entry)?;
            Ok(())
        })
    }

    /// Creates a rule (with its audit row) inside a write transaction, so another
    /// change (an approval's decision) can commit together with it.
    /// `actor` overrides this handle's actor on the audit row (the approver who granted it).
    pub(super) fn insert_rule_in(
        &self,
        tx: &Transaction<'_>,
        rule: &NewRule,
        actor: Option<&str>,
    ) -> Result<RuleRecord> {
        validate_name("rule", &rule.name)?;
        if rule.body_contains.as_deref() == Some("") {
            return Err(StoreError::Invalid(
                "body-contains is empty; omit it or give the text the body must contain".into(),
            ));
        }
        let (rate_limit, rate_window) = match &rule.action {
            RuleAction::RateLimit { limit, window } => (Some(*limit), Some(window.to_string())),
            _ => (None, None),
        };
        let path = rule.path.as_ref().map(|p| p.as_str().to_string());
        let method = rule.method.to_string();
        {
            let exists: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM rules WHERE name = ?1)",
                [&rule.name],
                |row| row.get(0),
            )?;
            if exists {
                return Err(StoreError::Duplicate {
                    what: "rule",
                    name: rule.name.clone(),
                });
            }
            let agent_row = match &rule.agent {
                Some(agent) => Some(agent_id(tx, agent)?),
                None => None,
            };
            tx.execute(
                "INSERT INTO rules (name, host_pattern, path_pattern, method, action, rate_limit,
                     rate_window, agent_id, priority, expires_at_ms, body_contains, scope, created_at_ms,
                     approval_timeout_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                rusqlite::params![
                    &rule.name,
                    rule.host.as_str(),
                    &path,
                    &method,
                    rule.action.kind(),
                    rate_limit,
                    &rate_window,
                    agent_row,
                    rule.priority,
                    rule.expires_at_ms,
                    &rule.body_contains,
                    rule.scope.as_str(),
                    crate::now_ms(),
                    rule.approval_timeout_ms,
                ],
            )?;
            let id = tx.last_insert_rowid();
            let mut entry = self.audit_entry("rule.create");
            if let Some(actor) = actor {
                entry.actor = Some(actor.to_string());
            }
            entry.rule = Some(rule.name.clone());
            entry.agent = rule.agent.as_ref().map(ToString::to_string);
            entry.host = Some(rule.host.as_str().to_string());
            entry.path = path.clone();
            entry.method = Some(method.clone());
            entry.decision = Some("created".into());
            entry.detail = Some(serde_json::json!({
                "id": id,
                "action": rule.action.kind(),
                "rate_limit": rate_limit,
                "rate_window": rate_window,
                "priority": rule.priority,
                "expires_at_ms": rule.expires_at_ms,
                "scope": rule.scope.as_str(),
            }));
            self.append_in(tx, &entry)?;
            get_rule_by_id(tx, id)
        }
    }
}
