//! The gateway's audit writer: a bounded queue drained by one thread that appends
//! batches to the hash chain, so request handling never waits on SQLite commits.
//! The queue applies back-pressure when full rather than dropping rows.

use palisade_store::{AuditEntry, Home, Store};
use tokio::sync::mpsc;

const QUEUE: usize = 8192;
const BATCH: usize = 512;

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
            while let Some(first) = rx.blocking_recv() {
                let mut next = Some(first);
                while let Some(item) = next.take() {
                    match item {
                        Item::Row(at, entry) => batch.push((at, entry)),
                        Item::Flush(ack) => acks.push(ack),
                    }
                    if batch.len() < BATCH {
                        next = rx.try_recv().ok();
                    }
                }
                if !batch.is_empty() {
                    if let Err(e) = store.append_audit_batch(&batch) {
                        tracing::error!(error = %e, rows = batch.len(), "could not append audit rows");
                    }
                    batch.clear();
                }
                for ack in acks.drain(..) {
                    let _ = ack.send(());
                }
            }
        })
        .map_err(|e| crate::VaultError::Io(format!("cannot start the audit writer: {e}")))?;
    Ok((AuditSender(tx), handle))
}
