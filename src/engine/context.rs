//! Binds facts to targets: one [`TargetContext`] per (route, endpoint), the data a playbook's
//! `when`, `evidence` and `actions` are written against. The paths are documented in
//! `playbooks/README.md`; the types are in `playbook::context`.

use crate::config::{BackendHint, UpstreamAddr};
use crate::facts::error_log::{LogClass, LogEntry};
use crate::facts::mapping::{Endpoint, Route};
use crate::facts::nginx::Target as PassTarget;
use crate::facts::units::UnitFacts;
use crate::facts::Facts;
use crate::playbook::context::{
    recent_classes, BindContext, EndpointContext, ExecStartBind, LastLine, LocationContext,
    PassContext, PoolContext, RaiseContext, RecentContext, RouteContext, SiteContext,
    SocketContext, TargetContext, UnitContext, WorkerContext,
};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// One target: a site's location, the endpoint its pass target dials, and everything known of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    /// `site location -> endpoint`, for people and logs.
    pub label: String,
    /// Shared by the targets of one route (an upstream group's peers).
    pub route: std::sync::Arc<Route>,
    pub endpoint: Endpoint,
    /// The context playbooks see.
    pub context: TargetContext,
}

/// Every target of the snapshot, in the order of the routes. A unit whose main process exited by
/// itself with a failing status within `start_failure_window` of its start has
/// `unit.start_failed` (`daemon.start_failure_window`).
pub fn targets(
    facts: &Facts,
    hints: &[BackendHint],
    start_failure_window: std::time::Duration,
) -> Vec<Target> {
    let mut out = Vec::new();
    each_target(facts, hints, start_failure_window, |target| {
        out.push(target)
    });
    out
}

/// [`targets`], handed to `f` one at a time in the same order: what only needs each target
/// once (`diagnose`) drops it before the next is made, instead of holding thousands.
pub fn each_target(
    facts: &Facts,
    hints: &[BackendHint],
    start_failure_window: std::time::Duration,
    mut f: impl FnMut(Target),
) {
    let clock = LogClock::of(facts);
    let index = Index::of(facts);
    let dialled = crate::facts::direct::dialled_ports(facts);
    for route in &facts.routes {
        let shared = std::sync::Arc::clone(route);
        for (i, endpoint) in route.endpoints.iter().enumerate() {
            let unit = endpoint
                .unit
                .as_deref()
                .and_then(|n| index.units.get(n).copied());
            let (location, route_ctx, recent) = nginx_side(facts, &index, route, i, &clock);
            let mut context = TargetContext {
                site: site_context(route),
                pass: pass_context(route),
                endpoint: endpoint_context(endpoint, &index),
                unit: unit
                    .map(|u| unit_context(u, endpoint, hints, &facts.disk, start_failure_window)),
                nginx: worker_context(facts),
                log: log_counts(index.log_of(&endpoint.address)),
                location,
                route: route_ctx,
                recent,
                reproduction: super::reproduction::of(facts, route, endpoint),
                pm2: None,
                unsupervised: None,
            };
            super::backend_context::add_backend(&mut context, facts, endpoint);
            super::evidence::add_direct_evidence(&mut context, facts, &dialled, route, endpoint);
            f(Target {
                label: format!("{} {} -> {}", route.site, route.location, endpoint.address),
                route: shared.clone(),
                endpoint: endpoint.clone(),
                context,
            });
        }
    }
}

/// The facts a target's context looks up, keyed once per snapshot: with thousands of sites,
/// a scan of every unit, socket path, location or log line per target is quadratic.
struct Index<'a> {
    units: BTreeMap<&'a str, &'a UnitFacts>,
    unix_paths: BTreeMap<&'a str, &'a crate::facts::socket_access::UnixPathFacts>,
    fpm_pools: BTreeMap<&'a str, &'a crate::facts::php_fpm::FpmPool>,
    /// Each location with a pass directive, by the directive's byte span and file (its bytes:
    /// comparing `Path`s component by component was a tenth of `targets` at 1,000 sites).
    locations: HashMap<(usize, usize, &'a [u8]), &'a crate::facts::nginx::Location>,
    /// Every configuration file's mtime, by its path's bytes (`DiskFacts::mtime` is the
    /// fallback for a path spelled another way).
    mtimes: HashMap<&'a [u8], std::time::SystemTime>,
    /// The error-log lines naming each upstream address, in log order.
    log_by_address: BTreeMap<&'a str, Vec<&'a LogEntry>>,
    /// The `no live upstreams` lines by the upstream group they name, in log order.
    no_live_by_group: BTreeMap<&'a str, Vec<&'a LogEntry>>,
}

impl<'a> Index<'a> {
    fn of(facts: &'a Facts) -> Self {
        let nginx = facts.nginx.ok();
        let entries = facts
            .error_log
            .ok()
            .map_or(&[][..], |l| l.entries.as_slice());
        let mut log_by_address: BTreeMap<&str, Vec<&LogEntry>> = BTreeMap::new();
        let mut no_live_by_group: BTreeMap<&str, Vec<&LogEntry>> = BTreeMap::new();
        for e in entries {
            if let Some(address) = e.upstream_addr.as_deref() {
                log_by_address.entry(address).or_default().push(e);
            }
            if e.class == LogClass::NoLiveUpstreams {
                if let Some(group) = e.upstream.as_deref().and_then(upstream_group) {
                    no_live_by_group.entry(group).or_default().push(e);
                }
            }
        }
        Index {
            // the first of a name wins, as `Facts::unit` finds it
            units: facts.units.ok().map_or_else(BTreeMap::new, |units| {
                units.iter().rev().map(|u| (u.name.as_str(), u)).collect()
            }),
            unix_paths: facts
                .unix_paths
                .iter()
                .rev()
                .map(|p| (p.path.as_str(), p))
                .collect(),
            fpm_pools: facts
                .fpm_pools
                .iter()
                .rev()
                .filter_map(|p| Some((p.address.as_deref()?, p)))
                .collect(),
            locations: nginx.map_or_else(HashMap::new, |n| {
                n.sites
                    .iter()
                    .flat_map(|s| s.locations.iter())
                    .rev()
                    .filter_map(|l| {
                        let at = &l.pass.as_ref()?.at;
                        Some(((at.start, at.end, path_bytes(&at.file)), l))
                    })
                    .collect()
            }),
            mtimes: facts
                .disk
                .mtimes
                .iter()
                .map(|(path, at)| (path_bytes(path), *at))
                .collect(),
            log_by_address,
            no_live_by_group,
        }
    }

    fn log_of(&self, address: &str) -> &[&'a LogEntry] {
        self.log_by_address.get(address).map_or(&[], Vec::as_slice)
    }

    fn location(&self, at: &crate::facts::nginx::At) -> Option<&'a crate::facts::nginx::Location> {
        let found = self
            .locations
            .get(&(at.start, at.end, path_bytes(&at.file)))?;
        found
            .pass
            .as_ref()
            .is_some_and(|p| p.at == *at)
            .then_some(*found)
    }

    fn mtime(&self, facts: &Facts, path: &std::path::Path) -> Option<std::time::SystemTime> {
        match self.mtimes.get(path_bytes(path)) {
            Some(at) => Some(*at),
            None => facts.disk.mtime(path),
        }
    }
}

fn path_bytes(path: &std::path::Path) -> &[u8] {
    path.as_os_str().as_encoded_bytes()
}

/// The upstream group a logged `upstream: "http://NAME/uri"` names.
fn upstream_group(upstream: &str) -> Option<&str> {
    let bare = upstream
        .split_once("://")
        .map_or(upstream, |(_, rest)| rest);
    bare.split('/').next()
}

/// The URL a probe through nginx uses for this site: the listen address its aim dials (with
/// `https` for an `ssl` port), then the location's path. The `Host` to send with it is
/// `route.aim.host` (`src/facts/aim.rs`).
pub fn site_url(route: &Route) -> String {
    crate::facts::aim::probe_url(&route.aim, &route.location)
}

fn site_context(route: &Route) -> SiteContext {
    SiteContext {
        name: route.site.clone(),
        listen: route.listen.clone(),
        url: site_url(route),
        host: route.aim.host.clone(),
        not_aimed: route.aim.not_aimed.clone(),
        location: route.location.clone(),
    }
}

fn pass_context(route: &Route) -> PassContext {
    let (scheme, uri) = scheme_and_uri(&route.pass.raw);
    let kind = match route.pass.target {
        PassTarget::Unix { .. } => "unix",
        PassTarget::Dynamic { .. } => "dynamic",
        PassTarget::Upstream { .. } => "upstream",
        PassTarget::Tcp { .. } => "tcp",
    };
    PassContext {
        directive: route.directive.clone(),
        target: route.target.clone(),
        kind,
        scheme,
        uri,
        file: route.pass.at.file.display().to_string(),
        line: route.pass.at.line,
    }
}

/// `http://127.0.0.1:8000/api` → (`http`, `/api`); `127.0.0.1:9000` → (none, ``).
fn scheme_and_uri(raw: &str) -> (Option<String>, String) {
    let Some((scheme, rest)) = raw.split_once("://") else {
        return (None, String::new());
    };
    let uri = if let Some(unix) = rest.strip_prefix("unix:") {
        unix.split_once(':').map_or("", |(_, u)| u)
    } else {
        rest.find('/').map_or("", |i| &rest[i..])
    };
    (Some(scheme.to_string()), uri.to_string())
}

/// `endpoint.*`, with what the socket playbooks test for unix endpoints:
/// `endpoint.{exists,socket,worker_can_connect,pool}`.
fn endpoint_context(e: &Endpoint, index: &Index<'_>) -> EndpointContext {
    let (kind, host, port, path) = match UpstreamAddr::parse(&e.address) {
        Some(UpstreamAddr::Tcp { host, port }) => ("tcp", Some(host), Some(port), None),
        Some(UpstreamAddr::Unix { path }) => ("unix", None, None, Some(path.display().to_string())),
        None => ("unknown", None, None, None),
    };
    let seen = path
        .as_deref()
        .and_then(|p| index.unix_paths.get(p).copied());
    EndpointContext {
        address: e.address.clone(),
        kind,
        host,
        port,
        path,
        listening: e.listening,
        listener: e.listener.clone(),
        host_name: e.host_name.clone(),
        exists: seen.map(|p| p.exists),
        socket: seen.and_then(|p| p.file.as_ref()).map(|f| SocketContext {
            owner: f.user.clone().unwrap_or_else(|| f.uid.to_string()),
            group: f.group.clone().unwrap_or_else(|| f.gid.to_string()),
            uid: f.uid,
            gid: f.gid,
            mode: f.mode.clone(),
        }),
        worker_can_connect: seen.and_then(|p| p.worker_can_connect),
        pool: index
            .fpm_pools
            .get(e.address.as_str())
            .map(|p| PoolContext {
                name: p.name.clone(),
                file: p.file.display().to_string(),
                unit: p.unit.clone(),
                listen_owner: p.listen_owner.clone(),
                listen_group: p.listen_group.clone(),
                listen_mode: p.listen_mode.clone(),
            }),
    }
}

fn unit_context(
    unit: &UnitFacts,
    endpoint: &Endpoint,
    hints: &[BackendHint],
    disk: &crate::facts::DiskFacts,
    start_failure_window: std::time::Duration,
) -> UnitContext {
    let port = UpstreamAddr::parse(&endpoint.address).and_then(|a| match a {
        UpstreamAddr::Tcp { port, .. } => Some(port),
        UpstreamAddr::Unix { .. } => None,
    });
    let tcp: Vec<(String, u16)> = endpoint
        .unit_listeners
        .iter()
        .filter_map(|l| match UpstreamAddr::parse(l)? {
            UpstreamAddr::Tcp { host, port } => Some((host, port)),
            UpstreamAddr::Unix { .. } => None,
        })
        .collect();
    let hosts_on_port: Vec<String> = tcp
        .iter()
        .filter(|(_, p)| Some(*p) == port)
        .map(|(h, _)| h.clone())
        .collect();
    let mut other_ports: Vec<u16> = tcp
        .iter()
        .map(|(_, p)| *p)
        .filter(|p| Some(*p) != port)
        .collect();
    other_ports.sort_unstable();
    other_ports.dedup();
    let run = &unit.run;
    let ended = run.exec_main_code != 0;
    UnitContext {
        name: unit.name.clone(),
        active_state: unit.active_state.clone(),
        sub_state: unit.sub_state.clone(),
        result: unit.result.clone(),
        main_pid: unit.main_pid,
        n_restarts: unit.n_restarts,
        listeners: endpoint.unit_listeners.clone(),
        bind: bind_context(unit, endpoint, hints, disk, &hosts_on_port, port),
        hosts_on_endpoint_port: hosts_on_port,
        other_ports,
        candidates: Vec::new(),
        viable_ports: Vec::new(),
        restart: run.restart.clone(),
        exec_main_status: ended.then_some(run.exec_main_status),
        last_run_ms: run.last_run_ms(),
        exec_main_code: match run.exec_main_code {
            1 => Some("exited"),
            2 => Some("killed"),
            3 => Some("dumped"),
            _ => None,
        },
        start_failed: start_failed(run, start_failure_window),
        output: run
            .output
            .as_ref()
            .map_or_else(Vec::new, |o| o.lines.clone()),
        output_from: run.output.as_ref().map(|o| o.source.clone()),
    }
}

/// Environment keys that conventionally hold a backend's bind host (Node's `HOST`, …).
pub const BIND_KEYS: [&str; 8] = [
    "HOST",
    "BIND",
    "BIND_HOST",
    "BIND_ADDRESS",
    "LISTEN_HOST",
    "LISTEN_ADDRESS",
    "APP_HOST",
    "SERVER_HOST",
];

/// Where the unit's bind host is set: a `backends:` hint, or an environment-file key — one the
/// unit's `ExecStart` uses, or a conventional bind key — whose value is the host the unit
/// listens on now. Anything less is not evidence.
fn bind_context(
    unit: &UnitFacts,
    endpoint: &Endpoint,
    hints: &[BackendHint],
    disk: &crate::facts::DiskFacts,
    hosts: &[String],
    port: Option<u16>,
) -> Option<BindContext> {
    let hinted = hints.iter().find_map(|h| {
        let same =
            h.upstream.to_string() == endpoint.address || h.unit.as_deref() == Some(&unit.name);
        same.then_some(h.bind.as_ref()).flatten()
    });
    if let Some(bind) = hinted {
        return Some(BindContext {
            file: bind.file.display().to_string(),
            key: bind.key.clone(),
            value: disk.hinted_bind(&bind.file, &bind.key).map(String::from),
            from: "hint",
            place: format!("{} in {}", bind.key, bind.file.display()),
            exec_start: None,
        });
    }
    let argv: Vec<&String> = unit.exec_start.iter().flat_map(|c| c.argv.iter()).collect();
    let used = |key: &str| {
        BIND_KEYS.contains(&key)
            || argv
                .iter()
                .any(|w| w.contains(&format!("${{{key}}}")) || w.contains(&format!("${key}")))
    };
    unit.environment_files
        .iter()
        .flat_map(|f| f.vars.iter().map(move |(k, v)| (f, k, v)))
        .find(|(_, k, v)| {
            used(k)
                && hosts
                    .iter()
                    .any(|h| h == *v || h.trim_matches(['[', ']']) == v.as_str())
        })
        .map(|(f, k, v)| BindContext {
            file: f.path.clone(),
            key: k.clone(),
            value: Some(v.clone()),
            from: "environment_file",
            place: format!("{k} in {}", f.path),
            exec_start: None,
        })
        .or_else(|| exec_start_bind(unit, hosts, port?))
}

/// A bind host written in the unit's only `ExecStart` (`--host`, `--bind`, `ADDR:PORT`): fixed
/// with a drop-in that repeats the command line with just that host changed.
fn exec_start_bind(unit: &UnitFacts, hosts: &[String], port: u16) -> Option<BindContext> {
    let [command] = unit.exec_start.as_slice() else {
        return None; // several commands (or none): which one binds is not evidence
    };
    if command.argv.first() != Some(&command.path) {
        return None;
    }
    let fragment = unit.fragment_path.as_deref()?;
    let (index, host) = hosts.iter().find_map(|h| {
        let host = h.trim_matches(['[', ']']);
        crate::engine::dropin::find_host_word(&command.argv, host, port).map(|i| (i, host))
    })?;
    let dropin = crate::engine::dropin::dropin_path(fragment, &unit.name)?;
    Some(BindContext {
        file: dropin.display().to_string(),
        key: "ExecStart".into(),
        value: Some(host.to_string()),
        from: "exec_start",
        place: format!(
            "the ExecStart of {} (word {index}: `{}`)",
            unit.name,
            command.argv.get(index)?
        ),
        exec_start: Some(ExecStartBind {
            argv: command.argv.clone(),
            index,
            ignore_failure: command.ignore_failure,
            port,
        }),
    })
}

// --- unix sockets and backend processes (socket-missing, socket-permission, crash-loop) -------

/// `nginx.{user,group}`: the worker identity (socket-permission).
fn worker_context(facts: &Facts) -> WorkerContext {
    let user = facts
        .nginx
        .ok()
        .and_then(|n| n.user.as_deref())
        .and_then(|u| u.split_whitespace().next())
        .unwrap_or("nobody");
    WorkerContext {
        user: facts
            .worker
            .as_ref()
            .map_or(user, |w| w.user.as_str())
            .to_string(),
        group: facts.worker.as_ref().map(|w| w.group.clone()),
    }
}

/// Whether the last main process exited by itself (`ExecMainCode=exited`, not killed by a
/// signal) with a status other than 0 no later than `window` after it started: it fails at its
/// start, and restarting it alone runs into the same failure.
pub fn start_failed(run: &crate::facts::units::RunFacts, window: std::time::Duration) -> bool {
    let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
    run.exec_main_code == 1
        && run.exec_main_status != 0
        && run.last_run_ms().is_some_and(|ms| ms <= window_ms)
}

/// How many classified error-log lines name this endpoint, by class.
fn log_counts(entries: &[&LogEntry]) -> BTreeMap<LogClass, usize> {
    let mut counts: BTreeMap<LogClass, usize> = LogClass::ALL.iter().map(|c| (*c, 0)).collect();
    for e in entries {
        *counts.entry(e.class).or_default() += 1;
    }
    counts
}

// ---------------------------------------------------------------------------------------------
// nginx-side causes: the location's effective buffer and timeout settings with a capped raise,
// the route's sibling endpoints (for `localhost` and upstream groups), and the error-log lines
// that are recent enough to be a symptom rather than history. Paths: `location.*`, `route.*`,
// `recent.*` (documented in `playbooks/README.md`; typed in `playbook::context`).
// ---------------------------------------------------------------------------------------------

/// A buffer is never raised above this many bytes (64k), whatever the headers need.
pub const BUFFER_CAP: u64 = 64 * 1024;
/// The smallest raise (16k): a header that overflows the 4k default usually fits.
pub const BUFFER_FLOOR: u64 = 16 * 1024;
/// Error-log lines older than this (15 minutes) are history, not a symptom.
pub const RECENT_WINDOW_SECS: i64 = 15 * 60;

/// Maps the local wall-clock times nginx writes to seconds since the epoch without knowing the
/// time zone: the log's mtime is when its last line was written (`engine::recency`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogClock {
    /// The error log's mtime, to the nanosecond.
    pub log_written: std::time::SystemTime,
    /// The last entry's time read as if it were UTC.
    pub last_naive: i64,
}

impl LogClock {
    fn of(facts: &Facts) -> Option<LogClock> {
        let log = facts.error_log.ok()?;
        let last = log.entries.last().and_then(|e| naive_seconds(&e.time))?;
        Some(LogClock {
            log_written: facts.disk.mtime(&log.path)?,
            last_naive: last,
        })
    }

    /// The second since the epoch nginx stamped on a line with this time (it was logged at
    /// some time within that second).
    pub fn epoch(&self, time: &str) -> Option<i64> {
        let (log_secs, _) = super::recency::split(self.log_written);
        Some(naive_seconds(time)? + super::recency::zone_offset(log_secs, self.last_naive))
    }

    /// Whether a line with this time is a symptom of now: inside the window that starts at the
    /// whole second `window_start`, and possibly logged after `changed` (the location's file
    /// was last written then). A time nginx-medic cannot read is not recent.
    pub fn recent(
        &self,
        time: &str,
        window_start: i64,
        changed: Option<super::recency::FileChange>,
    ) -> bool {
        self.epoch(time).is_some_and(|t| {
            super::recency::within(t, window_start)
                && changed.map_or(true, |c| {
                    super::recency::logged_after(t, c.at, self.log_written, c.own_verified)
                })
        })
    }
}

/// `YYYY/MM/DD HH:MM:SS` read as UTC, in seconds since the epoch.
pub fn naive_seconds(time: &str) -> Option<i64> {
    let (date, clock) = time.split_once(' ')?;
    let mut d = date.split('/').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut c = clock.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (c.next()??, c.next()??, c.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    Some(days_from_civil(y, m, day) * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// What a log line must be newer than to be a symptom.
#[derive(Debug, Clone, Copy)]
struct Cutoff {
    /// The first second of the recent window.
    window_start: i64,
    /// When the location's file was last written, and whether by nginx-medic's verified edit.
    changed: Option<super::recency::FileChange>,
}

/// `location.*`, `route.*` and `recent.*` of the route's endpoint `index`.
fn nginx_side(
    facts: &Facts,
    facts_index: &Index<'_>,
    route: &Route,
    index: usize,
    clock: &Option<LogClock>,
) -> (Option<LocationContext>, RouteContext, RecentContext) {
    let location = facts_index.location(&route.pass.at);
    // a line counts when it is inside the window and not provably older than the location's
    // file: equal seconds are decided by `engine::recency`, never by `>` on whole seconds
    let cutoff = Cutoff {
        window_start: i64::try_from(facts.taken_at).unwrap_or(i64::MAX) - RECENT_WINDOW_SECS,
        changed: location.and_then(|l| {
            let at = facts_index.mtime(facts, &l.at.file)?;
            let file = l.at.file.display().to_string();
            Some(super::recency::FileChange {
                at,
                own_verified: facts.verified_edits.contains(&file),
            })
        }),
    };
    fn recent<'e>(
        entries: &[&'e LogEntry],
        clock: &Option<LogClock>,
        cutoff: Cutoff,
    ) -> Vec<&'e LogEntry> {
        entries
            .iter()
            .copied()
            .filter(|e| match clock {
                Some(clock) => clock.recent(&e.time, cutoff.window_start, cutoff.changed),
                None => true,
            })
            .collect()
    }
    let address = route
        .endpoints
        .get(index)
        .map_or("", |e| e.address.as_str());
    // the lines `route_context` counts: `no live upstreams` of the route's group
    let no_live = match &route.pass.target {
        PassTarget::Upstream { name } => facts_index
            .no_live_by_group
            .get(name.as_str())
            .map_or(&[][..], Vec::as_slice),
        _ => &[],
    };
    (
        location.map(|l| location_context(l, &route.directive)),
        route_context(facts, route, index, &recent(no_live, clock, cutoff)),
        recent_context(
            &recent(facts_index.log_of(address), clock, cutoff),
            address,
            url_base(&site_url(route)),
        ),
    )
}

/// `proxy` for `proxy_pass`, `fastcgi` for `fastcgi_pass`, ….
fn directive_prefix(directive: &str) -> &str {
    directive.strip_suffix("_pass").unwrap_or(directive)
}

fn location_context(l: &crate::facts::nginx::Location, directive: &str) -> LocationContext {
    let prefix = directive_prefix(directive);
    let get = |name: &str| l.settings.get(&format!("{prefix}_{name}")).cloned();
    let buffer_size = get("buffer_size").unwrap_or_else(|| "4k".into());
    let buffers = get("buffers").unwrap_or_else(|| "8 4k".into());
    let busy = get("busy_buffers_size");
    let raise = matches!(prefix, "proxy" | "fastcgi")
        .then(|| buffer_raise(&buffer_size, &buffers, busy.as_deref()))
        .flatten();
    LocationContext {
        path: l.path.clone(),
        file: l.at.file.display().to_string(),
        line: l.at.line,
        prefix: prefix.to_string(),
        buffer_size,
        buffer_size_set: get("buffer_size").is_some(),
        buffers,
        busy_buffers_size: busy,
        read_timeout: get("read_timeout").unwrap_or_else(|| "60s".into()),
        read_timeout_set: get("read_timeout").is_some(),
        raise: raise.map(|(buffer_size, buffers)| RaiseContext {
            buffer_size,
            buffers,
            cap: format_size(BUFFER_CAP),
            from: None,
        }),
        rolled_back: None,
        measured: None,
    }
}

/// nginx's size syntax: `4096`, `4k`, `8K`, `1m`.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (text.get(..i)?, c.to_ascii_lowercase()),
        _ => (text, ' '),
    };
    let n: u64 = digits.parse().ok()?;
    match unit {
        ' ' => Some(n),
        'k' => n.checked_mul(1024),
        'm' => n.checked_mul(1024 * 1024),
        _ => None,
    }
}

/// `16384` → `16k`.
pub fn format_size(bytes: u64) -> String {
    if bytes % (1024 * 1024) == 0 {
        format!("{}m", bytes / (1024 * 1024))
    } else if bytes % 1024 == 0 {
        format!("{}k", bytes / 1024)
    } else {
        bytes.to_string()
    }
}

/// The raised `*_buffer_size` and the `*_buffers` that go with it: twice the current size and at
/// least 16k, never above the 64k cap. `*_buffers` is kept when nginx's rule still holds for it
/// (all buffers but one must exceed the default busy size, twice the buffer size), else set to
/// four buffers of the new size. `None` at the cap, on a size nginx-medic cannot read, or when
/// `*_busy_buffers_size` is set by hand (raising around it is a person's call).
pub fn buffer_raise(
    buffer_size: &str,
    buffers: &str,
    busy: Option<&str>,
) -> Option<(String, String)> {
    if busy.is_some() {
        return None;
    }
    let current = parse_size(buffer_size)?;
    let target = current.checked_mul(2)?.max(BUFFER_FLOOR);
    if target > BUFFER_CAP {
        return None;
    }
    Some((format_size(target), buffers_for(target, buffers)))
}

/// The `*_buffers` that go with a `*_buffer_size` of `target` bytes: the current ones when
/// nginx's rule still holds for them (all buffers but one exceed the default busy size, twice
/// the buffer size), else four buffers of the new size.
pub fn buffers_for(target: u64, buffers: &str) -> String {
    let keep = buffers.split_once(' ').and_then(|(n, size)| {
        let (n, size) = (n.trim().parse::<u64>().ok()?, parse_size(size)?);
        (n >= 2 && (n - 1) * size > 2 * target && size <= BUFFER_CAP).then_some(())
    });
    match keep {
        Some(()) => buffers.to_string(),
        None => format!("4 {}", format_size(target)),
    }
}

fn route_context(
    facts: &Facts,
    route: &Route,
    index: usize,
    entries: &[&crate::facts::error_log::LogEntry],
) -> RouteContext {
    let group = match &route.pass.target {
        PassTarget::Upstream { name } => Some(name.clone()),
        _ => None,
    };
    let listening: Vec<String> = route
        .endpoints
        .iter()
        .filter(|e| e.listening)
        .map(|e| e.address.clone())
        .collect();
    let no_live = group.as_ref().map_or(0, |name| {
        entries
            .iter()
            .filter(|e| e.class == LogClass::NoLiveUpstreams)
            .filter(|e| {
                e.upstream.as_deref().is_some_and(|u| {
                    let bare = u.split_once("://").map_or(u, |(_, rest)| rest);
                    bare.split('/').next() == Some(name.as_str())
                })
            })
            .count()
    });
    RouteContext {
        endpoint_index: index,
        addresses: route.endpoints.iter().map(|e| e.address.clone()).collect(),
        listening_addresses: listening,
        all_listening: !route.endpoints.is_empty() && route.endpoints.iter().all(|e| e.listening),
        upstream: group,
        no_live_upstreams: no_live,
        pinnable: route
            .endpoints
            .get(index)
            .map_or_else(Vec::new, |e| pinnable(facts, route, e)),
    }
}

/// For an endpoint that a host *name* resolved to a loopback address and where nothing listens:
/// the literal loopback addresses of the other family on the same port that listen now (a
/// sibling endpoint of the same name, or a socket `localhost` did not resolve to). Pinning the
/// pass target to one of them keeps the traffic on this host.
fn pinnable(facts: &Facts, route: &Route, endpoint: &Endpoint) -> Vec<String> {
    let Some(UpstreamAddr::Tcp { host, port }) = UpstreamAddr::parse(&endpoint.address) else {
        return Vec::new();
    };
    let ip: Option<std::net::IpAddr> = host.trim_matches(['[', ']']).parse().ok();
    if endpoint.host_name.is_none() || endpoint.listening || !ip.is_some_and(|i| i.is_loopback()) {
        return Vec::new();
    }
    let mut out: Vec<String> = route
        .endpoints
        .iter()
        .filter(|e| e.listening && e.address != endpoint.address)
        .map(|e| e.address.clone())
        .collect();
    if let Some(sockets) = facts.sockets.ok() {
        out.extend(
            sockets
                .tcp_listeners_on(port)
                .filter(|s| s.addr.is_loopback() && Some(s.addr) != ip)
                .map(|s| {
                    UpstreamAddr::Tcp {
                        host: s.addr.to_string(),
                        port,
                    }
                    .to_string()
                }),
        );
    }
    out.sort();
    out.dedup();
    out
}

/// `http://host:port` of a site URL.
fn url_base(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url.get(after_scheme..).and_then(|rest| rest.find('/')) {
        Some(i) => url.get(..after_scheme + i).unwrap_or(url),
        None => url,
    }
}

/// The URL to replay a logged `GET`/`HEAD` request through the site: base + the request target.
fn request_url(base: &str, request: &str) -> Option<String> {
    let mut words = request.split(' ');
    let (method, target) = (words.next()?, words.next()?);
    let safe = matches!(method, "GET" | "HEAD")
        && target.starts_with('/')
        && !target.contains(|c: char| c.is_whitespace() || c.is_control() || c == '"');
    safe.then(|| format!("{base}{target}"))
}

fn recent_context(
    entries: &[&crate::facts::error_log::LogEntry],
    address: &str,
    base: &str,
) -> RecentContext {
    let mine: Vec<&&crate::facts::error_log::LogEntry> = entries
        .iter()
        .filter(|e| e.upstream_addr.as_deref() == Some(address))
        .collect();
    let mut counts = BTreeMap::new();
    let mut last = BTreeMap::new();
    // every class but `other`: the ones `recent.last` describes
    for class in recent_classes() {
        let of_class: Vec<_> = mine.iter().filter(|e| e.class == class).collect();
        counts.insert(class, of_class.len());
        last.insert(
            class,
            of_class.last().map(|e| {
                Box::new(LastLine {
                    time: e.time.clone(),
                    level: e.level.clone(),
                    message: e.message.clone(),
                    phase: e.phase.clone(),
                    request: e.request.clone(),
                    client: e.client.clone(),
                    upstream: e.upstream.clone(),
                    url: e.request.as_deref().and_then(|r| request_url(base, r)),
                })
            }),
        );
    }
    RecentContext {
        window: format!("{}m", RECENT_WINDOW_SECS / 60),
        counts,
        last,
    }
}
// ----- end of the nginx-side block -----

#[cfg(test)]
mod tests {
    use super::*;

    /// `ExecMain*` as `systemctl show` reports them for a backend that ran `run_ms` ms.
    fn run(code: i32, status: i32, run_ms: u64) -> crate::facts::units::RunFacts {
        let start = 1_764_590_000_000_000;
        crate::facts::units::RunFacts {
            exec_main_code: code,
            exec_main_status: status,
            exec_main_start_timestamp: start,
            exec_main_exit_timestamp: start + run_ms * 1000,
            restart: "no".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_start_failure_exits_by_itself_failing_within_the_window() {
        let window = std::time::Duration::from_secs(5);
        assert!(start_failed(&run(1, 3, 512), window));
        assert!(
            start_failed(&run(1, 1, 5000), window),
            "the window's edge counts"
        );
        assert!(!start_failed(&run(1, 3, 5001), window), "ran longer");
        assert!(!start_failed(&run(1, 0, 512), window), "a clean exit");
        assert!(!start_failed(&run(2, 15, 512), window), "killed by SIGTERM");
        assert!(!start_failed(&run(3, 11, 512), window), "dumped core");
        assert!(
            !start_failed(&crate::facts::units::RunFacts::default(), window),
            "never ran"
        );
        assert!(start_failed(
            &run(1, 3, 8000),
            std::time::Duration::from_secs(10)
        ));
    }

    fn route(listen: &str, location: &str) -> Route {
        let words: Vec<String> = listen.split(' ').map(str::to_string).collect();
        let site = crate::facts::nginx::Site {
            server_names: Vec::new(),
            listen: vec![listen.into()],
            listeners: crate::facts::aim::Listen::from_args(&words)
                .into_iter()
                .collect(),
            at: at(),
            locations: Vec::new(),
            roots: Vec::new(),
        };
        Route {
            aim: crate::facts::aim::aim(&[site], 0),
            site: "api.lab".into(),
            listen: vec![listen.into()],
            location: location.into(),
            directive: "proxy_pass".into(),
            target: "127.0.0.1:8000".into(),
            at: "/x:1".into(),
            dynamic: false,
            endpoints: Vec::new(),
            pass: crate::facts::nginx::Pass {
                directive: "proxy_pass".into(),
                raw: "http://127.0.0.1:8000".into(),
                target: PassTarget::Tcp {
                    scheme: Some("http".into()),
                    host: "127.0.0.1".into(),
                    port: 8000,
                },
                at: at(),
                arg: at(),
            },
        }
    }

    fn at() -> crate::facts::nginx::At {
        crate::facts::nginx::At {
            file: std::path::Path::new("/x").into(),
            line: 1,
            col: 1,
            start: 0,
            end: 0,
        }
    }

    #[test]
    fn site_urls_are_dialable() {
        assert_eq!(
            site_url(&route("127.0.0.1:18000", "/")),
            "http://127.0.0.1:18000/"
        );
        assert_eq!(
            site_url(&route("80 default_server", "/api/")),
            "http://127.0.0.1:80/api/"
        );
        assert_eq!(
            site_url(&route("[::]:8080", "~ \\.php$")),
            "http://[::1]:8080/"
        );
        assert_eq!(site_url(&route("*:81", "/")), "http://127.0.0.1:81/");
    }

    #[test]
    fn splits_scheme_and_uri() {
        assert_eq!(
            scheme_and_uri("http://127.0.0.1:8000/api"),
            (Some("http".into()), "/api".into())
        );
        assert_eq!(
            scheme_and_uri("http://unix:/run/a.sock:/x"),
            (Some("http".into()), "/x".into())
        );
        assert_eq!(scheme_and_uri("127.0.0.1:9000"), (None, String::new()));
    }

    // ----- nginx-side block -----

    #[test]
    fn log_times_map_to_the_epoch_without_a_time_zone() {
        assert_eq!(naive_seconds("1970/01/01 00:00:00"), Some(0));
        assert_eq!(naive_seconds("2026/11/26 09:07:37"), Some(1_795_684_057));
        assert_eq!(naive_seconds("2026/13/26 09:07:37"), None);
        let last_naive = naive_seconds("2026/11/26 10:00:00").unwrap();
        let clock = LogClock {
            // a UTC+1 host; the last line reached the disk a second after its stamp
            log_written: crate::engine::recency::at_second(last_naive - 3600 + 1),
            last_naive,
        };
        assert_eq!(
            clock.epoch("2026/11/26 09:59:00"),
            Some(last_naive - 3600 - 60)
        );
    }

    #[test]
    fn a_line_of_the_second_the_site_was_written_is_recent() {
        use crate::engine::recency::at_second;
        use std::time::Duration;
        let last_naive = naive_seconds("2026/11/26 10:00:00").unwrap();
        let second = last_naive; // a UTC host
        let clock = LogClock {
            log_written: at_second(second) + Duration::from_millis(700),
            last_naive,
        };
        let written = at_second(second) + Duration::from_millis(400);
        let change = |at| crate::engine::recency::FileChange {
            at,
            own_verified: false,
        };
        let window = second - RECENT_WINDOW_SECS;
        assert!(clock.recent("2026/11/26 10:00:00", window, Some(change(written))));
        assert!(!clock.recent("2026/11/26 09:59:59", window, Some(change(written))));
        assert!(
            clock.recent("2026/11/26 10:00:00", second, None),
            "window's first second"
        );
        assert!(!clock.recent("2026/11/26 09:59:59", second, None));
        // the site written again after the log's last line (a heal): that line is history
        let healed = at_second(second) + Duration::from_millis(900);
        assert!(!clock.recent("2026/11/26 10:00:00", window, Some(change(healed))));
        assert!(!clock.recent("not a time", window, None));
    }

    #[test]
    fn logged_get_requests_replay_through_the_site() {
        let base = url_base("http://127.0.0.1:18000/api/");
        assert_eq!(base, "http://127.0.0.1:18000");
        assert_eq!(
            request_url(base, "GET /big?x=1 HTTP/1.1").as_deref(),
            Some("http://127.0.0.1:18000/big?x=1")
        );
        assert_eq!(request_url(base, "POST /form HTTP/1.1"), None);
        assert_eq!(request_url(base, "GET http://evil/ HTTP/1.1"), None);
    }

    #[test]
    fn sizes_parse_and_format_like_nginx() {
        assert_eq!(parse_size("4k"), Some(4096));
        assert_eq!(parse_size("8K"), Some(8192));
        assert_eq!(parse_size("1m"), Some(1 << 20));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("4x"), None);
        assert_eq!(format_size(16 * 1024), "16k");
        assert_eq!(format_size(1000), "1000");
    }

    #[test]
    fn buffers_are_raised_within_the_cap() {
        assert_eq!(
            buffer_raise("4k", "8 4k", None),
            Some(("16k".into(), "4 16k".into()))
        );
        assert_eq!(
            buffer_raise("16k", "4 16k", None),
            Some(("32k".into(), "4 32k".into()))
        );
        assert_eq!(
            buffer_raise("16k", "16 16k", None),
            Some(("32k".into(), "16 16k".into())),
            "buffers that already satisfy nginx are kept"
        );
        assert_eq!(
            buffer_raise("32k", "4 32k", None),
            Some(("64k".into(), "4 64k".into()))
        );
        assert_eq!(buffer_raise("64k", "4 64k", None), None, "at the cap");
        assert_eq!(buffer_raise("4k", "8 4k", Some("8k")), None);
        assert_eq!(buffer_raise("lots", "8 4k", None), None);
    }
}
