//! The daemon's brakes, pure and clocked by the caller: a per-target rate limit, a crash-loop
//! detector (failed heals, relapses right after a heal, the unit's `NRestarts` climbing) that
//! escalates once and then leaves the target alone, and a global circuit breaker.

use crate::config::{CircuitBreaker, CrashLoop, RateLimit};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// Why a target (or, for the breaker, every target) was handed to a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
        }
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

    /// A new incident opened on `target`: a fault within `crash_loop.within` of the last heal
    /// is a relapse and counts as a failure.
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

    /// The target looks healthy; an escalated target is released after a whole `within` of it.
    pub fn healthy(&mut self, target: &str, now: Instant) -> bool {
        let within = self.crash.within;
        let Some(state) = self.targets.get_mut(target) else {
            return false;
        };
        let since = *state.healthy_since.get_or_insert(now);
        if state.escalated.is_some() && now.saturating_duration_since(since) >= within {
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

/// A read-only view of one target's brakes, for `nginx-medic status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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

/// A read-only view of the global circuit breaker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
