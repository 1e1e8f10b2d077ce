//! Which local user a connection to the web UI comes from.
//!
//! Browsers send a host's cookies to every port of it, and treat every port of a host
//! as the same site, so the session cookie of `http://127.0.0.1:PORT` also goes to any
//! other server on 127.0.0.1 the browser is led to, one that another user of this
//! machine may run. Holding the cookie is therefore not enough: the session is bound
//! to the local user whose browser logged in ([`crate::auth`]), and that user is read
//! from the kernel's table of TCP sockets (`/proc/net/tcp`, `/proc/net/tcp6`, through
//! the `procfs` crate), where the client's end of a local connection is a socket with
//! its owner's uid. It is found by the connection's whole address pair: the kernel lets
//! two sockets of different users share a local port when they connect to different
//! addresses, so a client port and the server's port alone could name another user's
//! socket (connected to the same port of 127.0.0.2, say) and lend that user's uid to a
//! stolen cookie.

use procfs::net::TcpState;
use std::net::SocketAddr;

/// The uid owning the client end of the TCP connection from `peer` to `server` (the
/// address the connection came in on), when that client is a process here (in this
/// network namespace); `None` for a client elsewhere, or when the table cannot be read.
pub fn uid_of(peer: SocketAddr, server: SocketAddr) -> Option<u32> {
    let (peer, server) = (unmapped(peer), unmapped(server));
    let table = match peer {
        SocketAddr::V4(_) => procfs::net::tcp(),
        SocketAddr::V6(_) => procfs::net::tcp6(),
    }
    .ok()?;
    // One socket at most has this pair of addresses.
    table
        .into_iter()
        .find(|entry| {
            entry.local_address == peer
                && entry.remote_address == server
                && entry.state == TcpState::Established
        })
        .map(|entry| entry.uid)
}

/// A dual-stack listener sees an IPv4 address as an IPv4-mapped one; the kernel's IPv4
/// table has it plain.
fn unmapped(address: SocketAddr) -> SocketAddr {
    match address {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => address,
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::uid_of;
    use std::net::SocketAddr;

    #[test]
    fn the_client_end_of_a_local_connection_names_its_user() {
        for address in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(listener) = std::net::TcpListener::bind(address) else {
                continue; // no IPv6 here
            };
            let server = listener.local_addr().unwrap();
            let client = std::net::TcpStream::connect(server).unwrap();
            let (_accepted, peer) = listener.accept().unwrap();
            assert_eq!(peer, client.local_addr().unwrap());
            assert_eq!(
                uid_of(peer, server),
                Some(std::os::unix::fs::MetadataExt::uid(
                    &std::fs::metadata("/proc/self").unwrap()
                )),
                "{address}"
            );
            // Not a connection to this port: nobody.
            let other_port = SocketAddr::new(server.ip(), server.port().wrapping_add(1));
            assert_eq!(uid_of(peer, other_port), None);
        }
    }

    /// A client socket connected to the same port of another address (127.0.0.2, as
    /// another user's may be, sharing its local port with this connection's client
    /// through the kernel's port sharing) is not this connection's client.
    #[test]
    fn a_client_of_the_same_port_elsewhere_is_not_taken_for_this_connections() {
        let elsewhere = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
        let there = elsewhere.local_addr().unwrap();
        let socket = std::net::TcpStream::connect(there).unwrap();
        let client = socket.local_addr().unwrap();
        let _accepted = elsewhere.accept().unwrap();
        // The same client address and server port on 127.0.0.1: nobody.
        let here = SocketAddr::from(([127, 0, 0, 1], there.port()));
        assert_eq!(uid_of(client, here), None);
        assert!(uid_of(client, there).is_some());
    }
}
