//! Moving one object: download through the encrypted spool while hashing, upload, verify,
//! and retry the upload from the spool (never from the source) when it fails.

use std::sync::Arc;
use std::time::Duration;

use ferry_api::VerifyMode;
use futures::TryStreamExt;
use tokio::sync::watch;

use crate::backends::streaming_put::StreamingUpload;
use crate::backends::{MODIFIED_METADATA, ReportedChecksum, SIZE_METADATA};
use crate::durability::Durability;
use crate::local_copy::{
    LOCAL_COPY_LIMIT, LOCAL_READ_CHUNK, LocalCopied, LocalCopy, LocalCopyError, Placement, file_of, hash_file,
    read_in_chunks, read_whole,
};
use crate::object::{DigestSet, Digests, Hasher, ObjectInfo, reported_checksum};
use crate::plan::{ContentCheck, Side};
use crate::predicted_etag::LENGTH_ONLY;
use crate::safe_fs::SafeRoot;
use crate::spool::{Spool, SpoolEntry, SpoolError};
use crate::storage::Store;
use crate::throttle::Throttle;

/// The bytes of a source object, in pieces.
type SourceStream = std::pin::Pin<Box<dyn futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send>>;

/// Everything a transfer needs, shared by all transfers of a run.
#[derive(Clone)]
pub struct Transfers {
    /// The source.
    pub source: std::sync::Arc<Store>,
    /// The destination.
    pub destination: std::sync::Arc<Store>,
    /// The spool.
    pub spool: Spool,
    /// `spec.verify`.
    pub verify: VerifyMode,
    /// The multipart part size.
    pub part_size: usize,
    /// Upload attempts per object before it is reported failed.
    pub attempts: u32,
    /// Becomes true when the run must stop.
    pub stop: watch::Receiver<bool>,
    /// Memory for upload part buffers, in KiB: bounds how many large objects upload at once.
    pub upload_memory: std::sync::Arc<tokio::sync::Semaphore>,
    /// Group commit for a local destination's small files; `None`: each file is synced alone.
    pub durability: Option<Durability>,
    /// A filesystem destination's root: every write to it goes through this, never through
    /// OpenDAL (whose filesystem backend follows links). `None` for other destinations.
    pub destination_root: Option<Arc<SafeRoot>>,
    /// `bandwidthLimit` for writes to a filesystem destination (other destinations are
    /// throttled in their OpenDAL layers).
    pub throttle: Option<Arc<Throttle>>,
    /// Copies on the server, when both sides are buckets of one S3 service and account.
    pub server_side: Option<Arc<crate::server_side::ServerSide>>,
}

/// The memory one object in flight holds, up to a part twice: an upload's part OpenDAL
/// buffers and the one being filled, or a small object's spooled copy and its gathered one.
fn upload_kibibytes(size: u64, part_size: usize) -> u32 {
    u32::try_from(size.min(part_size as u64).div_ceil(1024).max(1) * 2).unwrap_or(u32::MAX)
}

/// Upload part buffers in flight at most, in KiB (64 MiB: four 8 MiB parts, double-buffered).
pub const UPLOAD_MEMORY_KIB: usize = 64 << 10;

/// How an object was proven identical at the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum VerifiedBy {
    /// Sizes match (`verify: size`).
    Size,
    /// The destination's ETag is the MD5 of the bytes Ferry read from the source.
    Md5Etag,
    /// The destination's multipart ETag matches the one computed from the source bytes.
    MultipartEtag,
    /// The MD5 the destination service computed over what it stored (`Content-MD5`,
    /// `md5Hash`) is the MD5 of the bytes Ferry read from the source.
    ContentMd5,
    /// The destination was read back and its BLAKE3 matches the source's.
    Blake3Readback,
    /// The destination was read back and its MD5 matches the source's (an S3 destination
    /// whose ETag is not an MD5).
    Md5Readback,
    /// As `Md5Readback`, for an object uploaded in parts: the per-part MD5s match.
    MultipartEtagReadback,
    /// The hash a drive computed over what it stored (OneDrive's QuickXorHash, Dropbox's
    /// content hash) is the one Ferry computed while reading the source.
    DriveHash,
    /// The destination was read back and its drive hash matches the source's.
    DriveHashReadback,
    /// Copied on the server: the checksum the service gives the copy (the MD5 of what it
    /// stored, or S3's multipart form) equals the source's.
    ServerSideChecksum,
    /// Streamed, and the ETag the destination computed over what it stored equals the
    /// checksum the source's service computed (same MD5, or same parts' MD5s).
    SourceChecksum,
}

/// A verified copy.
#[derive(Clone, Debug)]
pub struct Copied {
    /// The digests of the source bytes.
    pub source: Digests,
    /// The destination's ETag, when it has one.
    pub destination_etag: Option<String>,
    /// The destination's BLAKE3, when it was read back.
    pub destination_blake3: Option<String>,
    /// The proof.
    pub verified_by: VerifiedBy,
    /// Attempts it took.
    pub attempts: u32,
    /// Written without its own sync: it counts once [`Transfers::make_durable`] returns.
    pub awaiting_flush: bool,
}

impl Copied {
    /// A copy proven by `verified_by`, before its attempts are counted, needing no flush.
    pub fn proven(
        source: Digests,
        destination_etag: Option<String>,
        verified_by: VerifiedBy,
        destination_blake3: Option<String>,
    ) -> Self {
        Self { source, destination_etag, destination_blake3, verified_by, attempts: 0, awaiting_flush: false }
    }
}

/// Why an object could not be moved.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// Reading the source failed.
    #[error("reading the source failed: {0}")]
    Source(opendal::Error),
    /// Writing or reading back the destination failed.
    #[error("writing the destination failed: {0}")]
    Destination(opendal::Error),
    /// The spool failed.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// A streaming upload failed.
    #[error("writing the destination failed: {0}")]
    Streaming(String),
    /// A copy on the server failed.
    #[error("{0}")]
    ServerSide(String),
    /// The source changed size while it was read.
    #[error("the source changed while it was read: listed {listed} bytes, read {read}")]
    SourceChanged {
        /// Size in the listing.
        listed: u64,
        /// Bytes actually read.
        read: u64,
    },
    /// Verification found different bytes at the destination.
    #[error("verification failed ({measure}): source {expected}, destination {actual}")]
    Mismatch {
        /// What was compared.
        measure: &'static str,
        /// The source's value.
        expected: String,
        /// The destination's value.
        actual: String,
    },
    /// Something at the destination refuses the object for good (a symbolic link or a file
    /// in the way, a key no filesystem can hold): it fails at once, without retries.
    #[error("{0}")]
    Refused(String),
    /// The run was interrupted.
    #[error("interrupted")]
    Interrupted,
}

/// A failed transfer and the attempts spent on it.
#[derive(Debug)]
pub struct Failed {
    /// The last error.
    pub error: TransferError,
    /// Attempts made.
    pub attempts: u32,
}

impl Transfers {
    fn source_path(&self, key: &str) -> String {
        format!("{}{key}", self.source.base)
    }

    fn destination_path(&self, key: &str) -> String {
        format!("{}{key}", self.destination.base)
    }

    /// What to hash of the source: the MD5s the destination's ETag can be compared with where
    /// it reports them (MD5 is the slowest part of an upload; BLAKE3 would add a fifth to it
    /// for nothing), else BLAKE3.
    pub(crate) fn digest_set(&self, size: u64) -> DigestSet {
        let single_upload = size <= self.part_size as u64;
        let checksum = self.verify == VerifyMode::Checksum;
        match self.destination.capabilities.checksum {
            ReportedChecksum::S3Etag if checksum => DigestSet {
                blake3: false,
                md5: single_upload,
                part_size: (!single_upload).then_some(self.part_size as u64),
                drive_hash: None,
            },
            ReportedChecksum::ContentMd5 { any_size } if checksum && (any_size || single_upload) => DigestSet::MD5,
            ReportedChecksum::DriveHash(kind) if checksum => DigestSet::drive(kind),
            _ => DigestSet::BLAKE3,
        }
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Copies and verifies one object.
    pub async fn copy(&self, object: &ObjectInfo) -> Result<Copied, Failed> {
        let mut attempts = 0;
        let mut spooled: Option<(SpoolEntry, Digests)> = None;
        loop {
            attempts += 1;
            let result = self.attempt(object, &mut spooled).await;
            match result {
                Ok(mut copied) => {
                    copied.attempts = attempts;
                    return Ok(copied);
                }
                Err(TransferError::Interrupted) => return Err(Failed { error: TransferError::Interrupted, attempts }),
                Err(error @ TransferError::Refused(_)) => return Err(Failed { error, attempts }),
                Err(error) if attempts >= self.attempts || self.stopped() => return Err(Failed { error, attempts }),
                Err(error) => {
                    tracing::warn!(key = %object.key, attempt = attempts, %error, "transfer failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempts))).await;
                }
            }
        }
    }

    /// Waits until a copy written without its own sync is durable. The caller gives up its
    /// transfer slot first, so one flush covers every copy finished meanwhile.
    pub async fn make_durable(&self, copied: Copied) -> Result<Copied, Failed> {
        match &self.durability {
            Some(durability) if copied.awaiting_flush => match durability.wait().await {
                Ok(()) => Ok(Copied { awaiting_flush: false, ..copied }),
                Err(error) => {
                    Err(Failed { error: TransferError::Destination(io_to_opendal(error)), attempts: copied.attempts })
                }
            },
            _ => Ok(copied),
        }
    }

    async fn attempt(
        &self,
        object: &ObjectInfo,
        spooled: &mut Option<(SpoolEntry, Digests)>,
    ) -> Result<Copied, TransferError> {
        if let Some(root) = &self.destination_root {
            return self.attempt_to_filesystem(object, spooled, root).await;
        }
        if let Some(server_side) = &self.server_side
            && server_side.open()
            && let Some(copied) = self.copy_on_server(server_side, object).await?
        {
            return Ok(copied);
        }
        if !self.destination.capabilities.uploads_in_parts
            && self.destination.streaming_put.is_none()
            && object.size > self.part_size as u64
        {
            return Err(TransferError::Refused(format!(
                "binding {}: this provider takes an upload only in one request, and objects over {} bytes are \
                 not sent that way yet (the object was not copied)",
                self.destination.binding, self.part_size
            )));
        }
        if let Some(source_root) = &self.source.local_root
            && object.size <= LOCAL_COPY_LIMIT.min(self.part_size as u64)
        {
            return self.upload_local_file(object, source_root).await;
        }
        // A local source survives a retry by itself (re-reading it moves nothing over a
        // network), and an object larger than the whole spool cannot wait in it.
        if self.source.capabilities.local || !self.spool.fits(object.size) {
            return self.stream_directly(object).await;
        }
        let predicted = self.predicted_etag(object);
        if spooled.is_none() {
            let set = if predicted.is_some() { LENGTH_ONLY } else { self.digest_set(object.size) };
            *spooled = Some(self.download(object, set).await?);
        }
        let Some((entry, digests)) = spooled.as_ref() else { return Err(TransferError::Interrupted) };
        let etag = self.upload_from_spool(object, entry).await?;
        match predicted {
            Some(predicted) => self.verify_predicted(object, entry, etag, &predicted).await,
            None => self.verify(&object.key, digests, etag).await,
        }
    }

    /// One attempt at a filesystem destination: every path stages the file through the
    /// safe root, verifies it there and renames it into place.
    async fn attempt_to_filesystem(
        &self,
        object: &ObjectInfo,
        spooled: &mut Option<(SpoolEntry, Digests)>,
        root: &Arc<SafeRoot>,
    ) -> Result<Copied, TransferError> {
        // The kernel's copy cannot be throttled: a bandwidth limit streams instead.
        if let Some(source_root) = &self.source.local_root
            && self.throttle.is_none()
        {
            return self.copy_locally(object, source_root, root).await;
        }
        if self.source.capabilities.local || !self.spool.fits(object.size) {
            let pieces = self.source_stream(&object.key).await?.map_err(|e| TransferError::Source(io_to_opendal(e)));
            return self.write_to_filesystem(root, object, pieces, None).await;
        }
        if spooled.is_none() {
            *spooled = Some(self.download(object, self.digest_set(object.size)).await?);
        }
        let Some((entry, digests)) = spooled.as_ref() else { return Err(TransferError::Interrupted) };
        if object.size <= LOCAL_COPY_LIMIT && self.throttle.is_none() {
            return self.place_locally(object, entry, digests, root).await;
        }
        let reader = entry.reader().await?;
        let pieces = futures::stream::try_unfold(reader, |mut reader| async move {
            Ok::<_, TransferError>(reader.next().await?.map(|piece| (piece, reader)))
        });
        self.write_to_filesystem(root, object, pieces, Some(digests.clone())).await
    }

    /// Writes pieces to a staged file at a filesystem destination (hashing them unless their
    /// digests are `known`), then verifies it and renames it into place.
    async fn write_to_filesystem(
        &self,
        root: &Arc<SafeRoot>,
        object: &ObjectInfo,
        pieces: impl futures::Stream<Item = Result<bytes::Bytes, TransferError>>,
        known: Option<Digests>,
    ) -> Result<Copied, TransferError> {
        let placement = self.placement(object, root);
        let starting = placement.clone();
        let staged = tokio::task::spawn_blocking(move || starting.begin())
            .await
            .map_err(|_| TransferError::Interrupted)?
            .map_err(|error| local_error(error, object.size))?;
        let staged = Arc::new(staged);
        let mut hasher = known.is_none().then(|| Hasher::new(self.digest_set(object.size)));
        let written: Result<(), TransferError> = async {
            let mut pieces = std::pin::pin!(pieces);
            while let Some(piece) = pieces.try_next().await? {
                if self.stopped() {
                    return Err(TransferError::Interrupted);
                }
                if let Some(throttle) = &self.throttle {
                    throttle.take(piece.len()).await;
                }
                if let Some(hasher) = &mut hasher {
                    hasher.update(&piece);
                }
                let writing = staged.clone();
                tokio::task::spawn_blocking(move || std::io::Write::write_all(&mut &writing.file, &piece))
                    .await
                    .map_err(|_| TransferError::Interrupted)?
                    .map_err(|error| TransferError::Destination(io_to_opendal(error)))?;
            }
            Ok(())
        }
        .await;
        let digests = match (written, known, hasher) {
            (Ok(()), Some(digests), _) => digests,
            (Ok(()), None, Some(hasher)) => hasher.finish(),
            (Ok(()), None, None) => return Err(TransferError::Interrupted),
            (Err(error), _, _) => {
                let discarding = staged.clone();
                let _ = tokio::task::spawn_blocking(move || placement.root.discard(&discarding)).await;
                return Err(error);
            }
        };
        let (large, listed) = (object.size > LOCAL_COPY_LIMIT, object.size);
        let result = tokio::task::spawn_blocking(move || {
            if digests.length != listed {
                placement.root.discard(&staged);
                return Err(LocalCopyError::SourceChanged { read: digests.length });
            }
            placement.finish(&staged, &digests, large)
        })
        .await
        .map_err(|_| TransferError::Interrupted)?;
        Ok(self.placed(result.map_err(|error| local_error(error, object.size))?))
    }

    /// An object between two filesystems, in one blocking call.
    async fn copy_locally(
        &self,
        object: &ObjectInfo,
        source_root: &std::path::Path,
        destination_root: &Arc<SafeRoot>,
    ) -> Result<Copied, TransferError> {
        if self.stopped() {
            return Err(TransferError::Interrupted);
        }
        let copy = LocalCopy {
            source: file_of(source_root, &self.source.base, &object.key),
            placement: self.placement(object, destination_root),
            listed_size: object.size,
            stop: Some(self.stop.clone()),
        };
        let result = tokio::task::spawn_blocking(move || copy.run()).await.map_err(|_| TransferError::Interrupted)?;
        Ok(self.placed(result.map_err(|error| local_error(error, object.size))?))
    }

    /// A small object from a remote store, held whole, written to the local destination in
    /// one blocking call. OpenDAL's filesystem writer would sync every file on its own; this
    /// joins the shared flush instead (20,000 small files from S3: twice as fast).
    async fn place_locally(
        &self,
        object: &ObjectInfo,
        entry: &SpoolEntry,
        digests: &Digests,
        destination_root: &Arc<SafeRoot>,
    ) -> Result<Copied, TransferError> {
        // Held twice (spooled and gathered), like an upload's parts, and counted with them.
        let _memory = self.reserve_memory(entry.len()).await?;
        let mut data = Vec::with_capacity(usize::try_from(entry.len()).unwrap_or(0));
        let mut reader = entry.reader().await?;
        while let Some(piece) = reader.next().await? {
            data.extend_from_slice(&piece);
        }
        let (placement, digests) = (self.placement(object, destination_root), digests.clone());
        let result = tokio::task::spawn_blocking(move || placement.write(&data, &digests))
            .await
            .map_err(|_| TransferError::Interrupted)?;
        Ok(self.placed(result.map_err(|error| local_error(error, entry.len()))?))
    }

    fn placement(&self, object: &ObjectInfo, root: &Arc<SafeRoot>) -> Placement {
        Placement {
            root: root.clone(),
            relative: self.destination_path(&object.key),
            verify: self.verify,
            sync_file: self.durability.is_none(),
            modified: object.modified,
        }
    }

    fn placed(&self, LocalCopied { digests, destination_blake3 }: LocalCopied) -> Copied {
        Copied {
            verified_by: if destination_blake3.is_some() { VerifiedBy::Blake3Readback } else { VerifiedBy::Size },
            source: digests,
            destination_etag: None,
            destination_blake3,
            attempts: 0,
            awaiting_flush: self.durability.is_some(),
        }
    }

    /// A small local file, read whole and uploaded in one request (a single-part upload, so
    /// its ETag is the MD5 computed here).
    async fn upload_local_file(
        &self,
        object: &ObjectInfo,
        source_root: &std::path::Path,
    ) -> Result<Copied, TransferError> {
        if self.stopped() {
            return Err(TransferError::Interrupted);
        }
        let _memory = self.reserve_upload_memory(object.size).await?;
        let path = file_of(source_root, &self.source.base, &object.key);
        let (listed, set) = (object.size, self.digest_set(object.size));
        let (data, digests) = tokio::task::spawn_blocking(move || read_whole(&path, listed, set))
            .await
            .map_err(|_| TransferError::Interrupted)?
            .map_err(|error| local_error(error, object.size))?;
        let path = self.destination_path(&object.key);
        let mut write = self.destination.operator.write_with(&path, data).content_type(content_type(&object.key));
        let carried = self.carried_metadata(object);
        if !carried.is_empty() {
            write = write.user_metadata(carried);
        }
        let metadata = write.await.map_err(TransferError::Destination)?;
        let reported = reported_checksum(&metadata, self.destination.capabilities.checksum);
        self.verify(&object.key, &digests, reported).await
    }

    async fn download(&self, object: &ObjectInfo, set: DigestSet) -> Result<(SpoolEntry, Digests), TransferError> {
        let mut writer = self.spool.writer(object.size).await?;
        let mut hasher = Hasher::new(set);
        let mut stream = self.source_stream(&object.key).await?;
        while let Some(piece) = stream.try_next().await.map_err(|e| TransferError::Source(io_to_opendal(e)))? {
            if self.stopped() {
                return Err(TransferError::Interrupted);
            }
            hasher.update(&piece);
            writer.write(piece).await.map_err(|error| match error {
                SpoolError::Overflow { .. } => {
                    TransferError::SourceChanged { listed: object.size, read: object.size + 1 }
                }
                other => TransferError::Spool(other),
            })?;
        }
        let digests = hasher.finish();
        if digests.length != object.size {
            return Err(TransferError::SourceChanged { listed: object.size, read: digests.length });
        }
        Ok((writer.finish().await?, digests))
    }

    async fn source_stream(&self, key: &str) -> Result<SourceStream, TransferError> {
        if let Some(root) = &self.source.local_root {
            return Ok(Box::pin(read_in_chunks(file_of(root, &self.source.base, key), LOCAL_READ_CHUNK)));
        }
        let reader = self.source.operator.reader(&self.source_path(key)).await.map_err(TransferError::Source)?;
        Ok(Box::pin(reader.into_bytes_stream(..).await.map_err(TransferError::Source)?))
    }

    async fn upload_from_spool(
        &self,
        object: &ObjectInfo,
        entry: &SpoolEntry,
    ) -> Result<Option<String>, TransferError> {
        let _memory = self.reserve_upload_memory(entry.len()).await?;
        let mut writer = self.destination_writer(object, entry.len()).await?;
        let mut reader = entry.reader().await?;
        let outcome: Result<(), TransferError> = async {
            while let Some(piece) = reader.next().await? {
                if self.stopped() {
                    return Err(TransferError::Interrupted);
                }
                writer.write(piece).await?;
            }
            Ok(())
        }
        .await;
        finish_write(writer, outcome, self.destination.capabilities.checksum).await
    }

    /// Local sources and objects larger than the whole spool stream from source to
    /// destination; a retry reads the source again.
    async fn stream_directly(&self, object: &ObjectInfo) -> Result<Copied, TransferError> {
        let mut hasher = Hasher::new(self.digest_set(object.size));
        let mut stream = self.source_stream(&object.key).await?;
        let _memory = self.reserve_upload_memory(object.size).await?;
        let mut writer = self.destination_writer(object, object.size).await?;
        let outcome: Result<(), TransferError> = async {
            while let Some(piece) = stream.try_next().await.map_err(|e| TransferError::Source(io_to_opendal(e)))? {
                if self.stopped() {
                    return Err(TransferError::Interrupted);
                }
                hasher.update(&piece);
                writer.write(piece).await?;
            }
            Ok(())
        }
        .await;
        let etag = finish_write(writer, outcome, self.destination.capabilities.checksum).await?;
        let digests = hasher.finish();
        if digests.length != object.size {
            return Err(TransferError::SourceChanged { listed: object.size, read: digests.length });
        }
        self.verify(&object.key, &digests, etag).await
    }

    async fn reserve_upload_memory(
        &self,
        size: u64,
    ) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, TransferError> {
        if self.destination.capabilities.local {
            return Ok(None);
        }
        self.reserve_memory(size).await.map(Some)
    }

    /// Reserves the memory of `size` bytes held twice (see [`upload_kibibytes`]).
    async fn reserve_memory(&self, size: u64) -> Result<tokio::sync::OwnedSemaphorePermit, TransferError> {
        let capacity = u32::try_from(UPLOAD_MEMORY_KIB).unwrap_or(u32::MAX);
        let wanted = upload_kibibytes(size, self.part_size).min(capacity);
        self.upload_memory.clone().acquire_many_owned(wanted).await.map_err(|_| TransferError::Interrupted)
    }

    /// The writer for an object of `size` bytes: OpenDAL's, or a streaming PUT for an object
    /// over one part at a provider whose OpenDAL service would hold it whole in memory.
    async fn destination_writer(&self, object: &ObjectInfo, size: u64) -> Result<DestinationWriter, TransferError> {
        if let Some(put) = &self.destination.streaming_put
            && !self.destination.capabilities.uploads_in_parts
            && size > self.part_size as u64
        {
            let path = self.destination_path(&object.key);
            if let Some((parent, _)) = path.rsplit_once('/') {
                let directory = format!("{parent}/");
                self.destination.operator.create_dir(&directory).await.map_err(TransferError::Destination)?;
            }
            let upload = put.begin(&path, size).map_err(|error| TransferError::Streaming(error.to_string()))?;
            return Ok(DestinationWriter::Streaming { upload, throttle: self.throttle.clone() });
        }
        Ok(DestinationWriter::OpenDal(self.opendal_writer(object).await?))
    }

    /// What travels with an upload as user metadata: the source's modification time, for
    /// a backend that sets it.
    fn carried_metadata(&self, object: &ObjectInfo) -> Vec<(String, String)> {
        let capabilities = &self.destination.capabilities;
        let mut carried = Vec::new();
        if let Some(modified) = object.modified.filter(|_| capabilities.sets_modified_time) {
            carried.push((MODIFIED_METADATA.to_owned(), modified.as_second().to_string()));
        }
        if capabilities.upload_needs_size {
            carried.push((SIZE_METADATA.to_owned(), object.size.to_string()));
        }
        carried
    }

    async fn opendal_writer(&self, object: &ObjectInfo) -> Result<opendal::Writer, TransferError> {
        let key = object.key.as_str();
        if self.destination.local_root.is_some() {
            // OpenDAL's filesystem writer follows links under the root.
            return Err(TransferError::Refused(
                "a filesystem destination is written only through its safe root, and none was opened".to_owned(),
            ));
        }
        let path = self.destination_path(key);
        // Exact part boundaries make the multipart ETag computable on this side.
        let mut writer =
            self.destination.operator.writer_with(&path).chunk(self.part_size).content_type(content_type(key));
        let metadata = self.carried_metadata(object);
        if !metadata.is_empty() {
            writer = writer.user_metadata(metadata);
        }
        writer.await.map_err(TransferError::Destination)
    }

    pub(crate) async fn verify(
        &self,
        key: &str,
        source: &Digests,
        reported: Option<String>,
    ) -> Result<Copied, TransferError> {
        let etag = match (reported, self.destination.capabilities.checksum) {
            // Some services compute the MD5 but leave it out of the upload's answer. Asked only
            // when the source's MD5 was taken, that is for an upload the service hashes.
            (None, ReportedChecksum::ContentMd5 { .. })
                if self.verify == VerifyMode::Checksum && source.md5.is_some() =>
            {
                let metadata = self.destination.operator.stat(&self.destination_path(key)).await;
                metadata.ok().and_then(|metadata| reported_checksum(&metadata, self.destination.capabilities.checksum))
            }
            (reported, _) => reported,
        };
        let md5_measure = match self.destination.capabilities.checksum {
            ReportedChecksum::ContentMd5 { .. } => VerifiedBy::ContentMd5,
            _ => VerifiedBy::Md5Etag,
        };
        let copied = |verified_by, destination_blake3| {
            Copied::proven(source.clone(), etag.clone(), verified_by, destination_blake3)
        };
        match self.verify {
            VerifyMode::Size => {
                let path = self.destination_path(key);
                let metadata = self.destination.operator.stat(&path).await.map_err(TransferError::Destination)?;
                if metadata.content_length() != source.length {
                    return Err(TransferError::Mismatch {
                        measure: "size",
                        expected: source.length.to_string(),
                        actual: metadata.content_length().to_string(),
                    });
                }
                Ok(copied(VerifiedBy::Size, None))
            }
            VerifyMode::Checksum | VerifyMode::Readback => {
                let expected = source
                    .md5
                    .as_ref()
                    .map(|md5| (md5, md5_measure))
                    .or_else(|| source.multipart_etag.as_ref().map(|etag| (etag, VerifiedBy::MultipartEtag)))
                    .or_else(|| source.drive_hash.as_ref().map(|hash| (hash, VerifiedBy::DriveHash)));
                if let (VerifyMode::Checksum, Some((expected, verified_by)), Some(actual)) =
                    (self.verify, expected, etag.as_ref())
                    && expected == actual
                {
                    return Ok(copied(verified_by, None));
                }
                // `readback`, or no comparable provider checksum (or an ETag that is not an
                // MD5, as with SSE-KMS): only reading the bytes back can prove them.
                self.read_back(key, source).await.map(|(verified_by, blake3)| copied(verified_by, blake3))
            }
        }
    }

    /// Reads the destination back and compares it with the source by the digest the source
    /// was hashed with; returns the proof and the destination's BLAKE3 when it has one.
    async fn read_back(&self, key: &str, source: &Digests) -> Result<(VerifiedBy, Option<String>), TransferError> {
        let set = DigestSet {
            blake3: source.blake3.is_some(),
            md5: source.md5.is_some(),
            part_size: source.multipart_etag.is_some().then_some(self.part_size as u64),
            drive_hash: match self.destination.capabilities.checksum {
                ReportedChecksum::DriveHash(kind) if source.drive_hash.is_some() => Some(kind),
                _ => None,
            },
        };
        let back = hash_object(&self.destination, &self.destination_path(key), set)
            .await
            .map_err(TransferError::Destination)?;
        let (measure, verified_by, expected, actual) = if source.blake3.is_some() {
            ("blake3 read-back", VerifiedBy::Blake3Readback, &source.blake3, &back.blake3)
        } else if source.md5.is_some() {
            ("md5 read-back", VerifiedBy::Md5Readback, &source.md5, &back.md5)
        } else if source.drive_hash.is_some() {
            ("drive hash read-back", VerifiedBy::DriveHashReadback, &source.drive_hash, &back.drive_hash)
        } else {
            (
                "multipart ETag read-back",
                VerifiedBy::MultipartEtagReadback,
                &source.multipart_etag,
                &back.multipart_etag,
            )
        };
        // Two missing digests are equal, but prove nothing.
        if expected.is_none() || expected != actual {
            return Err(TransferError::Mismatch {
                measure,
                expected: expected.clone().unwrap_or_else(|| "(none)".to_owned()),
                actual: actual.clone().unwrap_or_else(|| "(none)".to_owned()),
            });
        }
        Ok((verified_by, back.blake3))
    }

    /// Decides a [`ContentCheck`]: true when the destination already holds the same bytes.
    pub async fn same_content(&self, key: &str, check: &ContentCheck) -> Result<bool, opendal::Error> {
        let read = |side: Side, set| {
            let (store, path) = match side {
                Side::Source => (&*self.source, self.source_path(key)),
                Side::Destination => (&*self.destination, self.destination_path(key)),
            };
            // A filesystem destination is read through its safe root too: a file reached
            // through a link proves nothing about the destination.
            let root = self.destination_root.clone().filter(|_| side == Side::Destination);
            async move {
                match root {
                    Some(root) => hash_under_root(root, path, set).await,
                    None => hash_object(store, &path, set).await,
                }
            }
        };
        Ok(match check {
            ContentCheck::Md5 { read: side, expected } => {
                read(*side, DigestSet::MD5).await?.md5.as_deref() == Some(expected.as_str())
            }
            ContentCheck::DriveHash { read: side, kind, expected } => {
                read(*side, DigestSet::drive(*kind)).await?.drive_hash.as_deref() == Some(expected.as_str())
            }
            ContentCheck::MultipartEtag { read: side, expected, part_size } => {
                let set = DigestSet { part_size: Some(*part_size), ..DigestSet::MD5 };
                let digests = read(*side, DigestSet { md5: false, ..set }).await?;
                digests.multipart_etag.as_deref() == Some(expected.as_str())
            }
            ContentCheck::Blake3Both => {
                let set = DigestSet::BLAKE3;
                read(Side::Source, set).await?.blake3 == read(Side::Destination, set).await?.blake3
            }
        })
    }
}

/// Closes a writer after a successful body, or aborts it (no partial object or dangling
/// multipart upload is left behind) after a failed one; returns the checksum the destination
/// reported for what it stored.
async fn finish_write(
    writer: DestinationWriter,
    body: Result<(), TransferError>,
    checksum: ReportedChecksum,
) -> Result<Option<String>, TransferError> {
    match (writer, body) {
        (DestinationWriter::OpenDal(mut writer), Ok(())) => {
            let metadata = writer.close().await.map_err(TransferError::Destination)?;
            Ok(reported_checksum(&metadata, checksum))
        }
        (DestinationWriter::OpenDal(mut writer), Err(error)) => {
            if let Err(abort) = writer.abort().await {
                tracing::warn!(%abort, "could not abort a failed upload");
            }
            Err(error)
        }
        // Providers reached this way report no checksum: the copy is read back.
        (DestinationWriter::Streaming { upload, .. }, Ok(())) => {
            upload.finish().await.map_err(|error| TransferError::Streaming(error.to_string()))?;
            Ok(None)
        }
        (DestinationWriter::Streaming { upload, .. }, Err(error)) => {
            upload.abort().await;
            Err(error)
        }
    }
}

/// The media type an object is stored with, from its name's extension as rclone does (the
/// listings Ferry reads do not carry the source's), so browsers and CDNs in front of the
/// destination serve it as what it is.
pub fn content_type(key: &str) -> &'static str {
    mime_guess::from_path(key).first_raw().unwrap_or("application/octet-stream")
}

/// Where an upload's bytes go.
enum DestinationWriter {
    /// OpenDAL's writer (in parts where the provider takes them).
    OpenDal(opendal::Writer),
    /// One streaming PUT, throttled here since OpenDAL's layers do not see it.
    Streaming {
        /// The request in progress.
        upload: StreamingUpload,
        /// The job's bandwidth limit.
        throttle: Option<Arc<Throttle>>,
    },
}

impl DestinationWriter {
    async fn write(&mut self, piece: bytes::Bytes) -> Result<(), TransferError> {
        match self {
            Self::OpenDal(writer) => writer.write(piece).await.map_err(TransferError::Destination),
            Self::Streaming { upload, throttle } => {
                if let Some(throttle) = throttle {
                    throttle.take(piece.len()).await;
                }
                upload.write(piece).await.map_err(|error| TransferError::Streaming(error.to_string()))
            }
        }
    }
}

/// Hashes an object as it streams from a store.
pub async fn hash_object(store: &Store, path: &str, set: DigestSet) -> Result<Digests, opendal::Error> {
    let mut hasher = Hasher::new(set);
    let reader = store.operator.reader(path).await?;
    let mut stream = reader.into_bytes_stream(..).await?;
    while let Some(piece) = stream.try_next().await.map_err(io_to_opendal)? {
        hasher.update(&piece);
    }
    Ok(hasher.finish())
}

/// Hashes the file at `relative` under a filesystem destination's root, never through a link.
async fn hash_under_root(root: Arc<SafeRoot>, relative: String, set: DigestSet) -> Result<Digests, opendal::Error> {
    tokio::task::spawn_blocking(move || {
        let file = root.open_file(&relative).map_err(|error| io_to_opendal(std::io::Error::other(error)))?;
        let length = file.metadata().map_err(io_to_opendal)?.len();
        hash_file(&file, length, set).map_err(io_to_opendal)
    })
    .await
    .map_err(|error| io_to_opendal(std::io::Error::other(error)))?
}

fn local_error(error: LocalCopyError, listed: u64) -> TransferError {
    match error {
        LocalCopyError::Source(error) => TransferError::Source(io_to_opendal(error)),
        LocalCopyError::Destination(error) => TransferError::Destination(io_to_opendal(error)),
        LocalCopyError::SourceChanged { read } => TransferError::SourceChanged { listed, read },
        LocalCopyError::Mismatch { measure, expected, actual } => TransferError::Mismatch { measure, expected, actual },
        LocalCopyError::Interrupted => TransferError::Interrupted,
        LocalCopyError::Refused(reason) => TransferError::Refused(reason),
    }
}

fn io_to_opendal(error: std::io::Error) -> opendal::Error {
    opendal::Error::new(opendal::ErrorKind::Unexpected, error.to_string()).set_temporary()
}

#[cfg(test)]
#[path = "transfer_tests.rs"]
mod tests;
