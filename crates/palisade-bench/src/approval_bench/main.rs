//! `approval-bench`: the measurements behind `bench/approvals.sh`, in one run.
//!
//! A throwaway home with agents whose requests to `/held/*` need approval, a Slack
//! channel on the testkit's fake Slack (Socket Mode) with one approver, and the real
//! `palisade up` with the vault's TCP listener; the bench itself is the agent (a
//! token-authenticated client through the vault, trusting the vault's CA) and the
//! approver (pressing buttons through the fake). It measures:
//!
//! - **click → upstream**: from the moment the fake Slack sends the button press to
//!   the moment the held request reaches the upstream (the testkit server's arrival
//!   time), against **send → upstream** of the same kind of request that needs no
//!   approval, on a warm tunnel, interleaved in the same run;
//! - **cards for N concurrent held requests**: N requests sent at once (spread over
//!   agents so no agent passes its hold share), the time until each one's card is
//!   posted at the fake Slack, then every card pressed at once and the time until all
//!   N requests have reached the upstream.
//!
//! Everything listens on 127.0.0.1; `palisade up` is stopped on exit (`ChildGuard`,
//! `palisade down`); every wait is bounded.

#[path = "../client.rs"]
mod client;
#[path = "../dial.rs"]
mod dial;
#[path = "../percentile.rs"]
mod percentile;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use client::{Connection, RequestSpec};
use dial::{Dialer, Proxy};
use palisade_testkit::{
    free_port, slack_dm, wait_for_tcp, FakeSlack, Palisade, SlackMessage, TestCa, Upstream,
};
use percentile::percentile;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Approval benchmark: click to upstream, and cards for concurrent held requests"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run every measurement and print the results.
    Run(RunArgs),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The `palisade` binary to benchmark (a release build).
    #[arg(long)]
    palisade: PathBuf,
    /// Held requests approved one at a time (and as many without approval).
    #[arg(long, default_value_t = 200)]
    samples: usize,
    /// Requests held at once for the card measurement.
    #[arg(long, default_value_t = 100)]
    concurrent: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

const STARTUP: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(60);
const APPROVER: &str = "U0BENCH";
/// Agents the concurrent requests are spread over (each may hold 32 by default).
const AGENTS: usize = 4;

#[derive(Clone, Copy, Debug, Serialize)]
struct Latency {
    samples: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Latency {
    fn of(durations: &[Duration]) -> Latency {
        let mut micros: Vec<u32> = durations
            .iter()
            .map(|d| u32::try_from(d.as_micros()).unwrap_or(u32::MAX))
            .collect();
        micros.sort_unstable();
        Latency {
            samples: micros.len(),
            p50_ms: percentile(&micros, 50.0),
            p99_ms: percentile(&micros, 99.0),
            max_ms: percentile(&micros, 100.0),
        }
    }
}

#[derive(Debug, Serialize)]
struct Results {
    cores: usize,
    load_before: String,
    load_after: String,
    no_approval_send_to_upstream: Latency,
    click_to_upstream: Latency,
    concurrent: usize,
    /// From sending the N requests to each card being posted.
    cards_posted: Latency,
    /// From pressing every card to the last request reaching the upstream.
    all_approved_to_upstream_ms: f64,
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn check(output: std::process::Output, what: &str) -> anyhow::Result<std::process::Output> {
    if !output.status.success() {
        bail!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let Command::Run(args) = cli.command;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    run(args, &runtime)
}

fn agent(i: usize) -> String {
    format!("bench-{i}")
}

/// The time the upstream received the request with this path.
fn arrival(upstream: &Upstream, path: &str) -> Option<Instant> {
    upstream
        .requests()
        .into_iter()
        .find(|r| r.path() == path)
        .map(|r| r.received_at)
}

/// Polls the fake Slack without blocking the runtime.
async fn card_for(slack: &FakeSlack, needle: &str) -> anyhow::Result<SlackMessage> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(card) = slack
            .messages_in(&slack_dm(APPROVER))
            .into_iter()
            .find(|m| m.has_buttons() && m.block_text().contains(needle))
        {
            return Ok(card);
        }
        if Instant::now() > deadline {
            bail!("no card for {needle} within {} s", WAIT.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn run(args: RunArgs, runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let load_before = load_average();
    let ca = TestCa::new()?;
    let upstream = Upstream::start(&ca)?;
    let slack = FakeSlack::start("xoxb-bench-bot", "xapp-bench-app")?;
    let palisade = Palisade::new(&args.palisade);
    let mut tokens = Vec::new();
    for i in 0..AGENTS {
        check(
            palisade.run(&["agents", "create", &agent(i), "--profile", "research"]),
            "agents create",
        )?;
        let token = check(
            palisade.run(&["agents", "token", &agent(i)]),
            "agents token",
        )?;
        tokens.push(String::from_utf8_lossy(&token.stdout).trim().to_string());
    }
    let bot = palisade.write_file("bot.txt", slack.bot_token());
    let app = palisade.write_file("app.txt", slack.app_token());
    check(
        palisade.run(&[
            "channels",
            "add",
            "slack",
            "team",
            "--bot-token-file",
            &bot.to_string_lossy(),
            "--app-token-file",
            &app.to_string_lossy(),
            "--api-base",
            &slack.api_base(),
        ]),
        "channels add",
    )?;
    for i in 0..AGENTS {
        check(
            palisade.run(&[
                "approvers",
                "add",
                "--agent",
                &agent(i),
                "--channel",
                "team",
                "--user",
                APPROVER,
            ]),
            "approvers add",
        )?;
    }
    check(
        palisade.run(&[
            "rules",
            "create",
            "--name",
            "held",
            "--host-pattern",
            "localhost",
            "--path-pattern",
            "/held/*",
            "--action",
            "require_approval",
            "--approval-timeout",
            "5m",
        ]),
        "rules create",
    )?;
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let vault = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let ca_path = ca.pem_path().to_string_lossy().into_owned();
    let mut host = palisade.spawn(&[
        "up",
        "--listen",
        &listen.to_string(),
        "--vault-listen",
        &vault.to_string(),
        "--upstream-ca",
        &ca_path,
        "--allow-local-upstream",
        "localhost",
    ]);
    let ready = wait_for_tcp(listen, STARTUP) && wait_for_tcp(vault, STARTUP);
    let deadline = Instant::now() + STARTUP;
    while slack.connections() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !ready || slack.connections() == 0 {
        bail!(
            "palisade up did not start with its Slack channel: {}",
            host.stderr()
        );
    }
    let vault_ca = palisade.home().join("ca/ca.pem");
    let dialer = |i: usize| {
        Dialer::new(
            "localhost",
            upstream.port(),
            upstream.addr(),
            Some(Proxy {
                addr: vault,
                token: Some(tokens[i].clone()),
            }),
            std::slice::from_ref(&vault_ca),
            false,
        )
    };
    let spec = |path: &str| -> anyhow::Result<RequestSpec> {
        Ok(RequestSpec {
            uri: format!("https://localhost:{}{path}", upstream.port()).parse()?,
            expect_body_bytes: None,
        })
    };
    let outcome = runtime.block_on(async {
        let free_dialer = dialer(0)?;
        let held_dialer = std::sync::Arc::new(dialer(1)?);
        let mut free = Connection::open(&free_dialer).await?;
        free.get(&spec("/free/warm")?).await?;
        let mut no_approval = Vec::with_capacity(args.samples);
        let mut click = Vec::with_capacity(args.samples);
        for i in 0..args.samples {
            let path = format!("/free/{i}");
            let sent = Instant::now();
            free.get(&spec(&path)?).await?;
            let arrived = arrival(&upstream, &path).context("a free request did not arrive")?;
            no_approval.push(arrived.duration_since(sent));

            let path = format!("/held/{i}x");
            let request = spec(&path)?;
            let held = std::sync::Arc::clone(&held_dialer);
            let waiting = tokio::spawn(async move {
                let mut connection = Connection::open(&held).await?;
                connection.get(&request).await
            });
            // The `x` ends the number, so `/held/1x` never matches `/held/10x`.
            let card = card_for(&slack, &path).await?;
            let value = card.button("Approve once").context("no approve button")?;
            let pressed = Instant::now();
            slack.user_clicks(APPROVER, "Bench", &card, &value);
            waiting.await??;
            let arrived =
                arrival(&upstream, &path).context("an approved request did not arrive")?;
            click.push(arrived.duration_since(pressed));
        }

        // N requests held at once, spread over the agents.
        let mut connections = Vec::new();
        for n in 0..args.concurrent {
            let dialer = dialer(n % AGENTS)?;
            connections.push(Connection::open(&dialer).await?);
        }
        let started = Instant::now();
        let mut tasks = Vec::new();
        for (n, mut connection) in connections.into_iter().enumerate() {
            let request = spec(&format!("/held/burst-{n:03}"))?;
            tasks.push(tokio::spawn(async move { connection.get(&request).await }));
        }
        let deadline = Instant::now() + WAIT;
        let cards = loop {
            let cards: Vec<SlackMessage> = slack
                .messages_in(&slack_dm(APPROVER))
                .into_iter()
                .filter(|m| m.has_buttons() && m.block_text().contains("/held/burst-"))
                .collect();
            if cards.len() >= args.concurrent {
                break cards;
            }
            if Instant::now() > deadline {
                bail!(
                    "only {} of {} cards were posted",
                    cards.len(),
                    args.concurrent
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let posted: Vec<Duration> = cards
            .iter()
            .map(|c| c.posted_at.duration_since(started))
            .collect();
        let pressed = Instant::now();
        for card in &cards {
            let value = card.button("Approve once").context("no approve button")?;
            slack.user_clicks(APPROVER, "Bench", card, &value);
        }
        for task in tasks {
            task.await??;
        }
        let last = upstream
            .requests()
            .into_iter()
            .filter(|r| r.path().starts_with("/held/burst-"))
            .map(|r| r.received_at)
            .max()
            .context("no burst request arrived")?;
        Ok::<_, anyhow::Error>((no_approval, click, posted, last.duration_since(pressed)))
    });
    let _ = palisade.run(&["down"]);
    let _ = host.wait_timeout(Duration::from_secs(30));
    let (no_approval, click, posted, all) = outcome?;
    let results = Results {
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        load_before,
        load_after: load_average(),
        no_approval_send_to_upstream: Latency::of(&no_approval),
        click_to_upstream: Latency::of(&click),
        concurrent: args.concurrent,
        cards_posted: Latency::of(&posted),
        all_approved_to_upstream_ms: all.as_secs_f64() * 1000.0,
    };
    print(&results);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&results)?)?;
    }
    Ok(())
}

fn print(r: &Results) {
    println!(
        "## approval benchmark: {} cores, load average {} before, {} after",
        r.cores, r.load_before, r.load_after
    );
    println!();
    println!("| measurement | samples | p50 | p99 | max |");
    println!("| --- | --- | --- | --- | --- |");
    for (name, l) in [
        (
            "request without approval: sent → at upstream (warm tunnel)",
            r.no_approval_send_to_upstream,
        ),
        (
            "held request: Slack click sent → at upstream",
            r.click_to_upstream,
        ),
        (
            "concurrent held requests: sent → card posted",
            r.cards_posted,
        ),
    ] {
        println!(
            "| {name} | {} | {:.2} ms | {:.2} ms | {:.2} ms |",
            l.samples, l.p50_ms, l.p99_ms, l.max_ms
        );
    }
    println!();
    println!(
        "{} held at once: every card pressed → all {} at upstream in {:.1} ms",
        r.concurrent, r.concurrent, r.all_approved_to_upstream_ms
    );
}
