//! nginx-medic's own small files in `state_dir` (the last good configurations, the pause state,
//! the processes last seen): one way to keep them. Each is JSON with a `version`, read with a
//! size cap, written atomically with mode 0600 into a state directory created 0700, and damage
//! is an error that names the file and says what to do, never a silent empty memory.

use crate::adapters::fs::{atomic_write_private, FsError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// One kind of state file: its name in `state_dir`, what it holds (for messages), the version
/// this build reads and writes, its size cap and what to do when it is damaged.
#[derive(Debug, Clone, Copy)]
pub struct StateFile {
    /// File name inside `state_dir`.
    pub name: &'static str,
    /// What it holds, as a noun for messages: `pause state`, `last-good`.
    pub what: &'static str,
    pub version: u32,
    pub max_bytes: u64,
    /// The `help:` line for a damaged file or another version.
    pub help: &'static str,
}

/// Failures reading or writing a state file.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("cannot read the {what} file `{}`\nhelp: nginx-medic's state files are private to the daemon's user (root): run it as that user", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{}` is larger than {max} bytes: not read\nhelp: {help}", path.display())]
    TooLarge {
        path: PathBuf,
        max: u64,
        help: &'static str,
    },
    #[error("`{}` is not a {what} file: {reason}\nhelp: {help}", path.display())]
    Invalid {
        what: &'static str,
        path: PathBuf,
        reason: String,
        help: &'static str,
    },
    #[error("`{}` holds {what} version {found}; this nginx-medic reads version {version} only\nhelp: use the nginx-medic that wrote it, or {help}", path.display())]
    Version {
        what: &'static str,
        path: PathBuf,
        found: u64,
        version: u32,
        help: &'static str,
    },
    #[error("cannot create the state directory `{}`", path.display())]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot save the {what} file")]
    Write {
        what: &'static str,
        #[source]
        source: FsError,
    },
}

#[derive(Deserialize)]
struct Versioned {
    version: Option<u64>,
}

impl StateFile {
    /// Its path in `state_dir`.
    pub fn path(&self, state_dir: &Path) -> PathBuf {
        state_dir.join(self.name)
    }

    /// Reads and parses the file in `state_dir` (at most `max_bytes`); `None` when there is none.
    pub fn load<T: DeserializeOwned>(&self, state_dir: &Path) -> Result<Option<T>, StateFileError> {
        let path = self.path(state_dir);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(self.read_error(path, source)),
        };
        let mut text = String::new();
        if let Err(source) = file.take(self.max_bytes + 1).read_to_string(&mut text) {
            return Err(self.read_error(path, source));
        }
        if u64::try_from(text.len()).unwrap_or(u64::MAX) > self.max_bytes {
            return Err(StateFileError::TooLarge {
                path,
                max: self.max_bytes,
                help: self.help,
            });
        }
        self.parse(&path, &text).map(Some)
    }

    /// Parses `text`, read from `path`: its `version` first, so that another version is named
    /// as such rather than as a field this build does not know.
    pub fn parse<T: DeserializeOwned>(&self, path: &Path, text: &str) -> Result<T, StateFileError> {
        let invalid = |reason: String| StateFileError::Invalid {
            what: self.what,
            path: path.to_path_buf(),
            reason,
            help: self.help,
        };
        let versioned: Versioned =
            serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        match versioned.version {
            Some(v) if v == u64::from(self.version) => {
                serde_json::from_str(text).map_err(|e| invalid(e.to_string()))
            }
            Some(found) => Err(StateFileError::Version {
                what: self.what,
                path: path.to_path_buf(),
                found,
                version: self.version,
                help: self.help,
            }),
            None => Err(invalid("no `version`".into())),
        }
    }

    /// Writes `value` as pretty JSON to the file in `state_dir` (created mode 0700 if missing),
    /// atomically, mode 0600.
    pub fn save<T: Serialize>(&self, state_dir: &Path, value: &T) -> Result<(), StateFileError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(|source| StateFileError::StateDir {
                path: state_dir.to_path_buf(),
                source,
            })?;
        let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
        text.push('\n');
        atomic_write_private(&self.path(state_dir), text.as_bytes()).map_err(|source| {
            StateFileError::Write {
                what: self.what,
                source,
            }
        })
    }

    fn read_error(&self, path: PathBuf, source: std::io::Error) -> StateFileError {
        StateFileError::Read {
            what: self.what,
            path,
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const FILE: StateFile = StateFile {
        name: "memo.json",
        what: "memo",
        version: 1,
        max_bytes: 64,
        help: "remove it",
    };

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Memo {
        version: u32,
        note: String,
    }

    #[test]
    fn a_file_round_trips_private_and_damage_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        assert_eq!(FILE.load::<Memo>(&state).unwrap(), None);
        let memo = Memo {
            version: 1,
            note: "hi".into(),
        };
        FILE.save(&state, &memo).unwrap();
        assert_eq!(FILE.load::<Memo>(&state).unwrap(), Some(memo));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&FILE.path(&state)), 0o600);
        let cases = [
            (r#"{"version": 2}"#, "memo.json` holds memo version 2; this nginx-medic reads version 1 only\nhelp: use the nginx-medic that wrote it, or remove it"),
            (r#"{"note": "x"}"#, "memo.json` is not a memo file: no `version`\nhelp: remove it"),
            (r#"{"version": 1, "note": "x", "extra": 1}"#, "unknown field `extra`"),
            (&"x".repeat(65), "is larger than 64 bytes: not read"),
        ];
        for (text, expected) in cases {
            std::fs::write(FILE.path(&state), text).unwrap();
            let e = FILE.load::<Memo>(&state).unwrap_err().to_string();
            assert!(e.contains(expected), "{text}: {e}");
        }
    }
}
