//! The frames of a WebSocket to a host the gateway sends credentials to, searched for
//! them on their way from the upstream to the agent ([`crate::reflect`]).
//!
//! Written by hand: only the headers of the upstream's frames are read (RFC 6455,
//! 5.2). They pass unchanged, and the payload bytes stream through a [`Scanner`] that
//! overwrites them in place where they spell the credential, so every frame keeps its
//! length and nothing is held beyond a credential's length. WebSocket crates read
//! whole messages, which would hold up to a message's size per connection. The
//! agent's direction, for every WebSocket, is copied as it comes once each frame's
//! header shows it is a client's frame ([`relay_from_agent`]).
//!
//! A form split across the fragments of one message is found, even with control
//! frames (a ping) between them: bytes kept back at the end of a fragment complete
//! their frame only once the next fragment's first bytes show whether the form goes on
//! (so a fragment's last few bytes may wait for the next one, and a control frame
//! after it waits with them). At the end of a message they go as they are. A control
//! frame's payload (125 bytes at most, whole) is searched on its own. A frame the
//! gateway could not search ends the WebSocket: a masked one (servers never mask), or
//! one with reserved bits set (an extension, such as compression, that the gateway did
//! not offer).

use crate::reflect::Scanner;
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::io::{Error, ErrorKind};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Most payload bytes read at once.
const CHUNK: usize = 16 * 1024;
/// Most frame headers waiting behind bytes kept back (a run of empty fragments or
/// control frames); beyond it the WebSocket ends.
const MAX_OWED: usize = 64;

/// A frame's header as read, and what the relay needs of it.
struct Head {
    raw: Bytes,
    payload: u64,
    fin: bool,
    control: bool,
    continuation: bool,
}

/// Copies the upstream's frames to the agent, masked, until the upstream closes (then
/// shuts the agent's side) or either side fails.
pub async fn relay_from_upstream<R, W>(
    mut from: R,
    mut to: W,
    scanner: &mut Scanner,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut out = Out {
        owed: VecDeque::new(),
        written: 0,
    };
    let mut scanned: u64 = 0;
    let mut buf = BytesMut::new();
    // Whether a message is open (its last fragment not yet seen). The search is cut at
    // each message's end, so a continuation with no message open (a lenient client
    // appends it to the last message) or a new message inside one would carry a
    // credential split across them past it: either ends the WebSocket.
    let mut open = false;
    loop {
        let Some(head) = read_head(&mut from).await? else {
            out.emit(&mut to, scanner.flush()).await?;
            to.shutdown().await?;
            return Ok(());
        };
        if head.control {
            // Whole and short: searched on its own, and written as one piece after the
            // data bytes before it (which may wait for the next fragment). A message's
            // carry-over is not cut by it: upstreams send pings between fragments.
            let mut payload = vec![0u8; head.payload as usize];
            from.read_exact(&mut payload).await?;
            let mut whole = BytesMut::from(&head.raw[..]);
            whole.extend_from_slice(&scanner.mask_whole(&payload));
            out.owe(scanned, whole.freeze())?;
            out.emit(&mut to, Bytes::new()).await?;
            to.flush().await?;
            continue;
        }
        if head.continuation != open {
            return Err(Error::new(
                ErrorKind::InvalidData,
                "a continuation frame with no message open, or a message started inside another",
            ));
        }
        open = !head.fin;
        if !head.continuation {
            // The message before must be complete before this one starts.
            out.emit(&mut to, scanner.flush()).await?;
        }
        out.owe(scanned, head.raw)?;
        let mut remaining = head.payload;
        while remaining > 0 {
            // Read straight into a buffer the scanner can keep a part of, reclaimed for
            // the next read once nothing refers to it.
            buf.reserve(CHUNK);
            let n = (&mut from)
                .take(remaining.min(CHUNK as u64))
                .read_buf(&mut buf)
                .await?;
            if n == 0 {
                return Err(ErrorKind::UnexpectedEof.into());
            }
            remaining -= n as u64;
            scanned += n as u64;
            let masked = scanner.scan(buf.split().freeze());
            out.emit(&mut to, masked).await?;
        }
        let kept = if head.fin {
            scanner.flush()
        } else {
            Bytes::new()
        };
        out.emit(&mut to, kept).await?;
        to.flush().await?;
    }
}

/// Copies the agent's frames to the upstream as they are, each checked to be a
/// client's WebSocket frame (RFC 6455, 5.2): masked, a known opcode, a control frame
/// short and whole, reserved bits only those an extension the upstream accepted uses
/// (`reserved`: the bits allowed, `0x40` with compression). Anything else ends the
/// WebSocket with an error: nothing judges what the agent sends once the upstream
/// accepted it, so it must at least be frames, not requests for an upstream that goes
/// on reading HTTP. When the agent closes, the upstream's writing side is shut.
pub async fn relay_from_agent<R, W>(mut from: R, mut to: W, reserved: u8) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let invalid = |what: &str| Error::new(ErrorKind::InvalidData, what.to_string());
    loop {
        let mut head = [0u8; 14];
        if from.read(&mut head[..1]).await? == 0 {
            to.shutdown().await?;
            return Ok(());
        }
        from.read_exact(&mut head[1..2]).await?;
        let opcode = head[0] & 0x0f;
        if head[0] & 0x70 & !reserved != 0 {
            return Err(invalid("an agent's frame with reserved bits set"));
        }
        if !matches!(opcode, 0 | 1 | 2 | 8 | 9 | 10) {
            return Err(invalid("an agent's frame with an unknown opcode"));
        }
        if head[1] & 0x80 == 0 {
            return Err(invalid("an unmasked frame from the agent"));
        }
        let (extended, payload) = match head[1] & 0x7f {
            126 => {
                from.read_exact(&mut head[2..4]).await?;
                (2, u64::from(u16::from_be_bytes([head[2], head[3]])))
            }
            127 => {
                from.read_exact(&mut head[2..10]).await?;
                let mut len = [0u8; 8];
                len.copy_from_slice(&head[2..10]);
                (8, u64::from_be_bytes(len))
            }
            short => (0, u64::from(short)),
        };
        if payload >> 63 != 0 {
            return Err(invalid("a frame length with its top bit set"));
        }
        let control = opcode & 0x08 != 0;
        if control && (payload > 125 || head[0] & 0x80 == 0) {
            return Err(invalid("a control frame that is long or fragmented"));
        }
        let end = 2 + extended + 4;
        from.read_exact(&mut head[2 + extended..end]).await?;
        to.write_all(&head[..end]).await?;
        let copied = tokio::io::copy(&mut (&mut from).take(payload), &mut to).await?;
        if copied != payload {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        to.flush().await?;
    }
}

/// What has gone to the agent: payload bytes written so far, and frame headers still
/// to write, each once the payload bytes before it (counted from the start) have gone.
struct Out {
    owed: VecDeque<(u64, Bytes)>,
    written: u64,
}

impl Out {
    /// Queues `head` (a frame header, or a whole control frame) to go once `at` payload
    /// bytes have.
    fn owe(&mut self, at: u64, head: Bytes) -> std::io::Result<()> {
        self.owed.push_back((at, head));
        if self.owed.len() > MAX_OWED {
            return Err(Error::new(
                ErrorKind::InvalidData,
                "too many frames behind a partial credential",
            ));
        }
        Ok(())
    }

    async fn emit<W: AsyncWrite + Unpin>(
        &mut self,
        to: &mut W,
        mut data: Bytes,
    ) -> std::io::Result<()> {
        loop {
            while self.owed.front().is_some_and(|(at, _)| *at <= self.written) {
                if let Some((_, head)) = self.owed.pop_front() {
                    to.write_all(&head).await?;
                }
            }
            if data.is_empty() {
                return Ok(());
            }
            let until_head = self
                .owed
                .front()
                .map_or(u64::MAX, |(at, _)| at - self.written);
            let take = (data.len() as u64).min(until_head) as usize;
            to.write_all(&data[..take]).await?;
            self.written += take as u64;
            data.advance(take);
        }
    }
}

/// The next frame's header, or `None` if the upstream closed between frames.
async fn read_head<R: AsyncRead + Unpin>(from: &mut R) -> std::io::Result<Option<Head>> {
    let mut first = [0u8; 2];
    if from.read(&mut first[..1]).await? == 0 {
        return Ok(None);
    }
    from.read_exact(&mut first[1..]).await?;
    let invalid = |what: &str| Error::new(ErrorKind::InvalidData, what.to_string());
    if first[0] & 0x70 != 0 {
        return Err(invalid(
            "a frame with reserved bits set (an extension not offered)",
        ));
    }
    if first[1] & 0x80 != 0 {
        return Err(invalid("a masked frame from the upstream"));
    }
    let mut raw = BytesMut::from(&first[..]);
    let payload = match first[1] & 0x7f {
        126 => {
            let mut len = [0u8; 2];
            from.read_exact(&mut len).await?;
            raw.extend_from_slice(&len);
            u64::from(u16::from_be_bytes(len))
        }
        127 => {
            let mut len = [0u8; 8];
            from.read_exact(&mut len).await?;
            raw.extend_from_slice(&len);
            let len = u64::from_be_bytes(len);
            if len >> 63 != 0 {
                return Err(invalid("a frame length with its top bit set"));
            }
            len
        }
        short => u64::from(short),
    };
    let opcode = first[0] & 0x0f;
    if !matches!(opcode, 0 | 1 | 2 | 8 | 9 | 10) {
        return Err(invalid("a frame with an opcode RFC 6455 does not define"));
    }
    let fin = first[0] & 0x80 != 0;
    let control = opcode & 0x08 != 0;
    if control && (payload > 125 || !fin) {
        return Err(invalid("a control frame that is long or fragmented"));
    }
    Ok(Some(Head {
        raw: raw.freeze(),
        payload,
        fin,
        control,
        continuation: opcode == 0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `relay_from_agent` passes on of `sent` (allowing `reserved` bits), and
    /// whether it ended cleanly.
    async fn from_agent(sent: &[u8], reserved: u8) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let ended = relay_from_agent(sent, &mut out, reserved).await;
        (out, ended.is_ok())
    }

    /// A masked frame of `opcode` (first byte, FIN and reserved bits included).
    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        let key = [1u8, 2, 3, 4];
        let mut frame = vec![first, 0x80 | payload.len() as u8];
        frame.extend_from_slice(&key);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        frame
    }

    /// Only a client's frames go upstream: HTTP sent after the handshake (for an
    /// upstream that reads on as HTTP), an unmasked frame, an unknown opcode and a
    /// reserved bit no extension uses end the WebSocket before anything of them goes.
    #[tokio::test]
    async fn the_agents_bytes_go_upstream_only_as_frames() {
        let mut frames = masked(0x81, b"hello");
        frames.extend(masked(0x89, b"ping"));
        frames.extend(masked(0x88, b""));
        assert_eq!(from_agent(&frames, 0).await, (frames.clone(), true));
        let compressed = masked(0xc1, b"x");
        assert_eq!(
            from_agent(&compressed, 0x40).await,
            (compressed.clone(), true)
        );

        for bad in [
            b"GET /admin/smuggled HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            vec![0x81, 0x05, b'h', b'e', b'l', b'l', b'o'],
            masked(0x83, b"x"),
            masked(0xc1, b"x"),
            masked(0x09, b"fragmented ping"),
        ] {
            let mut sent = frames.clone();
            sent.extend_from_slice(&bad);
            let (passed, clean) = from_agent(&sent, 0).await;
            assert!(!clean, "{bad:?}");
            assert_eq!(passed, frames, "{bad:?}");
        }
    }
    use crate::reflect::Reflection;

    const SECRET: &str = "sk-frames-0123456789";

    /// A server frame: FIN, opcode, unmasked payload.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        match payload.len() {
            n if n < 126 => out.push(n as u8),
            n if n <= 0xffff => {
                out.push(126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
        out
    }

    /// What the agent receives for `frames` from the upstream.
    async fn relayed(frames: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut scanner = Scanner::new(Reflection::of(SECRET).unwrap(), None, "websocket");
        let mut to = Vec::new();
        relay_from_upstream(frames, &mut to, &mut scanner).await?;
        Ok(to)
    }

    #[tokio::test]
    async fn frames_keep_their_shape_and_the_credential_is_masked() {
        let stars = "*".repeat(SECRET.len());
        let long_text = format!("{}{SECRET}{}", "a".repeat(70_000), "b".repeat(10));
        let mut upstream = frame(true, 1, format!("key={SECRET}!").as_bytes());
        upstream.extend(frame(true, 9, SECRET.as_bytes())); // a ping
        upstream.extend(frame(true, 2, long_text.as_bytes()));
        upstream.extend(frame(true, 1, b"")); // an empty message
        let mut expected = frame(true, 1, format!("key={stars}!").as_bytes());
        expected.extend(frame(true, 9, stars.as_bytes()));
        expected.extend(frame(true, 2, long_text.replace(SECRET, &stars).as_bytes()));
        expected.extend(frame(true, 1, b""));
        assert_eq!(relayed(&upstream).await.unwrap(), expected);
    }

    #[tokio::test]
    async fn a_credential_split_across_fragments_is_masked() {
        let (a, b) = SECRET.split_at(7);
        let (b, c) = b.split_at(1);
        let stars = |s: &str| "*".repeat(s.len());
        let mut upstream = frame(false, 1, format!("x {a}").as_bytes());
        upstream.extend(frame(false, 0, b"")); // an empty fragment in the middle
        upstream.extend(frame(false, 0, b.as_bytes()));
        upstream.extend(frame(true, 0, format!("{c} y").as_bytes()));
        let mut expected = frame(false, 1, format!("x {}", stars(a)).as_bytes());
        expected.extend(frame(false, 0, b""));
        expected.extend(frame(false, 0, stars(b).as_bytes()));
        expected.extend(frame(true, 0, format!("{} y", stars(c)).as_bytes()));
        assert_eq!(relayed(&upstream).await.unwrap(), expected);

        // Control frames between the fragments do not cut the search, and are
        // searched themselves.
        let (head, tail) = SECRET.split_at(9);
        let mut upstream = frame(false, 1, format!("AUTH:{head}").as_bytes());
        upstream.extend(frame(true, 9, b"ping"));
        upstream.extend(frame(true, 10, SECRET.as_bytes()));
        upstream.extend(frame(true, 0, format!("{tail}!").as_bytes()));
        let mut expected = frame(false, 1, format!("AUTH:{}", stars(head)).as_bytes());
        expected.extend(frame(true, 9, b"ping"));
        expected.extend(frame(true, 10, stars(SECRET).as_bytes()));
        expected.extend(frame(true, 0, format!("{}!", stars(tail)).as_bytes()));
        assert_eq!(relayed(&upstream).await.unwrap(), expected);

        // A partial spelling at the end of a message goes as it is, with its frame
        // whole, and so does one the next fragment does not complete.
        let mut upstream = frame(false, 1, a.as_bytes());
        upstream.extend(frame(true, 10, b"pong"));
        upstream.extend(frame(true, 0, b"rest"));
        upstream.extend(frame(true, 1, a.as_bytes()));
        assert_eq!(relayed(&upstream).await.unwrap(), upstream);
    }

    #[tokio::test]
    async fn frames_that_cannot_be_searched_end_the_relay() {
        // Compressed (RSV1), masked by the server, a long ping, a cut frame.
        let mut compressed = frame(true, 1, b"abc");
        compressed[0] |= 0x40;
        let mut masked = frame(true, 1, b"abcd");
        masked[1] |= 0x80;
        let long_ping = frame(true, 9, &[b'p'; 126]);
        let cut = &frame(true, 1, b"abcdef")[..5];
        for bad in [&compressed[..], &masked[..], &long_ping[..], cut] {
            assert!(relayed(bad).await.is_err(), "{bad:?}");
        }
        // A credential split by a continuation after a message's end (which a lenient
        // client appends to that message), and frames of undefined opcodes.
        let (head, tail) = SECRET.split_at(9);
        let mut orphan = frame(true, 1, head.as_bytes());
        orphan.extend(frame(true, 0, tail.as_bytes()));
        let mut nested = frame(false, 1, head.as_bytes());
        nested.extend(frame(true, 1, tail.as_bytes()));
        let undefined = frame(true, 3, b"abc");
        for bad in [&orphan[..], &nested[..], &undefined[..]] {
            let relayed = relayed(bad).await;
            assert!(relayed.is_err(), "{bad:?}: {relayed:?}");
        }
    }
}
