//! The lab itself: real nginx in front of real backends under a fenced systemd user manager,
//! and a teardown that leaves nothing behind.

use std::thread;
use std::time::Instant;

use crate::support::lab::{pid_alive, Lab};

#[test]
fn lab_smoke_serves_fails_and_tears_down() {
    let lab = Lab::start();
    let (api_site, web_site) = (lab.port("api_site"), lab.port("web_site"));

    assert_eq!(
        lab.http_status(api_site, "/"),
        200,
        "api site\n{}",
        lab.nginx_error_log()
    );
    assert_eq!(
        lab.http_status(web_site, "/"),
        200,
        "web site\n{}",
        lab.nginx_error_log()
    );
    assert_eq!(lab.unit_property("nginx.service", "ActiveState"), "active");

    let nginx = lab
        .main_pid("nginx.service")
        .expect("nginx.service has a main PID");
    let api = lab
        .main_pid("api.service")
        .expect("api.service has a main PID");
    let web = lab
        .main_pid("web.service")
        .expect("web.service has a main PID");
    let pids = lab.cgroup_pids();
    for pid in [lab.manager_pid, nginx, api, web] {
        assert!(
            pids.contains(&pid),
            "pid {pid} is not in {}: {pids:?}",
            lab.cgroup.display()
        );
    }

    let stop = lab.systemctl(&["stop", "api.service"]);
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    assert_eq!(lab.http_status(api_site, "/"), 502);
    assert_eq!(
        lab.http_status(web_site, "/"),
        200,
        "the web site must not care"
    );
    let state = lab.systemctl(&["show", "-p", "ActiveState", "api.service"]);
    assert_eq!(
        String::from_utf8_lossy(&state.stdout).trim(),
        "ActiveState=inactive"
    );
    assert!(
        lab.nginx_error_log()
            .contains("connect() failed (111: Connection refused)"),
        "{}",
        lab.nginx_error_log()
    );
    assert!(!pid_alive(api));

    let (dir, cgroup, up) = (lab.dir.clone(), lab.cgroup.clone(), lab.up_took);
    let started = Instant::now();
    drop(lab);
    let down = started.elapsed();
    println!("lab up took {up:?}, down took {down:?}");

    for pid in pids {
        assert!(
            !pid_alive(pid),
            "pid {pid} of the lab outlived its teardown"
        );
    }
    assert!(!dir.exists(), "{} is still there", dir.display());
    assert!(!cgroup.exists(), "{} is still there", cgroup.display());
}

#[test]
fn lab_two_labs_side_by_side() {
    let (a, b) = thread::scope(|s| {
        let a = s.spawn(Lab::start);
        let b = s.spawn(Lab::start);
        (a.join(), b.join())
    });
    let (a, b) = (a.expect("first lab"), b.expect("second lab"));
    assert!(
        a.base.abs_diff(b.base) >= 20,
        "port blocks overlap: {} and {}",
        a.base,
        b.base
    );
    assert_ne!(a.cgroup, b.cgroup);

    for lab in [&a, &b] {
        assert_eq!(lab.http_status(lab.port("api_site"), "/"), 200);
        assert_eq!(lab.http_status(lab.port("web_site"), "/"), 200);
    }
    let stop = a.systemctl(&["stop", "web.service"]);
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    assert_eq!(a.http_status(a.port("web_site"), "/"), 502);
    assert_eq!(
        b.http_status(b.port("web_site"), "/"),
        200,
        "one lab's units are not the other's"
    );
    println!("two labs up in {:?} and {:?}", a.up_took, b.up_took);
}
