//! Where the logs go: straight to journald over its native protocol when stderr is the journal
//! stream systemd connected (`JOURNAL_STREAM`), so that levels become priorities and fields are
//! queryable (`journalctl UPSTREAM=127.0.0.1:8000`); plain text on stderr everywhere else.

use std::ffi::OsStr;
use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use tracing_journald::{Priority, PriorityMappings};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// Where the logs of this process went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logs {
    /// Text on stderr (a terminal, a pipe, or the journal stream when journald's socket cannot
    /// be opened).
    Stderr,
    /// Entries sent to journald over its socket.
    Journal,
}

impl Logs {
    /// Reports the error that ends the process: in the journal as one entry at priority 3,
    /// elsewhere as `error: …` on stderr.
    pub fn fatal(self, e: &anyhow::Error) {
        match self {
            Self::Journal => tracing::error!("{e:#}"),
            Self::Stderr => eprintln!("error: {e:#}"),
        }
    }
}

/// The syslog priority of each level, set explicitly (the crate's default maps info to notice):
/// error 3, warn 4, info 6, debug and trace 7.
pub fn journal_priorities() -> PriorityMappings {
    PriorityMappings {
        error: Priority::Error,
        warn: Priority::Warning,
        info: Priority::Informational,
        debug: Priority::Debug,
        trace: Priority::Debug,
    }
}

/// Whether `JOURNAL_STREAM` (`DEVICE:INODE`, decimal) names the file stderr is (`dev`, `ino`):
/// systemd sets it for the service's own stdout/stderr, and a child whose stderr was
/// redirected inherits the variable but not the stream.
pub fn is_journal_stream(journal_stream: &OsStr, (dev, ino): (u64, u64)) -> bool {
    let Some((d, i)) = journal_stream
        .to_str()
        .and_then(|s| s.trim().split_once(':'))
    else {
        return false;
    };
    d.parse::<u64>().ok() == Some(dev) && i.parse::<u64>().ok() == Some(ino)
}

/// The device and inode of stderr.
fn stderr_identity() -> Option<(u64, u64)> {
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Installs the global subscriber: `default` is the level filter unless `NGINX_MEDIC_LOG` is set.
pub fn init(default: &str) -> Logs {
    let filter =
        || EnvFilter::try_from_env("NGINX_MEDIC_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let on_journal_stream = std::env::var_os("JOURNAL_STREAM")
        .zip(stderr_identity())
        .is_some_and(|(var, id)| is_journal_stream(&var, id));
    let mut no_socket = None;
    if on_journal_stream {
        match tracing_journald::layer() {
            Ok(journal) => {
                let journal = journal
                    .with_syslog_identifier("nginx-medic".into())
                    .with_field_prefix(None)
                    .with_priority_mappings(journal_priorities());
                let _ = tracing_subscriber::registry()
                    .with(journal.with_filter(filter()))
                    .try_init();
                return Logs::Journal;
            }
            Err(e) => no_socket = Some(e),
        }
    }
    let text = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // journald stamps the lines of its stream itself
    let text: Box<dyn Layer<Registry> + Send + Sync> = if on_journal_stream {
        text.without_time().with_filter(filter()).boxed()
    } else {
        text.with_filter(filter()).boxed()
    };
    let _ = tracing_subscriber::registry().with(text).try_init();
    if let Some(e) = no_socket {
        tracing::warn!(error = %e, "cannot open journald's socket `/run/systemd/journal/socket`; logging to stderr as text, every line at the stream's priority");
    }
    Logs::Stderr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_syslog_priorities() {
        let p = journal_priorities();
        let as_number = |p: Priority| char::from(p as u8);
        assert_eq!(
            [p.error, p.warn, p.info, p.debug, p.trace].map(as_number),
            ['3', '4', '6', '7', '7']
        );
    }

    #[test]
    fn the_journal_stream_is_recognised_by_device_and_inode() {
        let var = OsStr::new("8:12345");
        assert!(is_journal_stream(var, (8, 12345)));
        assert!(!is_journal_stream(var, (8, 12346)), "another socket");
        assert!(!is_journal_stream(var, (9, 12345)), "another device");
        assert!(!is_journal_stream(OsStr::new(""), (8, 12345)));
        assert!(!is_journal_stream(OsStr::new("8-12345"), (8, 12345)));
        assert!(!is_journal_stream(OsStr::new("x:12345"), (8, 12345)));
    }
}
