//! Real PM2 in the lab: the lab's own api and web units are removed, and a PM2 daemon runs as
//! a user unit of the lab's manager, written as `pm2 startup systemd` writes `pm2-root.service`,
//! with `PM2_HOME=DIR/pm2` and apps from `DIR/apps/pm2/ecosystem.config.js`. The daemon and its
//! apps live in the lab's cgroup, so `lab/lab.sh down` ends them with the lab.
//!
//! PM2 comes from `scripts/setup` (`.pm2-lab`, or `MEDIC_LAB_PM2`).

use super::lab::Lab;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// One app of the ecosystem file.
pub struct App<'a> {
    pub name: &'a str,
    /// A file of `lab/apps/` or a script body written to `DIR/apps/pm2/NAME.js`.
    pub script: Script<'a>,
    pub host: &'a str,
    pub port: u16,
    pub autorestart: bool,
    pub max_restarts: u32,
}

pub enum Script<'a> {
    /// The lab's Node.js backend (`apps/web.js`).
    Web,
    /// A script of this text.
    Inline(&'a str),
}

/// The PM2 part of a lab.
pub struct Pm2<'l> {
    pub lab: &'l Lab,
    pub home: PathBuf,
    pub binary: PathBuf,
    pub ecosystem: PathBuf,
}

/// The `pm2` of `scripts/setup`; panics with the way to get it.
pub fn pm2_binary() -> PathBuf {
    let dir = std::env::var_os("MEDIC_LAB_PM2").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join(".pm2-lab"),
        PathBuf::from,
    );
    let bin = dir.join("node_modules/pm2/bin/pm2");
    assert!(
        bin.exists(),
        "no PM2 at `{}`: run scripts/setup as root (or point MEDIC_LAB_PM2 at one)",
        bin.display()
    );
    bin
}

impl<'l> Pm2<'l> {
    /// Replaces the lab's api and web units (and the api hint) by a PM2 daemon running `apps`.
    pub fn start(lab: &'l Lab, apps: &[App<'_>]) -> Pm2<'l> {
        let binary = pm2_binary();
        let units = lab.dir.join("config/systemd/user");
        let _ = lab.systemctl(&["stop", "api.service", "web.service"]);
        for unit in ["api.service", "web.service"] {
            let _ = fs::remove_file(units.join(unit));
        }
        // the hint names api.service: an administrator of a PM2 host has none
        let config = fs::read_to_string(lab.config()).expect("lab config");
        let start = config
            .find("backends:")
            .expect("backends in the lab config");
        let end = config
            .find("playbooks:")
            .expect("playbooks in the lab config");
        let config = format!("{}backends: []\n{}", &config[..start], &config[end..]);
        fs::write(lab.config(), config).expect("write lab config");

        let home = lab.dir.join("pm2");
        let app_dir = lab.dir.join("apps/pm2");
        fs::create_dir_all(&home).expect("pm2 home");
        fs::create_dir_all(&app_dir).expect("pm2 app dir");
        let mut entries = String::new();
        for app in apps {
            let script = match app.script {
                Script::Web => lab.dir.join("apps/web.js"),
                Script::Inline(text) => {
                    let path = app_dir.join(format!("{}.js", app.name));
                    fs::write(&path, text).expect("app script");
                    path
                }
            };
            entries.push_str(&format!(
                "    {{\n      name: '{}',\n      script: '{}',\n      cwd: '{}',\n      autorestart: {},\n      max_restarts: {},\n      env: {{ HOST: '{}', PORT: '{}' }},\n    }},\n",
                app.name,
                script.display(),
                app_dir.display(),
                app.autorestart,
                app.max_restarts,
                app.host,
                app.port
            ));
        }
        let ecosystem = app_dir.join("ecosystem.config.js");
        fs::write(
            &ecosystem,
            format!("module.exports = {{\n  apps: [\n{entries}  ],\n}};\n"),
        )
        .expect("ecosystem file");
        // as `pm2 startup systemd -u root --hp HOME` writes it (PM2_HOME set, forking, resurrect)
        let unit = format!(
            "[Unit]\nDescription=PM2 process manager\nDocumentation=https://pm2.keymetrics.io/\nAfter=network.target\n\n\
             [Service]\nType=forking\nUser=root\nLimitNOFILE=infinity\nLimitNPROC=infinity\nLimitCORE=infinity\n\
             Environment=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
             Environment=PM2_HOME={home}\nPIDFile={home}/pm2.pid\nRestart=on-failure\n\n\
             ExecStart={bin} resurrect\nExecReload={bin} reload all\nExecStop={bin} kill\n\n\
             [Install]\nWantedBy=multi-user.target\n",
            home = home.display(),
            bin = binary.display()
        );
        fs::write(units.join("pm2-root.service"), unit).expect("pm2 unit");
        assert!(lab.systemctl(&["daemon-reload"]).status.success());
        let out = lab.systemctl(&["start", "pm2-root.service"]);
        assert!(
            out.status.success(),
            "start pm2-root.service: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pm2 = Pm2 {
            lab,
            home,
            binary,
            ecosystem,
        };
        let out = pm2.run(&["start", &pm2.ecosystem.display().to_string()]);
        assert!(out.status.success(), "pm2 start: {}", text(&out));
        assert!(pm2.run(&["save"]).status.success());
        pm2
    }

    /// `pm2 ARGS` against the lab's daemon, in a clean environment.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new("timeout")
            .arg("30")
            .arg(&self.binary)
            .args(args)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOME", self.lab.dir.join("home"))
            .env("PM2_HOME", &self.home)
            .current_dir(self.ecosystem.parent().unwrap_or(Path::new("/")))
            .output()
            .expect("run pm2")
    }

    /// `pm2 jlist`, parsed.
    pub fn jlist(&self) -> Vec<serde_json::Value> {
        let out = self.run(&["jlist"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let start = stdout.find('[').unwrap_or(0);
        serde_json::from_str(&stdout[start..])
            .unwrap_or_else(|e| panic!("pm2 jlist: {e}: {}", text(&out)))
    }

    /// The app's entry in `pm2 jlist`.
    pub fn app(&self, name: &str) -> serde_json::Value {
        self.jlist()
            .into_iter()
            .find(|a| a["name"] == name)
            .unwrap_or_else(|| panic!("no PM2 app `{name}`"))
    }

    /// The app's PID (0 when it has none).
    pub fn pid(&self, name: &str) -> u64 {
        self.app(name)["pid"].as_u64().unwrap_or(0)
    }

    /// Waits until `pred` holds for the app's entry.
    pub fn wait_app(&self, name: &str, what: &str, pred: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let app = self.app(name);
            if pred(&app) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "PM2 app {name} is not {what} after 30 s: {}",
                app["pm2_env"]["status"]
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Waits until something listens on `host:port` (up to 30 s).
pub fn wait_listening(host: &str, port: u16) {
    let addr: std::net::SocketAddr = format!("{host}:{port}").parse().expect("address");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on {addr} after 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until nothing listens on `host:port` (up to 30 s).
pub fn wait_closed(host: &str, port: u16) {
    let addr: std::net::SocketAddr = format!("{host}:{port}").parse().expect("address");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
        assert!(Instant::now() < deadline, "{addr} still listens after 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
