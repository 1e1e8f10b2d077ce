//! `palisade agents …`: create, inspect and remove agents and their gateway tokens.

use crate::context::Context;
use crate::output::{self, Details, Table};
use anyhow::{bail, Context as _};
use palisade_host::agents::AgentDraft;
use palisade_host::AgentSettings;
use palisade_policy::AgentName;
use std::path::PathBuf;

#[derive(Debug, clap::Subcommand)]
pub enum AgentsCommand {
    /// Register a new agent.
    #[command(
        after_help = "Examples:\n  palisade agents create helper\n  palisade agents create mailer --profile action\n  palisade agents create helper --provider anthropic --model claude-sonnet-4-6 --base-url https://api.anthropic.com\n  palisade agents create local --provider openai --model llama3 --base-url http://127.0.0.1:8080"
    )]
    Create {
        /// 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit.
        name: String,
        /// Default egress: `research` may reach any host but gets no sensitive secrets;
        /// `action` is refused every host not named by a rule or a granted secret.
        #[arg(long, default_value = "research", value_name = "research|action")]
        profile: String,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Change an agent's profile, model settings or instructions.
    #[command(
        after_help = "Examples:\n  palisade agents edit helper --model claude-opus-4-1\n  palisade agents edit helper --instructions-file notes.md\n  palisade agents edit helper --workspace-quota 10G\n\nThe instructions are also a plain file: $PALISADE_HOME/agents/NAME/instructions.md."
    )]
    Edit {
        /// The agent to change.
        name: String,
        /// Default egress, as for `agents create`: `research` (any host, no sensitive
        /// secrets) or `action` (only hosts named by a rule or a granted secret);
        /// unchanged if not given.
        #[arg(long, value_name = "research|action")]
        profile: Option<String>,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// List agents.
    List,
    /// Show one agent with the secrets granted to it and the rules bound to it.
    Show {
        /// The agent to show.
        name: String,
    },
    /// Delete an agent, its token, its secret grants and the rules bound to it.
    #[command(after_help = "Asks for confirmation on a terminal; scripts pass --yes.")]
    Delete {
        /// The agent to delete.
        name: String,
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(short, long)]
        yes: bool,
    },
    /// Let agent FROM message agent TO (its `ask_agent` and `tell_agent` tools).
    #[command(
        after_help = "Examples:\n  palisade agents allow research --to mailer\n  palisade agents allow research --to mailer --approve inbound\n\nNothing is allowed by default. Messages are sanitized at the receiver's strictness\nand labelled with their origin; --approve puts a person before a direction\n(outbound: before FROM's message leaves; inbound: before TO receives it).\nWhat an action agent says reaches a research agent only once a person approved it:\nits messages to one, and its answers when a research agent asks it."
    )]
    Allow {
        /// The sending agent.
        from: String,
        /// The receiving agent.
        #[arg(long, value_name = "AGENT")]
        to: String,
        /// Which directions a person approves: outbound, inbound or both.
        #[arg(long, value_name = "outbound|inbound|both")]
        approve: Option<String>,
    },
    /// Stop agent FROM messaging agent TO.
    #[command(after_help = "Example:\n  palisade agents disallow research --to mailer")]
    Disallow {
        /// The sending agent.
        from: String,
        /// The receiving agent.
        #[arg(long, value_name = "AGENT")]
        to: String,
    },
    /// Turn the dial: how often a person is asked, and how strictly what other agents
    /// send is cleaned. Without options, explains the agent's current dial.
    #[command(
        after_help = "Examples:\n  palisade agents dial mailer --preset strict\n  palisade agents dial mailer --approvals first-use\n  palisade agents dial scout --sanitize strict\n\nPresets: strict = every credentialed request approved, strict sanitizing;\nbalanced = credentialed writes approved, balanced sanitizing; relaxed = only rules ask,\nrelaxed sanitizing. Without a dial an agent is asked only where rules say, balanced."
    )]
    Dial {
        /// The agent whose dial to explain or turn.
        name: String,
        /// Set every knob from a preset: strict, balanced or relaxed.
        #[arg(long, value_name = "PRESET")]
        preset: Option<String>,
        /// When a person approves a credentialed request: every, first-use, writes or never.
        #[arg(long, value_name = "FREQUENCY")]
        approvals: Option<String>,
        /// How strictly messages from other agents are cleaned: strict, balanced or relaxed.
        #[arg(long, value_name = "LEVEL")]
        sanitize: Option<String>,
    },
    /// The agent-to-agent allow-list (entries from or to NAME, or all).
    Links {
        /// Only entries from or to this agent (default: all).
        name: Option<String>,
    },
    /// Print the agent's token for the standalone TCP listener (nothing else, so scripts can capture it).
    #[command(
        long_about = "Print the agent's token for the standalone TCP listener.\n\nAn agent outside a sandbox authenticates to `palisade vault serve` with\n`Proxy-Authorization: Basic base64(\"x:\" + TOKEN)`, i.e. a proxy URL of the form\nhttp://x:TOKEN@127.0.0.1:10255. The same token is printed every time until --rotate\nissues a new one; the old one stops working at once.",
        after_help = "Examples:\n  TOKEN=$(palisade agents token mailer)\n  palisade agents token mailer --rotate"
    )]
    Token {
        /// The agent whose token to print.
        name: String,
        /// Issue a new token; the previous one stops working.
        #[arg(long)]
        rotate: bool,
    },
}

/// How an agent thinks: stored in its settings, read by the host for each message.
#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    /// Model API: `anthropic` (Messages API) or `openai` (chat completions, also local servers).
    #[arg(long, value_name = "anthropic|openai")]
    provider: Option<String>,
    /// Model name [default for new agents: claude-sonnet-4-6].
    #[arg(long, value_name = "MODEL")]
    model: Option<String>,
    /// Base URL of the model API [default: https://api.anthropic.com].
    #[arg(long, value_name = "URL")]
    base_url: Option<String>,
    /// Replace the agent's instructions with this markdown file.
    #[arg(long, value_name = "FILE")]
    instructions_file: Option<PathBuf>,
    /// How long one message may take (e.g. 10m) before its runner is stopped and the
    /// message answered with an error [default: the host's `up --turn-timeout`].
    #[arg(long, value_name = "DURATION")]
    turn_timeout: Option<String>,
    /// How long a runner with nothing to do stays warm (e.g. 1h to keep it ready, 10s to
    /// free memory soon) [default: the host's `up --idle-timeout`].
    #[arg(long, value_name = "DURATION")]
    idle_timeout: Option<String>,
    /// Messages of different conversations this agent handles at once, each in its own
    /// sandbox (1-8; a conversation's messages always go one at a time) [default: 1].
    /// A running host applies it at the agent's next message.
    #[arg(long, value_name = "N")]
    concurrency: Option<u32>,
    /// Disk the agent's workspace may use (e.g. 512M, 10G) [default: 4G]. A sandbox
    /// whose workspace reaches it is stopped with a message; no single file may grow
    /// past it. As root the workspace is an image of its own a little larger than this,
    /// grown at the agent's next start when the quota is raised.
    #[arg(long, value_name = "SIZE")]
    workspace_quota: Option<String>,
}

impl ModelArgs {
    /// Refuses a new provider without a model: the agent's model (Claude's by default)
    /// belongs to the provider it had, and would be sent to the new one as it is.
    fn check_provider_change(&self, current: &AgentSettings) -> anyhow::Result<()> {
        match (&self.provider, &self.model) {
            (Some(provider), None) if provider.trim() != current.provider => bail!(
                "--provider {} needs --model too: the agent's model {} is {}'s",
                crate::output::clean(provider.trim()),
                current.model,
                current.provider
            ),
            _ => Ok(()),
        }
    }

    /// What was typed, for [`palisade_host::agents`], which checks all of it.
    fn draft(&self, profile: Option<String>) -> anyhow::Result<AgentDraft> {
        let instructions =
            match &self.instructions_file {
                Some(path) => Some(std::fs::read_to_string(path).with_context(|| {
                    format!("cannot read --instructions-file {}", path.display())
                })?),
                None => None,
            };
        Ok(AgentDraft {
            profile,
            provider: self.provider.clone(),
            model: self.model.clone(),
            base_url: self.base_url.clone(),
            instructions,
            turn_timeout: self.turn_timeout.clone(),
            idle_timeout: self.idle_timeout.clone(),
            concurrency: self.concurrency.map(|n| n.to_string()),
            workspace_quota: self.workspace_quota.clone(),
        })
    }
}

pub fn run(command: AgentsCommand, ctx: &Context) -> anyhow::Result<()> {
    match command {
        AgentsCommand::Create {
            name,
            profile,
            model,
        } => {
            model.check_provider_change(&AgentSettings::default())?;
            let draft = model.draft(Some(profile))?;
            let store = ctx.open_store()?;
            let agent = palisade_host::agents::create(&store, &name, &draft)?;
            if ctx.json {
                return output::print_json(&agent);
            }
            let settings = AgentSettings::from_json(&agent.settings).unwrap_or_default();
            output::print(&format!(
                "created agent {} (profile {}, {} model {})\n",
                agent.name, agent.profile, settings.provider, settings.model
            ))
        }
        AgentsCommand::Edit {
            name,
            profile,
            model,
        } => {
            let draft = model.draft(profile)?;
            let store = ctx.open_store()?;
            let current = store.get_agent(&AgentName::new(&name)?)?;
            model.check_provider_change(
                &AgentSettings::from_json(&current.settings).unwrap_or_default(),
            )?;
            let agent = palisade_host::agents::edit(&store, &name, &draft)?;
            if ctx.json {
                return output::print_json(&agent);
            }
            output::print(&format!("updated agent {}\n", agent.name))
        }
        AgentsCommand::Allow { from, to, approve } => {
            // Names are checked before the store is opened (or created).
            AgentName::new(&from)?;
            AgentName::new(&to)?;
            let store = ctx.open_store()?;
            let link = palisade_host::agents::allow(&store, &from, &to, approve.as_deref())?;
            if ctx.json {
                return output::print_json(&link);
            }
            let to = &link.to;
            let crossing = palisade_host::agents::compartment_words(&store, &link)?
                .map(|words| format!("\n{words}"))
                .unwrap_or_default();
            output::print(&format!(
                "agent {} may now message agent {to}{}{crossing}\n",
                link.from,
                match (link.approve_outbound, link.approve_inbound) {
                    (false, false) => String::new(),
                    (true, false) => " (each message approved before it leaves)".into(),
                    (false, true) => format!(" (each message approved before {to} gets it)"),
                    (true, true) => " (each message approved in both directions)".into(),
                }
            ))
        }
        AgentsCommand::Disallow { from, to } => {
            let (from, to) = (AgentName::new(&from)?, AgentName::new(&to)?);
            let store = ctx.open_store()?;
            palisade_host::agents::disallow(&store, from.as_str(), to.as_str())?;
            if ctx.json {
                return output::print_json(
                    &serde_json::json!({ "from": from, "to": to, "allowed": false }),
                );
            }
            output::print(&format!("agent {from} may no longer message agent {to}\n"))
        }
        AgentsCommand::Dial {
            name,
            preset,
            approvals,
            sanitize,
        } => {
            use palisade_policy::dial::Preset;
            let draft = palisade_host::agents::DialDraft {
                preset,
                approvals,
                sanitize,
            };
            let name = AgentName::new(&name)?;
            let store = ctx.open_store()?;
            let dial = palisade_host::agents::dial(&store, name.as_str(), &draft)?;
            if ctx.json {
                return output::print_json(&serde_json::json!({
                    "agent": name,
                    "preset": dial.preset().map(Preset::as_str),
                    "approvals": dial.approvals.as_str(),
                    "sanitize": dial.sanitize.as_str(),
                }));
            }
            let mut text = format!("agent {name}'s dial ({}):\n", dial.label());
            for line in dial.explain() {
                text.push_str("  ");
                text.push_str(&line);
                text.push('\n');
            }
            output::print(&text)
        }
        AgentsCommand::Links { name } => {
            let name = name.map(|n| AgentName::new(&n)).transpose()?;
            let store = ctx.open_store()?;
            let links = store.list_agent_links(name.as_ref())?;
            if ctx.json {
                return output::print_json(&links);
            }
            if links.is_empty() {
                return output::print(
                    "no agent may message another; allow one with `palisade agents allow FROM --to TO`\n",
                );
            }
            let mut table = Table::new(&["FROM", "TO", "APPROVE", "SINCE"]);
            for link in &links {
                let approve = match (link.approve_outbound, link.approve_inbound) {
                    (false, false) => "",
                    (true, false) => "outbound",
                    (false, true) => "inbound",
                    (true, true) => "both",
                };
                table.row(vec![
                    link.from.to_string(),
                    link.to.to_string(),
                    approve.to_string(),
                    output::relative(link.created_at_ms),
                ]);
            }
            output::print(&table.render())
        }
        AgentsCommand::List => {
            let store = ctx.open_store()?;
            let agents = store.list_agents()?;
            if ctx.json {
                return output::print_json(&agents);
            }
            if agents.is_empty() {
                return output::print(
                    "no agents yet; create one with `palisade agents create NAME`\n",
                );
            }
            let mut table = Table::new(&["NAME", "PROFILE", "TOKEN", "CREATED"]);
            for agent in &agents {
                table.row(vec![
                    agent.name.to_string(),
                    agent.profile.to_string(),
                    if agent.has_token { "issued" } else { "none" }.to_string(),
                    output::relative(agent.created_at_ms),
                ]);
            }
            output::print(&table.render())
        }
        AgentsCommand::Show { name } => {
            let name = AgentName::new(&name)?;
            let store = ctx.open_store()?;
            let agent = store.get_agent(&name)?;
            let secrets: Vec<String> = store
                .list_secrets()?
                .into_iter()
                .filter(|secret| secret.agents.contains(&name))
                .map(|secret| secret.name)
                .collect();
            let rules: Vec<String> = store
                .list_rules()?
                .into_iter()
                .filter(|rule| rule.agent.as_ref() == Some(&name))
                .map(|rule| rule.name)
                .collect();
            let policy = palisade_host::agents::plain_words(&store, &agent)?;
            let folders: Vec<String> = store
                .agent_folders(&name)?
                .into_iter()
                .map(|(folder, writable)| {
                    format!(
                        "{} at {}{}",
                        folder.name,
                        palisade_host::folders::destination(&folder.name).display(),
                        if writable { " (read-write)" } else { "" }
                    )
                })
                .collect();
            if ctx.json {
                let mut value = serde_json::to_value(&agent)?;
                if let Some(object) = value.as_object_mut() {
                    object.insert("folders".into(), serde_json::json!(folders));
                    object.insert("secrets".into(), serde_json::json!(secrets));
                    object.insert("rules".into(), serde_json::json!(rules));
                    object.insert("policy".into(), serde_json::json!(policy));
                }
                return output::print_json(&value);
            }
            let mut details = Details::new();
            details.field("name", agent.name.as_str());
            details.field("profile", agent.profile.as_str());
            details.field("created", output::when(agent.created_at_ms));
            details.field("token", if agent.has_token { "issued" } else { "none" });
            details.field("secrets", secrets.join(", "));
            details.field("rules", rules.join(", "));
            details.field("folders", folders.join(", "));
            if let Ok(settings) = AgentSettings::from_json(&agent.settings) {
                details.field("provider", &settings.provider);
                if settings.has_anthropics_default_at_openai() {
                    // As the dashboard says: no OpenAI-compatible server serves it.
                    details.field(
                        "model",
                        format!(
                            "{} (Anthropic's default, which an OpenAI-compatible server does not serve: choose one of its models with `palisade agents edit {} --model M`)",
                            settings.model, agent.name
                        ),
                    );
                } else {
                    details.field("model", &settings.model);
                }
                details.field("base url", settings.effective_base_url());
                if let Some(secs) = settings.idle_timeout_secs {
                    details.field(
                        "idle timeout",
                        humantime::format_duration(std::time::Duration::from_secs(secs))
                            .to_string(),
                    );
                }
                details.field("concurrency", settings.effective_concurrency().to_string());
                details.field(
                    "workspace quota",
                    palisade_sandbox::limits::format_bytes(settings.effective_workspace_quota()),
                );
                if let Some(secs) = settings.turn_timeout_secs {
                    details.field(
                        "turn timeout",
                        humantime::format_duration(std::time::Duration::from_secs(secs))
                            .to_string(),
                    );
                }
            }
            if agent.settings.as_object().is_some_and(|o| !o.is_empty()) {
                details.field("settings", agent.settings.to_string());
            }
            details.field(
                "instructions",
                palisade_host::settings::instructions_path(&ctx.home, name.as_str())
                    .display()
                    .to_string(),
            );
            let mut text = details.render();
            text.push_str("\nIn plain words:\n");
            for line in &policy {
                text.push_str("  - ");
                text.push_str(line);
                text.push('\n');
            }
            output::print(&text)
        }
        AgentsCommand::Delete { name, yes } => {
            let name = AgentName::new(&name)?;
            let store = ctx.open_store()?;
            // Fail on an unknown name before asking anything.
            store.get_agent(&name)?;
            if !yes
                && !crate::input::confirm(
                    &format!("delete agent {name}, its token, grants and bound rules?"),
                    &format!("delete agent {name}"),
                    "--yes",
                )?
            {
                bail!("not deleted: agent {name} was kept");
            }
            palisade_host::agents::delete(&store, name.as_str())?;
            if ctx.json {
                return output::print_json(&serde_json::json!({ "deleted": name }));
            }
            output::print(&format!("deleted agent {name}\n"))
        }
        AgentsCommand::Token { name, rotate } => {
            let name = AgentName::new(&name)?;
            let store = ctx.open_store()?;
            let token = store.agent_token(&name, rotate)?;
            if ctx.json {
                return output::print_json(
                    &serde_json::json!({ "agent": name, "token": token.expose() }),
                );
            }
            output::print(&format!("{}\n", token.expose()))
        }
    }
}
