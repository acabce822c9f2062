//! Copies on the server: when source and destination are buckets of one S3 service reached
//! with one credential, each object is copied by the service itself and then verified, so
//! no byte passes through the runner (a read-back, where one is needed, reads only).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::backends::s3_copy::{CopyError, MAX_COPY_BYTES, S3Account};
use crate::object::{DigestSet, Digests, ObjectInfo};
use crate::storage::Store;
use crate::transfer::{Copied, TransferError, Transfers, VerifiedBy, hash_object};
use ferry_api::VerifyMode;

/// Both sides' accounts, when the service can copy between them.
#[derive(Debug)]
pub struct ServerSide {
    source: Arc<S3Account>,
    destination: Arc<S3Account>,
    /// The service refused a copy between the buckets: the rest of the run streams.
    refused: AtomicBool,
}

impl ServerSide {
    /// The server-side path between two stores, if they allow one.
    pub fn between(source: &Store, destination: &Store) -> Option<Self> {
        let (source, destination) = (source.server_side_copy.clone()?, destination.server_side_copy.clone()?);
        destination.reaches(&source).then(|| Self { source, destination, refused: AtomicBool::new(false) })
    }

    /// Whether this object goes through the server (a single `CopyObject` takes 5 GiB).
    pub fn takes(&self, object: &ObjectInfo) -> bool {
        object.size <= MAX_COPY_BYTES && !self.refused.load(Ordering::Relaxed)
    }
}

/// The checksum S3 reports, compared as S3 prints it.
fn normalized(etag: &str) -> String {
    etag.trim_matches('"').to_ascii_lowercase()
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
        let copied = match server_side.destination.copy_from(&server_side.source, &from, &to).await {
            Ok(copied) => copied,
            Err(CopyError::Refused(reason)) => {
                if !server_side.refused.swap(true, Ordering::Relaxed) {
                    tracing::warn!(reason, "the service refused a copy between the buckets; streaming instead");
                }
                return Ok(None);
            }
            Err(error @ CopyError::Failed(_)) => return Err(TransferError::ServerSide(error.to_string())),
        };
        let etag = copied.etag.as_deref().map(normalized);
        let listed = Digests { blake3: None, md5: None, multipart_etag: None, length: object.size };
        let proof = |verified_by, source: Digests, destination_blake3| Copied {
            source,
            destination_etag: etag.clone(),
            destination_blake3,
            verified_by,
            attempts: 0,
            awaiting_flush: false,
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
            // The service's ETag of the copy (the MD5 of what it stored, or its multipart form)
            // equals the source's: the service vouches for its own copy, as it does for an
            // upload's ETag. `readback` reads both sides instead.
            VerifyMode::Checksum if etag.is_some() && object.checksum.as_deref().map(normalized) == etag => {
                let md5 = etag.clone().filter(|etag| !etag.contains('-'));
                Ok(Some(proof(VerifiedBy::ServerSideEtag, Digests { md5, ..listed }, None)))
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
