//! The daemon's counters and the Prometheus text endpoint (`GET /metrics` on a loopback
//! address, a hand-written HTTP/1.1 answer with `Connection: close`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Upper bounds of the time-to-heal histogram, in seconds.
pub const HEAL_BUCKETS: [f64; 10] = [0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

/// Everything the endpoint reports.
#[derive(Debug, Default)]
pub struct Metrics {
    incidents: BTreeMap<(String, String), u64>,
    actions: BTreeMap<(String, String), u64>,
    heal_buckets: [u64; HEAL_BUCKETS.len()],
    heal_count: u64,
    heal_sum: f64,
    rate_limited: u64,
    escalations: u64,
    last_probe: BTreeMap<String, f64>,
    paused: Vec<String>,
}

/// The metrics, shared between the loop and the endpoint.
#[derive(Debug, Clone, Default)]
pub struct SharedMetrics(Arc<Mutex<Metrics>>);

impl SharedMetrics {
    /// Locks the metrics; a panic elsewhere while holding the lock does not lose them.
    pub fn lock(&self) -> MutexGuard<'_, Metrics> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Metrics {
    /// A new incident on `target` with `cause`.
    pub fn incident(&mut self, target: &str, cause: &str) {
        *self
            .incidents
            .entry((target.into(), cause.into()))
            .or_default() += 1;
    }

    /// One action ran (or was skipped, not run, rolled back).
    pub fn action(&mut self, kind: &str, outcome: &str) {
        *self
            .actions
            .entry((kind.into(), outcome.into()))
            .or_default() += 1;
    }

    /// A heal took `took`, from the incident opening to the verified outcome.
    pub fn healed_in(&mut self, took: Duration) {
        let secs = took.as_secs_f64();
        for (bucket, le) in self.heal_buckets.iter_mut().zip(HEAL_BUCKETS) {
            if secs <= le {
                *bucket += 1;
            }
        }
        self.heal_count += 1;
        self.heal_sum += secs;
    }

    /// A remediation was refused by the rate limit.
    pub fn rate_limited(&mut self) {
        self.rate_limited += 1;
    }

    /// An escalation was sent.
    pub fn escalated(&mut self) {
        self.escalations += 1;
    }

    /// A probe of `site` through nginx answered below 500, at `unix_seconds`.
    pub fn probe_ok(&mut self, site: &str, unix_seconds: f64) {
        self.last_probe.insert(site.into(), unix_seconds);
    }

    /// The names paused now (`*`: the whole host), replacing the previous set.
    pub fn set_paused(&mut self, names: Vec<String>) {
        self.paused = names;
    }

    /// The Prometheus text exposition format, version 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::new();
        header(
            &mut out,
            "nginx_medic_incidents_total",
            "counter",
            "Incidents opened, by target (upstream address) and cause (playbook id).",
        );
        for ((target, cause), n) in &self.incidents {
            let _ = writeln!(
                out,
                "nginx_medic_incidents_total{{target=\"{}\",cause=\"{}\"}} {n}",
                escape(target),
                escape(cause)
            );
        }
        header(
            &mut out,
            "nginx_medic_actions_total",
            "counter",
            "Plan steps run, by kind and outcome (ok, failed, skipped, rolled_back, not_run).",
        );
        for ((kind, outcome), n) in &self.actions {
            let _ = writeln!(
                out,
                "nginx_medic_actions_total{{kind=\"{}\",outcome=\"{}\"}} {n}",
                escape(kind),
                escape(outcome)
            );
        }
        header(
            &mut out,
            "nginx_medic_heal_seconds",
            "histogram",
            "Time from an incident opening to its verified heal.",
        );
        for (le, n) in HEAL_BUCKETS.iter().zip(self.heal_buckets) {
            let _ = writeln!(out, "nginx_medic_heal_seconds_bucket{{le=\"{le}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "nginx_medic_heal_seconds_bucket{{le=\"+Inf\"}} {}",
            self.heal_count
        );
        let _ = writeln!(out, "nginx_medic_heal_seconds_sum {}", self.heal_sum);
        let _ = writeln!(out, "nginx_medic_heal_seconds_count {}", self.heal_count);
        header(
            &mut out,
            "nginx_medic_rate_limited_total",
            "counter",
            "Remediations refused by the per-target rate limit.",
        );
        let _ = writeln!(out, "nginx_medic_rate_limited_total {}", self.rate_limited);
        header(
            &mut out,
            "nginx_medic_escalations_total",
            "counter",
            "Escalations sent (crash loop, unit restarts, rate limit, circuit breaker).",
        );
        let _ = writeln!(out, "nginx_medic_escalations_total {}", self.escalations);
        header(
            &mut out,
            "nginx_medic_last_successful_probe_timestamp_seconds",
            "gauge",
            "Unix time of the last probe through nginx that answered below 500, by site.",
        );
        for (site, ts) in &self.last_probe {
            let _ = writeln!(
                out,
                "nginx_medic_last_successful_probe_timestamp_seconds{{site=\"{}\"}} {ts:.3}",
                escape(site)
            );
        }
        header(
            &mut out,
            "nginx_medic_paused",
            "gauge",
            "1 for each unit or upstream paused by `nginx-medic pause` now (`*`: the whole host).",
        );
        for name in &self.paused {
            let _ = writeln!(out, "nginx_medic_paused{{unit=\"{}\"}} 1", escape(name));
        }
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value as the text format wants it: `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Binds the endpoint (failing now, not later, when the address is taken).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `GET /metrics` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: SharedMetrics) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let answered =
                tokio::time::timeout(Duration::from_secs(5), answer(stream, &metrics)).await;
            if let Ok(Err(e)) = answered {
                tracing::debug!(error = %e, "metrics endpoint: request failed");
            }
        });
    }
}

/// Longest request head read.
const MAX_HEAD: usize = 8 * 1024;

async fn answer(mut stream: TcpStream, metrics: &SharedMetrics) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(buf.get(..n).unwrap_or(&[]));
    }
    let line = String::from_utf8_lossy(&head);
    let request = line.lines().next().unwrap_or("");
    let mut parts = request.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.lock().render(),
        ),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found; try /metrics\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET\n".to_string(),
        ),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        response.push_str(&body);
    }
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_text_format() {
        let mut m = Metrics::default();
        m.incident("127.0.0.1:8000", "backend-down");
        m.incident("127.0.0.1:8000", "backend-down");
        m.action("systemd", "ok");
        m.healed_in(Duration::from_millis(800));
        m.rate_limited();
        m.probe_ok("api \"lab\"", 1_700_000_000.5);
        m.set_paused(vec!["*".into(), "api.service".into()]);
        let text = m.render();
        assert!(text.contains(
            "nginx_medic_paused{unit=\"*\"} 1\nnginx_medic_paused{unit=\"api.service\"} 1\n"
        ));
        assert!(text.contains(
            "nginx_medic_incidents_total{target=\"127.0.0.1:8000\",cause=\"backend-down\"} 2\n"
        ));
        assert!(text.contains("nginx_medic_actions_total{kind=\"systemd\",outcome=\"ok\"} 1\n"));
        assert!(text.contains("nginx_medic_heal_seconds_bucket{le=\"0.5\"} 0\n"));
        assert!(text.contains("nginx_medic_heal_seconds_bucket{le=\"1\"} 1\n"));
        assert!(text.contains("nginx_medic_heal_seconds_bucket{le=\"+Inf\"} 1\n"));
        assert!(text.contains("nginx_medic_heal_seconds_sum 0.8\n"));
        assert!(text.contains("nginx_medic_rate_limited_total 1\n"));
        assert!(text.contains("nginx_medic_escalations_total 0\n"));
        assert!(text.contains(
            "nginx_medic_last_successful_probe_timestamp_seconds{site=\"api \\\"lab\\\"\"} 1700000000.500\n"
        ));
        assert_eq!(text.matches("# TYPE ").count(), 7);
    }

    #[tokio::test]
    async fn serves_get_metrics() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = SharedMetrics::default();
        metrics.lock().escalated();
        let server = tokio::spawn(serve(listener, metrics));
        for (path, want) in [
            ("/metrics", "HTTP/1.1 200 OK"),
            ("/", "HTTP/1.1 404 Not Found"),
        ] {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            assert!(out.starts_with(want), "{out}");
            if path == "/metrics" {
                assert!(out.contains("\r\n\r\n# HELP nginx_medic_incidents_total"));
                assert!(out.contains("nginx_medic_escalations_total 1\n"));
            }
        }
        server.abort();
    }
}
