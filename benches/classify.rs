//! `cargo bench --bench classify`: error-log classification at scale, side by side with
//! `grep -c -F` of the same eight upstream texts on the same file, in the same run.
//!
//! The log is generated once under `target/bench-classify/` (1 GiB by default; set
//! `CLASSIFY_BENCH_MIB` for another size): 40 % upstream errors of the eight common texts
//! (refused, no such file, permission denied, timed out, prematurely closed, too big header, no
//! live upstreams, reset by peer), 60 % other nginx lines. It is read once before timing, so
//! both sides read it from the page cache. Ours streams the file and extracts the fields of
//! every line it reports (class, upstream address, request, host; borrowed, as `scan` hands
//! them out); grep only counts. Two rows of ours:
//! - the product's path: reads of the follower's `CHUNK` (64 KiB), as the follower hands
//!   them to `scan` (after an unfinished line kept from the read before): one thread;
//! - 4 MiB reads, which `scan` searches on two threads (what this bench measured before).
//!
//! Prints the medians of 3 runs, GB/s and the ratio (< 1: nginx-medic is faster).

use nginx_medic::facts::error_log::LogClass;
use nginx_medic::facts::log_scan::scan;
use std::collections::BTreeMap;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const RUNS: usize = 3;
/// The product's reads: the follower's (see the module doc).
const PRODUCT_READ: usize = nginx_medic::daemon::follow::CHUNK;
/// Reads that `scan` cuts in two and searches on two threads.
const SPLIT_READ: usize = 4 << 20;

const UPSTREAM: [&str; 8] = [
    "connect() failed (111: Connection refused) while connecting to upstream",
    "connect() to unix:/run/php/php8.2-fpm.sock failed (2: No such file or directory) while connecting to upstream",
    "connect() to unix:/run/app.sock failed (13: Permission denied) while connecting to upstream",
    "upstream timed out (110: Connection timed out) while reading response header from upstream",
    "upstream prematurely closed connection while reading response header from upstream",
    "upstream sent too big header while reading response header from upstream",
    "no live upstreams while connecting to upstream",
    "recv() failed (104: Connection reset by peer) while reading response header from upstream",
];

/// The fixed texts grep looks for, one per upstream message above.
const GREP_PATTERNS: [&str; 8] = [
    "(111: Connection refused)",
    "(2: No such file or directory)",
    "(13: Permission denied)",
    "upstream timed out",
    "upstream prematurely closed",
    "upstream sent too big header",
    "no live upstreams",
    "(104: Connection reset by peer)",
];

const OTHER: [&str; 5] = [
    "client intended to send too large body: 1048577 bytes",
    "access forbidden by rule",
    "directory index of \"/var/www/html/files/\" is forbidden",
    "client closed connection while waiting for request",
    "limiting requests, excess: 10.520 by zone \"one\"",
];

fn generate(path: &Path, bytes: u64) {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).expect("log"));
    let (mut written, mut i, mut seed) = (0u64, 0u64, 0x2545_f491_4f6c_dd1du64);
    while written < bytes {
        // xorshift: a fixed sequence, so every run reads the same file
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let (site, port) = (i % 97, 8000 + i % 97);
        let time = format!(
            "2026/12/01 {:02}:{:02}:{:02}",
            i / 3600 % 24,
            i / 60 % 60,
            i % 60
        );
        let line = if seed % 10 < 4 {
            let message = UPSTREAM[(seed >> 8) as usize % UPSTREAM.len()];
            format!(
                "{time} [error] 4242#4242: *{i} {message}, client: 10.0.{}.{}, server: site{site}.example, request: \"GET /api/v1/items/{i}?page=2 HTTP/1.1\", upstream: \"http://127.0.0.1:{port}/api/v1/items/{i}?page=2\", host: \"site{site}.example\", referrer: \"https://site{site}.example/list\"\n",
                i % 250,
                i % 199
            )
        } else {
            let message = OTHER[(seed >> 8) as usize % OTHER.len()];
            format!(
                "{time} [error] 4242#4242: *{i} {message}, client: 10.0.{}.{}, server: site{site}.example, request: \"GET /static/{i}.png HTTP/1.1\", host: \"site{site}.example\"\n",
                i % 250,
                i % 199
            )
        };
        out.write_all(line.as_bytes()).expect("write");
        written += line.len() as u64;
        i += 1;
    }
    out.flush().expect("flush");
}

/// What our side extracts: lines per class, and a checksum over the borrowed fields.
fn classify(path: &Path, read_bytes: usize) -> (BTreeMap<LogClass, u64>, usize) {
    let mut file = std::fs::File::open(path).expect("open");
    let mut buffer = vec![0u8; read_bytes + (64 << 10)];
    let (mut held, mut tally, mut checksum) = (0usize, [0u64; LogClass::ALL.len()], 0usize);
    loop {
        let n = file
            .read(buffer.get_mut(held..held + read_bytes).expect("room"))
            .expect("read");
        if n == 0 {
            break;
        }
        let filled = held + n;
        let used = scan(&buffer[..filled], |_, line| {
            tally[line.class as usize] += 1;
            checksum += line.dialled_str().map_or(0, |a| a.len())
                + line.request.map_or(0, str::len)
                + line.host.map_or(0, str::len);
        });
        buffer.copy_within(used..filled, 0);
        held = filled - used;
    }
    let counts = LogClass::ALL
        .iter()
        .zip(tally)
        .filter(|(_, n)| *n > 0)
        .map(|(class, n)| (*class, n))
        .collect();
    (counts, checksum)
}

fn grep_count(path: &Path, patterns: &Path) -> u64 {
    let out = Command::new("grep")
        .arg("-c")
        .arg("-F")
        .arg("-f")
        .arg(patterns)
        .arg(path)
        .output()
        .expect("grep");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("grep -c prints a count")
}

fn median(mut f: impl FnMut()) -> Duration {
    let mut samples: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    samples.sort();
    samples[RUNS / 2]
}

fn main() {
    let mib: u64 = std::env::var("CLASSIFY_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-classify");
    std::fs::create_dir_all(&dir).expect("bench dir");
    let log = dir.join(format!("error-{mib}MiB.log"));
    if std::fs::metadata(&log).map_or(true, |m| m.len() < mib << 20) {
        eprintln!("generating {} ...", log.display());
        generate(&log, mib << 20);
    }
    let patterns = dir.join("patterns");
    std::fs::write(&patterns, GREP_PATTERNS.join("\n") + "\n").expect("patterns");
    let size = std::fs::metadata(&log).expect("log").len();

    // read once: both sides read from the page cache
    let (counts, _) = classify(&log, PRODUCT_READ);
    assert_eq!(classify(&log, SPLIT_READ).0, counts);
    let grepped = grep_count(&log, &patterns);
    let ours: u64 = counts.values().sum();
    let one_thread = median(|| {
        std::hint::black_box(classify(&log, PRODUCT_READ));
    });
    let grep_time = median(|| {
        std::hint::black_box(grep_count(&log, &patterns));
    });
    let two_threads = median(|| {
        std::hint::black_box(classify(&log, SPLIT_READ));
    });
    let gbps = |d: Duration| size as f64 / d.as_secs_f64() / 1e9;
    println!(
        "error log of {:.2} GB, {RUNS} runs, medians (ratio < 1: nginx-medic is faster)",
        size as f64 / 1e9
    );
    for (name, time) in [
        ("nginx-medic, as the follower reads: 1 thread", one_thread),
        ("nginx-medic, 4 MiB reads: 2 threads", two_threads),
    ] {
        println!(
            "{name:<46} {:>9.0} ms {:>7.2} GB/s  ratio to grep {:.2}  {ours} lines, fields extracted",
            time.as_secs_f64() * 1e3,
            gbps(time),
            time.as_secs_f64() / grep_time.as_secs_f64()
        );
    }
    println!(
        "{:<46} {:>9.0} ms {:>7.2} GB/s  {grepped} lines counted",
        "grep -c -F, the same 8 texts",
        grep_time.as_secs_f64() * 1e3,
        gbps(grep_time)
    );
    for (class, n) in &counts {
        println!("  {class:?}: {n}");
    }
    assert_eq!(ours, grepped, "both sides find the same upstream lines");
}
