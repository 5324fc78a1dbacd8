//! `cargo bench --bench idle`: what `nginx-medic run` costs while nothing is wrong, next to
//! Monit watching the same sites, measured the same way in the same run.
//!
//! The lab (`tests/support/lab.rs`) with 10 sites: its four and six more on ports BASE+4..+9,
//! all through nginx to the Node backend. nginx-medic runs with the lab's config and the daemon's
//! defaults (observe mode, `probe_interval` 5 s, the metrics endpoint on BASE+15); Monit (when
//! `/usr/bin/monit` is installed: `scripts/bench idle` installs Debian's `monit`, its service
//! not started) runs in the foreground with its own files in the lab, one `check host … if
//! failed port P protocol http` per site, every `BENCH_MONIT_CYCLE` s (default 5: the same
//! interval as the daemon's probe). Both run side by side for `BENCH_IDLE_SECS` (default 60)
//! from the daemon's READY=1: CPU as utime + stime from /proc/PID/stat over the window (reaped
//! children's apart), VmRSS and VmHWM at its end.

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use common::{cpu_seconds, mib, rss_kib, wait_for, Daemon};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::lab::Lab;

/// The lab's own sites, and the six added here.
const SITES: usize = 10;
const MONIT: &str = "/usr/bin/monit";

/// Adds sites on BASE+4..BASE+9 in front of the Node backend and reloads nginx; all ten site
/// ports.
fn add_sites(lab: &Lab) -> Vec<u16> {
    let web = lab.port("web");
    for i in 4..10 {
        let port = lab.base + i;
        fs::write(
            lab.dir.join(format!("nginx/sites-enabled/bench{i}.conf")),
            format!(
                "server {{\n    listen 127.0.0.1:{port};\n    server_name bench{i}.lab;\n    \
                 location / {{\n        proxy_pass http://127.0.0.1:{web};\n    }}\n}}\n"
            ),
        )
        .expect("a bench site");
    }
    assert!(
        lab.systemctl(&["reload", "nginx.service"]).status.success(),
        "nginx reload"
    );
    let ports = lab.site_ports();
    assert_eq!(ports.len(), SITES, "the lab's sites: {ports:?}");
    for &p in &ports {
        assert!(
            wait_for(Duration::from_secs(10), || lab.http_status(p, "/") == 200),
            "site on {p} does not answer 200"
        );
    }
    ports
}

/// Monit in the foreground with its own files in DIR; `None` when it is not installed.
fn start_monit(dir: &Path, ports: &[u16], cycle: u64) -> Option<Child> {
    if !Path::new(MONIT).exists() {
        return None;
    }
    let d = dir.display();
    let mut rc = format!(
        "set daemon {cycle}\nset logfile {d}/monit.log\nset pidfile {d}/monit.pid\n\
         set idfile {d}/monit.id\nset statefile {d}/monit.state\n"
    );
    for (i, p) in ports.iter().enumerate() {
        rc.push_str(&format!(
            "check host site{i} with address 127.0.0.1\n    \
             if failed port {p} protocol http request \"/\" then alert\n"
        ));
    }
    let path = dir.join("monitrc");
    fs::write(&path, rc).expect("monitrc");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("monitrc mode");
    let child = Command::new(MONIT)
        .arg("-I")
        .arg("-c")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("monit starts");
    Some(child)
}

/// VmHWM (peak RSS) of PID in KiB.
fn hwm_kib(pid: u32) -> Option<u64> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

struct Figures {
    cpu: f64,
    children: f64,
    rss: u64,
    hwm: u64,
}

fn figures(pid: u32, before: (f64, f64), secs: f64) -> Option<Figures> {
    let (own, children) = cpu_seconds(pid)?;
    Some(Figures {
        cpu: (own - before.0) / secs * 100.0,
        children: (children - before.1) / secs * 100.0,
        rss: rss_kib(pid)?,
        hwm: hwm_kib(pid)?,
    })
}

fn main() {
    let secs: u64 = common::env_or("BENCH_IDLE_SECS", 60);
    let cycle: u64 = common::env_or("BENCH_MONIT_CYCLE", 5);
    let lab = Lab::start();
    let ports = add_sites(&lab);
    let mut config = fs::read_to_string(lab.config()).expect("the lab's config");
    config.push_str(&format!(
        "daemon:\n  metrics: 127.0.0.1:{}\n",
        lab.base + 15
    ));
    fs::write(lab.config(), config).expect("the lab's config");
    let load_before = common::load_average();
    let daemon = Daemon::start(
        Command::new(env!("CARGO_BIN_EXE_nginx-medic")),
        &lab.config(),
        &lab.env(),
        &lab.dir,
        "info",
    );
    let mut monit = start_monit(&lab.dir, &ports, cycle);
    // Monit's start-up (reading its rc file) is not idling
    std::thread::sleep(Duration::from_millis(500));
    let medic_pid = daemon.pid();
    let monit_pid = monit.as_ref().map(Child::id);
    let medic0 = cpu_seconds(medic_pid).expect("the daemon runs");
    let monit0 = monit_pid.and_then(cpu_seconds);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let window = started.elapsed().as_secs_f64();
    let medic = figures(medic_pid, medic0, window).expect("the daemon still runs");
    let reference = monit_pid
        .zip(monit0)
        .and_then(|(p, b)| figures(p, b, window));
    let load_after = common::load_average();
    if let Some(m) = monit.as_mut() {
        let _ = m.kill();
        let _ = m.wait();
    }
    daemon.stop();

    println!();
    println!(
        "idle: {SITES} sites (lab, through nginx to one Node backend), {window:.0} s from READY=1"
    );
    println!("load average before: {load_before}; after: {load_after}");
    println!(
        "nginx-medic: release build, the daemon's defaults (observe, probe_interval 5s); \
         Monit: `check host … protocol http` per site, `set daemon {cycle}`"
    );
    println!(
        "{:<13} {:>14} {:>20} {:>11} {:>11}",
        "who", "CPU % of core", "children's CPU %", "VmRSS", "VmHWM"
    );
    let row = |who: &str, f: &Figures| {
        println!(
            "{who:<13} {:>14.3} {:>20.3} {:>11} {:>11}",
            f.cpu,
            f.children,
            mib(f.rss),
            mib(f.hwm)
        );
    };
    row("nginx-medic", &medic);
    match &reference {
        Some(r) => {
            row("Monit", r);
            let ratio = |a: f64, b: f64| {
                if b > 0.0 {
                    format!("{:.2}×", a / b)
                } else {
                    "— (Monit used no measurable CPU)".into()
                }
            };
            println!(
                "ratios nginx-medic / Monit: CPU {}, VmRSS {}",
                ratio(medic.cpu, r.cpu),
                ratio(medic.rss as f64, r.rss as f64)
            );
        }
        None if monit_pid.is_none() => {
            println!("Monit: not installed ({MONIT}); `scripts/bench idle` installs it")
        }
        None => println!(
            "Monit: exited during the window (see {}/monit.log)",
            lab.dir.display()
        ),
    }
    println!(
        "acceptance 5 (idle): VmRSS ≤ 7.5 MiB: {}; CPU ≤ 0.1 %: {}",
        if medic.rss as f64 <= 7.5 * 1024.0 {
            "met"
        } else {
            "not met"
        },
        if medic.cpu <= 0.1 { "met" } else { "not met" },
    );
}
