//! `palisade rules …`: what the vault does with requests to a host/path/method.

use crate::context::Context;
use crate::input;
use crate::output::{self, Table};
use anyhow::bail;
use palisade_policy::rule::RuleError;
use palisade_policy::{
    AgentName, HostPattern, MethodPattern, PathPattern, RateWindow, RuleAction, Scope,
};
use palisade_store::NewRule;

const CREATE_HELP: &str = "\
Examples:
  palisade rules create --name gmail-send-limit --host-pattern gmail.googleapis.com \\
      --path-pattern '/gmail/v1/users/*/messages/send' --action rate_limit \\
      --rate-limit 3 --rate-window 1h --agent mailer
  palisade rules create --name ask-before-send --host-pattern gmail.googleapis.com --method POST --action require_approval
  palisade rules create --name no-pastebin --host-pattern '*.pastebin.com' --action block --scope org
  palisade rules create --name github-today --host-pattern api.github.com --action allow --agent mailer --expires 8h

Rules are evaluated highest --priority first; the first match decides. Org-scoped rules
are the outer boundary: a user rule can never allow what an org rule blocks.";

#[derive(Debug, clap::Subcommand)]
pub enum RulesCommand {
    /// Add a rule.
    #[command(after_help = CREATE_HELP)]
    Create(Box<CreateArgs>),
    /// List rules, highest priority first.
    List,
    /// Delete a rule by name or id.
    Delete {
        #[arg(value_name = "NAME_OR_ID")]
        name_or_id: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// A unique name for the rule (not all digits).
    #[arg(long)]
    name: String,
    /// Host: exact (`api.example.com`), `*.example.com`, or `*` for every host.
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

pub fn run(command: RulesCommand, ctx: &Context) -> anyhow::Result<()> {
    match command {
        RulesCommand::Create(args) => create(*args, ctx),
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

/// Turns `--action` and the rate flags into one action, refusing combinations that
/// would silently mean something else than what was typed.
fn parse_action(
    action: &str,
    rate_limit: Option<u32>,
    rate_window: Option<&str>,
) -> anyhow::Result<RuleAction> {
    let action = match action {
        "allow" => RuleAction::Allow,
        "block" => RuleAction::Block,
        "require_approval" => RuleAction::RequireApproval,
        "rate_limit" => {
            let (Some(limit), Some(window)) = (rate_limit, rate_window) else {
                bail!("--action rate_limit needs --rate-limit N and --rate-window WINDOW (e.g. --rate-limit 3 --rate-window 1h)");
            };
            if limit == 0 {
                bail!("--rate-limit 0 would admit nothing; use --action block instead");
            }
            let window: RateWindow = window.parse()?;
            return Ok(RuleAction::RateLimit { limit, window });
        }
        other => return Err(RuleError::Action(output::clean(other)).into()),
    };
    if rate_limit.is_some() || rate_window.is_some() {
        bail!(
            "--rate-limit and --rate-window apply only to --action rate_limit, not {}",
            action.kind()
        );
    }
    Ok(action)
}

fn create(args: CreateArgs, ctx: &Context) -> anyhow::Result<()> {
    let name = super::check_name(&args.name, "rule")?;
    let host = HostPattern::parse(&args.host_pattern)?;
    let path = args
        .path_pattern
        .as_deref()
        .map(PathPattern::parse)
        .transpose()?;
    let method = MethodPattern::parse(&args.method)?;
    let action = parse_action(&args.action, args.rate_limit, args.rate_window.as_deref())?;
    let agent = args.agent.as_deref().map(AgentName::new).transpose()?;
    let scope: Scope = args.scope.parse()?;
    let expires_at_ms = args
        .expires
        .as_deref()
        .map(|text| input::parse_time(text, "--expires", true, output::now_ms()))
        .transpose()?;
    if args.body_contains.as_deref() == Some("") {
        bail!("--body-contains is empty; give the text a body must contain");
    }
    let approval_timeout_ms = match &args.approval_timeout {
        None => None,
        Some(_) if action != RuleAction::RequireApproval => {
            bail!("--approval-timeout applies only to --action require_approval")
        }
        Some(text) => {
            let duration = humantime::parse_duration(text).map_err(|_| {
                anyhow::anyhow!(
                    "--approval-timeout {:?} is not a duration such as 5m or 1h",
                    output::clean(text)
                )
            })?;
            if duration < std::time::Duration::from_secs(1)
                || duration > std::time::Duration::from_secs(7 * 24 * 3600)
            {
                bail!("--approval-timeout must be between 1s and 7d");
            }
            Some(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX))
        }
    };

    let store = ctx.open_store()?;
    let record = store.create_rule(NewRule {
        name,
        host,
        path,
        method,
        action,
        agent,
        priority: args.priority,
        expires_at_ms,
        body_contains: args.body_contains,
        scope,
        approval_timeout_ms,
    })?;
    if ctx.json {
        return output::print_json(&record);
    }
    output::print(&format!(
        "created rule {} (id {}): {} {} {}{}\n",
        output::clean(&record.name),
        record.id,
        record.action,
        output::clean(&record.method),
        output::clean(&record.host_pattern),
        output::clean(record.path_pattern.as_deref().unwrap_or("")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_flags_belong_to_rate_limit_only() {
        assert!(parse_action("rate_limit", None, Some("1h")).is_err());
        assert!(parse_action("rate_limit", Some(3), None).is_err());
        assert!(parse_action("rate_limit", Some(0), Some("1h")).is_err());
        assert!(parse_action("block", Some(3), None).is_err());
        assert!(parse_action("allow", None, Some("1h")).is_err());
        assert!(matches!(
            parse_action("block", None, None),
            Ok(RuleAction::Block)
        ));
        assert!(parse_action("deny", None, None).is_err());
    }
}
