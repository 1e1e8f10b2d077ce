//! Which upstream addresses an agent may reach.
//!
//! Agents must never reach the host's control plane or its neighbours through the
//! vault, so loopback, private, link-local, CGNAT, multicast, reserved and the host's
//! own interface addresses are refused unless the host name matches an
//! `--allow-local-upstream` pattern. The decision is made on the *resolved* address
//! inside the connector's resolver, and the connection is made to exactly the checked
//! addresses, so a DNS name cannot smuggle a local address past the check.

use palisade_policy::HostPattern;
use std::collections::HashSet;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Shared view of what is local and what is allowed anyway.
#[derive(Debug)]
pub struct NetGuard {
    /// Given at start (`--allow-local-upstream`).
    allowed: Vec<HostPattern>,
    /// Remembered in the home (`palisade vault local allow`), as of the policy
    /// snapshot in force.
    remembered: arc_swap::ArcSwap<Vec<HostPattern>>,
    own_addresses: HashSet<IpAddr>,
    /// Names with a fixed address (`--upstream-resolve`), lowercase.
    fixed: std::collections::HashMap<String, IpAddr>,
}

/// The error a resolver returns when every address of a name is refused; found again
/// in the client's error chain to answer 403 `local_upstream_refused`.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves only to local or private addresses, which agents may not reach")]
pub struct LocalRefused {
    pub host: String,
}

impl NetGuard {
    /// The same guard, resolving each of `fixed`'s names to its address (still checked
    /// like any resolved address).
    pub fn with_fixed_addresses(mut self, fixed: &[(String, IpAddr)]) -> Self {
        self.fixed = fixed
            .iter()
            .map(|(name, ip)| (name.trim_end_matches('.').to_ascii_lowercase(), *ip))
            .collect();
        self
    }

    fn fixed_address(&self, host: &str) -> Option<IpAddr> {
        self.fixed
            .get(&host.trim_end_matches('.').to_ascii_lowercase())
            .copied()
    }

    pub fn new(allowed: Vec<HostPattern>) -> Self {
        let mut own_addresses = HashSet::new();
        if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
            for ifaddr in addrs {
                if let Some(address) = ifaddr.address {
                    if let Some(v4) = address.as_sockaddr_in() {
                        own_addresses.insert(IpAddr::V4(v4.ip()));
                    } else if let Some(v6) = address.as_sockaddr_in6() {
                        own_addresses.insert(IpAddr::V6(v6.ip()));
                    }
                }
            }
        }
        NetGuard {
            allowed,
            remembered: arc_swap::ArcSwap::default(),
            own_addresses,
            fixed: std::collections::HashMap::new(),
        }
    }

    /// Puts the remembered allowances of a new policy snapshot in force.
    pub fn remember(&self, patterns: Vec<HostPattern>) {
        self.remembered.store(std::sync::Arc::new(patterns));
    }

    /// Whether any allowance, given or remembered, passes `test`.
    fn any_allowance(&self, test: impl Fn(&HostPattern) -> bool) -> bool {
        self.allowed.iter().any(&test) || self.remembered.load().iter().any(&test)
    }

    /// Whether `host` (as the request names it) may resolve to local addresses on every
    /// port: only patterns without one count.
    pub fn host_allowed_local(&self, host: &str) -> bool {
        self.any_allowance(|p| p.port().is_none() && p.matches_host_on_any_port(host))
    }

    /// Whether `host` may be a local address at `port`: a pattern naming that port
    /// (`127.0.0.1:8080`), or one naming none.
    pub fn host_allowed_local_at(&self, host: &str, port: u16) -> bool {
        self.any_allowance(|p| p.matches(host, port))
    }

    /// Whether `ip` (in any spelling) is one of this machine's interface addresses.
    pub fn is_own_address(&self, ip: IpAddr) -> bool {
        self.own_addresses.contains(&ip) || self.own_addresses.contains(&unwrap_ipv4(ip))
    }

    /// Whether `ip` may be reached by an upstream request for `host` at `port` (`None`:
    /// on every port).
    pub fn permits(&self, host: &str, port: Option<u16>, ip: IpAddr) -> bool {
        if !is_local(ip) && !self.is_own_address(ip) {
            return true;
        }
        match port {
            Some(port) => self.host_allowed_local_at(host, port),
            None => self.host_allowed_local(host),
        }
    }
}

/// Loopback, private, link-local, CGNAT, unspecified, multicast, documentation-free
/// reserved ranges, and IPv6 forms that embed such an IPv4 address.
pub fn is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_local_v4(v4),
        IpAddr::V6(v6) => is_local_v6(v6),
    }
}

fn is_local_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10 carrier-grade NAT
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24 protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15 benchmarking
        || o[0] >= 240 // reserved
}

/// The IPv4 address an IPv6 address embeds: IPv4-mapped (`::ffff:a.b.c.d`), SIIT's
/// IPv4-translated (`::ffff:0:a.b.c.d`), NAT64 (`64:ff9b::/96` and the local-use
/// `64:ff9b:1::/48`), 6to4 (`2002:aabb:ccdd::/48`), Teredo's client (`2001:0::/32`, the
/// last 32 bits inverted) and the deprecated IPv4-compatible form (`::a.b.c.d`, except
/// `::` and `::1`). Each is a way some network on the path may reach that IPv4 host.
pub fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let of = |high: u16, low: u16| {
        Some(Ipv4Addr::new(
            (high >> 8) as u8,
            high as u8,
            (low >> 8) as u8,
            low as u8,
        ))
    };
    let nat64 = s[0] == 0x64 && s[1] == 0xff9b && (s[2..6] == [0, 0, 0, 0] || s[2] == 1);
    if nat64
        || (s[0..6] == [0, 0, 0, 0, 0xffff, 0])
        || (s[0..6] == [0, 0, 0, 0, 0, 0] && (s[6] != 0 || s[7] > 1))
    {
        return of(s[6], s[7]);
    }
    if s[0] == 0x2002 {
        return of(s[1], s[2]);
    }
    if s[0] == 0x2001 && s[1] == 0 {
        return of(!s[6], !s[7]);
    }
    None
}

/// The address itself, or the IPv4 address an IPv6 spelling embeds.
pub fn unwrap_ipv4(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => embedded_ipv4(v6).map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn is_local_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_ipv4(ip) {
        return is_local_v4(v4);
    }
    let s = ip.segments();
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10
}

tokio::task_local! {
    /// The port the connection being made goes to, set around the connector's future
    /// by [`crate::upstream::Counted`]: hyper-util's connector asks its resolver with
    /// the name alone, and without the port an allowance such as `localhost:11434`
    /// (one model server) could not be told from `localhost` (every service on the
    /// machine). A resolver asked outside it checks with no port (only allowances
    /// without one count).
    pub static CONNECTING_PORT: u16;
}

/// A resolver for hyper-util's `HttpConnector` that drops refused addresses.
#[derive(Clone, Debug)]
pub struct GuardedResolver {
    guard: Arc<NetGuard>,
}

impl GuardedResolver {
    pub fn new(guard: Arc<NetGuard>) -> Self {
        GuardedResolver { guard }
    }
}

type ResolveFuture =
    Pin<Box<dyn Future<Output = Result<std::vec::IntoIter<SocketAddr>, std::io::Error>> + Send>>;

impl tower_service::Service<hyper_util::client::legacy::connect::dns::Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = ResolveFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        let guard = self.guard.clone();
        let port = CONNECTING_PORT.try_with(|port| *port).ok();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let resolved: Vec<SocketAddr> = match guard.fixed_address(&host) {
                Some(ip) => vec![SocketAddr::new(ip, 0)],
                None => tokio::net::lookup_host((host.as_str(), 0)).await?.collect(),
            };
            let total = resolved.len();
            let permitted: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| guard.permits(&host, port, addr.ip()))
                .collect();
            if permitted.is_empty() && total > 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    LocalRefused { host },
                ));
            }
            Ok(permitted.into_iter())
        })
    }
}

/// Finds a [`LocalRefused`] anywhere in an error's source chain.
pub fn find_local_refused<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a LocalRefused> {
    crate::find_cause(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_ranges_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b:1::7f00:1",
            "::ffff:0:7f00:1",
            "2002:7f00:1::",
            "2002:a00:1::1",
            "2001:0:4136:e378:8000:63bf:80ff:fffe",
            "::127.0.0.1",
        ] {
            assert!(is_local(ip.parse().unwrap()), "{ip} should be local");
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
            "2002:101:101::",
            "2001:0:4136:e378:8000:63bf:fefe:fefe",
        ] {
            assert!(!is_local(ip.parse().unwrap()), "{ip} should be public");
        }
    }

    #[test]
    fn allow_patterns_open_local_addresses_for_named_hosts_only() {
        let guard = NetGuard::new(vec![HostPattern::parse("localhost").unwrap()]);
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(guard.permits("localhost", None, lo));
        assert!(guard.permits("localhost", Some(22), lo));
        assert!(!guard.permits("evil.example", None, lo));
        assert!(guard.permits("evil.example", Some(22), "1.1.1.1".parse().unwrap()));
    }

    /// An address allowed with a port is that port only, and never a resolved name's
    /// (the resolver does not know the port).
    #[test]
    fn an_address_allowed_with_a_port_is_allowed_on_that_port_only() {
        let guard = NetGuard::new(vec![HostPattern::parse("127.0.0.1:8080").unwrap()]);
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(guard.permits("127.0.0.1", Some(8080), lo));
        assert!(!guard.permits("127.0.0.1", Some(22), lo));
        assert!(!guard.permits("127.0.0.1", None, lo));
        assert!(guard.host_allowed_local_at("127.0.0.1", 8080));
        assert!(!guard.host_allowed_local_at("127.0.0.1", 8081));
    }
}
