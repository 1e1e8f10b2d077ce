//! Host folders an agent's sandbox may mount, each under `/mnt/NAME`. A folder marked
//! sensitive holds data worth stealing, so research agents (which read the internet)
//! may not mount it, nor a folder around it (which shows its files) or inside it (which
//! shows part of them): refused when a mount, a mark, a new folder or a profile change
//! would break that, and again by the host when it starts a sandbox.
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

fn research_refusal(folder: &str, sensitive: &str, agent: &AgentName) -> StoreError {
    let what = if folder == sensitive {
        format!("folder {folder} is sensitive")
    } else {
        format!("folder {folder} holds or lies in the sensitive folder {sensitive}")
    };
    StoreError::Invalid(format!(
        "{what} and agent {agent} has the research profile: research agents read the internet and may not mount sensitive folders; mount it for an action agent, or make {agent} one with `palisade agents edit {agent} --profile action`"
    ))
}

/// The sensitive folder `agent_id` mounts, if any (first by name).
/// Whether one of two canonical paths lies within the other (or they are the same).
fn nested(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// The (name, path) rows `sql` selects.
fn names_and_paths(
    tx: &Transaction<'_>,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<(String, String)>> {
    let mut stmt = tx.prepare(sql)?;
    let rows = stmt
        .query_map(params, |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// The sensitive folder that `path` is, lies in or holds, if any.
fn sensitive_overlap(tx: &Transaction<'_>, path: &Path) -> Result<Option<String>> {
    let sensitive = names_and_paths(
        tx,
        "SELECT name, path FROM folders WHERE sensitive = 1 ORDER BY name",
        [],
    )?;
    Ok(sensitive
        .into_iter()
        .find(|(_, sensitive)| nested(path, Path::new(sensitive)))
        .map(|(name, _)| name))
}

/// (folder, research agent) for a research agent's mount of a folder that `path` is,
/// lies in or holds, if any.
fn research_mount_around(tx: &Transaction<'_>, path: &Path) -> Result<Option<(String, String)>> {
    let mut stmt = tx.prepare(
        "SELECT f.name, f.path, a.name FROM agent_folders m
         JOIN folders f ON f.id = m.folder_id JOIN agents a ON a.id = m.agent_id
         WHERE a.profile = ?1 ORDER BY f.name, a.name",
    )?;
    let rows = stmt
        .query_map([Profile::Research.as_str()], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows
        .into_iter()
        .find(|(_, mounted, _)| nested(path, Path::new(mounted)))
        .map(|(folder, _, agent)| (folder, agent)))
}

/// Why a mount of `agent_id` would carry text between compartments, if one would: a
/// folder it mounts is, lies in or holds a folder an agent of the other profile mounts,
/// and either of them may write there. What an action agent writes there a research
/// agent would read past the approval every action → research message waits for, and
/// what a research agent writes there an action agent would read past the sanitizer;
/// read-only for both, the folder is the person's, shown to both.
pub(super) fn compartment_share(tx: &Transaction<'_>, agent_id: i64) -> Result<Option<String>> {
    let mut stmt = tx.prepare(
        "SELECT a.id, a.name, a.profile, f.name, f.path, m.writable FROM agent_folders m
         JOIN folders f ON f.id = m.folder_id JOIN agents a ON a.id = m.agent_id
         ORDER BY a.name, f.name",
    )?;
    let mounts = stmt
        .query_map([], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, String>(4)?,
                row.get::<_, bool>(5)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (_, name, profile, folder, path, writable) in mounts.iter().filter(|m| m.0 == agent_id) {
        for (_, other, other_profile, other_folder, other_path, other_writable) in
            mounts.iter().filter(|m| m.0 != agent_id && m.2 != *profile)
        {
            if !(*writable || *other_writable) || !nested(Path::new(path), Path::new(other_path)) {
                continue;
            }
            let (writer, writer_folder) = if *writable {
                (name, folder)
            } else {
                (other, other_folder)
            };
            let shared = if folder == other_folder {
                format!("folder {folder}")
            } else {
                format!("folder {folder} (which overlaps folder {other_folder})")
            };
            return Ok(Some(format!(
                "agent {name} ({profile}) and agent {other} ({other_profile}) would share {shared}, and {writer} may write to {writer_folder}: what one writes there the other would read past the approval and the sanitizer that messages between research and action agents go through; mount it read-only for both (`palisade folders mount {writer_folder} --agent {writer}` without --writable) or for one of them only"
            )));
        }
    }
    Ok(None)
}

/// A folder `agent_id` mounts that is, lies in or holds a sensitive folder, if any.
pub(super) fn sensitive_mount(tx: &Transaction<'_>, agent_id: i64) -> Result<Option<String>> {
    let mounted = names_and_paths(
        tx,
        "SELECT f.name, f.path FROM agent_folders m JOIN folders f ON f.id = m.folder_id
         WHERE m.agent_id = ?1 ORDER BY f.name",
        [agent_id],
    )?;
    for (name, path) in mounted {
        if sensitive_overlap(tx, Path::new(&path))?.is_some() {
            return Ok(Some(name));
        }
    }
    Ok(None)
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
            if sensitive {
                if let Some((folder, agent)) = research_mount_around(tx, path)? {
                    return Err(StoreError::Invalid(format!(
                        "research agent {agent} mounts folder {folder}, which holds or lies in {path_text}, and research agents may not see sensitive folders: unmount it first (`palisade folders unmount {folder} --agent {agent}`)"
                    )));
                }
            }
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
                let path: String =
                    tx.query_row("SELECT path FROM folders WHERE id = ?1", [id], |row| {
                        row.get(0)
                    })?;
                if let Some((folder, agent)) = research_mount_around(tx, Path::new(&path))? {
                    let which = if folder == name {
                        format!("folder {name}")
                    } else {
                        format!("folder {folder}, which holds or lies in {name},")
                    };
                    return Err(StoreError::Invalid(format!(
                        "research agent {agent} mounts {which} and research agents may not mount sensitive folders: unmount it first (`palisade folders unmount {folder} --agent {agent}`)"
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
            let (folder, _) = folder_id(tx, name)?;
            let agent_row = agent_id(tx, agent)?;
            let profile: String = tx.query_row(
                "SELECT profile FROM agents WHERE id = ?1",
                [agent_row],
                |row| row.get(0),
            )?;
            if profile == Profile::Research.as_str() {
                let path: String =
                    tx.query_row("SELECT path FROM folders WHERE id = ?1", [folder], |row| {
                        row.get(0)
                    })?;
                if let Some(sensitive) = sensitive_overlap(tx, Path::new(&path))? {
                    return Err(research_refusal(name, &sensitive, agent));
                }
            }
            tx.execute(
                "INSERT INTO agent_folders (agent_id, folder_id, writable) VALUES (?1, ?2, ?3)
                 ON CONFLICT(agent_id, folder_id) DO UPDATE SET writable = excluded.writable",
                (agent_row, folder, writable),
            )?;
            // Checked with the mount in place; refused, the transaction is not committed.
            if let Some(problem) = compartment_share(tx, agent_row)? {
                return Err(StoreError::Invalid(problem));
            }
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

    /// The sensitive folder that folder `name` is, lies in or holds, if any.
    pub fn folder_sensitive_overlap(&self, name: &str) -> Result<Option<String>> {
        self.read(|tx| {
            let folder = record(tx, name)?;
            sensitive_overlap(tx, &folder.path)
        })
    }

    /// The sensitive folder `path` (canonical) is, lies in or holds, if any: what a
    /// research agent may never mount, by a folder's name or by its path.
    pub fn sensitive_folder_around(&self, path: &Path) -> Result<Option<String>> {
        self.read(|tx| sensitive_overlap(tx, path))
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
