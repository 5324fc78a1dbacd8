//! Reproductions: a failure that only the error log shows (a cause nginx-medic would edit nginx's
//! files for) is tried again with nginx-medic's own request before anything is planned. The
//! request goes through nginx to the site's probe URL (`site.url`, aimed as `facts::aim` aims
//! it) with a random token in its query, `?nginx-medic-probe=TOKEN`; nginx writes the request
//! line into the error line's `request: "…"` field, so the line the request caused is the one
//! whose request field is exactly that request line. The token is fresh for each request and
//! never written anywhere before the request is sent, so no client can have logged it; the log
//! is read only from its size before the request. Which requests to make and which lines are the
//! request's own are decided here, purely; the request and the log read are `gather`'s.

use super::error_log::{LogClass, LogEntry};
use super::Facts;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The classes whose only evidence is log lines while a shipped playbook edits nginx's files
/// for them (too-big-header raises the buffers). A site with a line of one of them is
/// reproduced. (A timeout is not: reproducing it holds a request for the whole read timeout,
/// 60 s by default, so upstream-timeout only reports.)
pub const LOG_ONLY_CAUSES: [LogClass; 1] = [LogClass::TooBigHeader];

/// The query parameter that carries the token.
pub const TOKEN_PARAM: &str = "nginx-medic-probe";

/// At most this many reproductions per snapshot (each is one request with a short timeout);
/// the sites past it are reported as not tried.
pub const MAX_REPRODUCTIONS: usize = 8;

/// One reproduction to try: a site location's probe URL and the `Host` that reaches its block.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Request {
    /// `site.url`: the site's probe URL, without the token.
    pub url: String,
    pub host: Option<String>,
    /// Why no request can reach the site's block (`aim.not_aimed`): none is sent.
    pub not_aimed: Option<String>,
}

/// One reproduction and what came of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reproduction {
    /// `site.url`: the site's probe URL, without the token.
    pub url: String,
    pub host: Option<String>,
    /// The URL requested: `url` with the token (empty when nothing was sent).
    pub requested: String,
    /// The request line nginx logs for it (`GET /?nginx-medic-probe=… HTTP/1.1`).
    pub request_line: String,
    /// nginx's answer, when a status line came back.
    pub status: Option<u16>,
    /// Why there is no answer, or why nothing was sent.
    pub error: Option<String>,
    /// The error-log lines written after the request whose request field is exactly
    /// `request_line`: the lines the request itself caused.
    pub lines: Vec<LogEntry>,
    /// Why the error log could not be read after the request.
    pub log_error: Option<String>,
}

impl Reproduction {
    /// A reproduction that was not tried, and why.
    pub fn not_tried(request: &Request, why: String) -> Self {
        Reproduction {
            url: request.url.clone(),
            host: request.host.clone(),
            requested: String::new(),
            request_line: String::new(),
            status: None,
            error: Some(why),
            lines: Vec::new(),
            log_error: None,
        }
    }
}

/// The reproductions worth trying for this snapshot: one per site location (probe URL and
/// `Host`) with a listening endpoint that the error log names with a [`LOG_ONLY_CAUSES`] line.
pub fn requests(facts: &Facts) -> Vec<Request> {
    let named: BTreeSet<&str> = facts
        .error_log
        .ok()
        .map_or(&[][..], |l| l.entries.as_slice())
        .iter()
        .filter(|e| LOG_ONLY_CAUSES.contains(&e.class))
        .filter_map(|e| e.upstream_addr.as_deref())
        .collect();
    if named.is_empty() {
        return Vec::new();
    }
    let out: BTreeSet<Request> = facts
        .routes
        .iter()
        .filter(|r| {
            r.endpoints
                .iter()
                .any(|e| e.listening && named.contains(e.address.as_str()))
        })
        .map(|r| Request {
            url: super::aim::probe_url(&r.aim, &r.location),
            host: r.aim.host.clone(),
            not_aimed: r.aim.not_aimed.clone(),
        })
        .collect();
    out.into_iter().collect()
}

/// A fresh token: 16 random bytes from the OS, in lowercase hex.
pub fn token() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| format!("the OS gave no random bytes: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `url` with the token added to its query.
pub fn with_token(url: &str, token: &str) -> String {
    let join = if url.contains('?') { '&' } else { '?' };
    format!("{url}{join}{TOKEN_PARAM}={token}")
}

/// The request line the probe sends for `url` and nginx logs: `GET PATH HTTP/1.1`.
pub fn request_line(url: &str) -> Result<String, String> {
    let parsed = crate::adapters::probe::HttpUrl::parse_probe(url).map_err(|e| e.to_string())?;
    Ok(format!("GET {} HTTP/1.1", parsed.path))
}

/// Whether an error-log line is the request's own: its request field, at nginx's fixed
/// position, is exactly `request_line` (text elsewhere on the line, a Referer or a Host that
/// holds the token, does not count).
pub fn is_own(request: Option<&str>, request_line: &str) -> bool {
    !request_line.is_empty() && request == Some(request_line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_fresh_hex_and_goes_into_the_query() {
        let (a, b) = (token().unwrap(), token().unwrap());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_ne!(a, b);
        assert_eq!(
            with_token("http://127.0.0.1:8080/", "ab12"),
            "http://127.0.0.1:8080/?nginx-medic-probe=ab12"
        );
        assert_eq!(
            with_token("http://127.0.0.1:8080/a?x=1", "ab12"),
            "http://127.0.0.1:8080/a?x=1&nginx-medic-probe=ab12"
        );
        assert_eq!(
            request_line("http://127.0.0.1:8080/api?nginx-medic-probe=ab12").unwrap(),
            "GET /api?nginx-medic-probe=ab12 HTTP/1.1"
        );
    }

    #[test]
    fn only_the_request_field_at_its_place_makes_a_line_the_requests_own() {
        let own = "GET /?nginx-medic-probe=ab12 HTTP/1.1";
        let line = |request: &str, referrer: &str| {
            let text = format!(
                "2026/12/01 18:00:00 [error] 7#7: *3 upstream sent too big header while reading response header from upstream, client: 127.0.0.1, server: big.lab, request: \"{request}\", upstream: \"http://127.0.0.1:8000/\", host: \"big.lab\", referrer: \"{referrer}\""
            );
            crate::facts::error_log::classify_line(&text)
                .unwrap()
                .request
        };
        assert!(is_own(line(own, "-").as_deref(), own));
        // the token elsewhere: in the Referer, or inside a longer request line
        assert!(!is_own(line("GET / HTTP/1.1", own).as_deref(), own));
        assert!(!is_own(
            line("GET /x?nginx-medic-probe=ab12 HTTP/1.1", "-").as_deref(),
            own
        ));
        assert!(!is_own(line(&format!("{own}x"), "-").as_deref(), own));
        assert!(
            !is_own(line(own, "-").as_deref(), ""),
            "nothing sent, nothing is own"
        );
    }
}
