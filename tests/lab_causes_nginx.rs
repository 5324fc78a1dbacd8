//! The nginx-side causes in the lab, each with real components: a real 502/504 through nginx →
//! `diagnose` names the cause → `apply` heals it (200) or, where nginx-medic only reports,
//! changes nothing. Extra sites are written into the lab's `sites-enabled` by the test, extra
//! backends run as transient units of the lab's own manager (`systemd-run --user`), so the lab's
//! teardown ends them too.

use crate::support::lab::{http_get, Lab};
use serde_json::Value;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// A backend whose response carries a 6000-byte header: more than nginx's 4k default buffer.
const BIG_HEADER_APP: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("X-Big", "a" * 6000)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

/// A plain backend answering 200.
const PLAIN_APP: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

/// The finding with this cause, or a panic showing them all.
fn finding<'v>(diagnosis: &'v Value, cause: &str) -> &'v Value {
    diagnosis["findings"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["cause"] == cause))
        .unwrap_or_else(|| panic!("no `{cause}` finding in {diagnosis:#}"))
}

fn ok(out: std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes a site into the lab's nginx and reloads it.
fn add_site(lab: &Lab, name: &str, text: &str) -> PathBuf {
    let path = lab.dir.join("nginx/sites-enabled").join(name);
    fs::write(&path, text).expect("write the site");
    reload_nginx(lab);
    path
}

fn reload_nginx(lab: &Lab) {
    ok(lab.systemctl(&["reload", "nginx.service"]), "reload nginx");
    std::thread::sleep(Duration::from_millis(700));
}

/// Runs a python backend as a transient unit of the lab's manager and waits until it listens.
fn transient_backend(lab: &Lab, unit: &str, port: u16, app: &str) {
    let out = Command::new("timeout")
        .args(["30", "systemd-run", "--user", "--quiet", "--unit", unit])
        .args(["/usr/bin/python3", "-c", app, &port.to_string()])
        .envs(lab.env())
        .output()
        .expect("systemd-run");
    ok(out, "systemd-run");
    wait_port(port, true);
}

fn wait_port(port: u16, listening: bool) {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let start = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() != listening {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "port {port} never became listening={listening}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn lab_too_big_header_raises_the_location_buffers() {
    let lab = Lab::start();
    let (site_port, app_port) = (lab.base + 5, lab.base + 15);
    transient_backend(&lab, "bighdr.service", app_port, BIG_HEADER_APP);
    let site = add_site(
        &lab,
        "big.conf",
        &format!(
            "server {{\n    listen 127.0.0.1:{site_port};\n    server_name big.lab;\n\n    location / {{\n        proxy_pass http://127.0.0.1:{app_port};\n    }}\n}}\n"
        ),
    );
    // log lines in the same second as the site's mtime are not newer than it
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(lab.http_status(site_port, "/"), 502);
    assert!(lab
        .nginx_error_log()
        .contains("upstream sent too big header"));

    let (code, diagnosis) = lab.medic_json(&["diagnose"]);
    assert_eq!(code, 2);
    let f = finding(&diagnosis, "too-big-header");
    lab.explain("too-big-header");
    assert_eq!(f["site"], "big.lab");
    assert_eq!(f["conclusive"], true, "{f:#}");

    lab.apply_heals(site_port);
    let text = fs::read_to_string(&site).unwrap();
    // the backend's header block (6.1 KB) is measured: the next power of two above it, and the
    // default buffers still satisfy nginx's busy-buffers rule
    assert!(
        text.contains(
            "        proxy_buffer_size 8k;\n        proxy_buffers 8 4k;\n        proxy_pass"
        ),
        "{text}"
    );
    // the old log lines are older than the edit: the raise is not raised again
    let (code, diagnosis) = lab.medic_json(&["diagnose"]);
    assert_eq!(code, 0, "{diagnosis:#}");
}

#[test]
fn lab_upstream_timeout_is_reported_and_nothing_changes() {
    let lab = Lab::start();
    let site_port = lab.port("api_site");
    assert_eq!(lab.http_status(site_port, "/slow?seconds=8"), 504);
    let (code, diagnosis) = lab.medic_json(&["diagnose"]);
    assert_eq!(code, 2);
    let f = finding(&diagnosis, "upstream-timeout");
    lab.explain("upstream-timeout");
    let evidence = f["evidence"].to_string();
    assert!(evidence.contains("GET /slow?seconds=8 HTTP/1.1"), "{f:#}");
    assert!(evidence.contains("proxy_read_timeout is 5s"), "{f:#}");
    assert!(evidence.contains("504, not 502"), "{f:#}");

    let (files, pid) = (lab.config_files(), lab.main_pid("api.service"));
    let (code, applied) = lab.apply(&[], &[]);
    assert_eq!(
        (code, applied["outcome"].as_str()),
        (2, Some("nothing_to_do")),
        "{applied:#}"
    );
    assert_eq!(applied["actions"], serde_json::json!([]));
    assert!(lab.config_files() == files, "no file changed");
    assert_eq!(
        lab.main_pid("api.service"),
        pid,
        "the backend was not restarted"
    );
}

#[test]
fn lab_localhost_pass_target_is_pinned_to_the_family_the_backend_listens_on() {
    let lab = Lab::start();
    let api = lab.port("api");
    lab.set_env("api.env", "HOST", "::1");
    ok(lab.systemctl(&["restart", "api.service"]), "restart api");
    let site = lab.dir.join("nginx/sites-enabled/api.conf");
    let text = fs::read_to_string(&site).unwrap();
    let text = text.replace(
        &format!("proxy_pass http://127.0.0.1:{api};"),
        &format!("proxy_pass http://localhost:{api};"),
    );
    fs::write(&site, &text).unwrap();
    reload_nginx(&lab);
    // uvicorn takes its time to bind under load: the fault is staged once it listens on [::1]
    // (and no longer on 127.0.0.1), not after a fixed sleep
    crate::support::pm2::wait_listening("[::1]", api);
    crate::support::pm2::wait_closed("127.0.0.1", api);
    assert_eq!(lab.http_status(lab.port("api_site"), "/"), 502);

    let (code, diagnosis) = lab.medic_json(&["diagnose"]);
    assert_eq!(code, 2);
    let f = finding(&diagnosis, "localhost-family");
    lab.explain("localhost-family");
    assert_eq!(f["unit"], "api.service");
    assert_eq!(f["conclusive"], true, "{f:#}");
    assert!(f["also_matched"].to_string().contains("bind-mismatch"));

    lab.apply_heals(lab.port("api_site"));
    let after = fs::read_to_string(&site).unwrap();
    assert_eq!(
        after,
        text.replace(
            &format!("http://localhost:{api};"),
            &format!("http://[::1]:{api};")
        )
    );
    let env = fs::read_to_string(lab.dir.join("config/api.env")).unwrap();
    assert!(
        env.contains("HOST=::1\n"),
        "the backend's bind is left alone: {env}"
    );
}

#[test]
fn lab_upstream_group_marked_down_is_reported_only() {
    let lab = Lab::start();
    let (site_port, a, b) = (lab.base + 6, lab.base + 16, lab.base + 17);
    transient_backend(&lab, "grp-a-1.service", a, PLAIN_APP);
    transient_backend(&lab, "grp-b-1.service", b, PLAIN_APP);
    add_site(
        &lab,
        "group.conf",
        &format!(
            "upstream grp {{\n    server 127.0.0.1:{a} max_fails=1 fail_timeout=60s;\n    server 127.0.0.1:{b} max_fails=1 fail_timeout=60s;\n}}\n\nserver {{\n    listen 127.0.0.1:{site_port};\n    server_name group.lab;\n\n    location / {{\n        proxy_pass http://grp;\n    }}\n}}\n"
        ),
    );
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(lab.http_status(site_port, "/"), 200);
    for unit in ["grp-a-1.service", "grp-b-1.service"] {
        ok(lab.systemctl(&["stop", unit]), "stop");
    }
    wait_port(a, false);
    wait_port(b, false);
    assert_eq!(lab.http_status(site_port, "/"), 502, "both servers fail");
    transient_backend(&lab, "grp-a-2.service", a, PLAIN_APP);
    transient_backend(&lab, "grp-b-2.service", b, PLAIN_APP);
    assert_eq!(
        http_get(site_port, "/").map(|r| r.0),
        Some(502),
        "both listen again, but nginx marked them down"
    );
    assert!(lab.nginx_error_log().contains("no live upstreams"));

    let (code, diagnosis) = lab.medic_json(&["diagnose"]);
    assert_eq!(code, 2);
    let f = finding(&diagnosis, "upstream-marked-down");
    lab.explain("upstream-marked-down");
    assert_eq!(f["site"], "group.lab");
    let causes: Vec<&str> = diagnosis["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["cause"].as_str())
        .collect();
    assert_eq!(causes, ["upstream-marked-down"], "one finding per group");

    let files = lab.config_files();
    // still marked down: fail_timeout is 60s
    let (code, applied) = lab.apply(&[], &[(site_port, 502)]);
    assert_eq!(
        (code, applied["outcome"].as_str()),
        (2, Some("nothing_to_do")),
        "{applied:#}"
    );
    assert!(lab.config_files() == files);
}

/// nginx's master PID and its workers' PIDs: a reload keeps the master and replaces the workers.
fn nginx_pids(lab: &Lab) -> Vec<u32> {
    let master = lab.main_pid("nginx.service").expect("nginx runs");
    let children =
        fs::read_to_string(format!("/proc/{master}/task/{master}/children")).unwrap_or_default();
    let mut pids: Vec<u32> = children
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    pids.sort_unstable();
    pids.insert(0, master);
    pids
}

/// `nginx -t` fails and a backend is stopped: both are reported, the backend restart (which
/// needs no reload) runs, nginx is neither edited nor reloaded.
fn broken_nginx_beside_a_stopped_backend(lab: &Lab, broken: &std::path::Path, cause: &str) {
    let (code, diagnosis) = lab.medic_json(&["diagnose"]);
    assert_eq!(code, 2);
    let first = &diagnosis["findings"][0];
    assert_eq!(first["cause"], cause, "{diagnosis:#}");
    assert!(
        first["location"]
            .as_str()
            .is_some_and(|l| l.starts_with(&format!("{}:", broken.display()))),
        "{diagnosis:#}"
    );
    assert_eq!(first["conclusive"], false);
    let down = finding(&diagnosis, "backend-down");
    assert_eq!(
        down["conclusive"], true,
        "a restart needs no reload: {diagnosis:#}"
    );
    let text = lab.explain(cause);
    assert!(
        text.contains(&format!("✗ nginx itself: {cause} (critical)")),
        "{text}"
    );

    let files = lab.config_files();
    let pids = nginx_pids(lab);
    // a site nginx never loaded (its file does not load) answers nothing
    let (_, applied) = lab.apply(&[], &[(lab.base + 7, 0)]);
    let kinds: Vec<&str> = applied["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter_map(|a| a["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["systemd", "wait_listen", "probe"], "{applied:#}");
    assert_eq!(lab.unit_property("api.service", "ActiveState"), "active");
    assert_eq!(lab.http_status(lab.port("api_site"), "/"), 200);
    assert_eq!(lab.http_status(lab.port("web_site"), "/"), 200);
    assert!(lab.config_files() == files, "no nginx file is edited");
    assert_eq!(nginx_pids(lab), pids, "nginx is not reloaded");

    let (code, diagnosis) = lab.medic_json(&["diagnose"]);
    assert_eq!(code, 2);
    assert_eq!(diagnosis["findings"][0]["cause"], cause, "{diagnosis:#}");
}

#[test]
fn lab_host_not_found_blocks_only_actions_on_nginx() {
    let lab = Lab::start();
    ok(lab.systemctl(&["stop", "api.service"]), "stop api");
    assert_eq!(lab.http_status(lab.port("api_site"), "/"), 502);
    let broken = lab.dir.join("nginx/sites-enabled/broken.conf");
    fs::write(
        &broken,
        format!(
            "server {{\n    listen 127.0.0.1:{};\n    server_name broken.lab;\n    location / {{\n        proxy_pass http://app.nosuch.invalid:8000;\n    }}\n}}\n",
            lab.base + 7
        ),
    )
    .unwrap();
    broken_nginx_beside_a_stopped_backend(&lab, &broken, "host-not-found");
}

#[test]
fn lab_unfinished_nginx_edit_beside_a_stopped_backend_restarts_only_the_backend() {
    let lab = Lab::start();
    // the admin's unfinished edit of a neighbour site: a directive name mistyped
    let web = lab.dir.join("nginx/sites-enabled/web.conf");
    let text = fs::read_to_string(&web).expect("web.conf");
    let at = text.find("location / {").expect("a location in web.conf") + "location / {".len();
    let mut edited = text.clone();
    edited.insert_str(at, "\n        proxy_read_timout 30s;");
    fs::write(&web, edited).unwrap();
    ok(lab.systemctl(&["stop", "api.service"]), "stop api");
    assert_eq!(lab.http_status(lab.port("api_site"), "/"), 502);
    broken_nginx_beside_a_stopped_backend(&lab, &web, "nginx-config-invalid");
}

#[test]
fn lab_explain_walks_the_triage_for_each_site() {
    let lab = Lab::start();
    ok(lab.systemctl(&["stop", "api.service"]), "stop api");
    let text = lab.explain("backend-down");
    let api = lab.port("api");
    for line in [
        "✗ api.lab location /".to_string(),
        "  1. Is the backend running?".to_string(),
        "     api.service: inactive (dead), no PID".to_string(),
        format!("     nginx dials      127.0.0.1:{api}  →  nothing: nothing listens there"),
        "  Cause: backend-down (critical)".to_string(),
        "     1. systemd restart api.service".to_string(),
        "     $ systemctl --user status api.service".to_string(),
        format!("     $ ss -ltnp 'sport = :{api}'"),
        "✓ web.lab location /".to_string(),
        "  Cause: none, healthy".to_string(),
    ] {
        assert!(text.contains(&line), "missing `{line}` in:\n{text}");
    }
    assert!(!text.contains('\x1b'), "no colour when not a terminal");
    assert_eq!(
        lab.unit_property("api.service", "ActiveState"),
        "inactive",
        "explain changes nothing"
    );

    ok(lab.systemctl(&["start", "api.service"]), "start api");
    lab.set_env("web.env", "HOST", "127.0.0.2");
    lab.restart_and_wait("web.service");
    let text = lab.explain("bind-mismatch");
    assert!(text.contains("  Cause: bind-mismatch (critical)"), "{text}");

    lab.set_env("api.env", "PORT", &(api + 5).to_string());
    lab.restart_and_wait("api.service");
    let text = lab.explain("wrong-port");
    assert!(text.contains("  Cause: wrong-port (critical)"), "{text}");
}

#[test]
fn lab_upstream_group_heals_the_one_server_that_is_down() {
    let lab = Lab::start();
    let (site_port, api, web) = (lab.base + 7, lab.port("api"), lab.port("web"));
    add_site(
        &lab,
        "mixed.conf",
        &format!(
            "upstream mixed {{\n    server 127.0.0.1:{api};\n    server 127.0.0.1:{web};\n}}\n\nserver {{\n    listen 127.0.0.1:{site_port};\n    server_name mixed.lab;\n\n    location / {{\n        proxy_pass http://mixed;\n    }}\n}}\n"
        ),
    );
    std::thread::sleep(Duration::from_millis(1100));
    ok(lab.systemctl(&["stop", "web.service"]), "stop web");
    wait_port(web, false);
    // nginx retries the next server: the client may still get 200, while the log fills up.
    for _ in 0..4 {
        assert_eq!(
            lab.http_status(site_port, "/"),
            200,
            "the live server answers"
        );
    }
    assert!(lab.nginx_error_log().contains("Connection refused"));

    let (code, diagnosis) = lab.medic_json(&["diagnose"]);
    assert_eq!(code, 2, "{diagnosis:#}");
    let down: Vec<(&str, &str)> = diagnosis["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["site"].as_str().unwrap(), f["upstream"].as_str().unwrap()))
        .collect();
    let web_addr = format!("127.0.0.1:{web}");
    assert!(down.contains(&("mixed.lab", web_addr.as_str())), "{down:?}");
    assert!(
        down.iter().all(|(_, u)| *u == web_addr),
        "only the down server: {down:?}"
    );
    let (_, plan) = lab.medic_json(&["plan"]);
    let restarts = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "systemd")
        .count();
    assert_eq!(
        restarts, 1,
        "one restart of web.service, however many sites dial it: {plan:#}"
    );
    lab.apply_heals(site_port);
    assert_eq!(lab.unit_property("web.service", "ActiveState"), "active");
    assert_eq!(lab.http_status(lab.port("web_site"), "/"), 200);
}
