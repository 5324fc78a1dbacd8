//! What nginx-medic's own sandbox (the shipped unit's `ProtectSystem=strict`, `ProtectHome=`,
//! `ReadWritePaths=`) keeps it from reading or writing, found before anything is attempted,
//! with the drop-in that would allow it.

use std::io;
use std::path::{Path, PathBuf};

/// The access a plan needs to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// Directories `ProtectHome=` hides or makes read-only.
const HOME_DIRS: [&str; 3] = ["/home", "/root", "/run/user"];

/// Why nginx-medic cannot do `access` on `path` from where it runs, with the drop-in that
/// would let it; `None` when nothing in its environment stands in the way.
pub fn blocked(path: &Path, access: Access) -> Option<String> {
    let home = home_dir_of(path);
    match access {
        Access::Read => {
            std::fs::metadata(path).err()?;
            let home = home.filter(|h| hidden(h))?;
            Some(hidden_text(path, home))
        }
        Access::Write => {
            let err = write_error(path)?;
            Some(match home {
                Some(home) if hidden(home) => hidden_text(path, home),
                _ => denied_text(path, &err),
            })
        }
    }
}

/// The error a write of `path` (a temp file beside it, renamed over it) would meet, checked
/// with `access(2)` on the file and on the nearest existing directory above it.
fn write_error(path: &Path) -> Option<io::Error> {
    use nix::unistd::{access, AccessFlags};
    let check = |p: &Path| access(p, AccessFlags::W_OK).err().map(io::Error::from);
    if path.exists() {
        if let Some(e) = check(path) {
            return Some(e);
        }
    }
    let dir = path.ancestors().skip(1).find(|d| d.is_dir())?;
    check(dir)
}

/// The `ProtectHome=` directory `path` lies under.
fn home_dir_of(path: &Path) -> Option<&'static str> {
    HOME_DIRS.into_iter().find(|h| path.starts_with(h))
}

/// Whether `dir` is hidden from this process: a mount point here (systemd mounts an empty,
/// inaccessible directory over it for `ProtectHome=yes`) with nothing visible inside.
fn hidden(dir: &str) -> bool {
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| is_mount_point(&m, dir))
        .unwrap_or(false);
    let empty = std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none());
    mounted && empty
}

/// Whether `mountinfo` (the text of `/proc/self/mountinfo`) has a mount at exactly `dir`.
fn is_mount_point(mountinfo: &str, dir: &str) -> bool {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|mount_point| mount_point == dir)
}

/// The directory to open for writing: the file's own directory (an atomic rewrite creates a
/// temp file beside it), or for a file in a directory yet to be created, that directory.
fn dir_to_allow(path: &Path) -> PathBuf {
    path.parent()
        .map_or_else(|| path.to_path_buf(), Path::to_path_buf)
}

fn hidden_text(path: &Path, home: &str) -> String {
    format!(
        "`{}` is hidden from nginx-medic by its sandbox (`ProtectHome=yes` hides {home})\nhelp: to let it read and fix this backend's settings, `systemctl edit nginx-medic` and add:\n  [Service]\n  ProtectHome=read-only\n  ReadWritePaths={}",
        path.display(),
        dir_to_allow(path).display()
    )
}

fn denied_text(path: &Path, err: &io::Error) -> String {
    format!(
        "nginx-medic may not write `{}` from its sandbox: {err}\nhelp: to let it fix this file, `systemctl edit nginx-medic` and add:\n  [Service]\n  ReadWritePaths={}",
        path.display(),
        dir_to_allow(path).display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
25 1 0:21 / / rw,relatime - overlay overlay rw
40 25 0:34 / /home ro,nosuid,nodev,noexec - tmpfs tmpfs ro,mode=000
41 25 0:22 /etc/nginx /etc/nginx rw,relatime - overlay overlay rw
";

    #[test]
    fn mount_points_are_matched_exactly() {
        assert!(is_mount_point(MOUNTINFO, "/home"));
        assert!(is_mount_point(MOUNTINFO, "/etc/nginx"));
        assert!(!is_mount_point(MOUNTINFO, "/etc"));
        assert!(!is_mount_point(MOUNTINFO, "/home/app"));
    }

    #[test]
    fn paths_under_home_dirs_are_recognised() {
        assert_eq!(home_dir_of(Path::new("/home/app/.env")), Some("/home"));
        assert_eq!(home_dir_of(Path::new("/root/app/.env")), Some("/root"));
        assert_eq!(home_dir_of(Path::new("/homestead/.env")), None);
        assert_eq!(home_dir_of(Path::new("/srv/web/.env")), None);
    }

    #[test]
    fn a_writable_file_is_not_blocked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("api");
        std::fs::write(&file, "HOST=127.0.0.1\n").unwrap();
        assert_eq!(blocked(&file, Access::Write), None);
        assert_eq!(blocked(&file, Access::Read), None);
        // a drop-in in a directory not created yet: the nearest existing directory decides
        assert_eq!(
            blocked(&dir.path().join("api.service.d/x.conf"), Access::Write),
            None
        );
    }

    #[test]
    fn the_drop_in_names_the_directory_of_the_file() {
        let text = denied_text(
            Path::new("/etc/default/api"),
            &io::Error::from_raw_os_error(30),
        );
        assert!(text.contains("Read-only file system"), "{text}");
        assert!(text.ends_with("ReadWritePaths=/etc/default"), "{text}");
        let text = hidden_text(Path::new("/home/app/.env"), "/home");
        assert!(
            text.contains("ProtectHome=read-only\n  ReadWritePaths=/home/app"),
            "{text}"
        );
    }
}
