//! HTTP response heads, as the probe and the direct backend request read them. The input is
//! what a server answers: it is parsed in memory (`end_of_header_block`, `DirectAnswer::of`) and
//! sent over a loopback connection to the real readers (`probe::probe_http`, the status line;
//! `backend_http::request`, the header block). No input may panic, the direct request must read
//! the status the in-memory parse reads, and every exchange must end well before its timeout:
//! the server closes after answering, so a reader still waiting is a reader that would hang on
//! a hostile backend.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nginx_medic::adapters::{backend_http, probe};
use nginx_medic::facts::direct::DirectAnswer;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

/// Far longer than a loopback exchange takes; reaching it is the failure looked for.
const TIMEOUT: Duration = Duration::from_secs(3);

struct Server {
    runtime: Runtime,
    listener: TcpListener,
    port: u16,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => panic!("cannot start a runtime: {e}"),
        };
        let listener = match runtime.block_on(TcpListener::bind("127.0.0.1:0")) {
            Ok(listener) => listener,
            Err(e) => panic!("cannot listen on loopback: {e}"),
        };
        let port = match listener.local_addr() {
            Ok(addr) => addr.port(),
            Err(e) => panic!("no local address: {e}"),
        };
        Server {
            runtime,
            listener,
            port,
        }
    })
}

/// Accepts one connection, reads the request head, answers `data` and closes.
async fn answer_once(listener: &TcpListener, data: &[u8]) {
    let Ok((mut stream, _)) = listener.accept().await else {
        return;
    };
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(buf.get(..n).unwrap_or_default()),
        }
    }
    // the reader may stop early and close: a failed write is its right
    let _ = stream.write_all(data).await;
    let _ = stream.shutdown().await;
}

fuzz_target!(|data: &[u8]| {
    let end = backend_http::end_of_header_block(data);
    if let Some(end) = end {
        assert!(end <= data.len());
    }
    let answer = DirectAnswer::of(data, end);
    let _ = answer.viable();

    let server = server();
    let url = format!("http://127.0.0.1:{}/", server.port);
    server.runtime.block_on(async {
        let (_, probed) = tokio::join!(
            answer_once(&server.listener, data),
            probe::probe_http(&url, TIMEOUT)
        );
        if let Some(code) = probed.status {
            assert!((100..=599).contains(&code), "status {code}");
            assert!(
                data.starts_with(b"HTTP/1."),
                "a status from {:?}",
                String::from_utf8_lossy(data)
            );
        }
        assert!(
            Duration::from_millis(probed.elapsed_ms) < TIMEOUT,
            "the probe waited for its timeout: {:?}",
            probed.error
        );

        let (_, direct) = tokio::join!(
            answer_once(&server.listener, data),
            backend_http::request("127.0.0.1", server.port, "/", "127.0.0.1", TIMEOUT)
        );
        // the reader stops once it holds the header block: it must read the status the
        // in-memory parse of the whole answer reads
        assert_eq!(
            direct.status,
            answer.status,
            "the direct request and the in-memory parse disagree on {:?}",
            String::from_utf8_lossy(data)
        );
        let late = direct
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("no complete header block"));
        assert!(!late, "the direct request waited for its timeout");
    });
});
