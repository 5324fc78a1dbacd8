//! Intent: what an administrator told nginx-medic to leave alone. `nginx-medic pause` writes
//! `STATE_DIR/paused.json` (versioned, mode 0600, replaced atomically); the daemon, `apply` and
//! `explain` read it, and a backend's `heal: false` in `medic.yaml` holds it for good.
//!
//! Everything here takes the time as a parameter (seconds since the epoch), so expiry is tested
//! on a fake clock. A pause file that exists but cannot be understood holds every target: a
//! pause someone asked for is never ignored because its file is damaged.

use crate::config::BackendHint;
use crate::engine::plan::PlannedAction;
use crate::state_file::{StateFile, StateFileError};
use nix::sys::inotify::AddWatchFlags;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// File name of the pause state inside `state_dir`.
pub const PAUSE_FILE: &str = "paused.json";

/// The version of the file this build writes and reads.
pub const VERSION: u32 = 1;

/// The name a whole-host pause is shown under (metrics, `STATUS=`).
pub const HOST: &str = "*";

/// Failures reading or writing the pause state.
pub type PauseError = StateFileError;

/// A pause file larger than this is not read (thousands of paused units fit well within it).
pub const MAX_BYTES: u64 = 1 << 20;

/// How the pause state is kept in `state_dir`.
const FILE: StateFile = StateFile {
    name: PAUSE_FILE,
    what: "pause state",
    version: VERSION,
    max_bytes: MAX_BYTES,
    help: "`nginx-medic resume` to replace it",
};

/// One pause: since when, and until when (`None`: until `nginx-medic resume`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pause {
    /// Seconds since the epoch.
    pub since: u64,
    /// Seconds since the epoch; `None` until resumed.
    pub until: Option<u64>,
}

impl Pause {
    fn active(&self, now: u64) -> bool {
        match self.until {
            Some(u) => now < u,
            None => true,
        }
    }

    /// `until 2026-12-01 10:42:00 UTC`, or `until resumed`.
    pub fn until_text(&self) -> String {
        match self.until {
            Some(u) => format!("until {}", utc(u)),
            None => "until resumed".to_string(),
        }
    }
}

/// What `paused.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseState {
    version: u32,
    /// The whole host.
    #[serde(default)]
    pub host: Option<Pause>,
    /// By unit name (`api.service`) or upstream address (`127.0.0.1:8000`).
    #[serde(default)]
    pub units: BTreeMap<String, Pause>,
}

impl PauseState {
    /// The path of the file in `state_dir`.
    pub fn path(state_dir: &Path) -> PathBuf {
        FILE.path(state_dir)
    }

    /// Reads the state of `state_dir`; no file means nothing is paused.
    pub fn load(state_dir: &Path) -> Result<Self, PauseError> {
        Ok(FILE.load(state_dir)?.unwrap_or_else(Self::empty))
    }

    /// Parses the text of `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, PauseError> {
        FILE.parse(path, text)
    }

    /// Nothing paused.
    pub fn empty() -> Self {
        Self {
            version: VERSION,
            host: None,
            units: BTreeMap::new(),
        }
    }

    /// Writes the state to `state_dir` (created mode 0700 if missing), atomically, mode 0600.
    pub fn save(&self, state_dir: &Path) -> Result<(), PauseError> {
        FILE.save(state_dir, self)
    }

    /// Pauses `names` (none: the whole host) from `now`, for `span` or until resumed. A name
    /// paused already gets the new span.
    pub fn pause(&mut self, names: &[String], now: u64, span: Option<Duration>) -> Pause {
        self.expire(now);
        let pause = Pause {
            since: now,
            until: span.map(|s| now.saturating_add(s.as_secs().max(1))),
        };
        if names.is_empty() {
            self.host = Some(pause);
        }
        for name in names {
            self.units.insert(name.clone(), pause);
        }
        pause
    }

    /// Lifts the pauses of `names` (none: every pause, the host's and each unit's). Returns
    /// the names lifted (`*` for the host).
    pub fn resume(&mut self, names: &[String], now: u64) -> Vec<String> {
        self.expire(now);
        let mut lifted = Vec::new();
        if names.is_empty() {
            if self.host.take().is_some() {
                lifted.push(HOST.to_string());
            }
            lifted.extend(std::mem::take(&mut self.units).into_keys());
        }
        for name in names {
            if self.units.remove(name).is_some() {
                lifted.push(name.clone());
            }
        }
        lifted
    }

    /// Drops the pauses that ended by `now`.
    pub fn expire(&mut self, now: u64) {
        if self.host.is_some_and(|p| !p.active(now)) {
            self.host = None;
        }
        self.units.retain(|_, p| p.active(now));
    }

    /// The pauses in force at `now`, the host's (as `*`) first.
    pub fn active(&self, now: u64) -> Vec<(String, Pause)> {
        let host = self
            .host
            .filter(|p| p.active(now))
            .map(|p| (HOST.to_string(), p));
        host.into_iter()
            .chain(
                self.units
                    .iter()
                    .filter(|(_, p)| p.active(now))
                    .map(|(n, p)| (n.clone(), *p)),
            )
            .collect()
    }

    /// The pause that covers a target (its unit or its upstream address) at `now`, with the
    /// name it was paused under.
    pub fn covering(
        &self,
        unit: Option<&str>,
        upstream: &str,
        now: u64,
    ) -> Option<(String, Pause)> {
        self.active(now)
            .into_iter()
            .find(|(name, _)| name == HOST || Some(name.as_str()) == unit || name == upstream)
    }
}

/// Why nothing is done to a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// `nginx-medic pause`: `name` is the unit, the upstream or `*`.
    Paused { name: String, pause: Pause },
    /// `heal: false` on its backend in `medic.yaml`.
    HealFalse,
    /// The pause file exists but cannot be read: everything is held.
    Unreadable(String),
}

impl Hold {
    /// One line for logs, `explain` and `apply`, with the way out.
    pub fn describe(&self) -> String {
        match self {
            Self::Paused { name, pause } => {
                let resume = if name == HOST {
                    "nginx-medic resume".to_string()
                } else {
                    format!("nginx-medic resume {name}")
                };
                let what = if name == HOST {
                    "the whole host is "
                } else {
                    ""
                };
                format!(
                    "{what}paused {}; nothing is done ({resume})",
                    pause.until_text()
                )
            }
            Self::HealFalse => "`heal: false` in medic.yaml: reported, never healed".to_string(),
            Self::Unreadable(reason) => {
                format!("the pause state cannot be read, so nothing is done: {reason}")
            }
        }
    }

    /// `paused`, `heal_false` or `pause_state_unreadable`: for log fields and JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Paused { .. } => "paused",
            Self::HealFalse => "heal_false",
            Self::Unreadable(_) => "pause_state_unreadable",
        }
    }
}

/// Whether a backend hint says `heal: false` for this target (by upstream address or unit).
pub fn heal_disabled(hints: &[BackendHint], unit: Option<&str>, upstream: &str) -> bool {
    hints.iter().any(|h| {
        !h.heal
            && (h.upstream.to_string() == upstream
                || (h.unit.is_some() && h.unit.as_deref() == unit))
    })
}

/// What holds a target at `now`, if anything: an unreadable pause state, `heal: false`, a pause.
pub fn hold_of(
    state: &Result<PauseState, String>,
    hints: &[BackendHint],
    unit: Option<&str>,
    upstream: &str,
    now: u64,
) -> Option<Hold> {
    let state = match state {
        Ok(s) => s,
        Err(reason) => return Some(Hold::Unreadable(reason.clone())),
    };
    if heal_disabled(hints, unit, upstream) {
        return Some(Hold::HealFalse);
    }
    state
        .covering(unit, upstream, now)
        .map(|(name, pause)| Hold::Paused { name, pause })
}

/// What holds a finding with these actions: the target itself (as `hold_of`), or a step that
/// restarts or edits a paused unit. Returns the unit held, when one is, with the hold.
pub fn hold_of_actions<'a>(
    state: &Result<PauseState, String>,
    hints: &[BackendHint],
    unit: Option<&str>,
    upstream: &str,
    actions: impl IntoIterator<Item = &'a PlannedAction>,
    now: u64,
) -> Option<(Option<String>, Hold)> {
    if let Some(hold) = hold_of(state, hints, unit, upstream, now) {
        return Some((unit.map(String::from), hold));
    }
    let ok = match state {
        Ok(s) => s,
        Err(_) => return None, // held above
    };
    actions.into_iter().filter_map(action_unit).find_map(|u| {
        ok.covering(Some(u), "", now)
            .map(|(name, pause)| (Some(u.to_string()), Hold::Paused { name, pause }))
    })
}

/// The unit an action restarts or edits, if any.
pub fn action_unit(action: &PlannedAction) -> Option<&str> {
    match action {
        PlannedAction::Systemd { unit, .. }
        | PlannedAction::SetBindHost { unit, .. }
        | PlannedAction::SetPoolListen { unit, .. } => Some(unit),
        _ => None,
    }
}

/// The state of `state_dir` as `hold_of` wants it: an error becomes its one-line text.
pub fn load_for_hold(state_dir: &Path) -> Result<PauseState, String> {
    PauseState::load(state_dir).map_err(|e| error_chain(&e))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Seconds since the epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The daemon's view of the pause file: re-read only when the file changed (its inode, size or
/// modification time; `pause` replaces it by rename, so every write is a new inode).
#[derive(Debug)]
pub struct PauseWatch {
    state_dir: PathBuf,
    stamp: Option<(u64, u64, i64, i64)>,
    state: Result<PauseState, String>,
    /// The pauses in force at the last `transitions`, to log beginnings and ends once.
    last: Vec<(String, Pause)>,
}

impl PauseWatch {
    /// Reads the state of `state_dir` now.
    pub fn new(state_dir: &Path) -> Self {
        let mut watch = Self {
            state_dir: state_dir.to_path_buf(),
            stamp: None,
            state: Ok(PauseState::empty()),
            last: Vec::new(),
        };
        watch.reread();
        watch
    }

    /// The directory watched.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Re-reads the file if it changed; true when it did.
    pub fn refresh(&mut self) -> bool {
        if stamp_of(&PauseState::path(&self.state_dir)) == self.stamp {
            return false;
        }
        self.reread();
        true
    }

    fn reread(&mut self) {
        let path = PauseState::path(&self.state_dir);
        self.stamp = stamp_of(&path);
        self.state = load_for_hold(&self.state_dir);
    }

    /// The state as last read (an error as its text).
    pub fn state(&self) -> &Result<PauseState, String> {
        &self.state
    }

    /// The pauses in force at `now` (none when the state cannot be read).
    pub fn active(&self, now: u64) -> Vec<(String, Pause)> {
        self.state
            .as_ref()
            .map_or_else(|_| Vec::new(), |s| s.active(now))
    }

    /// The pauses that began (or changed their end) and the names whose pause ended since the
    /// last call.
    pub fn transitions(&mut self, now: u64) -> (Vec<(String, Pause)>, Vec<String>) {
        let active = self.active(now);
        let began = active
            .iter()
            .filter(|a| !self.last.contains(a))
            .cloned()
            .collect();
        let ended = self
            .last
            .iter()
            .filter(|(name, _)| !active.iter().any(|(n, _)| n == name))
            .map(|(name, _)| name.clone())
            .collect();
        self.last = active;
        (began, ended)
    }
}

/// How often the pause file is looked at without an event: the safety net when an event was
/// missed (the state directory replaced), and the polling interval where inotify is refused.
const RESCAN: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(250);

/// The state directory's events that can change what its pause file holds (it is replaced by
/// a rename, or written, or removed).
const DIR_EVENTS: AddWatchFlags = AddWatchFlags::IN_CREATE
    .union(AddWatchFlags::IN_MOVED_TO)
    .union(AddWatchFlags::IN_MOVED_FROM)
    .union(AddWatchFlags::IN_DELETE)
    .union(AddWatchFlags::IN_CLOSE_WRITE)
    .union(AddWatchFlags::IN_DELETE_SELF)
    .union(AddWatchFlags::IN_MOVE_SELF);

/// Calls `changed` as soon as the pause file changes (inotify on the state directory) or a
/// pause ends (a timer set to the earliest end), so a `pause`/`resume` (or an expiry) is acted
/// on promptly without waking the daemon while nothing happens. Without inotify, four `stat`s
/// a second, never a read of an unchanged file.
pub async fn watch(state_dir: PathBuf, changed: impl Fn()) {
    let mut watch = PauseWatch::new(&state_dir);
    let mut last = watch.active(unix_now());
    let mut events = dir_events(&state_dir);
    loop {
        match &events {
            Some(events) => {
                let wait = next_end(&last, SystemTime::now()).map_or(RESCAN, |d| d.min(RESCAN));
                let _ = tokio::time::timeout(wait, events.changed()).await;
            }
            None => {
                tokio::time::sleep(POLL).await;
                // the state directory may exist by now
                events = dir_events(&state_dir);
            }
        }
        let reread = watch.refresh();
        let active = watch.active(unix_now());
        if reread || active != last {
            last = active;
            changed();
        }
    }
}

/// The state directory watched, or `None` (polled) when inotify cannot watch it.
fn dir_events(state_dir: &Path) -> Option<super::inotify::Watches> {
    let events = super::inotify::Watches::new()
        .map_err(|e| tracing::debug!(error = %e, "pause watcher: polling"))
        .ok()?;
    match events.add(state_dir, DIR_EVENTS) {
        Ok(_) => Some(events),
        Err(e) => {
            tracing::debug!(dir = %state_dir.display(), error = %e, "pause watcher: cannot watch the state directory; polling");
            None
        }
    }
}

/// How long from `now` until the first of `active` ends (a pause is over from its `until`
/// second on), if one has an end.
fn next_end(active: &[(String, Pause)], now: SystemTime) -> Option<Duration> {
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    active
        .iter()
        .filter_map(|(_, p)| p.until)
        .map(|until| Duration::from_secs(until).saturating_sub(now) + Duration::from_millis(10))
        .min()
}

fn stamp_of(path: &Path) -> Option<(u64, u64, i64, i64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.ino(), meta.size(), meta.mtime(), meta.mtime_nsec()))
}

/// Seconds since the epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // civil_from_days (Howard Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamAddr;

    #[test]
    fn the_next_end_is_the_earliest_until_of_the_active_pauses() {
        let at = |secs: u64, millis: u64| UNIX_EPOCH + Duration::from_millis(secs * 1000 + millis);
        let pause = |until| Pause { since: T0, until };
        let active = vec![
            ("a".to_string(), pause(None)),
            ("b".to_string(), pause(Some(T0 + 60))),
            ("c".to_string(), pause(Some(T0 + 5))),
        ];
        assert_eq!(
            next_end(&active, at(T0, 250)),
            Some(Duration::from_millis(4750 + 10))
        );
        assert_eq!(next_end(&active[..1], at(T0, 0)), None, "until resumed");
        assert_eq!(
            next_end(&active, at(T0 + 9, 0)),
            Some(Duration::from_millis(10))
        );
    }

    #[tokio::test]
    async fn the_watch_hears_a_pause_at_once_and_its_end_on_time() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(watch(dir.path().to_path_buf(), move || {
            let _ = tx.send(std::time::Instant::now());
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut state = PauseState::empty();
        let now = unix_now();
        state.pause(&names(&["api.service"]), now, Some(Duration::from_secs(2)));
        let saved = std::time::Instant::now();
        state.save(dir.path()).unwrap();
        let heard = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(
            heard.duration_since(saved) < POLL,
            "heard from inotify: {:?}",
            heard.duration_since(saved)
        );
        let ended = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(unix_now() >= now + 2, "the end is heard once it is due");
        assert!(ended.duration_since(saved) < Duration::from_secs(3));
        task.abort();
    }

    const T0: u64 = 1_795_684_057; // 2026-11-26 09:07:37 UTC

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_pause_for_a_span_ends_on_the_fake_clock() {
        let mut s = PauseState::empty();
        let p = s.pause(&names(&["api.service"]), T0, Some(Duration::from_secs(600)));
        assert_eq!(p.until, Some(T0 + 600));
        let covers = |s: &PauseState, t| s.covering(Some("api.service"), "127.0.0.1:8000", t);
        assert_eq!(covers(&s, T0).map(|c| c.0), Some("api.service".into()));
        assert!(covers(&s, T0 + 599).is_some());
        assert!(covers(&s, T0 + 600).is_none());
        assert!(s
            .covering(Some("web.service"), "127.0.0.1:3000", T0)
            .is_none());
        s.expire(T0 + 600);
        assert!(s.units.is_empty());
        assert_eq!(p.until_text(), "until 2026-11-26 09:17:37 UTC");
    }

    #[test]
    fn the_host_and_an_upstream_address_cover_targets() {
        let mut s = PauseState::empty();
        s.pause(&[], T0, None);
        assert_eq!(
            s.covering(None, "unix:/run/php.sock", T0 + 1_000_000)
                .map(|c| c.0),
            Some(HOST.into())
        );
        assert_eq!(s.resume(&[], T0), vec![HOST.to_string()]);
        s.pause(&names(&["127.0.0.1:8000"]), T0, None);
        assert!(s.covering(None, "127.0.0.1:8000", T0).is_some());
        assert!(s.covering(None, "127.0.0.1:8001", T0).is_none());
    }

    #[test]
    fn resume_lifts_named_pauses_or_all() {
        let mut s = PauseState::empty();
        s.pause(&names(&["a.service", "b.service"]), T0, None);
        s.pause(&[], T0, Some(Duration::from_secs(60)));
        assert_eq!(
            s.resume(&names(&["a.service", "x.service"]), T0),
            names(&["a.service"])
        );
        assert_eq!(
            s.active(T0).into_iter().map(|a| a.0).collect::<Vec<_>>(),
            names(&["*", "b.service"])
        );
        assert_eq!(s.resume(&[], T0), names(&["*", "b.service"]));
        assert_eq!(s, PauseState::empty());
    }

    #[test]
    fn the_file_round_trips_with_mode_0600_and_a_version() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        assert_eq!(PauseState::load(&state_dir).unwrap(), PauseState::empty());
        let mut s = PauseState::empty();
        s.pause(&names(&["api.service"]), T0, Some(Duration::from_secs(60)));
        s.save(&state_dir).unwrap();
        let path = PauseState::path(&state_dir);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"version\": 1"), "{text}");
        assert_eq!(PauseState::load(&state_dir).unwrap(), s);
    }

    #[test]
    fn unknown_versions_and_damage_are_errors_naming_the_file() {
        let p = Path::new("/var/lib/nginx-medic/paused.json");
        let e = PauseState::parse(p, r#"{"version": 2, "hosts": []}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`/var/lib/nginx-medic/paused.json` holds pause state version 2; this nginx-medic reads version 1 only\nhelp: use the nginx-medic that wrote it, or `nginx-medic resume` to replace it"
        );
        let e = PauseState::parse(p, r#"{"units": {}}"#).unwrap_err();
        assert!(
            e.to_string().starts_with(
                "`/var/lib/nginx-medic/paused.json` is not a pause state file: no `version`"
            ),
            "{e}"
        );
        let e = PauseState::parse(p, r#"{"version": 1, "unit": {}}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `unit`"), "{e}");
        let e = PauseState::parse(p, "{").unwrap_err();
        assert!(e.to_string().contains("is not a pause state file"), "{e}");
    }

    #[test]
    fn an_unreadable_state_holds_everything_and_heal_false_holds_its_backend() {
        let hints = vec![BackendHint {
            upstream: UpstreamAddr::parse("127.0.0.1:8000").unwrap(),
            unit: Some("api.service".into()),
            bind: None,
            heal: false,
        }];
        let ok = Ok(PauseState::empty());
        assert_eq!(
            hold_of(&ok, &hints, Some("api.service"), "127.0.0.1:9999", T0),
            Some(Hold::HealFalse)
        );
        assert_eq!(
            hold_of(&ok, &hints, None, "127.0.0.1:8000", T0),
            Some(Hold::HealFalse)
        );
        assert_eq!(
            hold_of(&ok, &hints, Some("web.service"), "127.0.0.1:3000", T0),
            None
        );
        let bad = Err("damaged".to_string());
        assert_eq!(
            hold_of(&bad, &[], None, "127.0.0.1:3000", T0),
            Some(Hold::Unreadable("damaged".into()))
        );
    }

    #[test]
    fn a_step_that_touches_a_paused_unit_holds_its_finding() {
        let mut s = PauseState::empty();
        s.pause(&names(&["php-fpm.service"]), T0, None);
        let state = Ok(s);
        let restart = PlannedAction::Systemd {
            unit: "php-fpm.service".into(),
            op: crate::playbook::SystemdOp::Restart,
        };
        let probe = PlannedAction::NginxTest {};
        let held = hold_of_actions(
            &state,
            &[],
            None,
            "unix:/run/php.sock",
            [&probe, &restart],
            T0,
        );
        assert_eq!(
            held.map(|(unit, h)| (unit, h.kind())),
            Some((Some("php-fpm.service".into()), "paused"))
        );
        assert_eq!(
            hold_of_actions(&state, &[], None, "unix:/run/php.sock", [&probe], T0),
            None
        );
    }

    #[test]
    fn holds_say_how_to_lift_them() {
        let pause = Pause {
            since: T0,
            until: Some(T0 + 60),
        };
        let h = Hold::Paused {
            name: "api.service".into(),
            pause,
        };
        assert_eq!(
            h.describe(),
            "paused until 2026-11-26 09:08:37 UTC; nothing is done (nginx-medic resume api.service)"
        );
        let h = Hold::Paused {
            name: HOST.into(),
            pause: Pause {
                since: T0,
                until: None,
            },
        };
        assert_eq!(
            h.describe(),
            "the whole host is paused until resumed; nothing is done (nginx-medic resume)"
        );
    }

    #[test]
    fn the_watch_rereads_only_a_changed_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PauseWatch::new(dir.path());
        assert!(!w.refresh());
        let mut s = PauseState::empty();
        s.pause(&[], T0, None);
        s.save(dir.path()).unwrap();
        assert!(w.refresh());
        assert!(w.state().as_ref().unwrap().host.is_some());
        assert!(!w.refresh());
        std::fs::write(PauseState::path(dir.path()), "{\"version\": 7}").unwrap();
        assert!(w.refresh());
        assert!(w.state().as_ref().unwrap_err().contains("version 7"));
    }

    #[test]
    fn transitions_are_reported_once_each() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = PauseState::empty();
        s.pause(&names(&["api.service"]), T0, Some(Duration::from_secs(60)));
        s.save(dir.path()).unwrap();
        let mut w = PauseWatch::new(dir.path());
        let (began, ended) = w.transitions(T0);
        assert_eq!(began.len(), 1);
        assert!(ended.is_empty());
        assert_eq!(w.transitions(T0 + 30), (Vec::new(), Vec::new()));
        assert_eq!(
            w.transitions(T0 + 60),
            (Vec::new(), names(&["api.service"]))
        );
        assert_eq!(w.transitions(T0 + 61), (Vec::new(), Vec::new()));
    }
}
