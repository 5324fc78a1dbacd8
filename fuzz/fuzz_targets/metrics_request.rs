//! The metrics endpoint's request reader: the input is what a local client sends, over a real
//! loopback connection to `daemon::metrics::serve`. No input may panic the server, and a client
//! that has sent its bytes and closed its side gets a well-formed answer (or a reset, when the
//! server answered before reading everything) well before any timeout.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nginx_medic::daemon::metrics::{self, SharedMetrics};
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

/// Far longer than a loopback exchange takes; reaching it is the failure looked for.
const TIMEOUT: Duration = Duration::from_secs(3);

struct Endpoint {
    runtime: Runtime,
    addr: SocketAddr,
}

fn endpoint() -> &'static Endpoint {
    static ENDPOINT: OnceLock<Endpoint> = OnceLock::new();
    ENDPOINT.get_or_init(|| {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => panic!("cannot start a runtime: {e}"),
        };
        let addr = runtime.block_on(async {
            let listener = match metrics::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await {
                Ok(listener) => listener,
                Err(e) => panic!("cannot listen on loopback: {e}"),
            };
            let addr = match listener.local_addr() {
                Ok(addr) => addr,
                Err(e) => panic!("no local address: {e}"),
            };
            let shared = SharedMetrics::default();
            {
                let mut m = shared.lock();
                m.incident("127.0.0.1:8000", "backend-down");
                m.probe_ok("api", 1_700_000_000.0);
            }
            // runs whenever the runtime is driven, that is during each exchange below
            tokio::spawn(metrics::serve(listener, shared));
            addr
        });
        Endpoint { runtime, addr }
    })
}

async fn exchange(addr: SocketAddr, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(data).await?;
    stream.shutdown().await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    Ok(answer)
}

fuzz_target!(|data: &[u8]| {
    let endpoint = endpoint();
    endpoint.runtime.block_on(async {
        let outcome = tokio::time::timeout(TIMEOUT, exchange(endpoint.addr, data)).await;
        let Ok(outcome) = outcome else {
            panic!("no answer within {TIMEOUT:?}");
        };
        // a reset: the server answered and closed before reading all the input
        let Ok(answer) = outcome else {
            return;
        };
        let text = String::from_utf8_lossy(&answer);
        let known = [
            "HTTP/1.1 200 OK\r\n",
            "HTTP/1.1 404 Not Found\r\n",
            "HTTP/1.1 405 Method Not Allowed\r\n",
        ];
        assert!(
            known.iter().any(|k| text.starts_with(k)) && text.contains("\r\n\r\n"),
            "answer {text:?}"
        );
    });
});
