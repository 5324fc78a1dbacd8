//! In the box (issue 13, acceptance 5): the fail-point matrix. The test package
//! (`NGINX_MEDIC_FAILPOINTS_DEB`) runs from the shipped unit under systemd as PID 1, in `mode:
//! apply`; for each point of a heal of `HOST=127.0.0.2` in `/etc/default/api` (after the backup,
//! after the new file is written, after it is renamed in, before its directory is synced,
//! between the unit's stop and its start) the service is made to `pause` there, is SIGKILLed, and
//! comes back by the unit's own `Restart=` (in `mode: observe`, so that what the recovery left is
//! what is seen): the file is exactly as before (no cell is past the journal's commit line), no
//! temp file is left beside it, no transaction is open, the journal parses and records the
//! recovery, the backend and nginx-medic run (killed during the unit's restart, the unit is
//! restarted onto the restored file). Then `ENOSPC` (the app's directory on a full
//! tmpfs) during a heal: a complete rollback; `EMFILE` (`prlimit` on the service while a heal is
//! stopped after its swap): a complete rollback, or an escalated partial one the next start ends.
//!
//! `NGINX_MEDIC_FAILPOINTS_BIN`, when set, replaces the package's binary with that build (a
//! debug build with `--features failpoints` is quicker to make than the package).

use crate::support::system_box::{wait_until, SystemBox};
use nginx_medic::apply::journal::{EntryStatus, JournalEntry};
use nginx_medic::apply::transaction::{TxnManifest, TxnState};
use std::time::{Duration, Instant};

const UNIT: &str = "nginx-medic.service";
const DROP_IN_DIR: &str = "/etc/systemd/system/nginx-medic.service.d";
const DROP_IN: &str = "/etc/systemd/system/nginx-medic.service.d/failpoint.conf";
const CONFIG: &str = "/etc/nginx-medic/medic.yaml";
const STATE: &str = "/var/lib/nginx-medic";
const API_ENV: &str = "/etc/default/api";
const GOOD: &str = "HOST=127.0.0.1\nPORT=8000\n";
const API_SITE: u16 = 8081;

/// Where the heal is stopped, and how the test sees that it got there.
#[derive(Debug, Clone, Copy)]
enum Reached {
    /// A manifest lists the file, and the file is unchanged.
    Backup,
    /// The new file is staged beside it.
    Staged,
    /// The file holds nginx-medic's bytes.
    Swapped,
    /// The file holds nginx-medic's bytes and the unit was restarted by it.
    Restarted,
}

const MATRIX: [(&str, Reached); 5] = [
    ("txn.after-backup", Reached::Backup),
    ("edit.fs.after-write", Reached::Staged),
    ("edit.fs.after-rename", Reached::Swapped),
    ("edit.fs.before-dir-fsync", Reached::Swapped),
    ("systemd.job-queued", Reached::Restarted),
];

fn sh(b: &SystemBox, script: &str) -> String {
    let out = b.exec(&["sh", "-c", script]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn manifests(b: &SystemBox) -> Vec<TxnManifest> {
    let text = sh(
        b,
        &format!("for f in {STATE}/backups/*/manifest.json; do [ -f \"$f\" ] && cat \"$f\" && echo '@@'; done"),
    );
    text.split("@@")
        .filter(|t| !t.trim().is_empty())
        .map(|t| {
            serde_json::from_str(t)
                .unwrap_or_else(|e| panic!("a manifest does not parse: {e}\n{t}"))
        })
        .collect()
}

/// Every line of the audit journal, parsed (the test fails on one that is not an entry).
fn journal(b: &SystemBox) -> Vec<JournalEntry> {
    sh(b, &format!("cat {STATE}/journal.jsonl 2>/dev/null"))
        .lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("journal line {} does not parse: {e}\n{l}", i + 1))
        })
        .collect()
}

fn set_mode(b: &SystemBox, mode: &str) {
    let text = b.read_file(CONFIG);
    let text = text
        .replace("\n  mode: apply\n", &format!("\n  mode: {mode}\n"))
        .replace("\n  mode: observe\n", &format!("\n  mode: {mode}\n"));
    b.write_file(CONFIG, &text);
}

fn temp_files(b: &SystemBox, dir: &str, name: &str) -> Vec<String> {
    sh(b, &format!("ls -a {dir}"))
        .lines()
        .filter(|l| l.starts_with(&format!(".{name}.medic-")))
        .map(str::to_owned)
        .collect()
}

/// The api site healthy with the good env file, nginx-medic stopped, no drop-in, and the
/// journal moved aside (to `journal.jsonl.N`): the brakes rebuilt from it would otherwise, rightly,
/// leave the api alone after two heals cut short.
fn reset(b: &SystemBox) {
    let _ = b.systemctl(&["stop", UNIT]);
    sh(
        b,
        &format!("[ -f {STATE}/journal.jsonl ] && mv {STATE}/journal.jsonl {STATE}/journal.jsonl.$(date +%s%N)"),
    );
    reset_keeping_journal(b);
}

/// As `reset`, the journal left in place.
fn reset_keeping_journal(b: &SystemBox) {
    let _ = b.systemctl(&["stop", UNIT]);
    let _ = b.systemctl(&["reset-failed", UNIT]);
    b.exec_ok(&["rm", "-f", DROP_IN]);
    b.systemctl_ok(&["daemon-reload"]);
    set_mode(b, "apply");
    b.write_file(API_ENV, GOOD);
    b.systemctl_ok(&["restart", "api.service"]);
    wait_until(Duration::from_secs(15), "the api site answers", || {
        b.http_status(API_SITE, "/") == 200
    });
}

/// Starts nginx-medic (with `FAILPOINTS` when given) and stages the fault: the unit restarted
/// onto 127.0.0.2. Returns the env file's bytes after the fault (what "as before" means) and
/// the api's PID on the wrong host.
fn start_and_break(b: &SystemBox, failpoints: Option<&str>) -> (String, Option<u32>) {
    if let Some(fp) = failpoints {
        b.write_file(
            DROP_IN,
            &format!("[Service]\nEnvironment=FAILPOINTS={fp}\n"),
        );
        b.systemctl_ok(&["daemon-reload"]);
    }
    b.systemctl_ok(&["start", UNIT]);
    b.set_env(API_ENV, "HOST", "127.0.0.2");
    let before = b.read_file(API_ENV);
    b.systemctl_ok(&["restart", "api.service"]);
    (before, b.main_pid("api.service"))
}

/// SIGKILLs nginx-medic and waits until the unit's own `Restart=` brought it back, in `mode:
/// observe` and without fail points.
fn kill_and_restart(b: &SystemBox) -> Duration {
    let pid = b.main_pid(UNIT).expect("nginx-medic runs");
    let restarts: u32 = b.unit_property(UNIT, "NRestarts").parse().unwrap_or(0);
    b.exec_ok(&["rm", "-f", DROP_IN]);
    b.systemctl_ok(&["daemon-reload"]);
    set_mode(b, "observe");
    let killed = Instant::now();
    b.systemctl_ok(&["kill", "-s", "KILL", UNIT]);
    wait_until(
        Duration::from_secs(40),
        "systemd restarts nginx-medic",
        || {
            b.unit_property(UNIT, "ActiveState") == "active"
                && b.main_pid(UNIT).is_some_and(|p| p != pid)
                && b.unit_property(UNIT, "NRestarts").parse().unwrap_or(0) > restarts
        },
    );
    killed.elapsed()
}

/// The state after the restart: the file as before, no temp file, no open transaction, the
/// journal parses and records the recovery of the transaction (and no commit of it), the
/// backend and nginx-medic active. Returns the transaction.
fn assert_as_before(
    b: &SystemBox,
    what: &str,
    before: &str,
    dir: &str,
    name: &str,
    unit: &str,
) -> String {
    let path = format!("{dir}/{name}");
    let now = b.read_file(&path);
    let entries = journal(b);
    let open: Vec<String> = manifests(b)
        .into_iter()
        .filter(|m| m.state == TxnState::Open)
        .map(|m| m.txn)
        .collect();
    let recovered: Vec<&JournalEntry> = entries
        .iter()
        .filter(|e| e.kind == "recover" && e.target == e.txn)
        .collect();
    let context = || {
        format!(
            "{what}\n--- {path}:\n{now}\n--- journal:\n{}\n--- service:\n{}",
            entries
                .iter()
                .map(|e| serde_json::to_string(e).unwrap())
                .collect::<Vec<_>>()
                .join("\n"),
            b.journal(UNIT, &["-n", "60"])
        )
    };
    assert!(
        open.is_empty(),
        "{what}: transactions left open: {open:?}\n{}",
        context()
    );
    let last = recovered
        .last()
        .unwrap_or_else(|| panic!("{what}: the journal records no recovery\n{}", context()));
    let committed = entries
        .iter()
        .any(|e| e.txn == last.txn && e.kind == "commit" && e.status == EntryStatus::Ok);
    assert!(
        !committed,
        "{what}: killed before the commit, but the journal has one\n{}",
        context()
    );
    assert_eq!(
        last.status,
        EntryStatus::RolledBack,
        "{what}\n{}",
        context()
    );
    assert_eq!(
        now,
        before,
        "{what}: `{path}` is not as before\n{}",
        context()
    );
    assert_eq!(
        temp_files(b, dir, name),
        Vec::<String>::new(),
        "{what}: temp files left\n{}",
        context()
    );
    assert_eq!(
        b.unit_property(unit, "ActiveState"),
        "active",
        "{what}: {unit}"
    );
    assert_eq!(
        b.unit_property(UNIT, "ActiveState"),
        "active",
        "{what}: nginx-medic"
    );
    last.txn.clone()
}

fn reached(b: &SystemBox, how: Reached, before: &str, api_pid: Option<u32>) -> bool {
    match how {
        Reached::Backup => {
            b.read_file(API_ENV) == before
                && manifests(b).iter().any(|m| {
                    m.state == TxnState::Open
                        && m.files.iter().any(|f| f.original.to_str() == Some(API_ENV))
                })
        }
        Reached::Staged => !temp_files(b, "/etc/default", "api").is_empty(),
        Reached::Swapped => b.read_file(API_ENV) == GOOD,
        Reached::Restarted => b.read_file(API_ENV) == GOOD && b.main_pid("api.service") != api_pid,
    }
}

fn install(b: &SystemBox) {
    let deb = std::env::var("NGINX_MEDIC_FAILPOINTS_DEB").unwrap_or_else(|_| {
        panic!(
            "set NGINX_MEDIC_FAILPOINTS_DEB to the test package (`scripts/package --failpoints`)"
        )
    });
    let venv = crate::support::system_box::venv_path()
        .display()
        .to_string();
    b.provision(&["backends", &venv]);
    b.provision(&["install", &deb]);
    if let Ok(bin) = std::env::var("NGINX_MEDIC_FAILPOINTS_BIN") {
        b.exec_ok(&["install", "-m", "0755", &bin, "/usr/bin/nginx-medic"]);
    }
    let version = b.exec_ok(&["nginx-medic", "--version"]);
    assert!(
        version.contains("(features: failpoints)"),
        "not the test build: {version}"
    );
    b.exec_ok(&["mkdir", "-p", DROP_IN_DIR]);
}

#[test]
fn box_a_kill_at_each_fail_point_of_a_heal_ends_as_before() {
    let b = SystemBox::boot("crash");
    install(&b);
    let mut figures = Vec::new();
    for (point, how) in MATRIX {
        reset(&b);
        let started = Instant::now();
        let (before, api_pid) = start_and_break(&b, Some(&format!("{point}=pause")));
        let took = wait_until(
            Duration::from_secs(30),
            &format!("the heal reaches `{point}`"),
            || reached(&b, how, &before, api_pid),
        );
        // the point is right after what was seen: let the thread get there
        std::thread::sleep(Duration::from_millis(300));
        let back = kill_and_restart(&b);
        let txn = assert_as_before(&b, point, &before, "/etc/default", "api", "api.service");
        if matches!(how, Reached::Restarted) {
            // killed while its restart ran: the api came up on nginx-medic's file, so recovery
            // restarts it onto the restored one (the fault, as before)
            wait_until(
                Duration::from_secs(15),
                "the api runs on the restored file",
                || {
                    b.listeners()
                        .iter()
                        .any(|l| l.starts_with("127.0.0.2:8000"))
                },
            );
            assert!(journal(&b).iter().any(|e| e.kind == "restart_unit"
                && e.target == "api.service"
                && e.status == EntryStatus::RolledBack));
        }
        figures.push(format!(
            "{point:<26} reached {:>5} ms after the fault, back {:>5} ms after SIGKILL, {txn} rolled back; cell {:.1} s",
            took.as_millis(),
            back.as_millis(),
            started.elapsed().as_secs_f64()
        ));
    }
    println!("--- fail-point matrix (SIGKILL at the point, restart by Restart=):");
    for f in &figures {
        println!("  {f}");
    }
    // The brakes come back too: two heals cut short in one journal are a crash loop, and a
    // restarted service leaves the target alone (the journal is not moved aside this time).
    reset(&b);
    for point in ["txn.after-backup", "systemd.job-queued"] {
        reset_keeping_journal(&b);
        let (before, api_pid) = start_and_break(&b, Some(&format!("{point}=pause")));
        let how = if point == "txn.after-backup" {
            Reached::Backup
        } else {
            Reached::Restarted
        };
        wait_until(Duration::from_secs(30), point, || {
            reached(&b, how, &before, api_pid)
        });
        std::thread::sleep(Duration::from_millis(300));
        kill_and_restart(&b);
    }
    // the fault is in place again (recovery put the file back and restarted the api onto it);
    // the service restarted in apply mode
    set_mode(&b, "apply");
    b.systemctl_ok(&["restart", UNIT]);
    let since = wait_until(Duration::from_secs(20), "the crash loop is rebuilt", || {
        b.service_log_has("escalated (rebuilt from the audit journal)")
            && b.service_log_has("escalated; left alone")
    });
    assert_eq!(
        b.read_file(API_ENV),
        "HOST=127.0.0.2\nPORT=8000\n",
        "left alone: not healed"
    );
    println!(
        "brakes: two heals cut short, then a restart in apply mode leaves the api alone ({} ms to see it)",
        since.as_millis()
    );
}

#[test]
fn box_enospc_and_emfile_during_a_heal_end_as_before() {
    let b = SystemBox::boot("nospace");
    install(&b);
    // ENOSPC: the app's directory (its .env) on a full tmpfs
    reset(&b);
    sh(
        &b,
        "set -e; cp -a /srv/web /run/web-copy; mount -t tmpfs -o size=64k,mode=0755 tmpfs /srv/web; \
         cp -a /run/web-copy/. /srv/web/; chown web:web /srv/web; \
         dd if=/dev/zero of=/srv/web/filler bs=4k 2>/dev/null || true",
    );
    b.systemctl_ok(&["start", UNIT]);
    b.set_env("/srv/web/.env", "HOST", "127.0.0.2");
    let before = b.read_file("/srv/web/.env");
    b.systemctl_ok(&["restart", "web.service"]);
    let refused = wait_until(
        Duration::from_secs(30),
        "the heal fails on the full disk",
        || {
            journal(&b).iter().any(|e| {
                e.kind == "heal_end" && e.target == "127.0.0.1:8001" && e.status != EntryStatus::Ok
            })
        },
    );
    let entries = journal(&b);
    let end = entries
        .iter()
        .rev()
        .find(|e| e.kind == "heal_end")
        .expect("heal_end");
    assert!(end.detail.starts_with("own environment: "), "{end:?}");
    assert!(end.detail.contains("No space left on device"), "{end:?}");
    assert_eq!(
        b.read_file("/srv/web/.env"),
        before,
        "the .env is as before"
    );
    assert_eq!(temp_files(&b, "/srv/web", ".env"), Vec::<String>::new());
    assert!(manifests(&b).iter().all(|m| m.state != TxnState::Open));
    assert_eq!(b.unit_property("web.service", "ActiveState"), "active");
    assert_eq!(b.unit_property(UNIT, "ActiveState"), "active");
    println!(
        "ENOSPC: refused and rolled back {} ms after the fault",
        refused.as_millis()
    );
    b.systemctl_ok(&["stop", UNIT]);
    sh(
        &b,
        "umount /srv/web; cp -a /run/web-copy/.env /srv/web/.env",
    );
    b.systemctl_ok(&["restart", "web.service"]);

    // EMFILE in the middle of the heal: stopped for 5 s right after nginx-medic's bytes are
    // swapped in (the directory not yet synced), its file limit is lowered to what it holds then,
    // so the sync, and whatever a rollback opens, fail with EMFILE. It ends in a complete
    // rollback, or in a partial one that is reported and escalated and that the next start
    // finishes: either way, once the limit is back and the service restarted, as before.
    reset(&b);
    let cursor = b.journal(UNIT, &["-n", "1", "-o", "export"]);
    let cursor = cursor
        .lines()
        .find_map(|l| l.strip_prefix("__CURSOR="))
        .unwrap_or_default()
        .to_string();
    let since = |b: &SystemBox| b.journal(UNIT, &["--after-cursor", &cursor, "-o", "verbose"]);
    let (before, _) = start_and_break(&b, Some("edit.fs.before-dir-fsync=1*sleep(5000)"));
    wait_until(
        Duration::from_secs(30),
        "the heal swaps its file in",
        || b.read_file(API_ENV) == GOOD,
    );
    let pid = b.main_pid(UNIT).expect("runs").to_string();
    let held = sh(&b, &format!("ls /proc/{pid}/fd | wc -l"))
        .trim()
        .parse::<u32>()
        .unwrap_or(0);
    let soft = sh(
        &b,
        &format!("awk '/^Max open files/ {{print $4}}' /proc/{pid}/limits"),
    );
    let soft = soft.trim().to_string();
    // the soft limit only: the hard one cannot be raised again
    b.exec_ok(&["prlimit", "--pid", &pid, &format!("--nofile={held}:")]);
    let ended = wait_until(Duration::from_secs(30), "the heal ends", || {
        since(&b).contains("heal failed") || since(&b).contains("healed [")
    });
    std::thread::sleep(Duration::from_secs(1));
    let during = b.read_file(API_ENV);
    let open_during = manifests(&b).iter().any(|m| m.state == TxnState::Open);
    let log = since(&b);
    let escalated = log.contains("escalated");
    println!(
        "--- EMFILE phase, the service's log:\n{}",
        b.journal(UNIT, &["--after-cursor", &cursor])
    );
    assert!(
        log.contains("Too many open files"),
        "EMFILE: the OS reason is not told:\n{log}"
    );
    assert!(
        during == before && !open_during || escalated,
        "EMFILE: neither rolled back nor escalated:\n{during}\n{log}"
    );
    b.exec_ok(&["prlimit", "--pid", &pid, &format!("--nofile={soft}:")]);
    b.exec_ok(&["rm", "-f", DROP_IN]);
    b.systemctl_ok(&["daemon-reload"]);
    set_mode(&b, "observe");
    b.systemctl_ok(&["restart", UNIT]);
    wait_until(Duration::from_secs(20), "nginx-medic runs again", || {
        b.unit_property(UNIT, "ActiveState") == "active"
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        b.read_file(API_ENV),
        before,
        "EMFILE: the env file is as before"
    );
    assert_eq!(temp_files(&b, "/etc/default", "api"), Vec::<String>::new());
    assert!(manifests(&b).iter().all(|m| m.state != TxnState::Open));
    let _ = journal(&b);
    println!(
        "EMFILE (limit {held}, mid-heal): {} {} ms after the limit, as before after a restart",
        if open_during || during != before {
            "partial rollback, escalated;"
        } else {
            "complete rollback"
        },
        ended.as_millis()
    );
}

trait ServiceLog {
    fn service_log_has(&self, text: &str) -> bool;
}

impl ServiceLog for SystemBox {
    fn service_log_has(&self, text: &str) -> bool {
        // verbose: the OS reason is a field of the entry (`ERROR=`), not part of its message
        self.journal(UNIT, &["-n", "200", "-o", "verbose"])
            .contains(text)
    }
}
