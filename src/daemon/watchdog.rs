//! systemd's watchdog, fed only while the main loop makes progress. The loop beats a
//! [`Heartbeat`] each time it goes around (an idle loop goes around on a tick of its own), an
//! evaluation beats between its phases, and each step of an apply first says how long it may
//! take (its own timeout: a 60 s systemd job, a 15 s `wait_listen`). The feeder sends
//! `WATCHDOG=1` only while the last beat is younger than the watchdog timeout, or a step is
//! still inside its bound; a loop stuck anywhere else, or a step far past its bound, starves
//! the watchdog and systemd kills and restarts the service. A stop (SIGTERM) is the loop's to
//! carry out; only when the loop is stuck past the watchdog timeout does the feeder exit the
//! process itself, rather than leave systemd to wait out `TimeoutStopSec=` (minutes).

use super::notify::Notifier;
use crate::apply::execute::Progress;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// When the main loop last showed progress, as the time by which it must show it again.
#[derive(Debug)]
pub struct Heartbeat {
    due: Mutex<Instant>,
    /// How long a beat counts: the watchdog timeout (`WatchdogSec=`).
    grace: Duration,
}

impl Heartbeat {
    /// A heartbeat that has just beaten; each beat counts for `grace`.
    pub fn new(grace: Duration) -> Self {
        Self::starting_at(Instant::now(), grace)
    }

    fn starting_at(now: Instant, grace: Duration) -> Self {
        Self {
            due: Mutex::new(now + grace),
            grace,
        }
    }

    /// The loop made progress.
    pub fn beat(&self) {
        self.beat_at(Instant::now());
    }

    /// Work that legitimately takes up to `bound` starts now (a step with its own timeout).
    pub fn busy_for(&self, bound: Duration) {
        self.busy_at(Instant::now(), bound);
    }

    fn beat_at(&self, now: Instant) {
        *self.lock() = now + self.grace;
    }

    fn busy_at(&self, now: Instant, bound: Duration) {
        *self.lock() = now + bound + self.grace;
    }

    /// How far past its due time the loop is at `now`, or `None` while it is alive.
    fn late_at(&self, now: Instant) -> Option<Duration> {
        let due = *self.lock();
        (now > due).then(|| now.saturating_duration_since(due) + self.grace)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Instant> {
        self.due
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Progress for Heartbeat {
    fn step_started(&self, bound: Duration) {
        self.busy_for(bound);
    }

    fn step_ended(&self) {
        self.beat();
    }
}

/// What one tick of the feeder does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Feed {
    Ping,
    /// No ping: the loop has shown no progress for `silent` (said once per stall).
    Withhold {
        silent: Duration,
        first: bool,
    },
    /// A stop was asked for and the loop, stuck, cannot carry it out: exit.
    Exit {
        silent: Duration,
    },
}

/// The feeder's decision, remembering whether it is already withholding (to log once).
#[derive(Debug, Default)]
struct Feeder {
    withholding: bool,
    stop_requested: bool,
}

impl Feeder {
    fn tick(&mut self, heartbeat: &Heartbeat, now: Instant) -> Feed {
        match heartbeat.late_at(now) {
            None => {
                if std::mem::take(&mut self.withholding) {
                    tracing::info!("the main loop makes progress again; feeding the watchdog");
                }
                Feed::Ping
            }
            Some(silent) if self.stop_requested => Feed::Exit { silent },
            Some(silent) => {
                let first = !std::mem::replace(&mut self.withholding, true);
                Feed::Withhold { silent, first }
            }
        }
    }
}

/// Every `every` (half the watchdog timeout), sends `WATCHDOG=1` if the loop is alive; after a
/// SIGTERM, exits the process once the loop is stuck.
pub async fn feed(notifier: Arc<Notifier>, heartbeat: Arc<Heartbeat>, every: Duration) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Every listener of a signal is told: the main loop still gets its SIGTERM.
    let mut terminate = signal(SignalKind::terminate())
        .map_err(|e| tracing::warn!(error = %e, "the watchdog feeder cannot watch for SIGTERM"))
        .ok();
    let mut feeder = Feeder::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            Some(()) = async {
                match &mut terminate {
                    Some(t) => t.recv().await,
                    None => std::future::pending().await,
                }
            } => feeder.stop_requested = true,
        }
        match feeder.tick(&heartbeat, Instant::now()) {
            Feed::Ping => notifier.watchdog(),
            Feed::Exit { silent } => {
                tracing::error!(
                    silent_ms = silent.as_millis() as u64,
                    "stop requested, but the main loop is stuck; exiting without it"
                );
                notifier.stopping("stuck; exiting");
                std::process::exit(1);
            }
            Feed::Withhold { silent, first } => {
                if first {
                    tracing::error!(
                        silent_ms = silent.as_millis() as u64,
                        "the main loop has made no progress for longer than the watchdog allows; not feeding the watchdog, systemd will restart the service"
                    );
                }
            }
        }
    }
}

/// The idle loop's own tick, so that a loop with nothing to do still goes around and beats:
/// pending forever when there is no watchdog.
pub struct Beats(Option<tokio::time::Interval>);

impl Beats {
    pub fn new(every: Option<Duration>) -> Self {
        Self(every.map(|every| {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick
        }))
    }

    pub async fn tick(&mut self) {
        match &mut self.0 {
            Some(tick) => {
                tick.tick().await;
            }
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(30);

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_loop_that_goes_around_is_fed() {
        let t0 = Instant::now();
        let hb = Heartbeat::starting_at(t0, GRACE);
        let mut feeder = Feeder::default();
        for n in 0..10 {
            let now = t0 + secs(15 * n);
            hb.beat_at(now);
            assert_eq!(feeder.tick(&hb, now + secs(14)), Feed::Ping, "tick {n}");
        }
    }

    #[test]
    fn a_stuck_loop_is_fed_for_the_grace_then_starved() {
        let t0 = Instant::now();
        let hb = Heartbeat::starting_at(t0, GRACE);
        let mut feeder = Feeder::default();
        hb.beat_at(t0);
        assert_eq!(feeder.tick(&hb, t0 + secs(15)), Feed::Ping);
        assert_eq!(feeder.tick(&hb, t0 + secs(30)), Feed::Ping);
        assert_eq!(
            feeder.tick(&hb, t0 + secs(45)),
            Feed::Withhold {
                silent: secs(45),
                first: true
            }
        );
        assert_eq!(
            feeder.tick(&hb, t0 + secs(60)),
            Feed::Withhold {
                silent: secs(60),
                first: false
            },
            "said once per stall"
        );
        // It came back before systemd acted: fed again, and a later stall is said again.
        hb.beat_at(t0 + secs(70));
        assert_eq!(feeder.tick(&hb, t0 + secs(75)), Feed::Ping);
        assert!(matches!(
            feeder.tick(&hb, t0 + secs(120)),
            Feed::Withhold { first: true, .. }
        ));
    }

    #[test]
    fn a_stop_exits_only_a_stuck_loop() {
        let t0 = Instant::now();
        let hb = Heartbeat::starting_at(t0, GRACE);
        let mut feeder = Feeder::default();
        hb.busy_at(t0, secs(65));
        feeder.stop_requested = true;
        // Alive (a step inside its bound): the loop finishes it and stops by itself.
        assert_eq!(feeder.tick(&hb, t0 + secs(60)), Feed::Ping);
        assert_eq!(feeder.tick(&hb, t0 + secs(95)), Feed::Ping);
        // Past its bound and the grace: stuck, and nobody else will stop it.
        assert_eq!(
            feeder.tick(&hb, t0 + secs(96)),
            Feed::Exit { silent: secs(31) }
        );
    }

    #[test]
    fn a_step_inside_its_bound_is_fed_past_the_grace() {
        // A 60 s systemd job under `WatchdogSec=30`: fed throughout, and for the grace after.
        let t0 = Instant::now();
        let hb = Heartbeat::starting_at(t0, GRACE);
        let mut feeder = Feeder::default();
        hb.busy_at(t0, secs(65));
        for n in 1..=6 {
            assert_eq!(feeder.tick(&hb, t0 + secs(15 * n)), Feed::Ping, "{n}");
        }
        assert_eq!(feeder.tick(&hb, t0 + secs(95)), Feed::Ping);
        assert!(matches!(
            feeder.tick(&hb, t0 + secs(96)),
            Feed::Withhold { first: true, .. }
        ));
    }

    #[test]
    fn a_finished_step_goes_back_to_the_grace() {
        let t0 = Instant::now();
        let hb = Heartbeat::starting_at(t0, GRACE);
        hb.busy_at(t0, secs(65));
        hb.step_ended(); // at the real now, about t0
        let mut feeder = Feeder::default();
        assert!(matches!(
            feeder.tick(&hb, t0 + secs(31)),
            Feed::Withhold { .. }
        ));
    }

    #[test]
    fn the_longest_shipped_step_fits_its_bound() {
        // Every step the executor runs declares a bound; the fixed ones are at least their
        // own timeouts (a systemd job 60 s), so a legitimate step never starves the watchdog.
        use crate::apply::execute::step_bound;
        use crate::engine::plan::PlannedAction;
        use crate::playbook::SystemdOp;
        let job = PlannedAction::Systemd {
            unit: "api.service".into(),
            op: SystemdOp::Restart,
        };
        assert!(step_bound(&job) >= secs(60));
        let listen = PlannedAction::WaitListen {
            address: "127.0.0.1:8000".into(),
            timeout_ms: 15_000,
        };
        assert!(step_bound(&listen) >= secs(15));
        let probe = PlannedAction::Probe {
            url: "http://127.0.0.1/".into(),
            host: None,
            expect: 200,
            timeout_ms: 10_000,
        };
        assert!(step_bound(&probe) >= secs(10));
    }
}
