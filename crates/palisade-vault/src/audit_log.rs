//! The gateway's audit writer: a bounded queue drained by one thread that appends
//! batches to the hash chain, so request handling never waits on SQLite commits.
//! The queue applies back-pressure when full rather than dropping rows.

use palisade_store::{AuditEntry, Home, Store};
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
}

#[derive(Clone)]
pub struct AuditSender(mpsc::Sender<Item>);

impl AuditSender {
    pub async fn record(&self, entry: AuditEntry) {
        let _ = self
            .0
            .send(Item::Row(palisade_store::now_ms(), entry))
            .await;
    }

    /// Queues a row without waiting (from `Drop`); dropped with a warning when the
    /// queue is full.
    pub fn try_record(&self, entry: AuditEntry) {
        if self
            .0
            .try_send(Item::Row(palisade_store::now_ms(), entry))
            .is_err()
        {
            tracing::warn!(
                "the audit queue is full; one row about an abandoned request was not written"
            );
        }
    }

    /// Waits (bounded) until every row queued before this call is written.
    pub async fn flush(&self, timeout: std::time::Duration) {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.0.send(Item::Flush(tx)).await.is_ok() {
            let _ = tokio::task::spawn_blocking(move || rx.recv_timeout(timeout)).await;
        }
    }
}

/// Starts the writer on its own connection; the thread ends when every sender is gone.
pub fn start(home: &Home) -> Result<(AuditSender, std::thread::JoinHandle<()>), crate::VaultError> {
    let store = Store::open(home)?;
    let (tx, mut rx) = mpsc::channel::<Item>(QUEUE);
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
                if !batch.is_empty() {
                    if let Err(e) = store.append_audit_batch(&batch) {
                        tracing::error!(error = %e, rows = batch.len(), "could not append audit rows");
                    }
                    batch.clear();
                    last_commit = Some(std::time::Instant::now());
                }
                for ack in acks.drain(..) {
                    let _ = ack.send(());
                }
            }
        })
        .map_err(|e| crate::VaultError::Io(format!("cannot start the audit writer: {e}")))?;
    Ok((AuditSender(tx), handle))
}
