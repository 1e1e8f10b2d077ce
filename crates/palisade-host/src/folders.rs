//! Host folders shared with agents: named once (checked against the sandbox's mount
//! policy), mounted at `/mnt/NAME` in the sandboxes of the agents they are given to.
//!
//! Both the CLI and the launcher come through here, so a folder is checked when it is
//! added and again each time a sandbox starts: a path replaced by a symbolic link since,
//! a policy that changed, or a sensitive folder somehow given to a research agent is
//! refused at launch (the agent runs without it and the log says why).

use crate::HostError;
use palisade_policy::{AgentName, Profile};
use palisade_sandbox::mounts::MountPolicy;
use palisade_sandbox::Mount;
use palisade_store::{FolderRecord, Home, Store};
use std::path::{Path, PathBuf};

/// Where a folder appears inside the sandbox.
pub fn destination(name: &str) -> PathBuf {
    Path::new("/mnt").join(name)
}

/// Why `agent` in root's bubblewrap sandboxes (a subordinate uid of its own, not root)
/// could not use `path` as mounted, from its mode bits: `None` when it can, or when
/// this process is not root (the agent is then this user). ACLs are not read, so a
/// folder opened up by one is named here too.
pub fn agent_cannot_use(path: &Path, writable: bool, agent: &AgentName) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let owner = palisade_sandbox::oci::agent_owner(agent.as_str());
    let meta = std::fs::metadata(path).ok()?;
    let bits = if meta.uid() == owner.uid {
        meta.mode() >> 6
    } else if meta.gid() == owner.gid {
        meta.mode() >> 3
    } else {
        meta.mode()
    } & 0o7;
    let needed = if writable { 0o7 } else { 0o5 };
    (bits & needed != needed).then(|| {
        format!(
            "root's agent {agent} runs as uid {}, which may not {} {} (mode {:o}); give it access, e.g. `setfacl -m u:{}:{} {}`",
            owner.uid,
            if writable { "write to" } else { "read" },
            path.display(),
            meta.mode() & 0o7777,
            owner.uid,
            if writable { "rwx" } else { "rx" },
            path.display()
        )
    })
}

/// Checks `path` with the mount policy of `home` and records it as folder `name`.
pub fn add(
    store: &Store,
    home: &Home,
    name: &str,
    path: &Path,
    sensitive: bool,
) -> Result<FolderRecord, HostError> {
    palisade_store::validate_folder_name(name)?;
    let canonical = MountPolicy::for_host(home.root())
        .check_folder(path)
        .map_err(|e| HostError::Invalid(e.to_string()))?;
    Ok(store.add_folder(name, &canonical, sensitive)?)
}

/// Whether `one` is, lies in or holds `other` as directories, not as paths: one of
/// them is the other or among its parents, by device and inode. A bind mount shows a
/// directory under a second path with the same device and inode, so a sensitive folder
/// bound elsewhere is still found. (A hard link to one of its files is not: a file has
/// no parent to follow.)
pub fn same_directory_around(one: &Path, other: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let identity = |path: &Path| {
        std::fs::metadata(path)
            .ok()
            .map(|meta| (meta.dev(), meta.ino()))
    };
    let within = |inner: &Path, outer: &Path| {
        let Some(outer) = identity(outer) else {
            return false;
        };
        inner
            .ancestors()
            .any(|ancestor| identity(ancestor) == Some(outer))
    };
    within(one, other) || within(other, one)
}

/// The agent of the other compartment (research or action) that mounts the directory
/// at `path` of a folder `agent` would mount (`writable` or not), or one inside or
/// around it, under any path (a bind mount included: compared as directories), when
/// either may write there: what one wrote the other would read past the approval and
/// the sanitizer that messages between the compartments go through. The store refuses
/// such a mount by path; this finds it under other paths too, at mount and at launch.
/// `by_path`: also report a folder whose path is, holds or lies in `path` (the store
/// refuses those at mount, with its own words; at launch everything counts).
pub fn shared_across(
    store: &Store,
    agent: &AgentName,
    path: &Path,
    writable: bool,
    by_path: bool,
) -> Result<Option<AgentName>, HostError> {
    let agents = store.list_agents()?;
    let Some(profile) = agents.iter().find(|a| &a.name == agent).map(|a| a.profile) else {
        return Ok(None);
    };
    let across = |name: &AgentName| {
        agents
            .iter()
            .any(|a| &a.name == name && a.profile != profile)
    };
    for folder in store.list_folders()? {
        let Some(mount) = folder.mounts.iter().find(|mount| {
            &mount.agent != agent && across(&mount.agent) && (writable || mount.writable)
        }) else {
            continue;
        };
        // Once per folder, and only for one another compartment's agent mounts: the
        // directory comparison reads every ancestor's metadata.
        let overlaps = match path.starts_with(&folder.path) || folder.path.starts_with(path) {
            true => by_path,
            false => same_directory_around(path, &folder.path),
        };
        if overlaps {
            return Ok(Some(mount.agent.clone()));
        }
    }
    Ok(None)
}

/// The mounts `agent`'s sandbox gets now, and a reason for each folder it does not.
pub fn mounts_for(
    store: &Store,
    home: &Home,
    agent: &AgentName,
) -> Result<(Vec<Mount>, Vec<String>), HostError> {
    let profile = store.get_agent(agent)?.profile;
    let policy = MountPolicy::for_host(home.root());
    let mut mounts = Vec::new();
    let mut refused = Vec::new();
    let sensitive: Vec<FolderRecord> = match profile {
        Profile::Research => store
            .list_folders()?
            .into_iter()
            .filter(|folder| folder.sensitive)
            .collect(),
        _ => Vec::new(),
    };
    for (folder, writable) in store.agent_folders(agent)? {
        if profile == Profile::Research {
            // By path, or as the same directory under another path (a bind mount).
            let overlap = match store.folder_sensitive_overlap(&folder.name)? {
                Some(name) => Some(name),
                None => sensitive
                    .iter()
                    .find(|s| same_directory_around(&folder.path, &s.path))
                    .map(|s| s.name.clone()),
            };
            if let Some(sensitive) = overlap {
                refused.push(format!(
                    "folder {} is or overlaps the sensitive folder {sensitive} and {agent} is a research agent",
                    folder.name
                ));
                continue;
            }
        }
        if let Some(other) = shared_across(store, agent, &folder.path, writable, true)? {
            refused.push(format!(
                "folder {} is, holds or lies in a directory agent {other} of the other compartment mounts, and one of them may write there",
                folder.name
            ));
            continue;
        }
        match policy.check_folder(&folder.path) {
            Ok(canonical) if canonical == folder.path => mounts.push(Mount {
                source: canonical,
                destination: destination(&folder.name),
                writable,
            }),
            Ok(canonical) => refused.push(format!(
                "folder {} now resolves to {} instead of {}; add it again if that is intended",
                folder.name,
                canonical.display(),
                folder.path.display()
            )),
            Err(error) => refused.push(format!("folder {}: {error}", folder.name)),
        }
    }
    Ok((mounts, refused))
}

/// One paragraph for the agent's instructions naming its folders, or `None`.
pub fn describe(mounts: &[Mount]) -> Option<String> {
    if mounts.is_empty() {
        return None;
    }
    let mut text = String::from(
        "## Shared folders\nThese host folders are mounted in your sandbox (use the bash tool to work in them):",
    );
    for mount in mounts {
        text.push_str(&format!(
            "\n- {} ({})",
            mount.destination.display(),
            if mount.writable {
                "read-write"
            } else {
                "read-only"
            }
        ));
    }
    Some(text)
}
