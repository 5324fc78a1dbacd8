//! The instance lock: an exclusive `flock` on the lock file, held for the daemon's lifetime and
//! for each CLI `apply`, so that two nginx-medic never act on the same host at once. The file
//! holds the holder's PID and command (`1234 apply`), for the message the next one gets.

use nix::fcntl::{Flock, FlockArg};
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot open the lock file `{}`", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another {} holds `{}`{}\nhelp: {}; two instances would act on the same faults", holder.command(), path.display(), holder.pid.map(|p| format!(" (PID {p})")).unwrap_or_default(), holder.help())]
    Held { path: PathBuf, holder: Holder },
    #[error("cannot lock `{}`", path.display())]
    Lock { path: PathBuf, source: nix::Error },
}

/// Who holds the lock, as its file says (either part may be missing: an older file, a write
/// that failed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holder {
    pub pid: Option<u32>,
    /// The nginx-medic command: `run`, `apply`.
    pub command: Option<String>,
}

impl Holder {
    fn parse(text: &str) -> Self {
        let mut words = text.split_whitespace();
        Self {
            pid: words.next().and_then(|w| w.parse().ok()),
            command: words
                .next()
                .filter(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
                .map(str::to_owned),
        }
    }

    fn command(&self) -> String {
        match &self.command {
            Some(c) => format!("`nginx-medic {c}`"),
            None => "nginx-medic".into(),
        }
    }

    fn help(&self) -> &'static str {
        match self.command.as_deref() {
            Some("run") => "stop the daemon first (`systemctl stop nginx-medic`)",
            Some(_) => "wait for it to finish",
            None => "stop it first",
        }
    }
}

/// A held lock; released when dropped (or when the process ends, however it ends).
#[derive(Debug)]
pub struct InstanceLock {
    _lock: Flock<File>,
}

impl InstanceLock {
    /// Takes the lock at `path` without waiting, and writes our PID and `command` into it.
    pub fn acquire(path: &Path, command: &str) -> Result<Self, LockError> {
        let open_err = |source| LockError::Open {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(open_err)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(open_err)?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                let holder = std::fs::read_to_string(path)
                    .map(|t| Holder::parse(&t))
                    .unwrap_or_default();
                return Err(LockError::Held {
                    path: path.to_path_buf(),
                    holder,
                });
            }
            Err((_, source)) => {
                return Err(LockError::Lock {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        // The PID is for people; the lock is the flock, so a failed write changes nothing.
        let _ = lock
            .set_len(0)
            .and_then(|()| writeln!(lock, "{} {command}", std::process::id()));
        Ok(Self { _lock: lock })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/daemon.lock");
        let first = InstanceLock::acquire(&path, "apply").unwrap();
        let e = InstanceLock::acquire(&path, "run").unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "another `nginx-medic apply` holds `{}` (PID {})\nhelp: wait for it to finish; two instances would act on the same faults",
                path.display(),
                std::process::id()
            )
        );
        drop(first);
        InstanceLock::acquire(&path, "run").unwrap();
    }

    #[test]
    fn an_older_lock_file_with_only_a_pid_still_names_it() {
        assert_eq!(
            Holder::parse("42\n"),
            Holder {
                pid: Some(42),
                command: None
            }
        );
        assert_eq!(Holder::parse("7 run\n").command(), "`nginx-medic run`");
        assert_eq!(Holder::parse("7 \x1b[2J\n").command, None);
    }
}
