//! Room on disk for what the gateway must record.
//!
//! Every credential the gateway sends and every request it holds for a person leaves
//! rows in the store (the audit log, the approval). An agent that sends credentialed
//! requests in a loop writes a row per request, and nothing else stops it: at the
//! gateway's full speed that is gigabytes an hour, until the home's disk is full and
//! the store can write nothing, for any agent or person (approvals, settings, the
//! audit rows of everyone). So the gateway keeps a reserve: while the filesystem that
//! holds the home has less than `--min-free-disk` free, a request that would send a
//! credential or wait for a person is refused with `503 store_disk_low`, never sent
//! unrecorded. Requests without a credential go on, and refusals write their rows
//! within the rate-limited budgets of `pipeline/audit.rs`.
//!
//! That reserve stops every agent alike, and sandboxes stop earlier still (at 256 MiB
//! free, docs/sandbox.md), so one agent's loop would stop all of them. Before it comes
//! to that, disk is shared: while less than `--disk-share-below` is free (default
//! 1 GiB), each agent may leave at most [`SHARE_BURST`] such rows and then
//! [`SHARE_PER_SECOND`] a second (far more than an agent waiting on model answers
//! sends); beyond its share its credentialed and held requests get the same 503, while
//! every other agent goes on. The agent in a loop then fills the disk hundreds of
//! times more slowly, and not at the others' expense.
//!
//! Free space is read (one `statvfs`) once a second off the request path, so a burst
//! can go past the reserve by what one second of requests writes; the reserve is sized
//! for that.

use palisade_policy::{ErrorBody, GatewayErrorKind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::pipeline::{Decision, Refusal};
use palisade_policy::budget::AgentBuckets;

/// The default reserve: half of what sandboxes keep (they stop at 256 MiB free, see
/// docs/sandbox.md), so a full disk stops the agents before the gateway refuses.
pub const DEFAULT_MIN_FREE_DISK: u64 = 128 << 20;

/// The default free space below which each agent's rows are limited to its share.
pub const DEFAULT_DISK_SHARE_BELOW: u64 = 1 << 30;

/// Rows about a credential or a person one agent may leave at once below the share line.
pub const SHARE_BURST: f64 = 100.0;
/// And then a second.
pub const SHARE_PER_SECOND: f64 = 10.0;

/// How often free space is read.
pub const MEASURE_EVERY: Duration = Duration::from_secs(1);

/// Free space under the home, as last read, against the reserve.
pub struct DiskRoom {
    path: PathBuf,
    reserve: u64,
    /// Below this much free, each agent's rows are limited to its share.
    share_below: u64,
    shares: AgentBuckets,
    /// Bytes free for an unprivileged writer when last read (`u64::MAX` when it could
    /// not be read: an unreadable filesystem is the store's problem to report).
    free: AtomicU64,
}

impl DiskRoom {
    /// Reads free space under `path` once. `share_below` under `reserve` is taken as
    /// `reserve` (the share applies from the reserve up).
    pub fn new(path: PathBuf, reserve: u64, share_below: u64) -> DiskRoom {
        let room = DiskRoom {
            path,
            reserve,
            share_below: share_below.max(reserve),
            shares: AgentBuckets::new(SHARE_BURST, SHARE_PER_SECOND),
            free: AtomicU64::new(u64::MAX),
        };
        room.measure();
        room
    }

    /// Reads free space again; logs when the reserve is crossed either way.
    pub fn measure(&self) {
        let free = match nix::sys::statvfs::statvfs(&self.path) {
            Ok(stat) => stat.blocks_available().saturating_mul(stat.fragment_size()),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read free disk space under the home");
                u64::MAX
            }
        };
        let before = self.free.swap(free, Ordering::Relaxed);
        let (was_low, is_low) = (before < self.reserve, free < self.reserve);
        let (was_shared, is_shared) = (before < self.share_below, free < self.share_below);
        if is_low && !was_low {
            tracing::warn!(
                free_mib = free >> 20,
                reserve_mib = self.reserve >> 20,
                "the home's disk is nearly full: requests that would send a credential or wait for approval are refused until space is freed"
            );
        } else if was_low && !is_low {
            tracing::info!(
                free_mib = free >> 20,
                "the home's disk has room again: credentialed and held requests are served"
            );
        }
        if is_shared && !was_shared && !is_low {
            tracing::warn!(
                free_mib = free >> 20,
                share_below_mib = self.share_below >> 20,
                per_second = SHARE_PER_SECOND,
                "the home's disk is filling: each agent may send credentialed or held requests only within its share until space is freed"
            );
        } else if was_shared && !is_shared {
            tracing::info!(
                free_mib = free >> 20,
                "the home's disk has room again: agents' credentialed requests are no longer limited to a share"
            );
        }
    }

    /// `Err` (503 `store_disk_low`) while free space is below the reserve, or below
    /// the share line once `agent` has left its share of rows.
    pub(crate) fn room_for_rows(&self, agent: &str, host: &str) -> Result<(), Refusal> {
        let free = self.free.load(Ordering::Relaxed);
        if free >= self.share_below {
            return Ok(());
        }
        if free >= self.reserve {
            if self.shares.take(agent).is_some() {
                return Ok(());
            }
            return Err(Refusal::new(
                Decision::StoreDiskLow,
                ErrorBody::new(GatewayErrorKind::StoreDiskLow, host)
                    .with_message(format!(
                        "The gateway's disk is filling ({} MiB free), so while it is each agent may send at most {SHARE_PER_SECOND} requests a second that carry a credential or wait for approval, and this agent has sent its share. The request to {host} was not sent. Slow down and retry in a few seconds; tell the user the disk needs space.",
                        free >> 20,
                    ))
                    .with_retry_after(1),
            ));
        }
        Err(Refusal::new(
            Decision::StoreDiskLow,
            ErrorBody::new(GatewayErrorKind::StoreDiskLow, host).with_message(format!(
                "The gateway's disk is nearly full ({} MiB free, {} MiB kept for its records), so it does not send credentials or hold requests it could not record. The request to {host} was not sent. Tell the user; it works again once space is freed.",
                free >> 20,
                self.reserve >> 20
            )),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_below_the_reserve_and_serves_again_above_it() {
        let dir = tempfile::tempdir().unwrap();
        let room = DiskRoom::new(dir.path().to_path_buf(), 1, 1);
        assert!(room.room_for_rows("a", "example.com").is_ok());
        let room = DiskRoom::new(dir.path().to_path_buf(), u64::MAX - 1, 0);
        let refusal = room.room_for_rows("a", "example.com").unwrap_err();
        assert_eq!(refusal.decision, Decision::StoreDiskLow);
        // A filesystem that cannot be read is not taken for a full one.
        let room = DiskRoom::new(dir.path().join("missing"), u64::MAX - 1, u64::MAX - 1);
        assert!(room.room_for_rows("a", "example.com").is_ok());
    }

    #[test]
    fn below_the_share_line_each_agent_has_its_own_share() {
        let dir = tempfile::tempdir().unwrap();
        let room = DiskRoom::new(dir.path().to_path_buf(), 1, u64::MAX - 1);
        let burst = SHARE_BURST as usize;
        for _ in 0..burst {
            assert!(room.room_for_rows("greedy", "example.com").is_ok());
        }
        let refusal = room.room_for_rows("greedy", "example.com").unwrap_err();
        assert_eq!(refusal.decision, Decision::StoreDiskLow);
        assert!(refusal.body.retry_after_seconds.is_some());
        // Another agent's share is untouched.
        assert!(room.room_for_rows("other", "example.com").is_ok());
        // Above the line nobody is counted.
        let room = DiskRoom::new(dir.path().to_path_buf(), 1, 1);
        for _ in 0..burst * 2 {
            assert!(room.room_for_rows("greedy", "example.com").is_ok());
        }
    }
}
