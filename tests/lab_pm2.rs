//! Backends systemd does not run, with real components: PM2 apps under a `pm2-root.service`
//! of the lab's manager (one app restarted alone, a wrong bind host fixed in the ecosystem
//! file, a crash loop left to PM2), and a uvicorn started by hand that the daemon remembers
//! once it is gone, with a unit file that runs it again when installed as is.

use crate::support::lab::Lab;
use crate::support::pm2::{text, wait_closed, wait_listening, App, Pm2, Script};
use std::fs;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn two_apps(lab: &Lab) -> [App<'static>; 2] {
    [
        App {
            name: "api",
            script: Script::Web,
            host: "127.0.0.1",
            port: lab.port("api"),
            autorestart: false,
            max_restarts: 16,
        },
        App {
            name: "web",
            script: Script::Web,
            host: "127.0.0.1",
            port: lab.port("web"),
            autorestart: false,
            max_restarts: 16,
        },
    ]
}

#[test]
fn lab_pm2_one_killed_app_is_restarted_alone_and_a_wrong_bind_host_is_fixed() {
    let lab = Lab::start();
    let apps = two_apps(&lab);
    let pm2 = Pm2::start(&lab, &apps);
    wait_listening("127.0.0.1", lab.port("api"));
    wait_listening("127.0.0.1", lab.port("web"));
    assert_eq!(lab.http_status(lab.port("api_site"), "/"), 200);

    // 1. one of two apps killed: only that app is restarted, the other keeps its PID
    let web_pid = pm2.pid("web");
    let api_pid = pm2.pid("api");
    assert!(web_pid > 0 && api_pid > 0);
    let god_pid = lab.main_pid("pm2-root.service");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(api_pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    pm2.wait_app("api", "stopped", |a| a["pm2_env"]["status"] == "stopped");
    assert_eq!(lab.http_status(lab.port("api_site"), "/"), 502);
    let explain = lab.explain("pm2-app-down");
    assert!(
        explain.contains("PM2 app api (id 0): stopped"),
        "step 1 names the PM2 app:\n{explain}"
    );
    let out = lab.medic(&["apply"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("[pm2-app-down] pm2 restart api"), "{said}");
    assert!(said.contains("outcome: healed"), "{said}");
    assert_eq!(lab.http_status(lab.port("api_site"), "/"), 200);
    assert_eq!(pm2.pid("web"), web_pid, "the other app was not touched");
    assert_ne!(pm2.pid("api"), api_pid);
    assert_eq!(
        lab.main_pid("pm2-root.service"),
        god_pid,
        "the PM2 daemon itself was not restarted"
    );

    // 2. the app bound to 127.0.0.2 by its ecosystem file: fixed there, narrowest, and saved
    let eco = fs::read_to_string(&pm2.ecosystem).unwrap();
    let first_host = eco.find("HOST: '127.0.0.1'").unwrap();
    let wrong = format!(
        "{}HOST: '127.0.0.2'{}",
        &eco[..first_host],
        &eco[first_host + "HOST: '127.0.0.1'".len()..]
    );
    fs::write(&pm2.ecosystem, &wrong).unwrap();
    let eco_path = pm2.ecosystem.display().to_string();
    let out = pm2.run(&["startOrRestart", &eco_path, "--only", "api", "--update-env"]);
    assert!(out.status.success(), "{}", text(&out));
    wait_listening("127.0.0.2", lab.port("api"));
    wait_closed("127.0.0.1", lab.port("api"));
    assert_eq!(lab.http_status(lab.port("api_site"), "/"), 502);
    let web_pid = pm2.pid("web");
    let out = lab.medic(&["apply"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("[pm2-bind-mismatch]"), "{said}");
    assert!(
        said.contains("HOST=127.0.0.2 -> HOST=127.0.0.1"),
        "the narrowest fix, the host nginx dials:\n{said}"
    );
    assert!(said.contains("outcome: healed"), "{said}");
    assert_eq!(
        fs::read_to_string(&pm2.ecosystem).unwrap(),
        eco,
        "only the host string changed, back to what nginx dials"
    );
    assert_eq!(lab.http_status(lab.port("api_site"), "/"), 200);
    assert_eq!(pm2.pid("web"), web_pid, "the other app was not touched");
    let dump = fs::read_to_string(pm2.home.join("dump.pm2")).unwrap();
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    let saved = dump
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "api")
        .unwrap();
    assert_eq!(
        saved["env"]["HOST"], "127.0.0.1",
        "`pm2 save` keeps the new bind for the next boot"
    );
    for var in ["NOTIFY_SOCKET", "INVOCATION_ID", "DBUS_SESSION_BUS_ADDRESS"] {
        assert!(
            saved["env"].get(var).is_none(),
            "nginx-medic's own {var} leaked into the app's environment: {}",
            saved["env"]
        );
    }
}

#[test]
fn lab_pm2_an_app_crashing_at_every_start_is_reported_never_restarted() {
    let lab = Lab::start();
    let [crashy, web] = two_apps(&lab);
    let crashy = App {
        name: "crashy",
        script: Script::Inline(
            "console.error('crashy: DATABASE_URL is not set, cannot start');\nprocess.exit(3);\n",
        ),
        autorestart: true,
        max_restarts: 3,
        ..crashy
    };
    let pm2 = Pm2::start(&lab, &[crashy, web]);
    pm2.wait_app("crashy", "errored", |a| a["pm2_env"]["status"] == "errored");
    let restarts = pm2.app("crashy")["pm2_env"]["restart_time"].clone();
    for _ in 0..2 {
        let out = lab.medic(&["apply"]);
        let said = text(&out);
        assert_eq!(out.status.code(), Some(2), "report only:\n{said}");
        assert!(said.contains("pm2-crash-loop"), "{said}");
        assert!(
            said.contains("crashy: DATABASE_URL is not set, cannot start"),
            "PM2's own log lines are the evidence:\n{said}"
        );
        assert!(said.contains("max_restarts 3"), "{said}");
        assert!(
            !said.contains("] pm2 restart crashy"),
            "no restart step:\n{said}"
        );
        assert!(!said.contains("[pm2-app-down]"), "{said}");
    }
    assert_eq!(
        pm2.app("crashy")["pm2_env"]["restart_time"],
        restarts,
        "nginx-medic never restarted the app PM2 gave up on"
    );
    assert_eq!(lab.http_status(lab.port("web_site"), "/"), 200);
}

/// A process started by hand, killed (SIGKILL, then reaped) on drop if still running.
struct HandStarted(Child);

impl Drop for HandStarted {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `nginx-medic run` in observe mode against the lab; killed on drop.
struct Daemon {
    child: Child,
    log: std::path::PathBuf,
}

impl Daemon {
    fn start(lab: &Lab) -> Daemon {
        let mut config = fs::read_to_string(lab.config()).unwrap();
        config.push_str("daemon:\n  probe_interval: 500ms\n  metrics: null\n");
        fs::write(lab.config(), config).unwrap();
        let log = lab.dir.join("daemon.log");
        let out = fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_nginx-medic"))
            .arg("--config")
            .arg(lab.config())
            .arg("run")
            .envs(lab.env())
            .env_remove("NOTIFY_SOCKET")
            .env_remove("NGINX_MEDIC_LOG")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    fn wait_log(&self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let log = fs::read_to_string(&self.log).unwrap_or_default();
            if log.contains(needle) {
                return log;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no `{needle}` in the daemon log within 30 s:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn lab_pm2_a_hand_started_uvicorn_gone_is_named_with_a_unit_file_that_runs_it() {
    let lab = Lab::start();
    // the api backend becomes a hand-started uvicorn: no unit, no hint
    let units = lab.dir.join("config/systemd/user");
    assert!(lab.systemctl(&["stop", "api.service"]).status.success());
    fs::remove_file(units.join("api.service")).unwrap();
    assert!(lab.systemctl(&["daemon-reload"]).status.success());
    let config = fs::read_to_string(lab.config()).unwrap();
    let (start, end) = (
        config.find("backends:").unwrap(),
        config.find("playbooks:").unwrap(),
    );
    fs::write(
        lab.config(),
        format!("{}backends: []\n{}", &config[..start], &config[end..]),
    )
    .unwrap();
    let port = lab.port("api").to_string();
    let venv = std::env::var("MEDIC_LAB_VENV")
        .unwrap_or_else(|_| format!("{}/.venv-lab", env!("CARGO_MANIFEST_DIR")));
    let uvicorn = HandStarted(
        Command::new(format!("{venv}/bin/uvicorn"))
            .args(["api:app", "--host", "127.0.0.1", "--port", &port])
            .current_dir(lab.dir.join("apps"))
            .env("SECRET_TOKEN", "hunter2-do-not-copy")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening("127.0.0.1", lab.port("api"));
    assert_eq!(lab.http_status(lab.port("api_site"), "/"), 200);
    let explain = lab.explain("unsupervised-listening");
    assert!(explain.contains("not supervised: PID"), "{explain}");

    let daemon = Daemon::start(&lab);
    let memory = lab.dir.join("state/last-processes.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fs::read_to_string(&memory).is_ok_and(|m| m.contains(&port)) {
        assert!(
            Instant::now() < deadline,
            "the daemon did not remember the process"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(uvicorn);
    wait_closed("127.0.0.1", lab.port("api"));
    let api = format!("127.0.0.1:{port}");
    let log = daemon.wait_log(&format!("incident [{api} unsupervised-down]"));
    assert!(
        log.contains(&format!("uvicorn api:app --host 127.0.0.1 --port {port}")),
        "the finding names the last command line:\n{log}"
    );
    drop(daemon);

    let out = lab.medic(&["unit-for", &api]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let unit = String::from_utf8(out.stdout).unwrap();
    assert!(
        !unit.contains("hunter2"),
        "no value of the environment:\n{unit}"
    );
    assert!(unit.contains("\n#Environment=SECRET_TOKEN=\n"), "{unit}");
    assert!(
        unit.contains(&format!(
            "\nWorkingDirectory={}\n",
            lab.dir.join("apps").display()
        )),
        "{unit}"
    );
    assert!(unit.contains("\nUser=root\n"), "{unit}");
    let name = unit
        .strip_prefix("# ")
        .and_then(|u| u.split_once(':'))
        .map(|(n, _)| n.to_string())
        .unwrap();
    assert_eq!(name, format!("uvicorn-{port}.service"));
    let explain = lab.explain("unsupervised-down");
    assert!(
        explain.contains("ExecStart="),
        "explain prints the unit:\n{explain}"
    );

    // installed as is, it runs the backend again
    fs::write(units.join(&name), &unit).unwrap();
    assert!(lab.systemctl(&["daemon-reload"]).status.success());
    let out = lab.systemctl(&["start", &name]);
    assert!(out.status.success(), "{}", text(&out));
    wait_listening("127.0.0.1", lab.port("api"));
    assert_eq!(lab.http_status(lab.port("api_site"), "/"), 200);
}
