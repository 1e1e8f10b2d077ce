//! Changing channels, the chats linked to agents, approvers and allowed senders: the
//! one implementation behind `palisade channels …`, `palisade approvers …` and the web
//! UI's Channels page, so both check the same things (a channel name that fits in a
//! URL, base URLs that never carry a token in clear, a Discord public key that is a
//! key, the credentials each platform needs) and read the running host's state the
//! same way. Credentials arrive as [`SecretValue`]s (read from files, stdin or a form
//! field, never argv) and are sealed by the store.

use crate::hub::ChannelStatus;
use palisade_approvals::Platform;
use palisade_policy::{AgentName, SecretValue};
use palisade_store::{
    ApproverRecord, ChannelLink, ChannelRecord, Home, NewChannel, SenderRecord, Store, StoreError,
};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What to do with a message from someone not allowed to talk to the linked agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownSenders {
    /// Dropped (logged).
    Drop,
    /// Dropped, and the agent's approvers are asked whether the person may talk to it.
    Ask,
}

impl std::str::FromStr for UnknownSenders {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "drop" => Ok(UnknownSenders::Drop),
            "ask" => Ok(UnknownSenders::Ask),
            other => Err(format!(
                "{:?} is not a choice for unknown senders: use drop or ask",
                other.chars().take(20).collect::<String>()
            )),
        }
    }
}

impl UnknownSenders {
    pub fn as_str(self) -> &'static str {
        match self {
            UnknownSenders::Drop => "drop",
            UnknownSenders::Ask => "ask",
        }
    }
}

/// A channel to add, with its credentials.
pub struct AddChannel {
    pub name: String,
    pub platform: Platform,
    /// Telegram's and Discord's bot token; Slack's bot token (`xoxb-…`).
    pub token: SecretValue,
    /// Slack: the app-level token (`xapp-…`) for Socket Mode.
    pub app_token: Option<SecretValue>,
    /// Slack: the signing secret for the Events API over HTTPS.
    pub signing_secret: Option<SecretValue>,
    pub api_base: Option<String>,
    /// Discord: the gateway URL (default: the one the API names).
    pub gateway_url: Option<String>,
    /// Discord: the application's Ed25519 public key (hex), for HTTP interactions.
    pub public_key: Option<String>,
    pub unknown_senders: UnknownSenders,
    /// The agent strangers' direct messages in unlinked chats ask to talk to.
    pub access_agent: Option<AgentName>,
}

/// A channel name: it appears in the URLs platforms call, so ASCII letters, digits,
/// `-`, `_` and `.`, at most 64.
pub fn check_channel_name(name: &str) -> Result<(), ManageError> {
    let fine = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    // `slack` and `discord` would shadow the platforms' endpoint paths; `web`, `cli`
    // and `api` are the other approval surfaces' names in the audit log.
    let reserved = matches!(
        name,
        "slack" | "discord" | "telegram" | "web" | "cli" | "api"
    );
    if name.is_empty()
        || name.len() > 64
        || !name.chars().all(fine)
        || name.starts_with('.')
        || reserved
    {
        return Err(ManageError::Invalid(format!(
            "channel name {:?} is invalid: use 1-64 letters, digits, '-', '_' or '.' (not a platform's name, nor web, cli or api)",
            name.chars().take(80).collect::<String>()
        )));
    }
    Ok(())
}

/// A base URL that may carry a credential (HTTPS, or plain HTTP to loopback).
pub fn check_url(flag: &str, url: Option<&str>) -> Result<(), ManageError> {
    if let Some(text) = url {
        let parsed = url::Url::parse(text.trim()).map_err(|_| {
            ManageError::Invalid(format!(
                "{flag} {:?} is not a URL",
                text.chars().take(200).collect::<String>()
            ))
        })?;
        crate::http::check_base_url(&parsed)
            .map_err(|e| ManageError::Invalid(format!("{flag}: {e}")))?;
    }
    Ok(())
}

fn blank_to_none(value: Option<String>) -> Option<String> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

fn nonempty(what: &str, value: &SecretValue) -> Result<(), ManageError> {
    if value.expose().trim().is_empty() {
        return Err(ManageError::Invalid(format!("the {what} is empty")));
    }
    Ok(())
}

/// Checks and stores a new channel; a running host starts it within seconds.
pub fn add_channel(store: &Store, add: AddChannel) -> Result<ChannelRecord, ManageError> {
    check_channel_name(&add.name)?;
    let api_base = blank_to_none(add.api_base);
    let gateway_url = blank_to_none(add.gateway_url);
    let public_key = blank_to_none(add.public_key).map(|k| k.to_lowercase());
    check_url("--api-base", api_base.as_deref())?;
    check_url("--gateway-url", gateway_url.as_deref())?;
    nonempty("bot token", &add.token)?;
    let mut settings = serde_json::Map::new();
    let mut set = |key: &str, value: Option<String>| {
        if let Some(value) = value {
            settings.insert(key.to_string(), serde_json::Value::String(value));
        }
    };
    set("api_base", api_base);
    set(
        "unknown_senders",
        Some(add.unknown_senders.as_str().to_string()),
    );
    set("access_agent", add.access_agent.map(|a| a.to_string()));
    let credentials = match add.platform {
        Platform::Telegram => {
            if gateway_url.is_some() || public_key.is_some() || add.app_token.is_some() {
                return Err(ManageError::Invalid(
                    "a Telegram channel takes a bot token and --api-base only".into(),
                ));
            }
            crate::config::credentials_json(&[("token", &add.token)])
        }
        Platform::Slack => {
            if add.app_token.is_none() && add.signing_secret.is_none() {
                return Err(ManageError::Invalid(
                    "give the app-level token (Socket Mode) or the signing secret (Events API over HTTPS), or both".into(),
                ));
            }
            let mut pairs = vec![("bot_token", &add.token)];
            if let Some(app) = &add.app_token {
                nonempty("app-level token", app)?;
                pairs.push(("app_token", app));
            }
            if let Some(signing) = &add.signing_secret {
                nonempty("signing secret", signing)?;
                pairs.push(("signing_secret", signing));
            }
            crate::config::credentials_json(&pairs)
        }
        Platform::Discord => {
            if let Some(key) = &public_key {
                if crate::discord::signature::parse_public_key(key).is_none() {
                    return Err(ManageError::Invalid(
                        "--public-key must be the application's 32-byte Ed25519 public key in hex (64 characters)".into(),
                    ));
                }
            }
            set("gateway_url", gateway_url);
            set("public_key", public_key);
            crate::config::credentials_json(&[("token", &add.token)])
        }
    };
    Ok(store.create_channel(NewChannel {
        name: add.name,
        platform: add.platform.as_str().into(),
        settings: serde_json::Value::Object(settings),
        credentials,
    })?)
}

/// Changes what a channel does with strangers. `access_agent`: `None` leaves it,
/// `Some(None)` clears it.
pub fn set_access(
    store: &Store,
    name: &str,
    unknown_senders: Option<UnknownSenders>,
    access_agent: Option<Option<AgentName>>,
) -> Result<ChannelRecord, ManageError> {
    let record = store.get_channel(name)?;
    let mut settings = match record.settings {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    if let Some(mode) = unknown_senders {
        settings.insert("unknown_senders".into(), mode.as_str().into());
    }
    match access_agent {
        Some(Some(agent)) => {
            store.get_agent(&agent)?;
            settings.insert("access_agent".into(), agent.to_string().into());
        }
        Some(None) => {
            settings.remove("access_agent");
        }
        None => {}
    }
    Ok(store.update_channel_settings(name, &serde_json::Value::Object(settings))?)
}

pub fn link(
    store: &Store,
    name: &str,
    agent: &AgentName,
    chat: &str,
) -> Result<ChannelLink, ManageError> {
    Ok(store.link_chat(name, chat.trim(), agent)?)
}

pub fn unlink(store: &Store, name: &str, chat: &str) -> Result<(), ManageError> {
    Ok(store.unlink_chat(name, chat.trim())?)
}

/// Refuses a user id that `channel`'s platform never gives a user: it would never match
/// anyone, while whoever added it believes someone was added. Telegram: a positive
/// number (`123456789`); Slack: `U` or `W` and upper-case letters and digits
/// (`U0123ABCD`); Discord: a snowflake, 17 to 20 digits. Written the platform's way
/// only: no sign, leading zero, space inside, or digits of another script.
fn check_user_id(store: &Store, channel: &str, user: &str) -> Result<(), ManageError> {
    let platform = store.get_channel(channel)?.platform;
    let digits = |min: usize, max: usize| {
        (min..=max).contains(&user.len())
            && user.bytes().all(|b| b.is_ascii_digit())
            && !user.starts_with('0')
    };
    let (valid, shape) = match platform.as_str() {
        "telegram" => (digits(1, 16), "a Telegram user id is a number, like 123456789"),
        "slack" => (
            (3..=24).contains(&user.len())
                && matches!(user.as_bytes()[0], b'U' | b'W')
                && user
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()),
            "a Slack user id is U or W and capital letters and digits, like U0123ABCD (in Slack: the person's profile, More, Copy member ID)",
        ),
        "discord" => (
            digits(17, 20),
            "a Discord user id is a number of 17 to 20 digits (in Discord: Developer Mode, then the person's profile, Copy User ID)",
        ),
        _ => (true, ""),
    };
    match valid {
        true => Ok(()),
        false => Err(ManageError::Invalid(format!(
            "{user:?} is not a user id on channel {channel}: {shape}"
        ))),
    }
}

pub fn add_approver(
    store: &Store,
    agent: &AgentName,
    channel: &str,
    user: &str,
    display_name: Option<&str>,
) -> Result<ApproverRecord, ManageError> {
    let user = user.trim();
    check_user_id(store, channel, user)?;
    let name = display_name
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .unwrap_or(user);
    Ok(store.add_approver(agent, channel, user, name)?)
}

pub fn remove_approver(
    store: &Store,
    agent: &AgentName,
    channel: &str,
    user: &str,
) -> Result<(), ManageError> {
    Ok(store.remove_approver(agent, channel, user.trim())?)
}

pub fn allow_sender(
    store: &Store,
    agent: &AgentName,
    channel: &str,
    user: &str,
    display_name: Option<&str>,
) -> Result<SenderRecord, ManageError> {
    let user = user.trim();
    check_user_id(store, channel, user)?;
    let name = display_name
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .unwrap_or(user);
    Ok(store.add_sender(agent, channel, user, name)?)
}

pub fn disallow_sender(
    store: &Store,
    agent: &AgentName,
    channel: &str,
    user: &str,
) -> Result<(), ManageError> {
    Ok(store.remove_sender(agent, channel, user.trim())?)
}

pub fn remove_channel(store: &Store, name: &str) -> Result<(), ManageError> {
    Ok(store.delete_channel(name)?)
}

/// One channel as the CLI and the web UI list it.
#[derive(Clone, Debug, Serialize)]
pub struct Overview {
    #[serde(flatten)]
    pub record: ChannelRecord,
    pub links: Vec<ChannelLink>,
    pub approvers: Vec<ApproverRecord>,
    pub senders: Vec<SenderRecord>,
    /// The running host's view of it (`None` when no host runs).
    pub status: Option<ChannelStatus>,
}

/// Every channel with its links, approvers, allowed senders and, when the host runs,
/// its state (`running` says whether it does).
pub fn overview(store: &Store, home: &Home, running: bool) -> Result<Vec<Overview>, ManageError> {
    let channels = store.list_channels()?;
    let links = store.list_links(None)?;
    let approvers = store.list_approvers(None)?;
    let senders = store.list_senders(None)?;
    let states = if running {
        running_states(home)
    } else {
        Vec::new()
    };
    Ok(channels
        .into_iter()
        .map(|record| Overview {
            links: links
                .iter()
                .filter(|l| l.channel == record.name)
                .cloned()
                .collect(),
            approvers: approvers
                .iter()
                .filter(|a| a.channel == record.name)
                .cloned()
                .collect(),
            senders: senders
                .iter()
                .filter(|s| s.channel == record.name)
                .cloned()
                .collect(),
            status: states.iter().find(|s| s.name == record.name).cloned(),
            record,
        })
        .collect())
}

/// What the running host wrote about its channels (`run/channels.json`).
pub fn running_states(home: &Home) -> Vec<ChannelStatus> {
    std::fs::read_to_string(home.run_dir().join("channels.json"))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}
