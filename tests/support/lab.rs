//! The real-component lab for integration tests: a fenced systemd user manager running nginx,
//! a FastAPI backend, a Node.js backend, PHP-FPM and Django on gunicorn, built by `lab/lab.sh up`
//! and ended on drop.
//!
//! Needs root and the packages and venv of `scripts/setup`. A machine that cannot run the lab
//! fails the test with the reason; it never skips, so a green run proves the lab ran.

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The repository root, where `lab/lab.sh` lives.
const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// The lowest base port a lab may use.
const FIRST_BASE: u16 = 18_000;
/// The highest base port: BASE..BASE+19 stays below the usual ephemeral range (32768..).
const LAST_BASE: u16 = 32_740;
/// Ports owned by one lab, BASE..BASE+SPAN-1.
const SPAN: u16 = 20;

/// Slots handed out by this process so far, so parallel test threads never share one.
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

/// A running lab; dropping it runs `lab/lab.sh down` (also when the test panics).
pub struct Lab {
    /// The lab's directory (config, logs, sockets, state), removed on drop.
    pub dir: PathBuf,
    /// The first of the lab's 20 ports.
    pub base: u16,
    /// The lab's cgroup2 group (every lab process lives below it), removed on drop.
    pub cgroup: PathBuf,
    /// The systemd user manager's PID.
    pub manager_pid: u32,
    /// How long `lab.sh up` took.
    pub up_took: Duration,
    /// nginx-medic runs inside the lab's mount namespace (where the lab's own `/etc/hosts` is).
    in_namespace: bool,
    down: bool,
}

impl Lab {
    /// Picks free ports, runs `lab/lab.sh up` and waits until nginx and both backends answer.
    ///
    /// Panics with the script's output when the lab cannot be built, after tearing down
    /// whatever it had started.
    pub fn start() -> Lab {
        preflight();
        let (base, dir) = reserve();
        let started = Instant::now();
        let out = Command::new("bash")
            .arg(lab_script())
            .arg("up")
            .arg(&dir)
            .arg(base.to_string())
            .output()
            .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", lab_script().display()));
        let up_took = started.elapsed();
        if !out.status.success() {
            let down = run_down(&dir);
            panic!(
                "lab/lab.sh up {} {base} failed ({}):\n{}{}\n--- lab/lab.sh down:\n{}{}",
                dir.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&down.stdout),
                String::from_utf8_lossy(&down.stderr),
            );
        }
        let mut lab = Lab {
            cgroup: PathBuf::new(),
            manager_pid: 0,
            dir,
            base,
            up_took,
            in_namespace: false,
            down: false,
        };
        // from here on, a panic drops `lab` and so tears it down
        lab.cgroup = PathBuf::from(lab.read_trimmed("cgroup"));
        lab.manager_pid = lab
            .read_trimmed("manager.pid")
            .parse()
            .unwrap_or_else(|e| panic!("bad {}/manager.pid: {e}", lab.dir.display()));
        lab
    }

    /// The variables that reach the lab's manager: `XDG_RUNTIME_DIR`, `DBUS_SESSION_BUS_ADDRESS`.
    pub fn env(&self) -> Vec<(String, String)> {
        let run = self.dir.join("run");
        vec![
            ("XDG_RUNTIME_DIR".to_owned(), run.display().to_string()),
            (
                "DBUS_SESSION_BUS_ADDRESS".to_owned(),
                format!("unix:path={}", run.join("bus").display()),
            ),
        ]
    }

    /// The nginx-medic config written for this lab, `DIR/medic.yaml`.
    pub fn config(&self) -> PathBuf {
        self.dir.join("medic.yaml")
    }

    /// A named port: `api_site`, `web_site`, `php_site`, `django_site` (nginx), `api`, `web`,
    /// `django` (the backends; php-fpm listens on `php_socket()`).
    pub fn port(&self, name: &str) -> u16 {
        let offset = match name {
            "api_site" => 0,
            "web_site" => 1,
            "php_site" => 2,
            "django_site" => 3,
            "api" => 10,
            "web" => 11,
            "django" => 13,
            other => panic!(
                "no lab port `{other}`: use api_site, web_site, php_site, django_site, api, web or django"
            ),
        };
        self.base + offset
    }

    /// The php-fpm pool's socket, `DIR/run/php/php-fpm.sock`.
    pub fn php_socket(&self) -> PathBuf {
        self.dir.join("run/php/php-fpm.sock")
    }

    /// Runs `systemctl --user ARGS` against the lab's manager (bounded to 30 s).
    pub fn systemctl(&self, args: &[&str]) -> Output {
        Command::new("timeout")
            .args(["30", "systemctl", "--user"])
            .args(args)
            .envs(self.env())
            .output()
            .unwrap_or_else(|e| panic!("cannot run systemctl: {e}"))
    }

    /// The value of one unit property, e.g. `unit_property("api.service", "ActiveState")`.
    pub fn unit_property(&self, unit: &str, property: &str) -> String {
        let out = self.systemctl(&["show", "-p", property, "--value", unit]);
        assert!(
            out.status.success(),
            "systemctl --user show -p {property} {unit} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The main PID of a unit, `None` while it has none.
    pub fn main_pid(&self, unit: &str) -> Option<u32> {
        self.unit_property(unit, "MainPID")
            .parse()
            .ok()
            .filter(|pid| *pid != 0)
    }

    /// Restarts a unit and waits (up to 20 s) until its main process listens again: a loaded
    /// machine starts uvicorn in seconds, not the fraction of one a fixed sleep assumes.
    pub fn restart_and_wait(&self, unit: &str) {
        let out = self.systemctl(&["restart", unit]);
        assert!(
            out.status.success(),
            "systemctl --user restart {unit}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(pid) = self.main_pid(unit) {
                let ss = Command::new("ss").args(["-Hltnxp"]).output();
                let listening = ss.is_ok_and(|o| {
                    String::from_utf8_lossy(&o.stdout).contains(&format!("pid={pid},"))
                });
                if listening {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{unit} does not listen 20 s after its restart"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every PID in the lab's cgroup2 group and below it.
    pub fn cgroup_pids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        collect_pids(&self.cgroup, &mut pids);
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// The output a unit wrote to `DIR/logs/NAME.log` (`nginx`, `api`, `web`, `systemd`).
    pub fn log(&self, name: &str) -> String {
        fs::read_to_string(self.dir.join("logs").join(format!("{name}.log"))).unwrap_or_default()
    }

    /// nginx's error log, `DIR/nginx/logs/error.log`.
    pub fn nginx_error_log(&self) -> String {
        fs::read_to_string(self.dir.join("nginx/logs/error.log")).unwrap_or_default()
    }

    /// The status code of `GET PATH` on 127.0.0.1:PORT, 0 when nothing answers in time.
    pub fn http_status(&self, port: u16, path: &str) -> u16 {
        http_get(port, path).map_or(0, |(status, _)| status)
    }

    /// Gives the lab's mount namespace (its manager, nginx, the backends) its own `/etc/hosts`
    /// with TEXT, bind-mounted over the machine's file there only; from then on nginx-medic runs
    /// inside that namespace too, so it resolves names as the lab's nginx does. The machine's
    /// `/etc/hosts` is never touched, and the mount ends with the lab's manager.
    pub fn use_hosts_file(&mut self, text: &str) {
        let path = self.dir.join("hosts");
        fs::write(&path, text).expect("write the lab's hosts file");
        let out = Command::new("nsenter")
            .arg("--target")
            .arg(self.manager_pid.to_string())
            .args(["--mount", "--", "mount", "--bind"])
            .arg(&path)
            .arg("/etc/hosts")
            .output()
            .unwrap_or_else(|e| panic!("cannot run nsenter: {e}"));
        assert!(
            out.status.success(),
            "cannot bind-mount {} over /etc/hosts in the lab's namespace: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        self.in_namespace = true;
    }

    /// The nginx-medic binary with the lab env and `--config DIR/medic.yaml` first, inside the
    /// lab's mount namespace once it has its own `/etc/hosts` (`nsenter` execs it: the child's
    /// PID is nginx-medic's).
    pub fn medic_command(&self) -> Command {
        let mut command = if self.in_namespace {
            let mut c = Command::new("nsenter");
            c.arg("--target")
                .arg(self.manager_pid.to_string())
                .args(["--mount", "--"])
                .arg(env!("CARGO_BIN_EXE_nginx-medic"));
            c
        } else {
            Command::new(env!("CARGO_BIN_EXE_nginx-medic"))
        };
        command.arg("--config").arg(self.config()).envs(self.env());
        command
    }

    /// Runs the nginx-medic binary with the lab env and `--config DIR/medic.yaml` first.
    pub fn medic(&self, args: &[&str]) -> Output {
        self.medic_command()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run nginx-medic: {e}"))
    }

    /// Sets `KEY=value` in one of the lab's env files (`config/NAME`).
    pub fn set_env(&self, file: &str, key: &str, value: &str) {
        let path = self.dir.join("config").join(file);
        let text = fs::read_to_string(&path).expect("env file");
        let new: Vec<String> = text
            .lines()
            .map(|l| {
                if l.starts_with(&format!("{key}=")) {
                    format!("{key}={value}")
                } else {
                    l.to_string()
                }
            })
            .collect();
        fs::write(&path, new.join("\n") + "\n").expect("write env file");
    }

    /// Runs nginx-medic with `--json` appended: the exit code and the JSON it printed.
    pub fn medic_json(&self, args: &[&str]) -> (i32, serde_json::Value) {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.medic(&all);
        let code = out.status.code().unwrap_or(-1);
        let value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?} printed no JSON ({e}), exit {code}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (code, value)
    }

    /// `apply` heals: outcome `healed`, exit 0, and the site on `site_port` answers 200, as
    /// does every other site of the lab.
    pub fn apply_heals(&self, site_port: u16) -> serde_json::Value {
        let (code, applied) = self.apply(&[], &[]);
        assert_eq!(
            (code, applied["outcome"].as_str()),
            (0, Some("healed")),
            "{applied:#}\n{}",
            self.nginx_error_log()
        );
        assert_eq!(self.http_status(site_port, "/"), 200);
        applied
    }

    /// Runs `apply ARGS --json`, then checks that every site of the lab answers as the test
    /// expects: the status given in `expect` for that site port, 200 for every other site
    /// (no fix may silently break a neighbour). Returns the exit code and the JSON.
    pub fn apply(&self, args: &[&str], expect: &[(u16, u16)]) -> (i32, serde_json::Value) {
        let mut all = vec!["apply"];
        all.extend_from_slice(args);
        let (code, applied) = self.medic_json(&all);
        self.assert_sites(expect, &applied);
        (code, applied)
    }

    /// Every site of the lab (each `listen` port in `nginx/sites-enabled`, the test's own sites
    /// included) answers `GET /` with the status `expect` gives for its port, else 200.
    pub fn assert_sites(&self, expect: &[(u16, u16)], context: &serde_json::Value) {
        let mut wrong = Vec::new();
        for port in self.site_ports() {
            let want = expect
                .iter()
                .find(|(p, _)| *p == port)
                .map_or(200, |(_, s)| *s);
            let got = self.http_status(port, "/");
            if got != want {
                wrong.push(format!(
                    "site on port {port} answers {got}, expected {want}"
                ));
            }
        }
        assert!(
            wrong.is_empty(),
            "after apply: {}\n{context:#}\n{}",
            wrong.join("; "),
            self.nginx_error_log()
        );
    }

    /// The ports nginx listens on for the lab's plain-HTTP sites, from `listen 127.0.0.1:PORT`
    /// lines. An `ssl` port is left out: plain HTTP to it is a 400, and the TLS sites' own tests
    /// verify them over TLS.
    pub fn site_ports(&self) -> Vec<u16> {
        let mut ports = Vec::new();
        let dir = self.dir.join("nginx/sites-enabled");
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension() != Some(std::ffi::OsStr::new("conf")) {
                continue;
            }
            let text = fs::read_to_string(&path).unwrap_or_default();
            for line in text.lines() {
                let Some(rest) = line.trim().strip_prefix("listen ") else {
                    continue;
                };
                if rest.split([' ', ';']).any(|w| w == "ssl") {
                    continue;
                }
                let addr = rest.split([' ', ';']).next().unwrap_or_default();
                let port = addr.rsplit_once(':').map_or(addr, |(_, p)| p);
                ports.extend(port.parse::<u16>().ok());
            }
        }
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    /// Every configuration file of the lab with its bytes (nginx, unit and env files, the php-fpm
    /// pool, the Django project), to prove that a dry run or a refused fix changed nothing.
    pub fn config_files(&self) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
        fn walk(dir: &Path, out: &mut std::collections::BTreeMap<PathBuf, Vec<u8>>) {
            for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                // What the backends write while they run is not configuration.
                let runtime = name == "__pycache__"
                    || [".pid", ".log", ".sock"].iter().any(|s| name.ends_with(s));
                if runtime {
                    continue;
                }
                if path.is_dir() {
                    walk(&path, out);
                } else if let Ok(bytes) = fs::read(&path) {
                    out.insert(path, bytes);
                }
            }
        }
        let mut out = std::collections::BTreeMap::new();
        for dir in [
            "nginx/sites-enabled",
            "config",
            "php",
            "apps/django/project",
        ] {
            walk(&self.dir.join(dir), &mut out);
        }
        let conf = self.dir.join("nginx/nginx.conf");
        out.insert(conf.clone(), fs::read(&conf).unwrap_or_default());
        out
    }

    /// Runs `explain` and returns its text (plain: not a terminal). With
    /// `NGINX_MEDIC_CAPTURE_EXPLAIN` set, also stores `explain --json` as the fixture
    /// `tests/fixtures/explain/NAME.json` that the snapshot tests of `src/cli/explain.rs` render.
    pub fn explain(&self, name: &str) -> String {
        if std::env::var_os("NGINX_MEDIC_CAPTURE_EXPLAIN").is_some() {
            let out = self.medic(&["explain", "--json"]);
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/explain")
                .join(format!("{name}.json"));
            let _ = fs::create_dir_all(path.parent().unwrap_or(Path::new(".")));
            fs::write(&path, &out.stdout).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        let out = self.medic(&["explain"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn read_trimmed(&self, file: &str) -> String {
        let path = self.dir.join(file);
        fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
            .trim()
            .to_owned()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.down {
            return;
        }
        self.down = true;
        let out = run_down(&self.dir);
        if !out.status.success() {
            let msg = format!(
                "lab/lab.sh down {} failed ({}):\n{}{}",
                self.dir.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if std::thread::panicking() {
                eprintln!("{msg}");
            } else {
                panic!("{msg}");
            }
        }
    }
}

/// `GET PATH` on 127.0.0.1:PORT over plain HTTP/1.1: the status and the body, `None` when
/// nothing answers within a few seconds.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(8))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .ok()?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: nginx-medic-lab\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut raw = Vec::new();
    // a reset after a complete answer still leaves the answer in `raw`
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .strip_prefix("HTTP/1.")?
        .get(2..5)?
        .parse::<u16>()
        .ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, body)| body.to_owned());
    Some((status, body))
}

/// A KiB figure of PID's `/proc/PID/status`, by its label (`VmRSS:`, `RssAnon:`).
pub fn status_kib(pid: u32, label: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// True while PID exists and is not a zombie (a killed process may linger as one for a moment).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    !matches!(state, None | Some('Z') | Some('X'))
}

fn lab_script() -> PathBuf {
    Path::new(REPO).join("lab/lab.sh")
}

fn run_down(dir: &Path) -> Output {
    Command::new("bash")
        .arg(lab_script())
        .arg("down")
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{} down`: {e}", lab_script().display()))
}

/// Fails (never skips) with the reason when this machine cannot run the lab.
fn preflight() {
    if !nix::unistd::geteuid().is_root() {
        panic!(
            "the lab tests need root: the lab fences a systemd user manager in a mount namespace \
             and a cgroup2 group (run the tests as root, after scripts/setup)"
        );
    }
    let cgroup2 = [
        "/sys/fs/cgroup/cgroup.controllers",
        "/sys/fs/cgroup/unified/cgroup.controllers",
    ];
    if !cgroup2.iter().any(|p| Path::new(p).exists()) {
        panic!(
            "the lab tests need a cgroup2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified, \
             and this machine has none"
        );
    }
    let venv = std::env::var_os("MEDIC_LAB_VENV")
        .map_or_else(|| Path::new(REPO).join(".venv-lab"), PathBuf::from);
    if !venv.join("bin/uvicorn").exists() {
        panic!(
            "no lab venv at `{}`: run scripts/setup as root (or point MEDIC_LAB_VENV at one)",
            venv.display()
        );
    }
}

/// A base port whose 20 ports are free, and the lab dir that reserves it.
///
/// Each process starts at a slot derived from its PID and walks on from there; creating the
/// lab dir (`/tmp/nginx-medic-lab-BASE`) is the atomic claim, so labs of parallel threads and
/// of other test processes never share ports.
fn reserve() -> (u16, PathBuf) {
    let slots = usize::from((LAST_BASE - FIRST_BASE) / SPAN + 1);
    let start = (std::process::id() as usize).wrapping_mul(7919) % slots;
    for _ in 0..slots {
        let slot = (start + NEXT_SLOT.fetch_add(1, Ordering::Relaxed)) % slots;
        let base = FIRST_BASE + SPAN * u16::try_from(slot).unwrap_or(0);
        let busy = used_ports();
        if (base..base + SPAN).any(|port| busy.contains(&port)) {
            continue;
        }
        // /tmp, not $TMPDIR: an unprivileged nginx worker must be able to traverse the parent
        let dir = Path::new("/tmp").join(format!("nginx-medic-lab-{base}"));
        match fs::create_dir(&dir) {
            Ok(()) => return (base, dir),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("cannot create the lab dir {}: {e}", dir.display()),
        }
    }
    panic!("no free block of {SPAN} ports between {FIRST_BASE} and {LAST_BASE} for a lab");
}

/// Local ports of every TCP socket in /proc/net/tcp and /proc/net/tcp6, in any state.
fn used_ports() -> Vec<u16> {
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let port = line
                .split_whitespace()
                .nth(1)
                .and_then(|local| local.rsplit_once(':'))
                .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok());
            ports.extend(port);
        }
    }
    ports
}

fn collect_pids(dir: &Path, pids: &mut Vec<u32>) {
    if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                collect_pids(&entry.path(), pids);
            }
        }
    }
}
