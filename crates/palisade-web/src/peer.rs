//! Which local user a connection to the web UI comes from.
//!
//! Browsers send a host's cookies to every port of it, and treat every port of a host
//! as the same site, so the session cookie of `http://127.0.0.1:PORT` also goes to any
//! other server on 127.0.0.1 the browser is led to, one that another user of this
//! machine may run. Holding the cookie is therefore not enough: the session is bound
//! to the local user whose browser logged in ([`crate::auth`]), and that user is read
//! from the kernel's table of TCP sockets (`/proc/net/tcp`, `/proc/net/tcp6`, through
//! the `procfs` crate), where the client's end of a local connection is a socket with
//! its owner's uid.

use procfs::net::TcpState;
use std::net::SocketAddr;

/// The uid owning the client end of the TCP connection from `peer` to this machine's
/// port `server_port`, when that client is a process here (in this network
/// namespace); `None` for a client elsewhere, or when the table cannot be read.
pub fn uid_of(peer: SocketAddr, server_port: u16) -> Option<u32> {
    // A dual-stack listener sees an IPv4 client as an IPv4-mapped address; the
    // client's socket is in the IPv4 table.
    let peer = match peer {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => peer,
        },
        v4 => v4,
    };
    let table = match peer {
        SocketAddr::V4(_) => procfs::net::tcp(),
        SocketAddr::V6(_) => procfs::net::tcp6(),
    }
    .ok()?;
    table
        .into_iter()
        .find(|entry| {
            entry.local_address == peer
                && entry.remote_address.port() == server_port
                && entry.state == TcpState::Established
        })
        .map(|entry| entry.uid)
}

#[cfg(test)]
mod tests {
    use super::uid_of;

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
                uid_of(peer, server.port()),
                Some(std::os::unix::fs::MetadataExt::uid(
                    &std::fs::metadata("/proc/self").unwrap()
                )),
                "{address}"
            );
            // Not a connection to this port: nobody.
            assert_eq!(uid_of(peer, server.port().wrapping_add(1)), None);
        }
    }
}
