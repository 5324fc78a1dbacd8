//! The daemon's state as others read it: `STATE_DIR/status.json`, versioned, written atomically
//! (mode 0600; it holds addresses, units and causes, nothing secret) when the state changes, at
//! most once a second, and read by `nginx-medic status` with a size cap. Whether the daemon
//! runs is told by its instance lock (`/proc/locks`), never by the file's age.

use super::budget::{Brakes, Breaker};
use super::reconcile::{LeftAlone, State};
use crate::state_file::{StateFile, StateFileError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The document's version: a reader refuses any other.
pub const VERSION: u32 = 1;

/// A status file larger than this (1 MiB) is not read.
pub const MAX_BYTES: u64 = 1 << 20;

/// How the file is kept in `state_dir`.
const FILE: StateFile = StateFile {
    name: "status.json",
    what: "status",
    version: VERSION,
    max_bytes: MAX_BYTES,
    help: "remove it; the daemon writes it again",
};

/// The file in `state_dir`.
pub fn path(state_dir: &Path) -> PathBuf {
    FILE.path(state_dir)
}

/// The whole document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Status {
    pub version: u32,
    pub pid: u32,
    /// `observe` or `apply`.
    pub mode: String,
    /// Seconds since the epoch.
    pub started: f64,
    pub updated: f64,
    /// Evaluations run since the start, and triggers the storm rule absorbed.
    pub evaluations: u64,
    pub absorbed: u64,
    pub targets: Vec<TargetStatus>,
    pub breaker: Breaker,
    pub paused: Vec<PausedStatus>,
    /// The pause file cannot be read: nothing is done to any target.
    pub pause_error: Option<String>,
}

/// One target (a dialled address).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetStatus {
    pub target: String,
    pub site: String,
    pub unit: Option<String>,
    pub state: StateName,
    pub left_alone: Option<LeftAlone>,
    pub since: f64,
    pub last_evaluated: Option<f64>,
    /// When an open incident is evaluated again without news.
    pub requeue_at: Option<f64>,
    pub pending: bool,
    /// Triggers about it absorbed by the storm rule in this state.
    pub absorbed: u64,
    pub incident: Option<IncidentStatus>,
    pub brakes: Brakes,
}

/// The state names (as `reconcile::State`), for reading the file back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateName {
    Healthy,
    Incident,
    Healing,
    Verified,
    LeftAlone,
}

impl From<State> for StateName {
    fn from(s: State) -> Self {
        match s {
            State::Healthy => Self::Healthy,
            State::Incident => Self::Incident,
            State::Healing => Self::Healing,
            State::Verified => Self::Verified,
            State::LeftAlone => Self::LeftAlone,
        }
    }
}

impl StateName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Incident => "incident",
            Self::Healing => "healing",
            Self::Verified => "verified",
            Self::LeftAlone => "left alone",
        }
    }

    /// An incident is open in this state.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Incident | Self::Healing | Self::LeftAlone)
    }
}

/// The open incident of a target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentStatus {
    pub cause: String,
    pub opened: f64,
    /// The fault's first evidence (`nginx_medic_heal_seconds` counts from here).
    pub first_evidence: f64,
}

/// A pause in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PausedStatus {
    /// A unit, an upstream address, or `*` for the whole host.
    pub unit: String,
    /// Seconds since the epoch; `null` until resumed.
    pub until: Option<u64>,
}

/// The status file could not be written or read.
pub type StatusError = StateFileError;

/// Writes `status` into `state_dir` atomically, mode 0600.
pub fn write(state_dir: &Path, status: &Status) -> Result<(), StatusError> {
    FILE.save(state_dir, status)
}

/// Reads the status file of `state_dir`; `Ok(None)` when there is none.
pub fn read(state_dir: &Path) -> Result<Option<Status>, StatusError> {
    FILE.load(state_dir)
}

/// The PID holding the instance lock at `lock_file`, read from `/proc/locks` (a check that
/// takes no lock itself, so it never races a daemon starting). `None`: no one holds it.
pub fn lock_holder(lock_file: &Path) -> std::io::Result<Option<u32>> {
    use std::os::unix::fs::MetadataExt;
    let meta = match std::fs::metadata(lock_file) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let locks = std::fs::read_to_string("/proc/locks")?;
    Ok(holder_in(&locks, meta.dev(), meta.ino()))
}

/// The PID of the `FLOCK` on device `dev`, inode `ino` in the text of `/proc/locks`.
fn holder_in(locks: &str, dev: u64, ino: u64) -> Option<u32> {
    let id = format!(
        "{:02x}:{:02x}:{ino}",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    );
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // `1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF` (a blocked waiter has `->` first)
        let fields = fields.get(1..)?;
        let at = usize::from(fields.first() == Some(&"->"));
        let kind = fields.get(at)?;
        let pid = fields.get(at + 3)?;
        let file = fields.get(at + 4)?;
        (*kind == "FLOCK" && at == 0 && *file == id)
            .then(|| pid.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_holder_is_found_in_proc_locks() {
        let text = "1: POSIX  ADVISORY  WRITE 99 08:01:5678 0 EOF\n2: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF\n2: -> FLOCK  ADVISORY  WRITE 77 fd:01:5678 0 EOF\n";
        let dev = nix::sys::stat::makedev(0xfd, 1);
        assert_eq!(holder_in(text, dev, 5678), Some(1234));
        assert_eq!(holder_in(text, dev, 5679), None);
        assert_eq!(holder_in(text, nix::sys::stat::makedev(8, 1), 5678), None);
    }

    #[test]
    fn a_held_lock_is_seen_and_a_released_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("daemon.lock");
        assert_eq!(lock_holder(&lock).unwrap(), None, "no file");
        let held = super::super::lock::InstanceLock::acquire(&lock, "run").unwrap();
        assert_eq!(lock_holder(&lock).unwrap(), Some(std::process::id()));
        drop(held);
        assert_eq!(lock_holder(&lock).unwrap(), None);
    }

    #[test]
    fn a_written_status_reads_back_and_other_versions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_none());
        let status = Status {
            version: VERSION,
            pid: 7,
            mode: "apply".into(),
            started: 1.0,
            updated: 2.0,
            evaluations: 3,
            absorbed: 4,
            targets: Vec::new(),
            breaker: Breaker {
                open: false,
                failures: 0,
                max_failures: 5,
                per_seconds: 600,
            },
            paused: Vec::new(),
            pause_error: None,
        };
        write(dir.path(), &status).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(status));
        std::fs::write(path(dir.path()), "{\"version\": 9}").unwrap();
        let e = read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("holds status version 9"), "{e}");
    }
}
