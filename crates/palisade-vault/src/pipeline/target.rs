//! Where a request goes: the CONNECT target of a tunnel (never the inner `Host`
//! header) or the authority of an absolute-form request, so the host that policy judged
//! is the host that is reached.

use http::Uri;
use std::net::IpAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// Where a request goes: for tunnels the CONNECT target, never the inner `Host` header,
/// so the host that policy judged is the host that is reached.
#[derive(Clone, Debug)]
pub struct Target {
    pub scheme: Scheme,
    /// Lower case; IPv6 without brackets.
    pub host: String,
    pub port: u16,
    /// [`Target::authority`], parsed once: every request's upstream URI and `Host`
    /// header share it instead of formatting and parsing it again.
    origin: http::uri::Authority,
    host_header: http::HeaderValue,
}

impl Target {
    /// Parses `host:port` (CONNECT) with `default_port` when the port is absent.
    pub fn parse_authority(authority: &str, scheme: Scheme) -> Option<Target> {
        let default_port = match scheme {
            Scheme::Https => 443,
            Scheme::Http => 80,
        };
        let authority: http::uri::Authority = authority.parse().ok()?;
        if authority.as_str().contains('@') {
            return None;
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        // A name's one trailing dot (its fully qualified spelling) is dropped: what
        // was judged is then what the upstream's Host, the connection pool and the
        // audit row name (they kept `a.test.` apart from `a.test`).
        // (A numeric spelling with a dot, `127.0.0.1.`, stays refused below: it is no
        // name, and resolvers differ on it.)
        let host = match host.strip_suffix('.') {
            Some(name) if !name.contains(':') && !is_ambiguous_numeric_host(&host) => {
                name.to_string()
            }
            _ => host,
        };
        if host.is_empty() || host.len() > 253 || host.ends_with('.') {
            return None;
        }
        let valid = host.parse::<IpAddr>().is_ok()
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
        if !valid || is_ambiguous_numeric_host(&host) || embeds_ipv4(&host) {
            return None;
        }
        // One spelling per IPv6 address (`0:0::1` is `::1`), so the upstream's Host, the
        // connection pool, the audit row and the dial's first-use window name it alike.
        let host = match host.parse::<std::net::Ipv6Addr>() {
            Ok(v6) => v6.to_string(),
            Err(_) => host,
        };
        // `Authority` accepts an out-of-range port and then reports none; refuse it
        // rather than silently connecting to the default port.
        let after_host = &authority.as_str()[authority.host().len()..];
        let port = match after_host.strip_prefix(':') {
            None if after_host.is_empty() => default_port,
            // One spelling per port: `+443` and `0443` parse to 443 too, and other
            // readers of the same authority (a log, a rule's author) may not.
            Some(digits)
                if digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0') =>
            {
                digits.parse::<u16>().ok()?
            }
            Some(_) => return None,
            None => return None,
        };
        let mut target = Target {
            scheme,
            host,
            port,
            origin: http::uri::Authority::from_static("invalid"),
            host_header: http::HeaderValue::from_static("invalid"),
        };
        let authority = target.authority();
        target.origin = authority.parse().ok()?;
        target.host_header = http::HeaderValue::from_str(&authority).ok()?;
        Some(target)
    }

    pub fn from_uri(uri: &Uri) -> Option<Target> {
        let scheme = match uri.scheme_str() {
            Some("https") => Scheme::Https,
            Some("http") => Scheme::Http,
            _ => return None,
        };
        Target::parse_authority(uri.authority()?.as_str(), scheme)
    }

    /// `host[:port]` as a URL names it (port only when not the scheme's default).
    pub fn authority(&self) -> String {
        let default = match self.scheme {
            Scheme::Https => 443,
            Scheme::Http => 80,
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The absolute URI of `path_and_query` at this target.
    pub fn uri(&self, path_and_query: &str) -> Option<Uri> {
        self.uri_of(path_and_query.parse().ok()?)
    }

    /// The absolute URI of an already parsed `path_and_query` at this target.
    pub fn uri_of(&self, path_and_query: http::uri::PathAndQuery) -> Option<Uri> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(match self.scheme {
            Scheme::Https => http::uri::Scheme::HTTPS,
            Scheme::Http => http::uri::Scheme::HTTP,
        });
        parts.authority = Some(self.origin.clone());
        parts.path_and_query = Some(path_and_query);
        Uri::from_parts(parts).ok()
    }

    /// The `Host` header of a request to this target.
    pub fn host_header(&self) -> http::HeaderValue {
        self.host_header.clone()
    }
}

/// An IPv6 address that spells an IPv4 one (`::ffff:127.0.0.1`, NAT64 `64:ff9b::…`,
/// 6to4, Teredo, `::a.b.c.d`): a rule naming the IPv4 address would not match it, while
/// the connection (or a translating network) reaches that address. Every IPv4 host has
/// one form, its dotted one.
fn embeds_ipv4(host: &str) -> bool {
    host.parse::<std::net::Ipv6Addr>()
        .is_ok_and(|v6| crate::net_guard::embedded_ipv4(v6).is_some())
}

/// A name whose last label is numeric (`127.1`, `2130706433`, `0x7f.0.0.1`,
/// `0177.0.0.1`) is no DNS name (no top-level domain is numeric), but resolvers read it
/// as an IPv4 address in some legacy spelling: a rule naming `127.0.0.1` would not match
/// it while the connection reaches that address. Only the dotted-decimal spelling of an
/// IPv4 address is accepted, so every IPv4 host has one form.
fn is_ambiguous_numeric_host(host: &str) -> bool {
    if host.contains(':') || host.parse::<std::net::Ipv4Addr>().is_ok() {
        return false;
    }
    let last = host
        .trim_end_matches('.')
        .rsplit('.')
        .next()
        .unwrap_or_default();
    let lower = last.to_ascii_lowercase();
    !last.is_empty()
        && (last.bytes().all(|b| b.is_ascii_digit())
            || (lower.starts_with("0x") && lower[2..].bytes().all(|b| b.is_ascii_hexdigit())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_targets_parse_and_reject_garbage() {
        let t = Target::parse_authority("API.Example.com:8443", Scheme::Https).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("api.example.com", 8443));
        assert_eq!(
            t.uri("/v1/x?q=1").unwrap().to_string(),
            "https://api.example.com:8443/v1/x?q=1"
        );
        assert_eq!(t.host_header(), "api.example.com:8443");
        let t = Target::parse_authority("[::1]:443", Scheme::Https).unwrap();
        assert_eq!(t.host, "::1");
        let spelled = Target::parse_authority("[0:0:0::0:1]:8443", Scheme::Https).unwrap();
        assert_eq!(spelled.host, "::1");
        assert_eq!(spelled.host_header(), "[::1]:8443");
        assert_eq!(t.authority(), "[::1]");
        assert_eq!(t.uri("/").unwrap().to_string(), "https://[::1]/");
        assert_eq!(t.host_header(), "[::1]");
        let t = Target::parse_authority("example.com:80", Scheme::Http).unwrap();
        assert_eq!(t.uri("/a").unwrap().to_string(), "http://example.com/a");
        // The fully qualified spelling is the same host, named one way.
        let t = Target::parse_authority("A.TEST.:8443", Scheme::Https).unwrap();
        assert_eq!(t.host, "a.test");
        assert_eq!(t.host_header(), "a.test:8443");
        assert!(Target::parse_authority("a.test..:443", Scheme::Https).is_none());
        assert!(Target::parse_authority(".:443", Scheme::Https).is_none());
        for fine in [
            "10.0.0.1:443",
            "a1.example:443",
            "x.0xff.example:443",
            "123.example.com",
        ] {
            assert!(
                Target::parse_authority(fine, Scheme::Https).is_some(),
                "{fine}"
            );
        }
        assert_eq!(
            Target::parse_authority("example.com", Scheme::Https)
                .unwrap()
                .port,
            443
        );
        for bad in [
            "",
            ":443",
            "user@host:443",
            "ho st:443",
            "host:99999",
            "a/b:1",
            "127.1:443",
            "2130706433:443",
            "0x7f.0.0.1:443",
            "0177.0.0.1:443",
            "127.0.0.1.:443",
            "1.2.3.04:443",
            "[::ffff:127.0.0.1]:443",
            "[::ffff:7f00:1]:443",
            "[64:ff9b::7f00:1]:443",
            "[2002:7f00:1::]:443",
            "[::127.0.0.1]:443",
            "host:+443",
            "host:0443",
            "host:0",
            "host:",
        ] {
            assert!(
                Target::parse_authority(bad, Scheme::Https).is_none(),
                "{bad:?} must be refused"
            );
        }
    }
}
