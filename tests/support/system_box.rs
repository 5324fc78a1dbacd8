//! The production-shaped box for integration tests: a Debian booted with systemd as PID 1
//! (`systemd-nspawn` over an overlay of the machine's `/`, fenced in its own mount namespace
//! and cgroup2 group, loopback-only network), with the freshly built `.deb` installed by
//! `dpkg -i`, backends as system units and Debian-style nginx sites; torn down on drop.
//!
//! What the box contains is `lab/box/` (shared with `scripts/box`): `boot.sh` is the fenced start,
//! `provision.sh` the setup run inside. This module only boots, drives and tears down.
//!
//! Needs root, `scripts/setup` (systemd-container, the lab venv) and the package in
//! `NGINX_MEDIC_DEB` (`scripts/test` builds it with `scripts/package` before `cargo test`: the
//! harness never runs cargo, `cargo test` holds the build lock; `NGINX_MEDIC_BIN`, when set, then
//! replaces the package's binary with that build). A machine that cannot run the box
//! fails the test with the reason; it never skips.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The repository root: `lab/box/` lives there, and it is visible inside the box at this path.
const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// PATH of every command run inside the box.
const PATH_IN_BOX: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How long a boot may take until `systemctl is-system-running` says running or degraded.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a command inside the box may run before it is killed.
const EXEC_TIMEOUT_SECS: &str = "120";

/// The sites of a provisioned box: name, nginx port on the box's loopback, the upstream nginx
/// passes to (as nginx-medic names it).
pub const SITES: [(&str, u16, &str); 5] = [
    ("api", 8081, "127.0.0.1:8000"),
    ("web", 8082, "127.0.0.1:8001"),
    ("django", 8083, "127.0.0.1:8002"),
    ("runserver", 8084, "127.0.0.1:8003"),
    ("php", 8085, "unix:/run/php/php8.2-fpm.sock"),
];

/// Boxes started by this process so far, so parallel test threads never share a name.
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// How long each stage of `SystemBox::up` took.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// From starting systemd-nspawn to `is-system-running` = running|degraded.
    pub boot: Duration,
    /// `provision.sh backends`: apps, units, sites, all answering 200.
    pub backends: Duration,
    /// `provision.sh install`: `dpkg -i` and `mode: apply`.
    pub install: Duration,
    /// `provision.sh start`: `systemctl start nginx-medic` until active.
    pub start: Duration,
}

/// A booted box; dropping it powers it off and removes its files and cgroups (also on panic).
pub struct SystemBox {
    /// The box's directory on the machine (`root/`, `rw/`, `console.log`), removed on drop.
    pub dir: PathBuf,
    /// The box's cgroup2 group (every box process lives below it), removed on drop.
    pub cgroup: PathBuf,
    /// The box's PID 1 (systemd), as the machine sees it.
    pub pid1: u32,
    /// How long the stages of `up` took (only `boot` after `boot`).
    pub timings: Timings,
    nspawn: Option<Child>,
    down: bool,
}

impl SystemBox {
    /// Boots a box and provisions it: the backends, the package from `NGINX_MEDIC_DEB`, and
    /// `nginx-medic.service` started from the shipped unit.
    pub fn up(name: &str) -> SystemBox {
        let deb = deb_path();
        let venv = venv_path();
        let mut b = SystemBox::boot(name);
        let venv = venv.display().to_string();
        let deb = deb.display().to_string();
        b.timings.backends = b.provision(&["backends", &venv]);
        b.timings.install = b.provision(&["install", &deb]);
        // a quicker build than the package, to iterate on (never set by scripts/test)
        if let Ok(bin) = std::env::var("NGINX_MEDIC_BIN") {
            b.exec_ok(&["install", "-m", "0755", &bin, "/usr/bin/nginx-medic"]);
        }
        b.timings.start = b.provision(&["start"]);
        b
    }

    /// Boots a box (nothing installed yet) and waits until systemd says running or degraded.
    ///
    /// `name` makes the directory readable (`/tmp/nginx-medic-box-NAME-PID-N`); the PID and a
    /// counter make it unique among parallel tests and test processes.
    pub fn boot(name: &str) -> SystemBox {
        preflight();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = format!("nginx-medic-box-{name}-{}-{n}", std::process::id());
        let dir = Path::new("/tmp").join(&base);
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        for sub in ["root", "rw"] {
            fs::create_dir(dir.join(sub)).expect("box subdirectory");
        }
        let cgroup = cg2_root().join(&base);
        let console = File::create(dir.join("console.log")).expect("console.log");
        let started = Instant::now();
        // setsid and unshare exec (a child of this process leads no process group), bash execs
        // systemd-nspawn: the child is systemd-nspawn itself
        let spawned = Command::new("setsid")
            .args(["unshare", "--mount", "--propagation", "private", "bash"])
            .arg(box_src().join("boot.sh"))
            .env_clear()
            .env("PATH", PATH_IN_BOX)
            .env("LANG", "C.UTF-8")
            .env("B", &dir)
            .env("CG2", cg2_root())
            .env("GROUP", &base)
            .stdin(Stdio::null())
            .stdout(console.try_clone().expect("console.log"))
            .stderr(console)
            .spawn();
        let mut b = SystemBox {
            dir,
            cgroup,
            pid1: 0,
            timings: Timings::default(),
            nspawn: None,
            down: false,
        };
        // from here on, a panic drops `b` and so tears the box down
        let nspawn = spawned.unwrap_or_else(|e| panic!("cannot start systemd-nspawn: {e}"));
        // as scripts/box writes them, so `scripts/box down NAME-PID-N` ends a box whose test
        // process was killed before its drop could run
        let _ = fs::write(b.dir.join("nspawn.pid"), format!("{}\n", nspawn.id()));
        b.nspawn = Some(nspawn);
        b.pid1 = b.wait_pid1(started);
        let _ = fs::write(b.dir.join("pid1"), format!("{}\n", b.pid1));
        let mut state = String::new();
        while state != "running" && state != "degraded" {
            assert!(
                started.elapsed() < BOOT_TIMEOUT,
                "the box did not finish booting within {BOOT_TIMEOUT:?} (`{state}`)\n{}",
                b.console()
            );
            std::thread::sleep(Duration::from_millis(50));
            state = stdout(&b.exec(&["systemctl", "is-system-running"]));
        }
        b.timings.boot = started.elapsed();
        if state == "degraded" {
            eprintln!(
                "box {}: degraded; failed units:\n{}",
                b.dir.display(),
                stdout(&b.exec(&["systemctl", "--failed", "--no-legend"]))
            );
        }
        b
    }

    /// Runs `lab/box/provision.sh ARGS` inside the box; panics with its output when it fails.
    pub fn provision(&self, args: &[&str]) -> Duration {
        let started = Instant::now();
        let script = box_src().join("provision.sh").display().to_string();
        let mut argv = vec!["bash", script.as_str()];
        argv.extend_from_slice(args);
        let out = self.exec(&argv);
        assert!(
            out.status.success(),
            "provision.sh {} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        started.elapsed()
    }

    /// Runs ARGV inside the box (all its namespaces, a clean environment; no shell), bounded.
    pub fn exec(&self, argv: &[&str]) -> Output {
        self.command(argv)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run nsenter: {e}"))
    }

    /// Runs ARGV inside the box; panics with its output unless it succeeds; returns stdout.
    pub fn exec_ok(&self, argv: &[&str]) -> String {
        let out = self.exec(argv);
        assert!(
            out.status.success(),
            "in the box: {argv:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes `text` to PATH inside the box (through `tee`: an existing file keeps its inode,
    /// owner and mode, as an editor saving in place does; a new one is root's, 0644).
    pub fn write_file(&self, path: &str, text: &str) {
        let mut child = self
            .command(&["tee", "--", path])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run nsenter: {e}"));
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("cannot write {path} in the box: {e}"));
        let out = child.wait_with_output().expect("tee");
        assert!(
            out.status.success(),
            "cannot write {path} in the box: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The text of PATH inside the box.
    pub fn read_file(&self, path: &str) -> String {
        self.exec_ok(&["cat", "--", path])
    }

    /// Sets `KEY=value` in an env file inside the box (the file keeps its owner and mode).
    pub fn set_env(&self, path: &str, key: &str, value: &str) {
        let text = self.read_file(path);
        let prefix = format!("{key}=");
        assert!(
            text.lines().any(|l| l.starts_with(&prefix)),
            "{path} has no {key}=:\n{text}"
        );
        let new: Vec<String> = text
            .lines()
            .map(|l| {
                if l.starts_with(&prefix) {
                    format!("{key}={value}")
                } else {
                    l.to_owned()
                }
            })
            .collect();
        self.write_file(path, &(new.join("\n") + "\n"));
    }

    /// `systemctl ARGS` inside the box.
    pub fn systemctl(&self, args: &[&str]) -> Output {
        let mut argv = vec!["systemctl"];
        argv.extend_from_slice(args);
        self.exec(&argv)
    }

    /// `systemctl ARGS` inside the box; panics with its output unless it succeeds.
    pub fn systemctl_ok(&self, args: &[&str]) {
        let mut argv = vec!["systemctl"];
        argv.extend_from_slice(args);
        self.exec_ok(&argv);
    }

    /// One unit property, e.g. `unit_property("nginx-medic.service", "NRestarts")`.
    pub fn unit_property(&self, unit: &str, property: &str) -> String {
        self.exec_ok(&["systemctl", "show", "-p", property, "--value", unit])
            .trim()
            .to_owned()
    }

    /// The main PID of a unit inside the box's PID namespace, `None` while it has none.
    pub fn main_pid(&self, unit: &str) -> Option<u32> {
        self.unit_property(unit, "MainPID")
            .parse()
            .ok()
            .filter(|pid| *pid != 0)
    }

    /// `journalctl -u UNIT --no-pager EXTRA…` inside the box (short-precise unless EXTRA says).
    pub fn journal(&self, unit: &str, extra: &[&str]) -> String {
        let mut argv = vec![
            "journalctl",
            "-u",
            unit,
            "--no-pager",
            "-o",
            "short-precise",
        ];
        argv.extend_from_slice(extra);
        stdout_raw(&self.exec(&argv))
    }

    /// The journal entries of UNIT as JSON objects (`journalctl -o json`), oldest first.
    pub fn journal_entries(&self, unit: &str, extra: &[&str]) -> Vec<serde_json::Value> {
        let mut argv = vec!["journalctl", "-u", unit, "--no-pager", "-o", "json"];
        argv.extend_from_slice(extra);
        stdout_raw(&self.exec(&argv))
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// `GET PATH` on 127.0.0.1:PORT of the box's own loopback (from a thread that joined the
    /// box's network namespace): the status and the body, `None` when nothing answers in time.
    pub fn http_get(&self, port: u16, path: &str) -> Option<(u16, String)> {
        let ns = File::open(format!("/proc/{}/ns/net", self.pid1)).ok()?;
        let path = path.to_owned();
        std::thread::spawn(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
            super::lab::http_get(port, &path)
        })
        .join()
        .ok()
        .flatten()
    }

    /// The status of `GET PATH` on the box's 127.0.0.1:PORT, 0 when nothing answers in time.
    pub fn http_status(&self, port: u16, path: &str) -> u16 {
        self.http_get(port, path).map_or(0, |(status, _)| status)
    }

    /// `ip:port` of every listening TCP socket inside the box with the process holding it
    /// (`ss -Hltnp`), one line each.
    pub fn listeners(&self) -> Vec<String> {
        self.exec_ok(&["ss", "-Hltnp"])
            .lines()
            .map(|l| l.split_whitespace().skip(3).collect::<Vec<_>>().join(" "))
            .collect()
    }

    /// What systemd-nspawn printed (the box's console).
    pub fn console(&self) -> String {
        fs::read_to_string(self.dir.join("console.log")).unwrap_or_default()
    }

    fn command(&self, argv: &[&str]) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.args(["--kill-after=5", EXEC_TIMEOUT_SECS, "nsenter", "-t"])
            .arg(self.pid1.to_string())
            .args(["-a", "--"])
            .args(argv)
            .env_clear()
            .env("PATH", PATH_IN_BOX)
            .env("LANG", "C.UTF-8")
            .env("HOME", "/root");
        cmd
    }

    /// The child of systemd-nspawn that runs systemd: the box's PID 1.
    fn wait_pid1(&mut self, started: Instant) -> u32 {
        let cgroup = self.cgroup.clone();
        let nspawn = self.nspawn.as_mut().expect("spawned");
        let id = nspawn.id();
        loop {
            if let Ok(Some(status)) = nspawn.try_wait() {
                panic!(
                    "systemd-nspawn exited during boot ({status}):\n{}",
                    fs::read_to_string(self.dir.join("console.log")).unwrap_or_default()
                );
            }
            let children =
                fs::read_to_string(format!("/proc/{id}/task/{id}/children")).unwrap_or_default();
            for pid in children
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
            {
                let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                if comm.trim() == "systemd" && in_group(&cgroup, pid) {
                    return pid;
                }
            }
            assert!(
                started.elapsed() < BOOT_TIMEOUT,
                "no PID 1 under systemd-nspawn {id} within {BOOT_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// True when PID lives in the box's cgroup2 group (guards every signal against recycled PIDs).
    fn in_group(&self, pid: u32) -> bool {
        in_group(&self.cgroup, pid)
    }

    /// The teardown of the recipe: SIGTERM to systemd-nspawn (it powers the box off) and wait;
    /// SIGRTMIN+4 (poweroff) to PID 1 only if it is still there; the cgroups depth first; the
    /// directory. Never SIGTERM to PID 1: systemd re-executes itself on it and keeps running.
    fn tear_down(&mut self) -> Result<(), String> {
        let mut problems = Vec::new();
        if let Some(nspawn) = self.nspawn.as_mut() {
            let pid = nix::unistd::Pid::from_raw(nspawn.id() as i32);
            if matches!(nspawn.try_wait(), Ok(None)) {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                if !wait_child(nspawn, Duration::from_secs(20)) {
                    problems.push(format!("systemd-nspawn {pid} ignored SIGTERM for 20 s"));
                }
            }
        }
        if self.pid1 != 0 && super::lab::pid_alive(self.pid1) && self.in_group(self.pid1) {
            let pid1 = self.pid1.to_string();
            let _ = Command::new("kill").args(["-s", "RTMIN+4", &pid1]).status();
            if !wait_gone(self.pid1, Duration::from_secs(20)) {
                problems.push(format!("PID 1 ({pid1}) ignored poweroff for 20 s: SIGKILL"));
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(self.pid1 as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                wait_gone(self.pid1, Duration::from_secs(5));
            }
        }
        if let Some(mut nspawn) = self.nspawn.take() {
            if !wait_child(&mut nspawn, Duration::from_secs(10)) {
                let _ = nspawn.kill();
                let _ = nspawn.wait();
            }
        }
        for _ in 0..50 {
            if !self.cgroup.exists() {
                break;
            }
            remove_cgroups(&self.cgroup);
            std::thread::sleep(Duration::from_millis(100));
        }
        if self.cgroup.exists() {
            problems.push(format!(
                "cannot remove the cgroup {}",
                self.cgroup.display()
            ));
        }
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let prefix = format!(" {}/", self.dir.display());
        if mounts.contains(&prefix) {
            problems.push(format!(
                "something is still mounted under {}: not removed",
                self.dir.display()
            ));
        } else if let Err(e) = fs::remove_dir_all(&self.dir) {
            problems.push(format!("cannot remove {}: {e}", self.dir.display()));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

impl Drop for SystemBox {
    fn drop(&mut self) {
        if self.down {
            return;
        }
        self.down = true;
        if std::thread::panicking() && self.pid1 != 0 {
            eprintln!(
                "--- box {}: journalctl -u nginx-medic\n{}",
                self.dir.display(),
                self.journal("nginx-medic.service", &[])
            );
            eprintln!(
                "--- failed units:\n{}",
                stdout_raw(&self.exec(&["systemctl", "--failed", "--no-legend"]))
            );
        }
        if let Err(msg) = self.tear_down() {
            let msg = format!("tearing down the box {}: {msg}", self.dir.display());
            if std::thread::panicking() {
                eprintln!("{msg}");
            } else {
                panic!("{msg}");
            }
        }
    }
}

/// Polls `check` every 20 ms until it holds; returns how long that took, panics naming `what`
/// after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < timeout,
            "{what}: not within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

/// Microseconds since the epoch, as journald's `__REALTIME_TIMESTAMP` counts (the box shares
/// the machine's clock).
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The package to install: `NGINX_MEDIC_DEB`, absolute.
pub fn deb_path() -> PathBuf {
    let Some(deb) = std::env::var_os("NGINX_MEDIC_DEB") else {
        panic!(
            "NGINX_MEDIC_DEB is not set: the box tests install the .deb that `scripts/package` \
             builds (e.g. `NGINX_MEDIC_DEB=$(scripts/package) cargo test box_`; scripts/test \
             does this). The harness cannot build it: `cargo test` holds the build lock"
        );
    };
    let deb = PathBuf::from(deb);
    fs::canonicalize(&deb).unwrap_or_else(|e| {
        panic!(
            "NGINX_MEDIC_DEB=`{}`: {e} (build it with scripts/package)",
            deb.display()
        )
    })
}

/// The lab's Python venv (`MEDIC_LAB_VENV` or REPO/.venv-lab), visible inside the box as is.
pub fn venv_path() -> PathBuf {
    let venv = std::env::var_os("MEDIC_LAB_VENV")
        .map_or_else(|| Path::new(REPO).join(".venv-lab"), PathBuf::from);
    fs::canonicalize(&venv).unwrap_or_else(|e| {
        panic!(
            "no lab venv at `{}` ({e}): run scripts/setup as root (or point MEDIC_LAB_VENV at one)",
            venv.display()
        )
    })
}

fn box_src() -> PathBuf {
    Path::new(REPO).join("lab/box")
}

/// The cgroup2 mount: /sys/fs/cgroup on a unified host, /sys/fs/cgroup/unified on a hybrid one.
fn cg2_root() -> PathBuf {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        PathBuf::from("/sys/fs/cgroup")
    } else {
        PathBuf::from("/sys/fs/cgroup/unified")
    }
}

/// Fails (never skips) with the reason when this machine cannot run a box.
fn preflight() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the box tests need root: a box mounts an overlay and a cgroup2 group and runs \
         systemd-nspawn (run the tests as root, after scripts/setup)"
    );
    assert!(
        cg2_root().join("cgroup.controllers").exists(),
        "the box tests need a cgroup2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified"
    );
    let found = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|p| p.join("systemd-nspawn").exists())
    }) || Path::new("/usr/bin/systemd-nspawn").exists();
    assert!(
        found,
        "systemd-nspawn is missing: run scripts/setup as root (it installs systemd-container)"
    );
}

/// True when PID lives in the cgroup2 group CGROUP or below it.
fn in_group(cgroup: &Path, pid: u32) -> bool {
    let Some(group) = cgroup.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|text| {
        text.lines().any(|l| {
            l.strip_prefix("0::/")
                .is_some_and(|rest| rest == group || rest.starts_with(&format!("{group}/")))
        })
    })
}

/// Waits up to `timeout` for a child to exit (and reaps it); false when it still runs.
fn wait_child(child: &mut Child, timeout: Duration) -> bool {
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) if started.elapsed() >= timeout => return false,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Waits up to `timeout` until PID (not our child) is gone or a zombie.
fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let started = Instant::now();
    while super::lab::pid_alive(pid) {
        if started.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// rmdir of DIR's cgroup directories, depth first (errors are retried by the caller).
fn remove_cgroups(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroups(&entry.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

/// Trimmed stdout of a command.
fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn stdout_raw(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}
