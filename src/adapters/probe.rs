//! Network checks for `apply`: a tiny HTTP/1.1 status probe and waiting for a socket to listen.
//!
//! Deliberately small: one GET with `Connection: close`, and only the status line is read.
//! `https://` goes through rustls with the site's name as the TLS server name and **without
//! certificate verification**: the probe dials nginx on this host to learn whether the server
//! block answers, not whether its certificate is trusted (a self-signed or expired certificate
//! still answers). The handshake signature is still checked against the certificate presented.
//! Anything richer belongs to a real HTTP client.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// Longest status line read before the response is called malformed.
const MAX_STATUS_LINE: usize = 1024;

/// How soon `wait_listen` tries to connect again after its first attempt; each wait after it
/// is twice as long, up to [`POLL_INTERVAL`] (a backend that starts in 50 ms is seen within a
/// few ms of it, one that takes seconds costs a connect every 100 ms).
pub const FIRST_POLL: Duration = Duration::from_millis(5);

/// How often `wait_listen` tries to connect, at most.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The wait after `wait`: twice as long, from [`FIRST_POLL`] up to `max`.
pub fn backoff(wait: Duration, max: Duration) -> Duration {
    (wait * 2).clamp(FIRST_POLL, max)
}

/// Invalid probe targets and listen waits that ran out of time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The URL is not of the form `http://host[:port]/path`.
    #[error("invalid probe url `{url}`: {reason}\nhelp: write it as `http://host[:port]/path`")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The address is not `host:port`, `[v6]:port` or `unix:/path`.
    #[error("invalid listen address `{address}`: {reason}\nhelp: write it as `host:port`, `[::1]:port` or `unix:/path`")]
    InvalidAddress {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Nothing accepted connections at the address in time.
    #[error(
        "`{address}` did not accept connections within {waited_ms} ms (last error: {last_error})"
    )]
    ListenTimeout {
        /// The address waited for.
        address: String,
        /// How long was waited.
        waited_ms: u64,
        /// Why the last connect attempt failed.
        last_error: String,
    },
}

/// What a probe saw: a status code, or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct ProbeResult {
    /// The HTTP status code, when a status line arrived.
    pub status: Option<u16>,
    /// Why no status arrived (bad url, refused, timed out, malformed response).
    pub error: Option<String>,
    /// Time from the start of the probe to its result, in milliseconds.
    pub elapsed_ms: u64,
}

/// A parsed `http://host[:port]/path` (or, for a probe, `https://…`) URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct HttpUrl {
    /// `https://`: the exchange runs over TLS.
    pub tls: bool,
    /// Host name, IPv4 literal, or IPv6 literal without brackets.
    pub host: String,
    /// TCP port (80 when not given, 443 for `https://`).
    pub port: u16,
    /// Request target: starts with `/`, may carry a query.
    pub path: String,
}

impl HttpUrl {
    /// Parses `url` strictly: lowercase `http://`, no user info, no fragment, printable ASCII.
    pub fn parse(url: &str) -> Result<Self, ProbeError> {
        Self::parse_with(url, false)
    }

    /// [`HttpUrl::parse`], also taking `https://` (what a probe speaks, not a webhook).
    pub fn parse_probe(url: &str) -> Result<Self, ProbeError> {
        Self::parse_with(url, true)
    }

    fn parse_with(url: &str, https: bool) -> Result<Self, ProbeError> {
        let invalid = |reason: &str| ProbeError::InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let (tls, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => (false, rest),
            (None, Some(rest)) if https => (true, rest),
            _ if https => return Err(invalid("only `http://` and `https://` urls can be probed")),
            _ => return Err(invalid("only `http://` urls can be probed")),
        };
        if let Some(c) = rest.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(invalid(&format!(
                "{c:?} is not allowed; urls are printable ascii without spaces"
            )));
        }
        if rest.contains('#') {
            return Err(invalid("a fragment (`#...`) is never sent to a server"));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        if authority.contains('?') {
            return Err(invalid("the path must start with `/` before any `?query`"));
        }
        if authority.contains('@') {
            return Err(invalid("user info (`user@`) is not supported"));
        }
        let (host, port) = split_host_port(authority).map_err(|r| invalid(&r))?;
        let port = match port {
            Some(p) => parse_port(p).map_err(|r| invalid(&r))?,
            None if tls => 443,
            None => 80,
        };
        Ok(HttpUrl {
            tls,
            host,
            port,
            path: path.to_string(),
        })
    }

    fn default_port(&self) -> u16 {
        if self.tls {
            443
        } else {
            80
        }
    }

    fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }

    /// The `Host` header value: the host, bracketed if IPv6, with the port unless it is the
    /// scheme's default.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == self.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl FromStr for HttpUrl {
    type Err = ProbeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "{}://{host}:{}{}", self.scheme(), self.port, self.path)
    }
}

/// Where `wait_listen` connects: a TCP `host:port` or a unix socket path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenAddress {
    /// A TCP address; `host` is a name, IPv4 literal or IPv6 literal without brackets.
    Tcp {
        /// Host to connect to.
        host: String,
        /// Port to connect to.
        port: u16,
    },
    /// A unix stream socket.
    Unix {
        /// The socket file.
        path: PathBuf,
    },
}

impl ListenAddress {
    /// Parses `host:port`, `[v6]:port` or `unix:/absolute/path`.
    pub fn parse(address: &str) -> Result<Self, ProbeError> {
        let invalid = |reason: &str| ProbeError::InvalidAddress {
            address: address.to_string(),
            reason: reason.to_string(),
        };
        if let Some(path) = address.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err(invalid("a unix socket path must be absolute"));
            }
            return Ok(ListenAddress::Unix {
                path: PathBuf::from(path),
            });
        }
        if address.is_empty() || address.chars().any(|c| !c.is_ascii_graphic()) {
            return Err(invalid("expected printable ascii without spaces"));
        }
        let (host, port) = split_host_port(address).map_err(|r| invalid(&r))?;
        let port = port.ok_or_else(|| invalid("a port is required"))?;
        let port = parse_port(port).map_err(|r| invalid(&r))?;
        Ok(ListenAddress::Tcp { host, port })
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddress::Tcp { host, port } if host.contains(':') => {
                write!(f, "[{host}]:{port}")
            }
            ListenAddress::Tcp { host, port } => write!(f, "{host}:{port}"),
            ListenAddress::Unix { path } => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Sends `GET path` to `url` and returns the status code of the answer.
///
/// Never fails: an invalid URL, a refused connection, a timeout or a malformed answer is
/// reported in `error`. The whole exchange (resolve, connect, send, status line) shares
/// `timeout`.
pub async fn probe_http(url: &str, timeout: Duration) -> ProbeResult {
    probe_site(url, None, timeout).await
}

/// [`probe_http`] aimed at one server block: `host` (when given) is sent as the `Host` header
/// and, over TLS, as the server name (SNI), while the connection still goes to the URL's
/// address. `https://` URLs are spoken over TLS.
pub async fn probe_site(url: &str, host: Option<&str>, timeout: Duration) -> ProbeResult {
    let start = Instant::now();
    let failed = |e: String| ProbeResult {
        status: None,
        error: Some(e),
        elapsed_ms: millis(start.elapsed()),
    };
    let parsed = match HttpUrl::parse_probe(url) {
        Ok(parsed) => parsed,
        Err(e) => return failed(e.to_string()),
    };
    if let Some(h) = host {
        if let Err(e) = check_host_header(h) {
            return failed(e);
        }
    }
    probe_aimed(&parsed, host, timeout).await
}

/// `probe_http` for an already parsed URL (parse once when the playbook loads).
pub async fn probe_url(url: &HttpUrl, timeout: Duration) -> ProbeResult {
    probe_aimed(url, None, timeout).await
}

async fn probe_aimed(url: &HttpUrl, host: Option<&str>, timeout: Duration) -> ProbeResult {
    let start = Instant::now();
    let outcome = tokio::time::timeout(timeout, exchange(url, host)).await;
    let elapsed_ms = millis(start.elapsed());
    match outcome {
        Ok(Ok(status)) => ProbeResult {
            status: Some(status),
            error: None,
            elapsed_ms,
        },
        Ok(Err(error)) => ProbeResult {
            status: None,
            error: Some(error),
            elapsed_ms,
        },
        Err(_) => ProbeResult {
            status: None,
            error: Some(format!(
                "no status line from `{url}` within {} ms",
                millis(timeout)
            )),
            elapsed_ms,
        },
    }
}

/// A `Host` value a request may carry: `name`, `name:port`, `[v6]` or `[v6]:port`.
fn check_host_header(host: &str) -> Result<(), String> {
    let ok = !host.is_empty()
        && host.len() <= 260
        && host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid probe host `{}`: a host name, with an optional `:port`",
            host.escape_debug()
        ))
    }
}

/// The name part of a `Host` value, for SNI: none for an address (SNI carries names only).
fn sni_name(host: &str) -> Option<ServerName<'static>> {
    if host.starts_with('[') {
        return None;
    }
    let name = host.rsplit_once(':').map_or(host, |(n, _)| n);
    if name.parse::<IpAddr>().is_ok() {
        return None;
    }
    ServerName::try_from(name.to_string()).ok()
}

/// Connects, sends the request and reads the status code.
async fn exchange(url: &HttpUrl, host: Option<&str>) -> Result<u16, String> {
    let stream = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| format!("cannot connect to `{url}`: {e}"))?;
    let host_header = host.map_or_else(|| url.host_header(), str::to_string);
    if !url.tls {
        return ask(stream, url, &host_header).await;
    }
    let name = match host.and_then(sni_name) {
        Some(name) => name,
        // an address as the server name: rustls sends no SNI, nginx uses its default server
        None => match url.host.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(url.host.clone())
                .map_err(|_| format!("`{}` is not a TLS server name", url.host))?,
        },
    };
    let connector = tokio_rustls::TlsConnector::from(tls_config()?);
    let tls = connector
        .connect(name, stream)
        .await
        .map_err(|e| format!("tls handshake with `{url}` failed: {e}"))?;
    ask(tls, url, &host_header).await
}

/// Sends the request over `stream` and reads the status code.
async fn ask<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    url: &HttpUrl,
    host: &str,
) -> Result<u16, String> {
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: nginx-medic/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        url.path,
        env!("CARGO_PKG_VERSION"),
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("cannot send the request to `{url}`: {e}"))?;

    let mut line = Vec::with_capacity(128);
    let mut buf = [0u8; 256];
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("cannot read the answer from `{url}`: {e}"))?;
        let chunk = buf.get(..n).unwrap_or_default();
        if n == 0 {
            return Err(format!(
                "`{url}` closed the connection before sending a status line"
            ));
        }
        line.extend_from_slice(chunk);
        if let Some(end) = line.iter().position(|&b| b == b'\n') {
            line.truncate(end);
            break;
        }
        if line.len() > MAX_STATUS_LINE {
            return Err(format!(
                "`{url}` sent no status line in its first {MAX_STATUS_LINE} bytes"
            ));
        }
    }
    parse_status_line(&line).ok_or_else(|| {
        format!(
            "`{url}` answered with a malformed status line `{}`",
            String::from_utf8_lossy(&line).trim_end()
        )
    })
}

/// The client configuration of every TLS probe: ring's algorithms, TLS 1.2 and 1.3, and
/// [`AnyCertificate`] in place of the web PKI.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up tls: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Accepts whatever certificate the server presents (the probe checks that the site answers,
/// not that its certificate is trusted), but still checks that the handshake was signed with the
/// key of that certificate.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Whether `status` satisfies a probe expecting `expect`: the same code, or a redirect
/// (301, 302, 303, 307, 308) where a success was expected — the server block answered, and
/// where it sends clients is its own business.
pub fn answers(status: u16, expect: u16) -> bool {
    status == expect
        || ((200..300).contains(&expect) && matches!(status, 301 | 302 | 303 | 307 | 308))
}

/// The code from `HTTP/1.x NNN reason` (trailing `\r` allowed).
fn parse_status_line(line: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.splitn(3, ' ');
    let version = parts.next()?;
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let code: u16 = code.parse().ok()?;
    (100..=599).contains(&code).then_some(code)
}

/// Waits until a connection to `address` (`host:port`, `[v6]:port`, `unix:/path`) succeeds,
/// trying every 100 ms, and returns how long that took.
pub async fn wait_listen(address: &str, timeout: Duration) -> Result<Duration, ProbeError> {
    let parsed = ListenAddress::parse(address)?;
    wait_listen_on(&parsed, timeout).await
}

/// `wait_listen` for an already parsed address.
pub async fn wait_listen_on(
    address: &ListenAddress,
    timeout: Duration,
) -> Result<Duration, ProbeError> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut wait = FIRST_POLL;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let attempt_started = Instant::now();
        let last_error = match tokio::time::timeout(remaining, connect_once(address)).await {
            Ok(Ok(())) => return Ok(start.elapsed()),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "the connect attempt timed out".to_string(),
        };
        if Instant::now() >= deadline {
            return Err(ProbeError::ListenTimeout {
                address: address.to_string(),
                waited_ms: millis(start.elapsed()),
                last_error,
            });
        }
        // The last attempt happens at the deadline itself.
        let next = (attempt_started + wait).min(deadline);
        wait = backoff(wait, POLL_INTERVAL);
        tokio::time::sleep_until(next.into()).await;
    }
}

async fn connect_once(address: &ListenAddress) -> std::io::Result<()> {
    match address {
        ListenAddress::Tcp { host, port } => {
            TcpStream::connect((host.as_str(), *port)).await.map(drop)
        }
        ListenAddress::Unix { path } => UnixStream::connect(path).await.map(drop),
    }
}

/// Splits `host`, `host:port`, `[v6]` or `[v6]:port` and checks the host's characters.
fn split_host_port(authority: &str) -> Result<(String, Option<&str>), String> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or_else(|| "`[` opens an ipv6 address that `]` never closes".to_string())?;
        v6.parse::<Ipv6Addr>()
            .map_err(|_| format!("`{v6}` is not an ipv6 address"))?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| format!("unexpected `{after}` after the ipv6 address"))?,
            ),
        };
        return Ok((v6.to_string(), port));
    }
    let (host, port) = match authority.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    if host.is_empty() {
        return Err("the host is empty".to_string());
    }
    if host.contains(':') || port.is_some_and(|p| p.contains(':')) {
        return Err("an ipv6 address must be in brackets, as `[::1]:8080`".to_string());
    }
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if host.len() > 253 || !host.split('.').all(valid_label) {
        return Err(format!("`{host}` is not a host name or ipv4 address"));
    }
    Ok((host.to_string(), port))
}

fn parse_port(port: &str) -> Result<u16, String> {
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{port}` is not a port number"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("port `{port}` is not in 1..=65535")),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// Serves one connection: reads the request head, answers `response`, returns the request.
    async fn serve_once(listener: TcpListener, response: &'static str) -> String {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 512];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = sock.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            req.extend_from_slice(&buf[..n]);
        }
        sock.write_all(response.as_bytes()).await.unwrap();
        String::from_utf8(req).unwrap()
    }

    #[tokio::test]
    async fn probe_200_sends_host_and_close() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(serve_once(
            listener,
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ));
        let r = probe_http(
            &format!("http://127.0.0.1:{port}/health?x=1"),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(r.status, Some(200), "{r:?}");
        assert_eq!(r.error, None);
        let req = server.await.unwrap();
        assert!(req.starts_with("GET /health?x=1 HTTP/1.1\r\n"), "{req}");
        assert!(
            req.contains(&format!("\r\nHost: 127.0.0.1:{port}\r\n")),
            "{req}"
        );
        assert!(req.contains("\r\nConnection: close\r\n"), "{req}");
    }

    #[tokio::test]
    async fn probe_502_over_ipv6() {
        let Ok(listener) = TcpListener::bind("[::1]:0").await else {
            return; // no ipv6 loopback on this host
        };
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(serve_once(
            listener,
            "HTTP/1.1 502 Bad Gateway\r\nServer: nginx\r\n\r\n",
        ));
        let r = probe_http(&format!("http://[::1]:{port}/"), Duration::from_secs(5)).await;
        assert_eq!(r.status, Some(502), "{r:?}");
        let req = server.await.unwrap();
        assert!(
            req.contains(&format!("\r\nHost: [::1]:{port}\r\n")),
            "{req}"
        );
    }

    #[tokio::test]
    async fn probe_connection_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let r = probe_http(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(5)).await;
        assert_eq!(r.status, None);
        let err = r.error.unwrap();
        assert!(
            err.starts_with("cannot connect to `http://127.0.0.1:"),
            "{err}"
        );
        assert!(err.to_lowercase().contains("refused"), "{err}");
    }

    #[tokio::test]
    async fn probe_times_out_when_nothing_answers() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accepts and then says nothing.
        let server = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(3)).await;
            drop(sock);
        });
        let r = probe_http(
            &format!("http://127.0.0.1:{port}/"),
            Duration::from_millis(300),
        )
        .await;
        assert_eq!(r.status, None);
        assert!(r.error.unwrap().contains("within 300 ms"));
        assert!((300..2000).contains(&r.elapsed_ms), "{}", r.elapsed_ms);
        server.abort();
    }

    #[tokio::test]
    async fn probe_reports_early_close_and_garbage() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(serve_once(listener, ""));
        let r = probe_http(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(5)).await;
        server.await.unwrap();
        assert!(r.error.unwrap().contains("before sending a status line"));

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(serve_once(listener, "SSH-2.0-OpenSSH\r\n"));
        let r = probe_http(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(5)).await;
        server.await.unwrap();
        assert_eq!(r.status, None);
        assert!(r
            .error
            .unwrap()
            .contains("malformed status line `SSH-2.0-OpenSSH`"));
    }

    #[tokio::test]
    async fn probe_invalid_url_is_an_error_not_a_panic() {
        let r = probe_http("ftp://example.com/", Duration::from_secs(1)).await;
        assert_eq!(r.status, None);
        assert!(r
            .error
            .unwrap()
            .starts_with("invalid probe url `ftp://example.com/`"));
        let r = probe_site(
            "http://127.0.0.1:1/",
            Some("a\r\nX: y"),
            Duration::from_secs(1),
        )
        .await;
        assert!(r.error.unwrap().starts_with("invalid probe host"));
    }

    #[tokio::test]
    async fn an_aimed_probe_sends_the_site_name_as_host() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(serve_once(listener, "HTTP/1.1 301 Moved\r\n\r\n"));
        let url = format!("http://127.0.0.1:{port}/x");
        let r = probe_site(&url, Some("app.example.test:8080"), Duration::from_secs(5)).await;
        assert_eq!(r.status, Some(301), "{r:?}");
        let req = server.await.unwrap();
        assert!(req.contains("\r\nHost: app.example.test:8080\r\n"), "{req}");
    }

    #[test]
    fn a_redirect_answers_a_success_probe() {
        assert!(answers(200, 200) && answers(301, 200) && answers(308, 204));
        assert!(!answers(304, 200) && !answers(400, 200) && !answers(502, 200));
        assert!(!answers(301, 404), "only where a success was expected");
    }

    #[test]
    fn probe_urls_may_be_https() {
        let u = HttpUrl::parse_probe("https://127.0.0.1/").unwrap();
        assert_eq!(
            (u.tls, u.port, u.host_header().as_str()),
            (true, 443, "127.0.0.1")
        );
        assert_eq!(u.to_string(), "https://127.0.0.1:443/");
        assert!(
            HttpUrl::parse("https://127.0.0.1/").is_err(),
            "webhooks stay http"
        );
        assert_eq!(
            sni_name("app.example.test:8443"),
            ServerName::try_from("app.example.test").ok()
        );
        assert_eq!(sni_name("127.0.0.1:8443"), None);
        assert_eq!(sni_name("[::1]:8443"), None);
    }

    #[test]
    fn parses_urls_strictly() {
        let u = HttpUrl::parse("http://localhost").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("localhost", 80, "/")
        );
        assert_eq!(u.host_header(), "localhost");
        let u = HttpUrl::parse("http://10.0.0.1:8080/a/b?c=d").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("10.0.0.1", 8080, "/a/b?c=d")
        );
        let u = HttpUrl::parse("http://[::1]/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 80));
        assert_eq!(u.host_header(), "[::1]");
        for bad in [
            "https://a/",
            "HTTP://a/",
            "http://",
            "http:///x",
            "http://a:/",
            "http://a:0/",
            "http://a:65536/",
            "http://a:8o/",
            "http://user@a/",
            "http://a/b#frag",
            "http://a/b c",
            "http://a?x",
            "http://::1/",
            "http://[::1/",
            "http://[zz]/",
            "http://[::1]x/",
            "http://a_b/",
            "http://-a/",
            "http://a..b/",
            "http://a/\r\nX: y",
            "http://é/",
            "ftp://a/",
            "a:80",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad} should be rejected");
        }
        let err = HttpUrl::parse("https://a/").unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid probe url `https://a/`: only `http://` urls can be probed\nhelp: write it as `http://host[:port]/path`"
        );
    }

    #[test]
    fn parses_status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r"), Some(200));
        assert_eq!(
            parse_status_line(b"HTTP/1.0 504 Gateway Time-out"),
            Some(504)
        );
        assert_eq!(parse_status_line(b"HTTP/1.1 204"), Some(204));
        assert_eq!(parse_status_line(b"HTTP/2 200"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 20 OK"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 999 Nope"), None);
        assert_eq!(parse_status_line(b"hello"), None);
    }

    #[test]
    fn parses_listen_addresses() {
        assert_eq!(
            ListenAddress::parse("127.0.0.1:9000").unwrap(),
            ListenAddress::Tcp {
                host: "127.0.0.1".into(),
                port: 9000
            }
        );
        assert_eq!(
            ListenAddress::parse("[::1]:9000").unwrap().to_string(),
            "[::1]:9000"
        );
        assert_eq!(
            ListenAddress::parse("unix:/run/php/fpm.sock").unwrap(),
            ListenAddress::Unix {
                path: "/run/php/fpm.sock".into()
            }
        );
        for bad in [
            "127.0.0.1",
            "unix:relative.sock",
            "host:",
            ":80",
            "::1:80",
            "",
        ] {
            assert!(
                ListenAddress::parse(bad).is_err(),
                "{bad} should be rejected"
            );
        }
    }

    #[tokio::test]
    async fn wait_listen_sees_a_late_listener() {
        let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let server = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let listener = TcpListener::bind(addr).await.unwrap();
            let _ = listener.accept().await;
        });
        let waited = wait_listen(&addr.to_string(), Duration::from_secs(5))
            .await
            .unwrap();
        assert!(
            (Duration::from_millis(250)..Duration::from_secs(3)).contains(&waited),
            "{waited:?}"
        );
        server.await.unwrap();
    }

    #[tokio::test]
    async fn wait_listen_unix_socket_and_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.sock");
        let address = format!("unix:{}", path.display());
        let err = wait_listen(&address, Duration::from_millis(250))
            .await
            .unwrap_err();
        match &err {
            ProbeError::ListenTimeout { waited_ms, .. } => {
                assert!((200..2000).contains(waited_ms), "{waited_ms}")
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            err.to_string()
                .contains("did not accept connections within"),
            "{err}"
        );

        let _listener = tokio::net::UnixListener::bind(&path).unwrap();
        let waited = wait_listen(&address, Duration::from_secs(2)).await.unwrap();
        assert!(waited < Duration::from_secs(1), "{waited:?}");
    }
}
