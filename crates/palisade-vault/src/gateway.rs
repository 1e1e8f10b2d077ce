//! Starting and stopping a gateway: listeners, per-agent sockets, the policy watcher,
//! and the graceful shutdown (stop accepting, let in-flight requests finish, answer
//! held approvals 503, remove sockets).

use crate::audit_log;
use crate::ca::CertificateAuthority;
use crate::front::{serve_connection, Entry};
use crate::holds::Holds;
use crate::net_guard::NetGuard;
use crate::state::{Shared, Snapshot};
use crate::upstream::UpstreamClient;
use crate::{RunningInfo, VaultConfig, VaultError};
use arc_swap::ArcSwap;
use palisade_policy::{AgentName, HostPattern};
use palisade_store::{Home, Store};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

/// How often the watcher looks for changes committed by other processes.
const WATCH_INTERVAL: Duration = Duration::from_millis(200);
/// Most simultaneous client connections (idle tunnels included).
const MAX_CONNECTIONS: usize = 32_768;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

pub struct GatewayInner {
    shared: Arc<Shared>,
    shutdown_tx: watch::Sender<bool>,
    socket_dir: PathBuf,
    background: Vec<JoinHandle<()>>,
    sockets: Arc<std::sync::Mutex<HashMap<AgentName, JoinHandle<()>>>>,
    advertised: Option<PathBuf>,
}

/// Starts a gateway; `prebound` are agent sockets the caller bound already (so a
/// client could be handed the path before the gateway was up: its connections wait in
/// the socket's backlog until the gateway accepts them).
pub async fn start(
    config: VaultConfig,
    prebound: Vec<(AgentName, std::os::unix::net::UnixListener)>,
) -> Result<GatewayInner, VaultError> {
    let home = config.home.clone();
    home.ensure()?;
    let store = {
        let home = home.clone();
        tokio::task::spawn_blocking(move || Store::open(&home))
            .await
            .map_err(|e| VaultError::Io(e.to_string()))??
    };
    let ca = CertificateAuthority::load_or_create(&home.ca_dir())?;
    let allowed = config
        .allow_local_upstream
        .iter()
        .map(|p| {
            HostPattern::parse(p).map_err(|e| VaultError::AllowPattern(p.clone(), e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let guard = Arc::new(NetGuard::new(allowed));
    let upstream = UpstreamClient::new(&config, guard.clone())?;
    let (audit, _audit_thread) = audit_log::start(&home)?;
    let snapshot = Snapshot::load(&store)?;

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

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let advertise = config.advertise;
    let shared = Arc::new(Shared {
        config,
        snapshot: ArcSwap::from_pointee(snapshot),
        store,
        ca,
        upstream,
        guard,
        holds: Holds::default(),
        audit,
        shutdown: shutdown_rx,
        tcp_addr,
        tasks: tokio_util::task::TaskTracker::new(),
    });
    let limiter = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut background = Vec::new();
    if let Some(listener) = listener {
        background.push(tokio::spawn(accept_loop(
            shared.clone(),
            Listener::Tcp(listener),
            Entry::Tcp,
            limiter.clone(),
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
            limiter.clone(),
        ));
        serving.insert(agent, handle);
    }
    let sockets = Arc::new(std::sync::Mutex::new(serving));
    if shared.config.sockets_for_every_agent {
        sync_sockets(&shared, &socket_dir, &sockets, &limiter);
    }
    background.push(tokio::spawn(watch_changes(
        shared.clone(),
        socket_dir.clone(),
        sockets.clone(),
        limiter,
    )));

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
        if let Some(path) = &self.advertised {
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

/// Accepts until shutdown; each connection runs as a tracked task under the global
/// connection limit.
async fn accept_loop(
    shared: Arc<Shared>,
    listener: Listener,
    entry: Entry,
    limiter: Arc<Semaphore>,
) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = crate::stopped(&mut shutdown) => return,
        };
        match accepted {
            Ok(stream) => {
                if let (Entry::Agent(agent), Stream::Right(unix)) = (&entry, &stream) {
                    if let Err(refused) = shared.config.agent_peers.admit(unix) {
                        tracing::warn!(agent = %agent, reason = %refused.0, "agent socket: peer refused");
                        continue;
                    }
                }
                let Ok(permit) = limiter.clone().try_acquire_owned() else {
                    tracing::warn!(entry = ?entry, "connection limit reached; refusing a connection");
                    continue;
                };
                let shared2 = shared.clone();
                let entry = entry.clone();
                shared.tasks.spawn(async move {
                    serve_connection(shared2, stream, entry).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // Out of descriptors and similar: back off instead of spinning.
                tracing::warn!(error = %e, entry = ?entry, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Makes the socket folder hold exactly one socket per existing agent.
fn sync_sockets(
    shared: &Arc<Shared>,
    dir: &Path,
    sockets: &Arc<std::sync::Mutex<HashMap<AgentName, JoinHandle<()>>>>,
    limiter: &Arc<Semaphore>,
) {
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
                    limiter.clone(),
                ));
                sockets.insert(agent.clone(), handle);
                tracing::info!(agent = %agent, socket = %path.display(), "agent socket ready");
            }
            Err(e) => tracing::error!(agent = %agent, error = %e, "cannot create agent socket"),
        }
    }
}

/// Reloads the snapshot when the configuration version moves (any process's change to
/// agents, secrets, rules or settings; not request audit rows, so load does not cause
/// reloads), and wakes requests whose approvals were decided elsewhere.
async fn watch_changes(
    shared: Arc<Shared>,
    dir: PathBuf,
    sockets: Arc<std::sync::Mutex<HashMap<AgentName, JoinHandle<()>>>>,
    limiter: Arc<Semaphore>,
) {
    let mut shutdown = shared.shutdown.clone();
    let mut last_version = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(WATCH_INTERVAL) => {}
            _ = crate::stopped(&mut shutdown) => return,
        }
        let store = shared.store.clone();
        let held = shared.holds.held_ids();
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
        let Ok(Ok((version, decided))) = result else {
            continue;
        };
        for approval in &decided {
            shared.holds.resolve(approval);
        }
        if last_version == Some(version) {
            continue;
        }
        let store = shared.store.clone();
        match tokio::task::spawn_blocking(move || Snapshot::load(&store)).await {
            Ok(Ok(snapshot)) => {
                shared.snapshot.store(Arc::new(snapshot));
                last_version = Some(version);
                if shared.config.sockets_for_every_agent {
                    sync_sockets(&shared, &dir, &sockets, &limiter);
                }
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "could not reload policy; keeping the previous one")
            }
            Err(_) => {}
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
