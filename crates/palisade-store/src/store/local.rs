//! Local addresses agents may reach through the vault (a model server on this machine
//! or the LAN), remembered in the home. `palisade vault local allow`, the web UI's
//! first-run card and `palisade up --allow-local-upstream` write them; every gateway of
//! the home allows them from its next reload, which the change pushes at once, so a
//! restart no longer drops what a working setup needed.
//!
//! The list is signed with a key derived from the master key: someone who can write
//! the database but not read the key cannot add to it (that would open this host's and
//! the LAN's services to agents). A list without a valid signature allows nothing and
//! is reported. (An older signed list put back by such a writer is not told apart;
//! `docs/vault.md` says so.)

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
    mac: String,
}

fn mac(key: &MasterKey, patterns: &[String]) -> String {
    let text = serde_json::to_string(patterns).unwrap_or_default();
    hex::encode(key.mac(PURPOSE, text.as_bytes()))
}

fn read(tx: &rusqlite::Transaction<'_>, key: &MasterKey) -> Result<LocalUpstreams> {
    let Some(text) = super::read_setting(tx, SETTING)? else {
        return Ok(LocalUpstreams::default());
    };
    match serde_json::from_str::<Stored>(&text) {
        Ok(stored) if stored.mac == mac(key, &stored.patterns) => Ok(LocalUpstreams {
            patterns: stored.patterns,
            unsigned: false,
        }),
        _ => Ok(LocalUpstreams {
            patterns: Vec::new(),
            unsigned: true,
        }),
    }
}

impl Store {
    /// The remembered local addresses agents may reach.
    pub fn local_upstreams(&self) -> Result<LocalUpstreams> {
        self.read(|tx| read(tx, self.key()))
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
            let mut patterns = read(tx, self.key())?.patterns;
            if !change(&mut patterns)? {
                return Ok(false);
            }
            let mut entry = self.audit_entry(event);
            entry.host = Some(pattern.to_string());
            self.append_in(tx, &entry)?;
            let stored = Stored {
                mac: mac(self.key(), &patterns),
                patterns,
            };
            let text = serde_json::to_string(&stored)
                .map_err(|e| StoreError::Invalid(format!("cannot encode the list: {e}")))?;
            super::write_setting(tx, SETTING, &text)?;
            Ok(true)
        })
    }
}
