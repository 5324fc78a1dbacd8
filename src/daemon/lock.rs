//! The instance lock: an exclusive `flock` on the lock file, held for the daemon's lifetime, so
//! two `nginx-medic run` never act on the same host at once.

use nix::fcntl::{Flock, FlockArg};
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot open the lock file `{}`: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another `nginx-medic run` holds `{}`{}\nhelp: stop it first; two instances would act on the same faults", path.display(), holder.as_ref().map(|p| format!(" (PID {p})")).unwrap_or_default())]
    Held { path: PathBuf, holder: Option<u32> },
    #[error("cannot lock `{}`: {source}", path.display())]
    Lock { path: PathBuf, source: nix::Error },
}

/// A held lock; released when dropped (or when the process ends, however it ends).
#[derive(Debug)]
pub struct InstanceLock {
    _lock: Flock<File>,
}

impl InstanceLock {
    /// Takes the lock at `path` without waiting, and writes our PID into it.
    pub fn acquire(path: &Path) -> Result<Self, LockError> {
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
                    .ok()
                    .and_then(|t| t.trim().parse().ok());
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
            .and_then(|()| writeln!(lock, "{}", std::process::id()));
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
        let first = InstanceLock::acquire(&path).unwrap();
        let e = InstanceLock::acquire(&path).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "another `nginx-medic run` holds `{}` (PID {})",
                path.display(),
                std::process::id()
            )),
            "{e}"
        );
        drop(first);
        InstanceLock::acquire(&path).unwrap();
    }
}
