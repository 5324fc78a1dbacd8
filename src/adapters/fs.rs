//! File side effects for `apply`: content hashes, atomic writes that keep owner and mode,
//! byte-for-byte backups and their restore.
//!
//! Paths that are symlinks (nginx's `sites-enabled/*` usually are) are followed: the file they
//! point at is read, replaced and restored, and the link itself is left as it was.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::failpoint::fail_point;

/// Mode given to files that did not exist before `atomic_write` created them.
pub const NEW_FILE_MODE: u32 = 0o644;

/// How many unique names to try before giving up on a temp or backup file name.
const NAME_ATTEMPTS: u32 = 100;

/// Failures reading, writing, backing up or restoring files.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// A file or directory could not be read or inspected.
    #[error("cannot read `{}`", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file or directory could not be written, synced, renamed or removed.
    #[error("cannot write `{}`", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The path has no parent directory or no file name, so nothing can be written beside it.
    #[error("`{}` does not name a file in a directory", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// A backup copy no longer holds the bytes that were saved.
    #[error(
        "backup `{}` of `{}` is damaged (sha256 {found}, expected {expected})\nhelp: restore `{}` by hand from another copy",
        copy.display(), original.display(), original.display()
    )]
    BackupDamaged {
        /// The file the backup was taken of.
        original: PathBuf,
        /// The backup copy.
        copy: PathBuf,
        /// Hash recorded when the backup was taken.
        expected: String,
        /// Hash of the copy now.
        found: String,
    },
}

/// A byte-for-byte copy of a file taken before it was changed, with what is needed to put it back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Backup {
    /// The path that was backed up, as given (a symlink stays a symlink).
    pub original: PathBuf,
    /// The copy, or `None` when the file did not exist (restoring then removes it).
    pub copy: Option<PathBuf>,
    /// Hex sha256 of the original bytes, or `None` when the file did not exist.
    pub hash: Option<String>,
    /// Whether the file existed when the backup was taken.
    pub existed: bool,
    /// Owner uid of the original (0 when it did not exist).
    pub uid: u32,
    /// Owner gid of the original (0 when it did not exist).
    pub gid: u32,
    /// Permission bits of the original, including setuid/setgid/sticky (0 when it did not exist).
    pub mode: u32,
}

/// Owner and permission bits to give a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ownership {
    uid: u32,
    gid: u32,
    mode: u32,
}

/// Hex sha256 of `bytes`.
pub fn bytes_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// Hex sha256 of the contents of the file at `path` (symlinks followed).
pub fn file_hash(path: &Path) -> Result<String, FsError> {
    let bytes = fs::read(path).map_err(|source| read_err(path, source))?;
    Ok(bytes_hash(&bytes))
}

/// Hex sha256 of the file at `path`, or `None` when nothing exists there.
pub fn current_hash(path: &Path) -> Result<Option<String>, FsError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes_hash(&bytes))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(read_err(path, source)),
    }
}

/// The most of a settings file (an `.env`, a pool, a site) that is ever read: such files are
/// kilobytes; anything bigger is refused rather than read into memory.
pub const MAX_SETTINGS_FILE: u64 = 4 << 20;

/// Reads a settings file that another user may control, in bounded time and memory: opened
/// without blocking (a FIFO does not hang the reader), refused unless it is a regular file (a
/// symlink to `/dev/zero`, a device node), and refused when bigger than [`MAX_SETTINGS_FILE`].
/// The errors keep the kind of `std::fs::read_to_string`'s (`NotFound` stays `NotFound`).
pub fn read_settings_file(path: &Path) -> io::Result<String> {
    use std::io::Read;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (a device, a FIFO or a socket); refused",
        ));
    }
    if meta.len() > MAX_SETTINGS_FILE {
        return Err(too_big(meta.len()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_SETTINGS_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_SETTINGS_FILE {
        return Err(too_big(bytes.len() as u64));
    }
    String::from_utf8(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

fn too_big(len: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{len} bytes, more than a settings file holds ({MAX_SETTINGS_FILE} at most); refused"
        ),
    )
}

/// Replaces the file at `path` with `bytes` so readers see either the old or the new contents.
///
/// The bytes go to a new temp file beside the target, which gets the target's owner and mode
/// (or root and 0644 when the target is new; root only when running as root), is synced, and
/// is renamed over the target; then the directory is synced. On error no temp file is left.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    let target = resolve(path)?;
    let ownership = match fs::metadata(&target) {
        Ok(meta) => Some(Ownership {
            uid: meta.uid(),
            gid: meta.gid(),
            mode: meta.mode() & 0o7777,
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(source) => return Err(read_err(&target, source)),
    };
    write_replacing(&target, bytes, ownership)
}

/// Like [`atomic_write`], for nginx-medic's own state files: the file ends up owned by the
/// caller with mode 0600, whatever it was before.
pub fn atomic_write_private(path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    let target = resolve(path)?;
    let ownership = Ownership {
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
        mode: 0o600,
    };
    write_replacing(&target, bytes, Some(ownership))
}

/// Copies the file at `path` byte for byte into `dir` (created with mode 0700 if missing).
///
/// The copy is named after the original path (`etc_nginx_nginx.conf`, with `.1`, `.2`, … when
/// taken), is mode 0600 and is synced before this returns. A missing file is recorded as such.
pub fn backup(path: &Path, dir: &Path) -> Result<Backup, FsError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Backup {
                original: path.to_path_buf(),
                copy: None,
                hash: None,
                existed: false,
                uid: 0,
                gid: 0,
                mode: 0,
            })
        }
        Err(source) => return Err(read_err(path, source)),
    };
    let meta = fs::metadata(path).map_err(|source| read_err(path, source))?;
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| write_err(dir, source))?;

    let base = readable_name(path);
    let (copy, mut file) = create_unique(dir, |attempt| match attempt {
        0 => base.clone(),
        n => format!("{base}.{n}"),
    })?;
    let mut guard = RemoveOnDrop(Some(copy.clone()));
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(|source| write_err(&copy, source))?;
    sync_dir(dir)?;
    guard.disarm();
    Ok(Backup {
        original: path.to_path_buf(),
        copy: Some(copy),
        hash: Some(bytes_hash(&bytes)),
        existed: true,
        uid: meta.uid(),
        gid: meta.gid(),
        mode: meta.mode() & 0o7777,
    })
}

/// Puts back exactly what `backup` saved: the same bytes, owner and mode, atomically; or removes
/// the file when it did not exist before.
///
/// The copy is checked against the recorded hash first, so a damaged backup is refused rather
/// than written over the live file.
pub fn restore(backup: &Backup) -> Result<(), FsError> {
    let (copy, expected) = match (&backup.copy, &backup.hash) {
        (Some(copy), Some(hash)) if backup.existed => (copy, hash),
        _ => return remove_if_present(&backup.original),
    };
    let bytes = fs::read(copy).map_err(|source| read_err(copy, source))?;
    let found = bytes_hash(&bytes);
    if &found != expected {
        return Err(FsError::BackupDamaged {
            original: backup.original.clone(),
            copy: copy.clone(),
            expected: expected.clone(),
            found,
        });
    }
    let target = resolve(&backup.original)?;
    write_replacing(
        &target,
        &bytes,
        Some(Ownership {
            uid: backup.uid,
            gid: backup.gid,
            mode: backup.mode,
        }),
    )
}

/// Removes the file at `path` (the link itself if it is a symlink) and syncs its directory;
/// nothing there is fine.
fn remove_if_present(path: &Path) -> Result<(), FsError> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(parent_of(path)?),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(write_err(path, source)),
    }
}

/// Writes `bytes` to a temp file beside `target`, gives it `ownership` (or the new-file default)
/// and renames it over `target`.
fn write_replacing(
    target: &Path,
    bytes: &[u8],
    ownership: Option<Ownership>,
) -> Result<(), FsError> {
    let dir = parent_of(target)?;
    let name = target
        .file_name()
        .ok_or_else(|| FsError::NotAFile {
            path: target.to_path_buf(),
        })?
        .to_string_lossy()
        .into_owned();
    let pid = std::process::id();
    let (tmp, mut file) = create_unique(dir, |_| {
        format!(".{name}.medic-{pid}-{}.tmp", next_counter())
    })?;
    let mut guard = RemoveOnDrop(Some(tmp.clone()));

    let ownership = ownership.or_else(|| {
        // A new file: root-owned when we are root, else left to whoever we are.
        nix::unistd::geteuid().is_root().then_some(Ownership {
            uid: 0,
            gid: 0,
            mode: NEW_FILE_MODE,
        })
    });
    file.write_all(bytes)
        .map_err(|source| write_err(&tmp, source))?;
    match ownership {
        // Owner first: chown clears setuid/setgid bits, chmod then sets them again.
        Some(own) => std::os::unix::fs::fchown(&file, Some(own.uid), Some(own.gid))
            .and_then(|()| file.set_permissions(Permissions::from_mode(own.mode)))
            .map_err(|source| write_err(&tmp, source))?,
        None => file
            .set_permissions(Permissions::from_mode(NEW_FILE_MODE))
            .map_err(|source| write_err(&tmp, source))?,
    }
    file.sync_all().map_err(|source| write_err(&tmp, source))?;
    drop(file);
    fail_point!("fs.after-write", |_| Err(write_err(
        &tmp,
        crate::failpoint::injected("fs.after-write")
    )));
    fs::rename(&tmp, target).map_err(|source| write_err(target, source))?;
    guard.disarm();
    fail_point!("fs.after-rename", |_| Err(write_err(
        target,
        crate::failpoint::injected("fs.after-rename")
    )));
    sync_dir(dir)
}

/// The path to write through: the file a symlink points at, or `path` itself.
fn resolve(path: &Path) -> Result<PathBuf, FsError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            fs::canonicalize(path).map_err(|source| read_err(path, source))
        }
        Ok(_) => Ok(path.to_path_buf()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(path.to_path_buf()),
        Err(source) => Err(read_err(path, source)),
    }
}

/// Creates a new file (`O_EXCL`, mode 0600) in `dir` under the first free name `name(attempt)`.
fn create_unique(dir: &Path, name: impl Fn(u32) -> String) -> Result<(PathBuf, File), FsError> {
    let mut last = None;
    for attempt in 0..NAME_ATTEMPTS {
        let path = dir.join(name(attempt));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(path),
            Err(source) => return Err(write_err(&path, source)),
        }
    }
    Err(write_err(
        &last.unwrap_or_else(|| dir.to_path_buf()),
        io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("no free file name after {NAME_ATTEMPTS} attempts"),
        ),
    ))
}

/// `etc_nginx_conf.d_app.conf` for `/etc/nginx/conf.d/app.conf`: readable, one path component.
fn readable_name(path: &Path) -> String {
    let flat: String = path
        .to_string_lossy()
        .trim_start_matches('/')
        .chars()
        .map(|c| if c == '/' || c.is_control() { '_' } else { c })
        .collect();
    match flat.as_str() {
        "" | "." | ".." => "file".to_string(),
        _ => flat,
    }
}

fn next_counter() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_of(path: &Path) -> Result<&Path, FsError> {
    match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Ok(Path::new(".")),
        Some(p) => Ok(p),
        None => Err(FsError::NotAFile {
            path: path.to_path_buf(),
        }),
    }
}

/// Makes a rename or removal in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), FsError> {
    fail_point!("fs.before-dir-fsync", |_| Err(write_err(
        dir,
        crate::failpoint::injected("fs.before-dir-fsync")
    )));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| write_err(dir, source))
}

fn read_err(path: &Path, source: io::Error) -> FsError {
    FsError::Read {
        path: path.to_path_buf(),
        source,
    }
}

fn write_err(path: &Path, source: io::Error) -> FsError {
    FsError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// Removes a half-made file when an error returns early.
struct RemoveOnDrop(Option<PathBuf>);

impl RemoveOnDrop {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn set_owner_mode(path: &Path, uid: u32, gid: u32, mode: u32) {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
        fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
    }

    fn owner_mode(path: &Path) -> (u32, u32, u32) {
        let m = fs::metadata(path).unwrap();
        (m.uid(), m.gid(), m.mode() & 0o7777)
    }

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn settings_files_are_read_in_bounded_time_and_memory() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join(".env");
        fs::write(&ok, "HOST=127.0.0.1\n").unwrap();
        assert_eq!(read_settings_file(&ok).unwrap(), "HOST=127.0.0.1\n");
        let zero = dir.path().join("zero.env");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let e = read_settings_file(&zero).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let fifo = dir.path().join("fifo.env");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let started = std::time::Instant::now();
        let e = read_settings_file(&fifo).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "a FIFO never blocks"
        );
        let big = dir.path().join("big.env");
        File::create(&big).unwrap().set_len(2 << 30).unwrap(); // sparse: 2 GiB, no disk
        let e = read_settings_file(&big).unwrap_err();
        assert!(
            e.to_string().contains("more than a settings file holds"),
            "{e}"
        );
        let missing = read_settings_file(&dir.path().join("none")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            bytes_hash(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        fs::write(&f, b"abc").unwrap();
        assert_eq!(file_hash(&f).unwrap(), bytes_hash(b"abc"));
        assert_eq!(current_hash(&dir.path().join("none")).unwrap(), None);
        let err = file_hash(&dir.path().join("none")).unwrap_err();
        assert!(err.to_string().starts_with("cannot read `"), "{err}");
    }

    #[test]
    fn atomic_write_keeps_owner_and_mode_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("site.conf");
        fs::write(&f, b"old").unwrap();
        let (uid, gid) = if is_root() { (33, 33) } else { (0, 0) };
        if is_root() {
            set_owner_mode(&f, uid, gid, 0o640);
        } else {
            fs::set_permissions(&f, Permissions::from_mode(0o640)).unwrap();
        }
        let before = owner_mode(&f);
        atomic_write(&f, b"new contents").unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"new contents");
        assert_eq!(owner_mode(&f), before);
        if is_root() {
            assert_eq!(before, (33, 33, 0o640));
        }
        assert_eq!(entries(dir.path()), vec!["site.conf"]);
    }

    #[test]
    fn atomic_write_keeps_setgid_bit() {
        if !is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x");
        fs::write(&f, b"old").unwrap();
        set_owner_mode(&f, 33, 33, 0o2750);
        atomic_write(&f, b"new").unwrap();
        assert_eq!(owner_mode(&f), (33, 33, 0o2750));
    }

    #[test]
    fn atomic_write_new_file_is_0644() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("new.conf");
        atomic_write(&f, b"hello").unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"hello");
        let (uid, gid, mode) = owner_mode(&f);
        assert_eq!(mode, 0o644);
        if is_root() {
            assert_eq!((uid, gid), (0, 0));
        }
        assert_eq!(entries(dir.path()), vec!["new.conf"]);
    }

    #[test]
    fn atomic_write_error_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a directory: the rename fails after the temp file was written.
        let target = dir.path().join("sub");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("inside"), b"x").unwrap();
        let err = atomic_write(&target, b"data").unwrap_err();
        assert!(matches!(err, FsError::Write { .. }), "{err:?}");
        assert_eq!(entries(dir.path()), vec!["sub"]);
        // A missing directory fails before anything is created.
        let err = atomic_write(&dir.path().join("missing/f"), b"data").unwrap_err();
        assert!(matches!(err, FsError::Write { .. }), "{err:?}");
        assert_eq!(entries(dir.path()), vec!["sub"]);
    }

    #[test]
    fn atomic_write_follows_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("available");
        let link = dir.path().join("enabled");
        fs::write(&real, b"old").unwrap();
        symlink(&real, &link).unwrap();
        atomic_write(&link, b"new").unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&real).unwrap(), b"new");
    }

    #[test]
    fn backup_and_restore_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("nginx.conf");
        let bytes: Vec<u8> = (0..=255u8).chain(b"\r\n\0tail".iter().copied()).collect();
        fs::write(&f, &bytes).unwrap();
        if is_root() {
            set_owner_mode(&f, 33, 4, 0o604);
        } else {
            fs::set_permissions(&f, Permissions::from_mode(0o604)).unwrap();
        }
        let before = owner_mode(&f);
        let backups = dir.path().join("state/backups/t1");
        let b = backup(&f, &backups).unwrap();
        assert!(b.existed);
        assert_eq!(b.hash.as_deref(), Some(bytes_hash(&bytes).as_str()));
        assert_eq!((b.uid, b.gid, b.mode), before);
        let copy = b.copy.clone().unwrap();
        assert_eq!(fs::read(&copy).unwrap(), bytes);
        assert_eq!(owner_mode(&backups).2, 0o700);
        assert!(copy
            .file_name()
            .unwrap()
            .to_string_lossy()
            .ends_with("nginx.conf"));

        // A second backup of the same file gets its own name.
        let b2 = backup(&f, &backups).unwrap();
        assert_ne!(b2.copy, b.copy);

        fs::write(&f, b"clobbered").unwrap();
        fs::set_permissions(&f, Permissions::from_mode(0o777)).unwrap();
        if is_root() {
            std::os::unix::fs::chown(&f, Some(0), Some(0)).unwrap();
        }
        restore(&b).unwrap();
        assert_eq!(fs::read(&f).unwrap(), bytes);
        assert_eq!(owner_mode(&f), before);
    }

    #[test]
    fn restore_of_missing_file_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("new.conf");
        let b = backup(&f, &dir.path().join("b")).unwrap();
        assert!(!b.existed);
        assert_eq!(b.copy, None);
        fs::write(&f, b"created later").unwrap();
        restore(&b).unwrap();
        assert!(!f.exists());
        // Restoring again is fine.
        restore(&b).unwrap();
    }

    #[test]
    fn damaged_backup_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.conf");
        fs::write(&f, b"original").unwrap();
        let b = backup(&f, &dir.path().join("b")).unwrap();
        fs::write(b.copy.as_ref().unwrap(), b"bit rot").unwrap();
        fs::write(&f, b"edited").unwrap();
        let err = restore(&b).unwrap_err();
        assert!(matches!(err, FsError::BackupDamaged { .. }), "{err:?}");
        assert!(err.to_string().contains("is damaged"), "{err}");
        assert_eq!(fs::read(&f).unwrap(), b"edited");
    }

    #[test]
    fn readable_names() {
        assert_eq!(
            readable_name(Path::new("/etc/nginx/conf.d/app.conf")),
            "etc_nginx_conf.d_app.conf"
        );
        assert_eq!(readable_name(Path::new("/")), "file");
    }
}
