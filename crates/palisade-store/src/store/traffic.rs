//! Per-agent, per-hour counts of what the gateway did with requests: the numbers
//! behind the web UI's traffic charts. The audit log has a row for every outcome but
//! plain allowed traffic, which would make a chart of an agent's requests lie; the
//! gateway therefore counts every request here (in batches, with its audit rows), and
//! counts older than [`RETENTION_MS`] are dropped as new ones arrive.

use super::Store;
use crate::Result;
use palisade_policy::AgentName;
use serde::Serialize;

/// How long hourly counts are kept: the charts show a day; a week leaves room.
pub const RETENTION_MS: i64 = 8 * 24 * HOUR_MS;

pub const HOUR_MS: i64 = 60 * 60 * 1000;

/// What became of a request, as the charts group it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Forwarded as it was (no credential, no person asked).
    Allowed,
    /// Forwarded with a credential injected.
    Injected,
    /// Refused by a rule, the agent's default egress or a local-address check.
    Blocked,
    /// Refused because a rate limit was reached.
    RateLimited,
    /// Held for a person's approval (whatever was decided).
    Held,
    /// Malformed, or failed upstream.
    Failed,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Allowed,
        Outcome::Injected,
        Outcome::Blocked,
        Outcome::RateLimited,
        Outcome::Held,
        Outcome::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Injected => "injected",
            Outcome::Blocked => "blocked",
            Outcome::RateLimited => "rate_limited",
            Outcome::Held => "held",
            Outcome::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == text)
    }
}

/// Requests of one agent with one outcome during one hour.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RequestCount {
    pub agent: String,
    /// Start of the hour, Unix milliseconds.
    pub hour_ms: i64,
    pub outcome: Outcome,
    pub count: u64,
}

impl Store {
    /// Adds counts (each `(agent, at_ms, outcome, n)`, `at_ms` anywhere in its hour).
    /// Not a configuration change: no gateway reloads, no audit row.
    pub fn add_request_counts(&self, counts: &[(String, i64, Outcome, u64)]) -> Result<()> {
        if counts.is_empty() {
            return Ok(());
        }
        let cutoff = crate::now_ms() - RETENTION_MS;
        self.write(|tx| {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO request_counts (agent, hour_ms, outcome, count) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (agent, hour_ms, outcome) DO UPDATE SET count = count + excluded.count",
            )?;
            for (agent, at_ms, outcome, n) in counts {
                let hour = at_ms - at_ms.rem_euclid(HOUR_MS);
                let n = i64::try_from(*n).unwrap_or(i64::MAX);
                upsert.execute((agent, hour, outcome.as_str(), n))?;
            }
            tx.execute("DELETE FROM request_counts WHERE hour_ms < ?1", [cutoff])?;
            Ok(())
        })
    }

    /// Counts since `since_ms` (of one agent, or of all), oldest hour first.
    pub fn request_counts(
        &self,
        agent: Option<&AgentName>,
        since_ms: i64,
    ) -> Result<Vec<RequestCount>> {
        let since = since_ms - since_ms.rem_euclid(HOUR_MS);
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT agent, hour_ms, outcome, count FROM request_counts
                 WHERE hour_ms >= ?1 AND (?2 IS NULL OR agent = ?2)
                 ORDER BY hour_ms, agent, outcome",
            )?;
            let rows = stmt
                .query_map((since, agent.map(AgentName::as_str)), |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, i64>(3)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows
                .into_iter()
                .filter_map(|(agent, hour_ms, outcome, count)| {
                    Some(RequestCount {
                        agent,
                        hour_ms,
                        outcome: Outcome::parse(&outcome)?,
                        count: u64::try_from(count).unwrap_or(0),
                    })
                })
                .collect())
        })
    }
}
