//! Objects from a local filesystem without OpenDAL's per-step hops to a blocking thread (and
//! its zeroed 2 MiB buffer per read), which for small files cost far more than the bytes:
//! a small file bound for a remote store is read and hashed in one blocking call; a file
//! between two local filesystems is copied, staged, renamed into place and verified in one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ferry_api::VerifyMode;

use crate::object::{DigestSet, Digests, Hasher};
use crate::safe_fs::{SafeFsError, SafeRoot, Staged};
use crate::storage::PARTIAL_DIRECTORY;

/// Objects up to this size are read whole; larger ones are copied chunk by chunk.
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
    /// The run is stopping.
    Interrupted,
    /// Something under the destination root is in the way (a link, a file where a directory
    /// must be); retrying cannot help.
    Refused(String),
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

/// Where a file lands at a local destination and how it is proven there: written under the
/// staging directory, verified, and only then renamed into place (same filesystem), so a
/// half-written or unverified file never appears at its final path. Every step goes through
/// the destination's [`SafeRoot`], so no link under the root is ever followed.
#[derive(Debug, Clone)]
pub struct Placement {
    /// The destination's root.
    pub root: Arc<SafeRoot>,
    /// The final path relative to the root: the job's path and a key `destination_path` accepted.
    pub relative: String,
    /// How to verify.
    pub verify: VerifyMode,
    /// Make the file durable here; false when the caller flushes the filesystem for many
    /// files at once (see `durability`).
    pub sync_file: bool,
    /// The source's modification time, given to the file so `conflict: newer` and later
    /// comparisons see the source's age, not the copy's.
    pub modified: Option<jiff::Timestamp>,
}

/// One copy between two local filesystems.
#[derive(Debug, Clone)]
pub struct LocalCopy {
    /// The source file.
    pub source: PathBuf,
    /// Where it goes.
    pub placement: Placement,
    /// The size the listing reported.
    pub listed_size: u64,
    /// Turns true when the run must stop; checked between chunks of a large file.
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
}

/// What a verified local copy proved.
#[derive(Debug, Clone)]
pub struct LocalCopied {
    /// The source's digests.
    pub digests: Digests,
    /// The destination's BLAKE3, when it was read back.
    pub destination_blake3: Option<String>,
}

/// A staged file's name, unique across processes and hosts: shards in different pods (each
/// its own process 1) may stage into the same shared volume at once.
pub(crate) fn staging_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static PROCESS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let mut random = [0u8; 8];
        match getrandom::fill(&mut random) {
            Ok(()) => hex::encode(random),
            // Creating staged files exclusively still keeps two writers apart.
            Err(_) => format!("{}-{}", std::process::id(), jiff::Timestamp::now().as_nanosecond()),
        }
    });
    format!("local-{}-{}", *PROCESS, COUNTER.fetch_add(1, Ordering::Relaxed))
}

impl Placement {
    /// Places bytes already in memory, which hash to `digests`.
    pub fn write(&self, data: &[u8], digests: &Digests) -> Result<LocalCopied, LocalCopyError> {
        self.place(false, |file| {
            file.write_all(data).map_err(LocalCopyError::Destination)?;
            Ok(digests.clone())
        })
    }

    /// Stages a file filled by `fill` (which returns the digests of what it wrote), verifies
    /// and renames it into place; on failure nothing is left behind.
    fn place(
        &self,
        large: bool,
        fill: impl FnOnce(&mut std::fs::File) -> Result<Digests, LocalCopyError>,
    ) -> Result<LocalCopied, LocalCopyError> {
        let mut staged = self.begin()?;
        match fill(&mut staged.file) {
            Ok(digests) => self.finish(&staged, &digests, large),
            Err(error) => {
                self.root.discard(&staged);
                Err(error)
            }
        }
    }

    /// Creates the staged file, for bytes that arrive in pieces.
    pub fn begin(&self) -> Result<Staged, LocalCopyError> {
        Ok(self.root.stage(PARTIAL_DIRECTORY, staging_name())?)
    }

    /// Makes the staged file durable (unless the caller flushes), verifies it against
    /// `digests` and renames it into place; on failure removes it. `large`: sync and read
    /// back at once.
    pub fn finish(&self, staged: &Staged, digests: &Digests, large: bool) -> Result<LocalCopied, LocalCopyError> {
        let result = self.prove(&staged.file, digests, large).and_then(|destination_blake3| {
            if let Some(modified) = self.modified {
                staged.file.set_modified(modified.into()).map_err(LocalCopyError::Destination)?;
            }
            self.root.place(staged, &self.relative)?;
            Ok(LocalCopied { digests: digests.clone(), destination_blake3 })
        });
        if result.is_err() {
            self.root.discard(staged);
        }
        result
    }

    /// Syncs (unless the caller flushes) and verifies the written file.
    fn prove(&self, file: &std::fs::File, digests: &Digests, large: bool) -> Result<Option<String>, LocalCopyError> {
        if large {
            // Writing a large file back to disk takes as long as reading it back: overlap
            // them, rather than leave it all to the shared flush at the end.
            std::thread::scope(|scope| {
                let syncing = scope.spawn(|| file.sync_all());
                let verified = self.verify_destination(file, digests);
                let synced = syncing.join().unwrap_or_else(|_| Err(std::io::Error::other("the sync panicked")));
                synced.map_err(LocalCopyError::Destination)?;
                verified
            })
        } else {
            // Durable before it counts as verified, as the streaming path's writer is.
            if self.sync_file {
                file.sync_all().map_err(LocalCopyError::Destination)?;
            }
            self.verify_destination(file, digests)
        }
    }

    /// Proves the written file by `verify`; returns its BLAKE3 when it was read back. The
    /// file is read through the descriptor it was written with: a reopened one would read
    /// the same page cache, for two more system calls.
    fn verify_destination(&self, written: &std::fs::File, digests: &Digests) -> Result<Option<String>, LocalCopyError> {
        match self.verify {
            VerifyMode::Size => {
                let length = written.metadata().map_err(LocalCopyError::Destination)?.len();
                if length != digests.length {
                    return Err(LocalCopyError::Mismatch {
                        measure: "size",
                        expected: digests.length.to_string(),
                        actual: length.to_string(),
                    });
                }
                Ok(None)
            }
            // A filesystem reports no checksum of its own: only reading back proves the bytes.
            VerifyMode::Checksum | VerifyMode::Readback => {
                let back =
                    hash_file(written, digests.length, DigestSet::BLAKE3).map_err(LocalCopyError::Destination)?;
                if back.blake3 != digests.blake3 {
                    return Err(LocalCopyError::Mismatch {
                        measure: "blake3 read-back",
                        expected: digests.blake3.clone().unwrap_or_default(),
                        actual: back.blake3.unwrap_or_default(),
                    });
                }
                Ok(back.blake3)
            }
        }
    }
}

impl From<SafeFsError> for LocalCopyError {
    fn from(error: SafeFsError) -> Self {
        match error {
            SafeFsError::Refused(reason) => Self::Refused(reason),
            SafeFsError::Io(error) => Self::Destination(error),
        }
    }
}

impl LocalCopy {
    /// Copies, verifies, makes durable (unless the caller flushes) and renames into place.
    pub fn run(&self) -> Result<LocalCopied, LocalCopyError> {
        if self.listed_size <= LOCAL_COPY_LIMIT {
            let (data, digests) = read_whole(&self.source, self.listed_size, DigestSet::BLAKE3)?;
            return self.placement.write(&data, &digests);
        }
        self.placement.place(true, |file| self.copy_in_kernel(file))
    }

    /// A large file: each chunk is read and hashed, then copied by the kernel
    /// (`copy_file_range` through `std::io::copy`), which costs a fraction of writing the
    /// bytes from user space and clones extents where the filesystem can. What the kernel
    /// copied is proven by the read-back against the hash of what was read here.
    fn copy_in_kernel(&self, file: &mut std::fs::File) -> Result<Digests, LocalCopyError> {
        use std::io::Read;
        let source = std::fs::File::open(&self.source).map_err(LocalCopyError::Source)?;
        let mut hasher = Hasher::new(DigestSet::BLAKE3);
        let mut buffer = vec![0; CHUNK];
        let mut offset = 0;
        while offset < self.listed_size {
            if self.stop.as_ref().is_some_and(|stop| *stop.borrow()) {
                return Err(LocalCopyError::Interrupted);
            }
            let wanted = (self.listed_size - offset).min(CHUNK as u64) as usize;
            let read = read_at_most(&source, &mut buffer[..wanted], offset).map_err(LocalCopyError::Source)?;
            hasher.update(&buffer[..read]);
            let copied = std::io::copy(&mut (&source).take(read as u64), file).map_err(LocalCopyError::Destination)?;
            if read < wanted || copied != read as u64 {
                return Err(LocalCopyError::SourceChanged { read: offset + copied.min(read as u64) });
            }
            offset += read as u64;
        }
        // A source that grew since it was listed would be copied short.
        let length = source.metadata().map_err(LocalCopyError::Source)?.len();
        if length != self.listed_size {
            return Err(LocalCopyError::SourceChanged { read: length });
        }
        Ok(hasher.finish())
    }
}

/// Bytes read and copied per step of a large file: bounds the memory of one copy.
const CHUNK: usize = 1 << 20;

/// The pieces a local source streams in: larger ones made the allocator hold on to more
/// memory than they saved in CPU (8 MiB pieces: 126 MiB peak RSS for eight uploads; 1 MiB: 83).
pub const LOCAL_READ_CHUNK: usize = CHUNK;

/// Reads until `buffer` is full or the file ends; returns the bytes read.
fn read_at_most(file: &std::fs::File, buffer: &mut [u8], offset: u64) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read_at(&mut buffer[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// The digests of a whole open file, read in chunks; `expected_length` only sizes the buffer.
pub fn hash_file(file: &std::fs::File, expected_length: u64, set: DigestSet) -> std::io::Result<Digests> {
    let mut hasher = Hasher::new(set);
    let mut buffer = vec![0; (CHUNK as u64).min(expected_length.max(1)) as usize];
    let mut offset = 0;
    loop {
        let read = read_at_most(file, &mut buffer, offset)?;
        if read == 0 {
            return Ok(hasher.finish());
        }
        hasher.update(&buffer[..read]);
        offset += read as u64;
    }
}

/// Reads a whole small source file and hashes it, in one blocking call: the bytes for an
/// upload to a remote store in a single request.
pub fn read_whole(path: &Path, listed_size: u64, set: DigestSet) -> Result<(Vec<u8>, Digests), LocalCopyError> {
    use std::io::Read;
    // The listing gave the size: no `stat` for it, and a file that grew since is read only
    // one byte past it.
    let file = std::fs::File::open(path).map_err(LocalCopyError::Source)?;
    let mut data = Vec::with_capacity(listed_size as usize + 1);
    file.take(listed_size + 1).read_to_end(&mut data).map_err(LocalCopyError::Source)?;
    if data.len() as u64 != listed_size {
        return Err(LocalCopyError::SourceChanged { read: data.len() as u64 });
    }
    let mut hasher = Hasher::new(set);
    hasher.update(&data);
    Ok((data, hasher.finish()))
}

/// A local file as a stream of `chunk`-sized pieces, each read into fresh, unzeroed memory in
/// one blocking call. Pieces of exactly the upload part size pass through OpenDAL's chunked
/// writer without being copied again.
pub fn read_in_chunks(path: PathBuf, chunk: usize) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> {
    struct Reading {
        path: PathBuf,
        file: Option<std::sync::Arc<std::fs::File>>,
    }
    futures::stream::try_unfold(Reading { path, file: None }, move |mut reading| async move {
        let (path, file) = (reading.path.clone(), reading.file.clone());
        let (file, data) = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            use std::io::Read;
            let file = match file {
                Some(file) => file,
                None => std::sync::Arc::new(std::fs::File::open(path)?),
            };
            let mut data = Vec::with_capacity(chunk);
            (&*file).take(chunk as u64).read_to_end(&mut data)?;
            Ok((file, data))
        })
        .await
        .map_err(std::io::Error::other)??;
        if data.is_empty() {
            return Ok(None);
        }
        reading.file = Some(file);
        Ok(Some((bytes::Bytes::from(data), reading)))
    })
}

/// Staged files untouched for this long were left by a killed run: a live copy writes its
/// staged file, then verifies and renames it within moments (a whole day only for a read-back
/// of terabytes).
pub const STALE_STAGED_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// The file of `key` under a store's root and job path.
pub fn file_of(root: &Path, base: &str, key: &str) -> PathBuf {
    root.join(format!("{base}{key}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE_TIME: &str = "2020-01-02T03:04:05Z";

    fn copy(directory: &Path, verify: VerifyMode, listed_size: u64) -> LocalCopy {
        LocalCopy {
            source: directory.join("in/a b/ü.txt"),
            placement: Placement {
                root: Arc::new(SafeRoot::open(&directory.join("out")).unwrap()),
                relative: "x/a b/ü.txt".to_owned(),
                verify,
                sync_file: true,
                modified: Some(SOURCE_TIME.parse().unwrap()),
            },
            listed_size,
            stop: None,
        }
    }

    #[test]
    fn copies_stage_rename_and_read_back() {
        let directory = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(directory.path().join("in/a b")).unwrap();
        std::fs::write(directory.path().join("in/a b/ü.txt"), b"hello").unwrap();
        let copied = copy(directory.path(), VerifyMode::Checksum, 5).run().unwrap();
        assert_eq!(std::fs::read(directory.path().join("out/x/a b/ü.txt")).unwrap(), b"hello");
        let modified = std::fs::metadata(directory.path().join("out/x/a b/ü.txt")).unwrap().modified().unwrap();
        assert_eq!(jiff::Timestamp::try_from(modified).unwrap(), SOURCE_TIME.parse().unwrap(), "the source's time");
        assert_eq!(copied.destination_blake3, copied.digests.blake3);
        assert!(copied.destination_blake3.is_some());
        assert_eq!(std::fs::read_dir(directory.path().join("out/.ferry-partial")).unwrap().count(), 0);
    }

    #[test]
    fn bytes_that_do_not_hash_as_claimed_never_reach_the_final_path() {
        let directory = tempfile::tempdir().unwrap();
        let placement = copy(directory.path(), VerifyMode::Checksum, 5).placement;
        let mut hasher = Hasher::new(DigestSet::BLAKE3);
        hasher.update(b"other");
        let error = placement.write(b"hello", &hasher.finish()).unwrap_err();
        assert!(matches!(error, LocalCopyError::Mismatch { measure: "blake3 read-back", .. }), "{error:?}");
        assert!(!directory.path().join("out/x/a b/ü.txt").exists());
        assert_eq!(std::fs::read_dir(directory.path().join("out/.ferry-partial")).unwrap().count(), 0);
    }

    #[test]
    fn a_link_in_the_destination_path_refuses_the_copy_and_leaves_nothing_behind() {
        let directory = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(directory.path().join("in/a b")).unwrap();
        std::fs::write(directory.path().join("in/a b/ü.txt"), b"hello").unwrap();
        std::fs::create_dir_all(directory.path().join("out/x")).unwrap();
        std::fs::create_dir_all(directory.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(directory.path().join("elsewhere"), directory.path().join("out/x/a b")).unwrap();
        let error = copy(directory.path(), VerifyMode::Checksum, 5).run().unwrap_err();
        assert!(matches!(&error, LocalCopyError::Refused(reason) if reason.contains("`x/a b`")), "{error:?}");
        assert_eq!(std::fs::read_dir(directory.path().join("elsewhere")).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(directory.path().join("out/.ferry-partial")).unwrap().count(), 0);
    }

    #[test]
    fn large_files_are_copied_in_chunks_and_read_back() {
        let directory = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(directory.path().join("in/a b")).unwrap();
        let data: Vec<u8> = (0..(LOCAL_COPY_LIMIT as usize + CHUNK + 3)).map(|i| (i % 251) as u8).collect();
        std::fs::write(directory.path().join("in/a b/ü.txt"), &data).unwrap();
        let copied = copy(directory.path(), VerifyMode::Checksum, data.len() as u64).run().unwrap();
        assert_eq!(copied.digests.blake3, Some(blake3::hash(&data).to_hex().to_string()));
        assert_eq!(copied.destination_blake3, copied.digests.blake3);
        assert!(copied.destination_blake3.is_some());
        assert_eq!(std::fs::read(directory.path().join("out/x/a b/ü.txt")).unwrap(), data);

        // Listed shorter than it is: the file grew, and nothing is left at the destination.
        std::fs::remove_file(directory.path().join("out/x/a b/ü.txt")).unwrap();
        let error = copy(directory.path(), VerifyMode::Size, data.len() as u64 - 1).run().unwrap_err();
        assert!(matches!(error, LocalCopyError::SourceChanged { .. }), "{error:?}");
        assert!(!directory.path().join("out/x/a b/ü.txt").exists());
        assert_eq!(std::fs::read_dir(directory.path().join("out/.ferry-partial")).unwrap().count(), 0);
    }

    #[test]
    fn a_stopping_run_interrupts_a_large_copy() {
        let directory = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(directory.path().join("in/a b")).unwrap();
        let size = LOCAL_COPY_LIMIT + 1;
        std::fs::File::create(directory.path().join("in/a b/ü.txt")).unwrap().set_len(size).unwrap();
        let (_stopper, stop) = tokio::sync::watch::channel(true);
        let error = LocalCopy { stop: Some(stop), ..copy(directory.path(), VerifyMode::Size, size) }.run().unwrap_err();
        assert!(matches!(error, LocalCopyError::Interrupted));
        assert_eq!(std::fs::read_dir(directory.path().join("out/.ferry-partial")).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn local_files_stream_in_pieces_of_the_chunk_size() {
        use futures::TryStreamExt;
        let directory = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..25u32).map(|i| i as u8).collect();
        std::fs::write(directory.path().join("f"), &data).unwrap();
        std::fs::write(directory.path().join("empty"), b"").unwrap();
        let pieces: Vec<_> = read_in_chunks(directory.path().join("f"), 10).try_collect().await.unwrap();
        assert_eq!(pieces.iter().map(|piece| piece.len()).collect::<Vec<_>>(), [10, 10, 5]);
        assert_eq!(pieces.concat(), data);
        let empty: Vec<_> = read_in_chunks(directory.path().join("empty"), 10).try_collect().await.unwrap();
        assert!(empty.is_empty());
        let missing: Result<Vec<_>, _> = read_in_chunks(directory.path().join("missing"), 10).try_collect().await;
        assert_eq!(missing.unwrap_err().kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn whole_reads_hash_what_they_return_and_refuse_a_changed_size() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let (data, digests) = read_whole(&path, 3, DigestSet::MD5).unwrap();
        assert_eq!(data, b"abc");
        assert_eq!(digests.md5.as_deref(), Some("900150983cd24fb0d6963f7d28e17f72"));
        assert!(matches!(read_whole(&path, 2, DigestSet::BLAKE3), Err(LocalCopyError::SourceChanged { read: 3 })));
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
