//! Small objects from a local filesystem: read and hash in one blocking call, and between two
//! local filesystems also stage, rename into place and verify in that same call. Through
//! OpenDAL each of those steps is its own hop to a blocking thread (and each read zeroes a
//! 2 MiB buffer), which for small files costs far more than the bytes themselves.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ferry_api::VerifyMode;

use crate::object::{DigestSet, Digests, Hasher};

/// Objects up to this size take the one-call path; larger ones stream in parts.
pub const LOCAL_COPY_LIMIT: u64 = 4 << 20;

/// Why a local copy failed; the caller maps it to a transfer error.
#[derive(Debug)]
pub enum LocalCopyError {
    /// Reading the source failed.
    Source(std::io::Error),
    /// Writing, renaming or reading back the destination failed.
    Destination(std::io::Error),
    /// The source's size differs from the listing.
    SourceChanged {
        /// Bytes read.
        read: u64,
    },
    /// The destination does not hold the bytes just written.
    Mismatch {
        /// What was compared.
        measure: &'static str,
        /// The source's value.
        expected: String,
        /// The destination's value.
        actual: String,
    },
}

/// One local copy.
#[derive(Debug, Clone)]
pub struct LocalCopy {
    /// The source file.
    pub source: PathBuf,
    /// Where it goes.
    pub destination: PathBuf,
    /// The staging directory on the destination's filesystem.
    pub staging: PathBuf,
    /// The size the listing reported.
    pub listed_size: u64,
    /// How to verify.
    pub verify: VerifyMode,
    /// Make the file durable here; false when the caller flushes the filesystem for many
    /// files at once (see `durability`).
    pub sync_file: bool,
}

/// What a verified local copy proved.
#[derive(Debug, Clone)]
pub struct LocalCopied {
    /// The source's digests.
    pub digests: Digests,
    /// The destination's BLAKE3, when it was read back.
    pub destination_blake3: Option<String>,
}

fn staging_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!("local-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn blake3_of(bytes: &[u8]) -> Digests {
    let mut hasher = Hasher::new(DigestSet::default());
    hasher.update(bytes);
    hasher.finish()
}

impl LocalCopy {
    /// Copies, makes the file durable, renames it into place, and verifies it. A half-written
    /// file never appears at the final path: it is staged and renamed (same filesystem).
    pub fn run(&self) -> Result<LocalCopied, LocalCopyError> {
        let data = std::fs::read(&self.source).map_err(LocalCopyError::Source)?;
        if data.len() as u64 != self.listed_size {
            return Err(LocalCopyError::SourceChanged { read: data.len() as u64 });
        }
        let digests = blake3_of(&data);
        let staged = self.staging.join(staging_name());
        let written = (|| {
            // Directories are created only when missing: checking first would cost two
            // system calls per file.
            let mut file = create_with_parents(&staged)?;
            file.write_all(&data)?;
            // Durable before it counts as verified, as the streaming path's writer is.
            if self.sync_file {
                file.sync_all()?;
            }
            match std::fs::rename(&staged, &self.destination) {
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    if let Some(parent) = self.destination.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    std::fs::rename(&staged, &self.destination)
                }
                result => result,
            }
        })();
        if let Err(error) = written {
            let _ = std::fs::remove_file(&staged);
            return Err(LocalCopyError::Destination(error));
        }
        let destination_blake3 = match self.verify {
            VerifyMode::Size => {
                let length = std::fs::metadata(&self.destination).map_err(LocalCopyError::Destination)?.len();
                if length != digests.length {
                    return Err(LocalCopyError::Mismatch {
                        measure: "size",
                        expected: digests.length.to_string(),
                        actual: length.to_string(),
                    });
                }
                None
            }
            // A filesystem reports no checksum of its own: only reading back proves the bytes.
            VerifyMode::Checksum | VerifyMode::Readback => {
                let back = blake3_of(&std::fs::read(&self.destination).map_err(LocalCopyError::Destination)?);
                if back.blake3 != digests.blake3 {
                    return Err(LocalCopyError::Mismatch {
                        measure: "blake3 read-back",
                        expected: digests.blake3.clone(),
                        actual: back.blake3,
                    });
                }
                Some(back.blake3)
            }
        };
        Ok(LocalCopied { digests, destination_blake3 })
    }
}

/// Reads a whole small source file and hashes it, in one blocking call: the bytes for an
/// upload to a remote store in a single request.
pub fn read_whole(path: &Path, listed_size: u64, set: DigestSet) -> Result<(Vec<u8>, Digests), LocalCopyError> {
    let data = std::fs::read(path).map_err(LocalCopyError::Source)?;
    if data.len() as u64 != listed_size {
        return Err(LocalCopyError::SourceChanged { read: data.len() as u64 });
    }
    let mut hasher = Hasher::new(set);
    hasher.update(&data);
    Ok((data, hasher.finish()))
}

fn create_with_parents(path: &Path) -> std::io::Result<std::fs::File> {
    match std::fs::File::create(path) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::File::create(path)
        }
        result => result,
    }
}

/// The file of `key` under a store's root and job path.
pub fn file_of(root: &Path, base: &str, key: &str) -> PathBuf {
    root.join(format!("{base}{key}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(directory: &Path, verify: VerifyMode, listed_size: u64) -> LocalCopy {
        LocalCopy {
            source: directory.join("in/a b/ü.txt"),
            destination: directory.join("out/x/a b/ü.txt"),
            staging: directory.join("out/.ferry-partial"),
            listed_size,
            verify,
            sync_file: true,
        }
    }

    #[test]
    fn copies_stage_rename_and_read_back() {
        let directory = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(directory.path().join("in/a b")).unwrap();
        std::fs::write(directory.path().join("in/a b/ü.txt"), b"hello").unwrap();
        let copied = copy(directory.path(), VerifyMode::Checksum, 5).run().unwrap();
        assert_eq!(std::fs::read(directory.path().join("out/x/a b/ü.txt")).unwrap(), b"hello");
        assert_eq!(copied.destination_blake3.as_deref(), Some(copied.digests.blake3.as_str()));
        assert_eq!(std::fs::read_dir(directory.path().join("out/.ferry-partial")).unwrap().count(), 0);
    }

    #[test]
    fn whole_reads_hash_what_they_return_and_refuse_a_changed_size() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let (data, digests) = read_whole(&path, 3, DigestSet { md5: true, part_size: None }).unwrap();
        assert_eq!(data, b"abc");
        assert_eq!(digests.md5.as_deref(), Some("900150983cd24fb0d6963f7d28e17f72"));
        assert!(matches!(read_whole(&path, 2, DigestSet::default()), Err(LocalCopyError::SourceChanged { read: 3 })));
    }

    #[test]
    fn a_source_that_changed_size_is_refused() {
        let directory = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(directory.path().join("in/a b")).unwrap();
        std::fs::write(directory.path().join("in/a b/ü.txt"), b"hello!").unwrap();
        let error = copy(directory.path(), VerifyMode::Size, 5).run().unwrap_err();
        assert!(matches!(error, LocalCopyError::SourceChanged { read: 6 }));
        assert!(!directory.path().join("out/x/a b/ü.txt").exists());
    }
}
