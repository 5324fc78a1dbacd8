//! The product as shipped, in the production-shaped box (`tests/support/system_box.rs`): the
//! `.deb` installed with `dpkg -i` on a Debian booted with systemd as PID 1, the service
//! started from the shipped unit, `mode: apply`, no `backends:` hints. Each fault is staged the
//! way it happens on a server, on the backend it names, and the site must answer 200 through
//! nginx within 5 s, unattended. Each test prints fault→incident (the service's journal line)
//! and fault→200.

use crate::support::system_box::{now_micros, wait_until, SystemBox, SITES};
use std::time::{Duration, Instant};

/// Acceptance 1 of the box: a fault is healed when its site answers 200 within this.
const HEAL_WITHIN: Duration = Duration::from_secs(5);
/// Acceptance 3: a stopped or killed backend opens its incident from systemd's signal within
/// this, the probe every 60 s.
const INCIDENT_WITHIN: Duration = Duration::from_millis(500);
/// How long a test keeps polling a site after the fault, to measure a heal that is late.
const POLL_FOR: Duration = Duration::from_secs(20);

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

/// The too-big-header backend's port and its site's port.
const BIG_PORT: u16 = 8006;
const BIG_SITE_PORT: u16 = 8086;

/// What one healed fault measured.
struct Healed {
    what: &'static str,
    to_incident: Option<Duration>,
    to_200: Duration,
}

/// The nginx port of a site of the box.
fn site_port(name: &str) -> u16 {
    SITES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, port, _)| *port)
        .unwrap_or_else(|| panic!("no site `{name}` in the box"))
}

/// The upstream nginx passes a site's requests to.
fn upstream(name: &str) -> &'static str {
    SITES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, _, up)| *up)
        .unwrap_or_else(|| panic!("no site `{name}` in the box"))
}

/// Stages a fault with `inject` and measures until SITE answers 200 through nginx; asserts
/// that it did within `HEAL_WITHIN`. The clock starts before `inject`, or, when `inject`
/// returns the moment it saw the fault take effect (nginx's reload is asynchronous), then.
fn heal(
    b: &SystemBox,
    what: &'static str,
    site: &str,
    up: &str,
    inject: impl FnOnce(&SystemBox) -> Option<(Instant, u64)>,
) -> Healed {
    let port = if site == "big" {
        BIG_SITE_PORT
    } else {
        site_port(site)
    };
    assert_eq!(
        b.http_status(port, "/"),
        200,
        "{what}: the {site} site answers 200 before the fault"
    );
    let (fault, wall) = {
        let (before, wall) = (Instant::now(), now_micros());
        inject(b).unwrap_or((before, wall))
    };
    let mut last = 0;
    while fault.elapsed() < POLL_FOR {
        last = b.http_status(port, "/");
        if last == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let to_200 = fault.elapsed();
    let to_incident = incident_after(b, up, wall);
    println!(
        "{what}: fault→incident {}, fault→200 {} ms",
        to_incident.map_or("none in the journal".to_owned(), |d| format!(
            "{} ms",
            d.as_millis()
        )),
        to_200.as_millis()
    );
    assert_eq!(
        last,
        200,
        "{what}: the {site} site still answers {last} {POLL_FOR:?} after the fault\n{}",
        b.journal("nginx-medic.service", &["--since", "-1min"])
    );
    assert!(
        to_200 <= HEAL_WITHIN,
        "{what}: healed, but {} ms after the fault (at most {} ms)",
        to_200.as_millis(),
        HEAL_WITHIN.as_millis()
    );
    Healed {
        what,
        to_incident,
        to_200,
    }
}

/// How long after `since` (µs since the epoch) nginx-medic's journal opened an incident about
/// UPSTREAM: the first entry whose message is an `incident` (not `incident resolved`) and that
/// names the upstream in its text or in a field.
fn incident_after(b: &SystemBox, up: &str, since: u64) -> Option<Duration> {
    let entries = b.journal_entries("nginx-medic.service", &["--since", "-2min"]);
    entries.iter().find_map(|e| {
        let ts: u64 = e["__REALTIME_TIMESTAMP"].as_str()?.parse().ok()?;
        let msg = e["MESSAGE"].as_str()?;
        let is_incident =
            msg.split_whitespace().any(|w| w == "incident") && !msg.contains("incident resolved");
        let names_it = msg.contains(up)
            || e.as_object()
                .is_some_and(|o| o.values().any(|v| v.as_str() == Some(up)));
        (ts >= since && is_incident && names_it).then(|| Duration::from_micros(ts - since))
    })
}

/// After a run of faults: nginx-medic never restarted, no backend bound to a wildcard address.
fn finish(b: &SystemBox, healed: &[Healed]) {
    println!("--- fault → incident → 200:");
    for h in healed {
        println!(
            "  {:<44} incident {:>6}  200 {:>5} ms",
            h.what,
            h.to_incident
                .map_or("-".to_owned(), |d| format!("{} ms", d.as_millis())),
            h.to_200.as_millis()
        );
    }
    assert_eq!(
        b.unit_property("nginx-medic.service", "NRestarts"),
        "0",
        "nginx-medic.service was restarted"
    );
    let listeners = b.listeners();
    let ports: Vec<String> = SITES
        .iter()
        .filter_map(|(_, _, up)| up.strip_prefix("127.0.0.1:"))
        .map(|p| format!(":{p}"))
        .chain([format!(":{BIG_PORT}")])
        .collect();
    for l in &listeners {
        let local = l.split_whitespace().next().unwrap_or_default();
        let backend = ports.iter().any(|p| local.ends_with(p.as_str()));
        let wildcard =
            local.starts_with("0.0.0.0:") || local.starts_with("[::]:") || local.starts_with("*:");
        assert!(
            !(backend && wildcard),
            "a backend is bound to a wildcard address: {l}\n{}",
            listeners.join("\n")
        );
    }
}

/// Restarts UNIT; a bind host that nginx cannot reach does not make it fail.
fn restart(b: &SystemBox, unit: &str) {
    b.systemctl_ok(&["restart", unit]);
}

/// Restarts UNIT onto a wrong bind host and returns the moment the fault took effect: when the
/// backend listens on `wrong` (the admin's restart and the backend's own start up to there are
/// not nginx-medic's time). When the heal already came (the wrong listener was gone before a
/// poll saw it), the clock starts before the restart.
fn restart_onto(b: &SystemBox, unit: &str, wrong: &str, site: &str) -> Option<(Instant, u64)> {
    let (before, wall) = (Instant::now(), now_micros());
    restart(b, unit);
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if b.listeners().iter().any(|l| l.starts_with(wrong)) {
            return Some((Instant::now(), now_micros()));
        }
        if b.http_status(site_port(site), "/") == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Some((before, wall))
}

/// The bind host of `KEY=` in an env file, as the file says now.
fn env_value(b: &SystemBox, path: &str, key: &str) -> String {
    let prefix = format!("{key}=");
    b.read_file(path)
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        .unwrap_or_default()
}

// --- the faults, each on its named backend ----------------------------------------------------

fn api_stopped(b: &SystemBox) -> Healed {
    let api_pid = b.main_pid("api.service");
    let healed = heal(
        b,
        "api stopped (systemctl stop api)",
        "api",
        upstream("api"),
        |b| {
            b.systemctl_ok(&["stop", "api.service"]);
            None
        },
    );
    assert_ne!(b.main_pid("api.service"), api_pid, "a new api process");
    healed
}

fn web_killed(b: &SystemBox) -> Healed {
    let web_pid = b.main_pid("web.service").expect("web runs");
    heal(
        b,
        "web SIGKILLed (systemctl kill -s KILL web)",
        "web",
        upstream("web"),
        |b| {
            b.systemctl_ok(&["kill", "-s", "KILL", "web.service"]);
            wait_until(Duration::from_secs(2), "web's process dies", || {
                b.main_pid("web.service") != Some(web_pid)
            });
            None
        },
    )
}

fn api_host_in_etc_default(b: &SystemBox) -> Healed {
    let healed = heal(
        b,
        "api HOST=127.0.0.2 in /etc/default/api",
        "api",
        upstream("api"),
        |b| {
            b.set_env("/etc/default/api", "HOST", "127.0.0.2");
            restart_onto(b, "api.service", "127.0.0.2:8000", "api")
        },
    );
    assert_eq!(env_value(b, "/etc/default/api", "HOST"), "127.0.0.1");
    healed
}

fn web_host_in_app_env(b: &SystemBox) -> Healed {
    let healed = heal(
        b,
        "web HOST=127.0.0.2 in /srv/web/.env",
        "web",
        upstream("web"),
        |b| {
            b.set_env("/srv/web/.env", "HOST", "127.0.0.2");
            restart_onto(b, "web.service", "127.0.0.2:8001", "web")
        },
    );
    assert_eq!(env_value(b, "/srv/web/.env", "HOST"), "127.0.0.1");
    assert_eq!(
        b.exec_ok(&["stat", "-c", "%U:%G %a", "/srv/web/.env"])
            .trim(),
        "web:web 640",
        "the app's .env keeps its owner and mode"
    );
    healed
}

fn gunicorn_bind_in_execstart(b: &SystemBox) -> Healed {
    // someone's drop-in moves gunicorn to 127.0.0.2: the host lives in ExecStart only
    let unit = b.read_file("/etc/systemd/system/django.service");
    let exec = unit
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .expect("django's ExecStart")
        .replace("127.0.0.1:8002", "127.0.0.2:8002");
    let healed = heal(
        b,
        "django gunicorn --bind 127.0.0.2 (drop-in)",
        "django",
        upstream("django"),
        |b| {
            b.exec_ok(&["mkdir", "-p", "/etc/systemd/system/django.service.d"]);
            b.write_file(
                "/etc/systemd/system/django.service.d/10-moved.conf",
                &format!("[Service]\nExecStart=\n{exec}\n"),
            );
            b.systemctl_ok(&["daemon-reload"]);
            restart_onto(b, "django.service", "127.0.0.2:8002", "django")
        },
    );
    let exec = b.unit_property("django.service", "ExecStart");
    assert!(
        exec.contains("127.0.0.1:8002") && !exec.contains("0.0.0.0"),
        "{exec}"
    );
    healed
}

fn runserver_addr_in_execstart(b: &SystemBox) -> Healed {
    // the unit itself edited: runserver 127.0.0.2:8003
    let healed = heal(
        b,
        "runserver 127.0.0.2:8003 (edited unit)",
        "runserver",
        upstream("runserver"),
        |b| {
            let path = "/etc/systemd/system/runserver.service";
            let text = b.read_file(path);
            assert!(
                text.contains("runserver --noreload 127.0.0.1:8003"),
                "{text}"
            );
            b.write_file(path, &text.replace("127.0.0.1:8003", "127.0.0.2:8003"));
            b.systemctl_ok(&["daemon-reload"]);
            restart_onto(b, "runserver.service", "127.0.0.2:8003", "runserver")
        },
    );
    let exec = b.unit_property("runserver.service", "ExecStart");
    assert!(
        exec.contains("127.0.0.1:8003") && !exec.contains("0.0.0.0"),
        "{exec}"
    );
    healed
}

fn php_fpm_stopped(b: &SystemBox) -> Healed {
    heal(b, "php8.2-fpm stopped", "php", upstream("php"), |b| {
        b.systemctl_ok(&["stop", "php8.2-fpm.service"]);
        None
    })
}

fn php_pool_socket_owner(b: &SystemBox) -> Healed {
    let pool = "/etc/php/8.2/fpm/pool.d/www.conf";
    let healed = heal(
        b,
        "php pool listen.owner/group root (www.conf)",
        "php",
        upstream("php"),
        |b| {
            let text = b.read_file(pool);
            let text = text
                .replace("listen.owner = www-data", "listen.owner = root")
                .replace("listen.group = www-data", "listen.group = root");
            b.write_file(pool, &text);
            restart(b, "php8.2-fpm.service");
            let owner = b.exec_ok(&["stat", "-c", "%U:%G", "/run/php/php8.2-fpm.sock"]);
            assert_eq!(owner.trim(), "root:root", "the fault is in place");
            None
        },
    );
    let text = b.read_file(pool);
    assert!(
        text.contains("listen.owner = www-data") && text.contains("listen.group = www-data"),
        "{text}"
    );
    healed
}

fn too_big_header(b: &SystemBox) -> Healed {
    b.exec_ok(&[
        "systemd-run",
        "--quiet",
        "--unit",
        "bighdr.service",
        "/usr/bin/python3",
        "-c",
        BIG_HEADER_APP,
        &BIG_PORT.to_string(),
    ]);
    wait_until(
        Duration::from_secs(15),
        "the big-header backend answers",
        || b.http_status(BIG_PORT, "/") == 200,
    );
    let available = "/etc/nginx/sites-available/big";
    let enabled = "/etc/nginx/sites-enabled/big";
    let site = format!(
        "# a backend with a 6000-byte response header\nserver {{\n    listen 127.0.0.1:{BIG_SITE_PORT};\n    server_name big.box;\n\n    location / {{\n        proxy_pass http://127.0.0.1:{BIG_PORT};\n    }}\n}}\n"
    );
    // the site answers 200 before the fault: a plain site first, then the header grows
    b.write_file(available, &site.replace(&format!(":{BIG_PORT};"), ":8000;"));
    b.exec_ok(&["ln", "-s", "../sites-available/big", enabled]);
    b.systemctl_ok(&["reload", "nginx.service"]);
    wait_until(Duration::from_secs(10), "the big site answers", || {
        b.http_status(BIG_SITE_PORT, "/") == 200
    });
    let big = heal(
        b,
        "too big header (site `big`)",
        "big",
        "127.0.0.1:8006",
        |b| {
            b.write_file(available, &site);
            b.systemctl_ok(&["reload", "nginx.service"]);
            // nginx's workers switch to the new site a moment later: the fault starts with the
            // first 502 (the header is too big for nginx's default 4k buffer)
            let mut status = 200;
            wait_until(Duration::from_secs(5), "the big site answers 502", || {
                status = b.http_status(BIG_SITE_PORT, "/");
                status != 200
            });
            assert_eq!(status, 502, "the too big header gives a 502");
            Some((Instant::now(), now_micros()))
        },
    );
    let text = b.read_file(available);
    assert!(text.contains("proxy_buffer_size"), "{text}");
    assert_eq!(
        b.exec_ok(&["readlink", enabled]).trim(),
        "../sites-available/big",
        "sites-enabled/big is still the symlink to sites-available/big"
    );
    big
}

/// The seed's own story: the site's `proxy_pass` names a port nothing listens on (a typo),
/// no hint says which backend it meant; api.service, named like the site, listens on the port
/// no site dials any more. The site is fixed, the backend untouched.
fn typo_in_proxy_pass_port(b: &SystemBox) -> Healed {
    let site = "/etc/nginx/sites-available/api";
    let before = b.read_file(site);
    let api_pid = b.main_pid("api.service");
    let healed = heal(
        b,
        "proxy_pass port typo'd (8000 → 8010)",
        "api",
        "127.0.0.1:8010",
        |b| {
            b.write_file(site, &before.replace("127.0.0.1:8000;", "127.0.0.1:8010;"));
            let (fault, wall) = (Instant::now(), now_micros());
            b.systemctl_ok(&["reload", "nginx.service"]);
            // the old workers finish their requests on the old configuration for a moment:
            // the fault holds once the site answers 502 three times in a row
            let mut in_a_row = 0;
            wait_until(Duration::from_secs(5), "the api site answers 502", || {
                let status = b.http_status(site_port("api"), "/");
                in_a_row = if status == 502 { in_a_row + 1 } else { 0 };
                in_a_row == 3
            });
            Some((fault, wall))
        },
    );
    assert_eq!(
        b.read_file(site),
        before,
        "the pass target is the backend's port again"
    );
    assert_eq!(
        b.main_pid("api.service"),
        api_pid,
        "the backend was not touched"
    );
    healed
}

// --- the tests -------------------------------------------------------------------------------

#[test]
fn box_smoke_the_package_runs_under_systemd_and_every_site_answers() {
    let started = Instant::now();
    let b = SystemBox::up("smoke");
    assert_eq!(
        b.exec(&["systemctl", "is-active", "nginx-medic.service"])
            .stdout
            .as_slice(),
        b"active\n"
    );
    // the shipped unit, unchanged: no drop-in, the file as packaging/ has it
    let fragment = b.unit_property("nginx-medic.service", "FragmentPath");
    assert_eq!(
        b.read_file(&fragment),
        include_str!("../packaging/nginx-medic.service"),
        "{fragment} is packaging/nginx-medic.service"
    );
    assert_eq!(b.unit_property("nginx-medic.service", "DropInPaths"), "");
    let config = b.read_file("/etc/nginx-medic/medic.yaml");
    assert!(config.ends_with("daemon:\n  mode: apply\n"), "{config}");
    assert!(!config.contains("\nbackends:"), "no hints: {config}");
    for (name, port, _) in SITES {
        assert_eq!(b.http_status(port, "/"), 200, "the {name} site");
    }
    assert_eq!(b.http_status(80, "/"), 200, "Debian's default site");
    // the packaged CLI, with the packaged config, finds every site healthy without hints
    let diagnose = b.exec(&["nginx-medic", "diagnose"]);
    assert_eq!(
        diagnose.status.code(),
        Some(0),
        "nginx-medic diagnose in the box:\n{}{}",
        String::from_utf8_lossy(&diagnose.stdout),
        String::from_utf8_lossy(&diagnose.stderr)
    );
    assert_eq!(b.unit_property("nginx-medic.service", "NRestarts"), "0");
    let t = b.timings;
    let (dir, cgroup) = (b.dir.clone(), b.cgroup.clone());
    drop(b);
    assert!(!dir.exists(), "the teardown removed {}", dir.display());
    assert!(
        !cgroup.exists(),
        "the teardown removed {}",
        cgroup.display()
    );
    println!(
        "box: boot {} ms, backends up {} ms, dpkg -i {} ms, service start {} ms; whole test {} ms (teardown included)",
        t.boot.as_millis(),
        t.backends.as_millis(),
        t.install.as_millis(),
        t.start.as_millis(),
        started.elapsed().as_millis()
    );
}

/// Boots a box, stages one fault, and checks the aftermath.
fn one(name: &str, fault: fn(&SystemBox) -> Healed) {
    let b = SystemBox::up(name);
    let healed = fault(&b);
    finish(&b, &[healed]);
}

#[test]
fn box_heals_a_stopped_backend() {
    one("stop", api_stopped);
}

#[test]
fn box_heals_a_killed_backend() {
    one("kill", web_killed);
}

#[test]
fn box_heals_a_bind_host_in_etc_default() {
    one("default", api_host_in_etc_default);
}

#[test]
fn box_heals_a_bind_host_in_an_app_env() {
    one("appenv", web_host_in_app_env);
}

#[test]
fn box_heals_a_gunicorn_bind_in_execstart() {
    one("gunicorn", gunicorn_bind_in_execstart);
}

#[test]
fn box_heals_a_runserver_address_in_execstart() {
    one("runserver", runserver_addr_in_execstart);
}

#[test]
fn box_heals_php_fpm_stopped() {
    one("phpstop", php_fpm_stopped);
}

#[test]
fn box_heals_a_php_pool_socket_owner() {
    one("phpowner", php_pool_socket_owner);
}

#[test]
fn box_heals_a_typo_in_a_proxy_pass_port() {
    one("typo", typo_in_proxy_pass_port);
}

#[test]
fn box_heals_a_too_big_header() {
    one("bighdr", too_big_header);
}

#[test]
fn box_heals_every_fault_one_after_another_in_one_box() {
    let started = Instant::now();
    let b = SystemBox::up("all");
    // the probe only as a last resort: every fault below must be seen from its own event
    // (systemd's signal, nginx's error log), as promptly as the lab sees it
    b.write_file(
        "/etc/nginx-medic/medic.yaml",
        &format!(
            "{}  probe_interval: 60s\n",
            b.read_file("/etc/nginx-medic/medic.yaml")
        ),
    );
    b.systemctl_ok(&["restart", "nginx-medic.service"]);
    let faults: [fn(&SystemBox) -> Healed; 10] = [
        api_stopped,
        web_killed,
        api_host_in_etc_default,
        typo_in_proxy_pass_port,
        web_host_in_app_env,
        gunicorn_bind_in_execstart,
        runserver_addr_in_execstart,
        php_fpm_stopped,
        php_pool_socket_owner,
        too_big_header,
    ];
    let healed: Vec<Healed> = faults.iter().map(|fault| fault(&b)).collect();
    finish(&b, &healed);
    for h in healed.iter().take(2) {
        let took = h.to_incident.unwrap_or(Duration::MAX);
        assert!(
            took <= INCIDENT_WITHIN,
            "{}: the incident opened {} ms after the fault with `probe_interval: 60s` (at most {} ms)",
            h.what,
            took.as_millis(),
            INCIDENT_WITHIN.as_millis()
        );
    }
    println!("whole run: {} ms", started.elapsed().as_millis());
}

#[test]
fn box_teardown_leaves_nothing_also_when_a_test_panics() {
    let seen = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let b = SystemBox::boot("panic");
        *seen.lock().unwrap() = Some((b.dir.clone(), b.cgroup.clone(), b.pid1));
        panic!("a test failing while its box runs");
    }));
    assert!(result.is_err());
    let (dir, cgroup, pid1) = seen.lock().unwrap().take().expect("the box booted");
    assert!(
        !crate::support::lab::pid_alive(pid1),
        "PID 1 ({pid1}) is gone"
    );
    assert!(!cgroup.exists(), "{} is removed", cgroup.display());
    assert!(!dir.exists(), "{} is removed", dir.display());
}
