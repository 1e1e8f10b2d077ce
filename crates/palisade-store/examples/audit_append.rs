//! Time per audit row appended the way the gateway's writer appends them (batches of
//! request rows, each with a credential named), for weighing changes to the audit path:
//! `cargo run --release -p palisade-store --example audit_append -- [ROWS] [BATCH]`.

use palisade_store::{AuditEntry, Home, Store};
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let rows: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let batch: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open(&Home::at(dir.path().join("home"))).expect("a new store");
    let entry = |i: usize| AuditEntry {
        event: "request".into(),
        agent: Some("bench".into()),
        method: Some("GET".into()),
        host: Some("localhost".into()),
        path: Some("/1k".into()),
        decision: Some("injected".into()),
        secret: Some("bench-token".into()),
        status: Some(200),
        latency_ms: Some(0.05 + (i % 7) as f64 / 100.0),
        ..AuditEntry::default()
    };
    let started = Instant::now();
    let mut written = 0;
    while written < rows {
        let n = batch.min(rows - written);
        let entries: Vec<(i64, AuditEntry)> = (written..written + n)
            .map(|i| (palisade_store::now_ms(), entry(i)))
            .collect();
        store.append_audit_batch(&entries).expect("append");
        written += n;
    }
    let elapsed = started.elapsed();
    println!(
        "{rows} rows in batches of {batch}: {:.2} µs per row",
        elapsed.as_secs_f64() * 1e6 / rows as f64
    );
}
