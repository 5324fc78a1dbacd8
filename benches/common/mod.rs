//! What the daemon benches (`heal`, `idle`, `storm`) share: a `nginx-medic run` child with its
//! sd_notify socket, CPU and RSS read from /proc, the unit cgroups of a lab or a box, an HTTP
//! poller that can run inside a box's network namespace, and the figures' formatting.
//!
//! The lab and the box themselves are the integration tests' harness (`tests/support`).

// Each bench uses a part of this module.
#![allow(dead_code)]

use std::fs::{self, File};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A `nginx-medic run` started by the bench; killed on drop if it still runs.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
    notify: UnixDatagram,
}

impl Daemon {
    /// Starts `nginx-medic --config CONFIG run` with ENV and NGINX_MEDIC_LOG=`log_filter`,
    /// stdout and stderr to LOG, and waits (up to 60 s) for READY=1 on its sd_notify socket in
    /// DIR. `command` is the binary (or an `nsenter … binary` prefix) to run.
    pub fn start(
        mut command: Command,
        config: &Path,
        env: &[(String, String)],
        dir: &Path,
        log_filter: &str,
    ) -> Daemon {
        let socket = dir.join("bench-notify.sock");
        let _ = fs::remove_file(&socket);
        let notify = UnixDatagram::bind(&socket).expect("the sd_notify socket binds");
        notify
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("a socket timeout");
        let log = dir.join("bench-daemon.log");
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .expect("the daemon log opens");
        let child = command
            .arg("--config")
            .arg(config)
            .arg("run")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("NOTIFY_SOCKET", &socket)
            .env("NGINX_MEDIC_LOG", log_filter)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("the log"))
            .stderr(out)
            .spawn()
            .expect("nginx-medic run starts");
        let daemon = Daemon { child, log, notify };
        let mut buf = [0u8; 4096];
        loop {
            match daemon.notify.recv(&mut buf) {
                Ok(n) if buf[..n].starts_with(b"READY=1") => break,
                Ok(_) => {}
                Err(e) => panic!(
                    "no READY=1 from nginx-medic run: {e}\n{}",
                    daemon.log_text()
                ),
            }
        }
        // the notifications that follow are not read: a full queue only drops them
        let _ = daemon.notify.set_nonblocking(true);
        daemon
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log's length now, to read what a trial added with `log_since`.
    pub fn log_len(&self) -> usize {
        fs::metadata(&self.log).map_or(0, |m| m.len() as usize)
    }

    pub fn log_since(&self, offset: usize) -> String {
        self.log_text().get(offset..).unwrap_or_default().to_owned()
    }

    /// SIGTERM, then up to 30 s for the exit (SIGKILL after that).
    /// Stops the daemon; with `BENCH_KEEP_LOG=FILE` its log is appended to FILE first.
    pub fn stop(mut self) {
        if let Some(keep) = std::env::var_os("BENCH_KEEP_LOG") {
            if let Ok(mut f) = File::options().create(true).append(true).open(keep) {
                let _ = std::io::Write::write_all(&mut f, self.log_text().as_bytes());
            }
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("nginx-medic run ignored SIGTERM for 30 s: killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// Clock ticks per second of /proc/PID/stat's times.
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).unwrap_or(100)
}

/// CPU time of PID as /proc/PID/stat counts it: (own utime + stime, reaped children's), in
/// seconds. `None` once the process is gone.
pub fn cpu_seconds(pid: u32) -> Option<(f64, f64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    // fields from 3 (state) on: utime is field 14, stime 15, cutime 16, cstime 17
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i - 3).and_then(|v| v.parse::<u64>().ok());
    let tck = clock_ticks() as f64;
    let own = (num(14)? + num(15)?) as f64 / tck;
    let children = (num(16)? + num(17)?) as f64 / tck;
    Some((own, children))
}

/// VmRSS of PID in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

pub use crate::support::lab::status_kib;

/// The summed CPU seconds (own + reaped children) of PIDS; the gone ones count 0.
pub fn cpu_of(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|p| cpu_seconds(*p))
        .map(|(own, children)| own + children)
        .sum()
}

/// `/proc/loadavg`'s three averages, as printed with every figure.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

/// The cgroup directory of UNIT (e.g. `web.service`) somewhere below ROOT.
pub fn unit_cgroup(root: &Path, unit: &str) -> Option<PathBuf> {
    let entries = fs::read_dir(root).ok()?;
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = entry.path();
        if entry.file_name() == unit {
            return Some(path);
        }
        if let Some(found) = unit_cgroup(&path, unit) {
            return Some(found);
        }
    }
    None
}

/// The PIDs (as this machine numbers them) in the cgroup of UNIT below ROOT.
pub fn unit_pids(root: &Path, unit: &str) -> Vec<u32> {
    unit_cgroup(root, unit)
        .and_then(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Microseconds since the epoch.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Microseconds since the epoch of a tracing text line's RFC 3339 stamp
/// (`2026-12-01T15:40:00.123456Z  INFO …`), `None` for a line without one.
pub fn line_micros(line: &str) -> Option<u64> {
    let stamp = line.split_whitespace().next()?;
    let (date, time) = stamp.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    let micros: i64 = format!("{frac:0<6}").get(..6)?.parse().ok()?;
    // days from the civil date (Howard Hinnant's algorithm)
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    u64::try_from(secs * 1_000_000 + micros).ok()
}

/// The status of `GET /` on 127.0.0.1:PORT, 0 when nothing answers; with a short timeout, so a
/// poll loop keeps its pace.
pub fn status(port: u16) -> u16 {
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, SocketAddr, TcpStream};
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: nginx-medic-bench\r\nConnection: close\r\n\r\n"
    );
    if s.write_all(req.as_bytes()).is_err() {
        return 0;
    }
    let mut head = [0u8; 12];
    let mut got = 0;
    while got < head.len() {
        match s.read(&mut head[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    std::str::from_utf8(&head[..got])
        .ok()
        .and_then(|h| h.strip_prefix("HTTP/1."))
        .and_then(|h| h.get(2..5))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The network namespace to poll from: this machine's, or a box's (`/proc/PID1/ns/net`).
pub enum Net {
    Host,
    Namespace(PathBuf),
}

/// What one fault measured: how long until the first 200 through nginx after the fault, or
/// `None` when none came within the timeout.
pub type Trial = Option<Duration>;

/// Injects a fault with `fault` and times it: the clock starts just before `fault` runs, and a
/// poller thread (inside NET), polling the site on PORT every `every` from then on while
/// `fault` runs, waits for the first answer that is not 200 (the fault seen; up to 2 s, else
/// `None`), then for the first 200 after it, up to `timeout` after the fault.
pub fn time_fault(
    net: &Net,
    port: u16,
    every: Duration,
    timeout: Duration,
    fault: impl FnOnce(),
) -> Trial {
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<Instant>();
    let ns = match net {
        Net::Host => None,
        Net::Namespace(p) => Some(File::open(p).expect("the box's network namespace opens")),
    };
    let poller = std::thread::spawn(move || -> Trial {
        if let Some(ns) = ns {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        }
        let _ = ready_tx.send(());
        let start = go_rx.recv().ok()?;
        while status(port) == 200 {
            if start.elapsed() > Duration::from_secs(2) {
                eprintln!(
                    "the site on port {port} answered 200 throughout the 2 s after the fault"
                );
                return None;
            }
            std::thread::sleep(every);
        }
        loop {
            if status(port) == 200 {
                return Some(start.elapsed());
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(every);
        }
    });
    let _ = ready_rx.recv();
    let start = Instant::now();
    let _ = go_tx.send(start);
    fault();
    poller.join().unwrap_or(None)
}

/// Polls `check` every 20 ms until it holds or `timeout` passes; whether it held.
pub fn wait_for(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The value of environment variable NAME parsed, else `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// The median and the 95th percentile (nearest rank) of SAMPLES.
pub fn median_p95(samples: &[Duration]) -> Option<(Duration, Duration)> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort();
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2
    };
    let rank = ((0.95 * n as f64).ceil() as usize).clamp(1, n);
    Some((median, s[rank - 1]))
}

pub fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}
