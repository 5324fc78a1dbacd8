//! A backend's own recent output: the tail of its log file, or its journal via `journalctl`.

use std::io::Read;
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

/// The last `lines` journal lines of a unit (`journalctl [--user] -u UNIT -n N -o cat`), or
/// `None` when there is no journal or it has nothing for the unit.
pub fn journal_tail(unit: &str, user: bool, lines: usize) -> Option<String> {
    let mut cmd = Command::new("journalctl");
    if user {
        cmd.arg("--user");
    }
    cmd.args(["--no-pager", "-q", "-o", "cat", "-n"])
        .arg(lines.to_string())
        .arg("-u")
        .arg(unit)
        .stdin(std::process::Stdio::null());
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    // journalctl is quick; a wedged one is killed rather than waited for.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut out = String::new();
                child.stdout.take()?.read_to_string(&mut out).ok()?;
                return (status.success() && !out.trim().is_empty()).then_some(out);
            }
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::fs::hostile;

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
