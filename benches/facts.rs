//! `cargo bench`: how fast the fact sources are, side by side with the tool a person would run
//! for the same answer on the same input, in the same run (ratio < 1 means nginx-medic is faster).
//!
//! - nginx configuration: our parse + extract of a generated 400-site config vs `nginx -T`;
//! - error log: what `facts` reads (the last 1 MiB, every line kept) and, as the issue measured
//!   it, all of 100k real-shaped lines, each vs `grep -c` of one pattern on the same bytes;
//! - sockets: our /proc scan (listeners + owning processes + units) vs `ss -ltnpx`.

use nginx_medic::adapters::procfs::Procfs;
use nginx_medic::facts::error_log::read_error_log;
use nginx_medic::facts::gather::ERROR_LOG_WINDOW;
use nginx_medic::nginx_conf::{load, RealFs};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const RUNS: usize = 15;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

fn time(mut f: impl FnMut()) -> Duration {
    f(); // warm caches
    median(
        (0..RUNS)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed()
            })
            .collect(),
    )
}

fn run(program: &str, args: &[&str]) -> bool {
    match Command::new(program).args(args).output() {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            let stderr = String::from_utf8_lossy(&o.stderr);
            eprintln!("{program}: {}", stderr.lines().next().unwrap_or_default());
            false
        }
        Err(e) => {
            eprintln!("{program}: {e}");
            false
        }
    }
}

fn row(name: &str, ours: Duration, reference: &str, theirs: Option<Duration>) {
    let ratio = theirs.map_or("-".to_string(), |t| {
        format!("{:.2}", ours.as_secs_f64() / t.as_secs_f64())
    });
    let theirs = theirs.map_or("(not available)".to_string(), |t| {
        format!("{:.2} ms", t.as_secs_f64() * 1e3)
    });
    println!(
        "{name:<24} {:>10.2} ms   {reference:<24} {theirs:>12}   {ratio:>6}",
        ours.as_secs_f64() * 1e3
    );
}

fn write_config(dir: &Path, sites: usize) {
    let sites_dir = dir.join("sites");
    std::fs::create_dir_all(&sites_dir).expect("sites dir");
    std::fs::create_dir_all(dir.join("logs")).expect("logs dir");
    let main = format!(
        "pid {d}/nginx.pid;\nerror_log {d}/logs/error.log;\nevents {{ worker_connections 1024; }}\nhttp {{\n    client_body_temp_path {d}/t1; proxy_temp_path {d}/t2; fastcgi_temp_path {d}/t3; uwsgi_temp_path {d}/t4; scgi_temp_path {d}/t5;\n    access_log off;\n    include sites/*.conf;\n}}\n",
        d = dir.display()
    );
    std::fs::write(dir.join("nginx.conf"), main).expect("nginx.conf");
    for i in 0..sites {
        let port = 20000 + i;
        let site = format!(
            "# site {i}\nupstream app{i} {{\n    server 127.0.0.1:{port} max_fails=3;\n    server 127.0.0.2:{port} backup;\n}}\nserver {{\n    listen 127.0.0.1:{p2};\n    server_name site{i}.example \"alt{i}.example\";\n    location / {{ proxy_pass http://app{i}; proxy_read_timeout 30s; }}\n    location /api/ {{\n        proxy_set_header Host $host;\n        if ($request_method = POST) {{ return 405; }}\n        proxy_pass http://127.0.0.1:{port}/v1/;\n    }}\n    location ~ \\.php$ {{ fastcgi_pass unix:/run/php/php8.2-fpm.sock; }}\n}}\n",
            p2 = 30000 + i
        );
        std::fs::write(sites_dir.join(format!("site{i:04}.conf")), site).expect("site");
    }
}

fn write_log(path: &Path, lines: usize) {
    let kinds = [
        "[error] 1234#1234: *{n} connect() failed (111: Connection refused) while connecting to upstream, client: 127.0.0.1, server: api.lab, request: \"GET /x HTTP/1.1\", upstream: \"http://127.0.0.1:8000/x\", host: \"api.lab\"",
        "[crit] 1234#1234: *{n} connect() to unix:/run/php/php8.2-fpm.sock failed (2: No such file or directory) while connecting to upstream, client: 127.0.0.1, server: php.lab, request: \"GET / HTTP/1.1\", upstream: \"fastcgi://unix:/run/php/php8.2-fpm.sock:\", host: \"php.lab\"",
        "[error] 1234#1234: *{n} upstream timed out (110: Connection timed out) while reading response header from upstream, client: 127.0.0.1, server: api.lab, request: \"GET /slow HTTP/1.1\", upstream: \"http://127.0.0.1:8000/slow\", host: \"api.lab\"",
        "[error] 1234#1234: *{n} open() \"/usr/share/nginx/html/favicon.ico\" failed (2: No such file or directory), client: 127.0.0.1, server: _, request: \"GET /favicon.ico HTTP/1.1\", host: \"localhost\"",
    ];
    let mut text = String::with_capacity(lines * 260);
    for n in 0..lines {
        let kind = kinds[n % kinds.len()].replace("{n}", &n.to_string());
        text.push_str(&format!("2026/11/26 09:00:{:02} {kind}\n", n % 60));
    }
    std::fs::write(path, text).expect("log");
}

fn main() {
    let tmp = std::env::temp_dir().join(format!("nginx-medic-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    write_config(&tmp, 400);
    let conf = tmp.join("nginx.conf");
    let log = tmp.join("error.log");
    write_log(&log, 100_000);

    println!(
        "{:<24} {:>13}   {:<24} {:>12}   {:>6}",
        "fact source", "nginx-medic", "reference", "time", "ratio"
    );
    let ours = time(|| {
        let config = load(&conf, &RealFs).expect("the generated config parses");
        let facts = nginx_medic::facts::nginx::extract(&config, &tmp);
        assert_eq!(facts.sites.len(), 400);
    });
    let prefix = format!("{}/", tmp.display());
    let conf_s = conf.display().to_string();
    let nginx_args = ["-T", "-q", "-p", prefix.as_str(), "-c", conf_s.as_str()];
    let theirs = run("/usr/sbin/nginx", &nginx_args).then(|| {
        time(|| {
            run("/usr/sbin/nginx", &nginx_args);
        })
    });
    row("nginx config (400)", ours, "nginx -T", theirs);

    // What `facts`, `diagnose` and the daemon's snapshot read: the last `ERROR_LOG_WINDOW`
    // bytes, every nginx line of them kept as an owned entry (the newest lines are shown, the
    // last one anchors the log's clock), so the prefilter cannot skip a line here. grep counts
    // the same bytes, written to a file of their own.
    let window = read_error_log(&log, ERROR_LOG_WINDOW).expect("log reads");
    let tail = tmp.join("error-window.log");
    let bytes = std::fs::read(&log).expect("log");
    std::fs::write(&tail, &bytes[window.read_from as usize..]).expect("window");
    let ours = time(|| {
        let facts = read_error_log(&log, ERROR_LOG_WINDOW).expect("log reads");
        assert_eq!(facts.entries.len(), window.entries.len());
    });
    let tail_s = tail.display().to_string();
    let grep_args = ["-c", "connect() failed", tail_s.as_str()];
    let theirs = run("grep", &grep_args).then(|| {
        time(|| {
            run("grep", &grep_args);
        })
    });
    row(
        "error log (facts, 1 MiB)",
        ours,
        "grep -c (one pattern)",
        theirs,
    );

    // the whole file the same way: what the row measured (no command reads it whole)
    let ours = time(|| {
        let facts = read_error_log(&log, u64::MAX).expect("log reads");
        assert_eq!(facts.entries.len(), 100_000);
    });
    let log_s = log.display().to_string();
    let grep_args = ["-c", "connect() failed", log_s.as_str()];
    let theirs = run("grep", &grep_args).then(|| {
        time(|| {
            run("grep", &grep_args);
        })
    });
    row(
        "error log (100k lines)",
        ours,
        "grep -c (one pattern)",
        theirs,
    );

    let procfs = Procfs::system();
    let ours = time(|| {
        procfs.socket_facts().expect("/proc reads");
    });
    let theirs = run("ss", &["-ltnpx"]).then(|| {
        time(|| {
            run("ss", &["-ltnpx"]);
        })
    });
    row("listening sockets", ours, "ss -ltnpx", theirs);
    let _ = std::fs::remove_dir_all(&tmp);
}
