//! `palisade folders …`: host folders shared with agents' sandboxes at `/mnt/NAME`.
//!
//! A folder is checked against the sandbox's mount policy when it is added (and again
//! at every launch): never the palisade home, `~/.ssh` and the like, `/etc`, `/run` or
//! `/`. Marked `--sensitive`, research agents may not mount it. A change is in force
//! when the command returns: a running host stops sandboxes whose mounts no longer
//! match before it answers.

use crate::context::Context;
use crate::output::{self, Table};
use anyhow::bail;
use palisade_policy::AgentName;
use std::path::PathBuf;

#[derive(Debug, clap::Subcommand)]
pub enum FoldersCommand {
    /// Name a host folder agents may be given.
    #[command(
        after_help = "Examples:\n  palisade folders add notes --path ~/notes\n  palisade folders add finance --path /srv/finance --sensitive\n\nThe folder appears as /mnt/NAME in the sandbox of every agent it is mounted for.\nSensitive folders hold data worth stealing: research agents may not mount them."
    )]
    Add {
        /// 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit;
        /// the folder appears as /mnt/NAME in sandboxes.
        name: String,
        /// The host directory (absolute; resolved once, symbolic links followed).
        #[arg(long)]
        path: PathBuf,
        /// Research agents may not mount it.
        #[arg(long)]
        sensitive: bool,
    },
    /// List folders, their paths and which agents mount them.
    List,
    /// Mark a folder sensitive or not.
    #[command(after_help = "Example:\n  palisade folders edit finance --sensitive")]
    Edit {
        /// The folder to change (see `palisade folders list`).
        name: String,
        /// Research agents may not mount it (refused while one mounts it, or a folder
        /// inside or around it).
        #[arg(
            long,
            conflicts_with = "not_sensitive",
            required_unless_present = "not_sensitive"
        )]
        sensitive: bool,
        /// No longer sensitive: research agents may mount it.
        #[arg(long)]
        not_sensitive: bool,
    },
    /// Forget a folder and every agent's mount of it (its files stay where they are).
    Remove {
        /// The folder to forget (see `palisade folders list`).
        name: String,
    },
    /// Mount a folder in an agent's sandbox at /mnt/NAME (read-only unless --writable).
    #[command(after_help = "Example:\n  palisade folders mount notes --agent coder --writable")]
    Mount {
        /// The folder to mount (see `palisade folders list`).
        name: String,
        /// The agent whose sandbox gets it.
        #[arg(long)]
        agent: String,
        /// The agent may change the folder's files.
        #[arg(long)]
        writable: bool,
    },
    /// Take a folder away from an agent's sandbox (a running one is restarted without it).
    #[command(after_help = "Example:\n  palisade folders unmount notes --agent coder")]
    Unmount {
        /// The folder to take away.
        name: String,
        /// The agent whose sandbox loses it.
        #[arg(long)]
        agent: String,
    },
}

pub fn run(command: FoldersCommand, ctx: &Context) -> anyhow::Result<()> {
    match command {
        FoldersCommand::Add {
            name,
            path,
            sensitive,
        } => {
            let store = ctx.open_store()?;
            let folder = palisade_host::folders::add(&store, &ctx.home, &name, &path, sensitive)?;
            if ctx.json {
                return output::print_json(&folder);
            }
            output::print(&format!(
                "folder {} is {}{}; give it to an agent with `palisade folders mount {} --agent NAME`\n",
                folder.name,
                folder.path.display(),
                if folder.sensitive { " (sensitive)" } else { "" },
                folder.name
            ))
        }
        FoldersCommand::List => {
            let folders = ctx.open_store()?.list_folders()?;
            if ctx.json {
                return output::print_json(&folders);
            }
            if folders.is_empty() {
                return output::print(
                    "no folders; add one with `palisade folders add NAME --path DIR`\n",
                );
            }
            let mut table = Table::new(&["NAME", "PATH", "SENSITIVE", "MOUNTED BY"]);
            for folder in &folders {
                let mounts: Vec<String> = folder
                    .mounts
                    .iter()
                    .map(|m| format!("{}{}", m.agent, if m.writable { " (rw)" } else { "" }))
                    .collect();
                table.row(vec![
                    folder.name.clone(),
                    folder.path.display().to_string(),
                    if folder.sensitive { "yes" } else { "" }.into(),
                    mounts.join(", "),
                ]);
            }
            output::print(&table.render())
        }
        FoldersCommand::Edit {
            name,
            sensitive,
            not_sensitive,
        } => {
            if sensitive == not_sensitive {
                bail!("say --sensitive or --not-sensitive");
            }
            let store = ctx.open_store()?;
            let folder = store.set_folder_sensitive(&name, sensitive)?;
            tell_host(ctx)?;
            if ctx.json {
                return output::print_json(&folder);
            }
            output::print(&format!(
                "folder {name} is {}\n",
                if sensitive {
                    "sensitive: research agents may not mount it"
                } else {
                    "no longer sensitive"
                }
            ))
        }
        FoldersCommand::Remove { name } => {
            let store = ctx.open_store()?;
            let folder = store.remove_folder(&name)?;
            tell_host(ctx)?;
            if ctx.json {
                return output::print_json(&folder);
            }
            output::print(&format!(
                "folder {name} removed{}; its files at {} are untouched\n",
                if folder.mounts.is_empty() {
                    String::new()
                } else {
                    format!(
                        " and unmounted from {}",
                        folder
                            .mounts
                            .iter()
                            .map(|m| m.agent.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                },
                folder.path.display()
            ))
        }
        FoldersCommand::Mount {
            name,
            agent,
            writable,
        } => {
            let agent = AgentName::new(&agent)?;
            let store = ctx.open_store()?;
            // The store compares paths; the same directory under another path (a bind
            // mount of a sensitive folder) is found here, and again at every launch.
            if store.get_agent(&agent)?.profile == palisade_policy::Profile::Research {
                let folder = store.get_folder(&name)?;
                if let Some(sensitive) = store.list_folders()?.into_iter().find(|other| {
                    other.sensitive
                        && other.name != folder.name
                        && palisade_host::folders::same_directory_around(&folder.path, &other.path)
                }) {
                    anyhow::bail!(
                        "folder {name} is the same directory as, or overlaps, the sensitive folder {} under another path, and agent {agent} has the research profile: research agents read the internet and may not mount sensitive folders",
                        sensitive.name
                    );
                }
            }
            // The store compares paths; the same directory under another path (a bind
            // mount) is found here, and again at every launch.
            let folder = store.get_folder(&name)?;
            if let Some(other) = palisade_host::folders::shared_across(
                &store,
                &agent,
                &folder.path,
                writable,
                false,
            )? {
                anyhow::bail!(
                    "folder {name} is, holds or lies in a directory agent {other} of the other compartment mounts (under another path), and one of them may write there: what one writes the other would read past the approval and the sanitizer; mount it read-only for both, or for one of them only"
                );
            }
            store.mount_folder(&name, &agent, writable)?;
            tell_host(ctx)?;
            let folder = store.get_folder(&name)?;
            if let Some(problem) =
                palisade_host::folders::agent_cannot_use(&folder.path, writable, &agent)
            {
                eprintln!("palisade: warning: {problem}");
            }
            // A folder two agents share, one of them able to write, carries text from one
            // to the other past everything agent-to-agent messages go through.
            let others: Vec<_> = folder
                .mounts
                .into_iter()
                .filter(|m| m.agent != agent)
                .collect();
            if !others.is_empty() && (writable || others.iter().any(|m| m.writable)) {
                let names: Vec<&str> = others.iter().map(|m| m.agent.as_str()).collect();
                eprintln!(
                    "palisade: warning: agent(s) {} also mount folder {name}, and at least one of you may write to it: what one agent writes there the other reads as it is, without the allow-list, the sanitizer or a label that messages between agents get",
                    names.join(", ")
                );
            }
            if ctx.json {
                return output::print_json(&serde_json::json!({
                    "folder": name, "agent": agent, "mounted": true, "writable": writable,
                    "destination": palisade_host::folders::destination(&name),
                }));
            }
            output::print(&format!(
                "agent {agent} sees folder {name} at {} ({})\n",
                palisade_host::folders::destination(&name).display(),
                if writable { "read-write" } else { "read-only" }
            ))
        }
        FoldersCommand::Unmount { name, agent } => {
            let agent = AgentName::new(&agent)?;
            let store = ctx.open_store()?;
            store.unmount_folder(&name, &agent)?;
            tell_host(ctx)?;
            if ctx.json {
                return output::print_json(
                    &serde_json::json!({ "folder": name, "agent": agent, "mounted": false }),
                );
            }
            output::print(&format!("agent {agent} no longer sees folder {name}\n"))
        }
    }
}

/// Has a running host stop the sandboxes whose mounts no longer match, and waits for it.
fn tell_host(ctx: &Context) -> anyhow::Result<()> {
    let Some(info) = super::up::running_host(&ctx.home) else {
        return Ok(());
    };
    let answer = super::send::post_json(&info, "/api/sandboxes/changed").map_err(|e| {
        anyhow::anyhow!("the change is stored, but the running host could not be told ({e:#}); it applies before each agent's next message")
    })?;
    let waiting: Vec<String> = answer["still_running"]
        .as_array()
        .map(|agents| {
            agents
                .iter()
                .filter_map(|a| a.as_str().map(output::clean))
                .collect()
        })
        .unwrap_or_default();
    if !waiting.is_empty() {
        bail!(
            "the change is stored, but the sandbox of {} has not stopped yet; it will not start another message before it has",
            waiting.join(", ")
        );
    }
    Ok(())
}
