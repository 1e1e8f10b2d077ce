//! `palisade approvals …`: see held actions and decide them from a terminal.
//!
//! Decisions go through the approval engine (`palisade-approvals`) as the terminal's
//! user; the gateway holding the request is told at once and lets it through or
//! answers the agent with the denial and comment.

use crate::context::Context;
use crate::input;
use crate::output::{self, Details, Table};
use palisade_approvals::{suggest, ApproverIdentity, Choice, Engine, Events};
use palisade_store::{Approval, ApprovalStatus};

#[derive(Debug, clap::Subcommand)]
pub enum ApprovalsCommand {
    /// List approvals: pending ones by default.
    #[command(
        after_help = "Examples:\n  palisade approvals list\n  palisade approvals list --all\n  palisade approvals list --status denied --json"
    )]
    List {
        /// Every status, not only pending.
        #[arg(long, conflicts_with = "status")]
        all: bool,
        /// Only this status.
        #[arg(long, value_name = "pending|approved|denied|timed_out|cancelled")]
        status: Option<String>,
        /// At most this many, newest first.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one approval in full: the summary, the request detail and its context.
    Show {
        /// The approval's id, as `palisade approvals list` shows it (apr_…).
        id: String,
    },
    /// Approve a pending action; the held request goes ahead.
    #[command(
        after_help = "Examples:\n  palisade approvals approve apr_k3j5m2n4p6q7 --comment 'ok this once'\n  palisade approvals approve apr_k3j5m2n4p6q7 --for-1h\n  palisade approvals approve apr_k3j5m2n4p6q7 --always\n\n--for-1h and --always create a rule for this agent and exactly this request's host,\nmethod and path (see `palisade rules list`; delete it to revoke). They apply to\nrequests held at the vault only."
    )]
    Approve {
        /// The approval's id, as `palisade approvals list` shows it (apr_…).
        id: String,
        /// A note recorded with the decision.
        #[arg(long, value_name = "TEXT")]
        comment: Option<String>,
        /// Also allow the same request (host and port, method, path) from this agent for 1 hour, with any query and any body (refused where a block rule would be passed).
        #[arg(long = "for-1h", conflicts_with = "always")]
        for_hour: bool,
        /// Always allow the same request (host and port, method, path) from this agent, with any query and any body (refused where a block rule would be passed).
        #[arg(long)]
        always: bool,
    },
    /// Propose the narrowest rules that would have spared approvals of the same agent,
    /// method, host and path (whatever their query or body); nothing is applied until
    /// you accept one.
    #[command(
        after_help = "Examples:\n  palisade approvals suggest\n  palisade approvals suggest --since 30d --min 5\n  palisade approvals suggest --accept 1\n\nA suggestion is an allow rule for exactly one agent, method, host and path that\npeople approved at least --min times in the window and never denied, placed just\nabove the rule that held it. Accepted rules are ordinary rules (`rules list`,\n`rules delete`)."
    )]
    Suggest {
        /// How far back to look (e.g. 7d, 30d).
        #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = humantime::parse_duration)]
        since: std::time::Duration,
        /// Fewest approvals of the same request worth a rule.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
        min: u32,
        /// Create the rule of suggestion N (repeatable).
        #[arg(long, value_name = "N")]
        accept: Vec<usize>,
    },
    /// Deny a pending action; the agent is told, with your comment.
    #[command(
        after_help = "Example:\n  palisade approvals deny apr_k3j5m2n4p6q7 --comment 'not to that list; use the team one'"
    )]
    Deny {
        /// The approval's id, as `palisade approvals list` shows it (apr_…).
        id: String,
        /// Returned to the agent so it can adjust.
        #[arg(long, value_name = "TEXT")]
        comment: Option<String>,
    },
}

pub fn run(command: ApprovalsCommand, ctx: &Context) -> anyhow::Result<()> {
    match command {
        ApprovalsCommand::Suggest { since, min, accept } => {
            let store = ctx.open_store()?;
            let suggestions = suggest::load(&store, since, min as usize)?;
            if accept.is_empty() {
                if ctx.json {
                    return output::print_json(&suggestions);
                }
                if suggestions.is_empty() {
                    return output::print(
                        "nothing to suggest: no request was approved often enough without a denial\n",
                    );
                }
                let mut text = String::new();
                for suggestion in &suggestions {
                    text.push_str(&format!(
                        "{}. {}\n",
                        suggestion.number,
                        suggestion.explain()
                    ));
                }
                text.push_str("accept one with `palisade approvals suggest --accept N`\n");
                return output::print(&text);
            }
            let mut created = Vec::new();
            for number in accept {
                created.push(suggest::accept(&store, &suggestions, number, None)?);
            }
            if ctx.json {
                return output::print_json(&created);
            }
            let names: Vec<&str> = created.iter().map(|r| r.name.as_str()).collect();
            output::print(&format!(
                "created rule{} {}; see `palisade rules list`\n",
                if names.len() == 1 { "" } else { "s" },
                names.join(", ")
            ))
        }
        ApprovalsCommand::List { all, status, limit } => {
            let status = match (all, status) {
                (true, _) => None,
                (false, Some(text)) => Some(text.parse::<ApprovalStatus>()?),
                (false, None) => Some(ApprovalStatus::Pending),
            };
            let store = ctx.open_store()?;
            let approvals = store.list_approvals(status, limit)?;
            if ctx.json {
                return output::print_json(&approvals);
            }
            if approvals.is_empty() {
                let which = status
                    .map(|s| format!("{} ", s.as_str()))
                    .unwrap_or_default();
                return output::print(&format!("no {which}approvals\n"));
            }
            let now = output::now_ms();
            let mut table = Table::new(&[
                "ID", "STATUS", "AGENT", "KIND", "TITLE", "ASKED", "DECISION",
            ]);
            for approval in &approvals {
                let decision = match (&approval.approver, approval.decided_at_ms) {
                    (Some(approver), Some(at)) => {
                        format!("{approver} {}", output::relative_to(at, now))
                    }
                    (_, Some(at)) => output::relative_to(at, now),
                    _ if approval.status == ApprovalStatus::Pending => {
                        format!(
                            "times out {}",
                            output::relative_to(approval.expires_at_ms, now)
                        )
                    }
                    _ => String::new(),
                };
                table.row(vec![
                    approval.id.clone(),
                    approval.status.as_str().to_string(),
                    approval.agent.to_string(),
                    approval.kind.clone(),
                    approval.title.clone(),
                    output::relative_to(approval.created_at_ms, now),
                    decision,
                ]);
            }
            output::print(&table.render())
        }
        ApprovalsCommand::Show { id } => {
            let store = ctx.open_store()?;
            let approval = store.get_approval(&id)?;
            if ctx.json {
                return output::print_json(&approval);
            }
            output::print(&render(&approval))
        }
        ApprovalsCommand::Approve {
            id,
            comment,
            for_hour,
            always,
        } => {
            let choice = match (for_hour, always) {
                (true, _) => Choice::ForHour,
                (_, true) => Choice::Always,
                _ => Choice::Once,
            };
            decide(ctx, &id, choice, comment)
        }
        ApprovalsCommand::Deny { id, comment } => decide(ctx, &id, Choice::Deny, comment),
    }
}

fn decide(ctx: &Context, id: &str, choice: Choice, comment: Option<String>) -> anyhow::Result<()> {
    let store = ctx.open_store()?;
    let engine = Engine::new(store.clone(), Events::new());
    let approver = ApproverIdentity::cli(&input::local_user());
    let approval = engine.decide(id, &approver, choice, comment.as_deref())?;
    if ctx.json {
        return output::print_json(&approval);
    }
    // What a lasting grant lets through from now on, said plainly: any query and any
    // body of that method and path, not only the request approved.
    let granted = approval
        .granted_rule
        .as_deref()
        .map(|rule| {
            let covers = store
                .get_rule(rule)
                .map(|record| {
                    format!(
                        ": it allows {} {}{} for {}, with any query and any body{}",
                        record.method,
                        record.host_pattern,
                        record.path_pattern.as_deref().unwrap_or("/*"),
                        record
                            .agent
                            .as_ref()
                            .map_or_else(|| "every agent".to_string(), |a| format!("agent {a}")),
                        record
                            .expires_at_ms
                            .map(|_| ", for an hour")
                            .unwrap_or_default()
                    )
                })
                .unwrap_or_default();
            format!("; rule {rule} created{covers} (`palisade rules delete {rule}` revokes it)")
        })
        .unwrap_or_default();
    output::print(&format!(
        "{} {}: {} (as {}){}\n",
        approval.status.as_str(),
        approval.id,
        output::clean(&approval.title),
        output::clean(&approver.shown()),
        output::clean(&granted),
    ))
}

/// Columns of text a gutter line holds: with the gutter, 76, inside an 80-column
/// terminal; fewer in a narrower one.
const GUTTER_WIDTH: usize = 72;
/// The gutter itself, `  │ `.
const GUTTER_COLUMNS: usize = 4;
/// Fewest columns a gutter line holds, however narrow the terminal.
const GUTTER_MIN: usize = 16;

/// Columns of text a gutter line holds on this stdout: [`GUTTER_WIDTH`], or what fits
/// beside the gutter in a narrower terminal (which would otherwise wrap a line, and
/// its next screen line would start without the gutter).
fn gutter_width() -> usize {
    match terminal_size::terminal_size_of(std::io::stdout()) {
        Some((terminal_size::Width(columns), _)) => usize::from(columns)
            .saturating_sub(GUTTER_COLUMNS)
            .clamp(GUTTER_MIN, GUTTER_WIDTH),
        None => GUTTER_WIDTH,
    }
}

/// `line`, cleaned, as lines of at most `width` columns (wide characters count two),
/// each behind the gutter `  │ `. Lines break between words where they can, so a
/// digest or an address stays whole to copy; a word longer than a line is cut.
fn behind_gutter(text: &mut String, line: &str, width: usize) {
    use unicode_width::UnicodeWidthStr;
    let line = output::clean(line);
    let mut lines: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut started = false;
    for word in line.split(' ') {
        let word_width = word.width();
        if started && current.width() + 1 + word_width <= width {
            current.push(' ');
            current.push_str(word);
            continue;
        }
        if started {
            lines.push(std::mem::take(&mut current));
        }
        started = true;
        // A word longer than a line: cut where the columns run out.
        let mut columns = 0;
        for c in word.chars() {
            let wide = unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
            if columns + wide > width {
                lines.push(std::mem::take(&mut current));
                columns = 0;
            }
            current.push(c);
            columns += wide;
        }
    }
    lines.push(current);
    for piece in lines {
        text.push_str("  │ ");
        text.push_str(&piece);
        text.push('\n');
    }
}

fn render(approval: &Approval) -> String {
    let mut details = Details::new();
    details.field("id", &approval.id);
    details.field("status", approval.status.as_str());
    details.field("kind", &approval.kind);
    details.field("agent", approval.agent.as_str());
    details.field("title", &approval.title);
    details.field("asked", output::when(approval.created_at_ms));
    if approval.status == ApprovalStatus::Pending {
        details.field("times out", output::when(approval.expires_at_ms));
    }
    if let Some(at) = approval.decided_at_ms {
        details.field("decided", output::when(at));
    }
    if let Some(approver) = &approval.approver {
        details.field("approver", approver);
    }
    if let Some(choice) = &approval.choice {
        details.field("choice", choice);
    }
    if let Some(rule) = &approval.granted_rule {
        details.field("granted rule", rule);
    }
    if let Some(comment) = &approval.comment {
        details.field("comment", comment);
    }
    let mut text = details.render();
    let width = gutter_width();
    // The summary, the detail and the context are built from what the agent sent (its
    // request, its words): each line behind a gutter, so none passes for this
    // command's own lines (an agent's "decide with: … --always" looked like the footer
    // below), and wrapped before a terminal would wrap it, so no part of a long line
    // starts a screen line without the gutter.
    if !approval.lines.is_empty() {
        text.push_str("\nsummary:\n");
        for line in &approval.lines {
            behind_gutter(&mut text, line, width);
        }
    }
    if !approval.detail.is_empty() {
        text.push_str("\ndetail:\n");
        // The detail is multi-line on purpose (headers, body excerpt); each line is
        // cleaned on its own so none can carry escape sequences.
        for line in approval.detail.lines() {
            behind_gutter(&mut text, line, width);
        }
    }
    if !approval.context.is_null() && approval.context.as_object().is_none_or(|o| !o.is_empty()) {
        text.push_str("\ncontext:\n");
        behind_gutter(&mut text, &approval.context.to_string(), width);
    }
    if approval.status == ApprovalStatus::Pending {
        // Only the choices this kind of approval offers.
        let lasting = approval
            .kind
            .parse::<palisade_approvals::ApprovalKind>()
            .is_ok_and(|kind| kind.offers(palisade_approvals::Choice::Always));
        text.push_str(&format!(
            "\ndecide with: palisade approvals approve {id}{}   or   palisade approvals deny {id} --comment TEXT\n",
            if lasting { " [--for-1h | --always]" } else { "" },
            id = approval.id
        ));
    }
    text
}
