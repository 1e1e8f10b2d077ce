//! Secrets (sealed values, never returned by listing) and their grants to agents.

use super::agents::{agent_id, parse_agent_name};
use super::{validate_name, Store};
use crate::input::CheckedSecret;
use crate::records::{NewSecret, SecretRecord};
use crate::{Result, StoreError};
use palisade_policy::AgentName;
use palisade_policy::SecretValue;
use rusqlite::{OptionalExtension, Transaction};
use std::collections::{HashMap, HashSet};

const SECRET_COLUMNS: &str =
    "id, name, host_pattern, path_pattern, injection, priority, created_at_ms, sensitive";

fn record_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<SecretRecord> {
    Ok(SecretRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        host_pattern: row.get(2)?,
        path_pattern: row.get(3)?,
        injection: row.get(4)?,
        agents: Vec::new(),
        priority: row.get(5)?,
        created_at_ms: row.get(6)?,
        sensitive: row.get(7)?,
    })
}

/// Refuses a grant of a sensitive secret to a research-profile agent: research agents
/// read the internet, so they hold nothing worth stealing. Nor a secret injected on
/// hosts of many owners (`any_host`: `*`, `*.com`, … see
/// [`palisade_policy::HostPattern::spans_owners`]): a research agent visits any site,
/// and every one of them would receive it.
pub(super) fn check_compartment(
    tx: &Transaction<'_>,
    secret: &str,
    sensitive: bool,
    any_host: bool,
    agent: &AgentName,
) -> Result<()> {
    if !sensitive && !any_host {
        return Ok(());
    }
    let profile: String = tx
        .query_row(
            "SELECT profile FROM agents WHERE name = ?1",
            [agent.as_str()],
            |row| row.get(0),
        )
        .optional()?
        .ok_or_else(|| StoreError::NotFound {
            what: "agent",
            name: agent.to_string(),
        })?;
    if profile != palisade_policy::Profile::Research.as_str() {
        return Ok(());
    }
    if sensitive {
        return Err(StoreError::Invalid(format!(
            "secret {secret} is sensitive and agent {agent} has the research profile: research agents read the internet and may not hold sensitive credentials; grant it to an action agent, or make {agent} one with `palisade agents edit {agent} --profile action`"
        )));
    }
    Err(StoreError::Invalid(format!(
        "secret {secret} is injected on hosts of many owners (every host, or a wildcard over a public suffix such as `*.com`) and agent {agent} has the research profile: a research agent visits any site, and every one of them would receive it; give the secret the host it is for (a new secret with `--host-pattern`)"
    )))
}

/// The signature of a grant of secret `secret` to agent `agent` (by name; a grant row
/// written into the database without the key carries none that holds, and grants
/// nothing: review, audit round ten, where such a row and a token of the attacker's
/// had a credential injected).
pub(super) fn grant_mac(key: &crate::crypto::MasterKey, secret: &str, agent: &str) -> String {
    hex::encode(key.mac(
        "palisade secret grant v1",
        serde_json::json!([secret, agent]).to_string().as_bytes(),
    ))
}

/// The grants the audit log records as in force, as (secret, agent) names: each
/// secret's creation (with the agents it names), grants, revocations and deletion, and
/// each agent's creation and deletion, in the log's order, in one pass. Read from the
/// table itself (`NOT INDEXED`), whose rows `audit verify` vouches for.
fn recorded_grants(conn: &rusqlite::Connection) -> Result<HashSet<(String, String)>> {
    let mut rows = conn.prepare(
        "SELECT event, secret, agent, detail FROM audit NOT INDEXED
         WHERE event IN ('secret.create', 'secret.delete', 'secret.grant', 'secret.revoke',
                         'agent.create', 'agent.delete')
         ORDER BY id",
    )?;
    let rows = rows
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, Option<String>>(1)?,
                row.get::<_, Option<String>>(2)?,
                row.get::<_, Option<String>>(3)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut granted: HashSet<(String, String)> = HashSet::new();
    for (event, secret, agent, detail) in rows {
        match (event.as_str(), secret, agent) {
            ("secret.create", Some(secret), _) => {
                granted.retain(|(s, _)| *s != secret);
                let named = detail
                    .and_then(|d| serde_json::from_str::<serde_json::Value>(&d).ok())
                    .and_then(|d| d["agents"].as_array().cloned())
                    .unwrap_or_default();
                for agent in named.iter().filter_map(serde_json::Value::as_str) {
                    granted.insert((secret.clone(), agent.to_string()));
                }
            }
            ("secret.delete", Some(secret), _) => granted.retain(|(s, _)| *s != secret),
            ("secret.grant", Some(secret), Some(agent)) => {
                granted.insert((secret, agent));
            }
            ("secret.revoke", Some(secret), Some(agent)) => {
                granted.remove(&(secret, agent));
            }
            ("agent.create" | "agent.delete", _, Some(agent)) => {
                granted.retain(|(_, a)| *a != agent)
            }
            _ => {}
        }
    }
    Ok(granted)
}

/// Signs the grants the audit log records (the open that migrates to
/// [`crate::migrations::SIGNED_GRANTS`]). A grant the log does not record is left
/// unsigned, granting nothing: the schema version is the database's own, so whoever
/// writes the database can ask for this migration again after writing grants of their
/// own, and only the log, which `audit verify` vouches for, tells palisade's from
/// theirs. (A grant whose rows a pruning removed is left unsigned too; `palisade
/// secrets grant` signs it again.)
pub(super) fn sign_grants(
    conn: &rusqlite::Connection,
    key: &crate::crypto::MasterKey,
) -> Result<()> {
    let rows: Vec<(i64, i64, String, String)> = conn
        .prepare(
            "SELECT g.secret_id, g.agent_id, s.name, a.name FROM secret_grants g
             JOIN secrets s ON s.id = g.secret_id JOIN agents a ON a.id = g.agent_id",
        )?
        .query_map([], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let recorded = recorded_grants(conn)?;
    for (secret_id, agent_id, secret, agent) in rows {
        if !recorded.contains(&(secret.clone(), agent.clone())) {
            tracing::warn!(
                secret = %secret,
                agent = %agent,
                "a grant the audit log does not record was not signed; it grants nothing (`palisade secrets grant` makes it again)"
            );
            continue;
        }
        conn.execute(
            "UPDATE secret_grants SET mac = ?1 WHERE secret_id = ?2 AND agent_id = ?3",
            (grant_mac(key, &secret, &agent), secret_id, agent_id),
        )?;
    }
    Ok(())
}

/// Granted agents of every secret, keyed by secret id, each list sorted by name: only
/// grants signed with `key` (see [`grant_mac`]); one that is not is left out and logged.
pub(super) fn grants_by_secret(
    tx: &Transaction<'_>,
    key: &crate::crypto::MasterKey,
) -> Result<HashMap<i64, Vec<AgentName>>> {
    let mut stmt = tx.prepare(
        "SELECT g.secret_id, s.name, a.name, g.mac FROM secret_grants g
         JOIN agents a ON a.id = g.agent_id JOIN secrets s ON s.id = g.secret_id
         ORDER BY a.name",
    )?;
    let rows = stmt
        .query_map([], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, Option<String>>(3)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut grants: HashMap<i64, Vec<AgentName>> = HashMap::new();
    for (secret_id, secret, name, mac) in rows {
        if mac.as_deref() != Some(grant_mac(key, &secret, &name).as_str()) {
            palisade_policy::budgeted!(
                error,
                secret = %secret,
                agent = %name,
                "a grant in the database does not carry this home's signature (written outside palisade?); it grants nothing. `palisade secrets grant` makes a new one"
            );
            continue;
        }
        grants
            .entry(secret_id)
            .or_default()
            .push(parse_agent_name(&name)?);
    }
    Ok(grants)
}

fn secret_id(tx: &Transaction<'_>, name: &str) -> Result<i64> {
    tx.query_row("SELECT id FROM secrets WHERE name = ?1", [name], |row| {
        row.get(0)
    })
    .optional()?
    .ok_or_else(|| StoreError::NotFound {
        what: "secret",
        name: name.to_string(),
    })
}

fn get_secret_in(tx: &Transaction<'_>, name: &str) -> Result<SecretRecord> {
    let mut record = tx
        .query_row(
            &format!("SELECT {SECRET_COLUMNS} FROM secrets WHERE name = ?1"),
            [name],
            record_from_row,
        )
        .optional()?
        .ok_or_else(|| StoreError::NotFound {
            what: "secret",
            name: name.to_string(),
        })?;
    let mut stmt = tx.prepare(
        "SELECT a.name FROM secret_grants g JOIN agents a ON a.id = g.agent_id
         WHERE g.secret_id = ?1 ORDER BY a.name",
    )?;
    let names = stmt
        .query_map([record.id], |row| row.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    record.agents = names
        .iter()
        .map(|n| parse_agent_name(n))
        .collect::<Result<_>>()?;
    Ok(record)
}

/// What a secret's sealed value is bound to (its AES-GCM associated data): its name and
/// where and how it is sent (host pattern, path pattern, injection, sensitivity). The
/// secrets table is not otherwise signed: with only the name bound, someone who could
/// write the database but not read the master key changed a secret's host in place and
/// the gateway sent the credential there (review, audit round ten). Changed so, the
/// value no longer opens, and the secret is left out of the policy (logged).
pub(crate) fn destination(
    name: &str,
    host: &str,
    path: Option<&str>,
    injection: &str,
    sensitive: bool,
) -> String {
    format!(
        "secret-for:{}",
        serde_json::json!([name, host, path, injection, sensitive])
    )
}

/// A secret's row as stored: what its value is sealed for, the sealed value, and its
/// priority (for the gateway's policy, the migration and rotation alike).
pub(super) struct SealedSecret {
    pub id: i64,
    pub name: String,
    pub host: String,
    pub path: Option<String>,
    pub injection: String,
    pub sensitive: bool,
    pub priority: i64,
    pub sealed: String,
}

const SEALED_COLUMNS: &str =
    "id, name, host_pattern, path_pattern, injection, sensitive, priority, sealed";

impl SealedSecret {
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<SealedSecret> {
        Ok(SealedSecret {
            id: row.get(0)?,
            name: row.get(1)?,
            host: row.get(2)?,
            path: row.get(3)?,
            injection: row.get(4)?,
            sensitive: row.get(5)?,
            priority: row.get(6)?,
            sealed: row.get(7)?,
        })
    }

    /// Every secret's row by id (at most `limit`).
    pub fn read(conn: &rusqlite::Connection, limit: i64) -> Result<Vec<SealedSecret>> {
        let rows = conn
            .prepare(&format!(
                "SELECT {SEALED_COLUMNS} FROM secrets ORDER BY id LIMIT ?1"
            ))?
            .query_map([limit], Self::from_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// The row of secret `id`.
    fn by_id(conn: &rusqlite::Connection, id: i64) -> Result<SealedSecret> {
        Ok(conn.query_row(
            &format!("SELECT {SEALED_COLUMNS} FROM secrets WHERE id = ?1"),
            [id],
            Self::from_row,
        )?)
    }

    /// Whether its host, path, injection and sensitivity are those its latest
    /// `secret.create` audit row recorded (read from the table itself).
    fn destination_recorded(&self, conn: &rusqlite::Connection) -> Result<bool> {
        let recorded: Option<(Option<String>, Option<String>, Option<String>)> = conn
            .query_row(
                "SELECT host, path, detail FROM audit NOT INDEXED
                 WHERE event = 'secret.create' AND secret = ?1 ORDER BY id DESC LIMIT 1",
                [&self.name],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()?;
        let Some((host, path, detail)) = recorded else {
            return Ok(false);
        };
        let detail: serde_json::Value = detail
            .and_then(|d| serde_json::from_str(&d).ok())
            .unwrap_or_default();
        Ok(host.as_deref() == Some(self.host.as_str())
            && path == self.path
            && detail["injection"].as_str() == Some(self.injection.as_str())
            && detail["sensitive"].as_bool().unwrap_or(false) == self.sensitive)
    }

    /// What its value is sealed for (see [`destination`]).
    pub fn destination(&self) -> String {
        destination(
            &self.name,
            &self.host,
            self.path.as_deref(),
            &self.injection,
            self.sensitive,
        )
    }
}

/// Seals every secret sealed for its name alone (before schema version
/// [`crate::migrations::SEALED_DESTINATIONS`]) for its destination; run once, by the
/// open that migrates to that version. A value that does not open with its name is left
/// as it is (and will not be injected).
pub(super) fn bind_destinations(
    conn: &rusqlite::Connection,
    key: &crate::crypto::MasterKey,
) -> Result<()> {
    for secret in SealedSecret::read(conn, i64::MAX)? {
        // A name palisade never gives a secret (`agent-token:NAME`, the context of
        // another kind of sealed value) is not opened as one (review, audit round 11:
        // a row so named carried an agent's sealed token into a secret).
        // Nor one named as the admin key's or the key check's context, which secrets
        // sealed for their name alone shared.
        const OTHER_CONTEXTS: [&str; 2] = ["admin-key", "master_key_check"];
        if validate_name("secret", &secret.name).is_err()
            || OTHER_CONTEXTS.contains(&secret.name.as_str())
        {
            continue;
        }
        let Ok(value) = key.open(&secret.name, &secret.sealed) else {
            continue;
        };
        // Only for the destination the log recorded at its creation: the schema version
        // is the database's own, and a value sealed for its name alone (an older copy)
        // put back under another host, with the version set back, would otherwise be
        // sealed for that host.
        if !secret.destination_recorded(conn)? {
            tracing::warn!(
                secret = %secret.name,
                "a secret whose host, path or injection is not the one its creation recorded was not sealed again; it is not injected until it is created again"
            );
            continue;
        }
        let bound = key.seal(&secret.destination(), &value)?;
        conn.execute(
            "UPDATE secrets SET sealed = ?1 WHERE id = ?2",
            (&bound, secret.id),
        )?;
    }
    Ok(())
}

impl Store {
    pub fn create_secret(&self, secret: NewSecret) -> Result<SecretRecord> {
        validate_name("secret", &secret.name)?;
        crate::input::check_sendable(&secret.value)?;
        let injection = secret.injection.to_string();
        let path = secret.path.as_ref().map(|p| p.as_str().to_string());
        // Sealing needs no database state, so do it before taking the write lock.
        let sealed = self.key().seal(
            &destination(
                &secret.name,
                secret.host.as_str(),
                path.as_deref(),
                &injection,
                secret.sensitive,
            ),
            &secret.value,
        )?;
        self.write(|tx| {
            let exists: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM secrets WHERE name = ?1)",
                [&secret.name],
                |row| row.get(0),
            )?;
            if exists {
                return Err(StoreError::Duplicate {
                    what: "secret",
                    name: secret.name.clone(),
                });
            }
            let agent_ids = secret
                .agents
                .iter()
                .map(|agent| {
                    check_compartment(
                        tx,
                        &secret.name,
                        secret.sensitive,
                        secret.host.spans_owners(),
                        agent,
                    )?;
                    agent_id(tx, agent)
                })
                .collect::<Result<Vec<_>>>()?;
            tx.execute(
                "INSERT INTO secrets (name, host_pattern, path_pattern, injection, sealed, priority, created_at_ms, sensitive)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                (
                    &secret.name,
                    secret.host.as_str(),
                    &path,
                    &injection,
                    &sealed,
                    secret.priority,
                    crate::now_ms(),
                    secret.sensitive,
                ),
            )?;
            let id = tx.last_insert_rowid();
            for (agent, agent_row) in secret.agents.iter().zip(agent_ids) {
                tx.execute(
                    "INSERT OR IGNORE INTO secret_grants (secret_id, agent_id, mac) VALUES (?1, ?2, ?3)",
                    (id, agent_row, grant_mac(self.key(), &secret.name, agent.as_str())),
                )?;
            }
            let mut entry = self.audit_entry("secret.create");
            entry.secret = Some(secret.name.clone());
            entry.host = Some(secret.host.as_str().to_string());
            entry.path = path.clone();
            entry.decision = Some("created".into());
            entry.detail = Some(serde_json::json!({
                "injection": injection,
                "agents": secret.agents.iter().map(AgentName::as_str).collect::<Vec<_>>(),
                "priority": secret.priority,
                "sensitive": secret.sensitive,
            }));
            self.append_in(tx, &entry)?;
            get_secret_in(tx, &secret.name)
        })
    }

    /// Whether [`Store::create_secret`] would accept `secret` as far as the store is
    /// concerned (its name unused, its agents existing), checked before anyone is asked
    /// for the value, so nobody types a credential only to be told of a typo.
    pub fn check_new_secret(&self, secret: &CheckedSecret) -> Result<()> {
        self.read(|tx| {
            for agent in &secret.agents {
                agent_id(tx, agent)?;
                check_compartment(
                    tx,
                    &secret.name,
                    secret.sensitive,
                    secret.host.spans_owners(),
                    agent,
                )?;
            }
            match secret_id(tx, &secret.name) {
                Ok(_) => Err(StoreError::Duplicate {
                    what: "secret",
                    name: secret.name.clone(),
                }),
                Err(StoreError::NotFound { .. }) => Ok(()),
                Err(error) => Err(error),
            }
        })
    }

    /// Replaces a secret's value (a new key from the provider); everything else stays.
    /// In force in every running gateway when this returns.
    pub fn rotate_secret(&self, name: &str, value: &SecretValue) -> Result<SecretRecord> {
        crate::input::check_sendable(value)?;
        self.write(|tx| {
            let id = secret_id(tx, name)?;
            let sealed = self
                .key()
                .seal(&SealedSecret::by_id(tx, id)?.destination(), value)?;
            tx.execute(
                "UPDATE secrets SET sealed = ?1 WHERE id = ?2",
                (&sealed, id),
            )?;
            let mut entry = self.audit_entry("secret.rotate");
            entry.secret = Some(name.to_string());
            entry.decision = Some("rotated".into());
            self.append_in(tx, &entry)?;
            get_secret_in(tx, name)
        })
    }

    pub fn list_secrets(&self) -> Result<Vec<SecretRecord>> {
        self.read(|tx| {
            let mut stmt = tx.prepare(&format!(
                "SELECT {SECRET_COLUMNS} FROM secrets ORDER BY name"
            ))?;
            let mut records = stmt
                .query_map([], record_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut grants = grants_by_secret(tx, self.key())?;
            for record in &mut records {
                record.agents = grants.remove(&record.id).unwrap_or_default();
            }
            Ok(records)
        })
    }

    pub fn get_secret(&self, name: &str) -> Result<SecretRecord> {
        self.read(|tx| get_secret_in(tx, name))
    }

    pub fn delete_secret(&self, name: &str) -> Result<()> {
        self.write(|tx| {
            let id = secret_id(tx, name)?;
            tx.execute("DELETE FROM secrets WHERE id = ?1", [id])?;
            let mut entry = self.audit_entry("secret.delete");
            entry.secret = Some(name.to_string());
            entry.decision = Some("deleted".into());
            self.append_in(tx, &entry)?;
            Ok(())
        })
    }

    /// Granting an already granted agent succeeds and changes nothing.
    pub fn grant_secret(&self, name: &str, agent: &AgentName) -> Result<()> {
        self.write(|tx| {
            let secret = secret_id(tx, name)?;
            let (sensitive, host): (bool, String) = tx.query_row(
                "SELECT sensitive, host_pattern FROM secrets WHERE id = ?1",
                [secret],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )?;
            let wide =
                palisade_policy::HostPattern::parse(&host).map_or(true, |h| h.spans_owners());
            check_compartment(tx, name, sensitive, wide, agent)?;
            let agent_row = agent_id(tx, agent)?;
            let added = tx.execute(
                "INSERT OR IGNORE INTO secret_grants (secret_id, agent_id, mac) VALUES (?1, ?2, ?3)",
                (secret, agent_row, grant_mac(self.key(), name, agent.as_str())),
            )?;
            if added > 0 {
                let mut entry = self.audit_entry("secret.grant");
                entry.secret = Some(name.to_string());
                entry.agent = Some(agent.to_string());
                entry.decision = Some("granted".into());
                self.append_in(tx, &entry)?;
            }
            Ok(())
        })
    }

    pub fn revoke_secret(&self, name: &str, agent: &AgentName) -> Result<()> {
        self.write(|tx| {
            let secret = secret_id(tx, name)?;
            let agent_row = agent_id(tx, agent)?;
            let removed = tx.execute(
                "DELETE FROM secret_grants WHERE secret_id = ?1 AND agent_id = ?2",
                (secret, agent_row),
            )?;
            if removed == 0 {
                return Err(StoreError::NotFound {
                    what: "grant",
                    name: format!("secret {name} -> agent {agent}"),
                });
            }
            let mut entry = self.audit_entry("secret.revoke");
            entry.secret = Some(name.to_string());
            entry.agent = Some(agent.to_string());
            entry.decision = Some("revoked".into());
            self.append_in(tx, &entry)?;
            Ok(())
        })
    }
}
