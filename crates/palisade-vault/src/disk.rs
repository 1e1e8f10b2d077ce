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
//! Free space is read (one `statvfs`) once a second off the request path, so a burst
//! can go past the reserve by what one second of requests writes; the reserve is sized
//! for that.

use palisade_policy::{ErrorBody, GatewayErrorKind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::pipeline::{Decision, Refusal};

/// The default reserve: half of what sandboxes keep (they stop at 256 MiB free, see
/// docs/sandbox.md), so a full disk stops the agents before the gateway refuses.
pub const DEFAULT_MIN_FREE_DISK: u64 = 128 << 20;

/// How often free space is read.
pub const MEASURE_EVERY: Duration = Duration::from_secs(1);

/// Free space under the home, as last read, against the reserve.
pub struct DiskRoom {
    path: PathBuf,
    reserve: u64,
    /// Bytes free for an unprivileged writer when last read (`u64::MAX` when it could
    /// not be read: an unreadable filesystem is the store's problem to report).
    free: AtomicU64,
}

impl DiskRoom {
    /// Reads free space under `path` once.
    pub fn new(path: PathBuf, reserve: u64) -> DiskRoom {
        let room = DiskRoom {
            path,
            reserve,
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
    }

    /// `Err` (503 `store_disk_low`) while free space is below the reserve.
    pub(crate) fn room_for_rows(&self, host: &str) -> Result<(), Refusal> {
        let free = self.free.load(Ordering::Relaxed);
        if free >= self.reserve {
            return Ok(());
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
        let room = DiskRoom::new(dir.path().to_path_buf(), 1);
        assert!(room.room_for_rows("example.com").is_ok());
        let room = DiskRoom::new(dir.path().to_path_buf(), u64::MAX - 1);
        let refusal = room.room_for_rows("example.com").unwrap_err();
        assert_eq!(refusal.decision, Decision::StoreDiskLow);
        // A filesystem that cannot be read is not taken for a full one.
        let room = DiskRoom::new(dir.path().join("missing"), u64::MAX - 1);
        assert!(room.room_for_rows("example.com").is_ok());
    }
}
