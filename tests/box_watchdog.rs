//! In the box (issue 10, acceptance 6): systemd's watchdog is fed only while the main loop makes
//! progress. The test package (`scripts/package --failpoints`) is installed with `dpkg -i`; an
//! idle service under a short `WatchdogSec=` keeps running (the idle loop beats), and one whose
//! main loop is stuck in the fail point `daemon.loop` is killed by systemd's watchdog and
//! restarted (`NRestarts` 1); stopped while stuck, it exits within the watchdog timeout (the
//! feeder's own way out), not after the shipped `TimeoutStopSec=`.
//!
//! The test package's path comes from `NGINX_MEDIC_FAILPOINTS_DEB` (`scripts/test` builds it
//! after the release package: both builds share `target/release/`).

use crate::support::system_box::{wait_until, SystemBox};
use std::time::{Duration, Instant};

const UNIT: &str = "nginx-medic.service";
const DROP_IN_DIR: &str = "/etc/systemd/system/nginx-medic.service.d";
const DROP_IN: &str = "/etc/systemd/system/nginx-medic.service.d/watchdog-test.conf";
/// Short, so the test is quick: the shipped unit says 30.
const WATCHDOG_SEC: u64 = 4;
/// The shipped unit's `RestartSec=`.
const RESTART_SEC: u64 = 5;

#[test]
fn box_a_stuck_main_loop_is_killed_by_the_watchdog_and_restarted() {
    let deb = std::env::var("NGINX_MEDIC_FAILPOINTS_DEB").unwrap_or_else(|_| {
        panic!(
            "set NGINX_MEDIC_FAILPOINTS_DEB to the test package (`scripts/package --failpoints`)"
        )
    });
    let b = SystemBox::boot("watchdog");
    stuck_main_loop_is_restarted(&b, &deb);
}

/// The body: `b` is a booted box with nothing installed yet.
pub fn stuck_main_loop_is_restarted(b: &SystemBox, deb: &str) {
    b.exec_ok(&["dpkg", "-i", deb]);
    let version = b.exec_ok(&["nginx-medic", "--version"]);
    assert!(
        version.contains("(features: failpoints)"),
        "`{deb}` is not the test package: {version}"
    );
    b.exec_ok(&["mkdir", "-p", DROP_IN_DIR]);

    // Idle, no fail point: the loop goes around on its own tick and the watchdog is fed.
    b.write_file(DROP_IN, &format!("[Service]\nWatchdogSec={WATCHDOG_SEC}\n"));
    b.systemctl_ok(&["daemon-reload"]);
    b.systemctl_ok(&["start", UNIT]);
    std::thread::sleep(Duration::from_secs(4 * WATCHDOG_SEC));
    assert_eq!(b.unit_property(UNIT, "ActiveState"), "active");
    assert_eq!(
        b.unit_property(UNIT, "NRestarts"),
        "0",
        "an idle loop starved the watchdog:\n{}",
        b.journal(UNIT, &[])
    );
    b.systemctl_ok(&["stop", UNIT]);
    b.systemctl_ok(&["reset-failed", UNIT]);

    // The main loop stalls after READY=1.
    b.write_file(
        DROP_IN,
        &format!(
            "[Service]\nEnvironment=FAILPOINTS=daemon.loop=return\nWatchdogSec={WATCHDOG_SEC}\n"
        ),
    );
    b.systemctl_ok(&["daemon-reload"]);
    let started = Instant::now();
    b.systemctl_ok(&["start", UNIT]);
    let first = b.main_pid(UNIT);
    let took = wait_until(
        Duration::from_secs(4 * WATCHDOG_SEC + RESTART_SEC + 10),
        "systemd restarts the stalled service",
        || b.unit_property(UNIT, "NRestarts") != "0",
    );
    assert_eq!(b.unit_property(UNIT, "NRestarts"), "1");
    let journal = b.journal(UNIT, &[]);
    for line in [
        "fail point: stalling forever",
        "not feeding the watchdog",
        &format!("Watchdog timeout (limit {WATCHDOG_SEC}s)!"),
        "Failed with result 'watchdog'",
    ] {
        assert!(journal.contains(line), "no `{line}` in:\n{journal}");
    }
    // Killed at most two watchdog timeouts after the stall (a beat counts for one, and the
    // last ping then counts for one more), restarted RestartSec= later.
    assert!(
        took <= Duration::from_secs(2 * WATCHDOG_SEC + RESTART_SEC + 3),
        "restarted only after {took:?}"
    );
    assert_ne!(b.main_pid(UNIT), first, "a new process");
    eprintln!(
        "watchdog: stalled service restarted {:.1} s after its start (WatchdogSec={WATCHDOG_SEC}, RestartSec={RESTART_SEC})",
        started.elapsed().as_secs_f64()
    );

    // Stuck again in the new process: SIGTERM cannot reach the loop, the feeder exits once the
    // loop is past the watchdog timeout.
    wait_until(
        Duration::from_secs(30),
        "the restarted service is active",
        || b.unit_property(UNIT, "ActiveState") == "active",
    );
    std::thread::sleep(Duration::from_secs(1));
    let stopping = Instant::now();
    b.systemctl_ok(&["stop", UNIT]);
    let stop = stopping.elapsed();
    let journal = b.journal(UNIT, &[]);
    assert!(
        journal.contains("stop requested, but the main loop is stuck; exiting without it"),
        "{journal}"
    );
    assert!(
        stop <= Duration::from_secs(WATCHDOG_SEC + WATCHDOG_SEC / 2 + 3),
        "a stuck service took {stop:?} to stop"
    );
    eprintln!(
        "watchdog: the stuck service stopped in {:.1} s",
        stop.as_secs_f64()
    );
}
