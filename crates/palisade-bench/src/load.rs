//! The three ways the benchmark loads a proxy: warm keep-alive connections, a new
//! connection (tunnel) per request, and many idle tunnels held open for a memory
//! reading. Each is bounded in time; nothing retries forever.

use crate::client::{Connection, RequestSpec};
use crate::dial::Dialer;
use crate::stats::{Samples, Summary};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// How a timed run is shaped.
#[derive(Clone, Debug)]
pub struct Plan {
    pub label: String,
    pub connections: usize,
    /// Requests before this much time has passed are sent but not counted.
    pub warmup: Duration,
    pub duration: Duration,
}

/// Pause after a failed open so a refusing proxy is not hammered.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// `connections` keep-alive connections, each sending GETs back to back.
pub async fn warm(dialer: Arc<Dialer>, spec: Arc<RequestSpec>, plan: &Plan) -> Summary {
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let deadline = measure_from + plan.duration;
    let mut workers = JoinSet::new();
    for _ in 0..plan.connections {
        let (dialer, spec) = (dialer.clone(), spec.clone());
        workers.spawn(async move {
            let mut samples = Samples::default();
            let mut connection: Option<Connection> = None;
            while Instant::now() < deadline {
                let conn = match connection.as_mut() {
                    Some(conn) => conn,
                    None => match Connection::open(&dialer).await {
                        Ok(conn) => connection.insert(conn),
                        Err(e) => {
                            samples.fail(e);
                            tokio::time::sleep(RETRY_PAUSE).await;
                            continue;
                        }
                    },
                };
                let sent = Instant::now();
                match conn.get(&spec).await {
                    Ok(()) if sent >= measure_from => samples.record(sent.elapsed()),
                    Ok(()) => {}
                    Err(e) => {
                        samples.fail(e);
                        connection = None;
                    }
                }
            }
            samples
        });
    }
    let samples = collect(workers).await;
    samples.summarize(&plan.label, "warm", plan.connections, plan.duration)
}

/// `connections` workers, each opening a fresh connection (TCP, CONNECT, TLS) for every
/// GET and closing it after; latency covers the whole sequence.
pub async fn fresh(dialer: Arc<Dialer>, spec: Arc<RequestSpec>, plan: &Plan) -> Summary {
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let deadline = measure_from + plan.duration;
    let mut workers = JoinSet::new();
    for _ in 0..plan.connections {
        let (dialer, spec) = (dialer.clone(), spec.clone());
        workers.spawn(async move {
            let mut samples = Samples::default();
            while Instant::now() < deadline {
                let began = Instant::now();
                let outcome = async {
                    let mut conn = Connection::open(&dialer).await?;
                    conn.get(&spec).await
                }
                .await;
                match outcome {
                    Ok(()) if began >= measure_from => samples.record(began.elapsed()),
                    Ok(()) => {}
                    Err(e) => {
                        samples.fail(e);
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                }
            }
            samples
        });
    }
    let samples = collect(workers).await;
    samples.summarize(&plan.label, "new", plan.connections, plan.duration)
}

async fn collect(mut workers: JoinSet<Samples>) -> Samples {
    let mut all = Samples::default();
    while let Some(done) = workers.join_next().await {
        if let Ok(samples) = done {
            all.merge(samples);
        }
    }
    all
}

/// How many idle tunnels to open, how fast, and whose memory to read.
#[derive(Clone, Debug)]
pub struct IdlePlan {
    pub label: String,
    pub count: usize,
    /// Tunnels being opened at once.
    pub concurrency: usize,
    /// Tunnels not started by then are counted as errors.
    pub open_within: Duration,
    /// The proxy process whose RSS is read before and after.
    pub watch_pid: Option<u32>,
    /// How long to keep them open after the reading.
    pub hold: Duration,
}

/// What the idle run reports.
#[derive(Serialize)]
pub struct IdleReport {
    pub label: String,
    pub mode: &'static str,
    pub requested: usize,
    pub opened: usize,
    pub errors: u64,
    pub open_seconds: f64,
    pub rss_before_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    pub per_tunnel_kib: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// Opens `count` tunnels (each completes one GET, then sits idle), reads the watched
/// process's RSS before and after, then holds them for `hold` and closes them all.
pub async fn idle(dialer: Arc<Dialer>, spec: Arc<RequestSpec>, plan: &IdlePlan) -> IdleReport {
    let rss_before_kib = plan.watch_pid.and_then(rss_kib);
    let started = Instant::now();
    let deadline = started + plan.open_within;
    let gate = Arc::new(Semaphore::new(plan.concurrency.max(1)));
    let mut openers = JoinSet::new();
    for _ in 0..plan.count {
        let (dialer, spec, gate) = (dialer.clone(), spec.clone(), gate.clone());
        openers.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            if Instant::now() >= deadline {
                anyhow::bail!("not opened within the time allowed for opening");
            }
            let mut conn = Connection::open(&dialer).await?;
            conn.get(&spec).await?;
            Ok(conn)
        });
    }
    let mut open = Vec::with_capacity(plan.count);
    let mut samples = Samples::default();
    while let Some(done) = openers.join_next().await {
        match done {
            Ok(Ok(conn)) => open.push(conn),
            Ok(Err(e)) => samples.fail(e),
            Err(e) => samples.fail(e.into()),
        }
    }
    let open_seconds = started.elapsed().as_secs_f64();
    // Let the proxy finish any work the last handshakes left behind before reading.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after_kib = plan.watch_pid.and_then(rss_kib);
    let per_tunnel_kib = match (rss_before_kib, rss_after_kib) {
        (Some(before), Some(after)) if !open.is_empty() => {
            Some(after.saturating_sub(before) as f64 / open.len() as f64)
        }
        _ => None,
    };
    tokio::time::sleep(plan.hold).await;
    let opened = open.len();
    drop(open);
    IdleReport {
        label: plan.label.clone(),
        mode: "idle",
        requested: plan.count,
        opened,
        errors: samples.errors,
        open_seconds,
        rss_before_kib,
        rss_after_kib,
        per_tunnel_kib,
        first_error: samples.first_error,
    }
}

/// `VmRSS` of a process in KiB, from `/proc/PID/status`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn vm_rss_is_read_from_proc_status() {
        let status = "Name:\tpalisade\nVmPeak:\t  9000 kB\nVmRSS:\t   23456 kB\nThreads:\t4\n";
        assert_eq!(super::parse_vm_rss(status), Some(23456));
        assert_eq!(super::parse_vm_rss("Name:\tx\n"), None);
        assert!(super::rss_kib(std::process::id()).is_some_and(|kib| kib > 0));
    }
}
