//! The model lists the agent pages show, remembered for a while so a page view does
//! not ask the provider (through the vault, an audited request each time) again and
//! again. Bounded: at most [`MAX_ENTRIES`] lists; expired ones go first.

use palisade_policy::models::ListedModel;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

const MAX_ENTRIES: usize = 256;

type Entry = (Instant, Result<Vec<ListedModel>, String>);

#[derive(Default)]
pub(crate) struct ModelLists(Mutex<HashMap<String, Entry>>);

impl ModelLists {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The list for `key` while it is fresh.
    pub(crate) fn get(&self, key: &str) -> Option<Result<Vec<ListedModel>, String>> {
        let entries = self.lock();
        let (until, list) = entries.get(key)?;
        (Instant::now() < *until).then(|| list.clone())
    }

    pub(crate) fn put(&self, key: String, list: Result<Vec<ListedModel>, String>, until: Instant) {
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            let now = Instant::now();
            entries.retain(|_, (until, _)| *until > now);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (until, list));
    }

    /// Forgets every list (a key's value changed, which may be any agent's).
    pub(crate) fn forget_all(&self) {
        self.lock().clear();
    }

    /// Forgets every list of `agent` (its key or settings changed, or it was deleted).
    pub(crate) fn forget_agent(&self, agent: &str) {
        let prefix = format!("{agent}\n");
        self.lock().retain(|key, _| !key.starts_with(&prefix));
    }
}
