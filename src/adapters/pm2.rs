//! PM2 through its own command line: `pm2 jlist`, `pm2 restart NAME`, `pm2 startOrRestart
//! ECOSYSTEM --only NAME --update-env` and `pm2 save`, each run as an argv (no shell) with the
//! daemon's `PM2_HOME`, as the home's owner, in a clean environment. Behind [`Pm2`] so the rest
//! stays testable without PM2.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one `pm2` command may take (a restart waits for the app's old process to end).
pub const PM2_TIMEOUT: Duration = Duration::from_secs(30);

/// Which PM2 daemon a command talks to, and as whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pm2Target {
    pub binary: PathBuf,
    pub home: PathBuf,
    pub uid: u32,
    pub gid: u32,
}

/// What went wrong running `pm2`.
#[derive(Debug, thiserror::Error)]
pub enum Pm2Error {
    #[error("cannot run `{binary}`")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the PM2 daemon of `{}` is not running (no live God daemon in its pm2.pid): nothing is asked of pm2, which would start a new daemon", home.display())]
    NotRunning { home: PathBuf },
    #[error("`pm2 {args}` (PM2_HOME={home}) did not end within {} s", PM2_TIMEOUT.as_secs())]
    Timeout { args: String, home: PathBuf },
    #[error("`pm2 {args}` (PM2_HOME={home}) failed ({status}): {output}")]
    Failed {
        args: String,
        home: PathBuf,
        status: String,
        output: String,
    },
}

/// The PM2 commands nginx-medic runs.
pub trait Pm2: Sync {
    /// `pm2 jlist`'s output.
    fn jlist(&self, target: &Pm2Target) -> Result<String, Pm2Error>;
    /// `pm2 restart NAME`: that one app, never the daemon.
    fn restart(&self, target: &Pm2Target, app: &str) -> Result<String, Pm2Error>;
    /// `pm2 startOrRestart ECOSYSTEM --only NAME --update-env`, then `pm2 save`.
    fn apply_ecosystem(
        &self,
        target: &Pm2Target,
        ecosystem: &Path,
        app: &str,
    ) -> Result<String, Pm2Error>;
}

/// The real `pm2` executable.
pub struct Pm2Cli;

impl Pm2 for Pm2Cli {
    fn jlist(&self, target: &Pm2Target) -> Result<String, Pm2Error> {
        run(target, &["jlist"], None)
    }

    fn restart(&self, target: &Pm2Target, app: &str) -> Result<String, Pm2Error> {
        run(target, &["restart", app], None)
    }

    fn apply_ecosystem(
        &self,
        target: &Pm2Target,
        ecosystem: &Path,
        app: &str,
    ) -> Result<String, Pm2Error> {
        let file = ecosystem.display().to_string();
        let dir = ecosystem.parent();
        let started = run(
            target,
            &["startOrRestart", &file, "--only", app, "--update-env"],
            dir,
        )?;
        let saved = run(target, &["save"], None)?;
        Ok(format!("{started}\n{saved}"))
    }
}

/// The environment a `pm2` command gets, and so the app it (re)starts with `--update-env`:
/// nothing of nginx-medic's own (`NOTIFY_SOCKET`, `INVOCATION_ID`, `WATCHDOG_USEC`, …).
pub fn clean_env(target: &Pm2Target) -> Vec<(String, String)> {
    let home = nix::unistd::User::from_uid(target.uid.into())
        .ok()
        .flatten()
        .map_or_else(
            || {
                target
                    .home
                    .parent()
                    .unwrap_or(Path::new("/"))
                    .display()
                    .to_string()
            },
            |u| u.dir.display().to_string(),
        );
    let node_dir = target
        .binary
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    vec![
        (
            "PATH".into(),
            format!("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:{node_dir}"),
        ),
        ("HOME".into(), home),
        ("PM2_HOME".into(), target.home.display().to_string()),
        ("LANG".into(), "C.UTF-8".into()),
    ]
}

/// Whether the daemon of `home` runs: its `pm2.pid` names a live PM2 God daemon. Any `pm2`
/// command spawns a daemon when there is none, so none is run without this.
pub fn daemon_running(home: &Path) -> bool {
    let Some(pid) = std::fs::read_to_string(home.join("pm2.pid"))
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
    else {
        return false;
    };
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| String::from_utf8_lossy(&c).contains("God Daemon"))
}

fn run(target: &Pm2Target, args: &[&str], dir: Option<&Path>) -> Result<String, Pm2Error> {
    if !daemon_running(&target.home) {
        return Err(Pm2Error::NotRunning {
            home: target.home.clone(),
        });
    }
    let mut command = Command::new(&target.binary);
    command
        .args(args)
        .env_clear()
        .envs(clean_env(target))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    if nix::unistd::geteuid().as_raw() != target.uid {
        command.uid(target.uid).gid(target.gid);
    }
    let mut child = command.spawn().map_err(|source| Pm2Error::Spawn {
        binary: target.binary.clone(),
        source,
    })?;
    let joined = args.join(" ");
    let start = Instant::now();
    // Read both pipes on threads so a chatty pm2 never blocks on a full pipe.
    let stdout = child.stdout.take().map(read_all);
    let stderr = child.stderr.take().map(read_all);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() < PM2_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Pm2Error::Timeout {
                    args: joined,
                    home: target.home.clone(),
                });
            }
        }
    };
    let text = |h: Option<std::thread::JoinHandle<String>>| {
        h.and_then(|h| h.join().ok()).unwrap_or_default()
    };
    let (out, err) = (text(stdout), text(stderr));
    if status.success() {
        return Ok(out);
    }
    let output = format!("{err}{out}");
    let tail: Vec<&str> = output.lines().rev().take(5).collect();
    Err(Pm2Error::Failed {
        args: joined,
        home: target.home.clone(),
        status: status.to_string(),
        output: tail.into_iter().rev().collect::<Vec<_>>().join(" / "),
    })
}

fn read_all(mut pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}
