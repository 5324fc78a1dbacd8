//! The nginx binary: `-t`, `-V`, and reloads by signal, always run with argv (no shell), each
//! with a deadline; and the cache of `nginx -t` results keyed by what the test reads.

use crate::adapters::child::{self, ChildError};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long `nginx -t` may take: it parses every file and opens every log (10,000 servers take
/// seconds on a loaded machine), far less than this.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `nginx -s reload` may take: it only signals the master.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `nginx -V` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of nginx's stdout and stderr kept (its messages are lines; `-T` is not run here).
const MAX_OUTPUT: usize = 1 << 20;

/// A failure to run nginx at all (a failing `nginx -t` is an outcome, not this error).
#[derive(Debug, thiserror::Error)]
pub enum NginxError {
    /// nginx could not be started, or was killed at its deadline (the error names the command).
    #[error(transparent)]
    Run(#[from] ChildError),
    #[error("`{command}` failed: {stderr}")]
    Failed { command: String, stderr: String },
}

/// How to invoke the nginx that serves this host.
#[derive(Debug, Clone)]
pub struct NginxBinary {
    pub binary: PathBuf,
    pub conf: PathBuf,
    pub prefix: Option<PathBuf>,
}

/// The result of `nginx -t`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TestOutcome {
    pub ok: bool,
    /// nginx's own words (stderr), e.g. `[emerg] host not found in upstream "x" in /etc/nginx/y:3`.
    pub output: String,
}

impl NginxBinary {
    fn command(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new(&self.binary);
        if let Some(prefix) = &self.prefix {
            cmd.arg("-p").arg(prefix);
        }
        cmd.arg("-c").arg(&self.conf).args(extra);
        cmd
    }

    fn run(&self, mut cmd: Command, timeout: Duration) -> Result<child::Finished, NginxError> {
        Ok(child::run_within(&mut cmd, timeout, MAX_OUTPUT)?)
    }

    /// `nginx -t`: whether the configuration on disk would load. Always runs nginx (the apply
    /// path's check right before a reload); [`TestCache::test`] is the cached one.
    pub fn test(&self) -> Result<TestOutcome, NginxError> {
        let out = self.run(self.command(&["-t", "-q"]), TEST_TIMEOUT)?;
        Ok(TestOutcome {
            ok: out.status.success(),
            output: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }

    /// `nginx -s reload`: asks the running master to reload.
    pub fn reload_by_signal(&self) -> Result<(), NginxError> {
        let out = self.run(self.command(&["-s", "reload"]), RELOAD_TIMEOUT)?;
        if out.status.success() {
            return Ok(());
        }
        Err(NginxError::Failed {
            command: format!("{} -s reload", self.binary.display()),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }

    /// The prefix relative paths are resolved against: `-p` when set, else the compiled-in
    /// `--prefix=` of `nginx -V`, else the directory of the configuration file.
    pub fn effective_prefix(&self) -> PathBuf {
        if let Some(prefix) = &self.prefix {
            return prefix.clone();
        }
        let mut cmd = Command::new(&self.binary);
        cmd.arg("-V");
        self.run(cmd, VERSION_TIMEOUT)
            .ok()
            .and_then(|out| compiled_prefix(&String::from_utf8_lossy(&out.stderr)))
            .unwrap_or_else(|| self.conf.parent().unwrap_or(Path::new("/")).to_path_buf())
    }
}

/// The identity of one file `nginx -t` depends on: where it is, which inode, how big, when it
/// was last modified (to the nanosecond), and, for a configuration file, what it holds (the
/// binary is known by its identity alone: an upgrade replaces the file).
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    path: PathBuf,
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    sha256: Option<[u8; 32]>,
}

/// What a `nginx -t` result was computed from: the nginx binary and every file the
/// configuration loaded, stamped. Equal keys: `nginx -t` has nothing new to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestKey(Vec<FileStamp>);

impl TestKey {
    /// Stamps the binary (found in `PATH` when it names no directory) and `files`; `None` when
    /// one cannot be stamped (missing, not a regular file), so the test runs uncached.
    pub fn of(binary: &Path, files: &[PathBuf]) -> Option<TestKey> {
        let binary = find_program(binary)?;
        // one read buffer for every file: a fresh one each was most of the stamping's cost
        let mut chunk = vec![0u8; 64 * 1024];
        std::iter::once(stamp(&binary, None))
            .chain(files.iter().map(|f| stamp(f, Some(&mut chunk))))
            .collect::<Option<Vec<_>>>()
            .map(TestKey)
    }
}

/// Stamps one file, its contents hashed through `chunk` when given; read without following a
/// FIFO or a device.
fn stamp(path: &Path, chunk: Option<&mut Vec<u8>>) -> Option<FileStamp> {
    use sha2::Digest;
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    let sha256 = match chunk {
        None => None,
        Some(chunk) => {
            let mut hasher = sha2::Sha256::new();
            loop {
                match file.read(chunk).ok()? {
                    0 => break,
                    n => hasher.update(chunk.get(..n)?),
                }
            }
            Some(hasher.finalize().into())
        }
    };
    Some(FileStamp {
        path: path.to_path_buf(),
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.size(),
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        sha256,
    })
}

/// The program as `Command` would run it: itself when it names a directory, else the first
/// match in `PATH`.
fn find_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return Some(program.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// The last `nginx -t` result and what it was computed from. In memory only: the daemon keeps
/// one for its life; each CLI run starts empty and so always tests. A result is also dropped
/// after [`TestCache::MAX_AGE`], since `nginx -t` reads more than the files (it resolves
/// upstream host names and opens certificates).
#[derive(Debug, Default)]
pub struct TestCache {
    last: Mutex<Option<(TestKey, Instant, TestOutcome)>>,
}

impl TestCache {
    /// How long a result stands while no file changed.
    pub const MAX_AGE: Duration = Duration::from_secs(300);

    /// An empty cache (`const`, for a process-wide one).
    pub const fn new() -> Self {
        TestCache {
            last: Mutex::new(None),
        }
    }

    /// `nginx -t`, unless the binary and every file of `files` are as they were when the
    /// cached result was computed (less than [`Self::MAX_AGE`] ago). The second value says
    /// whether the result came from the cache. A result is kept only when the files did not
    /// change while nginx read them.
    pub fn test(
        &self,
        nginx: &NginxBinary,
        files: &[PathBuf],
    ) -> Result<(TestOutcome, bool), NginxError> {
        self.test_with(nginx, files, || nginx.test())
    }

    fn test_with(
        &self,
        nginx: &NginxBinary,
        files: &[PathBuf],
        run: impl FnOnce() -> Result<TestOutcome, NginxError>,
    ) -> Result<(TestOutcome, bool), NginxError> {
        let before = TestKey::of(&nginx.binary, files);
        if let Some(key) = &before {
            let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((cached, at, outcome)) = last.as_ref() {
                if cached == key && at.elapsed() < Self::MAX_AGE {
                    return Ok((outcome.clone(), true));
                }
            }
        }
        let outcome = run()?;
        let after = TestKey::of(&nginx.binary, files);
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        *last = match (before, after) {
            (Some(before), Some(after)) if before == after => {
                Some((after, Instant::now(), outcome.clone()))
            }
            _ => None,
        };
        Ok((outcome, false))
    }
}

/// Reads `--prefix=PATH` from the output of `nginx -V`.
fn compiled_prefix(version_output: &str) -> Option<PathBuf> {
    version_output
        .split_whitespace()
        .find_map(|word| word.strip_prefix("--prefix="))
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in `nginx -t` that counts its runs.
    fn counted(
        runs: &std::cell::Cell<u32>,
    ) -> impl FnOnce() -> Result<TestOutcome, NginxError> + '_ {
        move || {
            runs.set(runs.get() + 1);
            Ok(TestOutcome {
                ok: true,
                output: String::new(),
            })
        }
    }

    /// Issue 12: `nginx -t` runs again only when a file the configuration loaded, or the
    /// binary, changed: its content, its size, its mtime or its inode.
    #[test]
    fn the_test_is_cached_until_a_loaded_file_changes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = crate::adapters::fs::hostile::dir("ngxcache");
        let binary = dir.0.join("nginx");
        std::fs::write(&binary, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
        let conf = dir.0.join("nginx.conf");
        let site = dir.0.join("site.conf");
        std::fs::write(&conf, "include site.conf;\n").unwrap();
        std::fs::write(&site, "server { listen 80; }\n").unwrap();
        let nginx = NginxBinary {
            binary: binary.clone(),
            conf: conf.clone(),
            prefix: None,
        };
        let files = vec![conf.clone(), site.clone()];
        let cache = TestCache::new();
        let runs = std::cell::Cell::new(0);
        let test = |cache: &TestCache| cache.test_with(&nginx, &files, counted(&runs)).unwrap().1;
        assert!(!test(&cache), "the first test runs");
        assert!(test(&cache), "nothing changed: cached");
        assert_eq!(runs.get(), 1);

        // same size, same mtime, other bytes (`cp -p`, `touch -r`): the hash tells
        let mtime = std::fs::metadata(&site).unwrap().modified().unwrap();
        std::fs::write(&site, "server { listen 81; }\n").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&site)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert!(!test(&cache), "content changed: runs");
        assert!(test(&cache));

        // only the mtime
        std::fs::File::options()
            .write(true)
            .open(&site)
            .unwrap()
            .set_modified(mtime + Duration::from_secs(1))
            .unwrap();
        assert!(!test(&cache), "mtime changed: runs");

        // the same bytes in a new inode (an atomic rewrite)
        let copy = dir.0.join("site.conf.new");
        std::fs::copy(&site, &copy).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&copy)
            .unwrap()
            .set_modified(std::fs::metadata(&site).unwrap().modified().unwrap())
            .unwrap();
        std::fs::rename(&copy, &site).unwrap();
        assert!(!test(&cache), "inode changed: runs");
        assert!(test(&cache));

        // the binary
        std::fs::write(&binary, "#!/bin/sh\n# upgraded\n").unwrap();
        assert!(!test(&cache), "binary changed: runs");
        assert!(test(&cache));

        // a file that cannot be stamped: never cached
        let gone = vec![conf.clone(), dir.0.join("missing.conf")];
        for _ in 0..2 {
            assert!(!cache.test_with(&nginx, &gone, counted(&runs)).unwrap().1);
        }
        assert_eq!(runs.get(), 7);
    }

    /// A result computed while a file changed under nginx is not kept.
    #[test]
    fn a_result_computed_while_a_file_changed_is_not_kept() {
        let dir = crate::adapters::fs::hostile::dir("ngxrace");
        let conf = dir.0.join("nginx.conf");
        std::fs::write(&conf, "events {}\n").unwrap();
        let nginx = NginxBinary {
            binary: PathBuf::from("/bin/sh"),
            conf: conf.clone(),
            prefix: None,
        };
        let files = vec![conf.clone()];
        let cache = TestCache::new();
        let changing = || {
            std::fs::write(&conf, "events {} # edited during the test\n").unwrap();
            Ok(TestOutcome {
                ok: true,
                output: String::new(),
            })
        };
        assert!(!cache.test_with(&nginx, &files, changing).unwrap().1);
        let runs = std::cell::Cell::new(0);
        assert!(!cache.test_with(&nginx, &files, counted(&runs)).unwrap().1);
        assert_eq!(runs.get(), 1, "tested again");
    }

    /// The real binary's `-t` behind the cache: it runs once for an unchanged tree.
    #[test]
    fn a_real_nginx_test_is_cached() {
        let Some(binary) = find_program(Path::new("nginx")) else {
            eprintln!("no nginx binary: skipped");
            return;
        };
        let dir = crate::adapters::fs::hostile::dir("ngxreal");
        let conf = dir.0.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "pid {0}/nginx.pid;\nerror_log {0}/error.log;\nevents {{}}\nhttp {{ access_log off; client_body_temp_path {0}/b; proxy_temp_path {0}/p; fastcgi_temp_path {0}/f; uwsgi_temp_path {0}/u; scgi_temp_path {0}/s; }}\n",
                dir.0.display()
            ),
        )
        .unwrap();
        let nginx = NginxBinary {
            binary,
            conf: conf.clone(),
            prefix: Some(dir.0.clone()),
        };
        let cache = TestCache::new();
        let (first, cached) = cache.test(&nginx, std::slice::from_ref(&conf)).unwrap();
        assert!(first.ok, "{}", first.output);
        assert!(!cached);
        let (second, cached) = cache.test(&nginx, std::slice::from_ref(&conf)).unwrap();
        assert!(cached);
        assert_eq!(first, second);
    }

    #[test]
    fn reads_the_compiled_prefix() {
        let v = "nginx version: nginx/1.22.1\nconfigure arguments: --with-cc-opt='-g -O2' --prefix=/usr/share/nginx --conf-path=/etc/nginx/nginx.conf";
        assert_eq!(compiled_prefix(v), Some(PathBuf::from("/usr/share/nginx")));
        assert_eq!(compiled_prefix("nginx version: nginx/1.22.1"), None);
    }
}
