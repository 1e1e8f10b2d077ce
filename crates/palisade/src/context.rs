//! What every command gets: the resolved home and output preferences.

use palisade_store::{Home, Store};
use std::path::Path;

pub struct Context {
    pub home: Home,
    /// Print machine-readable JSON instead of tables.
    pub json: bool,
}

impl Context {
    pub fn new(home: Option<&Path>, json: bool) -> anyhow::Result<Self> {
        Ok(Context {
            home: Home::resolve(home)?,
            json,
        })
    }
    /// Opens (creating on first use) the home and its database. Changes made through
    /// the handle are audited as made by the person running the CLI (`cli:NAME`).
    pub fn open_store(&self) -> anyhow::Result<Store> {
        let store = Store::open(&self.home)?;
        Ok(store.with_actor(&format!("cli:{}", crate::input::local_user())))
    }
}
