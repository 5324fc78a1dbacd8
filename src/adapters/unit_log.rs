//! A backend's own recent output: the tail of its log file, or its journal via `journalctl`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// How much of a log file's end is read.
const TAIL_BYTES: u64 = 64 * 1024;

/// The end of a log file as text (at most the last 64 KiB; invalid UTF-8 replaced). The file
/// is the backend's: read as `fs::read_log_tail` reads (never a FIFO, a device or a symlink
/// another user redirected; bounded whatever its size).
pub fn file_tail(path: &Path) -> std::io::Result<String> {
    let bytes = crate::adapters::fs::read_log_tail(path, TAIL_BYTES)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// How long `journalctl` may take before it is killed.
pub const JOURNAL_TIMEOUT: Duration = Duration::from_secs(5);

/// The most of `journalctl`'s output kept: `lines` lines of a backend's output.
const MAX_JOURNAL_OUTPUT: usize = 1 << 20;

/// The last `lines` journal lines of a unit (`journalctl [--user] -u UNIT -n N -o cat`), `None`
/// when there is no journal or it has nothing for the unit, or the error naming the command
/// when it could not run or was killed at [`JOURNAL_TIMEOUT`].
pub fn journal_tail(
    unit: &str,
    user: bool,
    lines: usize,
) -> Result<Option<String>, crate::adapters::child::ChildError> {
    journal_tail_with(Path::new("journalctl"), unit, user, lines, JOURNAL_TIMEOUT)
}

fn journal_tail_with(
    program: &Path,
    unit: &str,
    user: bool,
    lines: usize,
    timeout: Duration,
) -> Result<Option<String>, crate::adapters::child::ChildError> {
    let mut cmd = Command::new(program);
    if user {
        cmd.arg("--user");
    }
    cmd.args(["--no-pager", "-q", "-o", "cat", "-n"])
        .arg(lines.to_string())
        .arg("-u")
        .arg(unit);
    let done = crate::adapters::child::run_within(&mut cmd, timeout, MAX_JOURNAL_OUTPUT)?;
    let out = String::from_utf8_lossy(&done.stdout).into_owned();
    Ok((done.status.success() && !out.trim().is_empty()).then_some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::fs::hostile;

    /// A wedged `journalctl` is killed at its deadline and named.
    #[test]
    fn a_wedged_journal_read_times_out_naming_the_command() {
        use std::os::unix::fs::PermissionsExt;
        let dir = hostile::dir("journal");
        let fake = dir.0.join("journalctl");
        std::fs::write(&fake, "#!/bin/sh\nexec sleep 30\n").unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let started = std::time::Instant::now();
        let e = journal_tail_with(&fake, "api.service", false, 20, Duration::from_millis(300))
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        let text = e.to_string();
        assert!(
            text.contains(
                "journalctl --no-pager -q -o cat -n 20 -u api.service` did not finish within 0.3s"
            ),
            "{text}"
        );
    }

    /// Issue 13, acceptance 6, for a backend's log file: each hostile kind is refused (or, the
    /// sparse file, read only at its end) at once, naming why.
    #[test]
    fn a_hostile_log_file_is_read_in_bounded_time_and_memory() {
        let dir = hostile::dir("log");
        for (i, kind) in hostile::KINDS.iter().enumerate() {
            let path = dir.0.join(format!("app-{i}.log"));
            hostile::make(kind, &path);
            let read = hostile::within(Duration::from_secs(5), kind, {
                let path = path.clone();
                move || file_tail(&path)
            });
            match *kind {
                "2 GB sparse" => {
                    let text = read.unwrap();
                    assert_eq!(text.len() as u64, TAIL_BYTES, "{kind}: its end only");
                }
                _ => {
                    let e = match read {
                        Ok(text) => panic!("{kind}: read {} bytes instead of refusing", text.len()),
                        Err(e) => e,
                    };
                    assert!(e.to_string().contains("not a regular file"), "{kind}: {e}");
                }
            }
        }
    }
}
