//! The nginx binary: `-t`, `-V`, and reloads by signal, always run with argv (no shell).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A failure to run nginx at all (a failing `nginx -t` is an outcome, not this error).
#[derive(Debug, thiserror::Error)]
pub enum NginxError {
    #[error("cannot run `{binary}`: {source}")]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
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

    fn run(&self, mut cmd: Command) -> Result<Output, NginxError> {
        cmd.output().map_err(|source| NginxError::Spawn {
            binary: self.binary.clone(),
            source,
        })
    }

    /// `nginx -t`: whether the configuration on disk would load.
    pub fn test(&self) -> Result<TestOutcome, NginxError> {
        let out = self.run(self.command(&["-t", "-q"]))?;
        Ok(TestOutcome {
            ok: out.status.success(),
            output: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }

    /// `nginx -s reload`: asks the running master to reload.
    pub fn reload_by_signal(&self) -> Result<(), NginxError> {
        let out = self.run(self.command(&["-s", "reload"]))?;
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
        self.run(cmd)
            .ok()
            .and_then(|out| compiled_prefix(&String::from_utf8_lossy(&out.stderr)))
            .unwrap_or_else(|| self.conf.parent().unwrap_or(Path::new("/")).to_path_buf())
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

    #[test]
    fn reads_the_compiled_prefix() {
        let v = "nginx version: nginx/1.22.1\nconfigure arguments: --with-cc-opt='-g -O2' --prefix=/usr/share/nginx --conf-path=/etc/nginx/nginx.conf";
        assert_eq!(compiled_prefix(v), Some(PathBuf::from("/usr/share/nginx")));
        assert_eq!(compiled_prefix("nginx version: nginx/1.22.1"), None);
    }
}
