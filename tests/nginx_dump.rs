//! Cross-checks the parser against the real `nginx -T`: for each valid fixture, nginx must read
//! the same files in the same order, with the same text, as `nginx_conf::load`.

use std::path::{Path, PathBuf};
use std::process::Command;

use nginx_medic::nginx_conf::{load, ConfError, Config, RealFs};

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/nginx")
        .join(name)
}

/// Copies `from` into `to`, rewriting the absolute paths of a stock install so that nginx
/// reads, logs and writes its pid only inside `to`.
fn copy_rewritten(from: &Path, to: &Path, root: &str) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let src = entry.path();
        let dst = to.join(entry.file_name());
        if src.is_dir() {
            copy_rewritten(&src, &dst, root);
        } else {
            let text = std::fs::read_to_string(&src).unwrap();
            let text = text
                .replace("/etc/nginx/", &format!("{root}/"))
                .replace("/var/log/nginx/", &format!("{root}/"))
                .replace("/run/nginx.pid", &format!("{root}/nginx.pid"));
            std::fs::write(&dst, text).unwrap();
        }
    }
}

fn nginx_binary() -> PathBuf {
    for candidate in ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    panic!("nginx is not installed: this test needs the real binary (apt-get install nginx)");
}

/// The `# configuration file PATH:` headers of an `nginx -T` dump.
fn dump_files(dump: &str) -> Vec<PathBuf> {
    dump.lines()
        .filter_map(|l| l.strip_prefix("# configuration file "))
        .filter_map(|l| l.strip_suffix(':'))
        .map(PathBuf::from)
        .collect()
}

/// What `nginx -T` prints for these files: each one after its header, then a newline.
fn expected_dump(conf: &Config) -> String {
    conf.files
        .iter()
        .map(|f| format!("# configuration file {}:\n{}\n", f.path.display(), f.text))
        .collect()
}

fn check(name: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_str().unwrap().to_string();
    copy_rewritten(&fixture_dir(name), tmp.path(), &root);
    let main = tmp.path().join("nginx.conf");

    let out = Command::new(nginx_binary())
        .arg("-T")
        .arg("-q")
        .arg("-p")
        .arg(format!("{root}/"))
        .arg("-c")
        .arg(&main)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{name}: nginx -T failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let conf = load(&main, &RealFs).unwrap_or_else(|e| panic!("{name}: {e}"));
    let ours: Vec<PathBuf> = conf.files.iter().map(|f| f.path.clone()).collect();
    assert_eq!(ours, dump_files(&stdout), "{name}: file list differs");
    assert_eq!(expected_dump(&conf), stdout, "{name}: file texts differ");
}

#[test]
fn debian_matches_nginx_dump() {
    check("debian");
}

#[test]
fn multisite_matches_nginx_dump() {
    check("multisite");
}

#[test]
fn php_matches_nginx_dump() {
    check("php");
}

/// The `FILE:LINE` nginx names in its `[emerg]` line.
fn nginx_error_place(stderr: &str) -> Option<(PathBuf, usize)> {
    let line = stderr.lines().find(|l| l.contains("[emerg]"))?;
    let (file, line) = line.rsplit_once(" in ")?.1.rsplit_once(':')?;
    Some((PathBuf::from(file), line.trim().parse().ok()?))
}

/// For each broken fixture, nginx and the parser blame the same file and line.
#[test]
fn malformed_errors_name_the_same_place_as_nginx() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_str().unwrap().to_string();
    copy_rewritten(&fixture_dir("malformed"), tmp.path(), &root);
    // (the include cycle is left out: nginx 1.22 recurses until it crashes)
    for main in [
        "unbalanced.conf",
        "extra-brace.conf",
        "unterminated.conf",
        "glued-quote.conf",
        "missing-include.conf",
    ] {
        let path = tmp.path().join(main);
        let out = Command::new(nginx_binary())
            .arg("-t")
            .arg("-p")
            .arg(format!("{root}/"))
            .arg("-c")
            .arg(&path)
            .arg("-g")
            .arg(format!("pid {root}/nginx.pid;"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{main}: nginx accepted it");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let theirs = nginx_error_place(&stderr).unwrap_or_else(|| panic!("{main}: {stderr}"));
        let ours = match load(&path, &RealFs).unwrap_err() {
            ConfError::Syntax { at, .. }
            | ConfError::Open {
                included_from: Some(at),
                ..
            } => (at.file, at.pos.line),
            other => panic!("{main}: unexpected error {other}"),
        };
        assert_eq!(ours, theirs, "{main}: nginx said {stderr}");
    }
}

/// nginx's quoting rules, compared with nginx's own reading: each location returns one word
/// as its body, and the body nginx sends is the value nginx-medic parsed for that word.
#[test]
fn quoted_words_read_as_nginx_reads_them() {
    let cases: &[&str] = &[
        r#""a;b#c""#,
        r"'it\'s'",
        r#""say \"hi\"""#,
        r#""t\tx\\y""#,
        r"a\;b",
        r#""${uri}!""#,
        r#""x # not a comment {""#,
        r"'\d+ \\'",
    ];
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let locations: String = cases
        .iter()
        .enumerate()
        .map(|(i, word)| {
            format!("  location = /q{i} {{ return 200 {word}; }} # a comment ; {{ after\n")
        })
        .collect();
    let nginx = crate::support::nginx::Nginx::start(
        &format!(" server {{\n  listen 127.0.0.1:{port};\n{locations} }}\n"),
        tempfile::tempdir().unwrap(),
    );
    nginx.wait(port);
    let conf = load(&nginx.conf(), &RealFs).unwrap();
    let http = conf.directives.iter().find(|d| d.name == "http").unwrap();
    let server = http.children().iter().find(|d| d.name == "server").unwrap();
    let returns: Vec<&str> = server
        .children()
        .iter()
        .filter(|d| d.name == "location")
        .map(|l| l.children()[0].arg(1).unwrap())
        .collect();
    assert_eq!(returns.len(), cases.len());
    for (i, ours) in returns.iter().enumerate() {
        let path = format!("/q{i}");
        let (status, body) = crate::support::nginx::get(port, "q.lab", &path);
        assert_eq!(status, 200, "{}", cases[i]);
        // nginx expands variables in the text it returns; the parser keeps them as written
        let ours = ours.replace("${uri}", &path);
        assert_eq!(
            String::from_utf8_lossy(&body),
            ours,
            "`{}`: nginx and nginx-medic read it differently",
            cases[i]
        );
    }
}

/// A file with bytes that are not UTF-8 (a Latin-1 comment, a Latin-1 byte in a word): nginx
/// loads it, and nginx-medic reads the same files, the same bytes at the same offsets, and the
/// site in it.
#[test]
fn a_latin1_file_is_read_as_nginx_reads_it() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_str().unwrap().to_string();
    let main = tmp.path().join("nginx.conf");
    let site = tmp.path().join("site.conf");
    std::fs::write(
        &main,
        format!(
            "pid {root}/nginx.pid;\nerror_log {root}/error.log;\nevents {{}}\nhttp {{\n    include site.conf;\n}}\n"
        ),
    )
    .unwrap();
    let site_bytes: &[u8] = b"# Caf\xe9 du coin: le site de l'\xe9quipe\nserver {\n    listen 127.0.0.1:8099;\n    server_name cafe.lab;\n    add_header X-Caf\xe9 \"cr\xe8me\";\n    location / {\n        proxy_pass http://127.0.0.1:9099;\n    }\n}\n";
    std::fs::write(&site, site_bytes).unwrap();

    let out = Command::new(nginx_binary())
        .args(["-T", "-q", "-p", &format!("{root}/"), "-c"])
        .arg(&main)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nginx -T: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let header = format!("# configuration file {}:\n", site.display());
    let at = out
        .stdout
        .windows(header.len())
        .position(|w| w == header.as_bytes())
        .expect("nginx dumps the site file");
    let dumped = &out.stdout[at + header.len()..];
    assert!(
        dumped.starts_with(site_bytes),
        "nginx keeps the bytes as they are"
    );

    let conf = load(&main, &RealFs).unwrap_or_else(|e| panic!("{e}"));
    let ours: Vec<PathBuf> = conf.files.iter().map(|f| f.path.clone()).collect();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(ours, dump_files(&stdout), "file list differs");
    let text = &conf.files[1].text;
    assert_eq!(
        text.len(),
        site_bytes.len(),
        "one byte of text per byte of file"
    );
    assert_eq!(
        *text,
        nginx_medic::nginx_conf::text_of_bytes(dumped[..site_bytes.len()].to_vec())
    );
    let facts = nginx_medic::facts::nginx::extract(&conf, tmp.path());
    let [site] = facts.sites.as_slice() else {
        panic!("{:#?}", facts.sites)
    };
    assert_eq!(site.server_names, ["cafe.lab"]);
    assert_eq!(
        site.locations[0].pass.as_ref().unwrap().raw,
        "http://127.0.0.1:9099"
    );
    // the pass argument's span names the same bytes in the file on disk
    let arg = &site.locations[0].pass.as_ref().unwrap().arg;
    assert_eq!(&site_bytes[arg.start..arg.end], b"http://127.0.0.1:9099");
}
