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
