//! Compressed answers made readable. An answer from a host the gateway sends
//! credentials to is searched for them ([`crate::reflect`]); the gateway asks for it
//! uncompressed (`Accept-Encoding: identity`), but an upstream may compress it anyway,
//! and a compressed echo would carry the credential past the search. Such an answer is
//! decoded as it streams (and passed on decoded, without its `Content-Encoding` and
//! `Content-Length`); one in a coding the gateway cannot read is refused.
//!
//! The decoders are async-compression's, over the body as a byte stream (tokio-util's
//! `StreamReader` and `ReaderStream`). A decoded body has no trailers (compressed
//! answers with trailers are not seen in practice). A decoder's memory is bounded by
//! its window: 32 KiB for gzip and deflate, at most 16 MiB for br, and zstd is held to
//! 8 MiB (the most RFC 8878 asks HTTP decoders to accept). That much is drawn from the
//! agent's share of the gateway's body memory for as long as the answer streams
//! ([`memory_for`]), so one agent's many compressed answers meet its own limit.

use crate::body::{BoxError, ProxyBody};
use crate::body_budget::Reservation;
use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder, ZlibDecoder, ZstdDecoder};
use bytes::Bytes;
use futures_util::TryStreamExt;
use http::HeaderMap;
use http_body::Frame;
use http_body_util::{BodyDataStream, BodyExt, StreamBody};
use std::pin::Pin;
use tokio::io::{AsyncBufRead, BufReader};
use tokio_util::io::{ReaderStream, StreamReader};

/// Most codings one answer may stack.
const MAX_CODINGS: usize = 4;
/// zstd's largest window accepted, as a power of two (8 MiB).
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    /// HTTP's `deflate`: zlib-wrapped (RFC 9110, 8.4.1.2).
    Deflate,
    Brotli,
    Zstd,
}

/// The codings of `headers`' `Content-Encoding`, in the order they were applied
/// (`identity` left out); `Err` names the first one the gateway cannot read.
pub fn codings(headers: &HeaderMap) -> Result<Vec<Coding>, String> {
    let mut found = Vec::new();
    for value in headers.get_all(http::header::CONTENT_ENCODING) {
        let Ok(value) = value.to_str() else {
            return Err("(not text)".into());
        };
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let coding = match name.to_ascii_lowercase().as_str() {
                "identity" => continue,
                "gzip" | "x-gzip" => Coding::Gzip,
                "deflate" => Coding::Deflate,
                "br" => Coding::Brotli,
                "zstd" => Coding::Zstd,
                _ => return Err(name.chars().take(40).collect()),
            };
            found.push(coding);
        }
    }
    if found.len() > MAX_CODINGS {
        return Err(format!("{} codings stacked", found.len()));
    }
    Ok(found)
}

/// The most memory the decoders for `codings` may hold: each one's largest window and
/// its read buffer.
pub fn memory_for(codings: &[Coding]) -> usize {
    const BUFFER: usize = 8 * 1024;
    codings
        .iter()
        .map(|coding| {
            BUFFER
                + match coding {
                    Coding::Gzip | Coding::Deflate => 32 * 1024,
                    Coding::Brotli => 16 * 1024 * 1024,
                    Coding::Zstd => 1 << ZSTD_WINDOW_LOG_MAX,
                }
        })
        .sum()
}

/// `body` with `codings` (in the order they were applied) undone; `reserved` (the
/// decoders' memory, see [`memory_for`]) is held until the body is dropped.
pub fn decoded(body: ProxyBody, codings: &[Coding], reserved: Reservation) -> ProxyBody {
    let bytes = BodyDataStream::new(body).map_err(std::io::Error::other);
    let mut reader: Pin<Box<dyn AsyncBufRead + Send>> = Box::pin(StreamReader::new(bytes));
    for coding in codings.iter().rev() {
        reader = match coding {
            Coding::Gzip => {
                let mut decoder = GzipDecoder::new(reader);
                decoder.multiple_members(true);
                Box::pin(BufReader::new(decoder))
            }
            Coding::Deflate => Box::pin(BufReader::new(ZlibDecoder::new(reader))),
            Coding::Brotli => Box::pin(BufReader::new(BrotliDecoder::new(reader))),
            Coding::Zstd => Box::pin(BufReader::new(ZstdDecoder::with_params(
                reader,
                &[async_compression::zstd::DParameter::window_log_max(
                    ZSTD_WINDOW_LOG_MAX,
                )],
            ))),
        };
    }
    let frames = ReaderStream::new(reader)
        .map_ok(move |data: Bytes| {
            // The closure owns the reservation, so it lasts as long as the stream.
            let _held = &reserved;
            Frame::data(data)
        })
        .map_err(BoxError::from);
    ProxyBody::Decoded(StreamBody::new(frames).boxed_unsync())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::io::Write;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                http::header::CONTENT_ENCODING,
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn codings_are_read_in_the_order_applied_and_unknown_ones_named() {
        assert_eq!(codings(&headers(&[])), Ok(vec![]));
        assert_eq!(codings(&headers(&["identity"])), Ok(vec![]));
        assert_eq!(
            codings(&headers(&["GZIP, br", "zstd"])),
            Ok(vec![Coding::Gzip, Coding::Brotli, Coding::Zstd])
        );
        assert_eq!(codings(&headers(&["x-gzip"])), Ok(vec![Coding::Gzip]));
        assert_eq!(
            codings(&headers(&["gzip, compress"])),
            Err("compress".into())
        );
        assert!(codings(&headers(&["gzip, gzip, gzip, gzip, gzip"])).is_err());
    }

    #[tokio::test]
    async fn stacked_codings_are_undone_in_reverse() {
        let text = b"the credential sk-test-1234 in the middle".repeat(100);
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gzip.write_all(&text).unwrap();
        let gzipped = gzip.finish().unwrap();
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        zlib.write_all(&gzipped).unwrap();
        let both = zlib.finish().unwrap();
        let budget = crate::body_budget::BodyBudget::new(1 << 20, 1 << 20);
        let agent = palisade_policy::AgentName::new("tester").unwrap();
        let reserve = || budget.reserve(&agent);
        let body = decoded(
            ProxyBody::full(both),
            &[Coding::Gzip, Coding::Deflate],
            reserve(),
        );
        let read = body.collect().await.unwrap().to_bytes();
        assert_eq!(read.as_ref(), text.as_slice());

        // The decoders' memory is held until the body is dropped.
        let mut held = reserve();
        let memory = memory_for(&[Coding::Gzip]);
        held.grow(memory).unwrap();
        let body = decoded(ProxyBody::full(Bytes::new()), &[Coding::Gzip], held);
        assert_eq!(budget.in_use(&agent).0, memory);
        drop(body);
        assert_eq!(budget.in_use(&agent).0, 0);

        let corrupt = decoded(
            ProxyBody::full(&b"not gzip at all"[..]),
            &[Coding::Gzip],
            reserve(),
        );
        assert!(corrupt.collect().await.is_err());
    }
}
