//! Pictures where people would rather look than read: an agent's requests of the last
//! 24 hours by outcome (allowed, injected, blocked, rate-limited, held, failed) with
//! the approvals it asked for, and how long decisions took.
//!
//! Drawn on the server as inline SVG with maud (every label escaped), coloured by the
//! stylesheet: no script, nothing fetched from elsewhere, and the page's
//! Content-Security-Policy needs no exception. The numbers come from the store's
//! hourly request counts (which the gateway keeps, since plain allowed traffic has no
//! audit row) and from the approvals table.

use super::{blocking, PageError};
use crate::WebState;
use maud::{html, Markup, PreEscaped};
use palisade_policy::AgentName;
use palisade_store::traffic::HOUR_MS;
use palisade_store::{Approval, Outcome, RequestCount};
use std::collections::BTreeMap;

/// Hours a traffic chart covers.
const HOURS: usize = 24;
/// Approvals read to count those of the last day (newest first).
const APPROVALS_READ: usize = 2000;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 150.0;
const LEFT: f64 = 34.0;
const TOP: f64 = 18.0;
const BOTTOM: f64 = 22.0;

/// One agent's last day: per hour (oldest first) the count of each outcome, and the
/// approvals asked for in that hour.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Day {
    pub(crate) hours: Vec<[u64; 6]>,
    pub(crate) approvals: Vec<u64>,
    /// Start of the oldest hour, Unix milliseconds.
    pub(crate) start_ms: i64,
}

fn outcome_index(outcome: Outcome) -> usize {
    Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0)
}

fn label(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Allowed => "allowed",
        Outcome::Injected => "injected",
        Outcome::Blocked => "blocked",
        Outcome::RateLimited => "rate-limited",
        Outcome::Held => "held",
        Outcome::Failed => "failed",
    }
}

impl Day {
    /// Buckets `counts` and `approvals` (already limited to one agent or not) into the
    /// 24 hours that end with the one containing `now_ms`.
    pub(crate) fn build(counts: &[RequestCount], approvals: &[&Approval], now_ms: i64) -> Day {
        let current = now_ms - now_ms.rem_euclid(HOUR_MS);
        let start_ms = current - (HOURS as i64 - 1) * HOUR_MS;
        let mut day = Day {
            hours: vec![[0; 6]; HOURS],
            approvals: vec![0; HOURS],
            start_ms,
        };
        let slot = |at_ms: i64| -> Option<usize> {
            let index = (at_ms - start_ms).div_euclid(HOUR_MS);
            usize::try_from(index).ok().filter(|i| *i < HOURS)
        };
        for count in counts {
            if let Some(i) = slot(count.hour_ms) {
                day.hours[i][outcome_index(count.outcome)] += count.count;
            }
        }
        for approval in approvals {
            if let Some(i) = slot(approval.created_at_ms) {
                day.approvals[i] += 1;
            }
        }
        day
    }

    fn totals(&self) -> [u64; 6] {
        let mut totals = [0; 6];
        for hour in &self.hours {
            for (total, n) in totals.iter_mut().zip(hour) {
                *total += n;
            }
        }
        totals
    }

    fn is_empty(&self) -> bool {
        self.totals().iter().all(|n| *n == 0) && self.approvals.iter().all(|n| *n == 0)
    }
}

/// A y-axis maximum that reads well: 1, 2, 5, 10, 20, 50, …
fn nice_max(value: u64) -> u64 {
    let mut step = 1;
    loop {
        for factor in [1, 2, 5] {
            if value <= step * factor {
                return step * factor;
            }
        }
        step *= 10;
    }
}

fn hour_label(ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(ms / 1000) {
        Ok(t) => format!("{:02}:00", t.hour()),
        Err(_) => String::new(),
    }
}

/// The non-empty parts of one hour's bar, bottom up: (outcome, count below it, count).
fn stacked(hour: &[u64; 6]) -> Vec<(Outcome, u64, u64)> {
    let mut below = 0;
    let mut parts = Vec::new();
    for (outcome, n) in Outcome::ALL.iter().zip(hour) {
        if *n > 0 {
            parts.push((*outcome, below, *n));
            below += n;
        }
    }
    parts
}

/// The SVG of one day. `title` names it for screen readers.
pub(crate) fn day_svg(day: &Day, title: &str) -> Markup {
    let plot_width = WIDTH - LEFT - 6.0;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let slot = plot_width / HOURS as f64;
    let bar = (slot * 0.72).max(1.0);
    let most = day
        .hours
        .iter()
        .map(|h| h.iter().sum::<u64>())
        .max()
        .unwrap_or(0);
    let max = nice_max(most.max(1));
    let y = |value: u64| TOP + plot_height - plot_height * value as f64 / max as f64;
    let totals = day.totals();
    let approvals: u64 = day.approvals.iter().sum();
    let summary = Outcome::ALL
        .iter()
        .zip(totals)
        .map(|(o, n)| format!("{n} {}", label(*o)))
        .collect::<Vec<_>>()
        .join(", ");
    html! {
        figure.chart {
            svg xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img"
                aria-label={ (title) ": " (summary) ", " (approvals) " approvals asked" } {
                title { (title) }
                // Grid: the top and middle of the scale.
                @for (value, class) in [(max, "grid"), (max / 2, "grid"), (0, "axis")] {
                    line class=(class) x1=(LEFT) x2=(WIDTH - 4.0) y1=(y(value)) y2=(y(value)) {}
                    text.tick x=(LEFT - 5.0) y=(y(value) + 3.5) text-anchor="end" { (value) }
                }
                @for (i, hour) in day.hours.iter().enumerate() {
                    @let x = LEFT + slot * i as f64 + (slot - bar) / 2.0;
                    @let start = day.start_ms + i as i64 * HOUR_MS;
                    g.hour {
                        title { (hour_label(start)) " UTC: "
                            @for (o, n) in Outcome::ALL.iter().zip(hour) { (n) " " (label(*o)) ", " }
                            (day.approvals[i]) " approvals" }
                        @for (outcome, below, n) in stacked(hour) {
                            rect class={ "bar " (outcome.as_str()) } x=(format!("{x:.1}")) y=(format!("{:.1}", y(below + n)))
                                width=(format!("{bar:.1}")) height=(format!("{:.1}", (y(below) - y(below + n)).max(0.5))) {}
                        }
                        @if day.approvals[i] > 0 {
                            circle.approval cx=(format!("{:.1}", x + bar / 2.0)) cy=(TOP - 8.0) r="4" {}
                            text.approval-count x=(format!("{:.1}", x + bar / 2.0 + 6.0)) y=(TOP - 5.0) { (day.approvals[i]) }
                        }
                    }
                    @if i % 6 == 0 || i == HOURS - 1 {
                        text.tick x=(format!("{:.1}", x + bar / 2.0)) y=(HEIGHT - 6.0) text-anchor="middle" {
                            @if i == HOURS - 1 { "now" } @else { (hour_label(start)) }
                        }
                    }
                }
            }
            figcaption.legend {
                @for (o, n) in Outcome::ALL.iter().zip(totals) {
                    span class={ "key " (o.as_str()) } { (PreEscaped("&#9632;")) " " (label(*o)) " " strong { (n) } }
                }
                span.key.approvals { (PreEscaped("&#9679;")) " approvals " strong { (approvals) } }
            }
        }
    }
}

/// The last day of `agent` (or of every agent) as a chart, or a line saying there was
/// no traffic.
pub(crate) async fn agent_traffic(
    state: &WebState,
    agent: Option<&AgentName>,
) -> Result<Markup, PageError> {
    let days = load_days(state).await?;
    let day = match agent {
        Some(agent) => days.get(agent.as_str()).cloned().unwrap_or_default(),
        None => days.values().fold(Day::default(), merge),
    };
    Ok(render_day(
        &day,
        agent.map(AgentName::as_str).unwrap_or("all agents"),
    ))
}

fn render_day(day: &Day, who: &str) -> Markup {
    if day.hours.is_empty() || day.is_empty() {
        return html! { p.muted.small.chart-empty { "No requests through the vault in the last 24 hours." } };
    }
    day_svg(day, &format!("Requests of {who} in the last 24 hours"))
}

fn merge(mut acc: Day, day: &Day) -> Day {
    if acc.hours.is_empty() {
        return day.clone();
    }
    for (a, b) in acc.hours.iter_mut().zip(&day.hours) {
        for (x, y) in a.iter_mut().zip(b) {
            *x += y;
        }
    }
    for (a, b) in acc.approvals.iter_mut().zip(&day.approvals) {
        *a += b;
    }
    acc
}

/// Every agent's last day, by agent name.
pub(crate) async fn load_days(state: &WebState) -> Result<BTreeMap<String, Day>, PageError> {
    let store = state.store.clone();
    let now = palisade_store::now_ms();
    let (counts, approvals, agents) = blocking(move || {
        let since = now - HOURS as i64 * HOUR_MS;
        let counts = store.request_counts(None, since)?;
        let approvals: Vec<Approval> = store
            .list_approvals(None, APPROVALS_READ)?
            .into_iter()
            .filter(|a| a.created_at_ms >= since)
            .collect();
        Ok((counts, approvals, store.list_agents()?))
    })
    .await?;
    let mut days = BTreeMap::new();
    for agent in agents {
        let name = agent.name.to_string();
        let counts: Vec<RequestCount> =
            counts.iter().filter(|c| c.agent == name).cloned().collect();
        let asked: Vec<&Approval> = approvals.iter().filter(|a| a.agent == agent.name).collect();
        days.insert(name, Day::build(&counts, &asked, now));
    }
    Ok(days)
}

/// Every agent's day as a small chart (the dashboard).
pub(crate) async fn all_agents(state: &WebState) -> Result<Markup, PageError> {
    let days = load_days(state).await?;
    Ok(html! {
        @if days.is_empty() {
            p.muted.small { "No agents yet." }
        }
        @for (agent, day) in &days {
            div.agent-chart {
                h3 { a href={ "/agents/" (agent) } { (agent) } }
                (render_day(day, agent))
            }
        }
    })
}

/// How long decisions took, one bar per decided approval (newest last), with the
/// median: the approvals page's picture.
pub(crate) fn decision_times(decided: &[Approval]) -> Markup {
    let mut times: Vec<(&Approval, i64)> = decided
        .iter()
        .filter_map(|a| Some((a, (a.decided_at_ms? - a.created_at_ms).max(0))))
        .collect();
    if times.is_empty() {
        return html! {};
    }
    times.reverse();
    let mut sorted: Vec<i64> = times.iter().map(|(_, t)| *t).collect();
    sorted.sort_unstable();
    let median = sorted[sorted.len() / 2];
    let longest = *sorted.last().unwrap_or(&0);
    let max_s = nice_max(u64::try_from(longest / 1000).unwrap_or(0).max(1));
    let plot_width = WIDTH - LEFT - 6.0;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let slot = plot_width / times.len().max(12) as f64;
    let bar = (slot * 0.72).max(1.0);
    let y = |ms: i64| TOP + plot_height - plot_height * (ms as f64 / 1000.0) / max_s as f64;
    html! {
        figure.chart #decision-times {
            svg xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img"
                aria-label={ "How long the last " (times.len()) " decisions took; median " (seconds(median)) } {
                title { "How long decisions took" }
                @for (value, class) in [(max_s, "grid"), (0, "axis")] {
                    line class=(class) x1=(LEFT) x2=(WIDTH - 4.0) y1=(y(value as i64 * 1000)) y2=(y(value as i64 * 1000)) {}
                    text.tick x=(LEFT - 5.0) y=(y(value as i64 * 1000) + 3.5) text-anchor="end" { (value) "s" }
                }
                @for (i, (approval, ms)) in times.iter().enumerate() {
                    @let x = LEFT + slot * i as f64 + (slot - bar) / 2.0;
                    @let class = match approval.status { palisade_store::ApprovalStatus::Approved => "bar approved", _ => "bar denied" };
                    rect class=(class) x=(format!("{x:.1}")) y=(format!("{:.1}", y(*ms))) width=(format!("{bar:.1}"))
                        height=(format!("{:.1}", (y(0) - y(*ms)).max(0.5))) {
                        title { (approval.title) ": " (approval.status.as_str()) " after " (seconds(*ms)) }
                    }
                }
                line.median x1=(LEFT) x2=(WIDTH - 4.0) y1=(format!("{:.1}", y(median))) y2=(format!("{:.1}", y(median))) {}
            }
            figcaption.legend {
                span.key.approved { (PreEscaped("&#9632;")) " approved" }
                span.key.denied { (PreEscaped("&#9632;")) " denied, timed out or cancelled" }
                span.key { "median " strong { (seconds(median)) } ", longest " strong { (seconds(longest)) } }
            }
        }
    }
}

/// `4.2 s`, `3 min 5 s`
pub(crate) fn seconds(ms: i64) -> String {
    let secs = ms as f64 / 1000.0;
    if secs < 60.0 {
        format!("{secs:.1} s")
    } else {
        let whole = ms / 1000;
        format!("{} min {} s", whole / 60, whole % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_land_in_their_hours_and_old_ones_are_left_out() {
        let now: i64 = 1_800_000_000_000 + 30 * 60 * 1000;
        let current = now - now.rem_euclid(HOUR_MS);
        let count = |hour_ms, outcome, count| RequestCount {
            agent: "a".into(),
            hour_ms,
            outcome,
            count,
        };
        let day = Day::build(
            &[
                count(current, Outcome::Allowed, 3),
                count(current, Outcome::Blocked, 1),
                count(current - 23 * HOUR_MS, Outcome::Injected, 2),
                count(current - 24 * HOUR_MS, Outcome::Injected, 99),
            ],
            &[],
            now,
        );
        assert_eq!(day.hours[23][0], 3);
        assert_eq!(day.hours[23][2], 1);
        assert_eq!(day.hours[0][1], 2);
        assert_eq!(day.totals().iter().sum::<u64>(), 6);
        let svg = day_svg(&day, "t").into_string();
        assert!(svg.contains("<svg") && svg.contains("class=\"bar allowed\""));
        assert!(!svg.contains("<script"));
        assert_eq!(nice_max(7), 10);
        assert_eq!(nice_max(1), 1);
        assert_eq!(nice_max(120), 200);
    }
}
