//! One coherent change for the whole host, with real components: two sites reaching one backend
//! get one fix that heals both (never a pin of one site and a rebind that undoes it), two units
//! are restarted in one apply, and an upstream group whose servers were all down is reset by a
//! reload instead of waiting out `fail_timeout`.

use crate::support::lab::{http_get, Lab};
use serde_json::Value;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The machine's kind of `/etc/hosts`: `localhost` is 127.0.0.1 only.
const HOSTS_V4_ONLY: &str = "127.0.0.1 localhost\n";
/// Debian's default `/etc/hosts`: `localhost` is 127.0.0.1 and ::1.
const HOSTS_DEBIAN: &str = "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n";

fn ok(out: std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn reload_nginx(lab: &Lab) {
    ok(lab.systemctl(&["reload", "nginx.service"]), "reload nginx");
    std::thread::sleep(Duration::from_millis(700));
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

fn causes(diagnosis: &Value) -> Vec<(String, String)> {
    diagnosis["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                f["cause"].as_str().unwrap_or_default().to_string(),
                f["site"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Failure 1 of issue 11: the `web` site reaches the Node backend through its upstream group
/// (`server 127.0.0.1:WEB`), a second site dials `localhost:WEB`, and the backend listens on
/// `[::1]:WEB` only. The one fix that heals both is the rebind to 127.0.0.1, the address every
/// site dials; pinning the second site to `[::1]` beside it would leave it at 502.
/// The fault of failure 1: returns the lab, the `localhost` site's port, file and text.
fn two_sites_one_backend_fault(hosts: &str) -> (Lab, u16, std::path::PathBuf, String) {
    let mut lab = Lab::start();
    lab.use_hosts_file(hosts);
    let (web, local_port) = (lab.port("web"), lab.base + 4);
    let local = lab.dir.join("nginx/sites-enabled/local.conf");
    let local_text = format!(
        "server {{\n    listen 127.0.0.1:{local_port};\n    server_name local.lab;\n\n    location / {{\n        proxy_pass http://localhost:{web};\n    }}\n}}\n"
    );
    fs::write(&local, &local_text).unwrap();
    reload_nginx(&lab);
    lab.set_env("web.env", "HOST", "::1");
    lab.restart_and_wait("web.service");
    assert_eq!(lab.http_status(lab.port("web_site"), "/"), 502);
    // v4 only: nginx dials 127.0.0.1 alone; Debian's file: it fails over to ::1 and answers
    let local_before = lab.http_status(local_port, "/");
    let both = hosts.contains("::1 localhost");
    assert_eq!(local_before, if both { 200 } else { 502 }, "{hosts}");
    (lab, local_port, local, local_text)
}

fn two_sites_one_backend(hosts: &str) {
    let (lab, local_port, local, local_text) = two_sites_one_backend_fault(hosts);

    let (code, diagnosis) = lab.medic_json(&["diagnose"]);
    assert_eq!(code, 2, "{diagnosis:#}");
    let found = causes(&diagnosis);
    assert!(
        found.contains(&("bind-mismatch".into(), "web.lab".into())),
        "{diagnosis:#}"
    );
    assert!(
        found.contains(&("localhost-family".into(), "local.lab".into())),
        "the pin is found, then covered by the rebind: {diagnosis:#}"
    );

    let (_, plan) = lab.medic_json(&["plan"]);
    let (code, applied) = lab.apply(&[], &[]);
    assert_eq!(
        (code, applied["outcome"].as_str()),
        (0, Some("healed")),
        "{applied:#}"
    );
    let probed: Vec<&str> = applied["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "probe_site")
        .filter_map(|a| a["url"].as_str())
        .collect();
    assert!(
        probed.contains(&format!("http://127.0.0.1:{local_port}/").as_str()),
        "the neighbour is probed again: {applied:#}"
    );
    let env = fs::read_to_string(lab.dir.join("config/web.env")).unwrap();
    assert!(env.contains("HOST=127.0.0.1\n"), "{env}");
    let kinds: Vec<&str> = plan["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter_map(|a| a["kind"].as_str())
        .collect();
    assert!(!kinds.contains(&"render_site"), "no pin: {plan:#}");
    assert_eq!(
        kinds.iter().filter(|k| **k == "set_bind_host").count(),
        1,
        "{plan:#}"
    );
    assert_eq!(
        fs::read_to_string(&local).unwrap(),
        local_text,
        "the localhost site is left as it was"
    );
}

#[test]
fn lab_two_sites_one_backend_get_one_fix_with_localhost_v4_only() {
    two_sites_one_backend(HOSTS_V4_ONLY);
}

#[test]
fn lab_two_sites_one_backend_get_one_fix_with_debian_hosts() {
    two_sites_one_backend(HOSTS_DEBIAN);
}

/// The daemon heals failure 1 the same way: one rebind, both sites answer, the neighbour is
/// probed, and no later round undoes the rebind.
#[test]
fn lab_daemon_heals_two_sites_of_one_backend_with_one_fix() {
    let (lab, local_port, local, local_text) = two_sites_one_backend_fault(HOSTS_DEBIAN);
    let mut config = fs::read_to_string(lab.config()).unwrap();
    config.push_str("daemon:\n  mode: apply\n  probe_interval: 500ms\n  metrics: null\n");
    fs::write(lab.config(), config).unwrap();
    let log = lab.dir.join("daemon.log");
    let out = fs::File::create(&log).unwrap();
    let child = lab
        .medic_command()
        .arg("run")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("spawn nginx-medic run");
    let _daemon = Stop(child);
    let web_site = lab.port("web_site");
    let start = Instant::now();
    while lab.http_status(web_site, "/") != 200 || lab.http_status(local_port, "/") != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "not healed: {}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // a few more rounds: nothing undoes the fix, nothing pins the other site
    std::thread::sleep(Duration::from_secs(3));
    let daemon_log = || Value::String(fs::read_to_string(&log).unwrap_or_default());
    lab.assert_sites(&[], &daemon_log());
    let env = fs::read_to_string(lab.dir.join("config/web.env")).unwrap();
    assert!(env.contains("HOST=127.0.0.1\n"), "{env}\n{}", daemon_log());
    // With Debian's file the `localhost` site still dials ::1 too, refused now: a later round
    // may pin it to 127.0.0.1, where the backend listens (never back to [::1]).
    let web = lab.port("web");
    let after = fs::read_to_string(&local).unwrap();
    let pinned = local_text.replace(
        &format!("http://localhost:{web};"),
        &format!("http://127.0.0.1:{web};"),
    );
    assert!(
        after == local_text || after == pinned,
        "{after}\n{}",
        daemon_log()
    );
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("probe_site"),
        "the neighbour is probed: {text}"
    );
}

/// Ends the daemon this test started (by its PID), also on panic.
struct Stop(std::process::Child);

impl Drop for Stop {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Failures 2 and 3 of issue 11: both servers of an upstream group are down (their units
/// stopped) and nginx marked both failed, with a `fail_timeout` far longer than the whole apply.
/// One apply restarts both units, then resets the group with a reload: the site answers right
/// after the restarts, long before `fail_timeout` ends.
#[test]
fn lab_group_with_every_server_down_restarts_both_and_is_reset() {
    const FAIL_TIMEOUT_SECS: u64 = 60;
    let lab = Lab::start();
    let (site_port, api, web) = (lab.base + 5, lab.port("api"), lab.port("web"));
    let group = lab.dir.join("nginx/sites-enabled/pair.conf");
    fs::write(
        &group,
        format!(
            "upstream pair {{\n    server 127.0.0.1:{api} max_fails=1 fail_timeout={FAIL_TIMEOUT_SECS}s;\n    server 127.0.0.1:{web} max_fails=1 fail_timeout={FAIL_TIMEOUT_SECS}s;\n}}\n\nserver {{\n    listen 127.0.0.1:{site_port};\n    server_name pair.lab;\n\n    location / {{\n        proxy_pass http://pair;\n    }}\n}}\n"
        ),
    )
    .unwrap();
    reload_nginx(&lab);
    assert_eq!(lab.http_status(site_port, "/"), 200);
    let workers_before = nginx_workers(&lab);
    for unit in ["api.service", "web.service"] {
        ok(lab.systemctl(&["stop", unit]), "stop");
    }
    wait_port(api, false);
    wait_port(web, false);
    assert_eq!(lab.http_status(site_port, "/"), 502, "both servers fail");
    let marked = Instant::now();
    assert_eq!(http_get(site_port, "/").map(|r| r.0), Some(502));
    assert!(lab.nginx_error_log().contains("no live upstreams"));

    let (_, plan) = lab.medic_json(&["plan"]);
    let started = Instant::now();
    let (code, applied) = lab.apply(&[], &[]);
    let took = started.elapsed();
    let answered_after_marking = marked.elapsed();
    assert_eq!(
        (code, applied["outcome"].as_str()),
        (0, Some("healed")),
        "{applied:#}\n{}",
        lab.nginx_error_log()
    );
    eprintln!(
        "group reset: apply took {} ms; the site answered {} ms after nginx marked both servers failed (fail_timeout {FAIL_TIMEOUT_SECS} s)",
        took.as_millis(),
        answered_after_marking.as_millis()
    );
    assert!(
        answered_after_marking < Duration::from_secs(FAIL_TIMEOUT_SECS),
        "the site must answer before fail_timeout ends"
    );
    for unit in ["api.service", "web.service"] {
        assert_eq!(lab.unit_property(unit, "ActiveState"), "active");
    }
    let restarted: Vec<&str> = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "systemd")
        .filter_map(|a| a["unit"].as_str())
        .collect();
    assert_eq!(
        restarted,
        ["api.service", "web.service"],
        "each unit once: {plan:#}"
    );
    assert!(
        plan["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "nginx_reload"),
        "the group is reset: {plan:#}"
    );
    assert_ne!(nginx_workers(&lab), workers_before, "nginx was reloaded");
}

/// A group with a live server left is not reloaded: the restart of its one dead server is
/// enough, nginx keeps using the live one meanwhile.
#[test]
fn lab_group_with_a_live_server_left_is_not_reloaded() {
    let lab = Lab::start();
    let (site_port, api, web) = (lab.base + 5, lab.port("api"), lab.port("web"));
    fs::write(
        lab.dir.join("nginx/sites-enabled/pair.conf"),
        format!(
            "upstream pair {{\n    server 127.0.0.1:{api};\n    server 127.0.0.1:{web};\n}}\n\nserver {{\n    listen 127.0.0.1:{site_port};\n    server_name pair.lab;\n\n    location / {{\n        proxy_pass http://pair;\n    }}\n}}\n"
        ),
    )
    .unwrap();
    reload_nginx(&lab);
    ok(lab.systemctl(&["stop", "web.service"]), "stop web");
    wait_port(web, false);
    let workers = nginx_workers(&lab);
    let (_, plan) = lab.medic_json(&["plan"]);
    assert!(
        !plan["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "nginx_reload"),
        "{plan:#}"
    );
    let (code, applied) = lab.apply(&[], &[]);
    assert_eq!((code, applied["outcome"].as_str()), (0, Some("healed")));
    assert_eq!(nginx_workers(&lab), workers, "nginx was not reloaded");
}

/// The PIDs of nginx's workers (a reload replaces them).
fn nginx_workers(lab: &Lab) -> Vec<u32> {
    let master = lab.main_pid("nginx.service").expect("nginx runs");
    let mut pids: Vec<u32> = lab
        .cgroup_pids()
        .into_iter()
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(") ")
                        .and_then(|(_, r)| r.split(' ').nth(1).map(str::to_string))
                })
                .is_some_and(|ppid| ppid == master.to_string())
        })
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.contains("nginx: worker"))
        })
        .collect();
    pids.sort_unstable();
    pids
}
