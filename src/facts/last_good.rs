//! The daemon's memory of each site location's last good configuration: the address(es) its
//! pass target dialled the last time a probe through nginx answered, in
//! `STATE_DIR/last-good.json` (versioned, replaced atomically, written only when it changes,
//! bounded). `gather` reads it for `diagnose`, `plan`, `apply` and the daemon alike: the
//! remembered address of a location whose pass target now names a port nothing listens on is
//! a candidate for the typo'd port (`facts::mapping`).

use crate::state_file::StateFile;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// File name of the memory inside `state_dir`.
pub const LAST_GOOD_FILE: &str = "last-good.json";

/// The version of the file this build writes and reads.
pub const VERSION: u32 = 1;

/// At most this many locations are remembered; beyond it the oldest memory is dropped.
pub const MAX_LOCATIONS: usize = 4096;

/// At most this many addresses are remembered for one location (an upstream group's servers).
pub const MAX_ADDRESSES: usize = 32;

/// A file larger than this is not read (4096 locations of a few addresses fit well within it).
pub const MAX_BYTES: u64 = 4 << 20;

/// Failures reading or writing the memory.
pub type LastGoodError = crate::state_file::StateFileError;

/// How the memory is kept in `state_dir`.
const FILE: StateFile = StateFile {
    name: LAST_GOOD_FILE,
    what: "last-good",
    version: VERSION,
    max_bytes: MAX_BYTES,
    help: "remove it; the daemon writes it again from the next probe that answers",
};

/// Which location: its site (first `server_name`, or `_`, and its `listen` addresses: blocks of
/// one name on two ports are two sites), its path, and the file of its pass directive.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocationKey {
    pub site: String,
    /// The server block's `listen` arguments, joined by `; `.
    pub listen: String,
    pub location: String,
    pub file: PathBuf,
}

/// One location's last good configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Remembered {
    pub key: LocationKey,
    /// The addresses its pass target dialled (`127.0.0.1:8000`, `unix:/run/x.sock`).
    pub addresses: Vec<String>,
    /// Seconds since the epoch when a probe first answered with these addresses.
    pub since: u64,
}

/// What `last-good.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LastGood {
    version: u32,
    #[serde(default)]
    pub locations: Vec<Remembered>,
}

impl LastGood {
    /// Nothing remembered.
    pub fn empty() -> Self {
        Self {
            version: VERSION,
            locations: Vec::new(),
        }
    }

    /// The path of the file in `state_dir`.
    pub fn path(state_dir: &Path) -> PathBuf {
        FILE.path(state_dir)
    }

    /// Reads the memory of `state_dir` (at most [`MAX_BYTES`]); no file: nothing remembered.
    pub fn load(state_dir: &Path) -> Result<Self, LastGoodError> {
        Ok(FILE.load(state_dir)?.unwrap_or_else(Self::empty))
    }

    /// Writes the memory to `state_dir` (created mode 0700 if missing), atomically, mode 0600.
    pub fn save(&self, state_dir: &Path) -> Result<(), LastGoodError> {
        FILE.save(state_dir, self)
    }

    /// The addresses `key` dialled when a probe last answered.
    pub fn addresses(&self, key: &LocationKey) -> Option<&[String]> {
        self.locations
            .iter()
            .find(|r| r.key == *key)
            .map(|r| r.addresses.as_slice())
    }

    /// A probe through nginx answered while `key` dialled `addresses`: remembers them (sorted,
    /// at most [`MAX_ADDRESSES`]). True when the memory changed (only then is it worth
    /// writing); the oldest memory goes when more than [`MAX_LOCATIONS`] are held.
    pub fn answered(&mut self, key: &LocationKey, addresses: &BTreeSet<String>, now: u64) -> bool {
        let addresses: Vec<String> = addresses.iter().take(MAX_ADDRESSES).cloned().collect();
        if addresses.is_empty() {
            return false;
        }
        if let Some(r) = self.locations.iter_mut().find(|r| r.key == *key) {
            if r.addresses == addresses {
                return false;
            }
            r.addresses = addresses;
            r.since = now;
            return true;
        }
        self.locations.push(Remembered {
            key: key.clone(),
            addresses,
            since: now,
        });
        while self.locations.len() > MAX_LOCATIONS {
            let oldest = self
                .locations
                .iter()
                .enumerate()
                .min_by_key(|(_, r)| r.since)
                .map(|(i, _)| i);
            match oldest {
                Some(i) => {
                    self.locations.remove(i);
                }
                None => break,
            }
        }
        self.locations.sort_by(|a, b| a.key.cmp(&b.key));
        true
    }

    /// Forgets the locations the configuration no longer has; true when something went.
    pub fn retain(&mut self, keys: &BTreeSet<LocationKey>) -> bool {
        let before = self.locations.len();
        self.locations.retain(|r| keys.contains(&r.key));
        self.locations.len() != before
    }

    /// The memory as a lookup, location → addresses.
    pub fn by_location(&self) -> BTreeMap<&LocationKey, &[String]> {
        self.locations
            .iter()
            .map(|r| (&r.key, r.addresses.as_slice()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(site: &str) -> LocationKey {
        LocationKey {
            site: site.into(),
            listen: "80".into(),
            location: "/".into(),
            file: "/etc/nginx/sites-enabled/shop".into(),
        }
    }

    fn set(addresses: &[&str]) -> BTreeSet<String> {
        addresses.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn a_location_is_written_only_when_its_addresses_change() {
        let mut m = LastGood::empty();
        assert!(m.answered(&key("shop"), &set(&["127.0.0.1:8016"]), 10));
        assert!(
            !m.answered(&key("shop"), &set(&["127.0.0.1:8016"]), 20),
            "same"
        );
        assert_eq!(m.locations[0].since, 10, "not rewritten per probe");
        assert!(m.answered(&key("shop"), &set(&["127.0.0.1:8017"]), 30));
        assert_eq!(
            m.addresses(&key("shop")),
            Some(&["127.0.0.1:8017".to_string()][..])
        );
        assert!(!m.answered(&key("shop"), &set(&[]), 40), "nothing dialled");
        assert!(!m.retain(&[key("shop")].into()));
        assert!(m.retain(&BTreeSet::new()));
        assert!(m.locations.is_empty());
    }

    #[test]
    fn the_memory_is_bounded() {
        let mut m = LastGood::empty();
        for i in 0..(MAX_LOCATIONS as u64 + 5) {
            m.answered(&key(&format!("s{i}")), &set(&["127.0.0.1:1"]), i);
        }
        assert_eq!(m.locations.len(), MAX_LOCATIONS);
        assert!(m.addresses(&key("s0")).is_none(), "the oldest went");
        let many: BTreeSet<String> = (0..100).map(|p| format!("127.0.0.1:{p}")).collect();
        m.answered(&key("big"), &many, 1 << 40);
        assert_eq!(
            m.addresses(&key("big")).map(<[_]>::len),
            Some(MAX_ADDRESSES)
        );
    }

    #[test]
    fn the_file_round_trips_and_damage_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(LastGood::load(dir.path()).unwrap(), LastGood::empty());
        let mut m = LastGood::empty();
        m.answered(&key("shop"), &set(&["127.0.0.1:8016"]), 10);
        m.save(dir.path()).unwrap();
        assert_eq!(LastGood::load(dir.path()).unwrap(), m);
        let path = LastGood::path(dir.path());
        std::fs::write(&path, "{\"version\": 2}").unwrap();
        let e = LastGood::load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("last-good.json` holds last-good version 2"),
            "{e}"
        );
        std::fs::write(&path, "{\"locations\": []}").unwrap();
        let e = LastGood::load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("last-good.json` is not a last-good file: no `version`"),
            "{e}"
        );
        std::fs::write(&path, "x".repeat(MAX_BYTES as usize + 1)).unwrap();
        let e = LastGood::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("is larger than"), "{e}");
    }
}
