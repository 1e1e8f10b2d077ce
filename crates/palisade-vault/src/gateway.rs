//! Starting and stopping a gateway: listeners, per-agent sockets, the policy watcher
//! and control socket, connection caps, and the graceful shutdown (stop accepting, let
//! in-flight requests finish, answer held approvals 503, remove sockets).

use crate::audit_log;
use crate::ca::CertificateAuthority;
use crate::conn::{ClientSocket, ConnectionLimits, ConnectionPermits};
use crate::front::{serve_connection, Entry};
use crate::net_guard::NetGuard;
use crate::state::{Shared, Snapshot};
use crate::upstream::UpstreamClient;
use crate::{RunningInfo, VaultConfig, VaultError};
use arc_swap::ArcSwap;
use palisade_approvals::{Engine, Event, Holds};
use palisade_policy::{AgentName, HostPattern};
use palisade_store::{Home, Store};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often the watcher looks for changes committed by other processes.
const WATCH_INTERVAL: Duration = Duration::from_millis(200);
/// How often pending approvals past their expiry are closed (whoever held them).
const EXPIRY_SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// How often counted request outcomes are written to the store.
const COUNTS_INTERVAL: Duration = Duration::from_secs(2);
/// Most simultaneous connections (client connections, idle tunnels included, and
/// upstream connections), if descriptors allow.
const MAX_CONNECTIONS: usize = 65_536;
/// Descriptors kept back for the store, listeners, agent sockets, logs and the
/// gateway's own files.
const RESERVED_DESCRIPTORS: u64 = 1024;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Most 503 answers to refused connections under way at once.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;

pub struct GatewayInner {
    shared: Arc<Shared>,
    shutdown_tx: watch::Sender<bool>,
    socket_dir: PathBuf,
    background: Vec<JoinHandle<()>>,
    sockets: Arc<std::sync::Mutex<HashMap<AgentName, JoinHandle<()>>>>,
    advertised: Option<PathBuf>,
    control: Option<PathBuf>,
}

type Sockets = Arc<std::sync::Mutex<HashMap<AgentName, JoinHandle<()>>>>;

/// Brings the gateway up to date with the store: policy snapshot, one socket per
/// agent, decisions on held requests. Used by the watcher's poll and, at once, by the
/// control socket when another process has committed a change.
pub(crate) struct Refresher {
    shared: Arc<Shared>,
    dir: PathBuf,
    sockets: Sockets,
    /// The configuration version loaded (serialises refreshes too).
    loaded: tokio::sync::Mutex<Option<i64>>,
    /// Why the last reload failed, while it keeps failing: logged once per cause, not
    /// on every poll.
    failing: std::sync::Mutex<Option<String>>,
}

impl Refresher {
    /// Reloads what changed; the version now in force, or why the configuration could
    /// not be loaded (the previous one stays in force).
    pub(crate) async fn refresh(&self) -> Result<i64, String> {
        let result = self.reload().await;
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Ok(_) => {
                if failing.take().is_some() {
                    tracing::warn!("the configuration loads again");
                }
            }
            Err(reason) if failing.as_ref() != Some(reason) => {
                tracing::error!(error = %reason, "could not reload the configuration; keeping the previous one");
                *failing = Some(reason.clone());
            }
            Err(_) => {}
        }
        result
    }

    async fn reload(&self) -> Result<i64, String> {
        let mut loaded = self.loaded.lock().await;
        let store = self.shared.store.clone();
        let held = self.shared.holds.held_ids();
        let result = tokio::task::spawn_blocking(move || {
            let version = store.config_version()?;
            let decided = if held.is_empty() {
                Vec::new()
            } else {
                store.decided_among(&held)?
            };
            Ok::<_, palisade_store::StoreError>((version, decided))
        })
        .await;
        let (version, decided) = match result {
            Ok(Ok(read)) => read,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(e) => return Err(e.to_string()),
        };
        for approval in decided {
            // Decided by another process (`palisade approvals approve`): announced here
            // too, once, so this process's listeners (the host telling the person
            // waiting on the agent's message) hear of it as of a decision made in it.
            if self.shared.holds.resolve(&approval) {
                self.shared
                    .engine
                    .events()
                    .publish(palisade_approvals::Event::Closed(approval));
            }
        }
        if *loaded == Some(version) {
            return Ok(version);
        }
        let store = self.shared.store.clone();
        match tokio::task::spawn_blocking(move || Snapshot::load(&store)).await {
            Ok(Ok(snapshot)) => {
                // Not put in force when a newer one already is (a token look-up's
                // reload); what is in force is at least as new as `version` either way.
                self.shared.install(snapshot);
                *loaded = Some(version);
                if self.shared.config.sockets_for_every_agent {
                    sync_sockets(&self.shared, &self.dir, &self.sockets);
                }
                let snapshot = self.shared.snapshot.load();
                self.shared
                    .limits
                    .retain_agents(|agent| snapshot.agents.contains_key(agent));
                self.shared
                    .upstream
                    .retain_agents(|agent| snapshot.agents.contains_key(agent));
                Ok(version)
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Raises this process's soft limit on open descriptors to its hard limit, and returns
/// the soft limit now in force.
fn raise_descriptor_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 1024,
    }
}

/// The gateway-wide cap on connections for a descriptor limit: client connections and
/// upstream connections (open or idle) each take one place, after the reserve.
fn connection_cap(descriptors: u64) -> usize {
    usize::try_from(descriptors.saturating_sub(RESERVED_DESCRIPTORS).max(64))
        .unwrap_or(MAX_CONNECTIONS)
        .min(MAX_CONNECTIONS)
}

/// Starts a gateway; `prebound` are agent sockets the caller bound already (so a
/// client could be handed the path before the gateway was up: its connections wait in
/// the socket's backlog until the gateway accepts them).
pub async fn start(
    config: VaultConfig,
    prebound: Vec<(AgentName, std::os::unix::net::UnixListener)>,
) -> Result<GatewayInner, VaultError> {
    if config.max_buffered_bodies_per_agent < config.max_judged_body {
        return Err(VaultError::Io(format!(
            "--max-buffered-bodies-per-agent ({} bytes) must be at least --max-judged-body ({} bytes), or no body that large could ever be judged",
            config.max_buffered_bodies_per_agent, config.max_judged_body
        )));
    }
    let home = config.home.clone();
    home.ensure()?;
    let store = {
        let home = home.clone();
        tokio::task::spawn_blocking(move || {
            Store::open(&home).map(|store| store.without_gateway_sync().with_actor("vault"))
        })
        .await
        .map_err(|e| VaultError::Io(e.to_string()))??
    };
    let ca = CertificateAuthority::load_or_create(&home.ca_dir())?;
    let allowed = config
        .allow_local_upstream
        .iter()
        .map(|p| {
            HostPattern::parse_local_allowance(p)
                .map_err(|reason| VaultError::AllowPattern(p.clone(), reason))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let guard = Arc::new(NetGuard::new(allowed).with_fixed_addresses(&config.upstream_resolve));
    let cap = connection_cap(raise_descriptor_limit());
    let limits = ConnectionLimits::new(
        config.max_connections.map_or(cap, |n| n.min(cap)),
        config.max_connections_per_agent,
        config.max_requests_per_agent,
    );
    let upstream = UpstreamClient::new(&config, guard.clone(), limits.places())?;
    let (audit, _audit_thread) = audit_log::start(&home)?;
    let snapshot = Snapshot::load(&store)?;
    guard.remember(snapshot.local_upstreams.clone());

    let listener = match config.listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| VaultError::Listen {
                    addr: addr.to_string(),
                    source,
                })?,
        ),
        None => None,
    };
    let tcp_addr = listener.as_ref().and_then(|l| l.local_addr().ok());
    let socket_dir = config
        .socket_dir
        .clone()
        .unwrap_or_else(|| home.agent_socket_dir());
    std::fs::create_dir_all(&socket_dir)
        .and_then(|_| std::fs::set_permissions(&socket_dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| {
            VaultError::Io(format!(
                "cannot prepare socket folder {}: {e}",
                socket_dir.display()
            ))
        })?;

    let holds = Holds::new(config.max_holds_per_agent);
    let bodies = crate::body_budget::BodyBudget::new(
        config.max_buffered_bodies_per_agent,
        config.max_buffered_bodies,
    );
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let advertise = config.advertise;
    let events = config.approval_events.clone().unwrap_or_default();
    let engine = Engine::new(store.clone(), events);
    let disk = crate::disk::DiskRoom::new(
        home.root().to_path_buf(),
        config.min_free_disk,
        config.disk_share_below,
    );
    let shared = Arc::new(Shared {
        config,
        snapshot: ArcSwap::from_pointee(snapshot),
        engine,
        store,
        ca,
        upstream,
        guard,
        holds,
        audit,
        row_budgets: Default::default(),
        disk,
        limits,
        bodies,
        token_lookups: tokio::sync::Semaphore::new(4),
        shutdown: shutdown_rx,
        tcp_addr,
        tasks: tokio_util::task::TaskTracker::new(),
        installing: std::sync::Mutex::new(()),
    });
    let mut background = Vec::new();
    if let Some(listener) = listener {
        background.push(tokio::spawn(accept_loop(
            shared.clone(),
            Listener::Tcp(listener),
            Entry::Tcp,
        )));
    }
    let mut serving = HashMap::new();
    for (agent, listener) in prebound {
        let listener = listener
            .set_nonblocking(true)
            .and_then(|()| UnixListener::from_std(listener))
            .map_err(|e| VaultError::Io(format!("cannot serve the socket of {agent}: {e}")))?;
        let handle = tokio::spawn(accept_loop(
            shared.clone(),
            Listener::Unix(listener),
            Entry::Agent(agent.clone()),
        ));
        serving.insert(agent, handle);
    }
    let sockets = Arc::new(std::sync::Mutex::new(serving));
    if shared.config.sockets_for_every_agent {
        sync_sockets(&shared, &socket_dir, &sockets);
    }
    let refresher = Arc::new(Refresher {
        shared: shared.clone(),
        dir: socket_dir.clone(),
        sockets: sockets.clone(),
        loaded: tokio::sync::Mutex::new(None),
        failing: std::sync::Mutex::new(None),
    });
    background.push(tokio::spawn(watch_changes(refresher.clone())));
    background.push(tokio::spawn(sweep_expired_approvals(shared.clone())));
    background.push(tokio::spawn(write_request_counts(shared.clone())));
    background.push(tokio::spawn(follow_decisions(shared.clone())));
    background.push(tokio::spawn(give_back_memory(shared.clone())));
    background.push(tokio::spawn(measure_disk(shared.clone())));
    background.push(tokio::spawn(apply_audit_retention(shared.clone())));
    let control = match crate::control::bind(&home) {
        Some((listener, path)) => {
            background.push(tokio::spawn(crate::control::serve(
                listener,
                refresher,
                shared.shutdown.clone(),
            )));
            Some(path)
        }
        None => None,
    };

    let advertised = if advertise {
        let info = RunningInfo {
            pid: std::process::id(),
            listen: tcp_addr,
            socket_dir: socket_dir.clone(),
            started_at_ms: palisade_store::now_ms(),
        };
        let path = home.run_dir().join("vault.json");
        let tmp = home.run_dir().join("vault.json.tmp");
        let text =
            serde_json::to_string_pretty(&info).map_err(|e| VaultError::Io(e.to_string()))?;
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| VaultError::Io(format!("cannot write {}: {e}", path.display())))?;
        Some(path)
    } else {
        None
    };
    tracing::info!(listen = ?tcp_addr, sockets = %socket_dir.display(), "vault gateway started");
    Ok(GatewayInner {
        shared,
        shutdown_tx,
        socket_dir,
        background,
        sockets,
        advertised,
        control,
    })
}

impl GatewayInner {
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.shared.tcp_addr
    }

    pub fn socket_path(&self, agent: &AgentName) -> PathBuf {
        socket_path(&self.socket_dir, agent)
    }

    pub async fn shutdown(self) {
        let _ = self.shutdown_tx.send(true);
        for handle in self.background {
            let _ = handle.await;
        }
        let handles: Vec<(AgentName, JoinHandle<()>)> = self
            .sockets
            .lock()
            .map(|mut s| s.drain().collect())
            .unwrap_or_default();
        for (agent, handle) in handles {
            handle.abort();
            let _ = std::fs::remove_file(socket_path(&self.socket_dir, &agent));
        }
        for path in self.advertised.iter().chain(self.control.iter()) {
            let _ = std::fs::remove_file(path);
        }
        self.shared.tasks.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, self.shared.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "some connections were still open after {DRAIN_TIMEOUT:?}; closing them"
            );
        }
        self.shared.audit.flush(Duration::from_secs(5)).await;
        tracing::info!("vault gateway stopped");
    }
}

fn socket_path(dir: &Path, agent: &AgentName) -> PathBuf {
    dir.join(format!("{agent}.sock"))
}

/// Either kind of listener, so one accept loop serves both.
enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

type Stream = tokio_util::either::Either<tokio::net::TcpStream, tokio::net::UnixStream>;

impl Listener {
    async fn accept(&self) -> std::io::Result<Stream> {
        match self {
            Listener::Tcp(listener) => {
                let (stream, _peer) = listener.accept().await?;
                let _ = stream.set_nodelay(true);
                Ok(Stream::Left(stream))
            }
            Listener::Unix(listener) => Ok(Stream::Right(listener.accept().await?.0)),
        }
    }
}

/// Accepts until shutdown; each connection runs as a tracked task holding a place
/// under the gateway-wide cap and, on an agent socket, under its agent's share. A
/// connection beyond the agent's share is answered 503 and closed, so a greedy agent
/// is refused while every other agent keeps being served.
async fn accept_loop(shared: Arc<Shared>, listener: Listener, entry: Entry) {
    let mut shutdown = shared.shutdown.clone();
    let warn = |what: &str, entry: &Entry| {
        // At most one line a second, so a flood does not become a flood of logs.
        palisade_policy::budgeted!(warn, entry = ?entry, "{what}");
    };
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = crate::stopped(&mut shutdown) => return,
        };
        let stream = match accepted {
            Ok(stream) => stream,
            Err(e) => {
                // Out of descriptors and similar: back off instead of spinning.
                warn(&format!("accept failed: {e}"), &entry);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let (Entry::Agent(agent), Stream::Right(unix)) = (&entry, &stream) {
            if let Err(refused) = shared.config.agent_peers.admit(unix) {
                warn(
                    &format!("agent {agent}'s socket: peer refused: {}", refused.0),
                    &entry,
                );
                continue;
            }
        }
        let permits = match places_for(&shared.limits, &entry) {
            Ok(permits) => permits,
            Err((why, agent)) => {
                warn(&why, &entry);
                refuse_connection(&shared, stream, agent);
                continue;
            }
        };
        let connection_shared = shared.clone();
        let entry = entry.clone();
        shared.tasks.spawn(async move {
            serve_connection(connection_shared, stream, entry, permits).await;
        });
    }
}

/// The places a new connection on `entry` holds: one under the gateway-wide cap, and
/// one of its agent's share (agent socket) or one of those kept for connections not yet
/// authenticated (TCP; the oldest of those is pushed out when they are full); or why
/// there is none, and whose share is full.
fn places_for(
    limits: &crate::conn::ConnectionLimits,
    entry: &Entry,
) -> Result<Arc<ConnectionPermits>, (String, Option<AgentName>)> {
    let global = limits.admit().ok_or_else(|| {
        (
            "the gateway's connection cap is reached; refusing a connection".to_string(),
            None,
        )
    })?;
    let permits = ConnectionPermits::with_global(global);
    match entry {
        Entry::Tcp => Ok(permits.with_anonymous(limits.admit_anonymous())),
        Entry::Agent(agent) => match limits.admit_agent(agent) {
            Some(permit) => {
                permits.hold(agent.clone(), permit);
                Ok(permits)
            }
            None => Err((
                format!("agent {agent} has all the connections it may have; refusing one"),
                Some(agent.clone()),
            )),
        },
    }
}

/// Answers a connection over the caps with a short 503 and closes it (bounded: a
/// client that does not read gets nothing after 2 s, and at most
/// [`MAX_REFUSALS_IN_FLIGHT`] answers are under way; beyond that a connection is just
/// closed).
fn refuse_connection(shared: &Arc<Shared>, mut stream: Stream, agent: Option<AgentName>) {
    static IN_FLIGHT: tokio::sync::Semaphore =
        tokio::sync::Semaphore::const_new(MAX_REFUSALS_IN_FLIGHT);
    let Ok(permit) = IN_FLIGHT.try_acquire() else {
        return;
    };
    let body =
        palisade_policy::ErrorBody::new(palisade_policy::GatewayErrorKind::TooManyConnections, "");
    let body = match &agent {
        Some(agent) => body.with_message(format!(
            "Agent {agent} has {} connections open through the gateway, the most it may have. Close idle connections or reuse them, then retry.",
            shared.limits.per_agent_max()
        )),
        None => body.with_message("The gateway has as many connections open as it can. Retry in a little while."),
    }
    .to_json();
    let shared = shared.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let response = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nx-should-retry: true\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = stream.write_all(response.as_bytes()).await;
        })
        .await;
        // What the client sent (its CONNECT) is read away before the socket closes:
        // closed with it unread, the socket would answer with a reset, which can throw
        // the 503 away before the client reads it.
        crate::conn::linger(stream.descriptor(), agent.clone(), None);
        drop(stream);
        let record = crate::pipeline::audit::Record::about(agent.as_ref(), "CONNECT", "", "");
        crate::pipeline::audit::refused_at_front(
            &shared,
            record,
            crate::pipeline::Decision::TooManyConnections,
            503,
        )
        .await;
    });
}

/// Makes the socket folder hold exactly one socket per existing agent.
fn sync_sockets(shared: &Arc<Shared>, dir: &Path, sockets: &Sockets) {
    let snapshot = shared.snapshot.load();
    let Ok(mut sockets) = sockets.lock() else {
        return;
    };
    let gone: Vec<AgentName> = sockets
        .keys()
        .filter(|a| !snapshot.agents.contains_key(*a))
        .cloned()
        .collect();
    for agent in gone {
        if let Some(handle) = sockets.remove(&agent) {
            handle.abort();
        }
        let _ = std::fs::remove_file(socket_path(dir, &agent));
        tracing::info!(agent = %agent, "agent socket removed");
    }
    for agent in snapshot.agents.keys() {
        if sockets.contains_key(agent) {
            continue;
        }
        let path = socket_path(dir, agent);
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            if meta.file_type().is_socket() {
                let _ = std::fs::remove_file(&path);
            } else {
                tracing::error!(path = %path.display(), "not a socket; leaving it and skipping this agent");
                continue;
            }
        }
        match UnixListener::bind(&path) {
            Ok(listener) => {
                let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
                let handle = tokio::spawn(accept_loop(
                    shared.clone(),
                    Listener::Unix(listener),
                    Entry::Agent(agent.clone()),
                ));
                sockets.insert(agent.clone(), handle);
                tracing::info!(agent = %agent, socket = %path.display(), "agent socket ready");
            }
            Err(e) => tracing::error!(agent = %agent, error = %e, "cannot create agent socket"),
        }
    }
}

/// Polls the store for changes committed by processes that did not sync with this
/// gateway through its control socket (any process's change to agents, secrets, rules
/// or settings raises the configuration version; request audit rows do not, so load
/// does not cause reloads), and for decisions on held requests.
async fn watch_changes(refresher: Arc<Refresher>) {
    let mut shutdown = refresher.shared.shutdown.clone();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(WATCH_INTERVAL) => {}
            _ = crate::stopped(&mut shutdown) => return,
        }
        let _ = refresher.refresh().await;
    }
}

/// Has the audit writer store the request counts every few seconds, so the web UI's
/// charts include traffic that produced no audit row to carry them.
async fn write_request_counts(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(COUNTS_INTERVAL) => {}
            _ = crate::stopped(&mut shutdown) => return,
        }
        shared.audit.write_counts();
    }
}

/// Reads the free disk under the home every second (see `disk.rs`).
async fn measure_disk(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(crate::disk::MEASURE_EVERY) => {}
            _ = crate::stopped(&mut shutdown) => return,
        }
        // Off the workers: statvfs on a network filesystem can block.
        let measuring = shared.clone();
        let _ = tokio::task::spawn_blocking(move || measuring.disk.measure()).await;
    }
}

/// How often audit rows older than the retention are pruned.
const AUDIT_PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// Prunes audit rows older than the retention (`palisade audit retention`) when the
/// gateway starts and then hourly, after verifying the log as `palisade audit prune`
/// does: a log that fails verification keeps every row, and says so here each hour.
async fn apply_audit_retention(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        // On a connection of its own: the verification before a pruning reads the
        // whole log, and the gateway's own connection serves requests meanwhile.
        let store = shared.store.clone();
        let pruned = tokio::task::spawn_blocking(move || match store.audit_retention()? {
            Some(_) => store
                .another_connection()?
                .prune_expired_audit(palisade_store::now_ms()),
            None => Ok(None),
        })
        .await;
        match pruned {
            Ok(Ok(Some(report))) if report.removed > 0 => tracing::info!(
                removed = report.removed,
                first_kept = report.first_id,
                "pruned audit rows older than the retention"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "audit rows older than the retention were not pruned")
            }
            Err(error) => tracing::warn!(%error, "the audit pruning task failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(AUDIT_PRUNE_INTERVAL) => {}
            _ = crate::stopped(&mut shutdown) => return,
        }
    }
}

/// How often [`give_back_memory`] looks at the connection count.
const TRIM_INTERVAL: Duration = Duration::from_secs(5);
/// Connections that must have closed since the last look (from the peak seen) before
/// memory is handed back: each held ~40 KiB, so 1 000 is ~40 MiB.
const TRIM_AFTER_CLOSED: usize = 1000;

/// Whether enough connections closed since the peak for a trim to be worth it.
fn worth_trimming(peak: usize, live: usize) -> bool {
    peak.saturating_sub(live) >= TRIM_AFTER_CLOSED
}

/// Hands the memory of closed connections back to the system once many have closed
/// (glibc's allocator keeps freed memory for the process: after 10 000 idle tunnels
/// closed, the gateway stayed at 400 MiB). `malloc_trim` walks the heap, so it runs
/// only after such a drop, off the request threads.
/// Closes the idle upstream connections that have expired on the same beat.
async fn give_back_memory(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TRIM_INTERVAL) => {}
            _ = crate::stopped(&mut shutdown) => return,
        }
        shared.upstream.idle.close_expired();
        let peak = shared.limits.take_peak();
        if worth_trimming(peak, shared.limits.live()) {
            let _ = tokio::task::spawn_blocking(trim_heap).await;
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_heap() {
    // SAFETY: malloc_trim takes no pointers and only returns free pages of glibc's
    // own heap to the kernel; it is safe to call from any thread at any time.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() {}

/// Closes pending approvals whose expiry has passed, whether or not the request is
/// still held anywhere (an approval never stays pending past its expiry), and cancels
/// those held by a gateway that is gone (killed while holding them: nobody is left to
/// send the request, so it must not look approvable).
async fn sweep_expired_approvals(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(EXPIRY_SWEEP_INTERVAL) => {}
            _ = crate::stopped(&mut shutdown) => return,
        }
        let engine = shared.engine.clone();
        let swept = tokio::task::spawn_blocking(move || {
            let mut closed = engine.expire_overdue()?;
            closed.extend(engine.cancel_orphaned_holds()?);
            Ok::<_, palisade_approvals::ApprovalError>(closed)
        })
        .await;
        if let Ok(Ok(closed)) = swept {
            for approval in &closed {
                shared.holds.resolve(approval);
            }
        }
    }
}

/// Wakes held requests as soon as an approval is decided in this process (a chat
/// channel of the `palisade up` running this gateway), without waiting for the poll.
async fn follow_decisions(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    let mut events = shared.engine.events().subscribe();
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = crate::stopped(&mut shutdown) => return,
        };
        match event {
            Ok(Event::Closed(approval)) => {
                shared.holds.resolve(&approval);
            }
            Ok(Event::Created(_)) => {}
            // Missed some: the poll of the store catches them.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Reads `run/vault.json` and checks that its process is alive.
pub fn running_gateway(home: &Home) -> Option<RunningInfo> {
    let text = std::fs::read_to_string(home.run_dir().join("vault.json")).ok()?;
    let info: RunningInfo = serde_json::from_str(&text).ok()?;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(info.pid).ok()?);
    nix::sys::signal::kill(pid, None).ok()?;
    Some(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_fit_in_the_descriptor_limit_after_the_reserve() {
        for descriptors in [4_096, 20_000] {
            let cap = connection_cap(descriptors) as u64;
            assert_eq!(cap + RESERVED_DESCRIPTORS, descriptors);
        }
        assert_eq!(connection_cap(1 << 20), MAX_CONNECTIONS);
        assert_eq!(connection_cap(1_024), 64);
    }
}
