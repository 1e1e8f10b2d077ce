//! Agents and their gateway tokens.
//!
//! A token is kept twice: as SHA-256 for the gateway's lookup of `Proxy-Authorization`,
//! and sealed under the master key so `palisade agents token NAME` can show it again
//! without rotating it (which would break every client already configured with it).

use super::{corrupt, Store};
use crate::crypto::{new_token, token_hash};
use crate::records::AgentRecord;
use crate::{Result, StoreError};
use palisade_policy::{AgentName, Profile, SecretValue};
use rusqlite::{OptionalExtension, Transaction};

const AGENT_COLUMNS: &str = "a.name, a.profile, a.created_at_ms, a.settings, \
     EXISTS (SELECT 1 FROM agent_tokens t WHERE t.agent_id = a.id)";

struct RawAgent {
    name: String,
    profile: String,
    created_at_ms: i64,
    settings: String,
    has_token: bool,
}

impl RawAgent {
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(RawAgent {
            name: row.get(0)?,
            profile: row.get(1)?,
            created_at_ms: row.get(2)?,
            settings: row.get(3)?,
            has_token: row.get(4)?,
        })
    }

    fn decode(self) -> Result<AgentRecord> {
        Ok(AgentRecord {
            name: parse_agent_name(&self.name)?,
            profile: self
                .profile
                .parse::<Profile>()
                .map_err(|e| corrupt("agent profile", e))?,
            created_at_ms: self.created_at_ms,
            has_token: self.has_token,
            settings: serde_json::from_str(&self.settings)
                .map_err(|e| corrupt("agent settings", e))?,
        })
    }
}

pub(super) fn parse_agent_name(name: &str) -> Result<AgentName> {
    AgentName::new(name).map_err(|e| corrupt("agent name", e))
}

/// The row id of agent `name`, or `NotFound`.
pub(super) fn agent_id(tx: &Transaction<'_>, name: &AgentName) -> Result<i64> {
    tx.query_row(
        "SELECT id FROM agents WHERE name = ?1",
        [name.as_str()],
        |row| row.get(0),
    )
    .optional()?
    .ok_or_else(|| StoreError::NotFound {
        what: "agent",
        name: name.to_string(),
    })
}

fn token_associated(name: &AgentName) -> String {
    format!("agent-token:{name}")
}

fn get_agent_in(tx: &Transaction<'_>, name: &AgentName) -> Result<AgentRecord> {
    tx.query_row(
        &format!("SELECT {AGENT_COLUMNS} FROM agents a WHERE a.name = ?1"),
        [name.as_str()],
        RawAgent::from_row,
    )
    .optional()?
    .ok_or_else(|| StoreError::NotFound {
        what: "agent",
        name: name.to_string(),
    })?
    .decode()
}

impl Store {
    pub fn create_agent(&self, name: &AgentName, profile: Profile) -> Result<AgentRecord> {
        self.write(|tx| {
            let exists: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM agents WHERE name = ?1)",
                [name.as_str()],
                |row| row.get(0),
            )?;
            if exists {
                return Err(StoreError::Duplicate {
                    what: "agent",
                    name: name.to_string(),
                });
            }
            tx.execute(
                "INSERT INTO agents (name, profile, created_at_ms, settings) VALUES (?1, ?2, ?3, '{}')",
                (name.as_str(), profile.as_str(), crate::now_ms()),
            )?;
            let mut entry = self.audit_entry("agent.create");
            entry.agent = Some(name.to_string());
            entry.decision = Some("created".into());
            entry.detail = Some(serde_json::json!({ "profile": profile.as_str() }));
            self.append_in(tx, &entry)?;
            get_agent_in(tx, name)
        })
    }

    pub fn get_agent(&self, name: &AgentName) -> Result<AgentRecord> {
        self.read(|tx| get_agent_in(tx, name))
    }

    pub fn list_agents(&self) -> Result<Vec<AgentRecord>> {
        self.read(|tx| {
            let mut stmt = tx.prepare(&format!(
                "SELECT {AGENT_COLUMNS} FROM agents a ORDER BY a.name"
            ))?;
            let raw = stmt
                .query_map([], RawAgent::from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            raw.into_iter().map(RawAgent::decode).collect()
        })
    }

    /// Also removes the agent's grants, its agent-bound rules and its token.
    pub fn delete_agent(&self, name: &AgentName) -> Result<()> {
        self.write(|tx| {
            let id = agent_id(tx, name)?;
            let rules: i64 = tx.query_row(
                "SELECT COUNT(*) FROM rules WHERE agent_id = ?1",
                [id],
                |row| row.get(0),
            )?;
            let grants: i64 = tx.query_row(
                "SELECT COUNT(*) FROM secret_grants WHERE agent_id = ?1",
                [id],
                |row| row.get(0),
            )?;
            // Foreign keys cascade to agent_tokens, secret_grants and rules.
            tx.execute("DELETE FROM agents WHERE id = ?1", [id])?;
            // Approvals name the agent as text: a new agent of the same name must not
            // inherit them (an admitted stranger, a pending card).
            tx.execute(
                "UPDATE approvals SET request_key = NULL WHERE agent = ?1 AND request_key LIKE 'access:%'",
                [name.as_str()],
            )?;
            tx.execute(
                "UPDATE approvals SET status = 'cancelled', decided_at_ms = ?2
                 WHERE agent = ?1 AND status = 'pending'",
                (name.as_str(), crate::now_ms()),
            )?;
            let mut entry = self.audit_entry("agent.delete");
            entry.agent = Some(name.to_string());
            entry.decision = Some("deleted".into());
            entry.detail = Some(serde_json::json!({
                "rules_removed": rules,
                "grants_removed": grants,
            }));
            self.append_in(tx, &entry)?;
            Ok(())
        })
    }

    pub fn update_agent_settings(
        &self,
        name: &AgentName,
        settings: &serde_json::Value,
    ) -> Result<()> {
        let text = serde_json::to_string(settings)
            .map_err(|e| StoreError::Invalid(format!("agent settings cannot be encoded: {e}")))?;
        self.write(|tx| {
            let id = agent_id(tx, name)?;
            tx.execute("UPDATE agents SET settings = ?1 WHERE id = ?2", (&text, id))?;
            // Settings are the host's business and could hold anything; the audit row
            // records that they changed, not what they became.
            let mut entry = self.audit_entry("agent.update");
            entry.agent = Some(name.to_string());
            entry.decision = Some("updated".into());
            entry.detail = Some(serde_json::json!({ "field": "settings" }));
            self.append_in(tx, &entry)?;
            Ok(())
        })
    }

    pub fn set_agent_profile(&self, name: &AgentName, profile: Profile) -> Result<()> {
        self.write(|tx| {
            let id = agent_id(tx, name)?;
            if profile == Profile::Research {
                let sensitive: Option<String> = tx
                    .query_row(
                        "SELECT s.name FROM secret_grants g JOIN secrets s ON s.id = g.secret_id
                         WHERE g.agent_id = ?1 AND s.sensitive = 1 ORDER BY s.name LIMIT 1",
                        [id],
                        |row| row.get(0),
                    )
                    .optional()?;
                if let Some(secret) = sensitive {
                    return Err(StoreError::Invalid(format!(
                        "agent {name} holds the sensitive secret {secret}, and research agents may not: revoke it first (`palisade secrets revoke {secret} --agent {name}`)"
                    )));
                }
                let granted: Vec<(String, String)> = tx
                    .prepare(
                        "SELECT s.name, s.host_pattern FROM secret_grants g
                         JOIN secrets s ON s.id = g.secret_id
                         WHERE g.agent_id = ?1 ORDER BY s.name",
                    )?
                    .query_map([id], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                let everywhere = granted.into_iter().find(|(_, host)| {
                    palisade_policy::HostPattern::parse(host).map_or(true, |h| h.spans_owners())
                });
                if let Some((secret, host)) = everywhere {
                    return Err(StoreError::Invalid(format!(
                        "agent {name} holds secret {secret}, which is injected on hosts of many owners (`{host}`), and a research agent visits any site: revoke it first (`palisade secrets revoke {secret} --agent {name}`)"
                    )));
                }
                if let Some(folder) = super::folders::sensitive_mount(tx, id)? {
                    return Err(StoreError::Invalid(format!(
                        "agent {name} mounts the sensitive folder {folder}, and research agents may not: unmount it first (`palisade folders unmount {folder} --agent {name}`)"
                    )));
                }
            }
            tx.execute(
                "UPDATE agents SET profile = ?1 WHERE id = ?2",
                (profile.as_str(), id),
            )?;
            if let Some(problem) = super::folders::compartment_share(tx, id)? {
                return Err(StoreError::Invalid(problem));
            }
            let mut entry = self.audit_entry("agent.update");
            entry.agent = Some(name.to_string());
            entry.decision = Some("updated".into());
            entry.detail =
                Some(serde_json::json!({ "field": "profile", "profile": profile.as_str() }));
            self.append_in(tx, &entry)?;
            Ok(())
        })
    }

    /// Returns the existing token if one was issued and `rotate` is false (tokens are
    /// kept sealed so they can be shown again), else issues a new one (old one stops working).
    pub fn agent_token(&self, name: &AgentName, rotate: bool) -> Result<SecretValue> {
        self.write(|tx| {
            let id = agent_id(tx, name)?;
            let existing: Option<String> = tx
                .query_row(
                    "SELECT sealed FROM agent_tokens WHERE agent_id = ?1",
                    [id],
                    |row| row.get(0),
                )
                .optional()?;
            if let (Some(sealed), false) = (&existing, rotate) {
                return self.key().open(&token_associated(name), sealed);
            }
            let token = new_token();
            let sealed = self.key().seal(&token_associated(name), &token)?;
            tx.execute(
                "INSERT INTO agent_tokens (agent_id, token_hash, sealed, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(agent_id) DO UPDATE SET
                     token_hash = excluded.token_hash,
                     sealed = excluded.sealed,
                     created_at_ms = excluded.created_at_ms",
                (id, token_hash(token.expose()), &sealed, crate::now_ms()),
            )?;
            let mut entry = self.audit_entry("agent.token");
            entry.agent = Some(name.to_string());
            entry.decision = Some(
                if existing.is_some() {
                    "rotated"
                } else {
                    "issued"
                }
                .into(),
            );
            self.append_in(tx, &entry)?;
            Ok(token)
        })
    }

    /// Map of token hash -> agent, for the gateway's snapshot.
    /// Whether some agent's token has this SHA-256 (hex).
    pub fn token_hash_known(&self, token_hash: &str) -> Result<bool> {
        self.read(|tx| {
            Ok(tx
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM agent_tokens WHERE token_hash = ?1)")?
                .query_row([token_hash], |row| row.get(0))?)
        })
    }

    ///
    /// Only tokens this home issued count: each row's sealed token must open (under the
    /// master key, for that agent's name) to the token its hash names. The hash alone
    /// is a plain SHA-256, so someone who could write the database but not read the key
    /// put in a row for a token of their own, for a made-up agent with a secret granted,
    /// and the gateway sent the credential on its requests (review, audit round ten).
    /// Such a row is left out (logged), and its token gets `407`.
    pub fn agent_token_hashes(&self) -> Result<Vec<(String, AgentName)>> {
        let rows = self.read(|tx| {
            let mut stmt = tx.prepare(
                "SELECT t.token_hash, t.sealed, a.name FROM agent_tokens t
                 JOIN agents a ON a.id = t.agent_id ORDER BY a.name",
            )?;
            let raw = stmt
                .query_map([], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(raw)
        })?;
        let mut tokens = Vec::with_capacity(rows.len());
        for (hash, sealed, name) in rows {
            let name = parse_agent_name(&name)?;
            let issued = self
                .key()
                .open(&token_associated(&name), &sealed)
                .is_ok_and(|token| token_hash(token.expose()) == hash);
            if issued {
                tokens.push((hash, name));
            } else {
                palisade_policy::budgeted!(
                    error,
                    agent = %name,
                    "an agent token in the database was not issued by this home (its sealed value does not open to it); it is not accepted. `palisade agents token NAME --rotate` issues a new one"
                );
            }
        }
        Ok(tokens)
    }
}
