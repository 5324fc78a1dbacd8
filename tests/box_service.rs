//! The packaged service as an administrator meets it, in the production-shaped box: what the
//! journal shows (priorities, fields, `journalctl -u BACKEND`), `pause`/`resume`, and a backend
//! the sandbox keeps nginx-medic out of (an app under `/home`): reported at plan time with the
//! drop-in that would allow the heal, nothing attempted, other targets still healed.

use crate::support::system_box::{wait_until, SystemBox};
use std::time::Duration;

/// How long a heal may take here (uvicorn alone takes over a second to listen).
const HEALED_WITHIN: Duration = Duration::from_secs(10);

/// The api site's port and its upstream (lab/box/provision.sh).
const API_SITE: u16 = 8081;
const API: &str = "127.0.0.1:8000";

fn healed(b: &SystemBox, what: &str) -> Duration {
    wait_until(HEALED_WITHIN, what, || b.http_status(API_SITE, "/") == 200)
}

fn journal_lines(b: &SystemBox, args: &[&str]) -> String {
    b.journal("nginx-medic.service", args)
}

#[test]
fn box_journal_pause_and_sandbox_as_an_administrator_sees_them() {
    let b = SystemBox::up("service");

    // --- a heal, as journalctl shows it -------------------------------------------------------
    b.systemctl_ok(&["stop", "api.service"]);
    let took = healed(&b, "api healed after a stop");
    println!("api stopped: 200 again after {} ms", took.as_millis());
    let warnings = journal_lines(&b, &["-p", "warning"]);
    let incident = format!("incident [{API} backend-down]");
    assert!(warnings.contains(&incident), "-p warning:\n{warnings}");
    let by_cause = journal_lines(&b, &["CAUSE=backend-down"]);
    assert!(
        by_cause.contains(&incident),
        "CAUSE=backend-down:\n{by_cause}"
    );
    let by_upstream = format!("UPSTREAM={API}");
    wait_until(Duration::from_secs(5), "the heal in the journal", || {
        journal_lines(&b, &[&by_upstream]).contains(&format!("healed [{API} backend-down]"))
    });
    let api_log = b.journal("api.service", &[]);
    assert!(
        api_log.contains("nginx-medic") && api_log.contains("step systemd api.service"),
        "journalctl -u api.service shows nginx-medic's restart:\n{api_log}"
    );

    // --- pause: reported, not touched; resume: healed -----------------------------------------
    b.exec_ok(&["nginx-medic", "pause", "--for", "10m", "api.service"]);
    wait_until(Duration::from_secs(5), "STATUS= shows the pause", || {
        b.unit_property("nginx-medic.service", "StatusText")
            .contains("paused: api.service")
    });
    b.systemctl_ok(&["stop", "api.service"]);
    wait_until(
        Duration::from_secs(5),
        "the paused incident is reported",
        || {
            journal_lines(&b, &["-p", "warning", "--since", "-1min"])
                .contains("nothing is done (nginx-medic resume api.service)")
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(b.unit_property("api.service", "ActiveState"), "inactive");
    assert_eq!(b.http_status(API_SITE, "/"), 502);
    b.exec_ok(&["nginx-medic", "resume", "api.service"]);
    let took = healed(&b, "api healed after resume");
    println!("resume: 200 again after {} ms", took.as_millis());

    // --- an app under /home: the drop-in at plan time, nothing written ------------------------
    home_app(&b);
    let missing = wait_missing(&b, HOME_UPSTREAM);
    assert!(
        missing.contains("ProtectHome=read-only")
            && missing.contains("ReadWritePaths=/home/homeapp/app"),
        "the finding names the drop-in:\n{missing}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        b.read_file("/home/homeapp/app/.env"),
        HOME_ENV,
        "nothing written"
    );
    let log = journal_lines(&b, &["--since", "-2min"]);
    assert!(
        !log.contains(&format!("healing [{HOME_UPSTREAM}")),
        "never attempted:\n{log}"
    );
    // and the others are still healed
    b.systemctl_ok(&["stop", "api.service"]);
    healed(&b, "api healed beside the /home app");

    // --- an escalation is priority 3 -----------------------------------------------------------
    flap_api(&b);
    wait_until(
        Duration::from_secs(20),
        "an escalation at priority err",
        || journal_lines(&b, &["-p", "err", "--since", "-1min"]).contains("escalated"),
    );
    assert_eq!(b.unit_property("nginx-medic.service", "NRestarts"), "0");
}

/// The app under /home: its own user, its bind host in its `.env` (wrong: nginx dials
/// 127.0.0.1), a site on 8087.
const HOME_UPSTREAM: &str = "127.0.0.1:8007";
const HOME_ENV: &str = "HOST=127.0.0.2\nPORT=8007\n";

fn home_app(b: &SystemBox) {
    b.exec_ok(&[
        "useradd",
        "--create-home",
        "--home-dir",
        "/home/homeapp",
        "--shell",
        "/usr/sbin/nologin",
        "homeapp",
    ]);
    b.exec_ok(&[
        "install",
        "-d",
        "-o",
        "homeapp",
        "-g",
        "homeapp",
        "/home/homeapp/app",
    ]);
    b.write_file("/home/homeapp/app/.env", HOME_ENV);
    b.exec_ok(&["chown", "homeapp:homeapp", "/home/homeapp/app/.env"]);
    b.write_file(
        "/etc/systemd/system/homeapp.service",
        "[Unit]\nDescription=an app under /home\n[Service]\nUser=homeapp\nEnvironmentFile=/home/homeapp/app/.env\nWorkingDirectory=/home/homeapp/app\nExecStart=/usr/bin/python3 -m http.server --bind ${HOST} ${PORT}\n",
    );
    b.write_file(
        "/etc/nginx/sites-available/homeapp",
        "server {\n    listen 127.0.0.1:8087;\n    location / {\n        proxy_pass http://127.0.0.1:8007;\n    }\n}\n",
    );
    b.exec_ok(&[
        "ln",
        "-s",
        "../sites-available/homeapp",
        "/etc/nginx/sites-enabled/homeapp",
    ]);
    b.systemctl_ok(&["daemon-reload"]);
    b.systemctl_ok(&["start", "homeapp.service"]);
    wait_until(Duration::from_secs(10), "the /home app listens", || {
        b.listeners()
            .iter()
            .any(|l| l.starts_with("127.0.0.2:8007"))
    });
    b.systemctl_ok(&["reload", "nginx.service"]);
    wait_until(
        Duration::from_secs(10),
        "the /home app's site answers 502",
        || b.http_status(8087, "/") == 502,
    );
}

/// Waits until the daemon reports the bind-mismatch on UPSTREAM inconclusive; its `MISSING`.
fn wait_missing(b: &SystemBox, upstream: &str) -> String {
    let mut missing = String::new();
    wait_until(Duration::from_secs(15), "an inconclusive report", || {
        let entries = b.journal_entries("nginx-medic.service", &["--since", "-5min"]);
        missing = entries
            .iter()
            .filter(|e| e["UPSTREAM"].as_str() == Some(upstream))
            .filter(|e| e["CAUSE"].as_str() == Some("bind-mismatch"))
            .filter_map(|e| e["MISSING"].as_str())
            .collect::<Vec<_>>()
            .join("\n");
        !missing.is_empty()
    });
    missing
}

/// Makes api.service exit soon after each start with `Restart=always`: systemd restarts it by
/// itself, `NRestarts` climbs, and nginx-medic escalates instead of joining in.
fn flap_api(b: &SystemBox) {
    b.exec_ok(&["mkdir", "-p", "/etc/systemd/system/api.service.d"]);
    b.write_file(
        "/etc/systemd/system/api.service.d/flap.conf",
        "[Unit]\nStartLimitIntervalSec=0\n[Service]\nExecStart=\nExecStart=/bin/sh -c 'sleep 0.3; exit 3'\nRestart=always\nRestartSec=200ms\n",
    );
    b.systemctl_ok(&["daemon-reload"]);
    b.systemctl_ok(&["restart", "api.service"]);
}
