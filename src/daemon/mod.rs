//! `nginx-medic run`: the unattended loop. Triggers (the error-log follower, systemd's signals
//! for the watched units, a periodic probe of each site) go to the per-target reconciler
//! (`reconcile`), which coalesces them, absorbs what changes nothing (a storm about an open
//! incident) and says when an evaluation is due: facts → findings → plan, the same pure pipeline
//! as `diagnose` and `plan`. Each conclusive finding then passes the brakes (`budget`) and is
//! either only reported (`observe`) or applied with `apply::execute::apply` (`apply`). The
//! state is written for `nginx-medic status` (`status`).

pub mod budget;
pub mod events;
pub mod follow;
pub mod holds;
pub mod hooks;
pub mod inotify;
pub mod lock;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod pause;
pub mod reconcile;
pub mod status;
pub mod watchdog;

use crate::adapters::probe::probe_site;
use crate::adapters::procfs::Procfs;
use crate::adapters::systemd::{Systemd, UnitSignal};
use crate::apply::execute::{apply, ApplyReport, Effects, Outcome, StepStatus};
use crate::apply::journal::{EntryStatus, Journal, JournalEntry};
use crate::config::{DaemonMode, Settings};
use crate::engine::context::{site_url, Target};
use crate::engine::evaluate::Finding;
use crate::engine::plan::{Plan, Step};
use crate::facts::gather::{error_log_path, nginx_binary};
use crate::facts::last_good::{LastGood, LocationKey};
use crate::pipeline::{self, InvalidPlaybooks};
use crate::playbook::PlaybookSet;
use budget::{Budget, Decision, Escalation};
use holds::{Announced, Change, Hold};
use hooks::HookEvent;
use metrics::SharedMetrics;
use notify::Notifier;
use reconcile::{Heard, LeftAlone, Reconciler, Scope, Seen, Touch, Verdict};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::task::JoinHandle;

/// The daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    #[error("cannot listen for metrics on `{addr}`: {source}\nhelp: set `daemon.metrics` to a free loopback port, or `null`")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot install the signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Why an evaluation was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Trigger {
    ErrorLog {
        upstream: Option<String>,
        class: crate::facts::error_log::LogClass,
        /// What the line named when no address can be told (an upstream group's name).
        named: Option<String>,
    },
    Unit {
        unit: String,
        what: String,
    },
    Probe {
        site: String,
        status: Option<u16>,
    },
    /// A probe answered: news only for a site with an open incident.
    ProbeAnswered {
        site: String,
    },
    /// A probe answered, but a file of the site changed since the last evaluation: what it
    /// dials is read again before it is remembered as good.
    SiteChanged {
        site: String,
    },
    Pause, // the pause file changed, or a pause ended
}

impl Trigger {
    /// A watched unit reached a state that lasts (`inactive`, `failed`, `active`): the fault (or
    /// its end) has landed, so it is evaluated at once. Only systemd's own signals about the
    /// watched units say this, so they cannot come faster than the units change.
    fn is_settled_unit(&self) -> bool {
        matches!(self, Trigger::Unit { what, .. } if matches!(what.as_str(), "inactive" | "failed" | "active"))
    }

    /// What the trigger touches, for the reconciler.
    fn touch(&self) -> Touch {
        match self {
            Trigger::ErrorLog {
                upstream: Some(address),
                class,
                ..
            } => Touch::Line {
                address: address.clone(),
                class: format!("{class:?}"),
            },
            Trigger::ErrorLog {
                upstream: None,
                class,
                named,
            } => Touch::LineWithoutAddress {
                what: format!("{class:?} {}", named.as_deref().unwrap_or("")),
            },
            Trigger::Unit { unit, .. } => Touch::Unit {
                unit: unit.clone(),
                settled: self.is_settled_unit(),
            },
            Trigger::Probe { site, .. } => Touch::ProbeFailed { site: site.clone() },
            Trigger::ProbeAnswered { site } => Touch::ProbeAnswered { site: site.clone() },
            Trigger::SiteChanged { .. } | Trigger::Pause => Touch::Everything,
        }
    }
}

/// A site to probe through nginx.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Site {
    name: String,
    url: String,
    /// The `Host` (and TLS server name) that reaches the site's server block.
    host: String,
    /// What each location probed at `url` dialled at the last evaluation: remembered as its last
    /// good configuration when a probe answers (`facts::last_good`).
    locations: BTreeMap<LocationKey, BTreeSet<String>>,
    /// The mtime of each file of those locations at the last evaluation: a probe that answers
    /// after one changed is not evidence of what the evaluation saw.
    files: BTreeMap<PathBuf, Option<SystemTime>>,
}

/// What the loop and its background tasks share.
#[derive(Debug, Default)]
struct Shared {
    sites: Mutex<Vec<Site>>,
    watched_units: Mutex<BTreeSet<String>>,
    probe_interval: Mutex<Duration>,
    /// Where the last good configurations are kept (`settings.state_dir`).
    state_dir: Mutex<PathBuf>,
    /// SIGTERM or SIGINT arrived during an evaluation: it finishes the transaction in flight
    /// and starts no other.
    stop_requested: AtomicBool,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One open incident: a target with a finding, from the first evaluation that saw it.
#[derive(Debug)]
struct Incident {
    opened: Instant,
    /// The first evidence of the fault: the unit's exit, or the trigger that led to the
    /// evaluation (a failed probe, a log line, a unit signal). `nginx_medic_heal_seconds`
    /// counts from here.
    first_evidence: SystemTime,
    cause: String,
    /// The backend unit, when known (the journal's `OBJECT_SYSTEMD_UNIT`).
    unit: Option<String>,
    /// The plan (or inconclusive reason) last reported, so it is reported once, not per probe.
    reported: Option<String>,
    /// Whether the budget has judged the incident a relapse or not: once, when it is about
    /// to be acted on (a held fault, or someone's restart seen half-way, is none).
    relapse_judged: bool,
}

/// Runs until SIGTERM or SIGINT. `config` is re-read on SIGHUP.
pub async fn run(
    config: Option<PathBuf>,
    settings: Settings,
    playbooks: PlaybookSet,
) -> Result<(), DaemonError> {
    memory::one_arena();
    let _lock = lock::InstanceLock::acquire(&settings.daemon.lock_file, "run")?;
    // What a killed process left open is finished, and the brakes rebuilt, before anything runs.
    let recovered = crate::apply::recover::at_start(&settings).await;
    let notifier = Arc::new(Notifier::from_env());
    let metrics = SharedMetrics::default();
    let mut tasks: Vec<JoinHandle<()>> = Vec::new();
    if let Some(addr) = settings.daemon.metrics {
        let listener = metrics::bind(addr)
            .await
            .map_err(|source| DaemonError::Metrics { addr, source })?;
        tracing::info!(address = %addr, "metrics endpoint listening");
        tasks.push(tokio::spawn(metrics::serve(listener, metrics.clone())));
    }
    let mut signals = Signals::new().map_err(DaemonError::Signals)?;
    let (tx, mut rx) = unbounded_channel();
    let shared = Arc::new(Shared::default());
    *locked(&shared.probe_interval) = settings.daemon.probe_interval;
    locked(&shared.state_dir).clone_from(&settings.state_dir);
    tasks.push(tokio::spawn(watch_units(
        settings.bus,
        shared.clone(),
        tx.clone(),
    )));
    let pause_tx = tx.clone();
    tasks.push(tokio::spawn(pause::watch(
        settings.state_dir.clone(),
        move || {
            let _ = pause_tx.send(Trigger::Pause);
        },
    )));
    tasks.push(tokio::spawn(probe_sites(
        shared.clone(),
        metrics.clone(),
        tx.clone(),
    )));
    // A beat counts for the whole watchdog timeout (twice the ping interval).
    let every = notifier.watchdog_interval();
    let heartbeat = Arc::new(watchdog::Heartbeat::new(
        every.map_or(Duration::from_secs(60), |e| e * 2),
    ));
    if let Some(every) = every {
        let feed = watchdog::feed(notifier.clone(), heartbeat.clone(), every);
        tasks.push(tokio::spawn(feed));
    }
    let mut beats = watchdog::Beats::new(every);
    let mut budget = Budget::new(
        settings.daemon.rate_limit,
        settings.daemon.crash_loop,
        settings.daemon.circuit_breaker,
    );
    budget.restore(&settings.state_dir, &recovered.held);
    let (settings_debounce, settings_probe_interval) =
        (settings.daemon.debounce, settings.daemon.probe_interval);
    let mut daemon = Daemon {
        config,
        settings,
        playbooks: Arc::new(playbooks),
        budget,
        metrics,
        notifier: notifier.clone(),
        shared,
        incidents: BTreeMap::new(),
        announced: Announced::default(),
        tx,
        follower: None,
        last_owners: BTreeMap::new(),
        pauses: None,
        heartbeat: heartbeat.clone(),
        triggered_at: None,
        reconciler: Reconciler::new(settings_debounce, settings_probe_interval),
        status: StatusWriter::default(),
        stuck_snapshot: None,
        basis: None,
        bus: None,
        full_pass_at: Instant::now(),
    };
    tracing::info!(
        mode = daemon.mode(),
        playbooks = daemon.playbooks.len(),
        probe_interval_ms = daemon.settings.daemon.probe_interval.as_millis() as u64,
        "starting"
    );
    // The first evaluation fills in the sites to probe and the units to watch.
    let shared = daemon.shared.clone();
    daemon.reconciler.retry_all(Instant::now());
    let _ = daemon.reconciler.take_due(Instant::now());
    let first = guarded(daemon.evaluate(None), &mut signals, &shared.stop_requested).await;
    notifier.ready(&daemon.summary());
    tracing::info!(status = %daemon.summary(), "ready");
    // start-up is over: its code need not stay resident (memory.rs)
    let paged_out = memory::page_out_own_code();
    tracing::debug!(
        bytes = paged_out,
        "the executable's start-up pages handed back"
    );
    if first.retry {
        daemon.reconciler.retry_all(Instant::now());
    }
    daemon.write_status();
    let mut stop = first.stop;
    let mut reload = first.reload;
    while !stop {
        if !daemon.hung() {
            heartbeat.beat();
        }
        crate::failpoint::stall_point!("daemon.loop");
        if reload {
            reload = false;
            daemon.reload();
            daemon.reconciler.retry_all(Instant::now());
            continue;
        }
        let deadline = daemon
            .reconciler
            .next_due()
            .map(tokio::time::Instant::from_std);
        let flush = daemon.status.flush_at().map(tokio::time::Instant::from_std);
        let full_pass = tokio::time::Instant::from_std(daemon.full_pass_at);
        tokio::select! {
            biased;
            stopping = signals.next() => {
                if stopping {
                    stop = true;
                } else {
                    reload = true;
                }
            }
            _ = sleep_until(deadline), if deadline.is_some() => {
                // what is queued now is seen by the snapshot about to be taken: heard first, so
                // that the evaluation covers what it touches
                while let Ok(trigger) = rx.try_recv() {
                    daemon.hear(&trigger);
                }
                let Some(due) = daemon.reconciler.take_due_scoped(Instant::now()) else {
                    continue;
                };
                let scope = match due.scope {
                    Scope::Everything => None,
                    Scope::Units(units) => Some(Targeted {
                        units,
                        addresses: due.targets.into_iter().collect(),
                    }),
                };
                let done = guarded(daemon.evaluate(scope), &mut signals, &shared.stop_requested).await;
                (stop, reload) = (done.stop, done.reload);
                if done.retry {
                    daemon.reconciler.retry_all(Instant::now());
                }
                daemon.write_status();
                daemon.notifier.status(&daemon.summary());
            }
            trigger = rx.recv() => {
                if let Some(trigger) = trigger {
                    daemon.hear(&trigger);
                }
            }
            _ = sleep_until(flush), if flush.is_some() => {
                daemon.write_status();
            }
            () = tokio::time::sleep_until(full_pass) => {
                // the whole host, as a reload asks: the incidents and brakes carry over
                tracing::debug!("full pass due");
                daemon.full_pass_at = Instant::now() + daemon.settings.daemon.full_pass_interval;
                daemon.reconciler.retry_all(Instant::now());
            }
            () = beats.tick() => {}
        }
    }
    notifier.stopping("stopping");
    daemon.status.settle();
    tracing::info!("stopped");
    for task in tasks {
        task.abort();
    }
    if let Some((_, task)) = daemon.follower.take() {
        task.abort();
    }
    Ok(())
}

/// Evidence older than this (15 minutes) is not the fault's start: the incident's own trigger is.
const EVIDENCE_HORIZON: Duration = Duration::from_secs(15 * 60);

/// The first evidence of a fault on `unit`: its main process's exit, when the unit is down and
/// exited after `EVIDENCE_HORIZON` ago, else the trigger that led to the evaluation.
fn first_evidence(
    units: Option<&Vec<crate::facts::units::UnitFacts>>,
    unit: Option<&str>,
    triggered_at: SystemTime,
) -> SystemTime {
    let exited = units
        .into_iter()
        .flatten()
        .find(|u| Some(u.name.as_str()) == unit && !u.is_up())
        .map(|u| u.run.exec_main_exit_timestamp)
        .filter(|&us| us > 0)
        .map(|us| UNIX_EPOCH + Duration::from_micros(us));
    match exited {
        Some(at) if at <= triggered_at && at + EVIDENCE_HORIZON >= triggered_at => at,
        _ => triggered_at,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

struct Signals {
    terminate: Signal,
    interrupt: Signal,
    hangup: Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal: `true` to stop, `false` to reload.
    async fn next(&mut self) -> bool {
        tokio::select! {
            _ = self.terminate.recv() => {
                tracing::info!(signal = "SIGTERM", "stop requested");
                true
            }
            _ = self.interrupt.recv() => {
                tracing::info!(signal = "SIGINT", "stop requested");
                true
            }
            _ = self.hangup.recv() => {
                tracing::info!(signal = "SIGHUP", "reload requested");
                false
            }
        }
    }
}

#[derive(Debug, Default)]
struct Evaluated {
    /// Something was in transition: evaluate again after the debounce.
    retry: bool,
    stop: bool,
    reload: bool,
}

/// Runs one evaluation to its end, noting (not acting on) stop and reload requests meanwhile:
/// a transaction in flight finishes, or rolls back, before the daemon stops.
async fn guarded(
    work: impl std::future::Future<Output = bool>,
    signals: &mut Signals,
    stop_requested: &AtomicBool,
) -> Evaluated {
    tokio::pin!(work);
    let mut done = Evaluated::default();
    loop {
        tokio::select! {
            retry = &mut work => {
                done.retry = retry;
                return done;
            }
            stopping = signals.next() => {
                if stopping {
                    tracing::info!("finishing the transaction in flight before stopping");
                    stop_requested.store(true, Ordering::Relaxed);
                    done.stop = true;
                } else {
                    tracing::info!("reloading after the evaluation in flight");
                    done.reload = true;
                }
            }
        }
    }
}

struct Daemon {
    config: Option<PathBuf>,
    settings: Settings,
    playbooks: Arc<PlaybookSet>,
    budget: Budget,
    metrics: SharedMetrics,
    notifier: Arc<Notifier>,
    shared: Arc<Shared>,
    incidents: BTreeMap<String, Incident>,
    /// The lasting holds logged per target, so each is logged when it begins and ends.
    announced: Announced,
    tx: UnboundedSender<Trigger>,
    follower: Option<(PathBuf, JoinHandle<()>)>,
    /// The unit that owned each dialled address's socket when last seen.
    last_owners: BTreeMap<String, String>,
    /// The pause file of `state_dir`, re-read when it changes (see `refresh_pauses`).
    pauses: Option<pause::PauseWatch>,
    /// Beaten between the phases of an evaluation and by each step of an apply.
    heartbeat: Arc<watchdog::Heartbeat>,
    /// When the first trigger since the last evaluation arrived.
    triggered_at: Option<SystemTime>,
    /// Each target's state, and when the next evaluation is due.
    reconciler: Reconciler,
    status: StatusWriter,
    /// A snapshot abandoned after `SNAPSHOT_TIMEOUT`, and when.
    stuck_snapshot: Option<(JoinHandle<SnapshotResult>, Instant)>,
    /// The last snapshot, which a targeted one is built on.
    basis: Option<Arc<Basis>>,
    /// The connection to systemd the snapshots and heals use (`Daemon::systemd`).
    bus: Option<Systemd>,
    /// When the next full pass is asked for (`daemon.full_pass_interval` after the last full
    /// snapshot, or after the last ask).
    full_pass_at: Instant,
}

/// The last snapshot, and the identity of the configuration files the last full one parsed.
#[derive(Debug)]
struct Basis {
    facts: crate::facts::Facts,
    config: crate::facts::gather::ConfigIdentity,
}

/// An evaluation of the targets of some units only ([`Scope::Units`]).
#[derive(Debug, Clone)]
struct Targeted {
    units: BTreeSet<String>,
    /// The targets the reconciler had for those units.
    addresses: BTreeSet<String>,
}

impl Targeted {
    /// Whether the evaluation covers the target of `address` (served by `unit`).
    fn covers(&self, address: &str, unit: Option<&str>) -> bool {
        self.addresses.contains(address) || unit.is_some_and(|u| self.units.contains(u))
    }
}

/// What a snapshot was read from: all sources, or the last snapshot with some read again.
#[derive(Debug)]
enum Read {
    Full(crate::facts::gather::ConfigIdentity),
    Targeted(crate::facts::gather::Fresh),
}

/// What the snapshot thread hands back.
type SnapshotResult = (crate::facts::Facts, pipeline::Diagnosis, Read);

/// How long gathering the facts and diagnosing them may take before the evaluation is
/// abandoned (`nginx -t` and the journal reads have bounds of their own, well below it).
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(60);

/// Writes `status.json` when the state changed, at most once a second.
#[derive(Debug, Default)]
struct StatusWriter {
    last: Option<Instant>,
    /// A change not written yet (the last write was less than a second ago).
    dirty: bool,
    /// The last document written, without its `updated` time.
    written: Option<status::Status>,
    /// An instant and its wall time, taken at the first write.
    anchor: Option<(Instant, f64)>,
    warned: bool,
    /// The last write, on a thread of its own so that the loop does not wait for the disk;
    /// no write starts before it ended, so the writes land in order.
    in_flight: Option<std::thread::JoinHandle<Result<(), status::StatusError>>>,
}

impl StatusWriter {
    /// Waits for the write in flight, if any, and notes how it went.
    fn settle(&mut self) {
        if let Some(write) = self.in_flight.take() {
            match write.join() {
                Ok(done) => self.noted(done),
                Err(_) => tracing::warn!(
                    "the status file's writer panicked; `nginx-medic status` shows an old state"
                ),
            }
        }
    }

    fn noted(&mut self, done: Result<(), status::StatusError>) {
        match done {
            Ok(()) => self.warned = false,
            Err(e) => {
                if !self.warned {
                    tracing::warn!(error = %one_line(&crate::error_text::chain(&e)), "cannot write the status file; `nginx-medic status` shows an old state");
                }
                self.warned = true;
            }
        }
    }
}

/// The status file is written at most this often.
const STATUS_EVERY: Duration = Duration::from_secs(1);

impl StatusWriter {
    /// When a change not written yet is due.
    fn flush_at(&self) -> Option<Instant> {
        self.dirty
            .then(|| self.last.map_or_else(Instant::now, |t| t + STATUS_EVERY))
    }
}

/// States of a unit in the middle of a change: nothing is done to it until it settles.
const IN_TRANSITION: [&str; 3] = ["activating", "deactivating", "reloading"];

impl Daemon {
    fn mode(&self) -> &'static str {
        match self.settings.daemon.mode {
            DaemonMode::Observe => "observe",
            DaemonMode::Apply => "apply",
        }
    }

    /// A trigger: to the reconciler, which absorbs what changes nothing.
    fn hear(&mut self, trigger: &Trigger) {
        let heard = self.reconciler.trigger(&trigger.touch(), Instant::now());
        if heard == Heard::Pending {
            tracing::debug!(?trigger, "trigger");
            self.triggered_at.get_or_insert_with(SystemTime::now);
        }
        // the counts and pending flags changed: written by the loop within the second (a probe
        // that answers for a healthy site changes nothing)
        if !matches!(trigger, Trigger::ProbeAnswered { .. }) || heard == Heard::Pending {
            self.status.dirty = true;
        }
    }

    /// The state as `nginx-medic status` reads it: written when it changed, at most once a
    /// second (a change within the second is written by the loop when the second is over).
    ///
    /// The file is written on a thread of its own: its two fsyncs took up to 360 ms on a busy
    /// disk, during which the loop heard no trigger (the gap between a fault's first trigger
    /// and its evaluation). A write still in flight defers the next one to the flush timer.
    fn write_status(&mut self) {
        if self
            .status
            .in_flight
            .as_ref()
            .is_some_and(|w| !w.is_finished())
        {
            self.status.dirty = true;
            return;
        }
        self.status.settle();
        let doc = self.status_document();
        let changed = !self.status.written.as_ref().is_some_and(|w| {
            let mut w = w.clone();
            w.updated = doc.updated;
            w == doc
        });
        if !changed {
            self.status.dirty = false;
            return;
        }
        if self.status.last.is_some_and(|t| t.elapsed() < STATUS_EVERY) {
            self.status.dirty = true;
            return;
        }
        self.status.last = Some(Instant::now());
        self.status.dirty = false;
        let (dir, written) = (self.settings.state_dir.clone(), doc.clone());
        let spawned = std::thread::Builder::new()
            .name("status".into())
            .spawn(move || status::write(&dir, &written));
        if let Ok(write) = spawned {
            self.status.in_flight = Some(write);
            self.status.written = Some(doc);
            return;
        }
        let done = status::write(&self.settings.state_dir, &doc);
        self.status.noted(done);
        self.status.written = Some(doc);
    }

    fn status_document(&mut self) -> status::Status {
        let now = Instant::now();
        let wall = unix_now();
        // one anchor for the daemon's life, so that an unchanged state reads the same
        let (anchor, anchor_wall) = *self.status.anchor.get_or_insert((now, wall));
        let at = |t: Instant| {
            if t >= anchor {
                anchor_wall + t.duration_since(anchor).as_secs_f64()
            } else {
                anchor_wall - anchor.duration_since(t).as_secs_f64()
            }
        };
        let since_epoch = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        };
        let targets = self
            .reconciler
            .targets()
            .iter()
            .map(|(address, e)| status::TargetStatus {
                target: address.clone(),
                site: e.site.clone(),
                unit: e.unit.clone(),
                state: e.state.into(),
                left_alone: e.left_alone,
                since: at(e.since),
                last_evaluated: e.last_evaluated.map(at),
                requeue_at: e.requeue_at.map(at),
                pending: e.is_pending(),
                absorbed: e.absorbed,
                incident: self.incidents.get(address).map(|i| status::IncidentStatus {
                    cause: i.cause.clone(),
                    opened: at(i.opened),
                    first_evidence: since_epoch(i.first_evidence),
                }),
                brakes: self.budget.brakes(address, now),
            })
            .collect();
        let (paused, pause_error) = match self.pauses.as_ref().map(|w| w.state()) {
            Some(Err(reason)) => (Vec::new(), Some(reason.clone())),
            _ => (
                self.pauses
                    .as_ref()
                    .map(|w| w.active(pause::unix_now()))
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(unit, p)| status::PausedStatus {
                        unit,
                        until: p.until,
                    })
                    .collect(),
                None,
            ),
        };
        status::Status {
            version: status::VERSION,
            pid: std::process::id(),
            mode: self.mode().to_string(),
            started: anchor_wall,
            updated: wall,
            evaluations: self.reconciler.evaluations(),
            absorbed: self.reconciler.absorbed(),
            targets,
            breaker: self.budget.breaker(now),
            paused,
            pause_error,
        }
    }

    /// One line for `systemctl status`.
    fn summary(&self) -> String {
        let sites = locked(&self.shared.sites).len();
        let escalated: Vec<&str> = self.budget.escalated().collect();
        let mut out = format!(
            "{} mode; {sites} site{} watched; {} open incident{}",
            self.mode(),
            if sites == 1 { "" } else { "s" },
            self.incidents.len(),
            if self.incidents.len() == 1 { "" } else { "s" }
        );
        if !escalated.is_empty() {
            out.push_str(&format!("; escalated: {}", escalated.join(", ")));
        }
        out.push_str(&self.paused_summary());
        out
    }

    /// SIGHUP: the configuration and the playbooks, both or neither.
    fn reload(&mut self) {
        let settings = match Settings::load(self.config.as_deref()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %one_line(&e.to_string()), "reload refused: the configuration does not load; the old configuration and playbooks keep running");
                return;
            }
        };
        let playbooks = match pipeline::load_playbooks(&settings) {
            Ok(p) => p,
            Err(InvalidPlaybooks(errors)) => {
                for e in &errors.0 {
                    tracing::error!(error = %one_line(&e.to_string()), "invalid playbook");
                }
                tracing::error!(
                    errors = errors.0.len(),
                    "reload refused: the new playbooks do not load; the old configuration and playbooks keep running"
                );
                return;
            }
        };
        let mut settings = settings;
        if settings.daemon.metrics != self.settings.daemon.metrics
            || settings.daemon.lock_file != self.settings.daemon.lock_file
        {
            tracing::warn!("`daemon.metrics` and `daemon.lock_file` take effect at the next start");
            settings.daemon.metrics = self.settings.daemon.metrics;
            settings
                .daemon
                .lock_file
                .clone_from(&self.settings.daemon.lock_file);
        }
        if settings.bus != self.settings.bus {
            tracing::warn!(
                "`systemd.bus` is watched as before until the next start; actions use the new bus"
            );
        }
        self.budget.set_limits(
            settings.daemon.rate_limit,
            settings.daemon.crash_loop,
            settings.daemon.circuit_breaker,
        );
        *locked(&self.shared.probe_interval) = settings.daemon.probe_interval;
        locked(&self.shared.state_dir).clone_from(&settings.state_dir);
        self.reconciler
            .set_intervals(settings.daemon.debounce, settings.daemon.probe_interval);
        self.settings = settings;
        self.playbooks = Arc::new(playbooks);
        self.bus = None;
        self.basis = None; // the next evaluation reads everything
                           // Plans may differ now: report them again.
        for incident in self.incidents.values_mut() {
            incident.reported = None;
        }
        tracing::info!(
            mode = self.mode(),
            playbooks = self.playbooks.len(),
            "reloaded the configuration and playbooks"
        );
        self.notifier.status(&self.summary());
    }

    /// Facts → findings → plan, then each conclusive finding through the brakes. Returns
    /// whether to evaluate again soon (a unit was in transition).
    async fn evaluate(&mut self, scope: Option<Targeted>) -> bool {
        // dropped last, after the snapshot: its peak is handed back
        let _trim = memory::TrimOnDrop;
        crate::failpoint::stall_point!("daemon.evaluate");
        let started = Instant::now();
        let waited = self
            .triggered_at
            .and_then(|t| SystemTime::now().duration_since(t).ok());
        tracing::debug!(
            targeted = scope.is_some(),
            since_trigger_us = waited.map(|w| w.as_micros() as u64),
            "evaluating"
        );
        self.refresh_pauses();
        let Some((facts, diagnosis, read)) = self.snapshot(scope.as_ref()).await else {
            return true; // evaluated again after the spacing
        };
        self.heartbeat.beat();
        // a targeted snapshot that could not stand in was a full one: the whole host is seen
        let scope = match &read {
            Read::Full(_) => None,
            Read::Targeted(fresh) => {
                tracing::debug!(units = ?fresh.units, sockets = fresh.sockets, error_log = fresh.error_log, phases_us = ?fresh.took_us, took_ms = started.elapsed().as_millis() as u64, "targeted snapshot");
                scope
            }
        };
        if scope.is_none() {
            tracing::debug!(
                took_ms = started.elapsed().as_millis() as u64,
                "full snapshot"
            );
            self.full_pass_at = Instant::now() + self.settings.daemon.full_pass_interval;
        }
        let covers = |address: &str, unit: Option<&str>| {
            scope.as_ref().map_or(true, |s| s.covers(address, unit))
        };
        let pipeline::Diagnosis {
            targets,
            mut findings,
        } = diagnosis;
        // findings about targets a targeted snapshot did not read again are not evidence
        findings.retain(|f| covers(&f.upstream, f.unit.as_deref()));
        self.remember_owners(&targets);
        if let Err(e) =
            crate::facts::gather_backends::remember_processes(&self.settings.state_dir, &facts)
        {
            tracing::warn!(error = %crate::error_text::chain(&e), "cannot remember the hand-started backends");
        }
        self.watch(&targets);
        let error_log = error_log_path(&self.settings, facts.nginx.ok());
        self.follow(error_log.clone());
        let now = Instant::now();
        let triggered_at = self.triggered_at.take().unwrap_or_else(SystemTime::now);

        let failing: BTreeSet<String> = findings.iter().map(|f| f.upstream.clone()).collect();
        let resolved: Vec<String> = self
            .incidents
            .iter()
            .filter(|(k, i)| !failing.contains(*k) && covers(k, i.unit.as_deref()))
            .map(|(k, _)| k.clone())
            .collect();
        for key in resolved {
            if let Some(incident) = self.incidents.remove(&key) {
                events::resolved(
                    &key,
                    &incident.cause,
                    incident.unit.as_deref(),
                    incident.opened.elapsed(),
                );
            }
            self.announced.forget(&key);
        }
        let covered: Vec<&Target> = targets
            .iter()
            .filter(|t| covers(&t.endpoint.address, t.endpoint.unit.as_deref()))
            .collect();
        for t in &covered {
            if !failing.contains(&t.endpoint.address)
                && self.budget.healthy(&t.endpoint.address, now)
            {
                events::released(&t.endpoint.address, t.endpoint.unit.as_deref());
            }
        }
        for t in &covered {
            if self
                .hold(t.endpoint.unit.as_deref(), &t.endpoint.address)
                .is_some()
            {
                continue; // a deploy under a pause restarts units on purpose
            }
            if let Some(n) = t.context.unit.as_ref().and_then(|u| u.n_restarts) {
                if let Some(e) = self.budget.unit_restarts(&t.endpoint.address, now, n) {
                    self.escalate(&t.endpoint.address, target_finding(&findings, t), e)
                        .await;
                }
            }
        }
        for f in &findings {
            if self.incidents.contains_key(&f.upstream) {
                continue;
            }
            self.metrics.lock().incident(&f.upstream, &f.cause);
            events::incident(f);
            self.incidents.insert(
                f.upstream.clone(),
                Incident {
                    opened: now,
                    first_evidence: first_evidence(
                        facts.units.ok(),
                        f.unit.as_deref(),
                        triggered_at,
                    ),
                    cause: f.cause.clone(),
                    unit: f.unit.clone(),
                    reported: None,
                    relapse_judged: false,
                },
            );
            self.budget.fault_opened(&f.upstream);
        }

        // what the evaluation concludes per target: healthy unless a finding says otherwise
        let mut verdicts: BTreeMap<String, (Seen, bool)> = BTreeMap::new();
        for t in &covered {
            verdicts
                .entry(t.endpoint.address.clone())
                .or_insert_with(|| {
                    let seen = Seen {
                        address: t.endpoint.address.clone(),
                        site: t.route.site.clone(),
                        unit: t.endpoint.unit.clone(),
                        cause: None,
                        verdict: Verdict::Healthy,
                    };
                    (seen, false)
                });
        }
        for f in &findings {
            let (seen, _) = verdicts.entry(f.upstream.clone()).or_insert_with(|| {
                let seen = Seen {
                    address: f.upstream.clone(),
                    site: f.site.clone(),
                    unit: f.unit.clone(),
                    cause: None,
                    verdict: Verdict::Healthy,
                };
                (seen, false)
            });
            seen.cause.get_or_insert_with(|| f.cause.clone());
            seen.verdict = Verdict::LeftAlone(LeftAlone::NoPlan);
        }
        let plan = pipeline::plan(&facts, &self.playbooks, &targets, findings);
        let mut retry = false;
        let mut acted: BTreeSet<String> = BTreeSet::new();
        let mut conclude = |key: &str, verdict: Verdict| {
            if let Some((seen, set)) = verdicts.get_mut(key) {
                // the first conclusion about a target stands (a second finding is not acted on)
                if !*set {
                    seen.verdict = verdict;
                    *set = true;
                }
            }
        };
        for (index, finding) in plan.findings.iter().enumerate() {
            let key = finding.upstream.clone();
            let steps: Vec<Step> = plan
                .actions
                .iter()
                .filter(|s| s.finding == index)
                .cloned()
                .collect();
            if !finding.conclusive {
                let why = finding.missing.join("; ");
                if self.report_once(&key, &format!("inconclusive: {why}")) {
                    events::inconclusive(finding, &why);
                }
                conclude(&key, Verdict::LeftAlone(LeftAlone::Inconclusive));
                continue;
            }
            if steps.is_empty() || acted.contains(&key) {
                continue;
            }
            if self.report_held(finding, &steps) {
                conclude(&key, Verdict::LeftAlone(LeftAlone::Held));
                continue;
            }
            if let Some(unit) = self.in_transition(finding, &targets).await {
                events::settling(finding, &unit);
                retry = true;
                conclude(&key, Verdict::Settling);
                continue;
            }
            if self.escalated_as_relapse(finding).await {
                conclude(&key, Verdict::LeftAlone(LeftAlone::Escalated));
                continue;
            }
            match self.settings.daemon.mode {
                DaemonMode::Observe => {
                    self.observe(finding, &steps);
                    conclude(&key, Verdict::LeftAlone(LeftAlone::Observe));
                }
                DaemonMode::Apply => {
                    if self.shared.stop_requested.load(Ordering::Relaxed) {
                        tracing::info!(target = %key, cause = %finding.cause, "stopping: not healed now, evaluated again at the next start");
                        conclude(&key, Verdict::Unhealed);
                        continue;
                    }
                    acted.insert(key.clone());
                    self.reconciler.healing(
                        &key,
                        &finding.site,
                        finding.unit.as_deref(),
                        &finding.cause,
                        Instant::now(),
                    );
                    self.write_status();
                    let verdict = self.act(&plan, finding, steps, error_log.clone()).await;
                    conclude(&key, verdict);
                }
            }
        }
        let seen = verdicts.into_values().map(|(seen, _)| seen).collect();
        if scope.is_some() {
            self.reconciler.evaluated_some(seen, Instant::now());
        } else {
            self.reconciler.evaluated(seen, Instant::now());
        }
        let config = match read {
            Read::Full(config) => Some(config),
            Read::Targeted(_) => self.basis.as_ref().map(|b| b.config.clone()),
        };
        self.basis = config.map(|config| Arc::new(Basis { facts, config }));
        retry
    }

    /// Gathers and diagnoses on a blocking thread (the bus driven by the daemon's runtime), so
    /// that the watchdog, the metrics and the signals are served meanwhile. `None` when it
    /// took longer than `SNAPSHOT_TIMEOUT` (abandoned: the next evaluation waits for it to end
    /// rather than start a second) or could not run.
    async fn snapshot(
        &mut self,
        scope: Option<&Targeted>,
    ) -> Option<(crate::facts::Facts, pipeline::Diagnosis, Read)> {
        if let Some((stuck, _)) = &self.stuck_snapshot {
            if !stuck.is_finished() {
                tracing::warn!("the last snapshot has not ended; not starting another");
                return None;
            }
            self.stuck_snapshot = None;
        }
        let settings = self.settings.clone();
        let playbooks = self.playbooks.clone();
        let owners = self.last_owners.clone();
        let basis = scope.and(self.basis.clone());
        let units = scope.map(|s| s.units.clone()).unwrap_or_default();
        // the daemon's one connection (a new one per snapshot costs its handshake); without
        // one, the snapshot tries its own
        let systemd = self.systemd().await.ok();
        // the bus is driven by the daemon's own runtime meanwhile: a second runtime on the
        // thread would cost its memory at every snapshot
        let handle = tokio::runtime::Handle::current();
        let work = tokio::task::spawn_blocking(move || {
            let procfs = Procfs::system();
            let systemd = systemd.as_ref();
            let targeted = basis.and_then(|b| {
                handle.block_on(crate::facts::gather::gather_targeted(
                    &settings, &procfs, &owners, &b.facts, &b.config, &units, systemd,
                ))
            });
            let (facts, read) = match targeted {
                Some((facts, fresh)) => (facts, Read::Targeted(fresh)),
                None => {
                    let facts =
                        handle.block_on(pipeline::gather_on(&settings, &procfs, &owners, systemd));
                    let config = facts
                        .nginx
                        .ok()
                        .map(|n| crate::facts::gather::config_identity(&n.files))
                        .unwrap_or_default();
                    (facts, Read::Full(config))
                }
            };
            let diagnosing = Instant::now();
            let diagnosis = pipeline::diagnose(&facts, &playbooks, &settings);
            tracing::debug!(
                took_us = diagnosing.elapsed().as_micros() as u64,
                findings = diagnosis.findings.len(),
                "diagnosed"
            );
            (facts, diagnosis, read)
        });
        // the watchdog is fed meanwhile, for as long as the snapshot may take
        self.heartbeat.busy_for(SNAPSHOT_TIMEOUT);
        let mut work = work;
        let done = tokio::time::timeout(SNAPSHOT_TIMEOUT, &mut work).await;
        self.heartbeat.beat();
        match done {
            Ok(Ok(snapshot)) => Some(snapshot),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "the snapshot ended abnormally; evaluated again later");
                None
            }
            Err(_) => {
                tracing::error!(
                    timeout_s = SNAPSHOT_TIMEOUT.as_secs(),
                    "the snapshot (facts and diagnosis) took too long; abandoned, evaluated again when it ends"
                );
                self.stuck_snapshot = Some((work, Instant::now()));
                None
            }
        }
    }

    /// A snapshot abandoned this long ago and still running is a hang: the loop stops beating
    /// so that the watchdog restarts the service.
    fn hung(&self) -> bool {
        self.stuck_snapshot
            .as_ref()
            .is_some_and(|(w, since)| !w.is_finished() && since.elapsed() >= SNAPSHOT_TIMEOUT)
    }

    /// Remembers the socket owner of every address dialled now, and forgets addresses no
    /// longer dialled (so the memory is bounded by the configuration).
    fn remember_owners(&mut self, targets: &[Target]) {
        use crate::facts::mapping::UnitSource;
        let dialled: BTreeSet<&str> = targets
            .iter()
            .map(|t| t.endpoint.address.as_str())
            .collect();
        self.last_owners
            .retain(|address, _| dialled.contains(address.as_str()));
        for t in targets {
            if let (Some(unit), Some(UnitSource::SocketOwner)) =
                (&t.endpoint.unit, t.endpoint.unit_from)
            {
                self.last_owners
                    .insert(t.endpoint.address.clone(), unit.clone());
            }
        }
    }

    /// Records what was reported for an incident; true when it is new.
    fn report_once(&mut self, key: &str, what: &str) -> bool {
        match self.incidents.get_mut(key) {
            Some(i) if i.reported.as_deref() == Some(what) => false,
            Some(i) => {
                i.reported = Some(what.to_string());
                true
            }
            None => true,
        }
    }

    /// The daemon's connection to systemd for its snapshots and heals, made at the first use
    /// and again after one failed (the signal stream has its own).
    async fn systemd(&mut self) -> Result<Systemd, crate::adapters::systemd::SystemdError> {
        if let Some(bus) = self.bus.as_ref().filter(|b| !b.is_broken()) {
            return Ok(bus.clone());
        }
        let bus = Systemd::connect(self.settings.bus).await?;
        self.bus = Some(bus.clone());
        Ok(bus)
    }

    /// The unit of the finding, when it has a job queued or is between states. Whether it has
    /// a job is asked of systemd (`Unit.Job`), not counted from signals: a signal any client
    /// can send must not hold a unit pending. A manager that cannot be asked holds nothing
    /// (the heal's own calls would fail and escalate).
    async fn in_transition(&mut self, finding: &Finding, targets: &[Target]) -> Option<String> {
        let unit = finding.unit.as_ref()?;
        let state = targets
            .get(finding.target)
            .and_then(|t| t.context.unit.as_ref())
            .map_or("", |u| u.active_state.as_str());
        if IN_TRANSITION.contains(&state) {
            return Some(unit.clone());
        }
        let job = match self.systemd().await {
            Ok(systemd) => systemd.unit_job(unit).await,
            Err(e) => Err(e),
        };
        match job {
            Ok(job) => job.map(|_| unit.clone()),
            Err(e) => {
                self.bus = None;
                tracing::debug!(unit = %unit, error = %crate::error_text::chain(&e), "cannot read the unit's job");
                None
            }
        }
    }

    /// A fault about to be acted on within `crash_loop.within` of the target's last heal is a
    /// relapse, judged once per incident; whether it escalated the target.
    async fn escalated_as_relapse(&mut self, finding: &Finding) -> bool {
        let Some(incident) = self.incidents.get_mut(&finding.upstream) else {
            return false;
        };
        if std::mem::replace(&mut incident.relapse_judged, true) {
            return false;
        }
        let Some(e) = self.budget.fault_seen(&finding.upstream, Instant::now()) else {
            return false;
        };
        self.escalate(&finding.upstream, Some(finding), e).await;
        true
    }

    /// `observe`: the plan, once per incident (and again when it changes).
    fn observe(&mut self, finding: &Finding, steps: &[Step]) {
        let lines: Vec<String> = steps
            .iter()
            .map(|s| crate::pipeline::describe_action(&s.action))
            .collect();
        if !self.report_once(&finding.upstream, &lines.join("\n")) {
            return;
        }
        events::would_heal(finding, lines.len());
        for (i, (line, step)) in lines.iter().zip(steps).enumerate() {
            let mut shown = step.clone();
            crate::redact::step(&mut shown);
            let diff = shown.diff.as_deref().map(one_line).unwrap_or_default();
            events::planned(finding, i + 1, line, &diff);
        }
    }

    /// `apply`: through the brakes, then the finding's steps as one transaction. Returns what
    /// became of the target.
    async fn act(
        &mut self,
        full: &Plan,
        finding: &Finding,
        steps: Vec<Step>,
        error_log: Option<PathBuf>,
    ) -> Verdict {
        let key = finding.upstream.clone();
        if let Some((path, txn)) = self.budget.held_path(steps.iter().map(|s| &s.action)) {
            tracing::warn!(target = %key, path = %path.display(), txn, "not healed: the file belongs to a transaction a crash left that could not be rolled back; only reported");
            self.observe(finding, &steps);
            return Verdict::LeftAlone(LeftAlone::Escalated);
        }
        let now = Instant::now();
        let decision = self.budget.decide(&key, now);
        match self.announced.update(&key, Hold::of(&decision)) {
            Some(Change::Began(hold)) => events::held(finding, hold),
            Some(Change::Ended(hold)) => events::unheld(finding, hold),
            None => {}
        }
        match decision {
            Decision::Act => {}
            Decision::LeaveAlone => return Verdict::LeftAlone(LeftAlone::Escalated),
            Decision::RateLimited { escalate } => {
                self.metrics.lock().rate_limited();
                if let Some(e) = escalate {
                    self.escalate(&key, Some(finding), e).await;
                }
                return Verdict::LeftAlone(LeftAlone::RateLimited);
            }
            Decision::BreakerOpen { escalate } => {
                if let Some(e) = escalate {
                    self.escalate("*", None, e).await;
                }
                return Verdict::LeftAlone(LeftAlone::BreakerOpen);
            }
        }
        let plan = Plan {
            created_at: full.created_at,
            findings: full.findings.clone(),
            actions: steps,
        };
        events::healing(finding, plan.actions.len());
        let report = match self.run_plan(&plan, error_log).await {
            Ok(report) => report,
            Err(reason) => {
                self.bus = None; // connected again for the next heal
                events::cannot_heal(finding, &reason);
                ApplyReport {
                    outcome: Outcome::Failed,
                    actions: Vec::new(),
                    transactions: Vec::new(),
                }
            }
        };
        {
            let mut m = self.metrics.lock();
            for r in &report.actions {
                m.action(&kind_of(&r.step), status_name(r.status));
            }
        }
        let done = Instant::now();
        let opened = self.incidents.get(&key).map_or(now, |i| i.opened);
        let seconds = done.saturating_duration_since(opened);
        let from_evidence = self
            .incidents
            .get(&key)
            .and_then(|i| SystemTime::now().duration_since(i.first_evidence).ok())
            .unwrap_or(seconds);
        match report.outcome {
            Outcome::Healed | Outcome::NothingToDo => {
                self.metrics.lock().healed(from_evidence, seconds);
                self.budget.outcome(&key, done, true);
                // A recurrence is a new incident (and a relapse, if it comes soon).
                self.incidents.remove(&key);
                events::healed(finding, seconds, &report.transactions);
                self.hook(
                    "healed",
                    &key,
                    Some(finding),
                    None,
                    "healed and verified".into(),
                    &report,
                    Some(seconds),
                )
                .await;
                Verdict::Healed
            }
            Outcome::RolledBack | Outcome::Failed | Outcome::RollbackIncomplete => {
                self.bus = None; // a connection that failed the heal is not used again
                let detail = report
                    .actions
                    .iter()
                    .find(|r| r.status == StepStatus::Failed)
                    .map_or_else(|| "the heal failed".to_string(), |r| r.detail.clone());
                let outcome = match report.outcome {
                    Outcome::RolledBack => "rolled_back",
                    Outcome::RollbackIncomplete => "rollback_incomplete",
                    _ => "failed",
                };
                let what = one_line(&detail);
                events::heal_failed(finding, outcome, &what, &report.transactions);
                self.hook(
                    "heal_failed",
                    &key,
                    Some(finding),
                    None,
                    detail,
                    &report,
                    Some(seconds),
                )
                .await;
                let escalation = match report.environment_failure() {
                    _ if report.outcome == Outcome::RollbackIncomplete => {
                        self.budget.rollback_incomplete(&key, &what)
                    }
                    Some(step) => self
                        .budget
                        .environment_refused(&key, &one_line(&step.detail)),
                    None => self.budget.outcome(&key, done, false),
                };
                if let Some(e) = escalation {
                    self.escalate(&key, Some(finding), e).await;
                }
                if self.budget.is_escalated(&key) {
                    Verdict::LeftAlone(LeftAlone::Escalated)
                } else {
                    Verdict::Unhealed
                }
            }
        }
    }

    /// The plan's steps, on the daemon's connection to systemd. `error_log` is the one the
    /// snapshot's configuration names (read after a reload).
    async fn run_plan(
        &mut self,
        plan: &Plan,
        error_log: Option<PathBuf>,
    ) -> Result<ApplyReport, String> {
        let systemd = self
            .systemd()
            .await
            .map_err(|e| crate::error_text::chain(&e))?;
        let nginx = nginx_binary(&self.settings);
        let effects = Effects {
            systemd: &systemd,
            error_log,
            nginx,
            reload: self.settings.nginx.reload,
            nginx_unit: self.settings.nginx.unit.clone(),
            state_dir: self.settings.state_dir.clone(),
            progress: &*self.heartbeat,
        };
        apply(plan, &effects)
            .await
            .map_err(|e| crate::error_text::chain(&e))
    }

    /// Reports an escalation: log, metrics, audit journal, hooks.
    async fn escalate(&mut self, key: &str, finding: Option<&Finding>, e: Escalation) {
        self.metrics.lock().escalated();
        events::escalated(key, finding, &e);
        let entry = JournalEntry::now(
            format!("daemon-{}", unix_now() as u64),
            1,
            "escalate",
            key,
            EntryStatus::Skipped,
            format!("{}: {}", e.reason.as_str(), e.detail),
        );
        if let Err(err) = Journal::open(&self.settings.state_dir).and_then(|mut j| j.append(&entry))
        {
            tracing::error!(error = %err, "cannot write the audit journal");
        }
        let empty = ApplyReport {
            outcome: Outcome::NothingToDo,
            actions: Vec::new(),
            transactions: Vec::new(),
        };
        self.hook(
            "escalated",
            key,
            finding,
            Some(e.reason.as_str()),
            e.detail,
            &empty,
            None,
        )
        .await;
    }

    #[allow(clippy::too_many_arguments)]
    async fn hook(
        &self,
        event: &'static str,
        key: &str,
        finding: Option<&Finding>,
        reason: Option<&'static str>,
        detail: String,
        report: &ApplyReport,
        seconds: Option<Duration>,
    ) {
        let doc = HookEvent {
            event,
            target: key.to_string(),
            site: finding.map(|f| f.site.clone()),
            cause: finding.map(|f| f.cause.clone()),
            unit: finding.and_then(|f| f.unit.clone()),
            reason,
            detail,
            transactions: report.transactions.clone(),
            seconds: seconds.map(|s| s.as_secs_f64()),
            time: unix_now(),
            host: hostname(),
        };
        hooks::notify(&self.settings.daemon.hooks, &doc).await;
    }

    /// Updates the sites to probe and the units to watch from the targets.
    fn watch(&self, targets: &[Target]) {
        // a site no probe can reach is not probed: its answer would be another block's
        let mut by_probe: BTreeMap<(String, String, String), Site> = BTreeMap::new();
        for t in targets {
            let Some(host) = t.route.aim.host.clone() else {
                tracing::debug!(site = %t.route.site, reason = t.route.aim.not_aimed.as_deref().unwrap_or(""), "site not probed");
                continue;
            };
            let (name, url) = (t.route.site.clone(), site_url(&t.route));
            let site = by_probe
                .entry((name.clone(), url.clone(), host.clone()))
                .or_insert_with(|| Site {
                    name,
                    url,
                    host,
                    locations: BTreeMap::new(),
                    files: BTreeMap::new(),
                });
            let file = t.route.pass.at.file.to_path_buf();
            site.files
                .entry(file.clone())
                .or_insert_with(|| mtime(&file));
            site.locations
                .entry(LocationKey {
                    site: t.route.site.clone(),
                    listen: t.route.listen.join("; "),
                    location: t.route.location.clone(),
                    file,
                })
                .or_default()
                .insert(t.endpoint.address.clone());
        }
        *locked(&self.shared.sites) = by_probe.into_values().collect();
        let mut units: BTreeSet<String> = targets
            .iter()
            .filter_map(|t| t.endpoint.unit.clone())
            .collect();
        units.insert(self.settings.nginx.unit.clone());
        units.extend(self.settings.backends.iter().filter_map(|b| b.unit.clone()));
        *locked(&self.shared.watched_units) = units;
    }

    /// Starts (or moves) the error-log follower.
    fn follow(&mut self, path: Option<PathBuf>) {
        let Some(path) = path else { return };
        if self.follower.as_ref().is_some_and(|(p, _)| *p == path) {
            return;
        }
        if let Some((_, task)) = self.follower.take() {
            task.abort();
        }
        match follow::Follower::new(&path) {
            Ok(follower) => {
                tracing::info!(path = %path.display(), "following the error log");
                let tx = self.tx.clone();
                let task = tokio::spawn(follower.run(move |heard| {
                    let _ = tx.send(Trigger::ErrorLog {
                        upstream: heard.upstream_addr.clone(),
                        class: heard.class,
                        named: heard.upstream.clone(),
                    });
                }));
                self.follower = Some((path, task));
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot follow the error log; the probe and systemd signals remain")
            }
        }
    }
}

// --- intent: `nginx-medic pause` and `heal: false` (the state is `pause`'s) -------------------

impl Daemon {
    /// Re-reads the pause file if it changed; logs each pause when it begins and when it ends,
    /// and sets the metric.
    fn refresh_pauses(&mut self) {
        let dir = &self.settings.state_dir;
        let watch = match &mut self.pauses {
            Some(w) if w.state_dir() == dir.as_path() => w,
            slot => slot.insert(pause::PauseWatch::new(dir)),
        };
        if watch.refresh() {
            if let Err(reason) = watch.state() {
                tracing::error!(error = %reason, "the pause state cannot be read; nothing is done to any target until it is fixed");
            }
        }
        let now = pause::unix_now();
        let (began, ended) = watch.transitions(now);
        for (name, p) in &began {
            let until = p.until.map_or_else(|| "resumed".to_string(), pause::utc);
            events::paused(name, &until);
        }
        for name in &ended {
            events::pause_ended(name);
        }
        let names = watch.active(now).into_iter().map(|(n, _)| n).collect();
        self.metrics.lock().set_paused(names);
    }

    /// What holds a target now (a pause, `heal: false`, an unreadable pause file), if anything.
    fn hold(&self, unit: Option<&str>, upstream: &str) -> Option<pause::Hold> {
        let ok = Ok(pause::PauseState::empty());
        let state = self.pauses.as_ref().map_or(&ok, |w| w.state());
        pause::hold_of(
            state,
            &self.settings.backends,
            unit,
            upstream,
            pause::unix_now(),
        )
    }

    /// A held finding (its target, or a unit one of its steps touches) is reported once per
    /// incident (and again when the hold changes) and never acted on; true when held. Its
    /// incident counts from the end of the hold.
    fn report_held(&mut self, finding: &Finding, steps: &[Step]) -> bool {
        let ok = Ok(pause::PauseState::empty());
        let state = self.pauses.as_ref().map_or(&ok, |w| w.state());
        let Some((unit, hold)) = pause::hold_of_actions(
            state,
            &self.settings.backends,
            finding.unit.as_deref(),
            &finding.upstream,
            steps.iter().map(|s| &s.action),
            pause::unix_now(),
        ) else {
            return false;
        };
        let text = hold.describe();
        if self.report_once(&finding.upstream, &text) {
            events::held_by_intent(finding, unit.as_deref(), hold.kind(), &text);
        }
        if let Some(incident) = self.incidents.get_mut(&finding.upstream) {
            incident.opened = Instant::now();
            incident.first_evidence = SystemTime::now(); // a held fault is not the heal's to time
            incident.relapse_judged = true; // nor a relapse
        }
        true
    }

    /// `; paused: api.service until 2026-12-01 10:42:00 UTC` for `STATUS=`, or nothing.
    fn paused_summary(&self) -> String {
        let Some(watch) = &self.pauses else {
            return String::new();
        };
        if watch.state().is_err() {
            return "; pause state unreadable: nothing is done".into();
        }
        let active: Vec<String> = watch
            .active(pause::unix_now())
            .iter()
            .map(|(name, p)| {
                let name = if name == pause::HOST {
                    "whole host"
                } else {
                    name
                };
                format!("{name} {}", p.until_text())
            })
            .collect();
        if active.is_empty() {
            String::new()
        } else {
            format!("; paused: {}", active.join(", "))
        }
    }
}

fn target_finding<'a>(findings: &'a [Finding], target: &Target) -> Option<&'a Finding> {
    findings
        .iter()
        .find(|f| f.upstream == target.endpoint.address)
}

fn kind_of(step: &Step) -> String {
    serde_json::to_value(&step.action)
        .ok()
        .and_then(|v| v["kind"].as_str().map(String::from))
        .unwrap_or_else(|| "unknown".into())
}

fn status_name(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Ok => "ok",
        StepStatus::Failed => "failed",
        StepStatus::Skipped => "skipped",
        StepStatus::RolledBack => "rolled_back",
        StepStatus::NotRun => "not_run",
    }
}

/// One event a line: multi-line texts (diffs, error chains with help) are joined.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Follows systemd's signals and triggers on changes of the watched units; reconnects (every
/// few seconds, forever) when the bus goes away, the probe standing in meanwhile.
async fn watch_units(bus: crate::config::Bus, shared: Arc<Shared>, tx: UnboundedSender<Trigger>) {
    use futures_lite::StreamExt;
    let mut warned = false;
    loop {
        let stream = match Systemd::connect(bus).await {
            Ok(systemd) => match systemd.unit_signals().await {
                Ok(stream) => Some((systemd, stream)),
                Err(e) => {
                    if !warned {
                        tracing::warn!(error = %crate::error_text::chain(&e), "cannot subscribe to systemd's signals; retrying");
                    }
                    None
                }
            },
            Err(e) => {
                if !warned {
                    tracing::warn!(error = %crate::error_text::chain(&e), "cannot reach systemd for its signals; retrying");
                }
                None
            }
        };
        let Some((_systemd, mut stream)) = stream else {
            warned = true;
            tokio::time::sleep(Duration::from_secs(5)).await;
            continue;
        };
        warned = false;
        while let Some(signal) = stream.next().await {
            let (unit, what) = match signal {
                UnitSignal::JobNew { unit } => (unit, "job queued".to_string()),
                UnitSignal::JobRemoved { unit, result } => (unit, format!("job {result}")),
                UnitSignal::ActiveState { unit, state } => (unit, state),
            };
            if locked(&shared.watched_units).contains(&unit) {
                // when it arrived, before the loop hears it (the bench times both)
                tracing::debug!(unit = %unit, what = %what, "unit signal");
                let _ = tx.send(Trigger::Unit { unit, what });
            }
        }
        tracing::warn!("systemd's signal stream ended; reconnecting");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A file's modification time, when it can be read.
fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The safety net: probes each site through nginx every `probe_interval`, and remembers what
/// each location that answered dialled (`facts::last_good`, written only when it changes).
async fn probe_sites(shared: Arc<Shared>, metrics: SharedMetrics, tx: UnboundedSender<Trigger>) {
    let mut memory = Memory::default();
    loop {
        let interval = *locked(&shared.probe_interval);
        tokio::time::sleep(interval).await;
        let sites = locked(&shared.sites).clone();
        memory.open(&locked(&shared.state_dir).clone());
        let timeout = interval.clamp(Duration::from_millis(500), Duration::from_secs(5));
        for site in &sites {
            let result = probe_site(&site.url, Some(&site.host), timeout).await;
            match result.status {
                Some(status) if status < 500 => {
                    metrics.lock().probe_ok(&site.name, unix_now());
                    let _ = tx.send(Trigger::ProbeAnswered {
                        site: site.name.clone(),
                    });
                    if site.files.iter().all(|(f, at)| mtime(f) == *at) {
                        memory.answered(site);
                    } else {
                        let _ = tx.send(Trigger::SiteChanged {
                            site: site.name.clone(),
                        });
                    }
                }
                status => {
                    tracing::debug!(site = %site.name, url = %site.url, ?status, error = result.error.as_deref().unwrap_or(""), "probe failed");
                    let _ = tx.send(Trigger::Probe {
                        site: site.name.clone(),
                        status,
                    });
                }
            }
        }
        memory.save(&sites);
    }
}

/// The probe's memory of the last good configurations: loaded from `state_dir` once (again
/// after it moved or could not be read), saved after a round of probes when it changed.
#[derive(Default)]
struct Memory {
    state_dir: Option<PathBuf>,
    /// `None` while the file cannot be read: nothing is remembered over a damaged file.
    last_good: Option<LastGood>,
    changed: bool,
    /// The reason last logged, so a damaged file is logged once, not every round.
    warned: Option<String>,
}

impl Memory {
    fn open(&mut self, state_dir: &Path) {
        if self.state_dir.as_deref() == Some(state_dir) && self.last_good.is_some() {
            return;
        }
        self.state_dir = Some(state_dir.to_path_buf());
        self.changed = false;
        self.last_good = match LastGood::load(state_dir) {
            Ok(m) => Some(m),
            Err(e) => {
                let reason = crate::error_text::chain(&e);
                if self.warned.as_deref() != Some(reason.as_str()) {
                    tracing::warn!(error = %one_line(&reason), "the last good configurations cannot be read; nothing is remembered until the file is fixed");
                    self.warned = Some(reason);
                }
                None
            }
        };
    }

    fn answered(&mut self, site: &Site) {
        let Some(m) = &mut self.last_good else { return };
        let now = pause::unix_now();
        for (key, addresses) in &site.locations {
            self.changed |= m.answered(key, addresses, now);
        }
    }

    /// Forgets the locations the configuration no longer has (unless no site is known: a
    /// configuration that did not load is no reason to forget), then writes when changed.
    fn save(&mut self, sites: &[Site]) {
        let (Some(m), Some(dir)) = (&mut self.last_good, &self.state_dir) else {
            return;
        };
        if !sites.is_empty() {
            let keys: BTreeSet<LocationKey> = sites
                .iter()
                .flat_map(|s| s.locations.keys().cloned())
                .collect();
            self.changed |= m.retain(&keys);
        }
        if !self.changed {
            return;
        }
        match m.save(dir) {
            Ok(()) => self.changed = false,
            Err(e) => {
                tracing::warn!(error = %one_line(&crate::error_text::chain(&e)), "cannot remember the last good configurations")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::facts::units::UnitFacts;

    fn down(name: &str, exited_us: u64) -> UnitFacts {
        let mut u = UnitFacts {
            name: name.into(),
            active_state: "inactive".into(),
            ..UnitFacts::default()
        };
        u.run.exec_main_exit_timestamp = exited_us;
        u
    }

    #[test]
    fn the_first_evidence_is_the_unit_exit_when_recent() {
        let now = SystemTime::now();
        let us = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_micros() as u64;
        let exit = now - Duration::from_millis(300);
        let units = vec![down("api.service", us(exit))];
        let at = first_evidence(Some(&units), Some("api.service"), now);
        assert_eq!(us(at), us(exit));
        // another unit, no unit, an exit long ago, an exit "after" the trigger: the trigger
        assert_eq!(first_evidence(Some(&units), Some("web.service"), now), now);
        assert_eq!(first_evidence(Some(&units), None, now), now);
        let old = vec![down("api.service", us(now - Duration::from_secs(3600)))];
        assert_eq!(first_evidence(Some(&old), Some("api.service"), now), now);
        let later = vec![down("api.service", us(now + Duration::from_secs(5)))];
        assert_eq!(first_evidence(Some(&later), Some("api.service"), now), now);
    }

    use super::*;

    #[test]
    fn one_line_joins_help_lines() {
        assert_eq!(
            one_line("p.yaml:3:7: actions[0]: unknown\n  help: did you mean `x`?\n"),
            "p.yaml:3:7: actions[0]: unknown | help: did you mean `x`?"
        );
    }
}
