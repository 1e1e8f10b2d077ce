//! The first run: the default agent, and the model key that lets agents think.
//!
//! `palisade up` (from `ANTHROPIC_API_KEY`, `--anthropic-key-file` or a hidden prompt)
//! and the web UI's first-run form store a key the same way, here: the key goes
//! straight into the vault's sealed store as a secret for the host of the agent's
//! model API (with the port, when the base URL names one) and the paths under its base
//! URL, granted to that agent, and the agent's provider and base URL are set to match.
//! Nothing else ever holds the key; it is never shown again.
//!
//! Which agents can think is decided the way the vault decides: an agent has a model
//! key when a secret granted to it names the host and port of its model API.

use crate::agents::{self, AgentDraft};
use crate::settings::AgentSettings;
use crate::HostError;
use palisade_policy::{AgentName, HostPattern, SecretValue};
use palisade_store::input::SecretDraft;
use palisade_store::{AgentRecord, SecretRecord, Store, StoreError};

/// The agent `palisade up` creates on a first start.
pub const DEFAULT_AGENT: &str = "assistant";

/// What a first-run form (or `palisade up`) gives.
#[derive(Debug)]
pub struct ModelKey {
    /// The agent that gets the key.
    pub agent: String,
    /// `anthropic` or `openai` (any OpenAI-compatible server).
    pub provider: String,
    /// The API's URL; empty or `None` for Anthropic's own.
    pub base_url: Option<String>,
    /// The key (refused when `None`: an empty form field).
    pub key: Option<SecretValue>,
    /// The model to use; `None` to choose from the provider's list once the key is in.
    pub model: Option<String>,
}

/// The name the key's secret gets.
pub fn secret_name(provider: &str) -> &'static str {
    if provider == "openai" {
        "openai"
    } else {
        "anthropic"
    }
}

/// The host of an agent's model API (`api.anthropic.com`), lower case, no port.
pub fn model_host(settings: &AgentSettings) -> Option<String> {
    let url = settings.effective_base_url();
    let uri: http::Uri = url.parse().ok()?;
    uri.host().map(|h| {
        h.trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase()
    })
}

/// The host pattern the model key is stored with: the base URL's host, and its port
/// whenever the base URL names one (`127.0.0.1:8080` for `http://127.0.0.1:8080/v1`,
/// `[::1]:8080`), local or not, so a key for a local provider goes to that server and
/// not to every service of the machine. A base URL without a port gives the host
/// alone (`api.anthropic.com`, every port), as a secret created by hand would. The
/// port is taken as written, so one out of range is refused by the pattern's parser
/// rather than dropped.
pub fn model_key_host_pattern(settings: &AgentSettings) -> Option<String> {
    let uri: http::Uri = settings.effective_base_url().parse().ok()?;
    let authority = uri.authority()?.as_str();
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, rest)| rest);
    // What follows the host: nothing or ":PORT" (an IPv6 address's colons are inside
    // its brackets).
    let after_host = match authority.rfind(']') {
        Some(end) => &authority[end + 1..],
        None => authority.find(':').map_or("", |colon| &authority[colon..]),
    };
    let host = model_host(settings)?;
    Some(match after_host.strip_prefix(':') {
        None => host,
        Some(port) if host.contains(':') => format!("[{host}]:{port}"),
        Some(port) => format!("{host}:{port}"),
    })
}

/// What `--allow-local-upstream` must name for the agent's model server to be reached
/// at a local address: its host with its port, that port only (review: a name alone
/// opened every service on `localhost` to every agent); `None` for a host that is a
/// pattern (`*`), which names no one server.
pub fn model_server_allowance(settings: &AgentSettings) -> Option<String> {
    let host = model_host(settings)?;
    let port = model_port(settings)?;
    if host.contains('*') {
        return None;
    }
    Some(match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(_)) => format!("[{host}]:{port}"),
        _ => format!("{host}:{port}"),
    })
}

/// The port the agent's model requests go to: the base URL's, or its scheme's default.
pub fn model_port(settings: &AgentSettings) -> Option<u16> {
    let uri: http::Uri = settings.effective_base_url().parse().ok()?;
    uri.port_u16().or(match uri.scheme_str()? {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    })
}

/// The paths the model key is sent on: those under the base URL's path (`/v1/*` for
/// `http://127.0.0.1:8080/v1`), none for a base URL without one. A base URL without a
/// port gives a key for its host on every port, so a key for a local provider
/// (`http://127.0.0.1/v1`) would otherwise go with any request an agent's tool makes
/// to any local service.
pub fn model_key_paths(settings: &AgentSettings) -> Option<String> {
    let uri: http::Uri = settings.effective_base_url().parse().ok()?;
    let path = uri.path().trim_end_matches('/');
    (!path.is_empty()).then(|| format!("{path}/*"))
}

/// The secret granted to `agent` that the vault would inject into its model API
/// requests, if there is one.
pub fn model_key_secret<'a>(
    agent: &AgentRecord,
    secrets: &'a [SecretRecord],
) -> Option<&'a SecretRecord> {
    let settings = AgentSettings::from_json(&agent.settings).ok()?;
    let host = model_host(&settings)?;
    let port = model_port(&settings)?;
    secrets.iter().find(|secret| {
        secret.agents.contains(&agent.name)
            && HostPattern::parse(&secret.host_pattern)
                .is_ok_and(|pattern| pattern.matches(&host, port))
    })
}

/// What to run so `agent` gets a key for its model API, or `None` when it has one: a
/// secret another agent already has for that server is named to be granted; else the
/// command to create one, with the host, paths and injection the setup form would use.
pub fn model_key_advice(agent: &AgentRecord, secrets: &[SecretRecord]) -> Option<String> {
    if model_key_secret(agent, secrets).is_some() {
        return None;
    }
    let settings = AgentSettings::from_json(&agent.settings).ok()?;
    let (host, port) = (model_host(&settings)?, model_port(&settings)?);
    let name = &agent.name;
    let existing = secrets.iter().find(|secret| {
        HostPattern::parse(&secret.host_pattern).is_ok_and(|pattern| pattern.matches(&host, port))
    });
    if let Some(secret) = existing {
        return Some(format!(
            "secret {secret} (for {pattern}) is that server's key: grant it with `palisade secrets grant {secret} --agent {name}`",
            secret = secret.name,
            pattern = secret.host_pattern,
        ));
    }
    let pattern = model_key_host_pattern(&settings)?;
    let paths = model_key_paths(&settings)
        .map(|paths| format!(" --path-pattern '{paths}'"))
        .unwrap_or_default();
    let inject = if settings.provider == "openai" {
        "bearer"
    } else {
        "anthropic"
    };
    // A name no secret has yet (the command said `--name openai` beside an `openai`
    // secret for another server, and failed), as the first-run form picks one.
    let base = secret_name(&settings.provider);
    let taken = |candidate: &str| secrets.iter().any(|secret| secret.name == candidate);
    let secret = std::iter::once(base.to_string())
        .chain(std::iter::once(format!("{base}-{name}")))
        .chain((2..100).map(|n| format!("{base}-{name}-{n}")))
        .find(|candidate| !taken(candidate))?;
    Some(format!(
        "add one on the web UI (the dashboard's first-run form, or Vault, Add a secret) or with `palisade secrets create --name {secret} --host-pattern {pattern}{paths} --inject {inject} --agent {name} --value-file FILE`"
    ))
}

/// Whether no agent at all has a model key (the dashboard's first-run case).
pub fn needs_model_key(store: &Store) -> Result<bool, HostError> {
    let secrets = store.list_secrets()?;
    let agents = store.list_agents()?;
    Ok(!agents
        .iter()
        .any(|agent| model_key_secret(agent, &secrets).is_some()))
}

/// Creates the default agent if there are no agents at all; returns whether it did.
pub fn ensure_default_agent(store: &Store) -> Result<bool, HostError> {
    if !store.list_agents()?.is_empty() {
        return Ok(false);
    }
    agents::create_checked(store, DEFAULT_AGENT, &AgentDraft::default(), false)?;
    Ok(true)
}

/// Stores the key for `form.agent` and points the agent at the provider. Everything is
/// checked before anything is written; the key is sealed by the store. Returns the
/// agent as it is now.
pub fn store_model_key(store: &Store, form: ModelKey) -> Result<AgentRecord, HostError> {
    let name = AgentName::new(&form.agent).map_err(|e| HostError::Invalid(e.to_string()))?;
    let agent = store.get_agent(&name)?;
    let provider = form.provider.trim().to_string();
    if !matches!(provider.as_str(), "anthropic" | "openai") {
        return Err(HostError::Invalid(format!(
            "provider {:?} is not supported: use anthropic or openai",
            palisade_store::input::clean(&provider)
        )));
    }
    let base_url = form
        .base_url
        .as_deref()
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(str::to_string);
    let draft = AgentDraft {
        provider: Some(provider.clone()),
        // An empty base URL means Anthropic's own API.
        base_url: Some(base_url.clone().unwrap_or_default()),
        model: form.model.clone().filter(|m| !m.trim().is_empty()),
        ..AgentDraft::default()
    };
    // Check the settings the agent will have, and the secret, before writing anything.
    let current = AgentSettings::from_json(&agent.settings).unwrap_or_default();
    let mut planned = current.clone();
    planned.provider = provider.clone();
    planned.base_url = base_url.map(|u| u.trim_end_matches('/').to_string());
    if let Some(model) = &draft.model {
        planned.model = model.trim().to_string();
    }
    planned.validate()?;
    // An agent that has a key for the model API it uses is not moved to another by the
    // first-run form (a second tab, an old page): that is a change of the agent's, made
    // on its page, which says so.
    let has_key = model_key_secret(&agent, &store.list_secrets()?).is_some();
    if has_key
        && (planned.provider != current.provider
            || planned.effective_base_url() != current.effective_base_url())
    {
        return Err(HostError::Invalid(format!(
            "agent {name} already has a key for its model API ({} at {}); to move it to another, change its provider on its page or with `palisade agents edit {name} --provider …`, then add that API's key",
            current.provider,
            current.effective_base_url()
        )));
    }
    let host = model_key_host_pattern(&planned).ok_or_else(|| {
        HostError::Invalid(
            "the base URL has no host; give a URL such as https://api.anthropic.com".into(),
        )
    })?;
    if form.key.is_none() {
        return Err(HostError::Invalid(
            "the API key is empty; paste the key from your provider's console".into(),
        ));
    }
    // The secret's name: the provider's, or, when a secret has that name and this agent
    // has no key for its model API (a mistyped port in an earlier form, the base URL
    // since corrected on the agent page), the provider's and the agent's. No secret is
    // ever replaced or deleted here; a key that works is kept, and the form says how
    // to rotate it.
    let needs_key = model_key_secret(&agent, &store.list_secrets()?).is_none();
    let base = secret_name(&provider);
    let names = std::iter::once(base.to_string())
        .chain(std::iter::once(format!("{base}-{name}")))
        .chain((2..10).map(|n| format!("{base}-{name}-{n}")));
    let mut chosen = None;
    for candidate in names {
        let checked = SecretDraft {
            name: candidate.clone(),
            host_pattern: host.clone(),
            path_pattern: model_key_paths(&planned),
            inject: if provider == "openai" {
                "bearer"
            } else {
                "anthropic"
            }
            .into(),
            agents: vec![name.to_string()],
            priority: 0,
            // The model key: every agent, research ones too, needs it to think.
            sensitive: false,
        }
        .check()?;
        match store.check_new_secret(&checked) {
            Ok(()) => {
                chosen = Some(checked);
                break;
            }
            Err(StoreError::Duplicate { .. }) if needs_key => continue,
            Err(StoreError::Duplicate { .. }) => {
                let existing = store.get_secret(base)?;
                return Err(HostError::Invalid(format!(
                    "{name} has a model key already (secret {base}, for {}); rotate its value on the Vault page (or `palisade secrets rotate {base}`) instead",
                    existing.host_pattern
                )));
            }
            Err(other) => return Err(other.into()),
        }
    }
    let secret = Some(chosen.ok_or_else(|| {
        HostError::Invalid(format!(
            "secrets {base} and {base}-{name} to {base}-{name}-9 exist already; delete one that is not used on the Vault page"
        ))
    })?);
    if let (Some(secret), Some(key)) = (secret, form.key) {
        store.create_secret(secret.with_value(key))?;
    }
    // The model, when none was given, is picked from the provider's list right after.
    agents::edit_as_is(store, name.as_str(), &draft)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Points the default agent at `base_url` (empty: Anthropic's own API).
    fn point_at(store: &Store, base_url: &str) {
        agents::edit(
            store,
            DEFAULT_AGENT,
            &AgentDraft {
                base_url: Some(base_url.to_string()),
                ..AgentDraft::default()
            },
        )
        .unwrap();
    }

    /// What lets agents reach a model server names its port, a name's too (review: the
    /// web UI's button allowed `localhost`, every service of the machine, for a server
    /// at `localhost:PORT`).
    #[test]
    fn the_allowance_for_a_model_server_names_its_port() {
        for (base_url, allowance) in [
            ("http://localhost:11434/v1", "localhost:11434"),
            ("http://127.0.0.1:8080/v1", "127.0.0.1:8080"),
            ("http://127.0.0.1/v1", "127.0.0.1:80"),
            ("https://models.lan/v1", "models.lan:443"),
            ("http://[::1]:8080", "[::1]:8080"),
        ] {
            let settings = AgentSettings {
                provider: "openai".into(),
                base_url: Some(base_url.into()),
                ..AgentSettings::default()
            };
            assert_eq!(
                model_server_allowance(&settings).as_deref(),
                Some(allowance),
                "{base_url}"
            );
        }
    }

    #[test]
    fn a_stored_key_is_the_agents_model_key_and_a_second_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&palisade_store::Home::at(dir.path().join("home"))).unwrap();
        assert!(ensure_default_agent(&store).unwrap());
        assert!(!ensure_default_agent(&store).unwrap());
        assert!(needs_model_key(&store).unwrap());
        let form = |key: Option<&str>, url: Option<&str>| ModelKey {
            agent: DEFAULT_AGENT.into(),
            provider: "anthropic".into(),
            base_url: url.map(str::to_string),
            key: key.map(|k| SecretValue::new(k.to_string())),
            model: None,
        };
        assert!(store_model_key(&store, form(None, None)).is_err());
        let agent =
            store_model_key(&store, form(Some("sk-1"), Some("https://localhost:9/"))).unwrap();
        assert_eq!(agent.settings["base_url"], "https://localhost:9");
        let secret = store.get_secret("anthropic").unwrap();
        assert_eq!(secret.host_pattern, "localhost:9");
        assert_eq!(secret.injection, "anthropic");
        assert!(!needs_model_key(&store).unwrap());
        // A key that works is not replaced by the form.
        let again =
            store_model_key(&store, form(Some("sk-2"), Some("https://localhost:9/"))).unwrap_err();
        assert!(again.to_string().contains("rotate"), "{again}");
        // Nor is the agent moved to another API by it (a second tab, an old page).
        let moved = store_model_key(&store, form(Some("sk-2"), None)).unwrap_err();
        assert!(
            moved
                .to_string()
                .contains("already has a key for its model API"),
            "{moved}"
        );
        let unchanged = store
            .get_agent(&AgentName::new(DEFAULT_AGENT).unwrap())
            .unwrap();
        assert_eq!(unchanged.settings["base_url"], "https://localhost:9");
        // The first had a mistyped port, corrected on the agent page: the form again,
        // for that server, stores a key of the agent's own beside the first (which is
        // never deleted here).
        point_at(&store, "https://localhost:10");
        assert!(needs_model_key(&store).unwrap());
        store_model_key(&store, form(Some("sk-2"), Some("https://localhost:10/"))).unwrap();
        assert_eq!(
            store.get_secret("anthropic").unwrap().host_pattern,
            "localhost:9"
        );
        let second = store.get_secret("anthropic-assistant").unwrap();
        assert_eq!(second.host_pattern, "localhost:10");
        assert!(!needs_model_key(&store).unwrap());
        // Pointing the agent elsewhere leaves it without a key for that host.
        point_at(&store, "");
        assert!(needs_model_key(&store).unwrap());
    }

    /// A key for a provider at `http://127.0.0.1:8080/v1` is sent to port 8080 on
    /// `/v1/…` only, not with a request to any other service of that host.
    #[test]
    fn a_model_key_is_sent_on_its_base_urls_port_and_paths_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&palisade_store::Home::at(dir.path().join("home"))).unwrap();
        assert!(ensure_default_agent(&store).unwrap());
        store_model_key(
            &store,
            ModelKey {
                agent: DEFAULT_AGENT.into(),
                provider: "openai".into(),
                base_url: Some("http://127.0.0.1:8080/v1/".into()),
                key: Some(SecretValue::new("sk-local".to_string())),
                model: Some("llama".into()),
            },
        )
        .unwrap();
        let secret = store.get_secret("openai").unwrap();
        assert_eq!(secret.host_pattern, "127.0.0.1:8080");
        assert_eq!(secret.path_pattern.as_deref(), Some("/v1/*"));
        let pattern = HostPattern::parse(&secret.host_pattern).unwrap();
        assert!(pattern.matches("127.0.0.1", 8080));
        assert!(!pattern.matches("127.0.0.1", 8081));
        assert!(!pattern.matches("127.0.0.1", 80));
        let agent = store
            .get_agent(&AgentName::new(DEFAULT_AGENT).unwrap())
            .unwrap();
        let secrets = store.list_secrets().unwrap();
        assert!(model_key_secret(&agent, &secrets).is_some());
        // The same key does not count as the model key of a server on another port.
        point_at(&store, "http://127.0.0.1:9090/v1");
        let agent = store
            .get_agent(&AgentName::new(DEFAULT_AGENT).unwrap())
            .unwrap();
        assert!(model_key_secret(&agent, &secrets).is_none());
        // The advice for it: no secret is that server's, so the one to create, with
        // the host, port, paths and injection the form would have used, under a name
        // no secret has (`openai` is the other server's).
        assert_eq!(
            model_key_advice(&agent, &secrets).unwrap(),
            "add one on the web UI (the dashboard's first-run form, or Vault, Add a secret) or with `palisade secrets create --name openai-assistant --host-pattern 127.0.0.1:9090 --path-pattern '/v1/*' --inject bearer --agent assistant --value-file FILE`"
        );
        point_at(&store, "http://127.0.0.1:8080/v1");
        let agent = store
            .get_agent(&AgentName::new(DEFAULT_AGENT).unwrap())
            .unwrap();
        assert_eq!(model_key_advice(&agent, &secrets), None);
        let bare = AgentSettings {
            base_url: Some("https://localhost:9".into()),
            ..AgentSettings::default()
        };
        assert_eq!(model_key_paths(&bare), None);
    }

    /// The pattern the key gets for each shape of base URL: the port whenever the URL
    /// names one (IPv6 in brackets), the host alone when it names none.
    #[test]
    fn the_model_keys_host_pattern_carries_the_base_urls_port() {
        let pattern = |url: &str| {
            model_key_host_pattern(&AgentSettings {
                base_url: Some(url.into()),
                ..AgentSettings::default()
            })
        };
        let port = |url: &str| {
            model_port(&AgentSettings {
                base_url: Some(url.into()),
                ..AgentSettings::default()
            })
        };
        assert_eq!(
            pattern("http://127.0.0.1:8080/v1").as_deref(),
            Some("127.0.0.1:8080")
        );
        assert_eq!(
            pattern("http://[::1]:8080/v1").as_deref(),
            Some("[::1]:8080")
        );
        assert_eq!(
            pattern("https://LLM.example.com:8443").as_deref(),
            Some("llm.example.com:8443")
        );
        assert_eq!(
            pattern("https://api.anthropic.com").as_deref(),
            Some("api.anthropic.com")
        );
        assert_eq!(pattern("http://localhost/v1").as_deref(), Some("localhost"));
        assert_eq!(port("http://localhost/v1"), Some(80));
        assert_eq!(port("https://api.anthropic.com"), Some(443));
        assert_eq!(port("http://[::1]:8080/v1"), Some(8080));
        assert_eq!(
            model_key_host_pattern(&AgentSettings::default()).as_deref(),
            Some("api.anthropic.com")
        );
        // A port the key cannot be scoped to is refused, never dropped (which would
        // send the key to every port).
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&palisade_store::Home::at(dir.path().join("home"))).unwrap();
        assert!(ensure_default_agent(&store).unwrap());
        for (url, why) in [
            ("http://127.0.0.1:99999/v1", "above 65535"),
            ("http://127.0.0.1:0/v1", "port 0"),
        ] {
            let refused = store_model_key(
                &store,
                ModelKey {
                    agent: DEFAULT_AGENT.into(),
                    provider: "openai".into(),
                    base_url: Some(url.into()),
                    key: Some(SecretValue::new("sk-local".to_string())),
                    model: Some("llama".into()),
                },
            )
            .map(|_| ())
            .unwrap_err()
            .to_string();
            assert!(refused.contains(why), "{url}: {refused}");
            assert!(!refused.contains('\n'), "{url}: {refused}");
        }
        assert!(store.list_secrets().unwrap().is_empty());
    }
}
