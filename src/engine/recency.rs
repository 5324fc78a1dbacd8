//! Whether an error-log line is newer than a file change or the start of a window, exact about
//! nginx's log clock: nginx writes local wall-clock time in whole seconds, files carry
//! nanosecond mtimes from the kernel's clock, and a line logged in the very second a site file
//! was written is neither older nor newer by its time alone.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Every time zone in use since 1979 is a whole number of quarter hours from UTC.
const ZONE_STEP: i64 = 15 * 60;

/// The time zone offset (seconds east of UTC) that maps nginx's naive local times to the epoch,
/// from the log's mtime (`log_mtime`, whole seconds) and its last line read as UTC
/// (`last_naive`). The difference is the offset plus how long after its time stamp the line
/// reached the disk (nginx stamps lines with a cached time, so a line stamped at `…:59` may be
/// written at `…:00`): rounding to the nearest quarter hour removes that second, so a line maps
/// to the second nginx meant and not one later.
pub fn zone_offset(log_mtime: i64, last_naive: i64) -> i64 {
    let raw = log_mtime - last_naive;
    (raw + ZONE_STEP / 2).div_euclid(ZONE_STEP) * ZONE_STEP
}

/// Seconds since the epoch, and nanoseconds, of a file time (negative before 1970).
pub fn split(time: SystemTime) -> (i64, u32) {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => (
            i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
            after.subsec_nanos(),
        ),
        Err(before) => {
            let d = before.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            match d.subsec_nanos() {
                0 => (-secs, 0),
                n => (-secs - 1, 1_000_000_000 - n),
            }
        }
    }
}

/// A time at whole seconds since the epoch.
pub fn at_second(secs: i64) -> SystemTime {
    match u64::try_from(secs) {
        Ok(s) => UNIX_EPOCH + Duration::from_secs(s),
        Err(_) => UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()),
    }
}

/// Whether a line nginx stamped with the epoch second `line` may have been logged after the
/// file change at `changed`, given that the log was last written at `log_written`.
///
/// The line was logged at some time in `[line, line + 1)`:
/// - a second after the change's second: logged after it;
/// - a second before the change's second: logged before it;
/// - the change's own second: logged before it when the log itself was last written before the
///   change (every line is older than the log's mtime), else it counts — a fault that nginx
///   logged in the second the site was written is a fault of that site (the lab's
///   `lab_same_second_log_line_counts`), and the cost of counting an older line of that same
///   second is one more look, never a missed fault.
///
/// `own_verified`: the change is nginx-medic's own edit, committed after its probe passed; a
/// line of that edit's second is then history (the fault the edit healed), not a new symptom.
pub fn logged_after(
    line: i64,
    changed: SystemTime,
    log_written: SystemTime,
    own_verified: bool,
) -> bool {
    let (changed_secs, _) = split(changed);
    match line.cmp(&changed_secs) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => !own_verified && log_written >= changed,
    }
}

/// When a file was last written, and whether by nginx-medic's own committed edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileChange {
    pub at: SystemTime,
    pub own_verified: bool,
}

/// Whether a line stamped with the epoch second `line` falls in a window that starts at the
/// whole second `start` (a line of second `start` is inside it).
pub fn within(line: i64, start: i64) -> bool {
    line >= start
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64, nanos: u32) -> SystemTime {
        at_second(secs) + Duration::from_nanos(u64::from(nanos))
    }

    #[test]
    fn the_zone_offset_ignores_the_second_a_line_takes_to_reach_the_disk() {
        let naive = 1_795_684_057;
        assert_eq!(zone_offset(naive, naive), 0);
        assert_eq!(
            zone_offset(naive + 1, naive),
            0,
            "stamped …:59, written …:00"
        );
        assert_eq!(zone_offset(naive + 3600 + 1, naive), 3600);
        assert_eq!(zone_offset(naive - 5 * 3600, naive), -5 * 3600);
        assert_eq!(
            zone_offset(naive + 5 * 3600 + 45 * 60, naive),
            20_700,
            "Nepal"
        );
    }

    #[test]
    fn a_line_of_the_second_the_file_was_written_counts_unless_the_log_is_older() {
        let changed = at(1000, 400_000_000);
        // the case: the fault is logged 0.3 s after the site was written
        assert!(logged_after(1000, changed, at(1000, 700_000_000), false));
        // the file written again after the last line of the log (a heal): nothing counts
        assert!(!logged_after(1000, changed, at(1000, 100_000_000), false));
        assert!(
            logged_after(1000, changed, changed, false),
            "equal mtimes: not provably older"
        );
        assert!(logged_after(1001, changed, at(1001, 0), false));
        assert!(!logged_after(999, changed, at(1005, 0), false));
        // a change at a whole second: the line of that second may follow it
        assert!(logged_after(1000, at(1000, 0), at(1000, 1), false));
        // nginx-medic's own verified edit, the reload's notice logged after it: the fault line
        // of that second is the one it healed
        assert!(!logged_after(1000, changed, at(1000, 700_000_000), true));
        assert!(logged_after(1001, changed, at(1001, 0), true));
    }

    #[test]
    fn the_window_includes_its_first_second() {
        assert!(within(100, 100));
        assert!(within(101, 100));
        assert!(!within(99, 100));
    }

    #[test]
    fn file_times_split_into_seconds_and_nanoseconds() {
        assert_eq!(split(at(5, 7)), (5, 7));
        assert_eq!(
            split(UNIX_EPOCH - Duration::from_millis(1500)),
            (-2, 500_000_000)
        );
        assert_eq!(split(at_second(-3)), (-3, 0));
    }
}
