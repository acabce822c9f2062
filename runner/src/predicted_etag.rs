//! Streamed copies to S3 proven by the source's own checksum. When the source service's
//! checksum of an object (an MD5, or S3's multipart form over parts of the size this run
//! uploads in) is exactly the ETag the destination must compute over the same bytes, the
//! two services' checksums prove the copy between them, as they do for a copy on the server,
//! and the runner hashes nothing: MD5 is most of a streamed S3 copy's CPU. If the ETags
//! differ (an SSE-KMS ETag, a client's claimed MD5, parts of another size), the spooled bytes
//! are hashed after all and the upload is verified as any other.

use ferry_api::VerifyMode;

use crate::backends::ReportedChecksum;
use crate::object::{DigestSet, Digests, Hasher, ObjectInfo};
use crate::spool::SpoolEntry;
use crate::transfer::{Copied, TransferError, Transfers, VerifiedBy};

/// Hashes nothing but counts the bytes, for a download whose proof is the source's checksum.
pub const LENGTH_ONLY: DigestSet = DigestSet { blake3: false, md5: false, part_size: None, drive_hash: None };

/// The ETag an upload of `size` bytes in parts of `part_size` gets when the source's checksum
/// is `source` and the bytes are the same: the same MD5 for one part, the same multipart form
/// when the source has as many parts (its parts are then of this size too, or, if not, the
/// ETags differ and the bytes are hashed after all).
pub fn predicted_etag(source: &str, size: u64, part_size: u64) -> Option<String> {
    let hex = |text: &str| text.len() == 32 && text.bytes().all(|byte| byte.is_ascii_hexdigit());
    if part_size == 0 {
        return None;
    }
    match source.split_once('-') {
        None if hex(source) && size <= part_size => Some(source.to_owned()),
        Some((digest, parts)) if hex(digest) && size > part_size => {
            let parts: u64 = parts.parse().ok()?;
            (parts == size.div_ceil(part_size)).then(|| source.to_owned())
        }
        _ => None,
    }
}

impl Transfers {
    /// The destination ETag `object`'s source checksum predicts, for a `checksum` job from a
    /// provider that computes MD5s to S3.
    pub(crate) fn predicted_etag(&self, object: &ObjectInfo) -> Option<String> {
        let from_service =
            matches!(self.source.capabilities.checksum, ReportedChecksum::S3Etag | ReportedChecksum::ContentMd5 { .. });
        if self.verify != VerifyMode::Checksum
            || self.destination.capabilities.checksum != ReportedChecksum::S3Etag
            || !from_service
        {
            return None;
        }
        predicted_etag(object.checksum.as_deref()?, object.size, self.part_size as u64)
    }

    /// Verifies an upload whose source bytes were not hashed on the way in.
    pub(crate) async fn verify_predicted(
        &self,
        object: &ObjectInfo,
        entry: &SpoolEntry,
        etag: Option<String>,
        predicted: &str,
    ) -> Result<Copied, TransferError> {
        if etag.as_deref() == Some(predicted) {
            let multipart = predicted.contains('-');
            let source = Digests {
                blake3: None,
                md5: (!multipart).then(|| predicted.to_owned()),
                multipart_etag: multipart.then(|| predicted.to_owned()),
                drive_hash: None,
                length: entry.len(),
            };
            return Ok(Copied::proven(source, etag, VerifiedBy::SourceChecksum, None));
        }
        let mut hasher = Hasher::new(self.digest_set(object.size));
        let mut reader = entry.reader().await?;
        while let Some(piece) = reader.next().await? {
            hasher.update(&piece);
        }
        self.verify(&object.key, &hasher.finish(), etag).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MD5: &str = "9e107d9d372bb6826bd81d3542a419d6";
    const MIB: u64 = 1024 * 1024;

    #[test]
    fn only_a_checksum_the_upload_must_reproduce_is_a_prediction() {
        assert_eq!(predicted_etag(MD5, 8 * MIB, 8 * MIB).as_deref(), Some(MD5), "one part: the MD5");
        assert_eq!(predicted_etag(MD5, 0, 8 * MIB).as_deref(), Some(MD5));
        assert_eq!(predicted_etag(MD5, 8 * MIB + 1, 8 * MIB), None, "uploaded in parts, its ETag is another");
        let multipart = format!("{MD5}-8");
        assert_eq!(predicted_etag(&multipart, 64 * MIB, 8 * MIB), Some(multipart.clone()));
        assert_eq!(predicted_etag(&multipart, 63 * MIB, 8 * MIB), Some(multipart.clone()));
        assert_eq!(predicted_etag(&multipart, 56 * MIB, 8 * MIB), None, "7 parts of ours");
        assert_eq!(predicted_etag(&format!("{MD5}-1"), 4 * MIB, 8 * MIB), None, "one part of ours is no multipart");
        assert_eq!(predicted_etag("not-an-md5", 10, 8 * MIB), None);
        assert_eq!(predicted_etag(&format!("{MD5}-x"), 64 * MIB, 8 * MIB), None);
        assert_eq!(predicted_etag(MD5, 1, 0), None);
    }
}
