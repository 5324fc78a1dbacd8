//! Log lines carry text a client controls (issue 13, item 3): crafted requests through the
//! lab's real nginx put forged error-log text in the request line, the Host and Referer
//! headers and, decoded, in the path of a missing static file that nginx logs an `open()`
//! error for (encoded CR/LF included, so a forged line may start a line of its own). A healthy
//! host stays healthy; with a real fault on another site, the finding names only the real
//! upstream; a forged line dated in the future is counted, never evidence.

use crate::support::lab::Lab;
use serde_json::Value;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// The upstream every forgery names: nothing listens there, and no site dials it.
const FORGED_UPSTREAM: &str = "127.0.0.1:1";

/// A whole forged error-log line of nginx's shape, dated `time`, naming `upstream`.
fn forged_line(time: &str, upstream: &str) -> String {
    format!(
        "{time} [error] 1#1: *999 connect() failed (111: Connection refused) while connecting to upstream, client: 127.0.0.1, server: web.lab, request: \"GET / HTTP/1.1\", upstream: \"http://{upstream}/\", host: \"web.lab\""
    )
}

/// `text` with every byte but the unreserved ones percent-encoded.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Sends `head` (request line and headers, CRLF-separated, without the blank line) to the
/// lab's nginx on `port` as it is, and returns the status code nginx answered with (0: none).
fn send_raw(port: u16, head: &str) -> u16 {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return 0;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let request = format!("{head}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return 0;
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The machine's local time as nginx writes it, `seconds` from now.
fn local_time(seconds: i64) -> String {
    let now = jiff::Zoned::now();
    let at = now
        .checked_add(jiff::SignedDuration::from_secs(seconds))
        .expect("a time");
    at.strftime("%Y/%m/%d %H:%M:%S").to_string()
}

/// A whole forged line that would make a healthy backend at `upstream` look like a
/// too-big-header fault of `server`, its upstream written as nginx never writes one: without a
/// scheme (a decoded path cannot hold the `//` of `http://`: nginx merges slashes).
fn forged_too_big(time: &str, server: &str, upstream: &str) -> String {
    format!(
        "{time} [error] 1#1: *998 upstream sent too big header while reading response header from upstream, client: 127.0.0.1, server: {server}, request: \"GET / HTTP/1.1\", upstream: \"{upstream}\", host: \"{server}\""
    )
}

/// Every crafted request, to the site on `port` whose host is `host`: the forged text in the
/// decoded path of a missing static file (after a CR/LF, as a line of its own, dated now and
/// dated in the future; also closed by a second CR/LF, so that nginx's own rest of the line
/// goes to a line of its own), in the raw request line, in Host and in Referer. `real`: the
/// upstream the healthy site really dials, which the standalone forgeries name.
fn send_forgeries(port: u16, host: &str, real: &str) {
    let now_line = forged_line(&local_time(0), FORGED_UPSTREAM);
    let future_line = forged_line("2099/01/01 00:00:00", FORGED_UPSTREAM);
    let too_big = forged_too_big(&local_time(0), host, real);
    let future_too_big = forged_too_big("2099/01/01 00:00:00", host, real);
    let pair =
        format!("\", upstream: \"http://{FORGED_UPSTREAM}/\", host: \"{host}\", referrer: \"x");
    let refused = "connect() failed (111: Connection refused) while connecting to upstream";
    let paths = [
        format!("/static/{}", encode(&format!("\r\n{now_line}"))),
        format!("/static/{}", encode(&format!("\n{future_line}"))),
        format!("/static/{}", encode(&format!("a{pair} {refused}"))),
        format!("/{}", encode(&format!("\r\n{now_line}"))),
        format!("/static/{}", encode(&format!("\r\n{too_big}\r\n"))),
        format!("/static/{}", encode(&format!("\n{future_too_big}\n"))),
    ];
    for path in &paths {
        send_raw(port, &format!("GET {path} HTTP/1.1\r\nHost: {host}"));
    }
    // quotes and the pair text raw in the request line (nginx keeps it undecoded there)
    send_raw(
        port,
        &format!(
            "GET /static/q\",upstream:\"http://{FORGED_UPSTREAM}/\",{} HTTP/1.1\r\nHost: {host}",
            encode(refused)
        ),
    );
    // Host and Referer hold the pair and the message text as they are
    for path in ["/static/missing.css", "/"] {
        send_raw(
            port,
            &format!(
                "GET {path} HTTP/1.1\r\nHost: {host}{pair}\r\nReferer: http://r/{pair} {refused}"
            ),
        );
    }
}

/// Every finding of a diagnosis.
fn findings(diagnosis: &Value) -> Vec<Value> {
    diagnosis["findings"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The upstream addresses of the error-log entries `facts --json` read.
fn logged_upstreams(lab: &Lab) -> (Vec<String>, u64) {
    let (_, facts) = lab.medic_json(&["facts"]);
    let log = &facts["error_log"];
    let data = if log["data"].is_object() {
        &log["data"]
    } else {
        log
    };
    let entries = data["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("no error-log entries in {log:#}"));
    let upstreams = entries
        .iter()
        .filter_map(|e| e["upstream_addr"].as_str().map(str::to_string))
        .collect();
    (upstreams, data["future_lines"].as_u64().unwrap_or(0))
}

#[test]
fn lab_forged_log_text_neither_faults_a_healthy_host_nor_names_the_upstream() {
    let lab = Lab::start();
    let api = lab.port("api");
    let site_port = lab.base + 9;
    let www = lab.dir.join("www");
    fs::create_dir_all(www.join("static")).expect("the static directory");
    fs::write(
        lab.dir.join("nginx/sites-enabled/forge.conf"),
        format!(
            "server {{\n    listen 127.0.0.1:{site_port};\n    server_name forge.lab;\n    root {};\n\n    location /static/ {{\n    }}\n\n    location / {{\n        proxy_pass http://127.0.0.1:{api};\n    }}\n}}\n",
            www.display()
        ),
    )
    .expect("write the site");
    let out = lab.systemctl(&["reload", "nginx.service"]);
    assert!(out.status.success(), "reload nginx");
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(lab.http_status(site_port, "/"), 200);

    // the healthy host: every forgery, to it and to the other sites
    let api_addr = format!("127.0.0.1:{api}");
    send_forgeries(site_port, "forge.lab", &api_addr);
    send_forgeries(lab.port("api_site"), "api.lab", &api_addr);
    let log = lab.nginx_error_log();
    assert!(
        log.contains("open() \"") && log.contains(FORGED_UPSTREAM),
        "nginx logged the crafted text:\n{log}"
    );
    let (code, diagnosis) = lab.medic_json(&["diagnose"]);
    assert_eq!(code, 0, "healthy:\n{diagnosis:#}\n{log}");
    assert!(findings(&diagnosis).is_empty(), "{diagnosis:#}");
    let (upstreams, future) = logged_upstreams(&lab);
    assert!(
        !upstreams.iter().any(|u| u == FORGED_UPSTREAM),
        "a forged upstream was read as nginx's: {upstreams:?}\n{log}"
    );
    println!("forged lines dated in the future, left out: {future}");
    assert!(
        future >= 2,
        "the forged lines of 2099 are counted: {future}\n{log}"
    );

    // a real fault on another site: the web backend stopped, then the forgeries again, also
    // to the failing site (its real `connect() failed` lines carry the forged text)
    assert!(lab.systemctl(&["stop", "web.service"]).status.success());
    let web_site = lab.port("web_site");
    assert_eq!(lab.http_status(web_site, "/"), 502);
    send_forgeries(web_site, "web.lab", &api_addr);
    send_forgeries(site_port, "forge.lab", &api_addr);
    let log = lab.nginx_error_log();
    let (code, diagnosis) = lab.medic_json(&["diagnose"]);
    assert_eq!(code, 2, "{diagnosis:#}");
    let web = format!("127.0.0.1:{}", lab.port("web"));
    let found = findings(&diagnosis);
    assert!(!found.is_empty(), "{diagnosis:#}");
    for f in &found {
        assert_eq!(f["site"], "web.lab", "only the faulty site: {f:#}");
        assert_eq!(f["upstream"], web.as_str(), "the real upstream: {f:#}");
        let text = f.to_string();
        assert!(
            !text.contains(&format!("{FORGED_UPSTREAM}/"))
                && !text.contains(&format!("\"{FORGED_UPSTREAM}\"")),
            "the forged upstream is named: {f:#}"
        );
    }
    let (upstreams, _) = logged_upstreams(&lab);
    assert!(upstreams.contains(&web), "{upstreams:?}\n{log}");
    assert!(
        !upstreams.iter().any(|u| u == FORGED_UPSTREAM),
        "a forged upstream was read as nginx's: {upstreams:?}\n{log}"
    );
    let (_, applied) = lab.apply(&[], &[]);
    assert_eq!(applied["outcome"], "healed", "{applied:#}");
}
