//! sd_notify by hand: datagrams to `$NOTIFY_SOCKET` (a path, or `@name` for an abstract
//! socket) saying READY=1, STATUS=…, WATCHDOG=1 and STOPPING=1. Without the variable every call
//! does nothing, so the daemon runs the same outside systemd.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

/// Where the notifications go.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

/// A connection to the service manager's notification socket, or nothing.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, Target)>,
    watchdog: Option<Duration>,
    last_status: std::sync::Mutex<String>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from the environment.
    pub fn from_env() -> Self {
        let var = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self::new(
            var("NOTIFY_SOCKET").as_deref(),
            var("WATCHDOG_USEC").as_deref(),
            var("WATCHDOG_PID").as_deref(),
            std::process::id(),
        )
    }

    fn new(
        socket: Option<&str>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        pid: u32,
    ) -> Self {
        // Non-blocking: a manager that does not read must never stall the daemon (a full
        // datagram queue would block a send).
        let target = socket.and_then(parse_socket).and_then(|t| {
            UnixDatagram::unbound()
                .and_then(|s| s.set_nonblocking(true).map(|()| s))
                .map_err(|e| tracing::warn!(error = %e, "cannot create the sd_notify socket"))
                .ok()
                .map(|s| (s, t))
        });
        Self {
            target,
            watchdog: watchdog_interval(watchdog_usec, watchdog_pid, pid),
            last_status: std::sync::Mutex::new(String::new()),
        }
    }

    /// How often to send WATCHDOG=1 (half of `WATCHDOG_USEC`), when the manager asks for it.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Startup is complete.
    pub fn ready(&self, status: &str) {
        let line = one_line(status);
        self.send(&format!("READY=1\nSTATUS={line}"));
        if let Ok(mut last) = self.last_status.lock() {
            *last = line;
        }
    }

    /// A one-line summary for `systemctl status`; sent only when it changed.
    pub fn status(&self, status: &str) {
        let line = one_line(status);
        {
            let mut last = self
                .last_status
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if *last == line {
                return;
            }
            last.clone_from(&line);
        }
        self.send(&format!("STATUS={line}"));
    }

    /// Still alive.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// Shutting down.
    pub fn stopping(&self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
    }

    fn send(&self, message: &str) {
        let Some((socket, target)) = &self.target else {
            return;
        };
        let sent = match target {
            Target::Path(path) => socket.send_to(message.as_bytes(), path),
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name)
                    .and_then(|addr| socket.send_to_addr(message.as_bytes(), &addr))
            }
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }
}

fn parse_socket(text: &str) -> Option<Target> {
    if let Some(name) = text.strip_prefix('@') {
        return Some(Target::Abstract(name.as_bytes().to_vec()));
    }
    text.starts_with('/').then(|| Target::Path(text.into()))
}

fn watchdog_interval(usec: Option<&str>, for_pid: Option<&str>, pid: u32) -> Option<Duration> {
    if let Some(for_pid) = for_pid {
        if for_pid.parse::<u32>().ok() != Some(pid) {
            return None;
        }
    }
    let usec: u64 = usec?.parse().ok().filter(|u| *u > 0)?;
    Some(Duration::from_micros(usec / 2))
}

fn one_line(text: &str) -> String {
    text.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_addresses() {
        assert_eq!(
            parse_socket("/run/systemd/notify"),
            Some(Target::Path("/run/systemd/notify".into()))
        );
        assert_eq!(
            parse_socket("@/org/x/notify"),
            Some(Target::Abstract(b"/org/x/notify".to_vec()))
        );
        assert_eq!(parse_socket("relative"), None);
    }

    #[test]
    fn watchdog_is_half_the_usec_and_only_for_us() {
        assert_eq!(
            watchdog_interval(Some("2000000"), None, 7),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            watchdog_interval(Some("2000000"), Some("7"), 7),
            Some(Duration::from_secs(1))
        );
        assert_eq!(watchdog_interval(Some("2000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
    }

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.to_str(), Some("1000000"), None, 1);
        n.ready("watching 2 sites\nfine");
        n.watchdog();
        let mut buf = [0u8; 256];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=watching 2 sites fine");
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");
        assert_eq!(n.watchdog_interval(), Some(Duration::from_millis(500)));
        n.status("watching 2 sites fine");
        n.status("1 open incident");
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(
            &buf[..len],
            b"STATUS=1 open incident",
            "an unchanged status is not sent"
        );
        // nobody reading: sends fail without blocking
        for _ in 0..100 {
            n.watchdog();
        }
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("nginx-medic-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier::new(Some(&format!("@{name}")), None, None, 1);
        n.stopping("bye");
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1\nSTATUS=bye");
    }
}
