//! The package's whole life in the production-shaped box, as a new user lives it (issue 10,
//! acceptance 7): `dpkg -i` on a server whose apps already run (service enabled, running, in
//! observe mode), `mode: apply` and one heal that edits an admin's file, `dpkg -i` of a newer
//! build over the running service (restarted; journal, state and the edited conffile kept),
//! `dpkg -r` (stopped, configuration kept), `dpkg -P` (nothing of the package left, the backups
//! of the admin's files moved to `/var/backups` and the purge says where). It also prints
//! `systemd-analyze security` of the installed unit and holds it at or below 3.0 (acceptance 8).
//!
//! The machine's `policy-rc.d` is in the box's image (it keeps `dpkg -i` from starting services);
//! the test deletes it inside the box first, which only writes a whiteout to the box's upper
//! layer, and checks afterwards that the machine's own file is untouched.

use crate::support::system_box::{deb_path, now_micros, venv_path, wait_until, SystemBox};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

const PKG: &str = "nginx-medic";
const UNIT: &str = "nginx-medic.service";
const CONF: &str = "/etc/nginx-medic/medic.yaml";
const STATE: &str = "/var/lib/nginx-medic";
const POLICY: &str = "/usr/sbin/policy-rc.d";
/// The api backend's settings (`HOST=`), the file the heal edits.
const API_ENV: &str = "/etc/default/api";
/// The api backend's address, as nginx passes to it and nginx-medic names it.
const API_UPSTREAM: &str = "127.0.0.1:8000";
/// nginx's site for the api backend.
const API_SITE: u16 = 8081;
/// How long the service may take to heal here: the box shares 2 cores with other boxes, and
/// this test is about the package, not about speed (tests/box_heal.rs holds the 5 s).
const HEAL_WITHIN: Duration = Duration::from_secs(60);
/// `systemd-analyze security` of the installed unit may not exceed this (acceptance 8).
const MAX_EXPOSURE: f64 = 3.0;
/// What the package's maintainer scripts create (not dpkg): none may be left after a purge.
/// As packaging/test-install.sh checks, plus the mask `dpkg -r` leaves for the purge to undo.
const SCRIPT_PATHS: [&str; 7] = [
    "/var/lib/nginx-medic",
    "/etc/nginx-medic",
    "/etc/systemd/system/multi-user.target.wants/nginx-medic.service",
    "/etc/systemd/system/nginx-medic.service",
    "/var/lib/systemd/deb-systemd-helper-enabled/nginx-medic.service.dsh-also",
    "/var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/nginx-medic.service",
    "/var/lib/systemd/deb-systemd-helper-masked/nginx-medic.service",
];
/// The line postrm prints on purge, before the directory it moved the backups to.
const KEPT_SAYS: &str =
    "nginx-medic: the backups of the files it edited (and its audit journal) are kept in ";

/// Prints how long each stage took, as it ends, and all of them at the end.
struct Stages {
    started: Instant,
    last: Instant,
    done: Vec<(&'static str, Duration)>,
}

impl Stages {
    fn new() -> Stages {
        let now = Instant::now();
        Stages {
            started: now,
            last: now,
            done: Vec::new(),
        }
    }

    fn done(&mut self, stage: &'static str) {
        let took = self.last.elapsed();
        self.last = Instant::now();
        println!("lifecycle: {stage}: {} ms", took.as_millis());
        self.done.push((stage, took));
    }

    fn print(&self) {
        println!("--- lifecycle stages:");
        for (stage, took) in &self.done {
            println!("  {stage:<40} {:>6} ms", took.as_millis());
        }
        println!(
            "  {:<40} {:>6} ms",
            "whole test",
            self.started.elapsed().as_millis()
        );
    }
}

/// A file of the machine as it is now: bytes, inode, mode, mtime (`None` when missing).
fn fingerprint(path: &str) -> Option<(Vec<u8>, u64, u32, i64, i64)> {
    let meta = fs::symlink_metadata(path).ok()?;
    let bytes = fs::read(path).ok()?;
    Some((
        bytes,
        meta.ino(),
        meta.mode(),
        meta.mtime(),
        meta.mtime_nsec(),
    ))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `dpkg ARGS` inside the box, non-interactive, stdin closed; panics unless it succeeds;
/// returns what it printed (stdout and stderr).
fn dpkg(b: &SystemBox, args: &[&str]) -> String {
    let mut argv = vec!["env", "DEBIAN_FRONTEND=noninteractive", "dpkg"];
    argv.extend_from_slice(args);
    let out = b.exec(&argv);
    let said = text(&out);
    assert!(
        out.status.success(),
        "in the box: dpkg {} failed ({}):\n{said}",
        args.join(" "),
        out.status
    );
    println!(
        "--- dpkg {}:\n{}",
        args.join(" "),
        said.trim_end().replace('\n', "\n  ")
    );
    said
}

/// The package's status in the box (`ii `, `rc `), empty when dpkg does not know it.
fn package_status(b: &SystemBox) -> String {
    let out = b.exec(&["dpkg-query", "-W", "-f=${db:Status-Abbrev}", PKG]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn package_version(b: &SystemBox) -> String {
    b.exec_ok(&["dpkg-query", "-W", "-f=${Version}", PKG])
}

/// Those of PATHS that exist inside the box (a dangling symlink counts), one `ls` for all.
fn existing(b: &SystemBox, paths: &[&str]) -> Vec<String> {
    if paths.is_empty() {
        return Vec::new();
    }
    let mut argv = vec!["ls", "-d1", "--"];
    argv.extend_from_slice(paths);
    // exit 2 when some are missing: what it lists is the answer
    let out = b.exec(&argv);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn status_text(b: &SystemBox) -> String {
    b.unit_property(UNIT, "StatusText")
}

/// The package's paths (`dpkg-deb -c`), absolute: (`d` for a directory, else `-`/`l`, path).
fn contents(deb: &Path) -> Vec<(char, String)> {
    let out = std::process::Command::new("dpkg-deb")
        .arg("-c")
        .arg(deb)
        .output()
        .unwrap_or_else(|e| panic!("cannot run dpkg-deb -c: {e}"));
    assert!(out.status.success(), "dpkg-deb -c: {}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let kind = l.chars().next()?;
            let path = l.split_whitespace().nth(5)?;
            let path = path.strip_prefix('.')?.trim_end_matches('/');
            (!path.is_empty()).then(|| (kind, path.to_owned()))
        })
        .collect()
}

/// Waits until the service is active with a main PID other than `not`; returns it.
fn wait_running(b: &SystemBox, what: &str, not: Option<u32>) -> u32 {
    let mut pid = None;
    wait_until(Duration::from_secs(30), what, || {
        pid = b.main_pid(UNIT);
        pid.is_some() && pid != not && b.unit_property(UNIT, "ActiveState") == "active"
    });
    pid.unwrap_or_default()
}

/// Waits until the service's journal says `healed [UPSTREAM CAUSE]` after `since` (µs since the
/// epoch): its last step is in the audit journal then. (The site answers 200 a step or two
/// earlier, and `STATUS=` may not have counted the incident at all.)
fn wait_healed(b: &SystemBox, since: u64, cause: &str) {
    let says = format!("healed [{API_UPSTREAM} {cause}]");
    wait_until(HEAL_WITHIN, &format!("the service logs `{says}`"), || {
        b.journal_entries(UNIT, &[]).iter().any(|e| {
            let at = e["__REALTIME_TIMESTAMP"]
                .as_str()
                .and_then(|t| t.parse::<u64>().ok());
            at.is_some_and(|at| at >= since) && e["MESSAGE"].as_str() == Some(says.as_str())
        })
    });
}

/// The copy of `API_ENV` in the backups under DIR: (its path, its bytes).
fn api_env_backup(b: &SystemBox, dir: &str) -> (String, String) {
    let found = b.exec_ok(&["find", dir, "-type", "f", "-name", "etc_default_api"]);
    let copies: Vec<&str> = found.lines().collect();
    assert_eq!(
        copies.len(),
        1,
        "one backup of {API_ENV} under {dir}: {copies:?}\n{}",
        b.exec_ok(&["find", dir])
    );
    let copy = copies[0].to_owned();
    let bytes = b.read_file(&copy);
    (copy, bytes)
}

/// The audit journal's text (empty when it does not exist yet).
fn audit_journal(b: &SystemBox) -> String {
    let out = b.exec(&["cat", "--", &format!("{STATE}/journal.jsonl")]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The next Debian revision: `0.1.0-1` → `0.1.0-2`.
fn bumped(version: &str) -> String {
    let (upstream, revision) = version
        .rsplit_once('-')
        .unwrap_or_else(|| panic!("version `{version}` has no Debian revision"));
    let revision: u32 = revision
        .parse()
        .unwrap_or_else(|e| panic!("revision of `{version}`: {e}"));
    format!("{upstream}-{}", revision + 1)
}

/// The overall exposure `systemd-analyze security` prints (`→ Overall exposure level for
/// nginx-medic.service: 2.6 OK 🙂`).
fn exposure(report: &str) -> f64 {
    report
        .lines()
        .find_map(|l| {
            let (_, rest) = l.split_once("Overall exposure level for ")?;
            rest.split_once(": ")?
                .1
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no overall exposure in:\n{report}"))
}

#[test]
fn box_package_lifecycle_install_upgrade_remove_purge() {
    let deb = deb_path();
    let venv = venv_path().display().to_string();
    let deb_in_box = deb.display().to_string();
    let items = contents(&deb);
    let files: Vec<&str> = items
        .iter()
        .filter(|(kind, _)| *kind != 'd')
        .map(|(_, p)| p.as_str())
        .collect();
    let dirs: Vec<&str> = items
        .iter()
        .filter(|(kind, _)| *kind == 'd')
        .map(|(_, p)| p.as_str())
        .collect();
    assert!(
        files.contains(&"/usr/lib/systemd/system/nginx-medic.service"),
        "the package ships the unit: {files:?}"
    );
    let machine_policy = fingerprint(POLICY);
    let mut t = Stages::new();

    let mut b = SystemBox::boot("lifecycle");
    t.done("boot");

    // --- a server whose apps already run, and no policy-rc.d -------------------------------
    assert_eq!(
        package_status(&b).trim(),
        "",
        "nginx-medic is not installed in the box (the machine's own install would show through)"
    );
    b.exec_ok(&["rm", "-f", "--", POLICY]);
    assert!(
        existing(&b, &[POLICY]).is_empty(),
        "{POLICY} is gone in the box"
    );
    assert_eq!(
        fingerprint(POLICY),
        machine_policy,
        "deleting {POLICY} inside the box left the machine's file alone"
    );
    b.timings.backends = b.provision(&["backends", &venv]);
    // man-db's trigger would rebuild the whole man page index at every dpkg run (~8 s each);
    // the index is all it skips
    b.exec_ok(&["rm", "-f", "/var/lib/man-db/auto-update"]);
    let dirs_before = existing(&b, &dirs);
    let files_before = existing(&b, &files);
    assert!(
        files_before.is_empty(),
        "the package's files exist in the box before the install: {files_before:?}"
    );
    t.done("backends up (provision.sh backends)");

    // --- install: enabled, running, observe mode --------------------------------------------
    dpkg(&b, &["-i", &deb_in_box]);
    assert_eq!(package_status(&b), "ii ");
    let first_pid = wait_running(&b, "dpkg -i started nginx-medic.service", None);
    assert_eq!(
        b.exec_ok(&["systemctl", "is-enabled", UNIT]).trim(),
        "enabled"
    );
    assert_eq!(
        b.exec_ok(&["systemctl", "is-active", UNIT]).trim(),
        "active"
    );
    let status = status_text(&b);
    assert!(
        status.starts_with("observe mode;"),
        "the shipped default is observe: STATUS={status}"
    );
    // systemd names it /lib/systemd/system/… on a merged-/usr Debian: the same file
    let fragment = b.unit_property(UNIT, "FragmentPath");
    assert_eq!(
        b.exec_ok(&["realpath", "--", &fragment]).trim(),
        "/usr/lib/systemd/system/nginx-medic.service",
        "the unit systemd runs is the package's ({fragment})"
    );
    assert_eq!(b.unit_property(UNIT, "DropInPaths"), "");
    // what the maintainer scripts made, so the purge's check below is not vacuous
    for path in [
        STATE,
        "/etc/nginx-medic/playbooks",
        "/etc/systemd/system/multi-user.target.wants/nginx-medic.service",
        "/var/lib/systemd/deb-systemd-helper-enabled/nginx-medic.service.dsh-also",
    ] {
        assert_eq!(existing(&b, &[path]), [path], "the install made {path}");
    }
    assert_eq!(b.exec_ok(&["stat", "-c", "%a", STATE]).trim(), "700");
    t.done("install (dpkg -i), observe mode");

    // --- state: mode apply in the conffile, one heal that edits an admin's file -------------
    let edited_conf = format!(
        "{}\n# this server: heal, not only report\ndaemon:\n  mode: apply\n",
        b.read_file(CONF)
    );
    b.write_file(CONF, &edited_conf);
    b.systemctl_ok(&["restart", UNIT]);
    let apply_pid = wait_running(&b, "nginx-medic restarted in apply mode", Some(first_pid));
    let status = status_text(&b);
    assert!(status.starts_with("apply mode;"), "STATUS={status}");
    assert_eq!(
        b.http_status(API_SITE, "/"),
        200,
        "the api site before the fault"
    );
    let fault = now_micros();
    b.set_env(API_ENV, "HOST", "127.0.0.2");
    let pre_heal = b.read_file(API_ENV);
    b.systemctl_ok(&["restart", "api.service"]);
    let healed = wait_until(
        HEAL_WITHIN,
        "the bind host in /etc/default/api healed",
        || b.http_status(API_SITE, "/") == 200,
    );
    println!(
        "lifecycle: HOST=127.0.0.2 in {API_ENV}: 200 again {} ms after the restart",
        healed.as_millis()
    );
    let now = b.read_file(API_ENV);
    assert!(
        now.lines().any(|l| l == "HOST=127.0.0.1"),
        "the heal rewrote {API_ENV}:\n{now}"
    );
    wait_healed(&b, fault, "bind-mismatch");
    let (copy, backed_up) = api_env_backup(&b, &format!("{STATE}/backups"));
    assert_eq!(
        backed_up, pre_heal,
        "{copy} is {API_ENV} as it was before the heal"
    );
    let journal_before = audit_journal(&b);
    assert!(
        journal_before.lines().count() > 0 && journal_before.contains(API_ENV),
        "the audit journal records the edit of {API_ENV}:\n{journal_before}"
    );
    let backups_before = b.exec_ok(&["find", &format!("{STATE}/backups")]);
    t.done("apply mode and one heal (state made)");

    // --- upgrade over the running service ---------------------------------------------------
    let old_version = package_version(&b);
    let new_version = bumped(&old_version);
    let work = b
        .exec_ok(&["mktemp", "-d", "/root/nginx-medic-upgrade.XXXXXX"])
        .trim()
        .to_owned();
    let tree = format!("{work}/tree");
    let new_deb = format!("{work}/nginx-medic_{new_version}.deb");
    b.exec_ok(&["dpkg-deb", "-R", &deb_in_box, &tree]);
    b.exec_ok(&[
        "sed",
        "-i",
        "-e",
        &format!("s/^Version: .*/Version: {new_version}/"),
        &format!("{tree}/DEBIAN/control"),
    ]);
    b.exec_ok(&["dpkg-deb", "-Zgzip", "-b", &tree, &new_deb]);
    b.exec_ok(&[
        "dpkg",
        "--compare-versions",
        &new_version,
        "gt",
        &old_version,
    ]);
    t.done("repack as a newer build");

    let said = dpkg(&b, &["-i", &new_deb]);
    assert!(
        !said.contains("Configuration file"),
        "dpkg asked about the conffile, although it did not change between the builds:\n{said}"
    );
    assert_eq!(package_status(&b), "ii ");
    assert_eq!(package_version(&b), new_version);
    let upgraded_pid = wait_running(
        &b,
        "the upgrade restarted nginx-medic.service",
        Some(apply_pid),
    );
    assert_eq!(
        b.unit_property(UNIT, "NRestarts"),
        "0",
        "the upgrade's restart was dpkg's, not systemd's after a failure"
    );
    assert_eq!(
        b.read_file(CONF),
        edited_conf,
        "the edited conffile is kept"
    );
    let dpkg_copies = existing(
        &b,
        &[
            "/etc/nginx-medic/medic.yaml.dpkg-dist",
            "/etc/nginx-medic/medic.yaml.dpkg-old",
            "/etc/nginx-medic/medic.yaml.dpkg-new",
        ],
    );
    assert!(dpkg_copies.is_empty(), "{dpkg_copies:?}");
    let status = status_text(&b);
    assert!(
        status.starts_with("apply mode;"),
        "after the upgrade: STATUS={status}"
    );
    let facts = b.exec(&["nginx-medic", "facts"]);
    assert_eq!(
        facts.status.code(),
        Some(0),
        "nginx-medic facts with the kept configuration:\n{}",
        text(&facts)
    );
    assert_eq!(
        b.exec_ok(&["find", &format!("{STATE}/backups")]),
        backups_before,
        "the upgrade kept the backups"
    );
    assert!(
        audit_journal(&b).starts_with(&journal_before),
        "the upgrade kept the audit journal"
    );
    t.done("upgrade (dpkg -i newer) over the running service");

    // the upgraded service heals, and its journal goes on where the old one stopped
    let api_pid = b.main_pid("api.service");
    let fault = now_micros();
    b.systemctl_ok(&["stop", "api.service"]);
    wait_until(HEAL_WITHIN, "api stopped, healed after the upgrade", || {
        b.http_status(API_SITE, "/") == 200
    });
    assert_ne!(b.main_pid("api.service"), api_pid, "a new api process");
    wait_healed(&b, fault, "backend-down");
    let journal_after = audit_journal(&b);
    assert!(
        journal_after.starts_with(&journal_before)
            && journal_after.lines().count() > journal_before.lines().count(),
        "the audit journal keeps its lines and adds new ones:\nbefore:\n{journal_before}\nafter:\n{journal_after}"
    );
    assert_eq!(
        b.main_pid(UNIT),
        Some(upgraded_pid),
        "the service did not restart"
    );
    println!(
        "lifecycle: audit journal: {} lines before the upgrade, {} after a heal by the new build",
        journal_before.lines().count(),
        journal_after.lines().count()
    );
    t.done("a heal after the upgrade");

    // --- systemd's own view of the sandbox (acceptance 8) -----------------------------------
    let report = text(&b.exec(&["systemd-analyze", "security", "--no-pager", UNIT]));
    println!("--- systemd-analyze security {UNIT}:\n{report}");
    let level = exposure(&report);
    println!("lifecycle: systemd-analyze security: overall exposure {level}");
    assert!(
        level <= MAX_EXPOSURE,
        "the installed unit's exposure is {level}, above {MAX_EXPOSURE}"
    );
    t.done("systemd-analyze security");

    // --- remove: stopped and gone, the configuration kept -----------------------------------
    dpkg(&b, &["-r", PKG]);
    assert_eq!(package_status(&b), "rc ");
    assert_eq!(b.unit_property(UNIT, "ActiveState"), "inactive");
    assert_eq!(b.main_pid(UNIT), None);
    // deb-systemd-helper masks a removed package's unit until it is purged or reinstalled
    let load = b.unit_property(UNIT, "LoadState");
    println!("lifecycle: after dpkg -r: LoadState={load}");
    assert!(
        load == "not-found" || load == "masked",
        "the unit is gone: LoadState={load}"
    );
    let running = b.exec(&["pgrep", "-x", PKG]);
    assert!(
        !running.status.success(),
        "no nginx-medic process is left: {}",
        text(&running)
    );
    let left = existing(
        &b,
        &[
            "/usr/bin/nginx-medic",
            "/usr/lib/systemd/system/nginx-medic.service",
        ],
    );
    assert!(left.is_empty(), "removed: {left:?}");
    assert_eq!(
        b.read_file(CONF),
        edited_conf,
        "dpkg -r keeps the configuration"
    );
    assert_eq!(
        audit_journal(&b),
        journal_after,
        "dpkg -r keeps the state directory"
    );
    t.done("remove (dpkg -r)");

    // --- purge: nothing left, the admin's backups kept and named ---------------------------
    let said = dpkg(&b, &["-P", PKG]);
    let kept = said
        .lines()
        .find_map(|l| l.strip_prefix(KEPT_SAYS))
        .unwrap_or_else(|| panic!("the purge does not say where the backups went:\n{said}"))
        .trim()
        .to_owned();
    let stamp = kept
        .strip_prefix("/var/backups/nginx-medic-")
        .unwrap_or_else(|| panic!("kept in `{kept}`, not /var/backups/nginx-medic-STAMP"));
    assert!(
        stamp.len() == 16
            && stamp.as_bytes()[8] == b'T'
            && stamp.ends_with('Z')
            && stamp
                .chars()
                .enumerate()
                .all(|(i, c)| i == 8 || i == 15 || c.is_ascii_digit()),
        "a UTC stamp YYYYMMDDTHHMMSSZ: `{stamp}`"
    );
    assert_eq!(
        b.exec_ok(&["stat", "-c", "%a %U", &kept]).trim(),
        "700 root",
        "{kept} is private"
    );
    let (copy, backed_up) = api_env_backup(&b, &kept);
    assert_eq!(
        backed_up, pre_heal,
        "{copy}: the purge kept the backup of {API_ENV} byte for byte"
    );
    assert_eq!(
        b.read_file(&format!("{kept}/journal.jsonl")),
        journal_after,
        "the purge kept the audit journal beside the backups"
    );
    assert_eq!(package_status(&b).trim(), "", "dpkg forgot the package");
    let mut left = existing(&b, &files);
    left.extend(
        existing(&b, &dirs)
            .into_iter()
            .filter(|d| !dirs_before.contains(d)),
    );
    left.extend(existing(&b, &SCRIPT_PATHS));
    let info = b.exec_ok(&["find", "/var/lib/dpkg/info", "-name", "nginx-medic.*"]);
    left.extend(info.lines().map(str::to_owned));
    assert!(left.is_empty(), "left after the purge: {left:?}");
    t.done("purge (dpkg -P)");
    println!(
        "lifecycle: checked {} package paths and {} the scripts create; backups kept in {kept}",
        items.len(),
        SCRIPT_PATHS.len()
    );

    drop(b);
    t.done("teardown");
    assert_eq!(
        fingerprint(POLICY),
        machine_policy,
        "the machine's {POLICY} is untouched"
    );
    t.print();
}
