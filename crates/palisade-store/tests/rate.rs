//! Sliding-window rate counters, including exactness across threads and processes.

mod common;

use palisade_store::{Home, RateOutcome, Store};
use std::time::Duration;

const MINUTE: Duration = Duration::from_secs(60);
/// Set in child processes spawned by `exact_across_processes`.
const CHILD_HOME_ENV: &str = "PALISADE_STORE_TEST_RATE_CHILD_HOME";
/// Unix ms at which the children start calling, so that their calls overlap.
const CHILD_START_ENV: &str = "PALISADE_STORE_TEST_RATE_CHILD_START";
const NOW: i64 = 1_800_000_000_000;

#[test]
fn sliding_window() {
    let t = common::store();
    let s = &t.store;
    assert_eq!(
        s.rate_acquire("k", 3, MINUTE, NOW).unwrap(),
        RateOutcome::Admitted { remaining: 2 }
    );
    assert_eq!(
        s.rate_acquire("k", 3, MINUTE, NOW + 10_000).unwrap(),
        RateOutcome::Admitted { remaining: 1 }
    );
    assert_eq!(
        s.rate_acquire("k", 3, MINUTE, NOW + 20_000).unwrap(),
        RateOutcome::Admitted { remaining: 0 }
    );
    // The oldest event (at NOW) leaves the window at NOW + 60 s.
    assert_eq!(
        s.rate_acquire("k", 3, MINUTE, NOW + 30_000).unwrap(),
        RateOutcome::Limited {
            retry_after: Duration::from_secs(30)
        }
    );
    // A refusal is not counted.
    assert_eq!(
        s.rate_acquire("k", 3, MINUTE, NOW + 59_999).unwrap(),
        RateOutcome::Limited {
            retry_after: Duration::from_millis(1)
        }
    );
    assert_eq!(
        s.rate_acquire("k", 3, MINUTE, NOW + 60_000).unwrap(),
        RateOutcome::Admitted { remaining: 0 }
    );
    // Keys are independent.
    assert_eq!(
        s.rate_acquire("other", 3, MINUTE, NOW + 60_000).unwrap(),
        RateOutcome::Admitted { remaining: 2 }
    );
    // A limit of zero never admits.
    assert_eq!(
        s.rate_acquire("zero", 0, MINUTE, NOW).unwrap(),
        RateOutcome::Limited {
            retry_after: MINUTE
        }
    );
}

/// Counters taken together are all or none: a call refused by one counter leaves the
/// others as they were, and says which counter refused it.
#[test]
fn counters_taken_together_count_only_what_all_admit() {
    let t = common::store();
    let s = &t.store;
    // The pair's counter has room for 3, the sender's for 5.
    for i in 0..3 {
        assert_eq!(
            s.rate_acquire_all(&[("sender", 5), ("pair-a", 3)], MINUTE, NOW + i)
                .unwrap(),
            Ok(2 - u32::try_from(i).unwrap())
        );
    }
    // The pair is full: refused by counter 1, and the sender's counter is not charged.
    assert_eq!(
        s.rate_acquire_all(&[("sender", 5), ("pair-a", 3)], MINUTE, NOW + 10)
            .unwrap(),
        Err((1, Duration::from_millis(59_990)))
    );
    // Another pair still has the sender's two places left, then the sender is full.
    for _ in 0..2 {
        assert!(s
            .rate_acquire_all(&[("sender", 5), ("pair-b", 3)], MINUTE, NOW + 20)
            .unwrap()
            .is_ok());
    }
    assert_eq!(
        s.rate_acquire_all(&[("sender", 5), ("pair-b", 3)], MINUTE, NOW + 30)
            .unwrap(),
        Err((0, Duration::from_millis(59_970)))
    );
    // Neither refusal was counted against the pair it named.
    assert_eq!(
        s.rate_acquire("pair-b", 3, MINUTE, NOW + 40).unwrap(),
        RateOutcome::Admitted { remaining: 0 }
    );
}

#[test]
fn stale_events_are_pruned() {
    let t = common::store();
    for i in 0..5 {
        t.store.rate_acquire("k", 10, MINUTE, NOW + i).unwrap();
    }
    t.store
        .rate_acquire("k", 10, MINUTE, NOW + 120_000)
        .unwrap();
    let rows: i64 = common::raw(&t.home)
        .query_row(
            "SELECT COUNT(*) FROM rate_events WHERE key = 'k'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, 1);
}

fn admitted(store: &Store, calls: usize) -> usize {
    admitted_with(store, "shared", 10, calls)
}

fn admitted_with(store: &Store, key: &str, limit: u32, calls: usize) -> usize {
    (0..calls)
        .filter(|_| {
            matches!(
                store.rate_acquire(key, limit, MINUTE, NOW).unwrap(),
                RateOutcome::Admitted { .. }
            )
        })
        .count()
}

#[test]
fn exact_across_threads() {
    let t = common::store();
    let total: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let home = t.home.clone();
                s.spawn(move || {
                    let store = Store::open(&home).unwrap();
                    // 100 calls in all: 13 per thread, 9 for the last.
                    admitted(&store, if i < 7 { 13 } else { 9 })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(total, 10);
}

/// Runs only as a child of `exact_across_processes`.
#[test]
fn rate_child_process() {
    let Ok(home) = std::env::var(CHILD_HOME_ENV) else {
        return;
    };
    let store = Store::open(&Home::at(home)).unwrap();
    let start: i64 = std::env::var(CHILD_START_ENV).unwrap().parse().unwrap();
    let wait = start - palisade_store::now_ms();
    if wait > 0 {
        std::thread::sleep(Duration::from_millis(wait as u64));
    }
    // Interleave two keys so that the children's calls overlap in time: a limit of 10
    // alone is usually used up by whichever child reaches the lock first.
    let mut narrow = 0;
    let mut wide = 0;
    for _ in 0..25 {
        narrow += admitted(&store, 1);
        wide += admitted_with(&store, "wide", 50, 1);
    }
    println!("ADMITTED={narrow} WIDE={wide}");
}

#[test]
fn exact_across_processes() {
    let t = common::store();
    let exe = std::env::current_exe().unwrap();
    let start = palisade_store::now_ms() + 500;
    let children: Vec<_> = (0..4)
        .map(|_| {
            std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "rate_child_process",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_HOME_ENV, t.home.root())
                .env(CHILD_START_ENV, start.to_string())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut counts = Vec::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success());
        let stdout = String::from_utf8_lossy(&output.stdout);
        // The test harness may print its own text on the same line.
        let field = |name: &str| -> usize {
            stdout
                .split(name)
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .unwrap_or_else(|| panic!("child printed no {name}: {stdout}"))
                .parse()
                .unwrap()
        };
        counts.push((field("ADMITTED="), field("WIDE=")));
    }
    let narrow: usize = counts.iter().map(|c| c.0).sum();
    let wide: usize = counts.iter().map(|c| c.1).sum();
    assert_eq!((narrow, wide), (10, 50), "per child: {counts:?}");
}
