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
//! Directories are created mode 0700: the home holds the master key, the vault's CA key and
//! the sockets that *are* agents' identities, so nobody else on the machine may list it.

use crate::StoreError;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// `explicit` (from `--home`), else `$PALISADE_HOME`, else `~/.palisade`.
    pub fn resolve(explicit: Option<&Path>) -> crate::Result<Self> {
        Self::resolve_from(
            explicit,
            std::env::var_os("PALISADE_HOME"),
            std::env::var_os("HOME"),
        )
    }

    /// The resolution rule with the environment passed in, so it can be tested without
    /// mutating the process environment (which other threads may be reading).
    fn resolve_from(
        explicit: Option<&Path>,
        palisade_home: Option<std::ffi::OsString>,
        user_home: Option<std::ffi::OsString>,
    ) -> crate::Result<Self> {
        if let Some(path) = explicit {
            if path.as_os_str().is_empty() {
                return Err(StoreError::Invalid(
                    "--home is empty; pass a directory path".into(),
                ));
            }
            return Ok(Home::at(path));
        }
        if let Some(path) = palisade_home.filter(|p| !p.is_empty()) {
            return Ok(Home::at(path));
        }
        if let Some(home) = user_home.filter(|p| !p.is_empty()) {
            return Ok(Home::at(PathBuf::from(home).join(".palisade")));
        }
        Err(StoreError::Io(
            "cannot find a home directory for palisade: neither PALISADE_HOME nor HOME is set; \
             set PALISADE_HOME or pass --home DIR"
                .into(),
        ))
    }
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Home { root: root.into() }
    }
    /// Creates the root and standard subdirectories (0700) if missing.
    pub fn ensure(&self) -> crate::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        // A new home is made only inside a folder that exists: a mistyped `--home
        // /srv/palisde/home` would otherwise make a fresh, empty home there, and its
        // user would think every agent and secret gone.
        if !self.root.exists() {
            if let Some(parent) = self.root.parent().filter(|p| !p.as_os_str().is_empty()) {
                if !parent.is_dir() {
                    return Err(StoreError::Io(format!(
                        "there is no home at {} and no folder {} to make one in; check --home or PALISADE_HOME",
                        self.root.display(),
                        parent.display()
                    )));
                }
            }
        }
        let dirs = [
            self.root.clone(),
            self.run_dir(),
            self.agent_socket_dir(),
            self.root.join("agents"),
            self.logs_dir(),
            self.ca_dir(),
        ];
        for dir in dirs {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| {
                    StoreError::Io(format!(
                        "cannot create directory {}: {e}; check that its parent is writable",
                        dir.display()
                    ))
                })?;
        }
        Ok(())
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
    /// Control sockets of the running gateways (`<pid>-<n>.sock`), through which a
    /// process that changed the configuration makes every gateway load it at once.
    pub fn gateway_control_dir(&self) -> PathBuf {
        self.run_dir().join("gateways")
    }
    /// The audit log's anchor outside the database: the last row's id and hash, signed
    /// with a key derived from the master key, so deleting the log's tail is detected.
    pub fn audit_anchor(&self) -> PathBuf {
        self.root.join("audit.anchor")
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn resolution_order() {
        let explicit = Home::resolve_from(
            Some(Path::new("/x/explicit")),
            Some("/x/env".into()),
            Some("/x/user".into()),
        )
        .unwrap();
        assert_eq!(explicit.root(), Path::new("/x/explicit"));

        let env = Home::resolve_from(None, Some("/x/env".into()), Some("/x/user".into())).unwrap();
        assert_eq!(env.root(), Path::new("/x/env"));

        let user = Home::resolve_from(None, Some("".into()), Some("/x/user".into())).unwrap();
        assert_eq!(user.root(), Path::new("/x/user/.palisade"));

        let err = Home::resolve_from(None, None, None).unwrap_err();
        assert!(err.to_string().contains("PALISADE_HOME"), "{err}");
    }

    #[test]
    fn a_home_is_made_only_inside_a_folder_that_exists() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("no-such-folder/home"));
        let error = home.ensure().unwrap_err().to_string();
        assert!(error.contains("no folder"), "{error}");
        assert!(!dir.path().join("no-such-folder").exists());
    }

    #[test]
    fn ensure_creates_private_directories() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("home"));
        home.ensure().unwrap();
        home.ensure().unwrap();
        for sub in [
            home.root().to_path_buf(),
            home.run_dir(),
            home.agent_socket_dir(),
            home.root().join("agents"),
            home.logs_dir(),
            home.ca_dir(),
        ] {
            let mode = std::fs::metadata(&sub).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", sub.display());
        }
    }
}
