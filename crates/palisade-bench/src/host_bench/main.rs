//! `host-bench`: the measurements behind `bench/host.sh`, all in one run.
//!
//! It builds a throwaway home with N agents whose model is the testkit's fake
//! Anthropic API (TLS on 127.0.0.1, reached only through the vault, which injects the
//! key), starts the real `palisade up`, and measures:
//!
//! - **warm wake**: a message through the local API, from its `accepted` event to the
//!   runner's `started` event (the runner sends it the moment it reads `deliver`, before
//!   any model call), against the same two frames echoed over a bare Unix socket;
//! - **cold start**: the same with no runner (the host started with a short idle
//!   timeout, and the bench waits until the previous sandbox is gone), against
//!   `palisade sandbox run -- true` and bare `bwrap … true` in the same run;
//! - **idle runner memory**: RSS and PSS of each warm `palisade runner` and its
//!   `palisade shim` after a turn, when idle;
//! - **host memory**: RSS of `palisade up` with N agents defined, with 0 and W warm
//!   runners.
//!
//! Everything listens on 127.0.0.1; every process started is stopped on exit
//! (`ChildGuard`, `palisade down`), and every wait is bounded.

mod api;
mod echo;
#[path = "../percentile.rs"]
mod percentile;
mod procs;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use palisade_testkit::{free_port, wait_for_tcp, ChildGuard, Palisade, TestCa, Upstream};
use percentile::percentile;
use procs::Memory;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Host benchmark: message wake, cold start and memory of `palisade up`"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run every measurement and print the results.
    Run(RunArgs),
    /// The echo side of the Unix socket baseline (started by `run`).
    #[command(hide = true)]
    EchoPeer {
        #[arg(long)]
        socket: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The `palisade` binary to benchmark (a release build).
    #[arg(long)]
    palisade: PathBuf,
    /// Agents defined in the home.
    #[arg(long, default_value_t = 100)]
    agents: usize,
    /// Warm runners when the host's memory is read.
    #[arg(long, default_value_t = 10)]
    warm_runners: usize,
    /// Messages to a warm runner.
    #[arg(long, default_value_t = 200)]
    warm_samples: usize,
    /// Round trips on the bare Unix socket baseline.
    #[arg(long, default_value_t = 2000)]
    baseline_samples: usize,
    /// Cold starts with bubblewrap (also the runs of each sandbox baseline).
    #[arg(long, default_value_t = 30)]
    cold_samples: usize,
    /// Cold starts with podman; 0 or no image (`palisade sandbox image build`) skips.
    #[arg(long, default_value_t = 10)]
    podman_samples: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

const MESSAGE_TIMEOUT: Duration = Duration::from_secs(60);
const STARTUP: Duration = Duration::from_secs(60);
const KEY: &str = "sk-ant-bench-00000000";

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::EchoPeer { socket } => runtime.block_on(echo::peer(&socket)),
        Command::Run(args) => run(args, &runtime),
    }
}

/// p50/p99 of one series, in milliseconds.
#[derive(Clone, Copy, Debug, Serialize)]
struct Latency {
    samples: usize,
    p50_ms: f64,
    p99_ms: f64,
}

impl Latency {
    fn of(mut micros: Vec<u32>) -> Latency {
        micros.sort_unstable();
        Latency {
            samples: micros.len(),
            p50_ms: percentile(&micros, 50.0),
            p99_ms: percentile(&micros, 99.0),
        }
    }

    fn of_durations(durations: impl IntoIterator<Item = Duration>) -> Latency {
        Latency::of(
            durations
                .into_iter()
                .map(|d| u32::try_from(d.as_micros()).unwrap_or(u32::MAX))
                .collect(),
        )
    }
}

#[derive(Debug, Default, Serialize)]
struct Results {
    cores: usize,
    load_before: String,
    load_after: String,
    agents: usize,
    baseline_unix_echo: Option<Latency>,
    warm_accept: Option<Latency>,
    warm_wake: Option<Latency>,
    warm_turn: Option<Latency>,
    bare_bwrap_true: Option<Latency>,
    sandbox_run_true_bwrap: Option<Latency>,
    cold_wake_bwrap: Option<Latency>,
    bare_podman_true: Option<Latency>,
    sandbox_run_true_podman: Option<Latency>,
    cold_wake_podman: Option<Latency>,
    runner_idle: Option<Memory>,
    shim_idle: Option<Memory>,
    sandbox_bwrap_idle: Option<Memory>,
    /// Every process of the warm sandboxes (bwrap, shim, runner), summed, per sandbox.
    sandbox_total_idle: Option<Memory>,
    warm_runners: usize,
    host_no_runners: Option<Memory>,
    host_warm_runners: Option<Memory>,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn agent_name(i: usize) -> String {
    format!("bench-{i:03}")
}

fn check(output: std::process::Output, what: &str) -> anyhow::Result<()> {
    if !output.status.success() {
        bail!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// A running `palisade up` for the bench's home.
struct HostRun {
    guard: ChildGuard,
    info: api::HostInfo,
}

fn start_host(
    palisade: &Palisade,
    ca: &TestCa,
    idle_timeout: &str,
    runtime: &str,
) -> anyhow::Result<HostRun> {
    let _ = std::fs::remove_file(palisade.home().join("run/host.json"));
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let listen_text = listen.to_string();
    let ca_path = ca.pem_path().to_string_lossy().into_owned();
    let mut guard = palisade.spawn(&[
        "up",
        "--listen",
        &listen_text,
        "--upstream-ca",
        &ca_path,
        "--allow-local-upstream",
        "localhost",
        "--idle-timeout",
        idle_timeout,
        "--runtime",
        runtime,
    ]);
    let info_path = palisade.home().join("run/host.json");
    let deadline = Instant::now() + STARTUP;
    while !info_path.exists() {
        if let Ok(Some(status)) = guard.try_wait() {
            bail!("palisade up exited ({status}): {}", guard.stderr());
        }
        if Instant::now() > deadline {
            bail!("palisade up did not start: {}", guard.stderr());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if !wait_for_tcp(listen, STARTUP) {
        bail!("the host API is not listening: {}", guard.stderr());
    }
    let info: api::HostInfo =
        serde_json::from_slice(&std::fs::read(&info_path)?).context("cannot read run/host.json")?;
    Ok(HostRun { guard, info })
}

fn stop_host(palisade: &Palisade, mut host: HostRun) {
    let _ = palisade.run(&["down"]);
    let _ = host.guard.wait_timeout(Duration::from_secs(30));
}

/// Waits (bounded) until the host has no child processes: the last runner's sandbox
/// (bwrap, or the podman client) is gone.
fn wait_for_no_sandbox(host_pid: u32) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !procs::descendants(host_pid).is_empty() {
        if Instant::now() > deadline {
            bail!("the previous runner did not stop within 20 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Times `runs` runs of a command (after one unmeasured run).
fn time_command(mut make: impl FnMut() -> std::process::Command, runs: usize) -> Latency {
    let mut micros = Vec::with_capacity(runs);
    for i in 0..=runs {
        let mut command = make();
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let started = Instant::now();
        let ok = command.status().is_ok_and(|s| s.success());
        let took = started.elapsed();
        if !ok {
            eprintln!("host-bench: {:?} failed", make());
            continue;
        }
        if i > 0 {
            micros.push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
        }
    }
    Latency::of(micros)
}

fn bare_bwrap() -> std::process::Command {
    let mut command = std::process::Command::new("bwrap");
    command.args([
        "--unshare-all",
        "--die-with-parent",
        "--ro-bind",
        "/usr",
        "/usr",
        "--symlink",
        "usr/bin",
        "/bin",
        "--symlink",
        "usr/lib",
        "/lib",
        "--symlink",
        "usr/lib64",
        "/lib64",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--",
        "/usr/bin/true",
    ]);
    command
}

fn bare_podman() -> std::process::Command {
    let mut command = std::process::Command::new("podman");
    command.args([
        "--cgroup-manager",
        "cgroupfs",
        "--runtime",
        "runc",
        "run",
        "--rm",
        "--network",
        "none",
        "--ulimit",
        "nofile=4096:4096",
        "--ulimit",
        "nproc=4096:4096",
        "localhost/palisade-sandbox:latest",
        "true",
    ]);
    command
}

fn podman_image_exists() -> bool {
    std::process::Command::new("podman")
        .args(["image", "exists", "localhost/palisade-sandbox:latest"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Cold starts: each message finds no runner.
fn cold_series(
    runtime: &tokio::runtime::Runtime,
    host: &HostRun,
    agent: &str,
    samples: usize,
    label: &str,
) -> anyhow::Result<Latency> {
    let mut wakes = Vec::with_capacity(samples);
    // One unmeasured message starts the agent's worker (a one-time cost per agent).
    for i in 0..=samples {
        wait_for_no_sandbox(host.info.pid)?;
        let timeline = runtime.block_on(api::send(
            &host.info,
            agent,
            &format!("cold-{label}-{i}"),
            "cold start",
            MESSAGE_TIMEOUT,
        ))?;
        if i > 0 {
            wakes.push(timeline.wake());
        }
        if i % 10 == 0 {
            eprintln!("host-bench: {label} cold start {i}/{samples}");
        }
    }
    Ok(Latency::of_durations(wakes))
}

fn median_memory(mut items: Vec<Memory>) -> Option<Memory> {
    if items.is_empty() {
        return None;
    }
    items.sort_by_key(|m| m.rss_kib);
    Some(items[items.len() / 2])
}

fn run(args: RunArgs, runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    if args.agents == 0 || args.warm_runners == 0 || args.warm_runners > args.agents {
        bail!("--agents must be at least 1 and --warm-runners between 1 and --agents");
    }
    let mut results = Results {
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_before: load_average(),
        agents: args.agents,
        warm_runners: args.warm_runners,
        ..Results::default()
    };
    let palisade_binary = std::fs::canonicalize(&args.palisade)
        .with_context(|| format!("no palisade binary at {}", args.palisade.display()))?;
    let ca = TestCa::new()?;
    let upstream = Upstream::start(&ca)?;
    let palisade = Palisade::new(&palisade_binary);

    eprintln!("host-bench: creating {} agents", args.agents);
    let base_url = upstream.base_url();
    for i in 0..args.agents {
        let name = agent_name(i);
        check(
            palisade.run(&[
                "agents",
                "create",
                &name,
                "--provider",
                "anthropic",
                "--model",
                "claude-test",
                "--base-url",
                &base_url,
                "--profile",
                "research",
            ]),
            "agents create",
        )?;
    }
    let key_file = palisade.write_file("key.txt", KEY);
    let key_path = key_file.to_string_lossy().into_owned();
    let mut secret: Vec<String> = [
        "secrets",
        "create",
        "--name",
        "claude",
        "--host-pattern",
        "localhost",
        "--inject",
        "anthropic",
        "--value-file",
        &key_path,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for i in 0..args.agents {
        secret.push("--agent".into());
        secret.push(agent_name(i));
    }
    check(palisade.run(&secret), "secrets create")?;
    let instructions =
        std::fs::read_to_string(palisade.home().join("agents/bench-000/instructions.md"))
            .unwrap_or_default();

    // Phase 1: warm runners, memory.
    let host = start_host(&palisade, &ca, "1h", "bwrap")?;
    std::thread::sleep(Duration::from_secs(1));
    results.host_no_runners = procs::memory(host.info.pid);

    eprintln!("host-bench: unix socket baseline");
    results.baseline_unix_echo = Some(Latency::of(runtime.block_on(echo::round_trips(
        palisade.dir(),
        args.baseline_samples,
        &instructions,
    ))?));

    eprintln!("host-bench: warm wake ({} messages)", args.warm_samples);
    let agent = agent_name(0);
    let first = runtime.block_on(api::send(
        &host.info,
        &agent,
        "warm-up",
        "hello",
        MESSAGE_TIMEOUT,
    ))?;
    if !first.reply_text.contains("echo: hello") {
        bail!("unexpected reply {:?}", first.reply_text);
    }
    let model_calls = upstream.requests();
    if model_calls.iter().any(|r| r.api_key() != Some(KEY)) || model_calls.is_empty() {
        bail!("the model call did not carry the injected key");
    }
    let mut timelines = Vec::with_capacity(args.warm_samples);
    for i in 0..args.warm_samples {
        // A fresh conversation each time: the wake is measured without a growing history.
        let timeline = runtime.block_on(api::send(
            &host.info,
            &agent,
            &format!("warm-{i}"),
            "ping",
            MESSAGE_TIMEOUT,
        ))?;
        if timeline.first_delta.is_none() {
            bail!("the reply did not stream");
        }
        timelines.push(timeline);
    }
    upstream.clear();
    results.warm_accept = Some(Latency::of_durations(timelines.iter().map(|t| t.accept())));
    results.warm_wake = Some(Latency::of_durations(timelines.iter().map(|t| t.wake())));
    results.warm_turn = Some(Latency::of_durations(timelines.iter().map(|t| t.turn())));

    eprintln!("host-bench: warming {} runners", args.warm_runners);
    for i in 1..args.warm_runners {
        runtime.block_on(api::send(
            &host.info,
            &agent_name(i),
            "warm",
            "hello",
            MESSAGE_TIMEOUT,
        ))?;
    }
    upstream.clear();
    std::thread::sleep(Duration::from_secs(2));
    let tree = procs::descendants(host.info.pid);
    let runners: Vec<_> = tree.iter().filter(|p| p.is_palisade("runner")).collect();
    if runners.len() != args.warm_runners {
        eprintln!(
            "host-bench: warning: {} runners found, {} expected",
            runners.len(),
            args.warm_runners
        );
    }
    results.runner_idle = median_memory(
        runners
            .iter()
            .filter_map(|p| procs::memory(p.pid))
            .collect(),
    );
    results.shim_idle = median_memory(
        tree.iter()
            .filter(|p| p.is_palisade("shim"))
            .filter_map(|p| procs::memory(p.pid))
            .collect(),
    );
    let per_sandbox = |total: Memory| {
        let n = runners.len().max(1) as u64;
        Memory {
            rss_kib: total.rss_kib / n,
            anon_kib: total.anon_kib / n,
            file_kib: total.file_kib / n,
            pss_kib: total.pss_kib / n,
        }
    };
    results.sandbox_total_idle = Some(per_sandbox(
        tree.iter()
            .filter_map(|p| procs::memory(p.pid))
            .fold(Memory::default(), |a, b| a + b),
    ));
    // bubblewrap's own processes, summed per sandbox (there are one or two).
    let bwrap_total = tree
        .iter()
        .filter(|p| p.is_bwrap())
        .filter_map(|p| procs::memory(p.pid))
        .fold(Memory::default(), |a, b| a + b);
    results.sandbox_bwrap_idle = Some(per_sandbox(bwrap_total));
    results.host_warm_runners = procs::memory(host.info.pid);

    eprintln!("host-bench: sandbox baselines");
    results.bare_bwrap_true = Some(time_command(bare_bwrap, args.cold_samples));
    let reference_agent = agent_name(args.agents - 1);
    results.sandbox_run_true_bwrap = Some(time_command(
        || palisade.command(&["sandbox", "run", "--agent", &reference_agent, "--", "true"]),
        args.cold_samples,
    ));
    let podman = args.podman_samples > 0 && podman_image_exists();
    if podman {
        results.bare_podman_true = Some(time_command(bare_podman, args.podman_samples));
        results.sandbox_run_true_podman = Some(time_command(
            || {
                palisade.command(&[
                    "sandbox",
                    "run",
                    "--runtime",
                    "podman",
                    "--agent",
                    &reference_agent,
                    "--",
                    "true",
                ])
            },
            args.podman_samples,
        ));
    }
    stop_host(&palisade, host);

    // Phase 2: cold starts; a runner stops 100 ms after its reply.
    let host = start_host(&palisade, &ca, "100ms", "bwrap")?;
    results.cold_wake_bwrap = Some(cold_series(
        runtime,
        &host,
        &agent_name(0),
        args.cold_samples,
        "bwrap",
    )?);
    stop_host(&palisade, host);
    if podman {
        let host = start_host(&palisade, &ca, "100ms", "podman")?;
        let series = cold_series(
            runtime,
            &host,
            &agent_name(0),
            args.podman_samples,
            "podman",
        );
        stop_host(&palisade, host);
        results.cold_wake_podman = Some(series?);
    } else {
        eprintln!("host-bench: no podman image (palisade sandbox image build); podman skipped");
    }
    upstream.clear();
    results.load_after = load_average();
    report(&results);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&results)?)?;
    }
    Ok(())
}

fn line(name: &str, latency: &Option<Latency>) {
    if let Some(l) = latency {
        println!(
            "{name:<58} p50 {:>8.3} ms   p99 {:>8.3} ms   (n={})",
            l.p50_ms, l.p99_ms, l.samples
        );
    }
}

fn ratio(name: &str, measured: &Option<Latency>, baseline: &Option<Latency>) {
    if let (Some(m), Some(b)) = (measured, baseline) {
        if b.p50_ms > 0.0 {
            println!(
                "  {name}: p50 {:.1}x the baseline ({:+.3} ms)",
                m.p50_ms / b.p50_ms,
                m.p50_ms - b.p50_ms
            );
        }
    }
}

fn memory_line(name: &str, memory: &Option<Memory>) {
    if let Some(m) = memory {
        println!(
            "{name:<58} RSS {:>6.1} MiB (anon {:>5.1} + file {:>5.1})   PSS {:>6.1} MiB",
            mib(m.rss_kib),
            mib(m.anon_kib),
            mib(m.file_kib),
            mib(m.pss_kib)
        );
    }
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

fn report(r: &Results) {
    println!(
        "## host benchmark: {} agents, {} cores, load average {} before, {} after",
        r.agents, r.cores, r.load_before, r.load_after
    );
    println!();
    line(
        "baseline: deliver -> started, bare unix socket echo",
        &r.baseline_unix_echo,
    );
    line(
        "request -> accepted (HTTP + durable accept)",
        &r.warm_accept,
    );
    line("warm wake: accepted -> runner started", &r.warm_wake);
    ratio(
        "warm wake vs unix socket echo",
        &r.warm_wake,
        &r.baseline_unix_echo,
    );
    line(
        "started -> reply (fake model through shim + vault)",
        &r.warm_turn,
    );
    println!();
    line(
        "baseline: bare bwrap --unshare-all ... true",
        &r.bare_bwrap_true,
    );
    line(
        "baseline: palisade sandbox run -- true (bwrap)",
        &r.sandbox_run_true_bwrap,
    );
    line(
        "cold start: accepted -> runner started (bwrap)",
        &r.cold_wake_bwrap,
    );
    ratio(
        "cold start vs sandbox run -- true",
        &r.cold_wake_bwrap,
        &r.sandbox_run_true_bwrap,
    );
    ratio(
        "cold start vs bare bwrap",
        &r.cold_wake_bwrap,
        &r.bare_bwrap_true,
    );
    line(
        "baseline: bare podman run --rm --network none true",
        &r.bare_podman_true,
    );
    line(
        "baseline: palisade sandbox run -- true (podman)",
        &r.sandbox_run_true_podman,
    );
    line(
        "cold start: accepted -> runner started (podman)",
        &r.cold_wake_podman,
    );
    ratio(
        "cold start vs sandbox run -- true (podman)",
        &r.cold_wake_podman,
        &r.sandbox_run_true_podman,
    );
    println!();
    memory_line("idle runner: palisade runner (median)", &r.runner_idle);
    memory_line("idle runner: palisade shim (median)", &r.shim_idle);
    if let (Some(runner), Some(shim)) = (r.runner_idle, r.shim_idle) {
        memory_line("idle runner: runner + shim", &Some(runner + shim));
    }
    memory_line(
        "idle runner: bubblewrap processes per sandbox",
        &r.sandbox_bwrap_idle,
    );
    memory_line(
        "idle runner: whole sandbox (every process)",
        &r.sandbox_total_idle,
    );
    memory_line(
        &format!("host: palisade up, {} agents, no runners", r.agents),
        &r.host_no_runners,
    );
    memory_line(
        &format!(
            "host: palisade up, {} agents, {} warm runners",
            r.agents, r.warm_runners
        ),
        &r.host_warm_runners,
    );
    println!();
    println!("targets (DESIGN.md):");
    if let Some(w) = r.warm_wake {
        println!(
            "  warm wake <= 10 ms p50: {:.3} ms, {}",
            w.p50_ms,
            verdict(w.p50_ms <= 10.0)
        );
    }
    if let (Some(runner), Some(shim)) = (r.runner_idle, r.shim_idle) {
        let total = mib((runner + shim).rss_kib);
        println!(
            "  idle runner (runner + shim) <= 20 MiB RSS: {total:.1} MiB, {}",
            verdict(total <= 20.0)
        );
    }
    if let Some(host) = r.host_warm_runners {
        let total = mib(host.rss_kib);
        println!(
            "  host with {} agents and {} warm <= 100 MiB RSS: {total:.1} MiB, {}",
            r.agents,
            r.warm_runners,
            verdict(total <= 100.0)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_echo_peer_answers_deliver_with_started() {
        use palisade_host::protocol::{HostConnection, HostFrame, RunnerFrame};
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("echo.sock");
        runtime.block_on(async {
            let listener = tokio::net::UnixListener::bind(&socket).unwrap();
            let peer = tokio::spawn({
                let socket = socket.clone();
                async move { echo::peer(&socket).await }
            });
            let (stream, _) = listener.accept().await.unwrap();
            let mut conn = HostConnection::new(stream);
            let frame = HostFrame::Deliver(Box::new(echo::sample_delivery(42, "be brief")));
            conn.send(&frame).await.unwrap();
            match conn.recv().await.unwrap() {
                Some(RunnerFrame::Event { message_id, event }) => {
                    assert_eq!(message_id, 42);
                    assert_eq!(event["kind"], "started");
                }
                other => panic!("unexpected {other:?}"),
            }
            drop(conn);
            let ended = tokio::time::timeout(Duration::from_secs(5), peer).await;
            assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
        });
    }
}
