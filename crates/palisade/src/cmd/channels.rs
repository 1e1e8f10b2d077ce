//! `palisade channels …` and `palisade approvers …`: chat channels (a Telegram bot, a
//! Slack app, a Discord bot), the chats linked to agents, and who approves what.
//!
//! Tokens are read from files (or stdin with `-`), never from argv, and stored sealed
//! under the master key. A running `palisade up` picks changes up within seconds.

use crate::context::Context;
use crate::input;
use crate::output::{self, Table};
use anyhow::{bail, Context as _};
use palisade_channels::config::credentials_json;
use palisade_policy::AgentName;
use palisade_store::NewChannel;
use std::path::PathBuf;

#[derive(Debug, clap::Subcommand)]
pub enum ChannelsCommand {
    /// Add a channel: a Telegram bot, a Slack app or a Discord bot.
    #[command(subcommand)]
    Add(AddCommand),
    /// Link a chat to an agent: messages there go to the agent, its replies come back.
    #[command(
        after_help = "Examples:\n  palisade channels link tg --agent assistant --chat 123456789\n  palisade channels link team --agent mailer --chat C0123ABCD\n\nOnly the agent's approvers on this channel are heard; others are ignored.\nFor a direct chat, link the chat's id (on Telegram, the user's id)."
    )]
    Link {
        name: String,
        #[arg(long)]
        agent: String,
        #[arg(long, value_name = "CHAT_ID")]
        chat: String,
    },
    /// Unlink a chat.
    Unlink {
        name: String,
        #[arg(long, value_name = "CHAT_ID")]
        chat: String,
    },
    /// List channels and their linked chats (and, with a running host, their state).
    List,
    /// Check a channel's credentials with its platform.
    Test { name: String },
    /// Remove a channel with its links and approvers.
    Remove { name: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum AddCommand {
    /// A Telegram bot (token from @BotFather), reached by long polling.
    #[command(
        after_help = "Example:\n  palisade channels add telegram tg --token-file ~/.config/tg-token"
    )]
    Telegram {
        name: String,
        /// File holding the bot token (`-` for stdin).
        #[arg(long, value_name = "FILE")]
        token_file: PathBuf,
        /// Bot API base URL (default https://api.telegram.org).
        #[arg(long, value_name = "URL")]
        api_base: Option<String>,
    },
    /// A Slack app: Socket Mode with an app-level token, or the Events API with a
    /// signing secret.
    #[command(
        after_help = "Example:\n  palisade channels add slack team --bot-token-file bot.txt --app-token-file app.txt"
    )]
    Slack {
        name: String,
        /// File holding the bot token (xoxb-…).
        #[arg(long, value_name = "FILE")]
        bot_token_file: PathBuf,
        /// File holding the app-level token (xapp-…) for Socket Mode.
        #[arg(long, value_name = "FILE")]
        app_token_file: Option<PathBuf>,
        /// File holding the signing secret, for the Events API over HTTPS.
        #[arg(long, value_name = "FILE")]
        signing_secret_file: Option<PathBuf>,
        /// Web API base URL (default https://slack.com/api).
        #[arg(long, value_name = "URL")]
        api_base: Option<String>,
    },
    /// A Discord bot: the gateway for messages and buttons.
    #[command(
        after_help = "Example:\n  palisade channels add discord ops --token-file discord-token.txt"
    )]
    Discord {
        name: String,
        /// File holding the bot token.
        #[arg(long, value_name = "FILE")]
        token_file: PathBuf,
        /// The application's public key (hex), to verify the HTTP interactions endpoint.
        #[arg(long, value_name = "HEX")]
        public_key: Option<String>,
        /// REST API base URL (default https://discord.com/api/v10).
        #[arg(long, value_name = "URL")]
        api_base: Option<String>,
        /// Gateway URL (default: the one the API names).
        #[arg(long, value_name = "URL")]
        gateway_url: Option<String>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum ApproversCommand {
    /// Let a person on a channel decide an agent's approvals (and talk to it).
    #[command(
        after_help = "Example:\n  palisade approvers add --agent mailer --channel team --user U0123ABCD --display-name Ana"
    )]
    Add {
        #[arg(long)]
        agent: String,
        #[arg(long)]
        channel: String,
        /// The platform's user id.
        #[arg(long, value_name = "PLATFORM_USER_ID")]
        user: String,
        /// The name cards and the audit log show (default: the user id).
        #[arg(long, value_name = "TEXT")]
        display_name: Option<String>,
    },
    /// List approvers (of one agent).
    List {
        #[arg(long)]
        agent: Option<String>,
    },
    /// Remove an approver.
    Remove {
        #[arg(long)]
        agent: String,
        #[arg(long)]
        channel: String,
        #[arg(long, value_name = "PLATFORM_USER_ID")]
        user: String,
    },
}

fn check_url(flag: &str, url: &Option<String>) -> anyhow::Result<()> {
    if let Some(text) = url {
        let parsed = url::Url::parse(text)
            .with_context(|| format!("{flag} {:?} is not a URL", output::clean(text)))?;
        palisade_channels::http::check_base_url(&parsed)
            .map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
    }
    Ok(())
}

fn settings(pairs: &[(&str, &Option<String>)]) -> serde_json::Value {
    let mut object = serde_json::Map::new();
    for (key, value) in pairs {
        if let Some(value) = value {
            object.insert(key.to_string(), serde_json::Value::String(value.clone()));
        }
    }
    serde_json::Value::Object(object)
}

pub fn run(command: ChannelsCommand, ctx: &Context) -> anyhow::Result<()> {
    match command {
        ChannelsCommand::Add(add) => add_channel(add, ctx),
        ChannelsCommand::Link { name, agent, chat } => {
            let agent = AgentName::new(&agent)?;
            let store = ctx.open_store()?;
            let link = store.link_chat(&name, chat.trim(), &agent)?;
            if ctx.json {
                return output::print_json(&link);
            }
            output::print(&format!(
                "linked chat {} of {} to agent {}\n",
                output::clean(&link.chat),
                output::clean(&name),
                agent
            ))
        }
        ChannelsCommand::Unlink { name, chat } => {
            ctx.open_store()?.unlink_chat(&name, chat.trim())?;
            output::print(&format!("unlinked chat {}\n", output::clean(&chat)))
        }
        ChannelsCommand::List => {
            let store = ctx.open_store()?;
            let channels = store.list_channels()?;
            let links = store.list_links(None)?;
            let states = running_states(ctx);
            if ctx.json {
                let list: Vec<serde_json::Value> = channels
                    .iter()
                    .map(|c| {
                        serde_json::json!({
                            "name": c.name,
                            "platform": c.platform,
                            "settings": c.settings,
                            "created_at_ms": c.created_at_ms,
                            "links": links.iter().filter(|l| l.channel == c.name).collect::<Vec<_>>(),
                            "status": states.iter().find(|s| s["name"] == c.name.as_str()),
                        })
                    })
                    .collect();
                return output::print_json(&list);
            }
            if channels.is_empty() {
                return output::print("no channels yet; add one with `palisade channels add telegram|slack|discord`\n");
            }
            let mut table = Table::new(&["NAME", "PLATFORM", "STATE", "LINKED CHATS"]);
            for channel in &channels {
                let linked: Vec<String> = links
                    .iter()
                    .filter(|l| l.channel == channel.name)
                    .map(|l| format!("{} → {}", l.chat, l.agent))
                    .collect();
                let state = states
                    .iter()
                    .find(|s| s["name"] == channel.name.as_str())
                    .map(|s| {
                        let state = s["state"].as_str().unwrap_or("?");
                        match s["detail"].as_str() {
                            Some(detail) if state == "failing" => format!("failing: {detail}"),
                            _ => state.to_string(),
                        }
                    })
                    .unwrap_or_else(|| "(host not running)".into());
                table.row(vec![
                    channel.name.clone(),
                    channel.platform.clone(),
                    state,
                    linked.join(", "),
                ]);
            }
            output::print(&table.render())
        }
        ChannelsCommand::Test { name } => {
            let store = ctx.open_store()?;
            let record = store.get_channel(&name)?;
            let channel = palisade_channels::config::open(&store, &record)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let who = runtime
                .block_on(channel.check())
                .with_context(|| format!("channel {} does not work", output::clean(&name)))?;
            output::print(&format!(
                "{}: ok, {}\n",
                output::clean(&name),
                output::clean(&who)
            ))
        }
        ChannelsCommand::Remove { name } => {
            ctx.open_store()?.delete_channel(&name)?;
            output::print(&format!("removed channel {}\n", output::clean(&name)))
        }
    }
}

/// What the running host says about its channels (`run/channels.json`), if it runs.
pub fn running_states(ctx: &Context) -> Vec<serde_json::Value> {
    if super::up::running_host(&ctx.home).is_none() {
        return Vec::new();
    }
    std::fs::read_to_string(ctx.home.run_dir().join("channels.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<Vec<serde_json::Value>>(&text).ok())
        .unwrap_or_default()
}

fn add_channel(add: AddCommand, ctx: &Context) -> anyhow::Result<()> {
    let (name, platform, settings, credentials) = match add {
        AddCommand::Telegram {
            name,
            token_file,
            api_base,
        } => {
            check_url("--api-base", &api_base)?;
            let token = input::read_credential(&token_file, "--token-file")?;
            (
                name,
                "telegram",
                settings(&[("api_base", &api_base)]),
                credentials_json(&[("token", &token)]),
            )
        }
        AddCommand::Slack {
            name,
            bot_token_file,
            app_token_file,
            signing_secret_file,
            api_base,
        } => {
            check_url("--api-base", &api_base)?;
            if app_token_file.is_none() && signing_secret_file.is_none() {
                bail!("give --app-token-file (Socket Mode) or --signing-secret-file (Events API over HTTPS), or both");
            }
            let bot = input::read_credential(&bot_token_file, "--bot-token-file")?;
            let app = app_token_file
                .map(|f| input::read_credential(&f, "--app-token-file"))
                .transpose()?;
            let signing = signing_secret_file
                .map(|f| input::read_credential(&f, "--signing-secret-file"))
                .transpose()?;
            let mut pairs = vec![("bot_token", &bot)];
            if let Some(app) = &app {
                pairs.push(("app_token", app));
            }
            if let Some(signing) = &signing {
                pairs.push(("signing_secret", signing));
            }
            (
                name,
                "slack",
                settings(&[("api_base", &api_base)]),
                credentials_json(&pairs),
            )
        }
        AddCommand::Discord {
            name,
            token_file,
            public_key,
            api_base,
            gateway_url,
        } => {
            check_url("--api-base", &api_base)?;
            check_url("--gateway-url", &gateway_url)?;
            if let Some(key) = &public_key {
                let bytes = hex::decode(key.trim())
                    .ok()
                    .filter(|b| b.len() == 32)
                    .context("--public-key must be the application's 32-byte Ed25519 public key in hex (64 characters)")?;
                drop(bytes);
            }
            let token = input::read_credential(&token_file, "--token-file")?;
            (
                name,
                "discord",
                settings(&[
                    ("api_base", &api_base),
                    ("gateway_url", &gateway_url),
                    ("public_key", &public_key.map(|k| k.trim().to_lowercase())),
                ]),
                credentials_json(&[("token", &token)]),
            )
        }
    };
    let name = palisade_store::input::check_name(&name, "channel")?;
    let store = ctx.open_store()?;
    let record = store.create_channel(NewChannel {
        name,
        platform: platform.into(),
        settings,
        credentials,
    })?;
    if ctx.json {
        return output::print_json(&record);
    }
    output::print(&format!(
        "added {} channel {}; check it with `palisade channels test {}`, then `palisade approvers add` and `palisade channels link`\n",
        record.platform, record.name, record.name
    ))
}

pub fn run_approvers(command: ApproversCommand, ctx: &Context) -> anyhow::Result<()> {
    match command {
        ApproversCommand::Add {
            agent,
            channel,
            user,
            display_name,
        } => {
            let agent = AgentName::new(&agent)?;
            let user = user.trim().to_string();
            let name = display_name.unwrap_or_else(|| user.clone());
            let store = ctx.open_store()?;
            let approver = store.add_approver(&agent, &channel, &user, name.trim())?;
            if ctx.json {
                return output::print_json(&approver);
            }
            output::print(&format!(
                "{} ({} on {}) now approves for agent {}\n",
                output::clean(&approver.display_name),
                output::clean(&approver.user_id),
                approver.channel,
                agent
            ))
        }
        ApproversCommand::List { agent } => {
            let agent = agent.as_deref().map(AgentName::new).transpose()?;
            let approvers = ctx.open_store()?.list_approvers(agent.as_ref())?;
            if ctx.json {
                return output::print_json(&approvers);
            }
            if approvers.is_empty() {
                return output::print("no approvers yet; add one with `palisade approvers add`\n");
            }
            let mut table = Table::new(&["AGENT", "CHANNEL", "PLATFORM", "USER", "NAME"]);
            for approver in &approvers {
                table.row(vec![
                    approver.agent.to_string(),
                    approver.channel.clone(),
                    approver.platform.clone(),
                    approver.user_id.clone(),
                    approver.display_name.clone(),
                ]);
            }
            output::print(&table.render())
        }
        ApproversCommand::Remove {
            agent,
            channel,
            user,
        } => {
            let agent = AgentName::new(&agent)?;
            ctx.open_store()?
                .remove_approver(&agent, &channel, user.trim())?;
            output::print(&format!(
                "removed approver {} of agent {agent} on {}\n",
                output::clean(&user),
                output::clean(&channel)
            ))
        }
    }
}
