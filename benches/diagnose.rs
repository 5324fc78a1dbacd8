//! `cargo bench --bench diagnose`: how `nginx-medic diagnose` scales with the number of sites,
//! side by side with `nginx -T` on the same generated trees, in the same run.
//!
//! Each tree has 1,000 / 3,000 / 10,000 `server` blocks spread over ~1,000 files (`include`d
//! from `nginx.conf` by glob), an `upstream` block per server (a TCP server and a unix-socket
//! backup), 2.5 locations per server on average (`proxy_pass` to the upstream, `proxy_pass` to
//! a TCP address, every other server a `fastcgi_pass` to a unix socket), and snippets
//! `include`d inside locations. Nothing listens on any backend address, so every location is
//! a route with findings: the run exercises targets, evaluate and plan for each of them.
//!
//! What is measured:
//! - `diagnose`: the whole process (`nginx-medic --config medic.yaml diagnose`), wall time and
//!   peak RSS (`wait4`). The medic.yaml points `nginx.binary` at `/bin/true`, so `nginx -t`
//!   (which gather runs on every snapshot) is excluded, and uses the user bus: without a
//!   session bus systemd is reported unavailable, which is a fact, not an abort.
//! - parse + extract of the tree in-process (`nginx_conf::load` + `facts::nginx::extract`).
//! - the reference: `/usr/sbin/nginx -T -q` on the same tree (it parses, tests and prints it).
//!
//! `BENCH_SIZES=1000,3000` runs other sizes; `BENCH_RUNS` sets the samples per figure (median);
//! `BENCH_KEEP=1` keeps the trees (to profile `diagnose` on one).

use nginx_medic::nginx_conf::{load, RealFs};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The number of site files; the servers are spread evenly over them.
const FILES: usize = 1000;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

/// Runs a command to its end: wall time, peak RSS in KiB, and whether it exited 0..=2
/// (`diagnose` exits 2 when it has findings).
// the child is reaped by `wait4` (for its rusage), which the lint cannot see
#[allow(clippy::zombie_processes)]
fn measure(program: &Path, args: &[&str]) -> (Duration, u64, bool) {
    let start = Instant::now();
    let child = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: a plain wait4 on our own child, with valid pointers to locals.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let elapsed = start.elapsed();
    assert_eq!(waited, pid, "wait4 on {}", program.display());
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    let ok = matches!(code, Some(0..=2));
    if !ok {
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr {
            use std::io::Read;
            let _ = e.read_to_string(&mut stderr);
        }
        eprintln!(
            "{}: exit {code:?}: {}",
            program.display(),
            stderr.lines().next().unwrap_or_default()
        );
    }
    (elapsed, usage.ru_maxrss as u64, ok)
}

/// The median wall time and the largest peak RSS over `runs` runs.
fn measure_runs(program: &Path, args: &[&str], runs: usize) -> Option<(Duration, u64)> {
    let mut times = Vec::new();
    let mut rss = 0;
    for _ in 0..runs {
        let (t, r, ok) = measure(program, args);
        if !ok {
            return None;
        }
        times.push(t);
        rss = rss.max(r);
    }
    Some((median(times), rss))
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("dir");
    std::fs::write(path, text).expect("write");
}

/// Writes a tree of `servers` servers under `dir`; returns the main file.
fn generate(dir: &Path, servers: usize) -> PathBuf {
    let d = dir.display();
    write(
        &dir.join("nginx.conf"),
        &format!(
            "pid {d}/nginx.pid;\nerror_log {d}/logs/error.log;\nevents {{ worker_connections 1024; }}\n\
             http {{\n    client_body_temp_path {d}/t1; proxy_temp_path {d}/t2; fastcgi_temp_path {d}/t3;\n    \
             uwsgi_temp_path {d}/t4; scgi_temp_path {d}/t5;\n    access_log off;\n    \
             server_names_hash_max_size 65536; server_names_hash_bucket_size 128;\n    \
             include conf.d/*.conf;\n    include sites-enabled/*.conf;\n}}\n"
        ),
    );
    std::fs::create_dir_all(dir.join("logs")).expect("logs");
    write(
        &dir.join("conf.d/proxy.conf"),
        "proxy_connect_timeout 5s;\nproxy_read_timeout 60s;\nproxy_buffer_size 8k;\n",
    );
    write(
        &dir.join("snippets/proxy-headers.conf"),
        "proxy_set_header Host $host;\nproxy_set_header X-Real-IP $remote_addr;\n",
    );
    write(
        &dir.join("snippets/fastcgi.conf"),
        "fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;\nfastcgi_read_timeout 30s;\n",
    );
    let per_file = servers.div_ceil(FILES);
    let mut i = 0;
    for file in 0..FILES {
        let mut text = String::new();
        for _ in 0..per_file {
            if i == servers {
                break;
            }
            let backend = 40000 + i;
            let _ = write!(
                text,
                "upstream app{i} {{\n    server 127.0.0.1:{backend} max_fails=3;\n    \
                 server unix:/run/app{i}/app.sock backup;\n    keepalive 8;\n}}\n\
                 server {{\n    listen 127.0.0.1:{listen};\n    server_name site{i}.example www.site{i}.example;\n    \
                 error_log {d}/logs/site{i}.error.log;\n    \
                 location / {{\n        include {d}/snippets/proxy-headers.conf;\n        proxy_pass http://app{i};\n    }}\n    \
                 location /api/ {{\n        proxy_pass http://127.0.0.1:{api}/v1/;\n    }}\n",
                listen = 10000 + i,
                api = 20000 + i,
            );
            if i % 2 == 1 {
                let _ = write!(
                    text,
                    "    location ~ \\.php$ {{\n        include {d}/snippets/fastcgi.conf;\n        \
                     fastcgi_pass unix:/run/php/pool{pool}.sock;\n    }}\n",
                    pool = i % 50
                );
            }
            text.push_str("}\n");
            i += 1;
        }
        write(
            &dir.join(format!("sites-enabled/site{file:04}.conf")),
            &text,
        );
    }
    write(
        &dir.join("medic.yaml"),
        &format!(
            "version: 1\nnginx:\n  binary: /bin/true\n  conf: {d}/nginx.conf\n  prefix: {d}\n  \
             error_log: {d}/logs/error.log\nsystemd:\n  bus: user\nstate_dir: {d}/state\n\
             playbooks: [{root}/playbooks]\ntemplates: [{root}/templates]\n",
            root = env!("CARGO_MANIFEST_DIR"),
        ),
    );
    dir.join("nginx.conf")
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let sizes: Vec<usize> = std::env::var("BENCH_SIZES")
        .unwrap_or_else(|_| "1000,3000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let medic = PathBuf::from(env!("CARGO_BIN_EXE_nginx-medic"));
    let nginx = Path::new("/usr/sbin/nginx");
    let tmp = std::env::temp_dir().join(format!("nginx-medic-scale-{}", std::process::id()));
    println!("nginx -t excluded from diagnose: medic.yaml sets nginx.binary: /bin/true; {runs} runs, median");
    println!(
        "{:>8}  {:>12} {:>10}  {:>14}  {:>12}  {:>10} {:>10}",
        "servers", "diagnose", "peak RSS", "parse+extract", "nginx -T", "diag/-T", "parse/-T"
    );
    let mut first: Option<(usize, Duration)> = None;
    let mut last: Option<(usize, Duration)> = None;
    for &n in &sizes {
        let dir = tmp.join(n.to_string());
        let conf = generate(&dir, n);
        let yaml = dir.join("medic.yaml").display().to_string();
        let diagnose = measure_runs(&medic, &["--config", &yaml, "diagnose"], runs);
        let parse = median(
            (0..runs)
                .map(|_| {
                    let start = Instant::now();
                    let config = load(&conf, &RealFs).expect("the generated tree parses");
                    let facts = nginx_medic::facts::nginx::extract(&config, &dir);
                    assert_eq!(facts.sites.len(), n);
                    start.elapsed()
                })
                .collect(),
        );
        let prefix = format!("{}/", dir.display());
        let conf_s = conf.display().to_string();
        let reference = measure_runs(nginx, &["-T", "-q", "-p", &prefix, "-c", &conf_s], runs);
        let ratio = |ours: Duration| {
            reference.map_or("-".into(), |(t, _)| {
                format!("{:.3}", ours.as_secs_f64() / t.as_secs_f64())
            })
        };
        println!(
            "{n:>8}  {:>12} {:>10}  {:>14}  {:>12}  {:>10} {:>10}",
            diagnose.map_or("failed".into(), |(t, _)| ms(t)),
            diagnose.map_or("-".into(), |(_, kib)| format!(
                "{:.1} MiB",
                kib as f64 / 1024.0
            )),
            ms(parse),
            reference.map_or("(not available)".into(), |(t, _)| ms(t)),
            diagnose.map_or("-".into(), |(t, _)| ratio(t)),
            ratio(parse),
        );
        if let Some((t, _)) = diagnose {
            first.get_or_insert((n, t));
            last = Some((n, t));
        }
        if std::env::var_os("BENCH_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    if let (Some((n0, t0)), Some((n1, t1))) = (first, last) {
        if n1 > n0 {
            println!(
                "diagnose growth {n0} -> {n1} servers: {:.1}x in time for {:.1}x the servers",
                t1.as_secs_f64() / t0.as_secs_f64(),
                n1 as f64 / n0 as f64
            );
        }
    }
    if std::env::var_os("BENCH_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&tmp);
    } else {
        println!("trees kept in {}", tmp.display());
    }
}
