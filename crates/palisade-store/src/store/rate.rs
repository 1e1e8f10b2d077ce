//! Sliding-window rate counters shared by every gateway process using this home.
//!
//! One row per admitted event. `BEGIN IMMEDIATE` serialises the prune-count-insert
//! sequence across threads and processes, which is what makes the count exact; the
//! `(key, at_ms)` index keeps each step a range scan over one key.

use super::{RateOutcome, Store};
use crate::Result;
use rusqlite::Transaction;
use std::time::Duration;

impl Store {
    /// Sliding window: counts events for `key` in the last `window` at `now_ms`; if fewer
    /// than `limit`, records one and admits. Exact across threads and processes.
    pub fn rate_acquire(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        now_ms: i64,
    ) -> Result<RateOutcome> {
        Ok(
            match self.rate_acquire_all(&[(key, limit)], window, now_ms)? {
                Ok(remaining) => RateOutcome::Admitted { remaining },
                Err((_, retry_after)) => RateOutcome::Limited { retry_after },
            },
        )
    }

    /// Several counters over one `window`, all or none: if every `(key, limit)` has
    /// room, records one event in each and gives the fewest left; otherwise records
    /// nothing and gives the first full counter's index in `limits` and when it has
    /// room again. A message counted against its pair and its sender alike is never
    /// counted against one when the other refused it.
    pub fn rate_acquire_all(
        &self,
        limits: &[(&str, u32)],
        window: Duration,
        now_ms: i64,
    ) -> Result<std::result::Result<u32, (usize, Duration)>> {
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX).max(1);
        // An event at exactly `now - window` has left the window.
        let cutoff = now_ms.saturating_sub(window_ms);
        self.write(|tx| {
            let mut remaining = u32::MAX;
            for (index, &(key, limit)) in limits.iter().enumerate() {
                let (count, oldest) = window_count(tx, key, cutoff)?;
                if count >= i64::from(limit) {
                    let retry_ms = match oldest {
                        Some(oldest) => oldest.saturating_add(window_ms).saturating_sub(now_ms),
                        // limit == 0: nothing will ever be admitted; a full window is the
                        // honest hint.
                        None => window_ms,
                    };
                    let retry_ms = u64::try_from(retry_ms.max(1)).unwrap_or(1);
                    return Ok(Err((index, Duration::from_millis(retry_ms))));
                }
                remaining = remaining.min(u32::try_from(i64::from(limit) - count - 1).unwrap_or(0));
            }
            for &(key, _) in limits {
                tx.execute(
                    "INSERT INTO rate_events (key, at_ms) VALUES (?1, ?2)",
                    (key, now_ms),
                )?;
            }
            Ok(Ok(remaining))
        })
    }
}

/// Drops `key`'s events at or before `cutoff`; then how many are left and the oldest.
fn window_count(
    tx: &Transaction<'_>,
    key: &str,
    cutoff: i64,
) -> rusqlite::Result<(i64, Option<i64>)> {
    tx.execute(
        "DELETE FROM rate_events WHERE key = ?1 AND at_ms <= ?2",
        (key, cutoff),
    )?;
    tx.query_row(
        "SELECT COUNT(*), MIN(at_ms) FROM rate_events WHERE key = ?1",
        [key],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
}
