//! Creating, changing and deleting agents: the one implementation behind
//! `palisade agents create|edit|delete`, `palisade up`'s default agent and the web UI's
//! agent forms, so the same input gets the same checks and the same one-line errors
//! wherever it is typed.
//!
//! An [`AgentDraft`] holds what was typed, field by field; `None` leaves a field as it
//! is (or at its default for a new agent) and an empty string clears an optional one.
//! Everything is parsed and validated before anything is written. Writes go through
//! the store (audited with the handle's actor, and in force in every running gateway
//! when they return); the instructions file is written by
//! [`settings::write_instructions`] and audited as `agent.instructions`.
//!
//! The agent's policy knobs have their own files, shared the same way by
//! `palisade agents dial|allow|disallow|show` and the web UI's agent page:
//! - [`dial`]: how often a person is asked and how strictly other agents' messages
//!   are cleaned;
//! - [`links`]: the agent-to-agent allow-list (the compartment boundary between agents);
//! - [`explain`]: the agent's effective policy in plain words.

mod dial;
mod explain;
mod links;

pub use dial::{dial, DialDraft};
pub use explain::plain_words;
pub use links::{allow, approval_words, compartment_words, disallow};

use crate::settings::{self, AgentSettings, MAX_INSTRUCTIONS_BYTES};
use crate::HostError;
use palisade_policy::{AgentName, Profile};
use palisade_store::input::{clean, parse_duration};
use palisade_store::{AgentRecord, AuditEntry, Store};

/// The instructions a new agent starts with.
pub const INSTRUCTIONS_TEMPLATE: &str = "You are a helpful personal assistant. You work in a \
sandbox: your tools act on your own workspace folder, and any network access goes through a \
gateway that may refuse a request or hold it for a person's approval. Be concise.\n";

/// An agent's fields as typed. `None`: unchanged (or the default for a new agent);
/// `Some("")` for an optional field: back to the default.
#[derive(Clone, Debug, Default)]
pub struct AgentDraft {
    /// `research` or `action`.
    pub profile: Option<String>,
    /// `anthropic` or `openai`.
    pub provider: Option<String>,
    pub model: Option<String>,
    pub base_url: Option<String>,
    /// The whole instructions text (markdown).
    pub instructions: Option<String>,
    /// How long one message may take, e.g. `10m`.
    pub turn_timeout: Option<String>,
    /// How long an idle runner stays warm, e.g. `1h`.
    pub idle_timeout: Option<String>,
    /// Messages of different conversations handled at once, 1-8.
    pub concurrency: Option<String>,
    /// Disk the workspace may use, e.g. `10G`.
    pub workspace_quota: Option<String>,
}

fn invalid(message: String) -> HostError {
    HostError::Invalid(message)
}

/// `Some("")` → `Some(None)` (clear), `Some(text)` → `Some(Some(text))`, `None` → unchanged.
fn optional(field: &Option<String>) -> Option<Option<&str>> {
    field
        .as_deref()
        .map(|text| Some(text.trim()).filter(|t| !t.is_empty()))
}

impl AgentDraft {
    fn profile(&self) -> Result<Option<Profile>, HostError> {
        self.profile
            .as_deref()
            .map(|text| {
                text.trim()
                    .parse::<Profile>()
                    .map_err(|e| invalid(e.to_string()))
            })
            .transpose()
    }

    /// Refuses a new provider without a model: the agent's model (Claude's by default)
    /// belongs to the provider it had, and would be sent to the new one as it is.
    pub fn provider_has_its_model(&self, current: &AgentSettings) -> Result<(), HostError> {
        let model_given = self.model.as_deref().is_some_and(|m| !m.trim().is_empty());
        match &self.provider {
            Some(provider) if provider.trim() != current.provider && !model_given => {
                Err(invalid(format!(
                    "provider {} needs a model too: the agent's model {} is {}'s",
                    clean(provider.trim()),
                    current.model,
                    current.provider
                )))
            }
            _ => Ok(()),
        }
    }

    /// `settings` with this draft's fields applied and validated.
    fn apply(&self, mut settings: AgentSettings) -> Result<AgentSettings, HostError> {
        if let Some(provider) = &self.provider {
            settings.provider = provider.trim().to_string();
        }
        if let Some(model) = &self.model {
            settings.model = model.trim().to_string();
        }
        if let Some(url) = optional(&self.base_url) {
            settings.base_url = url.map(|u| u.trim_end_matches('/').to_string());
        }
        if let Some(timeout) = optional(&self.turn_timeout) {
            settings.turn_timeout_secs = timeout
                .map(|text| parse_duration(text, "turn timeout").map(|d| d.as_secs()))
                .transpose()?;
        }
        if let Some(timeout) = optional(&self.idle_timeout) {
            settings.idle_timeout_secs = timeout
                .map(|text| parse_duration(text, "idle timeout").map(|d| d.as_secs()))
                .transpose()?;
        }
        if let Some(concurrency) = optional(&self.concurrency) {
            settings.concurrency = concurrency
                .map(|text| {
                    text.parse::<u32>().map_err(|_| {
                        invalid(format!(
                            "concurrency {:?} is not a number from 1 to {}",
                            clean(text),
                            settings::MAX_CONCURRENCY
                        ))
                    })
                })
                .transpose()?;
        }
        if let Some(quota) = optional(&self.workspace_quota) {
            settings.workspace_quota_bytes = quota
                .map(|text| {
                    palisade_sandbox::quota::parse_quota(text).map_err(|e| invalid(e.to_string()))
                })
                .transpose()?;
        }
        settings.validate()?;
        Ok(settings)
    }

    fn instructions(&self) -> Result<Option<String>, HostError> {
        let Some(text) = &self.instructions else {
            return Ok(None);
        };
        // Browsers send a textarea's line breaks as CRLF.
        let text = text.replace("\r\n", "\n");
        if text.len() > MAX_INSTRUCTIONS_BYTES {
            return Err(invalid(format!(
                "the instructions are larger than {} KiB; shorten them",
                MAX_INSTRUCTIONS_BYTES / 1024
            )));
        }
        Ok(Some(text))
    }
}

/// Settings JSON with `settings` written over `current`, keeping keys this version
/// does not know.
fn merged(current: &serde_json::Value, settings: &AgentSettings) -> serde_json::Value {
    let mut value = current.clone();
    if !value.is_object() {
        value = serde_json::json!({});
    }
    if let (Some(object), Ok(serde_json::Value::Object(known))) =
        (value.as_object_mut(), serde_json::to_value(settings))
    {
        // Optional fields cleared in `settings` are skipped when it is serialized;
        // drop them from the stored JSON too.
        for key in [
            "base_url",
            "turn_timeout_secs",
            "idle_timeout_secs",
            "concurrency",
            "workspace_quota_bytes",
        ] {
            if !known.contains_key(key) || known[key].is_null() {
                object.remove(key);
            }
        }
        object.extend(known.into_iter().filter(|(_, v)| !v.is_null()));
    }
    value
}

/// Writes the instructions file and its audit row.
fn write_instructions(store: &Store, name: &AgentName, text: &str) -> Result<(), HostError> {
    settings::write_instructions(store.home(), name.as_str(), text)?;
    store.append_audit(&AuditEntry {
        event: "agent.instructions".into(),
        agent: Some(name.to_string()),
        decision: Some("updated".into()),
        actor: Some(store.actor().to_string()),
        detail: Some(serde_json::json!({ "bytes": text.len() })),
        ..Default::default()
    })?;
    Ok(())
}

/// Creates agent `name` (profile `research` unless the draft says otherwise) with the
/// draft's settings and instructions, or the starting template.
pub fn create(store: &Store, name: &str, draft: &AgentDraft) -> Result<AgentRecord, HostError> {
    // A new agent has no model of its own yet: an OpenAI-compatible one is told to name
    // its server's (Anthropic's default would be sent to a server that does not serve it).
    let model_given = draft.model.as_deref().is_some_and(|m| !m.trim().is_empty());
    if draft.provider.as_deref().map(str::trim) == Some("openai") && !model_given {
        return Err(invalid(
            "an OpenAI-compatible agent needs a model: the name its server lists (its /v1/models), such as llama3".into(),
        ));
    }
    draft.provider_has_its_model(&AgentSettings::default())?;
    create_checked(store, name, draft, true)
}

/// [`create`]; `leftovers`: refuse a research agent whose folder holds an earlier
/// agent's memory or files. `palisade up` re-creating its default agent in a home with
/// no agents skips that: the folder is the person's own default agent's, and a start
/// that fails on it would leave them with nothing.
pub(crate) fn create_checked(
    store: &Store,
    name: &str,
    draft: &AgentDraft,
    leftovers: bool,
) -> Result<AgentRecord, HostError> {
    let name = AgentName::new(name).map_err(|e| invalid(e.to_string()))?;
    let profile = draft.profile()?.unwrap_or(Profile::Research);
    let settings = draft.apply(AgentSettings::default())?;
    let instructions = draft.instructions()?;
    if leftovers && profile == Profile::Research {
        let left = carried_over(store, &name, false);
        if !left.is_empty() {
            return Err(invalid(format!(
                "agents/{name} still holds {} of an earlier agent of that name, which a research agent must not start with (an action agent's may hold what its credentials fetched); move them away first, or pick another name",
                left.join(" and ")
            )));
        }
    }
    // Root's sandboxes run each agent as a host id chosen by its name: two agents on
    // one id would share the kernel's per-user pools and each other's files.
    let slot = palisade_sandbox::oci::agent_slot(name.as_str());
    if let Some(other) = store.list_agents()?.into_iter().find(|other| {
        other.name != name && palisade_sandbox::oci::agent_slot(other.name.as_str()) == slot
    }) {
        return Err(invalid(format!(
            "agent {name} would run as the same sandbox user id as agent {}, which would let each use up the other's share of the kernel; pick another name",
            other.name
        )));
    }
    store.create_agent(&name, profile)?;
    store.update_agent_settings(&name, &merged(&serde_json::json!({}), &settings))?;
    match instructions {
        Some(text) => write_instructions(store, &name, &text)?,
        // A leftover file of an earlier agent of that name is kept: it was a person's.
        None if settings::instructions_path(store.home(), name.as_str()).exists() => {}
        None => settings::write_instructions(store.home(), name.as_str(), INSTRUCTIONS_TEMPLATE)?,
    }
    Ok(store.get_agent(&name)?)
}

/// Changes agent `name`: the draft's fields replace the agent's, the rest stay.
/// Nothing is written unless all of it is valid; only what changed is written.
pub fn edit(store: &Store, name: &str, draft: &AgentDraft) -> Result<AgentRecord, HostError> {
    let agent = store.get_agent(&AgentName::new(name).map_err(|e| invalid(e.to_string()))?)?;
    draft.provider_has_its_model(&AgentSettings::from_json(&agent.settings).unwrap_or_default())?;
    edit_as_is(store, name, draft)
}

/// [`edit`] without the check that a new provider comes with a model: for a key's
/// first run, which picks the model from the provider's list right after.
pub(crate) fn edit_as_is(
    store: &Store,
    name: &str,
    draft: &AgentDraft,
) -> Result<AgentRecord, HostError> {
    let name = AgentName::new(name).map_err(|e| invalid(e.to_string()))?;
    let profile = draft.profile()?;
    let instructions = draft.instructions()?;
    let agent = store.get_agent(&name)?;
    let current = AgentSettings::from_json(&agent.settings).unwrap_or_default();
    let settings = draft.apply(current.clone())?;
    let new_profile = profile.filter(|p| *p != agent.profile);
    if new_profile == Some(Profile::Research) {
        let left = carried_over(store, &name, true);
        if !left.is_empty() {
            return Err(invalid(format!(
                "{name} cannot become a research agent: its {} may hold what its credentials fetched, and a research agent reads the open web; create a research agent instead",
                left.join(" and ")
            )));
        }
    }
    // The profile first: the store may still refuse it (a sensitive secret or folder),
    // and then nothing else is written either.
    if let Some(profile) = new_profile {
        store.set_agent_profile(&name, profile)?;
    }
    if settings != current {
        store.update_agent_settings(&name, &merged(&agent.settings, &settings))?;
    }
    if let Some(text) = instructions {
        let path = settings::instructions_path(store.home(), name.as_str());
        let old =
            settings::read_agent_file(&path, settings::MAX_INSTRUCTIONS_BYTES).unwrap_or_default();
        if old != text {
            write_instructions(store, &name, &text)?;
        }
    }
    Ok(store.get_agent(&name)?)
}

/// What agent `name` would carry into a research profile: its conversations (when
/// `sessions`: a deleted agent's are gone), its memory and its workspace's files.
fn carried_over(store: &Store, name: &AgentName, sessions: bool) -> Vec<&'static str> {
    let mut left = Vec::new();
    if sessions
        && store
            .list_sessions(Some(name))
            .map(|s| !s.is_empty())
            .unwrap_or(true)
    {
        left.push("conversations");
    }
    let memory = settings::memory_path(store.home(), name.as_str());
    if std::fs::metadata(&memory)
        .map(|m| m.len() > 0)
        .unwrap_or(false)
    {
        left.push("memory (memory.md)");
    }
    let workspace = store.home().agent_workspace(name.as_str());
    // An image holds its files whether or not it is mounted at this moment (it is not
    // while the host is down), so it counts whatever the folder shows.
    let image = palisade_sandbox::volume::image_path(&workspace);
    if std::fs::symlink_metadata(&image).is_ok() {
        left.push("a workspace image (workspace.img)");
    }
    // An empty `lost+found` is the filesystem's own; anything in one was put there. A
    // workspace that cannot be read counts as holding files: its agent may have made it
    // so (mode 300 on a host where agents own their workspace).
    let has_files = match std::fs::read_dir(&workspace) {
        Ok(entries) => entries
            .flatten()
            .any(|entry| entry.file_name() != "lost+found" || !is_empty_dir(&entry.path())),
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    };
    if has_files {
        left.push("workspace files");
    }
    left
}

/// Whether `path` is a directory with nothing in it (not a link to one).
fn is_empty_dir(path: &std::path::Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|meta| meta.is_dir())
        && std::fs::read_dir(path).is_ok_and(|mut entries| entries.next().is_none())
}

/// Deletes agent `name` with its token, grants and bound rules (its folder with the
/// workspace stays on disk: it is the person's data).
pub fn delete(store: &Store, name: &str) -> Result<(), HostError> {
    let name = AgentName::new(name).map_err(|e| invalid(e.to_string()))?;
    store.delete_agent(&name)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let home = palisade_store::Home::at(dir.path().join("home"));
        let store = Store::open(&home).unwrap();
        (dir, store)
    }

    /// A research agent reads the open web, so it must not start with what an action
    /// agent gathered with its credentials: its memory, its workspace's files, its
    /// conversations; neither by a change of profile nor by a new agent of the name.
    #[test]
    fn a_research_agent_never_starts_with_an_action_agents_data() {
        let (_dir, store) = store();
        let action = AgentDraft {
            profile: Some("action".into()),
            ..AgentDraft::default()
        };
        let research = AgentDraft {
            profile: Some("research".into()),
            ..AgentDraft::default()
        };
        create(&store, "mailer", &action).unwrap();
        let home = store.home().clone();
        let memory = settings::memory_path(&home, "mailer");
        let workspace = home.agent_workspace("mailer");
        std::fs::write(&memory, "the inbox said: SECRET\n").unwrap();
        std::fs::create_dir_all(&workspace).unwrap();
        std::fs::write(workspace.join("inbox.txt"), "SECRET").unwrap();
        let research_and_more = AgentDraft {
            idle_timeout: Some("1h".into()),
            ..research.clone()
        };
        let error = edit(&store, "mailer", &research_and_more)
            .unwrap_err()
            .to_string();
        let unchanged = store.get_agent(&AgentName::new("mailer").unwrap()).unwrap();
        assert!(
            !unchanged.settings.to_string().contains("idle_timeout"),
            "a refused edit wrote: {}",
            unchanged.settings
        );
        assert!(
            error.contains("cannot become a research agent")
                && error.contains("memory (memory.md) and workspace files"),
            "{error}"
        );
        let name = AgentName::new("mailer").unwrap();
        assert_eq!(store.get_agent(&name).unwrap().profile, Profile::Action);

        // Deleted and created again: the folder's leftovers keep a research agent out.
        delete(&store, "mailer").unwrap();
        let error = create(&store, "mailer", &research).unwrap_err().to_string();
        assert!(error.contains("earlier agent of that name"), "{error}");
        assert!(store.get_agent(&name).is_err(), "nothing was created");
        // Files kept where the folder shows nothing: an image not mounted now (the
        // host is down), and a `lost+found` an agent filled.
        std::fs::remove_file(&memory).unwrap();
        std::fs::remove_file(workspace.join("inbox.txt")).unwrap();
        let image = palisade_sandbox::volume::image_path(&workspace);
        std::fs::write(&image, "ext4 image").unwrap();
        let error = create(&store, "mailer", &research).unwrap_err().to_string();
        assert!(error.contains("workspace image (workspace.img)"), "{error}");
        std::fs::remove_file(&image).unwrap();
        let found = workspace.join("lost+found");
        std::fs::create_dir(&found).unwrap();
        std::fs::write(found.join("notes.txt"), "CARD-4111").unwrap();
        let error = create(&store, "mailer", &research).unwrap_err().to_string();
        assert!(error.contains("workspace files"), "{error}");
        // Once they are moved away (or as an action agent) it may be made; the
        // filesystem's own empty `lost+found` is no earlier agent's.
        std::fs::remove_file(found.join("notes.txt")).unwrap();
        // A workspace that cannot be listed counts as holding files (an agent's mode
        // 300 does that where it owns it; for root, whom modes do not stop, something
        // that is no folder stands in).
        std::fs::remove_dir_all(&workspace).unwrap();
        std::fs::write(&workspace, "not a folder").unwrap();
        let error = create(&store, "mailer", &research).unwrap_err().to_string();
        assert!(error.contains("workspace files"), "{error}");
        std::fs::remove_file(&workspace).unwrap();
        create(&store, "mailer", &research).unwrap();
        // An action agent with nothing gathered may still become a research one.
        create(&store, "fresh", &action).unwrap();
        edit(&store, "fresh", &research).unwrap();
    }

    #[test]
    fn create_edit_and_clear_fields() {
        let (_dir, store) = store();
        let draft = AgentDraft {
            provider: Some("openai".into()),
            model: Some("llama".into()),
            base_url: Some("http://127.0.0.1:8080/v1/".into()),
            idle_timeout: Some("1h".into()),
            concurrency: Some("2".into()),
            ..AgentDraft::default()
        };
        let agent = create(&store, "local", &draft).unwrap();
        assert_eq!(agent.settings["base_url"], "http://127.0.0.1:8080/v1");
        assert_eq!(agent.settings["idle_timeout_secs"], 3600);
        assert_eq!(agent.settings["concurrency"], 2);
        let text =
            settings::read_agent_file(&settings::instructions_path(store.home(), "local"), 1 << 20)
                .unwrap();
        assert_eq!(text, INSTRUCTIONS_TEMPLATE);

        let cleared = edit(
            &store,
            "local",
            &AgentDraft {
                idle_timeout: Some(String::new()),
                profile: Some("action".into()),
                instructions: Some("Be brief.\r\n".into()),
                ..AgentDraft::default()
            },
        )
        .unwrap();
        assert!(cleared.settings.get("idle_timeout_secs").is_none());
        assert_eq!(cleared.settings["concurrency"], 2, "untouched fields stay");
        assert_eq!(cleared.profile, Profile::Action);
        let text =
            settings::read_agent_file(&settings::instructions_path(store.home(), "local"), 1 << 20)
                .unwrap();
        assert_eq!(text, "Be brief.\n");
    }

    #[test]
    fn bad_input_writes_nothing() {
        let (_dir, store) = store();
        for (draft, needle) in [
            (
                AgentDraft {
                    profile: Some("admin".into()),
                    ..AgentDraft::default()
                },
                "profile",
            ),
            (
                AgentDraft {
                    provider: Some("openai".into()),
                    model: Some("m".into()),
                    ..AgentDraft::default()
                },
                "base URL",
            ),
            (
                AgentDraft {
                    provider: Some("openai".into()),
                    ..AgentDraft::default()
                },
                "needs a model: the name its server lists",
            ),
            (
                AgentDraft {
                    turn_timeout: Some("soon".into()),
                    ..AgentDraft::default()
                },
                "turn timeout \"soon\"",
            ),
            (
                AgentDraft {
                    concurrency: Some("9".into()),
                    ..AgentDraft::default()
                },
                "concurrency 9",
            ),
            (
                AgentDraft {
                    workspace_quota: Some("1k".into()),
                    ..AgentDraft::default()
                },
                "workspace quota",
            ),
        ] {
            let error = create(&store, "x", &draft).unwrap_err().to_string();
            assert!(error.contains(needle), "{needle}: {error}");
        }
        assert!(create(&store, "Bad Name", &AgentDraft::default()).is_err());
        assert!(store.list_agents().unwrap().is_empty());
    }
}
