//! File transactions: every file `apply` edits is checked against the plan's hash, backed up
//! once, replaced atomically, and put back byte for byte on rollback.
//!
//! Layout under the state directory:
//! ```text
//! STATE/backups/TXN/manifest.json   txn id, state, and every backup (written before each edit)
//! STATE/backups/TXN/etc_nginx_…     the byte-for-byte copies
//! ```
//! The manifest lists a file before that file is changed, so a transaction cut short by a crash
//! can be found with [`FileTransaction::pending`] and undone with [`FileTransaction::resume`].
//! Dropping an open transaction (an error path, a cancelled future on SIGTERM) rolls it back.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::adapters::fs::{self as afs, describe, Backup, FsError, Pinned, Restored};
use crate::failpoint::fail_point;

/// Directory under the state directory that holds one folder per transaction.
pub const BACKUPS_DIR: &str = "backups";

/// File in a transaction's folder that records its state and backups.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Failures starting, editing in, or finishing a transaction.
#[derive(Debug, thiserror::Error)]
pub enum TxnError {
    /// The id cannot be used as a directory name.
    #[error(
        "invalid transaction id `{id}`: use 1 to 128 of `A-Z a-z 0-9 . _ -`, not starting with `.`"
    )]
    InvalidId {
        /// The id as given.
        id: String,
    },
    /// A transaction with this id was started before.
    #[error("transaction `{id}` already exists in `{}`\nhelp: use a fresh transaction id", dir.display())]
    AlreadyExists {
        /// The id.
        id: String,
        /// Its folder.
        dir: PathBuf,
    },
    /// No transaction with this id exists.
    #[error("no transaction `{id}` in `{}`", dir.display())]
    NotFound {
        /// The id.
        id: String,
        /// Where it was looked for.
        dir: PathBuf,
    },
    /// Edited paths must be absolute so the manifest means the same thing after a restart.
    #[error("`{}` is not an absolute path", path.display())]
    RelativePath {
        /// The path as given.
        path: PathBuf,
    },
    /// The file is not what the plan saw.
    #[error(
        "`{}` changed since the plan was made (now {}, the plan expected {})\nhelp: make a new plan and review it before applying",
        path.display(), describe(found.as_deref()), describe(expected.as_deref())
    )]
    Changed {
        /// The file.
        path: PathBuf,
        /// Hash the plan recorded (`None`: the file should not exist).
        expected: Option<String>,
        /// Hash now (`None`: the file does not exist).
        found: Option<String>,
    },
    /// The manifest could not be read or parsed.
    #[error("cannot read the transaction manifest `{}`: {reason}", path.display())]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A file operation failed.
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// Where a transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxnState {
    /// Edits may be in progress; a crash here leaves work for `resume` + `rollback`.
    Open,
    /// The edits stay; the backups are kept for audit.
    Committed,
    /// Every touched file was put back.
    RolledBack,
    /// Rollback ran but at least one file could not be put back (see the journal).
    RollbackIncomplete,
    /// Found open at a start and not completely rolled back: left for a person, and the
    /// daemon only reports plans that touch its files until its folder is moved away.
    Escalated,
}

/// The format of `manifest.json`, raised when a field changes meaning.
pub const MANIFEST_FORMAT: u32 = 1;

fn first_format() -> u32 {
    1
}

/// What `manifest.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct TxnManifest {
    /// The manifest's format ([`MANIFEST_FORMAT`]); manifests written before the field existed
    /// read as 1.
    #[serde(default = "first_format")]
    pub version: u32,
    /// The transaction id.
    pub txn: String,
    /// Where it stands.
    pub state: TxnState,
    /// Backups of every touched file, in the order they were first touched.
    pub files: Vec<Backup>,
    /// Units this transaction had restarted (recorded before each job): a recovery that puts
    /// the files back restarts them onto the restored files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub units: Vec<String>,
}

/// A file edit that was made.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub struct Edit {
    /// The file.
    pub path: PathBuf,
    /// Hash before the edit (`None`: the file was created).
    pub before: Option<String>,
    /// Hash after the edit.
    pub after: String,
}

/// How putting one file back went.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RollbackOutcome {
    /// The original bytes, owner and mode are back.
    Restored,
    /// The file did not exist before and was removed.
    Removed,
    /// Someone changed the file after nginx-medic wrote it: left as it is, not reverted.
    LeftAlone {
        /// What is there compared with what nginx-medic wrote.
        reason: String,
    },
    /// The file could not be put back.
    Failed {
        /// The error chain.
        reason: String,
    },
}

/// One file's rollback.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub struct RollbackReport {
    /// The file.
    pub path: PathBuf,
    /// How it went.
    pub outcome: RollbackOutcome,
}

/// How a rollback ended: each file, the transaction's state, and whether its manifest says so.
#[derive(Debug)]
pub struct RollbackEnd {
    /// Each touched file, last touched first.
    pub reports: Vec<RollbackReport>,
    /// The state reached.
    pub state: TxnState,
    /// Why the manifest could not record `state`, if it could not: on disk the transaction is
    /// still open, and the next start rolls it back again (a no-op over restored files).
    pub unrecorded: Option<String>,
}

/// A transaction folder as [`FileTransaction::scan`] finds it: its id and its manifest, or why
/// that cannot be read.
pub type Found = (String, Result<TxnManifest, TxnError>);

/// A set of file edits that are committed or rolled back together.
#[derive(Debug)]
pub struct FileTransaction {
    id: String,
    dir: PathBuf,
    backups: Vec<Backup>,
    /// Each backed-up path as found in this process, beside `backups` (`None`: a resumed
    /// transaction, found again and checked against the manifest when first needed).
    pinned: Vec<Option<Pinned>>,
    state: TxnState,
    units: Vec<String>,
}

impl FileTransaction {
    /// Starts transaction `txn_id`, creating `STATE/backups/TXN/` (mode 0700).
    pub fn begin(state_dir: &Path, txn_id: &str) -> Result<Self, TxnError> {
        check_id(txn_id)?;
        let parent = state_dir.join(BACKUPS_DIR);
        let dir = parent.join(txn_id);
        let io_err = |path: &Path, source| {
            TxnError::Fs(FsError::Write {
                path: path.to_path_buf(),
                source,
            })
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&parent)
            .map_err(|e| io_err(&parent, e))?;
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(TxnError::AlreadyExists {
                    id: txn_id.to_string(),
                    dir,
                })
            }
            Err(e) => return Err(io_err(&dir, e)),
        }
        let txn = FileTransaction {
            id: txn_id.to_string(),
            dir,
            backups: Vec::new(),
            pinned: Vec::new(),
            state: TxnState::Open,
            units: Vec::new(),
        };
        txn.write_manifest()?;
        Ok(txn)
    }

    /// Ids of transactions left open in `state_dir` (cut short by a crash), oldest id first: the
    /// open ones of [`FileTransaction::scan`]; an unreadable manifest is an error.
    pub fn pending(state_dir: &Path) -> Result<Vec<String>, TxnError> {
        let mut open = Vec::new();
        for (id, manifest) in Self::scan(state_dir)? {
            if manifest?.state == TxnState::Open {
                open.push(id);
            }
        }
        Ok(open)
    }

    /// Every transaction folder in `state_dir` with its manifest (or why it cannot be read),
    /// by id: what recovery at start goes through. A folder without a manifest (a crash
    /// between creating it and writing the first manifest: nothing was touched) is left out.
    pub fn scan(state_dir: &Path) -> Result<Vec<Found>, TxnError> {
        let parent = state_dir.join(BACKUPS_DIR);
        let entries = match fs::read_dir(&parent) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(TxnError::Fs(FsError::Read {
                    path: parent,
                    source,
                }))
            }
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| FsError::Read {
                path: parent.clone(),
                source,
            })?;
            let id = entry.file_name().to_string_lossy().into_owned();
            let manifest = entry.path().join(MANIFEST_FILE);
            if check_id(&id).is_err() || !entry.path().is_dir() || !manifest.exists() {
                continue;
            }
            found.push((id, read_manifest(&manifest)));
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found)
    }

    /// Takes over open transaction `txn_id` from its manifest, to roll it back (or commit it).
    pub fn resume(state_dir: &Path, txn_id: &str) -> Result<Self, TxnError> {
        check_id(txn_id)?;
        let dir = state_dir.join(BACKUPS_DIR).join(txn_id);
        if !dir.is_dir() {
            return Err(TxnError::NotFound {
                id: txn_id.to_string(),
                dir: state_dir.join(BACKUPS_DIR),
            });
        }
        let manifest = read_manifest(&dir.join(MANIFEST_FILE))?;
        Ok(FileTransaction {
            id: manifest.txn,
            dir,
            pinned: manifest.files.iter().map(|_| None).collect(),
            backups: manifest.files,
            state: manifest.state,
            units: manifest.units,
        })
    }

    /// The transaction id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The folder holding the manifest and backups.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the transaction stands.
    pub fn state(&self) -> TxnState {
        self.state
    }

    /// Every file this transaction has touched, in the order first touched.
    pub fn touched(&self) -> Vec<PathBuf> {
        self.backups.iter().map(|b| b.original.clone()).collect()
    }

    /// The backups taken so far.
    pub fn backups(&self) -> &[Backup] {
        &self.backups
    }

    /// Records, before its job runs, that this transaction restarts `unit`.
    pub fn note_unit(&mut self, unit: &str) -> Result<(), TxnError> {
        if self.units.iter().any(|u| u == unit) {
            return Ok(());
        }
        self.units.push(unit.to_string());
        self.write_manifest()
    }

    /// The units this transaction restarted (or was restarting).
    pub fn units(&self) -> &[String] {
        &self.units
    }

    /// Replaces the file at `path` with `new_bytes`, if it still has `expected_hash` (`None`:
    /// the file must not exist yet).
    ///
    /// The first edit of a path finds it once ([`Pinned::locate`]: no symlink another user
    /// could swap in is followed), backs it up from the open file and records it in the
    /// manifest before writing; every later edit and the rollback go through the same open
    /// directory. The new file is recorded in the manifest before it is swapped in, and it
    /// replaces only the file that was checked. A mismatch changes nothing.
    pub fn edit(
        &mut self,
        path: &Path,
        expected_hash: Option<&str>,
        new_bytes: &[u8],
    ) -> Result<Edit, TxnError> {
        if !path.is_absolute() {
            return Err(TxnError::RelativePath {
                path: path.to_path_buf(),
            });
        }
        let mismatch = |found: Option<String>| TxnError::Changed {
            path: path.to_path_buf(),
            expected: expected_hash.map(str::to_string),
            found,
        };
        let index = match self.backups.iter().position(|b| b.original == path) {
            Some(i) => {
                if self.pinned.get(i).is_some_and(Option::is_none) {
                    let again = Pinned::relocate(&self.backups[i])?;
                    self.pinned[i] = Some(again);
                }
                i
            }
            None => {
                let pinned = Pinned::locate(path)?;
                let backup = pinned.backup(&self.dir)?;
                if backup.hash.as_deref() != expected_hash {
                    if let Some(copy) = &backup.copy {
                        let _ = fs::remove_file(copy);
                    }
                    return Err(mismatch(backup.hash));
                }
                self.backups.push(backup);
                self.pinned.push(Some(pinned));
                self.write_manifest()?;
                fail_point!("txn.after-backup", |_| Err(TxnError::Fs(FsError::Write {
                    path: path.to_path_buf(),
                    source: crate::failpoint::injected("txn.after-backup"),
                })));
                self.backups.len() - 1
            }
        };
        let (Some(Some(pinned)), Some(backup)) = (self.pinned.get(index), self.backups.get(index))
        else {
            return Err(TxnError::Manifest {
                path: self.dir.join(MANIFEST_FILE),
                reason: "the transaction lost track of a file".into(),
            });
        };
        // What must be there now: the original, or what this transaction wrote last.
        let expect = match backup.written.last() {
            Some(w) => Some((w.file, w.hash.clone())),
            None => backup.file.zip(backup.hash.clone()),
        };
        let found = pinned.current()?;
        let found_id = found.as_ref().map(|c| (c.id, c.hash.clone()));
        if found_id != expect || expect.as_ref().map(|(_, h)| h.as_str()) != expected_hash {
            return Err(mismatch(found.map(|c| c.hash)));
        }
        let staged = {
            let _scope = crate::failpoint::EditScope::enter();
            pinned.stage_edit(new_bytes, Some(backup))?
        };
        let written = staged.written();
        if let Some(b) = self.backups.get_mut(index) {
            b.written.push(written.clone());
        }
        self.write_manifest()?;
        let swapped = match self.pinned.get(index) {
            Some(Some(pinned)) => {
                let _scope = crate::failpoint::EditScope::enter();
                pinned.swap_in(staged, expect.as_ref().map(|(id, h)| (*id, h.as_str())))
            }
            _ => Ok(()),
        };
        if let Err(e) = swapped {
            // Nothing was swapped in: the manifest keeps only what is really there.
            if let Some(b) = self.backups.get_mut(index) {
                b.written.retain(|w| *w != written);
            }
            let _ = self.write_manifest();
            return Err(e.into());
        }
        Ok(Edit {
            path: path.to_path_buf(),
            before: expect.map(|(_, h)| h),
            after: written.hash,
        })
    }

    /// Keeps the edits and the backups (for audit) and marks the transaction committed.
    ///
    /// If the manifest cannot be updated the edits still stay; the error says so.
    pub fn commit(mut self) -> Result<(), TxnError> {
        self.state = TxnState::Committed;
        self.write_manifest()
    }

    /// Recovery's rollback of a transaction found open at start: as [`Self::rollback`], but a
    /// rollback that is not complete marks the transaction [`TxnState::Escalated`].
    pub fn rollback_or_escalate(mut self) -> RollbackEnd {
        let (reports, mut unrecorded) = self.rollback_in_place();
        if self.state == TxnState::RollbackIncomplete {
            self.state = TxnState::Escalated;
            unrecorded = self.record("escalation");
        }
        RollbackEnd {
            reports,
            state: self.state,
            unrecorded,
        }
    }

    /// Puts every touched file back byte for byte (with owner, mode and attributes), last
    /// touched first, and reports each: only over what nginx-medic wrote, so a file someone
    /// changed since is left alone (and reported). Failures do not stop the others.
    pub fn rollback(mut self) -> Vec<RollbackReport> {
        self.rollback_in_place().0
    }

    /// The files put back, and why the manifest could not record it, if it could not.
    fn rollback_in_place(&mut self) -> (Vec<RollbackReport>, Option<String>) {
        let mut reports = Vec::with_capacity(self.backups.len());
        for (i, b) in self.backups.iter().enumerate().rev() {
            let restored = match self.pinned.get(i) {
                Some(Some(pinned)) => pinned.restore(b),
                _ => afs::restore(b),
            };
            let outcome = match restored {
                Ok(Restored::Restored) => RollbackOutcome::Restored,
                Ok(Restored::Removed) => RollbackOutcome::Removed,
                Ok(Restored::AsBefore) if b.existed => RollbackOutcome::Restored,
                Ok(Restored::AsBefore) => RollbackOutcome::Removed,
                Ok(Restored::LeftAlone { reason }) => RollbackOutcome::LeftAlone { reason },
                Err(e) => RollbackOutcome::Failed {
                    reason: crate::error_text::chain(&e),
                },
            };
            reports.push(RollbackReport {
                path: b.original.clone(),
                outcome,
            });
        }
        let complete = reports.iter().all(|r| {
            matches!(
                r.outcome,
                RollbackOutcome::Restored | RollbackOutcome::Removed
            )
        });
        self.state = if complete {
            TxnState::RolledBack
        } else {
            TxnState::RollbackIncomplete
        };
        let unrecorded = self.record("rollback");
        (reports, unrecorded)
    }

    /// Writes the manifest with the state just reached (`what`: `rollback`, `escalation`);
    /// why it could not, logged, if it could not.
    fn record(&self, what: &str) -> Option<String> {
        let e = self.write_manifest().err()?;
        let why = crate::error_text::chain(&e);
        tracing::error!(txn = %self.id, error = %why, "cannot record the {what} in the manifest");
        Some(why)
    }

    fn write_manifest(&self) -> Result<(), TxnError> {
        let manifest = TxnManifest {
            version: MANIFEST_FORMAT,
            txn: self.id.clone(),
            state: self.state,
            files: self.backups.clone(),
            units: self.units.clone(),
        };
        let path = self.dir.join(MANIFEST_FILE);
        let mut bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| TxnError::Manifest {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        bytes.push(b'\n');
        afs::atomic_write(&path, &bytes)?;
        Ok(())
    }
}

impl Drop for FileTransaction {
    /// An open transaction that is dropped (early return, panic, cancelled future) is rolled
    /// back, best effort, with each file logged.
    fn drop(&mut self) {
        if self.state != TxnState::Open {
            return;
        }
        if self.backups.is_empty() {
            self.state = TxnState::RolledBack;
            let _ = self.write_manifest();
            return;
        }
        tracing::warn!(txn = %self.id, files = self.backups.len(), "transaction dropped without commit or rollback; rolling back");
        for report in self.rollback_in_place().0 {
            match report.outcome {
                RollbackOutcome::Failed { reason } => {
                    tracing::error!(txn = %self.id, path = %report.path.display(), %reason, "rollback failed")
                }
                RollbackOutcome::LeftAlone { reason } => {
                    tracing::warn!(txn = %self.id, path = %report.path.display(), %reason, "left alone")
                }
                outcome => {
                    tracing::info!(txn = %self.id, path = %report.path.display(), ?outcome, "rolled back")
                }
            }
        }
    }
}

fn check_id(id: &str) -> Result<(), TxnError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(TxnError::InvalidId { id: id.to_string() })
    }
}

fn read_manifest(path: &Path) -> Result<TxnManifest, TxnError> {
    let text = fs::read_to_string(path).map_err(|e| TxnError::Manifest {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let manifest: TxnManifest = serde_json::from_str(&text).map_err(|e| TxnError::Manifest {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if manifest.version > MANIFEST_FORMAT {
        return Err(TxnError::Manifest {
            path: path.to_path_buf(),
            reason: format!(
                "format {} is newer than this nginx-medic reads ({MANIFEST_FORMAT}); finish it with the newer version",
                manifest.version
            ),
        });
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_without_a_version_read_as_the_first_format_and_newer_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MANIFEST_FILE);
        fs::write(&path, r#"{"txn":"t0","state":"open","files":[]}"#).unwrap();
        assert_eq!(read_manifest(&path).unwrap().version, 1);
        fs::write(
            &path,
            r#"{"version":9,"txn":"t0","state":"open","files":[]}"#,
        )
        .unwrap();
        let e = read_manifest(&path).unwrap_err().to_string();
        assert!(e.contains("format 9 is newer"), "{e}");
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    fn owner_mode(path: &Path) -> (u32, u32, u32) {
        let m = fs::metadata(path).unwrap();
        (m.uid(), m.gid(), m.mode() & 0o7777)
    }

    /// A config dir with one existing file (owned by www-data 33 when root, mode 0640).
    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let etc = dir.path().join("etc");
        fs::create_dir(&etc).unwrap();
        let conf = etc.join("app.conf");
        fs::write(&conf, b"upstream app { server 127.0.0.1:9000; }\n").unwrap();
        if is_root() {
            std::os::unix::fs::chown(&conf, Some(33), Some(33)).unwrap();
        }
        fs::set_permissions(&conf, fs::Permissions::from_mode(0o640)).unwrap();
        (dir, state, conf)
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn edit_then_rollback_restores_existing_and_removes_new() {
        let (_d, state, conf) = setup();
        let original = fs::read(&conf).unwrap();
        let before = owner_mode(&conf);
        let new_file = conf.with_file_name("extra.conf");

        let mut txn = FileTransaction::begin(&state, "t1").unwrap();
        let h = afs::file_hash(&conf).unwrap();
        let edit = txn.edit(&conf, Some(&h), b"edited once\n").unwrap();
        assert_eq!(edit.before.as_deref(), Some(h.as_str()));
        assert_eq!(edit.after, afs::bytes_hash(b"edited once\n"));
        // A second edit checks against the first edit's result and is not backed up again.
        let h1 = afs::file_hash(&conf).unwrap();
        txn.edit(&conf, Some(&h1), b"edited twice\n").unwrap();
        txn.edit(&new_file, None, b"new\n").unwrap();
        assert_eq!(txn.touched(), vec![conf.clone(), new_file.clone()]);
        assert_eq!(fs::read(&conf).unwrap(), b"edited twice\n");
        assert_eq!(owner_mode(&conf), before);

        let reports = txn.rollback();
        assert_eq!(
            reports,
            vec![
                RollbackReport {
                    path: new_file.clone(),
                    outcome: RollbackOutcome::Removed
                },
                RollbackReport {
                    path: conf.clone(),
                    outcome: RollbackOutcome::Restored
                },
            ]
        );
        assert_eq!(fs::read(&conf).unwrap(), original);
        assert_eq!(owner_mode(&conf), before);
        if is_root() {
            assert_eq!(before, (33, 33, 0o640));
        }
        assert!(!new_file.exists());
        // No temp files anywhere; one backup copy plus the manifest.
        assert_eq!(names(conf.parent().unwrap()), vec!["app.conf"]);
        let txn_dir = state.join("backups/t1");
        assert_eq!(names(&txn_dir).len(), 2, "{:?}", names(&txn_dir));
        let m = read_manifest(&txn_dir.join(MANIFEST_FILE)).unwrap();
        assert_eq!(m.state, TxnState::RolledBack);
        assert_eq!(m.files.len(), 2);
    }

    #[test]
    fn hash_mismatch_is_refused_and_changes_nothing() {
        let (_d, state, conf) = setup();
        let mut txn = FileTransaction::begin(&state, "t2").unwrap();
        let stale = afs::bytes_hash(b"what the plan saw");
        let err = txn.edit(&conf, Some(&stale), b"x").unwrap_err();
        assert!(matches!(err, TxnError::Changed { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("changed since the plan was made"), "{msg}");
        assert!(msg.contains("\nhelp: make a new plan"), "{msg}");
        assert_eq!(
            fs::read(&conf).unwrap(),
            b"upstream app { server 127.0.0.1:9000; }\n"
        );
        assert!(txn.touched().is_empty());
        assert_eq!(names(txn.dir()), vec![MANIFEST_FILE]);

        // A file the plan expected to be absent but which exists.
        let err = txn.edit(&conf, None, b"x").unwrap_err();
        assert!(
            err.to_string().contains("the plan expected no file"),
            "{err}"
        );
        // A file the plan expected but which is gone.
        let gone = conf.with_file_name("gone.conf");
        let err = txn.edit(&gone, Some(&stale), b"x").unwrap_err();
        assert!(err.to_string().contains("(now no file,"), "{err}");
        assert!(!gone.exists());
        txn.commit().unwrap();
    }

    #[test]
    fn drop_without_commit_rolls_back() {
        let (_d, state, conf) = setup();
        let original = fs::read(&conf).unwrap();
        let new_file = conf.with_file_name("new.conf");
        {
            let mut txn = FileTransaction::begin(&state, "t3").unwrap();
            let h = afs::file_hash(&conf).unwrap();
            txn.edit(&conf, Some(&h), b"half done").unwrap();
            txn.edit(&new_file, None, b"new").unwrap();
        }
        assert_eq!(fs::read(&conf).unwrap(), original);
        assert!(!new_file.exists());
        let m = read_manifest(&state.join("backups/t3").join(MANIFEST_FILE)).unwrap();
        assert_eq!(m.state, TxnState::RolledBack);
    }

    #[test]
    fn commit_keeps_edits_and_backups() {
        let (_d, state, conf) = setup();
        let original = fs::read(&conf).unwrap();
        let mut txn = FileTransaction::begin(&state, "t4").unwrap();
        let h = afs::file_hash(&conf).unwrap();
        txn.edit(&conf, Some(&h), b"kept").unwrap();
        let copy = txn.backups()[0].copy.clone().unwrap();
        txn.commit().unwrap();
        assert_eq!(fs::read(&conf).unwrap(), b"kept");
        assert_eq!(fs::read(copy).unwrap(), original);
        let m = read_manifest(&state.join("backups/t4").join(MANIFEST_FILE)).unwrap();
        assert_eq!(m.state, TxnState::Committed);
        assert_eq!(
            FileTransaction::pending(&state).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn crashed_transaction_is_found_and_rolled_back() {
        let (_d, state, conf) = setup();
        let original = fs::read(&conf).unwrap();
        let mut txn = FileTransaction::begin(&state, "t5").unwrap();
        let h = afs::file_hash(&conf).unwrap();
        txn.edit(&conf, Some(&h), b"crash mid-apply").unwrap();
        std::mem::forget(txn); // as if the process was killed
        assert_eq!(FileTransaction::pending(&state).unwrap(), vec!["t5"]);
        let txn = FileTransaction::resume(&state, "t5").unwrap();
        assert_eq!(txn.touched(), vec![conf.clone()]);
        let reports = txn.rollback();
        assert_eq!(reports.len(), 1);
        assert_eq!(fs::read(&conf).unwrap(), original);
        assert!(FileTransaction::pending(&state).unwrap().is_empty());
    }

    #[test]
    fn ids_and_paths_are_checked() {
        let (_d, state, _conf) = setup();
        for bad in ["", "../x", "a/b", ".hidden", "a b"] {
            assert!(
                matches!(
                    FileTransaction::begin(&state, bad),
                    Err(TxnError::InvalidId { .. })
                ),
                "{bad}"
            );
        }
        let mut txn = FileTransaction::begin(&state, "t6").unwrap();
        let err = FileTransaction::begin(&state, "t6").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("transaction `t6` already exists"),
            "{err}"
        );
        let err = txn.edit(Path::new("rel.conf"), None, b"x").unwrap_err();
        assert!(matches!(err, TxnError::RelativePath { .. }), "{err:?}");
        assert!(matches!(
            FileTransaction::resume(&state, "nope"),
            Err(TxnError::NotFound { .. })
        ));
    }

    #[test]
    fn failed_restore_is_reported_and_others_continue() {
        let (_d, state, conf) = setup();
        let other = conf.with_file_name("other.conf");
        fs::write(&other, b"other original").unwrap();
        let mut txn = FileTransaction::begin(&state, "t7").unwrap();
        txn.edit(&conf, Some(&afs::file_hash(&conf).unwrap()), b"a")
            .unwrap();
        txn.edit(&other, Some(&afs::file_hash(&other).unwrap()), b"b")
            .unwrap();
        // Damage the first file's backup.
        fs::write(txn.backups()[0].copy.as_ref().unwrap(), b"rot").unwrap();
        let reports = txn.rollback();
        assert_eq!(reports[0].outcome, RollbackOutcome::Restored);
        assert!(
            matches!(&reports[1].outcome, RollbackOutcome::Failed { reason } if reason.contains("is damaged")),
            "{reports:?}"
        );
        assert_eq!(fs::read(&other).unwrap(), b"other original");
        let m = read_manifest(&state.join("backups/t7").join(MANIFEST_FILE)).unwrap();
        assert_eq!(m.state, TxnState::RollbackIncomplete);
    }

    #[test]
    fn a_rollback_the_manifest_cannot_record_says_so() {
        let (_d, state, conf) = setup();
        let original = fs::read(&conf).unwrap();
        let mut txn = FileTransaction::begin(&state, "t10").unwrap();
        txn.edit(&conf, Some(&afs::file_hash(&conf).unwrap()), b"a")
            .unwrap();
        // a directory where the manifest is: the rename over it fails
        let manifest = state.join("backups/t10").join(MANIFEST_FILE);
        fs::remove_file(&manifest).unwrap();
        fs::create_dir_all(manifest.join("in-the-way")).unwrap();
        let end = txn.rollback_or_escalate();
        assert_eq!(fs::read(&conf).unwrap(), original, "the file is back");
        assert_eq!(end.state, TxnState::RolledBack);
        let why = end.unrecorded.expect("the manifest did not record it");
        assert!(why.contains("manifest.json"), "{why}");
    }

    #[test]
    fn a_rollback_leaves_a_file_someone_changed_since_and_reports_it() {
        let (_d, state, conf) = setup();
        let mut txn = FileTransaction::begin(&state, "t8").unwrap();
        txn.edit(&conf, Some(&afs::file_hash(&conf).unwrap()), b"medic's\n")
            .unwrap();
        fs::write(&conf, b"an admin's edit\n").unwrap();
        let reports = txn.rollback();
        assert_eq!(fs::read(&conf).unwrap(), b"an admin's edit\n");
        assert!(
            matches!(&reports[0].outcome, RollbackOutcome::LeftAlone { reason } if reason.contains("changed by someone else since nginx-medic wrote it")),
            "{reports:?}"
        );
        let m = read_manifest(&state.join("backups/t8").join(MANIFEST_FILE)).unwrap();
        assert_eq!(m.state, TxnState::RollbackIncomplete);
    }

    #[test]
    fn a_crashed_transaction_is_rolled_back_only_over_what_it_wrote() {
        let (_d, state, conf) = setup();
        let original = fs::read(&conf).unwrap();
        let other = conf.with_file_name("other.conf");
        fs::write(&other, b"other").unwrap();
        let mut txn = FileTransaction::begin(&state, "t9").unwrap();
        txn.edit(&conf, Some(&afs::file_hash(&conf).unwrap()), b"a")
            .unwrap();
        txn.edit(&other, Some(&afs::file_hash(&other).unwrap()), b"b")
            .unwrap();
        std::mem::forget(txn);
        fs::write(&other, b"edited by hand after the crash").unwrap();
        let reports = FileTransaction::resume(&state, "t9").unwrap().rollback();
        assert!(
            matches!(reports[0].outcome, RollbackOutcome::LeftAlone { .. }),
            "{reports:?}"
        );
        assert_eq!(reports[1].outcome, RollbackOutcome::Restored);
        assert_eq!(fs::read(&conf).unwrap(), original);
        assert_eq!(fs::read(&other).unwrap(), b"edited by hand after the crash");
    }

    /// The owner of a `.env`'s directory swaps it for a symlink to a file of root's while
    /// whole transactions (manifest, backup, write, rollback) run over it: the canary never
    /// changes. (The 10,000-round race of the file operations alone is in `adapters::fs`.)
    #[test]
    fn a_symlink_swap_never_redirects_a_transaction() {
        if !is_root() {
            return;
        }
        let mut n = 0u32;
        let state = tempfile::tempdir_in(afs::race::scratch()).unwrap();
        let (edited, swaps) = afs::race::run(1_000, |env| {
            n += 1;
            let mut txn = FileTransaction::begin(state.path(), &format!("race-{n}")).unwrap();
            let edited = match afs::file_hash(env) {
                Ok(hash) => txn.edit(env, Some(&hash), b"HOST=0.0.0.0\n").is_ok(),
                Err(_) => false,
            };
            // every other round, the swap is in place for the rollback
            if n % 2 == 0 && edited {
                afs::race::link(env);
                txn.rollback();
                afs::race::unlink(env);
            } else {
                txn.rollback();
            }
            edited
        });
        assert!(
            swaps >= 500 && edited > 200,
            "{swaps} swaps, {edited} edits"
        );
    }
}
