//! `palisade vault serve|ca-cert|env|admin-key|local`: the gateway on its own, and the
//! local addresses it lets agents reach.

use crate::context::Context;
use anyhow::Context as _;
use palisade_policy::AgentName;
use palisade_vault::{Gateway, VaultConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The standalone listener's default address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:10255";

#[derive(Debug, clap::Subcommand)]
pub enum VaultCommand {
    /// Run the gateway in the foreground until SIGINT/SIGTERM (then it drains gracefully).
    #[command(
        after_help = "Example:\n  palisade vault serve --listen 127.0.0.1:10255 --upstream-ca test-ca.pem --allow-local-upstream localhost"
    )]
    Serve(Box<ServeArgs>),
    /// Print the vault CA certificate (PEM) that agents must trust.
    CaCert,
    /// Print the environment a shell or container needs to use the gateway as an agent.
    #[command(
        after_help = "Example:\n  eval \"$(palisade vault env --agent mailer)\"\n  curl https://api.example.com/  # now goes through the vault"
    )]
    Env(EnvArgs),
    /// Print the admin API key (for the OneCLI-compatible API: Authorization: Bearer KEY).
    AdminKey {
        /// Replace the key; the old one stops working within a second.
        #[arg(long)]
        rotate: bool,
    },
    /// Local addresses agents may reach (a model server on this machine or the LAN),
    /// remembered in the home: list, allow, forget. In force when the command returns.
    #[command(subcommand)]
    Local(LocalCommand),
}

#[derive(Debug, clap::Subcommand)]
pub enum LocalCommand {
    /// The local addresses remembered in the home.
    List,
    /// Let agents reach a local address through the vault, from now on and after
    /// restarts. An address may name its port (that port alone); a name may not.
    #[command(
        after_help = "Examples:\n  palisade vault local allow 127.0.0.1:8080   # a model server on this machine\n  palisade vault local allow 192.168.1.20:11434\n  palisade vault local allow localhost        # every port of localhost"
    )]
    Allow {
        /// `ADDRESS[:PORT]` or a host name (`*.lan` for all under it).
        pattern: String,
    },
    /// Stop letting agents reach a remembered local address; what reaches it now ends.
    Forget {
        /// As `list` shows it.
        pattern: String,
    },
}

/// `NAME=IP` of `--upstream-resolve`.
pub fn parse_resolve(text: &str) -> Result<(String, std::net::IpAddr), String> {
    let (name, ip) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=IP"))?;
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() || name.contains(['/', ':', '*']) {
        return Err(format!("{name:?} is not a host name"));
    }
    let ip = ip
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| format!("{ip:?} is not an IP address"))?;
    Ok((name, ip))
}

/// Options shared by everything that runs a gateway (`vault serve`, `sandbox run`, `up`).
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// Extra CA certificates (PEM) to trust for upstream TLS, beside the system roots.
    #[arg(long = "upstream-ca", value_name = "FILE")]
    pub upstream_ca: Vec<PathBuf>,
    /// Let hosts matching PATTERN reach loopback/private addresses (tests, local
    /// services); an address may name a port, allowed alone (127.0.0.1:8080).
    #[arg(long = "allow-local-upstream", value_name = "PATTERN")]
    pub allow_local_upstream: Vec<String>,
    /// Resolve NAME to IP instead of asking DNS (tests, development); a local IP also
    /// needs --allow-local-upstream.
    #[arg(long = "upstream-resolve", value_name = "NAME=IP", value_parser = parse_resolve)]
    pub upstream_resolve: Vec<(String, std::net::IpAddr)>,
    /// How long a held request waits for a person before it is denied.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = humantime::parse_duration)]
    pub approval_timeout: Duration,
    /// How long to wait for an upstream's response headers.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = humantime::parse_duration)]
    pub upstream_timeout: Duration,
    /// TCP connect timeout towards upstreams.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Cut a response body that sends nothing for this long.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// Close a client connection or tunnel with no request in flight after this long silent.
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = humantime::parse_duration)]
    pub client_idle_timeout: Duration,
    /// Most connections open at once in all, client and upstream together (default:
    /// the descriptor limit less 1,024; never more than that).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub max_connections: Option<u32>,
    /// Most connections one agent may have open to the gateway, and most upstream
    /// connections it may hold, of every kind, open or idle (beyond either: 503).
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub max_connections_per_agent: u32,
    /// Most requests one agent may have in flight at once, over all its connections and
    /// HTTP/2 streams (beyond: 503).
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub max_requests_per_agent: u32,
    /// Most requests one agent may have waiting for approval (beyond: 429).
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_holds_per_agent: u32,
    /// Largest body read to judge a request (body rules, approvals), e.g. 4MiB; larger is refused (413).
    #[arg(long, value_name = "SIZE", default_value = "4MiB", value_parser = parse_size)]
    pub max_judged_body: usize,
    /// Most bytes of bodies read whole (to judge or hold them), and of decoders for
    /// compressed answers searched for credentials, one agent may have in memory at
    /// once (beyond: 503); at least --max-judged-body.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
    pub max_buffered_bodies_per_agent: usize,
    /// Most bytes of such bodies in memory at once, all agents together (beyond: 503).
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = parse_size)]
    pub max_buffered_bodies: usize,
    /// Free disk to keep under the home for the gateway's records, e.g. 128M or 1G:
    /// below it, requests that would send a credential or wait for approval get 503.
    #[arg(long, value_name = "SIZE", default_value = "128M", value_parser = palisade_sandbox::limits::parse_size)]
    pub min_free_disk: u64,
    /// Below this much free disk under the home, each agent may send at most 10
    /// credentialed or held requests a second (after a burst of 100); beyond, 503, so
    /// one agent's loop cannot use up the disk every agent's records need.
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = palisade_sandbox::limits::parse_size)]
    pub disk_share_below: u64,
}

/// A size such as `4MiB`, `512KiB`, `1048576` (bytes), up to 256 MiB.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size; write e.g. 4MiB, 512KiB or 1048576"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        "g" | "gb" | "gib" => 1024 * 1024 * 1024,
        other => return Err(format!("unknown unit {other:?}; use B, KiB, MiB or GiB")),
    };
    let bytes = number
        .checked_mul(factor)
        .filter(|b| (1..=256 * 1024 * 1024).contains(b))
        .ok_or_else(|| format!("{text:?} must be between 1 byte and 256MiB"))?;
    usize::try_from(bytes).map_err(|e| e.to_string())
}

impl GatewayArgs {
    /// A configuration with these options applied over the defaults.
    pub fn config(&self, ctx: &Context) -> VaultConfig {
        let mut config = VaultConfig::new(ctx.home.clone());
        config.upstream_ca = self.upstream_ca.clone();
        config.allow_local_upstream = self.allow_local_upstream.clone();
        config.upstream_resolve = self.upstream_resolve.clone();
        config.approval_timeout = self.approval_timeout;
        config.upstream_timeout = self.upstream_timeout;
        config.connect_timeout = self.connect_timeout;
        config.idle_timeout = self.idle_timeout;
        config.client_idle_timeout = self.client_idle_timeout;
        config.max_connections = self.max_connections.map(|n| n as usize);
        config.max_connections_per_agent = self.max_connections_per_agent as usize;
        config.max_requests_per_agent = self.max_requests_per_agent as usize;
        config.max_holds_per_agent = self.max_holds_per_agent as usize;
        config.max_judged_body = self.max_judged_body;
        config.max_buffered_bodies_per_agent = self.max_buffered_bodies_per_agent;
        config.max_buffered_bodies = self.max_buffered_bodies;
        config.min_free_disk = self.min_free_disk;
        config.disk_share_below = self.disk_share_below;
        config
    }
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address of the token-authenticated TCP listener.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN, value_parser = crate::input::parse_listen)]
    pub listen: SocketAddr,
    /// Serve only the per-agent Unix sockets, no TCP listener.
    #[arg(long, conflicts_with = "listen")]
    pub no_tcp: bool,
    /// Folder for per-agent sockets (default: $PALISADE_HOME/run/agents).
    #[arg(long, value_name = "DIR")]
    pub socket_dir: Option<PathBuf>,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

#[derive(Debug, clap::Args)]
pub struct EnvArgs {
    /// The agent whose token goes into the proxy URL.
    #[arg(long)]
    pub agent: String,
    /// The gateway's address (default: the running gateway's, else 127.0.0.1:10255).
    #[arg(long, value_name = "ADDR")]
    pub gateway: Option<String>,
}

pub fn run(command: VaultCommand, ctx: &Context) -> anyhow::Result<()> {
    match command {
        VaultCommand::Serve(args) => serve(*args, ctx),
        VaultCommand::CaCert => {
            print!("{}", palisade_vault::ca_certificate_pem(&ctx.home)?);
            Ok(())
        }
        VaultCommand::Env(args) => env(args, ctx),
        VaultCommand::AdminKey { rotate } => {
            let store = ctx.open_store()?;
            let key = store.admin_key(rotate)?;
            if ctx.json {
                println!("{}", serde_json::json!({ "admin_key": key.expose() }));
            } else {
                println!("{}", key.expose());
            }
            Ok(())
        }
        VaultCommand::Local(command) => local(command, ctx),
    }
}

fn local(command: LocalCommand, ctx: &Context) -> anyhow::Result<()> {
    let store = ctx.open_store()?;
    match command {
        LocalCommand::List => {
            let remembered = store.local_upstreams()?;
            if ctx.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "patterns": remembered.patterns,
                        "unsigned": remembered.unsigned,
                    })
                );
            } else if remembered.unsigned {
                println!(
                    "The list of local addresses in the database does not carry this home's signature (it was written outside palisade), so none is allowed. `palisade vault local allow PATTERN` writes a new one."
                );
            } else if remembered.patterns.is_empty() {
                println!(
                    "No local address is remembered; agents reach none (add one with `palisade vault local allow 127.0.0.1:PORT`)."
                );
            } else {
                for pattern in &remembered.patterns {
                    println!("{pattern}");
                }
            }
        }
        LocalCommand::Allow { pattern } => {
            let added = store.allow_local_upstream(&pattern)?;
            let pattern = pattern.trim();
            match (ctx.json, added) {
                (true, _) => println!(
                    "{}",
                    serde_json::json!({ "allowed": pattern, "added": added })
                ),
                (false, true) => {
                    println!(
                        "Agents may reach {pattern} through the vault now and after restarts (`palisade vault local forget {pattern}` stops it)."
                    );
                    // A pattern that opens more than one server says so.
                    if pattern.contains('*') || !pattern.contains(':') || pattern.ends_with(']') {
                        eprintln!(
                            "warning: {pattern} opens every port{} to every agent, this machine's and the local network's other services too; a model server needs only its address and port (such as 127.0.0.1:8080)",
                            if pattern.contains('*') { " of every address it matches" } else { "" }
                        );
                    }
                }
                (false, false) => println!("{pattern} was allowed already."),
            }
        }
        LocalCommand::Forget { pattern } => {
            if !store.forget_local_upstream(&pattern)? {
                anyhow::bail!(
                    "{:?} is not remembered (`palisade vault local list` shows what is)",
                    palisade_store::input::clean(pattern.trim())
                );
            }
            if ctx.json {
                println!("{}", serde_json::json!({ "forgotten": pattern.trim() }));
            } else {
                println!(
                    "Agents no longer reach {}; what reached it through the vault was ended.",
                    pattern.trim()
                );
            }
        }
    }
    Ok(())
}

fn serve(args: ServeArgs, ctx: &Context) -> anyhow::Result<()> {
    let mut config = args.gateway.config(ctx);
    config.listen = (!args.no_tcp).then_some(args.listen);
    config.socket_dir = args.socket_dir;
    config.advertise = true;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let gateway = Gateway::start(config).await?;
        match gateway.tcp_addr() {
            Some(addr) => eprintln!(
                "palisade vault listening on {addr}; agent sockets in {}",
                ctx.home.agent_socket_dir().display()
            ),
            None => eprintln!(
                "palisade vault serving agent sockets in {}",
                ctx.home.agent_socket_dir().display()
            ),
        }
        wait_for_signal().await?;
        eprintln!("palisade vault stopping: finishing in-flight requests");
        gateway.shutdown().await;
        Ok(())
    })
}

/// Resolves on SIGINT or SIGTERM.
pub async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

fn env(args: EnvArgs, ctx: &Context) -> anyhow::Result<()> {
    let agent = AgentName::new(&args.agent)?;
    let store = ctx.open_store()?;
    store.get_agent(&agent)?;
    let token = store.agent_token(&agent, false)?;
    let policy = store.load_policy()?;
    let gateway = args.gateway.unwrap_or_else(|| {
        palisade_vault::running_gateway(&ctx.home)
            .and_then(|info| info.listen)
            .map(|addr| addr.to_string())
            .unwrap_or_else(|| DEFAULT_LISTEN.to_string())
    });
    // Writing the CA here makes the printed path valid even before the first `serve`.
    palisade_vault::ca_certificate_pem(&ctx.home)?;
    let ca_path = ctx.home.ca_dir().join("ca.pem");
    let proxy = format!("http://x:{}@{gateway}", token.expose());
    let env =
        palisade_vault::agent_environment(&policy, &agent, &proxy, &ca_path.display().to_string());
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(&env)?);
    } else {
        for (name, value) in env {
            println!("export {name}={}", shell_quote(&value));
        }
    }
    Ok(())
}

fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "'\\''"))
}
