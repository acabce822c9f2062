//! Every change Ferry makes under a filesystem destination's root, done so that it can
//! never land outside the root: no symbolic link under the root is followed, whoever
//! planted it and whenever.
//!
//! Paths are resolved from a descriptor of the root, relative to it, with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`; where the kernel lacks `openat2` (or
//! refuses a path), one component at a time with `openat(O_NOFOLLOW)`, which also finds the
//! component in the way for the message. Files are then created, renamed and removed with
//! the `*at` calls on the directory descriptor so found, so a link swapped in afterwards is
//! not followed either. The root's own path may contain links: it is configuration.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

/// Why a path under the root could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SafeFsError {
    /// Something under the root is in the way (a link, a file where a directory must be,
    /// a directory where a file must be); retrying cannot help.
    #[error("{0}")]
    Refused(String),
    /// The system call failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<Errno> for SafeFsError {
    fn from(errno: Errno) -> Self {
        Self::Io(errno.into())
    }
}

/// A filesystem destination's root, held open.
#[derive(Debug)]
pub struct SafeRoot {
    path: PathBuf,
    directory: OwnedFd,
}

/// One entry of a directory under the root.
#[derive(Debug)]
pub struct DirectoryEntry {
    /// The name as the filesystem holds it.
    pub name: std::ffi::CString,
    /// File, directory, link or something else; a link is never followed.
    pub kind: FileType,
    /// Length in bytes.
    pub size: u64,
    /// Last modification: seconds and nanoseconds since the epoch.
    pub modified: (i64, i32),
}

/// A file being written in the staging directory, not yet at its final path.
#[derive(Debug)]
pub struct Staged {
    directory: OwnedFd,
    name: String,
    /// The open file: written, synced and read back through this descriptor.
    pub file: File,
}

/// Directories are opened only to resolve names beneath them (`O_PATH` needs no read
/// permission); `O_NOFOLLOW` with `O_DIRECTORY` fails on a link instead of following it.
#[cfg(target_os = "linux")]
const DIRECTORY: OFlags = OFlags::PATH.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);
#[cfg(not(target_os = "linux"))]
const DIRECTORY: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

/// What a link in the way is called in a refusal.
const LINK: &str = "is a symbolic link, and Ferry never follows links under a filesystem destination";

/// False once `openat2` turned out to be missing (kernels before 5.6, some seccomp filters).
#[cfg(target_os = "linux")]
static OPENAT2: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// `relative` split at its last `/`: the directory (`""` for the root) and the name.
fn split(relative: &str) -> (&str, &str) {
    relative.rsplit_once('/').unwrap_or(("", relative))
}

impl SafeRoot {
    /// Opens the root at `path`, creating it when missing.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(path)?;
        Self::open_existing(path)
    }

    /// Opens the root at `path`, which must exist (listing creates nothing).
    pub fn open_existing(path: &Path) -> std::io::Result<Self> {
        let directory = rustix::fs::open(path, DIRECTORY.difference(OFlags::NOFOLLOW), Mode::empty())?;
        Ok(Self { path: path.to_owned(), directory })
    }

    /// The root's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A refusal naming what is in the way: `what` completes "`relative` under the root ...".
    fn refused(&self, relative: &str, what: &str) -> SafeFsError {
        SafeFsError::Refused(format!("`{relative}` under the destination root {} {what}", self.path.display()))
    }

    /// Opens the directory at `relative` (`""` is the root), creating missing directories
    /// when `create` is set.
    pub fn directory(&self, relative: &str, create: bool) -> Result<OwnedFd, SafeFsError> {
        let relative = relative.trim_end_matches('/');
        if relative.is_empty() {
            return Ok(self.directory.try_clone()?);
        }
        #[cfg(target_os = "linux")]
        if OPENAT2.load(std::sync::atomic::Ordering::Relaxed) {
            use rustix::fs::ResolveFlags;
            let flags = DIRECTORY.difference(OFlags::NOFOLLOW);
            let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS;
            match rustix::fs::openat2(&self.directory, relative, flags, Mode::empty(), resolve) {
                Ok(directory) => return Ok(directory),
                Err(Errno::NOSYS) => OPENAT2.store(false, std::sync::atomic::Ordering::Relaxed),
                // Missing directories to create, a link or file in the way to name, a
                // concurrent rename (EAGAIN): the walk does each, one component at a time.
                Err(_) => {}
            }
        }
        self.walk(relative, create)
    }

    /// Resolves `relative` one component at a time, never following a link.
    fn walk(&self, relative: &str, create: bool) -> Result<OwnedFd, SafeFsError> {
        let mut directory = self.directory.try_clone()?;
        let mut end = 0;
        for name in relative.split('/') {
            end += name.len() + 1;
            let shown = &relative[..end - 1];
            if name.is_empty() {
                continue;
            }
            if name == "." || name == ".." {
                return Err(self.refused(shown, "is a `.` or `..` segment"));
            }
            let next = match rustix::fs::openat(&directory, name, DIRECTORY, Mode::empty()) {
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&directory, name, Mode::from_bits_truncate(0o777)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(errno) => return Err(self.explain(&directory, shown, name, errno)),
                    }
                    rustix::fs::openat(&directory, name, DIRECTORY, Mode::empty())
                }
                result => result,
            };
            directory = next.map_err(|errno| self.explain(&directory, shown, name, errno))?;
        }
        Ok(directory)
    }

    /// Turns a failed lookup of `name` in `directory` into a refusal naming what is in the way.
    fn explain(&self, directory: &OwnedFd, shown: &str, name: &str, errno: Errno) -> SafeFsError {
        if matches!(errno, Errno::NOTDIR | Errno::LOOP | Errno::EXIST) {
            match rustix::fs::statat(directory, name, AtFlags::SYMLINK_NOFOLLOW)
                .map(|stat| FileType::from_raw_mode(stat.st_mode))
            {
                Ok(FileType::Symlink) => return self.refused(shown, LINK),
                Ok(FileType::Directory) => {}
                Ok(_) => return self.refused(shown, "is a file, so it cannot be a directory"),
                Err(_) => {}
            }
        }
        errno.into()
    }

    /// Creates a new file `name` in the directory `staging`, exclusively.
    pub fn stage(&self, staging: &str, name: String) -> Result<Staged, SafeFsError> {
        let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mode = Mode::from_bits_truncate(0o666);
        let mut directory = self.directory(staging, true)?;
        let file = match rustix::fs::openat(&directory, name.as_str(), flags, mode) {
            // Another shard on the same volume removed the staging directory once it was
            // empty, between our lookup and our create: make it again.
            Err(Errno::NOENT) => {
                directory = self.directory(staging, true)?;
                rustix::fs::openat(&directory, name.as_str(), flags, mode)?
            }
            result => result?,
        };
        Ok(Staged { directory, name, file: File::from(file) })
    }

    /// Renames a staged file to `relative`, creating its directories; a file there is
    /// replaced (a link there is replaced too, never followed).
    pub fn place(&self, staged: &Staged, relative: &str) -> Result<(), SafeFsError> {
        let (parent, name) = split(relative);
        let directory = self.directory(parent, true)?;
        match rustix::fs::renameat(&staged.directory, staged.name.as_str(), &directory, name) {
            Err(Errno::ISDIR | Errno::NOTEMPTY | Errno::EXIST) => {
                Err(self.refused(relative, "is a directory, so a file cannot replace it"))
            }
            result => Ok(result?),
        }
    }

    /// Removes a staged file (after a failure); best effort.
    pub fn discard(&self, staged: &Staged) {
        let _ = rustix::fs::unlinkat(&staged.directory, staged.name.as_str(), AtFlags::empty());
    }

    /// Removes the file at `relative`; a file already gone counts as removed.
    pub fn remove_file(&self, relative: &str) -> Result<(), SafeFsError> {
        let (parent, name) = split(relative);
        let directory = match self.directory(parent, false) {
            Err(SafeFsError::Io(error)) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            result => result?,
        };
        match rustix::fs::unlinkat(&directory, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(Errno::ISDIR) => Err(self.refused(relative, "is a directory, so a file cannot replace it")),
            Err(errno) => Err(errno.into()),
        }
    }

    /// Moves the file at `from` to `to` (both relative), creating `to`'s directories.
    pub fn rename(&self, from: &str, to: &str) -> Result<(), SafeFsError> {
        let (from_parent, from_name) = split(from);
        let (to_parent, to_name) = split(to);
        let source = self.directory(from_parent, false)?;
        let target = self.directory(to_parent, true)?;
        match rustix::fs::renameat(&source, from_name, &target, to_name) {
            Err(Errno::ISDIR | Errno::NOTEMPTY | Errno::EXIST) => {
                Err(self.refused(to, "is a directory, so a file cannot replace it"))
            }
            result => Ok(result?),
        }
    }

    /// Opens the regular file at `relative` for reading.
    pub fn open_file(&self, relative: &str) -> Result<File, SafeFsError> {
        let (parent, name) = split(relative);
        let directory = self.directory(parent, false)?;
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rustix::fs::openat(&directory, name, flags, Mode::empty()) {
            Err(Errno::LOOP) => Err(self.refused(relative, LINK)),
            result => Ok(File::from(result?)),
        }
    }

    /// The entries of the directory at `relative` as `lstat` describes them (links are
    /// reported, never followed); a directory that does not exist is empty.
    pub fn read_directory(&self, relative: &str) -> Result<Vec<DirectoryEntry>, SafeFsError> {
        let directory = match self.directory(relative, false) {
            Err(SafeFsError::Io(error)) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            result => result?,
        };
        let readable =
            rustix::fs::openat(&directory, ".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        let mut entries = Vec::new();
        for entry in rustix::fs::Dir::new(readable)? {
            let entry = entry?;
            let name = entry.file_name();
            if name.to_bytes() == b"." || name.to_bytes() == b".." {
                continue;
            }
            let stat = match rustix::fs::statat(&directory, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => stat,
                // Gone between the directory read and the stat: as if it had not been there.
                Err(Errno::NOENT) => continue,
                Err(errno) => return Err(errno.into()),
            };
            // The fields' integer types differ between architectures.
            #[allow(clippy::unnecessary_cast)]
            let modified = (stat.st_mtime as i64, stat.st_mtime_nsec as i32);
            entries.push(DirectoryEntry {
                name: name.to_owned(),
                kind: FileType::from_raw_mode(stat.st_mode),
                size: u64::try_from(stat.st_size).unwrap_or(0),
                modified,
            });
        }
        Ok(entries)
    }

    /// Removes regular files in the directory `staging` last modified more than
    /// `older_than` ago; returns how many. Links and directories there are left alone.
    pub fn remove_stale(&self, staging: &str, older_than: std::time::Duration) -> usize {
        let Ok(directory) = self.directory(staging, false) else { return 0 };
        let Ok(entries) =
            rustix::fs::openat(&directory, ".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                .and_then(rustix::fs::Dir::new)
        else {
            return 0;
        };
        let now = std::time::SystemTime::now();
        let stale = |name: &std::ffi::CStr| {
            let Ok(stat) = rustix::fs::statat(&directory, name, AtFlags::SYMLINK_NOFOLLOW) else { return false };
            // The field's integer type differs between architectures.
            #[allow(clippy::unnecessary_cast)]
            let seconds = u64::try_from(stat.st_mtime as i64).unwrap_or(0);
            let modified = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds);
            FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile
                && now.duration_since(modified).is_ok_and(|age| age > older_than)
        };
        entries
            .flatten()
            .filter(|entry| stale(entry.file_name()))
            .filter(|entry| rustix::fs::unlinkat(&directory, entry.file_name(), AtFlags::empty()).is_ok())
            .count()
    }

    /// Removes the directory at `relative` if it is empty (and a directory); best effort.
    pub fn remove_empty_directory(&self, relative: &str) {
        let (parent, name) = split(relative.trim_end_matches('/'));
        if let Ok(directory) = self.directory(parent, false) {
            let _ = rustix::fs::unlinkat(&directory, name, AtFlags::REMOVEDIR);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::symlink;

    struct Case {
        _directory: tempfile::TempDir,
        root: SafeRoot,
        outside: PathBuf,
    }

    /// A root with `linked -> <outside>` and `file` planted in it.
    fn case() -> Case {
        let directory = tempfile::tempdir().unwrap();
        let outside = directory.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        let root = SafeRoot::open(&directory.path().join("root")).unwrap();
        symlink(&outside, directory.path().join("root/linked")).unwrap();
        std::fs::write(directory.path().join("root/file"), b"a file").unwrap();
        Case { _directory: directory, root, outside }
    }

    fn outside_is_empty(case: &Case) -> bool {
        std::fs::read_dir(&case.outside).unwrap().next().is_none()
    }

    fn stage(root: &SafeRoot, content: &[u8]) -> Staged {
        let mut staged = root.stage(".ferry-partial", format!("s-{}", content.len())).unwrap();
        staged.file.write_all(content).unwrap();
        staged
    }

    fn refused(result: Result<impl std::fmt::Debug, SafeFsError>) -> String {
        match result {
            Err(SafeFsError::Refused(reason)) => reason,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn files_are_staged_and_placed_with_their_directories() {
        let case = case();
        let staged = stage(&case.root, b"hello");
        case.root.place(&staged, "a/b/c.txt").unwrap();
        assert_eq!(std::fs::read(case.root.path().join("a/b/c.txt")).unwrap(), b"hello");
        let mut read = String::new();
        case.root.open_file("a/b/c.txt").unwrap().read_to_string(&mut read).unwrap();
        assert_eq!(read, "hello");
        case.root.rename("a/b/c.txt", ".trash/a/b/c.txt").unwrap();
        assert!(case.root.path().join(".trash/a/b/c.txt").is_file());
        case.root.remove_file(".trash/a/b/c.txt").unwrap();
        case.root.remove_file(".trash/a/b/c.txt").unwrap();
        case.root.remove_file("missing/x").unwrap();
        case.root.remove_empty_directory(".ferry-partial/");
        assert!(!case.root.path().join(".ferry-partial").exists());
    }

    #[test]
    fn a_planted_directory_link_is_never_followed() {
        let case = case();
        for create in [true, false] {
            let reason = refused(case.root.directory("linked/sub", create));
            assert!(reason.contains("`linked` under the destination root"), "{reason}");
            assert!(reason.contains("symbolic link"), "{reason}");
        }
        let staged = stage(&case.root, b"x");
        assert!(refused(case.root.place(&staged, "linked/f")).contains("symbolic link"));
        assert!(refused(case.root.place(&staged, "linked/deeper/f")).contains("`linked`"));
        std::fs::write(case.outside.join("victim"), b"keep").unwrap();
        assert!(refused(case.root.remove_file("linked/victim")).contains("symbolic link"));
        assert!(refused(case.root.rename("linked/victim", "t/victim")).contains("symbolic link"));
        assert!(refused(case.root.open_file("linked/victim")).contains("symbolic link"));
        assert_eq!(std::fs::read(case.outside.join("victim")).unwrap(), b"keep");
        std::fs::remove_file(case.outside.join("victim")).unwrap();
        assert!(outside_is_empty(&case));
    }

    #[test]
    fn the_fallback_walk_refuses_the_same_paths() {
        let case = case();
        let reason = refused(case.root.walk("linked/sub", true));
        assert!(reason.contains("`linked`") && reason.contains("symbolic link"), "{reason}");
        let reason = refused(case.root.walk("file/sub", true));
        assert!(
            reason.starts_with("`file` under the destination root")
                && reason.ends_with("is a file, so it cannot be a directory")
        );
        assert!(refused(case.root.walk("a/../linked", true)).contains("`a/..`"));
        case.root.walk("new/dir", true).unwrap();
        assert!(case.root.path().join("new/dir").is_dir());
        assert!(outside_is_empty(&case));
    }

    #[test]
    fn a_staging_directory_that_is_a_link_is_refused() {
        let case = case();
        symlink(&case.outside, case.root.path().join(".ferry-partial")).unwrap();
        assert!(refused(case.root.stage(".ferry-partial", "s".to_owned())).contains("`.ferry-partial`"));
        std::fs::write(case.outside.join("old"), b"someone's").unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3 * 86_400);
        std::fs::File::options().write(true).open(case.outside.join("old")).unwrap().set_modified(old).unwrap();
        assert_eq!(case.root.remove_stale(".ferry-partial", std::time::Duration::from_secs(86_400)), 0);
        assert!(case.outside.join("old").exists());
    }

    #[test]
    fn a_link_at_the_final_name_is_replaced_not_followed() {
        let case = case();
        symlink(case.outside.join("target"), case.root.path().join("name")).unwrap();
        let staged = stage(&case.root, b"data");
        case.root.place(&staged, "name").unwrap();
        assert_eq!(std::fs::read(case.root.path().join("name")).unwrap(), b"data");
        assert!(!std::fs::symlink_metadata(case.root.path().join("name")).unwrap().is_symlink());
        assert!(outside_is_empty(&case));
    }

    #[test]
    fn files_and_directories_in_the_way_are_refused() {
        let case = case();
        std::fs::create_dir_all(case.root.path().join("dir/inner")).unwrap();
        let staged = stage(&case.root, b"x");
        let reason = refused(case.root.place(&staged, "dir"));
        assert!(reason.starts_with("`dir` under") && reason.ends_with("is a directory, so a file cannot replace it"));
        assert!(refused(case.root.place(&staged, "file/x")).contains("is a file, so it cannot be a directory"));
        case.root.discard(&staged);
        assert_eq!(std::fs::read_dir(case.root.path().join(".ferry-partial")).unwrap().count(), 0);
    }

    #[test]
    fn only_stale_regular_files_are_removed_from_staging() {
        let case = case();
        let staging = case.root.path().join(".ferry-partial");
        std::fs::create_dir_all(&staging).unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3 * 86_400);
        for name in ["old", "fresh"] {
            std::fs::write(staging.join(name), b"x").unwrap();
        }
        std::fs::File::options().write(true).open(staging.join("old")).unwrap().set_modified(old).unwrap();
        symlink(case.outside.join("x"), staging.join("link")).unwrap();
        assert_eq!(case.root.remove_stale(".ferry-partial", std::time::Duration::from_secs(86_400)), 1);
        assert!(!staging.join("old").exists() && staging.join("fresh").exists());
        assert!(std::fs::symlink_metadata(staging.join("link")).is_ok());
    }
}
