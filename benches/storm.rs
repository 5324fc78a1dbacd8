//! `cargo bench --bench storm`: what a 502 storm costs `nginx-medic run` when it cannot heal the
//! site, before, during and after the storm.
//!
//! The lab (`tests/support/lab.rs`) with one more site on BASE+4 whose upstream,
//! 127.0.0.1:BASE+16, nothing listens on and no unit is known for: every request is a 502 and an
//! error-log line (`connect() failed (111: Connection refused)`), the daemon's finding is
//! inconclusive and nothing is done. The daemon runs with `mode: apply` and the defaults
//! otherwise. `wrk` (`/usr/bin/wrk`; `scripts/bench storm` installs Debian's `wrk`) sends
//! `BENCH_STORM_SECS` (default 30) s of requests (`BENCH_WRK_THREADS`, default 2;
//! `BENCH_WRK_CONNECTIONS`, default 16), after and before a quiet `BENCH_QUIET_SECS` (default 10).
//! Printed: the daemon's CPU (% of one core, utime + stime from /proc/PID/stat, children's
//! included) and VmRSS in each phase, the error log's growth in bytes/s, wrk's request rate, and
//! nginx's own CPU over the storm (all its processes) as the yardstick of the load.

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use common::{cpu_of, mib, rss_kib, status_kib, unit_pids, wait_for, Daemon};
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::lab::Lab;

const WRK: &str = "/usr/bin/wrk";

/// CPU % of a core, VmRSS and RssAnon (its heap and stacks) of PID over a phase of `secs`,
/// sampled every 250 ms.
struct Phase {
    cpu: f64,
    rss_start: u64,
    rss_max: u64,
    rss_end: u64,
    anon_start: u64,
    anon_max: u64,
}

fn anon_kib(pid: u32) -> u64 {
    status_kib(pid, "RssAnon:").unwrap_or(0)
}

fn watch(pid: u32, secs: f64, mut during: impl FnMut() -> bool) -> Phase {
    let cpu0 = cpu_of(&[pid]);
    let rss_start = rss_kib(pid).unwrap_or(0);
    let mut rss_max = rss_start;
    let anon_start = anon_kib(pid);
    let mut anon_max = anon_start;
    let started = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(250));
        rss_max = rss_max.max(rss_kib(pid).unwrap_or(0));
        anon_max = anon_max.max(anon_kib(pid));
        let elapsed = started.elapsed().as_secs_f64();
        if !during() || elapsed >= secs {
            break;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    Phase {
        cpu: (cpu_of(&[pid]) - cpu0) / elapsed * 100.0,
        rss_start,
        rss_max,
        rss_end: rss_kib(pid).unwrap_or(0),
        anon_start,
        anon_max,
    }
}

fn log_len(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len())
}

fn main() {
    let storm_secs: u64 = common::env_or("BENCH_STORM_SECS", 30);
    let quiet: u64 = common::env_or("BENCH_QUIET_SECS", 10);
    let threads: u32 = common::env_or("BENCH_WRK_THREADS", 2);
    let connections: u32 = common::env_or("BENCH_WRK_CONNECTIONS", 16);
    assert!(
        Path::new(WRK).exists(),
        "{WRK} is missing: `scripts/bench storm` installs Debian's wrk"
    );
    let lab = Lab::start();
    let site = lab.base + 4;
    let dead = lab.base + 16;
    fs::write(
        lab.dir.join("nginx/sites-enabled/storm.conf"),
        format!(
            "server {{\n    listen 127.0.0.1:{site};\n    server_name storm.lab;\n    \
             location / {{\n        proxy_pass http://127.0.0.1:{dead};\n    }}\n}}\n"
        ),
    )
    .expect("the storm site");
    assert!(
        lab.systemctl(&["reload", "nginx.service"]).status.success(),
        "nginx reload"
    );
    assert!(
        wait_for(Duration::from_secs(10), || lab.http_status(site, "/")
            == 502),
        "the storm site does not answer 502"
    );
    let mut config = fs::read_to_string(lab.config()).expect("the lab's config");
    config.push_str(&format!(
        "daemon:\n  mode: apply\n  metrics: 127.0.0.1:{}\n",
        lab.base + 15
    ));
    fs::write(lab.config(), config).expect("the lab's config");
    let daemon = Daemon::start(
        Command::new(env!("CARGO_BIN_EXE_nginx-medic")),
        &lab.config(),
        &lab.env(),
        &lab.dir,
        "info",
    );
    let pid = daemon.pid();
    // the storm site's incident is opened by the first probes, before the quiet phase
    std::thread::sleep(Duration::from_secs(6));
    let load_before = common::load_average();
    let before = watch(pid, quiet as f64, || true);

    let error_log = lab.dir.join("nginx/logs/error.log");
    let log0 = log_len(&error_log);
    let nginx_pids = unit_pids(&lab.cgroup, "nginx.service");
    let nginx0 = cpu_of(&nginx_pids);
    let wrk_out = lab.dir.join("wrk.out");
    let mut wrk = Command::new(WRK)
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{storm_secs}s"))
        .arg(format!("http://127.0.0.1:{site}/"))
        .stdin(Stdio::null())
        .stdout(fs::File::create(&wrk_out).expect("wrk.out"))
        .stderr(Stdio::null())
        .spawn()
        .expect("wrk starts");
    let storm_started = Instant::now();
    let during = watch(pid, storm_secs as f64 + 5.0, || {
        matches!(wrk.try_wait(), Ok(None))
    });
    let _ = wrk.wait();
    let storm_took = storm_started.elapsed().as_secs_f64();
    let log_bytes = log_len(&error_log).saturating_sub(log0);
    let nginx_cpu = (cpu_of(&nginx_pids) - nginx0) / storm_took * 100.0;
    let load_during = common::load_average();
    let after = watch(pid, quiet as f64, || true);
    let incidents = daemon.log_text().matches("incident [").count();
    let daemon_log = daemon.log_text();
    daemon.stop();

    let wrk_text = fs::read_to_string(&wrk_out).unwrap_or_default();
    let rate = wrk_text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .map_or("?".to_owned(), |r| r.trim().to_owned());
    let non2xx = wrk_text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .map_or("?".to_owned(), |r| r.trim().to_owned());

    println!();
    println!(
        "storm: wrk -t{threads} -c{connections} for {storm_secs} s on a site nginx-medic cannot heal \
         (upstream 127.0.0.1:{dead}: nothing listens, no unit known)"
    );
    println!("load average before: {load_before}; at the storm's end: {load_during}");
    println!(
        "wrk: {rate} requests/s, {non2xx} non-2xx; nginx's error log grew {:.2} MB/s ({log_bytes} bytes)",
        log_bytes as f64 / storm_took / 1e6
    );
    println!("nginx-medic: release build, mode apply, the daemon's defaults otherwise");
    println!(
        "{:<8} {:>14} {:>12} {:>12} {:>12} {:>14} {:>12}",
        "phase",
        "CPU % of core",
        "VmRSS start",
        "VmRSS max",
        "VmRSS end",
        "RssAnon start",
        "RssAnon max"
    );
    for (name, p) in [("before", &before), ("during", &during), ("after", &after)] {
        println!(
            "{name:<8} {:>14.2} {:>12} {:>12} {:>12} {:>14} {:>12}",
            p.cpu,
            mib(p.rss_start),
            mib(p.rss_max),
            mib(p.rss_end),
            mib(p.anon_start),
            mib(p.anon_max)
        );
    }
    println!(
        "reference: nginx itself (master and workers) used {nginx_cpu:.1} % of a core during the storm; \
         nginx-medic / nginx = {:.3}",
        during.cpu / nginx_cpu.max(f64::MIN_POSITIVE)
    );
    // VmRSS also counts the daemon's code, which it handed back once ready and which the
    // storm reads in again from the page cache: the memory a storm could make grow is RssAnon
    let growth = during.anon_max.saturating_sub(before.anon_start);
    println!(
        "acceptance 5 (storm): CPU ≤ 5 % of a core: {}; memory flat (RssAnon within 2 MiB of before): {} (+{}; VmRSS +{}, code read in again included)",
        if during.cpu <= 5.0 { "met" } else { "not met" },
        if growth <= 2048 { "met" } else { "not met" },
        mib(growth),
        mib(during.rss_max.saturating_sub(before.rss_end))
    );
    println!("the daemon logged {incidents} incident line(s) over the run");
    if incidents == 0 {
        eprintln!("--- daemon log\n{daemon_log}");
    }
}
