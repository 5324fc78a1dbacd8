//! The daemon's counters and the metrics endpoint (`GET /metrics` on a loopback address): the
//! values are kept and encoded (OpenMetrics text) by the `prometheus-client` crate; the HTTP/1.1
//! answer, with `Connection: close`, is written here. At most [`MAX_CONNECTIONS`] requests are
//! served at once and each must send its head within [`HEAD_TIMEOUT`]: a local client cannot
//! hold the file descriptors the next backup or rollback needs.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Upper bounds of the time-to-heal histograms, in seconds.
pub const HEAL_BUCKETS: [f64; 12] = [
    0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0,
];

/// Requests served at the same time; one more is closed at once.
pub const MAX_CONNECTIONS: usize = 16;
/// How long a client may take to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(1);
/// How long writing the answer may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// The content type of the OpenMetrics text format that `prometheus-client` writes.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetCause {
    target: String,
    cause: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindOutcome {
    kind: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SiteLabel {
    site: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UnitLabel {
    unit: String,
}

/// Everything the endpoint reports, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    incidents: Family<TargetCause, Counter>,
    actions: Family<KindOutcome, Counter>,
    heal: Histogram,
    incident_heal: Histogram,
    rate_limited: Counter,
    escalations: Counter,
    last_probe: Family<SiteLabel, Gauge<f64, AtomicU64>>,
    paused: Family<UnitLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Self {
            registry: Registry::default(),
            incidents: Family::default(),
            actions: Family::default(),
            heal: Histogram::new(HEAL_BUCKETS),
            incident_heal: Histogram::new(HEAL_BUCKETS),
            rate_limited: Counter::default(),
            escalations: Counter::default(),
            last_probe: Family::default(),
            paused: Family::default(),
        };
        m.registered()
    }
}

impl Metrics {
    fn registered(mut self) -> Self {
        let r = &mut self.registry;
        r.register(
            "nginx_medic_incidents",
            "Incidents opened, by target (upstream address) and cause (playbook id)",
            self.incidents.clone(),
        );
        r.register(
            "nginx_medic_actions",
            "Plan steps run, by kind and outcome (ok, failed, skipped, rolled_back, not_run)",
            self.actions.clone(),
        );
        r.register(
            "nginx_medic_heal_seconds",
            "Time from the first evidence of a fault (the unit's exit, the first failed probe or log line) to its verified heal",
            self.heal.clone(),
        );
        r.register(
            "nginx_medic_incident_heal_seconds",
            "Time from an incident opening to its verified heal",
            self.incident_heal.clone(),
        );
        r.register(
            "nginx_medic_rate_limited",
            "Remediations refused by the per-target rate limit",
            self.rate_limited.clone(),
        );
        r.register(
            "nginx_medic_escalations",
            "Escalations sent (crash loop, unit restarts, rate limit, circuit breaker)",
            self.escalations.clone(),
        );
        r.register(
            "nginx_medic_last_successful_probe_timestamp_seconds",
            "Unix time of the last probe through nginx that answered below 500, by site",
            self.last_probe.clone(),
        );
        r.register(
            "nginx_medic_paused",
            "1 for each unit or upstream paused by `nginx-medic pause` now (`*`: the whole host)",
            self.paused.clone(),
        );
        self
    }

    /// A new incident on `target` with `cause`.
    pub fn incident(&mut self, target: &str, cause: &str) {
        self.incidents
            .get_or_create(&TargetCause {
                target: target.into(),
                cause: cause.into(),
            })
            .inc();
    }

    /// One action ran (or was skipped, not run, rolled back).
    pub fn action(&mut self, kind: &str, outcome: &str) {
        self.actions
            .get_or_create(&KindOutcome {
                kind: kind.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// A heal was verified `from_evidence` after the fault's first evidence and
    /// `from_incident` after its incident opened.
    pub fn healed(&mut self, from_evidence: Duration, from_incident: Duration) {
        self.heal
            .observe(from_evidence.max(from_incident).as_secs_f64());
        self.incident_heal.observe(from_incident.as_secs_f64());
    }

    /// A remediation was refused by the rate limit.
    pub fn rate_limited(&mut self) {
        self.rate_limited.inc();
    }

    /// An escalation was sent.
    pub fn escalated(&mut self) {
        self.escalations.inc();
    }

    /// A probe of `site` through nginx answered below 500, at `unix_seconds`.
    pub fn probe_ok(&mut self, site: &str, unix_seconds: f64) {
        self.last_probe
            .get_or_create(&SiteLabel { site: site.into() })
            .set(unix_seconds);
    }

    /// The names paused now (`*`: the whole host), replacing the previous set.
    pub fn set_paused(&mut self, names: Vec<String>) {
        self.paused.clear();
        for unit in names {
            self.paused.get_or_create(&UnitLabel { unit }).set(1);
        }
    }

    /// The OpenMetrics text exposition format, ending in `# EOF`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // writing to a String cannot fail
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
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

/// Binds the endpoint (failing now, not later, when the address is taken).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `GET /metrics` until the task is dropped, [`MAX_CONNECTIONS`] at a time.
pub async fn serve(listener: TcpListener, metrics: SharedMetrics) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(
                limit = MAX_CONNECTIONS,
                "metrics endpoint: too many connections; closed one"
            );
            drop(stream);
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &metrics).await {
                tracing::debug!(error = %e, "metrics endpoint: request failed");
            }
            drop(slot);
        });
    }
}

/// Longest request head read.
const MAX_HEAD: usize = 8 * 1024;

/// Reads the request head, up to the blank line or [`MAX_HEAD`] bytes.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(buf.get(..n).unwrap_or(&[]));
    }
    Ok(head)
}

fn timed_out(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{what} timed out"))
}

async fn answer(mut stream: TcpStream, metrics: &SharedMetrics) -> std::io::Result<()> {
    let head = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream))
        .await
        .map_err(|_| timed_out("reading the request head"))??;
    let line = String::from_utf8_lossy(&head);
    let request = line.lines().next().unwrap_or("");
    let mut parts = request.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => ("200 OK", CONTENT_TYPE, metrics.lock().render()),
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
    let write = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    };
    tokio::time::timeout(WRITE_TIMEOUT, write)
        .await
        .map_err(|_| timed_out("writing the answer"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_openmetrics_text_format() {
        let mut m = Metrics::default();
        m.incident("127.0.0.1:8000", "backend-down");
        m.incident("127.0.0.1:8000", "backend-down");
        m.action("systemd", "ok");
        m.healed(Duration::from_millis(1400), Duration::from_millis(800));
        m.rate_limited();
        m.probe_ok("api \"lab\"", 1_700_000_000.5);
        m.set_paused(vec!["old".into()]);
        m.set_paused(vec!["*".into(), "api.service".into()]);
        let text = m.render();
        assert!(
            text.contains("nginx_medic_paused{unit=\"*\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("nginx_medic_paused{unit=\"api.service\"} 1\n"));
        assert!(!text.contains("unit=\"old\""), "a pause that ended goes");
        assert!(text.contains(
            "nginx_medic_incidents_total{target=\"127.0.0.1:8000\",cause=\"backend-down\"} 2\n"
        ));
        assert!(text.contains("nginx_medic_actions_total{kind=\"systemd\",outcome=\"ok\"} 1\n"));
        assert!(text.contains("nginx_medic_heal_seconds_bucket{le=\"1.0\"} 0\n"));
        assert!(text.contains("nginx_medic_heal_seconds_bucket{le=\"2.0\"} 1\n"));
        assert!(text.contains("nginx_medic_heal_seconds_sum 1.4\n"));
        assert!(text.contains("nginx_medic_incident_heal_seconds_bucket{le=\"1.0\"} 1\n"));
        assert!(text.contains("nginx_medic_heal_seconds_bucket{le=\"+Inf\"} 1\n"));
        assert!(text.contains("nginx_medic_rate_limited_total 1\n"));
        assert!(text.contains("nginx_medic_escalations_total 0\n"));
        assert!(text.contains(
            "nginx_medic_last_successful_probe_timestamp_seconds{site=\"api \\\"lab\\\"\"} 1700000000.5\n"
        ));
        assert_eq!(text.matches("# TYPE ").count(), 8);
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn the_heal_from_evidence_is_never_shorter_than_from_the_incident() {
        let mut m = Metrics::default();
        m.healed(Duration::ZERO, Duration::from_millis(700));
        assert!(m.render().contains("nginx_medic_heal_seconds_sum 0.7\n"));
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_get_metrics() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = SharedMetrics::default();
        metrics.lock().escalated();
        let server = tokio::spawn(serve(listener, metrics));
        let out = get(addr, "/metrics").await;
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        assert!(out.contains(&format!("Content-Type: {CONTENT_TYPE}\r\n")));
        assert!(
            out.contains("\n# TYPE nginx_medic_escalations counter\n"),
            "{out}"
        );
        assert!(out.ends_with("\n# EOF\n"), "{out}");
        assert!(out.contains("nginx_medic_escalations_total 1\n"));
        assert!(get(addr, "/").await.starts_with("HTTP/1.1 404 Not Found"));
        server.abort();
    }

    #[tokio::test]
    async fn idle_connections_cannot_hold_the_endpoint() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, SharedMetrics::default()));
        // twice the cap, none sending a byte
        let mut idle = Vec::new();
        for _ in 0..2 * MAX_CONNECTIONS {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        // the ones over the cap are closed at once, the others after the head timeout
        let started = std::time::Instant::now();
        for mut s in idle {
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
        }
        let took = started.elapsed();
        assert!(
            took < HEAD_TIMEOUT * 3,
            "idle clients held the endpoint {took:?}"
        );
        assert!(get(addr, "/metrics").await.starts_with("HTTP/1.1 200 OK"));
        server.abort();
    }
}
