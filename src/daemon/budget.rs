//! The daemon's brakes, pure and clocked by the caller: a per-target rate limit, a crash-loop
//! detector (failed heals, relapses right after a heal, the unit's `NRestarts` climbing) that
//! escalates once and then leaves the target alone, and a global circuit breaker.
//!
//! They survive a restart: at start they are rebuilt from the end of the audit journal
//! ([`Budget::restore`]): each `heal_begin` is a remediation, a `heal_end` that is not `ok` (or a
//! `heal_begin` without one: the process died mid-heal) a failure, an `ok` one the last heal,
//! and an `escalate` line within its window an escalation still in force. Paths of
//! transactions that recovery escalated are held too: plans that edit them are only reported.

use crate::apply::execute::{ENVIRONMENT, HEAL_BEGIN, HEAL_END};
use crate::apply::journal::{EntryStatus, Journal, JournalEntry};
use crate::config::{CircuitBreaker, CrashLoop, RateLimit};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How much of the journal's end is read at start to rebuild the brakes.
pub const JOURNAL_WINDOW: u64 = 4 << 20;
/// Journal kind of an escalation line (its detail starts with the reason's name and `: `).
pub const ESCALATE: &str = "escalate";

/// Why a target (or, for the breaker, every target) was handed to a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscalationReason {
    /// Heals failed, or the fault came back right after them, too often.
    CrashLoop,
    /// systemd restarted the unit by itself too often (`NRestarts` climbing).
    UnitRestarts,
    /// The target used up its remediations for the window.
    RateLimited,
    /// Too many heals failed over all targets: the global breaker opened.
    CircuitOpen,
    /// nginx-medic's own environment (its sandbox, a full disk, its file limit) refused the
    /// heal: not the backend's fault, so neither a crash loop nor a failure for the breaker.
    OwnEnvironment,
    /// A heal failed and its change could not all be put back: the host is in a state nothing
    /// verified, which a person has to look at.
    RollbackIncomplete,
}

impl EscalationReason {
    /// The snake_case name used in logs, metrics and hook documents.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CrashLoop => "crash_loop",
            Self::UnitRestarts => "unit_restarts",
            Self::RateLimited => "rate_limited",
            Self::CircuitOpen => "circuit_open",
            Self::OwnEnvironment => "own_environment",
            Self::RollbackIncomplete => "rollback_incomplete",
        }
    }
}

/// An escalation to report (log, journal, hooks), exactly once per cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escalation {
    pub reason: EscalationReason,
    pub detail: String,
}

/// What may be done about a conclusive finding right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead; the action is counted.
    Act,
    /// The target is escalated: nothing is done until it has been healthy for a while.
    LeaveAlone,
    /// The target's rate limit is spent; `escalate` is set the first time in a row.
    RateLimited { escalate: Option<Escalation> },
    /// The global breaker is open; `escalate` is set when it has just opened.
    BreakerOpen { escalate: Option<Escalation> },
}

#[derive(Debug, Default)]
struct TargetState {
    actions: VecDeque<Instant>,
    failures: VecDeque<Instant>,
    restarts: VecDeque<(Instant, u32)>,
    last_heal: Option<Instant>,
    escalated: Option<EscalationReason>,
    healthy_since: Option<Instant>,
    throttled: bool,
}

/// The brakes of every target, and the global breaker.
#[derive(Debug)]
pub struct Budget {
    rate: RateLimit,
    crash: CrashLoop,
    breaker: CircuitBreaker,
    targets: BTreeMap<String, TargetState>,
    failures: VecDeque<Instant>,
    breaker_open: bool,
    /// Files of transactions recovery escalated, with the transaction.
    held_paths: BTreeMap<PathBuf, String>,
}

fn prune(times: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while times
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= window)
    {
        times.pop_front();
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Budget {
    /// Empty brakes with these limits.
    pub fn new(rate: RateLimit, crash: CrashLoop, breaker: CircuitBreaker) -> Self {
        Self {
            rate,
            crash,
            breaker,
            targets: BTreeMap::new(),
            failures: VecDeque::new(),
            breaker_open: false,
            held_paths: BTreeMap::new(),
        }
    }

    /// At start: the brakes as the end of the journal in `state_dir` leaves them, and the paths
    /// recovery holds. An escalation that was due but not recorded (the process died first) is
    /// logged and recorded now.
    pub fn restore(&mut self, state_dir: &Path, held: &BTreeMap<PathBuf, String>) {
        self.held_paths.clone_from(held);
        let recent = match Journal::read_recent(state_dir, JOURNAL_WINDOW) {
            Ok(recent) => recent,
            Err(e) => {
                tracing::error!(error = %crate::error_text::chain(&e), "cannot read the audit journal: the brakes start empty");
                return;
            }
        };
        if recent.malformed > 0 {
            tracing::warn!(
                lines = recent.malformed,
                "lines of the audit journal that are not entries were left out"
            );
        }
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let due = self.rebuild(&recent.entries, Instant::now(), wall);
        let escalated: Vec<&str> = self.escalated().collect();
        tracing::info!(
            entries = recent.entries.len(),
            escalated = %escalated.join(", "),
            "brakes rebuilt from the audit journal"
        );
        for (target, e) in due {
            tracing::error!(target = %target, reason = e.reason.as_str(), detail = %e.detail, "escalated (rebuilt from the audit journal)");
            let entry = JournalEntry::now(
                "brakes",
                1,
                ESCALATE,
                &target,
                EntryStatus::Skipped,
                format!("{}: {}", e.reason.as_str(), e.detail),
            );
            if let Err(err) = Journal::open(state_dir).and_then(|mut j| j.append(&entry)) {
                tracing::error!(error = %err, "cannot write the audit journal");
            }
        }
    }

    /// The brakes as `entries` (the journal's end, oldest first) leave them, with `now` and
    /// `wall` (Unix seconds) the same moment; returns the escalations that were due but are not
    /// in the journal.
    pub fn rebuild(
        &mut self,
        entries: &[JournalEntry],
        now: Instant,
        wall: f64,
    ) -> Vec<(String, Escalation)> {
        let (rate, crash, breaker) = (self.rate, self.crash, self.breaker);
        // A line from the future (the clock was set back) counts as now.
        let at = |ts: f64| {
            let age = Duration::from_secs_f64((wall - ts).clamp(0.0, 1e9));
            now.checked_sub(age).map(|t| (t, age))
        };
        let mut open: BTreeMap<&str, (&str, Instant, Duration)> = BTreeMap::new();
        let mut failed: Vec<(&str, Instant, Duration)> = Vec::new();
        for e in entries {
            let Some((t, age)) = at(e.ts) else { continue };
            match e.kind.as_str() {
                HEAL_BEGIN if !e.target.is_empty() => {
                    if age < rate.per {
                        self.target(&e.target).actions.push_back(t);
                    }
                    open.insert(&e.txn, (&e.target, t, age));
                }
                HEAL_END if !e.target.is_empty() => {
                    open.remove(e.txn.as_str());
                    match e.status {
                        EntryStatus::Ok => self.target(&e.target).last_heal = Some(t),
                        _ if e.detail.starts_with(ENVIRONMENT) => {
                            if age < crash.within {
                                let state = self.target(&e.target);
                                state
                                    .escalated
                                    .get_or_insert(EscalationReason::OwnEnvironment);
                            }
                        }
                        _ => failed.push((&e.target, t, age)),
                    }
                }
                ESCALATE => {
                    let reason = e.detail.split(':').next().unwrap_or_default();
                    match reason {
                        "crash_loop"
                        | "unit_restarts"
                        | "own_environment"
                        | "rollback_incomplete"
                            if age < crash.within =>
                        {
                            let reason = match reason {
                                "crash_loop" => EscalationReason::CrashLoop,
                                "unit_restarts" => EscalationReason::UnitRestarts,
                                "rollback_incomplete" => EscalationReason::RollbackIncomplete,
                                _ => EscalationReason::OwnEnvironment,
                            };
                            self.target(&e.target).escalated.get_or_insert(reason);
                        }
                        "rate_limited" if age < rate.per => self.target(&e.target).throttled = true,
                        "circuit_open" if age < breaker.per => self.breaker_open = true,
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        // a heal begun and never ended: the process died in it
        failed.extend(open.into_values());
        failed.sort_by_key(|(_, t, _)| *t);
        let mut due = Vec::new();
        for (target, t, age) in failed {
            if age < breaker.per {
                self.failures.push_back(t);
            }
            if age >= crash.within {
                continue;
            }
            let state = self.target(target);
            state.failures.push_back(t);
            let n = count(state.failures.len());
            if n >= crash.max_failures && state.escalated.is_none() {
                state.escalated = Some(EscalationReason::CrashLoop);
                due.push((
                    target.to_string(),
                    Escalation {
                        reason: EscalationReason::CrashLoop,
                        detail: format!(
                            "{n} failed or interrupted heals within {} s before this start; the target is left alone",
                            crash.within.as_secs()
                        ),
                    },
                ));
            }
        }
        due
    }

    /// The first file these actions would edit that recovery holds, with its transaction.
    pub fn held_path<'a>(
        &self,
        mut actions: impl Iterator<Item = &'a crate::engine::plan::PlannedAction>,
    ) -> Option<(&Path, &str)> {
        actions.find_map(|a| {
            let edit = a.edit()?;
            self.held_paths
                .get_key_value(&edit.path)
                .map(|(p, t)| (p.as_path(), t.as_str()))
        })
    }

    /// New limits (after a reload); what was counted so far is kept.
    pub fn set_limits(&mut self, rate: RateLimit, crash: CrashLoop, breaker: CircuitBreaker) {
        self.rate = rate;
        self.crash = crash;
        self.breaker = breaker;
    }

    fn target(&mut self, target: &str) -> &mut TargetState {
        self.targets.entry(target.to_string()).or_default()
    }

    /// Whether the target is escalated and left alone.
    pub fn is_escalated(&self, target: &str) -> bool {
        self.targets
            .get(target)
            .is_some_and(|t| t.escalated.is_some())
    }

    /// The escalated targets.
    pub fn escalated(&self) -> impl Iterator<Item = &str> {
        self.targets
            .iter()
            .filter(|(_, t)| t.escalated.is_some())
            .map(|(k, _)| k.as_str())
    }

    /// A new incident opened on `target`: the healthy time an escalated target is released
    /// after starts again.
    pub fn fault_opened(&mut self, target: &str) {
        if let Some(state) = self.targets.get_mut(target) {
            state.healthy_since = None;
        }
    }

    /// An incident on `target` is about to be acted on: a fault within `crash_loop.within` of
    /// the last heal is a relapse and counts as a failure.
    pub fn fault_seen(&mut self, target: &str, now: Instant) -> Option<Escalation> {
        let within = self.crash.within;
        let state = self.target(target);
        state.healthy_since = None;
        let relapse = state
            .last_heal
            .is_some_and(|t| now.saturating_duration_since(t) < within);
        if !relapse {
            return None;
        }
        let since = state
            .last_heal
            .map_or(0, |t| now.saturating_duration_since(t).as_millis());
        self.failure(
            target,
            now,
            format!("the fault came back {since} ms after a heal"),
        )
    }

    /// The target's unit reports `n_restarts` (systemd's own automatic restarts).
    pub fn unit_restarts(
        &mut self,
        target: &str,
        now: Instant,
        n_restarts: u32,
    ) -> Option<Escalation> {
        let (within, max) = (self.crash.within, self.crash.max_unit_restarts);
        let state = self.target(target);
        while state
            .restarts
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= within)
        {
            state.restarts.pop_front();
        }
        state.restarts.push_back((now, n_restarts));
        let oldest = state.restarts.front().map_or(n_restarts, |(_, n)| *n);
        let climbed = n_restarts.saturating_sub(oldest);
        if climbed >= max && state.escalated.is_none() {
            state.escalated = Some(EscalationReason::UnitRestarts);
            return Some(Escalation {
                reason: EscalationReason::UnitRestarts,
                detail: format!(
                    "systemd restarted the unit {climbed} times within {} s (NRestarts={n_restarts})",
                    within.as_secs()
                ),
            });
        }
        None
    }

    /// The target looks healthy; an escalated target is released after a whole `within` of it
    /// (not one whose rollback was incomplete: that waits for a person, see
    /// [`Budget::rollback_incomplete`]).
    pub fn healthy(&mut self, target: &str, now: Instant) -> bool {
        let within = self.crash.within;
        let Some(state) = self.targets.get_mut(target) else {
            return false;
        };
        let since = *state.healthy_since.get_or_insert(now);
        let releasable = !matches!(
            state.escalated,
            None | Some(EscalationReason::RollbackIncomplete)
        );
        if releasable && now.saturating_duration_since(since) >= within {
            state.escalated = None;
            state.failures.clear();
            return true;
        }
        false
    }

    /// Whether a remediation of `target` may run now; `Act` counts it.
    pub fn decide(&mut self, target: &str, now: Instant) -> Decision {
        if self.is_escalated(target) {
            return Decision::LeaveAlone;
        }
        prune(&mut self.failures, now, self.breaker.per);
        if count(self.failures.len()) >= self.breaker.max_failures {
            let escalate = (!self.breaker_open).then(|| Escalation {
                reason: EscalationReason::CircuitOpen,
                detail: format!(
                    "{} heals failed within {} s over all targets; nothing is done until the window clears",
                    self.failures.len(),
                    self.breaker.per.as_secs()
                ),
            });
            self.breaker_open = true;
            return Decision::BreakerOpen { escalate };
        }
        self.breaker_open = false;
        let rate = self.rate;
        let state = self.target(target);
        prune(&mut state.actions, now, rate.per);
        if count(state.actions.len()) >= rate.max_actions {
            let escalate = (!state.throttled).then(|| Escalation {
                reason: EscalationReason::RateLimited,
                detail: format!(
                    "{} remediations within {} s; the next is allowed when the window slides",
                    state.actions.len(),
                    rate.per.as_secs()
                ),
            });
            state.throttled = true;
            return Decision::RateLimited { escalate };
        }
        state.throttled = false;
        state.actions.push_back(now);
        Decision::Act
    }

    /// A remediation ended: healed, or failed (counted towards the crash loop and the breaker).
    pub fn outcome(&mut self, target: &str, now: Instant, healed: bool) -> Option<Escalation> {
        if healed {
            self.target(target).last_heal = Some(now);
            return None;
        }
        self.failure(target, now, "the heal did not verify".into())
    }

    /// A remediation failed because nginx-medic's own environment refused it (`what` says how):
    /// the target is escalated once and left alone until it has been healthy for a window (or
    /// the daemon restarts with a wider sandbox), but nothing counts towards its crash loop or
    /// the global breaker, so other targets are still healed.
    pub fn environment_refused(&mut self, target: &str, what: &str) -> Option<Escalation> {
        let state = self.target(target);
        if state.escalated.is_some() {
            return None;
        }
        state.escalated = Some(EscalationReason::OwnEnvironment);
        Some(Escalation {
            reason: EscalationReason::OwnEnvironment,
            detail: format!(
                "nginx-medic's own environment refused the heal: {what}; the target is left alone"
            ),
        })
    }

    /// A failed heal's change could not all be put back (`what` says what was left): the
    /// target is escalated at once and left alone, whatever the crash-loop count says, and
    /// looking healthy does not release it: a restart of nginx-medic does, after a person has
    /// looked (at start, the transaction is rolled back or left to the person).
    pub fn rollback_incomplete(&mut self, target: &str, what: &str) -> Option<Escalation> {
        let state = self.target(target);
        if state.escalated == Some(EscalationReason::RollbackIncomplete) {
            return None;
        }
        state.escalated = Some(EscalationReason::RollbackIncomplete);
        Some(Escalation {
            reason: EscalationReason::RollbackIncomplete,
            detail: format!(
                "the failed heal could not be undone in full ({what}); the target is left alone until nginx-medic is restarted"
            ),
        })
    }

    fn failure(&mut self, target: &str, now: Instant, what: String) -> Option<Escalation> {
        self.failures.push_back(now);
        let crash = self.crash;
        let state = self.target(target);
        prune(&mut state.failures, now, crash.within);
        state.failures.push_back(now);
        let n = count(state.failures.len());
        if n >= crash.max_failures && state.escalated.is_none() {
            state.escalated = Some(EscalationReason::CrashLoop);
            return Some(Escalation {
                reason: EscalationReason::CrashLoop,
                detail: format!(
                    "{n} failed heals or relapses within {} s (last: {what}); the target is left alone",
                    crash.within.as_secs()
                ),
            });
        }
        None
    }
}

/// A read-only view of one target's brakes, for `nginx-medic status` (also as the status file
/// holds it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Brakes {
    /// Remediations within the rate limit's window, and the limit.
    pub actions: u32,
    pub max_actions: u32,
    pub rate_per_seconds: u64,
    /// Failed heals and relapses within the crash loop's window, and the limit.
    pub failures: u32,
    pub max_failures: u32,
    pub crash_within_seconds: u64,
    pub rate_limited: bool,
    pub escalated: Option<EscalationReason>,
}

/// A read-only view of the global circuit breaker (also as the status file holds it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Breaker {
    pub open: bool,
    pub failures: u32,
    pub max_failures: u32,
    pub per_seconds: u64,
}

fn within(times: &VecDeque<Instant>, now: Instant, window: Duration) -> u32 {
    count(
        times
            .iter()
            .filter(|t| now.saturating_duration_since(**t) < window)
            .count(),
    )
}

impl Budget {
    /// The brakes of `target` at `now` (nothing is counted or pruned).
    pub fn brakes(&self, target: &str, now: Instant) -> Brakes {
        let state = self.targets.get(target);
        Brakes {
            actions: state.map_or(0, |s| within(&s.actions, now, self.rate.per)),
            max_actions: self.rate.max_actions,
            rate_per_seconds: self.rate.per.as_secs(),
            failures: state.map_or(0, |s| within(&s.failures, now, self.crash.within)),
            max_failures: self.crash.max_failures,
            crash_within_seconds: self.crash.within.as_secs(),
            rate_limited: state.is_some_and(|s| s.throttled),
            escalated: state.and_then(|s| s.escalated),
        }
    }

    /// The global breaker at `now`.
    pub fn breaker(&self, now: Instant) -> Breaker {
        Breaker {
            open: self.breaker_open,
            failures: within(&self.failures, now, self.breaker.per),
            max_failures: self.breaker.max_failures,
            per_seconds: self.breaker.per.as_secs(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::journal::{EntryStatus, Journal, JournalEntry};

    fn budget() -> Budget {
        Budget::new(
            RateLimit {
                max_actions: 3,
                per: Duration::from_secs(600),
            },
            CrashLoop {
                max_failures: 2,
                within: Duration::from_secs(60),
                max_unit_restarts: 3,
            },
            CircuitBreaker {
                max_failures: 3,
                per: Duration::from_secs(600),
            },
        )
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn own_environment_failures_leave_only_that_target_alone() {
        let mut b = budget();
        let t0 = Instant::now();
        for i in 0..5 {
            let name = format!("t{i}");
            assert_eq!(b.decide(&name, t0), Decision::Act);
            let e = b.environment_refused(&name, "read-only file system");
            assert_eq!(e.map(|e| e.reason), Some(EscalationReason::OwnEnvironment));
            assert_eq!(
                b.environment_refused(&name, "again"),
                None,
                "escalated once"
            );
            assert_eq!(b.decide(&name, t0 + S), Decision::LeaveAlone);
        }
        // five refusals, breaker at three: still closed for a healthy neighbour
        assert_eq!(b.decide("other", t0 + S), Decision::Act);
    }

    #[test]
    fn an_incomplete_rollback_escalates_at_once_and_stays_when_healthy() {
        let mut b = budget();
        let t0 = Instant::now();
        assert_eq!(b.decide("a", t0), Decision::Act);
        let e = b.rollback_incomplete("a", "cannot restore /etc/default/api");
        assert_eq!(
            e.map(|e| e.reason),
            Some(EscalationReason::RollbackIncomplete)
        );
        assert_eq!(b.rollback_incomplete("a", "again"), None, "escalated once");
        for i in 0..200 {
            b.healthy("a", t0 + S * i);
        }
        assert_eq!(
            b.decide("a", t0 + S * 200),
            Decision::LeaveAlone,
            "healthy for longer than `within`, still left to a person"
        );
        assert_eq!(b.decide("b", t0 + S * 200), Decision::Act);
    }

    #[test]
    fn rate_limit_counts_per_target_and_escalates_once() {
        let mut b = budget();
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(b.decide("a", t0 + S * i), Decision::Act);
            assert_eq!(b.outcome("a", t0 + S * i, true), None);
        }
        assert_eq!(
            b.decide("b", t0),
            Decision::Act,
            "another target has its own"
        );
        let Decision::RateLimited { escalate: Some(e) } = b.decide("a", t0 + S * 4) else {
            panic!("the fourth is rate limited");
        };
        assert_eq!(e.reason, EscalationReason::RateLimited);
        assert_eq!(
            b.decide("a", t0 + S * 5),
            Decision::RateLimited { escalate: None },
            "escalated once per throttled period"
        );
        assert_eq!(
            b.decide("a", t0 + S * 601),
            Decision::Act,
            "the window slid"
        );
    }

    #[test]
    fn failed_heals_escalate_once_then_leave_alone() {
        let mut b = budget();
        let t0 = Instant::now();
        assert_eq!(b.decide("a", t0), Decision::Act);
        assert_eq!(b.outcome("a", t0, false), None);
        assert_eq!(b.decide("a", t0 + S), Decision::Act);
        let e = b.outcome("a", t0 + S, false).expect("escalation");
        assert_eq!(e.reason, EscalationReason::CrashLoop);
        assert!(
            e.detail
                .starts_with("2 failed heals or relapses within 60 s"),
            "{}",
            e.detail
        );
        assert!(b.is_escalated("a"));
        assert_eq!(b.decide("a", t0 + S * 2), Decision::LeaveAlone);
        assert_eq!(b.fault_seen("a", t0 + S * 2), None, "never twice");
        // released only after a whole window of health
        assert!(!b.healthy("a", t0 + S * 3));
        assert!(!b.healthy("a", t0 + S * 30));
        assert!(b.healthy("a", t0 + S * 63));
        assert_eq!(b.decide("a", t0 + S * 64), Decision::Act);
    }

    #[test]
    fn relapse_right_after_a_heal_counts_as_a_failure() {
        let mut b = budget();
        let t0 = Instant::now();
        assert_eq!(b.fault_seen("a", t0), None, "no heal yet: not a relapse");
        b.decide("a", t0);
        b.outcome("a", t0, true);
        assert_eq!(b.fault_seen("a", t0 + S * 2), None, "first relapse");
        b.decide("a", t0 + S * 2);
        b.outcome("a", t0 + S * 2, true);
        let e = b
            .fault_seen("a", t0 + S * 4)
            .expect("second relapse escalates");
        assert_eq!(e.reason, EscalationReason::CrashLoop);
        // a fault long after the last heal is no relapse
        let mut b = budget();
        b.outcome("c", t0, true);
        assert_eq!(b.fault_seen("c", t0 + S * 120), None);
        assert_eq!(b.fault_seen("c", t0 + S * 240), None);
    }

    #[test]
    fn climbing_n_restarts_escalates() {
        let mut b = budget();
        let t0 = Instant::now();
        assert_eq!(b.unit_restarts("a", t0, 5), None);
        assert_eq!(b.unit_restarts("a", t0 + S, 7), None);
        let e = b
            .unit_restarts("a", t0 + S * 2, 8)
            .expect("three more within the window");
        assert_eq!(e.reason, EscalationReason::UnitRestarts);
        assert_eq!(b.unit_restarts("a", t0 + S * 3, 20), None, "once");
        // slow climbing is fine
        assert_eq!(b.unit_restarts("b", t0, 1), None);
        assert_eq!(b.unit_restarts("b", t0 + S * 61, 3), None);
        assert_eq!(b.unit_restarts("b", t0 + S * 122, 5), None);
    }

    fn line(
        ts: f64,
        txn: &str,
        kind: &str,
        target: &str,
        status: EntryStatus,
        detail: &str,
    ) -> JournalEntry {
        JournalEntry {
            ts,
            ..JournalEntry::now(txn, 1, kind, target, status, detail)
        }
    }

    const WALL: f64 = 1_800_000_000.0;

    #[test]
    fn the_rate_limit_survives_a_restart() {
        // three heals of `a` in the last 10 minutes, one of `b` long ago
        let journal = vec![
            line(WALL - 3000.0, "t0", HEAL_BEGIN, "b", EntryStatus::Ok, ""),
            line(
                WALL - 3000.0,
                "t0",
                HEAL_END,
                "b",
                EntryStatus::Ok,
                "healed",
            ),
            line(WALL - 500.0, "t1", HEAL_BEGIN, "a", EntryStatus::Ok, ""),
            line(WALL - 499.0, "t1", HEAL_END, "a", EntryStatus::Ok, "healed"),
            line(WALL - 300.0, "t2", HEAL_BEGIN, "a", EntryStatus::Ok, ""),
            line(WALL - 299.0, "t2", HEAL_END, "a", EntryStatus::Ok, "healed"),
            line(WALL - 100.0, "t3", HEAL_BEGIN, "a", EntryStatus::Ok, ""),
            line(WALL - 99.0, "t3", HEAL_END, "a", EntryStatus::Ok, "healed"),
        ];
        let t0 = Instant::now() + S * 3600;
        let mut b = budget();
        assert!(b.rebuild(&journal, t0, WALL).is_empty());
        assert!(
            matches!(
                b.decide("a", t0),
                Decision::RateLimited { escalate: Some(_) }
            ),
            "a fresh process still sees three heals within 600 s"
        );
        assert_eq!(
            b.decide("b", t0),
            Decision::Act,
            "b's heal is out of the window"
        );
        // the oldest of a's slides out 500 s after it: 100 s from now
        assert_eq!(b.decide("a", t0 + S * 101), Decision::Act);
        // and the empty brakes of the old code would have let `a` act at once
        assert_eq!(budget().decide("a", t0), Decision::Act);
    }

    #[test]
    fn heals_cut_short_by_a_crash_count_as_failures_and_escalate() {
        // the daemon died in two heals of `a` (begun, never ended): a crash loop of its own
        let journal = vec![
            line(WALL - 20.0, "t1", HEAL_BEGIN, "a", EntryStatus::Ok, ""),
            line(WALL - 10.0, "t2", HEAL_BEGIN, "a", EntryStatus::Ok, ""),
        ];
        let t0 = Instant::now() + S * 3600;
        let mut b = budget();
        let due = b.rebuild(&journal, t0, WALL);
        assert_eq!(due.len(), 1, "{due:?}");
        assert_eq!(due[0].0, "a");
        assert_eq!(due[0].1.reason, EscalationReason::CrashLoop);
        assert_eq!(b.decide("a", t0), Decision::LeaveAlone);
        // released only after a whole window of health, as before a restart
        assert!(!b.healthy("a", t0 + S));
        assert!(b.healthy("a", t0 + S * 62));
        assert_eq!(b.decide("a", t0 + S * 63), Decision::Act);
    }

    #[test]
    fn escalations_and_the_breaker_are_rebuilt_within_their_windows() {
        let journal = vec![
            line(
                WALL - 30.0,
                "d",
                ESCALATE,
                "a",
                EntryStatus::Skipped,
                "crash_loop: 2 failed heals",
            ),
            line(
                WALL - 300.0,
                "d",
                ESCALATE,
                "old",
                EntryStatus::Skipped,
                "crash_loop: long ago",
            ),
            line(WALL - 5.0, "t1", HEAL_BEGIN, "c", EntryStatus::Ok, ""),
            line(
                WALL - 4.0,
                "t1",
                HEAL_END,
                "c",
                EntryStatus::Failed,
                "own environment: no space left on device",
            ),
            line(WALL - 200.0, "t2", HEAL_BEGIN, "x", EntryStatus::Ok, ""),
            line(
                WALL - 199.0,
                "t2",
                HEAL_END,
                "x",
                EntryStatus::RolledBack,
                "rolled back",
            ),
            line(WALL - 150.0, "t3", HEAL_BEGIN, "y", EntryStatus::Ok, ""),
            line(
                WALL - 149.0,
                "t3",
                HEAL_END,
                "y",
                EntryStatus::Failed,
                "failed",
            ),
            line(WALL - 100.0, "t4", HEAL_BEGIN, "z", EntryStatus::Ok, ""),
        ];
        let t0 = Instant::now() + S * 3600;
        let mut b = budget();
        let due = b.rebuild(&journal, t0, WALL);
        assert!(due.is_empty(), "x, y, z each failed once: {due:?}");
        assert!(b.is_escalated("a"));
        assert!(!b.is_escalated("old"), "out of the crash-loop window");
        assert!(b.is_escalated("c"), "own environment");
        // three failures over all targets within 600 s: the breaker is open
        assert!(matches!(
            b.decide("other", t0),
            Decision::BreakerOpen { escalate: Some(_) }
        ));
        // own-environment failures never count towards the breaker
        let mut b = budget();
        b.rebuild(&journal[2..4], t0, WALL);
        assert_eq!(b.decide("other", t0), Decision::Act);
    }

    #[test]
    fn a_line_from_the_future_counts_as_now() {
        let journal: Vec<JournalEntry> = ["t1", "t2", "t3"]
            .iter()
            .flat_map(|txn| {
                [
                    line(WALL + 5000.0, txn, HEAL_BEGIN, "a", EntryStatus::Ok, ""),
                    line(WALL + 5000.0, txn, HEAL_END, "a", EntryStatus::Ok, "healed"),
                ]
            })
            .collect();
        let t0 = Instant::now() + S * 3600;
        let mut b = budget();
        b.rebuild(&journal, t0, WALL);
        assert!(matches!(b.decide("a", t0), Decision::RateLimited { .. }));
        assert_eq!(
            b.decide("a", t0 + S * 601),
            Decision::Act,
            "and slides out like now"
        );
    }

    #[test]
    fn restore_reads_the_journal_of_the_state_dir_and_holds_paths() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        for txn in ["t1", "t2", "t3"] {
            j.append(&JournalEntry::now(
                txn,
                1,
                HEAL_BEGIN,
                "a",
                EntryStatus::Ok,
                "",
            ))
            .unwrap();
            j.append(&JournalEntry::now(
                txn,
                2,
                HEAL_END,
                "a",
                EntryStatus::Ok,
                "healed",
            ))
            .unwrap();
        }
        let held = BTreeMap::from([(PathBuf::from("/etc/default/api"), "t9".to_string())]);
        let mut b = budget();
        b.restore(dir.path(), &held);
        assert!(matches!(
            b.decide("a", Instant::now()),
            Decision::RateLimited { .. }
        ));
        let edit = crate::engine::plan::PlannedAction::SetDirective {
            edit: crate::engine::plan::FileEdit {
                path: PathBuf::from("/etc/default/api"),
                before_hash: None,
                after: String::new(),
            },
            directive: String::new(),
            previous: None,
            location: "/".into(),
        };
        assert_eq!(
            b.held_path(std::iter::once(&edit)),
            Some((Path::new("/etc/default/api"), "t9"))
        );
    }

    #[test]
    fn breaker_opens_over_all_targets() {
        let mut b = budget();
        let t0 = Instant::now();
        for t in ["a", "b", "c"] {
            assert_eq!(b.decide(t, t0), Decision::Act);
            b.outcome(t, t0, false);
        }
        let Decision::BreakerOpen { escalate: Some(e) } = b.decide("d", t0 + S) else {
            panic!("the breaker is open");
        };
        assert_eq!(e.reason, EscalationReason::CircuitOpen);
        assert_eq!(
            b.decide("e", t0 + S),
            Decision::BreakerOpen { escalate: None }
        );
        assert_eq!(b.decide("d", t0 + S * 601), Decision::Act, "closed again");
    }
}
