//! Read-back verification against a store that promises S3-style MD5 ETags but reports none
//! (as S3 does with SSE-KMS): the copy is proven by reading it back with the digest the
//! source was hashed with, and a changed byte is caught.

#![allow(clippy::unwrap_used)] // test code

use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::backends::{Capabilities, ReportedChecksum, fs, s3};

fn store(root: &Path, capabilities: Capabilities, local_root: Option<&Path>) -> Store {
    std::fs::create_dir_all(root).unwrap();
    let operator = opendal::Operator::new(opendal::services::Fs::default().root(&root.to_string_lossy())).unwrap();
    Store {
        binding: "test".to_owned(),
        operator,
        base: String::new(),
        capabilities,
        local_root: local_root.map(Path::to_path_buf),
        throttled: false,
        streaming_put: None,
        server_side_copy: None,
    }
}

fn transfers(directory: &Path, part_size: usize) -> Transfers {
    let local = fs::CAPABILITIES;
    let promises_md5_etags = Capabilities { local: false, checksum: ReportedChecksum::S3Etag, ..s3::CAPABILITIES };
    let (_, stop) = watch::channel(false);
    Transfers {
        source: Arc::new(store(&directory.join("in"), local, Some(&directory.join("in")))),
        destination: Arc::new(store(&directory.join("out"), promises_md5_etags, None)),
        spool: Spool::open(&directory.join("spool"), 1 << 20, 1 << 20).unwrap(),
        verify: VerifyMode::Checksum,
        part_size,
        attempts: 1,
        stop,
        upload_memory: Arc::new(tokio::sync::Semaphore::new(UPLOAD_MEMORY_KIB)),
        durability: None,
        destination_root: None,
        throttle: None,
        server_side: None,
    }
}

fn object(directory: &Path, key: &str, data: &[u8]) -> ObjectInfo {
    std::fs::write(directory.join("in").join(key), data).unwrap();
    ObjectInfo { key: key.to_owned(), size: data.len() as u64, modified: None, checksum: None }
}

#[tokio::test]
async fn without_a_usable_etag_a_single_part_copy_is_read_back_by_md5() {
    let directory = tempfile::tempdir().unwrap();
    let transfers = transfers(directory.path(), 1 << 20);
    let object = object(directory.path(), "small", b"hello, world");

    let copied = transfers.copy(&object).await.unwrap();
    assert_eq!(copied.verified_by, VerifiedBy::Md5Readback);
    assert_eq!(copied.source.md5.as_deref(), Some("e4d7f1b4ed2e42d15898f4b27b019da4"));
    assert_eq!(copied.source.blake3, None, "nothing hashed twice");

    std::fs::write(directory.path().join("out/small"), b"hello, World").unwrap();
    let error = transfers.read_back("small", &copied.source).await.unwrap_err();
    assert!(matches!(error, TransferError::Mismatch { measure: "md5 read-back", .. }), "{error}");
}

#[tokio::test]
async fn without_a_usable_etag_a_multipart_copy_is_read_back_part_by_part() {
    let directory = tempfile::tempdir().unwrap();
    let transfers = transfers(directory.path(), 16);
    let data: Vec<u8> = (0..40u8).collect();
    let object = object(directory.path(), "parts", &data);

    let copied = transfers.copy(&object).await.unwrap();
    assert_eq!(copied.verified_by, VerifiedBy::MultipartEtagReadback);
    assert!(copied.source.multipart_etag.as_deref().is_some_and(|etag| etag.ends_with("-3")), "{copied:?}");

    let mut changed = data.clone();
    changed[39] ^= 1;
    std::fs::write(directory.path().join("out/parts"), &changed).unwrap();
    let error = transfers.read_back("parts", &copied.source).await.unwrap_err();
    assert!(matches!(error, TransferError::Mismatch { measure: "multipart ETag read-back", .. }), "{error}");
}

#[tokio::test]
async fn an_object_over_one_part_is_refused_where_uploads_go_in_one_request_only() {
    let directory = tempfile::tempdir().unwrap();
    let mut transfers = transfers(directory.path(), 16);
    let one_request = Capabilities { local: false, uploads_in_parts: false, ..s3::CAPABILITIES };
    transfers.destination = Arc::new(store(&directory.path().join("out"), one_request, None));
    let small = object(directory.path(), "small", &[1; 16]);
    transfers.copy(&small).await.unwrap();

    let large = object(directory.path(), "large", &[1; 17]);
    let failed = transfers.copy(&large).await.unwrap_err();
    assert!(matches!(&failed.error, TransferError::Refused(reason) if reason.contains("one request")), "{failed:?}");
    assert_eq!(failed.attempts, 1, "a refusal is not retried");
    assert!(!directory.path().join("out/large").exists());
}
