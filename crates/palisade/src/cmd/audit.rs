//! `palisade audit …`: read the hash-chained audit log and check it was not edited.

use crate::context::Context;
use crate::input;
use crate::output::{self, Table};
use anyhow::bail;
use palisade_store::AuditFilter;

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// List audit rows, newest first.
    #[command(
        after_help = "Examples:\n  palisade audit list --agent mailer --since 1h\n  palisade audit list --decision blocked --limit 20\n  palisade audit list --event secret.create --json"
    )]
    List {
        /// Only rows about this agent.
        #[arg(long)]
        agent: Option<String>,
        /// Only this event (request, secret.create, rule.delete, approval.decide, …).
        #[arg(long)]
        event: Option<String>,
        /// Only this decision (injected, allowed, blocked, default_denied, rate_limited, held, …).
        #[arg(long)]
        decision: Option<String>,
        /// Only requests to this host.
        #[arg(long)]
        host: Option<String>,
        /// Only rows newer than a duration ago (`1h`, `2d`) or an RFC 3339 UTC time.
        #[arg(long, value_name = "DURATION_OR_TIME")]
        since: Option<String>,
        /// At most this many rows (1 to 10000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Recompute the hash chain; exit 1 naming the first row that was edited or deleted.
    #[command(
        after_help = "Prints `audit chain intact: N rows` and exits 0, or exits 1 with\n`audit chain broken at row ID: PROBLEM`."
    )]
    Verify,
}

pub fn run(command: AuditCommand, ctx: &Context) -> anyhow::Result<()> {
    match command {
        AuditCommand::List {
            agent,
            event,
            decision,
            host,
            since,
            limit,
        } => {
            if !(1..=10_000).contains(&limit) {
                bail!("--limit {limit} is out of range: use 1 to 10000");
            }
            let since_ms = since
                .as_deref()
                .map(|text| input::parse_time(text, "--since", false, output::now_ms()))
                .transpose()?;
            let filter = AuditFilter {
                agent,
                event,
                decision,
                host,
                since_ms,
                limit: Some(limit),
                ..Default::default()
            };
            let store = ctx.open_store()?;
            let rows = store.list_audit(&filter)?;
            if ctx.json {
                return output::print_json(&rows);
            }
            if rows.is_empty() {
                return output::print("no audit rows match\n");
            }
            let now = output::now_ms();
            let mut table = Table::new(&[
                "ID", "WHEN", "EVENT", "AGENT", "DECISION", "REQUEST", "STATUS", "RULE", "SECRET",
                "ACTOR",
            ]);
            for row in &rows {
                let entry = &row.entry;
                let request = [
                    entry.method.as_deref(),
                    entry.host.as_deref(),
                    entry.path.as_deref(),
                ];
                let request = match request {
                    [Some(method), Some(host), path] => {
                        format!("{method} {host}{}", path.unwrap_or(""))
                    }
                    [None, Some(host), path] => format!("{host}{}", path.unwrap_or("")),
                    _ => String::new(),
                };
                let status = match (entry.status, entry.latency_ms) {
                    (Some(status), Some(latency)) => format!("{status} {latency:.0}ms"),
                    (Some(status), None) => status.to_string(),
                    _ => String::new(),
                };
                table.row(vec![
                    row.id.to_string(),
                    output::relative_to(row.at_ms, now),
                    entry.event.clone(),
                    entry.agent.clone().unwrap_or_default(),
                    entry.decision.clone().unwrap_or_default(),
                    request,
                    status,
                    entry.rule.clone().unwrap_or_default(),
                    entry.secret.clone().unwrap_or_default(),
                    entry.actor.clone().unwrap_or_default(),
                ]);
            }
            output::print(&table.render())
        }
        AuditCommand::Verify => {
            let store = ctx.open_store()?;
            let report = store.verify_audit()?;
            if ctx.json {
                output::print_json(&report)?;
            }
            if report.ok {
                if !ctx.json {
                    output::print(&format!("audit chain intact: {} rows\n", report.rows))?;
                }
                return Ok(());
            }
            let problem = report.problem.as_deref().unwrap_or("unknown problem");
            match report.first_bad_id {
                Some(id) => bail!("audit chain broken at row {id}: {}", output::clean(problem)),
                None => bail!("audit chain broken: {}", output::clean(problem)),
            }
        }
    }
}
