//! A real nginx in the foreground under a temporary prefix, for tests that need its answers
//! (not only `nginx -T`): started on `http { … }`, stopped by its PID on drop.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nginx_medic::facts::aim::{aims, Aim};
use nginx_medic::nginx_conf::{load, RealFs};

/// nginx in the foreground under a temporary prefix; killed (by its PID) and reaped on drop,
/// also when the test panics.
pub struct Nginx {
    child: Child,
    /// The prefix: configuration, logs, pid.
    pub dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM to the master this test started: it stops its workers, then exits
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn nginx_binary() -> &'static str {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("nginx is not installed: this test needs the real binary")
}

impl Nginx {
    /// Writes `http { SERVERS }` and starts nginx on it once `nginx -t` accepts it.
    pub fn start(servers: &str, dir: tempfile::TempDir) -> Nginx {
        let root = dir.path().display().to_string();
        let conf = format!(
            "worker_processes 1;\npid {root}/nginx.pid;\nerror_log {root}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n access_log off;\n{servers}\n}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let run = |extra: &[&str]| {
            let mut cmd = Command::new(nginx_binary());
            cmd.args([
                "-p",
                &format!("{root}/"),
                "-c",
                &format!("{root}/nginx.conf"),
            ])
            .args(extra);
            cmd
        };
        let test = run(&["-t", "-q"]).output().unwrap();
        assert!(
            test.status.success(),
            "nginx -t: {}",
            String::from_utf8_lossy(&test.stderr)
        );
        let child = run(&["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        Nginx { child, dir }
    }

    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("nginx.conf")
    }

    /// The aims of every server, in order, as nginx-medic reads the configuration.
    pub fn aims(&self) -> Vec<Aim> {
        let conf = load(&self.conf(), &RealFs).expect("the configuration loads");
        let facts = nginx_medic::facts::nginx::extract(&conf, self.dir.path());
        aims(&facts.sites)
    }

    /// Waits until nginx accepts on `port`.
    pub fn wait(&self, port: u16) {
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "nginx never listened on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `GET path` with `Host: host` from 127.0.0.1:port: the status and the body's bytes.
pub fn get(port: u16, host: &str, path: &str) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut sock = TcpStream::connect(("127.0.0.1", port)).expect("connect to nginx");
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(sock, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    sock.read_to_end(&mut answer).unwrap();
    let head_end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let status = String::from_utf8_lossy(&answer[9..12]).parse().unwrap();
    (status, answer[head_end + 4..].to_vec())
}
