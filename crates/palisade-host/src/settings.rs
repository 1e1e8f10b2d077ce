//! What the host knows about how an agent runs: model and provider from the agent's
//! `settings` JSON in the store, instructions and memory from files in the agent's
//! folder (`agents/NAME/instructions.md`, `agents/NAME/memory.md`), which a person can
//! edit and which never enter the sandbox as files.

use crate::HostError;
use palisade_store::Home;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub use palisade_policy::models::DEFAULT_ANTHROPIC_URL;
/// Default model for new agents (configurable per agent).
pub use palisade_policy::models::DEFAULT_MODEL;

/// Longest memory file the host reads or appends to.
pub const MAX_MEMORY_BYTES: usize = 64 * 1024;
/// Longest instructions file the host sends.
pub const MAX_INSTRUCTIONS_BYTES: usize = 64 * 1024;

/// The model side of an agent, stored in its `settings`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentSettings {
    #[serde(default = "default_provider")]
    pub provider: String,
    #[serde(default = "default_model")]
    pub model: String,
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tool_iterations: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    /// How long one message may take before the runner is stopped and the message
    /// answered with an error (else the host's `--turn-timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_timeout_secs: Option<u64>,
    /// How long a runner with nothing to do stays warm (else the host's `--idle-timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<u64>,
    /// Messages of different sessions handled at once, each by its own runner
    /// (default 1; a session's messages are always handled one at a time, in order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Bytes the agent's workspace may use (default
    /// [`palisade_sandbox::quota::DEFAULT_WORKSPACE_QUOTA`], 4 GiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_quota_bytes: Option<u64>,
}

/// Most runners one agent may have at once.
pub const MAX_CONCURRENCY: u32 = 8;

fn default_provider() -> String {
    "anthropic".into()
}
fn default_model() -> String {
    DEFAULT_MODEL.into()
}

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            provider: default_provider(),
            model: default_model(),
            base_url: None,
            tools: None,
            max_tool_iterations: None,
            max_output_tokens: None,
            turn_timeout_secs: None,
            idle_timeout_secs: None,
            concurrency: None,
            workspace_quota_bytes: None,
        }
    }
}

impl AgentSettings {
    /// Reads the settings JSON of an agent; unknown keys are kept by the store, ignored here.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, HostError> {
        if value.as_object().is_some_and(|o| o.is_empty()) || value.is_null() {
            return Ok(AgentSettings::default());
        }
        let settings: AgentSettings = serde_json::from_value(value.clone())
            .map_err(|e| HostError::Invalid(format!("agent settings are malformed: {e}")))?;
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), HostError> {
        if !matches!(self.provider.as_str(), "anthropic" | "openai") {
            return Err(HostError::Invalid(format!(
                "provider {:?} is not supported: use anthropic or openai",
                self.provider
            )));
        }
        if self.model.trim().is_empty() || self.model.len() > 200 {
            return Err(HostError::Invalid(
                "the model name is empty or too long".into(),
            ));
        }
        if let Some(url) = &self.base_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) || url.len() > 2000 {
                return Err(HostError::Invalid(format!(
                    "base URL {url:?} is invalid: give an http:// or https:// URL"
                )));
            }
            // One server: a host that is a pattern names none, and the web UI's button
            // that lets agents reach their model server would allow the pattern (a
            // review allowed `*` that way).
            let host = url
                .parse::<http::Uri>()
                .ok()
                .and_then(|uri| uri.host().map(str::to_string))
                .unwrap_or_default();
            if host.is_empty() || host.contains('*') {
                return Err(HostError::Invalid(format!(
                    "base URL {url:?} names no one server: give the server's address, such as http://127.0.0.1:8080/v1"
                )));
            }
            // The runner appends the endpoint; one already there would be called twice
            // over (`…/chat/completions/v1/chat/completions`).
            let path = url.trim_end_matches('/');
            if let Some(endpoint) = ["/chat/completions", "/v1/messages"]
                .into_iter()
                .find(|endpoint| path.ends_with(endpoint))
            {
                return Err(HostError::Invalid(format!(
                    "base URL {url:?} ends with the endpoint {endpoint}: give the server's base URL (e.g. http://127.0.0.1:8080/v1), the endpoint is added to it"
                )));
            }
        }
        if self.turn_timeout_secs == Some(0) {
            return Err(HostError::Invalid(
                "the turn timeout must be at least 1 s".into(),
            ));
        }
        if self
            .workspace_quota_bytes
            .is_some_and(|bytes| bytes < (1 << 20))
        {
            return Err(HostError::Invalid(
                "the workspace quota must be at least 1M".into(),
            ));
        }
        if let Some(n) = self.concurrency {
            if !(1..=MAX_CONCURRENCY).contains(&n) {
                return Err(HostError::Invalid(format!(
                    "concurrency {n} is out of range: use 1 to {MAX_CONCURRENCY}"
                )));
            }
        }
        if self.provider == "openai" && self.base_url.is_none() {
            return Err(HostError::Invalid(
                "an openai-compatible agent needs a base URL (the server's, e.g. http://127.0.0.1:8080/v1)".into(),
            ));
        }
        Ok(())
    }

    /// Runners this agent may have at once.
    pub fn effective_concurrency(&self) -> usize {
        self.concurrency.unwrap_or(1).clamp(1, MAX_CONCURRENCY) as usize
    }

    /// Bytes the agent's workspace may use.
    pub fn effective_workspace_quota(&self) -> u64 {
        self.workspace_quota_bytes
            .unwrap_or(palisade_sandbox::quota::DEFAULT_WORKSPACE_QUOTA)
    }

    /// Whether the agent asks an OpenAI-compatible server for Anthropic's default model,
    /// which no such server serves: what a first run leaves when the server's model
    /// list could not be read. Every message fails until a model is chosen.
    pub fn has_anthropics_default_at_openai(&self) -> bool {
        self.provider == "openai" && self.model == DEFAULT_MODEL
    }

    /// The base URL the runner calls.
    pub fn effective_base_url(&self) -> String {
        self.base_url
            .clone()
            .unwrap_or_else(|| DEFAULT_ANTHROPIC_URL.to_string())
    }
}

pub fn instructions_path(home: &Home, agent: &str) -> PathBuf {
    home.agent_dir(agent).join("instructions.md")
}

pub fn memory_path(home: &Home, agent: &str) -> PathBuf {
    home.agent_dir(agent).join("memory.md")
}

/// Reads a text file of the agent's folder, empty if missing, refusing one over `limit`.
///
/// At most `limit + 1` bytes are read, whatever the file's size, and only from a
/// regular file (opened without blocking, so a FIFO put in its place cannot hang the
/// host).
pub fn read_agent_file(path: &std::path::Path, limit: usize) -> Result<String, HostError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let cannot =
        |error: std::io::Error| HostError::Io(format!("cannot read {}: {error}", path.display()));
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(error) => return Err(cannot(error)),
    };
    if !file.metadata().map_err(cannot)?.is_file() {
        return Err(HostError::Invalid(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let mut bytes = Vec::new();
    file.take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() > limit {
        return Err(HostError::Invalid(format!(
            "{} is larger than {} KiB; shorten it",
            path.display(),
            limit / 1024
        )));
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Appends a note to the agent's memory file (0600), keeping it under the cap.
/// A note as it is kept: control characters other than line breaks and tabs (terminal
/// escapes, NUL) and characters that render as nothing or reorder the text (bidi
/// overrides) removed. The notes go back to the agent in every delivery and are read
/// by people (`cat memory.md`, the web UI), and nothing an agent writes there needs
/// them.
fn printable_note(note: &str) -> String {
    note.chars()
        .filter(|c| matches!(c, '\n' | '\t') || !c.is_control())
        .filter(|c| !palisade_approvals::summary::is_invisible(*c))
        .collect()
}

pub fn append_memory(home: &Home, agent: &str, note: &str) -> Result<(), HostError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = memory_path(home, agent);
    let current = read_agent_file(&path, MAX_MEMORY_BYTES)?;
    let note = printable_note(note);
    let note = note.trim_end();
    if note.is_empty() {
        return Err(HostError::Invalid("the note is empty".into()));
    }
    let separator = if current.is_empty() || current.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    // Everything written counts: the separator, the note and its newline (without the
    // separator, a file that did not end in one grew one byte past the limit, and every
    // later message was refused until a person shortened it).
    if current.len() + separator.len() + note.len() + 1 > MAX_MEMORY_BYTES {
        return Err(HostError::Invalid(format!(
            "memory is full ({} KiB); ask the person to tidy agents/{agent}/memory.md",
            MAX_MEMORY_BYTES / 1024
        )));
    }
    create_private_dir(&home.agent_dir(agent))?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| HostError::Io(format!("cannot open {}: {e}", path.display())))?;
    writeln!(file, "{separator}{note}")
        .map_err(|e| HostError::Io(format!("cannot write {}: {e}", path.display())))
}

/// Replaces the agent's instructions file (0600) with `text`: the one code path for
/// `palisade agents create|edit` and the web UI.
pub fn write_instructions(home: &Home, agent: &str, text: &str) -> Result<(), HostError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if text.len() > MAX_INSTRUCTIONS_BYTES {
        return Err(HostError::Invalid(format!(
            "the instructions are larger than {} KiB; shorten them",
            MAX_INSTRUCTIONS_BYTES / 1024
        )));
    }
    create_private_dir(&home.agent_dir(agent))?;
    let path = instructions_path(home, agent);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| HostError::Io(format!("cannot write {}: {e}", path.display())))?;
    file.write_all(text.as_bytes())
        .map_err(|e| HostError::Io(format!("cannot write {}: {e}", path.display())))
}

pub fn create_private_dir(path: &std::path::Path) -> Result<(), HostError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| HostError::Io(format!("cannot create {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_settings_mean_defaults_and_bad_ones_are_refused() {
        let settings = AgentSettings::from_json(&serde_json::json!({})).unwrap();
        assert_eq!(settings.provider, "anthropic");
        assert_eq!(settings.effective_base_url(), DEFAULT_ANTHROPIC_URL);
        assert!(AgentSettings::from_json(&serde_json::json!({"provider": "x"})).is_err());
        assert!(AgentSettings::from_json(&serde_json::json!({"provider": "openai"})).is_err());
        assert!(AgentSettings::from_json(&serde_json::json!({"base_url": "ftp://x"})).is_err());
        for pattern in [
            "http://*/v1",
            "http://*.com/v1",
            "https://a.*/v1",
            "http:///v1",
        ] {
            let error = AgentSettings::from_json(&serde_json::json!({"base_url": pattern}))
                .unwrap_err()
                .to_string();
            assert!(error.contains("names no one server"), "{pattern}: {error}");
        }
        for endpoint in ["/v1/chat/completions", "/v1/messages/"] {
            let url = format!("http://127.0.0.1:8080{endpoint}");
            let error = AgentSettings::from_json(
                &serde_json::json!({"provider": "openai", "base_url": url}),
            )
            .unwrap_err()
            .to_string();
            assert!(error.contains("ends with the endpoint"), "{error}");
        }
        let openai = AgentSettings::from_json(&serde_json::json!({
            "provider": "openai", "model": "llama", "base_url": "http://127.0.0.1:8080", "other": 1
        }))
        .unwrap();
        assert_eq!(openai.model, "llama");
    }

    #[test]
    fn memory_appends_and_is_capped() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        append_memory(&home, "a", "first").unwrap();
        append_memory(&home, "a", "second\n").unwrap();
        let text = read_agent_file(&memory_path(&home, "a"), MAX_MEMORY_BYTES).unwrap();
        assert_eq!(text, "first\nsecond\n");
        assert!(append_memory(&home, "a", &"x".repeat(MAX_MEMORY_BYTES)).is_err());
        assert!(append_memory(&home, "a", "  ").is_err());
        // A file a person saved without its last newline: the separator counts too, so
        // a note that fits only without it is refused and the file stays readable.
        let path = memory_path(&home, "b");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "n".repeat(MAX_MEMORY_BYTES - 36)).unwrap();
        assert!(append_memory(&home, "b", &"z".repeat(35)).is_err());
        read_agent_file(&path, MAX_MEMORY_BYTES).unwrap();
        append_memory(&home, "b", &"z".repeat(34)).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            MAX_MEMORY_BYTES as u64
        );
        read_agent_file(&path, MAX_MEMORY_BYTES).unwrap();
    }

    /// What an agent writes to its memory comes back in every delivery and is read by
    /// people: terminal escapes, NUL and bidi overrides do not get in.
    #[test]
    fn a_note_keeps_no_control_or_invisible_characters() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        append_memory(&home, "a", "evil\0\x1b[31mred\u{202e}txt.exe\tok\nline two").unwrap();
        let text = read_agent_file(&memory_path(&home, "a"), MAX_MEMORY_BYTES).unwrap();
        assert_eq!(text, "evil[31mredtxt.exe\tok\nline two\n");
        assert!(append_memory(&home, "a", "\u{200b}\x07").is_err());
    }

    /// An agent file is read up to its cap and no further, and something other than a
    /// regular file in its place (a FIFO, which would block a plain read forever) is
    /// refused at once.
    #[test]
    fn an_agent_file_is_read_within_its_cap_and_only_if_regular() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        let path = memory_path(&home, "a");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        let reader = path.clone();
        std::thread::spawn(move || {
            let _ = done.send(read_agent_file(&reader, MAX_MEMORY_BYTES).is_err());
        });
        let refused = finished.recv_timeout(std::time::Duration::from_secs(10));
        assert_eq!(refused, Ok(true), "a FIFO was read as an agent file");
        std::fs::remove_file(&path).unwrap();
        let large = std::fs::File::create(&path).unwrap();
        large.set_len(1 << 30).unwrap();
        let error = read_agent_file(&path, MAX_MEMORY_BYTES).unwrap_err();
        assert!(error.to_string().contains("larger than 64 KiB"), "{error}");
        assert!(append_memory(&home, "a", "note").is_err());
    }
}
