//! Probes aimed at one server block, against a real nginx started by the test: two servers on
//! one port where only one is broken (each way round), a TLS port with a certificate made at
//! test time (`openssl`), a redirecting site, and a catch-all that no probe can reach. The aims
//! come from the configuration as nginx-medic reads it (`facts::aim`), the answers from nginx.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use crate::support::nginx::Nginx;
use nginx_medic::adapters::probe::{answers, probe_http, probe_site};
use nginx_medic::facts::aim::Aim;

/// A free TCP port on 127.0.0.1 (bound and released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A backend answering `200 ok` to every request, on a thread that lives as long as the test.
fn backend() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the backend");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut sock in listener.incoming().flatten() {
            let mut buf = [0u8; 2048];
            let _ = sock.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = sock.read(&mut buf);
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    port
}

/// The status of a probe of `aim` at `path`, aimed (with its `Host`) or not.
fn status(aim: &Aim, aimed: bool) -> Result<u16, String> {
    let url = format!("{}/", aim.base);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = rt.block_on(async {
        if aimed {
            probe_site(&url, aim.host.as_deref(), Duration::from_secs(5)).await
        } else {
            probe_http(&url, Duration::from_secs(5)).await
        }
    });
    result
        .status
        .ok_or_else(|| result.error.unwrap_or_default())
}

#[test]
fn lab_probes_reach_the_server_block_they_are_aimed_at() {
    let live = backend();
    let dead = free_port();
    let (p1, p2, p3, p4, p5) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=tls.lab", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let (cert, key) = (cert.display(), key.display());
    let good = |name: &str, port: u16| {
        format!(
            " server {{ listen 127.0.0.1:{port}; server_name {name}; location / {{ proxy_pass http://127.0.0.1:{live}; }} }}\n"
        )
    };
    let bad = |name: &str, port: u16| {
        format!(
            " server {{ listen 127.0.0.1:{port}; server_name {name}; location / {{ proxy_pass http://127.0.0.1:{dead}; }} }}\n"
        )
    };
    let servers = [
        // p1: the healthy site first (the default server), the broken one second
        good("good-a.lab", p1),
        bad("bad-a.lab", p1),
        // p2: the other way round
        bad("bad-b.lab", p2),
        good("good-b.lab", p2),
        // p3: two TLS servers, told apart by the server name
        format!(
            " server {{ listen 127.0.0.1:{p3} ssl; server_name tls.lab; ssl_certificate {cert}; ssl_certificate_key {key}; location / {{ proxy_pass http://127.0.0.1:{live}; }} }}\n"
        ),
        format!(
            " server {{ listen 127.0.0.1:{p3} ssl; server_name broken-tls.lab; ssl_certificate {cert}; ssl_certificate_key {key}; location / {{ proxy_pass http://127.0.0.1:{dead}; }} }}\n"
        ),
        // p4: a site that redirects
        format!(" server {{ listen 127.0.0.1:{p4}; server_name redirect.lab; return 301 https://tls.lab/; }}\n"),
        // p5: a named site first, then a catch-all that is not the default server
        good("named.lab", p5),
        format!(" server {{ listen 127.0.0.1:{p5}; server_name _; location / {{ proxy_pass http://127.0.0.1:{dead}; }} }}\n"),
    ]
    .concat();
    let nginx = Nginx::start(&servers, dir);
    for port in [p1, p2, p3, p4, p5] {
        nginx.wait(port);
    }
    let a = nginx.aims();
    assert_eq!(a.len(), 9, "{a:#?}");

    // one port, two names: each probe reaches its own block
    assert_eq!(
        a[0].host.as_deref(),
        Some(format!("good-a.lab:{p1}").as_str())
    );
    assert_eq!(status(&a[0], true), Ok(200));
    assert_eq!(
        status(&a[1], true),
        Ok(502),
        "the broken site is seen broken"
    );
    assert_eq!(
        status(&a[1], false),
        Ok(200),
        "without its Host, a probe of the broken site reaches the healthy default server"
    );
    assert_eq!(status(&a[2], true), Ok(502));
    assert_eq!(
        status(&a[3], true),
        Ok(200),
        "the healthy site is seen healthy"
    );
    assert_eq!(
        status(&a[3], false),
        Ok(502),
        "without its Host, a probe of the healthy site reaches the broken default server"
    );

    // TLS: spoken over TLS with the name as SNI and Host
    assert_eq!(a[4].base, format!("https://127.0.0.1:{p3}"));
    assert_eq!(status(&a[4], true), Ok(200));
    assert_eq!(status(&a[5], true), Ok(502));
    let plain = status(
        &Aim {
            base: format!("http://127.0.0.1:{p3}"),
            ..a[4].clone()
        },
        true,
    );
    assert_eq!(
        plain,
        Ok(400),
        "plain HTTP to the TLS port: what the probe no longer sends"
    );

    // a redirect is an answer
    let redirect = status(&a[6], true).unwrap();
    assert_eq!(redirect, 301);
    assert!(answers(redirect, 200));

    // the catch-all behind a named default: not aimed, nothing probed
    assert_eq!(status(&a[7], true), Ok(200));
    assert_eq!(a[8].host, None);
    let why = a[8].not_aimed.as_deref().unwrap();
    assert!(why.contains("not the default_server"), "{why}");
    let refused = a[8].host_for(&format!("{}/", a[8].base)).unwrap_err();
    assert!(refused.contains("cannot be aimed"), "{refused}");
}

/// The whole pipeline in the lab: a TLS site and a decoy default server (always 502) share a
/// port, and the backend behind the TLS site (the lab's `api.service`) is stopped. `apply`
/// restarts it and verifies over TLS with `Host: tls.lab` — the only probe that can see it
/// healed: plain HTTP to that port is a 400, and without the name nginx answers from the decoy.
#[test]
fn lab_a_tls_site_beside_a_decoy_is_healed_and_verified_over_tls() {
    use crate::support::lab::Lab;
    let lab = Lab::start();
    let (port, api) = (lab.base + 7, lab.port("api"));
    let tls = lab.dir.join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    let (cert, key) = (tls.join("site.crt"), tls.join("site.key"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=tls.lab", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let (cert, key) = (cert.display(), key.display());
    let site = format!(
        "server {{\n    listen 127.0.0.1:{port} ssl;\n    server_name decoy.lab;\n    ssl_certificate {cert};\n    ssl_certificate_key {key};\n    location / {{\n        return 502;\n    }}\n}}\n\
         server {{\n    listen 127.0.0.1:{port} ssl;\n    server_name tls.lab;\n    ssl_certificate {cert};\n    ssl_certificate_key {key};\n    location / {{\n        proxy_pass http://127.0.0.1:{api};\n    }}\n}}\n"
    );
    std::fs::write(lab.dir.join("nginx/sites-enabled/tls.conf"), site).unwrap();
    let reload = lab.systemctl(&["reload", "nginx.service"]);
    assert!(reload.status.success(), "{reload:?}");
    std::thread::sleep(Duration::from_millis(700));
    let stop = lab.systemctl(&["stop", "api.service"]);
    assert!(stop.status.success(), "{stop:?}");

    let (_, plan) = lab.medic_json(&["plan"]);
    let text = plan.to_string();
    assert!(
        text.contains(&format!(r#""url":"https://127.0.0.1:{port}/""#))
            && text.contains(&format!(r#""host":"tls.lab:{port}""#)),
        "the TLS site's probe speaks TLS as tls.lab: {plan:#}"
    );
    let applied = lab.apply_heals(lab.port("api_site"));
    assert!(
        applied
            .to_string()
            .contains(&format!("https://127.0.0.1:{port}/ answered 200")),
        "{applied:#}"
    );
    // what the probe saw is what a client of tls.lab sees; the decoy is still broken
    let aim = |host: &str| Aim {
        base: format!("https://127.0.0.1:{port}"),
        host: Some(host.to_string()),
        not_aimed: None,
    };
    assert_eq!(status(&aim(&format!("tls.lab:{port}")), true), Ok(200));
    assert_eq!(status(&aim(&format!("decoy.lab:{port}")), true), Ok(502));
    let plain = Aim {
        base: format!("http://127.0.0.1:{port}"),
        ..aim("tls.lab")
    };
    assert_eq!(status(&plain, true), Ok(400));
}

/// A Latin-1 comment in one site file does not blind nginx-medic: nginx loads the file, and
/// `diagnose` still sees every site, the stopped backend behind this one included.
#[test]
fn lab_a_latin1_comment_does_not_blind_the_diagnosis() {
    use crate::support::lab::Lab;
    let lab = Lab::start();
    let (port, api) = (lab.base + 8, lab.port("api"));
    let mut site = b"# Caf\xe9 cr\xe8me: le site de l'\xe9quipe\n".to_vec();
    site.extend_from_slice(
        format!(
            "server {{\n    listen 127.0.0.1:{port};\n    server_name cafe.lab;\n    location / {{\n        proxy_pass http://127.0.0.1:{api};\n    }}\n}}\n"
        )
        .as_bytes(),
    );
    std::fs::write(lab.dir.join("nginx/sites-enabled/cafe.conf"), site).unwrap();
    let reload = lab.systemctl(&["reload", "nginx.service"]);
    assert!(reload.status.success(), "{reload:?}");
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(lab.http_status(port, "/"), 200, "nginx loaded it");
    let stop = lab.systemctl(&["stop", "api.service"]);
    assert!(stop.status.success(), "{stop:?}");

    let (code, diagnosis) = lab.medic_json(&["diagnose"]);
    assert_eq!(code, 2, "{diagnosis:#}");
    let findings = diagnosis["findings"].as_array().unwrap();
    assert!(
        findings
            .iter()
            .any(|f| f["site"] == "cafe.lab" && f["cause"] == "backend-down"),
        "{diagnosis:#}"
    );
}
