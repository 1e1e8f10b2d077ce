//! Opening one connection to the upstream, either straight over TCP or through an HTTP
//! proxy tunnel (`CONNECT` with `Proxy-Authorization: Basic x:TOKEN`), then TLS on top.
//!
//! Written by hand rather than with a proxy-aware client crate because the benchmark
//! must time exactly these steps (TCP, CONNECT, handshake) and nothing else, with TLS
//! session resumption off so every new tunnel pays a full handshake, as a fresh agent
//! process does.

use anyhow::{bail, Context};
use base64::Engine;
use rustls::pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Longest proxy reply head accepted after CONNECT.
const MAX_CONNECT_REPLY: usize = 8 * 1024;
/// Every network step of a dial must finish within this.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP proxy to tunnel through.
#[derive(Clone, Debug)]
pub struct Proxy {
    pub addr: SocketAddr,
    /// Sent as the password of a Basic credential (`x:TOKEN`); none for proxies without auth.
    pub token: Option<String>,
}

/// Everything needed to open a ready-to-use TLS stream to the target.
pub struct Dialer {
    /// `host:port` as named in CONNECT and checked against the server certificate.
    target_host: String,
    target_port: u16,
    /// Where TCP goes when there is no proxy.
    target_addr: SocketAddr,
    proxy: Option<Proxy>,
    tls: TlsConnector,
    server_name: ServerName<'static>,
}

impl Dialer {
    pub fn new(
        target_host: &str,
        target_port: u16,
        target_addr: SocketAddr,
        proxy: Option<Proxy>,
        trusted: &[PathBuf],
        http2: bool,
    ) -> anyhow::Result<Dialer> {
        let mut roots = rustls::RootCertStore::empty();
        for path in trusted {
            for cert in CertificateDer::pem_file_iter(path)
                .with_context(|| format!("cannot read CA file {}", path.display()))?
            {
                let cert =
                    cert.with_context(|| format!("bad PEM certificate in {}", path.display()))?;
                roots
                    .add(cert)
                    .with_context(|| format!("unusable CA certificate in {}", path.display()))?;
            }
        }
        if roots.is_empty() {
            bail!("no trusted CA given: pass --ca FILE (the upstream's CA, or the proxy's)");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.resumption = rustls::client::Resumption::disabled();
        config.alpn_protocols = if http2 {
            vec![b"h2".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        let server_name = ServerName::try_from(target_host.to_string())
            .with_context(|| format!("{target_host:?} is not a valid TLS server name"))?;
        Ok(Dialer {
            target_host: target_host.to_string(),
            target_port,
            target_addr,
            proxy,
            tls: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// TCP (+ CONNECT) + TLS handshake, each step bounded by [`STEP_TIMEOUT`].
    pub async fn dial(&self) -> anyhow::Result<TlsStream<TcpStream>> {
        let addr = self.proxy.as_ref().map_or(self.target_addr, |p| p.addr);
        let mut tcp = tokio::time::timeout(STEP_TIMEOUT, TcpStream::connect(addr))
            .await
            .context("TCP connect timed out")?
            .with_context(|| format!("cannot connect to {addr}"))?;
        tcp.set_nodelay(true)?;
        if let Some(proxy) = &self.proxy {
            tokio::time::timeout(STEP_TIMEOUT, self.connect_tunnel(&mut tcp, proxy))
                .await
                .context("CONNECT timed out")??;
        }
        let tls = tokio::time::timeout(
            STEP_TIMEOUT,
            self.tls.connect(self.server_name.clone(), tcp),
        )
        .await
        .context("TLS handshake timed out")?
        .context("TLS handshake failed")?;
        Ok(tls)
    }

    async fn connect_tunnel(&self, tcp: &mut TcpStream, proxy: &Proxy) -> anyhow::Result<()> {
        let authority = format!("{}:{}", self.target_host, self.target_port);
        let mut head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
        if let Some(token) = &proxy.token {
            let credential = base64::engine::general_purpose::STANDARD.encode(format!("x:{token}"));
            head.push_str(&format!("Proxy-Authorization: Basic {credential}\r\n"));
        }
        head.push_str("\r\n");
        tcp.write_all(head.as_bytes()).await?;
        // The proxy sends nothing after its reply until our ClientHello, so reading up
        // to the blank line never swallows tunnel bytes.
        let mut reply = Vec::with_capacity(256);
        let mut chunk = [0u8; 512];
        while !reply.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tcp.read(&mut chunk).await?;
            if n == 0 {
                bail!("the proxy closed the connection before answering CONNECT");
            }
            reply.extend_from_slice(&chunk[..n]);
            if reply.len() > MAX_CONNECT_REPLY {
                bail!("the proxy's CONNECT reply is longer than {MAX_CONNECT_REPLY} bytes");
            }
        }
        let status_line = reply.split(|b| *b == b'\n').next().unwrap_or_default();
        let status_line = String::from_utf8_lossy(status_line);
        let status = status_line.split_whitespace().nth(1).unwrap_or_default();
        if status != "200" {
            bail!("CONNECT refused: {}", status_line.trim());
        }
        Ok(())
    }
}
