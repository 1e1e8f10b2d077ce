//! `vault-load`: the load generator behind `bench/vault.sh`.
//!
//! Sends GETs to one HTTPS URL, either directly or through an HTTP proxy tunnel (the
//! vault, or mitmproxy as a reference), and prints one JSON line per run: requests/s,
//! p50 and p99 latency, errors. Modes: `warm` (keep-alive connections), `new` (a new
//! connection or tunnel per request), `idle` (open many tunnels, read the proxy's RSS).

mod client;
mod dial;
mod load;
mod percentile;
mod stats;

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use client::RequestSpec;
use dial::{Dialer, Proxy};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    /// Keep-alive connections sending requests back to back.
    Warm,
    /// A new connection (and tunnel) for every request.
    New,
    /// Open many tunnels, do one request on each, leave them idle, read the proxy's RSS.
    Idle,
}

#[derive(Parser, Debug)]
#[command(version, about = "Load generator for Palisade's vault benchmark")]
struct Args {
    /// The HTTPS URL every request asks for, e.g. https://localhost:8443/1k
    #[arg(long)]
    url: http::Uri,
    /// Address to connect to without a proxy (default: resolve the URL's host).
    #[arg(long)]
    connect_to: Option<SocketAddr>,
    /// HTTP proxy to tunnel through with CONNECT.
    #[arg(long)]
    proxy: Option<SocketAddr>,
    /// Agent token for the proxy, sent as Basic x:TOKEN.
    #[arg(long, env = "VAULT_LOAD_PROXY_TOKEN", hide_env_values = true)]
    proxy_token: Option<String>,
    /// PEM file of a CA to trust (the upstream's when direct, the proxy's through a proxy).
    #[arg(long = "ca", required = true)]
    trusted: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "warm")]
    mode: Mode,
    /// Connections (warm), concurrent workers (new) or tunnels (idle).
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Measured time (warm, new).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured time before the measured one (warm, new).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Offer only h2 in ALPN.
    #[arg(long)]
    http2: bool,
    /// Body length every response must have.
    #[arg(long)]
    expect_bytes: Option<usize>,
    /// Name printed in the result line.
    #[arg(long, default_value = "run")]
    label: String,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Idle mode: process whose RSS is read before and after opening the tunnels.
    #[arg(long)]
    watch_pid: Option<u32>,
    /// Idle mode: tunnels being opened at once.
    #[arg(long, default_value_t = 64)]
    open_concurrency: usize,
    /// Idle mode: time allowed for opening all tunnels.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    open_within: Duration,
    /// Idle mode: how long to hold the tunnels after the reading.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    hold: Duration,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.url.scheme_str() != Some("https") {
        bail!("--url must be an https:// URL");
    }
    let host = args.url.host().context("--url needs a host")?.to_string();
    let port = args.url.port_u16().unwrap_or(443);
    let target_addr = match args.connect_to {
        Some(addr) => addr,
        None => tokio::net::lookup_host((host.as_str(), port))
            .await?
            .next()
            .with_context(|| format!("{host} does not resolve"))?,
    };
    let proxy = args.proxy.map(|addr| Proxy {
        addr,
        token: args.proxy_token.clone(),
    });
    let dialer = Arc::new(Dialer::new(
        &host,
        port,
        target_addr,
        proxy,
        &args.trusted,
        args.http2,
    )?);
    let spec = Arc::new(RequestSpec {
        uri: args.url.clone(),
        expect_body_bytes: args.expect_bytes,
    });
    let line = match args.mode {
        Mode::Warm | Mode::New => {
            let plan = load::Plan {
                label: args.label.clone(),
                connections: args.connections.max(1),
                warmup: args.warmup,
                duration: args.duration,
            };
            let summary = match args.mode {
                Mode::Warm => load::warm(dialer, spec, &plan).await,
                _ => load::fresh(dialer, spec, &plan).await,
            };
            serde_json::to_string(&summary)?
        }
        Mode::Idle => {
            let plan = load::IdlePlan {
                label: args.label.clone(),
                count: args.connections,
                concurrency: args.open_concurrency,
                open_within: args.open_within,
                watch_pid: args.watch_pid,
                hold: args.hold,
            };
            serde_json::to_string(&load::idle(dialer, spec, &plan).await)?
        }
    };
    println!("{line}");
    Ok(())
}
