//! At most one log line a second from each place that untrusted input can reach.
//!
//! A warning that a request can cause (in the vault: an upstream that closes without
//! `close_notify`, an answer in an unreadable encoding, a full audit queue; on a chat
//! channel's public endpoint: a request with a bad signature) is written once per
//! request. Whoever repeats the request in a loop (an agent, anyone on the internet)
//! would so write the log at full speed: `palisade up --detach` appends it to
//! `logs/host.log` in the home, the disk the store needs, past the vault's disk
//! reserve (`palisade-vault/src/disk.rs`), which counts only what the store writes. So
//! each such place keeps a [`LogBudget`] (most through [`budgeted!`]): one line a
//! second, with the number of lines left out since the last one on the next.
//!
//! Hand-written: a compare-and-swap on a timestamp and a counter; the tracing crates'
//! filters see a callsite, not a count to put on the next line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// One line a second at most.
const EVERY_MS: u64 = 1000;

#[derive(Default)]
pub struct LogBudget {
    /// Milliseconds since [`epoch`] before which no line may be written.
    next_ms: AtomicU64,
    /// Lines left out since the last one written.
    suppressed: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl LogBudget {
    pub const fn new() -> LogBudget {
        LogBudget {
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines left out since the last one)` when a line may be written now;
    /// `None` (and the line counted) otherwise.
    pub fn take(&self) -> Option<u64> {
        let now = epoch().elapsed().as_millis() as u64;
        let next = self.next_ms.load(Ordering::Relaxed);
        if now < next
            || self
                .next_ms
                .compare_exchange(next, now + EVERY_MS, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

/// A `tracing` event at `level` (`warn`, `error`...) written at most once a second from
/// this place, with `similar_lines_suppressed` (the lines left out since the last)
/// added to its fields: `budgeted!(warn, host = %host, "an upstream closed early")`.
/// The calling crate depends on `tracing`.
#[macro_export]
macro_rules! budgeted {
    ($level:ident, $($arg:tt)+) => {{
        static BUDGET: $crate::log_budget::LogBudget = $crate::log_budget::LogBudget::new();
        if let Some(similar_lines_suppressed) = BUDGET.take() {
            ::tracing::$level!(similar_lines_suppressed, $($arg)+);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_with_the_count_of_those_left_out() {
        let budget = LogBudget::new();
        assert_eq!(budget.take(), Some(0));
        for _ in 0..5 {
            assert_eq!(budget.take(), None);
        }
        // As if a second had passed.
        budget.next_ms.store(0, Ordering::Relaxed);
        assert_eq!(budget.take(), Some(5));
        assert_eq!(budget.take(), None);
    }
}
