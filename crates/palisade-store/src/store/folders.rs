//! Host folders an agent's sandbox may mount, each under `/mnt/NAME`. A folder marked
//! sensitive holds data worth stealing, so research agents (which read the internet)
//! may not mount it: refused when a mount, a mark or a profile change would break that,
//! and again by the host when it starts a sandbox.
//!
//! The store keeps the canonical path it was given; checking that a path is fit to be
//! mounted (not the palisade home, not `~/.ssh`, …) belongs to the sandbox crate's
//! mount policy, applied by the callers before they store a folder and again at launch.

use super::agents::{agent_id, parse_agent_name};
use super::Store;
use crate::records::{FolderMount, FolderRecord};
use crate::{Result, StoreError};
use palisade_policy::{AgentName, Profile};
use rusqlite::{OptionalExtension, Transaction};
use std::path::Path;

/// Longest folder name (it becomes a path component inside the sandbox).
const MAX_NAME: usize = 63;

/// Checks a folder name: it is the directory under `/mnt` in every sandbox that mounts it.
pub fn validate_folder_name(name: &str) -> Result<()> {
    let fits = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if fits {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "folder name {name:?} must be 1-{MAX_NAME} lowercase letters, digits, '-' or '_', starting with a letter or digit (it becomes /mnt/NAME in the sandbox)"
        )))
    }
}

fn folder_id(tx: &Transaction<'_>, name: &str) -> Result<(i64, bool)> {
    tx.query_row(
        "SELECT id, sensitive FROM folders WHERE name = ?1",
        [name],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
    .optional()?
    .ok_or_else(|| StoreError::NotFound {
        what: "folder",
        name: name.to_string(),
    })
}

fn research_refusal(folder: &str, agent: &AgentName) -> StoreError {
    StoreError::Invalid(format!(
        "folder {folder} is sensitive and agent {agent} has the research profile: research agents read the internet and may not mount sensitive folders; mount it for an action agent, or make {agent} one with `palisade agents edit {agent} --profile action`"
    ))
}

/// The sensitive folder `agent_id` mounts, if any (first by name).
pub(super) fn sensitive_mount(tx: &Transaction<'_>, agent_id: i64) -> Result<Option<String>> {
    Ok(tx
        .query_row(
            "SELECT f.name FROM agent_folders m JOIN folders f ON f.id = m.folder_id
             WHERE m.agent_id = ?1 AND f.sensitive = 1 ORDER BY f.name LIMIT 1",
            [agent_id],
            |row| row.get(0),
        )
        .optional()?)
}

fn mounts_of(tx: &Transaction<'_>, folder_id: i64) -> Result<Vec<FolderMount>> {
    let mut stmt = tx.prepare(
        "SELECT a.name, m.writable FROM agent_folders m JOIN agents a ON a.id = m.agent_id
         WHERE m.folder_id = ?1 ORDER BY a.name",
    )?;
    let rows = stmt
        .query_map([folder_id], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, bool>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(|(agent, writable)| {
            Ok(FolderMount {
                agent: parse_agent_name(&agent)?,
                writable,
            })
        })
        .collect()
}

fn record(tx: &Transaction<'_>, name: &str) -> Result<FolderRecord> {
    let (id, name, path, sensitive, created_at_ms) = tx
        .query_row(
            "SELECT id, name, path, sensitive, created_at_ms FROM folders WHERE name = ?1",
            [name],
            |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, bool>(3)?,
                    row.get::<_, i64>(4)?,
                ))
            },
        )
        .optional()?
        .ok_or_else(|| StoreError::NotFound {
            what: "folder",
            name: name.to_string(),
        })?;
    Ok(FolderRecord {
        name,
        path: path.into(),
        sensitive,
        mounts: mounts_of(tx, id)?,
        created_at_ms,
    })
}

impl Store {
    /// Records host folder `path` (already canonical and checked by the mount policy)
    /// as `name`.
    pub fn add_folder(&self, name: &str, path: &Path, sensitive: bool) -> Result<FolderRecord> {
        validate_folder_name(name)?;
        let path_text = path.to_str().ok_or_else(|| {
            StoreError::Invalid(format!(
                "folder path {} is not valid UTF-8; rename it or mount a folder above it",
                path.display()
            ))
        })?;
        if !path.is_absolute() {
            return Err(StoreError::Invalid(format!(
                "folder path {path_text} must be absolute"
            )));
        }
        self.write(|tx| {
            let taken: Option<String> = tx
                .query_row(
                    "SELECT name FROM folders WHERE name = ?1 OR path = ?2",
                    (name, path_text),
                    |row| row.get(0),
                )
                .optional()?;
            if let Some(existing) = taken {
                return Err(StoreError::Invalid(if existing == name {
                    format!("a folder named {name} exists; choose another name or remove it with `palisade folders remove {name}`")
                } else {
                    format!("{path_text} is already folder {existing}; mount that one")
                }));
            }
            tx.execute(
                "INSERT INTO folders (name, path, sensitive, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
                (name, path_text, sensitive, crate::now_ms()),
            )?;
            let mut entry = self.audit_entry("folder.add");
            entry.decision = Some("added".into());
            entry.detail = Some(serde_json::json!({
                "folder": name, "path": path_text, "sensitive": sensitive,
            }));
            self.append_in(tx, &entry)?;
            record(tx, name)
        })
    }

    pub fn get_folder(&self, name: &str) -> Result<FolderRecord> {
        self.read(|tx| record(tx, name))
    }

    pub fn list_folders(&self) -> Result<Vec<FolderRecord>> {
        self.read(|tx| {
            let names = {
                let mut stmt = tx.prepare("SELECT name FROM folders ORDER BY name")?;
                let rows = stmt
                    .query_map([], |row| row.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                rows
            };
            names.iter().map(|name| record(tx, name)).collect()
        })
    }

    /// Marks a folder sensitive or not; marking is refused while a research agent
    /// mounts it.
    pub fn set_folder_sensitive(&self, name: &str, sensitive: bool) -> Result<FolderRecord> {
        self.write(|tx| {
            let (id, _) = folder_id(tx, name)?;
            if sensitive {
                let research: Option<String> = tx
                    .query_row(
                        "SELECT a.name FROM agent_folders m JOIN agents a ON a.id = m.agent_id
                         WHERE m.folder_id = ?1 AND a.profile = ?2 ORDER BY a.name LIMIT 1",
                        (id, Profile::Research.as_str()),
                        |row| row.get(0),
                    )
                    .optional()?;
                if let Some(agent) = research {
                    return Err(StoreError::Invalid(format!(
                        "research agent {agent} mounts folder {name}, and research agents may not mount sensitive folders: unmount it first (`palisade folders unmount {name} --agent {agent}`)"
                    )));
                }
            }
            tx.execute(
                "UPDATE folders SET sensitive = ?1 WHERE id = ?2",
                (sensitive, id),
            )?;
            let mut entry = self.audit_entry("folder.update");
            entry.decision = Some("updated".into());
            entry.detail = Some(serde_json::json!({ "folder": name, "sensitive": sensitive }));
            self.append_in(tx, &entry)?;
            record(tx, name)
        })
    }

    /// Forgets a folder and every agent's mount of it (the files stay where they are).
    pub fn remove_folder(&self, name: &str) -> Result<FolderRecord> {
        self.write(|tx| {
            let removed = record(tx, name)?;
            tx.execute("DELETE FROM folders WHERE name = ?1", [name])?;
            let mut entry = self.audit_entry("folder.remove");
            entry.decision = Some("removed".into());
            entry.detail = Some(serde_json::json!({
                "folder": name,
                "unmounted": removed.mounts.iter().map(|m| m.agent.as_str()).collect::<Vec<_>>(),
            }));
            self.append_in(tx, &entry)?;
            Ok(removed)
        })
    }

    /// Lets `agent`'s sandbox mount the folder at `/mnt/NAME` (read-only unless
    /// `writable`); replaces the mode of an existing mount.
    pub fn mount_folder(&self, name: &str, agent: &AgentName, writable: bool) -> Result<()> {
        self.write(|tx| {
            let (folder, sensitive) = folder_id(tx, name)?;
            let agent_row = agent_id(tx, agent)?;
            let profile: String = tx.query_row(
                "SELECT profile FROM agents WHERE id = ?1",
                [agent_row],
                |row| row.get(0),
            )?;
            if sensitive && profile == Profile::Research.as_str() {
                return Err(research_refusal(name, agent));
            }
            tx.execute(
                "INSERT INTO agent_folders (agent_id, folder_id, writable) VALUES (?1, ?2, ?3)
                 ON CONFLICT(agent_id, folder_id) DO UPDATE SET writable = excluded.writable",
                (agent_row, folder, writable),
            )?;
            let mut entry = self.audit_entry("folder.mount");
            entry.agent = Some(agent.to_string());
            entry.decision = Some("mounted".into());
            entry.detail = Some(serde_json::json!({ "folder": name, "writable": writable }));
            self.append_in(tx, &entry)?;
            Ok(())
        })
    }

    pub fn unmount_folder(&self, name: &str, agent: &AgentName) -> Result<()> {
        self.write(|tx| {
            let (folder, _) = folder_id(tx, name)?;
            let agent_row = agent_id(tx, agent)?;
            let removed = tx.execute(
                "DELETE FROM agent_folders WHERE agent_id = ?1 AND folder_id = ?2",
                (agent_row, folder),
            )?;
            if removed == 0 {
                return Err(StoreError::NotFound {
                    what: "mount",
                    name: format!("folder {name} for agent {agent}"),
                });
            }
            let mut entry = self.audit_entry("folder.unmount");
            entry.agent = Some(agent.to_string());
            entry.decision = Some("unmounted".into());
            entry.detail = Some(serde_json::json!({ "folder": name }));
            self.append_in(tx, &entry)?;
            Ok(())
        })
    }

    /// The folders `agent` mounts, by name, with whether each is writable.
    pub fn agent_folders(&self, agent: &AgentName) -> Result<Vec<(FolderRecord, bool)>> {
        self.read(|tx| {
            let agent_row = agent_id(tx, agent)?;
            let rows = {
                let mut stmt = tx.prepare(
                    "SELECT f.name, m.writable FROM agent_folders m JOIN folders f ON f.id = m.folder_id
                     WHERE m.agent_id = ?1 ORDER BY f.name",
                )?;
                let rows = stmt
                    .query_map([agent_row], |row| {
                        Ok((row.get::<_, String>(0)?, row.get::<_, bool>(1)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                rows
            };
            rows.into_iter()
                .map(|(name, writable)| Ok((record(tx, &name)?, writable)))
                .collect()
        })
    }
}
