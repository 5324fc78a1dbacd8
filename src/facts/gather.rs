//! Gathers a `Facts` snapshot from the adapters: nginx's configuration, /proc, systemd, the log.

use super::mapping::{self, Dialled, MappingInput};
use super::socket_access::{self, PathPerm, UnixPathFacts, WorkerIdentity};
use super::sockets::SocketFile;
use super::units::UnitOutput;
use super::{error_log, nginx, php_fpm, reproduce, unit_output, Facts, Gathered};
use crate::adapters::nginx::NginxBinary;
use crate::adapters::procfs::Procfs;
use crate::adapters::systemd::Systemd;
use crate::adapters::unit_log;
use crate::config::Settings;
use crate::facts::units::UnitFacts;
use crate::nginx_conf;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, ToSocketAddrs};
use std::path::PathBuf;

/// How much of the error log's end is read and classified.
pub const ERROR_LOG_WINDOW: u64 = 1 << 20;

/// Reads every source and maps each route to its backend.
pub async fn gather(settings: &Settings, procfs: &Procfs) -> Facts {
    gather_on(settings, procfs, &BTreeMap::new(), None).await
}

/// As [`gather`], knowing the unit that last owned each address's listening socket (the
/// daemon remembers them: a backend that just stopped is mapped at once, without searching
/// every service of the host), the units read on `systemd` (the daemon's own connection, kept
/// for its whole life) when given, else on a connection of its own.
pub async fn gather_on(
    settings: &Settings,
    procfs: &Procfs,
    remembered: &BTreeMap<String, String>,
    systemd: Option<&Systemd>,
) -> Facts {
    let taken_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let binary = nginx_binary(settings);
    let nginx = Gathered::from_result(read_nginx(&binary));
    let nginx_test = Gathered::from_result(
        nginx_test(&binary, nginx.ok())
            .await
            .map(|t| super::nginx_test::NginxTest::from_output(t.ok, &t.output)),
    );
    let sockets = Gathered::from_result(procfs.socket_facts());
    let error_log = match error_log_path(settings, nginx.ok()) {
        Some(path) => Gathered::from_result(error_log::read_error_log(&path, ERROR_LOG_WINDOW)),
        None => Gathered::Unavailable {
            reason: "the configuration names no error_log; set `nginx.error_log`".into(),
        },
    };
    let mut units = gather_units(settings, nginx.ok(), sockets.ok(), remembered, systemd).await;
    if let Gathered::Ok { data } = &mut units {
        let user_bus = settings.bus == crate::config::Bus::User;
        data.iter_mut().for_each(|u| add_unit_output(u, user_bus));
    }
    let fpm_pools = fpm_pools(units.ok().map_or(&[][..], Vec::as_slice));
    // damage is a fact, not an abort: the other evidence stands
    let last_good = Gathered::from_result(
        super::last_good::LastGood::load(&settings.state_dir)
            .map_err(|e| crate::error_text::chain(&e)),
    );
    let no_memory = super::last_good::LastGood::empty();
    let routes = match (nginx.ok(), sockets.ok()) {
        (Some(n), Some(s)) => {
            let unit_list = units.ok().map_or(&[][..], Vec::as_slice);
            let unit_env = unit_environments(unit_list);
            let declared: BTreeMap<String, String> = fpm_pools
                .iter()
                .filter_map(|p| Some((p.address.clone()?, p.unit.clone())))
                .collect();
            let input = MappingInput {
                sockets: s,
                units: unit_list,
                unit_env: &unit_env,
                hints: &settings.backends,
                bindv6only: procfs.bindv6only(),
                declared: &declared,
                remembered,
                last_good: last_good.ok().unwrap_or(&no_memory),
            };
            routes_resolving_once(n, &input)
        }
        _ => Vec::new(),
    };
    let (pm2, supervision) = super::gather_backends::backends(
        units.ok().map_or(&[][..], Vec::as_slice),
        &routes,
        sockets.ok(),
        procfs,
        &crate::adapters::pm2::Pm2Cli,
        &last_processes(&settings.state_dir),
        taken_at,
    );
    let worker = nginx.ok().and_then(|n| worker_identity(n.user.as_deref()));
    let unix_paths = nginx
        .ok()
        .map_or_else(Vec::new, |n| unix_paths_of(n, worker.as_ref()));
    let disk = disk_facts(settings, nginx.ok(), error_log.ok(), &pm2);
    let mut facts = Facts {
        taken_at,
        nginx,
        sockets,
        units,
        error_log,
        nginx_test,
        routes: routes.into_iter().map(std::sync::Arc::new).collect(),
        worker,
        unix_paths,
        fpm_pools,
        disk,
        pm2,
        supervision,
        backend_probes: Vec::new(),
        reproductions: Vec::new(),
        rolled_back_edits: Vec::new(),
        verified_edits: Vec::new(),
        last_good,
    };
    finish(settings, &mut facts, &mut Phases::start()).await;
    facts
}

/// What every snapshot, full or targeted, reads last, from what it gathered: the direct
/// requests, the reproductions, and what the audit journal says of the site files.
async fn finish(settings: &Settings, facts: &mut Facts, phases: &mut Phases) {
    facts.backend_probes = backend_probes(facts).await;
    phases.done("backend_probes");
    facts.reproductions = reproductions(facts).await;
    phases.done("reproductions");
    let mut site_files: Vec<&std::path::Path> =
        facts.routes.iter().map(|r| &*r.pass.at.file).collect();
    site_files.sort();
    site_files.dedup();
    let rolled_back =
        super::attempts::rolled_back_directive_edits(&settings.state_dir, &site_files);
    let verified = super::attempts::verified_edits(&settings.state_dir, &site_files);
    facts.rolled_back_edits = rolled_back;
    facts.verified_edits = verified;
    phases.done("attempts");
}

/// The routes of the configuration, each host name resolved once per snapshot: a name in many
/// upstreams costs one lookup (and a dead resolver one timeout, not one per server).
fn routes_resolving_once(
    n: &super::nginx::NginxFacts,
    input: &MappingInput<'_>,
) -> Vec<mapping::Route> {
    let resolved = std::cell::RefCell::new(BTreeMap::<String, Vec<IpAddr>>::new());
    let resolve_once = |host: &str| {
        if let Some(ips) = resolved.borrow().get(host) {
            return ips.clone();
        }
        let ips = resolve(host);
        resolved.borrow_mut().insert(host.to_string(), ips.clone());
        ips
    };
    mapping::routes(n, input, &resolve_once)
}

/// What nginx's workers see at each unix socket path the configuration dials.
fn unix_paths_of(
    n: &super::nginx::NginxFacts,
    worker: Option<&super::socket_access::WorkerIdentity>,
) -> Vec<super::socket_access::UnixPathFacts> {
    let mut paths: Vec<String> = all_dialled(n)
        .into_iter()
        .filter_map(|d| match d {
            Dialled::Unix { path } => Some(path),
            Dialled::Tcp { .. } => None,
        })
        .collect();
    paths.sort();
    paths.dedup();
    paths.iter().map(|p| unix_path_facts(p, worker)).collect()
}

// --- the daemon's targeted snapshot ------------------------------------------------------------

/// What a file of the configuration was when it was parsed: device, inode, size, mtime and
/// ctime (to the nanosecond), `None` when it could not be `stat`ed. The directories that hold
/// the files are keyed too, so a file added to an `include` glob's directory is a change.
///
/// The ctime is what makes this stand in for the content hash `nginx -t`'s cache keeps: a
/// tool can give a rewritten file its old size and mtime (`cp -p`, `touch -r`, `rsync -t`),
/// but every write, and every setting of the mtime, sets the ctime to the kernel's clock, which
/// no unprivileged call can set back. Hashing instead would read every file at each targeted
/// snapshot (7.9 MB, some 20 ms, on a 10,000-server host), the whole of the budget of a heal.
pub type ConfigIdentity = BTreeMap<PathBuf, Option<FileIdentity>>;

/// Device, inode, size, mtime and ctime (ns since the epoch).
pub type FileIdentity = (u64, u64, u64, i128, i128);

/// The identity of every file of `files` (the ones nginx's configuration loaded) and of the
/// directories they are in.
pub fn config_identity(files: &[PathBuf]) -> ConfigIdentity {
    use std::os::unix::fs::MetadataExt;
    let stamp = |p: &std::path::Path| {
        std::fs::metadata(p).ok().map(|m| {
            let ns = |s: i64, ns: i64| i128::from(s) * 1_000_000_000 + i128::from(ns);
            let (mtime, ctime) = (ns(m.mtime(), m.mtime_nsec()), ns(m.ctime(), m.ctime_nsec()));
            (m.dev(), m.ino(), m.size(), mtime, ctime)
        })
    };
    files
        .iter()
        .flat_map(|f| [Some(f.as_path()), f.parent()])
        .flatten()
        .map(|p| (p.to_path_buf(), stamp(p)))
        .collect()
}

/// Which sources a targeted snapshot read again; the others are the last full snapshot's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fresh {
    /// The units whose properties were read again.
    pub units: Vec<String>,
    /// The listening sockets (`/proc/net`), their owners looked up only for new sockets.
    pub sockets: bool,
    /// The error log since the last snapshot's end.
    pub error_log: bool,
    /// How long each phase took, in µs, in order (the daemon logs them at debug level).
    pub took_us: Vec<(&'static str, u64)>,
}

/// The µs each phase of a snapshot took, in order.
#[derive(Debug)]
struct Phases {
    last: std::time::Instant,
    took: Vec<(&'static str, u64)>,
}

impl Phases {
    fn start() -> Self {
        Phases {
            last: std::time::Instant::now(),
            took: Vec::new(),
        }
    }

    /// Ends the phase `name` now.
    fn done(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        let us = now.saturating_duration_since(self.last).as_micros();
        self.took
            .push((name, u64::try_from(us).unwrap_or(u64::MAX)));
        self.last = now;
    }
}

/// A snapshot after a watched unit changed, built on `previous` (the last full snapshot, whose
/// configuration files had the identity `config`): re-read are only the properties of `units`,
/// the listening sockets (`/proc/net`; the owners of a socket seen before are kept, the fds of
/// every process are searched only for a new one), and the error log from where the last read
/// ended. The configuration's parse, `nginx -t`, the PM2 apps and the remembered state are the
/// last snapshot's. The routes are mapped again from what is fresh.
///
/// `None` when the last snapshot cannot stand in: a configuration file changed (or a file was
/// added beside one), the configuration, sockets or units were unavailable then, or the error
/// log was rotated or grew past the window. The caller takes a full snapshot then.
pub async fn gather_targeted(
    settings: &Settings,
    procfs: &Procfs,
    remembered: &BTreeMap<String, String>,
    previous: &Facts,
    config: &ConfigIdentity,
    units: &BTreeSet<String>,
    systemd: Option<&Systemd>,
) -> Option<(Facts, Fresh)> {
    let mut phases = Phases::start();
    let n = previous.nginx.ok()?;
    if !previous.pm2.is_empty() {
        return None; // its apps are read with `pm2 jlist`, too slow to take here
    }
    if config_identity(&n.files) != *config {
        tracing::debug!("a configuration file changed: a full snapshot");
        return None;
    }
    phases.done("config_identity");
    let previous_units = previous.units.ok()?;
    let sockets = procfs.socket_facts_reusing(previous.sockets.ok()?).ok()?;
    phases.done("sockets");
    let error_log = match (&previous.error_log, error_log_path(settings, Some(n))) {
        (Gathered::Ok { data }, Some(path)) if data.path == path => Gathered::Ok {
            data: extend_error_log(data, ERROR_LOG_WINDOW)?,
        },
        (_, Some(path)) => {
            Gathered::from_result(error_log::read_error_log(&path, ERROR_LOG_WINDOW))
        }
        (log, None) => log.clone(),
    };
    phases.done("error_log");
    // the daemon's own connection, kept for its whole life: a new one costs its handshake
    let connected;
    let systemd = match systemd {
        Some(systemd) => systemd,
        None => {
            connected = Systemd::connect(settings.bus).await.ok()?;
            &connected
        }
    };
    // nginx's own unit too: a failed probe may be about nginx itself
    let mut units = units.clone();
    units.insert(settings.nginx.unit.clone());
    let units = &units;
    let names: Vec<String> = units.iter().cloned().collect();
    let mut read = systemd.units(&names).await;
    let user_bus = settings.bus == crate::config::Bus::User;
    // a process killed by a signal (`kill -9`, a stop) has no last words to read (a journal
    // read costs tens of ms); one that exited by itself does
    read.iter_mut()
        .filter(|u| !matches!(u.run.exec_main_code, CLD_KILLED | CLD_DUMPED))
        .for_each(|u| add_unit_output(u, user_bus));
    phases.done("units");
    let fresh_units: Vec<String> = read.iter().map(|u| u.name.clone()).collect();
    // in the last snapshot's order, each unit read again in its place
    let mut read: BTreeMap<String, UnitFacts> =
        read.into_iter().map(|u| (u.name.clone(), u)).collect();
    let mut unit_list: Vec<UnitFacts> = previous_units
        .iter()
        .filter_map(|u| match units.contains(&u.name) {
            true => read.remove(&u.name),
            false => Some(u.clone()),
        })
        .collect();
    unit_list.extend(read.into_values());
    unit_list.retain(|u| u.load_state == "loaded" || u.name == settings.nginx.unit);
    let fpm_pools = fpm_pools(&unit_list);
    let no_memory = super::last_good::LastGood::empty();
    let unit_env = unit_environments(&unit_list);
    let declared: BTreeMap<String, String> = fpm_pools
        .iter()
        .filter_map(|p| Some((p.address.clone()?, p.unit.clone())))
        .collect();
    let input = MappingInput {
        sockets: &sockets,
        units: &unit_list,
        unit_env: &unit_env,
        hints: &settings.backends,
        bindv6only: procfs.bindv6only(),
        declared: &declared,
        remembered,
        last_good: previous.last_good.ok().unwrap_or(&no_memory),
    };
    let routes = routes_resolving_once(n, &input);
    phases.done("routes");
    let taken_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // no backend outside systemd then: its processes are not read again (a backend started by
    // hand since has a target with no unit, which only a full snapshot evaluates)
    let (pm2, supervision) = if previous.supervision.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        super::gather_backends::backends(
            &unit_list,
            &routes,
            Some(&sockets),
            procfs,
            &crate::adapters::pm2::Pm2Cli,
            &last_processes(&settings.state_dir),
            taken_at,
        )
    };
    if !pm2.is_empty() {
        return None; // a PM2 daemon appeared: the full snapshot reads its apps
    }
    phases.done("backends");
    // read again as a full snapshot does: a socket's owner and mode, the bind keys' values,
    // the journal's record of the site files and the reproductions change with the fault
    let unix_paths = unix_paths_of(n, previous.worker.as_ref());
    let disk = disk_facts(settings, Some(n), error_log.ok(), &pm2);
    let last_good = Gathered::from_result(
        super::last_good::LastGood::load(&settings.state_dir)
            .map_err(|e| crate::error_text::chain(&e)),
    );
    let mut facts = Facts {
        taken_at,
        sockets: Gathered::Ok { data: sockets },
        units: Gathered::Ok { data: unit_list },
        error_log,
        routes: routes.into_iter().map(std::sync::Arc::new).collect(),
        unix_paths,
        fpm_pools,
        disk,
        pm2,
        supervision,
        last_good,
        ..previous.clone()
    };
    phases.done("disk");
    finish(settings, &mut facts, &mut phases).await;
    let fresh = Fresh {
        units: fresh_units,
        sockets: true,
        error_log: true,
        took_us: phases.took,
    };
    Some((facts, fresh))
}

/// `si_code` of a child killed by a signal, and of one that dumped core (`ExecMainCode`).
const CLD_KILLED: i32 = 2;
const CLD_DUMPED: i32 = 3;

/// `previous` with the lines appended since it was read: `None` when the file is not the one
/// read then (it is shorter: rotated or truncated) or when what was read would pass `window`.
fn extend_error_log(
    previous: &error_log::ErrorLogFacts,
    window: u64,
) -> Option<error_log::ErrorLogFacts> {
    let size = std::fs::metadata(&previous.path).ok()?.len();
    if size < previous.resume_at || size.saturating_sub(previous.read_from) > window {
        return None;
    }
    if size == previous.resume_at {
        return Some(previous.clone());
    }
    let since = error_log::read_error_log_since(&previous.path, previous.resume_at).ok()?;
    let mut out = previous.clone();
    for (class, n) in &since.counts {
        *out.counts.entry(*class).or_default() += n;
    }
    out.entries.extend(since.entries);
    out.size = since.size;
    out.skipped_lines += since.skipped_lines;
    out.partial_tail = since.partial_tail;
    out.resume_at = since.resume_at;
    out.future_lines += since.future_lines;
    Some(out)
}

/// How long one direct request to a backend may take.
const DIRECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Requests each backend `facts::direct` names, directly: the evidence wrong-port and
/// too-big-header are decided on, gathered before planning so that planning stays pure.
async fn backend_probes(facts: &Facts) -> Vec<super::direct::BackendProbe> {
    let mut out = Vec::new();
    for r in super::direct::requests(facts) {
        let address = r.address();
        let answer = crate::adapters::backend_http::request(
            &r.host,
            r.port,
            &r.path,
            &address,
            DIRECT_TIMEOUT,
        )
        .await;
        out.push(super::direct::BackendProbe {
            address,
            path: r.path,
            answer,
        });
    }
    out
}

/// How long nginx may take to answer one reproduction.
const REPRODUCE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// The most of the error log read after a reproduction, from its size before the request.
const REPRODUCE_LOG_WINDOW: u64 = 1 << 20;

/// Tries each failure `facts::reproduce` names again: nginx-medic's own request, with a fresh
/// token, through nginx to the site's probe URL; then the error-log lines written since the
/// request whose request field is that request line. At most
/// [`reproduce::MAX_REPRODUCTIONS`] requests, one per site location, each within
/// [`REPRODUCE_TIMEOUT`].
async fn reproductions(facts: &Facts) -> Vec<reproduce::Reproduction> {
    use reproduce::Reproduction;
    let log = facts.error_log.ok().map(|l| l.path.clone());
    let mut out = Vec::new();
    for (i, r) in reproduce::requests(facts).into_iter().enumerate() {
        if i >= reproduce::MAX_REPRODUCTIONS {
            out.push(Reproduction::not_tried(
                &r,
                format!(
                    "not tried: at most {} sites are reproduced per look",
                    reproduce::MAX_REPRODUCTIONS
                ),
            ));
            continue;
        }
        if let Some(why) = &r.not_aimed {
            out.push(Reproduction::not_tried(&r, format!("not sent: {why}")));
            continue;
        }
        let Some(log) = &log else {
            out.push(Reproduction::not_tried(
                &r,
                "not sent: the error log, where its line would be found, cannot be read".into(),
            ));
            continue;
        };
        let token = match reproduce::token() {
            Ok(token) => token,
            Err(why) => {
                out.push(Reproduction::not_tried(&r, format!("not sent: {why}")));
                continue;
            }
        };
        let requested = reproduce::with_token(&r.url, &token);
        let request_line = match reproduce::request_line(&requested) {
            Ok(line) => line,
            Err(why) => {
                out.push(Reproduction::not_tried(&r, format!("not sent: {why}")));
                continue;
            }
        };
        // the log's size before the request: its line can only be written after it
        let before = std::fs::metadata(log).map(|m| m.len());
        let answer =
            crate::adapters::probe::probe_site(&requested, r.host.as_deref(), REPRODUCE_TIMEOUT)
                .await;
        let (lines, log_error) = match before {
            Ok(offset) => match own_log_lines(log, offset, &request_line) {
                Ok(lines) => (lines, None),
                Err(e) => (Vec::new(), Some(format!("`{}`: {e}", log.display()))),
            },
            Err(e) => (Vec::new(), Some(format!("`{}`: {e}", log.display()))),
        };
        tracing::debug!(url = %requested, status = ?answer.status, lines = lines.len(), "reproduction");
        out.push(Reproduction {
            url: r.url,
            host: r.host,
            requested,
            request_line,
            status: answer.status,
            error: answer.error,
            lines,
            log_error,
        });
    }
    out
}

/// The error-log lines from `offset` (at most [`REPRODUCE_LOG_WINDOW`] bytes of them) whose
/// request field is exactly `request_line`. A log now shorter than `offset` was rotated: it is
/// read from its start.
fn own_log_lines(
    log: &std::path::Path,
    offset: u64,
    request_line: &str,
) -> std::io::Result<Vec<error_log::LogEntry>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(log)?;
    let size = file.metadata()?.len();
    let start = if offset > size { 0 } else { offset };
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.take(REPRODUCE_LOG_WINDOW).read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let mut at = start;
    let mut own = Vec::new();
    for line in text.split_inclusive('\n') {
        if let Some(entry) = error_log::parse_line(line) {
            if reproduce::is_own(entry.request, request_line) {
                own.push(entry.to_entry(at));
            }
        }
        at += line.len() as u64;
    }
    Ok(own)
}

/// The mtimes of the configuration files and the error log, and the hinted bind values.
fn disk_facts(
    settings: &Settings,
    nginx: Option<&nginx::NginxFacts>,
    error_log: Option<&error_log::ErrorLogFacts>,
    pm2: &[super::pm2::Pm2Daemon],
) -> super::DiskFacts {
    let files = nginx.map_or(&[][..], |n| n.files.as_slice());
    let mtimes = files
        .iter()
        .chain(error_log.map(|l| &l.path))
        .filter_map(|f| Some((f.clone(), mtime(f)?)))
        .collect();
    let hinted_binds = settings
        .backends
        .iter()
        .filter_map(|h| h.bind.as_ref())
        .map(|bind| super::HintedBind {
            file: bind.file.clone(),
            key: bind.key.clone(),
            value: crate::adapters::fs::read_settings_file(&bind.file)
                .ok()
                .and_then(|text| {
                    mapping::parse_env_file(&text)
                        .into_iter()
                        .find(|(k, _)| *k == bind.key)
                        .map(|(_, v)| v)
                }),
        })
        .collect();
    let apps = pm2
        .iter()
        .filter_map(|d| d.apps.ok())
        .flat_map(|apps| apps.iter());
    let mut ecosystem_files = BTreeMap::new();
    let mut pm2_log_tails = BTreeMap::new();
    for app in apps {
        for file in super::pm2::ecosystem_candidates(app) {
            if let Ok(text) = crate::adapters::fs::read_settings_file(&file) {
                ecosystem_files.insert(file, text);
            }
        }
        for log in [&app.err_log, &app.out_log].into_iter().flatten() {
            if let Some(text) = log_tail(log) {
                pm2_log_tails.insert(log.clone(), text);
            }
        }
    }
    super::DiskFacts {
        mtimes,
        hinted_binds,
        ecosystem_files,
        pm2_log_tails,
    }
}

/// The most of a PM2 log file that is read.
const PM2_LOG_TAIL: u64 = 64 * 1024;

/// The daemon's memory of hand-started backends; a damaged file is warned about and read as
/// empty (the daemon replaces it at its next look).
fn last_processes(
    state_dir: &std::path::Path,
) -> BTreeMap<String, super::supervision::ProcessFacts> {
    super::gather_backends::read_last_processes(state_dir).unwrap_or_else(|e| {
        tracing::warn!(error = %crate::error_text::chain(&e), "cannot read the hand-started backends seen before");
        BTreeMap::new()
    })
}

/// The last [`PM2_LOG_TAIL`] bytes of a log file, when it opens (an app's: never a FIFO, a
/// device or a redirected symlink; bounded whatever its size).
fn log_tail(path: &str) -> Option<String> {
    match crate::adapters::fs::read_log_tail(std::path::Path::new(path), PM2_LOG_TAIL) {
        Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) => {
            tracing::debug!(file = %path, error = %e, "cannot read the PM2 log");
            None
        }
    }
}

/// A file's mtime, to the nanosecond.
fn mtime(path: &std::path::Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).ok()?.modified().ok()
}

// --- unix sockets and backend processes -------------------------------------------------------

/// The pools of every unit started as a PHP-FPM master (`--fpm-config FILE`).
fn fpm_pools(units: &[UnitFacts]) -> Vec<php_fpm::FpmPool> {
    let read = |p: &std::path::Path| crate::adapters::fs::read_settings_file(p).ok();
    let expand = |pattern: &str| -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = glob::glob(pattern)
            .map(|paths| paths.flatten().collect())
            .unwrap_or_default();
        files.sort();
        files
    };
    units
        .iter()
        .filter_map(|u| {
            let argv: Vec<String> = u.exec_start.iter().flat_map(|c| c.argv.clone()).collect();
            Some((u, php_fpm::fpm_config_arg(&argv)?))
        })
        .flat_map(|(u, conf)| php_fpm::pools(&u.name, &conf, &read, &expand))
        .collect()
}

/// Who nginx's workers run as: the `user` directive (`user NAME [GROUP]`, default `nobody`),
/// looked up as nginx does (the group named like the user, else the user's primary group, plus
/// the user's supplementary groups).
fn worker_identity(directive: Option<&str>) -> Option<WorkerIdentity> {
    use nix::unistd::{getgrouplist, Group, User};
    let mut words = directive.unwrap_or("nobody").split_whitespace();
    let name = words.next().unwrap_or("nobody");
    let user = User::from_name(name).ok().flatten()?;
    let group = words
        .next()
        .and_then(|g| Group::from_name(g).ok().flatten())
        .or_else(|| Group::from_name(name).ok().flatten())
        .or_else(|| Group::from_gid(user.gid).ok().flatten());
    let (group_name, gid) = match group {
        Some(g) => (g.name, g.gid),
        None => (user.gid.to_string(), user.gid),
    };
    let mut groups: Vec<u32> = std::ffi::CString::new(name)
        .ok()
        .and_then(|c| getgrouplist(&c, gid).ok())
        .map(|gs| gs.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_default();
    groups.push(gid.as_raw());
    groups.sort_unstable();
    groups.dedup();
    Some(WorkerIdentity {
        user: user.name,
        group: group_name,
        uid: user.uid.as_raw(),
        gid: gid.as_raw(),
        groups,
    })
}

/// `stat`s a unix socket path and every directory above it.
fn unix_path_facts(path: &str, worker: Option<&WorkerIdentity>) -> UnixPathFacts {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let perm = |m: &std::fs::Metadata| PathPerm {
        uid: m.uid(),
        gid: m.gid(),
        mode: m.mode() & 0o7777,
    };
    let meta = std::fs::metadata(path).ok();
    let dirs: Option<Vec<PathPerm>> = std::path::Path::new(path)
        .ancestors()
        .skip(1)
        .map(|d| std::fs::metadata(d).ok().map(|m| perm(&m)))
        .collect();
    let worker_can_connect = match (worker, &meta, dirs) {
        (Some(w), Some(m), Some(dirs)) => Some(socket_access::can_connect(w, &dirs, &perm(m))),
        _ => None,
    };
    UnixPathFacts {
        path: path.to_string(),
        exists: meta.is_some() || std::fs::symlink_metadata(path).is_ok(),
        is_socket: meta.as_ref().is_some_and(|m| m.file_type().is_socket()),
        file: meta.as_ref().map(|m| SocketFile {
            uid: m.uid(),
            gid: m.gid(),
            user: nix::unistd::User::from_uid(m.uid().into())
                .ok()
                .flatten()
                .map(|u| u.name),
            group: nix::unistd::Group::from_gid(m.gid().into())
                .ok()
                .flatten()
                .map(|g| g.name),
            mode: format!("{:04o}", m.mode() & 0o7777),
        }),
        worker_can_connect,
    }
}

/// Whether a unit is not running well (failed, restarting, restarted by systemd, or its last
/// main process ended badly), so that its own last words are worth reading. A unit that is
/// merely stopped is not: a host has many, and reading each one's journal is slow.
fn troubled(unit: &UnitFacts) -> bool {
    let ended_badly = unit.run.exec_main_code != 0
        && !(unit.run.exec_main_code == 1 && unit.run.exec_main_status == 0);
    unit.active_state == "failed"
        || unit.sub_state == "auto-restart"
        || unit.n_restarts.unwrap_or(0) > 0
        || ended_badly
}

/// The last lines a troubled service wrote: from the file its unit appends to, else its journal.
fn add_unit_output(unit: &mut UnitFacts, user_bus: bool) {
    if !unit.name.ends_with(".service") || !troubled(unit) {
        return;
    }
    let texts: Vec<String> = unit
        .fragment_path
        .iter()
        .chain(unit.run.drop_in_paths.iter())
        .filter_map(|p| crate::adapters::fs::read_settings_file(std::path::Path::new(p)).ok())
        .collect();
    let to_file = |kind: &str| matches!(kind, "append" | "file" | "truncate");
    let file = if to_file(&unit.run.standard_output) {
        unit_output::output_file(&texts, "StandardOutput")
    } else if to_file(&unit.run.standard_error) {
        unit_output::output_file(&texts, "StandardError")
    } else {
        None
    };
    unit.run.output = match file {
        Some(path) => unit_log::file_tail(&path).ok().map(|text| UnitOutput {
            source: format!("file:{}", path.display()),
            lines: unit_output::last_lines(&text, unit_output::OUTPUT_LINES),
        }),
        None => match unit_log::journal_tail(&unit.name, user_bus, unit_output::OUTPUT_LINES) {
            Ok(text) => text.map(|text| UnitOutput {
                source: "journal".into(),
                lines: unit_output::last_lines(&text, unit_output::OUTPUT_LINES),
            }),
            Err(e) => {
                tracing::warn!(unit = %unit.name, error = %crate::error_text::chain(&e), "cannot read the unit's journal");
                None
            }
        },
    };
}

/// The nginx binary, configuration and prefix from the settings.
pub fn nginx_binary(settings: &Settings) -> NginxBinary {
    NginxBinary {
        binary: settings.nginx.binary.clone(),
        conf: settings.nginx.conf.clone(),
        prefix: settings.nginx.prefix.clone(),
    }
}

fn read_nginx(binary: &NginxBinary) -> Result<nginx::NginxFacts, nginx_conf::ConfError> {
    let config = nginx_conf::load(&binary.conf, &nginx_conf::RealFs)?;
    Ok(nginx::extract(&config, &binary.effective_prefix()))
}

/// The error log to read: `nginx.error_log` when set, else the first file the config names.
pub fn error_log_path(settings: &Settings, nginx: Option<&nginx::NginxFacts>) -> Option<PathBuf> {
    settings
        .nginx
        .error_log
        .clone()
        .or_else(|| nginx?.error_logs.first().cloned())
}

/// The daemon's `nginx -t` results, kept for the life of the process (a CLI run tests once).
static NGINX_TEST: crate::adapters::nginx::TestCache = crate::adapters::nginx::TestCache::new();

/// `nginx -t` on the configuration as it is on disk, off the async runtime (a blocking thread,
/// killed at [`crate::adapters::nginx::TEST_TIMEOUT`]), and only when a file the configuration
/// loaded or the binary changed since the last result (`TestCache`). Without the list of files
/// (the configuration does not parse) it always runs.
async fn nginx_test(
    binary: &NginxBinary,
    nginx: Option<&nginx::NginxFacts>,
) -> Result<crate::adapters::nginx::TestOutcome, String> {
    let binary = binary.clone();
    let files = nginx.map(|n| n.files.clone());
    let test = tokio::task::spawn_blocking(move || match files {
        Some(files) => NGINX_TEST.test(&binary, &files).map(|(outcome, cached)| {
            tracing::debug!(cached, "nginx -t");
            outcome
        }),
        None => binary.test(),
    });
    match test.await {
        Ok(result) => result.map_err(|e| crate::error_text::chain(&e)),
        Err(e) => Err(format!("`nginx -t` did not run to its end: {e}")),
    }
}

/// How long one host name may take to resolve before it is left unresolved.
pub const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// A name that could not be resolved in time.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("resolving `{host}` did not finish within {}s; it is left unresolved\nhelp: check the resolvers in /etc/resolv.conf", timeout.as_secs())]
    TimedOut {
        host: String,
        timeout: std::time::Duration,
    },
}

/// Resolves a host name as nginx would (getaddrinfo), without ports, on a thread of its own
/// so that a dead resolver costs at most `timeout` (getaddrinfo cannot be cancelled: the thread
/// ends when it returns, the caller does not wait for it). A name that does not resolve gives
/// no addresses.
pub fn resolve_within(
    host: &str,
    timeout: std::time::Duration,
) -> Result<Vec<IpAddr>, ResolveError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let name = host.to_string();
    let spawned = std::thread::Builder::new()
        .name("resolve".into())
        .spawn(move || {
            let mut ips: Vec<IpAddr> = (name.as_str(), 0)
                .to_socket_addrs()
                .map(|addrs| addrs.map(|a| a.ip()).collect())
                .unwrap_or_default();
            ips.sort();
            ips.dedup();
            let _ = tx.send(ips);
        });
    if spawned.is_err() {
        return Ok(Vec::new());
    }
    rx.recv_timeout(timeout)
        .map_err(|_| ResolveError::TimedOut {
            host: host.to_string(),
            timeout,
        })
}

/// [`resolve_within`] at [`RESOLVE_TIMEOUT`], a timeout logged and taken as no addresses.
fn resolve(host: &str) -> Vec<IpAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return vec![ip];
    }
    resolve_within(host, RESOLVE_TIMEOUT).unwrap_or_else(|e| {
        tracing::warn!(host = %host, error = %crate::error_text::chain(&e), "name resolution timed out");
        Vec::new()
    })
}

/// The units worth reading: nginx's, the hinted ones, the owners of upstream sockets, and — only
/// when some upstream has no known unit — every service, to search their command lines.
async fn gather_units(
    settings: &Settings,
    nginx: Option<&nginx::NginxFacts>,
    sockets: Option<&super::sockets::SocketFacts>,
    remembered: &BTreeMap<String, String>,
    systemd: Option<&Systemd>,
) -> Gathered<Vec<UnitFacts>> {
    let connected;
    let systemd = match systemd {
        Some(systemd) => systemd,
        None => match Systemd::connect(settings.bus).await {
            Ok(s) => {
                connected = s;
                &connected
            }
            Err(e) => {
                return Gathered::Unavailable {
                    reason: crate::error_text::chain(&e),
                }
            }
        },
    };
    let mut names: BTreeSet<String> = BTreeSet::new();
    names.insert(settings.nginx.unit.clone());
    names.extend(settings.backends.iter().filter_map(|b| b.unit.clone()));
    let mut unowned: Vec<Dialled> = Vec::new();
    let last_owners = LastOwners::of(remembered);
    if let (Some(n), Some(s)) = (nginx, sockets) {
        for d in all_dialled(n) {
            match owner_unit(s, &d) {
                Some(unit) => {
                    names.insert(unit);
                }
                None => match last_owners.of_dialled(&d) {
                    Some(unit) => {
                        names.insert(unit.to_string());
                    }
                    None => unowned.push(d),
                },
            }
        }
    }
    let mut units = systemd
        .units(&names.iter().cloned().collect::<Vec<_>>())
        .await;
    if !unowned.is_empty() {
        let mut more = loaded_services(systemd, &names).await;
        units.append(&mut more);
        let declared: Vec<String> = fpm_pools(&units)
            .into_iter()
            .filter_map(|p| p.address)
            .collect();
        unowned.retain(|d| {
            !(hinted(&settings.backends, d)
                || declared.iter().any(|a| same_port_or_path(a, d))
                || units.iter().any(|u| mentions(u, d)))
        });
    }
    if !unowned.is_empty() {
        // A backend that nothing references is unloaded once stopped: only its file is left.
        let known: BTreeSet<String> = units.iter().map(|u| u.name.clone()).collect();
        match systemd.service_files().await {
            Ok(files) => {
                let candidates: Vec<String> = files
                    .into_iter()
                    .filter(|(name, file)| !known.contains(name) && may_serve(file, &unowned))
                    .map(|(name, _)| name)
                    .collect();
                units.append(&mut systemd.units(&candidates).await);
            }
            Err(e) => {
                tracing::warn!(error = %crate::error_text::chain(&e), "cannot list service files to map upstreams")
            }
        }
    }
    units.retain(|u| u.load_state == "loaded" || u.name == settings.nginx.unit);
    Gathered::Ok { data: units }
}

/// The remembered owners by port and by socket path, keyed once: a lookup per dialled address
/// does not scan the whole map.
struct LastOwners<'r> {
    by_port: BTreeMap<&'r str, &'r str>,
    by_path: BTreeMap<&'r str, &'r str>,
}

impl<'r> LastOwners<'r> {
    fn of(remembered: &'r BTreeMap<String, String>) -> Self {
        let mut by_port = BTreeMap::new();
        let mut by_path = BTreeMap::new();
        // the first address in order wins, as a scan in order finds it
        for (address, unit) in remembered {
            if let Some((_, port)) = address.rsplit_once(':') {
                by_port.entry(port).or_insert(unit.as_str());
            }
            if let Some(path) = address.strip_prefix("unix:") {
                by_path.entry(path).or_insert(unit.as_str());
            }
        }
        LastOwners { by_port, by_path }
    }

    /// The unit that last owned a listener for the address (by port for TCP: the remembered
    /// address is resolved, the dialled one may be a name), as [`same_port_or_path`] matches.
    fn of_dialled(&self, dialled: &Dialled) -> Option<&'r str> {
        match dialled {
            Dialled::Tcp { port, .. } => self.by_port.get(port.to_string().as_str()).copied(),
            Dialled::Unix { path } => self.by_path.get(path.as_str()).copied(),
        }
    }
}

/// The loaded services not read yet.
async fn loaded_services(systemd: &Systemd, read: &BTreeSet<String>) -> Vec<UnitFacts> {
    match systemd.loaded_services().await {
        Ok(loaded) => {
            let new: Vec<String> = loaded.into_iter().filter(|n| !read.contains(n)).collect();
            systemd.units(&new).await
        }
        Err(e) => {
            tracing::warn!(error = %crate::error_text::chain(&e), "cannot list services to map upstreams");
            Vec::new()
        }
    }
}

/// Whether a `backends:` hint names the address (its port, for a TCP one: the mapping matches
/// host names too).
fn hinted(hints: &[crate::config::BackendHint], dialled: &Dialled) -> bool {
    use crate::config::UpstreamAddr;
    hints.iter().any(|h| match (&h.upstream, dialled) {
        (UpstreamAddr::Tcp { port, .. }, Dialled::Tcp { port: p, .. }) => port == p,
        (UpstreamAddr::Unix { path }, Dialled::Unix { path: p }) => path.as_os_str() == p.as_str(),
        _ => false,
    })
}

/// Whether an address as written (`unix:/path`, `host:port`, `*:port`: a pool's `listen`, a
/// remembered listener) has the dialled address's port or socket path.
fn same_port_or_path(address: &str, dialled: &Dialled) -> bool {
    match dialled {
        Dialled::Tcp { port, .. } => address
            .rsplit_once(':')
            .is_some_and(|(_, p)| *p == port.to_string()),
        Dialled::Unix { path } => address.strip_prefix("unix:") == Some(path.as_str()),
    }
}

/// Whether the unit's command line or environment names the address's port or socket path:
/// then it may be the backend, and the mapping decides.
fn mentions(unit: &UnitFacts, dialled: &Dialled) -> bool {
    let needle = match dialled {
        Dialled::Tcp { port, .. } => port.to_string(),
        Dialled::Unix { path } => path.clone(),
    };
    unit.exec_start
        .iter()
        .flat_map(|c| c.argv.iter())
        .chain(unit.environment.iter())
        .any(|w| w.contains(&needle))
        || unit
            .environment_files
            .iter()
            .flat_map(|f| f.vars.values())
            .any(|v| v.contains(&needle))
}

/// Whether a service that is not loaded could serve one of the `unowned` addresses, judged
/// from its unit file: it names the port or the socket path, or reads a file that may (an
/// environment file, a PHP-FPM configuration with its pools' `listen`). A host has a hundred
/// such unit files or more, and loading one makes PID 1 parse it.
fn may_serve(unit_file: &std::path::Path, unowned: &[Dialled]) -> bool {
    /// Unit files are small; a bigger one is read only this far.
    const MAX_UNIT_FILE: u64 = 64 * 1024;
    use std::io::Read;
    let mut text = String::new();
    let read = std::fs::File::open(unit_file)
        .and_then(|f| f.take(MAX_UNIT_FILE).read_to_string(&mut text));
    if read.is_err() {
        return true; // cannot tell: ask the manager
    }
    text.contains("EnvironmentFile")
        || text.contains("fpm")
        || unowned.iter().any(|d| match d {
            Dialled::Tcp { port, .. } => text.contains(&port.to_string()),
            Dialled::Unix { path } => text.contains(path.as_str()),
        })
}

fn all_dialled(nginx: &nginx::NginxFacts) -> Vec<Dialled> {
    let groups = mapping::Groups::of(nginx);
    mapping::all_dialled(nginx, &groups).collect()
}

fn owner_unit(sockets: &super::sockets::SocketFacts, dialled: &Dialled) -> Option<String> {
    let owner = match dialled {
        Dialled::Tcp { port, .. } => sockets.tcp_listeners_on(*port).find_map(|s| s.main_owner()),
        Dialled::Unix { path } => sockets.unix_listener(path).and_then(|s| s.main_owner()),
    };
    owner?.unit.clone()
}

/// Each unit's environment, keyed by unit name.
fn unit_environments(units: &[UnitFacts]) -> BTreeMap<String, BTreeMap<String, String>> {
    units.iter().map(|u| (u.name.clone(), u.env())).collect()
}

#[cfg(test)]
mod tests {

    /// Issue 13 item 6: resolution is bounded; a lookup past its deadline is named.
    #[test]
    fn name_resolution_has_a_deadline() {
        let ips = resolve_within("localhost", std::time::Duration::from_secs(5)).unwrap();
        assert!(ips.contains(&"127.0.0.1".parse().unwrap()), "{ips:?}");
        let e = resolve_within("localhost", std::time::Duration::ZERO).unwrap_err();
        assert_eq!(
            e.to_string().lines().next().unwrap(),
            "resolving `localhost` did not finish within 0s; it is left unresolved"
        );
        assert_eq!(
            resolve("10.0.0.1"),
            vec!["10.0.0.1".parse::<IpAddr>().unwrap()]
        );
    }

    use super::*;

    /// The daemon's way to gather off its runtime: a blocking thread, the D-Bus calls driven by
    /// the current-thread runtime meanwhile, which stays free (a timer on it keeps firing).
    #[test]
    fn gather_runs_on_a_blocking_thread_of_a_current_thread_runtime() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = crate::adapters::fs::hostile::dir("gather");
        let mut settings =
            crate::config::Settings::from_yaml(std::path::Path::new("medic.yaml"), "version: 1\n")
                .unwrap();
        settings.nginx.conf = dir.0.join("missing.conf");
        settings.state_dir = dir.0.clone();
        let (facts, ticks) = runtime.block_on(async move {
            let handle = tokio::runtime::Handle::current();
            let procfs = Procfs::system();
            // as the daemon runs its snapshot
            let gathered = tokio::task::spawn_blocking(move || {
                handle.block_on(gather_on(&settings, &procfs, &BTreeMap::new(), None))
            });
            let mut ticks = 0u32;
            let mut gathered = std::pin::pin!(gathered);
            loop {
                tokio::select! {
                    facts = &mut gathered => break (facts.unwrap(), ticks),
                    _ = tokio::time::sleep(std::time::Duration::from_millis(1)) => ticks += 1,
                }
            }
        });
        assert!(facts.nginx.ok().is_none(), "no configuration at that path");
        assert!(ticks > 0, "the runtime's timers fired while gathering");
    }

    /// The targeted snapshot's log: the lines since the last read are appended to it; a log
    /// that was rotated, or would pass the window, is read whole (`None` here).
    #[test]
    fn the_error_log_is_extended_from_where_the_last_read_ended() {
        let text = std::fs::read("tests/fixtures/error_log/lab-runtime.log").unwrap();
        let lines: Vec<&[u8]> = text.split_inclusive(|b| *b == b'\n').collect();
        let (first, rest) = lines.split_at(lines.len() / 2);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("error.log");
        std::fs::write(&path, first.concat()).unwrap();
        let before = error_log::read_error_log(&path, ERROR_LOG_WINDOW).unwrap();
        assert_eq!(
            extend_error_log(&before, ERROR_LOG_WINDOW),
            Some(before.clone())
        );
        std::fs::write(&path, lines.concat()).unwrap();
        let whole = error_log::read_error_log(&path, ERROR_LOG_WINDOW).unwrap();
        let extended = extend_error_log(&before, ERROR_LOG_WINDOW).unwrap();
        assert_eq!(extended.entries, whole.entries);
        assert_eq!(extended.counts, whole.counts);
        assert_eq!(
            (extended.size, extended.resume_at, extended.read_from),
            (whole.size, whole.resume_at, 0)
        );
        assert!(!rest.is_empty());
        // past the window: read whole
        assert_eq!(extend_error_log(&before, before.size), None);
        // rotated (shorter now): read whole
        std::fs::write(&path, "").unwrap();
        assert_eq!(extend_error_log(&before, ERROR_LOG_WINDOW), None);
    }

    /// A configuration file edited, or a file added beside one, changes the identity that
    /// lets a targeted snapshot reuse the last parse.
    #[test]
    fn the_config_identity_changes_with_a_file_or_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, "events {}\n").unwrap();
        let files = [conf.clone()];
        let first = config_identity(&files);
        assert_eq!(first.len(), 2, "the file and its directory");
        assert_eq!(config_identity(&files), first);
        std::fs::write(&conf, "events {}\nhttp {}\n").unwrap();
        let edited = config_identity(&files);
        assert_ne!(edited, first);
        std::fs::write(dir.path().join("new.conf"), "").unwrap();
        assert_ne!(config_identity(&files), edited);
    }

    /// Issue 12: a rewrite to the same size given back its old mtime (`cp -p`, `touch -r`) is
    /// a change too: its ctime tells, as the content hash of `nginx -t`'s cache would.
    #[test]
    fn the_config_identity_changes_with_a_rewrite_that_keeps_size_and_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("site.conf");
        std::fs::write(&conf, "listen 8001;\n").unwrap();
        let mtime = std::fs::metadata(&conf).unwrap().modified().unwrap();
        let files = [conf.clone()];
        let first = config_identity(&files);
        // the kernel's clock for the ctime moves in ticks of a few ms
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&conf, "listen 8002;\n").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&conf)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let again = config_identity(&files);
        let of = |i: &ConfigIdentity| i.get(&conf).copied().flatten().unwrap();
        let (a, b) = (of(&first), of(&again));
        assert_eq!(
            (a.0, a.1, a.2, a.3),
            (b.0, b.1, b.2, b.3),
            "same inode, size, mtime"
        );
        assert_ne!(again, first, "the ctime moved");
    }

    #[test]
    fn last_owners_match_as_a_scan_by_port_or_path_does() {
        let remembered: BTreeMap<String, String> = [
            ("127.0.0.1:8000", "a.service"),
            ("[::1]:8000", "b.service"),
            ("unix:/run/app.sock", "c.service"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let owners = LastOwners::of(&remembered);
        let tcp = |port| Dialled::Tcp {
            host: "localhost".into(),
            port,
        };
        let unix = |path: &str| Dialled::Unix { path: path.into() };
        for d in [
            tcp(8000),
            tcp(9000),
            unix("/run/app.sock"),
            unix("/run/x.sock"),
        ] {
            let scan = remembered
                .iter()
                .find(|(address, _)| same_port_or_path(address, &d))
                .map(|(_, unit)| unit.as_str());
            assert_eq!(owners.of_dialled(&d), scan, "{d:?}");
        }
        assert_eq!(owners.of_dialled(&tcp(8000)), Some("a.service"));
    }
}
