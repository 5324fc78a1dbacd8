//! `nginx-medic run` in the lab, unattended: real faults (a stopped unit, a SIGKILLed backend, a
//! switched bind host, a unit that dies on every start) healed with no command given, or only
//! reported in observe mode; the brakes, the hooks, SIGHUP, SIGTERM, sd_notify and the metrics.

use crate::support::lab::{http_get, Lab};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running `nginx-medic run` against a lab; killed on drop if still running.
struct Daemon {
    child: Child,
    log: PathBuf,
    notify: UnixDatagram,
}

impl Daemon {
    /// Appends `daemon_yaml` (a `daemon:` section) to the lab's config, starts the daemon with
    /// the lab's environment and waits for READY=1 on its sd_notify socket.
    fn start(lab: &Lab, daemon_yaml: &str) -> Daemon {
        let mut config = fs::read_to_string(lab.config()).expect("lab config");
        if !config.contains("\ndaemon:") {
            config.push_str(daemon_yaml);
            fs::write(lab.config(), config).expect("write lab config");
        }
        let socket = lab.dir.join("notify.sock");
        let _ = fs::remove_file(&socket);
        let notify = UnixDatagram::bind(&socket).expect("notify socket");
        notify
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let log = lab.dir.join("daemon.log");
        let out = fs::File::create(&log).expect("daemon log");
        let child = Command::new(env!("CARGO_BIN_EXE_nginx-medic"))
            .arg("--config")
            .arg(lab.config())
            .arg("run")
            .envs(lab.env())
            .env("NOTIFY_SOCKET", &socket)
            .env("WATCHDOG_USEC", "1000000")
            .env_remove("NGINX_MEDIC_LOG")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("spawn nginx-medic run");
        let daemon = Daemon { child, log, notify };
        let ready = daemon
            .wait_notification("READY=1")
            .pop()
            .unwrap_or_default();
        assert!(
            ready.starts_with("READY=1\nSTATUS="),
            "first notification: {ready:?}\n{}",
            daemon.log()
        );
        daemon
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid")
    }

    fn next_notification(&self) -> String {
        let mut buf = [0u8; 4096];
        match self.notify.recv(&mut buf) {
            Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
            Err(e) => panic!("no sd_notify message: {e}\n{}", self.log()),
        }
    }

    /// Every notification until one starts with `prefix`.
    fn wait_notification(&self, prefix: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let n = self.next_notification();
            let done = n.starts_with(prefix);
            seen.push(n);
            if done {
                return seen;
            }
        }
    }

    /// The notifications queued now (the queue is short: read it before it fills).
    fn drain(&self) -> Vec<String> {
        self.notify.set_nonblocking(true).expect("nonblocking");
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.notify.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        self.notify.set_nonblocking(false).expect("blocking");
        out
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log holds `needle`; panics with the log after `timeout`.
    fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(
                start.elapsed() < timeout,
                "no `{needle}` in the daemon log within {timeout:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).expect("kill");
    }

    /// Waits up to `timeout` for the daemon to exit.
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                start.elapsed() < timeout,
                "the daemon did not exit within {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then the exit status.
    fn stop(&mut self) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait_exit(Duration::from_secs(60))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn apply_config(lab: &Lab, extra: &str) -> String {
    format!(
        "daemon:\n  mode: apply\n  probe_interval: 500ms\n  crash_loop: {{ max_failures: 2, within: 1m }}\n  metrics: 127.0.0.1:{}\n{extra}",
        lab.base + 15
    )
}

/// Time from now until `GET /` on the site answers 200 (through nginx).
fn time_to_200(lab: &Lab, site: &str, fault: Instant, timeout: Duration) -> Duration {
    let port = lab.port(site);
    loop {
        if lab.http_status(port, "/") == 200 {
            return fault.elapsed();
        }
        assert!(
            fault.elapsed() < timeout,
            "{site} did not answer 200 within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn journal(lab: &Lab) -> Vec<Value> {
    fs::read_to_string(lab.dir.join("state/journal.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("journal line"))
        .collect()
}

/// Journal entries of `kind` on `target`.
fn journal_count(lab: &Lab, kind: &str, target: &str) -> usize {
    journal(lab)
        .iter()
        .filter(|e| e["kind"] == kind && e["target"] == target)
        .count()
}

/// A systemd drop-in for `unit`, then daemon-reload.
fn drop_in(lab: &Lab, unit: &str, text: &str) {
    let dir = lab.dir.join(format!("config/systemd/user/{unit}.d"));
    fs::create_dir_all(&dir).expect("drop-in dir");
    fs::write(dir.join("test.conf"), text).expect("drop-in");
    let out = lab.systemctl(&["daemon-reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn metrics(lab: &Lab) -> String {
    let Some((status, body)) = http_get(lab.base + 15, "/metrics") else {
        let curl = Command::new("curl")
            .args([
                "-sv",
                "--max-time",
                "5",
                &format!("http://127.0.0.1:{}/metrics", lab.base + 15),
            ])
            .output()
            .unwrap();
        panic!(
            "the metrics endpoint does not answer: {}{}",
            String::from_utf8_lossy(&curl.stdout),
            String::from_utf8_lossy(&curl.stderr)
        );
    };
    assert_eq!(status, 200);
    body
}

#[test]
fn lab_daemon_heals_stop_kill_and_bind_switch_unattended() {
    let lab = Lab::start();
    let mut daemon = Daemon::start(&lab, &apply_config(&lab, ""));

    // a second instance is refused by the lock
    let second = lab.medic(&["run"]);
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("another `nginx-medic run` holds"), "{err}");

    let api_pid = lab.main_pid("api.service");
    assert!(lab.systemctl(&["stop", "api.service"]).status.success());
    let stopped = time_to_200(&lab, "api_site", Instant::now(), Duration::from_secs(20));
    assert_ne!(lab.main_pid("api.service"), api_pid);
    assert_sites_after_daemon(&lab, &daemon, &[]);

    let web_pid = lab.main_pid("web.service").expect("web runs");
    let fault = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(web_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill web");
    // the site may still answer for a moment while the process dies
    while lab.http_status(lab.port("web_site"), "/") == 200
        && fault.elapsed() < Duration::from_secs(2)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let killed = time_to_200(&lab, "web_site", fault, Duration::from_secs(20));
    assert_ne!(lab.main_pid("web.service"), Some(web_pid));
    assert_sites_after_daemon(&lab, &daemon, &[]);

    lab.set_env("api.env", "HOST", "127.0.0.2");
    let fault = Instant::now();
    let _ = lab.systemctl(&["restart", "api.service"]);
    let switched = time_to_200(&lab, "api_site", fault, Duration::from_secs(30));
    let env = fs::read_to_string(lab.dir.join("config/api.env")).unwrap();
    assert!(env.contains("HOST=127.0.0.1\n"), "{env}");
    assert_sites_after_daemon(&lab, &daemon, &[]);

    println!(
        "time from fault to the first 200 through nginx: stopped unit {} ms, SIGKILL {} ms, bind host switched {} ms",
        stopped.as_millis(),
        killed.as_millis(),
        switched.as_millis()
    );
    let api = format!("127.0.0.1:{}", lab.port("api"));
    let web = format!("127.0.0.1:{}", lab.port("web"));
    let log = daemon.wait_log(
        &format!("healed [{api} bind-mismatch]"),
        Duration::from_secs(10),
    );
    assert_eq!(log.matches(" healed [").count(), 3, "{log}");
    assert!(log.contains("incident [127.0.0.1:"), "{log}");
    assert!(
        !log.contains("\x1b["),
        "no ANSI colours when stderr is a file"
    );
    assert_eq!(journal_count(&lab, "systemd", "api.service"), 2);
    assert_eq!(journal_count(&lab, "systemd", "web.service"), 1);

    // metrics: valid Prometheus text with the counters
    std::thread::sleep(Duration::from_millis(1200)); // a probe round after the last heal
    let text = metrics(&lab);
    let samples = check_prometheus_text(&text);
    openmetrics_check(&text);
    let get = |k: &str| {
        samples
            .get(k)
            .copied()
            .unwrap_or_else(|| panic!("no `{k}`:\n{text}"))
    };
    assert_eq!(
        get(&format!(
            "nginx_medic_incidents_total{{target=\"{api}\",cause=\"backend-down\"}}"
        )),
        1.0
    );
    assert_eq!(
        get(&format!(
            "nginx_medic_incidents_total{{target=\"{api}\",cause=\"bind-mismatch\"}}"
        )),
        1.0
    );
    assert_eq!(
        get(&format!(
            "nginx_medic_incidents_total{{target=\"{web}\",cause=\"backend-down\"}}"
        )),
        1.0
    );
    assert_eq!(
        get("nginx_medic_actions_total{kind=\"set_bind_host\",outcome=\"ok\"}"),
        1.0
    );
    assert!(get("nginx_medic_actions_total{kind=\"probe\",outcome=\"ok\"}") >= 3.0);
    assert_eq!(get("nginx_medic_heal_seconds_count"), 3.0);
    assert_eq!(get("nginx_medic_heal_seconds_bucket{le=\"+Inf\"}"), 3.0);
    // timed from the first evidence (the unit's exit, the trigger), not from the incident
    assert_eq!(get("nginx_medic_incident_heal_seconds_count"), 3.0);
    assert!(
        get("nginx_medic_heal_seconds_sum") >= get("nginx_medic_incident_heal_seconds_sum"),
        "{text}"
    );
    assert_eq!(get("nginx_medic_rate_limited_total"), 0.0);
    assert_eq!(get("nginx_medic_escalations_total"), 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for site in ["api.lab", "web.lab"] {
        let ts = get(&format!(
            "nginx_medic_last_successful_probe_timestamp_seconds{{site=\"{site}\"}}"
        ));
        assert!(now - ts < 10.0, "{site}: last good probe {ts}, now {now}");
    }

    let notes = daemon.drain();
    assert!(notes.iter().any(|n| n == "WATCHDOG=1"), "{notes:?}");
    let status = daemon.stop();
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
    daemon.wait_notification("STOPPING=1");
}

#[test]
fn lab_daemon_escalates_a_crash_loop_once_and_leaves_it_alone() {
    let lab = Lab::start();
    // the shipped backend-down, waiting 2 s (not 15 s) for the socket
    let fast = lab.dir.join("fast-playbooks");
    fs::create_dir_all(&fast).unwrap();
    let shipped = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks/backend-down.yaml"),
    )
    .unwrap();
    fs::write(
        fast.join("backend-down.yaml"),
        shipped.replace("timeout: 15s", "timeout: 2s"),
    )
    .unwrap();
    let config = fs::read_to_string(lab.config()).unwrap();
    let repo_playbooks = format!("{}/playbooks\n", env!("CARGO_MANIFEST_DIR"));
    let config = config.replace(
        &repo_playbooks,
        &format!("{repo_playbooks}  - {}\n", fast.display()),
    );
    fs::write(lab.config(), config).unwrap();
    let hook_out = lab.dir.join("hook.jsonl");
    // a window shorter than the backend's runs: each failed run is backend-down's, not a
    // start failure, so that the daemon's own heals are what loops
    let hook = format!(
        "  start_failure_window: 100ms\n  hooks:\n    - exec: [/bin/sh, -c, 'cat >> {}; echo >> {}']\n",
        hook_out.display(),
        hook_out.display()
    );
    let mut daemon = Daemon::start(&lab, &apply_config(&lab, &hook));

    // every start of api.service now fails 0.3 s later
    drop_in(
        &lab,
        "api.service",
        "[Service]\nExecStart=\nExecStart=/bin/sh -c 'sleep 0.3; exit 1'\n",
    );
    let _ = lab.systemctl(&["restart", "api.service"]);
    let log = daemon.wait_log("escalated: a person is needed", Duration::from_secs(40));
    assert!(log.contains("reason=\"crash_loop\""), "{log}");
    let restarts = journal_count(&lab, "systemd", "api.service");
    assert_eq!(restarts, 2, "restarted exactly max_failures times:\n{log}");

    // left alone: no more restarts, no second escalation, while the site keeps failing
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lab.http_status(lab.port("api_site"), "/"), 502);
    assert_eq!(journal_count(&lab, "systemd", "api.service"), 2);
    assert_eq!(
        journal_count(&lab, "escalate", &format!("127.0.0.1:{}", lab.port("api"))),
        1
    );
    let docs: Vec<Value> = fs::read_to_string(&hook_out)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("hook document"))
        .collect();
    let escalated: Vec<&Value> = docs.iter().filter(|d| d["event"] == "escalated").collect();
    assert_eq!(
        escalated.len(),
        1,
        "the hook is called once for the escalation: {docs:#?}"
    );
    let doc = escalated[0];
    assert_eq!(doc["reason"], "crash_loop");
    assert_eq!(doc["cause"], "backend-down");
    assert_eq!(doc["unit"], "api.service");
    assert_eq!(doc["target"], format!("127.0.0.1:{}", lab.port("api")));
    assert_eq!(
        docs.iter().filter(|d| d["event"] == "heal_failed").count(),
        2,
        "{docs:#?}"
    );
    let samples = check_prometheus_text(&metrics(&lab));
    assert_eq!(samples.get("nginx_medic_escalations_total"), Some(&1.0));
    // `status` shows the target left alone, its brakes, and the daemon running
    let api = format!("127.0.0.1:{}", lab.port("api"));
    let (code, status) = status_json(&lab);
    assert_eq!(code, Some(2), "an incident is open: {status:#}");
    assert_eq!(status["running"], true);
    assert_eq!(status["current"], true, "{status:#}");
    assert_eq!(status["pid"], daemon.pid());
    let targets = status["daemon"]["targets"].as_array().unwrap();
    let target = targets
        .iter()
        .find(|t| t["target"] == api.as_str())
        .unwrap_or_else(|| panic!("{status:#}"));
    assert_eq!(target["state"], "left_alone", "{target:#}");
    assert_eq!(target["left_alone"], "escalated", "{target:#}");
    assert_eq!(target["unit"], "api.service");
    assert_eq!(target["incident"]["cause"], "backend-down", "{target:#}");
    assert_eq!(target["brakes"]["escalated"], "crash_loop", "{target:#}");
    assert_eq!(target["brakes"]["failures"], 2, "{target:#}");
    let web = format!("127.0.0.1:{}", lab.port("web"));
    let other = targets
        .iter()
        .find(|t| t["target"] == web.as_str())
        .unwrap();
    assert_eq!(other["state"], "healthy", "{other:#}");
    // the other sites were never touched
    assert_sites_after_daemon(&lab, &daemon, &[(lab.port("api_site"), 502)]);
    assert_eq!(daemon.stop().code(), Some(0));
    let (code, status) = status_json(&lab);
    assert_eq!(code, Some(4), "stopped: {status:#}");
    assert_eq!(status["running"], false);
}

/// `nginx-medic status --json` on the lab: its exit code and document.
fn status_json(lab: &Lab) -> (Option<i32>, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_nginx-medic"))
        .arg("--config")
        .arg(lab.config())
        .args(["status", "--json"])
        .envs(lab.env())
        .output()
        .expect("nginx-medic status");
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status --json: {e}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), doc)
}

#[test]
fn lab_daemon_names_a_start_failure_and_does_not_restart_it() {
    let lab = Lab::start();
    let mut daemon = Daemon::start(&lab, &apply_config(&lab, ""));
    // api.service now exits with status 3 at once, saying why
    drop_in(
        &lab,
        "api.service",
        "[Service]\nExecStart=\nExecStart=/bin/sh -c 'echo \"api: no secret key configured\"; exit 3'\n",
    );
    let _ = lab.systemctl(&["restart", "api.service"]);
    let log = daemon.wait_log("cause=start-failure", Duration::from_secs(30));
    assert!(log.contains("api: no secret key configured"), "{log}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        journal_count(&lab, "systemd", "api.service"),
        0,
        "never restarted:\n{}",
        daemon.log()
    );
    assert_eq!(lab.unit_property("api.service", "ActiveState"), "failed");
    assert_eq!(lab.http_status(lab.port("api_site"), "/"), 502);
    assert_sites_after_daemon(&lab, &daemon, &[(lab.port("api_site"), 502)]);
    assert_eq!(daemon.stop().code(), Some(0));
}

#[test]
fn lab_daemon_observe_mode_logs_the_plan_and_changes_nothing() {
    let lab = Lab::start();
    // no `mode:` key: observe is the default
    let config = "daemon:\n  probe_interval: 500ms\n  metrics: null\n".to_string();
    let mut daemon = Daemon::start(&lab, &config);
    let before = lab.config_files();
    assert!(lab.systemctl(&["stop", "api.service"]).status.success());
    lab.set_env("web.env", "HOST", "127.0.0.2");
    let _ = lab.systemctl(&["restart", "web.service"]);
    let config_after_fault = lab.config_files();

    let api = format!("127.0.0.1:{}", lab.port("api"));
    let web = format!("127.0.0.1:{}", lab.port("web"));
    daemon.wait_log(
        &format!("planned [{api} backend-down] upstream={api} cause=backend-down mode=\"observe\" step=1 action=systemd restart api.service"),
        Duration::from_secs(15),
    );
    let log = daemon.wait_log(
        &format!("planned [{web} bind-mismatch] upstream={web} cause=bind-mismatch mode=\"observe\" step=1 action=set the bind host of web.service: HOST=127.0.0.2 -> HOST=127.0.0.1"),
        Duration::from_secs(15),
    );
    assert!(
        log.contains("would heal; observe mode changes nothing"),
        "{log}"
    );
    std::thread::sleep(Duration::from_secs(2));
    let log = daemon.log();
    assert_eq!(
        log.matches(&format!(
            "planned [{api} backend-down] upstream={api} cause=backend-down mode=\"observe\" step=1"
        ))
        .count(),
        1,
        "the plan is logged once per incident, not per probe:\n{log}"
    );
    assert_eq!(lab.unit_property("api.service", "ActiveState"), "inactive");
    assert_eq!(lab.http_status(lab.port("api_site"), "/"), 502);
    assert_eq!(lab.http_status(lab.port("web_site"), "/"), 502);
    assert!(
        lab.config_files() == config_after_fault,
        "observe changed a file"
    );
    assert!(
        before != config_after_fault,
        "the fault itself changed web.env"
    );
    assert!(journal(&lab).is_empty(), "observe writes no journal entry");
    assert!(!log.contains(" healing ["), "{log}");
    assert_eq!(daemon.stop().code(), Some(0));
}

#[test]
fn lab_daemon_sighup_keeps_the_old_set_and_sigterm_finishes_the_transaction() {
    let lab = Lab::start();
    let extra = lab.dir.join("site-playbooks");
    fs::create_dir_all(&extra).unwrap();
    let config = fs::read_to_string(lab.config()).unwrap();
    let repo_playbooks = format!("{}/playbooks\n", env!("CARGO_MANIFEST_DIR"));
    fs::write(
        lab.config(),
        config.replace(
            &repo_playbooks,
            &format!("{repo_playbooks}  - {}\n", extra.display()),
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start(&lab, &apply_config(&lab, ""));

    // a broken playbook, then SIGHUP: refused with file:line, the old set keeps running
    fs::write(
        extra.join("broken.yaml"),
        "id: broken\ndescription: x\nseverity: critical\npriority: 5\nwhen: { fact: endpoint.listening, is: false }\nactions:\n  - systemd: { unit: \"{{unit.name}}\", op: restrat }\n",
    )
    .unwrap();
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    let log = daemon.wait_log("reload refused", Duration::from_secs(10));
    let place = format!(
        "{}:7:43: actions[0].systemd.op: unknown operation `restrat`",
        extra.join("broken.yaml").display()
    );
    assert!(log.contains(&place), "{log}");
    assert!(lab.systemctl(&["stop", "api.service"]).status.success());
    time_to_200(&lab, "api_site", Instant::now(), Duration::from_secs(20));
    let log = daemon.wait_log("healed [", Duration::from_secs(5));
    assert!(log.contains("cause=backend-down"), "{log}");
    assert_sites_after_daemon(&lab, &daemon, &[]);
    fs::remove_file(extra.join("broken.yaml")).unwrap();

    // SIGTERM while a transaction edits web.env and restarts a slow-starting web.service
    drop_in(
        &lab,
        "web.service",
        "[Service]\nExecStartPre=/bin/sleep 2\n",
    );
    lab.set_env("web.env", "HOST", "127.0.0.2");
    let _ = lab.systemctl(&["restart", "web.service"]);
    let start = Instant::now();
    while journal_count(
        &lab,
        "set_bind_host",
        &lab.dir.join("config/web.env").display().to_string(),
    ) == 0
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no bind edit:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let status = daemon.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
    let log = daemon.log();
    assert!(
        log.contains("finishing the transaction in flight before stopping"),
        "SIGTERM came mid-transaction:\n{log}"
    );
    let entries = journal(&lab);
    let tail: Vec<(Option<&str>, Option<&str>)> = entries
        .iter()
        .rev()
        .take(3)
        .rev()
        .map(|e| (e["kind"].as_str(), e["status"].as_str()))
        .collect();
    assert_eq!(
        tail,
        vec![
            (Some("probe"), Some("ok")),
            (Some("commit"), Some("ok")),
            (Some("heal_end"), Some("ok"))
        ],
        "the transaction ran to its end and committed: {entries:#?}"
    );
    let env = fs::read_to_string(lab.dir.join("config/web.env")).unwrap();
    assert_eq!(
        env,
        format!("HOST=127.0.0.1\nPORT={}\n", lab.port("web")),
        "whole, never half-written"
    );
    assert_sites_after_daemon(&lab, &daemon, &[]);
    let mut names: Vec<String> = fs::read_dir(lab.dir.join("config"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["api.env", "django.env", "systemd", "web.env"],
        "no temporary file left"
    );
    assert_eq!(lab.http_status(lab.port("web_site"), "/"), 200);
}

/// The OpenMetrics parser of the Python Prometheus client (Debian's `python3-prometheus-client`,
/// installed by scripts/setup), which rejects anything the format does not allow.
fn openmetrics_check(text: &str) {
    use std::io::Write;
    let script = "import sys\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse\n\
        print(sum(len(f.samples) for f in parse(sys.stdin.read())))\n";
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run /usr/bin/python3 (scripts/setup installs it): {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused the text:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A strict reader of the OpenMetrics text format: every sample belongs to a family with a
/// `# TYPE` line before it (a counter's samples end in `_total`), names and labels are
/// well-formed, values parse, and `# EOF` ends it. Returns each sample (`name{labels}` as
/// written) with its value.
fn check_prometheus_text(text: &str) -> BTreeMap<String, f64> {
    fn name_ok(n: &str) -> bool {
        let mut chars = n.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    let text = text
        .strip_suffix("# EOF\n")
        .unwrap_or_else(|| panic!("the text ends with `# EOF`:\n{text}"));
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let at = format!("line {}: `{line}`", i + 1);
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (keyword, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            assert!(name_ok(name), "{at}: bad metric name");
            if keyword == "UNIT" {
                continue;
            }
            if keyword == "TYPE" {
                let kind = parts.next().unwrap_or("");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "{at}: bad type"
                );
                assert!(
                    types.insert(name.to_string(), kind.to_string()).is_none(),
                    "{at}: TYPE twice"
                );
            } else {
                assert_eq!(keyword, "HELP", "{at}");
            }
            continue;
        }
        assert!(!line.is_empty(), "{at}: empty line");
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("{at}: no value"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("{at}: bad value")),
        };
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("{at}: no `}}`"));
                let mut rest = labels;
                while !rest.is_empty() {
                    let (label, after) = rest
                        .split_once("=\"")
                        .unwrap_or_else(|| panic!("{at}: bad label"));
                    assert!(
                        name_ok(label) && !label.contains(':'),
                        "{at}: bad label name"
                    );
                    let mut escaped = false;
                    let mut end = None;
                    for (j, c) in after.char_indices() {
                        match (escaped, c) {
                            (true, '\\' | '"' | 'n') => escaped = false,
                            (true, _) => panic!("{at}: bad escape"),
                            (false, '\\') => escaped = true,
                            (false, '"') => {
                                end = Some(j);
                                break;
                            }
                            (false, '\n') => panic!("{at}: raw newline"),
                            _ => {}
                        }
                    }
                    let end = end.unwrap_or_else(|| panic!("{at}: unterminated label value"));
                    rest = &after[end + 1..];
                    rest = rest.strip_prefix(',').unwrap_or(rest);
                }
                name
            }
            None => series,
        };
        assert!(name_ok(name), "{at}: bad name");
        let family = [
            ("histogram", "_bucket"),
            ("histogram", "_sum"),
            ("histogram", "_count"),
        ]
        .iter()
        .chain(&[("counter", "_total")])
        .find_map(|(kind, suffix)| {
            name.strip_suffix(suffix)
                .filter(|f| types.get(*f).is_some_and(|t| t == kind))
        })
        .unwrap_or(name);
        assert!(
            types.contains_key(family),
            "{at}: no `# TYPE` for `{family}` before it"
        );
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "{at}: duplicate series"
        );
    }
    samples
}

/// The next `STATUS=` notification that contains `needle`.
fn wait_status(daemon: &Daemon, needle: &str, timeout: Duration) -> String {
    let start = Instant::now();
    loop {
        let n = daemon.next_notification();
        if n.starts_with("STATUS=") && n.contains(needle) {
            return n;
        }
        assert!(
            start.elapsed() < timeout,
            "no STATUS= with `{needle}` within {timeout:?} (last: {n:?})\n{}",
            daemon.log()
        );
    }
}

#[test]
fn lab_daemon_leaves_paused_and_heal_false_backends_alone() {
    let lab = Lab::start();
    let daemon = Daemon::start(&lab, &apply_config(&lab, ""));
    let api = format!("127.0.0.1:{}", lab.port("api"));
    let api_site = lab.port("api_site");

    let out = lab.medic(&["pause", "--for", "10m", "api.service"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // the daemon notices the file without a fault to trigger it
    let status = wait_status(
        &daemon,
        "paused: api.service until ",
        Duration::from_secs(10),
    );
    assert!(status.contains(" UTC"), "{status}");
    daemon.wait_log("; nothing is done to api.service", Duration::from_secs(5));

    assert!(lab.systemctl(&["stop", "api.service"]).status.success());
    let log = daemon.wait_log(
        &format!("nothing is done (nginx-medic resume api.service) [{api} backend-down]"),
        Duration::from_secs(10),
    );
    assert!(
        log.contains("hold=paused object_systemd_unit=api.service"),
        "{log}"
    );
    // a few probe rounds (500 ms each): still down, reported once
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lab.unit_property("api.service", "ActiveState"), "inactive");
    assert_eq!(lab.http_status(api_site, "/"), 502);
    let log = daemon.log();
    assert_eq!(
        log.matches("nothing is done (nginx-medic resume api.service)")
            .count(),
        1,
        "{log}"
    );
    assert!(!log.contains(" healing ["), "{log}");
    assert!(metrics(&lab).contains("nginx_medic_paused{unit=\"api.service\"} 1\n"));

    // `apply` waits its turn while the daemon holds the lock; `explain` sees the pause too
    let out = lab.medic(&["apply"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("daemon.lock"), "{stderr}");
    let explain = lab.explain("paused");
    assert!(
        explain.contains("paused until ") && explain.contains("(nginx-medic resume api.service)"),
        "{explain}"
    );

    // the pause survives a restart of the daemon; `apply` in between sees it too
    let mut daemon = daemon;
    assert_eq!(daemon.stop().code(), Some(0));
    let (code, applied) = lab.medic_json(&["apply"]);
    assert_eq!(code, 2, "{applied:#}");
    assert_eq!(applied["held"][0]["unit"], "api.service", "{applied:#}");
    assert_eq!(applied["held"][0]["hold"], "paused");
    assert_eq!(lab.unit_property("api.service", "ActiveState"), "inactive");
    let daemon = Daemon::start(&lab, "");
    let log = daemon.wait_log(
        &format!("nothing is done (nginx-medic resume api.service) [{api} backend-down]"),
        Duration::from_secs(10),
    );
    assert!(!log.contains(" healing ["), "{log}");
    assert_eq!(lab.unit_property("api.service", "ActiveState"), "inactive");

    // resume: healed at the next evaluation
    let resumed = Instant::now();
    let out = lab.medic(&["resume", "api.service"]);
    assert!(out.status.success());
    let took = time_to_200(&lab, "api_site", resumed, Duration::from_secs(10));
    daemon.wait_log(
        &format!("healed [{api} backend-down]"),
        Duration::from_secs(5),
    );
    assert_sites_after_daemon(&lab, &daemon, &[]);
    assert!(daemon
        .log()
        .contains("pause ended; acting on api.service again"));
    assert!(!metrics(&lab).contains("nginx_medic_paused{"));
    println!(
        "time from `resume` to the first 200: {} ms",
        took.as_millis()
    );

    // `heal: false`: diagnosed and reported, never healed
    let config = fs::read_to_string(lab.config()).unwrap();
    let config = config.replacen(
        "    unit: api.service\n",
        "    unit: api.service\n    heal: false\n",
        1,
    );
    fs::write(lab.config(), config).unwrap();
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    daemon.wait_log("reloaded the configuration", Duration::from_secs(10));
    assert!(lab.systemctl(&["stop", "api.service"]).status.success());
    daemon.wait_log(
        &format!("`heal: false` in medic.yaml: reported, never healed [{api} backend-down]"),
        Duration::from_secs(10),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(lab.unit_property("api.service", "ActiveState"), "inactive");
    assert_sites_after_daemon(&lab, &daemon, &[(api_site, 502)]);
    // `apply` (once the daemon is gone and its lock free) leaves it alone too
    let mut daemon = daemon;
    assert_eq!(daemon.stop().code(), Some(0));
    let (code, applied) = lab.apply(&[], &[(lab.port("api_site"), 502)]);
    assert_eq!(
        (code, applied["held"][0]["hold"].as_str()),
        (2, Some("heal_false"))
    );
    assert_eq!(lab.unit_property("api.service", "ActiveState"), "inactive");
}

/// Anyone on the bus may broadcast a signal that looks like systemd's: a forged `JobNew` must
/// not make a unit look busy (it used to, forever: nothing is ever healed), nor drive
/// evaluations. Only `org.freedesktop.systemd1`'s own signals count.
#[test]
fn lab_daemon_ignores_unit_signals_from_anyone_but_systemd() {
    let lab = Lab::start();
    let config = "daemon:\n  mode: apply\n  probe_interval: 60s\n  metrics: null\n";
    let daemon = Daemon::start(&lab, config);
    for id in 0..20 {
        let out = Command::new("busctl")
            .args([
                "--user",
                "emit",
                "/org/freedesktop/systemd1",
                "org.freedesktop.systemd1.Manager",
                "JobNew",
                "uos",
                &(9000 + id).to_string(),
                &format!("/org/freedesktop/systemd1/job/{}", 9000 + id),
                "api.service",
            ])
            .envs(lab.env())
            .output()
            .expect("busctl");
        assert!(
            out.status.success(),
            "busctl emit: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    let evaluations = daemon.log().matches("incident [").count();
    assert_eq!(
        evaluations,
        0,
        "forged signals opened nothing:\n{}",
        daemon.log()
    );
    let stopped = Instant::now();
    assert!(lab.systemctl(&["stop", "api.service"]).status.success());
    let took = time_to_200(&lab, "api_site", stopped, Duration::from_secs(10));
    println!(
        "api stopped after 20 forged JobNew: 200 after {} ms",
        took.as_millis()
    );
    assert_sites_after_daemon(&lab, &daemon, &[]);
}

/// Every site of the lab answers as `expect` says (else 200) after the daemon's own heals, as
/// after every CLI `apply` (`Lab::apply`): no heal of the daemon silently breaks a neighbour.
fn assert_sites_after_daemon(lab: &Lab, daemon: &Daemon, expect: &[(u16, u16)]) {
    lab.assert_sites(expect, &Value::String(daemon.log()));
}

/// CPU seconds (user + system) a process has used, from `/proc/PID/stat`.
fn cpu_seconds(pid: i32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime: fields 14 and 15 of the whole line, in clock ticks
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks
        / nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .unwrap()
            .unwrap_or(100) as f64
}

/// The process's anonymous memory (heap, stacks): what a storm could make grow. Its code is
/// left out: the daemon hands its start-up pages back once ready (`memory::page_out_own_code`),
/// so VmRSS climbs by whatever code the storm runs again, from the page cache.
fn anon_kib(pid: i32) -> u64 {
    let pid = u32::try_from(pid).expect("a pid");
    crate::support::lab::status_kib(pid, "RssAnon:").expect("RssAnon")
}

#[test]
fn lab_daemon_a_storm_about_an_open_incident_costs_no_evaluation() {
    let lab = Lab::start();
    let config = "daemon:\n  probe_interval: 500ms\n  metrics: null\n".to_string();
    let mut daemon = Daemon::start(&lab, &config);
    assert!(lab.systemctl(&["stop", "api.service"]).status.success());
    let api = format!("127.0.0.1:{}", lab.port("api"));
    daemon.wait_log(
        &format!("planned [{api} backend-down]"),
        Duration::from_secs(15),
    );
    let evaluations = |s: &Value| s["daemon"]["evaluations"].as_u64().unwrap_or(0);
    let absorbed = |s: &Value| s["daemon"]["absorbed"].as_u64().unwrap_or(0);
    // the incident is open and left alone (observe mode), and the daemon has settled: no
    // evaluation for 2 s (nginx's own lines about the probes' 502s have been heard)
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last: Option<Value> = None;
    let before = loop {
        let (_, status) = status_json(&lab);
        let open = status["daemon"]["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| {
                t["target"] == api.as_str() && t["state"] == "left_alone" && t["pending"] == false
            });
        if open
            && last
                .as_ref()
                .is_some_and(|l| evaluations(l) == evaluations(&status))
        {
            break status;
        }
        assert!(Instant::now() < deadline, "{status:#}\n{}", daemon.log());
        last = open.then_some(status);
        std::thread::sleep(Duration::from_secs(2));
    };
    let (cpu0, rss0) = (cpu_seconds(daemon.pid()), anon_kib(daemon.pid()));

    // 5 s of 40,000 lines a second about it, in 50 ms batches, into nginx's own error log
    let line = format!(
        "2026/12/01 10:00:00 [error] 12#12: *7 connect() failed (111: Connection refused) while connecting to upstream, client: 127.0.0.1, server: api.lab, request: \"GET / HTTP/1.1\", upstream: \"http://{api}/\", host: \"api.lab\"\n"
    );
    let batch = line.repeat(2_000);
    let log = lab.dir.join("nginx/logs/error.log");
    let mut file = fs::OpenOptions::new().append(true).open(&log).unwrap();
    let started = Instant::now();
    for i in 0..100u32 {
        use std::io::Write;
        file.write_all(batch.as_bytes()).unwrap();
        let next = started + Duration::from_millis(50) * (i + 1);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let burst = started.elapsed();
    std::thread::sleep(Duration::from_millis(1500)); // a status write is at most 1 s late
    let (cpu1, rss1) = (cpu_seconds(daemon.pid()), anon_kib(daemon.pid()));
    let (_, after) = status_json(&lab);
    let cpu = cpu1 - cpu0;
    eprintln!(
        "storm: 200000 lines ({} MiB) in {:.1} s: {} evaluations, {} triggers absorbed, {:.2} s of CPU ({:.1} % of a core), RssAnon {} -> {} KiB",
        (batch.len() * 100) >> 20,
        burst.as_secs_f64(),
        evaluations(&after) - evaluations(&before),
        absorbed(&after) - absorbed(&before),
        cpu,
        100.0 * cpu / (burst.as_secs_f64() + 1.5),
        rss0,
        rss1
    );
    // a class of line not heard during the incident yet is news once; the rest is absorbed
    assert!(
        evaluations(&after) <= evaluations(&before) + 1,
        "no evaluation per line or per debounce for a storm about an open incident:\n{before:#}\n{after:#}"
    );
    assert!(absorbed(&after) > absorbed(&before), "{after:#}");
    assert!(
        rss1 < rss0 + 4 * 1024,
        "memory stays flat: {rss0} -> {rss1} KiB"
    );
    assert_eq!(daemon.stop().code(), Some(0));
}

/// As above, with the forged `JobNew` and `PropertiesChanged` addressed to the daemon's own
/// connections (a signal with a destination reaches it whatever its match rules say, and zbus
/// matches a rule's well-known sender against any sender): still nothing is heard, and the unit
/// is healed at once when it really stops (issue 13, acceptance 4).
#[test]
fn lab_daemon_ignores_forged_signals_addressed_to_it() {
    let lab = Lab::start();
    let config = "daemon:\n  mode: apply\n  probe_interval: 60s\n  metrics: null\n";
    let daemon = Daemon::start(&lab, config);
    // the signal watcher connects beside the first evaluation: wait for it (a loaded machine)
    let pid = daemon.pid().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    let connections = loop {
        let list = Command::new("busctl")
            .args(["--user", "list", "--unique", "--no-legend", "--no-pager"])
            .envs(lab.env())
            .output()
            .expect("busctl list");
        let listed = String::from_utf8_lossy(&list.stdout).into_owned();
        let connections: Vec<String> = listed
            .lines()
            .filter_map(|l| {
                let mut fields = l.split_whitespace();
                let name = fields.next()?;
                (fields.next()? == pid).then(|| name.to_string())
            })
            .collect();
        if !connections.is_empty() {
            break connections;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon's connections are listed:\n{listed}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let emit = |args: &[&str]| {
        let out = Command::new("busctl")
            .args(["--user", "emit"])
            .args(args)
            .envs(lab.env())
            .output()
            .expect("busctl");
        assert!(
            out.status.success(),
            "busctl emit {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    for to in &connections {
        let destination = format!("--destination={to}");
        for id in 0..10 {
            emit(&[
                &destination,
                "/org/freedesktop/systemd1",
                "org.freedesktop.systemd1.Manager",
                "JobNew",
                "uos",
                &(9100 + id).to_string(),
                &format!("/org/freedesktop/systemd1/job/{}", 9100 + id),
                "api.service",
            ]);
        }
        emit(&[
            &destination,
            "/org/freedesktop/systemd1/unit/api_2eservice",
            "org.freedesktop.DBus.Properties",
            "PropertiesChanged",
            "sa{sv}as",
            "org.freedesktop.systemd1.Unit",
            "1",
            "ActiveState",
            "s",
            "failed",
            "0",
        ]);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        daemon.log().matches("incident [").count(),
        0,
        "forged signals opened nothing:\n{}",
        daemon.log()
    );
    let stopped = Instant::now();
    assert!(lab.systemctl(&["stop", "api.service"]).status.success());
    let took = time_to_200(&lab, "api_site", stopped, Duration::from_secs(10));
    println!(
        "api stopped after forged JobNew addressed to the daemon: 200 after {} ms",
        took.as_millis()
    );
}
