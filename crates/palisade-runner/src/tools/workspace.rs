//! The agent's workspace and the resolution of paths the model names.
//!
//! Tools take paths from the model. They are resolved against the workspace root and
//! refused when they leave it: `..` climbing above the root, absolute paths elsewhere,
//! and symbolic links (anywhere along the path) that lead outside. This keeps a
//! confused model inside its folder; the sandbox, not this check, is the security
//! boundary (a `bash` command can go anywhere the sandbox lets it).

use std::io;
use std::path::{Component, Path, PathBuf};

/// A directory tools are confined to.
#[derive(Clone, Debug)]
pub struct Workspace {
    root: PathBuf,
}

impl Workspace {
    /// Opens `root`, which must be an existing directory.
    pub fn new(root: impl AsRef<Path>) -> io::Result<Workspace> {
        let root = root.as_ref().canonicalize()?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(Workspace { root })
    }

    /// The canonical root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The real path `input` names inside the workspace, which may not exist yet.
    pub fn resolve(&self, input: &str) -> Result<PathBuf, String> {
        if input.trim().is_empty() {
            return Err("the path is empty".to_string());
        }
        let outside = || {
            format!(
                "{input} is outside the workspace; use a path relative to the workspace ({})",
                self.root.display()
            )
        };
        let named = Path::new(input);
        let joined = if named.is_absolute() {
            named.to_path_buf()
        } else {
            self.root.join(named)
        };
        let mut normal = PathBuf::new();
        for component in joined.components() {
            match component {
                Component::CurDir => {}
                Component::ParentDir => {
                    if !normal.pop() {
                        return Err(outside());
                    }
                }
                other => normal.push(other),
            }
        }
        if !normal.starts_with(&self.root) {
            return Err(outside());
        }

        // The deepest part that exists (a dangling link counts as existing) is
        // resolved for real; what does not exist yet cannot be a link.
        let mut existing = normal.clone();
        let mut missing = Vec::new();
        while existing.symlink_metadata().is_err() {
            match existing.file_name() {
                Some(name) => {
                    missing.push(name.to_os_string());
                    existing.pop();
                }
                None => break,
            }
        }
        let real = existing.canonicalize().map_err(|error| {
            format!(
                "{input}: cannot resolve {}: {error}",
                self.display(&existing)
            )
        })?;
        if !real.starts_with(&self.root) {
            return Err(format!(
                "{input} leads outside the workspace through a symbolic link"
            ));
        }
        let mut resolved = real;
        for name in missing.iter().rev() {
            resolved.push(name);
        }
        Ok(resolved)
    }

    /// `path` relative to the root, for messages to the model (`.` for the root).
    pub fn display(&self, path: &Path) -> String {
        match path.strip_prefix(&self.root) {
            Ok(relative) if relative.as_os_str().is_empty() => ".".to_string(),
            Ok(relative) => relative.display().to_string(),
            Err(_) => path.display().to_string(),
        }
    }
}
