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
    /// Opens (creating on first use) the home and its database.
    pub fn open_store(&self) -> anyhow::Result<Store> {
        Ok(Store::open(&self.home)?)
    }
}
