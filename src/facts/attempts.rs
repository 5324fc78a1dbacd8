//! Edits that were tried and rolled back, from nginx-medic's own history: the audit journal and
//! the transaction backups in the state directory. A `set_directive` edit of a file that was
//! put back, starting from the bytes the file holds now, is a raise that did not heal; the
//! next one steps up instead of repeating it.

use crate::apply::journal::{EntryStatus, Journal};
use crate::apply::transaction::{TxnManifest, TxnState, BACKUPS_DIR, MANIFEST_FILE};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// How many `set_directive` edits of one file were rolled back from its current bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolledBackEdits {
    /// The file, as the plan named it.
    pub file: String,
    pub count: u32,
}

/// The rolled-back `set_directive` edits of each of `files` that started from the file's
/// current bytes. A journal or manifest that cannot be read is no history (logged, not fatal).
pub fn rolled_back_directive_edits(state_dir: &Path, files: &[&Path]) -> Vec<RolledBackEdits> {
    let entries = match Journal::read(state_dir) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(error = %crate::error_text::chain(&e), "cannot read the journal for rolled-back raises");
            return Vec::new();
        }
    };
    let wanted: BTreeSet<String> = files.iter().map(|f| f.display().to_string()).collect();
    // per transaction: the files a set_directive step edited, and the files put back
    let mut edited: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut restored: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for e in &entries {
        if !wanted.contains(&e.target) {
            continue;
        }
        match (e.kind.as_str(), e.status) {
            ("set_directive", EntryStatus::Ok) => {
                edited.entry(&e.txn).or_default().insert(&e.target);
            }
            ("restore_file", EntryStatus::RolledBack) => {
                restored.entry(&e.txn).or_default().insert(&e.target);
            }
            _ => {}
        }
    }
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for (txn, files) in &edited {
        let Some(back) = restored.get(txn) else {
            continue;
        };
        let Some(manifest) = manifest(state_dir, txn) else {
            continue;
        };
        if manifest.state != TxnState::RolledBack {
            continue;
        }
        for file in files.intersection(back) {
            let now = crate::adapters::fs::file_hash(Path::new(file)).ok();
            let from_now = manifest.files.iter().any(|b| {
                b.original.display().to_string() == *file && b.hash.is_some() && b.hash == now
            });
            if from_now {
                *counts.entry((*file).to_string()).or_default() += 1;
            }
        }
    }
    counts
        .into_iter()
        .map(|(file, count)| RolledBackEdits { file, count })
        .collect()
}

/// Each of `files` whose current bytes nginx-medic wrote itself in a transaction that was
/// committed (its probe passed after the edit): the journal's edit step of the file is stamped
/// no earlier than the file's mtime and within [`OWN_EDIT_SLACK_SECS`] of it. A line nginx
/// logged in the second of such an edit is history, not a symptom (`engine::recency`).
pub fn verified_edits(state_dir: &Path, files: &[&Path]) -> Vec<String> {
    let Ok(entries) = Journal::read(state_dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for file in files {
        let name = file.display().to_string();
        let Some(mtime) = std::fs::metadata(file)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64())
        else {
            continue;
        };
        let last_edit = entries.iter().rev().find(|e| {
            e.target == name
                && matches!(e.kind.as_str(), "set_directive" | "render_site")
                && e.status == EntryStatus::Ok
        });
        let ours = last_edit.is_some_and(|e| {
            e.ts >= mtime
                && e.ts - mtime <= OWN_EDIT_SLACK_SECS
                && manifest(state_dir, &e.txn).is_some_and(|m| m.state == TxnState::Committed)
        });
        if ours {
            out.push(name);
        }
    }
    out
}

/// How long after writing a file the journal's entry for that edit may be stamped.
pub const OWN_EDIT_SLACK_SECS: f64 = 5.0;

fn manifest(state_dir: &Path, txn: &str) -> Option<TxnManifest> {
    if txn.contains(['/', '\0']) || txn.starts_with('.') {
        return None;
    }
    let path = state_dir.join(BACKUPS_DIR).join(txn).join(MANIFEST_FILE);
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::journal::JournalEntry;

    #[test]
    fn a_rolled_back_raise_from_the_current_bytes_counts() {
        let state = tempfile::tempdir().unwrap();
        let site = state.path().join("big.conf");
        std::fs::write(&site, "server {}\n").unwrap();
        let file = site.display().to_string();
        let mut journal = Journal::open(state.path()).unwrap();
        let write_txn = |txn: &str, state_of: TxnState, hash: Option<String>| {
            let dir = state.path().join(BACKUPS_DIR).join(txn);
            std::fs::create_dir_all(&dir).unwrap();
            let manifest = serde_json::json!({
                "version": 1, "txn": txn, "state": state_of,
                "files": [{"original": site, "copy": null, "hash": hash, "existed": true,
                           "uid": 0, "gid": 0, "mode": 420}],
            });
            std::fs::write(dir.join(MANIFEST_FILE), manifest.to_string()).unwrap();
        };
        let now = crate::adapters::fs::file_hash(&site).ok();
        for (txn, state_of, hash) in [
            ("t1", TxnState::RolledBack, now.clone()),
            ("t2", TxnState::RolledBack, now.clone()),
            ("t3", TxnState::Committed, now.clone()),
            ("t4", TxnState::RolledBack, Some("other bytes".into())),
        ] {
            write_txn(txn, state_of, hash);
            let entry =
                |kind: &str, status| JournalEntry::now(txn, 1, kind, file.clone(), status, "");
            journal
                .append(&entry("set_directive", EntryStatus::Ok))
                .unwrap();
            if state_of == TxnState::RolledBack {
                journal
                    .append(&entry("restore_file", EntryStatus::RolledBack))
                    .unwrap();
            }
        }
        assert_eq!(
            rolled_back_directive_edits(state.path(), &[site.as_path()]),
            [RolledBackEdits { file, count: 2 }],
            "t3 healed, t4 started from other bytes"
        );
        assert!(rolled_back_directive_edits(state.path(), &[Path::new("/elsewhere")]).is_empty());
    }

    #[test]
    fn a_file_written_by_a_committed_edit_is_a_verified_edit() {
        let state = tempfile::tempdir().unwrap();
        let site = state.path().join("big.conf");
        std::fs::write(&site, "server {}\n").unwrap();
        let file = site.display().to_string();
        let mut journal = Journal::open(state.path()).unwrap();
        let dir = state.path().join(BACKUPS_DIR).join("t1");
        std::fs::create_dir_all(&dir).unwrap();
        let manifest = serde_json::json!({"version": 1, "txn": "t1", "state": TxnState::Committed, "files": []});
        std::fs::write(dir.join(MANIFEST_FILE), manifest.to_string()).unwrap();
        let edit = JournalEntry::now("t1", 1, "set_directive", file.clone(), EntryStatus::Ok, "");
        journal.append(&edit).unwrap();
        assert_eq!(verified_edits(state.path(), &[site.as_path()]), [file]);
        // written again afterwards, by someone else: no longer nginx-medic's bytes
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&site, "server { }\n").unwrap();
        assert!(verified_edits(state.path(), &[site.as_path()]).is_empty());
    }
}
