//! `palisade rules …`: what the vault does with requests to a host/path/method.

use crate::context::Context;
use crate::output::{self, Table};
use palisade_store::input::RuleDraft;
use palisade_store::RuleRecord;

const CREATE_HELP: &str = "\
Examples:
  palisade rules create --name gmail-send-limit --host-pattern gmail.googleapis.com \\
      --path-pattern '/gmail/v1/users/*/messages/send' --action rate_limit \\
      --rate-limit 3 --rate-window 1h --agent mailer
  palisade rules create --name ask-before-send --host-pattern gmail.googleapis.com --method POST --action require_approval
  palisade rules create --name no-pastebin --host-pattern '*.pastebin.com' --action block --scope org
  palisade rules create --name github-today --host-pattern api.github.com --action allow --agent mailer --expires 8h
  palisade rules create --name no-db-console --host-pattern 127.0.0.1:5984 --action block

A host pattern with a port (127.0.0.1:5984, [::1]:8080, *.example.com:8443) matches
requests to that port only (a request that names no port goes to 443 for https, 80 for
http); one without a port matches every port of its host.

Rules are evaluated highest --priority first; the first match decides. Org-scoped rules
are the outer boundary: a user rule can never allow what an org rule blocks.";

const EDIT_HELP: &str = "\
Examples:
  palisade rules edit gmail-send-limit --rate-limit 5
  palisade rules edit ask-before-send --agent mailer --expires 8h
  palisade rules edit github-today --expires never --name github-always

Changing --action to something other than rate_limit drops the rate fields; changing it
to rate_limit needs --rate-limit and --rate-window unless the rule has them.";

#[derive(Debug, clap::Subcommand)]
pub enum RulesCommand {
    /// Add a rule.
    #[command(after_help = CREATE_HELP)]
    Create(Box<CreateArgs>),
    /// Change a rule: the options given replace its fields, the rest stay.
    #[command(after_help = EDIT_HELP)]
    Edit(Box<EditArgs>),
    /// Switch a rule off: it is kept (and listed) but the vault ignores it.
    #[command(after_help = "Example:\n  palisade rules disable ask-before-send")]
    Disable {
        /// The rule to switch off: its name, or its id as `palisade rules list` shows it.
        #[arg(value_name = "NAME_OR_ID")]
        name_or_id: String,
    },
    /// Switch a disabled rule on again.
    #[command(after_help = "Example:\n  palisade rules enable ask-before-send")]
    Enable {
        /// The rule to switch on: its name, or its id as `palisade rules list` shows it.
        #[arg(value_name = "NAME_OR_ID")]
        name_or_id: String,
    },
    /// List rules, highest priority first.
    List,
    /// Delete a rule by name or id.
    Delete {
        /// The rule to delete: its name, or its id as `palisade rules list` shows it.
        #[arg(value_name = "NAME_OR_ID")]
        name_or_id: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// A unique name for the rule (not all digits).
    #[arg(long)]
    name: String,
    /// Host: exact (`api.example.com`), `*.example.com`, or `*` for every host; with a
    /// port (`127.0.0.1:8080`, `[::1]:8080`) only requests to that port match.
    #[arg(long, value_name = "PATTERN")]
    host_pattern: String,
    /// Path: exact (`/v1/messages`), a prefix (`/v1/*`), `*` matching one segment inside.
    #[arg(long, value_name = "PATTERN")]
    path_pattern: Option<String>,
    /// HTTP method to match (GET, POST, …); default any.
    #[arg(long, default_value = "*")]
    method: String,
    /// What to do with a matching request.
    #[arg(long, value_name = "allow|block|rate_limit|require_approval")]
    action: String,
    /// For rate_limit: requests admitted per window.
    #[arg(long, value_name = "N")]
    rate_limit: Option<u32>,
    /// For rate_limit: the sliding window (30s, 1m, 1h, 1d, or minute|hour|day).
    #[arg(long, value_name = "WINDOW", visible_alias = "rate-limit-window")]
    rate_window: Option<String>,
    /// Apply only to this agent (default: every agent).
    #[arg(long)]
    agent: Option<String>,
    /// Higher is evaluated first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i64,
    /// Stop matching after a duration (`2h`, `7d`) or at an RFC 3339 UTC time (`2026-12-01T00:00:00Z`).
    #[arg(long, value_name = "DURATION_OR_TIME")]
    expires: Option<String>,
    /// Match only requests whose body contains TEXT.
    #[arg(long, value_name = "TEXT")]
    body_contains: Option<String>,
    /// `org` (outer boundary, set by an admin) or `user` (grants within it).
    #[arg(long, default_value = "user", value_name = "org|user")]
    scope: String,
    /// For require_approval: how long a held request waits for a person before it is
    /// denied (`5m`, `1h`; default: the gateway's `--approval-timeout`, 10 min).
    #[arg(long, value_name = "DURATION")]
    approval_timeout: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct EditArgs {
    /// The rule to change.
    #[arg(value_name = "NAME_OR_ID")]
    name_or_id: String,
    /// A new name.
    #[arg(long)]
    name: Option<String>,
    /// Host: exact (`api.example.com`), `*.example.com`, or `*` for every host; with a
    /// port (`127.0.0.1:8080`, `[::1]:8080`) only requests to that port match.
    #[arg(long, value_name = "PATTERN")]
    host_pattern: Option<String>,
    /// A path pattern, or `any` to match every path.
    #[arg(long, value_name = "PATTERN")]
    path_pattern: Option<String>,
    /// HTTP method to match (GET, POST, …), or `any` for every method.
    #[arg(long)]
    method: Option<String>,
    /// What to do with a matching request.
    #[arg(long, value_name = "allow|block|rate_limit|require_approval")]
    action: Option<String>,
    /// For rate_limit: requests admitted per window.
    #[arg(long, value_name = "N")]
    rate_limit: Option<u32>,
    /// For rate_limit: the sliding window (30s, 1m, 1h, 1d, or minute|hour|day).
    #[arg(long, value_name = "WINDOW", visible_alias = "rate-limit-window")]
    rate_window: Option<String>,
    /// Bind to this agent, or `any` for every agent.
    #[arg(long)]
    agent: Option<String>,
    /// Higher is evaluated first.
    #[arg(long, allow_negative_numbers = true)]
    priority: Option<i64>,
    /// A duration, an RFC 3339 UTC time, or `never`.
    #[arg(long, value_name = "DURATION_OR_TIME")]
    expires: Option<String>,
    /// Text the body must contain, or an empty string to drop the condition.
    #[arg(long, value_name = "TEXT")]
    body_contains: Option<String>,
    /// `org` (outer boundary, set by an admin) or `user` (grants within it).
    #[arg(long, value_name = "org|user")]
    scope: Option<String>,
    /// For require_approval: how long a held request waits, or `default`.
    #[arg(long, value_name = "DURATION")]
    approval_timeout: Option<String>,
}

/// What a rule command prints about the rule it changed.
fn print_rule(ctx: &Context, verb: &str, record: &RuleRecord) -> anyhow::Result<()> {
    if ctx.json {
        return output::print_json(record);
    }
    output::print(&format!(
        "{verb} rule {} (id {}): {} {} {}{}{}\n",
        output::clean(&record.name),
        record.id,
        record.action,
        output::clean(&record.method),
        output::clean(&record.host_pattern),
        output::clean(record.path_pattern.as_deref().unwrap_or("")),
        if record.enabled { "" } else { " (disabled)" },
    ))
}

pub fn run(command: RulesCommand, ctx: &Context) -> anyhow::Result<()> {
    match command {
        RulesCommand::Create(args) => create(*args, ctx),
        RulesCommand::Edit(args) => edit(*args, ctx),
        RulesCommand::Disable { name_or_id } => {
            let record = ctx.open_store()?.set_rule_enabled(&name_or_id, false)?;
            print_rule(ctx, "disabled", &record)
        }
        RulesCommand::Enable { name_or_id } => {
            let record = ctx.open_store()?.set_rule_enabled(&name_or_id, true)?;
            print_rule(ctx, "enabled", &record)
        }
        RulesCommand::List => {
            let store = ctx.open_store()?;
            let mut rules = store.list_rules()?;
            rules.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.id.cmp(&b.id)));
            if ctx.json {
                return output::print_json(&rules);
            }
            if rules.is_empty() {
                return output::print("no rules yet; add one with `palisade rules create`\n");
            }
            let now = output::now_ms();
            let mut table = Table::new(&[
                "ID", "NAME", "HOST", "PATH", "METHOD", "ACTION", "AGENT", "PRIORITY", "SCOPE",
                "EXPIRES",
            ]);
            for rule in &rules {
                let action = match (rule.rate_limit, &rule.rate_window) {
                    (Some(limit), Some(window)) => format!("{} {limit}/{window}", rule.action),
                    _ => rule.action.clone(),
                };
                let action = match &rule.body_contains {
                    Some(text) => format!("{action} if body has {text:?}"),
                    None => action,
                };
                let action = if rule.enabled {
                    action
                } else {
                    format!("{action} (disabled)")
                };
                let expires = match rule.expires_at_ms {
                    Some(at) if at <= now => format!("expired {}", output::relative_to(at, now)),
                    Some(at) => output::relative_to(at, now),
                    None => String::new(),
                };
                table.row(vec![
                    rule.id.to_string(),
                    rule.name.clone(),
                    rule.host_pattern.clone(),
                    rule.path_pattern.clone().unwrap_or_default(),
                    rule.method.clone(),
                    action,
                    rule.agent
                        .as_ref()
                        .map(|a| a.to_string())
                        .unwrap_or_default(),
                    rule.priority.to_string(),
                    rule.scope.clone(),
                    expires,
                ]);
            }
            output::print(&table.render())
        }
        RulesCommand::Delete { name_or_id } => {
            let store = ctx.open_store()?;
            store.delete_rule(&name_or_id)?;
            if ctx.json {
                return output::print_json(&serde_json::json!({ "deleted": name_or_id }));
            }
            output::print(&format!("deleted rule {}\n", output::clean(&name_or_id)))
        }
    }
}

fn create(args: CreateArgs, ctx: &Context) -> anyhow::Result<()> {
    let rule = RuleDraft {
        name: args.name,
        host_pattern: args.host_pattern,
        path_pattern: args.path_pattern,
        method: args.method,
        action: args.action,
        rate_limit: args.rate_limit,
        rate_window: args.rate_window,
        agent: args.agent,
        priority: args.priority,
        expires: args.expires,
        body_contains: args.body_contains,
        scope: args.scope,
        approval_timeout: args.approval_timeout,
        current_expires_at_ms: None,
    }
    .check(output::now_ms())?;
    let record = ctx.open_store()?.create_rule(rule)?;
    print_rule(ctx, "created", &record)
}

fn edit(args: EditArgs, ctx: &Context) -> anyhow::Result<()> {
    let store = ctx.open_store()?;
    let current = store.get_rule(&args.name_or_id)?;
    let mut draft = RuleDraft::from_record(&current);
    let or_none = |text: String, none: &str| (text != none).then_some(text);
    if let Some(name) = args.name {
        draft.name = name;
    }
    if let Some(host) = args.host_pattern {
        draft.host_pattern = host;
    }
    if let Some(path) = args.path_pattern {
        draft.path_pattern = or_none(path, "any");
    }
    if let Some(method) = args.method {
        draft.method = method;
    }
    if let Some(action) = args.action {
        if action != "rate_limit" {
            draft.rate_limit = None;
            draft.rate_window = None;
        }
        draft.action = action;
    }
    if let Some(limit) = args.rate_limit {
        draft.rate_limit = Some(limit);
    }
    if let Some(window) = args.rate_window {
        draft.rate_window = Some(window);
    }
    if let Some(agent) = args.agent {
        draft.agent = or_none(agent, "any");
    }
    if let Some(priority) = args.priority {
        draft.priority = priority;
    }
    if let Some(expires) = args.expires {
        draft.expires = Some(expires);
    }
    if let Some(text) = args.body_contains {
        draft.body_contains = or_none(text, "");
    }
    if let Some(scope) = args.scope {
        draft.scope = scope;
    }
    if let Some(timeout) = args.approval_timeout {
        draft.approval_timeout = or_none(timeout, "default");
    }
    if draft.action != "require_approval" {
        draft.approval_timeout = None;
    }
    let rule = draft.check(output::now_ms())?;
    let record = store.update_rule(&current.id.to_string(), rule)?;
    print_rule(ctx, "updated", &record)
}
