//! The daemon's telemetry about targets, in one place: each outcome is exactly one tracing event.
//! Field names are journal fields too (upper-cased, no prefix): `UPSTREAM=` (the address nginx
//! dials), `CAUSE=` (the playbook id), `SITE=`, `TXN=` (transaction ids, comma-separated), and
//! `OBJECT_SYSTEMD_UNIT=` (the backend unit the event is about), which `journalctl -u UNIT`
//! matches for entries of a root process. Levels: an escalation or a heal that cannot start is
//! an error, an incident and every "nothing is done" a warning, progress info.

use super::budget::Escalation;
use super::holds::Hold;
use crate::engine::evaluate::Finding;
use std::time::Duration;

/// What the event is about, for the message: `[127.0.0.1:8000 backend-down]`. The fields say it
/// too, but `journalctl`'s usual output shows the message alone.
fn about(f: &Finding) -> String {
    format!("[{} {}]", f.upstream, f.cause)
}

/// A new incident: a target with a finding.
pub fn incident(f: &Finding) {
    tracing::warn!(
        upstream = %f.upstream,
        cause = %f.cause,
        site = %f.site,
        conclusive = f.conclusive,
        evidence = %f.evidence.join("; "),
        object_systemd_unit = f.unit.as_deref().map(tracing::field::display),
        "incident {}",
        about(f)
    );
}

/// The target has no finding any more.
pub fn resolved(upstream: &str, cause: &str, unit: Option<&str>, open: Duration) {
    tracing::info!(
        upstream = %upstream,
        cause = %cause,
        open_ms = open.as_millis() as u64,
        object_systemd_unit = unit.map(tracing::field::display),
        "incident resolved [{upstream} {cause}]"
    );
}

/// An escalated target was healthy for a whole crash-loop window: it is released.
pub fn released(upstream: &str, unit: Option<&str>) {
    tracing::info!(
        upstream = %upstream,
        object_systemd_unit = unit.map(tracing::field::display),
        "healthy for a whole crash-loop window; acting on it again [{upstream}]"
    );
}

/// The evidence is not enough to act on (reported once per incident).
pub fn inconclusive(f: &Finding, missing: &str) {
    tracing::warn!(
        upstream = %f.upstream,
        cause = %f.cause,
        site = %f.site,
        missing = %missing,
        object_systemd_unit = f.unit.as_deref().map(tracing::field::display),
        "inconclusive; nothing is done {}",
        about(f)
    );
}

/// The finding's unit is between states: evaluated again once it settles.
pub fn settling(f: &Finding, unit: &str) {
    tracing::debug!(
        upstream = %f.upstream,
        cause = %f.cause,
        object_systemd_unit = %unit,
        "the unit is changing; evaluating again once it settles {}",
        about(f)
    );
}

/// `observe` mode: the plan that would run (the steps follow as `planned`).
pub fn would_heal(f: &Finding, steps: usize) {
    tracing::warn!(
        upstream = %f.upstream,
        cause = %f.cause,
        site = %f.site,
        mode = "observe",
        steps,
        object_systemd_unit = f.unit.as_deref().map(tracing::field::display),
        "would heal; observe mode changes nothing {}",
        about(f)
    );
}

/// `observe` mode: one step of the plan that would run.
pub fn planned(f: &Finding, step: usize, action: &str, diff: &str) {
    tracing::info!(
        upstream = %f.upstream,
        cause = %f.cause,
        mode = "observe",
        step,
        action = %action,
        diff = %diff,
        object_systemd_unit = f.unit.as_deref().map(tracing::field::display),
        "planned {}",
        about(f)
    );
}

/// A lasting "nothing is done" state begins (logged once, not at every evaluation).
pub fn held(f: &Finding, hold: Hold) {
    let (upstream, cause, unit) = (&f.upstream, &f.cause, f.unit.as_deref());
    let state = hold.as_str();
    let about = about(f);
    match hold {
        Hold::LeftAlone => {
            tracing::info!(upstream = %upstream, cause = %cause, state = %state, object_systemd_unit = unit.map(tracing::field::display), "escalated; left alone {about}")
        }
        Hold::RateLimited => {
            tracing::warn!(upstream = %upstream, cause = %cause, state = %state, object_systemd_unit = unit.map(tracing::field::display), "rate limited; nothing is done {about}")
        }
        Hold::BreakerOpen => {
            tracing::warn!(upstream = %upstream, cause = %cause, state = %state, object_systemd_unit = unit.map(tracing::field::display), "circuit breaker open; nothing is done {about}")
        }
    }
}

/// The lasting state ends: the target is acted on again.
pub fn unheld(f: &Finding, hold: Hold) {
    let message = match hold {
        Hold::LeftAlone => "no longer escalated; acting again",
        Hold::RateLimited => "rate limit window slid; acting again",
        Hold::BreakerOpen => "circuit breaker closed; acting again",
    };
    tracing::info!(
        upstream = %f.upstream,
        cause = %f.cause,
        state = %hold.as_str(),
        object_systemd_unit = f.unit.as_deref().map(tracing::field::display),
        "{message} {}",
        about(f)
    );
}

/// A heal starts: the finding's steps as one transaction.
pub fn healing(f: &Finding, steps: usize) {
    tracing::info!(
        upstream = %f.upstream,
        cause = %f.cause,
        site = %f.site,
        steps,
        object_systemd_unit = f.unit.as_deref().map(tracing::field::display),
        "healing {}",
        about(f)
    );
}

/// A heal could not even start (systemd unreachable, …).
pub fn cannot_heal(f: &Finding, error: &str) {
    tracing::error!(
        upstream = %f.upstream,
        cause = %f.cause,
        site = %f.site,
        error = %error,
        object_systemd_unit = f.unit.as_deref().map(tracing::field::display),
        "cannot heal {}",
        about(f)
    );
}

/// A heal verified (or found nothing left to do).
pub fn healed(f: &Finding, took: Duration, transactions: &[String]) {
    tracing::info!(
        upstream = %f.upstream,
        cause = %f.cause,
        site = %f.site,
        seconds = took.as_secs_f64(),
        txn = %transactions.join(","),
        object_systemd_unit = f.unit.as_deref().map(tracing::field::display),
        "healed {}",
        about(f)
    );
}

/// A heal failed or was rolled back.
pub fn heal_failed(f: &Finding, outcome: &str, error: &str, transactions: &[String]) {
    tracing::warn!(
        upstream = %f.upstream,
        cause = %f.cause,
        site = %f.site,
        outcome,
        error = %error,
        txn = %transactions.join(","),
        object_systemd_unit = f.unit.as_deref().map(tracing::field::display),
        "heal failed {}",
        about(f)
    );
}

/// A target (or, for the circuit breaker, `*`: every target) is handed to a person.
pub fn escalated(upstream: &str, f: Option<&Finding>, e: &Escalation) {
    tracing::error!(
        upstream = %upstream,
        cause = %f.map_or("-", |f| f.cause.as_str()),
        site = f.map(|f| tracing::field::display(&f.site)),
        reason = e.reason.as_str(),
        detail = %e.detail,
        object_systemd_unit = f.and_then(|f| f.unit.as_deref()).map(tracing::field::display),
        "escalated: a person is needed {}",
        f.map_or_else(|| format!("[{upstream}]"), about)
    );
}

/// A pause began (`nginx-medic pause`): nothing is done to the unit (or `*`, the host) until it
/// ends.
pub fn paused(unit: &str, until: &str) {
    let object = (unit != "*").then_some(unit);
    tracing::warn!(
        until = %until,
        object_systemd_unit = object.map(tracing::field::display),
        "paused until {until}; nothing is done to {unit}"
    );
}

/// A pause ended (resumed or expired).
pub fn pause_ended(unit: &str) {
    let object = (unit != "*").then_some(unit);
    tracing::info!(
        object_systemd_unit = object.map(tracing::field::display),
        "pause ended; acting on {unit} again"
    );
}

/// A finding held by the administrator's intent (a pause, `heal: false`): reported, not acted
/// on (once per incident).
pub fn held_by_intent(f: &Finding, unit: Option<&str>, hold: &str, text: &str) {
    tracing::warn!(
        upstream = %f.upstream,
        cause = %f.cause,
        site = %f.site,
        hold = %hold,
        object_systemd_unit = unit.or(f.unit.as_deref()).map(tracing::field::display),
        "{text} {}",
        about(f)
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::budget::EscalationReason;
    use std::sync::{Arc, Mutex};
    use tracing::field::{Field, Visit};
    use tracing::{Event, Level, Subscriber};
    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::Layer;

    /// One recorded event: its level and its fields, as `name=value`.
    type Recorded = (Level, Vec<(String, String)>);

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<Recorded>>>);

    struct Fields<'a>(&'a mut Vec<(String, String)>);

    impl Visit for Fields<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0
                .push((field.name().to_string(), format!("{value:?}")));
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.push((field.name().to_string(), value.to_string()));
        }
    }

    impl<S: Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
            let mut fields = Vec::new();
            event.record(&mut Fields(&mut fields));
            self.0
                .lock()
                .unwrap()
                .push((*event.metadata().level(), fields));
        }
    }

    fn capture(emit: impl FnOnce()) -> Vec<Recorded> {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::registry().with(capture.clone());
        tracing::subscriber::with_default(subscriber, emit);
        let events = capture.0.lock().unwrap().clone();
        events
    }

    fn finding(unit: Option<&str>) -> Finding {
        Finding {
            cause: "backend-down".into(),
            description: String::new(),
            severity: crate::playbook::Severity::Critical,
            site: "shop.example".into(),
            location: "/".into(),
            upstream: "127.0.0.1:8000".into(),
            unit: unit.map(String::from),
            evidence: vec!["connect() failed (111: Connection refused)".into()],
            conclusive: true,
            missing: Vec::new(),
            also_matched: Vec::new(),
            covered_by: None,
            target: 0,
        }
    }

    fn field<'a>(event: &'a Recorded, name: &str) -> Option<&'a str> {
        event
            .1
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn each_outcome_is_one_event_with_the_journal_fields() {
        let f = finding(Some("api.service"));
        let escalation = Escalation {
            reason: EscalationReason::CrashLoop,
            detail: "2 failed heals".into(),
        };
        let txns = ["t1".to_string()];
        type Emit<'a> = Box<dyn Fn() + 'a>;
        let cases: Vec<(&str, Level, Emit)> = vec![
            ("incident", Level::WARN, Box::new(|| incident(&f))),
            ("healing", Level::INFO, Box::new(|| healing(&f, 1))),
            (
                "healed",
                Level::INFO,
                Box::new(|| healed(&f, Duration::from_millis(1500), &txns)),
            ),
            (
                "heal failed",
                Level::WARN,
                Box::new(|| heal_failed(&f, "rolled_back", "no", &txns)),
            ),
            (
                "cannot heal",
                Level::ERROR,
                Box::new(|| cannot_heal(&f, "x")),
            ),
            (
                "escalated",
                Level::ERROR,
                Box::new(|| escalated(&f.upstream, Some(&f), &escalation)),
            ),
            (
                "inconclusive",
                Level::WARN,
                Box::new(|| inconclusive(&f, "why")),
            ),
            ("would heal", Level::WARN, Box::new(|| would_heal(&f, 1))),
        ];
        for (name, level, emit) in cases {
            let events = capture(emit);
            assert_eq!(events.len(), 1, "{name}: exactly one event");
            let event = &events[0];
            assert_eq!(event.0, level, "{name}");
            assert_eq!(field(event, "upstream"), Some("127.0.0.1:8000"), "{name}");
            assert_eq!(field(event, "cause"), Some("backend-down"), "{name}");
            assert_eq!(
                field(event, "object_systemd_unit"),
                Some("api.service"),
                "{name}"
            );
            for (n, _) in &event.1 {
                assert_ne!(n, "target", "{name}: collides with the journal's TARGET");
                assert!(
                    n.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                        && !n.starts_with('_'),
                    "{name}: `{n}` is not a journal field name once upper-cased"
                );
            }
        }
        let healed = capture(|| healed(&f, Duration::from_secs(1), &txns));
        assert_eq!(field(&healed[0], "txn"), Some("t1"));
        assert_eq!(field(&healed[0], "site"), Some("shop.example"));
    }

    #[test]
    fn without_a_unit_the_object_field_is_left_out() {
        let events = capture(|| incident(&finding(None)));
        assert_eq!(field(&events[0], "object_systemd_unit"), None);
    }

    #[test]
    fn a_hold_is_a_warning_when_it_begins_except_left_alone_and_info_when_it_ends() {
        let f = finding(Some("api.service"));
        let begin = |h| capture(|| held(&f, h));
        let end = |h| capture(|| unheld(&f, h));
        assert_eq!(begin(Hold::BreakerOpen)[0].0, Level::WARN);
        assert_eq!(begin(Hold::RateLimited)[0].0, Level::WARN);
        assert_eq!(begin(Hold::LeftAlone)[0].0, Level::INFO);
        let closed = end(Hold::BreakerOpen);
        assert_eq!(closed[0].0, Level::INFO);
        assert_eq!(
            field(&closed[0], "message"),
            Some("circuit breaker closed; acting again [127.0.0.1:8000 backend-down]")
        );
        assert_eq!(field(&closed[0], "state"), Some("breaker_open"));
    }
}
