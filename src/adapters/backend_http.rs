//! Requests a backend directly, not through nginx, and measures its answer: the status, the
//! size of the response header block (what nginx's `*_buffer_size` must hold) and whether the
//! body looks like a metrics endpoint. One plain-HTTP/1.1 `GET` per call, bounded in time and
//! in bytes read.

use crate::facts::direct::DirectAnswer;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A header block larger than this (1 MiB) is not read to its end.
const MAX_HEADER_BLOCK: usize = 1 << 20;
/// How much of the body is read to tell a metrics endpoint (`# HELP`, `# TYPE`) from an app.
const BODY_SNIFF: usize = 512;

/// `GET path` on `host:port` with `Host: host_header` (what nginx sends by default: the
/// address of the pass target). Never fails: a refused connection, a timeout or a malformed
/// answer is reported in `error`.
pub async fn request(
    host: &str,
    port: u16,
    path: &str,
    host_header: &str,
    timeout: Duration,
) -> DirectAnswer {
    let bare = host.trim_matches(['[', ']']);
    let what = format!("{host}:{port}{path}");
    let deadline = tokio::time::Instant::now() + timeout;
    let late = || {
        DirectAnswer::failed(format!(
            "no complete header block from `{what}` within {} ms",
            timeout.as_millis()
        ))
    };
    let connect = tokio::time::timeout_at(deadline, TcpStream::connect((bare, port)));
    let mut stream = match connect.await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return DirectAnswer::failed(format!("cannot connect to `{what}`: {e}")),
        Err(_) => return late(),
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: nginx-medic/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION"),
    );
    match tokio::time::timeout_at(deadline, stream.write_all(request.as_bytes())).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return DirectAnswer::failed(format!("cannot send the request to `{what}`: {e}"))
        }
        Err(_) => return late(),
    }
    let mut raw: Vec<u8> = Vec::with_capacity(8192);
    let mut buf = [0u8; 8192];
    let mut header_end = None;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                return DirectAnswer::failed(format!("cannot read the answer from `{what}`: {e}"))
            }
            // the header block is whole: a body that trickles or a connection kept open is no
            // reason to discard it
            Err(_) if header_end.is_some() => break,
            Err(_) => return late(),
        };
        raw.extend_from_slice(buf.get(..n).unwrap_or_default());
        if header_end.is_none() {
            header_end = end_of_header_block(&raw);
        }
        match header_end {
            Some(end) if n == 0 || raw.len() >= end + BODY_SNIFF => break,
            Some(_) if body_complete(&raw, header_end) => break,
            Some(_) => {}
            None if n == 0 => {
                return DirectAnswer::failed(format!(
                    "`{what}` closed the connection before the end of its header block"
                ))
            }
            None if raw.len() > MAX_HEADER_BLOCK => {
                return DirectAnswer::failed(format!(
                    "`{what}` sent no end of its header block in {MAX_HEADER_BLOCK} bytes"
                ))
            }
            None => {}
        }
    }
    DirectAnswer::of(&raw, header_end)
}

/// Whether the body announced by `Content-Length` has been read whole.
fn body_complete(raw: &[u8], header_end: Option<usize>) -> bool {
    let Some(end) = header_end else { return false };
    let head = String::from_utf8_lossy(raw.get(..end).unwrap_or_default()).to_ascii_lowercase();
    let length = head.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    length.is_some_and(|len| raw.len() >= end + len.min(BODY_SNIFF))
}

/// The length of the header block (status line and headers, with the blank line that ends
/// them), once `raw` holds all of it.
pub fn end_of_header_block(raw: &[u8]) -> Option<usize> {
    let crlf = raw.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = raw.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_block_ends_at_the_blank_line() {
        assert_eq!(
            end_of_header_block(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nok"),
            Some(25)
        );
        assert_eq!(end_of_header_block(b"HTTP/1.1 200 OK\r\nA: b\r\n"), None);
        assert_eq!(
            end_of_header_block(b"HTTP/1.0 200 OK\nA: b\n\nok"),
            Some(22)
        );
    }

    #[tokio::test]
    async fn measures_a_real_answer_and_reports_a_refused_port() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let header = format!(
            "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 2\r\n\r\n",
            "a".repeat(17_000)
        );
        let served = header.clone();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            s.write_all(served.as_bytes()).await.unwrap();
            s.write_all(b"ok").await.unwrap();
        });
        let answer = request("127.0.0.1", port, "/", "127.0.0.1", Duration::from_secs(5)).await;
        assert_eq!(answer.status, Some(200), "{answer:?}");
        assert_eq!(answer.header_bytes, Some(header.len() as u64));
        assert!(!answer.metrics);

        let closed = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap().port()
        };
        let refused = request("127.0.0.1", closed, "/", "x", Duration::from_secs(2)).await;
        assert_eq!(refused.status, None);
        assert!(refused.error.is_some());
    }
}
