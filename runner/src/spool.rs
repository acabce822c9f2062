//! The encrypted spool: where object data waits between download and verified upload.
//!
//! Small objects stay in memory within a fixed budget. Everything else is written to the
//! spool directory in chunks sealed with AES-256-GCM under a key that is generated when
//! the spool opens, lives only in this process's memory and is zeroized on drop. Each
//! chunk's nonce and associated data carry the entry id, the chunk index and a final-chunk
//! flag, so reordered, altered or truncated spool files are detected on read. Space is
//! reserved before a download starts: a full spool makes downloads wait (backpressure).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use zeroize::Zeroizing;

/// Plaintext bytes per sealed chunk.
pub const CHUNK_SIZE: usize = 1 << 20;
const TAG_SIZE: usize = 16;
/// Space is reserved in units of this many bytes (semaphore permits are `u32`).
const UNIT: u64 = 64 << 10;

/// Why spooling failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool directory could not be used.
    #[error("spool {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A sealed chunk failed authentication: the spool file was altered, reordered or cut short.
    #[error("spool entry {entry} is corrupt at chunk {chunk}: it was altered, reordered or truncated")]
    Corrupt {
        /// The entry.
        entry: u64,
        /// The chunk index where the damage was found.
        chunk: u32,
    },
    /// More bytes arrived than were reserved (the source changed while it was read).
    #[error("object grew beyond its listed size of {reserved} bytes while it was read")]
    Overflow {
        /// The bytes reserved for the entry.
        reserved: u64,
    },
    /// No cryptographic randomness was available for the key.
    #[error("no operating-system randomness for the spool key: {0}")]
    Randomness(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io { path: path.to_owned(), source }
}

/// The spool of one runner; cheap to clone, shared by every transfer.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

struct Inner {
    directory: PathBuf,
    cipher: Aes256Gcm,
    disk: Arc<Semaphore>,
    disk_capacity: u64,
    memory: Arc<Semaphore>,
    memory_capacity: u64,
    next_entry: AtomicU64,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool").field("directory", &self.inner.directory).finish_non_exhaustive()
    }
}

fn units(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(UNIT).max(1)).unwrap_or(u32::MAX)
}

impl Spool {
    /// Opens a spool in a new private directory under `parent` with room for `disk_bytes` on
    /// disk and `memory_bytes` in memory.
    pub fn open(parent: &Path, disk_bytes: u64, memory_bytes: u64) -> Result<Self, SpoolError> {
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(key.as_mut_slice()).map_err(|error| SpoolError::Randomness(error.to_string()))?;
        let cipher = Aes256Gcm::new_from_slice(key.as_slice())
            .map_err(|_| SpoolError::Randomness("the key has the wrong length".into()))?;
        std::fs::create_dir_all(parent).map_err(io(parent))?;
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).map_err(|error| SpoolError::Randomness(error.to_string()))?;
        let directory = parent.join(format!("ferry-spool-{}", hex::encode(suffix)));
        create_private_directory(&directory)?;
        Ok(Self {
            inner: Arc::new(Inner {
                directory,
                cipher,
                disk: Arc::new(Semaphore::new(units(disk_bytes) as usize)),
                disk_capacity: u64::from(units(disk_bytes)) * UNIT,
                memory: Arc::new(Semaphore::new(units(memory_bytes) as usize)),
                memory_capacity: u64::from(units(memory_bytes)) * UNIT,
                next_entry: AtomicU64::new(1),
            }),
        })
    }

    /// The directory holding this spool's files.
    pub fn directory(&self) -> &Path {
        &self.inner.directory
    }

    /// Whether an object of `size` bytes can be spooled at all.
    pub fn fits(&self, size: u64) -> bool {
        size <= self.inner.disk_capacity
    }

    /// Reserves room for an object of `size` bytes, waiting while the spool is full, and
    /// returns a writer for it. Small objects stay in memory while the memory budget allows.
    pub async fn writer(&self, size: u64) -> Result<SpoolWriter, SpoolError> {
        let inner = &self.inner;
        let entry = inner.next_entry.fetch_add(1, Ordering::Relaxed);
        let wanted = units(size);
        if size <= (CHUNK_SIZE as u64) * 4
            && size <= inner.memory_capacity / 4
            && let Ok(permit) = inner.memory.clone().try_acquire_many_owned(wanted)
        {
            let storage = Storage::Memory(Vec::new());
            return Ok(SpoolWriter { spool: self.clone(), entry, reserved: size, written: 0, storage, permit });
        }
        let permit =
            inner.disk.clone().acquire_many_owned(wanted.min(units(inner.disk_capacity))).await.map_err(|_| {
                SpoolError::Io { path: inner.directory.clone(), source: std::io::Error::other("spool closed") }
            })?;
        let path = inner.directory.join(format!("{entry:016x}"));
        let file = tokio::fs::OpenOptions::new().create_new(true).write(true).open(&path).await.map_err(io(&path))?;
        let file = file.into_std().await;
        Ok(SpoolWriter {
            spool: self.clone(),
            entry,
            reserved: size,
            written: 0,
            storage: Storage::Disk {
                file: Some(file),
                path,
                // Room for the tag, which sealing appends in place.
                pending: Zeroizing::new(Vec::with_capacity(CHUNK_SIZE + TAG_SIZE)),
                chunks: 0,
            },
            permit,
        })
    }

    /// Encrypts `buffer` where it is, appending the tag: no second copy of a chunk.
    fn seal(&self, entry: u64, chunk: u32, last: bool, buffer: &mut Vec<u8>) -> Result<(), SpoolError> {
        let aad = associated_data(entry, chunk, last);
        self.inner
            .cipher
            .encrypt_in_place(&nonce(entry, chunk), &aad, buffer)
            .map_err(|_| SpoolError::Corrupt { entry, chunk })
    }

    /// Checks and decrypts `buffer` where it is, leaving the plaintext.
    fn unseal(&self, entry: u64, chunk: u32, last: bool, buffer: &mut Vec<u8>) -> Result<(), SpoolError> {
        let aad = associated_data(entry, chunk, last);
        self.inner
            .cipher
            .decrypt_in_place(&nonce(entry, chunk), &aad, buffer)
            .map_err(|_| SpoolError::Corrupt { entry, chunk })
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Entries delete their own files; this removes whatever an interrupted run left.
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

fn create_private_directory(path: &Path) -> Result<(), SpoolError> {
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path).map_err(io(path))
}

fn nonce(entry: u64, chunk: u32) -> Nonce<aes_gcm::aead::consts::U12> {
    let mut bytes = [0u8; 12];
    bytes[..8].copy_from_slice(&entry.to_be_bytes());
    bytes[8..].copy_from_slice(&chunk.to_be_bytes());
    Nonce::from(bytes)
}

fn associated_data(entry: u64, chunk: u32, last: bool) -> [u8; 13] {
    let mut aad = [0u8; 13];
    aad[..8].copy_from_slice(&entry.to_be_bytes());
    aad[8..12].copy_from_slice(&chunk.to_be_bytes());
    aad[12] = u8::from(last);
    aad
}

enum Storage {
    Memory(Vec<Bytes>),
    /// The file is lent to a blocking task for each chunk (`None` while it is), so chunks go
    /// from their buffer to the kernel with no copy in between.
    Disk {
        file: Option<std::fs::File>,
        path: PathBuf,
        pending: Zeroizing<Vec<u8>>,
        chunks: u32,
    },
}

/// Receives one object's bytes.
pub struct SpoolWriter {
    spool: Spool,
    entry: u64,
    reserved: u64,
    written: u64,
    storage: Storage,
    permit: OwnedSemaphorePermit,
}

impl SpoolWriter {
    /// Appends bytes; fails if the object grows past the size it was reserved for.
    pub async fn write(&mut self, data: Bytes) -> Result<(), SpoolError> {
        self.written += data.len() as u64;
        if self.written > self.reserved {
            return Err(SpoolError::Overflow { reserved: self.reserved });
        }
        match &mut self.storage {
            Storage::Memory(parts) => parts.push(data),
            Storage::Disk { file, path, pending, chunks } => {
                let mut rest = &data[..];
                while !rest.is_empty() {
                    let take = (CHUNK_SIZE - pending.len()).min(rest.len());
                    pending.extend_from_slice(&rest[..take]);
                    rest = &rest[take..];
                    if pending.len() == CHUNK_SIZE {
                        self.spool.seal(self.entry, *chunks, false, pending)?;
                        let sealed = std::mem::take(&mut **pending);
                        let (written_file, mut buffer) = write_sealed(file.take(), path, sealed).await?;
                        *file = Some(written_file);
                        buffer.clear();
                        **pending = buffer;
                        *chunks += 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// Seals the last chunk and returns the finished entry.
    pub async fn finish(self) -> Result<SpoolEntry, SpoolError> {
        let content = match self.storage {
            Storage::Memory(parts) => Content::Memory(parts),
            Storage::Disk { file, path, mut pending, chunks } => {
                // The final chunk (possibly empty) carries the "last" flag, so a cut-off file is caught.
                self.spool.seal(self.entry, chunks, true, &mut pending)?;
                write_sealed(file, &path, std::mem::take(&mut *pending)).await?;
                Content::Disk(DiskFile { path, chunks: chunks + 1 })
            }
        };
        Ok(SpoolEntry { spool: self.spool, entry: self.entry, length: self.written, content, _permit: self.permit })
    }
}

/// Writes one sealed chunk after its length, on a blocking thread; gives back the file and
/// the buffer (for the next chunk).
async fn write_sealed(
    file: Option<std::fs::File>,
    path: &Path,
    sealed: Vec<u8>,
) -> Result<(std::fs::File, Vec<u8>), SpoolError> {
    use std::io::Write;
    let mut file = file.ok_or_else(|| SpoolError::Io {
        path: path.to_owned(),
        source: std::io::Error::other("an earlier write failed"),
    })?;
    let length = u32::try_from(sealed.len()).map_err(|_| SpoolError::Corrupt { entry: 0, chunk: 0 })?;
    let (file, sealed, written) = tokio::task::spawn_blocking(move || {
        let written = file.write_all(&length.to_be_bytes()).and_then(|()| file.write_all(&sealed));
        (file, sealed, written)
    })
    .await
    .map_err(std::io::Error::other)
    .map_err(io(path))?;
    written.map_err(io(path))?;
    Ok((file, sealed))
}

/// A spooled object; its file is deleted (and its space released) when it is dropped.
pub struct SpoolEntry {
    spool: Spool,
    entry: u64,
    length: u64,
    content: Content,
    _permit: OwnedSemaphorePermit,
}

enum Content {
    Memory(Vec<Bytes>),
    Disk(DiskFile),
}

struct DiskFile {
    path: PathBuf,
    chunks: u32,
}

impl Drop for DiskFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl SpoolEntry {
    /// The object's length in bytes.
    pub fn len(&self) -> u64 {
        self.length
    }

    /// Whether the object is empty.
    pub fn is_empty(&self) -> bool {
        self.length == 0
    }

    /// Whether the bytes live in the spool directory (as opposed to memory).
    pub fn on_disk(&self) -> bool {
        matches!(self.content, Content::Disk(_))
    }

    /// Reads the object back, chunk by chunk, authenticating every chunk.
    pub async fn reader(&self) -> Result<SpoolReader<'_>, SpoolError> {
        let source = match &self.content {
            Content::Memory(parts) => ReaderSource::Memory(parts.iter()),
            Content::Disk(file) => {
                let opened = tokio::fs::File::open(&file.path).await.map_err(io(&file.path))?.into_std().await;
                ReaderSource::Disk { file: Some(opened), path: &file.path, next: 0, chunks: file.chunks }
            }
        };
        Ok(SpoolReader { entry: self, source })
    }
}

enum ReaderSource<'a> {
    Memory(std::slice::Iter<'a, Bytes>),
    /// Lent to a blocking task for each chunk, as when writing.
    Disk {
        file: Option<std::fs::File>,
        path: &'a Path,
        next: u32,
        chunks: u32,
    },
}

/// Reads a spooled object back in order.
pub struct SpoolReader<'a> {
    entry: &'a SpoolEntry,
    source: ReaderSource<'a>,
}

impl SpoolReader<'_> {
    /// The next piece of the object, or `None` at its end.
    pub async fn next(&mut self) -> Result<Option<Bytes>, SpoolError> {
        let entry = self.entry.entry;
        match &mut self.source {
            ReaderSource::Memory(parts) => Ok(parts.next().cloned()),
            ReaderSource::Disk { file, path, next, chunks } => {
                if *next == *chunks {
                    return Ok(None);
                }
                let chunk = *next;
                let last = chunk + 1 == *chunks;
                let lent = file.take().ok_or(SpoolError::Corrupt { entry, chunk })?;
                let (returned, read) = tokio::task::spawn_blocking(move || read_sealed(lent, last))
                    .await
                    .map_err(std::io::Error::other)
                    .map_err(io(path))?;
                *file = Some(returned);
                let mut buffer = read.map_err(io(path))?.ok_or(SpoolError::Corrupt { entry, chunk })?;
                // Sealed as read, the plaintext once unsealed in place.
                self.entry.spool.unseal(entry, chunk, last, &mut buffer)?;
                *next += 1;
                Ok(Some(Bytes::from(buffer)))
            }
        }
    }
}

/// Reads one sealed chunk after its length; `Ok(None)` when the file is cut short, claims a
/// chunk longer than any written, or (for the `last` one) goes on after it: all mean it was
/// tampered with. Gives back the file.
fn read_sealed(mut file: std::fs::File, last: bool) -> (std::fs::File, std::io::Result<Option<Vec<u8>>>) {
    use std::io::Read;
    let read = (|| {
        let mut length = [0u8; 4];
        if let Err(error) = file.read_exact(&mut length) {
            return if error.kind() == std::io::ErrorKind::UnexpectedEof { Ok(None) } else { Err(error) };
        }
        let length = u32::from_be_bytes(length) as usize;
        if length > CHUNK_SIZE + TAG_SIZE {
            return Ok(None);
        }
        // Read into spare capacity: no zeroing of a buffer about to be overwritten.
        let mut buffer = Vec::with_capacity(length);
        (&mut file).take(length as u64).read_to_end(&mut buffer)?;
        if buffer.len() != length {
            return Ok(None);
        }
        if last && file.read(&mut [0u8; 1])? != 0 {
            return Ok(None);
        }
        Ok(Some(buffer))
    })();
    (file, read)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(length: usize) -> Bytes {
        Bytes::from((0..length).map(|i| b"FERRY-PLAINTEXT-"[i % 16]).collect::<Vec<_>>())
    }

    async fn read_all(entry: &SpoolEntry) -> Result<Vec<u8>, SpoolError> {
        let mut reader = entry.reader().await?;
        let mut out = Vec::new();
        while let Some(piece) = reader.next().await? {
            out.extend_from_slice(&piece);
        }
        Ok(out)
    }

    fn files_in(directory: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(directory).map(|d| d.map(|e| e.unwrap().path()).collect()).unwrap_or_default()
    }

    #[tokio::test]
    async fn large_objects_round_trip_through_ciphertext_only() {
        let parent = tempfile::tempdir().unwrap();
        let spool = Spool::open(parent.path(), 64 << 20, 1 << 20).unwrap();
        let data = pattern(3 * CHUNK_SIZE + 12345);
        let mut writer = spool.writer(data.len() as u64).await.unwrap();
        for piece in data.chunks(100_000) {
            writer.write(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        let entry = writer.finish().await.unwrap();
        assert!(entry.on_disk());
        for file in files_in(spool.directory()) {
            let stored = std::fs::read(&file).unwrap();
            assert!(!stored.windows(16).any(|w| w == b"FERRY-PLAINTEXT-"), "plaintext found in {file:?}");
        }
        assert_eq!(read_all(&entry).await.unwrap(), data);
        drop(entry);
        assert!(files_in(spool.directory()).is_empty(), "entry file left behind");
    }

    #[tokio::test]
    async fn tampering_and_truncation_are_detected() {
        let parent = tempfile::tempdir().unwrap();
        let spool = Spool::open(parent.path(), 64 << 20, 0).unwrap();
        let data = pattern(2 * CHUNK_SIZE + 10);
        for damage in ["flip", "truncate", "drop-last-chunk", "append"] {
            let mut writer = spool.writer(data.len() as u64).await.unwrap();
            writer.write(data.clone()).await.unwrap();
            let entry = writer.finish().await.unwrap();
            let file = files_in(spool.directory()).pop().unwrap();
            let mut stored = std::fs::read(&file).unwrap();
            match damage {
                "flip" => stored[CHUNK_SIZE + 100] ^= 1,
                "truncate" => stored.truncate(stored.len() - 7),
                "drop-last-chunk" => stored.truncate(2 * (4 + CHUNK_SIZE + TAG_SIZE)),
                _ => stored.extend_from_slice(b"x"),
            }
            std::fs::write(&file, stored).unwrap();
            let result = read_all(&entry).await;
            assert!(matches!(result, Err(SpoolError::Corrupt { .. })), "{damage} not detected: {result:?}");
        }
    }

    #[tokio::test]
    async fn small_objects_stay_in_memory_and_empty_objects_work() {
        let parent = tempfile::tempdir().unwrap();
        let spool = Spool::open(parent.path(), 1 << 20, 16 << 20).unwrap();
        let writer = spool.writer(0).await.unwrap();
        let empty = writer.finish().await.unwrap();
        assert!(empty.is_empty() && !empty.on_disk());
        assert!(read_all(&empty).await.unwrap().is_empty());
        let mut writer = spool.writer(5).await.unwrap();
        writer.write(Bytes::from_static(b"hello")).await.unwrap();
        assert!(matches!(writer.write(Bytes::from_static(b"!")).await, Err(SpoolError::Overflow { reserved: 5 })));
    }

    #[tokio::test]
    async fn a_full_spool_makes_writers_wait() {
        let parent = tempfile::tempdir().unwrap();
        let spool = Spool::open(parent.path(), 8 << 20, 0).unwrap();
        let first = spool.writer(6 << 20).await.unwrap();
        let second = tokio::time::timeout(std::time::Duration::from_millis(200), spool.writer(4 << 20)).await;
        assert!(second.is_err(), "the second writer should wait for space");
        drop(first);
        let second = tokio::time::timeout(std::time::Duration::from_secs(5), spool.writer(4 << 20)).await;
        assert!(second.is_ok(), "space released by the first writer is reused");
    }

    #[tokio::test]
    async fn the_directory_is_removed_with_the_spool() {
        let parent = tempfile::tempdir().unwrap();
        let spool = Spool::open(parent.path(), 8 << 20, 0).unwrap();
        let directory = spool.directory().to_owned();
        let mut writer = spool.writer(10).await.unwrap();
        writer.write(Bytes::from_static(b"0123456789")).await.unwrap();
        drop(writer);
        drop(spool);
        assert!(!directory.exists());
    }
}
