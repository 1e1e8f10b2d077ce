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
        after_help = "Examples:\n  palisade audit list --agent mailer --since 1h\n  palisade audit list --decision blocked --limit 20\n  palisade audit list --event secret.create --json\n  palisade audit list --approvals --since 1d"
    )]
    List {
        /// Only decisions on approvals (and refused attempts), with the approver's name,
        /// channel and user id, the choice, the comment and the action each allowed.
        #[arg(long, conflicts_with = "event")]
        approvals: bool,
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
    /// Sign the log's end as it is now as its anchor, after `audit verify` reported the
    /// anchor (missing, unreadable, older than the log, or not matching its end) and you
    /// know why: a restore from a copy, a home last written by a palisade without
    /// anchors. Refused unless the rows form an intact chain. Rows deleted from the end
    /// before now can no longer be detected; the signing is recorded as an
    /// `audit.anchor` row.
    #[command(after_help = "Asks for confirmation on a terminal; scripts pass --yes.")]
    Anchor {
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Delete the rows older than a time from the beginning of the log (retention). The
    /// chain keeps verifying from its new start, which is signed with the master key;
    /// the pruning itself is recorded as an `audit.prune` row. A log that fails
    /// verification is not pruned.
    #[command(
        after_help = "Examples:\n  palisade audit prune --before 90d\n  palisade audit prune --before 2026-06-01T00:00:00Z --json\n\nFreed space in the database is reused by new rows; the file does not shrink."
    )]
    Prune {
        /// Remove rows older than a duration ago (`90d`, `12h`) or an RFC 3339 UTC time.
        #[arg(long, value_name = "DURATION_OR_TIME")]
        before: String,
    },
    /// Show or set how long audit rows are kept. With a duration, rows older than it are
    /// pruned at once and then hourly by the running gateway, as `audit prune` does
    /// (a log that fails verification is not pruned). The default keeps every row.
    #[command(after_help = "Examples:
  palisade audit retention
  palisade audit retention 90d
  palisade audit retention --off --json

The shortest retention is 1 day. Setting it is recorded as an `audit.retention` row,
each pruning as an `audit.prune` row.")]
    Retention {
        /// Keep rows this long (`90d`, `52weeks`); at least a day.
        #[arg(value_name = "DURATION", value_parser = humantime::parse_duration, conflicts_with = "off")]
        keep: Option<std::time::Duration>,
        /// Keep every row again (no pruning).
        #[arg(long)]
        off: bool,
    },
}

/// `audit retention`'s answer.
#[derive(serde::Serialize)]
struct RetentionReport {
    /// Milliseconds rows are kept; absent: for ever.
    keep_ms: Option<u64>,
    /// The same, as typed (`90d`).
    keep: Option<String>,
    /// The `audit.retention` row that records a change made now.
    recorded_as: Option<i64>,
    /// What a change made now pruned at once.
    pruned: Option<palisade_store::PruneReport>,
}

pub fn run(command: AuditCommand, ctx: &Context) -> anyhow::Result<()> {
    match command {
        AuditCommand::List {
            approvals,
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
                approval_decisions: approvals,
                ..Default::default()
            };
            let store = ctx.open_store()?;
            let rows = store.list_audit(&filter)?;
            if approvals {
                return list_approval_decisions(ctx, &store, &rows);
            }
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
        AuditCommand::Prune { before } => {
            let before_ms = input::parse_time(&before, "--before", false, output::now_ms())?;
            let store = ctx.open_store()?;
            let report = store.prune_audit(before_ms)?;
            if ctx.json {
                return output::print_json(&report);
            }
            match report.recorded_as {
                Some(row) => output::print(&format!(
                    "pruned {} audit rows older than {before}; the log starts at row {} (the pruning is row {row})\n",
                    report.removed, report.first_id
                )),
                None => output::print(&format!(
                    "no audit rows older than {before}; the log starts at row {}\n",
                    report.first_id
                )),
            }
        }
        AuditCommand::Retention { keep, off } => retention(ctx, keep, off),
        AuditCommand::Anchor { yes } => {
            let store = ctx.open_store()?;
            let before = store.verify_audit()?;
            if before.ok {
                if ctx.json {
                    return output::print_json(&before);
                }
                return output::print(&format!(
                    "the anchor already matches the log ({} rows); nothing to sign\n",
                    before.rows
                ));
            }
            let problem = before.problem.as_deref().unwrap_or("unknown problem");
            if !yes
                && !crate::input::confirm(
                    &format!(
                        "audit verify says: {}\nsign the log's end as it is now, so rows deleted from it before now can no longer be detected?",
                        output::clean(problem)
                    ),
                    "sign the audit log's end",
                    "--yes",
                )?
            {
                bail!("not signed: the anchor was left as it was");
            }
            let report = store.reanchor_audit()?;
            if ctx.json {
                output::print_json(&report)?;
            }
            if !report.ok {
                let problem = report.problem.as_deref().unwrap_or("unknown problem");
                bail!(
                    "not signed: the chain itself is broken at row {}: {}",
                    report.first_bad_id.unwrap_or(0),
                    output::clean(problem)
                );
            }
            if ctx.json {
                return Ok(());
            }
            output::print(&format!(
                "signed the audit log's end ({} rows) as its anchor; `audit verify` checks against it from now on\n",
                report.rows
            ))
        }
        AuditCommand::Verify => {
            let store = ctx.open_store()?;
            let report = store.verify_audit()?;
            if ctx.json {
                output::print_json(&report)?;
            }
            if report.ok {
                if !ctx.json {
                    let start = match report.starts_at {
                        Some(id) => format!(" from row {id} (older rows were pruned)"),
                        None => String::new(),
                    };
                    output::print(&format!(
                        "audit chain intact: {} rows{start}\n",
                        report.rows
                    ))?;
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

/// `audit retention [DURATION | --off]`: shows the retention, or sets it and applies
/// it at once.
fn retention(ctx: &Context, keep: Option<std::time::Duration>, off: bool) -> anyhow::Result<()> {
    let store = ctx.open_store()?;
    let change = keep.is_some() || off;
    let recorded_as = if change {
        Some(store.set_audit_retention(keep)?)
    } else {
        None
    };
    let keep = if change {
        keep
    } else {
        store.audit_retention()?
    };
    let shown = keep.map(palisade_store::input::duration_text);
    let pruned = match (change, keep) {
        (true, Some(_)) => store
            .prune_expired_audit(output::now_ms())
            .map_err(|error| {
                anyhow::anyhow!("the retention is set, but nothing was pruned now: {error}")
            })?,
        _ => None,
    };
    let report = RetentionReport {
        keep_ms: keep.map(|keep| u64::try_from(keep.as_millis()).unwrap_or(u64::MAX)),
        keep: shown.clone(),
        recorded_as,
        pruned,
    };
    if ctx.json {
        return output::print_json(&report);
    }
    let mut text = match (&shown, recorded_as) {
        (Some(keep), Some(row)) => format!(
            "audit rows are now kept for {keep} (row {row}); the running gateway prunes older ones hourly\n"
        ),
        (Some(keep), None) => format!(
            "audit rows are kept for {keep}; the running gateway prunes older ones hourly\n"
        ),
        (None, Some(row)) => format!("audit rows are now kept for ever (row {row})\n"),
        (None, None) => {
            "audit rows are kept for ever; set a retention with `palisade audit retention 90d`\n"
                .to_string()
        }
    };
    if let Some(pruned) = &report.pruned {
        text.push_str(&match pruned.recorded_as {
            Some(row) => format!(
                "pruned {} older rows; the log starts at row {} (the pruning is row {row})\n",
                pruned.removed, pruned.first_id
            ),
            None => format!(
                "no rows are older than that; the log starts at row {}\n",
                pruned.first_id
            ),
        });
    }
    output::print(&text)
}

/// `audit list --approvals`: one line per decision with who made it where, the choice,
/// the comment, and the request (or action) it allowed, found by the approval id.
fn list_approval_decisions(
    ctx: &Context,
    store: &palisade_store::Store,
    rows: &[palisade_store::AuditRecord],
) -> anyhow::Result<()> {
    let mut decisions = Vec::with_capacity(rows.len());
    for row in rows {
        let entry = &row.entry;
        let detail = entry.detail.clone().unwrap_or_default();
        let text = |key: &str| detail.get(key).and_then(|v| v.as_str()).map(str::to_string);
        let action = match &entry.approval_id {
            Some(id) => store
                .list_audit(&AuditFilter {
                    approval_id: Some(id.clone()),
                    event: Some("request".into()),
                    limit: Some(1),
                    ..Default::default()
                })?
                .into_iter()
                .next()
                .map(|request| {
                    let r = &request.entry;
                    serde_json::json!({
                        "audit_id": request.id,
                        "method": r.method,
                        "host": r.host,
                        "path": r.path,
                        "decision": r.decision,
                        "status": r.status,
                    })
                }),
            None => None,
        };
        decisions.push(serde_json::json!({
            "id": row.id,
            "at_ms": row.at_ms,
            "event": entry.event,
            "approval_id": entry.approval_id,
            "agent": entry.agent,
            "decision": entry.decision,
            "choice": text("choice"),
            "approver": entry.actor,
            "approver_name": text("name"),
            "channel": text("channel"),
            "user": text("user"),
            "comment": text("comment"),
            "reason": text("reason"),
            "title": text("title"),
            "granted_rule": text("granted_rule"),
            "action": action,
        }));
    }
    if ctx.json {
        return output::print_json(&decisions);
    }
    if decisions.is_empty() {
        return output::print("no approval decisions match\n");
    }
    let now = output::now_ms();
    let mut table = Table::new(&[
        "ID", "WHEN", "APPROVAL", "AGENT", "DECISION", "CHOICE", "APPROVER", "CHANNEL", "COMMENT",
        "ACTION",
    ]);
    let field = |value: &serde_json::Value, key: &str| {
        value
            .get(key)
            .and_then(|v| v.as_str())
            .map(output::clean)
            .unwrap_or_default()
    };
    for decision in &decisions {
        let action = decision
            .get("action")
            .filter(|a| !a.is_null())
            .map(|a| {
                format!(
                    "{} {}{} → {}",
                    field(a, "method"),
                    field(a, "host"),
                    field(a, "path"),
                    a.get("status").map(|s| s.to_string()).unwrap_or_default()
                )
            })
            .unwrap_or_else(|| field(decision, "title"));
        let who = match (field(decision, "approver_name"), field(decision, "user")) {
            (name, user) if !name.is_empty() && !user.is_empty() && name != user => {
                format!("{name} ({user})")
            }
            _ => field(decision, "approver"),
        };
        table.row(vec![
            decision["id"].to_string(),
            output::relative_to(decision["at_ms"].as_i64().unwrap_or_default(), now),
            field(decision, "approval_id"),
            field(decision, "agent"),
            field(decision, "decision"),
            field(decision, "choice"),
            who,
            field(decision, "channel"),
            field(decision, "comment"),
            action,
        ]);
    }
    output::print(&table.render())
}
