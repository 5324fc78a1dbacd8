//! A backend's own recent output: the tail of its log file, or its journal via `journalctl`.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// How much of a log file's end is read.
const TAIL_BYTES: u64 = 64 * 1024;

/// The end of a log file as text (at most the last 64 KiB; invalid UTF-8 replaced).
pub fn file_tail(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))?;
    let mut bytes = Vec::new();
    file.take(TAIL_BYTES).read_to_end(&mut bytes)?;
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
