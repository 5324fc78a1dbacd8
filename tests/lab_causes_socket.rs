//! Unix-socket and backend-process causes with real components: PHP-FPM behind `fastcgi_pass
//! unix:…` with nginx's workers running as www-data, and Django on gunicorn. Each fault is made
//! the way it happens on a host, shows as a real 502 through nginx, and is diagnosed by its cause
//! id; the fixable ones are healed to 200, the crash loop is reported and left alone.

use crate::support::lab::{http_get, Lab};
use serde_json::Value;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

/// The finding for one site, failing with the whole diagnosis when there is none.
fn finding<'a>(diagnosis: &'a Value, site: &str) -> &'a Value {
    diagnosis["findings"]
        .as_array()
        .and_then(|all| all.iter().find(|f| f["site"] == site))
        .unwrap_or_else(|| panic!("no finding for {site}: {diagnosis:#}"))
}

fn systemctl_ok(lab: &Lab, args: &[&str]) {
    let out = lab.systemctl(args);
    assert!(
        out.status.success(),
        "systemctl --user {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until `check` holds, failing with `what` after `limit`.
fn wait_for(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sets `key = value` lines of the lab's php-fpm pool.
fn set_pool(lab: &Lab, settings: &[(&str, &str)]) {
    let path = lab.dir.join("php/pool.d/www.conf");
    let text = fs::read_to_string(&path).expect("pool file");
    let new: Vec<String> = text
        .lines()
        .map(|l| {
            settings
                .iter()
                .find(|(k, _)| l.split('=').next().map(str::trim) == Some(k))
                .map_or_else(|| l.to_string(), |(k, v)| format!("{k} = {v}"))
        })
        .collect();
    fs::write(&path, new.join("\n") + "\n").expect("write pool file");
}

#[test]
fn lab_php_and_django_sites_answer_and_diagnose_is_healthy() {
    let lab = Lab::start();
    // bodies may come chunked: look for the text, not at the exact bytes
    let (status, body) = http_get(lab.port("php_site"), "/").expect("php site answers");
    assert!(
        status == 200 && body.contains("php ok\n"),
        "{status} {body:?}"
    );
    let (status, body) = http_get(lab.port("django_site"), "/").expect("django site answers");
    assert!(
        status == 200 && body.contains("django ok\n"),
        "{status} {body:?}"
    );
    let meta = fs::metadata(lab.php_socket()).expect("php-fpm's socket");
    assert_eq!(
        (meta.mode() & 0o777, meta.uid()),
        (0o660, 33),
        "the pool's socket is www-data's, mode 0660"
    );
    let (code, diagnosis) = lab.medic_json(&["diagnose"]);
    assert_eq!(
        (code, &diagnosis["healthy"]),
        (0, &Value::Bool(true)),
        "{diagnosis:#}"
    );
    // php-fpm's socket is tied to its unit and pool from the --fpm-config file.
    let (_, facts) = lab.medic_json(&["facts"]);
    let pool = &facts["fpm_pools"][0];
    assert_eq!(pool["unit"], "php-fpm.service", "{facts:#}");
    assert_eq!(
        pool["address"].as_str(),
        Some(format!("unix:{}", lab.php_socket().display()).as_str())
    );
    assert_eq!(facts["worker"]["user"], "www-data");
}

#[test]
fn lab_heals_a_missing_php_fpm_socket() {
    let lab = Lab::start();
    systemctl_ok(&lab, &["stop", "php-fpm.service"]);
    assert!(!lab.php_socket().exists(), "php-fpm removes its socket");
    assert_eq!(lab.http_status(lab.port("php_site"), "/"), 502);

    let (code, diagnosis) = lab.medic_json(&["diagnose"]);
    let explained = lab.explain("socket-missing");
    assert!(explained.contains("socket-missing"), "{explained}");
    assert_eq!(code, 2, "{diagnosis:#}");
    let f = finding(&diagnosis, "php.lab");
    assert_eq!(f["cause"], "socket-missing", "{diagnosis:#}");
    assert_eq!(f["unit"], "php-fpm.service");
    assert_eq!(f["conclusive"], true);

    let applied = lab.apply_heals(lab.port("php_site"));
    let kinds: Vec<&str> = applied["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["systemd", "wait_listen", "probe"], "{applied:#}");
    assert!(lab.php_socket().exists());
}

#[test]
fn lab_heals_a_php_fpm_socket_nginx_may_not_open() {
    let lab = Lab::start();
    set_pool(
        &lab,
        &[
            ("listen.owner", "root"),
            ("listen.group", "root"),
            ("listen.mode", "0600"),
        ],
    );
    systemctl_ok(&lab, &["restart", "php-fpm.service"]);
    wait_for(
        Duration::from_secs(10),
        "php-fpm's socket turns root's",
        || fs::metadata(lab.php_socket()).is_ok_and(|m| m.uid() == 0 && m.mode() & 0o777 == 0o600),
    );
    assert_eq!(lab.http_status(lab.port("php_site"), "/"), 502);
    assert!(
        lab.nginx_error_log().contains("(13: Permission denied)"),
        "a real permission fault: {}",
        lab.nginx_error_log()
    );

    let (code, diagnosis) = lab.medic_json(&["diagnose"]);
    let explained = lab.explain("socket-permission");
    assert!(explained.contains("socket-permission"), "{explained}");
    assert_eq!(code, 2);
    let f = finding(&diagnosis, "php.lab");
    assert_eq!(f["cause"], "socket-permission", "{diagnosis:#}");
    assert_eq!(f["unit"], "php-fpm.service");
    assert_eq!(f["conclusive"], true, "{diagnosis:#}");

    let before = lab.config_files();
    let (code, plan) = lab.medic_json(&["plan"]);
    assert_eq!(code, 2);
    let kinds: Vec<&str> = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        ["set_pool_listen", "systemd", "wait_listen", "probe"],
        "{plan:#}"
    );
    let diff = plan["actions"][0]["diff"].as_str().expect("a diff");
    assert!(
        diff.contains("-listen.mode = 0600") && diff.contains("+listen.mode = 0660"),
        "{diff}"
    );
    assert!(lab.config_files() == before, "plan changes no file");

    lab.apply_heals(lab.port("php_site"));
    let pool = fs::read_to_string(lab.dir.join("php/pool.d/www.conf")).unwrap();
    for line in [
        "listen.owner = www-data",
        "listen.group = www-data",
        "listen.mode = 0660",
    ] {
        assert!(pool.contains(line), "{pool}");
    }
    let meta = fs::metadata(lab.php_socket()).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (33, 33, 0o660),
        "exactly the worker user and group, never a world-writable socket"
    );
}

#[test]
fn lab_reports_a_crash_looping_django_and_changes_nothing() {
    let lab = Lab::start();
    let env = lab.dir.join("config/django.env");
    fs::write(&env, "DJANGO_SETTINGS_MODULE=project.no_such_settings\n").unwrap();
    systemctl_ok(&lab, &["restart", "django.service"]);
    // Restart=on-failure, RestartSec=200ms: systemd retries until the start limit stops it.
    wait_for(
        Duration::from_secs(30),
        "django.service fails for good",
        || lab.unit_property("django.service", "ActiveState") == "failed",
    );
    assert_eq!(lab.http_status(lab.port("django_site"), "/"), 502);
    let restarts = lab.unit_property("django.service", "NRestarts");
    assert_ne!(restarts, "0", "systemd restarted it before giving up");
    let started = lab.unit_property("django.service", "ExecMainStartTimestamp");
    let last_line = lab
        .log("django")
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .expect("gunicorn said something")
        .trim_end()
        .to_string();
    assert!(last_line.contains("Worker failed to boot"), "{last_line}");
    let files = lab.config_files();

    let (code, diagnosis) = lab.medic_json(&["diagnose"]);
    let explained = lab.explain("crash-loop");
    assert!(explained.contains("crash-loop"), "{explained}");
    assert_eq!(code, 2);
    let f = finding(&diagnosis, "django.lab");
    assert_eq!(f["cause"], "crash-loop", "{diagnosis:#}");
    assert_eq!(f["unit"], "django.service");
    let evidence = f["evidence"].to_string();
    assert!(
        evidence.contains(&last_line.replace('"', "\\\"")),
        "{evidence}"
    );
    assert!(
        evidence.contains("No module named 'project.no_such_settings'"),
        "{evidence}"
    );
    assert!(
        f["also_matched"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "backend-down"),
        "backend-down would restart it; crash-loop comes first: {f:#}"
    );

    let (code, applied) = lab.apply(&[], &[(lab.port("django_site"), 502)]);
    assert_eq!(
        code, 2,
        "a crash loop is reported, never acted on: {applied:#}"
    );
    assert_eq!(applied["outcome"], "nothing_to_do");
    assert_eq!(applied["actions"], serde_json::json!([]));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(lab.unit_property("django.service", "ActiveState"), "failed");
    assert_eq!(lab.unit_property("django.service", "NRestarts"), restarts);
    assert_eq!(
        lab.unit_property("django.service", "ExecMainStartTimestamp"),
        started,
        "not started again"
    );
    assert!(lab.config_files() == files, "no file changed");
    // The other sites are untouched.
    assert_eq!(lab.http_status(lab.port("php_site"), "/"), 200);
    assert_eq!(lab.http_status(lab.port("api_site"), "/"), 200);
}

#[test]
fn lab_a_backend_failing_at_its_start_is_named_before_any_restart() {
    let lab = Lab::start();
    let (site_port, port) = (lab.base + 8, lab.base + 18);
    let site = lab.dir.join("nginx/sites-enabled/boot.conf");
    fs::write(
        &site,
        format!(
            "server {{\n    listen 127.0.0.1:{site_port};\n    server_name boot.lab;\n    location / {{\n        proxy_pass http://127.0.0.1:{port};\n    }}\n}}\n"
        ),
    )
    .unwrap();
    systemctl_ok(&lab, &["reload", "nginx.service"]);
    wait_for(Duration::from_secs(10), "boot.lab answers 502", || {
        lab.http_status(site_port, "/") == 502
    });
    // A backend that exits with status 3 half a second after starting, its last line saying why.
    let log = lab.dir.join("logs/boot.log");
    let why = format!("boot: cannot listen on 127.0.0.1:{port}: /etc/boot/secret.key is missing; exiting with status 3");
    let app = format!(
        "import sys, time\nprint('boot: starting', flush=True)\ntime.sleep(0.5)\nprint({why:?}, flush=True)\nsys.exit(3)\n"
    );
    let out = std::process::Command::new("timeout")
        .args([
            "30",
            "systemd-run",
            "--user",
            "--quiet",
            "--unit",
            "boot.service",
        ])
        .arg(format!("--setenv=PORT={port}"))
        .arg(format!(
            "--property=StandardOutput=append:{}",
            log.display()
        ))
        .arg("--property=StandardError=inherit")
        .args(["/usr/bin/python3", "-c", &app])
        .envs(lab.env())
        .output()
        .expect("systemd-run");
    assert!(
        out.status.success(),
        "systemd-run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(Duration::from_secs(15), "boot.service fails", || {
        lab.unit_property("boot.service", "ActiveState") == "failed"
    });
    assert_eq!(lab.unit_property("boot.service", "ExecMainStatus"), "3");
    let started = lab.unit_property("boot.service", "ExecMainStartTimestamp");
    let files = lab.config_files();

    let (code, diagnosis) = lab.medic_json(&["diagnose"]);
    assert_eq!(code, 2);
    let f = finding(&diagnosis, "boot.lab");
    assert_eq!(f["cause"], "start-failure", "{diagnosis:#}");
    assert_eq!(f["unit"], "boot.service");
    let evidence: Vec<&str> = f["evidence"]
        .as_array()
        .expect("evidence")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        evidence
            .iter()
            .any(|e| e.contains("exited by itself with status 3")),
        "{evidence:#?}"
    );
    assert!(
        evidence
            .iter()
            .any(|e| e.trim_end().ends_with(&format!("    {why}"))),
        "its last line is in the evidence: {evidence:#?}"
    );
    let explained = lab.explain("start-failure");
    assert!(explained.contains("start-failure"), "{explained}");

    let (code, applied) = lab.apply(&[], &[(site_port, 502)]);
    assert_eq!(
        code, 2,
        "a start failure is reported, not restarted: {applied:#}"
    );
    assert_eq!(applied["actions"], serde_json::json!([]), "{applied:#}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(lab.unit_property("boot.service", "ActiveState"), "failed");
    assert_eq!(
        lab.unit_property("boot.service", "ExecMainStartTimestamp"),
        started,
        "not started again"
    );
    assert!(lab.config_files() == files, "no file changed");
    assert_eq!(lab.http_status(lab.port("api_site"), "/"), 200);
    assert_eq!(lab.http_status(lab.port("php_site"), "/"), 200);
}
