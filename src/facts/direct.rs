//! Backends requested directly, not through nginx, before anything is planned: the candidate
//! port of a pass target nothing listens on (it must answer, and not as a metrics endpoint) and
//! the response header block of a backend nginx logs `too big header` for (what its
//! `*_buffer_size` must hold). Which requests to make is decided here, purely; the requests
//! themselves are `adapters::backend_http`'s.

use super::error_log::LogClass;
use super::mapping::{Endpoint, Route};
use super::nginx::Target;
use super::Facts;
use crate::config::UpstreamAddr;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// What a backend answered to one direct `GET`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectAnswer {
    /// The status code, when a status line came back.
    pub status: Option<u16>,
    /// The bytes of the status line and headers with the blank line that ends them.
    pub header_bytes: Option<u64>,
    /// The body opens like a Prometheus exposition (`# HELP`, `# TYPE`).
    pub metrics: bool,
    /// Why there is no answer (refused, timed out, malformed).
    pub error: Option<String>,
}

impl DirectAnswer {
    /// No answer, for this reason.
    pub fn failed(error: String) -> Self {
        DirectAnswer {
            status: None,
            header_bytes: None,
            metrics: false,
            error: Some(error),
        }
    }

    /// Reads an answer: `raw` holds the header block (`header_end` bytes) and the start of
    /// the body.
    pub fn of(raw: &[u8], header_end: Option<usize>) -> Self {
        let Some(end) = header_end else {
            return Self::failed("the answer has no complete header block".into());
        };
        let head = String::from_utf8_lossy(raw.get(..end).unwrap_or_default()).into_owned();
        let status = head.lines().next().and_then(|line| {
            let mut words = line.split_whitespace();
            let version = words.next()?;
            let code = words.next()?;
            (version.starts_with("HTTP/1.") && code.len() == 3)
                .then(|| code.parse::<u16>().ok())
                .flatten()
        });
        let body = String::from_utf8_lossy(raw.get(end..).unwrap_or_default()).into_owned();
        let opening = body.trim_start();
        let exposition = head.to_ascii_lowercase().lines().any(|l| {
            l.strip_prefix("content-type:")
                .is_some_and(|v| v.contains("version=0.0.4") || v.contains("openmetrics"))
        });
        DirectAnswer {
            status,
            header_bytes: u64::try_from(end).ok(),
            metrics: exposition || opening.starts_with("# HELP") || opening.starts_with("# TYPE"),
            error: status
                .is_none()
                .then(|| "the answer has no valid status line".into()),
        }
    }

    /// An answer a site can be pointed at: it answered (not refused, not 5xx) and is not a
    /// metrics endpoint. `Err` says why not.
    pub fn viable(&self) -> Result<(), String> {
        match self.status {
            None => Err(self.error.clone().unwrap_or_else(|| "no answer".into())),
            Some(code) if code >= 500 => Err(format!("it answers {code}")),
            Some(_) if self.metrics => {
                Err("its answer is a metrics endpoint (`# HELP` / `# TYPE`)".into())
            }
            Some(_) => Ok(()),
        }
    }
}

/// One direct request and its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendProbe {
    /// `host:port` requested.
    pub address: String,
    /// The request path: what the backend receives for the site's own probe.
    pub path: String,
    pub answer: DirectAnswer,
}

/// One request to make.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Request {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Request {
    /// `host:port`, as endpoints are written.
    pub fn address(&self) -> String {
        UpstreamAddr::Tcp {
            host: self.host.clone(),
            port: self.port,
        }
        .to_string()
    }
}

/// The path the backend receives when the site's own probe (`site.url`) goes through nginx:
/// the pass target's URI when it has one (it replaces the location's prefix), else the
/// location's path. Never a URL taken from the log: that text is the client's.
pub fn backend_path(route: &Route) -> String {
    let raw = &route.pass.raw;
    let uri = raw
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').and_then(|i| rest.get(i..)))
        .unwrap_or("");
    if !uri.is_empty() && !raw.contains("://unix:") {
        uri.to_string()
    } else if route.location.starts_with('/') {
        route.location.clone()
    } else {
        "/".into()
    }
}

/// Whether nginx speaks plain HTTP to this route's backends (`proxy_pass http://…`): only
/// then can the header block nginx reads be measured by a request of ours.
pub fn plain_http(route: &Route) -> bool {
    route.directive == "proxy_pass" && route.pass.raw.starts_with("http://")
}

/// The TCP ports a typo'd pass target may have meant, for an endpoint nothing listens on: every
/// port the evidence of the intended backend names (`Endpoint::meant`: a hint, the last good
/// configuration, the site's identity; two sources naming different ports give both), else each
/// port its unit listens on. Never a port another site dials.
pub fn candidate_ports(endpoint: &Endpoint, dialled: &BTreeSet<u16>) -> Vec<u16> {
    if endpoint.listening || endpoint.unit.is_none() {
        return Vec::new();
    }
    if !endpoint.meant.is_empty() {
        let mut ports: Vec<u16> = endpoint
            .meant
            .iter()
            .flat_map(|m| m.ports.iter().copied())
            .filter(|p| !dialled.contains(p))
            .collect();
        ports.sort_unstable();
        ports.dedup();
        return ports;
    }
    let mut ports: Vec<u16> = endpoint
        .unit_listeners
        .iter()
        .filter_map(|l| match UpstreamAddr::parse(l)? {
            UpstreamAddr::Tcp { port, .. } => Some(port),
            UpstreamAddr::Unix { .. } => None,
        })
        .filter(|p| !dialled.contains(p))
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Every TCP port a pass target of the snapshot dials.
pub fn dialled_ports(facts: &Facts) -> BTreeSet<u16> {
    facts
        .routes
        .iter()
        .flat_map(|r| r.endpoints.iter())
        .filter_map(|e| match UpstreamAddr::parse(&e.address)? {
            UpstreamAddr::Tcp { port, .. } => Some(port),
            UpstreamAddr::Unix { .. } => None,
        })
        .collect()
}

/// The requests worth making for this snapshot: each candidate port of an endpoint nothing
/// listens on (at the endpoint's host), and each plain-HTTP backend nginx logged `too big
/// header` for. Both at the path the site's own probe reaches the backend with.
pub fn requests(facts: &Facts) -> Vec<Request> {
    let dialled = dialled_ports(facts);
    let too_big: BTreeSet<&str> = facts
        .error_log
        .ok()
        .map_or(&[][..], |l| l.entries.as_slice())
        .iter()
        .filter(|e| e.class == LogClass::TooBigHeader)
        .filter_map(|e| e.upstream_addr.as_deref())
        .collect();
    let mut out = BTreeSet::new();
    for route in facts
        .routes
        .iter()
        .filter(|r| matches!(r.pass.target, Target::Tcp { .. } | Target::Upstream { .. }))
    {
        let path = backend_path(route);
        for endpoint in &route.endpoints {
            let Some(UpstreamAddr::Tcp { host, port }) = UpstreamAddr::parse(&endpoint.address)
            else {
                continue;
            };
            for candidate in candidate_ports(endpoint, &dialled) {
                out.insert(Request {
                    host: host.clone(),
                    port: candidate,
                    path: path.clone(),
                });
            }
            if endpoint.listening
                && plain_http(route)
                && too_big.contains(endpoint.address.as_str())
            {
                out.insert(Request {
                    host: host.clone(),
                    port,
                    path: path.clone(),
                });
            }
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(raw: &str) -> DirectAnswer {
        let end = crate::adapters::backend_http::end_of_header_block(raw.as_bytes());
        DirectAnswer::of(raw.as_bytes(), end)
    }

    #[test]
    fn a_candidate_must_answer_and_not_as_a_metrics_endpoint() {
        let app = answer("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        assert_eq!(app.viable(), Ok(()));
        assert_eq!(app.header_bytes, Some(38));
        assert_eq!(answer("HTTP/1.1 404 Not Found\r\n\r\n").viable(), Ok(()));
        assert_eq!(
            answer("HTTP/1.1 502 Bad Gateway\r\n\r\n").viable(),
            Err("it answers 502".into())
        );
        let metrics = answer("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n# HELP up 1\n");
        assert!(metrics.metrics);
        assert!(metrics.viable().is_err());
        assert!(answer("HTTP/1.1 200 OK\r\n\r\n\n# TYPE x counter\n").metrics);
        assert!(
            answer("HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\r\nx 1\n")
                .metrics
        );
        assert!(DirectAnswer::failed("cannot connect".into())
            .viable()
            .is_err());
        assert!(answer("garbage\r\n\r\n").viable().is_err());
    }
}
