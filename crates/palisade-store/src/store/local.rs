//! Local addresses agents may reach through the vault (a model server on this machine
//! or the LAN), remembered in the home. `palisade vault local allow`, the web UI's
//! first-run card and `palisade up --allow-local-upstream` write them; every gateway of
//! the home allows them from its next reload, which the change pushes at once, so a
//! restart no longer drops what a working setup needed.
//!
//! The list is signed with a key derived from the master key, together with the id of
//! the audit row that recorded its last change: someone who can write the database but
//! not read the key cannot add to it (that would open this host's and the LAN's
//! services to agents), nor put an older signed list back, whose row is not the log's
//! latest `local_upstream.*` row (a pruning that would remove that row writes it again
//! first, `local_upstream.carry`). A list that fails either check allows nothing and is
//! reported.

use super::Store;
use crate::crypto::MasterKey;
use crate::{Result, StoreError};
use palisade_policy::HostPattern;

const SETTING: &str = "local_upstreams";
const PURPOSE: &str = "palisade local upstreams v1";
/// Most patterns remembered (each is checked on every connection to a local address).
const MAX_PATTERNS: usize = 64;

/// The remembered local addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalUpstreams {
    /// As written (`127.0.0.1:8080`, `localhost`, `*.lan`).
    pub patterns: Vec<String>,
    /// A list was stored without this home's signature: it allows nothing.
    pub unsigned: bool,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    patterns: Vec<String>,
    /// The audit row that recorded the last change.
    row: i64,
    mac: String,
}

/// The events of rows that change the list.
const EVENTS: &str = "'local_upstream.allow', 'local_upstream.forget', 'local_upstream.carry'";

fn mac(key: &MasterKey, patterns: &[String], row: i64) -> String {
    let text = format!(
        "{}:{row}",
        serde_json::to_string(patterns).unwrap_or_default()
    );
    hex::encode(key.mac(PURPOSE, text.as_bytes()))
}

/// The list as stored, if its signature holds (whether a later change row exists is
/// [`later_change`]'s to say).
fn signed(tx: &rusqlite::Transaction<'_>, key: &MasterKey) -> Result<Option<Option<Stored>>> {
    let Some(text) = super::read_setting(tx, SETTING)? else {
        return Ok(Some(None));
    };
    Ok(match serde_json::from_str::<Stored>(&text) {
        Ok(stored) if stored.mac == mac(key, &stored.patterns, stored.row) => Some(Some(stored)),
        _ => None,
    })
}

/// Whether the log has a row changing the list after `row` ([`changed_between`]). Only
/// the rows after what this process last scanned for the same `row` are read again.
fn later_change(
    tx: &rusqlite::Transaction<'_>,
    row: i64,
    scanned: &std::sync::Mutex<(i64, i64)>,
) -> Result<bool> {
    let mut scanned = scanned.lock().unwrap_or_else(|p| p.into_inner());
    let from = match *scanned {
        (checked, upto) if checked == row => upto.max(row),
        _ => row,
    };
    let end: i64 = tx.query_row("SELECT coalesce(max(id), 0) FROM audit", [], |r| r.get(0))?;
    let later = changed_between(tx, from, end)?;
    if !later {
        *scanned = (row, end);
    }
    Ok(later)
}

/// Whether a row changing the list lies after `from` and up to `to`, read from the
/// table itself (`NOT INDEXED`, as verify reads: an index can be made to hide a row).
fn changed_between(tx: &rusqlite::Transaction<'_>, from: i64, to: i64) -> Result<bool> {
    Ok(tx.query_row(
        &format!(
            "SELECT EXISTS (SELECT 1 FROM audit NOT INDEXED WHERE id > ?1 AND id <= ?2 AND event IN ({EVENTS}))"
        ),
        [from, to],
        |r| r.get(0),
    )?)
}

fn read(
    tx: &rusqlite::Transaction<'_>,
    key: &MasterKey,
    scanned: &std::sync::Mutex<(i64, i64)>,
) -> Result<LocalUpstreams> {
    let unsigned = LocalUpstreams {
        patterns: Vec::new(),
        unsigned: true,
    };
    match signed(tx, key)? {
        Some(None) => Ok(LocalUpstreams::default()),
        Some(Some(stored)) if !later_change(tx, stored.row, scanned)? => Ok(LocalUpstreams {
            patterns: stored.patterns,
            unsigned: false,
        }),
        _ => Ok(unsigned),
    }
}

/// Writes `patterns` as the list, signed for `row`.
fn store(
    tx: &rusqlite::Transaction<'_>,
    key: &MasterKey,
    patterns: Vec<String>,
    row: i64,
) -> Result<()> {
    let stored = Stored {
        mac: mac(key, &patterns, row),
        patterns,
        row,
    };
    let text = serde_json::to_string(&stored)
        .map_err(|e| StoreError::Invalid(format!("cannot encode the list: {e}")))?;
    super::write_setting(tx, SETTING, &text)
}

/// For a pruning that removes the rows before `keep_from`: a list whose row would go is
/// recorded again (`local_upstream.carry`) and signed for the new row, so the latest
/// change is always in the log and an older signed list put back is always
/// contradicted by a later row. `append` writes a row (raising the configuration
/// version, so gateways reload) and gives its id.
pub(super) fn carry_over_pruning(
    tx: &rusqlite::Transaction<'_>,
    key: &MasterKey,
    keep_from: i64,
    append: impl FnOnce(&crate::AuditEntry) -> Result<i64>,
) -> Result<()> {
    let Some(Some(stored)) = signed(tx, key)? else {
        return Ok(());
    };
    if stored.row >= keep_from {
        return Ok(());
    }
    // Only the list in force is carried: an older signed one put back (its row is not
    // the latest change) would otherwise be signed anew for the carry row, and the
    // address a person forgot allowed again. Then nothing is carried but the fact:
    // an empty list, which allows nothing.
    let later = changed_between(tx, stored.row, i64::MAX)?;
    let patterns = match later {
        false => stored.patterns,
        true => Vec::new(),
    };
    let entry = crate::AuditEntry {
        event: "local_upstream.carry".into(),
        detail: Some(serde_json::json!({
            "patterns": patterns,
            "carried_from": stored.row,
            "put_back": later,
        })),
        ..crate::AuditEntry::default()
    };
    let row = append(&entry)?;
    store(tx, key, patterns, row)
}

impl Store {
    /// The remembered local addresses agents may reach.
    pub fn local_upstreams(&self) -> Result<LocalUpstreams> {
        self.read(|tx| read(tx, self.key(), &self.inner.local_scanned))
    }

    /// Remembers `pattern` (checked as `--allow-local-upstream` checks it), recorded as
    /// a `local_upstream.allow` row; `false` when it was remembered already.
    pub fn allow_local_upstream(&self, pattern: &str) -> Result<bool> {
        let pattern = HostPattern::parse_local_allowance(pattern.trim())
            .map_err(|why| {
                StoreError::Input(format!(
                    "{:?} cannot be allowed: {why}",
                    crate::input::clean(pattern)
                ))
            })?
            .as_str()
            .to_string();
        self.change_local_upstreams("local_upstream.allow", &pattern, |patterns| {
            if patterns.contains(&pattern) {
                return Ok(false);
            }
            if patterns.len() >= MAX_PATTERNS {
                return Err(StoreError::Input(format!(
                    "{MAX_PATTERNS} local addresses are allowed already; forget one first (`palisade vault local forget PATTERN`)"
                )));
            }
            patterns.push(pattern.clone());
            Ok(true)
        })
    }

    /// Forgets `pattern`, recorded as a `local_upstream.forget` row; `false` when it was
    /// not remembered.
    pub fn forget_local_upstream(&self, pattern: &str) -> Result<bool> {
        let pattern = pattern.trim().to_string();
        self.change_local_upstreams("local_upstream.forget", &pattern, |patterns| {
            let before = patterns.len();
            patterns.retain(|kept| !kept.eq_ignore_ascii_case(&pattern));
            Ok(patterns.len() != before)
        })
    }

    /// Applies `change` to the list (an unsigned one counts as empty, and is replaced)
    /// and, if it changed anything, signs and stores it with an `event` row.
    fn change_local_upstreams(
        &self,
        event: &str,
        pattern: &str,
        change: impl FnOnce(&mut Vec<String>) -> Result<bool>,
    ) -> Result<bool> {
        self.write(|tx| {
            let mut patterns = read(tx, self.key(), &self.inner.local_scanned)?.patterns;
            if !change(&mut patterns)? {
                return Ok(false);
            }
            let mut entry = self.audit_entry(event);
            entry.host = Some(pattern.to_string());
            let row = self.append_in(tx, &entry)?;
            store(tx, self.key(), patterns, row)?;
            Ok(true)
        })
    }
}
