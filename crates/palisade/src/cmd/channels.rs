//! `palisade channels …` and `palisade approvers …`: chat channels (a Telegram bot, a
//! Slack app, a Discord bot), the chats linked to agents, and who approves what.
//!
//! Tokens are read from files (or stdin with `-`), never from argv, and stored sealed
//! under the master key. A running `palisade up` picks changes up within seconds. The
//! checks and writes are `palisade_channels::manage`, which the web UI's Channels page
//! calls too; this file parses arguments and prints.

use crate::context::Context;
use crate::input;
use crate::output::{self, Table};
use anyhow::Context as _;
use palisade_approvals::Platform;
use palisade_channels::manage::{self, AddChannel, UnknownSenders};
use palisade_policy::AgentName;
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
        /// The channel the chat is on (see `palisade channels list`).
        name: String,
        /// The agent the chat's messages go to.
        #[arg(long)]
        agent: String,
        /// Telegram group ids are negative (`--chat -1001234`).
        #[arg(long, value_name = "CHAT_ID", allow_hyphen_values = true)]
        chat: String,
    },
    /// Unlink a chat.
    Unlink {
        /// The channel the chat is on.
        name: String,
        /// Telegram group ids are negative (`--chat -1001234`).
        #[arg(long, value_name = "CHAT_ID", allow_hyphen_values = true)]
        chat: String,
    },
    /// Let someone talk to an agent on this channel without deciding its approvals.
    #[command(
        after_help = "Example:\n  palisade channels allow tg --agent assistant --user 123456789 --display-name Sam\n\nAn approved access request (--unknown-senders ask) does the same."
    )]
    Allow {
        /// The channel the person writes on (see `palisade channels list`).
        name: String,
        /// The agent they may talk to.
        #[arg(long)]
        agent: String,
        /// The platform's user id.
        #[arg(long, value_name = "PLATFORM_USER_ID")]
        user: String,
        /// The name `channels list` shows for them (default: the user id).
        #[arg(long, value_name = "TEXT")]
        display_name: Option<String>,
    },
    /// Take back `channels allow` (or an approved access request).
    Disallow {
        /// The channel the person writes on.
        name: String,
        /// The agent they may no longer talk to.
        #[arg(long)]
        agent: String,
        /// The platform's user id.
        #[arg(long, value_name = "PLATFORM_USER_ID")]
        user: String,
    },
    /// Change what a channel does with messages from people not allowed to talk to
    /// the agent.
    #[command(
        after_help = "Examples:\n  palisade channels set tg --unknown-senders ask\n  palisade channels set tg --unknown-senders ask --access-agent assistant\n\nWith ask, a stranger's message is not delivered; the agent's approvers get an\naccess request card, and once it is approved the person may write to the agent."
    )]
    Set {
        /// The channel to change.
        name: String,
        /// A message from someone not allowed to talk to the linked agent is dropped, or
        /// dropped and the agent's approvers asked whether that person may talk to it;
        /// unchanged if not given.
        #[arg(long, value_name = "drop|ask")]
        unknown_senders: Option<UnknownSenders>,
        /// The agent a stranger's direct message in an unlinked chat asks to talk to.
        #[arg(long, value_name = "AGENT", conflicts_with = "no_access_agent")]
        access_agent: Option<String>,
        /// Strangers' direct messages in unlinked chats are dropped again.
        #[arg(long)]
        no_access_agent: bool,
    },
    /// List channels with their state, linked chats, approvers and allowed senders.
    List,
    /// Check a channel's credentials with its platform.
    Test {
        /// The channel to check.
        name: String,
    },
    /// Remove a channel with its links and approvers.
    Remove {
        /// The channel to remove.
        name: String,
    },
}

/// What a new channel does with strangers (every platform).
#[derive(Debug, clap::Args)]
pub struct AccessArgs {
    /// A message from someone not allowed to talk to the linked agent is dropped, or
    /// dropped and the agent's approvers asked whether that person may talk to it.
    #[arg(long, value_name = "drop|ask", default_value = "drop")]
    unknown_senders: UnknownSenders,
    /// The agent a stranger's direct message in an unlinked chat asks to talk to
    /// (with --unknown-senders ask).
    #[arg(long, value_name = "AGENT")]
    access_agent: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum AddCommand {
    /// A Telegram bot (token from @BotFather), reached by long polling.
    #[command(
        after_help = "Example:\n  palisade channels add telegram tg --token-file ~/.config/tg-token"
    )]
    Telegram {
        /// A name for the channel: 1-64 letters, digits, '-', '_' or '.' (not telegram,
        /// slack, discord, web, cli or api).
        name: String,
        /// File holding the bot token (`-` for stdin).
        #[arg(long, value_name = "FILE")]
        token_file: PathBuf,
        /// Bot API base URL (default https://api.telegram.org).
        #[arg(long, value_name = "URL")]
        api_base: Option<String>,
        #[command(flatten)]
        access: AccessArgs,
    },
    /// A Slack app: Socket Mode with an app-level token, or the Events API with a
    /// signing secret.
    #[command(
        after_help = "Examples:\n  palisade channels add slack team --bot-token-file bot.txt --app-token-file app.txt\n  palisade channels add slack team --bot-token-file bot.txt --signing-secret-file secret.txt\n\nWith a signing secret, point the app's Event Subscriptions and Interactivity\nRequest URL at https://YOUR-HOST/channels/slack/NAME/events (a proxy in front of\npalisade up). Socket Mode needs no public URL."
    )]
    Slack {
        /// A name for the channel: 1-64 letters, digits, '-', '_' or '.' (not telegram,
        /// slack, discord, web, cli or api).
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
        #[command(flatten)]
        access: AccessArgs,
    },
    /// A Discord bot: the gateway for messages and buttons.
    #[command(
        after_help = "Examples:\n  palisade channels add discord ops --token-file discord-token.txt\n  palisade channels add discord ops --token-file discord-token.txt --public-key HEX\n\nEnable the Message Content intent for the bot. With --public-key, the\nInteractions Endpoint URL may be https://YOUR-HOST/channels/discord/NAME/interactions;\nwithout it, button presses arrive through the gateway."
    )]
    Discord {
        /// A name for the channel: 1-64 letters, digits, '-', '_' or '.' (not telegram,
        /// slack, discord, web, cli or api).
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
        #[command(flatten)]
        access: AccessArgs,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum ApproversCommand {
    /// Let a person on a channel decide an agent's approvals (and talk to it).
    #[command(
        after_help = "Example:\n  palisade approvers add --agent mailer --channel team --user U0123ABCD --display-name Ana"
    )]
    Add {
        /// The agent whose approvals the person decides.
        #[arg(long)]
        agent: String,
        /// The channel they decide on (see `palisade channels list`).
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
        /// Only this agent's approvers (default: every agent's).
        #[arg(long)]
        agent: Option<String>,
    },
    /// Remove an approver.
    Remove {
        /// The agent whose approvals they decide.
        #[arg(long)]
        agent: String,
        /// The channel they decide on.
        #[arg(long)]
        channel: String,
        /// The platform's user id.
        #[arg(long, value_name = "PLATFORM_USER_ID")]
        user: String,
    },
}

pub fn run(command: ChannelsCommand, ctx: &Context) -> anyhow::Result<()> {
    match command {
        ChannelsCommand::Add(add) => add_channel(add, ctx),
        ChannelsCommand::Link { name, agent, chat } => {
            let agent = AgentName::new(&agent)?;
            let store = ctx.open_store()?;
            let link = manage::link(&store, &name, &agent, &chat)?;
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
            manage::unlink(&ctx.open_store()?, &name, &chat)?;
            output::print(&format!("unlinked chat {}\n", output::clean(&chat)))
        }
        ChannelsCommand::Allow {
            name,
            agent,
            user,
            display_name,
        } => {
            let agent = AgentName::new(&agent)?;
            let sender = manage::allow_sender(
                &ctx.open_store()?,
                &agent,
                &name,
                &user,
                display_name.as_deref(),
            )?;
            if ctx.json {
                return output::print_json(&sender);
            }
            output::print(&format!(
                "{} ({} on {}) may now talk to agent {agent}\n",
                output::clean(&sender.display_name),
                output::clean(&sender.user_id),
                output::clean(&name)
            ))
        }
        ChannelsCommand::Disallow { name, agent, user } => {
            let agent = AgentName::new(&agent)?;
            manage::disallow_sender(&ctx.open_store()?, &agent, &name, &user)?;
            output::print(&format!(
                "{} on {} may no longer talk to agent {agent}\n",
                output::clean(&user),
                output::clean(&name)
            ))
        }
        ChannelsCommand::Set {
            name,
            unknown_senders,
            access_agent,
            no_access_agent,
        } => {
            let access_agent = match (access_agent, no_access_agent) {
                (Some(agent), _) => Some(Some(AgentName::new(&agent)?)),
                (None, true) => Some(None),
                (None, false) => None,
            };
            if unknown_senders.is_none() && access_agent.is_none() {
                anyhow::bail!("nothing to change: give --unknown-senders, --access-agent or --no-access-agent");
            }
            let record =
                manage::set_access(&ctx.open_store()?, &name, unknown_senders, access_agent)?;
            if ctx.json {
                return output::print_json(&record);
            }
            output::print(&format!(
                "changed channel {}\n",
                output::clean(&record.name)
            ))
        }
        ChannelsCommand::List => {
            let store = ctx.open_store()?;
            let running = super::up::running_host(&ctx.home).is_some();
            let channels = manage::overview(&store, &ctx.home, running)?;
            if ctx.json {
                return output::print_json(&channels);
            }
            if channels.is_empty() {
                return output::print("no channels yet; add one with `palisade channels add telegram|slack|discord`\n");
            }
            let mut table = Table::new(&[
                "NAME",
                "PLATFORM",
                "STATE",
                "STRANGERS",
                "LINKED CHATS",
                "APPROVERS",
                "ALLOWED",
            ]);
            for channel in &channels {
                let linked: Vec<String> = channel
                    .links
                    .iter()
                    .map(|l| format!("{} → {}", l.chat, l.agent))
                    .collect();
                let people = |list: Vec<String>| list.join(", ");
                let state = match &channel.status {
                    Some(status) => {
                        let state = serde_json::to_value(status.state)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default();
                        match &status.detail {
                            Some(detail) if state == "failing" => format!("failing: {detail}"),
                            _ => state,
                        }
                    }
                    None if running => "starting".into(),
                    None => "(host not running)".into(),
                };
                let strangers = channel.record.settings["unknown_senders"]
                    .as_str()
                    .unwrap_or("drop")
                    .to_string();
                table.row(vec![
                    channel.record.name.clone(),
                    channel.record.platform.clone(),
                    state,
                    strangers,
                    linked.join(", "),
                    people(
                        channel
                            .approvers
                            .iter()
                            .map(|a| format!("{} ({})", a.display_name, a.agent))
                            .collect(),
                    ),
                    people(
                        channel
                            .senders
                            .iter()
                            .map(|a| format!("{} ({})", a.display_name, a.agent))
                            .collect(),
                    ),
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
            manage::remove_channel(&ctx.open_store()?, &name)?;
            output::print(&format!("removed channel {}\n", output::clean(&name)))
        }
    }
}

/// What the running host says about its channels (`run/channels.json`), if it runs.
pub fn running_states(ctx: &Context) -> Vec<serde_json::Value> {
    if super::up::running_host(&ctx.home).is_none() {
        return Vec::new();
    }
    manage::running_states(&ctx.home)
        .into_iter()
        .filter_map(|s| serde_json::to_value(s).ok())
        .collect()
}

fn access_agent(access: &AccessArgs) -> anyhow::Result<Option<AgentName>> {
    Ok(access
        .access_agent
        .as_deref()
        .map(AgentName::new)
        .transpose()?)
}

fn add_channel(add: AddCommand, ctx: &Context) -> anyhow::Result<()> {
    let add = match add {
        AddCommand::Telegram {
            name,
            token_file,
            api_base,
            access,
        } => AddChannel {
            token: input::read_credential(&token_file, "--token-file")?,
            access_agent: access_agent(&access)?,
            unknown_senders: access.unknown_senders,
            name,
            platform: Platform::Telegram,
            app_token: None,
            signing_secret: None,
            api_base,
            gateway_url: None,
            public_key: None,
        },
        AddCommand::Slack {
            name,
            bot_token_file,
            app_token_file,
            signing_secret_file,
            api_base,
            access,
        } => AddChannel {
            token: input::read_credential(&bot_token_file, "--bot-token-file")?,
            app_token: app_token_file
                .map(|f| input::read_credential(&f, "--app-token-file"))
                .transpose()?,
            signing_secret: signing_secret_file
                .map(|f| input::read_credential(&f, "--signing-secret-file"))
                .transpose()?,
            access_agent: access_agent(&access)?,
            unknown_senders: access.unknown_senders,
            name,
            platform: Platform::Slack,
            api_base,
            gateway_url: None,
            public_key: None,
        },
        AddCommand::Discord {
            name,
            token_file,
            public_key,
            api_base,
            gateway_url,
            access,
        } => AddChannel {
            token: input::read_credential(&token_file, "--token-file")?,
            access_agent: access_agent(&access)?,
            unknown_senders: access.unknown_senders,
            name,
            platform: Platform::Discord,
            app_token: None,
            signing_secret: None,
            api_base,
            gateway_url,
            public_key,
        },
    };
    let store = ctx.open_store()?;
    let record = manage::add_channel(&store, add)?;
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
            let store = ctx.open_store()?;
            let approver =
                manage::add_approver(&store, &agent, &channel, &user, display_name.as_deref())?;
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
            manage::remove_approver(&ctx.open_store()?, &agent, &channel, &user)?;
            output::print(&format!(
                "removed approver {} of agent {agent} on {}\n",
                output::clean(&user),
                output::clean(&channel)
            ))
        }
    }
}
