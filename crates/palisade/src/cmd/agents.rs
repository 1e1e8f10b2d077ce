//! `palisade agents …`: create, inspect and remove agents and their gateway tokens.

use crate::context::Context;
use crate::output::{self, Details, Table};
use anyhow::bail;
use palisade_policy::{AgentName, Profile};

#[derive(Debug, clap::Subcommand)]
pub enum AgentsCommand {
    /// Register a new agent.
    #[command(
        after_help = "Examples:\n  palisade agents create helper\n  palisade agents create mailer --profile action"
    )]
    Create {
        /// 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit.
        name: String,
        /// Default egress: `research` may reach any host but gets no sensitive secrets;
        /// `action` is refused every host not named by a rule or a granted secret.
        #[arg(long, default_value = "research", value_name = "research|action")]
        profile: String,
    },
    /// List agents.
    List,
    /// Show one agent with the secrets granted to it and the rules bound to it.
    Show { name: String },
    /// Delete an agent, its token, its secret grants and the rules bound to it.
    #[command(after_help = "Asks for confirmation on a terminal; scripts pass --yes.")]
    Delete {
        name: String,
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(short, long)]
        yes: bool,
    },
    /// Print the agent's token for the standalone TCP listener (nothing else, so scripts can capture it).
    #[command(
        long_about = "Print the agent's token for the standalone TCP listener.\n\nAn agent outside a sandbox authenticates to `palisade vault serve` with\n`Proxy-Authorization: Basic base64(\"x:\" + TOKEN)`, i.e. a proxy URL of the form\nhttp://x:TOKEN@127.0.0.1:10255. The same token is printed every time until --rotate\nissues a new one; the old one stops working at once.",
        after_help = "Examples:\n  TOKEN=$(palisade agents token mailer)\n  palisade agents token mailer --rotate"
    )]
    Token {
        name: String,
        /// Issue a new token; the previous one stops working.
        #[arg(long)]
        rotate: bool,
    },
}

pub fn run(command: AgentsCommand, ctx: &Context) -> anyhow::Result<()> {
    match command {
        AgentsCommand::Create { name, profile } => {
            let name = AgentName::new(&name)?;
            let profile: Profile = profile.parse()?;
            let store = ctx.open_store()?;
            let agent = store.create_agent(&name, profile)?;
            if ctx.json {
                return output::print_json(&agent);
            }
            output::print(&format!("created agent {name} (profile {profile})\n"))
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
            if ctx.json {
                let mut value = serde_json::to_value(&agent)?;
                if let Some(object) = value.as_object_mut() {
                    object.insert("secrets".into(), serde_json::json!(secrets));
                    object.insert("rules".into(), serde_json::json!(rules));
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
            if agent.settings.as_object().is_some_and(|o| !o.is_empty()) {
                details.field("settings", agent.settings.to_string());
            }
            output::print(&details.render())
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
            store.delete_agent(&name)?;
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
