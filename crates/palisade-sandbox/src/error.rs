//! Errors a user sees: one line each, saying what happened and what to do next.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{tool} is not installed; {hint}")]
    MissingTool { tool: String, hint: String },
    #[error("this host cannot create user namespaces ({detail}); enable them (sysctl kernel.unprivileged_userns_clone=1 or user.max_user_namespaces>0) or use --runtime podman")]
    NoUserNamespaces { detail: String },
    #[error("the sandbox image {image} is missing; build it with `palisade sandbox image build`")]
    MissingImage { image: String },
    #[error("bad mount {spec:?}: {reason}")]
    BadMount { spec: String, reason: String },
    #[error("refusing to mount {path}: {reason}")]
    RefusedMount { path: PathBuf, reason: String },
    #[error("bad limit {what}={value:?}: {reason}")]
    BadLimit {
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error("unknown runtime {0:?}: use bwrap, podman or docker")]
    UnknownRuntime(String),
    #[error("{runtime} is not usable here: {reason}")]
    RuntimeUnusable { runtime: String, reason: String },
    #[error("could not start the sandbox: {0}")]
    Start(String),
    #[error("image build failed: {0}")]
    Image(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl SandboxError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        SandboxError::Io {
            context: context.into(),
            source,
        }
    }
}
