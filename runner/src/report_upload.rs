//! Leaves a finished per-object report at the destination. A runner pod's own disk goes with
//! the pod, so in a cluster the report is kept where the data went, under Ferry's reserved
//! directory (see `ferry_api::reports`).

use std::io::{Seek, SeekFrom};
use std::path::Path;

use tokio::io::AsyncReadExt;

use crate::local_copy::staging_name;
use crate::safe_fs::{SafeFsError, SafeRoot};
use crate::storage::{PARTIAL_DIRECTORY, Store};

/// How much of the report is read at a time; the writer gathers reads into parts.
const READ_SIZE: usize = 1 << 20;

/// Why a report could not be left at the destination.
#[derive(Debug, thiserror::Error)]
pub enum ReportUploadError {
    /// Reading the local report failed.
    #[error("reading the report: {0}")]
    Read(#[from] std::io::Error),
    /// The filesystem destination refused the file.
    #[error("writing the report: {0}")]
    Filesystem(#[from] SafeFsError),
    /// The object store refused the upload.
    #[error("uploading the report: {0}")]
    Destination(#[from] opendal::Error),
    /// The stored report is not as long as the local one.
    #[error("the uploaded report holds {actual} bytes, not {expected}")]
    Truncated {
        /// The local report's length.
        expected: u64,
        /// The stored object's length.
        actual: u64,
    },
}

/// Writes `report` (read from its start) to `key` under the destination's base path and checks
/// its length there.
pub async fn upload(destination: &Store, key: &str, mut report: std::fs::File) -> Result<(), ReportUploadError> {
    report.seek(SeekFrom::Start(0))?;
    let path = format!("{}{key}", destination.base);
    match &destination.local_root {
        // Through the safe root, as every other write under a filesystem destination.
        Some(root) => {
            let root = root.clone();
            tokio::task::spawn_blocking(move || place_in_filesystem(&root, &path, report))
                .await
                .map_err(std::io::Error::other)?
        }
        None => upload_to_store(destination, &path, report).await,
    }
}

fn place_in_filesystem(root: &Path, relative: &str, mut report: std::fs::File) -> Result<(), ReportUploadError> {
    let root = SafeRoot::open(root).map_err(SafeFsError::Io)?;
    let mut staged = root.stage(PARTIAL_DIRECTORY, staging_name())?;
    let mut write = || -> Result<(), ReportUploadError> {
        let expected = report.metadata()?.len();
        let actual = std::io::copy(&mut report, &mut staged.file)?;
        if actual != expected {
            return Err(ReportUploadError::Truncated { expected, actual });
        }
        staged.file.sync_all()?;
        Ok(root.place(&staged, relative)?)
    };
    let result = write();
    if result.is_err() {
        root.discard(&staged);
    }
    root.remove_empty_directory(PARTIAL_DIRECTORY);
    result
}

async fn upload_to_store(store: &Store, path: &str, report: std::fs::File) -> Result<(), ReportUploadError> {
    let expected = report.metadata()?.len();
    let mut report = tokio::fs::File::from_std(report);
    let mut writer = store.operator.writer_with(path).chunk(crate::run::PART_SIZE).await?;
    loop {
        let mut buffer = vec![0; READ_SIZE];
        let read = match report.read(&mut buffer).await {
            Ok(read) => read,
            Err(error) => {
                let _ = writer.abort().await;
                return Err(error.into());
            }
        };
        if read == 0 {
            break;
        }
        buffer.truncate(read);
        if let Err(error) = writer.write(buffer).await {
            let _ = writer.abort().await;
            return Err(error.into());
        }
    }
    writer.close().await?;
    let actual = store.operator.stat(path).await?.content_length();
    if actual != expected {
        return Err(ReportUploadError::Truncated { expected, actual });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn report(text: &str) -> std::fs::File {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file.seek(SeekFrom::Start(0)).unwrap();
        file
    }

    #[test]
    fn a_report_is_placed_under_the_root_and_no_staged_file_is_left() {
        let root = tempfile::tempdir().unwrap();
        place_in_filesystem(root.path(), "in/.ferry/reports/a/b-1/1-0.jsonl", report("{}\n{}\n")).unwrap();
        assert_eq!(std::fs::read_to_string(root.path().join("in/.ferry/reports/a/b-1/1-0.jsonl")).unwrap(), "{}\n{}\n");
        assert!(!root.path().join(PARTIAL_DIRECTORY).exists());
    }

    #[test]
    fn a_link_planted_under_the_root_is_never_followed() {
        let (root, elsewhere) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::os::unix::fs::symlink(elsewhere.path(), root.path().join(".ferry")).unwrap();
        let error = place_in_filesystem(root.path(), ".ferry/reports/a/b-1/1-0.jsonl", report("{}\n")).unwrap_err();
        assert!(matches!(error, ReportUploadError::Filesystem(SafeFsError::Refused(_))), "{error}");
        assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0, "written through the link");
    }
}
