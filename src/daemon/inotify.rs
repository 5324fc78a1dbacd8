//! inotify on the daemon's runtime: a set of watches whose events wake one task, drained in
//! one go (which events came matters less than looking again). The error-log follower and the
//! pause watcher wait on it instead of polling with `stat`.

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::Path;
use tokio::io::unix::AsyncFd;

/// Setting up inotify failed.
#[derive(Debug, thiserror::Error)]
pub enum InotifyError {
    #[error("cannot set up inotify: {0}")]
    Init(nix::Error),
    #[error("cannot register inotify with the runtime: {0}")]
    Register(std::io::Error),
}

struct Fd(Inotify);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Watches, and a wait for their next events.
pub struct Watches {
    fd: AsyncFd<Fd>,
}

impl Watches {
    /// An inotify instance with no watch yet, registered with the current runtime.
    pub fn new() -> Result<Self, InotifyError> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(InotifyError::Init)?;
        // SAFETY: `Fd` owns the inotify descriptor and never closes or swaps it, so the raw fd
        // stays open and the same for as long as the `AsyncFd` holding it lives.
        let fd = unsafe { AsyncFd::register(Fd(inotify)) }
            .map_err(|e| InotifyError::Register(e.into()))?;
        Ok(Self { fd })
    }

    /// Watches `path` for `events`.
    pub fn add(&self, path: &Path, events: AddWatchFlags) -> nix::Result<WatchDescriptor> {
        self.fd.get_ref().0.add_watch(path, events)
    }

    /// Stops watching `wd` (gone already when its file was deleted: not an error then).
    pub fn remove(&self, wd: WatchDescriptor) {
        let _ = self.fd.get_ref().0.rm_watch(wd);
    }

    /// Waits until at least one event is queued, then drains every queued event.
    pub async fn changed(&self) {
        let Ok(mut guard) = self.fd.readable().await else {
            return;
        };
        loop {
            match guard.get_inner().0.read_events() {
                Ok(_) => continue,
                Err(nix::errno::Errno::EAGAIN) => guard.clear_ready(),
                Err(e) => {
                    tracing::warn!(error = %e, "inotify read failed");
                    guard.clear_ready();
                }
            }
            break;
        }
    }
}
