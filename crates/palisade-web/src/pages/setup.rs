//! The first run in the browser: while no agent has a model key, the dashboard starts
//! with a form for one (provider, the key in a password field, optionally a base URL
//! and a model). The key goes straight into the vault's sealed store through
//! [`palisade_host::setup::store_model_key`] (what `palisade up` does with
//! `ANTHROPIC_API_KEY`), granted to the chosen agent; then the provider is asked,
//! through the vault, which models it offers and the agent gets the newest of the
//! default family. The page then offers a first message.

use super::forms;
use super::layout;
use super::secrets::{field, pairs};
use super::{blocking, dashboard, PageError, PageResult};
use crate::WebState;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect};
use maud::{html, Markup};
use palisade_host::setup::{self, ModelKey, DEFAULT_AGENT};
use palisade_policy::{AgentName, SecretValue};
use std::time::Duration;

/// How long storing a key waits for the provider's model list.
const LIST_TIMEOUT: Duration = Duration::from_secs(20);

/// What the first-run form was given (never the key).
#[derive(Clone, Default)]
pub(crate) struct KeyForm {
    agent: String,
    provider: String,
    base_url: String,
    model: String,
}

impl KeyForm {
    /// The form as the agent it names is set up now: its provider, base URL and model
    /// (a model only where one was chosen: Anthropic's default, or an OpenAI-compatible
    /// agent still on it, is left for the provider's list to pick). Drawn blank, the
    /// form said Anthropic for an agent just set up for a local server, and storing the
    /// key with it put the agent back on Anthropic (review, a new user).
    pub(crate) fn of_agent(agent: &palisade_store::AgentRecord) -> Option<KeyForm> {
        let settings = palisade_host::AgentSettings::from_json(&agent.settings).ok()?;
        let chosen = settings.provider == "openai" && !settings.has_anthropics_default_at_openai();
        Some(KeyForm {
            agent: agent.name.to_string(),
            provider: settings.provider.clone(),
            base_url: settings.base_url.clone().unwrap_or_default(),
            model: if chosen {
                settings.model.clone()
            } else {
                String::new()
            },
        })
    }
}

/// The first-run card: why nothing works yet, and the form that fixes it.
pub(crate) fn card(agents: &[AgentName], form: Option<&KeyForm>, error: Option<&str>) -> Markup {
    let default = KeyForm {
        agent: if agents.iter().any(|a| a.as_str() == DEFAULT_AGENT) {
            DEFAULT_AGENT.into()
        } else {
            agents.first().map(ToString::to_string).unwrap_or_default()
        },
        provider: "anthropic".into(),
        ..KeyForm::default()
    };
    let form = form.unwrap_or(&default);
    let agent_options: Vec<(String, String)> = agents
        .iter()
        .map(|a| (a.to_string(), a.to_string()))
        .collect();
    let providers = vec![
        ("anthropic".to_string(), "Anthropic".to_string()),
        (
            "openai".to_string(),
            "OpenAI-compatible (also local servers)".to_string(),
        ),
    ];
    html! {
        section.card.first-run #first-run {
            h2 { "Add a model key so your agents can think" }
            p {
                "No agent has a key for its model API yet. Paste one here: it goes straight into the vault's "
                "sealed store, is granted to the agent you pick, and is never shown again. Agents never hold it; "
                "the vault adds it to their requests."
            }
            @if agents.is_empty() {
                p.muted { "First " a href="/agents/new" { "create an agent" } "." }
            } @else {
                (forms::error_box(error))
                form #key-form method="post" action="/setup/model-key" autocomplete="off" {
                    (layout::csrf_field())
                    div.form-grid {
                        (forms::select("Provider", "provider", &providers, &form.provider, ""))
                        (forms::select("Agent", "agent", &agent_options, &form.agent, "the agent that gets the key"))
                        (forms::password("API key", "key", "from your provider's console (a local server without keys: any text)"))
                        (forms::text("Base URL", "base_url", &form.base_url, "empty: https://api.anthropic.com; for an OpenAI-compatible server its URL, e.g. http://127.0.0.1:8080/v1"))
                        (forms::text("Model", "model", &form.model, "empty: picked from the provider's list (the newest Claude Sonnet from Anthropic, the newest model from an OpenAI-compatible server)"))
                    }
                    div.form-actions { button.primary #store-key type="submit" { "Store the key" } }
                }
            }
        }
    }
}

/// `POST /setup/model-key`.
pub(crate) async fn store_key(State(state): State<WebState>, body: Bytes) -> PageResult {
    let pairs = pairs(&body);
    let form = KeyForm {
        agent: field(&pairs, "agent").trim().into(),
        provider: field(&pairs, "provider").trim().into(),
        base_url: field(&pairs, "base_url").trim().into(),
        model: field(&pairs, "model").trim().into(),
    };
    let typed_key = field(&pairs, "key").trim().to_string();
    let new_key = !typed_key.is_empty();
    // The agent's settings before the form, put back if the provider refuses the key:
    // a refused form changes nothing (it left the agent on the typed model and URL).
    let before = {
        let store = state.store.clone();
        let agent = form.agent.clone();
        blocking(move || {
            Ok(AgentName::new(&agent)
                .ok()
                .and_then(|name| store.get_agent(&name).ok())
                .map(|record| (record.name, record.settings)))
        })
        .await?
    };
    let store = state.store.clone();
    let request = ModelKey {
        agent: form.agent.clone(),
        provider: form.provider.clone(),
        base_url: Some(form.base_url.clone()),
        key: (!typed_key.is_empty()).then(|| SecretValue::new(typed_key)),
        model: Some(form.model.clone()),
    };
    let stored =
        blocking(move || setup::store_model_key(&store, request).map_err(PageError::from)).await;
    let agent = match stored {
        Ok(agent) => agent,
        Err(error) => {
            let message = error.for_form()?;
            return dashboard::render(&state, Some((&form, &message)), None).await;
        }
    };
    state.model_lists.forget_agent(agent.name.as_str());
    let target = format!("/?ready={}", agent.name);
    // The provider's model list, read with the new key: it picks the model when none
    // was given, and tells whether the provider takes the key at all.
    let socket = state.host.vault_socket(&agent.name);
    // `Some(listed)`: the model typed is not among them.
    let listing = match form.model.is_empty() {
        true => palisade_host::models::choose_for(&state.store, &socket, &agent.name, LIST_TIMEOUT)
            .await
            .map(|_| None),
        false => match palisade_host::settings::AgentSettings::from_json(&agent.settings) {
            Ok(settings) => palisade_host::models::list(&socket, &settings, LIST_TIMEOUT)
                .await
                .map(|listed| {
                    (!listed.iter().any(|m| m.id == settings.model))
                        .then(|| listed.into_iter().map(|m| m.id).collect::<Vec<_>>())
                }),
            Err(_) => Ok(None),
        },
    };
    let checked = match listing {
        Ok(None) => Listing::Listed,
        Ok(Some(listed)) => Listing::NotListed { listed },
        // 401 is the provider's: the vault answers 407 and 403 for its own refusals.
        Err(palisade_host::models::ModelsError::Refused {
            status: status @ 401,
            message,
            ..
        }) if new_key => {
            // A key the provider refuses is not kept: the form comes back to fix it.
            let store = state.store.clone();
            let name = palisade_host::setup::secret_name(&form.provider).to_string();
            let _ = blocking(move || {
                store.delete_secret(&name)?;
                if let Some((agent, settings)) = before {
                    store.update_agent_settings(&agent, &settings)?;
                }
                Ok(())
            })
            .await;
            state.model_lists.forget_agent(agent.name.as_str());
            let said: String = message.chars().take(200).collect();
            let mut refused = format!(
                "The provider refused this key ({status}: {said}). It was not kept, and the agent was left as it was: check the key and paste it again."
            );
            // Anthropic's key header means nothing to an OpenAI-compatible server,
            // which then refuses a key that is right.
            let anthropic_elsewhere = form.provider == "anthropic"
                && !form.base_url.is_empty()
                && !form.base_url.contains("api.anthropic.com");
            if anthropic_elsewhere {
                refused.push_str(" If this server speaks the OpenAI API (its models are at /v1/models and it answers /v1/chat/completions), choose the provider \"OpenAI-compatible\": the key is then sent as a bearer token.");
            }
            return dashboard::render(&state, Some((&form, &refused)), None).await;
        }
        Err(error) => {
            tracing::warn!(agent = %agent.name, %error, "could not list the provider's models after storing a key");
            let local = matches!(
                &error,
                palisade_host::models::ModelsError::Refused { kind, .. }
                    if kind == "local_upstream_refused"
            );
            let host = palisade_host::settings::AgentSettings::from_json(&agent.settings)
                .ok()
                .and_then(|settings| setup::model_server_allowance(&settings));
            match (local, host) {
                (true, Some(host)) => Listing::LocalRefused { host },
                // What the vault or the provider said (nothing answered, a timeout), on
                // the card: "could not be read" alone left the person guessing.
                _ => Listing::Unlisted {
                    reason: error.to_string().chars().take(300).collect(),
                },
            }
        }
    };
    state
        .key_checks
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .insert(agent.name.to_string(), checked);
    Ok(Redirect::to(&target).into_response())
}

/// `POST /setup/allow-local`: the first-run card's button for a local model server the
/// vault refused. The address is remembered in the home (in force at once, as `palisade
/// vault local allow` does), then the model list is read again; the agent gets the
/// newest model when its own is not listed (an OpenAI-compatible agent still on the
/// default Claude model).
pub(crate) async fn allow_local(State(state): State<WebState>, body: Bytes) -> PageResult {
    let pairs = pairs(&body);
    let agent = field(&pairs, "agent").trim().to_string();
    let name = AgentName::new(&agent).map_err(|e| PageError::BadRequest(e.to_string()))?;
    // What is allowed is worked out here from the agent's own model server, never taken
    // from the form (a forged one could ask for `*`).
    let settings = {
        let (store, name) = (state.store.clone(), name.clone());
        blocking(move || {
            let record = store.get_agent(&name)?;
            palisade_host::settings::AgentSettings::from_json(&record.settings)
                .map_err(|e| PageError::BadRequest(e.to_string()))
        })
        .await?
    };
    let pattern = setup::model_server_allowance(&settings)
        .ok_or_else(|| PageError::BadRequest("the agent's base URL names no host".into()))?;
    {
        let store = state.store.clone();
        blocking(move || Ok(store.allow_local_upstream(&pattern)?)).await?;
    }
    state.model_lists.forget_agent(name.as_str());
    let socket = state.host.vault_socket(&name);
    let listed = palisade_host::models::list(&socket, &settings, LIST_TIMEOUT).await;
    // Anthropic's default on an OpenAI-compatible server was never chosen: it is
    // replaced by the server's newest. A model the person typed is not: the card says
    // it is not listed, and which are.
    let defaulted = settings.has_anthropics_default_at_openai();
    // The key the first-run form stored moments ago was never checked (the vault could
    // not reach the server): refused now, it is not kept, as the form does when it can
    // check at once, and the form comes back to paste the right one.
    let unchecked_key = matches!(
        state
            .key_checks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(name.as_str()),
        Some(Listing::LocalRefused { .. })
    );
    if let (
        Err(palisade_host::models::ModelsError::Refused {
            status: 401,
            message,
            ..
        }),
        true,
    ) = (&listed, unchecked_key)
    {
        let (store, agent) = (state.store.clone(), name.clone());
        let _ = blocking(move || {
            let record = store.get_agent(&agent)?;
            let secrets = store.list_secrets()?;
            if let Some(secret) = setup::model_key_secret(&record, &secrets) {
                store.delete_secret(&secret.name)?;
            }
            Ok(())
        })
        .await;
        state.model_lists.forget_agent(name.as_str());
        state
            .key_checks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(name.as_str());
        let said: String = message.chars().take(200).collect();
        let refused = format!(
            "The address is allowed now, and the server refused the key stored ({said}). It was not kept: paste the right key."
        );
        let form = KeyForm {
            agent: name.to_string(),
            provider: settings.provider.clone(),
            base_url: settings.base_url.clone().unwrap_or_default(),
            model: String::new(),
        };
        return dashboard::render(&state, Some((&form, &refused)), None).await;
    }
    let checked = match listed {
        Err(palisade_host::models::ModelsError::Refused {
            status: 401,
            message,
            ..
        }) => Listing::KeyRefused {
            said: message.chars().take(200).collect(),
        },
        Ok(models) if models.iter().any(|m| m.id == settings.model) => Listing::Listed,
        Ok(models) if !defaulted => Listing::NotListed {
            listed: models.into_iter().map(|m| m.id).collect(),
        },
        Ok(_) => {
            match palisade_host::models::choose_for(&state.store, &socket, &name, LIST_TIMEOUT)
                .await
            {
                Ok(_) => Listing::Listed,
                Err(error) => Listing::Unlisted {
                    reason: error.to_string().chars().take(300).collect(),
                },
            }
        }
        Err(error) => Listing::Unlisted {
            reason: error.to_string().chars().take(300).collect(),
        },
    };
    state
        .key_checks
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .insert(name.to_string(), checked);
    Ok(Redirect::to(&format!("/?ready={name}")).into_response())
}

/// Whether the provider's model list was read after a key was stored.
#[derive(Clone)]
pub(crate) enum Listing {
    Listed,
    /// It was read, and the model given is not among `listed`.
    NotListed {
        listed: Vec<String>,
    },
    /// The provider refused the key stored (once the vault could reach it), saying
    /// `said`.
    KeyRefused {
        said: String,
    },
    /// It could not be read, for `reason`.
    Unlisted {
        reason: String,
    },
    /// The vault refused to reach `host`: a local address, which agents reach only when
    /// `palisade up` allows it.
    LocalRefused {
        host: String,
    },
}

/// The card after a key was stored: which model the agent uses, and a first message.
/// `model` is `None` when the agent has none of its provider's yet (an OpenAI-compatible
/// server whose list could not be read leaves the default Claude model in place).
/// `anthropic`: the provider is Anthropic's API (whose list has model families).
pub(crate) fn ready_card(
    agent: &str,
    model: Option<&str>,
    anthropic: bool,
    listing: &Listing,
) -> Markup {
    let listed = matches!(listing, Listing::Listed);
    html! {
        section.card.first-run.ready #ready {
            @match model {
                Some(model) => {
                    @match listing {
                        Listing::Listed => { h2 { (agent) " is ready" } }
                        Listing::Unlisted { .. } => { h2 { (agent) " has its key; its model is not checked yet" } }
                        Listing::LocalRefused { .. } => { h2 { (agent) " cannot reach its model yet" } }
                        Listing::NotListed { .. } => { h2 { (agent) "'s model is not one the server lists" } }
                        Listing::KeyRefused { .. } => { h2 { "The provider refused " (agent) "'s key" } }
                    }
                    p {
                        "The key is in the vault. " (agent) " thinks with " code #ready-model { (model) }
                        @if listed && anthropic { ", the newest of its family the provider lists." }
                        @else if listed { ", a model the server lists." }
                        @else { "." }
                    }
                }
                None => {
                    h2 { (agent) " needs a model" }
                    p #no-model {
                        "The key is in the vault, but " (agent) " has no model of its provider yet: its model list could not be read. Once it can be, choose one on "
                        a href={ "/agents/" (agent) } { "the agent page" } "."
                    }
                }
            }
            @match listing {
                Listing::Listed => {}
                Listing::NotListed { listed } => {
                    p.error-box #not-listed {
                        "The server lists " (listed.len()) " model(s), and " code { (model.unwrap_or_default()) } " is not one of them"
                        @if !listed.is_empty() {
                            " (" (listed.iter().take(8).cloned().collect::<Vec<_>>().join(", ")) @if listed.len() > 8 { ", …" } ")"
                        }
                        ": a message to it would fail. Choose one on "
                        a href={ "/agents/" (agent) } { "the agent page" } "."
                    }
                }
                Listing::KeyRefused { said } => {
                    p.error-box #key-refused {
                        "Now that the vault reaches the server, it refuses the key stored (" (said) "). Replace it: on "
                        a href="/vault" { "the Vault page" } ", Rotate the agent's model key, then come back to choose a model on "
                        a href={ "/agents/" (agent) } { "the agent page" } "."
                    }
                }
                Listing::Unlisted { reason } => {
                    p.error-box #unlisted { "The provider's model list could not be read through the vault (" (reason) "), so the model was not checked. If the first message fails, check that the model server runs, the key and the model on the agent page." }
                }
                Listing::LocalRefused { host } => {
                    div.error-box #local-refused {
                        p {
                            "The vault refused to reach " code { (host) } ": it is a local address (this machine or your network), which agents reach only once you allow it. Allow it if the model server there is yours; it is in force at once and remembered (" code { "palisade vault local allow " (host) } " does the same, " code { "palisade vault local forget " (host) } " undoes it)."
                        }
                        form method="post" action="/setup/allow-local" {
                            (layout::csrf_field())
                            input type="hidden" name="agent" value=(agent);
                            button.primary #allow-local type="submit" { "Let agents reach " (host) }
                        }
                    }
                }
            }
            div.form-actions {
                a.button href={ "/agents/" (agent) } { "Agent settings" }
                a.button.primary #first-message href={ "/chat?agent=" (agent) } { "Send a first message" }
            }
        }
    }
}
