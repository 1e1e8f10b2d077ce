//! The agent-to-agent allow-list: which agent may message which, and whether a person
//! approves each message in either direction. Nothing is allowed by default.

use super::agents::{agent_id, parse_agent_name};
use super::Store;
use crate::records::AgentLink;
use crate::{Result, StoreError};
use palisade_policy::AgentName;
use rusqlite::OptionalExtension;

const LINK_QUERY: &str = "SELECT f.name, t.name, l.approve_outbound, l.approve_inbound, l.created_at_ms
     FROM agent_links l JOIN agents f ON f.id = l.from_agent_id JOIN agents t ON t.id = l.to_agent_id";

fn link_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, bool, bool, i64)> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
    ))
}

fn decode(raw: (String, String, bool, bool, i64)) -> Result<AgentLink> {
    Ok(AgentLink {
        from: parse_agent_name(&raw.0)?,
        to: parse_agent_name(&raw.1)?,
        approve_outbound: raw.2,
        approve_inbound: raw.3,
        created_at_ms: raw.4,
    })
}

impl Store {
    /// Lets `from` message `to` (replacing the approval settings of an existing entry).
    pub fn allow_agent(
        &self,
        from: &AgentName,
        to: &AgentName,
        approve_outbound: bool,
        approve_inbound: bool,
    ) -> Result<AgentLink> {
        if from == to {
            return Err(StoreError::Invalid(format!(
                "agent {from} cannot be allowed to message itself"
            )));
        }
        self.write(|tx| {
            let (from_id, to_id) = (agent_id(tx, from)?, agent_id(tx, to)?);
            tx.execute(
                "INSERT INTO agent_links (from_agent_id, to_agent_id, approve_outbound, approve_inbound, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(from_agent_id, to_agent_id) DO UPDATE SET
                     approve_outbound = excluded.approve_outbound,
                     approve_inbound = excluded.approve_inbound",
                (from_id, to_id, approve_outbound, approve_inbound, crate::now_ms()),
            )?;
            let mut entry = self.audit_entry("agent.allow");
            entry.agent = Some(from.to_string());
            entry.decision = Some("allowed".into());
            entry.detail = Some(serde_json::json!({
                "to": to.as_str(),
                "approve_outbound": approve_outbound,
                "approve_inbound": approve_inbound,
            }));
            self.append_in(tx, &entry)?;
            let raw = tx.query_row(
                &format!("{LINK_QUERY} WHERE l.from_agent_id = ?1 AND l.to_agent_id = ?2"),
                (from_id, to_id),
                link_from_row,
            )?;
            decode(raw)
        })
    }

    /// Stops `from` messaging `to`.
    pub fn disallow_agent(&self, from: &AgentName, to: &AgentName) -> Result<()> {
        self.write(|tx| {
            let (from_id, to_id) = (agent_id(tx, from)?, agent_id(tx, to)?);
            let removed = tx.execute(
                "DELETE FROM agent_links WHERE from_agent_id = ?1 AND to_agent_id = ?2",
                (from_id, to_id),
            )?;
            if removed == 0 {
                return Err(StoreError::NotFound {
                    what: "allow-list entry",
                    name: format!("{from} -> {to}"),
                });
            }
            let mut entry = self.audit_entry("agent.disallow");
            entry.agent = Some(from.to_string());
            entry.decision = Some("disallowed".into());
            entry.detail = Some(serde_json::json!({ "to": to.as_str() }));
            self.append_in(tx, &entry)?;
            Ok(())
        })
    }

    /// The allow-list entry `from` → `to`, if any.
    pub fn agent_link(&self, from: &AgentName, to: &AgentName) -> Result<Option<AgentLink>> {
        self.read(|tx| {
            tx.query_row(
                &format!("{LINK_QUERY} WHERE f.name = ?1 AND t.name = ?2"),
                (from.as_str(), to.as_str()),
                link_from_row,
            )
            .optional()?
            .map(decode)
            .transpose()
        })
    }

    /// Every allow-list entry from or to `agent` (all entries when `None`).
    pub fn list_agent_links(&self, agent: Option<&AgentName>) -> Result<Vec<AgentLink>> {
        self.read(|tx| {
            let raw = match agent {
                Some(agent) => {
                    let mut stmt = tx.prepare(&format!(
                        "{LINK_QUERY} WHERE f.name = ?1 OR t.name = ?1 ORDER BY f.name, t.name"
                    ))?;
                    let rows = stmt
                        .query_map([agent.as_str()], link_from_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    rows
                }
                None => {
                    let mut stmt = tx.prepare(&format!("{LINK_QUERY} ORDER BY f.name, t.name"))?;
                    let rows = stmt
                        .query_map([], link_from_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    rows
                }
            };
            raw.into_iter().map(decode).collect()
        })
    }
}
