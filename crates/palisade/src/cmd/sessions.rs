//! `palisade sessions list|show|reset`: conversations with agents, one per
//! (agent, conversation key), with their messages and replies.

use crate::context::Context;
use crate::output::{self, Details, Table};
use palisade_policy::AgentName;

#[derive(Debug, clap::Subcommand)]
pub enum SessionsCommand {
    /// List sessions, most recently active first.
    List {
        /// Only this agent's sessions.
        #[arg(long, value_name = "NAME")]
        agent: Option<String>,
    },
    /// Show a session's messages and replies.
    Show {
        /// The session's id, as `palisade sessions list` shows it.
        id: i64,
    },
    /// Forget a session's history (the agent starts the conversation afresh; messages stay on record).
    Reset {
        /// The session's id, as `palisade sessions list` shows it.
        id: i64,
    },
}

pub fn run(command: SessionsCommand, ctx: &Context) -> anyhow::Result<()> {
    let store = ctx.open_store()?;
    match command {
        SessionsCommand::List { agent } => {
            let agent = agent.map(|name| AgentName::new(&name)).transpose()?;
            if let Some(agent) = &agent {
                store.get_agent(agent)?;
            }
            let sessions = store.list_sessions(agent.as_ref())?;
            if ctx.json {
                return output::print_json(&sessions);
            }
            if sessions.is_empty() {
                return output::print(
                    "no sessions yet; start one with `palisade send --agent NAME \"hello\"`\n",
                );
            }
            let mut table = Table::new(&["ID", "AGENT", "CONVERSATION", "MESSAGES", "ACTIVE"]);
            for session in &sessions {
                table.row(vec![
                    session.id.to_string(),
                    session.agent.to_string(),
                    output::clean(&session.conversation),
                    session.messages.to_string(),
                    output::relative(session.updated_at_ms),
                ]);
            }
            output::print(&table.render())
        }
        SessionsCommand::Show { id } => {
            let session = store.get_session(id)?;
            let messages = store.session_messages(id)?;
            let sent = store.session_outbound_messages(id)?;
            let sent_for = |message_id: i64| {
                sent.iter()
                    .filter(move |m| m.inbound_id == message_id)
                    .collect::<Vec<_>>()
            };
            if ctx.json {
                let messages: Vec<_> = messages
                    .iter()
                    .map(|(message, reply)| {
                        serde_json::json!({
                            "message": message,
                            "sent": sent_for(message.id),
                            "reply": reply,
                        })
                    })
                    .collect();
                return output::print_json(&serde_json::json!({
                    "session": session,
                    "messages": messages,
                }));
            }
            let mut details = Details::new();
            details.field("id", session.id.to_string());
            details.field("agent", session.agent.as_str());
            details.field("conversation", output::clean(&session.conversation));
            details.field("created", output::when(session.created_at_ms));
            details.field("active", output::when(session.updated_at_ms));
            let mut text = details.render();
            for (message, reply) in &messages {
                text.push_str(&format!(
                    "\n#{} {} via {} ({}, {} attempt(s))\n> {}\n",
                    message.id,
                    output::when(message.created_at_ms),
                    output::clean(&message.channel),
                    message.status.as_str(),
                    message.attempts,
                    output::clean(&message.text)
                ));
                for outbound in sent_for(message.id) {
                    text.push_str(&format!("< (sent) {}\n", output::clean(&outbound.text)));
                }
                match reply {
                    Some(reply) if reply.is_error => {
                        text.push_str(&format!("! {}\n", output::clean(&reply.text)))
                    }
                    Some(reply) if !reply.delivered => text.push_str(&format!(
                        "< {} (not seen yet; `palisade chat` shows it)\n",
                        output::clean(&reply.text)
                    )),
                    Some(reply) => text.push_str(&format!("< {}\n", output::clean(&reply.text))),
                    None => text.push_str("(no reply yet)\n"),
                }
            }
            output::print(&text)
        }
        SessionsCommand::Reset { id } => {
            store.reset_session(id)?;
            if ctx.json {
                return output::print_json(&serde_json::json!({ "reset": id }));
            }
            output::print(&format!(
                "session {id} reset: the agent starts this conversation afresh\n"
            ))
        }
    }
}
