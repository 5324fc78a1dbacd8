//! The step loop: runs a plan's steps finding by finding, each finding one transaction. Any
//! failure rolls that finding's file edits back byte for byte, brings nginx and the backend back
//! to the old configuration, and every step lands in the audit journal.

use super::journal::{EntryStatus, Journal, JournalEntry};
use super::transaction::{FileTransaction, RollbackOutcome};
use crate::adapters::nginx::NginxBinary;
use crate::adapters::probe::{answers, probe_site, wait_listen};
use crate::adapters::systemd::{JobOp, Systemd};
use crate::config::ReloadMethod;
use crate::engine::plan::{Plan, PlannedAction, Step};
use crate::error_text::chain;
use crate::facts::error_log::read_error_log_since;
use crate::playbook::{Action, SystemdOp};
use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long a systemd job may take before the step fails.
const JOB_TIMEOUT: Duration = Duration::from_secs(60);
/// How long nginx gets to report a failed reload in its error log.
const RELOAD_SETTLE: Duration = Duration::from_millis(400);
/// Added to each step's own wait: the D-Bus look-ups, file I/O and journal line around it.
const STEP_SLACK: Duration = Duration::from_secs(5);
/// `nginx -t` runs to its end (it has no timeout of its own): the time a step grants it.
const NGINX_TEST_ALLOWANCE: Duration = Duration::from_secs(10);
/// The longest one probe request takes: `probe_until` may start its last one just before its
/// deadline.
const PROBE_REQUEST_MAX: Duration = Duration::from_secs(5);
/// The longest wait between two requests of a verifying probe: short, so that the heal is
/// verified within a few ms of the backend's answer (a request through nginx costs ~1 ms).
const PROBE_POLL_MAX: Duration = Duration::from_millis(40);

/// Told how long each step (and each rollback action) may legitimately take before it starts,
/// and when it has ended: the daemon feeds systemd's watchdog only while steps keep inside
/// their bounds.
pub trait Progress: Sync {
    /// A step starts that may take up to `bound`.
    fn step_started(&self, bound: Duration);
    /// The step ended.
    fn step_ended(&self);
}

/// No one to tell (the command line).
pub struct NoProgress;

impl Progress for NoProgress {
    fn step_started(&self, _bound: Duration) {}
    fn step_ended(&self) {}
}

/// The work behind a step, as far as its duration goes.
#[derive(Debug, Clone, Copy)]
enum Work {
    /// A systemd job (start, restart, reload), waited for up to `JOB_TIMEOUT`.
    Job,
    /// A file edit, with `daemon-reload` when it is a unit drop-in.
    Edit {
        daemon_reload: bool,
    },
    Listen(Duration),
    Probe(Duration),
    NginxTest,
    /// `nginx -s reload`, or a reload job; then the settle time.
    Reload,
}

impl Work {
    fn of_step(action: &PlannedAction) -> Self {
        match action {
            PlannedAction::Systemd { .. } | PlannedAction::Pm2 { .. } => Self::Job,
            PlannedAction::SetBindHost { daemon_reload, .. } => Self::Edit {
                daemon_reload: *daemon_reload,
            },
            PlannedAction::RenderSite { .. }
            | PlannedAction::SetPoolListen { .. }
            | PlannedAction::SetDirective { .. } => Self::Edit {
                daemon_reload: false,
            },
            PlannedAction::WaitListen { timeout_ms, .. } => {
                Self::Listen(Duration::from_millis(*timeout_ms))
            }
            PlannedAction::Probe { timeout_ms, .. }
            | PlannedAction::ProbeSite { timeout_ms, .. } => {
                Self::Probe(Duration::from_millis(*timeout_ms))
            }
            PlannedAction::NginxTest {} => Self::NginxTest,
            PlannedAction::NginxReload {} => Self::Reload,
        }
    }

    /// A playbook's action before it is planned: a bind-host edit may turn out to be a unit
    /// drop-in, so it is counted as one.
    fn of_playbook(action: &Action) -> Self {
        match action {
            Action::Systemd { .. } | Action::Pm2 { .. } => Self::Job,
            Action::SetBindHost { .. } => Self::Edit {
                daemon_reload: true,
            },
            Action::RenderSite { .. }
            | Action::SetDirective { .. }
            | Action::SetPoolListen { .. } => Self::Edit {
                daemon_reload: false,
            },
            Action::WaitListen { timeout, .. } => Self::Listen(*timeout),
            Action::Probe { timeout, .. } => Self::Probe(*timeout),
            Action::NginxTest => Self::NginxTest,
            Action::NginxReload => Self::Reload,
        }
    }

    /// The longest the step takes without being stuck.
    fn bound(self) -> Duration {
        STEP_SLACK
            + match self {
                Self::Job => JOB_TIMEOUT,
                Self::Edit { daemon_reload } => {
                    if daemon_reload {
                        JOB_TIMEOUT
                    } else {
                        Duration::ZERO
                    }
                }
                Self::Listen(timeout) => timeout,
                Self::Probe(timeout) => timeout + PROBE_REQUEST_MAX,
                Self::NginxTest => NGINX_TEST_ALLOWANCE,
                Self::Reload => JOB_TIMEOUT + RELOAD_SETTLE,
            }
    }

    /// What a rollback runs again because this step ran: the unit restarted once more, the
    /// file restored (and systemd reloaded), nginx tested and reloaded.
    fn rollback_bound(self) -> Duration {
        match self {
            Self::Job => Self::Job.bound(),
            Self::Edit { daemon_reload } => Self::Edit { daemon_reload }.bound(),
            Self::Reload => Self::NginxTest.bound() + Self::Reload.bound(),
            Self::Listen(_) | Self::Probe(_) | Self::NginxTest => Duration::ZERO,
        }
    }
}

/// The longest `step` takes while it is making progress: its own timeout, or the fixed one of
/// the work behind it, plus slack.
pub fn step_bound(step: &PlannedAction) -> Duration {
    Work::of_step(step).bound()
}

/// The longest one transaction of these playbook actions takes: every step to its bound, the
/// last one failing, then the rollback of all of them. `TimeoutStopSec=` of the shipped unit
/// must allow the longest (a stop waits for the transaction in flight).
pub fn transaction_bound(actions: &[Action]) -> Duration {
    actions
        .iter()
        .map(|a| {
            let work = Work::of_playbook(a);
            work.bound() + work.rollback_bound()
        })
        .sum()
}

/// What `apply` acts through.
pub struct Effects<'a> {
    pub systemd: &'a Systemd,
    pub nginx: NginxBinary,
    pub reload: ReloadMethod,
    pub nginx_unit: String,
    pub error_log: Option<PathBuf>,
    pub state_dir: PathBuf,
    /// Told of each step's bound (the daemon's watchdog).
    pub progress: &'a dyn Progress,
}

/// How an apply ended, overall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Healed,
    NothingToDo,
    RolledBack,
    Failed,
    /// A step failed and what nginx-medic changed could not all be put back (a file it wrote,
    /// nginx's configuration, systemd's view of a unit file): the transaction is escalated, a
    /// person is needed.
    RollbackIncomplete,
}

/// How one step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Ok,
    Failed,
    Skipped,
    RolledBack,
    NotRun,
}

/// One step with its result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepResult {
    #[serde(flatten)]
    pub step: Step,
    pub status: StepStatus,
    pub detail: String,
    /// The step failed because nginx-medic's own environment refused it (its sandbox, a full
    /// disk, its file limit), not because of the backend or nginx.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub environment: bool,
}

/// What `apply` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApplyReport {
    pub outcome: Outcome,
    pub actions: Vec<StepResult>,
    /// One transaction id per finding that acted.
    pub transactions: Vec<String>,
}

impl ApplyReport {
    /// The first failed step that nginx-medic's own environment refused, if any.
    pub fn environment_failure(&self) -> Option<&StepResult> {
        self.actions
            .iter()
            .find(|r| r.status == StepStatus::Failed && r.environment)
    }
}

/// Why a step failed.
#[derive(Debug)]
struct StepError {
    detail: String,
    environment: bool,
}

impl From<String> for StepError {
    fn from(detail: String) -> Self {
        Self {
            detail,
            environment: false,
        }
    }
}

impl From<&str> for StepError {
    fn from(detail: &str) -> Self {
        detail.to_string().into()
    }
}

impl StepError {
    /// A failed file edit: the environment's fault when the OS refused nginx-medic's own write
    /// (read-only file system, permission, no space, no file descriptors).
    fn of_edit(e: &(dyn std::error::Error + 'static)) -> Self {
        Self {
            detail: chain(e),
            environment: refused_by_environment(e),
        }
    }
}

/// Whether an OS error in the chain says the environment refused the write.
fn refused_by_environment(e: &(dyn std::error::Error + 'static)) -> bool {
    use nix::errno::Errno;
    const REFUSALS: [Errno; 7] = [
        Errno::EROFS,
        Errno::EACCES,
        Errno::EPERM,
        Errno::ENOSPC,
        Errno::EDQUOT,
        Errno::EMFILE,
        Errno::ENFILE,
    ];
    let mut next = Some(e);
    while let Some(err) = next {
        let os = err
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error);
        if os.is_some_and(|code| REFUSALS.iter().any(|r| *r as i32 == code)) {
            return true;
        }
        next = err.source();
    }
    false
}

/// Runs every step of the plan.
pub async fn apply(
    plan: &Plan,
    effects: &Effects<'_>,
) -> Result<ApplyReport, super::journal::JournalError> {
    let mut journal = Journal::open(&effects.state_dir)?;
    let mut report = ApplyReport {
        outcome: Outcome::NothingToDo,
        actions: Vec::new(),
        transactions: Vec::new(),
    };
    let mut groups: Vec<usize> = plan.actions.iter().map(|s| s.finding).collect();
    groups.dedup();
    for finding in groups {
        let steps: Vec<&Step> = plan
            .actions
            .iter()
            .filter(|s| s.finding == finding)
            .collect();
        let txn_id = format!("{}-{finding}", unique_stamp());
        let upstream = plan
            .findings
            .get(finding)
            .map_or_else(String::new, |f| f.upstream.clone());
        let (results, group_outcome) = run_group(
            &txn_id,
            &upstream,
            &steps,
            plan.created_at,
            effects,
            &mut journal,
        )
        .await;
        report.transactions.push(txn_id);
        report.actions.extend(results);
        report.outcome = combine(report.outcome, group_outcome);
    }
    Ok(report)
}

fn combine(so_far: Outcome, next: Outcome) -> Outcome {
    use Outcome::*;
    match (so_far, next) {
        (RollbackIncomplete, _) | (_, RollbackIncomplete) => RollbackIncomplete,
        (Failed, _) | (_, Failed) => Failed,
        (RolledBack, _) | (_, RolledBack) => RolledBack,
        (Healed, _) | (_, Healed) => Healed,
        _ => NothingToDo,
    }
}

fn unique_stamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{}{:06}-{}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id()
    )
}

struct Group<'a, 'e> {
    txn: Option<FileTransaction>,
    txn_id: &'a str,
    journal: &'a mut Journal,
    effects: &'a Effects<'e>,
    step_no: u32,
    reloaded: bool,
    daemon_reloaded: bool,
    restarted_units: Vec<String>,
    /// PM2 apps started from an edited ecosystem file: started again after a rollback.
    pm2_applied: Vec<super::pm2_step::Pm2Step>,
}

impl Group<'_, '_> {
    fn log(&mut self, kind: &str, target: &str, status: EntryStatus, detail: &str) {
        if let Err(e) = self.try_log(kind, target, status, detail) {
            tracing::error!(error = %e, "cannot write the audit journal");
        }
    }

    fn try_log(
        &mut self,
        kind: &str,
        target: &str,
        status: EntryStatus,
        detail: &str,
    ) -> Result<(), super::journal::JournalError> {
        self.step_no += 1;
        let entry = JournalEntry::now(self.txn_id, self.step_no, kind, target, status, detail);
        self.journal.append(&entry)
    }
}

/// Journal kind of the line that opens a finding's heal (its target is the upstream): the
/// brakes, rebuilt at start, count it as one remediation, and as a failure when no
/// [`HEAL_END`] of the same transaction follows (the process died mid-heal).
pub const HEAL_BEGIN: &str = "heal_begin";
/// Journal kind of the line that closes a finding's heal: `ok` healed, `failed` or
/// `rolled_back` not; a detail starting with [`ENVIRONMENT`] says nginx-medic's own
/// environment refused it.
pub const HEAL_END: &str = "heal_end";
/// Journal kind of the commit point: a transaction whose `commit` line is `ok` in the journal
/// is committed, even when the process died before its manifest said so; one without it is
/// rolled back at the next start.
pub const COMMIT: &str = "commit";
/// Prefix of a [`HEAL_END`] detail when the environment refused the heal.
pub const ENVIRONMENT: &str = "own environment: ";

async fn run_group(
    txn_id: &str,
    upstream: &str,
    steps: &[&Step],
    planned_at: u64,
    effects: &Effects<'_>,
    journal: &mut Journal,
) -> (Vec<StepResult>, Outcome) {
    let mut group = Group {
        txn: None,
        txn_id,
        journal,
        effects,
        step_no: 0,
        reloaded: false,
        daemon_reloaded: false,
        restarted_units: Vec::new(),
        pm2_applied: Vec::new(),
    };
    group.log(HEAL_BEGIN, upstream, EntryStatus::Ok, "");
    let (results, outcome, environment) = run_steps(&mut group, steps, planned_at).await;
    let (status, detail) = match outcome {
        Outcome::Healed | Outcome::NothingToDo => (EntryStatus::Ok, "healed".to_string()),
        Outcome::RolledBack => (EntryStatus::RolledBack, "rolled back".to_string()),
        Outcome::Failed => (EntryStatus::Failed, "failed".to_string()),
        Outcome::RollbackIncomplete => (
            EntryStatus::Failed,
            "failed; the rollback is incomplete".to_string(),
        ),
    };
    let detail = match environment {
        Some(why) => format!("{ENVIRONMENT}{why}"),
        None => detail,
    };
    group.log(HEAL_END, upstream, status, &detail);
    (results, outcome)
}

/// The steps, then the commit or the rollback; with the environment's refusal, if that is why
/// it failed.
async fn run_steps(
    group: &mut Group<'_, '_>,
    steps: &[&Step],
    planned_at: u64,
) -> (Vec<StepResult>, Outcome, Option<String>) {
    let (txn_id, effects) = (group.txn_id, group.effects);
    let mut results = Vec::with_capacity(steps.len());
    let mut failed = false;
    let mut refused = None;
    for step in steps {
        if failed {
            results.push(result(step, StepStatus::NotRun, "an earlier step failed"));
            continue;
        }
        let mut environment = false;
        effects.progress.step_started(step_bound(&step.action));
        let ran = run_step(group, &step.action, planned_at).await;
        effects.progress.step_ended();
        let (status, detail) = match ran {
            Ok(StepDone::Done(detail)) => (StepStatus::Ok, detail),
            Ok(StepDone::Skipped(detail)) => (StepStatus::Skipped, detail),
            Err(e) => {
                failed = true;
                environment = e.environment;
                if e.environment {
                    refused = Some(e.detail.clone());
                }
                (StepStatus::Failed, e.detail)
            }
        };
        let journal_status = match status {
            StepStatus::Ok => EntryStatus::Ok,
            StepStatus::Skipped => EntryStatus::Skipped,
            _ => EntryStatus::Failed,
        };
        group.log(
            kind_of(&step.action),
            &target_of(&step.action),
            journal_status,
            &detail,
        );
        // `object`, not `target`: that is tracing's own (the journal's `TARGET=`)
        let (kind, object) = (kind_of(&step.action), target_of(&step.action));
        let unit = match &step.action {
            PlannedAction::Systemd { unit, .. } => Some(unit.as_str()),
            _ => None,
        };
        tracing::info!(txn = txn_id, kind, object = %object, ?status, detail = %detail, object_systemd_unit = unit, "step {kind} {object}: {status:?}");
        let mut done = result(step, status, &detail);
        done.environment = environment;
        results.push(done);
    }
    if !failed {
        let Some(txn) = group.txn.take() else {
            return (results, Outcome::Healed, None);
        };
        // The commit point is the journal's line: recorded (and synced) first, so a crash
        // before it ends as before and one after it as committed.
        match group.try_log(COMMIT, txn_id, EntryStatus::Ok, "verified") {
            Ok(()) => {
                if let Err(e) = txn.commit() {
                    tracing::error!(txn = txn_id, error = %chain(&e), "the commit is in the journal but not in the manifest; the next start completes it");
                }
                return (results, Outcome::Healed, None);
            }
            Err(e) => {
                // Not recorded, not committed: undone like any failed step.
                let why = format!("cannot record the commit: {}", chain(&e));
                tracing::error!(txn = txn_id, error = %why, "rolling back");
                refused = Some(why);
                group.txn = Some(txn);
            }
        }
    }
    let undone = roll_back(group).await;
    if undone == Undone::Complete {
        for r in results
            .iter_mut()
            .filter(|r| r.step.action.edit().is_some() && r.status == StepStatus::Ok)
        {
            r.status = StepStatus::RolledBack;
        }
    }
    let outcome = match undone {
        Undone::Complete => Outcome::RolledBack,
        Undone::NothingWritten => Outcome::Failed,
        Undone::Incomplete => Outcome::RollbackIncomplete,
    };
    (results, outcome, refused)
}

fn result(step: &Step, status: StepStatus, detail: &str) -> StepResult {
    StepResult {
        step: (*step).clone(),
        status,
        detail: detail.to_string(),
        environment: false,
    }
}

enum StepDone {
    Done(String),
    Skipped(String),
}

async fn run_step(
    group: &mut Group<'_, '_>,
    action: &PlannedAction,
    planned_at: u64,
) -> Result<StepDone, StepError> {
    let effects = group.effects;
    match action {
        PlannedAction::Systemd { unit, op } => {
            Ok(systemd_step(group, unit, *op, planned_at).await?)
        }
        PlannedAction::SetBindHost { edit, .. }
        | PlannedAction::RenderSite { edit, .. }
        | PlannedAction::SetPoolListen { edit, .. }
        | PlannedAction::SetDirective { edit, .. } => {
            if group.txn.is_none() {
                let txn = FileTransaction::begin(&effects.state_dir, group.txn_id)
                    .map_err(|e| StepError::of_edit(&e))?;
                group.txn = Some(txn);
            }
            let dropin = matches!(
                action,
                PlannedAction::SetBindHost {
                    daemon_reload: true,
                    ..
                }
            );
            if let (true, Some(dir)) = (dropin, edit.path.parent()) {
                std::fs::create_dir_all(dir).map_err(|e| StepError {
                    detail: format!("cannot create `{}`: {e}", dir.display()),
                    environment: refused_by_environment(&e),
                })?;
            }
            let txn = group.txn.as_mut().ok_or("no transaction")?;
            let done = txn
                .edit(
                    &edit.path,
                    edit.before_hash.as_deref(),
                    edit.after.as_bytes(),
                )
                .map_err(|e| StepError::of_edit(&e))?;
            if dropin {
                group.daemon_reloaded = true;
                effects
                    .systemd
                    .daemon_reload()
                    .await
                    .map_err(|e| chain(&e))?;
            }
            Ok(StepDone::Done(format!(
                "wrote `{}` (sha256 {} → {}){}",
                edit.path.display(),
                short(done.before.as_deref().unwrap_or("-")),
                short(&done.after),
                if dropin {
                    "; systemd reloaded its units"
                } else {
                    ""
                }
            )))
        }
        PlannedAction::WaitListen {
            address,
            timeout_ms,
        } => Ok(wait_listen(address, Duration::from_millis(*timeout_ms))
            .await
            .map(|waited| StepDone::Done(format!("listening after {} ms", waited.as_millis())))
            .map_err(|e| chain(&e))?),
        PlannedAction::NginxTest {} => Ok(nginx_test(&effects.nginx)?),
        PlannedAction::NginxReload {} => {
            group.reloaded = true;
            Ok(reload_nginx(effects).await?)
        }
        PlannedAction::Probe {
            url,
            host,
            expect,
            timeout_ms,
        } => Ok(probe_until(
            url,
            host.as_deref(),
            *expect,
            Duration::from_millis(*timeout_ms),
        )
        .await?),
        PlannedAction::ProbeSite {
            site,
            url,
            host,
            timeout_ms,
        } => Ok(answers_until(
            site,
            url,
            host.as_deref(),
            Duration::from_millis(*timeout_ms),
        )
        .await?),
        PlannedAction::Pm2 { .. } => {
            let step = pm2_step_of(action).ok_or("not a pm2 step")?;
            let done = super::pm2_step::run(step.clone()).await?;
            if step.op == crate::playbook::Pm2Op::ApplyEcosystem {
                group.pm2_applied.push(step);
            }
            Ok(StepDone::Done(done))
        }
    }
}

/// Probes a neighbour site until it answers with anything but nginx's own 502, 503 or 504
/// (a site's `/` may rightly answer 404 or a redirect), or the timeout passes.
async fn answers_until(
    site: &str,
    url: &str,
    host: Option<&str>,
    timeout: Duration,
) -> Result<StepDone, String> {
    match poll_until(url, host, timeout, |status| !matches!(status, 502..=504)).await {
        Ok((status, took)) => Ok(StepDone::Done(format!(
            "`{site}` ({url}) answered {status} after {} ms",
            took.as_millis()
        ))),
        Err(last) => Err(format!(
            "`{site}` ({url}), which reaches what this change touched, does not answer within {} ms (last: {last})",
            timeout.as_millis()
        )),
    }
}

/// Requests `url` until a status `accept`s, or `timeout` passes (5 ms after the first request,
/// each wait twice the last, up to `PROBE_POLL_MAX`): the status and how long it took, or the last
/// status or error seen.
async fn poll_until(
    url: &str,
    host: Option<&str>,
    timeout: Duration,
    accept: impl Fn(u16) -> bool,
) -> Result<(u16, Duration), String> {
    let start = Instant::now();
    let mut wait = crate::adapters::probe::FIRST_POLL;
    loop {
        let left = timeout
            .saturating_sub(start.elapsed())
            .max(Duration::from_millis(200));
        let probe = probe_site(url, host, left.min(PROBE_REQUEST_MAX)).await;
        let last = match probe.status {
            Some(status) if accept(status) => return Ok((status, start.elapsed())),
            Some(status) => format!("status {status}"),
            None => probe.error.unwrap_or_default(),
        };
        if start.elapsed() >= timeout {
            return Err(last);
        }
        tokio::time::sleep(wait).await;
        wait = crate::adapters::probe::backoff(wait, PROBE_POLL_MAX);
    }
}

/// The pm2 step a planned `pm2` action runs.
fn pm2_step_of(action: &PlannedAction) -> Option<super::pm2_step::Pm2Step> {
    let PlannedAction::Pm2 {
        app,
        op,
        home,
        binary,
        uid,
        gid,
        ecosystem,
    } = action
    else {
        return None;
    };
    Some(super::pm2_step::Pm2Step {
        target: crate::adapters::pm2::Pm2Target {
            binary: binary.clone(),
            home: home.clone(),
            uid: *uid,
            gid: *gid,
        },
        app: app.clone(),
        op: *op,
        ecosystem: ecosystem.clone(),
    })
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

async fn systemd_step(
    group: &mut Group<'_, '_>,
    unit: &str,
    op: SystemdOp,
    planned_at: u64,
) -> Result<StepDone, String> {
    let systemd = group.effects.systemd;
    // the check and the listening for the job's end at once: two round trips before the job,
    // not five
    let (facts, watch) =
        futures_util::future::join(systemd.unit(unit), systemd.watch_jobs(unit)).await;
    let facts = facts.map_err(|e| chain(&e))?;
    let fresh =
        facts.active_state == "active" && facts.active_enter_timestamp / 1_000_000 > planned_at;
    if matches!(op, SystemdOp::Start | SystemdOp::Restart) && fresh {
        return Ok(StepDone::Skipped(format!(
            "`{unit}` is already active with PID {} started after the plan",
            facts.main_pid
        )));
    }
    if op == SystemdOp::Start && facts.active_state == "active" {
        return Ok(StepDone::Skipped(format!("`{unit}` is already active")));
    }
    let job = match op {
        SystemdOp::Start => JobOp::Start,
        SystemdOp::Restart => JobOp::Restart,
        SystemdOp::Reload => JobOp::Reload,
    };
    // A crash during the job leaves the unit on the edited files: recovery restarts it.
    if let Some(txn) = group.txn.as_mut() {
        txn.note_unit(unit).map_err(|e| chain(&e))?;
    }
    watch
        .map_err(|e| chain(&e))?
        .run(unit, job, JOB_TIMEOUT)
        .await
        .map_err(|e| chain(&e))?;
    group.restarted_units.push(unit.to_string());
    let after = systemd.unit(unit).await.map_err(|e| chain(&e))?;
    Ok(StepDone::Done(format!(
        "{op} `{unit}`: {} with PID {}",
        after.active_state, after.main_pid
    )))
}

fn nginx_test(nginx: &NginxBinary) -> Result<StepDone, String> {
    let outcome = nginx.test().map_err(|e| chain(&e))?;
    if outcome.ok {
        Ok(StepDone::Done("configuration test passed".into()))
    } else {
        Err(format!("nginx -t failed: {}", outcome.output))
    }
}

/// Reloads nginx, then reads the error log written since: a reload that fails keeps the old
/// configuration and says so only there.
async fn reload_nginx(effects: &Effects<'_>) -> Result<StepDone, String> {
    let offset = effects
        .error_log
        .as_ref()
        .and_then(|p| std::fs::metadata(p).ok())
        .map_or(0, |m| m.len());
    match effects.reload {
        ReloadMethod::Systemd => effects
            .systemd
            .run_job(&effects.nginx_unit, JobOp::Reload, JOB_TIMEOUT)
            .await
            .map_err(|e| chain(&e))?,
        ReloadMethod::Signal => effects.nginx.reload_by_signal().map_err(|e| chain(&e))?,
    }
    tokio::time::sleep(RELOAD_SETTLE).await;
    let Some(log) = &effects.error_log else {
        return Ok(StepDone::Done("reloaded (no error log to check)".into()));
    };
    let since = read_error_log_since(log, offset).map_err(|e| chain(&e))?;
    let fatal: Vec<String> = since
        .entries
        .iter()
        .filter(|e| e.level == "emerg" || e.level == "alert")
        .map(|e| format!("[{}] {}", e.level, e.message))
        .collect();
    if fatal.is_empty() {
        Ok(StepDone::Done(
            "reloaded; no [emerg] or [alert] since".into(),
        ))
    } else {
        Err(format!(
            "the reload failed, nginx kept the old configuration: {}",
            fatal.join("; ")
        ))
    }
}

/// Probes until the expected status arrives or the timeout passes (workers take a moment to
/// pick up a reload, a backend a moment to accept). A redirect counts as the answer of a `2xx`
/// expectation: the server block answered, and where it sends clients is its own business.
async fn probe_until(
    url: &str,
    host: Option<&str>,
    expect: u16,
    timeout: Duration,
) -> Result<StepDone, String> {
    match poll_until(url, host, timeout, |status| answers(status, expect)).await {
        Ok((status, took)) => Ok(StepDone::Done(format!(
            "{url} answered {status} after {} ms",
            took.as_millis()
        ))),
        Err(last) => Err(format!(
            "{url} did not answer {expect} within {} ms (last: {last})",
            timeout.as_millis()
        )),
    }
}

/// How much of a failed group's change was undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Undone {
    /// Nothing was written: the finding simply failed.
    NothingWritten,
    /// Every file, nginx and every restarted unit is back as before.
    Complete,
    /// Something could not be put back: the transaction is escalated.
    Incomplete,
}

/// Restores every edited file, then brings nginx and the restarted backends back onto them.
/// A file that cannot be put back escalates the transaction (its manifest says so, and the
/// next start leaves its paths to a person).
async fn roll_back(group: &mut Group<'_, '_>) -> Undone {
    let Some(txn) = group.txn.take() else {
        return Undone::NothingWritten;
    };
    if txn.touched().is_empty() {
        txn.rollback();
        return Undone::NothingWritten;
    }
    let progress = group.effects.progress;
    progress.step_started(STEP_SLACK);
    let end = txn.rollback_or_escalate();
    progress.step_ended();
    let mut all_restored = true;
    for r in &end.reports {
        let (status, detail) = match &r.outcome {
            RollbackOutcome::Restored => (
                EntryStatus::RolledBack,
                "restored byte for byte".to_string(),
            ),
            RollbackOutcome::Removed => (
                EntryStatus::RolledBack,
                "removed (it did not exist before)".to_string(),
            ),
            RollbackOutcome::LeftAlone { reason } => {
                all_restored = false;
                (EntryStatus::Failed, format!("left alone: {reason}"))
            }
            RollbackOutcome::Failed { reason } => {
                all_restored = false;
                (EntryStatus::Failed, reason.clone())
            }
        };
        group.log(
            "restore_file",
            &r.path.display().to_string(),
            status,
            &detail,
        );
    }
    if let Some(why) = &end.unrecorded {
        // The files are back, but on disk the transaction still reads as open: reported as
        // incomplete (and so escalated) until the next start finishes it.
        all_restored = false;
        group.log(
            "record_rollback",
            group.txn_id,
            EntryStatus::Failed,
            &format!("the manifest cannot record the rollback: {why}; the next start finishes it"),
        );
    }
    let effects = group.effects;
    if group.reloaded {
        progress.step_started(Work::Reload.rollback_bound());
        let outcome = match nginx_test(&effects.nginx) {
            Ok(_) => reload_nginx(effects).await,
            Err(e) => Err(e),
        };
        progress.step_ended();
        let (status, detail) = match outcome {
            Ok(StepDone::Done(d) | StepDone::Skipped(d)) => (EntryStatus::RolledBack, d),
            Err(e) => {
                all_restored = false;
                (EntryStatus::Failed, e)
            }
        };
        group.log("reload_nginx", &effects.nginx_unit, status, &detail);
    }
    if group.daemon_reloaded {
        progress.step_started(
            Work::Edit {
                daemon_reload: true,
            }
            .bound(),
        );
        let reloaded = effects.systemd.daemon_reload().await;
        progress.step_ended();
        let (status, detail) = match reloaded {
            Ok(()) => (
                EntryStatus::RolledBack,
                "systemd reread the restored unit files".to_string(),
            ),
            Err(e) => {
                all_restored = false;
                (EntryStatus::Failed, chain(&e))
            }
        };
        group.log("daemon_reload", "systemd", status, &detail);
    }
    for step in std::mem::take(&mut group.pm2_applied) {
        progress.step_started(Work::Job.bound());
        let outcome = super::pm2_step::run(step.clone()).await;
        progress.step_ended();
        let (status, detail) = match outcome {
            Ok(_) => (
                EntryStatus::RolledBack,
                "started again from the restored ecosystem file".to_string(),
            ),
            Err(e) => (EntryStatus::Failed, e),
        };
        group.log("pm2_apply_ecosystem", &step.app, status, &detail);
    }
    for unit in std::mem::take(&mut group.restarted_units) {
        progress.step_started(Work::Job.bound());
        let outcome = effects
            .systemd
            .run_job(&unit, JobOp::Restart, JOB_TIMEOUT)
            .await;
        progress.step_ended();
        let (status, detail) = match outcome {
            Ok(()) => (
                EntryStatus::RolledBack,
                "restarted on the restored configuration".to_string(),
            ),
            // the unit is logged; as before it may have failed too (a crash loop)
            Err(e) => (EntryStatus::Failed, chain(&e)),
        };
        group.log("restart_unit", &unit, status, &detail);
    }
    if all_restored {
        Undone::Complete
    } else {
        Undone::Incomplete
    }
}

fn kind_of(action: &PlannedAction) -> &'static str {
    match action {
        PlannedAction::Systemd { .. } => "systemd",
        PlannedAction::SetBindHost { .. } => "set_bind_host",
        PlannedAction::RenderSite { .. } => "render_site",
        PlannedAction::SetDirective { .. } => "set_directive",
        PlannedAction::WaitListen { .. } => "wait_listen",
        PlannedAction::NginxTest {} => "nginx_test",
        PlannedAction::NginxReload {} => "nginx_reload",
        PlannedAction::Probe { .. } => "probe",
        PlannedAction::ProbeSite { .. } => "probe_site",
        PlannedAction::SetPoolListen { .. } => "set_pool_listen",
        PlannedAction::Pm2 { .. } => "pm2",
    }
}

fn target_of(action: &PlannedAction) -> String {
    match action {
        PlannedAction::Systemd { unit, .. } => unit.clone(),
        PlannedAction::SetBindHost { edit, .. }
        | PlannedAction::RenderSite { edit, .. }
        | PlannedAction::SetPoolListen { edit, .. }
        | PlannedAction::SetDirective { edit, .. } => edit.path.display().to_string(),
        PlannedAction::WaitListen { address, .. } => address.clone(),
        PlannedAction::NginxTest {} | PlannedAction::NginxReload {} => "nginx".into(),
        PlannedAction::Probe { url, .. } | PlannedAction::ProbeSite { url, .. } => url.clone(),
        PlannedAction::Pm2 { app, .. } => format!("pm2 app {app}"),
    }
}
