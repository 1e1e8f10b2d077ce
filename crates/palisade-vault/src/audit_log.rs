//! The gateway's audit writer: a bounded queue drained by one thread that appends
//! batches to the hash chain, so request handling never waits on SQLite commits.
//! The queue applies back-pressure when full rather than dropping rows; the few rows
//! queued without waiting (from `Drop`) that find it full are counted and written as
//! `audit.dropped` rows with the next batch.
//!
//! A batch that cannot be written is kept and tried again, never given up: rows are
//! queued after the request they record went out, so a batch lost was a request sent
//! without a trace (someone who could write the database put a row in the way of the
//! next one, or held its lock for minutes, and the gateway dropped its own rows). While
//! a batch waits, [`AuditHealth`] says so and the pipeline refuses what would leave a
//! row about a credential or a person (`503 audit_unavailable`); the database found
//! changed outside palisade is marked on the audit anchor, so `audit verify` reports
//! it; and once the batch is in, an `audit.delayed` row says how long it waited and why.
//!
//! The same thread writes the per-agent, per-hour counts of request outcomes the web
//! UI charts (plain allowed traffic has no audit row). Counting is an in-memory
//! increment; the counts go to the store with the next batch of rows or on the
//! gateway's periodic [`AuditSender::write_counts`], whichever comes first.

use crate::pipeline::{Decision, Refusal};
use palisade_policy::{ErrorBody, GatewayErrorKind};
use palisade_store::{AuditEntry, Home, Outcome, Store};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

const QUEUE: usize = 8192;
const BATCH: usize = 512;
/// Under steady load (the previous commit ended less than `BUSY` ago), wait this long
/// after the first row of a batch for more before committing: a commit costs far more
/// than a row, and without the pause a steady request stream was written one or two
/// rows per commit (a third of the gateway's CPU in bench/vault.sh). An isolated row is
/// written at once; a flush never waits more than `LINGER`.
const LINGER: std::time::Duration = std::time::Duration::from_millis(5);
const BUSY: std::time::Duration = std::time::Duration::from_millis(50);

#[allow(clippy::large_enum_variant)] // rows are the common case; boxing them would allocate per row
enum Item {
    Row(i64, AuditEntry),
    /// Write everything queued so far, then acknowledge.
    Flush(std::sync::mpsc::Sender<()>),
    /// Write the request counts gathered so far.
    Counts,
}

/// Request outcomes counted since they were last written: (agent, hour) → outcome → n.
type Counts = HashMap<(String, i64), HashMap<Outcome, u64>>;

/// Most distinct (agent, hour) pairs kept between writes; beyond it counts are dropped
/// (with a warning) rather than memory grown.
const MAX_COUNTED: usize = 4096;

/// Rows [`AuditSender::try_record`] could not queue, by (event, agent).
type Dropped = HashMap<(String, Option<String>), u64>;

/// Most distinct (event, agent) pairs of dropped rows kept; beyond it they are counted
/// under no agent.
const MAX_DROPPED_KEYS: usize = 256;

/// Whether the writer can write the log.
#[derive(Default)]
pub struct AuditHealth {
    failing: AtomicBool,
}

impl AuditHealth {
    /// `Err` (503 `audit_unavailable`) while a batch of rows cannot be written.
    pub(crate) fn room_for_rows(&self, host: &str) -> Result<(), Refusal> {
        match self.failing.load(Ordering::Relaxed) {
            false => Ok(()),
            true => Err(Refusal::new(
                Decision::AuditUnavailable,
                ErrorBody::new(GatewayErrorKind::AuditUnavailable, host),
            )),
        }
    }

    fn set(&self, failing: bool) {
        self.failing.store(failing, Ordering::Relaxed);
    }
}

#[derive(Clone)]
pub struct AuditSender {
    queue: mpsc::Sender<Item>,
    pub health: Arc<AuditHealth>,
    counts: Arc<Mutex<Counts>>,
    /// What could not be queued, written as `audit.dropped` rows with the next batch:
    /// a row lost to a full queue (an agent abandoning credentialed requests faster
    /// than they are written) still leaves its trace in the log.
    dropped: Arc<Mutex<Dropped>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl AuditSender {
    /// Queues a row, waiting for room; while the log cannot be written, without
    /// waiting (a full queue then counts the row in an `audit.dropped` row instead of
    /// keeping the client from its answer).
    pub async fn record(&self, entry: AuditEntry) {
        if self.health.failing.load(Ordering::Relaxed) {
            self.try_record(entry);
            return;
        }
        let _ = self
            .queue
            .send(Item::Row(palisade_store::now_ms(), entry))
            .await;
    }

    /// Counts one request of `agent` that ended as `outcome` (for the traffic charts).
    pub fn count(&self, agent: &str, outcome: Outcome) {
        let now = palisade_store::now_ms();
        let hour = now - now.rem_euclid(palisade_store::traffic::HOUR_MS);
        let mut counts = lock(&self.counts);
        let key = (agent.to_string(), hour);
        if counts.len() >= MAX_COUNTED && !counts.contains_key(&key) {
            tracing::warn!("too many request counts waiting to be written; one was dropped");
            return;
        }
        *counts.entry(key).or_default().entry(outcome).or_default() += 1;
    }

    /// Asks the writer to store the counts gathered so far (the gateway calls this
    /// every few seconds, so idle periods are charted too).
    pub fn write_counts(&self) {
        if !lock(&self.counts).is_empty() {
            let _ = self.queue.try_send(Item::Counts);
        }
    }

    /// Queues a row without waiting (from `Drop`, or from a response body as it
    /// streams); dropped with a warning when the queue is full.
    pub fn try_record(&self, entry: AuditEntry) {
        let (event, agent) = (entry.event.clone(), entry.agent.clone());
        if self
            .queue
            .try_send(Item::Row(palisade_store::now_ms(), entry))
            .is_err()
        {
            palisade_policy::budgeted!(
                warn,
                event,
                "the audit queue is full; one row was not written (counted in an audit.dropped row)"
            );
            let mut dropped = lock(&self.dropped);
            let key = match dropped.len() < MAX_DROPPED_KEYS {
                true => (event, agent),
                false => (event, None),
            };
            *dropped.entry(key).or_default() += 1;
        }
    }

    /// Waits (bounded) until every row queued before this call is written.
    pub async fn flush(&self, timeout: std::time::Duration) {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.queue.send(Item::Flush(tx)).await.is_ok() {
            let _ = tokio::task::spawn_blocking(move || rx.recv_timeout(timeout)).await;
        }
    }
}

/// Starts the writer on its own connection; the thread ends when every sender is gone.
pub fn start(home: &Home) -> Result<(AuditSender, std::thread::JoinHandle<()>), crate::VaultError> {
    let store = Store::open(home)?;
    let (tx, mut rx) = mpsc::channel::<Item>(QUEUE);
    let counts: Arc<Mutex<Counts>> = Arc::default();
    let gathered = counts.clone();
    let dropped: Arc<Mutex<Dropped>> = Arc::default();
    let lost = dropped.clone();
    let health: Arc<AuditHealth> = Arc::default();
    let writer_health = health.clone();
    let handle = std::thread::Builder::new()
        .name("palisade-audit".into())
        .spawn(move || {
            let mut batch = Vec::with_capacity(BATCH);
            let mut acks = Vec::new();
            let mut last_commit: Option<std::time::Instant> = None;
            while let Some(first) = rx.blocking_recv() {
                let mut next = Some(first);
                let mut lingered = false;
                while let Some(item) = next.take() {
                    match item {
                        Item::Row(at, entry) => batch.push((at, entry)),
                        Item::Flush(ack) => acks.push(ack),
                        Item::Counts => {}
                    }
                    if batch.len() < BATCH {
                        next = rx.try_recv().ok();
                        let busy = last_commit.is_some_and(|at| at.elapsed() < BUSY);
                        if next.is_none() && acks.is_empty() && !lingered && busy {
                            lingered = true;
                            std::thread::sleep(LINGER);
                            next = rx.try_recv().ok();
                        }
                    }
                }
                batch.extend(dropped_rows(&lost));
                if !batch.is_empty() {
                    append(&store, &batch, &writer_health, || rx.is_closed());
                    batch.clear();
                    last_commit = Some(std::time::Instant::now());
                }
                write_counts(&store, &gathered);
                for ack in acks.drain(..) {
                    let _ = ack.send(());
                }
            }
        })
        .map_err(|e| crate::VaultError::Io(format!("cannot start the audit writer: {e}")))?;
    Ok((
        AuditSender {
            queue: tx,
            health,
            counts,
            dropped,
        },
        handle,
    ))
}

/// One `audit.dropped` row per (event, agent) of the rows that could not be queued
/// since the last batch, with how many.
fn dropped_rows(dropped: &Mutex<Dropped>) -> Vec<(i64, AuditEntry)> {
    let taken = std::mem::take(&mut *lock(dropped));
    let now = palisade_store::now_ms();
    taken
        .into_iter()
        .map(|((event, agent), rows)| {
            let entry = AuditEntry {
                event: "audit.dropped".into(),
                agent,
                decision: Some("dropped".into()),
                detail: Some(serde_json::json!({ "event": event, "rows": rows })),
                ..AuditEntry::default()
            };
            (now, entry)
        })
        .collect()
}

/// How long another process may hold the database's write lock past the busy timeout
/// (a long `audit prune`, a backup) before the log counts as unwritable, and the
/// longest pause between tries.
const BUSY_BEFORE_FAILING: std::time::Duration = std::time::Duration::from_secs(10);
const PAUSE_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// Appends `batch`, trying again until it is written (see the module's doc), or until
/// the gateway stops (`stopping`), which is the only way rows are given up.
fn append(
    store: &Store,
    batch: &[(i64, AuditEntry)],
    health: &AuditHealth,
    stopping: impl Fn() -> bool,
) {
    let started = std::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(100);
    let mut failure: Option<String> = None;
    let mut marked = false;
    loop {
        let error = match store.append_audit_batch(batch) {
            Ok(()) => break,
            Err(e) => e,
        };
        if error.is_tampering() && !marked {
            marked = true;
            if let Err(e) = store.mark_audit_altered() {
                tracing::error!(error = %e, "could not mark the audit anchor");
            }
        }
        let failing = !error.is_busy() || started.elapsed() >= BUSY_BEFORE_FAILING;
        if failing && failure.is_none() {
            tracing::error!(
                error = %error,
                rows = batch.len(),
                "the audit log cannot be written: its rows wait, and requests that would send a credential or wait for a person are refused until they are written"
            );
            health.set(true);
            failure = Some(error.to_string());
        } else if !failing {
            palisade_policy::budgeted!(
                warn,
                rows = batch.len(),
                "the database is busy; audit rows wait and are tried again"
            );
        }
        if stopping() {
            tracing::error!(
                rows = batch.len(),
                "the gateway stops with audit rows it could not write"
            );
            return;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(PAUSE_MAX);
    }
    let Some(cause) = failure else {
        return;
    };
    health.set(false);
    let waited_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    tracing::warn!(
        rows = batch.len(),
        waited_ms,
        "the audit log can be written again; credentialed and held requests are served"
    );
    let delayed = AuditEntry {
        event: "audit.delayed".into(),
        decision: Some("delayed".into()),
        detail: Some(serde_json::json!({
            "rows": batch.len(),
            "waited_ms": waited_ms,
            "cause": cause,
        })),
        ..AuditEntry::default()
    };
    if let Err(e) = store.append_audit_batch(&[(palisade_store::now_ms(), delayed)]) {
        tracing::error!(error = %e, "could not record how long audit rows waited");
    }
}

/// Moves the gathered counts into the store (best effort: a failure is logged and the
/// counts are lost, never the audit rows).
fn write_counts(store: &Store, counts: &Mutex<Counts>) {
    let taken = std::mem::take(&mut *lock(counts));
    if taken.is_empty() {
        return;
    }
    let rows: Vec<(String, i64, Outcome, u64)> = taken
        .into_iter()
        .flat_map(|((agent, hour), outcomes)| {
            outcomes
                .into_iter()
                .map(move |(outcome, n)| (agent.clone(), hour, outcome, n))
        })
        .collect();
    if let Err(e) = store.add_request_counts(&rows) {
        tracing::warn!(error = %e, "could not store request counts");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row that finds the queue full is counted, and the count becomes an
    /// `audit.dropped` row naming its event and agent; counted once.
    #[test]
    fn a_row_the_full_queue_refuses_leaves_an_audit_dropped_row() {
        let (queue, _receiver) = mpsc::channel::<Item>(1);
        let sender = AuditSender {
            queue,
            health: Arc::default(),
            counts: Arc::default(),
            dropped: Arc::default(),
        };
        let gone = || AuditEntry {
            event: "request".into(),
            agent: Some("greedy".into()),
            decision: Some("client_gone".into()),
            ..AuditEntry::default()
        };
        for _ in 0..3 {
            sender.try_record(gone());
        }
        let rows = dropped_rows(&sender.dropped);
        assert_eq!(rows.len(), 1, "one queued, two counted under one key");
        let row = &rows[0].1;
        assert_eq!(row.event, "audit.dropped");
        assert_eq!(row.agent.as_deref(), Some("greedy"));
        assert_eq!(row.detail.as_ref().unwrap()["rows"], 2);
        assert!(dropped_rows(&sender.dropped).is_empty());
    }
}
