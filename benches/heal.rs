//! `cargo bench --bench heal`: how fast a dead Node backend answers again through nginx, with
//! nginx-medic's daemon healing it, next to systemd's own `Restart=always` and to the backend's
//! own start, on the same backend (`web.service`, `node web.js`), interleaved trial by trial.
//!
//! Where: in the lab (a fenced systemd user manager, `tests/support/lab.rs`, the daemon a child
//! of this bench) and in the production box (systemd as PID 1, the `.deb` from
//! `NGINX_MEDIC_DEB` installed, `nginx-medic.service` as shipped; `tests/support/system_box.rs`).
//! `BENCH_HEAL_WHERE=lab`, `box` or `lab,box` (default: both; the box is left out with a note
//! when `NGINX_MEDIC_DEB` is not set — `scripts/bench heal` builds it).
//!
//! Each round, on the same backend:
//! 1. nginx-medic (`mode: apply`, the brakes raised, the rest default) started; `kill -9` of the
//!    backend's main process, timed to the first 200 through nginx; then `systemctl stop` of
//!    its unit, timed the same way; the daemon stopped;
//! 2. a drop-in `Restart=always`, `RestartSec=BENCH_RESTART_SEC` (default 100ms, systemd's own
//!    default) and `kill -9`, timed; the drop-in removed (after a `systemctl stop`,
//!    `Restart=always` restarts nothing: "—");
//! 3. the backend's own start: `systemctl start` of the stopped unit to the first 200.
//!
//! The site is polled through nginx every `BENCH_POLL_MS` (default 5) ms. From the daemon's own
//! log (the lab: its stderr; the box: the journal), per trial: fault → incident, fault → first
//! action (`healing`), and event → first action, the event being the daemon's first `trigger`
//! (logged at debug) after the fault, and event → job (systemd's answer to the daemon's
//! `RestartUnit`, `job queued` at debug). `BENCH_TRIALS` (default 10) rounds. With
//! `BENCH_HEAL_LOG=FILE`, the daemon's log of each trial is appended to FILE (where the time
//! goes: `unit signal`, `trigger`, `evaluating`, `targeted snapshot` with its phases,
//! `diagnosed`, `healing`, `job queued`).

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use common::{median_p95, ms, now_micros, time_fault, unit_pids, wait_for, Daemon, Net};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use support::lab::Lab;
use support::system_box::SystemBox;

/// The backend of every trial.
const UNIT: &str = "web.service";
/// The daemon's brakes, raised so that no trial is rate-limited, escalated or held.
const BRAKES: &str = "  rate_limit: { max_actions: 100000, per: 1m }\n  \
    crash_loop: { max_failures: 100000, within: 1s, max_unit_restarts: 100000 }\n  \
    circuit_breaker: { max_failures: 100000, per: 1m }\n";
/// The daemon's log filter: `trigger`, the phases of an evaluation and `job queued` are debug
/// events.
const LOG_FILTER: &str = "info,nginx_medic::daemon=debug,nginx_medic::adapters::systemd=debug";
/// How long a trial waits for the first 200 after its fault.
const TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    Kill,
    Stop,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill -9",
            Fault::Stop => "systemctl stop",
        }
    }
}

/// What the daemon's log says about one trial, each from the fault (µs since the epoch).
#[derive(Default, Clone, Copy)]
struct Logged {
    to_incident: Option<Duration>,
    to_action: Option<Duration>,
    event_to_action: Option<Duration>,
    /// From the first trigger to systemd's answer to the daemon's `RestartUnit`.
    event_to_job: Option<Duration>,
}

/// A place to run the trials: the lab or the box.
trait Rig {
    fn name(&self) -> &'static str;
    fn net(&self) -> Net;
    fn site_port(&self) -> u16;
    /// The address nginx dials for the site, as the daemon names the target.
    fn upstream(&self) -> String;
    fn systemctl(&self, args: &[&str]) -> bool;
    /// The backend unit's processes, as this machine numbers them.
    fn backend_pids(&self) -> Vec<u32>;
    fn start_daemon(&mut self);
    fn stop_daemon(&mut self);
    /// The daemon's log entries since `micros`: (µs since the epoch, message).
    fn daemon_log(&self, micros: u64) -> Vec<(u64, String)>;
    /// Writes (or, with `None`, removes) the backend's drop-in NAME, then daemon-reload.
    fn drop_in(&self, name: &str, text: Option<&str>);

    /// Writes (or removes) the `Restart=always` drop-in of the backend.
    fn restart_always(&self, restart_sec: Option<&str>) {
        let text = restart_sec.map(|sec| format!("[Service]\nRestart=always\nRestartSec={sec}\n"));
        self.drop_in("bench-restart.conf", text.as_deref());
    }
}

/// A drop-in for the backend for the whole run: systemd's start limit (5 starts in 10 s) would
/// otherwise refuse the starts of trials that follow each other closely.
const NO_START_LIMIT: &str = "[Unit]\nStartLimitIntervalSec=0\n";

struct LabRig {
    lab: Lab,
    daemon: Option<Daemon>,
}

impl Rig for LabRig {
    fn name(&self) -> &'static str {
        "lab (fenced systemd user manager)"
    }
    fn net(&self) -> Net {
        Net::Host
    }
    fn site_port(&self) -> u16 {
        self.lab.port("web_site")
    }
    fn upstream(&self) -> String {
        format!("127.0.0.1:{}", self.lab.port("web"))
    }
    fn systemctl(&self, args: &[&str]) -> bool {
        self.lab.systemctl(args).status.success()
    }
    fn backend_pids(&self) -> Vec<u32> {
        unit_pids(&self.lab.cgroup, UNIT)
    }
    fn start_daemon(&mut self) {
        let command = Command::new(env!("CARGO_BIN_EXE_nginx-medic"));
        self.daemon = Some(Daemon::start(
            command,
            &self.lab.config(),
            &self.lab.env(),
            &self.lab.dir,
            LOG_FILTER,
        ));
    }
    fn stop_daemon(&mut self) {
        if let Some(d) = self.daemon.take() {
            d.stop();
        }
    }
    fn daemon_log(&self, micros: u64) -> Vec<(u64, String)> {
        let text = self
            .daemon
            .as_ref()
            .map(Daemon::log_text)
            .unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let at = common::line_micros(l)?;
                (at >= micros).then(|| (at, l.to_owned()))
            })
            .collect()
    }
    fn drop_in(&self, name: &str, text: Option<&str>) {
        let dir = self.lab.dir.join(format!("config/systemd/user/{UNIT}.d"));
        let file = dir.join(name);
        match text {
            Some(text) => {
                std::fs::create_dir_all(&dir).expect("the drop-in dir");
                std::fs::write(&file, text).expect("the drop-in");
            }
            None => {
                let _ = std::fs::remove_file(&file);
            }
        }
        assert!(self.systemctl(&["daemon-reload"]), "daemon-reload");
    }
}

struct BoxRig {
    b: SystemBox,
}

/// The box's web site and its backend (`lab/box/`).
const BOX_SITE: u16 = 8082;
const BOX_UPSTREAM: &str = "127.0.0.1:8001";

impl Rig for BoxRig {
    fn name(&self) -> &'static str {
        "box (systemd as PID 1, the .deb's nginx-medic.service)"
    }
    fn net(&self) -> Net {
        Net::Namespace(PathBuf::from(format!("/proc/{}/ns/net", self.b.pid1)))
    }
    fn site_port(&self) -> u16 {
        BOX_SITE
    }
    fn upstream(&self) -> String {
        BOX_UPSTREAM.into()
    }
    fn systemctl(&self, args: &[&str]) -> bool {
        self.b.systemctl(args).status.success()
    }
    fn backend_pids(&self) -> Vec<u32> {
        unit_pids(&self.b.cgroup, UNIT)
    }
    fn start_daemon(&mut self) {
        self.b.systemctl_ok(&["start", "nginx-medic.service"]);
    }
    fn stop_daemon(&mut self) {
        self.b.systemctl_ok(&["stop", "nginx-medic.service"]);
    }
    fn daemon_log(&self, micros: u64) -> Vec<(u64, String)> {
        let since = format!("@{}", micros / 1_000_000);
        self.b
            .journal_entries("nginx-medic.service", &["--since", &since])
            .iter()
            .filter_map(|e| {
                let at: u64 = e["__REALTIME_TIMESTAMP"].as_str()?.parse().ok()?;
                (at >= micros).then(|| (at, with_fields(e)))
            })
            .collect()
    }
    fn drop_in(&self, name: &str, text: Option<&str>) {
        let dir = format!("/etc/systemd/system/{UNIT}.d");
        match text {
            Some(text) => {
                self.b.exec_ok(&["mkdir", "-p", &dir]);
                self.b.write_file(&format!("{dir}/{name}"), text);
            }
            None => {
                self.b.exec_ok(&["rm", "-f", &format!("{dir}/{name}")]);
            }
        }
        self.b.systemctl_ok(&["daemon-reload"]);
    }
}

/// A journal entry's message with the event's own fields after it (`key=value`, the journal's
/// upper-case names in lower case), as the lab's log shows them: the journal keeps them apart.
fn with_fields(entry: &serde_json::Value) -> String {
    /// Fields the journal or the journald layer add to every entry.
    const OWN: [&str; 7] = [
        "MESSAGE",
        "PRIORITY",
        "SYSLOG_IDENTIFIER",
        "SYSLOG_FACILITY",
        "TARGET",
        "CODE_FILE",
        "CODE_LINE",
    ];
    let mut out = entry["MESSAGE"].as_str().unwrap_or_default().to_owned();
    for (key, value) in entry.as_object().into_iter().flatten() {
        if key.starts_with('_') || OWN.contains(&key.as_str()) {
            continue;
        }
        let value = value
            .as_str()
            .map_or_else(|| value.to_string(), str::to_owned);
        out.push_str(&format!(" {}={value}", key.to_lowercase()));
    }
    out
}

/// The backend runs and its site answers 200 (restarted once if not).
fn ensure_healthy(rig: &dyn Rig) {
    let ok = |rig: &dyn Rig| {
        wait_for(Duration::from_secs(10), || {
            rig.backend_pids().len() == 1 && common_status(rig) == 200
        })
    };
    if !ok(rig) {
        rig.systemctl(&["restart", UNIT]);
        assert!(
            ok(rig),
            "{}: the site does not answer 200 after a restart of {UNIT}",
            rig.name()
        );
    }
}

/// The site's status from inside the rig's network.
fn common_status(rig: &dyn Rig) -> u16 {
    let port = rig.site_port();
    match rig.net() {
        Net::Host => common::status(port),
        Net::Namespace(p) => std::thread::spawn(move || {
            let ns = std::fs::File::open(p).ok()?;
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
            Some(common::status(port))
        })
        .join()
        .ok()
        .flatten()
        .unwrap_or(0),
    }
}

fn inject(rig: &dyn Rig, fault: Fault) {
    match fault {
        Fault::Kill => {
            for pid in rig.backend_pids() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        Fault::Stop => {
            rig.systemctl(&["stop", UNIT]);
        }
    }
}

/// One fault healed by the daemon: fault → 200, and what its log says.
fn medic_trial(rig: &dyn Rig, fault: Fault, every: Duration) -> (Option<Duration>, Logged) {
    ensure_healthy(rig);
    let wall = now_micros();
    let took = time_fault(&rig.net(), rig.site_port(), every, TIMEOUT, || {
        inject(rig, fault)
    });
    let up = rig.upstream();
    let mut entries = Vec::new();
    let logged = wait_for(Duration::from_secs(10), || {
        entries = rig.daemon_log(wall);
        entries
            .iter()
            .any(|(_, m)| m.contains(&format!("healed [{up} ")) || m.contains("heal failed ["))
    });
    if !logged {
        eprintln!(
            "{}: no `healed [{up} …]` in the daemon's log 10 s after the fault",
            rig.name()
        );
    }
    if let Some(file) = std::env::var_os("BENCH_HEAL_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
        {
            let _ = writeln!(f, "--- {} trial, fault at {wall} µs", fault.name());
            for (t, m) in &entries {
                let _ = writeln!(f, "+{:>8} µs {m}", t - wall);
            }
        }
    }
    let at = |pred: &dyn Fn(&str) -> bool| {
        entries
            .iter()
            .find(|(_, m)| pred(m))
            .map(|(t, _)| Duration::from_micros(t - wall))
    };
    let action = at(&|m| m.contains(&format!("healing [{up} ")));
    let event = at(&|m| {
        m.split_whitespace()
            .any(|w| w == "trigger" || w == "trigger:")
    });
    // the daemon's own call (`job queued unit=…`), not the signal of a job (`what=job queued`);
    // the box's journal lists the fields in another order
    let job = at(&|m| {
        m.contains("job queued")
            && !m.contains("what=job queued")
            && m.contains(&format!("unit={UNIT}"))
    });
    let logged = Logged {
        to_incident: at(&|m| m.contains(&format!("incident [{up} "))),
        to_action: action,
        event_to_action: action.zip(event).and_then(|(a, e)| a.checked_sub(e)),
        event_to_job: job.zip(event).and_then(|(j, e)| j.checked_sub(e)),
    };
    (took, logged)
}

/// One `kill -9` restarted by systemd's `Restart=always`.
fn systemd_trial(rig: &dyn Rig, restart_sec: &str, every: Duration) -> Option<Duration> {
    rig.restart_always(Some(restart_sec));
    ensure_healthy(rig);
    let took = time_fault(&rig.net(), rig.site_port(), every, TIMEOUT, || {
        inject(rig, Fault::Kill)
    });
    rig.restart_always(None);
    took
}

/// The backend's own start: `systemctl start` of the stopped unit to the first 200.
fn start_trial(rig: &dyn Rig, every: Duration) -> Option<Duration> {
    ensure_healthy(rig);
    rig.systemctl(&["stop", UNIT]);
    wait_for(Duration::from_secs(5), || common_status(rig) != 200);
    time_fault(&rig.net(), rig.site_port(), every, TIMEOUT, || {
        rig.systemctl(&["start", UNIT]);
    })
}

#[derive(Default)]
struct Samples {
    medic_kill: Vec<Option<Duration>>,
    medic_stop: Vec<Option<Duration>>,
    log_kill: Vec<Logged>,
    log_stop: Vec<Logged>,
    systemd_kill: Vec<Option<Duration>>,
    start: Vec<Option<Duration>>,
}

fn run(rig: &mut dyn Rig, trials: usize, restart_sec: &str, every: Duration) {
    rig.drop_in("bench-limits.conf", Some(NO_START_LIMIT));
    let load_before = common::load_average();
    let mut s = Samples::default();
    for round in 0..trials {
        rig.start_daemon();
        // a probe round and the first evaluation after the start
        std::thread::sleep(Duration::from_millis(1500));
        let (t, l) = medic_trial(rig, Fault::Kill, every);
        s.medic_kill.push(t);
        s.log_kill.push(l);
        let (t, l) = medic_trial(rig, Fault::Stop, every);
        s.medic_stop.push(t);
        s.log_stop.push(l);
        rig.stop_daemon();
        s.systemd_kill.push(systemd_trial(rig, restart_sec, every));
        s.start.push(start_trial(rig, every));
        eprintln!(
            "{}: round {}/{trials}: medic kill {:?} stop {:?}, Restart=always {:?}, start {:?}",
            rig.name(),
            round + 1,
            s.medic_kill.last().copied().flatten(),
            s.medic_stop.last().copied().flatten(),
            s.systemd_kill.last().copied().flatten(),
            s.start.last().copied().flatten(),
        );
    }
    print_table(
        rig.name(),
        &s,
        trials,
        restart_sec,
        every,
        &load_before,
        &common::load_average(),
    );
}

fn stats(samples: &[Option<Duration>]) -> (Option<(Duration, Duration)>, usize) {
    let ok: Vec<Duration> = samples.iter().flatten().copied().collect();
    (median_p95(&ok), samples.len() - ok.len())
}

fn logged_stats(
    logs: &[Logged],
    pick: fn(&Logged) -> Option<Duration>,
) -> Option<(Duration, Duration)> {
    let v: Vec<Duration> = logs.iter().filter_map(pick).collect();
    median_p95(&v)
}

fn cell(m: Option<(Duration, Duration)>) -> String {
    m.map_or("—".into(), |(med, p95)| {
        format!("{} / {}", ms(med), ms(p95))
    })
}

fn print_table(
    name: &str,
    s: &Samples,
    trials: usize,
    restart_sec: &str,
    every: Duration,
    load_before: &str,
    load_after: &str,
) {
    println!();
    println!(
        "heal, {name}: Node backend {UNIT}, {trials} rounds interleaved, nginx polled every {} ms",
        every.as_millis()
    );
    println!("load average before: {load_before}; after: {load_after}");
    println!(
        "nginx-medic: mode apply, release build, brakes raised:\n{BRAKES}  (debounce, probe_interval: defaults)"
    );
    println!("systemd reference: Restart=always, RestartSec={restart_sec}");
    println!("{UNIT}: StartLimitIntervalSec=0 (a drop-in), so that no trial's start is refused");
    println!("figures: median / p95; the log columns come from the daemon's own log");
    println!(
        "{:<16} {:<16} {:>19} {:>7} {:>19} {:>19} {:>19} {:>19}",
        "fault",
        "who",
        "fault → 200",
        "no 200",
        "fault → incident",
        "fault → healing",
        "trigger → healing",
        "trigger → job"
    );
    let kill_medic = stats(&s.medic_kill);
    let stop_medic = stats(&s.medic_stop);
    let kill_systemd = stats(&s.systemd_kill);
    let start = stats(&s.start);
    let none = "—".to_owned();
    let row = |fault: &str,
               who: &str,
               st: &(Option<(Duration, Duration)>, usize),
               logs: Option<&[Logged]>| {
        let l = |p: fn(&Logged) -> Option<Duration>| {
            logs.map_or(none.clone(), |l| cell(logged_stats(l, p)))
        };
        println!(
            "{fault:<16} {who:<16} {:>19} {:>7} {:>19} {:>19} {:>19} {:>19}",
            cell(st.0),
            st.1,
            l(|x| x.to_incident),
            l(|x| x.to_action),
            l(|x| x.event_to_action),
            l(|x| x.event_to_job),
        );
    };
    row("kill -9", "nginx-medic", &kill_medic, Some(&s.log_kill));
    row("kill -9", "Restart=always", &kill_systemd, None);
    row("kill -9", "backend start", &start, None);
    row(
        "systemctl stop",
        "nginx-medic",
        &stop_medic,
        Some(&s.log_stop),
    );
    println!(
        "{:<16} {:<16} {:>19} {:>7}",
        "systemctl stop", "Restart=always", "— (not restarted)", ""
    );
    row("systemctl stop", "backend start", &start, None);
    let ratio = |a: &(Option<(Duration, Duration)>, usize),
                 b: &(Option<(Duration, Duration)>, usize)| {
        match (a.0, b.0) {
            (Some((x, _)), Some((y, _))) => format!(
                "{:.2}× ({:+.0} ms)",
                x.as_secs_f64() / y.as_secs_f64(),
                (x.as_secs_f64() - y.as_secs_f64()) * 1e3
            ),
            _ => "—".into(),
        }
    };
    println!("ratios of the medians:");
    println!(
        "  kill -9:        nginx-medic / Restart=always  {}",
        ratio(&kill_medic, &kill_systemd)
    );
    println!(
        "  kill -9:        nginx-medic / backend start   {}",
        ratio(&kill_medic, &start)
    );
    println!(
        "  kill -9:        Restart=always / backend start {}",
        ratio(&kill_systemd, &start)
    );
    println!(
        "  systemctl stop: nginx-medic / backend start   {}",
        ratio(&stop_medic, &start)
    );
}

fn main() {
    let trials: usize = common::env_or("BENCH_TRIALS", 10);
    let every = Duration::from_millis(common::env_or("BENCH_POLL_MS", 5));
    let restart_sec: String = common::env_or("BENCH_RESTART_SEC", "100ms".to_owned());
    let places: String = common::env_or("BENCH_HEAL_WHERE", "lab,box".to_owned());
    for place in places.split(',').map(str::trim) {
        match place {
            "lab" => {
                let lab = Lab::start();
                let mut config = std::fs::read_to_string(lab.config()).expect("the lab's config");
                config.push_str(&format!(
                    "daemon:\n  mode: apply\n  metrics: null\n{BRAKES}"
                ));
                std::fs::write(lab.config(), config).expect("the lab's config");
                let mut rig = LabRig { lab, daemon: None };
                run(&mut rig, trials, &restart_sec, every);
            }
            "box" => {
                if std::env::var_os("NGINX_MEDIC_DEB").is_none() {
                    println!("\nheal, box: left out: NGINX_MEDIC_DEB is not set (scripts/bench heal builds the package)");
                    continue;
                }
                let b = SystemBox::up("bench-heal");
                let conf = "/etc/nginx-medic/medic.yaml";
                let text = b.read_file(conf);
                assert!(
                    text.trim_end().ends_with("mode: apply"),
                    "the box's medic.yaml does not end in its `daemon:` section:\n{text}"
                );
                b.write_file(conf, &format!("{}\n{BRAKES}", text.trim_end()));
                b.exec_ok(&["mkdir", "-p", "/etc/systemd/system/nginx-medic.service.d"]);
                b.write_file(
                    "/etc/systemd/system/nginx-medic.service.d/bench.conf",
                    &format!("[Service]\nEnvironment=NGINX_MEDIC_LOG={LOG_FILTER}\n"),
                );
                b.systemctl_ok(&["daemon-reload"]);
                b.systemctl_ok(&["stop", "nginx-medic.service"]);
                let mut rig = BoxRig { b };
                run(&mut rig, trials, &restart_sec, every);
            }
            other => panic!("BENCH_HEAL_WHERE: `{other}` is neither `lab` nor `box`"),
        }
    }
}
