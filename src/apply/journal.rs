//! The audit journal: one JSON line per applied, failed, skipped or rolled back step, appended
//! to `STATE/journal.jsonl` and synced before the step counts as recorded.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// File name of the journal inside the state directory.
pub const JOURNAL_FILE: &str = "journal.jsonl";

/// Failures opening, appending to or reading the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The state directory or journal file could not be created or opened.
    #[error("cannot open the journal `{}`", path.display())]
    Open {
        /// The directory or file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// An entry could not be written or synced.
    #[error("cannot append to the journal `{}`", path.display())]
    Append {
        /// The journal file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A line of the journal is not an entry.
    #[error("`{}:{line}:{column}`: not a journal entry: {message}\nhelp: the journal is append-only; move the damaged file aside to start a new one", path.display())]
    Malformed {
        /// The journal file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the JSON parser said.
        message: String,
    },
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryStatus {
    /// The step did what it should.
    Ok,
    /// The step failed.
    Failed,
    /// The step was not run (precondition already met, budget spent, earlier failure).
    Skipped,
    /// The step's effect was undone.
    RolledBack,
}

/// The journal's line format: raised when a field changes meaning, so that a reader can tell.
pub const JOURNAL_FORMAT: u32 = 1;

fn first_format() -> u32 {
    1
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct JournalEntry {
    /// The format of the entry: [`JOURNAL_FORMAT`] when written by this version; entries of an
    /// older nginx-medic, written before the field existed, read as 1.
    #[serde(default = "first_format")]
    pub v: u32,
    /// Unix time in seconds, with sub-second precision.
    pub ts: f64,
    /// Transaction id the step belongs to.
    pub txn: String,
    /// Step number within the transaction.
    pub step: u32,
    /// What kind of step (`edit_file`, `restart_unit`, `reload_nginx`, …).
    pub kind: String,
    /// What the step acted on (a path, a unit, a URL).
    pub target: String,
    /// How the step ended.
    pub status: EntryStatus,
    /// Free text for people: the reason, the error chain, the hash change.
    pub detail: String,
}

impl JournalEntry {
    /// An entry stamped with the current time.
    pub fn now(
        txn: impl Into<String>,
        step: u32,
        kind: impl Into<String>,
        target: impl Into<String>,
        status: EntryStatus,
        detail: impl Into<String>,
    ) -> Self {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        JournalEntry {
            v: JOURNAL_FORMAT,
            ts,
            txn: txn.into(),
            step,
            kind: kind.into(),
            target: target.into(),
            status,
            detail: detail.into(),
        }
    }
}

/// An open journal, appending to `STATE/journal.jsonl`.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
}

impl Journal {
    /// Opens (creating if needed, mode 0600) the journal in `state_dir`, which is created with
    /// mode 0700 if missing.
    pub fn open(state_dir: &Path) -> Result<Self, JournalError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(|source| JournalError::Open {
                path: state_dir.to_path_buf(),
                source,
            })?;
        let path = state_dir.join(JOURNAL_FILE);
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| JournalError::Open {
                path: path.clone(),
                source,
            })?;
        Ok(Journal { path, file })
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `entry` as one line with a single `write`, then syncs the file.
    pub fn append(&mut self, entry: &JournalEntry) -> Result<(), JournalError> {
        let append_err = |source| JournalError::Append {
            path: self.path.clone(),
            source,
        };
        let mut line = serde_json::to_vec(entry)
            .map_err(|e| append_err(io::Error::new(io::ErrorKind::InvalidData, e)))?;
        line.push(b'\n');
        // One write so concurrent appenders (O_APPEND) never interleave inside a line.
        let written = self.file.write(&line).map_err(append_err)?;
        if written != line.len() {
            return Err(append_err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("only {written} of {} bytes were written", line.len()),
            )));
        }
        self.file.sync_all().map_err(append_err)
    }

    /// Every entry in the journal of `state_dir`, oldest first (none if there is no journal).
    pub fn read(state_dir: &Path) -> Result<Vec<JournalEntry>, JournalError> {
        let path = state_dir.join(JOURNAL_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(JournalError::Open { path, source }),
        };
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| JournalError::Malformed {
                    path: path.clone(),
                    line: i + 1,
                    column: e.column(),
                    message: e.to_string(),
                })
            })
            .collect()
    }
}

/// The entries at the end of a journal, as [`Journal::read_recent`] finds them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Recent {
    /// The entries that parse, oldest first.
    pub entries: Vec<JournalEntry>,
    /// Lines in the window that are not entries (a torn last line, damage): left out.
    pub malformed: usize,
    /// Whether the journal is longer than the window (older entries were not read).
    pub truncated: bool,
}

impl Journal {
    /// The entries in the last `max_bytes` of the journal of `state_dir` (none if there is no
    /// journal), oldest first: a bounded read for what must be rebuilt at every start. A line cut
    /// by the window's start and lines that are not entries are left out and counted.
    pub fn read_recent(state_dir: &Path, max_bytes: u64) -> Result<Recent, JournalError> {
        let path = state_dir.join(JOURNAL_FILE);
        let open_err = |source| JournalError::Open {
            path: path.clone(),
            source,
        };
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Recent::default()),
            Err(source) => return Err(open_err(source)),
        };
        let len = file.metadata().map_err(open_err)?.len();
        let start = len.saturating_sub(max_bytes);
        file.seek(SeekFrom::Start(start)).map_err(open_err)?;
        let mut bytes = Vec::new();
        file.take(max_bytes)
            .read_to_end(&mut bytes)
            .map_err(open_err)?;
        let mut text = String::from_utf8_lossy(&bytes).into_owned();
        if start > 0 {
            // the window starts inside a line unless the byte before it ends one
            let cut = text.find('\n').map_or(text.len(), |i| i + 1);
            text.drain(..cut);
        }
        let mut recent = Recent {
            truncated: start > 0,
            ..Recent::default()
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str(line) {
                Ok(entry) => recent.entries.push(entry),
                Err(_) => recent.malformed += 1,
            }
        }
        Ok(recent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn lines_of_an_older_version_without_a_format_still_read() {
        let line = r#"{"ts":1.5,"txn":"t1","step":1,"kind":"edit_file","target":"/x","status":"ok","detail":"d"}"#;
        let entry: JournalEntry = serde_json::from_str(line).unwrap();
        assert_eq!(entry.v, 1);
        let now = serde_json::to_string(&JournalEntry::now("t", 1, "k", "x", EntryStatus::Ok, "d"))
            .unwrap();
        assert!(now.starts_with(r#"{"v":1,"#), "{now}");
    }

    #[test]
    fn appends_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        assert_eq!(Journal::read(&state).unwrap(), vec![]);
        let a = JournalEntry::now(
            "t1",
            1,
            "edit_file",
            "/etc/nginx/conf.d/app.conf",
            EntryStatus::Ok,
            "sha256 aa → bb",
        );
        let b = JournalEntry::now("t1", 2, "reload_nginx", "nginx", EntryStatus::Failed, "");
        {
            let mut j = Journal::open(&state).unwrap();
            j.append(&a).unwrap();
        }
        let mut j = Journal::open(&state).unwrap();
        j.append(&b).unwrap();
        assert_eq!(Journal::read(&state).unwrap(), vec![a.clone(), b]);
        assert!(a.ts > 1_600_000_000.0);

        let text = fs::read_to_string(j.path()).unwrap();
        assert_eq!(text.lines().count(), 2);
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["status"], "ok");
        assert_eq!(first["kind"], "edit_file");
        assert_eq!(
            fs::metadata(j.path()).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(&state).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }

    #[test]
    fn status_names() {
        let e = JournalEntry::now("t", 0, "k", "x", EntryStatus::RolledBack, "d");
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["status"], "rolled_back");
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(
            keys.len(),
            8,
            "v ts txn step kind target status detail: {keys:?}"
        );
    }

    #[test]
    fn a_recent_read_keeps_to_its_window_and_skips_the_cut_and_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        // lines of one length, so the windows below fall where they say
        let entries: Vec<JournalEntry> = (100..200)
            .map(|i| JournalEntry {
                ts: 1_700_000_000.5,
                ..JournalEntry::now("t", i, "k", "x", EntryStatus::Ok, "d")
            })
            .collect();
        for e in &entries {
            j.append(e).unwrap();
        }
        let all = Journal::read_recent(dir.path(), u64::MAX).unwrap();
        assert_eq!(all.entries, entries);
        assert!(!all.truncated);
        let line = fs::metadata(j.path()).unwrap().len() / 100;
        // ten lines and a half: the half line is dropped, not counted as damage
        let tail = Journal::read_recent(dir.path(), line * 10 + line / 2).unwrap();
        assert_eq!(tail.entries, entries[90..]);
        assert_eq!((tail.malformed, tail.truncated), (0, true));
        // a torn last line (a crash inside a write) is counted, the rest still reads
        fs::OpenOptions::new()
            .append(true)
            .open(j.path())
            .unwrap()
            .write_all(b"{\"ts\": 1")
            .unwrap();
        let torn = Journal::read_recent(dir.path(), line * 3).unwrap();
        assert_eq!(torn.entries.len(), 2);
        assert_eq!(torn.malformed, 1);
        assert_eq!(
            Journal::read_recent(&dir.path().join("none"), 10).unwrap(),
            Recent::default()
        );
    }

    #[test]
    fn malformed_line_names_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        j.append(&JournalEntry::now("t", 1, "k", "x", EntryStatus::Ok, ""))
            .unwrap();
        fs::OpenOptions::new()
            .append(true)
            .open(j.path())
            .unwrap()
            .write_all(b"{\"ts\": oops}\n")
            .unwrap();
        let err = Journal::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("journal.jsonl:2:"), "{err}");
        assert!(err.contains("not a journal entry"), "{err}");
    }
}
