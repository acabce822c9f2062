//! Pure decisions: what to do with a source object given what the destination has.

use ferry_api::{Conflict, VerifyMode};

use crate::object::{DriveHash, ObjectInfo};

/// What the engine does with one source object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Copy it, for this reason.
    Copy(CopyReason),
    /// Leave the destination as it is.
    Skip(SkipReason),
    /// Metadata cannot tell; compare content with this check before deciding.
    CompareContent(ContentCheck),
}

/// Why an object is copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum CopyReason {
    /// The destination does not have it.
    Missing,
    /// The destination has different content.
    Changed,
    /// `conflict: overwrite`.
    Overwrite,
    /// The content could not be compared without downloading both sides.
    Unprovable,
}

/// Why an object is left alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum SkipReason {
    /// Identical by size (`verify: size`).
    SameSize,
    /// Identical by MD5 from both listings.
    SameMd5,
    /// Identical by multipart ETag from both listings: the same number of parts with the
    /// same MD5s (a copy made on the server keeps its source's).
    SameMultipartEtag,
    /// Identical by a drive's own hash (QuickXorHash, Dropbox's content hash) from both
    /// listings.
    SameDriveHash,
    /// Identical by a content hash computed now.
    SameContent,
    /// `conflict: newer` and the destination is not older.
    DestinationNotOlder,
}

/// A content comparison the engine can afford: at least one side is local (cheap to read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContentCheck {
    /// Hash the local side with MD5 and compare with the other side's MD5 ETag.
    Md5 {
        /// Which side to read.
        read: Side,
        /// The MD5 the other side reports.
        expected: String,
    },
    /// Hash the local side into a multipart ETag with this part size and compare.
    MultipartEtag {
        /// Which side to read.
        read: Side,
        /// The ETag the other side reports.
        expected: String,
        /// The part size that produces `expected`'s part count.
        part_size: u64,
    },
    /// Hash one side with a drive's hash and compare with the hash the other (the drive)
    /// reports.
    DriveHash {
        /// Which side to read.
        read: Side,
        /// The drive's kind of hash.
        kind: DriveHash,
        /// The hash the other side reports.
        expected: String,
    },
    /// BLAKE3 both sides: both are local, or one is and the other has no usable checksum
    /// (it is downloaded and hashed).
    Blake3Both,
}

/// Source or destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Side {
    /// The job's source.
    Source,
    /// The job's destination.
    Destination,
}

/// What the planner needs to know about both ends.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// `spec.conflict`.
    pub conflict: Conflict,
    /// `spec.verify`.
    pub verify: VerifyMode,
    /// Reading the source costs no transfer (a filesystem).
    pub source_local: bool,
    /// Reading the destination costs no transfer.
    pub destination_local: bool,
    /// The part size Ferry uploads multipart objects with.
    pub part_size: u64,
    /// The destination keeps modification times in whole seconds.
    pub destination_whole_seconds: bool,
}

/// Decides what to do with `source` given the destination's object at the same key.
pub fn decide(source: &ObjectInfo, destination: Option<&ObjectInfo>, policy: &Policy) -> Decision {
    let Some(destination) = destination else { return Decision::Copy(CopyReason::Missing) };
    match policy.conflict {
        Conflict::Overwrite => return Decision::Copy(CopyReason::Overwrite),
        Conflict::Newer => {
            if let (Some(source_time), Some(destination_time)) = (source.modified, destination.modified) {
                let source_time = match policy.destination_whole_seconds {
                    true => jiff::Timestamp::from_second(source_time.as_second()).unwrap_or(source_time),
                    false => source_time,
                };
                return if source_time > destination_time {
                    Decision::Copy(CopyReason::Changed)
                } else {
                    Decision::Skip(SkipReason::DestinationNotOlder)
                };
            }
        }
        Conflict::SkipIdentical => {}
    }
    if source.size != destination.size {
        return Decision::Copy(CopyReason::Changed);
    }
    if policy.verify == VerifyMode::Size {
        return Decision::Skip(SkipReason::SameSize);
    }
    if let (Some(a), Some(b)) = (source.md5(), destination.md5()) {
        return if a == b { Decision::Skip(SkipReason::SameMd5) } else { Decision::Copy(CopyReason::Changed) };
    }
    if let (Some(a), Some(b)) = (source.drive_hash(), destination.drive_hash()) {
        return if a == b { Decision::Skip(SkipReason::SameDriveHash) } else { Decision::Copy(CopyReason::Changed) };
    }
    // Unequal multipart ETags prove nothing (other part sizes); equal ones prove the parts.
    if source.multipart_parts().is_some() && source.checksum == destination.checksum {
        return Decision::Skip(SkipReason::SameMultipartEtag);
    }
    content_check(source, destination, policy).map_or(Decision::Copy(CopyReason::Unprovable), Decision::CompareContent)
}

fn content_check(source: &ObjectInfo, destination: &ObjectInfo, policy: &Policy) -> Option<ContentCheck> {
    if policy.source_local && policy.destination_local {
        return Some(ContentCheck::Blake3Both);
    }
    let (read, remote) = if policy.source_local && !policy.destination_local {
        (Side::Source, destination)
    } else if policy.destination_local && !policy.source_local {
        (Side::Destination, source)
    } else {
        return None;
    };
    if let Some(md5) = remote.md5() {
        return Some(ContentCheck::Md5 { read, expected: md5.to_owned() });
    }
    if let Some((kind, hash)) = remote.drive_hash() {
        return Some(ContentCheck::DriveHash { read, kind, expected: hash.to_owned() });
    }
    // Only Ferry's own part size can reproduce the ETag; other uploaders' parts are unknown.
    if let (Some(parts), Some(expected)) = (remote.multipart_parts(), remote.checksum.clone())
        && source.size.div_ceil(policy.part_size) == parts
    {
        return Some(ContentCheck::MultipartEtag { read, expected, part_size: policy.part_size });
    }
    // A remote side without a usable checksum (WebDAV, a blob committed from blocks) is read
    // and hashed like the local one: one download proves what an upload would only redo.
    Some(ContentCheck::Blake3Both)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(size: u64, etag: Option<&str>, modified: &str) -> ObjectInfo {
        ObjectInfo {
            key: "k".into(),
            size,
            modified: Some(modified.parse().unwrap()),
            checksum: etag.map(str::to_owned),
        }
    }

    fn policy(conflict: Conflict, verify: VerifyMode, source_local: bool, destination_local: bool) -> Policy {
        Policy {
            conflict,
            verify,
            source_local,
            destination_local,
            part_size: 8 << 20,
            destination_whole_seconds: false,
        }
    }

    const MD5_A: &str = "0123456789abcdef0123456789abcdef";
    const MD5_B: &str = "fedcba9876543210fedcba9876543210";
    const T1: &str = "2024-01-01T00:00:00Z";
    const T2: &str = "2024-06-01T00:00:00Z";

    #[test]
    fn missing_objects_are_copied_and_overwrite_always_copies() {
        let p = policy(Conflict::SkipIdentical, VerifyMode::Checksum, true, true);
        assert_eq!(decide(&object(1, None, T1), None, &p), Decision::Copy(CopyReason::Missing));
        let p = policy(Conflict::Overwrite, VerifyMode::Checksum, true, true);
        assert_eq!(decide(&object(1, None, T1), Some(&object(1, None, T1)), &p), Decision::Copy(CopyReason::Overwrite));
    }

    #[test]
    fn newer_compares_times() {
        let p = policy(Conflict::Newer, VerifyMode::Checksum, true, true);
        assert_eq!(decide(&object(1, None, T2), Some(&object(1, None, T1)), &p), Decision::Copy(CopyReason::Changed));
        assert_eq!(
            decide(&object(1, None, T1), Some(&object(5, None, T2)), &p),
            Decision::Skip(SkipReason::DestinationNotOlder)
        );
        // A destination that keeps whole seconds holds the copy's time without its fraction.
        let (source, copy) = (object(1, None, "2026-03-01T12:00:00.5Z"), object(1, None, "2026-03-01T12:00:00Z"));
        assert_eq!(decide(&source, Some(&copy), &p), Decision::Copy(CopyReason::Changed));
        let whole_seconds = Policy { destination_whole_seconds: true, ..p };
        assert_eq!(decide(&source, Some(&copy), &whole_seconds), Decision::Skip(SkipReason::DestinationNotOlder));
        let later = object(1, None, "2026-03-01T12:00:01.2Z");
        assert_eq!(decide(&later, Some(&copy), &whole_seconds), Decision::Copy(CopyReason::Changed));
    }

    #[test]
    fn sizes_then_md5s_then_content() {
        let s3_to_s3 = policy(Conflict::SkipIdentical, VerifyMode::Checksum, false, false);
        assert_eq!(
            decide(&object(1, None, T1), Some(&object(2, None, T1)), &s3_to_s3),
            Decision::Copy(CopyReason::Changed)
        );
        assert_eq!(
            decide(&object(1, Some(MD5_A), T1), Some(&object(1, Some(MD5_A), T2)), &s3_to_s3),
            Decision::Skip(SkipReason::SameMd5)
        );
        assert_eq!(
            decide(&object(1, Some(MD5_A), T1), Some(&object(1, Some(MD5_B), T1)), &s3_to_s3),
            Decision::Copy(CopyReason::Changed)
        );
        assert_eq!(
            decide(&object(1, None, T1), Some(&object(1, None, T1)), &s3_to_s3),
            Decision::Copy(CopyReason::Unprovable)
        );
        let drive = |hash: &str| ObjectInfo { checksum: Some(hash.to_owned()), ..object(1, None, T1) };
        let (qx_a, qx_b) = ("6828031bd8f00610dce10d726b03190000000000", "7828031bd8f00610dce10d726b03190000000000");
        assert_eq!(decide(&drive(qx_a), Some(&drive(qx_a)), &s3_to_s3), Decision::Skip(SkipReason::SameDriveHash));
        assert_eq!(decide(&drive(qx_a), Some(&drive(qx_b)), &s3_to_s3), Decision::Copy(CopyReason::Changed));
        let to_drive = policy(Conflict::SkipIdentical, VerifyMode::Checksum, true, false);
        assert_eq!(
            decide(&object(1, None, T1), Some(&drive(qx_a)), &to_drive),
            Decision::CompareContent(ContentCheck::DriveHash {
                read: Side::Source,
                kind: DriveHash::QuickXor,
                expected: qx_a.into()
            })
        );
        let multipart = |etag: &str| ObjectInfo { checksum: Some(etag.to_owned()), ..object(1, None, T1) };
        assert_eq!(
            decide(&multipart(&format!("{MD5_A}-3")), Some(&multipart(&format!("{MD5_A}-3"))), &s3_to_s3),
            Decision::Skip(SkipReason::SameMultipartEtag)
        );
        assert_eq!(
            decide(&multipart(&format!("{MD5_A}-3")), Some(&multipart(&format!("{MD5_B}-2"))), &s3_to_s3),
            Decision::Copy(CopyReason::Unprovable)
        );
        let sizes = policy(Conflict::SkipIdentical, VerifyMode::Size, false, false);
        assert_eq!(
            decide(&object(1, None, T1), Some(&object(1, None, T2)), &sizes),
            Decision::Skip(SkipReason::SameSize)
        );
    }

    #[test]
    fn local_sides_are_hashed() {
        let fs_to_fs = policy(Conflict::SkipIdentical, VerifyMode::Readback, true, true);
        assert_eq!(
            decide(&object(3, None, T1), Some(&object(3, None, T1)), &fs_to_fs),
            Decision::CompareContent(ContentCheck::Blake3Both)
        );
        let fs_to_s3 = policy(Conflict::SkipIdentical, VerifyMode::Checksum, true, false);
        assert_eq!(
            decide(&object(3, None, T1), Some(&object(3, Some(MD5_A), T1)), &fs_to_s3),
            Decision::CompareContent(ContentCheck::Md5 { read: Side::Source, expected: MD5_A.into() })
        );
        let big = 20 << 20;
        let etag = format!("{MD5_A}-3");
        assert_eq!(
            decide(&object(big, None, T1), Some(&object(big, Some(&etag), T1)), &fs_to_s3),
            Decision::CompareContent(ContentCheck::MultipartEtag {
                read: Side::Source,
                expected: etag.clone(),
                part_size: 8 << 20
            })
        );
        let foreign_parts = format!("{MD5_A}-7");
        assert_eq!(
            decide(&object(big, None, T1), Some(&object(big, Some(&foreign_parts), T1)), &fs_to_s3),
            Decision::CompareContent(ContentCheck::Blake3Both),
            "parts of another uploader's size: read back and hash"
        );
        let fs_to_webdav = policy(Conflict::SkipIdentical, VerifyMode::Checksum, true, false);
        assert_eq!(
            decide(&object(3, None, T1), Some(&object(3, None, T1)), &fs_to_webdav),
            Decision::CompareContent(ContentCheck::Blake3Both)
        );
        let s3_to_fs = policy(Conflict::SkipIdentical, VerifyMode::Checksum, false, true);
        assert_eq!(
            decide(&object(3, Some(MD5_A), T1), Some(&object(3, None, T1)), &s3_to_fs),
            Decision::CompareContent(ContentCheck::Md5 { read: Side::Destination, expected: MD5_A.into() })
        );
    }
}
