//! The layout of `$PALISADE_HOME` (default `~/.palisade`).
//!
//! ```text
//! palisade.db            SQLite database (WAL)
//! master.key             32 random bytes, base64, mode 0600 (unless PALISADE_MASTER_KEY is set)
//! ca/ca.pem ca/ca.key    the vault's CA (key mode 0600)
//! run/                   runtime files: vault.json (running gateway), agents/<name>.sock
//! agents/<name>/         per-agent folder; agents/<name>/workspace is the sandbox's workspace
//! logs/                  log files of detached services
//! ```
//! Directories are created mode 0700.

use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// `explicit` (from `--home`), else `$PALISADE_HOME`, else `~/.palisade`.
    pub fn resolve(explicit: Option<&Path>) -> crate::Result<Self> {
        todo!("{explicit:?}")
    }
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Home { root: root.into() }
    }
    /// Creates the root and standard subdirectories (0700) if missing.
    pub fn ensure(&self) -> crate::Result<()> {
        todo!()
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn database(&self) -> PathBuf {
        self.root.join("palisade.db")
    }
    pub fn master_key(&self) -> PathBuf {
        self.root.join("master.key")
    }
    pub fn ca_dir(&self) -> PathBuf {
        self.root.join("ca")
    }
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }
    /// Default directory of per-agent vault sockets.
    pub fn agent_socket_dir(&self) -> PathBuf {
        self.run_dir().join("agents")
    }
    pub fn agent_dir(&self, agent: &str) -> PathBuf {
        self.root.join("agents").join(agent)
    }
    pub fn agent_workspace(&self, agent: &str) -> PathBuf {
        self.agent_dir(agent).join("workspace")
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }
}
