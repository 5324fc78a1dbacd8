//! Crash recovery at start (the daemon's and the command line's `apply`, under the instance
//! lock): every transaction a killed process left open is finished. The journal's `commit` line
//! is the commit point: with it the edits stay (the manifest is marked committed); without it
//! every file is put back over what nginx-medic wrote, then nginx is tested and reloaded when
//! one of its files was restored, and systemd rereads its units when one of those was. What
//! cannot be put back is escalated: logged with its files at error, its manifest marked
//! [`TxnState::Escalated`], and its paths held (only reported) until a person moves the
//! transaction's folder away. Each transaction's recovery lands in the audit journal.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::execute::COMMIT;
use super::journal::{EntryStatus, Journal, JournalEntry};
use super::transaction::{FileTransaction, RollbackOutcome, RollbackReport, TxnState};
use crate::adapters::nginx::NginxBinary;
use crate::adapters::systemd::{JobOp, Systemd};
use crate::config::{ReloadMethod, Settings};
use crate::error_text::chain;

/// Journal kind of the lines recovery writes.
pub const RECOVER: &str = "recover";
/// How much of the journal's end is read for commit lines: a transaction left open is the last
/// one its process ran, so its commit line (if any) is near the end.
pub const JOURNAL_WINDOW: u64 = 8 << 20;
/// How long a reload job may take.
const JOB_TIMEOUT: Duration = Duration::from_secs(60);

/// How one transaction found open ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Recovery {
    /// The journal records its verified commit: the edits stay.
    Committed,
    /// Every file is as before.
    RolledBack,
    /// Not every file could be put back: left for a person.
    Escalated {
        /// What is wrong.
        reason: String,
    },
}

/// One transaction found open at start.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recovered {
    /// Its id.
    pub txn: String,
    /// How it ended.
    pub outcome: Recovery,
    /// Each file's rollback (none when committed).
    pub files: Vec<RollbackReport>,
    /// Units it had restarted, restarted again onto the restored files (none when committed).
    pub units: Vec<String>,
}

/// What recovery at start did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RecoveryReport {
    /// The transactions found open, by id.
    pub transactions: Vec<Recovered>,
    /// `nginx -t` and the reload after an nginx file was restored: what they said, or why
    /// they failed.
    pub nginx: Option<Result<String, String>>,
    /// systemd rereading its units after a unit file was restored.
    pub daemon_reload: Option<Result<(), String>>,
    /// Every path of an escalated transaction (this start's or an earlier one's), with its
    /// transaction: plans touching them are only reported.
    pub held: BTreeMap<PathBuf, String>,
}

impl RecoveryReport {
    /// Whether anything was left for a person (a file, or nginx after a restore).
    pub fn escalated(&self) -> bool {
        !self.held.is_empty() || matches!(self.nginx, Some(Err(_)))
    }

    /// The first held path these actions would edit, with its transaction.
    pub fn holds<'a>(
        &self,
        mut actions: impl Iterator<Item = &'a crate::engine::plan::PlannedAction>,
    ) -> Option<(&Path, &str)> {
        actions.find_map(|a| {
            let edit = a.edit()?;
            self.held
                .get_key_value(&edit.path)
                .map(|(p, t)| (p.as_path(), t.as_str()))
        })
    }
}

/// Where recovery acts: the nginx it tests and reloads, and how.
#[derive(Debug, Clone)]
pub struct RecoveryEffects {
    pub state_dir: PathBuf,
    pub nginx: NginxBinary,
    pub reload: ReloadMethod,
    pub nginx_unit: String,
    pub bus: crate::config::Bus,
}

impl RecoveryEffects {
    /// The effects `settings` name.
    pub fn of(settings: &Settings) -> Self {
        Self {
            state_dir: settings.state_dir.clone(),
            nginx: crate::facts::gather::nginx_binary(settings),
            reload: settings.nginx.reload,
            nginx_unit: settings.nginx.unit.clone(),
            bus: settings.bus,
        }
    }
}

/// Recovery at start with the effects `settings` name (see the module doc). Call it under the
/// instance lock, before anything is diagnosed.
pub async fn at_start(settings: &Settings) -> RecoveryReport {
    recover(&RecoveryEffects::of(settings)).await
}

/// Finishes every transaction left open in `effects.state_dir`.
pub async fn recover(effects: &RecoveryEffects) -> RecoveryReport {
    let state_dir = &effects.state_dir;
    let mut report = RecoveryReport::default();
    let found = match FileTransaction::scan(state_dir) {
        Ok(found) => found,
        Err(e) => {
            tracing::error!(error = %chain(&e), "cannot look for transactions left open; nothing is recovered");
            return report;
        }
    };
    let open: Vec<&String> = found
        .iter()
        .filter(|(_, m)| !matches!(m, Ok(m) if m.state != TxnState::Open))
        .map(|(id, _)| id)
        .collect();
    let mut journal = None;
    if !open.is_empty() {
        let committed = committed_in_journal(state_dir);
        journal = match Journal::open(state_dir) {
            Ok(j) => Some(j),
            Err(e) => {
                tracing::error!(error = %chain(&e), "cannot write the audit journal; recovering all the same");
                None
            }
        };
        for id in open {
            let done = recover_one(state_dir, id, committed.contains(id.as_str()));
            record(journal.as_mut(), &done);
            report.transactions.push(done);
        }
    }
    let restored: Vec<&Path> = report
        .transactions
        .iter()
        .flat_map(|t| &t.files)
        .filter(|f| {
            matches!(
                f.outcome,
                RollbackOutcome::Restored | RollbackOutcome::Removed
            )
        })
        .map(|f| f.path.as_path())
        .collect();
    let nginx_files = nginx_files(&effects.nginx);
    let nginx_restored = restored
        .iter()
        .any(|p| nginx_files.iter().any(|n| p.starts_with(n)));
    let units_restored = restored.iter().any(|p| is_unit_file(p));
    let mut restart: Vec<&str> = report
        .transactions
        .iter()
        .filter(|t| {
            t.files.iter().any(|f| {
                matches!(
                    f.outcome,
                    RollbackOutcome::Restored | RollbackOutcome::Removed
                )
            })
        })
        .flat_map(|t| t.units.iter().map(String::as_str))
        .collect();
    restart.sort_unstable();
    restart.dedup();
    if nginx_restored || units_restored || !restart.is_empty() {
        let systemd = Systemd::connect(effects.bus).await;
        if units_restored {
            let reloaded = match &systemd {
                Ok(s) => s.daemon_reload().await.map_err(|e| chain(&e)),
                Err(e) => Err(chain(e)),
            };
            log_step(journal.as_mut(), "daemon_reload", "systemd", &reloaded);
            report.daemon_reload = Some(reloaded);
        }
        if nginx_restored {
            let reloaded = reload_nginx(effects, systemd.as_ref().ok()).await;
            log_step(
                journal.as_mut(),
                "reload_nginx",
                &effects.nginx_unit,
                &reloaded,
            );
            if let Err(e) = &reloaded {
                tracing::error!(error = %e, "nginx files were restored after a crash, but nginx does not take them: left for a person");
            }
            report.nginx = Some(reloaded);
        }
        for unit in restart {
            let restarted = match &systemd {
                Ok(s) => s
                    .run_job(unit, JobOp::Restart, JOB_TIMEOUT)
                    .await
                    .map_err(|e| chain(&e)),
                Err(e) => Err(chain(e)),
            };
            match &restarted {
                Ok(()) => tracing::info!(unit, "restarted onto the files restored after a crash"),
                Err(e) => {
                    tracing::error!(unit, error = %e, "cannot restart a unit onto the files restored after a crash")
                }
            }
            log_step(journal.as_mut(), "restart_unit", unit, &restarted);
        }
    }
    report.held = held_paths(&found, &report.transactions);
    if !report.held.is_empty() {
        let list: Vec<String> = report
            .held
            .keys()
            .map(|p| p.display().to_string())
            .collect();
        tracing::warn!(files = %list.join(", "), "files of an escalated transaction: plans that touch them are only reported");
    }
    report
}

/// The ids of transactions whose commit the journal records.
fn committed_in_journal(state_dir: &Path) -> BTreeSet<String> {
    match Journal::read_recent(state_dir, JOURNAL_WINDOW) {
        Ok(recent) => recent
            .entries
            .into_iter()
            .filter(|e| e.kind == COMMIT && e.status == EntryStatus::Ok)
            .map(|e| e.txn)
            .collect(),
        Err(e) => {
            tracing::error!(error = %chain(&e), "cannot read the audit journal: every transaction left open is rolled back");
            BTreeSet::new()
        }
    }
}

fn recover_one(state_dir: &Path, id: &str, committed: bool) -> Recovered {
    let txn = match FileTransaction::resume(state_dir, id) {
        Ok(txn) => txn,
        Err(e) => {
            let reason = chain(&e);
            tracing::error!(txn = id, error = %reason, "a transaction left open by a crash cannot be read: left for a person");
            return Recovered {
                txn: id.to_string(),
                outcome: Recovery::Escalated { reason },
                files: Vec::new(),
                units: Vec::new(),
            };
        }
    };
    let touched = txn.touched();
    if committed {
        let outcome = match txn.commit() {
            Ok(()) => Recovery::Committed,
            Err(e) => {
                // The edits stay all the same: the journal says they were verified.
                tracing::error!(txn = id, error = %chain(&e), "cannot mark a committed transaction in its manifest");
                Recovery::Committed
            }
        };
        remove_strays(&touched);
        tracing::info!(
            txn = id,
            "a transaction left open by a crash had committed: its edits stay"
        );
        return Recovered {
            txn: id.to_string(),
            outcome,
            files: Vec::new(),
            units: Vec::new(),
        };
    }
    let units = txn.units().to_vec();
    let super::transaction::RollbackEnd {
        reports: files,
        state,
        unrecorded,
    } = txn.rollback_or_escalate();
    if let Some(why) = unrecorded {
        tracing::error!(txn = id, error = %why, "the manifest cannot record how the recovery ended; the next start runs it again");
    }
    remove_strays(&touched);
    let outcome = if state == TxnState::Escalated {
        let bad: Vec<String> = files
            .iter()
            .filter_map(|f| match &f.outcome {
                RollbackOutcome::LeftAlone { reason } | RollbackOutcome::Failed { reason } => {
                    Some(format!("`{}`: {reason}", f.path.display()))
                }
                _ => None,
            })
            .collect();
        let reason = bad.join("; ");
        tracing::error!(txn = id, files = %reason, "a transaction left open by a crash cannot be rolled back completely: left for a person; move `{}` away once the files are right", state_dir.join(super::transaction::BACKUPS_DIR).join(id).display());
        Recovery::Escalated { reason }
    } else {
        let list: Vec<String> = files.iter().map(|f| f.path.display().to_string()).collect();
        tracing::warn!(txn = id, files = %list.join(", "), "rolled back a transaction left open by a crash");
        Recovery::RolledBack
    };
    Recovered {
        txn: id.to_string(),
        outcome,
        files,
        units,
    }
}

/// Removes the temp files a killed write left beside each touched file (`.NAME.medic-PID-N.tmp`
/// of another process: the lock says no other nginx-medic writes now).
fn remove_strays(touched: &[PathBuf]) {
    let me = std::process::id().to_string();
    for path in touched {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            continue;
        };
        let prefix = format!(".{}.medic-", name.to_string_lossy());
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = file
                .strip_prefix(&prefix)
                .and_then(|r| r.strip_suffix(".tmp"))
            else {
                continue;
            };
            let pid = rest.split('-').next().unwrap_or_default();
            let regular = entry.file_type().is_ok_and(|t| t.is_file());
            if pid != me && regular {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => {
                        tracing::info!(path = %entry.path().display(), "removed a temp file a killed write left")
                    }
                    Err(e) => {
                        tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove a temp file a killed write left")
                    }
                }
            }
        }
    }
}

/// The files nginx reads: its configuration's directory and every file it includes.
fn nginx_files(nginx: &NginxBinary) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = nginx
        .conf
        .parent()
        .map(Path::to_path_buf)
        .into_iter()
        .collect();
    if let Ok(conf) = crate::nginx_conf::load(&nginx.conf, &crate::nginx_conf::RealFs) {
        files.extend(conf.files.iter().map(|f| f.path.clone()));
    }
    files
}

/// Whether systemd reads `path` as a unit file or drop-in.
fn is_unit_file(path: &Path) -> bool {
    [
        "/etc/systemd/",
        "/run/systemd/",
        "/usr/lib/systemd/",
        "/lib/systemd/",
    ]
    .iter()
    .any(|d| path.starts_with(d))
}

async fn reload_nginx(
    effects: &RecoveryEffects,
    systemd: Option<&Systemd>,
) -> Result<String, String> {
    let tested = effects.nginx.test().map_err(|e| chain(&e))?;
    if !tested.ok {
        return Err(format!(
            "nginx -t fails on the restored files: {}",
            tested.output
        ));
    }
    match effects.reload {
        ReloadMethod::Signal => effects.nginx.reload_by_signal().map_err(|e| chain(&e))?,
        ReloadMethod::Systemd => {
            let systemd = systemd.ok_or("no connection to systemd to reload nginx")?;
            systemd
                .run_job(&effects.nginx_unit, JobOp::Reload, JOB_TIMEOUT)
                .await
                .map_err(|e| chain(&e))?;
        }
    }
    Ok("configuration test passed; reloaded".into())
}

/// The paths of every escalated transaction, after this start's recovery.
fn held_paths(
    found: &[(
        String,
        Result<super::transaction::TxnManifest, super::transaction::TxnError>,
    )],
    recovered: &[Recovered],
) -> BTreeMap<PathBuf, String> {
    let mut held = BTreeMap::new();
    for (id, manifest) in found {
        let now = recovered.iter().find(|r| &r.txn == id);
        let escalated = match now {
            Some(r) => matches!(r.outcome, Recovery::Escalated { .. }),
            None => matches!(manifest, Ok(m) if m.state == TxnState::Escalated),
        };
        if !escalated {
            continue;
        }
        if let Ok(m) = manifest {
            for b in &m.files {
                held.insert(b.original.clone(), id.clone());
            }
        }
    }
    held
}

fn record(journal: Option<&mut Journal>, done: &Recovered) {
    let Some(journal) = journal else { return };
    let mut step = 0;
    let mut append = |journal: &mut Journal, target: &str, status, detail: String| {
        step += 1;
        let entry = JournalEntry::now(&done.txn, step, RECOVER, target, status, detail);
        if let Err(e) = journal.append(&entry) {
            tracing::error!(error = %chain(&e), "cannot write the audit journal");
        }
    };
    for f in &done.files {
        let (status, detail) = match &f.outcome {
            RollbackOutcome::Restored => (EntryStatus::RolledBack, "restored byte for byte".into()),
            RollbackOutcome::Removed => (
                EntryStatus::RolledBack,
                "removed (it did not exist before)".into(),
            ),
            RollbackOutcome::LeftAlone { reason } => {
                (EntryStatus::Failed, format!("left alone: {reason}"))
            }
            RollbackOutcome::Failed { reason } => (EntryStatus::Failed, reason.clone()),
        };
        append(journal, &f.path.display().to_string(), status, detail);
    }
    let (status, detail) = match &done.outcome {
        Recovery::Committed => (
            EntryStatus::Ok,
            "left open by a crash after its commit: committed".to_string(),
        ),
        Recovery::RolledBack => (
            EntryStatus::RolledBack,
            "left open by a crash before its commit: rolled back".to_string(),
        ),
        Recovery::Escalated { reason } => (
            EntryStatus::Failed,
            format!("left open by a crash and not rolled back completely, escalated: {reason}"),
        ),
    };
    append(journal, &done.txn, status, detail);
}

fn log_step<T>(
    journal: Option<&mut Journal>,
    kind: &str,
    target: &str,
    outcome: &Result<T, String>,
) {
    let Some(journal) = journal else { return };
    let (status, detail) = match outcome {
        Ok(_) => (EntryStatus::RolledBack, "after the recovery".to_string()),
        Err(e) => (EntryStatus::Failed, e.clone()),
    };
    let entry = JournalEntry::now("recovery", 1, kind, target, status, detail);
    if let Err(e) = journal.append(&entry) {
        tracing::error!(error = %chain(&e), "cannot write the audit journal");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::fs as afs;
    use std::fs;

    fn effects(state: &Path) -> RecoveryEffects {
        RecoveryEffects {
            state_dir: state.to_path_buf(),
            nginx: NginxBinary {
                binary: PathBuf::from("/nonexistent/nginx"),
                conf: PathBuf::from("/nonexistent/nginx.conf"),
                prefix: None,
            },
            reload: ReloadMethod::Signal,
            nginx_unit: "nginx.service".into(),
            bus: crate::config::Bus::System,
        }
    }

    /// A transaction cut short after it wrote `a.conf`, with its stray temp file.
    fn crashed(state: &Path, etc: &Path, id: &str) -> (PathBuf, Vec<u8>) {
        let conf = etc.join("a.conf");
        fs::write(&conf, b"original\n").unwrap();
        let mut txn = FileTransaction::begin(state, id).unwrap();
        txn.edit(&conf, Some(&afs::file_hash(&conf).unwrap()), b"edited\n")
            .unwrap();
        std::mem::forget(txn);
        fs::write(etc.join(".a.conf.medic-1-7.tmp"), b"half").unwrap();
        (conf, b"original\n".to_vec())
    }

    #[tokio::test]
    async fn an_open_transaction_without_its_commit_line_is_rolled_back_and_journaled() {
        let dir = tempfile::tempdir().unwrap();
        let (state, etc) = (dir.path().join("state"), dir.path().join("etc"));
        fs::create_dir(&etc).unwrap();
        let (conf, original) = crashed(&state, &etc, "t1");
        let report = recover(&effects(&state)).await;
        assert_eq!(report.transactions.len(), 1);
        assert_eq!(report.transactions[0].outcome, Recovery::RolledBack);
        assert_eq!(fs::read(&conf).unwrap(), original);
        assert!(!etc.join(".a.conf.medic-1-7.tmp").exists(), "stray removed");
        assert!(FileTransaction::pending(&state).unwrap().is_empty());
        assert!(!report.escalated() && report.nginx.is_none());
        let journal = Journal::read(&state).unwrap();
        let last = journal.last().unwrap();
        assert_eq!(
            (last.kind.as_str(), last.status),
            (RECOVER, EntryStatus::RolledBack)
        );
        assert!(last.detail.contains("before its commit"), "{}", last.detail);
        // a second start finds nothing to do
        assert!(recover(&effects(&state)).await.transactions.is_empty());
    }

    #[tokio::test]
    async fn the_units_a_rolled_back_transaction_restarted_are_restarted_again() {
        let dir = tempfile::tempdir().unwrap();
        let (state, etc) = (dir.path().join("state"), dir.path().join("etc"));
        fs::create_dir(&etc).unwrap();
        let conf = etc.join("a.conf");
        fs::write(&conf, b"original\n").unwrap();
        let mut txn = FileTransaction::begin(&state, "t5").unwrap();
        txn.edit(&conf, Some(&afs::file_hash(&conf).unwrap()), b"edited\n")
            .unwrap();
        txn.note_unit("nginx-medic-test-absent.service").unwrap();
        txn.note_unit("nginx-medic-test-absent.service").unwrap();
        std::mem::forget(txn);
        let report = recover(&effects(&state)).await;
        assert_eq!(
            report.transactions[0].units,
            vec!["nginx-medic-test-absent.service"]
        );
        // a unit that does not exist (no bus here, or no such unit): tried, and journaled
        let tried = Journal::read(&state)
            .unwrap()
            .into_iter()
            .find(|e| e.kind == "restart_unit")
            .expect("a restart_unit line");
        assert_eq!(tried.target, "nginx-medic-test-absent.service");
    }

    #[tokio::test]
    async fn an_open_transaction_whose_commit_the_journal_records_is_committed() {
        let dir = tempfile::tempdir().unwrap();
        let (state, etc) = (dir.path().join("state"), dir.path().join("etc"));
        fs::create_dir(&etc).unwrap();
        let (conf, _) = crashed(&state, &etc, "t2");
        Journal::open(&state)
            .unwrap()
            .append(&JournalEntry::now(
                "t2",
                3,
                COMMIT,
                "t2",
                EntryStatus::Ok,
                "verified",
            ))
            .unwrap();
        let report = recover(&effects(&state)).await;
        assert_eq!(report.transactions[0].outcome, Recovery::Committed);
        assert_eq!(fs::read(&conf).unwrap(), b"edited\n");
        assert!(FileTransaction::pending(&state).unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_file_changed_since_is_escalated_and_held_across_starts() {
        let dir = tempfile::tempdir().unwrap();
        let (state, etc) = (dir.path().join("state"), dir.path().join("etc"));
        fs::create_dir(&etc).unwrap();
        let (conf, _) = crashed(&state, &etc, "t3");
        fs::write(&conf, b"an admin's edit after the crash\n").unwrap();
        let report = recover(&effects(&state)).await;
        assert!(
            matches!(&report.transactions[0].outcome, Recovery::Escalated { reason } if reason.contains("a.conf")),
            "{report:?}"
        );
        assert_eq!(
            fs::read(&conf).unwrap(),
            b"an admin's edit after the crash\n"
        );
        assert_eq!(report.held.get(&conf).map(String::as_str), Some("t3"));
        assert!(FileTransaction::pending(&state).unwrap().is_empty());
        // the next start still holds the path, without recovering anything again
        let again = recover(&effects(&state)).await;
        assert!(again.transactions.is_empty());
        assert_eq!(again.held.get(&conf).map(String::as_str), Some("t3"));
        let last = Journal::read(&state).unwrap().pop().unwrap();
        assert_eq!(last.status, EntryStatus::Failed);
        assert!(last.detail.contains("escalated"), "{}", last.detail);
    }

    #[tokio::test]
    async fn a_restored_nginx_file_is_tested_and_a_failing_test_is_escalated() {
        let dir = tempfile::tempdir().unwrap();
        let (state, etc) = (dir.path().join("state"), dir.path().join("nginx"));
        fs::create_dir(&etc).unwrap();
        crashed(&state, &etc, "t4");
        let mut fx = effects(&state);
        fx.nginx.conf = etc.join("nginx.conf");
        let report = recover(&fx).await;
        assert_eq!(report.transactions[0].outcome, Recovery::RolledBack);
        // no nginx binary here: the test cannot run, and that is reported
        assert!(matches!(&report.nginx, Some(Err(_))), "{report:?}");
        assert!(report.escalated());
    }
}
