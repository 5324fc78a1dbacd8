//! `reproduction.*`: what nginx-medic's own request through nginx (`facts::reproduce`) showed
//! for one target. A class is reproduced for the target only when a line that request caused
//! names the target's own endpoint with that class: the same cause for the same upstream. Any
//! other outcome (no line, another cause, another upstream, no answer, an unreadable log) is
//! not a reproduction, and the playbooks that edit on log evidence stay inconclusive.

use crate::facts::error_log::{LogClass, LogEntry};
use crate::facts::mapping::{Endpoint, Route};
use crate::facts::reproduce::Reproduction;
use crate::facts::Facts;
use crate::playbook::context::{recent_classes, ReproductionContext};

/// The reproduction of the target's site location (its probe URL and `Host`), when one was
/// tried.
pub fn of(facts: &Facts, route: &Route, endpoint: &Endpoint) -> Option<ReproductionContext> {
    let url = super::context::site_url(route);
    let tried = facts
        .reproductions
        .iter()
        .find(|r| r.url == url && r.host == route.aim.host)?;
    Some(context(tried, &endpoint.address))
}

/// The context of one reproduction for the endpoint `address`.
pub fn context(tried: &Reproduction, address: &str) -> ReproductionContext {
    let mine = |e: &&LogEntry| e.upstream_addr.as_deref() == Some(address);
    let reproduced = recent_classes()
        .map(|c| (c, tried.lines.iter().filter(mine).any(|e| e.class == c)))
        .collect();
    ReproductionContext {
        url: if tried.requested.is_empty() {
            tried.url.clone()
        } else {
            tried.requested.clone()
        },
        status: tried.status,
        reproduced,
        outcome: outcome(tried, address),
    }
}

/// What came of the request, in words: `it got 502, and nginx logged "…" from ADDRESS for it`.
fn outcome(tried: &Reproduction, address: &str) -> String {
    let answer = match (tried.status, &tried.error) {
        (Some(code), _) => format!("it got {code}"),
        (None, Some(why)) if tried.requested.is_empty() => return why.clone(),
        (None, Some(why)) => format!("nginx did not answer it ({why})"),
        (None, None) => "nginx did not answer it".to_string(),
    };
    if let Some(why) = &tried.log_error {
        return format!("{answer}, but the error log could not be read after it: {why}");
    }
    let failures: Vec<&LogEntry> = tried
        .lines
        .iter()
        .filter(|e| e.class != LogClass::Other)
        .collect();
    let (mine, others): (Vec<&LogEntry>, Vec<&LogEntry>) = failures
        .into_iter()
        .partition(|e| e.upstream_addr.as_deref() == Some(address));
    let said = |e: &LogEntry| match &e.upstream_addr {
        Some(a) => format!("\"{}\" from {a}", e.message),
        None => format!("\"{}\"", e.message),
    };
    if !mine.is_empty() {
        let lines: Vec<String> = mine.iter().map(|e| said(e)).collect();
        return format!("{answer}, and nginx logged {} for it", lines.join(", "));
    }
    if !others.is_empty() {
        let lines: Vec<String> = others.iter().map(|e| said(e)).collect();
        return format!(
            "{answer}, and nginx logged {} for it, not a failure of {address}",
            lines.join(", ")
        );
    }
    format!("{answer}, and nginx logged no failure for it: the logged failure did not reproduce")
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: &str = "GET /?nginx-medic-probe=0123456789abcdef0123456789abcdef HTTP/1.1";

    fn line(message: &str, upstream: &str) -> LogEntry {
        let text = format!(
            "2026/12/01 18:00:00 [error] 7#7: *3 {message} while reading response header from upstream, client: 127.0.0.1, server: big.lab, request: \"{OWN}\", upstream: \"http://{upstream}/\", host: \"big.lab\""
        );
        crate::facts::error_log::classify_line(&text).unwrap()
    }

    fn tried(status: Option<u16>, lines: Vec<LogEntry>) -> Reproduction {
        Reproduction {
            url: "http://127.0.0.1:18000/".into(),
            host: Some("big.lab".into()),
            requested: "http://127.0.0.1:18000/?nginx-medic-probe=0123456789abcdef0123456789abcdef"
                .into(),
            request_line: OWN.into(),
            status,
            error: None,
            lines,
            log_error: None,
        }
    }

    const TOO_BIG: &str = "upstream sent too big header";
    const ADDRESS: &str = "127.0.0.1:18010";

    #[test]
    fn the_same_cause_for_the_same_upstream_is_a_reproduction() {
        let c = context(&tried(Some(502), vec![line(TOO_BIG, ADDRESS)]), ADDRESS);
        assert!(c.reproduced[&LogClass::TooBigHeader]);
        assert!(!c.reproduced[&LogClass::TimedOut]);
        assert_eq!(
            c.outcome,
            "it got 502, and nginx logged \"upstream sent too big header while reading response header from upstream\" from 127.0.0.1:18010 for it"
        );
        assert!(c
            .url
            .ends_with("?nginx-medic-probe=0123456789abcdef0123456789abcdef"));
    }

    #[test]
    fn no_line_is_no_reproduction() {
        let c = context(&tried(Some(200), Vec::new()), ADDRESS);
        assert!(c.reproduced.values().all(|r| !r), "{c:?}");
        assert_eq!(
            c.outcome,
            "it got 200, and nginx logged no failure for it: the logged failure did not reproduce"
        );
    }

    #[test]
    fn another_cause_or_another_upstream_is_no_reproduction() {
        let timed_out = line("upstream timed out (110: Connection timed out)", ADDRESS);
        let c = context(&tried(Some(504), vec![timed_out]), ADDRESS);
        assert!(!c.reproduced[&LogClass::TooBigHeader]);
        assert!(c.reproduced[&LogClass::TimedOut]);
        let elsewhere = context(
            &tried(Some(502), vec![line(TOO_BIG, "127.0.0.1:18099")]),
            ADDRESS,
        );
        assert!(!elsewhere.reproduced[&LogClass::TooBigHeader]);
        assert_eq!(
            elsewhere.outcome,
            "it got 502, and nginx logged \"upstream sent too big header while reading response header from upstream\" from 127.0.0.1:18099 for it, not a failure of 127.0.0.1:18010"
        );
    }

    #[test]
    fn no_answer_or_no_log_is_no_reproduction() {
        let mut silent = tried(None, Vec::new());
        silent.error = Some("no status line within 5000 ms".into());
        let c = context(&silent, ADDRESS);
        assert!(!c.reproduced[&LogClass::TooBigHeader]);
        assert_eq!(
            c.outcome,
            "nginx did not answer it (no status line within 5000 ms), and nginx logged no failure for it: the logged failure did not reproduce"
        );
        let mut unread = tried(Some(502), Vec::new());
        unread.log_error = Some("`/var/log/nginx/error.log`: permission denied".into());
        assert!(context(&unread, ADDRESS)
            .outcome
            .contains("the error log could not be read after it"));
        let not_sent = Reproduction::not_tried(
            &crate::facts::reproduce::Request {
                url: "http://127.0.0.1:18000/".into(),
                host: None,
                not_aimed: None,
            },
            "not sent: no literal name".into(),
        );
        let c = context(&not_sent, ADDRESS);
        assert_eq!(c.outcome, "not sent: no literal name");
        assert_eq!(c.url, "http://127.0.0.1:18000/");
    }
}
