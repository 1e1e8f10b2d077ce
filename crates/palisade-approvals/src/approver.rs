//! Who decides. An approver is typed: the surface the decision came from (the CLI, the
//! web UI, the admin API, or a chat channel of a given platform), the user's id there,
//! and the name shown to people. Local surfaces belong to the owner of the home; a chat
//! user's decision counts only when that user is listed as an approver of the agent on
//! that channel (checked by the engine).

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    Slack,
    Telegram,
    Discord,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Slack => "slack",
            Platform::Telegram => "telegram",
            Platform::Discord => "discord",
        }
    }

    /// As people write it.
    pub fn title(self) -> &'static str {
        match self {
            Platform::Slack => "Slack",
            Platform::Telegram => "Telegram",
            Platform::Discord => "Discord",
        }
    }
}

impl std::str::FromStr for Platform {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "slack" => Ok(Platform::Slack),
            "telegram" => Ok(Platform::Telegram),
            "discord" => Ok(Platform::Discord),
            other => Err(format!(
                "platform {other:?} is unknown: use slack, telegram or discord"
            )),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "surface", rename_all = "snake_case")]
pub enum Surface {
    Cli,
    Web,
    /// The vault's OneCLI-compatible admin API (holder of the admin key).
    AdminApi,
    /// A chat channel configured with `palisade channels add`.
    Chat {
        channel: String,
        platform: Platform,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ApproverIdentity {
    pub surface: Surface,
    /// The user's id on that surface (the local user name, a platform user id).
    pub user_id: String,
    pub display_name: String,
}

impl ApproverIdentity {
    /// The person at this machine's terminal.
    pub fn cli(user: &str) -> ApproverIdentity {
        ApproverIdentity {
            surface: Surface::Cli,
            user_id: user.to_string(),
            display_name: user.to_string(),
        }
    }

    /// The web UI's logged-in admin.
    pub fn web() -> ApproverIdentity {
        ApproverIdentity {
            surface: Surface::Web,
            user_id: "admin".into(),
            display_name: "admin".into(),
        }
    }

    /// A holder of the admin key, naming itself (or not).
    pub fn admin_api(name: Option<&str>) -> ApproverIdentity {
        let name: String = name
            .map(|n| n.chars().filter(|c| !c.is_control()).take(64).collect())
            .filter(|n: &String| !n.trim().is_empty())
            .unwrap_or_else(|| "admin-key".into());
        ApproverIdentity {
            surface: Surface::AdminApi,
            user_id: name.clone(),
            display_name: name,
        }
    }

    /// A chat user, as the platform identified them (the engine replaces the name with
    /// the one the approver was listed under).
    pub fn chat(
        channel: &str,
        platform: Platform,
        user_id: &str,
        display_name: &str,
    ) -> ApproverIdentity {
        ApproverIdentity {
            surface: Surface::Chat {
                channel: channel.to_string(),
                platform,
            },
            user_id: user_id.to_string(),
            display_name: display_name.to_string(),
        }
    }

    /// `cli`, `web`, `api`, or the chat channel's name.
    pub fn channel(&self) -> &str {
        match &self.surface {
            Surface::Cli => "cli",
            Surface::Web => "web",
            Surface::AdminApi => "api",
            Surface::Chat { channel, .. } => channel,
        }
    }

    /// As recorded and shown: `cli:alice`, `web:admin`, `api:admin-key`, or
    /// `Ana (Slack, team)` for a chat user.
    pub fn shown(&self) -> String {
        match &self.surface {
            Surface::Chat { channel, platform } => {
                format!("{} ({}, {channel})", self.display_name, platform.title())
            }
            _ => format!("{}:{}", self.channel(), self.user_id),
        }
    }
}
