//! Child processes with a deadline: a wedged `nginx -t` or `journalctl` is killed and reported
//! as a timeout naming the command, never waited for without end.

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A child that could not be run to its end.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("cannot run `{command}`")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` did not finish within {}s and was killed\nhelp: see why it hangs by running it by hand", timeout.as_secs_f32())]
    TimedOut { command: String, timeout: Duration },
    #[error("cannot wait for `{command}`")]
    Wait {
        command: String,
        source: std::io::Error,
    },
}

/// What a child printed and how it ended.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// The command line as it is shown in errors: the program and its arguments.
pub fn shown(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` (stdin closed) until it exits or `timeout` passes; then it is killed (SIGKILL)
/// and reaped, and the error names it. At most `max_output` bytes of each of stdout and stderr
/// are kept; the rest is read and dropped, so a chatty child never blocks on a full pipe.
pub fn run_within(
    cmd: &mut Command,
    timeout: Duration,
    max_output: usize,
) -> Result<Finished, ChildError> {
    let command = shown(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ChildError::Spawn {
            command: command.clone(),
            source,
        })?;
    let stdout = child.stdout.take().map(|r| drain(r, max_output));
    let stderr = child.stderr.take().map(|r| drain(r, max_output));
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                // The readers end when the pipes close; a grandchild holding one open keeps
                // its reader (a detached thread) alive, never this caller.
                return Err(ChildError::TimedOut { command, timeout });
            }
            Err(source) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ChildError::Wait { command, source });
            }
        }
    };
    let collect = |reader: Option<std::thread::JoinHandle<Vec<u8>>>| {
        reader.and_then(|r| r.join().ok()).unwrap_or_default()
    };
    Ok(Finished {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}

/// Reads a pipe to its end on a thread of its own, keeping the first `max` bytes.
fn drain(mut pipe: impl Read + Send + 'static, max: usize) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = max.saturating_sub(kept.len());
                    kept.extend_from_slice(chunk.get(..n.min(room)).unwrap_or_default());
                }
            }
        }
        kept
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_past_its_deadline_is_killed_and_named() {
        let started = Instant::now();
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let e = run_within(&mut cmd, Duration::from_millis(200), 1024).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(matches!(e, ChildError::TimedOut { .. }), "{e:?}");
        assert_eq!(
            e.to_string().lines().next().unwrap(),
            "`sleep 30` did not finish within 0.2s and was killed"
        );
    }

    #[test]
    fn output_is_kept_up_to_the_cap_and_the_rest_drained() {
        // 1 MiB through a pipe whose buffer is 64 KiB: the child does not block on it
        let mut cmd = Command::new("head");
        cmd.args(["-c", "1048576", "/dev/zero"]);
        let done = run_within(&mut cmd, Duration::from_secs(10), 1000).unwrap();
        assert!(done.status.success());
        assert_eq!(done.stdout.len(), 1000);
    }

    #[test]
    fn a_missing_program_is_a_spawn_error() {
        let mut cmd = Command::new("/nonexistent/nginx");
        cmd.arg("-t");
        let e = run_within(&mut cmd, Duration::from_secs(1), 10).unwrap_err();
        assert_eq!(e.to_string(), "cannot run `/nonexistent/nginx -t`");
    }
}
