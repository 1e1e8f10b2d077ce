//! Rules: host/path/method patterns with an action, optionally bound to one agent.

use super::agents::agent_id;
use super::{corrupt, validate_name, Store};
use crate::records::{NewRule, RuleRecord};
use crate::{Result, StoreError};
use palisade_policy::{AgentName, RuleAction};
use rusqlite::{OptionalExtension, Transaction};

const RULE_COLUMNS: &str = "r.id, r.name, r.host_pattern, r.path_pattern, r.method, r.action, \
     r.rate_limit, r.rate_window, a.name, r.priority, r.expires_at_ms, r.body_contains, \
     r.scope, r.created_at_ms, r.approval_timeout_ms, r.enabled";

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
            enabled: row.get(15)?,
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

/// The id and name of the rule called `name_or_id`, or with that id. A name wins over
/// an id when a rule is named like a number.
fn find_rule(tx: &Transaction<'_>, name_or_id: &str) -> Result<(i64, String)> {
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
    found.ok_or_else(|| StoreError::NotFound {
        what: "rule",
        name: name_or_id.to_string(),
    })
}

/// The columns of a rule as written: (rate_limit, rate_window, path, method).
fn rule_columns(rule: &NewRule) -> (Option<u32>, Option<String>, Option<String>, String) {
    let (rate_limit, rate_window) = match &rule.action {
        RuleAction::RateLimit { limit, window } => (Some(*limit), Some(window.to_string())),
        _ => (None, None),
    };
    let path = rule.path.as_ref().map(|p| p.as_str().to_string());
    (rate_limit, rate_window, path, rule.method.to_string())
}

fn check_rule(rule: &NewRule) -> Result<()> {
    validate_name("rule", &rule.name)?;
    if rule.body_contains.as_deref() == Some("") {
        return Err(StoreError::Invalid(
            "body-contains is empty; omit it or give the text the body must contain".into(),
        ));
    }
    Ok(())
}

impl Store {
    /// A rule by name or id.
    pub fn get_rule(&self, name_or_id: &str) -> Result<RuleRecord> {
        self.read(|tx| {
            let (id, _) = find_rule(tx, name_or_id)?;
            get_rule_by_id(tx, id)
        })
    }

    /// Replaces every field of rule `name_or_id` with `rule` (a rename included); it
    /// keeps its creation time and whether it is enabled, and its id unless it is now a
    /// hold (which takes the next id: see [`renumber`]). Rate counts of the old form are
    /// kept (they are per rule and agent).
    pub fn update_rule(&self, name_or_id: &str, rule: NewRule) -> Result<RuleRecord> {
        check_rule(&rule)?;
        let (rate_limit, rate_window, path, method) = rule_columns(&rule);
        self.write(|tx| {
            let (id, old_name) = find_rule(tx, name_or_id)?;
            // A grant's name is what keeps it to answering its hold: renamed, it would
            // be an ordinary allow rule above the rules below it.
            if rule.name != old_name
                && palisade_policy::rule::GRANT_PREFIXES
                    .iter()
                    .any(|prefix| old_name.starts_with(prefix))
            {
                return Err(StoreError::Invalid(format!(
                    "rule {old_name} is a person's grant and keeps its name (renamed, it would allow past the rules below it); disable or delete it, and create a rule of your own"
                )));
            }
            if rule.name != old_name {
                let taken: bool = tx.query_row(
                    "SELECT EXISTS (SELECT 1 FROM rules WHERE name = ?1)",
                    [&rule.name],
                    |row| row.get(0),
                )?;
                if taken {
                    return Err(StoreError::Duplicate {
                        what: "rule",
                        name: rule.name.clone(),
                    });
                }
            }
            let agent_row = match &rule.agent {
                Some(agent) => Some(agent_id(tx, agent)?),
                None => None,
            };
            tx.execute(
                "UPDATE rules SET name = ?1, host_pattern = ?2, path_pattern = ?3, method = ?4,
                     action = ?5, rate_limit = ?6, rate_window = ?7, agent_id = ?8, priority = ?9,
                     expires_at_ms = ?10, body_contains = ?11, scope = ?12,
                     approval_timeout_ms = ?13
                 WHERE id = ?14",
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
                    rule.approval_timeout_ms,
                    id,
                ],
            )?;
            let previous_id = id;
            let id = if rule.action == RuleAction::RequireApproval {
                renumber(tx, id)?
            } else {
                id
            };
            let mut entry = self.audit_entry("rule.update");
            entry.rule = Some(rule.name.clone());
            entry.agent = rule.agent.as_ref().map(ToString::to_string);
            entry.host = Some(rule.host.as_str().to_string());
            entry.path = path.clone();
            entry.method = Some(method.clone());
            entry.decision = Some("updated".into());
            entry.detail = Some(serde_json::json!({
                "id": id,
                "previous_id": (previous_id != id).then_some(previous_id),
                "previous_name": (old_name != rule.name).then_some(&old_name),
                "action": rule.action.kind(),
                "rate_limit": rate_limit,
                "rate_window": rate_window,
                "priority": rule.priority,
                "expires_at_ms": rule.expires_at_ms,
                "scope": rule.scope.as_str(),
                "approval_timeout_ms": rule.approval_timeout_ms,
            }));
            self.append_in(tx, &entry)?;
            get_rule_by_id(tx, id)
        })
    }

    /// Switches a rule off (the gateway ignores it) or on again, keeping every field.
    /// Setting the state it already has changes nothing and writes no audit row.
    pub fn set_rule_enabled(&self, name_or_id: &str, enabled: bool) -> Result<RuleRecord> {
        self.write(|tx| {
            let (id, name) = find_rule(tx, name_or_id)?;
            let changed = tx.execute(
                "UPDATE rules SET enabled = ?1 WHERE id = ?2 AND enabled != ?1",
                (enabled, id),
            )?;
            let holds: bool = tx.query_row(
                "SELECT action = 'require_approval' FROM rules WHERE id = ?1",
                [id],
                |row| row.get(0),
            )?;
            let id = if changed > 0 && enabled && holds {
                renumber(tx, id)?
            } else {
                id
            };
            if changed > 0 {
                let event = if enabled {
                    "rule.enable"
                } else {
                    "rule.disable"
                };
                let mut entry = self.audit_entry(event);
                entry.rule = Some(name);
                entry.decision = Some(if enabled { "enabled" } else { "disabled" }.into());
                entry.detail = Some(serde_json::json!({ "id": id }));
                self.append_in(tx, &entry)?;
            }
            get_rule_by_id(tx, id)
        })
    }

    pub fn create_rule(&self, rule: NewRule) -> Result<RuleRecord> {
        self.write(|tx| self.insert_rule_in(tx, &rule, None))
    }

    pub fn list_rules(&self) -> Result<Vec<RuleRecord>> {
        self.read(all_rules)
    }

    /// By name or numeric id. A name wins over an id when a rule is named like a number.
    pub fn delete_rule(&self, name_or_id: &str) -> Result<()> {
        self.write(|tx| {
            let (id, name) = find_rule(tx, name_or_id)?;
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
        check_rule(rule)?;
        let (rate_limit, rate_window, path, method) = rule_columns(rule);
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
            // Ids are never given twice: SQLite gives a deleted rule's id to the next
            // when it was the highest, so `rules delete 3`, typed from an older list,
            // deleted the rule made since.
            const HIGHEST_ID: &str = "rule_id_highest";
            let highest: i64 = super::read_setting(tx, HIGHEST_ID)?
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let in_table: i64 =
                tx.query_row("SELECT COALESCE(MAX(id), 0) FROM rules", [], |row| {
                    row.get(0)
                })?;
            let id = highest.max(in_table) + 1;
            super::write_setting(tx, HIGHEST_ID, &id.to_string())?;
            tx.execute(
                "INSERT INTO rules (id, name, host_pattern, path_pattern, method, action, rate_limit,
                     rate_window, agent_id, priority, expires_at_ms, body_contains, scope, created_at_ms,
                     approval_timeout_ms)
                 VALUES (?15, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
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
                    id,
                ],
            )?;
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

/// Gives rule `id` the next id, as a new rule would get: a person's grant answers only
/// holds older than itself (`palisade_policy::evaluate`), so a hold edited or enabled
/// again after a grant was made is not answered by it (it kept its id, and was).
/// Only holds move: a rate limit's counts are kept by its id.
fn renumber(tx: &Transaction<'_>, id: i64) -> Result<i64> {
    let next: i64 = tx.query_row("SELECT MAX(id) + 1 FROM rules", [], |row| row.get(0))?;
    tx.execute("UPDATE rules SET id = ?1 WHERE id = ?2", (next, id))?;
    Ok(next)
}
