//! File side effects for `apply`: content hashes, bounded reads of files other users control,
//! atomic writes that keep owner, mode, ACLs and security labels, byte-for-byte backups and
//! their restore.
//!
//! Nothing here can be redirected by whoever owns the directory of a file nginx-medic changes
//! (an app user owns the directory of its `.env`):
//! - a path is found once ([`Pinned::locate`]): its directory is opened without following
//!   symlinks (`openat2` with `RESOLVE_NO_SYMLINKS`, else one `O_NOFOLLOW` component at a time),
//!   and every later step works relative to that open directory, never by the path again;
//! - a symlink on the way (nginx's `sites-enabled/*`, a deploy's `current -> releases/…`) is
//!   followed only where no one but root could have placed it, or when it leads to something
//!   owned by the one user who could; any other symlink, a file with other hard links in a
//!   directory another user can write, and anything that is not a regular file are refused;
//! - the file is opened `O_NOFOLLOW` and pinned by (device, inode) with `fstat` on the open fd;
//!   it is never opened for writing: the new bytes go to a new file made beside it (`O_EXCL`),
//!   which gets the owner, mode, ACL and `security.*` attributes of the old one and is swapped
//!   in with `renameat2(RENAME_EXCHANGE)`; the file swapped out must be the pinned one with the
//!   expected bytes, else the swap is undone and nothing changed;
//! - a restore puts the saved bytes back only over the file nginx-medic wrote (its inode and
//!   hash are recorded before it is swapped in); a file someone changed since is left alone.

use std::ffi::{OsStr, OsString};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, ResolveFlags, Stat};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::failpoint::fail_point;

/// Mode given to files that did not exist before `atomic_write` created them.
pub const NEW_FILE_MODE: u32 = 0o644;

/// How many unique names to try before giving up on a temp or backup file name.
const NAME_ATTEMPTS: u32 = 100;

/// How many symlinks one path may pass through (the kernel's own limit).
const MAX_SYMLINKS: u32 = 40;

/// The POSIX access ACL, kept on a rewrite like the `security.*` attributes.
const ACCESS_ACL: &str = "system.posix_acl_access";

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
    /// Changing the file could be redirected (or would change something other than a file).
    #[error(
        "`{}` {reason}; refused\nhelp: make it a regular file in a directory only its owner can write, or change it by hand",
        path.display()
    )]
    Unsafe {
        /// The path.
        path: PathBuf,
        /// What makes it unsafe.
        reason: String,
    },
    /// The file was replaced or changed while nginx-medic was changing it; it was left as it is.
    #[error("`{}` {what} while nginx-medic was changing it; left as it is now", path.display())]
    Raced {
        /// The file.
        path: PathBuf,
        /// What happened: `was replaced`, `appeared`, `was removed`.
        what: &'static str,
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

/// A file's identity: its device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileId {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
}

impl FileId {
    fn of(stat: &Stat) -> Self {
        Self {
            dev: stat.st_dev,
            ino: stat.st_ino,
        }
    }
}

/// One extended attribute (an ACL, an SELinux label) kept across a rewrite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Xattr {
    /// `security.selinux`, `system.posix_acl_access`, …
    pub name: String,
    /// The raw value.
    pub value: Vec<u8>,
}

/// What nginx-medic put at a path: recorded before the file is swapped in, so a rollback (also
/// one after a crash) knows whether what is there now is its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Written {
    /// Hex sha256 of the bytes written.
    pub hash: String,
    /// The file written.
    pub file: FileId,
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
    /// The file `original` resolved to (itself, or where a followed symlink led).
    #[serde(default)]
    pub resolved: Option<PathBuf>,
    /// The directory holding it, pinned: a restore refuses another directory at that path.
    #[serde(default)]
    pub dir: Option<FileId>,
    /// The original file, when it existed.
    #[serde(default)]
    pub file: Option<FileId>,
    /// The original's ACL and `security.*` attributes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<Xattr>,
    /// Every file nginx-medic put there, oldest first (recorded before each is swapped in).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub written: Vec<Written>,
}

/// How a [`Pinned::restore`] went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    /// The saved bytes, owner, mode and attributes are back.
    Restored,
    /// The file did not exist before and nginx-medic's file was removed.
    Removed,
    /// What is there is already what was there before (nothing of nginx-medic's was swapped in).
    AsBefore,
    /// Someone changed the file after nginx-medic wrote it: left as it is.
    LeftAlone {
        /// What is there now compared with what nginx-medic wrote.
        reason: String,
    },
}

/// Owner, permission bits and attributes to give a file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    xattrs: Vec<Xattr>,
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

/// Hex sha256 of the contents of the file at `path` (found as [`Pinned::locate`] finds it).
pub fn file_hash(path: &Path) -> Result<String, FsError> {
    current_hash(path)?.ok_or_else(|| {
        read_err(
            path,
            io::Error::new(io::ErrorKind::NotFound, "no such file"),
        )
    })
}

/// Hex sha256 of the file at `path`, or `None` when nothing exists there.
pub fn current_hash(path: &Path) -> Result<Option<String>, FsError> {
    match Pinned::locate(path) {
        Ok(pinned) => Ok(pinned.current()?.map(|c| c.hash)),
        Err(FsError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The most of a settings file (an `.env`, a pool, a site) that is ever read: such files are
/// kilobytes; anything bigger is refused rather than read into memory.
pub const MAX_SETTINGS_FILE: u64 = 4 << 20;

/// Reads a settings file that another user may control, in bounded time and memory: found as
/// [`Pinned::locate`] finds it (a symlink another user placed is followed only to a file of
/// theirs), opened without blocking (a FIFO does not hang the reader), refused unless it is a
/// regular file (a symlink to `/dev/zero`, a device node), and refused when bigger than
/// [`MAX_SETTINGS_FILE`]. The errors keep the kind of `std::fs::read_to_string`'s (`NotFound`
/// stays `NotFound`).
pub fn read_settings_file(path: &Path) -> io::Result<String> {
    let current = Pinned::locate(path)
        .and_then(|p| p.current())
        .map_err(into_io)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))?;
    String::from_utf8(current.bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// The last `max` bytes of a log file that another user may control (a backend's
/// `StandardOutput=append:` file, a PM2 log), read as [`read_settings_file`] reads: found as
/// [`Pinned::locate`] finds it, opened without blocking (a FIFO does not hang the reader),
/// refused unless it is a regular file (a symlink to `/dev/zero`, a device node). A file of
/// any size costs at most `max` bytes (a 2 GB sparse file: its end only).
pub fn read_log_tail(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    use std::io::{Seek, SeekFrom};
    let pinned = Pinned::locate(path).map_err(into_io)?;
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(
        pinned.dir.fd.as_fd(),
        pinned.name.as_os_str(),
        flags,
        Mode::empty(),
    )
    .map_err(io::Error::from)?;
    let stat = rustix::fs::fstat(&fd).map_err(io::Error::from)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "is not a regular file (a device, a FIFO or a socket); refused",
        ));
    }
    let size = u64::try_from(stat.st_size).unwrap_or(0);
    let mut file = File::from(fd);
    file.seek(SeekFrom::Start(size.saturating_sub(max)))?;
    let mut bytes = Vec::new();
    file.take(max).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// An [`FsError`] as the `io::Error` a reader expects: the OS error itself when there is one.
fn into_io(e: FsError) -> io::Error {
    match e {
        FsError::Read { source, .. } | FsError::Write { source, .. } => source,
        FsError::Unsafe { reason, .. } => {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{reason}; refused"))
        }
        other => io::Error::other(other.to_string()),
    }
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
/// The new file gets the old one's owner, mode, ACL and `security.*` attributes (or root and
/// 0644 when the target is new; root only when running as root), is synced, and is swapped in
/// for the file that was read; then the directory is synced. On error no temp file is left.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    let pinned = Pinned::locate(path)?;
    let current = pinned.current()?;
    let meta = current.as_ref().map(Current::meta);
    let expect = current.as_ref().map(|c| (c.id, c.hash.as_str()));
    let staged = pinned.stage(bytes, meta)?;
    pinned.swap_in(staged, expect)?;
    Ok(())
}

/// Like [`atomic_write`], for nginx-medic's own state files: the file ends up owned by the
/// caller with mode 0600, whatever it was before.
pub fn atomic_write_private(path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    let pinned = Pinned::locate(path)?;
    let current = pinned.current()?;
    let meta = Meta {
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
        mode: 0o600,
        xattrs: Vec::new(),
    };
    let staged = pinned.stage(bytes, Some(meta))?;
    pinned.swap_in(staged, current.as_ref().map(|c| (c.id, c.hash.as_str())))?;
    Ok(())
}

/// Copies the file at `path` byte for byte into `dir` (see [`Pinned::backup`]).
pub fn backup(path: &Path, dir: &Path) -> Result<Backup, FsError> {
    Pinned::locate(path)?.backup(dir)
}

/// Puts back what `backup` saved over what nginx-medic wrote, finding the path again and
/// checking it is the directory the backup was taken in (see [`Pinned::restore`]).
pub fn restore(backup: &Backup) -> Result<Restored, FsError> {
    Pinned::relocate(backup)?.restore(backup)
}

/// The file at a path now, read through its pinned directory.
#[derive(Debug, Clone)]
pub struct Current {
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Hex sha256 of them.
    pub hash: String,
    /// Its identity.
    pub id: FileId,
    uid: u32,
    gid: u32,
    mode: u32,
    xattrs: Vec<Xattr>,
}

impl Current {
    fn meta(&self) -> Meta {
        Meta {
            uid: self.uid,
            gid: self.gid,
            mode: self.mode,
            xattrs: self.xattrs.clone(),
        }
    }
}

/// Who can change the entries of a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writers {
    /// Only root (and nginx-medic itself).
    Trusted,
    /// Its owner, this user, besides root.
    Owner(u32),
    /// A group or everyone.
    Many,
}

fn writers(stat: &Stat) -> Writers {
    let mode = stat.st_mode;
    if mode & 0o022 != 0 {
        return Writers::Many;
    }
    let uid = stat.st_uid;
    if uid == 0 || uid == nix::unistd::geteuid().as_raw() {
        Writers::Trusted
    } else {
        Writers::Owner(uid)
    }
}

/// Whether a symlink placed in a directory with `writers` may be followed to something owned
/// by `owner` (`None`: nothing there): only where it cannot lead its writer anywhere they could
/// not write themselves.
fn may_follow(writers: Writers, owner: Option<u32>) -> Result<(), &'static str> {
    match (writers, owner) {
        (Writers::Trusted, _) => Ok(()),
        (Writers::Owner(u), Some(o)) if u == o => Ok(()),
        (Writers::Owner(_), Some(_)) => {
            Err("is a symlink, placed by another user, to something that user does not own")
        }
        (Writers::Owner(_), None) => {
            Err("is a symlink, placed by another user, to something that does not exist")
        }
        (Writers::Many, _) => Err("is a symlink in a directory that a group or everyone can write"),
    }
}

/// A directory, open.
#[derive(Debug, Clone)]
struct Dir {
    fd: Arc<OwnedFd>,
    /// Its path with no symlinks in it.
    path: PathBuf,
    stat: Stat,
}

/// A path found once: its directory open and pinned, its name in it. Every read, write and
/// restore goes through the open directory, never through the path again.
#[derive(Debug)]
pub struct Pinned {
    /// The path as given.
    original: PathBuf,
    dir: Dir,
    name: OsString,
}

/// A new file, complete and synced beside its target, not yet swapped in; removed if dropped.
#[derive(Debug)]
pub struct Staged {
    dir: Arc<OwnedFd>,
    name: OsString,
    id: FileId,
    hash: String,
    armed: bool,
}

impl Staged {
    /// What the staged file is: record it before [`Pinned::swap_in`].
    pub fn written(&self) -> Written {
        Written {
            hash: self.hash.clone(),
            file: self.id,
        }
    }
}

impl Drop for Staged {
    /// Removes the staged file, if what has that name is still it (after an undone swap it may
    /// be someone else's file, which stays).
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let dir = self.dir.as_fd();
        let ours = rustix::fs::statat(dir, self.name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|st| FileId::of(&st) == self.id);
        if ours {
            let _ = rustix::fs::unlinkat(dir, self.name.as_os_str(), AtFlags::empty());
        }
    }
}

impl Pinned {
    /// Finds `path`: opens its directory (following only symlinks that cannot redirect, see the
    /// module doc) and, when the name is such a symlink, the directory of the file it leads to.
    pub fn locate(path: &Path) -> Result<Self, FsError> {
        let mut hops = 0;
        let (dir, name) = locate_at(path, &mut hops)?;
        Ok(Self {
            original: path.to_path_buf(),
            dir,
            name,
        })
    }

    /// Finds a backup's path again for a restore in another process (after a crash): the
    /// directory must be the one the backup was taken in.
    pub fn relocate(backup: &Backup) -> Result<Self, FsError> {
        let pinned = Self::locate(&backup.original)?;
        let same_dir = match backup.dir {
            Some(id) => id == FileId::of(&pinned.dir.stat),
            None => true,
        };
        let same_name = match &backup.resolved {
            Some(r) => r.file_name() == Some(pinned.name.as_os_str()),
            None => true,
        };
        if !same_dir || !same_name {
            return Err(FsError::Unsafe {
                path: backup.original.clone(),
                reason: "no longer leads to the file that was backed up (a directory or symlink on the way was replaced)".into(),
            });
        }
        Ok(pinned)
    }

    /// The file this path resolved to.
    pub fn resolved(&self) -> PathBuf {
        self.dir.path.join(&self.name)
    }

    /// Whether someone other than root and nginx-medic can change the directory's entries.
    pub fn shared(&self) -> bool {
        writers(&self.dir.stat) != Writers::Trusted
    }

    /// The file there now (`None`: nothing there), opened `O_NOFOLLOW`, checked and read in
    /// bounded memory.
    pub fn current(&self) -> Result<Option<Current>, FsError> {
        let path = self.resolved();
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(
            self.dir.fd.as_fd(),
            self.name.as_os_str(),
            flags,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::LOOP) => {
                return Err(FsError::Unsafe {
                    path,
                    reason: "turned into a symlink after it was found".into(),
                })
            }
            Err(e) => return Err(read_err(&path, e.into())),
        };
        let stat = rustix::fs::fstat(&fd).map_err(|e| read_err(&path, e.into()))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(FsError::Unsafe {
                path,
                reason: "is not a regular file (a device, a FIFO or a socket)".into(),
            });
        }
        if self.shared() && stat.st_nlink > 1 {
            return Err(FsError::Unsafe {
                path,
                reason: "has other hard links, in a directory another user can write".into(),
            });
        }
        let size = u64::try_from(stat.st_size).unwrap_or(0);
        if size > MAX_SETTINGS_FILE {
            return Err(read_err(&path, too_big(size)));
        }
        let xattrs = read_xattrs(&fd).map_err(|e| read_err(&path, e))?;
        let mut bytes = Vec::new();
        File::from(fd)
            .take(MAX_SETTINGS_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| read_err(&path, e))?;
        if bytes.len() as u64 > MAX_SETTINGS_FILE {
            return Err(read_err(&path, too_big(bytes.len() as u64)));
        }
        Ok(Some(Current {
            hash: bytes_hash(&bytes),
            bytes,
            id: FileId::of(&stat),
            uid: stat.st_uid,
            gid: stat.st_gid,
            mode: stat.st_mode & 0o7777,
            xattrs,
        }))
    }

    /// Copies the file byte for byte into `dir` (created with mode 0700 if missing): named after
    /// the original path (`etc_nginx_nginx.conf`, with `.1`, `.2`, … when taken), mode 0600,
    /// synced before this returns. A missing file is recorded as such.
    pub fn backup(&self, dir: &Path) -> Result<Backup, FsError> {
        let current = self.current()?;
        let mut backup = Backup {
            original: self.original.clone(),
            copy: None,
            hash: None,
            existed: false,
            uid: 0,
            gid: 0,
            mode: 0,
            resolved: Some(self.resolved()),
            dir: Some(FileId::of(&self.dir.stat)),
            file: None,
            xattrs: Vec::new(),
            written: Vec::new(),
        };
        let Some(current) = current else {
            return Ok(backup);
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| write_err(dir, source))?;
        let base = readable_name(&self.original);
        let (copy, mut file) = create_unique(dir, |attempt| match attempt {
            0 => base.clone(),
            n => format!("{base}.{n}"),
        })?;
        let mut guard = RemoveOnDrop(Some(copy.clone()));
        file.write_all(&current.bytes)
            .and_then(|()| file.sync_all())
            .map_err(|source| write_err(&copy, source))?;
        sync_dir_path(dir)?;
        guard.disarm();
        backup.copy = Some(copy);
        backup.hash = Some(current.hash);
        backup.existed = true;
        backup.uid = current.uid;
        backup.gid = current.gid;
        backup.mode = current.mode;
        backup.file = Some(current.id);
        backup.xattrs = current.xattrs;
        Ok(backup)
    }

    /// Writes `bytes` to a new file beside the target with `meta` (or the new-file default),
    /// synced, not yet swapped in.
    fn stage(&self, bytes: &[u8], meta: Option<Meta>) -> Result<Staged, FsError> {
        let dirfd = self.dir.fd.as_fd();
        let target = self.resolved();
        let pid = std::process::id();
        let base = self.name.to_string_lossy();
        let mut created = None;
        for _ in 0..NAME_ATTEMPTS {
            let name = OsString::from(format!(".{base}.medic-{pid}-{}.tmp", next_counter()));
            let flags =
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            match rustix::fs::openat(dirfd, name.as_os_str(), flags, Mode::from_raw_mode(0o600)) {
                Ok(fd) => {
                    created = Some((name, fd));
                    break;
                }
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(write_err(&target, e.into())),
            }
        }
        let Some((name, fd)) = created else {
            return Err(write_err(
                &target,
                io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("no free temp file name after {NAME_ATTEMPTS} attempts"),
                ),
            ));
        };
        let tmp = self.dir.path.join(&name);
        let id = match rustix::fs::fstat(&fd) {
            Ok(stat) => FileId::of(&stat),
            Err(e) => {
                let _ = rustix::fs::unlinkat(dirfd, name.as_os_str(), AtFlags::empty());
                return Err(write_err(&tmp, e.into()));
            }
        };
        let staged = Staged {
            dir: Arc::clone(&self.dir.fd),
            name,
            id,
            hash: bytes_hash(bytes),
            armed: true,
        };
        let meta = meta.or_else(|| {
            // A new file: root-owned when we are root, else left to whoever we are.
            nix::unistd::geteuid().is_root().then_some(Meta {
                uid: 0,
                gid: 0,
                mode: NEW_FILE_MODE,
                xattrs: Vec::new(),
            })
        });
        let mut file = File::from(fd);
        file.write_all(bytes).map_err(|e| write_err(&tmp, e))?;
        let (mode, xattrs) = match &meta {
            Some(m) => {
                // Owner first: chown clears setuid/setgid bits, chmod then sets them again.
                rustix::fs::fchown(
                    &file,
                    Some(rustix::fs::Uid::from_raw(m.uid)),
                    Some(rustix::fs::Gid::from_raw(m.gid)),
                )
                .map_err(|e| write_err(&tmp, e.into()))?;
                (m.mode, m.xattrs.as_slice())
            }
            None => (NEW_FILE_MODE, &[][..]),
        };
        rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))
            .map_err(|e| write_err(&tmp, e.into()))?;
        write_xattrs(&file, xattrs).map_err(|e| write_err(&tmp, e))?;
        file.sync_all().map_err(|e| write_err(&tmp, e))?;
        fail_point!("fs.after-write", |_| Err(write_err(
            &tmp,
            crate::failpoint::injected("fs.after-write")
        )));
        Ok(staged)
    }

    /// Stages `bytes` to replace the file, which must still be `expect` (`None`: no file), with
    /// the old file's owner, mode and attributes (`meta`: those of the file to be replaced, or
    /// `None` for a new file). Record [`Staged::written`], then call [`Pinned::swap_in`].
    pub fn stage_edit(&self, bytes: &[u8], like: Option<&Backup>) -> Result<Staged, FsError> {
        let meta = like.filter(|b| b.existed).map(|b| Meta {
            uid: b.uid,
            gid: b.gid,
            mode: b.mode,
            xattrs: b.xattrs.clone(),
        });
        self.stage(bytes, meta)
    }

    /// Swaps `staged` in for the file there, which must be `expect`'s file with `expect`'s hash
    /// (`None`: no file there): checked on the file swapped out, and the swap undone when it is
    /// not. Then the directory is synced.
    pub fn swap_in(
        &self,
        mut staged: Staged,
        expect: Option<(FileId, &str)>,
    ) -> Result<(), FsError> {
        let dirfd = self.dir.fd.as_fd();
        let target = self.resolved();
        let (tmp, name) = (staged.name.as_os_str(), self.name.as_os_str());
        match expect {
            Some((id, hash)) => {
                match rustix::fs::renameat_with(dirfd, tmp, dirfd, name, RenameFlags::EXCHANGE) {
                    Ok(()) => {}
                    // A file system without RENAME_EXCHANGE: check, then rename over (the
                    // rename still cannot leave the pinned directory).
                    Err(Errno::INVAL) => {
                        if !self.is(name, id, hash) {
                            return Err(FsError::Raced {
                                path: target,
                                what: "was replaced",
                            });
                        }
                        rustix::fs::renameat(dirfd, tmp, dirfd, name)
                            .map_err(|e| write_err(&target, e.into()))?;
                        staged.armed = false;
                        return self.after_swap();
                    }
                    Err(Errno::NOENT) => {
                        return Err(FsError::Raced {
                            path: target,
                            what: "was removed",
                        })
                    }
                    Err(e) => return Err(write_err(&target, e.into())),
                }
                // The old file is now at the temp name, ours at the target's.
                if !self.is(tmp, id, hash) {
                    let undone =
                        rustix::fs::renameat_with(dirfd, tmp, dirfd, name, RenameFlags::EXCHANGE);
                    if let Err(e) = undone {
                        // Ours stays at the name; theirs is kept at the temp name.
                        staged.armed = false;
                        return Err(write_err(&target, e.into()));
                    }
                    return Err(FsError::Raced {
                        path: target,
                        what: "was replaced",
                    });
                }
                // What remains at the temp name is the old file.
                rustix::fs::unlinkat(dirfd, tmp, AtFlags::empty())
                    .map_err(|e| write_err(&target, e.into()))?;
                staged.armed = false;
            }
            None => match rename_noreplace(dirfd, tmp, name) {
                Ok(()) => staged.armed = false,
                Err(Errno::EXIST) => {
                    return Err(FsError::Raced {
                        path: target,
                        what: "appeared",
                    })
                }
                Err(e) => return Err(write_err(&target, e.into())),
            },
        }
        self.after_swap()
    }

    fn after_swap(&self) -> Result<(), FsError> {
        fail_point!("fs.after-rename", |_| Err(write_err(
            &self.resolved(),
            crate::failpoint::injected("fs.after-rename")
        )));
        sync_dir(&self.dir)
    }

    /// Whether `name` in the directory is the regular file `id` holding bytes hashing to `hash`.
    fn is(&self, name: &OsStr, id: FileId, hash: &str) -> bool {
        let probe = Pinned {
            original: self.original.clone(),
            dir: self.dir.clone(),
            name: name.to_os_string(),
        };
        matches!(probe.current(), Ok(Some(c)) if c.id == id && c.hash == hash)
    }

    /// Puts back what `backup` saved (the same bytes, owner, mode and attributes, atomically),
    /// or removes the file when it did not exist before, but only over what nginx-medic wrote
    /// ([`Backup::written`]): a file changed by someone else since is left alone and reported.
    ///
    /// The copy is checked against the recorded hash first, so a damaged backup is refused
    /// rather than written over the live file.
    pub fn restore(&self, backup: &Backup) -> Result<Restored, FsError> {
        let now = self.current()?;
        let as_before = match (&now, backup.existed) {
            (None, false) => true,
            (Some(c), true) => {
                // the same bytes, whichever file holds them (a restore makes a new one)
                Some(&c.hash) == backup.hash.as_ref()
            }
            _ => false,
        };
        if as_before {
            return Ok(Restored::AsBefore);
        }
        let mine = now.as_ref().and_then(|c| {
            backup
                .written
                .iter()
                .rev()
                .find(|w| w.file == c.id && w.hash == c.hash)
        });
        let Some(ours) = mine else {
            return Ok(Restored::LeftAlone {
                reason: format!(
                    "changed by someone else since nginx-medic wrote it (now {}, nginx-medic wrote {})",
                    describe(now.as_ref().map(|c| c.hash.as_str())),
                    match backup.written.last() {
                        Some(w) => describe(Some(&w.hash)),
                        None => "nothing".into(),
                    }
                ),
            });
        };
        let expect = Some((ours.file, ours.hash.as_str()));
        let (Some(copy), Some(expected), true) = (&backup.copy, &backup.hash, backup.existed)
        else {
            return self.remove(ours).map(|()| Restored::Removed);
        };
        let bytes = read_private(copy)?;
        let found = bytes_hash(&bytes);
        if &found != expected {
            return Err(FsError::BackupDamaged {
                original: backup.original.clone(),
                copy: copy.clone(),
                expected: expected.clone(),
                found,
            });
        }
        let staged = self.stage_edit(&bytes, Some(backup))?;
        match self.swap_in(staged, expect) {
            Ok(()) => Ok(Restored::Restored),
            Err(FsError::Raced { what, .. }) => Ok(Restored::LeftAlone {
                reason: format!("{what} during the restore"),
            }),
            Err(e) => Err(e),
        }
    }

    /// Removes nginx-medic's file `ours` from the directory: moved aside first, checked, and put
    /// back when it is not ours after all.
    fn remove(&self, ours: &Written) -> Result<(), FsError> {
        let dirfd = self.dir.fd.as_fd();
        let target = self.resolved();
        let aside = OsString::from(format!(
            ".{}.medic-{}-{}.old",
            self.name.to_string_lossy(),
            std::process::id(),
            next_counter()
        ));
        rustix::fs::renameat_with(
            dirfd,
            self.name.as_os_str(),
            dirfd,
            aside.as_os_str(),
            RenameFlags::NOREPLACE,
        )
        .map_err(|e| write_err(&target, e.into()))?;
        if !self.is(&aside, ours.file, &ours.hash) {
            rustix::fs::renameat_with(
                dirfd,
                aside.as_os_str(),
                dirfd,
                self.name.as_os_str(),
                RenameFlags::NOREPLACE,
            )
            .map_err(|e| write_err(&target, e.into()))?;
            return Err(FsError::Raced {
                path: target,
                what: "was replaced",
            });
        }
        rustix::fs::unlinkat(dirfd, aside.as_os_str(), AtFlags::empty())
            .map_err(|e| write_err(&target, e.into()))?;
        sync_dir(&self.dir)
    }
}

/// Renames `from` to `to` in the directory unless `to` exists (`EEXIST`); where the file system
/// has no `RENAME_NOREPLACE`, a hard link and an unlink do the same.
fn rename_noreplace(
    dir: std::os::fd::BorrowedFd<'_>,
    from: &OsStr,
    to: &OsStr,
) -> Result<(), Errno> {
    match rustix::fs::renameat_with(dir, from, dir, to, RenameFlags::NOREPLACE) {
        Err(Errno::INVAL) => {
            rustix::fs::linkat(dir, from, dir, to, AtFlags::empty())?;
            rustix::fs::unlinkat(dir, from, AtFlags::empty())
        }
        done => done,
    }
}

/// `sha256 0123456789ab…` or `no file`, for messages.
pub fn describe(hash: Option<&str>) -> String {
    match hash {
        Some(h) => format!("sha256 {}…", h.get(..12).unwrap_or(h)),
        None => "no file".to_string(),
    }
}

/// Finds the directory and name `path` leads to, following only the symlinks [`may_follow`]
/// allows.
fn locate_at(path: &Path, hops: &mut u32) -> Result<(Dir, OsString), FsError> {
    let name = match path.components().next_back() {
        Some(Component::Normal(name)) => name.to_os_string(),
        _ => {
            return Err(FsError::NotAFile {
                path: path.to_path_buf(),
            })
        }
    };
    let dir = open_dir(parent_of(path)?, hops)?;
    let link = match rustix::fs::statat(dir.fd.as_fd(), name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
    {
        Ok(st) => FileType::from_raw_mode(st.st_mode) == FileType::Symlink,
        Err(Errno::NOENT) => false,
        Err(e) => return Err(read_err(path, e.into())),
    };
    if !link {
        return Ok((dir, name));
    }
    let next = follow(&dir, &name, path, hops)?;
    let (next_dir, next_name) = locate_at(&next, hops)?;
    let owner = match rustix::fs::statat(
        next_dir.fd.as_fd(),
        next_name.as_os_str(),
        AtFlags::SYMLINK_NOFOLLOW,
    ) {
        Ok(st) => Some(st.st_uid),
        Err(Errno::NOENT) => None,
        Err(e) => return Err(read_err(&next, e.into())),
    };
    may_follow(writers(&dir.stat), owner).map_err(|reason| FsError::Unsafe {
        path: path.to_path_buf(),
        reason: reason.into(),
    })?;
    Ok((next_dir, next_name))
}

/// Where the symlink `name` in `dir` points, as a path.
fn follow(dir: &Dir, name: &OsStr, path: &Path, hops: &mut u32) -> Result<PathBuf, FsError> {
    *hops += 1;
    if *hops > MAX_SYMLINKS {
        return Err(read_err(path, Errno::LOOP.into()));
    }
    let target = rustix::fs::readlinkat(dir.fd.as_fd(), name, Vec::new())
        .map_err(|e| read_err(path, e.into()))?;
    let target = Path::new(OsStr::from_bytes(target.as_bytes()));
    Ok(dir.path.join(target))
}

/// Opens the directory `path` without following symlinks (`openat2`), or, when there are
/// symlinks on the way or `openat2` is not there, one component at a time, following a symlink
/// only as [`may_follow`] allows.
fn open_dir(path: &Path, hops: &mut u32) -> Result<Dir, FsError> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| read_err(path, e))?
            .join(path)
    };
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let resolve = ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    match rustix::fs::openat2(rustix::fs::CWD, &abs, flags, Mode::empty(), resolve) {
        Ok(fd) if !abs.components().any(|c| c == Component::ParentDir) => {
            return dir_of(fd, abs.clone(), &abs)
        }
        // `..` is fine to the kernel; the walk keeps the path it names right.
        Ok(_) | Err(Errno::LOOP | Errno::NOSYS | Errno::PERM | Errno::INVAL | Errno::XDEV) => {}
        Err(e) => return Err(read_err(path, e.into())),
    }
    let nofollow = flags | OFlags::NOFOLLOW;
    let root = rustix::fs::openat(rustix::fs::CWD, "/", nofollow, Mode::empty())
        .map_err(|e| read_err(path, e.into()))?;
    let mut dir = dir_of(root, PathBuf::from("/"), path)?;
    for component in abs.components() {
        let name = match component {
            Component::Normal(name) => name,
            Component::ParentDir => {
                let up = rustix::fs::openat(dir.fd.as_fd(), "..", nofollow, Mode::empty())
                    .map_err(|e| read_err(path, e.into()))?;
                let mut real = dir.path.clone();
                real.pop();
                dir = dir_of(up, real, path)?;
                continue;
            }
            _ => continue,
        };
        match rustix::fs::openat(dir.fd.as_fd(), name, nofollow, Mode::empty()) {
            Ok(fd) => {
                let real = dir.path.join(name);
                dir = dir_of(fd, real, path)?;
            }
            Err(Errno::LOOP | Errno::NOTDIR) => {
                let st = rustix::fs::statat(dir.fd.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| read_err(path, e.into()))?;
                if FileType::from_raw_mode(st.st_mode) != FileType::Symlink {
                    return Err(read_err(path, Errno::NOTDIR.into()));
                }
                let next = follow(&dir, name, path, hops)?;
                let next_dir = open_dir(&next, hops)?;
                may_follow(writers(&dir.stat), Some(next_dir.stat.st_uid)).map_err(|reason| {
                    FsError::Unsafe {
                        path: dir.path.join(name),
                        reason: reason.into(),
                    }
                })?;
                dir = next_dir;
            }
            Err(e) => return Err(read_err(path, e.into())),
        }
    }
    Ok(dir)
}

fn dir_of(fd: OwnedFd, path: PathBuf, asked: &Path) -> Result<Dir, FsError> {
    let stat = rustix::fs::fstat(&fd).map_err(|e| read_err(asked, e.into()))?;
    Ok(Dir {
        fd: Arc::new(fd),
        path,
        stat,
    })
}

/// The ACL and `security.*` attributes of the open file (none where the file system has none).
fn read_xattrs(fd: impl AsFd) -> io::Result<Vec<Xattr>> {
    let fd = fd.as_fd();
    let size = match rustix::fs::flistxattr_query(fd) {
        Ok(size) => size,
        Err(Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut names = vec![0u8; size];
    let len = rustix::fs::flistxattr(fd, &mut names[..])?;
    names.truncate(len);
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        if !(name.starts_with("security.") || name == ACCESS_ACL) {
            continue;
        }
        let size = match rustix::fs::fgetxattr_query(fd, name.as_str()) {
            Ok(size) => size,
            Err(Errno::NODATA) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut value = vec![0u8; size];
        let len = rustix::fs::fgetxattr(fd, name.as_str(), &mut value[..])?;
        value.truncate(len);
        out.push(Xattr { name, value });
    }
    Ok(out)
}

/// Gives the open file exactly `xattrs` among the kept ones: an ACL inherited from the
/// directory's default that the original did not have is removed.
fn write_xattrs(fd: impl AsFd, xattrs: &[Xattr]) -> io::Result<()> {
    let fd = fd.as_fd();
    if !xattrs.iter().any(|x| x.name == ACCESS_ACL) {
        match rustix::fs::fremovexattr(fd, ACCESS_ACL) {
            Ok(()) | Err(Errno::NODATA | Errno::NOTSUP) => {}
            Err(e) => return Err(e.into()),
        }
    }
    for x in xattrs {
        rustix::fs::fsetxattr(
            fd,
            x.name.as_str(),
            &x.value,
            rustix::fs::XattrFlags::empty(),
        )?;
    }
    Ok(())
}

/// Reads one of nginx-medic's own files (a backup copy) without following a symlink.
fn read_private(path: &Path) -> Result<Vec<u8>, FsError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| read_err(path, e))?;
    let meta = file.metadata().map_err(|e| read_err(path, e))?;
    if !meta.file_type().is_file() || meta.len() > MAX_SETTINGS_FILE {
        return Err(FsError::Unsafe {
            path: path.to_path_buf(),
            reason: format!("is not a regular file of at most {MAX_SETTINGS_FILE} bytes"),
        });
    }
    let mut bytes = Vec::new();
    file.take(MAX_SETTINGS_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| read_err(path, e))?;
    Ok(bytes)
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
            .custom_flags(nix::libc::O_NOFOLLOW)
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

/// Makes a rename or removal in the open directory durable.
fn sync_dir(dir: &Dir) -> Result<(), FsError> {
    fail_point!("fs.before-dir-fsync", |_| Err(write_err(
        &dir.path,
        crate::failpoint::injected("fs.before-dir-fsync")
    )));
    rustix::fs::fsync(dir.fd.as_fd()).map_err(|e| write_err(&dir.path, e.into()))
}

/// Makes a new entry in one of nginx-medic's own directories durable.
fn sync_dir_path(dir: &Path) -> Result<(), FsError> {
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

/// Files no reader of an app's files may hang on or fill memory with, for tests (issue 13,
/// acceptance 6): each kind made at a path in a fresh root-owned directory (so a symlink in
/// it is followed, as one in an app's own directory to its own file would be).
#[cfg(test)]
pub mod hostile {
    use std::path::{Path, PathBuf};

    /// The kinds of hostile file.
    pub const KINDS: [&str; 4] = ["symlink to /dev/zero", "char device", "fifo", "2 GB sparse"];

    /// A directory removed on drop.
    pub struct Dir(pub PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A fresh directory, mode 0755, owned by the test's user (root).
    pub fn dir(tag: &str) -> Dir {
        use std::os::unix::fs::PermissionsExt;
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "nginx-medic-hostile-{tag}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Dir(dir)
    }

    /// Makes `path` a file of `kind` (one of [`KINDS`]).
    pub fn make(kind: &str, path: &Path) {
        use rustix::fs::{FileType, Mode, CWD};
        match kind {
            "symlink to /dev/zero" => std::os::unix::fs::symlink("/dev/zero", path).unwrap(),
            // the device /dev/zero is, as a node of its own
            "char device" => rustix::fs::mknodat(
                CWD,
                path,
                FileType::CharacterDevice,
                Mode::from_raw_mode(0o644),
                rustix::fs::makedev(1, 5),
            )
            .unwrap(),
            "fifo" => rustix::fs::mknodat(CWD, path, FileType::Fifo, Mode::from_raw_mode(0o644), 0)
                .unwrap(),
            "2 GB sparse" => std::fs::File::create(path)
                .unwrap()
                .set_len(2 << 30)
                .unwrap(),
            other => panic!("no hostile kind `{other}`"),
        }
    }

    /// Runs `read` on another thread and panics unless it returns within `limit`.
    pub fn within<T: Send + 'static>(
        limit: std::time::Duration,
        what: &str,
        read: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(read());
        });
        rx.recv_timeout(limit)
            .unwrap_or_else(|_| panic!("{what}: not read within {limit:?}"))
    }
}

/// A race for tests: the owner of a `.env`'s directory swaps the file for a symlink to a
/// canary of root's, once every other round at a random moment within it, while `round` acts
/// on the `.env`; the canary's bytes and owner are checked after every round.
#[cfg(test)]
pub mod race {
    use std::fs;
    use std::os::unix::fs::{chown, symlink, MetadataExt, PermissionsExt};
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// Where to race: tmpfs when there is one (thousands of fsyncs on a disk take minutes).
    pub fn scratch() -> PathBuf {
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        }
    }

    /// Between two steps, as the directory's owner: moves the `.env` aside and puts a symlink
    /// to the canary in its place.
    pub fn link(env: &Path) {
        let (real, canary) = (env.with_file_name(".held"), canary_of(env));
        let _ = fs::rename(env, real);
        let _ = symlink(canary, env);
    }

    /// Puts the `.env` moved aside by [`link`] back.
    pub fn unlink(env: &Path) {
        if fs::rename(env.with_file_name(".held"), env).is_err() {
            let _ = fs::remove_file(env);
        }
    }

    fn canary_of(env: &Path) -> PathBuf {
        env.parent().and_then(Path::parent).unwrap().join("canary")
    }

    fn canary_state(path: &Path) -> (Vec<u8>, u32, u32, u32) {
        let m = fs::metadata(path).unwrap();
        (fs::read(path).unwrap(), m.uid(), m.gid(), m.mode())
    }

    /// Runs `rounds` rounds of `round(env)` (true: it changed the file) against the swapper;
    /// panics when the canary changed. Returns (rounds that changed the file, swaps made).
    pub fn run(rounds: u32, mut round: impl FnMut(&Path) -> bool) -> (u32, u64) {
        let base = tempfile::tempdir_in(scratch()).unwrap();
        let canary = base.path().join("canary");
        fs::write(&canary, b"root's secret\n").unwrap();
        fs::set_permissions(&canary, fs::Permissions::from_mode(0o600)).unwrap();
        let before = canary_state(&canary);
        let app = base.path().join("app");
        fs::create_dir(&app).unwrap();
        chown(&app, Some(1000), Some(1000)).unwrap();
        let env = app.join(".env");
        fs::write(&env, b"HOST=127.0.0.1\n").unwrap();
        chown(&env, Some(1000), Some(1000)).unwrap();

        let stop = Arc::new(AtomicBool::new(false));
        let now = Arc::new(AtomicU32::new(0));
        let (ready, done) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        // how long a whole round takes, so the swap can land anywhere in it
        let round_us = Arc::new(AtomicU64::new(200));
        let swapper = {
            let (stop, now, round_us) = (stop.clone(), now.clone(), round_us.clone());
            let (ready, done) = (ready.clone(), done.clone());
            let (app, canary) = (app.clone(), canary.clone());
            std::thread::spawn(move || {
                let (env, real, link) = (app.join(".env"), app.join(".real"), app.join(".link"));
                let (mut swaps, mut seen, mut seed) = (0u64, 0u32, 12345u64);
                while !stop.load(Ordering::Relaxed) {
                    let r = now.load(Ordering::Relaxed);
                    if r == seen {
                        std::thread::yield_now();
                        continue;
                    }
                    seen = r;
                    ready.store(r, Ordering::Relaxed);
                    if r % 2 == 1 {
                        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                        let span = round_us.load(Ordering::Relaxed).max(1);
                        let until = Instant::now() + Duration::from_micros((seed >> 33) % span);
                        while Instant::now() < until {
                            std::hint::spin_loop();
                        }
                        let _ = fs::remove_file(&link);
                        let _ = symlink(&canary, &link);
                        if fs::rename(&env, &real).is_ok() {
                            let _ = fs::rename(&link, &env);
                            let _ = fs::rename(&real, &env);
                            swaps += 1;
                        }
                    }
                    // a swap undone over one of the swapper's renames can leave the link: the
                    // swapper puts a file of its own back, as its owner could
                    if !fs::symlink_metadata(&env).is_ok_and(|m| m.is_file()) {
                        let fresh = app.join(".fresh");
                        fs::write(&fresh, b"HOST=127.0.0.1\n").unwrap();
                        chown(&fresh, Some(1000), Some(1000)).unwrap();
                        fs::rename(&fresh, &env).unwrap();
                    }
                    done.store(r, Ordering::Relaxed);
                }
                swaps
            })
        };
        let mut changed = 0;
        let mut broken = None;
        for i in 1..=rounds {
            now.store(i, Ordering::Relaxed);
            while ready.load(Ordering::Relaxed) != i {
                std::thread::yield_now();
            }
            let started = Instant::now();
            if round(&env) {
                changed += 1;
                // a round that went all the way sets the span swaps are spread over
                let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                let avg = round_us.load(Ordering::Relaxed);
                round_us.store((avg * 7 + took) / 8, Ordering::Relaxed);
            }
            // the round's swap is over before the next round starts
            while done.load(Ordering::Relaxed) != i {
                std::thread::yield_now();
            }
            if canary_state(&canary) != before {
                broken = Some(i);
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        let swaps = swapper.join().unwrap();
        assert_eq!(broken, None, "the canary changed in that round");
        (changed, swaps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::Permissions;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

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
        // The target is a directory: refused before anything is written.
        let target = dir.path().join("sub");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("inside"), b"x").unwrap();
        let err = atomic_write(&target, b"data").unwrap_err();
        assert!(matches!(err, FsError::Unsafe { .. }), "{err:?}");
        assert_eq!(entries(dir.path()), vec!["sub"]);
        // A missing directory fails before anything is created.
        let err = atomic_write(&dir.path().join("missing/f"), b"data").unwrap_err();
        assert!(matches!(err, FsError::Read { .. }), "{err:?}");
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

        // What nginx-medic writes is put back by the restore.
        let mut b = b;
        let pinned = Pinned::locate(&f).unwrap();
        let staged = pinned.stage_edit(b"clobbered", Some(&b)).unwrap();
        b.written.push(staged.written());
        pinned
            .swap_in(staged, Some((b.file.unwrap(), b.hash.as_deref().unwrap())))
            .unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"clobbered");
        assert_eq!(owner_mode(&f), before);
        assert_eq!(restore(&b).unwrap(), Restored::Restored);
        assert_eq!(fs::read(&f).unwrap(), bytes);
        assert_eq!(owner_mode(&f), before);
        assert_eq!(entries(dir.path()), vec!["nginx.conf", "state"]);
        // Restoring again finds it as before.
        assert_eq!(restore(&b).unwrap(), Restored::AsBefore);
    }

    /// Writes `bytes` over `path` as a transaction does, recording the write in `b`.
    fn medic_write(b: &mut Backup, path: &Path, bytes: &[u8]) {
        let pinned = Pinned::locate(path).unwrap();
        let expect = match b.written.last() {
            Some(w) => Some((w.file, w.hash.clone())),
            None => b.file.zip(b.hash.clone()),
        };
        let staged = pinned.stage_edit(bytes, Some(b)).unwrap();
        b.written.push(staged.written());
        pinned
            .swap_in(staged, expect.as_ref().map(|(id, h)| (*id, h.as_str())))
            .unwrap();
    }

    #[test]
    fn restore_of_missing_file_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("new.conf");
        let mut b = backup(&f, &dir.path().join("b")).unwrap();
        assert!(!b.existed);
        assert_eq!(b.copy, None);
        medic_write(&mut b, &f, b"created later");
        assert_eq!(restore(&b).unwrap(), Restored::Removed);
        assert!(!f.exists());
        // Restoring again is fine.
        assert_eq!(restore(&b).unwrap(), Restored::AsBefore);
    }

    #[test]
    fn a_file_someone_changed_after_the_write_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.conf");
        fs::write(&f, b"original").unwrap();
        let mut b = backup(&f, &dir.path().join("b")).unwrap();
        medic_write(&mut b, &f, b"medic's");
        // An admin edits in place, then another rewrites by rename: both are kept.
        fs::write(&f, b"admin's").unwrap();
        let Restored::LeftAlone { reason } = restore(&b).unwrap() else {
            panic!("restored over an admin's edit")
        };
        assert!(
            reason.starts_with("changed by someone else since nginx-medic wrote it (now sha256 "),
            "{reason}"
        );
        assert_eq!(fs::read(&f).unwrap(), b"admin's");
        let other = dir.path().join("other");
        fs::write(&other, b"medic's").unwrap(); // the same bytes, another file
        fs::rename(&other, &f).unwrap();
        assert!(matches!(restore(&b).unwrap(), Restored::LeftAlone { .. }));
        assert_eq!(fs::read(&f).unwrap(), b"medic's");
        // A file nginx-medic created and someone then removed is not recreated.
        let new = dir.path().join("new.conf");
        let mut nb = backup(&new, &dir.path().join("b")).unwrap();
        medic_write(&mut nb, &new, b"x");
        fs::write(&new, b"someone's").unwrap();
        assert!(matches!(restore(&nb).unwrap(), Restored::LeftAlone { .. }));
        assert_eq!(fs::read(&new).unwrap(), b"someone's");
    }

    #[test]
    fn a_swap_checks_the_file_it_replaces_and_undoes_itself() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.conf");
        fs::write(&f, b"original").unwrap();
        let pinned = Pinned::locate(&f).unwrap();
        let seen = pinned.current().unwrap().unwrap();
        fs::write(dir.path().join("x"), b"swapped in").unwrap();
        fs::rename(dir.path().join("x"), &f).unwrap();
        let staged = pinned.stage(b"new", None).unwrap();
        let e = pinned
            .swap_in(staged, Some((seen.id, seen.hash.as_str())))
            .unwrap_err();
        assert!(matches!(e, FsError::Raced { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!(
                "`{}` was replaced while nginx-medic was changing it; left as it is now",
                f.display()
            )
        );
        assert_eq!(fs::read(&f).unwrap(), b"swapped in");
        assert_eq!(entries(dir.path()), vec!["a.conf"]);
        // A file that appears where none was expected is not replaced either.
        let n = dir.path().join("n.conf");
        let pinned = Pinned::locate(&n).unwrap();
        let staged = pinned.stage(b"new", None).unwrap();
        fs::write(&n, b"theirs").unwrap();
        assert!(matches!(
            pinned.swap_in(staged, None),
            Err(FsError::Raced {
                what: "appeared",
                ..
            })
        ));
        assert_eq!(fs::read(&n).unwrap(), b"theirs");
        assert_eq!(entries(dir.path()), vec!["a.conf", "n.conf"]);
    }

    #[test]
    fn non_regular_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = atomic_write(&fifo, b"x").unwrap_err();
        assert!(
            e.to_string()
                .contains("is not a regular file (a device, a FIFO or a socket); refused"),
            "{e}"
        );
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        assert!(matches!(
            backup(&sub, &dir.path().join("b")),
            Err(FsError::Unsafe { .. })
        ));
    }

    #[test]
    fn symlinks_are_followed_only_where_they_cannot_redirect() {
        if !is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let canary = dir.path().join("canary");
        fs::write(&canary, b"root's").unwrap();
        // An app user's directory: its own symlinks lead to its own files only.
        let app = dir.path().join("app");
        fs::create_dir(&app).unwrap();
        std::os::unix::fs::chown(&app, Some(1000), Some(1000)).unwrap();
        let env = app.join(".env");
        symlink(&canary, &env).unwrap();
        let e = atomic_write(&env, b"HOST=0.0.0.0\n").unwrap_err();
        assert!(
            e.to_string().contains("is a symlink, placed by another user, to something that user does not own; refused"),
            "{e}"
        );
        let e = read_settings_file(&env).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        assert_eq!(fs::read(&canary).unwrap(), b"root's");
        // Its own file through its own symlink (a deploy's `shared/.env`) is fine.
        let shared = app.join("shared.env");
        fs::write(&shared, b"HOST=127.0.0.1\n").unwrap();
        std::os::unix::fs::chown(&shared, Some(1000), Some(1000)).unwrap();
        fs::remove_file(&env).unwrap();
        symlink("shared.env", &env).unwrap();
        assert_eq!(read_settings_file(&env).unwrap(), "HOST=127.0.0.1\n");
        atomic_write(&env, b"HOST=127.0.0.2\n").unwrap();
        assert_eq!(fs::read(&shared).unwrap(), b"HOST=127.0.0.2\n");
        assert_eq!(owner_mode(&shared).0, 1000);
        // A directory symlink placed by the app user, to root's directory.
        let etc = dir.path().join("etc");
        fs::create_dir(&etc).unwrap();
        fs::write(etc.join(".env"), b"root's").unwrap();
        symlink(&etc, app.join("current")).unwrap();
        let e = atomic_write(&app.join("current/.env"), b"x").unwrap_err();
        assert!(matches!(e, FsError::Unsafe { .. }), "{e:?}");
        assert_eq!(fs::read(etc.join(".env")).unwrap(), b"root's");
        // A hard link to root's file in the app user's directory.
        let linked = app.join("linked.env");
        fs::hard_link(&canary, &linked).unwrap();
        let e = atomic_write(&linked, b"x").unwrap_err();
        assert!(e.to_string().contains("has other hard links"), "{e}");
        assert_eq!(fs::read(&canary).unwrap(), b"root's");
        // Root's own symlinks (nginx's sites-enabled) are followed.
        let enabled = etc.join("enabled");
        symlink(&canary, &enabled).unwrap();
        atomic_write(&enabled, b"new").unwrap();
        assert_eq!(fs::read(&canary).unwrap(), b"new");
    }

    #[test]
    fn acls_and_security_attributes_survive_a_rewrite() {
        if !is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("site.conf");
        fs::write(&f, b"old").unwrap();
        let file = File::open(&f).unwrap();
        // An ACL granting user 33 read (user::rw- user:33:r-- group::r-- mask::r-- other::r--).
        let acl: Vec<u8> = [
            &[2u8, 0, 0, 0][..],
            &[1, 0, 6, 0, 0xff, 0xff, 0xff, 0xff],
            &[2, 0, 4, 0, 33, 0, 0, 0],
            &[4, 0, 4, 0, 0xff, 0xff, 0xff, 0xff],
            &[0x10, 0, 4, 0, 0xff, 0xff, 0xff, 0xff],
            &[0x20, 0, 4, 0, 0xff, 0xff, 0xff, 0xff],
        ]
        .concat();
        let set = |name: &str, value: &[u8]| {
            rustix::fs::fsetxattr(&file, name, value, rustix::fs::XattrFlags::empty())
        };
        if set(ACCESS_ACL, &acl).is_err() || set("security.medic-test", b"label").is_err() {
            return; // a file system without them
        }
        drop(file);
        let before = read_xattrs(File::open(&f).unwrap()).unwrap();
        assert_eq!(before.len(), 2, "{before:?}");
        atomic_write(&f, b"new").unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"new");
        let mut after = read_xattrs(File::open(&f).unwrap()).unwrap();
        let mut before = before;
        after.sort_by(|a, b| a.name.cmp(&b.name));
        before.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(after, before);
    }

    #[test]
    fn damaged_backup_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.conf");
        fs::write(&f, b"original").unwrap();
        let mut b = backup(&f, &dir.path().join("b")).unwrap();
        fs::write(b.copy.as_ref().unwrap(), b"bit rot").unwrap();
        medic_write(&mut b, &f, b"edited");
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

    /// Acceptance: backup, write and restore raced 10,000 times against the owner of the
    /// directory swapping the file for a symlink to root's canary: the canary's bytes and owner
    /// never change, and a restore never lands anywhere but the `.env`.
    #[test]
    fn a_symlink_swap_never_redirects_backup_write_or_restore() {
        if !is_root() {
            return;
        }
        let backups = tempfile::tempdir_in(race::scratch()).unwrap();
        let started = std::time::Instant::now();
        let (mut n, mut restored, mut raced) = (0u32, 0u32, 0u32);
        let (wrote, swaps) = race::run(10_000, |env| {
            n += 1;
            let Ok(pinned) = Pinned::locate(env) else {
                return false;
            };
            let Ok(mut b) = pinned.backup(backups.path()) else {
                return false;
            };
            let expect = b.file.zip(b.hash.clone());
            let bytes = format!("HOST=127.0.{}.{}\n", n / 250, n % 250);
            let Ok(staged) = pinned.stage_edit(bytes.as_bytes(), Some(&b)) else {
                return false;
            };
            b.written.push(staged.written());
            // besides the swapper's swaps at random moments, one at a known step in a round
            // of every four: between the backup and the write, between the write and the restore
            let phase = n % 4;
            if phase == 1 {
                race::link(env);
            }
            let swapped = pinned.swap_in(staged, expect.as_ref().map(|(id, h)| (*id, h.as_str())));
            if phase == 1 {
                race::unlink(env);
            }
            if swapped.is_ok() {
                if phase == 3 {
                    race::link(env);
                }
                match pinned.restore(&b) {
                    Ok(Restored::Restored) => restored += 1,
                    _ => raced += 1,
                }
                if phase == 3 {
                    race::unlink(env);
                    // and the restore once the `.env` is back
                    if let Ok(Restored::Restored) = pinned.restore(&b) {
                        restored += 1;
                    }
                }
            } else {
                raced += 1;
            }
            if let Some(copy) = &b.copy {
                fs::remove_file(copy).unwrap();
            }
            swapped.is_ok()
        });
        eprintln!(
            "10000 rounds in {:?}: {wrote} writes, {restored} restores, {raced} refused mid-change, {swaps} swaps",
            started.elapsed()
        );
        assert!(
            swaps >= 4000 && wrote > 2000 && restored > 2000 && raced >= 4000,
            "the race was run: {swaps} swaps, {wrote} writes, {restored} restores, {raced} refused"
        );
    }
}
