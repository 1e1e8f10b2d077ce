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
//!
//! The socket is asked of the kernel by its address pair, one netlink `sock_diag`
//! request for that one socket ([`diag_uid`]); reading the whole table took a time that
//! grows with every socket on the machine, which any local user can open by the
//! thousand, and the web server asks for each connection it accepts. The whole table is
//! read only where netlink does not answer. The request is written here: it is one
//! fixed 72-byte message and one field of the answer, for which the netlink crates
//! would bring four of their own.

use procfs::net::TcpState;
use std::net::SocketAddr;

/// The uid owning the client end of the TCP connection from `peer` to `server` (the
/// address the connection came in on), when that client is a process here (in this
/// network namespace); `None` for a client elsewhere, or when the kernel cannot say.
pub fn uid_of(peer: SocketAddr, server: SocketAddr) -> Option<u32> {
    let (peer, server) = (unmapped(peer), unmapped(server));
    match diag_uid(peer, server) {
        Ok(found) => found,
        Err(_) => table_uid(peer, server),
    }
}

/// [`uid_of`] by netlink: `Ok(None)` when the kernel knows no such socket here.
fn diag_uid(peer: SocketAddr, server: SocketAddr) -> std::io::Result<Option<u32>> {
    use nix::libc;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLMSG_ERROR: u16 = 2;
    const HEADER: usize = 16;
    const REQUEST: usize = HEADER + 8 + 48;
    // Where the uid is in an answer: after the netlink header, the family, state,
    // timer and retransmits (4), the socket's id (48), and expiry and queues (12).
    const UID_AT: usize = HEADER + 4 + 48 + 12;
    let (family, source, destination) = match (peer, server) {
        (SocketAddr::V4(p), SocketAddr::V4(s)) => (
            libc::AF_INET,
            address_words(&p.ip().octets()),
            address_words(&s.ip().octets()),
        ),
        (SocketAddr::V6(p), SocketAddr::V6(s)) => (
            libc::AF_INET6,
            address_words(&p.ip().octets()),
            address_words(&s.ip().octets()),
        ),
        _ => return Ok(None),
    };
    let mut request = [0u8; REQUEST];
    request[0..4].copy_from_slice(&(REQUEST as u32).to_ne_bytes());
    request[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    request[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    request[16] = family as u8;
    request[17] = libc::IPPROTO_TCP as u8;
    // Connected sockets (1 << TCP_ESTABLISHED); the answer's state is checked too.
    request[20..24].copy_from_slice(&(1u32 << 1).to_ne_bytes());
    request[24..26].copy_from_slice(&peer.port().to_be_bytes());
    request[26..28].copy_from_slice(&server.port().to_be_bytes());
    request[28..44].copy_from_slice(&source);
    request[44..60].copy_from_slice(&destination);
    // No interface; no cookie (INET_DIAG_NOCOOKIE): look the socket up by its pair.
    request[64..72].copy_from_slice(&[0xff; 8]);
    // SAFETY: socket(2) with constant arguments; the descriptor is owned at once.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a descriptor this call just opened and nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    let timeout = libc::timeval {
        tv_sec: 1,
        tv_usec: 0,
    };
    // SAFETY: setsockopt and send on the open descriptor with buffers of the lengths
    // given.
    let sent = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
        libc::send(socket.as_raw_fd(), request.as_ptr().cast(), REQUEST, 0)
    };
    if sent != REQUEST as isize {
        return Err(std::io::Error::last_os_error());
    }
    let mut answer = [0u8; 512];
    // SAFETY: recv into a buffer of the length given.
    let read = unsafe {
        libc::recv(
            socket.as_raw_fd(),
            answer.as_mut_ptr().cast(),
            answer.len(),
            0,
        )
    };
    let read = usize::try_from(read).map_err(|_| std::io::Error::last_os_error())?;
    if read < HEADER {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let kind = u16::from_ne_bytes([answer[4], answer[5]]);
    if kind == NLMSG_ERROR {
        // The error's code follows the header: ENOENT is "no such socket".
        let code = i32::from_ne_bytes([answer[16], answer[17], answer[18], answer[19]]);
        return match -code {
            libc::ENOENT => Ok(None),
            other => Err(std::io::Error::from_raw_os_error(other)),
        };
    }
    if kind != SOCK_DIAG_BY_FAMILY || read < UID_AT + 4 {
        return Err(std::io::ErrorKind::InvalidData.into());
    }
    // Only a connected socket is a client: the lookup falls back to a socket listening
    // on the client's address, and a closed client's socket (TIME_WAIT) is reported
    // with uid 0, which would pass a closed connection off as root's.
    const TCP_ESTABLISHED: u8 = 1;
    if answer[HEADER + 1] != TCP_ESTABLISHED {
        return Ok(None);
    }
    let uid = u32::from_ne_bytes([
        answer[UID_AT],
        answer[UID_AT + 1],
        answer[UID_AT + 2],
        answer[UID_AT + 3],
    ]);
    Ok(Some(uid))
}

/// An address as sock_diag takes it: 16 bytes, in network order, an IPv4 one first.
fn address_words(octets: &[u8]) -> [u8; 16] {
    let mut words = [0u8; 16];
    words[..octets.len()].copy_from_slice(octets);
    words
}

/// [`uid_of`] from the whole table of TCP sockets, where netlink does not answer.
fn table_uid(peer: SocketAddr, server: SocketAddr) -> Option<u32> {
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

    /// Netlink and the table agree, and netlink answers for the socket alone.
    #[test]
    fn netlink_names_the_same_user_as_the_table() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(server).unwrap();
        let (_accepted, peer) = listener.accept().unwrap();
        let by_netlink = super::diag_uid(peer, server).expect("sock_diag answers here");
        assert!(by_netlink.is_some());
        assert_eq!(by_netlink, super::table_uid(peer, server));
        let other_port = SocketAddr::new(server.ip(), server.port().wrapping_add(1));
        assert_eq!(super::diag_uid(peer, other_port).unwrap(), None);
        // A client that has closed its end is nobody's (its socket would be reported
        // as uid 0 once it is a TIME_WAIT one), though the server's end is open.
        drop(client);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut after = super::diag_uid(peer, server).unwrap();
        while after.is_some() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
            after = super::diag_uid(peer, server).unwrap();
        }
        assert_eq!(after, None);
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
