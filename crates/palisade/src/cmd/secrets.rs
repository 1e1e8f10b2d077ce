//! `palisade secrets …`: credentials the vault injects, and which agents get them.
//!
//! Values go in (from a file or stdin) and never come out: no command here prints one.

use crate::context::Context;
use crate::input::{self, VALUE_ON_ARGV};
use crate::output::{self, Table};
use anyhow::bail;
use palisade_policy::AgentName;
use palisade_store::input::SecretDraft;
use std::path::PathBuf;

const CREATE_HELP: &str = "\
Examples:
  palisade secrets create --name gmail --host-pattern gmail.googleapis.com --inject bearer --agent mailer < token.txt
  palisade secrets create --name claude --host-pattern api.anthropic.com --inject anthropic --agent mailer --value-file key.txt
  palisade secrets create --name gh --host-pattern api.github.com --inject 'header:Authorization:token {value}' --agent coder
  palisade secrets create --name tg --host-pattern api.telegram.org --inject 'path-template:/bot{value}/' --agent notifier
  palisade secrets create --name local-llm --host-pattern 127.0.0.1:8080 --path-pattern '/v1/*' --inject bearer --agent coder < key.txt

A host pattern with a port (127.0.0.1:8080, [::1]:8080, *.example.com:8443) is sent on
that port only (a request that names no port goes to 443 for https, 80 for http); one
without a port is sent on every port of its host. On 127.0.0.1 every port is another
service: give the port.

The value is read from --value-file, or else from stdin (prompted without echo on a
terminal). One trailing newline is removed. Values are never accepted as arguments.";

#[derive(Debug, clap::Subcommand)]
pub enum SecretsCommand {
    /// Store a credential and say where the vault injects it.
    #[command(after_help = CREATE_HELP)]
    Create(Box<CreateArgs>),
    /// List secrets (names, hosts, paths, injection, agents; never values).
    List,
    /// Replace a secret's value (a new key); hosts, injection and grants stay.
    #[command(
        after_help = "Examples:\n  palisade secrets rotate gmail < new-token.txt\n  palisade secrets rotate claude --value-file new-key.txt\n\nThe value is read as for `secrets create`; the vault injects the new one from the next request."
    )]
    Rotate {
        /// The secret to give a new value (see `palisade secrets list`).
        name: String,
        /// Read the value from FILE (`-` for stdin) instead of stdin.
        #[arg(long, value_name = "FILE")]
        value_file: Option<PathBuf>,
    },
    /// Delete a secret; the vault stops injecting it on the next request.
    Delete {
        /// The secret to delete (see `palisade secrets list`).
        name: String,
    },
    /// Let an agent have a secret injected.
    #[command(after_help = "Example:\n  palisade secrets grant gmail --agent mailer")]
    Grant {
        /// The secret to grant (see `palisade secrets list`).
        name: String,
        /// The agent to inject it for (a sensitive secret is never granted to a
        /// research agent).
        #[arg(long)]
        agent: String,
    },
    /// Stop injecting a secret for an agent.
    #[command(after_help = "Example:\n  palisade secrets revoke gmail --agent mailer")]
    Revoke {
        /// The secret to revoke (see `palisade secrets list`).
        name: String,
        /// The agent to stop injecting it for.
        #[arg(long)]
        agent: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// A unique name for the secret.
    #[arg(long)]
    name: String,
    /// Host the secret is sent to: exact (`api.example.com`) or `*.example.com`, with a
    /// port to send it on that port only (`127.0.0.1:8080`, `[::1]:8080`); without one,
    /// on every port.
    #[arg(long, value_name = "PATTERN")]
    host_pattern: String,
    /// Only inject on these paths: exact (`/v1/messages`) or a prefix (`/v1/*`).
    #[arg(long, value_name = "PATTERN")]
    path_pattern: Option<String>,
    /// How the value is written: bearer | anthropic | header:NAME[:FORMAT with {value}] |
    /// query:NAME | path-template:/prefix{value}/
    #[arg(long, value_name = "SPEC")]
    inject: String,
    /// Grant to this agent (repeatable). Without any, no agent gets it until granted.
    #[arg(long, value_name = "AGENT")]
    agent: Vec<String>,
    /// Higher wins among secrets whose paths are equally specific.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i64,
    /// A credential to data or actions that matter (mail, payments, code): never granted
    /// to, nor injected for, a research-profile agent (agents that read the internet).
    #[arg(long)]
    sensitive: bool,
    /// Read the value from FILE (`-` for stdin) instead of stdin.
    #[arg(long, value_name = "FILE")]
    value_file: Option<PathBuf>,
    /// Refused: values are never taken from the command line.
    #[arg(long, hide = true, num_args = 0..=1, allow_hyphen_values = true)]
    value: Option<Option<String>>,
    /// Refused without echoing: a stray argument is most likely a pasted value.
    #[arg(hide = true)]
    stray: Vec<String>,
}

pub fn run(command: SecretsCommand, ctx: &Context) -> anyhow::Result<()> {
    match command {
        SecretsCommand::Create(args) => create(*args, ctx),
        SecretsCommand::List => {
            let store = ctx.open_store()?;
            let secrets = store.list_secrets()?;
            if ctx.json {
                return output::print_json(&secrets);
            }
            if secrets.is_empty() {
                return output::print("no secrets yet; add one with `palisade secrets create`\n");
            }
            let mut table = Table::new(&[
                "NAME",
                "HOST",
                "PATH",
                "INJECT",
                "AGENTS",
                "PRIORITY",
                "SENSITIVE",
                "CREATED",
            ]);
            for secret in &secrets {
                let agents: Vec<&str> = secret.agents.iter().map(AgentName::as_str).collect();
                table.row(vec![
                    secret.name.clone(),
                    secret.host_pattern.clone(),
                    secret.path_pattern.clone().unwrap_or_default(),
                    secret.injection.clone(),
                    agents.join(","),
                    secret.priority.to_string(),
                    if secret.sensitive { "yes" } else { "" }.to_string(),
                    output::relative(secret.created_at_ms),
                ]);
            }
            output::print(&table.render())
        }
        SecretsCommand::Rotate { name, value_file } => {
            let store = ctx.open_store()?;
            // An unknown name is refused before anyone types a value.
            store.get_secret(&name)?;
            let value = input::read_secret_value(value_file.as_deref(), &name)?;
            let record = store.rotate_secret(&name, &value)?;
            if ctx.json {
                return output::print_json(&record);
            }
            output::print(&format!(
                "rotated secret {}; the vault injects the new value from the next request\n",
                output::clean(&name)
            ))
        }
        SecretsCommand::Delete { name } => {
            let store = ctx.open_store()?;
            store.delete_secret(&name)?;
            if ctx.json {
                return output::print_json(&serde_json::json!({ "deleted": name }));
            }
            output::print(&format!("deleted secret {}\n", output::clean(&name)))
        }
        SecretsCommand::Grant { name, agent } => {
            let agent = AgentName::new(&agent)?;
            let store = ctx.open_store()?;
            store.grant_secret(&name, &agent)?;
            change_grant(ctx, &store, "granted", &name, &agent)
        }
        SecretsCommand::Revoke { name, agent } => {
            let agent = AgentName::new(&agent)?;
            let store = ctx.open_store()?;
            store.revoke_secret(&name, &agent)?;
            change_grant(ctx, &store, "revoked", &name, &agent)
        }
    }
}

fn change_grant(
    ctx: &Context,
    store: &palisade_store::Store,
    verb: &str,
    name: &str,
    agent: &AgentName,
) -> anyhow::Result<()> {
    let secret = store.get_secret(name)?;
    if ctx.json {
        return output::print_json(&secret);
    }
    output::print(&format!(
        "{verb} secret {} {} agent {agent}\n",
        output::clean(name),
        if verb == "granted" { "to" } else { "from" }
    ))
}

fn create(args: CreateArgs, ctx: &Context) -> anyhow::Result<()> {
    if args.value.is_some() || !args.stray.is_empty() {
        bail!(VALUE_ON_ARGV);
    }
    let checked = SecretDraft {
        name: args.name,
        host_pattern: args.host_pattern,
        path_pattern: args.path_pattern,
        inject: args.inject,
        agents: args.agent,
        priority: args.priority,
        sensitive: args.sensitive,
    }
    .check()?;
    let store = ctx.open_store()?;
    store.check_new_secret(&checked)?;
    let value = input::read_secret_value(args.value_file.as_deref(), &checked.name)?;
    let record = store.create_secret(checked.with_value(value))?;
    if ctx.json {
        return output::print_json(&record);
    }
    let agents: Vec<&str> = record.agents.iter().map(AgentName::as_str).collect();
    let mut text = format!(
        "created secret {} for {}{} ({})",
        output::clean(&record.name),
        output::clean(&record.host_pattern),
        output::clean(record.path_pattern.as_deref().unwrap_or("")),
        output::clean(&record.injection),
    );
    if agents.is_empty() {
        text.push_str("\nno agent is granted it yet; grant one with `palisade secrets grant NAME --agent AGENT`\n");
    } else {
        text.push_str(&format!(", granted to {}\n", agents.join(", ")));
    }
    output::print(&text)
}
