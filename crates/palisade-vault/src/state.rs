//! What every connection shares: the policy snapshot, the store, the CA, the upstream
//! client, held approvals and the audit writer.
//!
//! The snapshot is swapped atomically (arc-swap) so the hot path reads it without a
//! lock; a watcher reloads it when another process commits to the database
//! (its `config_version` moves), which is how CLI changes reach a running gateway.

use crate::audit_log::AuditSender;
use crate::ca::CertificateAuthority;
use crate::conn::ConnectionLimits;
use crate::net_guard::NetGuard;
use crate::pipeline::audit::RowBudgets;
use crate::reflect::Reflection;
use crate::revocation::Revocations;
use crate::upstream::UpstreamClient;
use crate::VaultConfig;
use arc_swap::ArcSwap;
use palisade_approvals::{Engine, Holds};
use palisade_policy::{AgentName, PolicySet, Profile};
use palisade_store::Store;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// Policy and identities in force, rebuilt on every change.
pub struct Snapshot {
    pub policy: PolicySet,
    pub agents: HashMap<AgentName, Profile>,
    /// sha256 hex of a token → agent.
    pub tokens: HashMap<String, AgentName>,
    /// sha256 of the admin key.
    pub admin_key_digest: [u8; 32],
    /// Agents with their own approval timeout (`approval_timeout_secs` in their settings).
    pub approval_timeouts: HashMap<AgentName, std::time::Duration>,
    /// Each agent's dial (absent: the default, which asks only where rules say).
    pub dials: HashMap<AgentName, palisade_policy::dial::Dial>,
    /// Each agent's model API, whose calls its dial never holds.
    pub model_apis: HashMap<AgentName, palisade_policy::models::ModelApi>,
    /// Local addresses remembered in the home that agents may reach
    /// (`palisade vault local allow`).
    pub local_upstreams: Vec<palisade_policy::HostPattern>,
    /// Each secret's spellings to mask in responses, by secret id (none for secrets too
    /// short to search for).
    reflections: HashMap<i64, Arc<Reflection>>,
    /// The spellings of several secrets sent to the same host, by their ids (built on
    /// first use, see [`Snapshot::masking_for`]).
    combined: Mutex<HashMap<Vec<i64>, Arc<Reflection>>>,
    /// What ends the connections admitted under each agent and each of its tokens.
    pub revocations: Revocations,
    /// The configuration version read before the rest: the snapshot is at least as
    /// new as this.
    pub version: i64,
}

/// Most sets of secrets whose spellings are kept ready; past it they are built again.
const REFLECTIONS_KEPT: usize = 256;

impl Snapshot {
    pub fn load(store: &Store) -> Result<Snapshot, palisade_store::StoreError> {
        let version = store.config_version()?;
        let policy = store.load_policy()?;
        let records = store.list_agents()?;
        let approval_timeouts = records
            .iter()
            .filter_map(|a| {
                let secs = a.settings.get("approval_timeout_secs")?.as_u64()?;
                Some((a.name.clone(), std::time::Duration::from_secs(secs.max(1))))
            })
            .collect();
        let dials = records
            .iter()
            .map(|a| {
                (
                    a.name.clone(),
                    palisade_policy::dial::Dial::from_settings(&a.settings),
                )
            })
            .collect();
        let model_apis = records
            .iter()
            .filter_map(|a| {
                let api = palisade_policy::models::ModelApi::from_settings(&a.settings)?;
                Some((a.name.clone(), api))
            })
            .collect();
        let tokens = store
            .agent_token_hashes()?
            .into_iter()
            .collect::<HashMap<_, _>>();
        let revocations = Revocations::new(
            records.iter().map(|a| (a.name.clone(), a.created_at_ms)),
            &tokens,
        );
        let agents = records.into_iter().map(|a| (a.name, a.profile)).collect();
        let remembered = store.local_upstreams()?;
        if remembered.unsigned {
            tracing::warn!(
                "the local addresses remembered in the database do not carry this home's signature (written outside palisade?); none is allowed. `palisade vault local list` says more"
            );
        }
        let local_upstreams = remembered
            .patterns
            .iter()
            .filter_map(|pattern| palisade_policy::HostPattern::parse_local_allowance(pattern).ok())
            .collect();
        let admin_key = store.admin_key(false)?;
        let admin_key_digest = Sha256::digest(admin_key.expose().as_bytes()).into();
        let reflections = policy
            .secrets()
            .iter()
            .filter_map(|secret| {
                Reflection::of_secrets([(secret.id, secret.value.expose())]).map(|r| (secret.id, r))
            })
            .collect();
        Ok(Snapshot {
            reflections,
            combined: Mutex::default(),
            policy,
            agents,
            tokens,
            admin_key_digest,
            approval_timeouts,
            dials,
            model_apis,
            local_upstreams,
            revocations,
            version,
        })
    }

    /// What to search responses from `host` for: every secret the gateway sends to that
    /// host, on any of its ports, whichever agent and path it is granted for, whether
    /// or not this request carried one. (An upstream may keep what one request carried
    /// and show it to a later one that carried nothing: a request bin, a log viewer, a
    /// path outside the secret's path pattern, or another agent.) The port is left out
    /// on purpose, see [`crate::reflect`]: a secret for `127.0.0.1:8080` is searched
    /// for in responses from `127.0.0.1:9090` too.
    pub fn masking_for(&self, host: &str) -> Option<Arc<Reflection>> {
        let mut sent = self.policy.secrets().iter().filter(|s| {
            self.reflections.contains_key(&s.id) && s.host.matches_host_on_any_port(host)
        });
        let first = sent.next()?;
        let Some(second) = sent.next() else {
            // The common case: one secret for the host, its spellings ready.
            return self.reflections.get(&first.id).cloned();
        };
        let secrets: Vec<&palisade_policy::SecretPolicy> =
            [first, second].into_iter().chain(sent).collect();
        let ids: Vec<i64> = secrets.iter().map(|s| s.id).collect();
        let mut kept = self.combined.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(reflection) = kept.get(&ids) {
            return Some(Arc::clone(reflection));
        }
        let reflection = Reflection::of_secrets(secrets.iter().map(|s| (s.id, s.value.expose())))?;
        if kept.len() >= REFLECTIONS_KEPT {
            kept.clear();
        }
        kept.insert(ids, Arc::clone(&reflection));
        Some(reflection)
    }

    /// The agent whose token has this digest ([`token_digest`]).
    pub fn agent_of_token_digest(&self, digest: &str) -> Option<&AgentName> {
        self.tokens.get(digest)
    }

    /// Whether the token with this digest is still `agent`'s.
    pub fn token_is_agents(&self, digest: &str, agent: &AgentName) -> bool {
        self.agent_of_token_digest(digest) == Some(agent)
    }

    /// Compares digests so the time taken does not reveal how much of a guess matched.
    pub fn is_admin_key(&self, candidate: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(candidate.as_bytes()).into();
        digest
            .iter()
            .zip(self.admin_key_digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// How the store and the snapshot know a token: its SHA-256, in hex.
pub fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub struct Shared {
    pub config: VaultConfig,
    pub snapshot: ArcSwap<Snapshot>,
    pub store: Store,
    /// The approval engine over `store`: held requests are created, closed and (through
    /// the admin API) decided through it.
    pub engine: Engine,
    pub ca: CertificateAuthority,
    pub upstream: UpstreamClient,
    pub guard: Arc<NetGuard>,
    pub holds: Arc<Holds>,
    pub audit: AuditSender,
    /// Rate of audit rows about clients that never authenticated, and of each agent's
    /// refusals without a credential or a person.
    pub(crate) row_budgets: RowBudgets,
    /// Free disk under the home against the gateway's reserve.
    pub(crate) disk: crate::disk::DiskRoom,
    /// The gateway-wide and per-agent connection caps.
    pub limits: ConnectionLimits,
    /// Bytes of request bodies read whole, per agent and in all.
    pub bodies: Arc<crate::body_budget::BodyBudget>,
    /// Store look-ups of tokens the snapshot does not know (at most a few at once, so
    /// wrong tokens cannot keep the database busy).
    pub token_lookups: tokio::sync::Semaphore,
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// The TCP listener's bound address, for `container-config` and `gateway-url`.
    pub tcp_addr: Option<SocketAddr>,
    /// Every connection and tunnel task, so shutdown can wait for them.
    pub tasks: tokio_util::task::TaskTracker,
    /// Taken to put a new snapshot in force (rare), so two reloads cannot both carry
    /// over from the same previous snapshot and lose a revocation.
    pub installing: Mutex<()>,
}

impl Shared {
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Whether `host:port` names this gateway's own TCP listener or a protected
    /// address of the host (`VaultConfig::protected`: the web UI), by loopback name, a
    /// loopback address or one of the host's own addresses.
    pub fn is_own_listener(&self, host: &str, port: u16) -> bool {
        self.tcp_addr
            .iter()
            .chain(self.config.protected.iter())
            .any(|own| self.names(host, port, *own))
    }

    fn names(&self, host: &str, port: u16, own: SocketAddr) -> bool {
        if own.port() != port {
            return false;
        }
        let bare = host.trim_end_matches('.');
        if bare == "localhost" || bare.ends_with(".localhost") {
            return true;
        }
        match host.parse::<std::net::IpAddr>() {
            // Every spelling of an address: IPv4-mapped (`::ffff:127.0.0.1`),
            // IPv4-compatible (`::127.0.0.1`) and NAT64 (`64:ff9b::7f00:1`) forms name
            // the IPv4 address inside them.
            Ok(ip) => {
                let ip = crate::net_guard::unwrap_ipv4(ip);
                ip == crate::net_guard::unwrap_ipv4(own.ip())
                    || ip.is_loopback()
                    || ip.is_unspecified()
                    || self.guard.is_own_address(ip)
            }
            // A name allowed to reach local addresses on this port may resolve to this
            // listener (any other name is refused local and own addresses by the
            // resolver).
            Err(_) => self.guard.host_allowed_local_at(host, port),
        }
    }

    /// Reloads the policy snapshot from the store now (a token the snapshot does not
    /// know may belong to an agent created a moment ago).
    pub async fn reload_snapshot(&self) -> Result<(), palisade_store::StoreError> {
        let store = self.store.clone();
        let snapshot = tokio::task::spawn_blocking(move || Snapshot::load(&store))
            .await
            .map_err(|e| palisade_store::StoreError::Io(e.to_string()))??;
        self.install(snapshot);
        Ok(())
    }

    /// Puts `snapshot` in force unless a newer one already is, then ends what was
    /// admitted under a credential that no longer holds (see `revocation.rs`): after
    /// the swap, so a connection admitted by the previous snapshot a moment later gets
    /// a token already cancelled. Whether it was put in force.
    pub fn install(&self, mut snapshot: Snapshot) -> bool {
        let _installing = self.installing.lock().unwrap_or_else(|p| p.into_inner());
        let previous = self.snapshot.load_full();
        if snapshot.version < previous.version {
            return false;
        }
        let mut ended = snapshot.revocations.carry_over(&previous.revocations);
        // A local address no longer allowed: what reached it (a pooled connection, a
        // tunnel holding one, a stream) ends too, as what a withdrawn token opened.
        let narrowed = previous
            .local_upstreams
            .iter()
            .any(|old| !snapshot.local_upstreams.contains(old));
        if narrowed {
            ended.extend(snapshot.revocations.renew_tokens());
        }
        self.guard.remember(snapshot.local_upstreams.clone());
        self.snapshot.store(Arc::new(snapshot));
        if narrowed {
            self.upstream.retain_agents(|_| false);
        }
        for (whose, token) in ended {
            whose.log();
            token.cancel();
        }
        true
    }
}
