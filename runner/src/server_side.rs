//! Copies on the server: when source and destination are buckets (containers) of one S3
//! service (Azure storage account) reached with one credential, each object is copied by the service itself and then verified, so
//! no byte passes through the runner (a read-back, where one is needed, reads only).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::backends::server_side_copy::{CopyError, ServerSideAccount};
use crate::object::{DigestSet, Digests, ObjectInfo};
use crate::storage::Store;
use crate::transfer::{Copied, TransferError, Transfers, VerifiedBy, hash_object};
use ferry_api::VerifyMode;

/// Both sides' accounts, when the service can copy between them.
#[derive(Debug)]
pub struct ServerSide {
    source: Arc<ServerSideAccount>,
    destination: Arc<ServerSideAccount>,
    /// The service refused a copy between the buckets: the rest of the run streams.
    refused: AtomicBool,
}

impl ServerSide {
    /// The server-side path between two stores, if they allow one.
    pub fn between(source: &Store, destination: &Store) -> Option<Self> {
        let (source, destination) = (source.server_side_copy.clone()?, destination.server_side_copy.clone()?);
        destination.reaches(&source).then(|| Self { source, destination, refused: AtomicBool::new(false) })
    }

    /// Whether objects still go through the server (it has not refused a copy).
    pub fn open(&self) -> bool {
        !self.refused.load(Ordering::Relaxed)
    }
}

impl Transfers {
    /// Copies one object on the server and verifies it. `None`: the service refused the copy
    /// between the buckets, so the caller streams the object (and every later one).
    pub(crate) async fn copy_on_server(
        &self,
        server_side: &ServerSide,
        object: &ObjectInfo,
    ) -> Result<Option<Copied>, TransferError> {
        if *self.stop.borrow() {
            return Err(TransferError::Interrupted);
        }
        let (from, to) =
            (format!("{}{}", self.source.base, object.key), format!("{}{}", self.destination.base, object.key));
        let copied = match server_side.destination.copy_from(&server_side.source, &from, &to, object.size).await {
            Ok(copied) => copied,
            Err(CopyError::Refused(reason)) => {
                if !server_side.refused.swap(true, Ordering::Relaxed) {
                    tracing::warn!(reason, "the service refused a copy between the buckets; streaming instead");
                }
                return Ok(None);
            }
            Err(error @ CopyError::Failed(_)) => return Err(TransferError::ServerSide(error.to_string())),
        };
        let etag = copied.checksum;
        let listed = Digests { blake3: None, md5: None, multipart_etag: None, drive_hash: None, length: object.size };
        let proof = |verified_by, source: Digests, destination_blake3| {
            Copied::proven(source, etag.clone(), verified_by, destination_blake3)
        };
        match self.verify {
            VerifyMode::Size => {
                let metadata = self.destination.operator.stat(&to).await.map_err(TransferError::Destination)?;
                if metadata.content_length() != object.size {
                    return Err(TransferError::Mismatch {
                        measure: "size",
                        expected: object.size.to_string(),
                        actual: metadata.content_length().to_string(),
                    });
                }
                Ok(Some(proof(VerifiedBy::Size, listed, None)))
            }
            // The service's checksum of the copy (S3's ETag, Azure's Content-MD5: the MD5 of
            // what it stored, or S3's multipart form) equals the source's: the service vouches
            // for its own copy, as it does for an upload's. `readback` reads both sides instead.
            VerifyMode::Checksum if etag.is_some() && object.checksum == etag => {
                let md5 = etag.clone().filter(|etag| !etag.contains('-'));
                Ok(Some(proof(VerifiedBy::ServerSideChecksum, Digests { md5, ..listed }, None)))
            }
            // `readback`, or an ETag that does not match (SSE-KMS ETags are no MD5): both
            // sides are read and hashed.
            _ => {
                let source =
                    hash_object(&self.source, &from, DigestSet::BLAKE3).await.map_err(TransferError::Source)?;
                let back =
                    hash_object(&self.destination, &to, DigestSet::BLAKE3).await.map_err(TransferError::Destination)?;
                if source.blake3 != back.blake3 || source.length != object.size {
                    return Err(TransferError::Mismatch {
                        measure: "blake3 read-back",
                        expected: source.blake3.unwrap_or_default(),
                        actual: back.blake3.unwrap_or_default(),
                    });
                }
                let blake3 = back.blake3.clone();
                Ok(Some(proof(VerifiedBy::Blake3Readback, source, blake3)))
            }
        }
    }
}
