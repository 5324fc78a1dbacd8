//! Fail points for fault-injection tests: named places where a test build can stall, pause,
//! panic or return an injected error. They exist only with the cargo feature `failpoints`
//! (tikv's `fail` crate); without it the macros expand to nothing, so the release build has
//! neither the points nor their names.
//!
//! Armed at start from `FAILPOINTS` (`NAME=ACTIONS;NAME=ACTIONS`, the `fail` crate's action
//! syntax: `off`, `return[(ARG)]`, `sleep(MS)`, `pause`, `panic`, `print`, with `N*` counts,
//! `P%` chances and `->` chains), e.g. in a drop-in of the service:
//!
//! ```text
//! [Service]
//! Environment=FAILPOINTS=daemon.loop=return
//! ```
//!
//! The points:
//!
//! | name | where | `return` |
//! |---|---|---|
//! | `daemon.loop` | the daemon's main loop, each time around after `READY=1` | stalls the loop (async: the rest of the process runs on), forever or `return(MS)` |
//! | `daemon.evaluate` | the start of each evaluation | as `daemon.loop` |
//! | `txn.after-backup` | a transaction's first edit of a file: backed up and recorded in the manifest, not yet written | an injected write error |
//! | `fs.after-write` | an atomic write: the new file written and synced beside the target, not yet recorded or swapped in | an injected write error (the new file is removed) |
//! | `fs.after-rename` | an atomic write: swapped in for the target (the old file removed), its directory not yet synced | an injected write error |
//! | `fs.before-dir-fsync` | every directory fsync (after a backup, a write, a removal) | an injected write error |
//! | `systemd.job-queued` | a unit job (restart, start, reload) accepted by systemd, its end not yet seen: for a restart, the unit is being stopped and started | (not supported: `pause`, `sleep`, `panic`) |
//!
//! Inside a transaction's edit of a file (its new file staged, swapped in, the directory
//! synced; not the manifest's or the backup's own writes), each `fs.*` point is also
//! evaluated as `edit.NAME` (`edit.fs.after-write`, …): a test arms that name to stop exactly
//! in the edit of the file, whatever else the process writes before it.
//!
//! A restart is one systemd job (`RestartUnit`): nginx-medic never stops a unit and starts it
//! in two calls, so "between a unit's stop and its start" is `systemd.job-queued`, with the job
//! running. `pause` and `sleep` block the thread, which is the whole runtime here: the
//! watchdog goes unfed too, as in a real hang.

/// The cargo features compiled in, for `--version`: empty in a release build.
#[cfg(feature = "failpoints")]
pub const FEATURES: &str = "failpoints";
/// The cargo features compiled in, for `--version`: empty in a release build.
#[cfg(not(feature = "failpoints"))]
pub const FEATURES: &str = "";

/// A fail point in synchronous code: `fail_point!("name")`, or with a closure taking the
/// `return` argument (`Option<String>`) whose value the enclosing function returns.
macro_rules! fail_point {
    ($name:literal) => {{
        #[cfg(feature = "failpoints")]
        fail::fail_point!($name);
    }};
    ($name:literal, $on_return:expr) => {{
        #[cfg(feature = "failpoints")]
        {
            fail::fail_point!($name, $on_return);
            if $crate::failpoint::in_edit() {
                fail::fail_point!(concat!("edit.", $name), $on_return);
            }
        }
    }};
}
pub(crate) use fail_point;

#[cfg(feature = "failpoints")]
thread_local! {
    static IN_EDIT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread is in a transaction's edit of a file (see the module doc).
#[cfg(feature = "failpoints")]
pub fn in_edit() -> bool {
    IN_EDIT.with(std::cell::Cell::get)
}

/// Marks this thread as in a transaction's edit of a file until the guard is dropped; the
/// `edit.*` fail points fire only then. Nothing in a build without fail points.
pub struct EditScope {
    #[cfg(feature = "failpoints")]
    was: bool,
}

impl EditScope {
    /// Enters the scope.
    pub fn enter() -> Self {
        #[cfg(feature = "failpoints")]
        {
            Self {
                was: IN_EDIT.with(|c| c.replace(true)),
            }
        }
        #[cfg(not(feature = "failpoints"))]
        Self {}
    }
}

impl Drop for EditScope {
    fn drop(&mut self) {
        #[cfg(feature = "failpoints")]
        IN_EDIT.with(|c| c.set(self.was));
    }
}

/// A fail point in async code whose `return` action stalls the task (forever, or `return(MS)`
/// milliseconds) without blocking the runtime.
macro_rules! stall_point {
    ($name:literal) => {{
        #[cfg(feature = "failpoints")]
        $crate::failpoint::stall($name).await;
    }};
}
pub(crate) use stall_point;

/// An I/O error standing for a failure injected at `name`.
#[cfg(feature = "failpoints")]
pub fn injected(name: &str) -> std::io::Error {
    std::io::Error::other(format!("injected by fail point `{name}`"))
}

/// `FAILPOINTS` could not be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid `FAILPOINTS` entry `{entry}`: {reason}\nhelp: write `NAME=ACTIONS;NAME=ACTIONS`, e.g. `daemon.loop=return`")]
pub struct FailpointsError {
    entry: String,
    reason: String,
}

/// Arms the fail points named in `FAILPOINTS` and returns them as `(name, actions)`. A build
/// without the feature checks the syntax, then ignores them (its caller says so).
pub fn arm_from_env() -> Result<Vec<(String, String)>, FailpointsError> {
    let spec = std::env::var("FAILPOINTS").unwrap_or_default();
    let points = parse(&spec)?;
    for (name, actions) in &points {
        arm(name, actions).map_err(|reason| FailpointsError {
            entry: format!("{name}={actions}"),
            reason,
        })?;
    }
    Ok(points)
}

#[cfg(feature = "failpoints")]
fn arm(name: &str, actions: &str) -> Result<(), String> {
    fail::cfg(name, actions)
}

#[cfg(not(feature = "failpoints"))]
fn arm(_name: &str, _actions: &str) -> Result<(), String> {
    Ok(())
}

fn parse(spec: &str) -> Result<Vec<(String, String)>, FailpointsError> {
    spec.split(';')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| match entry.split_once('=') {
            Some((name, actions)) if !name.trim().is_empty() => {
                Ok((name.trim().to_string(), actions.trim().to_string()))
            }
            _ => Err(FailpointsError {
                entry: entry.to_string(),
                reason: "no `NAME=` before the actions".into(),
            }),
        })
        .collect()
}

/// What `stall_point!` runs: nothing, unless the point's action is `return`.
#[cfg(feature = "failpoints")]
pub async fn stall(name: &'static str) {
    fn returned(name: &'static str) -> Option<Option<String>> {
        fail::fail_point!(name, Some);
        None
    }
    let Some(arg) = returned(name) else { return };
    match arg.and_then(|ms| ms.trim().parse::<u64>().ok()) {
        Some(ms) => {
            tracing::warn!(failpoint = name, ms, "fail point: stalling");
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        None => {
            tracing::warn!(failpoint = name, "fail point: stalling forever");
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_fail_crate_syntax() {
        assert_eq!(
            parse(" daemon.loop=return(5000) ; fs.after-write=1*off->pause;").unwrap(),
            vec![
                ("daemon.loop".to_string(), "return(5000)".to_string()),
                ("fs.after-write".to_string(), "1*off->pause".to_string()),
            ]
        );
        assert!(parse("").unwrap().is_empty());
        let e = parse("daemon.loop").unwrap_err().to_string();
        assert!(
            e.starts_with("invalid `FAILPOINTS` entry `daemon.loop`"),
            "{e}"
        );
    }

    #[test]
    fn features_say_whether_fail_points_are_in() {
        assert_eq!(
            FEATURES.contains("failpoints"),
            cfg!(feature = "failpoints")
        );
    }

    #[cfg(feature = "failpoints")]
    #[tokio::test]
    async fn a_returned_stall_point_waits_its_milliseconds() {
        use std::time::{Duration, Instant};
        async fn looped() -> u32 {
            stall_point!("test.stall");
            7
        }
        fail::cfg("test.stall", "return(300)").unwrap();
        let start = Instant::now();
        assert_eq!(looped().await, 7);
        assert!(start.elapsed() >= Duration::from_millis(300));
        fail::cfg("test.stall", "off").unwrap();
        let start = Instant::now();
        assert_eq!(looped().await, 7);
        assert!(start.elapsed() < Duration::from_millis(300));
    }
}
