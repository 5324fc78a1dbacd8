//! Hostile files an app owns, at `diagnose` level (issue 13, acceptance 6): the lab's `web.env`
//! (web.service's `EnvironmentFile=`) made a symlink to `/dev/zero`, a character device node,
//! a FIFO and a 2 GB sparse file. Each `diagnose` ends in bounded time and memory, names the
//! file, and still diagnoses the rest.

use crate::support::lab::Lab;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one `diagnose` may take here (it takes about a second on an idle machine).
const DEADLINE: Duration = Duration::from_secs(60);
/// The most memory one `diagnose` of the lab may use (a 2 GB read would be far above).
const MAX_RSS_KIB: u64 = 200 * 1024;

fn make(kind: &str, path: &Path) {
    use rustix::fs::{FileType, Mode, CWD};
    match kind {
        "symlink to /dev/zero" => std::os::unix::fs::symlink("/dev/zero", path).unwrap(),
        "char device" => rustix::fs::mknodat(
            CWD,
            path,
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o644),
            rustix::fs::makedev(1, 5),
        )
        .unwrap(),
        "fifo" => {
            rustix::fs::mknodat(CWD, path, FileType::Fifo, Mode::from_raw_mode(0o644), 0).unwrap()
        }
        "2 GB sparse" => std::fs::File::create(path)
            .unwrap()
            .set_len(2 << 30)
            .unwrap(),
        other => panic!("no kind {other}"),
    }
}

/// `diagnose` under `/usr/bin/time`: exit code, stderr, wall time and peak RSS (KiB). Killed
/// (and the test failed) past [`DEADLINE`].
fn timed_diagnose(lab: &Lab) -> (Option<i32>, String, Duration, u64) {
    let medic = lab.medic_command();
    let mut cmd = Command::new("/usr/bin/time");
    cmd.args(["-f", "maxrss_kib=%M"])
        .arg(medic.get_program())
        .args(medic.get_args())
        .arg("diagnose")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in medic.get_envs() {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    let started = Instant::now();
    let mut child = cmd.spawn().expect("/usr/bin/time (package time) runs");
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("diagnose did not end within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let rss = stderr
        .lines()
        .find_map(|l| l.strip_prefix("maxrss_kib="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rss in {stderr}"));
    (status.code(), stderr, elapsed, rss)
}

#[test]
fn lab_diagnose_is_bounded_with_a_hostile_environment_file() {
    let lab = Lab::start();
    let env = lab.dir.join("config/web.env");
    let saved = std::fs::read(&env).expect("the lab's web.env");
    std::fs::remove_file(&env).unwrap();
    for kind in ["symlink to /dev/zero", "char device", "fifo", "2 GB sparse"] {
        make(kind, &env);
        let (code, stderr, elapsed, rss) = timed_diagnose(&lab);
        eprintln!("{kind}: exit {code:?}, {elapsed:?}, {rss} KiB");
        assert!(
            matches!(code, Some(0) | Some(2)),
            "{kind}: diagnose ran to its end (healthy or findings), exit {code:?}\n{stderr}"
        );
        assert!(rss < MAX_RSS_KIB, "{kind}: {rss} KiB");
        let named = "cannot read the unit's environment file";
        assert!(
            stderr.contains(named) && stderr.contains(&env.display().to_string()),
            "{kind}: the file is named\n{stderr}"
        );
        let why = if kind == "2 GB sparse" {
            "more than a settings file holds"
        } else {
            "not a regular file"
        };
        assert!(stderr.contains(why), "{kind}: says why\n{stderr}");
        std::fs::remove_file(&env).unwrap();
    }
    std::fs::write(&env, saved).unwrap();
    let (code, stderr, _, _) = timed_diagnose(&lab);
    assert_eq!(
        code,
        Some(0),
        "healthy again once the file is back\n{stderr}"
    );
    assert!(!stderr.contains("environment file"), "{stderr}");
}
