//! Sandboxes in which an agent may do anything, and whose only way out is its vault.
//!
//! This crate owns everything between "run this command for agent X" and a process
//! tree that has no network interface but loopback, sees only read-only system
//! directories, its own workspace and `/tmp`, holds no capability, and is bounded in
//! memory, processes, CPU and wall time:
//!
//! - [`Runtime`]: the trait the host and the CLI use; [`Bubblewrap`] (default, no
//!   daemon) and [`Oci`] (`podman` or `docker` CLI) implement it.
//! - [`mounts`]: the `--mount SRC:DST[:rw]` parser, allow-list and refusals.
//! - [`env`]: the environment every sandbox gets (proxy, CA bundle), and nothing else.
//! - [`limits`] and [`cgroup`]: resource limits, cgroup v2, v1 or rlimits, honestly
//!   reported; [`quota`]: the workspace quota; [`volume`]: the workspace on a
//!   filesystem of its own (a loop-mounted image) where the host allows.
//! - [`shim`]: `palisade shim`, the in-sandbox loopback proxy that relays bytes to the
//!   agent's vault and runs the user's command once it is listening; `broker`: the
//!   inherited control channel through which the parent connects the shim to the vault
//!   (no socket path is ever mounted into a sandbox).
//! - [`syscall_filter`]: the system calls no sandbox may make, compiled for bubblewrap;
//!   [`seccomp`]: podman's default seccomp rules hardened with the same list.
//! - [`image`]: `palisade sandbox image build`, the default OCI image made locally.
//! - [`doctor`]: which protections this host can actually apply.

mod broker;
pub mod cgroup;
pub mod doctor;
pub mod env;
mod error;
mod etc_tree;
pub mod image;
pub mod limits;
pub mod mounts;
mod ownership;
mod pools;
pub mod quota;
mod runtime;
pub mod seccomp;
pub mod shim;
pub mod syscall_filter;
pub mod volume;
mod workdir;

mod bwrap;
pub mod oci;

pub use broker::{ParentDialer, Target};
pub use bwrap::Bubblewrap;
pub use error::SandboxError;
pub use limits::{LimitMechanism, LimitReport, Limits};
pub use mounts::Mount;
pub use oci::{Oci, OciTool};
pub use ownership::Owner;
pub use quota::WorkspaceFull;
pub use runtime::{
    runtime_for, Outcome, Runtime, RuntimeKind, Sandbox, SandboxSpec, StdioMode, TIMED_OUT,
    WORKSPACE_FULL,
};
pub use volume::WorkspaceStorage;
pub use workdir::remove_stale_run_dirs;

/// Where things appear inside every sandbox. Fixed, so nothing about the host's
/// layout (home directory, user name) reaches the sandbox's environment or argv.
pub mod paths {
    /// The `palisade` binary, bind-mounted read-only, which runs the shim.
    pub const PALISADE_BINARY: &str = "/run/palisade/palisade";
    /// System roots plus the vault CA.
    pub const CA_BUNDLE: &str = "/run/palisade/ca-bundle.pem";
    /// The abstract Unix socket (in the sandbox's own network namespace) on which the
    /// shim offers the host's socket to a runner, when the sandbox has one.
    pub const HOST_SOCKET: &str = "@palisade-host";
    /// The agent's writable workspace, also `HOME`.
    pub const WORKSPACE: &str = "/workspace";
    /// Where the shim listens.
    pub const SHIM_LISTEN: &str = "127.0.0.1:3128";
}

/// Result type of this crate.
pub type Result<T, E = SandboxError> = std::result::Result<T, E>;
