//! The daemon as a reconciler, pure and clocked by the caller: one state per target (a dialled
//! upstream address: healthy → incident → healing → verified, or left alone), what each trigger
//! touches, and when the next evaluation is due.
//!
//! - A trigger names what changed (a unit, the address a log line dialled, a probed site). It
//!   marks the targets it touches pending (one flag each, however many triggers come); a
//!   trigger that touches no known target marks the whole host pending.
//! - **Storm rule**: an error-log line about a target with an open incident, of a class
//!   already seen during it, and a failed probe of a site whose every target has an open
//!   incident, change nothing: they are absorbed (counted), not evaluated. An open incident is
//!   evaluated again at its requeue time, or when something else about it changes (its unit's
//!   state, a new class of line, a probe that answers again).
//! - **Spacing**: evaluations of one target are at least `spacing` apart; the first trigger
//!   after a quiet spell is evaluated at once (the leading edge). A watched unit that settled
//!   (stopped, failed, came up) is evaluated at once too.
//!
//! - **Scope**: an evaluation asked for only by triggers about known targets that have a unit
//!   (their unit's signals, lines that dialled them, probes of their sites) covers only those
//!   units' targets (`take_due_scoped` → [`Scope::Units`]): the daemon builds its snapshot on
//!   the last one, reading again only what can have changed. Anything else (a host-wide
//!   trigger, a requeue time, a target with no unit, a unit that settles after a transition)
//!   is the whole host, from a full snapshot.
//!
//! The states are then set from what the evaluation concluded per target (`evaluated`, or
//! `evaluated_some` for a scoped one, which keeps the targets it did not cover).

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// An open incident the daemon can still act on is evaluated again this long after its last
/// evaluation, also when nothing new is heard about it (retries of a failed heal).
pub const LEFT_ALONE_REQUEUE: Duration = Duration::from_secs(30);

/// At most this many distinct lines about no address are remembered (a bound on memory; one
/// past it is always evaluated).
const MAX_HOST_HEARD: usize = 256;

/// Where a target stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// No finding at the last evaluation.
    Healthy,
    /// A finding the daemon means to act on (a heal is due, or failed and is retried).
    Incident,
    /// A heal of it is running now.
    Healing,
    /// Healed and verified by the daemon; healthy since.
    Verified,
    /// A finding the daemon does not act on now (see [`LeftAlone`]).
    LeftAlone,
}

/// Why an open incident is left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeftAlone {
    /// `daemon.mode: observe`: the plan was reported.
    Observe,
    /// The finding is not conclusive enough to act on.
    Inconclusive,
    /// A pause or `heal: false` holds it.
    Held,
    /// Escalated (crash loop, unit restarts, own environment): a person is needed.
    Escalated,
    /// The target's rate limit is spent.
    RateLimited,
    /// The global circuit breaker is open.
    BreakerOpen,
    /// The finding has no step to take (report-only).
    NoPlan,
}

impl LeftAlone {
    /// As `nginx-medic status` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Observe => "observe mode",
            Self::Inconclusive => "inconclusive",
            Self::Held => "paused or heal: false",
            Self::Escalated => "escalated",
            Self::RateLimited => "rate limited",
            Self::BreakerOpen => "circuit breaker open",
            Self::NoPlan => "report only",
        }
    }
}

/// What one evaluation concluded about one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No finding.
    Healthy,
    /// Healed and verified.
    Healed,
    /// A finding to act on that was not healed this time (the heal failed, rolled back, or
    /// the daemon is stopping).
    Unhealed,
    /// Its unit is in transition: evaluated again after the spacing.
    Settling,
    /// A finding not acted on now.
    LeftAlone(LeftAlone),
}

/// What a trigger touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touch {
    /// An error-log line that dialled `address`, of class `class`.
    Line { address: String, class: String },
    /// A line about no address that can be told (`no live upstreams` names a group, not a
    /// peer); `what` is its class and what it named.
    LineWithoutAddress { what: String },
    /// A watched unit's signal; `settled` when it reached a lasting state.
    Unit { unit: String, settled: bool },
    /// A probe of `site` failed.
    ProbeFailed { site: String },
    /// A probe of `site` answered: news when a target of the site has an open incident.
    ProbeAnswered { site: String },
    /// Something about the whole host (a pause, a reload, a changed file, a retry).
    Everything,
}

/// Whether a trigger asked for an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// Something is pending now.
    Pending,
    /// Nothing new: it costs nothing more.
    Absorbed,
}

/// An evaluation asked for, and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    since: Instant,
    /// Evaluated without the spacing.
    urgent: bool,
    /// The units of the target, when a trigger about it (its unit's signal, a line, a probe)
    /// asked for it.
    units: BTreeSet<String>,
    /// Something else asked for it too (a line, a probe, a retry): only a full snapshot
    /// answers that.
    other: bool,
}

impl Pending {
    fn merge(slot: &mut Option<Pending>, now: Instant, urgent: bool) {
        Self::merge_from(slot, now, urgent, None);
    }

    /// Merges a request; `unit` names the unit whose signal made it, if one did.
    fn merge_from(slot: &mut Option<Pending>, now: Instant, urgent: bool, unit: Option<&str>) {
        let p = slot.get_or_insert_with(|| Pending {
            since: now,
            urgent: false,
            units: BTreeSet::new(),
            other: false,
        });
        p.urgent |= urgent;
        match unit {
            Some(unit) => {
                p.units.insert(unit.to_string());
            }
            None => p.other = true,
        }
    }
}

/// What an evaluation that is due covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The whole host, from a full snapshot.
    Everything,
    /// Only the targets of these units, after their signals: a snapshot that reads again only
    /// what those signals can have changed.
    Units(BTreeSet<String>),
}

/// An evaluation that is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The targets that asked for it (with [`Scope::Units`], exactly the ones evaluated).
    pub targets: Vec<String>,
    pub scope: Scope,
}

/// One target's state and bookkeeping.
#[derive(Debug, Clone)]
pub struct Entry {
    pub site: String,
    pub unit: Option<String>,
    pub state: State,
    pub left_alone: Option<LeftAlone>,
    /// The open incident's cause, while there is one.
    pub cause: Option<String>,
    /// When the state last changed.
    pub since: Instant,
    pub last_evaluated: Option<Instant>,
    /// When an open incident is evaluated again even if nothing is heard about it.
    pub requeue_at: Option<Instant>,
    /// Triggers about it absorbed by the storm rule since the state last changed.
    pub absorbed: u64,
    /// The classes of error-log lines heard during the open incident.
    classes: BTreeSet<String>,
    pending: Option<Pending>,
}

impl Entry {
    fn new(site: String, unit: Option<String>, now: Instant) -> Self {
        Self {
            site,
            unit,
            state: State::Healthy,
            left_alone: None,
            cause: None,
            since: now,
            last_evaluated: None,
            requeue_at: None,
            absorbed: 0,
            classes: BTreeSet::new(),
            pending: None,
        }
    }

    /// An incident is open (a finding was seen and not yet resolved).
    pub fn is_open(&self) -> bool {
        matches!(
            self.state,
            State::Incident | State::Healing | State::LeftAlone
        )
    }

    /// Whether an evaluation was asked for.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    fn set(&mut self, state: State, left_alone: Option<LeftAlone>, now: Instant) {
        if self.state != state || self.left_alone != left_alone {
            self.since = now;
            self.absorbed = 0;
        }
        if !matches!(state, State::Incident | State::Healing | State::LeftAlone) {
            self.classes.clear();
            self.cause = None;
        }
        self.state = state;
        self.left_alone = left_alone;
    }
}

/// What one evaluation saw of one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub address: String,
    pub site: String,
    pub unit: Option<String>,
    /// The finding's cause, when it has one.
    pub cause: Option<String>,
    pub verdict: Verdict,
}

/// Every target's state, and the host-wide pending flag.
#[derive(Debug)]
pub struct Reconciler {
    spacing: Duration,
    /// How soon an open incident the daemon still acts on is evaluated again.
    retry: Duration,
    targets: BTreeMap<String, Entry>,
    /// Something no target accounts for asked for an evaluation.
    everything: Option<Pending>,
    /// Lines about no address heard while an incident was open (at most `MAX_HOST_HEARD`).
    host_heard: BTreeSet<String>,
    last_evaluation: Option<Instant>,
    evaluations: u64,
    absorbed: u64,
}

impl Reconciler {
    /// No target known yet. `spacing` keeps evaluations of a target apart (`daemon.debounce`);
    /// `retry` requeues an open incident the daemon acts on (`daemon.probe_interval`).
    pub fn new(spacing: Duration, retry: Duration) -> Self {
        Self {
            spacing,
            retry,
            targets: BTreeMap::new(),
            everything: None,
            host_heard: BTreeSet::new(),
            last_evaluation: None,
            evaluations: 0,
            absorbed: 0,
        }
    }

    /// New intervals (after a reload).
    pub fn set_intervals(&mut self, spacing: Duration, retry: Duration) {
        self.spacing = spacing;
        self.retry = retry;
    }

    /// The targets, by address.
    pub fn targets(&self) -> &BTreeMap<String, Entry> {
        &self.targets
    }

    /// Evaluations run so far.
    pub fn evaluations(&self) -> u64 {
        self.evaluations
    }

    /// Triggers absorbed by the storm rule so far.
    pub fn absorbed(&self) -> u64 {
        self.absorbed
    }

    /// Hears a trigger at `now`.
    pub fn trigger(&mut self, touch: &Touch, now: Instant) -> Heard {
        let heard = self.hear(touch, now);
        // a probe that answers for a healthy site is no storm: not counted
        if heard == Heard::Absorbed && !matches!(touch, Touch::ProbeAnswered { .. }) {
            self.absorbed += 1;
        }
        heard
    }

    fn hear(&mut self, touch: &Touch, now: Instant) -> Heard {
        match touch {
            Touch::Everything => self.everything(now, false),
            Touch::LineWithoutAddress { what } => {
                // the same line again while an incident is open is no news; a new one asks
                // for the whole host (it cannot be told which target it is about)
                let open = self.targets.values().any(Entry::is_open);
                if open && self.host_heard.contains(what) {
                    return Heard::Absorbed;
                }
                if self.host_heard.len() < MAX_HOST_HEARD {
                    self.host_heard.insert(what.clone());
                }
                self.everything(now, false)
            }
            Touch::Line { address, class } => match self.targets.get_mut(address) {
                Some(e) if e.is_open() && e.classes.contains(class) => {
                    e.absorbed += 1;
                    Heard::Absorbed
                }
                Some(e) => {
                    e.classes.insert(class.clone());
                    Pending::merge_from(&mut e.pending, now, false, e.unit.as_deref());
                    Heard::Pending
                }
                None => self.everything(now, false),
            },
            Touch::Unit { unit, settled } => {
                let mut any = false;
                for e in self
                    .targets
                    .values_mut()
                    .filter(|e| e.unit.as_deref() == Some(unit))
                {
                    Pending::merge_from(&mut e.pending, now, *settled, Some(unit));
                    any = true;
                }
                if any {
                    Heard::Pending
                } else {
                    self.everything(now, *settled)
                }
            }
            Touch::ProbeFailed { site } => {
                let of_site: Vec<&mut Entry> = self
                    .targets
                    .values_mut()
                    .filter(|e| e.site == *site)
                    .collect();
                if of_site.is_empty() {
                    return self.everything(now, false);
                }
                if of_site.iter().all(|e| e.is_open()) {
                    for e in of_site {
                        e.absorbed += 1;
                    }
                    return Heard::Absorbed;
                }
                for e in of_site {
                    Pending::merge_from(&mut e.pending, now, false, e.unit.as_deref());
                }
                Heard::Pending
            }
            Touch::ProbeAnswered { site } => {
                let mut any = false;
                for e in self
                    .targets
                    .values_mut()
                    .filter(|e| e.site == *site && e.is_open())
                {
                    Pending::merge_from(&mut e.pending, now, false, e.unit.as_deref());
                    any = true;
                }
                if any {
                    Heard::Pending
                } else {
                    Heard::Absorbed
                }
            }
        }
    }

    fn everything(&mut self, now: Instant, urgent: bool) -> Heard {
        Pending::merge(&mut self.everything, now, urgent);
        Heard::Pending
    }

    /// When the next evaluation is due: a pending target once its spacing has passed (at once
    /// for the first trigger after a quiet spell, or an urgent one), or an open incident's
    /// requeue time. `None`: nothing is due until a trigger comes.
    pub fn next_due(&self) -> Option<Instant> {
        let spaced = |p: &Pending, last: Option<Instant>| match last {
            _ if p.urgent => p.since,
            Some(last) => p.since.max(last + self.spacing),
            None => p.since,
        };
        let host = self
            .everything
            .as_ref()
            .map(|p| spaced(p, self.last_evaluation));
        let targets = self.targets.values().filter_map(|e| {
            let pending = e.pending.as_ref().map(|p| spaced(p, e.last_evaluated));
            match (pending, e.requeue_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        });
        host.into_iter().chain(targets).min()
    }

    /// Starts an evaluation at `now` if one is due: clears every pending flag (the whole host
    /// is gathered) and returns the addresses that asked for it (empty when the host did).
    pub fn take_due(&mut self, now: Instant) -> Option<Vec<String>> {
        if !self.next_due().is_some_and(|at| at <= now) {
            return None;
        }
        Some(self.take_everything(now))
    }

    /// As [`Reconciler::take_due`], and what the evaluation covers: when only unit signals
    /// made it due (nothing host-wide is pending, no requeue time has come, and each target
    /// due was asked for by its unit's signals alone), only the targets of those units are
    /// evaluated ([`Scope::Units`]): their flags are cleared and the others stay pending.
    /// Anything else is the whole host.
    pub fn take_due_scoped(&mut self, now: Instant) -> Option<Due> {
        let at = self.next_due()?;
        if at > now {
            return None;
        }
        let due_now = |e: &Entry| {
            let pending = e.pending.as_ref().is_some_and(|p| {
                p.urgent
                    || e.last_evaluated
                        .map_or(true, |last| last + self.spacing <= now)
            });
            let requeued = e.requeue_at.is_some_and(|at| at <= now);
            (pending, requeued)
        };
        let mut units: BTreeSet<String> = BTreeSet::new();
        let mut targeted = self.everything.is_none();
        for e in self.targets.values() {
            let (pending, requeued) = due_now(e);
            if requeued {
                targeted = false;
            }
            if let (true, Some(p)) = (pending, &e.pending) {
                targeted &= !p.other && !p.units.is_empty();
                units.extend(p.units.iter().cloned());
            }
        }
        if !targeted || units.is_empty() {
            let targets = self.take_everything(now);
            return Some(Due {
                targets,
                scope: Scope::Everything,
            });
        }
        let mut targets = Vec::new();
        for (address, e) in self.targets.iter_mut() {
            if e.unit.as_ref().is_some_and(|u| units.contains(u)) {
                e.pending = None;
                e.last_evaluated = Some(now);
                targets.push(address.clone());
            }
        }
        self.evaluations += 1;
        Some(Due {
            targets,
            scope: Scope::Units(units),
        })
    }

    fn take_everything(&mut self, now: Instant) -> Vec<String> {
        let asked: Vec<String> = self
            .targets
            .iter()
            .filter(|(_, e)| e.pending.is_some() || e.requeue_at.is_some_and(|at| at <= now))
            .map(|(k, _)| k.clone())
            .collect();
        self.everything = None;
        for e in self.targets.values_mut() {
            e.pending = None;
            e.last_evaluated = Some(now);
        }
        self.last_evaluation = Some(now);
        self.evaluations += 1;
        asked
    }

    /// Asks for an evaluation of the whole host after the spacing (a unit in transition, a
    /// reload).
    pub fn retry_all(&mut self, now: Instant) {
        self.everything(now, false);
    }

    /// A heal of `address` (of `site`, its backend `unit`, for `cause`) starts.
    pub fn healing(
        &mut self,
        address: &str,
        site: &str,
        unit: Option<&str>,
        cause: &str,
        now: Instant,
    ) {
        let e = self
            .targets
            .entry(address.to_string())
            .or_insert_with(|| Entry::new(site.to_string(), unit.map(str::to_string), now));
        e.set(State::Healing, None, now);
        e.cause = Some(cause.to_string());
    }

    /// Sets each target's state from what the evaluation that ended at `now` concluded. Targets the evaluation did not see are forgotten (the configuration no
    /// longer dials them), so memory is bounded by the configuration.
    pub fn evaluated(&mut self, seen: Vec<Seen>, now: Instant) {
        self.conclude(seen, now, false);
    }

    /// As [`Reconciler::evaluated`] after an evaluation of [`Scope::Units`]: the targets it
    /// did not cover are kept as they are.
    pub fn evaluated_some(&mut self, seen: Vec<Seen>, now: Instant) {
        self.conclude(seen, now, true);
    }

    fn conclude(&mut self, seen: Vec<Seen>, now: Instant, partial: bool) {
        let mut next: BTreeMap<String, Entry> = BTreeMap::new();
        for s in seen {
            let mut e = self
                .targets
                .remove(&s.address)
                .unwrap_or_else(|| Entry::new(s.site.clone(), s.unit.clone(), now));
            e.site = s.site;
            e.unit = s.unit;
            match s.verdict {
                Verdict::Healthy => {
                    let state = if e.state == State::Verified {
                        State::Verified
                    } else {
                        State::Healthy
                    };
                    e.set(state, None, now);
                    e.requeue_at = None;
                }
                Verdict::Healed => {
                    e.set(State::Verified, None, now);
                    e.requeue_at = None;
                }
                Verdict::Unhealed => {
                    e.set(State::Incident, None, now);
                    e.requeue_at = Some(now + self.retry);
                }
                Verdict::Settling => {
                    e.set(State::Incident, None, now);
                    e.requeue_at = None;
                    Pending::merge(&mut e.pending, now, false);
                }
                Verdict::LeftAlone(why) => {
                    e.set(State::LeftAlone, Some(why), now);
                    e.requeue_at = Some(now + LEFT_ALONE_REQUEUE.max(self.retry));
                }
            }
            // the classes heard before the incident opened are what opened it: kept
            if e.is_open() {
                e.cause = s.cause.or(e.cause.take());
            }
            next.insert(s.address, e);
        }
        if partial {
            next.append(&mut self.targets);
        }
        self.targets = next;
        if !self.targets.values().any(Entry::is_open) {
            self.host_heard.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const API: &str = "127.0.0.1:8000";
    const WEB: &str = "127.0.0.1:8001";

    fn seen(address: &str, site: &str, unit: &str, verdict: Verdict) -> Seen {
        let cause = (!matches!(verdict, Verdict::Healthy | Verdict::Healed))
            .then(|| "backend-down".to_string());
        Seen {
            address: address.into(),
            site: site.into(),
            unit: Some(unit.into()),
            cause,
            verdict,
        }
    }

    fn line(address: &str, class: &str) -> Touch {
        Touch::Line {
            address: address.into(),
            class: class.into(),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Runs the reconciler on a fake clock: evaluates whenever due, with `verdict` for API.
    struct Clock {
        r: Reconciler,
        now: Instant,
    }

    impl Clock {
        fn new() -> Self {
            let now = Instant::now();
            let mut r = Reconciler::new(ms(300), ms(500));
            r.retry_all(now);
            assert!(r.take_due(now).is_some());
            r.evaluated(
                vec![
                    seen(API, "api", "api.service", Verdict::Healthy),
                    seen(WEB, "web", "web.service", Verdict::Healthy),
                ],
                now,
            );
            Self { r, now }
        }

        /// Advances to `at`, evaluating every time one is due on the way.
        fn run_until(&mut self, at: Instant, verdict: &Verdict) -> u64 {
            let before = self.r.evaluations();
            while let Some(due) = self.r.next_due().filter(|d| *d <= at) {
                self.now = self.now.max(due);
                if self.r.take_due(self.now).is_some() {
                    self.r.evaluated(
                        vec![
                            seen(API, "api", "api.service", verdict.clone()),
                            seen(WEB, "web", "web.service", Verdict::Healthy),
                        ],
                        self.now,
                    );
                }
            }
            self.now = at;
            self.r.evaluations() - before
        }
    }

    #[test]
    fn the_first_trigger_evaluates_at_once_and_a_burst_coalesces_into_one_more() {
        let mut c = Clock::new();
        let t = c.now + Duration::from_secs(1);
        c.now = t;
        assert_eq!(c.r.trigger(&line(API, "refused"), t), Heard::Pending);
        assert_eq!(c.r.next_due(), Some(t), "the leading edge: at once");
        assert!(c.r.take_due(t).is_some());
        c.r.evaluated(vec![seen(API, "api", "api.service", Verdict::Healthy)], t);
        // a burst 100 ms later: one evaluation, 300 ms after the last
        for i in 0..50 {
            c.r.trigger(&line(API, "refused"), t + ms(100 + i));
        }
        assert_eq!(c.r.next_due(), Some(t + ms(300)));
    }

    #[test]
    fn a_settled_unit_is_evaluated_without_the_spacing() {
        let mut c = Clock::new();
        let t = c.now + ms(10);
        let unit = Touch::Unit {
            unit: "api.service".into(),
            settled: true,
        };
        assert_eq!(c.r.trigger(&unit, t), Heard::Pending);
        assert_eq!(c.r.next_due(), Some(t));
        let job = Touch::Unit {
            unit: "api.service".into(),
            settled: false,
        };
        c.run_until(t, &Verdict::Healthy);
        c.r.trigger(&job, t + ms(10));
        assert_eq!(c.r.next_due(), Some(t + ms(300)));
    }

    #[test]
    fn a_trigger_about_an_unknown_target_asks_for_the_whole_host() {
        let mut c = Clock::new();
        let t = c.now + Duration::from_secs(1);
        assert_eq!(
            c.r.trigger(&line("10.0.0.9:80", "refused"), t),
            Heard::Pending
        );
        assert_eq!(c.r.take_due(t), Some(Vec::new()));
    }

    #[test]
    fn a_storm_about_an_open_incident_costs_no_evaluation_until_its_requeue() {
        let mut c = Clock::new();
        let start = c.now + Duration::from_secs(1);
        c.now = start;
        c.r.trigger(&line(API, "refused"), start);
        let left = Verdict::LeftAlone(LeftAlone::Escalated);
        assert_eq!(c.run_until(start, &left), 1);
        assert_eq!(c.r.targets()[API].state, State::LeftAlone);
        // 34,000 lines a second for 30 s, each heard one by one, and a failed probe every 5 s
        let mut absorbed = 0;
        let mut evaluations = 0;
        for i in 0..30 * 34_000u64 {
            let at = start + Duration::from_micros(i * 1_000_000 / 34_000);
            evaluations += c.run_until(at, &left);
            if c.r.trigger(&line(API, "refused"), at) == Heard::Absorbed {
                absorbed += 1;
            }
            if i % (5 * 34_000) == 0 {
                c.r.trigger(&Touch::ProbeFailed { site: "api".into() }, at);
            }
        }
        evaluations += c.run_until(start + Duration::from_secs(30), &left);
        assert_eq!(absorbed, 30 * 34_000);
        // one requeue in 30 s: the storm itself asked for nothing
        assert_eq!(evaluations, 1, "evaluations during the storm");
        assert_eq!(c.r.targets().len(), 2, "memory is bounded by the targets");
        assert!(c.r.targets()[API].classes.len() == 1);
    }

    #[test]
    fn an_open_incident_hears_what_changes() {
        let mut c = Clock::new();
        let t = c.now + Duration::from_secs(1);
        c.r.trigger(&line(API, "refused"), t);
        let observe = Verdict::LeftAlone(LeftAlone::Observe);
        c.run_until(t, &observe);
        let t = t + Duration::from_secs(1);
        assert_eq!(c.r.trigger(&line(API, "refused"), t), Heard::Absorbed);
        // a new class of line, the unit, a probe that answers: each is news
        assert_eq!(c.r.trigger(&line(API, "timed_out"), t), Heard::Pending);
        c.run_until(t, &observe);
        assert_eq!(c.r.trigger(&line(API, "timed_out"), t), Heard::Absorbed);
        let unit = Touch::Unit {
            unit: "api.service".into(),
            settled: true,
        };
        assert_eq!(c.r.trigger(&unit, t), Heard::Pending);
        c.run_until(t, &observe);
        let answered = Touch::ProbeAnswered { site: "api".into() };
        assert_eq!(c.r.trigger(&answered, t), Heard::Pending);
        c.run_until(t + ms(300), &Verdict::Healthy);
        assert_eq!(c.r.targets()[API].state, State::Healthy);
        // healthy: a probe that answers is no news, a line is
        assert_eq!(c.r.trigger(&answered, t + ms(400)), Heard::Absorbed);
        assert_eq!(
            c.r.trigger(&line(API, "refused"), t + ms(400)),
            Heard::Pending
        );
    }

    #[test]
    fn an_incident_to_act_on_is_retried_at_its_requeue_and_settles_after_the_spacing() {
        let mut c = Clock::new();
        let t = c.now + Duration::from_secs(1);
        c.r.trigger(&line(API, "refused"), t);
        c.run_until(t, &Verdict::Unhealed);
        assert_eq!(c.r.targets()[API].state, State::Incident);
        assert_eq!(c.r.targets()[API].requeue_at, Some(t + ms(500)));
        assert_eq!(c.run_until(t + ms(499), &Verdict::Unhealed), 0);
        assert_eq!(c.run_until(t + ms(500), &Verdict::Settling), 1);
        assert_eq!(c.r.next_due(), Some(t + ms(800)), "after the spacing");
        c.run_until(t + ms(800), &Verdict::Healed);
        assert_eq!(c.r.targets()[API].state, State::Verified);
        assert_eq!(c.r.next_due(), None, "nothing is due until a trigger");
        c.r.healing(API, "api", Some("api.service"), "backend-down", t + ms(900));
        assert_eq!(c.r.targets()[API].state, State::Healing);
    }

    #[test]
    fn a_line_about_no_address_is_evaluated_once_per_open_incident() {
        let mut c = Clock::new();
        let t = c.now + Duration::from_secs(1);
        let group = Touch::LineWithoutAddress {
            what: "NoLiveUpstreams api_backend".into(),
        };
        assert_eq!(c.r.trigger(&group, t), Heard::Pending);
        let left = Verdict::LeftAlone(LeftAlone::Escalated);
        c.run_until(t, &left);
        for i in 0..10_000 {
            assert_eq!(c.r.trigger(&group, t + ms(i)), Heard::Absorbed);
        }
        assert_eq!(c.run_until(t + ms(10_000), &left), 0);
        // once nothing is open, the same line is news again
        let healthy = Touch::ProbeAnswered { site: "api".into() };
        c.r.trigger(&healthy, t + ms(10_000));
        c.run_until(t + ms(10_300), &Verdict::Healthy);
        assert_eq!(c.r.trigger(&group, t + ms(10_400)), Heard::Pending);
    }

    #[test]
    fn targets_the_configuration_no_longer_dials_are_forgotten() {
        let mut c = Clock::new();
        let t = c.now + Duration::from_secs(1);
        c.r.retry_all(t);
        c.r.take_due(t);
        c.r.evaluated(vec![seen(WEB, "web", "web.service", Verdict::Healthy)], t);
        assert_eq!(c.r.targets().keys().collect::<Vec<_>>(), [WEB]);
    }

    fn units(names: &[&str]) -> Scope {
        Scope::Units(names.iter().map(|n| n.to_string()).collect())
    }

    #[test]
    fn a_unit_signal_evaluates_only_its_targets_and_leaves_the_others_as_they_are() {
        let mut c = Clock::new();
        let t = c.now + Duration::from_secs(1);
        // WEB has a line pending, not due yet (it was evaluated 100 ms ago)
        c.r.trigger(&line(WEB, "refused"), t - ms(100));
        c.r.take_due_scoped(t - ms(100)).unwrap();
        c.r.trigger(&line(WEB, "timed out"), t - ms(50));
        let unit = Touch::Unit {
            unit: "api.service".into(),
            settled: true,
        };
        assert_eq!(c.r.trigger(&unit, t), Heard::Pending);
        let due = c.r.take_due_scoped(t).unwrap();
        assert_eq!(due.scope, units(&["api.service"]));
        assert_eq!(due.targets, [API]);
        assert!(
            c.r.targets()[WEB].is_pending(),
            "the other target stays pending"
        );
        let web_before = c.r.targets()[WEB].clone();
        c.r.evaluated_some(vec![seen(API, "api", "api.service", Verdict::Unhealed)], t);
        assert_eq!(c.r.targets()[API].state, State::Incident);
        assert_eq!(c.r.targets()[WEB].state, web_before.state, "not forgotten");
        // WEB's line is due after its spacing: a targeted evaluation of its unit
        let at = c.r.next_due().unwrap();
        assert_eq!(at, t - ms(100) + ms(300));
        let due = c.r.take_due_scoped(at).unwrap();
        assert_eq!(due.scope, units(&["web.service"]));
        assert_eq!(due.targets, [WEB]);
    }

    #[test]
    fn the_whole_host_is_evaluated_when_anything_but_a_known_unit_asks() {
        // something host-wide pending
        let mut c = Clock::new();
        let t = c.now + Duration::from_secs(1);
        c.r.trigger(&Touch::Everything, t);
        c.r.trigger(&line(API, "refused"), t);
        assert_eq!(c.r.take_due_scoped(t).unwrap().scope, Scope::Everything);
        assert!(
            !c.r.targets().values().any(Entry::is_pending),
            "all cleared"
        );
        // a signal of a unit no target has
        let unit = Touch::Unit {
            unit: "other.service".into(),
            settled: true,
        };
        c.r.trigger(&unit, t + ms(1));
        assert_eq!(
            c.r.take_due_scoped(t + ms(1)).unwrap().scope,
            Scope::Everything
        );
        // a requeue time that came: the retries of a heal read everything
        let t = t + Duration::from_secs(1);
        c.r.trigger(&line(API, "refused"), t);
        c.r.take_due_scoped(t).unwrap();
        c.r.evaluated_some(vec![seen(API, "api", "api.service", Verdict::Unhealed)], t);
        let requeue = c.r.targets()[API].requeue_at.unwrap();
        assert_eq!(
            c.r.take_due_scoped(requeue).unwrap().scope,
            Scope::Everything
        );
        // a target with no unit
        let mut r = Reconciler::new(ms(300), ms(500));
        r.retry_all(t);
        r.take_due_scoped(t);
        let mut s = seen(API, "api", "api.service", Verdict::Healthy);
        s.unit = None;
        r.evaluated(vec![s], t);
        r.trigger(&line(API, "refused"), t + ms(400));
        assert_eq!(
            r.take_due_scoped(t + ms(400)).unwrap().scope,
            Scope::Everything
        );
    }

    #[test]
    fn a_settling_target_is_evaluated_again_from_a_full_snapshot_and_the_spacing_holds() {
        let mut c = Clock::new();
        let t = c.now + Duration::from_secs(1);
        c.r.trigger(&line(API, "refused"), t);
        let due = c.r.take_due_scoped(t).unwrap();
        assert_eq!(
            due.scope,
            units(&["api.service"]),
            "a line about a known target"
        );
        c.r.evaluated_some(vec![seen(API, "api", "api.service", Verdict::Settling)], t);
        // not before the spacing, and then the whole host
        assert_eq!(c.r.next_due(), Some(t + ms(300)));
        assert!(c.r.take_due_scoped(t + ms(299)).is_none());
        assert_eq!(
            c.r.take_due_scoped(t + ms(300)).unwrap().scope,
            Scope::Everything
        );
    }
}
